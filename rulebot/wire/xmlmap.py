"""XML events: an element in a namespace the rule set declares, read as the
event object the rules see, and a payload written back as such an element.

The mapping (docs/protocol.md "XML events") is one-to-one, so that a forward
of an XML event reaches its recipients as the element the sender wrote:

- the event element is an object; its attributes are keys with string values;
- a child element is a key whose value is a *list* of the child's
  occurrences (always a list: attributes are strings, children lists, so the
  two never look alike), consecutive in the element (interleaving `<a/><b/><a/>`
  has no object form and is refused);
- a child with neither attributes nor children is its text (a string, "" when
  empty); otherwise an object, its text under "#text" (a name no attribute or
  element can have);
- names in the event element's namespace are their local names; other
  namespaces in Clark notation (`{urn:x}name`), an element in no namespace
  as `{}name`;
- text between child elements must be whitespace (formatting, dropped):
  mixed content is refused.

Limits (rulebot.wire.decode.Limits, the configuration's `limits`): max_bytes
on the UTF-8 bytes of every element's and attribute's local name, attribute
value and text together (namespaces not counted: they are bounded by the
server's stanza size);
max_depth on the nesting of elements (the event element alone is depth 1);
max_items on elements and attributes together; max_attributes on one
element; max_string on one attribute value or text, in characters.

Reading works on any xml.etree.ElementTree-like element (slixmpp's are
those); no XMPP library here, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from rulebot.errors import EventError
from rulebot.model import JSON
from rulebot.wire.decode import Limits

#: Where an element's text goes when it has attributes or children.
TEXT_KEY = "#text"

_XML_NS = "http://www.w3.org/XML/1998/namespace"

# An XML name without a colon (an NCName), as XML 1.0 5th edition defines its
# characters; writing refuses keys that are not one (the payload goes as JSON).
_START = ("A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff"
          "\u200c-\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd"
          "\U00010000-\U000effff")
_NCNAME = re.compile(f"[{_START}][{_START}\\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]*")
_CLARK = re.compile(r"\{([^{}]*)\}(.*)", re.DOTALL)


def split_tag(tag: str) -> tuple[str, str]:
    """(namespace, local name) of an ElementTree tag ("" for no namespace)."""
    m = _CLARK.fullmatch(tag)
    return (m.group(1), m.group(2)) if m else ("", tag)


def _pointer(path: tuple[str | int, ...]) -> str:
    return "".join("/" + (str(p).replace("~", "~0").replace("/", "~1")) for p in path)


class _Reader:
    def __init__(self, ns: str, limits: Limits) -> None:
        self.ns = ns
        self.limits = limits
        self.items = 0

    def key(self, tag: str, attribute: bool) -> str:
        ns, local = split_tag(tag)
        if ns == self.ns and not attribute:
            return local
        if attribute and not ns:
            return local
        return "{" + ns + "}" + local

    def text(self, value: str, path: tuple[str | int, ...]) -> str:
        if len(value) > self.limits.max_string:
            raise EventError("string-too-long", f"text longer than {self.limits.max_string} "
                             "characters", _pointer(path))
        return value

    def count(self, path: tuple[str | int, ...]) -> None:
        self.items += 1
        if self.items > self.limits.max_items:
            raise EventError("too-many-items", f"more than {self.limits.max_items} elements "
                             "and attributes", _pointer(path))

    def value(self, el: Any, path: tuple[str | int, ...], depth: int, root: bool) -> JSON:
        limits = self.limits
        if depth > limits.max_depth:
            raise EventError("too-deep", f"elements nested deeper than {limits.max_depth}",
                             _pointer(path))
        self.count(path)
        attrib = el.attrib
        if len(attrib) > limits.max_attributes:
            raise EventError("too-many-attributes", f"an element with more than "
                             f"{limits.max_attributes} attributes", _pointer(path))
        children = list(el)
        text = el.text or ""
        if not attrib and not children and not root:
            return self.text(text, path)
        obj: dict[str, JSON] = {}
        for name, value in attrib.items():
            key = self.key(name, attribute=True)
            self.count((*path, key))
            obj[key] = self.text(value, (*path, key))
        if not children:
            if text:
                obj[TEXT_KEY] = self.text(text, (*path, TEXT_KEY))
            return obj
        if text.strip():
            raise EventError("xml-mixed-content", "text beside child elements has no "
                             "object form", _pointer(path))
        last: str | None = None
        for child in children:
            if not isinstance(child.tag, str):  # a comment or processing instruction
                raise EventError("xml-unsupported", "comments and processing "
                                 "instructions have no object form", _pointer(path))
            key = self.key(child.tag, attribute=False)
            have = obj.get(key)
            if isinstance(have, str):
                raise EventError("xml-name-clash", f"an attribute and a child element are "
                                 f"both named {key!r}", _pointer((*path, key)))
            if have is not None and key != last:
                raise EventError("xml-interleaved", f"the <{key}> elements are not "
                                 "consecutive (their order has no object form)",
                                 _pointer((*path, key)))
            items = obj.setdefault(key, [])
            items.append(self.value(child, (*path, key, len(items)), depth + 1, False))
            if (child.tail or "").strip():
                raise EventError("xml-mixed-content", "text beside child elements has no "
                                 "object form", _pointer(path))
            last = key
        return obj


def _size(el: Any) -> int:
    """Characters of every element's local name, attribute name and value and
    text (iteratively: no recursion however deep the element)."""
    total = 0
    for s in _strings(el):
        total += len(s)
    return total


def read_event(el: Any, limits: Limits) -> dict[str, JSON]:
    """The event object of the element `el` (the mapping above). Raises
    EventError (docs/protocol.md's codes; `path` a JSON pointer into the
    object) for an element over a limit or without an object form."""
    # Characters first (cheap), bytes only near the limit: a character is 1-4 bytes.
    size = _size(el)
    if size * 4 > limits.max_bytes:
        size = sum(len(s.encode("utf-8", "surrogatepass")) for s in _strings(el))
    if size > limits.max_bytes:
        raise EventError("too-large", f"the XML event has {size} bytes of names and text, "
                         f"over {limits.max_bytes}")
    ns, _ = split_tag(el.tag)
    event = _Reader(ns, limits).value(el, (), 1, True)
    assert isinstance(event, dict)
    return event


def _strings(el: Any) -> list[str]:
    out: list[str] = []
    for e in el.iter():
        out += [split_tag(e.tag)[1] if isinstance(e.tag, str) else "", e.text or "",
                e.tail or ""]
        for k, v in e.attrib.items():
            out += [split_tag(k)[1], v]
    return out


# --- writing ----------------------------------------------------------------------


class _Unwritable(Exception):
    """The payload has no XML form here (the caller sends it as JSON instead)."""


def _esc_text(s: str) -> str:
    # \r as a reference: a parser turns a raw CR (and CR LF) into LF.
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") \
        .replace("\r", "&#13;")


def _esc_attr(s: str) -> str:
    # Tab, LF and CR as references: attribute-value normalisation would make
    # them spaces.
    return s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;") \
        .replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


def _scalar(value: JSON) -> str | None:
    """A value as text: strings as they are; numbers and booleans as their
    JSON text (XML has no types); null as None (nothing is written)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value, allow_nan=False)
    raise _Unwritable


