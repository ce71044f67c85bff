"""The offline sweep (rulebot/xmpp_offline.py) inside the real BotConnection:
what a XEP-0013 fetch brings is handled like any event, and exactly those
stored messages are removed afterwards, behind what the bot sent for them.

Over a recording transport (no network); the live sweep against ejabberd, and
Prosody's refusal, are in tests/integration/test_daemon.py."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from recording_transport import RecordingTransport
from slixmpp import JID

from rulebot import xmpp_offline
from rulebot.config import parse_config
from rulebot.dispatch import Inbound, Meta, Outbound
from rulebot.xmpp import BotConnection
from rulebot.xmpp_offline import OFFLINE_NS, REMOVE_BATCH, offline_node

HEADER = (b"<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost'>")


@asynccontextmanager
async def client_bot(tmp_path: Path, extra: str = "") -> AsyncIterator[
        tuple[BotConnection, RecordingTransport, list[Inbound]]]:
    """A client-mode bot, logged in, answering every message with one message."""
    config = parse_config("jid: friend@localhost\nserver: {host: 127.0.0.1}\nrules: rules\n"
                          f"stream_management: false\n{extra}", "c.yaml", tmp_path)
    handled: list[Inbound] = []
    conn: BotConnection

    def on_inbound(inbound: Inbound) -> None:
        handled.append(inbound)
        conn.send(Outbound("bob@localhost", {"re": inbound.id}, "body", "chat",
                           f"rb-{inbound.id}", Meta("alice@localhost", "r", "v1", None)))

    conn = BotConnection(config, "secret", on_inbound)
    transport = RecordingTransport()
    conn.xmpp.connection_made(transport)
    # What connect() starts: the task writing slixmpp's send queue (IQs go that way).
    conn.xmpp._run_out_filters = asyncio.ensure_future(conn.xmpp.run_filters())
    conn.xmpp.data_received(HEADER)
    conn.xmpp.boundjid = JID("friend@localhost/rulebot")
    conn.xmpp.session_bind_event.set()
    conn.xmpp.event("session_start")
    # The tests drive the sweeps themselves: stop the periodic one login started.
    tasks = [t for t in (conn._sweeps, conn.xmpp._run_out_filters) if t is not None]
    conn._stop_sweeps()
    try:
        yield conn, transport, handled
    finally:
        conn.xmpp.event("disconnected")  # cancels sweeps a test started
        if conn._sweeps is not None:
            tasks.append(conn._sweeps)
        conn._stop_sweeps()
        conn.xmpp._run_out_filters.cancel()
        # Awaited, not left to the garbage collector: a pending task finalised
        # in the middle of a later compile() trips CPython 3.11's AST
        # recursion-depth check (SystemError).
        await asyncio.gather(*tasks, return_exceptions=True)


def written(transport: RecordingTransport) -> str:
    return b"".join(transport.writes).decode()


def error_reply(iq_id: str, condition: str) -> bytes:
    return (f"<iq type='error' id='{iq_id}' from='friend@localhost' "
            f"to='friend@localhost/rulebot'><error type='cancel'><{condition} "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>").encode()


def result(iq_id: str) -> bytes:
    return (f"<iq type='result' id='{iq_id}' from='friend@localhost' "
            "to='friend@localhost/rulebot'/>").encode()


def ids_of(transport: RecordingTransport, kind: str) -> list[str]:
    """The ids of the <iq type=kind> with <offline/> written so far."""
    pattern = rf'<iq (?=[^>]*type="{kind}")[^>]*id="([^"]+)"[^>]*>\s*<offline '
    return re.findall(pattern, written(transport))


async def iq_ids(transport: RecordingTransport, kind: str, count: int) -> list[str]:
    """The ids of the first `count` <iq type=kind> with <offline/>, once written."""
    for _ in range(1000):  # slixmpp writes from its send task: let it run
        ids = ids_of(transport, kind)
        if len(ids) >= count:
            return ids[:count]
        await asyncio.sleep(0)
    raise AssertionError(f"fewer than {count} <iq type={kind}>: {written(transport)}")


async def sweep_serving(conn: BotConnection, transport: RecordingTransport,
                        served: str) -> int:
    """One sweep whose fetch the server answers with the `served` stanzas."""
    assert conn.sweeper is not None
    before = len(ids_of(transport, "get"))
    sweep = asyncio.ensure_future(conn.sweeper.sweep())
    fetch = (await iq_ids(transport, "get", before + 1))[before]
    conn.xmpp.data_received(served.encode() + result(fetch))
    return await asyncio.wait_for(sweep, 5)


async def answer_removal(conn: BotConnection, transport: RecordingTransport, n: int,
                         condition: str | None) -> None:
    """The server's answer to the bot's n-th removal: done, or this error."""
    removal = (await iq_ids(transport, "set", n))[n - 1]
    conn.xmpp.data_received(result(removal) if condition is None
                            else error_reply(removal, condition))
    await asyncio.sleep(0)  # the answer's callback runs


def stored(node: str, event_id: str) -> str:
    body = json.dumps({"type": "chat", "id": event_id})
    return (f"<message to='friend@localhost' from='alice@localhost/x' type='chat' "
            f"id='{event_id}'><body>{body}</body><offline xmlns='{OFFLINE_NS}'>"
            f"<item node='{node}'/></offline></message>")


async def test_fetched_messages_are_handled_then_removed_after_what_they_produced(
    tmp_path: Path,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        sweep = asyncio.ensure_future(conn.sweeper.sweep())
        (fetch,) = await iq_ids(transport, "get", 1)
        assert re.search(rf"<offline xmlns=\"{OFFLINE_NS}\"><fetch\s*/></offline>",
                         written(transport))
        # ejabberd re-sends each stored message tagged with its node, then answers
        # the fetch; a live message in between is no stored one.
        live = ("<message to='friend@localhost' from='carol@localhost/y' type='chat' "
                "id='live'><body>{}</body></message>")
        conn.xmpp.data_received((stored("17", "s17") + live + stored("18", "s18")).encode() +
                                result(fetch))
        assert await asyncio.wait_for(sweep, 5) == 2
        assert [i.id for i in handled] == ["s17", "live", "s18"]

        await iq_ids(transport, "set", 1)
        stream = written(transport)
        removal = stream[stream.index('type="set"'):]
        assert re.findall(r'<item (?:action="remove" node="(\d+)"|node="(\d+)" action="remove")',
                          removal) in ([("17", ""), ("18", "")], [("", "17"), ("", "18")])
        # Behind the answers to both stored events.
        assert stream.index('id="rb-s18"') < stream.index('type="set"')
        assert conn.sweeper.swept == 2


@pytest.mark.parametrize(("condition", "stays_on"), [
    ("service-unavailable", False),  # Prosody 0.12: no XEP-0013
    ("feature-not-implemented", False),
    ("internal-server-error", True),  # a database failure: try again next time
])
async def test_an_unsupported_fetch_turns_the_sweeps_off_and_a_transient_error_does_not(
    tmp_path: Path, condition: str, stays_on: bool,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        sweep = asyncio.ensure_future(conn.sweeper.sweep())
        (fetch,) = await iq_ids(transport, "get", 1)
        conn.xmpp.data_received(error_reply(fetch, condition))
        assert await asyncio.wait_for(sweep, 5) == 0
        assert conn.sweeper.supported is stays_on
        assert 'type="set"' not in written(transport)
        assert handled == []


async def test_a_message_whose_removal_failed_is_removed_again_but_not_handled_again(
    tmp_path: Path,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert await sweep_serving(conn, transport, stored("7", "s7")) == 1
        await answer_removal(conn, transport, 1, "internal-server-error")

        assert await sweep_serving(conn, transport, stored("7", "s7")) == 0
        assert [i.id for i in handled] == ["s7"]  # once
        await answer_removal(conn, transport, 2, None)
        assert written(transport).count('node="7"') == 2  # asked to remove it again
        assert conn.sweeper is not None
        assert conn.sweeper.supported

        # Confirmed: should it ever come back, it is a new event again.
        assert await sweep_serving(conn, transport, stored("7", "s7")) == 1


async def test_a_server_that_cannot_remove_single_messages_turns_the_sweeps_off(
    tmp_path: Path,
) -> None:
    """ejabberd with use_mam_for_storage fetches but answers item-not-found to
    every removal: without this, each sweep would fetch the same messages."""
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        assert await sweep_serving(conn, transport, stored("9", "s9")) == 1
        await answer_removal(conn, transport, 1, "item-not-found")
        assert conn.sweeper.supported  # not yet: the refusal alone proves nothing

        assert await sweep_serving(conn, transport, stored("9", "s9")) == 0
        assert not conn.sweeper.supported  # it came back
        assert [i.id for i in handled] == ["s9"]


async def test_a_forged_offline_tag_cannot_turn_the_sweeps_off(tmp_path: Path) -> None:
    """A user's message carrying its own <offline/> item during a fetch: its node
    is refused at removal, but never comes back in a fetch."""
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        forged = stored("123", "forged").replace("alice@localhost/x", "mallory@localhost/m")
        word = stored("x1", "word")  # not a storage node at all: an ordinary message
        await sweep_serving(conn, transport, forged + word)
        await answer_removal(conn, transport, 1, "item-not-found")
        await sweep_serving(conn, transport, "")  # nothing is stored
        assert conn.sweeper.supported
        assert [i.id for i in handled] == ["forged", "word"]
        assert 'node="x1"' not in written(transport)


async def test_shutdown_lets_a_fetch_in_progress_finish_and_remove_what_it_brought(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(xmpp_offline, "FIRST_SWEEP", 0.0)
    async with client_bot(tmp_path) as (conn, transport, handled):
        conn._on_session(None)  # logged in again: the periodic sweeps start
        (fetch,) = await iq_ids(transport, "get", 1)
        ending = asyncio.ensure_future(conn._end_sweeps())
        for _ in range(20):  # time enough to cancel a sweep, were it cancelled
            await asyncio.sleep(0)
        assert not ending.done()  # waits for the fetch's answer
        conn.xmpp.data_received(stored("5", "s5").encode() + result(fetch))
        await asyncio.wait_for(ending, 5)
        assert [i.id for i in handled] == ["s5"]
        await iq_ids(transport, "set", 1)
        assert conn._sweeps is None


async def test_many_recovered_messages_are_removed_in_batches(tmp_path: Path) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        n = REMOVE_BATCH + 5
        served = "".join(stored(str(k), f"s{k}") for k in range(n))
        assert await sweep_serving(conn, transport, served) == n
        await iq_ids(transport, "set", 2)
        assert written(transport).count('action="remove"') == n
        assert len(handled) == n


async def test_sweeps_are_off_in_component_mode_and_when_set_to_0() -> None:
    component = parse_config("mode: component\njid: friend.localhost\nrules: r\n")
    assert BotConnection(component, "s", lambda _i: None).sweeper is None
    off = parse_config("jid: friend@localhost\nrules: r\noffline_sweep: 0\n")
    assert BotConnection(off, "s", lambda _i: None).sweeper is None
    default = parse_config("jid: friend@localhost\nrules: r\n")
    sweeper = BotConnection(default, "s", lambda _i: None).sweeper
    assert sweeper is not None
    assert sweeper.interval == 60


@pytest.mark.parametrize(("xml", "node"), [
    (stored("42", "a"), "42"),
    ("<message xmlns='jabber:client'><body>{}</body></message>", None),
    (f"<message xmlns='jabber:client'><offline xmlns='{OFFLINE_NS}'/></message>", None),
    (f"<message xmlns='jabber:client'><offline xmlns='{OFFLINE_NS}'><item/></offline>"
     "</message>", None),
])
def test_offline_node_reads_the_storage_node_of_a_fetched_message(xml: str,
                                                                   node: str | None) -> None:
    from xml.etree import ElementTree as ET

    element = ET.fromstring(xml.replace("<message to=", "<message xmlns='jabber:client' to="))
    assert offline_node(element) == node
