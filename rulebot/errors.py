"""The one error hierarchy of rulebot.

    RulebotError
    ├── RuleSetError      a rule set failed to load; carries every located Issue
    ├── ConfigError       the daemon's config file is invalid; carries Issues too
    ├── EventError        one incoming event is unusable (bad JSON, too big, ...);
    │                     carries a machine-readable code and, where known, a path
    ├── StoreError        the relationship store cannot be opened or failed an operation
    └── ConnectError      the XMPP connection cannot be made (TLS, auth, ...)

Errors inside one rule's expression at evaluation time are *not* exceptions:
the engine records them on the Decision (model.RuleError).
"""

from __future__ import annotations

from collections.abc import Sequence

from rulebot.model import Issue


class RulebotError(Exception):
    """Base class of every error rulebot raises on purpose."""


class _LocatedError(RulebotError):
    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues: tuple[Issue, ...] = tuple(sorted(issues, key=Issue.sort_key))
        errors = [i for i in self.issues if i.severity == "error"]
        first = errors[0].format() if errors else "no issues"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class RuleSetError(_LocatedError):
    """A rule set (file or directory) is invalid; `issues` lists every problem."""


class ConfigError(_LocatedError):
    """The daemon's config is invalid; `issues` lists every problem."""


class EventError(RulebotError):
    """An incoming event cannot be processed.

    `code` is a stable machine-readable identifier (see docs/protocol.md);
    `path` is a JSON pointer into the event when the problem has a place.
    """

    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        self.code = code
        self.message = message
        self.path = path
        super().__init__(f"{code}: {message}" + (f" at {path}" if path else ""))


class StoreError(RulebotError):
    """The relationship store cannot be opened, or refused or failed an operation.

    Messages never contain a database password."""


class StoreUnavailable(StoreError):
    """The store failed an operation it was asked (the database's or driver's
    error: unreachable, disk full), as opposed to refusing invalid input. Met
    while deciding, it makes the whole decision a store-unavailable refusal:
    a rule that could not read its state must not be skipped as if false."""


class ConnectError(RulebotError):
    """The XMPP connection failed in a way that retrying will not fix by itself."""
