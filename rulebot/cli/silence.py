"""`rulebot silence add|list|expire`: mute a rule, a sender or an expression
until a time, with an author and a comment (docs/silences.md).

Silences live in the store (--store, RULEBOT_STORE or --config, as for
`rulebot relations`); a running daemon reads them every 2 s. Output is JSON
lines on stdout. Exit codes: 0 success, 1 invalid silence or store error,
2 usage.
"""

from __future__ import annotations

import getpass
import json
import time
import uuid

import click

from rulebot.cli.relations import fail, required, store_location, store_options
from rulebot.model import Silence, stamp
from rulebot.rules.silences import compile_silence, parse_until
from rulebot.rules.timefns import TimeError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@store_options
@click.pass_context
def silence(ctx: click.Context, location: str | None, config_path: str | None) -> None:
    """Mute a rule, a sender or an expression for a while."""
    ctx.obj = store_location(ctx, location, config_path, "silence")


def _until(text: str, now: float) -> float:
    try:
        return parse_until(text, now)
    except TimeError as exc:
        raise click.BadParameter(f"{text!r}: not a duration (30m, 2h, 1d) nor an ISO time "
                                 f"({exc})", param_hint="--until") from exc


@silence.command(name="add")
@click.option("--rule", help="Mute this rule: evaluation goes on past it.")
@click.option("--sender", help="Only (or, without --rule, all) events of this bare JID.")
@click.option("--match", "match", metavar="EXPR",
              help="Only (or, without --rule, all) events this JMESPath expression "
                   "selects, e.g. \"event.room == 'spam'\".")
@click.option("--until", "until", required=True, metavar="DURATION|TIME",
              help="How long (30m, 2h, 1d) or until when (2026-12-24T18:00:00Z).")
@click.option("--comment", required=True, help="Why: shown in status, explain and the log.")
@click.option("--author", default=None, help="Who [default: the login name].")
@click.pass_obj
def add(location: str | None, rule: str | None, sender: str | None, match: str | None, until: str,
        comment: str, author: str | None) -> None:
    """Add a silence; prints it (with its id, for `expire`)."""
    now = time.time()
    made = Silence(uuid.uuid4().hex[:12], _until(until, now), author or getpass.getuser(),
                   comment, rule, sender, match, now, now)
    _, problems = compile_silence(made)
    if problems:
        fail("; ".join(problems), "silence")
    from rulebot.store.base import StoreError
    from rulebot.store.open import open_store

    try:
        with open_store(required(location)) as store:
            store.silence_add(made)
    except StoreError as exc:
        fail(str(exc), "silence")
    click.echo(json.dumps(made.to_json(), ensure_ascii=False))


@silence.command(name="list")
@click.option("--all", "everything", is_flag=True,
              help="Also the silences that ended (kept for a week).")
@click.pass_obj
def list_(location: str | None, everything: bool) -> None:
    """The silences in force (or not yet started), soonest end first."""
    from rulebot.store.base import StoreError
    from rulebot.store.open import open_store

    now = time.time()
    try:
        with open_store(required(location)) as store:
            found = store.silences(None if everything else now)
    except StoreError as exc:
        fail(str(exc), "silence")
    for s in found:
        state = "active" if s.active(now) else ("pending" if s.starts > now else "ended")
        click.echo(json.dumps({**s.to_json(), "state": state}, ensure_ascii=False))


@silence.command()
@click.argument("ids", nargs=-1, required=True)
@click.pass_obj
def expire(location: str | None, ids: tuple[str, ...]) -> None:
    """End silences now (a running daemon stops applying them within 2 s)."""
    from rulebot.store.base import StoreError
    from rulebot.store.open import open_store

    now = time.time()
    missing = []
    try:
        with open_store(required(location)) as store:
            for silence_id in ids:
                if store.silence_expire(silence_id, now):
                    click.echo(json.dumps({"id": silence_id, "ended": stamp(now)}))
                else:
                    missing.append(silence_id)
    except StoreError as exc:
        fail(str(exc), "silence")
    if missing:
        fail(f"no silence in force with id {', '.join(missing)}", "silence")
