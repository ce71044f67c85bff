"""Reading the wire format: event text -> a plain dict, or EventError with a code.

No XMPP, no I/O, no logging. Writing is rulebot.wire.encode.

An event travels as one JSON object, either as the text of the message
<body> (Encoding "body") or as the text of an XEP-0335 container
<json xmlns='urn:xmpp:json:0'> (Encoding "json"). `decode_event` turns that
text into a plain dict or raises EventError with a stable code:

    too-large             UTF-8 length over Limits.max_bytes (checked before parsing)
    invalid-json          not JSON; also NaN / Infinity / -Infinity
    duplicate-key         an object names the same key twice
    not-object            the top level is not an object
    too-deep              containers nested deeper than Limits.max_depth
    too-many-items        more than Limits.max_items values in total
    string-too-long       a string or key longer than Limits.max_string characters
    number-out-of-range   an integer outside +-(2**53-1), or a float that overflows
    invalid-string        a string or key with a lone surrogate or a character XML 1.0
                          forbids (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F,
                          U+FFFE, U+FFFF)

Every accepted event re-encodes (wire.encode.encode_payload) into valid XML
1.0 character data, so a payload can never break the bot's stream.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from rulebot.errors import EventError
from rulebot.model import JSON
from rulebot.wire.encode import NOT_XML_CHAR, xml_safe

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SAFE_INTEGER",
    "Limits",
    "decode_event",
    "event_id",
    "presence_event",
]

#: Largest integer a JavaScript client can hold exactly (Number.MAX_SAFE_INTEGER).
MAX_SAFE_INTEGER = 2**53 - 1

#: Longest string accepted as an event id by `event_id`.
MAX_ID_LENGTH = 256

# json.loads recurses once per nesting level in C; keep well below the
# interpreter's recursion limit whatever the configuration says.
_DEPTH_CEILING = 256


@dataclass(frozen=True)
class Limits:
    """Bounds on one incoming event.

    max_depth counts containers: {"a": 1} has depth 1, {"a": [1]} depth 2.
    max_items counts every JSON value (objects, arrays and scalars, the top
    level included). max_string counts characters (code points).
    """

    max_bytes: int = 65536
    max_depth: int = 32
    max_string: int = 65536
    max_items: int = 10000
    max_attributes: int = 64

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_string", "max_items", "max_attributes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if self.max_depth > _DEPTH_CEILING:
            raise ValueError(f"Limits.max_depth must be at most {_DEPTH_CEILING}")


# --- locations -----------------------------------------------------------------


class _Loc(NamedTuple):
    """One step of a JSON pointer, linked to its parent; rendered only on error."""

    parent: _Loc | None
    segment: str | int


_INF = float("inf")
# Characters outside the XML 1.0 Char production (lone surrogates included).



def _pointer(loc: _Loc | None) -> str:
    """The JSON pointer (RFC 6901) of `loc`; "" is the top level.

    Keys may hold characters XML cannot carry (that may be the very error
    being reported), so those are spelled as \\uXXXX to keep error replies sendable.
    """
    parts: list[str] = []
    while loc is not None:
        seg = loc.segment
        parts.append(
            seg.replace("~", "~0").replace("/", "~1") if isinstance(seg, str) else str(seg)
        )
        loc = loc.parent
    return xml_safe("".join("/" + p for p in reversed(parts)))


# --- markers the parser hooks leave for the walk, so errors get a path ----------


@dataclass(frozen=True, slots=True)
class _Bad:
    code: str
    message: str


class _DupDict(dict[str, JSON]):
    """An object that named `duplicate` twice (the later value won)."""

    duplicate: str = ""


def _object_pairs(pairs: list[tuple[str, JSON]]) -> dict[str, JSON]:
    obj: dict[str, JSON] = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:  # pragma: no branch - a duplicate exists
        if key in seen:
            dup = _DupDict(obj)
            dup.duplicate = key
            return dup
        seen.add(key)
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_int(text: str) -> int | _Bad:
    # Sixteen digits already exceed 2**53-1 by far once there are more, and
    # refusing here also keeps int() away from its 4300-digit ValueError.
    if len(text.lstrip("-")) > 16 or abs(value := int(text)) > MAX_SAFE_INTEGER:
        return _Bad("number-out-of-range", f"integers must lie within ±{MAX_SAFE_INTEGER}")
    return value


def _parse_constant(name: str) -> _Bad:
    return _Bad("invalid-json", f"{name} is not valid JSON")


# json.loads with these hooks, built once (json.loads builds a decoder per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_int=_parse_int,
                            parse_constant=_parse_constant)


# --- the depth pre-scan ---------------------------------------------------------

# A whole string (escapes skipped), a structural character, or an unterminated string.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]|"', re.DOTALL)


class _Frame:
    """One open container during the depth pre-scan."""

    __slots__ = ("index", "is_object", "key_span", "wants_key")

    def __init__(self, is_object: bool) -> None:
        self.is_object = is_object
        self.wants_key = is_object
        self.index = 0
        self.key_span: tuple[int, int] | None = None


def _check_depth(text: str, max_depth: int) -> None:
    """Raise too-deep if containers nest deeper than `max_depth`.

    A linear scan of brackets outside strings, so json.loads is never asked
    to recurse further than max_depth. On malformed input the scan stops
    quietly: json.loads then fails no later than where the scan stopped.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return
    frames: list[_Frame] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if len(token) == 1:
                return  # an unterminated string
            if frames and frames[-1].wants_key:
                frames[-1].key_span = match.span()
                frames[-1].wants_key = False
        elif token in "[{":
            if len(frames) == max_depth:
                raise EventError(
                    "too-deep",
                    f"containers nest deeper than {max_depth} levels",
                    _pointer(_frames_loc(text, frames)),
                )
            frames.append(_Frame(token == "{"))
        elif not frames:
            return  # a stray "," or closing bracket
        elif token == ",":
            frames[-1].wants_key = frames[-1].is_object
            frames[-1].index += 1
        else:  # "]" or "}"
            frames.pop()


