"""Rule tests: YAML files of events with expectations about the decisions.

`parse_test_file` and
`check_names` are pure, `run_case`/`coverage` are pure, `run_file` reads the
clock (injected) only when the file sets no `defaults.now`;
`load_test_file` is the one thin I/O wrapper (it reads the test file and
loads the rule set it names).

Each case is evaluated exactly as the daemon would: the event is encoded as
JSON and decoded with the default wire.Limits (a decoding error becomes the
error reply the daemon sends), relationships come from the file's and the
case's fixtures through the same LiveState the daemon uses, and a presence
case marks its sender online first, like the dispatcher.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import (
    Buckets,
    LiveState,
    MemoryRelations,
    PresenceTable,
)
from rulebot.errors import EventError
from rulebot.jid import bare_jid, norm_bare
from rulebot.load.schema import schema_issues
from rulebot.load.yamldoc import Document, load_document
from rulebot.model import (
    CHANGE_TYPES,
    JSON,
    Decision,
    Envelope,
    ErrorReply,
    Issue,
    Relation,
    Stanza,
    stamp,
)
from rulebot.rules.functions import counter_key
from rulebot.rules.loader import LoadResult, check_rules
from rulebot.rules.ruleset import Rule, RuleSet
from rulebot.rules.timefns import TimeError, parse_duration, to_epoch, to_iso
from rulebot.ruletest.checks import CHECKS, Failure
from rulebot.wire.decode import Limits, decode_event, presence_event

DEFAULT_SENDER = "alice@localhost"
DEFAULT_BOT = "friend@localhost"
DEFAULT_RESOURCE = "test"
STANZA_TYPES = {"message": ("chat", "normal", "headline"), "timer": ("timer",),
                "presence": ("available", "unavailable")}

# Keys an action expectation may use besides `type`, per action type.
_ACTION_KEYS = {
    "forward": {"to", "payload", "payload_contains", "rule"},
    "broadcast": {"to", "payload", "payload_contains", "rule"},
    "reply": {"to", "payload", "payload_contains", "rule"},
    "error": {"to", "code", "message", "path", "payload", "payload_contains", "rule"},
    "drop": {"reason", "rule"},
    "relate": {"subject", "object", "kind", "attrs", "mutual", "rule", "expires"},
    "unrelate": {"subject", "object", "kind", "mutual", "rule"},
    "count": {"counter", "key", "by", "rule"},
    "reset": {"counter", "key", "rule"},
    "schedule": {"key", "due", "event", "rule"},
    "cancel": {"key", "rule"},
}

@dataclass(frozen=True)
class Case:
    """One event and what the decision on it must look like."""

    name: str
    index: int  # position in `cases`
    line: int
    event: Mapping[str, JSON] | None  # None: use `raw`
    raw: str | None
    sender: str  # bare JID
    from_: str
    kind: str
    stanza_type: str
    bot: str
    relations: tuple[Relation, ...]
    online: tuple[str, ...]
    expect: Mapping[str, JSON]
    now: float | None = None  # the clock, when the case sets it
    advance: float = 0.0  # seconds the clock moves from the previous case's first
    #: counts made before the case: (counter, key, n, seconds before its clock)
    counts: tuple[tuple[str, str, int, float], ...] = ()
    #: a timer case: the envelope's timer ({key, rule}; due and scheduled are the clock)
    timer: Mapping[str, JSON] | None = None


@dataclass(frozen=True)
class TestFile:
    source: str
    rules: str  # the rule set path, relative to the current directory
    cases: tuple[Case, ...]
    document: Document = field(repr=False, compare=False)
    now: float | None = None  # defaults.now: the first case's clock


@dataclass(frozen=True)
class CaseResult:
    case: Case
    decision: Decision
    failures: tuple[Failure, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class FileResult:
    source: str
    rules: str | None  # None when the file is too broken to say
    ruleset: RuleSet | None
    issues: tuple[Issue, ...]  # errors: the file did not run
    cases: tuple[CaseResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues and all(c.passed for c in self.cases)


@dataclass(frozen=True)
class Coverage:
    rules: str
    ruleset: RuleSet
    uncovered: tuple[Rule, ...]

    @property
    def total(self) -> int:
        return sum(1 for r in self.ruleset.rules if r.enabled)


def parse_test_file(text: str, source: str) -> tuple[TestFile | None, list[Issue]]:
    """The test file's cases with defaults applied, or None and located errors. Pure."""
    doc, issues = load_document(text, source)
    issues = [i for i in issues if i.severity == "error"]  # a test file runs or not
    if doc is None:
        return None, issues
    if doc.value is None:
        doc.value = {}
    # dict.fromkeys: schema.py may word two `required` errors identically.
    issues.extend(dict.fromkeys(schema_issues(doc, "ruletest")))
    value = doc.value if isinstance(doc.value, dict) else {}
    # Semantic checks run on every part the schema found sound, so that one
    # run reports every problem (like `rulebot validate`).
    bad = [i.path for i in issues]

    def sound(prefix: str) -> bool:
        return not any(p == prefix or p.startswith((prefix + ".", prefix + "[")) for p in bad)

    defaults: dict[str, Any] = value.get("defaults", {}) if sound("defaults") else {}
    fixtures: dict[str, Any] = value.get("fixtures", {}) if sound("fixtures") else {}
    base_rel = _relations(fixtures.get("relations", []))
    issues.extend(_check_relations(doc, ("fixtures", "relations"), fixtures.get("relations")))
    base_online = tuple(fixtures.get("online", []))
    base_counts = _counts(doc, ("fixtures", "counts"), fixtures.get("counts"), issues)
    issues.extend(_check_from(doc, ("defaults",), defaults))
    start = _instant(doc, ("defaults", "now"), defaults["now"], issues) \
        if "now" in defaults else None
    if "stanza_type" in defaults:
        issues.extend(_check_stanza_type(doc, ("defaults", "stanza_type"),
                                         defaults.get("kind", "message"),
                                         defaults["stanza_type"]))
    cases: list[Case] = []
    names: dict[str, int] = {}
    raw_cases = value.get("cases")
    for i, raw in enumerate(raw_cases if isinstance(raw_cases, list) else []):
        path = ("cases", i)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in names:
            issues.append(doc.issue((*path, "name"), f"duplicate case name {name!r} (first "
                                    f"at {source}:{names[name]})", name))
        elif isinstance(name, str):
            names[name] = doc.where(path)[0]
        if not sound(f"cases[{i}]"):
            continue
        case, problems = _case(doc, i, raw, defaults)
        issues.extend(problems)
        if case is not None:
            cases.append(replace(case, relations=base_rel + case.relations,
                                 online=base_online + case.online,
                                 counts=base_counts + case.counts))
    if issues:
        return None, sorted(issues, key=Issue.sort_key)
    rules = os.path.normpath(Path(source).parent / value["rules"])
    return TestFile(source, rules, tuple(cases), doc, start), []


