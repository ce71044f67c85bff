"""`make fuzz`: the decoder and the rule loader against 1,000,000 generated cases.

Usage: python scripts/fuzz.py [--cases N] [--only decoder|loader] [--parallel]
(default 1,000,000: 900k events, 100k rule files, each loaded rule set also
evaluated on fixed probe events). Prints cases run and failures; exits 1 on the
first failure, with the input. --parallel runs the two targets in two processes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import check_decoder, check_loader, json_texts, rule_texts

#: Cases between two progress lines of a target.
PROGRESS_EVERY = 50_000


def run(name: str, strategy: object, check: object, cases: int) -> None:
    started = time.perf_counter()
    done = 0

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)  # type: ignore[arg-type]
    def target(value: str) -> None:
        nonlocal done
        check(value)  # type: ignore[operator]
        done += 1
        if done % PROGRESS_EVERY == 0:
            print(f"{name}: {done:,} of {cases:,} cases, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    target()
    print(f"{name}: {cases:,} cases, 0 failures, {time.perf_counter() - started:.0f} s",
          flush=True)


TARGETS = {
    # name: (strategy, check, share of the cases)
    "decoder": ("event decoder", json_texts, check_decoder, 9 / 10),
    "loader": ("rule loader + engine", rule_texts, check_loader, 1 / 10),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1_000_000,
                        help="cases in all (90%% decoder, 10%% rule loader)")
    parser.add_argument("--only", choices=sorted(TARGETS), help="run one target's share")
    parser.add_argument("--parallel", action="store_true",
                        help="run each target in its own process (one per core)")
    args = parser.parse_args()
    if args.parallel:
        root = Path(__file__).resolve().parents[1]
        procs = [subprocess.Popen([sys.executable, "-m", "scripts.fuzz", "--cases",
                                   str(args.cases), "--only", name], cwd=root)
                 for name in TARGETS]
        codes = [p.wait() for p in procs]
        return max(codes)
    for key, (name, strategy, check, share) in TARGETS.items():
        if args.only in (None, key):
            run(name, strategy, check, int(args.cases * share))
    return 0


if __name__ == "__main__":
    sys.exit(main())
