"""Timers: scheduled by rules (stored with the decision's record), taken when
due under a lease, fired through the rules as stanza.kind 'timer' events of
their sender, forgotten once what they produced was sent; a firing repeated
after a crash is answered from the first one's record (same message ids).

The store is real SQLite (and PostgreSQL for the store's own SQL); the
daemon runs over a fake connection (tests/integration/test_time_live.py
fires timers through a real server, across a restart and a kill -9)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from test_daemon_wiring import FakeConnection, config_for, fake_connector

from rulebot.bot.values import Inbound
from rulebot.daemon.app import Daemon
from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import Buckets, LiveState, MemoryRelations, PresenceTable
from rulebot.model import Envelope, Schedule, Stanza
from rulebot.rules.loader import check_rules, load_rules
from rulebot.store.open import open_store
from rulebot.store.values import ScheduleChange

T0 = 1_796_115_600.0

RULES = """version: 1
rules:
  - name: remind-me
    match: "stanza.kind == 'message' && event.type == 'remind'"
    actions:
      - schedule:
          key: "join(':', ['r', sender, event.what])"
          after: event.after
          event: "{type: 'reminder', what: event.what}"
      - reply: {payload: "{type: 'scheduled', what: event.what}"}
  - name: forget
    match: "event.type == 'forget'"
    actions:
      - cancel: {key: "join(':', ['r', sender, event.what])"}
  - name: fired
    match: "stanza.kind == 'timer' && event.type == 'reminder'"
    actions:
      - reply: {payload: "{type: 'reminder', what: event.what, key: timer.key}"}
"""


def decide(tmp_path: Path, event: dict[str, Any]) -> Any:
    path = tmp_path / "r.yaml"
    path.write_text(RULES, encoding="utf-8")
    loaded = check_rules([str(path)])
    assert loaded.ruleset is not None, [i.format() for i in loaded.issues]
    state = LiveState(MemoryRelations(), PresenceTable(), Buckets(lambda: 0.0))
    return evaluate(loaded.ruleset, Envelope(event, "a@x", "a@x/r", Stanza("message", "chat"),
                                             "bot@x", T0), state=state)


def test_schedule_computes_its_due_time_and_event(tmp_path: Path) -> None:
    d = decide(tmp_path, {"type": "remind", "what": "tea", "after": "10m"})
    schedule = d.actions[0]
    assert schedule == Schedule("r:a@x:tea", T0 + 600, {"type": "reminder", "what": "tea"},
                                "remind-me", "a@x")


@pytest.mark.parametrize(("event", "message"), [
    ({"type": "remind", "what": "tea", "after": "soon"}, "schedule: after: not a duration"),
    ({"type": "remind", "what": "tea", "after": 0}, "schedule: after must be positive"),
    ({"type": "remind", "what": 5, "after": "1m"}, "join"),  # join() of a number
    ({"type": "forget", "what": ""}, None),
])
def test_bad_timers_are_the_rule_s_error(tmp_path: Path, event: dict[str, Any],
                                         message: str | None) -> None:
    d = decide(tmp_path, event)
    if message is None:
        assert not d.errors
        return
    assert any(message in e.message for e in d.errors), d.errors


def test_validate_locates_timer_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("""version: 1
rules:
  - name: a
    match: "`true`"
    actions:
      - schedule: {key: sender, event: "{}"}
      - schedule: {key: sender, after: 1h, at: "2026-12-24T00:00:00Z"}
      - schedule: {key: sender, after: 0s}
      - schedule: {after: 1h}
""", encoding="utf-8")
    loaded = check_rules([str(path)])
    assert loaded.ruleset is None
    shown = [f"{i.line}:{i.path}: {i.message}" for i in loaded.issues]
    for want in ["6:rules[0].actions[0].schedule: a timer needs after or at",
                 "7:rules[0].actions[1].schedule: a timer needs after or at",
                 "8:rules[0].actions[2].schedule.after: must be more than zero",
                 "9:rules[0].actions[3].schedule: missing required key 'key'"]:
        assert any(line.startswith(want) for line in shown), (want, shown)


def test_a_sender_over_the_timer_limit_gets_a_rule_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    config = config_for(tmp_path, rules)
    store = open_store(config.store)
    for i in range(100):
        store.apply([ScheduleChange(f"k{i}", T0 + 3600, "alice@localhost", {}, "r")])
    made: list[FakeConnection] = []
    daemon = Daemon(config, "secret", load_rules(rules), store, connect=fake_connector(made))
    outcome = daemon.dispatcher.handle(Inbound(
        "message", "alice@localhost/p", "chat", "s1",
        json.dumps({"type": "remind", "what": "tea", "after": "1m", "id": "e1"})))
    assert outcome.decision is not None
    assert [e.message for e in outcome.decision.errors] == [
        "schedule: alice@localhost has 100 timers (the limit per sender)"]
    store.close()


async def test_the_daemon_fires_a_due_timer_once_and_a_refire_repeats_the_same_message(
        tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES, encoding="utf-8")
    config = config_for(tmp_path, rules)
    store = open_store(config.store)
    made: list[FakeConnection] = []
    daemon = Daemon(config, "secret", load_rules(rules), store, connect=fake_connector(made))
    conn = made[0]
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run(stop))
    await asyncio.wait_for(conn.up.wait(), 5)
    conn.read(Inbound("message", "alice@localhost/p", "chat", "s1", json.dumps(
        {"type": "remind", "what": "tea", "after": 0.3, "id": "e1"})))
    assert conn.sent[-1].payload == {"type": "scheduled", "what": "tea"}
    assert store.timer_count("alice@localhost") == 1  # stored with the decision

    async def reminders() -> list[Any]:
        while True:
            got = [o for o in conn.sent if o.payload.get("type") == "reminder"]
            if got:
                return got
            await asyncio.sleep(0.05)

    got = await asyncio.wait_for(reminders(), 10)
    assert [(o.to, o.payload) for o in got] == [
        ("alice@localhost", {"type": "reminder", "what": "tea", "key": "r:alice@localhost:tea"})]
    assert store.timer_count() == 0  # forgotten once sent
    # A taker that died before forgetting its timer: it fires again when its
    # lease ends, and the first firing's record answers (the same message id).
    timer = got[0]
    ledger = daemon.ledger
    assert ledger is not None
    stop.set()
    await asyncio.wait_for(task, 10)
    store = open_store(config.store)
    assert timer.meta.stanza_id is not None
    key, due = timer.meta.stanza_id.rsplit("@", 1)  # what the firing was keyed by
    store.apply([ScheduleChange(key, float(due), "alice@localhost",
                                {"type": "reminder", "what": "tea"}, "remind-me")])
    store.close()
    made2: list[FakeConnection] = []
    again = Daemon(config, "secret", load_rules(rules), open_store(config.store),
                   connect=fake_connector(made2))
    stop2 = asyncio.Event()
    task2 = asyncio.ensure_future(again.run(stop2))
    await asyncio.wait_for(made2[0].up.wait(), 5)
    conn = made2[0]
    second = await asyncio.wait_for(reminders(), 10)
    assert [o.id for o in second] == [timer.id]
    stop2.set()
    await asyncio.wait_for(task2, 10)
