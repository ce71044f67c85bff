"""Reading events given on the command line (`eval`, `send`): a file or stdin;
and the frozen clock option of eval, explain and test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

import click

from rulebot.rules.timefns import TimeError, to_epoch


def read_events(stream: TextIO) -> Iterator[tuple[int, str]]:
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


class InstantType(click.ParamType):  # type: ignore[type-arg]
    """An instant on the command line: ISO 8601 with an offset, or epoch seconds."""

    name = "INSTANT"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            text = str(value)
            return to_epoch(float(text) if text.replace(".", "", 1).isdigit() else text)
        except TimeError as exc:
            self.fail(str(exc), param, ctx)


#: The frozen clock of eval and explain (the expressions' `now`).
NOW_OPTION = click.option(
    "--now", type=InstantType(), default=None,
    help="The clock the rules see: ISO 8601 (2026-12-01T09:00:00Z) or epoch seconds "
         "(default: the current time).")
