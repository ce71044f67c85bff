"""State that several workers share through the store (rulebot.daemon uses it
when workers > 1; one process keeps it in memory, engine.state.Buckets and
PresenceTable): rate-limit buckets and the users' presence.

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
PRESENCE = "rulebot_presence"


class SharedStateMixin:
    """Token buckets and presence in the store (see the module docstring)."""

    #: A named parameter: ":{}" for sqlite3, "%({})s" for psycopg.
    NAMED = ":{}"
    PARAM = "?"

    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        raise NotImplementedError

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

    # -- one process's buckets, saved and restored (engine.state.Buckets)

    def save_buckets(self, rows: Sequence[tuple[str, str, float, float]], now: float,
                     keep: float = 86400.0) -> int:
        """Save these buckets (name, key, tokens, last used at, Unix seconds) over
        the saved ones, and forget the saved ones unused for `keep` seconds (full
        again long ago), in one transaction: one process owns the table then.
        Returns how many were written. Raises StoreError."""
        with self._call("save the rate-limit buckets"):
            self._replace_buckets(rows, now - keep)
        return len(rows)

    def load_buckets(self) -> list[tuple[str, str, float, float]]:
        """The saved buckets: (name, key, tokens, last used at). Raises StoreError."""
        with self._call("read the rate-limit buckets"):
            rows = self._query(f"SELECT name, key, tokens, updated FROM {BUCKETS}")
        return [(str(n), str(k), float(t), float(u)) for n, k, t, u in rows]

    def _replace_buckets(self, rows: Sequence[tuple[str, str, float, float]],
                         before: float) -> None:
        raise NotImplementedError

    # -- presence: which resources of which users are online

    def presence_update(self, bare: str, resource: str, available: bool, now: float) -> None:
        """Record an available or unavailable presence of bare/resource (an
        unavailable one without a resource: every resource). Raises StoreError."""
        n = self.NAMED.format
        if available:
            sql = (f"INSERT INTO {PRESENCE} (jid, resource, updated) VALUES "
                   f"({n('jid')}, {n('resource')}, {n('now')}) ON CONFLICT (jid, resource) "
                   f"DO UPDATE SET updated = {n('now')}")
        elif resource:
            sql = f"DELETE FROM {PRESENCE} WHERE jid = {n('jid')} AND resource = {n('resource')}"
        else:
            sql = f"DELETE FROM {PRESENCE} WHERE jid = {n('jid')}"
        with self._call("record presence"):
            self._purge(sql, {"jid": bare, "resource": resource, "now": now})

    def presence_online(self, bare: str, resource: str = "") -> bool:
        """Whether bare (any resource) or bare/resource is online. Raises StoreError."""
        p = self.PARAM
        where, params = (f"jid = {p} AND resource = {p}", (bare, resource)) if resource else \
            (f"jid = {p}", (bare,))
        with self._call("read presence"):
            rows = self._query(f"SELECT 1 FROM {PRESENCE} WHERE {where} LIMIT 1", params)
        return bool(rows)
