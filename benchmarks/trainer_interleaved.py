"""The Trainer against the hand-written loops of ``test_trainer_overhead.py``, rounds interleaved.

pytest-benchmark runs all rounds of one case before the next, so on a shared machine a change
of load between two cases shows up as a ratio. Here each round runs every case once, in turn,
and the medians over rounds are compared: load drift then hits all cases alike. Same cases,
models, data and step counts as ``test_trainer_overhead.py``; prints ms per step.

    python benchmarks/trainer_interleaved.py source-only --rounds 7
    python benchmarks/trainer_interleaved.py dann --rounds 7
    ADAPTLIB_DATA=../shared/data python benchmarks/trainer_interleaved.py surf --rounds 5
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_trainer_overhead as T  # noqa: E402


def cases(which: str):
    default = T.DEFAULT_THREADS
    if which == "surf":
        from adaptlib.datasets import load_office_caltech10_surf

        root = os.environ.get("ADAPTLIB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
        s = load_office_caltech10_surf("amazon", root=root)
        t = load_office_caltech10_surf("webcam", root=root)
        return T.STEPS, {
            "hand-written, 1 thread": (1, lambda: T.hand_written_dann(T._model(), s.x, s.y, t.x)),
            "Trainer, 1 thread": (1, lambda: T.adaptlib_dann(T._model(), s.x, s.y, t.x)),
        }
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(1000, T.TINY_DIM, generator=g)
    ys = (xs[:, 0] + 0.5 * xs[:, 1] > 0).long()
    xt = torch.randn(800, T.TINY_DIM, generator=g) * 1.5 + 0.5
    return T.TINY_STEPS, {
        "hand-written, 1 thread": (1, lambda: T.hand_written_tiny(which, xs, ys, xt)),
        f"hand-written, {default} threads": (default, lambda: T.hand_written_tiny(which, xs, ys, xt)),
        "Trainer, num_threads='auto' (1 thread)": (default, lambda: T.adaptlib_tiny(which, xs, ys, xt)),
        f"Trainer, num_threads=None ({default} threads)":
            (default, lambda: T.adaptlib_tiny(which, xs, ys, xt, num_threads=None)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["source-only", "dann", "surf"])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    steps, todo = cases(args.case)
    times = {name: [] for name in todo}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, (threads, fn) in todo.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["hand-written, 1 thread"])
    for name, v in times.items():
        med = statistics.median(v)
        print(f"{args.case}: {name}: median {med / steps * 1e3:.3f} ms/step (min {min(v) / steps * 1e3:.3f}), "
              f"{med / base:.2f}x the hand-written loop with 1 thread")


if __name__ == "__main__":
    main()
