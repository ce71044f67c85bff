"""End-to-end throughput of `rulebot run` on real Prosody and ejabberd servers.

Run:  .venv/bin/python bench/xmpp.py [--quick] [--n N] [--servers prosody,ejabberd]
                                     [--modes client,component] [--repeat R]
      (default N=10,000 and 3 runs per path: ~2 min on a 2-core box;
       --quick, N=1,000 and 1 run: ~20 s)

Method. For every (server, mode) configuration a fresh private server is
started on 127.0.0.1 with scripts/xmppserver.py, with the rate limits of ALL
accounts lifted (`start_server(..., unlimited=True)`: Prosody without
mod_limits, ejabberd's c2s shaper `none`); with the stock shapers (10 kB/s,
3 kB/s) every path would measure only the shaper. Two plain slixmpp clients
live in this process: alice sends, bob receives (both over STARTTLS, verified
against the server's own certificate; bob has sent presence). The same N chat
events

    {"type": "chat", "id": "<run>:<i>", "to": "bob@localhost", "text": "..."}

(~210-byte stanzas) then take three paths, one after the other, on that server:

  direct    alice -> bob@localhost: the server alone, the ceiling.
  relay     alice -> friend -> bob through a minimal forward-everything
            slixmpp relay written here (`bench/xmpp.py relay`, run as its own
            process like the bot): on every message it sends the body
            unchanged to bob with `send_message`. In client mode it is the
            ordinary c2s user friend@localhost over STARTTLS (it sends
            presence), in component mode the XEP-0114 component
            friend.localhost. No rules, no logging, no stream management: the
            floor cost of any Python slixmpp bot. It uses slixmpp as it comes;
            rulebot replaces two of slixmpp's functions with output-identical
            faster ones and writes its stanzas itself (rulebot/xmpp/patches.py,
            xmpp_stanzas.serialize_message), which is part of what is measured.
  relay-sm  (only with --paths relay-sm, client mode) the same relay with
            slixmpp's XEP-0198 plugin on: what stream management alone costs
            the server and the relay, since rulebot uses it by default.
  rulebot   alice -> friend -> bob through the real daemon,
            `python -m rulebot run -c CONFIG`, with the shipped rules/ (rule
            chat-to-member forwards the event to bob) and a config like the
            integration tests' (JSON logs at level info to a file, stream
            management as configured by default, allowed_domains localhost).

`--repeat` rounds (default 3; --quick 1) run every path once each, in order
(direct, relay, rulebot, direct, relay, ...), the relay or bot started afresh
for each run, so that the machine's drift over a minute touches all paths
alike. Each run is a warm-up of N/10 events (50..500; not measured; it also
proves the path delivers), then N measured events; the table shows each
path's run with the median events/s.
alice writes all N stanzas at once (`send_raw`, yielding to the event loop
every 100 so that bob can read meanwhile) and stamps each with
time.perf_counter() as it is written; bob stamps each on arrival (same
process, same clock). Every run has its own run id in the event ids, so stale
messages of an earlier run or warm-up (a server keeps draining buffers after
a client goes) are not counted. A run ends when bob has all N, when nothing
new arrived for STALL (10) seconds after the last send, or after the phase
timeout (120 s; --quick 30 s): missing events are then reported as lost, never
waited for. Around each run the CPU time (user + system, from /proc) of this
process, of the server's processes and of the relay or bot is read. Relay and
bot are started and stopped (SIGTERM) per run; servers and processes are
stopped at the end, also on errors, Ctrl-C and SIGTERM.

How to read the table (one row per server and mode; direct does not depend
on the mode and is simply measured again on that configuration's server):

  events/s      events received by bob / (last receipt - first send): the
                sustained throughput of the path for a burst of N events.
  p50/p99 ms    per-event latency, send to receipt, median and 99th percentile.
                All N are sent at once, so this is mostly queueing: p50 is
                about half the time the path needs to drain N events, p99
                nearly all of it. Use `--rate R` (events/s) to pace alice
                instead and see latency below saturation.
  ÷ direct      rulebot events/s / direct events/s, round by round (each
                rulebot run against the direct run of the same round); the
                median of those ratios.
  ÷ relay       the same against the relay: the cost of rulebot's own work
                (decoding, rules, logs, stream management) over the floor.
                The target is >= 0.80 (rulebot within 20% of the relay).
  CPU µs/event  CPU time of the relay process / of the bot process during the
                run, per event received: what one event costs the Python
                process, largely independent of how the 2 cores were shared.
                The ratio of the two is what to optimise.
  lost          events bob did not get, per path (direct / relay / rulebot).
The stderr log shows every run (with the CPU of this process and the server
too); below the table: N, runs, versions, total time, failures.

Caveats: alice, bob, the server and the relay or bot share 2 cores, so
throughput is that of the whole box (a path that uses more CPU also slows the
server and the clients); single runs vary by 10-30%, hence medians of 3 or
more, and rounds, so that a slow minute slows every path.

Investigating (not part of the default run): `--bot-set KEY=JSON` changes the
bot's config (e.g. `--bot-set log.level='"warning"'`, `--bot-set
stream_management=false`, `--bot-set rules='"/path/to/rules"'`), `--paths`
limits the paths measured, `--profile DIR` runs the bot under cProfile (its
row is then slowed by the profiler) and writes the top functions to
DIR/rulebot-SERVER-MODE.ROUND.txt; for a sampling profile attach py-spy to the
bot process (`py-spy record -p PID`), whose command line contains the bench's
work directory /tmp/rulebot-bench-*. `--keep` keeps configs and logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import json
import math
import os
import platform
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import escape

import slixmpp

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
SERVERS = ("prosody", "ejabberd")
MODES = ("client", "component")
PATHS = ("direct", "relay", "rulebot")
#: Paths measured only when asked for (--paths): the relay with XEP-0198 on (client mode);
#: and (with --baseline DIR) the daemon from another source tree, e.g. the last
#: release, for before/after ratios measured in the same run.
EXTRA_PATHS = ("relay-sm", "baseline")
USERS = {"alice": "alice-pw", "bob": "bob-pw", "friend": "friend-pw"}
DOMAIN = "localhost"
ALICE, BOB, FRIEND = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "friend"))

N_FULL, N_QUICK = 10_000, 1_000
PHASE_TIMEOUT_FULL, PHASE_TIMEOUT_QUICK = 120.0, 30.0
STALL = 10.0  # s without a new receipt, after the last send, that ends a run
CONNECT_TIMEOUT = 30.0  # clients, relay, bot
STOP_TIMEOUT = 15.0  # SIGTERM -> exit of a relay or bot process
YIELD_EVERY = 100  # alice yields to the event loop after this many sends
TEXT = "hello bob, this is a benchmark chat event from alice, number "
RELAY_SECRET_ENV = "BENCH_RELAY_SECRET"


def _xmppserver() -> Any:
    """scripts.xmppserver, imported when a run needs a server (not for --help)."""
    return importlib.import_module("scripts.xmppserver")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes (relay, bot) and servers, all stopped at the end whatever happens

_PROCS: list[subprocess.Popen[bytes]] = []
_SERVERS: list[Any] = []  # xmppserver.ServerInfo


def spawn(cmd: Sequence[str], logfile: Path, env: dict[str, str],
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )  # fmt: skip
    _PROCS.append(proc)
    return proc


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, wait, SIGKILL if it does not go. Only this process, by its pid."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"  pid {proc.pid} ignored SIGTERM for {timeout:.0f} s: killed")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
    if proc in _PROCS:
        _PROCS.remove(proc)
    return proc.returncode


def cleanup() -> None:
    for proc in list(_PROCS):
        with contextlib.suppress(Exception):
            stop_proc(proc, timeout=5)
    if _SERVERS:
        xs = _xmppserver()
        for info in list(_SERVERS):
            with contextlib.suppress(Exception):
                xs.stop_server(info)
            _SERVERS.remove(info)


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


async def wait_ready(path: Path, want: Callable[[str], bool], proc: subprocess.Popen[bytes],
                     what: str, answered: Callable[[], bool] | None = None,
                     timeout: float = CONNECT_TIMEOUT) -> None:
    """Until a line of *path* satisfies *want* (or, if given, *answered()* is true,
    polled every 0.5 s); fails when *proc* exits or on timeout."""
    deadline = time.monotonic() + timeout
    next_poll = time.monotonic() + 0.5
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if any(want(line) for line in text.splitlines()):
            return
        if answered is not None and time.monotonic() >= next_poll:
            next_poll += 0.5
            if answered():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n    ".join(text.splitlines()[-8:])
            why = f"exited ({proc.returncode})" if proc.returncode is not None else \
                f"not ready after {timeout:.0f} s"
            raise RuntimeError(f"{what} {why}; last lines of {path}:\n    {tail}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------
# alice and bob


@dataclass
class Run:
    """One batch of events bob waits for, recognised by its run id."""

    run_id: str
    n: int
    sent: list[float]
    recv: list[float]  # NaN until received
    received: int = 0
    duplicates: int = 0
    last_progress: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Peer:
    """A plain slixmpp client of this benchmark: alice sends, bob counts."""

    def __init__(self, user: str, server: Any) -> None:
        self.jid = f"{user}@{DOMAIN}"
        self.server = server
        x: Any = slixmpp.ClientXMPP(f"{self.jid}/bench", USERS[user])
        x.enable_direct_tls = False
        x.ca_certs = server.ca_file
        x.add_event_handler("session_start", self._on_session)
        x.add_event_handler("failed_all_auth", self._fail("authentication failed"))
        x.add_event_handler("ssl_invalid_chain", self._fail("TLS certificate not verified"))
        x.add_event_handler("message", self._on_message)
        self.xmpp = x
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.run: Run | None = None
        self.stale = 0  # messages of no current run (earlier runs, warm-ups)
        self.other = 0  # messages that are no benchmark event (errors, ...)
        self.other_sample: str | None = None
        self.pongs: set[str] = set()

    def _fail(self, why: str) -> Callable[[Any], None]:
        def fail(_: Any) -> None:
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(f"{self.jid}: {why}"))
        return fail

    def _on_session(self, _: Any) -> None:
        self.xmpp.send_presence()  # else messages to the bare JID go offline
        if not self.ready.done():
            self.ready.set_result(None)

    async def connect(self) -> None:
        self.xmpp.connect(self.server.host, self.server.c2s_port)
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), CONNECT_TIMEOUT)
        except BaseException:
            self.xmpp.cancel_connection_attempt()
            raise

    async def close(self) -> None:
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            self.xmpp.disconnect(wait=1.0)
            try:
                await asyncio.wait_for(self.xmpp.disconnected, 5)
            except (TimeoutError, asyncio.CancelledError):
                self.xmpp.abort()
        # slixmpp leaves its send-filter task behind; end it before the object goes
        task = getattr(self.xmpp, "_run_out_filters", None)
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _on_message(self, msg: Any) -> None:
        now = time.perf_counter()
        try:
            payload = json.loads(msg["body"])
            event_id = str(payload["id"])
        except (ValueError, KeyError, TypeError):
            if msg["type"] != "error":  # error: a ping to a bot not yet connected
                self.other += 1
                self.other_sample = self.other_sample or str(msg)[:300]
            return
        if payload.get("type") == "pong":
            self.pongs.add(event_id)
            return
        run = self.run
        prefix, _, index = event_id.rpartition(":")
        if run is None or prefix != run.run_id:
            self.stale += 1
            return
        i = int(index)
        if math.isnan(run.recv[i]):
            run.recv[i] = now
            run.received += 1
            run.last_progress = now
            if run.received == run.n:
                run.done.set()
        else:
            run.duplicates += 1

    def pinger(self, to: str) -> Callable[[], bool]:
        """A poll that sends a ping event to the bot; true once one was answered."""
        sent: list[str] = []

        def poll() -> bool:
            if any(ping in self.pongs for ping in sent):
                return True
            sent.append(f"ping-{uuid.uuid4().hex[:10]}")
            body = escape(json.dumps({"type": "ping", "id": sent[-1]}))
            self.xmpp.send_raw(f"<message to='{to}' type='chat'><body>{body}</body></message>")
            return False

        return poll

    def stanzas(self, run_id: str, n: int, to: str) -> list[str]:
        out = []
        for i in range(n):
            event = {"type": "chat", "id": f"{run_id}:{i}", "to": BOB, "text": f"{TEXT}{i}"}
            body = escape(json.dumps(event, separators=(",", ":")))
            out.append(f"<message to='{to}' type='chat' id='{run_id}-{i}'>"
                       f"<body>{body}</body></message>")
        return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time used so far by these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def group_pids(pgid: int) -> list[int]:
    """Processes of a process group (a server: Prosody, or ejabberd's shell and VM)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[-1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


@dataclass
class Probe:
    """Whose CPU time a run is charged with: this process, the server, the relay/bot."""

    server: list[int]
    bot: list[int] = field(default_factory=list)

    def sample(self) -> tuple[float, float, float]:
        return cpu_seconds([os.getpid()]), cpu_seconds(self.server), cpu_seconds(self.bot)


@dataclass
class Result:
    n: int
    received: int = 0
    eps: float = 0.0
    p50: float = math.nan  # ms
    p99: float = math.nan
    duplicates: int = 0
    seconds: float = 0.0
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # s: bench, server, relay/bot
    error: str | None = None

    def cpu_us(self, who: int) -> float:
        """CPU µs per received event of bench (0), server (1) or relay/bot (2)."""
        return self.cpu[who] / self.received * 1e6 if self.received else math.nan

    @property
    def lost(self) -> int:
        return self.n - self.received


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


async def one_run(alice: Peer, bob: Peer, to: str, n: int, timeout: float,
                  rate: float, probe: Probe) -> Result:
    """Send n events alice -> `to` and wait for bob to get them (or give up)."""
    run_id = uuid.uuid4().hex[:10]
    stanzas = alice.stanzas(run_id, n, to)
    run = Run(run_id, n, [math.nan] * n, [math.nan] * n)
    bob.run = run
    send_raw = alice.xmpp.send_raw
    clock = time.perf_counter
    cpu_before = probe.sample()
    start = clock()
    for i, stanza in enumerate(stanzas):
        if rate > 0:
            delay = start + i / rate - clock()
            if delay > 0:
                await asyncio.sleep(delay)
        elif i % YIELD_EVERY == 0 and i:
            await asyncio.sleep(0)
        run.sent[i] = clock()
        send_raw(stanza)
    sent_done = clock()
    deadline = start + timeout
    while not run.done.is_set():
        now = clock()
        if now >= deadline or now - max(run.last_progress, sent_done) >= STALL:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), 0.25)
    bob.run = None
    cpu = tuple(b - a for a, b in zip(cpu_before, probe.sample(), strict=True))
    result = Result(n, run.received, duplicates=run.duplicates, cpu=(cpu[0], cpu[1], cpu[2]))
    if run.received:
        last = max(t for t in run.recv if not math.isnan(t))
        result.seconds = last - run.sent[0]
        result.eps = run.received / result.seconds if result.seconds > 0 else math.inf
        lat = sorted((r - s) * 1000 for s, r in zip(run.sent, run.recv, strict=True)
                     if not math.isnan(r))
        result.p50, result.p99 = statistics.median(lat), percentile(lat, 99)
    return result


