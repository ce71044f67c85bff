#!/usr/bin/env python3
"""Private Prosody / ejabberd instances for rulebot's integration tests.

Each server lives entirely in its own work directory: config, self-signed
certificate, data, logs, PID file and ``server.json`` (the :class:`ServerInfo`).
It listens on 127.0.0.1 only, on free ports, with s2s off, and serves the
domain ``localhost`` plus the XEP-0114 component ``friend.localhost``.
Several servers, of either kind, can run side by side.

Library use (tests put ``scripts/`` on ``sys.path``)::

    info = start_server("prosody", workdir, {"alice": "alicepw"})
    ...
    info = restart_server(info)     # same ports, data and accounts
    stop_server(info)               # or stop_server(workdir)

Command line::

    python scripts/xmppserver.py start {prosody|ejabberd} --dir DIR \\
        --user alice:alicepw --user bob:bobpw [--no-tls-required]
    python scripts/xmppserver.py stop --dir DIR

``start`` prints the ServerInfo as one JSON line.  Needs the Debian packages
prosody / ejabberd / openssl (``scripts/install-system-deps``).  Works as root
and as an ordinary user.

Server behaviour worth knowing:

* The bot account ``friend@localhost`` is exempt from rate limits; every other
  account keeps the stock limits (Prosody 10 kB/s per c2s connection,
  ejabberd 3000 B/s).  Components are never throttled.  With
  ``start_server(..., unlimited=True)`` (``--unlimited``) nobody is throttled:
  Prosody runs without mod_limits, ejabberd's c2s shaper is ``none`` for all
  (for benchmarks, where the stock shapers would measure only themselves).
* Stream management (XEP-0198) is on for both, as docs/servers.md tells
  operators: Prosody mod_smacks with a queue of 100,000 stanzas, ejabberd
  mod_stream_mgmt with ``max_ack_queue`` 100,000; resumption timeouts are the
  servers' defaults (600 s / 300 s).
* Garbage collectors as docs/servers.md recommends for a server carrying a
  busy bot: Prosody with ``PROSODY_GC``, ejabberd's VM with
  ``EJABBERD_VM_FLAGS`` (``stock_gc=True``, ``--stock-gc``: as packaged).
* Offline storage is on: Prosody has no limit, ejabberd keeps up to 10000
  messages per user.
* ``RULEBOT_SERVER_DEBUG=1`` in the environment gives Prosody a debug log
  (every stanza, and why it closed a stream) in ``prosody.log``.
* ejabberd runs as the calling user through a copy of the packaged
  ejabberdctl (the original switches root to the `ejabberd` user, who cannot
  enter pytest's 0700 /tmp/pytest-of-root), without epmd, and has an extra
  loopback HTTP API listener that only allows ``status``, ``register`` and
  ``change_password`` (used here: 10 ms a call, where each ``ejabberdctl``
  call boots an Erlang VM for 0.4 s).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BOT_JID",
    "COMPONENT_JID",
    "DOMAIN",
    "HOST",
    "KINDS",
    "ServerError",
    "ServerInfo",
    "load_info",
    "register_user",
    "restart_server",
    "start_server",
    "stop_server",
]

KINDS = ("prosody", "ejabberd")
DOMAIN = "localhost"
HOST = "127.0.0.1"
COMPONENT_JID = "friend.localhost"
BOT_JID = "friend@localhost"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
CTL_TIMEOUT = 30.0

OFFLINE_LIMIT = 10000
SM_QUEUE = 100000
#: Prosody's garbage collector: Lua 5.4's own incremental pause (200) instead
#: of Prosody's 105, which starts a collection cycle (marking everything
#: alive) every time the heap grows by 5%. A bot's XEP-0198 queue keeps
#: thousands of stanzas alive during a burst, and at 105 Prosody spent more
#: of its time collecting than routing: 10,000-event bursts through a relay,
#: 5,300-5,500 -> 8,800-9,500 events/s; through rulebot, 2,100-2,600 -> 6,500-7,500
#: (bench/xmpp.py, client mode; docs/servers.md "Prosody's garbage collector").
PROSODY_GC = 'gc = { mode = "incremental"; threshold = 200 }'
#: ejabberd's Erlang VM: every process's binary virtual heap starts at 1,000,000
#: words (8 MB) instead of 46,422 (~370 KB). A process is collected when the
#: binaries it has allocated since its last collection exceed that size; the
#: bot's c2s process keeps thousands of stanzas (binaries) alive in its
#: XEP-0198 queue during a burst and was collected over and over: ejabberd
#: spent ~200 us of CPU per event routed through rulebot against ~135 without
#: stream management (bench/xmpp.py, client mode; docs/servers.md
#: "ejabberd's binary heap").
EJABBERD_VM_FLAGS = "+hmbs 1000000"

INFO_FILE = "server.json"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
# ejabberd wants certificate and key in one file
COMBINED_PEM = "server.pem"
API_PORT_FILE = "ejabberd-api.port"
PROSODY_PORT_ERROR = "Failed to open server port"
PROSODY_GC_ERROR = "Failed to apply GC configuration"

PROSODY = "/usr/bin/prosody"
PROSODYCTL = "/usr/bin/prosodyctl"
EJABBERDCTL = "/usr/sbin/ejabberdctl"
OPENSSL = "openssl"


class ServerError(RuntimeError):
    """A server could not be started, stopped or administered."""


@dataclass(frozen=True)
class ClusterLink:
    """What makes an ejabberd node one of a cluster (scripts.ejcluster): the
    cluster's private epmd (on loopback), the shared Erlang cookie, the
    component secret all nodes accept, and the node's name."""

    epmd_port: int
    cookie: str
    component_secret: str
    node: str


