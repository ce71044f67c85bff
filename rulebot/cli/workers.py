"""`rulebot run` with `workers: N` (or `--workers N`): a supervisor that runs N
worker processes (`rulebot run --worker I`, each one connection of the
component), restarts one that dies, forwards SIGHUP (reload), restarts them
one at a time on SIGUSR2 (each waits for the one before to be connected
again: a rolling restart after an upgrade) and drains them all on
SIGTERM/SIGINT.

A worker the supervisor started ends (SIGTERM: a clean drain) when the
supervisor dies, however it dies (follow_supervisor): a supervisor killed
by the OOM killer or kill -9 leaves no workers behind deciding events.

Each worker's stderr comes through a pipe of its own and is copied to the
supervisor's stderr in whole lines: workers write their log in blocks of up
to 64 KiB, and several writers of one pipe could interleave inside a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rulebot.logs import LOGGER, fields

log = logging.getLogger(LOGGER)

#: The supervisor's pid, in the environment of the workers it starts.
SUPERVISOR_ENV = "RULEBOT_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

#: Seconds a worker is waited for after SIGTERM before SIGKILL.
DRAIN_TIMEOUT = 30.0
#: Restart delays: doubling from the first to the last; a worker that ran for
#: STABLE seconds starts again from the first.
FIRST_RESTART, MAX_RESTART, STABLE = 1.0, 30.0, 60.0


#: How a worker's "connected" line looks in the JSON and the text log formats.
CONNECTED = (b'"event": "connected"', b" connected jid=")
#: Seconds a rolling restart waits for a restarted worker to be connected.
READY_TIMEOUT = 60.0


async def _copy_lines(stream: asyncio.StreamReader, out: int,
                      on_connected: Callable[[], None]) -> None:
    """Copy `stream` to the file descriptor `out`, complete lines at a time;
    call `on_connected` when a "connected" line passes."""
    tail = b""
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            break
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if cut:
            lines = data[:cut]
            os.write(out, lines)
            if any(mark in lines for mark in CONNECTED):
                on_connected()
    if tail:
        os.write(out, tail + b"\n")


class Supervisor:
    """Runs `command(i)` for i in 0..n-1 until stopped."""

    def __init__(self, n: int, command: Sequence[str]) -> None:
        self.n = n
        self.command = list(command)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stopping = asyncio.Event()
        self.connected = {i: asyncio.Event() for i in range(n)}
        self._now: set[int] = set()  # to restart at once (rolling restart), no delay
        self._rolling: asyncio.Future[None] | None = None

    def argv(self, index: int) -> list[str]:
        return [*self.command, "--worker", str(index)]

    async def _one(self, index: int) -> None:
        delay = FIRST_RESTART
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.argv(index), stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, SUPERVISOR_ENV: str(os.getpid())})
            self.procs[index] = proc
            log.info("worker started", extra=fields(event="worker_started", worker=index,
                                                    pid=proc.pid))
            assert proc.stderr is not None
            await _copy_lines(proc.stderr, sys.stderr.fileno(), self.connected[index].set)
            code = await proc.wait()
            self.connected[index].clear()
            if self._stopping.is_set():
                log.info("worker stopped", extra=fields(event="worker_stopped", worker=index,
                                                        code=code))
                return
            if code in (1, 3):  # invalid config or rules, bad credentials: a restart cannot help
                log.error("worker failed for good; not restarted", extra=fields(
                    event="worker_failed", worker=index, code=code))
                return
            if index in self._now:  # stopped by the rolling restart: start it again now
                self._now.discard(index)
                continue
            if time.monotonic() - started >= STABLE:
                delay = FIRST_RESTART
            log.warning("worker died; restarting", extra=fields(
                event="worker_died", worker=index, code=code, restart_in=delay))
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, MAX_RESTART)

    def rolling_restart(self) -> None:
        """Restart the workers one at a time (SIGUSR2); a request while a rolling
        restart runs is ignored."""
        if self._rolling is None or self._rolling.done():
            self._rolling = asyncio.ensure_future(self._roll())

    async def _roll(self) -> None:
        log.info("rolling restart", extra=fields(event="rolling_restart", workers=self.n))
        for index in range(self.n):
            proc = self.procs.get(index)
            if self._stopping.is_set():
                return
            if proc is None or proc.returncode is not None:
                continue
            self._now.add(index)
            self.connected[index].clear()
            proc.send_signal(signal.SIGTERM)  # it drains and exits; _one starts it again
            try:
                await asyncio.wait_for(self.connected[index].wait(), READY_TIMEOUT)
            except TimeoutError:
                log.error("a restarted worker did not connect; rolling restart stopped",
                          extra=fields(event="rolling_restart_failed", worker=index,
                                       timeout=READY_TIMEOUT))
                return
        log.info("rolling restart done", extra=fields(event="rolling_restart_done"))

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self) -> None:
        """SIGTERM to every worker (each drains: rulebot run's clean stop), then
        SIGKILL to those still running after DRAIN_TIMEOUT."""
        self._stopping.set()
        self.signal_all(signal.SIGTERM)
        waits = [p.wait() for p in self.procs.values() if p.returncode is None]
        if waits:
            try:
                await asyncio.wait_for(asyncio.gather(*waits), DRAIN_TIMEOUT)
            except TimeoutError:
                log.error("workers did not stop in time; killed", extra=fields(
                    event="worker_killed", timeout=DRAIN_TIMEOUT))
                self.signal_all(signal.SIGKILL)

    async def run(self, stop: asyncio.Event) -> int:
        log.info("supervising workers", extra=fields(event="supervisor_started",
                                                     workers=self.n))
        tasks = [asyncio.ensure_future(self._one(i)) for i in range(self.n)]
        all_done: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*tasks))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([all_done, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not stopped.done():  # every worker gave up (a configuration error)
            stopped.cancel()
            return 1
        await self.stop()
        await all_done
        log.info("workers stopped", extra=fields(event="supervisor_stopped",
                                                 restarts=self.restarts))
        return 0


def follow_supervisor() -> bool:
    """In a worker the supervisor started: have the kernel send SIGTERM when
    the supervisor dies (Linux prctl PR_SET_PDEATHSIG), and SIGTERM now if it
    already died before this ran. Whether the worker follows one (a worker
    started on its own, `rulebot@I` under systemd, does not)."""
    wanted = os.environ.get(SUPERVISOR_ENV)
    if not wanted:
        return False
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no death signal
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != wanted:  # the supervisor is gone already
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def supervise(config_path: str, n: int) -> int:
    """Run n workers of the configuration at `config_path` until SIGTERM/SIGINT."""
    supervisor = Supervisor(n, [sys.executable, "-m", "rulebot", "run", "-c", config_path,
                                "--workers", str(n)])

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
        loop.add_signal_handler(signal.SIGUSR2, supervisor.rolling_restart)
        return await supervisor.run(stop)

    return asyncio.run(main())
