"""The offline sweep (rulebot/xmpp/offline.py) inside the real BotConnection:
what a XEP-0013 fetch brings (of what the message list named) is handled
like any event, and exactly those stored messages are removed afterwards,
behind what the bot sent for them.

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

from rulebot.bot.values import Inbound, Meta, Outbound
from rulebot.config import parse_config
from rulebot.xmpp import offline as xmpp_offline
from rulebot.xmpp.connection import BotConnection
from rulebot.xmpp.offline import OFFLINE_NS, REMOVE_BATCH, offline_node

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
    conn.xmpp.sessionstarted = True
    conn.xmpp.event("session_start")  # bound: not online yet (XEP-0198 first)
    conn.xmpp.event("stream_negotiated")  # after <enabled/>: online
    # The tests drive the sweeps themselves: stop the periodic one login started.
    assert conn.sweeper is not None
    tasks = [t for t in (conn.sweeper.task, conn.xmpp._run_out_filters) if t is not None]
    conn.sweeper.cancel()
    try:
        yield conn, transport, handled
    finally:
        conn.xmpp.event("disconnected")  # cancels sweeps a test started
        if conn.sweeper.task is not None:
            tasks.append(conn.sweeper.task)
        conn.sweeper.cancel()
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


FETCH = "<offline "
LIST = '<query xmlns="http://jabber.org/protocol/disco#items"'


def ids_of(transport: RecordingTransport, kind: str, child: str = FETCH) -> list[str]:
    """The ids of the <iq type=kind> whose payload starts with `child`, written so far."""
    pattern = rf'<iq (?=[^>]*type="{kind}")[^>]*id="([^"]+)"[^>]*>\s*{re.escape(child)}'
    return re.findall(pattern, written(transport))


async def iq_ids(transport: RecordingTransport, kind: str, count: int,
                 child: str = FETCH) -> list[str]:
    """The ids of the first `count` such IQs, once written."""
    for _ in range(1000):  # slixmpp writes from its send task: let it run
        ids = ids_of(transport, kind, child)
        if len(ids) >= count:
            return ids[:count]
        await asyncio.sleep(0)
    raise AssertionError(f"fewer than {count} <iq type={kind}>: {written(transport)}")


def message_list(iq_id: str, items: list[tuple[str, str]]) -> bytes:
    """ejabberd's answer to the list request: (node, sender) of each stored message."""
    listed = "".join(f"<item jid='friend@localhost' node='{node}' name='{sender}'/>"
                     for node, sender in items)
    return (f"<iq type='result' id='{iq_id}' from='friend@localhost' "
            f"to='friend@localhost/rulebot'><query xmlns='http://jabber.org/protocol/"
            f"disco#items' node='{OFFLINE_NS}'>{listed}</query></iq>").encode()


async def sweep_serving(conn: BotConnection, transport: RecordingTransport,
                        items: list[tuple[str, str]], served: str) -> int:
    """One sweep: the server lists `items` and answers the fetch with `served`."""
    assert conn.sweeper is not None
    asked, fetched = len(ids_of(transport, "get", LIST)), len(ids_of(transport, "get"))
    sweep = asyncio.ensure_future(conn.sweeper.sweep())
    ask = (await iq_ids(transport, "get", asked + 1, LIST))[asked]
    conn.xmpp.data_received(message_list(ask, items))
    if items:
        fetch = (await iq_ids(transport, "get", fetched + 1))[fetched]
        conn.xmpp.data_received(served.encode() + result(fetch))
    return await asyncio.wait_for(sweep, 5)


async def answer_removal(conn: BotConnection, transport: RecordingTransport, n: int,
                         condition: str | None) -> None:
    """The server's answer to the bot's n-th removal: done, or this error."""
    removal = (await iq_ids(transport, "set", n))[n - 1]
    conn.xmpp.data_received(result(removal) if condition is None
                            else error_reply(removal, condition))
    await asyncio.sleep(0)  # the answer's callback runs


ALICE = "alice@localhost/x"


def stored(node: str, event_id: str, sender: str = ALICE) -> str:
    body = json.dumps({"type": "chat", "id": event_id})
    return (f"<message to='friend@localhost' from='{sender}' type='chat' "
            f"id='{event_id}'><body>{body}</body><offline xmlns='{OFFLINE_NS}'>"
            f"<item node='{node}'/></offline></message>")


