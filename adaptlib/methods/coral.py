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

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    **Paper** (Sun & Saenko, ECCV Workshops 2016, Sec. 3). For :math:`d`-dimensional activations
    :math:`D_S` (:math:`n_S` rows) and :math:`D_T` (:math:`n_T` rows) of the adapted layer (fc8 of
    AlexNet):

    .. math::
        \begin{aligned}
        \ell_{\mathrm{CORAL}} &= \frac{1}{4 d^2} \lVert C_S - C_T \rVert_F^2, \\
        C_S &= \frac{1}{n_S - 1} \Big( D_S^\top D_S
        - \frac{1}{n_S} (\mathbf 1^\top D_S)^\top (\mathbf 1^\top D_S) \Big),
        \end{aligned}

    :math:`C_T` likewise, and the network minimises

    .. math::
        \ell = \ell_{\mathrm{CLASS}} + \sum_{i=1}^{t} \lambda_i\, \ell_{\mathrm{CORAL}}

    over its :math:`t` CORAL layers.

    **In adaptlib.** One layer (``layer``: the bottleneck ``"features"`` by default, or the
    ``"logits"``, the paper's choice); ``classification`` is the mean source cross-entropy and

    .. math::
        \texttt{coral} = \lambda\, \frac{1}{4 d^2} \big\lVert \hat C_s - \hat C_t \big\rVert_F^2,

    the loss term ``coral``, :math:`\lambda` = ``trade_off``, with :math:`\hat C_s`, :math:`\hat
    C_t` the unbiased (:math:`1/(N-1)`, :math:`1/(M-1)`) covariances of the source and target
    batches (:func:`adaptlib.losses.coral`). Estimator: the plug-in value on the batch, as in the
    paper; it is biased upward by the sampling variance of the two covariances (two batches of the
    same distribution give a positive value).
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
