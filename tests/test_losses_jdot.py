"""Tests for adaptlib.losses.jdot against POT (ot.emd / ot.emd2 / ot.sinkhorn) and loops."""
import math
import warnings

import numpy as np
import ot
import pytest
import torch

from adaptlib.losses import JDOTResult, jdot



@pytest.fixture
def rng():
    return np.random.default_rng(0)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


def ref_costs(gs, gt, ys, logits_t):
    """Feature and label cost matrices with explicit loops (float64)."""
    n, m = len(gs), len(gt)
    feat = np.zeros((n, m))
    lab = np.zeros((n, m))
    for j in range(m):
        z = logits_t[j] - logits_t[j].max()
        log_p = z - math.log(np.exp(z).sum())
        for i in range(n):
            feat[i, j] = float(np.sum((gs[i] - gt[j]) ** 2))
            lab[i, j] = -log_p[ys[i]]
    return feat, lab


def make(rng, n=12, m=17, d=4, c=3):
    gs = rng.normal(size=(n, d))
    gt = rng.normal(size=(m, d)) + 0.5
    ys = rng.integers(0, c, size=n)
    lt = rng.normal(size=(m, c)) * 2
    return gs, gt, ys, lt


@pytest.mark.parametrize("alpha,lam", [(1.0, 1.0), (0.1, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_emd_matches_pot(rng, alpha, lam):
    gs, gt, ys, lt = make(rng)
    feat, lab = ref_costs(gs, gt, ys, lt)
    cost = alpha * feat + lam * lab
    a, b = np.full(12, 1 / 12), np.full(17, 1 / 17)
    expected = ot.emd2(a, b, cost)
    res = jdot(t64(gs), t64(gt), torch.tensor(ys), t64(lt), alpha=alpha, label_weight=lam)
    assert isinstance(res, JDOTResult)
    assert float(res.value) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the plan is an optimal coupling (compare costs: optimal plans need not be unique)
    p = res.plan.numpy()
    np.testing.assert_allclose(p.sum(1), a, atol=1e-12)
    np.testing.assert_allclose(p.sum(0), b, atol=1e-12)
    assert float(np.sum(p * cost)) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert float(res.feature_cost) == pytest.approx(alpha * float(np.sum(p * feat)), rel=1e-9, abs=1e-12)
    assert float(res.label_cost) == pytest.approx(lam * float(np.sum(p * lab)), rel=1e-9, abs=1e-12)
    assert not res.plan.requires_grad


def test_sinkhorn_solver_matches_pot(rng):
    gs, gt, ys, lt = make(rng)
    feat, lab = ref_costs(gs, gt, ys, lt)
    cost = 0.5 * feat + lab
    a, b = np.full(12, 1 / 12), np.full(17, 1 / 17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_ref = ot.sinkhorn(a, b, cost, reg=0.5, method="sinkhorn_log", stopThr=1e-13, numItermax=100000)
    res = jdot(t64(gs), t64(gt), torch.tensor(ys), t64(lt), alpha=0.5, solver="sinkhorn", epsilon=0.5)
    np.testing.assert_allclose(res.plan.numpy(), p_ref, atol=1e-6)
    assert float(res.value) == pytest.approx(float(np.sum(p_ref * cost)), rel=1e-5)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        jdot(t64(gs), t64(gt), torch.tensor(ys), t64(lt), solver="sinkhorn", epsilon=1e-3)


def test_gradients_hold_plan_fixed(rng):
    gs, gt, ys, lt = make(rng, n=6, m=8)
    xs, xt, lg = t64(gs).requires_grad_(), t64(gt).requires_grad_(), t64(lt).requires_grad_()
    res = jdot(xs, xt, torch.tensor(ys), lg, alpha=0.3)
    grads = torch.autograd.grad(res.value, (xs, xt, lg))
    # reference: the same cost written differently, multiplied by the (constant) plan
    p = res.plan
    feat = torch.cdist(xs, xt) ** 2
    lab = -torch.log_softmax(lg, 1)[:, torch.tensor(ys)].T
    ref = (p * (0.3 * feat + lab)).sum()
    ref_grads = torch.autograd.grad(ref, (xs, xt, lg))
    for g1, g2 in zip(grads, ref_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    # generic data: the EMD plan is locally constant, so finite differences agree
    fn = lambda u, v, w: jdot(u, v, torch.tensor(ys), w, alpha=0.3).value  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xs, xt, lg), eps=1e-7, atol=1e-6)


def test_different_sizes_float32_and_identical(rng):
    gs, gt, ys, lt = make(rng, n=20, m=64, d=8, c=5)
    res32 = jdot(t64(gs).float(), t64(gt).float(), torch.tensor(ys), t64(lt).float())
    res64 = jdot(t64(gs), t64(gt), torch.tensor(ys), t64(lt))
    assert res32.value.dtype == torch.float32 and res32.plan.shape == (20, 64)
    assert float(res32.value) == pytest.approx(float(res64.value), rel=1e-4)
    # identical embeddings and confident correct predictions: near-zero cost, finite grads
    x = t64(gs).requires_grad_()
    logits = (100.0 * torch.nn.functional.one_hot(torch.tensor(ys), 5).double()).requires_grad_()
    res = jdot(x, x.detach().clone(), torch.tensor(ys), logits)
    res.value.backward()
    assert float(res.value.detach()) < 1e-12
    assert torch.isfinite(x.grad).all() and torch.isfinite(logits.grad).all()
    zero = torch.zeros(4, 3, requires_grad=True)
    r0 = jdot(zero, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(4, 2))
    r0.value.backward()
    assert float(r0.value.detach()) == pytest.approx(math.log(2.0)) and torch.isfinite(zero.grad).all()


def test_bad_inputs_name_the_argument():
    gs, gt = torch.randn(5, 3), torch.randn(6, 3)
    ys, lt = torch.tensor([0, 1, 2, 0, 1]), torch.randn(6, 3)
    with pytest.raises(ValueError, match="source_labels"):
        jdot(gs, gt, torch.tensor([0, 1, 2, 0, 3]), lt)
    with pytest.raises(TypeError, match="source_labels"):
        jdot(gs, gt, ys.float(), lt)
    with pytest.raises(ValueError, match="source_labels"):
        jdot(gs, gt, ys[:4], lt)
    with pytest.raises(ValueError, match="target_logits"):
        jdot(gs, gt, ys, torch.randn(5, 3))
    with pytest.raises(TypeError, match="target_logits"):
        jdot(gs, gt, ys, lt.double())
    with pytest.raises(ValueError, match="target_logits"):
        jdot(gs, gt, ys, torch.full((6, 3), float("nan")))
    with pytest.raises(ValueError, match="target_features"):
        jdot(gs, torch.randn(6, 4), ys, lt)
    with pytest.raises(ValueError, match="source_features"):
        jdot(torch.randn(5), gt, ys, lt)
    with pytest.raises(ValueError, match="alpha"):
        jdot(gs, gt, ys, lt, alpha=-1.0)
    with pytest.raises(ValueError, match="label_weight"):
        jdot(gs, gt, ys, lt, label_weight=float("inf"))
    with pytest.raises(ValueError, match="solver"):
        jdot(gs, gt, ys, lt, solver="exact")
    with pytest.raises(ValueError, match="epsilon"):
        jdot(gs, gt, ys, lt, solver="sinkhorn", epsilon=0.0)
