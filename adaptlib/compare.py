"""The comparison run: every chosen method on every task of a benchmark, same network and budget.

``adaptlib compare office-caltech10-surf --seeds 3`` calls :func:`compare`, which trains each
(method, task, seed) with the shared :class:`~adaptlib.Trainer`, and writes the task x
method table of target accuracy (mean +- std over seeds, plus the mean over tasks) as
Markdown, CSV and JSON together with the configuration and library versions.

Units: every accuracy this module returns or writes to CSV/JSON is a fraction in [0, 1]
(as ``History``, ``Trainer.evaluate`` and the validators); only the Markdown table shows
percent, and says so.

Everything is checked before the first run: benchmark, methods, tasks, data files and the
hyper-parameters of ``method_kwargs`` (:func:`check_method_kwargs`). A run whose loss
becomes NaN or inf stops the comparison with :class:`RunDiverged`, one line that names the
run, the step and what to try.
"""
from __future__ import annotations

import csv
import difflib
import inspect
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .methods import METHODS, get_method
from .methods.search_space import check_hparams
from .models import AdaptModel, RandomAffine, lenet, mlp
from .trainer import Trainer
from ._recipes import (BACKBONES, BENCHMARK_SETTINGS, METHOD_DEFAULTS, RECIPE_KEYS, USER_DATA_SETTINGS,
                       method_defaults_for, settings_for)

__all__ = ["DEFAULT_METHODS", "BENCHMARK_SETTINGS", "CompareConfig", "ComparisonResult", "compare",
           "run_one", "few_shot_split", "library_versions", "check_method_kwargs", "RunDiverged", "RESULT_FILES",
           "check_output_folder", "RECIPE_KEYS", "BACKBONES", "build_model", "build_trainer", "USER_DATA_SETTINGS",
           "settings_for", "default_output", "METHOD_DEFAULTS", "method_defaults_for", "JOURNAL_FILE",
           "read_journal"]

#: The files :meth:`ComparisonResult.save` writes into its folder.
RESULT_FILES: Tuple[str, ...] = ("table.md", "results.csv", "results.json")

#: The journal of a comparison in its output folder: one JSON line per finished run, appended as
#: each run ends, so that an interrupted comparison loses no finished run and ``adaptlib compare
#: --resume`` trains only the missing ones (:func:`compare`'s ``journal`` and ``resume``).
JOURNAL_FILE = "runs.jsonl"

# Fields of a resolved CompareConfig that choose which runs a comparison makes, how many
# processes run them and where the data files are read from; every other field decides what a
# run trains, and must be equal for a journal's run to stand in for a new one. A method's own
# entry of ``method_kwargs`` is compared per run.
_NOT_RUN_SETTINGS = ("methods", "tasks", "seeds", "workers", "root", "download", "method_kwargs")

#: What ``adaptlib compare`` trains by default: the baseline, the classic alignment methods (adversarial,
#: MMD, covariance), a modern one (MCC) and a composition (DANN + MCC). The other registered methods
#: (DeepJDOT, CDAN+E, BNM, ... ``adaptlib list``) are one ``--methods`` away; the set is sized so that
#: SURF with 3 seeds runs in under 15 minutes on 2 cores (11 min measured; README, "Results").
DEFAULT_METHODS: Tuple[str, ...] = ("source-only", "dann", "dan", "deep-coral", "mcc", "dann+mcc")


def default_output(benchmark: str) -> Path:
    """``results/<benchmark>``; ``results/folder-<folder name>`` for a folder benchmark."""
    if benchmark.startswith("folder:"):
        name = Path(benchmark[len("folder:"):].partition("?")[0]).name or "data"
        return Path("results") / f"folder-{name}"
    return Path("results") / benchmark


