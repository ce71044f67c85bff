"""`rulebot run`: wires config, rule set, dispatcher and the XMPP connection together.

Imports: config, rules, dispatch, xmpp, errors, logs, stdlib. The event loop
and the signal handlers belong to cli.py; this module owns what runs on it.
"""

from __future__ import annotations

import asyncio
import logging

from rulebot.config import Config
from rulebot.dispatch import Dispatcher, Inbound
from rulebot.errors import ConnectError
from rulebot.logs import LOGGER, fields
from rulebot.rules import RuleSet
from rulebot.xmpp import BotConnection

log = logging.getLogger(LOGGER)

EXIT_OK = 0
EXIT_CONNECT = 3


class RuleRef:
    """The rule set in force: one reference, swapped whole between events."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._ruleset = ruleset

    def get(self) -> RuleSet:
        return self._ruleset

    def swap(self, ruleset: RuleSet) -> RuleSet:
        old, self._ruleset = self._ruleset, ruleset
        return old


class Daemon:
    def __init__(self, config: Config, secret: str, ruleset: RuleSet) -> None:
        self.config = config
        self.rules = RuleRef(ruleset)
        self.dispatcher = Dispatcher(config, self.rules.get)
        self.connection = BotConnection(config, secret, self.on_inbound)
        self.handled = 0

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
        try:
            await self.connection.run(stop)
        except ConnectError as exc:
            log.error(str(exc), extra=fields(event="fatal"))
            return EXIT_CONNECT
        log.info("stopped", extra=fields(event="exit", handled=self.handled))
        return EXIT_OK
