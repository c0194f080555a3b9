"""MCD's classifier discrepancy and SHOT's information maximisation and pseudo-labels against
independent float64 references.

The discrepancy and the information-maximisation references are the papers' formulas written
with Python loops and ``math``; the pseudo-labels are checked against a NumPy transcription of
the authors' ``obtain_label`` that uses SciPy's ``cdist(..., "cosine")``, and against a known
answer on well-separated clusters.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from adaptlib.losses import classifier_discrepancy, cluster_pseudo_labels, information_maximization


def _logits(n, c, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g, dtype=torch.float64)


def _softmax_row(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


# ------------------------------------------------------------------ MCD
def discrepancy_reference(z1, z2):
    """Saito et al. 2018, Eq. 1, averaged over rows: (1/N) sum_i (1/C) sum_c |p1_ic - p2_ic|."""
    p1 = [_softmax_row(r) for r in z1.tolist()]
    p2 = [_softmax_row(r) for r in z2.tolist()]
    n, c = len(p1), len(p1[0])
    return sum(abs(p1[i][k] - p2[i][k]) for i in range(n) for k in range(c)) / (n * c)


@pytest.mark.parametrize("n,c", [(7, 3), (32, 10), (1, 4), (5, 2)])
def test_discrepancy_matches_loop_reference(n, c):
    z1, z2 = _logits(n, c, seed=n), _logits(n, c, seed=100 + c, scale=3.0)
    assert float(classifier_discrepancy(z1, z2)) == pytest.approx(discrepancy_reference(z1, z2), rel=1e-12)


def test_discrepancy_extremes_symmetry_and_gradcheck():
    z = _logits(6, 4, seed=1)
    assert float(classifier_discrepancy(z, z)) == 0.0
    assert float(classifier_discrepancy(z, z + 5.0)) == pytest.approx(0.0, abs=1e-15)  # softmax is shift-invariant
    one, other = torch.tensor([[80.0, 0, 0]], dtype=torch.float64), torch.tensor([[0, 80.0, 0]], dtype=torch.float64)
    assert float(classifier_discrepancy(one, other)) == pytest.approx(2 / 3)  # the maximum, 2 / C
    z2 = _logits(6, 4, seed=2)
    assert float(classifier_discrepancy(z, z2)) == float(classifier_discrepancy(z2, z))
    assert torch.autograd.gradcheck(classifier_discrepancy, (z.clone().requires_grad_(), z2.clone().requires_grad_()))
    assert classifier_discrepancy(z.to(torch.bfloat16), z2.to(torch.bfloat16)).dtype == torch.float32


# ------------------------------------------------------------------ SHOT: information maximisation
def im_reference(z):
    """Liang et al. 2020, Eqs. 2-3: mean_i H(p_i) + sum_k pbar_k log pbar_k."""
    p = [_softmax_row(r) for r in z.tolist()]
    n, c = len(p), len(p[0])
    ent = sum(-sum(q * math.log(q) for q in row if q > 0) for row in p) / n
    pbar = [sum(p[i][k] for i in range(n)) / n for k in range(c)]
    return ent + sum(q * math.log(q) for q in pbar if q > 0)


@pytest.mark.parametrize("n,c", [(7, 3), (32, 10), (1, 4), (64, 31)])
def test_information_maximization_matches_loop_reference(n, c):
    z = _logits(n, c, seed=n * c)
    assert float(information_maximization(z)) == pytest.approx(im_reference(z), rel=1e-12, abs=1e-14)


def test_information_maximization_extremes_and_gradcheck():
    c = 5
    confident_spread = 80.0 * torch.eye(c, dtype=torch.float64)
    assert float(information_maximization(confident_spread)) == pytest.approx(-math.log(c))  # the minimum
    assert float(information_maximization(confident_spread[[0, 0, 0]])) == pytest.approx(0.0, abs=1e-12)
    assert float(information_maximization(torch.zeros(4, c, dtype=torch.float64))) == pytest.approx(0.0, abs=1e-15)
    assert float(information_maximization(_logits(1, c))) == pytest.approx(0.0, abs=1e-15)  # one row: H(p) - H(p)
    assert torch.isfinite(information_maximization(torch.tensor([[0.0, 2000.0]], dtype=torch.float64)))
    z = _logits(6, 4, seed=9).requires_grad_()
    assert torch.autograd.gradcheck(information_maximization, (z,))
    assert information_maximization(z.detach().to(torch.float16)).dtype == torch.float32


# ------------------------------------------------------------------ SHOT: pseudo-labels
def obtain_label_reference(features, logits, rounds=1):
    """The authors' ``obtain_label`` (SHOT, image_target.py) in NumPy/SciPy, distance 'cosine', threshold 0."""
    f = np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    e = np.exp(logits - logits.max(1, keepdims=True))
    aff = e / e.sum(1, keepdims=True)
    k = aff.shape[1]
    initc = aff.T @ f / (1e-8 + aff.sum(0)[:, None])
    labelset = np.where(np.eye(k)[aff.argmax(1)].sum(0) > 0)[0]
    pred = labelset[cdist(f, initc[labelset], "cosine").argmin(1)]
    for _ in range(rounds):
        aff = np.eye(k)[pred]
        initc = aff.T @ f / (1e-8 + aff.sum(0)[:, None])
        pred = labelset[cdist(f, initc[labelset], "cosine").argmin(1)]
    return pred


