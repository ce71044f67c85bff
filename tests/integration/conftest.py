"""Integration harness: private servers, the real `rulebot run` as a subprocess, real clients.

Every test gets its own fresh server (Prosody starts in ~0.1 s, ejabberd in
~1.2 s), so no message of one test can reach another.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rulebot.client import Received, RequestError, RulebotClient
from scripts import pgserver, xmppserver

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "rules"
USERS = {u: f"{u}-pw" for u in ("alice", "bob", "carol", "admin", "mallory", "friend")}
TIMEOUT = 15.0
MODES = [("prosody", "client"), ("prosody", "component"), ("ejabberd", "client"),
         ("ejabberd", "component")]


@pytest.fixture
def server_kind() -> str:
    return "prosody"


@pytest.fixture
def server(server_kind: str, tmp_path: Path) -> Iterator[xmppserver.ServerInfo]:
    info = xmppserver.start_server(server_kind, tmp_path / "server", USERS)
    try:
        yield info
    finally:
        xmppserver.stop_server(info.workdir)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[pgserver.PgInfo]:
    """A private PostgreSQL of the test's own (the store of several workers)."""
    info = pgserver.start_postgres(tmp_path / "pg")
    try:
        yield info
    finally:
        pgserver.stop_postgres(info)


def bot_jid(info: xmppserver.ServerInfo, mode: str) -> str:
    return info.component_jid if mode == "component" else "friend@localhost"


def secret_file(info: xmppserver.ServerInfo, mode: str, directory: Path) -> Path:
    """The bot's password (client) or component secret, in a file as operators keep it."""
    f = directory / f"secret-{mode}"
    f.write_text((info.component_secret if mode == "component" else USERS["friend"]) + "\n")
    f.chmod(0o600)
    return f


def write_config(info: xmppserver.ServerInfo, mode: str, path: Path, rules: Path = RULES,
                 **extra: Any) -> Path:
    config: dict[str, Any] = {
        "mode": mode,
        "jid": bot_jid(info, mode),
        "server": {"host": info.host,
                   "port": info.component_port if mode == "component" else info.c2s_port},
        "tls": {"ca_file": info.ca_file},
        "rules": str(rules),
        "password_file": str(secret_file(info, mode, path.parent)),
        "allowed_domains": ["localhost"],
        "reconnect": {"initial_delay": 0.2, "max_delay": 2},
        "log": {"format": "json", "level": "info"},
    }
    config.update(extra)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@dataclass
class BotProcess:
    """A running `rulebot run` and the JSON log lines it has written so far."""

    proc: asyncio.subprocess.Process
    logs: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                self.logs.append(json.loads(text))
            except ValueError:
                self.logs.append({"msg": text})
            self.changed.set()
        self.changed.set()

    async def wait_log(self, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = TIMEOUT, start: int = 0) -> dict[str, Any]:
        """The first log entry (from index `start`) matching, awaiting it if needed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = start
        while True:
            for entry in self.logs[seen:]:
                if predicate(entry):
                    return entry
            seen = len(self.logs)
            if self.proc.returncode is not None and self.reader and self.reader.done():
                raise AssertionError(f"bot exited ({self.proc.returncode}) before the log "
                                     f"line came; last lines: {self.raw[-10:]}")
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no such log line in {timeout} s; last lines: "
                                     f"{self.raw[-10:]}")
            self.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=left)

    async def connected(self, start: int = 0) -> dict[str, Any]:
        return await self.wait_log(lambda e: e.get("event") == "connected", start=start)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout=timeout)
        if self.reader:
            await self.reader
        return code


def connected_workers(bot: BotProcess, start: int = 0) -> set[int]:
    """The workers of a `rulebot run` supervisor that logged "connected" (from
    log line `start` on)."""
    return {e["worker"] for e in bot.logs[start:]
            if e.get("event") == "connected" and "worker" in e}


async def start_bot(config: Path, env: dict[str, str] | None = None,
                    password: str = USERS["friend"]) -> BotProcess:
    environ = dict(os.environ)
    environ["RULEBOT_PASSWORD"] = password
    environ.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rulebot", "run", "-c", str(config),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=environ)
    bot = BotProcess(proc)
    bot.reader = asyncio.ensure_future(bot._read())
    return bot


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def connect_user(stack: AsyncExitStack, info: xmppserver.ServerInfo, user: str,
                       bot: str, **kw: Any) -> RulebotClient:
    client = RulebotClient(f"{user}@localhost", USERS[user], bot, host=info.host,
                           port=info.c2s_port, ca_file=info.ca_file, **kw)
    await client.connect()
    stack.push_async_callback(client.close)
    return client


def kill_at_exit(stack: AsyncExitStack, bot: BotProcess) -> None:
    """Kill the bot (if still running) and finish reading its output when the stack closes."""

    async def cleanup() -> None:
        if bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()
        if bot.reader:
            await bot.reader

    stack.push_async_callback(cleanup)


async def run_bot(stack: AsyncExitStack, config: Path, **kw: Any) -> BotProcess:
    bot = await start_bot(config, **kw)
    kill_at_exit(stack, bot)
    await bot.connected()
    return bot


async def receive(client: RulebotClient, timeout: float = TIMEOUT) -> Received:
    return await client.receive(timeout=timeout)


async def nothing_more(client: RulebotClient, bot: BotProcess, sender: RulebotClient,
                       bot_jid: str) -> None:
    """Assert `client` got nothing else: a ping from `sender` is answered only after
    everything sent before it was processed, so an empty queue then is conclusive
    for what the bot did with earlier events."""
    pong = await sender.request({"type": "ping"}, timeout=TIMEOUT)
    assert pong.payload["type"] == "pong"
    assert client._incoming.empty(), client._incoming.get_nowait()


async def bot_answers(client: RulebotClient, attempts: int = 5) -> None:
    """Send an unknown event type until the bot's error reply comes back. On
    ejabberd under CPU load the first event sent right after a bot restart can
    land in offline storage and come back only with the offline sweep, ~2 s
    later (README, Status), longer than one request waits."""
    for _ in range(attempts):
        try:
            await client.request({"type": "hello"}, timeout=3)
        except RequestError as exc:
            if exc.code != "unknown-event-type":
                raise
            return
        except TimeoutError:
            continue
    raise AssertionError(f"the bot did not answer {attempts} probes")
