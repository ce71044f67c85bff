"""`make fuzz`: the decoder and the rule loader against 1,000,000 generated cases.

Usage: python scripts/fuzz.py [--cases N]  (default 1,000,000: 900k events, 100k rule
files). Prints cases run and failures; exits 1 on the first failure, with the input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from targets import check_decoder, check_loader, json_texts, rule_texts


def run(name: str, strategy: object, check: object, cases: int) -> None:
    started = time.perf_counter()

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)  # type: ignore[arg-type]
    def target(value: str) -> None:
        check(value)  # type: ignore[operator]

    target()
    print(f"{name}: {cases:,} cases, 0 failures, {time.perf_counter() - started:.0f} s",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1_000_000)
    args = parser.parse_args()
    run("event decoder", json_texts, check_decoder, args.cases * 9 // 10)
    run("rule loader", rule_texts, check_loader, args.cases // 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
