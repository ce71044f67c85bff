"""The pure JMESPath functions rule expressions may call, besides JMESPath's own.

Imports: stdlib, jmespath. No I/O: every function is a function of its
arguments and of the rule set's lists (and, later, a read-only state view).

| function                     | returns                                          |
|------------------------------|--------------------------------------------------|
| jid_bare(jid)                | `user@domain` part of a JID                      |
| jid_local(jid)               | `user` (empty string for a domain JID)           |
| jid_domain(jid)              | `domain`                                         |
| jid_resource(jid)            | `resource` (empty string when none)              |
| regex_match(pattern, string) | true when Python `re.search` finds the pattern   |
| in_list(name, value)         | true when value is in the rule set's list `name` |
| lower(string), upper(string) | the string in lower/upper case                   |
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from jmespath import exceptions as jp_exceptions
from jmespath import functions

#: Names of the functions this module adds (validate checks calls against them).
CUSTOM_FUNCTIONS = frozenset(
    {"jid_bare", "jid_local", "jid_domain", "jid_resource", "regex_match", "in_list",
     "lower", "upper"}
)

MAX_PATTERN = 1000


def split_jid(jid: str) -> tuple[str, str, str]:
    """(local, domain, resource) of a JID; local and resource may be ''."""
    bare, _, resource = jid.partition("/")
    local, at, domain = bare.partition("@")
    if not at:
        return "", local, resource
    return local, domain, resource


def bare_jid(jid: str) -> str:
    local, domain, _ = split_jid(jid)
    return f"{local}@{domain}" if local else domain


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_PATTERN:
        raise jp_exceptions.JMESPathError(f"regex_match: pattern longer than {MAX_PATTERN}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise jp_exceptions.JMESPathError(f"regex_match: invalid pattern: {exc}") from None


def check_pattern(pattern: str) -> str | None:
    """The error message for an invalid literal regex, or None when it compiles."""
    try:
        _compiled(pattern)
    except jp_exceptions.JMESPathError as exc:
        return str(exc)
    return None


class RuleFunctions(functions.Functions):
    """JMESPath's built-ins plus rulebot's, bound to one rule set's lists."""

    def __init__(self, lists: Mapping[str, frozenset[str]]) -> None:
        super().__init__()
        self._lists = lists

    @functions.signature({"types": ["string"]})
    def _func_jid_bare(self, jid: str) -> str:
        return bare_jid(jid)

    @functions.signature({"types": ["string"]})
    def _func_jid_local(self, jid: str) -> str:
        return split_jid(jid)[0]

    @functions.signature({"types": ["string"]})
    def _func_jid_domain(self, jid: str) -> str:
        return split_jid(jid)[1]

    @functions.signature({"types": ["string"]})
    def _func_jid_resource(self, jid: str) -> str:
        return split_jid(jid)[2]

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_regex_match(self, pattern: str, value: str) -> bool:
        return _compiled(pattern).search(value) is not None

    @functions.signature({"types": ["string"]}, {"types": []})
    def _func_in_list(self, name: str, value: Any) -> bool:
        members = self._lists.get(name)
        if members is None:
            raise jp_exceptions.JMESPathError(f"in_list: no list named {name!r}")
        return isinstance(value, str) and value in members

    @functions.signature({"types": ["string"]})
    def _func_lower(self, value: str) -> str:
        return value.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, value: str) -> str:
        return value.upper()
