"""`rulebot run`: wires config, rule set, dispatcher and the XMPP connection together.

The event loop and the signal handlers belong to rulebot.cli; this
module owns what runs on it.

The messages decided while one read from the server is handled are held
until the read is done, then their idempotency records are stored (one
transaction, rulebot/daemon/ledger.py) and only then are the messages sent: no
message leaves before the record that lets a re-delivery repeat it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence, Sized
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from rulebot.bot.admin import CHAT_PREFIX, AdminResult, CommandError, parse_chat
from rulebot.bot.dispatch import Dispatcher
from rulebot.bot.values import Inbound, Meta, Outbound, Outcome
from rulebot.config import Config
from rulebot.daemon.admin import Admin
from rulebot.daemon.archive import ArchiveLog
from rulebot.daemon.audit import AuditLog
from rulebot.daemon.decisions import DecisionLog, log_store_failure
from rulebot.daemon.heap import release_free_memory
from rulebot.daemon.httpd import StatusServer, json_page
from rulebot.daemon.ledger import Ledger, store_changes
from rulebot.daemon.metrics import Metrics
from rulebot.daemon.reload import Reloader, ReloadResult, RuleRef
from rulebot.daemon.shared import SharedBuckets, SharedPresence
from rulebot.engine.archive import Privacy
from rulebot.engine.explain import explain
from rulebot.engine.state import Buckets, PeekState
from rulebot.errors import ConnectError
from rulebot.jid import bare_jid, domain_of, norm_bare
from rulebot.logs import LOG_FLUSH_SECONDS, LOGGER, fields, flush_logs
from rulebot.model import JSON, StateChange
from rulebot.rules.cache import LoadCache
from rulebot.rules.loader import check_rules
from rulebot.rules.ruleset import RuleSet
from rulebot.rules.silences import Muting, compile_silences
from rulebot.rules.timefns import to_iso
from rulebot.store.base import RelationStore, StoreError
from rulebot.store.values import Timer
from rulebot.xmpp.connection import BotConnection

log = logging.getLogger(LOGGER)

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_CONNECT = 3
#: The store could not be opened or read at start (it may come back: restart).
EXIT_STORE = 4
#: Seconds between evictions from the idempotency records' index in memory,
#: and between purges of the store's batches.
EVICT_INTERVAL = 1.0
PURGE_INTERVAL = 10.0

#: The cyclic garbage collector's thresholds for the daemon (Python's: 700,
#: 10, 10). Handling one event allocates a few hundred objects, nearly all
#: freed by reference counting, and the objects of one read (its events'
#: outcomes and idempotency records) live until the read is done: at 700 the
#: youngest generation was collected every couple of events and promoted what
#: a read still held. Measured with callgrind on `rulebot run` (component
#: mode, Prosody, 4,000 events): 10,000 to 13,000 instructions less per event,
#: of ~40,000 that the idempotency records cost.
GC_THRESHOLDS = (20_000, 20, 100)
#: Expired relations deleted per statement (each a short write transaction).
PURGE_STEP_RELATIONS = 500
#: Timers taken per poll, and how long a taken one is held from other workers
#: (a firing takes milliseconds; a worker that dies holds its timers this long).
TIMERS_PER_POLL = 100
TIMER_LEASE = 30.0
#: Seconds between two reads of the silences in the store (rulebot silence
#: add/expire take effect within this; a silence's end is applied at once).
SILENCE_POLL = 2.0
#: Chat commands remembered so that one delivered again is not run again.
ADMIN_SEEN = 1_000
#: At most one "shadow rules decide differently" line per this many seconds.
SHADOW_LOG_SECONDS = 5.0


def tune_collector() -> None:
    """Collect start-up's garbage, then freeze what start-up built (modules, the
    rule set, slixmpp's tables: it lives as long as the process) out of the
    collector's sight, so that full collections walk only what the daemon made
    since; set GC_THRESHOLDS; and give what start-up freed back to the system."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    release_free_memory()  # what loading freed (rulebot.daemon.heap)


