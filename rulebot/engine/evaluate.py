"""The pure evaluation: (compiled rule set, envelope) -> Decision.

No I/O, no
logging, no clock, no asyncio, no slixmpp: the caller performs the decision.

Semantics (docs/rules.md): rules are tried in order; the first matching rule
ends evaluation unless it has `continue: true`; a `drop` always ends it. A
runtime error in a rule's `match` or in computing one of its actions is
recorded on the decision and that rule counts as not matching.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import cast

from jsonschema.exceptions import best_match

from rulebot.errors import StoreUnavailable
from rulebot.jid import bare_jid, norm_bare, valid_jid
from rulebot.model import (
    JSON,
    Action,
    Broadcast,
    Cancel,
    Count,
    Decision,
    Drop,
    Envelope,
    ErrorReply,
    Forward,
    Relate,
    Reply,
    Reset,
    RuleError,
    Schedule,
    Unrelate,
    shorten,
)
from rulebot.rules.functions import RuleFunctions, StateView, counter_key
from rulebot.rules.jpcompile import Runtime, is_false
from rulebot.rules.ruleset import ActionSpec, LiteralParam, Param, Rule, RuleSet
from rulebot.rules.silences import Muting
from rulebot.rules.timefns import TimeError, now_data, parse_duration, to_epoch

#: Default cap on the recipients of one action (a broadcast to a huge list is
#: an amplification attack or a mistake; either way refuse it visibly).
MAX_RECIPIENTS = 10_000

class _RuleFailed(Exception):
    """One rule's action could not be computed; internal to this module."""


def envelope_data(ruleset: RuleSet, env: Envelope) -> dict[str, JSON]:
    """The JSON document every expression is evaluated against."""
    stanza: dict[str, JSON] = {"kind": env.stanza.kind, "type": env.stanza.type,
                               "id": env.stanza.id}
    return {
        "event": env.event,
        "sender": env.sender,
        "from": env.from_,
        "stanza": stanza,
        "lists": ruleset.lists,
        "bot": env.bot,
        "now": None if env.now is None else now_data(env.now),
        "timer": env.timer,
    }


def runtime_for(ruleset: RuleSet, state: StateView | None, now: float | None = None
                ) -> Runtime:
    """What compiled expressions need for one evaluation: rulebot's functions
    bound to the rule set's lists, rate limits and intervals, to the state view
    and to the event's clock.

    Kept on the rule set per state view (the daemon passes the same one for
    every event): building it was a tenth of a decision's time. So the clock
    is set on it for each evaluation (evaluations do not interleave)."""
    cache = ruleset.runtimes
    held = cache.get(id(state))
    if held is not None and held[0] is state:
        cast(RuleFunctions, held[1].functions).now = now
        return held[1]
    functions = RuleFunctions(ruleset.list_sets, state, ruleset.rate_limits,
                              ruleset.intervals, ruleset.counters)
    functions.now = now
    runtime = Runtime(functions)
    if len(cache) >= 4:  # a few views at most (tests make many): keep it small
        cache.clear()
    cache[id(state)] = (state, runtime)  # the view is held, so its id is not reused
    return runtime


