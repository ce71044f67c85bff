"""JMESPath ASTs compiled to Python closures, with the tree interpreter's exact semantics.

Pure: no I/O, no state beyond what is passed in.

`jmespath`'s `ParsedResult.search` builds a `TreeInterpreter` and walks the
AST dictionary for every call, dispatching on each node's type by name; for a
rule set that is most of the cost of a decision. `compile_ast` walks the AST
once, at load time, and returns a closure `fn(value, runtime)` that computes
the same result. Node types that are rare in rules (slices, `&expr`
references, anything a future jmespath adds) are not translated: their
closure hands the node to the real interpreter, so the result is always the
interpreter's. Function calls go through the same `Functions.call_function`
(argument count and type checks, the same errors) as the interpreter's.

The translation mirrors `jmespath.visitor.TreeInterpreter` (jmespath 1.x);
tests/unit/rules/test_jpcompile.py checks it against the interpreter on generated
expressions and documents, so a semantic drift in a future jmespath release
fails the test suite instead of changing decisions silently.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from numbers import Number
from typing import Any

from jmespath import functions as jp_functions
from jmespath import visitor as jp_visitor

Node = dict[str, Any]
Fn = Callable[[Any, "Runtime"], Any]

# The interpreter's comparison rules, written out here rather than taken from
# jmespath.visitor's private helpers (_equals, _is_comparable,
# _is_actual_number): 0/1 never equal false/true at the top of a comparison
# (nested values compare as Python does), and ordering is only between two
# numbers or two strings. tests/unit/rules/test_jpcompile.py holds them to the
# interpreter's results, and to its private helpers while they exist.


def is_actual_number(x: Any) -> bool:
    """A number, and not a boolean (Python's bool is an int)."""
    return isinstance(x, Number) and not isinstance(x, bool)


def equals(x: Any, y: Any) -> bool:
    """JMESPath's `==`: Python's, except that 0 and 1 never equal false and true."""
    if is_actual_number(x) and x in (0, 1):
        if isinstance(y, bool):
            return False
    elif is_actual_number(y) and y in (0, 1) and isinstance(x, bool):
        return False
    return bool(x == y)


def is_comparable(x: Any) -> bool:
    """Whether `<`, `>`, `<=`, `>=` apply: numbers and strings only."""
    return is_actual_number(x) or isinstance(x, str)

_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt, "gt": operator.gt, "lte": operator.le, "gte": operator.ge,
}

class Runtime:
    """What a compiled expression needs at evaluation time: the function table
    (bound to one rule set and state view) and, for untranslated nodes, an
    interpreter over the same functions, created on first use."""

    __slots__ = ("_interpreter", "functions")

    def __init__(self, functions: jp_functions.Functions) -> None:
        self.functions = functions
        self._interpreter: jp_visitor.TreeInterpreter | None = None

    def interpreter(self) -> jp_visitor.TreeInterpreter:
        if self._interpreter is None:
            self._interpreter = jp_visitor.TreeInterpreter(
                jp_visitor.Options(custom_functions=self.functions))
        return self._interpreter


def is_false(value: Any) -> bool:
    """JMESPath falsiness, written as the interpreter writes it: false, null, "",
    [] and {} are false; 0 is true. The one definition in rulebot (the engine's
    `truthy` is its negation)."""
    if value is True:  # what a match expression yields most
        return False
    return (value == "" or value == [] or value == {} or value is None
            or value is False)


def compile_ast(node: Node) -> Fn:
    """A closure computing `node` for (value, runtime); never evaluates anything now."""
    kind = node["type"]
    builder = _BUILDERS.get(kind)
    if builder is None:
        return _fallback(node)
    return builder(node)


def _fallback(node: Node) -> Fn:
    def run(value: Any, rt: Runtime) -> Any:
        return rt.interpreter().visit(node, value)  # type: ignore[arg-type]
    return run


def _get(value: Any, key: str) -> Any:
    try:
        return value.get(key)
    except AttributeError:
        return None


