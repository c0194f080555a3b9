"""The Trainer's forward passes without training: chunked prediction, accuracy (tensors or a
``Dataset``, sharded over processes in a multi-process run), and the outputs on the whole
unlabelled target set that a method may ask for (:meth:`~adaptlib.methods.Method.needs_target_outputs`).

Every function here runs the model in eval mode under ``torch.no_grad()`` and gives each
module its mode back afterwards; the public entry points are :meth:`Trainer.predict`,
:meth:`Trainer.evaluate` and :meth:`Trainer.fit`.
"""
from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from . import distributed as _dist
from ._streams import DatasetStream, TensorStream
from ._trainer_inputs import _shape_error
from ._trainer_modes import _record_modes, _restore_modes
from .models import ModelOutput


@torch.no_grad()
def predict_logits(model: nn.Module, device: torch.device, x: Tensor, name: str, batch_size: int = 4096) -> Tensor:
    """``(N, C)`` logits of inputs ``x`` ``(N, ...)`` on the CPU, in chunks of ``batch_size`` rows, in eval mode.

    Raises:
        ValueError: the first chunk does not fit the model's input shape (naming ``name`` and both sizes).
    """
    modes = _record_modes(model)
    model.eval()
    model.to(device)
    outs = []
    try:
        for i in range(0, x.shape[0], batch_size):
            chunk = x[i:i + batch_size]
            try:
                outs.append(model(chunk.to(device)).logits)
            except RuntimeError as e:
                error = _shape_error(e, chunk, name, model) if i == 0 else None
                if error is None:
                    raise
                raise error from None
    finally:
        _restore_modes(modes)
    if not outs:
        return torch.empty(0, getattr(model, "num_classes", 0), dtype=x.dtype if x.is_floating_point() else None)
    return torch.cat(outs).cpu()


@torch.no_grad()
def dataset_counts(model: nn.Module, device: torch.device, dataset: Dataset) -> Tuple[int, int]:
    """``(correct, total)`` of the model's argmax predictions on a ``Dataset`` of ``(x, y)`` items, in eval mode."""
    correct = total = 0
    modes = _record_modes(model)
    model.eval()
    try:
        for xb, yb in DataLoader(dataset, batch_size=1024):
            pred = model(xb.to(device)).logits.argmax(1).cpu()
            correct += int((pred == yb).sum())
            total += int(yb.numel())
    finally:
        _restore_modes(modes)
    return correct, total


@torch.no_grad()
def accuracy(model: nn.Module, device: torch.device, payload: Any, kind: str, name: str = "data") -> float:
    """Accuracy in [0, 1] on labelled data: ``kind == "tensor"`` with ``payload = (x, y)``, or a ``Dataset``.

    In a multi-process run rank ``r`` of ``W`` evaluates samples ``r, r + W, ...`` and the counts
    are summed over the ranks (a collective: every rank must call it).
    """
    if _dist.is_distributed():
        r, w = _dist.rank(), _dist.world_size()
        if kind == "tensor":
            x, y = payload[0][r::w], payload[1][r::w]
            hits = int((predict_logits(model, device, x, name).argmax(1) == y.cpu()).sum()) if y.numel() else 0
            correct, total = _dist.all_reduce_sum_counts((hits, int(y.numel())))
        else:
            shard = torch.utils.data.Subset(payload, range(r, len(payload), w))
            correct, total = _dist.all_reduce_sum_counts(dataset_counts(model, device, shard))
        return correct / max(total, 1)
    if kind == "tensor":
        x, y = payload
        return int((predict_logits(model, device, x, name).argmax(1) == y.cpu()).sum()) / max(int(y.numel()), 1)
    correct, total = dataset_counts(model, device, payload)
    return correct / max(total, 1)


@torch.no_grad()
def target_outputs(model: nn.Module, stream: Any, batch_size: int = 1024) -> ModelOutput:
    """The model's outputs on every row of the unlabelled target set behind ``stream``, in row order.

    ``stream`` is the Trainer's target stream (a :class:`TensorStream` or a :class:`DatasetStream`,
    whose first field of each item is the input). Runs in eval mode without gradient, in chunks of
    ``batch_size`` rows, on the stream's device; returns ``features`` ``(M, F)`` and ``logits``
    ``(M, C)`` on that device, row ``i`` for target row ``i`` (the ``index`` of
    :class:`~adaptlib.methods.UnlabeledBatch`). Every process computes the whole set.
    """
    modes = _record_modes(model)
    model.eval()
    features, logits = [], []
    try:
        if isinstance(stream, TensorStream):
            x = stream.tensors[0]
            chunks = (x[i:i + batch_size] for i in range(0, x.shape[0], batch_size))
        elif isinstance(stream, DatasetStream):
            loader = DataLoader(stream.loader.dataset, batch_size=batch_size)
            chunks = ((b[0] if isinstance(b, (tuple, list)) else b).to(stream.device) for b in loader)
        else:
            raise TypeError(f"target_outputs needs the Trainer's target stream, got {type(stream).__name__}")
        for chunk in chunks:
            out = model(chunk)
            features.append(out.features)
            logits.append(out.logits)
    finally:
        _restore_modes(modes)
    return ModelOutput(torch.cat(features), torch.cat(logits))
