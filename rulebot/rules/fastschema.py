"""Event schemas compiled to plain Python predicates, for the schemas that allow it.

Pure.

`jsonschema` validates by walking the schema for every instance (descend,
evolve, a keyword function per keyword): for the small object schemas
operators write for their event types that costs more than the rules
themselves. `compile_schema` turns a schema that uses only the common
keywords (type, const, enum, properties, required, additionalProperties,
string lengths and pattern, number bounds, items, item and property counts,
plus annotations such as description) into a closure answering "valid?" with
the semantics of `jsonschema.Draft202012Validator` without a format checker.
Any other keyword, boolean or not, makes it return None and the caller keeps
using jsonschema for that schema. A failing event is always re-checked by
jsonschema, which produces the error message; only the yes/no is fast.

tests/unit/rules/test_fastschema.py checks the predicates against jsonschema on
generated schemas and instances.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any

Check = Callable[[Any], bool]

#: Keywords that never affect validity (2020-12 meta-data, format as annotation).
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default",
                          "deprecated", "readOnly", "writeOnly", "format", "$id",
                          "$anchor", "contentEncoding", "contentMediaType"})
_HANDLED = frozenset({"type", "const", "enum", "properties", "required",
                      "additionalProperties", "minLength", "maxLength", "pattern",
                      "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                      "items", "minItems", "maxItems", "minProperties", "maxProperties"})

class _Unsupported(Exception):
    """The schema needs jsonschema itself."""


def compile_schema(schema: Any) -> Check | None:
    """A predicate equal to `Draft202012Validator(schema).is_valid`, or None."""
    try:
        return _compile(schema)
    except (_Unsupported, re.error, TypeError, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


_TYPES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": _is_number,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _unbool(value: Any) -> Any:
    # True == 1 in Python but not in JSON Schema: compare booleans by identity.
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    return value


_TRUE, _FALSE = object(), object()


def json_equal(one: Any, two: Any) -> bool:
    """JSON Schema equality (const, enum): 1 == 1.0, but true != 1, recursively."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(json_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(
            key in two and json_equal(value, two[key]) for key, value in one.items())
    return bool(_unbool(one) == _unbool(two))


def _compile(schema: Any) -> Check:
    if schema is True:
        return lambda _v: True
    if schema is False:
        return lambda _v: False
    if not isinstance(schema, dict):
        raise _Unsupported
    unknown = set(schema) - _HANDLED - _ANNOTATIONS
    if unknown:
        raise _Unsupported
    checks: list[Check] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not names:
            raise _Unsupported
        try:
            tests = tuple(_TYPES[n] for n in names)
        except (KeyError, TypeError):
            raise _Unsupported from None
        if len(tests) == 1:
            checks.append(tests[0])
        else:
            def any_type(v: Any) -> bool:
                for test in tests:  # noqa: SIM110 - a loop, not any(genexpr): runs per event
                    if test(v):
                        return True
                return False
            checks.append(any_type)
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v: json_equal(v, const))
    if "enum" in schema:
        options = schema["enum"]
        if not isinstance(options, list):
            raise _Unsupported
        checks.append(lambda v: any(json_equal(v, o) for o in options))
    checks.extend(_string_checks(schema))
    checks.extend(_number_checks(schema))
    checks.extend(_array_checks(schema))
    checks.extend(_object_checks(schema))
    if not checks:
        return lambda _v: True
    if len(checks) == 1:
        return checks[0]
    all_checks = tuple(checks)

    def every(v: Any) -> bool:
        for check in all_checks:  # noqa: SIM110 - a loop, not all(genexpr): runs per event
            if not check(v):
                return False
        return True
    return every


def _count(schema: dict[str, Any], key: str) -> int | None:
    if key not in schema:
        return None
    value = schema[key]
    if not _is_integer(value):  # null included: jsonschema would fail applying it
        raise _Unsupported
    return int(value)


def _string_checks(schema: dict[str, Any]) -> list[Check]:
    out = _size_checks(schema, "minLength", "maxLength", str)
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise _Unsupported
        search = re.compile(schema["pattern"]).search
        out.append(lambda v: not isinstance(v, str) or search(v) is not None)
    return out


_BOUNDS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("minimum", operator.ge), ("maximum", operator.le),
    ("exclusiveMinimum", operator.gt), ("exclusiveMaximum", operator.lt),
)


def _number_checks(schema: dict[str, Any]) -> list[Check]:
    out: list[Check] = []
    for key, holds in _BOUNDS:
        if key not in schema:
            continue
        bound = schema[key]
        if not _is_number(bound):
            raise _Unsupported
        out.append(_bound_check(holds, bound))
    return out


def _bound_check(holds: Callable[[Any, Any], bool], bound: Any) -> Check:
    return lambda v: not _is_number(v) or holds(v, bound)


def _size_checks(schema: dict[str, Any], low_key: str, high_key: str,
                 kind: type[Sized]) -> list[Check]:
    """minLength/maxLength, minItems/maxItems, minProperties/maxProperties: the
    length bounds of the instances of `kind`, other instances pass."""
    out: list[Check] = []
    low, high = _count(schema, low_key), _count(schema, high_key)
    if low is not None:
        out.append(lambda v: not isinstance(v, kind) or len(v) >= low)
    if high is not None:
        out.append(lambda v: not isinstance(v, kind) or len(v) <= high)
    return out


def _array_checks(schema: dict[str, Any]) -> list[Check]:
    out = _size_checks(schema, "minItems", "maxItems", list)
    if "items" in schema:
        each = _compile(schema["items"])
        out.append(lambda v: not isinstance(v, list) or all(each(i) for i in v))
    return out


def _object_checks(schema: dict[str, Any]) -> list[Check]:
    out = _size_checks(schema, "minProperties", "maxProperties", dict)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _Unsupported
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise _Unsupported
    compiled = tuple((name, _compile(sub)) for name, sub in props.items())
    extra = _compile(schema["additionalProperties"]) if "additionalProperties" in schema \
        else None
    known = frozenset(props)
    if not (required or compiled or extra):
        return out

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name in required:
            if name not in v:
                return False
        for name, sub in compiled:
            if name in v and not sub(v[name]):
                return False
        if extra is not None:
            for name, value in v.items():
                if name not in known and not extra(value):
                    return False
        return True
    out.append(check)
    return out
