"""Numeric guards of the alignment losses: inputs that once gave wrong values silently (issue 9).

Each test holds one kind of fault, with the input that exposed it and its right value from an
independent computation (NumPy float64 formulas, POT's exact solver).
"""
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from adaptlib.losses import mmd

MULTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _np_mmd_biased(x, y, sigmas):
    """Biased MK-MMD² by explicit differences in float64 (no Gram expansion)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.mean([np.exp(-d2 / (2 * s * s)) for s in sigmas], axis=0)

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def _np_nonzero_median(z):
    d = pdist(np.asarray(z, np.float64))
    d = np.sort(d[d > 0])
    return d[(len(d) - 1) // 2]


# ------------------------------------------------------------------ 1. symmetry
@pytest.mark.parametrize("estimator", ["biased", "unbiased", "linear"])
@pytest.mark.parametrize("heuristic", ["median", "mean"])
def test_constant_clouds_of_unequal_sizes_are_symmetric(estimator, heuristic, kernel_path):
    """One or two rows against four or five at scale 1e-4: once 1.909 one way and 2.0 the other."""
    g = torch.Generator().manual_seed(0)
    for n, m in ((1, 4), (2, 5)):
        if estimator != "biased" and n < 2:
            continue
        x = (torch.randn(1, 3, generator=g, dtype=torch.float64) * 1e-4).repeat(n, 1)
        y = (torch.randn(1, 3, generator=g, dtype=torch.float64) * 1e-4 + 5e-5).repeat(m, 1)
        kw = {"estimator": estimator, "heuristic": heuristic, "path": kernel_path}
        lin = (lambda: {"generator": torch.Generator().manual_seed(1)}) if estimator == "linear" else dict
        v_xy, v_yx = float(mmd(x, y, **kw, **lin())), float(mmd(y, x, **kw, **lin()))
        assert v_xy == pytest.approx(v_yx, rel=1e-9, abs=1e-12)
        if estimator == "biased":
            # every non-zero distance is |x0 - y0|: the bandwidths are m_k |x0 - y0|
            d = float((x[0] - y[0]).norm())
            assert v_xy == pytest.approx(_np_mmd_biased(x, y, [mu * d for mu in MULTS]), rel=1e-9)


# ------------------------------------------------------------------ 2. bandwidth floor
def test_clouds_equal_to_resolution_give_about_zero_with_small_gradients():
    x = torch.zeros(64, 16, dtype=torch.float64, requires_grad=True)
    v = mmd(x, x.detach() + 1e-12)  # was 0.962 with a gradient of 5.6e8
    (gx,) = torch.autograd.grad(v, x)
    assert 0.0 <= float(v.detach()) < 1e-9
    assert float(gx.abs().max()) < 1.0
    # float32: a difference of 1e-6 between features of size 3 is below float32's resolution
    a = 3 * torch.ones(64, 16)
    assert 0.0 <= float(mmd(a, a + 1e-6)) < 1e-5  # was 0.962
    assert 0.0 <= float(mmd(a, a + 1e-6, path="tiled")) < 1e-5


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e2])
def test_dead_rows_do_not_collapse_the_bandwidth(scale):
    """Half or more of the pooled pairs are duplicates (all-zero rows): the median is taken over
    the non-zero distances, so the value is scale invariant and the gradient is not zero (it
    was 1.0333 for every scale, with zero gradient)."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(100, 16, dtype=torch.float64)
    y = (scale * torch.randn(30, 16, generator=g, dtype=torch.float64)).requires_grad_()
    v = mmd(x, y)
    h = _np_nonzero_median(torch.cat([x, y.detach()]).numpy())
    assert float(v.detach()) == pytest.approx(_np_mmd_biased(x.numpy(), y.detach().numpy(), [mu * h for mu in MULTS]),
                                     rel=1e-9)
    assert float(v.detach()) == pytest.approx(0.3986, abs=0.05)  # the same for every scale
    (gy,) = torch.autograd.grad(v, y)
    assert float(gy.abs().max()) * scale > 1e-4  # a real signal, in units of the scale


# ------------------------------------------------------------------ 3. Sinkhorn that did not converge
def _spread_clouds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64) * 30
    y = torch.randn(200, 2, generator=g, dtype=torch.float64) * 30
    return x, y


def test_sinkhorn_that_did_not_converge_warns_from_every_entry_point():
    import ot

    from adaptlib.losses import SinkhornLoss, sinkhorn

    x, y = _spread_clouds()
    exact = ot.emd2(np.full(200, 1 / 200), np.full(200, 1 / 200), torch.cdist(x, y).pow(2).numpy())
    assert exact == pytest.approx(97.4, abs=0.05)
    with pytest.warns(RuntimeWarning, match="did not converge.*scaling="):
        res = sinkhorn(x, y, epsilon=0.01)  # was silent, with transport_cost 67.4
    assert not res.converged and float(res.transport_cost) < 0.8 * exact
    loss = SinkhornLoss(epsilon=0.01)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        loss(x, y)
    assert loss.converged is False and loss.last_result.n_iter == 1000  # the flag is kept
    # what the warning suggests works: epsilon scaling reaches the exact cost, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fixed = sinkhorn(x, y, epsilon=0.01, scaling=0.5)
        assert SinkhornLoss(epsilon=0.01, scaling=0.5)(x, y).isfinite()
    assert fixed.converged and float(fixed.transport_cost) == pytest.approx(exact, rel=1e-3)


