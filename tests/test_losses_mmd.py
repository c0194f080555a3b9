"""Tests for adaptlib.losses.mmd / jmmd / gaussian_bandwidths.

References are written independently of the implementation: float64 numpy with explicit
Python loops over pairs and scipy's cdist/pdist, no Gram-matrix expansion. Gradients are
checked against torch autograd of a float64 formula built from explicit pairwise differences.
The value/gradient tests run on every computation path (``kernel_path`` fixture: dense,
tiled, triton; Triton through its CPU interpreter, hence the small batches).
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from adaptlib.losses import JMMDLoss, MMDLoss, gaussian_bandwidths, jmmd, mmd

MULTS = (0.25, 0.5, 1.0, 2.0, 4.0)



# ------------------------------------------------------------------ reference implementation
def ref_kernel(x, y, sigmas, betas):
    d2 = cdist(x, y, "sqeuclidean")
    return sum(bt * np.exp(-d2 / (2.0 * s * s)) for s, bt in zip(sigmas, betas))


def ref_lower_median(values):
    v = np.sort(np.asarray(values, dtype=np.float64))
    return v[(len(v) - 1) // 2]


def ref_sigmas(z, heuristic, mults):
    d = pdist(z)  # all pairs i < j
    h = ref_lower_median(d) if heuristic == "median" else d.mean()
    return [m * h for m in mults]


def ref_mmd(x, y, sigmas, betas=None, estimator="biased", a=None, b=None):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, m = len(x), len(y)
    betas = np.full(len(sigmas), 1.0 / len(sigmas)) if betas is None else np.asarray(betas) / np.sum(betas)
    a = np.full(n, 1.0 / n) if a is None else np.asarray(a, dtype=np.float64) / np.sum(a)
    b = np.full(m, 1.0 / m) if b is None else np.asarray(b, dtype=np.float64) / np.sum(b)
    kxx, kyy, kxy = ref_kernel(x, x, sigmas, betas), ref_kernel(y, y, sigmas, betas), ref_kernel(x, y, sigmas, betas)
    if estimator == "biased":
        total = 0.0
        for i in range(n):
            for j in range(n):
                total += a[i] * a[j] * kxx[i, j]
        for i in range(m):
            for j in range(m):
                total += b[i] * b[j] * kyy[i, j]
        for i in range(n):
            for j in range(m):
                total -= 2.0 * a[i] * b[j] * kxy[i, j]
        return total
    if estimator == "unbiased":
        sxx = sum(a[i] * a[j] * kxx[i, j] for i in range(n) for j in range(n) if i != j)
        syy = sum(b[i] * b[j] * kyy[i, j] for i in range(m) for j in range(m) if i != j)
        sxy = sum(a[i] * b[j] * kxy[i, j] for i in range(n) for j in range(m))
        return sxx / (1.0 - np.sum(a * a)) + syy / (1.0 - np.sum(b * b)) - 2.0 * sxy
    raise ValueError(estimator)


def ref_linear(x, y, sigmas):
    """Gretton et al. 2012, Lemma 14, literal loop over disjoint pairs."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    betas = np.full(len(sigmas), 1.0 / len(sigmas))

    def k(u, v):
        d2 = float(np.sum((u - v) ** 2))
        return sum(bt * math.exp(-d2 / (2 * s * s)) for s, bt in zip(sigmas, betas))

    p = len(x) // 2
    total = 0.0
    for i in range(p):
        x1, x2, y1, y2 = x[2 * i], x[2 * i + 1], y[2 * i], y[2 * i + 1]
        total += k(x1, x2) + k(y1, y2) - k(x1, y2) - k(x2, y1)
    return total / p


def ref_linear_sigmas(x, y, mults, heuristic="median"):
    p = len(x) // 2
    d = []
    for i in range(p):
        x1, x2, y1, y2 = x[2 * i], x[2 * i + 1], y[2 * i], y[2 * i + 1]
        d += [np.linalg.norm(x1 - x2), np.linalg.norm(y1 - y2), np.linalg.norm(x1 - y2), np.linalg.norm(x2 - y1)]
    h = ref_lower_median(d) if heuristic == "median" else float(np.mean(d))
    return [mm * h for mm in mults]


