"""The bot's side of XEP-0198 across restarts, driven through its slixmpp
stream with a recording transport (the live kill -9 runs are in
tests/integration/test_crash.py): what a new process restores from the state
file and the journal, and what it re-sends when the server forgot the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recording_transport import RecordingTransport

from rulebot.config import parse_config
from rulebot.sm_journal import SmJournal
from rulebot.xmpp import BotConnection, load_sm_state, save_sm_state, sm_journal_path


def message(n: int) -> str:
    return f'<message to="bob@localhost" type="chat" id="rb-{n}"><body>{{}}</body></message>'


def bot(tmp_path: Path) -> tuple[BotConnection, Any]:
    state = tmp_path / "rulebot.sm.json"
    config = parse_config(f"jid: friend@localhost\nrules: rules\nsm_state_file: {state}\n")
    conn = BotConnection(config, "secret", lambda _inbound: None)
    return conn, conn.xmpp.plugin["xep_0198"]


def test_a_new_process_takes_up_the_journal_where_the_server_will_count_from(
        tmp_path: Path) -> None:
    state = str(tmp_path / "rulebot.sm.json")
    save_sm_state(state, "sess-1", 0)  # at the session's start
    SmJournal(sm_journal_path(state)).record("sess-1", [(7, message(7)), (8, message(8))], 40)
    _conn, sm = bot(tmp_path)
    assert (sm.sm_id, sm.handled) == ("sess-1", 40)  # the count of the last ack
    assert list(sm.unacked_queue) == [(7, message(7)), (8, message(8))]
    # <resumed h="7"/> will drop 7 (counted from last_ack) and re-send 8.
    assert (sm.seq, sm.last_ack) == (8, 6)


def test_when_the_server_forgot_the_session_our_journaled_messages_are_sent_again(
        tmp_path: Path) -> None:
    state = str(tmp_path / "rulebot.sm.json")
    save_sm_state(state, "sess-1", 40)
    presence = "<presence><priority>0</priority></presence>"
    SmJournal(sm_journal_path(state)).record(
        "sess-1", [(7, message(7)), (8, presence), (9, message(9))], 40)
    conn, sm = bot(tmp_path)
    transport = RecordingTransport()
    conn.xmpp.transport = transport
    conn.xmpp.event("sm_failed", None)  # the resume was refused
    sm.unacked_queue.clear()  # as slixmpp's own <failed/> handler does
    sm.sm_id, sm.seq, sm.enabled_out = "sess-2", 0, True
    conn.xmpp.event("sm_enabled", None)
    sent = b"".join(transport.writes).decode()
    assert sent == message(7) + message(9)  # our messages, not the old presence
    assert [seq for seq, _ in sm.unacked_queue] == [1, 2]  # numbered in the new session
    assert load_sm_state(state) == ("sess-2", 0)
    assert not Path(sm_journal_path(state)).exists()


def test_an_ack_is_withheld_with_an_error_line_when_the_journal_cannot_be_written(
        tmp_path: Path, caplog: Any) -> None:
    conn, sm = bot(tmp_path)
    sm.sm_id, sm.handled = "sess-1", 5
    sm.unacked_queue.append((1, message(1)))
    journal = Path(sm_journal_path(str(tmp_path / "rulebot.sm.json")))
    journal.mkdir()  # a directory where the file should be: every write fails
    from slixmpp.plugins.xep_0198.stanza import Ack
    ack = Ack(conn.xmpp)
    (before_ack,) = [f for f in conn.xmpp._XMLStream__filters["out_sync"]
                     if f.__name__ == "before_ack"]
    assert before_ack(ack) is None
    assert any(getattr(r, "fields", {}).get("event") == "sm_state_failed"
               for r in caplog.records)
    journal.rmdir()
    assert before_ack(ack) is ack
    assert ack["h"] == 5
    assert SmJournal(str(journal)).load("sess-1") == ([(1, message(1))], 5)


def test_without_a_journal_the_state_file_count_is_used(tmp_path: Path) -> None:
    save_sm_state(str(tmp_path / "rulebot.sm.json"), "sess-1", 17)  # an older release's file
    _conn, sm = bot(tmp_path)
    assert (sm.sm_id, sm.handled, len(sm.unacked_queue)) == ("sess-1", 17, 0)


def test_an_ack_carries_the_handled_count_even_for_a_session_without_an_id(
        tmp_path: Path) -> None:
    # A server may enable stream management without resumption (no id): the
    # journal is then skipped, but the ack must still say how many were handled.
    conn, sm = bot(tmp_path)
    transport = RecordingTransport()
    conn.xmpp.transport = transport
    sm.sm_id, sm.handled = None, 7
    queued: list[Any] = []
    conn.xmpp.send = lambda stanza, *args, **kw: queued.append(stanza)  # type: ignore[method-assign]
    sm.send_ack()
    (before_ack,) = [f for f in conn.xmpp._XMLStream__filters["out_sync"]
                     if f.__name__ == "before_ack"]
    assert before_ack(queued[0])["h"] == 7
