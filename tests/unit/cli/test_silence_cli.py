"""`rulebot silence add|list|expire` over a SQLite store, and explain --silences."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from rulebot.cli.main import main

ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(main, list(args))
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.stderr


def test_add_list_expire(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite3")
    code, (made,), _ = run("silence", "--store", store, "add", "--rule", "chat-to-member",
                           "--until", "2h", "--comment", "relay loop", "--author", "ana")
    assert code == 0
    assert (made["rule"], made["author"], made["comment"]) == ("chat-to-member", "ana",
                                                               "relay loop")
    code, listed, _ = run("silence", "--store", store, "list")
    assert code == 0
    assert [(s["id"], s["state"]) for s in listed] == [(made["id"], "active")]
    code, (ended,), _ = run("silence", "--store", store, "expire", str(made["id"]))
    assert (code, ended["id"]) == (0, made["id"])
    assert run("silence", "--store", store, "list")[1] == []
    assert [s["state"] for s in run("silence", "--store", store, "list", "--all")[1]] == [
        "ended"]
    code, _, err = run("silence", "--store", store, "expire", str(made["id"]))
    assert code == 1
    assert "no silence in force" in err


def test_an_invalid_silence_is_refused_with_every_problem(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite3")
    code, out, err = run("silence", "--store", store, "add", "--sender", "no jid",
                         "--match", "event.room ==", "--until", "1h", "--comment", "x")
    assert (code, out) == (1, [])
    assert "is not a JID" in err
    assert "invalid JMESPath" in err
    code, _, err = run("silence", "--store", store, "add", "--rule", "r", "--until",
                       "next week", "--comment", "x")
    assert code == 2
    assert "not a duration" in err
    assert run("silence", "--store", store, "list")[1] == []


def test_until_an_iso_time_and_explain_applies_the_store(tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite3")
    code, (made,), _ = run("silence", "--store", store, "add", "--sender", "alice@localhost",
                           "--until", "2099-01-01T00:00:00Z", "--comment", "spam")
    assert code == 0
    assert str(made["ends"]).startswith("2099-01-01T00:00:00")
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"type": "chat", "to": "bob@localhost", "text": "x"}))
    result = CliRunner().invoke(main, ["explain", str(ROOT / "rules"), "--event", str(event),
                                       "--silences", store])
    assert result.exit_code == 0
    assert f"dropped by silence {made['id']}" in result.stdout
    assert f"silenced by: {made['id']}" in result.stdout
