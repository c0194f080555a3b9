"""Comparison studies: search spaces, seeds, study files, runs, records, resuming, the CLI.

The end-to-end tests run a small study on real Office-Caltech10 SURF data (2 methods x 2
tasks x 2 configurations x 2 trials, 40 steps, checkpoints at 20 and 40) once without
interruption, once with its driver killed by SIGKILL mid-study and resumed, and once on a
local pool whose worker dies, and compare the records.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from adaptlib.compare import METHOD_DEFAULTS, CompareConfig, method_defaults_for
from adaptlib.methods import METHODS
from adaptlib.methods.search_space import Choice, LogUniform, ScaledGrid, Uniform
from adaptlib.studies import (FRAME_COLUMNS, RecordStore, StudyError, TRAINER_SEARCH_SPACE, execute_run,
                              load_study, parse_study, run_seed, run_study, sample_config, search_space,
                              source_validation_split, study_status)
from adaptlib.studies import run as run_module

REPO = Path(__file__).resolve().parents[1]
TIMING = ["train_seconds", "eval_seconds", "started", "finished", "env", "launch", "attempts"]


def small_study_text(database: Path, root: Path, name: str = "small", configs: int = 2) -> str:
    return (f'name = "{name}"\nbenchmark = "office-caltech10-surf"\ntasks = ["W->D", "D->W"]\n'
            f'methods = ["source-only", "dann"]\nconfigs = {configs}\nseeds = 2\nsteps = 40\ncheckpoint_every = 20\n'
            f'validators = ["source-accuracy", "iwv", "dev", "snd", "entropy"]\nselection = "snd"\n'
            f'database = "{database}"\nroot = "{root}"\n')


def write_study(folder: Path, data_root: Path, name: str = "small", configs: int = 2) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(small_study_text(folder / "records.sqlite", data_root, name, configs))
    return path


def sha_seed(*parts) -> int:
    """The documented seed formula, computed independently of adaptlib."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big") % 2 ** 31


def crash_once_runner(spec, *, marker: str, key: str):
    """Run ``spec``; the first time ``key`` runs, kill this worker process instead (SIGKILL)."""
    if spec.key == key and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return execute_run(spec)


def records_without_timing(db: Path):
    runs = RecordStore(db).runs().drop(columns=TIMING).sort_values("key").reset_index(drop=True)
    return RecordStore(db).frame(), runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """The small study run uninterrupted in this process: (study file, records path)."""
    folder = tmp_path_factory.mktemp("reference")
    path = write_study(folder, data_root)
    summary = run_study(load_study(path), workers=1, progress=False)
    assert summary.ran == summary.total == 16
    return path, folder / "records.sqlite"


# ---------------------------------------------------------------------- registry and seeds
@pytest.mark.parametrize("name", sorted(METHODS))
def test_declared_hyperparameters_are_init_arguments_with_the_same_defaults(name):
    cls = METHODS[name]
    params = inspect.signature(cls.__init__).parameters
    for hp, declared in cls.search_space.items():
        assert hp in params, f"{name}: {hp} is not an __init__ argument"
        assert params[hp].default == declared.default, f"{name}.{hp}: default differs from __init__"
        cls(**{hp: declared.distribution.sample(random.Random(0))})  # a sampled value is accepted
    assert not set(cls.search_space) & set(TRAINER_SEARCH_SPACE)
    # config 0 builds exactly the default method (what `adaptlib compare` trains)
    hp0 = sample_config("s", name, 0, lr=0.02)
    assert hp0["lr"] == 0.02
    built = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in hp0.items() if k != "lr"})
    assert built.hparams() == cls().hparams()


def test_trainer_lr_default_is_the_trainer_default():
    from adaptlib import Trainer

    assert inspect.signature(Trainer.__init__).parameters["lr"].default == TRAINER_SEARCH_SPACE["lr"].default


