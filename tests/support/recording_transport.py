"""A transport that records what a slixmpp stream writes (unit tests only: the
live paths run against real servers in tests/integration)."""

from __future__ import annotations

from typing import Any


class RecordingSocket:
    """Records socket options set on it."""

    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.records: list[bytes] = []
        self.closed = False
        self.sock = RecordingSocket()

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        """One write of the joined chunks, as asyncio's transports make it; the
        chunks (TLS records on a TLS transport) are kept in `records`."""
        self.records.extend(chunks)
        self.writes.append(b"".join(chunks))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default
