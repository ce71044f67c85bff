"""What the bot sends: written at once while the session is up, numbered for
XEP-0198 re-sending, else kept in a bounded queue until the next session.

Part of the XMPP edge (rulebot.xmpp.connection owns one).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from slixmpp.plugins.xep_0198.stream_management import MAX_SEQ

from rulebot.bot.values import Outbound
from rulebot.logs import LOGGER, fields
from rulebot.wire.xmlmap import write_event
from rulebot.xmpp.patches import escape_text
from rulebot.xmpp.stanzas import payload_text, serialize_message, serialize_receipt

log = logging.getLogger(LOGGER)


def _receipt_id(stanza_id: str) -> str:
    """A receipt's own id, the same for the same message (a resend's receipt too)."""
    return "rr-" + hashlib.sha256(stanza_id.encode()).hexdigest()[:20]


class Outbox:
    """The bot's outgoing messages on one slixmpp stream."""

    def __init__(self, xmpp: Any, sm: Any, cap: int, sender: str | None,
                 online: Callable[[], bool]) -> None:
        """`sm` is the xep_0198 plugin (None without stream management); `sender`
        the from address of every message (a component's JID; None in client
        mode, where the server stamps it); `online` whether a session is up."""
        self.xmpp = xmpp
        self.sm = sm
        self.cap = cap
        self.sender = sender
        self.online = online
        self.queue: deque[Outbound] = deque()
        self.dropped = 0
        self._last_payload: object = None  # the payload _last_text encodes (kept alive)
        self._last_text: str | None = ""
        self._last_encoding = ""
        self._last_xml: str | None = None  # its XML event element ("": none; None: not XML)

    def send(self, out: Outbound, payload_json: str | None = None) -> None:
        """Send now when online, else keep it (bounded) until the session is back.
        `payload_json` is wire.encode_payload(out.payload) when the caller has it
        already (the idempotency records encode every payload they keep)."""
        if self.online():
            self.write(out, payload_json)
        else:
            self.keep(out)

    def keep(self, out: Outbound) -> None:
        if len(self.queue) >= self.cap:
            self.dropped += 1
            log.error("outbound queue full, message dropped", extra=fields(
                event="queue_full", to=out.to, id=out.id, cap=self.cap,
                dropped_total=self.dropped))
            return
        self.queue.append(out)

    def write(self, out: Outbound, payload_json: str | None = None) -> None:
        x = self.xmpp
        if not x.transport:  # the session is going down: keep it for the next one
            self.keep(out)
            return
        if out.payload is not self._last_payload or out.encoding != self._last_encoding:
            # A broadcast hands over one payload object per recipient, in a row:
            # encode and escape it once.
            self._last_payload = out.payload
            self._last_encoding = out.encoding
            self._last_xml = (write_event(out.payload, out.encoding) or "") \
                if out.encoding.startswith("{") else None
            self._last_text = None if self._last_xml else payload_text(out.payload) \
                if payload_json is None else escape_text(payload_json)
        self.write_text(serialize_message(out, self.sender, self._last_text, self._last_xml))

    def receipt(self, to: str, stanza_id: str) -> None:
        """An XEP-0184 receipt for `stanza_id`, now; none while the session is
        down (the client sends its event again and gets one then)."""
        if self.online() and self.xmpp.transport:
            self.write_text(serialize_receipt(to, stanza_id, self.sender, _receipt_id(stanza_id)))

    def write_text(self, text: str) -> None:
        """Write one stanza's text, numbered for re-sending under XEP-0198."""
        x = self.xmpp
        sm = self.sm
        request = False
        if sm is not None and sm.enabled_out:
            # What slixmpp's stream management does for a stanza passing its
            # send filter: number it and keep it for re-sending on resume.
            # Through the plugin's config dict and instance dict: its seq and
            # window are config values, reached through a Python __getattr__
            # after a failed lookup, and every assignment to a plugin goes
            # through a Python __setattr__ (1.9 µs per stanza against 0.24).
            cfg, attrs = sm.config, sm.__dict__
            seq = cfg["seq"] = (cfg["seq"] + 1) % MAX_SEQ
            sm.unacked_queue.append((seq, text))
            counter = attrs["window_counter"] - 1
            request = counter == 0
            attrs["window_counter"] = cfg["window"] if request else counter
        # Written now, not through slixmpp's send queue: nothing queued there
        # needs to precede it, and an ack queued after the stanza that caused
        # this message still leaves after it (see xmpp.sm.persist_sm).
        x.send_raw(text)
        if request:
            # After the stanza, so that the server's answer covers the whole
            # window (slixmpp's filter asks just before the stanza it counts).
            sm.request_ack()

    def flush(self) -> None:
        """Write what waited for the session, oldest first, while it stays up."""
        while self.queue and self.online() and self.xmpp.transport:
            self.write(self.queue.popleft())

    def unacked(self) -> int:
        """Our stanzas the server has not acknowledged yet (0 without stream management)."""
        return len(self.sm.unacked_queue) if self.sm is not None else 0
