"""The small study of test_studies.py on a real Dask cluster (2 worker processes, 1 thread each).

One run kills its own worker process (SIGKILL) the first time it starts; the nanny
restarts the worker, the scheduler re-runs the task, and the study's records equal those
of the same study run in this process.
"""
from __future__ import annotations

import functools

import pandas as pd
import pytest

from adaptlib.studies import RecordStore, load_study, run_study

distributed = pytest.importorskip("dask.distributed")

from test_studies import crash_once_runner, records_without_timing, write_study  # noqa: E402


def test_dask_cluster_gives_the_same_records_and_survives_a_killed_worker(tmp_path, data_root):
    ref_dir, dask_dir = tmp_path / "reference", tmp_path / "dask"
    ref_dir.mkdir()
    dask_dir.mkdir()
    reference = load_study(write_study(ref_dir, data_root))
    run_study(reference, workers=1, progress=False)

    study = load_study(write_study(dask_dir, data_root))
    victim = study.runs()[5].key
    marker = tmp_path / "killed"
    runner = functools.partial(crash_once_runner, marker=str(marker), key=victim)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        # through the scheduler's address, as `adaptlib study run --scheduler tcp://...` does
        summary = run_study(study, scheduler=cluster.scheduler_address, progress=False, runner=runner)
    assert marker.is_file(), "the run meant to kill its worker never ran"
    assert (summary.total, summary.ran, summary.diverged) == (16, 16, 0)
    launch = RecordStore(study.database).launches()[-1]
    assert launch["environment"]["executor"] == "dask"
    frame, runs = records_without_timing(study.database)
    ref_frame, ref_runs = records_without_timing(reference.database)
    pd.testing.assert_frame_equal(frame, ref_frame)
    pd.testing.assert_frame_equal(runs, ref_runs)
    assert run_study(study, workers=1, progress=False).ran == 0  # finished: nothing is recomputed
