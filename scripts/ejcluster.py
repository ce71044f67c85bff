"""A private ejabberd cluster on loopback for tests: N nodes (distinct node
names, ports and spool directories) that share a cookie, find each other
through a private epmd on 127.0.0.1, and accept the same component. Started
and stopped by the project's scripts, like scripts.xmppserver's servers.

Library use::

    cluster = start_cluster(workdir, {"alice": "pw"}, nodes=2)
    ... cluster.nodes[0].c2s_port, cluster.nodes[1].component_port ...
    stop_node(cluster, 1); start_node(cluster, 1)
    stop_cluster(cluster)

Command line::

    python -m scripts.ejcluster start --dir DIR [--nodes 2]   # prints the cluster as JSON
    python -m scripts.ejcluster stop --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.xmppserver import (
    ClusterLink,
    ServerError,
    ServerInfo,
    ejabberd_api,
    ejabberdctl,
    restart_server,
    start_server,
    stop_server,
)

EPMD = "/usr/bin/epmd"
CLUSTER_FILE = "cluster.json"
JOIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class ClusterInfo:
    workdir: str
    epmd_port: int
    epmd_pid: int
    cookie: str
    nodes: tuple[ServerInfo, ...]

    def node_name(self, index: int) -> str:
        return f"rbnode{index}_{self.epmd_port}@localhost"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_epmd(wd: Path) -> tuple[int, int]:
    port = _free_port()
    log = open(wd / "epmd.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([EPMD, "-port", str(port), "-address", "127.0.0.1"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return port, proc.pid
        if proc.poll() is not None:
            raise ServerError(f"epmd exited at start ({proc.returncode}); see {wd}/epmd.log")
        time.sleep(0.05)
    proc.kill()
    raise ServerError("epmd did not listen within 10 s")


def _members(node: ServerInfo) -> int:
    status, body = ejabberd_api(node, "list_cluster", {})
    if status != 200:
        return 0
    try:
        return len(json.loads(body))
    except ValueError:
        return 0


def _write(cluster: ClusterInfo) -> None:
    (Path(cluster.workdir) / CLUSTER_FILE).write_text(cluster.to_json() + "\n")


def load_cluster(workdir: str | os.PathLike[str]) -> ClusterInfo:
    data = json.loads((Path(workdir) / CLUSTER_FILE).read_text())
    nodes = tuple(ServerInfo.from_dict(n) for n in data.pop("nodes"))
    return ClusterInfo(nodes=nodes, **data)


def start_cluster(workdir: str | os.PathLike[str], users: Mapping[str, str], nodes: int = 2,
                  *, unlimited: bool = False) -> ClusterInfo:
    """Start `nodes` ejabberd nodes in `workdir`/node0.., join them into one
    cluster, register `users` (once: the cluster shares them). Returns once
    every node lists all of them."""
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    port, pid = _start_epmd(wd)
    cluster = ClusterInfo(str(wd), port, pid, secrets.token_hex(16), ())
    secret = secrets.token_hex(16)
    started: list[ServerInfo] = []
    try:
        for i in range(nodes):
            link = ClusterLink(port, cluster.cookie, secret, cluster.node_name(i))
            info = start_server("ejabberd", wd / f"node{i}", users if i == 0 else {},
                                unlimited=unlimited, cluster=link)
            started.append(info)
            if i > 0:
                ejabberdctl(info, "join_cluster", cluster.node_name(0))
        cluster = dataclasses.replace(cluster, nodes=tuple(started))
        _write(cluster)
        deadline = time.monotonic() + JOIN_TIMEOUT
        while not all(_members(n) == nodes for n in started):
            if time.monotonic() > deadline:
                raise ServerError(f"the {nodes} nodes did not form a cluster in "
                                  f"{JOIN_TIMEOUT:.0f} s")
            time.sleep(0.2)
    except BaseException:
        for info in reversed(started):
            stop_server(info)
        _stop_epmd(pid)
        raise
    return cluster


def stop_node(cluster: ClusterInfo, index: int) -> None:
    """Stop one node (SIGTERM: a graceful stop); the others keep serving."""
    stop_server(cluster.nodes[index])


def start_node(cluster: ClusterInfo, index: int) -> ClusterInfo:
    """Start a stopped node again (same ports, data; it rejoins by itself)."""
    node = restart_server(cluster.nodes[index])
    nodes = list(cluster.nodes)
    nodes[index] = node
    cluster = dataclasses.replace(cluster, nodes=tuple(nodes))
    _write(cluster)
    return cluster


def _stop_epmd(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop_cluster(cluster: ClusterInfo | str | os.PathLike[str]) -> None:
    if not isinstance(cluster, ClusterInfo):
        try:
            cluster = load_cluster(cluster)
        except FileNotFoundError:
            return
    for node in reversed(cluster.nodes):
        stop_server(node)
    _stop_epmd(cluster.epmd_pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ejcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start")
    start.add_argument("--dir", required=True)
    start.add_argument("--nodes", type=int, default=2)
    stop = sub.add_parser("stop")
    stop.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "start":
        print(start_cluster(args.dir, {}, args.nodes).to_json())
    else:
        stop_cluster(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
