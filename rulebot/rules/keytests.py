"""Key tests: the parts of a match the index can file a rule under. Pure.

What counts as a key test, the keys each stands for, and which parts before
one cannot raise: rules.index's docstring says why these rules make skipping
a rule exactly the same as trying it. rules.fields reads the same tests to
know which event types a rule can serve.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Literal, Protocol, cast

from rulebot.rules.expr import Expr, conjuncts

Node = dict[str, Any]
Kind = Literal["eq", "fold", "in"]

#: Where an expression's path may start: the envelope's per-event parts.
_ROOTS = frozenset({"event", "sender", "from", "stanza"})


class _NoKey:
    """The key of a value no key test can be true for (a list, an object...)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOKEY"


NOKEY: Any = _NoKey()
_NULL = ("null",)


def eq_key(value: Any) -> Hashable:
    """The key of `value` under JMESPath's `==` against a literal: strings as they
    are; numbers and booleans tagged apart (1 == 1.0, but 1 != true)."""
    kind = type(value)
    if kind is str:
        return cast(str, value)
    if kind is bool:
        return ("bool", value)
    if kind is int or kind is float:
        return ("num", cast(float, value))
    if value is None:
        return _NULL
    return cast(Hashable, NOKEY)


def fold_key(value: Any) -> Hashable:
    """The key of `value` under in_list: a case-folded string, nothing else."""
    return value.casefold() if isinstance(value, str) else cast(Hashable, NOKEY)


def in_key(value: Any) -> Hashable:
    """The key of `value` under `contains(list, value)`: Python's `in` on scalars."""
    if value is None or type(value) in (str, int, float, bool):
        return cast(Hashable, value)
    return cast(Hashable, NOKEY)  # a list or object never equals a scalar item


KEYS = {"eq": eq_key, "fold": fold_key, "in": in_key}


class Indexable(Protocol):
    """What the index reads of a rule (rules.ruleset.Rule, which imports this module)."""

    @property
    def match(self) -> Expr | None: ...
    @property
    def enabled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Dim:
    """One key test's dimension: the path it reads and its kind of equality."""

    path: tuple[str, ...]
    kind: Kind

    def __str__(self) -> str:
        return ".".join(self.path) + ("" if self.kind == "eq" else f" ({self.kind})")


@dataclass(frozen=True, slots=True)
class KeyTest:
    """A usable key test of one rule: true only for these keys of `dim`'s value."""

    dim: Dim
    keys: frozenset[Hashable]


def key_tests(rule: Indexable, lists: Mapping[str, Sequence[str]] | ListKeys
              ) -> tuple[KeyTest, ...]:
    """The rule's key tests that can stand for it (see the module's docstring): those
    before the first part that could raise. Two tests on one dimension are one test
    (their keys intersected)."""
    keys = lists if isinstance(lists, ListKeys) else ListKeys(lists)
    return merged_tests(part_tests(rule.match, keys))


def merged_tests(parts: Sequence[KeyTest | None]) -> tuple[KeyTest, ...]:
    by_dim: dict[Dim, frozenset[Hashable]] = {}
    for test in parts:
        if test is not None:
            held = by_dim.get(test.dim)
            by_dim[test.dim] = test.keys if held is None else held & test.keys
    return tuple(KeyTest(d, k) for d, k in by_dim.items())