def _relations(raw: Iterable[Mapping[str, Any]]) -> tuple[Relation, ...]:
    # An unparsable expires is left to _check_relations (a located error).
    return tuple(Relation(norm_bare(r["subject"]), norm_bare(r["object"]), r["kind"],
                          dict(r.get("attrs", {})), "", _expires(r.get("expires")))
                 for r in raw)


def _expires(value: Any) -> str | None:
    try:
        return None if value is None else stamp(to_epoch(value))
    except TimeError:
        return None


def _check_relations(doc: Document, path: tuple[str | int, ...], raw: Any) -> list[Issue]:
    issues = []
    for j, r in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(r, dict) and r.get("expires") is not None:
            try:
                to_epoch(r["expires"])
            except TimeError as exc:
                issues.append(doc.issue((*path, j, "expires"), str(exc), r["expires"]))
    return issues


def _full(jid: str) -> str:
    return jid if "/" in jid else f"{jid}/{DEFAULT_RESOURCE}"


def _case(doc: Document, i: int, raw: dict[str, Any], defaults: dict[str, Any]
          ) -> tuple[Case | None, list[Issue]]:
    path = ("cases", i)
    issues: list[Issue] = []
    issues.extend(_check_from(doc, path, raw))
    if "from" in raw:
        from_ = raw["from"]
    elif "sender" in raw:
        from_ = _full(raw["sender"])
    else:
        from_ = defaults.get("from") or _full(defaults.get("sender", DEFAULT_SENDER))
    default_kind = defaults.get("kind", "message")
    kind = raw.get("kind", default_kind)
    event = raw.get("event")
    announced = event.get("presence") if kind == "presence" and isinstance(event, dict) \
        else None
    if "stanza_type" in raw:
        stype = raw["stanza_type"]
        if announced is not None and announced != stype:
            issues.append(doc.issue((*path, "stanza_type"), "the stanza type of a presence "
                                    f"is its event's presence ({announced})", stype))
    elif announced in STANZA_TYPES["presence"]:
        stype = announced
    elif kind == default_kind and "stanza_type" in defaults:
        stype = defaults["stanza_type"]
    else:
        stype = STANZA_TYPES[kind][0]
    if "stanza_type" in raw:
        issues.extend(_check_stanza_type(doc, (*path, "stanza_type"), kind, stype))
    if "event" in raw and "raw" in raw:
        issues.append(doc.issue((*path, "raw"), "give event or raw, not both", key=True))
    elif "raw" in raw and kind == "presence":
        issues.append(doc.issue((*path, "raw"), "raw is for message events (the bot builds "
                                "presence events itself)", key=True))
    elif "raw" in raw and kind == "timer":
        issues.append(doc.issue((*path, "raw"), "raw is for message events (a timer's "
                                "event is an object the rules scheduled)", key=True))
    elif "event" not in raw and "raw" not in raw:
        if kind in ("message", "timer"):
            issues.append(doc.issue(path, f"a {kind} case needs event"
                                    + (" or raw" if kind == "message" else "")))
        event = presence_event(stype, None, None, None)
    if "timer" in raw and kind != "timer":
        issues.append(doc.issue((*path, "timer"), "timer is for kind: timer cases", key=True))
    if not raw["expect"]:
        issues.append(doc.issue((*path, "expect"), "expect needs at least one expectation "
                                "(matched, not_matched, actions, error, drop, ...)"))
    issues.extend(_check_expect(doc, (*path, "expect"), raw["expect"]))
    issues.extend(_check_relations(doc, (*path, "relations"), raw.get("relations")))
    counts = _counts(doc, (*path, "counts"), raw.get("counts"), issues)
    now = _instant(doc, (*path, "now"), raw["now"], issues) if "now" in raw else None
    advance = 0.0
    if "advance" in raw:
        try:
            advance = parse_duration(raw["advance"])
        except TimeError as exc:
            issues.append(doc.issue((*path, "advance"), str(exc), raw["advance"]))
        if advance < 0:
            issues.append(doc.issue((*path, "advance"), "the clock only moves forward",
                                    raw["advance"]))
        if "now" in raw:
            issues.append(doc.issue((*path, "advance"), "give now or advance, not both",
                                    key=True))
    if issues:
        return None, issues
    return Case(
        name=raw["name"], index=i, line=doc.where(path)[0], event=event, raw=raw.get("raw"),
        sender=bare_jid(from_), from_=from_, kind=kind, stanza_type=stype,
        bot=defaults.get("bot", DEFAULT_BOT), relations=_relations(raw.get("relations", [])),
        online=tuple(raw.get("online", [])), expect=raw["expect"], now=now, advance=advance,
        counts=counts,
        timer=dict(raw.get("timer") or {"key": raw["name"]}) if kind == "timer" else None,
    ), []