def test_sampled_configurations_follow_the_declared_distributions_and_seed():
    space = search_space("dan")
    for config in (1, 2, 7):
        hp = sample_config("study-a", "dan", config)
        assert hp == sample_config("study-a", "dan", config)  # deterministic
        # independent reference: random.Random(sha256 seed), names in sorted order, textbook formulas
        rng = random.Random(sha_seed("study-a", "dan", "config", config))
        expected = {}
        for name in sorted(space):
            dist = space[name].distribution
            if isinstance(dist, LogUniform):
                expected[name] = math.exp(math.log(dist.low) + rng.random() * math.log(dist.high / dist.low))
            elif isinstance(dist, ScaledGrid):
                s = math.exp(math.log(dist.low) + rng.random() * math.log(dist.high / dist.low))
                expected[name] = [s * g for g in dist.grid]
        assert hp.keys() == expected.keys()
        for name in hp:
            assert hp[name] == pytest.approx(expected[name], rel=1e-12)
            assert space[name].distribution.contains(hp[name])
    assert sample_config("study-a", "dan", 1) != sample_config("study-b", "dan", 1)
    assert sample_config("study-a", "dan", 1) != sample_config("study-a", "dan", 2)
    with pytest.raises(ValueError, match="config"):
        sample_config("s", "dan", -1)
    with pytest.raises(ValueError, match="method"):
        search_space("nope")


def test_distributions_draw_inside_their_support():
    rng = random.Random(1)
    u, lu, ch = Uniform(0.3, 0.8), LogUniform(1e-3, 1e-1), Choice((1, 2, 3))
    xs = [lu.sample(rng) for _ in range(2000)]
    assert all(1e-3 <= x <= 1e-1 for x in xs)
    # log-uniform: the median is the geometric mean of the bounds (1e-2)
    assert sorted(xs)[1000] == pytest.approx(1e-2, rel=0.15)
    assert all(0.3 <= u.sample(rng) <= 0.8 for _ in range(200))
    assert {ch.sample(rng) for _ in range(200)} == {1, 2, 3}
    for bad in (lambda: LogUniform(0.0, 1.0), lambda: Uniform(1.0, 1.0), lambda: Choice(())):
        with pytest.raises(ValueError):
            bad()


def test_run_seeds_are_sha256_of_the_run_identity(tmp_path, data_root):
    study = parse_study(small_study_text(tmp_path / "r.sqlite", data_root))
    specs = study.runs()
    assert len(specs) == 16 and len({s.key for s in specs}) == 16
    for s in specs:
        assert s.seed == sha_seed("small", s.method, s.task, s.config, s.trial) == run_seed(
            "small", s.method, s.task, s.config, s.trial)
        assert s.hparams == sample_config("small", s.method, s.config, lr=study.lr,  # same config on every task
                                          defaults=method_defaults_for(study.benchmark, s.method))
    assert len({s.seed for s in specs}) == 16


# ---------------------------------------------------------------------- study files
BASE = 'name = "x"\nbenchmark = "office-caltech10-surf"\n'


@pytest.mark.parametrize("text, key", [
    ('benchmark = "office-caltech10-surf"\n', "name"),
    ('name = "x"\n', "benchmark"),
    ('name = "x"\nbenchmark = "nope"\n', "benchmark"),
    (BASE + 'tasks = ["A->Z"]\n', "tasks"),
    (BASE + 'methods = ["dann", "nope"]\n', "methods"),
    (BASE + 'methods = []\n', "methods"),
    (BASE + "configs = 0\n", "configs"),
    (BASE + 'seeds = "3"\n', "seeds"),
    (BASE + "steps = 10\ncheckpoint_every = 20\n", "checkpoint_every"),
    (BASE + "lr = -0.1\n", "lr"),
    (BASE + 'validators = ["dev", "oracle"]\n', "validators"),
    (BASE + 'validators = ["dev"]\nselection = "snd"\n', "selection"),
    (BASE + "source_val_fraction = 1.0\n", "source_val_fraction"),
    (BASE + "[network]\nhidden = [0]\n", "network.hidden"),
    (BASE + "[network]\nwidth = 3\n", "network.width"),
    (BASE + "[network]\nbottleneck_norm = 1\n", "network.bottleneck_norm"),
    (BASE + "[trainer]\noptimizer = \"rmsprop\"\n", "trainer.optimizer"),
    (BASE + "[trainer]\nlabel_smoothing = 1.5\n", "trainer.label_smoothing"),
    (BASE + "[trainer]\nbeta = 0.9\n", "trainer.beta"),
    (BASE + "epochs = 3\n", "epochs"),
    (BASE + 'load_options = "log1p"\n', "load_options"),
    (BASE + "steps = \n", "valid TOML"),
])
def test_bad_study_files_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(StudyError, match=key.replace(".", r"\.")) as info:
        load_study(path)
    assert str(path) in str(info.value)


