"""The `rulebot` command group and its commands validate, schema, eval, explain,
status and run; send/listen (cli.talk), relations (cli.relations) and test
(cli.test) are registered here.

Signals and asyncio.run live here only.
Exit codes: 0 success, 1 invalid input (rules, events), 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

import click

from rulebot import __version__
from rulebot.cli.lines import NOW_OPTION, read_events
from rulebot.engine.evaluate import evaluate
from rulebot.engine.render import decision_json
from rulebot.errors import EventError
from rulebot.jid import bare_jid
from rulebot.load.schema import SCHEMA_NAMES, schema_text
from rulebot.model import Envelope, Issue, Stanza, shorten
from rulebot.rules.loader import check_rules
from rulebot.wire.decode import Limits, decode_event

if TYPE_CHECKING:
    from rulebot.config import Config
    from rulebot.rules.silences import Muting


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rulebot")
def main() -> None:
    """rulebot: business logic for an XMPP service, written as rules."""


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: one issue a line; json: a list of issues.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Also check a daemon config file (rulebot.yaml) and the rules (and shadow "
                   "rules) it names.")
def validate(paths: tuple[str, ...], fmt: str, strict: bool, config_path: str | None) -> None:
    """Check rule files or directories: YAML, schema, expressions, names.

    Prints every issue as FILE:LINE:COL: PATH: MESSAGE (VALUE), sorted by
    position. Exits 0 when valid (warnings allowed), 1 when invalid, 2 usage."""
    from rulebot.config import load_config
    from rulebot.errors import ConfigError

    targets = list(paths)
    config_issues: tuple[Issue, ...] = ()
    notes: list[str] = []
    if config_path:
        try:
            config = load_config(config_path)
            targets.append(config.rules)
            notes = _secrets_missing(config)
            if config.shadow:  # the candidate is a rule set of its own
                targets.append(config.shadow)
        except ConfigError as exc:
            config_issues = exc.issues
    if not targets and not config_issues:
        raise click.UsageError("give rule files/directories, or --config FILE")
    # Each path is its own rule set (a directory's files form one set).
    results = [(t, check_rules([t])) for t in targets]
    issues = tuple(sorted((*config_issues, *(i for _, r in results for i in r.issues)),
                          key=Issue.sort_key))
    errors = [i for i in issues if i.severity == "error"]
    failed = bool(errors) or (strict and bool(issues))
    for note in notes:
        click.echo(note, err=True)
    if fmt == "json":
        click.echo(json.dumps([i.to_json() for i in issues], indent=2))
    else:
        for issue in issues:
            click.echo(issue.format())
        for target, result in results:
            rs = result.ruleset
            if rs is not None:
                n_warn = len(result.issues)
                click.echo(f"ok: {target}: {len(rs.rules)} rules in {len(rs.files)} file(s), "
                           f"version {rs.version}" + (f", {n_warn} warning(s)" if n_warn
                                                       else ""), err=True)
        if failed:
            click.echo(f"invalid: {len(errors)} error(s), {len(issues) - len(errors)} "
                       "warning(s)", err=True)
    sys.exit(1 if failed else 0)


def _secrets_missing(config: Config) -> list[str]:
    """What `rulebot run` would refuse in this environment (the password or
    secret, the archive's salt), as notes that fail nothing, not even with
    --strict: a CI job validating the config has no secrets, the host that
    runs the bot must."""
    from rulebot.config import archive_salt, read_secret
    from rulebot.errors import ConfigError

    found: list[str] = []
    for check in (read_secret, archive_salt):
        try:
            check(config)
        except ConfigError as exc:
            found += [f"note: rulebot run would not start here: {i.format()}"
                      for i in exc.issues]
    return found


@main.command()
@click.argument("name", type=click.Choice(SCHEMA_NAMES), default="rules")
def schema(name: str) -> None:
    """Print a JSON Schema (rules or config), e.g. for yaml-language-server."""
    click.echo(schema_text(name), nl=False)


@main.command(name="eval")
@click.argument("rules", type=click.Path(exists=True))
@click.argument("events", type=click.File("r", encoding="utf-8"), default="-")
@click.option("--sender", default="alice@localhost", show_default=True,
              help="The sender's JID (its bare part is the envelope's sender).")
@click.option("--from", "from_", default=None, help="The full JID (default: SENDER/cli).")
@click.option("--kind", type=click.Choice(["message", "presence"]), default="message",
              show_default=True)
@click.option("--type", "stanza_type", default=None,
              help="Stanza type (default: chat for messages, available for presence).")
@click.option("--bot", default="friend@localhost", show_default=True, help="The bot's JID.")
@NOW_OPTION
def eval_(rules: str, events: TextIO, sender: str, from_: str | None, kind: str,
          stanza_type: str | None, bot: str, now: float | None) -> None:
    """Run events through RULES offline and print each decision as a JSON line.

    EVENTS is a file of JSON lines or one JSON object (default: stdin)."""
    result = check_rules([rules])
    if result.ruleset is None:
        for issue in result.errors:
            click.echo(issue.format(), err=True)
        sys.exit(1)
    ruleset = result.ruleset
    bare = bare_jid(sender)
    full = from_ or (sender if "/" in sender else f"{sender}/cli")
    stype = stanza_type or ("chat" if kind == "message" else "available")
    limits = Limits()
    failed = False
    for n, line in read_events(events):
        try:
            event = decode_event(line, limits)
        except EventError as exc:
            failed = True
            out = {"line": n, "error": {"code": exc.code, "message": exc.message,
                                        "path": exc.path}}
            click.echo(json.dumps(out, ensure_ascii=False))
            continue
        env = Envelope(event, bare, full, Stanza(kind, stype, None), bot,  # type: ignore[arg-type]
                       time.time() if now is None else now)
        click.echo(json.dumps(decision_json(evaluate(ruleset, env)), ensure_ascii=False))
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("rules", type=click.Path(exists=True))
@click.option("--event", "event_file", type=click.File("r", encoding="utf-8"), required=True,
              help="A file with one JSON event ('-' for stdin).")
@click.option("--sender", default="alice@localhost", show_default=True)
@click.option("--from", "from_", default=None, help="The full JID (default: SENDER/cli).")
@click.option("--kind", type=click.Choice(["message", "presence"]), default="message",
              show_default=True)
@click.option("--bot", default="friend@localhost", show_default=True)
@click.option("--relations", "relations_file", type=click.File("r", encoding="utf-8"),
              help="Relationship fixtures: JSON lines {subject, object, kind, attrs}.")
@click.option("--online", multiple=True, help="A JID to treat as online (repeatable).")
@click.option("--silences", "silences_from", metavar="URL_OR_PATH",
              help="Apply the silences of this store, as the daemon would "
                   "(rulebot silence list shows them).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@NOW_OPTION
def explain(rules: str, event_file: TextIO, sender: str, from_: str | None, kind: str,
            bot: str, relations_file: TextIO | None, online: tuple[str, ...],
            silences_from: str | None, fmt: str, now: float | None) -> None:
    """Show, for one event, every rule in order: matched, not matched, error or shadowed,
    the value its match produced, and which rule won."""
    from rulebot.engine.explain import explain as run_explain
    from rulebot.engine.state import (
        Buckets,
        LiveState,
        MemoryRelations,
        PresenceTable,
    )
    from rulebot.model import Relation, stamp
    from rulebot.rules.timefns import to_epoch

    result = check_rules([rules])
    if result.ruleset is None:
        for issue in result.errors:
            click.echo(issue.format(), err=True)
        sys.exit(1)
    try:
        event = decode_event(event_file.read(), Limits())
    except EventError as exc:
        click.echo(f"the event cannot be decoded: {exc}", err=True)
        sys.exit(1)
    rows = []
    for n, line in enumerate(relations_file or [], 1):
        if line.strip():
            try:
                r = json.loads(line)
                rows.append(Relation(r["subject"], r["object"], r["kind"],
                                     r.get("attrs") or {}, r.get("created") or "",
                                     None if r.get("expires") is None
                                     else stamp(to_epoch(r["expires"]))))
            except (ValueError, KeyError, TypeError) as exc:  # TimeError is a ValueError
                raise click.UsageError(f"--relations line {n}: {exc}") from None
    presence = PresenceTable()
    for jid in online:
        presence.update(jid, True)
    full = from_ or (sender if "/" in sender else f"{sender}/cli")
    at = time.time() if now is None else now
    env = Envelope(event, bare_jid(sender), full,
                   Stanza(kind, "chat" if kind == "message" else "available", None),  # type: ignore[arg-type]
                   bot, at)
    mutings = _silences(silences_from, result.ruleset.lists) if silences_from else ()
    explanation = run_explain(result.ruleset, env,
                              state=LiveState(MemoryRelations(rows, lambda: at), presence,
                                               Buckets(lambda: 0.0)), silences=mutings)
    if fmt == "json":
        click.echo(json.dumps(explanation.to_json(), ensure_ascii=False, indent=2))
        return
    width = max((len(t.rule) for t in explanation.rules), default=4)
    for t in explanation.rules:
        value = json.dumps(t.value, ensure_ascii=False)
        value = shorten(value, 40)
        click.echo(f"{t.index:>3}  {t.rule:<{width}}  {t.status:<13}  {value:<40}  {t.note}"
                   .rstrip())
    d = explanation.decision
    click.echo(f"winner: {explanation.winner or '-'}; version {d.version}")
    for action in decision_json(d)["actions"]:
        click.echo(f"action: {json.dumps(action, ensure_ascii=False)}")
    for note in d.notes:
        click.echo(f"note: {note}")
    for silence_id in d.silenced:
        click.echo(f"silenced by: {silence_id}")


def _silences(location: str, lists: Mapping[str, object]) -> tuple[Muting, ...]:
    """The silences stored at `location` not ended now, compiled."""
    from rulebot.rules.silences import compile_silences
    from rulebot.store.base import StoreError
    from rulebot.store.open import open_store

    try:
        with open_store(location) as store:
            stored = store.silences(time.time())
    except StoreError as exc:
        raise click.UsageError(f"--silences: {exc}") from exc
    good, bad = compile_silences(stored, lists)
    for silence, problems in bad:
        click.echo(f"silence {silence.id} not applied: {'; '.join(problems)}", err=True)
    return good


@main.command()
@click.option("--url", default="http://127.0.0.1:9464/status", show_default=True,
              help="The daemon's /status URL (config: status.listen).")
def status(url: str) -> None:
    """Show what is live in a running daemon: rule-set version, rules per file,
    last reload, connection state. Exit 1 when it cannot be reached."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            click.echo(response.read().decode(), nl=False)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"rulebot status: cannot reach {url}: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("-c", "--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False), help="The rulebot.yaml file.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes serving the bot (default: the config's workers, 1).")
@click.option("--worker", type=click.IntRange(0, 63), default=None,
              help="Run only worker I of --workers/workers (systemd: rulebot@I).")
def run(config_path: str, workers: int | None, worker: int | None) -> None:
    """Run the friend bot: log in, apply the rules to every event, until SIGTERM/SIGINT.

    With several workers (component mode, PostgreSQL store) and no --worker,
    supervise them: start, restart, forward SIGHUP, drain on SIGTERM.
    The password/secret comes from the environment variable named by
    password_env (default RULEBOT_PASSWORD) or from password_file.
    Exit codes: 0 clean stop, 1 invalid config or rules, 3 cannot connect,
    4 the store cannot be opened or read at start."""
    from rulebot.config import (
        archive_salt,
        load_config,
        read_secret,
        with_workers,
        worker_config,
    )
    from rulebot.daemon.app import Daemon
    from rulebot.errors import ConfigError, RuleSetError
    from rulebot.logs import LOG_FLUSH_SECONDS, fields, setup_logging
    from rulebot.rules.cache import LoadCache
    from rulebot.rules.loader import load_rules

    try:
        config = load_config(config_path)
        if workers is not None and workers != config.workers:
            config = with_workers(config, workers)
        secret = read_secret(config)
        salt = archive_salt(config)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(issue.format(), err=True)
        sys.exit(1)
    if worker is not None and worker >= config.workers:
        click.echo(f"--worker {worker}: the configuration has {config.workers} worker(s)",
                   err=True)
        sys.exit(1)
    static = {"worker": worker} if worker is not None else None
    log = setup_logging(config.log_format, config.log_level, buffer_seconds=LOG_FLUSH_SECONDS,
                        static=static)
    if config.workers > 1 and worker is None:
        from rulebot.cli.workers import supervise

        sys.exit(supervise(config_path, config.workers))
    if worker is not None:
        from rulebot.cli.workers import follow_supervisor

        follow_supervisor()
        config = worker_config(config, worker)
    cache = LoadCache()
    try:
        ruleset = load_rules(config.rules, cache)
    except RuleSetError as exc:
        for issue in exc.issues:
            log.error(issue.format(), extra=fields(event="rules_invalid", **issue.to_json()))
        sys.exit(1)
    from pathlib import Path

    from rulebot.store.base import StoreError, redact_url
    from rulebot.store.open import open_store, resolve_location

    location = resolve_location(config.store, Path(config.base_dir))
    try:
        store = open_store(location)
    except StoreError as exc:
        log.error(f"cannot open the relationship store: {exc}",
                  extra=fields(event="store_failed", store=redact_url(location)))
        sys.exit(4)  # daemon.app.EXIT_STORE: it may come back, a restart may do

    async def main_loop() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        daemon = Daemon(config, secret, ruleset, store, cache=cache, archive_salt=salt)
        loop.add_signal_handler(signal.SIGHUP, daemon.trigger_reload)
        return await daemon.run(stop)

    sys.exit(asyncio.run(main_loop()))


def _register() -> None:
    # Commands that live in their own modules (one job each).
    from rulebot.cli.init import init
    from rulebot.cli.relations import relations
    from rulebot.cli.replay import replay
    from rulebot.cli.silence import silence
    from rulebot.cli.talk import listen, send
    from rulebot.cli.test import test

    for command in (send, listen, relations, test, init, replay, silence):
        main.add_command(command)


_register()
