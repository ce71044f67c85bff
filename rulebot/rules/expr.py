"""Compiling rule expressions: macro expansion, JMESPath parsing, static analysis.

Pure.

Macros are expanded textually: `$name` outside quotes becomes `(macro text)`,
so a macro is evaluated where it is written, like any sub-expression.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jmespath import exceptions as jp_exceptions
from jmespath import parser as jp_parser

from rulebot.rules.functions import RuleFunctions, check_pattern
from rulebot.rules.jpcompile import Fn, Runtime, and_chain, compile_ast
from rulebot.rules.timefns import TimeError, parse_duration, to_epoch, zone

Node = dict[str, Any]

_MACRO = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_MAX_EXPANSION = 100_000  # macros that use macros twice grow exponentially
#: Every function an expression may call, with its JMESPath signature.
FUNCTION_TABLE: Mapping[str, Any] = RuleFunctions({}).FUNCTION_TABLE

@dataclass(frozen=True, slots=True)
class Expr:
    """A compiled expression; `source` is what the operator wrote.

    It keeps its `&&`-parts (syntax trees, macros expanded), their digests and
    their closures, not the whole syntax tree: the parts are shared by every
    expression of the load that has them (see PartTable), which is most of a
    large rule set's trees (10,000 per-room rules: 43 MB of trees as jmespath
    parses them, one per rule)."""

    source: str
    calls_functions: bool
    fn: Fn  # the whole expression as a closure (rulebot.rules.jpcompile)
    # Its `&&`-parts, left to right, digests of their canonical texts (what the
    # shadowing check and the index compare; 16 bytes, not the ~300 of the
    # text) and their closures (what the index's rests of matches are made of).
    parts: tuple[Node, ...] = ()
    part_keys: tuple[bytes, ...] = ()
    part_fns: tuple[Fn, ...] = ()

    def run(self, data: Any, runtime: Runtime) -> Any:
        """The expression's value on `data`, exactly as jmespath's search would compute it."""
        return self.fn(data, runtime)

    def tree(self) -> Node:
        """The whole syntax tree, for tests and tools: as jmespath parses it, but
        for `&&`s nested by parentheses, nested left to right (the same value)."""
        tree = self.parts[0]
        for part in self.parts[1:]:
            tree = {"type": "and_expression", "children": [tree, part]}
        return tree


class PartTable:
    """One syntax tree and one closure per distinct `&&`-part, by its digest: rules
    that test the same thing (`event.type == 'chat'`, `in_list('members', sender)`)
    share both. A closure depends only on its tree (lists and functions are looked
    up when it runs), so sharing by the tree's digest changes no result. The
    loader's cache keeps one across reloads."""

    def __init__(self, previous: Mapping[bytes, tuple[Node, Fn]] | None = None) -> None:
        self.entries: dict[bytes, tuple[Node, Fn]] = {}  # what this load used
        self._previous = previous or {}  # what the load before used
        # Subtrees of this load's new parts, shared too (`event.room` of every
        # `event.room == 'room-K'`); dropped with the table at the end of the load.
        self._nodes: dict[tuple[Any, ...], Node] = {}

    def part(self, key: bytes, node: Node) -> tuple[Node, Fn]:
        found = self.entries.get(key)
        if found is None:
            found = self._previous.get(key)
            if found is None:
                node = self._intern(node)
                found = (node, compile_ast(node))
            self.entries[key] = found
        return found

    def _intern(self, node: Node) -> Node:
        """An equal tree made of the subtrees met before wherever they are equal."""
        children = [self._intern(c) if isinstance(c, dict) else c
                    for c in node.get("children", ())]
        value = node.get("value")
        # Tagged by type: 1, 1.0 and true are equal in Python, not in JMESPath.
        if value is None or isinstance(value, str | int | float | bool):
            shown: Any = (type(value).__name__, value)
        else:  # a literal list or object
            shown = json.dumps(value, sort_keys=True)
        key = (node["type"], "value" in node, shown,
               tuple(id(c) if isinstance(c, dict) else ("raw", repr(c)) for c in children))
        found = self._nodes.get(key)
        if found is None:
            found = self._nodes[key] = {**node, "children": children}
        return found

    def keep(self, expr: Expr) -> None:
        """Count an expression taken whole from the cache as using its parts."""
        for key, node, fn in zip(expr.part_keys, expr.parts, expr.part_fns, strict=True):
            self.entries.setdefault(key, (node, fn))


