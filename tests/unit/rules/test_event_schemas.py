"""Event schemas' verdicts: jsonschema-rs (which decides, rules.loader) against
jsonschema's Draft202012Validator (which writes the messages), on generated
schemas and instances (Hypothesis), hand-picked corner cases and the shipped
schemas. The two must agree on every instance, with one documented
difference: a pattern's `$` matches only at the very end of the string
(ECMA 262, as JSON Schema specifies; jsonschema-rs), not before a final
newline as in Python's re (jsonschema). The oracle here is jsonschema with
that one rule made ECMA's.

(These were the tests of rulebot's own compiled predicates, fastschema.py,
which jsonschema-rs replaced; JSON equality is now ruletest.checks.same.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulebot.rules.loader import load_rules
from rulebot.ruletest.checks import same as json_equal

ROOT = Path(__file__).resolve().parents[3]


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    # PATTERNS and the hand-picked cases use `$` only as the end anchor.
    if isinstance(instance, str) and not re.search(pattern.replace("$", r"\Z"), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


#: jsonschema, with ECMA 262's `$` (see the module docstring).
Oracle = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                      {"pattern": _ecma_pattern})


def is_valid(schema: Any, instance: Any) -> bool:
    return bool(Oracle(schema).is_valid(instance))


def compile_schema(schema: Any) -> Any:
    """jsonschema-rs's yes/no for a schema, as rules.loader compiles it; None
    when jsonschema-rs refuses the schema (the loader then leaves it to jsonschema)."""
    try:
        return jsonschema_rs.Draft202012Validator(schema).is_valid
    except (ValueError, jsonschema_rs.ValidationError):
        return None


# ---------------------------------------------------------------- strategies

KEYS = ["a", "b", "c", "type", "to", "quoted key", "é"]
PATTERNS = ["^a", "b$", "^[^@]+@[^@]+$", "^[^@/\\s]+@[^@/\\s]+$", "", "a|b", "^$", "\\d",
            "^.{2}$", "é"]
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]

# Values where JSON Schema and Python disagree: true/1, false/0, 1/1.0, 2.0 an integer.
TRICKY = [None, True, False, 0, 1, -1, 2, 0.0, 1.0, 2.0, -0.0, 0.5, 2.5, 3, 10**20, 1e20,
          "", "a", "b", "ab", "ba", "a@b", "x@y.z", "é", "éé", "a b@c", "1", "true", "2.0",
          [], {}, [True], [1], [1.0], [0], [False], {"a": 0}, {"a": False}, {"a": 1.0},
          ["a", "b"]]
scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.integers(-4, 6),
    st.floats(-4, 6, allow_nan=False, allow_infinity=False),
    st.text(alphabet="ab@é\u00e9\U0001f600 /", max_size=6),
    st.text(max_size=3),
)
keys = st.sampled_from(KEYS)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=10,
)

counts = st.one_of(st.integers(0, 4), st.sampled_from([0.0, 2.0]))
bounds = st.one_of(st.integers(-3, 5), st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, -1.5]),
                   st.floats(-3, 5, allow_nan=False, allow_infinity=False))
type_names = st.sampled_from(TYPES)


# Keyword values (const, enum, default) are mostly the tricky scalars, sometimes deeper.
keyword_values = st.one_of(st.sampled_from(TRICKY), st.sampled_from(TRICKY), json_values)


def _schema(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    keywords: dict[str, st.SearchStrategy[Any]] = {
        "type": type_names | st.lists(type_names, min_size=1, max_size=3, unique=True),
        "const": keyword_values,
        "enum": st.lists(keyword_values, max_size=4),
        "properties": st.dictionaries(keys, children, max_size=3),
        "required": st.lists(keys, max_size=3, unique=True),
        "additionalProperties": st.booleans() | children,
        "minLength": counts,
        "maxLength": counts,
        "pattern": st.sampled_from(PATTERNS),
        "minimum": bounds,
        "maximum": bounds,
        "exclusiveMinimum": bounds,
        "exclusiveMaximum": bounds,
        "items": children,
        "minItems": counts,
        "maxItems": counts,
        "minProperties": counts,
        "maxProperties": counts,
    }
    annotations: dict[str, st.SearchStrategy[Any]] = {
        # never change validity
        "description": st.just("d"),
        "title": st.text(max_size=3),
        "format": st.sampled_from(["email", "date-time", "uri", "ipv4", "no-such-format"]),
        "$comment": st.just("c"),
        "default": keyword_values,
        "examples": st.lists(keyword_values, max_size=2),
        "deprecated": st.booleans(),
        "readOnly": st.booleans(),
    }
    # A few keywords per schema (the shipped ones have three or four per level):
    # with many, almost no instance is valid and the property tests little.
    return st.tuples(
        st.lists(st.sampled_from(sorted(keywords)), min_size=1, max_size=3, unique=True),
        st.lists(st.sampled_from(sorted(annotations)), max_size=2, unique=True),
    ).flatmap(lambda chosen: st.fixed_dictionaries(
        {**{k: keywords[k] for k in chosen[0]}, **{k: annotations[k] for k in chosen[1]}}))


# Leaves: boolean schemas and flat keyword schemas; then nesting through
# properties, additionalProperties and items.
schemas = st.recursive(
    st.booleans() | _schema(st.booleans() | st.just({})),
    _schema,
    max_leaves=6,
)


def confusables(value: Any) -> list[Any]:
    """The value and the values Python's == confuses with it but JSON Schema does not."""
    if value is True or value is False:
        return [value, int(value), float(value)]
    if isinstance(value, int | float):
        out = [value, int(value), float(value)] if float(value).is_integer() else [value]
        if value in (0, 1):
            out.append(bool(value))
        return out
    if isinstance(value, list) and value:
        return [value, *([c, *value[1:]] for c in confusables(value[0])[1:]), value[1:]]
    if isinstance(value, dict) and value:
        key = next(iter(value))
        return [value, *({**value, key: c} for c in confusables(value[key])[1:]),
                {k: v for k, v in value.items() if k != key}]
    return [value]


