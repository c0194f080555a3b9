r"""Gradient reversal, the DANN domain-classification loss, and prediction entropy.

References:
    * Y. Ganin, V. Lempitsky. "Unsupervised Domain Adaptation by Backpropagation". ICML 2015.
    * Y. Ganin et al. "Domain-Adversarial Training of Neural Networks". JMLR 17, 2016.
    * Y. Grandvalet, Y. Bengio. "Semi-supervised Learning by Entropy Minimization".
      NeurIPS 2004 (entropy regulariser).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_features, check_weights, value_checks_enabled
from ._validate import check_feature_pair

__all__ = ["gradient_reversal", "domain_adversarial", "entropy"]


def _check_coefficient(coefficient: object) -> float:
    if isinstance(coefficient, Tensor):
        if coefficient.numel() != 1:
            raise ValueError("coefficient must be a scalar")
        coefficient = coefficient.item()
    if isinstance(coefficient, (str, bytes)):
        raise TypeError(f"coefficient must be a non-negative number, got {coefficient!r}")
    try:
        c = float(coefficient)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"coefficient must be a non-negative number, got {coefficient!r}") from None
    if not (c >= 0 and math.isfinite(c)):
        raise ValueError(f"coefficient must be a finite non-negative number, got {coefficient!r}")
    return c


class _GradientReversalFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coefficient: float) -> Tensor:  # type: ignore[override]
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad * (-ctx.coefficient), None


def gradient_reversal(x: Tensor, coefficient: float) -> Tensor:
    r"""Gradient reversal layer: identity forward, gradient times :math:`-\lambda` backward.

    From Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015:

    .. math::
        R_\lambda(x) = x, \qquad \frac{\partial R_\lambda}{\partial x} = -\lambda I.

    Placed between a feature extractor and a domain discriminator, minimising the
    discriminator loss trains the discriminator while the features receive the reversed
    gradient (maximising it). ``coefficient`` is an explicit argument (e.g. the DANN
    schedule :math:`\lambda_p = 2/(1+e^{-10p}) - 1`), not hidden state.

    Args:
        x: tensor of any shape, dtype and device.
        coefficient: :math:`\lambda \ge 0` (a Python number or one-element tensor, taken as
            a constant; no gradient flows to it).

    Returns:
        A tensor equal to ``x`` (a view); its backward multiplies the incoming gradient by
        ``-coefficient``. Higher-order gradients apply the reversal again on every pass
        through the layer; they are not derivatives of any function, so avoid
        double-backward through it (a gradient penalty taken w.r.t. the layer's *output*,
        as in WDGRL, is unaffected).

    Raises:
        TypeError: ``x`` is not a tensor or ``coefficient`` is not a number.
        ValueError: ``coefficient`` is negative, NaN or infinite.

    Example::

        >>> x = torch.ones(3, requires_grad=True)
        >>> gradient_reversal(x, 0.5).sum().backward()
        >>> x.grad
        tensor([-0.5000, -0.5000, -0.5000])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    c = _check_coefficient(coefficient)
    return _GradientReversalFn.apply(x, c)


