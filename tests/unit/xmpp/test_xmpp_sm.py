"""Stream-management bookkeeping of the messages the bot writes itself
(xmpp.outbox.Outbox.write): each is numbered and kept for re-sending exactly
as slixmpp's own send filter would, and an ack request follows every
SM_WINDOW of them.

Drives the real BotConnection in client mode over a recording transport with
stream management marked enabled, as after <enabled/> (no network: the live
paths, resumption and kill -9 included, are in tests/integration)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from recording_transport import RecordingTransport
from slixmpp.plugins.xep_0198.stream_management import MAX_SEQ

from rulebot.bot.values import Inbound, Meta, Outbound
from rulebot.config import parse_config
from rulebot.xmpp.connection import SM_WINDOW, BotConnection

HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost'>")


def client_bot(tmp_path: Path) -> tuple[BotConnection, RecordingTransport]:
    """A client-mode bot answering every inbound message with one message."""
    config = parse_config("jid: friend@localhost\nserver: {host: 127.0.0.1}\nrules: rules\n"
                          f"sm_state_file: {tmp_path / 'sm.json'}\n")
    conn: BotConnection

    def on_inbound(inbound: Inbound) -> None:
        conn.send(Outbound("bob@localhost", {"re": inbound.id}, "body", "chat",
                           f"rb-{inbound.id}", Meta("alice@localhost", "r", "v1", None)))

    conn = BotConnection(config, "secret", on_inbound)
    transport = RecordingTransport()
    conn.xmpp.connection_made(transport)
    conn.xmpp.data_received(HEADER)
    sm = conn.xmpp.plugin["xep_0198"]
    sm.enabled_in = sm.enabled_out = True  # what <enable/> and <enabled/> set
    sm.sm_id = "sm-1"
    conn.xmpp.sessionstarted = True
    conn.xmpp.event("session_start")  # bound: not online yet (XEP-0198 first)
    conn.xmpp.event("stream_negotiated")  # after <enabled/>: online
    return conn, transport


def messages(ids: range) -> bytes:
    body = json.dumps({"type": "chat"})
    return "".join(f"<message to='friend@localhost' from='alice@localhost/x' type='chat' "
                   f"id='m{i}'><body>{body}</body></message>" for i in ids).encode()


async def test_messages_the_bot_writes_are_numbered_kept_and_followed_by_ack_requests(
    tmp_path: Path,
) -> None:
    conn, transport = client_bot(tmp_path)
    sm = conn.xmpp.plugin["xep_0198"]
    start = sm.seq  # 0: the initial presence is still in slixmpp's send queue
    kept_before = len(sm.unacked_queue)
    n = SM_WINDOW * 2 + 7
    written = len(transport.writes)
    conn.xmpp.data_received(messages(range(n)))

    assert sm.seq == (start + n) % MAX_SEQ
    assert sm.handled == n  # slixmpp's inbound count, for our acks
    kept = list(sm.unacked_queue)[kept_before:]
    assert [seq for seq, _ in kept] == [start + k + 1 for k in range(n)]
    assert [re.search(r'id="(rb-m\d+)"', text).group(1) for _, text in kept] == [  # type: ignore[union-attr]
        f"rb-m{k}" for k in range(n)]
    # The requests sit in the stream after the messages they follow.
    stream = b"".join(transport.writes[written:]).decode()
    pieces = re.findall(r'<message [^>]*id="(rb-m\d+)"|(<r xmlns="urn:xmpp:sm:3"\s*/>)', stream)
    order = [m or "r" for m, _ in pieces]
    expected: list[str] = []
    for k in range(n):
        expected.append(f"rb-m{k}")
        if (start + k + 1) % SM_WINDOW == 0:
            expected.append("r")  # after the stanza that completes the window
    assert order == expected
    assert order.count("r") == 2


# --------------------------------------------------------------------------
# the order of stream management and presence at login


async def written_until(transport: RecordingTransport, pattern: str, timeout: float = 2.0
                        ) -> str:
    """Everything written so far, once it matches `pattern` (slixmpp's send queue
    runs as a task)."""
    for _ in range(int(timeout / 0.01)):
        text = b"".join(transport.writes).decode()
        if re.search(pattern, text):
            return text
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pattern!r} never written: {b''.join(transport.writes)!r}")


async def test_presence_goes_out_only_after_stream_management_is_enabled(
    tmp_path: Path,
) -> None:
    # The presence makes the server hand over the bot's offline storage: sent
    # before <enable/>, those events would be outside stream management, and a
    # kill while the bot worked through them would lose the rest.
    config = parse_config("jid: friend@localhost\nserver: {host: 127.0.0.1}\nrules: rules\n"
                          f"sm_state_file: {tmp_path / 'sm.json'}\n")
    conn = BotConnection(config, "secret", lambda _inbound: None)
    transport = RecordingTransport()
    conn.xmpp.connection_made(transport)
    conn.xmpp._run_out_filters = asyncio.ensure_future(conn.xmpp.run_filters())
    try:
        conn.xmpp.data_received(HEADER)
        conn.xmpp.data_received(
            b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
            b"<sm xmlns='urn:xmpp:sm:3'/></stream:features>")
        text = await written_until(transport, r"<iq [^>]*id=\"([^\"]+)\"[^>]*>\s*<bind")
        bind_id = re.search(r"<iq [^>]*id=\"([^\"]+)\"", text).group(1)  # type: ignore[union-attr]
        conn.xmpp.data_received(
            f"<iq type='result' id='{bind_id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            "<jid>friend@localhost/rulebot</jid></bind></iq>".encode())
        text = await written_until(transport, r"<enable ")
        await asyncio.sleep(0.05)
        assert "<presence" not in b"".join(transport.writes).decode()  # bound, not online
        assert not conn.online
        conn.xmpp.data_received(b"<enabled xmlns='urn:xmpp:sm:3' id='sm-9' resume='true'/>")
        text = await written_until(transport, r"<presence")
        assert text.index("<enable ") < text.index("<presence")
        assert conn.online
        # The session was saved before the presence brought anything in.
        assert json.loads((tmp_path / "sm.json").read_text()) == {"sm_id": "sm-9", "handled": 0}
    finally:
        conn.xmpp._run_out_filters.cancel()
        await asyncio.gather(conn.xmpp._run_out_filters, return_exceptions=True)


# --------------------------------------------------------------------------
# a resumed stream must answer


def resumed_bot(tmp_path: Path) -> tuple[BotConnection, RecordingTransport]:
    conn, transport = client_bot(tmp_path)
    assert conn.resume is not None
    conn.resume.seconds = 0.05
    transport.writes.clear()
    conn.online = False
    conn.xmpp.data_received(b"<resumed xmlns='urn:xmpp:sm:3' h='0' previd='sm-1'/>")
    assert conn.online
    return conn, transport


async def test_a_resumed_stream_is_asked_for_an_ack_at_once(tmp_path: Path) -> None:
    conn, transport = resumed_bot(tmp_path)
    assert re.search(r'<r xmlns="urn:xmpp:sm:3"\s*/>', b"".join(transport.writes).decode())
    assert "<presence" not in b"".join(transport.writes).decode()  # a resumed session keeps it
    conn.xmpp.data_received(b"<a xmlns='urn:xmpp:sm:3' h='0'/>")
    await asyncio.sleep(0.15)
    assert not transport.closed
    assert conn.xmpp.plugin["xep_0198"].sm_id == "sm-1"


async def test_a_resumed_stream_that_answers_nothing_is_given_up_for_a_new_session(
    tmp_path: Path,
) -> None:
    conn, transport = resumed_bot(tmp_path)
    (tmp_path / "sm.json").write_text(json.dumps({"sm_id": "sm-1", "handled": 0}))
    await asyncio.sleep(0.15)
    assert transport.closed  # aborted: the run loop reconnects
    sm = conn.xmpp.plugin["xep_0198"]
    assert sm.sm_id is None  # and logs in afresh instead of resuming again
    assert not (tmp_path / "sm.json").exists()


async def test_after_a_resume_the_saved_count_moves_on_as_the_server_acknowledges(
    tmp_path: Path,
) -> None:
    # An operator saw the saved count stay where the resume started, so the
    # next resume re-delivered the same stanzas again. (The cause was
    # Prosody's deaf resumed stream, above: with a stream that answers, the
    # count must move on.)
    state = tmp_path / "sm.json"
    state.write_text(json.dumps({"sm_id": "sm-1", "handled": 100}))
    config = parse_config("jid: friend@localhost\nserver: {host: 127.0.0.1}\nrules: rules\n"
                          f"sm_state_file: {state}\n")
    confirmed: list[tuple[str, int]] = []
    conn: BotConnection

    def on_inbound(inbound: Inbound) -> None:
        conn.send(Outbound("bob@localhost", {"re": inbound.id}, "body", "chat",
                           f"rb-{inbound.id}", Meta("alice@localhost", "r", "v1", None)))

    conn = BotConnection(config, "secret", on_inbound,
                         on_confirmed=lambda s, h: confirmed.append((s, h)))
    transport = RecordingTransport()
    conn.xmpp.connection_made(transport)
    conn.xmpp._run_out_filters = asyncio.ensure_future(conn.xmpp.run_filters())
    try:
        conn.xmpp.data_received(HEADER)
        sm = conn.xmpp.plugin["xep_0198"]
        sm.enabled_out = True  # what writing <resume/> sets
        conn.xmpp.data_received(b"<resumed xmlns='urn:xmpp:sm:3' h='0' previd='sm-1'/>")
        assert confirmed == [("sm-1", 100)]  # what the resume acknowledged is settled
        conn.xmpp.data_received(messages(range(10)))  # stanzas 101..110, answered
        assert sm.handled == 110
        conn.xmpp.data_received(b"<r xmlns='urn:xmpp:sm:3'/>")
        await written_until(transport, r"<a xmlns=\"urn:xmpp:sm:3\" h=\"100\"")
        assert json.loads(state.read_text())["handled"] == 100  # answers not yet acknowledged
        conn.xmpp.data_received(b"<a xmlns='urn:xmpp:sm:3' h='10'/>")  # they are now
        await written_until(transport, r"<a xmlns=\"urn:xmpp:sm:3\" h=\"110\"")
        assert json.loads(state.read_text())["handled"] == 110
        conn.send(Outbound("bob@localhost", {"n": 1}, "body", "chat", "rb-x",
                           Meta("alice@localhost", "r", "v1", None)))
        conn.xmpp.data_received(b"<a xmlns='urn:xmpp:sm:3' h='11'/>")
        assert confirmed[-1] == ("sm-1", 110)  # the server handled a stanza after our ack
    finally:
        conn.xmpp._run_out_filters.cancel()
        await asyncio.gather(conn.xmpp._run_out_filters, return_exceptions=True)
