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

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import distributed as _dist
from ._checks import check_choice, check_positive, skip_value_checks
from ._streams import DatasetStream, TensorStream
from .methods import Batch, LabeledBatch, Method, Progress, UnlabeledBatch, get_method
from .models import AdaptModel

__all__ = ["Trainer", "History", "lr_factor", "SMALL_MODEL_PARAMETERS"]

#: With ``num_threads="auto"`` on the CPU, :meth:`Trainer.fit` trains models (with the method's
#: modules) of fewer trainable parameters than this with one intra-op thread: their operations
#: are too small to gain from a thread pool, whose synchronisation then dominates each step
#: (benchmarks/README.md, "Trainer overhead on tiny networks").
SMALL_MODEL_PARAMETERS = 1_000_000

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
                        f"inputs (x.to({dtype})) or the model (model.to({x.dtype}))")


def _is_array_like(x: Any) -> bool:
    """A NumPy array or scalar, or a (nested) list of numbers or arrays: what :func:`_as_tensor` converts."""
    return isinstance(x, (np.ndarray, np.generic, list))


def _as_tensor(x: Any, name: str, what: str, dtype: Optional[torch.dtype]) -> Any:
    """``x`` as a tensor when it is array-like (else unchanged, for the checks to refuse by name).

    Floating inputs (``what == "inputs"``) get ``dtype`` (the model's; the default dtype when
    ``None``); integer labels (``what == "labels"``) become int64. Other kinds keep their dtype
    (float labels are then refused by :func:`_check_labels` with the ``encode_labels`` hint).
    """
    if isinstance(x, Tensor) or not _is_array_like(x):
        return x
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} {what} could not be read as an array ({e}); pass a tensor or a NumPy array") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} {what} must be numbers, got an array of dtype {arr.dtype}"
                        + (f". {_LABEL_HINT}" if what == "labels" else ""))
    t = torch.as_tensor(arr)
    if what == "inputs" and t.is_floating_point():
        return t.to(dtype or torch.get_default_dtype())
    if what == "labels" and arr.dtype.kind in "iu":
        return t.to(torch.int64)
    return t


def _as_labeled(data: LabeledData, name: str, num_classes: Optional[int],
                dtype: Optional[torch.dtype] = None) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError(f"{name} must be (x, y) tensors or arrays, an object with .x and .y, or a Dataset; got "
                        f"{type(data).__name__}")
    x, y = _as_tensor(x, name, "inputs", dtype), _as_tensor(y, name, "labels", None)
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
    elif isinstance(data, (np.ndarray, list)):
        x = _as_tensor(data, name, "inputs", dtype)
    elif hasattr(data, "x") and not isinstance(data, tuple):
        x = _as_tensor(data.x, name, "inputs", dtype)  # a Domain: only its inputs are read; its labels never reach the method
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


# ------------------------------------------------------------------ modules' modes
Modes = List[Tuple[nn.Module, bool]]


def _record_modes(*roots: nn.Module) -> Modes:
    """Every submodule of ``roots`` with its ``training`` flag (the user's modes, to restore later)."""
    return [(m, m.training) for root in roots for m in root.modules()]


def _restore_modes(modes: Modes, frozen: Tuple[nn.Module, ...] = ()) -> None:
    """Give each module its recorded mode, then put the ``frozen`` ones (and their submodules) in eval mode."""
    for module, training in modes:
        module.training = training
    for module in frozen:
        module.eval()


def _one_row_pre_hook(module: nn.Module, args: Tuple[Any, ...]) -> None:
    x = args[0] if args else None
    if module.training and isinstance(x, Tensor) and x.dim() >= 2 and x.numel() == x.shape[1]:
        module.training = False  # one value per channel: normalise with the running statistics
        module._adaptlib_one_row = True  # type: ignore[attr-defined]


