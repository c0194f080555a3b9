r"""Joint distribution optimal transport loss (DeepJDOT).

References:
    * N. Courty, R. Flamary, A. Habrard, A. Rakotomamonjy. "Joint Distribution Optimal
      Transportation for Domain Adaptation". NeurIPS 2017.
    * B. B. Damodaran, B. Kellenberger, R. Flamary, D. Tuia, N. Courty. "DeepJDOT: Deep
      Joint Distribution Optimal Transport for Unsupervised Domain Adaptation". ECCV 2018.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_labels, check_positive, value_checks_enabled
from ._validate import check_feature_pair
from ._sinkhorn_costs import _sq_euclidean_cost
from .sinkhorn import _sinkhorn, _warn_not_converged

__all__ = ["jdot", "JDOTResult"]

SOLVERS = ("emd", "sinkhorn")


@dataclass
class JDOTResult:
    r"""Result of :func:`jdot`.

    Attributes:
        value: scalar tensor :math:`\sum_{ij} P_{ij} C_{ij}` (plan fixed), differentiable
            w.r.t. the features and the target logits.
        plan: ``(N, M)`` detached transport plan.
        feature_cost: scalar tensor, the part :math:`\alpha \sum_{ij} P_{ij}\|g_i - g_j\|^2`.
        label_cost: scalar tensor, the part
            :math:`\lambda \sum_{ij} P_{ij}\,\mathrm{CE}(y_i, \hat y_j)`.
    """

    value: Tensor
    plan: Tensor
    feature_cost: Tensor
    label_cost: Tensor


def _non_negative(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative number, got {value!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
    return v


def _emd_plan(cost: Tensor) -> Tensor:
    """Exact OT plan with uniform marginals for a detached cost, solved by POT on CPU float64."""
    import ot  # POT; imported lazily so that importing adaptlib stays light

    c = cost.detach().to("cpu", torch.float64).numpy()
    n, m = c.shape
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    plan = ot.emd(a, b, c, numItermax=max(100000, 50 * n * m))
    return torch.from_numpy(np.ascontiguousarray(plan)).to(device=cost.device, dtype=cost.dtype)


def jdot(
    source_features: Tensor,
    target_features: Tensor,
    source_labels: Tensor,
    target_logits: Tensor,
    *,
    alpha: float = 1.0,
    label_weight: float = 1.0,
    solver: str = "emd",
    epsilon: float = 0.05,
    scaling: Optional[float] = None,
) -> JDOTResult:
    r"""DeepJDOT alignment loss: optimal transport on the joint (feature, label) space.

    From Damodaran et al., "DeepJDOT", ECCV 2018 (after Courty et al., JDOT, NeurIPS 2017).
    With source embeddings :math:`g^s_i`, labels :math:`y_i`, target embeddings
    :math:`g^t_j` and target class probabilities
    :math:`\hat y_j = \mathrm{softmax}(\mathrm{target\_logits}_j)`, the ground cost is

    .. math::
        C_{ij} = \alpha \, \| g^s_i - g^t_j \|^2
        + \lambda\, \mathrm{CE}(y_i, \hat y_j), \qquad
        \mathrm{CE}(y_i, \hat y_j) = -\log \hat y_{j, y_i},

    (:math:`\lambda` = ``label_weight``; log-softmax keeps it finite). The plan :math:`P` is
    computed on the detached cost with uniform marginals :math:`1/N`, :math:`1/M`:

    * ``solver="emd"``: exact OT with ``ot.emd`` from POT (network simplex, on a float64 CPU
      copy of the cost; a host transfer on accelerators).
    * ``solver="sinkhorn"``: entropic plan from :func:`~adaptlib.losses.sinkhorn` with
      ``epsilon`` in cost units (a ``RuntimeWarning`` is emitted if it did not converge).

    The loss is :math:`\sum_{ij} P_{ij} C_{ij}` with :math:`P` held fixed (the alternating
    optimisation of DeepJDOT): gradients flow to both feature tensors and to
    ``target_logits``, never through the plan.

    Args:
        source_features: ``(N, D)`` source embeddings.
        target_features: ``(M, D)`` target embeddings, same ``D``, dtype and device.
        source_labels: ``(N,)`` integer class indices in ``0..C-1``.
        target_logits: ``(M, C)`` classifier logits for the target batch (same dtype and
            device as the features).
        alpha: weight :math:`\alpha \ge 0` of the feature term (squared feature units).
        label_weight: weight :math:`\lambda \ge 0` of the label term (nats).
        solver: ``"emd"`` or ``"sinkhorn"``.
        epsilon: entropic regularisation for ``"sinkhorn"``, absolute in cost units.
        scaling: ``None`` or the epsilon-scaling ratio in (0, 1) passed to
            :func:`~adaptlib.losses.sinkhorn` for ``"sinkhorn"`` (use it for small ``epsilon``).

    Returns:
        :class:`JDOTResult` with ``value = feature_cost + label_cost``.

    Raises:
        TypeError: non-tensor or wrongly typed inputs (e.g. float labels, half-precision
            features: only float32 and float64 are supported), dtype mismatch.
        ValueError: shape/device mismatches (naming the argument), labels out of range,
            NaN/inf, negative ``alpha``/``label_weight``, unknown ``solver``, ``epsilon <= 0``.

    Example::

        >>> gs, gt = torch.randn(16, 8), torch.randn(24, 8)
        >>> ys, logits_t = torch.randint(0, 3, (16,)), torch.randn(24, 3)
        >>> res = jdot(gs, gt, ys, logits_t, alpha=0.1)
        >>> res.plan.shape, bool(torch.isclose(res.value, res.feature_cost + res.label_cost))
        (torch.Size([16, 24]), True)
    """
    check_feature_pair(source_features, target_features, "source_features", "target_features")
    n, m = source_features.shape[0], target_features.shape[0]
    if not isinstance(target_logits, Tensor) or not target_logits.is_floating_point():
        raise TypeError("target_logits must be a floating-point tensor of shape (M, C)")
    if target_logits.dim() != 2 or target_logits.shape[0] != m or target_logits.shape[1] == 0:
        raise ValueError(
            f"target_logits must have shape ({m}, C) to match target_features, got {tuple(target_logits.shape)}"
        )
    if target_logits.dtype != target_features.dtype:
        raise TypeError(
            f"target_logits must have the dtype of target_features ({target_features.dtype}), got {target_logits.dtype}"
        )
    if target_logits.device != target_features.device:
        raise ValueError(
            f"target_logits must be on {target_features.device}, got {target_logits.device}"
        )
    if value_checks_enabled() and not bool(torch.isfinite(target_logits).all()):
        raise ValueError("target_logits contains NaN or inf")
    if isinstance(source_labels, Tensor) and source_labels.device != source_features.device:
        raise ValueError(f"source_labels must be on {source_features.device}, got {source_labels.device}")
    labels = check_labels(source_labels, n, "source_labels", num_classes=target_logits.shape[1])
    if labels.device != source_features.device:
        raise ValueError(f"source_labels must be on {source_features.device}, got {labels.device}")
    alpha = _non_negative(alpha, "alpha")
    label_weight = _non_negative(label_weight, "label_weight")
    check_choice(solver, "solver", SOLVERS)
    eps = check_positive(epsilon, "epsilon")

    feat_cost = _sq_euclidean_cost(source_features, target_features)  # (N, M)
    log_probs = F.log_softmax(target_logits, dim=1)  # (M, C)
    label_cost = -log_probs[:, labels].T  # (N, M): -log p_j[y_i]
    cost = alpha * feat_cost + label_weight * label_cost

    if solver == "emd":
        plan = _emd_plan(cost)
    else:
        res = _sinkhorn(None, None, epsilon=eps, cost=cost.detach(), scaling=scaling)
        if not res.converged:
            _warn_not_converged("jdot", res)
        plan = res.plan
    feature_part = alpha * (plan * feat_cost).sum()
    label_part = label_weight * (plan * label_cost).sum()
    return JDOTResult(
        value=feature_part + label_part, plan=plan, feature_cost=feature_part, label_cost=label_part
    )
