"""/metrics after real decisions: the per-stanza counters and the decision-time
histogram, kept as plain numbers and rendered in Prometheus' text format."""

from __future__ import annotations

import json
from pathlib import Path

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound
from rulebot.config import parse_config
from rulebot.daemon.metrics import DECISION_BUCKETS, Metrics
from rulebot.rules.loader import load_rules

RULES = Path(__file__).resolve().parents[3] / "rules"


def decide_and_observe(metrics: Metrics, bodies: list[str], seconds: list[float]) -> None:
    config = parse_config(f"jid: friend@localhost\nrules: {RULES}\n"
                          "allowed_domains: [localhost]\n")
    ruleset = load_rules(str(RULES))
    dispatcher = Dispatcher(config, lambda: ruleset)
    for n, (body, spent) in enumerate(zip(bodies, seconds, strict=True)):
        outcome = dispatcher.handle(Inbound("message", "alice@localhost/x", "chat",
                                            f"m{n}", body=body))
        metrics.observe("message", outcome, spent, len(outcome.outbound))


def samples(metrics: Metrics) -> dict[str, float]:
    out = {}
    for line in metrics.render().decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_counters_count_what_was_decided() -> None:
    m = Metrics()
    chat = json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi"})
    decide_and_observe(m, [chat, chat, "not json", json.dumps({"type": "ping"})],
                       [0.00005, 0.0003, 0.0003, 0.3])
    got = samples(m)
    assert got['rulebot_rule_matches_total{rule="chat-to-member"}'] == 2
    assert got['rulebot_rule_matches_total{rule="ping"}'] == 1
    assert got['rulebot_actions_total{type="forward"}'] == 2
    assert got['rulebot_actions_total{type="reply"}'] == 1
    assert got['rulebot_error_replies_total{code="invalid-json"}'] == 1
    assert got["rulebot_messages_sent_total"] == 4  # 2 forwards, the pong, the error reply
    assert sum(v for k, v in got.items() if k.startswith("rulebot_events_total{")) == 4


def test_the_histogram_is_cumulative_with_inclusive_bounds() -> None:
    m = Metrics()
    chat = json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi"})
    # on a bound, just above one, beyond the last: "le" means less than or equal
    spent = [DECISION_BUCKETS[0], 0.0003, 0.0003, 1.0]
    decide_and_observe(m, [chat] * 4, spent)
    got = samples(m)
    assert got['rulebot_decision_seconds_bucket{le="0.0001"}'] == 1
    assert got['rulebot_decision_seconds_bucket{le="0.00025"}'] == 1
    assert got['rulebot_decision_seconds_bucket{le="0.0005"}'] == 3
    assert got['rulebot_decision_seconds_bucket{le="0.25"}'] == 3
    assert got['rulebot_decision_seconds_bucket{le="+Inf"}'] == 4
    assert got["rulebot_decision_seconds_count"] == 4
    assert abs(got["rulebot_decision_seconds_sum"] - sum(spent)) < 1e-9


def test_recovered_offline_messages_are_read_from_the_sweeper_at_scrape_time() -> None:
    m = Metrics()
    swept = [0]
    m.bind(lambda: True, lambda: 0, lambda: 0, lambda: swept[0])
    assert samples(m)["rulebot_offline_recovered_total"] == 0
    swept[0] = 3
    assert samples(m)["rulebot_offline_recovered_total"] == 3
