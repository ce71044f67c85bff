"""The PostgreSQL backend of the relationship store (psycopg 3).

One connection, in autocommit mode for single-statement reads (so that a
lookup never leaves the session "idle in transaction", holding a snapshot
and blocking vacuum), with an explicit transaction around every write: one
apply() is BEGIN, its statements and COMMIT sent as one pipeline, one round
trip. The session forces synchronous_commit on, so COMMIT returns only after
the WAL is flushed, whatever the server's default; a commit of idempotency
records alone (store.commit with durable=False) turns it off for that
transaction: the records are then safe from the bot's own crash at once (the
server has them) and from the server's within wal_writer_delay. A lost
connection is reported as StoreError; the next call reconnects.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from rulebot.model import Relation
from rulebot.store.base import (
    COLUMNS,
    COUNTS,
    PAGE,
    TABLE,
    TIMERS,
    Committed,
    Flags,
    RelationStore,
    StoreError,
    live,
    redact_url,
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
#: added to an older database on opening).
SCHEMA_VERSION = 5
CONNECT_TIMEOUT = 10  # seconds, unless the URL says otherwise
#: How long a commit with claims waits for another transaction's rows (a
#: commit normally takes milliseconds; see _write).
CLAIM_WAIT_MS = 1000
#: How long the server lets this connection sit in a transaction it does not
#: finish (rulebot's transactions take milliseconds; see _setup).
IDLE_IN_TRANSACTION_MS = 5000
# Serialises schema creation between processes opening a fresh database at once.
SCHEMA_LOCK = 0x72756C65626F74  # "rulebot"

# The same tables as store.sqlite.SCHEMA. COLLATE "C" makes the order of
# objects()/subjects()/list() the code point order SQLite and Python use,
# whatever the database's locale. Times and attrs are text, as in SQLite, so
# that export/import round-trips byte for byte.
SCHEMA = [
    "CREATE TABLE rulebot_schema_version (version integer NOT NULL)",
    f"""CREATE TABLE {TABLE} (
        subject text COLLATE "C" NOT NULL,
        object  text COLLATE "C" NOT NULL,
        kind    text COLLATE "C" NOT NULL,
        attrs   text NOT NULL DEFAULT '{{}}',
        created text NOT NULL,
        PRIMARY KEY (subject, kind, object)
    )""",
    f"CREATE INDEX {TABLE}_reverse ON {TABLE} (object, kind, subject)",
    "INSERT INTO rulebot_schema_version VALUES (1)",
]
#: What version 2 adds.
RECORDS_SCHEMA = [
    f"""CREATE TABLE {RECORDS} (
        id      bigserial PRIMARY KEY,
        session text COLLATE "C" NOT NULL,
        last    bigint NOT NULL,
        created bigint NOT NULL,
        records text NOT NULL
    )""",
    f"""CREATE TABLE {SESSIONS} (
        session   text COLLATE "C" PRIMARY KEY,
        confirmed bigint NOT NULL,
        updated   bigint NOT NULL
    )""",
    "INSERT INTO rulebot_schema_version VALUES (2)",
]
#: What version 3 adds.
BUCKETS_SCHEMA = [
    f"""CREATE TABLE {BUCKETS} (
        name    text COLLATE "C" NOT NULL,
        key     text COLLATE "C" NOT NULL,
        tokens  double precision NOT NULL,
        updated double precision NOT NULL,
        full_at double precision NOT NULL,
        ok      integer NOT NULL,
        PRIMARY KEY (name, key)
    )""",
    f"""CREATE TABLE {PRESENCE} (
        jid      text COLLATE "C" NOT NULL,
        resource text COLLATE "C" NOT NULL,
        updated  double precision NOT NULL,
        PRIMARY KEY (jid, resource)
    )""",
    "INSERT INTO rulebot_schema_version VALUES (3)",
]
#: What version 4 adds: one row per event of the batches written with claims
#: (several workers), deleted with its batch.
CLAIMS_SCHEMA = [
    f"""CREATE TABLE {CLAIMS} (
        key   text COLLATE "C" PRIMARY KEY,
        batch bigint NOT NULL
    )""",
    f"CREATE INDEX {CLAIMS}_batch ON {CLAIMS} (batch)",
    "INSERT INTO rulebot_schema_version VALUES (4)",
]

#: What version 5 adds: the table of version 1 gains a column.
EXPIRY_SCHEMA = [
    f"ALTER TABLE {TABLE} ADD COLUMN expires text COLLATE \"C\"",
    f"CREATE INDEX {TABLE}_expires ON {TABLE} (expires) WHERE expires IS NOT NULL",
    "INSERT INTO rulebot_schema_version VALUES (5)",
]
#: The windowed counters (created with version 5's expiry when missing).
COUNTS_SCHEMA = [
    f"""CREATE TABLE {COUNTS} (
        name text COLLATE "C" NOT NULL,
        key  text COLLATE "C" NOT NULL,
        at   double precision NOT NULL,
        n    integer NOT NULL
    )""",
    f"CREATE INDEX {COUNTS}_key ON {COUNTS} (name, key, at)",
]
#: The timers (created with version 5 when missing).
TIMERS_SCHEMA = [
    f"""CREATE TABLE {TIMERS} (
        key     text COLLATE "C" PRIMARY KEY,
        due     double precision NOT NULL,
        sender  text COLLATE "C" NOT NULL,
        event   text NOT NULL,
        rule    text NOT NULL,
        created double precision NOT NULL,
        lease   double precision NOT NULL DEFAULT 0
    )""",
    f"CREATE INDEX {TIMERS}_due ON {TIMERS} (due)",
    f"CREATE INDEX {TIMERS}_sender ON {TIMERS} (sender)",
]
#: The silences (created with version 5 when missing).
SILENCES_SCHEMA = [
    f"""CREATE TABLE {SILENCES} (
        id      text COLLATE "C" PRIMARY KEY,
        ends    double precision NOT NULL,
        author  text NOT NULL,
        comment text NOT NULL,
        rule    text,
        sender  text,
        match   text,
        starts  double precision NOT NULL,
        created double precision NOT NULL
    )""",
]
# A timer scheduled again (the same key) starts afresh: a new due, no lease.
SCHEDULE = (f"INSERT INTO {TIMERS} (key, due, sender, event, rule, created, lease) "
            "VALUES (%s, %s, %s, %s, %s, %s, 0) ON CONFLICT (key) DO UPDATE SET "
            "due = EXCLUDED.due, sender = EXCLUDED.sender, event = EXCLUDED.event, "
            "rule = EXCLUDED.rule, created = EXCLUDED.created, lease = 0")
CANCEL = f"DELETE FROM {TIMERS} WHERE key = %s"
# SKIP LOCKED: workers polling at once take different timers, none waits.
TAKE_TIMERS = (f"UPDATE {TIMERS} SET lease = %(until)s WHERE key IN (SELECT key FROM "
               f"{TIMERS} WHERE due <= %(now)s AND lease <= %(now)s ORDER BY due "
               "LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
               "RETURNING key, due, sender, event, rule, created")
ADD_COUNT = f"INSERT INTO {COUNTS} (name, key, at, n) VALUES (%s, %s, %s, %s)"
RESET_COUNT = f"DELETE FROM {COUNTS} WHERE name = %s AND key = %s"
# One process's buckets, saved over the last save (full_at 0: to purge_buckets,
# which several workers run, a saved bucket is full).
SAVE_BUCKET = (f"INSERT INTO {BUCKETS} (name, key, tokens, updated, full_at, ok) "
               "VALUES (%s, %s, %s, %s, 0, 1) ON CONFLICT (name, key) DO UPDATE "
               "SET tokens = EXCLUDED.tokens, updated = EXCLUDED.updated")
# Before a write to a relation: an expired one is gone (so a relate creates
# it anew, an unrelate finds nothing), whether or not the purge has run.
DELETE_EXPIRED = (f"DELETE FROM {TABLE} WHERE subject = %s AND kind = %s AND object = %s "
                  "AND expires IS NOT NULL AND expires <= %s")

# xmax = 0 only on a row this statement inserted (an update sets xmax to our
# transaction): "was it new" in the same round trip as the upsert.
RELATE = (f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
          "ON CONFLICT (subject, kind, object) DO UPDATE SET attrs = EXCLUDED.attrs, "
          "expires = EXCLUDED.expires RETURNING (xmax = 0)")
UNRELATE = f"DELETE FROM {TABLE} WHERE subject = %s AND kind = %s AND object = %s RETURNING 1"
INSERT_BATCH = (f"INSERT INTO {RECORDS} (session, last, created, records) "
                "VALUES (%s, %s, %s, %s) RETURNING id")
# The batch and its claims in one statement: the claims won come back. A
# claim another transaction holds uncommitted waits for it (the unique index).
INSERT_CLAIMED = (f"WITH b AS (INSERT INTO {RECORDS} (session, last, created, records) "
                  "VALUES (%s, %s, %s, %s) RETURNING id), "
                  f"c AS (INSERT INTO {CLAIMS} (key, batch) SELECT k, b.id FROM b, "
                  "unnest(string_to_array(%s, ',')) WITH ORDINALITY AS u(k, n) ORDER BY n "
                  # a claim whose batch is gone (deleted by hand) is free
                  f"ON CONFLICT (key) DO UPDATE SET batch = EXCLUDED.batch WHERE NOT EXISTS "
                  f"(SELECT 1 FROM {RECORDS} r WHERE r.id = {CLAIMS}.batch) RETURNING key) "
                  "SELECT (SELECT id FROM b), (SELECT count(*) FROM c)")
# The keys as one comma-separated text (claim keys are hex), not a text[]:
# adapting a list costs the worker a Python call per element.
HOLDERS = f"SELECT key, batch FROM {CLAIMS} WHERE key = ANY(string_to_array(%s, ','))"
UPSERT_MARK = (f"INSERT INTO {SESSIONS} (session, confirmed, updated) VALUES (%s, %s, %s) "
               f"ON CONFLICT (session) DO UPDATE SET confirmed = "
               f"GREATEST({SESSIONS}.confirmed, EXCLUDED.confirmed), updated = EXCLUDED.updated")
UPSERT = (f"INSERT INTO {TABLE} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
          "ON CONFLICT (subject, kind, object) DO UPDATE "
          "SET attrs = EXCLUDED.attrs, created = EXCLUDED.created, expires = EXCLUDED.expires")


class PostgresStore(RelationStore):
    """A store in a PostgreSQL database (tables rulebot_relations, rulebot_schema_version)."""

    def __init__(self, url: str) -> None:
        super().__init__(redact_url(url))
        self._secrets = _secrets_of(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.location}: "
                             f"{self._describe(exc)}") from None
        if params.get("password"):  # ?password=... in the query string
            self._secrets.insert(0, str(params["password"]))
        self._params: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT,
                                        "application_name": "rulebot", **params}
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            conn = psycopg.connect(autocommit=True, **self._params)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.location}: "
                             f"{self._describe(exc)}") from None
        try:
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        try:
            conn.execute("SET synchronous_commit TO on")
            # A process stopped in the middle of a transaction (SIGSTOP, a VM
            # freeze) would hold its rows, the claims among them, for as long
            # as it is stopped: every other worker's commit of those events
            # waits, fails after CLAIM_WAIT_MS and is refused, resend after
            # resend. The server ends such a session after IDLE_IN_TRANSACTION_MS.
            conn.execute(f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}")
            (encoding,) = conn.execute("SHOW server_encoding").fetchone() or ("?",)
            if encoding != "UTF8":
                raise StoreError(f"{self.location}: the database encoding is {encoding}, "
                                 "rulebot needs UTF8")
            if not (self._has(conn, TABLE) and self._has(conn, RECORDS)
                    and self._has(conn, BUCKETS) and self._has(conn, CLAIMS)
                    and self._has_expiry(conn) and self._has(conn, COUNTS)
                    and self._has(conn, TIMERS) and self._has(conn, SILENCES)):
                # A session lock taken before the transaction, not a transaction
                # lock inside it: a transaction that waited for the lock would
                # still look the tables up in the catalog as it was when the
                # transaction began (invalidations are read at its start), miss
                # the ones another process created meanwhile and fail with
                # "already exists" (several workers starting on a fresh database).
                conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    with conn.transaction():
                        if not self._has(conn, TABLE):
                            for statement in SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, RECORDS) and not self._newer(conn):
                            for statement in RECORDS_SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, BUCKETS) and not self._newer(conn):
                            for statement in BUCKETS_SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, CLAIMS) and not self._newer(conn):
                            for statement in CLAIMS_SCHEMA:
                                conn.execute(statement)
                        if not self._has_expiry(conn) and not self._newer(conn):
                            for statement in EXPIRY_SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, COUNTS) and not self._newer(conn):
                            for statement in COUNTS_SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, TIMERS) and not self._newer(conn):
                            for statement in TIMERS_SCHEMA:
                                conn.execute(statement)
                        if not self._has(conn, SILENCES) and not self._newer(conn):
                            for statement in SILENCES_SCHEMA:
                                conn.execute(statement)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
            row = conn.execute("SELECT max(version) FROM rulebot_schema_version").fetchone()
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot set up the schema: "
                             f"{self._describe(exc)}") from None
        version = row[0] if row else None
        if version is None or version > SCHEMA_VERSION:
            raise StoreError(f"{self.location}: schema version {version} is not this "
                             f"rulebot's ({SCHEMA_VERSION})")

    @staticmethod
    def _has(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> bool:
        # to_regclass, not CREATE ... IF NOT EXISTS: a role without CREATE
        # rights may still use tables that exist.
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _has_expiry(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        row = conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                           "to_regclass(%s) AND attname = 'expires' AND NOT attisdropped",
                           (TABLE,)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _newer(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        row = conn.execute("SELECT max(version) FROM rulebot_schema_version").fetchone()
        return bool(row and row[0] is not None and row[0] > SCHEMA_VERSION)

    def _is_driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error)

    def _describe(self, exc: BaseException) -> str:
        text = super()._describe(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @property
    def _db(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The connection; a new one when the last was lost (server restart, network)."""
        if self._conn.closed:
            if not self._conn.broken:
                raise StoreError(f"{self.location}: the store is closed")
            self._conn = self._connect()
        return self._conn

    # -- reads (the SQL is in RelationStore)

    PARAM = "%s"
    NAMED = "%({})s"

    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _snapshot(self) -> Iterator[Iterator[Relation]]:
        # One statement, one snapshot, streamed row by row (no cursor held
        # in a transaction, no table in memory).
        cur = self._db.cursor()
        stream = cur.stream(f"SELECT {COLUMNS} FROM {TABLE} WHERE {live('%s')} "
                            "ORDER BY subject, kind, object", (self._at(),))
        try:
            yield (relation_of(row) for row in stream)
        finally:
            if isinstance(stream, Generator):  # stopped early: drain what is in flight
                stream.close()
            cur.close()

    # -- writes

    def _write(self, rows: Sequence[Row], batch: RecordBatch | None = None,
               mark: SessionMark | None = None, durable: bool = True,
               claims: Sequence[str] = (), counts: Sequence[CountOp] = (),
               timers: Sequence[TimerOp] = ()) -> Committed:
        conn = self._db
        cursors = []
        inserted = None
        # Sorted: two workers claiming overlapping keys wait for each other in
        # the same order, never in a cycle (a deadlock PostgreSQL would break
        # by failing one of them after deadlock_timeout).
        keys = sorted(set(claims))
        try:
            with conn.pipeline(), conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit TO off")
                if keys:
                    # A claim held by a worker that hangs in its transaction
                    # (SIGSTOP, a VM freeze) would stop this one too: give up
                    # after CLAIM_WAIT (StoreUnavailable: the read is refused,
                    # its senders resend).
                    conn.execute(f"SET LOCAL lock_timeout = '{CLAIM_WAIT_MS}ms'")
                for r in rows:
                    conn.execute(DELETE_EXPIRED, (r.subject, r.kind, r.object, r.created))
                    cur = conn.cursor()
                    if r.attrs is None:
                        cur.execute(UNRELATE, (r.subject, r.kind, r.object))
                    else:
                        cur.execute(RELATE, (r.subject, r.object, r.kind, r.attrs, r.created,
                                             r.expires))
                    cursors.append((r.attrs is None, cur))
                for name, key, n, at in counts:
                    if n is None:
                        conn.execute(RESET_COUNT, (name, key))
                    else:
                        conn.execute(ADD_COUNT, (name, key, at, n))
                for op in timers:
                    if op[1] is None:
                        conn.execute(CANCEL, (op[0],))
                    else:
                        conn.execute(SCHEDULE, op)
                if batch is not None:
                    inserted = conn.execute(INSERT_CLAIMED if keys else INSERT_BATCH,
                                            (*batch, ",".join(keys)) if keys else batch)
                if mark is not None:
                    conn.execute(UPSERT_MARK, mark)
                if keys:
                    assert inserted is not None
                    got = inserted.fetchone()  # in the transaction: it can still roll back
                    if not got or got[1] < len(keys):
                        raise _Taken(keys)
        except _Taken as taken:  # rolled back: nothing of this commit was written
            # (a claim held by a transaction that rolled back meanwhile is not
            # listed: it is free for the next attempt)
            held = conn.execute(HOLDERS, (",".join(taken.keys),)).fetchall()
            return Committed([], None, {str(k): int(b) for k, b in held})
        flags: Flags = []
        for unrelate, cur in cursors:
            row = cur.fetchone()
            flags.append(row is not None if unrelate else bool(row and row[0]))
        batch_id = None
        if inserted is not None:
            if keys:
                batch_id = int(got[0]) if got else None
            else:
                one = inserted.fetchone()
                batch_id = int(one[0]) if one else None
        return Committed(flags, batch_id)

    def _purge(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> int:
        cur = self._db.execute(sql, params)
        return max(cur.rowcount, 0)

    def _take_timers(self, now: float, limit: int, lease: float) -> list[Timer]:
        rows = self._db.execute(TAKE_TIMERS, {"now": now, "until": now + lease,
                                              "limit": limit}).fetchall()
        return sorted((Timer(*r) for r in rows), key=lambda t: t.due)

    def _replace_buckets(self, rows: Sequence[tuple[str, str, float, float]],
                         before: float) -> None:
        conn = self._db
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"DELETE FROM {BUCKETS} WHERE updated < %s", (before,))
            cur.executemany(SAVE_BUCKET, rows)

    def _purge_batches(self, select: str, params: Sequence[object]) -> int:
        # One statement: no claim outlives its batch, whoever purges at once.
        cur = self._db.execute(
            f"WITH gone AS (DELETE FROM {RECORDS} WHERE id IN ({select}) RETURNING id), "
            f"c AS (DELETE FROM {CLAIMS} WHERE batch IN (SELECT id FROM gone)) "
            "SELECT count(*) FROM gone", params)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def _write_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, params).fetchone()
        return row

    def _put(self, rows: Iterator[Row]) -> None:
        conn = self._db
        with conn.transaction(), conn.cursor() as cur:
            while batch := list(islice(rows, PAGE)):
                cur.executemany(UPSERT, [(r.subject, r.object, r.kind, r.attrs, r.created,
                                          r.expires)
                                         for r in batch])

    def _close(self) -> None:
        self._conn.close()



class _Taken(Exception):
    """Some claims of a commit are another batch's: roll the transaction back."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"{len(keys)} claims taken")
        self.keys = keys


def _secrets_of(url: str) -> list[str]:
    """The URL's password as written and percent-decoded, and the URL itself."""
    found = [url]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    return sorted(set(found), key=len, reverse=True)
