"""Rule tests: YAML files of events with expectations about the decisions.

Imports: model, model_json, errors, yamldoc, schema, rules, engine, state,
functions, wire, stdlib. `parse_test_file` and `check_names` are pure,
`run_case`/`run_file`/`coverage` are pure; `load_test_file` is the one thin
I/O wrapper (it reads the test file and loads the rule set it names).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rulebot.engine import evaluate
from rulebot.errors import EventError
from rulebot.functions import bare_jid
from rulebot.model import (
    JSON,
    Action,
    Decision,
    Drop,
    Envelope,
    ErrorReply,
    Issue,
    Relate,
    Stanza,
    Unrelate,
)
from rulebot.model_json import action_json
from rulebot.rules import LoadResult, Rule, RuleSet, check_rules
from rulebot.schema import schema_issues
from rulebot.state import (
    Buckets,
    LiveState,
    MemoryRelation,
    MemoryRelations,
    PresenceTable,
    norm,
)
from rulebot.wire import Limits, decode_event, presence_event
from rulebot.yamldoc import Document, load_document

DEFAULT_SENDER = "alice@localhost"
DEFAULT_BOT = "friend@localhost"
DEFAULT_RESOURCE = "test"
STANZA_TYPES = {"message": ("chat", "normal", "headline"),
                "presence": ("available", "unavailable")}

# Keys an action expectation may use besides `type`, per action type.
_ACTION_KEYS = {
    "forward": {"to", "payload", "payload_contains", "rule"},
    "broadcast": {"to", "payload", "payload_contains", "rule"},
    "reply": {"to", "payload", "payload_contains", "rule"},
    "error": {"to", "code", "message", "path", "payload", "payload_contains", "rule"},
    "drop": {"reason", "rule"},
    "relate": {"subject", "object", "kind", "attrs", "mutual", "rule"},
    "unrelate": {"subject", "object", "kind", "mutual", "rule"},
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
    relations: tuple[MemoryRelation, ...]
    online: tuple[str, ...]
    expect: Mapping[str, JSON]


@dataclass(frozen=True)
class TestFile:
    source: str
    rules: str  # the rule set path, relative to the current directory
    cases: tuple[Case, ...]
    document: Document = field(repr=False, compare=False)


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold."""

    check: str  # the expectation's key, e.g. "matched"
    message: str
    expected: JSON
    got: JSON

    def diff(self) -> str:
        """A unified diff of the pretty JSON of expected and got."""
        return "\n".join(difflib.unified_diff(
            pretty(self.expected).splitlines(), pretty(self.got).splitlines(),
            "expected", "got", lineterm=""))


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


def pretty(value: JSON) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# --- loading ---------------------------------------------------------------------


def parse_test_file(text: str, source: str) -> tuple[TestFile | None, list[Issue]]:
    """The test file's cases with defaults applied, or None and located errors. Pure."""
    doc, issues = load_document(text, source)
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
    base_online = tuple(fixtures.get("online", []))
    issues.extend(_check_from(doc, ("defaults",), defaults))
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
                                 online=base_online + case.online))
    if issues:
        return None, sorted(issues, key=Issue.sort_key)
    rules = os.path.normpath(Path(source).parent / value["rules"])
    return TestFile(source, rules, tuple(cases), doc), []


def _relations(raw: Iterable[Mapping[str, Any]]) -> tuple[MemoryRelation, ...]:
    return tuple(MemoryRelation(norm(r["subject"]), norm(r["object"]), r["kind"],
                                dict(r.get("attrs", {}))) for r in raw)


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
    elif "event" not in raw and "raw" not in raw:
        if kind == "message":
            issues.append(doc.issue(path, "a message case needs event or raw"))
        event = presence_event(stype, None, None, None)
    if not raw["expect"]:
        issues.append(doc.issue((*path, "expect"), "expect needs at least one expectation "
                                "(matched, not_matched, actions, error, drop, ...)"))
    issues.extend(_check_expect(doc, (*path, "expect"), raw["expect"]))
    if issues:
        return None, issues
    return Case(
        name=raw["name"], index=i, line=doc.where(path)[0], event=event, raw=raw.get("raw"),
        sender=bare_jid(from_), from_=from_, kind=kind, stanza_type=stype,
        bot=defaults.get("bot", DEFAULT_BOT), relations=_relations(raw.get("relations", [])),
        online=tuple(raw.get("online", [])), expect=raw["expect"],
    ), []


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
                   load: Callable[[str], LoadResult] | None = None) -> FileResult:
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
    return run_file(test, loaded.ruleset)


