"""Rule-set shapes of a growing service, for the match index (bench/engine.py, table 2).

Each shape is a function n -> (YAML text of an n-rule file, event stream maker).
Rules are told apart by equality or membership tests on some envelope field,
the way per-room, per-tenant and per-sender logic is written, except in
`unindexable`, whose rules the index cannot tell apart (it shows what an index
costs when it cannot help).

  per-room     one type, n rooms: `event.type == 'chat' && event.room == 'room-K'
               && in_list('members', sender)` -> broadcast to the room's five
               members (a literal list); a last rule answers unknown rooms.
  per-tenant   10 types x n/10 tenants: `event.type == 'T' && event.tenant == 'tenK'`
               -> forward a computed payload to the tenant's ops JID.
  per-sender   n senders, each with an allow list of recipients:
               `sender == 'uK@...' && contains(`[five JIDs]`, event.to)` -> forward;
               a last rule refuses everything else.
  mixed        a third of each of the above (distinct names) and one admin command
               per 100 rules, shuffled; between a first and a last rule that no key
               test indexes (a regex on the sender, a negation).
  unindexable  n rules `event.priority >= `p` && regex_match('^wordK', event.text)`:
               an ordering first, so no rule can be skipped.

Events: 90% aimed at an existing room / tenant / sender, 10% at none.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from rulebot.model import JSON, Envelope, Stanza

BOT = "bot@example.org"
MEMBERS = [f"m{i}@example.org" for i in range(50)]
TYPES = ["order", "refund", "invoice", "ticket", "chat", "alert", "report", "ship", "quote",
         "audit"]
Shape = Callable[[int], tuple[str, Callable[[int, int], list[Envelope]]]]


def _q(text: str) -> str:
    return json.dumps(text)


def _rule(name: str, match: str, action: str) -> list[str]:
    return [f"  - name: {name}", f"    match: {_q(match)}", "    actions:", f"      - {action}"]


def _head(lists: dict[str, list[str]] | None = None) -> list[str]:
    lists = {"members": MEMBERS, **(lists or {})}
    return ["version: 1", "default: drop", "lists:",
            *(f"  {k}: {json.dumps(v)}" for k, v in lists.items()), "rules:"]


def _env(event: dict[str, JSON], sender: str, i: int) -> Envelope:
    return Envelope(event, sender, sender + "/app", Stanza("message", "normal", f"s{i}"), BOT)


def _room_rules(n: int, prefix: str, rng: random.Random) -> list[list[str]]:
    return [_rule(f"{prefix}room-{k}",
                  f"event.type == 'chat' && event.room == '{prefix}room-{k}' "
                  "&& in_list('members', sender)",
                  "broadcast: {to: {value: " + json.dumps(rng.sample(MEMBERS, 5))
                  + "}, payload: " + _q("{type: 'chat', room: event.room, from: sender, "
                                        "text: event.text}") + "}")
            for k in range(n)]


def per_room(n: int) -> tuple[str, Callable[[int, int], list[Envelope]]]:
    rng = random.Random(n)
    lines = _head()
    for rule in _room_rules(n - 1, "", rng):
        lines.extend(rule)
    lines.extend(_rule("unknown-room", "event.type == 'chat'",
                       "error: {code: no-such-room, message: no such room}"))

    def events(count: int, seed: int) -> list[Envelope]:
        r = random.Random(seed)
        return [_env({"type": "chat", "id": i, "text": "hello",
                      "room": f"room-{r.randrange(n - 1) if r.random() < 0.9 else 'x'}"},
                     r.choice(MEMBERS), i) for i in range(count)]
    return "\n".join(lines) + "\n", events


def _tenant_rules(n: int, prefix: str) -> list[list[str]]:
    tenants = -(-n // len(TYPES))
    return [_rule(f"{prefix}{t}-ten{k}", f"event.type == '{t}' && event.tenant == '{prefix}ten{k}'",
                  "forward: {to: " + _q(f"'ops@{prefix}ten{k}.example.org'") + ", payload: "
                  + _q(f"{{type: '{t}', id: event.id, from: sender, tenant: event.tenant}}")
                  + "}")
            for k in range(tenants) for t in TYPES][:n]


def per_tenant(n: int) -> tuple[str, Callable[[int, int], list[Envelope]]]:
    lines = _head()
    for rule in _tenant_rules(n, ""):
        lines.extend(rule)
    tenants = n // len(TYPES)  # tenants with every type

    def events(count: int, seed: int) -> list[Envelope]:
        r = random.Random(seed)
        return [_env({"type": r.choice(TYPES), "id": i,
                      "tenant": f"ten{r.randrange(tenants) if r.random() < 0.9 else 'x'}"},
                     r.choice(MEMBERS), i) for i in range(count)]
    return "\n".join(lines) + "\n", events


def _sender_rules(n: int, prefix: str, rng: random.Random) -> list[list[str]]:
    return [_rule(f"{prefix}u{k}", f"sender == '{prefix}u{k}@example.org' && "
                  f"contains(`{json.dumps(rng.sample(MEMBERS, 5))}`, event.to)",
                  "forward: {to: event.to}")
            for k in range(n)]


def per_sender(n: int) -> tuple[str, Callable[[int, int], list[Envelope]]]:
    rng = random.Random(n)
    lines = _head()
    for rule in _sender_rules(n - 1, "", rng):
        lines.extend(rule)
    lines.extend(_rule("not-allowed", "stanza.kind == 'message'",
                       "error: {code: forbidden, message: not on your allow list}"))

    def events(count: int, seed: int) -> list[Envelope]:
        r = random.Random(seed)
        return [_env({"type": "send", "id": i, "to": r.choice(MEMBERS)},
                     f"u{r.randrange(n - 1)}@example.org" if r.random() < 0.9
                     else "stranger@example.org", i) for i in range(count)]
    return "\n".join(lines) + "\n", events


def mixed(n: int) -> tuple[str, Callable[[int, int], list[Envelope]]]:
    rng = random.Random(n)
    admin = max(1, n // 100)
    quarter = (n - admin - 2) // 3
    senders = n - admin - 2 - 2 * quarter
    blocks = [*_room_rules(quarter, "a", rng), *_tenant_rules(quarter, "b"),
              *_sender_rules(senders, "c", rng),
              *(_rule(f"admin-{k}", f"event.type == 'command' && event.name == 'cmd{k}' "
                      "&& in_list('members', sender)", "reply: {payload: \"{type: 'ok'}\"}")
                for k in range(admin))]
    rng.shuffle(blocks)  # a growing service's rules, not sorted by kind
    lines = _head()
    # Two rules no key test can index, first and last: they are tried for every event.
    lines.extend(_rule("no-spam", "regex_match('^spam', sender)", "drop: {reason: spam}"))
    for rule in blocks:
        lines.extend(rule)
    lines.extend(_rule("unhandled", "!(event.handled)",
                       "error: {code: unhandled, message: nothing handles this}"))
    tenants = max(1, quarter // len(TYPES))  # tenants with every type

    def events(count: int, seed: int) -> list[Envelope]:
        r = random.Random(seed)
        out = []
        for i in range(count):
            pick = r.random()
            sender = r.choice(MEMBERS)
            if pick < 0.3:
                event: dict[str, JSON] = {"type": "chat", "id": i, "text": "hi",
                                          "room": f"aroom-{r.randrange(max(1, quarter))}"}
            elif pick < 0.6:
                event = {"type": r.choice(TYPES), "id": i,
                         "tenant": f"bten{r.randrange(tenants)}"}
            elif pick < 0.9:
                event = {"type": "send", "id": i, "to": r.choice(MEMBERS)}
                sender = f"cu{r.randrange(max(1, senders))}@example.org"
            else:
                event = {"type": "command", "id": i, "name": f"cmd{r.randrange(admin)}"}
            out.append(_env(event, sender, i))
        return out
    return "\n".join(lines) + "\n", events


def unindexable(n: int) -> tuple[str, Callable[[int, int], list[Envelope]]]:
    words = [f"w{k}" for k in range(n)]
    lines = _head()
    for k, word in enumerate(words):
        lines.extend(_rule(f"word-{k}", f"event.priority >= `{k % 5}` && "
                           f"regex_match('^{word}\\b', event.text)",
                           "reply: {payload: \"{type: 'seen', id: event.id}\"}"))

    def events(count: int, seed: int) -> list[Envelope]:
        r = random.Random(seed)
        return [_env({"type": "note", "id": i, "priority": r.randrange(5),
                      "text": f"{r.choice(words)} text"}, r.choice(MEMBERS), i)
                for i in range(count)]
    return "\n".join(lines) + "\n", events


SHAPES: dict[str, Shape] = {
    "per-room": per_room, "per-tenant": per_tenant, "per-sender": per_sender,
    "mixed": mixed, "unindexable": unindexable,
}
