"""SHOT: source-free adaptation of the feature extractor under a frozen source classifier."""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_non_negative
from ..losses import cluster_pseudo_labels, information_maximization
from ..models import AdaptModel, ModelOutput
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, LogUniform, Uniform


class SHOT(Method):
    """Source Hypothesis Transfer (Liang et al., "Do We Really Need to Access the Source Data? Source
    Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020).

    Source-free: the target phase reads no source data at all. The model's head ``h`` is the
    source hypothesis, frozen; the feature extractor ``g`` (backbone and bottleneck) adapts.

    Algorithm (progress ``p``; ``s = source_fraction``):

    * **source phase** (``p < s``): ``classification = CE(h(g(x_s)), y_s)`` (the paper trains
      with label smoothing 0.1: the Trainer's ``label_smoothing``);
    * **target phase** (``p >= s``; the Trainer drops its source stream: every batch has
      ``source=None``; ``h`` frozen, in eval mode):

      1. every ``(T - T_s) / refreshes`` steps, on the whole target set (eval mode, no gradient;
         :meth:`on_target_outputs`): pseudo-labels ``y^_t`` from weighted centroids in feature
         space with the cosine distance, one k-means round
         (:func:`adaptlib.losses.cluster_pseudo_labels`, Eqs. 4-6);
      2. ``information = trade_off * (mean_i H(p_i) - H(mean_i p_i))`` with ``p = softmax(h(g(x_t)))``
         (:func:`adaptlib.losses.information_maximization`, Eqs. 2-3);
      3. ``pseudo_label = beta * CE(h(g(x_t)), y^_t)`` (beta = 0.3; beta = 0 is SHOT-IM).

    Two ways to use it: ``Trainer(model, "shot")`` (and ``adaptlib compare``) trains the source
    phase on the first ``source_fraction`` of the steps, then adapts; ``SHOT(source_fraction=0)``
    adapts a model already trained on the source (``uses_source`` is then False and
    ``Trainer.fit`` takes ``target`` only: ``fit(target=x_t)``). The shared learning-rate schedule
    runs over both phases.

    Differences from the paper: the network is adaptlib's shared MLP (the paper: ResNet-50 with
    a batch-norm bottleneck and a weight-normalised head); pseudo-labels are refreshed
    ``refreshes`` times in the target phase (the authors' code: 15 times over its iterations).
    Paper's numbers: none placed beside adaptlib's (``paper_results`` is empty): its benchmarks
    are digits from raw images, Office-31, Office-Home and VisDA with ResNets.

    Args:
        trade_off: weight of the information-maximisation term (1 in the paper).
        beta: weight of the pseudo-label cross-entropy (0.3 in the paper).
        source_fraction: share of the step budget spent on the source phase, in ``[0, 1)``;
            0 adapts a model trained elsewhere, without source data.
        refreshes: how many times the pseudo-labels are recomputed during the target phase
            (evenly spaced, the first at its first step), ``>= 1``.
        rounds: k-means rounds of the pseudo-labelling (1 in the paper).
    """

    name = "shot"
    composable = False  # two stages, the second without source data: not a sum of terms
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "beta": HParam(0.3, Uniform(0.0, 1.0)),
        "source_fraction": HParam(0.5, Uniform(0.3, 0.8)),
    }

    def __init__(self, trade_off: float = 1.0, beta: float = 0.3, source_fraction: float = 0.5,
                 refreshes: int = 15, rounds: int = 1) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.beta = check_non_negative(beta, "beta")
        if isinstance(source_fraction, bool) or not isinstance(source_fraction, (int, float)) \
                or not 0.0 <= float(source_fraction) < 1.0:
            raise ValueError(f"source_fraction must be in [0, 1), got {source_fraction!r}")
        for name, value, low in (("refreshes", refreshes, 1), ("rounds", rounds, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.source_fraction = float(source_fraction)
        self.refreshes = refreshes
        self.rounds = rounds
        self.uses_source = self.source_fraction > 0
        #: ``(M,)`` int64 pseudo-label of every target row (empty until the first refresh); a buffer,
        #: so a checkpoint keeps it.
        self.register_buffer("pseudo_labels", torch.empty(0, dtype=torch.int64))

    def setup(self, model: AdaptModel) -> None:
        self.pseudo_labels = torch.empty(0, dtype=torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        saved = state_dict.get(prefix + "pseudo_labels")  # empty before the target phase, (M,) after
        if isinstance(saved, torch.Tensor):
            self.pseudo_labels = torch.empty(saved.shape, dtype=saved.dtype, device=self.pseudo_labels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def in_target_phase(self, progress: Progress) -> bool:
        """Whether ``progress`` is in the source-free target phase (``fraction >= source_fraction``)."""
        return progress.fraction >= self.source_fraction

    def _first_target_step(self, total: int) -> int:
        step = math.ceil(self.source_fraction * total)
        while step > 0 and self.in_target_phase(Progress(step - 1, total)):
            step -= 1
        while step < total and not self.in_target_phase(Progress(step, total)):
            step += 1
        return step

    def reads_source(self, progress: Progress) -> bool:
        """True in the source phase only; never again once the target phase starts."""
        return self.uses_source and not self.in_target_phase(progress)

    def frozen_modules(self, model: AdaptModel, progress: Progress) -> Tuple[nn.Module, ...]:
        """The source hypothesis ``(model.head,)`` in the target phase, else ``()``."""
        return (model.head,) if self.in_target_phase(progress) else ()

    def needs_target_outputs(self, progress: Progress) -> bool:
        """At the first target step and every ``(T - T_s) // refreshes`` steps after it (with ``beta > 0``)."""
        if self.beta == 0 or not self.in_target_phase(progress):
            return False
        start = self._first_target_step(progress.total_steps)
        interval = max(1, (progress.total_steps - start) // self.refreshes)
        return self.pseudo_labels.numel() == 0 or (progress.step - start) % interval == 0

    def on_target_outputs(self, model: AdaptModel, outputs: ModelOutput, progress: Progress) -> None:
        """Recompute the pseudo-label of every target row from the model's outputs on the target set."""
        self.pseudo_labels = cluster_pseudo_labels(outputs.features, outputs.logits, self.rounds).to(
            self.pseudo_labels.device)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        if not self.in_target_phase(progress):
            if batch.source is None:
                raise ValueError("SHOT's source phase needs labelled source data: pass source to Trainer.fit, "
                                 "or SHOT(source_fraction=0) to adapt a model trained on the source elsewhere")
            logits = model(batch.source.x).logits
            return StepOutput({"classification": self.classification(logits, batch.source.y)})
        if batch.target is None:
            raise ValueError("SHOT's target phase needs an unlabelled target batch: pass target data to Trainer.fit")
        logits = model(batch.target.x).logits
        losses = {"information": self.trade_off * information_maximization(logits)}
        if self.beta > 0:
            if batch.target.index is None:
                raise ValueError("SHOT's pseudo-label term needs the target rows' indices (UnlabeledBatch.index, "
                                 "which the Trainer fills)")
            if self.pseudo_labels.numel() == 0:
                raise RuntimeError("SHOT has no pseudo-labels yet: on_target_outputs was not called (the Trainer "
                                   "calls it when needs_target_outputs is True)")
            labels = self.pseudo_labels[batch.target.index.to(self.pseudo_labels.device)]
            losses["pseudo_label"] = self.beta * F.cross_entropy(logits, labels)
        return StepOutput(losses)

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "beta": self.beta, "source_fraction": self.source_fraction,
                "refreshes": self.refreshes, "rounds": self.rounds}
