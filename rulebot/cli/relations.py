"""`rulebot relations`: list, add, remove, export and import stored relationships.

cli.main registers the group
(`main.add_command(relations)`).

The store is named by --store (a SQLite path, ``sqlite:///PATH`` or a
``postgresql://`` URL; also the RULEBOT_STORE environment variable, which
keeps a password off the command line) or by --config: the daemon's
rulebot.yaml, whose ``store`` key is resolved like the daemon does (relative
to the config file; ``rulebot.sqlite3`` next to it when absent).

Output is JSON lines on stdout. Exit codes: 0 success, 1 store error (bad
input, database failure), 2 usage.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import click
import yaml

from rulebot.jid import norm_bare
from rulebot.model import JSON, stamp
from rulebot.rules.timefns import TimeError, parse_duration
from rulebot.store.base import RelationStore, StoreError
from rulebot.store.open import open_store, resolve_location
from rulebot.store.values import RelateChange, RelationChange, UnrelateChange

DEFAULT_STORE = "rulebot.sqlite3"
F = TypeVar("F", bound=Callable[..., Any])

def store_options(command: F) -> F:
    """--store (or RULEBOT_STORE) and --config, as every store command takes them."""
    command = click.option("-c", "--config", "config_path",
                           type=click.Path(exists=True, dir_okay=False),
                           help="Use the store named in this rulebot.yaml (its `store` key)."
                           )(command)
    return click.option("--store", "location", envvar="RULEBOT_STORE", metavar="URL_OR_PATH",
                        help="SQLite file, sqlite:///PATH or postgresql://... "
                             "[env: RULEBOT_STORE]")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@store_options
@click.pass_context
def relations(ctx: click.Context, location: str | None, config_path: str | None) -> None:
    """Inspect and edit the relationships the rules read (friend, blocked, ...)."""
    ctx.obj = store_location(ctx, location, config_path, "relations")


def store_location(ctx: click.Context, location: str | None, config_path: str | None,
                   command: str) -> str | None:
    """The store a command group's --store / RULEBOT_STORE / --config name (None:
    not given; a subcommand's --help must still work, so `required` says so
    only where the store is opened)."""
    if config_path is not None:
        if location is not None and ctx.get_parameter_source("location") is not \
                click.core.ParameterSource.ENVIRONMENT:
            raise click.UsageError("give --store or --config, not both")
        location = store_from_config(Path(config_path), command)
    return location or None


def required(location: str | None) -> str:
    """The store location, or the usage error saying how to name one."""
    if not location:
        raise click.UsageError("give --store URL_OR_PATH (or set RULEBOT_STORE) or --config FILE")
    return location


def store_from_config(path: Path, command: str = "relations") -> str:
    """The store location a rulebot.yaml names (its `store` key, resolved as
    the daemon does); a message and exit 1 when it cannot be read."""
    # Only `store` is read, not the whole config through config.load_config:
    # an operator repairing relations must get at the store even while the
    # rest of rulebot.yaml (a new key, a typo) does not validate.
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        fail(f"cannot read {path}: {' '.join(str(exc).split())}", command)
    if not isinstance(doc, dict):
        fail(f"{path}: not a rulebot config (expected a mapping)", command)
    value = doc.get("store", DEFAULT_STORE)
    if not isinstance(value, str) or not value:
        fail(f"{path}: store must be a SQLite path or a postgresql:// URL, not {value!r}",
             command)
    return resolve_location(value, path.resolve().parent)


def fail(message: str, command: str = "relations") -> NoReturn:
    click.echo(f"rulebot {command}: {message}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def _store(ctx: click.Context) -> Iterator[RelationStore]:
    """The opened store, closed afterwards; StoreError, OSError → message and exit 1."""
    try:
        with open_store(required(ctx.obj)) as store:
            yield store
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:  # writing an export, reading an import
        fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}")


def _bare(jid: str) -> str:
    # The daemon stores bare, lower-case JIDs; so must we, or rules never see it.
    return norm_bare(jid)


def _emit(value: JSON) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


@relations.command(name="list")
@click.option("--subject", help="Only relations of this subject JID.")
@click.option("--kind", help="Only relations of this kind.")
@click.option("--object", "obj", help="Only relations to this object JID.")
@click.pass_context
def list_(ctx: click.Context, subject: str | None, kind: str | None, obj: str | None) -> None:
    """Print relations as JSON lines, sorted by subject, kind, object."""
    with _store(ctx) as store:
        for relation in store.list(subject=subject and _bare(subject), kind=kind,
                                   obj=obj and _bare(obj)):
            _emit(relation.to_json())


def _attrs(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, JSON]:
    if value is None:
        return {}
    try:
        attrs = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(attrs, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"since\": \"2025\"}'")
    return attrs


def _ttl(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except TimeError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than zero")
    return seconds


@relations.command()
@click.argument("subject")
@click.argument("obj", metavar="OBJECT")
@click.argument("kind")
@click.option("--attrs", callback=_attrs, metavar="JSON", help="A JSON object stored with it.")
@click.option("--mutual", is_flag=True, help="Also OBJECT → SUBJECT (in the same transaction).")
@click.option("--ttl", callback=_ttl, metavar="DURATION",
              help="It expires this long from now (90s, 10m, 7d); default never.")
@click.pass_context
def add(ctx: click.Context, subject: str, obj: str, kind: str, attrs: dict[str, JSON],
        mutual: bool, ttl: float | None) -> None:
    """Relate SUBJECT to OBJECT with KIND (or replace its attrs and expiry).

    Prints {"subject", "object", "kind", "result": "added"|"updated"} per row."""
    s, o = _bare(subject), _bare(obj)
    expires = None if ttl is None else stamp(time.time() + ttl)
    changes: list[RelationChange] = [RelateChange(s, o, kind, attrs, expires=expires)]
    if mutual:
        changes.append(RelateChange(o, s, kind, attrs, expires=expires))
    with _store(ctx) as store:
        for change, new in zip(changes, store.apply(changes), strict=True):
            _emit({"subject": change.subject, "object": change.object, "kind": change.kind,
                   "result": "added" if new else "updated"})


@relations.command()
@click.argument("subject")
@click.argument("obj", metavar="OBJECT")
@click.argument("kind")
@click.option("--mutual", is_flag=True, help="Also OBJECT → SUBJECT (in the same transaction).")
@click.pass_context
def remove(ctx: click.Context, subject: str, obj: str, kind: str, mutual: bool) -> None:
    """Remove the KIND relation of SUBJECT to OBJECT.

    Prints {"subject", "object", "kind", "result": "removed"|"absent"} per row."""
    s, o = _bare(subject), _bare(obj)
    changes: list[RelationChange] = [UnrelateChange(s, o, kind)]
    if mutual:
        changes.append(UnrelateChange(o, s, kind))
    with _store(ctx) as store:
        for change, gone in zip(changes, store.apply(changes), strict=True):
            _emit({"subject": change.subject, "object": change.object, "kind": change.kind,
                   "result": "removed" if gone else "absent"})


@relations.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True), required=False)
@click.pass_context
def export(ctx: click.Context, file: str | None) -> None:
    """Write every relation as JSON lines to FILE (replaced only when complete) or stdout."""
    with _store(ctx) as store:
        if file is None or file == "-":
            store.export_jsonl(sys.stdout)
            return
        target = Path(file)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:  # mode 0600: personal data
                n = store.export_jsonl(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        click.echo(f"exported {n} relation(s) to {file}", err=True)


@relations.command(name="import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.pass_context
def import_(ctx: click.Context, file: TextIO) -> None:
    """Upsert the relations of a JSON lines FILE (an export) in one transaction.

    Prints the number of relations read (and, on stderr, a progress line every
    50,000). On a bad line nothing is imported and the message names the line."""
    with _store(ctx) as store:
        count = store.import_jsonl(
            file, progress=lambda n: click.echo(f"read {n:,} relations ...", err=True))
        click.echo(count)
