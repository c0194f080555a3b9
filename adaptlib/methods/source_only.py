"""Source-only baseline: empirical risk minimisation on the labelled source domain."""
from __future__ import annotations

from typing import Any, Dict

from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput


class SourceOnly(Method):
    """Train on labelled source data only; the lower bound every DA method should beat.

    Loss: ``classification = CE(h(g(x_s)), y_s)``. Target data is never drawn.
    """

    name = "source-only"
    uses_target = False

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        logits = model(batch.source.x).logits
        return StepOutput({"classification": self.classification(logits, batch.source.y)})

    def hparams(self) -> Dict[str, Any]:
        return {}
