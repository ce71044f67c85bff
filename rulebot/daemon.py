"""`rulebot run`: wires config, rule set, dispatcher and the XMPP connection together.

Imports: config, rules, reload, dispatch, store, store_values, xmpp, errors,
logs, model, stdlib. The event loop and the signal handlers belong to cli.py;
this module owns what runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST

from rulebot.audit import AuditLog
from rulebot.config import Config
from rulebot.dispatch import Dispatcher, Inbound, Meta, Outbound, Outcome
from rulebot.errors import ConnectError
from rulebot.explain import explain
from rulebot.httpd import StatusServer, json_page
from rulebot.logs import LOG_FLUSH_SECONDS, LOGGER, fields, flush_logs
from rulebot.metrics import Metrics
from rulebot.model import JSON, Relate, StateChange
from rulebot.reload import Reloader, ReloadResult, RuleRef
from rulebot.rules import RuleSet
from rulebot.state import PeekState
from rulebot.store import RelationStore
from rulebot.store_values import Change, RelateChange, UnrelateChange
from rulebot.xmpp import BotConnection

log = logging.getLogger(LOGGER)

EXIT_OK = 0
EXIT_CONNECT = 3


def store_changes(changes: Sequence[StateChange]) -> list[Change]:
    """The engine's relation actions as store changes (mutual ones in both directions)."""
    out: list[Change] = []
    for c in changes:
        pairs = [(c.subject, c.object)] + ([(c.object, c.subject)] if c.mutual else [])
        for subject, obj in pairs:
            if isinstance(c, Relate):
                attrs = c.attrs if isinstance(c.attrs, dict) else {}
                out.append(RelateChange(subject, obj, c.kind, attrs))
            else:
                out.append(UnrelateChange(subject, obj, c.kind))
    return out


