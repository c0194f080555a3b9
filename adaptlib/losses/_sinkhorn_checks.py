"""Argument checks of the Sinkhorn losses (:func:`~adaptlib.losses.sinkhorn`,
:func:`~adaptlib.losses.sinkhorn_divergence`, :class:`~adaptlib.losses.SinkhornLoss`): every
error names the offending argument."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._checks import check_positive
from ._validate import check_tensor_kind


def _check_cost(cost: object) -> Tensor:
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a torch.Tensor of shape (N, M), got {type(cost).__name__}")
    if not cost.is_floating_point():
        raise TypeError(f"cost must be a floating-point tensor, got dtype {cost.dtype}")
    check_tensor_kind(cost, "cost")
    if cost.dim() != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"cost must have shape (N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost contains NaN or inf")
    return cost


def _check_options(epsilon: float, max_iter: int, tol: float) -> Tuple[float, int, float]:
    eps = check_positive(epsilon, "epsilon")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    try:
        tol_f = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a non-negative number, got {tol!r}") from None
    if not (tol_f >= 0 and math.isfinite(tol_f)):
        raise ValueError(f"tol must be a finite non-negative number, got {tol!r}")
    return eps, max_iter, tol_f


def _check_init(init: object, n: int, m: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    if not isinstance(init, (tuple, list)) or len(init) != 2:
        raise TypeError("init must be a pair (f0, g0) of tensors of shapes (N,) and (M,)")
    out = []
    for t, size, name in ((init[0], n, "init[0] (f0)"), (init[1], m, "init[1] (g0)")):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor of shape ({size},)")
        if t.dim() != 1 or t.shape[0] != size:
            raise ValueError(f"{name} must have shape ({size},), got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on {like.device}, got {t.device}")
        t = t.detach().to(like.dtype)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        out.append(t.clone())
    return out[0], out[1]


def _check_scaling(scaling: object) -> Optional[float]:
    """``None`` (no epsilon scaling) or a ratio in (0, 1)."""
    if scaling is None:
        return None
    if isinstance(scaling, bool):
        raise TypeError(f"scaling must be None or a number in (0, 1), got {scaling!r}")
    try:
        s = float(scaling)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"scaling must be None or a number in (0, 1), got {scaling!r}") from None
    if not (0.0 < s < 1.0):
        raise ValueError(f"scaling must be None or a number in (0, 1), got {scaling!r}")
    return s


def _check_eps_dtype(eps: float, dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    if eps < info.tiny or not math.isfinite(1.0 / eps) or 1.0 / eps > info.max:
        raise ValueError(f"epsilon={eps:g} is outside the range representable in {dtype}")


def _check_block(block_size: object) -> Optional[int]:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be None or a positive integer, got {block_size!r}")
    return block_size