@dataclass
class CompareConfig:
    """Everything that defines a comparison run; stored with its results.

    Attributes:
        benchmark: benchmark name (``adaptlib.datasets.BENCHMARKS``), or ``"folder:<path>[?options]"``
            for the user's own domains (:mod:`adaptlib.datasets.folders`; recipe
            :data:`USER_DATA_SETTINGS`).
        methods: method registry names.
        method_kwargs: method name (one of ``methods``) -> its hyper-parameters, e.g.
            ``{"dann": {"trade_off": 0.5}}``; checked by :func:`check_method_kwargs`. They override,
            name by name, the benchmark's own method defaults (:data:`METHOD_DEFAULTS`, chosen
            without target labels), which :meth:`resolved` merges in.
        tasks: task names (``None``: all tasks of the benchmark).
        seeds: number of seeds (``0..seeds-1``) per (task, method).
        steps, batch_size, lr: Trainer budget and optimizer (``None``: benchmark default).
        backbone_lr_multiplier: the backbone's learning rate is ``lr`` times this (0.1 for a
            pretrained backbone, as TLlib; ``None``: benchmark default).
        optimizer, momentum, weight_decay, lr_schedule, label_smoothing: the rest of the
            :class:`~adaptlib.Trainer` recipe (``None``: benchmark default).
        backbone: ``"mlp"``, ``"lenet"``, ``"efficientnet-lite0"`` or ``"all-MiniLM-L6-v2"`` (:data:`BACKBONES`,
            :func:`build_model`; ``None``: the benchmark default).
        hidden, bottleneck, dropout, bottleneck_norm: the shared backbone's widths and dropout,
            and the bottleneck (:func:`build_model`; ``None``: default).
        load_options: preprocessing options of the benchmark's loader, e.g.
            ``{"preprocess": "zscore"}`` (``None``: the benchmark default in
            ``BENCHMARK_SETTINGS``).
        augment: training-time augmentation of an image backbone's inputs: the keyword
            arguments of :class:`~adaptlib.models.RandomAffine` (``degrees``, ``translate``,
            ``scale``), e.g. ``{"degrees": 10, "translate": 0.1, "scale": (0.9, 1.1)}``; ``{}``
            for none; ``None``: the benchmark default. Checked by :meth:`resolved`.
        shots: labelled target samples per class for methods that use target labels.
        root: data folder (``None``: ``$ADAPTLIB_DATA`` or the cache folder).
        workers: parallel processes (each runs one training at a time with one thread).
        device: where every run trains, ``"cpu"`` (default) or ``"cuda"``/``"cuda:<i>"``;
            checked before any run (``ValueError`` when absent).
        precision: ``"32"`` (default), ``"bf16"`` or ``"fp16"``: the Trainer's mixed precision.
    """

    benchmark: str = "office-caltech10-surf"
    methods: Tuple[str, ...] = DEFAULT_METHODS
    tasks: Optional[Tuple[str, ...]] = None
    seeds: int = 3
    steps: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    backbone_lr_multiplier: Optional[float] = None
    backbone: Optional[str] = None
    hidden: Optional[Tuple[int, ...]] = None
    bottleneck: Optional[int] = None
    dropout: Optional[float] = None
    bottleneck_norm: Optional[bool] = None
    optimizer: Optional[str] = None
    momentum: Optional[float] = None
    weight_decay: Optional[float] = None
    lr_schedule: Optional[str] = None
    label_smoothing: Optional[float] = None
    load_options: Optional[Dict[str, Any]] = None
    augment: Optional[Dict[str, Any]] = None
    shots: int = 3
    root: Optional[str] = None
    download: bool = False
    workers: int = 0
    method_kwargs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    precision: str = "32"

    def resolved(self) -> "CompareConfig":
        """A copy with every ``None`` replaced by the benchmark default, validated."""
        from .datasets import get_benchmark

        bench = get_benchmark(self.benchmark)
        defaults = settings_for(self.benchmark)
        out = CompareConfig(**asdict(self))
        for key in RECIPE_KEYS:
            if getattr(out, key) is None:
                setattr(out, key, defaults.get(key, BENCHMARK_SETTINGS["office-caltech10-surf"][key]))
        from ._precision import MixedPrecision, check_device

        out.device = str(check_device(out.device))
        out.precision = MixedPrecision(out.precision, torch.device(out.device)).precision
        out.load_options = dict(out.load_options)  # type: ignore[arg-type]
        out.augment = _check_augment(out.augment, out.backbone)
        out.hidden = tuple(int(h) for h in out.hidden)  # type: ignore[union-attr]
        if out.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {out.backbone!r}")
        out.methods = tuple(out.methods)
        for m in out.methods:
            if "+" in m and m not in METHODS and all(part in METHODS for part in m.split("+")):
                METHODS[m]  # a composition of known methods that cannot be composed (MCD, SHOT): its ValueError
        unknown = [m for m in out.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"methods: unknown {unknown}; known are {sorted(METHODS)} (and compositions of them "
                             f"joined by '+', e.g. 'dann+mcc')")
        if not out.methods:
            raise ValueError("methods must name at least one method")
        out.tasks = tuple(out.tasks) if out.tasks else tuple(bench.tasks)
        bad = [t for t in out.tasks if t not in bench.tasks]
        if bad:
            hint = ""
            if any(t.endswith("-") for t in bad):  # the shell took '>A' of an unquoted C->A as a redirection
                hint = (" (the shell read '>' as a redirection: quote the tasks, e.g. --tasks 'C->A,A->W'; "
                        "the unquoted command may also have created a file named after the target domain)")
            raise ValueError(f"tasks: unknown {bad} for {self.benchmark}; known are {list(bench.tasks)}{hint}")
        if not isinstance(out.seeds, int) or out.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {out.seeds!r}")
        if out.shots < 1:
            raise ValueError(f"shots must be a positive integer, got {out.shots!r}")
        if out.workers <= 0:
            out.workers = max(1, min(os.cpu_count() or 1, 8))
        user = check_method_kwargs(out.method_kwargs, out.methods)
        # The benchmark's own defaults of a method (METHOD_DEFAULTS, chosen without target labels),
        # under the user's: the resolved config records every hyper-parameter that left a paper default.
        merged = {m: {**method_defaults_for(self.benchmark, m), **user.get(m, {})} for m in out.methods}
        out.method_kwargs = check_method_kwargs({m: hp for m, hp in merged.items() if hp}, out.methods)
        return out


