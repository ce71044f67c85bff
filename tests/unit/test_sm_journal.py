"""The stream-management journal: what a killed bot's successor re-sends."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from rulebot.sm_journal import MAX_SEQ, SmJournal


def entries(first: int, count: int) -> list[tuple[int, str]]:
    return [((first + i) % MAX_SEQ, f"<message id=\"rb-{first + i}\"><body>é</body></message>")
            for i in range(count)]


def test_recorded_entries_load_back_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    journal = SmJournal(path)
    assert journal.record("s1", entries(1, 3), 0) == 3
    assert journal.record("s1", entries(1, 5), 0) == 2  # only the two new ones are appended
    assert journal.record("s1", entries(1, 5), 0) == 0
    assert SmJournal(path).load("s1")[0] == entries(1, 5)


def test_entries_of_another_session_are_not_loaded(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    SmJournal(path).record("s1", entries(1, 2), 0)
    assert SmJournal(path).load("s2")[0] == []
    assert SmJournal(path).load_any() == entries(1, 2)


def test_a_record_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    SmJournal(str(path)).record("s1", entries(1, 3), 0)
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the last record lost its end
    assert SmJournal(str(path)).load("s1")[0] == entries(1, 2)


def test_once_the_last_recorded_entry_is_acknowledged_the_whole_queue_is_new(
        tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    journal = SmJournal(path)
    journal.record("s1", entries(1, 3), 0)
    # the server acknowledged 1..3; 4 and 5 were numbered since
    assert journal.record("s1", deque(entries(4, 2)), 0) == 2
    assert SmJournal(path).load("s1")[0] == entries(1, 5)


def test_the_file_is_compacted_to_the_unacknowledged_entries(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = SmJournal(str(path), compact_bytes=500)
    for first in range(1, 40, 3):
        journal.record("s1", entries(first, 3), first)  # the server acknowledges each batch
    assert path.stat().st_size < 1000
    loaded = SmJournal(str(path)).load("s1")[0]
    assert loaded[-1] == entries(37, 3)[-1]
    assert [seq for seq, _ in loaded] == list(range(loaded[0][0], 40))


def test_sequence_numbers_wrap(tmp_path: Path) -> None:
    path = str(tmp_path / "j")
    SmJournal(path).record("s1", entries(MAX_SEQ - 2, 4), 0)
    assert [seq for seq, _ in SmJournal(path).load("s1")[0]] == [MAX_SEQ - 2, MAX_SEQ - 1, 0, 1]


def test_after_a_gap_only_the_newer_run_is_loaded(tmp_path: Path) -> None:
    # 3..9 were numbered and acknowledged between two recordings: never written,
    # and everything before them was acknowledged too.
    path = str(tmp_path / "j")
    journal = SmJournal(path)
    journal.record("s1", entries(1, 2), 0)
    assert journal.record("s1", entries(10, 2), 0) == 2  # 2 is no longer in the queue
    assert SmJournal(path).load("s1")[0] == entries(10, 2)


def test_clear_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = SmJournal(str(path))
    journal.record("s1", entries(1, 1), 0)
    journal.clear()
    assert not path.exists()
    assert journal.load("s1")[0] == []


def test_a_missing_or_foreign_file_loads_nothing(tmp_path: Path) -> None:
    assert SmJournal(str(tmp_path / "none")).load("s1")[0] == []
    other = tmp_path / "other"
    other.write_text("something else\n1 1\nx\n")
    assert SmJournal(str(other)).load_any() == []


def test_a_large_queue_is_not_rewritten_on_every_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = SmJournal(str(path), compact_bytes=500)
    queue = entries(1, 20)  # far more than 500 bytes, none acknowledged
    journal.record("s1", queue, 0)
    inode = path.stat().st_ino
    for n in range(21, 25):  # one more each time: appended, not rewritten
        queue.append(entries(n, 1)[0])
        assert journal.record("s1", queue, 0) == 1
    assert path.stat().st_ino == inode
    assert SmJournal(str(path)).load("s1")[0] == queue


def test_the_handled_count_is_recorded_with_the_entries_and_alone(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = SmJournal(str(path))
    journal.record("s1", entries(1, 2), 10)
    assert journal.record("s1", entries(1, 2), 10) == 0
    size = path.stat().st_size
    assert journal.record("s1", entries(1, 2), 12) == 0  # no new entry, a new count
    assert path.stat().st_size > size
    assert SmJournal(str(path)).load("s1") == (entries(1, 2), 12)


def test_a_count_cut_short_by_a_crash_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = SmJournal(str(path))
    journal.record("s1", entries(1, 1), 10)
    journal.record("s1", entries(1, 2), 123)
    path.write_bytes(path.read_bytes()[:-2])  # "h 12" without its newline
    assert SmJournal(str(path)).load("s1") == (entries(1, 2), 10)
