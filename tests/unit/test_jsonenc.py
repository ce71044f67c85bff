"""rulebot.jsonenc's encoders write what json.JSONEncoder writes, errors included."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulebot.jsonenc import SAFE_RECURSION_LIMIT, encoder

SCALARS = (st.none() | st.booleans() | st.integers() | st.text() | st.floats()
           | st.frozensets(st.integers(), max_size=2))  # a set needs `default`
KEYS = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.tuples(inner, inner)
                      | st.dictionaries(KEYS, inner, max_size=5), max_leaves=30)
SHAPES = [((",", ":"), False, None), ((", ", ": "), True, str)]


def outcome(encode: Any, value: Any) -> tuple[str, str]:
    """The text, or the error's type and message."""
    try:
        return "ok", encode(value)
    except (TypeError, ValueError) as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(("separators", "allow_nan", "default"), SHAPES)
@given(value=VALUES)
def test_the_text_and_errors_are_json_encoders(separators: tuple[str, str], allow_nan: bool,
                                               default: Any, value: Any) -> None:
    reference = json.JSONEncoder(ensure_ascii=False, separators=separators,
                                 allow_nan=allow_nan, default=default).encode
    ours = encoder(separators=separators, allow_nan=allow_nan, default=default)
    assert outcome(ours, value) == outcome(reference, value)


def test_errors_are_json_encoders_errors() -> None:
    strict = encoder(separators=(",", ":"), allow_nan=False)
    with pytest.raises(ValueError, match="Out of range float"):
        strict({"x": math.nan})
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        strict({"x": {1}})
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular reference"):
        strict(cyclic)
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(SAFE_RECURSION_LIMIT + 1)  # deep enough to exhaust the C stack
    try:
        with pytest.raises(ValueError, match="Circular reference"):
            strict(cyclic)
    finally:
        sys.setrecursionlimit(saved)
    lenient = encoder(separators=(", ", ": "), allow_nan=True, default=str)
    assert lenient({"x": {1}, "y": math.inf}) == '{"x": "{1}", "y": Infinity}'
