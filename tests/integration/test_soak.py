"""A shortened soak (make test): the bot's memory does not grow with the events it
handles. `RULEBOT_SOAK_EVENTS` raises the count for the long run."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import xmppserver
from conftest import USERS, connect_user, run_bot, write_config

pytestmark = pytest.mark.integration

EVENTS = int(os.environ.get("RULEBOT_SOAK_EVENTS", "5000"))
WARM_UP = 10_000  # measured: the bot's RSS settles after ~10,000 events (allocator arenas)


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    info = xmppserver.start_server("prosody", tmp_path / "server", USERS, unlimited=True)
    try:
        yield info
    finally:
        xmppserver.stop_server(info.workdir)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_memory_stays_flat_under_a_steady_stream(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")

    async def batch(start: int, count: int) -> None:
        for i in range(start, start + count):
            alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"soak {i}"})
            if i % 100 == 99:
                await alice.flush()
        for _ in range(count):
            await bob.receive(timeout=60)

    await batch(0, WARM_UP)  # caches, interned strings, allocator arenas
    before = rss_kib(bot.proc.pid)
    for k in range(EVENTS // 5000 or 1):
        await batch(WARM_UP + k * 5000, min(5000, EVENTS))
        print(f"\n  after {(k + 1) * min(5000, EVENTS)}: {rss_kib(bot.proc.pid)} KiB")
    after = rss_kib(bot.proc.pid)
    await asyncio.sleep(0)
    print(f"\nbot RSS {before} KiB -> {after} KiB after {EVENTS} more events")
    assert after < before * 1.10, (before, after)
