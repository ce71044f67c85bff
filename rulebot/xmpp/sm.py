"""XEP-0198 stream management that survives a restart of the bot, kill -9
included: the session id and handled count in a state file, and
acknowledgements held back until what they cover is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from slixmpp.plugins.xep_0198.stanza import Ack
from slixmpp.plugins.xep_0198.stream_management import MAX_SEQ
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from rulebot.logs import LOGGER, fields
from rulebot.xmpp.stanzas import MatchTag

log = logging.getLogger(LOGGER)


def load_sm_state(path: str) -> tuple[str, int] | None:
    """(stream id, handled count) saved by a previous run, if any and readable."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return str(data["sm_id"]), int(data["handled"]) % MAX_SEQ
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_sm_state(path: str, sm_id: str, handled: int) -> None:
    """Write the state atomically (temporary file, then rename).

    No fsync: what this protects against is the bot process dying, and the
    page cache outlives a killed process. After a power loss the saved count
    may be older than the last ack sent; the server then refuses the resume
    (it already dropped those stanzas) and the bot starts a new session, which
    loses nothing it had not processed. An fsync per ack blocked the event
    loop for milliseconds, hundreds of times per 10,000 events."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"sm_id": sm_id, "handled": handled}, fh)
    os.replace(tmp, path)


def clear_sm_state(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def position(sm: Any) -> tuple[str, int] | None:
    """(session id, inbound stanzas handled) of the xep_0198 plugin `sm` while it
    counts inbound stanzas, else None."""
    if not sm.enabled_in:
        return None
    cfg = sm.config  # the plugin's values, without its attribute hooks
    session = cfg["sm_id"]
    return (session, cfg["handled"]) if session else None


def ack_all(x: Any, sm: Any) -> None:
    """Acknowledge every handled inbound stanza now (when persist_sm is not in use)."""
    final = Ack(x)
    final["h"] = sm.handled
    x.send_raw(str(final))


def persist_sm(x: Any, path: str,
               on_confirmed: Callable[[str, int], None] | None = None) -> Callable[[], None]:
    """Resume the XEP-0198 session across restarts, kill -9 included.

    slixmpp counts a stanza as handled when it is parsed and writes its
    acks straight to the socket, ahead of the messages still in its send
    queue; a crash then loses events the server believes delivered. Here
    the ack goes through the send queue like any stanza, so it leaves after
    every message produced by the stanzas it acknowledges (handlers run
    synchronously, in order), and the handled count is saved (atomically,
    see save_sm_state) just before the ack is written. A new process restores the
    session id and count and resumes; the server re-sends the rest.

    `on_confirmed(session id, h)` is told when the server has processed an
    acknowledgement of ours: it handled a stanza we sent after it, and it
    handles our stream in order. The inbound stanzas up to h can then not be
    delivered again, by resumption or from offline storage.

    Returns the final acknowledgement, for a clean shutdown: once a ping
    round trip proves the server has everything the bot sent, every handled
    stanza may be acknowledged."""
    sm = x.plugin["xep_0198"]
    saved = load_sm_state(path)
    # (inbound count, our outbound count when those stanzas were done): an
    # inbound stanza is acknowledged only once the server has acknowledged
    # what it produced, because a killed process's socket may be reset with
    # its last writes still unsent.
    pending: deque[tuple[int, int]] = deque()
    safe = [0]
    saved_h = [-1]  # what the state file holds (for this sm_id)
    everything_safe = [False]  # set at shutdown, after the ping barrier
    # (h of an ack we wrote, our outbound count when we wrote it): confirmed
    # once the server's count of our stanzas passes that count.
    written: deque[tuple[int, int]] = deque()
    if saved is not None:
        sm.sm_id, sm.handled = saved
        safe[0] = saved[1]
        log.info("resuming stream", extra=fields(event="sm_restore", handled=saved[1]))

    def send_ack() -> None:
        if not x.transport:
            return
        ack = Ack(x)
        ack["h"] = sm.handled
        x.send(ack)  # queued behind what the acknowledged stanzas produced

    def before_ack(stanza: Any) -> Any:
        if isinstance(stanza, Ack) and sm.sm_id:
            # Every stanza counted in h was handled and what it produced passed
            # this queue already: sm.seq counts it.
            pending.append((int(stanza["h"]), sm.seq))
            while pending and (pending[0][1] <= sm.last_ack or everything_safe[0]):
                safe[0] = pending.popleft()[0]
            stanza["h"] = safe[0]
            if saved_h[0] != safe[0]:  # acks repeat the same h while nothing is safe yet
                saved_h[0] = safe[0]
                save_sm_state(path, sm.sm_id, safe[0])
                if on_confirmed is not None:
                    written.append((safe[0], sm.seq))
        return stanza

    def enabled(_stanza: Any) -> None:
        pending.clear()
        written.clear()
        safe[0] = 0
        if sm.sm_id:
            saved_h[0] = 0
            save_sm_state(path, sm.sm_id, 0)

    def resumed(_stanza: Any) -> None:
        # A new process starts counting its stanzas at 0; the server's count
        # continues. Align ours with the server's acknowledgement.
        sm.seq = (sm.last_ack + len(sm.unacked_queue)) % MAX_SEQ
        written.clear()  # counted in the old numbering
        if on_confirmed is not None and sm.sm_id:
            # The server resumed from the h we sent in <resume/>: what it covers
            # is settled, whatever became of the old connection's acks.
            on_confirmed(sm.sm_id, sm.handled)

    def on_server_ack(stanza: Any) -> None:
        # The server acknowledged our stanzas: earlier inbound ones may now be
        # safe to acknowledge. XEP-0198 allows an <a/> without an <r/>, and
        # servers that wait for our answer before asking again need it. Only
        # when our h would grow: an ack repeating the last h costs the server
        # a round of its own (Prosody answers every ack with a new request).
        try:
            acked = int(stanza["h"])
        except (TypeError, ValueError):
            return
        if written and written[0][1] < acked:
            confirmed = None
            while written and written[0][1] < acked:
                confirmed = written.popleft()[0]
            if confirmed is not None and on_confirmed is not None and sm.sm_id:
                on_confirmed(sm.sm_id, confirmed)
        if sm.sm_id and pending and pending[0][1] <= acked:
            send_ack()

    def final_ack() -> None:
        # Queued like the others: an ack written straight to the socket would
        # overtake queued ones carrying a smaller h, and the server refuses
        # an h that goes backwards.
        everything_safe[0] = True
        send_ack()

    sm.send_ack = send_ack
    x.add_filter("out_sync", before_ack)
    x.register_handler(Callback("rulebot sm progress", MatchXPath(Ack.tag_name()),
                                on_server_ack, instream=True))
    x.add_event_handler("sm_enabled", enabled)
    x.add_event_handler("session_resumed", resumed)
    x.add_event_handler("session_end", lambda _e: clear_sm_state(path))
    return final_ack


#: Seconds a resumed stream has to answer the ack request the bot sends right
#: after <resumed/>. Prosody answers in milliseconds and ejabberd once it has
#: re-sent its queue (about a second for 10,000 stanzas); a resumed stream that
#: stays silent this long is being read by a stale parser (Prosody 0.12 and 13
#: after a kill mid-stanza, docs/servers.md) or is dead, and is given up.
RESUME_CHECK = 10.0


class ResumeCheck:
    """Ask for an ack at once on a resumed stream, and give the stream up if none
    comes within `seconds` (RESUME_CHECK).

    Prosody 0.12 (and 13) go on reading a resumed session with the parser of
    its old connection. When a kill cut the old connection in the middle of a
    stanza, that parser holds half a stanza: everything the bot writes after
    resuming nests inside it, its acks and requests included, and the server
    answers nothing until the nesting breaks (not-well-formed) or grows too
    large (policy-violation), which with little traffic may take forever.
    Given up, the session is not resumed again: the bot forgets it
    (session_end clears slixmpp's state and the state file) and logs in
    afresh with the same resource; the server replaces the old session and
    hands what it held unacknowledged to offline storage, which reaches the
    new session under stream management. Whatever the bot had decided of it
    is in its idempotency records, so it is sent again, not decided again.
    `live()` says whether giving up still makes sense (not while stopping)."""

    def __init__(self, x: Any, sm: Any, live: Callable[[], bool],
                 seconds: float = RESUME_CHECK) -> None:
        self.x, self.sm, self.live, self.seconds = x, sm, live, seconds
        self._timer: asyncio.TimerHandle | None = None
        x.register_handler(Callback("rulebot resume check", MatchTag(Ack.tag_name()),
                                    lambda _stanza: self.cancel(), instream=True))

    def start(self) -> None:
        self.cancel()
        self.sm.request_ack()
        self._timer = asyncio.get_running_loop().call_later(self.seconds, self._expired)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if not self.live():
            return
        log.warning("the resumed stream answered nothing; starting a new session",
                    extra=fields(event="resume_unverified", seconds=self.seconds))
        self.x.event("session_end")  # forget the session: no resumption next time
        self.x.abort()
