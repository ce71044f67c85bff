"""`rulebot test`: the runner's expectations, located errors, coverage, JUnit, the CLI."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulebot.cli.test import test as command  # not test_*: pytest would collect it
from rulebot.rules.loader import parse_rules
from rulebot.ruletest.cases import (
    CaseResult,
    FileResult,
    check_names,
    coverage,
    load_test_file,
    parse_test_file,
    run_case,
    run_file,
)
from rulebot.ruletest.checks import same
from rulebot.ruletest.report import junit_xml, run_paths

ROOT = Path(__file__).resolve().parents[3]

RULES_TEXT = textwrap.dedent("""\
    version: 1
    lists: {members: [alice@x, bob@x]}
    events:
      types:
        typed: {type: object, required: [type, n], properties: {n: {type: integer}}}
    rules:
      - name: audit
        match: "event.type == 'chat'"
        continue: true
        actions:
          - forward: {to: "'audit@x'", payload: "{from: sender, text: event.text}"}
      - name: chat
        match: "event.type == 'chat' && in_list('members', event.to)"
        actions:
          - forward:
              to: event.to
              payload: "{from: sender, text: event.text, meta: {n: `1`, deep: {a: `1`, b: `2`}}}"
      - name: refuse
        match: "event.type == 'chat'"
        actions:
          - error: {code: refused, message: nope}
      - name: boom
        match: "event.type == 'boom' && jid_domain(event.to) == 'x'"
        actions: [{drop: {}}]
      - name: befriend
        match: "event.type == 'befriend'"
        actions:
          - relate: {object: event.to, kind: friend, mutual: true, attrs: "{since: `1`}"}
      - name: unfriend
        match: "event.type == 'unfriend' && related(sender, event.to, 'friend')"
        actions:
          - unrelate: {object: event.to, kind: friend, mutual: true}
      - name: where
        match: "event.type == 'where' && online(event.to)"
        actions:
          - reply: {payload: "{online: `true`}"}
      - name: presence
        match: "stanza.kind == 'presence'"
        actions:
          - broadcast: {to: "related_to(sender, 'friend')"}
      - name: banned
        match: "event.type == 'ban'"
        actions: [{drop: banned}]
      - name: never
        match: "event.type == 'never'"
        actions: [{drop: {}}]
      - name: disabled
        enabled: false
        actions: [{drop: {}}]
