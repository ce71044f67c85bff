"""valid_jid: what may be used as a destination."""

from __future__ import annotations

import sys

import pytest

from rulebot.jid import valid_jid


def test_valid_jid_refuses_exactly_whitespace_and_control_characters() -> None:
    # The check is a regular expression; the rule it stands for is
    # "no character for which str.isspace() holds, none below U+0020".
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates: not in any JID text we receive
        refused = ch.isspace() or code < 32
        assert valid_jid(f"bob@localhost/a{ch}b") is not refused, hex(code)


@pytest.mark.parametrize(("jid", "ok"), [
    ("bob@localhost", True), ("localhost", True), ("bob@localhost/phone", True),
    ("", False), ("@localhost", False), ("bob@", False), ("bob@localhost/", False),
    ("a@b@c", False), ("x" * 3072, False), (42, False),
])
def test_valid_jid_shapes(jid: object, ok: bool) -> None:
    assert valid_jid(jid) is ok
