"""The per-stanza log line (rulebot.daemon.decisions.DecisionLog): written
straight to the daemon's JSON handler when logging is as the daemon sets it
up (logs.direct_writer), through the logging module otherwise, and the same
text either way."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rulebot.daemon.decisions import DecisionLog
from rulebot.logs import BufferedStreamHandler, JsonFormatter

FIELDS = {"event": "stanza", "status": "decided", "stanza_id": "s1", "from": "ålice@localhost/x",
          "matched": ["chat-to-member"], "actions": [{"type": "forward", "to": ["bob@localhost"],
                                                      "rule": "chat-to-member"}],
          "event_id": None, "micros": 28.5, "odd": {1, 2} - {1, 2}}


@contextmanager
def daemon_logging() -> Iterator[tuple[io.StringIO, BufferedStreamHandler, list[str]]]:
    """The root logger as setup_logging leaves it, writing to a string; and the
    messages that went the direct way. Entered in the test body: pytest adds
    its capture handlers to the root logger when the test starts."""
    root, rulebot = logging.getLogger(), logging.getLogger("rulebot")
    saved = root.handlers[:], root.level, rulebot.level
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=60)
    handler.setFormatter(JsonFormatter())
    direct: list[str] = []
    write_fields = handler.write_fields

    def spy(level: int, name: str, msg: str, line_fields: dict[str, Any]) -> None:
        direct.append(msg)
        write_fields(level, name, msg, line_fields)

    handler.write_fields = spy  # type: ignore[method-assign]
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    rulebot.setLevel(logging.INFO)
    try:
        yield stream, handler, direct
    finally:
        root.handlers[:], root_level, rulebot_level = saved
        root.setLevel(root_level)
        rulebot.setLevel(rulebot_level)


def record(level: int, msg: str, fields: dict[str, Any]) -> logging.LogRecord:
    """The record the ordinary path makes for such a line."""
    return logging.getLogger("rulebot").makeRecord("rulebot", level, "-", 0, msg, (), None,
                                                   extra={"fields": fields})


def write_line(level: int, msg: str, fields: dict[str, Any]) -> None:
    """One decision-style line, as the daemon writes it (the writer is chosen
    when the DecisionLog is made: after logging is set up)."""
    DecisionLog().line(level, msg, fields)


def without_ts(line: str) -> str:
    return re.sub(r'^\{"ts": "[^"]+", ', "{", line)


def test_the_direct_line_is_the_text_the_formatter_writes_for_the_record() -> None:
    with daemon_logging() as (stream, handler, direct):
        write_line(logging.INFO, "message decided", FIELDS)
        line_text = stream.getvalue()
        assert direct == ["message decided"]  # the direct way
        assert line_text.endswith("\n")
        assert line_text.count("\n") == 1
        expected = handler.format(record(logging.INFO, "message decided", FIELDS))
        assert without_ts(line_text.rstrip("\n")) == without_ts(expected)
        line = json.loads(line_text)
        assert (line["level"], line["logger"], line["msg"]) == ("info", "rulebot",
                                                                "message decided")
        assert line["from"] == "ålice@localhost/x"  # not \u-escaped, like the formatter
        assert line["odd"] == "set()"  # default=str, like the formatter

        for fields in ({}, {"event": "x"}):  # no fields; another message (a new head)
            stream.truncate(0)
            stream.seek(0)
            write_line(logging.WARNING, "message ignored", fields)
            expected = handler.format(record(logging.WARNING, "message ignored", fields))
            assert without_ts(stream.getvalue().rstrip("\n")) == without_ts(expected)
        assert len(direct) == 3


def test_fields_named_like_the_head_take_the_ordinary_path() -> None:
    with daemon_logging() as (stream, _handler, direct):
        fields = {"msg": "mine", "event": "x"}
        write_line(logging.INFO, "message decided", fields)
        assert direct == []
        assert json.loads(stream.getvalue())["msg"] == "mine"  # as format() writes it


def test_a_capturing_handler_still_gets_the_record() -> None:
    with daemon_logging() as (stream, _handler, direct):
        seen: list[logging.LogRecord] = []

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record)

        logging.getLogger().addHandler(Capture())
        write_line(logging.INFO, "message decided", FIELDS)
        assert [r.getMessage() for r in seen] == ["message decided"]
        assert seen[0].fields == FIELDS  # type: ignore[attr-defined]
        assert direct == []  # the ordinary way
        assert stream.getvalue().count("\n") == 1  # and the JSON handler its line


def test_a_disabled_level_writes_nothing() -> None:
    with daemon_logging() as (stream, _handler, direct):
        logging.getLogger("rulebot").setLevel(logging.WARNING)
        write_line(logging.INFO, "message decided", FIELDS)
        assert stream.getvalue() == ""
        assert direct == []


def test_a_cycle_in_fields_is_reported_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    with daemon_logging() as (stream, _handler, direct):
        cyclic: dict[str, object] = {}
        cyclic["self"] = cyclic
        saved = logging.raiseExceptions
        logging.raiseExceptions = True  # handleError prints the error to stderr
        try:
            write_line(logging.INFO, "m", {"c": cyclic})
        finally:
            logging.raiseExceptions = saved
        assert direct == ["m"]
        assert stream.getvalue() == ""
    assert "Circular reference" in capsys.readouterr().err


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_decision_lines_wait_in_the_buffer_and_other_lines_are_flushed_at_once() -> None:
    # A kill -9 may lose the last buffered decision lines, not the line saying
    # the bot connected or resumed: crash tests and operators read those.
    stream = CountingStream()
    handler = BufferedStreamHandler(stream, interval=60)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("rulebot.test-buffer")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("message decided", extra={"event": "stanza"})
        assert stream.flushes == 0
        logger.info("connected", extra={"event": "connected"})
        assert stream.flushes == 1
        logger.info("message decided", extra={"event": "stanza"})
        assert stream.flushes == 1
        logger.warning("disconnected", extra={"event": "stanza"})
        assert stream.flushes == 2
    finally:
        logger.removeHandler(handler)
