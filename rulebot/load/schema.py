"""The shipped JSON Schemas, and schema errors turned into located issues.

Reads the schema files once
(package data), otherwise pure.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import jsonschema
import jsonschema_rs
from jsonschema.exceptions import ValidationError, best_match

from rulebot.load.yamldoc import Document
from rulebot.load.yamldoc import Path as DocPath
from rulebot.model import JSON, Issue

SCHEMA_NAMES = ("rules", "config", "ruletest")

def schema_text(name: str) -> str:
    """The text of a shipped schema (`rules` or `config`).

    In a wheel the schemas are package data (rulebot/schemas); in a source
    checkout they sit at the top of the repository."""
    packaged = resources.files("rulebot").joinpath("schemas", f"{name}.schema.json")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (FsPath(__file__).parents[2] / "schemas" / f"{name}.schema.json").read_text(
        encoding="utf-8"
    )


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(schema_text(name))
    return value


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name))


@functools.cache
def fast_validator(name: str) -> Any:
    """The same schema compiled by jsonschema-rs, or None where it refuses it."""
    try:
        return jsonschema_rs.Draft202012Validator(load_schema(name))
    except (ValueError, jsonschema_rs.ValidationError):  # pragma: no cover - a schema bug
        return None


def schema_issues(doc: Document, schema: str) -> list[Issue]:
    """Every schema violation in `doc`, each located at the offending key or value.

    jsonschema-rs says whether there is any (a 1,000-rule file: ~5 ms against
    jsonschema's ~250 ms, which was a third of a reload); only then does
    jsonschema find and word them."""
    fast = fast_validator(schema)
    if fast is not None and fast.is_valid(doc.value):
        return []
    return list(validation_issues(doc, validator(schema).iter_errors(doc.value)))


def validation_issues(doc: Document, errors: Iterable[ValidationError], base: DocPath = (),
                      prefix: str = "") -> Iterator[Issue]:
    """Located issues for jsonschema errors; `base` is where the validated value sits
    in `doc`, `prefix` starts every message."""
    for error in errors:
        yield from _one(doc, error, base, prefix)


def _one(doc: Document, error: ValidationError, base: DocPath, prefix: str
         ) -> Iterator[Issue]:
    path = (*base, *error.absolute_path)
    if path in doc.reported:
        return
    sub = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(sub.get("properties", {}))
        for key in error.instance:
            if key in allowed:
                continue
            hint = difflib.get_close_matches(key, allowed, n=1)
            message = f"unknown key {key!r}" + (f", did you mean {hint[0]!r}?" if hint else "")
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
            yield doc.issue((*path, key), prefix + message, key=True)
        return
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        # The error is about a key: point at that key, not at its mapping.
        key_path = (*path, error.instance)
        yield doc.issue(key_path, prefix + _message(error), error.instance, key=True)
        return
    if error.validator in ("anyOf", "oneOf") and error.context:
        branch = _matching_branch(error)
        if branch is not None:
            for inner in branch:
                yield from _one(doc, inner, base, prefix)
            return
        error = best_match(error.context) or error
        path = (*base, *error.absolute_path)
    if error.validator == "required":
        yield doc.issue(path, prefix + _message(error))  # no need to dump the whole object
        return
    yield doc.issue(path, prefix + _message(error), error.instance)


def _matching_branch(error: ValidationError) -> list[ValidationError] | None:
    """The errors of the one alternative whose type fits the value, if exactly one does.

    For `drop: {because: x}` against null | string | {reason}, the useful
    message comes from the object branch ("unknown key 'because'"), not from
    "must be of type null"."""
    branches: dict[object, list[ValidationError]] = {}
    for inner in error.context or ():
        key = inner.relative_schema_path[0] if inner.relative_schema_path else None
        branches.setdefault(key, []).append(inner)
    fitting = [errs for errs in branches.values()
               if not any(e.validator == "type" and not e.relative_path for e in errs)]
    return fitting[0] if len(fitting) == 1 else None


def _message(error: ValidationError) -> str:
    sub = error.schema if isinstance(error.schema, dict) else {}
    return _message_for(error, sub)


def _message_for(error: ValidationError, sub: dict[str, Any]) -> str:
    validator_name = error.validator
    if validator_name == "required":
        # jsonschema reports each missing key as its own error: "'name' is a required ..."
        found = re.match(r"^'(.*)' is a required property$", error.message)
        return f"missing required key {found.group(1)!r}" if found else error.message
    if validator_name == "type":
        hint = ""
        if isinstance(error.instance, bool) and "string" in str(error.validator_value):
            # YAML 1.1 reads unquoted yes/no/on/off as booleans (the "Norway problem").
            hint = "; quote it: YAML reads unquoted yes/no/on/off/true/false as booleans"
        return f"must be of type {_types(error.validator_value)}{hint}"
    if validator_name == "enum":
        return "must be one of " + ", ".join(json.dumps(v) for v in sub.get("enum", []))
    if validator_name == "const":
        return f"must be {json.dumps(error.validator_value)}"
    if validator_name == "minItems":
        return f"must have at least {error.validator_value} item(s)"
    if validator_name in ("minProperties", "maxProperties") and sub.get("maxProperties") == 1:
        names = ", ".join(sub.get("properties", {}))
        return f"must have exactly one of: {names}"
    if validator_name == "pattern":
        # The schemas end patterns with (?!\n)$: Python's $ also matches before
        # a final newline. Operators read the pattern without that guard.
        shown = str(error.validator_value).replace("(?!\\n)$", "$")
        return f"does not match the pattern {shown}"
    if validator_name == "minLength":
        return "must not be empty" if error.validator_value == 1 else error.message
    return error.message


def _types(value: JSON) -> str:
    if isinstance(value, list):
        return " or ".join(value)
    return str(value)
