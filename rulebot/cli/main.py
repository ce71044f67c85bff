"""The `rulebot` command line: validate, schema, eval (and run, send, listen).

Imports: everything below it. Signals and asyncio.run live here only.
Exit codes: 0 success, 1 invalid input (rules, events), 2 usage.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from rulebot import __version__
from rulebot.engine.evaluate import evaluate
from rulebot.engine.render import decision_json
from rulebot.errors import EventError
from rulebot.load.schema import SCHEMA_NAMES, schema_text
from rulebot.model import Envelope, Issue, Stanza
from rulebot.rules.loader import check_rules
from rulebot.wire.decode import Limits, decode_event


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
              help="Also check a daemon config file (rulebot.yaml) and the rules it names.")
def validate(paths: tuple[str, ...], fmt: str, strict: bool, config_path: str | None) -> None:
    """Check rule files or directories: YAML, schema, expressions, names.

    Prints every issue as FILE:LINE:COL: PATH: MESSAGE (VALUE), sorted by
    position. Exits 0 when valid (warnings allowed), 1 when invalid, 2 usage."""
    from rulebot.config import load_config
    from rulebot.errors import ConfigError

    targets = list(paths)
    config_issues: tuple[Issue, ...] = ()
    if config_path:
        try:
            targets.append(load_config(config_path).rules)
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


@main.command()
@click.argument("name", type=click.Choice(SCHEMA_NAMES), default="rules")
def schema(name: str) -> None:
    """Print a JSON Schema (rules or config), e.g. for yaml-language-server."""
    click.echo(schema_text(name), nl=False)


def _read_events(stream: TextIO) -> Iterator[tuple[int, str]]:
    """(line number, text) of each event: one JSON document (pretty-printed or not),
    else JSON lines, each reported on its own when it does not parse."""
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        return
    try:
        json.loads(stripped)
    except ValueError:
        yield from ((n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())
        return
    yield 1, stripped


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
def eval_(rules: str, events: TextIO, sender: str, from_: str | None, kind: str,
          stanza_type: str | None, bot: str) -> None:
    """Run events through RULES offline and print each decision as a JSON line.

    EVENTS is a file of JSON lines or one JSON object (default: stdin)."""
    result = check_rules([rules])
    if result.ruleset is None:
        for issue in result.errors:
            click.echo(issue.format(), err=True)
        sys.exit(1)
    ruleset = result.ruleset
    bare = sender.split("/", 1)[0]
    full = from_ or (sender if "/" in sender else f"{sender}/cli")
    stype = stanza_type or ("chat" if kind == "message" else "available")
    limits = Limits()
    failed = False
    for n, line in _read_events(events):
        try:
            event = decode_event(line, limits)
        except EventError as exc:
            failed = True
            out = {"line": n, "error": {"code": exc.code, "message": exc.message,
                                        "path": exc.path}}
            click.echo(json.dumps(out, ensure_ascii=False))
            continue
        env = Envelope(event, bare, full, Stanza(kind, stype, None), bot)  # type: ignore[arg-type]
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
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def explain(rules: str, event_file: TextIO, sender: str, from_: str | None, kind: str,
            bot: str, relations_file: TextIO | None, online: tuple[str, ...], fmt: str) -> None:
    """Show, for one event, every rule in order: matched, not matched, error or shadowed,
    the value its match produced, and which rule won."""
    from rulebot.engine.explain import explain as run_explain
    from rulebot.engine.state import (
        Buckets,
        LiveState,
        MemoryRelation,
        MemoryRelations,
        PresenceTable,
    )

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
                rows.append(MemoryRelation(r["subject"], r["object"], r["kind"],
                                           r.get("attrs") or {}))
            except (ValueError, KeyError, TypeError) as exc:
                raise click.UsageError(f"--relations line {n}: {exc}") from None
    presence = PresenceTable()
    for jid in online:
        presence.update(jid, True)
    full = from_ or (sender if "/" in sender else f"{sender}/cli")
    env = Envelope(event, sender.split("/", 1)[0], full,
                   Stanza(kind, "chat" if kind == "message" else "available", None),  # type: ignore[arg-type]
                   bot)
    explanation = run_explain(result.ruleset, env,
                              state=LiveState(MemoryRelations(rows), presence,
                                               Buckets(lambda: 0.0)))
    if fmt == "json":
        click.echo(json.dumps(explanation.to_json(), ensure_ascii=False, indent=2))
        return
    width = max((len(t.rule) for t in explanation.rules), default=4)
    for t in explanation.rules:
        value = json.dumps(t.value, ensure_ascii=False)
        value = value if len(value) <= 40 else value[:37] + "..."
        click.echo(f"{t.index:>3}  {t.rule:<{width}}  {t.status:<13}  {value:<40}  {t.note}"
                   .rstrip())
    d = explanation.decision
    click.echo(f"winner: {explanation.winner or '-'}; version {d.version}")
    for action in decision_json(d)["actions"]:
        click.echo(f"action: {json.dumps(action, ensure_ascii=False)}")
    for note in d.notes:
        click.echo(f"note: {note}")


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
def run(config_path: str) -> None:
    """Run the friend bot: log in, apply the rules to every event, until SIGTERM/SIGINT.

    The password/secret comes from the environment variable named by
    password_env (default RULEBOT_PASSWORD) or from password_file.
    Exit codes: 0 clean stop, 1 invalid config or rules, 3 cannot connect."""
    from rulebot.config import load_config, read_secret
    from rulebot.daemon.app import Daemon
    from rulebot.errors import ConfigError, RuleSetError
    from rulebot.logs import LOG_FLUSH_SECONDS, fields, setup_logging
    from rulebot.rules.loader import load_rules

    try:
        config = load_config(config_path)
        secret = read_secret(config)
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(issue.format(), err=True)
        sys.exit(1)
    log = setup_logging(config.log_format, config.log_level, buffer_seconds=LOG_FLUSH_SECONDS)
    try:
        ruleset = load_rules(config.rules)
    except RuleSetError as exc:
        for issue in exc.issues:
            log.error(issue.format(), extra=fields(event="rules_invalid", **issue.to_json()))
        sys.exit(1)
    from pathlib import Path

    from rulebot.store.base import StoreError, open_store, redact_url, resolve_location

    location = resolve_location(config.store, Path(config.base_dir))
    try:
        store = open_store(location)
    except StoreError as exc:
        log.error(f"cannot open the relationship store: {exc}",
                  extra=fields(event="store_failed", store=redact_url(location)))
        sys.exit(1)

    async def main_loop() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        daemon = Daemon(config, secret, ruleset, store)
        loop.add_signal_handler(signal.SIGHUP, daemon.reloader.trigger)
        return await daemon.run(stop)

    sys.exit(asyncio.run(main_loop()))


def _client_options(f: Any) -> Any:
    """Options shared by `send` and `listen`: who to be and where the server is."""
    options = [
        click.option("--jid", required=True, help="The user's JID, e.g. alice@example.com."),
        click.option("--bot", required=True, help="The friend bot's JID (or component)."),
        click.option("--host", default=None, help="Server host (default: the JID's domain)."),
        click.option("--port", default=5222, show_default=True, type=int),
        click.option("--password-env", default="RULEBOT_PASSWORD", show_default=True,
                     help="Environment variable holding the user's password."),
        click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
                     help="File whose first line is the password (instead of the variable)."),
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                     help="PEM file of CAs to trust for the server certificate."),
        click.option("--no-verify", is_flag=True, help="Do not verify the certificate (tests "
                     "only)."),
        click.option("--allow-plain", is_flag=True, help="Allow a connection without TLS."),
        click.option("--encoding", type=click.Choice(["body", "json"]), default="body",
                     show_default=True, help="body: JSON in <body>; json: XEP-0335 container."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _client(opts: dict[str, Any]) -> Any:
    from rulebot.client import RulebotClient

    if opts["password_file"]:
        with open(opts["password_file"], encoding="utf-8") as fh:
            password = fh.readline().rstrip("\n")
    else:
        password = os.environ.get(opts["password_env"], "")
        if not password:
            raise click.UsageError(f"environment variable {opts['password_env']} is not set")
    return RulebotClient(opts["jid"], password, opts["bot"], host=opts["host"],
                         port=opts["port"], ca_file=opts["ca_file"],
                         verify=not opts["no_verify"], allow_plain=opts["allow_plain"],
                         encoding=opts["encoding"])


@main.command()
@_client_options
@click.argument("event", required=False)
@click.option("-f", "--file", "event_file", type=click.File("r", encoding="utf-8"),
              help="Read events from a file (JSON lines, or one JSON object).")
@click.option("--wait", type=float, default=None,
              help="Wait up to SECONDS for the bot's reply to each event and print it.")
def send(event: str | None, event_file: TextIO | None, wait: float | None,
         **opts: Any) -> None:
    """Send events to the bot as a user: EVENT, a file, or JSON lines on stdin.

    Prints one JSON line per event: its id, and with --wait the reply or error.
    Exit codes: 0 sent (and answered), 1 an error reply or no reply, 3 cannot connect."""
    from rulebot.client import RequestError
    from rulebot.errors import ConnectError

    if event is not None:
        texts = [event]
    else:
        texts = [t for _, t in _read_events(event_file or sys.stdin)]
    events = []
    for text in texts:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise click.UsageError("an event must be a JSON object")
        events.append(value)

    async def go() -> int:
        client = _client(opts)
        try:
            await client.connect()
        except ConnectError as exc:
            click.echo(f"rulebot send: {exc}", err=True)
            return 3
        failed = 0
        try:
            for value in events:
                if wait is None:
                    click.echo(json.dumps({"sent": client.send_event(value)}))
                    continue
                try:
                    received = await client.request(value, timeout=wait)
                    click.echo(json.dumps({"reply": received.to_json()}, ensure_ascii=False))
                except RequestError as exc:
                    failed += 1
                    click.echo(json.dumps({"error": exc.received.to_json()},
                                          ensure_ascii=False))
                except TimeoutError:
                    failed += 1
                    click.echo(json.dumps({"timeout": value.get("id")}))
        finally:
            await client.close()
        return 1 if failed else 0

    sys.exit(asyncio.run(go()))


@main.command()
@_client_options
@click.option("--count", type=int, default=None, help="Exit after N events (exit 1 if the "
              "timeout comes first).")
@click.option("--timeout", type=float, default=None, help="Exit after SECONDS.")
def listen(count: int | None, timeout: float | None, **opts: Any) -> None:
    """Print every message the bot sends this user, one JSON line each.

    Prints "listening as JID" on stderr once the session is up. Runs until
    interrupted, N events (--count) or --timeout."""
    from rulebot.errors import ConnectError

    async def go() -> int:
        client = _client(opts)
        try:
            await client.connect()
        except ConnectError as exc:
            click.echo(f"rulebot listen: {exc}", err=True)
            return 3
        click.echo(f"listening as {opts['jid']}", err=True)
        seen = 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while count is None or seen < count:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                getter = asyncio.ensure_future(client.receive())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait([getter, stopper], timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                click.echo(json.dumps(getter.result().to_json(), ensure_ascii=False))
                seen += 1
        finally:
            await client.close()
        return 1 if count is not None and seen < count else 0

    sys.exit(asyncio.run(go()))


def _register() -> None:
    # Commands that live in their own modules (one job each).
    from rulebot.cli.relations import relations
    from rulebot.ruletest.report import test

    main.add_command(relations)
    main.add_command(test)


_register()
