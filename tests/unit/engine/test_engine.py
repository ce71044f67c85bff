"""Table-driven tests of the pure engine over inline YAML rule sets."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from rulebot.engine.evaluate import evaluate
from rulebot.engine.render import decision_json
from rulebot.model import Envelope, ErrorReply, Stanza
from rulebot.rules.loader import parse_rules


def env(event: dict[str, Any], sender: str = "alice@x", kind: str = "message",
        stype: str = "chat") -> Envelope:
    return Envelope(event, sender, f"{sender}/phone", Stanza(kind, stype, "s1"),  # type: ignore[arg-type]
                    "friend@x")


def decide(rules: str, event: dict[str, Any], **kw: Any) -> dict[str, Any]:
    ruleset = parse_rules(textwrap.dedent(rules))
    out = decision_json(evaluate(ruleset, env(event, **kw)))
    out.pop("version")
    return out


BASIC = """
version: 1
lists:
  admins: [boss@x]
  team: [alice@x, bob@x, carol@x]
rules:
  - name: chat
    match: "event.type == 'chat'"
    actions:
      - forward: {to: event.to}
  - name: shout
    match: "event.type == 'shout' && in_list('admins', sender)"
    actions:
      - broadcast: {to: lists.team, payload: "{type: 'shout', text: event.text}"}
  - name: echo
    match: "event.type == 'echo'"
    actions:
      - reply: {payload: "{echo: event.text}"}
  - name: literal
    match: "event.type == 'lit'"
    actions:
      - forward: {to: {value: [bob@x, carol@x]}, payload: {value: {fixed: true}}}
  - name: mark
    match: "event.type == 'multi'"
    continue: true
    actions:
      - forward: {to: {value: bob@x}}
  - name: multi-second
    match: "event.type == 'multi'"
    actions:
      - forward: {to: {value: carol@x}}
  - name: disabled
    enabled: false
    actions: [{drop: {}}]
