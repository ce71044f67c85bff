"""Idempotency records: each decided inbound event's identity with the messages its
decision produced, so that an event delivered again is answered from its record
(the same messages, the same ids) instead of being decided a second time.

Imports: dispatch (its values), model, store, store_values, jsonenc, logs, stdlib.

Why: after a crash the server re-sends what the bot had not acknowledged, and
offline storage hands over what a destroyed session held; a client may resend
an event it got no answer to. Decided again, such an event meets a world its
first decision changed: a friend request already accepted is answered
`already-friends`, under a new message id that no recipient can recognise.

When a record is written (see Ledger):

* a decision that changes relations: its record, and every record still
  pending, in the same transaction as the changes, before anything of the
  decision is sent (relations are durable before dependent messages leave,
  as before);
* any other decision: kept pending until the daemon has handled the whole read
  from the server it came in, then all of them in one transaction, before the
  messages of that read are written (`flush`). Under load one read carries
  hundreds of events, so the cost per event is a fraction of a commit.

Either way no message of a decision leaves before its record is stored, and
the bot acknowledges an inbound stanza to the server only after that (its
acknowledgements wait for the server's acknowledgement of what the stanza
produced, xmpp_sm). So a kill -9 at any point leaves each unacknowledged
event either undecided (nothing was sent, nothing changed: deciding it is the
first decision) or recorded (the record is re-sent).

Records are kept for `retention` seconds (config `idempotency.retention`),
then purged in bounded steps.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from rulebot.dispatch import EventKey, Meta, Outbound, Recorded
from rulebot.jsonenc import encoder
from rulebot.logs import LOGGER, fields
from rulebot.model import JSON, Relate, StateChange
from rulebot.store import RelationStore, StoreError
from rulebot.store_values import Change, Record, RelateChange, UnrelateChange

log = logging.getLogger(LOGGER)

_encode = encoder(separators=(",", ":"), allow_nan=False)

#: Records deleted per purge statement: small enough to keep each step short
#: (SQLite holds its write lock meanwhile), large enough to keep up with a
#: busy bot (a step deletes 1,000 rows in a few milliseconds).
PURGE_STEP = 1000


def store_changes(changes: Sequence[StateChange]) -> list[Change]:
    """The engine's relation actions as store changes (mutual ones in both directions)."""
    out: list[Change] = []
    for c in changes:
        pairs = [(c.subject, c.object)] + ([(c.object, c.subject)] if c.mutual else [])
        for subject, obj in pairs:
            if isinstance(c, Relate):
                attrs = c.attrs if isinstance(c.attrs, dict) else {}
                out.append(RelateChange(subject, obj, c.kind, attrs))
            else:
                out.append(UnrelateChange(subject, obj, c.kind))
    return out


def encode(recorded: Recorded) -> str:
    """A Recorded as the JSON text of a record. A payload shared by several
    messages (a broadcast) is written once."""
    payloads: list[JSON] = []
    index: dict[int, int] = {}
    rows: list[list[Any]] = []
    for o in recorded.outbound:
        n = index.get(id(o.payload))
        if n is None:
            n = index[id(o.payload)] = len(payloads)
            payloads.append(o.payload)
        rows.append([o.to, n, o.encoding, o.type, o.id, o.meta.rule])
    doc: dict[str, Any] = {"v": recorded.version, "m": list(recorded.matched), "o": rows,
                           "p": payloads}
    if recorded.outbound:
        meta = recorded.outbound[0].meta  # the same for every message but the rule
        doc.update(f=meta.sender, e=meta.event_id, s=meta.stanza_id)
    return _encode(doc)


def decode(text: str) -> Recorded:
    """The Recorded a record's text holds. Raises ValueError (or KeyError, TypeError)
    on text that encode() did not write."""
    doc = json.loads(text)
    payloads = doc["p"]
    out = tuple(
        Outbound(to, payloads[n], enc, mtype, mid,
                 Meta(doc["f"], rule, doc["v"], doc["e"], doc["s"]))
        for to, n, enc, mtype, mid, rule in doc["o"])
    return Recorded(doc["v"], tuple(doc["m"]), out)


class Ledger:
    """The daemon's idempotency records over the store (implements dispatch.Records)."""

    def __init__(self, store: RelationStore, retention: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.retention = retention
        self.clock = clock
        self._pending: dict[EventKey, Recorded] = {}
        self.written = 0  # records stored by this process (status, tests)

    # -- dispatch.Records

    def recall(self, key: EventKey) -> Recorded | None:
        """The record of an event, pending or stored. Raises StoreError."""
        found = self._pending.get(key)
        if found is not None:
            return found
        text = self.store.recall(key.sender, key.key)
        if text is None:
            return None
        try:
            return decode(text)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Not something this rulebot wrote: decide the event as new.
            log.error("unreadable idempotency record ignored", extra=fields(
                event="record_unreadable", sender=key.sender, key=key.key,
                error=f"{type(exc).__name__}: {exc}"))
            return None

    def add(self, key: EventKey, recorded: Recorded) -> None:
        """Keep a record until the next commit or flush."""
        self._pending[key] = recorded

    def commit(self, key: EventKey | None, recorded: Recorded,
               changes: Sequence[StateChange]) -> None:
        """Store the pending records, this one, and the relation changes, in one
        durable transaction. Raises StoreError (nothing is stored then, and the
        pending records stay pending)."""
        if key is not None:
            self._pending[key] = recorded
        try:
            self.store.commit(self._records(), store_changes(changes))
        except BaseException:
            if key is not None:
                self._pending.pop(key, None)
            raise
        self.written += len(self._pending)
        self._pending.clear()

    # -- the daemon

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> frozenset[EventKey]:
        """Store the pending records. Returns the keys of those that could not be
        stored (all of them when the store failed; nothing is kept pending): the
        caller must not send what their decisions produced."""
        if not self._pending:
            return frozenset()
        try:
            self.store.commit(self._records(), durable=False)
        except StoreError as exc:
            failed = frozenset(self._pending)
            self._pending.clear()
            log.error("idempotency records could not be stored; their events are refused",
                      extra=fields(event="store_failed", error=str(exc), count=len(failed)))
            return failed
        self.written += len(self._pending)
        self._pending.clear()
        return frozenset()

    def purge(self, budget: float = 0.05) -> int:
        """Delete records older than the retention, in steps, for at most about
        `budget` seconds; returns how many. Raises StoreError."""
        before = int((self.clock() - self.retention) * 1000)
        deadline = time.monotonic() + budget
        total = 0
        while True:
            n = self.store.purge_records(before, PURGE_STEP)
            total += n
            if n < PURGE_STEP or time.monotonic() >= deadline:
                return total

    def _records(self) -> list[Record]:
        created = int(self.clock() * 1000)
        return [Record(k.sender, k.key, created, encode(r)) for k, r in self._pending.items()]
