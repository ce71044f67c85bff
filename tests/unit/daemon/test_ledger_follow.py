"""Several workers share one store: a worker's ledger follows what the others
write, so that an event sent again to another worker is answered from its
record. Two ledgers on one SQLite file stand in for two processes (the same
SQL runs on PostgreSQL, tests/integration/test_workers.py)."""

from __future__ import annotations

from pathlib import Path

from rulebot.bot.values import EventKey, Meta, Outbound, Recorded
from rulebot.daemon import ledger as ledger_module
from rulebot.daemon.ledger import Ledger
from rulebot.store.open import open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def record(n: int) -> tuple[EventKey, Recorded]:
    out = Outbound("bob@x", {"n": n}, "body", "chat", f"rb-{n}", Meta("alice@x", "r", "v1", str(n)))
    return EventKey("alice@x", f"e:{n}"), Recorded("v1", ("r",), (out,))


def workers(tmp_path: Path, clock: Clock) -> tuple[Ledger, Ledger]:
    made = []
    for _ in range(2):
        ledger = Ledger(open_store(str(tmp_path / "shared.sqlite3")), 30.0, 3600.0, clock=clock)
        ledger.load()
        ledger.following = True
        made.append(ledger)
    return made[0], made[1]


def test_a_worker_answers_from_a_record_another_worker_wrote(tmp_path: Path) -> None:
    clock = Clock()
    a, b = workers(tmp_path, clock)
    key, recorded = record(1)
    a.add(key, recorded)
    assert not a.flush().failed
    assert b.recall(key) is None  # not followed yet
    assert b.follow() == 1
    again = b.recall(key)
    assert again is not None
    assert again.outbound[0].id == "rb-1"
    assert a.follow() == 0  # its own batch is not taken twice
    assert b.follow() == 0


def test_a_batch_that_commits_late_under_a_lower_id_is_still_followed(
        tmp_path: Path, monkeypatch: object) -> None:
    clock = Clock()
    a, b = workers(tmp_path, clock)
    for n in (1, 2):
        key, recorded = record(n)
        a.add(key, recorded)
        a.flush()
    store = b.store
    ids = store.record_ids_after(0)
    assert len(ids) == 2
    # b lists only the higher id first, as if the lower one's transaction had
    # not committed yet
    real = store.record_ids_after
    store.record_ids_after = lambda after, limit=10_000: [i for i in real(after, limit)  # type: ignore[method-assign]
                                                          if i != ids[0]]
    assert b.follow() == 1
    clock.now += ledger_module.SETTLE / 2
    store.record_ids_after = real  # type: ignore[method-assign]
    assert b.follow() == 1  # within SETTLE of the first: listed again from the watermark
    assert b.recall(record(1)[0]) is not None
    clock.now += ledger_module.SETTLE
    b.follow()
    assert b._watermark == ids[1]
    assert not b._seen


def test_records_past_the_window_are_not_followed(tmp_path: Path) -> None:
    clock = Clock()
    a, b = workers(tmp_path, clock)
    key, recorded = record(1)
    a.add(key, recorded)
    a.flush()
    clock.now += 31.0
    assert b.follow() == 0
    assert b.recall(key) is None


def test_an_event_both_workers_recorded_keeps_the_followers_own_record(tmp_path: Path) -> None:
    clock = Clock()
    a, b = workers(tmp_path, clock)
    key, recorded = record(1)
    a.add(key, recorded)
    a.flush()
    mine = Recorded("v2", ("other",), recorded.outbound)
    b.add(key, mine)
    b.flush()
    b.follow()
    got = b.recall(key)
    assert got is not None
    assert got.version == "v2"