def torch_ref_mmd(x, y, sigmas, betas=None, estimator="biased", a=None, b=None):
    """Differentiable float64 reference from explicit differences (no Gram expansion)."""
    n, m = x.shape[0], y.shape[0]
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    betas = torch.full((len(sig),), 1.0 / len(sig), dtype=torch.float64) if betas is None else betas / betas.sum()
    a = torch.full((n,), 1.0 / n, dtype=torch.float64) if a is None else a / a.sum()
    b = torch.full((m,), 1.0 / m, dtype=torch.float64) if b is None else b / b.sum()

    def k(u, v):
        d2 = ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        return sum(bt * torch.exp(-d2 / (2 * s * s)) for s, bt in zip(sig, betas))

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if estimator == "biased":
        return a @ kxx @ a + b @ kyy @ b - 2 * a @ kxy @ b
    offx = 1 - torch.eye(n, dtype=torch.float64)
    offy = 1 - torch.eye(m, dtype=torch.float64)
    return (a @ (kxx * offx) @ a / (1 - (a * a).sum()) + b @ (kyy * offy) @ b / (1 - (b * b).sum())
            - 2 * a @ kxy @ b)


def path_kw(path):
    """Options of one path: small tiles so that several tiles and boundaries are exercised."""
    return {"path": path, "block_size": {"dense": None, "tiled": 8, "triton": 16}[path]}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


