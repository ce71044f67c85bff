"""Frozen values shared by every layer: issues, envelopes, actions, decisions.

Compiled rule sets live in rules/ruleset.py,
because they hold compiled JMESPath expressions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias

#: Any value JSON can carry (what json.loads returns).
JSON: TypeAlias = Any

Severity = Literal["error", "warning"]

@dataclass(frozen=True, slots=True)
class Issue:
    """One located problem in a rule or config file."""

    file: str
    line: int  # 1-based; 0 when the problem has no place in a file
    col: int  # 1-based
    path: str  # dotted path in the document, e.g. rules[2].actions[0].forward.to
    message: str
    value: str | None = None  # the offending value, already shortened for display
    severity: Severity = "error"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.col, self.path, self.message)

    def format(self) -> str:
        # Line 0: about the file as a whole (a secret it names is not set), not a place in it.
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        prefix = "warning: " if self.severity == "warning" else ""
        path = f" {self.path}:" if self.path else ""
        value = f" ({self.value})" if self.value is not None else ""
        return f"{where}:{path} {prefix}{self.message}{value}"

    def to_json(self) -> dict[str, JSON]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
            "value": self.value,
        }


def shorten(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, "..." marking the cut: how a value or
    an error is quoted in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_value(value: object, limit: int = 60) -> str:
    """The short display form of an offending value used in issue messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text, limit)


#: "timer": not a stanza, a timer the rules scheduled, fed back when due.
StanzaKind = Literal["message", "presence", "timer"]


@dataclass(frozen=True, slots=True)
class Stanza:
    """What the rules may know about the stanza that carried the event."""

    kind: StanzaKind
    type: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event as the engine sees it.

    `sender` and `from_` come from the stanza's server-stamped `from`
    attribute only, never from the payload.
    """

    event: Mapping[str, JSON]
    sender: str  # bare JID
    from_: str  # full JID
    stanza: Stanza
    bot: str  # the bot's own bare JID (or component domain)
    #: The decision's clock, seconds since 1970 (UTC): the daemon's time at
    #: receipt, or the frozen clock of eval/explain/test. None: no clock (the
    #: expressions' `now` is null and within() fails).
    now: float | None = None
    #: A timer's envelope: {key, due, scheduled, rule} (stanza.kind "timer"); else None.
    timer: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    to: tuple[str, ...]
    payload: JSON
    rule: str
    type: Literal["forward"] = "forward"


@dataclass(frozen=True, slots=True)
class Broadcast:
    to: tuple[str, ...]
    payload: JSON
    rule: str
    type: Literal["broadcast"] = "broadcast"


@dataclass(frozen=True, slots=True)
class Reply:
    to: tuple[str, ...]  # the sender's full JID
    payload: JSON
    rule: str
    type: Literal["reply"] = "reply"


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A structured error sent back to the sender (see wire.error_payload)."""

    to: tuple[str, ...]
    code: str
    message: str
    path: str | None
    rule: str | None  # None when rulebot itself (not a rule) rejected the event
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str | None
    rule: str | None
    type: Literal["drop"] = "drop"
    to: tuple[str, ...] = ()


#: How stores write times (`created`, `expires`): text that sorts as time does.
STORE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


#: 10000-01-01T00:00:00Z: later times have no ISO text (stamp raises).
LATEST = 253_402_300_800.0


def line_time(epoch: float) -> str:
    """Seconds since 1970 as the time of a log, audit or archive line:
    2026-12-01T09:00:00.123Z (milliseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + \
        f".{int(epoch % 1 * 1000):03d}Z"


def stamp(epoch: float) -> str:
    """Seconds since 1970 as a store time: 2026-12-01T09:00:00.000000Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime(STORE_TIME)


