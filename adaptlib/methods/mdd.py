"""MDD: margin disparity discrepancy with an adversarial classifier head."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from .._checks import check_non_negative, check_positive
from ..losses import gradient_reversal, margin_disparity_discrepancy
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput, dann_warmup
from .search_space import Choice, HParam, LogUniform


class MDD(Method):
    """Margin Disparity Discrepancy (Zhang et al., "Bridging Theory and Algorithm for Domain
    Adaptation", ICML 2019).

    Algorithm (per step, progress ``p``):

    1. ``f_s, f_t = g(x_s), g(x_t)``; logits ``z = h(f)`` (one forward pass);
    2. ``classification = CE(z_s, y_s)``;
    3. ``lambda_p = max_reversal * (2 / (1 + exp(-gamma p)) - 1)``;
       adversarial logits ``z' = h'(R_lambda(f))`` with ``h'`` the method's own head (same
       hypothesis class as ``h``: one linear layer) behind a gradient reversal;
    4. with ``y^ = argmax z`` (no gradient), the disparity
       ``D = mean_t log(1 - softmax(z'_t)[y^_t]) - margin * mean_s CE(z'_s, y^_s)``
       (:func:`adaptlib.losses.margin_disparity_discrepancy`);
    5. ``disparity = -trade_off * D``: ``h'`` minimises it (maximises ``D``: agree with ``h`` on
       source, disagree on target); the features, through the reversal, minimise ``D``.

    ``h`` is trained by the source loss only. The small final reversal (0.1) follows the
    authors' code and TLlib, whose adversarial gradient layer rises to 0.1.

    Args:
        trade_off: weight of the disparity term (the paper's eta, 1.0).
        margin: the margin factor ``gamma`` of the paper (4, its Office-31 setting and TLlib's).
            ``adaptlib compare`` trains 3 on ``amazon-reviews``, chosen there by DEV
            (``adaptlib.compare.METHOD_DEFAULTS``, docs/methods.md): 4 collapses on its binary tasks.
        max_reversal: final gradient-reversal coefficient into the features.
        gamma: steepness of the reversal warm-up (10, DANN's).
    """

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    **Paper** (Zhang et al., ICML 2019, Sec. 5). Feature extractor :math:`\psi`, classifier
    :math:`f`, adversarial classifier :math:`f'`, margin factor :math:`\gamma`, :math:`\sigma` the
    softmax, :math:`h_f(x) = \arg\max_y f(x)_y`:

    .. math::
        \begin{aligned}
        &\min_{f, \psi}\ \mathcal E(\hat P) + \eta\, D_\gamma(\hat P, \hat Q), \qquad
        \max_{f'}\ D_\gamma(\hat P, \hat Q), \\
        &\mathcal E(\hat P) = \mathbb E_{(x^s, y^s) \sim \hat P}\, L\big(f(\psi(x^s)), y^s\big), \\
        &D_\gamma(\hat P, \hat Q) = \mathbb E_{x^t \sim \hat Q}\,
        L'\big(f'(\psi(x^t)), f(\psi(x^t))\big) \\
        &\qquad - \gamma\, \mathbb E_{x^s \sim \hat P}\, L\big(f'(\psi(x^s)), f(\psi(x^s))\big),
        \end{aligned}

    with :math:`L(f(\psi(x)), y) = -\log \sigma_y(f(\psi(x)))` and :math:`L'(f'(\psi(x)),
    f(\psi(x))) = \log\big(1 - \sigma_{h_f(\psi(x))}(f'(\psi(x)))\big)`.

    **In adaptlib.** :math:`\psi = g` (backbone and bottleneck), :math:`f = h` (the head), :math:`f'
    = h'` (the method's own linear head) behind a gradient reversal :math:`R_{\lambda_p}` with
    :math:`\lambda_p` DANN's warm-up to ``max_reversal``; features :math:`f^s_i = g(x^s_i)`,
    :math:`f^t_j = g(x^t_j)`, :math:`\hat y = \arg\max h(f)` (no gradient), :math:`\eta` =
    ``trade_off``, :math:`\gamma` = ``margin``:

    .. math::
        \begin{aligned}
        \hat D_\gamma ={}& \frac1M \sum_{j}
        \log\big(1 - \sigma(h'(R_{\lambda_p}(f^t_j)))_{\hat y^t_j}\big) \\
        &- \frac{\gamma}{N} \sum_{i} \mathrm{CE}\big(h'(R_{\lambda_p}(f^s_i)), \hat y^s_i\big), \\
        \texttt{disparity} ={}& -\eta\, \hat D_\gamma,
        \end{aligned}

    and ``classification`` the mean source cross-entropy of :math:`h`. The Trainer minimises
    ``classification`` + ``disparity``: :math:`h'` maximises :math:`\hat D_\gamma` (agrees with
    :math:`h` on the source batch, disagrees on the target batch); through the reversal the features
    descend :math:`\lambda_p \eta \hat D_\gamma`; :math:`h` is trained by the source loss only.
    Estimator: batch means of the two expectations; :math:`\log(1 - \sigma_y)` is computed exactly
    as :math:`\mathrm{logsumexp}_{c \ne y} z_c - \mathrm{logsumexp}_c z_c`. Difference: the
    features' adversarial gradient is scaled by :math:`\lambda_p \le` ``max_reversal`` = 0.1, as in
    the authors' code and TLlib, rather than by :math:`\eta` alone.
    """

    name = "mdd"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
        "margin": HParam(4.0, Choice((1.0, 2.0, 3.0, 4.0, 6.0))),
        "max_reversal": HParam(0.1, LogUniform(0.03, 1.0)),
    }

    def __init__(self, trade_off: float = 1.0, margin: float = 4.0, max_reversal: float = 0.1,
                 gamma: float = 10.0) -> None:
        super().__init__()
        self.trade_off = check_non_negative(trade_off, "trade_off")
        self.margin = check_positive(margin, "margin")
        self.max_reversal = check_positive(max_reversal, "max_reversal")
        self.gamma = float(gamma)
        self.adversarial_head: nn.Linear | None = None

    def setup(self, model: AdaptModel) -> None:
        self.adversarial_head = nn.Linear(model.feature_dim, model.num_classes)

    def coefficient(self, progress: Progress) -> float:
        """The gradient-reversal coefficient ``lambda_p`` used at ``progress``."""
        return self.max_reversal * dann_warmup(progress.fraction, self.gamma)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        if self.adversarial_head is None:
            raise RuntimeError("MDD.setup(model) must be called before training (Trainer does this)")
        src, tgt = self.forward_source_target(model, batch)
        n = src.features.shape[0]
        lam = self.coefficient(progress)
        adv = self.adversarial_head(gradient_reversal(torch.cat([src.features, tgt.features]), lam))
        d = margin_disparity_discrepancy(src.logits, adv[:n], tgt.logits, adv[n:], margin=self.margin)
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y), "disparity": -self.trade_off * d},
            {"mdd": d.detach(), "grl_coefficient": lam},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"trade_off": self.trade_off, "margin": self.margin, "max_reversal": self.max_reversal,
                "gamma": self.gamma}
