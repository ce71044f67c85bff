"""rulebot.xmpp.patches, the one home of slixmpp's private names: they are where
the installed release has them, and the message fast path gives way when a
handler is registered after start-up (a plugin would otherwise never see the
bot's messages). Drives the real BotConnection over a recording transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath
from test_xmpp_sm import client_bot, messages

from rulebot.xmpp import patches


def test_the_installed_slixmpp_is_the_verified_one_with_every_private_name(
    tmp_path: Path,
) -> None:
    # Fails loudly when slixmpp moves what rulebot.xmpp.patches relies on: the
    # daemon would then log each problem and take slixmpp's public path.
    conn, _ = client_bot(tmp_path)
    assert patches.check(conn.xmpp) == []


def spy_on_matching(conn: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the stanzas slixmpp's general path asks the bot's message handler about."""
    handler = next(h for h in conn.xmpp._XMLStream__handlers
                   if h.name == "rulebot message")
    asked: list[str] = []
    match = handler.match

    def spy(stanza: Any) -> bool:
        asked.append(stanza["id"])
        return bool(match(stanza))

    monkeypatch.setattr(handler, "match", spy)
    return asked


def test_messages_take_the_fast_path_while_the_handlers_are_the_start_up_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, _ = client_bot(tmp_path)
    matched = spy_on_matching(conn, monkeypatch)
    before = conn.xmpp.plugin["xep_0198"].handled
    conn.xmpp.data_received(messages(range(3)))
    assert conn.xmpp.plugin["xep_0198"].handled == before + 3  # still counted by SM
    assert matched == []  # no handler was asked: the fast path


def test_a_handler_registered_later_sees_the_bots_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level("WARNING", logger="rulebot")
    conn, transport = client_bot(tmp_path)
    matched = spy_on_matching(conn, monkeypatch)
    seen: list[str] = []
    conn.xmpp.register_handler(Callback("receipts", MatchXPath("{jabber:client}message"),
                                        lambda stanza: seen.append(stanza["id"])))
    written = len(transport.writes)
    conn.xmpp.data_received(messages(range(4)))
    assert seen == ["m0", "m1", "m2", "m3"]
    assert b"rb-m3" in b"".join(transport.writes[written:])  # the bot still answers
    assert matched == ["m0", "m1", "m2", "m3"]  # through slixmpp's general path
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "fast_path_off"]
    assert len(lines) == 1  # told once, not per message
    assert lines[0].fields["handlers"] == ["receipts"]  # type: ignore[attr-defined]
