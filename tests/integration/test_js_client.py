"""The JavaScript client package (clients/js) against the real bot: a private
Prosody with its WebSocket endpoint, `rulebot run` with the shipped rules in
client mode, and the package's own tests run by node's test runner
(clients/js/test/), the way a browser's client talks to the service."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import ROOT, USERS, run_bot, write_config

from scripts import xmppserver

pytestmark = pytest.mark.integration

PACKAGE = ROOT / "clients" / "js"
NODE_TIMEOUT = 240.0


async def test_the_javascript_client_passes_its_tests_against_the_real_bot(
        server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack) -> None:
    node = shutil.which("node")
    assert node, "node is not installed (make test installs it)"
    assert (PACKAGE / "node_modules" / "@xmpp" / "client").is_dir(), \
        "clients/js/node_modules is missing: run `make js-deps`"
    assert server.websocket_url.startswith("ws://127.0.0.1:")
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    env_file = tmp_path / "js-test.json"
    env_file.write_text(json.dumps({"websocket_url": server.websocket_url, "domain": "localhost",
                                    "bot": "friend@localhost", "passwords": USERS}))
    proc = await asyncio.create_subprocess_exec(
        node, "--experimental-websocket", "--test", "--test-reporter=tap", "test/",
        cwd=PACKAGE, env={"PATH": "/usr/bin:/bin", "RULEBOT_JS_TEST": str(env_file),
                          "NODE_NO_WARNINGS": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    counts = {k: int(v) for k, v in re.findall(r"^# (pass|fail|tests) (\d+)$", text, re.M)}
    assert proc.returncode == 0, text
    assert counts.get("fail") == 0, text
    assert counts.get("pass", 0) >= 10, text  # every test of the package ran and passed


def test_the_javascript_clients_type_declarations_compile_against_their_use() -> None:
    """src/index.d.ts, checked by TypeScript (strict) against test/types/usage.ts."""
    tsc = PACKAGE / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "clients/js/node_modules is missing: run `make js-deps`"
    proc = subprocess.run([str(tsc), "-p", "test/types/tsconfig.json"], cwd=PACKAGE,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
