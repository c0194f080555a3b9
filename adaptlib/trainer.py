"""The Trainer: the one place that owns optimizers, backward, schedules, seeding and evaluation.

Every method trains through the same loop, so a comparison changes only the objective:
the network, the optimizer, the learning-rate schedule, the batch sizes and the step
budget are the Trainer's and are identical across methods.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ._checks import check_choice, check_positive
from ._streams import DatasetStream, TensorStream
from .methods import Batch, LabeledBatch, Method, Progress, UnlabeledBatch, get_method
from .models import AdaptModel

__all__ = ["Trainer", "History", "lr_factor"]

LabeledData = Union[Tuple[Tensor, Tensor], Dataset, Any]
UnlabeledData = Union[Tensor, Dataset, Any]


def lr_factor(schedule: str, fraction: float, *, gamma: float = 10.0, power: float = 0.75) -> float:
    """Multiplier of the base learning rate at training progress ``fraction`` in [0, 1].

    - ``"inv"``: ``(1 + gamma p)^(-power)``, the annealing of DANN (Ganin et al., JMLR 2016)
      also used by DAN, JAN and CDAN;
    - ``"cosine"``: ``(1 + cos(pi p)) / 2``;
    - ``"constant"``: 1.
    """
    if schedule == "inv":
        return (1.0 + gamma * fraction) ** (-power)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"lr_schedule must be one of ['inv', 'cosine', 'constant'], got {schedule!r}")


@dataclass
class History:
    """What a run logged.

    Attributes:
        train: one record every ``log_every`` steps: ``step`` (steps done), ``lr`` (base group),
            ``loss`` (total) and each named loss term and metric, averaged over the interval.
        eval: one record per evaluation: ``step`` and ``<set>/accuracy`` for each eval set.
    """

    train: List[Dict[str, float]] = field(default_factory=list)
    eval: List[Dict[str, float]] = field(default_factory=list)

    def final_eval(self) -> Dict[str, float]:
        """The last evaluation record (``{}`` when nothing was evaluated)."""
        return dict(self.eval[-1]) if self.eval else {}


def _as_labeled(data: LabeledData, name: str, num_classes: Optional[int]) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError(f"{name} must be (x, y) tensors, an object with .x and .y, or a Dataset; got {type(data).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name} must hold tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape[0] != y.shape[0] or y.dim() != 1:
        raise ValueError(f"{name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"{name} labels must be integer class indices 0..C-1, got dtype {y.dtype}")
    if bool((y < 0).any()) or (num_classes is not None and int(y.max()) >= num_classes):
        raise ValueError(f"{name} labels must be in 0..{num_classes - 1 if num_classes else 'C-1'}, "
                         f"got range {int(y.min())}..{int(y.max())}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x, y.long())


def _as_unlabeled(data: UnlabeledData, name: str) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, Tensor):
        x = data
    elif hasattr(data, "x") and not isinstance(data, (tuple, list)):
        x = data.x  # a Domain: only its inputs are read; its labels never reach the method
    else:
        raise TypeError(
            f"{name} must be an unlabelled tensor (M, ...), an object with .x, or a Dataset; got "
            f"{type(data).__name__}. Target labels belong in eval_sets (or target_labeled for methods that use them)"
        )
    if not isinstance(x, Tensor) or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x,)


class Trainer:
    """Train an :class:`~adaptlib.models.AdaptModel` with any :class:`~adaptlib.methods.Method`.

    The Trainer alone calls ``backward``, steps the optimizer and the learning-rate schedule
    (a pure function of its step counter), seeds the random generators, moves data to the
    device, evaluates and records history. A method only returns named loss terms, whose sum
    is minimised. Switching methods is one argument; the rest of the setup stays identical.

    Args:
        model: the network (backbone, bottleneck, head); trained in place.
        method: a :class:`Method` or a registry name (``"source-only"``, ``"finetune"``,
            ``"dann"``, ``"dan"``, ``"deep-coral"``, ``"deepjdot"``, ``"sinkhorn"``).
        method_kwargs: hyper-parameters for a method given by name.
        steps: number of optimizer steps.
        batch_size: source batch size (and labelled-target batch size, capped at its size).
        target_batch_size: unlabelled target batch size (default: ``batch_size``).
        optimizer: ``"sgd"`` (momentum, Nesterov) or ``"adam"``.
        lr: base learning rate; ``backbone_lr_multiplier`` scales it for the backbone (0.1
            is usual for a pre-trained backbone).
        momentum, weight_decay: optimizer settings (weight decay applies to every group).
        lr_schedule: ``"inv"`` (default, DANN's annealing), ``"cosine"`` or ``"constant"``.
        seed: seeds the global torch RNG at the start of :meth:`fit` (dropout, the method's own
            module initialisation) and the data streams' generators. Build the model after
            ``torch.manual_seed`` for fully seeded runs; the same seed then gives the same result.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or ``None`` for CUDA when available.
        eval_every: evaluate the eval sets every this many steps (always at the end).
        log_every: average and record the loss terms every this many steps.
        progress_bar: show a tqdm bar; ``None`` shows it when stderr is a terminal.

    Raises:
        ValueError / TypeError: on invalid settings, naming the argument.
        FloatingPointError: during :meth:`fit` when the loss becomes NaN or inf (the message
            names the step and the loss terms).
    """

    def __init__(
        self,
        model: AdaptModel,
        method: Union[str, Method] = "source-only",
        *,
        method_kwargs: Optional[Mapping[str, Any]] = None,
        steps: int = 1000,
        batch_size: int = 32,
        target_batch_size: Optional[int] = None,
        optimizer: str = "sgd",
        lr: float = 0.01,
        backbone_lr_multiplier: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_schedule: str = "inv",
        seed: int = 0,
        device: Union[str, torch.device, None] = None,
        eval_every: Optional[int] = None,
        log_every: int = 50,
        progress_bar: Optional[bool] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (an AdaptModel), got {type(model).__name__}")
        for attr in ("backbone", "head", "feature_dim"):
            if not hasattr(model, attr):
                raise TypeError(f"model must look like an AdaptModel (backbone, bottleneck, head); it has no {attr!r}")
        self.model = model
        self.method = get_method(method, **dict(method_kwargs or {}))
        for name, value in (("steps", steps), ("batch_size", batch_size), ("log_every", log_every)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if target_batch_size is not None and (not isinstance(target_batch_size, int) or target_batch_size <= 0):
            raise ValueError(f"target_batch_size must be a positive integer, got {target_batch_size!r}")
        if eval_every is not None and (not isinstance(eval_every, int) or eval_every <= 0):
            raise ValueError(f"eval_every must be a positive integer or None, got {eval_every!r}")
        self.steps = steps
        self.batch_size = batch_size
        self.target_batch_size = target_batch_size or batch_size
        self.optimizer_name = check_choice(optimizer, "optimizer", ("sgd", "adam"))
        self.lr = check_positive(lr, "lr")
        self.backbone_lr_multiplier = check_positive(backbone_lr_multiplier, "backbone_lr_multiplier")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        lr_factor(lr_schedule, 0.0)  # validates the name
        self.lr_schedule = lr_schedule
        self.seed = int(seed)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.eval_every = eval_every
        self.log_every = log_every
        self.progress_bar = progress_bar
        self.step = 0
        self.history = History()

    # ------------------------------------------------------------------ set-up
    def _param_groups(self) -> List[Dict[str, Any]]:
        backbone = list(self.model.backbone.parameters())
        ids = {id(p) for p in backbone}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [
            {"params": backbone, "lr": self.lr * self.backbone_lr_multiplier, "name": "backbone"},
            {"params": rest, "lr": self.lr, "name": "head"},
        ]
        own = list(self.method.parameters())
        if own:
            groups.append({"params": own, "lr": self.lr, "name": self.method.name})
        return [g for g in groups if g["params"]]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        groups = self._param_groups()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                                   nesterov=self.momentum > 0)
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def _stream(self, kind: str, payload: Any, batch_size: int, seed_offset: int, keep: int):
        gen = torch.Generator().manual_seed(self.seed * 1000003 + seed_offset)
        if kind == "dataset":
            return DatasetStream(payload, batch_size, gen, self.device, keep=keep)
        return TensorStream(payload, batch_size, gen, self.device)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        source: LabeledData,
        target: Optional[UnlabeledData] = None,
        *,
        target_labeled: Optional[LabeledData] = None,
        eval_sets: Optional[Mapping[str, LabeledData]] = None,
    ) -> History:
        """Train for ``steps`` steps and return the :class:`History`.

        Args:
            source: labelled source data: ``(x, y)`` with ``x`` ``(N, ...)`` and ``y`` ``(N,)``
                int64 in ``0..C-1``, an object with ``.x``/``.y`` (a ``Domain``), or a
                ``Dataset`` of ``(x, y)``.
            target: unlabelled target data: a tensor ``(M, ...)``, an object with ``.x`` (only
                ``.x`` is read), or a ``Dataset`` (only the first field of each item is
                kept). Required by methods with ``uses_target``; ignored otherwise.
            target_labeled: the few labelled target samples, for methods with
                ``uses_target_labels`` only (passing them to another method is an error).
            eval_sets: name -> labelled data evaluated every ``eval_every`` steps and at the
                end. Evaluation data never reaches the method.

        Raises:
            ValueError / TypeError: missing or malformed data, naming the argument.
            FloatingPointError: the loss became NaN or inf.
        """
        method, model = self.method, self.model
        num_classes = getattr(model, "num_classes", None)
        if method.uses_target and target is None:
            raise ValueError(f"method {method.name!r} needs unlabelled target data: pass target=")
        if method.uses_target_labels and target_labeled is None:
            raise ValueError(f"method {method.name!r} trains on labelled target samples: pass target_labeled=")
        if not method.uses_target_labels and target_labeled is not None:
            raise ValueError(f"method {method.name!r} is unsupervised on the target: it must not get target_labeled")
        src_kind, src = _as_labeled(source, "source", num_classes)
        streams = {"source": self._stream(src_kind, src, self.batch_size, 1, keep=2)}
        if method.uses_target:
            kind, tgt = _as_unlabeled(target, "target")
            streams["target"] = self._stream(kind, tgt, self.target_batch_size, 2, keep=1)
        if method.uses_target_labels:
            kind, tl = _as_labeled(target_labeled, "target_labeled", num_classes)
            streams["target_labeled"] = self._stream(kind, tl, self.batch_size, 3, keep=2)
        evals = {name: _as_labeled(d, f"eval_sets[{name!r}]", num_classes) for name, d in (eval_sets or {}).items()}

        torch.manual_seed(self.seed)
        method.setup(model)
        model.to(self.device)
        method.to(self.device)
        optimizer = self._make_optimizer()
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step = 0
        self.history = History()
        sums: Dict[str, Tensor] = {}
        count = 0
        show = self.progress_bar if self.progress_bar is not None else sys.stderr.isatty()
        bar = tqdm(total=self.steps, desc=method.name, disable=not show, leave=False)
        model.train()
        method.train()
        try:
            for step in range(self.steps):
                progress = Progress(step, self.steps)
                factor = lr_factor(self.lr_schedule, progress.fraction)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                with torch.no_grad():
                    method.on_step_start(model, progress)
                s = streams["source"].next()
                batch = Batch(
                    source=LabeledBatch(s[0], s[1]),
                    target=UnlabeledBatch(streams["target"].next()[0]) if "target" in streams else None,
                    target_labeled=LabeledBatch(*streams["target_labeled"].next()) if "target_labeled" in streams else None,
                )
                out = method.loss_terms(model, batch, progress)
                if not out.losses:
                    raise ValueError(f"method {method.name!r} returned no loss terms at step {step}")
                loss = torch.stack([v.reshape(()) for v in out.losses.values()]).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                self.step = step + 1
                with torch.no_grad():
                    terms = {"loss": loss.detach(), **{k: v.detach() for k, v in out.losses.items()},
                             **{k: torch.as_tensor(v).detach() for k, v in out.metrics.items()}}
                    for k, v in terms.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                    count += 1
                if self.step % self.log_every == 0 or self.step == self.steps:
                    record = {k: float(v) / count for k, v in sums.items()}
                    if not math.isfinite(record["loss"]):
                        bad = {k: v for k, v in record.items() if not math.isfinite(v)}
                        raise FloatingPointError(f"non-finite loss by step {self.step} with method {method.name!r}: {bad}")
                    self.history.train.append({"step": self.step, "lr": self.lr * factor, **record})
                    sums, count = {}, 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                if evals and ((self.eval_every and self.step % self.eval_every == 0) or self.step == self.steps):
                    self.history.eval.append({"step": self.step, **{
                        f"{name}/accuracy": self._accuracy(payload, kind) for name, (kind, payload) in evals.items()}})
                    model.train()
                    method.train()
                bar.update(1)
        finally:
            bar.close()
        model.eval()
        method.eval()
        return self.history

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, x: Tensor, *, batch_size: int = 4096) -> Tensor:
        """Class logits ``(N, C)`` of inputs ``x`` ``(N, ...)``, in eval mode, computed in chunks."""
        self.model.eval()
        self.model.to(self.device)
        outs = [self.model(x[i:i + batch_size].to(self.device)).logits for i in range(0, x.shape[0], batch_size)]
        return torch.cat(outs).cpu()

    def evaluate(self, data: LabeledData) -> float:
        """Accuracy in [0, 1] of the model on labelled ``data`` (same forms as ``source`` in :meth:`fit`)."""
        kind, payload = _as_labeled(data, "data", getattr(self.model, "num_classes", None))
        return self._accuracy(payload, kind)

    @torch.no_grad()
    def _accuracy(self, payload: Any, kind: str) -> float:
        self.model.eval()
        if kind == "tensor":
            x, y = payload
            return float((self.predict(x).argmax(1) == y.cpu()).float().mean())
        correct = total = 0
        for xb, yb in torch.utils.data.DataLoader(payload, batch_size=1024):
            pred = self.model(xb.to(self.device)).logits.argmax(1).cpu()
            correct += int((pred == yb).sum())
            total += int(yb.numel())
        return correct / max(total, 1)
