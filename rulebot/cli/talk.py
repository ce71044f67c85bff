"""`rulebot send` and `rulebot listen`: poke a live deployment as a user, with
rulebot.client. Exit codes: 0 success, 1 no answer or an error reply (send
--wait) / fewer messages than --count (listen), 3 a connection failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any, TextIO

import click

from rulebot.cli.lines import read_events


def _client_options(f: Any) -> Any:
    """Options shared by `send` and `listen`: who to be and where the server is."""
    options = [
        click.option("--jid", required=True, help="The user's JID, e.g. alice@example.com."),
        click.option("--bot", required=True, help="The friend bot's JID (or component)."),
        click.option("--host", default=None, help="Server host (default: the JID's domain)."),
        click.option("--port", default=5222, show_default=True, type=int),
        click.option("--password-env", default="RULEBOT_PASSWORD", show_default=True,
                     help="Environment variable holding the user's password."),
        click.option("--password-file", type=click.Path(exists=True, dir_okay=False),
                     help="File whose first line is the password (instead of the variable)."),
        click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
                     help="PEM file of CAs to trust for the server certificate."),
        click.option("--no-verify", is_flag=True, help="Do not verify the certificate (tests "
                     "only)."),
        click.option("--allow-plain", is_flag=True, help="Allow a connection without TLS."),
        click.option("--encoding", type=click.Choice(["body", "json"]), default="body",
                     show_default=True, help="body: JSON in <body>; json: XEP-0335 container."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _client(opts: dict[str, Any]) -> Any:
    from rulebot.client import RulebotClient

    if opts["password_file"]:
        with open(opts["password_file"], encoding="utf-8") as fh:
            password = fh.readline().rstrip("\n")
    else:
        password = os.environ.get(opts["password_env"], "")
        if not password:
            raise click.UsageError(f"environment variable {opts['password_env']} is not set")
    return RulebotClient(opts["jid"], password, opts["bot"], host=opts["host"],
                         port=opts["port"], ca_file=opts["ca_file"],
                         verify=not opts["no_verify"], allow_plain=opts["allow_plain"],
                         encoding=opts["encoding"])


@click.command()
@_client_options
@click.argument("event", required=False)
@click.option("-f", "--file", "event_file", type=click.File("r", encoding="utf-8"),
              help="Read events from a file (JSON lines, or one JSON object).")
@click.option("--wait", type=float, default=None,
              help="Wait up to SECONDS for the bot's reply to each event and print it.")
def send(event: str | None, event_file: TextIO | None, wait: float | None,
         **opts: Any) -> None:
    """Send events to the bot as a user: EVENT, a file, or JSON lines on stdin.

    Prints one JSON line per event: its id, and with --wait the reply or error.
    Exit codes: 0 sent (and answered), 1 an error reply or no reply, 3 cannot connect."""
    from rulebot.client import RequestError
    from rulebot.errors import ConnectError

    if event is not None:
        texts = [event]
    else:
        texts = [t for _, t in read_events(event_file or sys.stdin)]
    events = []
    for text in texts:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise click.UsageError("an event must be a JSON object")
        events.append(value)

    async def go() -> int:
        client = _client(opts)
        try:
            await client.connect()
        except ConnectError as exc:
            click.echo(f"rulebot send: {exc}", err=True)
            return 3
        failed = 0
        try:
            for value in events:
                if wait is None:
                    click.echo(json.dumps({"sent": client.send_event(value)}))
                    continue
                try:
                    received = await client.request(value, timeout=wait)
                    click.echo(json.dumps({"reply": received.to_json()}, ensure_ascii=False))
                except RequestError as exc:
                    failed += 1
                    click.echo(json.dumps({"error": exc.received.to_json()},
                                          ensure_ascii=False))
                except TimeoutError:
                    failed += 1
                    click.echo(json.dumps({"timeout": value.get("id")}))
        finally:
            await client.close()
        return 1 if failed else 0

    sys.exit(asyncio.run(go()))


@click.command()
@_client_options
@click.option("--count", type=int, default=None, help="Exit after N events (exit 1 if the "
              "timeout comes first).")
@click.option("--timeout", type=float, default=None, help="Exit after SECONDS.")
def listen(count: int | None, timeout: float | None, **opts: Any) -> None:
    """Print every message the bot sends this user, one JSON line each.

    Prints "listening as JID" on stderr once the session is up. Runs until
    interrupted, N events (--count) or --timeout."""
    from rulebot.errors import ConnectError

    async def go() -> int:
        client = _client(opts)
        try:
            await client.connect()
        except ConnectError as exc:
            click.echo(f"rulebot listen: {exc}", err=True)
            return 3
        click.echo(f"listening as {opts['jid']}", err=True)
        seen = 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while count is None or seen < count:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                getter = asyncio.ensure_future(client.receive())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait([getter, stopper], timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                click.echo(json.dumps(getter.result().to_json(), ensure_ascii=False))
                seen += 1
        finally:
            await client.close()
        return 1 if count is not None and seen < count else 0

    sys.exit(asyncio.run(go()))
