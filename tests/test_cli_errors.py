"""The errors a newcomer meets with ``adaptlib compare`` and study files (issue 9, items 9 and 10).

Every bad hyper-parameter is refused before any run, naming the method, the parameter and
what is allowed; a diverged run is one line; an unquoted ``C->A`` gets the quoting hint; a
second comparison does not overwrite the first one's results; worker pools leave no leaked
semaphore behind; ``adaptlib --version`` exists.
"""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from adaptlib.cli import main
from adaptlib.compare import CompareConfig, RunDiverged, check_method_kwargs, compare
from adaptlib.methods import METHODS
from adaptlib.methods.search_space import HParam, Uniform, check_hparams
from adaptlib.studies import StudyError, parse_study

REPO = Path(__file__).resolve().parents[1]
BENCH = "office-caltech10-surf"


def run_cli(capsys, *argv):
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def compare_args(root, out, *extra):
    return ["compare", BENCH, "--methods", "source-only,dann", "--tasks", "D->W", "--seeds", "1", "--steps", "5",
            "--workers", "1", "--quiet", "--root", str(root), "--output", str(out), *extra]


# --------------------------------------------------------------------------------------------- item 9
@pytest.mark.parametrize("kwargs, expected", [
    ('{"dnn": {"trade_off": 0.5}}', ["unknown method 'dnn'", "did you mean 'dann'", "source-only, dann"]),
    ('{"dan": {"trade_off": 0.5}}', ["'dan' is not among the methods of this run", "--methods"]),
    ('{"dann": {"tradeoff": 0.5}}', ["dann", "unknown hyper-parameter 'tradeoff'", "did you mean 'trade_off'",
                                     "trade_off, gamma, hidden_dim, dropout, alignment"]),
    ('{"dann": {"trade_off": -1}}', ["dann", "trade_off must be >= 0", "got -1"]),
    ('{"dann": {"trade_off": "big"}}', ["dann", "trade_off must be a finite number", "'big' (str)"]),
    ('{"dann": {"hidden_dim": 1.5}}', ["dann", "hidden_dim must be an integer"]),
    ('{"dann": {"dropout": 1.5}}', ["dann", "dropout=1.5", "dropout"]),
    ('{"dann": {"alignment": "globl"}}', ["dann", "alignment must be one of", "'global'"]),
])
def test_method_kwargs_are_checked_before_any_run(data_root, tmp_path, capsys, kwargs, expected):
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, *compare_args(data_root, out, "--method-kwargs", kwargs))
    assert rc == 2, err
    line = err.strip()
    assert line.startswith("adaptlib: error: method_kwargs") and "\n" not in line
    for text in expected:
        assert text in line
    assert "coefficient" not in line and "could not convert" not in line
    assert not out.exists()  # nothing ran, nothing was written


