"""The per-event cost of a windowed counter, and timers scheduled and fired per
second, in SQLite and PostgreSQL.

Run: `.venv/bin/python -m bench.counters [--quick]` (or `make bench-counters`).

The daemon's decision path without the network: the Dispatcher and the
Ledger (idempotency records) over a real store, one event per "read" (each
followed by the ledger's flush, as the daemon does at the end of a read of
one stanza). Three rule shapes, measured in the same run:

  forward   `chat` forwarded (no change: the record goes into the read's batch)
            -- the baseline;
  count     the same forward plus `count: {counter: msgs, key: sender}`: a
            change, so the decision is a durable commit of its own (as a
            relate is), with its record;
  read      the forward guarded by `counter('msgs', sender) < 1000000`: one
            counter read (an indexed SUM over the window) per event.

  schedule  the forward plus a `schedule` (a timer per event, due in an hour):
            a durable commit per event, like count.

Then timers fired per second: that many timers already due, taken in pages
of 100 (Store.due_timers, leased), each decided as a `timer` event whose rule
replies, recorded, and forgotten (Store.fired) -- the daemon's _fire without
the network.

Ratios are against `forward` on the same backend. PostgreSQL is a private
server on loopback (scripts/pgserver.py), fsync on as packaged.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound
from rulebot.config import parse_config
from rulebot.daemon.ledger import Ledger
from rulebot.rules.loader import load_rules
from rulebot.store.base import RelationStore
from rulebot.store.open import open_store
from scripts import pgserver

RULES = {
    "forward": """version: 1
rules:
  - name: chat
    match: "event.type == 'chat'"
    actions:
      - forward: {to: event.to, payload: "{text: event.text}"}
""",
    "count": """version: 1
counters:
  msgs: {window: 10m}
rules:
  - name: chat
    match: "event.type == 'chat'"
    actions:
      - count: {counter: msgs, key: sender}
      - forward: {to: event.to, payload: "{text: event.text}"}
""",
    "read": """version: 1
counters:
  msgs: {window: 10m}
rules:
  - name: chat
    match: "event.type == 'chat' && counter('msgs', sender) < `1000000`"
    actions:
      - forward: {to: event.to, payload: "{text: event.text}"}
  - name: never
    match: "event.type == 'never'"
    actions:
      - count: {counter: msgs, key: sender}
""",
    "schedule": """version: 1
rules:
  - name: fired
    match: "stanza.kind == 'timer'"
    actions:
      - reply: {payload: "{type: 'later', n: event.n}"}
  - name: chat
    match: "event.type == 'chat'"
    actions:
      - schedule: {key: "join(':', ['t', event.id])", after: 1h, event: "{n: event.id}"}
      - forward: {to: event.to, payload: "{text: event.text}"}
""",
}


def dispatcher(store: RelationStore, shape: str, tmp: Path) -> tuple[Dispatcher, Ledger]:
    """The daemon's decision path over `store` with the rules of `shape`."""
    rules_file = tmp / f"{shape}.yaml"
    rules_file.write_text(RULES[shape], encoding="utf-8")
    ruleset = load_rules(rules_file)
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": str(rules_file),
                                      "timers": {"per_sender": 10**6, "total": 10**7}}),
                          base=tmp)
    ledger = Ledger(store, 30, 3600)
    return Dispatcher(config, lambda: ruleset, relations=store, records=ledger), ledger


def measure(store: RelationStore, shape: str, events: int, tmp: Path) -> float:
    """Decisions per second of `events` chats from 50 senders."""
    d, ledger = dispatcher(store, shape, tmp)
    inbound = [Inbound("message", f"u{i % 50}@localhost/r", "chat", f"{shape}-{i}",
                       json.dumps({"type": "chat", "id": f"{shape}-{i}", "to": "bob@localhost",
                                   "text": "hello"})) for i in range(events)]
    started = time.perf_counter()
    for stanza in inbound:
        outcome = d.handle(stanza)
        assert outcome.status == "decided", outcome
        assert not ledger.flush().failed
    return events / (time.perf_counter() - started)


def fire_rate(store: RelationStore, events: int, tmp: Path) -> float:
    """Timers fired per second, `events` of them due at once."""
    from rulebot.rules.timefns import to_iso
    from rulebot.store.values import ScheduleChange

    d, ledger = dispatcher(store, "schedule", tmp)
    now = time.time()
    for i in range(0, events, 500):
        store.apply([ScheduleChange(f"f{j}", now - 1, f"u{j % 50}@localhost", {"n": j}, "r")
                     for j in range(i, min(events, i + 500))])
    started = time.perf_counter()
    fired = 0
    while due := store.due_timers(time.time(), 100, 30):
        for t in due:
            inbound = Inbound("timer", t.sender, "timer", f"{t.key}@{t.due!r}", body=t.event,
                              timer={"key": t.key, "due": to_iso(t.due),
                                     "scheduled": to_iso(t.created), "rule": t.rule})
            outcome = d.handle(inbound)
            assert outcome.status == "decided", outcome
            assert not ledger.flush().failed
            store.fired(t.key, t.due)
            fired += 1
    assert fired == events
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 events a run")
    args = parser.parse_args()
    events = 500 if args.quick else 3000
    rows = []
    with tempfile.TemporaryDirectory(prefix="rulebot-bench-counters-") as tmp_name:
        tmp = Path(tmp_name)
        pg = pgserver.start_postgres(tmp / "pg")
        try:
            for backend, location in (("SQLite", str(tmp / "s.sqlite3")), ("PostgreSQL", pg.url)):
                rates = {}
                for shape in ("forward", "count", "read", "schedule"):
                    store = open_store(location)
                    try:
                        rates[shape] = measure(store, shape, events, tmp)
                    finally:
                        store.close()
                store = open_store(location)
                try:
                    rates["fire a timer"] = fire_rate(store, events, tmp)
                finally:
                    store.close()
                for shape, rate in rates.items():
                    rows.append((backend, shape, rate, rate / rates["forward"],
                                 1e6 / rate - 1e6 / rates["forward"]))
        finally:
            pgserver.stop_postgres(pg)
    print(f"\n{events:,} events a run, 50 senders; one event per read (flush after each)\n")
    print("| store | rule | decisions/s | vs forward | added us/event |")
    print("|---|---|--:|--:|--:|")
    for backend, shape, rate, ratio, added in rows:
        print(f"| {backend} | {shape} | {rate:,.0f} | {ratio:.2f} | {added:+,.0f} |")


if __name__ == "__main__":
    main()
