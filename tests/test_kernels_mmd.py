"""Path-specific tests of the MMD/JMMD computation paths (adaptlib.kernels.mmd_tiled/_triton).

References are independent of the implementation: autograd of float64 formulas built from
explicit pairwise differences, numpy medians, and torch.autograd.gradcheck. Triton runs
through its CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so its batches are
tiny.
"""
import importlib
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import adaptlib.kernels as kernels
import adaptlib.kernels.mmd_tiled as mmd_tiled
from adaptlib.kernels.mmd_tiled import MAX_SQUARINGS, geometric_squarings, tile_blocks
from adaptlib.losses import jmmd, mmd
from test_losses_mmd import torch_ref_mmd

MULTS = (0.25, 0.5, 1.0, 2.0, 4.0)
# The row threshold of the bandwidth heuristic lives with the bandwidths (adaptlib.losses.mmd does not re-export
# it, so a patch of the old location fails loudly instead of silently patching nothing).
bandwidths_module = importlib.import_module("adaptlib.losses._mmd_bandwidths")


def ref_mmd(x, y, sigmas, estimator="biased", a=None, b=None, betas=None):
    """float64 MMD² from explicit differences (differentiable): test_losses_mmd's reference."""
    return torch_ref_mmd(x.double(), y.double(), [float(s) for s in sigmas], betas, estimator, a, b)


