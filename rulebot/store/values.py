"""Relations as values, and the validation every write goes through.

No I/O and no SQL; `now()` reads the clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeAlias

from rulebot.errors import StoreError
from rulebot.model import JSON, STORE_TIME, Relation, shorten
from rulebot.model import stamp as stamp  # re-exported: part of this API

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
MAX_JID = 3071
MAX_ATTRS_BYTES = 4096
TIME_FORMAT = STORE_TIME

@dataclass(frozen=True, slots=True)
class RelateChange:
    """Create the relation, or replace the attrs and expiry of an existing one
    (keeping `created`; an expired one is replaced as new)."""

    subject: str
    object: str
    kind: str
    attrs: Mapping[str, JSON] = field(default_factory=dict)
    op: Literal["relate"] = "relate"
    #: when it stops existing (ISO 8601 UTC), or None: never
    expires: str | None = None


@dataclass(frozen=True, slots=True)
class UnrelateChange:
    """Remove the relation if it exists."""

    subject: str
    object: str
    kind: str
    op: Literal["unrelate"] = "unrelate"


@dataclass(frozen=True, slots=True)
class CountChange:
    """Add `n` to counter `name` for `key`, counted at the store's clock."""

    name: str
    key: str
    n: int = 1
    op: Literal["count"] = "count"


@dataclass(frozen=True, slots=True)
class ResetChange:
    """Forget every count of counter `name` for `key`."""

    name: str
    key: str
    op: Literal["reset"] = "reset"


@dataclass(frozen=True, slots=True)
class ScheduleChange:
    """Store a timer (replacing one of the same key): `event` fed back at `due`."""

    key: str
    due: float  # seconds since 1970
    sender: str
    event: Mapping[str, JSON]
    rule: str
    op: Literal["schedule"] = "schedule"


@dataclass(frozen=True, slots=True)
class CancelChange:
    """Forget the timer of that key."""

    key: str
    op: Literal["cancel"] = "cancel"


class Timer(NamedTuple):
    """A stored timer, as the daemon fires it."""

    key: str
    due: float
    sender: str
    event: str  # JSON text
    rule: str
    created: float


RelationChange: TypeAlias = RelateChange | UnrelateChange
Change: TypeAlias = (RelateChange | UnrelateChange | CountChange | ResetChange
                     | ScheduleChange | CancelChange)
#: The timers' ops as the backends write them: (key, due, sender, event JSON,
#: rule, created); for a cancel, (key, None, "", "", "", 0).
TimerOp: TypeAlias = tuple[str, float | None, str, str, str, float]
MAX_TIMER_KEY = 256
#: The counters' ops as the backends write them: (name, key, n, at); n None: reset.
CountOp: TypeAlias = tuple[str, str, int | None, float]
MAX_COUNTER_KEY = 1024


class RecordBatch(NamedTuple):
    """A batch of idempotency records: the decisions of one read from the server
    (rulebot.daemon.ledger encodes and decodes `records`). A tuple in the column order
    of its table, so that it is the parameter list of its INSERT."""

    session: str  # the XEP-0198 session the events came in ("" without one)
    last: int  # the highest stream position among them (0 without a session)
    created: int  # Unix time in milliseconds
    records: str  # JSON text


class SessionMark(NamedTuple):
    """How far a stream-management session is acknowledged: the server has
    processed the bot's acknowledgement of every position up to `confirmed`."""

    session: str
    confirmed: int
    updated: int  # Unix time in milliseconds


class StoredBatch(NamedTuple):
    id: int
    session: str
    last: int
    created: int
    records: str


@dataclass(frozen=True, slots=True)
class Row:
    """A validated change or imported relation, ready for SQL: attrs serialised."""

    subject: str
    object: str
    kind: str
    attrs: str | None  # canonical JSON; None for an unrelate
    created: str
    expires: str | None = None  # TIME_FORMAT; None: never


