"""Resident memory of the daemon with 10,000 rules and 100,000 relations.

Run: `.venv/bin/python -m bench.memory [--quick]` (or `make bench-memory`);
~1.5 min on 2 cores (--quick: 1,000 rules and 10,000 relations, ~20 s).

The real daemon, `rulebot run -c rulebot.yaml` (client mode, JSON logs at
level info to a file, a SQLite store, /status on loopback, stream management
with a state file, the password in RULEBOT_PASSWORD), is started four times
against one private Prosody on 127.0.0.1 (scripts/xmppserver.py), once per
configuration:

  14 rules       rules/friends/10-relations.yaml alone: the friends-only rule
                 set's requests, answers, blocks (`related()`, `mutual()`,
                 `relate`/`unrelate`: every rule reads or writes the store).
  10,000 rules   the same file, rules/friends/20-chat.yaml (4 rules) and
                 9,986 generated per-room rules (bench/shapes.py, shape
                 per-room: `event.type == 'room-chat' && event.room == 'room-K'
                 && in_list('members', sender)` -> broadcast to five members,
                 a last rule answering unknown rooms; the shape's event type
                 'chat' renamed 'room-chat' so that it does not shadow the
                 friends' chat rules or the reverse).
  0 relations    an empty store (the daemon creates it).
  100,000        50,000 random mutual friendships among 20,000 users
  relations      (bench/relations.py's recipe), imported with
                 RelationStore.import_jsonl before the daemon starts; each run
                 gets its own copy of the file.

Every rule set is first checked with `rulebot validate DIR`. For each run the
bench waits (bounded) for the daemon's "connected" log line, lets it settle
1 s and reads VmRSS ("after connected") from /proc/PID/status; then, to show
the daemon decides with those rules and that store, alice asks /status for
the rule count and sends a friend-request (answered by rule `request`, after
two store reads, with a store write) and, with the generated rules, a
room-chat (answered by `unknown-room`, alice being in no room's member list);
then VmHWM (the peak since the process started, rule loading included) is
read and the daemon is stopped with SIGTERM. "vs baseline" is the difference
from the small rules / 0 relations run of the same invocation, so imports and
the interpreter cancel out. MB here is 2^20 bytes (/proc gives kB = KiB).

An extra line measures the 10,000-rule set in this process with tracemalloc
(load_rules: Python allocations it keeps, the peak while loading, and the
source lines that keep the most), to tell the rule objects from the rest.
Target (the issue): <= 150 MB resident for 10,000 rules + 100,000 relations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.shapes import SHAPES
from rulebot.client import RequestError, RulebotClient
from rulebot.rules.loader import load_rules
from rulebot.store.open import open_store
from scripts import xmppserver

ROOT = Path(__file__).resolve().parents[1]
FRIENDS = ROOT / "rules" / "friends"
RULEBOT = Path(sys.executable).with_name("rulebot")
USERS = {"friend": "friend-pw", "alice": "alice-pw"}
DOMAIN = "localhost"
TARGET_MB = 150.0
# The shipped files' rule counts (they grow with the shipped rules).
SMALL_RULES = len(load_rules(FRIENDS / "10-relations.yaml").rules)
CHAT_RULES = len(load_rules(FRIENDS).rules) - SMALL_RULES  # 20-chat.yaml
RELATION_USERS = 20_000
SEED = 7
CONNECT_TIMEOUT = 120.0  # start -> "connected": 10,000 rules take ~12 s to load alone
SETTLE = 1.0
REQUEST_TIMEOUT = 15.0
STOP_TIMEOUT = 30.0
MB = 1024.0  # kB in a MB (MiB)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# rule sets and stores


def rule_dir(path: Path, rules: int) -> Path:
    """A rule directory of `rules` rules (10: 10-relations.yaml alone)."""
    path.mkdir(parents=True)
    shutil.copy(FRIENDS / "10-relations.yaml", path / "10-relations.yaml")
    if rules > SMALL_RULES:
        shutil.copy(FRIENDS / "20-chat.yaml", path / "20-chat.yaml")
        text, _events = SHAPES["per-room"](rules - SMALL_RULES - CHAT_RULES)
        text = text.replace("event.type == 'chat'", "event.type == 'room-chat'")
        (path / "30-rooms.yaml").write_text(text)
    return path


def validate(path: Path, rules: int) -> None:
    """`rulebot validate DIR` must accept the set, with exactly `rules` rules."""
    proc = subprocess.run([str(RULEBOT), "validate", str(path)], capture_output=True,
                          text=True, timeout=300, check=False)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or f": {rules} rules in " not in out:
        raise RuntimeError(f"rulebot validate {path} (exit {proc.returncode}):\n{out}")
    log(f"  {out.splitlines()[-1]}")


def relation_lines(count: int) -> str:
    """count/2 random mutual friendships (count directed relations) as JSON lines."""
    rng = random.Random(SEED)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < count // 2:
        a, b = rng.sample(range(RELATION_USERS), 2)
        pairs.add((min(a, b), max(a, b)))
    lines = []
    for a, b in sorted(pairs):
        for s, o in ((a, b), (b, a)):
            lines.append(json.dumps({"subject": f"u{s}@{DOMAIN}", "object": f"u{o}@{DOMAIN}",
                                     "kind": "friend"}))
    return "\n".join(lines) + "\n"


def filled_store(path: Path, count: int) -> Path:
    with open_store(str(path)) as store:
        store.import_jsonl(io.StringIO(relation_lines(count)))
        stored = store.count()
    if stored != count:
        raise RuntimeError(f"{path}: {stored} relations stored, expected {count}")
    return path


# --------------------------------------------------------------------------
# the daemon


def proc_status(pid: int) -> dict[str, float]:
    """The Vm*/Rss* lines of /proc/PID/status, in kB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = float(value.split()[0])
    return out


