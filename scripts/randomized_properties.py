#!/usr/bin/env python
"""Run the property tests with hypothesis randomized: fresh seeds, many examples per test.

The suite runs hypothesis derandomized (the same examples on every machine, see
tests/conftest.py). A property must hold for *any* example, so before an issue about the
losses is resolved this script runs every property test with the ``randomized`` profile
(``derandomize=False``), ``--examples`` examples per test and one pytest run per seed.

Usage::

    ADAPTLIB_DATA=../shared/data python scripts/randomized_properties.py --examples 200 --seeds 5

Prints one line per seed (the seed, passed/failed counts, seconds) and exits with status 1
if any run failed; a failing run's pytest output (with hypothesis's falsifying example and
the seed to reproduce it) is printed in full, and the last line names the failed seeds and the
command that reruns them.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROPERTY_TESTS = ["tests/test_losses_properties.py", "tests/test_augment_properties.py"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200, help="examples per property test (default 200)")
    parser.add_argument("--seeds", type=int, default=3, help="number of randomized runs (default 3)")
    parser.add_argument("--seed", type=int, action="append", default=None,
                        help="run this hypothesis seed (repeatable; overrides --seeds)")
    args = parser.parse_args(argv)
    if args.examples < 1 or args.seeds < 1:
        parser.error("--examples and --seeds must be positive")
    seeds = args.seed or [random.SystemRandom().randrange(2**32) for _ in range(args.seeds)]
    env = dict(os.environ, ADAPTLIB_HYPOTHESIS_EXAMPLES=str(args.examples))
    failed = []
    for seed in seeds:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PROPERTY_TESTS,
               "--hypothesis-profile=randomized", f"--hypothesis-seed={seed}"]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"seed {seed}: {summary} [{time.perf_counter() - start:.0f} s]", flush=True)
        if proc.returncode != 0:
            failed.append(seed)
            print(proc.stdout[-20000:], proc.stderr[-5000:], sep="\n", flush=True)
    print(f"{len(seeds) - len(failed)}/{len(seeds)} randomized runs passed, {args.examples} examples per test")
    if failed:
        # Last, so that the tail of a long log still says how to rerun what failed.
        again = " ".join(f"--seed {s}" for s in failed)
        print(f"failed seeds: {', '.join(map(str, failed))}; rerun them with: "
              f"python scripts/randomized_properties.py --examples {args.examples} {again}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
