"""The `events:` section of a rule set: event-type schemas, checked and compiled.

Pure. Each schema is checked against JSON Schema's meta-schema, may only
refer inside itself (rulebot never fetches anything), and is compiled twice:
by jsonschema (which writes the error messages) and, where it accepts the
schema, by jsonschema-rs (which gives the fast yes/no; engine.evaluate).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jsonschema
import jsonschema_rs

from rulebot.load.schema import validation_issues
from rulebot.load.yamldoc import Document
from rulebot.load.yamldoc import Path as DocPath
from rulebot.model import Issue
from rulebot.rules.ruleset import EventTypes, FastValidator

_META = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)


def compile_events(doc: Document, raw: dict[str, Any]) -> tuple[EventTypes, list[Issue]]:
    """The `events:` section compiled: a validator per type, and the problems found."""
    issues: list[Issue] = []
    validators: dict[str, jsonschema.Draft202012Validator] = {}
    fast: dict[str, FastValidator] = {}
    types = raw.get("types")
    for name, schema in (types if isinstance(types, dict) else {}).items():
        if not isinstance(schema, dict):
            continue
        path: DocPath = ("events", "types", name)
        problems = list(validation_issues(doc, _META.iter_errors(schema), path,
                                          "invalid event schema: "))
        # Only references inside the schema: rulebot never fetches anything.
        problems.extend(doc.issue((*path, *where), "only local $ref (#/...) is allowed "
                                  "in event schemas", ref)
                        for where, ref in _remote_refs(schema))
        if problems:
            issues.extend(problems)
            continue
        validators[name] = jsonschema.Draft202012Validator(schema)
        # 40-180x jsonschema's speed for the yes/no. A pattern only
        # Python's re understands (\Z, a{,3}) is refused here: such a
        # schema is checked by jsonschema alone.
        with contextlib.suppress(ValueError, jsonschema_rs.ValidationError):
            fast[name] = jsonschema_rs.Draft202012Validator(schema)
    disc = raw.get("discriminator", "type")
    unknown = raw.get("unknown", "allow")
    return EventTypes(
        discriminator=disc if isinstance(disc, str) else "type",
        unknown="reject" if unknown == "reject" else "allow",
        validators=validators,
        fast=fast,
    ), issues


def _remote_refs(schema: Any, path: DocPath = ()) -> Iterator[tuple[DocPath, str]]:
    """Every `$ref` that does not point inside the schema itself."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                yield (*path, key), value
            else:
                yield from _remote_refs(value, (*path, key))
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _remote_refs(value, (*path, i))
