"""The daemon's brain without a network: inbound stanza values -> decisions -> outbound messages.

Imports: model, engine, rules, state, functions, wire, config, logs, stdlib.
Never imports slixmpp: xmpp_stanzas.py turns stanzas into `Inbound` values and
xmpp.py sends the `Outbound` values this module returns, so the whole path
from stanza to sends can be tested with plain values.

Order of checks for one inbound stanza (docs/protocol.md):
own stanza -> ignored; sender domain not allowed -> ignored (no reply: it
could be backscatter); error/groupchat messages -> ignored; no payload ->
ignored; undecodable payload -> error reply; an event decided before (an
idempotency record, see rulebot/daemon/ledger.py) -> its recorded messages again;
otherwise the rules decide.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from rulebot.config import Config
from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import Buckets, LiveState, PresenceTable, RelationReader
from rulebot.errors import EventError
from rulebot.logs import LOGGER, fields, log_hot
from rulebot.model import (
    JSON,
    Broadcast,
    Decision,
    Drop,
    Envelope,
    ErrorReply,
    Forward,
    Relate,
    Reply,
    Stanza,
    StateChange,
    Unrelate,
)
from rulebot.rules.functions import bare_jid, split_jid
from rulebot.rules.loader import RuleSet
from rulebot.wire.decode import Encoding, decode_event, error_payload, event_id, presence_event

log = logging.getLogger(LOGGER)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A stanza addressed to the bot, as plain values (built by xmpp_stanzas.py)."""

    kind: Literal["message", "presence"]
    from_: str  # full JID, server-stamped
    type: str
    id: str | None = None
    body: str | None = None
    json: str | None = None  # text of an XEP-0335 <json/> container
    show: str | None = None
    status: str | None = None
    priority: int | None = None


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


class Records(Protocol):
    """The idempotency records (rulebot.daemon.ledger.Ledger). Before deciding, the
    dispatcher asks for an event's record (`recall`: an index in memory; the
    store is read only for a record found); after, a decision without
    relation changes is recorded with `add` (stored before the read's messages
    leave) and one with changes with `commit` (stored with the changes).
    `recall` and `commit` raise on a failing store."""

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
    return info