def _field(node: Node) -> Fn:
    key = node["value"]

    def run(value: Any, rt: Runtime) -> Any:
        if type(value) is dict:  # the common case, without the exception machinery
            return value.get(key)
        return _get(value, key)
    return run


def _chain(children: Sequence[Node]) -> Fn:
    """Children applied one after the other (subexpression, index_expression, pipe)."""
    if all(c["type"] == "field" for c in children):
        keys = tuple(c["value"] for c in children)

        def fields(value: Any, rt: Runtime) -> Any:
            for key in keys:
                if type(value) is dict:
                    value = value.get(key)
                else:
                    value = _get(value, key)
            return value
        return fields
    steps = tuple(compile_ast(c) for c in children)

    def run(value: Any, rt: Runtime) -> Any:
        for step in steps:
            value = step(value, rt)
        return value
    return run


def _sequence(node: Node) -> Fn:
    return _chain(node["children"])


def _comparator(node: Node) -> Fn:
    op = node["value"]
    left_node, right_node = node["children"]
    left, right = compile_ast(left_node), compile_ast(right_node)
    if op in ("eq", "ne"):
        negate = op == "ne"
        literal = right_node["value"] if right_node["type"] == "literal" else None
        if right_node["type"] == "literal" and isinstance(literal, str):
            # `x == 'text'`: equals only differs from == when one side is a
            # bool and the other the number 0 or 1; a string literal is neither.
            def eq_text(value: Any, rt: Runtime) -> Any:
                return (left(value, rt) == literal) != negate
            return eq_text

        def eq(value: Any, rt: Runtime) -> Any:
            return equals(left(value, rt), right(value, rt)) != negate
        return eq
    compare = _ORDER[op]

    def order(value: Any, rt: Runtime) -> Any:
        a = left(value, rt)
        b = right(value, rt)
        if not (is_comparable(a) and is_comparable(b)):
            return None
        return compare(a, b)
    return order


def _and(node: Node) -> Fn:
    left, right = (compile_ast(c) for c in node["children"])
    return _and_fns(left, right)


def and_chain(fns: Sequence[Fn]) -> Fn:
    """`a && b && c` of compiled parts, nested as jmespath parses it ((a && b) && c)."""
    fn = fns[0]
    for right in fns[1:]:
        fn = _and_fns(fn, right)
    return fn


def _and_fns(left: Fn, right: Fn) -> Fn:
    def run(value: Any, rt: Runtime) -> Any:
        matched = left(value, rt)
        if is_false(matched):
            return matched
        return right(value, rt)
    return run