_AUGMENT_KEYS = ("degrees", "translate", "scale")


def _check_augment(augment: Any, backbone: Optional[str]) -> Dict[str, Any]:
    """A resolved ``augment`` recipe field: a dict of :class:`RandomAffine` arguments (``scale`` a list)."""
    if not isinstance(augment, Mapping):
        raise ValueError(f"augment must be a mapping of RandomAffine arguments ({', '.join(_AUGMENT_KEYS)}) "
                         f"or {{}} for none, got {augment!r}")
    unknown = sorted(set(augment) - set(_AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"augment: unknown {unknown}; known are {list(_AUGMENT_KEYS)}")
    out = dict(augment)
    if "scale" in out:
        try:
            out["scale"] = [float(v) for v in out["scale"]]
        except (TypeError, ValueError):
            raise ValueError(f"augment: scale must be a (low, high) pair, got {out['scale']!r}") from None
    if out and backbone not in _IMAGE_BACKBONES:
        raise ValueError(f"augment needs an image backbone ({', '.join(_IMAGE_BACKBONES)}), "
                         f"the recipe's is {backbone!r}; pass augment={{}}")
    if out:
        try:  # RandomAffine's own range checks
            RandomAffine((1, 16, 16), **out)
        except ValueError as e:
            raise ValueError(f"augment: {e}") from None
    return out


def _fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _probe_model() -> AdaptModel:
    """A tiny model to run a method's ``setup`` on while checking its hyper-parameters."""
    return AdaptModel(mlp(4, [4]), num_classes=2, bottleneck_dim=4)


def check_method_kwargs(method_kwargs: Mapping[str, Any], methods: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Check ``method_kwargs`` (method name -> hyper-parameters) for the ``methods`` of a run; return a copy.

    Every key must be one of ``methods`` (a misspelled or absent method would otherwise be
    ignored), and each method's hyper-parameters pass
    :func:`adaptlib.methods.search_space.check_hparams`: known names (the valid ones are
    listed), the types of the ``__init__`` defaults, ``>= 0`` for weights and scales searched on
    a log scale, and the method's own constructor and ``setup`` checks.

    Raises:
        ValueError: the first problem found, naming the method and the parameter.
    """
    if not isinstance(method_kwargs, Mapping):
        raise ValueError("method_kwargs must map method names to their hyper-parameters, e.g. "
                         f'{{"dann": {{"trade_off": 0.5}}}}, got {method_kwargs!r}')
    run = ", ".join(methods)
    out: Dict[str, Dict[str, Any]] = {}
    for name, hparams in method_kwargs.items():
        if name not in methods:
            if name in METHODS:
                raise ValueError(f"method_kwargs: {name!r} is not among the methods of this run ({run}); "
                                 f"add it to the methods (--methods) or remove its hyper-parameters")
            close = difflib.get_close_matches(str(name), list(methods) + sorted(METHODS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"method_kwargs: unknown method {name!r}{hint}; the methods of this run are {run} "
                             f"(known methods: {', '.join(sorted(METHODS))})")
        try:
            out[name] = check_hparams(METHODS[name], hparams, model=_probe_model())
        except ValueError as e:
            raise ValueError(f"method_kwargs: {e}") from None
    return out


class RunDiverged(FloatingPointError):
    """A run of a comparison whose loss became NaN or inf; the message names the run, the step and what to try."""


def _init_worker() -> None:
    """Initializer of every worker process of a comparison or a study.

    One torch thread per process (runs are parallelised over processes), and a thread lock
    for tqdm: a tqdm bar, even a disabled one such as the Trainer's in a worker, otherwise
    creates a ``multiprocessing.RLock``, a named semaphore the resource tracker reports as
    "leaked" when the pool stops its workers.
    """
    from tqdm import tqdm

    torch.set_num_threads(1)
    tqdm.set_lock(threading.RLock())


def few_shot_split(labels: torch.Tensor, shots: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pick ``shots`` random indices per class of ``labels`` ``(N,)``; return ``(labelled, rest)`` index tensors.

    Classes with fewer than ``shots + 1`` samples raise ``ValueError`` (nothing would be left to score).
    """
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() <= shots:
            raise ValueError(f"shots={shots} leaves no test sample for class {int(c)} ({idx.numel()} samples)")
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:shots]])
    labelled = torch.cat(chosen).sort().values
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[labelled] = False
    return labelled, torch.nonzero(mask).flatten()


