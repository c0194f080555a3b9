"""Study files: what a comparison study trains, checkpoints, scores and where it records it.

A study file is TOML (read with :mod:`tomllib`)::

    name = "office-caltech10-surf"          # required; part of every sampling seed
    benchmark = "office-caltech10-surf"     # required; or "folder:<path>" for your own domains
    tasks = "all"                           # or ["A->W", "C->A"]
    methods = ["source-only", "dann"]       # default: adaptlib.compare.DEFAULT_METHODS
    configs = 5                             # hyper-parameter configurations per method (0 = defaults)
    seeds = 3                               # trials per (method, task, configuration)
    steps = 1000                            # default: the benchmark's setting
    checkpoint_every = 250                  # validator scores every 250 steps and at the end
    batch_size = 32                         # default: the benchmark's setting
    lr = 0.01                               # learning rate of configuration 0 (default: benchmark's)
    validators = ["source-accuracy", "iwv", "dev", "snd", "entropy"]
    selection = "dev"                       # primary validator of the "realistic" selection
    source_val_fraction = 0.2               # stratified held-out source split
    shots = 3                               # labelled target samples per class (finetune)
    database = "results/studies/office-caltech10-surf/records.sqlite"
    root = "/data"                          # data folder (default: $ADAPTLIB_DATA / the cache)
    load_options = {preprocess = "zscore"}  # the loader's options (default: the benchmark's setting)

    [network]                               # default: the benchmark's setting
    hidden = [512]
    bottleneck = 128
    dropout = 0.5
    bottleneck_norm = false
    augment = {degrees = 10, translate = 0.1, scale = [0.9, 1.1]}  # image backbones; {} for none

    [trainer]                               # default: the benchmark's setting
    optimizer = "adam"                      # "sgd", "adam" or "adamw"
    momentum = 0.9
    weight_decay = 0.0
    lr_schedule = "cosine"                  # "inv", "cosine" or "constant"
    label_smoothing = 0.1

Every key of ``[network]`` and ``[trainer]`` defaults to the benchmark's shared recipe in
:data:`adaptlib.compare.BENCHMARK_SETTINGS`, so a study trains the network with the optimizer,
schedule and label smoothing that ``adaptlib compare`` uses, and its configuration 0 is what
``adaptlib compare`` trains (same recipe, same defaults; the study holds out
``source_val_fraction`` of the source for its validators).

``load_options`` (the benchmark loader's preprocessing, as ``adaptlib compare --load-options``)
also defaults to the benchmark's setting; a study file that sets it, with ``steps`` and
``[trainer]``, keeps training the recipe it was run with after the benchmark's recipe changes.

Relative ``database`` and ``root`` paths are relative to the current directory (as the
``results/`` folder of ``adaptlib compare``). Every error names the key.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..compare import DEFAULT_METHODS, _check_augment, method_defaults_for, settings_for
from ..methods import METHODS
from .registry import run_seed, sample_config

try:
    import tomllib
except ImportError:  # Python < 3.11: the 'study' extra installs tomli
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["VALIDATORS", "StudyError", "Study", "RunSpec", "load_study", "parse_study"]

#: The validator names of :func:`adaptlib.validation.evaluate`, in report order.
VALIDATORS: Tuple[str, ...] = ("source-accuracy", "iwv", "dev", "snd", "entropy")

#: Keys whose values change what a run computes: a study database refuses to continue a
#: study whose file changed any of them. ``tasks``, ``methods``, ``configs`` and ``seeds``
#: may grow (new runs are added; recorded ones stay valid); ``selection`` only affects reports.
#: (``load_options`` is compared only against records that stored it: older ones did not.)
RESULT_KEYS: Tuple[str, ...] = ("name", "benchmark", "steps", "checkpoint_every", "batch_size", "lr", "network",
                                "trainer", "validators", "source_val_fraction", "shots", "load_options")

_KEYS = {"name", "benchmark", "tasks", "methods", "configs", "seeds", "steps", "checkpoint_every", "batch_size",
         "lr", "network", "trainer", "validators", "selection", "source_val_fraction", "shots", "database", "root",
         "load_options"}
_NETWORK_KEYS = {"hidden", "bottleneck", "dropout", "bottleneck_norm", "augment"}

#: The backbones a study builds (:func:`adaptlib.compare.build_model`), from the benchmark's recipe:
#: the MLP and the LeNet, both trained from scratch at the study's single learning rate.
STUDY_BACKBONES: Tuple[str, ...] = ("mlp", "lenet")
_TRAINER_KEYS = ("optimizer", "momentum", "weight_decay", "lr_schedule", "label_smoothing")


class StudyError(ValueError):
    """A study file that cannot be read or holds a bad value; the message names the file and the key."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs; picklable, sent to the worker that trains it.

    Attributes:
        study, benchmark, task, method: what is trained.
        config: configuration index (0 = defaults); trial: repetition index.
        seed: the run's seed (:func:`~adaptlib.studies.registry.run_seed`).
        hparams: the configuration (``lr`` and the method's arguments), JSON-ready.
        steps, checkpoint_every, batch_size: the budget; validators are scored every
            ``checkpoint_every`` steps and at the end.
        network: ``{"hidden": [...], "bottleneck": int, "dropout": float, "bottleneck_norm": bool}``,
            plus ``"backbone": "lenet"`` on a benchmark whose recipe reads images (absent: the MLP).
        trainer: the rest of the :class:`~adaptlib.Trainer` recipe: ``optimizer``, ``momentum``,
            ``weight_decay``, ``lr_schedule``, ``label_smoothing``.
        validators: validator names given to :func:`adaptlib.validation.evaluate`.
        source_val_fraction: share of each source class held out for validation.
        shots: labelled target samples per class, for methods that use target labels.
        root: data folder or ``None``; load_options: benchmark loader options.
        device, precision: where and in which precision the run trains (``"cpu"``, ``"32"`` by
            default; set by :func:`~adaptlib.studies.run_study`, recorded with each launch).
    """

    study: str
    benchmark: str
    task: str
    method: str
    config: int
    trial: int
    seed: int
    hparams: Dict[str, Any]
    steps: int
    checkpoint_every: int
    batch_size: int
    network: Dict[str, Any]
    validators: Tuple[str, ...]
    source_val_fraction: float
    shots: int
    root: Optional[str] = None
    load_options: Dict[str, Any] = field(default_factory=dict)
    trainer: Dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "32"

    @property
    def key(self) -> str:
        """The run's identity in the records: ``"method|task|config|trial"``."""
        return run_key(self.method, self.task, self.config, self.trial)


def run_key(method: str, task: str, config: int, trial: int) -> str:
    """``"method|task|config|trial"``, the primary key of a run in the records."""
    return f"{method}|{task}|{int(config)}|{int(trial)}"


@dataclass
class Study:
    """A parsed, validated and resolved study file (see the module docstring for the keys).

    Attributes are the file's keys with every default filled in; ``text`` is the file as
    written and ``path`` where it was read from (``None`` for :func:`parse_study` on text).
    """

    name: str
    benchmark: str
    tasks: Tuple[str, ...]
    methods: Tuple[str, ...]
    configs: int
    seeds: int
    steps: int
    checkpoint_every: int
    batch_size: int
    lr: float
    network: Dict[str, Any]
    trainer: Dict[str, Any]
    validators: Tuple[str, ...]
    selection: str
    source_val_fraction: float
    shots: int
    database: Path
    root: Optional[str] = None
    load_options: Dict[str, Any] = field(default_factory=dict)
    text: str = ""
    path: Optional[Path] = None

    def definition(self) -> Dict[str, Any]:
        """The resolved settings as JSON-ready data (what the records store with the study)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("text", "path")}
        out["database"] = str(self.database)
        return json.loads(json.dumps(out))

    def hparams(self, method: str, config: int) -> Dict[str, Any]:
        """Configuration ``config`` of ``method`` (:func:`~adaptlib.studies.registry.sample_config`)."""
        return sample_config(self.name, method, config, lr=self.lr,
                             defaults=method_defaults_for(self.benchmark, method))

    def runs(self) -> List[RunSpec]:
        """Every run of the study, ordered by method, task, configuration, trial."""
        load_options = dict(self.load_options)
        out = []
        for method in self.methods:
            for config in range(self.configs):
                hp = self.hparams(method, config)
                for task in self.tasks:
                    for trial in range(self.seeds):
                        out.append(RunSpec(
                            study=self.name, benchmark=self.benchmark, task=task, method=method, config=config,
                            trial=trial, seed=run_seed(self.name, method, task, config, trial), hparams=hp,
                            steps=self.steps, checkpoint_every=self.checkpoint_every, batch_size=self.batch_size,
                            network=dict(self.network), validators=tuple(self.validators),
                            source_val_fraction=self.source_val_fraction, shots=self.shots, root=self.root,
                            load_options=load_options, trainer=dict(self.trainer)))
        return out


def _where(source: str, key: str) -> str:
    return f"{source}: {key}"


def _int(raw: Mapping[str, Any], key: str, default: Any, source: str, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise StudyError(f"{_where(source, key)} must be an integer >= {minimum}, got {value!r}")
    return value


def _float(raw: Mapping[str, Any], key: str, default: Any, source: str, low: float, high: float,
           closed_low: bool = False) -> float:
    value = raw.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (low <= value if closed_low else low < value) and value < high
    if not ok:
        bracket = "[" if closed_low else "("
        raise StudyError(f"{_where(source, key)} must be a number in {bracket}{low}, {high}), got {value!r}")
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool, source: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise StudyError(f"{_where(source, key)} must be true or false, got {value!r}")
    return value


def _trainer_table(raw: Mapping[str, Any], settings: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """The ``[trainer]`` table, every key defaulting to the benchmark's recipe; checked by the Trainer's rules."""
    table = raw.get("trainer", {})
    if not isinstance(table, dict):
        raise StudyError(f"{_where(source, 'trainer')} must be a table with keys {list(_TRAINER_KEYS)}, got {table!r}")
    unknown = sorted(set(table) - set(_TRAINER_KEYS))
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {['trainer.' + k for k in unknown]}; known are "
                         f"{['trainer.' + k for k in _TRAINER_KEYS]}")
    t = {"trainer." + k: v for k, v in table.items()}
    out = {k: settings[k] for k in _TRAINER_KEYS}
    for key, choices in (("optimizer", ("sgd", "adam", "adamw")), ("lr_schedule", ("inv", "cosine", "constant"))):
        value = t.get("trainer." + key, out[key])
        if value not in choices:
            raise StudyError(f"{_where(source, 'trainer.' + key)} must be one of {list(choices)}, got {value!r}")
        out[key] = value
    out["momentum"] = _float(t, "trainer.momentum", out["momentum"], source, 0.0, 1.0, closed_low=True)
    out["weight_decay"] = _float(t, "trainer.weight_decay", out["weight_decay"], source, 0.0, float("inf"),
                                 closed_low=True)
    out["label_smoothing"] = _float(t, "trainer.label_smoothing", out["label_smoothing"], source, 0.0, 1.0,
                                    closed_low=True)
    return out


def _names(raw: Mapping[str, Any], key: str, default: Any, source: str) -> List[str]:
    value = raw.get(key, default)
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{_where(source, key)} must be a non-empty list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise StudyError(f"{_where(source, key)} lists a name twice: {list(value)}")
    return list(value)


def _check_configs(name: str, methods: List[str], configs: int, source: str) -> None:
    """Build every method with each of its ``configs`` configurations once, before any run.

    The configurations are drawn from the search spaces declared beside the methods; a draw
    that a method refuses (a search space outside the method's own checks) fails here with the
    method, the configuration and the parameter named, instead of in every run that uses it.
    """
    from ..compare import _probe_model
    from ..methods.search_space import check_hparams
    from .registry import split_hparams

    for method in methods:
        for config in range(configs):
            hparams = split_hparams(sample_config(name, method, config))[1]
            try:
                check_hparams(METHODS[method], hparams, model=_probe_model())
            except ValueError as e:
                raise StudyError(f"{_where(source, 'methods')}: configuration {config} of {e} (drawn from the "
                                 f"search space of {METHODS[method].__name__})") from None


def parse_study(text: str, *, source: str = "<study>", path: Optional[Path] = None) -> Study:
    """Parse and validate the TOML ``text`` of a study file; fill in every default.

    Raises:
        StudyError: invalid TOML, an unknown key, a missing ``name`` or ``benchmark``, a bad
            value, or a sampled configuration that its method refuses; the message names
            ``source`` and the key (and lists what is allowed).
    """
    from ..datasets import BENCHMARKS, get_benchmark
    from ..datasets.folders import FOLDER_PREFIX, folder_spec, parse_folder_spec

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{source} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(_KEYS)}")
    for key in ("name", "benchmark"):
        if key not in raw:
            raise StudyError(f"{_where(source, key)} is required")
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise StudyError(f"{_where(source, key)} must be a non-empty string, got {raw[key]!r}")
    name, benchmark = raw["name"].strip(), raw["benchmark"]
    if any(c in name for c in "/\\|") or name in (".", ".."):
        raise StudyError(f"{_where(source, 'name')} must not contain '/', '\\\\' or '|', got {name!r}")
    if benchmark.startswith(FOLDER_PREFIX):  # the user's own domains; a relative path is relative to the cwd
        try:
            folder, options = parse_folder_spec(benchmark)
            benchmark = folder_spec(folder, **options)
            bench = get_benchmark(benchmark)
        except (ValueError, OSError, ImportError) as e:
            raise StudyError(f"{_where(source, 'benchmark')}: {e}") from None
    elif benchmark not in BENCHMARKS:
        raise StudyError(f"{_where(source, 'benchmark')}: unknown benchmark {benchmark!r}; known are "
                         f"{sorted(BENCHMARKS)}, or 'folder:<path>' for your own domains")
    else:
        bench = BENCHMARKS[benchmark]
    settings = settings_for(benchmark)
    backbone = settings.get("backbone", "mlp")
    if backbone not in STUDY_BACKBONES:  # a pretrained backbone needs its own learning rates; not a silent swap
        raise StudyError(f"{_where(source, 'benchmark')}: studies train the backbones {list(STUDY_BACKBONES)} "
                         f"from scratch, and {benchmark!r} uses {backbone!r}; use `adaptlib compare {benchmark}` "
                         f"instead")

    tasks_raw = raw.get("tasks", "all")
    if tasks_raw == "all":
        tasks = list(bench.tasks)
    else:
        tasks = _names(raw, "tasks", None, source)
        bad = [t for t in tasks if t not in bench.tasks]
        if bad:
            raise StudyError(f"{_where(source, 'tasks')}: unknown task(s) {bad} for {benchmark}; known are "
                             f"{list(bench.tasks)} (or \"all\")")
    methods = _names(raw, "methods", list(DEFAULT_METHODS), source)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise StudyError(f"{_where(source, 'methods')}: unknown method(s) {bad}; known are {sorted(METHODS)}")
    configs = _int(raw, "configs", 1, source)
    _check_configs(name, methods, configs, source)
    seeds = _int(raw, "seeds", 1, source)
    steps = _int(raw, "steps", settings["steps"], source)
    checkpoint_every = _int(raw, "checkpoint_every", max(1, steps // 4), source)
    if checkpoint_every > steps:
        raise StudyError(f"{_where(source, 'checkpoint_every')} ({checkpoint_every}) must be at most steps ({steps})")
    batch_size = _int(raw, "batch_size", settings["batch_size"], source)
    lr = _float(raw, "lr", settings["lr"], source, 0.0, float("inf"))

    net_raw = raw.get("network", {})
    if not isinstance(net_raw, dict):
        raise StudyError(f"{_where(source, 'network')} must be a table with keys {sorted(_NETWORK_KEYS)}, "
                         f"got {net_raw!r}")
    unknown = sorted(set(net_raw) - _NETWORK_KEYS)
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {['network.' + k for k in unknown]}; known are "
                         f"{sorted('network.' + k for k in _NETWORK_KEYS)}")
    hidden = net_raw.get("hidden", list(settings["hidden"]))
    if (not isinstance(hidden, list) or not hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
        raise StudyError(f"{_where(source, 'network.hidden')} must be a non-empty list of positive integers, "
                         f"got {hidden!r}")
    net = {"network." + k: v for k, v in net_raw.items()}
    network = {"hidden": list(hidden),
               "bottleneck": _int(net, "network.bottleneck", settings["bottleneck"], source),
               "dropout": _float(net, "network.dropout", settings["dropout"], source, 0.0, 1.0, closed_low=True),
               "bottleneck_norm": _bool(net, "network.bottleneck_norm", bool(settings["bottleneck_norm"]), source)}
    if backbone != "mlp":  # absent means the MLP, so the records of MLP studies keep their definition
        network["backbone"] = backbone
    try:  # absent means none, so the records of studies without augmentation keep their definition
        augment = _check_augment(net_raw.get("augment", settings.get("augment", {})), backbone)
    except ValueError as e:
        raise StudyError(f"{_where(source, 'network.augment')}: {e}") from None
    if augment:
        network["augment"] = augment
    trainer = _trainer_table(raw, settings, source)

    validators = _names(raw, "validators", list(VALIDATORS), source)
    bad = [v for v in validators if v not in VALIDATORS]
    if bad:
        raise StudyError(f"{_where(source, 'validators')}: unknown validator(s) {bad}; known are {list(VALIDATORS)}")
    selection = raw.get("selection", "dev" if "dev" in validators else validators[0])
    if selection not in validators:
        raise StudyError(f"{_where(source, 'selection')} must be one of the study's validators {validators}, "
                         f"got {selection!r}")
    source_val_fraction = _float(raw, "source_val_fraction", 0.2, source, 0.0, 1.0)
    shots = _int(raw, "shots", 3, source)
    database = raw.get("database", f"results/studies/{name}/records.sqlite")
    if not isinstance(database, str) or not database:
        raise StudyError(f"{_where(source, 'database')} must be a file path, got {database!r}")
    root = raw.get("root")
    if root is not None and (not isinstance(root, str) or not root):
        raise StudyError(f"{_where(source, 'root')} must be a folder path, got {root!r}")
    load_options = raw.get("load_options", dict(settings.get("load_options", {})))
    if not isinstance(load_options, dict) or not all(isinstance(k, str) for k in load_options):
        raise StudyError(f"{_where(source, 'load_options')} must be a table of the loader's options, e.g. "
                         f'{{transform = "log1p"}}, got {load_options!r}')
    return Study(name=name, benchmark=benchmark, tasks=tuple(tasks), methods=tuple(methods), configs=configs,
                 seeds=seeds, steps=steps, checkpoint_every=checkpoint_every, batch_size=batch_size, lr=lr,
                 network=network, trainer=trainer, validators=tuple(validators), selection=selection,
                 source_val_fraction=source_val_fraction, shots=shots, database=Path(database), root=root,
                 load_options=dict(load_options), text=text, path=path)


def load_study(path: Union[str, Path], *, root: Optional[str] = None,
               database: Optional[Union[str, Path]] = None) -> Study:
    """Read and validate the study file at ``path`` (see the module docstring).

    Args:
        path: the TOML file.
        root: data folder overriding the file's ``root``.
        database: records file overriding the file's ``database``.

    Raises:
        FileNotFoundError: no file at ``path``.
        StudyError: the file is not valid TOML or holds an unknown key or a bad value (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no study file at {path}")
    study = parse_study(path.read_text(), source=str(path), path=path)
    if root is not None:
        study.root = str(root)
    if database is not None:
        study.database = Path(database)
    return study
