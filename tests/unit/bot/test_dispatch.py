"""The daemon's stanza -> decision -> outbound path, driven with plain values (no XMPP)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from dispatching import CHAT, RULESET, dispatcher, msg

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound
from rulebot.config import parse_config
from rulebot.errors import StoreUnavailable
from rulebot.rules.loader import load_rules, parse_rules


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


# --------------------------------------------------------------------------
# a store that fails while the rules read it


LIMITED = """version: 1
rate_limits:
  chat: {rate: 10, per: minute, burst: 5}
rules:
  - name: too-fast
    match: "over_limit('chat', sender)"
    actions:
      - error: {code: rate-limited, message: slow down}
  - name: not-friends
    match: "!related(sender, event.to, 'friend')"
    actions:
      - error: {code: not-friends, message: not friends}
  - name: chat
    match: "event.type == 'chat'"
    actions:
      - forward: {to: event.to, payload: "event"}
"""


class Unreachable:
    """Buckets and relations of a store that cannot be reached."""

    def take(self, name: str, key: str, per_second: float, burst: int) -> bool:
        raise StoreUnavailable("postgresql://x: take a rate-limit token failed: connection lost")

    def related(self, subject: str, obj: str, kind: str) -> bool:
        raise StoreUnavailable("postgresql://x: read failed: connection lost")

    def objects(self, subject: str, kind: str) -> list[str]:
        return []

    def subjects(self, obj: str, kind: str) -> list[str]:
        return []

    def get(self, subject: str, obj: str, kind: str) -> None:
        return None


@pytest.mark.parametrize("failing", ["buckets", "relations"])
def test_a_store_failing_while_the_rules_read_it_refuses_the_event(
        tmp_path: Path, failing: str) -> None:
    # Not a rule error that lets the next rule decide: a rate limit that could
    # not be checked must not let the event through, nor a relation that could
    # not be read make the bot answer "not-friends".
    (tmp_path / "rules.yaml").write_text(LIMITED)
    ruleset = load_rules(tmp_path / "rules.yaml")
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": "rules.yaml"}),
                          base=tmp_path)
    broken = Unreachable()
    d = Dispatcher(config, lambda: ruleset,
                   relations=broken if failing == "relations" else None,
                   buckets=broken if failing == "buckets" else None)
    outcome = d.handle(msg(CHAT))
    assert outcome.status == "failed"
    assert outcome.reason == "store-unavailable"
    assert [(o.to, o.payload["error"]["code"]) for o in outcome.outbound] == [
        ("alice@localhost/phone", "store-unavailable")]
    assert "connection lost" in (outcome.error or "")


RATED = """
version: 1
rate_limits:
  chat: {rate: 1, per: minute, burst: 2}
rules:
  - name: too-fast
    match: "over_limit('chat', sender)"
    actions: [{error: {code: rate-limited, message: slow down}}]
  - name: ok
    actions: [{reply: {payload: "{ok: `true`}"}}]
"""


def test_shadow_decides_beside_the_live_set_without_spending_its_tokens() -> None:
    live = parse_rules(RATED)
    candidate = parse_rules(RATED.replace("burst: 2", "burst: 1"))
    d = Dispatcher(parse_config(json.dumps({"jid": "friend@localhost", "rules": "r"})),
                   lambda: live, shadow=lambda: candidate)
    outcomes = [d.handle(msg(CHAT)) for _ in range(3)]
    # The live set allows two (its burst) whatever the candidate takes ...
    assert [o.decision.matched for o in outcomes if o.decision] == [("ok",), ("ok",),
                                                                    ("too-fast",)]
    # ... and the candidate, with its own buckets, refuses from the second on.
    diffs = [o.shadow for o in outcomes]
    assert [bool(x) for x in diffs] == [False, True, False]
    assert diffs[1] is not None
    assert diffs[1].newly_matched == ("too-fast",)
    assert diffs[1].stopped_matching == ("ok",)


def test_no_shadow_set_loaded_means_no_shadow_decision() -> None:
    d = Dispatcher(parse_config(json.dumps({"jid": "friend@localhost", "rules": "r"})),
                   lambda: RULESET, shadow=lambda: None)
    assert d.handle(msg(CHAT)).shadow is None
    assert dispatcher().handle(msg(CHAT)).shadow is None


XML_NS = "urn:rulebot:example"  # declared in rules/00-vocabulary.yaml


def xml_msg(xml: str, **kw: Any) -> Inbound:
    """A message whose child elements are `xml` (parsed as the edge hands them over)."""
    import xml.etree.ElementTree as ET
    wrapper = ET.fromstring(f"<x xmlns='jabber:client'>{xml}</x>")
    return dataclasses.replace(msg(kw.pop("body", None), **kw), elements=tuple(wrapper))


def test_an_xml_event_is_decided_and_routed_in_the_senders_encoding() -> None:
    chat = f"<event xmlns='{XML_NS}' type='chat' id='x1' to='bob@localhost' text='hi'/>"
    outcome = dispatcher().handle(xml_msg("<active xmlns='http://jabber.org/protocol/"
                                          f"chatstates'/>{chat}", body="a fallback body"))
    assert outcome.status == "decided"
    assert outcome.envelope is not None
    assert outcome.envelope.event == {"type": "chat", "id": "x1", "to": "bob@localhost",
                                      "text": "hi"}
    (out,) = outcome.outbound
    assert (out.to, out.encoding) == ("bob@localhost", f"{{{XML_NS}}}event")
    assert (out.meta.rule, out.meta.event_id) == ("chat-to-member", "x1")


def test_an_xml_event_without_an_object_form_is_answered_with_an_error_in_xml() -> None:
    outcome = dispatcher().handle(xml_msg(f"<event xmlns='{XML_NS}' type='chat'>"
                                          "<a/><b/><a/></event>"))
    assert (outcome.status, outcome.reason) == ("rejected", "xml-interleaved")
    (out,) = outcome.outbound
    assert out.encoding == f"{{{XML_NS}}}event"
    assert out.payload["error"]["path"] == "/a"


def test_an_undeclared_namespace_is_not_an_event() -> None:
    outcome = dispatcher().handle(xml_msg("<event xmlns='urn:elsewhere' type='chat'/>"))
    assert (outcome.status, outcome.reason) == ("ignored", "no-payload")
    # ... and a body beside it is the event, as without the element
    outcome = dispatcher().handle(xml_msg("<event xmlns='urn:elsewhere'/>", body=CHAT))
    assert outcome.status == "decided"
    assert outcome.outbound[0].encoding == "body"


def test_the_configured_encoding_overrides_an_xml_senders() -> None:
    chat = f"<event xmlns='{XML_NS}' type='chat' id='x1' to='bob@localhost' text='hi'/>"
    (out,) = dispatcher(outgoing={"encoding": "json"}).handle(xml_msg(chat)).outbound
    assert out.encoding == "json"
