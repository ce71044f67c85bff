"""Loading rule sets: YAML with positions -> schema -> semantic checks -> compiled RuleSet.

`parse_rule_files` is pure (texts in, RuleSet or issues out); `read_rule_files`
and `load_rules` are the thin I/O wrappers. `rulebot validate` and
`rulebot run` both call `check_rules`/`load_rules`, so they can never disagree.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rulebot.errors import RuleSetError
from rulebot.jid import valid_jid
from rulebot.load.yamldoc import Document, format_path
from rulebot.load.yamldoc import Path as DocPath
from rulebot.model import Issue
from rulebot.rules.analysis import shadowing_warnings
from rulebot.rules.cache import Compiled, LoadCache
from rulebot.rules.events import compile_events
from rulebot.rules.expr import Expr, ExprProblem, compile_expr, macro_closure
from rulebot.rules.fields import Served, check_paths, served
from rulebot.rules.index import RuleIndex, build_index
from rulebot.rules.keytests import key_tests
from rulebot.rules.ruleset import (
    ActionSpec,
    EventTypes,
    LiteralParam,
    Param,
    RateSpec,
    Rule,
    RuleSet,
)
from rulebot.rules.timefns import (
    Interval,
    TimeError,
    compile_interval,
    parse_duration,
    to_epoch,
)

_PER = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}

@dataclass(frozen=True)
class LoadResult:
    ruleset: RuleSet | None
    issues: tuple[Issue, ...]

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")


def read_rule_files(path: str | Path) -> list[tuple[str, str]]:
    """(display name, text) of the rule files at `path` (a file or a directory).

    A directory contributes its `*.yaml`/`*.yml` files (not hidden ones, not
    subdirectories) in lexical order. Raises RuleSetError when nothing can be read."""
    p = Path(path)
    if p.is_dir():
        files = sorted(
            f for f in p.iterdir()
            if f.suffix in (".yaml", ".yml") and not f.name.startswith(".") and f.is_file()
        )
        if not files:
            raise RuleSetError([Issue(str(p), 0, 0, "", "no *.yaml or *.yml rule files here")])
    else:
        files = [p]
    out = []
    for f in files:
        try:
            out.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise RuleSetError([Issue(str(f), 0, 0, "", f"cannot read: {exc}")]) from exc
    return out


def check_rules(paths: Sequence[str | Path], cache: LoadCache | None = None) -> LoadResult:
    """Load and check rule sets without raising: the RuleSet (or None) and every issue."""
    texts: list[tuple[str, str]] = []
    issues: list[Issue] = []
    for path in paths:
        try:
            texts.extend(read_rule_files(path))
        except RuleSetError as exc:
            issues.extend(exc.issues)
    if issues:
        return LoadResult(None, tuple(sorted(issues, key=Issue.sort_key)))
    return parse_rule_files(texts, cache)


def load_rules(path: str | Path, cache: LoadCache | None = None) -> RuleSet:
    """The compiled rule set at `path`; raises RuleSetError listing every error."""
    result = check_rules([path], cache)
    if result.ruleset is None:
        raise RuleSetError(result.issues)
    return result.ruleset


def parse_rules(text: str, source: str = "<inline>") -> RuleSet:
    """Compile one rule file's text; raises RuleSetError listing every error."""
    result = parse_rule_files([(source, text)])
    if result.ruleset is None:
        raise RuleSetError(result.issues)
    return result.ruleset


def parse_rule_files(texts: Sequence[tuple[str, str]], cache: LoadCache | None = None
                     ) -> LoadResult:
    """Compile several files (in the given order) into one rule set. Pure (but for
    what it keeps in `cache`, which changes no result)."""

    # A load makes a great many objects and no garbage cycles: with the cyclic
    # GC on, it rescanned the growing heap over and over (10,000 rules: 5.9 s,
    # 2.8 s without). Objects are still freed as their counts drop.
    collecting = gc.isenabled()
    gc.disable()
    try:
        compiler = _Compiler(cache if cache is not None else LoadCache())
        for source, text in texts:
            compiler.add_file(source, text)
        ruleset = compiler.finish(texts)
        compiler.cache.done()
    finally:
        if collecting:
            gc.enable()
    issues = list(compiler.issues)
    if ruleset is not None:
        issues.extend(shadowing_warnings(ruleset))
    # A value the schema refuses is reported once: its error says to quote it.
    refused = {(i.file, i.line, i.col) for i in issues if i.severity == "error"}
    issues = [i for i in issues if i.severity == "error" or not i.message.startswith(
        "YAML 1.1 reads") or (i.file, i.line, i.col) not in refused]
    return LoadResult(ruleset if not compiler.has_errors() else None,
                      tuple(sorted(issues, key=Issue.sort_key)))


