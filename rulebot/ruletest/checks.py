"""Rule tests' expectations: compare one decision (and the fixture store after
it) with what a case expects, key by key, and say what differs.

Pure.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rulebot.engine.render import action_json
from rulebot.engine.state import MemoryRelations
from rulebot.jid import norm_bare
from rulebot.model import (
    CHANGE_TYPES,
    JSON,
    Action,
    Decision,
    Drop,
    ErrorReply,
    Relation,
)
from rulebot.rules.timefns import TimeError, to_epoch, to_iso


@dataclass(frozen=True)
class Failure:
    """One expectation that did not hold."""

    check: str  # the expectation's key, e.g. "matched"
    message: str
    expected: JSON
    got: JSON

    def diff(self) -> str:
        """A unified diff of the pretty JSON of expected and got."""
        return "\n".join(difflib.unified_diff(
            pretty(self.expected).splitlines(), pretty(self.got).splitlines(),
            "expected", "got", lineterm=""))


def pretty(value: JSON) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# --- loading ---------------------------------------------------------------------


Check = Callable[[Any, Decision, MemoryRelations], Failure | None]


def same(a: JSON, b: JSON) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, objects compare key by key."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def contains(want: JSON, got: JSON) -> bool:
    """`got` has every key of `want` (recursively, for objects) with the same value."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and contains(v, got[k])
                                             for k, v in want.items())
    return same(want, got)


def _project(got: JSON, want: JSON) -> JSON:
    """`got` cut down to the keys `want` names, so a diff shows only what was asked."""
    if isinstance(got, dict) and isinstance(want, dict):
        return {k: _project(got[k], v) for k, v in want.items() if k in got}
    return got


def action_view(action: Action) -> dict[str, JSON]:
    """An action as test expectations see it: action_json plus an error's fields."""
    view = action_json(action)
    if isinstance(action, ErrorReply):
        view.update(code=action.code, message=action.message, path=action.path)
    return view


def _want_action(want: Mapping[str, JSON]) -> dict[str, JSON]:
    out = dict(want)
    if isinstance(out.get("to"), str):
        out["to"] = [out["to"]]
    for key in ("subject", "object"):
        if isinstance(out.get(key), str):
            out[key] = norm_bare(out[key])
    for key in ("expires", "due"):
        if key in out:
            out[key] = _instant(out[key])
    return out


def _instant(value: JSON) -> JSON:
    """An instant as action_json and _row show it (ISO 8601 UTC to the second)."""
    try:
        return to_iso(to_epoch(value))
    except TimeError:
        return value  # compared as given: the difference is shown


def _action_matches(want: Mapping[str, JSON], view: Mapping[str, JSON]) -> bool:
    for key, value in want.items():
        if key == "payload_contains":
            if not contains(value, view.get("payload")):
                return False
        elif key not in view or not same(value, view[key]):
            return False
    return True


def _shown_action(want: Mapping[str, JSON] | None, view: dict[str, JSON]) -> dict[str, JSON]:
    if want is None:
        return view
    shown = {k: view[k] for k in want if k in view}
    if "payload_contains" in want:
        shown["payload_contains"] = _project(view.get("payload"), want["payload_contains"])
    return shown


def _check_actions(want: list[dict[str, JSON]], d: Decision, _: MemoryRelations
                   ) -> Failure | None:
    wants = [_want_action(w) for w in want]
    views = [action_view(a) for a in d.actions]
    if len(wants) == len(views) and all(map(_action_matches, wants, views)):
        return None
    got = [_shown_action(wants[i] if i < len(wants) else None, v) for i, v in enumerate(views)]
    if len(wants) != len(views):
        message = f"expected {len(wants)} action(s), got {len(views)}"
    else:
        bad = [str(i) for i, (w, v) in enumerate(zip(wants, views, strict=True))
               if not _action_matches(w, v)]
        message = f"action(s) [{', '.join(bad)}] differ"
    return Failure("actions", message, wants, got)


