"""rulebot.rules.jpcompile against jmespath's TreeInterpreter (Hypothesis).

The compiled closures must compute exactly what the interpreter computes: the
same value (with true distinct from 1 and false from 0, ints from floats) or
the same exception (type and message), for any expression and document.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jmespath import exceptions as jp_exceptions
from jmespath import functions as jp_functions
from jmespath import visitor as jp_visitor

from rulebot.engine.evaluate import envelope_data, runtime_for
from rulebot.model import Envelope, Stanza
from rulebot.rules import jpcompile
from rulebot.rules.expr import Expr
from rulebot.rules.functions import RuleFunctions
from rulebot.rules.jpcompile import Runtime, compile_ast, is_false
from rulebot.rules.loader import load_rules
from rulebot.rules.ruleset import LiteralParam, RuleSet

ROOT = Path(__file__).resolve().parents[3]
LISTS = {"members": frozenset({"a@x", "b@x"}), "empty": frozenset()}

# ---------------------------------------------------------------- helpers


def strict_equal(one: Any, two: Any) -> bool:
    """Equality that also tells true from 1, false from 0 and 1 from 1.0, recursively."""
    if type(one) is not type(two):
        return False
    if isinstance(one, list):
        return len(one) == len(two) and all(
            strict_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, dict):
        return one.keys() == two.keys() and all(strict_equal(v, two[k]) for k, v in one.items())
    return bool(one == two)


def test_strict_equal_tells_booleans_from_numbers() -> None:
    assert strict_equal({"a": [1, True, None]}, {"a": [1, True, None]})
    assert not strict_equal(True, 1)
    assert not strict_equal(False, 0)
    assert not strict_equal(1, 1.0)
    assert not strict_equal([0], [False])
    assert not strict_equal({"a": 1}, {"a": True})
    assert not strict_equal({"a": 1}, {"b": 1})
    assert not strict_equal([1, 2], [1])


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", fn(*args)
    except Exception as exc:  # every exception is part of the semantics
        return "raised", (type(exc), str(exc))


def assert_same(got: tuple[str, Any], want: tuple[str, Any], context: str) -> None:
    assert got[0] == want[0], f"{context}: compiled {got!r}, interpreter {want!r}"
    if got[0] == "raised":
        assert got[1] == want[1], f"{context}: compiled {got!r}, interpreter {want!r}"
    else:
        assert strict_equal(got[1], want[1]), f"{context}: compiled {got!r}, interpreter {want!r}"


def parse(text: str) -> dict[str, Any]:
    """The AST of `text`, as compile_ast takes it."""
    return jmespath.parser.Parser().parse(text).parsed  # type: ignore[return-value]


def interpret(ast: Any, value: Any, functions: Any) -> Any:
    interpreter = jp_visitor.TreeInterpreter(jp_visitor.Options(custom_functions=functions))
    return interpreter.visit(ast, value)


def check(text: str, document: Any, lists: Any = LISTS) -> tuple[str, Any]:
    """Compare compiled and interpreted evaluation of `text`; returns the outcome."""
    ast = parse(text)
    fn = compile_ast(ast)
    got = outcome(fn, document, Runtime(RuleFunctions(lists)))
    want = outcome(interpret, ast, document, RuleFunctions(lists))
    assert_same(got, want, f"{text!r} on {document!r}")
    return got


# ---------------------------------------------------------------- strategies

FIELDS = ["a", "b", "c", '"quoted key"']
LITERALS = [
    "`1`", "`0`", "`-1`", "`2.5`", "`0.0`", "`true`", "`false`", "`null`", "`[1,2]`",
    '`{"a":1}`', '`"a@x"`', "`[]`", "`{}`", '`""`', "'x'", "''", "'a@x'", "'members'", "'^a'",
    "'('",
]
FUNCTIONS = [
    # jmespath built-ins
    "length", "contains", "starts_with", "ends_with", "sort", "keys", "values", "to_string",
    "to_number", "to_array", "not_null", "type", "join", "reverse", "abs", "sum", "avg",
    "max", "min", "floor", "ceil", "merge",
    # rulebot's
    "in_list", "jid_bare", "jid_local", "jid_domain", "jid_resource", "regex_match", "lower",
    "upper", "related", "mutual", "related_to", "related_from", "relation", "online",
    "over_limit",
    # not a function at all
    "no_such_function",
]
EXPREF_FUNCTIONS = ["sort_by", "max_by", "min_by"]
COMPARATORS = ["==", "!=", "<", "<=", ">", ">="]
BOOLS_AND_NUMBERS = ["`true`", "`false`", "`0`", "`1`", "`0.0`", "`1.0`", "`2`"]
INDEXES = ["[0]", "[1]", "[-1]", "[1:2]", "[::-1]", "[:1]", "[-2:]", "[::2]"]

fields = st.sampled_from(FIELDS)
literals = st.sampled_from(LITERALS)
# Fields three times as likely as literals or @: most of a rule is paths into the event.
atoms = st.one_of(fields, fields, fields, literals, st.just("@"))


def _compound(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    comparator = st.sampled_from(COMPARATORS)
    logic = st.sampled_from(["&&", "||"])
    pair = st.tuples(inner, inner)
    args = st.lists(inner, max_size=3).map(", ".join)
    return st.one_of(
        # comparisons and logic, the bulk of every match expression
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, comparator, inner),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, comparator, literals),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, logic, inner),
        inner.map(lambda a: f"!{a}"),
        atoms.map(lambda a: f"!{a}"),
        inner.map(lambda a: f"({a})"),
        # paths
        st.builds(lambda a, f: f"{a}.{f}", inner, fields),
        st.builds(lambda a, f, g: f"{a}.{f}.{g}", fields, fields, fields),
        st.builds(lambda a, f: f"{a}[*].{f}", inner, fields),
        inner.map(lambda a: f"{a}[*]"),
        inner.map(lambda a: f"{a}.*"),
        st.builds(lambda a, f: f"{a}.*.{f}", inner, fields),
        st.builds(lambda a, c: f"{a}[?{c}]", inner, inner),
        st.builds(lambda a, c, f: f"{a}[?{c}].{f}", fields, inner, fields),
        st.builds(lambda a, f, op, v: f"{a}[?{f} {op} {v}]", fields, fields, comparator,
                  literals),
        st.builds(lambda a, f: f"{a}[?!{f}]", fields, fields),
        inner.map(lambda a: f"{a}[]"),
        st.builds(lambda a, f: f"{a}[].{f}", inner, fields),
        st.builds(lambda a, i: f"{a}{i}", inner, st.sampled_from(INDEXES)),
        st.builds(lambda a, b: f"{a} | {b}", inner, inner),
        # multi-select
        pair.map(lambda p: f"[{p[0]}, {p[1]}]"),
        inner.map(lambda a: f"[{a}]"),
        pair.map(lambda p: f"{{x: {p[0]}, y: {p[1]}}}"),
        st.builds(lambda a, m: f"{a}.[{m}]", inner, inner),
        st.builds(lambda a, m: f"{a}.{{k: {m}}}", inner, inner),
        # function calls, any arity, and expression references
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from(FUNCTIONS), args),
        st.builds(lambda f, a, b: f"{f}({a}, &{b})", st.sampled_from(EXPREF_FUNCTIONS),
                  inner, inner),
        st.builds(lambda a, b: f"map(&{b}, {a})", inner, inner),
        # calls with the right arity and likely types, so they do not all just raise
        st.builds(lambda a: f"in_list('members', {a})", inner),
        st.builds(lambda a: f"regex_match('^a', {a})", inner),
        st.builds(lambda a, b: f"contains({a}, {b})", inner, inner),
        st.builds(lambda a: f"length({a})", inner),
        st.builds(lambda a: f"not_null({a}, 'x')", inner),
        st.builds(lambda a: f"join(',', {a})", inner),
    )


# Always at least one operator at the top: a bare atom tests little.
expressions = _compound(st.recursive(atoms, _compound, max_leaves=6))


# Only comparisons and logic over fields and literals: where true/1 and false/0
# differ (==, !, filters) and where JMESPath's falsiness is not Python's.
def _logic(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(COMPARATORS),
                  inner),
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(["&&", "||"]),
                  inner),
        st.builds(lambda a, op, b: f"{a} {op} {b}", st.one_of(fields, literals),
                  st.sampled_from(["&&", "||"]), st.one_of(fields, literals)),
        # true/false against 0/1: equal in Python, not in JMESPath
        st.builds(lambda a, op, b: f"{a} {op} {b}", fields | st.sampled_from(["b.a", "b.b"]),
                  st.sampled_from(["==", "!="]), st.sampled_from(BOOLS_AND_NUMBERS)),
        st.builds(lambda f, op, b: f"a[?{f} {op} {b}]", fields, st.sampled_from(["==", "!="]),
                  st.sampled_from(BOOLS_AND_NUMBERS)),
        inner.map(lambda a: f"!{a}"),
        inner.map(lambda a: f"!({a})"),
        inner.map(lambda c: f"a[?{c}]"),
        fields.map(lambda f: f"a[?{f}]"),
        st.builds(lambda c, f: f"a[?{c}].{f}", inner, fields),
        inner.map(lambda c: f"b.*[?{c}]"),
    )


logic_expressions = _logic(st.recursive(st.one_of(fields, literals), _logic, max_leaves=4))


# Paths, projections, filters, indexes and slices over fields: what selects data.
def _path(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, f: f"{a}.{f}", inner, fields),
        st.builds(lambda a, i: f"{a}{i}", inner, st.sampled_from(INDEXES)),
        st.builds(lambda a, i: f"{a}{i}", fields, st.sampled_from(INDEXES)),
        st.builds(lambda a, f: f"{a}[*].{f}", inner, fields),
        inner.map(lambda a: f"{a}[*]"),
        inner.map(lambda a: f"{a}.*"),
        inner.map(lambda a: f"{a}[]"),
        st.builds(lambda a, b: f"{a}[?{b}]", inner, inner),
        st.builds(lambda a, f, op, v: f"{a}[?{f} {op} {v}]", inner, fields,
                  st.sampled_from(COMPARATORS), literals),
        st.builds(lambda a, b: f"{a} | {b}", inner, inner),
        st.builds(lambda a, b: f"[{a}, {b}]", inner, inner),
        st.builds(lambda a, b: f"{{x: {a}, y: {b}}}", inner, inner),
        st.builds(lambda a, b: f"{a}.[{b}]", inner, inner),
        st.builds(lambda a, b: f"{a}.{{k: {b}}}", inner, inner),
    )


path_expressions = _path(st.recursive(st.one_of(fields, st.just("@")), _path, max_leaves=5))
# Function calls with arguments that are paths or literals, any arity.
_arguments = st.one_of(fields, path_expressions, literals)
# Calls whose argument types are right whatever the argument is (coerced first).
TYPED_CALLS = [
    "length(to_array({0}))", "length(to_string({0}))", "type({0})", "to_string({0})",
    "to_number({0})", "to_array({0})", "not_null({0}, {1})", "contains(to_array({0}), {1})",
    "starts_with(to_string({0}), 'a')", "ends_with(to_string({0}), to_string({1}))",
    "jid_bare(to_string({0}))", "jid_local(to_string({0}))", "jid_domain(to_string({0}))",
    "jid_resource(to_string({0}))", "lower(to_string({0}))", "upper(to_string({0}))",
    "in_list('members', {0})", "in_list('empty', {1})", "regex_match('^a', to_string({0}))",
    "regex_match('@x$', to_string({0}))", "related(to_string({0}), 'a@x', 'friend')",
    "related_to(to_string({0}), 'friend')", "online(to_string({0}))",
    "join('|', to_array({0})[*].to_string(@))", "reverse(to_array({0}))",
    "reverse(to_string({0}))", "sort(to_array({0})[*].to_string(@))",
    "sort_by(to_array({0}), &to_string(@))", "max_by(to_array({0}), &to_string(@))",
    "min_by(to_array({0}), &type(@))", "map(&to_string(@), to_array({0}))",
    "keys(merge(`{{}}`, {{k: {0}}}))", "values({{k: {0}, l: {1}}})",
    "length(to_array({0})) == length(to_array({1}))", "abs(length(to_array({0})))",
    "sum(to_array({0})[?type(@) == 'number'])", "max(to_array({0})[?type(@) == 'number'])",
]
call_expressions = st.one_of(
    st.builds(lambda t, a, b: t.format(a, b), st.sampled_from(TYPED_CALLS), _arguments,
              _arguments),
    st.builds(lambda t, a, b: t.format(a, b), st.sampled_from(TYPED_CALLS), _arguments,
              _arguments),
    st.builds(lambda f, a: f"{f}({a})", st.sampled_from(FUNCTIONS),
              st.lists(_arguments, max_size=3).map(", ".join)),
    st.builds(lambda f, a: f"{f}({a})", st.sampled_from(FUNCTIONS),
              st.lists(fields, min_size=1, max_size=2).map(", ".join)),
    st.builds(lambda f, a, b: f"{f}({a}, &{b})", st.sampled_from(EXPREF_FUNCTIONS),
              _arguments, _arguments),
    st.builds(lambda a, b: f"map(&{b}, {a})", _arguments, _arguments),
    st.builds(lambda n, a: f"in_list({n}, {a})",
              st.sampled_from(["'members'", "'empty'", "'nope'", "c"]), _arguments),
    st.builds(lambda p, a: f"regex_match({p}, {a})",
              st.sampled_from(["'^a'", "'x$'", "'('", "'@'", "c"]), _arguments),
).flatmap(lambda call: st.sampled_from([call, f"{call}[0]", f"{call}.a", f"!{call}",
                                        f"{call} == `1`", f"a[?{call}]"]))

TRICKY = [None, True, False, 0, 1, -1, 2, 0.0, 1.0, -0.0, 2.5, "", "a", "a@x", "b@x", "A@X",
          "x", "(", "a@x/r", [], {}, [0], [False], [None, 1], {"a": 0}, {"a": False}]
_scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.sampled_from([None, True, False, 0, 1, 0.0]),
    st.integers(-5, 5),
    st.floats(-10, 10, allow_nan=False, allow_infinity=False),
    st.text(alphabet="ab@x/(", max_size=4),
)
_keys = st.sampled_from(["a", "b", "c", "quoted key"])
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
# Objects whose fields are what the expressions look for: scalars, lists of
# objects (for projections and filters), objects (for .*), anything.
_records = st.dictionaries(_keys, _scalars, max_size=4)
_shaped = st.dictionaries(
    _keys,
    st.one_of(_scalars, st.lists(_records, max_size=4), _records,
              st.lists(st.lists(_scalars, max_size=3) | _scalars, max_size=4), _json),
    max_size=4,
)
documents = st.one_of(_shaped, _shaped, _json)
# What logic_expressions look at: scalars at the top, a list of objects at a, an object at b.
_flags = st.sampled_from([True, False, 0, 1, 0.0, 1.0, -0.0, 2, None]) | _scalars
_flag_records = st.dictionaries(_keys, _flags, max_size=4)
logic_documents = st.fixed_dictionaries(
    {}, optional={"a": st.lists(_flag_records, max_size=4), "b": _flag_records, "c": _flags,
                  "quoted key": _flags})


def parses(text: str) -> bool:
    try:
        jmespath.parser.Parser().parse(text)
    except jp_exceptions.JMESPathError:
        return False
    return True


# ---------------------------------------------------------------- properties

SETTINGS = settings(max_examples=2000, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


@SETTINGS
@given(text=expressions, document=documents)
def test_compiled_expression_equals_interpreter(text: str, document: Any) -> None:
    if not parses(text):
        return  # the grammar is loose on purpose; a text jmespath rejects says nothing
    check(text, document)


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=logic_expressions, document=logic_documents | documents)
def test_comparisons_and_logic_equal_interpreter(text: str, document: Any) -> None:
    if not parses(text):
        return
    check(text, document)


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=path_expressions, document=logic_documents | documents)
def test_paths_and_projections_equal_interpreter(text: str, document: Any) -> None:
    if not parses(text):
        return
    check(text, document)


@settings(max_examples=800, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=call_expressions, document=logic_documents | documents)
def test_function_calls_equal_interpreter(text: str, document: Any) -> None:
    if not parses(text):
        return
    check(text, document)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=expressions, documents=st.lists(documents, min_size=1, max_size=4))
def test_one_closure_gives_the_interpreters_results_on_many_documents(
    text: str, documents: list[Any]
) -> None:
    # One compiled closure and one Runtime reused across documents, as the engine does.
    if not parses(text):
        return
    ast = parse(text)
    fn = compile_ast(ast)
    runtime = Runtime(RuleFunctions(LISTS))
    for document in documents:
        got = outcome(fn, document, runtime)
        want = outcome(interpret, ast, document, RuleFunctions(LISTS))
        assert_same(got, want, f"{text!r} on {document!r}")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=documents)
def test_is_false_is_the_interpreters_falsiness(value: Any) -> None:
    interpreter = jp_visitor.TreeInterpreter()
    assert is_false(value) is getattr(interpreter, "_is_false")(value)  # noqa: B009


@pytest.mark.parametrize(
    "grammar", [expressions, logic_expressions, path_expressions, call_expressions],
    ids=["all", "logic", "paths", "calls"])
def test_the_grammars_produce_parsable_expressions_that_do_not_all_raise(
    grammar: st.SearchStrategy[str]
) -> None:
    # Guards the properties above from passing vacuously: on texts jmespath
    # rejects, or on evaluations that all raise (or all give null).
    seen: list[str] = []

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(text=grammar, document=logic_documents | documents)
    def collect(text: str, document: Any) -> None:
        if not parses(text):
            seen.append("unparsable")
            return
        kind, value = check(text, document)
        seen.append("null" if kind == "value" and value is None else kind)

    collect()
    assert len(seen) >= 100
    assert seen.count("unparsable") <= 0.2 * len(seen), seen
    assert seen.count("value") + seen.count("null") >= 0.3 * len(seen), seen
    assert seen.count("value") >= 0.15 * len(seen), seen


# ---------------------------------------------------------------- hand-picked cases

DOC = {
    "a": [{"b": 1, "c": "a@x"}, {"b": True, "c": "b@x"}, {"b": 0}, {"b": False, "c": None},
          {"b": 2.5, "c": "z@y"}, "s", 3],
    "b": {"a": 0, "b": 1, "c": True, "quoted key": False},
    "c": "a@x/res",
    "quoted key": [[1, 2], [3, [4]], 5, None],
    "n": 0,
    "t": True,
    "f": False,
    "z": None,
}
CASES = [
    # booleans vs 0/1, both sides, and through !, && and ||
    "a[*].b == `1`", "a[?b == `1`].c", "a[?b == `true`].c", "a[?b == `0`]", "a[?b != `false`]",
    "`1` == a[1].b", "`0` == a[3].b", "b.a == b.quoted_key", 'b.a == b."quoted key"',
    "!n", "!t", "!f", "!z", "!'x'", "!''", "!`[]`", "!`0.0`", "n && 'yes'", "n || 'no'",
    "f || n", "z || f", "'' && 'x'", "`[]` || `{}`", "b.c == `1`", "b.b == `true`",
    "a[0].b == 'x'", "c == 'a@x/res'", "n == ''", "t == 'true'", "n != 'x'",
    # ordering: numbers and strings only, mixed raises TypeError
    "a[*].b > `0`", "a[?b >= `1`].c", "c < 'b'", "n < t", "n < 'x'", "'x' < `1`",
    "a < b", "`2.5` <= a[4].b",
    # projections, flatten, indexes, slices (fallback), pipes, multi-select
    "a[*].c", "a[].b", "\"quoted key\"[]", "\"quoted key\"[][]", "b.*", "b.* | [0]",
    "a[-1]", "a[10]", "a[1:3]", "a[::-1].b", "c[0]", "c[1:]", "b[0]", "a[*] | [0].b",
    "[a[0].b, b.c, missing]", "{x: n, y: t, z: missing}", "z.{x: a}", "z.[a]",
    "a[*].[b, c]", "a[?b]", "a[?b].c", "a[?!b].c", "b.*[?@]", "a[?c].{who: c}",
    "b.*.to_string(@)", "@", "@.c", "a[*] | @",
    # functions: built-ins, rulebot's, bad arity and types
    "length(a)", "length(n)", "length()", "contains(a[*].c, 'a@x')", "starts_with(c, 'a')",
    "starts_with(n, 'a')", "sort(a[*].c)", "sort(a)", "sort_by(a[?c], &c)",
    "sort_by(a[?c], &b)", "max_by(a[:3], &b)", "min_by(a[?c].{v: c}, &v)",
    "sort_by(a, &b)", "map(&c, a[:5])", "keys(b)", "values(b)", "keys(a)", "to_string(b)",
    "to_number('1.5')", "to_number('x')", "to_number(t)", "not_null(z, missing, n)",
    "type(n)", "type(t)", "join(', ', a[*].c)", "join(', ', a[*].b)", "reverse(c)",
    "abs(`-3`)", "sum(a[:2].b)", "sum(`[1, 2.5]`)", "avg(`[]`)", "max(`[1, 3]`)",
    "merge(b, `{\"a\": 9}`)", "in_list('members', 'A@X')", "in_list('members', a[0].c)",
    "in_list('nope', c)", "in_list('members', n)", "in_list(n, c)", "jid_bare(c)",
    "jid_local(c)", "jid_domain(c)", "jid_resource(c)", "jid_bare(n)", "jid_bare(c, c)",
    "regex_match('^a@', c)", "regex_match('(', c)", "regex_match(c, c)", "lower('AbC')",
    "upper(c)", "related(c, c, 'friend')", "mutual(c, c, 'friend')", "related_to(c, 'f')",
    "related_from(c, 'f')", "relation(c, c, 'f')", "online(c)", "over_limit('x', c)",
    "no_such_function(c)", "to_array(n)", "floor(`2.5`)", "ceil(n)",
]


@pytest.mark.parametrize("text", CASES)
def test_hand_picked_expressions(text: str) -> None:
    check(text, DOC)
    check(text, DOC["a"])
    check(text, None)


def test_hand_picked_cases_raise_and_return() -> None:
    # Guards the hand-picked cases from only ever raising (or never).
    kinds = {check(text, DOC)[0] for text in CASES}
    assert kinds == {"value", "raised"}


def test_same_exception_types_as_the_interpreter() -> None:
    kind, (exc_type, _message) = check("length(n)", DOC)
    assert kind == "raised"
    assert issubclass(exc_type, jp_exceptions.JMESPathTypeError)
    kind, (exc_type, _message) = check("length()", DOC)
    assert issubclass(exc_type, jp_exceptions.ArityError)
    kind, (exc_type, _message) = check("no_such_function(c)", DOC)
    assert issubclass(exc_type, jp_exceptions.UnknownFunctionError)
    kind, (exc_type, _message) = check("n < 'x'", DOC)
    assert exc_type is TypeError


# ---------------------------------------------------------------- the fallback path


@pytest.mark.parametrize(
    ("text", "falls_back"),
    [
        ("a[1:3]", True),
        ("a[::-1].b", True),
        ("sort_by(a[?c], &c)", True),
        ("map(&c, a[:5])", True),
        ("a[?b == `1`].c", False),
        ("{x: length(a), y: b.*, z: \"quoted key\"[]}", False),
        ("in_list('members', a[0].c) && !n || a[-1]", False),
    ],
)
def test_fallback_nodes_use_the_interpreter_and_nothing_else_does(
    text: str, falls_back: bool
) -> None:
    ast = parse(text)
    runtime = Runtime(RuleFunctions(LISTS))
    got = compile_ast(ast)(DOC, runtime)
    want = interpret(ast, DOC, RuleFunctions(LISTS))
    assert strict_equal(got, want)
    # The runtime creates its interpreter only when an untranslated node runs.
    assert (runtime._interpreter is not None) is falls_back


def test_slice_and_expref_results() -> None:
    # The fallback gives the interpreter's values, not just the same as itself.
    assert check("a[1:3]", {"a": [0, 1, 2, 3]}) == ("value", [1, 2])
    assert check("a[::-1]", {"a": [0, 1, 2]}) == ("value", [2, 1, 0])
    assert check("sort_by(a, &b)[*].b", {"a": [{"b": 2}, {"b": 1}]}) == ("value", [1, 2])
    assert check("max_by(a, &b).c", {"a": [{"b": 2, "c": "x"}, {"b": 1}]}) == ("value", "x")
    kind, _ = check("sort_by(a, &b)", {"a": [{"b": 2}, {"b": "x"}]})
    assert kind == "raised"


def test_unknown_node_types_fall_back() -> None:
    # A node type the compiler has never heard of goes to the interpreter, which
    # here raises its own error: the compiled closure must raise the same one.
    ast: dict[str, Any] = {"type": "no_such_node", "children": [], "value": None}
    got = outcome(compile_ast(ast), DOC, Runtime(RuleFunctions(LISTS)))
    want = outcome(interpret, ast, DOC, RuleFunctions(LISTS))
    assert got == want
    assert got[0] == "raised"


def test_compiling_evaluates_nothing() -> None:
    # compile_ast must not call functions at compile time (over_limit takes tokens).
    calls: list[str] = []

    class Spy(RuleFunctions):
        @jp_functions.signature({"types": ["string", "array", "object"]})
        def _func_length(self, arg: Any) -> int:
            calls.append("length")
            return len(arg)

        @jp_functions.signature({"types": []})
        def _func_type(self, arg: Any) -> str:
            calls.append("type")
            return str(super()._func_type(arg))

    fn = compile_ast(parse("length(a) && type(b)"))
    assert calls == []
    assert fn(DOC, Runtime(Spy(LISTS))) == "object"
    assert calls == ["length", "type"]


class Counting(RuleFunctions):
    """Counts jmespath's own call_function: the path taken for bad arguments."""

    slow_calls = 0

    def call_function(self, name: str, args: Any) -> Any:
        Counting.slow_calls += 1
        return super().call_function(name, args)