async def measure(label: str, alice: Peer, bob: Peer, to: str, n: int, timeout: float,
                  rate: float, probe: Probe, k: int, repeat: int) -> Result:
    """Warm-up, then run number k (0-based) of n events on a freshly started path."""
    warm = max(50, min(500, n // 10))
    w = await one_run(alice, bob, to, warm, min(timeout, 30.0), 0.0, probe)
    if w.received == 0:
        return Result(n, error=f"{label}: not one of {warm} warm-up events arrived")
    if w.lost:
        log(f"  {label}: warm-up lost {w.lost} of {warm}")
    r = await one_run(alice, bob, to, n, timeout, rate, probe)
    log(f"  {label:8} run {k + 1}/{repeat}: {r.eps:8,.0f} events/s  p50 {r.p50:7.1f} ms  "
        f"p99 {r.p99:7.1f} ms  lost {r.lost}  CPU µs/event: bench {r.cpu_us(0):.0f}, "
        f"server {r.cpu_us(1):.0f}, relay/bot {r.cpu_us(2):.0f}"
        + (f"  dup {r.duplicates}" if r.duplicates else ""))
    return r


def median_run(runs: Sequence[Result]) -> Result:
    """The run with the median events/s (the upper one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.eps)
    return ordered[len(ordered) // 2]


# --------------------------------------------------------------------------
# relay and bot processes


def start_relay(server: Any, mode: str, workdir: Path, sm: bool = False, run: int = 0
                ) -> tuple[subprocess.Popen[bytes], Path]:
    component = mode == "component"
    jid = server.component_jid if component else FRIEND
    port = server.component_port if component else server.c2s_port
    # One log per run: wait_ready looks for the "ready" line of this start.
    logfile = workdir / f"relay{'-sm' if sm else ''}-{mode}.{run + 1}.log"
    env = dict(os.environ)
    env[RELAY_SECRET_ENV] = server.component_secret if component else USERS["friend"]
    cmd = [sys.executable, "-m", "bench.xmpp", "relay", "--mode", mode,
           "--jid", jid, "--host", server.host, "--port", str(port),
           "--ca-file", server.ca_file, "--to", BOB] + (["--sm"] if sm else [])
    return spawn(cmd, logfile, env), logfile


def _set_path(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def start_bot(server: Any, mode: str, workdir: Path, overrides: Sequence[tuple[str, Any]],
              profile: Path | None, run: int = 0, source: Path = ROOT
              ) -> tuple[subprocess.Popen[bytes], Path, Path | None]:
    """`rulebot run` as the integration tests start it; logs go to a file. With
    `source`, the rulebot package of that source tree (run from there: `-m`
    puts the working directory first on sys.path) and its rules/."""
    component = mode == "component"
    workdir.mkdir(parents=True, exist_ok=True)
    secret = workdir / f"secret-{mode}"
    secret.write_text((server.component_secret if component else USERS["friend"]) + "\n")
    secret.chmod(0o600)
    config: dict[str, Any] = {
        "mode": mode,
        "jid": server.component_jid if component else FRIEND,
        "server": {"host": server.host,
                   "port": server.component_port if component else server.c2s_port},
        "tls": {"ca_file": server.ca_file},
        "rules": str(source / "rules"),
        "password_file": str(secret),
        "allowed_domains": [DOMAIN],
        "reconnect": {"initial_delay": 0.2, "max_delay": 2},
        "log": {"format": "json", "level": "info"},
    }
    for dotted, value in overrides:
        _set_path(config, dotted, value)
    path = workdir / f"rulebot-{mode}.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    logfile = workdir / f"rulebot-{mode}.{run + 1}.log"  # one per run, as for the relay
    prof_out = None
    cmd = [sys.executable]
    if profile is not None:
        prof_out = profile / f"rulebot-{server.kind}-{mode}.{run + 1}.prof"  # one per round
        cmd += ["-m", "cProfile", "-o", str(prof_out)]
    cmd += ["-m", "rulebot", "run", "-c", str(path)]
    return spawn(cmd, logfile, dict(os.environ), cwd=source), logfile, prof_out


def _is_connected(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("event") == "connected"


def profile_summary(prof: Path, top: int = 30) -> Path:
    """Top functions of a cProfile dump, by own time and by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(prof), stream=out)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        print(f"==== top {top} by {key} ====", file=out)
        stats.sort_stats(key).print_stats(top)
    text_path = prof.with_suffix(".txt")
    text_path.write_text(out.getvalue())
    return text_path


# --------------------------------------------------------------------------
# one configuration: fresh server, three paths


@dataclass
class Row:
    server: str
    mode: str
    results: dict[str, Result] = field(default_factory=dict)  # each path's median run
    runs: dict[str, list[Result]] = field(default_factory=dict)  # every run, by round
    error: str | None = None

    def ratio(self, a: str, b: str) -> str:
        """Median over rounds of path a's events/s over path b's in the same round."""
        ra, rb = self.results.get(a), self.results.get(b)
        if ra is None or rb is None or ra.error or rb.error:
            return "-"
        # Both paths succeeded in every round (a failure ends a path's rounds).
        pairs = [x.eps / y.eps
                 for x, y in zip(self.runs[a], self.runs[b], strict=True) if y.eps]
        return f"{statistics.median(pairs):.2f}" if pairs else "-"


async def run_path(path: str, mode: str, info: Any, workdir: Path, alice: Peer, bob: Peer,
                   friend: str, server_pids: list[int], args: argparse.Namespace,
                   k: int) -> Result:
    """Start the path's relay or bot (none for direct), measure run k, stop it."""
    if path == "direct":
        return await measure(path, alice, bob, BOB, args.n, args.timeout, args.rate,
                             Probe(server_pids), k, args.repeat)
    prof: Path | None = None
    answered = None
    if path in ("relay", "relay-sm"):
        proc, logfile = start_relay(info, mode, workdir, sm=path == "relay-sm", run=k)
        ready: Callable[[str], bool] = lambda line: line.strip() == "ready"  # noqa: E731
    else:
        # The baseline in a directory of its own: its store and state files
        # are the older release's (a newer store schema would be refused).
        base = path == "baseline"
        proc, logfile, prof = start_bot(info, mode, workdir / "baseline" if base else workdir,
                                        args.bot_set, args.profile, k,
                                        args.baseline if base else ROOT)
        ready = _is_connected
        if dict(args.bot_set).get("log.level", "info") not in ("debug", "info"):
            answered = alice.pinger(friend)  # no "connected" line to wait for
    try:
        await wait_ready(logfile, ready, proc, f"{path} ({mode})", answered)
        result = await measure(path, alice, bob, friend, args.n, args.timeout, args.rate,
                               Probe(server_pids, [proc.pid]), k, args.repeat)
    except RuntimeError as exc:
        result = Result(args.n, error=str(exc))
        log(f"  {exc}")
    finally:
        code = stop_proc(proc)
        if code not in (0, None) and path == "rulebot":
            log(f"  rulebot exited with {code}; see {logfile}")
    if prof is not None and prof.exists():
        log(f"  profile: {profile_summary(prof)}")
    return result


async def configuration(kind: str, mode: str, args: argparse.Namespace, base: Path) -> Row:
    row = Row(kind, mode)
    xs = _xmppserver()
    workdir = base / f"{kind}-{mode}"
    started = time.monotonic()
    log(f"== {kind} / {mode}: starting a fresh server (limits lifted for all users)")
    try:
        info = xs.start_server(kind, workdir / "server", USERS, unlimited=True,
                               stock_gc=args.server_gc == "stock")
    except xs.ServerError as exc:
        row.error = f"server did not start: {exc}"
        log(f"  {row.error}")
        return row
    _SERVERS.append(info)
    peers: list[Peer] = []
    try:
        alice, bob = Peer("alice", info), Peer("bob", info)
        peers += [alice, bob]
        await asyncio.gather(alice.connect(), bob.connect())
        friend = info.component_jid if mode == "component" else FRIEND
        server_pids = group_pids(info.pid)
        paths = [p for p in args.paths if not (p == "relay-sm" and mode == "component")]
        if len(paths) < len(args.paths):
            log("  relay-sm: components have no stream management; skipped")
        # Round by round (relay, rulebot, relay, rulebot, ...), each path freshly
        # started for each run: the machine's speed drifts over a minute by more
        # than the differences measured, and drift then touches every path alike.
        runs: dict[str, list[Result]] = {p: [] for p in paths}
        failed: dict[str, Result] = {}
        for k in range(args.repeat):
            for path in paths:
                if path not in failed:
                    r = await run_path(path, mode, info, workdir, alice, bob, friend,
                                       server_pids, args, k)
                    if r.error:
                        failed[path] = r
                    else:
                        runs[path].append(r)
        row.runs = runs
        for path in paths:
            row.results[path] = failed.get(path) or median_run(runs[path])
        if bob.stale:
            log(f"  bob ignored {bob.stale} stale events (of warm-ups or earlier runs)")
        if alice.other or bob.other:
            log(f"  non-benchmark messages: alice {alice.other}, bob {bob.other}; e.g. "
                f"{alice.other_sample or bob.other_sample}")
    except (RuntimeError, OSError, xs.ServerError) as exc:
        row.error = str(exc)
        log(f"  failed: {exc}")
    finally:
        for peer in peers:
            await peer.close()
        xs.stop_server(info)
        _SERVERS.remove(info)
        log(f"   ({time.monotonic() - started:.1f} s)")
    return row


# --------------------------------------------------------------------------
# the table


def _eps(r: Result | None) -> str:
    if r is None:
        return "-"
    if r.error:
        return "failed"
    return f"{r.eps:,.0f}"


def _lat(r: Result | None) -> str:
    if r is None or r.error or r.received == 0:
        return "-"
    return f"{r.p50:,.0f} / {r.p99:,.0f}"


def _cpu(r: Result | None) -> str:
    if r is None or r.error or r.received == 0:
        return "-"
    return f"{r.cpu_us(2):,.0f}"


def table(rows: Sequence[Row]) -> str:
    head = ("| server | mode | direct events/s | p50/p99 ms | relay events/s | p50/p99 ms "
            "| rulebot events/s | p50/p99 ms | ÷ direct | ÷ relay "
            "| CPU µs/event relay / rulebot | lost d/r/b |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        if row.error and not row.results:
            lines.append(f"| {row.server} | {row.mode} | failed: {row.error[:60]} |"
                         + " |" * 9)
            continue
        d, r, b = (row.results.get(p) for p in PATHS)
        lost = "/".join("-" if x is None else str(x.lost) for x in (d, r, b))
        lines.append(f"| {row.server} | {row.mode} | {_eps(d)} | {_lat(d)} | {_eps(r)} | "
                     f"{_lat(r)} | {_eps(b)} | {_lat(b)} | {row.ratio('rulebot', 'direct')} | "
                     f"{row.ratio('rulebot', 'relay')} "
                     f"| {_cpu(r)} / {_cpu(b)} | {lost} |")
    extra = [row for row in rows if "relay-sm" in row.results]
    if extra:
        lines += ["", "| server | mode | relay+SM events/s | p50/p99 ms | rulebot ÷ relay+SM "
                  "| CPU µs/event relay+SM / rulebot | server CPU µs/event relay / relay+SM "
                  "/ rulebot |", "|---|---|---|---|---|---|---|"]
        for row in extra:
            r, sm, b = (row.results.get(p) for p in ("relay", "relay-sm", "rulebot"))
            server_cpu = " / ".join("-" if x is None or x.error or not x.received
                                    else f"{x.cpu_us(1):,.0f}" for x in (r, sm, b))
            lines.append(f"| {row.server} | {row.mode} | {_eps(sm)} | {_lat(sm)} | "
                         f"{row.ratio('rulebot', 'relay-sm')} | {_cpu(sm)} / {_cpu(b)} "
                         f"| {server_cpu} |")
    based = [row for row in rows if "baseline" in row.results]
    if based:
        lines += ["", "| server | mode | baseline events/s | p50/p99 ms | baseline ÷ relay "
                  "| rulebot ÷ relay | rulebot ÷ baseline | CPU µs/event baseline / rulebot "
                  "| lost baseline |", "|---|---|---|---|---|---|---|---|---|"]
        for row in based:
            bl, b = row.results.get("baseline"), row.results.get("rulebot")
            lines.append(f"| {row.server} | {row.mode} | {_eps(bl)} | {_lat(bl)} | "
                         f"{row.ratio('baseline', 'relay')} | {row.ratio('rulebot', 'relay')} | "
                         f"{row.ratio('rulebot', 'baseline')} | {_cpu(bl)} / {_cpu(b)} | "
                         f"{'-' if bl is None else bl.lost} |")
    return "\n".join(lines)


def _versions() -> str:
    parts = [f"Python {platform.python_version()}", f"slixmpp {slixmpp.__version__}"]
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                              "prosody", "ejabberd"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
        parts += [line.strip() for line in out.splitlines() if line.strip()]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ", ".join(parts)


# --------------------------------------------------------------------------
# the minimal relay (runs as its own process: `bench/xmpp.py relay ...`)


async def relay_main(args: argparse.Namespace) -> int:
    """Forward the body of every message to one JID: the floor cost of a Python bot."""
    secret = os.environ[RELAY_SECRET_ENV]
    component = args.mode == "component"
    x: Any
    if component:
        x = slixmpp.ComponentXMPP(args.jid, secret, args.host, args.port)  # type: ignore[no-untyped-call]
    else:
        x = slixmpp.ClientXMPP(f"{args.jid}/relay", secret)
        x.enable_direct_tls = False
        x.ca_certs = args.ca_file
        if args.sm:  # slixmpp's stream management as it comes (acks as stanzas arrive)
            x.register_plugin("xep_0198", {"window": 50})
    mfrom = args.jid if component else None
    to = args.to
    stop = asyncio.Event()
    failure: list[str] = []

    def on_message(msg: Any) -> None:
        if msg["type"] in ("chat", "normal") and msg["body"]:
            x.send_message(mto=to, mbody=msg["body"], mtype="chat", mfrom=mfrom)

    def on_session(_: Any) -> None:
        if not component:
            x.send_presence()
        print("ready", flush=True)

    def fail(why: str) -> Callable[[Any], None]:
        def handler(_: Any) -> None:
            failure.append(why)
            stop.set()
        return handler

    x.add_event_handler("message", on_message)
    x.add_event_handler("session_start", on_session)
    x.add_event_handler("failed_all_auth", fail("authentication failed"))
    x.add_event_handler("ssl_invalid_chain", fail("TLS certificate not verified"))
    x.add_event_handler("stream_error", fail("stream error"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    x.connect(args.host, args.port)
    await stop.wait()
    x.cancel_connection_attempt()
    if x.transport is not None:
        x.disconnect(wait=1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(x.disconnected, 5)
    if failure:
        print(f"relay failed: {failure[0]}", flush=True)
        return 1
    return 0


# --------------------------------------------------------------------------
# command line


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}")
        return items
    return parse


def _assignment(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, e.g. log.level=warning")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/xmpp.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"N={N_QUICK:,} (default {N_FULL:,})")
    p.add_argument("--n", type=int, help="events per run")
    p.add_argument("--servers", type=_csv(SERVERS), default=list(SERVERS))
    p.add_argument("--modes", type=_csv(MODES), default=list(MODES))
    p.add_argument("--paths", type=_csv(PATHS + EXTRA_PATHS), default=list(PATHS),
                   help="paths to measure (default: direct,relay,rulebot; also relay-sm: "
                        "the relay with XEP-0198, client mode)")
    p.add_argument("--repeat", type=int,
                   help="rounds: runs per path, the median is shown (default 3; --quick: 1)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="pace alice at this many events/s (default: send all at once)")
    p.add_argument("--timeout", type=float, help="seconds per run before giving up")
    p.add_argument("--bot-set", action="append", type=_assignment, default=[],
                   metavar="KEY=JSON", help="override the bot config, e.g. log.level=\"warning\"")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="run the bot under cProfile, write "
                        "DIR/rulebot-SERVER-MODE.ROUND.{prof,txt}")
    p.add_argument("--server-gc", choices=("tuned", "stock"), default="tuned",
                   help="the servers' garbage collectors as the project's servers run "
                        "them (default: Prosody's gc pause 200, ejabberd's VM with "
                        "+hmbs 1000000) or as they come")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run the daemon of the source tree DIR (e.g. a `git worktree` "
                        "of the previous release) as path 'baseline', round by round with "
                        "the others: before/after ratios from one run")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "rulebot" / "__main__.py").is_file():
            p.error(f"--baseline {args.baseline}: no rulebot package there")
        if "baseline" not in args.paths:
            args.paths.append("baseline")
    elif "baseline" in args.paths:
        p.error("the baseline path needs --baseline DIR")
    if args.n is None:
        args.n = N_QUICK if args.quick else N_FULL
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.timeout = args.timeout or (PHASE_TIMEOUT_QUICK if args.quick else PHASE_TIMEOUT_FULL)
    if args.n < 1 or args.repeat < 1:
        p.error("--n and --repeat must be positive")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    return args


def relay_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/xmpp.py relay")
    p.add_argument("--mode", choices=MODES, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca-file", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--sm", action="store_true", help="use XEP-0198 (client mode)")
    return p.parse_args(argv)


async def bench(args: argparse.Namespace, base: Path) -> list[Row]:
    rows = []
    for kind in args.servers:
        for mode in args.modes:
            rows.append(await configuration(kind, mode, args, base))
    return rows


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["relay"]:
        return asyncio.run(relay_main(relay_args(argv[1:])))
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    base = Path(tempfile.mkdtemp(prefix="rulebot-bench-"))
    load = os.getloadavg()[0]  # other work on the box makes every number worse
    started = time.monotonic()
    rows: list[Row] = []
    try:
        rows = asyncio.run(bench(args, base))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        cleanup()
        if args.keep:
            log(f"work directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(table(rows), file=out)
    for row in rows:
        problems = [f"{p}: {r.error}" for p, r in row.results.items() if r.error]
        problems += [row.error] if row.error else []
        for problem in problems:
            print(f"\n{row.server}/{row.mode} {problem}", file=out)
    print(f"\nN = {args.n:,} events per run, {args.repeat} run(s) per path"
          + (f", alice paced at {args.rate:,.0f}/s" if args.rate else ", sent all at once")
          + (f"; bot config overrides: {args.bot_set}" if args.bot_set else "")
          + (f"; bot under cProfile ({args.profile})" if args.profile else "")
          + ("; servers with their stock garbage collector settings"
             if args.server_gc == "stock" else "")
          + f". {os.cpu_count()} CPUs (load average {load:.1f} at start), {_versions()}. "
          f"Total {time.monotonic() - started:.0f} s.", file=out)
    failed = any(row.error or any(r.error or r.lost for r in row.results.values())
                 for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
