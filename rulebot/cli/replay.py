"""`rulebot replay ARCHIVE... --rules CANDIDATE`: re-decide archived events
with a candidate rule set and report what would change (docs/replay.md).

Files are read in archive order: rotated files oldest first (`archive.jsonl.3`,
`.2`, `.1`, then `archive.jsonl`), and the archives of several workers
(`archive.jsonl.w0`, `.w1`) merged by time, so the state replay rebuilds
evolves in the order the service made it.

Exit codes: 0 nothing changed, 1 something did (or the candidate is invalid),
2 usage (no such file, an unreadable store).
"""

from __future__ import annotations

import heapq
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from rulebot.model import JSON, Relation
from rulebot.rules.loader import check_rules
from rulebot.ruletest.replay import Changed, Report
from rulebot.ruletest.replay import replay as replay_events

_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<n>\d+))?$")
_TIME = re.compile(r'"time"\s*:\s*"([^"]*)"')
#: A progress line at most this often (seconds).
PROGRESS_SECONDS = 1.0


@click.command()
@click.argument("archives", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
@click.option("--rules", "rules_path", required=True, type=click.Path(exists=True),
              help="The candidate rule set (a file or a directory).")
@click.option("--store", "location", metavar="URL_OR_PATH",
              help="Start from a copy of this store's relations (default: none; "
                   "see docs/replay.md).")
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Take max_recipients and the timer limits from this rulebot.yaml.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="text: a table per rule; json: a line per changed event, then a summary line.")
@click.option("--show", default=20, show_default=True,
              help="Changed events listed in the text report.")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr [default: when stderr is a terminal].")
def replay(archives: tuple[str, ...], rules_path: str, location: str | None,
           config_path: str | None, fmt: str, show: int, progress: bool | None) -> None:
    """Re-decide the events of inbound ARCHIVES with the rules of --rules.

    Each event is decided on the clock it was decided live, with the state the
    recorded decisions made; the report says, per rule, how many events it
    newly matched or stopped matching, and which recipients were added or
    removed. Exits 0 when nothing changed, 1 when something did."""
    loaded = check_rules([rules_path])
    if loaded.ruleset is None:
        for issue in loaded.errors:
            click.echo(issue.format(), err=True)
        click.echo(f"rulebot replay: {rules_path}: invalid rules", err=True)
        sys.exit(1)
    max_recipients, timer_limits = 10_000, (100, 100_000)
    if config_path is not None:
        from rulebot.config import load_config
        from rulebot.errors import ConfigError

        try:
            config = load_config(config_path)
        except ConfigError as exc:
            raise click.UsageError(f"{config_path}: {exc}") from exc
        max_recipients = config.max_recipients
        timer_limits = (config.timers_per_sender, config.timers_total)
    relations = _relations(location) if location else []
    files = ordered(archives)
    show_progress = sys.stderr.isatty() if progress is None else progress
    ticker = _Progress(show_progress)
    emit = (lambda c: click.echo(json.dumps(c.to_json(), ensure_ascii=False))) \
        if fmt == "json" else None
    report = replay_events(_lines(files), loaded.ruleset, relations,
                           max_recipients=max_recipients, timer_limits=timer_limits,
                           on_event=ticker, on_changed=emit)
    ticker.done(report)
    for where, why in report.bad[:10]:
        click.echo(f"rulebot replay: {where}: skipped: {why}", err=True)
    if len(report.bad) > 10:
        click.echo(f"rulebot replay: {len(report.bad) - 10} more bad line(s) skipped", err=True)
    if not report.events:
        click.echo("rulebot replay: the archives hold no events", err=True)
    summary: dict[str, JSON] = {"summary": {**report.summary(),
                                            "candidate_version": loaded.ruleset.version,
                                            "files": [str(f) for f in files]}}
    if fmt == "json":
        click.echo(json.dumps(summary, ensure_ascii=False))
    else:
        for line in text_report(report, loaded.ruleset.version, len(files), show):
            click.echo(line)
    sys.exit(1 if report.changed_count else 0)


def ordered(paths: tuple[str, ...]) -> list[Path]:
    """The archive files oldest first: within one base name, the highest
    rotation number first and the live file last."""
    def key(path: Path) -> tuple[str, int]:
        m = _ROTATED.match(path.name)
        assert m is not None  # the pattern matches every name
        number = m.group("n")
        return (str(path.parent / m.group("base")), -int(number) if number else 0)
    return sorted(dict.fromkeys(Path(p) for p in paths), key=key)


