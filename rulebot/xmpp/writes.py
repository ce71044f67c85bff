"""One socket write per read, and an immediate TCP acknowledgement for reads that
get no answer: how the bot's side of the connection behaves; part of the XMPP edge.

slixmpp writes every stanza to its transport as it is sent. Under load the
bot reads many inbound stanzas at once (one `data_received` call) and answers
each with one or more messages: written one by one, that is a `send()` system
call per message, one TLS record per message in client mode, and as many
reads on the server's side. A profile of `rulebot run` under a burst put the
transport writes at 14% of the bot's time per routed event.

`WriteBatcher` collects what is sent while one read is being handled and
writes it in one piece when the handling returns. Order is kept exactly: the
handling is synchronous, so nothing else can write in between, and anything
sent outside a read (timers, the send queue's task) is written at once, as
before. Nothing is held back beyond the handling of the read that caused it,
so latency does not grow. `abort()` writes what is pending before slixmpp
closes the transport.

Batching is switched on only while a session is up (`active`): the stream
negotiation (STARTTLS, SASL, the stream restarts) keeps slixmpp's own writes.
It is also off when slixmpp's stream logger is at DEBUG, so that slixmpp's
"SEND:" lines stay complete for operators who turn them on.

A read that produced nothing to write is acknowledged at once at the TCP
level (see `_acknowledge_now`): servers with Nagle's algorithm on (Prosody's
default) otherwise wait up to 40 ms for the kernel's delayed acknowledgement.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

#: Linux only; elsewhere the kernel's delayed acknowledgements stay as they are.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: slixmpp logs every write ("SEND: ...") at DEBUG on this logger.
STREAM_LOGGER = "slixmpp.xmlstream.xmlstream"
#: The largest TLS record's plaintext (TLS 1.2 and 1.3: 2^14 bytes).
TLS_RECORD = 16384


def record_chunks(pieces: list[bytes], limit: int = TLS_RECORD) -> list[bytes]:
    """`pieces` (whole stanzas) joined into as few chunks as possible, each at most
    `limit` bytes unless it is a single larger piece, order kept."""
    chunks: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for piece in pieces:
        if run and size + len(piece) > limit:
            chunks.append(b"".join(run))
            run, size = [], 0
        run.append(piece)
        size += len(piece)
    if run:
        chunks.append(b"".join(run))
    return chunks


class WriteBatcher:
    """Installed on one slixmpp stream object (ClientXMPP or ComponentXMPP):
    wraps its `data_received`, `send_raw` and `abort` on the instance."""

    def __init__(self, stream: Any, after_read: Callable[[], None] | None = None) -> None:
        self.stream = stream
        self.active = False
        self.reading = False  # a read is being handled
        #: Called once the handlers of a read have run, before its writes leave
        #: (the daemon sends the read's messages there, after storing their
        #: idempotency records). Exceptions are the callee's to handle.
        self.after_read = after_read
        self.pending: list[bytes] | None = None  # a list only while a read is handled
        self.writes = 0  # transport writes made here (read by tests)
        self.stanzas = 0  # sends they carried
        self._read = stream.data_received
        self._send_raw = stream.send_raw
        self._abort = stream.abort
        self._debug = logging.getLogger(STREAM_LOGGER).isEnabledFor(logging.DEBUG)
        stream.data_received = self.data_received
        stream.send_raw = self.send_raw
        stream.abort = self.abort

    def data_received(self, data: bytes | str) -> None:
        batching = self.active and not self._debug
        if batching:
            self.pending = []
        self.reading = True
        try:
            self._read(data)
        finally:
            self.reading = False
            try:
                if self.after_read is not None:
                    self.after_read()
            finally:
                if batching:
                    answered = bool(self.pending)
                    self.flush()
                    if not answered:
                        self._acknowledge_now()

    def _acknowledge_now(self) -> None:
        """Have the kernel acknowledge the read at once (TCP_QUICKACK, Linux).

        A read the bot answers with data carries the TCP acknowledgement back
        at once. One it does not answer (the server's <a/>, a presence, a
        dropped event) is otherwise acknowledged by the delayed-ACK timer, up
        to 40 ms later, and Prosody, which keeps Nagle's algorithm on by
        default, holds its next writes to the bot until then. Found with a
        loopback capture of the soak (1,500 events/s) under an acknowledgement
        scheme tried and reverted in the same release: 51 pauses of over 30 ms
        in 4 s and a median latency of ~50 ms instead of ~18 ms; with the
        scheme in use the effect was not measured separately. Only such reads:
        acknowledging every read at once made Prosody send smaller pieces and
        cost burst throughput."""
        if _TCP_QUICKACK is None:
            return
        transport = self.stream.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)

    def send_raw(self, data: str | bytes) -> None:
        pending = self.pending
        if pending is None or not self.stream.transport:
            self._send_raw(data)
            return
        pending.append(data.encode("utf-8") if isinstance(data, str) else data)

    def flush(self) -> None:
        """Write what is pending, in one transport write, and stop collecting.

        The pieces are handed over in chunks of whole stanzas of at most
        TLS_RECORD bytes (a stanza larger than that alone), through
        `writelines`: asyncio's TLS transport encrypts each piece of a
        writelines() as records of its own (and sends them in one socket
        write), so every TLS record the bot writes ends at a stanza boundary.
        When the bot dies in the middle of a write and the server still reads
        everything that reached it (the connection ends with a FIN: the bot
        had nothing unread), the server gets whole stanzas only: it cannot
        decrypt a partial record, and a complete one holds no partial stanza.
        That matters to Prosody 0.12 and 13, which go on parsing a resumed
        session with the old connection's parser (docs/servers.md,
        "Resumption after a kill"). It cannot help when the connection ends
        with a reset (the bot died with unread data, as under load): Prosody
        then drops what it had not yet read, wherever its last 4 KiB read
        ended; BotConnection's resume check covers that case. On a plain TCP
        transport writelines() is one write of the joined bytes, as before."""
        pending, self.pending = self.pending, None
        if not pending:
            return
        transport = self.stream.transport
        if transport is None:
            # The connection went while the read was handled. slixmpp would have
            # raised on each write; the bot keeps its stanzas for re-sending
            # (stream management) or loses them with the connection, as before.
            return
        if len(pending) == 1:
            transport.write(pending[0])
        else:
            transport.writelines(record_chunks(pending))
        self.writes += 1
        self.stanzas += len(pending)

    def abort(self) -> None:
        self.flush()
        self._abort()
