"""The SQLite backend of the relationship store (stdlib sqlite3).

WAL journal with synchronous=FULL: a commit returns after the WAL is fsync'd.
The daemon's store checkpoints the WAL into the database from a thread of its
own (start_housekeeping): SQLite otherwise checkpoints inside the commit that
fills the WAL, with two fsyncs, and the daemon commits on its event loop
(14 ms stalls every 4 MB of WAL measured here, more on a busy disk).
Commits of idempotency records alone (store.commit with durable=False) run
with synchronous=NORMAL: the WAL is written but not fsync'd, which a killed
process cannot undo (the page cache outlives it) and which costs a fifth of an
fsync'd commit here (51 against 244 us for a one-row commit). Writes take the
write lock up front (BEGIN IMMEDIATE), so a concurrent writer (`rulebot
relations add` next to the daemon) waits up to BUSY_TIMEOUT instead of failing
half-way through a transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rulebot.model import Relation
from rulebot.store.base import (
    COLUMNS,
    COUNTS,
    TABLE,
    TIMERS,
    Committed,
    Flags,
    RelationStore,
    StoreError,
    live,
)
from rulebot.store.records import CLAIMS, RECORDS, SESSIONS
from rulebot.store.shared import BUCKETS, PRESENCE
from rulebot.store.silences import SILENCES
from rulebot.store.values import (
    CountOp,
    RecordBatch,
    Row,
    SessionMark,
    Timer,
    TimerOp,
    relation_of,
)

#: 1: relations; 2: + the idempotency records; 3: + the rate-limit buckets and
#: presence shared by workers; 4: + the claims; 5: + relations' expiry (each
#: added to an older store on opening).
SCHEMA_VERSION = 5
BUSY_TIMEOUT = 10.0
CLAIMS_PER_QUERY = 500  # keys per IN (...): below SQLite's variable limit everywhere
#: Seconds between background checkpoints; and the WAL size (pages) at which
#: a commit checkpoints itself after all, should the thread fall behind.
CHECKPOINT_INTERVAL = 1.0
FALLBACK_AUTOCHECKPOINT = 25_000  # ~100 MB

log = logging.getLogger("rulebot")

# The same tables as store.postgres.SCHEMA (SQLite's default BINARY collation is the
# code point order PostgreSQL gets from COLLATE "C"). The primary key leads
# with (subject, kind) and the reverse index with (object, kind), so that
# objects() and subjects() are sorted range scans of one index.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS rulebot_schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS {TABLE} (
    subject TEXT NOT NULL,
    object  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    attrs   TEXT NOT NULL DEFAULT '{{}}',
    created TEXT NOT NULL,
    PRIMARY KEY (subject, kind, object)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {TABLE}_reverse ON {TABLE} (object, kind, subject);
CREATE TABLE IF NOT EXISTS {RECORDS} (
    id      INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    last    INTEGER NOT NULL,
    created INTEGER NOT NULL,
    records TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {SESSIONS} (
    session   TEXT PRIMARY KEY,
    confirmed INTEGER NOT NULL,
    updated   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {CLAIMS} (
    key   TEXT PRIMARY KEY,
    batch INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {CLAIMS}_batch ON {CLAIMS} (batch);
CREATE TABLE IF NOT EXISTS {COUNTS} (
    name TEXT NOT NULL,
    key  TEXT NOT NULL,
    at   REAL NOT NULL,
    n    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {COUNTS}_key ON {COUNTS} (name, key, at);
CREATE TABLE IF NOT EXISTS {TIMERS} (
    key     TEXT PRIMARY KEY,
    due     REAL NOT NULL,
    sender  TEXT NOT NULL,
    event   TEXT NOT NULL,
    rule    TEXT NOT NULL,
    created REAL NOT NULL,
    lease   REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {TIMERS}_due ON {TIMERS} (due);
CREATE INDEX IF NOT EXISTS {TIMERS}_sender ON {TIMERS} (sender);
CREATE TABLE IF NOT EXISTS {BUCKETS} (
    name    TEXT NOT NULL,
    key     TEXT NOT NULL,
    tokens  REAL NOT NULL,
    updated REAL NOT NULL,
    full_at REAL NOT NULL,
    ok      INTEGER NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {PRESENCE} (
    jid      TEXT NOT NULL,
    resource TEXT NOT NULL,
    updated  REAL NOT NULL,
    PRIMARY KEY (jid, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {SILENCES} (
    id      TEXT PRIMARY KEY,
    ends    REAL NOT NULL,
    author  TEXT NOT NULL,
    comment TEXT NOT NULL,
    rule    TEXT,
    sender  TEXT,
    match   TEXT,
    starts  REAL NOT NULL,
    created REAL NOT NULL
);
"""

