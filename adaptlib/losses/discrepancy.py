r"""The discrepancy between two classifiers' predictions, of Maximum Classifier Discrepancy (MCD).

Reference:
    K. Saito, K. Watanabe, Y. Ushiku, T. Harada. "Maximum Classifier Discrepancy for
    Unsupervised Domain Adaptation". CVPR 2018 (Eq. 1).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._validate import check_logits, check_same_kind, compute_dtype, no_autocast

__all__ = ["classifier_discrepancy"]


def classifier_discrepancy(logits1: Tensor, logits2: Tensor) -> Tensor:
    r"""Mean absolute difference of two classifiers' class probabilities (MCD's L1 discrepancy).

    From Saito et al., "Maximum Classifier Discrepancy for Unsupervised Domain Adaptation",
    CVPR 2018, Eq. 1, averaged over the batch:

    .. math::
        d(p_1, p_2) = \frac{1}{N}\sum_{i=1}^{N} \frac{1}{C}\sum_{c=1}^{C}
        \bigl|\mathrm{softmax}(z^{(1)}_i)_c - \mathrm{softmax}(z^{(2)}_i)_c\bigr|.

    It is 0 when the classifiers agree on every sample and at most :math:`2/C` (two one-hot
    predictions of different classes). MCD's classifiers maximise it on target samples, its
    feature generator minimises it.

    Args:
        logits1: ``(N, C)`` floating-point logits of the first classifier.
        logits2: ``(N, C)`` logits of the second classifier; same shape, dtype and device.
            float16/bfloat16 are computed in float32 (outside autocast); float32 and float64 in
            their own dtype.

    Returns:
        Scalar tensor, differentiable w.r.t. both inputs.

    Raises:
        TypeError: an input is not a floating tensor, or the dtypes differ.
        ValueError: shapes differ, are not ``(N, C)``, devices differ, or an input contains NaN/inf.

    Example::

        >>> classifier_discrepancy(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]]))
        tensor(1.)
    """
    check_logits(logits1, "logits1")
    check_logits(logits2, "logits2")
    if logits1.shape != logits2.shape:
        raise ValueError(f"logits1 and logits2 must have the same shape (N, C), got {tuple(logits1.shape)} and "
                         f"{tuple(logits2.shape)}")
    check_same_kind([(logits1, "logits1"), (logits2, "logits2")])
    with no_autocast(logits1.device):
        dtype = compute_dtype(logits1.dtype)
        p1 = F.softmax(logits1.to(dtype), dim=1)
        p2 = F.softmax(logits2.to(dtype), dim=1)
        return (p1 - p2).abs().mean()
