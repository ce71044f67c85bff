"""rulebot.jsonenc's encoders write what json.JSONEncoder writes, errors included."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rulebot.jsonenc import encoder

SCALARS = (st.none() | st.booleans() | st.integers() | st.text()
           | st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30)
SHAPES = [((",", ":"), False, None), ((", ", ": "), True, str)]


@pytest.mark.parametrize(("separators", "allow_nan", "default"), SHAPES)
@given(value=VALUES)
def test_the_text_is_json_encoders_text(separators: tuple[str, str], allow_nan: bool,
                                        default: Any, value: Any) -> None:
    reference = json.JSONEncoder(ensure_ascii=False, separators=separators,
                                 allow_nan=allow_nan, default=default).encode
    assert encoder(separators=separators, allow_nan=allow_nan, default=default)(value) == \
        reference(value)


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
    lenient = encoder(separators=(", ", ": "), allow_nan=True, default=str)
    assert lenient({"x": {1}, "y": math.inf}) == '{"x": "{1}", "y": Infinity}'
