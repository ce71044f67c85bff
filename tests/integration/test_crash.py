"""kill -9 in the middle of a stream: every event is still processed, duplicates are
recognised by the bot's deterministic message ids. Client mode with XEP-0198 and
the session persisted by rulebot (see rulebot/xmpp_sm.py, persist_sm)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import xmppserver
from conftest import USERS, connect_user, run_bot, write_config

pytestmark = pytest.mark.integration

EVENTS_PER_SENDER = int(os.environ.get("RULEBOT_CRASH_EVENTS", "500"))
SENDERS = ("alice", "carol")


@pytest.fixture
def server(server_kind: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    # Lifted shapers: the stock per-user limits would stretch the stream to minutes.
    info = xmppserver.start_server(server_kind, tmp_path / "server", USERS, unlimited=True)
    try:
        yield info
    finally:
        xmppserver.stop_server(info.workdir)


@pytest.mark.parametrize("pace", ["paced", "burst"])
@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_kill_9_mid_stream_loses_nothing(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack, pace: str
) -> None:
    # "burst": the senders write everything at once, so the server is far ahead
    # of the bot when it is killed, its queue for the bot holds thousands of
    # stanzas and the bot's last writes may still be unread when its socket is
    # reset. "paced": the server keeps up with the senders.
    config = write_config(server, "client", tmp_path / "rulebot.yaml")
    bot = await run_bot(stack, config)
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    senders = [await connect_user(stack, server, s, "friend@localhost") for s in SENDERS]
    received: set[str] = set()
    deliveries = 0
    total = EVENTS_PER_SENDER * len(SENDERS)
    all_in = asyncio.Event()

    async def collect() -> None:
        nonlocal deliveries
        while True:
            got = await bob.receive()
            deliveries += 1
            received.add(str(got.payload["text"]))
            if len(received) == total:
                all_in.set()

    collector = asyncio.ensure_future(collect())

    async def send(client_index: int) -> None:
        client = senders[client_index]
        for i in range(EVENTS_PER_SENDER):
            client.send_event({"type": "chat", "to": "bob@localhost",
                               "text": f"{SENDERS[client_index]}-{i}"})
            if pace == "paced" and i % 50 == 49:
                await client.flush()  # paces the stream; the server has it all

    streams = [asyncio.ensure_future(send(i)) for i in range(len(SENDERS))]
    # Kill the bot once part of the stream went through it.
    while len(received) < total // 3:
        await asyncio.sleep(0.01)
    bot.proc.send_signal(signal.SIGKILL)
    await bot.proc.wait()
    killed_at = len(received)
    restarted = await run_bot(stack, config)
    await asyncio.gather(*streams)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), timeout=120)
    collector.cancel()
    missing = {f"{s}-{i}" for s in SENDERS for i in range(EVENTS_PER_SENDER)} - received
    story = [e for e in restarted.logs if e.get("event") in (
        "sm_restore", "connected", "disconnected", "reconnect", "stream_error")]
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}; {story}"
    assert killed_at < total  # the kill really happened mid-stream
    assert any(e.get("event") == "sm_restore" for e in restarted.logs)
    # The client library dropped duplicate deliveries by message id; count them
    # for the record (resent events are decided again with the same ids).
    print(f"\n{server.kind} {pace}: {total} events, killed after {killed_at}, "
          f"{bob.duplicates} duplicates suppressed by message id")
    assert deliveries == total
