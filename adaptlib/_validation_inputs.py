"""The input contract of :mod:`adaptlib.validation`: :class:`Predictions` (features, class
probabilities, optional labels) and the checks every validator runs on its arguments, so
that errors name the argument and target labels can never reach a validator.

:class:`Predictions` and :data:`TARGET_LABELS_MESSAGE` are public as
``adaptlib.validation.Predictions`` and ``adaptlib.validation.TARGET_LABELS_MESSAGE``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["Predictions", "TARGET_LABELS_MESSAGE"]

TARGET_LABELS_MESSAGE = (
    "target.labels must be None: target labels reach only the oracle (pass them to "
    "adaptlib.validation.oracle, never to a validator or to evaluate)"
)

_FLOAT_DTYPES = (torch.float32, torch.float64)
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
# |sum_c p_ic - 1| allowed for a row of class probabilities (float32 softmax errs by ~1e-7).
_PROB_SUM_TOL = 1e-4


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------
def _check_float_matrix(x: object, name: str, letters: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {letters}, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape {letters}, got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _f64(x: Tensor) -> Tensor:
    """A detached float64 CPU copy (views when already float64 on the CPU)."""
    return x.detach().to(device="cpu", dtype=torch.float64)


def _check_labels(y: object, n: int, num_classes: int, name: str) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},) or None, got {type(y).__name__}")
    if y.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must hold integer class indices 0..{num_classes - 1}, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one label per row), got shape {tuple(y.shape)}")
    if y.numel() and (bool((y < 0).any()) or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must hold class indices 0..{num_classes - 1} (C = probs.shape[1]), "
                         f"found values in [{int(y.min())}, {int(y.max())}]")
    return y.long()


@dataclass(frozen=True)
class Predictions:
    r"""What a trained model produced on one set of samples: features, class probabilities, labels.

    Attributes:
        features: ``(N, D)`` float32/float64 features of the samples, e.g. the bottleneck
            of an :class:`~adaptlib.AdaptModel` (used by the importance weights of ``iwv``
            and ``dev``). Finite.
        probs: ``(N, C)`` float32/float64 class probabilities (e.g. the softmax of the
            logits): entries ``>= 0`` and each row sums to 1 within ``1e-4``. The predicted
            class is ``argmax_c probs[i, c]`` (ties go to the lowest index).
        labels: ``(N,)`` integer class indices ``0..C-1`` (stored as int64), or ``None``
            for unlabelled data. **Target** predictions given to a validator or to
            :func:`evaluate` must have ``labels=None``; labelled *source* validation data
            carries them.

    All tensors must be on the same device. The checks run at construction.

    Raises:
        TypeError: a field is not a tensor, ``features``/``probs`` not float32/float64,
            ``labels`` not integer.
        ValueError: wrong shapes, different row counts, NaN/inf, negative probabilities,
            rows of ``probs`` not summing to 1, labels out of ``0..C-1``, tensors on
            different devices. The message names the field.
    """

    features: Tensor
    probs: Tensor
    labels: Optional[Tensor] = None

    def __post_init__(self) -> None:
        f = _check_float_matrix(self.features, "Predictions.features", "(N, D)")
        p = _check_float_matrix(self.probs, "Predictions.probs", "(N, C)")
        if p.shape[0] != f.shape[0]:
            raise ValueError(f"Predictions.probs must have one row per row of Predictions.features, "
                             f"got {p.shape[0]} and {f.shape[0]} rows")
        if p.device != f.device:
            raise ValueError(f"Predictions.features and Predictions.probs must be on the same device, "
                             f"got {f.device} and {p.device}")
        if bool((p < 0).any()):
            raise ValueError("Predictions.probs must be non-negative (class probabilities, e.g. softmax(logits))")
        err = float((_f64(p).sum(dim=1) - 1.0).abs().max())
        if err > _PROB_SUM_TOL:
            raise ValueError(f"each row of Predictions.probs must sum to 1 (class probabilities, e.g. "
                             f"softmax(logits), not logits); the largest |row sum - 1| is {err:.3g}")
        if self.labels is not None:
            y = _check_labels(self.labels, p.shape[0], p.shape[1], "Predictions.labels")
            if y.device != f.device:
                raise ValueError(f"Predictions.labels must be on the device of Predictions.features "
                                 f"({f.device}), got {y.device}")
            object.__setattr__(self, "labels", y)

    @property
    def num_classes(self) -> int:
        """``C``, the number of columns of ``probs``."""
        return int(self.probs.shape[1])

    def __len__(self) -> int:
        return int(self.probs.shape[0])


def _check_predictions(x: object, name: str) -> Predictions:
    if not isinstance(x, Predictions):
        raise TypeError(f"{name} must be an adaptlib.validation.Predictions, got {type(x).__name__}")
    return x


def _check_unlabelled_target(target: object) -> Predictions:
    target = _check_predictions(target, "target")
    if target.labels is not None:
        raise ValueError(TARGET_LABELS_MESSAGE)
    return target


def _check_compatible(source_val: Predictions, target: Predictions) -> None:
    if source_val.num_classes != target.num_classes:
        raise ValueError(f"source_val.probs and target.probs must have the same number of classes C, "
                         f"got {source_val.num_classes} and {target.num_classes}")
    if source_val.features.shape[1] != target.features.shape[1]:
        raise ValueError(f"source_val.features and target.features must have the same dimension D, "
                         f"got {source_val.features.shape[1]} and {target.features.shape[1]}")


def _check_pair(source_val: object, target: object, *, needs_source_labels: bool) -> None:
    target = _check_unlabelled_target(target)
    source_val = _check_predictions(source_val, "source_val")
    _check_compatible(source_val, target)
    if needs_source_labels and source_val.labels is None:
        raise ValueError("source_val.labels must be given: this validator scores the labelled source validation data")


def _check_weights(weights: object, n: int, name: str = "weights") -> Tensor:
    """Importance weights ``(n,)``: floating, finite, >= 0, positive sum; returned as float64 CPU."""
    if weights is None:
        raise ValueError(f"{name} must be given: the importance weights w(x) = p_target(x)/p_source(x) "
                         "of the source_val rows (see importance_weights, or let evaluate compute them)")
    if not isinstance(weights, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({n},), got {type(weights).__name__}")
    if not weights.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {weights.dtype}")
    if weights.dim() != 1 or weights.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) (one weight per source_val row), "
                         f"got shape {tuple(weights.shape)}")
    w = _f64(weights)
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")
    if not bool(w.sum() > 0):
        raise ValueError(f"{name} must have a positive sum")
    return w
