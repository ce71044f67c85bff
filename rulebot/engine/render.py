"""JSON views of decisions for logs, `rulebot eval` and the audit trail.

Pure.
"""

from __future__ import annotations

from rulebot.model import (
    JSON,
    Action,
    Cancel,
    Count,
    Decision,
    Drop,
    ErrorReply,
    Relate,
    Reset,
    Schedule,
    Unrelate,
)
from rulebot.rules.timefns import to_iso


def action_json(action: Action) -> dict[str, JSON]:
    out: dict[str, JSON] = {"type": action.type, "to": list(action.to)}
    if isinstance(action, ErrorReply):
        error: dict[str, JSON] = {"code": action.code, "message": action.message}
        if action.path is not None:
            error["path"] = action.path
        out["payload"] = {"error": error}
    elif isinstance(action, Drop):
        out["reason"] = action.reason
    elif isinstance(action, Schedule):
        out.update(key=action.key, due=to_iso(action.due), event=action.event)
    elif isinstance(action, Cancel):
        out.update(key=action.key)
    elif isinstance(action, Count):
        out.update(counter=action.counter, key=action.key, by=action.by)
    elif isinstance(action, Reset):
        out.update(counter=action.counter, key=action.key)
    elif isinstance(action, Relate | Unrelate):
        out.update(subject=action.subject, object=action.object, kind=action.kind,
                   mutual=action.mutual)
        if isinstance(action, Relate):
            out["attrs"] = action.attrs
            if action.expires is not None:
                out["expires"] = to_iso(action.expires)
    else:
        out["payload"] = action.payload
    out["rule"] = action.rule
    return out


def decision_json(decision: Decision) -> dict[str, JSON]:
    return {
        "version": decision.version,
        "matched": list(decision.matched),
        "actions": [action_json(a) for a in decision.actions],
        "errors": [{"rule": e.rule, "message": e.message} for e in decision.errors],
        "notes": list(decision.notes),
        **({"silenced": list(decision.silenced)} if decision.silenced else {}),
    }
