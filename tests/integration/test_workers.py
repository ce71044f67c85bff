"""Several workers serving one component on ejabberd, sharing PostgreSQL:
events are spread over them, and a worker that hangs and then dies (kill -9)
or comes back loses nothing and decides nothing twice, for clients that ask
for receipts and resend (rulebot.client's resend_after).

The workers run under `rulebot run` with `workers: 3` (the supervisor), as
an operator runs them. The victim is stopped (SIGSTOP) when bob has an eighth
of the events (the second half of the stream is sent after that), then
killed when he has half, or continued once he has them all: points chosen by
what was received. Counted afterwards: the event ids
bob got (all, once each after de-duplication by message id) and the
idempotency records in PostgreSQL (each event recorded once: a second
decision would be a second record).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    BotProcess,
    connect_user,
    connected_workers,
    kill_at_exit,
    start_bot,
    write_config,
)

from rulebot.client import RulebotClient
from rulebot.daemon.ledger import stored_entries
from rulebot.store.open import open_store
from scripts import pgserver, xmppserver

pytestmark = pytest.mark.integration

WORKERS = 3
EVENTS = int(os.environ.get("RULEBOT_WORKERS_EVENTS", "2000"))
DEADLINE = 120.0  # s for the whole stream to be confirmed and delivered


@pytest.fixture
def ejabberd(tmp_path: Path) -> Iterator[xmppserver.ServerInfo]:
    # Unshaped: alice stands for the load of many users (as in test_crash.py).
    info = xmppserver.start_server("ejabberd", tmp_path / "server",
                                   {u: f"{u}-pw" for u in ("alice", "bob", "friend")},
                                   unlimited=True)
    try:
        yield info
    finally:
        xmppserver.stop_server(info.workdir)


async def all_connected(bot: BotProcess, n: int) -> dict[int, int]:
    """Wait until n workers are connected; their pids by index."""
    await bot.wait_log(lambda _e: len(connected_workers(bot)) >= n, timeout=30)
    pids: dict[int, int] = {}
    for e in bot.logs:
        if e.get("event") == "worker_started":
            pids[e["worker"]] = e["pid"]
    return pids


async def start_workers(stack: AsyncExitStack, server: xmppserver.ServerInfo,
                        pg: pgserver.PgInfo, tmp_path: Path, **extra: Any
                        ) -> tuple[BotProcess, dict[int, int]]:
    config = write_config(server, "component", tmp_path / "rulebot.yaml", workers=WORKERS,
                          idempotency={"window": 300},  # above the clients' deadline
                          store=pg.url, **extra)
    bot = await start_bot(config)
    kill_at_exit(stack, bot)
    pids = await all_connected(bot, WORKERS)
    return bot, pids


@pytest.mark.parametrize("fate", ["killed", "resumed"])
async def test_three_workers_share_the_stream_and_a_lost_worker_loses_and_repeats_nothing(
    ejabberd: xmppserver.ServerInfo, pg: pgserver.PgInfo, tmp_path: Path,
    stack: AsyncExitStack, fate: str,
) -> None:
    """killed: the worker hangs, then dies (what ejabberd routed to it is lost).
    resumed: it hangs until the clients' resends of its events were decided by
    the others, then goes on: it must answer those from their records."""
    bot, pids = await start_workers(stack, ejabberd, pg, tmp_path)
    jid = ejabberd.component_jid
    alice = await connect_user(stack, ejabberd, "alice", jid, resend_after=3.0,
                               confirm_deadline=DEADLINE)
    bob = await connect_user(stack, ejabberd, "bob", jid)
    got: Counter[str] = Counter()
    eighth, half, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def bob_reads() -> None:
        async for received in bob:
            got[str(received.payload.get("id"))] += 1
            if len(got) >= EVENTS // 8:
                eighth.set()
            if len(got) >= EVENTS // 2:
                half.set()
            if len(got) >= EVENTS:
                done.set()
                return

    async def kill_victim() -> None:
        # A worker that hangs, then dies: what ejabberd routed to it meanwhile
        # (in its socket, in ejabberd's queue for the connection) is lost with
        # it, and only the clients' resends bring those events back.
        await eighth.wait()
        # ...and once the victim's own decisions are in its log: it flushes its
        # log every 0.25 s, and lines it still held when it was stopped die
        # with it (a run saw it stopped, then killed, before any flush).
        await bot.wait_log(lambda e: e.get("worker") == victim
                           and e.get("status") == "decided", timeout=DEADLINE)
        os.kill(pids[victim], signal.SIGSTOP)
        stopped.set()
        if fate == "killed":
            await half.wait()
            os.kill(pids[victim], signal.SIGKILL)
        else:
            await done.wait()  # every event reached bob: the stuck ones by resends
            os.kill(pids[victim], signal.SIGCONT)

    victim = 1
    stopped = asyncio.Event()
    reader = asyncio.ensure_future(bob_reads())
    killer = asyncio.ensure_future(kill_victim())
    stack.callback(reader.cancel)
    stack.callback(killer.cancel)
    for i in range(EVENTS):
        if i == EVENTS // 2:
            # The second half goes out once the victim hangs (however loaded the
            # machine): ejabberd routes its share to the stopped worker.
            await asyncio.wait_for(stopped.wait(), DEADLINE)
        alice.send_event({"type": "chat", "id": f"e{i}", "to": "bob@localhost",
                          "text": f"hello {i}"})
        if i % 50 == 49:
            await asyncio.sleep(0.01)  # ~5,000/s offered, written as it goes
    gave_up = await alice.confirmed(timeout=DEADLINE)
    await asyncio.wait_for(done.wait(), DEADLINE)
    await asyncio.wait_for(killer, DEADLINE)
    if fate == "resumed":  # it works through what waited for it: records only
        await bot.wait_log(lambda e: e.get("worker") == victim and e.get("status") == "duplicate")
        await alice.flush()

    assert gave_up == 0
    assert alice.resends is not None
    assert alice.resends.resent > 0  # the kill did lose events in flight
    assert set(got) == {f"e{i}" for i in range(EVENTS)}  # nothing lost
    assert max(got.values()) == 1  # re-sent copies carry the same message id: dropped
    if fate == "killed":  # the supervisor restarted it
        await bot.wait_log(lambda e: e.get("event") == "worker_died" and e["worker"] == victim)
    # spread: every worker decided some of the stream
    deciders = Counter(e.get("worker") for e in bot.logs
                       if e.get("event") == "stanza" and e.get("status") == "decided")
    assert all(deciders[w] > 0 for w in range(WORKERS)), deciders
    # decided once: one idempotency record per event in the shared store
    store = open_store(pg.url)
    try:
        made: dict[str, list[int]] = {}  # event -> when each of its records was made
        for b in store.record_batches(0):
            for key, _, _ in stored_entries(b):
                made.setdefault(key.key, []).append(b.created)
    finally:
        store.close()
    assert {k for k in made if k.startswith("e:e")} == {f"e:e{i}" for i in range(EVENTS)}
    # Each record claims its event (a unique key in the store): a worker
    # stopped while it stored a read's records, whose events' resends the
    # others decided meanwhile, can no longer leave a second record.
    twice = {k: sorted(t) for k, t in made.items() if len(t) > 1}
    assert not twice, twice
    print(f"\n{EVENTS} events, {WORKERS} workers, worker {victim} stopped at an eighth, {fate}: "
          f"{alice.resends.resent} resent, decided per worker "
          f"{dict(deciders)}, duplicates bob dropped {bob.duplicates}")


LIMITS = """version: 1
rate_limits:
  chat: {rate: 1, per: minute, burst: 10}
