"""The Trainer's input conversion and checks: array-likes to tensors, label and input checks,
the per-batch checks of ``Dataset`` streams, batch sizes against data sizes, the probe of the
model's input shape (one row through the model, so a wrong feature dimension fails by name),
and :func:`_prepare_data`, which runs them all when :meth:`Trainer.fit` starts.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import Dataset

from ._checkpoint import checkpoint_to_resume
from ._trainer_modes import _record_modes, _restore_modes

LabeledData = Union[Tuple[Tensor, Tensor], Dataset, Any]
UnlabeledData = Union[Tensor, Dataset, Any]


_LABEL_HINT = ("Labels that are 1-based, have gaps or are not numbers: map them with "
               "`codes, classes = adaptlib.encode_labels(labels)` and build the model with num_classes=len(classes)")


def _check_labels(y: Any, name: str, num_classes: Optional[int]) -> None:
    """Raise unless ``y`` is a 1-D integer tensor of class indices in ``0..num_classes-1``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"{name} labels must be a tensor of integer class indices 0..C-1, got "
                        f"{type(y).__name__}. {_LABEL_HINT}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} labels must be integer class indices 0..C-1, got dtype {y.dtype}. {_LABEL_HINT}")
    if y.device.type == "meta":
        raise ValueError(f"{name} labels are on the meta device and hold no data")
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        allowed = f"0..{num_classes - 1} (the model has {num_classes} classes)" if num_classes else "0..C-1"
        raise ValueError(f"{name} labels must be class indices in {allowed}, got values {lo}..{hi}. {_LABEL_HINT}")


def _check_inputs(x: Any, name: str, dtype: Optional[torch.dtype]) -> None:
    """Raise unless ``x`` is a tensor with data, of the model's floating dtype if it is floating."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} inputs must be a tensor, got {type(x).__name__} (convert with torch.as_tensor)")
    if x.device.type == "meta":
        raise ValueError(f"{name} inputs are on the meta device and hold no data")
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        raise TypeError(f"{name} inputs are {x.dtype} but the model's parameters are {dtype}: convert the "
                        f"inputs (x.to({dtype})) or the model (model.to({x.dtype}))")


def _is_array_like(x: Any) -> bool:
    """A NumPy array or scalar, or a (nested) list of numbers or arrays: what :func:`_as_tensor` converts."""
    return isinstance(x, (np.ndarray, np.generic, list))


def _as_tensor(x: Any, name: str, what: str, dtype: Optional[torch.dtype]) -> Any:
    """``x`` as a tensor when it is array-like (else unchanged, for the checks to refuse by name).

    Floating inputs (``what == "inputs"``) get ``dtype`` (the model's; the default dtype when
    ``None``); integer labels (``what == "labels"``) become int64. Other kinds keep their dtype
    (float labels are then refused by :func:`_check_labels` with the ``encode_labels`` hint).
    """
    if isinstance(x, Tensor) or not _is_array_like(x):
        return x
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} {what} could not be read as an array ({e}); pass a tensor or a NumPy array") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} {what} must be numbers, got an array of dtype {arr.dtype}"
                        + (f". {_LABEL_HINT}" if what == "labels" else ""))
    t = torch.as_tensor(arr)
    if what == "inputs" and t.is_floating_point():
        return t.to(dtype or torch.get_default_dtype())
    if what == "labels" and arr.dtype.kind in "iu":
        return t.to(torch.int64)
    return t


def _as_labeled(data: LabeledData, name: str, num_classes: Optional[int],
                dtype: Optional[torch.dtype] = None) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    else:
        raise TypeError(f"{name} must be (x, y) tensors or arrays, an object with .x and .y, or a Dataset; got "
                        f"{type(data).__name__}")
    x, y = _as_tensor(x, name, "inputs", dtype), _as_tensor(y, name, "labels", None)
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name} must hold tensors, got {type(x).__name__} and {type(y).__name__} (convert "
                        f"numbers with torch.as_tensor; for labels that are not 0..C-1 indices use "
                        f"adaptlib.encode_labels)")
    if x.shape[0] != y.shape[0] or y.dim() != 1:
        raise ValueError(f"{name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    _check_inputs(x, name, dtype)
    _check_labels(y, name, num_classes)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x, y.long())


def _as_unlabeled(data: UnlabeledData, name: str, dtype: Optional[torch.dtype] = None) -> Tuple[str, Any]:
    if isinstance(data, Dataset):
        return "dataset", data
    if isinstance(data, Tensor):
        x = data
    elif isinstance(data, (np.ndarray, list)):
        x = _as_tensor(data, name, "inputs", dtype)
    elif hasattr(data, "x") and not isinstance(data, tuple):
        x = _as_tensor(data.x, name, "inputs", dtype)  # a Domain: only its inputs are read; its labels never reach the method
    else:
        raise TypeError(
            f"{name} must be an unlabelled tensor (M, ...), an object with .x, or a Dataset; got "
            f"{type(data).__name__}. Target labels belong in eval_sets (or target_labeled for methods that use them)"
        )
    if not isinstance(x, Tensor) or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor")
    _check_inputs(x, name, dtype)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} inputs contain NaN or inf")
    return "tensor", (x,)


def _batch_check(name: str, num_classes: Optional[int], dtype: Optional[torch.dtype]):
    """The per-batch check of a ``Dataset`` stream: inputs (and labels, for labelled data)."""
    def check(fields: Tuple[Any, ...]) -> None:
        _check_inputs(fields[0], name, dtype)
        if len(fields) > 1:
            _check_labels(fields[1], name, num_classes)
    return check


def _first_layer(module: nn.Module) -> Optional[nn.Module]:
    """The first ``nn.Linear`` or convolution among ``module``'s submodules (registration order)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            return m
    return None


