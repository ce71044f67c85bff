"""`rulebot run` against real Prosody and ejabberd, in client and component mode.

Real subprocess, real servers on 127.0.0.1, real client sessions (alice, bob,
carol, admin, mallory) talking to friend with the shipped rules.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import (
    MODES,
    TIMEOUT,
    bot_jid,
    connect_user,
    nothing_more,
    receive,
    run_bot,
    start_bot,
    write_config,
)

from rulebot.client import RequestError
from scripts import xmppserver

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("server_kind", "mode"), MODES)
async def test_shipped_rules_route_events_between_real_users(
    server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    jid = bot_jid(server, mode)
    bot = await run_bot(stack, write_config(server, mode, tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", jid)
    bob = await connect_user(stack, server, "bob", jid)
    carol = await connect_user(stack, server, "carol", jid)
    admin = await connect_user(stack, server, "admin", jid)
    mallory = await connect_user(stack, server, "mallory", jid)

    # forward: alice -> bob, rewritten by the rule, with who sent it and which rules decided
    alice.send_event({"type": "chat", "id": "c1", "to": "bob@localhost", "text": "hi bob"})
    got = await receive(bob)
    assert got.payload == {"type": "chat", "id": "c1", "from": "alice@localhost",
                           "text": "hi bob"}
    assert (got.sender, got.rule, got.event_id) == ("alice@localhost", "chat-to-member", "c1")
    entry = await bot.wait_log(lambda e: e.get("event_id") == "c1")
    assert entry["matched"] == ["chat-to-member"]
    assert got.version == entry["version"]

    # broadcast: admin -> every member but the admin
    admin.send_event({"type": "announce", "id": "a1", "text": "maintenance at 5"})
    for user in (alice, bob, carol):
        got = await receive(user)
        assert got.payload["text"] == "maintenance at 5"
        assert got.rule == "announce-from-admin"

    # reply: to the sender's full JID, correlated by event id
    pong = await bob.request({"type": "ping", "id": "p1"})
    assert pong.payload == {"type": "pong", "id": "p1"}

    # error from a rule: a non-admin announcing
    with pytest.raises(RequestError) as refused:
        await carol.request({"type": "announce", "text": "me too"})
    assert refused.value.code == "forbidden"

    # drop: mallory is banned, nothing reaches bob, the log says why
    mallory.send_event({"type": "chat", "id": "m1", "to": "bob@localhost", "text": "spam"})
    entry = await bot.wait_log(lambda e: e.get("event_id") == "m1")
    assert entry["actions"] == [{"type": "drop", "to": [], "rule": "drop-banned"}]
    await nothing_more(bob, bot, alice, jid)
    # A whole session with the servers' real negotiation: slixmpp's internals
    # were as verified and the message fast path stayed on (xmpp.patches).
    warnings = [e for e in bot.logs if e.get("event") in ("fast_path_off", "slixmpp_unverified")]
    assert warnings == []


BAD_EVENTS = [
    pytest.param("not json", "invalid-json", id="not-json"),
    pytest.param("[1, 2]", "not-object", id="json-array"),
    # The servers' stock shapers throttle users to 3-10 kB/s: keep big events small
    # by lowering the bot's limit instead (see the config in the test).
    pytest.param(json.dumps({"type": "chat", "text": "x" * 3000}), "too-large", id="too-big"),
    pytest.param("[" * 40 + "]" * 40, "too-deep", id="too-deep"),
    pytest.param('{"type": "chat", "to": "bob@localhost"}', "invalid-event", id="schema"),
    pytest.param('{"a": 1, "a": 2}', "duplicate-key", id="duplicate-key"),
    pytest.param('{"type": "nope"}', "unknown-event-type", id="unknown-type"),
]


@pytest.mark.parametrize(("server_kind", "mode"), [("prosody", "client"),
                                                   ("ejabberd", "component")])
async def test_bad_events_get_structured_errors_and_good_ones_still_flow(
    server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    jid = bot_jid(server, mode)
    await run_bot(stack, write_config(server, mode, tmp_path / "rulebot.yaml",
                                      limits={"max_bytes": 2048}))
    alice = await connect_user(stack, server, "alice", jid)
    bob = await connect_user(stack, server, "bob", jid)
    for param in BAD_EVENTS:
        text, code = param.values
        alice.send_raw(str(text))
        reply = await receive(alice)
        assert reply.error is not None, reply
        assert reply.error["code"] == code
        # ... and the good event right after it is delivered.
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"after {code}"})
        assert (await receive(bob)).payload["text"] == f"after {code}"


@pytest.mark.parametrize(("server_kind", "mode"), [("prosody", "client"),
                                                   ("ejabberd", "component")])
async def test_xep0335_json_container_is_answered_in_kind(
    server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    jid = bot_jid(server, mode)
    await run_bot(stack, write_config(server, mode, tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", jid, encoding="json")
    bob = await connect_user(stack, server, "bob", jid)
    pong = await alice.request({"type": "ping", "id": "j1"})
    assert (pong.encoding, pong.payload) == ("json", {"type": "pong", "id": "j1"})
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "in a container"})
    got = await receive(bob)
    assert (got.encoding, got.payload["text"]) == ("json", "in a container")


@pytest.mark.parametrize(("server_kind", "mode"), MODES)
async def test_presence_becomes_an_event(
    server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    jid = bot_jid(server, mode)
    bot = await run_bot(stack, write_config(server, mode, tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", jid)
    # carol shares her presence with the bot (directed presence works in both modes)
    carol = await connect_user(stack, server, "carol", jid, share_presence=True)
    got = await receive(alice)
    assert got.payload == {"type": "presence", "from": "carol@localhost",
                           "presence": "available", "show": None, "status": None}
    assert got.rule == "member-presence"
    carol.set_presence(show="away", status="lunch")
    got = await receive(alice)
    assert (got.payload["show"], got.payload["status"]) == ("away", "lunch")
    entry = await bot.wait_log(lambda e: e.get("kind") == "presence"
                               and e.get("from", "").startswith("carol@"))
    assert entry["matched"] == ["member-presence"]


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_subscription_from_allowed_domain_is_accepted_and_presence_flows(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    bob.subscribe()
    await bot.wait_log(lambda e: e.get("event") == "subscribe" and e.get("accepted") is True)
    # Once the bot's own subscription to bob is approved, bob's presence reaches it
    # (servers may first send his earlier, unavailable state).
    got = await receive(alice)
    while (got.payload.get("from"), got.payload.get("presence")) != ("bob@localhost",
                                                                      "available"):
        got = await receive(alice)
    assert got.rule == "member-presence"


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_events_sent_while_bot_is_offline_are_processed_when_it_starts(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    for i in range(20):
        alice.send_event({"type": "chat", "id": f"off{i}", "to": "bob@localhost",
                          "text": f"offline {i}"})
    await alice.flush()
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    texts = [(await receive(bob)).payload["text"] for _ in range(20)]
    assert texts == [f"offline {i}" for i in range(20)]


@pytest.mark.parametrize("server_kind", ["ejabberd"])
async def test_message_stored_offline_after_the_login_flush_is_recovered_once(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    """ejabberd can store an event offline after the bot's login flushed offline
    storage (routed before the bot's presence was processed, stored after the
    flush). The event is put there the way ejabberd's router does when it finds
    no available resource, while the bot is online: the sweep must handle it,
    remove it, and not hand it over twice."""
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml",
                                            offline_sweep=1,
                                            log={"format": "json", "level": "debug"}))
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    bob = await connect_user(stack, server, "bob", "friend@localhost")
    body = json.dumps({"type": "chat", "id": "stranded", "to": "bob@localhost",
                       "text": "left behind"}).replace("&", "&amp;").replace("<", "&lt;")
    stanza = (f"<message xmlns='jabber:client' from='alice@localhost/phone' "
              f"to='friend@localhost' type='chat' id='st1'><body>{body}</body></message>")
    mark = len(bot.logs)
    assert await asyncio.to_thread(xmppserver.ejabberd_store_offline, server, "friend",
                                   stanza) == 1

    got = await receive(bob)
    assert (got.payload["text"], got.event_id) == ("left behind", "stranded")
    found = await bot.wait_log(lambda e: e.get("event") == "offline_sweep"
                               and e.get("recovered", 0) > 0, start=mark)
    assert (found["recovered"], found["level"]) == (1, "warning")
    # The next sweep finds storage empty: the removal reached the server first.
    after = bot.logs.index(found) + 1
    again = await bot.wait_log(lambda e: e.get("event") == "offline_sweep", start=after)
    assert (again["recovered"], again["removing"]) == (0, 0)
    await nothing_more(bob, bot, alice, "friend@localhost")


@pytest.mark.parametrize("server_kind", ["prosody"])
async def test_sweeps_stop_quietly_on_a_server_without_xep_0013(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml",
                                            offline_sweep=1))
    off = await bot.wait_log(lambda e: e.get("event") == "offline_sweep_off")
    assert off["condition"] == "item-not-found"  # Prosody 0.12 has no XEP-0013 message list
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    assert (await alice.request({"type": "ping"})).payload["type"] == "pong"
    assert [e for e in bot.logs if str(e.get("event", "")).startswith("offline_sweep")] == [off]


@pytest.mark.parametrize(("server_kind", "mode"), MODES)
async def test_bot_reconnects_after_server_restart_and_nothing_is_lost(
    server: xmppserver.ServerInfo, mode: str, tmp_path: Path, stack: AsyncExitStack
) -> None:
    jid = bot_jid(server, mode)
    bot = await run_bot(stack, write_config(server, mode, tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", jid)
    bob = await connect_user(stack, server, "bob", jid)
    alice.send_event({"type": "chat", "to": "bob@localhost", "text": "before"})
    assert (await receive(bob)).payload["text"] == "before"

    mark = len(bot.logs)
    await asyncio.to_thread(xmppserver.restart_server, server)
    await bot.wait_log(lambda e: e.get("event") == "disconnected", start=mark)
    await bot.connected(start=mark)
    await alice.wait_online()
    await bob.wait_online()
    pong = await alice.request({"type": "ping"}, timeout=TIMEOUT)  # the path works again
    assert pong.payload["type"] == "pong"
    for i in range(10):
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"after {i}"})
    texts = [(await receive(bob)).payload["text"] for _ in range(10)]
    assert texts == [f"after {i}" for i in range(10)]


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_sigterm_stops_cleanly_with_exit_0(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    await alice.request({"type": "ping"})
    assert await bot.stop() == 0
    assert any(e.get("event") == "stopped" for e in bot.logs)
    # After the bot left, events wait in offline storage for the next start.
    alice.send_event({"type": "ping", "id": "later"})
    await alice.flush()
    await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    got = await receive(alice)
    assert got.payload == {"type": "pong", "id": "later"}


async def test_unverifiable_tls_certificate_is_a_clear_fatal_error(
    server: xmppserver.ServerInfo, tmp_path: Path
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml", tls={})
    bot = await start_bot(config)
    code = await asyncio.wait_for(bot.proc.wait(), timeout=TIMEOUT)
    assert bot.reader is not None
    await bot.reader
    assert code == 3
    fatal = next(e for e in bot.logs if e.get("event") == "fatal")
    assert "could not be verified" in fatal["msg"]
    assert "tls.ca_file" in fatal["msg"]


async def test_wrong_password_is_a_clear_fatal_error_and_is_never_logged(
    server: xmppserver.ServerInfo, tmp_path: Path
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml", password_env="BOT_PW")
    data = json.loads(config.read_text())
    del data["password_file"]
    config.write_text(json.dumps(data))
    bot = await start_bot(config, env={"BOT_PW": "s3cret-wrong-Pa55"})
    code = await asyncio.wait_for(bot.proc.wait(), timeout=TIMEOUT)
    assert bot.reader is not None
    await bot.reader
    assert code == 3
    assert any("authentication failed" in e.get("msg", "") for e in bot.logs)
    assert not any("s3cret-wrong-Pa55" in line for line in bot.raw)


async def test_sender_outside_allowed_domains_is_ignored_without_reply(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml",
                          allowed_domains=["example.org"])
    bot = await run_bot(stack, config)
    alice = await connect_user(stack, server, "alice", "friend@localhost")
    alice.send_event({"type": "ping", "id": "foreign"})
    entry = await bot.wait_log(lambda e: e.get("reason") == "domain-not-allowed")
    assert entry["from"].startswith("alice@localhost/")
    await alice.flush()
    assert alice._incoming.empty()
