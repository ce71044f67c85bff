"""Kill -9 runs against a real server: the bot is killed at points chosen by what
the users have received, restarted at once with the same config, and the users'
every delivery (duplicates included) is checked afterwards.

Three scenarios, each on Prosody or ejabberd, with the servers' garbage
collectors as packaged ("stock", what an operator gets from docs/servers.md
without the tuning section) or as the project tunes them ("tuned"):

* backlog: the bot is stopped cleanly, the senders write every event, the
  server stores them offline, the bot starts and is killed while it works
  through its offline storage (the login window);
* burst: two senders write every event at once while the bot runs, so the
  server's queue for the bot holds thousands of stanzas when it is killed;
* stateful: pairs of users go through friend request -> accept -> chat ->
  unfriend cycles with the shipped rules/friends, each step waiting for the
  answer to the previous one, so that deciding an event twice shows (an
  `already-friends`, `no-request` or `not-friends` answer, or a message under
  a second id).

What is checked (Report): every event had its effect (lost), every message
that reached a user for one event and one recipient carried one id and one
content (second decisions), and no error answer came where the cycle expects
none. Duplicates (the same id delivered again) are counted, not refused: that
is what a resumed stream does, and recipients drop them by id.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import ROOT, USERS, BotProcess, kill_at_exit, start_bot, write_config

from rulebot.client import Received, RulebotClient, parse_message
from rulebot.wire.encode import JSON_NS
from scripts import xmppserver

FRIENDS = ROOT / "rules" / "friends"
WAIT = 60.0  # seconds without any new message after which what is missing is lost


class Recorder(RulebotClient):
    """A user that keeps every message from the bot, duplicates included."""

    def __init__(self, *args: Any, on_message: Callable[[], None] | None = None,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.all: list[Received] = []
        self.bounced: set[str] = set()  # ids of our messages the server bounced
        self.on_new = on_message
        self.changed = asyncio.Event()
        self.xmpp.add_event_handler("message_error", self._on_bounce)

    def _on_bounce(self, msg: Any) -> None:
        # The server could not deliver one of our messages to the bot (component
        # mode while it is down); Prosody's bounce has no body, only the id.
        self.bounced.add(str(msg["id"]))
        self.changed.set()

    def _on_message(self, msg: Any, from_json_handler: bool = False) -> None:
        has_json = msg.xml.find(f"{{{JSON_NS}}}json") is not None
        if (from_json_handler or not has_json) and msg["type"] != "error" \
                and self._from_bot(str(msg["from"])):
            received = parse_message(msg)
            if received is not None:
                before = self.duplicates
                self.all.append(received)
                super()._on_message(msg, from_json_handler)
                self.changed.set()
                if self.duplicates == before and self.on_new is not None:
                    self.on_new()
                return
        super()._on_message(msg, from_json_handler)


@dataclass
class Report:
    scenario: str
    events: int
    kills: int = 0
    lost: list[str] = field(default_factory=list)
    second_decisions: list[str] = field(default_factory=list)
    deliveries: int = 0
    duplicates: int = 0
    story: list[str] = field(default_factory=list)
    sessions: Counter[str] = field(default_factory=Counter)  # resumed/new/stream errors

    bounced: int = 0  # component mode: events the server bounced to their senders

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "events": self.events, "kills": self.kills,
                "lost": len(self.lost), "second_decisions": len(self.second_decisions),
                "deliveries": self.deliveries, "duplicates": self.duplicates,
                "bounced": self.bounced, "sessions": dict(self.sessions)}

    def save(self, extra: dict[str, Any]) -> None:
        """Append the report as a JSON line to $RULEBOT_CRASH_REPORT, if set (make
        soak collects them for scripts/crash_summary.py)."""
        path = os.environ.get("RULEBOT_CRASH_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**self.to_json(), **extra}) + "\n")

    def line(self) -> str:
        return (f"{self.scenario}: {self.events} events, {self.kills} kills, "
                f"{len(self.lost)} lost, {len(self.second_decisions)} second decisions, "
                f"{self.deliveries} deliveries, {self.duplicates} duplicates, "
                f"{self.bounced} bounced; "
                f"sessions {dict(sorted(self.sessions.items()))}")

    def check(self) -> None:
        told = (f"{self.line()}\nlost e.g. {self.lost[:5]}\nsecond decisions e.g. "
                f"{self.second_decisions[:5]}\n" + "\n".join(self.story[-30:]))
        assert not self.lost, told
        assert not self.second_decisions, told


class Killer:
    """Runs the bot, kills it with SIGKILL when the users' count of new messages
    reaches each threshold, and restarts it at once with the same config."""

    def __init__(self, stack: AsyncExitStack, config: Path, thresholds: list[int]) -> None:
        self.stack = stack
        self.config = config
        self.thresholds = sorted(thresholds)
        self.count = 0
        self.kills = 0
        self.bots: list[BotProcess] = []
        self.bot: BotProcess | None = None
        self.ready = False
        self._killed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> BotProcess:
        bot = await start_bot(self.config)
        kill_at_exit(self.stack, bot)
        self.bots.append(bot)
        self.bot = bot
        self.ready = False
        await bot.connected()
        self.ready = True  # kills land on a bot at work, not on one starting up
        # A resumed bot re-sends at once what its records hold: the users' count
        # can pass the next threshold before its "connected" line is read here.
        # Then the kill lands now, on the first moment the bot is known at work.
        self._kill_if_due()
        return bot

    def new_message(self) -> None:
        """A user got a new message (called from the users' handlers, synchronously,
        so that the kill lands right after that message)."""
        self.count += 1
        self._kill_if_due()

    def _kill_if_due(self) -> None:
        if self.thresholds and self.count >= self.thresholds[0] and self.bot is not None \
                and self.ready and self.bot.proc.returncode is None:
            self.thresholds.pop(0)
            self.bot.proc.send_signal(signal.SIGKILL)
            self.ready = False
            self.kills += 1
            self._killed.set()

    async def run(self) -> None:
        """Restart the bot after each kill until stopped."""
        self._task = asyncio.current_task()  # type: ignore[assignment]
        while True:
            await self._killed.wait()
            self._killed.clear()
            assert self.bot is not None
            await self.bot.proc.wait()
            await self.start()

    def sessions(self) -> Counter[str]:
        """How the bots' sessions went: resumed, new, stream errors by condition."""
        seen: Counter[str] = Counter()
        for bot in self.bots:
            for e in bot.logs:
                if e.get("event") == "connected":
                    seen["resumed" if e.get("resumed") else "new"] += 1
                elif e.get("event") == "stream_error":
                    seen[f"stream error {e.get('condition')}"] += 1
                elif e.get("event") == "resume_unverified":
                    seen["resume unverified"] += 1
        return seen

    def story(self) -> list[str]:
        keep = ("sm_restore", "connected", "disconnected", "reconnect", "stream_error",
                "resume_unverified", "starting", "fatal", "internal_error", "duplicate")
        lines = []
        for n, bot in enumerate(self.bots):
            for e in bot.logs:
                if e.get("event") in keep or e.get("level") in ("ERROR", "WARNING"):
                    lines.append(f"bot{n}: {e}")
        return lines


