"""What the tools of docs/replay.md cost: shadow mode and the archive on the
decision path, and `rulebot replay`'s rate.

Run: `.venv/bin/python -m bench.shadow [--quick]` (or `make bench-shadow`).

The daemon's decision path without the network (the Dispatcher over the
shipped friends rules, relations in memory), decisions per second of chats
between friends (and a few strangers' refused chats), in the same run:

  live       the live rules only -- the baseline;
  shadow     the same with a candidate set (a copy of the live one) decided
             beside it and the two decisions compared;
  archive    live plus the archive line of each decision written to a file
             (rulebot.daemon.archive, rotation on);
  both       shadow and archive.

Then `replay`: the archive written above re-decided with the same rules
(rulebot.ruletest.replay, parsing included), events per second.

Ratios are against `live`, measured in the same run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound, Outcome
from rulebot.config import parse_config
from rulebot.daemon.archive import ArchiveLog
from rulebot.engine.archive import Privacy
from rulebot.engine.state import MemoryRelations
from rulebot.model import Relation
from rulebot.rules.loader import load_rules
from rulebot.ruletest.replay import replay

ROOT = Path(__file__).resolve().parents[1]
FRIENDS = ROOT / "rules" / "friends"
USERS = [f"u{i}@localhost" for i in range(100)]


def friendships() -> list[Relation]:
    """Each user friends with the next five."""
    rows = []
    for i, user in enumerate(USERS):
        for k in range(1, 6):
            other = USERS[(i + k) % len(USERS)]
            rows += [Relation(user, other, "friend"), Relation(other, user, "friend")]
    return rows


def traffic(events: int) -> list[Inbound]:
    """Chats to a friend, and in the first 200, one in five to a stranger (two
    per sender: a third would put the sender in a timeout, chat-strangers-third-strike)."""
    out = []
    for i in range(events):
        sender = USERS[i % len(USERS)]
        stranger = i % 5 == 0 and i < 2 * len(USERS)
        to = USERS[(i + 1 + stranger * 50) % len(USERS)]
        out.append(Inbound("message", f"{sender}/r", "chat", f"s{i}", json.dumps(
            {"type": "chat", "id": f"e{i}", "to": to, "text": f"hello {i}"})))
    return out


def run(shape: str, inbound: list[Inbound], tmp: Path) -> tuple[float, Path | None]:
    ruleset = load_rules(FRIENDS)
    candidate = load_rules(FRIENDS)
    store = MemoryRelations(friendships(), time.time)
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": str(FRIENDS)}))
    shadow: Callable[[], object] | None = (lambda: candidate) \
        if shape in ("shadow", "both") else None
    d = Dispatcher(config, lambda: ruleset, relations=store, apply=store.apply,
                   shadow=shadow)  # type: ignore[arg-type]
    path = tmp / f"{shape}.jsonl" if shape in ("archive", "both") else None
    archive = ArchiveLog(str(path), 100_000_000, 2, Privacy()) if path else None
    record: Callable[[Outcome], None] = archive.record if archive else (lambda _o: None)
    started = time.perf_counter()
    for stanza in inbound:
        outcome = d.handle(stanza)
        assert outcome.status == "decided", outcome
        assert shadow is None or (outcome.shadow is not None and not outcome.shadow)
        record(outcome)
    rate = len(inbound) / (time.perf_counter() - started)
    if archive is not None:
        archive.close()
    return rate, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 events a run")
    args = parser.parse_args()
    events = 2_000 if args.quick else 20_000
    inbound = traffic(events)
    with tempfile.TemporaryDirectory() as tmp:
        rates: dict[str, float] = {}
        archived: Path | None = None
        for shape in ("live", "shadow", "archive", "both"):
            rates[shape], path = run(shape, inbound, Path(tmp))
            archived = path or archived
        assert archived is not None
        lines = archived.read_text().splitlines()
        started = time.perf_counter()
        report = replay(((f"a:{n}", line) for n, line in enumerate(lines, 1)),
                        load_rules(FRIENDS), friendships())
        rates["replay"] = report.events / (time.perf_counter() - started)
        assert report.events == events
        assert report.changed_count == 0, report.summary()
        line_bytes = sum(len(line) + 1 for line in lines) / len(lines)
    base = rates["live"]
    print(f"{events:,} chats through the friends rules (40 refused: strangers')\n")
    print(f"{'path':<10} {'events/s':>10} {'vs live':>8}")
    for shape, rate in rates.items():
        print(f"{shape:<10} {rate:>10,.0f} {rate / base:>8.2f}")
    print(f"\narchive: {line_bytes:,.0f} bytes per event")


if __name__ == "__main__":
    main()
