"""The per-stanza decision line: one JSON line per inbound stanza, written by
the daemon once it knows what was sent (docs/servers.md, "Logs"), into the
same stream and buffer as the daemon's other log lines, so they stay in order.
"""

from __future__ import annotations

import logging

from rulebot.bot.values import Inbound, Outcome, summary
from rulebot.logs import HEAD_KEYS, LOGGER, DirectWriter, direct_writer, fields

log = logging.getLogger(LOGGER)


class DecisionLog:
    """Writes the decision lines: straight to the daemon's JSON handler when
    logging is as `rulebot run` sets it up (logs.direct_writer, asked once,
    when this is made), through the logging module otherwise. The same line
    either way."""

    def __init__(self) -> None:
        self._direct: DirectWriter | None = direct_writer(LOGGER)

    def write(self, inbound: Inbound, outcome: Outcome, micros: float) -> None:
        """The decision line of one stanza (`micros`: the time its decision took)."""
        level = logging.DEBUG if outcome.status == "ignored" and outcome.reason in (
            "no-payload", "presence-subscription") else logging.INFO
        if outcome.status == "ignored" and outcome.reason == "domain-not-allowed":
            level = logging.WARNING
        if not log.isEnabledFor(level):
            return  # building the line costs more than deciding
        info: dict[str, object] = {
            "event": "stanza",
            "status": outcome.status,
            "kind": inbound.kind,
            "stanza_type": inbound.type,
            "stanza_id": inbound.id,
            "from": inbound.from_,
        }
        info.update(summary(outcome))
        if outcome.event_id is not None:
            info["event_id"] = outcome.event_id
        info["micros"] = round(micros, 1)
        # None of these keys is one of the line's head (HEAD_KEYS).
        self._emit(level, f"{inbound.kind} {outcome.status}", info)

    def line(self, level: int, msg: str, info: dict[str, object]) -> None:
        """One line with any fields, if `level` is enabled: fields named like
        the line's head (which format() lets replace it) take the ordinary path."""
        if not log.isEnabledFor(level):
            return
        if info.keys() & HEAD_KEYS:
            log.log(level, msg, extra=fields(**info))
        else:
            self._emit(level, msg, info)

    def _emit(self, level: int, msg: str, info: dict[str, object]) -> None:
        if self._direct is not None:
            self._direct(level, msg, info)
        else:
            log.log(level, msg, extra=fields(**info))


def log_store_failure(inbound: Inbound, outcome: Outcome) -> None:
    """The error line of a decision not carried out because the store failed."""
    log.error("the store failed; decision not carried out", extra=fields(
        event="store_failed", error=outcome.error, from_=inbound.from_, stanza_id=inbound.id))
