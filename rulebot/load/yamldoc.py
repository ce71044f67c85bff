"""YAML documents with positions: safe loading that remembers where each value is.

Pure: takes text, returns values and positions.

Only YAML's safe subset is accepted (no Python tags, no code). Duplicate keys,
which PyYAML silently lets the last one win, are errors here, because a rule
file where `match:` appears twice means something other than it says.
"""

from __future__ import annotations

import json
import marshal
import re
from dataclasses import dataclass, field

import yaml

from rulebot.model import JSON, Issue, show_value

Path = tuple[str | int, ...]

try:  # libyaml makes a 1,000-rule file compose in a fraction of the time
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

_PLAIN = re.compile(r"[A-Za-z0-9_$-]+")

# A billion-laughs file expands aliases exponentially; refuse beyond this.
MAX_NODES = 1_000_000

def format_path(path: Path) -> str:
    """`("rules", 2, "match")` -> `rules[2].match`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN.fullmatch(part):
            out += ("." if out else "") + part
        else:  # a key with spaces, dots or control characters: quote it
            out += "[" + json.dumps(part, ensure_ascii=True) + "]"
    return out


@dataclass
class Document:
    """A loaded YAML document: its value and where each part of it was written."""

    source: str
    value: JSON
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    # Column offset of a scalar's first character of content (1 for quoted
    # scalars), None for block/multi-line scalars where columns can't be mapped.
    content_col: dict[Path, int | None] = field(default_factory=dict)
    # Paths whose value was already reported while loading (e.g. an unsupported
    # tag); later checks skip them instead of reporting the same place twice.
    reported: set[Path] = field(default_factory=set)
    # The places above, marshalled, when the document came from `unpack`: until
    # another place is asked, `values` and `keys` hold only the shallow ones a
    # load without issues asks for (`rules[3]`, the key `rules[3].name`), and
    # 10,000 rules' places took 6 kB a rule as objects.
    packed_places: bytes | None = None

    def pack(self) -> bytes:
        """The document as bytes (marshal), for a cache."""
        self._places()
        values = {p: at for p, at in self.values.items() if _shallow(p)}
        keys = {p: at for p, at in self.keys.items() if _shallow(p)}
        places = marshal.dumps((self.values, self.keys, self.content_col))
        return marshal.dumps((self.value, values, keys, self.reported, places))

    @classmethod
    def unpack(cls, source: str, data: bytes) -> Document:
        value, values, keys, reported, places = marshal.loads(data)
        return cls(source, value, values, keys, {}, reported, places)

    def _places(self) -> None:
        if self.packed_places is not None:
            self.values, self.keys, self.content_col = marshal.loads(self.packed_places)
            self.packed_places = None

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Best known (line, col) for a path: the key's place if asked, else the value's,
        else the nearest ancestor's."""
        if self.packed_places is not None:
            held = self.keys if key else self.values
            if path in held:
                return held[path]
            self._places()
        probe = path
        while True:
            if key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return (1, 1)
            probe = probe[:-1]

    def issue(
        self,
        path: Path,
        message: str,
        value: object = ...,
        *,
        key: bool = False,
        severity: str = "error",
        offset: int | None = None,
    ) -> Issue:
        line, col = self.where(path, key=key)
        self._places()
        if offset is not None:
            start = self.content_col.get(path)
            if start is not None:
                col = start + offset
        shown = None if value is ... else show_value(value)
        return Issue(
            self.source,
            line,
            col,
            format_path(path),
            message,
            shown,
            "warning" if severity == "warning" else "error",
        )


def _shallow(path: Path) -> bool:
    return len(path) <= 2 or (len(path) == 3 and path[2] == "name")