def _one_row_post_hook(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
    if getattr(module, "_adaptlib_one_row", False):
        module.training = True
        module._adaptlib_one_row = False  # type: ignore[attr-defined]


def _first_layer(module: nn.Module) -> Optional[nn.Module]:
    """The first ``nn.Linear`` or convolution among ``module``'s submodules (registration order)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            return m
    return None


_SHAPE_ERRORS = ("cannot be multiplied", "size mismatch", "channels", "shape")


def _shape_error(error: Exception, x: Tensor, name: str, model: nn.Module) -> Optional[ValueError]:
    """A ValueError naming ``name``'s dimension and the model's when ``error`` is an input-shape mismatch, else None."""
    layer = _first_layer(getattr(model, "backbone", model))
    if isinstance(layer, nn.Linear) and x.dim() == 2 and x.shape[1] != layer.in_features:
        return ValueError(f"{name} has {x.shape[1]} features but the model's backbone expects "
                          f"{layer.in_features} (its first layer is {layer}; inputs of shape {tuple(x.shape)})")
    if isinstance(layer, nn.modules.conv._ConvNd) and x.dim() >= 3 and x.shape[1] != layer.in_channels:
        return ValueError(f"{name} has {x.shape[1]} channels but the model's backbone expects "
                          f"{layer.in_channels} (its first layer is {layer}; inputs of shape {tuple(x.shape)})")
    if any(key in str(error) for key in _SHAPE_ERRORS):
        first = f" (the backbone's first layer is {layer})" if layer is not None else ""
        return ValueError(f"{name} inputs of shape {tuple(x.shape)} do not fit the model{first}: {error}")
    return None


def _probe(model: nn.Module, x: Tensor, name: str) -> None:
    """Run one row of ``x`` through ``model`` (eval mode, no gradient, modes restored after).

    Raises:
        ValueError: the row does not fit the model's input shape (naming both dimensions).
    Other errors of the probe are ignored here: training meets them at its first step.
    """
    modes = _record_modes(model)
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), x.device)
        with torch.no_grad():
            model(x[:1].to(device))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        error = _shape_error(e, x, name, model)
        if error is not None:
            raise error from None
    finally:
        _restore_modes(modes)


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
        batch_size: source batch size (and labelled-target batch size); see "Batches" below.
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
        max_grad_norm: if given, the gradients of all trained parameters are rescaled at each
            step so that their global L2 norm is at most this (``clip_grad_norm_``); ``None``
            (default): no clipping. A remedy for runs that diverge.
        num_threads: intra-op CPU threads during :meth:`fit`. ``"auto"`` (default): on the
            CPU, one thread when the model and the method's modules have fewer than
            :data:`SMALL_MODEL_PARAMETERS` (1e6) parameters, whose small operations run slower
            with a thread pool (about 1.2x the cost of a hand-written loop with one thread, up
            to 10x and more with two on a shared 2-core machine; ``benchmarks/README.md``);
            otherwise torch's setting is left alone. An integer: that many threads. ``None``:
            never touch torch's setting. :meth:`fit` sets the count with
            ``torch.set_num_threads`` (a process-wide setting) when it starts and restores the
            previous count when it returns or raises.

    Batches: each data stream draws batches of ``min(batch size, N)`` rows from its ``N``
    rows, a fresh permutation every epoch, without replacement, and drops the incomplete last
    batch of each epoch (as ``DataLoader(shuffle=True, drop_last=True)``; a different
    remainder each epoch), so every step sees batches of one size. The sizes: ``batch_size``
    for the source and for ``target_labeled``, ``target_batch_size`` for the unlabelled target.
    A source or target set smaller than its batch size gives batches of the whole set,
    reshuffled, with a ``UserWarning`` naming the set, the argument and both sizes (for
    ``target_labeled``, few-shot by design, the cap ``min(batch_size, N)`` is silent). A stream
    with batches of one row (one row of data, or a batch size of 1) gets a ``UserWarning`` when
    the model has batch-norm layers in train mode: those cannot compute batch statistics of one
    row, so for one-row inputs they normalise with their running statistics (as in eval mode)
    and do not update them; batch-norm layers without running statistics
    (``track_running_stats=False``) make that a ``ValueError`` at set-up.

    Modes: :meth:`fit` keeps each submodule's own ``training`` flag as it found it when it
    started (all in train mode for a new model): a part the user put in eval mode (say a
    pre-trained backbone with ``backbone.eval().requires_grad_(False)``) stays in eval mode at
    every step, its batch-norm statistics untouched. After each evaluation and each callback
    the recorded modes are restored, and again when :meth:`fit` returns. A method's
    :meth:`~adaptlib.methods.Method.frozen_modules` (FineTune's ``freeze_backbone``) run in
    eval mode while frozen and get no update, so their parameters and buffers stay
    bit-identical. A model entirely in eval mode when :meth:`fit` starts trains in eval mode,
    with a ``UserWarning``. :meth:`predict` and :meth:`evaluate` run in eval mode and restore
    each module's mode afterwards.

    Inputs: wherever a tensor is accepted, a NumPy array or a nested list is too; floating
    values are converted to the model's dtype, integer labels to int64. Floating tensors must
    already have the model's dtype (``TypeError`` saying which to convert otherwise). Before
    training, one row of each tensor input runs through the model (eval mode, no gradient):
    a feature dimension the model does not take is a ``ValueError`` naming both dimensions.

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
        FloatingPointError: during :meth:`fit` when the loss becomes NaN or inf: the message
            names the step at which the run diverged (on the CPU the step itself, checked before
            its backward pass, so the model keeps the parameters from before that step; on an
            accelerator the first logging step at or after it), the non-finite loss terms, and
            what to try (a lower ``lr``, ``max_grad_norm``).

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
        max_grad_norm: Optional[float] = None,
        num_threads: Union[int, str, None] = "auto",
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
        self.max_grad_norm = None if max_grad_norm is None else check_positive(max_grad_norm, "max_grad_norm")
        if not (num_threads is None or num_threads == "auto"
                or (isinstance(num_threads, int) and not isinstance(num_threads, bool) and num_threads > 0)):
            raise ValueError(f"num_threads must be 'auto', None or a positive integer, got {num_threads!r}")
        self.num_threads = num_threads
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
                "max_grad_norm": self.max_grad_norm,
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
        there too. Labels of any integer dtype are converted to int64. Array-likes (NumPy
        arrays, lists) are accepted wherever tensors are (floating values converted to the
        model's dtype). Modes, batch sizes and threads: see the class docstring.

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
                (e.g. the per-checkpoint validator scores of :mod:`adaptlib.studies`); each
                module of the model and the method gets its training-time mode back afterwards. It must not
                change parameters, and should restore the global RNG state if it draws from it.
            callback_every: steps between callback calls (default: ``checkpoint_every``).

        Raises:
            ValueError / TypeError: missing or malformed data, naming the argument: labels
                outside ``0..C-1`` or not integers (the message points to
                :func:`adaptlib.encode_labels`), floating inputs of another dtype than the
                model's, tensors on the ``meta`` device; ``resume=True`` without
                ``checkpoint_dir``; a checkpoint saved with other settings or data sizes.
            ValueError: a tensor input's feature dimension (or channel count) does not fit
                the model, naming both; one-row batches with batch-norm layers that keep no
                running statistics.
            FileNotFoundError: ``resume`` names a file that does not exist.
            FloatingPointError: the loss became NaN or inf (the message names the step).

        Warns:
            UserWarning: some of the model's classes never occur in tensor ``source`` labels
                (a sign of 1-based or gapped labels; see :func:`adaptlib.encode_labels`); a
                source or target set smaller than its batch size; one-row batches with
                batch-norm layers in train mode; a model entirely in eval mode (see the class
                docstring: "Batches", "Modes").
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
        data = {"source": (src_kind, src, self.batch_size, "batch_size", 1, 2)}
        if method.uses_target:
            kind, tgt = _as_unlabeled(target, "target", dtype)
            data["target"] = (kind, tgt, self.target_batch_size, "target_batch_size", 2, 1)
        if method.uses_target_labels:
            kind, tl = _as_labeled(target_labeled, "target_labeled", num_classes, dtype)
            data["target_labeled"] = (kind, tl, self.batch_size, "batch_size", 3, 2)
        evals = {name: _as_labeled(d, f"eval_sets[{name!r}]", num_classes, dtype)
                 for name, d in (eval_sets or {}).items()}
        user_modes = _record_modes(model)
        if not any(training for _, training in user_modes):
            warnings.warn("the model is in eval mode at the start of fit: the Trainer keeps each module's mode, so "
                          "it trains in eval mode (dropout off, batch-norm statistics not updated). Call "
                          "model.train() before fit unless that is intended", UserWarning, stacklevel=2)
        one_row = self._check_sizes(data)
        # one row of every tensor input through the model: a wrong feature dimension fails here, by name
        model.to(self.device)
        probed = set()
        for name, (kind, payload) in ([(n, (d[0], d[1])) for n, d in data.items()]
                                      + [(f"eval_sets[{n!r}]", e) for n, e in evals.items()]):
            if kind == "tensor" and (tuple(payload[0].shape[1:]), payload[0].dtype) not in probed:
                _probe(model, payload[0], name)
                probed.add((tuple(payload[0].shape[1:]), payload[0].dtype))
        streams = {name: self._stream(kind, payload, size, offset, keep=keep,
                                      check=_batch_check(name, num_classes, dtype))
                   for name, (kind, payload, size, _, offset, keep) in data.items()}

        torch.manual_seed(self.seed)
        method.setup(model)
        method.label_smoothing = self.label_smoothing  # used by Method.classification
        method.to(self.device)
        _dist.broadcast_module_state((model, method))  # ranks start identical (no-op in one process)
        if _dist.rank() > 0:  # each rank its own dropout masks
            torch.manual_seed(self.seed * 1000003 + 7919 * _dist.rank())
        optimizer = self._make_optimizer()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        self._optimizer, self._streams = optimizer, streams
        sums, count = self._start(checkpoint)  # step 0, or everything restored from the checkpoint
        modes = user_modes + _record_modes(method)  # the method's modules: as setup left them
        multi_process = _dist.is_distributed()
        on_cpu = self.device.type == "cpu"
        show = (self.progress_bar if self.progress_bar is not None else sys.stderr.isatty()) and _dist.rank() == 0
        bar = tqdm(total=self.steps, initial=self.step, desc=method.name, disable=not show, leave=False)
        frozen: Tuple[nn.Module, ...] = ()
        frozen_params: List[Tensor] = []
        _restore_modes(modes)
        threads = self._threads_for(params)
        previous_threads = torch.get_num_threads()
        hooks = []
        try:
            if threads is not None and threads != previous_threads:
                torch.set_num_threads(threads)
            if one_row:  # batch-norm layers in train mode normalise one-row batches with their running statistics
                hooks = [h for m, training in modes if isinstance(m, _BatchNorm) and training
                         for h in (m.register_forward_pre_hook(_one_row_pre_hook),
                                   m.register_forward_hook(_one_row_post_hook))]
            for step in range(self.step, self.steps):
                progress = Progress(step, self.steps)
                factor = lr_factor(self.lr_schedule, progress.fraction)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                now_frozen = tuple(method.frozen_modules(model, progress))
                if now_frozen != frozen:  # frozen parts run in eval mode and get no update
                    frozen = now_frozen
                    frozen_params = [p for m in frozen for p in m.parameters()]
                    _restore_modes(modes, frozen)
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
                # Checked before backward, so the parameters stay those of the last good step. On an
                # accelerator the check would synchronise every step; there the logged sums are checked.
                if on_cpu and not math.isfinite(loss.item()):
                    bad = {k: float(v.detach()) for k, v in out.losses.items() if not bool(torch.isfinite(v))}
                    raise FloatingPointError(self._diverged(f"at step {step + 1}", bad, params))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if multi_process:
                    _dist.average_gradients(params)
                for p in frozen_params:
                    p.grad = None  # no update, weight decay or momentum for a frozen part
                if self.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                optimizer.step()
                self.step = step + 1
                with torch.no_grad():  # one stack and one add per step, whatever the number of terms
                    metrics = out.metrics
                    tensor_metrics = {k: v for k, v in metrics.items() if isinstance(v, Tensor)} if metrics else {}
                    names = ("loss", *out.losses, *tensor_metrics)
                    row = torch.stack([loss.detach(), *(v.detach() for v in values),
                                       *(v.detach().to(loss.dtype).reshape(()) for v in tensor_metrics.values())])
                    sums.add(names, row)
                    if len(tensor_metrics) < len(metrics):  # plain numbers are summed in Python
                        sums.add_numbers({k: float(v) for k, v in metrics.items() if k not in tensor_metrics})
                    count += 1
                if self.step % self.log_every == 0 or self.step == self.steps:
                    record = {k: float(v) / count for k, v in _dist.all_reduce_mean(sums.as_dict()).items()}
                    if not math.isfinite(record["loss"]):
                        bad = {k: v for k, v in record.items() if not math.isfinite(v)}
                        raise FloatingPointError(self._diverged(f"by step {self.step}", bad, params))
                    self.history.train.append({"step": self.step, "lr": self.lr * factor, **record})
                    sums, count = _LogSums(), 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                if evals and ((self.eval_every and self.step % self.eval_every == 0) or self.step == self.steps):
                    self.history.eval.append({"step": self.step, **{
                        f"{name}/accuracy": self._accuracy(payload, kind, f"eval_sets[{name!r}]")
                        for name, (kind, payload) in evals.items()}})
                    _restore_modes(modes, frozen)
                if show:
                    bar.update(1)
                self._after_step(sums, count)
                if callback is not None and (self.step % every == 0 or self.step == self.steps):
                    callback(self)
                    _restore_modes(modes, frozen)
        finally:
            bar.close()
            for h in hooks:
                h.remove()
            _restore_modes(modes)  # the user's modes, as fit found them
            if threads is not None and threads != previous_threads:
                torch.set_num_threads(previous_threads)
        return self.history

    def _diverged(self, where: str, bad: Mapping[str, float], params: List[Tensor]) -> str:
        """The message of the FloatingPointError raised when the loss becomes NaN or inf."""
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        state = ("its parameters (after step {}) are still finite" if finite else
                 "its parameters (after step {}) already hold NaN or inf").format(self.step)
        return (f"non-finite loss {where} of {self.steps} with method {self.method.name!r}: {dict(bad)}. The run "
                f"diverged; the model is left as it was before that step and {state}. Try a lower learning "
                f"rate (lr={self.lr:g} now), gradient clipping (max_grad_norm=, e.g. 1.0 or 10.0), or check "
                f"the scale of the inputs")

    def _check_sizes(self, data: Mapping[str, Tuple[Any, ...]]) -> bool:
        """Warn about batches larger than their data; return whether some stream has one-row batches.

        Raises:
            ValueError: one-row batches with a batch-norm layer in train mode that keeps no running
                statistics (it can normalise neither in train nor in eval mode).
        """
        one_row = []
        for name, (kind, payload, size, arg, _, _) in data.items():
            n = len(payload) if kind == "dataset" else int(payload[0].shape[0])
            if n < size and name != "target_labeled":
                default = " (its default: batch_size)" if arg == "target_batch_size" and size == self.batch_size else ""
                warnings.warn(f"{name} has {n} rows but {arg} is {size}{default}: every {name} batch is the whole "
                              f"set, reshuffled ({n} rows)", UserWarning, stacklevel=3)
            if min(n, size) == 1:
                one_row.append(f"{name} has 1 row" if n == 1 else f"{arg} is 1")
        if not one_row:
            return False
        norms = [m for m in self.model.modules() if isinstance(m, _BatchNorm) and m.training]
        if not norms:
            return True
        what = " and ".join(one_row)
        stateless = [m for m in norms if m.running_mean is None]
        if stateless:
            raise ValueError(f"{what}, so its batches have one row, and the model has batch-norm layers in train "
                             f"mode without running statistics (track_running_stats=False, e.g. {stateless[0]}), "
                             f"which cannot normalise one row: pass at least 2 rows per batch")
        warnings.warn(f"{what}, so its batches have one row: batch-norm layers in train mode cannot compute batch "
                      f"statistics of one row; for one-row batches they normalise with their running statistics "
                      f"(as in eval mode) and do not update them. Pass more rows, or put the batch-norm layers in "
                      f"eval mode (the Trainer keeps each module's mode)", UserWarning, stacklevel=3)
        return True

    def _threads_for(self, params: List[Tensor]) -> Optional[int]:
        """The intra-op thread count :meth:`fit` runs with, or ``None`` to leave torch's setting alone."""
        if self.num_threads != "auto":
            return self.num_threads  # type: ignore[return-value]
        if self.device.type != "cpu" or sum(p.numel() for p in params) >= SMALL_MODEL_PARAMETERS:
            return None
        return 1

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, x: Any, *, batch_size: int = 4096) -> Tensor:
        """Class logits of inputs ``x``, in eval mode, computed in chunks of ``batch_size`` rows.

        Args:
            x: inputs ``(N, ...)``: a tensor of the model's dtype (any device; moved to the
                Trainer's device chunk by chunk), or an array-like (NumPy array, nested list),
                whose floating values are converted to the model's dtype.

        Returns:
            ``(N, C)`` logits on the CPU, in the model's dtype.

        The model runs in eval mode; each module's mode (train or eval) is restored afterwards.

        Raises:
            TypeError: ``x`` is not a tensor or array-like, or a floating tensor of another dtype
                than the model's (the message says which to convert).
            ValueError: ``x``'s feature dimension does not fit the model (the message names both).
        """
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        x = _as_tensor(x, "x", "inputs", dtype)
        _check_inputs(x, "x", dtype)
        return self._predict(x, "x", batch_size)

    @torch.no_grad()
    def _predict(self, x: Tensor, name: str, batch_size: int = 4096) -> Tensor:
        modes = _record_modes(self.model)
        self.model.eval()
        self.model.to(self.device)
        outs = []
        try:
            for i in range(0, x.shape[0], batch_size):
                chunk = x[i:i + batch_size]
                try:
                    outs.append(self.model(chunk.to(self.device)).logits)
                except RuntimeError as e:
                    error = _shape_error(e, chunk, name, self.model) if i == 0 else None
                    if error is None:
                        raise
                    raise error from None
        finally:
            _restore_modes(modes)
        if not outs:
            return torch.empty(0, getattr(self.model, "num_classes", 0), dtype=x.dtype if x.is_floating_point() else None)
        return torch.cat(outs).cpu()

    def evaluate(self, data: LabeledData) -> float:
        """Accuracy in [0, 1] of the model on labelled ``data`` (same forms as ``source`` in :meth:`fit`,
        array-likes included), in eval mode; each module's mode is restored afterwards.

        In a multi-process run this is a collective: every rank must call it (each evaluates
        every ``W``-th sample and the counts are summed).

        Raises:
            TypeError / ValueError: as for ``source`` in :meth:`fit`, with the argument named
                ``data``; a feature dimension that does not fit the model (naming both).
        """
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        kind, payload = _as_labeled(data, "data", getattr(self.model, "num_classes", None), dtype)
        return self._accuracy(payload, kind, "data")

    @torch.no_grad()
    def _accuracy(self, payload: Any, kind: str, name: str = "data") -> float:
        if _dist.is_distributed():  # rank r evaluates samples r, r + W, ...; the counts are summed
            r, w = _dist.rank(), _dist.world_size()
            if kind == "tensor":
                x, y = payload[0][r::w], payload[1][r::w]
                hits = int((self._predict(x, name).argmax(1) == y.cpu()).sum()) if y.numel() else 0
                correct, total = _dist.all_reduce_sum_counts((hits, int(y.numel())))
            else:
                shard = torch.utils.data.Subset(payload, range(r, len(payload), w))
                correct, total = _dist.all_reduce_sum_counts(self._dataset_counts(shard))
            return correct / max(total, 1)
        if kind == "tensor":
            x, y = payload
            return int((self._predict(x, name).argmax(1) == y.cpu()).sum()) / max(int(y.numel()), 1)  # exact, as for Datasets
        correct, total = self._dataset_counts(payload)
        return correct / max(total, 1)

    def _dataset_counts(self, dataset: Dataset) -> Tuple[int, int]:
        correct = total = 0
        modes = _record_modes(self.model)
        self.model.eval()
        try:
            for xb, yb in torch.utils.data.DataLoader(dataset, batch_size=1024):
                pred = self.model(xb.to(self.device)).logits.argmax(1).cpu()
                correct += int((pred == yb).sum())
                total += int(yb.numel())
        finally:
            _restore_modes(modes)
        return correct, total
