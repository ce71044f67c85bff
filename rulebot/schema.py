"""The shipped JSON Schemas, and schema errors turned into located issues.

Imports: model, yamldoc, stdlib, jsonschema. Reads the schema files once
(package data), otherwise pure.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from rulebot.model import JSON, Issue
from rulebot.yamldoc import Document

SCHEMA_NAMES = ("rules", "config")


def schema_text(name: str) -> str:
    """The text of a shipped schema (`rules` or `config`).

    In a wheel the schemas are package data (rulebot/schemas); in a source
    checkout they sit at the top of the repository."""
    packaged = resources.files("rulebot").joinpath("schemas", f"{name}.schema.json")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (FsPath(__file__).parent.parent / "schemas" / f"{name}.schema.json").read_text(
        encoding="utf-8"
    )


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(schema_text(name))
    return value


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name))


def _explain(error: ValidationError) -> ValidationError:
    # anyOf/oneOf failures say only "is not valid under any of the given
    # schemas"; the most relevant sub-error says what is actually wrong.
    if error.context:
        return best_match(error.context) or error
    return error


def schema_issues(doc: Document, schema: str) -> list[Issue]:
    """Every schema violation in `doc`, each located at the offending key or value."""
    issues: list[Issue] = []
    for error in validator(schema).iter_errors(doc.value):
        path = tuple(error.absolute_path)
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
                issues.append(doc.issue((*path, key), message, key=True))
            continue
        if error.validator == "propertyNames":
            issues.append(doc.issue(path, f"invalid name: {error.message}"))
            continue
        error = _explain(error)
        path = tuple(error.absolute_path)
        if error.validator == "required":
            # Point at the object that lacks the key, without dumping it whole.
            issues.append(doc.issue(path, _message(error)))
            continue
        issues.append(doc.issue(path, _message(error), error.instance))
    return issues


def _message(error: ValidationError) -> str:
    sub = error.schema if isinstance(error.schema, dict) else {}
    return _message_for(error, sub)


def _message_for(error: ValidationError, sub: dict[str, Any]) -> str:
    validator_name = error.validator
    if validator_name == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        return f"missing required key {missing[0]!r}" if missing else error.message
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
        return f"does not match the pattern {error.validator_value}"
    if validator_name == "minLength":
        return "must not be empty" if error.validator_value == 1 else error.message
    return error.message


def _types(value: JSON) -> str:
    if isinstance(value, list):
        return " or ".join(value)
    return str(value)