""")
RULESET = parse_rules(RULES_TEXT, "r.yaml")
HEADER = "version: 1\nrules: r.yaml\n"


def run_one(case: str, extra: str = "") -> CaseResult:
    """Run the one case written in `case` (YAML of one list item) against RULESET."""
    text = HEADER + extra + "cases:\n" + textwrap.indent(textwrap.dedent(case), "  ")
    test, issues = parse_test_file(text, "t.test.yaml")
    assert test is not None, [i.format() for i in issues]
    assert check_names(test, RULESET) == []
    return run_case(RULESET, test.cases[0])


# (id, case, the checks that must fail, a line the diff or message must contain)
EXPECTATIONS = [
    # --- passing ----------------------------------------------------------------------
    ("matched", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {matched: [audit, chat]}
     """, [], None),
    ("not-matched", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {not_matched: [refuse, never]}
     """, [], None),
    ("actions-dont-care", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect:
         actions:
           - {type: forward, to: audit@x}
           - {type: forward, payload_contains: {meta: {deep: {a: 1}}}, rule: chat}
     """, [], None),
    ("actions-full", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect:
         actions:
           - {type: forward, to: [audit@x], payload: {from: alice@localhost, text: hi},
              rule: audit}
           - type: forward
             to: bob@x
             payload: {from: alice@localhost, text: hi, meta: {n: 1.0, deep: {a: 1, b: 2}}}
     """, [], None),
    ("error-rule", """
     - name: c
       event: {type: chat, to: carol@x, text: hi}
       expect:
         matched: [audit, refuse]
         error: {code: refused, message: nope}
         actions: [{type: forward}, {type: error, code: refused, to: alice@localhost/test}]
     """, [], None),
    ("error-schema", """
     - name: c
       event: {type: typed, n: x}
       expect: {matched: [], error: {code: invalid-event, path: /n}}
     """, [], None),
    ("error-wire", """
     - name: c
       raw: '{"a": 1, "a": 2}'
       expect: {error: {code: duplicate-key, path: /a}, matched: []}
     """, [], None),
    ("drop-reason", """
     - name: c
       event: {type: ban}
       expect: {drop: true, reason: banned, no_actions: true}
     """, [], None),
    ("default-drop", """
     - name: c
       event: {type: nothing}
       expect: {matched: [], reason: no rule matched, actions: [{type: drop, rule: null}]}
     """, [], None),
    ("relations-after", """
     - name: c
       event: {type: befriend, to: Bob@X}
       expect:
         relations_after:
           - {subject: alice@localhost, object: bob@x, kind: friend, attrs: {since: 1}}
           - {subject: BOB@x, object: alice@localhost, kind: friend}
         actions: [{type: relate, subject: alice@localhost, object: Bob@X, mutual: true}]
     """, [], None),
    ("relations-absent-after", """
     - name: c
       relations:
         - {subject: alice@localhost, object: bob@x, kind: friend}
         - {subject: bob@x, object: alice@localhost, kind: friend}
       event: {type: unfriend, to: bob@x}
       expect:
         matched: [unfriend]
         relations_absent_after:
           - {subject: alice@localhost, object: bob@x, kind: friend}
           - {subject: bob@x, object: alice@localhost, kind: friend}
     """, [], None),
    ("expected-runtime-error", """
     - name: c
       event: {type: boom}
       expect: {matched: [], errors: ["boom: ", jid_domain]}
     """, [], None),
    ("online-fixture", """
     - name: c
       online: [bob@x]
       event: {type: where, to: bob@x}
       expect: {matched: [where]}
     """, [], None),
    ("presence", """
     - name: c
       kind: presence
       relations: [{subject: alice@localhost, object: bob@x, kind: friend}]
       expect:
         actions: [{type: broadcast, to: bob@x,
                    payload: {type: presence, presence: available}}]
     """, [], None),
    # --- failing ----------------------------------------------------------------------
    ("matched-order", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {matched: [chat, audit]}
     """, ["matched"], '-  "chat"'),
    ("not-matched-hit", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {not_matched: [refuse, audit]}
     """, ["not_matched"], '+  "audit",'),
    ("actions-count", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {actions: [{type: forward}]}
     """, ["actions"], "expected 1 action(s), got 2"),
    ("actions-payload", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {actions: [{type: forward}, {type: forward, payload: {text: hi}}]}
     """, ["actions"], "action(s) [1] differ"),
    ("actions-bool-is-not-1", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {actions: [{type: forward}, {type: forward, payload_contains: {meta: {n: true}}}]}
     """, ["actions"], '-        "n": true'),
    ("actions-type", """
     - name: c
       event: {type: ban}
       expect: {actions: [{type: error}]}
     """, ["actions"], '-    "type": "error"'),
    ("error-code", """
     - name: c
       event: {type: chat, to: carol@x, text: hi}
       expect: {error: {code: forbidden}}
     """, ["error"], '+  "code": "refused"'),
    ("error-path", """
     - name: c
       event: {type: typed}
       expect: {error: {code: invalid-event, path: /n}}
     """, ["error"], '+  "path": ""'),
    ("error-none", """
     - name: c
       event: {type: ban}
       expect: {error: {code: x}}
     """, ["error"], "+null"),
    ("drop-missing", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {drop: true}
     """, ["drop"], "expected a drop"),
    ("reason", """
     - name: c
       event: {type: ban}
       expect: {reason: spam}
     """, ["reason"], '+    "reason": "banned"'),
    ("no-actions", """
     - name: c
       event: {type: chat, to: bob@x, text: hi}
       expect: {no_actions: true}
     """, ["no_actions"], "expected nothing to be sent or changed"),
    ("relations-after-missing", """
     - name: c
       event: {type: befriend, to: bob@x}
       expect:
         relations_after: [{subject: alice@localhost, object: bob@x, kind: foe},
                           {subject: alice@localhost, object: bob@x, kind: friend,
                            attrs: {since: 2}}]
     """, ["relations_after"], '+      "since": 1'),
    ("relations-still-there", """
     - name: c
       relations: [{subject: alice@localhost, object: bob@x, kind: friend}]
       event: {type: nothing}
       expect:
         relations_absent_after: [{subject: alice@localhost, object: bob@x, kind: friend}]
     """, ["relations_absent_after"], "alice@localhost -friend-> bob@x"),
    ("unexpected-runtime-error", """
     - name: c
       event: {type: boom}
       expect: {matched: []}
     """, ["errors"], "+  \"boom: "),
    ("runtime-error-that-did-not-happen", """
     - name: c
       event: {type: ban}
       expect: {errors: [kaboom]}
     """, ["errors"], '-  "kaboom"'),
]


@pytest.mark.parametrize(("case", "failing", "shown"), [
    pytest.param(case, failing, shown, id=name) for name, case, failing, shown in EXPECTATIONS])
def test_expectations(case: str, failing: list[str], shown: str | None) -> None:
    result = run_one(case)
    assert [f.check for f in result.failures] == failing
    assert result.passed is (not failing)
    if shown is not None:
        text = "\n".join(f"{f.message}\n{f.diff()}" for f in result.failures)
        assert shown in text, text


def test_diff_is_a_unified_diff_of_pretty_json() -> None:
    (failure,) = run_one("""
        - name: c
          event: {type: chat, to: bob@x, text: hi}
          expect: {matched: [audit]}
        """).failures
    assert failure.diff().splitlines() == [
        "--- expected", "+++ got", "@@ -1,3 +1,4 @@", " [", '-  "audit"', '+  "audit",',
        '+  "chat"', " ]"]


def test_action_diff_shows_only_the_keys_asked_about() -> None:
    (failure,) = run_one("""
        - name: c
          event: {type: chat, to: bob@x, text: hi}
          expect: {actions: [{type: forward, to: audit@x},
                             {type: forward, payload_contains: {text: ho}}]}
        """).failures
    assert failure.got == [{"type": "forward", "to": ["audit@x"]},
                           {"type": "forward", "payload_contains": {"text": "hi"}}]


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1.0, True), (True, 1, False), (0, False, False), ({"a": [1]}, {"a": [1]}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False), ([1, 2], [2, 1], False), (None, None, True),
    ("1", 1, False),
])
def test_same_is_json_equality(a: object, b: object, equal: bool) -> None:
    assert same(a, b) is equal


def test_defaults_and_derived_envelope_fields() -> None:
    text = HEADER + textwrap.dedent("""\
        defaults: {sender: carol@x, bot: bot@x, kind: presence, stanza_type: unavailable}
        fixtures:
          relations: [{subject: carol@x, object: dave@x, kind: friend}]
          online: [dave@x]
        cases:
          - {name: a, expect: {matched: [presence]}}
          - {name: b, kind: message, event: {type: x}, from: erin@x/pc,
             relations: [{subject: erin@x, object: carol@x, kind: friend}],
             expect: {matched: []}}
          - {name: c, sender: zed@x/tablet, kind: presence,
             event: {type: presence, presence: available}, expect: {matched: [presence]}}
        """)
    test, issues = parse_test_file(text, "t.yaml")
    assert test is not None, issues
    a, b, c = test.cases
    assert (a.sender, a.from_, a.kind, a.stanza_type, a.bot) == (
        "carol@x", "carol@x/test", "presence", "unavailable", "bot@x")
    assert a.event == {"type": "presence", "presence": "unavailable"}
    assert (b.sender, b.from_, b.kind, b.stanza_type) == ("erin@x", "erin@x/pc", "message",
                                                          "chat")
    assert [r.subject for r in b.relations] == ["carol@x", "erin@x"]  # file's, then case's
    assert b.online == ("dave@x",)
    assert (c.sender, c.from_, c.stanza_type) == ("zed@x", "zed@x/tablet", "available")
    result = run_file(test, RULESET)
    assert all(r.passed for r in result.cases)
    assert result.cases[0].decision.actions[0].to == ("dave@x",)


# (id, test file text after the header, expected located errors)
INVALID = [
    ("unknown-keys", """\
     colour: red
     cases:
       - name: a
         event: {type: x}
         expect: {matchd: []}
     """, [
        "t.yaml:3:1: colour: unknown key 'colour' (allowed: cases, defaults, description, "
        "fixtures, rules, version)",
        "t.yaml:7:14: cases[0].expect.matchd: unknown key 'matchd', did you mean 'matched'? "
        "(allowed: actions, drop, error, errors, matched, no_actions, not_matched, reason, "
        "relations_absent_after, relations_after)",
    ]),
    ("types-and-required", """\
     defaults: {sender: "not a jid"}
     cases:
       - event: {type: x}
         expect: {drop: "yes"}
     """, [
        't.yaml:3:20: defaults.sender: does not match the pattern '
        '^[^\\s@/]+(@[^\\s@/]+)?(/\\S+)?$ ("not a jid")',
        "t.yaml:5:5: cases[0]: missing required key 'name'",
        't.yaml:6:20: cases[0].expect.drop: must be of type boolean ("yes")',
    ]),
    ("semantic", """\
     defaults: {sender: bob@x, from: carol@x/pc}
     cases:
       - name: a
         event: {type: x}
         raw: "{}"
         expect: {drop: true}
       - name: a
         stanza_type: groupchat
         event: {type: x}
         expect: {drop: true}
       - name: c
         kind: presence
         raw: "{}"
         expect: {}
       - name: d
         sender: alice@x
         from: bob@x/pc
         expect: {actions: [{type: drop, to: x@y}]}
     """, [
        't.yaml:3:33: defaults.from: from must be a full JID of sender (bob@x) ("carol@x/pc")',
        "t.yaml:7:5: cases[0].raw: give event or raw, not both",
        "t.yaml:9:11: cases[1].name: duplicate case name 'a' (first at t.yaml:5) (\"a\")",
        "t.yaml:10:18: cases[1].stanza_type: a message stanza's type is one of chat, normal, "
        'headline (other stanzas never reach the rules) ("groupchat")',
        "t.yaml:15:5: cases[2].raw: raw is for message events (the bot builds presence "
        "events itself)",
        "t.yaml:16:13: cases[2].expect: expect needs at least one expectation (matched, "
        "not_matched, actions, error, drop, ...)",
        "t.yaml:17:5: cases[3]: a message case needs event or raw",
        't.yaml:19:11: cases[3].from: from must be a full JID of sender (alice@x) ("bob@x/pc")',
        "t.yaml:20:37: cases[3].expect.actions[0].to: 'to' does not apply to a drop action "
        "(allowed: reason, rule)",
    ]),
    ("yaml", "cases: [\n", [
        "t.yaml:4:1: YAML syntax error: did not find expected node content while parsing a "
        "flow node started at line 4, column 1",
    ]),
]


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(body, expected, id=name) for name, body, expected in INVALID])
def test_invalid_test_files_give_located_errors(body: str, expected: list[str]) -> None:
    test, issues = parse_test_file(HEADER + textwrap.dedent(body), "t.yaml")
    assert test is None
    assert [i.format() for i in issues] == expected


def test_missing_version_rules_and_cases() -> None:
    _, issues = parse_test_file("description: x\n", "t.yaml")
    assert [i.format() for i in issues] == [
        "t.yaml:1:1: missing required key 'cases'",
        "t.yaml:1:1: missing required key 'rules'",
        "t.yaml:1:1: missing required key 'version'",
    ]


def test_unknown_rule_names_are_located_errors() -> None:
    text = HEADER + textwrap.dedent("""\
        cases:
          - name: a
            event: {type: x}
            expect:
              matched: [chatt]
              not_matched: [refuse, nope]
              actions: [{type: drop, rule: banned}, {type: drop, rule: bannd}]
        """)
    test, issues = parse_test_file(text, "t.yaml")
    assert test is not None, issues
    assert [i.format() for i in check_names(test, RULESET)] == [
        't.yaml:7:17: cases[0].expect.matched[0]: no rule named \'chatt\' in r.yaml, did you '
        'mean \'chat\'? ("chatt")',
        't.yaml:8:29: cases[0].expect.not_matched[1]: no rule named \'nope\' in r.yaml ("nope")',
        "t.yaml:9:64: cases[0].expect.actions[1].rule: no rule named 'bannd' in r.yaml, did "
        "you mean 'banned'? (\"bannd\")",
    ]


# --- loading from files, coverage, JUnit ------------------------------------------


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A rule set and two test files: one passing (chat), one failing (ban)."""
    (tmp_path / "r.yaml").write_text(RULES_TEXT)
    (tmp_path / "a.test.yaml").write_text(HEADER + textwrap.dedent("""\
        cases:
          - {name: chat, event: {type: chat, to: bob@x, text: hi},
             expect: {matched: [audit, chat]}}
          - {name: refuse, event: {type: chat, to: zed@x, text: hi},
             expect: {matched: [audit, refuse]}}
        """))
    (tmp_path / "b.test.yaml").write_text(HEADER + textwrap.dedent("""\
        cases:
          - {name: ban ok, event: {type: ban}, expect: {reason: banned}}
          - {name: ban wrong, event: {type: ban}, expect: {matched: [never]}}
        """))
    return tmp_path


def test_coverage_lists_exactly_the_unmatched_enabled_rules(suite: Path) -> None:
    results = [load_test_file(suite / "a.test.yaml"), load_test_file(suite / "b.test.yaml")]
    (cov,) = coverage(results)
    assert cov.rules == str(suite / "r.yaml")
    assert [r.name for r in cov.uncovered] == [
        "boom", "befriend", "unfriend", "where", "presence", "never"]  # not `disabled`
    assert cov.total == 10
    assert (cov.uncovered[0].file, cov.uncovered[0].line) == (str(suite / "r.yaml"), 22)


def test_coverage_ignores_invalid_files_and_merges_files_of_one_rule_set(suite: Path) -> None:
    (suite / "c.test.yaml").write_text(HEADER + "cases: []\n")
    results = run_paths([str(suite)])
    assert [r.ok for r in results] == [True, False, False]
    (cov,) = coverage(results)
    assert "banned" not in [r.name for r in cov.uncovered]


def test_rule_set_problems_are_test_file_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("version: 1\nrules: [{name: x, actions: []}]\n")
    (tmp_path / "t.yaml").write_text("version: 1\nrules: bad.yaml\ncases: "
                                     "[{name: a, event: {}, expect: {drop: true}}]\n")
    (tmp_path / "u.yaml").write_text("version: 1\nrules: gone\ncases: "
                                     "[{name: a, event: {}, expect: {drop: true}}]\n")
    bad = load_test_file(tmp_path / "t.yaml")
    assert bad.ruleset is None
    assert [i.format() for i in bad.issues] == [
        f"{tmp_path}/t.yaml:2:8: rules: the rule set {tmp_path}/bad.yaml is invalid "
        "(1 error(s))",
        f"{tmp_path}/bad.yaml:2:28: rules[0].actions: must have at least 1 item(s) ([])"]
    gone = load_test_file(tmp_path / "u.yaml")
    assert [i.format() for i in gone.issues] == [
        f'{tmp_path}/u.yaml:2:8: rules: no such file or directory: {tmp_path}/gone ("gone")']


def test_junit_xml_counts(suite: Path) -> None:
    (suite / "c.test.yaml").write_text("version: 2\n")
    results = run_paths([str(suite)])
    root = ET.fromstring(junit_xml(results, coverage(results), require_coverage=True))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "2", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    a = suites[str(suite / "a.test.yaml")]
    assert (a.get("tests"), a.get("failures")) == ("2", "0")
    b = suites[str(suite / "b.test.yaml")]
    (failure,) = b.iter("failure")
    assert failure.get("message") == "matched: the matched rules differ"
    assert '-  "never"' in (failure.text or "")
    assert [c.get("name") for c in b.iter("testcase")] == ["ban ok", "ban wrong"]
    assert suites[str(suite / "c.test.yaml")].find("testcase/error") is not None
    cov = suites[f"coverage {suite / 'r.yaml'}"]
    assert f"boom ({suite}/r.yaml:22)" in (cov.find("testcase/failure").get("message") or "")  # type: ignore[union-attr]


def test_junit_xml_escapes_what_xml_cannot_carry() -> None:
    result = run_one("""
        - name: "odd \\x01 name"
          event: {type: chat, to: bob@x, text: "\\uFFFE"}
          expect: {matched: []}
        """)
    file = FileResult("t.yaml", "r.yaml", RULESET, (), (result,))
    root = ET.fromstring(junit_xml([file], []))
    assert root.find("testsuite/testcase").get("name") == "odd \\u0001 name"  # type: ignore[union-attr]


# --- the command ---------------------------------------------------------------------


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))
    return result.exit_code, result.output


