"""The XMPP edge of the daemon: the bot's connection. Only rulebot.xmpp and
rulebot.client import slixmpp.

`BotConnection` logs in as the friend account (client mode) or connects as an
XEP-0114 component, turns stanzas into `bot.values.Inbound` values for a
callback, and sends `bot.values.Outbound` values. It owns reconnection
(exponential backoff with a cap and jitter), the bounded queue of messages
produced while offline (xmpp.outbox), XEP-0198 stream management
(persistence across restarts in xmpp.sm), presence subscriptions
from allowed domains, and the offline sweeps (xmpp.offline). Conversions
between stanzas and values are in xmpp.stanzas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback

from rulebot.bot.values import Inbound, Outbound
from rulebot.config import Config
from rulebot.errors import ConnectError
from rulebot.jid import bare_jid, split_jid
from rulebot.logs import LOGGER, fields
from rulebot.xmpp import failures, patches
from rulebot.xmpp.admin import AdminRunner
from rulebot.xmpp.admin import install as install_admin
from rulebot.xmpp.offline import OfflineSweeper
from rulebot.xmpp.outbox import Outbox
from rulebot.xmpp.sm import ResumeCheck, ack_all, clear_sm_state, persist_sm, position
from rulebot.xmpp.stanzas import MatchTag, to_inbound_message, to_inbound_presence
from rulebot.xmpp.tls import backoff_delay, setup_tls
from rulebot.xmpp.writes import WriteBatcher

log = logging.getLogger(LOGGER)

#: Our stanzas between two XEP-0198 ack requests. Measured on Prosody 0.12 with
#: a 10,000-event burst (bench/xmpp.py, client mode): 20 cost the server ~430
#: µs of CPU per event and 5 more still; 50 to 200 cost ~290 (3,300 events/s
#: against 2,200 at 20); 500 no better. Each of our acks of inbound stanzas
#: waits for the server's ack of what they produced (xmpp.sm.persist_sm), so a
#: smaller window keeps fewer stanzas waiting for re-delivery after a crash.
SM_WINDOW = 50
#: Seconds a shutdown waits for an offline sweep's fetch in progress.
SWEEP_WAIT = 5.0


_CHECKED = False


class BotConnection:
    """One connection of the bot to its server, kept up until `run` is told to stop."""

    def __init__(self, config: Config, secret: str, on_inbound: Callable[[Inbound], None],
                 rand: Callable[[], float] = random.random,
                 on_read_done: Callable[[], None] | None = None,
                 on_confirmed: Callable[[str, int], None] | None = None,
                 admin: AdminRunner | None = None) -> None:
        """`on_inbound` gets each stanza for the bot while a read from the server is
        handled; `on_read_done` is called after the read, before its writes
        leave (xmpp.writes.WriteBatcher); `on_confirmed(session, h)` when the
        server has processed the bot's acknowledgement of its inbound stanzas
        up to h (XEP-0198, xmpp.sm.persist_sm)."""
        self.config = config
        self.on_confirmed = on_confirmed
        self.on_inbound = on_inbound
        self.rand = rand
        self.online = False
        self._fatal: str | None = None
        self._failed = False  # the current connection attempt or session ended
        self._stopping = False
        self._state: asyncio.Event = asyncio.Event()  # set on any state change
        self.component = config.mode == "component"
        self.allowed = frozenset(d.lower() for d in config.allowed_domains)
        self._final_ack: Callable[[], None] | None = None  # set by xmpp.sm.persist_sm
        patches.install()
        self.xmpp = self._make(secret)
        if admin is not None:  # before the message route below
            install_admin(self.xmpp, admin)
        global _CHECKED
        if not _CHECKED:  # once per process: what of slixmpp's internals is as verified
            _CHECKED = True
            for problem in patches.check(self.xmpp):
                log.warning(problem, extra=fields(event="slixmpp_unverified"))
        self.writes = WriteBatcher(self.xmpp, on_read_done)  # active while a session is up
        self._sm: Any = self.xmpp.plugin["xep_0198"] if (
            not self.component and config.stream_management) else None
        self.outbox = Outbox(self.xmpp, self._sm, config.outbound_queue,
                             config.jid if self.component else None, lambda: self.online)
        self.sweeper: OfflineSweeper | None = OfflineSweeper(
            self.xmpp, config.jid, config.offline_sweep,  # client mode: a bare JID
            lambda: self.online) if not self.component and config.offline_sweep > 0 else None
        self.resume = ResumeCheck(self.xmpp, self._sm, self._resumed_stream_is_live) \
            if self._sm is not None else None
        # Last: it takes the handlers registered by now as the ones messages skip.
        self._route_messages_directly(self.xmpp)

    # -- construction -------------------------------------------------------

    def _make(self, secret: str) -> Any:
        c = self.config
        x: Any
        if self.component:
            x = slixmpp.ComponentXMPP(c.jid, secret, c.host, c.port)  # type: ignore[no-untyped-call]
        else:
            x = slixmpp.ClientXMPP(f"{c.jid}/{c.resource}", secret)
            setup_tls(x, c.tls.ca_file, c.tls.verify, c.tls.allow_plain, c.tls.direct_tls)
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0199")
        if not self.component:
            if c.stream_management:
                # Ask the server for an ack every SM_WINDOW of our stanzas: a smaller
                # window costs more round trips, a larger one holds back the acks of
                # inbound stanzas longer (see xmpp.sm.persist_sm).
                x.register_plugin("xep_0198", {"window": SM_WINDOW})
                if c.sm_state_file:
                    self._final_ack = persist_sm(x, c.sm_state_file, self._confirmed)
            x.roster.auto_authorize = None  # subscriptions are decided below
            x.roster.auto_subscribe = False
            x.add_event_handler("failed_all_auth", self._on_auth_failed)
            x.add_event_handler("session_resumed", self._on_session)
            # Online (initial presence) only once stream management is settled,
            # not at session_start: slixmpp starts the session when the
            # resource is bound, before it sends <enable/>, and the presence
            # makes the server hand over every event waiting in offline
            # storage. Sent before <enable/>, those were outside stream
            # management: neither counted nor re-sent, and a kill while the
            # bot worked through them lost the rest. stream_negotiated comes
            # after <enabled/> (or <failed/>, or a server without XEP-0198).
            x.add_event_handler("stream_negotiated", self._on_negotiated)
        else:
            x.add_event_handler("session_start", self._on_session)
        x.add_event_handler("disconnected", self._on_disconnected)
        x.add_event_handler("connection_failed", self._on_connection_failed)
        x.add_event_handler("ssl_invalid_chain", self._on_tls_failed)
        x.add_event_handler("stream_error", self._on_stream_error)
        # One handler for every message, body or XEP-0335 container or neither
        # (the dispatcher decides what to ignore), instead of slixmpp's "message"
        # and "message_error" events: those need a <body/> and each costs an
        # XPath match on every stanza.
        x.remove_handler("IM")
        x.remove_handler("IMError")
        x.register_handler(Callback("rulebot message", MatchTag(f"{{{x.default_ns}}}message"),
                                    self._on_message))
        # "presence" rather than presence_available: slixmpp names an available
        # presence with <show/> by its show value (presence_away, ...).
        x.add_event_handler("presence", self._on_presence)
        x.add_event_handler("presence_subscribe", self._on_subscribe)
        return x

    def _route_messages_directly(self, x: Any) -> None:
        off = patches.route_messages_directly(
            x, self._on_message,
            on_error=lambda: log.exception("internal error while handling a message",
                                           extra=fields(event="internal_error")),
            on_handlers_changed=lambda names: log.warning(
                "handlers registered after start-up: messages take slixmpp's general path",
                extra=fields(event="fast_path_off", handlers=names)))
        if off is not None:
            log.warning("slixmpp internals changed: messages take the general path",
                        extra=fields(event="fast_path_off", reason=off))

    # -- events from slixmpp --------------------------------------------------

    def _changed(self) -> None:
        self._state.set()

    def _on_negotiated(self, _event: Any) -> None:
        if self.xmpp.sessionstarted and not self.online:
            self._on_session(None)

    def _on_session(self, _event: Any) -> None:
        resumed = _event is not None and getattr(_event, "name", "") == "resumed"
        if resumed and self.resume is not None:
            self.resume.start()
        elif not self.component:
            # A resumed session keeps its presence; a new one sends it.
            self.xmpp.send_presence(ppriority=0)  # brings offline messages and bare-JID routing
        self.online = True
        self.writes.active = True
        if self.sweeper is not None and not self._stopping:
            self.sweeper.start()
        log.info("connected", extra=fields(event="connected", jid=self.config.jid,
                                           mode=self.config.mode, resumed=resumed,
                                           queued=len(self.queue)))
        self.outbox.flush()
        self._changed()

    def _resumed_stream_is_live(self) -> bool:
        """Whether a silent resumed stream is still worth giving up (ResumeCheck)."""
        return self.online and not self._stopping

    def _on_disconnected(self, reason: Any) -> None:
        was = self.online
        if self.resume is not None:
            self.resume.cancel()
        self.online = False
        self.writes.active = False
        if self.sweeper is not None:
            self.sweeper.cancel()
        self._failed = True
        if was and not self._stopping:
            log.warning("disconnected", extra=fields(event="disconnected", reason=str(reason)))
        self._changed()

    def _on_connection_failed(self, error: Any) -> None:
        log.warning("connection failed", extra=fields(event="connection_failed",
                                                       host=self.config.host,
                                                       port=self.config.port,
                                                       error=str(error)))
        self._failed = True
        self._changed()

    def _on_auth_failed(self, _event: Any) -> None:
        self._fatal = failures.auth_failed(self.config)
        self._changed()

    def _on_tls_failed(self, error: Any) -> None:
        self._fatal = failures.tls_failed(self.config, error)
        self._changed()

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"] if hasattr(error, "__getitem__") else str(error)
        self._fatal = failures.stream_refused(self.config, condition) or self._fatal
        more = {"hint": failures.CONFLICT_HINT} \
            if condition == "conflict" and self.component else {}
        log.warning("stream error", extra=fields(event="stream_error", condition=condition,
                                                 **more))
        self._changed()

    def _on_message(self, msg: Any) -> None:
        sweeper = self.sweeper
        # First: an unreadable stored message must still be removed.
        if sweeper is not None and sweeper.collecting and not sweeper.note(msg.xml):
            return  # handled in an earlier sweep, its removal not yet confirmed
        try:
            inbound = to_inbound_message(msg)
        except Exception:  # a stanza slixmpp could not make sense of never stops the bot
            log.exception("unreadable message stanza", extra=fields(event="bad_stanza"))
            return
        self.on_inbound(inbound)

    def _on_presence(self, pres: Any) -> None:
        if pres["type"] not in ("available", "unavailable", "away", "chat", "dnd", "xa", ""):
            return  # subscriptions are handled in _on_subscribe; errors and probes ignored
        if bare_jid(str(pres["to"])) != bare_jid(self.config.jid) and \
                not self.component:
            return
        try:
            inbound = to_inbound_presence(pres)
        except Exception:
            log.exception("unreadable presence stanza", extra=fields(event="bad_stanza"))
            return
        self.on_inbound(inbound)

    def _on_subscribe(self, pres: Any) -> None:
        sender = pres["from"]
        domain = split_jid(str(sender))[1].lower()
        allowed = domain in self.allowed
        mfrom = self.config.jid if self.component else None
        if allowed:
            # Accept, and ask for the user's presence in return so that it reaches the bot.
            self.xmpp.send_presence(pto=sender.bare, ptype="subscribed", pfrom=mfrom)
            self.xmpp.send_presence(pto=sender.bare, ptype="subscribe", pfrom=mfrom)
        else:
            self.xmpp.send_presence(pto=sender.bare, ptype="unsubscribed", pfrom=mfrom)
        log.info("subscription request", extra=fields(event="subscribe", from_=str(sender),
                                                       accepted=allowed))

    # -- sending --------------------------------------------------------------

    def send(self, out: Outbound, payload_json: str | None = None) -> None:
        """Send now when online, else keep it (bounded) until the session is back
        (xmpp.outbox.Outbox.send)."""
        self.outbox.send(out, payload_json)

    def receipt(self, to: str, stanza_id: str) -> None:
        """An XEP-0184 receipt for the message `stanza_id` from `to`."""
        self.outbox.receipt(to, stanza_id)

    @property
    def queue(self) -> deque[Outbound]:
        """Messages waiting for the next session."""
        return self.outbox.queue

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full."""
        return self.outbox.dropped

    def _confirmed(self, session: str, h: int) -> None:
        if self.on_confirmed is not None:
            self.on_confirmed(session, h)

    def stream_position(self) -> tuple[str, int] | None:
        """(XEP-0198 session id, number of the inbound stanza being handled), while
        stream management counts inbound stanzas and its acknowledgements are
        confirmed to on_confirmed (xmpp.sm.persist_sm); else None."""
        if self._sm is None or self._final_ack is None:
            return None
        return position(self._sm)

    @property
    def in_read(self) -> bool:
        """True while the stanzas of one read from the server are being handled."""
        return self.writes.reading

    def recovered(self) -> int:
        """Messages the offline sweeps recovered since the process started."""
        return self.sweeper.swept if self.sweeper is not None else 0

    def unacked(self) -> int:
        """Our stanzas the server has not acknowledged yet (0 without stream management)."""
        return self.outbox.unacked()

    # -- the connection loop --------------------------------------------------

    async def _wait_change(self, stop: asyncio.Event, timeout: float | None = None) -> None:
        self._state.clear()
        waiters = [asyncio.ensure_future(self._state.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set; then drain and disconnect cleanly.

        Raises ConnectError for failures that retrying cannot fix (bad
        credentials, an unverifiable certificate)."""
        c = self.config
        attempt = 0
        while not stop.is_set():
            self._failed = False
            self.xmpp.connect(c.host, c.port)
            while not (self.online or stop.is_set() or self._fatal or self._failed):
                await self._wait_change(stop)
            if self.online:
                attempt = 0
                while self.online and not stop.is_set() and not self._fatal:
                    await self._wait_change(stop)
            if self._fatal:
                self.xmpp.cancel_connection_attempt()
                self.xmpp.disconnect(wait=0)
                raise ConnectError(self._fatal)
            if stop.is_set():
                break
            # Our backoff, not slixmpp's own retry loop (which has no jitter
            # and grows to 300 s): cancel its pending attempt first.
            self.xmpp.cancel_connection_attempt()
            attempt += 1
            delay = backoff_delay(attempt, c.initial_delay, c.max_delay, self.rand)
            log.info("reconnecting", extra=fields(event="reconnect", attempt=attempt,
                                                  delay=round(delay, 2),
                                                  queued=len(self.queue)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop taking new events and leave cleanly.

        In client mode the bot first goes unavailable, so the server keeps new
        messages in offline storage, then pings the server: every stanza the
        server sent before the pong has been processed when the pong arrives."""
        self._stopping = True
        if self.sweeper is not None:
            await self.sweeper.finish(SWEEP_WAIT)
        self.xmpp.cancel_connection_attempt()
        pong = False
        if self.online and not self.component:
            self.xmpp.send_presence(ptype="unavailable")
            with contextlib.suppress(IqError, IqTimeout):
                await self.xmpp.plugin["xep_0199"].send_ping(self.config.jid.split("@")[-1],
                                                             timeout=5)
                pong = True
            sm = self.xmpp.plugin["xep_0198"] if self.config.stream_management else None
            if pong and sm is not None and sm.sm_id and self.xmpp.transport is not None:
                # The pong proves the server has everything we sent before it, so
                # every handled stanza may be acknowledged now; otherwise the server
                # would re-deliver the held-back ones when the stream closes.
                if self._final_ack is not None:
                    self._final_ack()
                else:
                    ack_all(self.xmpp, sm)
        position = self.stream_position() if pong else None
        if self.online or self.xmpp.transport is not None:
            self.xmpp.disconnect(wait=2.0)
            try:
                await asyncio.wait_for(self.xmpp.disconnected, timeout=5)
                if position is not None:
                    # The server closed the stream after our final acknowledgement:
                    # nothing of this session can come again.
                    self._confirmed(*position)
            except TimeoutError:
                self.xmpp.abort()
        if self.config.sm_state_file and not self.component:
            clear_sm_state(self.config.sm_state_file)  # the session ended cleanly
        if self.queue:
            log.warning("exiting with undelivered messages", extra=fields(
                event="undelivered", count=len(self.queue)))
        log.info("disconnected cleanly", extra=fields(event="stopped"))