@dataclass(frozen=True, slots=True)
class ExprProblem:
    message: str
    offset: int | None = None  # character offset in the source, when known
    value: str | None = None


def macro_refs(text: str) -> Iterator[tuple[int, str]]:
    """(offset, name) of every `$name` outside JMESPath string/literal quotes."""
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
        elif ch == "$":
            m = _MACRO.match(text, i)
            if m:
                yield i, m.group(1)
                i = m.end()
                continue
        i += 1


def macro_closure(text: str, macros: Mapping[str, str]) -> set[str]:
    """Names of every macro `text` uses, directly or through other macros."""
    seen: set[str] = set()
    if "$" not in text:
        return seen
    todo = [name for _, name in macro_refs(text)]
    while todo:
        name = todo.pop()
        if name in seen or name not in macros:
            continue
        seen.add(name)
        todo.extend(n for _, n in macro_refs(macros[name]))
    return seen


def expand(text: str, macros: Mapping[str, str], stack: tuple[str, ...] = ()
           ) -> tuple[str, list[ExprProblem]]:
    """The text with every `$name` replaced; problems for unknown or cyclic macros.

    `stack` holds the macros being expanded (a macro's own name when checking
    its definition), so a cycle is named once: `$a -> $b -> $a`."""
    if "$" not in text:
        return text, []
    problems: list[ExprProblem] = []
    out: list[str] = []
    last = 0
    for offset, name in macro_refs(text):
        out.append(text[last:offset])
        last = offset + 1 + len(name)
        if name in stack:
            chain = " -> ".join(f"${n}" for n in (*stack[stack.index(name):], name))
            problems.append(ExprProblem(f"macro ${name} expands into itself ({chain})", offset))
            out.append("null")
            continue
        if name not in macros:
            problems.append(ExprProblem(f"unknown macro ${name}", offset, f"${name}"))
            out.append("null")
            continue
        inner, inner_problems = expand(macros[name], macros, (*stack, name))
        # Report a problem found inside a macro at the place it is used here.
        problems.extend(ExprProblem(p.message, offset, p.value) for p in inner_problems[:1])
        out.append(f"({inner})")
        if sum(map(len, out)) > _MAX_EXPANSION:
            problems.append(ExprProblem(f"macro expansion longer than {_MAX_EXPANSION} "
                                        "characters", offset))
            break
    out.append(text[last:])
    return "".join(out), problems


