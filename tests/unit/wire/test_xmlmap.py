"""XML events: the mapping of an element to the event object and back
(rulebot.wire.xmlmap; docs/protocol.md "XML events"), its limits and the
elements that have no object form."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulebot.errors import EventError
from rulebot.wire.decode import Limits
from rulebot.wire.xmlmap import read_event, write_event

NS = "urn:example:shop"
TAG = f"{{{NS}}}event"


def read(text: str, limits: Limits | None = None) -> dict[str, Any]:
    return read_event(ET.fromstring(text), limits or Limits())


def refused(text: str, limits: Limits | None = None) -> EventError:
    with pytest.raises(EventError) as info:
        read(text, limits)
    return info.value


def test_attributes_children_text_and_namespaces_map_as_documented() -> None:
    event = read(
        f"<event xmlns='{NS}' type='order' id='o1'>"
        "<item sku='A1' qty='2'/><item sku='B7'>gift wrap</item>"
        "<note>fragile &amp; &lt;heavy&gt;</note><empty/>"
        "<x:sig xmlns:x='urn:sig' x:alg='ed25519'>abc</x:sig>"
        "<plain xmlns=''>p</plain>"
        "<nest><a><b>deep</b></a></nest></event>")
    assert event == {
        "type": "order", "id": "o1",
        "item": [{"sku": "A1", "qty": "2"}, {"sku": "B7", "#text": "gift wrap"}],
        "note": ["fragile & <heavy>"],
        "empty": [""],
        "{urn:sig}sig": [{"{urn:sig}alg": "ed25519", "#text": "abc"}],
        "{}plain": ["p"],
        "nest": [{"a": [{"b": ["deep"]}]}],
    }


def test_the_event_element_is_an_object_even_with_text_only() -> None:
    assert read(f"<event xmlns='{NS}'/>") == {}
    assert read(f"<event xmlns='{NS}'>hello</event>") == {"#text": "hello"}


def test_formatting_whitespace_between_children_is_dropped_but_text_is_kept() -> None:
    event = read(f"<event xmlns='{NS}'>\n  <a> x </a>\n  <b>  </b>\n</event>")
    assert event == {"a": [" x "], "b": ["  "]}


def test_an_xml_lang_attribute_keeps_its_namespace() -> None:
    event = read(f"<event xmlns='{NS}' xml:lang='fr'/>")
    assert event == {"{http://www.w3.org/XML/1998/namespace}lang": "fr"}
    text = write_event(event, TAG)
    assert text is not None
    assert 'xml:lang="fr"' in text
    assert read(text) == event


@pytest.mark.parametrize(("xml", "code", "path"), [
    (f"<event xmlns='{NS}'>text<a/></event>", "xml-mixed-content", ""),
    (f"<event xmlns='{NS}'><a/>tail</event>", "xml-mixed-content", ""),
    (f"<event xmlns='{NS}'><a/><b/><a/></event>", "xml-interleaved", "/a"),
    (f"<event xmlns='{NS}' a='1'><a/></event>", "xml-name-clash", "/a"),
    (f"<event xmlns='{NS}'><x><y>t<z/></y></x></event>", "xml-mixed-content", "/x/0/y/0"),
])
def test_elements_without_an_object_form_are_refused_with_a_path(
        xml: str, code: str, path: str) -> None:
    err = refused(xml)
    assert (err.code, err.path) == (code, path)


def test_limits_depth_items_attributes_strings_and_size() -> None:
    deep = f"<event xmlns='{NS}'>" + "<a>" * 40 + "</a>" * 40 + "</event>"
    err = refused(deep)
    assert err.code == "too-deep"
    assert err.path is not None
    assert err.path.count("/a/0") == 32
    assert read(deep, Limits(max_depth=41))  # 41 elements deep: within
    many = f"<event xmlns='{NS}'>" + "<i/>" * 20 + "</event>"
    err = refused(many, Limits(max_items=10))
    assert (err.code, err.path) == ("too-many-items", "/i/9")  # the 11th: the event element counts
    attrs = " ".join(f"a{i}='x'" for i in range(65))
    assert refused(f"<event xmlns='{NS}' {attrs}/>").code == "too-many-attributes"
    assert read(f"<event xmlns='{NS}' {attrs}/>", Limits(max_attributes=65))
    err = refused(f"<event xmlns='{NS}'><t>{'x' * 11}</t></event>", Limits(max_string=10))
    assert (err.code, err.path) == ("string-too-long", "/t/0")
    err = refused(f"<event xmlns='{NS}' a='{'é' * 40}'/>", Limits(max_bytes=64))
    assert (err.code, err.path) == ("too-large", None)  # 80 bytes, 40 characters
    assert read(f"<event xmlns='{NS}' a='{'e' * 40}'/>", Limits(max_bytes=64))


def test_hostile_nesting_is_refused_without_recursing() -> None:
    # 100,000 levels: expat and ElementTree build it; the reader must not recurse
    # into it (a RecursionError would be a crash, not an answer).
    hostile = f"<event xmlns='{NS}'>" + "<a>" * 100_000 + "</a>" * 100_000 + "</event>"
    assert refused(hostile, Limits(max_bytes=16_777_216)).code == "too-deep"
    assert refused(hostile).code == "too-large"


def test_writing_error_replies_numbers_and_unwritable_payloads() -> None:
    error = {"error": {"code": "invalid-event", "message": "a <b> & \"c\"", "path": "",
                       "id": "o1"}}
    text = write_event(error, TAG)
    assert text == (f'<event xmlns="{NS}"><error code="invalid-event" '
                    'message="a &lt;b> &amp; &quot;c&quot;" path="" id="o1"/></event>')
    assert read(text) == {"error": [error["error"]]}  # an object comes back as a list of one
    assert read(write_event({"n": 2, "ok": True, "gone": None}, TAG) or "") == \
        {"n": "2", "ok": "true"}
    assert write_event({"a b": "x"}, TAG) is None  # not an XML name: sent as JSON
    assert write_event({"l": [["nested"]]}, TAG) is None
    assert write_event({"m": [{"#text": "t", "c": ["x"]}]}, TAG) is None


def test_text_and_attribute_whitespace_survive_the_round_trip() -> None:
    event = {"a": "tab\there\nline\r\nend", "t": ["cr\rlf\n  two  "]}
    text = write_event(event, TAG)
    assert text is not None
    assert read(text) == event


# --- the property: reading is one-to-one, writing its inverse -----------------

_names = st.sampled_from(["a", "b", "item", "note", "x-y", "é", "n.1"])
_other_ns = st.sampled_from([NS, "urn:other", ""])
_texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"],
                               exclude_characters="\ufffe\uffff"), max_size=8)


def _tag(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}" if ns else name


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> ET.Element:
    """Elements that have an object form: attributes, text or children (never
    both text and children), children of one name consecutive."""
    el = ET.Element("placeholder")
    for name in draw(st.lists(_names, max_size=3, unique=True)):
        ns = draw(st.sampled_from(["", "urn:other"]))
        el.set(_tag(ns, name), draw(_texts))
    taken = {k for k in el.attrib}
    groups = [] if depth >= 3 else draw(st.lists(st.tuples(_other_ns, _names), max_size=3,
                                                 unique=True))
    for ns, name in groups:
        tag = _tag(ns, name)
        if tag in taken or (ns == NS and name in taken):
            continue
        for _ in range(draw(st.integers(1, 3))):
            child = draw(elements(depth + 1))
            child.tag = tag
            el.append(child)
    if not len(el):
        el.text = draw(_texts) or None
    return el


@settings(max_examples=300, deadline=None)
@given(elements())
def test_read_then_write_then_read_is_the_identity(el: ET.Element) -> None:
    el.tag = TAG
    event = read_event(el, Limits())  # the strategy never shares a name (xml-name-clash)
    text = write_event(event, TAG)
    assert text is not None
    again = ET.fromstring(text)
    assert read_event(again, Limits()) == event
    assert _canonical(again) == _canonical(el)


def _canonical(el: ET.Element) -> tuple[Any, ...]:
    children = tuple(_canonical(c) for c in el)
    return (el.tag, sorted(el.attrib.items()), None if children else (el.text or ""), children)
