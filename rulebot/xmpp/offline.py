"""Recover messages stranded in the server's offline storage (XEP-0013).

Why this exists: a server stores a message to the bot offline when, at the
moment it routes it, the bot has no available resource, and it flushes that
storage when the bot's initial presence arrives. ejabberd does the two in
different Erlang processes: a message routed just before the new session's
presence was processed, but stored just after the flush, stays in storage
until the bot's *next* login (seen under CPU load, right after a restart).
Prosody runs both in one event loop and cannot strand a message this way.

So in client mode the bot asks, shortly after each login and then
periodically, what is still in its offline storage (XEP-0013: the message
list, a disco#items query, each stored message's node and sender), and if
anything is, fetches it. ejabberd re-sends each stored message to the bot,
tagged with its storage node; the bot handles them like any event
(synchronously, in stream order) and then removes exactly those nodes. A
tag is trusted only if the list named its node with the message's sender:
the sender's address is stamped by the server, so a user who puts an
<offline/> tag in a message of their own can at most name one of their own
stored messages; tagged messages the list did not name are left alone (one
stored since the list is listed and handled at the next sweep). The removal is written after the
fetch's result, hence after every message the fetch produced and after what
the bot sent for them: if the bot dies in between, the messages are still
stored and are handled again when the next login or sweep brings them (at
least once, like XEP-0198 resumption), never lost. Until the server confirms
a removal, a stored message that comes back in a later fetch is removed again
but not handled again. A server whose fetch brings back a message it refused
to remove (ejabberd with `use_mam_for_storage` answers item-not-found to every
single removal) turns the sweeps off: otherwise every sweep would fetch the
same messages.

A server without XEP-0013 (Prosody 0.12) answers the list request with an
error; the sweeper then logs that once and stops for the life of the process.

Why not slixmpp's xep_0013 plugin: its `fetch` and `view` gather the re-sent
messages with a Collector handler and hand them over, all at once, with the
iq's result, whoever tagged them; rulebot must decide each in stream order as
it arrives (like any event, and before the removal is written) and trust a
tag only when the list named its node with that sender. The list is a plain
disco#items query either way, and a removal is one iq: what the plugin would
add is the part that does not fit.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from slixmpp.exceptions import IqError, IqTimeout

from rulebot.jid import bare_jid
from rulebot.logs import LOGGER, fields

log = logging.getLogger(LOGGER)

OFFLINE_NS = "http://jabber.org/protocol/offline"
OFFLINE_TAG = f"{{{OFFLINE_NS}}}offline"
ITEM_TAG = f"{{{OFFLINE_NS}}}item"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
#: The first sweep after a login, seconds (or the interval, if shorter): long
#: enough for a store racing the login's flush to have finished.
FIRST_SWEEP = 2.0
#: Seconds to wait for the list, and for the fetch's result (which follows
#: every fetched message).
FETCH_TIMEOUT = 30.0
#: Nodes per removal request.
REMOVE_BATCH = 200
#: Most nodes remembered as handled while their removal is unconfirmed.
MAX_UNCONFIRMED = 10_000
#: Error conditions meaning "this server does not do XEP-0013" (anything else,
#: e.g. a database failure, is retried at the next sweep).
UNSUPPORTED = frozenset({"service-unavailable", "feature-not-implemented", "bad-request",
                         "forbidden", "not-allowed", "item-not-found"})


def offline_node(xml: Any) -> str | None:
    """The storage node of a message re-sent by a XEP-0013 fetch, if it is one."""
    tag = xml.find(OFFLINE_TAG)
    if tag is None:
        return None
    item = tag.find(ITEM_TAG)
    node = item.get("node") if item is not None else None
    return node or None


def listed(reply: Any) -> dict[str, str]:
    """Node -> bare JID of the sender, of each stored message in a XEP-0013
    message list (the disco#items result)."""
    out: dict[str, str] = {}
    query = reply.find(f"{{{ITEMS_NS}}}query")
    for item in query if query is not None else ():
        node, name = item.get("node"), item.get("name")
        if item.tag == f"{{{ITEMS_NS}}}item" and node and name:
            out[node] = sender_of(name)
    return out


def sender_of(jid: str | None) -> str:
    """The bare JID the list and a fetched message's `from` are compared by."""
    return bare_jid(jid or "").lower()


def removal_payload(nodes: list[str]) -> ET.Element:
    """<offline/> asking the server to remove these stored messages."""
    offline = ET.Element(OFFLINE_TAG)
    for node in nodes:
        ET.SubElement(offline, ITEM_TAG, {"action": "remove", "node": node})
    return offline


class OfflineSweeper:
    """Fetches and removes messages left in the bot's offline storage.

    `collecting` is true while a fetch is outstanding: the connection's message
    handler then passes every message to `note`, and handles it only if that
    says so. One sweeper lives as long as the connection object, across
    reconnects: what it learnt about the server (no XEP-0013, no single
    removals) holds for the life of the process."""

    def __init__(self, xmpp: Any, own_jid: str, interval: float,
                 connected: Callable[[], bool]) -> None:
        self.xmpp = xmpp
        self.own_jid = own_jid  # bare
        self.interval = interval
        self.connected = connected
        self.collecting = False
        self._busy = False  # a sweep is in progress (list or fetch)
        self._expected: dict[str, str] = {}  # the current list: node -> sender
        self.supported = True
        self.stopping = False  # run() ends after the sweep in progress
        self.swept = 0  # messages recovered since the process started
        self.task: asyncio.Future[None] | None = None  # the periodic sweeps (start)
        self._found = 0  # handled in the current sweep
        self._nodes: list[str] = []  # to remove once the current fetch is answered
        # Handled, removal not confirmed yet (insertion-ordered, bounded).
        self._unconfirmed: dict[str, None] = {}
        # Removal answered as unsupported: if the server's fetch brings one of
        # these back, it truly cannot remove single messages.
        self._refused: dict[str, None] = {}

    def note(self, xml: Any) -> bool:
        """Record a fetched message's node; False if it must not be handled (now)."""
        node = offline_node(xml)
        if node is None:
            return True  # an ordinary message arriving during the fetch
        sender = self._expected.get(node)
        if sender is None or sender != sender_of(xml.get("from")):
            # Not a stored message this sweep listed: a tag a user wrote (or a
            # message stored since the list, which the next sweep lists).
            log.debug("message with an unlisted offline tag ignored", extra=fields(
                event="offline_tag_ignored", from_=xml.get("from"), node=node))
            return False
        if node in self._refused:
            self._cannot_remove()
        self._nodes.append(node)
        if node in self._unconfirmed:
            return False
        _remember(self._unconfirmed, node)
        self._found += 1
        return True

    def start(self) -> None:
        """Start the periodic sweeps (a session is up), unless running or off."""
        if self.supported and self.task is None:
            self.task = asyncio.ensure_future(self.run())

    def cancel(self) -> None:
        """Stop the periodic sweeps at once (the session went down)."""
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def finish(self, wait: float) -> None:
        """At shutdown: let a fetch in progress finish, up to `wait` seconds (its
        messages are being handled and must be removed, and they must reach the
        bot before it goes unavailable), then stop the sweeps."""
        task, self.task = self.task, None
        if task is None:
            return
        try:
            if self.collecting:
                self.stopping = True  # run() returns after this sweep
                await asyncio.wait({task}, timeout=wait)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """Sweep after FIRST_SWEEP, then every `interval`, until cancelled or stopped."""
        delay = min(FIRST_SWEEP, self.interval)
        while self.supported and not self.stopping:
            await asyncio.sleep(delay)
            delay = self.interval
            if self.supported and not self.stopping and self.connected():
                try:
                    await self.sweep()
                except Exception:  # a bug here must not end the sweeps unnoticed
                    log.exception("offline sweep failed", extra=fields(
                        event="offline_sweep_error", condition="internal"))

    async def sweep(self) -> int:
        """One list, fetch and removal; the number of messages recovered."""
        if self._busy:
            return 0
        self._busy = True
        try:
            return await self._sweep()
        finally:
            self._busy = False

    async def _sweep(self) -> int:
        ask = self.xmpp.make_iq_get(ito=self.own_jid)
        ET.SubElement(ask.xml, f"{{{ITEMS_NS}}}query", {"node": OFFLINE_NS})
        try:
            self._expected = listed((await ask.send(timeout=FETCH_TIMEOUT)).xml)
        except (IqError, IqTimeout) as exc:
            self._failed(exc)
            return 0
        if not self._expected:
            self._report(0, 0)
            return 0
        iq = self.xmpp.make_iq_get(ito=self.own_jid)
        ET.SubElement(ET.SubElement(iq.xml, OFFLINE_TAG), f"{{{OFFLINE_NS}}}fetch")
        self._nodes, self._found = [], 0
        self.collecting = True
        answered = False
        try:
            await iq.send(timeout=FETCH_TIMEOUT)
            answered = True
        except (IqError, IqTimeout) as exc:
            self._failed(exc)
        finally:
            self.collecting = False
            self._expected = {}
            # Also when cancelled or timed out: what was handled goes.
            nodes, found = self._nodes, self._found
            self._nodes, self._found = [], 0
            self.swept += found
            self._remove(nodes)
        if answered:
            self._report(found, len(nodes))
        return found

    def _report(self, found: int, removing: int) -> None:
        # A warning when it found any: each is an event that came late.
        log.log(logging.WARNING if found else logging.DEBUG,
                "recovered messages left in offline storage" if found else "offline sweep",
                extra=fields(event="offline_sweep", recovered=found,
                             recovered_total=self.swept, removing=removing))

    def _failed(self, exc: IqError | IqTimeout) -> None:
        if isinstance(exc, IqTimeout):
            # Messages of a fetch arriving later are handled as ordinary ones,
            # and again by the next sweep (at least once).
            log.warning("offline sweep timed out", extra=fields(event="offline_sweep_error",
                                                                condition="timeout"))
            return
        condition = exc.iq["error"]["condition"]
        if condition in UNSUPPORTED:
            self.supported = False
            log.info("the server does not offer XEP-0013 offline retrieval: no offline "
                     "sweeps", extra=fields(event="offline_sweep_off", condition=condition))
        else:
            log.warning("offline sweep failed", extra=fields(event="offline_sweep_error",
                                                             condition=condition))

    def _remove(self, nodes: list[str]) -> None:
        if not nodes or self.xmpp.transport is None:
            return  # still unconfirmed: a later fetch brings them back for removal
        for start in range(0, len(nodes), REMOVE_BATCH):
            batch = nodes[start:start + REMOVE_BATCH]
            iq = self.xmpp.make_iq_set(ito=self.own_jid)
            iq.xml.append(removal_payload(batch))
            # Not awaited: it must also go out while the sweep is being
            # cancelled (the connection going down).
            iq.send(timeout=FETCH_TIMEOUT).add_done_callback(
                lambda future, batch=batch: self._removed(future, batch))

    def _removed(self, future: asyncio.Future[Any], batch: list[str]) -> None:
        if future.cancelled():
            return  # the session ended: the next sweep removes them
        exc = future.exception()
        if exc is None:
            for node in batch:
                self._unconfirmed.pop(node, None)
            return
        condition = exc.iq["error"]["condition"] if isinstance(exc, IqError) else "timeout"
        if condition in UNSUPPORTED:
            for node in batch:
                _remember(self._refused, node)
        log.warning("could not remove recovered messages from offline storage; the next "
                    "sweep removes them", extra=fields(event="offline_sweep_error",
                                                       condition=condition))

    def _cannot_remove(self) -> None:
        if not self.supported:
            return
        # Every later fetch would bring the same messages back.
        self.supported = False
        log.error("the server cannot remove single offline messages (ejabberd: "
                  "use_mam_for_storage?): offline sweeps turned off; the messages recovered "
                  "are handled again at the next login",
                  extra=fields(event="offline_sweep_off", condition="removal-refused"))


def _remember(nodes: dict[str, None], node: str) -> None:
    """Add to an insertion-ordered set, dropping the oldest beyond MAX_UNCONFIRMED."""
    nodes[node] = None
    if len(nodes) > MAX_UNCONFIRMED:
        del nodes[next(iter(nodes))]
