"""The daemon's stanza -> decision -> outbound path, driven with plain values (no XMPP)."""

from __future__ import annotations

import json

import pytest
from dispatching import CHAT, RULESET, dispatcher, msg

from rulebot.bot.values import Inbound


def test_chat_is_forwarded_with_metadata() -> None:
    outcome = dispatcher().handle(msg(CHAT))
    assert outcome.status == "decided"
    (out,) = outcome.outbound
    assert (out.to, out.encoding, out.type) == ("bob@localhost", "body", "chat")
    assert out.payload == {"type": "chat", "id": "e1", "from": "alice@localhost", "text": "hi"}
    assert (out.meta.sender, out.meta.rule, out.meta.event_id, out.meta.version) == (
        "alice@localhost", "chat-to-member", "e1", RULESET.version)
    assert outcome.event_id == "e1"


@pytest.mark.parametrize(
    ("inbound", "reason"),
    [
        pytest.param(msg(CHAT, sender="friend@localhost/rulebot"), "own-stanza",
                     id="own-stanza"),
        pytest.param(msg(CHAT, sender="friend@localhost/other"), "own-stanza",
                     id="own-other-resource"),
        pytest.param(msg(CHAT, sender="eve@evil.example/x"), "domain-not-allowed",
                     id="foreign-domain"),
        pytest.param(msg(CHAT, mtype="error"), "error-message", id="error-stanza"),
        pytest.param(msg(CHAT, mtype="groupchat"), "groupchat-message", id="groupchat"),
        pytest.param(msg(None), "no-payload", id="chat-state-without-body"),
        pytest.param(Inbound("presence", "alice@localhost/p", "subscribe"),
                     "presence-subscription", id="subscription-presence"),
    ],
)
def test_ignored_without_reply(inbound: Inbound, reason: str) -> None:
    outcome = dispatcher().handle(inbound)
    assert (outcome.status, outcome.reason, outcome.outbound) == ("ignored", reason, ())


def test_undecodable_payload_gets_error_in_same_encoding() -> None:
    outcome = dispatcher().handle(msg(None, container="{oops"))
    assert (outcome.status, outcome.reason) == ("rejected", "invalid-json")
    (out,) = outcome.outbound
    assert out.to == "alice@localhost/phone"
    assert out.encoding == "json"
    assert out.payload["error"]["code"] == "invalid-json"


def test_configured_encoding_overrides_the_senders() -> None:
    (out,) = dispatcher(outgoing={"encoding": "json", "message_type": "normal"}).handle(
        msg(CHAT)).outbound
    assert (out.encoding, out.type) == ("json", "normal")


def test_rule_error_reply_carries_the_event_id() -> None:
    event = json.dumps({"type": "announce", "id": 42, "text": "x"})
    (out,) = dispatcher().handle(msg(event)).outbound
    assert out.payload == {"error": {"code": "forbidden", "message": "only admins may announce",
                                     "id": 42}}


def test_schema_failure_is_a_rejection_with_path() -> None:
    outcome = dispatcher().handle(msg(json.dumps({"type": "chat", "to": 5, "text": "x"})))
    assert (outcome.status, outcome.reason) == ("rejected", "invalid-event")
    assert outcome.outbound[0].payload["error"]["path"] == "/to"


def test_presence_becomes_an_event_broadcast_to_members() -> None:
    outcome = dispatcher().handle(Inbound("presence", "carol@localhost/x", "available",
                                          show="away", status="lunch"))
    assert outcome.decision is not None
    assert outcome.decision.matched == ("member-presence",)
    assert [o.to for o in outcome.outbound] == ["alice@localhost", "bob@localhost",
                                                "admin@localhost"]
    assert outcome.outbound[0].payload == {"type": "presence", "from": "carol@localhost",
                                           "presence": "available", "show": "away",
                                           "status": "lunch"}


def test_outbound_ids_are_deterministic_per_stanza_so_recipients_can_deduplicate() -> None:
    d = dispatcher()
    first = d.handle(msg(CHAT, sid="same")).outbound[0].id
    again = d.handle(msg(CHAT, sid="same")).outbound[0].id
    other = d.handle(msg(CHAT, sid="other")).outbound[0].id
    assert first == again != other
    assert first.startswith("rb-")


def test_component_allows_its_parent_domain_by_default() -> None:
    d = dispatcher(mode="component", jid="friend.localhost")
    assert d.handle(msg(CHAT)).status == "decided"
    assert d.handle(msg(CHAT, sender="x@friend.localhost/r")).reason == "domain-not-allowed"
