"""The client's side of the end-to-end acknowledgement (docs/protocol.md,
"Receipts"): which sent events still wait for the bot's XEP-0184 receipt,
which are due to be sent again, which have passed their deadline.

Bookkeeping only, on an injected clock: no XMPP, no I/O (rulebot.client sends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Waiting(Generic[T]):
    item: T
    last: float | None  # when it was last sent; None: held, never sent
    deadline: float


class Resends(Generic[T]):
    """Events sent and not yet confirmed, by stanza id, oldest first."""

    def __init__(self, after: float, deadline: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Send again `after` seconds without a receipt; give up `deadline`
        seconds after the first send."""
        self.after = after
        self.deadline = deadline
        self.clock = clock
        self._waiting: dict[str, _Waiting[T]] = {}
        self.resent = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def sent(self, stanza_id: str, item: T) -> None:
        now = self.clock()
        self._waiting[stanza_id] = _Waiting(item, now, now + self.deadline)

    def held(self, stanza_id: str, item: T) -> None:
        """An event written while offline: kept, not sent, until `unsent()` hands
        it over at the next session (its deadline runs from now).

        Why not let the XMPP library queue it: slixmpp sends what it queued
        while offline at session start, and `due()` then found the same event
        due again moments later; the two copies could reach two workers within
        the time they take to see each other's records (idempotency.follow),
        and both decided it."""
        self._waiting[stanza_id] = _Waiting(item, None, self.clock() + self.deadline)

    def unsent(self) -> list[T]:
        """The held events, in the order written, now counted as sent."""
        now = self.clock()
        out = []
        for w in self._waiting.values():
            if w.last is None:
                w.last = now
                out.append(w.item)
        return out

    def confirm(self, stanza_id: str) -> bool:
        """The bot's receipt for `stanza_id`; False if it was not waiting."""
        return self._waiting.pop(stanza_id, None) is not None

    def due(self) -> tuple[list[T], list[T]]:
        """(to send again now, given up): the first are counted as sent now."""
        now = self.clock()
        again: list[T] = []
        gone: list[str] = []
        for stanza_id, w in self._waiting.items():
            if now >= w.deadline:
                gone.append(stanza_id)
            elif w.last is not None and now - w.last >= self.after:
                w.last = now
                again.append(w.item)
        dropped = [self._waiting.pop(s).item for s in gone]
        self.resent += len(again)
        self.expired += len(dropped)
        return again, dropped