def _near_bound(bound: Any) -> list[Any]:
    return [*confusables(bound), bound + 1, bound - 1, bound + 0.5, bound - 0.5, True, False]


def _strings(lengths: list[int]) -> st.SearchStrategy[str]:
    # "é" and an emoji: one character each, but two and four UTF-8 bytes
    return st.builds(lambda n, ch: ch * n, st.sampled_from(lengths),
                     st.sampled_from(["a", "é", "\U0001f600", "b@"]))


def _instance_for(schema: Any) -> st.SearchStrategy[Any]:
    """Instances near the schema: values its keywords are about, right at their limits,
    and the values Python confuses with them; plus arbitrary JSON."""
    near: list[st.SearchStrategy[Any]] = [json_values, st.sampled_from(TRICKY)]
    if not isinstance(schema, dict):
        return st.one_of(near)
    candidates: list[Any] = []
    if "type" in schema:
        candidates += [None, True, False, 0, 1, 1.0, 2.0, 2.5, -0.0, "", "1", [], {}]
    if "const" in schema:
        candidates += confusables(schema["const"])
    for option in schema.get("enum", []):
        candidates += confusables(option)
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema:
            candidates += _near_bound(schema[key])
    if candidates:
        near.append(st.sampled_from(candidates))
    limits = [int(schema[k]) for k in ("minLength", "maxLength") if k in schema]
    if limits:
        near.append(_strings([n + d for n in limits for d in (-1, 0, 1) if n + d >= 0]))
    if "pattern" in schema:
        # where re.search and re.match (or fullmatch) differ: the match not at the start
        pieces = st.sampled_from(["", "a", "b", "x", "1", "@", "é", "\n", "a@b", "b@a"])
        near.append(st.builds(lambda *p: "".join(p), pieces, pieces, pieces))
    item = _instance_for(schema["items"]) if "items" in schema else json_values
    sizes = [int(schema[k]) for k in ("minItems", "maxItems") if k in schema]
    near.append(st.lists(item, max_size=4))
    if sizes:
        near.append(st.sampled_from([n + d for n in sizes for d in (-1, 0, 1) if n + d >= 0])
                    .flatmap(lambda n: st.lists(item, min_size=n, max_size=n)))
    properties = schema.get("properties", {})
    names = sorted({*properties, *schema.get("required", [])})
    extra = schema.get("additionalProperties")
    counts = [int(schema[k]) for k in ("minProperties", "maxProperties") if k in schema]
    if names or extra is not None or counts:
        def value_for(name: str) -> st.SearchStrategy[Any]:
            if name in properties:
                return _instance_for(properties[name])
            return _instance_for(extra) if extra is not None else json_values
        def objects(some_keys: st.SearchStrategy[str], least: int) -> st.SearchStrategy[Any]:
            return st.lists(some_keys, min_size=least, max_size=4, unique=True).flatmap(
                lambda chosen: st.fixed_dictionaries({n: value_for(n) for n in chosen}))
        near.append(objects(st.sampled_from(names) | keys if names else keys, 0))
        if names:  # only the schema's own names: no additional properties
            near.append(objects(st.sampled_from(names), 1))
    return st.one_of(near)


