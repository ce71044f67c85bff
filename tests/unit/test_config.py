"""The daemon's config file: defaults, located errors, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rulebot.cli.main import main
from rulebot.config import archive_salt, parse_config, read_secret, with_workers, worker_config
from rulebot.errors import ConfigError


def test_minimal_client_config_gets_safe_defaults(tmp_path: Path) -> None:
    c = parse_config("jid: friend@example.com\nrules: rules\n", "c.yaml", tmp_path)
    assert (c.mode, c.host, c.port, c.resource) == ("client", "example.com", 5222, "rulebot")
    assert c.tls.verify
    assert not c.tls.allow_plain
    assert c.allowed_domains == ("example.com",)
    assert c.rules == str(tmp_path / "rules")
    assert (c.password_env, c.password_file) == ("RULEBOT_PASSWORD", None)


def test_component_defaults() -> None:
    c = parse_config("mode: component\njid: friend.example.com\nrules: r\n")
    assert (c.port, c.allowed_domains) == (5347, ("example.com",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("jid: friend@x\nrules: r\npasword: x\n",
                     "c.yaml:3:1: pasword: unknown key 'pasword'", id="unknown-key"),
        pytest.param("jid: friend\nrules: r\n",
                     "c.yaml:1:6: jid: client mode needs a bare user JID", id="client-jid"),
        pytest.param("mode: component\njid: a@b\nrules: r\n",
                     "c.yaml:2:6: jid: component mode needs a domain JID", id="component-jid"),
        pytest.param("jid: f@x\nrules: r\nserver: {port: 99999}\n",
                     "c.yaml:3:16: server.port: 99999 is greater than the maximum", id="port"),
        pytest.param("jid: f@x\n", "c.yaml:1:1: missing required key 'rules'", id="missing"),
        pytest.param("jid: f@x\nrules: r\noffline_sweep: 0.01\n",
                     "c.yaml:3:16: offline_sweep: offline_sweep must be 0 (off) or at least 1",
                     id="sweep-interval"),
        pytest.param("jid: f@x\nrules: r\noffline_sweep: -1\n",
                     "c.yaml:3:16: offline_sweep: -1 is less than the minimum",
                     id="sweep-negative"),
    ],
)
def test_config_errors_are_located(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert err.value.issues[0].format().startswith(expected)


def test_secret_from_environment_or_file(tmp_path: Path) -> None:
    c = parse_config("jid: f@x\nrules: r\npassword_env: BOT_PW\n")
    assert read_secret(c, {"BOT_PW": "s3"}) == "s3"
    with pytest.raises(ConfigError) as err:
        read_secret(c, {})
    assert "BOT_PW is not set" in str(err.value)
    (tmp_path / "pw").write_text("from-file\nignored\n")
    c2 = parse_config("jid: f@x\nrules: r\npassword_file: pw\n", base=tmp_path)
    assert read_secret(c2, {}) == "from-file"


def test_password_in_the_config_file_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("jid: f@x\nrules: r\npassword: hunter2\n", "c.yaml")
    assert "unknown key 'password'" in str(err.value)


def test_validate_config_checks_config_and_its_rules(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    good = tmp_path / "good.yaml"
    good.write_text(f"jid: friend@localhost\nrules: {root / 'rules'}\n")
    result = CliRunner().invoke(main, ["validate", "--config", str(good)])
    assert result.exit_code == 0, result.output
    (tmp_path / "bad-rules.yaml").write_text("version: 1\nrules: [{name: x}]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jid: friend@localhost\nrules: bad-rules.yaml\ntls: {verfy: true}\n")
    result = CliRunner().invoke(main, ["validate", "--config", str(bad)])
    assert result.exit_code == 1
    assert "tls.verfy: unknown key 'verfy', did you mean 'verify'?" in result.stdout


PG = "postgresql://rulebot@127.0.0.1/rulebot"


@pytest.mark.parametrize(("text", "why"), [
    ("jid: friend@example.com\nworkers: 2\nstore: " + PG, "component mode"),
    ("mode: component\njid: friend.example.com\nworkers: 2\nstore: x.sqlite3",
     "postgresql:// store"),
])
def test_several_workers_need_component_mode_and_postgresql(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text + "\nrules: r\n", "c.yaml")
    (issue,) = exc.value.issues
    assert why in issue.message
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("workers"))
    assert (issue.path, issue.line) == ("workers", line)


def test_each_worker_gets_its_node_status_port_and_audit_file() -> None:
    c = parse_config("mode: component\njid: friend.example.com\nrules: r\nworkers: 3\n"
                     f"store: {PG}\nstatus: {{listen: '127.0.0.1:9464'}}\n"
                     "audit: {path: /var/log/rulebot/audit.jsonl}\n"
                     "servers: [{host: 10.0.0.1, port: 5347}, {host: 10.0.0.2, port: 5347}]\n")
    assert (c.workers, c.idempotency_follow) == (3, 0.25)
    w = [worker_config(c, i) for i in range(3)]
    assert [(x.host, x.port) for x in w] == [("10.0.0.1", 5347), ("10.0.0.2", 5347),
                                            ("10.0.0.1", 5347)]
    assert [x.status_listen for x in w] == ["127.0.0.1:9464", "127.0.0.1:9465",
                                            "127.0.0.1:9466"]
    assert [x.audit_path for x in w] == [f"/var/log/rulebot/audit.jsonl.w{i}" for i in range(3)]


def test_workers_on_the_command_line_are_checked_like_the_config() -> None:
    c = parse_config("jid: friend@example.com\nrules: r\n")
    with pytest.raises(ConfigError) as exc:
        with_workers(c, 2)
    assert sorted(i.message for i in exc.value.issues) == [
        "several workers need a postgresql:// store", "several workers need component mode"]
    one = with_workers(c, 1)
    assert (one.workers, one.idempotency_follow) == (1, 0.0)


def test_archive_and_shadow_keys(tmp_path: Path) -> None:
    c = parse_config("jid: friend@example.com\nrules: rules\nshadow: candidate\n"
                     "archive: {path: archive.jsonl, max_bytes: 100000, backups: 2,\n"
                     "          drop: [event.text], hash: [event.to], salt_env: SALT}\n",
                     "c.yaml", tmp_path)
    assert (c.shadow, c.archive_path) == (str(tmp_path / "candidate"),
                                          str(tmp_path / "archive.jsonl"))
    assert (c.archive_max_bytes, c.archive_backups) == (100_000, 2)
    assert (c.archive_drop, c.archive_hash, c.archive_salt_env) == (
        ("event.text",), ("event.to",), "SALT")
    assert archive_salt(c, {"SALT": "pepper"}) == "pepper"
    with pytest.raises(ConfigError, match="SALT is not set"):
        archive_salt(c, {})
    # no hashed fields: no salt needed
    plain = parse_config("jid: f@example.com\nrules: r\narchive: {path: a.jsonl}\n")
    assert (archive_salt(plain, {}), plain.archive_max_bytes, plain.archive_backups) == (
        "", 100_000_000, 10)


@pytest.mark.parametrize("archive", ["{drop: [text]}", "{path: a, hash: [event.x.]}",
                                     "{path: a, backups: -1}", "{path: a, keep: 3}"])
def test_bad_archive_settings_are_located(archive: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"jid: f@example.com\nrules: r\narchive: {archive}\n", "c.yaml")
    assert "c.yaml:3" in str(err.value)


def test_each_worker_gets_its_archive_file() -> None:
    c = with_workers(parse_config(
        "mode: component\njid: friend.example.com\nrules: r\n"
        "store: postgresql://rulebot@127.0.0.1/rulebot\narchive: {path: /var/a.jsonl}\n"), 2)
    assert [worker_config(c, i).archive_path for i in range(2)] == ["/var/a.jsonl.w0",
                                                                   "/var/a.jsonl.w1"]


def test_validate_config_notes_a_missing_secret_without_failing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RULEBOT_PASSWORD", raising=False)
    rules = Path(__file__).resolve().parents[2] / "rules"
    config = tmp_path / "c.yaml"
    config.write_text(f"jid: friend@localhost\nrules: {rules}\n")
    result = CliRunner().invoke(main, ["validate", "--strict", "--config", str(config)])
    assert result.exit_code == 0, result.output
    # the whole file, not a place in it (was c.yaml:0:0:)
    assert (f"note: rulebot run would not start here: {config}: password_env: environment "
            "variable RULEBOT_PASSWORD is not set") in result.stderr
    monkeypatch.setenv("RULEBOT_PASSWORD", "x")
    assert "note:" not in CliRunner().invoke(main, ["validate", "--config",
                                                    str(config)]).stderr
