"""`rulebot replay`'s core and the archive format, on traffic the dispatcher
decided with the shipped friends rules (relations in memory, a frozen clock)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound
from rulebot.cli.main import main
from rulebot.cli.replay import ordered
from rulebot.config import parse_config
from rulebot.engine.archive import Privacy, entry, parse
from rulebot.engine.compare import compare, view
from rulebot.engine.state import MemoryRelations
from rulebot.model import Decision, Relation
from rulebot.rules.loader import load_rules
from rulebot.rules.ruleset import RuleSet
from rulebot.ruletest.replay import replay

ROOT = Path(__file__).resolve().parents[3]
FRIENDS = ROOT / "rules" / "friends"
T0 = 1_796_205_600.0  # 2026-12-02T10:00:00Z


def ev(sender: str, **event: object) -> Inbound:
    return Inbound("message", f"{sender}@localhost/phone", "chat", "s1", json.dumps(event))


#: A friendship made, chats between friends and from a stranger, presence.
TRAFFIC = [
    ev("alice", type="friend-request", id="r1", to="bob@localhost"),
    ev("bob", type="friend-accept", id="a1", to="alice@localhost"),
    ev("alice", type="chat", id="c1", to="bob@localhost", text="hi bob"),
    ev("carol", type="chat", id="c2", to="bob@localhost", text="hello?"),
    Inbound("presence", "alice@localhost/phone", "available"),
    ev("bob", type="chat", id="c3", to="alice@localhost", text="hi alice"),
    ev("carol", type="chat", id="c4", to="alice@localhost", text="anyone?"),
]


def record(rules: RuleSet, traffic: list[Inbound] = TRAFFIC,
           privacy: Privacy | None = None) -> list[str]:
    """Decide `traffic` live (state applied as the daemon does); its archive lines."""
    clock = Clock()
    store = MemoryRelations(clock=clock)
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": str(FRIENDS)}))
    d = Dispatcher(config, lambda: rules, relations=store, apply=store.apply, clock=clock)
    lines = []
    for n, inbound in enumerate(traffic):
        clock.now = T0 + 60 * n
        outcome = d.handle(inbound)
        assert outcome.status == "decided"
        assert outcome.decision
        assert outcome.envelope
        line = entry(outcome.envelope, outcome.decision, f"2026-12-01T12:{n:02d}:00.000Z",
                     privacy)
        lines.append(json.dumps(line))
    return lines


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def numbered(lines: list[str]) -> list[tuple[str, str]]:
    return [(f"a:{n}", line) for n, line in enumerate(lines, 1)]


def edited(tmp_path: Path, change: Callable[[str], str]) -> RuleSet:
    target = tmp_path / "candidate"
    shutil.copytree(FRIENDS, target)
    chat = target / "20-chat.yaml"
    new = change(chat.read_text())
    assert new != chat.read_text()
    chat.write_text(new)
    return load_rules(target)


@pytest.fixture(scope="module")
def live() -> RuleSet:
    return load_rules(FRIENDS)


def test_the_same_rules_change_nothing(live: RuleSet) -> None:
    report = replay(numbered(record(live)), live)
    assert (report.events, report.changed_count, report.bad) == (len(TRAFFIC), 0, [])
    assert report.versions == {live.version: len(TRAFFIC)}


def test_replay_rebuilds_the_state_the_recorded_decisions_made(live: RuleSet) -> None:
    # Without the recorded relate of `accept`, the chats between alice and bob
    # (chat-friends) would be refused as strangers' and counted as changes.
    lines = record(live)
    assert '"kind":"friend"' in json.dumps(json.loads(lines[1])["decision"],
                                           separators=(",", ":"))
    assert replay(numbered(lines), live).changed_count == 0
    only_chats = numbered(lines[2:])
    report = replay(only_chats, live)
    assert report.rules["chat-friends"].stopped_matching == 2
    assert report.rules["chat-strangers"].newly_matched == 2


def test_replay_with_the_current_store_starts_from_its_relations(live: RuleSet) -> None:
    friends = [Relation("alice@localhost", "bob@localhost", "friend"),
               Relation("bob@localhost", "alice@localhost", "friend")]
    assert replay(numbered(record(live)[2:]), live, friends).changed_count == 0


def test_a_changed_rule_is_counted_with_its_recipients(live: RuleSet, tmp_path: Path) -> None:
    # The candidate stops forwarding chats to friends: the two friendly chats
    # change, every other event decides as recorded.
    candidate = edited(tmp_path, lambda t: t.replace(
        "  - name: chat-friends\n", "  - name: chat-friends\n    enabled: false\n"))
    seen = []
    report = replay(numbered(record(live)), candidate, on_changed=seen.append)
    assert report.changed_count == 2 == len(seen)
    assert report.rules["chat-friends"].stopped_matching == 2
    assert report.rules["chat-strangers"].newly_matched == 2
    assert report.removed == {"bob@localhost": 1, "alice@localhost": 1}
    assert [c.where for c in seen] == ["a:3", "a:6"]
    assert [c.event_id for c in seen] == ["c1", "c3"]
    # the refusal the candidate sends goes to the sender's full JID instead
    assert report.added == {"alice@localhost/phone": 1, "bob@localhost/phone": 1}
    assert report.summary()["rules"]["chat-friends"] == {  # type: ignore[index]
        "newly_matched": 0, "stopped_matching": 2, "differed": 2}


def test_a_changed_payload_is_a_difference_without_a_match_change(
        live: RuleSet, tmp_path: Path) -> None:
    candidate = edited(tmp_path, lambda t: t.replace(
        "payload: \"{type: 'chat', from: sender, text: event.text, id: event.id}\"",
        "payload: \"{type: 'chat', from: sender, text: event.text}\""))
    report = replay(numbered(record(live)), candidate)
    assert report.changed_count == 2
    change = report.rules["chat-friends"]
    assert (change.newly_matched, change.stopped_matching, change.differed) == (0, 0, 2)
    assert not report.added
    assert not report.removed


def test_bad_lines_are_reported_and_skipped(live: RuleSet) -> None:
    lines = record(live)
    mixed = [lines[0], "{not json", json.dumps({"archive": 99}), lines[1], "",
             json.dumps({"archive": 1, "envelope": {}}), *lines[2:]]
    report = replay(numbered(mixed), live)
    assert report.changed_count == 0
    assert report.events == len(TRAFFIC)
    assert [where for where, _ in report.bad] == ["a:2", "a:3", "a:6"]
    assert "not JSON" in report.bad[0][1]
    assert "format 1" in report.bad[1][1]


def test_privacy_drops_and_hashes_fields_and_replay_still_agrees(live: RuleSet) -> None:
    privacy = Privacy(drop=("event.text",), hash=("event.to",), salt="s3cret")
    lines = record(live, privacy=privacy)
    raw = json.loads(lines[2])
    assert "text" not in raw["envelope"]["event"]
    assert raw["envelope"]["event"]["to"].startswith("h:")
    assert raw["privacy"] == {"dropped": ["event.text"], "hashed": ["event.to"]}
    assert "hi bob" not in "".join(lines)  # payloads are kept as digests only
    # equal values hash equal; another salt hashes differently
    assert json.loads(lines[0])["envelope"]["event"]["to"] == raw["envelope"]["event"]["to"]
    other = Privacy(hash=("event.to",), salt="other").apply({"to": "bob@localhost"})[0]
    assert other["to"] != raw["envelope"]["event"]["to"]
    # An event schema requires chat's text, and the rules relate and forward
    # to the hashed `to`: those events cannot be re-decided as live (and the
    # state they leave names hashed JIDs); replay marks the redacted ones.
    report = replay(numbered(lines), live)
    assert report.changed_redacted > 0
    assert all(set(c.redacted) <= {"event.text", "event.to"} for c in report.changed)
    # What the archive hides in the event it hides in the decision too: the
    # relation the request made names the hashed JID, not bob's.
    request = json.loads(lines[0])["decision"]["actions"][0]
    assert (request["type"], request["object"]) == ("relate", raw["envelope"]["event"]["to"])
    # A hashed field the rules only pass on re-decides the same: payloads'
    # digests are taken with its value hashed wherever they repeat it.
    text_only = record(live, privacy=Privacy(hash=("event.text",), salt="s3cret"))
    assert "hi bob" not in "".join(text_only)
    assert replay(numbered(text_only), live).changed_count == 0


def test_an_archive_line_round_trips(live: RuleSet) -> None:
    lines = record(live)
    for line in lines:
        archived = parse(line)
        again = json.loads(line)
        assert archived.envelope.sender == again["envelope"]["sender"]
        assert archived.recorded.to_json() == again["decision"]
    accept = parse(lines[1])
    kinds = [type(c).__name__ for c in accept.changes]
    assert kinds == ["Unrelate", "Cancel", "Relate"]


def test_compare_is_empty_for_equal_decisions(live: RuleSet) -> None:
    archived = parse(record(live)[2])
    assert not compare(archived.recorded, archived.recorded)
    nothing = compare(archived.recorded, view(Decision("v")))
    assert nothing.stopped_matching == ("chat-friends",)
    assert nothing.removed == ("bob@localhost",)
    assert not nothing.added


def test_rotated_files_are_read_oldest_first(tmp_path: Path) -> None:
    names = ["a.jsonl", "a.jsonl.1", "a.jsonl.10", "a.jsonl.2", "b.jsonl.w0"]
    got = ordered(tuple(str(tmp_path / n) for n in names))
    assert [p.name for p in got] == ["a.jsonl.10", "a.jsonl.2", "a.jsonl.1", "a.jsonl",
                                     "b.jsonl.w0"]


def test_the_command_exits_0_unchanged_and_1_changed(live: RuleSet, tmp_path: Path) -> None:
    lines = record(live)
    # rotated: the first three events in the older file
    (tmp_path / "archive.jsonl.1").write_text("\n".join(lines[:3]) + "\n")
    (tmp_path / "archive.jsonl").write_text("\n".join(lines[3:]) + "\n")
    files = [str(tmp_path / "archive.jsonl"), str(tmp_path / "archive.jsonl.1")]
    runner = CliRunner()
    same = runner.invoke(main, ["replay", *files, "--rules", str(FRIENDS)])
    assert same.exit_code == 0, same.output
    assert "changed: 0 (0.0 %), unchanged: 7" in same.output
    candidate = tmp_path / "candidate"
    shutil.copytree(FRIENDS, candidate)
    chat = candidate / "20-chat.yaml"
    chat.write_text(chat.read_text().replace("  - name: chat-friends\n",
                                             "  - name: chat-friends\n    enabled: false\n"))
    changed = runner.invoke(main, ["replay", *files, "--rules", str(candidate)])
    assert changed.exit_code == 1, changed.output
    assert "changed: 2 (28.6 %)" in changed.output
    row = next(line for line in changed.output.splitlines() if line.startswith("chat-friends"))
    assert row.split() == ["chat-friends", "0", "2", "2"]
    assert "archive.jsonl.1:3" in changed.output  # c1, the older file's third line
    as_json = runner.invoke(main, ["replay", *files, "--rules", str(candidate),
                                   "--format", "json"])
    out = [json.loads(line) for line in as_json.output.splitlines()]
    assert as_json.exit_code == 1
    assert [o["event_id"] for o in out[:-1]] == ["c1", "c3"]
    assert out[-1]["summary"]["changed"] == 2
    assert out[-1]["summary"]["candidate_version"] == load_rules(candidate).version


def test_the_command_refuses_an_invalid_candidate(live: RuleSet, tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(record(live)[0] + "\n")
    (tmp_path / "bad.yaml").write_text("version: 1\nrules:\n  - name: x\n    match: 'a ==='\n")
    result = CliRunner().invoke(main, ["replay", str(tmp_path / "a.jsonl"),
                                       "--rules", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 1
    assert "bad.yaml:4" in result.output
    assert "invalid rules" in result.output


def test_events_a_silence_decided_are_counted_not_compared(live: RuleSet) -> None:
    from rulebot.model import Silence
    from rulebot.rules.silences import compile_silence

    muting, _ = compile_silence(Silence("s1", T0 + 86400, "ops", "c", sender="carol@localhost",
                                        starts=T0 - 1))
    assert muting is not None
    clock = Clock()
    store = MemoryRelations(clock=clock)
    config = parse_config(json.dumps({"jid": "friend@localhost", "rules": str(FRIENDS)}))
    d = Dispatcher(config, lambda: live, relations=store, apply=store.apply, clock=clock,
                   silences=lambda: (muting,))
    lines = []
    for n, inbound in enumerate(TRAFFIC):
        clock.now = T0 + 60 * n
        outcome = d.handle(inbound)
        assert outcome.decision is not None
        assert outcome.envelope is not None
        lines.append(json.dumps(entry(outcome.envelope, outcome.decision, f"t{n}")))
    assert sum('"silenced":["s1"]' in line.replace(" ", "") for line in lines) == 2
    report = replay(numbered(lines), live)
    assert (report.events, report.silenced, report.changed_count) == (len(TRAFFIC), 2, 0)


def test_the_command_shows_progress_and_starts_from_a_store(live: RuleSet,
                                                           tmp_path: Path) -> None:
    from rulebot.store.open import open_store

    lines = record(live)[2:]  # the chats only: alice and bob are friends already
    archive = tmp_path / "archive.jsonl"
    archive.write_text("\n".join(lines) + "\n")
    runner = CliRunner()
    empty = runner.invoke(main, ["replay", str(archive), "--rules", str(FRIENDS)])
    assert empty.exit_code == 1  # without the friendship, the chats decide otherwise
    store = tmp_path / "s.sqlite3"
    with open_store(str(store)) as s:
        s.relate("alice@localhost", "bob@localhost", "friend")
        s.relate("bob@localhost", "alice@localhost", "friend")
    from_store = runner.invoke(main, ["replay", str(archive), "--rules", str(FRIENDS),
                                      "--store", str(store), "--progress"])
    assert from_store.exit_code == 0, from_store.output
    assert f"replayed {len(lines)} events in " in from_store.stderr
