"""`explain`: the per-rule trace agrees with the decision and shows shadowed rules."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from click.testing import CliRunner

from rulebot.cli.main import main
from rulebot.engine.explain import explain
from rulebot.model import Envelope, Stanza
from rulebot.rules.loader import parse_rules

RULES = parse_rules(textwrap.dedent("""
    version: 1
    events:
      types:
        chat: {type: object, required: [to]}
    rules:
      - name: tag
        match: "event.type == 'chat'"
        continue: true
        actions: [{forward: {to: {value: log@x}}}]
      - name: chat
        match: "event.type == 'chat'"
        actions: [{forward: {to: event.to}}]
      - name: also-chat
        match: "event.to"
        actions: [{drop: {}}]
      - name: broken
        match: "length(event.n)"
        actions: [{drop: {}}]
      - name: disabled-rule
        enabled: false
        actions: [{drop: {}}]
"""))


def env(event: dict[str, object]) -> Envelope:
    return Envelope(event, "a@x", "a@x/r", Stanza("message", "chat", None), "friend@x")


def test_trace_shows_matched_shadowed_error_and_disabled() -> None:
    result = explain(RULES, env({"type": "chat", "to": "b@x", "n": 3}))
    assert result.decision.matched == ("tag", "chat")
    assert result.winner == "chat"
    assert [(t.rule, t.status) for t in result.rules] == [
        ("tag", "matched"), ("chat", "matched"), ("also-chat", "shadowed"),
        ("broken", "error"), ("disabled-rule", "disabled")]
    assert result.rules[2].value == "b@x"
    assert "invalid type" in result.rules[3].note


def test_rejected_event_evaluates_no_rule() -> None:
    result = explain(RULES, env({"type": "chat"}))
    assert result.decision.actions[0].type == "error"
    assert {t.status for t in result.rules} == {"not-evaluated", "disabled"}


def test_no_winner_when_nothing_stops_evaluation() -> None:
    result = explain(RULES, env({"type": "other", "n": 5}))
    assert result.winner is None
    assert result.decision.notes == ("no rule matched",)


def test_cli_explain_json(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"type": "chat", "to": "bob@localhost", "text": "x"}))
    rel = tmp_path / "r.jsonl"
    rel.write_text("\n".join(json.dumps({"subject": a, "object": b, "kind": "friend"})
                             for a, b in (("alice@localhost", "bob@localhost"),
                                          ("bob@localhost", "alice@localhost"))))
    out = CliRunner().invoke(main, ["explain", str(root / "rules" / "friends"), "--event",
                                    str(event), "--relations", str(rel), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["winner"] == "chat-friends"
    statuses = {r["rule"]: r["status"] for r in data["rules"]}
    assert statuses["chat-strangers"] == "shadowed"
    assert statuses["chat-blocked"] == "not-matched"
