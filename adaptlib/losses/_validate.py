"""Input checks specific to the alignment losses (on top of :mod:`adaptlib._checks`).

The distance-based losses (MMD, JMMD, CORAL, Sinkhorn, JDOT) exponentiate or square
distances, which overflows or loses all precision in half precision, so they accept float32
and float64 only. Type, dtype and device are checked *before* any value is read, so a
tensor on another device (or a ``meta`` tensor) gives an error naming the argument instead
of a failure inside a reduction.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Sequence, Tuple

import torch
from torch import Tensor

from .._checks import check_features, check_same_space, value_checks_enabled

SUPPORTED_DTYPES: Tuple[torch.dtype, ...] = (torch.float32, torch.float64)


def check_tensor_kind(x: object, name: str, *, half_ok: bool = False) -> Tensor:
    """``x`` is a floating tensor (float32/float64 unless ``half_ok``); reads no values."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not half_ok and x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got {x.dtype} (squared distances and their "
            f"exponentials overflow or lose all precision in half precision; cast with .float())"
        )
    return x


def check_same_kind(tensors: Sequence[Tuple[Tensor, str]]) -> None:
    """All tensors share the dtype and device of the first one; reads no values."""
    ref, ref_name = tensors[0]
    for t, name in tensors[1:]:
        if t.dtype != ref.dtype:
            raise TypeError(f"{ref_name} and {name} must have the same dtype, got {ref.dtype} and {t.dtype}")
        if t.device != ref.device:
            raise ValueError(
                f"{ref_name} and {name} must be on the same device, got {ref.device} and {t.device}"
            )


def check_feature_pair(x: object, y: object, x_name: str, y_name: str, *, half_ok: bool = False) -> None:
    """Full check of two ``(N, D)`` / ``(M, D)`` feature batches of one loss."""
    check_tensor_kind(x, x_name, half_ok=half_ok)
    check_tensor_kind(y, y_name, half_ok=half_ok)
    check_same_kind([(x, x_name), (y, y_name)])
    check_features(x, x_name)
    check_features(y, y_name)
    check_same_space(x, y, x_name, y_name)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a distance loss computes in: float64 stays float64; float32, float16 and
    bfloat16 are computed in float32 (squared distances and their exponentials overflow or
    lose all precision in half precision)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def no_autocast(device: torch.device) -> ContextManager:
    """Disable ``torch.autocast`` on ``device`` (it would run the distance matmuls in half
    precision); a no-op context on other device types."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def check_logits(x: object, name: str, *, min_classes: int = 1, cols: str = "C") -> Tensor:
    """``x`` is a floating ``(N, C)`` tensor with ``N >= 1``, ``C >= min_classes``, finite values.

    ``cols`` names the second dimension in messages (``"D"`` for features).

    Any floating dtype is accepted (the prediction losses compute half precision in float32).
    The NaN/inf scan is skipped inside :func:`adaptlib._checks.skip_value_checks`.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, {cols}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, {cols}), got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} needs at least one row, got shape {tuple(x.shape)}")
    if x.shape[1] < min_classes:
        raise ValueError(f"{name} needs at least {min_classes} column(s), got shape {tuple(x.shape)}")
    if value_checks_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x
