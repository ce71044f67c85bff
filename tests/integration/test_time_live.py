"""Time in rules on a real server, with the shipped friends rules: a windowed
counter that survives a kill -9 of the bot (three strikes, a 24-hour timeout),
and a relation that expires by itself (a mute, shortened to seconds here)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT, bot_answers, connect_user, receive, run_bot, write_config

from rulebot.client import RequestError, RulebotClient
from rulebot.store.open import open_store
from scripts import xmppserver

pytestmark = pytest.mark.integration

FRIENDS = ROOT / "rules" / "friends"
BOT = "friend@localhost"


async def refused(client: RulebotClient, event: dict[str, object]) -> str:
    with pytest.raises(RequestError) as caught:
        await client.request(event, timeout=10)
    return caught.value.code


def friends_with(tmp_path: Path, replacements: dict[str, str]) -> Path:
    """A copy of the shipped friends rules with its times shortened (each text
    of 10-relations.yaml replaced must be there)."""
    rules = tmp_path / "friends"
    shutil.copytree(FRIENDS, rules)
    relations = rules / "10-relations.yaml"
    text = relations.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    relations.write_text(text, encoding="utf-8")
    return rules


@pytest.mark.parametrize("server_kind", ["prosody"])
async def test_strikes_survive_a_kill_9_and_the_third_starts_a_timeout(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    store_path = tmp_path / "relations.sqlite3"
    config = write_config(server, "client", tmp_path / "rulebot.yaml", rules=FRIENDS,
                          store=str(store_path))
    bot = await run_bot(stack, config)
    carol = await connect_user(stack, server, "carol", BOT)
    for text in ("hi", "hello?"):  # two chats to a stranger: two strikes
        assert await refused(carol, {"type": "chat", "to": "bob@localhost",
                                     "text": text}) == "not-friends"
    # Killed right after the second refusal reached carol: its count was
    # committed with the decision's record, before the refusal was sent.
    assert await bot.stop(signal.SIGKILL) != 0
    with open_store(str(store_path)) as store:
        assert store.count_since("strikes", "carol@localhost", time.time() - 600) == 2
    await run_bot(stack, config)
    await bot_answers(carol)
    started = time.time()
    assert await refused(carol, {"type": "chat", "to": "bob@localhost",
                                 "text": "third"}) == "timeout"
    with open_store(str(store_path)) as store:
        timeout = store.get("carol@localhost", BOT, "timeout")
        assert timeout is not None
        assert timeout.expires is not None
        hours = (datetime.fromisoformat(timeout.expires).timestamp() - started) / 3600
        assert 23.9 < hours < 24.1
        assert store.count_since("strikes", "carol@localhost", 0) == 0  # reset
    # in a timeout even a friend's chat is refused
    assert await refused(carol, {"type": "chat", "to": "dave@localhost",
                                 "text": "x"}) == "timeout"


@pytest.mark.parametrize("server_kind", ["prosody"])
async def test_a_mute_ends_by_itself(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules = friends_with(tmp_path, {"kind: muted, ttl: 1h}": "kind: muted, ttl: 3s}",
                                    "time_add(now, '1h')": "time_add(now, '3s')"})
    store_path = tmp_path / "relations.sqlite3"
    with open_store(str(store_path)) as store:
        store.relate("alice@localhost", "bob@localhost", "friend")
        store.relate("bob@localhost", "alice@localhost", "friend")
    config = write_config(server, "client", tmp_path / "rulebot.yaml", rules=rules,
                          store=str(store_path))
    await run_bot(stack, config)
    alice = await connect_user(stack, server, "alice", BOT)
    bob = await connect_user(stack, server, "bob", BOT)

    muted = await bob.request({"type": "mute", "to": "alice@localhost"})
    assert muted.payload["type"] == "muted"
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "muted?"})
    # What the bot did with that chat is settled once it has answered later
    # events of alice and of bob (each stream is handled in order).
    await bot_answers(alice)
    await bot_answers(bob)
    assert bob._incoming.empty(), bob._incoming.get_nowait()  # dropped
    # The mute expires 3 s after it was made: it is gone from every read then,
    # without anything deleting it.
    deadline = time.monotonic() + 20
    with open_store(str(store_path)) as store:
        while store.related("bob@localhost", "alice@localhost", "muted"):
            assert time.monotonic() < deadline, "the mute did not expire"
            await asyncio.sleep(0.2)
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "back"})
    got = await receive(bob)
    assert (got.payload["text"], got.rule) == ("back", "chat-friends")


@pytest.mark.parametrize("server_kind", ["prosody"])
async def test_a_reminder_survives_a_restart_and_one_due_during_a_kill_fires_once(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    # The shipped request reminder, due 2 s after the request instead of a day.
    rules = friends_with(tmp_path, {"after: 1d": "after: 2s"})
    store_path = tmp_path / "relations.sqlite3"
    config = write_config(server, "client", tmp_path / "rulebot.yaml", rules=rules,
                          store=str(store_path))
    bot = await run_bot(stack, config)
    alice = await connect_user(stack, server, "alice", BOT)
    await connect_user(stack, server, "bob", BOT)
    await connect_user(stack, server, "carol", BOT)

    # 1. A restart between scheduling and firing: the timer is in the store.
    sent = await alice.request({"type": "friend-request", "to": "bob@localhost"})
    assert sent.payload["type"] == "friend-request-sent"
    assert await bot.stop() == 0
    with open_store(str(store_path)) as store:
        assert store.timer("remind:alice@localhost:bob@localhost") is not None
    bot = await run_bot(stack, config)
    reminder = await receive(alice, timeout=20)
    assert (reminder.payload["type"], reminder.payload["to"], reminder.rule) == (
        "friend-request-pending", "bob@localhost", "request-reminder")

    # 2. A kill -9 with a timer scheduled: it falls due while the bot is dead
    # and fires once at start.
    await alice.request({"type": "friend-request", "to": "carol@localhost"})
    assert await bot.stop(signal.SIGKILL) != 0
    with open_store(str(store_path)) as store:
        timer = store.timer("remind:alice@localhost:carol@localhost")
        assert timer is not None
    while time.time() < timer.due + 0.5:  # due while nothing runs
        await asyncio.sleep(0.1)
    await run_bot(stack, config)
    late = await receive(alice, timeout=20)
    assert (late.payload["type"], late.payload["to"]) == ("friend-request-pending",
                                                          "carol@localhost")
    await bot_answers(alice)  # anything else the bot sent alice has arrived by now
    assert alice._incoming.empty(), alice._incoming.get_nowait()  # not a second reminder
    with open_store(str(store_path)) as store:
        assert store.timer_count() == 0  # both forgotten once fired