def now() -> str:
    """The current time as the store writes it: 2025-01-31T12:00:00.000000Z."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def check_jid(value: object, what: str = "JID") -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} must be a non-empty string, not {show(value)}")
    if len(value) > MAX_JID:
        raise StoreError(f"{what} is longer than {MAX_JID} characters")
    # RFC 7622 (PRECIS) allows no control characters; PostgreSQL cannot store NUL.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise StoreError(f"{what} contains a control character: {show(value)}")
    return value


def check_kind(value: object) -> str:
    if not isinstance(value, str) or KIND_PATTERN.fullmatch(value) is None:
        raise StoreError(f"kind must match ^[a-z][a-z0-9_-]{{0,63}}$, not {show(value)}")
    return value


def encode_attrs(value: object) -> str:
    """Canonical JSON of an attrs object (sorted keys, compact). Raises StoreError."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise StoreError(f"attrs must be a JSON object, not {show(value)}")
    try:
        text = json.dumps(dict(value), ensure_ascii=False, sort_keys=True, allow_nan=False,
                          separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"attrs is not JSON: {exc}") from None
    if len(text.encode("utf-8")) > MAX_ATTRS_BYTES:
        raise StoreError(f"attrs is larger than {MAX_ATTRS_BYTES} bytes as JSON")
    return text


def check_created(value: object, what: str = "created") -> str:
    """An ISO 8601 UTC time in the store's own format. Raises StoreError."""
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    offset = None if when is None else when.utcoffset()
    if when is None or offset is None or offset.total_seconds() != 0:
        raise StoreError(f"{what} must be an ISO 8601 UTC time like 2025-01-31T12:00:00Z, "
                         f"not {show(value)}")
    return when.astimezone(UTC).strftime(TIME_FORMAT)


def count_op(change: CountChange | ResetChange, at: float) -> CountOp:
    """A validated counter op. Raises StoreError."""
    if not isinstance(change.name, str) or not 0 < len(change.name) <= 128 \
            or "\x00" in change.name:
        raise StoreError(f"not a counter name: {show(change.name)}")
    if not isinstance(change.key, str) or len(change.key) > MAX_COUNTER_KEY \
            or "\x00" in change.key:
        raise StoreError(f"a counter key is a text of at most {MAX_COUNTER_KEY} characters, "
                         f"not {show(change.key)}")
    if isinstance(change, ResetChange):
        return (change.name, change.key, None, at)
    if not isinstance(change.n, int) or isinstance(change.n, bool) or not 0 < change.n <= 10**6:
        raise StoreError(f"a count is a whole number from 1 to 1,000,000, not {show(change.n)}")
    return (change.name, change.key, change.n, at)


def timer_op(change: ScheduleChange | CancelChange, at: float) -> TimerOp:
    """A validated timer op. Raises StoreError."""
    if not isinstance(change.key, str) or not 0 < len(change.key) <= MAX_TIMER_KEY \
            or "\x00" in change.key:
        raise StoreError(f"a timer key is a text of 1 to {MAX_TIMER_KEY} characters, "
                         f"not {show(change.key)}")
    if isinstance(change, CancelChange):
        return (change.key, None, "", "", "", 0.0)
    text = encode_attrs(change.event)  # a JSON object, canonical, at most 4 KiB
    return (change.key, float(change.due), check_jid(change.sender, "sender"), text,
            change.rule, at)


def change_row(change: RelateChange | UnrelateChange, created: str) -> Row:
    subject = check_jid(change.subject, "subject")
    obj = check_jid(change.object, "object")
    kind = check_kind(change.kind)
    if isinstance(change, RelateChange):
        expires = None if change.expires is None else check_created(change.expires, "expires")
        return Row(subject, obj, kind, encode_attrs(change.attrs), created, expires)
    if isinstance(change, UnrelateChange):
        return Row(subject, obj, kind, None, created)
    raise StoreError(f"not a change: {show(change)}")


def parse_line(text: str) -> Row:
    """One JSON line of an export as a Row. Raises StoreError (without a line number)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StoreError(f"expected a JSON object, got {show(value)}")
    unknown = sorted(set(value) - {"subject", "object", "kind", "attrs", "created", "expires"})
    if unknown:
        raise StoreError(f"unknown key(s) {', '.join(unknown)}")
    missing = [k for k in ("subject", "object", "kind") if k not in value]
    if missing:
        raise StoreError(f"missing key(s) {', '.join(missing)}")
    return Row(check_jid(value["subject"], "subject"), check_jid(value["object"], "object"),
               check_kind(value["kind"]), encode_attrs(value.get("attrs")),
               check_created(value["created"]) if "created" in value else now(),
               None if value.get("expires") is None
               else check_created(value["expires"], "expires"))


def relation_line(relation: Relation) -> str:
    return json.dumps(relation.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"


def relation_of(row: Sequence[Any]) -> Relation:
    """A Relation from a row of COLUMNS (attrs stored as JSON text)."""
    return Relation(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])


def show(value: object, limit: int = 60) -> str:
    return shorten(repr(value), limit)