#: What version 5 adds (ALTER TABLE: the table of version 1 gains a column).
EXPIRY_SCHEMA = [
    f"ALTER TABLE {TABLE} ADD COLUMN expires TEXT",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires) "
    "WHERE expires IS NOT NULL",
]
# Before a write to a relation: an expired one is gone (so a relate creates
# it anew, an unrelate finds nothing), whether or not the purge has run.
DELETE_EXPIRED = (f"DELETE FROM {TABLE} WHERE subject = ? AND kind = ? AND object = ? "
                  "AND expires IS NOT NULL AND expires <= ?")
# One process's buckets, saved over the last save (full_at 0: to purge_buckets,
# which several workers run, a saved bucket is full).
SAVE_BUCKET = (f"INSERT INTO {BUCKETS} (name, key, tokens, updated, full_at, ok) "
               "VALUES (?, ?, ?, ?, 0, 1) ON CONFLICT (name, key) DO UPDATE "
               "SET tokens = EXCLUDED.tokens, updated = EXCLUDED.updated")
INSERT_NEW = (f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
              "ON CONFLICT (subject, kind, object) DO NOTHING")
UPDATE_ATTRS = (f"UPDATE {TABLE} SET attrs = ?, expires = ? "
                "WHERE subject = ? AND kind = ? AND object = ? "
                "AND (attrs <> ? OR expires IS NOT ?)")
DELETE = f"DELETE FROM {TABLE} WHERE subject = ? AND kind = ? AND object = ?"
# A timer scheduled again (the same key) starts afresh: a new due, no lease.
SCHEDULE = (f"INSERT INTO {TIMERS} (key, due, sender, event, rule, created, lease) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (key) DO UPDATE SET due = excluded.due, "
            "sender = excluded.sender, event = excluded.event, rule = excluded.rule, "
            "created = excluded.created, lease = 0")
CANCEL = f"DELETE FROM {TIMERS} WHERE key = ?"
ADD_COUNT = f"INSERT INTO {COUNTS} (name, key, at, n) VALUES (?, ?, ?, ?)"
RESET_COUNT = f"DELETE FROM {COUNTS} WHERE name = ? AND key = ?"
INSERT_BATCH = f"INSERT INTO {RECORDS} (session, last, created, records) VALUES (?, ?, ?, ?)"
UPSERT_MARK = (f"INSERT INTO {SESSIONS} (session, confirmed, updated) VALUES (?, ?, ?) "
               "ON CONFLICT (session) DO UPDATE SET "
               "confirmed = max(confirmed, excluded.confirmed), updated = excluded.updated")
UPSERT = (f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
          "ON CONFLICT (subject, kind, object) DO UPDATE "
          "SET attrs = excluded.attrs, created = excluded.created, expires = excluded.expires")