rules:
  - name: chat-too-fast
    match: "event.type == 'chat' && over_limit('chat', sender)"
    actions:
      - error: {code: rate-limited, message: slow down}
"""


async def test_relations_and_rate_limits_hold_whichever_worker_decides(
    ejabberd: xmppserver.ServerInfo, pg: pgserver.PgInfo, tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules" / "friends", rules)
    (rules / "05-limits.yaml").write_text(LIMITS)
    bot, _ = await start_workers(stack, ejabberd, pg, tmp_path, rules=str(rules))
    jid = ejabberd.component_jid
    alice = await connect_user(stack, ejabberd, "alice", jid)
    bob = await connect_user(stack, ejabberd, "bob", jid)
    # a request decided by one worker, its acceptance by whichever gets it
    sent = await alice.request({"type": "friend-request", "to": "bob@localhost"})
    assert sent.payload["type"] == "friend-request-sent"
    asked = await bob.receive(timeout=15)
    assert asked.payload["type"] == "friend-request"
    friends = await bob.request({"type": "friend-accept", "to": "alice@localhost"})
    assert friends.payload["type"] == "friends"
    await alice.receive(timeout=15)  # alice is told
    # 30 chats spread over the workers: the bucket of 10 is one for all of them
    ids = [alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"hi {i}"})
           for i in range(30)]
    forwarded: list[str] = []
    refused: list[str] = []

    async def collect(client: RulebotClient, into: list[str]) -> None:
        async for got in client:
            into.append(got.error["code"] if got.error else str(got.payload.get("text")))

    tasks = [asyncio.ensure_future(collect(alice, refused)),
             asyncio.ensure_future(collect(bob, forwarded))]
    try:
        for _ in range(150):  # each event has exactly one answer: wait for 30
            if len(forwarded) + len(refused) >= len(ids):
                break
            await asyncio.sleep(0.1)
    finally:
        for t in tasks:
            t.cancel()
    assert (len(forwarded), sorted(set(refused))) == (10, ["rate-limited"])
    assert len(refused) == 20
    await bot.wait_log(lambda _e: len({e.get("worker") for e in bot.logs
                                       if e.get("event") == "stanza"
                                       and e.get("event_id") in ids}) >= 2)


TIMERS = """version: 1
rules:
  - name: fired
    match: "stanza.kind == 'timer'"
    actions:
      - reply: {payload: "{type: 'later', n: event.n, key: timer.key}"}
  - name: later
    match: "event.type == 'later'"
    actions:
      - schedule: {key: "join(':', ['later', to_string(event.n)])", after: 1s,
                   event: "{n: event.n}"}