@dataclass(frozen=True)
class ServerInfo:
    """Where a running private server is and how to reach it."""

    kind: str
    domain: str
    host: str
    c2s_port: int
    component_port: int
    component_jid: str
    component_secret: str
    ca_file: str
    workdir: str
    pid: int
    #: XMPP over WebSocket (RFC 7395), loopback, no TLS: ws://127.0.0.1:PORT/PATH
    websocket_url: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerInfo:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "websocket_url"]
        missing = [n for n in names if n not in data]
        if missing:
            raise ServerError(f"server info lacks {', '.join(missing)}")
        return cls(
            kind=str(data["kind"]),
            domain=str(data["domain"]),
            host=str(data["host"]),
            c2s_port=int(data["c2s_port"]),
            component_port=int(data["component_port"]),
            component_jid=str(data["component_jid"]),
            component_secret=str(data["component_secret"]),
            ca_file=str(data["ca_file"]),
            workdir=str(data["workdir"]),
            pid=int(data["pid"]),
            websocket_url=str(data.get("websocket_url", "")),
        )


# Loopback API calls must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Popen objects of servers started by this process, so they can be reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------
# public API


def start_server(
    kind: str,
    workdir: str | os.PathLike[str],
    users: Mapping[str, str],
    *,
    tls_required: bool = True,
    unlimited: bool = False,
    stock_gc: bool = False,
    cluster: ClusterLink | None = None,
) -> ServerInfo:
    """Configure and start a private server in *workdir*, register *users*.
    *cluster* (ejabberd): a node of a cluster (scripts.ejcluster joins it).

    *users* maps a local part (``alice``) to its password.  *unlimited* lifts
    the c2s rate limits of every account, not only the bot's (Prosody: no
    mod_limits; ejabberd: c2s shaper ``none`` for all).  *stock_gc* runs
    Prosody with its own garbage collector settings instead of `PROSODY_GC`,
    ejabberd without `EJABBERD_VM_FLAGS` (benchmarks compare the two).  Returns once the
    server accepts c2s and component connections (ejabberd: and its
    ``status`` command says started) and every user is registered on
    ``localhost``.  New ports and component secret each time; a *workdir*
    used before keeps its data, accounts and certificate.
    """
    if kind not in KINDS:
        raise ServerError(f"unknown server kind {kind!r}; expected one of {KINDS}")
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    old = _read_info(wd)
    if old is not None and _server_alive(old):
        raise ServerError(f"a {old.kind} server (pid {old.pid}) is already running in {wd}")
    _check_binaries(kind)

    c2s_port, component_port, dist_port, api_port, ws_port = _free_ports(5)
    _make_cert(wd)
    base = ServerInfo(
        kind=kind,
        domain=DOMAIN,
        host=HOST,
        c2s_port=c2s_port,
        component_port=component_port,
        component_jid=COMPONENT_JID,
        component_secret=cluster.component_secret if cluster else secrets.token_hex(16),
        ca_file=str(wd / CERT_FILE),
        workdir=str(wd),
        pid=0,
        # Prosody: its HTTP server's own port; ejabberd: a path of the API listener.
        websocket_url=(f"ws://{HOST}:{ws_port}/xmpp-websocket" if kind == "prosody"
                       else f"ws://{HOST}:{api_port}/ws"),
    )
    if kind == "prosody":
        _write_prosody_config(base, tls_required, unlimited, stock_gc)
    else:
        _write_ejabberd_config(base, tls_required, dist_port, api_port, unlimited, stock_gc,
                               cluster)

    info = _launch(base)
    try:
        for user, password in users.items():
            register_user(info, user, password)
    except BaseException:
        stop_server(info)
        raise
    return info


