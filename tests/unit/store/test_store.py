"""The relationship store: one suite, run against SQLite and a private PostgreSQL.

The PostgreSQL cluster (scripts/pgserver.py) starts once per session; each
test gets empty tables. Without PostgreSQL or psycopg these tests fail, not
skip: CI installs both (scripts/install-system-deps, the venv).
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rulebot.store.base import PAGE, RelationStore, StoreError, redact_url
from rulebot.store.open import open_store, resolve_location
from rulebot.store.sqlite import SqliteStore
from rulebot.store.values import (
    MAX_ATTRS_BYTES,
    MAX_JID,
    CancelChange,
    CountChange,
    RecordBatch,
    RelateChange,
    Relation,
    ResetChange,
    ScheduleChange,
    SessionMark,
    UnrelateChange,
    stamp,
)
from scripts import pgserver

A, B, C, D = "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PgInfo]:
    info = pgserver.start_postgres(tmp_path_factory.mktemp("pg"))
    try:
        yield info
    finally:
        pgserver.stop_postgres(info)
        pgserver.stop_postgres(info)  # idempotent


def reset_pg(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS rulebot_relations, rulebot_schema_version, "
                     "rulebot_inbound, rulebot_inbound_sessions, rulebot_buckets, "
                     "rulebot_presence, rulebot_inbound_claims, rulebot_counts, "
                     "rulebot_timers, rulebot_silences CASCADE")
        conn.execute("DROP FUNCTION IF EXISTS rulebot_test_fail() CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "relations.sqlite3")
    info: pgserver.PgInfo = request.getfixturevalue("pg_cluster")
    reset_pg(info.url)
    return str(info.url)


@pytest.fixture
def store(location: str) -> Iterator[RelationStore]:
    s = open_store(location)
    try:
        yield s
    finally:
        s.close()


def fail_inserts_of(store: RelationStore, location: str, subject: str) -> None:
    """Make the database itself reject inserting a relation of *subject*."""
    if isinstance(store, SqliteStore):
        store._conn.execute(
            "CREATE TRIGGER rulebot_test_fail BEFORE INSERT ON rulebot_relations "
            f"WHEN NEW.subject = '{subject}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        return
    with psycopg.connect(location, autocommit=True) as conn:
        conn.execute(f"""CREATE FUNCTION rulebot_test_fail() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN IF NEW.subject = '{subject}' THEN RAISE 'injected failure'; END IF;
            RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER rulebot_test_fail BEFORE INSERT ON rulebot_relations "
                     "FOR EACH ROW EXECUTE FUNCTION rulebot_test_fail()")


def keys(store: RelationStore) -> list[tuple[str, str, str]]:
    return [(r.subject, r.object, r.kind) for r in store.list()]


def export_text(store: RelationStore) -> str:
    out = io.StringIO()
    store.export_jsonl(out)
    return out.getvalue()


# --------------------------------------------------------------------------
# reads and writes


def test_relate_is_directed_and_typed(store: RelationStore) -> None:
    assert store.relate(A, B, "friend") is True
    assert store.related(A, B, "friend")
    assert not store.related(B, A, "friend")
    assert not store.related(A, B, "follows")
    assert not store.related(A, C, "friend")
    assert store.count() == 1


def test_relate_upsert_keeps_created_and_replaces_attrs(store: RelationStore) -> None:
    assert store.relate(A, B, "friend", {"since": 2020}) is True
    first = store.get(A, B, "friend")
    assert first is not None
    time.sleep(0.002)
    assert store.relate(A, B, "friend", {"note": "best"}) is False
    second = store.get(A, B, "friend")
    assert second == Relation(A, B, "friend", {"note": "best"}, first.created)
    assert store.relate(A, B, "friend") is False  # attrs back to {}
    assert store.get(A, B, "friend") == Relation(A, B, "friend", {}, first.created)
    assert store.count() == 1


def test_created_is_iso_8601_utc(store: RelationStore) -> None:
    store.relate(A, B, "friend")
    relation = store.get(A, B, "friend")
    assert relation is not None
    assert relation.created.endswith("Z")
    assert time.strptime(relation.created, "%Y-%m-%dT%H:%M:%S.%fZ")


ATTRS = {
    "n": 1, "f": 2.5, "neg": -3, "big": 2**53, "t": True, "no": False, "none": None,
    "s": "héllo ✓ 🦊 \"quoted\" \\ back\nslash\u0000nul", "list": [1, "two", [3], {"x": []}],
    "nested": {"a": {"b": {"c": "d"}}}, "": "empty key",
}  # fmt: skip


def test_attrs_round_trip(store: RelationStore, location: str) -> None:
    store.relate(A, B, "friend", ATTRS)
    relation = store.get(A, B, "friend")
    assert relation is not None
    assert relation.attrs == ATTRS
    store.close()
    with open_store(location) as again:
        assert again.get(A, B, "friend") == relation


def test_get_missing_is_none(store: RelationStore) -> None:
    assert store.get(A, B, "friend") is None
    store.relate(A, B, "friend")
    assert store.get(B, A, "friend") is None


def test_objects_and_subjects_are_sorted_by_code_point(store: RelationStore) -> None:
    # Upper case before lower case, ASCII before Latin-1 before astral: the
    # order of Python's sorted(), whatever the database's locale.
    jids = ["zed@x", "Zed@x", "ärger@x", "a@x", "b@x", "😀@x", "_@x", "a@y", "é@x", "e@x"]
    store.apply([RelateChange(A, j, "follows") for j in jids])
    store.apply([RelateChange(j, B, "follows") for j in jids])
    store.relate(A, C, "friend")
    store.relate(D, B, "blocked")
    assert store.objects(A, "follows") == sorted(jids)
    assert store.subjects(B, "follows") == sorted(jids)
    assert store.objects(A, "friend") == [C]
    assert store.subjects(B, "blocked") == [D]
    assert store.objects(B, "follows") == []
    assert store.subjects(A, "follows") == []
    assert store.objects(A, "muted") == []