def domain_adversarial(
    source_features: Tensor,
    target_features: Tensor,
    discriminator: nn.Module,
    coefficient: float,
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    r"""DANN domain-classification loss through a gradient reversal layer.

    From Ganin & Lempitsky, ICML 2015 / Ganin et al., JMLR 2016. The stacked features
    :math:`z = [g^s; g^t]` pass through :func:`gradient_reversal` (``coefficient``
    :math:`\lambda`) and the ``discriminator`` :math:`D`, which outputs one logit per sample
    (source = 1, target = 0). With :math:`a`, :math:`b` the normalised sample weights
    (uniform by default),

    .. math::
        \mathcal L = \tfrac12 \Big( \sum_i a_i\, \mathrm{softplus}(-D(g^s_i))
        + \sum_j b_j\, \mathrm{softplus}(D(g^t_j)) \Big),

    i.e. the mean binary cross-entropy with logits of each domain, averaged over the two
    domains so unequal batch sizes weigh the domains equally. Minimising
    :math:`\mathcal L` trains :math:`D`; the features receive :math:`-\lambda` times its
    gradient. The discriminator is called once on the stacked batch (so normalisation
    layers inside it see both domains).

    Args:
        source_features: ``(N, D)`` source features.
        target_features: ``(M, D)`` target features (same ``D``, dtype, device).
        discriminator: module mapping ``(N+M, D)`` to logits of shape ``(N+M, 1)`` or
            ``(N+M,)``.
        coefficient: reversal strength :math:`\lambda \ge 0`.
        source_weights: optional ``(N,)`` non-negative weights, normalised.
        target_weights: optional ``(M,)`` non-negative weights, normalised.

    Returns:
        ``(loss, accuracy)``: scalar loss in nats (differentiable), and the detached
        balanced discriminator accuracy :math:`\tfrac12(\mathrm{acc}_s + \mathrm{acc}_t)`
        (same weights; logit >= 0 predicts source) as a floating tensor, for logging.
        float16/bfloat16 logits (e.g. a discriminator under ``torch.autocast``) give both in
        float32; otherwise they have the logits' dtype.

    Raises:
        TypeError: bad feature tensors or ``discriminator`` not callable, bad coefficient.
        ValueError: shape/device mismatches, invalid weights or ``coefficient``, a
            discriminator output of the wrong shape or with NaN/inf.

    Example::

        >>> disc = nn.Linear(8, 1)
        >>> loss, acc = domain_adversarial(torch.randn(16, 8), torch.randn(24, 8), disc, 1.0)
        >>> loss.shape, 0.0 <= float(acc) <= 1.0
        (torch.Size([]), True)
    """
    check_feature_pair(source_features, target_features, "source_features", "target_features", half_ok=True)
    if not callable(discriminator):
        raise TypeError(f"discriminator must be a callable nn.Module, got {type(discriminator).__name__}")
    n, m = source_features.shape[0], target_features.shape[0]
    uniform = source_weights is None and target_weights is None
    if not uniform:
        a = check_weights(source_weights, n, source_features, "source_weights")
        b = check_weights(target_weights, m, source_features, "target_weights")
    c = _check_coefficient(coefficient)

    z = gradient_reversal(torch.cat([source_features, target_features], dim=0), c)
    logits = discriminator(z)
    if not isinstance(logits, Tensor):
        raise TypeError(f"discriminator must return a tensor, got {type(logits).__name__}")
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    if logits.dim() != 1 or logits.shape[0] != n + m:
        raise ValueError(
            f"discriminator must return one logit per sample, shape ({n + m}, 1) or ({n + m},), "
            f"got {tuple(logits.shape)}"
        )
    if value_checks_enabled() and not bool(torch.isfinite(logits).all()):
        raise ValueError("discriminator output contains NaN or inf")
    if logits.dtype in (torch.float16, torch.bfloat16):  # half logits (autocast): the loss in float32
        logits = logits.float()
    ls, lt = logits[:n], logits[n:]
    if uniform:  # the common case, with fewer ops in the hot loop: plain means
        loss = 0.5 * (F.softplus(-ls).mean() + F.softplus(lt).mean())
        with torch.no_grad():
            acc = 0.5 * ((ls >= 0).to(logits.dtype).mean() + (lt < 0).to(logits.dtype).mean())
        return loss, acc
    a = a.to(logits.dtype)
    b = b.to(logits.dtype)
    loss = 0.5 * ((a * F.softplus(-ls)).sum() + (b * F.softplus(lt)).sum())
    with torch.no_grad():
        acc = 0.5 * ((a * (ls >= 0).to(a.dtype)).sum() + (b * (lt < 0).to(b.dtype)).sum())
    return loss, acc


def entropy(logits: Tensor, reduction: str = "mean") -> Tensor:
    r"""Shannon entropy of the softmax of ``logits``, in nats.

    .. math::
        H(p_i) = -\sum_{c=1}^{C} p_{ic} \log p_{ic}, \qquad p_i = \mathrm{softmax}(z_i),

    computed as :math:`-\sum_c p_{ic}\,\mathrm{log\_softmax}(z_i)_c`, which is finite for
    any finite logits (a vanishing probability contributes exactly 0). Used as the
    entropy-minimisation regulariser on target predictions (Grandvalet & Bengio, NeurIPS
    2004; e.g. in RTN, MCC, SHOT). Values lie in :math:`[0, \log C]`.

    Args:
        logits: ``(N, C)`` floating-point logits (any device).
        reduction: ``"mean"`` (average over rows, scalar), ``"sum"`` (scalar) or ``"none"``
            (shape ``(N,)``).

    Returns:
        Entropy in nats, differentiable w.r.t. ``logits``; float16/bfloat16 logits are
        computed and returned in float32, other dtypes in their own.

    Raises:
        TypeError: ``logits`` not a floating-point tensor.
        ValueError: ``logits`` not ``(N, C)`` with ``N, C >= 1``, contains NaN/inf, or
            unknown ``reduction``.

    Example::

        >>> entropy(torch.zeros(2, 4))            # uniform over 4 classes: log 4
        tensor(1.3863)
        >>> entropy(torch.tensor([[200.0, 0.0], [0.0, 0.0]]), reduction="none")
        tensor([0.0000, 0.6931])
    """
    check_choice(reduction, "reduction", ("mean", "sum", "none"))
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor of shape (N, C), got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
    check_features(logits, "logits")
    if logits.dtype in (torch.float16, torch.bfloat16):  # half logits (autocast): computed in float32
        logits = logits.float()
    log_p = F.log_softmax(logits, dim=1)
    # -inf (logit gaps beyond the dtype's range) would give 0 * inf = NaN; p is 0 there anyway
    log_p = log_p.clamp_min(torch.finfo(log_p.dtype).min)
    h = (log_p.exp() * (-log_p)).sum(dim=1)
    if reduction == "mean":
        return h.mean()
    if reduction == "sum":
        return h.sum()
    return h