_SHAPE_ERRORS = ("cannot be multiplied", "size mismatch", "channels", "shape")


def _shape_error(error: Exception, x: Tensor, name: str, model: nn.Module) -> Optional[ValueError]:
    """A ValueError naming ``name``'s dimension and the model's when ``error`` is an input-shape mismatch, else None."""
    layer = _first_layer(getattr(model, "backbone", model))
    if isinstance(layer, nn.Linear) and x.dim() == 2 and x.shape[1] != layer.in_features:
        return ValueError(f"{name} has {x.shape[1]} features but the model's backbone expects "
                          f"{layer.in_features} (its first layer is {layer}; inputs of shape {tuple(x.shape)})")
    if isinstance(layer, nn.modules.conv._ConvNd) and x.dim() >= 3 and x.shape[1] != layer.in_channels:
        return ValueError(f"{name} has {x.shape[1]} channels but the model's backbone expects "
                          f"{layer.in_channels} (its first layer is {layer}; inputs of shape {tuple(x.shape)})")
    if any(key in str(error) for key in _SHAPE_ERRORS):
        first = f" (the backbone's first layer is {layer})" if layer is not None else ""
        return ValueError(f"{name} inputs of shape {tuple(x.shape)} do not fit the model{first}: {error}")
    return None


def _probe(model: nn.Module, x: Tensor, name: str) -> None:
    """Run one row of ``x`` through ``model`` (eval mode, no gradient, modes restored after).

    Raises:
        ValueError: the row does not fit the model's input shape (naming both dimensions).
    Other errors of the probe are ignored here: training meets them at its first step.
    """
    modes = _record_modes(model)
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), x.device)
        with torch.no_grad():
            model(x[:1].to(device))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        error = _shape_error(e, x, name, model)
        if error is not None:
            raise error from None
    finally:
        _restore_modes(modes)


def _check_sizes(data: Mapping[str, Tuple[Any, ...]], batch_size: int, model: nn.Module, stacklevel: int) -> bool:
    """Warn about batches larger than their data; return whether some stream has one-row batches.

    ``data``: name -> ``(kind, payload, batch size, its argument's name, seed offset, keep)``, as
    :meth:`Trainer.fit` builds it; ``stacklevel`` points the warnings at the caller of ``fit``.

    Raises:
        ValueError: one-row batches with a batch-norm layer in train mode that keeps no running
            statistics (it can normalise neither in train nor in eval mode).
    """
    one_row = []
    for name, (kind, payload, size, arg, _, _) in data.items():
        n = len(payload) if kind == "dataset" else int(payload[0].shape[0])
        if n < size and name != "target_labeled":
            default = " (its default: batch_size)" if arg == "target_batch_size" and size == batch_size else ""
            warnings.warn(f"{name} has {n} rows but {arg} is {size}{default}: every {name} batch is the whole "
                          f"set, reshuffled ({n} rows)", UserWarning, stacklevel=stacklevel)
        if min(n, size) == 1:
            one_row.append(f"{name} has 1 row" if n == 1 else f"{arg} is 1")
    if not one_row:
        return False
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
    if not norms:
        return True
    what = " and ".join(one_row)
    stateless = [m for m in norms if m.running_mean is None]
    if stateless:
        raise ValueError(f"{what}, so its batches have one row, and the model has batch-norm layers in train "
                         f"mode without running statistics (track_running_stats=False, e.g. {stateless[0]}), "
                         f"which cannot normalise one row: pass at least 2 rows per batch")
    warnings.warn(f"{what}, so its batches have one row: batch-norm layers in train mode cannot compute batch "
                  f"statistics of one row; for one-row batches they normalise with their running statistics "
                  f"(as in eval mode) and do not update them. Pass more rows, or put the batch-norm layers in "
                  f"eval mode (the Trainer keeps each module's mode)", UserWarning, stacklevel=stacklevel)
    return True