class SqliteStore(RelationStore):
    """A store in one SQLite file (created with mode 0600 when missing)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
        if path != ":memory:" and not os.path.exists(path):
            try:
                # Relationships are personal data: not world-readable. SQLite
                # gives the -wal and -shm files the database file's mode.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create SQLite store {path}: {exc.strerror}") from None
        try:
            # isolation_level=None: no implicit transactions, we BEGIN ourselves.
            self._conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {path}: {exc}") from None
        try:
            with self._call("opening"):
                self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        self._durable = True
        conn.execute("BEGIN IMMEDIATE")
        versions = []
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = "
                        "'rulebot_schema_version'").fetchone():
            versions = [v for (v,) in conn.execute(
                "SELECT version FROM rulebot_schema_version")]
        if versions and max(versions) > SCHEMA_VERSION:
            conn.execute("ROLLBACK")
            raise StoreError(f"{self.location}: schema version {max(versions)} is newer than "
                             f"this rulebot's ({SCHEMA_VERSION})")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({TABLE})")}
        if "expires" not in columns:
            for statement in EXPIRY_SCHEMA:
                conn.execute(statement)
        if not versions or max(versions) < SCHEMA_VERSION:
            conn.execute("INSERT INTO rulebot_schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    # -- reads (the SQL is in RelationStore)

    PARAM = "?"

    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    @contextmanager
    def _snapshot(self) -> Iterator[Iterator[Relation]]:
        # One SELECT reads one snapshot (WAL); writers are not blocked meanwhile.
        cur = self._conn.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE {live('?')} "
                                 "ORDER BY subject, kind, object", (self._at(),))
        try:
            yield (relation_of(row) for row in cur)
        finally:
            cur.close()

    # -- writes

    def _write(self, rows: Sequence[Row], batch: RecordBatch | None = None,
               mark: SessionMark | None = None, durable: bool = True,
               claims: Sequence[str] = (), counts: Sequence[CountOp] = (),
               timers: Sequence[TimerOp] = ()) -> Committed:
        if durable != self._durable:  # outside a transaction, as SQLite requires
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        flags: Flags = []
        batch_id = None
        keys = sorted(set(claims))
        with self._transaction() as cur:
            if keys:
                # Writers hold SQLite's one write lock: what is not claimed now
                # cannot be claimed by another until this commits.
                taken: dict[str, int] = {}
                for i in range(0, len(keys), CLAIMS_PER_QUERY):
                    part = keys[i:i + CLAIMS_PER_QUERY]
                    taken.update(cur.execute(  # a claim whose batch is gone is free
                        f"SELECT c.key, c.batch FROM {CLAIMS} c JOIN {RECORDS} r "
                        f"ON r.id = c.batch WHERE c.key IN ({', '.join('?' * len(part))})",
                        part).fetchall())
                if taken:
                    return Committed([], None, taken)  # nothing written yet: commits nothing
            for r in rows:
                cur.execute(DELETE_EXPIRED, (r.subject, r.kind, r.object, r.created))
                if r.attrs is None:
                    cur.execute(DELETE, (r.subject, r.kind, r.object))
                    flags.append(cur.rowcount > 0)
                    continue
                cur.execute(INSERT_NEW, (r.subject, r.object, r.kind, r.attrs, r.created,
                                         r.expires))
                new = cur.rowcount > 0
                if not new:
                    cur.execute(UPDATE_ATTRS, (r.attrs, r.expires, r.subject, r.kind, r.object,
                                               r.attrs, r.expires))
                flags.append(new)
            for name, key, n, at in counts:
                if n is None:
                    cur.execute(RESET_COUNT, (name, key))
                else:
                    cur.execute(ADD_COUNT, (name, key, at, n))
            for op in timers:
                if op[1] is None:
                    cur.execute(CANCEL, (op[0],))
                else:
                    cur.execute(SCHEDULE, op)
            if batch is not None:
                cur.execute(INSERT_BATCH, batch)  # a RecordBatch is its parameter tuple
                batch_id = cur.lastrowid
                if keys:
                    cur.executemany(f"INSERT OR REPLACE INTO {CLAIMS} (key, batch) VALUES (?, ?)",
                                    [(k, batch_id) for k in keys])
            if mark is not None:
                cur.execute(UPSERT_MARK, mark)
        return Committed(flags, batch_id)

    def _purge(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> int:
        with self._transaction() as cur:
            cur.execute(sql, params)
            return max(cur.rowcount, 0)

    def _take_timers(self, now: float, limit: int, lease: float) -> list[Timer]:
        # One process per SQLite file: the write lock is all the exclusion needed.
        with self._transaction() as cur:
            rows = cur.execute(f"SELECT key, due, sender, event, rule, created FROM {TIMERS} "
                               "WHERE due <= ? AND lease <= ? ORDER BY due LIMIT ?",
                               (now, now, limit)).fetchall()
            cur.executemany(f"UPDATE {TIMERS} SET lease = ? WHERE key = ?",
                            [(now + lease, r[0]) for r in rows])
        return [Timer(*r) for r in rows]

    def _replace_buckets(self, rows: Sequence[tuple[str, str, float, float]],
                         before: float) -> None:
        with self._transaction() as cur:
            cur.execute(f"DELETE FROM {BUCKETS} WHERE updated < ?", (before,))
            cur.executemany(SAVE_BUCKET, rows)

    def _purge_batches(self, select: str, params: Sequence[object]) -> int:
        with self._transaction() as cur:
            gone = [i for (i,) in cur.execute(
                f"DELETE FROM {RECORDS} WHERE id IN ({select}) RETURNING id", params).fetchall()]
            for i in range(0, len(gone), CLAIMS_PER_QUERY):
                part = gone[i:i + CLAIMS_PER_QUERY]
                cur.execute(f"DELETE FROM {CLAIMS} WHERE batch IN "
                            f"({', '.join('?' * len(part))})", part)
            return len(gone)

    def _write_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        with self._transaction() as cur:
            row: tuple[Any, ...] | None = cur.execute(sql, params).fetchone()
            return row

    def _put(self, rows: Iterator[Row]) -> None:
        if not self._durable:
            self._conn.execute("PRAGMA synchronous = FULL")
            self._durable = True
        with self._transaction() as cur:
            cur.executemany(UPSERT, ((r.subject, r.object, r.kind, r.attrs, r.created, r.expires)
                                     for r in rows))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    def start_housekeeping(self) -> None:
        if self.path == ":memory:" or self._checkpointer is not None:
            return
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_AUTOCHECKPOINT}")
        self._checkpointer = threading.Thread(target=self._checkpoints, daemon=True,
                                              name="rulebot-sqlite-checkpoints")
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """PASSIVE checkpoints every CHECKPOINT_INTERVAL: they copy what they can
        without waiting for (or blocking) the daemon's writes; the sqlite3 module
        releases the interpreter lock meanwhile."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("SQLite checkpoints off the event loop could not start: %s", exc)
            return
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the fallback autocheckpoint still works
                    log.warning("SQLite checkpoint failed: %s", exc)
        finally:
            conn.close()

    def _stop_housekeeping(self) -> None:
        thread = self._checkpointer
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)
            self._checkpointer = None

    def _close(self) -> None:
        self._conn.close()


