"""A tiny HTTP endpoint for operators: /metrics (Prometheus), /status (JSON),
/healthz (the process answers), /readyz (the XMPP session is up).

GET only, one request per connection, loopback by default: this is a scrape
and inspection port, not a web server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

Page = Callable[[], tuple[int, str, bytes]]

def json_page(produce: Callable[[], Any]) -> Page:
    def page() -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(produce(), indent=2).encode() + b"\n"
    return page


class StatusServer:
    def __init__(self, host: str, port: int, pages: dict[str, Page]) -> None:
        self.host, self.port, self.pages = host, port, pages
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful when asked for port 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n",
                                                                                    b"\n", b""):
                pass  # headers are not needed
            parts = request.decode("latin-1").split()
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = 405, "text/plain", b"GET only\n"
            else:
                page = self.pages.get(parts[1].split("?", 1)[0])
                if page is None:
                    status, ctype, body = 404, "text/plain", b"not found\n"
                else:
                    status, ctype, body = page()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}.get(status, "")
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
