r"""Tiled (block-streamed) Sinkhorn primitives in plain torch, for any device.

The squared Euclidean cost :math:`C_{ij} = \|x_i - y_j\|^2` is never stored: every function
below walks over blocks of ``block`` rows by ``block`` columns, recomputes the block of the
cost with one matmul (:math:`\|x_i\|^2 + \|y_j\|^2 - 2 x_i^\top y_j`, clamped at 0) and folds
it into per-row (and per-column) accumulators. Log-sum-exp reductions use the online maximum
of flash-attention (Dao et al., "FlashAttention", NeurIPS 2022; Milakov & Gimelshein,
"Online normalizer calculation for softmax", 2018): a running maximum ``m`` and a running
sum ``s`` of ``exp(t - m)``, rescaled by ``exp(m_old - m_new)`` when the maximum grows.

Memory: the inputs, ``O((N + M) D)`` accumulators and a few ``block x block`` temporaries,
whatever ``N`` and ``M``. Inputs must already be in the compute dtype (float32 or float64)
and on one device; the callers in :mod:`adaptlib.losses.sinkhorn` check and cast them.
These functions run under ``torch.no_grad`` and return detached tensors.
"""
from __future__ import annotations

from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["DEFAULT_BLOCK", "softmin", "plan_stats", "plan_block"]

#: Rows and columns per block: a float32 block of the cost is ``DEFAULT_BLOCK**2 * 4`` bytes (16 MiB).
DEFAULT_BLOCK: int = 2048


def _blocks(n: int, block: int) -> Iterator[Tuple[int, int]]:
    for i0 in range(0, n, block):
        yield i0, min(i0 + block, n)


def _cost_block(x: Tensor, y: Tensor, xx: Tensor, yy: Tensor) -> Tensor:
    """``(n, m)`` block of the squared Euclidean cost from points and their squared norms."""
    c = torch.mm(x, y.T).mul_(-2.0)
    c.add_(xx.unsqueeze(1)).add_(yy.unsqueeze(0))
    return c.clamp_min_(0.0)


@torch.no_grad()
def softmin(
    x: Tensor,
    y: Tensor,
    g: Tensor,
    log_b: Tensor,
    eps: float,
    block: int = DEFAULT_BLOCK,
    xx: Optional[Tensor] = None,
    yy: Optional[Tensor] = None,
) -> Tensor:
    r"""Soft minimum over the columns: :math:`-\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}`.

    This is the Sinkhorn update of the source potential :math:`f` from the target potential
    :math:`g` (swap the roles of ``x``/``y`` for the update of :math:`g`).

    Args:
        x: ``(N, D)`` points of the rows; ``y``: ``(M, D)`` points of the columns.
        g: ``(M,)`` column potential, in cost units.
        log_b: ``(M,)`` log of the column weights (``-inf`` for zero weights).
        eps: regularisation :math:`\varepsilon > 0` in cost units.
        block: rows and columns per block.
        xx, yy: optional precomputed squared norms of the rows of ``x`` and ``y``.

    Returns:
        ``(N,)`` tensor; ``+inf`` for a row whose every term underflows or is masked.
    """
    xx = (x * x).sum(1) if xx is None else xx
    yy = (y * y).sum(1) if yy is None else yy
    inv = 1.0 / eps
    h = log_b + g * inv  # (M,)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i0, i1 in _blocks(x.shape[0], block):
        m = torch.full((i1 - i0,), float("-inf"), dtype=x.dtype, device=x.device)
        s = torch.zeros(i1 - i0, dtype=x.dtype, device=x.device)
        for j0, j1 in _blocks(y.shape[0], block):
            t = _cost_block(x[i0:i1], y[j0:j1], xx[i0:i1], yy[j0:j1])
            t.mul_(-inv).add_(h[j0:j1].unsqueeze(0))  # log b_j + (g_j - C_ij) / eps
            m_new = torch.maximum(m, t.amax(1))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            s = s * torch.exp(m - m_safe) + t.sub_(m_safe.unsqueeze(1)).exp_().sum(1)
            m = m_new
        out[i0:i1] = -eps * (m + torch.log(s))
    return out


@torch.no_grad()
def plan_stats(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    eps: float,
    block: int = DEFAULT_BLOCK,
    moments: bool = False,
) -> Dict[str, Tensor]:
    r"""Marginals, transport cost (and first moments) of :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}`.

    One pass over the blocks. Returns a dict with ``"row_sum"`` ``(N,)`` :math:`P 1`,
    ``"col_sum"`` ``(M,)`` :math:`P^\top 1`, ``"cost"`` (0-dim) :math:`\langle P, C\rangle`,
    and with ``moments=True`` also ``"Py"`` ``(N, D)`` :math:`P y` and ``"Ptx"`` ``(M, D)``
    :math:`P^\top x` (the terms of the envelope gradient
    :math:`\partial \langle P, C\rangle / \partial x_i = 2 ((P1)_i x_i - (P y)_i)`).
    """
    xx, yy = (x * x).sum(1), (y * y).sum(1)
    inv = 1.0 / eps
    row_sum = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    col_sum = torch.zeros(y.shape[0], dtype=x.dtype, device=x.device)
    cost = torch.zeros((), dtype=x.dtype, device=x.device)
    Py = torch.zeros_like(x) if moments else None
    Ptx = torch.zeros_like(y) if moments else None
    hr = log_a + f * inv
    hc = log_b + g * inv
    for i0, i1 in _blocks(x.shape[0], block):
        for j0, j1 in _blocks(y.shape[0], block):
            c = _cost_block(x[i0:i1], y[j0:j1], xx[i0:i1], yy[j0:j1])
            p = c.mul(-inv).add_(hr[i0:i1].unsqueeze(1)).add_(hc[j0:j1].unsqueeze(0)).exp_()
            row_sum[i0:i1] += p.sum(1)
            col_sum[j0:j1] += p.sum(0)
            cost += (p * c).sum()
            if moments:
                Py[i0:i1] += p @ y[j0:j1]
                Ptx[j0:j1] += p.T @ x[i0:i1]
    out = {"row_sum": row_sum, "col_sum": col_sum, "cost": cost}
    if moments:
        out["Py"], out["Ptx"] = Py, Ptx
    return out


@torch.no_grad()
def plan_block(
    x: Tensor,
    y: Tensor,
    f: Tensor,
    g: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    eps: float,
) -> Tensor:
    r"""The block :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}` for the given rows ``x`` ``(n, D)`` and columns ``y`` ``(m, D)``."""
    c = _cost_block(x, y, (x * x).sum(1), (y * y).sum(1))
    return c.mul_(-1.0 / eps).add_((log_a + f / eps).unsqueeze(1)).add_((log_b + g / eps).unsqueeze(0)).exp_()