def _or(node: Node) -> Fn:
    left, right = (compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        matched = left(value, rt)
        if is_false(matched):
            matched = right(value, rt)
        return matched
    return run


def _not(node: Node) -> Fn:
    inner = compile_ast(node["children"][0])

    def run(value: Any, rt: Runtime) -> Any:
        result = inner(value, rt)
        if is_actual_number(result) and result == 0:
            return False  # !0 is false: 0 is not falsy in JMESPath
        return not result
    return run


def _literal(node: Node) -> Fn:
    literal = node["value"]

    def run(value: Any, rt: Runtime) -> Any:
        return literal
    return run


def _current(node: Node) -> Fn:
    def run(value: Any, rt: Runtime) -> Any:
        return value
    return run


def _function(node: Node) -> Fn:
    name = node["value"]
    args = tuple(compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        return call_function(rt.functions, name, [arg(value, rt) for arg in args])
    return run


#: A function and the Python type names each argument may have (None: any).
_Plan = tuple[Callable[..., Any], tuple[frozenset[str] | None, ...]]
#: Per function table class and name; None where the signature is variadic or
#: has typed arrays.
_PLANS: dict[tuple[type, str], _Plan | None] = {}


def _plan(functions: jp_functions.Functions, name: str) -> _Plan | None:
    key = (type(functions), name)
    if key in _PLANS:
        return _PLANS[key]
    plan = None
    spec = functions.FUNCTION_TABLE.get(name)
    if spec is not None:
        signature = spec["signature"]
        simple = all(not arg.get("variadic") and all("-" not in t for t in arg["types"])
                     for arg in signature)
        if simple:
            plan = (spec["function"], tuple(
                frozenset(n for t in arg["types"] for n in jp_functions.REVERSE_TYPES_MAP[t])
                if arg["types"] else None for arg in signature))
    _PLANS[key] = plan
    return plan


def call_function(functions: jp_functions.Functions, name: str, args: list[Any]) -> Any:
    """`functions.call_function(name, args)`, with its argument check done from a
    table prepared once per function: jmespath re-derives the allowed Python type
    names from the signature on every call (a third of a rule's time with two
    in_list calls). The check is the same one, on the same type names; whenever
    it fails, or for signatures the table does not cover, jmespath's own
    call_function runs and raises its own error."""
    plan = _plan(functions, name)
    if plan is not None:
        function, checks = plan
        if len(args) == len(checks):
            for arg, allowed in zip(args, checks, strict=True):
                if allowed is not None and type(arg).__name__ not in allowed:
                    break
            else:
                return function(functions, *args)
    return functions.call_function(name, args)


def _multi_select_dict(node: Node) -> Fn:
    pairs = tuple((c["value"], compile_ast(c["children"][0])) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        if value is None:
            return None
        return {key: fn(value, rt) for key, fn in pairs}
    return run


def _multi_select_list(node: Node) -> Fn:
    items = tuple(compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        if value is None:
            return None
        return [fn(value, rt) for fn in items]
    return run


def _key_val_pair(node: Node) -> Fn:
    return compile_ast(node["children"][0])


def _index(node: Node) -> Fn:
    index = node["value"]

    def run(value: Any, rt: Runtime) -> Any:
        if not isinstance(value, list):
            return None
        try:
            return value[index]
        except IndexError:
            return None
    return run


def _collect(items: Any, each: Fn, rt: Runtime) -> list[Any]:
    """`each` applied to every item, nulls left out (what every projection keeps)."""
    collected = []
    for element in items:
        current = each(element, rt)
        if current is not None:
            collected.append(current)
    return collected


def _projection(node: Node) -> Fn:
    base, each = (compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        items = base(value, rt)
        if not isinstance(items, list):
            return None
        return _collect(items, each, rt)
    return run


def _value_projection(node: Node) -> Fn:
    base, each = (compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        items = base(value, rt)
        try:
            items = items.values()
        except AttributeError:
            return None
        return _collect(items, each, rt)
    return run


def _filter_projection(node: Node) -> Fn:
    base, each, condition = (compile_ast(c) for c in node["children"])

    def run(value: Any, rt: Runtime) -> Any:
        items = base(value, rt)
        if not isinstance(items, list):
            return None
        collected = []
        for element in items:
            if not is_false(condition(element, rt)):
                current = each(element, rt)
                if current is not None:
                    collected.append(current)
        return collected
    return run


def _flatten(node: Node) -> Fn:
    base = compile_ast(node["children"][0])

    def run(value: Any, rt: Runtime) -> Any:
        items = base(value, rt)
        if not isinstance(items, list):
            return None
        merged: list[Any] = []
        for element in items:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged
    return run


_BUILDERS: dict[str, Callable[[Node], Fn]] = {
    "field": _field,
    "subexpression": _sequence,
    "index_expression": _sequence,
    "pipe": _sequence,
    "comparator": _comparator,
    "and_expression": _and,
    "or_expression": _or,
    "not_expression": _not,
    "literal": _literal,
    "current": _current,
    "identity": _current,
    "function_expression": _function,
    "multi_select_dict": _multi_select_dict,
    "multi_select_list": _multi_select_list,
    "key_val_pair": _key_val_pair,
    "index": _index,
    "projection": _projection,
    "value_projection": _value_projection,
    "filter_projection": _filter_projection,
    "flatten": _flatten,
}
