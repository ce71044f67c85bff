"""Change without fear, on a real server: the live bot archives what it decides
and decides every event with a shadow candidate too; `rulebot replay` re-decides
the recorded archive with the shipped rules (nothing changes) and with the
candidate (what shadow mode counted live, event for event)."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT, connect_user, receive, run_bot, write_config

from rulebot.cli.main import main
from rulebot.client import RequestError, RulebotClient
from scripts import xmppserver

pytestmark = pytest.mark.integration

FRIENDS = ROOT / "rules" / "friends"
DISABLE_FRIEND_CHAT = ("  - name: chat-friends\n", "  - name: chat-friends\n    enabled: false\n")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def status_of(port: int) -> dict[str, Any]:
    page = json.loads(await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/status"))
    assert isinstance(page, dict)
    return page


async def barrier(client: RulebotClient) -> None:
    """An event answered only after everything `client` sent before it was
    decided (the friends rules have no ping: an unknown type's refusal)."""
    with pytest.raises(RequestError) as answer:
        await client.request({"type": "barrier"})
    assert answer.value.code == "unknown-event-type"


async def test_archive_shadow_and_replay(server: xmppserver.ServerInfo, tmp_path: Path,
                                         stack: AsyncExitStack) -> None:
    candidate = tmp_path / "candidate"
    shutil.copytree(FRIENDS, candidate)
    chat_rules = candidate / "20-chat.yaml"
    shipped_chat = chat_rules.read_text()
    chat_rules.write_text(shipped_chat.replace(*DISABLE_FRIEND_CHAT))
    archive = tmp_path / "archive" / "inbound.jsonl"
    archive.parent.mkdir()
    config = write_config(server, "client", tmp_path / "rulebot.yaml", rules=FRIENDS,
                          store=str(tmp_path / "relations.sqlite3"),
                          status={"listen": "127.0.0.1:0"}, shadow=str(candidate),
                          archive={"path": str(archive), "hash": ["event.text"]},
                          reload={"debounce_ms": 50})
    bot = await run_bot(stack, config, env={"RULEBOT_ARCHIVE_SALT": "pepper"})
    port = (await bot.wait_log(lambda e: e.get("event") == "status_listen"))["port"]
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    carol = await connect_user(stack, server, "carol", "friend@localhost")

    await alice.request({"type": "friend-request", "to": "bob@localhost"})
    await receive(bob)
    await bob.request({"type": "friend-accept", "to": "alice@localhost"})
    await receive(alice)
    for n in range(3):  # chats between friends: the candidate would refuse them
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"secret {n}"})
        assert (await receive(bob)).rule == "chat-friends"  # enforced: the live rules
    with pytest.raises(RequestError) as refused:
        await carol.request({"type": "chat", "to": "bob@localhost", "text": "hi?"})
    assert refused.value.code == "not-friends"

    # Shadow mode counted the three friendly chats, by the rules that differ.
    await bot.wait_log(lambda e: e.get("event") == "shadow_diff")
    shadow = (await status_of(port))["shadow"]
    assert (shadow["loaded"], shadow["differed"]) == (True, 3)
    assert shadow["by_rule"] == {"chat-friends": 3, "chat-strangers": 3}
    metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    assert 'rulebot_shadow_diff_total{rule="chat-friends"} 3.0' in metrics
    cli_status = CliRunner().invoke(main, ["status", "--url",
                                           f"http://127.0.0.1:{port}/status"])
    assert json.loads(cli_status.stdout)["shadow"]["differed"] == 3

    # The candidate is fixed and hot-reloads: the next friendly chat agrees.
    mark = len(bot.logs)
    chat_rules.write_text(shipped_chat)
    await bot.wait_log(lambda e: e.get("event") == "reload" and e.get("rules") ==
                       "shadow rules" and e.get("ok") is True, start=mark)
    await barrier(alice)
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "secret 4"})
    await receive(bob)
    await barrier(alice)
    page = await status_of(port)
    assert page["shadow"]["differed"] == 3
    decided = page["shadow"]["decided"]
    written = page["archive"]["written"]
    assert written == decided >= 9  # each decided event archived, presence included
    assert await bot.stop() == 0

    lines = archive.read_text().splitlines()
    assert len(lines) == written
    assert not any("secret" in line for line in lines)  # event.text hashed, payloads digested

    # Replayed with the rules that decided it, the archive changes nothing ...
    runner = CliRunner()
    same = runner.invoke(main, ["replay", str(archive), "--rules", str(FRIENDS)])
    assert same.exit_code == 0, same.output
    assert f"changed: 0 (0.0 %), unchanged: {written}" in same.output
    # ... and with the candidate it finds the four friendly chats, those shadow
    # mode counted live and the one decided after the fix.
    chat_rules.write_text(shipped_chat.replace(*DISABLE_FRIEND_CHAT))
    changed = runner.invoke(main, ["replay", str(archive), "--rules", str(candidate),
                                   "--format", "json"])
    assert changed.exit_code == 1, changed.output
    out = [json.loads(line) for line in changed.output.splitlines()]
    summary = out[-1]["summary"]
    assert summary["changed"] == 4 == len(out) - 1
    assert summary["rules"]["chat-friends"] == {"newly_matched": 0, "stopped_matching": 4,
                                                "differed": 4}
    assert summary["rules"]["chat-strangers"]["newly_matched"] == 4
    assert {o["sender"] for o in out[:-1]} == {"alice@localhost"}
    assert all(o["recipients_removed"] == ["bob@localhost"] for o in out[:-1])