class ListKeys:
    """The rule set's lists, and their key sets made once (not once per rule: 10,000
    rules naming one 50-member list held 52 MB of copies)."""

    def __init__(self, lists: Mapping[str, Sequence[str]]) -> None:
        self.lists = lists
        self._folded: dict[str, frozenset[Hashable]] = {}
        self._plain: dict[str, frozenset[Hashable]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.lists

    def folded(self, name: str) -> frozenset[Hashable]:
        found = self._folded.get(name)
        if found is None:
            found = self._folded[name] = frozenset(x.casefold() for x in self.lists[name])
        return found

    def plain(self, name: str) -> frozenset[Hashable]:
        found = self._plain.get(name)
        if found is None:
            found = self._plain[name] = frozenset(self.lists[name])
        return found


def part_tests(match: Expr | None, lists: ListKeys) -> list[KeyTest | None]:
    """Per `&&`-part of a match: its usable key test, or None."""
    out: list[KeyTest | None] = []
    usable = True
    for part in conjuncts(match):
        test = _key_test(part, lists) if usable else None
        if test is None and not _safe(part, lists):
            usable = False  # what comes after a part that may raise cannot stand for it
        out.append(test)
    return out


# ------------------------------------------------------------ recognising tests

def _path(node: Node) -> tuple[str, ...] | None:
    """The envelope path a node reads (`event.a.b`), or None."""
    if node["type"] == "field":
        names = (node["value"],)
    elif node["type"] == "subexpression" and all(c["type"] == "field"
                                                 for c in node["children"]):
        names = tuple(c["value"] for c in node["children"])
    else:
        return None
    return names if names[0] in _ROOTS else None


def path_node(path: tuple[str, ...]) -> Node:
    fields = [{"type": "field", "children": [], "value": p} for p in path]
    if len(fields) == 1:
        return fields[0]
    return {"type": "subexpression", "children": fields}


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN equals nothing, itself included
    return value is None or isinstance(value, str | int | bool)


def _equality(node: Node) -> tuple[tuple[str, ...], Hashable] | None:
    if node["type"] != "comparator" or node["value"] != "eq":
        return None
    left, right = node["children"]
    for side, other in ((left, right), (right, left)):
        path = _path(side)
        if path is not None and other["type"] == "literal" and _scalar(other["value"]):
            return path, eq_key(other["value"])
    return None


def _key_test(node: Node, lists: ListKeys) -> KeyTest | None:
    found = _equality(node)
    if found is not None:
        return KeyTest(Dim(found[0], "eq"), frozenset((found[1],)))
    if node["type"] == "or_expression":
        alternatives = [_key_test(c, lists) for c in _disjuncts(node)]
        dims = {t.dim for t in alternatives if t is not None}
        if None in alternatives or len(dims) != 1:
            return None
        return KeyTest(dims.pop(), frozenset(chain.from_iterable(
            t.keys for t in alternatives if t is not None)))
    if node["type"] != "function_expression" or len(node["children"]) != 2:
        return None
    subject, arg = node["children"]
    path = _path(arg)
    if path is None:
        return None
    if node["value"] == "in_list" and subject["type"] == "literal" \
            and subject["value"] in lists:
        return KeyTest(Dim(path, "fold"), lists.folded(subject["value"]))
    if node["value"] == "contains":
        items = _literal_list(subject, lists)
        if items is not None:
            return KeyTest(Dim(path, "in"), items)
    return None


def _literal_list(node: Node, lists: ListKeys) -> frozenset[Hashable] | None:
    """The items of a literal list of scalars, or of `lists.name`."""
    if node["type"] == "literal":
        value = node["value"]
        if isinstance(value, list) and all(_scalar(v) for v in value):
            return frozenset(value)
        return None
    path = _path_any(node)
    if path is not None and len(path) == 2 and path[0] == "lists" and path[1] in lists:
        return lists.plain(path[1])
    return None


def _path_any(node: Node) -> tuple[str, ...] | None:
    if node["type"] == "subexpression" and all(c["type"] == "field" for c in node["children"]):
        return tuple(c["value"] for c in node["children"])
    return None


def _disjuncts(node: Node) -> Iterable[Node]:
    if node["type"] == "or_expression":
        for child in node["children"]:
            yield from _disjuncts(child)
    else:
        yield node


#: Nodes that never raise whatever the event holds (missing fields are null).
_SAFE = frozenset({"field", "subexpression", "literal", "current", "identity", "comparator",
                   "not_expression", "and_expression", "or_expression", "index", "raw_string"})


def _safe(node: Node, lists: ListKeys) -> bool:
    """True when evaluating `node` can never raise: no function calls but key tests
    (in_list on a known list, contains on a literal list: they take any value), and
    no orderings (`<`, `>=`...) of values from the event: jmespath compares a
    string with a number by Python's `<`, which raises TypeError."""
    kind = node["type"]
    if kind == "function_expression":
        return _key_test(node, lists) is not None
    children = [c for c in node.get("children", ()) if isinstance(c, dict)]
    if kind == "comparator" and node["value"] not in ("eq", "ne") \
            and not all(c["type"] == "literal" for c in children):
        return False
    return kind in _SAFE and all(_safe(c, lists) for c in children)