class Connection(Protocol):
    """What the daemon needs of its connection to the server (BotConnection is the
    real one; tests/unit/daemon/test_daemon_wiring.py drives the daemon through a fake).

    The connection calls back: `on_inbound(inbound)` for each stanza of a read
    from the server, `on_read_done()` once the read is handled and before its
    writes leave, `on_confirmed(session, h)` when the server has processed the
    bot's acknowledgement of its inbound stanzas up to h."""

    online: bool

    @property
    def queue(self) -> Sized: ...
    @property
    def in_read(self) -> bool: ...
    def send(self, out: Outbound, payload_json: str | None = None) -> None: ...
    def receipt(self, to: str, stanza_id: str) -> None: ...
    def unacked(self) -> int: ...
    def recovered(self) -> int: ...
    def stream_position(self) -> tuple[str, int] | None: ...
    async def run(self, stop: asyncio.Event) -> None: ...


#: Makes the daemon's connection: (config, secret, on_inbound, on_read_done,
#: on_confirmed) -> Connection.
ConnectionFactory = Callable[[Config, str, Callable[[Inbound], None], Callable[[], None],
                              Callable[[str, int], None] | None], Connection]


def bot_connection(config: Config, secret: str, on_inbound: Callable[[Inbound], None],
                   on_read_done: Callable[[], None],
                   on_confirmed: Callable[[str, int], None] | None,
                   admin: Admin | None = None) -> Connection:
    """The real connection: slixmpp, to the configured server (with the admin
    commands as XEP-0050 ad-hoc commands when `admin` is given)."""
    return BotConnection(config, secret, on_inbound, on_read_done=on_read_done,
                         on_confirmed=on_confirmed, admin=admin)


