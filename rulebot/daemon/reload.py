"""Hot reload: watch the rules path, load off the event loop, swap whole or keep the old set.

A reload loads and validates the *whole* rule set with the same loader as
`rulebot validate` (rules.check_rules), in a worker thread so the event loop
keeps serving. Valid: the new compiled set replaces the old in one reference
assignment, between two events (each event is evaluated against exactly one
version). Invalid: the old set stays, every error is logged with
file:line:col, and the next change is tried again. Bursts of file events
coalesce: watchfiles waits until the files have been quiet for `debounce`
ms, and a reload asked for while one runs becomes one more reload after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from rulebot.daemon.heap import release_free_memory
from rulebot.logs import LOGGER, fields
from rulebot.model import Issue
from rulebot.rules.cache import LoadCache
from rulebot.rules.expr import Expr
from rulebot.rules.loader import LoadResult, check_rules
from rulebot.rules.ruleset import ActionSpec, LiteralParam, Rule, RuleSet

log = logging.getLogger(LOGGER)

DEBOUNCE_MS = 300
#: How often watchfiles looks for changes (ms): the quiet time is kept to
#: within about twice this.
WATCH_STEP_MS = 20


class RuleRef:
    """The rule set in force: one reference, swapped whole between events."""

    def __init__(self, ruleset: RuleSet) -> None:
        self._ruleset = ruleset

    def get(self) -> RuleSet:
        return self._ruleset

    def swap(self, ruleset: RuleSet) -> RuleSet:
        old, self._ruleset = self._ruleset, ruleset
        return old


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    reason: str
    old_version: str
    new_version: str  # equals old_version when nothing changed or the load failed
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    errors: tuple[Issue, ...] = field(default=())
    seconds: float = 0.0


#: Expression fingerprints by object: the loader's cache hands the same Expr
#: to every load whose text is unchanged, so a reload prints only new ones.
#: (id -> (expr, print)); the expr is held, so its id is not reused.
Prints = dict[int, tuple[Expr, object]]


def _canonical(value: object, prints: Prints) -> object:
    """A comparable form of a rule's parts: an expression by the digests of its
    `&&`-parts' syntax trees (as parsed, macros expanded), never by the repr of
    its compiled objects, which differs from one load to the next."""
    if isinstance(value, Expr):
        held = prints.get(id(value))
        if held is None or held[0] is not value:
            held = prints[id(value)] = (value, ("expr", value.part_keys))
        return held[1]
    if isinstance(value, LiteralParam):
        return ("value", repr(value.value))
    if isinstance(value, ActionSpec):
        return tuple((f, _canonical(getattr(value, f), prints))
                     for f in ActionSpec.__dataclass_fields__)
    if isinstance(value, tuple):
        return tuple(_canonical(v, prints) for v in value)
    return value


def _fingerprint(rule: Rule, prints: Prints) -> tuple[object, ...]:
    return (_canonical(rule.match, prints), _canonical(rule.actions, prints), rule.cont,
            rule.enabled, rule.description)


class Differ:
    """(added, removed, changed) rule names between the rule set in force and a
    new one, remembering what it printed: the expressions' prints (the loader's
    cache hands the same Expr to every load whose text is unchanged) and the
    last new set's rule prints, which are the next call's old ones."""

    def __init__(self) -> None:
        self.prints: Prints = {}
        self.last: tuple[str, dict[str, tuple[object, ...]]] | None = None

    def _rules(self, ruleset: RuleSet) -> dict[str, tuple[object, ...]]:
        if self.last is not None and self.last[0] == ruleset.version:
            return self.last[1]
        return {r.name: _fingerprint(r, self.prints) for r in ruleset.rules}

    def diff(self, old: RuleSet, new: RuleSet
             ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        if old.version == new.version:
            return (), (), ()
        before = self._rules(old)
        after = self._rules(new)
        # Keep only the new set's expressions: the cache never outgrows one set.
        self.prints = {id(e): self.prints[id(e)] for r in new.rules for e in _exprs(r)
                       if id(e) in self.prints}
        self.last = (new.version, after)
        added = tuple(n for n in after if n not in before)
        removed = tuple(n for n in before if n not in after)
        changed = tuple(n for n in after if n in before and after[n] != before[n])
        return added, removed, changed


def _exprs(rule: Rule) -> list[Expr]:
    out = [rule.match] if rule.match is not None else []
    for action in rule.actions:
        out.extend(getattr(action, f) for f in ActionSpec.__dataclass_fields__
                   if isinstance(getattr(action, f), Expr))
    return out


class Reloader:
    """Keeps `ref` pointing at the newest valid rule set found at `path`."""

    def __init__(self, path: str | Path, ref: RuleRef,
                 on_result: Callable[[ReloadResult], None] | None = None,
                 loader: Callable[[list[str | Path]], LoadResult] | None = None,
                 cache: LoadCache | None = None, freeze: bool = False,
                 label: str = "rules") -> None:
        self.path = Path(path)
        self.label = label  # in its log lines: "rules" or "shadow rules"
        self.ref = ref
        self.on_result = on_result
        # Reloads recompile only what changed: the cache keeps the last load's
        # documents and expressions by content (rules.cache.LoadCache).
        self.cache = cache if cache is not None else LoadCache()
        self._differ = Differ()
        # freeze: after a valid load, move every object to the GC's permanent
        # generation (gc.freeze), as `rulebot run` does with its startup heap
        # (see _load). Rule sets have no reference cycles, so frozen old sets are
        # still freed (the count stays level over reloads:
        # tests/unit/daemon/test_reload.py).
        self.freeze = freeze
        self.loader: Callable[[list[str | Path]], LoadResult] = (
            loader or functools.partial(check_rules, cache=self.cache))
        self.last: ReloadResult | None = None
        self._requested = asyncio.Event()
        self._waiters: list[tuple[str, asyncio.Future[ReloadResult]]] = []
        self._worker: asyncio.Task[None] | None = None

    def request(self, reason: str = "requested") -> asyncio.Future[ReloadResult]:
        """Ask for a reload; requests made while one runs are served by one more reload."""
        fut: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._waiters.append((reason, fut))
        self._requested.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())
        return fut

    async def reload(self, reason: str = "requested") -> ReloadResult:
        """Load and swap when valid; returns what happened. Never raises."""
        return await self.request(reason)

    async def _work(self) -> None:
        while self._waiters:
            await self._requested.wait()
            self._requested.clear()
            waiters, self._waiters = self._waiters, []
            reasons = "; ".join(dict.fromkeys(r for r, _ in waiters))
            result = await self._reload(reasons)
            for _, fut in waiters:
                if not fut.done():
                    fut.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _reload(self, reason: str) -> ReloadResult:
        started = time.perf_counter()
        old = self.ref.get()
        try:
            # The comparison with the old set runs in the thread too: on the loop,
            # it made events wait 60 ms behind a 1,000-rule reload.
            loaded, changes = await asyncio.to_thread(self._load, old)
        except Exception as exc:  # a loader bug must not take the daemon down
            loaded = LoadResult(None, (Issue(str(self.path), 0, 0, "", f"internal error: "
                                             f"{type(exc).__name__}: {exc}"),))
            changes = ((), (), ())
        seconds = time.perf_counter() - started
        if loaded.ruleset is None:
            result = ReloadResult(False, reason, old.version, old.version,
                                  errors=loaded.errors, seconds=seconds)
            log.error(f"{self.label} reload failed, keeping the {self.label} in force",
                      extra=fields(event="reload", rules=self.label, ok=False, reason=reason,
                                   version=old.version,
                                   errors=[i.format() for i in loaded.errors],
                                   seconds=round(seconds, 4)))
        else:
            new = loaded.ruleset
            added, removed, changed = changes
            if new.version != old.version:
                self.ref.swap(new)  # the one step that changes behaviour
            result = ReloadResult(True, reason, old.version, new.version, added, removed,
                                  changed, seconds=seconds)
            log.info(f"{self.label} reloaded" if new.version != old.version
                     else f"{self.label} unchanged",
                     extra=fields(event="reload", rules=self.label, ok=True, reason=reason,
                                  old_version=old.version, version=new.version,
                                  rule_count=len(new.rules), added=list(added),
                                  removed=list(removed), changed=list(changed),
                                  seconds=round(seconds, 4)))
        self.last = result
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _load(self, old: RuleSet) -> tuple[LoadResult, tuple[tuple[str, ...], ...]]:
        """In a worker thread: the new load, and what changed from `old` if it is valid.

        With `freeze`, the collector stays off until what the load made is frozen:
        switched back on with those objects pending, it ran a full collection
        over them at once, holding the interpreter for tens of ms (events waited)."""
        collecting = gc.isenabled()
        if self.freeze:
            gc.disable()
        try:
            loaded = self.loader([str(self.path)])
            changes: tuple[tuple[str, ...], ...] = ((), (), ())
            if loaded.ruleset is not None:
                changes = self._differ.diff(old, loaded.ruleset)
                if self.freeze:  # (not a failed load's leftovers: they may hold cycles)
                    gc.freeze()
        finally:
            if self.freeze and collecting:
                gc.enable()
        release_free_memory()  # in this thread: the call releases the interpreter lock
        return loaded, changes

    def trigger(self, reason: str = "SIGHUP") -> None:
        """Ask for a reload from a signal handler (coalesced with any running one)."""
        self.request(reason)

    def _relevant(self, _change: watchfiles.Change, name: str) -> bool:
        p = Path(name)
        if self.path.is_dir() or not self.path.suffix:
            return p.parent == self.path and p.suffix in (".yaml", ".yml") \
                and not p.name.startswith(".")
        return p.name == self.path.name

    async def watch(self, stop: asyncio.Event, debounce_ms: int = DEBOUNCE_MS) -> None:
        """Reload on every settled change under the rules path until `stop` is set.

        A change is settled once no other has come for `debounce_ms` (the quiet
        time): every save left alone that long is loaded, and a burst of saves
        closer together than that is one reload, of the newest content. A file
        that never stops changing is loaded every `10 * debounce_ms` (at least
        every 2 s) anyway. A single file is watched through its directory, so
        editors that save by writing a new file and renaming it over the old
        one are seen too.

        The quiet time is kept here, not by watchfiles: watchfiles reports a
        change once a whole `step` has passed without another, but it looks
        only every `step` ms, so with step = quiet time the real quiet time
        was 1x to 2x the setting, and saves 0.5 s apart under the default 300
        ms were merged (3 or 4 of 10 never loaded). It now looks every
        WATCH_STEP_MS and this loop measures the quiet time."""
        directory = self.path if self.path.is_dir() else self.path.parent
        quiet = debounce_ms / 1000
        longest = max(10 * quiet, 2.0)
        names: set[str] = set()
        seen = asyncio.Event()
        loop = asyncio.get_running_loop()
        last = first = 0.0  # when the newest and the oldest unloaded change were seen

        async def collect() -> None:
            nonlocal last, first
            async for changes in watchfiles.awatch(directory, watch_filter=self._relevant,
                                                   step=WATCH_STEP_MS, debounce=WATCH_STEP_MS,
                                                   stop_event=stop, recursive=False):
                last = loop.time()
                if not names:
                    first = last
                names.update(Path(name).name for _, name in changes)
                seen.set()

        collector = asyncio.ensure_future(collect())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set() and not collector.done():
                seen.clear()
                if not names:
                    waiter = asyncio.ensure_future(seen.wait())
                    await asyncio.wait({waiter, stopped, collector},
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                now = loop.time()
                due = min(last + quiet, first + longest)
                if now < due:
                    waiter = asyncio.ensure_future(seen.wait())
                    await asyncio.wait({waiter, stopped, collector}, timeout=due - now,
                                       return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                changed, names = sorted(names), set()
                await self.reload("file change: " + ", ".join(changed))
            if collector.done():
                collector.result()  # a failed watcher: its error to the caller
        finally:
            stopped.cancel()
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
