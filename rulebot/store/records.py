"""The idempotency records' part of the store: batches of records and how far
each stream-management session is acknowledged (rulebot.daemon.ledger uses them).

A mixin of store.RelationStore, whose lock,
error handling (`_call`) and queries (`_query`, PARAM) it uses; the same SQL
on both backends. Writes happen in RelationStore.commit, in the transaction
of any relation changes.

One row per batch, not per event: a batch is what the daemon decided while
handling one read from the server (hundreds of events under load), and a
row per event with a unique index on the events' keys cost 7-25 us per event
in SQLite with realistic (random) keys, every insert rewriting an index page
in the WAL. Finding a record by its event is the ledger's job (an index in
memory of the records a re-delivery can still need), so the table needs no
index but its primary key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rulebot.store.values import StoredBatch

RECORDS = "rulebot_inbound"
SESSIONS = "rulebot_inbound_sessions"
#: A unique key per event of the batches several workers write (Ledger,
#: "claims"), deleted with their batch.
CLAIMS = "rulebot_inbound_claims"

class RecordStoreMixin:
    """Reads and purges of the idempotency records (see the module docstring)."""

    PARAM = "?"

    def _call(self, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        raise NotImplementedError

    def _purge(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> int:
        """Run one DELETE, in a transaction of its own; returns the rows deleted."""
        raise NotImplementedError

    def _purge_batches(self, select: str, params: Sequence[object]) -> int:
        """Delete the batches whose ids `select` lists and their claims, in one
        transaction; returns the batches deleted."""
        raise NotImplementedError

    def record_batches(self, window_since: int) -> list[StoredBatch]:
        """The batches a re-delivery may still need: those created at or after
        `window_since` (Unix ms), and those holding an event whose session is
        not acknowledged that far; in the order they were written."""
        p = self.PARAM
        with self._call("read records"):
            rows = self._query(
                f"SELECT b.id, b.session, b.last, b.created, b.records FROM {RECORDS} b "
                f"LEFT JOIN {SESSIONS} s ON s.session = b.session "
                f"WHERE b.created >= {p} OR (b.session <> '' AND "
                f"b.last > COALESCE(s.confirmed, 0)) ORDER BY b.id", (window_since,))
        return [StoredBatch(int(i), str(s), int(last), int(c), str(r))
                for i, s, last, c, r in rows]

    def record_ids_after(self, after: int, limit: int = 10_000) -> list[int]:
        """Ids of the batches after `after`, in order (what other workers wrote)."""
        p = self.PARAM
        with self._call("read records"):
            rows = self._query(f"SELECT id FROM {RECORDS} WHERE id > {p} ORDER BY id LIMIT {p}",
                               (after, limit))
        return [int(r[0]) for r in rows]

    def record_batches_in(self, ids: Sequence[int]) -> list[StoredBatch]:
        """The batches of these ids that still exist, in order."""
        if not ids:
            return []
        p = self.PARAM
        marks = ", ".join([p] * len(ids))
        with self._call("read records"):
            rows = self._query(f"SELECT id, session, last, created, records FROM {RECORDS} "
                               f"WHERE id IN ({marks}) ORDER BY id", tuple(ids))
        return [StoredBatch(int(i), str(s), int(last), int(c), str(r))
                for i, s, last, c, r in rows]

    def record_batch(self, batch_id: int) -> str | None:
        """The records text of one batch, or None once it was purged."""
        p = self.PARAM
        with self._call("read records"):
            rows = self._query(f"SELECT records FROM {RECORDS} WHERE id = {p}", (batch_id,))
        return str(rows[0][0]) if rows else None

    def confirmed_marks(self) -> dict[str, int]:
        """Session -> the last position acknowledged to the server."""
        with self._call("read records"):
            rows = self._query(f"SELECT session, confirmed FROM {SESSIONS}")
        return {str(s): int(c) for s, c in rows}

    def purge_records(self, window_before: int, retention_before: int, limit: int) -> int:
        """Delete up to `limit` batches that no re-delivery can need: created
        before `retention_before`, or before `window_before` with every event
        acknowledged (or outside a session). Then forget sessions without
        batches that have not been updated since `retention_before`. Returns
        the batches deleted."""
        p = self.PARAM
        with self._call("purge"):
            n = self._purge_batches(
                f"SELECT b.id FROM {RECORDS} b "
                f"LEFT JOIN {SESSIONS} s ON s.session = b.session "
                f"WHERE b.created < {p} OR (b.created < {p} AND "
                f"(b.session = '' OR b.last <= COALESCE(s.confirmed, 0))) "
                f"ORDER BY b.id LIMIT {p}", (retention_before, window_before, limit))
            self._purge(f"DELETE FROM {SESSIONS} WHERE updated < {p} AND NOT EXISTS "
                        f"(SELECT 1 FROM {RECORDS} b WHERE b.session = {SESSIONS}.session)",
                        (retention_before,))
        return n

    def count_record_batches(self) -> int:
        with self._call("count"):
            rows = self._query(f"SELECT count(*) FROM {RECORDS}")
        return int(rows[0][0]) if rows else 0

