"""`make demo-web`: the friends demo in a browser.

Starts a private Prosody on 127.0.0.1 with its WebSocket endpoint
(scripts/xmppserver.py), `rulebot run` with rules/friends (a SQLite store
in a temporary directory) as friend@localhost, and a static web server on
127.0.0.1 serving clients/web (the page), clients/js/src (the JavaScript
client) and @xmpp/client's browser build. Open the printed URL: alice, bob
and carol log in, send friend requests, chat, see their friends' presence
and get refused by the rules. Ctrl-C stops everything.

tests/integration/test_browser.py starts the same stack (WebDemo) and drives
the page in headless Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from scripts import xmppserver

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
PACKAGE = ROOT / "clients" / "js"
XMPP_BUNDLE = PACKAGE / "node_modules" / "@xmpp" / "client" / "dist" / "xmpp.min.js"
USERS = {u: f"{u}-web-pw" for u in ("alice", "bob", "carol", "friend")}
PAGE_USERS = ("alice", "bob", "carol")
BOT = "friend@localhost"
TIMEOUT = 30.0


def _files() -> dict[str, Path]:
    """URL path -> file: nothing else is served (no directory listing, no ..)."""
    files = {"/": WEB / "index.html", "/lib/xmpp.min.js": XMPP_BUNDLE}
    for f in WEB.iterdir():
        if f.suffix in (".html", ".js", ".css"):
            files[f"/{f.name}"] = f
    for f in (PACKAGE / "src").glob("*.js"):
        files[f"/lib/rulebot/{f.name}"] = f
    return files


def serve(config: dict[str, Any]) -> ThreadingHTTPServer:
    """The page's web server on 127.0.0.1 (a free port), in a thread."""
    files = _files()
    config_body = json.dumps(config).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/config.json":
                body, ctype = config_body, "application/json"
            elif path in files and files[path].is_file():
                body = files[path].read_bytes()
                ctype = mimetypes.guess_type(files[path].name)[0] or "application/octet-stream"
                if files[path].suffix == ".js":
                    ctype = "text/javascript"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the demo prints what matters

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, name="webdemo-http", daemon=True).start()
    return httpd


@dataclass
class WebDemo:
    """The running stack: a private Prosody, the bot, the page's web server."""

    workdir: Path
    info: xmppserver.ServerInfo | None = None
    bot: asyncio.subprocess.Process | None = None
    httpd: ThreadingHTTPServer | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    async def start(self) -> WebDemo:
        if not XMPP_BUNDLE.exists():
            raise RuntimeError(f"{XMPP_BUNDLE} is missing: run `make js-deps`")
        self.info = await asyncio.to_thread(xmppserver.start_server, "prosody",
                                            self.workdir / "prosody", USERS)
        if not self.info.websocket_url:
            raise RuntimeError("the private Prosody has no WebSocket endpoint")
        secret = self.workdir / "friend.secret"
        secret.write_text(USERS["friend"] + "\n")
        secret.chmod(0o600)
        config = {
            "jid": BOT, "rules": str(ROOT / "rules" / "friends"),
            "server": {"host": self.info.host, "port": self.info.c2s_port},
            "tls": {"ca_file": self.info.ca_file}, "password_file": str(secret),
            "store": str(self.workdir / "rulebot.sqlite3"), "log": {"format": "json"},
        }
        (self.workdir / "rulebot.yaml").write_text(json.dumps(config, indent=2))
        self.bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rulebot", "run", "-c", str(self.workdir / "rulebot.yaml"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
        self._reader = asyncio.ensure_future(self._read())
        await self.wait_log(lambda e: e.get("event") == "connected")
        self.httpd = serve({"websocket_url": self.info.websocket_url, "domain": "localhost",
                            "bot": BOT, "users": {u: USERS[u] for u in PAGE_USERS}})
        return self

    async def _read(self) -> None:
        assert self.bot is not None
        assert self.bot.stderr is not None
        async for raw in self.bot.stderr:
            with contextlib.suppress(ValueError):
                self.logs.append(json.loads(raw))
                self.changed.set()
        self.changed.set()  # the bot exited

    async def wait_log(self, pred: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for entry in self.logs:
                if pred(entry):
                    return entry
            if self._reader is not None and self._reader.done():
                raise RuntimeError("rulebot exited")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())
        raise RuntimeError("timed out waiting for the bot's log")

    async def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.bot is not None and self.bot.returncode is None:
            self.bot.terminate()
            try:
                await asyncio.wait_for(self.bot.wait(), 15)
            except TimeoutError:
                self.bot.kill()
                await self.bot.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        if self.info is not None:
            await asyncio.to_thread(xmppserver.stop_server, self.info.workdir)


async def run() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rulebot-webdemo-"))
    demo = WebDemo(workdir)
    try:
        await demo.start()
        print("rulebot friends demo: a private Prosody with WebSocket, `rulebot run` with "
              "rules/friends, and the page")
        print(f"\n  open {demo.url} in a browser on this machine (Ctrl-C stops)\n")
        assert demo.bot is not None
        await demo.bot.wait()
    finally:
        await demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
