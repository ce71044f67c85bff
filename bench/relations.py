"""Decisions per second with relationship lookups against 100,000 stored relations.

Run: `.venv/bin/python bench/relations.py [--quick]` (or `make bench-relations`).

The shipped friends-only rule set (rules/friends) decides chat events; each
decision reads the store 3-4 times (blocked either way, mutual friendship).
The same events run against the same 100,000 relations in: an in-memory store
(the baseline: the engine's own cost), SQLite (a file, WAL) and PostgreSQL (a
private server on loopback, started here). A second column measures writes:
friend-accept events, whose relation changes are applied (committed) per
decision as the daemon does.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import (
    Buckets,
    LiveState,
    MemoryRelations,
    PresenceTable,
)
from rulebot.model import Envelope, Relate, Relation, Stanza, Unrelate
from rulebot.rules.loader import load_rules
from rulebot.store.base import RelationStore
from rulebot.store.open import open_store
from rulebot.store.values import RelateChange, UnrelateChange
from scripts import pgserver

ROOT = Path(__file__).resolve().parents[1]

USERS = 20_000
PAIRS = 50_000  # mutual friendships: 100,000 directed relations
SEED = 7


def relations() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    pairs: set[tuple[str, str]] = set()
    while len(pairs) < PAIRS:
        a, b = rng.sample(range(USERS), 2)
        pairs.add((f"u{min(a, b)}@localhost", f"u{max(a, b)}@localhost"))
    return sorted(pairs)


def events(pairs: Sequence[tuple[str, str]], n: int) -> list[Envelope]:
    rng = random.Random(SEED + 1)
    out = []
    for _ in range(n):
        if rng.random() < 0.7:
            a, b = pairs[rng.randrange(len(pairs))]
        else:
            a, b = f"u{rng.randrange(USERS)}@localhost", f"u{rng.randrange(USERS)}@localhost"
        out.append(Envelope({"type": "chat", "to": b, "text": "hi"}, a, a + "/r",
                            Stanza("message", "chat", None), "friend@localhost"))
    return out


def jsonl(pairs: Sequence[tuple[str, str]]) -> str:
    lines = []
    for a, b in pairs:
        for s, o in ((a, b), (b, a)):
            lines.append(json.dumps({"subject": s, "object": o, "kind": "friend"}))
    return "\n".join(lines) + "\n"


def rate(fn: Callable[[], None], count: int) -> float:
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


def measure(name: str, reader: object, apply: Callable[[list[object]], None],
            envs: Sequence[Envelope], writes: int) -> tuple[str, float, float]:
    ruleset = load_rules(ROOT / "rules" / "friends")
    state = LiveState(reader, PresenceTable(), Buckets(lambda: 0.0))  # type: ignore[arg-type]
    matched = 0

    def reads() -> None:
        nonlocal matched
        for env in envs:
            matched += bool(evaluate(ruleset, env, state=state).matched)

    read_rate = rate(reads, len(envs))
    assert matched == len(envs)  # every chat event is decided by some rule

    accepts = []
    for i in range(writes):
        a, b = f"w{i}@localhost", f"v{i}@localhost"
        accepts.append((Envelope({"type": "friend-accept", "to": b}, a, a + "/r",
                                 Stanza("message", "chat", None), "friend@localhost"), a, b))

    def write() -> None:
        for env, a, b in accepts:
            apply([RelateChange(b, a, "requested")])  # the pending request
            decision = evaluate(ruleset, env, state=state)
            assert decision.matched == ("accept",), decision
            apply([c for c in decision.actions if isinstance(c, Relate | Unrelate)])

    write_rate = rate(write, writes)
    return name, read_rate, write_rate


def store_apply(store: RelationStore) -> Callable[[list[object]], None]:
    def apply(changes: list[object]) -> None:
        out: list[RelateChange | UnrelateChange] = []
        for c in changes:
            if isinstance(c, RelateChange | UnrelateChange):
                out.append(c)
                continue
            assert isinstance(c, Relate | Unrelate)
            pairs = [(c.subject, c.object)] + ([(c.object, c.subject)] if c.mutual else [])
            for s, o in pairs:
                out.append(RelateChange(s, o, c.kind, c.attrs if isinstance(c, Relate) else {})
                           if isinstance(c, Relate) else UnrelateChange(s, o, c.kind))
        store.apply(out)
    return apply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, writes = (2_000, 200) if args.quick else (20_000, 1_000)
    pairs = relations()
    envs = events(pairs, n)
    text = jsonl(pairs)
    rows = []
    started = time.perf_counter()

    memory = MemoryRelations(Relation(s, o, "friend") for a, b in pairs
                             for s, o in ((a, b), (b, a)))

    def memory_apply(changes: list[object]) -> None:
        for c in changes:
            if isinstance(c, RelateChange):
                memory.relate(c.subject, c.object, c.kind, c.attrs)
            elif isinstance(c, UnrelateChange):
                memory.unrelate(c.subject, c.object, c.kind)
            else:
                memory.apply([c])  # type: ignore[list-item]

    rows.append(measure("in-memory (baseline)", memory, memory_apply, envs, writes))
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_store(str(Path(tmp) / "r.sqlite3"))
        sqlite.import_jsonl(io.StringIO(text))
        rows.append(measure("SQLite", sqlite, store_apply(sqlite), envs, writes))
        sqlite.close()
        pg = pgserver.start_postgres(Path(tmp) / "pg")
        try:
            store = open_store(pg.url)
            store.import_jsonl(io.StringIO(text))
            rows.append(measure("PostgreSQL (loopback)", store, store_apply(store), envs,
                                writes))
            store.close()
        finally:
            pgserver.stop_postgres(pg)
    print(f"\nrulebot relationship benchmark: {2 * PAIRS:,} relations, {n:,} chat decisions "
          f"(3-4 lookups each), {writes:,} accepts (read + committed write)\n")
    print("| store | chat decisions/s | ÷ in-memory | accept decisions/s (with commit) |")
    print("|---|--:|--:|--:|")
    base = rows[0][1]
    for name, reads, writes_s in rows:
        print(f"| {name} | {reads:,.0f} | {reads / base:.2f} | {writes_s:,.0f} |")
    print(f"\nmachine: nproc={os.cpu_count()}, Python {sys.version.split()[0]}; "
          f"run took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
