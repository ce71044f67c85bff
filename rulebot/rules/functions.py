"""The pure JMESPath functions rule expressions may call, besides JMESPath's own.

No I/O: every function is a function of its
arguments and of the rule set's lists (and, later, a read-only state view).

| function                     | returns                                          |
|------------------------------|--------------------------------------------------|
| jid_bare(jid)                | `user@domain` part of a JID                      |
| jid_local(jid)               | `user` (empty string for a domain JID)           |
| jid_domain(jid)              | `domain`                                         |
| jid_resource(jid)            | `resource` (empty string when none)              |
| regex_match(pattern, string) | true when Python `re.search` finds the pattern   |
| in_list(name, value)         | true when value is in list `name` (case-insensitive) |
| lower(string), upper(string) | the string in lower/upper case                   |
| related(subject, object, kind) | true when subject has a `kind` relation to object |
| mutual(a, b, kind)           | true when a and b have `kind` to each other       |
| related_to(subject, kind)    | JIDs the subject has `kind` to (sorted)           |
| related_from(object, kind)   | JIDs that have `kind` to the object (sorted)      |
| relation(subject, object, kind) | {kind, attrs, created, expires} of it, or null |
| online(jid)                  | true when the bot has seen the user (or that resource) available |
| over_limit(name, key)        | takes a token from bucket `name` for `key`; true if none left |
| duration(d)                  | seconds of a duration (`'90s'`, `'1h30m'`, `'7d'`)  |
| to_epoch(t), to_iso(t)       | an instant as seconds since 1970 / ISO 8601 UTC text |
| time_add(t, d)               | the instant d after t, in seconds since 1970         |
| time_diff(a, b)              | seconds from instant b to instant a (a - b)          |
| weekday(t, tz), hour(t, tz)  | `mon`..`sun` / 0-23 at instant t in IANA zone tz     |
| date(t, tz), clock(t, tz)    | `YYYY-MM-DD` / `HH:MM` at instant t in zone tz       |
| within(name)                 | true when `now` is inside the named interval         |
| within_at(name, t)           | true when instant t is inside the named interval     |
| counter(name, key)           | the counts of counter `name` for `key` in its window |

Instants are numbers (`now.epoch`), ISO 8601 texts with an offset
(`now.iso`, `relation(...).created`) or `now` itself; rulebot.rules.timefns
has the rules.
The functions read no clock: `within(name)` reads the event's `now`, which
the caller put in the envelope.

The relationship and presence functions read through a read-only StateView
(StateView, below; rulebot.engine.state has the implementations) that the
caller passes in; JIDs are compared as lower-case
bare JIDs.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from jmespath import exceptions as jp_exceptions
from jmespath import functions

from rulebot.jid import bare_jid, split_jid
from rulebot.model import JSON
from rulebot.rules.timefns import WEEKDAYS, Interval, local, parse_duration, to_epoch, to_iso

#: Names of the functions this module adds (validate checks calls against them).
CUSTOM_FUNCTIONS = frozenset(
    {"jid_bare", "jid_local", "jid_domain", "jid_resource", "regex_match", "in_list",
     "lower", "upper", "related", "mutual", "related_to", "related_from", "relation", "online",
     "over_limit", "duration", "to_epoch", "to_iso", "time_add", "time_diff", "weekday",
     "hour", "date", "clock", "within", "within_at", "counter"}
)


MAX_PATTERN = 1000
#: What an instant argument may be: seconds, ISO 8601 text, or `now` itself.
_INSTANT: Any = {"types": ["number", "string", "object"]}

@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_PATTERN:
        raise jp_exceptions.JMESPathError(f"regex_match: pattern longer than {MAX_PATTERN}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise jp_exceptions.JMESPathError(f"regex_match: invalid pattern: {exc}") from None


def check_pattern(pattern: str) -> str | None:
    """The error message for an invalid literal regex, or None when it compiles."""
    try:
        _compiled(pattern)
    except jp_exceptions.JMESPathError as exc:
        return str(exc)
    return None


class StateView(Protocol):
    """Everything an expression can ask about the world outside the event."""

    def related(self, subject: str, obj: str, kind: str) -> bool: ...
    def objects(self, subject: str, kind: str) -> list[str]: ...
    def subjects(self, obj: str, kind: str) -> list[str]: ...
    def relation(self, subject: str, obj: str, kind: str) -> dict[str, JSON] | None: ...
    def online(self, jid: str) -> bool: ...
    def take(self, name: str, key: str, per_second: float, burst: int) -> bool: ...
    def count(self, name: str, key: str, since: float) -> int: ...
    def timer_room(self, sender: str) -> str | None: ...


class NoState:
    """The state of a bot with no store and no presence: nothing is related or online."""

    def related(self, subject: str, obj: str, kind: str) -> bool:
        return False

    def objects(self, subject: str, kind: str) -> list[str]:
        return []

    def subjects(self, obj: str, kind: str) -> list[str]:
        return []

    def relation(self, subject: str, obj: str, kind: str) -> dict[str, JSON] | None:
        return None

    def online(self, jid: str) -> bool:
        return False

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        return True  # no limiter: never over the limit

    def count(self, name: str, key: str, since: float) -> int:
        return 0

    def timer_room(self, sender: str) -> str | None:
        return None  # offline (eval, explain): no limits to reach


NO_STATE = NoState()


class RuleFunctions(functions.Functions):
    """JMESPath's built-ins plus rulebot's, bound to one rule set's lists and a state view."""

    def __init__(self, lists: Mapping[str, frozenset[str]], state: StateView | None = None,
                 limits: Mapping[str, Any] | None = None,
                 intervals: Mapping[str, Interval] | None = None,
                 counters: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self._lists = lists
        self._state = state
        self._limits = limits or {}
        self._intervals = intervals or {}
        self._counters = counters or {}  # name -> window (seconds)
        #: The event's `now` (seconds since 1970), set by the evaluation before
        #: each event: the table is shared by every event of a rule set.
        self.now: float | None = None

    def view(self) -> StateView:
        """The state the functions read (the evaluation's actions consult it too)."""
        return self._view()

    def _view(self) -> StateView:
        if self._state is None:
            return NO_STATE
        return self._state

    @functions.signature({"types": ["string"]})
    def _func_jid_bare(self, jid: str) -> str:
        return bare_jid(jid)

    @functions.signature({"types": ["string"]})
    def _func_jid_local(self, jid: str) -> str:
        return split_jid(jid)[0]

    @functions.signature({"types": ["string"]})
    def _func_jid_domain(self, jid: str) -> str:
        return split_jid(jid)[1]

    @functions.signature({"types": ["string"]})
    def _func_jid_resource(self, jid: str) -> str:
        return split_jid(jid)[2]

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_regex_match(self, pattern: str, value: str) -> bool:
        return _compiled(pattern).search(value) is not None

    @functions.signature({"types": ["string"]}, {"types": []})
    def _func_in_list(self, name: str, value: Any) -> bool:
        members = self._lists.get(name)
        if members is None:
            raise jp_exceptions.JMESPathError(f"in_list: no list named {name!r}")
        # JIDs are case-insensitive in practice (servers fold localparts), so
        # lists compare case-insensitively; the rule set stores them folded.
        return isinstance(value, str) and value.casefold() in members

    @functions.signature({"types": ["string"]})
    def _func_lower(self, value: str) -> str:
        return value.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, value: str) -> str:
        return value.upper()

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_related(self, subject: str, obj: str, kind: str) -> bool:
        return self._view().related(subject, obj, kind)

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_mutual(self, a: str, b: str, kind: str) -> bool:
        view = self._view()
        return view.related(a, b, kind) and view.related(b, a, kind)

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_related_to(self, subject: str, kind: str) -> list[str]:
        return self._view().objects(subject, kind)

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_related_from(self, obj: str, kind: str) -> list[str]:
        return self._view().subjects(obj, kind)

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_relation(self, subject: str, obj: str, kind: str) -> Any:
        return self._view().relation(subject, obj, kind)

    @functions.signature({"types": ["string"]})
    def _func_online(self, jid: str) -> bool:
        return self._view().online(jid)

    @functions.signature({"types": ["string"]}, {"types": ["string", "number"]})
    def _func_over_limit(self, name: str, key: Any) -> bool:
        spec = self._limits.get(name)
        if spec is None:
            raise jp_exceptions.JMESPathError(f"over_limit: no rate limit named {name!r}")
        return not self._view().take(name, str(key), spec.per_second, spec.burst)

    # -- time (rulebot.rules.timefns): TimeError is a ValueError, which a
    # rule's evaluation records as that rule's error

    @functions.signature({"types": ["string", "number"]})
    def _func_duration(self, value: Any) -> float:
        return _whole(parse_duration(value))

    @functions.signature(_INSTANT)
    def _func_to_epoch(self, value: Any) -> float:
        return _whole(to_epoch(value))

    @functions.signature(_INSTANT)
    def _func_to_iso(self, value: Any) -> str:
        return to_iso(to_epoch(value))

    @functions.signature(_INSTANT, {"types": ["string", "number"]})
    def _func_time_add(self, t: Any, d: Any) -> float:
        return _whole(to_epoch(to_epoch(t) + parse_duration(d)))

    @functions.signature(_INSTANT, _INSTANT)
    def _func_time_diff(self, a: Any, b: Any) -> float:
        return _whole(to_epoch(a) - to_epoch(b))

    @functions.signature(_INSTANT, {"types": ["string"]})
    def _func_weekday(self, t: Any, tz: str) -> str:
        return WEEKDAYS[local(t, tz).weekday()]

    @functions.signature(_INSTANT, {"types": ["string"]})
    def _func_hour(self, t: Any, tz: str) -> int:
        return local(t, tz).hour

    @functions.signature(_INSTANT, {"types": ["string"]})
    def _func_date(self, t: Any, tz: str) -> str:
        return local(t, tz).strftime("%Y-%m-%d")

    @functions.signature(_INSTANT, {"types": ["string"]})
    def _func_clock(self, t: Any, tz: str) -> str:
        return local(t, tz).strftime("%H:%M")

    @functions.signature({"types": ["string"]})
    def _func_within(self, name: str) -> bool:
        if self.now is None:
            raise jp_exceptions.JMESPathError("within: the event has no `now` (no clock given)")
        return self._interval("within", name).contains(self.now)

    @functions.signature({"types": ["string"]}, _INSTANT)
    def _func_within_at(self, name: str, t: Any) -> bool:
        return self._interval("within_at", name).contains(to_epoch(t))

    @functions.signature({"types": ["string"]}, {"types": ["string", "number"]})
    def _func_counter(self, name: str, key: Any) -> int:
        window = self._counters.get(name)
        if window is None:
            raise jp_exceptions.JMESPathError(f"counter: no counter named {name!r}")
        if self.now is None:
            raise jp_exceptions.JMESPathError("counter: the event has no `now` (no clock given)")
        return self._view().count(name, counter_key(key), self.now - window)

    def _interval(self, fn: str, name: str) -> Interval:
        found = self._intervals.get(name)
        if found is None:
            raise jp_exceptions.JMESPathError(f"{fn}: no interval named {name!r}")
        return found


def counter_key(key: object) -> str:
    """A counter's key as stored: text as is, a number as its JSON text (a
    count action and counter() agree on `sender`, `event.room` or `42`)."""
    if isinstance(key, str):
        return key
    return json.dumps(key)


def _whole(seconds: float) -> float:
    """A whole number of seconds as an int (JSON shows 60, not 60.0)."""
    return int(seconds) if seconds == int(seconds) else seconds