def _frames_loc(text: str, frames: list[_Frame]) -> _Loc | None:
    loc: _Loc | None = None
    for frame in frames:
        if not frame.is_object:
            loc = _Loc(loc, frame.index)
        elif frame.key_span is None:
            loc = _Loc(loc, "")  # malformed: a member without a key
        else:
            raw = text[frame.key_span[0] : frame.key_span[1]]
            try:
                key = json.loads(raw)
            except ValueError:  # a bad escape; json.loads would reject the text anyway
                key = raw[1:-1]
            loc = _Loc(loc, key)
    return loc


# --- decoding --------------------------------------------------------------------


def decode_event(text: str, limits: Limits) -> dict[str, JSON]:
    """Parse and check one incoming event; return it as a plain dict.

    Raises EventError (see the module docstring for the codes). `path` is a
    JSON pointer where the problem has a place, None for whole-text problems.
    """
    if len(text) > limits.max_bytes or (
        len(text) * 4 > limits.max_bytes
        and len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes
    ):
        raise EventError("too-large", f"the event is larger than {limits.max_bytes} bytes")
    _check_depth(text, limits.max_depth)
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise EventError(
            "invalid-json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # pragma: no cover - the pre-scan and the depth ceiling prevent it
        raise EventError("too-deep", "the event nests too deeply") from None
    except ValueError as exc:  # pragma: no cover - the hooks leave none; keep the contract
        raise EventError("invalid-json", xml_safe(str(exc))) from None
    if isinstance(value, _Bad):
        raise EventError(value.code, value.message)
    if not isinstance(value, dict):
        raise EventError("not-object", f"an event must be a JSON object, not {_kind(value)}")
    if not _plainly_within(text, value, limits):
        _walk(value, limits)
    return value


def _plainly_within(text: str, root: dict[str, JSON], limits: Limits) -> bool:
    """True when `root` certainly passes `_walk`, decided without looking at its
    strings: the common small event pays for one scan of its text instead.

    Without a backslash in the text, every decoded key and string is a piece of
    the text, so none is longer than it or holds a character it does not hold;
    and every value takes at least one character, so there are no more values
    than characters. What is left to find is what the parser hooks leave (a
    duplicate key, a number out of range) and infinite floats: any of those, or
    any doubt, and the full walk runs and reports the first problem in order."""
    if (len(text) > limits.max_string or len(text) > limits.max_items or "\\" in text
            or NOT_XML_CHAR.search(text) is not None):
        return False
    stack: list[JSON] = [root]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
        elif kind is float:
            if value in (_INF, -_INF):
                return False
        elif not (kind is str or kind is int or kind is bool or value is None):
            return False  # a _DupDict, a _Bad: the walk says where
    return True


def _kind(value: JSON) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _walk(root: dict[str, JSON], limits: Limits) -> None:
    """Check every value in document order, without recursion."""
    # (value, its location, the key it is stored under, checked on the visit so
    # that the first problem in document order is the one reported)
    stack: list[tuple[JSON, _Loc | None, str | None]] = [(root, None, None)]
    items = 0
    while stack:
        value, loc, key = stack.pop()
        if key is not None:
            _check_string(key, loc, limits, "key")
        items += 1
        if items > limits.max_items:
            raise EventError(
                "too-many-items",
                f"the event holds more than {limits.max_items} values",
                _pointer(loc),
            )
        if isinstance(value, dict):
            if isinstance(value, _DupDict):
                raise EventError(
                    "duplicate-key",
                    "an object names the same key twice",
                    _pointer(_Loc(loc, value.duplicate)),
                )
            stack.extend((v, _Loc(loc, k), k) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((value[i], _Loc(loc, i), None) for i in range(len(value) - 1, -1, -1))
        elif isinstance(value, str):
            _check_string(value, loc, limits, "string")
        elif isinstance(value, _Bad):
            raise EventError(value.code, value.message, _pointer(loc))
        elif isinstance(value, float) and value in (_INF, -_INF):
            raise EventError("number-out-of-range", "the number overflows a double", _pointer(loc))


def _check_string(text: str, loc: _Loc | None, limits: Limits, what: str) -> None:
    if len(text) > limits.max_string:
        raise EventError(
            "string-too-long",
            f"a {what} is longer than {limits.max_string} characters",
            _pointer(loc),
        )
    bad = NOT_XML_CHAR.search(text)
    if bad is not None:
        raise EventError(
            "invalid-string",
            f"a {what} holds U+{ord(bad.group()):04X}, which XML 1.0 cannot carry",
            _pointer(loc),
        )


def event_id(event: Mapping[str, JSON]) -> str | int | None:
    """The event's "id" if it is an integer or a string of at most 256 characters."""
    value = event.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_ID_LENGTH):
        return value
    return None


def presence_event(
    ptype: str | None, show: str | None, status: str | None, priority: int | None
) -> dict[str, JSON]:
    """The event the daemon builds from a presence stanza; None fields are left out.

    "presence" is "available" for a stanza without a type, else the type
    ("unavailable", "subscribe", ...).
    """
    event: dict[str, JSON] = {
        "type": "presence",
        "presence": "available" if ptype is None else ptype,
    }
    if show is not None:
        event["show"] = show
    if status is not None:
        event["status"] = status
    if priority is not None:
        event["priority"] = priority
    return event