def _check_matched(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    if list(d.matched) == want:
        return None
    return Failure("matched", "the matched rules differ", want, list(d.matched))


def _check_not_matched(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    hit = [n for n in d.matched if n in want]
    if not hit:
        return None
    return Failure("not_matched", f"rule(s) matched that must not: {', '.join(hit)}",
                   [n for n in d.matched if n not in want], list(d.matched))


def _check_error(want: dict[str, JSON], d: Decision, _: MemoryRelations) -> Failure | None:
    views = [action_view(a) for a in d.actions if isinstance(a, ErrorReply)]
    if any(_action_matches(want, v) for v in views):
        return None
    got = _shown_action(want, views[0]) if views else None
    path = f" and path {want['path']!r}" if "path" in want else ""
    return Failure("error", f"no error reply with code {want['code']!r}{path}", want, got)


def _drops(d: Decision) -> list[Drop]:
    return [a for a in d.actions if isinstance(a, Drop)]


def _check_drop(want: bool, d: Decision, _: MemoryRelations) -> Failure | None:
    drops = _drops(d)
    if bool(drops) == want:
        return None
    return Failure("drop", "expected a drop" if want else "expected no drop",
                   {"drop": want}, {"drop": bool(drops), "actions": [action_view(a) for a in
                                                                     d.actions]})


def _check_reason(want: str | None, d: Decision, _: MemoryRelations) -> Failure | None:
    reasons = [a.reason for a in _drops(d)]
    if want in reasons:
        return None
    return Failure("reason", f"no drop with reason {want!r}", {"drop": {"reason": want}},
                   {"drop": {"reason": reasons[0]} if reasons else None})


def _effective(d: Decision) -> list[Action]:
    return [a for a in d.actions if a.to or isinstance(a, CHANGE_TYPES)]


def _check_no_actions(want: bool, d: Decision, _: MemoryRelations) -> Failure | None:
    effective = _effective(d)
    if (not effective) == want:
        return None
    return Failure("no_actions", "expected nothing to be sent or changed" if want else
                   "expected something to be sent or changed",
                   [] if want else ["(at least one action that sends or changes)"],
                   [action_view(a) for a in effective])


def _row(rel: Relation | None, with_attrs: bool, with_expires: bool = False
         ) -> dict[str, JSON] | None:
    if rel is None:
        return None
    row: dict[str, JSON] = {"subject": rel.subject, "object": rel.object, "kind": rel.kind}
    if with_attrs:
        row["attrs"] = dict(rel.attrs)
    if with_expires:
        row["expires"] = None if rel.expires is None else _instant(rel.expires)
    return row


def _check_relations_after(want: list[dict[str, JSON]], _: Decision, store: MemoryRelations
                           ) -> Failure | None:
    wants, got, missing = [], [], []
    for w in want:
        key = (norm_bare(w["subject"]), norm_bare(w["object"]), w["kind"])
        expected = {"subject": key[0], "object": key[1], "kind": key[2]}
        if "attrs" in w:
            expected["attrs"] = w["attrs"]
        if "expires" in w:
            expected["expires"] = _instant(w["expires"])
        found = _row(store.get(*key), "attrs" in w, "expires" in w)
        wants.append(expected)
        got.append(found)
        if found is None or not same(found, expected):
            missing.append(f"{key[0]} -{key[2]}-> {key[1]}")
    if not missing:
        return None
    return Failure("relations_after", f"missing or different after the decision: "
                   f"{', '.join(missing)}", wants, got)


def _check_relations_absent(want: list[dict[str, JSON]], _: Decision, store: MemoryRelations
                            ) -> Failure | None:
    present = [_row(store.get(norm_bare(w["subject"]), norm_bare(w["object"]), w["kind"]), False)
               for w in want]
    rows = [r for r in present if r is not None]
    if not rows:
        return None
    return Failure("relations_absent_after", "present after the decision: " + ", ".join(
        f"{r['subject']} -{r['kind']}-> {r['object']}" for r in rows), [], rows)


def _check_errors(want: list[str], d: Decision, _: MemoryRelations) -> Failure | None:
    got = [f"{e.rule}: {e.message}" for e in d.errors]
    unexpected = [g for g in got if not any(w in g for w in want)]
    unmet = [w for w in want if not any(w in g for g in got)]
    if not unexpected and not unmet:
        return None
    message = ("rule(s) failed at run time" if unexpected
               else "expected runtime error(s) did not happen")
    return Failure("errors", message, want, got)


CHECKS: dict[str, Check] = {
    "matched": _check_matched,
    "not_matched": _check_not_matched,
    "actions": _check_actions,
    "error": _check_error,
    "drop": _check_drop,
    "reason": _check_reason,
    "no_actions": _check_no_actions,
    "relations_after": _check_relations_after,
    "relations_absent_after": _check_relations_absent,
    "errors": _check_errors,
}
