"""The admin commands (rulebot.bot.admin) as XEP-0050 ad-hoc commands of the
bot's JID: listed by service discovery, each one form (fields) then its result
(a note, the text and the data as JSON in a result form). Only the JIDs of
`admins` may run them; everyone else gets `forbidden` (and an audit line).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from slixmpp.exceptions import XMPPError

from rulebot.bot.admin import COMMANDS, AdminResult, Command
from rulebot.xmpp import patches


class AdminRunner(Protocol):
    """What carries the commands out (rulebot.daemon.admin.Admin)."""

    def allowed(self, jid: str) -> bool: ...

    def refused(self, jid: str, command: str, via: str) -> None: ...

    async def run(self, who: str, command: str, args: Mapping[str, str],
                  via: str) -> AdminResult: ...


def install(xmpp: Any, runner: AdminRunner) -> None:
    """Register the commands (before the connection starts: rulebot.xmpp.patches
    takes the handlers registered by then as the ones messages skip)."""
    xmpp.register_plugin("xep_0004")
    xmpp.register_plugin("xep_0050")
    if not patches.guard_adhoc_sessions(
            xmpp, lambda iq: runner.refused(iq["from"].bare, iq["command"]["node"], "adhoc")):
        # Unguarded sessions could be completed by anyone who learns an id.
        raise RuntimeError("slixmpp's XEP-0050 plugin is not as verified: "
                           "admin commands cannot be offered safely")

    def add(_event: object = None) -> None:
        for command in COMMANDS:
            xmpp.plugin["xep_0050"].add_command(node=command.node, name=command.name,
                                                handler=_starter(xmpp, runner, command))

    add()
    # The plugin empties the command list at every resource binding (its own
    # session_bind handler, registered before this one): list them again.
    xmpp.add_event_handler("session_bind", add)


def _starter(xmpp: Any, runner: AdminRunner, command: Command) -> Any:
    async def start(iq: Any, session: dict[str, Any]) -> dict[str, Any]:
        who = iq["from"].bare
        if not runner.allowed(who):
            runner.refused(who, command.node, "adhoc")
            raise XMPPError("forbidden", "admin commands are for the bot's admins")
        if not command.fields:
            return await _finish(xmpp, runner, command, session, {})
        form = xmpp.plugin["xep_0004"].make_form(ftype="form", title=command.name)
        for f in command.fields:
            form.add_field(var=f.var, ftype="text-single", label=f.label, required=f.required)
        session["payload"] = form
        session["has_next"] = False

        async def complete(payload: Any, session: dict[str, Any]) -> dict[str, Any]:
            values = payload.get_values() if hasattr(payload, "get_values") else {}
            args = {k: str(v) for k, v in values.items() if v not in (None, "")}
            return await _finish(xmpp, runner, command, session, args)

        session["next"] = complete
        return session
    return start


async def _finish(xmpp: Any, runner: AdminRunner, command: Command, session: dict[str, Any],
                  args: Mapping[str, str]) -> dict[str, Any]:
    who = session["from"].bare
    if not runner.allowed(who):  # the session's owner, checked again on submit
        runner.refused(who, command.node, "adhoc")
        raise XMPPError("forbidden", "admin commands are for the bot's admins")
    result = await runner.run(who, command.node, args, "adhoc")
    if not result.ok:
        raise XMPPError(result.condition or "bad-request", result.text)  # type: ignore[arg-type]
    form = xmpp.plugin["xep_0004"].make_form(ftype="result", title=command.name)
    form.add_field(var="text", ftype="text-multi", label="Result", value=result.text)
    if result.data is not None:
        form.add_field(var="data", ftype="text-multi", label="JSON",
                       value=json.dumps(result.data, ensure_ascii=False, indent=1))
    session["payload"] = form
    session["notes"] = [("info", result.text.splitlines()[0] if result.text else "done")]
    session["next"] = None
    session["has_next"] = False
    return session