def test_study_file_defaults_come_from_the_benchmark_settings(tmp_path):
    from adaptlib.compare import BENCHMARK_SETTINGS, DEFAULT_METHODS

    study = parse_study(BASE)
    s = BENCHMARK_SETTINGS["office-caltech10-surf"]
    assert (study.steps, study.batch_size, study.lr) == (s["steps"], s["batch_size"], s["lr"])
    assert study.network == {"hidden": list(s["hidden"]), "bottleneck": s["bottleneck"], "dropout": s["dropout"],
                             "bottleneck_norm": s["bottleneck_norm"]}
    assert study.trainer == {k: s[k] for k in ("optimizer", "momentum", "weight_decay", "lr_schedule",
                                               "label_smoothing")}
    assert all(spec.trainer == study.trainer for spec in study.runs()[:3])
    assert study.methods == DEFAULT_METHODS and len(study.tasks) == 12
    assert study.database == Path("results/studies/x/records.sqlite")
    assert study.load_options == s["load_options"] and study.runs()[0].load_options == s["load_options"]
    pinned = parse_study(BASE + 'load_options = {preprocess = "zscore"}\n')
    assert pinned.runs()[0].load_options == {"preprocess": "zscore"} != s["load_options"]
    assert pinned.definition()["load_options"] == {"preprocess": "zscore"}
    with pytest.raises(FileNotFoundError):
        load_study(tmp_path / "missing.toml")


def test_random_configurations_search_the_learning_rate_around_the_studys():
    """Configuration k > 0 draws lr log-uniformly in [lr / 3.33, 3 lr] around the study's lr, for any lr."""
    from adaptlib.studies import sample_config

    for k in range(1, 30):
        base = sample_config("s", "dann", k)["lr"]
        assert 0.003 <= base <= 0.03
        for lr in (3e-4, 3e-3, 0.1):
            drawn = sample_config("s", "dann", k, lr=lr)
            assert drawn["lr"] == pytest.approx(base * lr / 0.01, rel=1e-12)
            assert drawn["trade_off"] == sample_config("s", "dann", k)["trade_off"]  # the method's draw is unchanged
    assert sample_config("s", "dann", 0, lr=3e-3)["lr"] == 3e-3


def test_a_benchmarks_method_defaults_are_configuration_0_and_what_compare_trains(monkeypatch):
    monkeypatch.setitem(METHOD_DEFAULTS, "office-caltech10-surf", {"dann": {"trade_off": 0.25}})
    study = parse_study(BASE + 'methods = ["dann", "dann+mcc"]\nconfigs = 2\n')
    assert study.hparams("dann", 0)["trade_off"] == 0.25 and study.hparams("dann", 0)["gamma"] == 10.0
    assert study.hparams("dann", 1) == sample_config("x", "dann", 1, lr=study.lr)  # draws are not moved
    assert study.hparams("dann+mcc", 0)["dann.trade_off"] == 1.0  # keyed by the exact method name
    resolved = CompareConfig(methods=("source-only", "dann"), seeds=1,
                             method_kwargs={"dann": {"gamma": 5.0}}).resolved()
    assert resolved.method_kwargs == {"dann": {"trade_off": 0.25, "gamma": 5.0}}  # the user's names win, merged
    assert CompareConfig(methods=("dann",), method_kwargs={"dann": {"trade_off": 2.0}}).resolved().method_kwargs == {
        "dann": {"trade_off": 2.0}}
    assert CompareConfig(benchmark="amazon-reviews", methods=("dann",)).resolved().method_kwargs == {}
    assert method_defaults_for("folder:/nowhere", "dann") == {}
    for config in (0, 1):
        with pytest.raises(ValueError, match=r"defaults: \['tradeoff'\]"):
            sample_config("x", "dann", config, defaults={"tradeoff": 0.3})
    with pytest.raises(ValueError, match=r"defaults: \['lr'\].*the lr argument"):
        sample_config("x", "dann", 0, defaults={"lr": 0.1})
    with pytest.raises(ValueError, match="defaults must map"):
        sample_config("x", "dann", 0, defaults=[("trade_off", 0.3)])


