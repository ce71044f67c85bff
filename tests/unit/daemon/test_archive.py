"""The archive file: one line per decided event, rotated by size as documented."""

from __future__ import annotations

import json
from pathlib import Path

from dispatching import CHAT, dispatcher, msg

from rulebot.daemon.archive import ArchiveLog
from rulebot.engine.archive import parse


def test_lines_rotate_and_the_oldest_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "inbound.jsonl"
    d = dispatcher()
    outcome = d.handle(msg(CHAT))
    archive = ArchiveLog(str(path), max_bytes=2_000, backups=2)
    line_size = None
    for n in range(20):
        archive.record(outcome, now=1_796_205_600.0 + n)
        line_size = line_size or path.stat().st_size
    archive.close()
    assert line_size is not None
    per_file = 2_000 // line_size
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["inbound.jsonl", "inbound.jsonl.1", "inbound.jsonl.2"]
    sizes = [(tmp_path / f).stat().st_size for f in files]
    assert all(size <= 2_000 for size in sizes)
    # retention: max_bytes x (backups + 1); the newest lines kept, in order
    kept = [json.loads(line)["time"] for f in reversed(files)
            for line in (tmp_path / f).read_text().splitlines()]
    assert 2 * per_file < len(kept) <= 3 * per_file < 20
    newest = [f"2026-12-02T10:00:{n:02d}.000Z" for n in range(20 - len(kept), 20)]
    assert kept == newest
    assert archive.written == 20
    assert parse((tmp_path / files[0]).read_text().splitlines()[0]).recorded.matched == (
        "chat-to-member",)


def test_an_existing_archive_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "inbound.jsonl"
    outcome = dispatcher().handle(msg(CHAT))
    for _ in range(2):  # two daemon runs
        archive = ArchiveLog(str(path), max_bytes=1_000_000, backups=1)
        archive.record(outcome)
        archive.close()
    assert len(path.read_text().splitlines()) == 2


def test_what_the_rules_did_not_decide_is_not_archived(tmp_path: Path) -> None:
    path = tmp_path / "inbound.jsonl"
    archive = ArchiveLog(str(path), max_bytes=1_000_000, backups=1)
    d = dispatcher()
    for inbound in (msg("{oops"), msg(None), msg(CHAT, mtype="groupchat"),
                    msg(json.dumps({"type": "nope", "id": "n1"}))):
        archive.record(d.handle(inbound))
    archive.close()
    # The unknown type is the rule set's refusal (a candidate may accept it):
    # archived; the undecodable, the empty and the ignored stanza are not.
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["envelope"]["event"] == {"type": "nope", "id": "n1"}


def test_a_failing_disk_loses_lines_not_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "inbound.jsonl"
    path.parent.mkdir()
    outcome = dispatcher().handle(msg(CHAT))
    archive = ArchiveLog(str(path), max_bytes=1_000_000, backups=2)
    archive.record(outcome)
    path.unlink()
    path.parent.rmdir()  # the directory is gone: writes fail
    archive._file.close()  # type: ignore[union-attr]  # as a full disk would fail them
    for _ in range(3):
        archive.record(outcome)  # must not raise
    assert (archive.written, archive.failed) == (1, 3)
    path.parent.mkdir()  # back: the next line goes to a new file
    archive.record(outcome)
    assert (archive.written, len(path.read_text().splitlines())) == (2, 1)
    archive.close()


def test_rotation_survives_the_live_file_moved_away(tmp_path: Path) -> None:
    path = tmp_path / "inbound.jsonl"
    outcome = dispatcher().handle(msg(CHAT))
    archive = ArchiveLog(str(path), max_bytes=1_500, backups=1)
    archive.record(outcome)
    path.rename(tmp_path / "elsewhere.jsonl")  # an operator's logrotate, say
    for _ in range(5):
        archive.record(outcome)
    archive.close()
    assert archive.failed == 0
    assert archive.written == 6
