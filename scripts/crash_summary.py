#!/usr/bin/env python3
"""Summarise the kill -9 runs of `make soak` (tests/integration/test_crash.py with
RULEBOT_CRASH_REPORT set): one row per scenario and garbage-collector setting.

    python scripts/crash_summary.py crash-report.jsonl

Exits 1 when any run lost an event or decided one twice (component mode, which
has no acknowledgements, is reported, not judged).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any


def summarise(lines: list[dict[str, Any]]) -> tuple[list[str], bool]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in lines:
        groups[(r["scenario"], r.get("gc", ""))].append(r)
    rows = ["| scenario | gc | runs | events | kills | lost | second decisions | "
            "duplicates (same ids) | bounced | resumed / new sessions |",
            "|---|---|--:|--:|--:|--:|--:|---|--:|---|"]
    ok = True
    for (scenario, gc), runs in sorted(groups.items()):
        lost = sum(r["lost"] for r in runs)
        second = sum(r["second_decisions"] for r in runs)
        dups = [r["duplicates"] for r in runs]
        resumed = sum(r["sessions"].get("resumed", 0) for r in runs)
        new = sum(r["sessions"].get("new", 0) for r in runs)
        if "component" not in scenario and (lost or second):
            ok = False
        rows.append(f"| {scenario} | {gc} | {len(runs)} | {sum(r['events'] for r in runs):,} | "
                    f"{sum(r['kills'] for r in runs)} | {lost} | {second} | "
                    f"{min(dups):,}-{max(dups):,} | {sum(r.get('bounced', 0) for r in runs)} | "
                    f"{resumed} / {new} |")
    return rows, ok


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        lines = [json.loads(line) for line in fh if line.strip()]
    rows, ok = summarise(lines)
    print("\n".join(rows))
    kills = sum(r["kills"] for r in lines if "component" not in r["scenario"])
    print(f"\n{kills} kills outside component mode; "
          + ("0 lost, 0 decided twice" if ok else "FAILURES above"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