class Daemon:
    def __init__(self, config: Config, secret: str, ruleset: RuleSet,
                 store: RelationStore | None = None) -> None:
        self.config = config
        self.rules = RuleRef(ruleset)
        self.store = store
        self.dispatcher = Dispatcher(config, self.rules.get, relations=store,
                                     apply=self._apply if store else None)
        self.connection = BotConnection(config, secret, self.on_inbound)
        self.reloader = Reloader(config.rules, self.rules, self.on_reload)
        self.handled = 0
        self._reload_failing = False
        self.started = time.time()
        self.metrics = Metrics()
        sweeper = self.connection.sweeper
        self.metrics.bind(lambda: self.connection.online, lambda: len(self.connection.queue),
                          self.connection.unacked,
                          (lambda: sweeper.swept) if sweeper is not None else lambda: 0)
        self.metrics.observe_ruleset(ruleset)
        self.audit = (AuditLog(config.audit_path, config.audit_max_bytes, config.audit_backups,
                               config.audit_payloads) if config.audit_path else None)
        self.trace = frozenset(config.trace_senders)
        self.status_server: StatusServer | None = None

    def status(self) -> dict[str, JSON]:
        """What is live right now (the /status page and `rulebot status`)."""
        rs = self.rules.get()
        per_file: dict[str, int] = {}
        for rule in rs.rules:
            per_file[rule.file] = per_file.get(rule.file, 0) + 1
        last = self.reloader.last
        return {
            "jid": self.config.jid,
            "mode": self.config.mode,
            "connected": self.connection.online,
            "outbound_queue": len(self.connection.queue),
            "uptime_seconds": round(time.time() - self.started, 1),
            "handled": self.handled,
            "rules": {"version": rs.version, "count": len(rs.rules), "files": per_file},
            "last_reload": None if last is None else {
                "ok": last.ok, "reason": last.reason, "version": last.new_version,
                "errors": [i.format() for i in last.errors]},
        }

    def _apply(self, changes: Sequence[StateChange]) -> None:
        assert self.store is not None
        self.store.apply(store_changes(changes))

    def on_reload(self, result: ReloadResult) -> None:
        """Count the reload; tell the configured admins when it fails, and when it recovers."""
        self.metrics.observe_reload(result, time.time())
        self.metrics.observe_ruleset(self.rules.get())
        if result.ok and not self._reload_failing:
            return
        self._reload_failing = not result.ok
        payload: dict[str, JSON] = {"type": "rulebot.reload", "ok": result.ok,
                                    "version": result.new_version}
        if result.ok:
            payload["previous"] = result.old_version
        else:
            payload["errors"] = [i.format() for i in result.errors[:20]]
        for jid in self.config.notify_jids:
            self.connection.send(Outbound(jid, payload, "body", self.config.message_type,
                                          "rb-" + uuid.uuid4().hex[:20],
                                          Meta(self.config.jid, None, result.new_version,
                                               None)))

    def on_inbound(self, inbound: Inbound) -> None:
        started = time.perf_counter()
        try:
            outcome = self.dispatcher.handle(inbound)
        except Exception:  # a bug must cost one event, never the daemon
            log.exception("internal error while handling a stanza", extra=fields(
                event="internal_error", from_=inbound.from_, stanza_id=inbound.id))
            return
        for out in outcome.outbound:
            self.connection.send(out)
        self.handled += 1
        self.metrics.observe(inbound.kind, outcome, time.perf_counter() - started,
                             len(outcome.outbound))
        if self.audit is not None:
            self.audit.record(inbound, outcome)
        if self.trace and inbound.from_.split("/", 1)[0].lower() in self.trace:
            self._log_trace(inbound, outcome)

    def _log_trace(self, inbound: Inbound, outcome: Outcome) -> None:
        """The per-rule trace for a sender under investigation (trace_senders)."""
        if outcome.envelope is None:
            return
        # After the decision: relation changes it made are visible; no tokens are taken.
        explanation = explain(self.rules.get(), outcome.envelope,
                              state=PeekState(self.dispatcher.state))
        log.info("trace", extra=fields(event="trace", from_=inbound.from_,
                                       stanza_id=inbound.id,
                                       rules=explanation.to_json()["rules"]))

    async def run(self, stop: asyncio.Event) -> int:
        rs = self.rules.get()
        log.info("starting", extra=fields(event="starting", jid=self.config.jid,
                                          mode=self.config.mode, host=self.config.host,
                                          port=self.config.port, rules=self.config.rules,
                                          version=rs.version, rule_count=len(rs.rules)))
        watcher = asyncio.ensure_future(self._watch(stop)) if self.config.watch else None
        flusher = asyncio.ensure_future(self._flush_logs())
        if self.config.status_listen:
            host, _, port = self.config.status_listen.rpartition(":")
            self.status_server = StatusServer(host, int(port), {
                "/metrics": lambda: (200, CONTENT_TYPE_LATEST, self.metrics.render()),
                "/status": json_page(self.status),
                "/healthz": lambda: (200, "text/plain", b"ok\n"),
            })
            bound = await self.status_server.start()
            log.info("status endpoint", extra=fields(event="status_listen", host=host,
                                                     port=bound))
        try:
            await self.connection.run(stop)
        except ConnectError as exc:
            log.error(str(exc), extra=fields(event="fatal"))
            return EXIT_CONNECT
        finally:
            flusher.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self.reloader.close()
            if self.store is not None:
                self.store.close()
            if self.status_server is not None:
                await self.status_server.close()
            if self.audit is not None:
                self.audit.close()
        log.info("stopped", extra=fields(event="exit", handled=self.handled))
        return EXIT_OK

    @staticmethod
    async def _flush_logs() -> None:
        """Buffered log lines reach stderr within LOG_FLUSH_SECONDS even when idle."""
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            flush_logs()

    async def _watch(self, stop: asyncio.Event) -> None:
        try:
            await self.reloader.watch(stop, self.config.debounce_ms)
        except Exception:  # watching is a convenience; SIGHUP still works without it
            log.exception("watching the rules path failed; reload with SIGHUP",
                          extra=fields(event="watch_failed"))