@dataclass(frozen=True, slots=True)
class Relation:
    """One stored, directed relation: the row type of every relationship store
    (SQLite, PostgreSQL, the in-memory one of eval and test). `created` is
    ISO 8601 UTC, empty until a store writes the row; `expires` too, or None
    for a relation that does not expire (reads never return an expired one)."""

    subject: str
    object: str
    kind: str
    attrs: Mapping[str, JSON] = field(default_factory=dict)
    created: str = ""
    expires: str | None = None

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"subject": self.subject, "object": self.object,
                                "kind": self.kind, "attrs": dict(self.attrs),
                                "created": self.created}
        if self.expires is not None:
            out["expires"] = self.expires
        return out


@dataclass(frozen=True, slots=True)
class Relate:
    """Store a relation (both directions when mutual); applied before any send."""

    subject: str  # lower-case bare JIDs
    object: str
    kind: str
    attrs: JSON
    mutual: bool
    rule: str
    type: Literal["relate"] = "relate"
    to: tuple[str, ...] = ()
    expires: float | None = None  # seconds since 1970 (ttl/until); None: never


@dataclass(frozen=True, slots=True)
class Unrelate:
    subject: str
    object: str
    kind: str
    mutual: bool
    rule: str
    type: Literal["unrelate"] = "unrelate"
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Count:
    """Add `by` to windowed counter `counter` for `key` (each count ages out of
    the counter's window; see rules.ruleset.CounterSpec)."""

    counter: str
    key: str
    by: int
    rule: str
    type: Literal["count"] = "count"
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reset:
    """Forget every count of counter `counter` for `key`."""

    counter: str
    key: str
    rule: str
    type: Literal["reset"] = "reset"
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Schedule:
    """Feed `event` back into the rules at `due` (seconds since 1970), as a
    timer of the deciding event's sender; a timer of the same key is replaced."""

    key: str
    due: float
    event: JSON
    rule: str
    sender: str = ""  # whose timer: the deciding event's sender (bare JID)
    type: Literal["schedule"] = "schedule"
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cancel:
    """Forget the timer of that key, if there is one."""

    key: str
    rule: str
    type: Literal["cancel"] = "cancel"
    to: tuple[str, ...] = ()


Action: TypeAlias = (Forward | Broadcast | Reply | ErrorReply | Drop | Relate | Unrelate
                     | Count | Reset | Schedule | Cancel)
#: What a decision changes in the store: relations, counters and timers (applied
#: with the decision's idempotency record, in one transaction).
StateChange: TypeAlias = Relate | Unrelate | Count | Reset | Schedule | Cancel
CHANGE_TYPES = (Relate, Unrelate, Count, Reset, Schedule, Cancel)


def directions(change: Relate | Unrelate) -> list[tuple[str, str]]:
    """The (subject, object) rows a change touches: a mutual relation is two rows."""
    pairs = [(change.subject, change.object)]
    if change.mutual:
        pairs.append((change.object, change.subject))
    return pairs


@dataclass(frozen=True, slots=True)
class RuleError:
    """A runtime error inside one rule; that rule was treated as not matching."""

    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What the engine decided for one envelope. The caller performs it."""

    version: str
    matched: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    errors: tuple[RuleError, ...] = ()
    notes: tuple[str, ...] = field(default=())  # e.g. "default applied"
    #: ids of the silences that changed this decision (a muted rule that
    #: matched and was skipped, or the event dropped before any rule)
    silenced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Silence:
    """An operator's mute (rulebot silence add, docs/silences.md): until
    `ends`, a rule (`rule`), the events of a sender (`sender`), of an
    expression (`match`, JMESPath over the envelope), or a rule for some of
    them only (`rule` with `sender` or `match`). Times are Unix seconds."""

    id: str
    ends: float
    author: str
    comment: str
    rule: str | None = None
    sender: str | None = None  # a bare JID
    match: str | None = None
    starts: float = 0.0
    created: float = 0.0

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"id": self.id}
        for key in ("rule", "sender", "match"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update({"starts": stamp(self.starts), "ends": stamp(self.ends),
                    "author": self.author, "comment": self.comment,
                    "created": stamp(self.created)})
        return out
