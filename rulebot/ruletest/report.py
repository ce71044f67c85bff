"""`rulebot test FILE...`: run rule test files and report, as text, JSON or JUnit XML.

Imports: ruletest, rules, model, model_json, stdlib, click. The lead registers the command with
`main.add_command(test)`. Exit codes: 0 every case passed, 1 a case failed, a
test file is invalid, or (with --require-coverage) a rule was never matched,
2 usage.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import click

from rulebot.engine.render import decision_json
from rulebot.model import JSON
from rulebot.rules.loader import LoadResult, Rule, check_rules
from rulebot.ruletest.cases import CaseResult, Coverage, FileResult, coverage, load_test_file

TEST_SUFFIXES = (".test.yaml", ".test.yml")


def _expand(paths: Sequence[str]) -> list[Path]:
    """Files as given; a directory contributes its *.test.yaml/*.test.yml files in
    lexical order (so rule files may sit beside them)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.name.endswith(TEST_SUFFIXES)
                              and f.is_file() and not f.name.startswith(".")))
        else:
            out.append(p)
    return out


def run_paths(paths: Sequence[str]) -> list[FileResult]:
    """Run every test file; a rule set shared by several files is loaded once."""
    cache: dict[str, LoadResult] = {}

    def load(rules: str) -> LoadResult:
        key = str(Path(rules).resolve())
        if key not in cache:
            cache[key] = check_rules([rules])
        return cache[key]

    return [load_test_file(p, load) for p in _expand(paths)]


def totals(results: Sequence[FileResult]) -> tuple[int, int, int]:
    """(passed cases, failed cases, invalid test files)."""
    passed = sum(c.passed for r in results for c in r.cases)
    failed = sum(not c.passed for r in results for c in r.cases)
    return passed, failed, sum(bool(r.issues) for r in results)


def _where(rule: Rule) -> str:
    return f"{rule.name} ({rule.file}:{rule.line})"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def failure_text(result: CaseResult) -> str:
    """The readable explanation of a failed case: each expectation, message and diff."""
    parts = []
    for f in result.failures:
        parts.append(f"  {f.check}: {f.message}")
        parts.append(_indent(f.diff()))
    return "\n".join(parts)


def text_report(results: Sequence[FileResult], cover: Sequence[Coverage]) -> list[str]:
    lines: list[str] = []
    for r in results:
        if r.issues:
            lines.append(f"INVALID {r.source}")
            lines.extend("  " + issue.format() for issue in r.issues)
            continue
        version = r.ruleset.version if r.ruleset else "?"
        lines.append(f"{r.source}: rule set {r.rules} (version {version}), "
                     f"{len(r.cases)} case(s)")
        for c in r.cases:
            if c.passed:
                lines.append(f"PASS {c.case.name}")
                continue
            lines.append(f"FAIL {c.case.name}")
            lines.append(f"  at {r.source}:{c.case.line}")
            lines.append(failure_text(c))
    for cov in cover:
        covered = cov.total - len(cov.uncovered)
        lines.append(f"coverage: {cov.rules}: {covered}/{cov.total} rules matched")
        if cov.uncovered:
            lines.append("uncovered: " + ", ".join(_where(rule) for rule in cov.uncovered))
    return lines


def json_report(results: Sequence[FileResult], cover: Sequence[Coverage]) -> dict[str, JSON]:
    files = []
    for r in results:
        files.append({
            "file": r.source,
            "rules": r.rules,
            "version": r.ruleset.version if r.ruleset else None,
            "issues": [i.to_json() for i in r.issues],
            "cases": [{
                "name": c.case.name,
                "line": c.case.line,
                "passed": c.passed,
                "failures": [{"check": f.check, "message": f.message, "expected": f.expected,
                              "got": f.got, "diff": f.diff()} for f in c.failures],
                "decision": decision_json(c.decision),
            } for c in r.cases],
        })
    passed, failed, invalid = totals(results)
    return {
        "files": files,
        "coverage": [{"rules": c.rules, "total": c.total,
                      "uncovered": [{"name": r.name, "file": r.file, "line": r.line}
                                    for r in c.uncovered]} for c in cover],
        "passed": passed,
        "failed": failed,
        "invalid": invalid,
    }


# Characters XML 1.0 cannot carry (a diff may quote any event text).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def junit_xml(results: Sequence[FileResult], cover: Sequence[Coverage],
              require_coverage: bool = False) -> str:
    """JUnit XML: a testsuite per test file, a testcase per case; an invalid file is one
    testcase with an <error>; with require_coverage, a `coverage` suite per rule set."""
    root = ET.Element("testsuites", name="rulebot test")
    totals = {"tests": 0, "failures": 0, "errors": 0}

    def suite(name: str, file: str, cases: list[ET.Element]) -> None:
        counts = {"tests": len(cases),
                  "failures": sum(c.find("failure") is not None for c in cases),
                  "errors": sum(c.find("error") is not None for c in cases)}
        el = ET.SubElement(root, "testsuite", {"name": name, "file": file,
                                               **{k: str(v) for k, v in counts.items()}})
        el.extend(cases)
        for k, v in counts.items():
            totals[k] += v

    for r in results:
        cases = []
        if r.issues:
            case = ET.Element("testcase", name="(load)", classname=r.source, file=r.source)
            text = "\n".join(i.format() for i in r.issues)
            ET.SubElement(case, "error", message=_xml_text(r.issues[0].format()),
                          type="invalid").text = _xml_text(text)
            cases.append(case)
        for c in r.cases:
            case = ET.Element("testcase", name=_xml_text(c.case.name), classname=r.source,
                              file=r.source, line=str(c.case.line))
            if not c.passed:
                text = _xml_text(failure_text(c))
                first = c.failures[0]
                ET.SubElement(case, "failure", message=_xml_text(f"{first.check}: "
                                                                 f"{first.message}"),
                              type="expectation").text = text
            cases.append(case)
        suite(r.source, r.source, cases)
    if require_coverage:
        for cov in cover:
            case = ET.Element("testcase", name=f"coverage of {cov.rules}", classname="coverage")
            if cov.uncovered:
                names = ", ".join(_where(rule) for rule in cov.uncovered)
                ET.SubElement(case, "failure", message=f"uncovered: {names}",
                              type="coverage").text = names
            suite(f"coverage {cov.rules}", cov.rules, [case])
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


@click.command(name="test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: PASS/FAIL lines with diffs; json: one document.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="Also write JUnit XML here (a testsuite per file, a testcase per case).")
@click.option("--require-coverage", is_flag=True,
              help="Fail when a rule of a rule set under test was matched by no case.")
def test(paths: tuple[str, ...], fmt: str, junit_path: str | None,
         require_coverage: bool) -> None:
    """Run rule test files against their rule sets (a directory: its *.test.yaml files).

    Prints PASS/FAIL per case with a diff of expected and got, the rules no
    case matched, and `N passed, M failed`. Exits 0 when everything passed,
    1 on a failure, an invalid test file or (--require-coverage) an uncovered
    rule, 2 on usage errors."""
    results = run_paths(paths)
    if not results:
        raise click.UsageError("no *.test.yaml or *.test.yml files in the given directories")
    cover = coverage(results)
    passed, failed, invalid = totals(results)
    uncovered = sum(len(c.uncovered) for c in cover)
    if junit_path:
        try:
            Path(junit_path).write_text(junit_xml(results, cover, require_coverage),
                                        encoding="utf-8")
        except OSError as exc:
            raise click.UsageError(f"cannot write {junit_path}: {exc}") from exc
    if fmt == "json":
        click.echo(json.dumps(json_report(results, cover), indent=2, ensure_ascii=False))
    else:
        for line in text_report(results, cover):
            click.echo(line)
        if invalid:
            click.echo(f"invalid: {invalid} test file(s) (each counted as one failure)")
        if require_coverage and uncovered:
            click.echo(f"coverage required: {uncovered} rule(s) matched by no case")
        click.echo(f"{passed} passed, {failed + invalid} failed")
    sys.exit(1 if failed or invalid or (require_coverage and uncovered) else 0)