# ------------------------------------------------------------------ values vs reference
@pytest.mark.parametrize("heuristic", ["median", "mean"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_matches_reference_heuristic_bandwidths(rng, heuristic, estimator, kernel_path):
    x = rng.normal(size=(20, 5))
    y = rng.normal(size=(27, 5)) * 1.5 + 0.3
    sig = ref_sigmas(np.vstack([x, y]), heuristic, MULTS)
    expected = ref_mmd(x, y, sig, estimator=estimator)
    got = mmd(t64(x), t64(y), heuristic=heuristic, estimator=estimator, **path_kw(kernel_path))
    assert got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_gaussian_bandwidths_matches_reference(rng):
    z = rng.normal(size=(30, 4))
    sq = t64(cdist(z, z, "sqeuclidean"))
    for heuristic in ("median", "mean"):
        got = gaussian_bandwidths(sq, heuristic, (0.5, 1.0, 3.0))
        np.testing.assert_allclose(got.numpy(), ref_sigmas(z, heuristic, (0.5, 1.0, 3.0)), rtol=1e-12)
    # 1-d input: every entry is used
    d = rng.uniform(1, 2, size=7) ** 2
    got = gaussian_bandwidths(t64(d), "median", (1.0,))
    assert float(got) == pytest.approx(math.sqrt(np.sort(d)[3]))


def test_gaussian_bandwidths_floor_and_errors():
    zero = torch.zeros(5, 5)
    sig = gaussian_bandwidths(zero, "median", MULTS)
    assert torch.all(sig > 0) and torch.all(torch.isfinite(1.0 / (2 * sig * sig)))
    with pytest.raises(ValueError, match="sq_dists"):
        gaussian_bandwidths(torch.zeros(1, 1))
    with pytest.raises(ValueError, match="sq_dists"):
        gaussian_bandwidths(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="heuristic"):
        gaussian_bandwidths(zero, "mode")
    with pytest.raises(ValueError, match="multipliers"):
        gaussian_bandwidths(zero, "median", ())


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_weights_match_reference(rng, estimator, kernel_path):
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(9, 3)) + 0.5
    a, b = rng.uniform(0.1, 2.0, size=12), rng.uniform(0.1, 2.0, size=9)
    kw = rng.uniform(0.0, 1.0, size=3)
    sig = [0.5, 1.0, 2.5]
    expected = ref_mmd(x, y, sig, betas=kw, estimator=estimator, a=a, b=b)
    got = mmd(t64(x), t64(y), bandwidths=sig, estimator=estimator, source_weights=t64(a),
              target_weights=t64(b), kernel_weights=t64(kw), **path_kw(kernel_path))
    assert float(got) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("bandwidths", [None, [0.6, 1.1, 2.5]])
def test_gradients_match_reference(rng, estimator, bandwidths, kernel_path):
    """Gradients w.r.t. features, sample weights and kernel weights on every path agree with
    autograd of the explicit-difference float64 formula (data-driven and explicit bandwidths;
    power-of-two ratios use repeated squaring, the explicit ones one exponential each)."""
    x = t64(rng.normal(size=(13, 4))).requires_grad_()
    y = t64(rng.normal(size=(10, 4)) + 0.4).requires_grad_()
    a = t64(rng.uniform(0.2, 2.0, size=13)).requires_grad_()
    b = t64(rng.uniform(0.2, 2.0, size=10)).requires_grad_()
    kw = t64(rng.uniform(0.1, 1.0, size=3 if bandwidths else 5)).requires_grad_()
    z = torch.cat([x, y]).detach().numpy()
    sig = bandwidths if bandwidths else ref_sigmas(z, "median", MULTS)
    ref = torch_ref_mmd(x, y, sig, kw, estimator, a, b)
    got = mmd(x, y, bandwidths=bandwidths, estimator=estimator, source_weights=a, target_weights=b,
              kernel_weights=kw, **path_kw(kernel_path))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    for g, r in zip(torch.autograd.grad(got, (x, y, a, b, kw)), torch.autograd.grad(ref, (x, y, a, b, kw))):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_unbiased_uniform_is_exact_u_statistic(rng, kernel_path):
    x, y = rng.normal(size=(7, 2)), rng.normal(size=(5, 2))
    s = 1.3
    k = lambda u, v: math.exp(-np.sum((u - v) ** 2) / (2 * s * s))  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / 35
    got = mmd(t64(x), t64(y), bandwidths=[s], estimator="unbiased", **path_kw(kernel_path))
    assert float(got) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


@pytest.mark.parametrize("heuristic", ["median", "mean"])
def test_linear_matches_reference_equal_sizes(rng, heuristic):
    x, y = rng.normal(size=(21, 4)), rng.normal(size=(21, 4)) + 0.7  # odd: last row unused
    sig = ref_linear_sigmas(x, y, MULTS, heuristic)
    got = mmd(t64(x), t64(y), estimator="linear", heuristic=heuristic)
    assert float(got) == pytest.approx(ref_linear(x, y, sig), rel=1e-10)
    got_fixed = mmd(t64(x), t64(y), estimator="linear", bandwidths=[1.0, 2.0])
    assert float(got_fixed) == pytest.approx(ref_linear(x, y, [1.0, 2.0]), rel=1e-10)


def test_linear_unequal_sizes_subsamples_at_random(rng):
    x, y = t64(rng.normal(size=(20, 3))), t64(rng.normal(size=(64, 3)))
    v = lambda seed: float(mmd(x, y, estimator="linear", generator=torch.Generator().manual_seed(seed)))  # noqa: E731
    assert v(1) == v(1)
    values = {v(s) for s in range(5)}
    assert len(values) > 1, "different seeds must give different subsamples"
    # it is the documented subsample: randperm of each side, first min(N, M) rows
    g = torch.Generator().manual_seed(3)
    ix = torch.randperm(20, generator=g)[:20]
    iy = torch.randperm(64, generator=g)[:20]
    xs, ys = x[ix].numpy(), y[iy].numpy()
    assert v(3) == pytest.approx(ref_linear(xs, ys, ref_linear_sigmas(xs, ys, MULTS)), rel=1e-10)
    # not simply the first rows of the target
    first = ref_linear(x.numpy()[ix.numpy()], y.numpy()[:20], [1.0])
    assert float(mmd(x, y, estimator="linear", bandwidths=[1.0], generator=torch.Generator().manual_seed(3))) != pytest.approx(first)
    # works without a generator too
    assert torch.isfinite(mmd(x, y, estimator="linear"))


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
def test_gradcheck_fixed_bandwidths(estimator):
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(6, 3, dtype=torch.float64) + 0.5).requires_grad_()
    fn = lambda a, b: mmd(a, b, bandwidths=[0.7, 1.5, 3.0], estimator=estimator)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x, y), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_linear_unequal_sizes_and_weights():
    torch.manual_seed(1)
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda a, b: mmd(a, b, bandwidths=[1.0], estimator="linear",  # noqa: E731
                          generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(fn, (x, y), eps=1e-6, atol=1e-8)
    wa = torch.rand(5, dtype=torch.float64).add(0.1).requires_grad_()
    wb = torch.rand(8, dtype=torch.float64).add(0.1).requires_grad_()
    for est in ("biased", "unbiased"):
        fw = lambda p, q: mmd(x.detach(), y.detach(), bandwidths=[1.0, 2.0], estimator=est,  # noqa: E731
                              source_weights=p, target_weights=q)
        assert torch.autograd.gradcheck(fw, (wa, wb), eps=1e-6, atol=1e-8)


def test_heuristic_bandwidth_is_detached(kernel_path):
    """Gradient with the median heuristic equals the gradient with those bandwidths fixed."""
    torch.manual_seed(2)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(14, 3, dtype=torch.float64) + 1.0
    z = torch.cat([x, y]).detach().numpy()
    sig = ref_sigmas(z, "median", MULTS)
    (g1,) = torch.autograd.grad(mmd(x, y, **path_kw(kernel_path)), x)
    (g2,) = torch.autograd.grad(mmd(x, y, bandwidths=sig, **path_kw(kernel_path)), x)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ invariants and edge cases
def test_self_mmd_is_zero_biased(rng):
    x = t64(rng.normal(size=(25, 6)))
    assert abs(float(mmd(x, x))) < 1e-12
    x32 = x.float().requires_grad_()
    v = mmd(x32, x32.detach().clone())
    v.backward()
    assert abs(float(v.detach())) < 1e-6 and torch.isfinite(x32.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
def test_identical_points_give_zero_and_finite_gradients(dtype, estimator):
    for base in (torch.zeros(1, 4), torch.full((1, 4), 123.456)):
        x = base.repeat(8, 1).to(dtype).requires_grad_()
        y = base.repeat(8, 1).to(dtype).requires_grad_()
        v = mmd(x, y, estimator=estimator)
        v.backward()
        assert float(v.detach()) == 0.0
        assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
        assert float(x.grad.abs().max()) == 0.0


def test_single_point_and_tiny_batches():
    x = torch.randn(1, 3, requires_grad=True)
    y = torch.randn(1, 3)
    v = mmd(x, y)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(x.grad).all()
    # the same single point: exactly 0, finite gradient
    p = torch.randn(1, 3, requires_grad=True)
    v = mmd(p, p.detach().clone())
    v.backward()
    assert float(v.detach()) == 0.0 and torch.isfinite(p.grad).all()


def test_different_sizes_and_dtypes_agree(rng):
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(64, 8)) + 0.2
    for est in ("biased", "unbiased"):
        v64 = mmd(t64(x), t64(y), estimator=est)
        v32 = mmd(t64(x).float(), t64(y).float(), estimator=est)
        assert v32.dtype == torch.float32
        assert float(v32) == pytest.approx(float(v64), rel=1e-4, abs=1e-6)


def test_large_offset_keeps_precision(rng):
    """Shifting both batches by a large constant does not change the value (float32)."""
    x, y = rng.normal(size=(40, 16)), rng.normal(size=(40, 16)) + 0.5
    base = float(mmd(t64(x).float(), t64(y).float()))
    shifted = float(mmd(t64(x + 1e3).float(), t64(y + 1e3).float()))
    assert shifted == pytest.approx(base, rel=2e-2)


def test_integer_weights_equal_duplicated_points(rng):
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.3
    wa, wb = np.array([1, 2, 3, 1, 1, 2]), np.array([2, 1, 1, 4, 1])
    sig = [0.5, 1.0, 2.0]
    weighted = mmd(t64(x), t64(y), bandwidths=sig, source_weights=t64(wa), target_weights=t64(wb))
    duplicated = mmd(t64(np.repeat(x, wa, axis=0)), t64(np.repeat(y, wb, axis=0)), bandwidths=sig)
    assert float(weighted) == pytest.approx(float(duplicated), rel=1e-12)


def test_unbiased_estimator_is_unbiased():
    """Same distribution: the unbiased mean over many draws is ~0, the biased one is not."""
    g = torch.Generator().manual_seed(0)
    draws = 400
    ub, b = [], []
    for _ in range(draws):
        x = torch.randn(8, 2, generator=g, dtype=torch.float64)
        y = torch.randn(6, 2, generator=g, dtype=torch.float64)
        ub.append(float(mmd(x, y, bandwidths=[1.0], estimator="unbiased")))
        b.append(float(mmd(x, y, bandwidths=[1.0], estimator="biased")))
    ub, b = np.array(ub), np.array(b)
    se = ub.std(ddof=1) / math.sqrt(draws)
    assert abs(ub.mean()) < 4 * se
    assert b.mean() > 10 * se  # the V-statistic is biased upwards


def test_kernel_weights_select_a_kernel(rng):
    x, y = t64(rng.normal(size=(10, 2))), t64(rng.normal(size=(12, 2)))
    one_hot = mmd(x, y, bandwidths=[0.5, 2.0], kernel_weights=t64([0.0, 3.0]))
    single = mmd(x, y, bandwidths=[2.0])
    assert float(one_hot) == pytest.approx(float(single), rel=1e-12)


def test_no_n_squared_d_broadcast():
    """A batch whose difference tensor would need ~12 GB runs quickly via the Gram matrix."""
    torch.manual_seed(0)
    x, y = torch.randn(600, 2048), torch.randn(600, 2048)
    v = mmd(x, y)
    assert torch.isfinite(v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(rng):
    x, y = t64(rng.normal(size=(20, 4))), t64(rng.normal(size=(30, 4)))
    for est in ("biased", "unbiased", "linear"):
        kw = {"generator": torch.Generator(device="cuda").manual_seed(0)} if est == "linear" else {}
        v = mmd(x.cuda(), y.cuda(), estimator=est, **kw)
        assert v.device.type == "cuda"
        if est != "linear":
            assert float(v) == pytest.approx(float(mmd(x, y, estimator=est)), rel=1e-9)


# ------------------------------------------------------------------ errors
def test_bad_inputs_name_the_argument():
    x, y = torch.randn(5, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match="source"):
        mmd(torch.randn(5), y)
    with pytest.raises(TypeError, match="source"):
        mmd(x.numpy(), y)
    with pytest.raises(ValueError, match="target"):
        mmd(x, torch.randn(6, 4))
    with pytest.raises(TypeError, match="target"):
        mmd(x, y.double())
    with pytest.raises(ValueError, match="source"):
        mmd(torch.tensor([[float("nan"), 0.0, 0.0]]), y)
    with pytest.raises(TypeError, match="target"):
        mmd(x, torch.ones(6, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="estimator"):
        mmd(x, y, estimator="quadratic")
    with pytest.raises(ValueError, match="heuristic"):
        mmd(x, y, heuristic="max")
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, y, bandwidths=[1.0, -2.0])
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, y, bandwidths=[1e-30])  # 1/(2 sigma^2) overflows float32
    with pytest.raises(ValueError, match="multipliers"):
        mmd(x, y, multipliers=(1.0, 0.0))
    with pytest.raises(ValueError, match="kernel_weights"):
        mmd(x, y, kernel_weights=torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="kernel_weights"):
        mmd(x, y, bandwidths=[1.0], kernel_weights=torch.ones(2))
    with pytest.raises(ValueError, match="source_weights"):
        mmd(x, y, source_weights=torch.ones(4))
    with pytest.raises(ValueError, match="target_weights"):
        mmd(x, y, target_weights=-torch.ones(6))
    with pytest.raises(ValueError, match="source"):
        mmd(x[:1], y, estimator="unbiased")
    with pytest.raises(ValueError, match="target"):
        mmd(x, y[:1], estimator="linear")
    with pytest.raises(ValueError, match="source_weights"):
        mmd(x, y, estimator="linear", source_weights=torch.ones(5))
    with pytest.raises(ValueError, match="source_weights"):
        mmd(x, y, estimator="unbiased", source_weights=torch.tensor([1.0, 0, 0, 0, 0]))
    with pytest.raises(TypeError, match="generator"):
        mmd(x, y, estimator="linear", generator=0)


# ------------------------------------------------------------------ JMMD
def ref_jmmd(xs, ys, sigmas_per_layer, estimator="biased"):
    n, m = len(xs[0]), len(ys[0])
    z = [np.vstack([x, y]) for x, y in zip(xs, ys)]
    k = np.ones((n + m, n + m))
    for zl, sig in zip(z, sigmas_per_layer):
        k = k * ref_kernel(zl, zl, sig, np.full(len(sig), 1.0 / len(sig)))
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_jmmd_matches_reference_default_multipliers(rng, estimator, kernel_path):
    f_s, f_t = rng.normal(size=(20, 6)), rng.normal(size=(25, 6)) + 0.4
    p_s = torch.softmax(t64(rng.normal(size=(20, 4))), 1).numpy()
    p_t = torch.softmax(t64(rng.normal(size=(25, 4))), 1).numpy()
    sig = [ref_sigmas(np.vstack([f_s, f_t]), "median", MULTS), ref_sigmas(np.vstack([p_s, p_t]), "median", (1.0,))]
    expected = ref_jmmd([f_s, p_s], [f_t, p_t], sig, estimator)
    got = jmmd([t64(f_s), t64(p_s)], [t64(f_t), t64(p_t)], estimator=estimator, **path_kw(kernel_path))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def torch_ref_jmmd(xs, ys, sigmas_per_layer, estimator="biased"):
    """Differentiable float64 JMMD reference from explicit differences."""
    n, m = xs[0].shape[0], ys[0].shape[0]
    k = None
    for x, y, sig in zip(xs, ys, sigmas_per_layer):
        z = torch.cat([x, y])
        d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        kl = sum(torch.exp(-d2 / (2 * s * s)) for s in sig) / len(sig)
        k = kl if k is None else k * kl
    if estimator == "unbiased":
        k = k * (1 - torch.eye(n + m, dtype=k.dtype))
        return (k[:n, :n].sum() / (n * (n - 1)) + k[n:, n:].sum() / (m * (m - 1)) - 2 * k[:n, n:].mean())
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_jmmd_gradients_match_reference(rng, estimator, num_layers, kernel_path):
    dims = [5, 3, 2][:num_layers]
    xs = [t64(rng.normal(size=(11, d))).requires_grad_() for d in dims]
    ys = [t64(rng.normal(size=(9, d)) + 0.3).requires_grad_() for d in dims]
    bws = [[0.8, 1.6, 3.2], [0.7, 1.9], [1.3]][:num_layers]  # geometric, non-geometric, single
    ref = torch_ref_jmmd(xs, ys, bws, estimator)
    got = jmmd(xs, ys, bandwidths=bws, estimator=estimator, **path_kw(kernel_path))
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    for g, r in zip(torch.autograd.grad(got, xs + ys), torch.autograd.grad(ref, xs + ys)):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_jmmd_single_layer_equals_mmd_and_explicit_options(rng):
    x, y = t64(rng.normal(size=(10, 3))), t64(rng.normal(size=(12, 3)))
    for est in ("biased", "unbiased", "linear"):
        a = jmmd([x], [y], multipliers=[MULTS], estimator=est, generator=torch.Generator().manual_seed(0))
        b = mmd(x, y, estimator=est, generator=torch.Generator().manual_seed(0))
        assert float(a) == pytest.approx(float(b), rel=1e-12)
    a = jmmd([x, x], [y, y], bandwidths=[[1.0], None], multipliers=[(1.0,), (2.0,)])
    h = ref_sigmas(np.vstack([x.numpy(), y.numpy()]), "median", (2.0,))
    assert float(a) == pytest.approx(ref_jmmd([x.numpy()] * 2, [y.numpy()] * 2, [[1.0], h]), rel=1e-10)


def test_jmmd_linear_uses_same_rows_in_every_layer(rng):
    x, y = t64(rng.normal(size=(9, 3))), t64(rng.normal(size=(16, 3)))
    # two identical layers with bandwidths s and s: the product kernel equals one layer with s / sqrt(2)
    two = jmmd([x, x], [y, y], bandwidths=[[1.0], [1.0]], estimator="linear", generator=torch.Generator().manual_seed(5))
    one = mmd(x, y, bandwidths=[1.0 / math.sqrt(2.0)], estimator="linear", generator=torch.Generator().manual_seed(5))
    assert float(two) == pytest.approx(float(one), rel=1e-12)


def test_jmmd_gradcheck():
    torch.manual_seed(3)
    xs = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True), torch.rand(5, 2, dtype=torch.float64, requires_grad=True)]
    ys = [torch.randn(7, 3, dtype=torch.float64, requires_grad=True), torch.rand(7, 2, dtype=torch.float64, requires_grad=True)]
    for est in ("biased", "unbiased"):
        fn = lambda a, b, c, d: jmmd([a, b], [c, d], bandwidths=[[0.8, 2.0], [0.5]], estimator=est)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (xs[0], xs[1], ys[0], ys[1]), eps=1e-6, atol=1e-8)


