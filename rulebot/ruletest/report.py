"""Rule test reports: run test files (`run_paths`) and report the results as
text, JSON or JUnit XML. The command itself is rulebot.cli.test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

from rulebot.engine.render import decision_json
from rulebot.model import JSON
from rulebot.rules.loader import LoadResult, check_rules
from rulebot.rules.ruleset import Rule
from rulebot.ruletest.cases import CaseResult, Coverage, FileResult, load_test_file
from rulebot.wire.encode import xml_safe

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


def run_paths(paths: Sequence[str], clock: Callable[[], float] | None = None
              ) -> list[FileResult]:
    """Run every test file; a rule set shared by several files is loaded once.
    `clock`: where a file without defaults.now starts its clock (default: time.time)."""
    cache: dict[str, LoadResult] = {}

    def load(rules: str) -> LoadResult:
        key = str(Path(rules).resolve())
        if key not in cache:
            cache[key] = check_rules([rules])
        return cache[key]

    return [load_test_file(p, load, clock) for p in _expand(paths)]


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


def _xml_text(text: str) -> str:
    # A diff may quote any event text, even characters XML 1.0 cannot carry.
    return xml_safe(text)


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
