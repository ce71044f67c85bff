"""An event sent the moment a restarted bot logs in is answered, with the
machine's CPUs busy.

On ejabberd such an event could be routed before the new session's presence
was processed and stored offline after that presence had flushed offline
storage: it then waited for the bot's next login (1 in 4 to 10 restarts with
three busy loops beside the test, over five runs). The bot's offline sweep (XEP-0013, the
first 2 s after login) now recovers it; the test counts how often that was
needed. Prosody serialises the two and never strands one, but runs the same
test.

`make test` runs RULEBOT_RACE_ROUNDS=4 restarts per server; `make soak` 25.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import TIMEOUT, connect_user, run_bot, write_config

from scripts import xmppserver

pytestmark = pytest.mark.integration

ROUNDS = int(os.environ.get("RULEBOT_RACE_ROUNDS", "4"))
BUSY_LOOPS = 3  # measured to expose the race on this 2-core machine
BUSY_SECONDS = 300  # an upper bound: the loops are killed when the test ends

BUSY = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end: pass\n"


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_an_event_sent_as_a_restarted_bot_logs_in_is_answered_under_cpu_load(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml")
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    busy = [await asyncio.create_subprocess_exec(sys.executable, "-c", BUSY)
            for _ in range(BUSY_LOOPS)]
    for proc in busy:
        stack.push_async_callback(proc.wait)
        stack.callback(lambda p=proc: p.returncode is None and p.kill())
    recovered = 0
    for i in range(ROUNDS):
        bot = await run_bot(stack, config)  # returns as soon as the bot logs "connected"
        pong = await alice.request({"type": "ping", "id": f"race{i}"}, timeout=TIMEOUT)
        assert pong.payload == {"type": "pong", "id": f"race{i}"}
        assert await bot.stop() == 0
        recovered += sum(e.get("recovered", 0) for e in bot.logs
                         if e.get("event") == "offline_sweep")
    print(f"\n{server.kind}: {ROUNDS} restarts, {recovered} event(s) recovered by the sweep")
