"""MCD: two classifiers on one feature generator, trained in three phases per step."""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Sequence

import torch
from torch import nn

from .._checks import check_non_negative
from ..losses import classifier_discrepancy
from ..models import AdaptModel
from .base import Batch, Method, Phase, Progress, StepOutput
from .search_space import Choice, HParam, LogUniform


class MCD(Method):
    """Maximum Classifier Discrepancy (Saito et al., "Maximum Classifier Discrepancy for Unsupervised
    Domain Adaptation", CVPR 2018).

    Generator ``G`` = the model's backbone and bottleneck; classifiers ``F1`` = the model's head
    and ``F2`` = the method's own second head (same hypothesis class: one linear layer, its own
    initialisation). ``d`` = :func:`adaptlib.losses.classifier_discrepancy`, the mean absolute
    difference of the two softmax outputs (the paper's L1, Eq. 1).

    Algorithm (per step, one source and one target batch; each phase is one backward and one
    optimizer step of the Trainer, :meth:`phases`):

    * **A** (train ``G``, ``F1``, ``F2``): ``classification = CE(F1(G(x_s)), y_s)``,
      ``classification_2 = CE(F2(G(x_s)), y_s)``;
    * **B** (``G`` frozen; train ``F1``, ``F2``): the same two source cross-entropies and
      ``discrepancy = -trade_off * d(F1(G(x_t)), F2(G(x_t)))``: the classifiers stay correct on
      the source while they disagree as much as possible on the target;
    * **C1 .. Cn** (``F1``, ``F2`` frozen; train ``G``), ``n = num_generator_steps`` times:
      ``discrepancy = trade_off * d(F1(G(x_t)), F2(G(x_t)))``: the features move the target
      samples where the classifiers agree, i.e. inside the source support.

    Terms are logged with their phase (``"A/classification"``, ``"B/discrepancy"``,
    ``"C1/discrepancy"``...). A frozen part runs in eval mode during its phase (no dropout, no
    batch-norm update: the Trainer's ``frozen`` rule), so ``G`` is bit-identical across B and
    both classifiers across every C; the authors' code keeps ``G`` in train mode in step B (its
    parameters are not stepped either). One Trainer step costs ``2 + n`` backward passes.

    Predictions: the model's own head ``F1`` (what :meth:`Trainer.predict`, evaluation and the
    validators use). The paper reports each classifier and their ensemble; after step C they
    agree on the target by construction.

    Paper's numbers: none placed beside adaptlib's (``paper_results`` is empty). The paper
    reports digits with a CNN on raw images and VisDA/GTA→Cityscapes with ResNet/VGG, none of
    adaptlib's feature benchmarks.

    Args:
        trade_off: weight of the discrepancy in phases B and C (1 in the paper).
        num_generator_steps: ``n``, generator updates per step (the paper studies 1-4; 4 in
            its digit experiments and the authors' code default).
    """

    name = "mcd"
    composable = False  # three optimizer steps per training step: not one sum of terms
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "num_generator_steps": HParam(4, Choice((1, 2, 3, 4))),
    }

    def __init__(self, trade_off: float = 1.0, num_generator_steps: int = 4) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")
        if isinstance(num_generator_steps, bool) or not isinstance(num_generator_steps, int) \
                or num_generator_steps < 1:
            raise ValueError(f"num_generator_steps must be a positive integer, got {num_generator_steps!r}")
        self.num_generator_steps = num_generator_steps
        self.classifier2: nn.Linear | None = None

    def setup(self, model: AdaptModel) -> None:
        self.classifier2 = nn.Linear(model.feature_dim, model.num_classes)

    def phases(self, model: AdaptModel, progress: Progress) -> Sequence[Phase]:
        """A (train everything), B (generator frozen), C1..Cn (both classifiers frozen)."""
        if self.classifier2 is None:
            raise RuntimeError("MCD.setup(model) must be called before training (Trainer does this)")
        generator = (model.backbone, model.bottleneck)
        classifiers = (model.head, self.classifier2)
        return (Phase("A", partial(self.loss_terms, phase="A")),
                Phase("B", partial(self.loss_terms, phase="B"), frozen=generator),
                *(Phase(f"C{k}", partial(self.loss_terms, phase="C"), frozen=classifiers)
                  for k in range(1, self.num_generator_steps + 1)))

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress, phase: str = "A") -> StepOutput:
        """The loss terms of ``phase`` (``"A"``, ``"B"`` or ``"C"``) of the step; see the class docstring."""
        if self.classifier2 is None:
            raise RuntimeError("MCD.setup(model) must be called before training (Trainer does this)")
        if phase == "A":
            out = model(batch.source.x)
            return StepOutput({
                "classification": self.classification(out.logits, batch.source.y),
                "classification_2": self.classification(self.classifier2(out.features), batch.source.y),
            })
        if batch.target is None:
            raise ValueError("MCD needs an unlabelled target batch: pass target data to Trainer.fit")
        if phase == "B":
            n = batch.source.x.shape[0]
            with torch.no_grad():  # the generator is frozen in this phase
                features = model(torch.cat([batch.source.x, batch.target.x])).features
            z1, z2 = model.head(features), self.classifier2(features)
            d = classifier_discrepancy(z1[n:], z2[n:])
            return StepOutput({
                "classification": self.classification(z1[:n], batch.source.y),
                "classification_2": self.classification(z2[:n], batch.source.y),
                "discrepancy": -self.trade_off * d,
            }, {"discrepancy_value": d.detach()})
        if phase == "C":
            out = model(batch.target.x)
            return StepOutput({"discrepancy": self.trade_off * classifier_discrepancy(
                out.logits, self.classifier2(out.features))})
        raise ValueError(f"phase must be 'A', 'B' or 'C', got {phase!r}")

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "num_generator_steps": self.num_generator_steps}
