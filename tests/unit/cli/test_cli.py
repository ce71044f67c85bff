"""The command line through click's CliRunner: validate, schema, eval."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from rulebot.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
RULES = str(ROOT / "rules")


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_validate_shipped_rules_ok() -> None:
    code, out, err = run("validate", RULES, RULES + "/friends")
    assert code == 0
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"ok: {RULES}: 10 rules in 3 file(s), version ")
    assert lines[1].startswith(f"ok: {RULES}/friends: 21 rules in 3 file(s), version ")


def test_validate_checks_each_path_as_its_own_rule_set(tmp_path: Path) -> None:
    # The same rule name in two separate rule sets is fine.
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            "version: 1\nrules:\n  - name: same\n    actions: [{drop: {}}]\n")
    code, _, err = run("validate", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml"))
    assert code == 0, err


def test_validate_reports_warning_for_shadowed_rule_but_exits_0(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nrules:\n"
        "  - name: all\n    actions: [{drop: {}}]\n"
        "  - name: later\n    match: event.x\n    actions: [{drop: {}}]\n"
    )
    code, out, _ = run("validate", str(f))
    assert code == 0
    assert out == (f"{f}:5:5: rules[1]: warning: rule 'later' can never match: rule 'all' "
                   f"({f}:3) matches every event and stops evaluation\n")
    code, _, _ = run("validate", "--strict", str(f))
    assert code == 1


def test_validate_shadowing_by_subset_of_conditions(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nrules:\n"
        "  - name: chat\n    match: \"event.type == 'chat'\"\n    actions: [{drop: {}}]\n"
        "  - name: chat-bob\n    match: \"event.type == 'chat' && event.to == 'b@x'\"\n"
        "    actions: [{drop: {}}]\n"
        "  - name: ping\n    match: \"event.type == 'ping'\"\n    actions: [{drop: {}}]\n"
    )
    _, out, _ = run("validate", str(f))
    assert "rule 'chat-bob' can never match: rule 'chat'" in out
    assert "'ping' can never" not in out


def test_validate_no_shadow_warning_when_earlier_rule_can_fail(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "version: 1\nrules:\n"
        "  - name: fwd\n    actions: [{forward: {to: event.to}}]\n"
        "  - name: fallback\n    actions: [{drop: {}}]\n"
    )
    code, out, _ = run("validate", str(f))
    assert (code, out) == (0, "")


def test_validate_usage_error_exits_2() -> None:
    assert run("validate")[0] == 2


def test_validate_json_format_lists_issues(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("version: 1\nrules:\n  - name: a\n    actoins: []\n")
    code, out, _ = run("validate", "--format", "json", str(f))
    assert code == 1
    issues = json.loads(out)
    assert [(i["line"], i["col"], i["path"]) for i in issues] == [
        (3, 5, "rules[0]"), (4, 5, "rules[0].actoins")]
    assert issues[1]["message"].startswith("unknown key 'actoins', did you mean 'actions'?")


def test_schema_command_prints_the_rules_schema_that_validates_shipped_rules() -> None:
    import yaml

    code, out, _ = run("schema")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    for f in sorted(Path(RULES).glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(f.read_text()), schema)


EVENTS = "\n".join([
    json.dumps({"type": "chat", "to": "bob@localhost", "text": "hi"}),
    "not json",
    json.dumps({"type": "ping", "id": 7}),
])


def test_eval_prints_one_decision_per_json_line_and_exits_1_on_bad_event() -> None:
    code, out, _ = run("eval", RULES, "--sender", "alice@localhost", stdin=EVENTS)
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1
    assert lines[0]["matched"] == ["chat-to-member"]
    assert lines[0]["actions"][0]["to"] == ["bob@localhost"]
    assert lines[0]["actions"][0]["payload"] == {
        "type": "chat", "id": None, "from": "alice@localhost", "text": "hi"}
    assert lines[1] == {"line": 2, "error": {"code": "invalid-json",
                                             "message": lines[1]["error"]["message"],
                                             "path": None}}
    assert lines[2]["actions"][0] == {"type": "reply", "to": ["alice@localhost/cli"],
                                      "payload": {"type": "pong", "id": 7}, "rule": "ping"}


def test_eval_single_pretty_printed_event_from_file(tmp_path: Path) -> None:
    f = tmp_path / "e.json"
    f.write_text(json.dumps({"type": "announce", "text": "hello"}, indent=2))
    code, out, _ = run("eval", RULES, str(f), "--sender", "admin@localhost")
    assert code == 0
    decision = json.loads(out)
    assert decision["matched"] == ["announce-from-admin"]
    assert decision["actions"][0]["to"] == ["alice@localhost", "bob@localhost",
                                            "carol@localhost"]


@pytest.mark.parametrize("bad", ["version: 2\n", "version: 1\nrules: [{name: x}]\n"])
def test_eval_refuses_invalid_rules(tmp_path: Path, bad: str) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(bad)
    code, _, err = run("eval", str(f), stdin="{}")
    assert code == 1
    assert f"{f}:" in err


def test_validate_warns_about_unused_lists_and_macros(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("version: 1\nlists:\n  a: [x@y]\n  b: [z@y]\nmacros:\n"
                 "  m: \"in_list('a', sender)\"\n  n: sender\n"
                 "rules:\n  - name: r\n    match: $m\n    actions: [{drop: {}}]\n")
    code, out, _ = run("validate", str(f))
    assert code == 0
    assert out.splitlines() == [
        f"{f}:4:3: lists.b: warning: list 'b' is never used",
        f"{f}:7:3: macros.n: warning: macro $n is never used",
    ]