_TAGS = {
    yaml.ScalarNode: {"tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
                      "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool",
                      "tag:yaml.org,2002:null", "tag:yaml.org,2002:timestamp"},
    yaml.SequenceNode: {"tag:yaml.org,2002:seq"},
    yaml.MappingNode: {"tag:yaml.org,2002:map"},
}


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _sizes(root: yaml.Node) -> dict[int, int]:
    """Number of values each node expands to, aliases included, memoised by node
    identity so that an alias bomb is measured in linear time, not expanded.
    Raises _TooBig for a node that contains itself (`a: &a [*a]`)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in _children(node))
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            mark = node.start_mark
            raise _TooBig(Issue("", mark.line + 1, mark.column + 1, "",
                                "a YAML alias refers to a node that contains it "
                                "(infinite structure)"))
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [v for _, v in node.value]
    return []


#: Plain scalars PyYAML reads by YAML 1.1's rules, where YAML 1.2 tools (and
#: most readers) see text: yes/no/on/off as booleans, 0755 as octal 493,
#: 12:30 as base-60 750.
_YAML11_BOOL = frozenset({"yes", "no", "on", "off"})
_OCTAL = re.compile(r"[-+]?0[0-7_]+")
_BASE60 = re.compile(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?")


def yaml11_surprise(text: str, value: object) -> str | None:
    """The warning for a plain scalar YAML 1.1 turns into something else than its
    text suggests, or None."""
    if isinstance(value, bool) and text.lower() in _YAML11_BOOL:
        return (f"YAML 1.1 reads {text} as {str(value).lower()}: write "
                f"{str(value).lower()}, or quote it ('{text}') for the text")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if _OCTAL.fullmatch(text):
            return f"YAML 1.1 reads {text} as the octal number {value}: quote it ('{text}')"
        if _BASE60.fullmatch(text):
            return (f"YAML 1.1 reads {text} as the base-60 number {value}: quote it "
                    f"('{text}') for a time or text")
    return None


class _Builder:
    def __init__(self, doc: Document, sizes: dict[int, int]) -> None:
        self.doc = doc
        self.issues: list[Issue] = []
        self.count = 0
        self.sizes = sizes
        self.seen: set[int] = set()
        self.constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path, parent: yaml.Node | None = None) -> JSON:
        size = self.sizes.get(id(node), 1)
        aliased = id(node) in self.seen
        self.seen.add(id(node))
        # An alias's own place is not kept by the composer: use its parent's.
        mark = parent.start_mark if aliased and parent is not None else node.start_mark
        # Only a repeated (aliased) node can make a document larger than its text.
        if aliased and self.count + size > MAX_NODES:
            raise _TooBig(Issue(self.doc.source, mark.line + 1, mark.column + 1,
                                format_path(path), f"document too large: more than "
                                f"{MAX_NODES} values after expanding aliases"))
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(Issue(self.doc.source, mark.line + 1, mark.column + 1,
                                format_path(path), f"document too large: more than "
                                f"{MAX_NODES} values"))
        self.doc.values.setdefault(path, (mark.line + 1, mark.column + 1))
        if node.tag not in _TAGS[type(node)]:
            self.issues.append(self._at(node.start_mark, path, "unsupported YAML tag",
                                        _short_tag(node.tag)))
            self.doc.reported.add(path)
            return None
        if isinstance(node, yaml.ScalarNode):
            if node.style in ("'", '"') and node.start_mark.line == node.end_mark.line:
                self.doc.content_col[path] = mark.column + 2
            elif not node.style and node.start_mark.line == node.end_mark.line:
                self.doc.content_col[path] = mark.column + 1
            else:
                self.doc.content_col[path] = None
            try:
                value = self.constructor.construct_object(node)
            except (yaml.constructor.ConstructorError, ValueError) as exc:
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                self.issues.append(self._at(node.start_mark, path, f"invalid value: {problem}",
                                            node.value))
                self.doc.reported.add(path)
                return None
            if not node.style:
                surprise = yaml11_surprise(node.value, value)
                if surprise is not None:
                    self.issues.append(Issue(
                        self.doc.source, mark.line + 1, mark.column + 1, format_path(path),
                        surprise, show_value(node.value), "warning"))
            if hasattr(value, "isoformat"):  # dates/timestamps are not JSON
                return str(node.value)
            if isinstance(value, bytes):
                return node.value
            return value
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i), node) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, JSON] = {}
            for key_node, value_node in node.value:
                key_mark = key_node.start_mark
                if not isinstance(key_node, yaml.ScalarNode):
                    self.issues.append(
                        self._at(key_mark, path, "keys must be plain strings", None)
                    )
                    continue
                key = str(key_node.value)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.issues.append(
                        self._at(key_mark, path, "YAML merge keys (<<) are not supported", key)
                    )
                    continue
                if key in result:
                    self.issues.append(
                        self._at(key_mark, (*path, key), f"duplicate key {key!r}", key)
                    )
                    continue
                self.doc.keys[(*path, key)] = (key_mark.line + 1, key_mark.column + 1)
                result[key] = self.build(value_node, (*path, key), node)
            return result
        raise AssertionError("the composer yields only scalars, sequences and mappings")

    def _at(self, mark: yaml.Mark, path: Path, message: str, value: object) -> Issue:
        shown = None if value is None else show_value(value)
        return Issue(self.doc.source, mark.line + 1, mark.column + 1, format_path(path),
                     message, shown)


class _TooBig(Exception):
    def __init__(self, issue: Issue | None = None) -> None:
        super().__init__()
        self.issue = issue


def load_document(text: str, source: str) -> tuple[Document | None, list[Issue]]:
    """Parse one YAML document. Returns (document, issues); document is None when
    the text is not YAML at all (the issues then say where and why)."""
    doc = Document(source, None)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        return None, [Issue(source, *_mark(exc.problem_mark or exc.context_mark), "",
                            f"YAML syntax error: {_yaml_message(exc)}")]
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        return None, [Issue(source, line, col, "", f"YAML error: unacceptable character "
                            f"#x{exc.character:04x}: {exc.reason}")]
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, [Issue(source, 1, 1, "", f"YAML error: {first}")]
    if node is None:
        doc.value = None
        return doc, []
    try:
        builder = _Builder(doc, _sizes(node))
        doc.value = builder.build(node, ())
    except _TooBig as exc:
        if exc.issue is None:
            return None, []
        return None, [Issue(source, exc.issue.line, exc.issue.col, exc.issue.path,
                            exc.issue.message)]
    return doc, builder.issues


def _mark(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark else (1, 1)


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem, context = exc.problem, exc.context
    if not problem:
        return context or "invalid YAML"
    if not context:
        return problem
    if context.startswith("while") and exc.context_mark is not None:
        line, col = _mark(exc.context_mark)
        return f"{problem} {context} started at line {line}, column {col}"
    return f"{context} {problem}"
