"""MCC: minimum class confusion on the target predictions."""
from __future__ import annotations

from typing import Any, Dict

from .._checks import check_non_negative, check_positive
from ..losses import minimum_class_confusion
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, LogUniform


class MCC(Method):
    """Minimum Class Confusion (Jin et al., ECCV 2020).

    Algorithm (per step):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z_s = h(f_s)``, ``z_t = h(f_t)`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``Y_t = softmax(z_t / T)`` (temperature rescaling); entropy weights
       ``W_ii = N (1 + exp(-H(Y_t,i))) / sum_i' (1 + exp(-H(Y_t,i')))``;
    4. class confusion ``C = Y_t^T W Y_t``, category-normalised column-wise;
    5. ``mcc = trade_off * (1/C) sum_{j != j'} C~_jj'``
       (:func:`adaptlib.losses.minimum_class_confusion`).

    MCC needs no domain discriminator and no source data in its term; it is often added to
    other methods (DANN + MCC, CDAN + MCC in the paper).

    Args:
        trade_off: weight of the MCC term (the paper's lambda, 1.0).
        temperature: the rescaling temperature ``T`` (2.5 in the paper).
    """

    name = "mcc"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "temperature": HParam(2.5, LogUniform(1.0, 5.0)),
    }

    def __init__(self, trade_off: float = 1.0, temperature: float = 2.5) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.temperature = check_positive(temperature, "temperature")

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "mcc": self.trade_off * minimum_class_confusion(tgt.logits, self.temperature),
        })

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "temperature": self.temperature}
