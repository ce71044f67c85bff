"""The browser demo in a real browser: headless Chromium (Debian's chromium
and chromium-driver, over WebDriver) opens the page scripts/webdemo.py
serves; alice, bob and carol log in over XMPP-over-WebSocket to a private
Prosody, and everything they see comes from the real bot with rules/friends:
a chat to a stranger is refused, a friend request is accepted, friends chat
and see each other's presence, and carol is refused by the rules too."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from webdriver import Browser

from scripts.webdemo import ROOT, WebDemo

pytestmark = pytest.mark.integration

SCREENSHOT = ROOT / "docs" / "webdemo.png"


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[WebDemo]:
    stack = WebDemo(tmp_path)
    try:
        yield await stack.start()
    finally:
        await stack.stop()


async def test_three_users_befriend_chat_see_presence_and_are_refused_in_chromium(
        demo: WebDemo, tmp_path: Path) -> None:
    await asyncio.to_thread(drive, demo.url, tmp_path / "webdemo.png")
    # What the browser showed is what the bot decided: its log has the rules.
    matched = {m for e in demo.logs for m in e.get("matched", ())}
    assert {"chat-strangers", "request", "accept", "chat-friends",
            "presence-to-friends"} <= matched
    shot = tmp_path / "webdemo.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RULEBOT_UPDATE_SCREENSHOT"):  # README's picture, on demand
        SCREENSHOT.write_bytes(shot.read_bytes())


def drive(url: str, shot: Path) -> None:
    with Browser() as b:
        b.get(url)
        b.wait_text("body", "rulebot friends demo")
        for user in ("alice", "bob", "carol"):
            b.click(f"#{user} .login")
        for user in ("alice", "bob", "carol"):
            b.wait_text(f"#{user} .status", "online")

        # strangers cannot chat: the rules refuse it
        b.select("#alice .peer", "bob")
        b.type("#alice .text", "hello bob?")
        b.click("#alice .send")
        b.wait_text("#alice .log .error", "refused (not-friends)")

        # a friend request, accepted
        b.click("#alice .request")
        b.wait_text("#alice .log", "friend request sent to bob")
        b.wait_text("#bob .log", "alice asks to be friends")
        b.click("#bob .requests .accept")
        b.wait_text("#bob .log", "you and alice are friends")
        b.wait_text("#alice .log", "bob accepted: you are friends")

        # friends chat
        b.type("#alice .text", "hi bob, friends now")
        b.click("#alice .send")
        b.wait_text("#bob .log .chat", "alice: hi bob, friends now")
        b.select("#bob .peer", "alice")
        b.type("#bob .text", "hello alice")
        b.click("#bob .send")
        b.wait_text("#alice .log .chat", "bob: hello alice")

        # presence goes to friends: bob leaves and comes back
        b.click("#bob .logout")
        b.wait_text("#alice .friends", "bob offline")
        b.click("#bob .login")
        b.wait_text("#bob .status", "online")
        b.wait_text("#alice .friends", "bob online")

        # carol is nobody's friend: refused too
        b.select("#carol .peer", "alice")
        b.type("#carol .text", "let me in")
        b.click("#carol .send")
        b.wait_text("#carol .log .error", "refused (not-friends)")
        assert "let me in" not in b.text("#alice .log")
        b.execute("window.scrollTo(0, 0)")
        b.screenshot(shot)
