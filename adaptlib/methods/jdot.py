"""DeepJDOT: optimal transport of the joint (feature, label) distribution."""
from __future__ import annotations

from typing import Any, Dict

import torch

from .._checks import check_choice, check_non_negative
from ..losses import jdot
from ..losses._validate import no_autocast
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput, mean_cross_distance
from .search_space import HParam, LogUniform


class DeepJDOT(Method):
    """DeepJDOT (Damodaran et al., ECCV 2018).

    Per step: the cost ``C_ij = alpha ||f_s_i - f_t_j||^2 / s^2 + label_weight CE(y_s_i, h(f_t_j))``,
    the plan ``P`` = exact OT between uniform weights on the detached cost (or entropic OT),
    and the loss ``CE(h(f_s), y_s) + sum_ij P_ij C_ij`` (gradients with ``P`` held fixed, the
    paper's alternating scheme).

    ``s^2`` is the batch's mean squared (differentiable) source-target distance (with
    ``normalize=True``, the default; ``s = 1`` otherwise, the paper's form). It makes ``alpha``
    independent of the feature scale and removes the incentive to shrink every feature
    toward 0, which otherwise lowers the feature cost by collapsing the classifier's input.

    Args:
        alpha: weight of the feature distance (the paper's alpha).
        label_weight: weight of the label cost (the paper's lambda_t).
        solver: ``"emd"`` (exact, POT) or ``"sinkhorn"``.
        epsilon: entropic regularisation for ``solver="sinkhorn"``, in cost units.
        normalize: divide the feature distances by the batch's mean squared distance.
        alignment: ``"local"`` (default) or ``"global"``: in multi-process training, compute the
            transport plan and costs on each process's batch or on the batch gathered from all
            processes (``docs/distributed.md``). No effect in a single process.
    """

    #: The objective in the paper's notation and in adaptlib's: loss terms and the mini-batch
    #: estimator (rendered at the top of the method's docs page; see ``Method.objective``).
    objective = r"""
    **Paper** (Damodaran et al., ECCV 2018, Sec. 3). Embedding :math:`g`, classifier :math:`f`,
    couplings :math:`\gamma` with uniform marginals (the set :math:`\Delta`), :math:`L_s`,
    :math:`L_t` cross-entropies:

    .. math::
        \begin{aligned}
        \min_{\gamma \in \Delta, f, g}\ & \frac1{n_s} \sum_{i} L_s\big(y^s_i, f(g(x^s_i))\big) \\
        &+ \sum_{i, j} \gamma_{ij} \Big( \alpha \big\lVert g(x^s_i) - g(x^t_j) \big\rVert^2 \\
        &\qquad + \lambda_t\, L_t\big(y^s_i, f(g(x^t_j))\big) \Big),
        \end{aligned}

    optimised on mini-batches by alternating: :math:`\gamma` by exact optimal transport with
    :math:`g, f` fixed, then :math:`g, f` by SGD with :math:`\gamma` fixed.

    **In adaptlib.** With :math:`N` source and :math:`M` target rows, features :math:`f^s_i`,
    :math:`f^t_j`, :math:`\alpha` = ``alpha``, :math:`\lambda_t` = ``label_weight``:

    .. math::
        \begin{aligned}
        C_{ij} &= \alpha \frac{\lVert f^s_i - f^t_j \rVert^2}{s^2}
        + \lambda_t\, \mathrm{CE}\big(h(f^t_j), y^s_i\big), \\
        P &= \arg\min_{P \in \Pi(\mathbf 1_N / N,\, \mathbf 1_M / M)}
        \big\langle P, \mathrm{sg}(C) \big\rangle, \\
        s^2 &= \frac1{NM} \sum_{i, j} \lVert f^s_i - f^t_j \rVert^2,
        \end{aligned}

    :math:`\mathrm{sg}` stopping the gradient. The loss terms, with :math:`P` held fixed:

    .. math::
        \begin{aligned}
        \texttt{jdot\_feature} &= \alpha \sum_{i,j} P_{ij} \frac{\lVert f^s_i - f^t_j \rVert^2}{s^2}, \\
        \texttt{jdot\_label} &= \lambda_t \sum_{i,j} P_{ij}\, \mathrm{CE}\big(h(f^t_j), y^s_i\big),
        \end{aligned}

    ``jdot_feature`` and ``jdot_label`` above and ``classification``, the mean source cross-entropy.
    Estimator: the exact OT plan between the two mini-batches (``solver="emd"``: POT's network
    simplex on a float64 copy of the detached cost; ``"sinkhorn"``: an entropic plan with
    ``epsilon`` in cost units), the gradient taken with the plan held fixed (one alternating step
    per batch, as in the paper). As in the paper, this is the OT cost between two batches, not an
    estimate of the OT between the whole domains. Difference: the feature cost is divided by the
    differentiable :math:`s^2` (``normalize=True``; :math:`s = 1` is the paper's form), which makes
    :math:`\alpha` scale-free and removes the gain of shrinking every feature.
    """

    name = "deepjdot"
    #: Tunable hyper-parameters: default (= the __init__ default) and search distribution.
    search_space = {
        "alpha": HParam(0.1, LogUniform(0.01, 1.0)),
        "label_weight": HParam(0.1, LogUniform(0.01, 1.0)),
    }

    def __init__(self, alpha: float = 0.1, label_weight: float = 0.1, solver: str = "emd", epsilon: float = 0.05,
                 normalize: bool = True, alignment: str = "local") -> None:
        super().__init__()
        self.set_alignment(alignment)
        self.alpha = check_non_negative(alpha, "alpha")
        self.label_weight = check_non_negative(label_weight, "label_weight")
        self.solver = check_choice(solver, "solver", ("emd", "sinkhorn"))
        self.epsilon = float(epsilon)
        self.normalize = bool(normalize)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        fs, ft, ys, target_logits = self.gather(src.features, tgt.features, batch.source.y, tgt.logits)
        with no_autocast(fs.device):  # under the Trainer's autocast (bf16/fp16) the costs stay float32
            if fs.dtype in (torch.float16, torch.bfloat16):
                fs, ft, target_logits = fs.float(), ft.float(), target_logits.float()
            if self.normalize:
                scale = mean_cross_distance(fs, ft).sqrt()
                fs, ft = fs / scale, ft / scale
            res = jdot(fs, ft, ys, target_logits, alpha=self.alpha,
                       label_weight=self.label_weight, solver=self.solver, epsilon=self.epsilon)
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y),
             "jdot_feature": res.feature_cost, "jdot_label": res.label_cost},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"alpha": self.alpha, "label_weight": self.label_weight, "solver": self.solver, "epsilon": self.epsilon,
                "normalize": self.normalize, "alignment": self.alignment}
