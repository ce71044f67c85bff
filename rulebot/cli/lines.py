"""Reading events given on the command line (`eval`, `send`): a file or stdin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO


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
