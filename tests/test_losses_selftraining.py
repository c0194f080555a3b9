"""MCC, BNM, SAFN/HAFN, CDAN's maps and loss, and MDD against independent float64 references.

Each reference is written from the paper's formula with plain Python loops and ``math`` (or a
different linear-algebra route: BNM's nuclear norm from the eigenvalues of A^T A instead of an
SVD), so it shares no code with the implementation.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from adaptlib.losses import (adaptive_feature_norm, batch_nuclear_norm, cdan_entropy_weights,
                             conditional_domain_adversarial, hard_feature_norm, margin_disparity_discrepancy,
                             minimum_class_confusion, multilinear_map, randomized_multilinear_map)


def _logits(n, c, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g, dtype=torch.float64)


def _softmax_row(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


# ------------------------------------------------------------------ MCC
def mcc_reference(z, temperature, weights=None):
    """Jin et al. 2020, Eqs. 1-6, with loops; ``weights`` fixes W instead of computing it."""
    z = z.tolist()
    n, c = len(z), len(z[0])
    p = [_softmax_row([v / temperature for v in row]) for row in z]
    h = [-sum(q * math.log(q) for q in row if q > 0) for row in p]
    raw = [1 + math.exp(-hi) for hi in h]
    w = [n * r / sum(raw) for r in raw] if weights is None else weights
    conf = [[sum(p[i][j] * w[i] * p[i][k] for i in range(n)) for k in range(c)] for j in range(c)]
    col = [sum(conf[j][k] for j in range(c)) for k in range(c)]
    norm = [[conf[j][k] / col[k] for k in range(c)] for j in range(c)]
    return sum(norm[j][k] for j in range(c) for k in range(c) if j != k) / c


@pytest.mark.parametrize("n,c,t", [(7, 3, 2.5), (16, 10, 1.0), (1, 4, 3.0), (5, 2, 0.5)])
def test_mcc_matches_loop_reference(n, c, t):
    z = _logits(n, c, seed=n + c)
    assert float(minimum_class_confusion(z, temperature=t)) == pytest.approx(mcc_reference(z, t), rel=1e-12, abs=1e-14)


def test_mcc_extremes_and_gradcheck():
    assert float(minimum_class_confusion(torch.zeros(6, 5, dtype=torch.float64))) == pytest.approx(4 / 5)
    one_hot = torch.tensor([[80.0, 0, 0], [0, 80.0, 0], [0, 0, 80.0]], dtype=torch.float64)
    assert float(minimum_class_confusion(one_hot, temperature=1.0)) == pytest.approx(0.0, abs=1e-12)
    # gradient: the entropy weights are detached (authors' code), so compare with central
    # differences of the reference with W held at its value at z
    z = _logits(6, 4, seed=3)
    p = torch.softmax(z / 2.5, 1)
    raw = 1 + torch.exp((p * p.log()).sum(1))
    w = (6 * raw / raw.sum()).tolist()
    zg = z.clone().requires_grad_()
    minimum_class_confusion(zg, 2.5).backward()
    eps = 1e-6
    for i in range(6):
        for j in range(4):
            up, down = z.clone(), z.clone()
            up[i, j] += eps
            down[i, j] -= eps
            numeric = (mcc_reference(up, 2.5, w) - mcc_reference(down, 2.5, w)) / (2 * eps)
            assert float(zg.grad[i, j]) == pytest.approx(numeric, abs=1e-8)


# ------------------------------------------------------------------ BNM
def test_bnm_matches_eigenvalue_reference():
    for n, c in ((8, 3), (3, 8), (32, 10), (1, 5)):
        z = _logits(n, c, seed=n * c)
        a = np.array([_softmax_row(row) for row in z.tolist()])
        small = a.T @ a if c <= n else a @ a.T  # the nonzero eigenvalues are the squared singular values
        nuclear = sum(math.sqrt(max(ev, 0.0)) for ev in np.linalg.eigvalsh(small))
        assert float(batch_nuclear_norm(z)) == pytest.approx(-nuclear / n, rel=1e-10)


def test_bnm_gradient_is_minus_uvt_over_n_through_softmax():
    z = _logits(9, 4, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(batch_nuclear_norm, (z,))
    # repeated rows (rank-deficient A) still give a finite gradient
    zr = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    batch_nuclear_norm(zr).backward()
    assert torch.isfinite(zr.grad).all()


# ------------------------------------------------------------------ SAFN / HAFN
def test_safn_value_and_hand_gradient():
    f = torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = adaptive_feature_norm(f, delta_r=0.7)
    assert float(loss.detach()) == pytest.approx(0.7 ** 2, rel=1e-14)
    loss.backward()
    # d/df_i of (1/N) sum (sg(|f_i|) + dr - |f_i|)^2 = -(2 dr / N) f_i / |f_i|; 0 for a zero row
    expected = [[-2 * 0.7 / 3 * 3 / 5, -2 * 0.7 / 3 * 4 / 5], [0.0, -2 * 0.7 / 3], [0.0, 0.0]]
    torch.testing.assert_close(f.grad, torch.tensor(expected, dtype=torch.float64))


def test_hafn_matches_loop_reference_and_gradcheck():
    f = _logits(6, 5, seed=2)
    norms = [math.sqrt(sum(v * v for v in row)) for row in f.tolist()]
    assert float(hard_feature_norm(f, radius=25.0)) == pytest.approx((sum(norms) / 6 - 25.0) ** 2, rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: hard_feature_norm(x, 3.0), (f.clone().requires_grad_(),))


# ------------------------------------------------------------------ CDAN
def test_multilinear_map_matches_outer_product_loops():
    f, g = _logits(4, 3, seed=4), _logits(4, 5, seed=5)
    out = multilinear_map(f, g)
    assert out.shape == (4, 15)
    for i in range(4):
        for c in range(5):
            for d in range(3):
                assert float(out[i, c * 3 + d]) == pytest.approx(float(g[i, c]) * float(f[i, d]), rel=1e-15)
    assert torch.autograd.gradcheck(multilinear_map, (f.requires_grad_(), g.requires_grad_()))


def test_randomized_map_matches_loops_and_preserves_inner_products_on_average():
    f, g = _logits(3, 4, seed=6), torch.softmax(_logits(3, 2, seed=7), 1)
    rf, rg = _logits(4, 6, seed=8, scale=1.0), _logits(2, 6, seed=9, scale=1.0)
    out = randomized_multilinear_map(f, g, rf, rg)
    for i in range(3):
        for k in range(6):
            a = sum(float(f[i, d]) * float(rf[d, k]) for d in range(4))
            b = sum(float(g[i, c]) * float(rg[c, k]) for c in range(2))
            assert float(out[i, k]) == pytest.approx(a * b / math.sqrt(6), rel=1e-12)
    # Theorem 1 of the paper: E<T(f,g), T(f',g')> = <f,f'><g,g'> for Gaussian R (here d large)
    gen = torch.Generator().manual_seed(0)
    d = 200_000
    big = randomized_multilinear_map(f[:2], g[:2], torch.randn(4, d, generator=gen, dtype=torch.float64),
                                     torch.randn(2, d, generator=gen, dtype=torch.float64))
    full = multilinear_map(f[:2], g[:2])
    assert float(big[0] @ big[1]) == pytest.approx(float(full[0] @ full[1]), abs=0.05 * float(full.norm(dim=1).prod()))


def test_cdan_entropy_weights_match_formula():
    z = _logits(5, 4, seed=10)
    for i, row in enumerate(z.tolist()):
        p = _softmax_row(row)
        h = -sum(q * math.log(q) for q in p)
        assert float(cdan_entropy_weights(z)[i]) == pytest.approx(1 + math.exp(-h), rel=1e-13)


@pytest.mark.parametrize("conditioning", [False, True])
def test_conditional_loss_matches_the_authors_normalisation(conditioning):
    """Long et al.'s code: w = w_s / sum(w_s) + w_t / sum(w_t); loss = sum(w * BCE) / sum(w)."""
    torch.manual_seed(0)
    disc = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    fs, ft = _logits(5, 4, seed=11), _logits(7, 4, seed=12)
    zs, zt = _logits(5, 3, seed=13), _logits(7, 3, seed=14)
    loss, _ = conditional_domain_adversarial(fs, ft, zs, zt, disc, 1.0, entropy_conditioning=conditioning)

    def weight(row):
        p = _softmax_row(row)
        return 1 + math.exp(-(-sum(q * math.log(q) for q in p))) if conditioning else 1.0

    terms = []
    for feats, logits, label in ((fs, zs, 1.0), (ft, zt, 0.0)):
        ws = [weight(row) for row in logits.tolist()]
        for i, (frow, zrow) in enumerate(zip(feats.tolist(), logits.tolist())):
            p = _softmax_row(zrow)
            h = torch.tensor([[p[c] * frow[d] for c in range(3) for d in range(4)]], dtype=torch.float64)
            with torch.no_grad():
                o = float(disc(h))
            prob = 1 / (1 + math.exp(-o))
            bce = -(label * math.log(prob) + (1 - label) * math.log(1 - prob))
            terms.append((ws[i] / sum(ws), bce))
    expected = sum(w * b for w, b in terms) / sum(w for w, _ in terms)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)


