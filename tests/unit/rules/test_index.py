"""The match index (rules.index): it finds the rules a linear scan would try, and
skips only rules whose outcome would be "not matched, no error"."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulebot.engine.evaluate import envelope_data, evaluate
from rulebot.engine.state import Buckets, LiveState, PresenceTable
from rulebot.model import Envelope, Stanza
from rulebot.rules.keytests import Dim
from rulebot.rules.loader import parse_rules
from rulebot.rules.ruleset import RuleSet

BOT = "bot@x"


def env(event: dict[str, Any], sender: str = "alice@x", kind: str = "message") -> Envelope:
    return Envelope(event, sender, sender + "/r", Stanza(kind, "normal", "m1"), BOT)  # type: ignore[arg-type]


def ruleset(*rules: tuple[str, str | None], lists: dict[str, list[str]] | None = None,
            extra: str = "") -> RuleSet:
    lines = ["version: 1", f"lists: {json.dumps(lists or {'l': ['Alice@x']})}", "rules:"]
    for name, match in rules:
        lines.append(f"  - name: {name}")
        if match is not None:
            lines.append(f"    match: {json.dumps(match)}")
        lines.append("    continue: true")
        lines.append("    actions: [{reply: {payload: \"{r: '" + name + "'}\"}}]")
    return parse_rules("\n".join(lines) + "\n" + extra)


#: Rules that make splitting on event.room worth it in small examples.
PADDING = tuple((f"pad{i}", f"event.room == 'pad{i}'") for i in range(8))


def candidates(rs: RuleSet, event: dict[str, Any], sender: str = "zed@x") -> list[str]:
    data = envelope_data(rs, env(event, sender))
    return [rs.rules[i].name for i, _ in rs.index.candidates(data)]


def test_rules_told_apart_by_a_field_are_tried_only_for_their_value() -> None:
    rs = ruleset(*((f"room{i}", f"event.type == 'chat' && event.room == 'room-{i}'")
                   for i in range(50)))
    assert rs.index.dims()[0] == Dim(("event", "room"), "eq")
    assert candidates(rs, {"type": "chat", "room": "room-7"}) == ["room7"]
    assert candidates(rs, {"type": "chat", "room": "room-x"}) == []
    assert candidates(rs, {"type": "chat", "room": ["room-7"]}) == []


def test_types_times_tenants_split_twice() -> None:
    rs = ruleset(*((f"{t}-{n}", f"event.type == '{t}' && event.tenant == 'ten{n}'")
                   for t in ("order", "refund", "chat") for n in range(20)))
    assert set(rs.index.dims()) == {Dim(("event", "tenant"), "eq"), Dim(("event", "type"), "eq")}
    assert candidates(rs, {"type": "refund", "tenant": "ten3"}) == ["refund-3"]


def test_unindexed_rules_keep_their_place_in_rule_order() -> None:
    rooms = [(r, f"event.room == '{r}'") for r in "abcdefgh"]
    rs = ruleset(("first", "event.n > `1`"), *rooms[:4], ("middle", None), *rooms[4:],
                 ("last", "event.flag"))
    assert candidates(rs, {"room": "b", "n": 2}) == ["first", "b", "middle", "last"]
    assert candidates(rs, {"room": "g", "n": 2}) == ["first", "middle", "g", "last"]
    decision = evaluate(rs, env({"room": "g", "n": 2, "flag": True}))
    assert decision.matched == ("first", "middle", "g", "last")


def test_each_test_keeps_its_own_equality() -> None:
    rs = ruleset(("one", "event.v == `1`"), ("is-true", "event.v == `true`"),
                 ("contains-one", "contains(`[1, \"x\"]`, event.v)"),
                 ("is-null", "event.v == `null`"),
                 *((f"v{i}", f"event.v == 'v{i}'") for i in range(8)))
    # JMESPath's == tells 1 from true; Python's `in` (contains) does not.
    assert candidates(rs, {"v": 1}) == ["one", "contains-one"]
    assert candidates(rs, {"v": 1.0}) == ["one", "contains-one"]
    assert candidates(rs, {"v": True}) == ["is-true", "contains-one"]
    assert candidates(rs, {}) == ["contains-one", "is-null"]  # one rule of its kind: tried
    for event in ({"v": 1}, {"v": 1.0}, {"v": True}, {}, {"v": "x"}):
        assert evaluate(rs, env(event)) == evaluate(rs.linear(), env(event))


def test_in_list_keys_are_case_insensitive_strings() -> None:
    lists = {f"team{i}": [f"User{i}@x", "Boss@x"] for i in range(6)}
    rs = ruleset(*((f"team{i}", f"in_list('team{i}', sender)") for i in range(6)), lists=lists)
    assert rs.index.dims() == [Dim(("sender",), "fold")]
    assert candidates(rs, {}, sender="USER3@X") == ["team3"]
    assert candidates(rs, {}, sender="boss@x") == [f"team{i}" for i in range(6)]


def test_a_test_after_a_part_that_can_raise_is_not_used() -> None:
    # abs() raises on a string, and so does `>` between a string and a number
    # (jmespath compares with Python's `>`): skipping these rules for other rooms
    # would hide their errors.
    rs = ruleset(("call", "abs(event.n) > `1` && event.room == 'a'"),
                 ("ordering", "event.n > `1` && event.room == 'a'"),
                 ("safe", "event.n == `1` && event.room == 'a'"), *PADDING)
    assert candidates(rs, {"room": "b", "n": "x"}) == ["call", "ordering"]
    decision = evaluate(rs, env({"room": "b", "n": "x"}))
    assert [e.rule for e in decision.errors] == ["call", "ordering"]
    assert decision == evaluate(rs.linear(), env({"room": "b", "n": "x"}))


def test_or_of_one_path_and_list_tests_are_keys() -> None:
    rs = ruleset(("either", "event.room == 'a' || event.room == 'b'"),
                 ("staff", "contains(lists.staff, event.by) && event.type == 'x'"),
                 ("mixed", "event.room == 'a' || event.type == 'b'"),
                 lists={"staff": ["Ann", "bob"], "l": []})
    tests = {rs.rules[i].name: {(str(t.dim), tuple(sorted(t.keys))) for t in found}
             for i, found in rs.index.tests.items()}
    assert tests == {
        "either": {("event.room", ("a", "b"))},
        "staff": {("event.by (in)", ("Ann", "bob")), ("event.type", ("x",))},
        "mixed": set(),  # two paths: no one key says it
    }


def test_disabled_rules_are_never_candidates() -> None:
    rs = parse_rules("""
