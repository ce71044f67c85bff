"""Several workers share one store: a worker's ledger follows what the others
write, so that an event sent again to another worker is answered from its
record. Two ledgers on one SQLite file stand in for two processes (the same
SQL runs on PostgreSQL, tests/integration/test_workers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulebot.bot.values import EventKey, Meta, Outbound, Overtaken, Recorded
from rulebot.daemon import ledger as ledger_module
from rulebot.daemon.ledger import Ledger
from rulebot.model import Relate
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


def test_an_event_another_worker_recorded_first_gets_that_record_not_a_second(
        tmp_path: Path) -> None:
    # b decided the event before following a's record (a resend reached both
    # within idempotency.follow): b's claim loses, its decision is not stored,
    # and what b sends is a's record.
    clock = Clock()
    a, b = workers(tmp_path, clock)
    key, recorded = record(1)
    a.add(key, recorded)
    a.flush()
    other, other_recorded = record(2)
    b.add(key, Recorded("v2", ("other",), recorded.outbound))
    b.add(other, other_recorded)
    done = b.flush()
    assert not done.failed
    assert list(done.theirs) == [key]
    assert done.theirs[key].version == "v1"
    got = b.recall(key)
    assert got is not None
    assert got.version == "v1"
    assert b.recall(other) is not None  # the rest of the read is stored
    stored = [k for batch in b.store.record_batches(0)
              for k, _, _ in ledger_module.stored_entries(batch)]
    assert sorted(stored) == sorted([key, other])  # one record each
    assert b.written == 1


def test_a_decision_with_changes_another_worker_recorded_first_is_not_applied(
        tmp_path: Path) -> None:
    clock = Clock()
    a, b = workers(tmp_path, clock)
    key, recorded = record(1)
    a.add(key, recorded)
    a.flush()
    pending, pending_recorded = record(2)
    b.add(pending, pending_recorded)  # earlier in b's read
    with pytest.raises(Overtaken) as over:
        b.commit(key, Recorded("v2", ("relate",), ()),
                 [Relate("alice@x", "bob@x", "friend", {}, False, "r")])
    assert over.value.recorded.version == "v1"
    assert b.store.get("alice@x", "bob@x", "friend") is None  # not applied
    assert b.pending_count == 1  # the read's other record waits for its flush
    assert not b.flush().theirs
    assert b.recall(pending) is not None