def test_unrelate(store: RelationStore) -> None:
    store.relate(A, B, "friend")
    store.relate(B, A, "friend")
    assert store.unrelate(A, B, "friend") is True
    assert store.unrelate(A, B, "friend") is False
    assert not store.related(A, B, "friend")
    assert store.related(B, A, "friend")
    assert store.unrelate(C, D, "never") is False


def test_apply_runs_in_order_and_reports_each_change(store: RelationStore) -> None:
    store.relate(A, D, "friend")
    flags = store.apply([
        RelateChange(A, B, "friend", {"v": 1}),
        RelateChange(B, A, "friend"),
        RelateChange(A, B, "friend", {"v": 2}),
        UnrelateChange(A, D, "friend"),
        UnrelateChange(A, D, "friend"),
        UnrelateChange(B, A, "friend"),
        RelateChange(B, A, "friend"),
    ])  # fmt: skip
    assert flags == [True, True, False, True, False, True, True]
    assert keys(store) == [(A, B, "friend"), (B, A, "friend")]
    assert store.get(A, B, "friend") == Relation(A, B, "friend", {"v": 2},
                                                 store.get(A, B, "friend").created)  # type: ignore[union-attr]


def test_apply_nothing(store: RelationStore) -> None:
    assert store.apply([]) == []


def test_apply_validates_everything_before_writing(store: RelationStore) -> None:
    store.relate(A, B, "friend")
    with pytest.raises(StoreError, match="kind must match"):
        store.apply([RelateChange(C, D, "friend"), UnrelateChange(A, B, "friend"),
                     RelateChange(C, A, "Not A Kind"), RelateChange(D, C, "friend")])
    assert keys(store) == [(A, B, "friend")]


def test_apply_is_atomic_when_the_database_fails_midway(store: RelationStore,
                                                        location: str) -> None:
    store.relate(A, B, "friend", {"v": 1})
    fail_inserts_of(store, location, "boom@example.com")
    before = export_text(store)
    with pytest.raises(StoreError, match="injected failure"):
        store.apply([
            RelateChange(C, D, "friend"),
            RelateChange(A, B, "friend", {"v": 2}),
            UnrelateChange(A, B, "friend"),
            RelateChange("boom@example.com", A, "friend"),
            RelateChange(D, C, "friend"),
        ])  # fmt: skip
    assert export_text(store) == before
    # the store is still usable, and the failure was about that one row only
    assert store.apply([RelateChange(C, D, "friend")]) == [True]
    assert store.count() == 2


def test_writes_are_visible_to_another_connection_at_once(store: RelationStore,
                                                          location: str) -> None:
    with open_store(location) as other:
        store.apply([RelateChange(A, B, "friend"), RelateChange(B, A, "friend")])
        assert other.related(A, B, "friend")
        assert other.related(B, A, "friend")
        other.unrelate(A, B, "friend")
        assert not store.related(A, B, "friend")


def test_durable_across_close_and_reopen(store: RelationStore, location: str) -> None:
    store.apply([RelateChange(A, B, "friend", {"x": 1}), RelateChange(B, A, "friend")])
    store.unrelate(B, A, "friend")
    expected = export_text(store)
    store.close()
    store.close()  # idempotent
    with open_store(location) as again:
        assert export_text(again) == expected
        assert again.count() == 1