version: 1
rules:
  - {name: disabled, enabled: false, match: "event.room == 'a'", actions: [drop: {}]}
  - {name: enabled, match: "event.room == 'a'", actions: [drop: {}]}
  - {name: b, match: "event.room == 'b'", actions: [drop: {}]}
  - {name: c, match: "event.room == 'c'", actions: [drop: {}]}
""")
    assert candidates(rs, {"room": "a"}) == ["enabled"]


def test_contradictory_tests_leave_the_rule_nowhere() -> None:
    rs = ruleset(("never", "event.room == 'a' && event.room == 'b'"), ("a", "event.room == 'a'"))
    assert candidates(rs, {"room": "a"}) == ["a"]


# ------------------------------------------------------------------ property

ROOMS = ["r0", "r1", "r2"]
TYPES = ["chat", "order"]
SENDERS = ["alice@x", "ALICE@x", "bob@x", "carol@y"]

#: Parts of a match: key tests on several paths (drawn three times as often),
#: and parts the index cannot use (orderings, negations, truthiness, calls that
#: raise on some values).
key_parts = st.sampled_from([
    *(f"event.type == '{t}'" for t in TYPES),
    *(f"event.room == '{r}'" for r in ROOMS),
    "'r1' == event.room",
    "event.room == 'r0' || event.room == 'r2'",
    "event.n == `1`", "event.n == `true`", "event.n == `null`", "event.n == `0`",
    "event.meta.tenant == 'a'", "stanza.kind == 'presence'",
    "sender == 'bob@x'", "in_list('friends', sender)", "in_list('rooms', event.room)",
    "contains(`[1, \"r1\", true]`, event.n)", "contains(lists.rooms, event.room)",
])
other_parts = st.sampled_from([
    "event.n > `0`", "!event.flag", "event.flag", "!in_list('friends', sender)",
    "abs(event.n) > `0`",  # raises for a string, null, ...
    "starts_with(event.room, 'r')",  # raises unless a string
    "regex_match('^r[01]$', event.room)",  # raises unless a string
    "!over_limit('burst', sender)",  # stateful: takes a token each time it is evaluated
])
parts = st.one_of(key_parts, key_parts, key_parts, other_parts)
_joined = st.lists(parts, min_size=1, max_size=3).map(" && ".join)
matches = st.one_of(st.none(), _joined, _joined, _joined, _joined)
actions = st.sampled_from([
    "reply: {payload: \"{n: event.n}\"}",
    "forward: {to: event.to}",  # fails unless a JID: a rule error
    "drop: {}",
    "error: {code: refused}",
])
rules_strategy = st.lists(
    st.tuples(matches, actions, st.booleans(), st.sampled_from([True, True, True, False])),
    min_size=1, max_size=24).flatmap(
    # Mostly larger sets (small ones are rarely worth splitting), some tiny.
    lambda few: st.lists(st.tuples(matches, actions, st.booleans(), st.just(True)),
                         min_size=8, max_size=24).map(lambda many: few + many) | st.just(few))
scalars = st.sampled_from([None, True, False, 0, 1, 1.0, 2, "r0", "r1", "R1", "x", "a", [],
                           {}, ["r1"], "alice@x"])
events = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from([*TYPES, "other", 1]),
    "room": st.sampled_from([*ROOMS, "R0", 5, None, ["r0"]]),
    "n": scalars, "flag": scalars, "to": st.sampled_from(["bob@x", "not a jid", 3]),
    "meta": st.sampled_from([{"tenant": "a"}, {"tenant": "b"}, "a", None]),
})


def _text(rules: list[tuple[str | None, str, bool, bool]]) -> str:
    lines = ["version: 1",
             "lists: {friends: [Alice@x, bob@x], rooms: [r0, R1]}",
             "rate_limits: {burst: {rate: 1, per: hour, burst: 2}}", "rules:"]
    for i, (match, action, cont, enabled) in enumerate(rules):
        lines.append(f"  - name: r{i}")
        if match is not None:
            lines.append(f"    match: {json.dumps(match)}")
        lines.append(f"    continue: {json.dumps(cont)}")
        lines.append(f"    enabled: {json.dumps(enabled)}")
        lines.append(f"    actions: [{{{action}}}]")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rules=rules_strategy, stream=st.lists(st.tuples(events, st.sampled_from(SENDERS),
                                                      st.sampled_from(["message", "presence"])),
                                            min_size=1, max_size=12))
def test_index_decides_exactly_as_a_linear_scan(
        rules: list[tuple[str | None, str, bool, bool]],
        stream: list[tuple[dict[str, Any], str, str]]) -> None:
    rs = parse_rules(_text(rules))
    scan = rs.linear()
    # Each side its own token buckets (a frozen clock): the index must evaluate
    # a rate limit exactly when the scan does, or the buckets drift apart.
    indexed_state, scan_state = (LiveState(None, PresenceTable(), Buckets(lambda: 0.0))
                                 for _ in range(2))
    for event, sender, kind in stream:
        e = env(event, sender, kind)
        assert evaluate(rs, e, state=indexed_state) == evaluate(scan, e, state=scan_state), (
            event, sender, kind)


def test_the_property_exercises_the_index() -> None:
    # Guards the property above from being vacuous: generated rule sets do get
    # split on several dimensions, and skip rules.
    rules = [(f"event.room == '{r}' && event.type == '{t}'", "drop: {}", True, True)
             for r in ROOMS for t in TYPES]
    rules += [("in_list('friends', sender)", "drop: {}", False, True),
              ("event.n > `0`", "drop: {}", False, True)]
    rs = parse_rules(_text(rules))
    assert len(rs.index.dims()) == 2
    assert len(rs.index.candidates(envelope_data(rs, env({"room": "r1", "type": "chat"})))) == 3
