"""`rulebot relations` through click's CliRunner: SQLite, and once PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rulebot.cli.main import main
from rulebot.cli.relations import relations
from rulebot.store.open import open_store
from scripts import pgserver

A, B, C = "alice@example.com", "bob@example.com", "carol@example.com"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(relations, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def without_created(out: str) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k != "created"} for row in lines(out)]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "r.sqlite3")


def test_add_list_remove(db: str) -> None:
    code, out, _ = run("--store", db, "add", A, B, "friend", "--attrs", '{"since": 2024}')
    assert (code, lines(out)) == (0, [{"subject": A, "object": B, "kind": "friend",
                                       "result": "added"}])
    code, out, _ = run("--store", db, "add", A, B, "friend")
    assert lines(out)[0]["result"] == "updated"
    run("--store", db, "add", C, A, "blocked")
    code, out, _ = run("--store", db, "list")
    assert code == 0
    assert without_created(out) == [
        {"subject": A, "object": B, "kind": "friend", "attrs": {}},
        {"subject": C, "object": A, "kind": "blocked", "attrs": {}},
    ]
    assert without_created(run("--store", db, "list", "--kind", "blocked")[1]) == [
        {"subject": C, "object": A, "kind": "blocked", "attrs": {}}]
    assert without_created(run("--store", db, "list", "--object", B)[1])[0]["subject"] == A
    assert run("--store", db, "list", "--subject", B)[1] == ""
    code, out, _ = run("--store", db, "remove", A, B, "friend")
    assert (code, lines(out)[0]["result"]) == (0, "removed")
    code, out, _ = run("--store", db, "remove", A, B, "friend")
    assert (code, lines(out)[0]["result"]) == (0, "absent")


def test_mutual_adds_and_removes_both_directions(db: str) -> None:
    code, out, _ = run("--store", db, "add", A, B, "friend", "--mutual")
    assert code == 0
    assert [(r["subject"], r["object"], r["result"]) for r in lines(out)] == [
        (A, B, "added"), (B, A, "added")]
    with open_store(db) as store:
        assert store.related(A, B, "friend")
        assert store.related(B, A, "friend")
    code, out, _ = run("--store", db, "remove", B, A, "friend", "--mutual")
    assert [r["result"] for r in lines(out)] == ["removed", "removed"]
    with open_store(db) as store:
        assert store.count() == 0


def test_jids_are_stored_bare_and_lower_case(db: str) -> None:
    run("--store", db, "add", "Alice@Example.COM/phone", "BOB@example.com", "friend")
    with open_store(db) as store:
        assert store.related(A, B, "friend")
    assert len(lines(run("--store", db, "list", "--subject", "ALICE@example.com/x")[1])) == 1


@pytest.mark.parametrize(("args", "code", "message"), [
    (["add", A, B, "Friend"], 1, "rulebot relations: kind must match ^[a-z][a-z0-9_-]{0,63}$"),
    (["add", A, B, "friend", "--attrs", "{bad"], 2, "Invalid value for '--attrs': not JSON"),
    (["add", A, B, "friend", "--attrs", "[1]"], 2, "must be a JSON object"),
    (["add", A, B, "friend", "--attrs", json.dumps({"x": "y" * 5000})], 1,
     "rulebot relations: attrs is larger than 4096 bytes as JSON"),
    (["remove", "", B, "friend"], 1, "rulebot relations: subject must be a non-empty string"),
    (["add", A, B], 2, "Missing argument 'KIND'"),
])  # fmt: skip
def test_bad_input(db: str, args: list[str], code: int, message: str) -> None:
    got, out, err = run("--store", db, *args)
    assert (got, out) == (code, "")
    assert message in err
    with open_store(db) as store:
        assert store.count() == 0


def test_export_and_import(db: str, tmp_path: Path) -> None:
    run("--store", db, "add", A, B, "friend", "--mutual", "--attrs", '{"n": "é"}')
    code, out, _ = run("--store", db, "export")
    assert code == 0
    assert len(lines(out)) == 2
    target = tmp_path / "backup.jsonl"
    target.write_text("old contents\n")
    code, _, err = run("--store", db, "export", str(target))
    assert code == 0
    assert err == f"exported 2 relation(s) to {target}\n"
    assert target.read_text(encoding="utf-8") == out
    assert target.stat().st_mode & 0o777 == 0o600
    other = str(tmp_path / "other.sqlite3")
    code, out2, _ = run("--store", other, "import", str(target))
    assert (code, out2) == (0, "2\n")
    assert run("--store", other, "export")[1] == out


def test_a_long_import_reports_progress(db: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rulebot.store.base.PROGRESS_EVERY", 2)
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"subject": A, "object": f"u{n}@localhost",
                                     "kind": "friend"}) + "\n" for n in range(5)))
    code, out, err = run("--store", db, "import", str(f))
    assert (code, out) == (0, "5\n")
    assert err == "read 2 relations ...\nread 4 relations ...\n"


def test_export_to_a_missing_directory_fails_cleanly(db: str, tmp_path: Path) -> None:
    code, out, err = run("--store", db, "export", str(tmp_path / "nope" / "x.jsonl"))
    assert (code, out) == (1, "")
    assert err.startswith("rulebot relations: ")
    assert "No such file or directory" in err


def test_bad_import_names_the_line_and_imports_nothing(db: str, tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"subject": A, "object": B, "kind": "friend"}) + "\n"
                 + json.dumps({"subject": A, "object": C, "kind": "no such"}) + "\n")
    code, out, err = run("--store", db, "import", str(f))
    assert (code, out) == (1, "")
    assert err == ("rulebot relations: line 2: kind must match ^[a-z][a-z0-9_-]{0,63}$, "
                   "not 'no such'\n")
    with open_store(db) as store:
        assert store.count() == 0


def test_store_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "rulebot.yaml"
    cfg.parent.mkdir()
    cfg.write_text("jid: friend@localhost\nrules: rules\n")
    assert run("--config", str(cfg), "add", A, B, "friend")[0] == 0
    assert (cfg.parent / "rulebot.sqlite3").exists()  # the default, next to the config
    cfg.write_text("jid: friend@localhost\nrules: rules\nstore: data/rel.db\n")
    (cfg.parent / "data").mkdir()
    assert run("--config", str(cfg), "add", A, C, "friend")[0] == 0
    with open_store(str(cfg.parent / "data" / "rel.db")) as store:
        assert store.objects(A, "friend") == [C]
    # RULEBOT_STORE in the environment yields to an explicit --config
    code, out, _ = run("--config", str(cfg), "list", env={"RULEBOT_STORE": "/nonexistent/x"})
    assert code == 0
    assert len(lines(out)) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("store: 42\n", "store must be a SQLite path or a postgresql:// URL, not 42"),
    ("store: ''\n", "store must be a SQLite path or a postgresql:// URL, not ''"),
    ("- a list\n", "not a rulebot config (expected a mapping)"),
    ("key: [unclosed\n", "cannot read"),
])  # fmt: skip
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "rulebot.yaml"
    cfg.write_text(text)
    code, _, err = run("--config", str(cfg), "list")
    assert code == 1
    assert err.startswith("rulebot relations: ")
    assert message in err


def test_usage_errors(db: str, tmp_path: Path) -> None:
    code, _, err = run("list", env={"RULEBOT_STORE": ""})
    assert code == 2
    assert "give --store URL_OR_PATH (or set RULEBOT_STORE) or --config" in err
    cfg = tmp_path / "rulebot.yaml"
    cfg.write_text("{}\n")
    code, _, err = run("--store", db, "--config", str(cfg), "list")
    assert code == 2
    assert "give --store or --config, not both" in err


def test_store_errors_exit_1(tmp_path: Path) -> None:
    code, _, err = run("--store", "mysql://u:pw@h/db", "list")
    assert code == 1
    assert err == ("rulebot relations: unsupported store URL mysql://u:***@h/db (expected "
                   "postgresql://..., sqlite:///PATH or a file path)\n")
    code, _, err = run("--store", str(tmp_path / "no" / "such.db"), "list")
    assert code == 1
    assert "cannot create SQLite store" in err


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.PgInfo]:
    info = pgserver.start_postgres(tmp_path_factory.mktemp("pg-cli"))
    try:
        yield info
    finally:
        pgserver.stop_postgres(info)


def test_postgres_store(pg: pgserver.PgInfo, tmp_path: Path) -> None:
    env = {"RULEBOT_STORE": pg.url}  # keeps the password out of the command line
    assert run("add", A, B, "friend", "--mutual", "--attrs", '{"x": [1]}', env=env)[0] == 0
    code, out, _ = run("list", "--kind", "friend", env=env)
    assert code == 0
    assert [(r["subject"], r["attrs"]) for r in lines(out)] == [
        (A, {"x": [1]}), (B, {"x": [1]})]
    backup = tmp_path / "b.jsonl"
    assert run("export", str(backup), env=env)[0] == 0
    assert run("remove", A, B, "friend", "--mutual", env=env)[0] == 0
    assert run("import", str(backup), env=env)[1] == "2\n"
    assert run("export", env=env)[1] == backup.read_text(encoding="utf-8")
    wrong = pg.url.replace(pg.password, "not-the-password")
    code, _, err = run("--store", wrong, "list")
    assert code == 1
    assert "password authentication failed" in err
    assert "not-the-password" not in err


@pytest.mark.parametrize("args", [["relations", "list", "--help"],
                                  ["silence", "add", "--help"]])
def test_a_subcommands_help_needs_no_store(args: list[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RULEBOT_STORE", raising=False)
    result = CliRunner().invoke(main, args, prog_name="rulebot")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: rulebot {args[0]} {args[1]}")
