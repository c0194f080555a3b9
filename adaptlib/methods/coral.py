"""Deep CORAL: align second-order statistics of source and target activations."""
from __future__ import annotations

from typing import Any, Dict

from .._checks import check_choice, check_non_negative
from ..losses import coral
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput
from .search_space import HParam, LogUniform


class DeepCORAL(Method):
    """Deep CORAL (Sun & Saenko, ECCV Workshops 2016).

    Loss: ``CE(h(f_s), y_s) + trade_off * ||C_s - C_t||_F^2 / (4 d^2)`` where ``C`` are the
    covariances of the chosen layer's activations over the batch (:func:`adaptlib.losses.coral`).

    Args:
        trade_off: weight of the CORAL term (the paper's lambda).
        layer: ``"features"`` (bottleneck, default) or ``"logits"`` (the paper applies it to
            the last layer, fc8, of AlexNet).
        alignment: ``"local"`` (default) or ``"global"``: in multi-process training, compute the
            covariances on each process's batch or on the batch gathered from all processes
            (``docs/distributed.md``). No effect in a single process.
    """

    name = "deep-coral"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
    }

    def __init__(self, trade_off: float = 1.0, layer: str = "features", alignment: str = "local") -> None:
        super().__init__()
        self.set_alignment(alignment)
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.layer = check_choice(layer, "layer", ("features", "logits"))

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        a, b = (src.features, tgt.features) if self.layer == "features" else (src.logits, tgt.logits)
        a, b = self.gather(a, b)
        return StepOutput({
            "classification": self.classification(src.logits, batch.source.y),
            "coral": self.trade_off * coral(a, b),
        })

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "layer": self.layer, "alignment": self.alignment}
