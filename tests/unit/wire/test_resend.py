"""The client's resend bookkeeping: an unconfirmed event is due again after
`after` seconds, each time; a receipt ends it; the deadline drops it."""

from __future__ import annotations

from rulebot.wire.resend import Resends


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_unconfirmed_event_is_due_again_each_interval_until_its_deadline() -> None:
    clock = Clock()
    r: Resends[str] = Resends(after=5.0, deadline=12.0, clock=clock)
    r.sent("s1", "event 1")
    clock.now = 4.9
    assert r.due() == ([], [])
    clock.now = 5.0
    assert r.due() == (["event 1"], [])
    clock.now = 9.0
    assert r.due() == ([], [])  # counted from the last send, not the first
    clock.now = 10.0
    assert r.due() == (["event 1"], [])
    clock.now = 12.0
    assert r.due() == ([], ["event 1"])
    assert len(r) == 0
    assert (r.resent, r.expired) == (2, 1)


def test_a_receipt_ends_the_wait() -> None:
    clock = Clock()
    r: Resends[str] = Resends(after=1.0, deadline=10.0, clock=clock)
    r.sent("s1", "a")
    r.sent("s2", "b")
    assert r.confirm("s1")
    assert not r.confirm("s1")  # a second receipt (for a resend) is harmless
    clock.now = 1.0
    assert r.due() == (["b"], [])
    assert len(r) == 1


def test_an_event_held_while_offline_goes_once_at_the_session_then_waits_its_interval() -> None:
    clock = Clock()
    r: Resends[str] = Resends(after=3.0, deadline=20.0, clock=clock)
    r.sent("s1", "sent")
    clock.now = 1.0
    r.held("s2", "held")
    clock.now = 5.0
    assert r.due() == (["sent"], [])  # a held event is not due: it was never sent
    assert r.unsent() == ["held"]
    assert r.unsent() == []  # handed over once
    clock.now = 7.9
    assert r.due() == ([], [])  # its interval runs from the session, not from held()
    clock.now = 8.0
    assert r.due() == (["sent", "held"], [])
    assert r.resent == 3


def test_a_held_event_keeps_its_deadline() -> None:
    clock = Clock()
    r: Resends[str] = Resends(after=1.0, deadline=5.0, clock=clock)
    r.held("s1", "held")
    clock.now = 5.0
    assert r.due() == ([], ["held"])
    assert r.unsent() == []
