"""Benchmark of rulebot's rule engine against two naive baselines.

Run:  .venv/bin/python bench/engine.py [--quick]      (full < 60 s, --quick < 10 s)

What it measures. For rule sets of 10, 100 and 1,000 rules, generated as YAML
text the way an operator would write them (most rules start with
`event.type == 'tN' && ...` followed by in_list / sender / regex_match / event
field conditions, with forward, broadcast, reply and error actions computed by
JMESPath; a few untyped rules: a banned-sender guard, an admin command rule,
a presence rule and a catch-all; three lists and two macros) and compiled with
`parse_rules`, it decides one fixed event stream (fixed random seed; event
types spread uniformly over the rule set's types, ~10% unknown types, ~5%
presence stanzas) with three implementations, in the same run:

  (a) engine    `rulebot.engine.evaluate.evaluate` on the compiled RuleSet, whose type
                index (`by_type`/`untyped`) limits each event to the rules that
                can match its type.
  (b) linear    the same `evaluate` on the same RuleSet with the index turned
                off (`dataclasses.replace(rs, by_type={}, untyped=<every rule>)`),
                i.e. a plain linear scan of precompiled JMESPath expressions.
                Only the index differs; the script asserts that (a) and (b) return
                identical Decisions on every event both measured.
  (c) uncompiled a hand-written loop calling `jmespath.search(source, data)`
                for each rule's match (and its actions' `to`/`payload` when it
                matches), with no precompilation, as a naive implementation
                would. Note: `jmespath.search` is not a full re-parse every time:
                jmespath keeps a process-wide FIFO cache of the 512 most recently
                parsed expressions. With 10 and 100 rules every expression stays
                cached, so (c) measures cache lookups plus interpretation; with
                1,000 rules (> 512 distinct expressions scanned in order) the FIFO
                cache thrashes and most calls re-parse. That is what a naive
                implementation would get, so it is measured as is. (c) does a
                little less work than (a)/(b) (no JID checks, no Decision built);
                the script asserts it matches the same rules as (a).

No event schemas are declared, so JSON Schema validation is not part of the
timings. Each implementation is warmed up first; the garbage collector stays
on (as in production) after a gc.collect(). Each decision is timed with
time.perf_counter(). (a) decides every event; (b) and (c) stop after a time
budget (full: 4 s, --quick: 0.5 s) and then cover only a prefix of the same
stream (the count is printed below the table; the stream is shuffled, so a
prefix is a representative sample).

How to read the table:
  rules                      size of the rule set
  engine decisions/s         (a) throughput: events decided / sum of their latencies
  p50 µs, p99 µs             (a) per-decision latency, median and 99th percentile
  linear scan decisions/s    (b) throughput, the baseline the index is judged by
  speed-up                   (a) over (b): time of (b) / time of (a) on exactly
                             the events both decided
  uncompiled search dec/s    (c) throughput
Then the shapes table (bench/shapes.py, 10 and 1,000 rules each): the index
against a linear scan of the same rules, decisions checked equal first
(untimed), then each decision timed without keeping it (kept, 20,000
decisions make a heap every collection walks; the daemon keeps none).
Below it: the load+validate time of the 1,000-rule set (parse_rule_files on the
text, median of 5; the requirement is < 1 s) and the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath

from bench.shapes import SHAPES, Shape
from rulebot.engine.evaluate import envelope_data, evaluate, truthy
from rulebot.model import JSON, Decision, Envelope, Stanza
from rulebot.rules.expr import Expr, expand
from rulebot.rules.functions import RuleFunctions
from rulebot.rules.loader import parse_rule_files, parse_rules
from rulebot.rules.ruleset import LiteralParam, Param, RuleSet

SEED = 20240611
SIZES = (10, 100, 1000)
BOT = "bot@example.org"
MEMBERS = [f"user{i}@example.org" for i in range(40)]
ADMINS = ["admin@example.org", "user0@example.org", "user1@example.org"]
ONCALL = ["user2@example.org", "user3@example.org", "ops@example.org"]
BANNED = [f"spam{i}@evil.example" for i in range(5)]
STRANGERS = [f"guest{i}@other.example" for i in range(10)]
MACROS = {
    "message": "stanza.kind == 'message'",
    "from_admin": "in_list('admins', sender)",
}
WORDS = ["deploy", "status", "lunch", "build", "report", "review", "ticket", "hello",
         "backup", "alert", "invoice", "meeting"]
RULES_PER_TYPE = 4


@dataclass(frozen=True)
class Mode:
    events: int
    budget_s: float  # time budget of each baseline measurement
    warmup_events: int
    warmup_s: float


FULL = Mode(events=20_000, budget_s=4.0, warmup_events=500, warmup_s=0.4)
QUICK = Mode(events=2_000, budget_s=0.5, warmup_events=100, warmup_s=0.1)


# ---------------------------------------------------------------- rule sets

def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def _rule(name: str, match: str, action: str) -> list[str]:
    return [f"  - name: {name}", f"    match: {_q(match)}", "    actions:", f"      - {action}"]


def _typed_rules(t: str, count: int, rng: random.Random) -> list[list[str]]:
    """`count` rules for event type `t`, most specific first, like an operator's."""
    templates: list[Callable[[], tuple[str, str]]] = [
        lambda: (
            f"event.type == '{t}' && in_list('members', sender) && in_list('members', event.to)",
            "forward: {to: event.to, payload: "
            + _q(f"{{type: '{t}', id: event.id, from: sender, text: event.text}}") + "}"),
        lambda: (
            f"event.type == '{t}' && sender == '{rng.choice(MEMBERS)}'",
            "reply: {payload: " + _q(f"{{type: '{t}-ack', id: event.id, ok: `true`}}") + "}"),
        lambda: (
            f"event.type == '{t}' && regex_match('^(urgent|{rng.choice(WORDS)})', event.text)",
            "broadcast: {to: lists.oncall, payload: "
            + _q(f"{{type: '{t}', id: event.id, from: sender, text: event.text, urgent: `true`}}")
            + "}"),
        lambda: (
            f"event.type == '{t}' && event.priority >= `{rng.randint(2, 5)}` "
            f"&& event.channel == 'ch{rng.randrange(8)}'",
            "forward: {to: " + _q("'ops@example.org'") + ", payload: "
            + _q(f"{{type: '{t}', id: event.id, priority: event.priority, from: sender}}") + "}"),
        lambda: (
            f"$message && event.type == '{t}' && $from_admin",
            "broadcast: {to: lists.members, payload: "
            + _q(f"{{type: '{t}', id: event.id, from: sender, text: event.text}}") + "}"),
        lambda: (
            f"event.type == '{t}' && !in_list('members', sender)",
            "error: {code: forbidden, message: " + _q(f"only members may send {t}") + "}"),
    ]
    chosen = rng.sample(range(len(templates)), k=min(count, len(templates)))
    out = [_rule(f"{t}-r{j}", *templates[k]()) for j, k in enumerate(chosen)]
    if count == RULES_PER_TYPE and rng.random() < 0.5:
        # Half of the types end with a catch-all for the type.
        out[-1] = _rule(f"{t}-other", f"event.type == '{t}'",
                        "error: {code: unhandled, message: " + _q(f"no handler for {t}") + "}")
    return out


