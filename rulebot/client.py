"""The client side: what an application embeds to talk to the friend bot.

See docs/protocol.md for the wire
protocol this implements.

    async with RulebotClient("alice@example.com", password, bot="friend@example.com",
                             ca_file="ca.pem") as client:
        client.send_event({"type": "chat", "to": "bob@example.com", "text": "hi"})
        pong = await client.request({"type": "ping"}, timeout=5)
        async for event in client:          # events routed to alice by the rules
            print(event.sender, event.payload)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from rulebot.errors import ConnectError, EventError, RulebotError
from rulebot.jid import bare_jid
from rulebot.model import JSON
from rulebot.wire.decode import Limits
from rulebot.wire.encode import JSON_NS, META_NS, RECEIPTS_NS, encode_payload
from rulebot.wire.resend import Resends
from rulebot.wire.xmlmap import read_event, write_event
from rulebot.xmpp.tls import backoff_delay, setup_tls

log = logging.getLogger("rulebot.client")

_SEEN = 10_000  # stanza ids remembered for de-duplication

@dataclass(frozen=True, slots=True)
class Received:
    """A message from the bot: an event routed to this user, a reply, or an error."""

    payload: dict[str, JSON]
    sender: str | None  # the original sender the bot names (None if not stated)
    rule: str | None
    version: str | None
    event_id: str | None  # id of the event this message answers or routes
    stanza_id: str | None
    encoding: str  # "body", "json" or an XML event's tag ("{namespace}local")
    in_reply_to: str | None = None  # id of the stanza that carried that event

    @property
    def error(self) -> dict[str, JSON] | None:
        """The error object when this is an error reply, else None. In an XML
        event the error is a child element, read as a list of one object."""
        err = self.payload.get("error")
        if isinstance(err, list) and len(err) == 1 and self.encoding.startswith("{"):
            err = err[0]
        return err if isinstance(err, dict) and "code" in err else None

    def to_json(self) -> dict[str, JSON]:
        return {"sender": self.sender, "rule": self.rule, "version": self.version,
                "event_id": self.event_id, "id": self.stanza_id, "encoding": self.encoding,
                "in_reply_to": self.in_reply_to, "payload": self.payload}


class RequestError(RulebotError):
    """The bot answered a request with an error reply."""

    def __init__(self, received: Received) -> None:
        err = received.error or {}
        self.code = str(err.get("code"))
        self.message = str(err.get("message"))
        self.path = err.get("path")
        self.received = received
        super().__init__(f"{self.code}: {self.message}")


def parse_message(msg: Any, xml_tags: Collection[str] = ()) -> Received | None:
    """The Received for a slixmpp message from the bot, or None if it carries no
    event object. `xml_tags`: the XML event elements ("{namespace}local") read
    as payloads (docs/protocol.md, "XML events"), before a <json/> or <body/>."""
    import json

    payload: Any = None
    encoding = ""
    for child in msg.xml if xml_tags else ():
        if child.tag in xml_tags:
            try:
                payload, encoding = read_event(child, _XML_LIMITS), child.tag
            except EventError:
                return None
            break
    if not encoding:
        container = msg.xml.find(f"{{{JSON_NS}}}json")
        encoding = "json" if container is not None else "body"
        text = (container.text or "") if container is not None else msg["body"]
        try:
            payload = json.loads(text)
        except (ValueError, TypeError):
            return None
    if not isinstance(payload, dict):
        return None
    meta = msg.xml.find(f"{{{META_NS}}}rulebot")
    get = (lambda k: meta.get(k)) if meta is not None else (lambda k: None)
    return Received(payload, get("sender"), get("rule"), get("version"), get("event"),
                    msg["id"] or None, encoding, get("stanza"))


#: What the client accepts of an XML payload from the bot (the bot's own
#: payloads: generous, but bounded).
_XML_LIMITS = Limits(max_bytes=16_777_216, max_depth=256, max_string=16_777_216,
                     max_items=1_000_000, max_attributes=10_000)


class RulebotClient:
    """One user's connection to the XMPP server, talking to the friend bot."""

    def __init__(
        self,
        jid: str,
        password: str,
        bot: str,
        *,
        host: str | None = None,
        port: int = 5222,
        ca_file: str | None = None,
        verify: bool = True,
        allow_plain: bool = False,
        encoding: str = "body",
        message_type: str = "chat",
        share_presence: bool = False,
        reconnect: bool = True,
        resend_after: float | None = None,
        confirm_deadline: float = 25.0,
    ) -> None:
        """With `resend_after` (seconds), each event asks for the bot's XEP-0184
        receipt and is sent again, with the same ids, every `resend_after`
        seconds without one, for up to `confirm_deadline` seconds: what a
        client of a component-mode bot needs to lose nothing when a worker
        dies (docs/protocol.md, "Receipts and resending"). Keep the deadline
        below the bot's idempotency.window (30 s by default): a resend after
        it would be decided again."""
        self.jid = jid
        self.bot = bot
        self.host = host or bare_jid(jid).split("@")[-1]
        self.port = port
        self.encoding = encoding
        #: XML event elements read from the bot's messages: the one this client
        #: sends in, if any (`xml_tags` may add more)
        self.xml_tags: set[str] = {encoding} if encoding.startswith("{") else set()
        self.message_type = message_type
        self.share_presence = share_presence
        self.reconnect = reconnect
        self.online = False
        self.duplicates = 0  # messages from the bot dropped as already received
        self._closing = False
        self._fatal: str | None = None
        self._incoming: asyncio.Queue[Received] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Received]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._session: asyncio.Event = asyncio.Event()  # a session has started once
        self._failed: asyncio.Event = asyncio.Event()  # a fatal error happened
        self._online: asyncio.Event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disconnected: asyncio.Event = asyncio.Event()
        self.resends: Resends[Any] | None = Resends(resend_after, confirm_deadline) \
            if resend_after is not None else None
        self._all_confirmed: asyncio.Event = asyncio.Event()
        self._all_confirmed.set()
        self._resender: asyncio.Task[None] | None = None
        full = jid if "/" in jid else f"{jid}/rulebot-{uuid.uuid4().hex[:8]}"
        x: Any = slixmpp.ClientXMPP(full, password)
        setup_tls(x, ca_file, verify, allow_plain)
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0199")
        x.roster.auto_authorize = None
        x.roster.auto_subscribe = False
        x.add_event_handler("session_start", self._on_session)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("failed_all_auth", self._on_fatal("authentication failed"))
        x.add_event_handler("ssl_invalid_chain",
                            self._on_fatal("TLS certificate could not be verified"))
        x.add_event_handler("message", self._on_message)
        # slixmpp's own "message" event needs a <body/>: XEP-0335 messages and
        # XML events have none. Every message of the bot has its <rulebot/>.
        x.register_handler(Callback(
            "rulebot meta", MatchXPath(f"{{{x.default_ns}}}message/{{{META_NS}}}rulebot"),
            self._on_meta_message))
        x.register_handler(Callback(
            "rulebot json", MatchXPath(f"{{{x.default_ns}}}message/{{{JSON_NS}}}json"),
            self._on_json_message))
        x.add_event_handler("presence_subscribe", self._on_subscribe)
        x.register_handler(Callback(
            "rulebot receipt", MatchXPath(f"{{{x.default_ns}}}message/{{{RECEIPTS_NS}}}received"),
            self._on_receipt))
        self.xmpp = x

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> RulebotClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self, timeout: float = 20.0) -> None:
        """Connect and wait for the session; raises ConnectError on failure or timeout."""
        self.xmpp.connect(self.host, self.port)
        waiters = [asyncio.ensure_future(self._session.wait()),
                   asyncio.ensure_future(self._failed.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self._fatal:
            self.xmpp.cancel_connection_attempt()
            raise ConnectError(f"{self.jid}: {self._fatal}")
        if not self._session.is_set():
            self.xmpp.cancel_connection_attempt()
            raise ConnectError(f"{self.jid}: no session with {self.host}:{self.port} "
                               f"after {timeout} s")

    async def close(self) -> None:
        """Leave cleanly (unavailable presence, stream close)."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        self.xmpp.cancel_connection_attempt()
        if self.online:
            self.xmpp.disconnect(wait=2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), timeout=5)
        if self._resender is not None:
            self._resender.cancel()
        if self.xmpp.transport is not None:
            self.xmpp.abort()  # a half-open connection: close the socket now, not at GC
        for fut in self._pending.values():
            fut.cancel()

    def _on_fatal(self, why: str) -> Any:
        def handler(_event: Any) -> None:
            self._fatal = why
            self._failed.set()
        return handler

    def _on_session(self, _event: Any) -> None:
        # Presence makes the server route bare-JID messages (and offline ones) here.
        self.xmpp.send_presence()
        if self.share_presence:
            self.xmpp.send_presence(pto=self.bot)
        self.online = True
        self._online.set()
        self._disconnected.clear()
        self._session.set()
        if self.resends is not None:
            for msg in self.resends.unsent():  # written while offline
                msg.send()

    def _on_disconnected(self, _reason: Any) -> None:
        self.online = False
        self._online.clear()
        self._disconnected.set()
        if self.reconnect and not self._closing and not self._fatal and self._session.is_set():
            self._task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        attempt = 0
        while not self.online and not self._closing:
            attempt += 1
            await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0, random.random))
            if self.online or self._closing:
                return
            self.xmpp.cancel_connection_attempt()
            self.xmpp.connect(self.host, self.port)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._online.wait(), timeout=10)

    # -- the bot's messages -----------------------------------------------------

    def _from_bot(self, jid: str) -> bool:
        return bare_jid(jid) == bare_jid(self.bot)

    def _on_meta_message(self, msg: Any) -> None:
        self._on_message(msg, handler="meta")

    def _on_json_message(self, msg: Any) -> None:
        if msg.xml.find(f"{{{META_NS}}}rulebot") is None:  # else the meta handler takes it
            self._on_message(msg, handler="json")

    def _on_message(self, msg: Any, handler: str = "") -> None:
        # One handler per message: the <rulebot/> one, else the XEP-0335 one,
        # else slixmpp's "message" event.
        if not handler and (msg.xml.find(f"{{{META_NS}}}rulebot") is not None
                            or msg.xml.find(f"{{{JSON_NS}}}json") is not None):
            return
        if msg["type"] == "error" or not self._from_bot(str(msg["from"])):
            return
        received = parse_message(msg, self.xml_tags)
        if received is None:
            log.warning("message from the bot without a JSON object: %s", msg["id"])
            return
        if received.stanza_id:
            # Messages are re-sent after a bot restart or a resumed stream:
            # the bot's deterministic ids let us drop duplicates here.
            if received.stanza_id in self._seen:
                self.duplicates += 1
                return
            self._seen[received.stanza_id] = None
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        fut = None
        if received.sender == bare_jid(self.jid):
            # By event id, or by stanza id for errors about undecodable events.
            fut = self._pending.get(received.event_id or "") or self._pending.get(
                f"stanza:{received.in_reply_to}")
        if fut is not None and not fut.done():
            fut.set_result(received)
            return
        self._incoming.put_nowait(received)

    def _on_subscribe(self, pres: Any) -> None:
        # Only the bot may subscribe to this user's presence through the library.
        if self._from_bot(str(pres["from"])):
            self.xmpp.send_presence(pto=pres["from"].bare, ptype="subscribed")

    # -- API ------------------------------------------------------------------

    def send_event(self, payload: dict[str, JSON], *, encoding: str | None = None) -> str:
        """Send one event to the bot; returns its id (an "id" is added when missing)."""
        return self._send(payload, encoding)[0]

    def _send(self, payload: dict[str, JSON], encoding: str | None = None
              ) -> tuple[str, str]:
        if "id" not in payload:
            payload = {**payload, "id": uuid.uuid4().hex}
        event_id = str(payload["id"])
        msg = self.xmpp.make_message(mto=self.bot, mtype=self.message_type)
        msg["id"] = uuid.uuid4().hex  # unique: the bot derives its message ids from it
        text = encode_payload(payload)
        encoding = encoding or self.encoding
        xml = write_event(payload, encoding) if encoding.startswith("{") else None
        if xml is not None:
            msg.xml.append(ET.fromstring(xml))
        elif encoding.startswith("{"):
            raise ValueError(f"this event has no XML form ({encoding}); send it as JSON")
        elif encoding == "json":
            container = ET.Element(f"{{{JSON_NS}}}json")
            container.text = text
            msg.xml.append(container)
        else:
            msg["body"] = text
        if self.resends is not None:
            ET.SubElement(msg.xml, f"{{{RECEIPTS_NS}}}request")
            self._all_confirmed.clear()
            if self._resender is None or self._resender.done():
                self._resender = asyncio.ensure_future(self._resend())
            if not self.online:  # sent at the next session (Resends.held says why)
                self.resends.held(msg["id"], msg)
                return event_id, msg["id"]
            self.resends.sent(msg["id"], msg)
        msg.send()
        return event_id, msg["id"]

    def _on_receipt(self, msg: Any) -> None:
        received = msg.xml.find(f"{{{RECEIPTS_NS}}}received")
        if self.resends is None or received is None or not self._from_bot(str(msg["from"])):
            return
        self.resends.confirm(received.get("id") or "")
        if not self.resends:
            self._all_confirmed.set()

    async def _resend(self) -> None:
        """Send unconfirmed events again while some wait (same stanza, same ids)."""
        resends = self.resends
        assert resends is not None
        while resends:
            await asyncio.sleep(min(1.0, resends.after / 2))
            if not self.online:
                continue  # after the reconnect; the deadline still runs
            again, dropped = resends.due()
            for msg in again:
                msg.send()
            for msg in dropped:
                log.warning("event %s not confirmed by the bot within %s s; given up",
                            msg["id"], resends.deadline)
            if not resends:
                self._all_confirmed.set()

    async def confirmed(self, timeout: float | None = None) -> int:
        """Wait until every event sent so far is confirmed or given up; returns
        how many were given up since the client started."""
        await asyncio.wait_for(self._all_confirmed.wait(), timeout=timeout)
        return self.resends.expired if self.resends is not None else 0

    def send_raw(self, body: str) -> None:
        """Send a body as is (for tests and operators poking at error handling)."""
        self.xmpp.send_message(mto=self.bot, mbody=body, mtype=self.message_type)

    async def request(self, payload: dict[str, JSON], timeout: float = 10.0) -> Received:
        """Send an event and wait for the bot's reply to it (matched by event id).

        Raises RequestError for an error reply, TimeoutError when nothing comes."""
        if "id" not in payload:
            payload = {**payload, "id": uuid.uuid4().hex}
        key = str(payload["id"])
        fut: asyncio.Future[Received] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        stanza_key = None
        try:
            _, stanza_id = self._send(payload)
            stanza_key = f"stanza:{stanza_id}"
            self._pending[stanza_key] = fut
            received = await asyncio.wait_for(fut, timeout=timeout)
        finally:
            self._pending.pop(key, None)
            if stanza_key:
                self._pending.pop(stanza_key, None)
        if received.error is not None:
            raise RequestError(received)
        return received

    async def receive(self, timeout: float | None = None) -> Received:
        """The next message from the bot that no request() claimed."""
        return await asyncio.wait_for(self._incoming.get(), timeout=timeout)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Received]:
        while True:
            yield await self._incoming.get()

    async def wait_online(self, timeout: float = 30.0) -> None:
        """Wait until the session is up (again, after a reconnect)."""
        await asyncio.wait_for(self._online.wait(), timeout=timeout)

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until the server has handled everything this client sent so far
        (an XEP-0199 ping to the server: it answers after what came before)."""
        domain = bare_jid(self.jid).split("@")[-1]
        await self.xmpp.plugin["xep_0199"].send_ping(domain, timeout=timeout)

    def subscribe(self) -> None:
        """Ask to subscribe to the bot (client mode); the bot subscribes back and
        this client approves it, so the user's presence reaches the bot."""
        self.xmpp.send_presence(pto=self.bot, ptype="subscribe")

    def set_presence(self, show: str | None = None, status: str | None = None) -> None:
        """Change this user's presence; also sent to the bot when share_presence is on."""
        kw: dict[str, Any] = {}
        if show:
            kw["pshow"] = show
        if status:
            kw["pstatus"] = status
        self.xmpp.send_presence(**kw)
        if self.share_presence:
            self.xmpp.send_presence(pto=self.bot, **kw)