def _load_options(config: CompareConfig) -> Dict[str, Any]:
    if config.load_options is not None:
        return dict(config.load_options)
    return dict(settings_for(config.benchmark).get("load_options", {}))


_IMAGE_BACKBONES = ("lenet", "efficientnet-lite0")
_NETWORK_NAMES = {"mlp": "MLP", "lenet": "LeNet", "efficientnet-lite0": "EfficientNet-Lite0 (ImageNet weights)"}


def _image_shape(input_dim: int) -> Tuple[int, int, int]:
    side = math.isqrt(int(input_dim))
    if side * side != int(input_dim):
        raise ValueError(f"an image backbone needs square grey images as rows of side**2 values, got input_dim={input_dim}")
    return (1, side, side)


def build_model(config: CompareConfig, input_dim: int, num_classes: int) -> AdaptModel:
    """The shared network of a (resolved) ``config``: its backbone, then the bottleneck and the head.

    Backbones (``config.backbone``):

    * ``"mlp"``: ``mlp(input_dim, hidden, dropout)``.
    * ``"lenet"``: :func:`~adaptlib.models.lenet` on square grey images given as rows of
      ``input_dim = side**2`` values, fully connected width ``hidden[-1]``, ``dropout``.
    * ``"efficientnet-lite0"``: :class:`adaptlib.vision.EfficientNetLite0Backbone` (ImageNet
      weights, 1280 features) on the same square grey images at their own size (the
      benchmark's ``load_options["size"]``); ``hidden`` and ``dropout`` are not used. Needs
      the ``vision`` extra.
    * ``"all-MiniLM-L6-v2"``: ``SentenceEncoder() -> mlp(384, hidden, dropout)``: inputs are
      token ids ``(N, L)`` int64 (``input_dim`` is then ignored) and the pretrained encoder is
      trained with the rest. Needs the ``text`` extra.

    A non-empty ``config.augment`` puts a :class:`~adaptlib.models.RandomAffine` with those
    arguments in front of an image backbone (random rotation, scale and shift of each training
    image; the identity in eval mode).

    Inputs ``(N, input_dim)``; features ``(N, bottleneck)`` (the backbone's width without a
    bottleneck); logits ``(N, num_classes)``. Seed torch before calling it for a seeded run.

    Raises:
        ValueError: as :func:`~adaptlib.models.mlp`, :func:`~adaptlib.models.lenet` and
            :class:`~adaptlib.models.AdaptModel` (bad widths, dropout outside [0, 1),
            ``bottleneck_norm`` without a bottleneck), an unknown backbone, or an image
            backbone on a non-square ``input_dim``.
        ImportError: ``"efficientnet-lite0"`` without the ``vision`` extra, or the text backbone
            without the ``text`` extra.
    """
    backbone = getattr(config, "backbone", None) or "mlp"
    if backbone == "mlp":
        net: torch.nn.Module = mlp(input_dim, config.hidden, dropout=config.dropout)  # type: ignore[arg-type]
        width = None
    elif backbone == "lenet":
        width = int(config.hidden[-1])  # type: ignore[index]
        net = lenet(_image_shape(input_dim), hidden=width, dropout=config.dropout)  # type: ignore[arg-type]
    elif backbone == "efficientnet-lite0":
        from .vision import EfficientNetLite0Backbone

        net = EfficientNetLite0Backbone(_image_shape(input_dim))
        width = net.out_features
    elif backbone == "all-MiniLM-L6-v2":
        from .backbones import SentenceEncoder

        encoder = SentenceEncoder()
        net = torch.nn.Sequential(encoder, mlp(encoder.output_dim, config.hidden,  # type: ignore[arg-type]
                                               dropout=config.dropout))  # type: ignore[arg-type]
        width = None
    else:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {backbone!r}")
    augment = getattr(config, "augment", None) or {}
    if augment:
        if backbone not in _IMAGE_BACKBONES:
            raise ValueError(f"augment needs an image backbone ({', '.join(_IMAGE_BACKBONES)}), got {backbone!r}")
        net = torch.nn.Sequential(RandomAffine(_image_shape(input_dim), **augment), net)
    return AdaptModel(net, num_classes=num_classes, backbone_dim=width, bottleneck_dim=config.bottleneck,
                      dropout=0.0, bottleneck_norm=bool(config.bottleneck_norm))