# ------------------------------------------------------------------ 4. DEV with degenerate weights
LOSSES = torch.tensor([0.2, 0.9, 0.4, 0.7], dtype=torch.float64)


@pytest.mark.parametrize("weights, warns", [
    ([0.5, 0.5 + 1e-6, 0.5 - 1e-6, 0.5], False),  # nearly constant: was 62500.6, silently
    ([1.3, 1.3 + 1e-6, 1.3 - 1e-6, 1.3], False),  # the same fault with a plausible mean
    ([1e200, 1e-3], True),                        # was OverflowError
    ([1e160, 2e160, 1.0], True),                  # was NaN
    ([1e304, 1e304, 1e-300, 1.0], True),          # what importance_weights can return (log-weights clamped at 700)
])
def test_dev_with_degenerate_weights_is_finite_and_in_the_range_of_the_losses(weights, warns):
    from adaptlib.validation import dev_risk

    w = torch.tensor(weights, dtype=torch.float64)
    losses = LOSSES[: len(w)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        risk = dev_risk(losses, w)
    assert any("weights" in str(c.message) and c.category is RuntimeWarning for c in caught) == warns
    assert math.isfinite(risk) and float(losses.min()) <= risk <= float(losses.max())
    # it is the self-normalised importance-weighted loss (float64 formula on w / max w)
    wn = np.asarray(weights) / max(weights)
    assert risk == pytest.approx(float((wn * losses.numpy()).sum() / wn.sum()), rel=1e-12)


def test_dev_with_weights_of_mean_about_one_is_the_published_estimator():
    from adaptlib.validation import dev_risk

    g = np.random.default_rng(0)
    losses = g.uniform(0.1, 2.0, size=50)
    w = g.lognormal(-0.02, 0.2, size=50)
    w = w / w.mean() * 1.01  # mean 1.01, well within sampling error
    big_l = w * losses
    cov = np.cov(big_l, w, ddof=1)
    eta = -cov[0, 1] / cov[1, 1]
    expected = big_l.mean() + eta * w.mean() - eta
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = dev_risk(torch.from_numpy(losses), torch.from_numpy(w))
    assert got == pytest.approx(expected, rel=1e-12)
    # and the scale of huge weights does not change eta: only the premise check does
    with pytest.warns(RuntimeWarning):
        assert math.isfinite(dev_risk(torch.from_numpy(losses), torch.from_numpy(w * 1e300)))


# ------------------------------------------------------------------ 5. size guard of path="dense"
def test_dense_path_beyond_memory_is_refused_before_allocating(monkeypatch):
    from adaptlib import kernels
    from adaptlib.losses import jmmd, sinkhorn, sinkhorn_divergence

    x = torch.randn(100_000, 2)  # dense matrices of hundreds of GiB: more than any machine here
    for call in (lambda: mmd(x, x[:5000] + 1, path="dense"),
                 lambda: jmmd([x], [x + 1], path="dense"),
                 lambda: sinkhorn(x, x + 1, path="dense"),
                 lambda: sinkhorn_divergence(x, x + 1, path="dense")):
        with pytest.raises(ValueError, match=r"path='dense' would allocate about .* GiB.*path='tiled'"):
            call()
    # the budget is the documented setting: a small budget refuses a small call, too
    monkeypatch.setattr(kernels, "DENSE_LIMIT_BYTES", 1 << 20)
    small = torch.randn(300, 4)
    with pytest.raises(ValueError, match="DENSE_LIMIT_BYTES"):
        mmd(small, small + 1, path="dense")
    assert torch.isfinite(mmd(small, small + 1, path="tiled"))
    assert torch.isfinite(mmd(small[:100], small[:100] + 1, path="auto"))


@pytest.mark.parametrize("jitter", [0.0, 1e-9, 1e-6])
def test_near_constant_clouds_are_exactly_symmetric(jitter, kernel_path):
    """Found by the randomized property run: 4 vs 10 rows jittered by 1e-6 gave values that
    differed in the 6th digit when swapped (the Gram expansion rounds differently with the rows
    in another order); one canonical order now makes both calls run the same operations."""
    from adaptlib.losses import jmmd

    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, generator=g, dtype=torch.float64) + jitter * torch.randn(4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(1, 4, generator=g, dtype=torch.float64) + 0.5 + jitter * torch.randn(10, 4, generator=g,
                                                                                          dtype=torch.float64)
    for est in ("biased", "unbiased"):
        assert float(mmd(x, y, estimator=est, path=kernel_path)) == float(mmd(y, x, estimator=est, path=kernel_path))
    assert float(jmmd([x], [y], path=kernel_path)) == float(jmmd([y], [x], path=kernel_path))
    xe, ye = x[:4], y[:4]  # equal sizes: the order is decided by the first differing entry
    assert float(mmd(xe, ye, path=kernel_path)) == float(mmd(ye, xe, path=kernel_path))
