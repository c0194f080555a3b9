"""Choose a method's default weight without target labels: a grid, a validator, the mean rank over tasks.

Usage (from the repository root)::

    ADAPTLIB_DATA=../shared/data python scripts/select_defaults.py deepjdot alpha 0.01,0.03,0.1,0.3,1 \\
        --also label_weight=alpha --benchmark office-caltech10-surf --validator dev --workers 2

For each value of the grid, the method is trained on every task of the benchmark (one seed)
with the benchmark's shared recipe, exactly as a study's run (``adaptlib.studies.execute_run``:
20 % of each source class held out, the validators scored at the end of training). On each
task the values are ranked by the validator (higher is better; ties share their mean rank);
the chosen default is the value with the best mean rank over the tasks. Target labels are
never used for the choice: the oracle accuracy is recorded beside it, in its own column, to
show what the choice cost, and is written to ``docs/defaults/`` with the rest.

Ties: values whose mean ranks are within 1e-9 are tied. A value is chosen only when it has
the best mean rank alone; when several share it, the validator does not single one out and the
current default (the method's, or the benchmark's own in ``adaptlib.compare.METHOD_DEFAULTS``)
stays, whether or not it is among them. ``--from-runs FILE`` ranks the runs stored
in an earlier result ``.json`` again (e.g. by another ``--validator``) without training. Results
are written as ``<benchmark>-<method>-<param>[-<validator>].md/.json`` (no suffix for DEV).

``--also name=param`` sets another hyper-parameter to the same value as ``param`` (DeepJDOT's
``label_weight`` moves with ``alpha``); ``--fixed name=value`` pins one.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adaptlib.studies import execute_run, parse_study  # noqa: E402
from adaptlib.studies.spec import VALIDATORS  # noqa: E402


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _ranks(scores: List[float]) -> List[float]:
    """Rank 1 = highest score; ties share their mean rank; NaN (diverged) ranks last."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i] != scores[i], -scores[i] if scores[i] == scores[i]
                                                      else 0.0))
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def choose(mean_rank: Dict[str, float], keys: List[str], current: Any) -> Optional[str]:
    """The key (a JSON grid value) with the best (lowest) mean rank, or ``None`` when several share it.

    Mean ranks within 1e-9 of each other are tied. A tie at the top that includes ``current`` (the current
    default, compared as a value: ``1 == 1.0``) returns its key; any other tie returns ``None``:
    the validator does not single out a value, so the current default stays.
    """
    best = min(mean_rank[k] for k in keys)
    tied = [k for k in keys if mean_rank[k] - best <= 1e-9]
    if len(tied) == 1:
        return tied[0]
    return next((k for k in tied if json.loads(k) == current), None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("method")
    p.add_argument("param")
    p.add_argument("values", help="comma-separated grid, e.g. 0.1,0.3,1")
    p.add_argument("--benchmark", default="office-caltech10-surf")
    p.add_argument("--tasks", default="all")
    p.add_argument("--validator", default="dev", choices=VALIDATORS)
    p.add_argument("--also", action="append", default=[], help="name=param: set name to the grid value too")
    p.add_argument("--fixed", action="append", default=[], help="name=value: pin a hyper-parameter")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "docs" / "defaults"))
    p.add_argument("--from-runs", default=None, help="an earlier result .json: rank its runs again, train nothing")
    args = p.parse_args(argv)

    values = [_value(v) for v in args.values.split(",")]
    tasks = "\"all\"" if args.tasks == "all" else json.dumps(args.tasks.split(","))
    study = parse_study(f'name = "defaults-{args.method}"\nbenchmark = "{args.benchmark}"\ntasks = {tasks}\n'
                        f'methods = ["{args.method}"]\nconfigs = 1\nseeds = 1\n')
    fixed = {k: _value(v) for k, v in (f.split("=", 1) for f in args.fixed)}
    also = [a.split("=", 1)[0] for a in args.also]
    specs = []
    for spec in study.runs():
        for value in values:
            hp = {**spec.hparams, **fixed, args.param: value, **{name: value for name in also}}
            specs.append(replace(spec, hparams={**hp, "__value__": value},
                                 checkpoint_every=spec.steps))
    current = study.hparams(args.method, 0).get(args.param)
    if args.from_runs:
        earlier = json.loads(Path(args.from_runs).read_text())
        tasks_run = sorted({r["task"] for r in earlier["runs"]})
        if (earlier["method"], earlier["param"], earlier["benchmark"], earlier["values"], earlier.get("also", []),
                earlier.get("fixed", {}), tasks_run) != (args.method, args.param, args.benchmark, values, also,
                                                         fixed, sorted(study.tasks)):
            p.error(f"--from-runs: {args.from_runs} holds {earlier['method']} {earlier['param']} "
                    f"{earlier['values']} on {earlier['benchmark']} (tasks {tasks_run}, also "
                    f"{earlier.get('also', [])}, fixed {earlier.get('fixed', {})}), not this grid")
        rows, seconds = earlier["runs"], float(earlier["seconds"])
    else:
        start = time.perf_counter()
        with mp.get_context("spawn").Pool(args.workers) as pool:
            rows = pool.map(_run_without_marker, specs, chunksize=1)
        seconds = time.perf_counter() - start

    by_task: Dict[str, Dict[Any, Dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task"], {})[json.dumps(r["value"])] = r
    keys = [json.dumps(v) for v in values]
    mean_rank = {k: 0.0 for k in keys}
    for task, per in by_task.items():
        scores = [float(per[k]["scores"].get(args.validator, float("nan"))) if per[k]["status"] == "ok"
                  else float("nan") for k in keys]
        for k, r in zip(keys, _ranks(scores)):
            mean_rank[k] += r / len(by_task)
    oracle = {k: sum(by_task[t][k]["oracle"] for t in by_task) / len(by_task) for k in keys}
    chosen = choose(mean_rank, keys, current)
    best = min(mean_rank.values())
    tied = [k for k in keys if mean_rank[k] - best <= 1e-9]
    if len(tied) == 1:
        verdict = f"`{args.param} = {chosen}`."
    else:
        verdict = (f"no single value: {', '.join(tied)} share the best mean rank, so the current default "
                   f"`{args.param} = {json.dumps(current)}` stays.")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.benchmark}-{args.method}-{args.param}" + ("" if args.validator == "dev" else f"-{args.validator}")
    lines = [f"| {args.param} | mean rank by {args.validator} (1 = best) | oracle: mean target accuracy (%), "
             "not used for the choice | diverged runs |", "|---|---|---|---|"]
    for k in keys:
        div = sum(by_task[t][k]["status"] != "ok" for t in by_task)
        mark = " **(chosen)**" if k == chosen else ""
        lines.append(f"| {k}{mark} | {mean_rank[k]:.2f} | {100 * oracle[k]:.1f} | {div} |")
    lines += ["", f"{args.method} on {args.benchmark}: {len(by_task)} tasks, 1 seed, the benchmark's shared recipe; "
              f"{args.param} in {values}" + (f", with {', '.join(also)} equal to it" if also else "")
              + (f", fixed {fixed}" if fixed else "") + f". {len(rows)} runs in {seconds:.0f} s.",
              f"Chosen by the mean rank of the `{args.validator}` validator over tasks: {verdict}"]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({
        "method": args.method, "param": args.param, "values": values, "also": also, "fixed": fixed,
        "benchmark": args.benchmark, "validator": args.validator,
        "chosen": json.loads(chosen) if chosen is not None else current, "tied": [json.loads(k) for k in tied],
        "current_default": current,
        "mean_rank": mean_rank, "oracle": oracle, "seconds": seconds,
        "runs": [{k: v for k, v in r.items()} for r in rows]}, indent=1, default=str))
    print("\n".join(lines))
    return 0


def _run_without_marker(spec):
    """Run one spec (its ``__value__`` key marks the grid value and is not passed to the method)."""
    value = spec.hparams["__value__"]
    clean = replace(spec, hparams={k: v for k, v in spec.hparams.items() if k != "__value__"})
    result = execute_run(clean)
    last = result.rows[-1] if result.rows else {}
    return {"task": spec.task, "value": value, "status": result.status, "scores": last.get("scores", {}),
            "oracle": last.get("target_accuracy", float("nan")), "seconds": result.train_seconds}


if __name__ == "__main__":
    sys.exit(main())
