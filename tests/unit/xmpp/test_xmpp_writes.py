"""The messages produced while one read is handled leave in one transport
write, in order; outside a session, and around abort(), writes are as before.
Messages go straight to the bot's handler; other stanzas take slixmpp's path.

Drives the real BotConnection (component mode) and its slixmpp stream with
bytes as a server would send them; the transport records what is written
(no network: the live paths are in tests/integration)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from typing import Any

import pytest
from recording_transport import RecordingTransport

from rulebot.bot.values import Inbound, Meta, Outbound
from rulebot.config import parse_config
from rulebot.xmpp.connection import BotConnection
from rulebot.xmpp.writes import TLS_RECORD, record_chunks

HEADER = (b"<stream:stream xmlns='jabber:component:accept' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='friend.localhost'>")


def echo_bot() -> tuple[BotConnection, RecordingTransport]:
    """A bot whose every inbound message makes two outbound ones (like a
    two-recipient broadcast), over a recording transport, session not yet up."""
    config = parse_config("jid: friend.localhost\nmode: component\n"
                          "server: {host: 127.0.0.1, port: 5347}\nrules: rules\n")
    conn: BotConnection

    def on_inbound(inbound: Inbound) -> None:
        for n in (1, 2):
            conn.send(Outbound(f"bob{n}@localhost", {"re": inbound.id}, "body", "chat",
                               f"rb-{inbound.id}-{n}", Meta("alice@localhost", "r", "v1", None)))

    conn = BotConnection(config, "secret", on_inbound)
    transport = RecordingTransport()
    conn.xmpp.connection_made(transport)
    conn.xmpp.data_received(HEADER)
    return conn, transport


def messages(ids: range) -> bytes:
    body = json.dumps({"type": "chat"})
    return "".join(f"<message to='friend.localhost' from='alice@localhost/x' type='chat' "
                   f"id='m{i}'><body>{body}</body></message>" for i in ids).encode()


def sent_ids(writes: list[bytes]) -> list[str]:
    return re.findall(r'id="(rb-[^"]+)"', b"".join(writes).decode())


async def session_up(conn: BotConnection, transport: RecordingTransport) -> None:
    conn.xmpp.data_received(b"<handshake/>")
    await asyncio.sleep(0)  # slixmpp runs session_start handlers as tasks
    for _ in range(10):
        if conn.online:
            break
        await asyncio.sleep(0.01)
    assert conn.online
    transport.writes.clear()


async def test_the_answers_to_one_read_leave_in_one_write_in_order() -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    conn.xmpp.data_received(messages(range(40)))
    assert len(transport.writes) == 1
    assert sent_ids(transport.writes) == [f"rb-m{i}-{n}" for i in range(40) for n in (1, 2)]
    assert (conn.writes.writes, conn.writes.stanzas) == (1, 80)
    conn.xmpp.data_received(messages(range(40, 43)))
    assert len(transport.writes) == 2  # one more read, one more write
    assert sent_ids(transport.writes[1:]) == [f"rb-m{i}-{n}" for i in range(40, 43) for n in (1, 2)]


async def test_a_large_read_s_answers_leave_as_whole_stanzas_of_at_most_one_tls_record(
) -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    conn.xmpp.data_received(messages(range(400)))  # 800 messages, ~150 KB
    assert len(transport.writes) == 1  # still one socket write
    assert len(transport.records) > 1
    assert all(len(r) <= TLS_RECORD for r in transport.records)
    for record in transport.records:  # each ends where a stanza ends
        text = record.decode()
        assert text.startswith("<message ")
        assert text.endswith("</message>")
        assert text.count("<message ") == text.count("</message>")
    assert sent_ids(transport.records) == [f"rb-m{i}-{n}" for i in range(400) for n in (1, 2)]


def test_record_chunks_keep_order_and_put_a_large_piece_alone() -> None:
    pieces = [b"a" * 10, b"b" * 10, b"c" * 30, b"d" * 5, b"e" * 6]
    assert record_chunks(pieces, limit=20) == [b"a" * 10 + b"b" * 10, b"c" * 30,
                                               b"d" * 5 + b"e" * 6]
    assert record_chunks([b"x"], limit=20) == [b"x"]
    assert record_chunks([], limit=20) == []


async def test_a_send_outside_a_read_is_written_at_once() -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    conn.send(Outbound("carol@localhost", {"n": 1}, "body", "chat", "rb-timer",
                       Meta("alice@localhost", "r", "v1", None)))
    assert sent_ids(transport.writes) == ["rb-timer"]


async def test_before_the_session_every_send_is_its_own_write() -> None:
    # Stream negotiation (STARTTLS, SASL, restarts) keeps slixmpp's writes.
    conn, transport = echo_bot()
    assert not conn.writes.active
    transport.writes.clear()
    conn.xmpp.send_raw("<a/>")
    conn.xmpp.send_raw("<b/>")
    assert transport.writes == [b"<a/>", b"<b/>"]


async def test_abort_while_a_read_is_handled_writes_what_is_pending_first() -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    order: list[str] = []
    original_close = transport.close

    def close() -> None:
        order.append(f"close after {len(transport.writes)} write(s)")
        original_close()

    transport.close = close  # type: ignore[method-assign]
    previous = conn.on_inbound

    def answer_then_abort(inbound: Inbound) -> None:
        previous(inbound)
        conn.xmpp.abort()

    conn.on_inbound = answer_then_abort
    conn.xmpp.data_received(messages(range(1)))
    assert order == ["close after 1 write(s)"]
    assert sent_ids(transport.writes) == ["rb-m0-1", "rb-m0-2"]


async def test_after_a_disconnect_batching_is_off_again() -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    conn._on_disconnected("test")
    assert not conn.writes.active


async def test_messages_reach_the_bot_without_the_other_handlers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The direct route for messages: the bot gets each one once and none of
    # the handlers registered at start-up is asked about it; every other
    # stanza takes slixmpp's path. (A handler registered later does see
    # messages: tests/unit/xmpp/test_xmpp_patches.py.)
    conn, transport = echo_bot()
    await session_up(conn, transport)
    seen: list[str] = []
    asked: list[str] = []
    previous = conn.on_inbound

    def record(inbound: Inbound) -> None:
        seen.append(inbound.id or "")
        previous(inbound)

    conn.on_inbound = record
    for handler in conn.xmpp._XMLStream__handlers:
        def spy(stanza: Any, match: Any = handler.match) -> bool:
            asked.append(stanza["id"])
            return bool(match(stanza))
        monkeypatch.setattr(handler, "match", spy)
    conn.xmpp.data_received(messages(range(3)))
    conn.xmpp.data_received(b"<iq type='result' id='q1' from='alice@localhost/x' "
                            b"to='friend.localhost'/>")
    assert seen == ["m0", "m1", "m2"]
    assert set(asked) == {"q1"}


async def test_a_failing_message_handler_costs_that_message_not_the_stream(
        caplog: Any) -> None:
    conn, transport = echo_bot()
    await session_up(conn, transport)
    previous = conn.on_inbound

    def fail_once(inbound: Inbound) -> None:
        if inbound.id == "m0":
            raise RuntimeError("bug")
        previous(inbound)

    conn.on_inbound = fail_once
    conn.xmpp.data_received(messages(range(2)))
    assert sent_ids(transport.writes) == ["rb-m1-1", "rb-m1-2"]
    assert any(getattr(r, "fields", {}).get("event") == "internal_error" for r in caplog.records)


async def test_a_read_the_bot_does_not_answer_is_acknowledged_at_once() -> None:
    # TCP_QUICKACK after a read that produced no data: otherwise the kernel's
    # delayed ACK (up to 40 ms) holds up a server that uses Nagle's algorithm.
    quickack = getattr(socket, "TCP_QUICKACK", None)
    if quickack is None:
        pytest.skip("TCP_QUICKACK is Linux only")
    conn, transport = echo_bot()
    await session_up(conn, transport)
    conn.xmpp.data_received(messages(range(2)))  # answered: the ACK rides on our data
    assert transport.sock.options == []
    conn.xmpp.data_received(b"<iq type='result' id='q1' from='alice@localhost/x' "
                            b"to='friend.localhost'/>")  # nothing to say back
    assert transport.sock.options == [(socket.IPPROTO_TCP, quickack, 1)]