def test_bad_json_says_what_is_wrong(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(compare_args(data_root, tmp_path / "out", "--method-kwargs", '{"dann": {trade_off: 1}}'))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and '{"dann": {"trade_off": 0.5}}' in err and "invalid loads value" not in err
    with pytest.raises(SystemExit):
        main(compare_args(data_root, tmp_path / "out", "--method-kwargs", '{"dann": 0.5}'))
    assert "object of hyper-parameters" in capsys.readouterr().err


def test_python_api_checks_method_kwargs_too(data_root):
    with pytest.raises(ValueError, match="unknown hyper-parameter 'tradeoff'.*did you mean 'trade_off'"):
        compare(CompareConfig(methods=("dann",), tasks=("D->W",), seeds=1, steps=5, workers=1, root=str(data_root),
                              method_kwargs={"dann": {"tradeoff": 0.5}}), progress=False)
    # valid values pass and come back unchanged (lists for the tuples JSON cannot hold)
    good = {"dan": {"trade_off": 0.0, "multipliers": [0.5, 1.0, 2.0]}, "finetune": {"l2sp": 0.01}}
    assert check_method_kwargs(good, ("dan", "finetune")) == good
    with pytest.raises(ValueError, match="finetune.*source_fraction must be in \\[0, 1\\)"):
        check_method_kwargs({"finetune": {"source_fraction": 1.0}}, ("finetune",))
    with pytest.raises(ValueError, match="dan: multipliers must be >= 0"):
        check_hparams(METHODS["dan"], {"multipliers": [-1.0, 1.0]})


def test_study_configurations_are_checked_before_any_run(tmp_path, monkeypatch):
    # a search space that draws values its method refuses fails when the study file is read
    space = dict(METHODS["finetune"].search_space)
    space["source_fraction"] = HParam(0.5, Uniform(0.9, 1.5))
    monkeypatch.setattr(METHODS["finetune"], "search_space", space)
    text = (f'name = "s"\nbenchmark = "{BENCH}"\ntasks = ["D->W"]\nmethods = ["source-only", "finetune"]\n'
            f'configs = 3\nseeds = 1\nsteps = 10\ndatabase = "{tmp_path / "r.sqlite"}"\n')
    with pytest.raises(StudyError, match="methods: configuration [12] of finetune.*source_fraction"):
        parse_study(text, source="s.toml")
    assert not (tmp_path / "r.sqlite").exists()


# --------------------------------------------------------------------------------------------- item 10
def test_diverged_run_is_one_line(data_root, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "compare", BENCH, "--methods", "dann", "--tasks", "D->W", "--seeds", "1",
                           "--steps", "40", "--optimizer", "sgd", "--lr", "100", "--workers", "1", "--quiet",
                           "--root", str(data_root), "--output", str(tmp_path / "out"))  # Adam does not blow up at lr 100
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("adaptlib: error: dann on D->W (seed 0) diverged")
    assert "at step" in lines[0] and "--lr, it was 100" in lines[0]
    with pytest.raises(FloatingPointError):  # the Python API raises RunDiverged, a FloatingPointError
        compare(CompareConfig(methods=("dann",), tasks=("D->W",), seeds=1, steps=40, optimizer="sgd", lr=100.0,
                              workers=1, root=str(data_root)), progress=False)
    assert issubclass(RunDiverged, FloatingPointError)


def test_worker_pool_divergence_and_shutdown_in_a_fresh_process(data_root, tmp_path):
    """Spawned workers: one error line, no second traceback, no leaked semaphore after the run."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    base = [sys.executable, "-m", "adaptlib", "compare", BENCH, "--tasks", "D->W,W->D", "--seeds", "2",
            "--workers", "2", "--root", str(data_root)]
    bad = subprocess.run(base + ["--methods", "dann", "--steps", "40", "--optimizer", "sgd", "--lr", "100",
                                 "--quiet", "--output", str(tmp_path / "bad")],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "leaked semaphore" not in bad.stderr, bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        next(line for line in bad.stderr.splitlines() if "diverged" in line)]
    # a normal run with the progress bar on: no resource_tracker warning either
    good = subprocess.run(base + ["--methods", "source-only", "--steps", "5", "--output", str(tmp_path / "good")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "leaked" not in good.stderr and "resource_tracker" not in good.stderr, good.stderr


def test_worker_initializer_gives_tqdm_a_thread_lock():
    """The cause of the leaked semaphores: tqdm's default lock is a multiprocessing RLock."""
    import multiprocessing.synchronize

    from tqdm import tqdm

    from adaptlib.compare import _init_worker

    saved = getattr(tqdm, "_lock", None)
    try:
        _init_worker()
        with tqdm(total=1, disable=True) as bar:
            bar.update(1)
        locks = getattr(tqdm.get_lock(), "locks", [tqdm.get_lock()])
        assert not any(isinstance(lk, multiprocessing.synchronize.SemLock) for lk in locks)
    finally:
        if saved is not None:
            tqdm.set_lock(saved)


def test_unquoted_task_gets_the_quoting_hint(data_root, capsys):
    rc, _, err = run_cli(capsys, "compare", BENCH, "--tasks", "C-", "--root", str(data_root))
    assert rc == 2
    assert "unknown ['C-']" in err and "quote the tasks" in err and "'C->A" in err
    rc, _, err = run_cli(capsys, "compare", BENCH, "--tasks", "C->X", "--root", str(data_root))
    assert rc == 2 and "quote" not in err  # a plain typo gets no shell hint


def test_second_compare_refuses_to_overwrite(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = compare_args(data_root, out)
    assert run_cli(capsys, *args)[0] == 0
    first = (out / "results.json").read_text()
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "already holds the results" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == first
    assert run_cli(capsys, *args, "--overwrite")[0] == 0
    assert (out / "results.json").read_text() != first  # replaced (its timing differs)


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"adaptlib {version('adaptlib')}"
