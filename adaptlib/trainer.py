"""The Trainer: the one place that owns optimizers, backward, schedules, seeding and evaluation.

Every method trains through the same loop, so a comparison changes only the objective:
the network, the optimizer, the learning-rate schedule, the batch sizes and the step
budget are the Trainer's and are identical across methods.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import _checkpoint
from . import distributed as _dist
from ._precision import MixedPrecision, check_device
from ._checks import check_choice, check_positive
from ._history import History, _LogSums, lr_factor
from ._streams import DatasetStream, TensorStream
from ._trainer_eval import accuracy, predict_logits, target_outputs
from ._trainer_inputs import LabeledData, UnlabeledData, _as_labeled, _as_tensor, _check_inputs, _prepare_data
from ._trainer_modes import Frozen, _one_row_hooks, _record_modes, _restore_modes
from ._trainer_step import accumulate, diverged_message, train_step
from .methods import Method, Progress, get_method
from .models import AdaptModel

# The Trainer's helpers live beside it: ``_trainer_inputs`` (input conversion and checks),
# ``_trainer_modes`` (modules' modes, frozen parts, one-row batch-norm hooks), ``_trainer_eval``
# (prediction, accuracy, outputs on the target set), ``_trainer_step`` (one training step: batches,
# phases, backward, optimizer step), ``_checkpoint`` (checkpoint files, resuming)
# and ``_history`` (History, lr_factor, the logging sums); History and lr_factor are re-exported here.
__all__ = ["Trainer", "History", "lr_factor", "SMALL_MODEL_PARAMETERS"]

#: With ``num_threads="auto"`` on the CPU, :meth:`Trainer.fit` trains models (with the method's
#: modules) of fewer trainable parameters than this with one intra-op thread: their operations
#: are too small to gain from a thread pool, whose synchronisation then dominates each step
#: (benchmarks/README.md, "Trainer overhead on tiny networks").
SMALL_MODEL_PARAMETERS = 1_000_000


def _fused_optimizer(cls, groups, **kwargs) -> torch.optim.Optimizer:
    """``cls(groups, fused=True, **kwargs)``: one fused kernel per step for all parameters instead
    of a dozen element-wise passes per tensor, the same update up to float round-off (the Adam
    step 8x faster on a 30000 x 256 layer on the CPU: benchmarks/README.md, "Fused optimizer
    step"). The per-tensor implementation, ``cls(groups, **kwargs)``, where torch has no fused
    kernel: a parameter that is not floating point or lives on a device torch lists no fused
    kernels for (torch >= 2.4 would only refuse those at the first ``step()``), or a torch that
    refuses ``fused=True`` when the optimizer is built (CPU before 2.4, SGD before 2.4)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError):  # an older torch: its constructor checks (below)
        devices = None
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    if devices is not None and not all(p.is_floating_point() and p.device.type in devices for p in params):
        return cls(groups, **kwargs)
    try:
        return cls(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, **kwargs)