def median_sigmas(z, mults=MULTS):
    """Lower median of all pairwise distances (numpy), times the multipliers."""
    z = np.asarray(z, dtype=np.float64)
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
    h = np.sort(d)[(len(d) - 1) // 2]
    return [m * h for m in mults]


def grads(v, inputs):
    return torch.autograd.grad(v, inputs)


# ------------------------------------------------------------------ tiling
@pytest.mark.parametrize("n,m,block", [(19, 13, 4), (7, 30, 64), (16, 16, 16), (5, 3, 1), (33, 2, 7)])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_tiled_boundaries_match_reference(n, m, block, estimator):
    """N, M not multiples of the block, N != M, blocks smaller and larger than the batch."""
    g = torch.Generator().manual_seed(n * 100 + m)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(m, 6, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    a = torch.rand(n, generator=g, dtype=torch.float64).add(0.1).requires_grad_()
    sig = median_sigmas(torch.cat([x, y]).detach())
    got = mmd(x, y, estimator=estimator, source_weights=a, path="tiled", block_size=block)
    ref = ref_mmd(x, y, sig, estimator, a=a)
    assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
    for gt, rf in zip(grads(got, (x, y, a)), grads(ref, (x, y, a))):
        torch.testing.assert_close(gt, rf, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_triton_boundaries_match_reference(estimator, kernel_path):
    """Tiles of 16 rows over N=19, M=13 (the source/target boundary inside a tile), D=5 and
    D=20 (feature chunks of 16 with a ragged last chunk)."""
    if kernel_path != "triton":
        pytest.skip("triton-specific")
    g = torch.Generator().manual_seed(1)
    for d in (5, 20):
        x = torch.randn(19, d, generator=g, dtype=torch.float64, requires_grad=True)
        y = (torch.randn(13, d, generator=g, dtype=torch.float64) + 0.3).requires_grad_()
        sig = [0.5 * math.sqrt(d), math.sqrt(d), 2 * math.sqrt(d)]
        got = mmd(x, y, bandwidths=sig, estimator=estimator, path="triton", block_size=16)
        ref = ref_mmd(x, y, sig, estimator)
        assert float(got.detach()) == pytest.approx(float(ref.detach()), rel=1e-10)
        for gt, rf in zip(grads(got, (x, y)), grads(ref, (x, y))):
            torch.testing.assert_close(gt, rf, rtol=1e-9, atol=1e-13)


def test_tile_blocks_cover_rows_once_and_respect_boundary():
    for n, p, block in [(19, 32, 4), (1, 2, 8), (100, 100 + 37, 16)]:
        blocks = tile_blocks(n, p, block)
        rows = [r for s, e in blocks for r in range(s, e)]
        assert rows == list(range(p))
        assert all(e - s <= block for s, e in blocks)
        assert all(e <= n or s >= n for s, e in blocks)  # no tile straddles source/target


# ------------------------------------------------------------------ gradcheck / autograd
@pytest.mark.parametrize("path", ["dense", "tiled"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_gradcheck_all_inputs(path, estimator):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    a = torch.rand(6, generator=g, dtype=torch.float64).add(0.2).requires_grad_()
    b = torch.rand(5, generator=g, dtype=torch.float64).add(0.2).requires_grad_()
    kw = torch.rand(3, generator=g, dtype=torch.float64).add(0.2).requires_grad_()

    def fn(x, y, a, b, kw):
        return mmd(x, y, bandwidths=[0.7, 1.4, 2.8], estimator=estimator, source_weights=a,
                   target_weights=b, kernel_weights=kw, path=path, block_size=4)

    assert torch.autograd.gradcheck(fn, (x, y, a, b, kw), eps=1e-6, atol=1e-8, rtol=1e-6)
    jfn = lambda x1, y1: jmmd([x1, x1.tanh()], [y1, y1.tanh()], estimator=estimator,  # noqa: E731
                              bandwidths=[[0.8, 1.6], [0.9]], path=path, block_size=4)
    assert torch.autograd.gradcheck(jfn, (x, y), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_tiled_is_once_differentiable():
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, dtype=torch.float64)
    v = mmd(x, y, path="tiled")
    with pytest.raises(RuntimeError, match="once differentiable"):
        torch.autograd.grad(v, x, create_graph=True)


def test_grad_output_scales_and_no_grad(kernel_path):
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 3, dtype=torch.float64)
    kw = {"path": kernel_path, "block_size": 16 if kernel_path == "triton" else 4}
    (g1,) = grads(mmd(x, y, **kw), x)
    (g3,) = grads(-3.0 * mmd(x, y, **kw), x)
    torch.testing.assert_close(g3, -3.0 * g1, rtol=1e-12, atol=1e-15)
    with torch.no_grad():
        v = mmd(x, y, **kw)
    assert not v.requires_grad
    assert float(v) == pytest.approx(float(mmd(x.detach(), y, path="dense")), rel=1e-10)


# ------------------------------------------------------------------ precision
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_finite_and_close_to_float32(half, kernel_path):
    g = torch.Generator().manual_seed(4)
    x32 = torch.randn(20, 8, generator=g)
    y32 = torch.randn(17, 8, generator=g) + 0.5
    x = x32.to(half).requires_grad_()
    y = y32.to(half).requires_grad_()
    kw = {"path": kernel_path, "block_size": 16 if kernel_path == "triton" else 8}
    for est in ("biased", "unbiased"):
        v = mmd(x, y, estimator=est, **kw)
        assert v.dtype == torch.float32
        gx, gy = grads(v, (x, y))
        assert gx.dtype == half and gy.dtype == half
        assert torch.isfinite(v) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
        ref = mmd(x.detach().float(), y.detach().float(), estimator=est, path="dense")
        assert float(v.detach()) == pytest.approx(float(ref), rel=1e-5, abs=1e-7)  # same rounded inputs
        far = mmd(x32, y32, estimator=est, path="dense")  # vs the unrounded inputs
        assert float(v.detach()) == pytest.approx(float(far), rel=0.1)
    j = jmmd([x, x.softmax(1)], [y, y.softmax(1)], **kw)
    assert j.dtype == torch.float32 and torch.isfinite(j)


def test_autocast_computes_in_float32(kernel_path):
    torch.manual_seed(5)
    lin = torch.nn.Linear(8, 6)
    xs, xt = torch.randn(20, 8), torch.randn(17, 8) + 0.5
    kw = {"path": kernel_path, "block_size": 16 if kernel_path == "triton" else 8}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fs, ft = lin(xs), lin(xt)
        assert fs.dtype == torch.bfloat16
        v = mmd(fs, ft, **kw)
    assert v.dtype == torch.float32 and torch.isfinite(v)
    v.backward()
    assert torch.isfinite(lin.weight.grad).all()
    ref = mmd(fs.detach().float(), ft.detach().float(), path="dense")
    assert float(v.detach()) == pytest.approx(float(ref), rel=1e-5)


def test_float32_close_to_float64_reference_with_repeated_squaring():
    """Default multipliers: one exponential and 8 squarings per tile; float32 stays within
    ~1e-4 relative of the float64 reference on value and gradient."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(40, 16, generator=g, dtype=torch.float64)
    y = torch.randn(35, 16, generator=g, dtype=torch.float64) + 0.3
    sig = median_sigmas(torch.cat([x, y]))
    assert geometric_squarings([1 / (2 * s * s) for s in reversed(sig)], torch.float32) == (2, 2, 2, 2)
    x32 = x.float().requires_grad_()
    v = mmd(x32, y.float(), path="tiled", block_size=16)
    x64 = x.clone().requires_grad_()
    r = ref_mmd(x64, y, sig)
    assert float(v.detach()) == pytest.approx(float(r.detach()), rel=1e-4)
    torch.testing.assert_close(grads(v, x32)[0].double(), grads(r, x64)[0], rtol=1e-3, atol=1e-6)


def test_geometric_squarings_detection():
    assert geometric_squarings([1.0, 4.0, 16.0], torch.float64) == (2, 2)
    assert geometric_squarings([1.0, 2.0, 8.0, 8.0], torch.float64) == (1, 2, 0)
    assert geometric_squarings([1.0, 3.0], torch.float64) is None
    assert geometric_squarings([1.0, 2.0 ** (MAX_SQUARINGS + 1)], torch.float64) is None
    assert geometric_squarings([0.5], torch.float32) == ()


# ------------------------------------------------------------------ bandwidth heuristic
@pytest.mark.parametrize("heuristic", ["median", "mean"])
def test_heuristic_subsample_above_threshold_is_shared_by_all_paths(monkeypatch, heuristic, kernel_path):
    """Above the row threshold the heuristic uses, per side, rows floor(i N / S_x) of the
    source and floor(j M / S_y) of the target, S_x = floor(S N / P), S_y = floor(S M / P);
    all paths agree, and swapping source and target selects the same rows."""
    monkeypatch.setattr(bandwidths_module, "HEURISTIC_MAX_ROWS", 10)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(14, 3, generator=g, dtype=torch.float64)
    y = torch.randn(11, 3, generator=g, dtype=torch.float64) * 2
    sx, sy = (10 * 14) // 25, (10 * 11) // 25  # 5 and 4 rows
    sub = np.vstack([x.numpy()[[(i * 14) // sx for i in range(sx)]],
                     y.numpy()[[(j * 11) // sy for j in range(sy)]]])
    d = np.sqrt(((sub[:, None] - sub[None]) ** 2).sum(-1))[np.triu_indices(len(sub), 1)]
    h = np.sort(d)[(len(d) - 1) // 2] if heuristic == "median" else d.mean()
    expected = float(ref_mmd(x, y, [m * h for m in MULTS]))
    kw = {"path": kernel_path, "block_size": 16 if kernel_path == "triton" else 4}
    assert float(mmd(x, y, heuristic=heuristic, **kw)) == pytest.approx(expected, rel=1e-10)
    assert float(mmd(y, x, heuristic=heuristic, **kw)) == pytest.approx(expected, rel=1e-10)
    sig_j = [m * h for m in MULTS]
    assert float(jmmd([x], [y], multipliers=[MULTS], heuristic=heuristic, **kw)) == pytest.approx(
        float(ref_mmd(x, y, sig_j)), rel=1e-10)


# ------------------------------------------------------------------ dispatch and errors
def test_auto_path_selection(monkeypatch):
    calls = []
    real = mmd_tiled.tiled_pair_sums
    monkeypatch.setattr(mmd_tiled, "tiled_pair_sums", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = torch.randn(10, 3), torch.randn(12, 3)
    mmd(x, y)
    assert calls == []  # small: dense
    monkeypatch.setattr(kernels, "DENSE_MAX_BYTES", 1000)
    v = mmd(x, y)
    assert calls == [1]  # the dense matrices would exceed the limit: tiled
    assert float(v) == pytest.approx(float(mmd(x, y, path="dense")), rel=1e-5)
    jmmd([x], [y])
    assert calls == [1, 1]
    monkeypatch.setattr(kernels, "DENSE_MAX_BYTES", 1 << 30)
    mmd(torch.randn(300, 2), torch.randn(212, 2))  # N + M >= AUTO_TILED_MIN_ROWS: tiled
    assert calls == [1, 1, 1]
    mmd(torch.randn(300, 2), torch.randn(211, 2))
    assert calls == [1, 1, 1]


def test_path_errors(monkeypatch):
    x, y = torch.randn(5, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match="path"):
        mmd(x, y, path="gpu")
    with pytest.raises(ValueError, match="path"):
        jmmd([x], [y], path=None)
    with pytest.raises(ValueError, match="block_size"):
        mmd(x, y, path="tiled", block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        jmmd([x], [y], block_size=2.5)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton"):
        mmd(x, y, path="triton")


def test_triton_specific_errors(kernel_path):
    if kernel_path != "triton":
        pytest.skip("triton-specific")
    x, y = torch.randn(5, 3), torch.randn(6, 3)
    with pytest.raises(ValueError, match="power of two"):
        mmd(x, y, path="triton", block_size=24)
    with pytest.raises(ValueError, match="at most 3 layers"):
        jmmd([x] * 4, [y] * 4, path="triton")


# ------------------------------------------------------------------ memory
class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_tiled_never_allocates_the_kernel_matrix(monkeypatch):
    """Forward and backward of the tiled path at P = 1500 rows with 64-row tiles: no op returns
    more than max(P (D + 2), K block^2, S^2) elements, S the heuristic's row cap (here 256),
    while the dense path's (P, P) has 2.25e6."""
    monkeypatch.setattr(bandwidths_module, "HEURISTIC_MAX_ROWS", 256)
    g = torch.Generator().manual_seed(8)
    n, m, d, block = 800, 700, 8, 64
    x = torch.randn(n, d, generator=g, requires_grad=True)
    y = torch.randn(m, d, generator=g, requires_grad=True)
    with _LargestTensor() as mode:
        v = mmd(x, y, path="tiled", block_size=block)
        v.backward()
    # features augmented with 2 columns, the K = 5 exponentials of one tile, the heuristic's S^2
    bound = max((n + m) * (d + 2), 5 * block * block, 256 * 256)
    assert mode.largest <= bound < (n + m) ** 2
    with _LargestTensor() as mode:
        mmd(x, y, bandwidths=[1.0, 2.0], path="tiled", block_size=block).backward()
    assert mode.largest <= max((n + m) * (d + 2), 2 * block * block)
    with _LargestTensor() as mode:
        mmd(x, y, bandwidths=[1.0, 2.0], path="dense").backward()
    assert mode.largest >= (n + m) ** 2  # the check can fail: the dense path does allocate it
