"""XMPP over WebSocket (RFC 7395) on the private servers, the way a browser
talks to them (issue 21's JavaScript client will): a client with nothing but
a socket does the WebSocket handshake, opens the framed stream, logs in
with SASL PLAIN, binds a resource and asks the real bot for a pong."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import struct
import urllib.parse
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from conftest import USERS, run_bot, write_config

from scripts import xmppserver

pytestmark = pytest.mark.integration

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, 1.3
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


class WebSocketXmpp:
    """A minimal RFC 6455 client carrying RFC 7395 XMPP frames (blocking)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1")  # loopback only
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Protocol: xmpp\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed during the handshake: {head!r}"
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        text = head.decode("latin-1")
        assert text.split()[1] == "101", text
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in text.split("\r\n")[1:])}
        assert headers.get("sec-websocket-accept") == accept, text
        assert headers.get("sec-websocket-protocol") == "xmpp", text

    def send(self, xml: str) -> None:
        data = xml.encode()
        mask = os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack("!Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def frame(self) -> str:
        """The next text frame (pings answered, fragments joined)."""
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            payload = self._read(n)  # server frames are not masked
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            assert opcode in (0x0, 0x1), f"unexpected frame {opcode}: {payload!r}"
            message += payload
            if b0 & 0x80:
                return message.decode()

    def until(self, pattern: str) -> str:
        """Frames until one matches `pattern` (a regular expression); that one."""
        for _ in range(50):
            text = self.frame()
            if re.search(pattern, text):
                return text
        raise AssertionError(f"no frame matching {pattern!r}")

    def close(self) -> None:
        try:
            self.send(f"<close xmlns='{FRAMING}'/>")
        finally:
            self.sock.close()


def ping_over_websocket(url: str, user: str, password: str, bot: str) -> dict[str, object]:
    ws = WebSocketXmpp(url)
    try:
        ws.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
        features = ws.until(r"features")
        assert "PLAIN" in features, features
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        ws.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                f"{token}</auth>")
        assert "<success" in ws.until(r"<success|<failure"), "SASL PLAIN refused"
        ws.send(f"<open xmlns='{FRAMING}' to='localhost' version='1.0'/>")
        assert "bind" in ws.until(r"features")
        # Each frame is a document of its own: stanzas declare jabber:client
        # (without it Prosody sees xmlns='' and ignores the bind).
        ws.send("<iq xmlns='jabber:client' type='set' id='bind1'>"
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                "<resource>browser</resource></bind></iq>")
        bound = ws.until(r"bind1")
        assert f"{user}@localhost/browser" in bound, bound
        ws.send(f"<message xmlns='jabber:client' to='{bot}' type='chat' id='ws-1'>"
                "<body>{&quot;type&quot;:&quot;ping&quot;,&quot;id&quot;:&quot;w1&quot;}"
                "</body></message>")
        reply = ws.until(r"<message[^>]*from=['\"]" + re.escape(bot))
        body = re.search(r"<body>(.*?)</body>", reply, re.S)
        assert body, reply
        assert re.search(r"<rulebot[^>]*event=['\"]w1['\"]", reply), reply
        text = body.group(1).replace("&quot;", '"').replace("&apos;", "'").replace(
            "&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        payload = json.loads(text)
        assert isinstance(payload, dict)
        return payload
    finally:
        ws.close()


@pytest.mark.parametrize("server_kind", ["prosody", "ejabberd"])
async def test_a_browser_style_client_reaches_the_bot_over_websocket(
    server: xmppserver.ServerInfo, tmp_path: Path, stack: AsyncExitStack
) -> None:
    assert server.websocket_url.startswith("ws://127.0.0.1:")
    config = write_config(server, "client", tmp_path / "rulebot.yaml")
    await run_bot(stack, config)
    pong = await asyncio.to_thread(ping_over_websocket, server.websocket_url, "alice",
                                   USERS["alice"], "friend@localhost")
    assert pong == {"type": "pong", "id": "w1"}
