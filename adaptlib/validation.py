r"""Validators: choosing a model (method, hyper-parameters, checkpoint) without target labels.

In unsupervised domain adaptation the target labels are unknown, so the usual "pick the
model with the best validation accuracy" is not available on the target domain. A
*validator* is a score computed from what is available (labelled held-out source data,
unlabelled target data, and the model's features and class probabilities on both) that is
meant to rank models the way their target accuracy would. This module implements five of
them and the *oracle* (target accuracy with the target labels) against which they are
judged. Every score follows one sign convention: **higher is better**.

=====================  ===============================================================  =====================
name                   score (higher is better)                                         paper
=====================  ===============================================================  =====================
``source-accuracy``    accuracy on held-out source validation data                      --
``iwv``                importance-weighted source-validation accuracy                   Sugiyama et al., JMLR 2007
``dev``                minus the control-variate importance-weighted validation loss    You et al., ICML 2019
``snd``                soft neighbourhood density of the target predictions             Saito et al., ICCV 2021
``entropy``            minus the mean prediction entropy on the target                  Morerio et al., ICLR 2018
``oracle`` (apart)     target accuracy, with the target labels                          (upper bound)
=====================  ===============================================================  =====================

Target labels reach only :func:`oracle`: every validator and :func:`evaluate` raise
``ValueError`` when the target :class:`Predictions` carry labels (in the spirit of
skada's masking of target labels), so a selection rule cannot use them by accident.

All scores are computed on the CPU in float64 (inputs may be float32 or float64 on any
device); they are plain Python floats. The formulas, their sources and the tests that pin
them are described in ``docs/validation.md``.

The input contract (:class:`Predictions` and the argument checks) is in
:mod:`adaptlib._validation_inputs`; :class:`Predictions` is re-exported here.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, FrozenSet, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ._validation_inputs import (TARGET_LABELS_MESSAGE, Predictions, _check_float_matrix, _check_labels,
                                 _check_pair, _check_predictions, _check_unlabelled_target, _check_compatible,
                                 _check_weights, _f64)

__all__ = [
    "Predictions", "importance_weights", "VALIDATORS", "NEEDS_WEIGHTS", "oracle", "evaluate",
    "source_accuracy", "importance_weighted_accuracy", "deep_embedded_validation", "dev_risk",
    "soft_neighborhood_density", "snd_score", "neg_prediction_entropy", "validation_losses",
    "TARGET_LABELS_MESSAGE",
]

_SND_TEMPERATURE = 0.05
# Rows of the N x N target similarity matrix processed at once by SND (bounds memory to
# _SND_BLOCK * N float64 values).
_SND_BLOCK = 1024
# exp() of a log-weight beyond this overflows float64; importance weights are clamped to
# exp(+-_MAX_LOG_WEIGHT) so that they stay finite.
_MAX_LOG_WEIGHT = 700.0


# --------------------------------------------------------------------------------------
# Importance weights
# --------------------------------------------------------------------------------------
def importance_weights(source_features: Tensor, target_features: Tensor, query_features: Tensor, *,
                       seed: int = 0, C: float = 1.0, max_iter: int = 1000) -> Tensor:
    r"""Density ratio :math:`w(x) = p_T(x) / p_S(x)` at query points, from a domain classifier.

    A probabilistic classifier that tells target (:math:`d=1`) from source (:math:`d=0`)
    samples estimates :math:`P(d=1 \mid x)`; by Bayes' rule, with :math:`N_s` source and
    :math:`N_t` target training samples,

    .. math::
        w(x) = \frac{p_T(x)}{p_S(x)} = \frac{N_s}{N_t}\,\frac{P(d=1 \mid x)}{P(d=0 \mid x)}
             = \frac{N_s}{N_t}\,\exp\big(a^\top z(x) + b\big),

    where :math:`a^\top z + b` is the log-odds of an L2-regularised logistic regression
    (``sklearn.linear_model.LogisticRegression``, inverse regularisation ``C``) fitted on
    features standardised with the mean and standard deviation of the pooled source and
    target rows, :math:`z(x)`. This is the discriminative density-ratio estimator used
    for importance weighting by Sugiyama et al. (JMLR 2007, covariate shift) and by Deep
    Embedded Validation (You et al., ICML 2019, Eq. 5: the domain classifier on the
    learnt features, trained on the source *training* features vs the target features
    and evaluated at the source *validation* features). When the true log-ratio is linear
    in :math:`x` (e.g. two Gaussians with one covariance) the logistic model is well
    specified and the estimate is consistent.

    The weights are not normalised: their source mean is about 1 when the classifier is
    calibrated. Log-weights are clamped to :math:`[-700, 700]` so that every weight is a
    finite positive float64.

    Args:
        source_features: ``(N_s, D)`` float32/float64 source features (classifier training).
        target_features: ``(N_t, D)`` target features (classifier training), same ``D``.
        query_features: ``(N_q, D)`` features at which ``w`` is evaluated (e.g. the source
            validation features), same ``D``.
        seed: ``random_state`` of the logistic regression (the default lbfgs solver is
            deterministic; the seed only matters for randomised solvers).
        C: inverse L2 regularisation strength of the logistic regression (sklearn's ``C``).
        max_iter: iteration cap of the solver.

    Returns:
        ``(N_q,)`` float64 tensor of positive weights, on ``query_features``' device.

    Raises:
        TypeError: a features argument is not a float32/float64 tensor.
        ValueError: not ``(N, D)``, empty, NaN/inf, or different ``D`` (naming the argument);
            ``C`` or ``max_iter`` not positive.
    """
    from sklearn.linear_model import LogisticRegression

    xs = _check_float_matrix(source_features, "source_features", "(N_s, D)")
    xt = _check_float_matrix(target_features, "target_features", "(N_t, D)")
    xq = _check_float_matrix(query_features, "query_features", "(N_q, D)")
    for t, name in ((xt, "target_features"), (xq, "query_features")):
        if t.shape[1] != xs.shape[1]:
            raise ValueError(f"source_features and {name} must have the same feature dimension D, "
                             f"got {xs.shape[1]} and {t.shape[1]}")
    if not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise ValueError(f"C must be a finite positive number, got {C!r}")
    if not (isinstance(max_iter, int) and max_iter > 0):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    s, t, q = (_f64(a).numpy() for a in (xs, xt, xq))
    pooled = np.concatenate([s, t], axis=0)
    mean = pooled.mean(axis=0)
    std = pooled.std(axis=0)
    std[std <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0  # constant columns: leave unscaled
    x = (pooled - mean) / std
    d = np.concatenate([np.zeros(len(s)), np.ones(len(t))])
    clf = LogisticRegression(C=float(C), max_iter=max_iter, random_state=seed)
    clf.fit(x, d)
    # classes_ == [0, 1]: decision_function is the log-odds log P(d=1|x) / P(d=0|x).
    log_odds = clf.decision_function((q - mean) / std)
    log_w = np.clip(np.log(len(s) / len(t)) + log_odds, -_MAX_LOG_WEIGHT, _MAX_LOG_WEIGHT)
    return torch.from_numpy(np.exp(log_w)).to(query_features.device)


# --------------------------------------------------------------------------------------
# Building blocks on tensors
# --------------------------------------------------------------------------------------
def validation_losses(probs: Tensor, labels: Tensor) -> Tensor:
    r"""Per-sample cross-entropy :math:`\ell_i = -\log p_{i, y_i}` in nats, float64 ``(N,)``.

    A probability that underflowed to 0 is replaced by the smallest positive normal number
    of ``probs``' dtype (``torch.finfo(dtype).tiny``: 87.3 nats for float32, 708.4 for
    float64), so every loss is finite.

    Args:
        probs: ``(N, C)`` float32/float64 class probabilities.
        labels: ``(N,)`` integer class indices ``0..C-1``.
    """
    p = _check_float_matrix(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1], "labels").cpu()
    picked = _f64(p).gather(1, y[:, None]).squeeze(1)
    return -picked.clamp_min(torch.finfo(p.dtype).tiny).log()


def dev_risk(losses: Tensor, weights: Tensor) -> float:
    r"""DEV's control-variate estimate of the target risk from weighted validation losses.

    You et al. (ICML 2019), Algorithm 1: with per-sample validation losses :math:`\ell_i`
    and importance weights :math:`w_i` of the :math:`n` source validation samples,
    :math:`L_i = w_i \ell_i` and :math:`W_i = w_i`,

    .. math::
        \eta = -\frac{\widehat{\mathrm{Cov}}(L, W)}{\widehat{\mathrm{Var}}(W)}, \qquad
        \widehat R_{\mathrm{DEV}} = \overline{L} + \eta\,\overline{W} - \eta,

    with unbiased (``ddof=1``) sample covariance and variance. Since :math:`E_S[w] = 1`,
    :math:`\eta(\overline W - 1)` is a zero-mean control variate: it removes the part of
    :math:`\overline L`'s variance that is explained by how far the sampled weights' mean
    is from 1. When the weights are (numerically) constant, :math:`\mathrm{Var}(W) = 0`
    and :math:`\eta = 0` (no control variate: :math:`\widehat R = \overline{L}`); so with
    all-one weights the risk is the plain mean validation loss. With ``n = 1``, likewise
    :math:`\eta = 0`.

    **Degenerate weights.** The control variate is only valid if the weights' population
    mean is 1, and :math:`\eta` is only estimable if the weights vary. Two cases fall back
    to the self-normalised importance-weighted loss
    :math:`\sum_i w_i \ell_i / \sum_i w_i`, which lies in the range of the losses:

    * the sample mean :math:`\overline W` is outside ``[0.5, 2]``: the weights contradict
      :math:`E_S[w] = 1` and :math:`\eta(\overline W - 1)` would be an artefact of their
      scale (``[1e200, 1e-3]`` once overflowed, ``[1e160, 2e160, 1]`` gave NaN); a
      ``RuntimeWarning`` says so;
    * the weights are nearly constant (coefficient of variation below ``1e-3``): the
      control variate has nothing to act on and :math:`\eta` would be a ratio of rounding
      noise (``[.5, .5+1e-6, .5-1e-6, .5]`` once gave a risk of 62500 for losses below 1).
      With all-equal weights this is the plain mean loss.

    Weights of any finite magnitude (up to ``1e308``) are handled: they are first divided by
    a power of two (exactly) so that the largest is below 1, and :math:`\eta` does not
    depend on that scale.

    Args:
        losses: ``(n,)`` finite per-sample losses (any floating dtype).
        weights: ``(n,)`` finite non-negative importance weights with a positive sum (not
            normalised: DEV uses :math:`\overline W`).

    Returns:
        The estimated risk (float, the loss's units; lower is better; with weights of mean
        about 1 it can be slightly below ``min(losses)``, since the control variate is not
        bounded; by Cauchy-Schwarz it moves :math:`\overline L` by at most about
        :math:`(4/\sqrt n)\,\mathrm{sd}(L)`).

    Raises:
        TypeError: ``losses`` is not a 1-d floating tensor, or ``weights`` not a floating tensor.
        ValueError: empty or non-finite ``losses``; ``weights`` not ``(n,)``, negative,
            non-finite or summing to 0.

    Warns:
        RuntimeWarning: the weights' mean is outside ``[0.5, 2]``, contradicting
            :math:`E_S[w] = 1` (see above).
    """
    if not isinstance(losses, Tensor) or not losses.is_floating_point() or losses.dim() != 1:
        raise TypeError(f"losses must be a 1-d floating-point tensor (n,), got "
                        f"{losses.dtype if isinstance(losses, Tensor) else type(losses).__name__}")
    n = losses.shape[0]
    if n < 1:
        raise ValueError("losses must have at least one entry")
    loss = _f64(losses)
    if not bool(torch.isfinite(loss).all()):
        raise ValueError("losses contains NaN or inf")
    w = _check_weights(weights, n)
    # Exact rescaling by 2^-e (largest weight in [0.5, 1)): no square or product overflows.
    _, e = torch.frexp(w.max())
    ws = torch.ldexp(w, -e)
    mean_ws = ws.mean()
    mean_w = math.ldexp(float(mean_ws), int(e))
    var_ws = ((ws - mean_ws) ** 2).sum() / (n - 1) if n > 1 else torch.zeros((), dtype=ws.dtype)
    sd_w = math.ldexp(math.sqrt(float(var_ws)), int(e))
    far_from_one = not (0.5 <= mean_w <= 2.0)
    if far_from_one:
        warnings.warn(
            f"weights: importance weights with mean {mean_w:.4g} (sd {sd_w:.3g}, n={n}) contradict "
            "E_S[w] = 1, which DEV's control variate assumes (You et al., ICML 2019); the risk is "
            "the self-normalised importance-weighted loss instead",
            RuntimeWarning,
            stacklevel=2,
        )
    if far_from_one or n < 2 or sd_w <= 1e-3 * mean_w:
        risk = float((ws * loss).sum() / ws.sum())
        return min(max(risk, float(loss.min())), float(loss.max()))  # rounding stays in range
    big_l = ws * loss
    mean_l = big_l.mean()
    scale = math.ldexp(1.0, int(e))
    cov = ((big_l - mean_l) * (ws - mean_ws)).sum() / (n - 1)
    eta = float(-cov / var_ws)  # invariant to the common scale of the weights
    return float(mean_l) * scale + eta * (mean_w - 1.0)


def soft_neighborhood_density(probs: Tensor, temperature: float = _SND_TEMPERATURE) -> float:
    r"""Soft Neighbourhood Density of a set of class-probability vectors (Saito et al., ICCV 2021).

    With :math:`\hat p_i = p_i / \lVert p_i \rVert_2` (L2-normalised rows of ``probs``),
    similarities :math:`s_{ij} = \hat p_i^\top \hat p_j` for :math:`j \ne i` (the sample's
    similarity to itself is excluded), and the temperature-scaled softmax over each row,

    .. math::
        P_{ij} = \frac{\exp(s_{ij} / \tau)}{\sum_{k \ne i} \exp(s_{ik} / \tau)}, \qquad
        \mathrm{SND} = \frac{1}{N} \sum_{i=1}^{N} \Big( -\sum_{j \ne i} P_{ij} \log P_{ij} \Big),

    in nats, with :math:`\tau = 0.05` in the paper. High SND means each sample has many
    near neighbours of similar confidence: dense, well-separated clusters (the paper's
    criterion, higher is better). Values lie in :math:`[0, \log(N-1)]`.

    Notes: the authors' code and skada fill the diagonal with :math:`-1/\tau` instead of
    removing it; that differs from exact removal by a weight of at most
    :math:`e^{-1/\tau}/(N-1) \approx 2\cdot 10^{-9}/(N-1)` on the diagonal. The maximum
    :math:`\log(N-1)` is also reached when every prediction is *the same* vector (a
    collapsed model, e.g. uniform probabilities): SND cannot tell that from one perfect
    cluster, which is why it is read together with other validators.

    Args:
        probs: ``(N, C)`` float32/float64 class probabilities of the target, ``N >= 2``.
        temperature: :math:`\tau > 0`.

    Returns:
        The SND score (float, nats). Computed in float64 on the CPU in blocks of rows, so
        memory stays ``O(block * N)``.
    """
    p = _check_float_matrix(probs, "probs", "(N, C)")
    if p.shape[0] < 2:
        raise ValueError(f"probs needs at least 2 rows (SND compares each sample to its neighbours), "
                         f"got shape {tuple(p.shape)}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    x = _f64(p)
    norms = x.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("probs has an all-zero row; rows must be class probabilities")
    x = x / norms
    n = x.shape[0]
    total = 0.0
    for start in range(0, n, _SND_BLOCK):
        rows = torch.arange(start, min(start + _SND_BLOCK, n))
        logits = (x[rows] @ x.T) / temperature
        logits[torch.arange(rows.numel()), rows] = -math.inf
        log_p = torch.log_softmax(logits, dim=1)
        p_row = log_p.exp()
        # 0 * log 0 = 0 on the removed diagonal (and wherever a weight underflows).
        ent = -(p_row * log_p.clamp_min(torch.finfo(torch.float64).min)).sum(dim=1)
        total += float(ent.sum())
    return total / n


# --------------------------------------------------------------------------------------
# Validators: fn(source_val, target, weights) -> float, higher is better
# --------------------------------------------------------------------------------------
def _accuracy(probs: Tensor, labels: Tensor) -> Tensor:
    """``(N,)`` float64 indicator 1[argmax_c probs[i] == labels[i]] (ties: lowest index)."""
    return (probs.detach().cpu().argmax(dim=1) == labels.cpu()).to(torch.float64)


def source_accuracy(source_val: Predictions, target: Predictions, weights: Optional[Tensor] = None) -> float:
    r"""Accuracy on held-out labelled source data: :math:`\frac1n \sum_i 1[\hat y_i = y_i]`.

    The baseline validator: it assumes the source validation error tracks the target
    error, which domain shift breaks. ``target`` is only checked (no labels, same ``C``
    and ``D``); ``weights`` is ignored. Range ``[0, 1]``, higher is better.

    Raises:
        ValueError: ``target.labels`` is not None, ``source_val.labels`` is None, or
            ``source_val`` and ``target`` disagree on ``C`` or ``D``.
        TypeError: arguments are not :class:`Predictions`.
    """
    _check_pair(source_val, target, needs_source_labels=True)
    return float(_accuracy(source_val.probs, source_val.labels).mean())


def importance_weighted_accuracy(source_val: Predictions, target: Predictions,
                                 weights: Optional[Tensor]) -> float:
    r"""IWV: importance-weighted source-validation accuracy (Sugiyama, Krauledat, Müller, JMLR 2007).

    Under covariate shift (:math:`p(y|x)` shared), the target risk is a source expectation
    weighted by :math:`w(x) = p_T(x)/p_S(x)`. Importance Weighted Cross Validation
    ("Covariate Shift Adaptation by Importance Weighted Cross Validation", JMLR 8, 2007)
    estimates it on held-out source data. We score the accuracy (0-1 loss) in its
    self-normalised form

    .. math::
        \mathrm{IWV} = \frac{\sum_i w_i \, 1[\hat y_i = y_i]}{\sum_i w_i}
                     = 1 - \text{(weighted 0-1 validation error)},

    which stays in ``[0, 1]``, does not depend on the scale of the weights, and equals
    Sugiyama's :math:`\frac1n\sum_i w_i 1[\hat y_i = y_i]` when the weights average to 1.
    With all-one weights it is exactly ``source-accuracy``. Higher is better.

    Args:
        source_val: labelled source validation predictions (``n`` rows).
        target: unlabelled target predictions (only checked: no labels, same ``C``, ``D``).
        weights: ``(n,)`` finite non-negative importance weights of the ``source_val`` rows
            with a positive sum (e.g. from :func:`importance_weights`).

    Raises:
        ValueError: ``target.labels`` is not None, ``source_val.labels`` is None, ``weights``
            is None or not ``(n,)``, negative, non-finite or summing to 0.
    """
    _check_pair(source_val, target, needs_source_labels=True)
    w = _check_weights(weights, len(source_val))
    correct = _accuracy(source_val.probs, source_val.labels)
    return float((w * correct).sum() / w.sum())


def deep_embedded_validation(source_val: Predictions, target: Predictions, weights: Optional[Tensor]) -> float:
    r"""DEV: minus the Deep Embedded Validation risk (You, Wang, Long, Jordan, ICML 2019).

    "Towards Accurate Model Selection in Deep Unsupervised Domain Adaptation" estimates
    the target risk by the importance-weighted source-validation loss with a control
    variate (Algorithm 1), see :func:`dev_risk`:

    .. math::
        \begin{aligned}
        &\ell_i = -\log p_{i, y_i}, \quad L_i = w_i \ell_i, \quad W_i = w_i, \\
        &\eta = -\frac{\widehat{\mathrm{Cov}}(L, W)}{\widehat{\mathrm{Var}}(W)}, \quad
        \mathrm{score} = -\big(\overline{L} + \eta \overline{W} - \eta\big).
        \end{aligned}

    The loss is the cross-entropy of the predicted probabilities (nats). The score is
    *minus* the risk so that higher is better; with all-one weights it is minus the mean
    validation cross-entropy. Not bounded (the control variate can push the estimate
    below 0).

    Args:
        source_val: labelled source validation predictions (``n`` rows).
        target: unlabelled target predictions (only checked).
        weights: ``(n,)`` importance weights of the ``source_val`` rows, not normalised (DEV's
            control variate uses :math:`\overline W`, which is about 1 for calibrated weights).

    Raises:
        ValueError: as :func:`importance_weighted_accuracy`.
    """
    _check_pair(source_val, target, needs_source_labels=True)
    w = _check_weights(weights, len(source_val))
    losses = validation_losses(source_val.probs, source_val.labels)
    return -dev_risk(losses, w)


def snd_score(source_val: Predictions, target: Predictions, weights: Optional[Tensor] = None) -> float:
    r"""SND validator: :func:`soft_neighborhood_density` of ``target.probs`` with :math:`\tau = 0.05`.

    Saito, Kim, Teterwak, Sclaroff, Darrell, Saenko, "Tune it the Right Way: Unsupervised
    Validation of Domain Adaptation via Soft Neighborhood Density", ICCV 2021. Uses the
    target only; ``source_val`` is checked (same ``C``, ``D``) and ``weights`` ignored.
    Range :math:`[0, \log(N_t - 1)]`, higher is better (denser neighbourhoods).

    Raises:
        ValueError: ``target.labels`` is not None; the target has fewer than 2 rows.
    """
    _check_pair(source_val, target, needs_source_labels=False)
    return soft_neighborhood_density(target.probs, _SND_TEMPERATURE)


def neg_prediction_entropy(source_val: Predictions, target: Predictions, weights: Optional[Tensor] = None) -> float:
    r"""Entropy validator: minus the mean Shannon entropy of the target predictions (nats).

    .. math::
        \mathrm{score} = -\frac{1}{N_t} \sum_{i=1}^{N_t} H(p_i), \qquad
        H(p_i) = -\sum_{c} p_{ic} \log p_{ic} \quad (0 \log 0 = 0).

    Confident target predictions are taken as a sign of a good model: entropy minimisation
    as a criterion for unlabelled data goes back to Grandvalet & Bengio ("Semi-supervised
    Learning by Entropy Minimization", NeurIPS 2004), and Morerio, Cavazza, Murino
    ("Minimal-Entropy Correlation Alignment for Unsupervised Deep Domain Adaptation",
    ICLR 2018) use the target entropy to select the alignment weight without target
    labels. Range :math:`[-\log C, 0]`: 0 for one-hot predictions, :math:`-\log C` for
    uniform ones; higher is better. ``weights`` is ignored.

    Raises:
        ValueError: ``target.labels`` is not None.
    """
    _check_pair(source_val, target, needs_source_labels=False)
    p = _f64(target.probs)
    h = -torch.special.xlogy(p, p).sum(dim=1)
    return float(-h.mean())


Validator = Callable[[Predictions, Predictions, Optional[Tensor]], float]

#: The validators by name; each ``fn(source_val, target, weights) -> float``, higher is better.
VALIDATORS: Dict[str, Validator] = {
    "source-accuracy": source_accuracy,
    "iwv": importance_weighted_accuracy,
    "dev": deep_embedded_validation,
    "snd": snd_score,
    "entropy": neg_prediction_entropy,
}

#: Validators that need the importance weights of the source validation rows.
NEEDS_WEIGHTS: FrozenSet[str] = frozenset({"iwv", "dev"})


def oracle(target: Predictions, target_labels: Tensor) -> float:
    r"""Target accuracy :math:`\frac{1}{N_t}\sum_i 1[\hat y_i = y_i]` with the target labels.

    The upper bound a validator is compared against (the selection a method would get if
    target labels were available); report it apart from the validators. ``target.labels``
    may be None; if given it must equal ``target_labels``.

    Args:
        target: target predictions ``(N_t, C)``.
        target_labels: ``(N_t,)`` integer class indices ``0..C-1``.

    Returns:
        Accuracy in ``[0, 1]``.

    Raises:
        TypeError / ValueError: ``target_labels`` not an integer ``(N_t,)`` tensor with values
            in ``0..C-1``; ``target.labels`` given and different from ``target_labels``.
    """
    target = _check_predictions(target, "target")
    y = _check_labels(target_labels, len(target), target.num_classes, "target_labels")
    if target.labels is not None and not torch.equal(target.labels.cpu(), y.cpu()):
        raise ValueError("target.labels and target_labels differ; pass the target labels once, as target_labels")
    return float(_accuracy(target.probs, y).mean())


def evaluate(validators: Sequence[str], *, source_train: Predictions, source_val: Predictions,
             target: Predictions, seed: int = 0, weights: Optional[Tensor] = None) -> Dict[str, float]:
    r"""Score one model with several validators, computing the importance weights once.

    If any requested validator needs weights (``iwv``, ``dev``) and ``weights`` is None,
    :func:`importance_weights` is called once: its domain classifier is trained on
    ``source_train.features`` vs ``target.features`` and evaluated at
    ``source_val.features`` (DEV's protocol: the classifier never sees the rows it weights).

    Args:
        validators: names from :data:`VALIDATORS` (``"source-accuracy"``, ``"iwv"``,
            ``"dev"``, ``"snd"``, ``"entropy"``), no duplicates. The oracle is not a
            validator: call :func:`oracle`.
        source_train: source training predictions (only ``features`` are used).
        source_val: labelled held-out source predictions.
        target: unlabelled target predictions (``labels`` must be None).
        seed: passed to :func:`importance_weights`.
        weights: optional precomputed ``(len(source_val),)`` importance weights of the
            ``source_val`` rows (then no classifier is fitted).

    Returns:
        ``{name: score}`` in the order of ``validators``; every score is higher-is-better.

    Raises:
        ValueError: unknown or duplicate names (the message lists the known ones), empty
            ``validators``, ``target.labels`` not None, incompatible shapes.
        TypeError: a predictions argument is not a :class:`Predictions`.
    """
    if isinstance(validators, str):
        raise TypeError(f"validators must be a sequence of names, got the string {validators!r}; "
                        f"wrap it in a list: [{validators!r}]")
    names = list(validators)
    if not names:
        raise ValueError(f"validators must name at least one validator; known are {sorted(VALIDATORS)}")
    unknown = [v for v in names if v not in VALIDATORS]
    if unknown:
        hint = " (the oracle is computed apart, by oracle(target, target_labels))" if "oracle" in unknown else ""
        raise ValueError(f"validators: unknown {unknown}; known are {sorted(VALIDATORS)}{hint}")
    if len(set(names)) != len(names):
        raise ValueError(f"validators: duplicate names in {names}")
    target = _check_unlabelled_target(target)
    source_train = _check_predictions(source_train, "source_train")
    source_val = _check_predictions(source_val, "source_val")
    _check_compatible(source_val, target)
    if source_train.features.shape[1] != target.features.shape[1]:
        raise ValueError(f"source_train.features and target.features must have the same dimension D, "
                         f"got {source_train.features.shape[1]} and {target.features.shape[1]}")
    if any(v in NEEDS_WEIGHTS for v in names):
        if weights is None:
            weights = importance_weights(source_train.features, target.features, source_val.features, seed=seed)
        else:
            _check_weights(weights, len(source_val))
    return {v: float(VALIDATORS[v](source_val, target, weights)) for v in names}