def test_conditional_loss_gradients_reverse_into_features_only():
    torch.manual_seed(0)
    disc = nn.Linear(8, 1).double()
    fs, ft = _logits(3, 4, seed=15).requires_grad_(), _logits(3, 4, seed=16).requires_grad_()
    zs, zt = _logits(3, 2, seed=17).requires_grad_(), _logits(3, 2, seed=18).requires_grad_()
    loss, _ = conditional_domain_adversarial(fs, ft, zs, zt, disc, 0.5, entropy_conditioning=True)
    gfs, gzs, gw = torch.autograd.grad(loss, (fs, zs, disc.weight), allow_unused=True)
    assert gzs is None  # predictions are detached (the authors' code)
    # the same loss without reversal: feature gradient must be -1/0.5 times the reversed one
    loss0, _ = conditional_domain_adversarial(fs, ft, zs, zt, disc, 0.0, entropy_conditioning=True)
    zero_fs, gw0 = torch.autograd.grad(loss0, (fs, disc.weight))
    assert float(zero_fs.abs().sum()) == 0.0
    torch.testing.assert_close(gw, gw0)
    with torch.no_grad():
        ws = cdan_entropy_weights(zs)
    plain = _plain_cdan_source_part(fs, zs, ws, disc)
    (g_plain,) = torch.autograd.grad(plain, fs)
    torch.testing.assert_close(gfs, -0.5 * g_plain)


