"""`rulebot validate` checks event fields against the schemas a rule can see, and
warns about YAML 1.1 readings of plain scalars."""

from __future__ import annotations

import textwrap
from pathlib import Path

from click.testing import CliRunner

from rulebot.cli.main import main
from rulebot.load.yamldoc import yaml11_surprise
from rulebot.model import Issue
from rulebot.rules.loader import parse_rule_files

EVENTS = """\
version: 1
events:
  unknown: {unknown}
  types:
    order:
      type: object
      properties:
        type: {{const: order}}
        amount: {{type: number}}
        customer:
          type: object
          properties: {{name: {{type: string}}, tier: {{type: string}}}}
    refund:
      allOf:
        - $ref: "#/$defs/base"
        - properties: {{reason: {{type: string}}}}
      $defs:
        base: {{properties: {{type: {{const: refund}}, amount: {{type: number}}}}}}
    note:
      type: object
      additionalProperties: true
      properties: {{text: {{type: string}}}}
rules:
"""


def warnings(rules: str, unknown: str = "reject") -> list[str]:
    text = EVENTS.format(unknown=unknown) + textwrap.indent(textwrap.dedent(rules), "  ")
    result = parse_rule_files([("r.yaml", text)])
    assert result.ruleset is not None, result.errors
    return [f"{i.line}:{i.col}: {i.message}" for i in result.issues if i.severity == "warning"]


def line_of(rules: str, needle: str) -> int:
    text = EVENTS.format(unknown="reject") + textwrap.indent(textwrap.dedent(rules), "  ")
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_misspelt_field_is_located_with_did_you_mean() -> None:
    rules = """\
    - name: big
      match: "event.type == 'order' && event.ammount > `100`"
      actions: [{reply: {payload: "{tier: event.customer.teir}"}}]
    """
    line = line_of(rules, "ammount")
    assert warnings(rules) == [
        f"{line}:38: event has no field 'ammount' in the schema of its event type, "
        "did you mean 'amount'?",
        f"{line + 1}:41: event.customer has no field 'teir' in the schema of its event type, "
        "did you mean 'tier'?",
    ]


def test_fields_of_any_type_the_rule_serves_are_known() -> None:
    # No type test: every declared type (unknown: reject), `note` too, which allows
    # any field. contains or ||: the types named.
    rules = """\
    - name: any
      match: "event.reason == 'late' || event.customer.name == 'x' || event.text"
      actions: [{drop: {}}]
    - name: some
      match: "contains(`[\\"order\\", \\"refund\\"]`, event.type) && event.reason"
      actions: [{drop: {}}]
    - name: none
      match: "(event.type == 'order' || event.type == 'refund') && event.reasn"
      actions: [{drop: {}}]
    """
    found = warnings(rules)
    assert len(found) == 1
    assert "no field 'reasn' in the schema of its event types, did you mean 'reason'?" \
        in found[0]


def test_what_cannot_be_known_is_not_reported() -> None:
    rules = """\
    - name: extra-allowed
      match: "event.type == 'note' && event.anything"
      actions: [{drop: {}}]
    - name: presence
      match: "stanza.kind == 'presence' && event.show == 'away'"
      actions: [{drop: {}}]
    - name: under-array
      match: "event.type == 'order' && event.customer.tier[0].x"
      actions: [{drop: {}}]
    """
    assert warnings(rules) == []
    # With unknown: allow, a rule with no type test may see any fields.
    assert warnings("""\
    - name: untyped
      match: "event.whatever"
      actions: [{drop: {}}]
    """, unknown="allow") == []


def test_strict_validate_fails_on_a_field_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(EVENTS.format(unknown="reject") + textwrap.indent(textwrap.dedent("""\
    - name: big
      match: "event.type == 'order' && event.ammount > `1`"
      actions: [{drop: {}}]
    """), "  "))
    relaxed = CliRunner().invoke(main, ["validate", str(path)])
    strict = CliRunner().invoke(main, ["validate", "--strict", str(path)])
    assert relaxed.exit_code == 0
    assert "did you mean 'amount'" in relaxed.output
    assert strict.exit_code != 0


def test_yaml_1_1_surprises() -> None:
    assert yaml11_surprise("no", False) == ("YAML 1.1 reads no as false: write false, or "
                                            "quote it ('no') for the text")
    assert yaml11_surprise("0755", 493) is not None
    assert "493" in str(yaml11_surprise("0755", 493))
    assert "750" in str(yaml11_surprise("12:30", 750))
    for text, value in (("true", True), ("0", 0), ("10", 10), ("1.5", 1.5), ("0x1f", 31)):
        assert yaml11_surprise(text, value) is None


def test_yaml_surprises_are_warned_once_where_written() -> None:
    text = textwrap.dedent("""\
    version: 1
    lists:
      answers: [yes, maybe]
    rules:
      - name: r
        match: "in_list('answers', sender)"
        continue: yes
        actions: [{reply: {payload: {value: {opens: 12:30, mode: 0755}}}}]
    """)
    issues = parse_rule_files([("y.yaml", text)]).issues
    shown = [(i.line, i.col, i.severity, i.message.split(":")[0]) for i in issues]
    assert shown == [
        # The schema refuses a boolean in a list of strings: its error says to quote it.
        (3, 13, "error", "must be of type string; quote it"),
        (7, 15, "warning", "YAML 1.1 reads yes as true"),
        (8, 49, "warning", "YAML 1.1 reads 12"),
        (8, 62, "warning", "YAML 1.1 reads 0755 as the octal number 493"),
    ]
    assert all(isinstance(i, Issue) for i in issues)