def build_trainer(config: CompareConfig, model: AdaptModel, method: Any, seed: int, **kwargs: Any) -> Trainer:
    """The :class:`~adaptlib.Trainer` of a (resolved) ``config``'s recipe for ``method`` and ``seed``, on
    ``config.device`` with ``config.precision``.

    ``kwargs`` go to the Trainer as well (e.g. ``eval_every``).

    Raises:
        ValueError / TypeError: as the Trainer, for a bad recipe value.
    """
    multiplier = getattr(config, "backbone_lr_multiplier", None) or 1.0
    return Trainer(model, method, steps=config.steps, batch_size=config.batch_size,  # type: ignore[arg-type]
                   optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,  # type: ignore[arg-type]
                   backbone_lr_multiplier=float(multiplier),
                   weight_decay=config.weight_decay, lr_schedule=config.lr_schedule,  # type: ignore[arg-type]
                   label_smoothing=config.label_smoothing, seed=seed,  # type: ignore[arg-type]
                   device=getattr(config, "device", "cpu"), precision=getattr(config, "precision", "32"),
                   progress_bar=False, **kwargs)


def _task_seed(task: str, seed: int) -> int:
    return (sum(ord(ch) * 131 ** i for i, ch in enumerate(task)) + 7919 * seed) % (2 ** 31)


def run_one(config: CompareConfig, task: str, method: str, seed: int) -> Dict[str, Any]:
    """Train ``method`` on ``task`` with ``seed`` under ``config`` (resolved); return its record.

    The record's ``accuracy`` is the target test accuracy, a fraction in [0, 1].

    Raises:
        RunDiverged: the loss became NaN or inf (a :class:`FloatingPointError`).
    """
    from .datasets import get_benchmark

    torch.set_num_threads(1)
    bench = get_benchmark(config.benchmark)
    data = bench.load(task, root=config.root, download=config.download, **_load_options(config))
    m = get_method(method, **config.method_kwargs.get(method, {}))
    torch.manual_seed(seed)
    model = build_model(config, data.source.x.shape[1], data.num_classes)
    trainer = build_trainer(config, model, m, seed)
    test_x, test_y = data.target_test.x, data.target_test.y
    labelled = None
    if m.uses_target_labels:
        idx, rest = few_shot_split(data.target_train.y, config.shots, _task_seed(task, seed))
        labelled = (data.target_train.x[idx], data.target_train.y[idx])
        same = data.target_train.x.shape == test_x.shape and torch.equal(data.target_train.x, test_x)
        if same:  # score on the target samples that were not used for training
            test_x, test_y = test_x[rest], test_y[rest]
    start = time.perf_counter()
    try:
        trainer.fit(data.source if m.uses_source else None, data.target_train.x if m.uses_target else None,
                    target_labeled=labelled,
                    eval_sets={"target": (test_x, test_y)})
    except FloatingPointError as e:
        weights = " or smaller weights of its loss terms (--method-kwargs)" if m.search_space else ""
        raise RunDiverged(f"{method} on {task} (seed {seed}) diverged: {e}. Try a smaller learning rate "
                          f"(--lr, it was {config.lr:g}){weights}") from None
    return {
        "benchmark": config.benchmark, "task": task, "method": method, "seed": seed,
        "accuracy": trainer.history.final_eval()["target/accuracy"],
        "uses_target_labels": m.uses_target_labels, "n_test": int(test_y.numel()),
        "train_seconds": time.perf_counter() - start, "hparams": m.hparams(),
        "final_losses": trainer.history.train[-1] if trainer.history.train else {},
    }


def _run_star(args: Tuple[CompareConfig, str, str, int]) -> Dict[str, Any]:
    return run_one(*args)