def children(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return []


def read_log(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


async def wait_log(path: Path, want: Callable[[dict[str, Any]], bool],
                   proc: subprocess.Popen[bytes], what: str,
                   timeout: float = CONNECT_TIMEOUT) -> dict[str, Any]:
    """The first JSON log entry satisfying `want`; fails when the daemon exits or on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in read_log(path):
            if want(entry):
                return entry
        if proc.poll() is not None or time.monotonic() > deadline:
            why = (f"exited ({proc.returncode})" if proc.returncode is not None
                   else f"not there after {timeout:.0f} s")
            tail = "\n    ".join(path.read_text(errors="replace").splitlines()[-8:]
                                 if path.exists() else [])
            raise RuntimeError(f"{what}: {why}; last lines of {path}:\n    {tail}")
        await asyncio.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait; SIGKILL only if it does not go. This process only, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"  pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: killed")
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def fetch(url: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
    with opener.open(url, timeout=10) as reply:
        return json.loads(reply.read())


@dataclass
class Row:
    label: str
    rules: int
    relations: int
    rss_kb: float = 0.0
    hwm_kb: float = 0.0
    anon_kb: float = 0.0
    file_kb: float = 0.0
    seconds_to_connect: float = 0.0


async def probe(info: xmppserver.ServerInfo, port: int, row: Row) -> None:
    """What the daemon runs: its rule count on /status, and two decisions."""
    status = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/status")
    if status["rules"]["count"] != row.rules or status["connected"] is not True:
        raise RuntimeError(f"{row.label}: /status says {status['rules']}, "
                           f"connected {status['connected']}")
    alice = RulebotClient(f"alice@{DOMAIN}", USERS["alice"], xmppserver.BOT_JID,
                          host=info.host, port=info.c2s_port, ca_file=info.ca_file)
    await alice.connect(timeout=REQUEST_TIMEOUT)
    try:
        sent = await alice.request({"type": "friend-request", "to": f"u1@{DOMAIN}"},
                                   timeout=REQUEST_TIMEOUT)
        if sent.payload.get("type") != "friend-request-sent":
            raise RuntimeError(f"{row.label}: friend-request answered {sent.payload}")
        if row.rules > SMALL_RULES:
            try:
                got = await alice.request({"type": "room-chat", "room": "room-5", "text": "hi"},
                                          timeout=REQUEST_TIMEOUT)
            except RequestError as exc:
                if exc.code != "no-such-room":
                    raise
            else:
                raise RuntimeError(f"{row.label}: room-chat answered {got.payload}")
    finally:
        await alice.close()


async def measure(info: xmppserver.ServerInfo, row: Row, rules: Path, store: Path,
                  workdir: Path) -> Row:
    workdir.mkdir(parents=True)
    config = {
        "mode": "client",
        "jid": xmppserver.BOT_JID,
        "server": {"host": info.host, "port": info.c2s_port},
        "tls": {"ca_file": info.ca_file},
        "rules": str(rules),
        "store": str(store),
        "sm_state_file": str(workdir / "rulebot.sm.json"),
        "status": {"listen": "127.0.0.1:0"},
        "allowed_domains": [DOMAIN],
        "reconnect": {"initial_delay": 0.2, "max_delay": 2},
        "log": {"format": "json", "level": "info"},
    }
    path = workdir / "rulebot.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    logfile = workdir / "rulebot.log"
    env = {**os.environ, "RULEBOT_PASSWORD": USERS["friend"]}
    started = time.monotonic()
    with open(logfile, "ab") as out:
        proc = subprocess.Popen([str(RULEBOT), "run", "--config", str(path)], cwd=workdir,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        await wait_log(logfile, lambda e: e.get("event") == "connected", proc, row.label)
        row.seconds_to_connect = time.monotonic() - started
        await asyncio.sleep(SETTLE)
        now = proc_status(proc.pid)
        row.rss_kb = now["VmRSS"]
        row.anon_kb, row.file_kb = now.get("RssAnon", 0.0), now.get("RssFile", 0.0)
        if children(proc.pid):
            log(f"  {row.label}: the daemon has child processes {children(proc.pid)} "
                "(not counted)")
        listen = await wait_log(logfile, lambda e: e.get("event") == "status_listen", proc,
                                row.label, timeout=5.0)
        await probe(info, int(listen["port"]), row)
        row.hwm_kb = proc_status(proc.pid)["VmHWM"]
    finally:
        code = stop(proc)
    if code != 0:
        raise RuntimeError(f"{row.label}: rulebot run exited with {code}; see {logfile}")
    log(f"  {row.label}: connected after {row.seconds_to_connect:.1f} s, "
        f"RSS {row.rss_kb / MB:.1f} MB (anon {row.anon_kb / MB:.1f}, file {row.file_kb / MB:.1f}),"
        f" peak {row.hwm_kb / MB:.1f} MB")
    return row


# --------------------------------------------------------------------------
# the rule set in this process


def _short(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT / "rulebot") else path.name


def traced_load(path: Path, top: int = 4) -> str:
    """load_rules under tracemalloc: what the rule set keeps, the loading peak, and where."""
    gc.collect()
    tracemalloc.start()
    ruleset = load_rules(path)
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    stats = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]).statistics("lineno")
    tracemalloc.stop()
    where = ", ".join(f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno} "
                      f"{s.size / 2**20:.1f}" for s in stats[:top])
    rules = len(ruleset.rules)
    del ruleset
    return (f"tracemalloc, load_rules of the {rules:,}-rule set in-process: keeps "
            f"{kept / 2**20:.1f} MB of Python objects ({kept / rules / 1024:.1f} kB a rule), "
            f"peak {peak / 2**20:.1f} MB while loading; most kept by {where} (MB)")


# --------------------------------------------------------------------------


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


async def run_all(info: xmppserver.ServerInfo, rows: list[Row], dirs: dict[int, Path],
                  stores: dict[int, Path], tmp: Path) -> None:
    for k, row in enumerate(rows):
        store = tmp / f"store-{k}.sqlite3"
        if row.relations:
            shutil.copy(stores[row.relations], store)
        await measure(info, row, dirs[row.rules], store, tmp / f"run-{k}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1,000 rules and 10,000 relations")
    args = parser.parse_args()
    big_rules, big_relations = (1_000, 10_000) if args.quick else (10_000, 100_000)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.perf_counter()
    rows = [Row(f"baseline: {SMALL_RULES} rules, 0 relations", SMALL_RULES, 0),
            Row(f"{big_rules:,} rules, 0 relations", big_rules, 0),
            Row(f"{SMALL_RULES} rules, {big_relations:,} relations", SMALL_RULES, big_relations),
            Row(f"{big_rules:,} rules, {big_relations:,} relations", big_rules, big_relations)]
    with tempfile.TemporaryDirectory(prefix="rulebot-bench-memory-") as name:
        tmp = Path(name)
        log(f"rule sets and a store of {big_relations:,} relations in {tmp}")
        dirs = {n: rule_dir(tmp / f"rules-{n}", n) for n in (SMALL_RULES, big_rules)}
        for n, path in dirs.items():
            validate(path, n)
        stores = {big_relations: filled_store(tmp / "relations.sqlite3", big_relations)}
        info = xmppserver.start_server("prosody", tmp / "server", USERS)
        try:
            asyncio.run(run_all(info, rows, dirs, stores, tmp))
        finally:
            xmppserver.stop_server(info)
        traced = traced_load(dirs[big_rules])
    base = rows[0]
    print(f"\nrulebot memory benchmark: `rulebot run` (client mode, Prosody on loopback), "
          f"{big_rules:,} rules (friends + per-room), {big_relations:,} relations (SQLite); "
          "resident memory from /proc/PID/status\n")
    print("| configuration | RSS MB after connected | peak MB (VmHWM) | RSS vs baseline MB "
          "| peak vs baseline MB |")
    print("|---|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r.label} | {r.rss_kb / MB:.1f} | {r.hwm_kb / MB:.1f} | "
              f"{(r.rss_kb - base.rss_kb) / MB:+.1f} | {(r.hwm_kb - base.hwm_kb) / MB:+.1f} |")
    full = rows[-1]
    ok = full.rss_kb / MB <= TARGET_MB
    verdict = "PASS" if ok else "FAIL"
    over = "" if ok else f", {full.rss_kb / MB - TARGET_MB:.1f} MB over"
    peak_note = ("within" if full.hwm_kb / MB <= TARGET_MB else
                 f"{full.hwm_kb / MB - TARGET_MB:.1f} MB over")
    print(f"\nverdict: {verdict}: {full.label}: {full.rss_kb / MB:.1f} MB resident after "
          f"connected (target <= {TARGET_MB:.0f} MB{over}); peak {full.hwm_kb / MB:.1f} MB "
          f"({peak_note} the target)"
          + ("" if not args.quick else " [--quick: not the issue's sizes]"))
    print(f"{full.label}: RssAnon {full.anon_kb / MB:.1f} MB, RssFile {full.file_kb / MB:.1f} MB;"
          f" connected {full.seconds_to_connect:.1f} s after start")
    print(traced)
    print(f"\nmachine: nproc={os.cpu_count()}, Python {sys.version.split()[0]}; "
          f"run took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
