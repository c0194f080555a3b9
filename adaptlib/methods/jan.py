"""JAN: joint MMD of the bottleneck features and the class predictions."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch.nn.functional as F

from .._checks import check_non_negative
from ..losses import jmmd
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput, dann_warmup, mean_cross_distance
from .search_space import HParam, LogUniform, ScaledGrid


class JAN(Method):
    """Joint Adaptation Network (Long et al., ICML 2017).

    Algorithm (per step, progress ``p``):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z_s``, ``z_t`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. the two adapted layers ``l = 1, 2``: the bottleneck features ``f`` and the predictions
       ``softmax(z)`` (the paper's fc7 and fc8/softmax);
    4. ``jmmd = trade_off * w(p) * JMMD^2`` with the product kernel
       ``k_1(f, f') k_2(softmax(z), softmax(z'))`` (:func:`adaptlib.losses.jmmd`):
       ``k_1`` a family of Gaussians at ``multipliers x`` the median distance, ``k_2`` one
       Gaussian at the median distance, as in JAN; ``w(p) = 2/(1+exp(-10p)) - 1`` is the
       paper's progressive weight (DANN's schedule).

    As in this library's DAN, the features are divided by the differentiable root mean
    squared source-target distance first (``normalize``): otherwise the detached median
    bandwidth lets the MMD fall by shrinking all features together.

    Args:
        trade_off: final weight of the JMMD term (the paper's lambda, 1.0).
        multipliers: bandwidth multipliers of the feature kernel family.
        estimator: ``"biased"``, ``"unbiased"`` (default, as this library's DAN) or
            ``"linear"`` (the paper's linear-time estimate).
        normalize: scale-normalise the features (not the probabilities) before the JMMD.
        warmup: ramp the weight with ``w(p)``.
        alignment: ``"local"`` (default) or ``"global"`` (``docs/distributed.md``).
    """

    name = "jan"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "multipliers": HParam((0.25, 0.5, 1.0, 2.0, 4.0), ScaledGrid((0.25, 0.5, 1.0, 2.0, 4.0), 0.25, 4.0)),
    }

    def __init__(self, trade_off: float = 1.0, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 estimator: str = "unbiased", normalize: bool = True, warmup: bool = True,
                 alignment: str = "local") -> None:
        super().__init__()
        self.set_alignment(alignment)
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.multipliers = tuple(float(m) for m in multipliers)
        self.estimator = estimator
        self.normalize = bool(normalize)
        self.warmup = bool(warmup)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        fs, ft, zs, zt = self.gather(src.features, tgt.features, src.logits, tgt.logits)
        if self.normalize:
            scale = mean_cross_distance(fs, ft).sqrt()
            fs, ft = fs / scale, ft / scale
        discrepancy = jmmd([fs, F.softmax(zs, dim=1)], [ft, F.softmax(zt, dim=1)],
                           multipliers=[self.multipliers, (1.0,)], estimator=self.estimator)
        weight = self.trade_off * (dann_warmup(progress.fraction) if self.warmup else 1.0)
        return StepOutput({"classification": self.classification(src.logits, batch.source.y),
                           "jmmd": weight * discrepancy}, {"jmmd_weight": weight})

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "multipliers": list(self.multipliers), "estimator": self.estimator,
                "normalize": self.normalize, "warmup": self.warmup, "alignment": self.alignment}
