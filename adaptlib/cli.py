"""Command line: ``adaptlib compare``, ``adaptlib study``, ``adaptlib download``, ``adaptlib list``.

Errors a user can fix (a bad option, a missing data file, a diverged run) print one line,
``adaptlib: error: ...``, and exit with a non-zero status: 2 for bad input, 1 for a run
that diverged.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .compare import DEFAULT_METHODS, JOURNAL_FILE, CompareConfig, check_output_folder, compare, default_output
from .datasets.benchmarks import BENCHMARKS
from .methods import METHODS

_KWARGS_EXAMPLE = '{"dann": {"trade_off": 0.5}}'


def _csv(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _method_kwargs(value: str) -> Dict[str, Any]:
    """``--method-kwargs``: a JSON object of objects (checked against the methods later)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos + 1}) in {value!r}; "
                                         f"expected e.g. {_KWARGS_EXAMPLE}") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise argparse.ArgumentTypeError(f"expected a JSON object of method name -> object of hyper-parameters, "
                                         f"e.g. {_KWARGS_EXAMPLE}, got {value!r}")
    return parsed


def _json_object(value: str, what: str, example: str) -> Dict[str, Any]:
    """Parse a JSON object option; ``what`` and ``example`` word the error."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg} at character {e.pos + 1}) in {value!r}; "
                                         f"expected e.g. {example}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of {what}, e.g. {example}, got {value!r}")
    return parsed


def _augment(value: str) -> Dict[str, Any]:
    """``--augment``: a JSON object of RandomAffine arguments, ``{}`` for none (checked before any run)."""
    return _json_object(value, "augmentation arguments ('{}' for none)",
                        "'{\"degrees\": 10, \"translate\": 0.1, \"scale\": [0.9, 1.1]}'")


def _load_options(value: str) -> Dict[str, Any]:
    """``--load-options``: a JSON object of loader options (checked by the loader before any run)."""
    return _json_object(value, "loader options", "'{\"max_length\": 128}'")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adaptlib")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from . import __version__

        return __version__


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="where runs train: cpu (default), cuda or cuda:<index>; refused at once if absent")
    p.add_argument("--precision", choices=("32", "bf16", "fp16"), default="32",
                   help="training precision: 32 (default), bf16 or fp16 mixed precision (autocast; fp16 scales "
                        "the loss)")


def _benchmark_name(args: argparse.Namespace) -> str:
    """The benchmark of ``adaptlib compare``: its positional name, or the spec of ``--data-dir``."""
    from .datasets.folders import folder_spec

    if args.data_dir is not None:
        if args.benchmark is not None:
            raise ValueError(f"give either a benchmark name ({args.benchmark!r}) or --data-dir, not both")
        return folder_spec(args.data_dir, format=args.format, label_column=args.label_column,
                           image_size=args.image_size, image_mode=args.image_mode, standardize=args.standardize)
    if args.benchmark is None:
        raise ValueError("name a benchmark (adaptlib list shows them) or give --data-dir with your own domains")
    return args.benchmark


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptlib", description="Domain adaptation for PyTorch.")
    p.add_argument("--version", action="version", version=f"adaptlib {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "compare", help="train methods on every task of a benchmark and print the accuracy table",
        description="Train methods on every task of a benchmark and print the accuracy table. Results go to "
                    "--output (default results/<benchmark>): table.md (percent), results.csv and results.json "
                    "(accuracy as a fraction in [0, 1]), and runs.jsonl, one line per run as it finishes. A "
                    "folder that already holds results is refused unless --overwrite (start again) or --resume "
                    "(keep its finished runs, train the missing ones) is given.")
    c.add_argument("benchmark", nargs="?", default=None,
                   help=f"{', '.join(BENCHMARKS)}, or folder:<path> for your own domains (or give --data-dir)")
    c.add_argument("--methods", type=_csv, default=list(DEFAULT_METHODS),
                   help=f"comma-separated methods (default: {','.join(DEFAULT_METHODS)}; known: {','.join(sorted(METHODS))}; "
                        "join methods with '+' to train them as one composition, e.g. dann+mcc)")
    c.add_argument("--tasks", type=_csv, default=None,
                   help="comma-separated tasks, quoted for the shell's sake, e.g. 'C->A,A->W' (default: all)")
    c.add_argument("--seeds", type=int, default=3, help="number of seeds per task and method (default: 3)")
    c.add_argument("--steps", type=int, default=None, help="training steps per run (default: per benchmark)")
    c.add_argument("--batch-size", type=int, default=None, help="batch size (default: per benchmark)")
    c.add_argument("--lr", type=float, default=None, help="base learning rate (default: per benchmark)")
    c.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="optimizer (default: per benchmark; see docs/recipe.md)")
    c.add_argument("--lr-schedule", choices=("inv", "cosine", "constant"), default=None,
                   help="learning-rate schedule (default: per benchmark)")
    c.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: per benchmark)")
    c.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing of the source cross-entropy, in [0, 1) (default: per benchmark)")
    c.add_argument("--load-options", type=_load_options, default=None,
                   help="JSON loader options replacing the benchmark's, e.g. '{\"max_length\": 256}' for the text "
                        "benchmarks (default: per benchmark)")
    c.add_argument("--augment", type=_augment, default=None,
                   help="JSON random affine augmentation of training images for image backbones, e.g. "
                        "'{\"degrees\": 10, \"translate\": 0.1, \"scale\": [0.9, 1.1]}', '{}' for none "
                        "(default: per benchmark; docs/recipe.md)")
    c.add_argument("--backbone-lr-multiplier", type=float, default=None,
                   help="learning rate of the backbone relative to --lr (default: per benchmark; 0.03 for "
                        "amazon-reviews-text-finetune's encoder)")
    c.add_argument("--shots", type=int, default=3, help="labelled target samples per class for fine-tuning (default: 3)")
    c.add_argument("--method-kwargs", type=_method_kwargs, default={},
                   help=f"JSON hyper-parameters per method of --methods, e.g. '{_KWARGS_EXAMPLE}' "
                        "(checked before any run); they override, name by name, the benchmark's own method "
                        "defaults chosen by DEV (docs/methods.md), e.g. '{\"dann\": {\"trade_off\": 1}}' trains "
                        "the paper's DANN weight on office-caltech10-surf")
    c.add_argument("--output", type=Path, default=None, help="output folder (default: results/<benchmark>)")
    c.add_argument("--overwrite", action="store_true",
                   help="replace the results already in the output folder (default: refuse)")
    c.add_argument("--resume", action="store_true",
                   help="continue the comparison in the output folder: keep the runs its runs.jsonl holds "
                        "(trained with the same settings; runs are deterministic), train only the missing "
                        "(task, method, seed) runs, e.g. after an interruption or with more --seeds or "
                        "--methods, then write the tables of all of them")
    c.add_argument("--root", default=None, help="data folder (default: $ADAPTLIB_DATA, else ~/.cache/adaptlib)")
    c.add_argument("--download", action="store_true", help="download missing data files from the pinned mirrors")
    c.add_argument("--workers", type=int, default=0, help="parallel processes (default: number of CPUs, at most 8)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_options(c)
    u = c.add_argument_group("your own domains (instead of a benchmark name; tasks: all ordered pairs of domains)")
    u.add_argument("--data-dir", type=Path, default=None,
                   help="folder of domains: <domain>_X.npy + <domain>_y.npy pairs, <domain>.csv files, or image "
                        "folders <domain>/<class>/<image>")
    u.add_argument("--format", choices=("auto", "npy", "csv", "images"), default="auto",
                   help="layout of --data-dir (default: auto, from the files found)")
    u.add_argument("--label-column", default="label", help="label column of CSV files (default: label)")
    u.add_argument("--image-size", type=int, default=None,
                   help="resize images to this many pixels square (default: keep, all of one size)")
    u.add_argument("--image-mode", choices=("RGB", "L"), default="RGB", help="image channels (default: RGB)")
    u.add_argument("--standardize", choices=("none", "domain"), default="none",
                   help="z-score each feature within each domain (default: none)")

    d = sub.add_parser("download", help="download and verify a benchmark's data files")
    d.add_argument("benchmark")
    d.add_argument("--root", default=None, help="data folder (default: $ADAPTLIB_DATA, else ~/.cache/adaptlib)")

    sub.add_parser("list", help="list benchmarks, their tasks, and methods")

    s = sub.add_parser("study", help="comparison studies: hyper-parameter search, validators, records, reports")
    ssub = s.add_subparsers(dest="study_command", required=True)
    sr = ssub.add_parser("run", help="run (or resume) every run of a study file not yet recorded")
    sr.add_argument("study", type=Path, help="study file (TOML), e.g. studies/office-caltech10-surf.toml")
    sr.add_argument("--workers", type=int, default=0,
                    help="local processes, one torch thread each (default: number of CPUs, at most 8; 1: in-process)")
    sr.add_argument("--scheduler", default=None,
                    help="Dask scheduler address (e.g. tcp://host:8786); runs then execute on that cluster")
    sr.add_argument("--root", default=None, help="data folder (default: the file's root, $ADAPTLIB_DATA, the cache)")
    sr.add_argument("--database", type=Path, default=None, help="records file (default: the file's database)")
    sr.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_options(sr)
    st = ssub.add_parser("status", help="runs done / total per method and task")
    st.add_argument("study", type=Path)
    st.add_argument("--database", type=Path, default=None, help="records file (default: the file's database)")
    sp = ssub.add_parser("report", help="tables and figures from a study's records")
    sp.add_argument("study", type=Path)
    sp.add_argument("--out", type=Path, default=None,
                    help="output folder (default: the records file's folder/report)")
    sp.add_argument("--database", type=Path, default=None, help="records file (default: the file's database)")
    return p


def _study(args: argparse.Namespace) -> int:
    from .studies import RecordStore, load_study, run_study, study_status

    study = load_study(args.study, root=getattr(args, "root", None), database=args.database)
    if args.study_command == "run":
        summary = run_study(study, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet,
                            device=args.device, precision=args.precision)
        print(f"study {study.name}: {summary.ran} runs recorded in {summary.seconds:.0f} s "
              f"({summary.already_done} already done, {summary.diverged} diverged, {summary.retried} resubmitted); "
              f"records: {study.database}")
        return 0
    if args.study_command == "status":
        status = study_status(study)
        print(f"study {study.name} ({study.benchmark}): {status['done']}/{status['total']} runs done, "
              f"{status['diverged']} diverged, {status['launches']} launch(es); records: {study.database}")
        width = max(len(m) for m in status["methods"])
        for method, row in status["methods"].items():
            secs = f"{row['mean_seconds']:.1f} s/run" if row["mean_seconds"] is not None else "-"
            print(f"  {method:<{width}}  {row['done']:>5}/{row['total']:<5} diverged {row['diverged']:<3} {secs}")
        print("  tasks: " + ", ".join(f"{t} {r['done']}/{r['total']}" for t, r in status["tasks"].items()))
        return 0
    from .studies.report import write_report

    frame = RecordStore(study.database).frame()
    if frame.empty:
        print(f"adaptlib: error: no finished run in {study.database} yet", file=sys.stderr)
        return 2
    status = study_status(study)
    methods = [m for m in study.methods if m in set(frame["method"])]
    if status["done"] < status["total"]:  # a report of a study still running (or stopped)
        missing = [m for m in study.methods if m not in methods]
        print(f"adaptlib: warning: partial report, {status['done']}/{status['total']} runs done"
              + (f"; no record yet for {missing}" if missing else ""), file=sys.stderr)
    for line in RecordStore(study.database).stale_configurations(study):  # reported as recorded, said so
        print(f"adaptlib: warning: {line} (the report shows the recorded runs; `study run` refuses to add to "
              "them)", file=sys.stderr)
    out = args.out or study.database.parent / "report"
    paths = write_report(frame, out, primary=study.selection, validators=list(study.validators),
                         methods=methods)
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


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
        if args.command == "study":
            return _study(args)
        if args.command == "download":
            for path in datasets.download(args.benchmark, root=args.root):
                print(path)
            return 0
        benchmark = _benchmark_name(args)
        out = args.output or default_output(benchmark)
        if args.resume and args.overwrite:
            raise ValueError("--resume keeps the finished runs of the output folder and --overwrite discards "
                             "them: give one of them")
        check_output_folder(out, overwrite=args.overwrite, resume=args.resume)  # before hours of training
        config = CompareConfig(benchmark=benchmark, methods=tuple(args.methods),
                               tasks=tuple(args.tasks) if args.tasks else None, seeds=args.seeds, steps=args.steps,
                               batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                               lr_schedule=args.lr_schedule, weight_decay=args.weight_decay,
                               label_smoothing=args.label_smoothing, load_options=args.load_options,
                               augment=args.augment, backbone_lr_multiplier=args.backbone_lr_multiplier,
                               shots=args.shots, root=args.root,
                               download=args.download, workers=args.workers, method_kwargs=args.method_kwargs,
                               device=args.device, precision=args.precision)
        result = compare(config, progress=not args.quiet, journal=Path(out) / JOURNAL_FILE, resume=args.resume)
        paths = result.save(out, overwrite=True)  # the folder was checked above, before training
    except FloatingPointError as e:  # a diverged run (compare.RunDiverged): one line, not a traceback
        print(f"adaptlib: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, OSError) as e:
        print(f"adaptlib: error: {e}", file=sys.stderr)
        return 2
    reused = f" ({result.reused} kept from {JOURNAL_FILE}, not trained again)" if result.reused else ""
    print(f"\n{benchmark}: {len(result.records)} runs in {result.seconds:.0f} s{reused}\n")
    print(result.markdown())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
