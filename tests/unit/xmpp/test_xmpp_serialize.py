"""The bot writes outgoing messages as text; that text must be what slixmpp
itself would write for the same element tree (except that quotes in the
payload are not escaped: character data does not need it), and parse back to
the same values."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import slixmpp
from hypothesis import given, settings
from hypothesis import strategies as st
from slixmpp.xmlstream.tostring import tostring

from rulebot.bot.values import Meta, Outbound
from rulebot.wire.encode import JSON_NS, META_NS, encode_payload
from rulebot.xmpp import patches
from rulebot.xmpp.stanzas import payload_text, serialize_message, to_inbound_message

# Text that XML 1.0 can carry, heavy on the characters that need escaping.
_xml_text = st.text(
    alphabet=st.one_of(st.sampled_from("&<>'\"é/@ x"),
                       st.characters(min_codepoint=0x20, max_codepoint=0xD7FF)),
    max_size=30)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | _xml_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_xml_text, inner, max_size=3),
    max_leaves=8)


@st.composite
def outbounds(draw: Any) -> Outbound:
    meta = Meta(sender=draw(_xml_text), rule=draw(st.none() | _xml_text),
                version=draw(_xml_text), event_id=draw(st.none() | _xml_text),
                stanza_id=draw(st.none() | _xml_text))
    return Outbound(to=draw(_xml_text), payload=draw(st.dictionaries(_xml_text, _json,
                                                                       max_size=4)),
                    encoding=draw(st.sampled_from(["body", "json"])),
                    type=draw(st.sampled_from(["chat", "normal", "headline"])),
                    id=draw(_xml_text), meta=meta)


def slixmpp_text(stream: Any, out: Outbound, mfrom: str | None) -> str:
    """The oracle: the element tree of the message, serialised by slixmpp with
    its own escape function."""
    ns = stream.default_ns
    attrs = {"to": out.to, "type": out.type, "id": out.id}
    if mfrom is not None:
        attrs["from"] = mfrom
    root = ET.Element(f"{{{ns}}}message", attrs)
    text = encode_payload(out.payload)
    if out.encoding == "json":
        ET.SubElement(root, f"{{{JSON_NS}}}json").text = text
    else:
        ET.SubElement(root, f"{{{ns}}}body").text = text
    meta = {"sender": out.meta.sender, "version": out.meta.version}
    for key, value in (("rule", out.meta.rule), ("event", out.meta.event_id),
                       ("stanza", out.meta.stanza_id)):
        if value is not None:
            meta[key] = value
    ET.SubElement(root, f"{{{META_NS}}}rulebot", meta)
    module = patches._tostring
    saved = module.escape
    module.escape = patches.original_escape
    try:
        return str(tostring(root, xmlns=ns, stream=stream, top_level=True))
    finally:
        module.escape = saved


CLIENT = slixmpp.ClientXMPP("friend@localhost/bot", "unused")
COMPONENT = slixmpp.ComponentXMPP("friend.localhost", "unused", "127.0.0.1", 5347)


def with_quotes_as_we_write_them(slixmpp_output: str, out: Outbound) -> str:
    """slixmpp's text with the payload's character data written our way: the
    only difference allowed (quotes need no escaping in character data)."""
    theirs = patches.original_escape(encode_payload(out.payload))
    return slixmpp_output.replace(f">{theirs}</", f">{payload_text(out.payload)}</", 1)


@settings(max_examples=400, derandomize=True)
@given(outbounds(), st.none() | _xml_text)
def test_serialized_message_is_what_slixmpp_writes_for_the_same_tree(out: Outbound,
                                                                      mfrom: str | None) -> None:
    # Byte for byte, except that quotes in the payload stay quotes.
    for stream, sender in ((CLIENT, None), (COMPONENT, mfrom)):
        expected = slixmpp_text(stream, out, sender)
        ours = serialize_message(out, sender)
        assert ours == with_quotes_as_we_write_them(expected, out)
        # ... which is the same XML: same canonical form.
        assert ET.canonicalize(ours) == ET.canonicalize(expected)


@given(_json)
def test_payload_text_escapes_only_what_character_data_needs(value: Any) -> None:
    text = payload_text({"v": value})
    assert "&quot;" not in text
    assert "&apos;" not in text
    assert "<" not in text  # written as &lt;
    assert ">" not in text  # written as &gt;
    assert ET.fromstring(f"<body>{text}</body>").text == encode_payload({"v": value})


@settings(max_examples=200, derandomize=True)
@given(outbounds())
def test_serialized_message_parses_back_to_its_payload_and_metadata(out: Outbound) -> None:
    text = serialize_message(out, "friend.localhost")
    root = ET.fromstring(text.replace("<message ", '<message xmlns="jabber:client" ', 1))
    msg = slixmpp.Message(CLIENT, xml=root, recv=True)
    inbound = to_inbound_message(msg)
    assert root.get("to") == out.to
    assert root.get("id") == out.id
    assert root.get("from") == "friend.localhost"
    carried = inbound.json if out.encoding == "json" else inbound.body
    assert carried == encode_payload(out.payload)
    meta = root.find(f"{{{META_NS}}}rulebot")
    assert meta is not None
    assert meta.get("sender") == out.meta.sender
    assert meta.get("rule") == out.meta.rule
    assert meta.get("event") == out.meta.event_id
    assert meta.get("stanza") == out.meta.stanza_id


def test_inbound_message_takes_the_first_body_and_container() -> None:
    root = ET.fromstring(
        '<message xmlns="jabber:client" from="alice@localhost/x" id="s1">'
        '<body>{"a":1}</body><body>{"b":2}</body>'
        '<json xmlns="urn:xmpp:json:0">{"c":3}</json></message>')
    inbound = to_inbound_message(slixmpp.Message(CLIENT, xml=root, recv=True))
    assert (inbound.body, inbound.json, inbound.type, inbound.id) == (
        '{"a":1}', '{"c":3}', "normal", "s1")
    assert inbound.from_ == "alice@localhost/x"


XML_TAG = "{urn:example:shop}event"


def _message(out: Outbound) -> ET.Element:
    return ET.fromstring(serialize_message(out, "friend@localhost/rulebot").replace(
        "<message ", "<message xmlns='jabber:client' ", 1))


def test_an_xml_encoded_message_carries_the_event_element_and_reads_back() -> None:
    from rulebot.wire.decode import Limits
    from rulebot.wire.xmlmap import read_event
    payload: dict[str, Any] = {"type": "order-ok", "id": "o1",
                               "item": [{"sku": "A1"}, {"sku": "B&7"}]}
    out = Outbound("alice@localhost", payload, XML_TAG, "chat", "rb-1",
                   Meta("alice@localhost", "order", "v1", "o1"))
    root = _message(out)
    (event,) = root.findall(XML_TAG)
    assert read_event(event, Limits()) == payload
    assert root.find(f"{{{JSON_NS}}}json") is None
    assert root.find("{jabber:client}body") is None
    inbound = to_inbound_message(_Msg(root))
    assert [e.tag for e in inbound.elements] == [XML_TAG, f"{{{META_NS}}}rulebot"]


def test_a_payload_without_an_xml_form_goes_as_json() -> None:
    out = Outbound("alice@localhost", {"a b": 1}, XML_TAG, "chat", "rb-1",
                   Meta("alice@localhost", None, "v1", None))
    root = _message(out)
    assert root.find(XML_TAG) is None
    container = root.find(f"{{{JSON_NS}}}json")
    assert container is not None
    assert container.text == '{"a b":1}'


class _Msg:
    """What to_inbound_message reads of a slixmpp message."""

    namespace = "jabber:client"

    def __init__(self, xml: ET.Element) -> None:
        self.xml = xml

    def __getitem__(self, key: str) -> str:
        return str(self.xml.get(key, ""))