class Daemon:
    def __init__(self, config: Config, secret: str, ruleset: RuleSet,
                 store: RelationStore | None = None,
                 connect: ConnectionFactory | None = None,
                 cache: LoadCache | None = None, archive_salt: str = "") -> None:
        self.config = config
        self.rules = RuleRef(ruleset)
        # Shadow mode: a candidate set decided beside the live one, never enforced.
        self.shadow: RuleRef | None = None
        self.shadow_ready = False  # a valid candidate was loaded
        self.shadow_reloader: Reloader | None = None
        self.shadow_decided = 0
        self.shadow_differed = 0
        self._shadow_unlogged = 0  # differences since the last sampled line
        self._shadow_logged = 0.0  # time.monotonic() of that line
        if config.shadow:
            self._load_shadow(config.shadow, ruleset)
        self.store = store
        # Silences: those not ended when last read, compiled (the engine skips
        # the ones not yet started or ended since by each event's clock).
        self.mutings: tuple[Muting, ...] = ()
        self._silence_ids: frozenset[str] = frozenset()
        self._admin_tasks: set[asyncio.Future[None]] = set()
        # (admin, stanza id) of the chat commands run: one delivered again runs once
        self._admin_seen: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self.ledger = (Ledger(store, config.idempotency_window, config.idempotency_retention)
                       if store is not None and config.idempotency_retention > 0 else None)
        shared = store if config.workers > 1 else None  # the workers share state in it
        # One process: buckets in memory (a store write per token would cost
        # 0.2 ms in SQLite), saved to the store every PURGE_INTERVAL and at exit.
        self.buckets = Buckets(time.monotonic) if shared is None else None
        self.dispatcher = Dispatcher(config, self.rules.get, relations=store,
                                     apply=self._apply if store else None,
                                     records=self.ledger,
                                     buckets=SharedBuckets(shared) if shared else self.buckets,
                                     presence=SharedPresence(shared) if shared else None,
                                     shadow=self._shadow_rules if config.shadow else None,
                                     silences=lambda: self.mutings)
        # Outcomes of the read being handled, sent when it is done (_read_done),
        # with the microseconds each decision took.
        self._held: list[tuple[Inbound, Outcome, float]] = []
        # Admin commands over XMPP (docs/admin.md), for the JIDs of `admins`.
        self.admin = Admin(self, config.admins) if config.admins else None
        if connect is None:
            connect = functools.partial(bot_connection, admin=self.admin)
        self.connection = connect(config, secret, self.on_inbound, self._read_done,
                                  self.ledger.confirm if self.ledger is not None else None)
        if self.ledger is not None:
            self.ledger.position = self.connection.stream_position
        # `cache`: what loading `ruleset` compiled, so the first reload is quick too.
        # freeze: reloaded sets join the heap run() freezes (tune_collector).
        self.reloader = Reloader(config.rules, self.rules, self.on_reload, cache=cache,
                                 freeze=True)
        self.handled = 0
        self._reload_failing = False
        self.started = time.time()
        self.metrics = Metrics()
        self.metrics.bind(lambda: self.connection.online, lambda: len(self.connection.queue),
                          self.connection.unacked, self.connection.recovered,
                          lambda: sum(m.silence.active(time.time()) for m in self.mutings))
        self.metrics.observe_ruleset(ruleset)
        self.audit = (AuditLog(config.audit_path, config.audit_max_bytes, config.audit_backups,
                               config.audit_payloads) if config.audit_path else None)
        self.archive = (ArchiveLog(config.archive_path, config.archive_max_bytes,
                                   config.archive_backups,
                                   Privacy(config.archive_drop, config.archive_hash,
                                           archive_salt))
                        if config.archive_path else None)
        self.trace = frozenset(config.trace_senders)
        self.decisions = DecisionLog()  # after logging is set up (cli)
        self.status_server: StatusServer | None = None
        #: seconds without a follow after which an event waits for one
        self._stale = max(1.0, 4 * config.idempotency_follow)
        self._read_began = 0.0  # time.monotonic() of the read's first event

    def _load_shadow(self, path: str, live: RuleSet) -> None:
        """The candidate set at `path`. Invalid at start: the daemon runs without
        one (the live service must not depend on a candidate) until a reload
        of it is valid."""
        loaded = check_rules([path])
        if loaded.ruleset is None:
            log.error("shadow rules invalid; deciding without them until they are fixed",
                      extra=fields(event="shadow_invalid",
                                   errors=[i.format() for i in loaded.errors]))
        self.shadow_ready = loaded.ruleset is not None
        self.shadow = RuleRef(loaded.ruleset or live)  # the live set only as a placeholder
        self.shadow_reloader = Reloader(path, self.shadow, self._on_shadow_reload,
                                        label="shadow rules")

    def _ready(self) -> tuple[int, str, bytes]:
        """/readyz: 200 while the XMPP session is up (events flow), 503 while it
        is not (connecting, reconnecting, stopping). /healthz only says the
        process answers: a restart does not cure a server that is down."""
        if self.connection.online:
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", b"not connected to the XMPP server\n"

    def _shadow_rules(self) -> RuleSet | None:
        return self.shadow.get() if self.shadow is not None and self.shadow_ready else None

    def _on_shadow_reload(self, result: ReloadResult) -> None:
        if result.ok:
            self.shadow_ready = True

    def trigger_reload(self) -> None:
        """SIGHUP: reload the rules, and the shadow rules when configured."""
        self.reloader.trigger()
        if self.shadow_reloader is not None:
            self.shadow_reloader.trigger()

    def _observe_shadow(self, inbound: Inbound, outcome: Outcome) -> None:
        """Count a shadow decision; a sampled line for differences (the first,
        then at most one per SHADOW_LOG_SECONDS, saying how many it stands for)."""
        diff = outcome.shadow
        if diff is None:
            return
        self.shadow_decided += 1
        self.metrics.observe_shadow(diff)
        if not diff:
            return
        self.shadow_differed += 1
        self._shadow_unlogged += 1
        now = time.monotonic()
        if now - self._shadow_logged < SHADOW_LOG_SECONDS and self._shadow_logged:
            return
        assert self.shadow is not None
        log.info("shadow rules decide differently", extra=fields(
            event="shadow_diff", from_=inbound.from_, stanza_id=inbound.id,
            event_id=outcome.event_id, version=self.rules.get().version,
            shadow_version=self.shadow.get().version, differences=self._shadow_unlogged,
            **diff.to_json()))
        self._shadow_logged, self._shadow_unlogged = now, 0

    def status(self) -> dict[str, JSON]:
        """What is live right now (the /status page and `rulebot status`)."""
        rs = self.rules.get()
        per_file: dict[str, int] = {}
        for rule in rs.rules:
            per_file[rule.file] = per_file.get(rule.file, 0) + 1
        last = self.reloader.last
        return {
            "jid": self.config.jid,
            "mode": self.config.mode,
            "connected": self.connection.online,
            "outbound_queue": len(self.connection.queue),
            "uptime_seconds": round(time.time() - self.started, 1),
            "handled": self.handled,
            "idempotency_records": None if self.ledger is None else {
                "written": self.ledger.written, "kept_in_memory": self.ledger.size(),
                "from_other_workers": self.ledger.followed,
                "recorded_first_elsewhere": self.ledger.claims_lost,
                "window_seconds": self.ledger.window,
                "retention_seconds": self.ledger.retention},
            "rules": {"version": rs.version, "count": len(rs.rules), "files": per_file},
            "last_reload": None if last is None else {
                "ok": last.ok, "reason": last.reason, "version": last.new_version,
                "errors": [i.format() for i in last.errors]},
            "shadow": self._shadow_status(),
            "silences": [m.silence.to_json() for m in self.mutings
                         if m.silence.active(time.time())],
            "archive": None if self.archive is None else {
                "path": self.config.archive_path, "written": self.archive.written},
        }

    def _shadow_status(self) -> JSON:
        if self.shadow is None or self.shadow_reloader is None:
            return None
        last = self.shadow_reloader.last
        return {
            "path": self.config.shadow, "loaded": self.shadow_ready,
            "version": self.shadow.get().version if self.shadow_ready else None,
            "decided": self.shadow_decided, "differed": self.shadow_differed,
            "by_rule": {k[0]: v for k, v in sorted(self.metrics.hot.shadow_diff.values.items())},
            "last_reload": None if last is None else {
                "ok": last.ok, "version": last.new_version,
                "errors": [i.format() for i in last.errors]},
        }

    def _apply(self, changes: Sequence[StateChange]) -> None:
        assert self.store is not None
        self.store.apply(store_changes(changes))

    def on_reload(self, result: ReloadResult) -> None:
        """Count the reload; tell the configured admins when it fails, and when it recovers."""
        self.metrics.observe_reload(result, time.time())
        self.metrics.observe_ruleset(self.rules.get())
        if result.ok and not self._reload_failing:
            return
        self._reload_failing = not result.ok
        payload: dict[str, JSON] = {"type": "rulebot.reload", "ok": result.ok,
                                    "version": result.new_version}
        if result.ok:
            payload["previous"] = result.old_version
        else:
            payload["errors"] = [i.format() for i in result.errors[:20]]
        for jid in self.config.notify_jids:
            self.connection.send(Outbound(jid, payload, "body", self.config.message_type,
                                          "rb-" + uuid.uuid4().hex[:20],
                                          Meta(self.config.jid, None, result.new_version,
                                               None)))

    def on_inbound(self, inbound: Inbound) -> None:
        if self.admin is not None and inbound.kind == "message" and inbound.body \
                and inbound.body.startswith(CHAT_PREFIX) and self._may_command(inbound):
            self._chat_admin(inbound)
            return
        ledger = self.ledger
        if ledger is not None and ledger.following and \
                time.monotonic() - ledger.last_follow > self._stale:
            # The periodic follow has not run for a while: this process was
            # paused (SIGSTOP, a VM freeze) or is behind a backlog. Its events
            # may have waited long enough for clients to resend them to other
            # workers: learn what those recorded before deciding.
            with contextlib.suppress(StoreError):
                ledger.follow()
        started = time.perf_counter()
        try:
            outcome = self.dispatcher.handle(inbound)
        except Exception:  # a bug must cost one event, never the daemon
            log.exception("internal error while handling a stanza", extra=fields(
                event="internal_error", from_=inbound.from_, stanza_id=inbound.id))
            return
        self.handled += 1
        held = (inbound, outcome, (time.perf_counter() - started) * 1e6)
        if self.connection.in_read:
            if not self._held:
                self._read_began = time.monotonic()
            self._held.append(held)
        else:  # not from a read (tests, or a future caller): at once
            self._release([held])

    def _read_done(self) -> None:
        held, self._held = self._held, []
        if held or (self.ledger is not None and self.ledger.pending_count):
            try:
                self._release(held)
            except Exception:  # a bug must not leave the read's writes unwritten
                log.exception("internal error while sending a read's messages",
                              extra=fields(event="internal_error"))

    def _release(self, held: list[tuple[Inbound, Outcome, float]]) -> None:
        """Store the pending idempotency records, then send, log, count and audit
        each outcome of `held`; an event whose record could not be stored gets
        store-unavailable instead."""
        ledger = self.ledger
        if ledger is not None and ledger.following and held:
            held = self._overtaken(ledger, held)
        done = ledger.flush() if ledger is not None else None
        failed = done.failed if done is not None else frozenset()
        texts = done.payload_json if done is not None else {}
        if done is not None and done.theirs:  # another worker's claims (Ledger._write)
            theirs = done.theirs
            held = [(inbound, self.dispatcher.duplicate(outcome, theirs[outcome.key]), micros)
                    if outcome.key in theirs else (inbound, outcome, micros)
                    for inbound, outcome, micros in held]
        send = self.connection.send
        decisions = self.decisions
        for inbound, outcome, micros in held:
            if failed and outcome.key in failed:
                outcome = self._refused(inbound, outcome)
            for out in outcome.outbound:
                send(out, texts.get(id(out.payload)))
            if inbound.receipt and inbound.id and outcome.status != "failed":
                # After what the event produced: the client may stop resending
                # it. Not for a refusal (store-unavailable): it must resend.
                self.connection.receipt(inbound.from_, inbound.id)
            if outcome.error is not None:
                log_store_failure(inbound, outcome)
            decisions.write(inbound, outcome, micros)
            self.metrics.observe(inbound.kind, outcome, micros / 1e6, len(outcome.outbound))
            if self.audit is not None:
                self.audit.record(inbound, outcome)
            if self.archive is not None:
                self.archive.record(outcome)  # never raises: a full disk loses lines only
            if outcome.shadow is not None:
                self._observe_shadow(inbound, outcome)
            if self.admin is not None and outcome.envelope is not None:
                self.admin.seen(outcome.envelope)  # for the admins' explain
            if self.trace and norm_bare(inbound.from_) in self.trace:
                self._log_trace(inbound, outcome)

    def _overtaken(self, ledger: Ledger, held: list[tuple[Inbound, Outcome, float]]
                   ) -> list[tuple[Inbound, Outcome, float]]:
        """Before a read's records are stored: if this process was paused during
        the read, other workers may have decided some of its events meanwhile
        (the clients resent them). Follow them now; such an event gets the
        other worker's recorded messages instead of this decision."""
        try:
            if time.monotonic() - self._read_began > self._stale:
                ledger.follow()
            theirs = ledger.take_over()
        except StoreError:
            return held  # flush() meets the same store and refuses the read
        if not theirs:
            return held
        return [(inbound, self.dispatcher.duplicate(outcome, theirs[outcome.key]), micros)
                if outcome.key in theirs else (inbound, outcome, micros)
                for inbound, outcome, micros in held]

    def _refused(self, inbound: Inbound, outcome: Outcome) -> Outcome:
        """What replaces an outcome whose record could not be stored."""
        if outcome.status == "duplicate":  # of an event refused in this same read
            return Outcome("failed", (), None, "store-unavailable", outcome.event_id)
        return self.dispatcher.refuse(inbound, outcome)

    def _log_trace(self, inbound: Inbound, outcome: Outcome) -> None:
        """The per-rule trace for a sender under investigation (trace_senders)."""
        if outcome.envelope is None:
            return
        # After the read: relation changes of its events are visible; no tokens are taken.
        explanation = explain(self.rules.get(), outcome.envelope, silences=self.mutings,
                              state=PeekState(self.dispatcher.state))
        log.info("trace", extra=fields(event="trace", from_=inbound.from_,
                                       stanza_id=inbound.id,
                                       rules=explanation.to_json()["rules"]))

    async def run(self, stop: asyncio.Event) -> int:
        tune_collector()
        rs = self.rules.get()
        log.info("starting", extra=fields(event="starting", jid=self.config.jid,
                                          mode=self.config.mode, host=self.config.host,
                                          port=self.config.port, rules=self.config.rules,
                                          store=None if self.store is None else
                                          self.store.location,
                                          version=rs.version, rule_count=len(rs.rules)))
        purger = follower = timers = silencer = None
        if self.store is not None:
            self.store.start_housekeeping()
        if self.ledger is not None:
            try:
                kept = self.ledger.load()
            except StoreError as exc:
                log.error(f"cannot read the idempotency records: {exc}",
                          extra=fields(event="store_failed"))
                if self.store is not None:
                    self.store.close()
                return EXIT_STORE
            log.info("idempotency records read back", extra=fields(event="records_loaded",
                                                                   kept=kept))
            self._restore_buckets()
            purger = asyncio.ensure_future(self._keep_records())
            timers = asyncio.ensure_future(self._fire_timers())
            if self.config.idempotency_follow > 0:
                self.ledger.following = True
                follower = asyncio.ensure_future(self._follow_records())
        if self.store is not None:
            self.read_silences()
            silencer = asyncio.ensure_future(self._follow_silences())
        watcher = asyncio.ensure_future(self._watch(stop)) if self.config.watch else None
        shadow_watcher = (asyncio.ensure_future(self._watch(stop, self.shadow_reloader))
                          if self.config.watch and self.shadow_reloader is not None else None)
        flusher = asyncio.ensure_future(self._flush_logs())
        if self.config.status_listen:
            host, _, port = self.config.status_listen.rpartition(":")
            self.status_server = StatusServer(host, int(port), {
                "/metrics": lambda: (200, CONTENT_TYPE_LATEST, self.metrics.render()),
                "/status": json_page(self.status),
                "/healthz": lambda: (200, "text/plain", b"ok\n"),
                "/readyz": self._ready,
            })
            bound = await self.status_server.start()
            log.info("status endpoint", extra=fields(event="status_listen", host=host,
                                                     port=bound))
        try:
            await self.connection.run(stop)
        except ConnectError as exc:
            log.error(str(exc), extra=fields(event="fatal"))
            return EXIT_CONNECT
        finally:
            flusher.cancel()
            if purger is not None:
                purger.cancel()
            if timers is not None:
                timers.cancel()
            if silencer is not None:
                silencer.cancel()
            if follower is not None:
                follower.cancel()
            for task in (watcher, shadow_watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.reloader.close()
            if self.shadow_reloader is not None:
                await self.shadow_reloader.close()
            if self.ledger is not None:
                with contextlib.suppress(StoreError):
                    self.ledger.flush()  # the last acknowledgement marks
                self._save_buckets()
            if self.store is not None:
                self.store.close()
            if self.status_server is not None:
                await self.status_server.close()
            if self.audit is not None:
                self.audit.close()
            if self.archive is not None:
                self.archive.close()
        log.info("stopped", extra=fields(event="exit", handled=self.handled))
        return EXIT_OK

    async def _fire_timers(self) -> None:
        """Every timers.poll seconds while connected: take the due timers (each
        leased for TIMER_LEASE seconds, so that another worker skips it), feed
        each back into the rules as a `timer` event of its sender, send what it
        produced (its record stored first, as for any event), then forget it.

        Exactly once in effect: a taker that dies before forgetting a timer
        leaves it due again when the lease ends; the next firing finds the
        first one's idempotency record (keyed by timer and due time) and sends
        the same messages under the same ids. Missed while the bot was down:
        fired at start, late."""
        store = self.store
        assert store is not None
        while True:
            await asyncio.sleep(self.config.timers_poll)
            if not self.connection.online:
                continue  # its messages could not leave; the timers wait
            try:
                due = store.due_timers(time.time(), TIMERS_PER_POLL, TIMER_LEASE)
            except StoreError as exc:
                log.warning("reading due timers failed", extra=fields(
                    event="timers_failed", error=str(exc)))
                continue
            for timer in due:
                self._fire(timer)
                await asyncio.sleep(0)  # events in between

    def _fire(self, timer: Timer) -> None:
        inbound = Inbound("timer", timer.sender, "timer", f"{timer.key}@{timer.due!r}",
                          body=timer.event,
                          timer={"key": timer.key, "due": to_iso(timer.due),
                                 "scheduled": to_iso(timer.created), "rule": timer.rule})
        started = time.perf_counter()
        try:
            outcome = self.dispatcher.handle(inbound)
        except Exception:  # a bug must cost one timer, never the daemon
            log.exception("internal error while firing a timer", extra=fields(
                event="internal_error", timer=timer.key))
            return
        self._release([(inbound, outcome, (time.perf_counter() - started) * 1e6)])
        if outcome.status == "failed":
            return  # not stored: due again when its lease ends
        try:
            store = self.store
            assert store is not None
            store.fired(timer.key, timer.due)
        except StoreError as exc:  # fired again later: answered from its record
            log.warning("forgetting a fired timer failed", extra=fields(
                event="timers_failed", timer=timer.key, error=str(exc)))

    def _restore_buckets(self) -> None:
        """The rate-limit buckets the last run saved (one process)."""
        if self.buckets is None or self.store is None:
            return
        try:
            rows = self.store.load_buckets()
        except StoreError as exc:
            log.warning("the saved rate-limit buckets could not be read; they start full",
                        extra=fields(event="buckets_unreadable", error=str(exc)))
            return
        now = time.time()
        self.buckets.restore((n, k, t, now - u) for n, k, t, u in rows)
        log.info("rate-limit buckets restored", extra=fields(event="buckets_restored",
                                                             count=len(rows)))

    def _save_buckets(self) -> None:
        if self.buckets is None or self.store is None:
            return
        now = time.time()
        try:
            self.store.save_buckets([(n, k, t, now - age) for n, k, t, age
                                     in self.buckets.export()], now)
        except StoreError as exc:
            log.warning("saving the rate-limit buckets failed", extra=fields(
                event="buckets_save_failed", error=str(exc)))

    @staticmethod
    async def _flush_logs() -> None:
        """Buffered log lines reach stderr within LOG_FLUSH_SECONDS even when idle."""
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            flush_logs()

    async def _keep_records(self) -> None:
        """Evict what no re-delivery can need from the records' index each second;
        every PURGE_INTERVAL, store the acknowledgement marks and purge the
        store's batches, expired relations and old counts (bounded steps)."""
        ledger = self.ledger
        assert ledger is not None
        last_purge = time.monotonic()
        while True:
            await asyncio.sleep(EVICT_INTERVAL)
            ledger.evict()
            if time.monotonic() - last_purge < PURGE_INTERVAL:
                continue
            last_purge = time.monotonic()
            try:
                if not self.connection.in_read:
                    ledger.flush()  # acknowledgement marks, when no read wrote them
                while ledger.purge() > 0:  # ~50 ms at most per round
                    await asyncio.sleep(0)  # events in between
                self._save_buckets()
                if self.store is not None:
                    # Reads hide expired relations already; this gives their room back.
                    while self.store.purge_expired(PURGE_STEP_RELATIONS) == \
                            PURGE_STEP_RELATIONS:
                        await asyncio.sleep(0)
                    self.store.purge_silences(time.time())  # ended a week ago
                    windows = self.rules.get().counters  # counts past their window
                    while self.store.purge_counts(windows, PURGE_STEP_RELATIONS) == \
                            PURGE_STEP_RELATIONS:
                        await asyncio.sleep(0)
                if self.config.workers > 1 and self.store is not None:
                    self.store.purge_buckets(time.time())
            except StoreError as exc:
                log.warning("purging idempotency records failed", extra=fields(
                    event="purge_failed", error=str(exc)))

    def _may_command(self, inbound: Inbound) -> bool:
        """Whether a `!` message is taken as an admin command (or refused as
        one): not groupchat or error, not the bot's own, from a served domain.
        Anything else goes to the dispatcher, which ignores it as it would any
        such stanza."""
        who = norm_bare(inbound.from_)
        return inbound.type not in ("groupchat", "error") and who != self.dispatcher.bot_bare \
            and domain_of(who) in self.dispatcher.allowed

    def _chat_admin(self, inbound: Inbound) -> None:
        """The `!` chat fallback of the admin commands: run, answered in a chat
        message (a JSON payload whose `text` is for a person)."""
        admin = self.admin
        assert admin is not None
        assert inbound.body is not None
        who = bare_jid(inbound.from_)
        name = (inbound.body[1:].split(maxsplit=1)[0] if inbound.body[1:].strip() else "?")[:64]
        if inbound.receipt and inbound.id:
            self.connection.receipt(inbound.from_, inbound.id)
        key = (norm_bare(who), inbound.id)
        if inbound.id and key in self._admin_seen:
            # Delivered again (a resend, offline storage after a crash): run once.
            log.info("admin command delivered again, not run again", extra=fields(
                event="admin_duplicate", who=who, stanza_id=inbound.id))
            return
        if inbound.id:
            self._admin_seen[key] = None
            if len(self._admin_seen) > ADMIN_SEEN:
                self._admin_seen.popitem(last=False)
        if not admin.allowed(who):
            admin.refused(who, name, "chat")
            self._admin_reply(inbound, {"error": {
                "code": "forbidden", "message": "admin commands are for the bot's admins",
                "id": None}})
            return
        try:
            command, args = parse_chat(inbound.body)
        except CommandError as exc:
            self._admin_reply(inbound, AdminResult(False, str(exc), condition="bad-request")
                              .to_json(name))
            return

        async def run() -> None:
            result = await admin.run(who, command, args, "chat")
            self._admin_reply(inbound, result.to_json(command))

        task = asyncio.ensure_future(run())
        self._admin_tasks.add(task)
        task.add_done_callback(self._admin_tasks.discard)

    def _admin_reply(self, inbound: Inbound, payload: dict[str, JSON]) -> None:
        self.connection.send(Outbound(inbound.from_, payload, "body", "chat",
                                      "rb-" + uuid.uuid4().hex[:20],
                                      Meta(self.config.jid, None, self.rules.get().version,
                                           None, inbound.id)))

    def read_silences(self) -> None:
        """Read the silences not ended from the store and compile them; log
        what changed. Raises nothing: an unreadable store keeps the last read."""
        if self.store is None:
            return
        try:
            stored = self.store.silences(time.time())
        except StoreError as exc:
            log.warning("cannot read the silences; keeping the last read",
                        extra=fields(event="silences_failed", error=str(exc)))
            return
        good, bad = compile_silences(stored, self.rules.get().lists)
        ids = frozenset(m.silence.id for m in good)
        if ids != self._silence_ids:
            log.info("silences changed", extra=fields(
                event="silences", active=sorted(ids), added=sorted(ids - self._silence_ids),
                ended=sorted(self._silence_ids - ids)))
        for silence, problems in bad:
            if silence.id not in self._silence_ids:
                log.warning("silence not applied", extra=fields(
                    event="silence_invalid", id=silence.id, problems=problems))
        self.mutings, self._silence_ids = good, ids

    async def _follow_silences(self) -> None:
        while True:
            await asyncio.sleep(SILENCE_POLL)
            try:
                self.read_silences()
            except Exception:  # the poller must outlive a bad row; say so each time
                log.exception("reading the silences failed; keeping the last read",
                              extra=fields(event="silences_failed"))

    async def _follow_records(self) -> None:
        """With several workers: index what the others record, every
        idempotency.follow seconds (Ledger.follow)."""
        ledger = self.ledger
        assert ledger is not None
        failing = False
        while True:
            await asyncio.sleep(self.config.idempotency_follow)
            try:
                ledger.follow()
            except StoreError as exc:
                if not failing:  # once per failure, not once per poll
                    log.warning("reading other workers' records failed", extra=fields(
                        event="follow_failed", error=str(exc)))
                failing = True
            else:
                failing = False

    async def _watch(self, stop: asyncio.Event, reloader: Reloader | None = None) -> None:
        try:
            await (reloader or self.reloader).watch(stop, self.config.debounce_ms)
        except Exception:  # watching is a convenience; SIGHUP still works without it
            log.exception("watching the rules path failed; reload with SIGHUP",
                          extra=fields(event="watch_failed"))
