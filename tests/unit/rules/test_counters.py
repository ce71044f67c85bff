"""Windowed counters: declared under `counters:`, changed by count/reset
actions (stored with the decision), read by counter(name, key) over the
window ending at the event's `now`."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import Buckets, LiveState, MemoryRelations, PresenceTable
from rulebot.model import Count, Envelope, Reset, Stanza
from rulebot.rules.loader import check_rules
from rulebot.rules.ruleset import RuleSet

T0 = 1_796_115_600.0

RULES = """version: 1
counters:
  strikes: {window: 10m}
rules:
  - name: third
    match: "event.type == 'report' && counter('strikes', event.who) >= `2`"
    actions:
      - reset: {counter: strikes, key: event.who}
      - reply: {payload: "{blocked: event.who}"}
  - name: strike
    match: "event.type == 'report'"
    actions:
      - count: {counter: strikes, key: event.who, by: 1}
      - reply: {payload: "{strikes: counter('strikes', event.who)}"}
  - name: by-number
    match: "event.type == 'n'"
    actions:
      - count: {counter: strikes, key: event.n, by: 5}
"""


def load(tmp_path: Path, text: str = RULES) -> RuleSet:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = check_rules([str(path)])
    assert loaded.ruleset is not None, [i.format() for i in loaded.issues]
    return loaded.ruleset


def test_three_reports_in_the_window_block_and_the_counter_restarts(tmp_path: Path) -> None:
    rs = load(tmp_path)
    now = T0
    store = MemoryRelations(clock=lambda: now)
    state = LiveState(store, PresenceTable(), Buckets(lambda: 0.0))
    matched = []
    for minute in (0, 4, 8, 9):  # the third within 10 minutes; then counting again
        now = T0 + minute * 60
        d = evaluate(rs, Envelope({"type": "report", "who": "m@x"}, "a@x", "a@x/r",
                                  Stanza("message", "chat"), "bot@x", now), state=state)
        store.apply([a for a in d.actions if isinstance(a, Count | Reset)])
        matched.append(d.matched[0])
    assert matched == ["strike", "strike", "third", "strike"]
    assert store.count_since("strikes", "m@x", 0) == 1


def test_counts_age_out_of_the_window(tmp_path: Path) -> None:
    rs = load(tmp_path)
    store = MemoryRelations(clock=lambda: T0)
    store.counts[("strikes", "m@x")] = [(T0 - 601, 1), (T0 - 599, 1)]
    d = evaluate(rs, Envelope({"type": "report", "who": "m@x"}, "a@x", "a@x/r",
                              Stanza("message", "chat"), "bot@x", T0),
                 state=LiveState(store, PresenceTable(), Buckets(lambda: 0.0)))
    assert d.matched == ("strike",)
    assert d.actions[1].payload == {"strikes": 1}  # type: ignore[union-attr]


def test_a_number_key_is_its_json_text_and_by_is_kept(tmp_path: Path) -> None:
    d = evaluate(load(tmp_path), Envelope({"type": "n", "n": 42}, "a@x", "a@x/r",
                                          Stanza("message", "chat"), "bot@x", T0))
    assert d.actions == (Count("strikes", "42", 5, "by-number"),)


@pytest.mark.parametrize(("event", "message"), [
    ({"type": "report", "who": None}, "the key must be a non-empty text or a number"),
    ({"type": "report", "who": ""}, "the key must be a non-empty text or a number"),
])
def test_a_bad_key_is_the_rule_s_error(tmp_path: Path, event: dict[str, object],
                                       message: str) -> None:
    d = evaluate(load(tmp_path), Envelope(event, "a@x", "a@x/r", Stanza("message", "chat"),
                                          "bot@x", T0))
    assert any(message in e.message for e in d.errors), d.errors


def test_counter_without_a_clock_is_an_error(tmp_path: Path) -> None:
    d = evaluate(load(tmp_path), Envelope({"type": "report", "who": "m@x"}, "a@x", "a@x/r",
                                          Stanza("message", "chat"), "bot@x", None))
    assert any("no `now`" in e.message for e in d.errors)


def test_validate_catches_counter_mistakes_in_one_run(tmp_path: Path) -> None:
    text = """version: 1
counters:
  strikes: {window: 0s}
  spam: {window: soon}
  kept: {window: 1h}
rules:
  - name: a
    match: "counter('strikez', sender) > `1`"
    actions:
      - count: {counter: strike, key: sender}
      - reset: {counter: kept, key: sender}
"""
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = check_rules([str(path)])
    assert loaded.ruleset is None
    shown = [f"{i.line}:{i.path}: {i.message}" for i in loaded.issues]
    for want in ["3:counters.strikes.window: counter 'strikes': a window of zero counts nothing",
                 "4:counters.spam.window: counter 'spam': not a duration: 'soon'",
                 "8:rules[0].match: unknown counter 'strikez', did you mean 'strikes'?",
                 "10:rules[0].actions[0].count.counter: unknown counter 'strike', did you mean"]:
        assert any(line.startswith(want) for line in shown), (want, shown)


def test_a_counter_nothing_uses_is_a_warning(tmp_path: Path) -> None:
    rs_text = RULES.replace("  strikes: {window: 10m}\n", "  strikes: {window: 10m}\n"
                                                          "  idle: {window: 1h}\n")
    path = tmp_path / "r.yaml"
    path.write_text(rs_text, encoding="utf-8")
    loaded = check_rules([str(path)])
    assert loaded.ruleset is not None
    assert [i.message.split(" (")[0] for i in loaded.issues if i.severity == "warning"] == [
        "counter 'idle' is never used"]
