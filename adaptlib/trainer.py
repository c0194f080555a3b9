"""The Trainer: the one place that owns optimizers, backward, schedules, seeding and evaluation.

Every method trains through the same loop, so a comparison changes only the objective:
the network, the optimizer, the learning-rate schedule, the batch sizes and the step
budget are the Trainer's and are identical across methods.
"""
from __future__ import annotations

import math
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import distributed as _dist
from ._checks import check_choice, check_positive, skip_value_checks
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


_LABEL_HINT = ("Labels that are 1-based, have gaps or are not numbers: map them with "
               "`codes, classes = adaptlib.encode_labels(labels)` and build the model with num_classes=len(classes)")


def _check_labels(y: Any, name: str, num_classes: Optional[int]) -> None:
    """Raise unless ``y`` is a 1-D integer tensor of class indices in ``0..num_classes-1``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} labels must be a tensor of integer class indices 0..C-1, got "
                        f"{type(y).__name__}. {_LABEL_HINT}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} labels must be integer class indices 0..C-1, got dtype {y.dtype}. {_LABEL_HINT}")
    if y.device.type == "meta":
        raise ValueError(f"{name} labels are on the meta device and hold no data")
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        allowed = f"0..{num_classes - 1} (the model has {num_classes} classes)" if num_classes else "0..C-1"
        raise ValueError(f"{name} labels must be class indices in {allowed}, got values {lo}..{hi}. {_LABEL_HINT}")


def _check_inputs(x: Any, name: str, dtype: Optional[torch.dtype]) -> None:
    """Raise unless ``x`` is a tensor with data, of the model's floating dtype if it is floating."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} inputs must be a tensor, got {type(x).__name__} (convert with torch.as_tensor)")
    if x.device.type == "meta":
        raise ValueError(f"{name} inputs are on the meta device and hold no data")
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        raise TypeError(f"{name} inputs are {x.dtype} but the model's parameters are {dtype}: convert the "
                        f"inputs (x.to({dtype})) or the model (model.to({dtype}))")


def _as_labeled(data: LabeledData, name: str, num_classes: Optional[int],
                dtype: Optional[torch.dtype] = None) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError(f"{name} must be (x, y) tensors, an object with .x and .y, or a Dataset; got {type(data).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name} must hold tensors, got {type(x).__name__} and {type(y).__name__} (convert "
                        f"numbers with torch.as_tensor; for labels that are not 0..C-1 indices use "
                        f"adaptlib.encode_labels)")
    if x.shape[0] != y.shape[0] or y.dim() != 1:
        raise ValueError(f"{name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    _check_inputs(x, name, dtype)
    _check_labels(y, name, num_classes)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x, y.long())


def _as_unlabeled(data: UnlabeledData, name: str, dtype: Optional[torch.dtype] = None) -> Tuple[str, Any]:
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
    _check_inputs(x, name, dtype)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x,)


