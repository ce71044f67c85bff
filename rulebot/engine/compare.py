"""What two decisions of one event do differently: the shared core of shadow
mode (the live set against a candidate, on every live event) and `rulebot
replay` (a candidate against the decisions an archive recorded).

Pure. A decision is compared by its *view*: the rules that matched and every
action as JSON (rulebot.engine.render), payloads by digest, so an archive need
not keep what users wrote to compare what a candidate would send.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rulebot.engine.render import action_json
from rulebot.model import JSON, Decision

#: Actions that send something to someone (their `to` are recipients).
SENDS = frozenset({"forward", "broadcast", "reply", "error"})
#: The name differences are counted under when no rule made them (the rule
#: set's default: drop or error).
NO_RULE = "(default)"


def payload_digest(payload: JSON) -> str:
    """A short digest of a payload's canonical JSON (key order does not count)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class View:
    """A decision as compared: matched rule names, and each action's JSON with
    its payload replaced by the payload's digest (`payload_digest`)."""

    matched: tuple[str, ...]
    actions: tuple[Mapping[str, JSON], ...]

    def to_json(self) -> dict[str, JSON]:
        return {"matched": list(self.matched), "actions": [dict(a) for a in self.actions]}

    @classmethod
    def from_json(cls, raw: Mapping[str, JSON]) -> View:
        """The view an archive line holds (see rulebot.engine.archive); raises
        ValueError when it is not one."""
        matched, actions = raw.get("matched"), raw.get("actions")
        if not isinstance(matched, list) or not isinstance(actions, list) \
                or not all(isinstance(a, dict) for a in actions):
            raise ValueError("a decision needs matched and actions lists")
        return cls(tuple(str(m) for m in matched),
                   tuple(a for a in actions if isinstance(a, dict)))


#: What a payload's values are replaced by before its digest is taken
#: (rulebot.engine.archive: a hashed event field's value by its hash).
Scrub = Callable[[JSON], JSON]


def view(decision: Decision, scrub: Scrub | None = None) -> View:
    return View(decision.matched,
                tuple(action_view(action_json(a), scrub) for a in decision.actions))


def action_view(action: Mapping[str, JSON], scrub: Scrub | None = None) -> Mapping[str, JSON]:
    """An action's JSON as compared: recipients in order, payload as a digest;
    with `scrub`, every value but the action's type and rule scrubbed first."""
    out = {k: v if scrub is None or k in ("type", "rule") else scrub(v)
           for k, v in action.items() if k != "payload"}
    if "payload" in action:
        payload = action["payload"]
        out["payload"] = payload_digest(payload if scrub is None else scrub(payload))
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    """How a candidate's decision of one event differs from a baseline's."""

    newly_matched: tuple[str, ...]  # rules the candidate matched, the baseline did not
    stopped_matching: tuple[str, ...]  # the reverse
    added: tuple[str, ...]  # recipients the candidate sends to that the baseline did not
    removed: tuple[str, ...]
    #: rules (or NO_RULE) whose actions differ: every rule of the above, and a
    #: rule both matched that renders, routes or changes state differently
    rules: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def to_json(self) -> dict[str, JSON]:
        return {"newly_matched": list(self.newly_matched),
                "stopped_matching": list(self.stopped_matching),
                "recipients_added": list(self.added), "recipients_removed": list(self.removed),
                "rules": list(self.rules)}


def compare(baseline: View, candidate: View) -> Difference:
    """What `candidate` does that `baseline` does not, and the reverse (empty:
    the same matches and the same actions, in the same order)."""
    if baseline == candidate:
        return Difference((), (), (), (), ())
    before, after = set(baseline.matched), set(candidate.matched)
    newly = tuple(m for m in candidate.matched if m not in before)
    stopped = tuple(m for m in baseline.matched if m not in after)
    sent_before, sent_after = _recipients(baseline.actions), _recipients(candidate.actions)
    added = tuple(sorted((sent_after - sent_before).elements()))
    removed = tuple(sorted((sent_before - sent_after).elements()))
    by_rule_before, by_rule_after = _by_rule(baseline.actions), _by_rule(candidate.actions)
    rules = dict.fromkeys([*newly, *stopped])
    for rule in [*by_rule_before, *by_rule_after]:
        if by_rule_before.get(rule) != by_rule_after.get(rule):
            rules[rule] = None
    if not rules:  # the same actions per rule, in another order across rules
        rules = dict.fromkeys(by_rule_after or (NO_RULE,))
    return Difference(newly, stopped, added, removed, tuple(rules))


def _recipients(actions: Iterable[Mapping[str, JSON]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for action in actions:
        to = action.get("to")
        if action.get("type") in SENDS and isinstance(to, list):
            out.update(str(t) for t in to)
    return out


def _by_rule(actions: Sequence[Mapping[str, JSON]]) -> dict[str, list[Mapping[str, JSON]]]:
    out: dict[str, list[Mapping[str, JSON]]] = {}
    for action in actions:
        rule = action.get("rule")
        out.setdefault(rule if isinstance(rule, str) else NO_RULE, []).append(action)
    return out
