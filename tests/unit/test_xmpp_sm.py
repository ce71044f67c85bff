"""Stream-management bookkeeping of the messages the bot writes itself
(BotConnection._send_now): each is numbered and kept for re-sending exactly
as slixmpp's own send filter would, and an ack request follows every
SM_WINDOW of them.

Drives the real BotConnection in client mode over a recording transport with
stream management marked enabled, as after <enabled/> (no network: the live
paths, resumption and kill -9 included, are in tests/integration)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from recording_transport import RecordingTransport
from slixmpp.plugins.xep_0198.stream_management import MAX_SEQ

from rulebot.config import parse_config
from rulebot.dispatch import Inbound, Meta, Outbound
from rulebot.xmpp import SM_WINDOW, BotConnection

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
    conn.xmpp.event("session_start")
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