def library_versions() -> Dict[str, str]:
    """Versions of Python, the platform and every library the results depend on."""
    import numpy
    import ot
    import scipy
    import sklearn

    from . import __version__

    return {"adaptlib": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
            "torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "POT": ot.__version__, "cpu_count": str(os.cpu_count())}


@dataclass
class ComparisonResult:
    """Records of a comparison run and the tables built from them.

    Attributes:
        config: the resolved :class:`CompareConfig`.
        records: one dict per (task, method, seed) run, as returned by :func:`run_one`
            (``accuracy``: a fraction in [0, 1]).
        seconds: wall-clock time of the whole run (of this call only, when it resumed).
        reused: how many of ``records`` were taken from the journal (``compare(resume=True)``)
            rather than trained by this call.
    """

    config: CompareConfig
    records: List[Dict[str, Any]]
    seconds: float
    reused: int = 0

    def cell(self, task: str, method: str) -> List[float]:
        """Accuracies (fractions in [0, 1]) over seeds for one (task, method), in seed order."""
        return [r["accuracy"] for r in sorted(self.records, key=lambda r: r["seed"])
                if r["task"] == task and r["method"] == method]

    def task_mean(self, method: str) -> List[float]:
        """Per seed, the accuracy (fraction) averaged over all tasks (its mean and std make the 'Mean' row)."""
        per_seed = []
        for seed in range(self.config.seeds):
            accs = [r["accuracy"] for r in self.records if r["method"] == method and r["seed"] == seed]
            if accs:
                per_seed.append(sum(accs) / len(accs))
        return per_seed

    def rows(self) -> List[Dict[str, Any]]:
        """Long-format summary: one row per (task, method) plus a ``Mean`` task per method.

        ``mean``, ``std`` (population std over seeds) and ``per_seed`` are accuracies as
        fractions in [0, 1].
        """
        out = []
        for method in self.config.methods:
            for task in list(self.config.tasks or ()) + ["Mean"]:
                accs = self.task_mean(method) if task == "Mean" else self.cell(task, method)
                out.append({"task": task, "method": method, "mean": statistics.fmean(accs),
                            "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0, "n_seeds": len(accs),
                            "uses_target_labels": METHODS[method].uses_target_labels,
                            "per_seed": accs})
        return out

    def markdown(self) -> str:
        """The task x method table (mean +- std over seeds, %), target-label rows flagged."""
        methods = list(self.config.methods)
        head = [m + (" †" if METHODS[m].uses_target_labels else "") for m in methods]
        summary = {(r["task"], r["method"]): r for r in self.rows()}
        lines = ["| task | " + " | ".join(head) + " |", "|---" * (len(methods) + 1) + "|"]
        for task in list(self.config.tasks or ()) + ["Mean"]:
            cells = [f"{100 * summary[task, m]['mean']:.1f} ± {100 * summary[task, m]['std']:.1f}" for m in methods]
            name = "**Mean**" if task == "Mean" else task
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        backbone = self.config.backbone or "mlp"
        network = f"the same {_NETWORK_NAMES.get(backbone, backbone)} for every method"
        if backbone == "all-MiniLM-L6-v2":
            network = (f"the same {backbone} encoder + MLP for every method, the encoder trained at "
                       f"{self.config.backbone_lr_multiplier:g} x lr")
        if getattr(self.config, "augment", None):
            network += " with random affine augmentation (" + ", ".join(
                f"{k} {_fmt_value(v) if k != 'scale' else '-'.join(_fmt_value(float(x)) for x in v)}"
                for k, v in self.config.augment.items()) + ")"
        note = (f"\nTarget accuracy (%), mean ± std over {self.config.seeds} seed(s); {self.config.steps} steps, "
                f"batch {self.config.batch_size}, {self.config.optimizer} lr {self.config.lr:g}, {network}"
                + (f", {self.config.precision} mixed precision" if self.config.precision != "32" else "") + ".")
        changed = {m: hp for m, hp in (self.config.method_kwargs or {}).items() if hp and m in methods}
        if changed:  # the benchmark's own defaults (METHOD_DEFAULTS) or the user's --method-kwargs
            note += " Hyper-parameters set: " + "; ".join(
                f"{m} " + ", ".join(f"{k}={_fmt_value(v)} ({self._origin(m, k, v)})" for k, v in hp.items())
                for m, hp in changed.items()) + "; the others are the method's defaults."
        if any(METHODS[m].uses_target_labels for m in methods):
            note += (f" † uses {self.config.shots} labelled target samples per class and is scored on the other "
                     "target samples; the other methods use no target label.")
        return "\n".join(lines) + "\n" + note + "\n"

    def _origin(self, method: str, name: str, value: Any) -> str:
        """Where a hyper-parameter of the table came from, for its footer."""
        if method_defaults_for(self.config.benchmark, method).get(name, object()) == value:
            return "this benchmark's default, chosen by DEV"
        init = inspect.signature(METHODS[method].__init__).parameters.get(name)
        if init is not None and init.default == value:
            return "the method's default, set for this run"
        return "set for this run"

    def save(self, folder: os.PathLike, *, overwrite: bool = False) -> Dict[str, Path]:
        """Write ``table.md``, ``results.csv`` and ``results.json`` into ``folder``; return their paths.

        ``table.md`` shows percent; ``results.csv`` (columns ``mean``, ``std``, ``per_seed``) and
        ``results.json`` (``summary``, ``records``) hold accuracies as fractions in [0, 1].

        Raises:
            FileExistsError: ``folder`` already holds one of these files and ``overwrite`` is
                False (a second comparison does not silently replace the first one's results).
        """
        folder = Path(folder)
        if not overwrite:  # the folder's journal (runs.jsonl) may be this comparison's own
            check_output_folder(folder, files=RESULT_FILES)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": folder / "table.md", "csv": folder / "results.csv", "json": folder / "results.json"}
        paths["markdown"].write_text(self.markdown())
        with open(paths["csv"], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["benchmark", "task", "method", "mean", "std", "n_seeds", "uses_target_labels", "per_seed"])
            for r in self.rows():
                writer.writerow([self.config.benchmark, r["task"], r["method"], f"{r['mean']:.4f}", f"{r['std']:.4f}",
                                 r["n_seeds"], r["uses_target_labels"], " ".join(f"{a:.4f}" for a in r["per_seed"])])
        paths["json"].write_text(json.dumps({
            "units": {"accuracy": "fraction in [0, 1]"},
            "config": asdict(self.config), "versions": library_versions(), "seconds": self.seconds,
            "summary": self.rows(), "records": self.records}, indent=2, default=str))
        return paths


def check_output_folder(folder: os.PathLike, *, overwrite: bool = False, resume: bool = False,
                        files: Sequence[str] = (*RESULT_FILES, JOURNAL_FILE)) -> None:
    """Raise ``FileExistsError`` if ``folder`` holds one of ``files`` of an earlier comparison (its
    results and journal, :data:`JOURNAL_FILE`), unless ``overwrite`` (start again) or ``resume``
    (continue it)."""
    folder = Path(folder)
    existing = [name for name in files if (folder / name).exists()]
    if existing and not (overwrite or resume):
        raise FileExistsError(f"{folder} already holds the results of an earlier comparison ({', '.join(existing)}); "
                              "pass --resume to keep its finished runs and train only the missing ones, "
                              "--overwrite (overwrite=True) to replace them, or --output to write elsewhere")


def _run_settings(config: CompareConfig, method: str) -> Dict[str, Any]:
    """What one run of ``method`` trains under the resolved ``config``, as JSON values."""
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_RUN_SETTINGS}
    settings["method_kwargs"] = dict(config.method_kwargs.get(method, {}))
    return json.loads(json.dumps(settings, default=str))


