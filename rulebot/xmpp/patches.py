"""Faster, output-identical versions of slixmpp hot spots; part of the XMPP edge.

Profiling `rulebot run` under a burst (README "Performance") put two pure
functions of slixmpp among the largest costs of a routed event:

* `slixmpp.xmlstream.tostring.escape` builds every attribute value and text
  node with a Python-level generator over each character (~8 µs for a
  160-character JSON body). `fast_escape` returns the same string using
  `str.replace`.
* `MatchXPath.match`, which every registered stream handler (about twenty)
  runs on every inbound stanza, wraps the stanza in a new element and runs an
  ElementPath query. For the plain `{ns}tag/{ns}child` paths slixmpp and
  rulebot register, `fast_match` walks the children directly; any other path
  goes to the original method.
* `StanzaPath.match` (the disco and ping handlers) re-splits its path on
  every call to find that an iq path does not match a message;
  `fast_stanzapath_match` answers that "no" from the first step.

`install()` replaces the three in slixmpp's modules, once per process. They
are drop-in equal: tests/unit/test_xmpp_speedups.py compares them with the
originals on generated input, so a slixmpp release that changes their
behaviour fails the tests instead of changing the wire format. `escape_text`
is not a replacement: it is the escaping rulebot's own payload text uses.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from slixmpp.xmlstream.matcher.stanzapath import StanzaPath
from slixmpp.xmlstream.matcher.xpath import MatchXPath

_tostring = importlib.import_module("slixmpp.xmlstream.tostring")
original_escape: Callable[..., str] = getattr(_tostring, "escape")  # noqa: B009
original_match: Callable[[Any, Any], bool] = MatchXPath.match
original_stanzapath_match: Callable[[Any, Any], bool] = StanzaPath.match

_XML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&apos;"),
                ('"', "&quot;"))

def _replace(text: str, escapes: tuple[tuple[str, str], ...]) -> str:
    for char, entity in escapes:  # "&" first: the entities contain it
        if char in text:
            text = text.replace(char, entity)
    return text


def fast_escape(text: str, use_cdata: bool = False) -> str:
    """slixmpp's `escape`, by str.replace instead of a loop over every character."""
    if use_cdata:
        return original_escape(text, use_cdata)
    return _replace(text, _XML_ESCAPES)


def escape_text(text: str) -> str:
    """Character data escaped as XML requires and no more: "&", "<" and ">"
    (XML 1.0, 2.4). Quotes stay quotes, unlike slixmpp's escape, which writes
    them as entities even in text nodes."""
    return _replace(text, _XML_ESCAPES[:3])


# One path step as slixmpp writes them after fix_ns: {namespace}name. No "*"
# in the namespace: ElementPath reads {*} as "any namespace".
_STEP = re.compile(r"\{[^{}*]+\}[A-Za-z_][A-Za-z0-9_-]*")
_PLAN: dict[str, tuple[str, ...] | None] = {}


def _plan(criteria: str) -> tuple[str, ...] | None:
    """The tags of a plain `{ns}a/{ns}b/...` path; None for anything else."""
    if criteria in _PLAN:
        return _PLAN[criteria]
    parts: list[str] | None = []
    pos = 0
    while parts is not None:
        m = _STEP.match(criteria, pos)
        if m is None:
            parts = None
            break
        parts.append(m.group())
        pos = m.end()
        if pos == len(criteria):
            break
        if criteria[pos] != "/":
            parts = None
            break
        pos += 1
    plan = tuple(parts) if parts else None
    _PLAN[criteria] = plan
    return plan


def fast_match(self: Any, stanza: Any) -> bool:
    """MatchXPath.match for plain paths: the stanza's tag, then children by tag."""
    plan = _plan(self._criteria)
    if plan is None:
        return original_match(self, stanza)
    root = stanza.xml
    if root.tag != plan[0]:
        return False
    level = [root]
    for tag in plan[1:]:
        level = [child for element in level for child in element if child.tag == tag]
        if not level:
            return False
    return True


_FIRST_TAGS: dict[tuple[str, str], str] = {}  # (raw path, stanza namespace): its first tag


def _rejects(stanza: Any, tag: str) -> bool:
    """The first test of ElementBase.match, word for word: `tag` names neither
    the stanza nor one of its plugins (plugin_attrib is a string: `in` is a
    substring test there, as in slixmpp)."""
    name = stanza.name
    return (tag not in (name, "{%s}%s" % (stanza.namespace, name))  # noqa: UP031
            and tag not in stanza.loaded_plugins and tag not in stanza.plugin_attrib)


def fast_stanzapath_match(self: Any, stanza: Any) -> bool:
    """StanzaPath.match, answering the common "no" from the first path step.

    slixmpp's version calls stanza.match twice (the namespaced path, then the
    raw one, which it re-splits and re-namespaces on every call); both return
    False at once when their first step names neither the stanza nor one of
    its plugins. That test is made here on the two first steps, the raw one
    namespaced once per stanza namespace; in every other case the original
    runs."""
    if _rejects(stanza, self._criteria[0].split("@")[0]):
        key = (self._raw_criteria, stanza.namespace)
        first = _FIRST_TAGS.get(key)
        if first is None:
            first = _FIRST_TAGS[key] = stanza._fix_ns(
                self._raw_criteria, split=True, propagate_ns=False)[0].split("@")[0]
        if _rejects(stanza, first):
            return False
    return original_stanzapath_match(self, stanza)


def install() -> None:
    """Use the fast versions from now on (idempotent)."""
    setattr(_tostring, "escape", fast_escape)  # noqa: B010
    MatchXPath.match = fast_match  # type: ignore[method-assign,assignment]
    StanzaPath.match = fast_stanzapath_match  # type: ignore[method-assign]
