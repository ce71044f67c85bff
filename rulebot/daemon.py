"""`rulebot run`: wires config, rule set, dispatcher and the XMPP connection together.

Imports: config, rules, reload, dispatch, xmpp, errors, logs, model, stdlib. The event loop
and the signal handlers belong to cli.py; this module owns what runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from rulebot.config import Config
from rulebot.dispatch import Dispatcher, Inbound, Meta, Outbound
from rulebot.errors import ConnectError
from rulebot.logs import LOGGER, fields
from rulebot.model import JSON
from rulebot.reload import Reloader, ReloadResult, RuleRef
from rulebot.rules import RuleSet
from rulebot.xmpp import BotConnection

log = logging.getLogger(LOGGER)

EXIT_OK = 0
EXIT_CONNECT = 3


class Daemon:
    def __init__(self, config: Config, secret: str, ruleset: RuleSet) -> None:
        self.config = config
        self.rules = RuleRef(ruleset)
        self.dispatcher = Dispatcher(config, self.rules.get)
        self.connection = BotConnection(config, secret, self.on_inbound)
        self.reloader = Reloader(config.rules, self.rules, self.on_reload)
        self.handled = 0
        self._reload_failing = False

    def on_reload(self, result: ReloadResult) -> None:
        """Tell the configured admins when a reload fails, and when it recovers."""
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
        try:
            outcome = self.dispatcher.handle(inbound)
        except Exception:  # a bug must cost one event, never the daemon
            log.exception("internal error while handling a stanza", extra=fields(
                event="internal_error", from_=inbound.from_, stanza_id=inbound.id))
            return
        for out in outcome.outbound:
            self.connection.send(out)
        self.handled += 1

    async def run(self, stop: asyncio.Event) -> int:
        rs = self.rules.get()
        log.info("starting", extra=fields(event="starting", jid=self.config.jid,
                                          mode=self.config.mode, host=self.config.host,
                                          port=self.config.port, rules=self.config.rules,
                                          version=rs.version, rule_count=len(rs.rules)))
        watcher = asyncio.ensure_future(self._watch(stop)) if self.config.watch else None
        try:
            await self.connection.run(stop)
        except ConnectError as exc:
            log.error(str(exc), extra=fields(event="fatal"))
            return EXIT_CONNECT
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self.reloader.close()
        log.info("stopped", extra=fields(event="exit", handled=self.handled))
        return EXIT_OK

    async def _watch(self, stop: asyncio.Event) -> None:
        try:
            await self.reloader.watch(stop, self.config.debounce_ms)
        except Exception:  # watching is a convenience; SIGHUP still works without it
            log.exception("watching the rules path failed; reload with SIGHUP",
                          extra=fields(event="watch_failed"))