"""

CASES = [
    pytest.param({"type": "chat", "to": "bob@x"}, {}, ["chat"],
                 [("forward", ["bob@x"], {"type": "chat", "to": "bob@x"})],
                 id="forward-defaults-to-the-event-as-payload"),
    pytest.param({"type": "shout", "text": "hi"}, {"sender": "boss@x"}, ["shout"],
                 [("broadcast", ["alice@x", "bob@x", "carol@x"], {"type": "shout", "text": "hi"})],
                 id="broadcast-to-named-list"),
    pytest.param({"type": "shout", "text": "hi"}, {"sender": "bob@x"}, [],
                 [("drop", [], None)], id="non-admin-shout-falls-to-default-drop"),
    pytest.param({"type": "echo", "text": "e"}, {}, ["echo"],
                 [("reply", ["alice@x/phone"], {"echo": "e"})], id="reply-goes-to-full-jid"),
    pytest.param({"type": "lit"}, {}, ["literal"],
                 [("forward", ["bob@x", "carol@x"], {"fixed": True})],
                 id="literal-destinations-and-payload"),
    pytest.param({"type": "multi"}, {}, ["mark", "multi-second"],
                 [("forward", ["bob@x"], {"type": "multi"}),
                  ("forward", ["carol@x"], {"type": "multi"})],
                 id="continue-lets-later-rules-match-in-order"),
    pytest.param({"type": "nothing"}, {}, [], [("drop", [], None)],
                 id="disabled-rule-never-matches"),
]


@pytest.mark.parametrize(("event", "kw", "matched", "actions"), CASES)
def test_basic_rule_set(event: dict[str, Any], kw: dict[str, Any], matched: list[str],
                        actions: list[tuple[str, list[str], Any]]) -> None:
    out = decide(BASIC, event, **kw)
    assert out["matched"] == matched
    got = [(a["type"], a["to"], a.get("payload")) for a in out["actions"]]
    assert got == actions
    assert out["errors"] == []


def test_broadcast_excludes_sender_unless_asked() -> None:
    rules = """
    version: 1
    lists: {team: [alice@x, bob@x]}
    rules:
      - name: a
        match: "event.n == `1`"
        actions: [{broadcast: {to: lists.team}}]
      - name: b
        actions: [{broadcast: {to: lists.team, include_sender: true}}]
    """
    assert decide(rules, {"n": 1})["actions"][0]["to"] == ["bob@x"]
    assert decide(rules, {"n": 2})["actions"][0]["to"] == ["alice@x", "bob@x"]


def test_first_match_wins_without_continue() -> None:
    rules = """
    version: 1
    rules:
      - name: first
        match: "event.a"
        actions: [{forward: {to: "'b@x'"}}]
      - name: second
        match: "event.a"
        actions: [{forward: {to: "'c@x'"}}]
    """
    out = decide(rules, {"a": 1})
    assert out["matched"] == ["first"]
    assert [a["to"] for a in out["actions"]] == [["b@x"]]


def test_drop_stops_evaluation_even_with_continue() -> None:
    rules = """
    version: 1
    rules:
      - name: stop
        continue: true
        actions: [{drop: {reason: nope}}]
      - name: never
        actions: [{forward: {to: "'b@x'"}}]
    """
    out = decide(rules, {})
    assert out["matched"] == ["stop"]
    assert out["actions"] == [{"type": "drop", "to": [], "reason": "nope", "rule": "stop"}]


@pytest.mark.parametrize(
    ("expr", "message_part"),
    [
        pytest.param("length(event.n)", "invalid type", id="function-type-error"),
        pytest.param("contains(event.n, 'x')", "invalid type", id="contains-on-a-number"),
    ],
)
def test_runtime_error_in_match_is_recorded_and_rule_skipped(expr: str, message_part: str
                                                             ) -> None:
    rules = f"""
    version: 1
    rules:
      - name: broken
        match: "{expr}"
        actions: [{{forward: {{to: "'b@x'"}}}}]
      - name: fallback
        actions: [{{forward: {{to: "'c@x'"}}}}]
    """
    out = decide(rules, {"n": 5, "p": "("})
    assert out["matched"] == ["fallback"]
    assert len(out["errors"]) == 1
    assert out["errors"][0]["rule"] == "broken"
    assert message_part in out["errors"][0]["message"]


@pytest.mark.parametrize(
    ("to", "message_part"),
    [
        pytest.param("event.missing", "must be a JID or a list of JIDs", id="null-destination"),
        pytest.param("`5`", "must be a JID or a list of JIDs", id="number-destination"),
        pytest.param("'not a jid'", "not a JID", id="destination-with-space"),
        pytest.param("['a@x', `3`]", "not a JID", id="list-with-non-string"),
    ],
)
def test_bad_destination_makes_the_rule_not_match(to: str, message_part: str) -> None:
    rules = f"""
    version: 1
    rules:
      - name: bad-to
        actions: [{{forward: {{to: "{to}"}}}}, {{reply: {{payload: "{{a: `1`}}"}}}}]
    """
    out = decide(rules, {})
    assert out["matched"] == []
    assert [a["type"] for a in out["actions"]] == ["drop"]  # the default, no partial actions
    assert message_part in out["errors"][0]["message"]


def test_payload_must_be_an_object() -> None:
    rules = """
    version: 1
    rules:
      - name: r
        actions: [{reply: {payload: "event.text"}}]
    """
    out = decide(rules, {"text": "hi"})
    assert out["matched"] == []
    assert "payload must be a JSON object" in out["errors"][0]["message"]


def test_bot_is_never_a_destination() -> None:
    rules = """
    version: 1
    rules:
      - name: r
        actions: [{forward: {to: "[bot, 'friend@x/res', 'b@x']"}}]
    """
    assert decide(rules, {})["actions"][0]["to"] == ["b@x"]


def test_recipient_cap_is_enforced() -> None:
    ruleset = parse_rules(textwrap.dedent("""
    version: 1
    rules:
      - name: r
        actions: [{broadcast: {to: event.to}}]
    """))
    many = [f"u{i}@x" for i in range(11)]
    decision = evaluate(ruleset, env({"to": many}), max_recipients=10)
    assert decision.matched == ()
    assert "11 recipients exceed the cap of 10" in decision.errors[0].message


def test_default_error_replies_to_unmatched_messages_but_not_presence() -> None:
    rules = """
    version: 1
    default: error
    rules:
      - name: r
        match: "event.never"
        actions: [{drop: {}}]
    """
    out = decide(rules, {})
    assert out["actions"][0]["payload"]["error"]["code"] == "no-rule"
    assert decide(rules, {}, kind="presence", stype="available")["actions"][0]["type"] == "drop"


TYPED = """
version: 1
events:
  unknown: reject
  types:
    chat:
      type: object
      required: [to]
      properties: {to: {type: string}}
rules:
  - name: chat
    match: "event.type == 'chat'"
    actions: [{forward: {to: event.to}}]