def _plain_cdan_source_part(fs, zs, ws, disc):
    h = multilinear_map(fs, torch.softmax(zs.detach(), 1))
    return 0.5 * ((ws / ws.sum()) * nn.functional.softplus(-disc(h).squeeze(1))).sum()


def test_conditional_loss_with_random_matrices_uses_the_randomized_map():
    torch.manual_seed(0)
    disc = nn.Linear(6, 1).double()
    fs, ft, zs, zt = _logits(3, 4, seed=19), _logits(2, 4, seed=20), _logits(3, 2, seed=21), _logits(2, 2, seed=22)
    rf, rg = _logits(4, 6, seed=23, scale=1.0), _logits(2, 6, seed=24, scale=1.0)
    loss, _ = conditional_domain_adversarial(fs, ft, zs, zt, disc, 1.0, random_matrices=(rf, rg))
    hs = randomized_multilinear_map(fs, torch.softmax(zs, 1), rf, rg)
    ht = randomized_multilinear_map(ft, torch.softmax(zt, 1), rf, rg)
    with torch.no_grad():
        expected = 0.5 * (nn.functional.softplus(-disc(hs)).mean() + nn.functional.softplus(disc(ht)).mean())
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-12)


# ------------------------------------------------------------------ MDD
def mdd_reference(ys, ys_adv, yt, yt_adv, margin):
    """Zhang et al. 2019: mean_t log(1 - softmax(h'_t)[argmax h_t]) - margin * mean_s CE(h'_s, argmax h_s)."""
    src = 0.0
    for h, ha in zip(ys.tolist(), ys_adv.tolist()):
        y = max(range(len(h)), key=lambda c: h[c])
        src += -math.log(_softmax_row(ha)[y])
    tgt = 0.0
    for h, ha in zip(yt.tolist(), yt_adv.tolist()):
        y = max(range(len(h)), key=lambda c: h[c])
        tgt += math.log(1 - _softmax_row(ha)[y])
    return tgt / len(yt) - margin * src / len(ys)


@pytest.mark.parametrize("margin", [1.0, 4.0])
def test_mdd_matches_loop_reference(margin):
    args = _logits(6, 5, seed=30), _logits(6, 5, seed=31), _logits(4, 5, seed=32), _logits(4, 5, seed=33)
    value = margin_disparity_discrepancy(*args, margin=margin)
    assert float(value) == pytest.approx(mdd_reference(*args, margin), rel=1e-12)


