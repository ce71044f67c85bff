"""The admin commands carried out (docs/admin.md): for the XEP-0050 ad-hoc
commands of rulebot.xmpp.admin and the `!` chat fallback. Every command, and
every refused attempt, is logged and written to the audit trail.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from rulebot.bot.admin import BY_NODE, AdminResult, check_args
from rulebot.engine.explain import explain
from rulebot.engine.state import PeekState
from rulebot.jid import norm_bare, valid_jid
from rulebot.logs import LOGGER, fields
from rulebot.model import JSON, Envelope, Silence, stamp
from rulebot.rules.silences import compile_silence, parse_until
from rulebot.rules.timefns import TimeError, parse_duration
from rulebot.store.base import StoreError
from rulebot.store.values import RelateChange

if TYPE_CHECKING:
    from rulebot.daemon.app import Daemon

log = logging.getLogger(LOGGER)
#: Senders whose last event is kept for `explain` (least recently seen dropped;
#: an event is at most limits.max_bytes of JSON, 64 kB by default).
LAST_EVENTS = 1_000
#: Relations listed at most.
LIST_LIMIT = 100


class Admin:
    def __init__(self, daemon: Daemon, admins: tuple[str, ...]) -> None:
        self.daemon = daemon
        self.admins = frozenset(norm_bare(a) for a in admins)
        self.last: OrderedDict[str, Envelope] = OrderedDict()

    def allowed(self, jid: str) -> bool:
        return norm_bare(jid) in self.admins

    def seen(self, env: Envelope) -> None:
        """Keep `env` as its sender's last event (for explain)."""
        last = self.last
        sender = norm_bare(env.sender)
        last[sender] = env
        last.move_to_end(sender)
        if len(last) > LAST_EVENTS:
            last.popitem(last=False)

    def refused(self, jid: str, command: str, via: str) -> None:
        log.warning("admin command refused", extra=fields(
            event="admin_refused", who=jid, command=command, via=via))
        if self.daemon.audit is not None:
            self.daemon.audit.record_admin(jid, command, {}, via, False, "forbidden")

    async def run(self, who: str, command: str, args: Mapping[str, str],
                  via: str) -> AdminResult:
        spec = BY_NODE.get(command)
        if spec is None:
            result = AdminResult(False, f"unknown command {command!r}", condition="item-not-found")
        elif (missing := check_args(spec, args)) is not None:
            result = AdminResult(False, missing, condition="bad-request")
        else:
            try:
                result = await self._run(command, args, who)
            except StoreError as exc:
                result = AdminResult(False, f"the store failed: {exc}",
                                     condition="internal-server-error")
            except Exception:  # a bug must cost one command, answered, never the daemon
                log.exception("admin command failed", extra=fields(
                    event="internal_error", who=who, command=command))
                result = AdminResult(False, "internal error (logged)",
                                     condition="internal-server-error")
        log.info("admin command", extra=fields(event="admin", who=who, command=command,
                                               args=dict(args), via=via, ok=result.ok,
                                               result=result.text.splitlines()[0]
                                               if result.text else ""))
        if self.daemon.audit is not None:
            self.daemon.audit.record_admin(who, command, dict(args), via, result.ok,
                                           result.text)
        return result

    async def _run(self, command: str, args: Mapping[str, str], who: str) -> AdminResult:
        d = self.daemon
        if command == "status":
            page = d.status()
            rules = page.get("rules")
            version = rules.get("version") if isinstance(rules, dict) else None
            count = rules.get("count") if isinstance(rules, dict) else None
            silences = page.get("silences")
            text = (f"connected: {'yes' if page.get('connected') else 'NO'}; rules {version} "
                    f"({count} rules); handled {page.get('handled')}; silences in force: "
                    f"{len(silences) if isinstance(silences, list) else 0}")
            return AdminResult(True, text, page)
        if command == "reload":
            r = await d.reloader.reload("admin")
            if not r.ok:
                return AdminResult(False, "reload failed, the rules in force are kept: "
                                   + "; ".join(i.format() for i in r.errors),
                                   condition="not-acceptable")
            return AdminResult(True, f"reloaded: {r.old_version} -> {r.new_version}",
                               {"old_version": r.old_version, "version": r.new_version})
        if command == "explain":
            return self._explain(args["sender"])
        if command.startswith("silence-"):
            return self._silence(command, args, who)
        return self._relations(command, args)

    def _explain(self, sender: str) -> AdminResult:
        env = self.last.get(norm_bare(sender))
        if env is None:
            return AdminResult(False, f"no event of {sender} since the bot started",
                               condition="item-not-found")
        d = self.daemon
        e = explain(d.rules.get(), env, state=PeekState(d.dispatcher.state),
                    max_recipients=d.config.max_recipients, silences=d.mutings)
        lines = [f"last event of {env.sender} at {stamp(env.now or 0)}: "
                 f"{json.dumps(env.event, ensure_ascii=False)[:300]}"]
        lines += [f"{t.index:>3} {t.rule} {t.status} {t.note}".rstrip() for t in e.rules
                  if t.status != "not-matched"]
        lines.append(f"winner: {e.winner or '-'}")
        return AdminResult(True, "\n".join(lines), e.to_json())

    def _silence(self, command: str, args: Mapping[str, str], who: str) -> AdminResult:
        d = self.daemon
        store = d.store
        if store is None:
            return AdminResult(False, "no store", condition="feature-not-implemented")
        now = time.time()
        if command == "silence-list":
            found = store.silences(now)
            text = "\n".join(_silence_line(s) for s in found) or "no silences in force"
            return AdminResult(True, text, [s.to_json() for s in found])
        if command == "silence-expire":
            if not store.silence_expire(args["id"], now):
                return AdminResult(False, f"no silence in force with id {args['id']}",
                                   condition="item-not-found")
            d.read_silences()
            return AdminResult(True, f"silence {args['id']} ended", {"id": args["id"]})
        try:
            until = parse_until(args["until"], now)
        except (TimeError, OverflowError) as exc:
            return AdminResult(False, str(exc), condition="bad-request")
        made = Silence(uuid.uuid4().hex[:12], until, who, args["comment"], args.get("rule"),
                       args.get("sender"), args.get("match"), now, now)
        _, problems = compile_silence(made, d.rules.get().lists)
        if made.rule is not None and made.rule not in {r.name for r in d.rules.get().rules}:
            problems.append(f"no rule {made.rule!r} in the rules in force")
        if problems:
            return AdminResult(False, "; ".join(problems), condition="bad-request")
        store.silence_add(made)
        d.read_silences()  # in force now, not at the next poll
        return AdminResult(True, f"silence {made.id} added: {_silence_line(made)}",
                           made.to_json())

    def _relations(self, command: str, args: Mapping[str, str]) -> AdminResult:
        store = self.daemon.store
        if store is None:
            return AdminResult(False, "no store", condition="feature-not-implemented")
        if command == "relations-list":
            rows = []
            for row in store.list(_jid_or_none(args.get("subject")), args.get("kind"),
                                  _jid_or_none(args.get("object"))):
                rows.append(row)
                if len(rows) == LIST_LIMIT:
                    break
            data: list[JSON] = [{"subject": r.subject, "kind": r.kind, "object": r.object,
                                 "expires": r.expires} for r in rows]
            text = "\n".join(f"{r.subject} {r.kind} {r.object}"
                             + (f" (until {r.expires})" if r.expires else "")
                             for r in rows) or "no such relations"
            return AdminResult(True, text, data)
        subject, obj, kind = args["subject"], args["object"], args["kind"]
        bad = [j for j in (subject, obj) if not valid_jid(j)]
        if bad:
            return AdminResult(False, f"not a JID: {', '.join(bad)}", condition="bad-request")
        s, o = norm_bare(subject), norm_bare(obj)
        if command == "relations-add":
            expires = None
            if args.get("ttl"):
                try:
                    expires = stamp(time.time() + parse_duration(args["ttl"]))
                except (TimeError, ValueError, OverflowError) as exc:  # past the year 9999
                    return AdminResult(False, str(exc), condition="bad-request")
            store.apply([RelateChange(s, o, kind, {}, expires=expires)])
            return AdminResult(True, f"{s} {kind} {o} added"
                               + (f" until {expires}" if expires else ""))
        removed = store.unrelate(s, o, kind)
        if not removed:
            return AdminResult(False, f"no relation {s} {kind} {o}", condition="item-not-found")
        return AdminResult(True, f"{s} {kind} {o} removed")


def _jid_or_none(value: str | None) -> str | None:
    return norm_bare(value) if value else None


def _silence_line(s: Silence) -> str:
    what = ", ".join(f"{k}={getattr(s, k)}" for k in ("rule", "sender", "match")
                     if getattr(s, k) is not None)
    return f"{s.id}: {what} until {stamp(s.ends)} by {s.author}: {s.comment}"