"""


def test_typed_event_failing_schema_gets_structured_error_and_no_rule_runs() -> None:
    ruleset = parse_rules(textwrap.dedent(TYPED))
    decision = evaluate(ruleset, env({"type": "chat", "to": 5}))
    assert decision.matched == ()
    (action,) = decision.actions
    assert isinstance(action, ErrorReply)
    assert (action.code, action.path, action.to) == ("invalid-event", "/to", ("alice@x/phone",))
    assert "5 is not of type 'string'" in action.message


def test_unknown_event_type_rejected_when_declared() -> None:
    out = decide(TYPED, {"type": "zzz"})
    assert out["matched"] == []
    assert out["actions"][0]["payload"]["error"]["code"] == "unknown-event-type"


def test_typed_checks_do_not_apply_to_presence() -> None:
    out = decide(TYPED, {"type": "presence"}, kind="presence", stype="available")
    assert out["actions"][0]["type"] == "drop"
    assert out["notes"] == ["no rule matched"]


def test_custom_functions_and_envelope_fields() -> None:
    rules = """
    version: 1
    lists: {vip: [alice@x]}
    macros:
      phone: "jid_resource(from) == 'phone'"
    rules:
      - name: r
        match: >-
          $phone && jid_domain(sender) == 'x' && in_list('vip', sender)
          && regex_match('^a', jid_local(sender))
        actions:
          - reply:
              payload: >-
                {bare: jid_bare(from), kind: stanza.kind, type: stanza.type,
                id: stanza.id, bot: bot, up: upper(sender)}
    """
    out = decide(rules, {})
    assert out["matched"] == ["r"]
    assert out["actions"][0]["payload"] == {
        "bare": "alice@x", "kind": "message", "type": "chat", "id": "s1", "bot": "friend@x",
        "up": "ALICE@X",
    }


def test_sender_comes_from_envelope_not_payload() -> None:
    rules = """
    version: 1
    rules:
      - name: r
        actions: [{reply: {payload: "{who: sender}"}}]
    """
    out = decide(rules, {"sender": "admin@x", "from": "admin@x"})
    assert out["actions"][0]["payload"] == {"who": "alice@x"}


def test_type_index_keeps_rule_order_across_typed_and_untyped_rules() -> None:
    rules = """
    version: 1
    rules:
      - name: any-first
        match: "event.flag"
        continue: true
        actions: [{forward: {to: "'a@x'"}}]
      - name: typed
        match: "event.type == 'chat'"
        continue: true
        actions: [{forward: {to: "'b@x'"}}]
      - name: any-last
        actions: [{forward: {to: "'c@x'"}}]
    """
    assert decide(rules, {"type": "chat", "flag": 1})["matched"] == ["any-first", "typed",
                                                                     "any-last"]
    assert decide(rules, {"type": "other", "flag": 1})["matched"] == ["any-first", "any-last"]
    assert decide(rules, {"type": 7})["matched"] == ["any-last"]


def test_version_is_a_content_hash() -> None:
    a = parse_rules("version: 1\nrules: []\n")
    b = parse_rules("version: 1\nrules: []\n")
    c = parse_rules("version: 1\nrules: []  # changed\n")
    assert a.version == b.version != c.version


ANCHORED = TYPED.replace("properties: {to: {type: string}}",
                         "properties: {to: {type: string, pattern: '^[a-z]+@x$'}}")


def test_a_patterns_end_anchor_does_not_match_before_a_final_newline() -> None:
    # ECMA 262's $ (jsonschema-rs decides), not Python's re: jsonschema alone
    # would accept "bob@x\n". The message then comes from jsonschema-rs.
    ruleset = parse_rules(textwrap.dedent(ANCHORED))
    assert evaluate(ruleset, env({"type": "chat", "to": "bob@x"})).matched == ("chat",)
    decision = evaluate(ruleset, env({"type": "chat", "to": "bob@x\n"}))
    (action,) = decision.actions
    assert isinstance(action, ErrorReply)
    assert (action.code, action.path) == ("invalid-event", "/to")
    assert "does not match" in action.message


def test_a_pattern_only_pythons_re_reads_is_left_to_jsonschema() -> None:
    ruleset = parse_rules(textwrap.dedent(TYPED.replace(
        "properties: {to: {type: string}}", "properties: {to: {type: string, pattern: 'x\\Z'}}")))
    assert ruleset.events is not None
    assert "chat" not in ruleset.events.fast  # jsonschema-rs refused the schema
    assert evaluate(ruleset, env({"type": "chat", "to": "bob@x"})).matched == ("chat",)
    (action,) = evaluate(ruleset, env({"type": "chat", "to": "bob@y"})).actions
    assert isinstance(action, ErrorReply)
    assert action.code == "invalid-event"
