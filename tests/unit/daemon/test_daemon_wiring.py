"""The daemon's wiring, through a fake connection (rulebot.daemon.app.Connection):
inbound -> decision -> sends, messages held until their read is recorded, the
reload swap, a failing store -> store-unavailable and nothing else sent, and
the shutdown drain. No server: the real connection is tests/integration's."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rulebot.bot.values import Inbound, Outbound
from rulebot.config import Config, parse_config
from rulebot.daemon.app import EXIT_OK, Daemon
from rulebot.daemon.ledger import stored_entries
from rulebot.rules.loader import load_rules
from rulebot.store.base import RelationStore, StoreError
from rulebot.store.open import open_store

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class FakeConnection:
    """Reads are handed in by the test; sends are kept."""

    on_inbound: Callable[[Inbound], None]
    on_read_done: Callable[[], None]
    on_confirmed: Callable[[str, int], None] | None
    online: bool = False
    queue: list[Outbound] = field(default_factory=list)
    in_read: bool = False
    sent: list[Outbound] = field(default_factory=list)
    #: (to, stanza id) of each receipt, and how many messages were sent before it
    receipts: list[tuple[str, str, int]] = field(default_factory=list)
    #: what the daemon had recorded when each message was sent
    records_at_send: list[int] = field(default_factory=list)
    records: Callable[[], int] = lambda: 0
    handled: int = 0
    drained: bool = False
    up: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, out: Outbound, payload_json: str | None = None) -> None:
        self.sent.append(out)
        self.records_at_send.append(self.records())
        if payload_json is not None:  # the text the records hold is the text sent
            assert json.loads(payload_json) == out.payload

    def receipt(self, to: str, stanza_id: str) -> None:
        self.receipts.append((to, stanza_id, len(self.sent)))

    def unacked(self) -> int:
        return 0

    def recovered(self) -> int:
        return 0

    def stream_position(self) -> tuple[str, int] | None:
        return ("sm-1", self.handled)

    async def run(self, stop: asyncio.Event) -> None:
        self.online = True
        self.up.set()
        await stop.wait()
        self.drained = True  # the real one: unavailable presence, a ping round trip
        self.online = False

    def read(self, *stanzas: Inbound) -> None:
        """One read from the server: its stanzas, then the end of the read."""
        self.in_read = True
        for stanza in stanzas:
            self.handled += 1
            self.on_inbound(stanza)
        self.on_read_done()
        self.in_read = False


@dataclass
class Running:
    daemon: Daemon
    conn: FakeConnection
    store: RelationStore
    stop: asyncio.Event
    task: asyncio.Task[int]


def config_for(tmp_path: Path, rules: Path) -> Config:
    text = json.dumps({"jid": "friend@localhost", "rules": str(rules),
                       "store": str(tmp_path / "store.sqlite3"),
                       "sm_state_file": str(tmp_path / "sm.json"),
                       "reload": {"watch": False}})
    return parse_config(text, base=tmp_path)


def fake_connector(made: list[FakeConnection]) -> Callable[..., FakeConnection]:
    """A Daemon's `connect`: the fake connection it makes goes into `made`."""
    def connect(_config: Config, _secret: str, on_inbound: Callable[[Inbound], None],
                on_read_done: Callable[[], None],
                on_confirmed: Callable[[str, int], None] | None) -> FakeConnection:
        made.append(FakeConnection(on_inbound, on_read_done, on_confirmed))
        return made[-1]
    return connect


@pytest.fixture
async def running(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / getattr(request, "param", "rules"), rules)
    config = config_for(tmp_path, rules)
    store = open_store(config.store)
    made: list[FakeConnection] = []
    daemon = Daemon(config, "secret", load_rules(rules), store, connect=fake_connector(made))
    conn = made[0]
    assert daemon.ledger is not None
    ledger = daemon.ledger
    conn.records = lambda: ledger.written
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run(stop))
    await asyncio.wait_for(conn.up.wait(), 5)
    yield Running(daemon, conn, store, stop, task)
    stop.set()
    await asyncio.wait_for(task, 5)


