"""JSON encoders for the per-event hot paths, identical in output to
`json.JSONEncoder(ensure_ascii=False, ...).encode`.

JSONEncoder.encode builds json's C encoder anew on every call (and a dict to
detect cycles); the encoders here build it once. Without the cycle check a
cyclic value would recurse until RecursionError: that case is handed to
JSONEncoder, which raises its usual ValueError (and if the process raised
its recursion limit far above the default, every value goes to JSONEncoder,
since such a recursion could exhaust the C stack first). Values encoded here
(events, rule payloads, log fields) are never cyclic in practice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

#: Python's default recursion limit is 1,000; above this, skip the fast path.
SAFE_RECURSION_LIMIT = 10_000


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encoder(*, separators: tuple[str, str], allow_nan: bool,
            default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """`json.JSONEncoder(ensure_ascii=False, separators=..., allow_nan=...,
    default=...).encode`, built once."""
    slow: Callable[[Any], str] = json.JSONEncoder(
        ensure_ascii=False, separators=separators, allow_nan=allow_nan, default=default).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # a Python without json's C accelerator
        return slow
    item_sep, key_sep = separators
    fast = make(None, default or _not_serializable, json.encoder.encode_basestring, None,
                key_sep, item_sep, False, False, allow_nan)

    def encode(value: Any) -> str:
        if sys.getrecursionlimit() > SAFE_RECURSION_LIMIT:
            # A cycle would recurse to that limit, deeper than the C stack
            # can go: let JSONEncoder's cycle check catch it first.
            return slow(value)
        try:
            return "".join(fast(value, 0))
        except RecursionError:
            return slow(value)

    return encode
