"""Command line: ``adaptlib compare``, ``adaptlib download``, ``adaptlib list``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .compare import DEFAULT_METHODS, CompareConfig, compare
from .methods import METHODS


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptlib", description="Domain adaptation for PyTorch.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="train methods on every task of a benchmark and print the accuracy table")
    c.add_argument("benchmark", help="office-caltech10-surf, mnist-usps-jda or amazon-reviews")
    c.add_argument("--methods", type=_csv, default=list(DEFAULT_METHODS),
                   help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)}; known: {','.join(sorted(METHODS))})")
    c.add_argument("--tasks", type=_csv, default=None, help="comma-separated tasks, e.g. 'C->A,A->W' (default: all)")
    c.add_argument("--seeds", type=int, default=3, help="number of seeds per task and method (default: 3)")
    c.add_argument("--steps", type=int, default=None, help="training steps per run (default: per benchmark)")
    c.add_argument("--batch-size", type=int, default=None, help="batch size (default: per benchmark)")
    c.add_argument("--lr", type=float, default=None, help="base learning rate (default: per benchmark)")
    c.add_argument("--shots", type=int, default=3, help="labelled target samples per class for fine-tuning (default: 3)")
    c.add_argument("--method-kwargs", type=json.loads, default={},
                   help='JSON hyper-parameters per method, e.g. \'{"dann": {"trade_off": 0.5}}\'')
    c.add_argument("--output", type=Path, default=None, help="output folder (default: results/<benchmark>)")
    c.add_argument("--root", default=None, help="data folder (default: $ADAPTLIB_DATA, else ~/.cache/adaptlib)")
    c.add_argument("--download", action="store_true", help="download missing data files from the pinned mirrors")
    c.add_argument("--workers", type=int, default=0, help="parallel processes (default: number of CPUs, at most 8)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("download", help="download and verify a benchmark's data files")
    d.add_argument("benchmark")
    d.add_argument("--root", default=None, help="data folder (default: $ADAPTLIB_DATA, else ~/.cache/adaptlib)")

    sub.add_parser("list", help="list benchmarks, their tasks, and methods")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``adaptlib`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    from . import datasets

    try:
        if args.command == "list":
            for name, bench in datasets.BENCHMARKS.items():
                print(f"{name}: {', '.join(bench.tasks)}")
            print("methods: " + ", ".join(f"{n}{' (uses target labels)' if c.uses_target_labels else ''}"
                                          for n, c in METHODS.items()))
            return 0
        if args.command == "download":
            for path in datasets.download(args.benchmark, root=args.root):
                print(path)
            return 0
        config = CompareConfig(benchmark=args.benchmark, methods=tuple(args.methods),
                               tasks=tuple(args.tasks) if args.tasks else None, seeds=args.seeds, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, shots=args.shots, root=args.root,
                               download=args.download, workers=args.workers, method_kwargs=args.method_kwargs)
        result = compare(config, progress=not args.quiet)
    except (ValueError, TypeError, OSError) as e:
        print(f"adaptlib: error: {e}", file=sys.stderr)
        return 2
    out = args.output or Path("results") / args.benchmark
    paths = result.save(out)
    print(f"\n{args.benchmark}: {len(result.records)} runs in {result.seconds:.0f} s\n")
    print(result.markdown())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