@pytest.mark.parametrize(("expression", "slow"), [
    ("length(a)", 0),                # checked from the prepared table, called directly
    ("length(`1`)", 1),              # a wrong type: jmespath's call raises its own error
    ("max(a.b)", 1),                 # array-number: typed arrays keep jmespath's check
    ("not_null(a, b)", 1),           # variadic
])
def test_function_calls_check_arguments_from_a_prepared_table(expression: str,
                                                               slow: int) -> None:
    Counting.slow_calls = 0
    fn = compile_ast(parse(expression))
    runtime = Runtime(Counting(LISTS))
    want = outcome(jmespath.search, expression, DOC,
                   jp_visitor.Options(custom_functions=RuleFunctions(LISTS)))
    assert_same(outcome(fn, DOC, runtime), want, expression)
    assert Counting.slow_calls == slow


# ---------------------------------------------------------------- the shipped rule sets

SHIPPED = {path: load_rules(ROOT / path) for path in ("rules", "rules/friends")}


def shipped_exprs(ruleset: RuleSet) -> Iterator[tuple[str, Expr]]:
    for rule in ruleset.rules:
        if rule.match is not None:
            yield f"{rule.name}.match", rule.match
        for i, action in enumerate(rule.actions):
            for name in ("to", "payload", "subject", "object", "attrs"):
                param = getattr(action, name)
                if param is not None and not isinstance(param, LiteralParam):
                    yield f"{rule.name}.actions[{i}].{name}", param


