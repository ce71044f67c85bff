"""Presence that workers share through the store (SharedPresence) answers
like the table one process keeps (PresenceTable), over random sequences of
presence updates. The shared rate-limit buckets are tested with the store
(tests/unit/store/test_store.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rulebot.daemon.shared import SharedPresence
from rulebot.engine.state import PresenceTable
from rulebot.store.open import open_store

USERS = ["alice@x", "Bob@x"]
RESOURCES = ["", "phone", "desk"]
updates = st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(RESOURCES), st.booleans()),
                   max_size=12)


@settings(max_examples=60, deadline=None)
@given(sequence=updates)
def test_shared_presence_answers_like_the_presence_table(
        sequence: list[tuple[str, str, bool]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = open_store(str(Path(d) / "s.sqlite3"))
        try:
            shared, table = SharedPresence(store), PresenceTable()
            for user, resource, available in sequence:
                jid = f"{user}/{resource}" if resource else user
                if available and not resource:
                    continue  # an available presence always has a resource
                shared.update(jid, available)
                table.update(jid, available)
            for user in USERS:
                for resource in RESOURCES:
                    jid = f"{user}/{resource}" if resource else user
                    assert shared.online(jid) == table.online(jid), (jid, sequence)
        finally:
            store.close()
