"""Entropy minimisation on the target predictions."""
from __future__ import annotations

from typing import Any, Dict

from .._checks import check_non_negative
from ..losses import entropy
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, LogUniform


class EntropyMinimization(Method):
    """Entropy minimisation (Grandvalet & Bengio, NeurIPS 2004/2005), the basic self-training term.

    Algorithm (per step):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z_s``, ``z_t`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``entropy = trade_off * (1/B) sum_i H(softmax(z_t,i))``
       (:func:`adaptlib.losses.entropy`): push target samples away from the decision boundaries
       (the cluster assumption).

    Alone it can confirm the source classifier's mistakes on the target; it is mostly a
    baseline and a term to combine with alignment (RTN, AFN, SHOT use it).

    Args:
        trade_off: weight of the entropy term (0.1, a common choice in the DA literature; the
            original paper tunes it on validation data).
    """

    name = "entropy-min"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {"trade_off": HParam(0.1, LogUniform(0.01, 1.0))}

    def __init__(self, trade_off: float = 0.1) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "entropy": self.trade_off * entropy(tgt.logits),
        })

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off}
