"""Soak: a steady paced stream through the bot on a real Prosody, client mode
with stream management. Nothing is lost or duplicated, the bot's memory does
not grow, its queues stay empty and latency does not creep up.

`make test` runs a shortened version (5,000 measured events); `make soak`
runs 200,000 (RULEBOT_SOAK_EVENTS). RULEBOT_SOAK_RATE sets the pace: the
default, 1,500 events/s, is about half of what bench/xmpp.py measures for
this path on the 2-core development machine (Prosody, client mode: ~3,000/s).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import USERS, BotProcess, connect_user, run_bot, write_config

from scripts import xmppserver

pytestmark = pytest.mark.integration

EVENTS = int(os.environ.get("RULEBOT_SOAK_EVENTS", "5000"))
RATE = float(os.environ.get("RULEBOT_SOAK_RATE", "1500"))
WARM_UP = 10_000  # measured: the bot's RSS settles after ~10,000 events (allocator arenas)
WINDOWS = 10  # measurement windows the stream is split into


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


def gauges(port: int) -> dict[str, float]:
    """The bot's queue gauges, read from its /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("rulebot_outbound_queue", "rulebot_sm_unacked_stanzas"):
            out[name] = float(value)
    return out


async def test_a_steady_stream_loses_nothing_and_memory_queues_and_latency_stay_flat(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    # The idempotency records' window is a bounded cache (rate x window
    # records, ~200 bytes each: 45,000 at 1,500/s and the default 30 s). A 5 s
    # window is full after the warm-up, so memory that grows after it is a
    # leak, not the cache filling.
    config = write_config(server, "client", tmp_path / "rulebot.yaml",
                          status={"listen": "127.0.0.1:0"}, idempotency={"window": 5})
    bot: BotProcess = await run_bot(stack, config)
    port = (await bot.wait_log(lambda e: e.get("event") == "status_listen"))["port"]
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")

    async def burst(prefix: str, count: int) -> None:
        for i in range(count):
            alice.send_event({"type": "chat", "to": "bob@localhost", "text": "warm",
                              "id": f"{prefix}{i}"})
            if i % 100 == 99:
                await alice.flush()
        for _ in range(count):
            await bob.receive(timeout=60)

    await burst("w", WARM_UP)  # caches, interned strings, allocator arenas
    rss_before = rss_kib(bot.proc.pid)

    sent_at: dict[str, float] = {}
    latency: dict[str, float] = {}
    duplicates = 0
    done = asyncio.Event()

    async def receiver() -> None:
        nonlocal duplicates
        while len(latency) < EVENTS:
            got = await bob.receive(timeout=60)
            eid = str(got.payload.get("id"))
            if eid in latency:
                duplicates += 1
                continue
            latency[eid] = time.perf_counter() - sent_at[eid]
        done.set()

    receiving = asyncio.ensure_future(receiver())
    per_window = max(EVENTS // WINDOWS, 1)
    samples: list[tuple[int, int, dict[str, float]]] = []  # (events sent, RSS, gauges)
    started = time.perf_counter()
    for i in range(EVENTS):
        eid = f"s{i}"
        sent_at[eid] = time.perf_counter()
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"soak {i}",
                          "id": eid})
        if i % 50 == 49:  # pace: wait until this event's scheduled time
            await alice.flush()
            ahead = started + (i + 1) / RATE - time.perf_counter()
            await asyncio.sleep(max(ahead, 0))
        if i % per_window == per_window - 1:
            samples.append((i + 1, rss_kib(bot.proc.pid), gauges(port)))
    send_seconds = time.perf_counter() - started
    await asyncio.wait_for(done.wait(), timeout=120)
    await receiving
    rss_after = rss_kib(bot.proc.pid)

    # Latency per window of events, in send order.
    order = [f"s{i}" for i in range(EVENTS)]
    windows = [sorted(latency[e] for e in order[k:k + per_window])
               for k in range(0, EVENTS, per_window)]
    p50 = [w[len(w) // 2] * 1000 for w in windows]
    p99 = [w[min(len(w) - 1, int(len(w) * 0.99))] * 1000 for w in windows]
    print(f"\nsoak: {EVENTS:,} events at {EVENTS / send_seconds:,.0f}/s (target {RATE:,.0f}/s)"
          f", bot RSS {rss_before:,} -> {rss_after:,} KiB, duplicates {duplicates}")
    print("  sent    RSS KiB  outbound queue  SM unacked   p50 ms   p99 ms")
    for (n, rss, g), a, b in zip(samples, p50, p99, strict=False):
        print(f"  {n:>7,} {rss:>9,} {g.get('rulebot_outbound_queue', -1):>14.0f}"
              f" {g.get('rulebot_sm_unacked_stanzas', -1):>11.0f} {a:>8.1f} {b:>8.1f}")

    assert len(latency) == EVENTS  # nothing lost
    assert duplicates == 0  # nothing twice
    assert EVENTS / send_seconds > RATE * 0.8, "the test could not keep the pace"
    assert rss_after < rss_before * 1.10, (rss_before, rss_after)
    # Queues: nothing waits while connected, and the unacknowledged window
    # stays bounded (ack requests every 50 stanzas plus what is in flight).
    assert all(g["rulebot_outbound_queue"] == 0 for _, _, g in samples)
    assert max(g["rulebot_sm_unacked_stanzas"] for _, _, g in samples) < 1000
    # Latency below saturation stays low and does not creep up.
    assert max(p99) < 1000, p99
    assert statistics.median(p50[len(p50) // 2:]) < 2 * statistics.median(p50) + 20, p50
