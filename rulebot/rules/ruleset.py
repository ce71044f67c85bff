"""A compiled rule set's types: what the loader builds and the engine evaluates.

Frozen values only; the loader (rules.loader) is the one place that makes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import jsonschema

from rulebot.model import JSON
from rulebot.rules.expr import Expr
from rulebot.rules.index import RuleIndex, linear_index
from rulebot.rules.jpcompile import Runtime
from rulebot.rules.timefns import Interval

ActionKind = Literal["forward", "broadcast", "reply", "error", "drop", "relate", "unrelate",
                     "count", "reset", "schedule", "cancel"]


@dataclass(frozen=True, slots=True)
class LiteralParam:
    value: JSON


Param = Expr | LiteralParam


@dataclass(frozen=True, slots=True)
class ActionSpec:
    kind: ActionKind
    to: Param | None = None
    payload: Param | None = None  # None: the event itself (forward/broadcast)
    include_sender: bool = False
    code: str | None = None
    message: str | None = None
    reason: str | None = None
    subject: Param | None = None  # relate/unrelate; None: the sender
    object: Param | None = None
    relation: str | None = None  # the relation kind
    attrs: Param | None = None
    mutual: bool = False
    ttl: Param | None = None  # relate: a duration from the event's now
    until: Param | None = None  # relate: an instant
    counter: str | None = None  # count/reset: the counter's name
    key: Param | None = None  # count/reset/schedule/cancel: the key (an expression)
    by: int = 1  # count: how much
    after: Param | None = None  # schedule: a duration from the event's now
    at: Param | None = None  # schedule: an instant
    event: Param | None = None  # schedule: what is fed back (default: the event)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Expr | None
    actions: tuple[ActionSpec, ...]
    cont: bool = False
    enabled: bool = True
    description: str = ""
    file: str = "<inline>"
    line: int = 0
    col: int = 0
    where: str = ""  # the rule's path in its file, e.g. rules[3]


@dataclass(frozen=True, slots=True)
class RateSpec:
    """A token bucket: `burst` tokens, refilled at `per_second` tokens per second."""

    per_second: float
    burst: int


class FastValidator(Protocol):
    """A compiled event schema that answers "valid?" quickly (jsonschema-rs)."""

    def is_valid(self, instance: Any) -> bool: ...
    def iter_errors(self, instance: Any) -> Iterator[Any]: ...


@dataclass(frozen=True, slots=True)
class EventTypes:
    discriminator: str
    unknown: Literal["allow", "reject"]
    validators: Mapping[str, jsonschema.Draft202012Validator]
    # The same schemas compiled by jsonschema-rs where it accepts them: its
    # verdict decides, the validator writes the message (rules/events docs).
    fast: Mapping[str, FastValidator] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleSet:
    """A compiled, validated, immutable rule set. Evaluate it with engine.evaluate."""

    rules: tuple[Rule, ...]
    lists: Mapping[str, list[str]]  # lists (not tuples): JMESPath projects only lists
    events: EventTypes | None
    default: Literal["drop", "error"]
    version: str
    files: tuple[str, ...]
    list_sets: Mapping[str, frozenset[str]] = field(repr=False, compare=False)
    rate_limits: Mapping[str, RateSpec] = field(repr=False, compare=False)
    # Which rules an event can match, found from its keys (rules.index).
    index: RuleIndex = field(repr=False, compare=False)
    discriminator: str = "type"
    #: named time intervals (`intervals:`; within())
    intervals: Mapping[str, Interval] = field(default_factory=dict, repr=False, compare=False)
    #: windowed counters (`counters:`): name -> window in seconds
    counters: Mapping[str, float] = field(default_factory=dict, repr=False, compare=False)
    #: XML events (`xml_events:`): namespace -> the event element's local name
    xml_events: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # engine.evaluate.runtime_for's cache: state view id -> (view, runtime). The
    # only mutable part, and only a memo of values computed from the rest.
    runtimes: dict[int, tuple[Any, Runtime]] = field(default_factory=dict, init=False,
                                                     repr=False, compare=False)

    def linear(self) -> RuleSet:
        """The same rule set without its index: every enabled rule tried for every
        event (what the index is checked and measured against)."""
        return replace(self, index=linear_index(self.rules))
