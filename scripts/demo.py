"""`make demo`: rulebot live on a private Prosody, driven by real clients.

Starts a private Prosody on 127.0.0.1 (scripts/xmppserver.py), runs the real
`rulebot run` with the shipped rules/ as friend@localhost, connects alice,
bob, carol, admin and mallory as real XMPP clients (rulebot.client), plays a
short scripted conversation and prints, for each event, the rule that fired
and exactly what every user received. Then stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rulebot.client import Received, RulebotClient
from scripts import xmppserver

ROOT = Path(__file__).resolve().parent.parent

USERS = {u: f"{u}-demo-pw" for u in ("alice", "bob", "carol", "admin", "mallory", "friend")}
BOT = "friend@localhost"
TIMEOUT = 15.0
BARRIER = "barrier-"  # event ids of the demo's own ping barriers
BOLD, DIM, GREEN, RED, CYAN, RESET = (("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[36m",
                                       "\033[0m") if sys.stdout.isatty() else ("",) * 6)


class BotLog:
    """Follows the bot's JSON log lines on its stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"msg": raw.decode(errors="replace").strip()})
            self.changed.set()

    async def wait(self, pred: Any, start: int = 0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            for line in self.lines[start:]:
                if pred(line):
                    return line
            if self.proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"bot log line not found; last: {self.lines[-3:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=deadline - loop.time())


def show(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False)


async def step(title: str, log: BotLog, clients: dict[str, RulebotClient], sender: str,
               send: Any, expect: dict[str, int], stanza_kind: str = "message") -> None:
    print(f"\n{BOLD}{title}{RESET}")
    mark = len(log.lines)
    send()
    # The bot writes its log through a buffer (flushed within 0.25 s), so the
    # line of an earlier step's barrier ping may arrive after `mark`: skip those.
    entry = await log.wait(lambda e: e.get("event") == "stanza" and e.get("kind") == stanza_kind
                           and str(e.get("from", "")).startswith(sender + "@")
                           and not str(e.get("event_id", "")).startswith(BARRIER), mark)
    matched = ", ".join(entry.get("matched", [])) or "-"
    verdict = entry.get("reason") or "; ".join(
        f"{a['type']}" + (f" -> {', '.join(a['to'])}" if a["to"] else "")
        for a in entry.get("actions", []))
    print(f"  {CYAN}friend{RESET}: rule {BOLD}{matched}{RESET} ({entry['status']}): {verdict}")
    for user, count in expect.items():
        for _ in range(count):
            got: Received = await clients[user].receive(timeout=TIMEOUT)
            color = RED if got.error else GREEN
            print(f"  {color}{user} received{RESET}: {show(got.payload)}"
                  f"{DIM}  [rule={got.rule}, sender={got.sender}"
                  f"{', in <json/>' if got.encoding == 'json' else ''}]{RESET}")
    # Everyone else received nothing: a ping round trip through the bot is the
    # barrier (the bot handles events in order, one at a time).
    await clients["alice"].request({"type": "ping", "id": f"{BARRIER}{mark}"}, timeout=TIMEOUT)
    for user, client in clients.items():
        if not client._incoming.empty():
            raise RuntimeError(f"{user} received something unexpected: "
                               f"{client._incoming.get_nowait()}")
    if not expect:
        print(f"  {DIM}(nobody received anything){RESET}")


async def demo(workdir: Path) -> None:
    print(f"{BOLD}rulebot demo{RESET}: business logic on an XMPP server, written as rules")
    print("starting a private Prosody on 127.0.0.1 ...", end=" ", flush=True)
    info = await asyncio.to_thread(xmppserver.start_server, "prosody", workdir / "prosody",
                                   USERS)
    print(f"ok (port {info.c2s_port}, TLS with its own CA)")
    bot_proc = None
    clients: dict[str, RulebotClient] = {}
    try:
        (workdir / "friend.secret").write_text(USERS["friend"] + "\n")
        config = {
            "jid": BOT, "rules": str(ROOT / "rules"),
            "server": {"host": info.host, "port": info.c2s_port},
            "tls": {"ca_file": info.ca_file}, "password_file": str(workdir / "friend.secret"),
            "log": {"format": "json"},
        }
        (workdir / "rulebot.yaml").write_text(json.dumps(config, indent=2))
        print("starting `rulebot run -c rulebot.yaml` with the shipped rules/ ...", end=" ",
              flush=True)
        bot_proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rulebot", "run", "-c", str(workdir / "rulebot.yaml"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
        log = BotLog(bot_proc)
        start = await log.wait(lambda e: e.get("event") == "starting")
        await log.wait(lambda e: e.get("event") == "connected")
        print(f"connected as {BOT} ({start['rule_count']} rules, version {start['version']})")
        for user in ("alice", "bob", "carol", "admin", "mallory"):
            client = RulebotClient(f"{user}@localhost", USERS[user], BOT, host=info.host,
                                   port=info.c2s_port, ca_file=info.ca_file)
            await client.connect()
            clients[user] = client
        print("clients online: " + ", ".join(clients))
        a, c = clients["alice"], clients

        await step("1. alice -> bob: chat between members is forwarded", log, c, "alice",
                   lambda: a.send_event({"type": "chat", "to": "bob@localhost",
                                         "text": "Hi Bob!"}), {"bob": 1})
        await step("2. alice -> zed (not a member): refused with an error", log, c, "alice",
                   lambda: a.send_event({"type": "chat", "to": "zed@localhost",
                                         "text": "hello?"}), {"alice": 1})
        await step("3. admin announces: broadcast to every member but the admin", log, c,
                   "admin", lambda: c["admin"].send_event(
                       {"type": "announce", "text": "Maintenance at 17:00"}),
                   {"alice": 1, "bob": 1, "carol": 1})
        await step("4. carol announces: only admins may", log, c, "carol",
                   lambda: c["carol"].send_event({"type": "announce", "text": "me too"}),
                   {"carol": 1})
        await step("5. bob pings: a reply to his own session", log, c, "bob",
                   lambda: c["bob"].send_event({"type": "ping", "id": "bob-1"}), {"bob": 1})
        await step("6. mallory (banned) -> bob: dropped", log, c, "mallory",
                   lambda: c["mallory"].send_event({"type": "chat", "to": "bob@localhost",
                                                    "text": "buy now"}), {})
        await step("7. alice sends something that is not JSON: structured error", log, c,
                   "alice", lambda: a.send_raw("hello friend"), {"alice": 1})
        await step("8. alice's chat misses its text: the event schema says where", log, c,
                   "alice", lambda: a.send_event({"type": "chat", "to": "bob@localhost"}),
                   {"alice": 1})
        await step("9. alice uses an XEP-0335 <json/> container: answered in kind", log, c,
                   "alice", lambda: a.send_event({"type": "chat", "to": "carol@localhost",
                                                  "text": "in a container"}, encoding="json"),
                   {"carol": 1})
        await step("10. carol tells the bot she is away: members see her presence", log, c,
                   "carol", lambda: c["carol"].xmpp.send_presence(pto=BOT, pshow="away",
                                                                  pstatus="lunch"),
                   {"alice": 1, "bob": 1, "admin": 1}, stanza_kind="presence")

        print(f"\n{BOLD}stopping{RESET}: SIGTERM to the bot ...", end=" ", flush=True)
        for client in clients.values():
            await client.close()
        clients.clear()
        bot_proc.terminate()
        code = await asyncio.wait_for(bot_proc.wait(), timeout=TIMEOUT)
        await log.task
        handled = next((e.get("handled") for e in log.lines if e.get("event") == "exit"), "?")
        print(f"exit code {code}, {handled} stanzas handled")
        if code != 0:
            raise RuntimeError(f"bot exited with {code}")
    finally:
        for client in clients.values():
            await client.close()
        if bot_proc is not None and bot_proc.returncode is None:
            bot_proc.kill()
            await bot_proc.wait()
        await asyncio.to_thread(xmppserver.stop_server, info.workdir)
        print("private Prosody stopped")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rulebot-demo-"))
    try:
        asyncio.run(demo(workdir))
    except RuntimeError as exc:
        print(f"\n{RED}demo failed{RESET}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{GREEN}demo finished{RESET}: every user received exactly what the rules said.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
