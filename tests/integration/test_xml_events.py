"""XML events on real servers (docs/protocol.md, "XML events"): a client that
speaks XML and one that speaks JSON talk through the bot, each getting what
the other sent in the sender's encoding; hostile XML gets its documented
answer and the good event after it is delivered; the bot stays up."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import bot_jid, connect_user, receive, run_bot, write_config

from rulebot.client import RulebotClient
from scripts import xmppserver

pytestmark = pytest.mark.integration

NS = "urn:rulebot:example"  # declared in rules/00-vocabulary.yaml
TAG = f"{{{NS}}}event"
TEXT = "hi <bob> & \"all\" \u00e9\u4e16 \U0001f600"


def raw_send(client: RulebotClient, xml: str, body: str | None = None) -> None:
    msg = client.xmpp.make_message(mto=client.bot, mtype="chat")
    msg["id"] = f"raw-{id(xml)}-{len(xml)}"
    if body is not None:
        msg["body"] = body
    msg.xml.append(ET.fromstring(xml))
    msg.send()


def ev(attrs: str = "", inner: str = "") -> str:
    return f"<event xmlns='{NS}' {attrs}>{inner}</event>"


HOSTILE = [
    # (what, element, expected error code, pointer)
    ("interleaved children", ev("type='chat'", "<a/><b/><a/>"), "xml-interleaved", "/a"),
    ("mixed content", ev("type='chat'", "text<a/>"), "xml-mixed-content", ""),
    ("attribute and child of one name", ev("type='chat' a='1'", "<a/>"),
     "xml-name-clash", "/a"),
    ("nesting 400 deep", ev("type='chat'", "<a>" * 400 + "</a>" * 400), "too-deep", None),
    ("40 attributes", ev(" ".join(f"a{i}='v'" for i in range(40))), "too-many-attributes",
     ""),
    ("300 children", ev("type='chat'", "<i/>" * 300), "too-many-items", None),
    ("a 600-character text", ev("type='chat'", f"<t>{'x' * 600}</t>"), "string-too-long",
     "/t/0"),
    ("3 kB of text", ev("type='chat'", "<t>" + "y" * 400 + "</t>" * 1 + "".join(
        f"<u{i}>{'z' * 400}</u{i}>" for i in range(7))), "too-large", None),
    ("a schema failure", ev("type='chat' to='bob@localhost'", "<text>not an attribute</text>"),
     "invalid-event", None),
]


@pytest.mark.parametrize(("server_kind", "mode"), [("prosody", "client"), ("ejabberd", "client"),
                                                   ("prosody", "component")])
async def test_xml_and_json_clients_talk_through_the_bot_and_hostile_xml_is_answered(
        server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    config = write_config(server, mode, tmp_path / "rulebot.yaml",
                          limits={"max_bytes": 2048, "max_depth": 16, "max_string": 512,
                                  "max_items": 200, "max_attributes": 32})
    bot = await run_bot(stack, config)
    bot_address = bot_jid(server, mode)
    alice = await connect_user(stack, server, "alice", bot_address, encoding=TAG)
    bob = await connect_user(stack, server, "bob", bot_address)
    bob.xml_tags.add(TAG)

    # XML in, XML out: bob's client gets alice's encoding
    sent = alice.send_event({"type": "chat", "to": "bob@localhost", "text": TEXT})
    got = await receive(bob)
    assert got.encoding == TAG
    assert got.payload == {"type": "chat", "id": sent, "from": "alice@localhost", "text": TEXT}
    assert (got.sender, got.rule, got.event_id) == ("alice@localhost", "chat-to-member", sent)
    # JSON in: alice gets bob's encoding, a <body/>
    bob.send_event({"type": "chat", "to": "alice@localhost", "text": "back"})
    back = await receive(alice)
    assert (back.encoding, back.payload["text"]) == ("body", "back")
    # a reply in XML, found beside a chat state and a fallback body
    mark = len(bot.logs)
    raw_send(alice, "<active xmlns='http://jabber.org/protocol/chatstates'/>")  # ignored
    raw_send(alice, ev("type='ping' id='p1'"), body="a fallback for clients without XML")
    pong = await receive(alice)
    assert (pong.encoding, pong.payload, pong.event_id) == (TAG, {"type": "pong", "id": "p1"}, "p1")
    entry = await bot.wait_log(lambda e: e.get("event_id") == "p1", start=mark)
    assert entry["status"] == "decided"

    for n, (what, xml, code, path) in enumerate(HOSTILE):
        raw_send(alice, xml)
        reply = await receive(alice)
        assert reply.encoding == TAG, what
        assert reply.error is not None, (what, reply)
        assert reply.error["code"] == code, (what, reply.error)
        if path is not None:
            assert reply.error["path"] == path, (what, reply.error)
        # ... and a good event right after it is delivered in full
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"good {n}"})
        assert (await receive(bob)).payload["text"] == f"good {n}", what
    assert bot.proc.returncode is None
    # A clean stop, as an operator stops it: after the 400-deep element, a bot
    # killed with -9 leaves Prosody (client mode) 20 s to shut down.
    assert await bot.stop() == 0


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
@pytest.mark.parametrize("what", ["<!-- a comment -->", "<?pi data?>"])
async def test_comments_and_processing_instructions_never_reach_the_bot(
        server: xmppserver.ServerInfo, server_kind: str, what: str, tmp_path: Path,
        stack: AsyncExitStack) -> None:
    """RFC 6120 11.1 forbids them. Prosody ends the stream that carries one
    (nothing of it is delivered); ejabberd leaves them out and delivers the
    rest, which the bot decides as if they had never been written."""
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    carol = await connect_user(stack, server, "carol", "friend@localhost", encoding=TAG,
                               reconnect=False)
    alice = await connect_user(stack, server, "alice", "friend@localhost", encoding=TAG)
    mark = len(bot.logs)
    gone = asyncio.Event()
    carol.xmpp.add_event_handler("disconnected", lambda _e: gone.set())
    carol.xmpp.send_raw(f"<message to='friend@localhost' type='chat' id='r1'>"
                        f"<event xmlns='{NS}' type='ping' id='r1'>{what}</event></message>")
    if server_kind == "prosody":
        await asyncio.wait_for(gone.wait(), 15)
        pong = await alice.request({"type": "ping"})  # the bot was not disturbed
        assert pong.payload["type"] == "pong"
        assert not [e for e in bot.logs[mark:] if e.get("stanza_id") == "r1"]
    else:
        pong = await receive(carol)
        assert (pong.payload, pong.event_id) == ({"type": "pong", "id": "r1"}, "r1")
        assert not gone.is_set()