def compile_expr(
    text: str, macros: Mapping[str, str], lists: Mapping[str, object], name: str | None = None,
    limits: Mapping[str, object] | None = None, used_lists: set[str] | None = None,
    table: PartTable | None = None, intervals: Mapping[str, object] | None = None,
    counters: Mapping[str, object] | None = None,
) -> tuple[Expr | None, list[ExprProblem]]:
    """Compile one expression (the macro `name`'s text when given) and check what can be
    checked before any event. `used_lists` gains the lists it names, and
    `interval:NAME` / `counter:NAME` for each interval and counter (names have
    no colon)."""
    expanded, problems = expand(text, macros, (name,) if name else ())
    if problems:
        return None, problems
    try:
        parsed = jp_parser.Parser().parse(expanded)
    except jp_exceptions.ParseError as exc:
        offset = exc.lex_position if expanded == text else None
        msg = getattr(exc, "message", None) or exc.msg
        token = exc.token_value
        detail = f"{msg}" + (f" near {token!r}" if token not in (None, "") else "")
        if isinstance(exc, jp_exceptions.IncompleteExpressionError):
            detail = "incomplete expression"
        return None, [ExprProblem(f"invalid JMESPath expression: {detail}", offset, text)]
    except jp_exceptions.JMESPathError as exc:
        return None, [ExprProblem(f"invalid JMESPath expression: {exc}", None, text)]
    tree: Node = parsed.parsed  # type: ignore[assignment]  # jmespath's TypedDict
    problems = list(_check_ast(tree, lists, text, limits or {}, used_lists, intervals or {},
                               counters or {}))
    calls = any(node["type"] == "function_expression" for node in walk(tree))
    shared = table if table is not None else PartTable()
    parts = _flatten_and(tree)
    keys = tuple(part_key(p) for p in parts)
    entries = [shared.part(k, p) for k, p in zip(keys, parts, strict=True)]
    fns = tuple(fn for _, fn in entries)
    return Expr(text, calls, and_chain(fns), tuple(node for node, _ in entries), keys,
                fns), problems


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.get("children", ()):
        if isinstance(child, dict):
            yield from walk(child)


def root_walk(node: Node, at_root: bool) -> Iterator[tuple[Node, bool]]:
    """Nodes with whether they are evaluated against the envelope itself."""
    yield node, at_root
    kind = node["type"]
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    for i, child in enumerate(children):
        if kind in ("subexpression", "index_expression", "pipe", "projection",
                    "value_projection", "filter_projection"):
            child_root = at_root and i == 0
        elif kind == "expref":
            child_root = False
        else:
            child_root = at_root
        yield from root_walk(child, child_root)


def _head_field(node: Node) -> str | None:
    while node["type"] in ("index_expression", "projection", "subexpression",
                           "value_projection", "filter_projection"):
        node = node["children"][0]
    return node["value"] if node["type"] == "field" else None


#: The top-level names of the envelope every expression is evaluated against.
ENVELOPE = frozenset({"event", "sender", "from", "stanza", "lists", "bot", "now", "timer"})


def _check_ast(tree: Node, lists: Mapping[str, object], text: str = "",
               limits: Mapping[str, object] | None = None,
               used_lists: set[str] | None = None,
               intervals: Mapping[str, object] | None = None,
               counters: Mapping[str, object] | None = None) -> Iterator[ExprProblem]:
    used = used_lists if used_lists is not None else set()
    for node, at_root in root_walk(tree, True):
        kind = node["type"]
        if kind == "field" and at_root and node["value"] not in ENVELOPE:
            name = node["value"]
            if f'"{name}"' in text:
                hint = (f": for the string write '{name}' in single quotes; double quotes "
                        "name a field in JMESPath")
            else:
                close = difflib.get_close_matches(name, sorted(ENVELOPE), n=1)
                hint = f", did you mean {close[0]!r}?" if close else (
                    f" (the envelope has: {', '.join(sorted(ENVELOPE))})")
            yield ExprProblem(f"unknown envelope field {name!r}{hint}", None, name)
        if kind == "subexpression" and at_root:
            first = node["children"][0]
            if first["type"] == "field" and first["value"] == "lists":
                name = _head_field(node["children"][1])
                if name is not None:
                    used.add(name)
                if name is not None and name not in lists:
                    yield ExprProblem(f"unknown list {name!r}", None, f"lists.{name}")
        if kind != "function_expression":
            continue
        name = node["value"]
        args = node["children"]
        entry = FUNCTION_TABLE.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, sorted(FUNCTION_TABLE), n=1)
            hint = f", did you mean {close[0]}()?" if close else ""
            yield ExprProblem(f"unknown function {name}(){hint}", None, name)
            continue
        yield from _check_arity(name, entry["signature"], len(args))
        literal = args[0]["value"] if args and args[0]["type"] == "literal" else None
        if name == "in_list" and isinstance(literal, str):
            used.add(literal)
        if name == "in_list" and isinstance(literal, str) and literal not in lists:
            yield ExprProblem(f"unknown list {literal!r}", None, literal)
        if name == "over_limit" and isinstance(literal, str) and literal not in (limits or {}):
            yield ExprProblem(f"unknown rate limit {literal!r}", None, literal)
        if name == "regex_match" and args and args[0]["type"] != "literal":
            # Python's re has no time limit: a pattern taken from an event could be
            # made to backtrack for minutes and stall every other event.
            yield ExprProblem("regex_match: the pattern must be a literal string "
                              "(e.g. '^[a-z]+$'), not computed from the event", None, name)
        if name == "regex_match" and isinstance(literal, str):
            err = check_pattern(literal)
            if err:
                yield ExprProblem(err, None, literal)
        yield from _check_time_call(name, args, intervals or {}, used)
        if name == "counter" and isinstance(literal, str):
            used.add(f"counter:{literal}")
            if literal not in (counters or {}):
                close = difflib.get_close_matches(literal, sorted(counters or {}), n=1)
                hint = f", did you mean {close[0]!r}?" if close else ""
                yield ExprProblem(f"unknown counter {literal!r}{hint}", None, literal)