class Trainer:
    """Train an :class:`~adaptlib.models.AdaptModel` with any :class:`~adaptlib.methods.Method`.

    The Trainer alone calls ``backward``, steps the optimizer and the learning-rate schedule
    (a pure function of its step counter), seeds the random generators, moves data to the
    device, evaluates and records history. A method only returns named loss terms, whose sum
    is minimised. Switching methods is one argument; the rest of the setup stays identical.

    Args:
        model: the network (backbone, bottleneck, head); trained in place.
        method: a :class:`Method`, a registry name (``"dann"``; ``adaptlib.methods.METHODS``), a
            composition's name (``"dann+mcc"``) or a list of methods, names or ``(method, weight)``
            pairs (``["dann", ("mcc", 0.5)]``), trained as one :class:`~adaptlib.methods.Composed`.
        method_kwargs: hyper-parameters for a method given by name (``"mcc.trade_off"`` for a term of a composition).
        steps: number of optimizer steps.
        batch_size: source batch size (and labelled-target batch size); see "Batches" below.
        target_batch_size: unlabelled target batch size (default: ``batch_size``).
        optimizer: ``"sgd"`` (momentum, Nesterov), ``"adam"`` (``weight_decay`` is an L2 term
            added to the gradient) or ``"adamw"`` (Adam with decoupled weight decay,
            Loshchilov & Hutter, ICLR 2019). torch's fused kernel (``fused=True``) where torch
            has one for the parameters' device and dtype, else its per-tensor step: the same
            update up to float round-off, so runs of adaptlib before 2026-12-01 re-run with
            round-off-sized differences (README, "Results").
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
            A device this machine lacks is a ``ValueError`` at construction.
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
        precision: ``"32"`` (default), ``"bf16"`` or ``"fp16"``: the method's forward pass runs
            under ``torch.autocast``, weights, gradients and the losses' distances stay float32,
            ``"fp16"`` scales the loss; evaluation runs in float32. See
            :class:`adaptlib._precision.MixedPrecision` (``ValueError`` for a pair a device cannot run).

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

    Phases: a step draws its batches once and runs the method's :meth:`~adaptlib.methods.Method.phases`
    in order, each with its own backward and optimizer step and its own frozen modules (MCD's
    three; one for other methods); a multi-phase step logs ``"<phase>/<term>"``.

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
        precision: Union[str, int] = "32",
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
        self.device = check_device(device)
        self.amp = MixedPrecision(precision, self.device)  # adaptlib/_precision.py
        self.precision = self.amp.precision
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
            cls, kwargs = torch.optim.SGD, dict(momentum=self.momentum, nesterov=self.momentum > 0)
        else:
            cls, kwargs = (torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam), {}
        return _fused_optimizer(cls, groups, lr=self.lr, weight_decay=self.weight_decay, **kwargs)

    def _stream(self, kind: str, payload: Any, batch_size: int, seed_offset: int, keep: int, check=None):
        gen = torch.Generator().manual_seed(self.seed * 1000003 + seed_offset + 7919 * _dist.rank())
        if kind == "dataset":
            return DatasetStream(payload, batch_size, gen, self.device, keep=keep, check=check)
        return TensorStream(payload, batch_size, gen, self.device)

    # ------------------------------------------------------------------ checkpoints (adaptlib/_checkpoint.py)
    _FORMAT = _checkpoint.FORMAT
    _VERSION = _checkpoint.VERSION

    def _settings(self) -> Dict[str, Any]:
        """What must be equal for a checkpoint to continue this run (numbers, strings, lists, None)."""
        return {"method": self.method.name, "method_hparams": self.method.hparams(), "steps": self.steps,
                "batch_size": self.batch_size, "target_batch_size": self.target_batch_size, "seed": self.seed,
                "optimizer": self.optimizer_name, "lr": self.lr, "backbone_lr_multiplier": self.backbone_lr_multiplier,
                "momentum": self.momentum, "weight_decay": self.weight_decay, "lr_schedule": self.lr_schedule,
                "log_every": self.log_every, "eval_every": self.eval_every, "world_size": _dist.world_size(),
                "max_grad_norm": self.max_grad_norm,
                # only when used, so checkpoints written before the option existed still load
                **({"label_smoothing": self.label_smoothing} if self.label_smoothing else {}),
                **({"precision": self.precision} if self.precision != "32" else {})}

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
        _checkpoint.atomic_save(_checkpoint.run_state(self), path)
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
        checkpoint = _checkpoint.read_checkpoint(self, Path(path))
        _checkpoint.restore_model(self.model, checkpoint, Path(path))
        self.step = int(checkpoint["step"])
        self.history = History([dict(r) for r in checkpoint["history"]["train"]],
                               [dict(r) for r in checkpoint["history"]["eval"]])
        self._pending = checkpoint

    # ------------------------------------------------------------------ training
    def fit(
        self,
        source: Optional[LabeledData] = None,
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
                ``Dataset`` of ``(x, y)``. ``None`` (only then) for a source-free method, whose
                ``uses_source`` is False (SHOT adapting an already trained model). Once the
                method's ``reads_source`` turns False, the source stream is dropped and never
                read again.
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
        if callback_every is not None and (not isinstance(callback_every, int) or callback_every <= 0):
            raise ValueError(f"callback_every must be a positive integer or None, got {callback_every!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        every = callback_every or self.checkpoint_every
        checkpoint, streams, evals, one_row, user_modes = _prepare_data(
            self, source, target, target_labeled, eval_sets, resume)
        optimizer, params, base_lrs, sums, count = self._set_up_run(streams, checkpoint)
        method, model = self.method, self.model
        modes = user_modes + _record_modes(method)  # the method's modules: as setup left them
        multi_process = _dist.is_distributed()
        on_cpu = self.device.type == "cpu"
        show = (self.progress_bar if self.progress_bar is not None else sys.stderr.isatty()) and _dist.rank() == 0
        bar = tqdm(total=self.steps, initial=self.step, desc=method.name, disable=not show, leave=False)
        frozen = Frozen(modes)  # frozen parts run in eval mode and get no update
        _restore_modes(modes)
        threads = self._threads_for(params)
        previous_threads = torch.get_num_threads()
        hooks = []
        try:
            if threads is not None and threads != previous_threads:
                torch.set_num_threads(threads)
            if one_row:  # batch-norm layers in train mode normalise one-row batches with their running statistics
                hooks = _one_row_hooks(modes)
            for step in range(self.step, self.steps):
                progress = Progress(step, self.steps)
                factor = lr_factor(self.lr_schedule, progress.fraction)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                step_frozen = tuple(method.frozen_modules(model, progress))
                frozen.set(step_frozen)
                if multi_process:
                    _dist.broadcast_module_state((model, method), parameters=False)
                with torch.no_grad():
                    if method.needs_target_outputs(progress):
                        if "target" not in streams:
                            raise ValueError(f"method {method.name!r} asks for its outputs on the target set: "
                                             "pass target data to fit")
                        method.on_target_outputs(model, target_outputs(model, streams["target"]), progress)
                    method.on_step_start(model, progress)
                out, loss, values = train_step(self, step, progress, streams, params, frozen, step_frozen,
                                               multi_process, on_cpu)
                self.step = step + 1
                count = accumulate(sums, out, loss, values, count)
                if self.step % self.log_every == 0 or self.step == self.steps:
                    record = self._log_record(sums, count, factor, params)
                    sums, count = _LogSums(), 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
                if evals and ((self.eval_every and self.step % self.eval_every == 0) or self.step == self.steps):
                    self.history.eval.append({"step": self.step, **{
                        f"{name}/accuracy": accuracy(model, self.device, payload, kind, f"eval_sets[{name!r}]")
                        for name, (kind, payload) in evals.items()}})
                    frozen.restore()
                if show:
                    bar.update(1)
                _checkpoint.after_step(self, sums, count)
                if callback is not None and (self.step % every == 0 or self.step == self.steps):
                    callback(self)
                    frozen.restore()
        finally:
            bar.close()
            for h in hooks:
                h.remove()
            _restore_modes(modes)  # the user's modes, as fit found them
            if threads is not None and threads != previous_threads:
                torch.set_num_threads(previous_threads)
        return self.history

    def _set_up_run(self, streams: Dict[str, Any], checkpoint: Optional[Dict[str, Any]]):
        """:meth:`fit`'s set-up of the run: seeding, the method's ``setup``, the optimizer, then step 0
        or everything restored from ``checkpoint``. Returns ``(optimizer, its parameters, the groups'
        base learning rates, logging sums, count)``."""
        method, model = self.method, self.model
        torch.manual_seed(self.seed)
        method.setup(model)
        method.label_smoothing = self.label_smoothing  # used by Method.classification
        method.to(self.device)
        _dist.broadcast_module_state((model, method))  # ranks start identical (no-op in one process)
        if _dist.rank() > 0:  # each rank its own dropout masks
            torch.manual_seed(self.seed * 1000003 + 7919 * _dist.rank())
        optimizer = self._make_optimizer()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        base_lrs = [g["lr"] for g in optimizer.param_groups]  # before a checkpoint's optimizer state replaces them
        self._optimizer, self._streams = optimizer, streams
        if (checkpoint is not None and "source" in streams and "source" not in checkpoint.get("streams", {"source": 0})
                and not method.reads_source(Progress(int(checkpoint["step"]), self.steps))):
            del streams["source"]  # saved after the method stopped reading source data: it is never read again
        sums, count = _checkpoint.start(self, checkpoint)  # step 0, or everything restored from the checkpoint
        return optimizer, params, base_lrs, sums, count

    def _log_record(self, sums: _LogSums, count: int, factor: float, params: List[Tensor]) -> Dict[str, float]:
        """Average the interval's sums (over processes too), check them and append the record to the history."""
        record = {k: float(v) / count for k, v in _dist.all_reduce_mean(sums.as_dict()).items()}
        if not math.isfinite(record["loss"]):
            bad = {k: v for k, v in record.items() if not math.isfinite(v)}
            raise FloatingPointError(diverged_message(self, f"by step {self.step}", bad, params))
        self.history.train.append({"step": self.step, "lr": self.lr * factor, **record})
        return record

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
        return predict_logits(self.model, self.device, x, "x", batch_size)

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
        return accuracy(self.model, self.device, payload, kind, "data")
