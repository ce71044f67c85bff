"""The match index: which rules can match an event, found without trying them. Pure.

Built once per rule set, at load time. A rule's `match` is a chain of
`&&`-parts evaluated left to right. A part of one of these forms, on an
envelope path (`event.room`, `event.a.b`, `sender`, `from`, `stanza.kind`):

    path == literal         literal == path      (a string, number, boolean or null)
    path == 'a' || path == 'b'                   (key tests on one path, or-ed)
    in_list('name', path)                        (a list of the rule set)
    contains(`[literals]`, path)                 contains(lists.name, path)

is a *key test*: it is true only when the path's value, turned into a key,
is one of a few keys known now. When such a part is false the rule does not
match, and when every part before it cannot raise (no function calls but key
tests, see `_safe`), skipping the rule records no error either: the rule's
outcome is exactly "not matched", as if it had been tried. So a rule may be
filed under the keys of any such part, and an event need only try the rules
filed under its own keys, plus those with no usable key test, in rule order.

Keys follow each test's own equality (they differ, and the index must not
blur them): `==` is JMESPath's (1 is not `true`), `contains` is Python's `in`
(1 is `true`, as jmespath computes it), `in_list` is case-insensitive on
strings only.

The index is a tree. A node splits its rules on the key test (a *dimension*:
path and kind of test) that leaves an event the fewest rules to try on
average; rules without that test go to the node's `rest`, which is split in
turn, and so is every branch, on its rules' other tests (types x tenants:
tenant first, then type). Leaves hold rule indices in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, cast

from rulebot.rules.jpcompile import Fn, Runtime, and_chain, compile_ast
from rulebot.rules.keytests import (
    KEYS,
    NOKEY,
    Dim,
    Indexable,
    KeyTest,
    ListKeys,
    merged_tests,
    part_tests,
    path_node,
)

#: A candidate: the rule's index, and what is left of its match to evaluate
#: (None: nothing, it matches). The index already knows the key tests of the
#: path it took to the leaf are true: they are left out (they cannot raise, so
#: leaving them out changes neither the outcome nor the errors), and rules that
#: differ only in those keys share one compiled rest (one closure for 1,000
#: rooms, which keeps an event's work in the CPU's caches).
Candidate = tuple[int, Fn | None]


@dataclass(frozen=True, slots=True)
class Leaf:
    rules: tuple[Candidate, ...]  # in rule order


@dataclass(frozen=True, slots=True)
class Split:
    """Rules filed by the key of `dim`'s value, and the `rest` that have no test on it."""

    dim: Dim
    get: Fn  # reads dim.path, as the rules' expressions read it
    key: Callable[[Any], Hashable]  # the value's key for dim.kind
    branches: Mapping[Hashable, IndexNode]
    rest: IndexNode | None
    # True when every branch is a leaf that holds the rest's rules too (a rest
    # leaf merged in at load time), so an event takes one branch or the rest.
    merged: bool = False


IndexNode = Leaf | Split
#: Field paths never read the runtime (jpcompile's closures take one).
_NO_RUNTIME = cast(Runtime, None)


@dataclass(frozen=True, slots=True)
class RuleIndex:
    root: IndexNode
    # Per enabled rule (index into the rule set's rules): its usable key tests.
    tests: Mapping[int, tuple[KeyTest, ...]]

    def candidates(self, data: Mapping[str, Any]) -> Sequence[Candidate]:
        """The rules that can match the envelope `data`, in rule order."""
        node = self.root
        if isinstance(node, Leaf):
            return node.rules
        parts: list[tuple[Candidate, ...]] = []
        todo: list[IndexNode | None] = [node]
        while todo:
            step = todo.pop()
            while isinstance(step, Split):
                key = step.key(step.get(data, _NO_RUNTIME))
                branch = step.branches.get(key) if key is not NOKEY else None
                if step.merged:
                    step = step.rest if branch is None else branch
                else:
                    todo.append(step.rest)
                    step = branch
            if step is not None and step.rules:
                parts.append(step.rules)
        if len(parts) == 1:
            return parts[0]
        return sorted(chain.from_iterable(parts))  # each rule is in one part at most

    def dims(self) -> list[Dim]:
        """The dimensions the tree splits on, outermost first (for `explain` and tests)."""
        out: list[Dim] = []
        todo: list[IndexNode] = [self.root]
        while todo:
            node = todo.pop(0)
            if isinstance(node, Leaf):
                continue
            if node.dim not in out:
                out.append(node.dim)
            todo.extend(node.branches.values())
            if node.rest is not None:
                todo.append(node.rest)
        return out


def linear_index(rules: Sequence[Indexable]) -> RuleIndex:
    """No index: every enabled rule is a candidate for every event (the baseline
    the index is checked and measured against)."""
    return RuleIndex(Leaf(tuple((i, None if r.match is None else r.match.fn)
                                for i, r in enumerate(rules) if r.enabled)), {})


def build_index(rules: Sequence[Indexable], lists: Mapping[str, Sequence[str]]) -> RuleIndex:
    """The index of the enabled rules; `lists` are the rule set's lists."""
    builder = _Builder(rules, lists)
    items = [(i, {t.dim: t.keys for t in found}) for i, found in builder.tests.items()]
    return RuleIndex(builder.build(items, frozenset()), builder.tests)


