"""The admin commands' chat syntax and argument checks (rulebot.bot.admin)."""

from __future__ import annotations

import pytest

from rulebot.bot.admin import BY_NODE, COMMANDS, CommandError, check_args, help_text, parse_chat
from rulebot.config import parse_config


def test_a_chat_command_is_read_as_a_shell_would() -> None:
    assert parse_chat('!silence-add rule=chat until=2h comment="relay loop, ticket 7"') == (
        "silence-add", {"rule": "chat", "until": "2h", "comment": "relay loop, ticket 7"})
    assert parse_chat("!status") == ("status", {})


@pytest.mark.parametrize(("body", "says"), [
    ("!", "commands: !status"),
    ("!frobnicate", "unknown command 'frobnicate'"),
    ("!status verbose=1", "expected key=value with key one of (none)"),
    ("!explain alice@x", "expected key=value with key one of sender"),
    ('!silence-add comment="unclosed', "cannot read the command"),
])
def test_bad_chat_commands_say_what_is_wrong(body: str, says: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_chat(body)
    assert says in str(err.value)


def test_required_arguments_are_checked() -> None:
    spec = BY_NODE["silence-add"]
    assert check_args(spec, {"until": "1h"}) == "silence-add: missing comment"
    assert check_args(spec, {"until": "1h", "comment": "c"}) is None
    assert check_args(BY_NODE["status"], {}) is None


def test_every_command_is_in_the_help() -> None:
    text = help_text()
    assert all(f"!{c.node}" in text for c in COMMANDS)
    assert "until=..." in text
    assert "rule=[...]" in text


def test_admins_in_the_config_are_bare_jids() -> None:
    c = parse_config("jid: f@x\nrules: r\nadmins: [Ops@Example.com]\n")
    assert c.admins == ("ops@example.com",)
    with pytest.raises(Exception, match="admins"):
        parse_config("jid: f@x\nrules: r\nadmins: [ops@example.com/phone]\n", "c.yaml")
