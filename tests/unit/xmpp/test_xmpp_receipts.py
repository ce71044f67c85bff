"""XEP-0184 receipts, the end-to-end acknowledgement of component mode: a
message asking for one is marked so on its Inbound value, and the bot's
receipt is a well-formed stanza, numbered by stream management like every
stanza the bot writes (else the server's count and slixmpp's would differ)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from recording_transport import RecordingTransport
from slixmpp import Message

from rulebot.wire.encode import RECEIPTS_NS
from rulebot.xmpp.stanzas import serialize_receipt, to_inbound_message
from tests.unit.xmpp.test_xmpp_sm import client_bot


def message(xml: str) -> Message:
    return Message(xml=ET.fromstring(xml))  # type: ignore[no-untyped-call]


def test_a_receipt_request_is_read_from_the_message() -> None:
    asked = message(f"<message xmlns='jabber:client' from='alice@x/a' id='m1' type='chat'>"
                    f"<body>{{}}</body><request xmlns='{RECEIPTS_NS}'/></message>")
    plain = message("<message xmlns='jabber:client' from='alice@x/a' id='m2'><body>{}</body>"
                    "</message>")
    assert to_inbound_message(asked).receipt is True
    assert to_inbound_message(plain).receipt is False


def test_the_receipt_names_the_message_and_comes_from_the_component() -> None:
    text = serialize_receipt("alice@x/a", "m\"1<", "friend.x", "rr-1")
    el = ET.fromstring(text)
    assert (el.get("to"), el.get("from"), el.get("id")) == ("alice@x/a", "friend.x", "rr-1")
    received = el.find(f"{{{RECEIPTS_NS}}}received")
    assert received is not None
    assert received.get("id") == "m\"1<"
    assert ET.fromstring(serialize_receipt("a@x", "m", None, "rr")).get("from") is None


async def test_receipts_are_numbered_by_stream_management(tmp_path: Path) -> None:
    conn, transport = client_bot(tmp_path)
    assert isinstance(transport, RecordingTransport)
    sm = conn.xmpp.plugin["xep_0198"]
    before = sm.seq
    kept = len(sm.unacked_queue)
    conn.receipt("alice@localhost/x", "m1")
    conn.receipt("alice@localhost/x", "m1")  # a resend's receipt: the same id
    assert sm.seq == before + 2
    texts = [t for _, t in list(sm.unacked_queue)[kept:]]
    assert len(texts) == 2
    assert texts[0] == texts[1]
    assert f'<received xmlns="{RECEIPTS_NS}" id="m1"' in texts[0]
    assert texts[0].encode() in b"".join(transport.writes)
    conn.online = False
    conn.receipt("alice@localhost/x", "m2")  # offline: none (the client resends)
    assert sm.seq == before + 2