cases = schemas.flatmap(
    lambda schema: st.tuples(st.just(schema), st.lists(_instance_for(schema), min_size=1,
                                                       max_size=6)))

# ---------------------------------------------------------------- properties


@settings(max_examples=1200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases)
def test_predicate_equals_jsonschema(case: tuple[Any, list[Any]]) -> None:
    assert_agrees(*case)


def assert_agrees(schema: Any, instances: list[Any]) -> None:
    check = compile_schema(schema)
    assert check is not None, f"supported schema not compiled: {schema!r}"
    validator = Oracle(schema)
    for instance in instances:
        want = validator.is_valid(instance)
        assert check(instance) is want, f"{schema!r} on {instance!r}: jsonschema says {want}"


# Object schemas as event schemas are written: the keywords interact (which
# names are additional depends on properties), so they are drawn together.
object_schemas = st.fixed_dictionaries(
    {"properties": st.dictionaries(keys, schemas, min_size=1, max_size=3)},
    optional={
        "type": st.just("object"),
        "required": st.lists(keys, max_size=3, unique=True),
        "additionalProperties": st.booleans() | schemas,
        "minProperties": counts,
        "maxProperties": counts,
    },
)


@settings(max_examples=350, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=object_schemas.flatmap(
    lambda schema: st.tuples(st.just(schema), st.lists(_instance_for(schema), min_size=1,
                                                       max_size=6))))
def test_object_schema_predicate_equals_jsonschema(case: tuple[Any, list[Any]]) -> None:
    assert_agrees(*case)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, instance=json_values)
def test_predicate_is_total(schema: Any, instance: Any) -> None:
    check = compile_schema(schema)
    assert check is not None
    assert check(instance) in (True, False)


def test_generated_instances_are_both_valid_and_invalid() -> None:
    # Guards the property above from passing on "always invalid" examples.
    outcomes: list[bool] = []

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=cases)
    def collect(case: tuple[Any, list[Any]]) -> None:
        schema, instances = case
        if isinstance(schema, dict) and len(schema) >= 2:  # not the trivial schemas
            outcomes.extend(is_valid(schema, i) for i in instances)

    collect()
    assert len(outcomes) >= 200
    valid = sum(outcomes)
    assert 0.1 * len(outcomes) <= valid <= 0.9 * len(outcomes), (valid, len(outcomes))


# ---------------------------------------------------------------- every keyword, exhaustively

_SUB = [True, False, {}, {"type": "integer"}, {"const": 1}, {"minimum": 1}, {"type": "string"},
        {"enum": [True, "a"]}]
_BOUNDS = [-1, 0, 0.5, 1, 1.0, 2, 2.5, -0.0, 10**20, 1e20]
GRID_SCHEMAS: list[Any] = [
    True, False, {},
    *({"type": t} for t in TYPES),
    {"type": ["integer", "string"]}, {"type": ["number", "null"]}, {"type": ["boolean", "array"]},
    *({"const": v} for v in TRICKY),
    *({"enum": [v]} for v in TRICKY),
    {"enum": []}, {"enum": [0, "a", [True]]}, {"enum": [1.0, None, {"a": False}]},
    *({k: n} for k in ("minLength", "maxLength", "minItems", "maxItems", "minProperties",
                       "maxProperties") for n in (0, 1, 2, 2.0, 3)),
    *({"pattern": p} for p in PATTERNS),
    *({k: b} for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
      for b in _BOUNDS),
    *({"items": sub} for sub in _SUB),
    *({"required": r} for r in ([], ["a"], ["a", "b"], ["quoted key"])),
    *({"properties": {"a": sub}} for sub in _SUB),
    *({"additionalProperties": sub} for sub in _SUB),
    *({"properties": {"a": sub}, "additionalProperties": extra}
      for sub in (True, {"type": "integer"}) for extra in _SUB),
]
GRID_INSTANCES: list[Any] = [
    *TRICKY, 3.0, -1.0, -0.5, 0.4999, 10**20 + 1, 1e20 + 2**20, "abc", "é" * 2, "\U0001f600",
    "\U0001f600" * 3, "a\n", "b\n", "xb", "x1", "aé", "a@b@c", "@b", "a@",
    [1, True], [1.0, 2], [True, False], [[]], ["a"], [None], [1, 2, 3], [{"a": 1}],
    {"a": 1}, {"a": True}, {"a": 1.0}, {"a": "x"}, {"b": 1}, {"a": 1, "b": "x"},
    {"a": 1, "b": 2, "c": 3}, {"quoted key": None}, {"a": None},
]


