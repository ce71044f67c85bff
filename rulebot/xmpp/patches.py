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
are drop-in equal: tests/unit/xmpp/test_xmpp_speedups.py compares them with the
originals on generated input, so a slixmpp release that changes their
behaviour fails the tests instead of changing the wire format. `escape_text`
is not a replacement: it is the escaping rulebot's own payload text uses.

This module is the one place rulebot uses slixmpp's private names (with
xmpp/writes.py, which wraps the transport slixmpp writes to):
`tostring.escape`, `ElementBase._fix_ns`, and the stream's name-mangled
handler and filter tables (`route_messages_directly`). `check()` says at
start-up whether the installed slixmpp is the release they were verified on
and still has them; where one is missing, its fast path is left off and the
public path taken.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from slixmpp.xmlstream.matcher.stanzapath import StanzaPath
from slixmpp.xmlstream.matcher.xpath import MatchXPath

#: The slixmpp releases these were verified against (pyproject pins the same).
VERIFIED = ((1, 17),)

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


def check(stream: Any) -> list[str]:
    """What is off about the installed slixmpp, seen on one of its streams: an
    unverified release, a private name no longer where this module expects it.
    Empty when all is as verified."""
    import slixmpp
    from slixmpp.xmlstream import ElementBase

    problems = []
    version = tuple(int(p) for p in re.findall(r"\d+", slixmpp.__version__)[:2])
    if version not in VERIFIED:
        problems.append(f"slixmpp {slixmpp.__version__} is not a release rulebot was "
                        f"verified on ({', '.join('.'.join(map(str, v)) for v in VERIFIED)})")
    if not callable(original_escape):
        problems.append("slixmpp.xmlstream.tostring.escape is gone: payload escaping "
                        "takes the slow path")
    if not callable(getattr(ElementBase, "_fix_ns", None)):
        problems.append("ElementBase._fix_ns is gone: stanza-path matching takes slixmpp's path")
    for name in ("_XMLStream__handlers", "_XMLStream__filters"):
        if name not in vars(stream):
            problems.append(f"XMLStream has no {name}: messages take slixmpp's general path")
    return problems


#: Handlers slixmpp adds and removes while it waits for an iq's answer: they
#: match that answer's id only, never the bot's messages.
_TRANSIENT = ("IqCallback_", "IqWait_")


def route_messages_directly(x: Any, on_message: Callable[[Any], None],
                            on_error: Callable[[], None],
                            on_handlers_changed: Callable[[list[str]], None]) -> str | None:
    """Hand message stanzas to `on_message` without matching them against every
    registered handler; returns None, or why this was not done.

    slixmpp's recv_stanza runs each stanza through its "in" filters, then asks
    every handler (18 in client mode: stream negotiation, SASL, stream
    management, disco, ping, roster...) whether it matches, and runs those
    that do. For a message only `on_message`'s handler ever does (the caller
    removed the IM handlers; the rest match other elements), and the matching
    was a tenth of the bot's time per event. Messages still pass the filters
    (stream management counts them there); everything else takes slixmpp's
    path. A handler registered later (a plugin such as receipts or carbons)
    would never see a message this way, so while the handlers are not the
    ones present now (iq-answer waiters aside), messages take slixmpp's path
    too, and `on_handlers_changed` is told once which handlers are new."""
    filters = getattr(x, "_XMLStream__filters", None)
    handlers = getattr(x, "_XMLStream__handlers", None)
    if not isinstance(filters, dict) or not isinstance(filters.get("in"), list) \
            or not isinstance(handlers, list):
        return "slixmpp's handler and filter tables are not where they were"
    inbound = filters["in"]
    original = x.recv_stanza
    tag = f"{{{x.default_ns}}}message"
    known = frozenset(h.name for h in handlers)
    seen = [len(handlers)]  # the table's length when last found to hold no new handler
    told: set[str] = set()

    def recv_stanza(stanza: Any) -> None:
        if stanza.xml.tag != tag:
            original(stanza)
            return
        if len(handlers) != seen[0]:  # a change: look at the names once
            new = [h.name for h in handlers
                   if h.name not in known and not h.name.startswith(_TRANSIENT)]
            if new:
                if not told.issuperset(new):
                    told.update(new)
                    on_handlers_changed(new)
                original(stanza)
                return
            seen[0] = len(handlers)
        for f in inbound:
            stanza = f(stanza)
            if stanza is None:
                return
        try:
            on_message(stanza)
        except Exception:  # like slixmpp: a failing handler costs one stanza, not the stream
            on_error()

    x.recv_stanza = recv_stanza
    return None


#: Seconds an ad-hoc command session is kept after its last step: time to
#: fill in its form (slixmpp itself keeps every session it ever made, and
#: answers a later `complete` on one with its old result).
ADHOC_SESSION_KEEP = 600.0


def guard_adhoc_sessions(x: Any, on_foreign: Callable[[Any], None]) -> bool:
    """Make XEP-0050 sessions their starter's: slixmpp (1.17) lets anyone who
    knows a session id continue or complete it, as the JID that started it.
    A step of a session from another JID raises `forbidden` (after
    `on_foreign(iq)`), and sessions are forgotten ADHOC_SESSION_KEEP seconds
    after their last step. False when the plugin's private names are not as
    verified (the commands then run unguarded: the caller must not offer them)."""
    import asyncio

    from slixmpp.exceptions import XMPPError

    plugin = x.plugin["xep_0050"]
    handle = getattr(plugin, "_handle_command_all", None)
    if not callable(handle) or not isinstance(getattr(plugin, "sessions", None), dict):
        return False
    x.del_event_handler("command", handle)

    async def guarded(iq: Any) -> None:
        sessions = plugin.sessions
        sid = iq["command"]["sessionid"]
        session = sessions.get(sid) if sid else None
        if session is not None and session["from"] != iq["from"]:
            on_foreign(iq)
            raise XMPPError("forbidden", "this command session is someone else's")
        try:
            await handle(iq)
        finally:
            for key in {sid, *(k for k, s in sessions.items() if s.get("from") == iq["from"])}:
                if key in sessions:
                    asyncio.get_running_loop().call_later(
                        ADHOC_SESSION_KEEP, sessions.pop, key, None)

    x.add_event_handler("command", guarded)
    return True