def truthy(value: JSON) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; 0 is true
    (the one definition is jpcompile.is_false, which compiled `!x`, `&&` and
    `||` use)."""
    return not is_false(value)


def evaluate(ruleset: RuleSet, env: Envelope, *, max_recipients: int = MAX_RECIPIENTS,
             state: StateView | None = None, silences: Sequence[Muting] = ()) -> Decision:
    """Decide what to do with one event. Never raises for any event content.

    `state` is the read-only view of relationships and presence that the
    relationship functions read; changes come back as Relate/Unrelate actions.
    `silences`: the operators' mutes; one without a rule that selects the
    event drops it before any rule (and before its schema is checked: a muted
    flood gets no answers), one with a rule skips that rule."""
    event = env.event
    data: dict[str, JSON] | None = None
    muted: Mapping[str, str] = {}
    if silences:
        data = envelope_data(ruleset, env)
        dropped, muted = applying(silences, env, data, runtime_for(ruleset, state, env.now))
        if dropped is not None:
            return Decision(ruleset.version, (), (Drop(f"silenced: {dropped}", None),), (),
                            ("silenced",), (dropped,))
    disc_value = event.get(ruleset.discriminator) if isinstance(event, Mapping) else None
    if ruleset.events is not None and env.stanza.kind == "message":
        rejected = _check_type(ruleset, env, disc_value)
        if rejected is not None:
            return rejected
    if data is None:
        data = envelope_data(ruleset, env)
    candidates = ruleset.index.candidates(data)
    runtime = runtime_for(ruleset, state, env.now)
    silenced: list[str] = []
    matched: list[str] = []
    actions: list[Action] = []
    errors: list[RuleError] = []
    rules = ruleset.rules
    for index, match in candidates:
        rule = rules[index]
        try:
            # `match`: what the index has not already found true of rule.match.
            if match is not None and is_false(match(data, runtime)):
                continue
            if muted and rule.name in muted:  # it matches, and is silenced
                silenced.append(muted[rule.name])
                continue
            produced = [_action(spec, rule, env, data, runtime, max_recipients)
                        for spec in rule.actions]
        except _RuleFailed as exc:
            errors.append(RuleError(rule.name, str(exc)))
            continue
        except StoreUnavailable:
            raise  # the state could not be read: no decision at all (the caller refuses)
        except Exception as exc:  # any failure of one rule is data, never a crash
            errors.append(RuleError(rule.name, _describe(exc)))
            continue
        matched.append(rule.name)
        actions.extend(produced)
        if not rule.cont or any(isinstance(a, Drop) for a in produced):
            break
    notes: tuple[str, ...] = ()
    if not matched:
        notes = ("no rule matched",)
        actions.append(_default(ruleset, env))
    return Decision(ruleset.version, tuple(matched), tuple(actions), tuple(errors), notes,
                    tuple(dict.fromkeys(silenced)))


def applying(silences: Sequence[Muting], env: Envelope, data: Mapping[str, JSON],
             runtime: Runtime) -> tuple[str | None, dict[str, str]]:
    """Of the silences active at the event's time (all, without a time) that
    select it: the first without a rule (the event is dropped), and each
    muted rule with the silence muting it. A silence whose expression fails
    on the event does not select it."""
    muted: dict[str, str] = {}
    sender = norm_bare(env.sender)  # as the silences' senders are kept
    for muting in silences:
        silence = muting.silence
        if env.now is not None and not silence.active(env.now):
            continue
        if muting.sender is not None and muting.sender != sender:
            continue
        if muting.match is not None:
            try:
                if is_false(muting.match.run(data, runtime)):
                    continue
            except Exception:  # a failing silence expression mutes nothing
                continue
        if silence.rule is None:
            return silence.id, muted
        muted.setdefault(silence.rule, silence.id)
    return None, muted


def _default(ruleset: RuleSet, env: Envelope) -> Action:
    if ruleset.default == "error" and env.stanza.kind == "message":
        return ErrorReply((env.from_,), "no-rule", "no rule handles this event", None, None)
    return Drop("no rule matched", None)


def _check_type(ruleset: RuleSet, env: Envelope, type_value: JSON) -> Decision | None:
    events = ruleset.events
    assert events is not None
    validator = events.validators.get(type_value) if isinstance(type_value, str) else None
    if validator is None:
        if events.unknown == "allow":
            return None
        shown = shorten(repr(type_value)) if type_value is not None else "missing"
        reply = ErrorReply((env.from_,), "unknown-event-type",
                           f"unknown event type {shown} in field {events.discriminator!r}",
                           f"/{events.discriminator}", None)
        return Decision(ruleset.version, (), (reply,), (), ("event type rejected",))
    fast = events.fast.get(type_value)
    try:
        # The verdict is jsonschema-rs's where it compiled the schema; only a
        # failing event pays for jsonschema's error search, which writes the
        # message. Where the two differ (a pattern's $ before a final newline:
        # ECMA 262, as JSON Schema says, against Python's re), jsonschema finds
        # nothing and jsonschema-rs's own first error is the message.
        if fast is not None:
            if fast.is_valid(env.event):
                return None
        elif validator.is_valid(env.event):
            return None
        error = best_match(validator.iter_errors(env.event))
        if error is not None:
            message, where = error.message, list(error.absolute_path)
        else:
            assert fast is not None
            first = next(iter(fast.iter_errors(env.event)))
            message, where = first.message, list(first.instance_path)
    except Exception as exc:  # a schema that cannot be applied is the operator's bug
        reply = ErrorReply((env.from_,), "schema-error",
                           f"the event schema for {type_value!r} cannot be applied: "
                           f"{shorten(str(exc), 120)}", None, None)
        return Decision(ruleset.version, (), (reply,), (), ("event schema failed",))
    pointer = "".join(f"/{_escape(p)}" for p in where)
    reply = ErrorReply((env.from_,), "invalid-event",
                       f"event of type {type_value!r} does not match its schema: "
                       f"{shorten(message)}", pointer, None)
    return Decision(ruleset.version, (), (reply,), (), ("event failed its schema",))


def _escape(part: object) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")




def _describe(exc: Exception) -> str:
    return shorten(f"{type(exc).__name__}: {exc}")


def _value(param: Param, data: Mapping[str, JSON], runtime: Runtime) -> JSON:
    if isinstance(param, LiteralParam):
        return param.value
    return param.fn(data, runtime)  # Expr.run without the extra call


def _payload(spec: ActionSpec, env: Envelope, data: Mapping[str, JSON], runtime: Runtime) -> JSON:
    payload = env.event if spec.payload is None else _value(spec.payload, data, runtime)
    if not isinstance(payload, dict):
        raise _RuleFailed(f"{spec.kind}: payload must be a JSON object, got "
                          f"{shorten(repr(payload), 60)}")
    return payload


def _jids(spec: ActionSpec, env: Envelope, data: Mapping[str, JSON], runtime: Runtime,
          cap: int) -> tuple[str, ...]:
    assert spec.to is not None
    raw = _value(spec.to, data, runtime)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise _RuleFailed(f"{spec.kind}: 'to' must be a JID or a list of JIDs, got "
                          f"{shorten(repr(raw), 60)}")
    if len(raw) > cap:
        raise _RuleFailed(f"{spec.kind}: {len(raw)} recipients exceed the cap of {cap}")
    out: dict[str, None] = {}
    bot = _lower_bare(env.bot)
    sender = env.sender.lower()
    for jid in raw:
        bare = _lower_bare(jid) if type(jid) is str and len(jid) <= _CACHED else None
        if bare is None:
            if not valid_jid(jid):
                raise _RuleFailed(f"{spec.kind}: not a JID: {shorten(repr(jid), 60)}")
            bare = bare_jid(jid).lower()
        if bare == bot:
            continue  # loop guard: the bot never sends to itself
        if spec.kind == "broadcast" and not spec.include_sender and bare == sender:
            continue
        out[jid] = None
    return tuple(out)


#: JIDs up to this length have their check cached (recipients repeat: lists,
#: rooms' members); the bound keeps the cache under a few megabytes.
_CACHED = 256


@functools.lru_cache(maxsize=8192)
def _lower_bare(jid: str) -> str | None:
    """The lower-case bare JID of a valid JID, None for an invalid one."""
    return bare_jid(jid).lower() if valid_jid(jid) else None


def _action(spec: ActionSpec, rule: Rule, env: Envelope, data: Mapping[str, JSON],
            runtime: Runtime, cap: int) -> Action:
    kind = spec.kind
    if kind == "forward":
        return Forward(_jids(spec, env, data, runtime, cap),
                       _payload(spec, env, data, runtime), rule.name)
    if kind == "broadcast":
        return Broadcast(_jids(spec, env, data, runtime, cap),
                         _payload(spec, env, data, runtime), rule.name)
    if kind == "reply":
        return Reply((env.from_,), _payload(spec, env, data, runtime), rule.name)
    if kind in ("relate", "unrelate"):
        return _relation(spec, rule, env, data, runtime)
    if kind in ("schedule", "cancel"):
        return _timer(spec, rule, env, data, runtime)
    if kind in ("count", "reset"):
        assert spec.counter is not None
        assert spec.key is not None
        key = _value(spec.key, data, runtime)
        if not isinstance(key, str | int | float) or isinstance(key, bool) or key == "":
            raise _RuleFailed(f"{kind}: the key must be a non-empty text or a number, got "
                              f"{shorten(repr(key), 60)}")
        if kind == "reset":
            return Reset(spec.counter, counter_key(key), rule.name)
        return Count(spec.counter, counter_key(key), spec.by, rule.name)
    if kind == "error":
        code = spec.code or "rejected"
        return ErrorReply((env.from_,), code, spec.message or code, None, rule.name)
    return Drop(spec.reason, rule.name)


def _relation_jid(spec: ActionSpec, param: Param | None, env: Envelope,
                  data: Mapping[str, JSON], runtime: Runtime, what: str) -> str:
    value = env.sender if param is None else _value(param, data, runtime)
    if not valid_jid(value):
        raise _RuleFailed(f"{spec.kind}: {what} must be a JID, got {shorten(repr(value), 60)}")
    return bare_jid(str(value)).lower()


def _relation(spec: ActionSpec, rule: Rule, env: Envelope, data: Mapping[str, JSON],
              runtime: Runtime) -> Action:
    subject = _relation_jid(spec, spec.subject, env, data, runtime, "subject")
    obj = _relation_jid(spec, spec.object, env, data, runtime, "object")
    kind = spec.relation or "related"
    if spec.kind == "unrelate":
        return Unrelate(subject, obj, kind, spec.mutual, rule.name)
    attrs = {} if spec.attrs is None else _value(spec.attrs, data, runtime)
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise _RuleFailed(f"relate: attrs must be a JSON object, got {shorten(repr(attrs), 60)}")
    return Relate(subject, obj, kind, attrs, spec.mutual, rule.name,
                  expires=_expires(spec, env, data, runtime))


#: A timer's key and event: bounded like a relation's attrs (store.values).
MAX_TIMER_KEY = 256
MAX_TIMER_EVENT = 4096


def _timer(spec: ActionSpec, rule: Rule, env: Envelope, data: Mapping[str, JSON],
           runtime: Runtime) -> Action:
    assert spec.key is not None  # the loader's
    key = _value(spec.key, data, runtime)
    if not isinstance(key, str) or not 0 < len(key) <= MAX_TIMER_KEY:
        raise _RuleFailed(f"{spec.kind}: the key must be a text of 1 to {MAX_TIMER_KEY} "
                          f"characters, got {shorten(repr(key), 60)}")
    if spec.kind == "cancel":
        return Cancel(key, rule.name)
    try:
        if spec.after is not None:
            after = parse_duration(_value(spec.after, data, runtime))
            if after <= 0:
                raise _RuleFailed(f"schedule: after must be positive, got {after:g} s")
            if env.now is None:
                raise _RuleFailed("schedule: after needs the clock (the event has no `now`)")
            due = env.now + after
        else:
            assert spec.at is not None
            due = to_epoch(_value(spec.at, data, runtime))
    except TimeError as exc:
        raise _RuleFailed(f"schedule: {'after' if spec.after is not None else 'at'}: {exc}"
                          ) from None
    event = env.event if spec.event is None else _value(spec.event, data, runtime)
    if not isinstance(event, dict):
        raise _RuleFailed(f"schedule: event must be a JSON object, got {shorten(repr(event), 60)}")
    # As the store writes it (compact UTF-8 JSON), so that a commit cannot refuse it.
    if len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()) \
            > MAX_TIMER_EVENT:
        raise _RuleFailed(f"schedule: the event is larger than {MAX_TIMER_EVENT} bytes as JSON")
    full = cast(RuleFunctions, runtime.functions).view().timer_room(env.sender)
    if full is not None:
        raise _RuleFailed(f"schedule: {full}")
    return Schedule(key, due, dict(event), rule.name, env.sender)


def _expires(spec: ActionSpec, env: Envelope, data: Mapping[str, JSON],
             runtime: Runtime) -> float | None:
    """When a relate's relation stops existing (seconds since 1970), or None."""
    try:
        if spec.ttl is not None:
            ttl = parse_duration(_value(spec.ttl, data, runtime))
            if ttl <= 0:
                raise _RuleFailed(f"relate: ttl must be positive, got {ttl:g} s")
            if env.now is None:
                raise _RuleFailed("relate: ttl needs the clock (the event has no `now`)")
            return env.now + ttl
        if spec.until is not None:
            return to_epoch(_value(spec.until, data, runtime))
    except TimeError as exc:
        raise _RuleFailed(f"relate: {'ttl' if spec.ttl is not None else 'until'}: {exc}"
                          ) from None
    return None