class _Builder:
    """Builds the tree; shares equal subtrees (an allow-list rule sits under every
    member's key, usually the same one or two rules)."""

    #: A split must save trying this many rules per event, on average: a
    #: lookup costs about a third of trying one rule.
    GAIN = 1.0
    #: At most this many entries are copied to merge a rest into the branches.
    MERGE = 100_000

    def __init__(self, rules: Sequence[Indexable], lists: Mapping[str, Sequence[str]]) -> None:
        self.rules = rules
        keys = ListKeys(lists)
        by_match: dict[int, list[KeyTest | None]] = {}  # rules share compiled matches
        self.parts: dict[int, list[KeyTest | None]] = {}
        for i, rule in enumerate(rules):
            if rule.enabled:
                found = by_match.get(id(rule.match))
                if found is None:
                    found = by_match[id(rule.match)] = part_tests(rule.match, keys)
                self.parts[i] = found
        self.tests = {i: merged_tests(parts) for i, parts in self.parts.items()}
        self.getters: dict[Dim, Fn] = {}
        for merged in self.tests.values():
            for test in merged:
                self.getters.setdefault(test.dim, compile_ast(path_node(test.dim.path)))
        self.memo: dict[tuple[tuple[int, ...], frozenset[Dim]], IndexNode] = {}
        self.rests: dict[tuple[bytes, ...], Fn] = {}  # compiled rests of matches, by their parts

    def residual(self, index: int, known: frozenset[Dim]) -> Fn | None:
        """Rule `index`'s match without its key tests on the `known` dimensions."""
        match = self.rules[index].match
        if match is None:
            return None
        parts = match.parts
        left = [i for i, t in enumerate(self.parts[index]) if t is None or t.dim not in known]
        if len(left) == len(parts):
            return match.fn
        if not left:
            return None
        key = tuple(match.part_keys[i] for i in left)
        fn = self.rests.get(key)
        if fn is None:
            fn = self.rests[key] = and_chain([match.part_fns[i] for i in left])
        return fn

    def build(self, items: list[tuple[int, dict[Dim, frozenset[Hashable]]]],
              used: frozenset[Dim]) -> IndexNode:
        memo_key = (tuple(i for i, _ in items), used)
        node = self.memo.get(memo_key)
        if node is None:
            node = self._build(items, used)
            self.memo[memo_key] = node
        return node

    def _build(self, items: list[tuple[int, dict[Dim, frozenset[Hashable]]]],
               used: frozenset[Dim]) -> IndexNode:
        best = self._best(items)
        if best is None:
            return Leaf(tuple((i, self.residual(i, used)) for i, _ in items))
        dim = best
        rest = [(i, t) for i, t in items if dim not in t]
        buckets: dict[Hashable, list[tuple[int, dict[Dim, frozenset[Hashable]]]]] = {}
        for i, t in items:
            keys = t.get(dim)
            if keys is None:
                continue
            others = {d: k for d, k in t.items() if d != dim}
            for key in keys:
                buckets.setdefault(key, []).append((i, others))
        inner = used | {dim}
        branches = {k: self.build(v, inner) for k, v in buckets.items()}
        rest_node = self.build(rest, used) if rest else None
        merged = False
        if all(isinstance(b, Leaf) for b in branches.values()) \
                and (rest_node is None or isinstance(rest_node, Leaf)) \
                and (rest_node is None or len(rest_node.rules) * len(branches) <= self.MERGE):
            merged = True
            if rest_node is not None:
                branches = self._merged(branches, rest_node)
        return Split(dim=dim, get=self.getters[dim], key=KEYS[dim.kind],
                     branches=branches, rest=rest_node, merged=merged)

    def _merged(self, branches: dict[Hashable, IndexNode], rest: Leaf
                ) -> dict[Hashable, IndexNode]:
        done: dict[int, Leaf] = {}  # by id: branches share leaves
        out: dict[Hashable, IndexNode] = {}
        for key, branch in branches.items():
            assert isinstance(branch, Leaf)
            leaf = done.get(id(branch))
            if leaf is None:
                leaf = done[id(branch)] = Leaf(tuple(sorted(branch.rules + rest.rules)))
            out[key] = leaf
        return out

    def _best(self, items: list[tuple[int, dict[Dim, frozenset[Hashable]]]]) -> Dim | None:
        """The dimension leaving the fewest rules to try, if it saves enough."""
        if len(items) < 2:
            return None
        covered: dict[Dim, int] = {}
        entries: dict[Dim, int] = {}
        keys: dict[Dim, set[Hashable]] = {}
        for _, t in items:
            for d, k in t.items():
                covered[d] = covered.get(d, 0) + 1
                entries[d] = entries.get(d, 0) + len(k)
                keys.setdefault(d, set()).update(k)
        best, best_cost = None, math.inf
        for d in sorted(covered, key=str):  # sorted: the same tree on every run
            # An event with one of the keys tries the rules without this test
            # and, on average, one bucket.
            cost = len(items) - covered[d] + entries[d] / max(1, len(keys[d]))
            if cost < best_cost:
                best, best_cost = d, cost
        if best is None or best_cost > len(items) - self.GAIN:
            return None
        return best