def rule_text(n: int, seed: int = SEED) -> tuple[str, list[str]]:
    """(YAML text of an n-rule file, its event types)."""
    rng = random.Random(seed + n)
    extra_untyped = n // 250
    typed = n - 3 - extra_untyped
    n_types = -(-typed // RULES_PER_TYPE)
    types = [f"t{i}" for i in range(n_types)]
    typed_blocks: list[list[str]] = []
    left = typed
    for t in types:
        count = min(RULES_PER_TYPE, left)
        typed_blocks.extend(_typed_rules(t, count, rng))
        left -= count
    # A few untyped rules in the middle (admin commands): candidates for every event.
    for k in range(extra_untyped):
        typed_blocks.insert(
            (k + 1) * len(typed_blocks) // (extra_untyped + 1),
            _rule(f"admin-cmd{k}", f"$message && $from_admin && regex_match('^!cmd{k}', "
                  "event.text)", "reply: {payload: " + _q(f"{{type: 'cmd{k}-ok'}}") + "}"))
    lines = [
        "# Generated by bench/engine.py",
        "version: 1",
        "default: drop",
        "lists:",
        f"  members: {json.dumps(MEMBERS)}",
        f"  admins: {json.dumps(ADMINS)}",
        f"  oncall: {json.dumps(ONCALL)}",
        f"  banned: {json.dumps(BANNED)}",
        "macros:",
        *(f"  {k}: {_q(v)}" for k, v in MACROS.items()),
        "rules:",
        *_rule("drop-banned", "in_list('banned', sender)", "drop: {reason: banned}"),
        *_rule("member-presence", "stanza.kind == 'presence' && in_list('members', sender)",
               "broadcast: {to: lists.members, payload: "
               + _q("{type: 'presence', from: sender, show: event.show}") + "}"),
    ]
    for block in typed_blocks:
        lines.extend(block)
    lines.extend(_rule("unknown-type", "$message",
                       "error: {code: unknown-event-type, message: unknown event type}"))
    return "\n".join(lines) + "\n", types


def envelopes(types: Sequence[str], count: int, seed: int = SEED) -> list[Envelope]:
    rng = random.Random(seed)
    out: list[Envelope] = []
    for i in range(count):
        r = rng.random()
        sender = (rng.choice(BANNED) if r < 0.03 else rng.choice(ADMINS) if r < 0.10
                  else rng.choice(STRANGERS) if r < 0.20 else rng.choice(MEMBERS))
        full = f"{sender}/res{rng.randrange(3)}"
        if rng.random() < 0.05:
            event: dict[str, JSON] = {"presence": "available",
                                      "show": rng.choice(["chat", "away", "dnd"])}
            out.append(Envelope(event, sender, full, Stanza("presence", "available"), BOT))
            continue
        kind = rng.random()
        etype = f"x{rng.randrange(5)}" if kind < 0.10 else rng.choice(types)
        text = " ".join(rng.choices(WORDS, k=rng.randint(1, 6)))
        if rng.random() < 0.10:
            text = "urgent: " + text
        elif rng.random() < 0.03:
            text = f"!cmd{rng.randrange(4)} {text}"
        event = {
            "type": etype,
            "id": i,
            "to": rng.choice(MEMBERS) if rng.random() < 0.85 else rng.choice(STRANGERS),
            "text": text,
            "priority": rng.randint(0, 5),
            "channel": f"ch{rng.randrange(8)}",
        }
        out.append(Envelope(event, sender, full, Stanza("message", "normal", f"s{i}"), BOT))
    return out


def linear(ruleset: RuleSet) -> RuleSet:
    """The same rule set with the type index turned off: a plain linear scan."""
    return ruleset.linear()


# ------------------------------------------------- baseline (c): uncompiled

@dataclass(frozen=True)
class NaiveRule:
    name: str
    match: str | None  # macro-expanded JMESPath source, searched as text every time
    actions: tuple[tuple[str, str | LiteralParam | None, str | LiteralParam | None], ...]
    stops: bool


def _source(param: Param | None) -> str | LiteralParam | None:
    if param is None or isinstance(param, LiteralParam):
        return param
    return expand(param.source, MACROS)[0]


def naive_plan(ruleset: RuleSet) -> list[NaiveRule]:
    """Only the rules' source texts: what a naive implementation keeps."""
    plan = []
    for r in ruleset.rules:
        if not r.enabled:
            continue
        match = expand(r.match.source, MACROS)[0] if isinstance(r.match, Expr) else None
        acts = tuple((a.kind, _source(a.to), _source(a.payload)) for a in r.actions)
        stops = not r.cont or any(a.kind == "drop" for a in r.actions)
        plan.append(NaiveRule(r.name, match, acts, stops))
    return plan


def _search(param: str | LiteralParam, data: Any, options: jmespath.Options) -> JSON:
    if isinstance(param, LiteralParam):
        return param.value
    return jmespath.search(param, data, options)


def uncompiled(plan: Sequence[NaiveRule], ruleset: RuleSet, env: Envelope
               ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(matched rule names, action kinds) by jmespath.search on source text."""
    data = envelope_data(ruleset, env)
    options = jmespath.Options(custom_functions=RuleFunctions(ruleset.list_sets, None,
                                                              ruleset.rate_limits))
    matched: list[str] = []
    kinds: list[str] = []
    for rule in plan:
        try:
            if rule.match is not None and not truthy(jmespath.search(rule.match, data,
                                                                     options)):
                continue
            produced = []
            for kind, to, payload in rule.actions:
                recipients = _search(to, data, options) if to is not None else None
                body = _search(payload, data, options) if payload is not None else env.event
                produced.append((kind, recipients, body))
        except Exception:  # a failing rule counts as not matching, as in the engine
            continue
        matched.append(rule.name)
        kinds.extend(kind for kind, _, _ in produced)
        if rule.stops:
            break
    if not matched:
        kinds.append("drop")
    return tuple(matched), tuple(kinds)


# ---------------------------------------------------------------- measuring

@dataclass
class Run:
    latencies: list[float]  # seconds, one per decided event, in stream order
    results: list[Any]

    @property
    def n(self) -> int:
        return len(self.latencies)

    def rate(self) -> float:
        return self.n / sum(self.latencies)


def measure(decide: Callable[[Envelope], Any], envs: Sequence[Envelope], mode: Mode,
            budget_s: float | None, keep: bool = True) -> Run:
    """Time each decision; `keep`: also keep the results (to compare them). Kept,
    20,000 decisions make the heap every collection walks: the shapes table
    times without keeping, as the daemon keeps nothing."""
    clock = time.perf_counter
    warm_until = clock() + mode.warmup_s
    for env in envs[: mode.warmup_events]:
        decide(env)
        if clock() > warm_until:
            break
    gc.collect()
    latencies: list[float] = []
    results: list[Any] = []
    deadline = clock() + budget_s if budget_s is not None else float("inf")
    for env in envs:
        t0 = clock()
        result = decide(env)
        t1 = clock()
        latencies.append(t1 - t0)
        if keep:
            results.append(result)
        if t1 > deadline:
            break
    return Run(latencies, results)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Row:
    rules: int
    engine: Run
    scan: Run
    search: Run
    speedup: float


def bench_size(n: int, mode: Mode) -> Row:
    text, types = rule_text(n)
    indexed = parse_rules(text, f"bench-{n}.yaml")
    assert len(indexed.rules) == n, (len(indexed.rules), n)
    assert {str(d) for d in indexed.index.dims()} >= {"event.type"}, "typed rules are indexed"
    scan_rs = linear(indexed)
    plan = naive_plan(indexed)
    envs = envelopes(types, mode.events)

    engine = measure(lambda e: evaluate(indexed, e), envs, mode, None)
    scan = measure(lambda e: evaluate(scan_rs, e), envs, mode, mode.budget_s)
    search = measure(lambda e: uncompiled(plan, indexed, e), envs, mode, mode.budget_s)

    # Same decisions, so the speed-up is not from doing less.
    common = min(engine.n, scan.n)
    for i in range(common):
        assert engine.results[i] == scan.results[i], (n, i, envs[i])
    for i in range(min(engine.n, search.n)):
        d: Decision = engine.results[i]
        want = (d.matched, tuple(a.type for a in d.actions))
        assert search.results[i] == want, (n, i, search.results[i], want)
    # ...and the comparison is not vacuous.
    typed_hits = sum(1 for d in engine.results[:common]
                     if any(m.startswith("t") for m in d.matched))
    assert typed_hits > common // 4, (n, typed_hits, common)

    speedup = sum(scan.latencies[:common]) / sum(engine.latencies[:common])
    for run in (engine, scan, search):
        run.results.clear()  # a big live heap would slow the next measurements' GC
    return Row(n, engine, scan, search, speedup)


@dataclass(frozen=True)
class ShapeRow:
    shape: str
    small: Run  # 10 rules, indexed
    large: Run  # 1,000 rules, indexed
    scan: Run  # 1,000 rules, linear scan
    speedup: float  # scan time / index time on the events both decided

    @property
    def growth(self) -> float:
        return self.small.rate() / self.large.rate()


def _decider(rs: RuleSet) -> Callable[[Envelope], Decision]:
    return lambda env: evaluate(rs, env)


def bench_shape(name: str, shape: Shape, mode: Mode, sizes: tuple[int, int] = (10, 1000)
                ) -> ShapeRow:
    runs = []
    for n in sizes:
        text, make = shape(n)
        rs = parse_rules(text, f"{name}-{n}.yaml")
        assert len(rs.rules) == n, (name, n, len(rs.rules))
        envs = make(mode.events, SEED)
        linear = rs.linear()
        # First, untimed: the index changes no decision, and most events match.
        checked = envs[: max(500, mode.events // 10)]
        decided = [evaluate(rs, e) for e in checked]
        for i, env in enumerate(checked):
            assert decided[i] == evaluate(linear, env), (name, n, i, env)
        matched = sum(1 for d in decided if d.matched)
        assert matched > len(checked) // 2, (name, n, matched, len(checked))  # not vacuous
        del decided
        indexed = measure(_decider(rs), envs, mode, mode.budget_s, keep=False)
        scan = measure(_decider(linear), envs, mode, mode.budget_s, keep=False)
        common = min(indexed.n, scan.n)
        speedup = sum(scan.latencies[:common]) / sum(indexed.latencies[:common])
        runs.append((indexed, scan, speedup))
    (small, _, _), (large, scan, speedup) = runs
    return ShapeRow(name, small, large, scan, speedup)


def print_shapes(rows: Sequence[ShapeRow]) -> None:
    print("Rule-set shapes (bench/shapes.py): decisions/s on one core, index vs linear scan\n")
    print("| shape | 10 rules | 1,000 rules | p99 µs at 1,000 | cost 1,000 / 10 "
          "(target < 2) | linear scan, 1,000 rules | index speed-up at 1,000 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r.shape} | {_int(r.small.rate())} | {_int(r.large.rate())} "
              f"| {percentile(r.large.latencies, 99) * 1e6:.1f} | {r.growth:.2f}x "
              f"| {_int(r.scan.rate())} | {r.speedup:.1f}x |")
    print()
    for r in rows:
        if r.shape == "unindexable":
            continue
        verdict = "OK" if r.large.rate() >= 100_000 else "below"
        growth = "OK" if r.growth < 2 else "above"
        print(f"{r.shape}: {_int(r.large.rate())} decisions/s at 1,000 rules (target "
              f">= 100,000: {verdict}); cost growth {r.growth:.2f}x (target < 2: {growth})")
    print()


def load_time(n: int, repeat: int = 5) -> float:
    text, _ = rule_text(n)
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        result = parse_rule_files([(f"bench-{n}.yaml", text)])
        times.append(time.perf_counter() - t0)
        assert result.ruleset is not None, result.errors[:3]
        assert not result.errors, result.errors[:3]
    return statistics.median(times)


def _int(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer events, shorter budgets")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="only this shape's row")
    args = ap.parse_args(argv)
    mode = QUICK if args.quick else FULL
    started = time.perf_counter()

    load_s = load_time(1000)  # first, on a small heap
    shape_rows = [bench_shape(name, shape, mode) for name, shape in SHAPES.items()
                  if args.shape in (None, name)]
    if args.shape is not None:
        print_shapes(shape_rows)
        return 0
    rows = [bench_size(n, mode) for n in SIZES]

    print(f"rulebot engine benchmark ({'quick' if args.quick else 'full'}: "
          f"{mode.events:,} events, seed {SEED})\n")
    print("| rules | engine decisions/s | p50 µs | p99 µs | linear scan decisions/s "
          "| speed-up | uncompiled search decisions/s |")
    print("|------:|------:|------:|------:|------:|------:|------:|")
    for r in rows:
        lat = r.engine.latencies
        print(f"| {r.rules:,} | {_int(r.engine.rate())} | {percentile(lat, 50) * 1e6:.1f} "
              f"| {percentile(lat, 99) * 1e6:.1f} | {_int(r.scan.rate())} "
              f"| {r.speedup:.1f}x | {_int(r.search.rate())} |")
    print()
    print("events decided (engine / linear scan / uncompiled search): "
          + "; ".join(f"{r.rules:,} rules: {r.engine.n:,} / {r.scan.n:,} / {r.search.n:,}"
                      for r in rows))
    print()
    print_shapes(shape_rows)
    verdict = "OK" if load_s < 1.0 else "TOO SLOW"
    print(f"load+validate 1,000 rules (parse_rule_files, median of 5): {load_s:.3f} s "
          f"(requirement < 1 s: {verdict})")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: nproc={cpus}, Python {platform.python_version()} "
          f"({platform.python_implementation()}), {platform.machine()}, "
          f"jmespath {jmespath.__version__}; run took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