def _counts(doc: Document, path: tuple[str | int, ...], raw: Any, issues: list[Issue]
            ) -> tuple[tuple[str, str, int, float], ...]:
    out = []
    for j, c in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(c, dict):
            continue
        ago = 0.0
        try:
            ago = parse_duration(c.get("ago", 0))
        except TimeError as exc:
            issues.append(doc.issue((*path, j, "ago"), str(exc), c.get("ago")))
        out.append((str(c["counter"]), counter_key(c["key"]), int(c.get("n", 1)), ago))
    return tuple(out)


def _instant(doc: Document, path: tuple[str | int, ...], value: Any, issues: list[Issue]
             ) -> float | None:
    try:
        return to_epoch(value)
    except TimeError as exc:
        issues.append(doc.issue(path, str(exc), value))
        return None


def _check_from(doc: Document, path: tuple[str | int, ...], where: dict[str, Any]
                ) -> list[Issue]:
    if "sender" in where and "from" in where \
            and bare_jid(where["from"]) != bare_jid(where["sender"]):
        return [doc.issue((*path, "from"), f"from must be a full JID of sender "
                          f"({where['sender']})", where["from"])]
    return []


def _check_stanza_type(doc: Document, path: tuple[str | int, ...], kind: str, stype: str
                       ) -> list[Issue]:
    if stype in STANZA_TYPES[kind]:
        return []
    return [doc.issue(path, f"a {kind} stanza's type is one of {', '.join(STANZA_TYPES[kind])}"
                      " (other stanzas never reach the rules)", stype)]


