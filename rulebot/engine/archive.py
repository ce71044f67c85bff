"""The inbound archive's lines: one decided event, as `rulebot replay` needs it.

Pure (rulebot.daemon.archive writes the lines to files; rulebot.ruletest.replay
reads them). A line is one JSON object:

    {"archive": 1, "time": "2026-12-02T10:00:00.123Z", "version": "2a5738db4e73",
     "envelope": {"event": {...}, "sender": "alice@example.com",
                  "from": "alice@example.com/phone",
                  "stanza": {"kind": "message", "type": "chat", "id": "m1"},
                  "bot": "friend@example.com", "now": 1796205600.123, "timer": null},
     "decision": {"matched": ["request"], "actions": [{"type": "forward", ...,
                  "payload": "<digest>"}]},
     "privacy": {"dropped": ["event.text"], "hashed": []}}

`decision` is the decision's view (rulebot.engine.compare): payloads by digest
(taken with hashed fields' values hashed wherever a payload repeats them),
state changes (relate, count, schedule...) whole, so replay can make the
store evolve as it did. `privacy` is there when fields were dropped or hashed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rulebot.engine.compare import View, view
from rulebot.model import (
    JSON,
    LATEST,
    Cancel,
    Count,
    Decision,
    Envelope,
    Relate,
    Reset,
    Schedule,
    Stanza,
    StateChange,
    Unrelate,
)
from rulebot.rules.timefns import TimeError, to_epoch

FORMAT = 1


@dataclass(frozen=True)
class Privacy:
    """Event fields not to keep: `drop` removes them, `hash` replaces each value
    by a salted digest (equal values stay equal, so rules comparing them still
    agree). Paths are dotted, from the envelope: `event.text`, `event.card.number`."""

    drop: tuple[str, ...] = ()
    hash: tuple[str, ...] = ()
    salt: str = ""

    def apply(self, event: Mapping[str, JSON]) -> tuple[dict[str, JSON], dict[str, JSON],
                                                        dict[str, str]]:
        """A copy of `event` without the dropped fields and with the hashed ones
        hashed; what was done (empty when nothing was); and each dropped or
        hashed text value with what replaces it wherever the decision repeats
        it (`scrubber`): its hash, or DROPPED."""
        out: dict[str, JSON] = copy.deepcopy(dict(event))
        hashes: dict[str, str] = {}

        def drop(value: JSON) -> None:
            for text in _texts(value):
                hashes.setdefault(text, DROPPED)

        def digest(value: JSON) -> JSON:
            hashed = self._digest(value)
            if isinstance(value, str):
                hashes[value] = hashed
            return hashed

        dropped = [p for p in self.drop if _edit(out, p, None, drop)]
        hashed = [p for p in self.hash if _edit(out, p, digest)]
        done: dict[str, JSON] = {}
        if dropped or hashed:
            done = {"dropped": list(dropped), "hashed": list(hashed)}
        return out, done, hashes

    def _digest(self, value: JSON) -> str:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        return "h:" + hashlib.blake2b((self.salt + "\0" + text).encode(),
                                      digest_size=12).hexdigest()


def _texts(value: JSON) -> list[str]:
    """Every text in a JSON value (a dropped field's, to scrub them all)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    return []


def _edit(event: dict[str, JSON], path: str, change: object,
          dropped: Callable[[JSON], None] | None = None) -> bool:
    """Drop (change None; `dropped` sees the value) or transform the field at
    `path` (`event.a.b`); whether it was there."""
    parts = path.split(".")
    if parts[0] != "event" or len(parts) < 2:
        return False
    node: JSON = event
    for part in parts[1:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    last = parts[-1]
    if not isinstance(node, dict) or last not in node:
        return False
    if change is None:
        if dropped is not None:
            dropped(node[last])
        del node[last]
    else:
        node[last] = change(node[last])  # type: ignore[operator]
    return True


#: What a dropped field's text becomes wherever the decision repeats it.
DROPPED = "(dropped)"


def scrubber(hashes: Mapping[str, str]) -> Callable[[JSON], JSON]:
    """Replaces, anywhere in a decision's actions (payloads before their
    digest, relation attrs, a timer's event, a drop's reason...), a text equal
    to a hashed field's value by its hash and a dropped field's by DROPPED:
    what the archive hides in the event it hides everywhere, and a payload
    that passes a hashed field on (`text: event.text`) digests as replay
    computes it from the hashed event."""
    def scrub(value: JSON) -> JSON:
        if isinstance(value, str):
            return hashes.get(value, value)
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        return value
    return scrub


def entry(env: Envelope, decision: Decision, stamp: str,
          privacy: Privacy | None = None) -> dict[str, JSON]:
    """The archive line (as a JSON object) of one decided event."""
    event: Mapping[str, JSON] = env.event
    done: dict[str, JSON] = {}
    hashes: dict[str, str] = {}
    if privacy is not None:
        event, done, hashes = privacy.apply(env.event)
    out: dict[str, JSON] = {
        "archive": FORMAT, "time": stamp, "version": decision.version,
        "envelope": {"event": dict(event), "sender": env.sender, "from": env.from_,
                     "stanza": {"kind": env.stanza.kind, "type": env.stanza.type,
                                "id": env.stanza.id},
                     "bot": env.bot, "now": env.now,
                     "timer": None if env.timer is None else dict(env.timer)},
        "decision": view(decision, scrubber(hashes) if hashes else None).to_json(),
    }
    if done:
        out["privacy"] = done
    if decision.silenced:  # an operator's mute decided it: replay does not compare it
        out["silenced"] = list(decision.silenced)
    return out


@dataclass(frozen=True)
class Archived:
    """One archive line read back."""

    envelope: Envelope
    recorded: View
    version: str
    time: str
    changes: tuple[StateChange, ...]  # what the recorded decision changed, to apply again
    #: event fields the archive dropped or hashed (Privacy): a candidate that
    #: reads them, or an event schema that requires them, cannot decide as live
    redacted: tuple[str, ...] = ()
    silenced: tuple[str, ...] = ()  # the silences that changed the recorded decision


class BadLine(ValueError):
    """An archive line that is not one (rulebot replay reports and skips it)."""


def parse(line: str) -> Archived:
    """An archive line read back; raises BadLine saying what is wrong."""
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise BadLine(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("archive") != FORMAT:
        raise BadLine(f"not an archive line of format {FORMAT}")
    try:
        env, dec = raw["envelope"], raw["decision"]
        if not isinstance(env, dict) or not isinstance(dec, dict) \
                or not isinstance(env.get("event"), dict) \
                or not isinstance(env.get("timer"), dict | None) \
                or not isinstance(raw.get("privacy") or {}, dict):
            raise BadLine("envelope, decision, event, timer and privacy must be objects")
        stanza = env["stanza"]
        if stanza["kind"] not in ("message", "presence", "timer"):
            raise BadLine(f"unknown stanza kind {stanza['kind']!r}")
        now = env.get("now")
        if now is not None and not (isinstance(now, int | float) and not isinstance(now, bool)
                                    and math.isfinite(now) and 0 <= now < LATEST):
            raise BadLine(f"now is not a time: {now!r}")
        envelope = Envelope(env["event"], str(env["sender"]), str(env["from"]),
                            Stanza(stanza["kind"], str(stanza["type"]), stanza.get("id")),
                            str(env["bot"]), None if now is None else float(now),
                            env.get("timer"))
        recorded = View.from_json(dec)
        changes = tuple(_change(a, envelope.sender) for a in recorded.actions
                        if a.get("type") in _CHANGES)
        done = raw.get("privacy") or {}
        redacted = tuple(str(p) for key in ("dropped", "hashed") for p in done.get(key, ()))
        return Archived(envelope, recorded, str(raw.get("version", "")),
                        str(raw.get("time", "")), changes, redacted,
                        tuple(str(i) for i in raw.get("silenced", ())))
    except BadLine:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, TimeError) as exc:
        raise BadLine(f"malformed archive line: {type(exc).__name__}: {exc}") from exc


_CHANGES = frozenset({"relate", "unrelate", "count", "reset", "schedule", "cancel"})


def _change(action: Mapping[str, JSON], sender: str) -> StateChange:
    kind, rule = action["type"], str(action.get("rule"))
    if kind == "relate":
        expires = action.get("expires")
        return Relate(str(action["subject"]), str(action["object"]), str(action["kind"]),
                      action.get("attrs"), bool(action["mutual"]), rule,
                      expires=None if expires is None else to_epoch(expires))
    if kind == "unrelate":
        return Unrelate(str(action["subject"]), str(action["object"]), str(action["kind"]),
                        bool(action["mutual"]), rule)
    if kind == "count":
        by = action["by"]
        return Count(str(action["counter"]), str(action["key"]),
                     by if isinstance(by, int) else 1, rule)
    if kind == "reset":
        return Reset(str(action["counter"]), str(action["key"]), rule)
    if kind == "schedule":
        return Schedule(str(action["key"]), to_epoch(action["due"]), action.get("event"),
                        rule, sender)
    return Cancel(str(action["key"]), rule)