class Dispatcher:
    """Turns inbound stanzas into outbound messages using the current rule set."""

    def __init__(self, config: Config, current: Callable[[], RuleSet], *,
                 relations: RelationReader | None = None,
                 apply: Callable[[Sequence[StateChange]], None] | None = None,
                 presence: PresenceTable | None = None,
                 records: Records | None = None) -> None:
        self.config = config
        self.current = current
        self.apply = apply
        self.records = records
        self.presence = presence if presence is not None else PresenceTable()
        self.state = LiveState(relations, self.presence, Buckets(time.monotonic))
        self.bot = config.jid
        self.bot_bare = bare_jid(config.jid)
        self.allowed = frozenset(d.lower() for d in config.allowed_domains)

    def handle(self, inbound: Inbound) -> Outcome:
        """Decide on one stanza and log it. Never raises for any stanza content."""
        started = time.perf_counter()
        outcome = self._handle(inbound)
        self.log(inbound, outcome, (time.perf_counter() - started) * 1e6)
        return outcome

    def decide(self, inbound: Inbound) -> Outcome:
        """Decide on one stanza without logging it (the caller logs it with `log`
        once it knows what was sent). Never raises for any stanza content."""
        return self._handle(inbound)

    def _handle(self, inbound: Inbound) -> Outcome:
        local, domain, _ = split_jid(inbound.from_)
        sender = f"{local}@{domain}" if local else domain
        if sender == self.bot_bare:
            return Outcome("ignored", reason="own-stanza")
        if domain.lower() not in self.allowed:
            return Outcome("ignored", reason="domain-not-allowed")
        if not local:
            return Outcome("ignored", reason="not-a-user")  # the server or a component
        ruleset = self.current()
        if inbound.kind == "presence":
            if inbound.type not in ("available", "unavailable"):
                return Outcome("ignored", reason="presence-subscription")
            event = presence_event(inbound.type, inbound.show, inbound.status,
                                   inbound.priority)
            # Rules deciding on this presence already see it in online().
            self.presence.update(inbound.from_, inbound.type == "available")
            return self._decide(inbound, sender, event, self._encoding("body"), ruleset)
        if inbound.type in ("error", "groupchat"):
            return Outcome("ignored", reason=f"{inbound.type}-message")
        if inbound.json is not None:
            text, enc = inbound.json, self._encoding("json")
        elif inbound.body:
            text, enc = inbound.body, self._encoding("body")
        else:
            return Outcome("ignored", reason="no-payload")
        try:
            event = decode_event(text, self.config.limits)
        except EventError as exc:
            meta = Meta(sender, None, ruleset.version, None, inbound.id)
            reply = self._out(inbound, inbound.from_, error_payload(exc.code, exc.message,
                                                                    exc.path), enc, meta, 0)
            return Outcome("rejected", (reply,), reason=exc.code)
        return self._decide(inbound, sender, event, enc, ruleset)

    def _decide(self, inbound: Inbound, sender: str, event: dict[str, JSON], enc: Encoding,
                ruleset: RuleSet) -> Outcome:
        eid = event_id(event)
        eid_text = None if eid is None else str(eid)
        records = self.records
        # Presence is state, not an event to answer once: a re-delivered presence
        # is decided again (its broadcast goes to the friends of now), and a
        # client re-using a presence id must not have its update swallowed.
        key = None if records is None or inbound.kind != "message" else event_key(
            sender, inbound.from_, eid, inbound.id)
        if key is not None:
            assert records is not None
            try:
                recorded = records.recall(key)
            except Exception as exc:
                return self._store_failed(inbound, sender, eid, enc, ruleset.version, exc)
            if recorded is not None:  # delivered again: what its decision sent, again
                return self.duplicate(Outcome("decided", event_id=eid_text, key=key),
                                      recorded)
        env = Envelope(event, sender, inbound.from_,
                       Stanza(inbound.kind, inbound.type, inbound.id), self.bot)
        decision = evaluate(ruleset, env, max_recipients=self.config.max_recipients,
                            state=self.state)
        out: list[Outbound] = []
        for action in decision.actions:
            meta = Meta(sender, action.rule, decision.version, eid_text, inbound.id)
            if isinstance(action, Forward | Broadcast | Reply):
                payload: dict[str, JSON] = action.payload
            elif isinstance(action, ErrorReply):
                payload = error_payload(action.code, action.message, action.path, eid)
            else:
                assert isinstance(action, Drop | Relate | Unrelate)
                continue
            for to in action.to:
                out.append(self._out(inbound, to, payload, enc, meta, len(out)))
        changes = [a for a in decision.actions if isinstance(a, Relate | Unrelate)]
        if changes or key is not None:
            recorded = Recorded(decision.version, decision.matched, tuple(out))
            try:
                if records is not None and changes:
                    # Durable, with the record, before anything that depends on
                    # it is sent; if the store fails, nothing of this decision
                    # is sent but an error to the sender.
                    records.commit(key, recorded, changes)
                elif changes:
                    if self.apply is None:
                        raise RuntimeError("no relationship store is configured")
                    self.apply(changes)
                elif records is not None and key is not None:
                    records.add(key, recorded)  # stored before the read's messages leave
            except Exception as exc:
                failed = self._store_failed(inbound, sender, eid, enc, decision.version, exc)
                return Outcome("failed", failed.outbound, decision, failed.reason, eid_text, env)
        status: Literal["decided", "rejected"] = "decided"
        reason = None
        if decision.actions and isinstance(decision.actions[0], ErrorReply) \
                and decision.actions[0].rule is None:
            status, reason = "rejected", decision.actions[0].code
        return Outcome(status, tuple(out), decision, reason, eid_text, env,
                       key if records is not None else None)

    def _store_failed(self, inbound: Inbound, sender: str, eid: str | int | None,
                      enc: Encoding, version: str, exc: BaseException) -> Outcome:
        log.error("the store failed; decision not carried out", extra=fields(
            event="store_failed", error=f"{type(exc).__name__}: {exc}",
            from_=inbound.from_, stanza_id=inbound.id))
        return Outcome("failed", (self._refusal(inbound, sender, eid, enc, version),),
                       reason="store-unavailable", event_id=None if eid is None else str(eid))

    def _refusal(self, inbound: Inbound, sender: str, eid: str | int | None, enc: Encoding,
                 version: str) -> Outbound:
        meta = Meta(sender, None, version, None if eid is None else str(eid), inbound.id)
        return self._out(inbound, inbound.from_, error_payload(
            "store-unavailable", "the bot could not record this change; try again",
            None, eid), enc, meta, 0)

    @staticmethod
    def duplicate(outcome: Outcome, recorded: Recorded) -> Outcome:
        """The outcome of an event decided before: its recorded messages again."""
        return Outcome("duplicate", recorded.outbound, None, "duplicate", outcome.event_id,
                       key=outcome.key, recorded=recorded)

    def refuse(self, inbound: Inbound, outcome: Outcome) -> Outcome:
        """The outcome to send instead of `outcome` when its idempotency record
        could not be stored: a store-unavailable error to the sender."""
        env = outcome.envelope
        assert env is not None
        assert outcome.decision is not None
        enc = self._encoding("json" if inbound.json is not None else "body")
        reply = self._refusal(inbound, env.sender, event_id(env.event), enc,
                              outcome.decision.version)
        return Outcome("failed", (reply,), outcome.decision, "store-unavailable",
                       outcome.event_id, env)

    def _encoding(self, sent: Encoding) -> Encoding:
        """The encoding of messages this event causes: the sender's, unless configured."""
        configured = self.config.encoding
        return sent if configured == "same" else ("json" if configured == "json" else "body")

    def _out(self, inbound: Inbound, to: str, payload: dict[str, JSON], enc: Encoding,
             meta: Meta, n: int) -> Outbound:
        if inbound.id:
            # Deterministic ids: if the same stanza is processed twice (after a
            # crash), recipients see the same message id and can de-duplicate.
            seed = f"{inbound.from_}\0{inbound.id}\0{n}\0{to}".encode()
            mid = "rb-" + hashlib.sha256(seed).hexdigest()[:20]
        else:
            mid = "rb-" + uuid.uuid4().hex[:20]
        return Outbound(to, payload, enc, self.config.message_type, mid, meta)

    def log(self, inbound: Inbound, outcome: Outcome, micros: float) -> None:
        """The decision line of one stanza (`micros`: the time its decision took)."""
        level = logging.DEBUG if outcome.status == "ignored" and outcome.reason in (
            "no-payload", "presence-subscription") else logging.INFO
        if outcome.status == "ignored" and outcome.reason == "domain-not-allowed":
            level = logging.WARNING
        if not log.isEnabledFor(level):
            return  # building the line costs more than deciding
        info: dict[str, object] = {
            "event": "stanza",
            "status": outcome.status,
            "kind": inbound.kind,
            "stanza_type": inbound.type,
            "stanza_id": inbound.id,
            "from": inbound.from_,
        }
        info.update(summary(outcome))
        if outcome.event_id is not None:
            info["event_id"] = outcome.event_id
        info["micros"] = round(micros, 1)
        log_hot(log, level, f"{inbound.kind} {outcome.status}", info)
