"""`rulebot run` with `workers: N` (or `--workers N`): a supervisor that runs N
worker processes (`rulebot run --worker I`, each one connection of the
component), restarts one that dies, forwards SIGHUP (reload) and drains them
all on SIGTERM/SIGINT.

Each worker's stderr comes through a pipe of its own and is copied to the
supervisor's stderr in whole lines: workers write their log in blocks of up
to 64 KiB, and several writers of one pipe could interleave inside a line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from rulebot.logs import LOGGER, fields

log = logging.getLogger(LOGGER)

#: Seconds a worker is waited for after SIGTERM before SIGKILL.
DRAIN_TIMEOUT = 30.0
#: Restart delays: doubling from the first to the last; a worker that ran for
#: STABLE seconds starts again from the first.
FIRST_RESTART, MAX_RESTART, STABLE = 1.0, 30.0, 60.0


async def _copy_lines(stream: asyncio.StreamReader, out: int) -> None:
    """Copy `stream` to the file descriptor `out`, complete lines at a time."""
    tail = b""
    while True:
        chunk = await stream.read(1 << 16)
        if not chunk:
            break
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if cut:
            os.write(out, data[:cut])
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

    def argv(self, index: int) -> list[str]:
        return [*self.command, "--worker", str(index)]

    async def _one(self, index: int) -> None:
        delay = FIRST_RESTART
        while not self._stopping.is_set():
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.argv(index), stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            self.procs[index] = proc
            log.info("worker started", extra=fields(event="worker_started", worker=index,
                                                    pid=proc.pid))
            assert proc.stderr is not None
            await _copy_lines(proc.stderr, sys.stderr.fileno())
            code = await proc.wait()
            if self._stopping.is_set():
                log.info("worker stopped", extra=fields(event="worker_stopped", worker=index,
                                                        code=code))
                return
            if code in (1, 3):  # invalid config or rules, bad credentials: a restart cannot help
                log.error("worker failed for good; not restarted", extra=fields(
                    event="worker_failed", worker=index, code=code))
                return
            if time.monotonic() - started >= STABLE:
                delay = FIRST_RESTART
            log.warning("worker died; restarting", extra=fields(
                event="worker_died", worker=index, code=code, restart_in=delay))
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            delay = min(delay * 2, MAX_RESTART)

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
        return await supervisor.run(stop)

    return asyncio.run(main())
