"""BNM: batch nuclear-norm maximisation on the target predictions."""
from __future__ import annotations

from typing import Any, Dict

from .._checks import check_non_negative
from ..losses import batch_nuclear_norm
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, LogUniform


class BNM(Method):
    """Batch Nuclear-norm Maximization (Cui et al., CVPR 2020).

    Algorithm (per step):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z_s``, ``z_t`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``A = softmax(z_t)`` (``B x C``);
    4. ``bnm = -trade_off * ||A||_* / B`` (:func:`adaptlib.losses.batch_nuclear_norm`):
       maximising the nuclear norm makes target predictions confident (discriminability)
       and spread over many classes (diversity).

    The authors' code divides by ``min(B, C)`` instead of ``B``; with this library's batch
    of 32 and 10 classes its effective weight is 3.2 times this one's at equal ``trade_off``.

    Args:
        trade_off: weight of the BNM term (the paper's lambda, 1.0).
    """

    name = "bnm"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {"trade_off": HParam(1.0, LogUniform(0.1, 10.0))}

    def __init__(self, trade_off: float = 1.0) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "bnm": self.trade_off * batch_nuclear_norm(tgt.logits),
        })

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off}