# --- running ---------------------------------------------------------------------


def run_file(test: TestFile, ruleset: RuleSet) -> FileResult:
    return FileResult(test.source, test.rules, ruleset, (),
                      tuple(run_case(ruleset, case) for case in test.cases))


def decide(ruleset: RuleSet, case: Case) -> tuple[Decision, MemoryRelations]:
    """The decision on the case's event, and the fixture store after applying it."""
    store = MemoryRelations(case.relations)
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
    stanza = Stanza("presence" if case.kind == "presence" else "message", case.stanza_type)
    env = Envelope(event, case.sender, case.from_, stanza, case.bot)
    decision = evaluate(ruleset, env, state=LiveState(store, presence, Buckets(lambda: 0.0)))
    store.apply([a for a in decision.actions if isinstance(a, Relate | Unrelate)])
    return decision, store


def run_case(ruleset: RuleSet, case: Case) -> CaseResult:
    decision, store = decide(ruleset, case)
    failures = []
    for key, check in _CHECKS.items():
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


# --- expectations ----------------------------------------------------------------

Check = Callable[[Any, Decision, MemoryRelations], Failure | None]


def same(a: JSON, b: JSON) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, objects compare key by key."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def contains(want: JSON, got: JSON) -> bool:
    """`got` has every key of `want` (recursively, for objects) with the same value."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and contains(v, got[k])
                                             for k, v in want.items())
    return same(want, got)


def _project(got: JSON, want: JSON) -> JSON:
    """`got` cut down to the keys `want` names, so a diff shows only what was asked."""
    if isinstance(got, dict) and isinstance(want, dict):
        return {k: _project(got[k], v) for k, v in want.items() if k in got}
    return got


def action_view(action: Action) -> dict[str, JSON]:
    """An action as test expectations see it: action_json plus an error's fields."""
    view = action_json(action)
    if isinstance(action, ErrorReply):
        view.update(code=action.code, message=action.message, path=action.path)
    return view


def _want_action(want: Mapping[str, JSON]) -> dict[str, JSON]:
    out = dict(want)
    if isinstance(out.get("to"), str):
        out["to"] = [out["to"]]
    for key in ("subject", "object"):
        if isinstance(out.get(key), str):
            out[key] = norm(out[key])
    return out


def _action_matches(want: Mapping[str, JSON], view: Mapping[str, JSON]) -> bool:
    for key, value in want.items():
        if key == "payload_contains":
            if not contains(value, view.get("payload")):
                return False
        elif key not in view or not same(value, view[key]):
            return False
    return True


def _shown_action(want: Mapping[str, JSON] | None, view: dict[str, JSON]) -> dict[str, JSON]:
    if want is None:
        return view
    shown = {k: view[k] for k in want if k in view}
    if "payload_contains" in want:
        shown["payload_contains"] = _project(view.get("payload"), want["payload_contains"])
    return shown


def _check_actions(want: list[dict[str, JSON]], d: Decision, _: MemoryRelations
                   ) -> Failure | None:
    wants = [_want_action(w) for w in want]
    views = [action_view(a) for a in d.actions]
    if len(wants) == len(views) and all(map(_action_matches, wants, views)):
        return None
    got = [_shown_action(wants[i] if i < len(wants) else None, v) for i, v in enumerate(views)]
    if len(wants) != len(views):
        message = f"expected {len(wants)} action(s), got {len(views)}"
    else:
        bad = [str(i) for i, (w, v) in enumerate(zip(wants, views, strict=True))
               if not _action_matches(w, v)]
        message = f"action(s) [{', '.join(bad)}] differ"
    return Failure("actions", message, wants, got)