EVENTS: list[Any] = [
    {"type": "chat", "to": "bob@localhost", "text": "hi", "id": 1},
    {"type": "chat", "to": "stranger@elsewhere", "text": "hi", "id": "x"},
    {"type": "chat", "to": 5, "text": None},
    {"type": "chat"},
    {"type": "announce", "text": "news", "id": 2},
    {"type": "ping", "id": 3},
    {"type": "friend-request", "to": "bob@localhost"},
    {"type": "friend-request", "to": "alice@localhost"},
    {"type": "friend-accept", "to": "carol@localhost", "id": 4},
    {"type": "friend-decline", "to": ["bob@localhost"]},
    {"type": "unfriend", "to": "bob@localhost"},
    {"type": "block", "to": True},
    {"type": "unblock", "to": "bob@localhost"},
    {"type": True},
    {"type": 1},
    {"presence": "available", "show": "away", "status": "here"},
    {},
]
SENDERS = ["alice@localhost", "admin@localhost", "mallory@localhost", "x@elsewhere"]


#: Clocks: none, a Tuesday in Paris office hours, a Saturday night.
NOWS = [None, 1_796_115_600.0, 1_796_598_000.0]


def envelopes() -> Iterator[Envelope]:
    for event in EVENTS:
        for sender in SENDERS:
            for kind in ("message", "presence"):
                for now in NOWS:
                    yield Envelope(event, sender, sender + "/r", Stanza(kind, "chat", "id1"),
                                   "friend@localhost", now)


