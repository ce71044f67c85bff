"""Silences compiled for the engine (docs/silences.md): a stored Silence
(rulebot.model) with its sender normalised and its `match` compiled as a rule's
is. Pure: the daemon reads the stored ones, `rulebot silence add` checks a new
one here before storing it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rulebot.jid import norm_bare, valid_jid
from rulebot.model import LATEST, Silence
from rulebot.rules.expr import Expr, compile_expr
from rulebot.rules.timefns import TimeError, parse_duration, to_epoch


@dataclass(frozen=True, slots=True)
class Muting:
    """A silence as the engine applies it."""

    silence: Silence
    sender: str | None  # normalised bare JID
    match: Expr | None


def compile_silence(silence: Silence, lists: Mapping[str, object] | None = None
                    ) -> tuple[Muting | None, list[str]]:
    """The silence ready for the engine, or None and what is wrong with it.
    `lists`: the rule set's named lists, for `in_list` in the expression."""
    problems: list[str] = []
    if "" in (silence.rule, silence.sender, silence.match):
        problems.append("rule, sender and match may not be empty (leave them out)")
    if silence.rule is None and silence.sender is None and silence.match is None:
        problems.append("a silence needs a rule, a sender or a match expression")
    if silence.ends <= silence.starts:
        problems.append("a silence must end after it starts")
    elif not silence.ends < LATEST:
        problems.append("a silence must end before the year 10000")
    if silence.sender is not None and not valid_jid(silence.sender):
        problems.append(f"sender {silence.sender!r} is not a JID")
    if not silence.author.strip():
        problems.append("a silence needs an author")
    expr = None
    if silence.match is not None:
        expr, found = compile_expr(silence.match, {}, lists or {})
        problems += [f"match: {p.message}" for p in found]
    if problems:
        return None, problems
    sender = norm_bare(silence.sender) if silence.sender is not None else None
    return Muting(silence, sender, expr), []


def parse_until(text: str, now: float) -> float:
    """A silence's end: a duration from `now` (`2h`) or an ISO time. Raises TimeError."""
    try:
        return now + parse_duration(text)
    except TimeError:
        return to_epoch(text)


def compile_silences(silences: Sequence[Silence], lists: Mapping[str, object] | None = None
                     ) -> tuple[tuple[Muting, ...], list[tuple[Silence, list[str]]]]:
    """The valid ones compiled, and the invalid ones with their problems."""
    good: list[Muting] = []
    bad: list[tuple[Silence, list[str]]] = []
    for silence in silences:
        muting, problems = compile_silence(silence, lists)
        if muting is None:
            bad.append((silence, problems))
        else:
            good.append(muting)
    return tuple(good), bad