@pytest.mark.parametrize("schema", GRID_SCHEMAS, ids=repr)
def test_single_keywords_on_every_tricky_instance(schema: Any) -> None:
    assert_agrees(schema, GRID_INSTANCES)


# ---------------------------------------------------------------- hand-picked cases

HAND_PICKED: list[tuple[Any, list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 2.0, 2.5, True, False, "1", None, 10**30, 1e30]),
    ({"type": "number"}, [1, 1.0, True, "1", None]),
    ({"type": "boolean"}, [True, False, 0, 1]),
    ({"type": ["string", "integer"]}, ["a", 1, 1.5, True, None]),
    ({"type": "null"}, [None, False, 0, ""]),
    ({"type": "array"}, [[], {}, "a"]),
    ({"type": "object"}, [{}, [], None]),
    ({"const": 1}, [1, 1.0, True, "1"]),
    ({"const": True}, [True, 1, 1.0]),
    ({"const": False}, [False, 0, 0.0, None]),
    ({"const": [1]}, [[1], [1.0], [True]]),
    ({"const": {"a": 0}}, [{"a": 0}, {"a": 0.0}, {"a": False}, {"a": 0, "b": 1}]),
    ({"const": None}, [None, False, 0]),
    ({"enum": [0, "a", [True]]}, [0, 0.0, False, "a", [True], [1]]),
    ({"enum": []}, [None, 0]),
    ({"minLength": 2}, ["é", "éé", "\U0001f600\U0001f600", "a", 5]),
    ({"maxLength": 1}, ["\U0001f600", "ab", ""]),
    ({"minLength": 2.0}, ["a", "ab"]),
    ({"pattern": "^a"}, ["ab", "ba", 1]),
    ({"pattern": "b$"}, ["ab", "ba", "b\n"]),
    ({"minimum": 1}, [1, 0.999, True, False, "0"]),
    ({"exclusiveMinimum": 1}, [1, 1.0, 1.5, True]),
    ({"maximum": 1.5}, [1.5, 2, False]),
    ({"exclusiveMaximum": 0}, [0, -0.0, -1, False]),
    ({"minimum": 10**20}, [10**20, 1e20, 10**20 - 1]),
    ({"items": {"type": "integer"}}, [[1, 2.0], [1, True], [], "x", {"a": True}]),
    ({"items": False}, [[], [1], "x"]),
    ({"minItems": 1, "maxItems": 1}, [[], [1], [1, 2], "a"]),
    ({"minProperties": 1, "maxProperties": 1}, [{}, {"a": 1}, {"a": 1, "b": 2}, [1]]),
    ({"required": ["a"]}, [{"a": None}, {}, ["a"], "a"]),
    ({"properties": {"a": False}}, [{"a": 1}, {"b": 1}, [1]]),
    ({"properties": {"a": {"type": "string"}}, "additionalProperties": False},
     [{"a": "x"}, {"a": 1}, {"a": "x", "b": 1}, {}]),
    ({"additionalProperties": {"type": "integer"}}, [{"a": 1}, {"a": True}, {}]),
    ({"additionalProperties": True, "properties": {"a": True}}, [{"b": 1}]),
    (True, [None, 1]),
    (False, [None, 1]),
    ({}, [None, 1]),
    ({"description": "d", "title": "t", "format": "email", "$comment": "c",
      "examples": [1], "default": 1, "deprecated": True, "readOnly": True,
      "writeOnly": False, "$id": "https://example.com/s", "$anchor": "here",
      "contentEncoding": "base64", "contentMediaType": "text/plain"},
     ["not an email", 1, None]),
]


