"""The bot's own XEP-0198-numbered stanzas not yet acknowledged by the server, on disk.

Imports: stdlib only.

Why it exists. To survive `kill -9` without losing events, an inbound stanza
may be acknowledged to the server only once what it produced can no longer be
lost. Before this journal the bot held each acknowledgement back until the
server had acknowledged the messages the stanza produced; under a burst that
kept thousands of stanzas in the server's stream-management queue (on Prosody
a larger heap to collect: ~100 µs more server CPU per event, measured). Now
every numbered stanza the bot has produced is appended here just before an
acknowledgement is written, so the acknowledgement may cover everything
handled so far: a restarted bot reloads the entries, resumes the session, and
slixmpp re-sends those the server's <resumed h=.../> says it never got.

It also carries the count of inbound stanzas handled (`h <count>\\n` after
each batch of entries), the number the acknowledgement then announces: a
restarted bot resumes with it. One append per acknowledgement; the state file
(xmpp.save_sm_state) is written only when a session starts.

The file is `<path>`: a header line naming the stream-management session,
then records `<seq> <bytes>\\n<stanza text>\\n` in sequence order. A stanza
numbered and acknowledged between two recordings is never written, so the
file may have gaps; everything before a gap was acknowledged, and only the
run after the last gap is loaded. Appends are one os.write each (no fsync:
like the state file, the journal guards against the process dying, and the
page cache outlives a killed process). A record cut short by a crash
mid-write is dropped on loading: the acknowledgement that needed it was never
written. When the file grows past `compact_bytes` (or twice what the last
rewrite kept, if more) it is rewritten, atomically, with only the
unacknowledged entries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Reversible, Sequence

MAGIC = "rulebot-sm-journal 1"
#: Sequence numbers wrap here (XEP-0198: h is an unsigned 32-bit count).
MAX_SEQ = 2**32

Entry = tuple[int, str]


class SmJournal:
    def __init__(self, path: str, compact_bytes: int = 1 << 20) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.sm_id: str | None = None
        self.last_seq: int | None = None  # the newest entry on disk
        self.handled: int | None = None  # the newest count on disk
        self._size = 0
        self._compact_at = compact_bytes  # twice what the last rewrite kept, at least

    def load(self, sm_id: str) -> tuple[list[Entry], int | None]:
        """The entries kept for session `sm_id` (consecutive, oldest first) and
        the last handled count recorded, or ([], None) if the file is missing,
        unreadable or of another session. The journal then continues from them."""
        entries, handled = _read(self.path, sm_id)
        self.sm_id = sm_id if handled is not None or entries else None
        self.last_seq = entries[-1][0] if entries else None
        self.handled = handled
        self._size = _size(self.path) if self.sm_id else 0
        return entries, handled

    def load_any(self) -> list[Entry]:
        """The entries of whatever session the file was written for."""
        return _read(self.path, None)[0]

    def record(self, sm_id: str, unacked: Reversible[tuple[int, object]], handled: int) -> int:
        """Make every entry of `unacked` (the numbered stanzas the server has not
        acknowledged, oldest first, as text or as objects whose str() is their
        text), and the handled count, be on disk; returns how many entries were
        written.

        Only entries newer than the last recorded are appended, or the whole
        queue when the session changed or the file outgrew its compaction
        size. Nothing is written when nothing changed."""
        if sm_id != self.sm_id or self._size > self._compact_at:
            entries = [(seq, str(item)) for seq, item in unacked]
            self._rewrite(sm_id, entries, handled)
            return len(entries)
        newer: list[Entry] = []
        for seq, item in reversed(unacked):
            if seq == self.last_seq:
                break
            newer.append((seq, str(item)))
        # Not finding the last recorded one means it was acknowledged: then all
        # of the queue is newer, which is what the loop collected.
        if not newer and handled == self.handled:
            return 0
        newer.reverse()
        data = _encode(newer) + b"h %d\n" % handled
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._size += len(data)
        if newer:
            self.last_seq = newer[-1][0]
        self.handled = handled
        return len(newer)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.sm_id = None
        self.last_seq = None
        self.handled = None
        self._size = 0

    def _rewrite(self, sm_id: str, unacked: Sequence[Entry], handled: int) -> None:
        data = f"{MAGIC} {sm_id}\n".encode() + _encode(unacked) + b"h %d\n" % handled
        tmp = f"{self.path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self.sm_id = sm_id
        self.last_seq = unacked[-1][0] if unacked else None
        self.handled = handled
        self._size = len(data)
        # A queue that is itself large must not be rewritten on every record.
        self._compact_at = max(self.compact_bytes, 2 * len(data))


def _encode(entries: Sequence[Entry]) -> bytes:
    parts = []
    for seq, text in entries:
        body = text.encode("utf-8")
        parts.append(b"%d %d\n" % (seq, len(body)))
        parts.append(body)
        parts.append(b"\n")
    return b"".join(parts)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read(path: str, sm_id: str | None) -> tuple[list[Entry], int | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return [], None
    header, sep, rest = data.partition(b"\n")
    magic, _, written_for = header.decode("utf-8", "replace").rpartition(" ")
    if not sep or magic != MAGIC or (sm_id is not None and written_for != sm_id):
        return [], None
    entries: list[Entry] = []
    handled: int | None = None
    pos = 0
    while pos < len(rest):
        line_end = rest.find(b"\n", pos)
        if line_end < 0:
            break  # cut short by a crash mid-write
        line = rest[pos:line_end]
        if line.startswith(b"h "):
            try:
                handled = int(line[2:]) % MAX_SEQ
            except ValueError:
                break
            pos = line_end + 1
            continue
        try:
            seq_text, size_text = line.split(b" ")
            seq, size = int(seq_text), int(size_text)
        except ValueError:
            break
        start, end = line_end + 1, line_end + 1 + size
        if end + 1 > len(rest) or rest[end:end + 1] != b"\n":
            break  # cut short by a crash mid-write
        if entries and seq != (entries[-1][0] + 1) % MAX_SEQ:
            # A gap: the stanzas in it were acknowledged before they could be
            # recorded, and so was everything before them. Keep the newer run.
            entries = []
        try:
            entries.append((seq, rest[start:end].decode("utf-8")))
        except UnicodeDecodeError:
            break
        pos = end + 1
    return entries, handled
