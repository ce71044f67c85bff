"""A transport that records what a slixmpp stream writes (unit tests only: the
live paths run against real servers in tests/integration)."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, *_args: Any, **_kw: Any) -> None:
        return None