def stop_server(info_or_workdir: ServerInfo | str | os.PathLike[str]) -> None:
    """Stop the server (by its PID); a no-op when it is not running.

    Sends SIGTERM to the server process (ejabberd: the Erlang VM, for which
    SIGTERM means a graceful ``init:stop()`` like ``ejabberdctl stop``, but
    1.4 s quicker), waits until every process of its process group is gone,
    and SIGKILLs the group after STOP_TIMEOUT.
    """
    if isinstance(info_or_workdir, ServerInfo):
        info: ServerInfo | None = info_or_workdir
    else:
        info = _read_info(Path(info_or_workdir).resolve())
    if info is None or info.pid <= 0:
        return
    members = _group_pids(info.pid)
    if members and _is_our_server(info, members):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(_main_pid(info, members), signal.SIGTERM)
        if not _wait_group_gone(info.pid, STOP_TIMEOUT):
            _signal_group(info.pid, signal.SIGKILL)
            _wait_group_gone(info.pid, 5.0)
    _reap(info.pid, wait=True)


def restart_server(info: ServerInfo) -> ServerInfo:
    """Stop and start the server again: same ports, secret, data, accounts."""
    stop_server(info)
    return _launch(dataclasses.replace(info, pid=0))


def register_user(info: ServerInfo, user: str, password: str) -> None:
    """Create ``user@localhost`` with *password* (or reset its password)."""
    if not user or "@" in user or "/" in user:
        raise ServerError(f"bad user name {user!r} (give the local part only)")
    if info.kind == "prosody":
        # Overwrites the password when the account exists already.
        _run(
            [PROSODYCTL, "--config", _prosody_cfg(info), "register", user, info.domain, password],
            what=f"registering {user}",
        )
        return
    # ejabberd's HTTP API: 10 ms a call; `ejabberdctl register` boots a VM (0.4 s)
    status, reply = _ejabberd_api(
        info, "register", {"user": user, "host": info.domain, "password": password}
    )
    if status == 409:  # already registered
        status, reply = _ejabberd_api(
            info, "change_password", {"user": user, "host": info.domain, "newpass": password}
        )
    if status != 200:
        raise ServerError(f"registering {user} failed (HTTP {status}): {reply}")


def ejabberdctl(info: ServerInfo, *args: str, timeout: float = 60.0) -> str:
    """Run an ejabberdctl command against the server (its output); ServerError
    when it fails. Boots an Erlang VM (~0.4 s): for what the HTTP API lacks."""
    if info.kind != "ejabberd":
        raise ServerError("ejabberdctl needs an ejabberd server")
    wd = Path(info.workdir)
    return _run([*_ejabberdctl_cmd(wd), *args], what=f"ejabberdctl {' '.join(args)}",
                timeout=timeout, env={**os.environ, "ERL_INETRC": str(wd / "inetrc")})


def ejabberd_api(info: ServerInfo, command: str, args: Mapping[str, str]) -> tuple[int, str]:
    """An ejabberd HTTP API command on the server: (HTTP status, body)."""
    return _ejabberd_api(info, command, args)