def test_every_shipped_method_default_is_valid_and_documented():
    from adaptlib.compare import check_method_kwargs

    for benchmark, per_method in METHOD_DEFAULTS.items():
        for method, hparams in per_method.items():
            assert check_method_kwargs({method: hparams}, (method,)) == {method: hparams}
            for param in hparams:  # the table of the selection that chose it
                assert (REPO / "docs" / "defaults" / f"{benchmark}-{method}-{param}.md").is_file()
                chosen = json.loads((REPO / "docs" / "defaults" / f"{benchmark}-{method}-{param}.json").read_text())
                assert chosen["chosen"] == hparams[param] and chosen["validator"] == "dev"


def test_shipped_study_file_is_the_flagship_study():
    study = load_study(REPO / "studies" / "office-caltech10-surf.toml")
    assert len(study.runs()) == 7 * 12 * 5 * 3
    assert study.steps == 1000 and study.checkpoint_every == 250 and study.selection in study.validators


# ---------------------------------------------------------------------- one run
def test_source_validation_split_is_stratified_and_deterministic():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 1 + [3] * 2)
    tr, va = source_validation_split(y, 0.2, seed=3)
    assert torch.equal(torch.sort(torch.cat([tr, va])).values, torch.arange(len(y)))
    counts = {c: int((y[va] == c).sum()) for c in range(4)}
    assert counts == {0: 2, 1: 1, 2: 0, 3: 1}  # round(0.2 n), at least 1, never the whole class
    tr2, va2 = source_validation_split(y, 0.2, seed=3)
    assert torch.equal(va, va2) and torch.equal(tr, tr2)
    with pytest.raises(ValueError, match="fraction"):
        source_validation_split(y, 0.0, seed=0)


class _LabelsForbidden:
    """Target training data whose labels must never be read."""

    def __init__(self, domain):
        self.x = domain.x

    @property
    def y(self):
        raise AssertionError("the target training labels were read")


def test_target_labels_reach_only_the_oracle(tmp_path, data_root, monkeypatch):
    from adaptlib import validation
    from adaptlib.datasets import get_benchmark

    task = get_benchmark("office-caltech10-surf").load("W->D", root=data_root)

    class Task:
        source, target_train, target_test = task.source, _LabelsForbidden(task.target_train), task.target_test
        num_classes = task.num_classes

    monkeypatch.setattr(run_module, "load_task", lambda spec: Task)
    seen = []
    real_evaluate, real_oracle = validation.evaluate, validation.oracle

    def evaluate(validators, *, source_train, source_val, target, seed=0):
        assert target.labels is None
        assert source_val.labels is not None and source_train.features.shape[1] == target.features.shape[1]
        seen.append("evaluate")
        return real_evaluate(validators, source_train=source_train, source_val=source_val, target=target, seed=seed)

    def oracle(target, target_labels):
        assert target.labels is None and torch.equal(target_labels, task.target_test.y)
        seen.append("oracle")
        return real_oracle(target, target_labels)

    monkeypatch.setattr(validation, "evaluate", evaluate)
    monkeypatch.setattr(validation, "oracle", oracle)
    study = parse_study(small_study_text(tmp_path / "r.sqlite", data_root))
    spec = next(s for s in study.runs() if s.method == "dann" and s.task == "W->D")
    result = execute_run(spec)
    assert result.status == "ok" and [r["step"] for r in result.rows] == [20, 40]
    assert seen == ["evaluate", "oracle"] * 2
    # the oracle is the accuracy on the target test set, recomputed independently
    assert 0 <= result.rows[-1]["target_accuracy"] <= 1  # a fraction, as Trainer.evaluate


