"""Hot reload in the real daemon, on a real server, while events flow."""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import TIMEOUT, BotProcess, connect_user, receive, run_bot, write_config

from rulebot.client import RulebotClient
from rulebot.rules.loader import check_rules
from scripts import xmppserver

pytestmark = pytest.mark.integration

PING = """version: 1
rules:
  - name: ping
    match: "event.type == 'ping'"
    actions:
      - reply: {{payload: "{{type: 'pong', id: event.id, marker: '{marker}'}}"}}
"""
BROKEN = "version: 1\nrules:\n  - name: ping\n    match: \"event.type == \"\n    actions: []\n"


def write(rules: Path, marker: str) -> str:
    """Write a valid rule set answering pings with `marker`; returns its version."""
    (rules / "10-ping.yaml").write_text(PING.format(marker=marker))
    result = check_rules([rules])
    assert result.ruleset is not None
    return result.ruleset.version


async def start(stack: AsyncExitStack, server: xmppserver.ServerInfo, tmp_path: Path,
                **extra: Any) -> tuple[Path, BotProcess, RulebotClient]:
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "v0")
    config = write_config(server, "client", tmp_path / "rulebot.yaml", rules=rules,
                          reload={"debounce_ms": 100}, **extra)
    bot = await run_bot(stack, config)
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    return rules, bot, alice


async def marker(alice: RulebotClient) -> str:
    return str((await alice.request({"type": "ping"}, timeout=TIMEOUT)).payload["marker"])


async def reloaded(bot: BotProcess, start: int, ok: bool) -> dict[str, Any]:
    return await bot.wait_log(lambda e: e.get("event") == "reload" and e.get("ok") is ok,
                              start=start)


async def test_edited_rule_takes_effect_while_running(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, alice = await start(stack, server, tmp_path)
    assert await marker(alice) == "v0"
    mark = len(bot.logs)
    old = check_rules([rules]).ruleset
    new_version = write(rules, "v1")
    entry = await reloaded(bot, mark, ok=True)
    assert (entry["old_version"], entry["version"]) == (old.version if old else "", new_version)
    assert entry["changed"] == ["ping"]
    assert await marker(alice) == "v1"


async def test_broken_file_keeps_old_behaviour_and_logs_located_errors(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, alice = await start(stack, server, tmp_path, notify_jids=["admin@localhost"])
    admin = await connect_user(stack, server, "admin", "friend@localhost")
    mark = len(bot.logs)
    (rules / "10-ping.yaml").write_text(BROKEN)
    entry = await reloaded(bot, mark, ok=False)
    target = rules / "10-ping.yaml"
    assert entry["errors"] == [
        f"{target}:4:27: rules[0].match: invalid JMESPath expression: incomplete expression "
        "(\"event.type == \")",
        f"{target}:5:14: rules[0].actions: must have at least 1 item(s) ([])",
    ]
    assert await marker(alice) == "v0"  # still served by the last good set
    notice = await receive(admin)
    assert notice.payload["ok"] is False
    assert notice.payload["errors"] == entry["errors"]
    mark = len(bot.logs)
    version = write(rules, "fixed")
    await reloaded(bot, mark, ok=True)
    notice = await receive(admin)
    assert (notice.payload["ok"], notice.payload["version"]) == (True, version)
    assert await marker(alice) == "fixed"


async def test_sighup_forces_a_reload_when_watching_is_off(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, alice = await start(stack, server, tmp_path)
    config = tmp_path / "rulebot.yaml"
    text = config.read_text().replace('"debounce_ms": 100', '"watch": false')
    config.write_text(text)
    await bot.stop()
    bot = await run_bot(stack, config)
    write(rules, "quiet")
    assert await marker(alice) == "v0"  # not watching: nothing changed yet
    mark = len(bot.logs)
    bot.proc.send_signal(signal.SIGHUP)
    entry = await reloaded(bot, mark, ok=True)
    assert entry["reason"] == "SIGHUP"
    assert await marker(alice) == "quiet"


async def test_editor_style_saves_take_effect(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, alice = await start(stack, server, tmp_path)
    target = rules / "10-ping.yaml"
    # vim/emacs style: write a temporary file, rename it over the original
    mark = len(bot.logs)
    tmp = rules / ".10-ping.yaml.tmp"
    tmp.write_text(PING.format(marker="renamed"))
    os.replace(tmp, target)
    await reloaded(bot, mark, ok=True)
    assert await marker(alice) == "renamed"
    # truncate, then write in place
    mark = len(bot.logs)
    with target.open("w") as fh:
        fh.flush()
        fh.write(PING.format(marker="truncated"))
    await reloaded(bot, mark, ok=True)
    assert await marker(alice) == "truncated"
    # several quick writes: the last one wins
    mark = len(bot.logs)
    for i in range(5):
        target.write_text(PING.format(marker=f"quick{i}"))
    await reloaded(bot, mark, ok=True)
    assert await marker(alice) == "quick4"
    assert not any(e.get("event") == "reload" and e.get("ok") is False for e in bot.logs)


async def test_hundred_reloads_under_a_steady_stream_lose_nothing(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, alice = await start(stack, server, tmp_path)
    markers = {check_rules([rules]).ruleset.version: "v0"}  # type: ignore[union-attr]
    sent: list[str] = []
    stop = asyncio.Event()

    async def sender() -> None:
        # ~25 events/s: under the stock per-user rate limit of the server.
        n = 0
        while not stop.is_set() and n < 5000:
            sent.append(alice.send_event({"type": "ping", "id": f"s{n}"}))
            n += 1
            await asyncio.sleep(0.04)

    task = asyncio.ensure_future(sender())
    for step in range(100):
        mark = len(bot.logs)
        if step % 2 == 0:
            version = write(rules, f"v{step + 1}")
            markers[version] = f"v{step + 1}"
            await reloaded(bot, mark, ok=True)
        else:
            (rules / "10-ping.yaml").write_text(BROKEN)
            await reloaded(bot, mark, ok=False)
    stop.set()
    await task
    replies: dict[str, Any] = {}
    while len(replies) < len(sent):
        got = await receive(alice)
        assert got.event_id not in replies, f"{got.event_id} answered twice"
        replies[str(got.event_id)] = got
    assert sorted(replies) == sorted(sent)  # none lost, none extra
    for got in replies.values():
        # decided by exactly one version: the marker belongs to the version named
        assert got.version in markers
        assert got.payload["marker"] == markers[str(got.version)]
    reloads = [e for e in bot.logs if e.get("event") == "reload"]
    assert [e["ok"] for e in reloads] == [i % 2 == 0 for i in range(100)]
    assert len({g.version for g in replies.values()}) > 10  # the stream spanned reloads


async def test_messages_produced_during_a_server_outage_are_sent_after_reconnect(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules, bot, _alice = await start(stack, server, tmp_path, notify_jids=["admin@localhost"])
    admin = await connect_user(stack, server, "admin", "friend@localhost")
    mark = len(bot.logs)
    await asyncio.to_thread(xmppserver.stop_server, server)
    await bot.wait_log(lambda e: e.get("event") == "disconnected", start=mark)
    # While the server is down the bot still reloads, and its notice waits in the queue.
    (rules / "10-ping.yaml").write_text(BROKEN)
    await reloaded(bot, mark, ok=False)
    await asyncio.to_thread(xmppserver.restart_server, server)
    connected = await bot.wait_log(lambda e: e.get("event") == "connected", start=mark)
    assert connected["queued"] == 1
    await admin.wait_online()
    notice = await receive(admin)
    assert (notice.payload["type"], notice.payload["ok"]) == ("rulebot.reload", False)