def _check_matched(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    if list(d.matched) == want:
        return None
    return Failure("matched", "the matched rules differ", want, list(d.matched))


def _check_not_matched(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    hit = [n for n in d.matched if n in want]
    if not hit:
        return None
    return Failure("not_matched", f"rule(s) matched that must not: {', '.join(hit)}",
                   [n for n in d.matched if n not in want], list(d.matched))


def _check_error(want: dict[str, JSON], d: Decision, _: MemoryRelations) -> Failure | None:
    views = [action_view(a) for a in d.actions if isinstance(a, ErrorReply)]
    if any(_action_matches(want, v) for v in views):
        return None
    got = _shown_action(want, views[0]) if views else None
    path = f" and path {want['path']!r}" if "path" in want else ""
    return Failure("error", f"no error reply with code {want['code']!r}{path}", want, got)


def _drops(d: Decision) -> list[Drop]:
    return [a for a in d.actions if isinstance(a, Drop)]


def _check_drop(want: bool, d: Decision, _: MemoryRelations) -> Failure | None:
    drops = _drops(d)
    if bool(drops) == want:
        return None
    return Failure("drop", "expected a drop" if want else "expected no drop",
                   {"drop": want}, {"drop": bool(drops), "actions": [action_view(a) for a in
                                                                     d.actions]})


def _check_reason(want: str | None, d: Decision, _: MemoryRelations) -> Failure | None:
    reasons = [a.reason for a in _drops(d)]
    if want in reasons:
        return None
    return Failure("reason", f"no drop with reason {want!r}", {"drop": {"reason": want}},
                   {"drop": {"reason": reasons[0]} if reasons else None})


def _effective(d: Decision) -> list[Action]:
    return [a for a in d.actions if a.to or isinstance(a, Relate | Unrelate)]


def _check_no_actions(want: bool, d: Decision, _: MemoryRelations) -> Failure | None:
    effective = _effective(d)
    if (not effective) == want:
        return None
    return Failure("no_actions", "expected nothing to be sent or changed" if want else
                   "expected something to be sent or changed",
                   [] if want else ["(at least one action that sends or changes)"],
                   [action_view(a) for a in effective])


def _row(rel: MemoryRelation | None, with_attrs: bool) -> dict[str, JSON] | None:
    if rel is None:
        return None
    row: dict[str, JSON] = {"subject": rel.subject, "object": rel.object, "kind": rel.kind}
    if with_attrs:
        row["attrs"] = dict(rel.attrs)
    return row


def _check_relations_after(want: list[dict[str, JSON]], _: Decision, store: MemoryRelations
                           ) -> Failure | None:
    wants, got, missing = [], [], []
    for w in want:
        key = (norm(w["subject"]), norm(w["object"]), w["kind"])
        expected = {"subject": key[0], "object": key[1], "kind": key[2]}
        if "attrs" in w:
            expected["attrs"] = w["attrs"]
        found = _row(store.get(*key), "attrs" in w)
        wants.append(expected)
        got.append(found)
        if found is None or not same(found, expected):
            missing.append(f"{key[0]} -{key[2]}-> {key[1]}")
    if not missing:
        return None
    return Failure("relations_after", f"missing or different after the decision: "
                   f"{', '.join(missing)}", wants, got)


def _check_relations_absent(want: list[dict[str, JSON]], _: Decision, store: MemoryRelations
                            ) -> Failure | None:
    present = [_row(store.get(norm(w["subject"]), norm(w["object"]), w["kind"]), False)
               for w in want]
    rows = [r for r in present if r is not None]
    if not rows:
        return None
    return Failure("relations_absent_after", "present after the decision: " + ", ".join(
        f"{r['subject']} -{r['kind']}-> {r['object']}" for r in rows), [], rows)


def _check_errors(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    got = [f"{e.rule}: {e.message}" for e in d.errors]
    unexpected = [g for g in got if not any(w in g for w in want)]
    unmet = [w for w in want if not any(w in g for g in got)]
    if not unexpected and not unmet:
        return None
    message = ("rule(s) failed at run time" if unexpected
               else "expected runtime error(s) did not happen")
    return Failure("errors", message, want, got)


_CHECKS: dict[str, Check] = {
    "matched": _check_matched,
    "not_matched": _check_not_matched,
    "actions": _check_actions,
    "error": _check_error,
    "drop": _check_drop,
    "reason": _check_reason,
    "no_actions": _check_no_actions,
    "relations_after": _check_relations_after,
    "relations_absent_after": _check_relations_absent,
    "errors": _check_errors,
}
