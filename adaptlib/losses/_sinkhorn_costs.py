"""Squared Euclidean costs and the softmin operators of the tiled and Triton paths, for
the Sinkhorn solvers of :mod:`adaptlib.losses.sinkhorn`.

Every cost is computed on clouds shifted by the first source row (:func:`_shifted`): the
shift changes neither the cost nor its gradient but avoids the cancellation of the matmul
expansion ``|x|^2 + |y|^2 - 2 x.y`` for data with a large common offset.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..kernels import sinkhorn_tiled as _tiled


def _sq_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean cost ``(N, M)`` by matmul expansion, clamped at 0.

    Both clouds are shifted by the (detached) first source row first; this changes neither
    the cost nor its gradient but avoids the cancellation of the expansion for data with a
    large common offset.
    """
    ref = x[:1].detach()
    x = x - ref
    y = y - ref
    xx = (x * x).sum(dim=1)
    yy = (y * y).sum(dim=1)
    return (xx.unsqueeze(1) + yy.unsqueeze(0) - 2.0 * (x @ y.T)).clamp_min(0)


@torch.no_grad()
def _sq_cost_nograd(x: Tensor, y: Tensor) -> Tensor:
    """Detached ``(N, M)`` squared Euclidean cost of already shifted points: one ``addmm``
    plus in-place passes (no temporaries of size ``N x M`` beyond the result)."""
    c = torch.addmm((y * y).sum(1).unsqueeze(0), x, y.T, beta=1.0, alpha=-2.0)
    return c.add_((x * x).sum(1).unsqueeze(1)).clamp_min_(0.0)


def _frobenius(p: Tensor, c: Tensor, rows: int = 256) -> Tensor:
    """``sum(p * c)`` by blocks of rows: pairwise-summation accuracy without an ``N x M`` temporary."""
    return sum(((p[i:i + rows] * c[i:i + rows]).sum() for i in range(0, p.shape[0], rows)), p.new_zeros(()))


@torch.no_grad()
def _shifted(x: Tensor, y: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Detached copies of both clouds in ``dtype``, shifted by the first source row.

    The shift changes neither the cost nor its gradient but avoids the cancellation of the
    matmul expansion for data with a large common offset.
    """
    ref = x[:1].detach().to(dtype)
    return (x.detach().to(dtype) - ref).contiguous(), (y.detach().to(dtype) - ref).contiguous()


def _bbox_range(xs: Tensor, ys: Tensor) -> float:
    """Squared diameter of the bounding box of both clouds, an upper bound on ``max C - min C``."""
    lo = torch.minimum(xs.amin(0), ys.amin(0))
    hi = torch.maximum(xs.amax(0), ys.amax(0))
    return float(((hi - lo) ** 2).sum())


def _kernels(path: str, block: Optional[int]):
    """``(softmin, plan_stats)`` of the tiled or Triton path with a common signature."""
    if path == "tiled":
        bs = block or _tiled.DEFAULT_BLOCK

        def softmin(x, y, h, lw, e):
            return _tiled.softmin(x, y, h, lw, e, block=bs)

        def stats(x, y, f, g, la, lb, e, moments):
            return _tiled.plan_stats(x, y, f, g, la, lb, e, block=bs, moments=moments)

        return softmin, stats
    from ..kernels import sinkhorn_triton as _tri  # imported lazily: needs triton

    kw = {} if block is None else {"block_n": block, "block_m": block}

    def softmin_t(x, y, h, lw, e):
        return _tri.softmin(x, y, h, lw, e, **kw)

    def stats_t(x, y, f, g, la, lb, e, moments):
        return _tri.plan_stats(x, y, f, g, la, lb, e, moments=moments, **kw)

    return softmin_t, stats_t
