#!/usr/bin/env python3
"""A private PostgreSQL cluster for rulebot's store tests and benchmarks.

The cluster is initialised in a fresh directory of its own, listens on
127.0.0.1 only, on a free port, with its Unix socket in that directory, and
runs with fsync and synchronous_commit on (the store's durability tests mean
something).  It has one database and one password-protected role, both named
``rulebot``.  Several clusters can run side by side.

Library use (tests put ``scripts/`` on ``sys.path``)::

    info = start_postgres(workdir)  # info.url: postgresql://rulebot:PW@127.0.0.1:PORT/rulebot
    ...
    stop_postgres(info)             # or stop_postgres(workdir); idempotent

Command line::

    python scripts/pgserver.py start --dir DIR    # prints the PgInfo as one JSON line
    python scripts/pgserver.py stop --dir DIR

Needs the Debian package postgresql (``scripts/install-system-deps``); the
binaries are found under /usr/lib/postgresql/VERSION/bin (newest version
first), then on PATH.  Works as root and as an ordinary user.

Why the cluster does not live in *workdir*: PostgreSQL refuses to run as root,
so as root initdb and postgres run as the ``postgres`` OS user (via setpriv),
who cannot enter pytest's 0700 /tmp/pytest-of-root.  The cluster therefore
lives in a ``tempfile.mkdtemp()`` directory owned by the server's user (a
short path, too: Unix socket paths are limited to 107 bytes), and *workdir*
holds only ``pg.json`` (the PgInfo).  stop_postgres removes that directory.
Its socket directory is mode 0700, so the ``trust`` authentication of local
socket connections (used to create the role) reaches only that user and root;
TCP connections need the password (scram-sha-256).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HOST", "PgError", "PgInfo", "load_info", "start_postgres", "stop_postgres"]

HOST = "127.0.0.1"
DATABASE = "rulebot"
ROLE = "rulebot"
SUPERUSER = "postgres"
OS_USER = "postgres"  # who runs the server when we are root

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
CMD_TIMEOUT = 120.0

INFO_FILE = "pg.json"
LOG_FILE = "postgres.log"
BIN_GLOB = "/usr/lib/postgresql/*/bin"


class PgError(RuntimeError):
    """The cluster could not be initialised, started or stopped."""


@dataclass(frozen=True)
class PgInfo:
    """Where a running private cluster is and how to reach it."""

    url: str  # postgresql://rulebot:PASSWORD@127.0.0.1:PORT/rulebot
    port: int
    pid: int  # the postmaster
    workdir: str  # holds pg.json
    cluster: str  # the private directory: data/, the socket, postgres.log
    host: str = HOST
    user: str = ROLE
    password: str = ""
    database: str = DATABASE
    bindir: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PgInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in ("url", "port", "pid", "workdir", "cluster") if n not in data)
        if missing:
            raise PgError(f"cluster info lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


# Server processes started by this process, so they can be reaped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------
# public API


def start_postgres(workdir: str | os.PathLike[str]) -> PgInfo:
    """Initialise and start a private cluster; returns once it accepts connections.

    Raises PgError (with the tail of the server log) when PostgreSQL is
    missing, initdb fails, or the server is not ready within 60 s.
    """
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    old = _read_info(wd)
    if old is not None and _pid_alive(old.pid) and Path(old.cluster).is_dir():
        raise PgError(f"a cluster (pid {old.pid}) is already running for {wd}")
    bindir = _bindir()
    as_root = os.geteuid() == 0
    cluster = Path(tempfile.mkdtemp(prefix="rulebot-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if as_root:
            user = _os_user()
            os.chown(cluster, user.pw_uid, user.pw_gid)
        cluster.chmod(0o700)
        password = secrets.token_hex(16)
        _initdb(bindir, cluster)
        port = _free_port()
        _write_conf(cluster, port)
        proc = _spawn(bindir, cluster)
        info = PgInfo(
            url=f"postgresql://{ROLE}:{password}@{HOST}:{port}/{DATABASE}",
            port=port, pid=proc.pid, workdir=str(wd), cluster=str(cluster),
            password=password, bindir=str(bindir),
        )  # fmt: skip
        _write_info(info)
        _wait_ready(info, proc, time.monotonic() + START_TIMEOUT)
        _create_role_and_database(info)
    except BaseException:
        _stop_cluster(bindir, cluster, proc)
        raise
    return info


def stop_postgres(info_or_workdir: PgInfo | str | os.PathLike[str]) -> None:
    """Stop the cluster (``pg_ctl stop -m fast``) and remove its directory.

    A no-op when it is not running or was stopped before."""
    if isinstance(info_or_workdir, PgInfo):
        info: PgInfo | None = info_or_workdir
    else:
        info = _read_info(Path(info_or_workdir).resolve())
    if info is None:
        return
    cluster = Path(info.cluster)
    bindir = Path(info.bindir) if info.bindir else _bindir()
    _stop_cluster(bindir, cluster, _CHILDREN.get(info.pid))


def load_info(workdir: str | os.PathLike[str]) -> PgInfo:
    """The PgInfo saved in *workdir*/pg.json."""
    info = _read_info(Path(workdir).resolve())
    if info is None:
        raise PgError(f"no {INFO_FILE} in {workdir}")
    return info


# --------------------------------------------------------------------------
# setting up


def _bindir() -> Path:
    """The newest /usr/lib/postgresql/*/bin holding initdb, else initdb's dir on PATH."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", Path(path).parent.name))

    for candidate in sorted(glob.glob(BIN_GLOB), key=version, reverse=True):
        if all(os.access(Path(candidate) / b, os.X_OK) for b in ("initdb", "postgres", "pg_ctl",
                                                                   "psql")):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(os.path.realpath(initdb)).parent
    raise PgError("PostgreSQL is not installed (no initdb in "
                  f"{BIN_GLOB} or on PATH): run scripts/install-system-deps (as root)")


def _os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        raise PgError(f"running as root needs the OS user {OS_USER!r} "
                      "(created by the postgresql package)") from None


def _as_server_user(cmd: Sequence[str]) -> list[str]:
    """*cmd*, run as the postgres OS user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return list(cmd)
    return ["setpriv", f"--reuid={OS_USER}", f"--regid={OS_USER}", "--init-groups", "--",
            *cmd]


def _env() -> dict[str, str]:
    # A LANG naming a locale that is not installed makes initdb fail; PG*
    # variables of the caller must not redirect our client commands.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
    env.update(LC_ALL="C", LANG="C")
    return env


def _initdb(bindir: Path, cluster: Path) -> None:
    _run(_as_server_user([
        str(bindir / "initdb"), "--pgdata", str(cluster / "data"),
        "--username", SUPERUSER, "--encoding", "UTF8", "--no-locale",
        "--auth-local", "trust", "--auth-host", "scram-sha-256", "--no-instructions",
        "--no-sync",  # a throwaway cluster; the server itself runs with fsync on
    ]), what="initdb", cwd=cluster)  # fmt: skip


def _write_conf(cluster: Path, port: int) -> None:
    conf = cluster / "data" / "postgresql.conf"
    settings = f"""
# --- scripts/pgserver.py: a private cluster for tests
listen_addresses = '{HOST}'
port = {port}
unix_socket_directories = '{cluster}'
unix_socket_permissions = 0700
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 40
shared_buffers = 32MB
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
"""
    with open(conf, "a", encoding="utf-8") as fh:  # root may write in the cluster dir
        fh.write(settings)


def _spawn(bindir: Path, cluster: Path) -> subprocess.Popen[bytes]:
    """Start the postmaster in its own session; setpriv execs, so the PID is the server's."""
    with open(cluster / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            _as_server_user([str(bindir / "postgres"), "-D", str(cluster / "data")]),
            cwd=cluster, env=_env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    return proc


def _wait_ready(info: PgInfo, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll postmaster.pid's status line ("ready" since PostgreSQL 10) and the port."""
    pidfile = Path(info.cluster) / "data" / "postmaster.pid"
    while True:
        if proc.poll() is not None:
            raise PgError(f"postgres exited during start-up ({proc.returncode})"
                          f"{_log_tail(Path(info.cluster))}")
        with contextlib.suppress(OSError):
            lines = pidfile.read_text().splitlines()
            if len(lines) >= 8 and lines[7].strip() == "ready" and _port_open(info.port):
                return
        if time.monotonic() >= deadline:
            raise PgError(f"postgres not ready after {START_TIMEOUT:.0f} s on port "
                          f"{info.port}{_log_tail(Path(info.cluster))}")
        time.sleep(POLL_INTERVAL)


def _create_role_and_database(info: PgInfo) -> None:
    # Through the socket as the superuser (trust); the password never
    # appears on a command line: psql reads the statement from stdin.
    psql = [str(Path(info.bindir) / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", info.cluster, "-p", str(info.port), "-U", SUPERUSER, "-d", "postgres"]
    script = (f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{info.password}';\n"
              f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n")
    _run(_as_server_user(psql), what="creating the role and database", stdin=script,
         cwd=Path(info.cluster))


# --------------------------------------------------------------------------
# stopping


def _stop_cluster(bindir: Path, cluster: Path, proc: subprocess.Popen[bytes] | None) -> None:
    if cluster.is_dir() and (cluster / "data" / "postmaster.pid").exists():
        pid = _postmaster_pid(cluster)
        try:
            _run(_as_server_user([str(bindir / "pg_ctl"), "stop", "-D", str(cluster / "data"),
                                  "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT))]),
                 what="pg_ctl stop", cwd=cluster)
        except PgError:
            if pid is not None and _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10.0)
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
    shutil.rmtree(cluster, ignore_errors=True)


def _postmaster_pid(cluster: Path) -> int | None:
    try:
        return int((cluster / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------
# helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _log_tail(cluster: Path, lines: int = 25) -> str:
    try:
        tail = (cluster / LOG_FILE).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    if not tail:
        return "\n(no server log written)"
    return f"\n--- last lines of {cluster / LOG_FILE} ---\n" + "\n".join(tail)


def _write_info(info: PgInfo) -> None:
    path = Path(info.workdir) / INFO_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(info.to_json() + "\n")
    tmp.chmod(0o600)  # it holds the role's password
    tmp.replace(path)


def _read_info(wd: Path) -> PgInfo | None:
    path = wd / INFO_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PgError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PgError(f"{path} does not hold a JSON object")
    return PgInfo.from_dict(data)


def _run(cmd: Sequence[str], *, what: str, cwd: Path, stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            list(cmd), input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=_env(),
            timeout=CMD_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise PgError(f"{what} failed ({proc.returncode}): {proc.stdout.strip()}")
    return proc.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pgserver.py", description="Run a private PostgreSQL cluster for tests."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="initialise and start a cluster, print its info")
    p_start.add_argument("--dir", required=True, help="work directory (created; holds pg.json)")
    p_stop = sub.add_parser("stop", help="stop the cluster started for DIR and remove it")
    p_stop.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start_postgres(args.dir).to_json(), flush=True)
        else:
            stop_postgres(args.dir)
    except PgError as exc:
        print(f"pgserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