def test_scoring_checkpoints_does_not_change_training(tmp_path, data_root):
    """The model after a run with validator scoring equals the one trained without it."""
    from adaptlib import AdaptModel, Trainer, mlp

    study = parse_study(small_study_text(tmp_path / "r.sqlite", data_root))
    spec = next(s for s in study.runs() if s.method == "dann" and s.config == 1)
    r1 = execute_run(spec)
    r2 = execute_run(spec)
    assert r1.rows == r2.rows  # deterministic
    # the final oracle equals a plain Trainer run on the same split, seed and hyper-parameters
    data = run_module.load_task(spec)
    tr, _ = source_validation_split(data.source.y, spec.source_val_fraction,
                                    run_module.derive_seed("source-val", spec.benchmark, spec.task,
                                                           spec.source_val_fraction))
    torch.manual_seed(spec.seed)
    model = AdaptModel(mlp(800, spec.network["hidden"], dropout=spec.network["dropout"]), num_classes=10,
                       bottleneck_dim=spec.network["bottleneck"], bottleneck_norm=spec.network["bottleneck_norm"])
    hp = dict(spec.hparams)
    trainer = Trainer(model, "dann", method_kwargs={k: v for k, v in hp.items() if k != "lr"}, lr=hp["lr"],
                      steps=spec.steps, batch_size=spec.batch_size, seed=spec.seed, device="cpu",
                      progress_bar=False, **spec.trainer)
    trainer.fit((data.source.x[tr], data.source.y[tr]), data.target_train.x)
    accuracy = trainer.evaluate(data.target_test)
    assert r1.rows[-1]["target_accuracy"] == pytest.approx(accuracy, abs=1e-9)


