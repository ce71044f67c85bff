"""Opening a store: a location (a path or URL from rulebot.yaml) -> its backend.

The only module that imports the backends: everything else sees RelationStore.
"""

from __future__ import annotations

import re
from pathlib import Path

from rulebot.store.base import RelationStore, StoreError, redact_url
from rulebot.store.sqlite import SqliteStore

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|sqlite:")  # mysql://..., sqlite:x


def is_postgres_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def resolve_location(location: str, base: Path) -> str:
    """A store location from a config file: relative SQLite paths resolve against *base*."""
    if is_postgres_url(location):
        return location
    if location.startswith("sqlite:///"):
        path = location.removeprefix("sqlite:///")
        return "sqlite:///" + (path if path == ":memory:" else str(base / path))
    return location if location == ":memory:" else str(base / location)


def open_store(url_or_path: str) -> RelationStore:
    """Open (creating the schema if missing) the store at a location.

    ``postgresql://`` / ``postgres://`` URLs open PostgreSQL (needs psycopg);
    ``sqlite:///PATH`` (SQLAlchemy style: ``sqlite:////abs/path``) or a plain
    path opens SQLite. Raises StoreError; messages never show a password."""
    if is_postgres_url(url_or_path):
        try:
            from rulebot.store.postgres import PostgresStore  # psycopg only when asked for
        except ImportError as exc:
            raise StoreError(f"PostgreSQL stores need psycopg 3 ({exc}): "
                             "pip install 'psycopg[binary]>=3.1'") from None
        return PostgresStore(url_or_path)
    if url_or_path.startswith("sqlite:///"):
        path = url_or_path.removeprefix("sqlite:///")
    elif _SCHEME.match(url_or_path):
        raise StoreError(f"unsupported store URL {redact_url(url_or_path)} (expected "
                         "postgresql://..., sqlite:///PATH or a file path)")
    else:
        path = url_or_path
    if not path:
        raise StoreError("empty store path")
    return SqliteStore(path)
