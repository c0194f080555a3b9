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
    assert float(v) == pytest.approx(_np_mmd_biased(x.numpy(), y.detach().numpy(), [mu * h for mu in MULTS]),
                                     rel=1e-9)
    assert float(v) == pytest.approx(0.3986, abs=0.05)  # the same for every scale
    (gy,) = torch.autograd.grad(v, y)
    assert float(gy.abs().max()) * scale > 1e-4  # a real signal, in units of the scale
