"""What rules may read besides the event: relationships and presence, read-only.

Pure data structures, no I/O.

The engine sees state only through `StateView`; it never writes. Changes come
back from the engine as `Relate`/`Unrelate` actions, which the daemon applies
to the store (durably) before it sends anything else of the same decision.
`MemoryRelations` is an in-memory store used by `rulebot eval`/`rulebot test`
fixtures and by unit tests; the daemon uses rulebot.store.base (SQLite/PostgreSQL).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from rulebot.jid import norm_bare
from rulebot.model import (
    JSON,
    Cancel,
    Count,
    Relate,
    Relation,
    Reset,
    Schedule,
    StateChange,
    directions,
    stamp,
)
from rulebot.rules.functions import StateView

#: `created` of an in-memory row given without one (eval's --relations, test cases).
EPOCH = "1970-01-01T00:00:00Z"


class RelationReader(Protocol):
    """The read side of a relationship store (rulebot.store.base implements it)."""

    def related(self, subject: str, obj: str, kind: str) -> bool: ...
    def objects(self, subject: str, kind: str) -> list[str]: ...
    def subjects(self, obj: str, kind: str) -> list[str]: ...
    def get(self, subject: str, obj: str, kind: str) -> Relation | None: ...
    def count_since(self, name: str, key: str, since: float) -> int: ...
    def timer_count(self, sender: str | None = None) -> int: ...


class TokenBuckets(Protocol):
    """Where rate limits take tokens: Buckets (one process), or the store's
    shared buckets (several workers: rulebot.daemon.shared.SharedBuckets)."""

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool: ...


class Buckets:
    """Token buckets per (limit name, key), on an injected clock; bounded in size.

    The daemon saves them to its store now and then and at exit, and restores
    them at start (export/restore), so a restart does not refill them; a
    kill -9 loses what was taken since the last save."""

    def __init__(self, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max = max_keys
        self._state: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._dirty: set[tuple[str, str]] = set()  # taken from since the last export

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        """Take one token; False when the bucket is empty."""
        now = self._clock()
        tokens, last = self._state.pop((name, key), (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * per_second)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._state[(name, key)] = (tokens, now)
        self._dirty.add((name, key))
        if len(self._state) > self._max:
            self._dirty.discard(self._state.popitem(last=False)[0])  # the least recently used
        return allowed

    def __len__(self) -> int:
        return len(self._state)

    def export(self) -> list[tuple[str, str, float, float]]:
        """(name, key, tokens, seconds since it was last used) of each bucket
        taken from since the last export (what a save must write)."""
        now = self._clock()
        dirty, self._dirty = self._dirty, set()
        state = self._state
        return [(name, key, state[(name, key)][0], max(0.0, now - state[(name, key)][1]))
                for name, key in dirty if (name, key) in state]

    def restore(self, rows: Iterable[tuple[str, str, float, float]]) -> None:
        """Buckets as export() gave them (their refill continues from there)."""
        now = self._clock()
        for name, key, tokens, age in rows:
            self._state[(name, key)] = (tokens, now - age)
            if len(self._state) > self._max:
                self._state.popitem(last=False)


class Presence(Protocol):
    """Who is online: PresenceTable (one process), or the store's shared table
    (several workers: rulebot.daemon.shared.SharedPresence)."""

    def update(self, full_jid: str, available: bool) -> None: ...
    def online(self, jid: str) -> bool: ...


class PresenceTable:
    """Which resources of which users are online, from the presence the bot received."""

    def __init__(self) -> None:
        self._resources: dict[str, set[str]] = {}

    def update(self, full_jid: str, available: bool) -> None:
        bare = norm_bare(full_jid)
        resource = full_jid.partition("/")[2]
        if available:
            self._resources.setdefault(bare, set()).add(resource)
            return
        resources = self._resources.get(bare)
        if resources is None:
            return
        resources.discard(resource)
        if not resource or not resources:
            self._resources.pop(bare, None)

    def online(self, jid: str) -> bool:
        resources = self._resources.get(norm_bare(jid))
        if not resources:
            return False
        resource = jid.partition("/")[2]
        return not resource or resource in resources

    def count(self) -> int:
        return len(self._resources)


class LiveState:
    """A StateView over a relationship store and the presence table."""

    def __init__(self, relations: RelationReader | None, presence: Presence,
                 buckets: TokenBuckets,
                 timer_limits: tuple[int, int] = (100, 100_000),
                 clock: Callable[[], float] | None = None) -> None:
        self._relations = relations
        self._presence = presence
        self._buckets = buckets
        #: (per sender, in total): what a schedule may not exceed
        self.timer_limits = timer_limits
        # The total is a count over the whole table: with `clock` (monotonic
        # seconds) it is read at most once a second.
        self._clock = clock
        self._total: tuple[float, int] | None = None

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        return self._buckets.take(name, key, per_second, burst)

    def related(self, subject: str, obj: str, kind: str) -> bool:
        return bool(self._relations and self._relations.related(norm_bare(subject), norm_bare(obj),
                                                                kind))

    def objects(self, subject: str, kind: str) -> list[str]:
        return self._relations.objects(norm_bare(subject), kind) if self._relations else []

    def subjects(self, obj: str, kind: str) -> list[str]:
        return self._relations.subjects(norm_bare(obj), kind) if self._relations else []

    def relation(self, subject: str, obj: str, kind: str) -> dict[str, JSON] | None:
        if not self._relations:
            return None
        found = self._relations.get(norm_bare(subject), norm_bare(obj), kind)
        if found is None:
            return None
        return {"kind": kind, "attrs": dict(found.attrs), "created": found.created,
                "expires": found.expires}

    def online(self, jid: str) -> bool:
        return self._presence.online(jid)

    def count(self, name: str, key: str, since: float) -> int:
        return self._relations.count_since(name, key, since) if self._relations else 0

    def timer_room(self, sender: str) -> str | None:
        """Why `sender` may schedule no more timers (a limit reached), or None."""
        if not self._relations:
            return None  # no store: the change itself is refused (Dispatcher)
        per_sender, total = self.timer_limits
        if self._relations.timer_count(sender) >= per_sender:
            return f"{sender} has {per_sender} timers (the limit per sender)"
        if self._timer_total() >= total:
            return f"the bot has {total} timers (the limit)"
        return None

    def _timer_total(self) -> int:
        assert self._relations is not None
        if self._clock is None:
            return self._relations.timer_count()
        now = self._clock()
        if self._total is None or now - self._total[0] >= 1.0:
            self._total = (now, self._relations.timer_count())
        return self._total[1]


class MemoryRelations:
    """An in-memory relationship store with the same read and apply semantics,
    expiry included, on the clock it is given (`rulebot test`: the case's)."""

    def __init__(self, rows: Iterable[Relation] = (),
                 clock: Callable[[], float] | None = None) -> None:
        self._rows: dict[tuple[str, str, str], Relation] = {}
        self.clock = clock
        #: (counter, key) -> [(at, n)], the counts made (rulebot test: on its clock)
        self.counts: dict[tuple[str, str], list[tuple[float, int]]] = {}
        #: key -> the timer scheduled (rulebot test)
        self.timers: dict[str, Schedule] = {}
        for row in rows:
            key = (norm_bare(row.subject), norm_bare(row.object), row.kind)
            self._rows[key] = Relation(*key, dict(row.attrs), row.created or EPOCH, row.expires)

    def _now(self) -> str:
        # Only stores write these times, so text order is time order.
        return stamp(self.clock()) if self.clock is not None else ""

    def _live(self, row: Relation | None) -> Relation | None:
        if row is None or row.expires is None or self.clock is None:
            return row
        return row if row.expires > self._now() else None

    def related(self, subject: str, obj: str, kind: str) -> bool:
        return self._live(self._rows.get((subject, obj, kind))) is not None

    def objects(self, subject: str, kind: str) -> list[str]:
        return sorted(o for (s, o, k), r in self._rows.items()
                      if s == subject and k == kind and self._live(r))

    def subjects(self, obj: str, kind: str) -> list[str]:
        return sorted(s for (s, o, k), r in self._rows.items()
                      if o == obj and k == kind and self._live(r))

    def get(self, subject: str, obj: str, kind: str) -> Relation | None:
        return self._live(self._rows.get((subject, obj, kind)))

    def relate(self, subject: str, obj: str, kind: str,
               attrs: Mapping[str, JSON] | None = None, expires: float | None = None) -> None:
        key = (norm_bare(subject), norm_bare(obj), kind)
        old = self._live(self._rows.get(key))
        created = old.created if old else (stamp(self.clock()) if self.clock else EPOCH)
        self._rows[key] = Relation(*key, dict(attrs or {}), created,
                                   None if expires is None else stamp(expires))

    def unrelate(self, subject: str, obj: str, kind: str) -> None:
        self._rows.pop((norm_bare(subject), norm_bare(obj), kind), None)

    def rows(self) -> list[Relation]:
        return [r for r in self._rows.values() if self._live(r)]

    def count_since(self, name: str, key: str, since: float) -> int:
        return sum(n for at, n in self.counts.get((name, key), ()) if at > since)

    def timer_count(self, sender: str | None = None) -> int:
        return sum(1 for t in self.timers.values() if sender is None or t.sender == sender)

    def apply(self, changes: Sequence[StateChange]) -> None:
        """Apply Relate/Unrelate (both directions when mutual) and Count/Reset actions."""
        for change in changes:
            if isinstance(change, Count):
                at = self.clock() if self.clock is not None else 0.0
                self.counts.setdefault((change.counter, change.key), []).append((at, change.by))
                continue
            if isinstance(change, Reset):
                self.counts.pop((change.counter, change.key), None)
                continue
            if isinstance(change, Schedule):
                self.timers[change.key] = change
                continue
            if isinstance(change, Cancel):
                self.timers.pop(change.key, None)
                continue
            for subject, obj in directions(change):
                if isinstance(change, Relate):
                    attrs = change.attrs if isinstance(change.attrs, dict) else {}
                    self.relate(subject, obj, change.kind, attrs, change.expires)
                else:
                    self.unrelate(subject, obj, change.kind)


class PeekState:
    """A view that reads like `inner` but never takes rate-limit tokens (for traces)."""

    def __init__(self, inner: StateView) -> None:
        self._inner = inner

    def related(self, subject: str, obj: str, kind: str) -> bool:
        return self._inner.related(subject, obj, kind)

    def objects(self, subject: str, kind: str) -> list[str]:
        return self._inner.objects(subject, kind)

    def subjects(self, obj: str, kind: str) -> list[str]:
        return self._inner.subjects(obj, kind)

    def relation(self, subject: str, obj: str, kind: str) -> dict[str, JSON] | None:
        return self._inner.relation(subject, obj, kind)

    def online(self, jid: str) -> bool:
        return self._inner.online(jid)

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        return True

    def count(self, name: str, key: str, since: float) -> int:
        return self._inner.count(name, key, since)

    def timer_room(self, sender: str) -> str | None:
        return self._inner.timer_room(sender)


class ShadowState(PeekState):
    """What a shadow rule set decides with: the live state's reads, and rate
    limits of its own (its takes must not spend the live set's tokens)."""

    def __init__(self, inner: StateView, clock: Callable[[], float]) -> None:
        super().__init__(inner)
        self._buckets = Buckets(clock)

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        return self._buckets.take(name, key, per_second, burst)
