"""Idempotency records (rulebot/daemon/ledger.py): an event delivered again gets its
recorded messages, with the same ids, instead of a second decision; records
are stored with the relation changes of their decision, and before any
message of their read leaves the daemon.

The dispatcher and the ledger run over a real SQLite store; the daemon's
path from stanza bytes to socket writes runs over a recording transport (no
network: the kill -9 runs against real servers are tests/integration/test_crash.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recording_transport import RecordingTransport

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import EventKey, Inbound, Meta, Outbound, Recorded, event_key
from rulebot.config import parse_config
from rulebot.daemon.app import Daemon
from rulebot.daemon.batches import decode_batch, encode
from rulebot.daemon.ledger import Ledger
from rulebot.rules.loader import load_rules
from rulebot.store.base import RelationStore, StoreError
from rulebot.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[3]
FRIENDS = load_rules(ROOT / "rules" / "friends")
SERVICE = load_rules(ROOT / "rules")


def request(eid: str | int | None = "r1", sid: str | None = "s1",
            sender: str = "alice@localhost/phone", to: str = "bob@localhost") -> Inbound:
    event: dict[str, Any] = {"type": "friend-request", "to": to}
    if eid is not None:
        event["id"] = eid
    return Inbound("message", sender, "chat", sid, json.dumps(event))


def accept(eid: str = "a1", sid: str = "s2") -> Inbound:
    return Inbound("message", "bob@localhost/pc", "chat", sid,
                   json.dumps({"type": "friend-accept", "to": "alice@localhost", "id": eid}))


def friends_dispatcher(store: RelationStore, ledger: Ledger | None = None) -> Dispatcher:
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": "rules/friends"}),
                          base=ROOT)
    ledger = ledger if ledger is not None else Ledger(store, 30, 3600)
    return Dispatcher(config, lambda: FRIENDS, relations=store, records=ledger)


def deliver(d: Dispatcher, inbound: Inbound) -> tuple[str, tuple[Outbound, ...]]:
    """What the daemon sends for one stanza in a read of its own (decided, then
    the read's records written)."""
    outcome = d.handle(inbound)
    assert isinstance(d.records, Ledger)
    assert d.records.flush().failed == frozenset()
    return outcome.status, outcome.outbound


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(str(tmp_path / "store.sqlite3"))
    yield s
    s.close()


# --------------------------------------------------------------------------
# keys


def test_an_event_is_known_by_its_own_id_for_its_sender_whatever_the_resource() -> None:
    assert event_key("Alice@localhost", "Alice@localhost/phone", "e1", "s1") == event_key(
        "alice@localhost", "alice@localhost/laptop", "e1", "s9") == EventKey(
        "alice@localhost", "e:e1")
    # an integer id is not its decimal text
    assert event_key("a@localhost", "a@localhost/p", 17, "s1") == EventKey("a@localhost", "n:17")
    assert event_key("a@localhost", "a@localhost/p", "17", "s1") == EventKey("a@localhost",
                                                                             "e:17")


def test_without_an_event_id_the_stanza_id_identifies_it_for_that_full_jid() -> None:
    assert event_key("alice@localhost", "alice@localhost/phone", None, "s1") == EventKey(
        "alice@localhost/phone", "s:s1")
    assert event_key("alice@localhost", "alice@localhost/phone", None, None) is None
    assert event_key("alice@localhost", "alice@localhost/phone", None, "") is None


# --------------------------------------------------------------------------
# records as text


OUT = Outbound("bob@localhost", {"type": "chat", "text": "hi"}, "body", "chat", "rb-1",
               Meta("alice@localhost", "chat-friends", "v1", "e1", "s1"))

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


@given(payloads=st.lists(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
                         max_size=4),
       rule=st.none() | st.text(max_size=10), eid=st.none() | st.text(max_size=10),
       sid=st.none() | st.text(max_size=10))
@settings(max_examples=200, deadline=None)
def test_a_record_decodes_to_what_was_encoded(payloads: list[dict[str, Any]], rule: str | None,
                                             eid: str | None, sid: str | None) -> None:
    meta = Meta("alice@localhost", rule, "v9", eid, sid)
    out = tuple(Outbound(f"u{n}@localhost", p, "json" if n % 2 else "body", "chat", f"rb-{n}",
                         meta) for n, p in enumerate(payloads))
    recorded = Recorded("v9", ("a", "b"), out)
    key = EventKey("alice@localhost", "e:x")
    assert decode_batch(encode([(key, 7, recorded)])) == [(key, 7, recorded)]


def test_a_broadcast_payload_is_written_once() -> None:
    payload = {"type": "presence", "text": "x" * 100}
    out = tuple(Outbound(f"u{n}@localhost", payload, "body", "chat", f"rb-{n}",
                         Meta("a@localhost", "r", "v", None, "s")) for n in range(50))
    text = encode([(EventKey("a@localhost", "s:s"), 0, Recorded("v", ("r",), out))])
    assert text.count("x" * 100) == 1
    ((_, _, back),) = decode_batch(text)
    assert [o.to for o in back.outbound] == [f"u{n}@localhost" for n in range(50)]


# --------------------------------------------------------------------------
# the dispatcher with records


def test_an_event_delivered_again_gets_its_recorded_messages_not_a_second_decision(
    store: RelationStore,
) -> None:
    d = friends_dispatcher(store)
    _status, first = deliver(d, request())
    assert [o.payload["type"] for o in first] == ["friend-request", "friend-request-sent"]
    assert deliver(d, accept())[0] == "decided"  # a second request: "already-friends"
    assert deliver(d, request()) == ("duplicate", first)  # same messages, same ids
    # Its own relation change (requested) was not made again either.
    assert not store.related("alice@localhost", "bob@localhost", "requested")


def test_records_survive_the_process(store: RelationStore, tmp_path: Path) -> None:
    _, first = deliver(friends_dispatcher(store), request())
    status, accepted = deliver(friends_dispatcher(store), accept())
    assert status == "decided"
    # A new process: a new ledger over the same database.
    with SqliteStore(str(tmp_path / "store.sqlite3")) as reopened:
        ledger = Ledger(reopened, 30, 3600)
        assert ledger.load() == 2  # read back at start: nothing was acknowledged
        d = friends_dispatcher(reopened, ledger)
        assert deliver(d, request()) == ("duplicate", first)
        assert deliver(d, accept()) == ("duplicate", accepted)


def test_a_resend_from_another_resource_with_the_same_event_id_is_the_same_event(
    store: RelationStore,
) -> None:
    d = friends_dispatcher(store)
    _, first = deliver(d, request(sid="s1", sender="alice@localhost/phone"))
    assert deliver(d, request(sid="other", sender="alice@localhost/laptop")) == (
        "duplicate", first)


def test_the_record_and_the_relation_changes_commit_together(store: RelationStore) -> None:
    ledger = Ledger(store, 30, 3600)
    d = friends_dispatcher(store, ledger)
    d.handle(request())
    assert store.related("alice@localhost", "bob@localhost", "requested")
    assert store.count_record_batches() == 1  # written with the change, not at the flush
    assert ledger.pending_count == 0


def test_a_decision_without_changes_is_recorded_at_the_flush(store: RelationStore) -> None:
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": "rules"}), base=ROOT)
    ledger = Ledger(store, 30, 3600)
    d = Dispatcher(config, lambda: SERVICE, relations=store, records=ledger)
    chat = Inbound("message", "alice@localhost/p", "chat", "s1",
                   json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi", "id": 7}))
    first = d.handle(chat)
    assert first.status == "decided"
    assert ledger.pending_count == 1
    assert store.count_record_batches() == 0
    again = d.handle(chat)  # twice in one read: known while pending
    assert (again.status, again.outbound) == ("duplicate", first.outbound)
    assert ledger.flush().failed == frozenset()
    assert ledger.pending_count == 0
    assert store.count_record_batches() == 1
    third = d.handle(chat)  # after the flush: read back from the store
    assert (third.status, third.outbound) == ("duplicate", first.outbound)


def test_presence_is_never_recorded(store: RelationStore) -> None:
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": "rules"}), base=ROOT)
    ledger = Ledger(store, 30, 3600)
    d = Dispatcher(config, lambda: SERVICE, relations=store, records=ledger)
    pres = Inbound("presence", "carol@localhost/x", "available", "p1")
    assert d.handle(pres).status == "decided"
    assert d.handle(pres).status == "decided"  # decided again: presence is state
    assert ledger.pending_count == 0


class BrokenStore(SqliteStore):
    """A store whose writes fail (what a full disk does)."""

    fail = False

    def _write(self, *args: Any, **kw: Any) -> Any:
        if self.fail:
            raise StoreError("disk full (injected)")
        return super()._write(*args, **kw)


def test_a_failing_store_refuses_the_change_and_keeps_nothing(tmp_path: Path) -> None:
    store = BrokenStore(str(tmp_path / "s.sqlite3"))
    store.fail = True
    d = friends_dispatcher(store)
    outcome = d.handle(request())
    assert (outcome.status, outcome.reason) == ("failed", "store-unavailable")
    (reply,) = outcome.outbound
    assert reply.to == "alice@localhost/phone"
    assert reply.payload["error"] == {"code": "store-unavailable",
                                      "message": "the bot could not record this change; try again",
                                      "id": "r1"}
    store.fail = False
    assert d.handle(request()).status == "decided"  # not a duplicate: nothing was kept


def test_a_flush_that_fails_names_every_pending_record_and_keeps_none(tmp_path: Path) -> None:
    store = BrokenStore(str(tmp_path / "s.sqlite3"))
    ledger = Ledger(store, 30, 3600)
    key = EventKey("alice@localhost", "e:1")
    ledger.add(key, Recorded("v", (), (OUT,)))
    store.fail = True
    assert ledger.flush().failed == frozenset({key})
    assert ledger.pending_count == 0
    store.fail = False
    assert ledger.recall(key) is None  # refused: not kept


# --------------------------------------------------------------------------
# what is kept: unacknowledged records until the retention, the rest for the window


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def record(ledger: Ledger, key: str, position: tuple[str, int] | None) -> EventKey:
    ledger.position = lambda: position
    k = EventKey("a@localhost", key)
    ledger.add(k, Recorded("v", (), (OUT,)))
    ledger.flush()
    return k


def test_an_unacknowledged_record_outlives_the_window_and_goes_once_acknowledged(
    store: RelationStore,
) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    k = record(ledger, "e:1", ("sm-1", 5))
    clock.now += 60
    ledger.evict()
    assert ledger.recall(k) is not None  # in flight: a resumed stream may bring it again
    ledger.confirm("sm-1", 4)
    ledger.evict()
    assert ledger.recall(k) is not None  # position 5 is not acknowledged yet
    ledger.confirm("sm-1", 5)
    ledger.evict()
    assert ledger.recall(k) is None
    assert ledger.size() == 0


def test_a_record_outside_stream_management_is_kept_for_the_window(store: RelationStore
                                                                   ) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    k = record(ledger, "e:1", None)
    clock.now += 29
    ledger.evict()
    assert ledger.recall(k) is not None  # a resend within the window
    clock.now += 2
    ledger.evict()
    assert ledger.recall(k) is None


def test_an_acknowledged_record_is_kept_for_the_window_too(store: RelationStore) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    k = record(ledger, "e:1", ("sm-1", 5))
    ledger.confirm("sm-1", 5)
    ledger.evict()
    assert ledger.recall(k) is not None
    clock.now += 31
    ledger.evict()
    assert ledger.recall(k) is None


def test_nothing_is_kept_past_the_retention(store: RelationStore) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    k = record(ledger, "e:1", ("sm-1", 5))
    clock.now += 3601
    ledger.evict()
    assert ledger.recall(k) is None


def test_a_new_process_reads_back_what_was_not_acknowledged(store: RelationStore,
                                                            tmp_path: Path) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    acked = record(ledger, "e:acked", ("sm-1", 5))
    in_flight = record(ledger, "e:in-flight", ("sm-1", 6))
    ledger.confirm("sm-1", 5)
    ledger.flush()  # the mark goes to the store with the next write
    clock.now += 60
    with SqliteStore(str(tmp_path / "store.sqlite3")) as reopened:
        again = Ledger(reopened, 30, 3600, clock)
        assert again.load() == 1  # the batch holding the in-flight record
        assert again.recall(in_flight) is not None
        assert again.recall(acked) is None  # acknowledged and older than the window
        again.evict()
        assert again.recall(in_flight) is not None


def test_purge_deletes_from_the_store_what_nothing_can_need(store: RelationStore) -> None:
    clock = Clock()
    ledger = Ledger(store, 30, 3600, clock)
    record(ledger, "e:1", ("sm-1", 5))
    record(ledger, "e:2", ("sm-1", 6))
    ledger.confirm("sm-1", 5)
    ledger.flush()
    clock.now += 60
    assert ledger.purge() == 1
    assert store.count_record_batches() == 1


def test_the_resumed_stream_settles_what_the_resume_acknowledged(tmp_path: Path) -> None:
    # xmpp_sm reports the h of <resume/> as confirmed: the server dropped those.
    from rulebot.xmpp.sm import persist_sm

    class FakeXmpp:
        def __init__(self) -> None:
            self.handlers: dict[str, Any] = {}
            self.plugin = {"xep_0198": FakeSm()}

        def add_filter(self, *_a: Any) -> None: ...
        def register_handler(self, *_a: Any) -> None: ...

        def add_event_handler(self, name: str, fn: Any) -> None:
            self.handlers[name] = fn

    class FakeSm:
        sm_id = None
        handled = 0
        unacked_queue: tuple[Any, ...] = ()
        last_ack = 0
        seq = 0

    state = tmp_path / "sm.json"
    state.write_text(json.dumps({"sm_id": "sm-9", "handled": 42}))
    seen: list[tuple[str, int]] = []
    x = FakeXmpp()
    persist_sm(x, str(state), lambda s, h: seen.append((s, h)))
    x.handlers["session_resumed"](None)
    assert seen == [("sm-9", 42)]


# --------------------------------------------------------------------------
# the daemon: stanza bytes in, socket writes out


HEADER = (b"<stream:stream xmlns='jabber:component:accept' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='friend.localhost'>")


def daemon(tmp_path: Path, store: RelationStore) -> tuple[Daemon, RecordingTransport]:
    """A component-mode daemon over `store`, where alice and bob are friends: their
    chats are forwards, decisions without changes (recorded at the read's end)."""
    store.relate("alice@localhost", "bob@localhost", "friend")
    store.relate("bob@localhost", "alice@localhost", "friend")
    config = parse_config(json.dumps({
        "jid": "friend.localhost", "mode": "component", "rules": str(ROOT / "rules/friends"),
        "server": {"host": "127.0.0.1", "port": 5347}}), base=tmp_path)
    d = Daemon(config, "secret", FRIENDS, store)
    transport = RecordingTransport()
    x = d.connection.xmpp
    x.connection_made(transport)
    x.data_received(HEADER)
    d.connection._on_session(None)  # the session is up (what <handshake/> leads to)
    transport.writes.clear()
    return d, transport


def stanza(sender: str, sid: str, event: dict[str, Any]) -> bytes:
    body = json.dumps(event).replace("&", "&amp;").replace("<", "&lt;")
    return (f"<message to='friend.localhost' from='{sender}' type='chat' id='{sid}'>"
            f"<body>{body}</body></message>").encode()


def chats(n: int, start: int = 0) -> bytes:
    return b"".join(stanza("alice@localhost/p", f"c{i}", {"type": "chat", "id": f"c{i}",
                                                          "to": "bob@localhost", "text": "x"})
                    for i in range(start, start + n))


def written_ids(transport: RecordingTransport) -> list[str]:
    return re.findall(r'<message to="[^"]*" type="chat" id="(rb-[^"]+)"',
                      b"".join(transport.writes).decode())


def test_a_read_s_messages_leave_after_its_records_are_stored(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    d, transport = daemon(tmp_path, store)
    writes_at_commit: list[int] = []
    commit = store.commit

    def spy(*args: Any, **kw: Any) -> Any:
        writes_at_commit.append(len(transport.writes))
        return commit(*args, **kw)

    store.commit = spy  # type: ignore[method-assign]
    d.connection.xmpp.data_received(chats(30))
    assert writes_at_commit == [0]  # one commit for the whole read, before any write
    assert len(written_ids(transport)) == 30  # the forwards to bob
    assert store.count_record_batches() == 1  # one batch for the read
    store.close()


def test_a_redelivered_read_sends_the_same_messages_and_decides_nothing(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    d, transport = daemon(tmp_path, store)
    d.connection.xmpp.data_received(chats(10))
    first = written_ids(transport)
    transport.writes.clear()
    d.connection.xmpp.data_received(chats(10))  # what a resumed stream re-sends
    assert written_ids(transport) == first
    assert store.count_record_batches() == 1
    store.close()


def test_when_the_records_cannot_be_stored_the_read_s_events_are_refused(tmp_path: Path
                                                                         ) -> None:
    store = BrokenStore(str(tmp_path / "s.sqlite3"))
    d, transport = daemon(tmp_path, store)
    store.fail = True
    d.connection.xmpp.data_received(chats(3))
    text = b"".join(transport.writes).decode()
    assert text.count("store-unavailable") == 3
    assert text.count('to="alice@localhost/p"') == 3  # each to its sender
    assert 'to="bob@localhost"' not in text  # nothing to bob
    store.fail = False
    transport.writes.clear()
    d.connection.xmpp.data_received(chats(3))  # sent again: decided now, not duplicates
    assert "store-unavailable" not in b"".join(transport.writes).decode()
    assert store.count_record_batches() == 1
    store.close()


def test_a_strike_delivered_again_is_counted_once_with_its_record(store: RelationStore) -> None:
    # chat-strangers counts a strike: a count is a change, stored in the same
    # transaction as the decision's record, so a re-delivery finds the record
    # and counts nothing again.
    d = friends_dispatcher(store)
    chat = Inbound("message", "alice@localhost/phone", "chat", "s1",
                   json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi", "id": "c1"}))
    first = deliver(d, chat)
    assert first[0] == "decided"
    assert store.count_since("strikes", "alice@localhost", 0) == 1
    again = deliver(d, chat)
    assert again == ("duplicate", first[1])
    assert store.count_since("strikes", "alice@localhost", 0) == 1
    for n in (2, 3):  # two more strikes: the third refused chat starts a timeout
        deliver(d, Inbound("message", "alice@localhost/phone", "chat", f"s{n}",
                           json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi",
                                       "id": f"c{n}"})))
    assert store.related("alice@localhost", "friend@localhost", "timeout")
    assert store.count_since("strikes", "alice@localhost", 0) == 0  # reset by the third
