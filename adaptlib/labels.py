"""Class labels: map arbitrary label values to the class indices ``0..C-1`` the Trainer takes.

The :class:`~adaptlib.Trainer` refuses labels outside ``0..C-1`` instead of guessing what
they mean (a 1-based label set silently trained as 0-based would shift every class by one).
:func:`encode_labels` does the conversion once, explicitly, and returns the class values so
predictions can be mapped back.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["encode_labels"]


def _values(labels: Any) -> list:
    if isinstance(labels, Tensor):
        if labels.dim() != 1:
            raise ValueError(f"labels must be one-dimensional (N,), got shape {tuple(labels.shape)}")
        return labels.detach().cpu().tolist()
    if hasattr(labels, "__array__") and not isinstance(labels, (list, tuple)):  # numpy arrays, pandas Series
        import numpy as np

        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise ValueError(f"labels must be one-dimensional (N,), got shape {arr.shape}")
        return arr.tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a 1-D tensor, array or sequence, got {type(labels).__name__}")
    return list(labels)


def encode_labels(labels: Any, classes: Optional[Sequence[Hashable]] = None) -> Tuple[Tensor, Tuple[Any, ...]]:
    """Map label values to class indices: ``codes[i] = classes.index(labels[i])``.

    Use it when labels are not already ``0..C-1``: 1-based (``1..C``), with gaps
    (``{0, 2, 5}``), strings (``"bike"``), or floats holding integers. Encode the source
    first, then the target's evaluation labels **with the same** ``classes``, so that one
    class gets the same index in both domains even when a domain lacks some classes::

        ys, classes = encode_labels(source_labels)            # classes sorted: (0, 2, 5)
        yt, _ = encode_labels(target_labels, classes=classes)  # same mapping
        model = AdaptModel(backbone, num_classes=len(classes))
        ...
        predicted = [classes[i] for i in trainer.predict(xt).argmax(1).tolist()]

    Args:
        labels: ``(N,)`` labels: a 1-D tensor (any dtype), a 1-D numpy array (numbers,
            strings or objects), or a list/tuple of hashable values. ``N >= 1``.
        classes: the class values in index order. ``None``: the sorted distinct values of
            ``labels`` (numbers numerically, strings alphabetically).

    Returns:
        ``(codes, classes)``: ``codes`` an int64 CPU tensor ``(N,)`` with values in
        ``0..len(classes)-1``, and ``classes`` a tuple of plain Python values (``int``,
        ``float``, ``str``, ...) with ``classes[codes[i]] == labels[i]``.

    Raises:
        TypeError: ``labels`` is not a 1-D sequence, or its values cannot be sorted together
            (e.g. ints mixed with strings; pass ``classes`` to give the order).
        ValueError: ``labels`` is empty or not 1-D, holds NaN, ``classes`` repeats a value, or a
            label is not among the given ``classes`` (the message lists some of them).

    Example:
        >>> codes, classes = encode_labels(torch.tensor([1, 3, 3, 2]))
        >>> codes.tolist(), classes
        ([0, 2, 2, 1], (1, 2, 3))
    """
    values = _values(labels)
    if not values:
        raise ValueError("labels is empty")
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        raise ValueError("labels contain NaN: drop or label those samples first")
    if classes is None:
        try:
            ordered = tuple(sorted(set(values)))
        except TypeError:
            kinds = sorted({type(v).__name__ for v in values})
            raise TypeError(f"labels mix values that cannot be sorted together ({', '.join(kinds)}): "
                            "pass classes= to give the class order") from None
    else:
        ordered = tuple(_values(classes) if not isinstance(classes, tuple) else classes)
        if len(set(ordered)) != len(ordered):
            raise ValueError(f"classes must be distinct, got {ordered!r}")
    index = {c: i for i, c in enumerate(ordered)}
    unknown = {v for v in values if v not in index}
    if unknown:
        some = sorted(map(repr, unknown))[:5]
        raise ValueError(f"labels has {len(unknown)} value(s) not in classes, e.g. {', '.join(some)}; "
                         f"classes are {ordered!r}")
    return torch.tensor([index[v] for v in values], dtype=torch.int64), ordered
