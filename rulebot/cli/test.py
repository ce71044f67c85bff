"""`rulebot test FILE...`: run rule test files and report, as text, JSON or JUnit XML.

Exit codes: 0 every case passed, 1 a case failed, a test file is invalid, or
(with --require-coverage) a rule was never matched, 2 usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from rulebot.cli.lines import NOW_OPTION
from rulebot.ruletest.cases import coverage
from rulebot.ruletest.report import json_report, junit_xml, run_paths, text_report, totals


@click.command(name="test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text: PASS/FAIL lines with diffs; json: one document.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="Also write JUnit XML here (a testsuite per file, a testcase per case).")
@click.option("--require-coverage", is_flag=True,
              help="Fail when a rule of a rule set under test was matched by no case.")
@NOW_OPTION
def test(paths: tuple[str, ...], fmt: str, junit_path: str | None,
         require_coverage: bool, now: float | None) -> None:
    """Run rule test files against their rule sets (a directory: its *.test.yaml files).

    Prints PASS/FAIL per case with a diff of expected and got, the rules no
    case matched, and `N passed, M failed`. Exits 0 when everything passed,
    1 on a failure, an invalid test file or (--require-coverage) an uncovered
    rule, 2 on usage errors."""
    results = run_paths(paths, None if now is None else (lambda: now))
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
