"""Structured logging: one JSON object per line, or plain text for a terminal.

Every rulebot log call passes its fields as
`extra={"fields": {...}}`; the formatter puts them on the line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from rulebot.jsonenc import encoder

LOGGER = "rulebot"
#: How long the daemon's info lines may sit in the log buffer (see BufferedStreamHandler).
LOG_FLUSH_SECONDS = 0.25

class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        """`static`: fields every line carries after "logger" (a worker's index)."""
        super().__init__()
        self._static = dict(static or {})
        self._second = -1
        self._stamp = ""
        # Per line: 1.8 of the 4.8 µs json.JSONEncoder.encode took.
        self._encode = encoder(separators=(", ", ": "), allow_nan=True, default=str)
        self._heads: dict[tuple[str, str, str], str] = {}

    def _ts(self, created: float) -> str:
        # One strftime per second, not per line: the decision log is hot.
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            **self._static,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return self._encode(out)

    def format_fields(self, created: float, level: str, name: str, msg: str,
                      line_fields: dict[str, Any]) -> str:
        """What format() writes for a record with these attributes and fields
        (no exception), without building the record."""
        key = (level, name, msg)
        rest = self._heads.get(key)
        if rest is None:  # the encoded line after its timestamp; a few distinct ones
            rest = self._encode({"level": level, "logger": name, **self._static,
                                 "msg": msg})[1:-1]
            if len(self._heads) < 1000:
                self._heads[key] = rest
        head = f'{{"ts": "{self._ts(created)}", {rest}'
        if not line_fields:
            return head + "}"
        return f"{head}, {self._encode(line_fields)[1:]}"


class TextFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._prefix = "".join(f"{k}={v} " for k, v in (static or {}).items())

    def format(self, record: logging.LogRecord) -> str:
        base = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} " \
               f"{record.levelname.lower():7} {self._prefix}{record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            base += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}"
                                   for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes through a block buffer, like an access log
    with `flush=`: a record at WARNING or above, any line but a decision line
    (event "stanza"), or the first record after `interval` seconds, flushes;
    the owner calls `flush()` periodically so an idle daemon's last lines do
    not wait. At thousands of decisions per second a write and a flush per
    line cost more than the line itself. The price: a killed process (kill -9)
    loses at most `interval` seconds of decision lines; the rare lines that
    tell what the daemon did (connected, resumed, reloaded...) are written at
    once."""

    def __init__(self, stream: IO[str], interval: float) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            now = time.monotonic()
            if record.levelno >= logging.WARNING or now - self._last >= self.interval \
                    or getattr(record, "event", None) != "stanza":
                self._last = now
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self._last = time.monotonic()
        super().flush()

    def write_fields(self, level: int, name: str, msg: str, line_fields: dict[str, Any]) -> None:
        """emit() of a record that would carry these fields, without the record
        (direct_writer)."""
        formatter = self.formatter
        assert isinstance(formatter, JsonFormatter)
        try:
            with self.lock:  # type: ignore[union-attr]
                line = formatter.format_fields(time.time(), logging.getLevelName(level).lower(),
                                               name, msg, line_fields)
                self.stream.write(line + self.terminator)
                now = time.monotonic()
                if level >= logging.WARNING or now - self._last >= self.interval:
                    self._last = now
                    self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"name": name, "levelno": level,
                                                    "levelname": logging.getLevelName(level),
                                                    "msg": msg, "fields": line_fields}))


def setup_logging(fmt: str = "json", level: str = "info",
                  buffer_seconds: float = 0.0,
                  static: dict[str, Any] | None = None) -> logging.Logger:
    """Route rulebot's logs (and slixmpp's warnings) to stderr in the chosen format.

    With `buffer_seconds` > 0 (the daemon), lines below WARNING are written
    through a 64 KiB buffer flushed at least that often (BufferedStreamHandler)."""
    handler: logging.StreamHandler  # type: ignore[type-arg]
    if buffer_seconds > 0:
        stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",  # noqa: SIM115
                      errors="backslashreplace", closefd=False)
        handler = BufferedStreamHandler(stream, buffer_seconds)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static) if fmt == "json" else TextFormatter(static))
    # No caller file/line, thread or process names in rulebot's lines: the
    # logging module gathers them (a stack walk for the caller) for every
    # record unless told not to (logging HOWTO, "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level.upper())
    # slixmpp logs every failed reconnect attempt at error level with a
    # traceback; rulebot reports connection state itself, so slixmpp is quiet
    # unless the operator asks for debug logs.
    logging.getLogger("slixmpp").setLevel(logging.CRITICAL if level != "debug" else logging.DEBUG)
    return logger


def flush_logs() -> None:
    """Flush every handler of the root logger (the daemon calls this periodically)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


#: Keys of a JSON line's head: fields of that name replace them (format()), so
#: such lines must take the ordinary path.
HEAD_KEYS = frozenset({"ts", "level", "logger", "msg"})

#: What direct_writer returns: (level, msg, fields) -> one line written.
DirectWriter = Callable[[int, str, dict[str, Any]], None]


def direct_writer(name: str) -> DirectWriter | None:
    """A writer of JSON lines for logger `name` straight to the daemon's handler,
    or None when logging is not as setup_logging left it (the root's one
    BufferedStreamHandler writing JSON, no filters, `name` propagating to the
    root without handlers of its own): a test's capture handler, text format.

    For lines written per stanza (rulebot.daemon.decisions): at thousands of
    events per second, the logging module's record, level and handler walk
    cost more than the line. Asked once, by the owner of such lines, after
    logging is set up; the lines it writes are the text format() writes for
    the record they stand for (tests/unit/test_logs.py)."""
    logger = logging.getLogger(name)
    root = logging.root
    handlers = root.handlers
    if not (len(handlers) == 1 and type(handlers[0]) is BufferedStreamHandler
            and type(handlers[0].formatter) is JsonFormatter and not handlers[0].filters
            and not logger.handlers and not logger.filters and not root.filters
            and logger.propagate and logger.parent is root):
        return None
    handler = handlers[0]
    write = handler.write_fields

    def direct(level: int, msg: str, line_fields: dict[str, Any]) -> None:
        if level >= handler.level:
            write(level, name, msg, line_fields)

    return direct


def fields(**kw: Any) -> dict[str, Any]:
    """`extra=` argument for a log call carrying structured fields."""
    return {"fields": kw}
