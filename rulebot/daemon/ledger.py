"""Idempotency records: each decided inbound event's identity with the messages its
decision produced, so that an event delivered again is answered from its record
(the same messages, the same ids) instead of being decided a second time.

Why: after a crash the server re-sends what the bot had not acknowledged, and
offline storage hands over what a destroyed session held. Decided again, such
an event meets a world its first decision changed: a friend request already
accepted is answered `already-friends`, under a new message id that no
recipient can recognise.

When a record is written:

* a decision that changes relations: its record, with every record still
  pending, in the same transaction as the changes, before anything of the
  decision is sent (relations are durable before dependent messages leave,
  as before);
* any other decision: kept pending until the daemon has handled the whole read
  from the server it came in, then all of them in one transaction, before the
  messages of that read are written (`flush`).

Either way no message of a decision leaves before its record is stored, and
the bot acknowledges an inbound stanza only after that (its acknowledgements
wait for the server's acknowledgement of what the stanza produced, xmpp.sm).
So a kill -9 at any point leaves each unacknowledged event either undecided
(nothing was sent, nothing changed: deciding it is the first decision) or
recorded (the record is re-sent).

Which records are kept, and where they are looked up. A record can be needed
only while its event may be delivered again: until the server has processed
the bot's acknowledgement of it (XEP-0198; BotConnection reports that as a
confirmed position), or, outside stream management, for a while. So the
ledger keeps in memory an index, by event, of

* every record not yet confirmed (the events in flight, and what a killed
  process left unconfirmed: read back from the store at start), for up to
  `retention` seconds;
* every record of the last `window` seconds, confirmed or not (an event that
  came without stream management, or a client that resends an event it got
  no answer to, with the same event id).

The store keeps the records as batches, one row per flush, plus each
session's confirmed position; batches nothing can need any more are purged.
A lookup is a dictionary lookup; a hit (a re-delivery, rare) reads its batch
back from the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rulebot.bot.values import EventKey, Overtaken, Recorded
from rulebot.daemon.batches import BatchWriter, decode, decode_batch
from rulebot.logs import LOGGER, fields
from rulebot.model import (
    Cancel,
    Count,
    Relate,
    Reset,
    Schedule,
    StateChange,
    directions,
    stamp,
)
from rulebot.store.base import Committed, RelationStore, StoreError, StoreUnavailable
from rulebot.store.values import (
    CancelChange,
    Change,
    CountChange,
    RecordBatch,
    RelateChange,
    ResetChange,
    ScheduleChange,
    SessionMark,
    StoredBatch,
    UnrelateChange,
)

log = logging.getLogger(LOGGER)

#: Batches deleted per purge statement: each step is short (SQLite holds its
#: write lock meanwhile); a batch holds one read's records.
PURGE_STEP = 500

#: A stream position: the XEP-0198 session id and the inbound stanza's number in it.
Position = tuple[str, int]
#: Seconds a batch may take from taking its id to committing without being
#: missed by another worker's follow (a transaction, normally milliseconds).
SETTLE = 5.0
#: A batch's `last` that no acknowledgement reaches (XEP-0198 counts to 2^32).
UNCONFIRMABLE = 2**62
#: Commits of one batch whose claims another worker took first (each attempt
#: drops the events it lost: more than two means workers racing on every event).
CLAIM_ATTEMPTS = 4


def claim_key(key: EventKey) -> str:
    """An event's unique key in the store's claims: a digest, so that any sender
    and event id (NUL included, which PostgreSQL text refuses) fit 32 characters."""
    return hashlib.blake2b(f"{key.sender}\x00{key.key}".encode("utf-8", "surrogatepass"),
                           digest_size=16).hexdigest()


def store_changes(changes: Sequence[StateChange]) -> list[Change]:
    """The engine's relation and counter actions as store changes (mutual ones
    in both directions)."""
    out: list[Change] = []
    for c in changes:
        if isinstance(c, Count):
            out.append(CountChange(c.counter, c.key, c.by))
            continue
        if isinstance(c, Reset):
            out.append(ResetChange(c.counter, c.key))
            continue
        if isinstance(c, Schedule):
            event = c.event if isinstance(c.event, dict) else {}
            out.append(ScheduleChange(c.key, c.due, c.sender, event, c.rule))
            continue
        if isinstance(c, Cancel):
            out.append(CancelChange(c.key))
            continue
        for subject, obj in directions(c):
            if isinstance(c, Relate):
                attrs = c.attrs if isinstance(c.attrs, dict) else {}
                out.append(RelateChange(subject, obj, c.kind, attrs,
                                        expires=None if c.expires is None
                                        else stamp(c.expires)))
            else:
                out.append(UnrelateChange(subject, obj, c.kind))
    return out


# --------------------------------------------------------------------------
# the ledger


@dataclass(eq=False, slots=True)
class _Batch:
    """Records written together, as the index in memory knows them."""

    session: str
    created: float  # seconds
    #: the events, once written: a tuple of tuples of strings, which the
    #: cyclic collector stops tracking
    keys: tuple[EventKey, ...] = ()
    #: (key, position, record) of each, until written
    entries: list[tuple[EventKey, int, Recorded]] | None = field(default_factory=list)
    last: int = 0  # the highest position among them
    id: int | None = None  # in the store; None until written


@dataclass(frozen=True, slots=True)
class Flushed:
    """What writing a read's records found: the events whose records could not
    be stored (the store failed: the caller must not send what they decided)."""

    failed: frozenset[EventKey] = frozenset()
    #: the JSON text of each payload written, by the payload object's id()
    payload_json: dict[int, str] = field(default_factory=dict)
    #: events of the read another worker had recorded first (claims): their
    #: records, to be sent instead of this process's decisions
    theirs: dict[EventKey, Recorded] = field(default_factory=dict)


class Ledger:
    """The daemon's idempotency records (implements dispatch.Records; see the
    module docstring)."""

    def __init__(self, store: RelationStore, window: float, retention: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.window = window
        self.retention = retention
        self.clock = clock
        #: The current stream position, asked when a record is added (the
        #: connection's XEP-0198 session and inbound count), or None.
        self.position: Callable[[], Position | None] = lambda: None
        #: event -> the batch holding its record (its place in it is found on a hit)
        self._index: dict[EventKey, _Batch] = {}
        self._batches: deque[_Batch] = deque()  # in the order written
        self._waiting: list[_Batch] = []  # past the window, not yet acknowledged
        self._pending = _Batch("", 0.0)
        self._confirmed: dict[str, int] = {}
        self._marked: dict[str, int] = {}  # what the store has of _confirmed
        self._cached: tuple[int, list[Any]] | None = None  # the last batch read back
        self.written = 0  # records stored by this process (status, tests)
        self.followed = 0  # records of other workers indexed (follow)
        self.claims_lost = 0  # decisions dropped for another worker's record (claims)
        self.following = False  # set when follow() is called periodically
        self.last_follow = 0.0  # time.monotonic() of the last follow()
        self._overtaken: list[EventKey] = []  # pending, recorded by another worker first
        self._watermark = 0  # every batch id up to it is indexed or not needed
        self._theirs: dict[EventKey, Recorded] = {}  # claims lost, until flush() returns them
        self._mark: SessionMark | None = None  # the mark of the commit being written
        self._seen: dict[int, float] = {}  # ids above the watermark known -> when

    # -- start

    def load(self) -> int:
        """Read back what a re-delivery may still need (see the module docstring).
        Returns the number of records. Raises StoreError."""
        now = self.clock()
        self._confirmed.update(self.store.confirmed_marks())
        self._marked.update(self._confirmed)
        count = 0
        for stored in self.store.record_batches(int((now - self.window) * 1000)):
            self._watermark = max(self._watermark, stored.id)
            if stored.created < (now - self.retention) * 1000:
                continue
            count += self._take(stored, replace=True)
        return count

    def _take(self, stored: StoredBatch, replace: bool) -> int:
        """Index the records of a stored batch; returns how many. With `replace`
        false, an event the index knows already keeps its record."""
        batch = _Batch(stored.session, stored.created / 1000, last=stored.last, id=stored.id,
                       entries=None)
        try:
            _head, records, _payloads = json.loads(stored.records)
            batch.keys = tuple(EventKey(str(entry[0]), str(entry[1])) for entry in records)
        except (ValueError, TypeError, IndexError) as exc:
            log.error("unreadable idempotency records ignored", extra=fields(
                event="record_unreadable", batch=stored.id,
                error=f"{type(exc).__name__}: {exc}"))
            return 0
        index = self._index
        pending = self._pending
        for key in batch.keys:
            held = index.get(key)
            if held is pending and not replace:
                # Another worker recorded an event this one decided and has not
                # stored yet (this process was paused in the middle of a read):
                # theirs is the first decision (take_over).
                self._overtaken.append(key)
                index[key] = batch
            elif replace or held is None:
                index[key] = batch
        self._batches.append(batch)
        return len(batch.keys)

    def take_over(self) -> dict[EventKey, Recorded]:
        """The pending records that follow() found another worker had recorded
        first: dropped from what flush() will store; their events' records as the
        other worker stored them (a duplicate's answer). Raises StoreError."""
        if not self._overtaken:
            return {}
        keys, self._overtaken = set(self._overtaken), []
        theirs = {}
        for key in keys:
            recorded = self.recall(key)
            if recorded is not None:
                theirs[key] = recorded
            else:  # gone from the store meanwhile: ours stays the record
                self._index[key] = self._pending
        entries = self._pending.entries
        if entries is not None:
            entries[:] = [e for e in entries if e[0] not in theirs]
        return theirs

    # -- several workers

    def follow(self) -> int:
        """Index the records other workers have written since the last call (they
        share the store), so that an event sent again to this worker is answered
        from its record. Returns how many records were added. Raises StoreError.

        Batch ids come from the store's sequence, but a transaction that took a
        lower id can commit after one with a higher id. So ids are listed from
        a watermark that trails the newest id seen by SETTLE seconds, and the
        ids seen since are skipped: a batch is missed only if its transaction
        took more than SETTLE seconds to commit."""
        now = self.clock()
        self.last_follow = time.monotonic()
        new = [i for i in self.store.record_ids_after(self._watermark) if i not in self._seen]
        added = 0
        if new:
            for i in new:
                self._seen[i] = now
            horizon = (now - self.window) * 1000
            for stored in self.store.record_batches_in(new):
                if stored.created >= horizon:
                    added += self._take(stored, replace=False)
        settled = [i for i, seen in self._seen.items() if seen <= now - SETTLE]
        if settled:
            self._watermark = max(self._watermark, *settled)
            self._seen = {i: t for i, t in self._seen.items() if i > self._watermark}
        self.followed += added
        return added

    # -- dispatch.Records

    def recall(self, key: EventKey) -> Recorded | None:
        """The record of an event, if it is kept. Raises StoreError."""
        batch = self._index.get(key)
        if batch is None:
            return None
        # A hit is rare (a re-delivery): its place in the batch is looked for.
        if batch.entries is not None:
            for k, _, recorded in batch.entries:
                if k == key:
                    return recorded
            return None
        assert batch.id is not None
        return self._read_back(batch.id, batch.keys.index(key))

    def add(self, key: EventKey, recorded: Recorded) -> None:
        """Keep a record until the next commit or flush."""
        pending = self._pending
        position = self.position()
        if position is None:
            session, number = "", 0
        else:
            session, number = position
        entries = pending.entries
        assert entries is not None  # a list until written
        if not entries:
            pending.session = session
        elif session != pending.session:
            # Two sessions in one read cannot happen (a session changes only
            # at stream negotiation, in reads of its own); if it did, keep the
            # batch until the retention rather than evict by either session.
            pending.last = UNCONFIRMABLE
        if number > pending.last:
            pending.last = number
        self._index[key] = pending
        entries.append((key, number, recorded))

    def commit(self, key: EventKey | None, recorded: Recorded,
               changes: Sequence[StateChange]) -> None:
        """Store the pending records, this one, and the relation changes, in one
        durable transaction. Raises StoreError (nothing is stored then, and the
        pending records stay pending)."""
        if key is not None:
            self.add(key, recorded)
        try:
            self._write(store_changes(changes), durable=True, committing=key)
        except Overtaken:
            raise  # `key` is no longer pending: take_over dropped it
        except BaseException:
            if key is not None:  # not stored: forget it (the sender is refused)
                self._forget_last(key)
            raise

    # -- the daemon

    @property
    def pending_count(self) -> int:
        return len(self._pending.entries or ())

    def size(self) -> int:
        """Records the index in memory holds."""
        return len(self._index)

    def flush(self) -> Flushed:
        """Store the pending records (see Flushed)."""
        if not self._pending.entries and self._marked == self._confirmed:
            return Flushed()
        try:
            writer = self._write([], durable=False)
        except StoreError as exc:
            failed = frozenset(k for k, _, _ in self._pending.entries or ())
            for key in failed:
                self._index.pop(key, None)
            self._pending = _Batch(self._pending.session, 0.0)
            log.error("idempotency records could not be stored; their events are refused",
                      extra=fields(event="store_failed", error=str(exc), count=len(failed)))
            return Flushed(failed=failed, theirs=self._claimed())
        return Flushed(payload_json=writer.texts if writer is not None else {},
                       theirs=self._claimed())

    def _claimed(self) -> dict[EventKey, Recorded]:
        theirs, self._theirs = self._theirs, {}
        return theirs

    def confirm(self, session: str, position: int) -> None:
        """The server has processed the bot's acknowledgement of every position up
        to `position` in `session`: those events cannot come again."""
        if position > self._confirmed.get(session, -1):
            self._confirmed[session] = position

    def evict(self) -> int:
        """Drop from the index in memory what no re-delivery can need any more;
        returns how many records. Call it now and then (the daemon: each second).

        Batches are kept in the order written, so the ones past the window are
        at the front; of those, the ones still waiting for an acknowledgement
        are set aside (a short list in steady state: the events in flight) and
        looked at again each time."""
        now = self.clock()
        horizon, oldest = now - self.window, now - self.retention
        dropped = 0
        batches, waiting = self._batches, self._waiting
        while batches and batches[0].created < horizon:
            batch = batches.popleft()
            if self._settled(batch) or batch.created < oldest:
                dropped += self._drop(batch)
            else:
                waiting.append(batch)
        if waiting:
            still = []
            for batch in waiting:
                if self._settled(batch) or batch.created < oldest:
                    dropped += self._drop(batch)
                else:
                    still.append(batch)
            self._waiting = still
        return dropped

    def _settled(self, batch: _Batch) -> bool:
        """No event of the batch can be delivered again by the server."""
        return not batch.session or batch.last <= self._confirmed.get(batch.session, -1)

    def _drop(self, batch: _Batch) -> int:
        index = self._index
        for key in batch.keys:
            if index.get(key) is batch:
                del index[key]
        return len(batch.keys)

    def purge(self, budget: float = 0.05) -> int:
        """Delete from the store, in steps for at most about `budget` seconds, the
        batches nothing can need any more; returns how many. Raises StoreError."""
        now = self.clock()
        window_before = int((now - self.window) * 1000)
        retention_before = int((now - self.retention) * 1000)
        deadline = time.monotonic() + budget
        total = 0
        while True:
            n = self.store.purge_records(window_before, retention_before, PURGE_STEP)
            total += n
            if n < PURGE_STEP or time.monotonic() >= deadline:
                return total

    # -- internals

    def _write(self, changes: list[Change], durable: bool,
               committing: EventKey | None = None) -> BatchWriter | None:
        """Store the pending records (and `changes`, the decision of `committing`)
        in one transaction; returns the writer of the batch (None without one).

        With several workers each record claims its event (claim_key): a claim
        another worker's batch holds means that worker decided the event first
        (a resend reached both before either saw the other's record). Nothing
        is written then; the claimed events take the other's record (in
        `_theirs`, for the caller to send instead) and the rest is written
        again. If `committing` is one of them, its changes must not be applied:
        Overtaken. Raises StoreError."""
        for _attempt in range(CLAIM_ATTEMPTS):
            writer, done = self._try_write(changes, durable)
            if not done.taken:
                self._wrote(done)
                return writer
            if self._take_claimed(done.taken) and committing is not None:
                theirs = self._theirs.pop(committing, None)
                if theirs is not None:
                    # Not applied; the rest stays pending for the read's flush.
                    raise Overtaken(theirs)
        raise StoreUnavailable(f"{self.store.location}: the records' claims kept changing "
                               f"hands ({CLAIM_ATTEMPTS} attempts)")

    def _try_write(self, changes: list[Change], durable: bool
                   ) -> tuple[BatchWriter | None, Committed]:
        pending = self._pending
        batch = None
        writer = None
        claims: list[str] = []
        if pending.entries:
            pending.created = self.clock()
            writer = BatchWriter()
            add = writer.add
            for k, p, r in pending.entries:
                add(k, p, r)
            batch = RecordBatch(pending.session, pending.last, int(pending.created * 1000),
                                writer.text())
            if self.following:
                claims = [claim_key(k) for k, _, _ in pending.entries]
        mark = None
        unmarked = {s: p for s, p in self._confirmed.items() if self._marked.get(s) != p}
        if unmarked:
            session, confirmed = max(unmarked.items(), key=lambda sp: sp[1])
            mark = SessionMark(session, confirmed, int(self.clock() * 1000))
        self._mark = mark
        return writer, self.store.commit(batch, changes, mark=mark, durable=durable,
                                         claims=claims)

    def _take_claimed(self, taken: Mapping[str, int]) -> bool:
        """Index the batches holding the claims a commit lost, and drop their
        events from the pending records for those batches' records (in
        `_theirs`). Returns whether any was found. Raises StoreError."""
        entries = self._pending.entries
        assert entries is not None
        mine = {claim_key(k): k for k, _, _ in entries}
        holders = sorted({b for c, b in taken.items() if c in mine})
        found = False
        for stored in self.store.record_batches_in(holders):
            self._seen.setdefault(stored.id, self.clock())
            self._take(stored, replace=False)  # marks pending events overtaken
        for key, recorded in self.take_over().items():
            self._theirs[key] = recorded
            self.claims_lost += 1
            found = True
        log.info("events another worker recorded first: its records are sent instead",
                 extra=fields(event="claims_lost", count=len(taken), holders=holders))
        # A holder gone meanwhile (purged): the claim is free; the next attempt takes it.
        return found

    def _wrote(self, done: Committed) -> None:
        mark = self._mark
        pending = self._pending
        if mark is not None:
            self._marked[mark.session] = mark.confirmed
        if pending.entries:
            pending.keys = tuple(k for k, _, _ in pending.entries)
            pending.id = done.batch
            if self.following and done.batch is not None:
                self._seen[done.batch] = pending.created  # ours: follow skips it
            pending.entries = None  # read back from the store if ever needed
            self._batches.append(pending)
            self.written += len(pending.keys)
            self._pending = _Batch(pending.session, 0.0)

    def _forget_last(self, key: EventKey) -> None:
        pending = self._pending
        if pending.entries and pending.entries[-1][0] == key:
            pending.entries.pop()
            self._index.pop(key, None)

    def _read_back(self, batch_id: int, n: int) -> Recorded | None:
        if self._cached is not None and self._cached[0] == batch_id:
            parsed = self._cached[1]
        else:
            text = self.store.record_batch(batch_id)
            if text is None:
                return None
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = [[], [], []]
            self._cached = (batch_id, parsed)
        try:
            return decode(parsed[0], parsed[1][n], parsed[2])[2]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Not something this rulebot wrote: decide the event as new.
            log.error("unreadable idempotency record ignored", extra=fields(
                event="record_unreadable", batch=batch_id, error=f"{type(exc).__name__}: {exc}"))
            return None


def stored_entries(stored: StoredBatch) -> list[tuple[EventKey, int, Recorded]]:
    """The records of a stored batch (for tools and tests)."""
    return decode_batch(stored.records)