@pytest.mark.parametrize(("schema", "instances"), HAND_PICKED)
def test_hand_picked_schemas(schema: Any, instances: list[Any]) -> None:
    check = compile_schema(schema)
    assert check is not None
    for instance in instances:
        assert check(instance) is is_valid(schema, instance), instance


# ---------------------------------------------------------------- unsupported schemas

# Keywords rulebot's former predicates left to jsonschema: jsonschema-rs has
# them all, with the same verdicts.
MORE_KEYWORDS: list[Any] = [
    {"anyOf": [{"type": "string"}]},
    {"oneOf": [{"type": "string"}]},
    {"allOf": [{"type": "string"}]},
    {"$ref": "#/$defs/a", "$defs": {"a": {"type": "string"}}},
    {"$defs": {"a": {"type": "string"}}},
    {"patternProperties": {"^a": {"type": "string"}}},
    {"prefixItems": [{"type": "string"}]},
    {"prefixItems": [{"type": "string"}], "items": False},
    {"contains": {"type": "string"}},
    {"multipleOf": 2},
    {"uniqueItems": True},
    {"if": {"type": "string"}, "then": {"minLength": 1}},
    {"not": {"type": "string"}},
    {"dependentRequired": {"a": ["b"]}},
    {"dependentSchemas": {"a": {"required": ["b"]}}},
    {"unevaluatedProperties": False},
    {"unevaluatedItems": False},
    {"propertyNames": {"pattern": "^a"}},
    {"no-such-keyword": 1},  # unknown keywords are annotations
    {"$schema": "https://json-schema.org/draft/2020-12/schema"},
    # and nested
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}},
    {"type": "object", "additionalProperties": {"not": {}}},
    {"type": "array", "items": {"uniqueItems": True}},
    {"properties": {"a": {"properties": {"b": {"$ref": "#"}}}}},
]


@pytest.mark.parametrize("schema", MORE_KEYWORDS, ids=repr)
def test_the_other_keywords_agree_too(schema: Any) -> None:
    assert_agrees(schema, [*GRID_INSTANCES, {"a": "x"}, {"a": 1, "b": 2}, ["x", "x"], [1, 2]])


# Schemas jsonschema-rs refuses to compile: an invalid regular expression, or
# a keyword value of the wrong kind. The loader's meta-schema check rejects
# most of them first; whatever gets through is left to jsonschema.
REFUSED: list[Any] = [
    {"pattern": "("},
    {"pattern": "[a-"},
    {"properties": {"a": {"pattern": "*"}}},
    {"items": {"pattern": "(?P<x"}},
    # keyword values of the wrong kind
    {"type": "no-such-type"},
    {"type": []},
    {"type": ["string", 1]},
    {"enum": "abc"},
    {"minLength": 1.5},
    {"minLength": "1"},
    {"minLength": True},
    {"minimum": "1"},
    {"minimum": True},
    {"required": "a"},
    {"required": [1]},
    {"properties": []},
    {"items": [{"type": "string"}]},
    {"additionalProperties": 1},
    {"pattern": 1},
    None,
    1,
    "string",
    [],
]


@pytest.mark.parametrize("schema", REFUSED, ids=repr)
def test_invalid_schemas_are_refused(schema: Any) -> None:
    assert compile_schema(schema) is None


NULL_COUNTS = ["minLength", "maxLength", "minItems", "maxItems", "minProperties",
               "maxProperties"]


@pytest.mark.parametrize("keyword", NULL_COUNTS)
def test_null_count_keyword_is_left_to_jsonschema(keyword: str) -> None:
    # Regression (fixed in 29b28e8): a null count keyword was compiled like an
    # absent one (always valid) while jsonschema's is_valid raises TypeError
    # (len(x) < None) on an instance it applies to.
    instance = {"minLength": "abc", "maxLength": "abc", "minItems": [1], "maxItems": [1],
                "minProperties": {"a": 1}, "maxProperties": {"a": 1}}[keyword]
    with pytest.raises(TypeError):
        is_valid({keyword: None}, instance)
    assert compile_schema({keyword: None}) is None
    assert compile_schema({"properties": {"a": {keyword: None}}}) is None
    # Rule sets never meet such a schema anyway: the meta-schema rejects it.
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft202012Validator.check_schema({keyword: None})