def _check_expect(doc: Document, path: tuple[str | int, ...], expect: dict[str, Any]
                  ) -> list[Issue]:
    issues = []
    for j, action in enumerate(expect.get("actions", [])):
        allowed = _ACTION_KEYS[action["type"]]
        for key in action:
            if key != "type" and key not in allowed:
                issues.append(doc.issue((*path, "actions", j, key), f"{key!r} does not apply "
                                        f"to a {action['type']} action (allowed: "
                                        f"{', '.join(sorted(allowed))})", key=True))
    return issues


def check_names(test: TestFile, ruleset: RuleSet) -> list[Issue]:
    """Located errors for rule names in expectations that the rule set does not have.

    A misspelt name under not_matched would otherwise pass for ever."""
    known = {r.name for r in ruleset.rules}
    issues = []
    for case in test.cases:
        refs: list[tuple[tuple[str | int, ...], JSON]] = []
        for key in ("matched", "not_matched"):
            refs.extend((("cases", case.index, "expect", key, j), n)
                        for j, n in enumerate(case.expect.get(key, [])))
        refs.extend((("cases", case.index, "expect", "actions", j, "rule"), a["rule"])
                    for j, a in enumerate(case.expect.get("actions", []))
                    if isinstance(a.get("rule"), str))
        for where, name in refs:
            if name not in known:
                hint = difflib.get_close_matches(name, sorted(known), n=1)
                issues.append(test.document.issue(
                    where, f"no rule named {name!r} in {test.rules}"
                    + (f", did you mean {hint[0]!r}?" if hint else ""), name))
    return issues