class _Compiler:
    """Collects files' contents and issues; cross-file names live here."""

    def __init__(self, cache: LoadCache) -> None:
        self.cache = cache
        self.defs = b""  # what expressions can refer to (set in finish)
        self.issues: list[Issue] = []
        self.docs: list[Document] = []
        self.lists: dict[str, list[str]] = {}
        self.macros: dict[str, str] = {}
        self.rate_limits: dict[str, RateSpec] = {}
        self.intervals: dict[str, Interval] = {}
        self.interval_names: dict[str, None] = {}  # defined, compiled or not
        self.counters: dict[str, float] = {}  # name -> window (seconds)
        self.counter_names: dict[str, None] = {}  # defined, valid or not
        self.broken: set[str] = set()  # macros that failed to compile
        self.used_lists: set[str] = set()  # referenced by some compiled expression
        self.used_macros: set[str] = set()  # reached from some rule's expression
        self.where: dict[tuple[str, str], tuple[Document, DocPath]] = {}
        self.defined: dict[tuple[str, str], str] = {}  # (kind, name) -> "file:line"
        self.events: EventTypes | None = None
        self.xml_events: dict[str, str] = {}  # namespace -> element local name
        self.default: Literal["drop", "error"] | None = None
        self.rules: list[Rule] = []
        self.rule_at: int | None = None  # the rule being compiled, by index
        # Every compiled expression of a rule: (rule index, doc, path, text, expr).
        self.rule_exprs: list[tuple[int, Document, DocPath, str, Expr]] = []

    def has_errors(self) -> bool:
        return any(i.severity == "error" for i in self.issues)

    def _define(self, doc: Document, kind: str, name: str, path: DocPath) -> bool:
        line, _col = doc.where(path, key=True)
        key = (kind, name)
        if key in self.defined:
            self.issues.append(doc.issue(
                path, f"duplicate {kind} name {name!r} (first defined at {self.defined[key]})",
                name, key=True))
            return False
        self.defined[key] = f"{doc.source}:{line}"
        self.where[key] = (doc, path)
        return True

    def add_file(self, source: str, text: str) -> None:
        doc, issues = self.cache.document(source, text)
        self.issues.extend(issues)
        if doc is None:
            return
        self.docs.append(doc)
        value = doc.value if isinstance(doc.value, dict) else {}
        # First pass over names so rules in any file may use lists/macros of any file.
        for name, items in _mapping(value.get("lists")).items():
            if isinstance(items, list) and self._define(doc, "list", name, ("lists", name)):
                self.lists[name] = [x for x in items if isinstance(x, str)]
        for name, spec in _mapping(value.get("rate_limits")).items():
            rate_value = spec.get("rate") if isinstance(spec, dict) else None
            if isinstance(rate_value, int | float) and math.isfinite(rate_value) \
                    and rate_value > 0 \
                    and self._define(doc, "rate limit", name, ("rate_limits", name)):
                per = _PER.get(spec.get("per", "second"), 1.0)
                rate = float(spec["rate"])
                burst = spec.get("burst")
                self.rate_limits[name] = RateSpec(
                    rate / per, burst if isinstance(burst, int) else max(1, math.ceil(rate)))
        for name, spec in _mapping(value.get("intervals")).items():
            if isinstance(spec, dict) and self._define(doc, "interval", name,
                                                       ("intervals", name)):
                self.interval_names[name] = None  # a broken one is reported once, here
                try:
                    self.intervals[name] = compile_interval(name, spec)
                except TimeError as exc:
                    field = exc.field if exc.field is not None and exc.field in spec else None
                    at: DocPath = ("intervals", name) if field is None \
                        else ("intervals", name, field)
                    self.issues.append(doc.issue(at, f"interval {name!r}: {exc}",
                                                 None if field is None else spec[field]))
        for name, spec in _mapping(value.get("counters")).items():
            if isinstance(spec, dict) and self._define(doc, "counter", name, ("counters", name)):
                self.counter_names[name] = None
                window = spec.get("window")
                try:
                    seconds = parse_duration(window)
                except TimeError as exc:
                    self.issues.append(doc.issue(("counters", name, "window"),
                                                 f"counter {name!r}: {exc}", window))
                    continue
                if seconds <= 0:
                    self.issues.append(doc.issue(("counters", name, "window"),
                                                 f"counter {name!r}: a window of zero counts "
                                                 "nothing", window))
                    continue
                self.counters[name] = seconds
        for name, text_ in _mapping(value.get("macros")).items():
            if isinstance(text_, str) and self._define(doc, "macro", name, ("macros", name)):
                self.macros[name] = text_
        if "default" in value and value["default"] in ("drop", "error"):
            if self.default is not None:
                self.issues.append(doc.issue(("default",), "default is set in more than one "
                                             "file", value["default"], key=True))
            self.default = value["default"]
        for ns, element in _mapping(value.get("xml_events")).items():
            if isinstance(element, str) and self._define(doc, "XML event namespace", ns,
                                                         ("xml_events", ns)):
                self.xml_events[ns] = element
        if "events" in value and isinstance(value["events"], dict):
            if self.events is not None:
                self.issues.append(doc.issue(("events",), "events are declared in more than "
                                             "one file", key=True))
            else:
                self.events, problems = compile_events(doc, value["events"])
                self.issues.extend(problems)

    def finish(self, texts: Sequence[tuple[str, str]]) -> RuleSet | None:
        # An expression's meaning and checks depend on the macros' texts and on
        # which lists and rate limits exist: its cache key includes them.
        self.defs = hashlib.sha256(json.dumps(
            [sorted(self.macros.items()), sorted(self.lists), sorted(self.rate_limits),
             sorted(self.interval_names), sorted(self.counter_names)]
        ).encode()).digest()
        # Macros are checked once, in their own place, so a broken macro is
        # reported where it is written rather than at every use.
        for doc in self.docs:
            value = doc.value if isinstance(doc.value, dict) else {}
            for name, text in _mapping(value.get("macros")).items():
                if isinstance(text, str) and self.macros.get(name) == text \
                        and self._expr(doc, ("macros", name), text, name) is None:
                    self.broken.add(name)
        # A macro that uses a broken one is broken too (without a second report).
        self.broken |= {m for m, t in self.macros.items()
                        if macro_closure(t, self.macros) & self.broken}
        for doc in self.docs:
            value = doc.value if isinstance(doc.value, dict) else {}
            rules = value.get("rules")
            if isinstance(rules, list):
                for i, raw in enumerate(rules):
                    if isinstance(raw, dict):
                        self._rule(doc, ("rules", i), raw)
                    rules[i] = None
        if self.has_errors():
            return None
        self._unused()
        digest = hashlib.sha256()
        for source, text in texts:
            digest.update(Path(source).name.encode() + b"\0" + text.encode() + b"\0")
        discriminator = self.events.discriminator if self.events else "type"
        rules = tuple(self.rules)
        index = build_index(rules, self.lists)
        self._fields(rules, discriminator, index)
        return RuleSet(
            rules=rules,
            lists=dict(self.lists),
            events=self.events,
            default=self.default or "drop",
            version=digest.hexdigest()[:12],
            files=tuple(source for source, _ in texts),
            list_sets={k: frozenset(x.casefold() for x in v) for k, v in self.lists.items()},
            rate_limits=dict(self.rate_limits),
            intervals=dict(self.intervals),
            counters=dict(self.counters),
            index=index,
            discriminator=discriminator,
            xml_events=dict(self.xml_events),
        )

    def _fields(self, rules: tuple[Rule, ...], discriminator: str, index: RuleIndex) -> None:
        """Warnings for event fields no schema the rule can see declares (rules.fields)."""
        if self.events is None or not self.events.validators:
            return
        schemas = {n: v.schema for n, v in self.events.validators.items()
                   if isinstance(v.schema, Mapping)}
        views: dict[int, Served | None] = {}
        for i, doc, path, text, expr in self.rule_exprs:
            if i not in views:
                tests = index.tests.get(i)  # None: a disabled rule
                views[i] = served(key_tests(rules[i], self.lists) if tests is None else tests,
                                  discriminator, schemas, self.events.unknown)
            seen = views[i]
            if seen is None:
                continue
            for problem in check_paths(expr.parts, seen):
                shown = ".".join(problem.path)
                at = text.find(shown)
                self.issues.append(doc.issue(path, problem.message, shown,
                                             severity="warning",
                                             offset=at if at >= 0 else None))

    def _unused(self) -> None:
        """Warnings for lists and macros that nothing uses (often a typo elsewhere).

        A list counts as used when any expression (a rule's or a macro's) names
        it; lists reached by dynamic names (in_list(event.x, ...)) cannot be seen."""
        for (kind, name), (doc, path) in self.where.items():
            if kind == "macro" and name not in self.used_macros:
                self.issues.append(doc.issue(path, f"macro ${name} is never used", key=True,
                                             severity="warning"))
            if kind == "counter" and f"counter:{name}" not in self.used_lists:
                self.issues.append(doc.issue(path, f"counter {name!r} is never used "
                                             "(count, reset or counter('NAME', key))",
                                             key=True, severity="warning"))
            if kind == "interval" and f"interval:{name}" not in self.used_lists:
                self.issues.append(doc.issue(path, f"interval {name!r} is never used "
                                             "(within('NAME') or within_at('NAME', t))",
                                             key=True, severity="warning"))
            if kind == "list" and name not in self.used_lists:
                self.issues.append(doc.issue(path, f"list {name!r} is never used", key=True,
                                             severity="warning"))

    def _expr(self, doc: Document, path: DocPath, text: str, macro: str | None = None
              ) -> Expr | None:
        if not text:
            return None  # the schema reports empty expressions
        if macro is None and macro_closure(text, self.macros) & self.broken:
            return None  # reported once, where the broken macro is defined
        # One compiled expression per distinct text, in a load and across reloads:
        # rules that differ in a key share their payloads, which keeps what one
        # event touches in the CPU's caches, and a reload compiles only new text.
        def compile_() -> Compiled:
            used: set[str] = set()
            expr, problems = compile_expr(text, self.macros, self.lists, macro,
                                          self.rate_limits, used, self.cache.parts,
                                          self.interval_names, self.counter_names)
            return expr, problems, frozenset(used)

        expr, problems, used = self.cache.expr((text, macro, self.defs), compile_)
        self.used_lists |= used
        if self.rule_at is not None and macro is None and expr is not None and not problems:
            self.rule_exprs.append((self.rule_at, doc, path, text, expr))
        if macro is None:
            self.used_macros |= macro_closure(text, self.macros)
        for problem in problems:
            self.issues.append(self._located(doc, path, text, problem))
        return expr if not problems else None

    def _located(self, doc: Document, path: DocPath, text: str, p: ExprProblem) -> Issue:
        return doc.issue(path, p.message, p.value if p.value is not None else text,
                         offset=p.offset)

    def _param(self, doc: Document, path: DocPath, raw: Any, want: str | None = None
               ) -> Param | None:
        if isinstance(raw, str):
            return self._expr(doc, path, raw)
        if isinstance(raw, dict) and "value" in raw:
            value = raw["value"]
            # A literal is known now: check it now, not on every event.
            if want == "object" and not isinstance(value, dict):
                self.issues.append(doc.issue((*path, "value"), "must be a JSON object", value))
            if want == "jids" and not _jid_list(value):
                self.issues.append(doc.issue((*path, "value"),
                                             "must be a JID or a list of JIDs", value))
            if want == "jid" and not _jid_list(value, single=True):
                self.issues.append(doc.issue((*path, "value"), "must be a JID", value))
            return LiteralParam(value)
        return None  # the schema already reported it

    def _time_param(self, doc: Document, path: DocPath, raw: Any,
                    want: Literal["duration", "instant"]) -> Param | None:
        """ttl and until: a duration or instant written as is (`ttl: 7d`,
        `until: "2026-12-24T00:00:00Z"`: neither is a JMESPath expression, nor
        is a number), a {value: ...} literal, or an expression computing one."""
        parse = parse_duration if want == "duration" else to_epoch
        if isinstance(raw, dict) and "value" in raw:
            literal, at = raw["value"], (*path, "value")
        elif isinstance(raw, int | float) and not isinstance(raw, bool):
            literal, at = raw, path
        elif isinstance(raw, str):
            try:
                parse(raw)
            except TimeError:
                return self._param(doc, path, raw)  # an expression, checked as one
            literal, at = raw, path
        else:
            return None  # the schema reported it
        try:
            value = parse(literal)
        except TimeError as exc:
            self.issues.append(doc.issue(at, str(exc), literal))
            return None
        if want == "duration" and value <= 0:
            self.issues.append(doc.issue(at, "must be more than zero (it would be over at once)",
                                         literal))
            return None
        return LiteralParam(literal)

    def _rule(self, doc: Document, path: DocPath, raw: dict[str, Any]) -> None:
        self.rule_at = len(self.rules)
        try:
            self._rule_body(doc, path, raw)
        finally:
            self.rule_at = None

    def _rule_body(self, doc: Document, path: DocPath, raw: dict[str, Any]) -> None:
        name = raw.get("name")
        if isinstance(name, str):
            self._define(doc, "rule", name, (*path, "name"))
        match = None
        if isinstance(raw.get("match"), str):
            match = self._expr(doc, (*path, "match"), raw["match"])
        actions: list[ActionSpec] = []
        for j, action in enumerate(raw.get("actions") or []):
            spec = self._action(doc, (*path, "actions", j), action)
            if spec is not None:
                actions.append(spec)
        line, col = doc.where(path)
        self.rules.append(Rule(
            name=name if isinstance(name, str) else f"#{path[-1]}",
            match=match,
            actions=tuple(actions),
            cont=raw.get("continue") is True,
            enabled=raw.get("enabled") is not False,
            description=str(raw.get("description") or ""),
            file=doc.source,
            line=line,
            col=col,
            where=format_path(path),
        ))

    def _action(self, doc: Document, path: DocPath, raw: Any) -> ActionSpec | None:
        if not isinstance(raw, dict) or len(raw) != 1:
            return None
        ((kind, params),) = raw.items()
        p = (*path, kind)
        if kind == "drop":
            reason = params if isinstance(params, str) else (
                params.get("reason") if isinstance(params, dict) else None)
            return ActionSpec("drop", reason=reason if isinstance(reason, str) else None)
        if not isinstance(params, dict):
            return None
        if kind in ("relate", "unrelate"):
            rel = params.get("kind")
            if "ttl" in params and "until" in params:
                self.issues.append(doc.issue((*p, "until"), "give ttl or until, not both",
                                             key=True))
            return ActionSpec(
                kind,
                subject=self._param(doc, (*p, "subject"), params["subject"], "jid")
                if "subject" in params else None,
                object=self._param(doc, (*p, "object"), params["object"], "jid")
                if "object" in params else None,
                relation=rel if isinstance(rel, str) else None,
                attrs=self._param(doc, (*p, "attrs"), params["attrs"], "object")
                if "attrs" in params else None,
                mutual=params.get("mutual") is True,
                ttl=self._time_param(doc, (*p, "ttl"), params["ttl"], "duration")
                if "ttl" in params and kind == "relate" else None,
                until=self._time_param(doc, (*p, "until"), params["until"], "instant")
                if "until" in params and kind == "relate" else None,
            )
        if kind in ("schedule", "cancel"):
            if "key" not in params:
                return None  # the schema reported it
            if kind == "cancel":
                return ActionSpec("cancel", key=self._param(doc, (*p, "key"), params["key"]))
            if ("after" in params) == ("at" in params):
                self.issues.append(doc.issue(p, "a timer needs after or at (one of them)",
                                             key=True))
                return None
            return ActionSpec(
                "schedule", key=self._param(doc, (*p, "key"), params["key"]),
                after=self._time_param(doc, (*p, "after"), params["after"], "duration")
                if "after" in params else None,
                at=self._time_param(doc, (*p, "at"), params["at"], "instant")
                if "at" in params else None,
                event=self._param(doc, (*p, "event"), params["event"], "object")
                if "event" in params else None)
        if kind in ("count", "reset"):
            counter = params.get("counter")
            if not isinstance(counter, str) or "key" not in params:
                return None  # the schema reported it
            self.used_lists.add(f"counter:{counter}")
            if counter not in self.counter_names:
                close = difflib.get_close_matches(counter, sorted(self.counter_names), n=1)
                self.issues.append(doc.issue((*p, "counter"), f"unknown counter {counter!r}"
                                             + (f", did you mean {close[0]!r}?" if close
                                                else " (declare it under counters:)"),
                                             counter))
            by = params.get("by", 1)
            return ActionSpec(kind, counter=counter,
                              key=self._param(doc, (*p, "key"), params["key"]),
                              by=by if isinstance(by, int) else 1)
        if kind == "error":
            code, message = params.get("code"), params.get("message")
            return ActionSpec("error", code=code if isinstance(code, str) else "rejected",
                              message=message if isinstance(message, str) else None)
        if kind not in ("forward", "broadcast", "reply"):
            return None
        to = self._param(doc, (*p, "to"), params["to"], "jids") if "to" in params else None
        payload = (self._param(doc, (*p, "payload"), params["payload"], "object")
                   if "payload" in params else None)
        return ActionSpec(kind, to=to, payload=payload,
                          include_sender=params.get("include_sender") is True)


def _jid_list(value: Any, single: bool = False) -> bool:
    if isinstance(value, str):
        return valid_jid(value)
    return not single and isinstance(value, list) and all(valid_jid(v) for v in value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}

