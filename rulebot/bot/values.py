"""The values the bot's brain takes and returns: inbound stanzas, outbound
messages, outcomes, and the idempotency records' keys and contents.

Plain frozen values (no XMPP, no I/O): rulebot.xmpp builds and sends them,
rulebot.bot.dispatch decides, rulebot.daemon logs, counts and records them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from rulebot.engine.compare import Difference
from rulebot.model import JSON, Decision, Envelope, StateChange
from rulebot.wire.encode import Encoding


@dataclass(frozen=True, slots=True)
class Inbound:
    """A stanza addressed to the bot, as plain values (built by xmpp/stanzas.py)."""

    kind: Literal["message", "presence", "timer"]
    from_: str  # full JID, server-stamped (a timer: its sender's bare JID)
    type: str
    id: str | None = None
    body: str | None = None
    json: str | None = None  # text of an XEP-0335 <json/> container
    #: the message's child elements outside jabber:client, the XEP-0335
    #: container and receipts (xml.etree elements, not to be changed): where
    #: an XML event is looked for (rulebot.wire.xmlmap)
    elements: tuple[Any, ...] = ()
    show: str | None = None
    status: str | None = None
    priority: int | None = None
    #: the message asked for an XEP-0184 receipt: sent once its outcome is
    #: acted on (the end-to-end acknowledgement of component mode, protocol.md)
    receipt: bool = False
    #: a timer: {key, due, scheduled, rule} (body: its event's JSON text)
    timer: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class Meta:
    """What tells a recipient where a message came from (the <rulebot/> element)."""

    sender: str
    rule: str | None
    version: str
    event_id: str | None
    stanza_id: str | None = None  # the inbound stanza this answers or routes


@dataclass(frozen=True, slots=True)
class Outbound:
    to: str
    payload: dict[str, JSON]
    encoding: Encoding
    type: str
    id: str
    meta: Meta


class EventKey(NamedTuple):
    """An inbound event's identity for its idempotency record (event_key). A
    tuple: hashed in C, it is the key of the ledger's index in memory."""

    sender: str
    key: str


_new_key = tuple.__new__
_intern = sys.intern


def event_key(sender: str, from_: str, event: str | int | None,
              stanza_id: str | None) -> EventKey | None:
    """Who sent the event (as the server stamped it) and which event it is: its
    own "id" for its sender's bare JID (a resend from another resource or
    connection is the same event), else the stanza id for the full JID (stanza
    ids are unique per connection at best). None when it has neither.
    `sender` is the bare JID of `from_`."""
    # tuple.__new__: EventKey(...) would run NamedTuple's __new__ in Python.
    if event is not None:
        # An integer id and its decimal text are different events. The sender
        # interned: the ledger keeps thousands of keys of a few senders.
        return _new_key(EventKey, (_intern(sender.lower()), ("n:" + str(event))
                                   if isinstance(event, int) else "e:" + event))
    if stanza_id:
        return _new_key(EventKey, (from_, "s:" + stanza_id))
    return None


class Recorded(NamedTuple):
    """What one decision produced, as its idempotency record keeps it (a tuple:
    one is made per decided event, and a tuple is the cheapest frozen value)."""

    version: str
    matched: tuple[str, ...]
    outbound: tuple[Outbound, ...]


class Overtaken(Exception):  # an outcome, not an error: outside errors.RulebotError
    """Raised by Records.commit: another worker recorded this event first (a
    resend reached both); nothing of this decision was stored or applied.
    `recorded` is the other worker's record, to be sent instead."""

    def __init__(self, recorded: Recorded) -> None:
        super().__init__("recorded first by another worker")
        self.recorded = recorded


class Records(Protocol):
    """The idempotency records (rulebot.daemon.ledger.Ledger). Before deciding, the
    dispatcher asks for an event's record (`recall`: an index in memory; the
    store is read only for a record found); after, a decision without
    relation changes is recorded with `add` (stored before the read's messages
    leave) and one with changes with `commit` (stored with the changes).
    `recall` and `commit` raise on a failing store; `commit` raises Overtaken
    when another worker recorded the event first."""

    def recall(self, key: EventKey) -> Recorded | None: ...
    def add(self, key: EventKey, recorded: Recorded) -> None: ...
    def commit(self, key: EventKey | None, recorded: Recorded,
               changes: Sequence[StateChange]) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything one inbound stanza led to: for the sender, the logs and the tests."""

    status: Literal["decided", "rejected", "ignored", "failed", "duplicate"]
    outbound: tuple[Outbound, ...] = ()
    decision: Decision | None = None
    reason: str | None = None  # why it was ignored or rejected (an error code)
    event_id: str | None = None  # the event's own "id", when it has one
    envelope: Envelope | None = None  # what the rules saw (for traces)
    key: EventKey | None = None  # its idempotency record's key, when one was made
    recorded: Recorded | None = None  # a duplicate's record
    error: str | None = None  # why the store failed ("failed": the daemon logs it)
    #: shadow mode: how the candidate rule set's decision differs (None: no
    #: candidate decided this event; empty: it decided the same)
    shadow: Difference | None = None


def summary(outcome: Outcome) -> dict[str, object]:
    """What the decision log and the audit trail record of an outcome (no payloads)."""
    info: dict[str, object] = {}
    if outcome.reason:
        info["reason"] = outcome.reason
    if outcome.recorded is not None:  # a duplicate: what its first decision did
        info["version"] = outcome.recorded.version
        info["matched"] = list(outcome.recorded.matched)
        info["sent_again"] = len(outcome.outbound)
    decision = outcome.decision
    if decision is not None:
        info["version"] = decision.version
        info["matched"] = list(decision.matched)
        info["actions"] = [{"type": a.type, "to": list(a.to), "rule": a.rule}
                           for a in decision.actions]
        if decision.errors:
            info["rule_errors"] = [{"rule": e.rule, "message": e.message}
                                   for e in decision.errors]
        if decision.silenced:
            info["silenced"] = list(decision.silenced)
    return info
