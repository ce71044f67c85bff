"""The per-event cost of a windowed counter, in SQLite and PostgreSQL.

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
}


def measure(store: RelationStore, shape: str, events: int, tmp: Path) -> float:
    """Decisions per second of `events` chats from 50 senders."""
    rules_file = tmp / f"{shape}.yaml"
    rules_file.write_text(RULES[shape], encoding="utf-8")
    ruleset = load_rules(rules_file)
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": str(rules_file)}),
                          base=tmp)
    ledger = Ledger(store, 30, 3600)
    d = Dispatcher(config, lambda: ruleset, relations=store, records=ledger)
    inbound = [Inbound("message", f"u{i % 50}@localhost/r", "chat", f"{shape}-{i}",
                       json.dumps({"type": "chat", "id": f"{shape}-{i}", "to": "bob@localhost",
                                   "text": "hello"})) for i in range(events)]
    started = time.perf_counter()
    for stanza in inbound:
        outcome = d.handle(stanza)
        assert outcome.status == "decided", outcome
        assert not ledger.flush().failed
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
                for shape in ("forward", "count", "read"):
                    store = open_store(location)
                    try:
                        rates[shape] = measure(store, shape, events, tmp)
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