def _batch_check(name: str, num_classes: Optional[int], dtype: Optional[torch.dtype]):
    """The per-batch check of a ``Dataset`` stream: inputs (and labels, for labelled data)."""
    def check(fields: Tuple[Any, ...]) -> None:
        _check_inputs(fields[0], name, dtype)
        if len(fields) > 1:
            _check_labels(fields[1], name, num_classes)
    return check


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a partial one
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _LogSums:
    """Running sums of the logged scalars over the current logging interval.

    One ``stack`` and one ``add`` per step whatever the number of loss terms and metrics
    (the per-name adds this replaces were a measurable share of the Trainer's overhead).
    """

    def __init__(self) -> None:
        self.names: Tuple[str, ...] = ()
        self.row: Optional[Tensor] = None  # sums of the tensor-valued terms, in the order of names
        self.numbers: Dict[str, float] = {}  # sums of the metrics given as plain numbers

    def state_dict(self) -> Dict[str, Any]:
        """Plain data for a checkpoint (loadable with ``weights_only=True``)."""
        return {"names": list(self.names), "row": None if self.row is None else self.row.detach().cpu(),
                "numbers": dict(self.numbers)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> "_LogSums":
        out = cls()
        out.names = tuple(state["names"])
        out.row = None if state["row"] is None else state["row"].to(device)
        out.numbers = {k: float(v) for k, v in state["numbers"].items()}
        return out

    def add(self, names: Tuple[str, ...], row: Tensor) -> None:
        if self.row is not None and names == self.names:
            self.row = self.row + row
            return
        merged = self.as_dict()  # the set of names changed (e.g. FineTune's phase switch)
        for name, value in zip(names, row.unbind()):
            merged[name] = merged[name] + value if name in merged else value
        self.names, self.row = tuple(merged), torch.stack(list(merged.values()))

    def add_numbers(self, numbers: Mapping[str, float]) -> None:
        for name, value in numbers.items():
            self.numbers[name] = self.numbers.get(name, 0.0) + value

    def as_dict(self) -> Dict[str, Tensor]:
        out = dict(zip(self.names, self.row.unbind())) if self.row is not None else {}
        for name, value in self.numbers.items():
            out[name] = torch.tensor(value, dtype=torch.float64)
        return out



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
        optimizer: ``"sgd"`` (momentum, Nesterov), ``"adam"`` (``weight_decay`` is an L2 term
            added to the gradient) or ``"adamw"`` (Adam with decoupled weight decay,
            Loshchilov & Hutter, ICLR 2019).
        lr: base learning rate; ``backbone_lr_multiplier`` scales it for the backbone (0.1
            is usual for a pre-trained backbone).
        momentum, weight_decay: optimizer settings (weight decay applies to every group).
        lr_schedule: ``"inv"`` (default, DANN's annealing), ``"cosine"`` or ``"constant"``.
        label_smoothing: label smoothing ``eps`` in ``[0, 1)`` of the classification loss of
            every method (:meth:`Method.classification`: the source cross-entropy, and the
            labelled-target one of ``finetune``): the one-hot targets become ``(1 - eps) onehot
            + eps / C`` (``torch.nn.functional.cross_entropy(..., label_smoothing=eps)``). The
            Trainer sets it on the method when :meth:`fit` starts; 0 (default) is plain
            cross-entropy.
        seed: seeds the global torch RNG at the start of :meth:`fit` (dropout, the method's own
            module initialisation) and the data streams' generators. Build the model after
            ``torch.manual_seed`` for fully seeded runs; the same seed then gives the same result.
        device: ``"cpu"``, ``"cuda"``, a ``torch.device``, or ``None`` for CUDA when available.
        eval_every: evaluate the eval sets every this many steps (always at the end).
        log_every: average and record the loss terms every this many steps.
        progress_bar: show a tqdm bar; ``None`` shows it when stderr is a terminal.
        checkpoint_dir: folder where :meth:`fit` keeps a checkpoint of the run, ``last.pt``
            (``last-rank<r>.pt`` per process in a multi-process run), replaced atomically
            every ``checkpoint_every`` steps and at the end. ``None``: no checkpoints.
        checkpoint_every: steps between checkpoints (default: a tenth of ``steps``, at least
            1); needs ``checkpoint_dir``.

    Checkpoints and resuming (as ``Trainer.fit(ckpt_path="last")`` in PyTorch Lightning):
    ``fit(..., resume=True)`` continues from ``checkpoint_dir/last.pt`` if it exists (and
    starts from step 0 if not, so one command line serves the first launch and every
    relaunch after a pre-emption); ``fit(..., resume=path)`` continues from that file. On the
    CPU the resumed run is bit-identical to an uninterrupted one: a checkpoint holds the
    model's and the method's parameters and buffers (a discriminator, FineTune's L2-SP
    anchor), the optimizer state, the step, the history and the loss sums of the current
    logging interval, the global torch RNG states (CPU and CUDA: dropout) and, for each data
    stream, its generator state, epoch, permutation and position in it (for ``Dataset``
    inputs too: the loader restarts at the same position of the same permutation). Not
    saved: the data itself (pass the same data to ``fit``; sizes are checked), Python's and
    NumPy's RNGs (adaptlib draws nothing from them), and DataLoader worker RNG state. A
    checkpoint is refused (``ValueError`` listing the differences) when it was saved with
    other settings: method or its hyper-parameters, steps, batch sizes, seed, optimizer,
    learning rate and schedule, label smoothing, logging intervals, number of processes, or data sizes.
    Files hold only tensors, numbers, strings, lists and dicts and are read with
    ``torch.load(..., weights_only=True)``: loading one never runs code from it.
    See :meth:`save_checkpoint` and :meth:`load_checkpoint`.

    Raises:
        ValueError / TypeError: on invalid settings, naming the argument.
        FloatingPointError: during :meth:`fit` when the loss becomes NaN or inf (the message
            names the step and the loss terms).

    Multi-process training (``torchrun``, see ``docs/distributed.md``): when
    ``torch.distributed`` is initialised with more than one process, :meth:`fit` broadcasts
    the model's and the method's parameters and buffers from rank 0, gives each rank its own
    data streams (seeded by ``(seed, rank)``), averages every gradient over the ranks after
    ``backward`` and broadcasts buffers from rank 0 before each step: DDP's semantics,
    without wrapping the model (methods keep calling ``model.backbone``, ``model.head``). The
    logged losses are averaged over ranks and evaluation is sharded over ranks with the
    counts summed, so every rank gets the same :class:`History`; ``batch_size`` is per rank.
    Pass the unwrapped model, on each rank's ``device``.
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
        label_smoothing: float = 0.0,
        seed: int = 0,
        device: Union[str, torch.device, None] = None,
        eval_every: Optional[int] = None,
        log_every: int = 50,
        progress_bar: Optional[bool] = None,
        checkpoint_dir: Union[str, os.PathLike, None] = None,
        checkpoint_every: Optional[int] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (an AdaptModel), got {type(model).__name__}")
        for attr in ("backbone", "head", "feature_dim"):
            if not hasattr(model, attr):
                raise TypeError(f"model must look like an AdaptModel (backbone, bottleneck, head); it has no {attr!r}"
                                + (" (pass the model unwrapped: the Trainer averages gradients over processes itself)"
                                   if hasattr(model, "module") else ""))
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
        self.optimizer_name = check_choice(optimizer, "optimizer", ("sgd", "adam", "adamw"))
        self.lr = check_positive(lr, "lr")
        self.backbone_lr_multiplier = check_positive(backbone_lr_multiplier, "backbone_lr_multiplier")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        lr_factor(lr_schedule, 0.0)  # validates the name
        self.lr_schedule = lr_schedule
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.seed = int(seed)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.eval_every = eval_every
        self.log_every = log_every
        self.progress_bar = progress_bar
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every <= 0):
            raise ValueError(f"checkpoint_every must be a positive integer or None, got {checkpoint_every!r}")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("checkpoint_every needs checkpoint_dir: pass the folder to write checkpoints to")
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every or max(1, steps // 10)
        self.step = 0
        self.history = History()
        self._pending: Optional[Dict[str, Any]] = None  # a loaded checkpoint the next fit() continues from
        self._optimizer: Optional[torch.optim.Optimizer] = None
        self._streams: Dict[str, Any] = {}
        self._log_state: Tuple[Dict[str, Tensor], int] = ({}, 0)

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
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def _stream(self, kind: str, payload: Any, batch_size: int, seed_offset: int, keep: int, check=None):
        gen = torch.Generator().manual_seed(self.seed * 1000003 + seed_offset + 7919 * _dist.rank())
        if kind == "dataset":
            return DatasetStream(payload, batch_size, gen, self.device, keep=keep, check=check)
        return TensorStream(payload, batch_size, gen, self.device)

    # ------------------------------------------------------------------ checkpoints
    _FORMAT = "adaptlib.Trainer checkpoint"
    _VERSION = 1

    def _settings(self) -> Dict[str, Any]:
        """What must be equal for a checkpoint to continue this run (numbers, strings, lists, None)."""
        return {"method": self.method.name, "method_hparams": self.method.hparams(), "steps": self.steps,
                "batch_size": self.batch_size, "target_batch_size": self.target_batch_size, "seed": self.seed,
                "optimizer": self.optimizer_name, "lr": self.lr, "backbone_lr_multiplier": self.backbone_lr_multiplier,
                "momentum": self.momentum, "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule,
                "log_every": self.log_every, "eval_every": self.eval_every, "world_size": _dist.world_size(),
                # only when used, so checkpoints written before the option existed still load
                **({"label_smoothing": self.label_smoothing} if self.label_smoothing else {})}

    def checkpoint_path(self) -> Optional[Path]:
        """The file :meth:`fit` writes in ``checkpoint_dir`` and ``resume=True`` reads: ``last.pt``
        (``last-rank<r>.pt`` for process ``r`` of a multi-process run), or ``None`` without ``checkpoint_dir``."""
        if self.checkpoint_dir is None:
            return None
        return self.checkpoint_dir / ("last.pt" if _dist.world_size() == 1 else f"last-rank{_dist.rank()}.pt")

    def save_checkpoint(self, path: Union[str, os.PathLike]) -> Path:
        """Write the state of the run after :attr:`step` steps to ``path``, atomically; return the path.

        The file (see the class docstring for its contents) holds only tensors (RNG states as
        uint8 tensors), numbers, strings, ``None`` and lists/dicts of them, loads with
        ``torch.load(path, weights_only=True)``, and is written to a temporary file in the
        same folder, flushed, then renamed over ``path``: a crash mid-write leaves the
        previous file intact. Call it between steps (:meth:`fit` does, every
        ``checkpoint_every`` steps with ``checkpoint_dir``) or after :meth:`fit`; before any
        :meth:`fit` there is no optimizer or stream state, and the file only restores the
        model (:meth:`load_checkpoint` then starts training at step 0).

        Raises:
            OSError: the file cannot be written.
        """
        path = Path(path)
        sums, count = self._log_state
        rng: Dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {
            "format": self._FORMAT, "version": self._VERSION, "settings": self._settings(), "step": self.step,
            "model": self.model.state_dict(), "method": self.method.state_dict(),
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
            "streams": {name: st.state_dict() for name, st in self._streams.items()},
            "rng": rng, "log_sums": sums.state_dict(), "log_count": count,
            "history": {"train": [dict(r) for r in self.history.train], "eval": [dict(r) for r in self.history.eval]},
        }
        _atomic_save(state, path)
        return path

    def load_checkpoint(self, path: Union[str, os.PathLike]) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; the next :meth:`fit` continues from it.

        The model's weights, :attr:`step` and :attr:`history` are restored at once (so
        :meth:`predict` and :meth:`evaluate` use the saved model); the method's state, the
        optimizer, the data streams and the RNG states are restored when :meth:`fit` starts
        (the method's modules only exist after its ``setup``). ``fit(..., resume=path)`` is
        the same in one call.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not an adaptlib Trainer checkpoint, holds anything but
                tensors, numbers, strings and lists/dicts (it is not unpickled), or was saved
                with other settings (the message lists each difference).
            RuntimeError: the saved weights do not fit the model (other architecture).
        """
        checkpoint = self._read_checkpoint(Path(path))
        self._restore_model(checkpoint, Path(path))
        self.step = int(checkpoint["step"])
        self.history = History([dict(r) for r in checkpoint["history"]["train"]],
                               [dict(r) for r in checkpoint["history"]["eval"]])
        self._pending = checkpoint

    def _read_checkpoint(self, path: Path) -> Dict[str, Any]:
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"{path} is not an adaptlib Trainer checkpoint: it holds objects other than tensors, "
                             f"numbers, strings, lists and dicts, and adaptlib does not unpickle those ({e})") from None
        except (RuntimeError, EOFError) as e:
            raise ValueError(f"{path} is not a readable checkpoint file ({e})") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != self._FORMAT:
            raise ValueError(f"{path} is not an adaptlib Trainer checkpoint")
        if checkpoint.get("version") != self._VERSION:
            raise ValueError(f"{path} is a version-{checkpoint.get('version')} checkpoint; this adaptlib reads "
                             f"version {self._VERSION}")
        saved, now = checkpoint["settings"], self._settings()
        diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now"
                 for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if diffs:
            raise ValueError(f"checkpoint {path} was saved by a run with other settings, so it cannot continue this "
                             f"one: " + "; ".join(diffs) + ". Use the same settings, or start a new run "
                             "(resume=False, or another checkpoint_dir)")
        return checkpoint

    def _restore_model(self, checkpoint: Dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as e:
            raise RuntimeError(f"the model of checkpoint {path} does not fit this model: {e}") from None

    def _checkpoint_to_resume(self, resume: Union[bool, str, os.PathLike]) -> Optional[Dict[str, Any]]:
        """The checkpoint ``fit(resume=...)`` continues from, read and checked, or ``None`` for a fresh start."""
        if resume is True:
            path = self.checkpoint_path()
            if path is None:
                raise ValueError("resume=True continues from checkpoint_dir/last.pt: pass checkpoint_dir to the "
                                 "Trainer, or resume=<path of a checkpoint file>")
            if not path.is_file():
                return None  # first launch: nothing to resume
        elif resume is False or resume is None:
            pending, self._pending = self._pending, None
            return pending
        else:
            path = Path(resume)
        checkpoint = self._read_checkpoint(path)
        checkpoint["_path"] = str(path)
        self._pending = None
        return checkpoint

    def _start(self, checkpoint: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Tensor], int]:
        """Set up step 0, or restore the run from ``checkpoint``; return the logging sums and count.

        Called by :meth:`fit` after the method's ``setup`` and the optimizer's creation; the
        global RNG states are restored last, after everything that draws from them.
        """
        if checkpoint is None:
            self.step = 0
            self.history = History()
            self._log_state = (_LogSums(), 0)
            return _LogSums(), 0
        path = Path(checkpoint.get("_path", "checkpoint"))
        self._restore_model(checkpoint, path)
        if checkpoint["optimizer"] is None:  # saved before any fit: only the model is restored
            self.step, self.history = 0, History()
            self._log_state = (_LogSums(), 0)
            return _LogSums(), 0
        self.method.load_state_dict(checkpoint["method"])
        self._optimizer.load_state_dict(checkpoint["optimizer"])  # type: ignore[union-attr]
        if set(checkpoint["streams"]) != set(self._streams):
            raise ValueError(f"checkpoint {path} has data streams {sorted(checkpoint['streams'])}, this run "
                             f"{sorted(self._streams)}")
        for name, stream in self._streams.items():
            try:
                stream.load_state_dict(checkpoint["streams"][name])
            except ValueError as e:
                raise ValueError(f"{name}: {e} (checkpoint {path})") from None
        self.step = int(checkpoint["step"])
        self.history = History([dict(r) for r in checkpoint["history"]["train"]],
                               [dict(r) for r in checkpoint["history"]["eval"]])
        sums = _LogSums.from_state(checkpoint["log_sums"], self.device)
        count = int(checkpoint["log_count"])
        self._log_state = (sums, count)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if "cuda" in checkpoint["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        return sums, count

    def _after_step(self, sums: _LogSums, count: int) -> None:
        """Bookkeeping at the end of each step: remember the logging sums; write the checkpoint when due."""
        self._log_state = (sums, count)
        path = self.checkpoint_path()
        if path is not None and (self.step % self.checkpoint_every == 0 or self.step == self.steps):
            self.save_checkpoint(path)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        source: LabeledData,
        target: Optional[UnlabeledData] = None,
        *,
        target_labeled: Optional[LabeledData] = None,
        eval_sets: Optional[Mapping[str, LabeledData]] = None,
        resume: Union[bool, str, os.PathLike] = False,
        callback: Optional[Callable[["Trainer"], None]] = None,
        callback_every: Optional[int] = None,
    ) -> History:
        """Train for ``steps`` steps and return the :class:`History`.

        Inputs and labels are moved to the Trainer's ``device`` (a stream moves in-memory
        tensors once, ``Dataset`` batches as they come); the model and the method are moved
        there too. Labels of any integer dtype are converted to int64.

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
            resume: ``False`` (default): start at step 0, unless :meth:`load_checkpoint` was
                called, in which case continue from that checkpoint. ``True``: continue from
                ``checkpoint_dir/last.pt`` if it exists, else start at step 0. A path:
                continue from that checkpoint file. The returned history then holds the
                records from before the interruption too. Pass the same data as the
                interrupted run.
            callback: called as ``callback(trainer)`` after every ``callback_every``-th step
                and after the last one (once the step's logging, evaluation and checkpoint are
                done; :attr:`step` is the number of steps done). It may evaluate the model
                (e.g. the per-checkpoint validator scores of :mod:`adaptlib.studies`); the
                model and the method are put back in training mode afterwards. It must not
                change parameters, and should restore the global RNG state if it draws from it.
            callback_every: steps between callback calls (default: ``checkpoint_every``).

        Raises:
            ValueError / TypeError: missing or malformed data, naming the argument: labels
                outside ``0..C-1`` or not integers (the message points to
                :func:`adaptlib.encode_labels`), floating inputs of another dtype than the
                model's, tensors on the ``meta`` device; ``resume=True`` without
                ``checkpoint_dir``; a checkpoint saved with other settings or data sizes.
            FileNotFoundError: ``resume`` names a file that does not exist.
            FloatingPointError: the loss became NaN or inf.

        Warns:
            UserWarning: some of the model's classes never occur in tensor ``source`` labels
                (a sign of 1-based or gapped labels; see :func:`adaptlib.encode_labels`).
        """
        method, model = self.method, self.model
        if callback_every is not None and (not isinstance(callback_every, int) or callback_every <= 0):
            raise ValueError(f"callback_every must be a positive integer or None, got {callback_every!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        every = callback_every or self.checkpoint_every
        num_classes = getattr(model, "num_classes", None)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        checkpoint = self._checkpoint_to_resume(resume)
        if method.uses_target and target is None:
            raise ValueError(f"method {method.name!r} needs unlabelled target data: pass target=")
        if method.uses_target_labels and target_labeled is None:
            raise ValueError(f"method {method.name!r} trains on labelled target samples: pass target_labeled=")
        if not method.uses_target_labels and target_labeled is not None:
            raise ValueError(f"method {method.name!r} is unsupervised on the target: it must not get target_labeled")
        src_kind, src = _as_labeled(source, "source", num_classes, dtype)
        if src_kind == "tensor" and num_classes is not None:
            missing = sorted(set(range(num_classes)) - set(torch.unique(src[1]).tolist()))
            if missing:
                warnings.warn(f"source labels never take the values {missing} of the model's {num_classes} classes "
                              f"0..{num_classes - 1}; if the labels are 1-based or have gaps, map them with "
                              "adaptlib.encode_labels and set num_classes=len(classes)", UserWarning, stacklevel=2)
        streams = {"source": self._stream(src_kind, src, self.batch_size, 1, keep=2,
                                          check=_batch_check("source", num_classes, dtype))}
        if method.uses_target:
            kind, tgt = _as_unlabeled(target, "target", dtype)
            streams["target"] = self._stream(kind, tgt, self.target_batch_size, 2, keep=1,
                                             check=_batch_check("target", num_classes, dtype))
        if method.uses_target_labels:
            kind, tl = _as_labeled(target_labeled, "target_labeled", num_classes, dtype)
            streams["target_labeled"] = self._stream(kind, tl, self.batch_size, 3, keep=2,
                                                     check=_batch_check("target_labeled", num_classes, dtype))
        evals = {name: _as_labeled(d, f"eval_sets[{name!r}]", num_classes, dtype)
                 for name, d in (eval_sets or {}).items()}

        torch.manual_seed(self.seed)
        method.setup(model)
        method.label_smoothing = self.label_smoothing  # used by Method.classification
        model.to(self.device)
        method.to(self.device)
        _dist.broadcast_module_state((model, method))  # ranks start identical (no-op in one process)
        if _dist.rank() > 0:  # each rank its own dropout masks
            torch.manual_seed(self.seed * 1000003 + 7919 * _dist.rank())
        optimizer = self._make_optimizer()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        self._optimizer, self._streams = optimizer, streams
        sums, count = self._start(checkpoint)  # step 0, or everything restored from the checkpoint
        multi_process = _dist.is_distributed()
        on_cpu = self.device.type == "cpu"
        show = (self.progress_bar if self.progress_bar is not None else sys.stderr.isatty()) and _dist.rank() == 0
        bar = tqdm(total=self.steps, initial=self.step, desc=method.name, disable=not show, leave=False)
        model.train()
        method.train()
        try:
            for step in range(self.step, self.steps):
                progress = Progress(step, self.steps)
                factor = lr_factor(self.lr_schedule, progress.fraction)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                if multi_process:
                    _dist.broadcast_module_state((model, method), parameters=False)
                with torch.no_grad():
                    method.on_step_start(model, progress)
                s = streams["source"].next()
                batch = Batch(
                    source=LabeledBatch(s[0], s[1]),
                    target=UnlabeledBatch(streams["target"].next()[0]) if "target" in streams else None,
                    target_labeled=LabeledBatch(*streams["target_labeled"].next()) if "target_labeled" in streams else None,
                )
                with skip_value_checks():  # inputs were checked once; the loss is checked below
                    out = method.loss_terms(model, batch, progress)
                if not out.losses:
                    raise ValueError(f"method {method.name!r} returned no loss terms at step {step}")
                values = list(out.losses.values())
                loss = values[0]
                for value in values[1:]:
                    loss = loss + value
                if loss.dim() != 0:
                    raise ValueError(f"method {method.name!r} returned non-scalar loss terms: "
                                     f"{ {k: tuple(v.shape) for k, v in out.losses.items()} }")
                # Checked before backward, so the parameters stay intact. On an accelerator the
                # check would synchronise every step; there the logged sums are checked instead.
                if on_cpu and not math.isfinite(loss.item()):
                    bad = {k: float(v.detach()) for k, v in out.losses.items() if not bool(torch.isfinite(v))}
                    raise FloatingPointError(f"non-finite loss at step {step + 1} with method {method.name!r}: {bad}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if multi_process:
                    _dist.average_gradients(params)
                optimizer.step()
                self.step = step + 1
                with torch.no_grad():  # one stack and one add per step, whatever the number of terms
                    tensor_metrics = {k: v for k, v in out.metrics.items() if isinstance(v, Tensor)}
                    names = ("loss", *out.losses, *tensor_metrics)
                    row = torch.stack([loss.detach(), *(v.detach() for v in values),
                                       *(v.detach().to(loss.dtype).reshape(()) for v in tensor_metrics.values())])
                    sums.add(names, row)
                    if len(tensor_metrics) < len(out.metrics):  # plain numbers are summed in Python
                        sums.add_numbers({k: float(v) for k, v in out.metrics.items() if k not in tensor_metrics})
                    count += 1
                if self.step % self.log_every == 0 or self.step == self.steps:
                    record = {k: float(v) / count for k, v in _dist.all_reduce_mean(sums.as_dict()).items()}
                    if not math.isfinite(record["loss"]):
                        bad = {k: v for k, v in record.items() if not math.isfinite(v)}
                        raise FloatingPointError(f"non-finite loss by step {self.step} with method {method.name!r}: {bad}")
                    self.history.train.append({"step": self.step, "lr": self.lr * factor, **record})
                    sums, count = _LogSums(), 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                if evals and ((self.eval_every and self.step % self.eval_every == 0) or self.step == self.steps):
                    self.history.eval.append({"step": self.step, **{
                        f"{name}/accuracy": self._accuracy(payload, kind) for name, (kind, payload) in evals.items()}})
                    model.train()
                    method.train()
                bar.update(1)
                self._after_step(sums, count)
                if callback is not None and (self.step % every == 0 or self.step == self.steps):
                    callback(self)
                    model.train()
                    method.train()
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
        """Accuracy in [0, 1] of the model on labelled ``data`` (same forms as ``source`` in :meth:`fit`).

        In a multi-process run this is a collective: every rank must call it (each evaluates
        every ``W``-th sample and the counts are summed).
        """
        kind, payload = _as_labeled(data, "data", getattr(self.model, "num_classes", None))
        return self._accuracy(payload, kind)

    @torch.no_grad()
    def _accuracy(self, payload: Any, kind: str) -> float:
        self.model.eval()
        if _dist.is_distributed():  # rank r evaluates samples r, r + W, ...; the counts are summed
            r, w = _dist.rank(), _dist.world_size()
            if kind == "tensor":
                x, y = payload[0][r::w], payload[1][r::w]
                hits = int((self.predict(x).argmax(1) == y.cpu()).sum()) if y.numel() else 0
                correct, total = _dist.all_reduce_sum_counts((hits, int(y.numel())))
            else:
                shard = torch.utils.data.Subset(payload, range(r, len(payload), w))
                correct, total = _dist.all_reduce_sum_counts(self._dataset_counts(shard))
            return correct / max(total, 1)
        if kind == "tensor":
            x, y = payload
            return int((self.predict(x).argmax(1) == y.cpu()).sum()) / max(int(y.numel()), 1)  # exact, as for Datasets
        correct, total = self._dataset_counts(payload)
        return correct / max(total, 1)

    def _dataset_counts(self, dataset: Dataset) -> Tuple[int, int]:
        correct = total = 0
        for xb, yb in torch.utils.data.DataLoader(dataset, batch_size=1024):
            pred = self.model(xb.to(self.device)).logits.argmax(1).cpu()
            correct += int((pred == yb).sum())
            total += int(yb.numel())
        return correct, total
