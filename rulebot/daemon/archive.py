"""The inbound archive (opt-in): every decided event, with its envelope, the
rule-set version and the decision, one JSON line each (rulebot.engine.archive),
to a file rotated by size, for `rulebot replay` (docs/replay.md).

Lines are written as each read's outcomes are carried out, flushed to the
operating system at once (a killed daemon loses none it wrote), and rotated
like the audit trail: `archive.jsonl`, `archive.jsonl.1`, ... `.N`, the oldest
dropped. Retention is therefore `max_bytes * (backups + 1)` at most.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TextIO

from rulebot.bot.values import Outcome
from rulebot.engine.archive import Privacy, entry
from rulebot.jsonenc import encoder
from rulebot.logs import LOGGER, fields
from rulebot.model import line_time

log = logging.getLogger(LOGGER)

_encode = encoder(separators=(",", ":"), allow_nan=False, default=str)


class ArchiveLog:
    """Appends archive lines to `path`, rotating it when a line would take it
    past `max_bytes`. Written straight, not through the logging module: at
    thousands of events per second its record and handler walk (and the
    rotating handler's size check, a seek per line) cost more than the line."""

    def __init__(self, path: str, max_bytes: int, backups: int,
                 privacy: Privacy | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        # Nothing to drop or hash: no copy of each event to make.
        self.privacy = privacy if privacy is not None and (privacy.drop or privacy.hash) \
            else None
        self.written = 0
        self.failed = 0  # lines lost to write errors (a full disk, a removed directory)
        self._failing = False
        self._file: TextIO | None = self.path.open("a", encoding="utf-8")
        self._size = self._file.tell()

    def record(self, outcome: Outcome, now: float | None = None) -> None:
        """Archive `outcome` if the rules decided it (not a duplicate, a refusal
        or an event that could not be read: nothing to re-decide)."""
        if outcome.status not in ("decided", "rejected") or outcome.decision is None \
                or outcome.envelope is None:
            return
        t = time.time() if now is None else now
        stamp = line_time(t)
        line = _encode(entry(outcome.envelope, outcome.decision, stamp, self.privacy)) + "\n"
        size = len(line.encode()) if not line.isascii() else len(line)
        # Never raises: the archive is for analysis, and a failing disk must
        # not stop the read's messages from being sent.
        try:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
                self._size = self._file.tell()
            if self._size and self._size + size > self.max_bytes:
                self._rotate()
            assert self._file is not None
            self._file.write(line)
            self._file.flush()  # to the operating system: a killed daemon loses no line
        except (OSError, ValueError) as exc:
            self.failed += 1
            if not self._failing:  # once per outage, not per event
                log.error("cannot write the archive; lines are lost until it can",
                          extra=fields(event="archive_failed", path=str(self.path),
                                       error=str(exc)))
            self._failing = True
            self._close_quietly()
            return
        if self._failing:
            log.info("writing the archive again", extra=fields(
                event="archive_recovered", path=str(self.path), lost=self.failed))
            self._failing = False
        self._size += size
        self.written += 1

    def _rotate(self) -> None:
        """PATH -> PATH.1 -> ... -> PATH.N, the oldest dropped (as logging's
        RotatingFileHandler names them; with no backups, PATH starts again)."""
        self._close_quietly()
        try:
            if self.backups > 0:
                for n in range(self.backups - 1, 0, -1):
                    older = Path(f"{self.path}.{n}")
                    if older.exists():
                        os.replace(older, f"{self.path}.{n + 1}")
                if self.path.exists():  # an operator may have moved it away
                    os.replace(self.path, f"{self.path}.1")
        finally:  # whatever the renames did, write on into a file
            self._file = self.path.open("a" if self.backups > 0 else "w", encoding="utf-8")
            self._size = self._file.tell()

    def _close_quietly(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def close(self) -> None:
        self._close_quietly()
