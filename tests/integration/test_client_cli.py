"""`rulebot send` and `rulebot listen` as subprocesses through a live bot."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import TIMEOUT, USERS, run_bot, write_config

from scripts import xmppserver

pytestmark = pytest.mark.integration


def cli_args(server: xmppserver.ServerInfo, user: str) -> list[str]:
    return ["--jid", f"{user}@localhost", "--bot", "friend@localhost", "--host", server.host,
            "--port", str(server.c2s_port), "--ca-file", server.ca_file]


async def rulebot(*args: str, user: str, stdin: bytes | None = None
                  ) -> asyncio.subprocess.Process:
    env = dict(os.environ, RULEBOT_PASSWORD=USERS[user])
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rulebot", *args, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_send_and_listen_round_trip(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    listen = await rulebot("listen", *cli_args(server, "bob"), "--count", "2",
                           "--timeout", str(TIMEOUT), user="bob")
    assert listen.stderr is not None
    ready = await asyncio.wait_for(listen.stderr.readline(), TIMEOUT)
    assert ready.decode().strip() == "listening as bob@localhost"

    # one event as an argument, with --wait: the reply is printed
    send = await rulebot("send", *cli_args(server, "alice"), "--wait", str(TIMEOUT),
                         '{"type": "ping", "id": "cli-1"}', user="alice")
    out, _ = await asyncio.wait_for(send.communicate(), TIMEOUT)
    assert send.returncode == 0
    assert json.loads(out)["reply"]["payload"] == {"type": "pong", "id": "cli-1"}

    # JSON lines on stdin, in the XEP-0335 container
    lines = b"\n".join(json.dumps({"type": "chat", "to": "bob@localhost", "text": t}).encode()
                       for t in ("one", "two"))
    send = await rulebot("send", *cli_args(server, "alice"), "--encoding", "json",
                         user="alice", stdin=lines)
    out, err = await asyncio.wait_for(send.communicate(lines), TIMEOUT)
    assert send.returncode == 0, err
    assert len(out.splitlines()) == 2

    got, _ = await asyncio.wait_for(listen.communicate(), TIMEOUT)
    assert listen.returncode == 0
    events = [json.loads(line) for line in got.splitlines()]
    assert [e["payload"]["text"] for e in events] == ["one", "two"]
    assert {e["encoding"] for e in events} == {"json"}
    assert {e["sender"] for e in events} == {"alice@localhost"}


async def test_send_reports_error_replies_with_exit_1(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    send = await rulebot("send", *cli_args(server, "carol"), "--wait", str(TIMEOUT),
                         '{"type": "announce", "text": "x"}', user="carol")
    out, _ = await asyncio.wait_for(send.communicate(), TIMEOUT)
    assert send.returncode == 1
    assert json.loads(out)["error"]["payload"]["error"]["code"] == "forbidden"


async def test_listen_times_out_with_exit_1_when_count_not_reached(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    listen = await rulebot("listen", *cli_args(server, "bob"), "--count", "1",
                           "--timeout", "0.5", user="bob")
    await asyncio.wait_for(listen.communicate(), TIMEOUT)
    assert listen.returncode == 1
