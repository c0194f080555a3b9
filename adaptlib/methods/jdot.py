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