def _prepare_data(trainer: Any, source: Optional[LabeledData], target: Optional[UnlabeledData],
                  target_labeled: Optional[LabeledData], eval_sets: Optional[Mapping[str, LabeledData]],
                  resume: Union[bool, str, os.PathLike]):
    """:meth:`Trainer.fit`'s set-up of the data, before anything is seeded or trained: the checkpoint to
    resume from, the inputs converted and checked, the warnings, the probe of the model's input
    shape, and the data streams.

    Returns ``(checkpoint or None, streams, evals, one_row, user_modes)``: ``evals`` maps each
    eval set's name to ``(kind, payload)``; ``one_row`` says whether some stream has one-row
    batches; ``user_modes`` are the model's modes as :meth:`Trainer.fit` found them. The warnings'
    ``stacklevel`` counts this function and ``fit``, so they point at ``fit``'s caller.
    """
    method, model = trainer.method, trainer.model
    num_classes = getattr(model, "num_classes", None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    checkpoint = checkpoint_to_resume(trainer, resume)
    if method.uses_target and target is None:
        raise ValueError(f"method {method.name!r} needs unlabelled target data: pass target=")
    if method.uses_target_labels and target_labeled is None:
        raise ValueError(f"method {method.name!r} trains on labelled target samples: pass target_labeled=")
    if not method.uses_target_labels and target_labeled is not None:
        raise ValueError(f"method {method.name!r} is unsupervised on the target: it must not get target_labeled")
    if method.uses_source and source is None:
        raise ValueError(f"method {method.name!r} trains on labelled source data: pass source=(x, y)")
    if not method.uses_source and source is not None:
        raise ValueError(f"method {method.name!r} adapts without source data (source-free: train the model on the "
                         "source first, e.g. with 'source-only'); it must not get source: pass source=None")
    data = {}
    if source is not None:
        src_kind, src = _as_labeled(source, "source", num_classes, dtype)
        if src_kind == "tensor" and num_classes is not None:
            missing = sorted(set(range(num_classes)) - set(torch.unique(src[1]).tolist()))
            if missing:
                warnings.warn(f"source labels never take the values {missing} of the model's {num_classes} classes "
                              f"0..{num_classes - 1}; if the labels are 1-based or have gaps, map them with "
                              "adaptlib.encode_labels and set num_classes=len(classes)", UserWarning, stacklevel=3)
        data["source"] = (src_kind, src, trainer.batch_size, "batch_size", 1, 2)
    if method.uses_target:
        kind, tgt = _as_unlabeled(target, "target", dtype)
        data["target"] = (kind, tgt, trainer.target_batch_size, "target_batch_size", 2, 1)
    if method.uses_target_labels:
        kind, tl = _as_labeled(target_labeled, "target_labeled", num_classes, dtype)
        data["target_labeled"] = (kind, tl, trainer.batch_size, "batch_size", 3, 2)
    evals = {name: _as_labeled(d, f"eval_sets[{name!r}]", num_classes, dtype)
             for name, d in (eval_sets or {}).items()}
    user_modes = _record_modes(model)
    if not any(training for _, training in user_modes):
        warnings.warn("the model is in eval mode at the start of fit: the Trainer keeps each module's mode, so "
                      "it trains in eval mode (dropout off, batch-norm statistics not updated). Call "
                      "model.train() before fit unless that is intended", UserWarning, stacklevel=3)
    one_row = _check_sizes(data, trainer.batch_size, model, stacklevel=4)
    # one row of every tensor input through the model: a wrong feature dimension fails here, by name
    model.to(trainer.device)
    probed = set()
    for name, (kind, payload) in ([(n, (d[0], d[1])) for n, d in data.items()]
                                  + [(f"eval_sets[{n!r}]", e) for n, e in evals.items()]):
        if kind == "tensor" and (tuple(payload[0].shape[1:]), payload[0].dtype) not in probed:
            _probe(model, payload[0], name)
            probed.add((tuple(payload[0].shape[1:]), payload[0].dtype))
    streams = {name: trainer._stream(kind, payload, size, offset, keep=keep,
                                  check=_batch_check(name, num_classes, dtype))
               for name, (kind, payload, size, _, offset, keep) in data.items()}
    return checkpoint, streams, evals, one_row, user_modes
