"""Structured logging: one JSON object per line, or plain text for a terminal.

Every rulebot log call passes its fields as
`extra={"fields": {...}}`; the formatter puts them on the line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from rulebot.jsonenc import encoder

LOGGER = "rulebot"
#: How long the daemon's info lines may sit in the log buffer (see BufferedStreamHandler).
LOG_FLUSH_SECONDS = 0.25

class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
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
            rest = self._encode({"level": level, "logger": name, "msg": msg})[1:-1]
            if len(self._heads) < 1000:
                self._heads[key] = rest
        head = f'{{"ts": "{self._ts(created)}", {rest}'
        if not line_fields:
            return head + "}"
        return f"{head}, {self._encode(line_fields)[1:]}"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} " \
               f"{record.levelname.lower():7} {record.getMessage()}"
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
        """emit() of a record that would carry these fields, for log_hot."""
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
            self.handleError(_HotRecord(name, level, msg, line_fields))


def setup_logging(fmt: str = "json", level: str = "info",
                  buffer_seconds: float = 0.0) -> logging.Logger:
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
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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


class _HotRecord(logging.LogRecord):
    """A LogRecord for the per-stanza decision line, built without the general
    constructor's work (path splitting, thread and process lookups, argument
    handling): every standard attribute is present, so any formatter works."""

    def __init__(self, name: str, level: int, msg: str, line_fields: dict[str, Any]) -> None:
        # Deliberately not calling LogRecord.__init__: see the class docstring.
        ct = time.time()
        self.name = name
        self.msg = msg
        self.args = ()
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = self.filename = self.module = "rulebot"
        self.exc_info = None
        self.exc_text = None
        self.stack_info = None
        self.lineno = 0
        self.funcName = "-"
        self.created = ct
        self.msecs = int((ct - int(ct)) * 1000) + 0.0
        self.relativeCreated = 0.0
        self.thread = self.threadName = self.processName = self.process = None
        self.taskName = None
        self.fields = line_fields


#: Keys of a JSON line's head: fields of that name replace them (format()), so
#: such lines take the ordinary path.
_HEAD_KEYS = frozenset({"ts", "level", "logger", "msg"})


def log_hot(logger: logging.Logger, level: int, msg: str, line_fields: dict[str, Any]) -> None:
    """`logger.log(level, msg, extra=fields(...))` for lines written per stanza:
    the same line reaches the same handlers, at a third of the cost.

    When the daemon's logging is as setup_logging left it (the root's one
    BufferedStreamHandler writing JSON, nothing on the way), the line is
    written to that handler directly, without a record: the logging
    module's path costs more than the encoding. Otherwise (a test's capture
    handler, a filter) the record takes the ordinary path."""
    if not logger.isEnabledFor(level):
        return
    root = logging.root
    handlers = root.handlers
    if (len(handlers) == 1 and type(handlers[0]) is BufferedStreamHandler
            and type(handlers[0].formatter) is JsonFormatter and not handlers[0].filters
            and not line_fields.keys() & _HEAD_KEYS
            and not logger.handlers and not logger.filters and not root.filters
            and logger.propagate and logger.parent is root and level >= handlers[0].level):
        handlers[0].write_fields(level, logger.name, msg, line_fields)
        return
    logger.handle(_HotRecord(logger.name, level, msg, line_fields))


def fields(**kw: Any) -> dict[str, Any]:
    """`extra=` argument for a log call carrying structured fields."""
    return {"fields": kw}
