"""Admin over XMPP, on a real server: a real slixmpp client runs the bot's
XEP-0050 ad-hoc commands (listed by disco, forms filled and submitted), the
chat fallback does the same by `!` messages, everything lands in the audit
log, and a non-admin gets `forbidden` both ways."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import slixmpp
from conftest import USERS, bot_jid, connect_user, receive, run_bot, write_config
from slixmpp.exceptions import IqError

from rulebot.store.open import open_store
from rulebot.xmpp.tls import setup_tls
from scripts import xmppserver

pytestmark = pytest.mark.integration


class AdminClient:
    """A plain slixmpp client with the ad-hoc commands plugin (what Gajim,
    Psi or Conversations do by hand)."""

    def __init__(self, info: xmppserver.ServerInfo, user: str) -> None:
        self.x = slixmpp.ClientXMPP(f"{user}@localhost/adhoc", USERS[user])
        setup_tls(self.x, info.ca_file, True, False)
        for plugin in ("xep_0030", "xep_0004", "xep_0050"):
            self.x.register_plugin(plugin)
        self.info = info
        self.ready = asyncio.Event()
        self.x.add_event_handler("session_start", lambda _e: self.ready.set())

    async def connect(self) -> None:
        self.x.connect(self.info.host, self.info.c2s_port)
        await asyncio.wait_for(self.ready.wait(), 15)

    async def commands(self, bot: str) -> list[str]:
        iq = await self.x.plugin["xep_0050"].get_commands(jid=bot)
        return [node for _jid, node, _name in iq["disco_items"]["items"]]

    async def run(self, bot: str, node: str, **values: str) -> tuple[str, dict[str, str]]:
        """Execute `node`; fill and submit its form when it has one. The
        result form's values, and the status."""
        iq = await self.x.plugin["xep_0050"].send_command(bot, node, timeout=15)
        command = iq["command"]
        if command["status"] == "executing":
            asked = command["form"]
            offered = {f["var"] for f in asked["fields"]}
            assert set(values) <= offered, (values, offered)
            form = self.x.plugin["xep_0004"].make_form(ftype="submit")
            for var, value in values.items():
                form.add_field(var=var, value=value)
            iq = await self.x.plugin["xep_0050"].send_command(
                bot, node, action="complete", payload=form, sessionid=command["sessionid"],
                timeout=15)
            command = iq["command"]
        # text-multi fields come back as lists of lines
        return command["status"], {k: "\n".join(v) if isinstance(v, list) else v
                                   for k, v in command["form"]["values"].items()}

    def close(self) -> None:
        self.x.disconnect()


