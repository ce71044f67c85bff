"""The relationship store: directed, typed relations between JIDs, behind one interface.

store.open picks the backend (store.sqlite, store.postgres; psycopg only
for PostgreSQL): they build on this module.

A relation says "subject has KIND to object" (alice friend bob); a mutual
relation is two rows.  Every method is synchronous: the daemon calls the store
inline, in event order, so a change is durable before anything that depends
on it is sent.  Writes validate their input (StoreError otherwise); JIDs are
stored as given (callers normalise them).  A store is safe to share between
threads: each call holds the store's lock.

The same database keeps the daemon's idempotency records (rulebot.daemon.ledger):
one row per decided inbound event, written in the same transaction as the
relation changes that event's decision made, so that the two are never out
of step after a crash.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, Literal, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from rulebot.errors import StoreError as StoreError  # re-exported: part of this API
from rulebot.errors import StoreUnavailable as StoreUnavailable  # re-exported too
from rulebot.model import JSON
from rulebot.model import Relation as Relation  # re-exported: part of this API
from rulebot.store.records import RecordStoreMixin
from rulebot.store.shared import SharedStateMixin
from rulebot.store.silences import SilenceMixin
from rulebot.store.values import (
    CancelChange,
    Change,
    CountChange,
    CountOp,
    RecordBatch,
    RelateChange,
    ResetChange,
    Row,
    ScheduleChange,
    SessionMark,
    Timer,
    TimerOp,
    UnrelateChange,
    change_row,
    count_op,
    parse_line,
    relation_line,
    relation_of,
    stamp,
    timer_op,
)

PAGE = 1000  # rows per query of list() and per batch of import_jsonl()
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)

# `list` is a method of RelationStore, so its annotations cannot say list[...]
Names: TypeAlias = list[str]
Timers: TypeAlias = list[Timer]
Flags: TypeAlias = list[bool]

@dataclass(frozen=True, slots=True)
class Committed:
    """What one commit() did: a flag per change (as apply()), and the id of the
    batch of records it wrote (None without one). Or, when some of its claims
    were held by another worker's committed batch, nothing: `taken` is then
    each such claim with the id of the batch holding it."""

    flags: Flags
    batch: int | None
    taken: Mapping[str, int] = field(default_factory=dict)


#: The table and columns both backends use (the same schema on each).
TABLE = "rulebot_relations"
#: The windowed counters: a row per count (name, key, at, n); no primary key.
COUNTS = "rulebot_counts"
#: The timers the rules scheduled: one row per key.
TIMERS = "rulebot_timers"
COLUMNS = "subject, object, kind, attrs, created, expires"


# --------------------------------------------------------------------------
# SQL shared by the backends


def live(mark: str) -> str:
    """The condition of a relation that has not expired (its parameter: now, as text)."""
    return f"(expires IS NULL OR expires > {mark})"


def where_clause(subject: str | None, kind: str | None, obj: str | None,
                 after: tuple[str, str, str] | None, mark: str,
                 at: str) -> tuple[str, list[str]]:
    """SQL ` WHERE ...` and its parameters for list(): live at `at`, the filters
    given and, for the next page, the keyset condition (subject, kind, object) > after."""
    clauses, params = [live(mark)], [at]
    for column, value in (("subject", subject), ("kind", kind), ("object", obj)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if after is not None:
        clauses.append(f"(subject, kind, object) > ({mark}, {mark}, {mark})")
        params.extend(after)
    return " WHERE " + " AND ".join(clauses), params


# --------------------------------------------------------------------------
# the interface


class RelationStore(RecordStoreMixin, SharedStateMixin, SilenceMixin, ABC):
    """The relationship store. Backends implement the underscored primitives.

    Every public method raises StoreError on invalid input or a failing
    database; a write has been committed (and fsync'd) when it returns.
    """

    #: Where the store is, for messages (a URL's password is masked).
    location: str
    #: Seconds since 1970: what "now" is for expiry (reads hide what expired,
    #: writes replace it). Tests set it.
    clock: Callable[[], float] = staticmethod(time.time)

    _at_cache: tuple[int, str] = (-1, "")

    def _at(self) -> str:
        """Now as store text, for the expiry filter of every read: to the
        millisecond, formatted once per millisecond (formatting took 2 us, and
        a decision reads the store several times)."""
        ms = int(self.clock() * 1000)
        if ms != self._at_cache[0]:
            self._at_cache = (ms, stamp(ms / 1000))
        return self._at_cache[1]

    def __init__(self, location: str) -> None:
        self.location = location
        self._lock = threading.Lock()

    # -- reads

    def related(self, subject: str, obj: str, kind: str) -> bool:
        """True when subject has `kind` to obj."""
        with self._call("lookup"):
            return self._exists(subject, obj, kind)

    def objects(self, subject: str, kind: str) -> Names:
        """The JIDs subject has `kind` to, sorted (by code point)."""
        with self._call("lookup"):
            return self._column("object", "subject", subject, kind)

    def subjects(self, obj: str, kind: str) -> Names:
        """The JIDs that have `kind` to obj, sorted (by code point)."""
        with self._call("lookup"):
            return self._column("subject", "object", obj, kind)

    def get(self, subject: str, obj: str, kind: str) -> Relation | None:
        """The relation, or None."""
        with self._call("lookup"):
            return self._get(subject, obj, kind)

    def list(self, subject: str | None = None, kind: str | None = None,
             obj: str | None = None) -> Iterator[Relation]:
        """Relations matching every filter given, by (subject, kind, object).

        Reads a page at a time (no lock or transaction is held between pages),
        so the caller may write to the store while iterating."""
        after: tuple[str, str, str] | None = None
        while True:
            with self._call("list"):
                page = self._page(subject, kind, obj, after, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            last = page[-1]
            after = (last.subject, last.kind, last.object)

    def count(self) -> int:
        """The number of relations."""
        with self._call("count"):
            return self._count()

    def count_since(self, name: str, key: str, since: float) -> int:
        """The sum of counter `name`'s counts for `key` made after `since`
        (seconds since 1970)."""
        p = self.PARAM
        with self._call("read a counter"):
            rows = self._query(f"SELECT COALESCE(SUM(n), 0) FROM {COUNTS} WHERE name = {p} "
                               f"AND key = {p} AND at > {p}", (name, key, since))
        return int(rows[0][0]) if rows else 0

    def purge_counts(self, windows: Mapping[str, float], limit: int = 1000,
                     keep: float = 30 * 86400) -> int:
        """Delete up to `limit` counts older than their counter's window (a
        counter the rules no longer name: older than `keep` seconds)."""
        p = self.PARAM
        now = self.clock()
        total = 0
        with self._call("purge"):
            for name, window in sorted(windows.items()):
                total += self._purge(
                    f"DELETE FROM {COUNTS} WHERE (name, key, at) IN (SELECT name, key, at "
                    f"FROM {COUNTS} WHERE name = {p} AND at <= {p} LIMIT {p})",
                    (name, now - window, limit - total))
                if total >= limit:
                    return total
            named = sorted(windows)
            others = f" AND name NOT IN ({', '.join([p] * len(named))})" if named else ""
            total += self._purge(
                f"DELETE FROM {COUNTS} WHERE (name, key, at) IN (SELECT name, key, at "
                f"FROM {COUNTS} WHERE at <= {p}{others} LIMIT {p})",
                (now - keep, *named, limit - total))
        return total

    # -- timers

    def timer_count(self, sender: str | None = None) -> int:
        """How many timers `sender` has (None: everybody)."""
        p = self.PARAM
        with self._call("count timers"):
            rows = self._query(f"SELECT count(*) FROM {TIMERS}" + (
                f" WHERE sender = {p}" if sender is not None else ""),
                (sender,) if sender is not None else ())
        return int(rows[0][0]) if rows else 0

    def timer(self, key: str) -> Timer | None:
        p = self.PARAM
        with self._call("read a timer"):
            rows = self._query(f"SELECT key, due, sender, event, rule, created FROM {TIMERS} "
                               f"WHERE key = {p}", (key,))
        return Timer(*rows[0]) if rows else None

    def due_timers(self, now: float, limit: int, lease: float) -> Timers:
        """Take up to `limit` timers due at `now` that no process holds: each is
        leased for `lease` seconds (another worker skips it meanwhile; if the
        taker dies, it is due again when the lease ends). Earliest first."""
        with self._call("take due timers"):
            return self._take_timers(now, limit, lease)

    def fired(self, key: str, due: float) -> bool:
        """Forget a timer that was fired (unless it was rescheduled meanwhile)."""
        p = self.PARAM
        with self._call("forget a fired timer"):
            return self._purge(f"DELETE FROM {TIMERS} WHERE key = {p} AND due = {p}",
                               (key, due)) > 0

    @abstractmethod
    def _take_timers(self, now: float, limit: int, lease: float) -> Timers: ...

    def purge_expired(self, limit: int = 1000) -> int:
        """Delete up to `limit` expired relations (reads hide them already: this
        only gives their room back). Returns how many."""
        p = self.PARAM
        with self._call("purge"):
            return self._purge(f"DELETE FROM {TABLE} WHERE (subject, kind, object) IN "
                               f"(SELECT subject, kind, object FROM {TABLE} WHERE expires "
                               f"IS NOT NULL AND expires <= {p} LIMIT {p})",
                               (self._at(), limit))

    # -- writes

    def relate(self, subject: str, obj: str, kind: str,
               attrs: Mapping[str, JSON] | None = None) -> bool:
        """Create the relation (True) or replace its attrs, keeping `created` (False)."""
        return self.apply([RelateChange(subject, obj, kind, attrs or {})])[0]

    def unrelate(self, subject: str, obj: str, kind: str) -> bool:
        """Remove the relation; False when there was none."""
        return self.apply([UnrelateChange(subject, obj, kind)])[0]

    def apply(self, changes: Sequence[Change]) -> Flags:
        """Apply the changes in order, in one transaction: all or nothing.

        Returns one flag per change: True when a relate created a relation
        or an unrelate removed one. Every change is validated first."""
        return self.commit(None, changes).flags

    def commit(self, batch: RecordBatch | None = None, changes: Sequence[Change] = (), *,
               mark: SessionMark | None = None, durable: bool = True,
               claims: Sequence[str] = ()) -> Committed:
        """Write a batch of idempotency records, apply relation changes and move a
        session's acknowledgement mark forward (never back), in one transaction.

        `claims` (several workers): a unique key per event of the batch
        (ledger.claim_key; no commas). If another batch holds one of them,
        nothing is written and Committed.taken names them; a claim another
        transaction is writing waits for it to end.

        Returns apply()'s flags for the changes and the batch's id. With
        `durable` false and no changes, the commit survives the bot's process
        dying but may be lost with the machine's power (SQLite
        synchronous=NORMAL, PostgreSQL synchronous_commit off); relation
        changes are always flushed to disk."""
        clock = self.clock()
        at = stamp(clock)
        rows = [change_row(c, at) for c in changes
                if isinstance(c, RelateChange | UnrelateChange)]
        counts = [count_op(c, clock) for c in changes if isinstance(c, CountChange | ResetChange)]
        timers = [timer_op(c, clock) for c in changes
                  if isinstance(c, ScheduleChange | CancelChange)]
        if not rows and not counts and not timers and batch is None and mark is None:
            return Committed([], None)
        if claims and batch is None:
            raise ValueError("claims without a batch")
        with self._call("commit"):
            done = self._write(rows, batch, mark,
                               durable or bool(rows) or bool(counts) or bool(timers), claims,
                               counts, timers)
        if (counts or timers) and not done.taken:  # a flag per change, the others' True
            flags = iter(done.flags)
            return Committed([next(flags) if isinstance(c, RelateChange | UnrelateChange)
                              else True for c in changes], done.batch)
        return done

    # -- export / import

    def export_jsonl(self, fp: IO[str]) -> int:
        """Write every relation as a JSON line (one consistent snapshot); returns the count."""
        n = 0
        with self._call("export"), self._snapshot() as rows:
            for relation in rows:
                fp.write(relation_line(relation))
                n += 1
        return n

    def import_jsonl(self, fp: Iterable[str],
                     progress: Callable[[int], None] | None = None) -> int:
        """Upsert the relations of an export (attrs and created as in the file), in
        one transaction. Returns the number of relations read; raises StoreError
        naming the line of the first bad one (and imports nothing then).
        `progress(count)` is called every PROGRESS_EVERY relations read."""
        count = 0

        def rows() -> Iterator[Row]:
            nonlocal count
            n = 0
            try:
                for n, text in enumerate(fp, 1):
                    if not text.strip():
                        continue
                    try:
                        row = parse_line(text)
                    except StoreError as exc:
                        raise StoreError(f"line {n}: {exc}") from None
                    count += 1
                    if progress is not None and count % PROGRESS_EVERY == 0:
                        progress(count)
                    yield row
            except UnicodeDecodeError as exc:
                raise StoreError(f"line {n + 1}: not UTF-8: {exc.reason}") from None

        with self._call("import"):
            self._put(rows())
        return count

    # -- life

    def start_housekeeping(self) -> None:
        """Start what a long-running writer needs beside its writes (the daemon
        calls it; SQLite: WAL checkpoints in a thread of their own). close()
        stops it."""

    def close(self) -> None:
        """Close the connection; idempotent."""
        self._stop_housekeeping()
        with self._lock:
            self._close()

    def _stop_housekeeping(self) -> None:
        """Stop what start_housekeeping started (outside the lock)."""

    def __enter__(self) -> RelationStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"

    @contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Hold the lock; turn the driver's errors into StoreError."""
        with self._lock:
            try:
                yield
            except StoreError:
                raise
            except Exception as exc:
                if not self._is_driver_error(exc):
                    raise
                raise StoreUnavailable(f"{self.location}: {what} failed: "
                                       f"{self._describe(exc)}") from None

    def _describe(self, exc: BaseException) -> str:
        """The driver's message on one line."""
        return " ".join(str(exc).split()) or type(exc).__name__

    # -- the primitives (called with the lock held)

    @abstractmethod
    def _is_driver_error(self, exc: BaseException) -> bool: ...

    #: The driver's query parameter placeholder ("?" for sqlite3, "%s" for psycopg).
    PARAM = "?"

    @abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        """All rows of one read-only statement (written with PARAM placeholders)."""

    # The reads are the same SQL on both backends; only the placeholder differs.

    def _exists(self, subject: str, obj: str, kind: str) -> bool:
        p = self.PARAM
        return bool(self._query(f"SELECT 1 FROM {TABLE} WHERE subject = {p} AND kind = {p} "
                                f"AND object = {p} AND {live(p)}",
                                (subject, kind, obj, self._at())))

    def _column(self, want: Literal["object", "subject"], key: Literal["subject", "object"],
                value: str, kind: str) -> Names:
        p = self.PARAM
        rows = self._query(f"SELECT {want} FROM {TABLE} WHERE {key} = {p} AND kind = {p} "
                           f"AND {live(p)} ORDER BY {want}", (value, kind, self._at()))
        return [v for (v,) in rows]

    def _get(self, subject: str, obj: str, kind: str) -> Relation | None:
        p = self.PARAM
        rows = self._query(f"SELECT {COLUMNS} FROM {TABLE} WHERE subject = {p} AND kind = {p} "
                           f"AND object = {p} AND {live(p)}", (subject, kind, obj, self._at()))
        return relation_of(rows[0]) if rows else None

    def _page(self, subject: str | None, kind: str | None, obj: str | None,
              after: tuple[str, str, str] | None, limit: int) -> Sequence[Relation]:
        where, params = where_clause(subject, kind, obj, after, self.PARAM, self._at())
        rows = self._query(f"SELECT {COLUMNS} FROM {TABLE}{where} "
                           f"ORDER BY subject, kind, object LIMIT {self.PARAM}",
                           (*params, limit))
        return [relation_of(row) for row in rows]

    def _count(self) -> int:
        rows = self._query(f"SELECT count(*) FROM {TABLE} WHERE {live(self.PARAM)}",
                           (self._at(),))
        return int(rows[0][0]) if rows else 0

    @abstractmethod
    def _write(self, rows: Sequence[Row], batch: RecordBatch | None = None,
               mark: SessionMark | None = None, durable: bool = True,
               claims: Sequence[str] = (), counts: Sequence[CountOp] = (),
               timers: Sequence[TimerOp] = ()) -> Committed:
        """Relate (attrs not None) / unrelate each row, in order, apply the
        counters' and timers' ops, insert the batch with its claims and upsert
        the mark, in one transaction (see commit)."""

    @abstractmethod
    def _put(self, rows: Iterator[Row]) -> None:
        """Upsert rows (attrs and created) in one transaction; any exception rolls back."""

    @abstractmethod
    def _snapshot(self) -> AbstractContextManager[Iterator[Relation]]: ...

    @abstractmethod
    def _close(self) -> None: ...


# --------------------------------------------------------------------------
# locations


def redact_url(url: str) -> str:
    """The URL with its password (user:PASSWORD@ or ?password=) replaced by ***."""
    url = _PASSWORD_PARAM.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}:***@{host}"))

#: How often `import_jsonl` reports progress (relations read).
PROGRESS_EVERY = 50_000
