"""Tests for adaptlib.losses.sinkhorn / sinkhorn_divergence against POT and finite differences."""
import warnings

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import cdist

from adaptlib.losses import SinkhornLoss, SinkhornResult, sinkhorn, sinkhorn_divergence
from adaptlib.losses.sinkhorn import sinkhorn_plan

SLOW_TRITON = (
    "cold solves to tol 1e-12 take minutes in Triton's interpreter; the Triton path is checked "
    "against POT with warm starts in tests/test_kernels_sinkhorn.py"
)


def skip_triton(path):
    if path == "triton":
        pytest.skip(SLOW_TRITON)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pot_plan(a, b, c, eps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ot.sinkhorn(a, b, c, reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)


def kl_ot_value(a, b, c, plan, eps):
    """<P, C> + eps KL(P | a x b), the objective sinkhorn() minimises, for a given plan."""
    ab = np.outer(a, b)
    mask = plan > 0
    kl = np.sum(plan[mask] * np.log(plan[mask] / ab[mask])) - plan.sum() + ab.sum()
    return float(np.sum(plan * c) + eps * kl)


# ------------------------------------------------------------------ agreement with POT
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_plan_and_cost_match_pot(rng, eps, kernel_path):
    skip_triton(kernel_path)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(17, 3)) + 0.5
    a, b = rng.uniform(0.2, 1.0, size=12), rng.uniform(0.2, 1.0, size=17)
    a, b = a / a.sum(), b / b.sum()
    c = cdist(x, y, "sqeuclidean")
    # POT regularises with -H(P); the optimal plan is the same as with KL(P | a x b)
    p_ref = pot_plan(a, b, c, eps)
    res = sinkhorn(t64(x), t64(y), t64(a), t64(b), epsilon=eps, tol=1e-12, max_iter=20000, path=kernel_path, block_size=8)
    assert isinstance(res, SinkhornResult) and res.converged and res.path == kernel_path
    assert res.marginal_error < 1e-10 and res.epsilon == eps
    plan = res.plan if kernel_path == "dense" else sinkhorn_plan(t64(x), t64(y), res, t64(a), t64(b))
    np.testing.assert_allclose(plan.numpy(), p_ref, rtol=1e-6, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cost_ref = ot.sinkhorn2(a, b, c, reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
    assert float(res.transport_cost) == pytest.approx(float(cost_ref), rel=1e-8)
    # strong duality: the dual value equals the primal KL objective at the plan
    assert float(res.value) == pytest.approx(kl_ot_value(a, b, c, p_ref, eps), rel=1e-8)
    # the potentials define the plan
    f, g = res.f.numpy(), res.g.numpy()
    np.testing.assert_allclose(np.outer(a, b) * np.exp((f[:, None] + g[None, :] - c) / eps), p_ref, rtol=1e-6, atol=1e-12)


def test_given_cost_without_points(rng):
    c = rng.uniform(0, 3, size=(6, 9))
    res = sinkhorn(None, None, epsilon=0.2, cost=t64(c), tol=1e-12, max_iter=10000)
    u6, u9 = np.full(6, 1 / 6), np.full(9, 1 / 9)
    np.testing.assert_allclose(res.plan.numpy(), pot_plan(u6, u9, c, 0.2), rtol=1e-6, atol=1e-12)
    # points, if given with a cost, only fix the sizes
    res2 = sinkhorn(torch.zeros(6, 2, dtype=torch.float64), None, epsilon=0.2, cost=t64(c), tol=1e-12, max_iter=10000)
    assert float(res2.value) == float(res.value)
    with pytest.raises(ValueError, match="source"):
        sinkhorn(torch.zeros(5, 2, dtype=torch.float64), None, cost=t64(c))
    with pytest.raises(ValueError, match="target"):
        sinkhorn(None, torch.zeros(5, 2, dtype=torch.float64), cost=t64(c))


def test_zero_weights_and_float32(rng, kernel_path):
    skip_triton(kernel_path)
    x, y = rng.normal(size=(8, 2)), rng.normal(size=(10, 2))
    a = np.array([0.0, 1, 1, 0, 1, 1, 1, 1])
    res = sinkhorn(t64(x), t64(y), t64(a), epsilon=0.5, tol=1e-10, path=kernel_path, block_size=3)
    plan = res.plan if kernel_path == "dense" else sinkhorn_plan(t64(x), t64(y), res, t64(a))
    assert res.converged and torch.all(plan[[0, 3]] == 0)
    r32 = sinkhorn(t64(x).float(), t64(y).float(), t64(a).float(), epsilon=0.5, path=kernel_path, block_size=3)
    assert r32.converged and r32.value.dtype == torch.float32
    assert float(r32.value) == pytest.approx(float(res.value), rel=1e-4)


# ------------------------------------------------------------------ gradients
def test_gradcheck_value_wrt_points(kernel_path):
    """Envelope gradient = true gradient at convergence (finite differences re-solve)."""
    skip_triton(kernel_path)
    torch.manual_seed(0)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda p, q: sinkhorn(p, q, epsilon=0.5, tol=1e-13, max_iter=10000, path=kernel_path, block_size=3).value  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_value_wrt_weights_and_cost():
    torch.manual_seed(1)
    c = (torch.rand(4, 5, dtype=torch.float64) * 2).requires_grad_()
    wa = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    wb = (torch.rand(5, dtype=torch.float64) + 0.5).requires_grad_()
    fn = lambda cc, p, q: sinkhorn(None, None, p, q, cost=cc, epsilon=0.3, tol=1e-13, max_iter=10000).value  # noqa: E731
    assert torch.autograd.gradcheck(fn, (c, wa, wb), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_envelope_gradient_form(rng, kernel_path):
    skip_triton(kernel_path)
    x = t64(rng.normal(size=(6, 3))).requires_grad_()
    y = t64(rng.normal(size=(7, 3)))
    a = t64(rng.uniform(0.5, 1.5, size=6)).requires_grad_()
    res = sinkhorn(x, y, a, epsilon=0.4, tol=1e-12, path=kernel_path, block_size=4)
    gx, ga = torch.autograd.grad(res.value, (x, a), retain_graph=True)
    p = res.plan if kernel_path == "dense" else sinkhorn_plan(x, y, res, a)
    expected = 2 * (p.sum(1, keepdim=True) * x.detach() - p @ y)  # sum_j P_ij * 2 (x_i - y_j)
    torch.testing.assert_close(gx, expected, rtol=1e-10, atol=1e-12)
    # weight gradient: centred potential, divided by the raw-weight total (normalisation)
    an = a.detach() / a.detach().sum()
    f_c = res.f - (an * res.f).sum()
    torch.testing.assert_close(ga, f_c / a.detach().sum(), rtol=1e-10, atol=1e-12)
    # transport_cost is differentiated with the plan held fixed
    (gc,) = torch.autograd.grad(res.transport_cost, x)
    torch.testing.assert_close(gc, expected)
    # backward does not unroll iterations: the graph is one custom node
    assert "Envelope" in type(res.value.grad_fn).__name__


# ------------------------------------------------------------------ convergence bookkeeping
def test_convergence_flags_and_warm_start(rng):
    x, y = t64(rng.normal(size=(15, 2))), t64(rng.normal(size=(20, 2)) + 1)
    short = sinkhorn(x, y, epsilon=0.05, max_iter=2)
    assert not short.converged and short.n_iter == 2 and short.marginal_error > 1e-6
    full = sinkhorn(x, y, epsilon=0.05, tol=1e-9, max_iter=20000)
    assert full.converged and full.marginal_error < 1e-8
    warm = sinkhorn(x, y, epsilon=0.05, tol=1e-9, max_iter=20000, init=(full.f, full.g))
    assert warm.converged and warm.n_iter <= 2
    assert float(warm.value) == pytest.approx(float(full.value), rel=1e-10)
    with pytest.raises(ValueError, match="init"):
        sinkhorn(x, y, init=(full.f[:3], full.g))


def test_non_finite_is_never_converged():
    # a constant cost near float32's limit is solved exactly (the initial potentials absorb it)
    res = sinkhorn(None, None, cost=torch.full((2, 3), 3e38), epsilon=1e-3)
    assert res.converged and float(res.value) == pytest.approx(3e38, rel=1e-6)
    c = torch.tensor([[3e38, -3e38, 1.0], [0.0, 3e38, -3e38]])  # C - f overflows float32
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = sinkhorn(None, None, cost=c, epsilon=1e-3)
    assert not res.converged
    # a tiny epsilon fools the log-domain stopping test; the plan guard catches it
    x, y = torch.randn(5, 2), torch.randn(6, 2)
    res = sinkhorn(x, y, epsilon=1e-30)
    assert not res.converged and res.marginal_error > 1e-3


# ------------------------------------------------------------------ Sinkhorn divergence
def test_divergence_matches_pot_reference(rng, kernel_path):
    skip_triton(kernel_path)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(14, 2)) + 0.7
    eps = 0.5
    ua, ub = rng.uniform(0.2, 1.0, size=10), rng.uniform(0.2, 1.0, size=14)
    ua, ub = ua / ua.sum(), ub / ub.sum()

    def ot_eps(p, q, u, v):
        c = cdist(p, q, "sqeuclidean")
        return kl_ot_value(u, v, c, pot_plan(u, v, c, eps), eps)

    expected = ot_eps(x, y, ua, ub) - 0.5 * ot_eps(x, x, ua, ua) - 0.5 * ot_eps(y, y, ub, ub)
    got = sinkhorn_divergence(t64(x), t64(y), t64(ua), t64(ub), epsilon=eps, tol=1e-12, max_iter=20000,
                              path=kernel_path, block_size=4)
    assert float(got) == pytest.approx(expected, rel=1e-7)
    assert float(got) > 0
    swapped = sinkhorn_divergence(t64(y), t64(x), t64(ub), t64(ua), epsilon=eps, tol=1e-12, max_iter=20000)
    assert float(swapped) == pytest.approx(float(got), rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_divergence_identical_clouds_zero_and_finite_gradients(rng, dtype):
    for data in (rng.normal(size=(20, 4)), np.zeros((20, 4)), np.full((1, 4), 5.0)):
        x = torch.tensor(data, dtype=dtype, requires_grad=True)
        v = sinkhorn_divergence(x, x.detach().clone())
        v.backward()
        assert float(v.detach()) == 0.0
        assert torch.isfinite(x.grad).all()


def test_divergence_near_identical_and_self_terms(rng):
    x = t64(rng.normal(size=(12, 3)))
    y = x + 1e-6 * t64(rng.normal(size=(12, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # must converge: no RuntimeWarning
        v = sinkhorn_divergence(x, y, epsilon=0.5, tol=1e-12, max_iter=100000)
    assert abs(float(v)) < 1e-9
    # the symmetric self-term solver agrees with the alternating solver on OT(a, a)
    from adaptlib.losses.sinkhorn_divergence import _self_ot
    self_val, ok = _self_ot(x, None, "source_weights", 0.5, 1000, 1e-12)
    alt = sinkhorn(x, x.clone(), epsilon=0.5, tol=1e-12, max_iter=50000)
    assert ok and alt.converged
    assert float(self_val) == pytest.approx(float(alt.value), rel=1e-9)


def test_divergence_nonnegative_and_sizes(rng):
    for _ in range(3):
        x = torch.tensor(rng.normal(size=(20, 3)))
        y = torch.tensor(rng.normal(size=(64, 3)) * rng.uniform(0.5, 2))
        assert float(sinkhorn_divergence(x, y, epsilon=0.5)) >= 0


def test_divergence_warns_when_not_converged(rng):
    x, y = t64(rng.normal(size=(10, 2))), t64(rng.normal(size=(12, 2)))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        sinkhorn_divergence(x, y, epsilon=0.01, max_iter=3)


def test_divergence_gradcheck(kernel_path):
    skip_triton(kernel_path)
    torch.manual_seed(2)
    x = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda p, q: sinkhorn_divergence(p, q, epsilon=0.5, tol=1e-13, max_iter=10000, path=kernel_path, block_size=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-7, rtol=1e-5)
    wa = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_()
    wb = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    fw = lambda p, q: sinkhorn_divergence(x.detach(), y.detach(), p, q, epsilon=0.5, tol=1e-13, max_iter=10000, path=kernel_path)  # noqa: E731
    assert torch.autograd.gradcheck(fw, (wa, wb), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------ module and errors
def test_module_and_errors():
    x, y = torch.randn(5, 3), torch.randn(6, 3)
    assert float(SinkhornLoss(epsilon=0.3)(x, y)) == float(sinkhorn(x, y, epsilon=0.3).value)
    with pytest.raises(ValueError, match="epsilon"):
        SinkhornLoss(epsilon=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(x, y, epsilon=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(x, y, epsilon=1e-40)  # not representable in float32
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(x, y, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(x, y, tol=-1.0)
    with pytest.raises(ValueError, match="source"):
        sinkhorn(torch.randn(5), y)
    with pytest.raises(ValueError, match="target"):
        sinkhorn(x, torch.randn(6, 2))
    with pytest.raises(ValueError, match="source"):
        sinkhorn(None, y)
    with pytest.raises(ValueError, match="source_weights"):
        sinkhorn(x, y, -torch.ones(5))
    with pytest.raises(ValueError, match="target_weights"):
        sinkhorn(x, y, None, torch.ones(5))
    with pytest.raises(ValueError, match="cost"):
        sinkhorn(None, None, cost=torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="target"):
        sinkhorn_divergence(x, torch.randn(6, 2))
