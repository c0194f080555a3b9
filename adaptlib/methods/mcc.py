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

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    **Paper** (Jin et al., ECCV 2020, Eqs. 1-6). For a batch of :math:`B` target logits :math:`Z`
    and :math:`|\mathcal C|` classes, with temperature :math:`T`:

    .. math::
        \begin{aligned}
        \hat Y_{ij} &= \frac{\exp(Z_{ij} / T)}{\sum_{j'} \exp(Z_{ij'} / T)}, \qquad
        H_i = -\sum_{j} \hat Y_{ij} \log \hat Y_{ij}, \\[4pt]
        W_{ii} &= \frac{B\,(1 + e^{-H_i})}{\sum_{i'=1}^{B} (1 + e^{-H_{i'}})}, \qquad
        \mathbf C = \hat Y^\top W \hat Y, \\[4pt]
        \tilde{\mathbf C}_{jj'} &= \frac{\mathbf C_{jj'}}{\sum_{j''} \mathbf C_{j''j'}}, \qquad
        L_{\mathrm{MCC}}(\hat Y) = \frac{1}{|\mathcal C|} \sum_{j} \sum_{j' \ne j}
        \tilde{\mathbf C}_{jj'},
        \end{aligned}

    added to the source classification risk:

    .. math::
        \min_F\ \mathbb E_{(x_s, y_s)} L_{\mathrm{CE}}\big(F(x_s), y_s\big)
        + \lambda\, L_{\mathrm{MCC}}(\hat Y_t).

    **In adaptlib.** ``classification`` is the mean source cross-entropy and

    .. math::
        \texttt{mcc} = \lambda\, L_{\mathrm{MCC}}\big(h(f^t_1), \dots, h(f^t_M)\big),

    (the loss term ``mcc``), :math:`\lambda` = ``trade_off``, :math:`T` = ``temperature``, computed
    on the target mini-batch itself (:math:`B = M`): the loss is defined on a batch, so the batch is
    the estimator (:func:`adaptlib.losses.minimum_class_confusion`). The weights :math:`W` are
    detached, as in the authors' code (they decide how much each sample counts; gradients flow
    through :math:`\hat Y`). Since :math:`\mathbf C` is symmetric, normalising rows (the authors'
    code) or columns gives the same value, :math:`1 - \mathrm{tr}(\tilde{\mathbf C}) / |\mathcal
    C|`.
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
