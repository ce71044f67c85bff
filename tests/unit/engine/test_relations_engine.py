"""Relationships in rules: the read functions, relate/unrelate actions, presence."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from rulebot.engine.evaluate import evaluate
from rulebot.engine.render import decision_json
from rulebot.engine.state import Buckets, LiveState, MemoryRelations, PresenceTable
from rulebot.model import Envelope, Relate, Relation, Stanza, Unrelate
from rulebot.rules.loader import parse_rules

RULES = parse_rules(textwrap.dedent("""
    version: 1
    rules:
      - name: befriend
        match: "event.type == 'accept'"
        actions:
          - relate: {object: event.from, kind: friend, mutual: true,
                     attrs: "{since: event.at}"}
          - unrelate: {subject: event.from, object: sender, kind: requested}
      - name: block
        match: "event.type == 'block'"
        actions:
          - relate: {object: event.who, kind: blocked}
      - name: chat-friends
        match: "event.type == 'chat' && mutual(sender, event.to, 'friend')"
        actions:
          - forward: {to: event.to}
      - name: chat-offline-friend
        match: "event.type == 'chat' && related(sender, event.to, 'friend') && !online(event.to)"
        actions:
          - reply: {payload: "{type: 'offline', who: event.to}"}
      - name: status
        match: "event.type == 'status'"
        actions:
          - broadcast: {to: "related_to(sender, 'friend')",
                        payload: "{friends: related_to(sender, 'friend'),
                                   followers: related_from(sender, 'follows'),
                                   since: relation(sender, 'bob@x', 'friend').attrs.since}"}
"""))


def decide(event: dict[str, Any], relations: MemoryRelations,
           presence: PresenceTable | None = None, sender: str = "alice@x") -> Any:
    env = Envelope(event, sender, sender + "/r", Stanza("message", "chat", None), "friend@x")
    return evaluate(RULES, env, state=LiveState(relations, presence or PresenceTable(),
                                              Buckets(lambda: 0.0)))


def test_relate_and_unrelate_come_back_as_actions_and_change_nothing_themselves() -> None:
    store = MemoryRelations([Relation("bob@x", "alice@x", "requested")])
    decision = decide({"type": "accept", "from": "Bob@X/phone", "at": 7}, store)
    assert decision.actions == (
        Relate("alice@x", "bob@x", "friend", {"since": 7}, True, "befriend"),
        Unrelate("bob@x", "alice@x", "requested", False, "befriend"),
    )
    assert store.related("bob@x", "alice@x", "requested")  # the engine only decides
    store.apply([a for a in decision.actions if isinstance(a, Relate | Unrelate)])
    assert store.related("alice@x", "bob@x", "friend")
    assert store.related("bob@x", "alice@x", "friend")
    assert not store.related("bob@x", "alice@x", "requested")


@pytest.mark.parametrize(
    ("rows", "online", "expected"),
    [
        pytest.param([("alice@x", "bob@x"), ("bob@x", "alice@x")], True, "chat-friends",
                     id="mutual-friends-chat"),
        pytest.param([("alice@x", "bob@x")], False, "chat-offline-friend",
                     id="one-way-friend-offline"),
        pytest.param([("alice@x", "bob@x")], True, None, id="one-way-friend-online"),
        pytest.param([], False, None, id="strangers"),
    ],
)
def test_reads_in_match(rows: list[tuple[str, str]], online: bool, expected: str | None
                        ) -> None:
    store = MemoryRelations([Relation(s, o, "friend") for s, o in rows])
    presence = PresenceTable()
    if online:
        presence.update("bob@x/laptop", True)
    decision = decide({"type": "chat", "to": "bob@x", "text": "hi"}, store, presence)
    assert decision.matched == ((expected,) if expected else ())


def test_reads_in_action_parameters() -> None:
    store = MemoryRelations([
        Relation("alice@x", "bob@x", "friend", {"since": 2019}),
        Relation("alice@x", "carol@x", "friend"),
        Relation("dave@x", "alice@x", "follows"),
    ])
    out = decision_json(decide({"type": "status"}, store))
    (action,) = out["actions"]
    assert action["to"] == ["bob@x", "carol@x"]
    assert action["payload"] == {"friends": ["bob@x", "carol@x"], "followers": ["dave@x"],
                                 "since": 2019}


def test_relate_with_a_bad_jid_makes_the_rule_not_match() -> None:
    decision = decide({"type": "block", "who": "not a jid"}, MemoryRelations())
    assert decision.matched == ()
    assert "object must be a JID" in decision.errors[0].message


def test_presence_table_tracks_resources() -> None:
    table = PresenceTable()
    table.update("Bob@X/a", True)
    table.update("bob@x/b", True)
    assert table.online("bob@x")
    assert table.online("bob@x/a")
    assert not table.online("bob@x/c")
    table.update("bob@x/a", False)
    assert table.online("bob@x")
    table.update("bob@x/b", False)
    assert not table.online("bob@x")


def test_no_state_means_nothing_is_related() -> None:
    env = Envelope({"type": "chat", "to": "bob@x"}, "alice@x", "alice@x/r",
                   Stanza("message", "chat", None), "friend@x")
    assert evaluate(RULES, env).matched == ()


def test_rate_limit_buckets_refill_on_the_injected_clock() -> None:
    from rulebot.engine.state import Buckets

    now = [0.0]
    rules = parse_rules(textwrap.dedent("""
        version: 1
        rate_limits:
          chat: {rate: 2, per: second, burst: 2}
        rules:
          - name: too-fast
            match: "over_limit('chat', sender)"
            actions: [{error: {code: rate-limited, message: slow down}}]
          - name: ok
            actions: [{reply: {payload: "{ok: `true`}"}}]
    """))
    state = LiveState(MemoryRelations(), PresenceTable(), Buckets(lambda: now[0]))

    def who(sender: str) -> tuple[str, ...]:
        env = Envelope({}, sender, sender + "/r", Stanza("message", "chat", None), "friend@x")
        return evaluate(rules, env, state=state).matched

    assert [who("a@x") for _ in range(3)] == [("ok",), ("ok",), ("too-fast",)]
    assert who("b@x") == ("ok",)  # per key
    now[0] += 0.5  # one token back at 2/s
    assert [who("a@x") for _ in range(2)] == [("ok",), ("too-fast",)]


def test_unknown_rate_limit_is_a_validate_error() -> None:
    from rulebot.errors import RuleSetError

    with pytest.raises(RuleSetError, match="unknown rate limit 'nope'"):
        parse_rules("version: 1\nrules:\n  - name: r\n    match: \"over_limit('nope', sender)\"\n"
                    "    actions: [{drop: {}}]\n")
