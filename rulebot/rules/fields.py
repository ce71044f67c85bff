"""Event fields a rule reads, checked against the event schemas it can see. Pure.

A rule's `event.<field>` paths (in its match and its actions) are looked up
in the schemas of the event types the rule can serve. The index's key tests
say which: `event.type == 'order'` serves `order`, `in_list('kinds',
event.type)` the listed types, no test on the type every declared type. A
field declared by none of them is almost always a typo (`event.ammount`),
so it is reported with the declared names that come closest.

What cannot be known is not reported: a rule that may see events of an
undeclared type (`unknown: allow`), a schema that does not list its
properties or says `additionalProperties: true` (or a schema for them),
anything under an array.
Presence events are built by the bot (docs/rules.md): their fields count as
known for rules that can serve presence stanzas.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from rulebot.rules.expr import root_walk
from rulebot.rules.keytests import Dim, KeyTest

Node = dict[str, Any]
Schema = Mapping[str, Any]

#: The event the bot builds for a presence stanza (docs/rules.md, protocol.md).
PRESENCE_FIELDS = frozenset({"type", "presence", "show", "status", "priority"})


@dataclass(frozen=True, slots=True)
class FieldProblem:
    path: tuple[str, ...]  # e.g. ("event", "ammount")
    message: str


@dataclass(frozen=True, slots=True)
class Served:
    """What a rule can see: the schemas of its message types, and presence or not."""

    schemas: tuple[Schema, ...]
    presence: bool


def served(tests: Sequence[KeyTest], discriminator: str, schemas: Mapping[str, Schema],
           unknown: str) -> Served | None:
    """What the rule with these key tests can see; None when anything could come."""
    by_dim = {t.dim: t.keys for t in tests}
    kinds = by_dim.get(Dim(("stanza", "kind"), "eq"))
    messages = kinds is None or "message" in kinds
    presence = kinds is None or "presence" in kinds
    type_keys = _type_keys(by_dim, discriminator)
    if type_keys is not None and presence:
        # A presence event's type is "presence": a type test that names it lets them in.
        presence = discriminator == "type" and "presence" in type_keys
    names: list[str] = []
    if messages:
        if type_keys is None:
            if unknown != "reject":
                return None  # events of any type, with any fields
            names = sorted(schemas)
        else:
            for key in type_keys:
                name = _schema_name(key, schemas)
                if name is None:
                    if unknown != "reject":
                        return None  # an undeclared type: any fields
                    continue  # refused before any rule sees it
                names.append(name)
    return Served(tuple(schemas[n] for n in names), presence)


def _type_keys(by_dim: Mapping[Dim, frozenset[Any]], discriminator: str
               ) -> frozenset[Any] | None:
    found = None
    for kind in ("eq", "fold", "in"):
        keys = by_dim.get(Dim(("event", discriminator), kind))
        if keys is not None:
            found = keys if found is None else found & keys
    return found


def _schema_name(key: Any, schemas: Mapping[str, Schema]) -> str | None:
    if isinstance(key, str):
        if key in schemas:
            return key
        for name in schemas:  # an in_list key is case-folded
            if name.casefold() == key:
                return name
    return None


def event_paths(tree: Node) -> Iterator[tuple[str, ...]]:
    """Every `event.a.b` path read from the envelope, as far as it is a chain of
    fields (`event.items[0].sku` gives `event.items`)."""
    for node, at_root in root_walk(tree, True):
        if not at_root or node["type"] != "subexpression":
            continue
        children = node["children"]
        first = children[0]
        if first["type"] != "field" or first["value"] != "event":
            continue
        path = ["event"]
        for child in children[1:]:
            if child["type"] == "field":
                path.append(child["value"])
                continue
            if child["type"] == "index_expression" and child["children"][0]["type"] == "field":
                path.append(child["children"][0]["value"])
            break
        if len(path) > 1:
            yield tuple(path)


def check_paths(parts: Iterable[Node], seen: Served) -> list[FieldProblem]:
    """Problems with the event paths of one expression (its `&&`-parts), for a rule
    that sees `seen`."""
    out: list[FieldProblem] = []
    reported: set[tuple[str, ...]] = set()
    for path in chain.from_iterable(map(event_paths, parts)):
        if path in reported:
            continue
        problem = _check(path, seen)
        if problem is not None:
            reported.add(path)
            out.append(problem)
    return out


def _check(path: tuple[str, ...], seen: Served) -> FieldProblem | None:
    if seen.presence and path[1] in PRESENCE_FIELDS:
        return None
    if not seen.schemas and not seen.presence:
        return None  # the rule can see no event at all; other checks' business
    misses: list[tuple[int, set[str]]] = []
    for schema in seen.schemas:
        depth, names = _lookup(schema, path[1:])
        if depth is None:
            return None  # this type knows the path (or cannot tell)
        misses.append((depth, names))
    if seen.presence:
        misses.append((0, set(PRESENCE_FIELDS)))
    depth = min(d for d, _ in misses)
    names = set().union(*(n for d, n in misses if d == depth))
    field = path[1 + depth]
    where = ".".join(path[:1 + depth])
    close = difflib.get_close_matches(field, sorted(names), n=1)
    hint = f", did you mean {close[0]!r}?" if close else (
        f" (it has: {', '.join(sorted(names))})" if names and len(names) <= 12 else "")
    whose = "its event type" if len(seen.schemas) + seen.presence == 1 else "its event types"
    return FieldProblem(path[:2 + depth],
                        f"{where} has no field {field!r} in the schema of {whose}{hint}")


def _lookup(schema: Schema, fields: tuple[str, ...]) -> tuple[int | None, set[str]]:
    """(None, _) when the schema declares `fields` or cannot tell; else (depth of the
    first unknown field, the names declared at that depth)."""
    current: list[Schema] = [schema]
    for depth, name in enumerate(fields):
        props: dict[str, list[Schema]] = {}
        patterns: list[str] = []
        open_ = False
        for part in _parts(current, schema):
            if "properties" not in part and "patternProperties" not in part:
                if _maybe_object(part):
                    open_ = True  # an object whose fields are not listed
                continue
            if part.get("additionalProperties") is True or isinstance(
                    part.get("additionalProperties"), Mapping):
                open_ = True  # other fields allowed on purpose (the default is not)
            for key, sub in (part.get("properties") or {}).items():
                props.setdefault(key, []).append(sub)
            patterns.extend(part.get("patternProperties") or {})
        if name in props:
            current = [s for s in props[name] if isinstance(s, Mapping)]
            if not current:
                return None, set()
            continue
        if open_ or any(_search(p, name) for p in patterns):
            return None, set()
        if not props:
            return None, set()  # not an object with listed fields: cannot tell
        return depth, set(props)
    return None, set()


def _parts(schemas: list[Schema], root: Schema) -> Iterator[Schema]:
    """The schemas and every subschema that can add properties at the same level:
    allOf/anyOf/oneOf branches, then/else, local $refs."""
    todo = list(schemas)
    seen: set[int] = set()
    while todo:
        part = todo.pop()
        if id(part) in seen or not isinstance(part, Mapping):
            continue
        seen.add(id(part))
        yield part
        ref = part.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            target = _pointer(root, ref[1:])
            if isinstance(target, Mapping):
                todo.append(target)
        for key in ("allOf", "anyOf", "oneOf"):
            todo.extend(s for s in part.get(key) or () if isinstance(s, Mapping))
        todo.extend(part[k] for k in ("then", "else") if isinstance(part.get(k), Mapping))


def _pointer(root: Schema, pointer: str) -> Any:
    node: Any = root
    for raw in pointer.split("/")[1:] if pointer else ():
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            return None
    return node


def _maybe_object(part: Schema) -> bool:
    """Whether this subschema lets an object with unlisted fields through."""
    if "$ref" in part or any(k in part for k in ("allOf", "anyOf", "oneOf", "then", "else")):
        return False  # its parts are looked at on their own
    kind = part.get("type")
    if kind is None:
        return not part or isinstance(part.get("additionalProperties"), Mapping)
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def _search(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return True  # a pattern Python cannot read: assume it allows the name
