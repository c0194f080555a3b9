"""Property-based checks of the alignment losses (hypothesis; skipped if it is not installed).

In the suite (and CI) hypothesis runs derandomized (tests/conftest.py): the same examples on
every machine. ``scripts/randomized_properties.py`` runs this file with the ``randomized``
profile, a fresh seed per run and ``ADAPTLIB_HYPOTHESIS_EXAMPLES`` examples per test (200 by
default), so that an example that only fails on some machine or seed cannot hide.
"""
import math
import os
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ot  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402

from adaptlib.losses import coral, mmd, sinkhorn, sinkhorn_divergence  # noqa: E402
from adaptlib.losses.mmd import MIN_BANDWIDTH  # noqa: E402

_MIN_EXAMPLES = int(os.environ.get("ADAPTLIB_HYPOTHESIS_EXAMPLES", "0"))


def examples(n: int) -> int:
    """``n`` examples in the suite; at least ``ADAPTLIB_HYPOTHESIS_EXAMPLES`` in a randomized run."""
    return max(n, _MIN_EXAMPLES)


@settings(max_examples=examples(30), deadline=None, database=None)
@given(n=st.integers(1, 12), m=st.integers(1, 12), d=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_mmd_biased_symmetric_nonnegative_scale_invariant(n, m, d, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * scale
    v_xy, v_yx = float(mmd(x, y)), float(mmd(y, x))
    assert math.isfinite(v_xy)
    assert v_xy >= -1e-12
    assert v_xy == pytest.approx(v_yx, rel=1e-9, abs=1e-12)
    # the median heuristic makes the value invariant to a common rescaling, as long as no
    # distance crosses the absolute floor MIN_BANDWIDTH (below it points count as duplicates)
    z = torch.cat([x, y])
    if z.shape[0] < 2 or float(torch.pdist(z).min()) > 10 * MIN_BANDWIDTH:
        assert float(mmd(x * 7.0, y * 7.0)) == pytest.approx(v_xy, rel=1e-7, abs=1e-12)


@settings(max_examples=examples(30), deadline=None, database=None)
@given(n=st.integers(2, 10), m=st.integers(2, 10), d=st.integers(1, 30), seed=st.integers(0, 2**31 - 1))
def test_coral_symmetric_nonnegative_shift_invariant(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 2
    v = float(coral(x, y))
    assert v >= 0 and v == pytest.approx(float(coral(y, x)), rel=1e-9, abs=1e-15)
    assert float(coral(x - 3.0, y + 5.0)) == pytest.approx(v, rel=1e-8, abs=1e-12)
    cs, ct = np.cov(x.numpy(), rowvar=False).reshape(d, d), np.cov(y.numpy(), rowvar=False).reshape(d, d)
    assert v == pytest.approx(np.sum((cs - ct) ** 2) / (4 * d * d), rel=1e-8, abs=1e-15)


@settings(max_examples=examples(25), deadline=None, database=None)
@given(n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 2**31 - 1), eps=st.sampled_from([0.3, 1.0, 5.0]))
# Found by a randomized run: a 3 x 4 problem whose plain Sinkhorn iteration needs about 41,000
# iterations to reach tol=1e-10 (POT's log-domain solver needs about 40,000); after 20,000 its
# marginal error is 1.8e-6. Kept so that the not-converged branch below always runs.
@example(n=3, m=4, seed=2**31 - 1, eps=0.3)
def test_sinkhorn_plan_marginals_and_bounds(n, m, seed, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.randn(m, 2, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        res = sinkhorn(x, y, a, b, epsilon=eps, tol=1e-10, max_iter=20000)
    p, q = a / a.sum(), b / b.sum()
    # Sinkhorn converges linearly, at a rate that can be arbitrarily slow (the example above),
    # so no iteration budget covers every problem. What holds for every problem is that the
    # result reports itself truthfully: its marginal error is the plan's, and a solve that did
    # not converge says so with a RuntimeWarning.
    error = float((res.plan.sum(1) - p).abs().sum() + (res.plan.sum(0) - q).abs().sum())
    assert res.marginal_error == pytest.approx(error, rel=1e-9, abs=1e-15)
    warned = any("did not converge" in str(c.message) for c in caught)
    assert warned == (not res.converged)
    c = cdist(x.numpy(), y.numpy(), "sqeuclidean")
    exact = ot.emd2(p.numpy(), q.numpy(), c)
    if res.converged:
        torch.testing.assert_close(res.plan.sum(1), p, atol=1e-9, rtol=0)
        torch.testing.assert_close(res.plan.sum(0), q, atol=1e-9, rtol=0)
        # OT_eps >= <P, C> >= exact OT (KL >= 0 and P is feasible)
        assert float(res.value) >= float(res.transport_cost) - 1e-9
        assert float(res.transport_cost) >= exact - 1e-9
    else:
        assert res.marginal_error > 1e-10
        # P is within L1 distance 2 * error of a feasible plan (Altschuler et al., NeurIPS 2017,
        # Lemma 7), so its cost is at most 2 * error * max C below the exact OT cost.
        assert float(res.transport_cost) >= exact - 2 * res.marginal_error * c.max() - 1e-9


# ------------------------------------------------------------------ degenerate generators
# Point clouds in the spirit of geomloss/tests/generators: besides random clouds, identical
# clouds, single points, duplicated rows, constant clouds and tiny/huge scales.
KINDS = ["random", "identical", "single", "duplicates", "constant", "near_constant", "dead_rows"]


@st.composite
def cloud_pairs(draw, min_rows=1, max_rows=10):
    kind = draw(st.sampled_from(KINDS))
    scale = draw(st.sampled_from([1e-4, 1.0, 1e4]))
    d = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    lo = max(min_rows, 1)
    n = 1 if kind == "single" and lo == 1 else draw(st.integers(lo, max_rows))
    m = 1 if kind == "single" and lo == 1 else draw(st.integers(lo, max_rows))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 0.5
    if kind == "identical":
        y = x.clone()
    elif kind == "duplicates":
        x = torch.cat([x, x])[: max(n, 2)]
        y = torch.cat([y, y[:1]])
    elif kind == "constant":
        x, y = x[:1].repeat(n, 1), y[:1].repeat(m, 1)
    elif kind == "near_constant":  # one point each, jittered by a relative 1e-9 .. 1e-3
        jitter = draw(st.sampled_from([1e-9, 1e-6, 1e-3]))
        x = x[:1] + jitter * torch.randn(n, d, generator=g, dtype=torch.float64)
        y = y[:1] + jitter * torch.randn(m, d, generator=g, dtype=torch.float64)
    elif kind == "dead_rows":  # at least half the rows at the origin (dead ReLU units)
        x = torch.cat([torch.zeros(n, d, dtype=torch.float64), x])[: max(n, 2)]
    return x * scale, y * scale, scale


def _resolved_in_float32(x, y) -> bool:
    """Whether every non-zero distance of the stacked clouds is far above float32's resolution
    ``sqrt(eps) * max norm`` (below it float32 sees duplicates where float64 sees points, and
    the two dtypes legitimately disagree; near-constant clouds with a small jitter do that)."""
    z = torch.cat([x, y])
    d = torch.pdist(z) if z.shape[0] > 1 else z.new_zeros(0)
    nonzero = d[d > 0]
    if nonzero.numel() == 0:
        return True
    return float(nonzero.min()) > 0.05 * float(z.norm(dim=1).max())


@settings(max_examples=examples(40), deadline=None, database=None)
@given(pair=cloud_pairs())
def test_mmd_biased_degenerate_symmetric_nonnegative_and_dtype_agreement(pair):
    x, y, _ = pair
    v = mmd(x, y)
    assert math.isfinite(float(v)) and float(v) >= -1e-12
    assert float(v) == pytest.approx(float(mmd(y, x)), rel=1e-9, abs=1e-12)
    if _resolved_in_float32(x, y):
        v32 = float(mmd(x.float(), y.float()))
        assert v32 == pytest.approx(float(v), rel=1e-3, abs=1e-5)
    if torch.equal(x, y):
        assert float(v) == 0.0


@settings(max_examples=examples(40), deadline=None, database=None)
@given(pair=cloud_pairs(min_rows=2), shift=st.sampled_from([-1e3, 0.5, 7.0]))
def test_coral_degenerate_symmetric_shift_invariant_and_dtype_agreement(pair, shift):
    x, y, scale = pair
    v = float(coral(x, y))
    assert math.isfinite(v) and v >= 0
    assert v == pytest.approx(float(coral(y, x)), rel=1e-9, abs=1e-300)
    # a shift of either batch by a constant vector leaves the covariances unchanged
    off = torch.full((1, x.shape[1]), shift * scale, dtype=x.dtype)
    assert float(coral(x + off, y - 2 * off)) == pytest.approx(v, rel=1e-6, abs=1e-9 * scale**4)
    v32 = float(coral(x.float(), y.float()))
    assert v32 == pytest.approx(v, rel=1e-3, abs=1e-6 * scale**4)


@settings(max_examples=examples(20), deadline=None, database=None)
@given(pair=cloud_pairs(max_rows=8))
def test_sinkhorn_divergence_degenerate_symmetric_nonnegative_dtype_agreement(pair):
    x, y, scale = pair
    eps = 0.5 * scale * scale  # the divergence is homogeneous: eps relative to the scale
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        v = float(sinkhorn_divergence(x, y, epsilon=eps, tol=1e-10, max_iter=5000))
        w = float(sinkhorn_divergence(y, x, epsilon=eps, tol=1e-10, max_iter=5000))
        converged64 = not any("did not converge" in str(c.message) for c in caught)
        v32 = float(sinkhorn_divergence(x.float(), y.float(), epsilon=eps, tol=1e-6, max_iter=5000))
        converged32 = not any("did not converge" in str(c.message) for c in caught)
    unit = scale * scale
    assert math.isfinite(v) and math.isfinite(w) and math.isfinite(v32)
    # Symmetry, non-negativity and the dtype agreement are properties of the converged
    # divergence. Some rare clouds (about 1 in 130 randomized examples: duplicated rows at a
    # large scale, where the cross problem's C/eps reaches ~50 and the marginal error shrinks by
    # ~2e-4 per iteration) do not reach tol within max_iter; the solver then says so with a
    # RuntimeWarning (tested in test_losses_sinkhorn.py) and those examples are not evidence here.
    assume(converged64 and converged32)
    assert v >= -1e-7 * unit
    # Swapping the inputs runs a different iteration sequence; both stop at the marginal
    # tolerance, so symmetry holds to the solver's accuracy, not to rounding (seen: 1.6e-6).
    assert v == pytest.approx(w, rel=1e-5, abs=1e-7 * unit)
    assert v32 == pytest.approx(v, rel=1e-3, abs=1e-4 * unit)


def _mmd_paths():
    from adaptlib.kernels import triton_available

    return ["dense", "tiled"] + (["triton"] if triton_available(torch.device("cpu")) else [])


@settings(max_examples=examples(60), deadline=None, database=None)
@given(pair=cloud_pairs(), estimator=st.sampled_from(["biased", "unbiased", "linear"]),
       heuristic=st.sampled_from(["median", "mean"]), path=st.sampled_from(_mmd_paths()),
       seed=st.integers(0, 2**31 - 1))
def test_mmd_symmetric_for_every_estimator_path_and_heuristic(pair, estimator, heuristic, path, seed):
    """mmd(x, y) == mmd(y, x) to rounding, degenerate clouds of unequal sizes included."""
    x, y, _ = pair
    if estimator != "biased" and min(x.shape[0], y.shape[0]) < 2:
        return  # needs two rows per side (tested elsewhere to raise)
    kw = {"estimator": estimator, "heuristic": heuristic, "path": path}
    if path == "tiled":
        kw["block_size"] = 4  # several tiles even for these small clouds
    gen = (lambda: {"generator": torch.Generator().manual_seed(seed)}) if estimator == "linear" else dict
    v_xy, v_yx = float(mmd(x, y, **kw, **gen())), float(mmd(y, x, **kw, **gen()))
    assert math.isfinite(v_xy) and math.isfinite(v_yx)
    assert v_xy == pytest.approx(v_yx, rel=1e-9, abs=1e-12)
    if estimator == "biased":
        assert v_xy >= -1e-12