def test_closed_store_raises_store_error(store: RelationStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.related(A, B, "friend")
    with pytest.raises(StoreError):
        store.relate(A, B, "friend")


def test_list_filters_and_order(store: RelationStore) -> None:
    store.apply([
        RelateChange(B, A, "friend"), RelateChange(A, C, "friend"), RelateChange(A, B, "friend"),
        RelateChange(A, B, "follows"), RelateChange(C, B, "blocked"), RelateChange(D, B, "friend"),
    ])  # fmt: skip
    assert keys(store) == [(A, B, "follows"), (A, B, "friend"), (A, C, "friend"),
                           (B, A, "friend"), (C, B, "blocked"), (D, B, "friend")]
    assert keys_of(store.list(subject=A)) == [(A, B, "follows"), (A, B, "friend"),
                                              (A, C, "friend")]
    assert keys_of(store.list(kind="friend")) == [(A, B, "friend"), (A, C, "friend"),
                                                  (B, A, "friend"), (D, B, "friend")]
    assert keys_of(store.list(obj=B)) == [(A, B, "follows"), (A, B, "friend"),
                                          (C, B, "blocked"), (D, B, "friend")]
    assert keys_of(store.list(subject=A, kind="friend", obj=C)) == [(A, C, "friend")]
    assert keys_of(store.list(obj=B, kind="friend")) == [(A, B, "friend"), (D, B, "friend")]
    assert keys_of(store.list(subject="nobody@x")) == []


def keys_of(relations: Iterator[Relation]) -> list[tuple[str, str, str]]:
    return [(r.subject, r.object, r.kind) for r in relations]


def test_list_pages_and_allows_writes_while_iterating(store: RelationStore) -> None:
    n = PAGE * 2 + 7
    store.apply([RelateChange(f"u{i:05d}@x", A, "follows") for i in range(n)])
    seen = []
    for relation in store.list(kind="follows"):
        seen.append(relation.subject)
        store.unrelate(relation.subject, relation.object, relation.kind)  # no deadlock
    assert seen == [f"u{i:05d}@x" for i in range(n)]
    assert store.count() == 0


def test_store_is_shared_safely_between_threads(store: RelationStore) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                store.relate(f"t{t}@x", f"o{i}@x", "follows")
                assert store.related(f"t{t}@x", f"o{i}@x", "follows")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert store.count() == 200


# --------------------------------------------------------------------------
# validation


BAD_WRITES = [
    ((A, B, "Friend"), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not 'Friend'"),
    ((A, B, ""), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not ''"),
    ((A, B, "1st"), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not '1st'"),
    ((A, B, "a b"), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not 'a b'"),
    ((A, B, "friend\n"), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not 'friend\\n'"),
    ((A, B, "k" * 65), "kind must match ^[a-z][a-z0-9_-]{0,63}$, not 'kkkkkkkkkkkk"),
    (("", B, "friend"), "subject must be a non-empty string, not ''"),
    ((A, None, "friend"), "object must be a non-empty string, not None"),
    ((A, "x" * (MAX_JID + 1), "friend"), "object is longer than 3071 characters"),
    (("a\x00b@x", B, "friend"), "subject contains a control character: 'a\\x00b@x'"),
    ((A, "b@x\n", "friend"), "object contains a control character: 'b@x\\n'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_WRITES)
def test_bad_writes_are_refused(store: RelationStore, args: tuple[str, str, str],
                                message: str) -> None:
    with pytest.raises(StoreError) as info:
        store.relate(*args)
    assert str(info.value).startswith(message)
    with pytest.raises(StoreError) as info:
        store.unrelate(*args)
    assert str(info.value).startswith(message)
    assert store.count() == 0


BAD_ATTRS = [
    ([1, 2], "attrs must be a JSON object, not [1, 2]"),
    ("text", "attrs must be a JSON object, not 'text'"),
    ({1: "x"}, "attrs must be a JSON object, not {1: 'x'}"),
    ({"x": float("nan")}, "attrs is not JSON: Out of range float values are not JSON compliant"),
    ({"x": object()}, "attrs is not JSON: Object of type object is not JSON serializable"),
    ({"x": "y" * MAX_ATTRS_BYTES}, "attrs is larger than 4096 bytes as JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("attrs", "message"), BAD_ATTRS)
def test_bad_attrs_are_refused(store: RelationStore, attrs: object, message: str) -> None:
    with pytest.raises(StoreError) as info:
        store.relate(A, B, "friend", attrs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert store.count() == 0


def test_limits_are_inclusive(store: RelationStore) -> None:
    long_jid = "x" * MAX_JID
    kind = "k" + "a-_9" * 15 + "abc"
    assert len(kind) == 64
    big = {"x": "é" * ((MAX_ATTRS_BYTES - len('{"x":""}')) // 2)}  # 2 bytes each in UTF-8
    assert len(json.dumps(big, ensure_ascii=False, separators=(",", ":")).encode()) == 4096
    assert store.relate(long_jid, long_jid, kind, big)
    assert store.get(long_jid, long_jid, kind) == Relation(
        long_jid, long_jid, kind, big, store.get(long_jid, long_jid, kind).created)  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# export / import


def test_export_import_round_trip(store: RelationStore, tmp_path: Path) -> None:
    store.apply([RelateChange(A, B, "friend", ATTRS), RelateChange(B, A, "friend"),
                 RelateChange(C, "😀@x", "blocked", {"why": "spam"})])
    text = export_text(store)
    lines = text.splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert list(first) == ["subject", "object", "kind", "attrs", "created"]
    assert first["attrs"] == ATTRS
    store.apply([UnrelateChange(r.subject, r.object, r.kind) for r in list(store.list())])
    assert store.count() == 0
    assert store.import_jsonl(io.StringIO(text)) == 3
    assert export_text(store) == text
    # and into the other backend, byte for byte
    with open_store(str(tmp_path / "copy.sqlite3")) as copy:
        assert copy.import_jsonl(io.StringIO(text)) == 3
        assert export_text(copy) == text


def test_import_sets_attrs_and_created_and_fills_defaults(store: RelationStore) -> None:
    store.relate(A, B, "friend", {"old": True})
    lines = [
        {"subject": A, "object": B, "kind": "friend", "attrs": {"new": 1},
         "created": "2020-02-03T04:05:06+00:00"},
        {"subject": B, "object": A, "kind": "friend"},
        {"subject": C, "object": A, "kind": "friend", "created": "2021-01-01T00:00:00Z"},
    ]
    text = "\n\n".join(json.dumps(x) for x in lines) + "\n   \n"
    assert store.import_jsonl(io.StringIO(text)) == 3
    assert store.get(A, B, "friend") == Relation(A, B, "friend", {"new": 1},
                                                 "2020-02-03T04:05:06.000000Z")
    default = store.get(B, A, "friend")
    assert default is not None
    assert default.attrs == {}
    assert default.created.endswith("Z")
    assert store.get(C, A, "friend") == Relation(C, A, "friend", {}, "2021-01-01T00:00:00.000000Z")


GOOD = json.dumps({"subject": A, "object": B, "kind": "friend"})
BAD_IMPORTS = [
    ("{nope", "line 2: not JSON: Expecting property name enclosed in double quotes"),
    ("[1]", "line 2: expected a JSON object, got [1]"),
    ('{"subject": "a@x", "object": "b@x"}', "line 2: missing key(s) kind"),
    ('{"subject": "a@x", "object": "b@x", "kind": "k", "extra": 1, "more": 2}',
     "line 2: unknown key(s) extra, more"),
    ('{"subject": "a@x", "object": "b@x", "kind": "K"}', "line 2: kind must match"),
    ('{"subject": "", "object": "b@x", "kind": "k"}', "line 2: subject must be a non-empty"),
    ('{"subject": "a@x", "object": 7, "kind": "k"}', "line 2: object must be a non-empty"),
    ('{"subject": "a@x", "object": "b@x", "kind": "k", "attrs": []}',
     "line 2: attrs must be a JSON object, not []"),
    ('{"subject": "a@x", "object": "b@x", "kind": "k", "created": "yesterday"}',
     "line 2: created must be an ISO 8601 UTC time like 2025-01-31T12:00:00Z, not 'yesterday'"),
    ('{"subject": "a@x", "object": "b@x", "kind": "k", "created": "2020-01-01T00:00:00"}',
     "line 2: created must be an ISO 8601 UTC time"),
    ('{"subject": "a@x", "object": "b@x", "kind": "k", "created": "2020-01-01T00:00:00+01:00"}',
     "line 2: created must be an ISO 8601 UTC time"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_IMPORTS)
def test_bad_import_line_names_its_number_and_imports_nothing(
        store: RelationStore, line: str, message: str) -> None:
    store.relate(C, D, "friend", {"keep": 1})
    before = export_text(store)
    with pytest.raises(StoreError) as info:
        store.import_jsonl(io.StringIO(f"{GOOD}\n{line}\n{GOOD}\n"))
    assert str(info.value).startswith(message)
    assert export_text(store) == before


def test_bad_line_after_many_good_ones_rolls_back_every_batch(store: RelationStore) -> None:
    good = "".join(json.dumps({"subject": f"u{i}@x", "object": A, "kind": "follows"}) + "\n"
                   for i in range(PAGE * 2 + 10))
    with pytest.raises(StoreError, match=f"^line {PAGE * 2 + 11}: not JSON"):
        store.import_jsonl(io.StringIO(good + "oops\n"))
    assert store.count() == 0


def test_import_of_bad_utf8_names_the_line(store: RelationStore, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_bytes(GOOD.encode() + b"\n" + b'{"subject": "\xff"}\n')
    with open(f, encoding="utf-8") as fp, pytest.raises(StoreError, match="not UTF-8"):
        store.import_jsonl(fp)
    assert store.count() == 0


def test_export_stopped_early_leaves_the_store_usable(store: RelationStore) -> None:
    store.apply([RelateChange(f"u{i}@x", A, "follows") for i in range(500)])

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            if self.tell() > 200:
                raise OSError(28, "No space left on device")
            return super().write(text)

    with pytest.raises(OSError, match="No space"):
        store.export_jsonl(Full())
    assert store.count() == 500
    assert store.related("u7@x", A, "follows")


def test_bulk_import_of_10k_relations(store: RelationStore) -> None:
    n = 10_000
    text = "".join(json.dumps({"subject": f"user{i}@example.com", "object": f"user{i % 97}@x",
                               "kind": "follows", "attrs": {"i": i}}) + "\n" for i in range(n))
    started = time.perf_counter()
    assert store.import_jsonl(io.StringIO(text)) == n
    took = time.perf_counter() - started
    assert store.count() == n
    assert len(store.subjects("user5@x", "follows")) == len(range(5, n, 97))
    print(f"\n{type(store).__name__}: imported {n} relations in {took * 1000:.0f} ms")


# --------------------------------------------------------------------------
# idempotency records: batches and acknowledgement marks


def test_record_batches_are_written_and_read_back_in_order(store: RelationStore) -> None:
    first = store.commit(RecordBatch("sm-1", 10, 1000, '["a"]'), durable=False)
    second = store.commit(RecordBatch("sm-1", 20, 2000, '["b"]'), durable=False)
    assert first.flags == []
    assert first.batch is not None
    assert second.batch is not None
    assert second.batch > first.batch
    assert store.record_batch(first.batch) == '["a"]'
    assert [(b.session, b.last, b.records) for b in store.record_batches(0)] == [
        ("sm-1", 10, '["a"]'), ("sm-1", 20, '["b"]')]
    assert store.count_record_batches() == 2


def test_batches_a_redelivery_may_need_are_the_recent_and_the_unacknowledged(
    store: RelationStore,
) -> None:
    store.commit(RecordBatch("sm-1", 10, 1000, "old-acked"))
    store.commit(RecordBatch("sm-1", 20, 1000, "old-not-acked"))
    store.commit(RecordBatch("", 0, 1000, "old-no-session"))
    store.commit(RecordBatch("sm-2", 5, 9000, "recent"))
    store.commit(mark=SessionMark("sm-1", 15, 1000))
    assert [b.records for b in store.record_batches(5000)] == ["old-not-acked", "recent"]
    assert store.confirmed_marks() == {"sm-1": 15}


def test_a_mark_never_moves_back(store: RelationStore) -> None:
    store.commit(mark=SessionMark("sm-1", 15, 1000))
    store.commit(mark=SessionMark("sm-1", 9, 2000))
    assert store.confirmed_marks() == {"sm-1": 15}
    store.commit(mark=SessionMark("sm-1", 30, 3000))
    assert store.confirmed_marks() == {"sm-1": 30}


def test_a_batch_and_changes_commit_together(store: RelationStore) -> None:
    done = store.commit(RecordBatch("sm-1", 1, 1, "x"), [RelateChange(A, B, "friend")])
    assert done.flags == [True]
    assert done.batch is not None
    assert store.related(A, B, "friend")
    # A change that fails validation writes no batch either.
    with pytest.raises(StoreError):
        store.commit(RecordBatch("sm-1", 2, 1, "y"), [RelateChange(A, "", "friend")])
    assert store.count_record_batches() == 1


def test_a_batch_rolls_back_with_a_failing_change(store: RelationStore, location: str) -> None:
    fail_inserts_of(store, location, "boom@example.com")
    with pytest.raises(StoreError, match="injected failure"):
        store.commit(RecordBatch("sm-1", 1, 1, "x"), [RelateChange(A, B, "friend"),
                                                       RelateChange("boom@example.com", A,
                                                                    "friend")])
    assert store.count_record_batches() == 0
    assert not store.related(A, B, "friend")


def test_purge_keeps_what_a_redelivery_may_need(store: RelationStore) -> None:
    for n in range(5):
        store.commit(RecordBatch("sm-1", 10 * (n + 1), 1000 + n, f"s{n}"))
    store.commit(RecordBatch("", 0, 1000, "no-session"))
    store.commit(RecordBatch("sm-1", 60, 9000, "recent"))
    store.commit(mark=SessionMark("sm-1", 30, 1000))
    # window: before 5000; retention: before 500 (nothing that old)
    assert store.purge_records(5000, 500, 2) == 2  # bounded steps
    assert store.purge_records(5000, 500, 10) == 2  # s0..s2 acknowledged, and no-session
    assert [b.records for b in store.record_batches(0)] == ["s3", "s4", "recent"]
    # past the retention even what is not acknowledged goes
    assert store.purge_records(5000, 2000, 10) == 2
    assert [b.records for b in store.record_batches(0)] == ["recent"]


def test_sqlite_commits_records_alone_without_fsync_and_changes_with(tmp_path: Path) -> None:
    with SqliteStore(str(tmp_path / "s.sqlite3")) as store:
        conn = store._conn
        store.commit(RecordBatch("s", 1, 1, "x"), durable=False)
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        store.commit(RecordBatch("s", 2, 1, "x"), [RelateChange(A, B, "friend")], durable=False)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: a change
        store.commit(RecordBatch("s", 3, 1, "x"), durable=False)
        store.relate(A, C, "friend")
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)


def test_a_claimed_event_cannot_be_claimed_again_until_its_batch_is_purged(
        store: RelationStore) -> None:
    first = store.commit(RecordBatch("", 0, 1, "a"), claims=["k1", "k2"])
    assert first.batch is not None
    assert not first.taken
    second = store.commit(RecordBatch("", 0, 2, "b"), [RelateChange(A, B, "friend")],
                          claims=["k3", "k2"])
    assert dict(second.taken) == {"k2": first.batch}
    assert second.batch is None
    assert not store.related(A, B, "friend")  # nothing of it was written
    assert [b.records for b in store.record_batches(0)] == ["a"]
    third = store.commit(RecordBatch("", 0, 3, "c"), [RelateChange(A, B, "friend")],
                         claims=["k3"])
    assert not third.taken
    assert store.related(A, B, "friend")
    # purged with its batch: the claims are free again
    assert store.purge_records(10, 10, 100) == 2
    assert not store.commit(RecordBatch("", 0, 20, "d"), claims=["k1", "k2", "k3"]).taken


def test_a_claim_whose_batch_is_gone_is_free(store: RelationStore, location: str) -> None:
    first = store.commit(RecordBatch("", 0, 1, "a"), claims=["k1"])
    # the batch deleted by hand (an operator), its claim left behind
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as pg:
            pg.execute("DELETE FROM rulebot_inbound WHERE id = %s", (first.batch,))
    else:
        assert isinstance(store, SqliteStore)
        store._conn.execute("DELETE FROM rulebot_inbound WHERE id = ?", (first.batch,))
    again = store.commit(RecordBatch("", 0, 2, "b"), claims=["k1"])
    assert not again.taken
    assert again.batch is not None
    assert dict(store.commit(RecordBatch("", 0, 3, "c"), claims=["k1"]).taken) == {
        "k1": again.batch}


# --------------------------------------------------------------------------
# expiry


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_796_115_600.0  # 2026-12-01T09:00:00Z


def test_an_expired_relation_is_invisible_to_every_read_at_once(
        store: RelationStore) -> None:
    clock = Clock(T0)
    store.clock = clock  # type: ignore[method-assign]
    store.apply([RelateChange(A, B, "muted", {"by": "rule"}, expires=stamp(T0 + 3600)),
                 RelateChange(A, C, "muted"), RelateChange(B, A, "muted",
                                                           expires=stamp(T0 + 60))])
    got = store.get(A, B, "muted")
    assert got is not None
    assert got.expires == "2026-12-01T10:00:00.000000Z"
    assert store.count() == 3
    clock.now = T0 + 3600  # the instant it expires: gone
    assert not store.related(A, B, "muted")
    assert store.get(A, B, "muted") is None
    assert store.objects(A, "muted") == [C]
    assert store.subjects(B, "muted") == []
    assert [(r.subject, r.object) for r in store.list()] == [(A, C)]
    assert store.count() == 1
    out = io.StringIO()
    assert store.export_jsonl(out) == 1
    # nothing purged yet: the rows are there, only hidden
    clock.now = T0
    assert store.related(A, B, "muted")


def test_writing_an_expired_relation_starts_it_anew(store: RelationStore) -> None:
    clock = Clock(T0)
    store.clock = clock  # type: ignore[method-assign]
    assert store.apply([RelateChange(A, B, "muted", expires=stamp(T0 + 60))]) == [True]
    first = store.get(A, B, "muted")
    assert first is not None
    assert store.apply([RelateChange(A, B, "muted", expires=stamp(T0 + 120))]) == [False]
    refreshed = store.get(A, B, "muted")
    assert refreshed is not None
    assert refreshed.created == first.created  # a refresh keeps created
    assert refreshed.expires == stamp(T0 + 120)
    clock.now = T0 + 500
    assert store.apply([UnrelateChange(A, B, "muted")]) == [False]  # nothing visible to remove
    assert store.apply([RelateChange(A, B, "muted")]) == [True]  # new, and permanent now
    again = store.get(A, B, "muted")
    assert again is not None
    assert again.expires is None
    assert again.created == stamp(T0 + 500)


def test_expired_relations_are_purged_in_steps(store: RelationStore) -> None:
    clock = Clock(T0)
    store.clock = clock  # type: ignore[method-assign]
    store.apply([RelateChange(A, f"u{i}@example.com", "muted", expires=stamp(T0 + i))
                 for i in range(1, 6)] + [RelateChange(A, B, "friend")])
    clock.now = T0 + 4  # four expired
    assert store.purge_expired(limit=3) == 3
    assert store.purge_expired(limit=3) == 1
    assert store.purge_expired(limit=3) == 0
    clock.now = T0
    assert store.objects(A, "muted") == ["u5@example.com"]
    assert store.related(A, B, "friend")


def test_expiry_round_trips_through_export_and_import(store: RelationStore) -> None:
    store.apply([RelateChange(A, B, "muted", expires="2999-01-01T00:00:00Z")])
    out = io.StringIO()
    store.export_jsonl(out)
    assert '"expires":"2999-01-01T00:00:00.000000Z"' in out.getvalue()
    store.unrelate(A, B, "muted")
    assert store.import_jsonl(io.StringIO(out.getvalue())) == 1
    got = store.get(A, B, "muted")
    assert got is not None
    assert got.expires == "2999-01-01T00:00:00.000000Z"
    with pytest.raises(StoreError, match="expires must be an ISO 8601 UTC time"):
        store.import_jsonl(io.StringIO('{"subject": "a@x", "object": "b@x", "kind": "k", '
                                       '"expires": "soon"}\n'))


def test_counters_sum_the_counts_of_their_window_and_reset(store: RelationStore) -> None:
    clock = Clock(T0)
    store.clock = clock  # type: ignore[method-assign]
    assert store.apply([CountChange("strikes", A), CountChange("strikes", B, 3)]) == [True, True]
    clock.now = T0 + 60
    store.apply([CountChange("strikes", A), RelateChange(A, B, "friend")])
    assert store.count_since("strikes", A, T0 - 1) == 2
    assert store.count_since("strikes", A, T0) == 1  # the window starts after T0
    assert store.count_since("strikes", B, T0 - 1) == 3
    assert store.count_since("other", A, 0) == 0
    store.apply([ResetChange("strikes", A)])
    assert store.count_since("strikes", A, 0) == 0
    assert store.count_since("strikes", B, 0) == 3


def test_counts_are_purged_after_their_window(store: RelationStore) -> None:
    clock = Clock(T0)
    store.clock = clock  # type: ignore[method-assign]
    store.apply([CountChange("strikes", A), CountChange("gone", A)])
    clock.now = T0 + 100
    store.apply([CountChange("strikes", A)])
    assert store.purge_counts({"strikes": 50.0}, keep=1000) == 1  # the first strike
    assert store.count_since("strikes", A, 0) == 1
    assert store.count_since("gone", A, 0) == 1  # a counter not named: kept for `keep`
    clock.now = T0 + 2000
    assert store.purge_counts({"strikes": 5000.0}, keep=1000) == 1
    assert store.count_since("gone", A, 0) == 0


@pytest.mark.parametrize("bad", [CountChange("", A), CountChange("c", "k" * 2000),
                                 CountChange("c", A, 0), CountChange("c", A, True)])
def test_bad_counts_are_refused(store: RelationStore, bad: CountChange) -> None:
    with pytest.raises(StoreError):
        store.apply([bad])


def test_saved_buckets_are_upserted_and_old_ones_forgotten(store: RelationStore) -> None:
    assert store.save_buckets([("chat", A, 1.5, T0), ("chat", B, 0.0, T0 - 10)], T0) == 2
    store.save_buckets([("chat", A, 0.5, T0 + 5)], T0 + 5)  # A again: replaced
    assert sorted(store.load_buckets()) == [("chat", A, 0.5, T0 + 5), ("chat", B, 0.0, T0 - 10)]
    store.save_buckets([], T0 + 86400)  # B unused for a day: full again, forgotten
    assert store.load_buckets() == [("chat", A, 0.5, T0 + 5)]


def test_the_store_keeps_one_timer_per_key_and_leases_due_ones(store: RelationStore) -> None:
    store.clock = lambda: T0  # type: ignore[method-assign]
    store.apply([ScheduleChange("k1", T0 + 10, "a@x", {"n": 1}, "r"),
                 ScheduleChange("k2", T0 + 5, "a@x", {"n": 2}, "r"),
                 ScheduleChange("k3", T0 + 50, "b@x", {"n": 3}, "r")])
    store.apply([ScheduleChange("k1", T0 + 20, "a@x", {"n": 9}, "r")])  # rescheduled
    assert store.timer_count("a@x") == 2
    assert store.timer_count() == 3
    assert store.due_timers(T0 + 4, 10, 30) == []
    due = store.due_timers(T0 + 25, 10, 30)
    assert [(t.key, t.event) for t in due] == [("k2", '{"n":2}'), ("k1", '{"n":9}')]
    assert store.due_timers(T0 + 26, 10, 30) == []  # leased: another taker skips them
    assert [t.key for t in store.due_timers(T0 + 56, 10, 30)] == ["k2", "k1", "k3"]  # lease over
    assert store.fired("k2", due[0].due)
    assert not store.fired("k1", T0 + 10)  # not that due time: rescheduled meanwhile
    store.apply([CancelChange("k1")])
    assert store.timer("k1") is None
    assert store.timer_count() == 1



# --------------------------------------------------------------------------
# schema and opening


def test_schema_is_created_once_with_a_version(store: RelationStore, location: str) -> None:
    store.relate(A, B, "friend")
    with open_store(location) as again:  # opening an existing store changes nothing
        assert again.count() == 1
    if isinstance(store, SqliteStore):
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        rows = conn.execute("SELECT version FROM rulebot_schema_version").fetchall()
        assert rows == [(5,)]
        assert Path(location).stat().st_mode & 0o777 == 0o600
    else:
        with psycopg.connect(location, autocommit=True) as pg:
            assert pg.execute("SELECT max(version) FROM rulebot_schema_version").fetchall() == [
                (5,)]
            assert pg.execute("SELECT count(*) FROM pg_indexes WHERE tablename = "
                              "'rulebot_relations'").fetchone() == (3,)  # + expires
        db = store._db  # type: ignore[attr-defined]
        assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert db.autocommit  # reads never leave the session idle in transaction


def test_a_version_1_store_gains_the_records_and_buckets_tables_and_keeps_its_relations(
    store: RelationStore, location: str
) -> None:
    store.relate(A, B, "friend")
    store.close()
    # What rulebot before the idempotency records left behind.
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as pg:
            pg.execute("DROP TABLE rulebot_inbound, rulebot_inbound_sessions, rulebot_buckets, "
                       "rulebot_presence, rulebot_inbound_claims, rulebot_counts, "
                       "rulebot_timers")
            pg.execute("ALTER TABLE rulebot_relations DROP COLUMN expires")
            pg.execute("DELETE FROM rulebot_schema_version WHERE version > 1")
    else:
        import sqlite3

        with sqlite3.connect(location) as lite:
            lite.execute("DROP TABLE rulebot_inbound")
            lite.execute("DROP TABLE rulebot_inbound_sessions")
            lite.execute("DROP TABLE rulebot_buckets")
            lite.execute("DROP TABLE rulebot_presence")
            lite.execute("DROP TABLE rulebot_inbound_claims")
            lite.execute("DROP TABLE rulebot_counts")
            lite.execute("DROP TABLE rulebot_timers")
            lite.execute("DROP INDEX rulebot_relations_expires")
            lite.execute("ALTER TABLE rulebot_relations DROP COLUMN expires")
            lite.execute("UPDATE rulebot_schema_version SET version = 1")
        lite.close()
    with open_store(location) as again:
        assert again.related(A, B, "friend")
        done = again.commit(RecordBatch("sm-1", 1, 5, "[]"))
        assert done.batch is not None
        assert again.record_batch(done.batch) == "[]"
        assert again.take_token("chat", A, 1.0, 1, 5.0)
        assert not again.commit(RecordBatch("sm-1", 2, 5, "[]"), claims=["k"]).taken
        again.apply([RelateChange(A, C, "muted", expires="2999-01-01T00:00:00Z")])
        got = again.get(A, C, "muted")
        assert got is not None
        assert got.expires == "2999-01-01T00:00:00.000000Z"
        again.apply([CountChange("strikes", A)])
        assert again.count_since("strikes", A, 0) == 1
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as pg:
            assert pg.execute("SELECT max(version) FROM rulebot_schema_version").fetchone() == (5,)
    else:
        with sqlite3.connect(location) as lite:
            assert lite.execute("SELECT max(version) FROM rulebot_schema_version").fetchone() == (
                5,)
        lite.close()


def test_newer_schema_version_is_refused(store: RelationStore, location: str) -> None:
    store.close()
    if location.startswith("postgresql://"):
        with psycopg.connect(location, autocommit=True) as pg:
            pg.execute("UPDATE rulebot_schema_version SET version = 99")
    else:
        import sqlite3

        with sqlite3.connect(location) as lite:
            lite.execute("UPDATE rulebot_schema_version SET version = 99")
        lite.close()
    with pytest.raises(StoreError, match="99"):
        open_store(location)


def test_postgres_reconnects_after_losing_its_connection(pg_cluster: pgserver.PgInfo) -> None:
    reset_pg(pg_cluster.url)
    with open_store(pg_cluster.url) as store:
        store.relate(A, B, "friend")
        pid = store._db.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(pg_cluster.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="lookup failed"):
            store.related(A, B, "friend")
        assert store.related(A, B, "friend")  # a new connection


def test_postgres_errors_never_show_the_password(pg_cluster: pgserver.PgInfo) -> None:
    wrong = pg_cluster.url.replace(pg_cluster.password, "s3cr3t-Wrong")
    with pytest.raises(StoreError) as info:
        open_store(wrong)
    message = str(info.value)
    assert "password authentication failed" in message
    assert "s3cr3t-Wrong" not in message
    assert "postgresql://rulebot:***@" in message
    for url in ["postgresql://u:s3cr3t@127.0.0.1:1/db",
                "postgresql://u:s3cr3t@127.0.0.1/db?bogus=1",
                "postgres://u:s3cr3t@[::1/db",
                "postgresql://u@127.0.0.1:1/db?password=s3cr3t"]:
        with pytest.raises(StoreError) as info:
            open_store(url)
        assert "s3cr3t" not in str(info.value), str(info.value)


@pytest.mark.parametrize(("where", "message"), [
    ("mysql://u:pw@h/db", "unsupported store URL mysql://u:***@h/db"),
    ("sqlite:relative.db", "unsupported store URL sqlite:relative.db"),
    ("sqlite:///", "empty store path"),
    ("", "empty store path"),
])  # fmt: skip
def test_open_store_refuses_unknown_locations(where: str, message: str) -> None:
    with pytest.raises(StoreError, match=f"^{message.replace('*', '[*]')}"):
        open_store(where)


def test_sqlite_open_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot create SQLite store .*No such file"):
        open_store(str(tmp_path / "missing" / "x.db"))
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database, " * 100)
    with pytest.raises(StoreError, match="file is not a database"):
        open_store(str(junk))
    with open_store(f"sqlite:///{tmp_path}/url.db") as s:
        s.relate(A, B, "friend")
    assert (tmp_path / "url.db").exists()
    with open_store(":memory:") as mem:
        assert mem.relate(A, B, "friend")
        assert mem.count() == 1


def test_resolve_location_and_redact_url() -> None:
    base = Path("/etc/rulebot")
    assert resolve_location("rulebot.sqlite3", base) == "/etc/rulebot/rulebot.sqlite3"
    assert resolve_location("/var/lib/r.db", base) == "/var/lib/r.db"
    assert resolve_location("sqlite:///r.db", base) == "sqlite:////etc/rulebot/r.db"
    assert resolve_location("sqlite:////abs/r.db", base) == "sqlite:////abs/r.db"
    assert resolve_location("postgresql://u@h/db", base) == "postgresql://u@h/db"
    assert redact_url("postgresql://u:p%40ss@h:5/db?x=1") == "postgresql://u:***@h:5/db?x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_daemon_s_sqlite_store_checkpoints_in_a_thread_not_in_its_commits(
    tmp_path: Path,
) -> None:
    # A commit that fills the WAL checkpoints it, with two fsyncs, on the
    # daemon's event loop: the daemon's store leaves that to a thread.
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    store.start_housekeeping()
    try:
        conn = store._conn
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (25_000,)
        for n in range(300):  # ~1,200 WAL pages: past SQLite's own 1,000
            store.commit(RecordBatch("s", n, 1, "x" * 16_000), durable=False)
        wal = tmp_path / "s.sqlite3-wal"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # a checkpointed WAL is written again from its start: it stops growing
            # and the database file holds the pages
            if (tmp_path / "s.sqlite3").stat().st_size > 4_000_000:
                break
            time.sleep(0.1)
        assert (tmp_path / "s.sqlite3").stat().st_size > 4_000_000, wal.stat().st_size
    finally:
        store.close()
    assert store._checkpointer is None


def test_workers_opening_a_fresh_database_at_once_all_get_the_schema(
        pg_cluster: pgserver.PgInfo) -> None:
    # Several workers start together on an empty database: one creates the
    # tables, the others wait and find them (found failing with "relation
    # rulebot_schema_version already exists" by tests/integration/test_workers.py).
    for _ in range(3):
        reset_pg(pg_cluster.url)
        opened, errors = open_at_once(pg_cluster.url, 6)
        for s in opened:
            s.close()
        assert errors == []
        assert len(opened) == 6


def open_at_once(url: str, n: int) -> tuple[list[RelationStore], list[BaseException]]:
    import threading

    opened: list[RelationStore] = []
    errors: list[BaseException] = []
    go = threading.Barrier(n)

    def open_one() -> None:
        go.wait()
        try:
            opened.append(open_store(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return opened, errors


# --------------------------------------------------------------------------
# rate-limit buckets shared by workers


def test_a_bucket_refills_at_its_rate_up_to_its_burst(store: RelationStore) -> None:
    take = store.take_token
    assert [take("chat", "alice", 1.0, 3, 100.0) for _ in range(4)] == [True, True, True, False]
    assert take("chat", "bob", 1.0, 3, 100.0)  # per key
    assert [take("chat", "alice", 1.0, 3, 101.0) for _ in range(2)] == [True, False]
    assert [take("chat", "alice", 1.0, 3, 500.0) for _ in range(4)] == [True, True, True, False]
    assert not take("other", "x", 1.0, 0, 100.0)  # burst 0: never


def test_full_buckets_are_purged_and_come_back_full(store: RelationStore) -> None:
    for _ in range(3):
        store.take_token("chat", "alice", 1.0, 3, 100.0)
    store.take_token("chat", "bob", 1.0, 3, 100.0)
    assert store.purge_buckets(101.5) == 1  # bob is full again at 101; alice at 103
    assert store.purge_buckets(103.5) == 1
    assert [store.take_token("chat", "alice", 1.0, 3, 103.5) for _ in range(4)] == [
        True, True, True, False]


def test_workers_taking_from_one_bucket_at_once_take_exactly_its_burst(
        location: str) -> None:
    import threading

    stores = [open_store(location) for _ in range(3)]
    taken: list[bool] = []
    go = threading.Barrier(len(stores))

    def worker(s: RelationStore) -> None:
        go.wait()
        for _ in range(100):
            taken.append(s.take_token("chat", "alice", 1e-9, 50, 100.0))

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert len(taken) == 300
    assert taken.count(True) == 50


# --------------------------------------------------------------------------
# silences


def test_silences_are_added_listed_expired_and_purged(store: RelationStore) -> None:
    from rulebot.model import Silence
    from rulebot.store.silences import KEEP_ENDED

    now = 1_796_205_600.0
    mute = Silence("s1", now + 3600, "ops", "flood from a bot", rule="chat", starts=now,
                   created=now)
    later = Silence("s2", now + 7200, "ops", "noisy", sender=A, match="event.room == 'x'",
                    starts=now + 60, created=now)
    store.silence_add(later)
    store.silence_add(mute)
    assert store.silences(now) == [mute, later]  # soonest end first, every field kept
    assert store.silence_expire("s1", now + 10)
    assert not store.silence_expire("s1", now + 20)  # ended already
    assert not store.silence_expire("nope", now)
    assert [s.id for s in store.silences(now + 11)] == ["s2"]
    ended = store.silences()
    assert [(s.id, s.ends) for s in ended] == [("s1", now + 10), ("s2", now + 7200)]
    assert store.purge_silences(now + 10 + KEEP_ENDED - 1) == 0
    assert store.purge_silences(now + 10 + KEEP_ENDED + 1) == 1
    assert [s.id for s in store.silences()] == ["s2"]
    with pytest.raises(StoreError):
        store.silence_add(later)  # ids are unique
