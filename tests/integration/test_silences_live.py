"""Silences on a running bot (real Prosody, real clients): `rulebot silence add`
mutes a rule or a sender within the daemon's poll, visibly in /status and
/metrics; `expire` lifts it."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import connect_user, nothing_more, receive, run_bot, write_config

from rulebot.cli.main import main
from rulebot.client import RequestError
from scripts import xmppserver

pytestmark = pytest.mark.integration


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def silence(store: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["silence", "--store", str(store), *args])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.splitlines()[-1])
    assert isinstance(out, dict)
    return out


async def test_silence_a_rule_and_a_sender_then_expire(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    store = tmp_path / "relations.sqlite3"
    config = write_config(server, "client", tmp_path / "rulebot.yaml", store=str(store),
                          status={"listen": "127.0.0.1:0"})
    bot = await run_bot(stack, config)
    port = (await bot.wait_log(lambda e: e.get("event") == "status_listen"))["port"]
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    carol = await connect_user(stack, server, "carol", "friend@localhost")

    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "before"})
    assert (await receive(bob)).rule == "chat-to-member"

    # Mute the member rule: evaluation goes on to the next rule, which refuses.
    mark = len(bot.logs)
    muted = silence(store, "add", "--rule", "chat-to-member", "--until", "1h",
                    "--comment", "relay loop under investigation", "--author", "ops")
    await bot.wait_log(lambda e: e.get("event") == "silences" and muted["id"] in e["added"],
                       start=mark)
    with pytest.raises(RequestError) as refused:
        await alice.request({"type": "chat", "to": "bob@localhost", "text": "muted"})
    assert refused.value.code == "not-a-member"

    # Mute a sender: carol's events are dropped without an answer.
    mark = len(bot.logs)
    quiet = silence(store, "add", "--sender", "carol@localhost", "--until", "30m",
                    "--comment", "flooding")
    await bot.wait_log(lambda e: e.get("event") == "silences" and quiet["id"] in e["added"],
                       start=mark)
    carol.send_event({"type": "ping", "id": "p-carol"})
    await nothing_more(carol, bot, alice, "friend@localhost")  # carol got no pong

    status = json.loads(await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/status"))
    shown = {s["id"]: s for s in status["silences"]}
    assert set(shown) == {muted["id"], quiet["id"]}
    assert (shown[muted["id"]]["author"], shown[muted["id"]]["comment"]) == (
        "ops", "relay loop under investigation")
    metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    assert f'rulebot_silenced_total{{silence="{muted["id"]}"}} 1.0' in metrics
    assert f'rulebot_silenced_total{{silence="{quiet["id"]}"}} 1.0' in metrics
    assert "rulebot_silences_active 2.0" in metrics

    # Expired: the rule is back.
    mark = len(bot.logs)
    silence(store, "expire", muted["id"], quiet["id"])
    await bot.wait_log(lambda e: e.get("event") == "silences" and muted["id"] in e["ended"],
                       start=mark)
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "after"})
    got = await receive(bob)
    assert (got.payload["text"], got.rule) == ("after", "chat-to-member")
    pong = await carol.request({"type": "ping"})
    assert pong.payload["type"] == "pong"
