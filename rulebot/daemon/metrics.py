"""Prometheus metrics of the daemon (prometheus-client), in a registry of its own.

The daemon calls the observe_* methods; the HTTP endpoint
(httpd.py) renders `render()`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rulebot import __version__
from rulebot.bot.values import Outcome
from rulebot.daemon.reload import ReloadResult
from rulebot.engine.compare import Difference
from rulebot.model import ErrorReply
from rulebot.rules.ruleset import RuleSet

#: Bounds of the decision-time histogram, in seconds.
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

class _Counts:
    """One labelled counter kept as plain numbers and rendered at scrape time.

    prometheus-client's Counter takes a lock and walks a value object on every
    inc(); the decision path increments five or six of them per stanza (a
    twentieth of the bot's time per event). Only the event loop writes these;
    a scrape copies the dict (one C-level operation under the GIL)."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in sorted(dict(self.values).items()):
            family.add_metric(key, value)
        return family


class _HotMetrics(Collector):
    """The per-stanza counters and the decision-time histogram, as a collector."""

    def __init__(self) -> None:
        self.events = _Counts("rulebot_events", "Stanzas handled, by kind and outcome",
                              ("kind", "status"))
        self.matches = _Counts("rulebot_rule_matches", "Times each rule matched", ("rule",))
        self.actions = _Counts("rulebot_actions", "Actions decided, by type", ("type",))
        self.errors = _Counts("rulebot_error_replies", "Error replies, by code", ("code",))
        self.rule_errors = _Counts("rulebot_rule_errors", "Runtime errors inside rules (the "
                                   "rule counted as not matching)", ("rule",))
        self.silenced = _Counts("rulebot_silenced", "Decisions a silence changed: a muted "
                                "rule skipped or an event dropped, by silence", ("silence",))
        self.shadow_decisions = _Counts("rulebot_shadow_decisions", "Events the shadow rule "
                                        "set decided beside the live one", ())
        self.shadow_diff = _Counts("rulebot_shadow_diff", "Events the shadow rule set "
                                   "decides differently, by rule that differs", ("rule",))
        self.sent = 0
        self.latency_counts = [0] * (len(DECISION_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0

    def collect(self) -> Iterator[Metric]:
        yield self.events.family()
        yield self.matches.family()
        if self.shadow_decisions.values:  # only with a shadow set
            yield self.shadow_decisions.family()
            yield self.shadow_diff.family()
        yield self.actions.family()
        yield self.silenced.family()
        yield CounterMetricFamily("rulebot_messages_sent", "Messages handed to the connection",
                                  value=self.sent)
        yield self.errors.family()
        yield self.rule_errors.family()
        counts, cumulative, buckets = list(self.latency_counts), 0, []
        for bound, count in zip((*DECISION_BUCKETS, math.inf), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else str(bound), cumulative))
        yield HistogramMetricFamily("rulebot_decision_seconds", "Time from stanza to decision",
                                    buckets=buckets, sum_value=self.latency_sum)


class _ReadCounter(Collector):
    """A counter whose value another component keeps, read at scrape time."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self.read: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, value=self.read())


def build_info() -> dict[str, str]:
    """rulebot_build_info's labels. Versions are read from the installed
    distributions' metadata, not by importing (this layer does not import slixmpp)."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {"version": __version__, "python": platform.python_version(),
            "slixmpp": version("slixmpp"), "jmespath": version("jmespath")}


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.hot = _HotMetrics()
        r.register(self.hot)
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
        self.recovered = _ReadCounter(
            "rulebot_offline_recovered", "Messages found left in the bot's offline storage by "
            "the periodic XEP-0013 sweep (each was handled late)")
        r.register(self.recovered)
        self.last_reload_ok.set(1)
        self.silences = Gauge("rulebot_silences_active", "Silences in force (rulebot "
                              "silence list)", registry=r)
        Info("rulebot_build", "The running rulebot: its version and the Python and "
             "library versions it runs on", registry=r).info(build_info())
        # process_* (CPU, resident memory, open files, start time) and python_info
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def bind(self, connected: Callable[[], bool], queue_depth: Callable[[], int],
             unacked: Callable[[], int] = lambda: 0,
             recovered: Callable[[], int] = lambda: 0,
             silences: Callable[[], int] = lambda: 0) -> None:
        """Read connection state, queue depths and recovered messages at scrape time."""
        self.connected.set_function(lambda: 1.0 if connected() else 0.0)
        self.queue.set_function(lambda: float(queue_depth()))
        self.unacked.set_function(lambda: float(unacked()))
        self.recovered.read = recovered
        self.silences.set_function(lambda: float(silences()))

    def observe(self, kind: str, outcome: Outcome, seconds: float, sent: int) -> None:
        hot = self.hot
        hot.events.inc(kind, outcome.status)
        hot.sent += sent
        decision = outcome.decision
        if outcome.status == "rejected" and outcome.reason and decision is None:
            hot.errors.inc(outcome.reason)
        if decision is None:
            return
        hot.latency_counts[bisect.bisect_left(DECISION_BUCKETS, seconds)] += 1
        hot.latency_sum += seconds
        for name in decision.matched:
            hot.matches.inc(name)
        for action in decision.actions:
            hot.actions.inc(action.type)
            if isinstance(action, ErrorReply):
                hot.errors.inc(action.code)
        for error in decision.errors:
            hot.rule_errors.inc(error.rule)
        for silence in decision.silenced:
            hot.silenced.inc(silence)

    def observe_shadow(self, diff: Difference) -> None:
        self.hot.shadow_decisions.inc()
        for rule in diff.rules:
            self.hot.shadow_diff.inc(rule)

    def observe_ruleset(self, ruleset: RuleSet) -> None:
        self.ruleset.info({"version": ruleset.version, "files": ",".join(ruleset.files)})
        self.rule_count.set(len(ruleset.rules))

    def observe_reload(self, result: ReloadResult, when: float) -> None:
        self.reloads.labels("ok" if result.ok else "failed").inc()
        self.last_reload_ok.set(1 if result.ok else 0)
        self.last_reload_time.set(when)

    def render(self) -> bytes:
        return generate_latest(self.registry)

