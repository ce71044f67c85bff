"""The audit trail: one JSON line per decision, to a file rotated by size.

Separate from the operational log:
it is meant to be kept, shipped and searched ("why did alice's message reach
bob on Tuesday?"). Payloads are left out unless the operator asks for them.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time

from rulebot.bot.values import Inbound, Outcome, summary
from rulebot.jid import bare_jid
from rulebot.model import line_time


class AuditLog:
    def __init__(self, path: str, max_bytes: int = 10_000_000, backups: int = 5,
                 payloads: bool = False) -> None:
        self.payloads = payloads
        self._logger = logging.getLogger(f"rulebot.audit.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def record(self, inbound: Inbound, outcome: Outcome, now: float | None = None) -> None:
        t = time.time() if now is None else now
        stamp = line_time(t)
        entry: dict[str, object] = {
            "time": stamp,
            "event_id": outcome.event_id,
            "stanza_id": inbound.id,
            "sender": bare_jid(inbound.from_),
            "from": inbound.from_,
            "kind": inbound.kind,
            "outcome": outcome.status,
        }
        entry.update(summary(outcome))
        if self.payloads:
            entry["sent"] = [{"to": o.to, "payload": o.payload} for o in outcome.outbound]
        self._logger.info(json.dumps(entry, ensure_ascii=False, default=str))

    def record_admin(self, who: str, command: str, args: dict[str, str], via: str,
                     ok: bool, text: str, now: float | None = None) -> None:
        """An admin command (or a refused attempt): who, what, how, what it did."""
        t = time.time() if now is None else now
        stamp = line_time(t)
        entry = {"time": stamp, "kind": "admin", "admin": who, "command": command,
                 "args": args, "via": via, "ok": ok, "result": text}
        self._logger.info(json.dumps(entry, ensure_ascii=False, default=str))

    def close(self) -> None:
        self._handler.close()
        self._logger.removeHandler(self._handler)
