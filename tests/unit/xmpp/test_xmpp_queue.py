"""While the session is down, outbound messages wait in a bounded queue; beyond
the cap new ones are dropped with a log line saying so (no server needed: the
connection is never opened)."""

from __future__ import annotations

import logging

import pytest

from rulebot.bot.values import Meta, Outbound
from rulebot.config import parse_config
from rulebot.xmpp.connection import BotConnection


def outbound(i: int) -> Outbound:
    return Outbound(f"bob{i}@localhost", {"n": i}, "body", "chat", f"rb-{i}",
                    Meta("alice@localhost", "r", "v1", str(i)))


def make(cap: int) -> BotConnection:
    config = parse_config("jid: friend@localhost\nrules: rules\n"
                          f"limits: {{outbound_queue: {cap}}}\n")
    return BotConnection(config, "secret", lambda _inbound: None)


def test_messages_beyond_the_outbound_queue_cap_are_dropped_with_a_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    conn = make(cap=3)
    with caplog.at_level(logging.INFO, logger="rulebot"):
        for i in range(5):
            conn.send(outbound(i))
    assert [o.id for o in conn.queue] == ["rb-0", "rb-1", "rb-2"]  # the oldest are kept
    assert conn.dropped == 2
    full = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "queue_full"]
    assert len(full) == 2
    assert full[-1].levelno == logging.ERROR
    assert full[-1].fields["cap"] == 3  # type: ignore[attr-defined]
    assert full[-1].fields["dropped_total"] == 2  # type: ignore[attr-defined]
    assert full[-1].fields["id"] == "rb-4"  # type: ignore[attr-defined]


def test_queued_messages_stay_queued_while_the_transport_is_gone() -> None:
    # "online" can still be true for a moment after the socket went away: the
    # flush must keep the messages, not spin or lose them.
    conn = make(cap=10)
    for i in range(3):
        conn.send(outbound(i))
    conn.online = True
    conn.outbox.flush()  # what the session-start handler calls
    assert [o.id for o in conn.queue] == ["rb-0", "rb-1", "rb-2"]
    assert conn.unacked() == 0