def ejabberd_store_offline(info: ServerInfo, user: str, stanza: str) -> int:
    """Store *stanza*, a message to *user*, in *user*'s offline storage the way
    ejabberd does when, routing it, it finds no available resource (its
    offline_message_hook), even while the user is online: that is how a message
    routed during a login, but stored after the login's flush, is left behind.
    Returns the user's number of stored messages afterwards.

    Runs a hidden Erlang node that calls the server's own functions over
    distribution (no ejabberdctl command stores a message)."""
    if info.kind != "ejabberd":
        raise ServerError("ejabberd_store_offline needs an ejabberd server")
    wd = Path(info.workdir)
    node, port = _ctl_setting(wd, "ERLANG_NODE"), _ctl_setting(wd, "ERL_DIST_PORT")
    options = (_ctl_setting(wd, "ERL_OPTIONS") or "").split()
    cookie = options[options.index("-setcookie") + 1] if "-setcookie" in options[:-1] else ""
    if not (node and port and cookie):
        raise ServerError(f"no node name, distribution port or cookie in {wd}/ejabberdctl.cfg")

    def binary(text: str) -> str:  # an Erlang binary literal
        return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"/utf8>>'

    script = (
        f"N = '{node}', Host = {binary(info.domain)},"
        f" El = rpc:call(N, fxml_stream, parse_element, [{binary(stanza)}]),"
        " Msg = rpc:call(N, xmpp, decode, [El]),"
        " {offlined, _} = rpc:call(N, ejabberd_hooks, run_fold,"
        " [offline_message_hook, Host, {bounce, Msg}, []]),"
        f" Count = rpc:call(N, mod_offline, count_offline_messages, [{binary(user)}, Host]),"
        ' io:format("~p~n", [Count]), halt().'
    )
    out = _run(
        ["erl", "-noshell", "-hidden", "-sname", f"rbstore{os.getpid()}@localhost",
         "-setcookie", cookie, "-erl_epmd_port", port, "-start_epmd", "false",
         "-dist_listen", "false", "-eval", script],
        what="storing an offline message",
        env={**os.environ, "ERL_INETRC": str(wd / "inetrc")},
    )  # fmt: skip
    try:
        return int(out.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise ServerError(f"storing an offline message: unexpected output {out!r}") from exc


def load_info(workdir: str | os.PathLike[str]) -> ServerInfo:
    """The ServerInfo saved in *workdir*/server.json."""
    info = _read_info(Path(workdir).resolve())
    if info is None:
        raise ServerError(f"no {INFO_FILE} in {workdir}")
    return info


# --------------------------------------------------------------------------
# launching and waiting


def _launch(base: ServerInfo) -> ServerInfo:
    """Start the configured server in the background and wait until ready."""
    wd = Path(base.workdir)
    busy = [port for port in _ports_of(base) if not _port_free(base.host, port)]
    if busy:
        raise ServerError(f"{base.kind} in {wd}: port(s) {busy} already in use")
    log_size = _log_size(base)
    if base.kind == "prosody":
        cmd = [PROSODY, "--config", _prosody_cfg(base), "-F"]
        console = wd / "prosody.console.log"
    else:
        cmd = [*_ejabberdctl_cmd(wd), "foreground"]
        console = wd / "log" / "console.log"
    started = time.monotonic()
    with open(console, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=wd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stopped as a whole
        )
    _CHILDREN[proc.pid] = proc
    info = dataclasses.replace(base, pid=proc.pid)
    _write_info(info)
    try:
        _wait_ready(info, started + START_TIMEOUT, log_size)
    except BaseException:
        stop_server(info)
        raise
    return info


def _wait_ready(info: ServerInfo, deadline: float, log_size: int) -> None:
    ports_open = False
    while True:
        if not _pid_alive(info.pid):
            raise ServerError(f"{info.kind} exited during start-up{_log_tail(info)}")
        if not ports_open:
            ports_open = _port_open(info.host, info.c2s_port) and _port_open(
                info.host, info.component_port
            )
        if ports_open:
            if info.kind == "prosody":
                # Prosody keeps running when it cannot listen on a port.
                new = _new_log(info, log_size)
                if PROSODY_PORT_ERROR in new:
                    raise ServerError(f"prosody could not listen on a port{_log_tail(info)}")
                # ...and with its stock collector when it refuses the gc setting.
                if PROSODY_GC_ERROR in new:
                    raise ServerError(f"prosody refused its gc setting{_log_tail(info)}")
                return
            # the `ejabberdctl status` command, through the HTTP API
            with contextlib.suppress(ServerError):
                status, reply = _ejabberd_api(info, "status", {})
                if status == 200 and "is started" in reply:
                    return
        if time.monotonic() >= deadline:
            raise ServerError(
                f"{info.kind} not ready after {START_TIMEOUT:.0f} s "
                f"(c2s {info.c2s_port}, component {info.component_port})"
                f"{_log_tail(info)}"
            )
        time.sleep(POLL_INTERVAL)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _ports_of(info: ServerInfo) -> list[int]:
    """Every TCP port the configured server will listen on."""
    ports = [info.c2s_port, info.component_port]
    if info.kind == "prosody" and info.websocket_url:
        ports.append(_ws_port(info))
    if info.kind == "ejabberd":
        ports.append(_ejabberd_api_port(info))
        dist_port = _ctl_setting(Path(info.workdir), "ERL_DIST_PORT")
        if dist_port:
            ports.append(int(dist_port))
    return ports


def _ws_port(info: ServerInfo) -> int:
    return int(urllib.parse.urlsplit(info.websocket_url).port or 0)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open at once while choosing)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