@pytest.mark.parametrize("path", sorted(SHIPPED))
def test_every_shipped_expression_evaluates_like_the_interpreter(path: str) -> None:
    ruleset = SHIPPED[path]
    exprs = list(shipped_exprs(ruleset))
    assert len(exprs) >= 10
    kinds: set[str] = set()
    for env in envelopes():
        data = envelope_data(ruleset, env)
        runtime = runtime_for(ruleset, None, env.now)
        for where, expr in exprs:
            reference = RuleFunctions(ruleset.list_sets, None, ruleset.rate_limits,
                                      ruleset.intervals, ruleset.counters)
            reference.now = env.now
            tree = expr.tree()  # macros expanded, parts shared with other rules
            want = outcome(interpret, tree, data, reference)
            got = outcome(expr.run, data, runtime)
            assert_same(got, want, f"{path}: {where} {expr.source!r} on {env!r}")
            # and the same as jmespath's own entry point
            via_search = outcome(jmespath.parser.ParsedResult(expr.source, tree).search, data,
                                 jmespath.Options(custom_functions=reference))
            assert_same(got, via_search, f"{path}: {where} {expr.source!r} on {env!r}")
            kinds.add(got[0])
            if got[0] == "value" and where.endswith(".match"):
                kinds.add(f"match={not is_false(got[1])}")
    # Both outcomes of a match, and at least one raising expression, were seen.
    assert {"value", "match=True", "match=False"} <= kinds
    if path == "rules/friends":
        assert "raised" in kinds  # related(event.to, ...) with a non-string `to`


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 0.5]),
                     st.sampled_from(["", "0", "a"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@given(_VALUES, _VALUES)
def test_comparison_rules_are_the_interpreters_own(x: Any, y: Any) -> None:
    # jpcompile writes out the interpreter's comparison helpers instead of
    # importing its private names; while jmespath still has them, they agree.
    private = [getattr(jp_visitor, n, None) for n in ("_equals", "_is_comparable",
                                                        "_is_actual_number")]
    if None in private:
        pytest.skip("jmespath no longer has its private comparison helpers")
    p_equals, p_comparable, p_number = private
    assert jpcompile.equals(x, y) == p_equals(x, y)
    assert jpcompile.is_comparable(x) == p_comparable(x)
    assert jpcompile.is_actual_number(x) == p_number(x)
