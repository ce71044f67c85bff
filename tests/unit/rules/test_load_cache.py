"""The loader's cache (rules.loader.LoadCache): a reload recompiles only what
changed, and a cached load gives exactly what a fresh one gives."""

from __future__ import annotations

from rulebot.engine.evaluate import evaluate
from rulebot.model import Envelope, Stanza
from rulebot.rules.cache import LoadCache
from rulebot.rules.loader import parse_rule_files

DEFS = """version: 1
lists: {staff: [ann@x, bob@x]}
macros: {chat: "event.type == 'chat'"}
rules: []
"""
RULES = """version: 1
rules:
""" + "".join(f"""  - name: room{i}
    match: "$chat && event.room == 'r{i}' && in_list('staff', sender)"
    actions: [{{reply: {{payload: "{{room: event.room}}"}}}}]
""" for i in range(20))


def files(defs: str = DEFS, rules: str = RULES) -> list[tuple[str, str]]:
    return [("00-defs.yaml", defs), ("10-rules.yaml", rules)]


def decide(result_files: list[tuple[str, str]], cache: LoadCache | None) -> list[object]:
    result = parse_rule_files(result_files, cache)
    assert result.ruleset is not None, result.errors
    env = Envelope({"type": "chat", "room": "r3"}, "ann@x", "ann@x/r",
                   Stanza("message", "normal", "m"), "bot@x")
    return [result.ruleset.version, result.issues, evaluate(result.ruleset, env)]


def test_an_unchanged_rule_set_compiles_nothing_again() -> None:
    cache = LoadCache()
    first = decide(files(), cache)
    misses = cache.misses
    assert misses > 0
    assert decide(files(), cache) == first
    assert cache.misses == misses  # every expression came from the cache


def test_an_edit_compiles_only_the_new_expressions() -> None:
    cache = LoadCache()
    decide(files(), cache)
    before = cache.misses
    edited = RULES.replace("event.room == 'r5'", "event.room == 'r55'")
    assert decide(files(rules=edited), cache) == decide(files(rules=edited), None)
    assert cache.misses == before + 1


def test_a_changed_macro_or_list_recompiles_what_depends_on_names() -> None:
    cache = LoadCache()
    decide(files(), cache)
    changed = DEFS.replace("event.type == 'chat'", "event.type == 'talk'")
    got = decide(files(defs=changed), cache)
    assert got == decide(files(defs=changed), None)
    assert got[2].matched == ()  # type: ignore[attr-defined]  # the new macro is in force
    # A list that disappears is an error again, though the rule texts did not change.
    gone = parse_rule_files(files(defs=DEFS.replace("staff", "crew")), cache)
    assert gone.ruleset is None
    assert any("unknown list 'staff'" in i.message for i in gone.errors)


def test_errors_are_reported_from_the_cache_too() -> None:
    cache = LoadCache()
    broken = RULES.replace("in_list('staff', sender)", "in_lst('staff', sender)", 1)
    first = parse_rule_files(files(rules=broken), cache)
    again = parse_rule_files(files(rules=broken), cache)
    assert first.issues == again.issues
    assert any("did you mean in_list()" in i.message for i in again.errors)


def test_rules_share_their_common_parts_within_a_load_and_across_reloads() -> None:
    cache = LoadCache()
    first = parse_rule_files(files(), cache).ruleset
    assert first is not None
    matches = [r.match for r in first.rules if r.match is not None]
    assert len(matches) == 20
    # `$chat` and the in_list part: one tree and one closure for all 20 rules;
    # the room test is each rule's own.
    for i in (0, 2):
        assert len({id(m.parts[i]) for m in matches}) == 1
        assert len({id(m.part_fns[i]) for m in matches}) == 1
    assert len({id(m.parts[1]) for m in matches}) == 20
    # An edited rule, compiled anew on reload, takes the shared parts it has.
    edited = RULES.replace("event.room == 'r5'", "event.room == 'r55'")
    second = parse_rule_files(files(rules=edited), cache).ruleset
    assert second is not None
    new = next(r.match for r in second.rules if r.name == "room5")
    assert new is not None
    assert new is not matches[5]
    assert new.part_fns[0] is matches[0].part_fns[0]
    assert new.part_fns[2] is matches[0].part_fns[2]


def test_an_expression_keeps_the_tree_jmespath_parses() -> None:
    import jmespath

    flat = ["event.a && event.b", "event.a && event.b || event.e && !event.c",
            "event.x == `1` && !event.c && contains(['x'], event.g) && sender"]
    nested = "(event.a && event.b) && (event.c && event.d)"
    for text in [*flat, nested]:
        result = parse_rule_files([("r.yaml", "version: 1\nrules:\n  - name: r\n"
                                   f"    match: {text!r}\n    actions: [drop: x]\n")])
        assert result.ruleset is not None, result.errors
        match = result.ruleset.rules[0].match
        assert match is not None
        parsed = jmespath.parser.Parser().parse(text).parsed
        if text in flat:
            assert match.tree() == parsed, text
        else:  # `&&` re-nested left to right: the same parts, the same values
            assert len(match.parts) == 4
            for data in ({}, {"event": {"a": 1, "b": 2, "c": 3, "d": 4}},
                         {"event": {"a": 1, "b": 0, "c": 3, "d": ""}}):
                assert jmespath.search(text, data) == \
                    jmespath.parser.ParsedResult(text, match.tree()).search(data)