# ---------------------------------------------------------------------- records, resuming
def test_records_schema_and_append_only(reference):
    path, db = reference
    frame = RecordStore(db).frame()
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert len(frame) == 16 * 2 and sorted(set(frame["step"])) == [20, 40]
    assert frame["config"].dtype == "int64" and frame["uses_target_labels"].dtype == bool
    assert frame[["source-accuracy", "iwv", "dev", "snd", "entropy", "target_accuracy"]].notna().all().all()
    row = frame.iloc[0]
    study_lr = load_study(path).lr  # the benchmark's lr (BENCHMARK_SETTINGS), not a pinned number
    assert json.loads(row["hparams"]) == sample_config("small", row["method"], int(row["config"]), lr=study_lr,
                                                       defaults=method_defaults_for(row["benchmark"], row["method"]))
    launches = RecordStore(db).launches()
    assert launches[0]["study_text"] == path.read_text()
    assert launches[0]["environment"]["versions"]["torch"] == torch.__version__
    con = sqlite3.connect(db)
    for sql in ("UPDATE runs SET seed = 0", "DELETE FROM scores", "UPDATE checkpoints SET target_accuracy = 0"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()
    status = study_status(load_study(path))
    assert status["done"] == status["total"] == 16 and status["methods"]["dann"]["done"] == 8


def test_accuracy_is_a_fraction_and_version_1_records_stay_readable(reference, tmp_path):
    """Schema 2 stores the oracle as a fraction; a schema-1 file (percent) reads and appends in its own unit."""
    import shutil

    from adaptlib.studies.records import SCHEMA_VERSION

    path, db = reference
    store = RecordStore(db)
    frame = store.frame()
    assert store.schema_version() == SCHEMA_VERSION == 2
    assert frame["target_accuracy"].between(0, 1).all() and frame["target_accuracy"].max() > 0
    # the same records as written by the previous adaptlib: schema version 1, accuracy in percent
    old = tmp_path / "v1.sqlite"
    shutil.copy(db, old)
    con = sqlite3.connect(old)
    con.executescript("DROP TRIGGER meta_no_update; DROP TRIGGER checkpoints_no_update;"
                      "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
                      "UPDATE checkpoints SET target_accuracy = 100 * target_accuracy;")
    con.close()
    legacy = RecordStore(old)
    assert legacy.schema_version() == 1
    pd.testing.assert_frame_equal(legacy.frame(), frame)
    # a run appended to a version-1 file keeps that file's unit (percent)
    from adaptlib.studies.run import RunResult

    spec = next(s for s in load_study(path).runs() if s.config == 0)
    spec = type(spec)(**{**spec.__dict__, "trial": 9})
    legacy.add_run(RunResult(spec=spec, status="ok", error="", rows=[{"step": 40, "target_accuracy": 0.25,
                                                                      "scores": {}}],
                             train_seconds=0.0, eval_seconds=0.0, started="", finished=""), launch=1)
    con = sqlite3.connect(old)
    stored = con.execute("SELECT target_accuracy FROM checkpoints WHERE key = ?", (spec.key,)).fetchone()[0]
    con.close()
    assert stored == pytest.approx(25.0)
    assert legacy.frame().query("trial == 9")["target_accuracy"].tolist() == [pytest.approx(0.25)]


def test_changed_settings_are_refused_and_growing_the_study_adds_only_new_runs(tmp_path, reference, data_root):
    _, db = reference
    changed = tmp_path / "changed.toml"
    changed.write_text(small_study_text(db, data_root).replace("steps = 40", "steps = 60"))
    with pytest.raises(StudyError, match="steps: 40 recorded, 60 now"):
        run_study(load_study(changed), workers=1, progress=False)
    changed.write_text(small_study_text(db, data_root) + 'load_options = {preprocess = "zscore"}\n')
    with pytest.raises(StudyError, match="load_options: {'preprocess': 'sqrt-zscore'} recorded, {'preprocess': "
                                         "'zscore'} now"):
        run_study(load_study(changed), workers=1, progress=False)
    # more configurations: only the new runs are trained, on a copy of the records
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(db.read_bytes())
    grown = tmp_path / "grown.toml"
    grown.write_text(small_study_text(copy, data_root, configs=3).replace(
        'methods = ["source-only", "dann"]', 'methods = ["source-only"]'))
    summary = run_study(load_study(grown), workers=1, progress=False)
    assert (summary.total, summary.already_done, summary.ran) == (12, 8, 4)
    runs = RecordStore(copy).runs()
    assert len(runs) == 20 and set(runs.loc[runs["launch"] == 2, "config"]) == {2}


def test_runs_recorded_with_other_hyperparameters_are_refused_not_mixed(tmp_path, reference, data_root, monkeypatch,
                                                                         capsys):
    _, db = reference
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(db.read_bytes())
    path = tmp_path / "same.toml"
    path.write_text(small_study_text(copy, data_root))
    before = len(RecordStore(copy).runs())
    monkeypatch.setitem(METHOD_DEFAULTS, "office-caltech10-surf", {"dann": {"trade_off": 0.25}})
    with pytest.raises(StudyError, match=r"other hyper-parameters.*dann configuration 0: .*\"trade_off\": 0\.25"):
        run_study(load_study(path), workers=1, progress=False)
    assert len(RecordStore(copy).runs()) == before and len(RecordStore(copy).launches()) == 1  # nothing written
    assert [line.split(":")[0] for line in RecordStore(copy).stale_configurations(load_study(path))] == [
        "dann configuration 0"]
    from adaptlib.cli import main as cli_main

    assert cli_main(["study", "report", str(path), "--out", str(tmp_path / "report")]) == 0
    assert "warning: dann configuration 0: " in capsys.readouterr().err


def test_records_from_before_load_options_were_stored_stay_resumable(tmp_path, data_root, monkeypatch):
    from adaptlib.studies.spec import Study

    text = small_study_text(tmp_path / "old.sqlite", data_root, configs=1).replace(
        'methods = ["source-only", "dann"]', 'methods = ["source-only"]').replace("seeds = 2", "seeds = 1")
    definition = Study.definition
    with monkeypatch.context() as m:  # a records file written before the key existed
        m.setattr(Study, "definition", lambda self: {k: v for k, v in definition(self).items() if k != "load_options"})
        assert run_study(parse_study(text), workers=1, progress=False).ran == 2
    summary = run_study(parse_study(text.replace('tasks = ["W->D", "D->W"]', 'tasks = ["W->D", "D->W", "A->C"]')),
                        workers=1, progress=False)
    assert (summary.already_done, summary.ran) == (2, 1)


def test_killed_driver_resumes_without_recomputing(tmp_path, reference, data_root):
    ref_path, ref_db = reference
    path = write_study(tmp_path, data_root)
    db = tmp_path / "records.sqlite"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "adaptlib", "study", "run", str(path), "--workers", "1",
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900  # generous: a loaded machine runs the study's first 4 runs slowly
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if db.is_file() and len(RecordStore(db).done_keys()) >= 4:
                    break
            except ValueError:  # the driver has created the file but not yet its tables
                pass
            time.sleep(0.05)
        assert proc.poll() is None, f"the study finished or failed before it was killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = RecordStore(db).runs()
    assert 4 <= len(before) < 16
    summary = run_study(load_study(path), workers=1, progress=False)
    assert (summary.already_done, summary.ran) == (len(before), 16 - len(before))
    after = RecordStore(db).runs().set_index("key")
    # the runs finished before the kill were not recomputed
    for _, row in before.iterrows():
        assert after.loc[row["key"], "launch"] == 1 and after.loc[row["key"], "finished"] == row["finished"]
    assert (after["launch"] == 2).sum() == 16 - len(before)
    frame, runs = records_without_timing(db)
    ref_frame, ref_runs = records_without_timing(ref_db)
    pd.testing.assert_frame_equal(frame, ref_frame)
    pd.testing.assert_frame_equal(runs, ref_runs)
    assert run_study(load_study(path), workers=1, progress=False).ran == 0  # nothing left


def test_local_pool_survives_a_killed_worker(tmp_path, reference, data_root):
    _, ref_db = reference
    path = tmp_path / "pool.toml"
    path.write_text(small_study_text(tmp_path / "records.sqlite", data_root).replace(
        'tasks = ["W->D", "D->W"]', 'tasks = ["W->D"]').replace("configs = 2", "configs = 1"))
    study = load_study(path)
    victim = study.runs()[1].key
    marker = tmp_path / "killed"
    runner = functools.partial(crash_once_runner, marker=str(marker), key=victim)
    summary = run_study(study, workers=2, progress=False, runner=runner)
    assert marker.is_file() and summary.ran == 4 and summary.retried >= 1
    runs = RecordStore(study.database).runs().set_index("key")
    assert runs.loc[victim, "attempts"] == 2
    frame = RecordStore(study.database).frame()
    ref = RecordStore(ref_db).frame()
    ref = ref[(ref["task"] == "W->D") & (ref["config"] == 0)].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, ref)