def test_cli_shipped_tests_cover_every_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out = invoke("--require-coverage", "tests/rules/friends.test.yaml",
                       "tests/rules/service.test.yaml")
    assert code == 0, out
    lines = out.splitlines()
    assert "coverage: rules/friends: 21/21 rules matched" in lines
    assert "coverage: rules: 10/10 rules matched" in lines
    assert not [line for line in lines if line.startswith(("FAIL", "uncovered", "INVALID"))]
    passed = sum(line.startswith("PASS ") for line in lines)
    assert lines[-1] == f"{passed} passed, 0 failed"


def test_cli_failures_diffs_and_exit_1(suite: Path) -> None:
    code, out = invoke(str(suite / "a.test.yaml"), str(suite / "b.test.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert "PASS chat" in lines
    assert "PASS ban ok" in lines
    i = lines.index("FAIL ban wrong")
    assert lines[i + 1:i + 10] == [
        f"  at {suite}/b.test.yaml:5",
        "  matched: the matched rules differ",
        "    --- expected",
        "    +++ got",
        "    @@ -1,3 +1,3 @@",
        "     [",
        '    -  "never"',
        '    +  "banned"',
        "     ]",
    ]
    assert lines[-2].startswith(f"uncovered: boom ({suite}/r.yaml:22), befriend "
                                f"({suite}/r.yaml:25), ")
    assert lines[-1] == "3 passed, 1 failed"


def test_cli_coverage_is_a_failure_only_when_required(suite: Path) -> None:
    path = str(suite / "a.test.yaml")
    assert invoke(path)[0] == 0
    code, out = invoke("--require-coverage", path)
    assert code == 1
    assert out.splitlines()[-2:] == ["coverage required: 7 rule(s) matched by no case",
                                     "2 passed, 0 failed"]


def test_cli_invalid_file_is_exit_1_and_counted_failed(suite: Path) -> None:
    (suite / "c.test.yaml").write_text(HEADER + "cases: [{name: x, expect: {}}]\n")
    code, out = invoke(str(suite / "a.test.yaml"), str(suite / "c.test.yaml"))
    assert code == 1
    assert f"INVALID {suite}/c.test.yaml" in out.splitlines()
    assert out.splitlines()[-1] == "2 passed, 1 failed"


@pytest.mark.parametrize("args", [[], ["does-not-exist.yaml"], ["--format", "xml", "x"]])
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    assert invoke(*args)[0] == 2


def test_cli_json_and_junit_outputs(suite: Path) -> None:
    junit = suite / "out" / "junit.xml"
    junit.parent.mkdir()
    code, out = invoke("--format", "json", "--junit", str(junit), str(suite))
    assert code == 1
    report = json.loads(out)
    assert (report["passed"], report["failed"], report["invalid"]) == (3, 1, 0)
    (failed,) = [c for f in report["files"] for c in f["cases"] if not c["passed"]]
    assert failed["decision"]["matched"] == ["banned"]
    assert failed["failures"][0]["expected"] == ["never"]
    assert report["coverage"][0]["total"] == 10
    assert ET.parse(junit).getroot().get("tests") == "4"
