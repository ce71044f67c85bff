"""The dispatcher with the shipped rules and inbound stanzas as values, for the
tests of the bot and of the daemon's decision line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound
from rulebot.config import parse_config
from rulebot.rules.loader import load_rules

ROOT = Path(__file__).resolve().parents[2]
RULESET = load_rules(ROOT / "rules")


def dispatcher(**config: Any) -> Dispatcher:
    base = {"jid": "friend@localhost", "rules": "rules"}
    base.update(config)
    return Dispatcher(parse_config(json.dumps(base), base=ROOT), lambda: RULESET)


def msg(body: str | None = None, *, sender: str = "alice@localhost/phone", mtype: str = "chat",
        sid: str | None = "s1", container: str | None = None) -> Inbound:
    return Inbound("message", sender, mtype, sid, body, container)


CHAT = json.dumps({"type": "chat", "id": "e1", "to": "bob@localhost", "text": "hi"})
