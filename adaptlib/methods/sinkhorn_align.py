"""Entropic optimal-transport alignment of source and target features."""
from __future__ import annotations

from typing import Any, Dict

import torch

from .._checks import check_choice
from ..losses import sinkhorn, sinkhorn_divergence
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput


class SinkhornAlign(Method):
    """Align features by the (debiased) Sinkhorn divergence (Genevay et al., AISTATS 2018;
    Feydy et al., AISTATS 2019), as in OT-based deep DA (e.g. Courty et al.'s feature-level OT).

    Loss: ``CE(h(f_s), y_s) + trade_off * S_eps(f_s, f_t)`` with squared-Euclidean cost.
    ``epsilon`` is relative: the absolute blur is ``epsilon * mean_ij ||f_s_i - f_t_j||^2``
    of the batch (detached, floored), so one value works as the feature scale changes in
    training.

    Args:
        trade_off: weight of the OT term.
        epsilon: entropic regularisation relative to the batch's mean squared distance.
        debiased: use the Sinkhorn divergence (default) or the plain entropic OT value.
        max_iter, tol: Sinkhorn iteration budget and marginal tolerance per solve.
    """

    name = "sinkhorn"

    def __init__(self, trade_off: float = 1.0, epsilon: float = 0.1, debiased: bool = True,
                 max_iter: int = 100, tol: float = 1e-4) -> None:
        super().__init__()
        self.trade_off = float(trade_off)
        self.epsilon = float(epsilon)
        self.debiased = bool(debiased)
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def absolute_epsilon(self, fs: torch.Tensor, ft: torch.Tensor) -> float:
        """``epsilon`` times the batch's mean squared cross distance (by the moment identity)."""
        with torch.no_grad():
            mean_sq = (fs.pow(2).sum(1).mean() + ft.pow(2).sum(1).mean()
                       - 2 * (fs.mean(0) * ft.mean(0)).sum())
        return self.epsilon * max(float(mean_sq), 1e-6)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        eps = self.absolute_epsilon(src.features, tgt.features)
        if self.debiased:
            ot_term = sinkhorn_divergence(src.features, tgt.features, epsilon=eps, max_iter=self.max_iter, tol=self.tol)
        else:
            ot_term = sinkhorn(src.features, tgt.features, epsilon=eps, max_iter=self.max_iter, tol=self.tol).value
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y), "ot": self.trade_off * ot_term},
            {"epsilon": torch.tensor(eps)},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "epsilon": self.epsilon, "debiased": self.debiased,
                "max_iter": self.max_iter, "tol": self.tol}
