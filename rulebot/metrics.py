"""Prometheus metrics of the daemon (prometheus-client), in a registry of its own.

Imports: dispatch (Outcome), reload (ReloadResult), rules, model, stdlib,
prometheus_client. The daemon calls the observe_* methods; the HTTP endpoint
(httpd.py) renders `render()`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from rulebot.dispatch import Outcome
from rulebot.model import ErrorReply
from rulebot.reload import ReloadResult
from rulebot.rules import RuleSet


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("rulebot_events_total", "Stanzas handled, by kind and outcome",
                              ["kind", "status"], registry=r)
        self.matches = Counter("rulebot_rule_matches_total", "Times each rule matched",
                               ["rule"], registry=r)
        self.actions = Counter("rulebot_actions_total", "Actions decided, by type",
                               ["type"], registry=r)
        self.sent = Counter("rulebot_messages_sent_total", "Messages handed to the connection",
                            registry=r)
        self.errors = Counter("rulebot_error_replies_total", "Error replies, by code",
                              ["code"], registry=r)
        self.rule_errors = Counter("rulebot_rule_errors_total",
                                   "Runtime errors inside rules (the rule counted as not "
                                   "matching)", ["rule"], registry=r)
        self.latency = Histogram("rulebot_decision_seconds", "Time from stanza to decision",
                                 buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                          0.025, 0.05, 0.1, 0.25), registry=r)
        self.reloads = Counter("rulebot_reloads_total", "Rule reloads, by result", ["result"],
                               registry=r)
        self.last_reload_ok = Gauge("rulebot_last_reload_successful",
                                    "1 if the last reload succeeded (or none happened yet)",
                                    registry=r)
        self.last_reload_time = Gauge("rulebot_last_reload_timestamp_seconds",
                                      "Time of the last reload attempt", registry=r)
        self.ruleset = Info("rulebot_ruleset", "The rule set in force", registry=r)
        self.rule_count = Gauge("rulebot_rules", "Rules in the set in force", registry=r)
        self.connected = Gauge("rulebot_connected", "1 while the XMPP session is up",
                               registry=r)
        self.queue = Gauge("rulebot_outbound_queue", "Messages waiting for the connection",
                           registry=r)
        self.unacked = Gauge("rulebot_sm_unacked_stanzas",
                             "Stanzas sent but not yet acknowledged by the server (XEP-0198; "
                             "kept for re-sending)", registry=r)
        self.last_reload_ok.set(1)
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}

    def bind(self, connected: Callable[[], bool], queue_depth: Callable[[], int],
             unacked: Callable[[], int] = lambda: 0) -> None:
        """Read connection state and queue depths at scrape time."""
        self.connected.set_function(lambda: 1.0 if connected() else 0.0)
        self.queue.set_function(lambda: float(queue_depth()))
        self.unacked.set_function(lambda: float(unacked()))

    def observe(self, kind: str, outcome: Outcome, seconds: float, sent: int) -> None:
        child = self._child
        child(self.events, kind, outcome.status).inc()
        self.sent.inc(sent)
        decision = outcome.decision
        if outcome.status == "rejected" and outcome.reason and decision is None:
            child(self.errors, outcome.reason).inc()
        if decision is None:
            return
        self.latency.observe(seconds)
        for name in decision.matched:
            child(self.matches, name).inc()
        for action in decision.actions:
            child(self.actions, action.type).inc()
            if isinstance(action, ErrorReply):
                child(self.errors, action.code).inc()
        for error in decision.errors:
            child(self.rule_errors, error.rule).inc()

    def _child(self, metric: Counter, *labels: str) -> Counter:
        """`metric.labels(*labels)`, remembered: labels() takes a lock and builds a
        key on every call, several times per event. Label values are rule names,
        action types and error codes, so the cache is as small as the rule set."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_ruleset(self, ruleset: RuleSet) -> None:
        self.ruleset.info({"version": ruleset.version, "files": ",".join(ruleset.files)})
        self.rule_count.set(len(ruleset.rules))

    def observe_reload(self, result: ReloadResult, when: float) -> None:
        self.reloads.labels("ok" if result.ok else "failed").inc()
        self.last_reload_ok.set(1 if result.ok else 0)
        self.last_reload_time.set(when)

    def render(self) -> bytes:
        return generate_latest(self.registry)
