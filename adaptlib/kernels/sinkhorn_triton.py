r"""Fused Triton kernels for the tiled Sinkhorn primitives (same maths as :mod:`.sinkhorn_tiled`).

Each program instance owns ``BLOCK_N`` rows and streams over the columns in tiles of
``BLOCK_M``: it recomputes the tile of the squared Euclidean cost
:math:`\|x_i\|^2 + \|y_j\|^2 - 2 x_i^\top y_j` (clamped at 0) with ``tl.dot`` over chunks of
``BLOCK_D`` features (IEEE precision, no TF32) and folds it into

* ``_softmin_kernel``: the online log-sum-exp (running maximum and rescaled sum, as in
  flash-attention, Dao et al. 2022) of :math:`\log b_j + (g_j - C_{ij})/\varepsilon`,
  giving the Sinkhorn update :math:`f_i = -\varepsilon\,\mathrm{LSE}_j(\cdot)`;
* ``_plan_rows_kernel``: row sums :math:`\sum_j P_{ij}`, row costs
  :math:`\sum_j P_{ij} C_{ij}` and optionally :math:`(P y)_i` of the plan
  :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}` (column quantities: call
  with the roles of ``x``/``y`` swapped).

Nothing of size ``N x M`` is ever allocated. The kernels run on CUDA, and on the CPU under
``TRITON_INTERPRET=1`` (Triton's interpreter, slow, used by the tests). Inputs must be
contiguous, in float32 or float64 and on one device; the callers cast and check them.
"""
from __future__ import annotations

from typing import Dict

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["softmin", "plan_stats"]


