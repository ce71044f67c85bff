"""The state several workers share, read and written through the store
(rulebot.store.shared): what the dispatcher's rate limits and presence use
when workers > 1, in place of the in-memory engine.state.Buckets and
PresenceTable."""

from __future__ import annotations

import time

from rulebot.jid import norm_bare
from rulebot.store.base import RelationStore


class SharedBuckets:
    """Rate-limit buckets in the store, shared by the workers that use it."""

    def __init__(self, store: RelationStore) -> None:
        self.store = store

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        return self.store.take_token(name, key, per_second, burst, time.time())


class SharedPresence:
    """Who is online, in the store, for workers that each see only the presence
    the server hands to them."""

    def __init__(self, store: RelationStore) -> None:
        self.store = store

    def update(self, full_jid: str, available: bool) -> None:
        bare, _, resource = full_jid.partition("/")
        self.store.presence_update(norm_bare(bare), resource, available, time.time())

    def online(self, jid: str) -> bool:
        bare, _, resource = jid.partition("/")
        return self.store.presence_online(norm_bare(bare), resource)
