"""The method contract: typed batches in, named loss terms out.

A method is the paper's algorithm box and nothing else. It may own extra modules (a
domain discriminator) but it never calls ``backward``, never steps an optimizer and keeps
no schedule state: the :class:`~adaptlib.Trainer` passes the training progress in, and
schedules such as DANN's gradient-reversal warm-up are pure functions of it.

A step is one :class:`Phase` (one backward, one optimizer step) for almost every method. A
method whose step alternates objectives (MCD: train the classifiers, then the generator)
returns several phases from :meth:`Method.phases`, each with its loss terms and the modules
it does not train; the Trainer still does every backward and optimizer step.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from .._checks import check_choice
from ..models import AdaptModel, ModelOutput
from .search_space import HParam

__all__ = [
    "LabeledBatch",
    "UnlabeledBatch",
    "Batch",
    "Progress",
    "StepOutput",
    "Phase",
    "Method",
    "dann_warmup",
    "mean_cross_distance",
]


@dataclass(frozen=True)
class LabeledBatch:
    """A labelled batch: inputs ``x`` of shape ``(N, ...)`` and class indices ``y`` ``(N,)`` int64."""

    x: Tensor
    y: Tensor


@dataclass(frozen=True)
class UnlabeledBatch:
    """An unlabelled batch: inputs ``x`` of shape ``(M, ...)``. It has no field for labels.

    ``index``: ``(M,)`` int64 row numbers of these inputs in the unlabelled target set (the
    Trainer fills it; rows of :meth:`Method.on_target_outputs`'s outputs carry the same
    numbers), or ``None`` when the batch was built by hand.
    """

    x: Tensor
    index: Optional[Tensor] = None


@dataclass(frozen=True)
class Batch:
    """Everything a method sees at one training step.

    Attributes:
        source: labelled source batch; ``None`` only for a method that reads no source data at
            this step (:meth:`Method.reads_source`: SHOT's target phase, or SHOT adapting a
            model trained elsewhere).
        target: unlabelled target batch, or ``None`` for methods that do not use target data.
        target_labeled: a batch of the few labelled target samples, present only for methods
            whose ``uses_target_labels`` is True.
    """

    source: Optional[LabeledBatch]
    target: Optional[UnlabeledBatch] = None
    target_labeled: Optional[LabeledBatch] = None


@dataclass(frozen=True)
class Progress:
    """Where training stands: ``step`` in ``0..total_steps-1``; ``fraction = step / total_steps`` in [0, 1)."""

    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        return self.step / max(self.total_steps, 1)


@dataclass
class StepOutput:
    """Named loss terms of one step, already weighted; the trainer minimises their sum.

    Attributes:
        losses: name -> scalar tensor with gradient (e.g. ``{"classification": ..., "domain": ...}``).
        metrics: name -> scalar logged beside the losses: a tensor (detached by the trainer)
            or a plain Python number (e.g. a schedule value, cheaper than a new tensor).
    """

    losses: Dict[str, Tensor]
    metrics: Dict[str, Union[Tensor, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """One optimisation phase of a training step: the Trainer minimises its loss terms with one
    backward pass and one optimizer step, then moves on to the step's next phase.

    Attributes:
        name: prefix of its loss terms and metrics in the history (``"B"`` logs ``"B/discrepancy"``);
            ``""`` for the single phase of an ordinary step (names unprefixed). Names of the
            phases of one step must differ.
        loss_terms: ``(model, batch, progress) -> StepOutput``, called when the phase starts,
            i.e. after the previous phase's optimizer step (a later phase sees the updated
            parameters). Same rules as :meth:`Method.loss_terms`.
        frozen: modules (of the model or the method) this phase does not train, on top of
            :meth:`Method.frozen_modules`: they run in eval mode during the phase and any
            gradient they receive is dropped before its optimizer step, so their parameters and
            buffers (batch-norm statistics) stay bit-identical through it.
    """

    name: str
    loss_terms: Callable[..., "StepOutput"]
    frozen: Tuple[nn.Module, ...] = ()


def dann_warmup(fraction: float, gamma: float = 10.0) -> float:
    """DANN's adaptation-factor schedule ``2 / (1 + exp(-gamma * p)) - 1`` for progress ``p`` in [0, 1].

    Rises from 0 at the start of training to about 1 at the end (Ganin et al., JMLR 2016, Sec. 5.2.2).
    """
    return 2.0 / (1.0 + math.exp(-gamma * fraction)) - 1.0


def mean_cross_distance(source: Tensor, target: Tensor, floor: float = 1e-8) -> Tensor:
    """``mean_ij ||source_i - target_j||^2`` of ``(N, D)`` and ``(M, D)`` features, at least ``floor``.

    Computed in O((N + M) D) by the identity ``mean|x|^2 + mean|y|^2 - 2 mean(x).mean(y)``, and
    differentiable. Methods divide squared-distance costs by it to make them invariant to the
    feature scale: the gradient then has no component that shrinks all features together (with
    a detached scale it does, and features collapse to 0 step by step).
    """
    value = (source.pow(2).sum(1).mean() + target.pow(2).sum(1).mean()
             - 2 * (source.mean(0) * target.mean(0)).sum())
    return value.clamp_min(floor)


class Method(nn.Module, abc.ABC):
    """Base class of every domain-adaptation method.

    Subclasses set the class attributes, create their extra modules in :meth:`setup`, and
    implement :meth:`loss_terms`. The trainer calls, once, ``setup(model)``, then at each step
    ``frozen_modules(model, progress)``, ``reads_source(progress)`` (no source batch is drawn
    when False), ``needs_target_outputs(progress)`` (and, when True, ``on_target_outputs``),
    ``on_step_start(model, progress)`` (under ``torch.no_grad``) and ``phases(model,
    progress)``; for each phase in order it calls the phase's loss function, sums the returned
    losses, and does backward and the optimizer step. The default :meth:`phases` is the one
    phase ``loss_terms(model, batch, progress)``.

    Methods combine with ``+`` and scale with ``*`` into a :class:`~adaptlib.methods.Composed`
    (``DANN() + 0.5 * MCC()``), whose single step sums the terms (source cross-entropy once).

    Class attributes:
        name: registry name (``"dann"``).
        uses_target: whether the method needs unlabelled target batches.
        uses_source: whether it reads labelled source data at all (False for SHOT adapting a
            model trained elsewhere: ``Trainer.fit`` then takes no ``source``). An instance may
            override it.
        composable: whether it may be a term of a :class:`~adaptlib.methods.Composed`
            (False for multi-phase or source-free methods, whose step is not a sum of terms).
        uses_target_labels: whether it trains on a few labelled target samples (its
            accuracy is then not comparable with unsupervised methods, and reports say so).
        search_space: name -> :class:`~adaptlib.methods.search_space.HParam` (default and
            search distribution) of each tunable ``__init__`` argument; studies sample from it
            (``adaptlib.studies``). The learning rate is the Trainer's and is declared there.

    Attribute ``alignment`` (``"local"`` or ``"global"``; the alignment methods take it as a
    constructor argument): in multi-process training, whether the alignment loss is computed
    on each process's own batch (``"local"``; data parallelism then averages the per-process
    losses' gradients) or on the global batch of all processes, gathered by :meth:`gather`
    (``"global"``). See ``docs/distributed.md`` for which estimators that changes.
    """

    name: ClassVar[str] = "method"
    uses_target: ClassVar[bool] = True
    uses_target_labels: ClassVar[bool] = False
    uses_source: bool = True
    composable: ClassVar[bool] = True
    search_space: ClassVar[Mapping[str, HParam]] = {}
    #: The paper's own reported numbers where its protocol matches one of adaptlib's benchmarks:
    #: benchmark registry name -> (mean target accuracy in percent, where it is reported and how
    #: the protocol compares, e.g. ``"Table 2 of Ganin et al. 2016; same 12 tasks, mSDA features"``).
    #: Empty where no published protocol matches. The method pages print it beside adaptlib's numbers.
    paper_results: ClassVar[Mapping[str, Tuple[float, str]]] = {}
    alignment: str = "local"
    #: Label smoothing of :meth:`classification`, in [0, 1); the Trainer sets it (its ``label_smoothing``).
    label_smoothing: float = 0.0

    def setup(self, model: AdaptModel) -> None:
        """Create the method's own modules for ``model`` (e.g. a discriminator on ``model.feature_dim``)."""

    def on_step_start(self, model: AdaptModel, progress: Progress) -> None:
        """Hook before each step, run without gradient (e.g. snapshot weights at a phase change)."""

    def frozen_modules(self, model: AdaptModel, progress: Progress) -> Sequence[nn.Module]:
        """The submodules of ``model`` this method does not train at ``progress`` (default: none).

        The Trainer runs them in eval mode for that step (batch-norm statistics do not move,
        dropout is off) and drops any gradient they receive before the optimizer step, so their
        whole state (parameters and buffers) stays bit-identical while they are frozen. The
        method should compute them under ``torch.no_grad()`` to save the backward pass. Called
        once per step, before :meth:`on_step_start`; the Trainer owns the modes, a method never
        calls ``train()`` or ``eval()`` itself.
        """
        return ()

    def reads_source(self, progress: Progress) -> bool:
        """Whether this step reads a source batch (default: :attr:`uses_source`).

        Once it returns False it must stay False for the rest of training: the Trainer then
        drops its source data stream (a source-free phase never touches source data; a later
        True is a ``RuntimeError``), and every later :class:`Batch` has ``source=None``.
        """
        return self.uses_source

    def needs_target_outputs(self, progress: Progress) -> bool:
        """Whether the Trainer should pass the model's outputs on the whole target set to
        :meth:`on_target_outputs` before this step (default: never). Costs one forward pass over
        the target set each time it returns True."""
        return False

    def on_target_outputs(self, model: AdaptModel, outputs: ModelOutput, progress: Progress) -> None:
        """Receive ``outputs`` (features ``(M, F)``, logits ``(M, C)``, row ``i`` for target row ``i``)
        of the model on all ``M`` unlabelled target rows, computed in eval mode without gradient
        (e.g. SHOT's pseudo-labels of every target sample). Called before :meth:`on_step_start`
        when :meth:`needs_target_outputs` is True."""

    def phases(self, model: AdaptModel, progress: Progress) -> Sequence[Phase]:
        """The phases of the step at ``progress``, run in order, each with its own backward and
        optimizer step (default: the one phase :meth:`loss_terms`, which logs its terms unprefixed).

        A multi-phase method (MCD) returns several :class:`Phase` objects with distinct names,
        each naming the modules it does not train. The batch and the learning rate are the same
        for every phase of a step; the step counter advances once per step.
        """
        return (Phase("", self.loss_terms),)

    @abc.abstractmethod
    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        """Return the weighted loss terms of ``batch``. Must not call backward or step optimizers."""

    # composition: DANN() + 0.5 * MCC() ----------------------------------------------------
    #: The class that ``+`` and ``*`` build (:class:`adaptlib.methods.Composed`, which sets it when
    #: imported; kept as an attribute so that this module does not import that one).
    _composer: ClassVar[Optional[Callable[..., "Method"]]] = None

    def __add__(self, other: Any) -> "Method":
        if not isinstance(other, Method) or Method._composer is None:
            return NotImplemented
        return Method._composer([self, other])

    def __mul__(self, weight: Any) -> "Method":
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or Method._composer is None:
            return NotImplemented
        return Method._composer([(self, float(weight))])

    __rmul__ = __mul__

    def hparams(self) -> Dict[str, Any]:
        """The method's hyper-parameters as a JSON-serialisable dict (for records and tables)."""
        return {}

    # helpers shared by the methods -------------------------------------------------------
    def set_alignment(self, alignment: str) -> None:
        """Set :attr:`alignment` to ``"local"`` or ``"global"`` (ValueError otherwise)."""
        self.alignment = check_choice(alignment, "alignment", ("local", "global"))

    def gather(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """The tensors the alignment loss sees: each one's rows from every process, or the tensors themselves.

        With ``alignment == "global"`` in a multi-process run, each ``(n, ...)`` tensor becomes
        the ``(W n, ...)`` concatenation over the ``W`` processes, in rank order, through
        :func:`adaptlib.distributed.all_gather_with_grad` (gradients reach each process's own
        rows, scaled so that the Trainer's gradient averaging yields the global-batch
        gradient). Otherwise (``"local"``, or a single process) it returns them unchanged.
        Always returns a tuple: ``fs, ft = self.gather(fs, ft)``. Every process must call it.
        """
        if self.alignment == "local" or not distributed.is_distributed():
            return tensors
        return tuple(distributed.all_gather_with_grad(t) for t in tensors)

    @staticmethod
    def forward_source_target(model: AdaptModel, batch: Batch) -> tuple[ModelOutput, ModelOutput]:
        """One forward pass over source and target inputs stacked, split back into two outputs."""
        if batch.target is None:
            raise ValueError("this method needs an unlabelled target batch: pass target data to Trainer.fit")
        n = batch.source.x.shape[0]
        out = model(torch.cat([batch.source.x, batch.target.x], dim=0))
        src = ModelOutput(out.features[:n], out.logits[:n])
        tgt = ModelOutput(out.features[n:], out.logits[n:])
        return src, tgt

    def classification(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of ``(N, C)`` logits against ``(N,)`` class indices, averaged over the batch.

        With :attr:`label_smoothing` ``eps > 0`` (set by the Trainer from its own
        ``label_smoothing``) the targets are ``(1 - eps) onehot + eps / C``.
        """
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

