"""Hostile input on a real server: every bad event gets its documented answer (or is
ignored where documented), every good event interleaved with them is delivered, and
the bot stays up. The table is the corpus; README's Reliability section counts it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import slixmpp
from conftest import TIMEOUT, USERS, connect_user, receive, run_bot, write_config

from rulebot.client import RulebotClient
from scripts import xmppserver

pytestmark = pytest.mark.integration

BOT = "friend@localhost"
CHAT = {"type": "chat", "to": "bob@localhost", "text": "x"}


def chat(**changes: object) -> str:
    return json.dumps({**CHAT, **changes})


@dataclass(frozen=True)
class Case:
    name: str
    body: str | None = None  # sent in <body/>
    container: str | None = None  # sent in an XEP-0335 <json/>
    mtype: str = "chat"
    error: str | None = None  # expected error code back to alice
    ignored: str | None = None  # expected log reason, nothing back
    check: Callable[[dict[str, object]], bool] | None = None  # what bob gets, if anything


CASES = [
    Case("invalid JSON", body="{nope", error="invalid-json"),
    Case("empty object text", body="   ", error="invalid-json"),
    Case("trailing garbage", body='{"type":"ping"} x', error="invalid-json"),
    Case("NaN literal", body='{"type":"ping","n":NaN}', error="invalid-json"),
    Case("JSON array", body="[1,2,3]", error="not-object"),
    Case("JSON string", body='"hello"', error="not-object"),
    Case("JSON number", body="42", error="not-object"),
    Case("JSON null", body="null", error="not-object"),
    Case("JSON true", body="true", error="not-object"),
    Case("huge string", body=chat(text="y" * 3000), error="too-large"),
    Case("string over the string limit", body=chat(text="z" * 600), error="string-too-long"),
    Case("deep nesting", body="[" * 50 + "]" * 50, error="too-deep"),
    Case("giant array", body=json.dumps({"type": "x", "a": [0] * 400}),
         error="too-many-items"),
    Case("duplicate keys", body='{"type":"chat","type":"ping"}', error="duplicate-key"),
    Case("integer beyond 2^53", body='{"type":"ping","n":18014398509481984}',
         error="number-out-of-range"),
    Case("float overflow", body='{"type":"ping","n":1e400}', error="number-out-of-range"),
    Case("5000-digit integer", body='{"type":"ping","n":' + "9" * 1500 + "}",
         error="number-out-of-range"),
    Case("control character escape", body='{"type":"ping","s":"\\u0001"}',
         error="invalid-string"),
    Case("lone surrogate escape", body='{"type":"ping","s":"\\ud800"}',
         error="invalid-string"),
    Case("noncharacter U+FFFF", body='{"type":"ping","s":"\\uffff"}', error="invalid-string"),
    Case("schema: missing field", body=json.dumps({"type": "chat", "to": "bob@localhost"}),
         error="invalid-event"),
    Case("schema: wrong type", body=chat(text=5), error="invalid-event"),
    Case("schema: extra field", body=chat(admin=True), error="invalid-event"),
    Case("schema: text too long", body=chat(text="t" * 4097), error="too-large"),
    Case("schema: bad JID pattern", body=chat(to="bob@localhost/phone"), error="invalid-event"),
    Case("unknown type", body=json.dumps({"type": "rm -rf"}), error="unknown-event-type"),
    Case("type not a string", body=json.dumps({"type": ["chat"]}),
         error="unknown-event-type"),
    Case("no type", body=json.dumps({"text": "hi"}), error="unknown-event-type"),
    Case("payload claims another sender",
         body=chat(sender="admin@localhost", **{"from": "admin@localhost"}),
         error="invalid-event"),
    Case("admin announcement from a non-admin claiming to be admin",
         body=json.dumps({"type": "announce", "text": "x", "from": "admin@localhost"}),
         error="invalid-event"),
    Case("forward target is the bot itself", body=chat(to=BOT), error="not-a-member"),
    Case("forward target on a foreign domain", body=chat(to="bob@evil.example"),
         error="not-a-member"),
    Case("bad JSON in an XEP-0335 container", container="{nope", error="invalid-json"),
    Case("container beats body", body="not json", container=json.dumps({"type": "ping"}),
         check=None),
    Case("error-type stanza", body=json.dumps({"type": "ping"}), mtype="error",
         ignored="error-message"),
    Case("groupchat stanza", body=json.dumps({"type": "ping"}), mtype="groupchat",
         ignored="groupchat-message"),
]


async def raw_send(client: RulebotClient, case: Case) -> None:
    # RFC 6121 8.5.2.1.1: servers drop error messages and bounce groupchat
    # messages to a bare JID, so those go to the bot's (fixed) resource.
    to = BOT + "/rulebot" if case.mtype in ("error", "groupchat") else BOT
    msg = client.xmpp.make_message(mto=to, mtype=case.mtype)
    if case.body is not None:
        msg["body"] = case.body
    if case.container is not None:
        import xml.etree.ElementTree as ET

        el = ET.Element("{urn:xmpp:json:0}json")
        el.text = case.container
        msg.xml.append(el)
    msg.send()


async def test_hostile_events_get_documented_answers_and_good_events_flow(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    config = write_config(server, "client", tmp_path / "rulebot.yaml",
                          limits={"max_bytes": 2048, "max_depth": 16, "max_string": 512,
                                  "max_items": 200})
    bot = await run_bot(stack, config)
    alice = await connect_user(stack, server, "alice", BOT)
    bob = await connect_user(stack, server, "bob", BOT)
    answered = 0
    for n, case in enumerate(CASES):
        mark = len(bot.logs)
        await raw_send(alice, case)
        if case.error:
            reply = await receive(alice)
            assert reply.error is not None, (case.name, reply)
            assert reply.error["code"] == case.error, case.name
            answered += 1
        elif case.ignored:
            entry = await bot.wait_log(
                lambda e, want=case.ignored: e.get("reason") == want, start=mark)
            assert entry["status"] == "ignored", case.name
        else:
            reply = await receive(alice)  # the container was used: a pong
            assert reply.payload["type"] == "pong", case.name
        # ... and a good event right after it is delivered in full.
        alice.send_event({"type": "chat", "to": "bob@localhost", "text": f"good {n}"})
        got = await receive(bob)
        assert got.payload["text"] == f"good {n}", case.name
    assert answered == sum(1 for c in CASES if c.error)
    assert len(CASES) >= 30
    assert bot.proc.returncode is None  # still up


async def test_stanzas_from_the_bots_own_account_are_ignored(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml"))
    alice = await connect_user(stack, server, "alice", BOT)
    twin = slixmpp.ClientXMPP("friend@localhost/twin", USERS["friend"])
    twin.ca_certs = server.ca_file
    twin.enable_direct_tls = False
    started = asyncio.Event()
    twin.add_event_handler("session_start", lambda _e: started.set())
    twin.connect(server.host, server.c2s_port)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    try:
        mark = len(bot.logs)
        twin.send_message(mto="friend@localhost/rulebot", mbody=json.dumps({"type": "ping"}))
        entry = await bot.wait_log(lambda e: e.get("reason") == "own-stanza", start=mark)
        assert entry["from"] == "friend@localhost/twin"
        await alice.request({"type": "ping"})  # still serving
    finally:
        twin.disconnect()


async def test_broadcast_to_a_huge_list_is_refused_visibly(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    members = [f"user{i}@localhost" for i in range(100_000)]
    rules = tmp_path / "rules.yaml"
    rules.write_text(json.dumps({"version": 1, "lists": {"everyone": members}, "rules": [
        {"name": "shout", "match": "event.type == 'shout'",
         "actions": [{"broadcast": {"to": "lists.everyone"}}]},
        {"name": "ping", "actions": [{"reply": {"payload": "{type: 'pong'}"}}]}]}))
    bot = await run_bot(stack, write_config(server, "client", tmp_path / "rulebot.yaml",
                                            rules=rules))
    alice = await connect_user(stack, server, "alice", BOT)
    alice.send_event({"type": "shout", "id": "s1"})
    entry = await bot.wait_log(lambda e: e.get("event_id") == "s1")
    assert entry["rule_errors"][0]["message"].startswith(
        "broadcast: 100000 recipients exceed the cap of 10000")
    assert (await receive(alice)).payload == {"type": "pong"}  # the fallback rule answered