@pytest.fixture
async def admin_stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.mark.parametrize("mode", ["client", "component"])
async def test_adhoc_commands_chat_commands_audit_and_forbidden(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack, mode: str
) -> None:
    store = tmp_path / "relations.sqlite3"
    audit = tmp_path / "audit.jsonl"
    config = write_config(server, mode, tmp_path / "rulebot.yaml", store=str(store),
                          admins=["admin@localhost"], audit={"path": str(audit)})
    bot = await run_bot(stack, config)
    # Client mode: the bot's resource answers (an IQ to the bare JID is the
    # server's); component mode: the component's JID.
    target = "friend@localhost/rulebot" if mode == "client" else bot_jid(server, mode)
    admin = AdminClient(server, "admin")
    await admin.connect()
    stack.callback(admin.close)
    alice = await connect_user(stack, server, "alice", bot_jid(server, mode))

    assert {"status", "reload", "explain", "silence-add", "silence-list", "silence-expire",
            "relations-add", "relations-remove", "relations-list"} <= set(
        await admin.commands(target))

    status, values = await admin.run(target, "status")
    assert status == "completed"
    assert values["text"].startswith("connected: yes; rules ")
    assert json.loads(values["data"])["connected"] is True

    # relations: add, list, remove (the store sees them)
    status, values = await admin.run(target, "relations-add", subject="alice@localhost",
                                     kind="vip", object="bob@localhost", ttl="1h")
    assert (status, values["text"].split(" until ")[0]) == (
        "completed", "alice@localhost vip bob@localhost added")
    with open_store(str(store)) as s:
        assert s.related("alice@localhost", "bob@localhost", "vip")
    _, values = await admin.run(target, "relations-list", subject="alice@localhost")
    assert json.loads(values["data"])[0]["object"] == "bob@localhost"
    _, values = await admin.run(target, "relations-remove", subject="alice@localhost",
                                kind="vip", object="bob@localhost")
    assert values["text"] == "alice@localhost vip bob@localhost removed"

    # explain the last event of a sender
    alice.send_event({"type": "chat", "id": "c1", "to": "nobody@localhost", "text": "x"})
    await receive(alice)  # not-a-member
    _, values = await admin.run(target, "explain", sender="alice@localhost")
    assert "chat-to-stranger matched" in values["text"]
    assert json.loads(values["data"])["winner"] == "chat-to-stranger"

    # silences: add takes effect at once, list, expire
    _, values = await admin.run(target, "silence-add", rule="chat-to-stranger", until="1h",
                                comment="testing")
    silence_id = json.loads(values["data"])["id"]
    alice.send_event({"type": "chat", "id": "c2", "to": "nobody@localhost", "text": "x"})
    refused = await receive(alice)  # muted: the catch-all rule after it answers
    assert (refused.rule, refused.error and refused.error["code"]) == (
        "unknown-type", "unknown-event-type")
    _, values = await admin.run(target, "silence-list")
    assert silence_id in values["text"]
    assert "by admin@localhost: testing" in values["text"]
    _, values = await admin.run(target, "silence-expire", id=silence_id)
    assert values["text"] == f"silence {silence_id} ended"

    # a failing command is an IQ error with its condition
    with pytest.raises(IqError) as missing:
        await admin.run(target, "silence-expire", id="nope")
    assert missing.value.condition == "item-not-found"

    # reload
    _, values = await admin.run(target, "reload")
    assert values["text"].startswith("reloaded: ")

    # The chat fallback: the same commands by message.
    admin_chat = await connect_user(stack, server, "admin", bot_jid(server, mode))
    admin_chat.send_raw("!silence-list")
    answer = await receive(admin_chat)
    assert (answer.payload["type"], answer.payload["command"], answer.payload["ok"]) == (
        "admin-result", "silence-list", True)
    assert answer.payload["text"] == "no silences in force"
    admin_chat.send_raw("!relations-add subject=alice@localhost kind=vip object=bob@localhost")
    assert (await receive(admin_chat)).payload["ok"] is True
    admin_chat.send_raw("!nonsense")
    bad = await receive(admin_chat)
    assert (bad.payload["ok"], bad.payload["condition"]) == (False, "bad-request")

    # Everyone else: forbidden, by ad-hoc command and by chat.
    carol = AdminClient(server, "carol")
    await carol.connect()
    stack.callback(carol.close)
    with pytest.raises(IqError) as forbidden:
        await carol.run(target, "status")
    assert forbidden.value.condition == "forbidden"
    # nor may she complete a session an admin started (slixmpp alone would let her)
    started = await admin.x.plugin["xep_0050"].send_command(target, "relations-add", timeout=15)
    form = carol.x.plugin["xep_0004"].make_form(ftype="submit")
    for var, value in (("subject", "carol@localhost"), ("kind", "admin"),
                       ("object", "friend@localhost")):
        form.add_field(var=var, value=value)
    with pytest.raises(IqError) as hijack:
        await carol.x.plugin["xep_0050"].send_command(
            target, "relations-add", action="complete", payload=form,
            sessionid=started["command"]["sessionid"], timeout=15)
    assert hijack.value.condition == "forbidden"
    with open_store(str(store)) as s:
        assert not s.related("carol@localhost", "friend@localhost", "admin")
    alice.send_raw("!status")
    refused_chat = await receive(alice)
    assert refused_chat.error is not None
    assert refused_chat.error["code"] == "forbidden"

    assert await bot.stop() == 0
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    actions = [(e["admin"], e["command"], e["via"], e["ok"]) for e in lines
               if e.get("kind") == "admin"]
    assert ("admin@localhost", "relations-add", "adhoc", True) in actions
    assert ("admin@localhost", "silence-add", "adhoc", True) in actions
    assert ("admin@localhost", "silence-expire", "adhoc", False) in actions
    assert ("admin@localhost", "relations-add", "chat", True) in actions
    assert ("carol@localhost", "status", "adhoc", False) in actions
    assert ("alice@localhost", "status", "chat", False) in actions