def read_journal(path: os.PathLike, config: CompareConfig) -> Dict[Tuple[str, str, int], Dict[str, Any]]:
    """The finished runs recorded in the journal ``path`` (:data:`JOURNAL_FILE`), by ``(task, method, seed)``.

    ``config`` must be resolved (:meth:`CompareConfig.resolved`). Only runs of its benchmark
    are read; each must have been trained with the same settings as ``config`` would train it
    (network, recipe, budget, load options, device, precision, and the method's own
    hyper-parameters when ``config`` trains that method; the method, task and seed sets and the
    worker count may differ), so that one folder never mixes two recipes. A
    missing file is an empty journal. A malformed *last* line (a comparison killed while it
    wrote) is skipped with a ``RuntimeWarning``; a later entry for the same run replaces an
    earlier one.

    Raises:
        ValueError: a malformed line before the last, or a run trained with other settings
            (the first differing setting is named: resume into another output folder, or
            start again with ``--overwrite``).
    """
    path = Path(path)
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    done: Dict[Tuple[str, str, int], Dict[str, Any]] = {}
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            rec, settings = entry["record"], entry["settings"]
            key = (rec["task"], rec["method"], int(rec["seed"]))
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: its last line is incomplete (a comparison stopped while writing it) and "
                              "is skipped; that run is trained again", RuntimeWarning, stacklevel=2)
                continue
            raise ValueError(f"{path}, line {i + 1}: not a journal entry of adaptlib compare ({e})") from None
        if rec.get("benchmark") != config.benchmark:
            continue
        settings = dict(settings)
        settings.setdefault("augment", {})  # runs journaled before the augment field trained without augmentation
        now = _run_settings(config, key[1])
        if key[1] not in config.methods:  # a method this comparison does not train: its own kwargs do not matter
            now.pop("method_kwargs")
            settings = {k: v for k, v in settings.items() if k != "method_kwargs"}
        differ = [k for k in sorted(set(now) | set(settings)) if now.get(k) != settings.get(k)]
        if differ:
            k = differ[0]
            raise ValueError(f"{path}: run {key[0]} / {key[1]} / seed {key[2]} was trained with {k}="
                             f"{settings.get(k)!r}, this comparison would train {k}={now.get(k)!r}"
                             f"{f' (and {len(differ) - 1} more settings differ)' if len(differ) > 1 else ''}; "
                             "resume into another --output, or pass --overwrite to start again")
        done[key] = rec
    return done


