r"""Margin Disparity Discrepancy (MDD), the classification surrogate of Zhang et al.

Reference:
    Y. Zhang, T. Liu, M. Long, M. I. Jordan. "Bridging Theory and Algorithm for Domain
    Adaptation". ICML 2019.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_positive
from ._validate import check_logits, compute_dtype, no_autocast

__all__ = ["margin_disparity_discrepancy"]


def _check_same(a: Tensor, b: Tensor, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"{a_name} and {b_name} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{a_name} and {b_name} must be on the same device, got {a.device} and {b.device}")


def margin_disparity_discrepancy(
    source_logits: Tensor,
    source_adv_logits: Tensor,
    target_logits: Tensor,
    target_adv_logits: Tensor,
    margin: float = 4.0,
) -> Tensor:
    r"""The MDD objective :math:`D_\gamma` between the classifier ``h`` and an adversarial head ``h'``.

    From Zhang et al., ICML 2019 (Sec. 5, the classification surrogate). With
    :math:`\hat y = \arg\max_c h(\cdot)_c` the classifier's predicted class (no gradient
    flows through it), :math:`\sigma` the softmax and :math:`\gamma = ` ``margin``:

    .. math::
        D_\gamma = \frac1M \sum_{j} \log\big(1 - \sigma(h'(f^t_j))_{\hat y^t_j}\big)
        \;-\; \gamma\, \frac1N \sum_{i} \mathrm{CE}\big(h'(f^s_i), \hat y^s_i\big).

    The adversary :math:`h'` *maximises* :math:`D_\gamma` (agrees with :math:`h` on source,
    disagrees on target); the features minimise it. A method therefore minimises
    :math:`-D_\gamma` with a gradient reversal layer between the features and :math:`h'`
    (as TLlib's ``MarginDisparityDiscrepancy``, whose value this is). :math:`D_\gamma \le 0`.

    :math:`\log(1 - \sigma(z)_y)` is computed exactly as
    :math:`\mathrm{logsumexp}_{c \ne y} z_c - \mathrm{logsumexp}_c z_c`, finite for any finite
    logits (the reference code adds ``1e-6`` inside the log instead).

    Args:
        source_logits: ``(N, C)`` logits of the classifier ``h`` on source features, ``C >= 2``
            (only their argmax is used).
        source_adv_logits: ``(N, C)`` logits of the adversarial head ``h'`` on the same
            features; same shape, dtype and device.
        target_logits, target_adv_logits: ``(M, C)`` the same on target features.
        margin: :math:`\gamma > 0` (4 in the paper's Office-31 experiments and TLlib).

    Returns:
        Scalar tensor (float64 for float64 inputs, else float32), differentiable w.r.t. the
        adversarial logits.

    Raises:
        TypeError: non-tensor or non-floating logits, dtype mismatch, ``margin`` not a number.
        ValueError: logits not ``(N, C)`` with ``C >= 2``, shape or device mismatch, NaN/inf,
            ``margin`` not a finite positive number.

    Example::

        >>> h = torch.tensor([[5.0, 0.0]])                  # h predicts class 0
        >>> agree, disagree = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]])
        >>> margin_disparity_discrepancy(h, agree, h, disagree, margin=1.0)  # the adversary's optimum side
        tensor(-0.0134)
    """
    for x, name in ((source_logits, "source_logits"), (source_adv_logits, "source_adv_logits"),
                    (target_logits, "target_logits"), (target_adv_logits, "target_adv_logits")):
        check_logits(x, name, min_classes=2)
    _check_same(source_logits, source_adv_logits, "source_logits", "source_adv_logits")
    _check_same(target_logits, target_adv_logits, "target_logits", "target_adv_logits")
    _check_same(source_logits[:0], target_logits[:0], "source_logits", "target_logits")  # same C, dtype, device
    gamma = check_positive(margin, "margin")
    cd = compute_dtype(source_adv_logits.dtype)
    with no_autocast(source_adv_logits.device):
        ys = source_logits.detach().argmax(1)
        yt = target_logits.detach().argmax(1)
        source_disparity = F.cross_entropy(source_adv_logits.to(cd), ys)
        zt = target_adv_logits.to(cd)
        others = zt.scatter(1, yt[:, None], float("-inf"))  # z with the predicted class removed
        log_one_minus_p = torch.logsumexp(others, dim=1) - torch.logsumexp(zt, dim=1)
        return log_one_minus_p.mean() - gamma * source_disparity