# ---------------------------------------------------------------- shipped schemas


SHIPPED_EVENTS_BY_PATH = {path: load_rules(ROOT / path).events for path in
                          ("rules", "rules/friends")}


@pytest.mark.parametrize("path", ["rules", "rules/friends"])
def test_shipped_event_schemas_all_compile(path: str) -> None:
    events = load_rules(ROOT / path).events
    assert events is not None
    assert events.validators
    assert set(events.fast) == set(events.validators)


SHIPPED_EVENTS: list[Any] = [
    {"type": "chat", "to": "bob@localhost", "text": "hi"},
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": 1},
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": 1.0},
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": 1.5},
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": True},
    {"type": "chat", "to": "bob@localhost", "text": ""},
    {"type": "chat", "to": "bob@localhost", "text": "x" * 4097},
    {"type": "chat", "to": "bob@localhost", "text": "x" * 4096},
    {"type": "chat", "to": "bob", "text": "hi"},
    {"type": "chat", "to": "bob@localhost/r", "text": "hi"},
    {"type": "chat", "to": "bob@local host", "text": "hi"},
    {"type": "chat", "to": "bob@localhost", "text": "hi", "extra": 1},
    {"type": "chat", "text": "hi"},
    {"type": "announce", "text": "news"},
    {"type": "announce", "text": "news", "to": "x@y"},
    {"type": "ping"},
    {"type": "ping", "id": "p"},
    {"type": "ping", "whatever": [1]},
    {"type": "friend-request", "to": "bob@localhost"},
    {"type": 1, "to": "bob@localhost"},
    {"type": "friend-request"},
    {"type": "friend-request", "to": "bob@localhost", "x": None},
    {},
    [],
    "chat",
    None,
]


@pytest.mark.parametrize("path", ["rules", "rules/friends"])
def test_shipped_predicates_agree_with_their_validators(path: str) -> None:
    events = load_rules(ROOT / path).events
    assert events is not None
    answers = set()
    for name, validator in events.validators.items():
        for event in SHIPPED_EVENTS:
            want = Oracle(validator.schema).is_valid(event)
            assert events.fast[name].is_valid(event) is want, (name, event)
            answers.add(want)
    assert answers == {True, False}


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(event=st.dictionaries(keys | st.sampled_from(["text", "id", "extra"]), json_values
                             | st.sampled_from(["chat", "ping", "announce", "a@b", "b"]),
                             max_size=5))
def test_shipped_predicates_agree_on_generated_events(event: dict[str, Any]) -> None:
    for path in ("rules", "rules/friends"):
        events = SHIPPED_EVENTS_BY_PATH[path]
        assert events is not None
        for name, validator in events.validators.items():
            want = Oracle(validator.schema).is_valid(event)
            assert events.fast[name].is_valid(event) is want, (path, name, event)


# ---------------------------------------------------------------- json_equal


@pytest.mark.parametrize(
    ("one", "two", "equal"),
    [
        (True, 1, False),
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (True, True, True),
        (False, False, True),
        (1, 1.0, True),
        (0, -0.0, True),
        (2, 2.0, True),
        ([True], [1], False),
        ([1], [1.0], True),
        ([], [], True),
        ([], {}, False),
        ({}, [], False),
        ({"a": 0}, {"a": False}, False),
        ({"a": 0}, {"a": 0.0}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": None}, {"b": None}, False),
        ([[True]], [[1]], False),
        ([{"a": [False]}], [{"a": [0]}], False),
        ("a", "a", True),
        ("1", 1, False),
        ("ab", ["a", "b"], False),
        (["a", "b"], "ab", False),
        (None, None, True),
        (None, False, False),
        (None, 0, False),
        ([1, 2], [2, 1], False),
        ([1], [1, 1], False),
    ],
)
def test_json_equal_corner_cases(one: Any, two: Any, equal: bool) -> None:
    assert json_equal(one, two) is equal
    assert json_equal(two, one) is equal


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(one=json_values, two=json_values)
def test_json_equal_is_jsonschemas_equality(one: Any, two: Any) -> None:
    # The reference: what const answers, through jsonschema itself.
    assert json_equal(one, two) is is_valid({"const": two}, one)
    assert json_equal(one, one) is True