def compare(config: CompareConfig, *, progress: bool = True, journal: Optional[os.PathLike] = None,
            resume: bool = False) -> ComparisonResult:
    """Run every (task, method, seed) of ``config`` and return the :class:`ComparisonResult`.

    Runs are spread over ``config.workers`` processes (one thread each); results do not
    depend on the number of workers. Data files are checked (and, with ``download``,
    fetched) before any training starts, so a missing file fails at once.

    Args:
        config: the comparison.
        progress: show a progress bar.
        journal: a file (``<output>/runs.jsonl`` for the CLI) that receives one JSON line per
            finished run as soon as it ends, so that a comparison stopped half-way keeps its
            finished runs. Without ``resume`` it is started afresh.
        resume: reuse the runs already in ``journal`` (:func:`read_journal`: same settings)
            and train only the missing ``(task, method, seed)`` runs; runs are deterministic,
            so the result equals one uninterrupted comparison. Needs ``journal``.
            ``ComparisonResult.seconds`` then counts this call only.

    Raises:
        ValueError / TypeError: a bad setting, named (before any run); ``resume`` without
            ``journal``; a journal run trained with other settings.
        RunDiverged: a run's loss became NaN or inf; the other runs are stopped (finished runs
            stay in ``journal``).
    """
    from tqdm.auto import tqdm

    from .datasets import get_benchmark

    if resume and journal is None:
        raise ValueError("resume=True needs journal= (the runs.jsonl of the comparison to continue)")
    config = config.resolved()
    bench = get_benchmark(config.benchmark)
    for task in config.tasks or ():  # fail fast on missing data, before spawning workers
        bench.load(task, root=config.root, download=config.download, **_load_options(config))
    done = read_journal(journal, config) if resume else {}
    if resume and Path(journal).exists():
        text = Path(journal).read_text()
        if text and not text.endswith("\n"):  # drop a torn last line before appending after it
            Path(journal).write_text(text[: text.rfind("\n") + 1])
    jobs = [(config, task, method, seed) for task in config.tasks or () for method in config.methods
            for seed in range(config.seeds)]
    done_here = [j[1:] for j in jobs if j[1:] in done]
    records: List[Dict[str, Any]] = [done[key] for key in done_here]
    jobs = [j for j in jobs if j[1:] not in done]
    log = None
    if journal is not None:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
        log = open(journal, "a" if resume else "w")
    # Longest jobs first keeps both cores busy until the end.
    order = {m: i for i, m in enumerate(("mcd", "sinkhorn", "deepjdot", "dann", "dan", "deep-coral", "finetune",
                                         "source-only"))}
    jobs.sort(key=lambda j: order.get(j[2], -1))
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc=f"compare {config.benchmark}", disable=not progress)

    def finished(rec: Dict[str, Any]) -> None:
        records.append(rec)
        if log is not None:
            log.write(json.dumps({"settings": _run_settings(config, rec["method"]), "record": rec},
                                 default=str) + "\n")
            log.flush()
        bar.update(1)

    try:
        if config.workers == 1 or not jobs:
            for job in jobs:
                finished(_run_star(job))
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(config.workers, initializer=_init_worker) as pool:
                for rec in pool.imap_unordered(_run_star, jobs):
                    finished(rec)
                pool.close()  # let the workers exit on their own (leaving the block would kill them)
                pool.join()
    finally:
        bar.close()
        if log is not None:
            log.close()
    records.sort(key=lambda r: (r["task"], r["method"], r["seed"]))
    return ComparisonResult(config, records, time.perf_counter() - start, reused=len(done_here))