# ---------------------------------------------------------------------- command line
def test_cli_status_report_and_errors(reference, tmp_path, monkeypatch, capsys):
    from adaptlib.cli import main
    from adaptlib.studies import report

    path, db = reference
    assert main(["study", "status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "16/16 runs done" in out and "dann" in out
    calls = {}

    def fake_write_report(frame, folder, *, primary, validators, methods=None):
        calls.update(frame=frame, folder=folder, primary=primary, validators=validators, methods=methods)
        return {"table": Path(folder) / "table.md"}

    monkeypatch.setattr(report, "write_report", fake_write_report)
    assert main(["study", "report", str(path), "--out", str(tmp_path / "rep")]) == 0
    assert calls["primary"] == "snd" and calls["methods"] == ["source-only", "dann"]
    assert calls["folder"] == tmp_path / "rep" and len(calls["frame"]) == 32
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "configs = 0\n")
    assert main(["study", "run", str(bad)]) == 2
    assert "configs" in capsys.readouterr().err


def test_trainer_callback_runs_at_every_checkpoint_and_at_the_end(surf_small):
    from adaptlib import AdaptModel, Trainer, mlp

    xs, ys, xt, _ = surf_small
    torch.manual_seed(0)
    model = AdaptModel(mlp(800, [32], dropout=0.5), num_classes=10, bottleneck_dim=16)
    trainer = Trainer(model, "source-only", steps=25, batch_size=16, seed=0, device="cpu", progress_bar=False)
    seen = []

    def callback(tr):
        seen.append((tr.step, tr.model.training))
        tr.model.eval()

    trainer.fit((xs, ys), callback=callback, callback_every=10)
    assert [s for s, _ in seen] == [10, 20, 25] and all(training for _, training in seen)
    with pytest.raises(ValueError, match="callback_every"):
        trainer.fit((xs, ys), callback=callback, callback_every=0)
    with pytest.raises(TypeError, match="callback"):
        trainer.fit((xs, ys), callback=3)
