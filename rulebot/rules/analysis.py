"""Static analysis of a compiled rule set: warnings, never errors.

Pure.

A later rule can never match when an earlier enabled rule stops evaluation
(no `continue`, or a `drop`), its conditions are a subset of the later rule's
conditions (`&&`-parts compared structurally; no `match` is the empty set),
and its actions cannot fail at run time (a failing action makes a rule count
as not matching, which would let evaluation go on).
"""

from __future__ import annotations

from collections.abc import Iterator

from rulebot.model import Issue
from rulebot.rules.expr import Expr, canonical, conjuncts
from rulebot.rules.ruleset import Rule, RuleSet


def _stops(rule: Rule) -> bool:
    return not rule.cont or any(a.kind == "drop" for a in rule.actions)


def _can_fail(rule: Rule) -> bool:
    for action in rule.actions:
        if isinstance(action.to, Expr):
            return True  # an expression may yield something that is not a JID
        if isinstance(action.payload, Expr) and action.payload.calls_functions:
            return True
    return False


def shadowing_warnings(ruleset: RuleSet) -> Iterator[Issue]:
    stoppers: list[tuple[Rule, frozenset[str]]] = []
    for rule in ruleset.rules:
        if not rule.enabled:
            continue
        parts = frozenset(canonical(c) for c in conjuncts(rule.match))
        for earlier, earlier_parts in stoppers:
            if earlier_parts <= parts:
                why = ("matches every event" if not earlier_parts
                       else "matches every event this rule matches")
                yield Issue(rule.file, rule.line, rule.col, rule.where,
                            f"rule {rule.name!r} can never match: rule {earlier.name!r} "
                            f"({earlier.file}:{earlier.line}) {why} and "
                            "stops evaluation", severity="warning")
                break
        if _stops(rule) and not _can_fail(rule):
            stoppers.append((rule, parts))