def test_jmmd_identical_and_errors():
    x = torch.zeros(4, 3, requires_grad=True)
    v = jmmd([x, x.softmax(1)], [torch.zeros(4, 3), torch.zeros(4, 3).softmax(1)])
    v.backward()
    assert float(v.detach()) == 0.0 and torch.isfinite(x.grad).all()
    a, b = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="same number of layers"):
        jmmd([a, a], [b])
    with pytest.raises(ValueError, match="sources"):
        jmmd([a, a[:3]], [b, b])
    with pytest.raises(ValueError, match=r"targets\[1\]"):
        jmmd([a, a], [b, torch.randn(5, 2)])
    with pytest.raises(TypeError, match="sources"):
        jmmd(a, [b])
    with pytest.raises(ValueError, match="bandwidths"):
        jmmd([a, a], [b, b], bandwidths=[[1.0]])
    with pytest.raises(ValueError, match="multipliers"):
        jmmd([a, a], [b, b], multipliers=[(1.0,)])
    with pytest.raises(ValueError, match=r"multipliers\[1\]"):
        jmmd([a, a], [b, b], multipliers=[(1.0,), (-1.0,)])


# ------------------------------------------------------------------ modules
def test_modules_match_functions(rng):
    x, y = t64(rng.normal(size=(10, 3))), t64(rng.normal(size=(12, 3)))
    w = t64(rng.uniform(0.5, 1.5, size=10))
    assert float(MMDLoss(estimator="unbiased")(x, y, w)) == float(mmd(x, y, estimator="unbiased", source_weights=w))
    assert float(JMMDLoss()([x], [y])) == float(jmmd([x], [y]))
    with pytest.raises(ValueError, match="estimator"):
        MMDLoss(estimator="nope")
    with pytest.raises(ValueError, match="multipliers"):
        MMDLoss(multipliers=())
    assert "unbiased" in repr(MMDLoss(estimator="unbiased"))