async def test_fetched_messages_are_handled_then_removed_after_what_they_produced(
    tmp_path: Path,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        # ejabberd lists what is stored, re-sends each stored message tagged with
        # its node, then answers the fetch; a live message in between is no
        # stored one.
        live = ("<message to='friend@localhost' from='carol@localhost/y' type='chat' "
                "id='live'><body>{}</body></message>")
        served = stored("17", "s17") + live + stored("18", "s18")
        items = [("17", ALICE), ("18", ALICE)]
        assert await sweep_serving(conn, transport, items, served) == 2
        assert [i.id for i in handled] == ["s17", "live", "s18"]
        assert re.search(rf"<offline xmlns=\"{OFFLINE_NS}\"><fetch\s*/></offline>",
                         written(transport))

        await iq_ids(transport, "set", 1)
        stream = written(transport)
        removal = stream[stream.index('type="set"'):]
        assert re.findall(r'<item (?:action="remove" node="(\d+)"|node="(\d+)" action="remove")',
                          removal) in ([("17", ""), ("18", "")], [("", "17"), ("", "18")])
        # Behind the answers to both stored events.
        assert stream.index('id="rb-s18"') < stream.index('type="set"')
        assert conn.sweeper.swept == 2


async def test_nothing_listed_means_no_fetch(tmp_path: Path) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert await sweep_serving(conn, transport, [], "") == 0
        assert ids_of(transport, "get") == []
        assert handled == []


@pytest.mark.parametrize(("condition", "stays_on"), [
    ("item-not-found", False),  # Prosody 0.12: no XEP-0013 message list
    ("service-unavailable", False),
    ("internal-server-error", True),  # a database failure: try again next time
])
async def test_an_unsupported_fetch_turns_the_sweeps_off_and_a_transient_error_does_not(
    tmp_path: Path, condition: str, stays_on: bool,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        sweep = asyncio.ensure_future(conn.sweeper.sweep())
        (ask,) = await iq_ids(transport, "get", 1, LIST)
        conn.xmpp.data_received(error_reply(ask, condition))
        assert await asyncio.wait_for(sweep, 5) == 0
        assert conn.sweeper.supported is stays_on
        assert ids_of(transport, "get") == []  # no fetch
        assert handled == []


async def test_a_message_whose_removal_failed_is_removed_again_but_not_handled_again(
    tmp_path: Path,
) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        seven = [("7", ALICE)]
        assert await sweep_serving(conn, transport, seven, stored("7", "s7")) == 1
        await answer_removal(conn, transport, 1, "internal-server-error")

        assert await sweep_serving(conn, transport, seven, stored("7", "s7")) == 0
        assert [i.id for i in handled] == ["s7"]  # once
        await answer_removal(conn, transport, 2, None)
        assert written(transport).count('node="7"') == 2  # asked to remove it again
        assert conn.sweeper is not None
        assert conn.sweeper.supported

        # Confirmed: should it ever come back, it is a new event again.
        assert await sweep_serving(conn, transport, seven, stored("7", "s7")) == 1


async def test_a_server_that_cannot_remove_single_messages_turns_the_sweeps_off(
    tmp_path: Path,
) -> None:
    """ejabberd with use_mam_for_storage fetches but answers item-not-found to
    every removal: without this, each sweep would fetch the same messages."""
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        nine = [("9", ALICE)]
        assert await sweep_serving(conn, transport, nine, stored("9", "s9")) == 1
        await answer_removal(conn, transport, 1, "item-not-found")
        assert conn.sweeper.supported  # not yet: the refusal alone proves nothing

        assert await sweep_serving(conn, transport, nine, stored("9", "s9")) == 0
        assert not conn.sweeper.supported  # it came back
        assert [i.id for i in handled] == ["s9"]


async def test_only_listed_stored_messages_of_their_listed_sender_are_taken_as_stored(
    tmp_path: Path,
) -> None:
    """During a fetch, mallory sends messages carrying <offline/> tags of her
    own: one naming alice's stored message, one naming a node the list does
    not have. Neither is taken for a stored message: not handled now, never
    asked to be removed; alice's real one is handled and removed."""
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        mallory = "mallory@localhost/m"
        served = (stored("7", "forged-7", mallory) + stored("8", "forged-8", mallory)
                  + stored("7", "s7"))
        assert await sweep_serving(conn, transport, [("7", ALICE)], served) == 1
        assert [i.id for i in handled] == ["s7"]
        await iq_ids(transport, "set", 1)
        assert written(transport).count('action="remove"') == 1
        assert 'node="8"' not in written(transport)
        assert conn.sweeper.supported


async def test_shutdown_lets_a_fetch_in_progress_finish_and_remove_what_it_brought(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(xmpp_offline, "FIRST_SWEEP", 0.0)
    async with client_bot(tmp_path) as (conn, transport, handled):
        conn._on_session(None)  # logged in again: the periodic sweeps start
        (ask,) = await iq_ids(transport, "get", 1, LIST)
        conn.xmpp.data_received(message_list(ask, [("5", ALICE)]))
        (fetch,) = await iq_ids(transport, "get", 1)
        assert conn.sweeper is not None
        ending = asyncio.ensure_future(conn.sweeper.finish(5.0))
        for _ in range(20):  # time enough to cancel a sweep, were it cancelled
            await asyncio.sleep(0)
        assert not ending.done()  # waits for the fetch's answer
        conn.xmpp.data_received(stored("5", "s5").encode() + result(fetch))
        await asyncio.wait_for(ending, 5)
        assert [i.id for i in handled] == ["s5"]
        await iq_ids(transport, "set", 1)
        assert conn.sweeper.task is None


async def test_many_recovered_messages_are_removed_in_batches(tmp_path: Path) -> None:
    async with client_bot(tmp_path) as (conn, transport, handled):
        assert conn.sweeper is not None
        n = REMOVE_BATCH + 5
        served = "".join(stored(str(k), f"s{k}") for k in range(n))
        items = [(str(k), ALICE) for k in range(n)]
        assert await sweep_serving(conn, transport, items, served) == n
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


async def test_a_sweep_does_not_start_while_one_is_in_progress(tmp_path: Path) -> None:
    async with client_bot(tmp_path) as (conn, transport, _handled):
        assert conn.sweeper is not None
        first = asyncio.ensure_future(conn.sweeper.sweep())
        await iq_ids(transport, "get", 1, LIST)
        assert await conn.sweeper.sweep() == 0
        assert len(ids_of(transport, "get", LIST)) == 1
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
