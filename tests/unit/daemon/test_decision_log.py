"""The daemon's per-stanza decision line (rulebot.daemon.decisions): the
dispatcher decides without logging; the daemon writes the line."""

from __future__ import annotations

import pytest
from dispatching import CHAT, RULESET, dispatcher, msg

from rulebot.daemon.decisions import DecisionLog


def test_the_sans_io_dispatcher_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="rulebot")
    outcome = dispatcher().handle(msg(CHAT))
    assert outcome.status == "decided"
    assert [r for r in caplog.records if r.name.startswith("rulebot")] == []


def test_every_handled_stanza_is_logged_with_its_decision(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level("INFO", logger="rulebot")
    inbound = msg(CHAT)
    DecisionLog().write(inbound, dispatcher().handle(inbound), 12.0)
    (record,) = [r for r in caplog.records if r.name == "rulebot"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["matched"] == ["chat-to-member"]
    assert fields["actions"] == [{"type": "forward", "to": ["bob@localhost"],
                                  "rule": "chat-to-member"}]
    assert (fields["event_id"], fields["version"]) == ("e1", RULESET.version)
    assert fields["micros"] == 12.0
