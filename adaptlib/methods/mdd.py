"""MDD: margin disparity discrepancy with an adversarial classifier head."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from .._checks import check_non_negative, check_positive
from ..losses import gradient_reversal, margin_disparity_discrepancy
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput, dann_warmup
from .search_space import Choice, HParam, LogUniform


class MDD(Method):
    """Margin Disparity Discrepancy (Zhang et al., "Bridging Theory and Algorithm for Domain
    Adaptation", ICML 2019).

    Algorithm (per step, progress ``p``):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z = h(f)`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``lambda_p = max_reversal * (2 / (1 + exp(-gamma p)) - 1)``;
       adversarial logits ``z' = h'(R_lambda(f))`` with ``h'`` the method's own head (same
       hypothesis class as ``h``: one linear layer) behind a gradient reversal;
    4. with ``y^ = argmax z`` (no gradient), the disparity
       ``D = mean_t log(1 - softmax(z'_t)[y^_t]) - margin * mean_s CE(z'_s, y^_s)``
       (:func:`adaptlib.losses.margin_disparity_discrepancy`);
    5. ``disparity = -trade_off * D``: ``h'`` minimises it (maximises ``D``: agree with ``h`` on
       source, disagree on target); the features, through the reversal, minimise ``D``.

    ``h`` is trained by the source loss only. The small final reversal (0.1) follows the
    authors' code and TLlib, whose adversarial gradient layer rises to 0.1.

    Args:
        trade_off: weight of the disparity term (the paper's eta, 1.0).
        margin: the margin factor ``gamma`` of the paper (4, its Office-31 setting and TLlib's).
        max_reversal: final gradient-reversal coefficient into the features.
        gamma: steepness of the reversal warm-up (10, DANN's).
    """

    name = "mdd"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "margin": HParam(4.0, Choice((1.0, 2.0, 3.0, 4.0, 6.0))),
        "max_reversal": HParam(0.1, LogUniform(0.03, 1.0)),
    }

    def __init__(self, trade_off: float = 1.0, margin: float = 4.0, max_reversal: float = 0.1,
                 gamma: float = 10.0) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.margin = check_positive(margin, "margin")
        self.max_reversal = check_positive(max_reversal, "max_reversal")
        self.gamma = float(gamma)
        self.adversarial_head: nn.Linear | None = None

    def setup(self, model: AdaptModel) -> None:
        self.adversarial_head = nn.Linear(model.feature_dim, model.num_classes)

    def coefficient(self, progress: Progress) -> float:
        """The gradient-reversal coefficient ``lambda_p`` used at ``progress``."""
        return self.max_reversal * dann_warmup(progress.fraction, self.gamma)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        if self.adversarial_head is None:
            raise RuntimeError("MDD.setup(model) must be called before training (Trainer does this)")
        src, tgt = self.forward_source_target(model, batch)
        n = src.features.shape[0]
        lam = self.coefficient(progress)
        adv = self.adversarial_head(gradient_reversal(torch.cat([src.features, tgt.features]), lam))
        d = margin_disparity_discrepancy(src.logits, adv[:n], tgt.logits, adv[n:], margin=self.margin)
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y), "disparity": -self.trade_off * d},
            {"mdd": d.detach(), "grl_coefficient": lam},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "margin": self.margin, "max_reversal": self.max_reversal,
                "gamma": self.gamma}