def load_test_file(path: str | Path,
                   load: Callable[[str], LoadResult] | None = None,
                   clock: Callable[[], float] | None = None) -> FileResult:
    """Read one test file and load its rule set (through `load`, e.g. a cache).

    Never raises for file content: problems come back as the result's issues."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return FileResult(source, None, None, (Issue(source, 0, 0, "", f"cannot read: {exc}"),))
    test, issues = parse_test_file(text, source)
    if test is None:
        return FileResult(source, None, None, tuple(issues))
    if not Path(test.rules).exists():
        issue = test.document.issue(("rules",), f"no such file or directory: {test.rules}",
                                    test.document.value["rules"])
        return FileResult(source, test.rules, None, (issue,))
    loaded = (load or (lambda p: check_rules([p])))(test.rules)
    if loaded.ruleset is None:
        head = test.document.issue(("rules",), f"the rule set {test.rules} is invalid "
                                   f"({len(loaded.errors)} error(s))")
        return FileResult(source, test.rules, None, (head, *loaded.errors))
    problems = check_names(test, loaded.ruleset)
    if problems:
        return FileResult(source, test.rules, loaded.ruleset, tuple(problems))
    return run_file(test, loaded.ruleset, clock or time.time)


# --- running ---------------------------------------------------------------------


def run_file(test: TestFile, ruleset: RuleSet,
             clock: Callable[[], float] = time.time) -> FileResult:
    """Run the cases in order on a stepped clock: defaults.now (else `clock()`),
    set by a case's `now`, moved by its `advance`."""
    at = test.now if test.now is not None else clock()
    results = []
    for case in test.cases:
        at = case.now if case.now is not None else at + case.advance
        results.append(run_case(ruleset, case, at))
    return FileResult(test.source, test.rules, ruleset, (), tuple(results))


def decide(ruleset: RuleSet, case: Case, now: float | None = None
           ) -> tuple[Decision, MemoryRelations]:
    """The decision on the case's event at `now` (default: the case's own clock),
    and the fixture store after applying it."""
    at = (case.now if now is None else now)
    clock = time.time if at is None else (lambda: at)
    store = MemoryRelations(case.relations, clock)
    made = clock()
    for counter, key, n, ago in case.counts:
        store.counts.setdefault((counter, key), []).append((made - ago, n))
    presence = PresenceTable()
    for jid in case.online:
        presence.update(jid, True)
    text = case.raw if case.raw is not None else json.dumps(case.event, ensure_ascii=False)
    try:
        event = decode_event(text, Limits())
    except EventError as exc:  # what the daemon answers; no rule runs
        reply = ErrorReply((case.from_,), exc.code, exc.message, exc.path, None)
        return Decision(ruleset.version, (), (reply,), (), ("event could not be decoded",)), \
            store
    if case.kind == "presence":
        presence.update(case.from_, case.stanza_type == "available")
    moment = clock()
    timer: dict[str, JSON] | None = None
    if case.kind == "timer":  # as the daemon fires one: from its sender, due now
        assert case.timer is not None
        timer = {"key": str(case.timer.get("key")), "due": to_iso(moment),
                 "scheduled": to_iso(moment), "rule": str(case.timer.get("rule", ""))}
    stanza = Stanza(case.kind, case.stanza_type,  # type: ignore[arg-type]
                    None if timer is None else f"{timer['key']}@{moment!r}")
    env = Envelope(event, case.sender, case.sender if timer else case.from_, stanza, case.bot,
                   moment, timer)
    decision = evaluate(ruleset, env, state=LiveState(store, presence, Buckets(lambda: 0.0)))
    store.apply([a for a in decision.actions if isinstance(a, CHANGE_TYPES)])
    return decision, store


def run_case(ruleset: RuleSet, case: Case, now: float | None = None) -> CaseResult:
    decision, store = decide(ruleset, case, now)
    failures = []
    for key, check in CHECKS.items():
        if key in case.expect or key == "errors":
            failure = check(case.expect.get(key, []), decision, store)
            if failure is not None:
                failures.append(failure)
    return CaseResult(case, decision, tuple(failures))


def coverage(results: Sequence[FileResult]) -> list[Coverage]:
    """Per rule set under test (in first-use order): its enabled rules no case matched."""
    sets: dict[str, RuleSet] = {}
    hit: dict[str, set[str]] = {}
    for result in results:
        if result.rules is None or result.ruleset is None or result.issues:
            continue
        sets.setdefault(result.rules, result.ruleset)
        hit.setdefault(result.rules, set()).update(
            n for c in result.cases for n in c.decision.matched)
    return [Coverage(path, rs, tuple(r for r in rs.rules if r.enabled and r.name not in hit[path]))
            for path, rs in sets.items()]
