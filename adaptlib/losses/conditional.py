r"""CDAN's conditioning: the multilinear map, its randomized version, entropy weights, and the loss.

Reference:
    M. Long, Z. Cao, J. Wang, M. I. Jordan. "Conditional Adversarial Domain Adaptation".
    NeurIPS 2018.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adversarial import domain_adversarial, entropy
from ._validate import check_logits

__all__ = ["multilinear_map", "randomized_multilinear_map", "cdan_entropy_weights", "conditional_domain_adversarial"]


def _check_pair(f: Tensor, g: Tensor, f_name: str, g_name: str) -> None:
    check_logits(f, f_name, cols="D")
    check_logits(g, g_name)
    if f.shape[0] != g.shape[0]:
        raise ValueError(f"{f_name} and {g_name} must have the same number of rows, got {f.shape[0]} and {g.shape[0]}")
    if f.dtype != g.dtype:
        raise TypeError(f"{f_name} and {g_name} must have the same dtype, got {f.dtype} and {g.dtype}")
    if f.device != g.device:
        raise ValueError(f"{f_name} and {g_name} must be on the same device, got {f.device} and {g.device}")


def multilinear_map(features: Tensor, predictions: Tensor) -> Tensor:
    r"""CDAN's multilinear map: the flattened outer product of features and predictions.

    From Long et al., NeurIPS 2018 (Sec. 3.1): :math:`T_\otimes(f, g) = f \otimes g`, here

    .. math::
        T_\otimes(f, g)_{i,\, cD + d} = g_{ic}\, f_{id}, \qquad c < C,\ d < D,

    i.e. row :math:`i` is :math:`\mathrm{vec}(g_i f_i^\top)` in row-major order (the order of
    the authors' ``bmm(g.unsqueeze(2), f.unsqueeze(1))``). It captures the cross-covariance
    of features and class predictions, so a discriminator on it sees the joint distribution.

    Args:
        features: ``(N, D)`` floating-point features ``f``.
        predictions: ``(N, C)`` class probabilities ``g`` (any values; CDAN passes the
            softmax, detached); same ``N``, dtype and device as ``features``.

    Returns:
        ``(N, D*C)`` tensor in the inputs' dtype, differentiable w.r.t. both inputs.

    Raises:
        TypeError: non-tensor or non-floating input, dtype mismatch.
        ValueError: shapes not ``(N, D)``/``(N, C)``, row counts or devices differ, NaN/inf.

    Example::

        >>> multilinear_map(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.25, 0.75]]))
        tensor([[0.2500, 0.5000, 0.7500, 1.5000]])
    """
    _check_pair(features, predictions, "features", "predictions")
    n = features.shape[0]
    return (predictions.unsqueeze(2) * features.unsqueeze(1)).reshape(n, -1)


def randomized_multilinear_map(features: Tensor, predictions: Tensor, random_features: Tensor,
                               random_predictions: Tensor) -> Tensor:
    r"""CDAN's randomized multilinear map, for when :math:`D \cdot C` is too large.

    From Long et al., NeurIPS 2018 (Sec. 3.1): with fixed random matrices
    :math:`R_f \in \mathbb R^{D \times d}` and :math:`R_g \in \mathbb R^{C \times d}`
    (drawn once, e.g. standard Gaussian, never trained),

    .. math::
        T_\odot(f, g) = \frac{1}{\sqrt d}\, (f R_f) \odot (g R_g) \in \mathbb R^{N \times d}.

    For Gaussian :math:`R`, :math:`\mathbb E[\langle T_\odot(f, g), T_\odot(f', g')\rangle] =
    \langle f, f'\rangle \langle g, g'\rangle = \langle T_\otimes(f,g), T_\otimes(f',g')\rangle`:
    inner products of the full map are preserved in expectation (the paper's Theorem 1).

    Args:
        features: ``(N, D)`` floating-point features.
        predictions: ``(N, C)`` class probabilities; same ``N``, dtype and device.
        random_features: ``(D, d)`` matrix :math:`R_f`; same dtype and device.
        random_predictions: ``(C, d)`` matrix :math:`R_g`; same dtype and device.

    Returns:
        ``(N, d)`` tensor in the inputs' dtype, differentiable w.r.t. all inputs.

    Raises:
        TypeError: non-tensor or non-floating input, dtype mismatch.
        ValueError: shapes that do not chain (``D``, ``C`` or ``d`` differ), devices differ,
            NaN/inf.

    Example::

        >>> f, g = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5]])
        >>> randomized_multilinear_map(f, g, torch.ones(2, 4), torch.ones(2, 4))
        tensor([[1.5000, 1.5000, 1.5000, 1.5000]])
    """
    _check_pair(features, predictions, "features", "predictions")
    for r, name, rows in ((random_features, "random_features", features.shape[1]),
                          (random_predictions, "random_predictions", predictions.shape[1])):
        check_logits(r, name, cols="d")
        if r.shape[0] != rows:
            raise ValueError(f"{name} must have {rows} rows (one per input column), got shape {tuple(r.shape)}")
        if r.dtype != features.dtype:
            raise TypeError(f"{name} must have the dtype of features, {features.dtype}, got {r.dtype}")
        if r.device != features.device:
            raise ValueError(f"{name} must be on the device of features, {features.device}, got {r.device}")
    d = random_features.shape[1]
    if random_predictions.shape[1] != d:
        raise ValueError(f"random_features and random_predictions must have the same number of columns d, "
                         f"got {d} and {random_predictions.shape[1]}")
    return (features @ random_features) * (predictions @ random_predictions) / math.sqrt(d)


def cdan_entropy_weights(logits: Tensor) -> Tensor:
    r"""CDAN+E's sample weights :math:`w_i = 1 + e^{-H(g_i)}`, :math:`g_i = \mathrm{softmax}(z_i)`.

    From Long et al., NeurIPS 2018 (Eq. 9, entropy conditioning): confident predictions
    (low entropy :math:`H`, in nats) weigh up to 2, uniform ones :math:`1 + 1/C`. The
    weights are not normalised; :func:`conditional_domain_adversarial` normalises them per
    domain.

    Args:
        logits: ``(N, C)`` floating-point logits.

    Returns:
        ``(N,)`` tensor in the dtype of ``logits``, values in :math:`[1 + 1/C, 2]`,
        differentiable (CDAN uses it detached).

    Raises:
        TypeError: ``logits`` not a floating tensor.
        ValueError: ``logits`` not ``(N, C)`` or contains NaN/inf.

    Example::

        >>> cdan_entropy_weights(torch.tensor([[0.0, 0.0], [100.0, 0.0]]))
        tensor([1.5000, 2.0000])
    """
    check_logits(logits, "logits")
    return 1.0 + torch.exp(-entropy(logits, reduction="none"))


def conditional_domain_adversarial(
    source_features: Tensor,
    target_features: Tensor,
    source_logits: Tensor,
    target_logits: Tensor,
    discriminator: nn.Module,
    coefficient: float,
    *,
    entropy_conditioning: bool = False,
    random_matrices: Optional[Tuple[Tensor, Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    r"""CDAN's conditional domain-classification loss (CDAN, or CDAN+E with entropy conditioning).

    From Long et al., NeurIPS 2018 (Eqs. 7-9). With :math:`g = \mathrm{softmax}(z)` detached
    (as in the authors' code: the classifier is trained by the source loss only),
    :math:`h = T(f, g)` the multilinear map (:func:`multilinear_map`) or, when
    ``random_matrices`` is given, the randomized one (:func:`randomized_multilinear_map`),
    and the discriminator :math:`D` behind a gradient reversal of strength :math:`\lambda`:

    .. math::
        \mathcal L = \tfrac12 \Big( \sum_i a_i\, \mathrm{softplus}(-D(h^s_i))
        + \sum_j b_j\, \mathrm{softplus}(D(h^t_j)) \Big),

    with :math:`a, b` uniform, or with entropy conditioning :math:`a_i \propto 1 +
    e^{-H(g^s_i)}`, :math:`b_j \propto 1 + e^{-H(g^t_j)}` (each normalised to sum to one over
    its domain; detached), the authors' per-domain normalisation. This is
    :func:`~adaptlib.losses.domain_adversarial` on :math:`h` (see there for the accuracy
    returned and the reversal).

    Args:
        source_features, target_features: ``(N, D)`` and ``(M, D)`` features (gradient flows
            into them, reversed).
        source_logits, target_logits: ``(N, C)`` and ``(M, C)`` classifier logits (used
            detached).
        discriminator: maps ``(N+M, D*C)`` (or ``(N+M, d)``) to logits ``(N+M, 1)``.
        coefficient: reversal strength :math:`\lambda \ge 0`.
        entropy_conditioning: weight samples by :func:`cdan_entropy_weights` (CDAN+E).
        random_matrices: ``(R_f, R_g)`` of shapes ``(D, d)`` and ``(C, d)`` for the
            randomized map, or ``None`` for the full map.

    Returns:
        ``(loss, accuracy)`` as in :func:`~adaptlib.losses.domain_adversarial`.

    Raises:
        TypeError, ValueError: as :func:`multilinear_map`, :func:`randomized_multilinear_map`
            and :func:`~adaptlib.losses.domain_adversarial` (errors name the argument).

    Example::

        >>> disc = nn.Linear(8 * 3, 1)
        >>> loss, acc = conditional_domain_adversarial(torch.randn(5, 8), torch.randn(6, 8),
        ...     torch.randn(5, 3), torch.randn(6, 3), disc, 1.0, entropy_conditioning=True)
        >>> loss.shape
        torch.Size([])
    """
    _check_pair(source_features, source_logits, "source_features", "source_logits")
    _check_pair(target_features, target_logits, "target_features", "target_logits")
    if source_logits.shape[1] != target_logits.shape[1]:
        raise ValueError(f"source_logits and target_logits must have the same number of classes, "
                         f"got {source_logits.shape[1]} and {target_logits.shape[1]}")
    n = source_features.shape[0]
    f = torch.cat([source_features, target_features], dim=0)
    with torch.no_grad():
        z = torch.cat([source_logits, target_logits], dim=0)
        g = F.softmax(z, dim=1)
        w = cdan_entropy_weights(z) if entropy_conditioning else None
    if random_matrices is None:
        h = multilinear_map(f, g)
    else:
        if not isinstance(random_matrices, (tuple, list)) or len(random_matrices) != 2:
            raise TypeError("random_matrices must be a pair (R_f, R_g) of tensors")
        h = randomized_multilinear_map(f, g, random_matrices[0], random_matrices[1])
    return domain_adversarial(h[:n], h[n:], discriminator, coefficient,
                              source_weights=None if w is None else w[:n],
                              target_weights=None if w is None else w[n:])
