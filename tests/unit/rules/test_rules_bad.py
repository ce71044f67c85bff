"""The corpus of broken rule files: every file's exact, located error lines.

Each file in tests/data/bad/ shows one class of problem. The expectations are
what an operator should read, checked by hand against the file (the line and
column point at the offending key or value); they are not a snapshot of the
loader's output. Cases where the loader is known to be wrong are strict xfails
whose reason names the bug.

Paths are passed relative to the repository root (the tests chdir there), so
the expected lines do not depend on where pytest was started.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulebot.cli.main import main
from rulebot.rules.loader import check_rules, parse_rule_files

ROOT = Path(__file__).resolve().parents[3]
BAD = "tests/data/bad"
DIRS = "tests/data/bad_dirs"


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def error_lines(*paths: str) -> list[str]:
    result = check_rules(list(paths))
    assert result.ruleset is None
    return [issue.format() for issue in result.errors]



# (file name, expected error lines without the leading "tests/data/bad/<file>:").
CASES = [
    # --- YAML level -------------------------------------------------------------------
    pytest.param("yaml_syntax_unclosed_flow.yaml", [
        "4:6: YAML syntax error: did not find expected ',' or ']' while parsing a flow "
        "sequence started at line 3, column 11",
    ], id="yaml_syntax_unclosed_flow"),
    pytest.param("yaml_syntax_unclosed_quote.yaml", [
        "7:1: YAML syntax error: found unexpected end of stream while scanning a quoted "
        "scalar started at line 4, column 12",
    ], id="yaml_syntax_unclosed_quote"),
    pytest.param("tab_indentation.yaml", [
        "4:1: YAML syntax error: found a tab character that violates indentation while "
        "scanning a plain scalar started at line 3, column 11",
    ], id="tab_indentation"),
    pytest.param("multiple_documents.yaml", [
        "3:1: YAML syntax error: expected a single document in the stream but found "
        "another document",
    ], id="multiple_documents"),
    pytest.param("duplicate_yaml_key.yaml", [
        "5:5: rules[0].match: duplicate key 'match' (\"match\")",
    ], id="duplicate_yaml_key"),
    pytest.param("merge_key.yaml", [
        "7:5: rules[1]: YAML merge keys (<<) are not supported (\"<<\")",
        "7:5: rules[1]: missing required key 'actions'",
    ], id="merge_key"),
    pytest.param("alias_bomb.yaml", [
        "9:6: lists.g[0]: document too large: more than 1000000 values after expanding "
        "aliases",
    ], id="alias_bomb"),
    pytest.param("recursive_alias.yaml", [
        "3:9: a YAML alias refers to a node that contains it (infinite structure)",
    ], id="recursive_alias"),
    pytest.param("regex_pattern_from_event.yaml", [
        "4:12: rules[0].match: regex_match: the pattern must be a literal string "
        "(e.g. '^[a-z]+$'), not computed from the event (\"regex_match\")",
    ], id="regex_pattern_from_event"),
    pytest.param("python_tag.yaml", [
        "3:11: lists.admins: unsupported YAML tag (\"!!python/object/apply:os.system\")",
    ], id="python_tag"),
    pytest.param("python_tag_scalar.yaml", [
        "3:9: macros.evil: unsupported YAML tag (\"!!python/name:os.system\")",
    ], id="python_tag_scalar"),
    pytest.param("non_string_key.yaml", [
        "3:3: lists: keys must be plain strings",
    ], id="non_string_key"),
    pytest.param("empty_file.yaml", [
        "1:1: missing required key 'version'",
    ], id="empty_file"),
    pytest.param("not_a_mapping.yaml", [
        "1:1: must be of type object ([{\"actions\": [{\"drop\": {}}], \"name\": \"all\"}])",
    ], id="not_a_mapping"),
    # --- schema: top level --------------------------------------------------------------
    pytest.param("version_missing.yaml", [
        "1:1: missing required key 'version'",
    ], id="version_missing"),
    pytest.param("version_2.yaml", [
        "1:10: version: must be 1 (2)",
    ], id="version_2"),
    pytest.param("version_string.yaml", [
        "1:10: version: must be 1 (\"1\")",
    ], id="version_string"),
    pytest.param("unknown_top_key.yaml", [
        "2:1: rule: unknown key 'rule', did you mean 'rules'? "
        "(allowed: counters, default, events, intervals, lists, macros, rate_limits, rules, "
        "version, xml_events)",
    ], id="unknown_top_key"),
    pytest.param("default_bad_value.yaml", [
        "2:10: default: must be one of \"drop\", \"error\" (\"reject\")",
    ], id="default_bad_value"),
    pytest.param("rules_not_list.yaml", [
        "3:3: rules: must be of type array "
        "({\"actions\": [{\"drop\": {}}], \"name\": \"all\"})",
    ], id="rules_not_list"),
    pytest.param("lists_not_strings.yaml", [
        "3:29: lists.admins[1]: must be of type string (42)",
    ], id="lists_not_strings"),
    pytest.param("bad_list_name.yaml", [
        "4:3: lists[\"power users\"]: does not match the pattern ^[A-Za-z_][A-Za-z0-9_.-]*$ "
        "(\"power users\")",
    ], id="bad_list_name"),
    pytest.param("bad_macro_name.yaml", [
        "4:3: macros.from-admin: does not match the pattern ^[A-Za-z_][A-Za-z0-9_]*$ "
        "(\"from-admin\")",
    ], id="bad_macro_name"),
    # --- schema: events -----------------------------------------------------------------
    pytest.param("bad_event_schema.yaml", [
        "6:17: events.types.chat.required: invalid event schema: must be of type array "
        "(\"text\")",
    ], id="bad_event_schema"),
    pytest.param("event_schema_type_typo.yaml", [
        "5:13: events.types.ping.type: invalid event schema: must be one of \"array\", "
        "\"boolean\", \"integer\", \"null\", \"number\", \"object\", \"string\" (\"objekt\")",
    ], id="event_schema_type_typo"),
    pytest.param("event_type_not_mapping.yaml", [
        "4:11: events.types.chat: must be of type object (\"object\")",
    ], id="event_type_not_mapping"),
    pytest.param("events_unknown_bad_value.yaml", [
        "3:12: events.unknown: must be one of \"allow\", \"reject\" (\"deny\")",
    ], id="events_unknown_bad_value"),
    pytest.param("events_bad_discriminator.yaml", [
        "3:18: events.discriminator: does not match the pattern ^[A-Za-z_][A-Za-z0-9_]*$ "
        "(\"event.type\")",
    ], id="events_bad_discriminator"),
    # --- schema: rules and actions --------------------------------------------------------
    pytest.param("unknown_key_actoins.yaml", [
        "3:5: rules[0]: missing required key 'actions'",
        "5:5: rules[0].actoins: unknown key 'actoins', did you mean 'actions'? "
        "(allowed: actions, continue, description, enabled, match, name)",
    ], id="unknown_key_actoins"),
    pytest.param("bad_rule_name.yaml", [
        "3:11: rules[0].name: does not match the pattern ^[A-Za-z_][A-Za-z0-9_.-]*$ "
        "(\"drop all\")",
    ], id="bad_rule_name"),
    pytest.param("continue_not_bool.yaml", [
        "4:15: rules[0].continue: must be of type boolean (\"true\")",
    ], id="continue_not_bool"),
    pytest.param("match_not_string.yaml", [
        "4:12: rules[0].match: must be of type string; quote it: YAML reads unquoted "
        "yes/no/on/off/true/false as booleans (true)",
    ], id="match_not_string"),
    pytest.param("match_empty.yaml", [
        "4:12: rules[0].match: must not be empty (\"\")",
    ], id="match_empty"),
    pytest.param("empty_actions.yaml", [
        "4:14: rules[0].actions: must have at least 1 item(s) ([])",
    ], id="empty_actions"),
    pytest.param("two_actions_in_one_item.yaml", [
        "5:9: rules[0].actions[0]: must have exactly one of: forward, broadcast, reply, "
        "error, drop, relate, unrelate, count, reset, schedule, cancel "
        "({\"drop\": {}, \"forward\": {\"to\": \"event.to\"}})",
    ], id="two_actions_in_one_item"),
    pytest.param("unknown_action.yaml", [
        "5:9: rules[0].actions[0].foward: unknown key 'foward', did you mean 'forward'? "
        "(allowed: broadcast, cancel, count, drop, error, forward, relate, reply, reset, "
        "schedule, unrelate)",
    ], id="unknown_action"),
    pytest.param("forward_without_to.yaml", [
        "5:18: rules[0].actions[0].forward: missing required key 'to'",
    ], id="forward_without_to"),
    pytest.param("forward_include_sender.yaml", [
        "5:33: rules[0].actions[0].forward.include_sender: unknown key 'include_sender' "
        "(allowed: payload, to)",
    ], id="forward_include_sender"),
    pytest.param("reply_without_payload.yaml", [
        "5:16: rules[0].actions[0].reply: missing required key 'payload'",
    ], id="reply_without_payload"),
    pytest.param("param_wrong_type.yaml", [
        "5:23: rules[0].actions[0].forward.to: must be of type string (42)",
    ], id="param_wrong_type"),
    pytest.param("payload_mapping_not_literal.yaml", [
        "6:20: rules[0].actions[0].reply.payload: missing required key 'value'",
        "6:21: rules[0].actions[0].reply.payload.type: unknown key 'type' (allowed: value)",
    ], id="payload_mapping_not_literal"),
    pytest.param("drop_bad_params.yaml", [
        "5:16: rules[0].actions[0].drop.because: unknown key 'because' (allowed: reason)",
    ], id="drop_bad_params"),
    pytest.param("drop_reason_not_string.yaml", [
        "5:24: rules[0].actions[0].drop.reason: must be of type string (404)",
    ], id="drop_reason_not_string"),
    pytest.param("error_code_bad_pattern.yaml", [
        "5:23: rules[0].actions[0].error.code: does not match the pattern "
        "^[a-z0-9][a-z0-9.-]*$ (\"Not Allowed\")",
    ], id="error_code_bad_pattern"),
    # --- names ----------------------------------------------------------------------------
    pytest.param("duplicate_rule_name.yaml", [
        "7:5: rules[1].name: duplicate rule name 'ping' (first defined at "
        "tests/data/bad/duplicate_rule_name.yaml:3) (\"ping\")",
    ], id="duplicate_rule_name"),
    # --- expressions ----------------------------------------------------------------------
    pytest.param("bad_jmespath.yaml", [
        "4:24: rules[0].match: invalid JMESPath expression: Unknown token '=' near '=' "
        "(\"event.type = 'chat'\")",
    ], id="bad_jmespath"),
    pytest.param("bad_jmespath_block_scalar.yaml", [
        # A folded scalar's columns cannot be mapped: the value's start is the place.
        "4:12: rules[0].match: invalid JMESPath expression: Unknown token '=' near '=' "
        "(\"stanza.kind == 'message' && event.type === 'chat'\")",
    ], id="bad_jmespath_block_scalar"),
    pytest.param("payload_incomplete_expression.yaml", [
        "5:54: rules[0].actions[0].reply.payload: invalid JMESPath expression: incomplete "
        "expression (\"{type: 'pong', id: event.id\")",
    ], id="payload_incomplete_expression"),
    pytest.param("unknown_envelope_field.yaml", [
        "4:12: rules[0].match: unknown envelope field 'evnt', did you mean 'event'? "
        "(\"evnt\")",
    ], id="unknown_envelope_field"),
    pytest.param("double_quoted_string.yaml", [
        "4:12: rules[0].match: unknown envelope field 'chat': for the string write 'chat' "
        "in single quotes; double quotes name a field in JMESPath (\"chat\")",
    ], id="double_quoted_string"),
    pytest.param("literal_payload_not_object.yaml", [
        "5:34: rules[0].actions[0].reply.payload.value: must be a JSON object (\"pong\")",
    ], id="literal_payload_not_object"),
    pytest.param("literal_to_not_jid.yaml", [
        "5:31: rules[0].actions[0].forward.to.value: must be a JID or a list of JIDs "
        "([\"bob@localhost\", \"not a jid\"])",
    ], id="literal_to_not_jid"),
    pytest.param("event_schema_remote_ref.yaml", [
        "5:13: events.types.chat.$ref: only local $ref (#/...) is allowed in event schemas "
        "(\"https://example.com/chat.schema.json\")",
    ], id="event_schema_remote_ref"),
    pytest.param("unknown_macro.yaml", [
        "6:13: rules[0].match: unknown macro $mesage (\"$mesage\")",
    ], id="unknown_macro"),
    pytest.param("macro_cycle.yaml", [
        "3:7: macros.a: macro $a expands into itself ($a -> $b -> $a) "
        "(\"$b && sender == 'x@y'\")",
        "4:7: macros.b: macro $b expands into itself ($b -> $a -> $b) (\"$a\")",
    ], id="macro_cycle"),
    pytest.param("macro_broken_used.yaml", [
        "3:24: macros.chat: invalid JMESPath expression: incomplete expression "
        "(\"event.type == \")",
    ], id="macro_broken_used"),
    pytest.param("unknown_list_ref.yaml", [
        "7:25: rules[0].actions[0].broadcast.to: unknown list 'memebrs' (\"lists.memebrs\")",
    ], id="unknown_list_ref"),
    pytest.param("in_list_unknown_list.yaml", [
        "6:12: rules[0].match: unknown list 'admin' (\"admin\")",
    ], id="in_list_unknown_list"),
    pytest.param("bad_regex_literal.yaml", [
        "4:12: rules[0].match: regex_match: invalid pattern: missing ), unterminated "
        "subpattern at position 0 (\"([0-9]+\")",
    ], id="bad_regex_literal"),
    pytest.param("unknown_function.yaml", [
        "4:12: rules[0].match: unknown function jid_lcoal(), did you mean jid_local()? "
        "(\"jid_lcoal\")",
    ], id="unknown_function"),
    pytest.param("wrong_arity.yaml", [
        "4:12: rules[0].match: jid_domain() takes 1 argument(s), got 2 (\"jid_domain\")",
    ], id="wrong_arity"),
]

SEVERAL = f"{BAD}/several_independent_errors.yaml"
SEVERAL_LINES = [
    f"{SEVERAL}:6:36: rules[0].match: invalid JMESPath expression: incomplete expression "
    "(\"event.type == 'chat' &&\")",
    f"{SEVERAL}:10:12: rules[1].match: unknown list 'admin' (\"admin\")",
    f"{SEVERAL}:12:25: rules[1].actions[0].broadcast.to: unknown list 'members' "
    "(\"lists.members\")",
    f"{SEVERAL}:15:9: rules[2].actions[0]: must have exactly one of: forward, broadcast, "
    "reply, error, drop, relate, unrelate, count, reset, schedule, cancel "
    "({\"drop\": {}, \"reply\": {\"payload\": \"{type: 'pong'}\"}})",
    f"{SEVERAL}:19:5: rules[3].match: duplicate key 'match' (\"match\")",
    f"{SEVERAL}:21:23: rules[3].actions[0].error.code: does not match the pattern "
    "^[a-z0-9][a-z0-9.-]*$ (\"Refused\")",
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_bad_file(name: str, expected: list[str]) -> None:
    path = f"{BAD}/{name}"
    assert error_lines(path) == [f"{path}:{line}" for line in expected]


def test_every_bad_file_has_a_case() -> None:
    named = {p.values[0] for p in CASES} | {Path(SEVERAL).name}
    on_disk = {p.name for p in (ROOT / BAD).iterdir()}
    assert on_disk == named


def test_names_defined_in_two_files_of_a_directory() -> None:
    first = f"{DIRS}/duplicate_names/10-vocabulary.yaml"
    second = f"{DIRS}/duplicate_names/20-service.yaml"
    assert error_lines(f"{DIRS}/duplicate_names") == [
        f"{second}:4:3: lists.admins: duplicate list name 'admins' "
        f"(first defined at {first}:3) (\"admins\")",
        f"{second}:6:3: macros.message: duplicate macro name 'message' "
        f"(first defined at {first}:5) (\"message\")",
        f"{second}:8:5: rules[0].name: duplicate rule name 'ping' "
        f"(first defined at {first}:7) (\"ping\")",
    ]


def test_independent_errors_are_all_reported_sorted_by_position() -> None:
    # The loader finds these in a different order (YAML, then schema, then
    # expressions); the report must still read top to bottom.
    lines = error_lines(SEVERAL)
    assert lines == SEVERAL_LINES
    result = check_rules([SEVERAL])
    positions = [(i.line, i.col) for i in result.errors]
    assert positions == sorted(positions)


def test_validate_prints_the_same_lines_and_exits_1() -> None:
    result = CliRunner().invoke(main, ["validate", SEVERAL])
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == SEVERAL_LINES
    assert "invalid: 6 error(s), 0 warning(s)" in result.stderr


def test_validate_json_has_the_same_issues() -> None:
    result = CliRunner().invoke(main, ["validate", "--format", "json", SEVERAL])
    assert result.exit_code == 1, result.output
    issues = json.loads(result.stdout)
    assert issues == [i.to_json() for i in check_rules([SEVERAL]).issues]
    assert all(i["severity"] == "error" for i in issues)
    shown = [
        f"{i['file']}:{i['line']}:{i['col']}: {i['path']}: {i['message']}"
        + (f" ({i['value']})" if i["value"] is not None else "")
        for i in issues
    ]
    assert shown == SEVERAL_LINES


@pytest.mark.parametrize("args", [
    pytest.param(["validate"], id="no-paths"),
    pytest.param(["validate", f"{BAD}/no_such_file.yaml"], id="missing-path"),
    pytest.param(["validate", "--format", "xml", SEVERAL], id="bad-format"),
])
def test_validate_usage_error_exits_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output


def test_a_name_ending_in_a_newline_is_refused() -> None:
    # Python's $ matches before a final newline; the schemas guard against it.
    text = 'version: 1\nrules:\n  - name: "chat\\n"\n    actions: [drop: {}]\n'
    result = parse_rule_files([("n.yaml", text)])
    assert [i.format() for i in result.errors] == [
        'n.yaml:3:11: rules[0].name: does not match the pattern '
        '^[A-Za-z_][A-Za-z0-9_.-]*$ ("chat\\n")']


def test_a_key_with_a_newline_is_quoted_in_the_path() -> None:
    # Found by make fuzz: the path printed the key raw and split the issue line.
    text = "events:\n  ? '0\n\n    '\n  : null\nrules: []\nversion: 1\n"
    lines = [i.format() for i in parse_rule_files([("k.yaml", text)]).errors]
    assert lines == ["k.yaml:2:5: events[\"0\\n\"]: unknown key '0\\n' "
                     "(allowed: discriminator, types, unknown)"]
    assert all("\n" not in line for line in lines)


def test_jsonschema_rs_and_jsonschema_agree_on_every_rule_file() -> None:
    # schema_issues trusts jsonschema-rs's "valid": a file it passes is not shown
    # to jsonschema at all, so the two must never disagree on a rule file.
    from rulebot.load.schema import fast_validator, validator
    from rulebot.load.yamldoc import load_document

    root = Path(__file__).resolve().parents[3]
    files = [*Path(BAD).rglob("*.y*ml"), *(root / "rules").rglob("*.yaml"),
             *(root / "tests" / "data").rglob("*.y*ml")]
    assert len(files) > 60
    fast, slow = fast_validator("rules"), validator("rules")
    for path in files:
        doc, _ = load_document(path.read_text(encoding="utf-8"), str(path))
        if doc is None:
            continue
        assert fast.is_valid(doc.value) == slow.is_valid(doc.value), path


def test_xml_event_declarations_a_namespace_once_and_element_names() -> None:
    one = "version: 1\nxml_events:\n  urn:example:shop: event\n"
    two = "version: 1\nxml_events:\n  urn:example:shop: order\n  urn:x: 'not a name'\n"
    result = parse_rule_files([("a.yaml", one), ("b.yaml", two)])
    assert result.ruleset is None
    lines = [i.format() for i in result.errors]
    assert lines == [
        "b.yaml:3:3: xml_events[\"urn:example:shop\"]: duplicate XML event namespace name "
        "'urn:example:shop' (first defined at a.yaml:3) (\"urn:example:shop\")",
        lines[1],
    ]
    assert lines[1].startswith("b.yaml:4:10: xml_events[\"urn:x\"]:"), lines[1]
    assert "not a name" in lines[1]
    ok = parse_rule_files([("a.yaml", one)]).ruleset
    assert ok is not None
    assert ok.xml_events == {"urn:example:shop": "event"}
