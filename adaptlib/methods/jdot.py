"""DeepJDOT: optimal transport of the joint (feature, label) distribution."""
from __future__ import annotations

from typing import Any, Dict

from .._checks import check_choice
from ..losses import jdot
from ..models import AdaptModel
from .base import Batch, Method, Progress, StepOutput


class DeepJDOT(Method):
    """DeepJDOT (Damodaran et al., ECCV 2018).

    Per step: the cost ``C_ij = alpha ||f_s_i - f_t_j||^2 + label_weight CE(y_s_i, h(f_t_j))``,
    the plan ``P`` = exact OT between uniform weights on the detached cost (or entropic OT),
    and the loss ``CE(h(f_s), y_s) + sum_ij P_ij C_ij`` (gradients with ``P`` held fixed, the
    paper's alternating scheme).

    Args:
        alpha: weight of the feature distance (the paper's alpha).
        label_weight: weight of the label cost (the paper's lambda_t).
        solver: ``"emd"`` (exact, POT) or ``"sinkhorn"``.
        epsilon: entropic regularisation for ``solver="sinkhorn"``, in cost units.
    """

    name = "deepjdot"

    def __init__(self, alpha: float = 0.01, label_weight: float = 0.5, solver: str = "emd", epsilon: float = 0.05) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.label_weight = float(label_weight)
        self.solver = check_choice(solver, "solver", ("emd", "sinkhorn"))
        self.epsilon = float(epsilon)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        src, tgt = self.forward_source_target(model, batch)
        res = jdot(src.features, tgt.features, batch.source.y, tgt.logits, alpha=self.alpha,
                   label_weight=self.label_weight, solver=self.solver, epsilon=self.epsilon)
        return StepOutput(
            {"classification": self.classification(src.logits, batch.source.y),
             "jdot_feature": res.feature_cost, "jdot_label": res.label_cost},
        )

    def hparams(self) -> Dict[str, Any]:
        return {"alpha": self.alpha, "label_weight": self.label_weight, "solver": self.solver, "epsilon": self.epsilon}
