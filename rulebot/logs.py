"""Structured logging: one JSON object per line, or plain text for a terminal.

Imports: stdlib only. Every rulebot log call passes its fields as
`extra={"fields": {...}}`; the formatter puts them on the line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER = "rulebot"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

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
        return json.dumps(out, ensure_ascii=False, default=str)


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


def setup_logging(fmt: str = "json", level: str = "info") -> logging.Logger:
    """Route rulebot's logs (and slixmpp's warnings) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
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


def fields(**kw: Any) -> dict[str, Any]:
    """`extra=` argument for a log call carrying structured fields."""
    return {"fields": kw}