def _check_time_call(name: str, args: Sequence[Node], intervals: Mapping[str, object],
                     used: set[str]) -> Iterator[ExprProblem]:
    """Literal arguments of the time functions: known now, so checked now."""
    def literal(i: int) -> object:
        return args[i]["value"] if len(args) > i and args[i]["type"] == "literal" else None

    if name in ("within", "within_at") and isinstance(literal(0), str):
        interval = str(literal(0))
        used.add(f"interval:{interval}")
        if interval not in intervals:
            close = difflib.get_close_matches(interval, sorted(intervals), n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            yield ExprProblem(f"unknown interval {interval!r}{hint}", None, interval)
    checks: list[tuple[int, Callable[[object], object]]] = []
    if name == "duration":
        checks = [(0, parse_duration)]
    elif name == "time_add":
        checks = [(0, to_epoch), (1, parse_duration)]
    elif name in ("to_epoch", "to_iso"):
        checks = [(0, to_epoch)]
    elif name == "time_diff":
        checks = [(0, to_epoch), (1, to_epoch)]
    elif name in ("weekday", "hour", "date", "clock"):
        checks = [(0, to_epoch), (1, zone)]
    elif name == "within_at":
        checks = [(1, to_epoch)]
    for i, check in checks:
        value = literal(i)
        if value is None:
            continue
        try:
            check(value)
        except TimeError as exc:
            yield ExprProblem(f"{name}: {exc}", None, value if isinstance(value, str) else name)


def _check_arity(name: str, signature: Any, count: int) -> Iterator[ExprProblem]:
    variadic = bool(signature) and signature[-1].get("variadic", False)
    if (variadic and count >= len(signature)) or (not variadic and count == len(signature)):
        return
    want = f"at least {len(signature)}" if variadic else str(len(signature))
    yield ExprProblem(f"{name}() takes {want} argument(s), got {count}", None, name)


def conjuncts(expr: Expr | None) -> tuple[Node, ...]:
    """The `&&`-separated parts of a match expression, left to right."""
    return () if expr is None else expr.parts


def _flatten_and(tree: Node) -> tuple[Node, ...]:
    out: list[Node] = []

    def flatten(node: Node) -> None:
        if node["type"] == "and_expression":
            for child in node["children"]:
                flatten(child)
        else:
            out.append(node)

    flatten(tree)
    return tuple(out)


def canonical(node: Node) -> str:
    return json.dumps(node, sort_keys=True)


def part_key(node: Node) -> bytes:
    """A digest of the node's canonical text: equal for equal syntax trees."""
    return hashlib.blake2b(canonical(node).encode(), digest_size=16).digest()


SearchFn = Callable[[Any, Any], Any]
