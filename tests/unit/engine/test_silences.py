"""Silences in the engine and in explain: a muted rule is skipped, a muted
sender's or expression's events are dropped before any rule, only while the
silence is on."""

from __future__ import annotations

import textwrap

import pytest

from rulebot.engine.evaluate import evaluate
from rulebot.engine.explain import explain
from rulebot.model import Envelope, Silence, Stanza
from rulebot.rules.loader import parse_rules
from rulebot.rules.silences import Muting, compile_silence

NOW = 1_796_205_600.0
RULES = parse_rules(textwrap.dedent("""
    version: 1
    rules:
      - name: vip
        match: "event.type == 'chat' && event.room == 'vip'"
        actions: [{reply: {payload: "{vip: `true`}"}}]
      - name: chat
        match: "event.type == 'chat'"
        actions: [{forward: {to: event.to, payload: "{text: event.text}"}}]
      - name: other
        actions: [{reply: {payload: "{other: `true`}"}}]
"""))


def env(sender: str = "alice@x", room: str = "vip", now: float | None = NOW,
        kind: str = "message") -> Envelope:
    return Envelope({"type": "chat", "to": "bob@x", "text": "hi", "room": room}, sender,
                    f"{sender}/r", Stanza(kind, "chat", None), "friend@x", now)  # type: ignore[arg-type]


def muting(**kw: object) -> Muting:
    fields = {"id": "s1", "ends": NOW + 3600, "author": "ops", "comment": "why",
              "starts": NOW - 60, **kw}
    made, problems = compile_silence(Silence(**fields))  # type: ignore[arg-type]
    assert made is not None, problems
    return made


def test_a_muted_rule_is_skipped_and_evaluation_goes_on() -> None:
    d = evaluate(RULES, env(), silences=[muting(rule="vip")])
    assert (d.matched, d.silenced) == (("chat",), ("s1",))
    assert evaluate(RULES, env(room="lobby"), silences=[muting(rule="vip")]).silenced == ()


def test_a_muted_sender_is_dropped_before_any_rule_and_its_schema() -> None:
    d = evaluate(RULES, env(sender="alice@x"), silences=[muting(sender="Alice@X")])
    assert (d.matched, d.silenced, d.notes) == ((), ("s1",), ("silenced",))
    (drop,) = d.actions
    assert (drop.type, drop.reason, drop.rule) == ("drop", "silenced: s1", None)
    assert evaluate(RULES, env(sender="bob@x"), silences=[muting(sender="alice@x")]).matched \
        == ("vip",)


def test_an_expression_selects_the_events_and_combines_with_a_rule() -> None:
    lobby = muting(match="event.room == 'lobby'")
    assert evaluate(RULES, env(room="lobby"), silences=[lobby]).silenced == ("s1",)
    assert evaluate(RULES, env(room="vip"), silences=[lobby]).matched == ("vip",)
    # a rule muted for one sender only
    both = [muting(rule="chat", sender="carol@x")]
    assert evaluate(RULES, env(sender="carol@x", room="x"), silences=both).matched == (
        "other",)
    assert evaluate(RULES, env(sender="alice@x", room="x"), silences=both).matched == (
        "chat",)


@pytest.mark.parametrize(("starts", "ends"), [(NOW - 7200, NOW - 1), (NOW + 1, NOW + 60)])
def test_a_silence_applies_only_between_its_start_and_end(starts: float, ends: float) -> None:
    silence = muting(rule="vip", starts=starts, ends=ends)
    assert evaluate(RULES, env(), silences=[silence]).matched == ("vip",)


def test_a_failing_silence_expression_mutes_nothing() -> None:
    broken = muting(match="abs(event.text) > `1`")  # abs('hi'): an invalid-type error
    assert evaluate(RULES, env(), silences=[broken]).matched == ("vip",)


@pytest.mark.parametrize(("fields", "problem"), [
    ({}, "needs a rule, a sender or a match"),
    ({"rule": "x", "ends": NOW - 120}, "must end after it starts"),
    ({"sender": "not a jid"}, "is not a JID"),
    ({"rule": "x", "author": " "}, "needs an author"),
    ({"match": "event.room =="}, "invalid JMESPath"),
])
def test_invalid_silences_are_refused(fields: dict[str, object], problem: str) -> None:
    base = {"id": "s1", "ends": NOW + 3600, "author": "ops", "comment": "c",
            "starts": NOW - 60, **fields}
    made, problems = compile_silence(Silence(**base))  # type: ignore[arg-type]
    assert made is None
    assert any(problem in p for p in problems), problems


def test_explain_shows_the_silence_and_who_set_it() -> None:
    e = explain(RULES, env(), silences=[muting(rule="vip", comment="vip room flood")])
    statuses = {t.rule: (t.status, t.note) for t in e.rules}
    assert statuses["vip"][0] == "silenced"
    assert "silence s1 (ops: vip room flood" in statuses["vip"][1]
    assert statuses["chat"][0] == "matched"
    dropped = explain(RULES, env(), silences=[muting(sender="alice@x")])
    assert {t.status for t in dropped.rules} == {"not-evaluated"}
    assert "dropped by silence s1" in dropped.rules[0].note


def test_a_sender_silence_matches_whatever_the_case_of_the_stanza() -> None:
    d = evaluate(RULES, env(sender="Mallory@Example.com"),
                 silences=[muting(sender="mallory@example.com")])
    assert d.silenced == ("s1",)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"rule": ""}, "may not be empty"),
    ({"rule": "x", "ends": 1e13}, "before the year 10000"),
])
def test_empty_values_and_endless_silences_are_refused(fields: dict[str, object],
                                                       problem: str) -> None:
    base = {"id": "s1", "ends": NOW + 3600, "author": "ops", "comment": "c",
            "starts": NOW - 60, **fields}
    made, problems = compile_silence(Silence(**base))  # type: ignore[arg-type]
    assert made is None
    assert any(problem in p for p in problems), problems
