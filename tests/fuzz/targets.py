"""Fuzz targets shared by the CI share (tests/unit/test_fuzz_share.py) and `make fuzz`.

Each target states the property: for any input, the function under test
returns normally (a value or its own documented error), never anything else.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import strategies as st

from rulebot.engine.evaluate import evaluate
from rulebot.errors import EventError
from rulebot.model import Decision, Envelope, Stanza
from rulebot.rules.functions import NO_STATE
from rulebot.rules.loader import parse_rule_files
from rulebot.wire.decode import Limits, decode_event
from rulebot.wire.encode import encode_payload

STATE = NO_STATE
LIMITS = Limits(max_bytes=4096, max_depth=16, max_string=512, max_items=200)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
    max_leaves=30,
)
json_texts = json_values.map(lambda v: json.dumps(v, allow_nan=True)) | st.text(max_size=300) \
    | st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")) \
    | st.sampled_from(["[" * 100, '{"a":' * 50, '{"x": 1e999}', '"\\ud800"', "{}",
                      '{"a":1,"a":2}'])


def check_decoder(text: str) -> None:
    try:
        event = decode_event(text, LIMITS)
    except EventError:
        return
    assert isinstance(event, dict)
    again = decode_event(encode_payload(event), Limits(max_bytes=1 << 20, max_depth=64))
    assert again == event


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
exprs = st.sampled_from([
    "event.type == 'chat'", "in_list('admins', sender)", "event.[", "$m", "$nope",
    "length(event)", "`1`", "related(sender, event.to, 'friend')", "over_limit('r', sender)",
    "regex_match('(', sender)", "lists.nope", "evnt.x", "event.type == \"chat\"", "",
]) | st.text(max_size=40)
params = exprs | st.builds(lambda v: {"value": v}, json_values)
# Event schemas, mostly from the common keywords, sometimes with others or with
# wrong values (which jsonschema-rs refuses: jsonschema alone then checks).
schema_keywords = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["object", "string", "integer", "number", "array", "boolean",
                             "null", ["string", "integer"], "nope", []]),
    "required": st.lists(names, max_size=2) | json_values,
    "minLength": st.integers(-1, 5), "maxLength": st.integers(0, 50) | st.floats(),
    "pattern": st.sampled_from(["^a", "[", "b$", "^[^@]+@[^@]+$"]),
    "minimum": st.integers(-5, 5) | st.floats(allow_nan=False), "maximum": json_values,
    "enum": st.lists(json_values, max_size=3), "const": json_values,
    "additionalProperties": st.booleans(), "anyOf": st.lists(st.just({}), max_size=2),
    "minItems": st.integers(0, 3), "format": st.just("email"),
})
schemas = st.recursive(schema_keywords | st.booleans(), lambda inner: st.builds(
    lambda base, props, items: {**base, "properties": props, **({"items": items} if items
                                                                 is not None else {})},
    schema_keywords, st.dictionaries(names, inner, max_size=3), st.none() | inner),
    max_leaves=6)
event_types = st.fixed_dictionaries({"types": st.dictionaries(names, schemas, max_size=3)},
                                    optional={"unknown": st.sampled_from(["allow", "reject"])})
actions = st.one_of(
    st.builds(lambda t, p: {"forward": {"to": t, "payload": p}}, params, params),
    st.builds(lambda t: {"broadcast": {"to": t}}, params),
    st.builds(lambda p: {"reply": {"payload": p}}, params),
    st.builds(lambda c: {"error": {"code": c}}, names),
    st.just({"drop": None}),
    st.builds(lambda o, k: {"relate": {"object": o, "kind": k}}, params, names),
    st.dictionaries(st.text(max_size=8), json_values, max_size=2),
)
rules = st.fixed_dictionaries(
    {"name": names, "actions": st.lists(actions, max_size=3)},
    optional={"match": exprs, "continue": st.booleans() | json_values,
              "enabled": st.booleans(), "extra": json_values},
)
documents = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1"]), "rules": st.lists(rules, max_size=5)},
    optional={"lists": st.dictionaries(names, st.lists(st.text(max_size=12), max_size=3),
                                       max_size=3),
              "macros": st.dictionaries(names.map(lambda n: n.replace("-", "_")), exprs,
                                        max_size=3),
              "rate_limits": st.dictionaries(names, st.fixed_dictionaries(
                  {"rate": st.integers(-1, 5) | st.floats(allow_nan=False)}), max_size=2),
              "events": json_values | event_types,
              "default": st.sampled_from(["drop", "error", "x"])},
)
rule_texts = documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)) \
    | st.text(max_size=400) \
    | st.sampled_from(["a: &a [*a]", "!!python/object/apply:os.system ['x']", "- [", "\t-"])


#: Events every rule set that loads is then evaluated on: whatever the rules
#: and schemas say, evaluation returns a Decision and never raises.
PROBES = [
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": 1},
    {"type": "a", "x": [1, {"y": None}], "n": 1.5},
    {},
    {"type": 0, "to": ["a@b", 3], "text": "", "required": True},
]


def check_loader(text: str) -> Any:
    result = parse_rule_files([("fuzz.yaml", text)])
    assert (result.ruleset is None) == bool(result.errors)
    for issue in result.issues:
        assert issue.file == "fuzz.yaml"
        assert issue.line >= 0
        assert "\n" not in issue.format()
    if result.ruleset is not None:
        for event in PROBES:
            for kind in ("message", "presence"):
                env = Envelope(event, "alice@localhost", "alice@localhost/r",
                               Stanza(kind, "chat", "s1"), "friend@localhost")
                decision = evaluate(result.ruleset, env, state=STATE)
                assert isinstance(decision, Decision)
                assert decision.matched or decision.actions  # no match: the default action
    return result
