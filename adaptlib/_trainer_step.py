"""One training step of the :class:`~adaptlib.Trainer`: the step's batches, then for each phase of the
method (:meth:`~adaptlib.methods.Method.phases`; one for most methods) its loss terms, their checks,
backward, the gradients of frozen parts dropped, and an optimizer step; and the logging sums.

The Trainer (``trainer`` below, typed ``Any``: this module must not import ``adaptlib.trainer``)
calls :func:`train_step` once per step from :meth:`~adaptlib.Trainer.fit`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor, nn

from . import distributed as _dist
from ._checks import skip_value_checks
from ._history import _LogSums
from ._trainer_modes import Frozen
from .methods import Batch, LabeledBatch, Method, Progress, StepOutput, UnlabeledBatch


def draw_batch(method: Method, streams: Dict[str, Any], progress: Progress) -> Batch:
    """Draw the step's batches. Once the method stops reading source data (:meth:`Method.reads_source`),
    the source stream is dropped for good: later batches have ``source=None``."""
    reads_source = method.reads_source(progress)
    if not reads_source:
        streams.pop("source", None)
    elif "source" not in streams:
        raise RuntimeError(f"method {method.name!r} reads source data again at step {progress.step + 1} "
                           "after it stopped (or was built without source data): reads_source must stay False")
    target = streams.get("target")
    return Batch(
        source=LabeledBatch(*streams["source"].next()) if reads_source else None,
        target=UnlabeledBatch(target.next()[0], target.last_index) if target is not None else None,
        target_labeled=LabeledBatch(*streams["target_labeled"].next()) if "target_labeled" in streams else None,
    )


def train_step(trainer: Any, step: int, progress: Progress, streams: Dict[str, Any], params: List[Tensor],
               frozen: Frozen, step_frozen: Tuple[nn.Module, ...], multi_process: bool, on_cpu: bool):
    """One training step: draw the batches once, then for each of the method's phases (one for most
    methods) its loss terms, their check, backward (gradients averaged over processes, none for the
    frozen parts, clipped if asked) and an optimizer step. Returns ``(loss terms and metrics, total
    loss, the loss terms' values)``; with several phases each name gets its phase's prefix
    (``"B/discrepancy"``) and the total is the sum over the phases."""
    method, optimizer = trainer.method, trainer._optimizer
    batch = draw_batch(method, streams, progress)
    phases = tuple(method.phases(trainer.model, progress))
    names = [ph.name for ph in phases]
    if not phases or (len(phases) > 1 and (len(set(names)) < len(names) or not all(names))):
        raise ValueError(f"method {method.name!r} returned phases {names} at step {step}: at least one, "
                         "and several need distinct non-empty names")
    results = []
    for phase in phases:
        if len(phases) > 1:
            frozen.set(step_frozen + tuple(phase.frozen))
        with skip_value_checks(), trainer.amp.autocast():  # inputs checked once; the loss is checked below
            out = phase.loss_terms(trainer.model, batch, progress)
        where = f" in phase {phase.name!r}" if phase.name else ""
        if not out.losses:
            raise ValueError(f"method {method.name!r} returned no loss terms at step {step}{where}")
        values = list(out.losses.values())
        loss = values[0]
        for value in values[1:]:
            loss = loss + value
        if loss.dim() != 0:
            raise ValueError(f"method {method.name!r} returned non-scalar loss terms{where}: "
                             f"{ {k: tuple(v.shape) for k, v in out.losses.items()} }")
        # Checked before backward, so the parameters stay those of the last good step. On an
        # accelerator the check would synchronise every step; there the logged sums are checked.
        if on_cpu and not math.isfinite(loss.item()):
            bad = {f"{phase.name}/{k}" if phase.name else k: float(v.detach())
                   for k, v in out.losses.items() if not bool(torch.isfinite(v))}
            raise FloatingPointError(diverged_message(trainer, f"at step {step + 1}", bad, params))
        optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        trainer.amp.backward(loss)  # scaled under fp16 (adaptlib/_precision.py)
        if multi_process:
            _dist.average_gradients(params)
        for p in frozen.params:
            p.grad = None  # no update, weight decay or momentum for a frozen part
        if trainer.max_grad_norm is not None:
            trainer.amp.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, trainer.max_grad_norm)
        trainer.amp.step(optimizer)  # optimizer.step(); under fp16 skipped on inf/NaN gradients
        results.append((phase.name, out, loss, values))
    if len(results) == 1 and not results[0][0]:
        return results[0][1:]
    merged = StepOutput({f"{n}/{k}": v for n, out, _, _ in results for k, v in out.losses.items()},
                        {f"{n}/{k}": v for n, out, _, _ in results for k, v in out.metrics.items()})
    total = results[0][2].detach()
    for _, _, loss, _ in results[1:]:
        total = total + loss.detach()
    return merged, total, [v for _, _, _, vs in results for v in vs]

@torch.no_grad()
def accumulate(sums: _LogSums, out: Any, loss: Tensor, values: List[Tensor], count: int) -> int:
    """Add a step's loss, loss terms and metrics to the logging sums; return the new count.
    One stack and one add per step, whatever the number of terms."""
    metrics = out.metrics
    tensor_metrics = {k: v for k, v in metrics.items() if isinstance(v, Tensor)} if metrics else {}
    names = ("loss", *out.losses, *tensor_metrics)
    row = torch.stack([loss.detach(), *(v.detach() for v in values),
                       *(v.detach().to(loss.dtype).reshape(()) for v in tensor_metrics.values())])
    sums.add(names, row)
    if len(tensor_metrics) < len(metrics):  # plain numbers are summed in Python
        sums.add_numbers({k: float(v) for k, v in metrics.items() if k not in tensor_metrics})
    return count + 1


def diverged_message(trainer: Any, where: str, bad: Mapping[str, float], params: List[Tensor]) -> str:
    """The message of the FloatingPointError raised when the loss becomes NaN or inf."""
    finite = all(bool(torch.isfinite(p).all()) for p in params)
    state = ("its parameters (after step {}) are still finite" if finite else
             "its parameters (after step {}) already hold NaN or inf").format(trainer.step)
    return (f"non-finite loss {where} of {trainer.steps} with method {trainer.method.name!r}: {dict(bad)}. The run "
            f"diverged; the model is left as it was before that step and {state}. Try a lower learning "
            f"rate (lr={trainer.lr:g} now), gradient clipping (max_grad_norm=, e.g. 1.0 or 10.0), or check "
            f"the scale of the inputs")
