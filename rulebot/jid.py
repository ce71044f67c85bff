"""JIDs: one rule for what a usable JID is and how it splits, for every part of rulebot.

A JID here is text as the server stamped it (or as a rule
wrote it); rulebot does not apply RFC 7622's stringprep: JIDs are compared as
lower-case bare JIDs (`norm_bare`).
"""

from __future__ import annotations

import re

#: What valid_jid refuses anywhere in a JID: re's \s is exactly str.isspace()
#: (both are Py_UNICODE_ISSPACE; tests/unit/rules/test_functions.py checks every code point).
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f]")
MAX_JID = 3071  # RFC 7622: localpart, domainpart and resourcepart of 1023 each

def valid_jid(jid: object) -> bool:
    """Whether a value can be used as a destination JID (a string, sane shape)."""
    if not isinstance(jid, str) or not jid or len(jid) > MAX_JID:
        return False
    if _SPACE_OR_CONTROL.search(jid) is not None:
        return False
    bare, _, resource = jid.partition("/")
    local, at, domain = bare.partition("@")
    if at and (not local or "@" in domain):
        return False
    if not at:
        domain = local
    has_slash = "/" in jid
    return bool(domain) and (not has_slash or bool(resource))


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


def domain_of(jid: str) -> str:
    """The domain part of a JID."""
    return split_jid(jid)[1]


def norm_bare(jid: str) -> str:
    """The bare JID in lower case: how rulebot compares users."""
    return jid.partition("/")[0].lower()
