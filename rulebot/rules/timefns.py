"""Time as data: durations, instants and named intervals (pure; no clock).

The clock is the envelope's `now` (the daemon's time at receipt; `--now` and
`now:` in eval, explain and test): rules never read the system clock, so a
decision is a function of its envelope and the rule set, and tests of it are
reproducible.

An *instant* is a number of seconds since 1970-01-01T00:00:00Z (what
`now.epoch` is), an ISO 8601 text with a UTC offset or `Z` (what `now.iso`
and `relation(...).created` are), or `now` itself. A *duration* is a text of one or
more number-unit parts, `90s`, `10m`, `1h30m`, `7d`, `2w` (units s, m, h, d, w;
a day is 86,400 s, whatever the calendar), or a number of seconds.

An *interval* is declared in a rule file:

    intervals:
      office-hours: {weekdays: mon-fri, times: "09:00-17:00", tz: Europe/Paris}

`weekdays`: days as `mon`..`sun`, ranges (`mon-fri`, `fri-mon` wraps) and
lists (`"mon,wed"` or a YAML list); default every day. `times`: `HH:MM-HH:MM`
ranges (start included, end excluded; `22:00-06:00` crosses midnight and
belongs to the weekday it starts on; `24:00` is the end of the day), one
text or a list; default the whole day. `tz`: an IANA zone (default UTC);
local time follows the zone's daylight saving rules (zoneinfo; the tzdata
package when the system has no zone database).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
#: Instants outside years 1..9999 have no ISO text; refused as out of range.
_MIN_EPOCH = -62135596800.0
_MAX_EPOCH = 253402300799.0


class TimeError(ValueError):
    """A duration, instant, zone or interval that does not parse; the message
    says what was expected (rule errors at run time, located issues at load).
    `field`: the interval's field at fault, when it is one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def parse_duration(value: object) -> float:
    """Seconds of a duration text (`90s`, `1h30m`) or number (seconds)."""
    if isinstance(value, bool):
        raise TimeError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise TimeError(f"not a duration: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise TimeError(f"not a duration: {value!r}")
    text = value.strip()
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise TimeError(f"not a duration: {value!r} (write e.g. '90s', '10m', '1h30m', '7d')")
    return total


def to_epoch(value: object) -> float:
    """Seconds since the epoch of an instant: a number, ISO 8601 text with an
    offset, or the envelope's `now` object (its epoch)."""
    if isinstance(value, Mapping) and set(value) == {"epoch", "iso"}:
        value = value["epoch"]
    if isinstance(value, bool):
        raise TimeError(f"not an instant: {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or not _MIN_EPOCH <= value <= _MAX_EPOCH:
            raise TimeError(f"instant out of range: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise TimeError(f"not an instant: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise TimeError(f"not an ISO 8601 instant: {value!r} "
                        "(write e.g. '2026-12-01T09:00:00Z')") from None
    if parsed.tzinfo is None:
        raise TimeError(f"instant without a UTC offset: {value!r} (add 'Z' or '+01:00')")
    return parsed.timestamp()


def to_iso(epoch: float) -> str:
    """The instant as ISO 8601 UTC text, to the second: `2026-12-01T09:00:00Z`."""
    seconds = math.floor(to_epoch(epoch))
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def zone(name: object) -> ZoneInfo:
    """The IANA zone of that name (`Europe/Paris`, `UTC`)."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise TimeError(f"not a time zone: {name!r}")
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeError(f"unknown time zone {name!r} (an IANA name, e.g. "
                        "'Europe/Paris', 'America/New_York', 'UTC')") from None


_ZONES: dict[str, ZoneInfo] = {}


def _zone(name: str) -> ZoneInfo:
    found = _ZONES.get(name)
    if found is None:
        found = _ZONES[name] = ZoneInfo(name)
    return found


def local(epoch: object, tz: object) -> datetime:
    """The instant as a wall-clock time in zone `tz`."""
    return datetime.fromtimestamp(to_epoch(epoch), zone(tz))


@dataclass(frozen=True, slots=True)
class Interval:
    """A named interval (see the module docstring)."""

    name: str
    weekdays: frozenset[int]  # 0 = Monday
    times: tuple[tuple[int, int], ...]  # minutes of the day: [start, end); end may pass 1440
    tz: str

    def contains(self, epoch: float) -> bool:
        at = local(epoch, self.tz)
        minute = at.hour * 60 + at.minute
        day = at.weekday()
        for start, end in self.times:
            if day in self.weekdays and start <= minute < end:
                return True
            # a range past midnight: the early hours belong to the day before
            if end > 1440 and (day - 1) % 7 in self.weekdays and minute < end - 1440:
                return True
        return False


def _weekdays(value: object) -> frozenset[int]:
    if value is None:
        return frozenset(range(7))
    parts: list[str] = []
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    elif isinstance(value, list) and all(isinstance(p, str) for p in value):
        parts = [p.strip() for p in value]
    else:
        raise TimeError(f"weekdays: not a list of days: {value!r}")
    days: set[int] = set()
    for part in parts:
        first, _, last = part.lower().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise TimeError(f"weekdays: {part!r} is not a day or a range of days "
                            f"({', '.join(WEEKDAYS)}; e.g. 'mon-fri')")
        a = WEEKDAYS.index(first)
        b = WEEKDAYS.index(last) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    if not days:
        raise TimeError("weekdays: no day")
    return frozenset(days)


def _minutes(text: str, whole: str) -> int:
    m = _TIME.match(text.strip())
    if m is None or (m.group(1) == "24" and m.group(2) != "00"):
        raise TimeError(f"times: {whole!r} is not a range 'HH:MM-HH:MM' (e.g. '09:00-17:00')")
    return int(m.group(1)) * 60 + int(m.group(2))


def _times(value: object) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ((0, 1440),)
    texts: Sequence[object] = [value] if isinstance(value, str) else (
        value if isinstance(value, list) else [value])
    out = []
    for text in texts:
        if not isinstance(text, str) or text.count("-") != 1:
            raise TimeError(f"times: {text!r} is not a range 'HH:MM-HH:MM' (e.g. '09:00-17:00')")
        a_text, b_text = text.split("-")
        a, b = _minutes(a_text, text), _minutes(b_text, text)
        if a == b:
            raise TimeError(f"times: {text!r} is empty (start and end are the same)")
        if a >= 1440:
            raise TimeError(f"times: {text!r} starts at the end of the day")
        out.append((a, b if b > a else b + 1440))
    return tuple(out)


def compile_interval(name: str, spec: Mapping[str, object]) -> Interval:
    """An interval from its rule-file mapping; raises TimeError naming the field."""
    tz = spec.get("tz", "UTC")
    parts: dict[str, Any] = {}
    for key, parse in (("tz", zone), ("weekdays", _weekdays), ("times", _times)):
        if key == "tz" or key in spec:
            try:
                parts[key] = parse(tz if key == "tz" else spec[key])
            except TimeError as exc:
                raise TimeError(str(exc), key) from None
    return Interval(name, parts.get("weekdays", frozenset(range(7))),
                    parts.get("times", ((0, 1440),)), str(tz))


def now_data(epoch: float) -> dict[str, object]:
    """What expressions see as `now`: {epoch (whole seconds), iso}."""
    seconds = math.floor(epoch)
    return {"epoch": seconds, "iso": _iso_of(seconds)}


_ISO_CACHE: dict[int, str] = {}


def _iso_of(seconds: int) -> str:
    # Every event of one second has the same text: format it once.
    text = _ISO_CACHE.get(seconds)
    if text is None:
        if len(_ISO_CACHE) > 64:
            _ISO_CACHE.clear()
        text = _ISO_CACHE[seconds] = (datetime(1970, 1, 1, tzinfo=UTC)
                                      + timedelta(seconds=seconds)).strftime(
                                          "%Y-%m-%dT%H:%M:%SZ")
    return text