# --------------------------------------------------------------------------
# stopping


def _reap(pid: int, *, wait: bool = False) -> None:
    """Collect the exit status of a server this process started."""
    proc = _CHILDREN.get(pid)
    if proc is None:
        return
    if wait:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)
    if proc.poll() is not None:
        del _CHILDREN[pid]


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def _pid_alive(pid: int) -> bool:
    """True when *pid* is a live (not zombie) process."""
    _reap(pid)
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group *pgid*."""
    _reap(pgid)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(entry.name)
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_our_server(info: ServerInfo, members: Sequence[int]) -> bool:
    """Guards against a recycled PID: the group must run from info.workdir."""
    marker = os.path.join(info.workdir, "").encode()  # "/the/workdir/"
    return any(marker in _cmdline(pid) for pid in members)


def _server_alive(info: ServerInfo) -> bool:
    members = _group_pids(info.pid) if info.pid > 0 else []
    return bool(members) and _is_our_server(info, members)


def _main_pid(info: ServerInfo, members: Sequence[int]) -> int:
    """The process that gets SIGTERM: Prosody itself, or ejabberd's Erlang VM
    (the group leader there is ejabberdctl's shell, which would die at once
    and leave the VM running)."""
    if info.kind == "ejabberd":
        with contextlib.suppress(OSError, ValueError):
            pid = int((Path(info.workdir) / "ejabberd.pid").read_text().strip())
            if pid in members:
                return pid
        for pid in members:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp":
                    return pid
    return info.pid if info.pid in members else members[0]


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_pids(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# --------------------------------------------------------------------------
# files


def _write_info(info: ServerInfo) -> None:
    path = Path(info.workdir) / INFO_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.to_json() + "\n")
    tmp.replace(path)


def _read_info(wd: Path) -> ServerInfo | None:
    path = wd / INFO_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServerError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ServerError(f"{path} does not hold a JSON object")
    return ServerInfo.from_dict(data)


def _log_files(info: ServerInfo) -> list[Path]:
    wd = Path(info.workdir)
    if info.kind == "prosody":
        return [wd / "prosody.console.log", wd / "prosody.log"]
    return [wd / "log" / "console.log", wd / "log" / "error.log", wd / "log" / "ejabberd.log"]


def _log_size(info: ServerInfo) -> int:
    try:
        return _log_files(info)[-1].stat().st_size
    except OSError:
        return 0


def _new_log(info: ServerInfo, offset: int) -> str:
    """What the server's main log got since *offset*."""
    try:
        with open(_log_files(info)[-1], "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _log_tail(info: ServerInfo, lines: int = 25) -> str:
    parts = []
    for path in _log_files(info):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        tail = text.splitlines()[-lines:]
        if tail:
            parts.append(f"\n--- last lines of {path} ---\n" + "\n".join(tail))
    return "".join(parts) or "\n(no server log written)"


def _make_cert(wd: Path) -> None:
    """Self-signed cert for localhost, *.localhost and 127.0.0.1 (kept if present)."""
    cert, key, combined = wd / CERT_FILE, wd / KEY_FILE, wd / COMBINED_PEM
    if not (cert.exists() and key.exists()):
        _run(
            [
                OPENSSL, "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "3650", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
                "-addext", "extendedKeyUsage=serverAuth,clientAuth",
                "-keyout", str(key), "-out", str(cert),
            ],
            what="generating the TLS certificate",
        )  # fmt: skip
    combined.write_text(cert.read_text() + key.read_text())
    for path in (cert, key, combined):
        path.chmod(0o600 if path != cert else 0o644)


def _lua(value: str) -> str:
    if any(ch in value for ch in '\\"\n\r\0'):
        raise ServerError(f"unsupported character in config value {value!r}")
    return f'"{value}"'


def _yaml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string


# --------------------------------------------------------------------------
# Prosody


def _prosody_cfg(info: ServerInfo) -> str:
    return str(Path(info.workdir) / "prosody.cfg.lua")


def _write_prosody_config(info: ServerInfo, tls_required: bool, unlimited: bool = False,
                          stock_gc: bool = False) -> None:
    wd = Path(info.workdir)
    for sub in ("data", "certs"):
        (wd / sub).mkdir(exist_ok=True)
    tls = "true" if tls_required else "false"
    if unlimited:
        limits_module = ""
        limits = "-- unlimited: mod_limits is not loaded, no account is throttled"
    else:
        limits_module = ' "limits";'
        limits = (
            "-- stock Debian limits for everybody but the bot\n"
            'limits = { c2s = { rate = "10kb/s" } }\n'
            f"unlimited_jids = {{ {_lua(BOT_JID)} }}"
        )
    # RULEBOT_SERVER_DEBUG=1: Prosody's debug log (every stanza, and why it
    # closed a stream), for looking into a failing run.
    log_level = "debug" if os.environ.get("RULEBOT_SERVER_DEBUG") else "info"
    gc = ("-- stock garbage collector settings" if stock_gc else
          "-- the collector's pause raised from 105 (see PROSODY_GC)\n" + PROSODY_GC)
    cfg = f"""-- generated by scripts/xmppserver.py: a private test server
run_as_root = true -- mod_posix refuses root otherwise (and then hangs)
pidfile = {_lua(str(wd / "prosody.pid"))}
data_path = {_lua(str(wd / "data"))}
log = {{ {log_level} = {_lua(str(wd / "prosody.log"))} }}
plugin_paths = {{ }}
certificates = {_lua(str(wd / "certs"))} -- empty: `ssl` below names the files

interfaces = {{ {_lua(info.host)} }}
local_interfaces = {{ {_lua(info.host)} }}
c2s_ports = {{ {info.c2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_interfaces = {{ {_lua(info.host)} }}
component_ports = {{ {info.component_port} }}
-- XMPP over WebSocket (mod_websocket) for browsers, plain HTTP on loopback:
-- counted as encrypted, as a TLS-terminating proxy in front would make it.
http_interfaces = {{ {_lua(info.host)} }}
http_ports = {{ {_ws_port(info)} }}
https_ports = {{ }}
consider_websocket_secure = true

modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "version"; "uptime";
    "private"; "blocklist"; "carbons"; "csi_simple";{limits_module} "smacks"; "websocket";
}}
-- no server-to-server traffic
modules_disabled = {{ "s2s"; "s2s_auth_certs"; "dialback" }}

authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = {tls}
allow_registration = false
ssl = {{
    certificate = {_lua(str(wd / CERT_FILE))};
    key = {_lua(str(wd / KEY_FILE))};
}}

{limits}

-- XEP-0198: a large queue so a hibernating bot session loses nothing
smacks_max_queue_size = {SM_QUEUE}

{gc}

VirtualHost {_lua(info.domain)}

Component {_lua(info.component_jid)}
    component_secret = {_lua(info.component_secret)}
"""
    (wd / "prosody.cfg.lua").write_text(cfg)


# --------------------------------------------------------------------------
# ejabberd


def _ejabberdctl_cmd(wd: Path) -> list[str]:
    return [
        str(wd / "ejabberdctl"),
        "--config-dir", str(wd),
        "--config", str(wd / "ejabberd.yml"),
        "--ctl-config", str(wd / "ejabberdctl.cfg"),
        "--spool", str(wd / "db"),
        "--logs", str(wd / "log"),
    ]  # fmt: skip


def _ctl_setting(wd: Path, name: str) -> str | None:
    """A NAME=value line of the ejabberdctl.cfg we wrote, if any."""
    try:
        cfg = (wd / "ejabberdctl.cfg").read_text()
    except FileNotFoundError:
        return None
    for line in cfg.splitlines():
        if line.startswith(f"{name}="):
            return line.partition("=")[2]
    return None


def _ejabberd_api_port(info: ServerInfo) -> int:
    try:
        return int((Path(info.workdir) / API_PORT_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ServerError(f"no ejabberd API port in {info.workdir}: {exc}") from exc


def _ejabberd_api(info: ServerInfo, command: str, args: Mapping[str, str]) -> tuple[int, str]:
    """Run an ejabberd API command over HTTP; returns (HTTP status, body)."""
    url = f"http://{info.host}:{_ejabberd_api_port(info)}/api/{command}"
    request = urllib.request.Request(
        url,
        data=json.dumps(dict(args)).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _NO_PROXY.open(request, timeout=CTL_TIMEOUT) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        raise ServerError(f"ejabberd API {command}: {exc}") from exc


def _write_ejabberd_config(
    info: ServerInfo, tls_required: bool, dist_port: int, api_port: int, unlimited: bool = False,
    stock_gc: bool = False, cluster: ClusterLink | None = None,
) -> None:
    wd = Path(info.workdir)
    for sub in ("db", "log"):
        (wd / sub).mkdir(exist_ok=True)

    # The packaged ejabberdctl re-runs itself as the `ejabberd` user (via su)
    # whenever it is called by root.  That user cannot enter pytest's
    # /tmp/pytest-of-root (mode 0700), so use a copy that runs the node as
    # the calling user, root or not.
    script = Path(EJABBERDCTL).read_text()
    if "\nINSTALLUSER=ejabberd\n" not in script:
        raise ServerError(f"{EJABBERDCTL} has changed: no INSTALLUSER=ejabberd line")
    ctl = wd / "ejabberdctl"
    ctl.write_text(script.replace("\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n", 1))
    ctl.chmod(0o755)
    # Erlang resolver config, as Debian's /etc/ejabberd/inetrc (not readable
    # by ordinary users): "localhost" must resolve for the node name.
    (wd / "inetrc").write_text(
        '{lookup,["file","native"]}.\n'
        '{host,{127,0,0,1}, ["localhost","hostalias"]}.\n'
        '{file, resolv, "/etc/resolv.conf"}.\n'
    )

    # Node name unique per server, and kept for the workdir's life: the
    # mnesia database in db/ belongs to the node that created it.
    # ERL_DIST_PORT: the node listens on that port and no epmd is started (a
    # stray epmd would listen on 0.0.0.0:4369 and outlive the server); ctl
    # clients connect straight to that port.
    node = _ctl_setting(wd, "ERLANG_NODE") or f"rulebot{info.c2s_port}@localhost"
    cookie = secrets.token_hex(16)
    if cluster is not None:
        node, cookie = cluster.node, cluster.cookie
    erl_options = (
        "-env ERL_CRASH_DUMP_BYTES 0"
        " -kernel inet_dist_use_interface {127,0,0,1}"
        f" -setcookie {cookie}"
        + ("" if stock_gc else f" {EJABBERD_VM_FLAGS}")
    )
    if cluster is None:
        dist = f"ERL_DIST_PORT={dist_port}\n"
    else:
        # Nodes of a cluster find each other through the cluster's own epmd
        # (ERL_DIST_PORT would make every node assume the others listen on
        # its own port); each listens on a port of its choosing, on loopback
        # (a fixed one would be taken by ejabberdctl's own VM too).
        dist = (f"export ERL_EPMD_PORT={cluster.epmd_port}\n"
                "ERL_EPMD_ADDRESS=127.0.0.1\n")
    (wd / "ejabberdctl.cfg").write_text(
        "# generated by scripts/xmppserver.py\n"
        f"ERLANG_NODE={node}\n"
        f"{dist}"
        f'ERL_OPTIONS="{erl_options}"\n'
        f"EJABBERD_PID_PATH={wd / 'ejabberd.pid'}\n"
        "EJABBERD_BYPASS_WARNINGS=true\n"
    )

    (wd / API_PORT_FILE).write_text(f"{api_port}\n")
    starttls_required = "true" if tls_required else "false"
    if unlimited:
        c2s_shaper = "# unlimited: no account is shaped\n  c2s_shaper: none"
    else:
        c2s_shaper = (
            "# an ordered list: `none: [admin, bots]` would mean admin AND bots\n"
            "  c2s_shaper:\n"
            "    - none: bots\n"
            "    - normal: all"
        )
    cfg = f"""# generated by scripts/xmppserver.py: a private test server
hosts:
  - {_yaml(info.domain)}
loglevel: info
log_rotate_count: 0
certfiles:
  - {_yaml(str(wd / COMBINED_PEM))}
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
auth_method: internal
auth_password_format: scram
s2s_access: none

listen:
  -
    port: {info.c2s_port}
    ip: {_yaml(info.host)}
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    starttls: true
    starttls_required: {starttls_required}
  -
    port: {info.component_port}
    ip: {_yaml(info.host)}
    module: ejabberd_service
    hosts:
      {_yaml(info.component_jid)}:
        password: {_yaml(info.component_secret)}
  -
    # admin API for xmppserver.py (register_user, readiness); loopback only
    port: {api_port}
    ip: {_yaml(info.host)}
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
      # XMPP over WebSocket for browsers (RFC 7395), loopback only
      /ws: ejabberd_http_ws

api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
  "xmppserver.py":
    from:
      - mod_http_api
    who:
      ip: 127.0.0.1/8
    what:
      - status
      - register
      - change_password
      - list_cluster

acl:
  bots:
    user:
      - {_yaml(BOT_JID)}
  local:
    user_regexp: ""

access_rules:
  local:
    allow: local
  c2s:
    allow: all

shaper:
  normal:
    rate: 3000
    burst_size: 20000
  fast: 200000

shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: {OFFLINE_LIMIT}
  {c2s_shaper}
  s2s_shaper: fast

modules:
  mod_admin_extra: {{}}
  mod_blocking: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_client_state: {{}}
  mod_disco: {{}}
  mod_http_api: {{}}
  mod_last: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_privacy: {{}}
  mod_private: {{}}
  mod_roster:
    versioning: true
  mod_stream_mgmt:
    resend_on_timeout: if_offline
    max_ack_queue: {SM_QUEUE}
  mod_version: {{}}
"""
    (wd / "ejabberd.yml").write_text(cfg)


# --------------------------------------------------------------------------
# helpers


def _check_binaries(kind: str) -> None:
    needed = [PROSODY, PROSODYCTL] if kind == "prosody" else [EJABBERDCTL, "/usr/bin/erl"]
    needed.append(OPENSSL)
    missing = [b for b in needed if shutil.which(b) is None]
    if missing:
        raise ServerError(
            f"missing {', '.join(missing)}: run scripts/install-system-deps (as root)"
        )


def _run(cmd: Sequence[str], *, what: str, timeout: float = CTL_TIMEOUT,
         env: Mapping[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(
            list(cmd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise ServerError(f"{what} failed ({proc.returncode}): {proc.stdout.strip()}")
    return proc.stdout


def _parse_user(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD, got {text!r}")
    return user, password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="xmppserver.py", description="Run a private Prosody or ejabberd for tests."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="configure and start a server, print its info")
    p_start.add_argument("kind", choices=KINDS)
    p_start.add_argument("--dir", required=True, help="work directory (created)")
    p_start.add_argument(
        "--user", action="append", type=_parse_user, metavar="USER:PASSWORD",
        help="register USER@localhost (repeatable)",
    )  # fmt: skip
    p_start.add_argument(
        "--no-tls-required", dest="tls_required", action="store_false",
        help="allow clients without STARTTLS",
    )  # fmt: skip
    p_start.add_argument(
        "--unlimited", action="store_true",
        help="lift the c2s rate limits of every account (benchmarks)",
    )  # fmt: skip
    p_start.add_argument(
        "--stock-gc", action="store_true",
        help="keep the server's own garbage collector settings (benchmarks)",
    )  # fmt: skip
    p_stop = sub.add_parser("stop", help="stop the server running in DIR")
    p_stop.add_argument("--dir", required=True)
    p_restart = sub.add_parser("restart", help="restart the server in DIR (same ports)")
    p_restart.add_argument("--dir", required=True)
    p_reg = sub.add_parser("register", help="register users on the server in DIR")
    p_reg.add_argument("--dir", required=True)
    p_reg.add_argument("--user", action="append", type=_parse_user, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            users = dict(args.user or [])
            info = start_server(
                args.kind, args.dir, users, tls_required=args.tls_required,
                unlimited=args.unlimited, stock_gc=args.stock_gc,
            )  # fmt: skip
            print(info.to_json(), flush=True)
        elif args.command == "stop":
            stop_server(args.dir)
        elif args.command == "restart":
            info = restart_server(load_info(args.dir))
            print(info.to_json(), flush=True)
        else:
            info = load_info(args.dir)
            for user, password in args.user:
                register_user(info, user, password)
    except ServerError as exc:
        print(f"xmppserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
