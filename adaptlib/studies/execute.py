"""Running a study: resumable, parallel, on a local process pool or a Dask cluster.

:func:`run_study` lists the study's runs, skips those already in its records, and
executes the rest:

- locally (default) on a pool of ``workers`` spawned processes, one torch thread each
  (``workers=1`` runs in the driver process). A worker that dies (killed, out of memory)
  breaks the pool; the driver records every run that had finished, builds a new pool and
  resubmits the unfinished runs (a run is given up after ``max_attempts`` submissions);
- on a Dask cluster when ``scheduler`` is given: ``dask.distributed.Client(scheduler)``.
  The scheduler re-runs the task of a worker that died (up to its
  ``distributed.scheduler.allowed-failures``, 3 by default); ``retries`` covers exceptions.
  With ``dask-jobqueue`` the cluster can be a Slurm or PBS allocation (``docs/studies.md``).

Only the driver writes the records, one transaction per finished run, so a driver killed
at any point loses only the runs in flight, and the next ``run_study`` resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from ..compare import _init_worker as _init_compare_worker
from ..compare import library_versions
from .records import RecordStore
from .run import RunResult, execute_run, load_task
from .spec import RunSpec, Study

__all__ = ["StudySummary", "run_study", "study_status"]

Runner = Callable[[RunSpec], RunResult]

# Longest runs first keeps every worker busy until the end (measured per-run cost on SURF).
_COST_ORDER = ("sinkhorn", "deepjdot", "dann", "dan", "deep-coral", "finetune", "source-only")


@dataclass
class StudySummary:
    """What one :func:`run_study` call did.

    Attributes:
        total: runs in the study; already_done: recorded before this call; ran: recorded
            by this call; diverged: of those, runs whose loss became NaN/inf;
        retried: submissions repeated after a worker died; seconds: wall time; launch: the
            launch number in the records.
    """

    total: int
    already_done: int
    ran: int
    diverged: int
    retried: int
    seconds: float
    launch: int


def _init_worker() -> None:
    # one torch thread, and no multiprocessing lock for tqdm (see adaptlib.compare._init_worker)
    _init_compare_worker()


def _environment(executor: str, workers: Optional[int], scheduler: Optional[str], device: str = "cpu",
                 precision: str = "32") -> Dict[str, Any]:
    return {"versions": library_versions(), "device": device, "precision": precision, "executor": executor,
            "workers": workers, "scheduler": scheduler}


def _ordered(specs: List[RunSpec]) -> List[RunSpec]:
    rank = {m: i for i, m in enumerate(_COST_ORDER)}
    return sorted(specs, key=lambda s: rank.get(s.method, -1))


def run_study(study: Study, *, workers: Optional[int] = None, scheduler: Union[str, Any, None] = None,
              progress: bool = True, runner: Runner = execute_run, max_attempts: int = 3, device: str = "cpu",
              precision: str = "32") -> StudySummary:
    """Execute every run of ``study`` not yet in its records (``study.database``); return a summary.

    Args:
        study: a :class:`~adaptlib.studies.spec.Study` (:func:`~adaptlib.studies.spec.load_study`).
        workers: local processes (default: CPU count, at most 8); ``1`` runs in this process.
            Ignored with ``scheduler``.
        scheduler: a Dask scheduler address (``"tcp://host:8786"``) or a
            ``dask.distributed.Client``; ``None`` for the local pool.
        progress: show a tqdm progress bar.
        runner: the function executing one run (default :func:`~adaptlib.studies.run.execute_run`);
            must be picklable (a module-level function).
        max_attempts: submissions of one run before the study stops (local pool: a run in
            flight when a worker died is resubmitted; Dask: ``retries = max_attempts - 1``).
        device, precision: where and in which precision the runs of this launch train
            (:class:`~adaptlib.Trainer`'s ``device`` and ``precision``); recorded in the launch's
            environment, not part of the study's identity (a study may continue on another device).

    Raises:
        StudyError: the records hold the study with other result-defining settings.
        ValueError: ``device`` is not available here, or ``precision`` is unknown or not supported
            on it (before any run).
        DatasetNotFoundError: a task's data files are missing (checked before any training on
            the local executors; on Dask, by the first run of the task).
        RuntimeError: a run was lost ``max_attempts`` times (its key is named).
        Exception: anything a run raises other than divergence stops the study; the runs
            recorded so far stay.
    """
    from tqdm.auto import tqdm

    from .._precision import MixedPrecision, check_device

    device = str(check_device(device))  # before any run: an absent device is one clear error
    precision = MixedPrecision(precision, check_device(device)).precision
    start = time.perf_counter()
    store = RecordStore(study.database)
    specs = [dataclasses.replace(s, device=device, precision=precision) for s in study.runs()]
    done = store.done_keys()
    pending = _ordered([s for s in specs if s.key not in done])
    if scheduler is None:  # fail fast on missing data, before any worker starts (Dask workers have their own)
        for task in sorted({s.task for s in pending}):
            load_task(next(s for s in pending if s.task == task))
    if scheduler is not None:
        executor, n_workers = "dask", None
        address = scheduler if isinstance(scheduler, str) else getattr(getattr(scheduler, "scheduler", None),
                                                                         "address", None)
    else:
        n_workers = workers if workers and workers > 0 else max(1, min(mp.cpu_count() or 1, 8))
        executor, address = ("in-process" if n_workers == 1 else "local-pool"), None
    launch = store.begin_launch(study, _environment(executor, n_workers, address, device, precision))
    counts = {"ran": 0, "diverged": 0}
    bar = tqdm(total=len(specs), initial=len(specs) - len(pending), desc=f"study {study.name}",
               disable=not progress, unit="run")

    def record(result: RunResult, attempts: int) -> None:
        if store.add_run(result, launch=launch, attempts=attempts):
            counts["ran"] += 1
            counts["diverged"] += result.status != "ok"
        bar.update(1)

    try:
        if not pending:
            retried = 0
        elif scheduler is not None:
            retried = _run_dask(pending, scheduler, runner, record, max_attempts, study.name, launch)
        elif n_workers == 1:
            for spec in pending:
                record(runner(spec), 1)
            retried = 0
        else:
            retried = _run_pool(pending, n_workers, runner, record, max_attempts)
    finally:
        bar.close()
    return StudySummary(total=len(specs), already_done=len(specs) - len(pending), ran=counts["ran"],
                        diverged=counts["diverged"], retried=retried, seconds=time.perf_counter() - start,
                        launch=launch)


def _run_pool(pending: List[RunSpec], workers: int, runner: Runner, record, max_attempts: int) -> int:
    """Local pool of spawned processes; rebuilt after a worker dies, unfinished runs resubmitted."""
    todo = {s.key: s for s in pending}
    attempts: Counter = Counter()
    retried = 0
    ctx = mp.get_context("spawn")
    while todo:
        lost = [k for k in todo if attempts[k] >= max_attempts]
        if lost:
            raise RuntimeError(f"runs {lost} were lost {max_attempts} times (their worker process died each time)")
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker)
        broken = False
        try:
            futures = {}
            for key, spec in todo.items():
                futures[pool.submit(runner, spec)] = key
                retried += attempts[key] > 0
                attempts[key] += 1
            remaining = set(futures)
            while remaining and not broken:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    key = futures[fut]
                    record(result, attempts[key])
                    del todo[key]
            if broken:  # keep what finished before the pool broke; the rest is resubmitted
                for fut in remaining:
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        key = futures[fut]
                        record(fut.result(), attempts[key])
                        del todo[key]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        # Every future is settled: the workers exit on their own (waiting for them costs seconds).
        pool.shutdown(wait=False, cancel_futures=True)
    return retried


def _run_dask(pending: List[RunSpec], scheduler: Union[str, Any], runner: Runner, record, max_attempts: int,
              study: str, launch: int) -> int:
    """Submit every run to a Dask cluster; record results as they complete."""
    from dask.distributed import Client, as_completed

    own = isinstance(scheduler, str)
    client = Client(scheduler) if own else scheduler
    try:
        futures = {}
        for spec in pending:
            key = "adaptlib-study-" + hashlib.sha256(f"{study}|{launch}|{spec.key}".encode()).hexdigest()[:20]
            futures[client.submit(runner, spec, key=key, pure=False, retries=max_attempts - 1)] = spec
        try:
            for fut in as_completed(list(futures)):
                result = fut.result()
                record(result, 1)
        except BaseException:
            client.cancel(list(futures))
            raise
        return 0  # the scheduler re-runs lost tasks itself and does not say how often
    finally:
        if own:
            client.close()


def study_status(study: Study) -> Dict[str, Any]:
    """Progress of ``study`` from its records, without running anything.

    Returns:
        ``{"total", "done", "diverged", "launches", "methods": {method: {"done", "total",
        "diverged", "mean_seconds"}}, "tasks": {task: {"done", "total"}}}``; ``mean_seconds``
        is the mean wall time per recorded run (training plus scoring), ``None`` when none.
    """
    specs = study.runs()
    store = RecordStore(study.database)
    runs = store.runs() if store.exists() else None
    keys = set(runs["key"]) if runs is not None else set()
    out: Dict[str, Any] = {"total": len(specs), "done": sum(s.key in keys for s in specs), "diverged": 0,
                           "launches": len(store.launches()) if store.exists() else 0, "methods": {}, "tasks": {}}
    for method in study.methods:
        mine = [s for s in specs if s.method == method]
        row = {"done": sum(s.key in keys for s in mine), "total": len(mine), "diverged": 0, "mean_seconds": None}
        if runs is not None:
            sub = runs[(runs["method"] == method) & runs["key"].isin({s.key for s in mine})]
            row["diverged"] = int((sub["status"] != "ok").sum())
            if len(sub):
                row["mean_seconds"] = float((sub["train_seconds"] + sub["eval_seconds"]).mean())
        out["diverged"] += row["diverged"]
        out["methods"][method] = row
    for task in study.tasks:
        mine = [s for s in specs if s.task == task]
        out["tasks"][task] = {"done": sum(s.key in keys for s in mine), "total": len(mine)}
    return out
