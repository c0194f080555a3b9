"""Path-specific tests of sinkhorn / sinkhorn_divergence (dense, tiled, Triton; issue 3).

References are independent of adaptlib: POT (ot.sinkhorn / ot.sinkhorn2 in float64,
log-domain, run to 1e-13, and ot.emd2) and float64 formulas written here. Triton runs under
TRITON_INTERPRET=1 on the CPU (set by conftest), so its cases are tiny (N <= 48, D <= 16) and
use large epsilon or warm starts to keep the iteration count low.

Tolerances: float64 paths agree with POT to 1e-9 relative (tol=1e-12); float32 paths with
the float64 reference to 1e-5 relative; half inputs (rounded to 3 significant digits) with the
float32 result of the same rounded points to 1e-4.
"""
import warnings

import numpy as np
import ot
import pytest
import torch

import adaptlib.kernels as kernels
from adaptlib.losses.sinkhorn import sinkhorn, sinkhorn_plan
from adaptlib.losses.sinkhorn_divergence import sinkhorn_divergence

# N, M not multiples of the blocks; N != M
N, M, D = 37, 29, 5
BLOCK = 16


def data(dtype=torch.float64, seed=0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randn(M, D, generator=g, dtype=torch.float64) * 1.3 + shift
    a = torch.rand(N, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(M, generator=g, dtype=torch.float64) + 0.2
    return x.to(dtype), y.to(dtype), (a / a.sum()).to(dtype), (b / b.sum()).to(dtype)


def pot_reference(x, y, a, b, eps):
    """POT float64 log-domain plan, <P, C> and the KL objective <P, C> + eps KL(P | a x b)."""
    xn, yn, an, bn = (t.detach().double().numpy() for t in (x, y, a, b))
    an, bn = an / an.sum(), bn / bn.sum()  # float32 weights cast to float64 do not sum to 1 exactly
    c = ot.dist(xn, yn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ot.sinkhorn(an, bn, c, reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
        tc = ot.sinkhorn2(an, bn, c, reg=eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
    ab = np.outer(an, bn)
    kl = np.sum(p * np.log(p / ab)) - p.sum() + 1.0
    return p, float(tc), float(np.sum(p * c) + eps * kl)


def self_ot_reference(x, a, eps, iters=3000):
    """OT_eps(a, a) in float64 numpy: averaged symmetric log-domain iterations (Feydy et al. 2019),
    f <- (f + T(f)) / 2, then the dual value 2 <a, f> (alternating POT iterations oscillate here)."""
    from scipy.special import logsumexp

    xn, an = x.detach().double().numpy(), a.detach().double().numpy()
    an = an / an.sum()
    c = ot.dist(xn, xn)
    f = np.zeros(len(an))
    for _ in range(iters):
        f = 0.5 * (f - eps * logsumexp(np.log(an)[None, :] + (f[None, :] - c) / eps, axis=1))
    return float(2 * an @ f)


def run(path, x, y, a=None, b=None, warm=True, **kw):
    """One solve on ``path``. Triton's interpreter is slow (~0.1 s a kernel call), so by
    default the Triton path starts from the dense path's potentials: it then runs only the
    iterations that confirm the fixed point with its own kernels (updates, marginals, cost
    and gradient moments are all Triton's); the iteration logic itself is shared with the
    tiled path, which is tested from zero potentials."""
    kw.setdefault("block_size", BLOCK)
    if path == "triton" and warm and "init" not in kw:
        dense_kw = {k: v for k, v in kw.items() if k != "block_size"}
        d = sinkhorn(x.detach(), y.detach(), a, b, path="dense", **dense_kw)
        kw["init"] = (d.f, d.g)
    return sinkhorn(x, y, a, b, path=path, **kw)


def grads(path, x, y, a, b, **kw):
    leaves = [t.detach().clone().requires_grad_() for t in (x, y, a, b)]
    res = run(path, *leaves, **kw)
    return res, torch.autograd.grad(res.value, leaves)


# ------------------------------------------------------------------ agreement with POT
def test_float64_matches_pot_with_tile_boundaries(kernel_path):
    x, y, a, b = data()
    eps = 1.0
    p_ref, tc_ref, val_ref = pot_reference(x, y, a, b, eps)
    res = run(kernel_path, x, y, a, b, epsilon=eps, tol=1e-12, max_iter=2000)
    assert res.converged and res.path == kernel_path and res.marginal_error < 1e-10
    assert float(res.value) == pytest.approx(val_ref, rel=1e-9)
    assert float(res.transport_cost) == pytest.approx(tc_ref, rel=1e-9)
    plan = sinkhorn_plan(x, y, res, a, b)
    np.testing.assert_allclose(plan.numpy(), p_ref, rtol=1e-7, atol=1e-14)
    if kernel_path == "dense":
        torch.testing.assert_close(res.plan, plan, rtol=1e-10, atol=1e-15)
    else:
        assert res.plan is None
    # a block of the plan
    blk = sinkhorn_plan(x, y, res, a, b, rows=slice(3, 20), cols=torch.tensor([0, 5, 28]))
    np.testing.assert_allclose(blk.numpy(), p_ref[3:20][:, [0, 5, 28]], rtol=1e-7, atol=1e-14)


def test_float32_matches_float64_reference(kernel_path):
    x, y, a, b = data(torch.float32, seed=1)
    _, tc_ref, val_ref = pot_reference(x, y, a, b, 0.5)
    res = run(kernel_path, x, y, a, b, epsilon=0.5, tol=1e-6)
    assert res.converged and res.value.dtype == torch.float32
    assert float(res.value) == pytest.approx(val_ref, rel=1e-5)
    assert float(res.transport_cost) == pytest.approx(tc_ref, rel=1e-5)


def test_small_epsilon_with_scaling_matches_emd(kernel_path):
    """eps = 2e-3 of costs up to ~20 with epsilon scaling on every path: the annealed
    potentials agree with the dense path and <P, C> approaches ot.emd2."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64)
    y = torch.randn(10, 2, generator=g, dtype=torch.float64) + 1.0
    exact = ot.emd2(np.full(12, 1 / 12), np.full(10, 1 / 10), ot.dist(x.numpy(), y.numpy()))
    if kernel_path == "triton":  # from zero potentials, few stages (interpreter)
        kw = dict(epsilon=0.5, scaling=0.2, tol=1e-5, max_iter=100)
        res = run(kernel_path, x, y, warm=False, **kw)
        ref = run("dense", x, y, **kw)
        assert res.converged and res.n_iter >= 3
        assert float(res.value) == pytest.approx(float(ref.value), rel=1e-5)
        return
    kw = dict(epsilon=2e-3, scaling=0.3, tol=1e-9, max_iter=300)
    res = run(kernel_path, x, y, **kw)
    ref = run("dense", x, y, **kw)
    assert res.converged and res.n_iter > 10  # annealing stages are counted
    assert float(res.transport_cost) == pytest.approx(float(ref.transport_cost), rel=1e-7)
    assert float(res.transport_cost) == pytest.approx(exact, rel=1e-3)
    plain = run(kernel_path, x, y, epsilon=2e-3, tol=1e-9, max_iter=res.n_iter)
    assert plain.marginal_error > res.marginal_error


# ------------------------------------------------------------------ gradients
def test_gradients_match_dense_and_float64_formula(kernel_path):
    x, y, a, b = data(seed=3)
    kw = dict(epsilon=0.8, tol=1e-12, max_iter=2000)
    res, (gx, gy, ga, gb) = grads(kernel_path, x, y, a, b, **kw)
    # independent float64 envelope formulas from POT's plan and the potentials
    p = torch.from_numpy(pot_reference(x, y, a, b, 0.8)[0])
    torch.testing.assert_close(gx, 2 * (p.sum(1, keepdim=True) * x - p @ y), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(gy, 2 * (p.sum(0).unsqueeze(1) * y - p.T @ x), rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ga, res.f - (a * res.f).sum(), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gb, res.g - (b * res.g).sum(), rtol=1e-8, atol=1e-10)
    # transport_cost: plan held fixed, same point gradient, none for the weights
    leaves = [t.detach().clone().requires_grad_() for t in (x, y)]
    r2 = run(kernel_path, *leaves, a, b, **kw)
    g2 = torch.autograd.grad(r2.transport_cost, leaves)
    torch.testing.assert_close(g2[0], gx, rtol=1e-7, atol=1e-10)


def test_divergence_paths_agree_with_pot(kernel_path):
    x, y, a, b = data(seed=4)
    x, y, a, b = x[:20], y[:17], a[:20] / a[:20].sum(), b[:17] / b[:17].sum()
    eps, tol, rel = (1.0, 1e-11, 1e-8) if kernel_path != "triton" else (6.0, 1e-6, 1e-6)
    expected = (
        pot_reference(x, y, a, b, eps)[2]
        - 0.5 * self_ot_reference(x, a, eps)
        - 0.5 * self_ot_reference(y, b, eps)
    )
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    v = sinkhorn_divergence(xl, yl, a, b, epsilon=eps, tol=tol, max_iter=2000, path=kernel_path, block_size=BLOCK)
    assert float(v) == pytest.approx(expected, rel=rel)
    gx, gy = torch.autograd.grad(v, (xl, yl))
    xd = x.clone().requires_grad_()
    vd = sinkhorn_divergence(xd, y, a, b, epsilon=eps, tol=tol, max_iter=2000, path="dense")
    (gxd,) = torch.autograd.grad(vd, xd)
    torch.testing.assert_close(gx, gxd, rtol=100 * rel, atol=1e-9)
    assert torch.isfinite(gy).all()


# ------------------------------------------------------------------ warm start, convergence
def test_warm_start_converges_at_once(kernel_path):
    x, y, a, b = data(seed=5)
    full = run(kernel_path if kernel_path != "triton" else "dense", x, y, a, b, epsilon=1.0, tol=1e-10, max_iter=2000)
    warm = run(kernel_path, x, y, a, b, epsilon=1.0, tol=1e-10, max_iter=2000, init=(full.f, full.g))
    assert full.converged and warm.converged and warm.n_iter <= 2
    assert float(warm.value) == pytest.approx(float(full.value), rel=1e-12)
    short = run(kernel_path, x, y, a, b, warm=False, epsilon=0.05, max_iter=2)
    assert not short.converged and short.n_iter == 2 and short.marginal_error > 1e-6


def test_non_finite_is_never_converged(kernel_path):
    x = torch.tensor([[1e19, 0.0], [0.0, 0.0]])  # squared distances overflow float32
    y = torch.tensor([[-1e19, 0.0], [1.0, 1.0], [0.5, 0.0]])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = run(kernel_path, x, y, warm=False, epsilon=1e-3)
    assert not res.converged


# ------------------------------------------------------------------ half precision, autocast
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(kernel_path, half):
    x, y, a, b = data(torch.float32, seed=6)
    xh, yh = x.to(half).requires_grad_(), y.to(half).requires_grad_()
    res = run(kernel_path, xh, yh, a.to(half), b.to(half), epsilon=0.5, tol=1e-6)
    assert res.value.dtype == torch.float32 and res.f.dtype == torch.float32 and res.converged
    gx, gy = torch.autograd.grad(res.value, (xh, yh))
    assert gx.dtype == half and gy.dtype == half
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    # same as float32 on the same (rounded) points and weights
    ref = run(kernel_path, xh.detach().float(), yh.detach().float(), a.to(half).float(), b.to(half).float(),
              epsilon=0.5, tol=1e-6)
    assert float(res.value) == pytest.approx(float(ref.value), rel=1e-4)
    if kernel_path != "triton":  # (the divergence on Triton: test_divergence_paths_agree_with_pot)
        v = sinkhorn_divergence(xh, yh, epsilon=0.5, path=kernel_path, block_size=BLOCK)
        assert v.dtype == torch.float32 and torch.isfinite(v)


def test_autocast_keeps_float32(kernel_path):
    x, y, a, b = data(torch.float32, seed=7)
    ref = run(kernel_path, x, y, a, b, epsilon=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = run(kernel_path, x, y, a, b, epsilon=0.5)
    assert res.value.dtype == torch.float32
    assert float(res.value) == pytest.approx(float(ref.value), rel=1e-6)


# ------------------------------------------------------------------ paths and errors
def test_path_errors_and_auto_choice(monkeypatch):
    x, y = torch.randn(6, 3), torch.randn(7, 3)
    c = torch.rand(6, 7)
    for p in ("tiled", "triton"):
        with pytest.raises(ValueError, match="cost= is only supported on path='dense'"):
            sinkhorn(None, None, cost=c, path=p)
    assert sinkhorn(None, None, cost=c, path="dense").plan.shape == (6, 7)
    with pytest.raises(ValueError, match="path"):
        sinkhorn(x, y, path="gpu")
    with pytest.raises(ValueError, match="path"):
        sinkhorn_divergence(x, y, path=3)
    with pytest.raises(ValueError, match="block_size"):
        sinkhorn(x, y, path="tiled", block_size=0)
    assert sinkhorn(x, y).path == "dense"  # small, CPU
    monkeypatch.setattr(kernels, "DENSE_MAX_BYTES", 100)
    res = sinkhorn(x, y)
    assert res.path == "tiled" and res.plan is None
    with pytest.raises(TypeError, match="result"):
        sinkhorn_plan(x, y, "not a result")
    with pytest.raises(ValueError, match="rows"):
        sinkhorn_plan(x[:5], y, res)


def test_tiled_block_sizes_agree():
    """Block sizes 5, 7 and larger than N give the same values (tile bookkeeping)."""
    x, y, a, b = data(seed=8)
    vals = [float(sinkhorn(x, y, a, b, epsilon=0.7, tol=1e-12, path="tiled", block_size=bs).value)
            for bs in (5, 7, 64)]
    assert vals[0] == pytest.approx(vals[1], rel=1e-12) and vals[0] == pytest.approx(vals[2], rel=1e-12)


def test_zero_weights_on_every_path(kernel_path):
    x, y, a, b = data(seed=9)
    a = a.clone()
    a[[0, 36]] = 0.0
    res = run(kernel_path, x, y, a, b, epsilon=1.0, tol=1e-11)
    _, tc_ref, val_ref = pot_reference(x[1:36], y, a[1:36] / a.sum(), b, 1.0)
    assert res.converged
    assert float(res.value) == pytest.approx(val_ref, rel=1e-9)
    assert float(sinkhorn_plan(x, y, res, a, b)[[0, 36]].abs().max()) == 0.0
