"""Running the bot from an XMPP client (docs/admin.md): the admin commands, what
each takes, and the chat fallback's syntax. Pure: rulebot.xmpp.admin offers
them as XEP-0050 ad-hoc commands, rulebot.daemon.admin carries them out.

Chat fallback, for clients without ad-hoc commands: a message whose body
starts with `!`, words split as a shell does, `key=value` for arguments:

    !status
    !silence-add rule=chat-to-member until=2h comment="relay loop"
    !relations-list subject=alice@example.com
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from rulebot.model import JSON

#: The prefix of a chat command.
CHAT_PREFIX = "!"


@dataclass(frozen=True, slots=True)
class Field:
    var: str
    label: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    node: str  # the XEP-0050 node, and the chat command's name
    name: str  # what a client shows
    fields: tuple[Field, ...] = ()


COMMANDS: tuple[Command, ...] = (
    Command("status", "Status: rules, connection, silences, shadow"),
    Command("reload", "Reload the rules now"),
    Command("explain", "Explain the last event of a sender",
            (Field("sender", "Sender (bare JID)", True),)),
    Command("silence-add", "Add a silence",
            (Field("rule", "Rule to mute"), Field("sender", "Sender to mute (bare JID)"),
             Field("match", "Events to mute (JMESPath expression)"),
             Field("until", "Until (30m, 2h, 1d or an ISO time)", True),
             Field("comment", "Why", True))),
    Command("silence-list", "List the silences in force"),
    Command("silence-expire", "End a silence now", (Field("id", "Silence id", True),)),
    Command("relations-add", "Add a relation",
            (Field("subject", "Subject (bare JID)", True), Field("kind", "Kind", True),
             Field("object", "Object (bare JID)", True),
             Field("ttl", "Expires after (30m, 7d; empty: never)"))),
    Command("relations-remove", "Remove a relation",
            (Field("subject", "Subject (bare JID)", True), Field("kind", "Kind", True),
             Field("object", "Object (bare JID)", True))),
    Command("relations-list", "List relations (at most 100)",
            (Field("subject", "Subject"), Field("kind", "Kind"), Field("object", "Object"))),
)
BY_NODE: Mapping[str, Command] = {c.node: c for c in COMMANDS}


@dataclass(frozen=True, slots=True)
class AdminResult:
    """What a command did: `text` for a person, `data` for tools."""

    ok: bool
    text: str
    data: JSON = None
    #: the error condition when not ok: forbidden, bad-request, item-not-found,
    #: internal-server-error (XMPP's names, for the ad-hoc command's error)
    condition: str = ""
    notes: tuple[str, ...] = field(default=())

    def to_json(self, command: str) -> dict[str, JSON]:
        out: dict[str, JSON] = {"type": "admin-result", "command": command, "ok": self.ok,
                                "text": self.text}
        if self.data is not None:
            out["data"] = self.data
        if self.condition:
            out["condition"] = self.condition
        return out


class CommandError(ValueError):
    """A chat command that cannot be read (the reply says why)."""


def parse_chat(body: str) -> tuple[str, dict[str, str]]:
    """`!name key=value ...` -> (name, arguments). Raises CommandError."""
    try:
        words = shlex.split(body.removeprefix(CHAT_PREFIX))
    except ValueError as exc:
        raise CommandError(f"cannot read the command: {exc}") from exc
    if not words:
        raise CommandError(help_text())
    name, args = words[0], {}
    command = BY_NODE.get(name)
    if command is None:
        raise CommandError(f"unknown command {name!r}; {help_text()}")
    known = {f.var for f in command.fields}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in known:
            raise CommandError(f"{name}: expected key=value with key one of "
                               f"{', '.join(sorted(known)) or '(none)'}, not {word!r}")
        args[key] = value
    return name, args


def check_args(command: Command, args: Mapping[str, str]) -> str | None:
    """What is missing, or None."""
    missing = [f.var for f in command.fields if f.required and not args.get(f.var)]
    return f"{command.node}: missing {', '.join(missing)}" if missing else None


def help_text() -> str:
    return "commands: " + ", ".join(
        f"!{c.node}" + "".join(f" {f.var}=" + ("..." if f.required else "[...]")
                              for f in c.fields) for c in COMMANDS)
