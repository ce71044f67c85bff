"""A small W3C WebDriver client (stdlib only) for Debian's chromium with
chromium-driver: start chromedriver on a free loopback port, open a headless
session, and the handful of commands the browser test needs. Waits are for
DOM changes (a MutationObserver in the page), bounded by the script timeout."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key

_WAIT_TEXT = """
const [selector, text, done] = arguments;
const found = () => [...document.querySelectorAll(selector)]
  .some((e) => e.textContent.includes(text));
if (found()) { done(true); return; }
const observer = new MutationObserver(() => {
  if (found()) { observer.disconnect(); done(true); }
});
observer.observe(document.documentElement,
  {subtree: true, childList: true, characterData: true, attributes: true});
"""


class WebDriverError(RuntimeError):
    pass


class Browser:
    """Headless Chromium driven over WebDriver. Use as a context manager."""

    def __init__(self, chromium: str = "/usr/bin/chromium",
                 chromedriver: str = "/usr/bin/chromedriver", timeout: float = 20.0) -> None:
        for binary in (chromium, chromedriver):
            if not shutil.which(binary):
                raise WebDriverError(f"{binary} is missing (Debian: chromium, chromium-driver)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="rulebot-chromium-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen([chromedriver, f"--port={port}", "--allowed-ips=127.0.0.1"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:  # chromedriver answers /status once it listens
            try:
                self._call("GET", "/status")
                break
            except (OSError, WebDriverError):
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    self.driver.kill()
                    raise WebDriverError("chromedriver did not start") from None
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,700", f"--user-data-dir={self.profile}",
                "--no-first-run", "--no-default-browser-check"]},
        }}}
        self.session = self._call("POST", "/session", caps)["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts",
                   {"script": int(timeout * 1000), "pageLoad": int(timeout * 1000)})

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout + 10) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.read().decode(errors='replace')}") \
                from None

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        assert url.startswith("http://127.0.0.1:")  # loopback only
        self._call("POST", self._s("/url"), {"url": url})

    def find(self, css: str) -> str:
        return str(self._call("POST", self._s("/element"),
                              {"using": "css selector", "value": css})[ELEMENT])

    def click(self, css: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/click"), {})

    def type(self, css: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def select(self, css: str, value: str) -> None:
        self.execute("const s = document.querySelector(arguments[0]); s.value = arguments[1];"
                     "s.dispatchEvent(new Event('change'));", css, value)

    def text(self, css: str) -> str:
        return str(self._call("GET", self._s(f"/element/{self.find(css)}/text")))

    def execute(self, script: str, *args: Any) -> Any:
        return self._call("POST", self._s("/execute/sync"), {"script": script, "args": list(args)})

    def wait_text(self, css: str, text: str) -> None:
        """Until an element matching `css` contains `text` (a DOM change awaited)."""
        try:
            self._call("POST", self._s("/execute/async"),
                       {"script": _WAIT_TEXT, "args": [css, text]})
        except WebDriverError as exc:
            shown = self.execute("return [...document.querySelectorAll(arguments[0])]"
                                 ".map((e) => e.textContent)", css)
            raise WebDriverError(f"no {css} with {text!r} (found {shown}): {exc}") from None

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))

    def close(self) -> None:
        with contextlib.suppress(OSError, WebDriverError):
            self._call("DELETE", self._s(""))
        self.driver.terminate()
        try:
            self.driver.wait(10)
        except subprocess.TimeoutExpired:
            self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
