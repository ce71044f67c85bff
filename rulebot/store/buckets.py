"""Rate-limit buckets kept in the store, shared by every worker that uses it
(rulebot.daemon uses them when several workers run; one process keeps its
buckets in memory, engine.state.Buckets).

A mixin of store.RelationStore, like store.records. Taking a token is one
statement, an upsert that refills the bucket from the time since its last
use, takes a token if there is one, and returns whether it did: the row lock
serialises workers taking from one bucket, so a limit is exact across them.
Times are the callers' clocks (Unix seconds): workers' clocks are assumed
synchronised (NTP); a skew of a few milliseconds moves a refill by as much.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

BUCKETS = "rulebot_buckets"


class BucketStoreMixin:
    """Token buckets in the store (see the module docstring)."""

    #: A named parameter: ":{}" for sqlite3, "%({})s" for psycopg.
    NAMED = ":{}"

    def _call(self, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _write_one(self, sql: str, params: Mapping[str, object]) -> tuple[Any, ...] | None:
        """Run one statement in a transaction of its own; its first row returned."""
        raise NotImplementedError

    def _purge(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> int:
        raise NotImplementedError

    def take_token(self, name: str, key: str, per_second: float, burst: int,
                   now: float) -> bool:
        """Take one token from the bucket (name, key) of `burst` tokens refilled at
        `per_second`; False when it is empty. Raises StoreError."""
        n = self.NAMED.format
        b = BUCKETS
        # The refilled level, from the row as it was (every SET reads the old row).
        level = f"({b}.tokens + ({n('now')} - {b}.updated) * {n('rate')})"
        refill = f"(CASE WHEN {level} > {n('burst')} THEN {n('burst')} ELSE {level} END)"
        after = f"(CASE WHEN {refill} >= 1 THEN {refill} - 1 ELSE {refill} END)"
        sql = (f"INSERT INTO {b} (name, key, tokens, updated, full_at, ok) "
               f"VALUES ({n('name')}, {n('key')}, {n('tokens')}, {n('now')}, {n('full')}, "
               f"{n('ok')}) ON CONFLICT (name, key) DO UPDATE SET "
               f"ok = CASE WHEN {refill} >= 1 THEN 1 ELSE 0 END, tokens = {after}, "
               f"full_at = {n('now')} + ({n('burst')} - {after}) / {n('rate')}, "
               f"updated = {n('now')} RETURNING ok")
        first = burst >= 1  # a new bucket is full: the first take succeeds
        params = {"name": name, "key": key, "now": now, "rate": per_second,
                  "burst": float(burst), "tokens": float(burst - 1) if first else 0.0,
                  "full": now + (1.0 if first else float(burst)) / per_second,
                  "ok": 1 if first else 0}
        with self._call("take a rate-limit token"):
            row = self._write_one(sql, params)
        return bool(row and row[0])

    def purge_buckets(self, now: float, limit: int = 1000) -> int:
        """Delete up to `limit` buckets that are full again (forgetting one
        changes nothing: it comes back full); returns how many."""
        n = self.NAMED.format
        with self._call("purge"):
            return self._purge(
                f"DELETE FROM {BUCKETS} WHERE (name, key) IN (SELECT name, key FROM {BUCKETS} "
                f"WHERE full_at < {n('now')} LIMIT {n('limit')})", {"now": now, "limit": limit})
