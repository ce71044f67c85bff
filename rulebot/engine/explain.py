"""Why did (or didn't) a rule fire: a per-rule trace of one event. Pure.

The decision comes from engine.evaluate itself (so the explanation can never
disagree with what the daemon does); the trace then evaluates every rule's
`match` on its own to show each value, and which later rules would have
matched but were shadowed by the rule that stopped evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rulebot.engine.evaluate import (
    MAX_RECIPIENTS,
    applying,
    envelope_data,
    evaluate,
    runtime_for,
    truthy,
)
from rulebot.model import JSON, Decision, Envelope, Silence, stamp
from rulebot.rules.functions import StateView
from rulebot.rules.ruleset import RuleSet
from rulebot.rules.silences import Muting

Status = Literal["matched", "not-matched", "error", "shadowed", "disabled", "not-evaluated",
                 "silenced"]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    index: int
    rule: str
    file: str
    line: int
    status: Status
    value: JSON  # what `match` produced (True when the rule has no match)
    note: str = ""


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    rules: tuple[RuleTrace, ...]
    winner: str | None  # the rule that ended evaluation, if one did

    def to_json(self) -> dict[str, JSON]:
        from rulebot.engine.render import decision_json

        return {
            "decision": decision_json(self.decision),
            "winner": self.winner,
            "rules": [{"index": t.index, "rule": t.rule, "file": t.file, "line": t.line,
                       "status": t.status, "value": t.value, "note": t.note}
                      for t in self.rules],
        }


def explain(ruleset: RuleSet, env: Envelope, *, state: StateView | None = None,
            max_recipients: int = MAX_RECIPIENTS,
            silences: Sequence[Muting] = ()) -> Explanation:
    """The decision for `env` and a trace of every rule. Never raises."""
    decision = evaluate(ruleset, env, state=state, max_recipients=max_recipients,
                        silences=silences)
    errors = {e.rule: e.message for e in decision.errors}
    matched = set(decision.matched)
    stopper = None
    if decision.matched:
        last = decision.matched[-1]
        dropped = any(a.type == "drop" and a.rule == last for a in decision.actions)
        if dropped or not _continued(ruleset, last):
            stopper = last  # else evaluation ran past every rule
    rejected = not decision.matched and decision.actions and decision.actions[0].type == \
        "error" and decision.actions[0].rule is None and "no rule matched" not in decision.notes
    data = envelope_data(ruleset, env)
    runtime = runtime_for(ruleset, state, env.now)
    quieted, muted = applying(silences, env, data, runtime) if silences else (None, {})
    by_id = {m.silence.id: m.silence for m in silences}
    traces: list[RuleTrace] = []
    stopped = False
    for i, rule in enumerate(ruleset.rules, 1):
        if not rule.enabled:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "disabled", None))
            continue
        if quieted is not None:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "not-evaluated", None,
                                    f"the event was dropped by {_silence_note(by_id[quieted])}"))
            continue
        if rejected:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "not-evaluated", None,
                                    "the event was rejected before any rule ran"))
            continue
        value: JSON
        try:
            value = True if rule.match is None else rule.match.run(data, runtime)
        except Exception as exc:  # shown as data, like the engine does
            value = None
            note = f"{type(exc).__name__}: {exc}"
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "error", value, note))
            continue
        if rule.name in errors:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "error", value,
                                    errors[rule.name]))
        elif rule.name in muted and truthy(value) and not stopped:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "silenced", value,
                                    f"would match; muted by "
                                    f"{_silence_note(by_id[muted[rule.name]])}"))
        elif rule.name in matched:
            note = "ended evaluation" if rule.name == stopper else "continue: true"
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "matched", value, note))
        elif truthy(value) and stopped:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "shadowed", value,
                                    f"would match; {stopper!r} ended evaluation before it"))
        else:
            traces.append(RuleTrace(i, rule.name, rule.file, rule.line, "not-matched", value))
        if rule.name == stopper:
            stopped = True
    return Explanation(decision, tuple(traces), stopper)


def _continued(ruleset: RuleSet, name: str) -> bool:
    return any(r.name == name and r.cont for r in ruleset.rules)


def _silence_note(silence: Silence) -> str:
    return (f"silence {silence.id} ({silence.author}: {silence.comment}; "
            f"until {stamp(silence.ends)})")
