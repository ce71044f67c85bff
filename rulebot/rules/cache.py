"""The loader's cache: what a load can take from the load before it, by content.

It reads YAML (through load.yamldoc) for a file it has not seen; otherwise
memory only. rules.loader uses one per load; the daemon keeps one across
reloads (rules.loader.check_rules(..., cache)).
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Callable
from dataclasses import astuple

from rulebot.load.schema import schema_issues
from rulebot.load.yamldoc import Document, load_document
from rulebot.model import Issue
from rulebot.rules.expr import Expr, ExprProblem, PartTable


class LoadCache:
    """What a load can take from the load before it, by content: a file's parsed,
    schema-checked document (by the hash of its text), compiled expressions (by
    their text and the names they can refer to) and their compiled `&&`-parts
    (by their syntax trees' digests). The daemon keeps one for its
    reloads: a reload recompiles only what changed. Entries live one load: what
    the last load did not use is dropped, so the cache never outgrows a rule set.
    Not for use by two loads at once."""

    def __init__(self) -> None:
        # Documents are kept marshalled (Document.pack): as objects, their
        # positions took 6 kB a rule (60 MB for 10,000 rules); marshalled, a
        # tenth of that, and unmarshalling is quick C.
        self._docs: dict[tuple[str, bytes], bytes] = {}
        self._exprs: dict[tuple[str, str | None, bytes], Compiled] = {}
        self._next_docs: dict[tuple[str, bytes], bytes] = {}
        self._next_exprs: dict[tuple[str, str | None, bytes], Compiled] = {}
        self.hits = self.misses = 0  # expressions, for tests and the bench
        self.parts = PartTable()  # expressions' `&&`-parts, shared by content

    def document(self, source: str, text: str
                 ) -> tuple[Document | None, list[Issue]]:
        key = (source, hashlib.sha256(text.encode()).digest())
        packed = self._next_docs.get(key) or self._docs.get(key)
        if packed is not None:
            self._next_docs[key] = packed
            return _unpack(source, packed)
        # The document is used as the cache gives it back: its objects made
        # together, not among the parser's, which would pin that memory.
        self._next_docs[key] = packed = _pack(*_read_document(source, text))
        return _unpack(source, packed)

    def expr(self, key: tuple[str, str | None, bytes],
             compile_: Callable[[], Compiled]) -> Compiled:
        found = self._next_exprs.get(key) or self._exprs.get(key)
        if found is None:
            self.misses += 1
            found = compile_()
        else:
            self.hits += 1
            if found[0] is not None:
                self.parts.keep(found[0])
        self._next_exprs[key] = found
        return found

    def done(self) -> None:
        """End of one load: keep what it used, drop the rest."""
        self._docs, self._next_docs = self._next_docs, {}
        self._exprs, self._next_exprs = self._next_exprs, {}
        self.parts = PartTable(self.parts.entries)


#: A compiled expression: the Expr (None on problems), its problems, the lists it names.
Compiled = tuple[Expr | None, list[ExprProblem], frozenset[str]]


def _pack(doc: Document | None, issues: list[Issue]) -> bytes:
    return marshal.dumps((None if doc is None else doc.pack(), [astuple(i) for i in issues]))


def _unpack(source: str, packed: bytes) -> tuple[Document | None, list[Issue]]:
    doc, fields = marshal.loads(packed)
    issues = [Issue(*f) for f in fields]
    return (None if doc is None else Document.unpack(source, doc)), issues


def _read_document(source: str, text: str) -> tuple[Document | None, list[Issue]]:
    """A rule file parsed and checked against the rules schema."""
    doc, issues = load_document(text, source)
    if doc is None:
        return None, issues
    if doc.value is None:  # an empty file: say what is missing, not "null"
        doc.value = {}
    return doc, [*issues, *schema_issues(doc, "rules")]
