"""DAN: deep adaptation by multi-kernel MMD on the bottleneck features."""
from __future__ import annotations

from typing import Any, Dict, Sequence

import torch

from .._checks import check_choice, check_non_negative
from ..losses import mmd
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput, dann_warmup, mean_cross_distance
from .search_space import HParam, LogUniform, ScaledGrid


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
        normalize: divide each layer's activations by the differentiable root mean squared
            source-target distance before the MMD. The bandwidth heuristic is detached (as
            in the reference implementations), so without this the MMD can be lowered by
            shrinking all activations together; on SURF that collapsed some runs.
        warmup: ramp the weight as ``trade_off * (2 / (1 + exp(-10 p)) - 1)``, DANN's schedule,
            so that the MMD does not act on the random features of the first steps.
        alignment: ``"local"`` (default) or ``"global"``: in multi-process training, compute the
            MMD on each process's batch or on the batch gathered from all processes
            (``docs/distributed.md``). No effect in a single process.
    """

    name = "dan"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        # the whole bandwidth grid moved by one base scale in [1/4, 4]
        "multipliers": HParam((0.25, 0.5, 1.0, 2.0, 4.0), ScaledGrid((0.25, 0.5, 1.0, 2.0, 4.0), 0.25, 4.0)),
    }

    def __init__(
        self,
        trade_off: float = 1.0,
        multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
        heuristic: str = "median",
        estimator: str = "unbiased",
        layers: Sequence[str] = ("features",),
        normalize: bool = True,
        warmup: bool = True,
        alignment: str = "local",
    ) -> None:
        super().__init__()
        self.set_alignment(alignment)
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.multipliers = tuple(float(m) for m in multipliers)
        self.heuristic = heuristic
        self.estimator = estimator
        self.layers = tuple(check_choice(layer, "layers", ("features", "logits")) for layer in layers)
        self.normalize = bool(normalize)
        self.warmup = bool(warmup)
        if not self.layers:
            raise ValueError("layers must name at least one of 'features', 'logits'")

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        pairs = [self.gather(getattr(src, layer), getattr(tgt, layer)) for layer in self.layers]
        discrepancy = sum(self._layer_mmd(zs, zt) for zs, zt in pairs)
        weight = self.trade_off * (dann_warmup(progress.fraction) if self.warmup else 1.0)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "mmd": weight * discrepancy,
        }, {"mmd_weight": torch.tensor(weight)})

    def _layer_mmd(self, zs, zt):
        if self.normalize:
            scale = mean_cross_distance(zs, zt).sqrt()
            zs, zt = zs / scale, zt / scale
        return mmd(zs, zt, multipliers=self.multipliers, heuristic=self.heuristic, estimator=self.estimator)

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "multipliers": list(self.multipliers),
                "heuristic": self.heuristic, "estimator": self.estimator, "layers": list(self.layers),
                "normalize": self.normalize, "warmup": self.warmup, "alignment": self.alignment}
