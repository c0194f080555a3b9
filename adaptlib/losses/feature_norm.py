r"""Adaptive Feature Norm: the stepwise (SAFN) and hard (HAFN) feature-norm losses.

Reference:
    R. Xu, G. Li, J. Yang, L. Lin. "Larger Norm More Transferable: An Adaptive Feature Norm
    Approach for Unsupervised Domain Adaptation". ICCV 2019.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_positive
from ._validate import check_logits, compute_dtype, no_autocast

__all__ = ["adaptive_feature_norm", "hard_feature_norm"]


def _norms(features: Tensor) -> Tensor:
    return torch.linalg.vector_norm(features.to(compute_dtype(features.dtype)), dim=1)


def adaptive_feature_norm(features: Tensor, delta_r: float = 1.0) -> Tensor:
    r"""Stepwise Adaptive Feature Norm (SAFN) loss: push every feature norm up by ``delta_r``.

    From Xu et al., ICCV 2019 (Eq. 5). With :math:`\theta` the current parameters and the
    radius target taken from the current, *detached* norms:

    .. math::
        \mathcal L = \frac1N \sum_{i=1}^{N}
        \big(\mathrm{sg}(\|f_i\|_2) + \Delta r - \|f_i\|_2\big)^2,

    where :math:`\mathrm{sg}` stops the gradient. The value is always :math:`\Delta r^2`; what
    matters is the gradient :math:`\partial\mathcal L/\partial f_i = -\frac{2\Delta r}{N}
    \frac{f_i}{\|f_i\|_2}`, which enlarges each norm a little at every step (the paper's
    progressive enlargement). A zero row gets a zero gradient.

    Args:
        features: ``(N, D)`` floating-point features (one domain; the paper applies the loss
            to source and target features separately and adds them). float16/bfloat16 are
            computed in float32; float32/float64 in their own dtype.
        delta_r: :math:`\Delta r > 0`, the residual norm step (1.0 in the paper).

    Returns:
        Scalar tensor (dtype of the computation, device of ``features``), differentiable
        w.r.t. ``features``.

    Raises:
        TypeError: ``features`` not a floating tensor, ``delta_r`` not a number.
        ValueError: ``features`` not ``(N, D)`` with ``N, D >= 1``, contains NaN/inf, or
            ``delta_r`` not a finite positive number.

    Example::

        >>> f = torch.tensor([[3.0, 4.0]], requires_grad=True)
        >>> loss = adaptive_feature_norm(f, delta_r=1.0)
        >>> loss.backward(); loss, f.grad
        (tensor(1., grad_fn=<MeanBackward0>), tensor([[-1.2000, -1.6000]]))
    """
    check_logits(features, "features", cols="D")
    d = check_positive(delta_r, "delta_r")
    with no_autocast(features.device):
        norms = _norms(features)
        return (norms.detach() + d - norms).pow(2).mean()


def hard_feature_norm(features: Tensor, radius: float) -> Tensor:
    r"""Hard Adaptive Feature Norm (HAFN) loss: the mean feature norm pulled to a fixed radius.

    From Xu et al., ICCV 2019 (Eq. 4), as in the authors' code:

    .. math::
        \mathcal L = \Big(\frac1N \sum_{i=1}^{N} \|f_i\|_2 - R\Big)^2.

    The paper applies it to source and target features separately (each domain's mean norm
    to the same :math:`R`), which equalises the two domains' mean norms at a large value.

    Args:
        features: ``(N, D)`` floating-point features of one domain (dtypes as in
            :func:`adaptive_feature_norm`).
        radius: :math:`R > 0` (25 in the authors' Office-31 setting).

    Returns:
        Scalar tensor (dtype of the computation, device of ``features``), differentiable
        w.r.t. ``features``.

    Raises:
        TypeError: ``features`` not a floating tensor, ``radius`` not a number.
        ValueError: ``features`` not ``(N, D)``, contains NaN/inf, or ``radius`` not a finite
            positive number.

    Example::

        >>> hard_feature_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), radius=5.0)
        tensor(4.)
    """
    check_logits(features, "features", cols="D")
    r = check_positive(radius, "radius")
    with no_autocast(features.device):
        return (_norms(features).mean() - r).pow(2)
