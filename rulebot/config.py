"""The daemon's config file (rulebot.yaml), validated by schemas/config.schema.json.

`parse_config` is pure;
`load_config` reads the file; `read_secret` reads the password from the
environment or a file (never from the config, never logged).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rulebot.errors import ConfigError
from rulebot.jid import domain_of
from rulebot.load.schema import schema_issues
from rulebot.load.yamldoc import load_document
from rulebot.model import Issue
from rulebot.wire.decode import Limits


@dataclass(frozen=True)
class TlsConfig:
    verify: bool = True
    ca_file: str | None = None
    allow_plain: bool = False
    direct_tls: bool = False


@dataclass(frozen=True)
class Config:
    jid: str
    rules: str  # absolute path
    mode: Literal["client", "component"] = "client"
    resource: str = "rulebot"
    host: str = ""
    port: int = 5222
    password_env: str = "RULEBOT_PASSWORD"
    password_file: str | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    allowed_domains: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    max_recipients: int = 10_000
    outbound_queue: int = 10_000
    message_type: str = "chat"
    encoding: Literal["same", "body", "json"] = "same"
    initial_delay: float = 1.0
    max_delay: float = 60.0
    stream_management: bool = True
    offline_sweep: float = 60.0  # seconds between XEP-0013 fetches; 0: none
    sm_state_file: str | None = None
    store: str = "rulebot.sqlite3"  # as written; resolved against base_dir by the daemon
    idempotency_window: float = 30.0  # seconds every record is kept
    idempotency_retention: float = 604_800.0  # seconds unconfirmed ones are; 0: no records
    idempotency_follow: float = 0.0  # seconds between reads of other workers' records; 0: none
    timers_per_sender: int = 100  # timers one sender's events may have scheduled at once
    timers_total: int = 100_000  # timers in the store at once
    timers_poll: float = 0.5  # seconds between looks for due timers
    workers: int = 1  # processes serving this identity (component mode, PostgreSQL)
    servers: tuple[tuple[str, int], ...] = ()  # cluster nodes: worker I takes I mod len
    base_dir: str = "."
    notify_jids: tuple[str, ...] = ()
    status_listen: str | None = None  # host:port of /metrics, /status, /healthz
    audit_path: str | None = None
    audit_max_bytes: int = 10_000_000
    audit_backups: int = 5
    audit_payloads: bool = False
    # The inbound archive (rulebot replay): off unless a path is set.
    archive_path: str | None = None
    archive_max_bytes: int = 100_000_000
    archive_backups: int = 10
    archive_drop: tuple[str, ...] = ()  # event fields not archived (event.text)
    archive_hash: tuple[str, ...] = ()  # event fields archived as salted digests
    archive_salt_env: str = "RULEBOT_ARCHIVE_SALT"
    shadow: str | None = None  # a candidate rule set decided beside the live one
    trace_senders: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()  # bare JIDs that may run the admin commands
    watch: bool = True
    debounce_ms: int = 300
    log_format: Literal["json", "text"] = "json"
    log_level: str = "info"
    source: str = "<inline>"

    @property
    def domain(self) -> str:
        return domain_of(self.jid)


def _parent_domain(domain: str) -> str:
    return domain.split(".", 1)[1] if domain.count(".") >= 1 else domain


def parse_config(text: str, source: str = "<inline>", base: Path | None = None) -> Config:
    """The Config in `text`; relative paths resolve against `base`. Raises ConfigError."""
    doc, issues = load_document(text, source)
    # YAML 1.1 warnings are for rule files (`rulebot validate`); here the schema
    # says what each value must be.
    issues = [i for i in issues if i.severity == "error"]
    if doc is not None:
        issues.extend(schema_issues(doc, "config"))
    if issues or doc is None:
        raise ConfigError(issues)
    raw: dict[str, Any] = doc.value
    base = base or Path.cwd()
    mode = raw.get("mode", "client")
    jid = raw["jid"]
    problems: list[Issue] = []
    if mode == "client" and ("@" not in jid or "/" in jid):
        problems.append(doc.issue(("jid",), "client mode needs a bare user JID like "
                                  "friend@example.com", jid))
    if mode == "component" and ("@" in jid or "/" in jid):
        problems.append(doc.issue(("jid",), "component mode needs a domain JID like "
                                  "friend.example.com", jid))
    sweep = float(raw.get("offline_sweep", 60.0))
    if 0 < sweep < 1:  # each sweep is a read of the server's offline storage
        problems.append(doc.issue(("offline_sweep",), "offline_sweep must be 0 (off) or at "
                                  "least 1 second", sweep))
    workers = int(raw.get("workers", 1))
    if workers > 1 and mode != "component":
        problems.append(doc.issue(("workers",), "several workers need component mode: a "
                                  "client-mode bot is one account whose resources would each "
                                  "get presence and bare-JID messages at random (README, "
                                  "Scaling out)", workers))
    if workers > 1 and not str(raw.get("store", "")).startswith(("postgresql://", "postgres://")):
        problems.append(doc.issue(("workers",), "several workers need a postgresql:// store: "
                                  "they share relations and idempotency records", workers))
    if problems:
        raise ConfigError(problems)
    server: Mapping[str, Any] = raw.get("server", {})
    tls: Mapping[str, Any] = raw.get("tls", {})
    limits: Mapping[str, Any] = raw.get("limits", {})
    out: Mapping[str, Any] = raw.get("outgoing", {})
    rec: Mapping[str, Any] = raw.get("reconnect", {})
    log: Mapping[str, Any] = raw.get("log", {})
    domain = jid.split("@", 1)[-1]
    default_domains = (_parent_domain(domain),) if mode == "component" else (domain,)

    def path(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve())

    wire_limits = Limits(**{k: limits[k] for k in ("max_bytes", "max_depth", "max_string",
                                                    "max_items", "max_attributes")
                                    if k in limits})
    return Config(
        jid=jid,
        rules=str(path(raw["rules"])),
        mode=mode,
        resource=raw.get("resource", "rulebot"),
        # A component's own name is usually not resolvable: default to its parent domain.
        host=server.get("host", _parent_domain(domain) if mode == "component" else domain),
        port=server.get("port", 5347 if mode == "component"
                        else 5223 if tls.get("direct_tls") else 5222),
        password_env=raw.get("password_env", "RULEBOT_PASSWORD"),
        password_file=path(raw.get("password_file")),
        tls=TlsConfig(verify=tls.get("verify", True), ca_file=path(tls.get("ca_file")),
                      allow_plain=tls.get("allow_plain", False),
                      direct_tls=tls.get("direct_tls", False)),
        allowed_domains=tuple(raw.get("allowed_domains", default_domains)),
        limits=wire_limits,
        max_recipients=limits.get("max_recipients", 10_000),
        outbound_queue=limits.get("outbound_queue", 10_000),
        message_type=out.get("message_type", "chat"),
        encoding=out.get("encoding", "same"),
        initial_delay=float(rec.get("initial_delay", 1.0)),
        max_delay=float(rec.get("max_delay", 60.0)),
        stream_management=raw.get("stream_management", True),
        offline_sweep=sweep,
        sm_state_file=path(raw.get("sm_state_file", "rulebot.sm.json")),
        store=raw.get("store", "rulebot.sqlite3"),
        timers_per_sender=int(raw.get("timers", {}).get("per_sender", 100)),
        timers_total=int(raw.get("timers", {}).get("total", 100_000)),
        timers_poll=float(raw.get("timers", {}).get("poll", 0.5)),
        idempotency_window=float(raw.get("idempotency", {}).get("window", 30.0)),
        idempotency_retention=float(raw.get("idempotency", {}).get("retention", 604_800.0)),
        idempotency_follow=float(raw.get("idempotency", {}).get(
            "follow", 0.25 if workers > 1 else 0.0)),
        workers=workers,
        servers=tuple((s["host"], int(s["port"])) for s in raw.get("servers", ())),
        base_dir=str(base.resolve()),
        notify_jids=tuple(raw.get("notify_jids", ())),
        status_listen=raw.get("status", {}).get("listen"),
        audit_path=path(raw.get("audit", {}).get("path")),
        audit_max_bytes=raw.get("audit", {}).get("max_bytes", 10_000_000),
        audit_backups=raw.get("audit", {}).get("backups", 5),
        audit_payloads=raw.get("audit", {}).get("payloads", False),
        archive_path=path(raw.get("archive", {}).get("path")),
        archive_max_bytes=raw.get("archive", {}).get("max_bytes", 100_000_000),
        archive_backups=raw.get("archive", {}).get("backups", 10),
        archive_drop=tuple(raw.get("archive", {}).get("drop", ())),
        archive_hash=tuple(raw.get("archive", {}).get("hash", ())),
        archive_salt_env=raw.get("archive", {}).get("salt_env", "RULEBOT_ARCHIVE_SALT"),
        shadow=path(raw.get("shadow")),
        trace_senders=tuple(j.lower() for j in raw.get("trace_senders", ())),
        admins=tuple(j.lower() for j in raw.get("admins", ())),
        watch=raw.get("reload", {}).get("watch", True),
        debounce_ms=raw.get("reload", {}).get("debounce_ms", 300),
        log_format=log.get("format", "json"),
        log_level=log.get("level", "info"),
        source=source,
    )


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(str(p), 0, 0, "", f"cannot read config: {exc}")]) from exc
    return parse_config(text, str(p), p.resolve().parent)


def read_secret(config: Config, environ: Mapping[str, str] | None = None) -> str:
    """The password/secret from password_file or the password_env variable.

    Raises ConfigError naming where it looked, never what it found."""
    env = os.environ if environ is None else environ
    if config.password_file:
        try:
            secret = Path(config.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError([Issue(config.source, 0, 0, "password_file",
                                     f"cannot read the password file: {exc.strerror}")]) from exc
        if not secret or not secret[0]:
            raise ConfigError([Issue(config.source, 0, 0, "password_file",
                                     "the password file is empty")])
        return secret[0]
    value = env.get(config.password_env)
    if not value:
        raise ConfigError([Issue(config.source, 0, 0, "password_env",
                                 f"environment variable {config.password_env} is not set "
                                 "(it must hold the bot's password or component secret)")])
    return value


def archive_salt(config: Config, environ: Mapping[str, str] | None = None) -> str:
    """The salt of the archive's hashed fields, from the variable archive.salt_env.

    Raises ConfigError when fields are to be hashed and it is not set: an
    unsalted digest of a short value (a phone number) is undone by trying them all."""
    if not (config.archive_path and config.archive_hash):
        return ""
    value = (os.environ if environ is None else environ).get(config.archive_salt_env)
    if not value:
        raise ConfigError([Issue(config.source, 0, 0, "archive.hash",
                                 f"environment variable {config.archive_salt_env} is not set "
                                 "(the salt of the archive's hashed fields)")])
    return value


def with_workers(config: Config, workers: int) -> Config:
    """`config` with `workers` set (rulebot run --workers); ConfigError as parse_config."""
    problems: list[Issue] = []
    if workers > 1 and config.mode != "component":
        problems.append(Issue(config.source, 0, 0, "workers",
                              "several workers need component mode", str(workers)))
    if workers > 1 and not config.store.startswith(("postgresql://", "postgres://")):
        problems.append(Issue(config.source, 0, 0, "workers",
                              "several workers need a postgresql:// store", str(workers)))
    if problems:
        raise ConfigError(problems)
    follow = config.idempotency_follow or (0.25 if workers > 1 else 0.0)
    return dataclasses.replace(config, workers=workers, idempotency_follow=follow)


def worker_config(config: Config, index: int) -> Config:
    """What worker `index` of several runs with: its server (servers[index mod
    length], when servers is set), its own status port (the configured one +
    index) and audit and archive files (`.wINDEX` appended), the same rest."""
    status = config.status_listen
    if status is not None:
        listen_host, _, listen_port = status.rpartition(":")
        status = f"{listen_host}:{int(listen_port) + index}" if int(listen_port) else status
    audit = f"{config.audit_path}.w{index}" if config.audit_path and config.workers > 1 \
        else config.audit_path
    archive = f"{config.archive_path}.w{index}" if config.archive_path and \
        config.workers > 1 else config.archive_path
    server = config.servers[index % len(config.servers)] if config.servers else \
        (config.host, config.port)
    return dataclasses.replace(config, status_listen=status, audit_path=audit,
                               archive_path=archive, host=server[0], port=server[1])
