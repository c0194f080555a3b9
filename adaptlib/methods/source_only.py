"""Source-only baseline: empirical risk minimisation on the labelled source domain."""
from __future__ import annotations

from typing import Any, Dict

from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput


class SourceOnly(Method):
    """Train on labelled source data only; the lower bound every DA method should beat.

    Loss: ``classification = CE(h(g(x_s)), y_s)``. Target data is never drawn.
    """

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    No adaptation paper: empirical risk minimisation on the labelled source sample, the baseline
    that every other method adds terms to:

    .. math::
        \begin{aligned}
        &\min_{g,\,h}\ \frac1n \sum_{i=1}^{n} \mathrm{CE}\big(h(g(x^s_i)),\, y^s_i\big), \\
        &\mathrm{CE}(z, y) = -\log \mathrm{softmax}(z)_y.
        \end{aligned}

    **In adaptlib.** One loss term, ``classification``, on a source batch of :math:`N` rows:

    .. math::
        \texttt{classification} = \frac1N \sum_{i=1}^{N} \mathrm{CE}\big(h(g(x^s_i)),\, y^s_i\big),

    the mini-batch mean, an unbiased estimate of the source risk. With the Trainer's
    ``label_smoothing`` :math:`\epsilon > 0` the one-hot target is replaced by :math:`(1 -
    \epsilon)\,\mathrm{onehot}(y) + \epsilon / C`. No target data is drawn.
    """

    name = "source-only"
    uses_target = False

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        logits = model(batch.source.x).logits
        return StepOutput({"classification": self.classification(logits, batch.source.y)})

    def hparams(self) -> Dict[str, Any]:
        return {}
