"""Input validation shared by losses, methods and the trainer.

Every public entry point checks its tensors here so that bad input fails early with an
error that names the argument and says what was expected, instead of producing NaN.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

_VALUE_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("adaptlib_value_checks", default=True)


def value_checks_enabled() -> bool:
    """Whether checks that read tensor values (NaN/inf scans) run; True unless inside :func:`skip_value_checks`."""
    return _VALUE_CHECKS.get()


@contextlib.contextmanager
def skip_value_checks() -> Iterator[None]:
    """Skip the NaN/inf scans of loss inputs inside this block (shape, dtype and device checks stay).

    The Trainer uses it around a method's loss computation: it has checked its input data
    once, and it checks every step's total loss before ``backward``, so a non-finite value
    is still caught at the step where it appears, without a full scan of every feature
    tensor at every step.
    """
    token = _VALUE_CHECKS.set(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def check_features(x: object, name: str, *, min_rows: int = 1, finite: bool = True) -> Tensor:
    """Check that ``x`` is a floating-point tensor of shape ``(N, D)`` with ``N >= min_rows``.

    Raises:
        TypeError: ``x`` is not a tensor or not floating point.
        ValueError: wrong number of dimensions, too few rows, zero columns, or non-finite
            entries (when ``finite``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got shape {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(x.shape)}")
    if finite and _VALUE_CHECKS.get() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_same_space(x: Tensor, y: Tensor, x_name: str, y_name: str) -> None:
    """Check that two feature tensors share feature dimension, dtype and device."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same feature dimension D, "
            f"got {x.shape[1]} and {y.shape[1]}"
        )
    if x.dtype != y.dtype:
        raise TypeError(f"{x_name} and {y_name} must have the same dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(
            f"{x_name} and {y_name} must be on the same device, got {x.device} and {y.device}"
        )


def check_weights(w: Optional[Tensor], n: int, like: Tensor, name: str) -> Tensor:
    """Return probability weights of shape ``(n,)`` (uniform when ``w`` is None).

    Given weights must be a 1-d tensor of length ``n``, finite, non-negative and with a
    positive sum; they are normalised to sum to one and cast to ``like``'s dtype and device.
    """
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    if not isinstance(w, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},), got {type(w).__name__}")
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(w.shape)}")
    if w.device != like.device:
        raise ValueError(f"{name} must be on {like.device}, got {w.device}")
    w = w.to(like.dtype)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"{name} must have a positive sum")
    return w / total


def check_labels(y: object, n: int, name: str, num_classes: Optional[int] = None) -> Tensor:
    """Check integer class labels of shape ``(n,)`` with values in ``0..num_classes-1``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},), got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices 0..C-1, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.numel() and bool((y < 0).any()):
        raise ValueError(f"{name} must hold class indices 0..C-1, found a negative label")
    if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} must hold class indices 0..{num_classes - 1}, found label {int(y.max())}"
        )
    return y.long()


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Check that a string option is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_positive(value: float, name: str) -> float:
    """Check that a scalar hyper-parameter is a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0 and v < float("inf")):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def check_non_negative(value: float, name: str) -> float:
    """Check that a loss weight (a method's ``trade_off``) is a finite number ``>= 0``; return it as a float.

    0 switches the term off; a negative weight would turn the minimised term into a maximised
    one (DANN's features would then help the discriminator), so it is refused.

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is negative, NaN or infinite.
    """
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a non-negative number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-negative number, got {value!r}") from None
    if not (0.0 <= v < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0 (0 switches the term off; a negative weight would "
                         f"maximise the term instead of minimising it), got {value!r}")
    return v
