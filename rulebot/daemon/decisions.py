"""The per-stanza decision line: one log line per inbound stanza, written by
the daemon once it knows what was sent (docs/servers.md, "Logs").
"""

from __future__ import annotations

import logging

from rulebot.bot.values import Inbound, Outcome, summary
from rulebot.logs import LOGGER, fields, log_hot

log = logging.getLogger(LOGGER)


def log_decision(inbound: Inbound, outcome: Outcome, micros: float) -> None:
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
    log_hot(log, level, f"{inbound.kind} {outcome.status}", info)


def log_store_failure(inbound: Inbound, outcome: Outcome) -> None:
    """The error line of a decision not carried out because the store failed."""
    log.error("the store failed; decision not carried out", extra=fields(
        event="store_failed", error=outcome.error, from_=inbound.from_, stanza_id=inbound.id))
