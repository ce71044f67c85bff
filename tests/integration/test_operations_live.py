"""Operating a live bot: /status, /metrics, the audit log, traces, rate limits."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, connect_user, receive, run_bot, write_config

from rulebot.cli.main import main
from rulebot.client import RequestError
from rulebot.rules.loader import load_rules
from scripts import xmppserver

pytestmark = pytest.mark.integration


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_status_metrics_audit_and_trace(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_config(server, "client", tmp_path / "rulebot.yaml",
                          status={"listen": "127.0.0.1:0"}, audit={"path": str(audit)},
                          trace_senders=["alice@localhost"])
    bot = await run_bot(stack, config)
    port = (await bot.wait_log(lambda e: e.get("event") == "status_listen"))["port"]
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    await alice.request({"type": "ping", "id": "p1"})
    alice.send_event({"type": "chat", "id": "c1", "to": "bob@localhost", "text": "hi"})
    await receive(bob)
    alice.send_raw("not json")
    await receive(alice)

    status = json.loads(await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/status"))
    assert status["connected"] is True
    shipped = len(load_rules(ROOT / "rules").rules)
    assert status["rules"]["count"] == shipped
    assert sum(status["rules"]["files"].values()) == shipped
    assert status["handled"] >= 3
    result = CliRunner().invoke(main, ["status", "--url", f"http://127.0.0.1:{port}/status"])
    assert json.loads(result.stdout)["rules"]["version"] == status["rules"]["version"]

    metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    assert 'rulebot_rule_matches_total{rule="ping"} 1.0' in metrics
    assert 'rulebot_rule_matches_total{rule="chat-to-member"} 1.0' in metrics
    assert 'rulebot_error_replies_total{code="invalid-json"} 1.0' in metrics
    assert 'rulebot_events_total{kind="message",status="decided"}' in metrics
    assert "rulebot_connected 1.0" in metrics
    assert "rulebot_last_reload_successful 1.0" in metrics
    assert "rulebot_decision_seconds_bucket" in metrics

    await bot.stop()
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    chat = next(x for x in lines if x.get("event_id") == "c1")
    assert chat["matched"] == ["chat-to-member"]
    assert chat["actions"] == [{"type": "forward", "to": ["bob@localhost"],
                                "rule": "chat-to-member"}]
    assert "sent" not in chat  # payloads only when configured
    assert any(x["outcome"] == "rejected" and x["reason"] == "invalid-json" for x in lines)
    trace = next(e for e in bot.logs if e.get("event") == "trace")
    assert {r["rule"]: r["status"] for r in trace["rules"]}["ping"] == "matched"


RATE_RULES = """version: 1
rate_limits:
  chat: {rate: 2, per: minute, burst: 2}
rules:
  - name: too-fast
    match: "event.type == 'ping' && over_limit('chat', sender)"
    actions:
      - error: {code: rate-limited, message: slow down}
  - name: ping
    match: "event.type == 'ping'"
    actions:
      - reply: {payload: "{type: 'pong', id: event.id}"}
"""


async def test_rate_limit_declared_in_rules(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RATE_RULES)
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml",
                                      rules=rules))
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    await alice.request({"type": "ping"})
    await alice.request({"type": "ping"})
    with pytest.raises(RequestError) as limited:
        await alice.request({"type": "ping"})
    assert limited.value.code == "rate-limited"
    await bob.request({"type": "ping"})  # the bucket is per sender


def test_shipped_systemd_unit_runs_the_daemon() -> None:
    unit = (ROOT / "docs" / "rulebot.service").read_text()
    assert "ExecStart=/usr/local/bin/rulebot run -c /etc/rulebot/rulebot.yaml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit


def http_status(url: str) -> tuple[int, str]:
    import urllib.error

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def test_readyz_follows_the_xmpp_session_and_healthz_the_process(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml",
                          status={"listen": "127.0.0.1:0"})
    bot = await run_bot(stack, config)
    port = (await bot.wait_log(lambda e: e.get("event") == "status_listen"))["port"]
    base = f"http://127.0.0.1:{port}"
    assert await asyncio.to_thread(http_status, f"{base}/readyz") == (200, "ready\n")
    mark = len(bot.logs)
    xmppserver.stop_server(server.workdir)  # the server goes away; the bot stays up
    await bot.wait_log(lambda e: e.get("event") == "disconnected", start=mark)
    code, text = await asyncio.to_thread(http_status, f"{base}/readyz")
    assert (code, text) == (503, "not connected to the XMPP server\n")
    assert await asyncio.to_thread(http_status, f"{base}/healthz") == (200, "ok\n")
    metrics = await asyncio.to_thread(fetch, f"{base}/metrics")
    assert "rulebot_connected 0.0" in metrics
    assert 'rulebot_build_info{' in metrics
    assert "process_resident_memory_bytes" in metrics