@triton.jit
def _cost_tile(
    X, Y, XX, YY, rows, cols, rmask, cmask, D,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    dot = tl.zeros([BLOCK_N, BLOCK_M], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        dk = d0 + tl.arange(0, BLOCK_D)
        dmask = dk < D
        xb = tl.load(X + rows[:, None] * D + dk[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
        yb = tl.load(Y + cols[:, None] * D + dk[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0)
        dot += tl.dot(xb, tl.trans(yb), input_precision="ieee")
    xx = tl.load(XX + rows, mask=rmask, other=0.0)
    yy = tl.load(YY + cols, mask=cmask, other=0.0)
    return tl.maximum(xx[:, None] + yy[None, :] - 2.0 * dot, 0.0)


@triton.jit
def _softmin_kernel(
    X, Y, XX, YY, G, LB, OUT, N, M, D, inv_eps, eps,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    m_i = tl.full([BLOCK_N], float("-inf"), dtype=ACC)
    s_i = tl.zeros([BLOCK_N], dtype=ACC)
    for j0 in range(0, M, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M)
        cmask = cols < M
        c = _cost_tile(X, Y, XX, YY, rows, cols, rmask, cmask, D, BLOCK_N, BLOCK_M, BLOCK_D, ACC)
        g = tl.load(G + cols, mask=cmask, other=0.0)
        lb = tl.load(LB + cols, mask=cmask, other=float("-inf"))
        t = lb[None, :] + (g[None, :] - c) * inv_eps
        t = tl.where(cmask[None, :], t, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(t, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s_i = s_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(t - m_safe[:, None]), axis=1)
        m_i = m_new
    out = -eps * (m_i + tl.log(s_i))
    tl.store(OUT + rows, out, mask=rmask)


@triton.jit
def _plan_rows_kernel(
    X, Y, XX, YY, F, G, LA, LB, ROWSUM, ROWCOST, PY, N, M, D, inv_eps,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
    MOMENTS: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    dko = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # output feature chunk of P y
    domask = dko < D
    f = tl.load(F + rows, mask=rmask, other=0.0)
    la = tl.load(LA + rows, mask=rmask, other=float("-inf"))
    rsum = tl.zeros([BLOCK_N], dtype=ACC)
    rcost = tl.zeros([BLOCK_N], dtype=ACC)
    py = tl.zeros([BLOCK_N, BLOCK_D], dtype=ACC)
    for j0 in range(0, M, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M)
        cmask = cols < M
        c = _cost_tile(X, Y, XX, YY, rows, cols, rmask, cmask, D, BLOCK_N, BLOCK_M, BLOCK_D, ACC)
        g = tl.load(G + cols, mask=cmask, other=0.0)
        lb = tl.load(LB + cols, mask=cmask, other=float("-inf"))
        t = la[:, None] + lb[None, :] + (f[:, None] + g[None, :] - c) * inv_eps
        p = tl.where(rmask[:, None] & cmask[None, :], tl.exp(t), 0.0)
        rsum += tl.sum(p, axis=1)
        rcost += tl.sum(p * c, axis=1)
        if MOMENTS:
            yb = tl.load(Y + cols[:, None] * D + dko[None, :], mask=cmask[:, None] & domask[None, :], other=0.0)
            py += tl.dot(p, yb, input_precision="ieee")
    if tl.program_id(1) == 0:
        tl.store(ROWSUM + rows, rsum, mask=rmask)
        tl.store(ROWCOST + rows, rcost, mask=rmask)
    if MOMENTS:
        tl.store(PY + rows[:, None] * D + dko[None, :], py, mask=rmask[:, None] & domask[None, :])


def _acc(dtype: torch.dtype):
    if dtype == torch.float64:
        return tl.float64
    if dtype == torch.float32:
        return tl.float32
    raise TypeError(f"the Triton Sinkhorn kernels take float32 or float64 tensors, got {dtype}")


def _blocks(n: int, m: int, d: int, block_n: int, block_m: int, block_d: int):
    """Power-of-two tile sizes, at least 16 (``tl.dot``'s minimum) and no larger than needed."""
    def fit(b: int, size: int) -> int:
        return max(16, min(triton.next_power_of_2(b), triton.next_power_of_2(size)))

    return fit(block_n, n), fit(block_m, m), fit(block_d, d)


def softmin(
    x: Tensor, y: Tensor, g: Tensor, log_b: Tensor, eps: float,
    block_n: int = 64, block_m: int = 64, block_d: int = 32,
) -> Tensor:
    r"""Triton version of :func:`adaptlib.kernels.sinkhorn_tiled.softmin`:
    :math:`-\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}` for ``x`` ``(N, D)``,
    ``y`` ``(M, D)``, ``g``/``log_b`` ``(M,)``; returns ``(N,)``."""
    x, y, g, log_b = x.contiguous(), y.contiguous(), g.contiguous(), log_b.contiguous()
    n, d = x.shape
    m = y.shape[0]
    bn, bm, bd = _blocks(n, m, d, block_n, block_m, block_d)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    _softmin_kernel[(triton.cdiv(n, bn),)](
        x, y, (x * x).sum(1), (y * y).sum(1), g, log_b, out, n, m, d, 1.0 / eps, eps,
        BLOCK_N=bn, BLOCK_M=bm, BLOCK_D=bd, ACC=_acc(x.dtype),
    )
    return out


def _rows(x, y, f, g, log_a, log_b, eps, moments, block_n, block_m, block_d):
    n, d = x.shape
    m = y.shape[0]
    bn, bm, bd = _blocks(n, m, d, block_n, block_m, block_d)
    rsum = torch.empty(n, dtype=x.dtype, device=x.device)
    rcost = torch.empty(n, dtype=x.dtype, device=x.device)
    py = torch.empty_like(x) if moments else rsum
    grid = (triton.cdiv(n, bn), triton.cdiv(d, bd) if moments else 1)
    _plan_rows_kernel[grid](
        x, y, (x * x).sum(1), (y * y).sum(1), f, g, log_a, log_b, rsum, rcost, py, n, m, d, 1.0 / eps,
        BLOCK_N=bn, BLOCK_M=bm, BLOCK_D=bd, ACC=_acc(x.dtype), MOMENTS=moments,
    )
    return rsum, rcost, (py if moments else None)


def plan_stats(
    x: Tensor, y: Tensor, f: Tensor, g: Tensor, log_a: Tensor, log_b: Tensor, eps: float,
    moments: bool = False, block_n: int = 64, block_m: int = 64, block_d: int = 32,
) -> Dict[str, Tensor]:
    """Triton version of :func:`adaptlib.kernels.sinkhorn_tiled.plan_stats` (same keys):
    one kernel launch for the row quantities and one, with ``x``/``y`` swapped, for the columns."""
    x, y = x.contiguous(), y.contiguous()
    f, g, log_a, log_b = f.contiguous(), g.contiguous(), log_a.contiguous(), log_b.contiguous()
    rsum, rcost, py = _rows(x, y, f, g, log_a, log_b, eps, moments, block_n, block_m, block_d)
    csum, _, ptx = _rows(y, x, g, f, log_b, log_a, eps, moments, block_m, block_n, block_d)
    out = {"row_sum": rsum, "col_sum": csum, "cost": rcost.sum()}
    if moments:
        out["Py"], out["Ptx"] = py, ptx
    return out