"""


async def test_each_due_timer_is_fired_by_one_worker_once(
    ejabberd: xmppserver.ServerInfo, pg: pgserver.PgInfo, tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    # 60 timers due within a second of each other, three workers polling the
    # same PostgreSQL: each timer is taken by one of them (SKIP LOCKED and a
    # lease) and its reply reaches alice once.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "timers.yaml").write_text(TIMERS)
    bot, _ = await start_workers(stack, ejabberd, pg, tmp_path, rules=str(rules))
    alice = await connect_user(stack, ejabberd, "alice", ejabberd.component_jid)
    n = 60
    for i in range(n):
        alice.send_event({"type": "later", "n": i})
    got: Counter[int] = Counter()

    async def collect() -> None:
        async for received in alice:
            got[int(received.payload["n"])] += 1
            if len(got) >= n:
                return

    await asyncio.wait_for(collect(), DEADLINE)
    assert sorted(got) == list(range(n))
    assert max(got.values()) == 1
    assert alice.duplicates == 0  # no worker sent a firing twice
    firers = Counter(e.get("worker") for e in bot.logs
                     if e.get("event") == "stanza" and e.get("kind") == "timer")
    store = open_store(pg.url)
    try:
        assert store.timer_count() == 0  # every one forgotten once fired
        fired = Counter(k.key for b in store.record_batches(0) for k, _, _ in stored_entries(b)
                        if k.key.startswith("t:later:"))
    finally:
        store.close()
    assert len(fired) == n
    assert max(fired.values()) == 1  # each firing decided once, by one worker
    print(f"\n{n} timers fired, by worker: {dict(firers)}")


async def test_workers_end_when_their_supervisor_is_killed(
    ejabberd: xmppserver.ServerInfo, pg: pgserver.PgInfo, tmp_path: Path,
    stack: AsyncExitStack,
) -> None:
    """kill -9 of the supervisor (the OOM killer's way) leaves no worker behind:
    each gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and drains."""
    bot, pids = await start_workers(stack, ejabberd, pg, tmp_path)
    assert len(pids) == WORKERS
    fds = [os.pidfd_open(pid) for pid in pids.values()]  # readable once the process is gone
    bot.proc.kill()
    await bot.proc.wait()
    loop = asyncio.get_running_loop()

    async def gone(fd: int) -> None:
        done = loop.create_future()
        loop.add_reader(fd, lambda: done.done() or done.set_result(None))
        try:
            await asyncio.wait_for(done, 40)
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    await asyncio.gather(*(gone(fd) for fd in fds))
