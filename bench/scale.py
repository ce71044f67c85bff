"""Events per second with 1, 2 and 4 workers serving one component
(`rulebot run` with `workers: N`), on a private ejabberd and PostgreSQL.

Run: `.venv/bin/python -m bench.scale [--quick]` (or `make bench-scale`).

Each run: alice sends N chat events to bob through the bot, as fast as her
client writes them, each asking for a receipt (the mode several workers need,
docs/protocol.md); the run's rate is N over the time from her first send to
bob's last message. Two settings:

* capped: each worker in a cgroup (v1 cpu controller) of its own with the
  same CPU quota, so that the bot, not the 2-core machine, is the bottleneck;
  the target is N workers >= 0.9 x N x one capped worker;
* uncapped: the whole machine; compared with direct delivery (alice to bob,
  no bot) on the same server: every routed event crosses the server twice,
  so 0.5 is the limit when the server is the bottleneck.

Also per run: the workers' CPU per event (utime + stime from /proc) and the
PostgreSQL transactions per event (pg_stat_database.xact_commit: each of
rulebot's statements outside a batch is one round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rulebot.client import RulebotClient
from scripts import pgserver, xmppserver

ROOT = Path(__file__).resolve().parents[1]
USERS = {u: f"{u}-bench-pw" for u in ("alice", "bob", "friend")}
CGROUP = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
TIMEOUT = 60.0  # s for one run's events to arrive
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    workers: int
    capped: bool
    events: int
    seconds: float
    cpu_seconds: float
    pg_xacts: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@contextlib.contextmanager
def cgroups(n: int, quota: float) -> Iterator[list[Path]]:
    """n cgroups, each allowed `quota` of one core; removed at the end."""
    made = []
    try:
        for i in range(n):
            group = CGROUP / f"rulebot-bench-{os.getpid()}-{i}"
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(int(PERIOD_US * quota)))
            made.append(group)
        yield made
    finally:
        for group in made:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (CGROUP / "cgroup.procs").write_text(pid)
                group.rmdir()


def xacts(pg: pgserver.PgInfo) -> int:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


async def clients(server: xmppserver.ServerInfo, bot: str, confirm: bool
                  ) -> tuple[RulebotClient, RulebotClient]:
    kw = {"resend_after": TIMEOUT * 2, "confirm_deadline": TIMEOUT * 3} if confirm else {}
    made = []
    for name in ("alice", "bob"):
        c = RulebotClient(f"{name}@localhost", USERS[name], bot, host=server.host,
                          port=server.c2s_port, ca_file=server.ca_file, **kw)  # type: ignore[arg-type]
        await c.connect()
        made.append(c)
    return made[0], made[1]


async def timed_stream(alice: RulebotClient, bob_arrivals: asyncio.Queue[str], n: int,
                       run_id: str, direct: bool) -> float:
    """Seconds from the first send to the n-th arrival of this run."""
    started = time.perf_counter()
    for i in range(n):
        payload = {"type": "chat", "id": f"{run_id}-{i}", "to": "bob@localhost",
                   "text": f"bench {i}"}
        if direct:
            alice.xmpp.send_message(mto="bob@localhost", mbody=json.dumps(payload),
                                    mtype="chat")
        else:
            alice.send_event(payload)
        if i % 200 == 199:
            await asyncio.sleep(0)
    seen: set[str] = set()
    while len(seen) < n:
        event_id = await asyncio.wait_for(bob_arrivals.get(), TIMEOUT)
        if event_id.startswith(run_id):
            seen.add(event_id)
    return time.perf_counter() - started


async def one_run(server: xmppserver.ServerInfo, pg: pgserver.PgInfo, workdir: Path,
                  workers: int, quota: float | None, n: int) -> Run:
    secret = workdir / "secret"
    secret.write_text(server.component_secret + "\n")
    config = workdir / f"rulebot-{workers}-{quota}.yaml"
    config.write_text(json.dumps({
        "mode": "component", "jid": server.component_jid,
        "server": {"host": server.host, "port": server.component_port},
        "rules": str(ROOT / "rules"), "password_file": str(secret),
        "allowed_domains": ["localhost"], "store": pg.url, "workers": workers,
        **({"idempotency": {"follow": float(os.environ["BENCH_FOLLOW"])}}
           if "BENCH_FOLLOW" in os.environ else {}),
        "log": {"level": "info"},  # as operators run it: a decision line per event
    }))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rulebot", "run", "-c", str(config), "--workers", str(workers),
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    pids: list[int] = [proc.pid] if workers == 1 else []  # one worker: no supervisor
    up: set[object] = set()  # the workers that logged "connected"
    assert proc.stderr is not None

    async def read_logs() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "worker_started":
                    pids.append(int(entry["pid"]))
                elif entry.get("event") == "connected":
                    up.add(entry.get("worker"))

    reader = asyncio.ensure_future(read_logs())
    try:
        with cgroups(workers if quota else 0, quota or 1.0) as groups:
            deadline = time.monotonic() + 30
            while len(pids) < workers or len(up) < workers:
                assert time.monotonic() < deadline, "workers did not connect"
                await asyncio.sleep(0.05)
            for pid, group in zip(pids, groups, strict=False):
                (group / "cgroup.procs").write_text(str(pid))
            alice, bob = await clients(server, server.component_jid, confirm=True)
            arrivals: asyncio.Queue[str] = asyncio.Queue()

            async def bob_reads() -> None:
                async for received in bob:
                    arrivals.put_nowait(str(received.payload.get("id")))

            bob_task = asyncio.ensure_future(bob_reads())
            try:
                # Every worker connected and answering: a warm-up stream first.
                await timed_stream(alice, arrivals, 200, f"warm{workers}", False)
                cpu0 = sum(cpu_of(p) for p in pids)
                x0 = xacts(pg)
                seconds = await timed_stream(alice, arrivals, n, f"run{workers}{quota}", False)
                cpu = sum(cpu_of(p) for p in pids) - cpu0
                pg_xacts = xacts(pg) - x0 - 1  # our own query
                await alice.confirmed(timeout=TIMEOUT)
            finally:
                bob_task.cancel()
                await alice.close()
                await bob.close()
            return Run(workers, quota is not None, n, seconds, cpu, pg_xacts)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 40)
            except TimeoutError:
                proc.kill()
        reader.cancel()


async def direct_run(server: xmppserver.ServerInfo, n: int) -> float:
    alice, bob = await clients(server, "nobody@localhost", confirm=False)
    arrivals: asyncio.Queue[str] = asyncio.Queue()

    def on_message(msg: object) -> None:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            arrivals.put_nowait(str(json.loads(msg["body"])["id"]))  # type: ignore[index]

    bob.xmpp.add_event_handler("message", on_message)
    try:
        await timed_stream(alice, arrivals, 200, "dwarm", True)
        seconds = await timed_stream(alice, arrivals, n, "direct", True)
    finally:
        await alice.close()
        await bob.close()
    return n / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 events a run")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quota", type=float, default=0.15,
                        help="the CPU share of one core each capped worker gets")
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    n = args.events or (1000 if args.quick else 5000)
    counts = [int(w) for w in args.workers.split(",")]
    can_cap = os.access(CGROUP / "cgroup.procs", os.W_OK)
    work = Path(tempfile.mkdtemp(prefix="rulebot-bench-scale-"))
    server = xmppserver.start_server("ejabberd", work / "server", USERS, unlimited=True)
    pg = pgserver.start_postgres(work / "pg")
    runs: list[Run] = []
    try:
        direct = asyncio.run(direct_run(server, n))
        for w in counts:
            if can_cap:
                runs.append(asyncio.run(one_run(server, pg, work, w, args.quota, n)))
            runs.append(asyncio.run(one_run(server, pg, work, w, None, n)))
    finally:
        xmppserver.stop_server(server)
        pgserver.stop_postgres(pg)
        shutil.rmtree(work, ignore_errors=True)
    capped_one = next((r.rate for r in runs if r.capped and r.workers == 1), None)
    print(f"\n{n:,} events a run; direct delivery alice -> bob: {direct:,.0f}/s. "
          f"Capped: {args.quota:.0%} of a core per worker (cgroup v1 cpu.cfs_quota_us)."
          + ("" if can_cap else " (no writable cgroup: capped runs skipped)"))
    print("\n| workers | setting | events/s | vs N x capped 1 | vs direct | "
          "worker CPU ms/event | PG transactions/event |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        vs_capped = f"{r.rate / (r.workers * capped_one):.2f}" if r.capped and capped_one \
            else ""
        vs_direct = "" if r.capped else f"{r.rate / direct:.2f}"
        print(f"| {r.workers} | {'capped' if r.capped else 'uncapped'} | {r.rate:,.0f} | "
              f"{vs_capped} | {vs_direct} | {r.cpu_seconds * 1000 / r.events:.3f} | "
              f"{r.pg_xacts / r.events:.3f} |")
    print(f"\nmachine: nproc={os.cpu_count()}, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
