"""DAN: deep adaptation by multi-kernel MMD on the bottleneck features."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from .._checks import check_choice
from ..losses import mmd
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput


class DAN(Method):
    """Deep Adaptation Network (Long et al., ICML 2015).

    Loss: ``CE(h(f_s), y_s) + trade_off * sum_l MMD^2_k(z^l_s, z^l_t)`` over the adapted
    layers ``l`` (the paper adapts several task-specific layers, fc6-fc8; here the bottleneck
    ``"features"`` and optionally the classifier ``"logits"``), with ``k`` the multi-kernel
    Gaussian of :func:`adaptlib.losses.mmd` (bandwidths ``multipliers x`` the ``heuristic``
    pairwise distance of the batch, kernels averaged).

    Args:
        trade_off: weight of the MMD term.
        multipliers: bandwidth multipliers of the kernel family.
        heuristic: ``"median"`` or ``"mean"`` pairwise distance as the base bandwidth.
        estimator: ``"biased"``, ``"unbiased"`` or ``"linear"`` (the paper's linear-time one).
        layers: which of ``"features"`` and ``"logits"`` to adapt.
    """

    name = "dan"

    def __init__(
        self,
        trade_off: float = 5.0,
        multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        heuristic: str = "median",
        estimator: str = "biased",
        layers: Sequence[str] = ("features", "logits"),
    ) -> None:
        super().__init__()
        self.trade_off = float(trade_off)
        self.multipliers = tuple(float(m) for m in multipliers)
        self.heuristic = heuristic
        self.estimator = estimator
        self.layers = tuple(check_choice(layer, "layers", ("features", "logits")) for layer in layers)
        if not self.layers:
            raise ValueError("layers must name at least one of 'features', 'logits'")

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        discrepancy = sum(
            mmd(getattr(src, layer), getattr(tgt, layer), multipliers=self.multipliers,
                heuristic=self.heuristic, estimator=self.estimator)
            for layer in self.layers)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "mmd": self.trade_off * discrepancy,
        })

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "multipliers": list(self.multipliers),
                "heuristic": self.heuristic, "estimator": self.estimator, "layers": list(self.layers)}