def break_store(store: RelationStore, monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    """Every commit fails from now on (until monkeypatch.undo())."""

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreError(message)

    monkeypatch.setattr(store, "commit", broken)


def chat(n: int, to: str = "bob@localhost", sender: str = "alice@localhost/phone") -> Inbound:
    body = json.dumps({"type": "chat", "id": f"e{n}", "to": to, "text": f"hello {n}"})
    return Inbound("message", sender, "chat", f"s{n}", body)


async def test_events_in_messages_out_after_their_read_is_recorded(running: Running) -> None:
    conn = running.conn
    conn.read(chat(1), chat(2), chat(3, to="nobody@localhost"))
    assert [(o.to, o.payload.get("text")) for o in conn.sent] == [
        ("bob@localhost", "hello 1"), ("bob@localhost", "hello 2"),
        ("alice@localhost/phone", None)]  # the stranger: an error to the sender
    assert conn.sent[2].payload["error"]["code"] == "not-a-member"
    # Nothing left before the read's three records were stored together.
    assert conn.records_at_send == [3, 3, 3]
    assert running.daemon.handled == 3


async def test_an_event_delivered_again_gets_the_same_messages_without_a_decision(
    running: Running,
) -> None:
    conn = running.conn
    conn.read(chat(1))
    conn.read(chat(1))  # after a crash the server re-sends what was not acknowledged
    first, again = conn.sent
    assert (again.id, again.payload) == (first.id, first.payload)
    assert running.daemon.ledger is not None
    assert running.daemon.ledger.written == 1  # recorded once


async def test_a_reload_swaps_the_rules_between_two_reads(running: Running,
                                                          tmp_path: Path) -> None:
    conn = running.conn
    conn.read(chat(1))
    old = conn.sent[-1].meta.version
    service = tmp_path / "rules" / "20-service.yaml"
    service.write_text(service.read_text().replace(
        "payload: \"{type: 'chat', id: event.id, from: sender, text: event.text}\"",
        "payload: \"{type: 'chat', id: event.id, from: sender, text: event.text, v: `2`}\""))
    result = await running.daemon.reloader.reload("test")
    assert result.ok, result.errors
    conn.read(chat(2))
    new = conn.sent[-1]
    assert new.payload["v"] == 2
    assert new.meta.version == result.new_version != old


async def test_a_failing_store_refuses_the_read_and_sends_nothing_else(
    running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("ERROR", logger="rulebot")
    break_store(running.store, monkeypatch, "disk full")
    conn = running.conn
    conn.read(chat(1), chat(2))
    assert [(o.to, o.payload["error"]["code"]) for o in conn.sent] == [
        ("alice@localhost/phone", "store-unavailable")] * 2  # nothing reached bob
    assert any(getattr(r, "fields", {}).get("event") == "store_failed" for r in caplog.records)
    monkeypatch.undo()
    conn.read(chat(3))  # the store is back: events flow again
    assert conn.sent[-1].to == "bob@localhost"


@pytest.mark.parametrize("running", ["rules/friends"], indirect=True)
async def test_a_failing_store_refuses_a_relation_change_and_sends_nothing_of_it(
    running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("ERROR", logger="rulebot")
    break_store(running.store, monkeypatch, "connection lost")
    body = json.dumps({"type": "friend-request", "id": "r1", "to": "bob@localhost"})
    running.conn.read(Inbound("message", "alice@localhost/phone", "chat", "s1", body))
    assert [(o.to, o.payload["error"]["code"]) for o in running.conn.sent] == [
        ("alice@localhost/phone", "store-unavailable")]
    failures = [r for r in caplog.records
                if getattr(r, "fields", {}).get("event") == "store_failed"]
    assert len(failures) == 1
    assert "connection lost" in failures[0].fields["error"]  # type: ignore[attr-defined]
    monkeypatch.undo()
    assert list(running.store.list(subject="alice@localhost")) == []  # nothing half-done


async def test_stop_drains_the_connection_and_closes_the_store(running: Running) -> None:
    running.conn.read(chat(1))
    running.stop.set()
    assert await asyncio.wait_for(running.task, 5) == EXIT_OK
    assert running.conn.drained
    with pytest.raises(StoreError):
        list(running.store.list())  # closed after the connection was drained


def receipted(n: int, **kw: str) -> Inbound:
    return dataclasses.replace(chat(n, **kw), receipt=True)


async def test_a_receipt_follows_what_the_event_produced_and_a_resend_gets_one_too(
    running: Running,
) -> None:
    conn = running.conn
    conn.read(receipted(1), chat(2))  # the second asked for none
    assert conn.receipts == [("alice@localhost/phone", "s1", 1)]  # after bob's message
    conn.read(receipted(1))  # the client resends: answered from the record, receipted
    assert conn.receipts[-1] == ("alice@localhost/phone", "s1", 3)
    assert conn.sent[2].id == conn.sent[0].id
    assert running.daemon.ledger is not None
    assert running.daemon.ledger.written == 2


async def test_an_event_refused_for_a_failing_store_gets_no_receipt(
    running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("CRITICAL", logger="rulebot")
    break_store(running.store, monkeypatch, "disk full")
    conn = running.conn
    conn.read(receipted(1))
    assert conn.sent[-1].payload["error"]["code"] == "store-unavailable"
    assert conn.receipts == []  # so the client sends it again
    monkeypatch.undo()
    conn.read(receipted(1))
    assert conn.sent[-1].to == "bob@localhost"
    assert conn.receipts == [("alice@localhost/phone", "s1", 2)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Daemon, FakeConnection, Daemon, FakeConnection]]:
    """Two workers of one bot sharing one store (SQLite here: the same SQL as
    PostgreSQL), their ledgers loaded and following, as Daemon.run sets up."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    config = dataclasses.replace(config_for(tmp_path, rules), workers=2,
                                 idempotency_follow=0.25)
    made: list[FakeConnection] = []

    def connect(_config: Config, _secret: str, on_inbound: Callable[[Inbound], None],
                on_read_done: Callable[[], None],
                on_confirmed: Callable[[str, int], None] | None) -> FakeConnection:
        made.append(FakeConnection(on_inbound, on_read_done, None, online=True))
        return made[-1]

    workers = []
    for _ in range(2):
        d = Daemon(config, "secret", load_rules(rules), open_store(config.store),
                   connect=connect)
        assert d.ledger is not None
        d.ledger.load()
        d.ledger.following = True
        d.ledger.last_follow = time.monotonic()
        workers.append(d)
    yield workers[0], made[0], workers[1], made[1]
    for d in workers:
        assert d.store is not None
        d.store.close()


def test_a_worker_paused_in_a_read_answers_what_another_decided_meanwhile(
        pair: tuple[Daemon, FakeConnection, Daemon, FakeConnection]) -> None:
    a, conn_a, _, conn_b = pair
    conn_a.in_read = True
    conn_a.on_inbound(receipted(1))  # decided by a, not yet stored: then a is paused
    conn_a.on_inbound(receipted(2))
    conn_b.read(receipted(1))  # meanwhile the client resent it; b decides and records it
    a._read_began -= 10  # a resumes: the read began long ago
    conn_a.on_read_done()
    conn_a.in_read = False
    assert [o.id for o in conn_a.sent] == [conn_b.sent[0].id, conn_a.sent[1].id]
    assert conn_a.sent[0].payload == conn_b.sent[0].payload
    assert [r[1] for r in conn_a.receipts] == ["s1", "s2"]
    assert a.ledger is not None
    assert a.ledger.written == 1  # e2 only: e1 was b's
    assert a.store is not None
    keys = [k.key for batch in a.store.record_batches(0) for k, _, _ in stored_entries(batch)]
    assert sorted(keys) == ["e:e1", "e:e2"]  # each decided once


def test_a_worker_that_was_not_paused_keeps_its_decisions(
        pair: tuple[Daemon, FakeConnection, Daemon, FakeConnection]) -> None:
    a, conn_a, _, conn_b = pair
    conn_b.read(receipted(3))
    conn_a.read(receipted(4))  # no pause: nothing to follow first, nothing taken over
    assert a.ledger is not None
    assert a.ledger.written == 1
    assert conn_a.sent[0].to == "bob@localhost"


LIMITED = """version: 1
rate_limits:
  chat: {rate: 1, per: hour, burst: 2}
rules:
  - name: too-fast
    match: "over_limit('chat', sender)"
    actions:
      - error: {code: rate-limited, message: slow down}
  - name: ok
    match: "`true`"
    actions:
      - reply: {payload: "{ok: `true`}"}
"""


async def test_rate_limit_buckets_survive_a_restart(tmp_path: Path) -> None:
    # One process keeps its buckets in memory and saves them at exit; the next
    # run restores them, so a restart does not hand every sender a full bucket.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "limits.yaml").write_text(LIMITED, encoding="utf-8")
    config = config_for(tmp_path, rules)

    async def run_once(sends: int) -> list[str]:
        store = open_store(config.store)
        made: list[FakeConnection] = []
        daemon = Daemon(config, "secret", load_rules(rules), store,
                        connect=fake_connector(made))
        stop = asyncio.Event()
        task = asyncio.ensure_future(daemon.run(stop))
        await asyncio.wait_for(made[0].up.wait(), 5)
        got = []
        for i in range(sends):
            outcome = daemon.dispatcher.handle(Inbound(
                "message", "alice@localhost/p", "chat", f"s{i}-{sends}",
                json.dumps({"type": "x", "id": f"e{i}-{sends}"})))
            got.append(outcome.decision.matched[0] if outcome.decision else "?")
        stop.set()
        await asyncio.wait_for(task, 10)
        return got

    assert await run_once(1) == ["ok"]
    assert await run_once(2) == ["ok", "too-fast"]  # one token left of two, not a full bucket


@pytest.fixture
async def shadowed(tmp_path: Path) -> AsyncIterator[Running]:
    """The daemon with the shipped rules live, a copy as the shadow set and an archive."""
    rules, candidate = tmp_path / "rules", tmp_path / "candidate"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copytree(ROOT / "rules", candidate)
    config = dataclasses.replace(config_for(tmp_path, rules), shadow=str(candidate),
                                 archive_path=str(tmp_path / "archive.jsonl"),
                                 archive_drop=("event.text",))
    store = open_store(config.store)
    made: list[FakeConnection] = []
    daemon = Daemon(config, "secret", load_rules(rules), store, connect=fake_connector(made))
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run(stop))
    await asyncio.wait_for(made[0].up.wait(), 5)
    yield Running(daemon, made[0], store, stop, task)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_shadow_rules_are_counted_and_never_enforced(shadowed: Running,
                                                           tmp_path: Path) -> None:
    conn, daemon = shadowed.conn, shadowed.daemon
    conn.read(chat(1))
    status = daemon.status()["shadow"]
    assert isinstance(status, dict)
    assert (status["loaded"], status["decided"], status["differed"]) == (True, 1, 0)
    # The candidate stops forwarding chats to members; the live rules still do.
    service = tmp_path / "candidate" / "20-service.yaml"
    service.write_text(service.read_text().replace(
        "  - name: chat-to-member\n", "  - name: chat-to-member\n    enabled: false\n"))
    assert daemon.shadow_reloader is not None
    result = await daemon.shadow_reloader.reload("test")
    assert result.ok, result.errors
    conn.read(chat(2), chat(3, to="nobody@localhost"))
    assert [o.to for o in conn.sent] == ["bob@localhost", "bob@localhost",
                                         "alice@localhost/phone"]
    status = daemon.status()["shadow"]
    assert isinstance(status, dict)
    assert (status["decided"], status["differed"]) == (3, 1)
    # chat 2 stops matching chat-to-member and falls to chat-to-stranger
    assert status["by_rule"] == {"chat-to-member": 1, "chat-to-stranger": 1}
    assert status["version"] == result.new_version != daemon.rules.get().version
    text = daemon.metrics.render().decode()
    assert 'rulebot_shadow_diff_total{rule="chat-to-member"} 1.0' in text
    assert "rulebot_shadow_decisions_total 3.0" in text
    # A broken candidate keeps the last good one, like the live rules do.
    service.write_text("version: 1\nrules: [{name: x, match: 'a ==='}]\n")
    assert not (await daemon.shadow_reloader.reload("test")).ok
    conn.read(chat(4))
    status = daemon.status()["shadow"]
    assert isinstance(status, dict)
    assert (status["decided"], status["differed"]) == (4, 2)


async def test_the_archive_holds_every_decided_event_for_replay(shadowed: Running,
                                                                tmp_path: Path) -> None:
    conn = shadowed.conn
    conn.read(chat(1), chat(2, to="nobody@localhost"))
    conn.read(chat(1))  # a duplicate is not decided again, nor archived again
    conn.read(Inbound("message", "alice@localhost/phone", "chat", "s9", "{oops"))
    assert shadowed.daemon.archive is not None
    assert shadowed.daemon.archive.written == 2
    lines = (tmp_path / "archive.jsonl").read_text().splitlines()
    assert [json.loads(line)["envelope"]["event"]["id"] for line in lines] == ["e1", "e2"]
    assert all("hello" not in line for line in lines)  # event.text dropped, payloads digested
    assert json.loads(lines[0])["version"] == shadowed.daemon.rules.get().version


async def test_a_chat_command_delivered_again_runs_once(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    config = dataclasses.replace(config_for(tmp_path, rules), admins=("admin@localhost",))
    store = open_store(config.store)
    made: list[FakeConnection] = []
    daemon = Daemon(config, "secret", load_rules(rules), store, connect=fake_connector(made))
    conn = made[0]
    stop = asyncio.Event()
    task = asyncio.ensure_future(daemon.run(stop))
    await asyncio.wait_for(conn.up.wait(), 5)

    async def replies(n: int) -> None:
        for _ in range(1000):  # the command runs in a task of its own
            if len(conn.sent) >= n:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{len(conn.sent)} replies, expected {n}")

    command = "!relations-add subject=alice@localhost kind=vip object=bob@localhost"
    add = Inbound("message", "admin@localhost/phone", "chat", "cmd-1", command, receipt=True)
    conn.read(add)
    await replies(1)
    assert conn.sent[0].payload["ok"] is True
    conn.read(add)  # the same stanza again (a client resending until its receipt)
    conn.read(Inbound("message", "admin@localhost/phone", "chat", "cmd-2", "!silence-list"))
    await replies(2)
    assert [o.payload["command"] for o in conn.sent] == ["relations-add", "silence-list"]
    assert [(to, sid) for to, sid, _ in conn.receipts] == [
        ("admin@localhost/phone", "cmd-1"), ("admin@localhost/phone", "cmd-1")]
    stop.set()
    await asyncio.wait_for(task, 5)
