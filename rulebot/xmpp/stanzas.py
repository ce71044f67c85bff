"""Stanzas <-> rulebot's values: inbound message and presence stanzas to
`bot.values.Inbound`, `bot.values.Outbound` to the text of a message stanza.
"""

from __future__ import annotations

from typing import Any

from slixmpp.xmlstream.matcher.base import MatcherBase

from rulebot.bot.values import Inbound, Outbound
from rulebot.model import JSON
from rulebot.wire.encode import JSON_NS, META_NS, RECEIPTS_NS, encode_payload
from rulebot.wire.xmlmap import write_event
from rulebot.xmpp.patches import escape_text, fast_escape

JSON_TAG = f"{{{JSON_NS}}}json"
REQUEST_TAG = f"{{{RECEIPTS_NS}}}request"

def payload_text(payload: JSON) -> str:
    """A payload as character data for <body/> or <json/>: only "&", "<" and ">"
    escaped (XML 1.0, 2.4). slixmpp also writes every quote of a text node as
    &quot; or &apos;: 16 of them in a four-field JSON event, each one a
    separate character-data callback in the receiving parsers (a Lua function
    call per piece in Prosody) and 5 more bytes on the wire."""
    return escape_text(encode_payload(payload))


def serialize_message(out: Outbound, mfrom: str | None, text: str | None = None,
                      xml: str | None = None) -> str:
    """The message stanza carrying `out`: payload (as <body/> or XEP-0335
    <json/>) and the <rulebot/> metadata, as the text written to the stream.

    Written directly rather than built as a slixmpp Message and serialised by
    slixmpp: that took a third of the bot's time per routed event. The text is
    what slixmpp's serialiser writes for the equivalent element tree, with the
    same escaping of attributes, except that the payload's quotes are left as
    they are (see payload_text); tests/unit/xmpp/test_xmpp_serialize.py compares the
    two.
    `text` is `payload_text(out.payload)` when the caller already has it, `xml`
    its XML event element for an XML encoding ("": it has none; rulebot.wire.xmlmap).
    A payload without an XML form goes in a <json/> container."""
    esc = fast_escape
    head = f'<message to="{esc(out.to)}" type="{esc(out.type)}" id="{esc(out.id)}"'
    if mfrom is not None:
        head += f' from="{esc(mfrom)}"'
    enc = out.encoding
    payload = None
    if enc.startswith("{"):  # an XML event's element, unless the payload has no XML form
        payload = write_event(out.payload, enc) if xml is None else xml or None
    if payload is None:
        if text is None:
            text = payload_text(out.payload)
        payload = f"<body>{text}</body>" if enc == "body" \
            else f'<json xmlns="{JSON_NS}">{text}</json>'

    m = out.meta
    meta = f'<rulebot xmlns="{META_NS}" sender="{esc(m.sender)}" version="{esc(m.version)}"'
    if m.rule is not None:
        meta += f' rule="{esc(m.rule)}"'
    if m.event_id is not None:
        meta += f' event="{esc(m.event_id)}"'
    if m.stanza_id is not None:
        meta += f' stanza="{esc(m.stanza_id)}"'
    return f"{head}>{payload}{meta} /></message>"


def serialize_receipt(to: str, stanza_id: str, mfrom: str | None, own_id: str) -> str:
    """An XEP-0184 receipt for the message `stanza_id` from `to`."""
    esc = fast_escape
    head = f'<message to="{esc(to)}" id="{esc(own_id)}"'
    if mfrom is not None:
        head += f' from="{esc(mfrom)}"'
    return f'{head}><received xmlns="{RECEIPTS_NS}" id="{esc(stanza_id)}" /></message>'


def to_inbound_message(msg: Any) -> Inbound:
    """The Inbound value of a message stanza, read from its element in one pass
    (slixmpp's item access is lang-aware and plugin-driven, and costs more)."""
    xml = msg.xml
    body_tag = f"{{{msg.namespace}}}body"
    body: str | None = None
    container: str | None = None
    receipt = False
    elements: list[Any] = []
    prefix = f"{{{msg.namespace}}}"
    for child in xml:
        tag = child.tag
        if tag == body_tag and body is None:
            body = child.text or ""
        elif tag == JSON_TAG and container is None:
            container = child.text or ""
        elif tag == REQUEST_TAG:
            receipt = True
        elif isinstance(tag, str) and not tag.startswith(prefix):
            elements.append(child)  # a possible XML event (chat states, ... too)
    return Inbound(
        kind="message",
        from_=str(msg["from"]),  # through slixmpp's JID: normalised like every JID it hands out
        type=xml.get("type") or "normal",
        id=xml.get("id") or None,
        body=body or None,
        json=container,
        elements=tuple(elements),
        receipt=receipt,
    )


class MatchTag(MatcherBase):
    """Matches stanzas by their element tag alone (cheaper than an XPath)."""

    def match(self, xml: Any) -> bool:
        return bool(xml.xml.tag == self._criteria)


def to_inbound_presence(pres: Any) -> Inbound:
    ptype = pres["type"]
    priority: int | None
    try:
        priority = int(pres["priority"]) if pres.xml.find(
            f"{{{pres.namespace}}}priority") is not None else None
    except (TypeError, ValueError):
        priority = None
    show = pres["show"] if ptype in ("available", "away", "chat", "dnd", "xa") else None
    return Inbound(
        kind="presence",
        from_=str(pres["from"]),
        # slixmpp reports an available presence's <show/> as its type
        type="available" if ptype in ("", "available", "away", "chat", "dnd", "xa") else ptype,
        id=pres["id"] or None,
        show=show or None,
        status=pres["status"] or None,
        priority=priority,
    )