class _Writer:
    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.out: list[str] = []
        self.prefixes: dict[str, str] = {}

    def name(self, key: str, attribute: bool) -> tuple[str, str | None]:
        """(the name to write, the namespace it needs declared or None)."""
        m = _CLARK.fullmatch(key)
        if m is None:
            if not _NCNAME.fullmatch(key):
                raise _Unwritable
            return key, None
        ns, local = m.group(1), m.group(2)
        if not _NCNAME.fullmatch(local):
            raise _Unwritable
        if attribute:
            if ns == _XML_NS:
                return f"xml:{local}", None
            if not ns:
                return local, None
            return local, ns  # prefixed by the caller
        return local, ns

    def element(self, local: str, value: JSON, ns: str, default: str | None) -> None:
        """Write element `local` in namespace `ns`, inside an element whose
        default namespace is `default` (None: the stanza's)."""
        out = self.out
        head = "<" + local
        if ns != default:
            head += f' xmlns="{_esc_attr(ns)}"'
        if not isinstance(value, dict):
            text = _scalar(value)
            out.append(head + ("/>" if not text else f">{_esc_text(text)}</{local}>"))
            return
        attrs: list[str] = []
        children: list[tuple[str, JSON]] = []
        text = None
        for key, v in value.items():
            if key == TEXT_KEY:
                text = _scalar(v)
            elif isinstance(v, list | dict):
                children.append((key, v))
            else:
                s = _scalar(v)
                if s is None:
                    continue
                name, attr_ns = self.name(key, attribute=True)
                if attr_ns is not None:
                    prefix = f"n{len(attrs)}"
                    attrs.append(f' xmlns:{prefix}="{_esc_attr(attr_ns)}"')
                    name = f"{prefix}:{name}"
                attrs.append(f' {name}="{_esc_attr(s)}"')
        if text and children:
            raise _Unwritable  # mixed content: no form the reader gives back
        head += "".join(attrs)
        if not children:
            out.append(head + ("/>" if not text else f">{_esc_text(text)}</{local}>"))
            return
        out.append(head + ">")
        for key, v in children:
            name, child_ns = self.name(key, attribute=False)
            for item in (v if isinstance(v, list) else [v]):
                if isinstance(item, list):
                    raise _Unwritable  # a list in a list: no element form
                self.element(name, item, self.ns if child_ns is None else child_ns, ns)
        out.append(f"</{local}>")


def write_event(payload: Mapping[str, JSON], tag: str) -> str | None:
    """The payload as the XML element `tag` ("{namespace}local"), text ready for
    a stanza; None when it has no XML form (a key that is no XML name, a list
    in a list, text beside children): the bot sends such a payload as JSON.
    Reading the result gives `payload` back whenever `payload` is the reading
    of some element; otherwise numbers and booleans come back as their text,
    a null is left out and an object not in a list comes back as a list of one.
    """
    ns, local = split_tag(tag)
    w = _Writer(ns)
    try:
        w.element(local, dict(payload), ns, None)
    except _Unwritable:
        return None
    return "".join(w.out)