def _lines(files: list[Path]) -> Iterator[tuple[str, str]]:
    """(FILE:LINE, text) of every line: each base name's files in order, the
    bases (one per worker) merged by the lines' time."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        m = _ROTATED.match(path.name)
        assert m is not None
        groups.setdefault(str(path.parent / m.group("base")), []).append(path)
    streams = [_read(group) for group in groups.values()]
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from heapq.merge(*streams, key=lambda item: _stamp(item[1]))


def _read(group: list[Path]) -> Iterator[tuple[str, str]]:
    for path in group:
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                yield f"{path}:{number}", line


def _stamp(line: str) -> str:
    m = _TIME.search(line)  # the writer puts it near the front; text order is time order
    return m.group(1) if m else ""


def _relations(location: str) -> list[Relation]:
    from rulebot.store.base import StoreError
    from rulebot.store.open import open_store

    try:
        store = open_store(location)
        try:
            return list(store.list())
        finally:
            store.close()
    except StoreError as exc:
        raise click.UsageError(f"cannot read the store: {exc}") from exc


class _Progress:
    def __init__(self, on: bool) -> None:
        self.on = on
        self.began = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.lead = "\r" if self.tty else ""  # a terminal's line is rewritten in place

    def __call__(self, events: int) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            rate = events / max(now - self.began, 1e-9)
            click.echo(f"{self.lead}replayed {events:,} events ({rate:,.0f}/s)",
                       err=True, nl=not self.tty)

    def done(self, report: Report) -> None:
        if self.on:
            took = time.monotonic() - self.began
            click.echo(f"{self.lead}replayed {report.events:,} events in {took:.1f} s",
                       err=True)


def text_report(report: Report, version: str, files: int, show: int) -> list[str]:
    """The human report: totals, a row per rule that changed, recipients, and
    the first changed events."""
    versions = ", ".join(f"{v or '?'}: {n:,}" for v, n in report.versions.most_common())
    share = 100 * report.changed_count / report.events if report.events else 0.0
    out = [f"replayed {report.events:,} event(s) from {files} file(s) "
           f"(recorded by rule-set version {versions or '-'}) with candidate version {version}",
           f"changed: {report.changed_count:,} ({share:.1f} %), "
           f"unchanged: {report.events - report.changed_count:,}"
           + (f", bad lines skipped: {len(report.bad):,}" if report.bad else "")]
    if report.silenced:
        out.append(f"  not compared: {report.silenced:,} decided live under a silence")
    if report.changed_redacted:
        out.append(f"  of the changed, {report.changed_redacted:,} were archived with fields "
                   "dropped or hashed: a rule or event schema reading them decides "
                   "differently (docs/replay.md, Privacy)")
    if report.rules:
        width = max(4, *(len(n) for n in report.rules))
        out += ["", f"{'rule':<{width}}  newly matched  stopped matching  differed"]
        for name, c in sorted(report.rules.items(), key=lambda kv: (-kv[1].differed, kv[0])):
            out.append(f"{name:<{width}}  {c.newly_matched:>13,}  {c.stopped_matching:>16,}"
                       f"  {c.differed:>8,}")
    for label, counts in (("added", report.added), ("removed", report.removed)):
        if counts:
            top = ", ".join(f"{jid} x{n:,}" for jid, n in counts.most_common(5))
            more = f" and {len(counts) - 5:,} more" if len(counts) > 5 else ""
            out.append(f"recipients {label}: {sum(counts.values()):,} ({top}{more})")
    if report.changed and show > 0:
        out += ["", "changed events:"]
        out += [_describe(c) for c in report.changed[:show]]
        if report.changed_count > show:
            out.append(f"  ... {report.changed_count - show:,} more (--format json lists all)")
    return out


def _describe(c: Changed) -> str:
    d = c.difference
    parts = [f"  {c.where}  {c.time}  {c.sender}"]
    if c.event_id is not None:
        parts.append(f"id={c.event_id}")
    for label, values in (("newly matched", d.newly_matched),
                          ("stopped matching", d.stopped_matching),
                          ("+to", d.added), ("-to", d.removed)):
        if values:
            parts.append(f"{label}: {', '.join(values)}")
    if not (d.newly_matched or d.stopped_matching or d.added or d.removed):
        parts.append(f"actions differ: {', '.join(d.rules)}")
    if c.redacted:
        parts.append(f"(redacted: {', '.join(c.redacted)})")
    return "  ".join(parts)