def thresholds(rng: random.Random, expected: int, kills: int) -> list[int]:
    """Kill points spread over the run: the i-th in the i-th slice of 10-90%."""
    lo, hi = int(expected * 0.1), int(expected * 0.9)
    span = max(1, (hi - lo) // max(1, kills))
    return [lo + i * span + rng.randrange(span) for i in range(kills)]


async def connect(stack: AsyncExitStack, server: xmppserver.ServerInfo, user: str,
                  password: str, on_message: Callable[[], None] | None) -> Recorder:
    client = Recorder(f"{user}@localhost", password, "friend@localhost", host=server.host,
                      port=server.c2s_port, ca_file=server.ca_file, on_message=on_message)
    await client.connect()
    stack.push_async_callback(client.close)
    return client


def second_decisions(users: dict[str, Recorder]) -> tuple[list[str], int, int]:
    """Messages for one (event, recipient) under more than one id, or one id with
    two contents: signs that an event was decided twice. Also the number of
    deliveries and of duplicates."""
    problems: list[str] = []
    deliveries = duplicates = 0
    for name, user in users.items():
        by_event: dict[tuple[str | None, str | None], set[str | None]] = defaultdict(set)
        by_id: dict[str | None, set[str]] = defaultdict(set)
        for r in user.all:
            deliveries += 1
            by_event[(r.sender, r.event_id)].add(r.stanza_id)
            by_id[r.stanza_id].add(repr(sorted(r.payload.items())))
        duplicates += user.duplicates
        for key, ids in by_event.items():
            if len(ids) > 1:
                problems.append(f"{name} got event {key} under {len(ids)} ids")
        for mid, contents in by_id.items():
            if len(contents) > 1:
                problems.append(f"{name} got id {mid} with {len(contents)} contents")
    return problems, deliveries, duplicates


async def wait_until(done: Callable[[], bool], users: list[Recorder], idle: float = WAIT,
                     cap: float = 600.0) -> None:
    """Until done(), or until no user got anything for `idle` seconds (a stall: what
    is missing is not coming), or `cap` seconds in all."""
    loop = asyncio.get_running_loop()
    end = loop.time() + cap
    while not done():
        now = loop.time()
        if now >= end:
            return
        for u in users:
            u.changed.clear()
        waiters = [asyncio.ensure_future(u.changed.wait()) for u in users]
        finished, _ = await asyncio.wait(waiters, timeout=min(idle, end - now),
                                         return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if not finished and not done():
            return  # stalled


# --------------------------------------------------------------------------
# chat scenarios: backlog and burst


SENDERS = ("alice", "carol")


async def run_chat(scenario: str, server: xmppserver.ServerInfo, workdir: Path,
                   stack: AsyncExitStack, events: int, kills: int, seed: int) -> Report:
    """`events` chat events from two senders to bob with the shipped rules/, the bot
    killed `kills` times; scenario "backlog" or "burst"."""
    rng = random.Random(seed)
    per_sender = events // len(SENDERS)
    total = per_sender * len(SENDERS)
    config = write_config(server, "client", workdir / "rulebot.yaml")
    killer = Killer(stack, config, thresholds(rng, total, kills))
    bob = await connect(stack, server, "bob", USERS["bob"], killer.new_message)
    senders = [await connect(stack, server, s, USERS[s], None) for s in SENDERS]
    first = await killer.start()
    if scenario == "backlog":
        # Stopped cleanly: the events wait in the bot's offline storage.
        assert await first.stop() == 0
    for client in senders:
        name = client.jid.split("@")[0]
        for i in range(per_sender):
            client.send_event({"type": "chat", "to": "bob@localhost", "text": f"{name}-{i}",
                               "id": f"{name}-{i}"})
    if scenario == "backlog":
        for client in senders:
            await client.flush(timeout=60)  # the server has stored every event
        killer.bot = None
        await killer.start()
    restarts = asyncio.ensure_future(killer.run())
    expected = {f"{s}-{i}" for s in SENDERS for i in range(per_sender)}

    def got() -> set[str]:
        return {str(r.payload.get("text")) for r in bob.all}

    await wait_until(lambda: not killer.thresholds and expected <= got(), [bob])
    restarts.cancel()
    report = Report(f"{server.kind} {scenario}", total, killer.kills)
    report.lost = sorted(expected - got())
    report.second_decisions, report.deliveries, report.duplicates = second_decisions(
        {"bob": bob})
    report.story = killer.story()
    report.sessions = killer.sessions()
    if killer.thresholds:
        report.story.append(f"kills not done: thresholds {killer.thresholds} "
                            f"at count {killer.count}")
    return report


async def run_component(server: xmppserver.ServerInfo, workdir: Path, stack: AsyncExitStack,
                        events: int, seed: int) -> Report:
    """Component mode, one kill mid-stream, senders that do not retry: what is lost.
    XEP-0114 has no acknowledgements: what the server routed to the dead
    connection is gone, and while no component is connected the server
    bounces messages to their senders."""
    rng = random.Random(seed)
    per_sender = events // len(SENDERS)
    total = per_sender * len(SENDERS)
    config = write_config(server, "component", workdir / "rulebot.yaml")
    killer = Killer(stack, config, thresholds(rng, total, 1))
    bot = server.component_jid

    async def user(name: str, on_new: Callable[[], None] | None) -> Recorder:
        client = Recorder(f"{name}@localhost", USERS[name], bot, host=server.host,
                          port=server.c2s_port, ca_file=server.ca_file, on_message=on_new)
        await client.connect()
        stack.push_async_callback(client.close)
        return client

    bob = await user("bob", killer.new_message)
    senders = [await user(s, None) for s in SENDERS]
    await killer.start()
    restarts = asyncio.ensure_future(killer.run())
    stanza_ids: dict[str, str] = {}  # stanza id -> text
    for client in senders:
        name = client.jid.split("@")[0]
        for i in range(per_sender):
            text = f"{name}-{i}"
            _, sid = client._send({"type": "chat", "to": "bob@localhost", "text": text,
                                   "id": text})
            stanza_ids[sid] = text
            if i % 50 == 49:
                await client.flush()  # paced: the kill lands mid-stream
    expected = set(stanza_ids.values())

    def accounted() -> set[str]:
        got = {str(r.payload.get("text")) for r in bob.all}
        return got | {stanza_ids[b] for c in senders for b in c.bounced if b in stanza_ids}

    await wait_until(lambda: not killer.thresholds and expected <= accounted(),
                     [bob, *senders], idle=15)
    restarts.cancel()
    report = Report(f"{server.kind} component", total, killer.kills)
    delivered = {str(r.payload.get("text")) for r in bob.all}
    bounced = {stanza_ids[b] for c in senders for b in c.bounced if b in stanza_ids}
    report.bounced = len(bounced - delivered)
    report.lost = sorted(expected - delivered - bounced)  # lost without a word
    report.second_decisions, report.deliveries, report.duplicates = second_decisions(
        {"bob": bob})
    report.story = killer.story()
    report.sessions = killer.sessions()
    return report


# --------------------------------------------------------------------------
# the stateful scenario: friend cycles


STEPS = ("friend-request", "friend-accept", "chat", "unfriend")
#: what each recipient gets for each step of a cycle of (a, b)
ANSWERS = {
    "friend-request": {"b": "friend-request", "a": "friend-request-sent"},
    "friend-accept": {"a": "friend-accepted", "b": "friends"},
    "chat": {"b": "chat"},
    "unfriend": {"a": "unfriended"},
}


def stateful_users(pairs: int) -> dict[str, str]:
    users = {f"u{n}": f"u{n}-pw" for n in range(2 * pairs)}
    users["friend"] = USERS["friend"]
    return users


async def run_stateful(server: xmppserver.ServerInfo, workdir: Path, stack: AsyncExitStack,
                       pairs: int, cycles: int, kills: int, seed: int) -> Report:
    """`pairs` pairs of users each doing `cycles` friend cycles (4 events each)."""
    rng = random.Random(seed)
    config = write_config(server, "client", workdir / "rulebot.yaml", rules=FRIENDS,
                          store=str(workdir / "relations.sqlite3"))
    expected_messages = pairs * cycles * sum(len(v) for v in ANSWERS.values())
    killer = Killer(stack, config, thresholds(rng, expected_messages, kills))
    users: dict[str, Recorder] = {}
    for n in range(2 * pairs):
        users[f"u{n}"] = await connect(stack, server, f"u{n}", f"u{n}-pw", killer.new_message)
    await killer.start()
    restarts = asyncio.ensure_future(killer.run())
    stalled: list[str] = []

    async def has(user: Recorder, kind: str, event_id: str) -> bool:
        def seen() -> bool:
            return any(r.payload.get("type") == kind and r.event_id == event_id
                       for r in user.all)
        await wait_until(seen, [user])
        return seen()

    async def pair(k: int) -> None:
        a, b = users[f"u{2 * k}"], users[f"u{2 * k + 1}"]
        aj, bj = f"u{2 * k}@localhost", f"u{2 * k + 1}@localhost"
        for c in range(cycles):
            tag = f"p{k}c{c}"
            a.send_event({"type": "friend-request", "to": bj, "id": f"{tag}-req"})
            if not await has(b, "friend-request", f"{tag}-req"):
                stalled.append(f"{tag}: {bj} never got the request")
                return
            b.send_event({"type": "friend-accept", "to": aj, "id": f"{tag}-acc"})
            if not await has(a, "friend-accepted", f"{tag}-acc"):
                stalled.append(f"{tag}: {aj} never got the acceptance")
                return
            a.send_event({"type": "chat", "to": bj, "text": tag, "id": f"{tag}-chat"})
            a.send_event({"type": "unfriend", "to": bj, "id": f"{tag}-unf"})
            if not await has(a, "unfriended", f"{tag}-unf"):
                stalled.append(f"{tag}: {aj} never got the unfriend answer")
                return

    await asyncio.gather(*(pair(k) for k in range(pairs)))
    # The last chats and answers that no step waited for.
    expected = expected_stateful(pairs, cycles)

    def missing() -> list[str]:
        return missing_stateful(users, expected)

    await wait_until(lambda: not missing(), list(users.values()))
    restarts.cancel()
    report = Report(f"{server.kind} stateful", pairs * cycles * len(STEPS), killer.kills)
    report.lost = stalled + missing()
    problems, report.deliveries, report.duplicates = second_decisions(users)
    errors = Counter(f"{name} got error {r.error['code']} for {r.event_id}"
                     for name, u in users.items() for r in u.all if r.error is not None)
    report.second_decisions = problems + sorted(errors)
    report.story = killer.story()
    report.sessions = killer.sessions()
    return report


def expected_stateful(pairs: int, cycles: int) -> dict[str, set[tuple[str, str]]]:
    """user -> {(payload type, event id)} that one decision of every event gives."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    suffix = {"friend-request": "req", "friend-accept": "acc", "chat": "chat",
              "unfriend": "unf"}
    for k in range(pairs):
        who = {"a": f"u{2 * k}", "b": f"u{2 * k + 1}"}
        for c in range(cycles):
            for step, answers in ANSWERS.items():
                for role, kind in answers.items():
                    out[who[role]].add((kind, f"p{k}c{c}-{suffix[step]}"))
    return out


def missing_stateful(users: dict[str, Recorder],
                     expected: dict[str, set[tuple[str, str]]]) -> list[str]:
    gone = []
    for name, want in expected.items():
        have = {(str(r.payload.get("type")), str(r.event_id)) for r in users[name].all}
        gone += [f"{name}: {kind} for {eid}" for kind, eid in sorted(want - have)]
    return gone


def sizes() -> dict[str, int]:
    """Run sizes from the environment (make soak sets them larger)."""
    return {
        "events": int(os.environ.get("RULEBOT_CRASH_EVENTS", "1000")),
        "kills": int(os.environ.get("RULEBOT_CRASH_KILLS", "2")),
        "pairs": int(os.environ.get("RULEBOT_CRASH_PAIRS", "5")),
        "cycles": int(os.environ.get("RULEBOT_CRASH_CYCLES", "20")),
        "seed": int(os.environ.get("RULEBOT_CRASH_SEED", "1")),
    }