def test_mdd_gradients_reach_only_the_adversarial_logits_and_gradcheck():
    ys, yt = _logits(5, 3, seed=34).requires_grad_(), _logits(4, 3, seed=35).requires_grad_()
    ysa, yta = _logits(5, 3, seed=36).requires_grad_(), _logits(4, 3, seed=37).requires_grad_()
    value = margin_disparity_discrepancy(ys, ysa, yt, yta)
    g = torch.autograd.grad(value, (ys, ysa, yt, yta), allow_unused=True)
    assert g[0] is None and g[2] is None
    assert torch.autograd.gradcheck(lambda a, b: margin_disparity_discrepancy(ys, a, yt, b, margin=2.0),
                                    (ysa, yta))
    # confident agreement on the target would be log(0) with a naive formula; here it stays finite
    h = torch.tensor([[0.0, 200.0]], dtype=torch.float64)
    assert torch.isfinite(margin_disparity_discrepancy(h, h, h, h))


# ------------------------------------------------------------------ dtypes and bad inputs
def test_half_inputs_compute_in_float32():
    z = _logits(6, 3, seed=40).to(torch.bfloat16)
    for fn in (minimum_class_confusion, batch_nuclear_norm, adaptive_feature_norm,
               lambda x: hard_feature_norm(x, 2.0), lambda x: margin_disparity_discrepancy(x, x, x, x)):
        assert fn(z).dtype == torch.float32
    assert minimum_class_confusion(z.float()).dtype == torch.float32
    assert batch_nuclear_norm(z.double()).dtype == torch.float64


BAD = [
    (minimum_class_confusion, ([1.0, 2.0],), TypeError, "logits"),
    (minimum_class_confusion, (torch.zeros(3, dtype=torch.float64),), ValueError, r"logits must have shape \(N, C\)"),
    (minimum_class_confusion, (torch.zeros(2, 3, dtype=torch.int64),), TypeError, "logits"),
    (minimum_class_confusion, (torch.tensor([[0.0, float("nan")]]),), ValueError, "NaN"),
    (minimum_class_confusion, (torch.zeros(2, 3), 0.0), ValueError, "temperature"),
    (minimum_class_confusion, (torch.zeros(2, 3), None), TypeError, "temperature"),
    (batch_nuclear_norm, (torch.zeros(0, 3),), ValueError, "logits"),
    (adaptive_feature_norm, (torch.zeros(2, 3), -1.0), ValueError, "delta_r"),
    (adaptive_feature_norm, (torch.zeros(2, 3, 1),), ValueError, r"features must have shape \(N, D\)"),
    (hard_feature_norm, (torch.zeros(2, 3), float("inf")), ValueError, "radius"),
    (multilinear_map, (torch.zeros(2, 3), torch.zeros(3, 2)), ValueError, "same number of rows"),
    (multilinear_map, (torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.float64)), TypeError, "dtype"),
    (randomized_multilinear_map, (torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(4, 5), torch.zeros(2, 5)),
     ValueError, "random_features"),
    (randomized_multilinear_map, (torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(3, 5), torch.zeros(2, 4)),
     ValueError, "same number of columns"),
    (cdan_entropy_weights, ("x",), TypeError, "logits"),
    (margin_disparity_discrepancy, (torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1)),
     ValueError, "source_logits needs at least 2"),
    (margin_disparity_discrepancy, (torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(2, 3), torch.zeros(2, 3)),
     ValueError, "source_adv_logits"),
    (margin_disparity_discrepancy, (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)),
     ValueError, "target_logits"),
    (margin_disparity_discrepancy, (torch.zeros(2, 3),) * 4 + (0.0,), ValueError, "margin"),
]


@pytest.mark.parametrize("fn,args,exc,match", BAD, ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)])
def test_bad_inputs_raise_errors_naming_the_argument(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_conditional_loss_bad_inputs():
    disc = nn.Linear(6, 1)
    f, z = torch.zeros(2, 3), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="same number of classes"):
        conditional_domain_adversarial(f, f, z, torch.zeros(2, 3), disc, 1.0)
    with pytest.raises(ValueError, match="target_features and target_logits"):
        conditional_domain_adversarial(f, torch.zeros(3, 3), z, z, disc, 1.0)
    with pytest.raises(TypeError, match="random_matrices"):
        conditional_domain_adversarial(f, f, z, z, disc, 1.0, random_matrices=torch.zeros(3, 6))
    with pytest.raises(ValueError, match="coefficient"):
        conditional_domain_adversarial(f, f, z, z, disc, -1.0)
