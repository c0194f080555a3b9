r"""Losses on the matrix of a batch's class predictions: minimum class confusion and batch nuclear norm.

Both act on unlabelled (target) logits only and need no source data.

References:
    * Y. Jin, X. Wang, M. Long, J. Wang. "Minimum Class Confusion for Versatile Domain
      Adaptation". ECCV 2020.
    * S. Cui, S. Wang, J. Zhuo, L. Li, Q. Huang, Q. Tian. "Towards Discriminability and
      Diversity: Batch Nuclear-norm Maximization under Label Insufficient Situations".
      CVPR 2020.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_positive
from ._validate import check_logits, compute_dtype, no_autocast

__all__ = ["minimum_class_confusion", "batch_nuclear_norm"]


def minimum_class_confusion(logits: Tensor, temperature: float = 2.5) -> Tensor:
    r"""Minimum Class Confusion (MCC) loss of a batch of (target) logits.

    From Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020
    (Eqs. 1-6). With temperature :math:`T`, :math:`N` rows and :math:`C` classes:

    .. math::
        \hat y_{ij} = \frac{\exp(z_{ij}/T)}{\sum_{j'} \exp(z_{ij'}/T)}, \qquad
        H_i = -\sum_j \hat y_{ij} \log \hat y_{ij}, \qquad
        W_{ii} = \frac{N\,(1 + e^{-H_i})}{\sum_{i'} (1 + e^{-H_{i'}})},

    .. math::
        \mathbf C = \hat Y^\top W \hat Y \in \mathbb R^{C \times C}, \qquad
        \tilde{\mathbf C}_{jj'} = \frac{\mathbf C_{jj'}}{\sum_{j''} \mathbf C_{j''j'}}, \qquad
        \mathcal L_{\mathrm{MCC}} = \frac1C \sum_{j} \sum_{j' \ne j} \tilde{\mathbf C}_{jj'}.

    The weights :math:`W` are detached, as in the authors' code (the entropy only decides how
    much each sample counts; gradients flow through :math:`\hat Y`). Column normalisation
    (the paper's category normalisation) makes each column of :math:`\tilde{\mathbf C}` sum
    to one, so :math:`\mathcal L = 1 - \mathrm{tr}(\tilde{\mathbf C})/C \in [0, 1)`: 0 when every
    sample is predicted one-hot (no confusion), :math:`(C-1)/C` for uniform predictions.
    :math:`\mathbf C` is symmetric, so
    normalising rows instead (the authors' code) gives the same value.

    Args:
        logits: ``(N, C)`` floating-point logits, ``N, C >= 1``. float16/bfloat16 are computed
            in float32 (outside autocast); float32 and float64 in their own dtype.
        temperature: :math:`T > 0` (2.5 in the paper).

    Returns:
        Scalar tensor (dtype of the computation, device of ``logits``), differentiable
        w.r.t. ``logits``.

    Raises:
        TypeError: ``logits`` not a floating tensor, or ``temperature`` not a number.
        ValueError: ``logits`` not ``(N, C)``, contains NaN/inf, or ``temperature`` not a
            finite positive number.

    Example::

        >>> minimum_class_confusion(torch.tensor([[50.0, 0.0], [0.0, 50.0]]))  # confident
        tensor(0.)
        >>> minimum_class_confusion(torch.zeros(4, 2))  # uniform predictions: (C-1)/C
        tensor(0.5000)
    """
    check_logits(logits, "logits")
    t = check_positive(temperature, "temperature")
    n, c = logits.shape
    with no_autocast(logits.device):
        z = logits.to(compute_dtype(logits.dtype)) / t
        log_p = F.log_softmax(z, dim=1)
        p = log_p.exp()
        with torch.no_grad():
            h = -(p * log_p.clamp_min(torch.finfo(p.dtype).min)).sum(1)
            w = 1.0 + torch.exp(-h)
            w = n * w / w.sum()
        confusion = (p * w[:, None]).t() @ p  # (C, C)
        # columns sums are positive unless a class underflows in every row: then its column is 0
        confusion = confusion / confusion.sum(0, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
        return (confusion.sum() - confusion.diagonal().sum()) / c


def batch_nuclear_norm(logits: Tensor) -> Tensor:
    r"""Batch Nuclear-norm Maximization (BNM) loss: minus the nuclear norm of the batch's softmax.

    From Cui et al., "Towards Discriminability and Diversity: Batch Nuclear-norm Maximization
    under Label Insufficient Situations", CVPR 2020 (Eq. 9):

    .. math::
        A = \mathrm{softmax}(Z) \in \mathbb R^{N \times C}, \qquad
        \mathcal L_{\mathrm{BNM}} = -\frac{1}{N} \|A\|_\star = -\frac1N \sum_{k=1}^{\min(N, C)} \sigma_k(A).

    Maximising the nuclear norm raises both prediction confidence (discriminability: the
    Frobenius norm, which bounds it) and the rank of :math:`A` (diversity: predictions not
    all in the majority classes). :math:`\|A\|_\star \le \sqrt{\min(N,C)}\,\|A\|_F \le
    \sqrt{\min(N, C) N}`, so :math:`\mathcal L \in [-\sqrt{\min(N,C)/N}, 0]`.

    The authors' code divides by :math:`\min(N, C)` instead of :math:`N` (``-mean`` of the
    singular values), i.e. multiplies this loss by :math:`N/\min(N, C)`; a method's weight
    absorbs the difference. The gradient is :math:`-U V^\top / N` (thin SVD
    :math:`A = U \Sigma V^\top`), finite also for repeated or zero singular values.

    Args:
        logits: ``(N, C)`` floating-point logits, ``N, C >= 1``. float16/bfloat16 are computed
            in float32 (outside autocast; SVD has no half-precision kernel); float32 and
            float64 in their own dtype.

    Returns:
        Scalar tensor (dtype of the computation, device of ``logits``), differentiable
        w.r.t. ``logits``.

    Raises:
        TypeError: ``logits`` not a floating tensor.
        ValueError: ``logits`` not ``(N, C)`` or contains NaN/inf.

    Example::

        >>> batch_nuclear_norm(torch.tensor([[50.0, 0.0], [0.0, 50.0]]))  # confident and diverse
        tensor(-1.)
        >>> batch_nuclear_norm(torch.tensor([[50.0, 0.0], [50.0, 0.0]]))  # confident, one class
        tensor(-0.7071)
    """
    check_logits(logits, "logits")
    with no_autocast(logits.device):
        p = F.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
        return -torch.linalg.svdvals(p).sum() / p.shape[0]