@pytest.mark.parametrize("rounds", [0, 1, 3])
def test_pseudo_labels_match_the_authors_procedure(rounds, surf_small):
    """On real SURF features (amazon) and the logits of a random linear classifier of them."""
    x = surf_small[0].double()
    g = torch.Generator().manual_seed(rounds)
    logits = x @ torch.randn(x.shape[1], 10, generator=g, dtype=torch.float64) * 0.05
    ours = cluster_pseudo_labels(x, logits, rounds=rounds)
    ref = obtain_label_reference(x.numpy(), logits.numpy(), rounds)
    assert ours.dtype == torch.int64 and ours.shape == (x.shape[0],)
    assert ours.tolist() == ref.tolist()


def test_pseudo_labels_recover_separated_clusters_from_noisy_predictions():
    """Three clusters in three directions; the classifier is right on only 60 % of each: the
    clustering corrects the rest (the point of SHOT's pseudo-labels)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(3).repeat_interleave(40)
    noise = torch.randn(120, 3, generator=g, dtype=torch.float64)
    features = 5 * torch.eye(3, dtype=torch.float64)[truth] + 0.3 * noise
    noisy = truth.clone()
    flip = torch.rand(120, generator=g) < 0.4
    noisy[flip] = (truth[flip] + 1) % 3
    logits = 2.0 * torch.eye(3, dtype=torch.float64)[noisy]
    assert (noisy == truth).float().mean() < 0.7
    assert torch.equal(cluster_pseudo_labels(features, logits), truth)


BAD = [
    (classifier_discrepancy, (torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "same shape"),
    (classifier_discrepancy, (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)), TypeError, "dtype"),
    (classifier_discrepancy, (torch.zeros(3), torch.zeros(3)), ValueError, r"logits1 must have shape \(N, C\)"),
    (classifier_discrepancy, (torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 0.0]] * 2)), ValueError, "NaN"),
    (information_maximization, ([1.0, 2.0],), TypeError, "logits"),
    (information_maximization, (torch.zeros(0, 3),), ValueError, "logits"),
    (cluster_pseudo_labels, (torch.zeros(4, 2), torch.zeros(3, 3)), ValueError, "same number of rows"),
    (cluster_pseudo_labels, (torch.zeros(4, 2), torch.zeros(4, 3), -1), ValueError, "rounds"),
    (cluster_pseudo_labels, (torch.zeros(4, 2), torch.zeros(4, 3), 1.0), TypeError, "rounds"),
    (cluster_pseudo_labels, (torch.zeros(4, 2, dtype=torch.int64), torch.zeros(4, 3)), TypeError, "features"),
]


@pytest.mark.parametrize("fn,args,exc,match", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_errors_naming_the_argument(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)
