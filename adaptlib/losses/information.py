r"""Source-free adaptation terms of SHOT: information maximisation and clustering pseudo-labels.

Reference:
    J. Liang, D. Hu, J. Feng. "Do We Really Need to Access the Source Data? Source Hypothesis
    Transfer for Unsupervised Domain Adaptation". ICML 2020 (Eqs. 2-6).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_features
from ._validate import check_logits, check_same_kind, compute_dtype, no_autocast

__all__ = ["information_maximization", "cluster_pseudo_labels"]


def information_maximization(logits: Tensor) -> Tensor:
    r"""Information-maximisation loss of a batch of (target) logits: mean entropy minus the
    entropy of the mean prediction.

    From Liang et al., "Do We Really Need to Access the Source Data?", ICML 2020 (Eqs. 2-3),
    for :math:`N` rows and :math:`C` classes:

    .. math::
        p_i = \mathrm{softmax}(z_i), \qquad \bar p = \frac1N \sum_i p_i, \qquad
        \mathcal L_{\mathrm{IM}} = \underbrace{\frac1N \sum_i H(p_i)}_{\mathcal L_{\mathrm{ent}}}
        \; \underbrace{- \, H(\bar p)}_{\mathcal L_{\mathrm{div}} = \sum_k \bar p_k \log \bar p_k},
        \qquad H(q) = -\sum_k q_k \log q_k \text{ (nats)}.

    Minimising it makes each prediction confident (low entropy) and the predictions diverse
    over the batch (high entropy of their mean: not all in one class). The value lies in
    :math:`[-\log C, \log C]`: :math:`-\log C` for confident predictions spread evenly over
    the classes, 0 for uniform predictions. The authors' code adds :math:`10^{-5}` inside the
    logarithms; this is the exact value (the per-row entropy from ``log_softmax``; the mean
    prediction's logarithm floored at the dtype's smallest normal number).

    Args:
        logits: ``(N, C)`` floating-point logits, ``N, C >= 1``. float16/bfloat16 are computed in
            float32 (outside autocast); float32 and float64 in their own dtype.

    Returns:
        Scalar tensor, differentiable w.r.t. ``logits``.

    Raises:
        TypeError: ``logits`` not a floating tensor.
        ValueError: ``logits`` not ``(N, C)`` or contains NaN/inf.

    Example::

        >>> information_maximization(torch.tensor([[50.0, 0.0], [0.0, 50.0]]))  # -log 2
        tensor(-0.6931)
        >>> information_maximization(torch.tensor([[50.0, 0.0], [50.0, 0.0]]))  # one class only
        tensor(0.)
    """
    check_logits(logits, "logits")
    with no_autocast(logits.device):
        log_p = F.log_softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
        log_p = log_p.clamp_min(torch.finfo(log_p.dtype).min)  # p = 0 rows: 0 * finite, not 0 * -inf
        p = log_p.exp()
        mean_entropy = -(p * log_p).sum(1).mean()
        p_bar = p.mean(0)
        diversity = (p_bar * p_bar.clamp_min(torch.finfo(p_bar.dtype).tiny).log()).sum()
        return mean_entropy + diversity


@torch.no_grad()
def cluster_pseudo_labels(features: Tensor, logits: Tensor, rounds: int = 1) -> Tensor:
    r"""SHOT's self-supervised pseudo-labels: nearest class centroid in feature space (cosine distance).

    From Liang et al., ICML 2020 (Eqs. 4-6) and the authors' ``obtain_label``. With features
    :math:`f_i` augmented by a constant 1 and L2-normalised, :math:`\hat f_i = [f_i, 1] / \|[f_i, 1]\|`,
    and :math:`p_i = \mathrm{softmax}(z_i)`:

    1. weighted centroids :math:`c_k = \sum_i p_{ik} \hat f_i / (\sum_i p_{ik} + 10^{-8})`;
    2. labels :math:`\hat y_i = \arg\min_{k \in K} d(\hat f_i, c_k)` with the cosine distance
       :math:`d(a, b) = 1 - a^\top b / (\|a\| \|b\|)`, over the classes
       :math:`K` that are the argmax of at least one prediction;
    3. ``rounds`` times (1 in the paper): centroids of the current labels,
       :math:`c_k = \sum_{i: \hat y_i = k} \hat f_i / (|\{i: \hat y_i = k\}| + 10^{-8})`, and step 2 again.

    Args:
        features: ``(M, F)`` features of every target sample (eval mode, no gradient).
        logits: ``(M, C)`` the classifier's logits for them; same dtype and device.
        rounds: k-means rounds after the weighted initialisation, ``>= 0``.

    Returns:
        ``(M,)`` int64 pseudo-labels in ``0..C-1``, on the inputs' device. Computed without gradient.

    Raises:
        TypeError: a non-floating input, dtypes differ, or ``rounds`` is not an integer.
        ValueError: shapes do not fit (``(M, F)`` and ``(M, C)``), NaN/inf, or ``rounds < 0``.

    Example::

        >>> f = torch.tensor([[5.0, 0.0], [4.0, 0.5], [0.0, 5.0], [0.5, 4.0]])
        >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # row 1 mislabelled
        >>> cluster_pseudo_labels(f, z)
        tensor([0, 0, 1, 1])
    """
    check_features(features, "features")
    check_logits(logits, "logits")
    check_same_kind([(features, "features"), (logits, "logits")])
    if logits.shape[0] != features.shape[0]:
        raise ValueError(f"features and logits must have the same number of rows M, got {features.shape[0]} and "
                         f"{logits.shape[0]}")
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise TypeError(f"rounds must be an integer >= 0, got {rounds!r}")
    if rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    dtype = compute_dtype(features.dtype)
    f = torch.cat([features.to(dtype), features.new_ones(features.shape[0], 1, dtype=dtype)], dim=1)
    f = f / f.norm(dim=1, keepdim=True)
    weights = F.softmax(logits.to(dtype), dim=1)  # (M, C)
    classes = torch.unique(weights.argmax(1))  # K: the classes some sample is predicted as

    def nearest(w: Tensor) -> Tensor:
        centroids = (w.t() @ f) / (w.sum(0)[:, None] + 1e-8)  # (C, F + 1)
        c = centroids[classes]
        cosine = (f @ c.t()) / c.norm(dim=1).clamp_min(torch.finfo(dtype).tiny)[None, :]
        return classes[cosine.argmax(1)]  # min cosine distance = max cosine similarity

    labels = nearest(weights)
    for _ in range(rounds):
        labels = nearest(F.one_hot(labels, weights.shape[1]).to(dtype))
    return labels
