"""The daemon's brain without a network: inbound stanza values -> decisions -> outbound messages.

Sans-IO: never imports slixmpp, never logs (import-linter checks both).
rulebot.xmpp.stanzas turns stanzas into `Inbound` values and
rulebot.xmpp.connection sends the `Outbound` values this module returns, so
the whole path from stanza to sends can be tested with plain values.

Order of checks for one inbound stanza (docs/protocol.md):
own stanza -> ignored; sender domain not allowed -> ignored (no reply: it
could be backscatter); error/groupchat messages -> ignored; no payload ->
ignored; undecodable payload -> error reply; an event decided before (an
idempotency record, see rulebot/daemon/ledger.py) -> its recorded messages again;
otherwise the rules decide.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from rulebot.bot.values import (
    EventKey,
    Inbound,
    Meta,
    Outbound,
    Outcome,
    Overtaken,
    Recorded,
    Records,
    event_key,
)
from rulebot.engine.compare import Difference, compare, view
from rulebot.engine.evaluate import evaluate
from rulebot.engine.state import (
    Buckets,
    LiveState,
    Presence,
    PresenceTable,
    RelationReader,
    ShadowState,
    TokenBuckets,
)
from rulebot.errors import EventError, StoreUnavailable
from rulebot.jid import bare_jid, split_jid
from rulebot.model import (
    CHANGE_TYPES,
    JSON,
    Broadcast,
    Decision,
    Drop,
    Envelope,
    ErrorReply,
    Forward,
    Reply,
    Stanza,
    StateChange,
)
from rulebot.rules.ruleset import RuleSet
from rulebot.rules.silences import Muting
from rulebot.wire.decode import Limits, decode_event, event_id, presence_event
from rulebot.wire.encode import Encoding, error_payload
from rulebot.wire.xmlmap import read_event, split_tag


class Settings(Protocol):
    """The settings the dispatcher reads (rulebot.config.Config has them all; the
    bot does not depend on the rest of the daemon's configuration)."""

    @property
    def jid(self) -> str: ...
    @property
    def allowed_domains(self) -> tuple[str, ...]: ...
    @property
    def limits(self) -> Limits: ...
    @property
    def max_recipients(self) -> int: ...
    @property
    def message_type(self) -> str: ...
    @property
    def encoding(self) -> Literal["same", "body", "json"]: ...
    @property
    def timers_per_sender(self) -> int: ...
    @property
    def timers_total(self) -> int: ...


#: The difference of two decisions that match and act alike.
SAME = Difference((), (), (), (), ())


class Dispatcher:
    """Turns inbound stanzas into outbound messages using the current rule set."""

    def __init__(self, config: Settings, current: Callable[[], RuleSet], *,
                 relations: RelationReader | None = None,
                 apply: Callable[[Sequence[StateChange]], None] | None = None,
                 presence: Presence | None = None,
                 records: Records | None = None,
                 buckets: TokenBuckets | None = None,
                 clock: Callable[[], float] = time.time,
                 shadow: Callable[[], RuleSet | None] | None = None,
                 silences: Callable[[], Sequence[Muting]] | None = None) -> None:
        """`buckets`: where rate limits take their tokens (default: in memory,
        per process; the daemon passes the store's when several workers run).
        `clock`: the `now` each decision sees (seconds since 1970, UTC).
        `shadow`: the candidate rule set (shadow mode), decided beside the live
        one on every event the rules decide and never enforced; the outcome
        carries the difference."""
        self.clock = clock
        self.shadow = shadow
        #: the silences in force (the daemon's, read from the store)
        self.silences: Callable[[], Sequence[Muting]] = silences or (lambda: ())
        self.config = config
        self.current = current
        self.apply = apply
        self.records = records
        self.presence: Presence = presence if presence is not None else PresenceTable()
        self.state = LiveState(relations, self.presence,
                               buckets if buckets is not None else Buckets(time.monotonic),
                               (config.timers_per_sender, config.timers_total),
                               time.monotonic)
        self.shadow_state = ShadowState(self.state, time.monotonic)
        self.bot = config.jid
        self.bot_bare = bare_jid(config.jid)
        self.allowed = frozenset(d.lower() for d in config.allowed_domains)

    def handle(self, inbound: Inbound) -> Outcome:
        """Decide on one stanza. Never raises for any stanza content; logs
        nothing (the daemon writes the decision line once it knows what was sent)."""
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
            try:
                self.presence.update(inbound.from_, inbound.type == "available")
            except StoreUnavailable as exc:
                return self._store_failed(inbound, sender, None, self._encoding("body"),
                                          ruleset.version, exc)
            return self._decide(inbound, sender, event, self._encoding("body"), ruleset)
        if inbound.kind == "timer":
            # A timer the rules scheduled, fed back: its event was checked when
            # it was scheduled; decoding it again keeps the limits.
            try:
                event = decode_event(inbound.body or "{}", self.config.limits)
            except EventError:
                return Outcome("ignored", reason="timer-unreadable")
            return self._decide(inbound, sender, event, self._encoding("body"), ruleset)
        if inbound.type in ("error", "groupchat"):
            return Outcome("ignored", reason=f"{inbound.type}-message")
        element = xml_event(inbound, ruleset)
        try:
            if element is not None:
                enc = self._encoding(element.tag)
                event = read_event(element, self.config.limits)
            elif inbound.json is not None:
                enc = self._encoding("json")
                event = decode_event(inbound.json, self.config.limits)
            elif inbound.body:
                enc = self._encoding("body")
                event = decode_event(inbound.body, self.config.limits)
            else:
                return Outcome("ignored", reason="no-payload")
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
        key = None
        if records is not None and inbound.kind == "message":
            key = event_key(sender, inbound.from_, eid, inbound.id)
        elif records is not None and inbound.kind == "timer":
            # One firing of one timer: a re-fire (its taker died before
            # forgetting it) is answered from the record of the first.
            key = EventKey(sender, f"t:{inbound.id}")
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
                       Stanza(inbound.kind, inbound.type, inbound.id), self.bot, self.clock(),
                       inbound.timer)
        try:
            decision = evaluate(ruleset, env, max_recipients=self.config.max_recipients,
                                silences=self.silences(),
                                state=self.state)
        except StoreUnavailable as exc:
            return self._store_failed(inbound, sender, eid, enc, ruleset.version, exc)
        # Before this decision's changes are stored: both sets see the same state.
        shadow = self._shadow(env, decision) if self.shadow is not None else None
        out: list[Outbound] = []
        for action in decision.actions:
            meta = Meta(sender, action.rule, decision.version, eid_text, inbound.id)
            if isinstance(action, Forward | Broadcast | Reply):
                payload: dict[str, JSON] = action.payload
            elif isinstance(action, ErrorReply):
                payload = error_payload(action.code, action.message, action.path, eid)
            else:
                assert isinstance(action, (Drop, *CHANGE_TYPES))
                continue
            for to in action.to:
                out.append(self._out(inbound, to, payload, enc, meta, len(out)))
        changes = [a for a in decision.actions if isinstance(a, CHANGE_TYPES)]
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
            except Overtaken as over:  # its changes were not applied: theirs were
                return self.duplicate(Outcome("decided", event_id=eid_text, key=key),
                                      over.recorded)
            except Exception as exc:
                failed = self._store_failed(inbound, sender, eid, enc, decision.version, exc)
                return Outcome("failed", failed.outbound, decision, failed.reason, eid_text, env,
                               error=failed.error)
        status: Literal["decided", "rejected"] = "decided"
        reason = None
        if decision.actions and isinstance(decision.actions[0], ErrorReply) \
                and decision.actions[0].rule is None:
            status, reason = "rejected", decision.actions[0].code
        return Outcome(status, tuple(out), decision, reason, eid_text, env,
                       key if records is not None else None, shadow=shadow)

    def _shadow(self, env: Envelope, decision: Decision) -> Difference | None:
        assert self.shadow is not None
        candidate = self.shadow()
        if candidate is None:
            return None
        try:
            other = evaluate(candidate, env, max_recipients=self.config.max_recipients,
                             silences=self.silences(),
                             state=self.shadow_state)
        except StoreUnavailable:
            return None  # the live decision meets the same store, and fails alone
        if other.matched == decision.matched and other.actions == decision.actions:
            return SAME  # the usual case, without rendering either decision
        return compare(view(decision), view(other))

    def _store_failed(self, inbound: Inbound, sender: str, eid: str | int | None,
                      enc: Encoding, version: str, exc: BaseException) -> Outcome:
        return Outcome("failed", (self._refusal(inbound, sender, eid, enc, version),),
                       reason="store-unavailable", event_id=None if eid is None else str(eid),
                       error=f"{type(exc).__name__}: {exc}")

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
        element = xml_event(inbound, self.current())
        enc = self._encoding(element.tag if element is not None
                             else "json" if inbound.json is not None else "body")
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


def xml_event(inbound: Inbound, ruleset: RuleSet) -> Any | None:
    """The message's XML event: its first child element that the rule set
    declares (`xml_events:` namespace -> local name), if any. It is taken
    before a <json/> container or a <body/>, which may be there as fallbacks
    for clients that do not read it."""
    declared = ruleset.xml_events
    if not declared:
        return None
    for element in inbound.elements:
        ns, local = split_tag(element.tag)
        if declared.get(ns) == local:
            return element
    return None

