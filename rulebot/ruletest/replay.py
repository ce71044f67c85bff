"""`rulebot replay`'s core: re-decide archived events with a candidate rule set
and say what would change.

Pure but for the clock it freezes: it takes archive lines (rulebot.engine.archive)
and relations, and returns a report. Each event is decided with the clock at
the time it was decided live. The relationship state starts from the
relations given (a copy of the current store, or none) and evolves by what the
*recorded* decisions changed (relate, unrelate, counts, timers), in archive
order: at every event the candidate sees the state the live rules had made,
so a difference comes from the rules, not from an earlier difference.
Presence evolves from the archived presence events; rate limits are the
candidate's own, on the archive's clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rulebot.engine.archive import Archived, BadLine, parse
from rulebot.engine.compare import Difference, compare, view
from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import Buckets, LiveState, MemoryRelations, PresenceTable
from rulebot.model import JSON, Relation
from rulebot.rules.ruleset import RuleSet
from rulebot.rules.timefns import TimeError, to_epoch


@dataclass
class RuleChange:
    """What changed for one rule over the archive."""

    newly_matched: int = 0  # events it matches that it did not
    stopped_matching: int = 0
    differed: int = 0  # events where its actions differ (both above included)


@dataclass
class Changed:
    """One event decided differently."""

    where: str  # FILE:LINE
    time: str
    sender: str
    event_id: JSON
    difference: Difference
    redacted: tuple[str, ...] = ()  # fields the archive dropped or hashed in this event

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"where": self.where, "time": self.time, "sender": self.sender,
                                "event_id": self.event_id, **self.difference.to_json()}
        if self.redacted:
            out["redacted"] = list(self.redacted)
        return out


@dataclass
class Report:
    events: int = 0
    changed: list[Changed] = field(default_factory=list)
    changed_count: int = 0
    #: changed events the archive kept with fields dropped or hashed: the
    #: difference may come from what the archive hid, not from the candidate
    changed_redacted: int = 0
    #: events a silence decided live (not compared: replay has no silences)
    silenced: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (FILE:LINE, why)
    rules: dict[str, RuleChange] = field(default_factory=dict)
    added: Counter[str] = field(default_factory=Counter)  # recipients, by times
    removed: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)  # recorded rule-set versions

    def summary(self) -> dict[str, JSON]:
        return {"events": self.events, "changed": self.changed_count,
                "unchanged": self.events - self.changed_count,
                "changed_redacted": self.changed_redacted, "silenced": self.silenced,
                "bad_lines": len(self.bad),
                "recorded_versions": dict(self.versions),
                "rules": {name: {"newly_matched": c.newly_matched,
                                 "stopped_matching": c.stopped_matching,
                                 "differed": c.differed}
                          for name, c in sorted(self.rules.items())},
                "recipients_added": sum(self.added.values()),
                "recipients_removed": sum(self.removed.values())}


#: Changed events kept in the report for display (all are counted).
KEEP_CHANGED = 10_000


def replay(lines: Iterable[tuple[str, str]], candidate: RuleSet, relations: Iterable[Relation] = (),
           *, max_recipients: int = 10_000, timer_limits: tuple[int, int] = (100, 100_000),
           on_event: Callable[[int], None] | None = None,
           on_changed: Callable[[Changed], None] | None = None) -> Report:
    """Re-decide every archived event of `lines` ((FILE:LINE, text) in archive
    order) with `candidate`; what changed. `on_event(n)` after each event
    (progress), `on_changed` for each difference."""
    clock = _Clock()
    store = MemoryRelations(relations, clock)
    presence = PresenceTable()
    state = LiveState(store, presence, Buckets(clock), timer_limits)
    report = Report()
    for where, line in lines:
        if not line.strip():
            continue
        try:
            archived = parse(line)
        except BadLine as exc:
            report.bad.append((where, str(exc)))
            continue
        env = archived.envelope
        clock.now = env.now if env.now is not None else clock.now
        if env.stanza.kind == "presence":  # as the dispatcher does before deciding
            presence.update(env.from_, env.stanza.type == "available")
        report.events += 1
        report.versions[archived.version] += 1
        if archived.silenced:  # decided by an operator's mute, not by the rules
            report.silenced += 1
            _evolve(store, archived)
            continue
        decision = evaluate(candidate, env, max_recipients=max_recipients, state=state)
        diff = compare(archived.recorded, view(decision))
        if diff:
            _count(report, where, archived, diff, on_changed)
        _evolve(store, archived)
        if on_event is not None:
            on_event(report.events)
    return report


class _Clock:
    """The archive's time: each event's, as it was decided."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _count(report: Report, where: str, archived: Archived, diff: Difference,
           on_changed: Callable[[Changed], None] | None) -> None:
    report.changed_count += 1
    report.changed_redacted += bool(archived.redacted)
    for name in diff.rules:
        change = report.rules.setdefault(name, RuleChange())
        change.differed += 1
        change.newly_matched += name in diff.newly_matched
        change.stopped_matching += name in diff.stopped_matching
    report.added.update(diff.added)
    report.removed.update(diff.removed)
    event = archived.envelope.event
    changed = Changed(where, archived.time, archived.envelope.sender,
                      event.get("id") if isinstance(event, dict) else None, diff,
                      archived.redacted)
    if len(report.changed) < KEEP_CHANGED:
        report.changed.append(changed)
    if on_changed is not None:
        on_changed(changed)


def _evolve(store: MemoryRelations, archived: Archived) -> None:
    """Make the state what the recorded decision left (a fired timer is gone)."""
    env = archived.envelope
    if env.stanza.kind == "timer" and env.timer is not None:
        # As the daemon's store.fired: forgotten only if not scheduled again
        # (another due) between its firing and this decision.
        key = str(env.timer.get("key"))
        held = store.timers.get(key)
        try:
            due = to_epoch(env.timer.get("due"))
        except TimeError:
            due = None
        if held is not None and (due is None or abs(held.due - due) < 1e-3):
            del store.timers[key]
    store.apply(archived.changes)
