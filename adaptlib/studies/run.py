"""One run of a study: train a (method, task, configuration, trial), score every checkpoint.

:func:`execute_run` is what a worker process executes. It loads the task, holds out a
stratified source validation split, trains with the shared :class:`~adaptlib.Trainer` and,
at every checkpoint (every ``checkpoint_every`` steps and at the end), evaluates the model
in eval mode without gradient on the source training split, the source validation split
and the unlabelled target training data, gives those :class:`~adaptlib.validation.Predictions`
to :func:`adaptlib.validation.evaluate`, and computes the oracle, the accuracy on the target
test set, with :func:`adaptlib.validation.oracle`. Target labels reach only the oracle (and,
for methods with ``uses_target_labels`` such as ``finetune``, the few labelled target
samples they train on, as in :func:`adaptlib.compare.run_one`).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..compare import build_model, few_shot_split
from ..methods import METHODS, get_method
from ..models import AdaptModel
from ..trainer import Trainer
from .registry import derive_seed, split_hparams
from .spec import RunSpec

__all__ = ["RunResult", "execute_run", "source_validation_split", "load_task"]


@dataclass
class RunResult:
    """What a run sends back to the driver, which records it in one transaction.

    Attributes:
        spec: the :class:`~adaptlib.studies.spec.RunSpec` that was run.
        status: ``"ok"``, or ``"diverged"`` when the loss became NaN or inf
            (:class:`FloatingPointError`; the checkpoints scored before are kept in ``rows``).
        error: the divergence message, or ``""``.
        rows: one dict per checkpoint: ``step``, ``target_accuracy`` (the oracle, a fraction in
            [0, 1]) and
            ``scores`` (validator name -> score, higher is better).
        train_seconds, eval_seconds: wall time spent training and scoring checkpoints.
        started, finished: ISO-8601 UTC times.
        env: where it ran: host, process id, torch threads, sizes of the splits.
    """

    spec: RunSpec
    status: str
    error: str
    rows: List[Dict[str, Any]]
    train_seconds: float
    eval_seconds: float
    started: str
    finished: str
    env: Dict[str, Any] = field(default_factory=dict)


def source_validation_split(labels: torch.Tensor, fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of ``labels`` ``(N,)`` into ``(train, val)`` sorted index tensors (int64).

    Each class ``c`` with ``n_c`` samples gives ``round(fraction * n_c)`` samples to ``val``,
    clipped to ``[1, n_c - 1]`` (a class of one sample stays in ``train``), chosen by a
    ``torch.Generator`` seeded with ``seed``. Deterministic: same labels, fraction and seed,
    same split.

    Raises:
        ValueError: ``fraction`` not in (0, 1), or ``labels`` not a 1-D integer tensor.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError("labels must be a 1-D integer tensor (N,)")
    gen = torch.Generator().manual_seed(int(seed))
    val = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        n = idx.numel()
        k = min(max(int(round(fraction * n)), 1), n - 1)
        if k > 0:
            val.append(idx[torch.randperm(n, generator=gen)[:k]])
    val_idx = torch.cat(val).sort().values if val else torch.empty(0, dtype=torch.long)
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


def load_task(spec: RunSpec):
    """The :class:`~adaptlib.datasets.TransferTask` of ``spec`` (benchmark, task, data root, loader options)."""
    from ..datasets import get_benchmark

    return get_benchmark(spec.benchmark).load(spec.task, root=spec.root, **spec.load_options)


@torch.no_grad()
def _predict(model: AdaptModel, x: torch.Tensor, labels: Optional[torch.Tensor] = None, chunk: int = 4096):
    """Bottleneck features and softmax probabilities of ``x`` in eval mode, as ``Predictions``."""
    from ..validation import Predictions

    model.eval()
    device = next(model.parameters()).device
    feats, probs = [], []
    for i in range(0, x.shape[0], chunk):
        out = model(x[i:i + chunk].to(device))
        feats.append(out.features.cpu())
        probs.append(torch.softmax(out.logits.double(), dim=1).cpu())
    return Predictions(torch.cat(feats), torch.cat(probs), labels)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def execute_run(spec: RunSpec) -> RunResult:
    """Train and score one run of a study (see the module docstring); returns its :class:`RunResult`.

    Uses one torch thread (runs are parallelised over processes). Deterministic on the CPU:
    the model is built after ``torch.manual_seed(spec.seed)``, the Trainer is seeded with
    ``spec.seed``, the source split with ``derive_seed("source-val", benchmark, task,
    fraction)`` (the same in every run of a task), the few-shot split with
    ``derive_seed("few-shot", task, seed)``; the global RNG state is restored after each
    checkpoint's scoring, so scoring never changes training.

    Raises:
        Exception: whatever loading or training raises, except :class:`FloatingPointError`
            (a diverged run, returned with ``status="diverged"``).
    """
    from .. import validation

    torch.set_num_threads(1)
    started, t0 = _now(), time.perf_counter()
    data = load_task(spec)
    method = get_method(spec.method, **split_hparams(spec.hparams)[1])
    trainer_kwargs = split_hparams(spec.hparams)[0]

    src_y = data.source.y
    tr, va = source_validation_split(src_y, spec.source_val_fraction,
                                     derive_seed("source-val", spec.benchmark, spec.task, spec.source_val_fraction))
    xs, ys = data.source.x[tr], src_y[tr]
    xv, yv = data.source.x[va], src_y[va]
    xt = data.target_train.x  # only the inputs: the target labels stay with the oracle
    test_x = data.target_test.x
    labelled = None
    keep_test: Optional[torch.Tensor] = None
    if METHODS[spec.method].uses_target_labels:
        idx, rest = few_shot_split(data.target_train.y, spec.shots, derive_seed("few-shot", spec.task, spec.seed))
        labelled = (xt[idx], data.target_train.y[idx])
        if xt.shape == test_x.shape and torch.equal(xt, test_x):  # score on the target samples not trained on
            keep_test = rest
    if keep_test is not None:
        test_x = test_x[keep_test]

    torch.manual_seed(spec.seed)
    net = spec.network
    model = build_model(SimpleNamespace(backbone=net.get("backbone", "mlp"), hidden=tuple(net["hidden"]),
                                        dropout=net["dropout"], bottleneck=net["bottleneck"],
                                        bottleneck_norm=bool(net.get("bottleneck_norm", False)),
                                        augment=net.get("augment", {})),
                        input_dim=xs.shape[1], num_classes=data.num_classes)
    trainer = Trainer(model, method, steps=spec.steps, batch_size=spec.batch_size, seed=spec.seed,
                      device=spec.device, precision=spec.precision, progress_bar=False,
                      **{**spec.trainer, **trainer_kwargs})
    rows: List[Dict[str, Any]] = []
    eval_seconds = [0.0]

    def score(tr_: Trainer) -> None:
        start = time.perf_counter()
        rng = torch.get_rng_state()
        try:
            source_train = _predict(model, xs, ys)
            source_val = _predict(model, xv, yv)
            target = _predict(model, xt)
            scores = validation.evaluate(spec.validators, source_train=source_train, source_val=source_val,
                                         target=target, seed=spec.seed)
            test_y = data.target_test.y if keep_test is None else data.target_test.y[keep_test]
            accuracy = float(validation.oracle(_predict(model, test_x), test_y))
        finally:
            torch.set_rng_state(rng)
        rows.append({"step": tr_.step, "target_accuracy": accuracy,
                     "scores": {k: float(v) for k, v in scores.items()}})
        eval_seconds[0] += time.perf_counter() - start

    status, error = "ok", ""
    try:
        trainer.fit((xs, ys) if method.uses_source else None, xt if method.uses_target else None,
                    target_labeled=labelled, callback=score,
                    callback_every=spec.checkpoint_every)
    except FloatingPointError as e:
        status, error = "diverged", str(e)
    total = time.perf_counter() - t0
    env = {"host": socket.gethostname(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
           "n_source_train": int(ys.numel()), "n_source_val": int(yv.numel()), "n_target": int(xt.shape[0]),
           "n_target_test": int(test_x.shape[0])}
    return RunResult(spec=spec, status=status, error=error, rows=rows,
                     train_seconds=total - eval_seconds[0], eval_seconds=eval_seconds[0], started=started,
                     finished=_now(), env=env)

