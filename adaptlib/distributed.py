"""Multi-process training helpers over ``torch.distributed`` (one process per device, ``torchrun``).

Everything here is the identity, or returns the single-process answer, when
``torch.distributed`` is not initialised or the world has one process, so code written
for ``W`` processes runs unchanged in one. :func:`init_process_group` and
:func:`destroy_process_group` complete that: a script that starts and ends with them runs
under ``torchrun`` with ``W`` processes and as ``python script.py`` in one process
(``torch.distributed.init_process_group`` itself fails there, asking for ``RANK``).

Gradient convention (the one DDP uses): after ``backward`` every process holds the
gradient of its own loss ``L_r``; the Trainer then *averages* parameter gradients over the
``W`` processes (:func:`average_gradients`), so the step follows ``(1/W) sum_r dL_r/dtheta``.
A loss computed per process on its local batch of ``B`` rows is therefore the average of
``W`` per-process losses; for a mean over rows (cross-entropy) that is the mean over the
global batch of ``W B`` rows. A loss computed on features gathered with
:func:`all_gather_with_grad` is the same number ``L`` on every process, and the gather's
backward is built so that the averaged gradient is exactly ``dL/dtheta`` of the
single-process loss on the global batch (see its docstring).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "init_process_group",
    "destroy_process_group",
    "launched_by_torchrun",
    "is_distributed",
    "rank",
    "world_size",
    "all_gather_with_grad",
    "broadcast_module_state",
    "average_gradients",
    "all_reduce_mean",
    "all_reduce_sum_counts",
]

_MAX_DIMS = 8
_BUCKET_BYTES = 25 * 1024 * 1024  # DDP's default bucket size


# What torchrun (and any launcher using the ``env://`` rendezvous) sets in every process it starts;
# MASTER_ADDR / MASTER_PORT alone are often set cluster-wide and do not mean "launched".
_LAUNCH_VARIABLES: Tuple[str, ...] = ("RANK", "WORLD_SIZE")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` or a similar launcher (``RANK`` and ``WORLD_SIZE`` set)."""
    return all(os.environ.get(name) for name in _LAUNCH_VARIABLES)


def init_process_group(backend: Optional[str] = None, **kwargs: Any) -> bool:
    """Join the process group when launched by ``torchrun``; do nothing in a plain single process.

    Under ``torchrun`` (:func:`launched_by_torchrun`) this calls
    ``torch.distributed.init_process_group(backend, **kwargs)`` (``backend``: ``"gloo"`` on CPUs,
    ``"nccl"`` on GPUs; ``None`` lets torch choose) and returns True. Started as ``python
    script.py``, without the launcher's variables, it returns False and the script goes on in
    one process: :func:`rank` is 0, :func:`world_size` 1, and the Trainer trains as usual. A
    group that is already initialised is left as it is (True).

    Raises:
        RuntimeError: ``torch.distributed`` is not available in this torch build, but the
            process was launched by ``torchrun``.
        ValueError: only one of ``RANK`` and ``WORLD_SIZE`` is set (a half-configured
            environment; the missing one is named).
    """
    if dist.is_available() and dist.is_initialized():
        return True
    present = [name for name in _LAUNCH_VARIABLES if os.environ.get(name)]
    if not present:
        return False
    missing = [name for name in _LAUNCH_VARIABLES if name not in present]
    if missing:
        raise ValueError(f"init_process_group: the environment sets {present} but not {missing}; start the "
                         "script with torchrun, or unset them to run in one process")
    if not dist.is_available():
        raise RuntimeError("launched by torchrun, but this torch build has no torch.distributed")
    dist.init_process_group(backend, **kwargs)
    return True


def destroy_process_group() -> None:
    """Leave the process group if one is initialised (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available, initialised, and has more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group, ``0..world_size()-1`` (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes ``W`` in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        w, r = dist.get_world_size(), dist.get_rank()
        # 1. every rank's shape, so that unequal row counts can be padded to the largest
        shape = torch.full((_MAX_DIMS + 1,), -1, dtype=torch.int64, device=x.device)
        shape[0] = x.dim()
        shape[1:x.dim() + 1] = torch.tensor(x.shape, dtype=torch.int64)
        shapes = [torch.empty_like(shape) for _ in range(w)]
        dist.all_gather(shapes, shape)
        shapes_list = [s.tolist() for s in shapes]
        rows = [s[1] for s in shapes_list]
        if any(s[0] != x.dim() or s[2:x.dim() + 1] != list(x.shape[1:]) for s in shapes_list):
            described = [tuple(s[1:s[0] + 1]) for s in shapes_list]
            # every rank sees the same shapes, so every rank raises here: no rank is left waiting
            raise ValueError(f"all_gather_with_grad: tensors must agree in every dimension but the first; "
                             f"got shapes {described} on ranks 0..{w - 1}")
        # 2. pad to the largest row count, gather, drop the padding
        most = max(rows)
        padded = x.new_zeros((most, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(w)]
        dist.all_gather(parts, padded.contiguous())
        ctx.offset = sum(rows[:r])
        ctx.rows = rows[r]
        return torch.cat([p[:n] for p, n in zip(parts, rows)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.offset:ctx.offset + ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    r"""Concatenate every process's rows, differentiably: ``(n_r, ...)`` on rank ``r`` -> ``(sum_r n_r, ...)``.

    Forward: rank ``r`` passes ``x_r`` of shape ``(n_r, D)`` (any trailing shape, the same on
    every rank; the row counts ``n_r`` may differ, including 0). Every rank gets the same
    ``X = cat(x_0, ..., x_{W-1})`` of shape ``(N, D)``, ``N = sum_r n_r``, in rank order. The
    row counts are gathered first and the rows padded to the largest, so unequal batches
    work (at the cost of one small extra collective).

    Backward (the scaling convention): a loss ``L(X)`` computed from ``X`` is the same on
    every rank, and rank ``r``'s autograd graph only reaches ``x_r``. With ``G = dL/dX``, the
    backward all-reduces (sums) the incoming gradients of the ``W`` ranks and returns this
    rank's rows:

    .. math::
        \frac{\partial}{\partial x_r} \;=\; \Big(\sum_{q=0}^{W-1} G^{(q)}\Big)_{\text{rows of } r}
        \;=\; W\, \frac{\partial L}{\partial x_r}.

    The factor ``W`` is deliberate: data-parallel training (DDP, and the Trainer's
    :func:`average_gradients`) *averages* parameter gradients over ranks, so the step is
    ``(1/W) sum_r W (dL/dx_r)(dx_r/dtheta) = dL/dtheta``, exactly the gradient of ``L``
    on the global batch in one process. (Returning ``G``'s rows alone would scale the
    alignment gradient by ``1/W``.) When you do not average gradients afterwards, divide by
    :func:`world_size`. This matches ``torch.distributed.nn.functional.all_gather``
    (whose backward is a summing reduce-scatter), with unequal sizes allowed.

    Tensors that do not require grad (labels) are gathered too; their result has no graph.

    When not distributed (see :func:`is_distributed`) this returns ``x`` itself.

    Args:
        x: ``(n_r, ...)`` tensor on a device the backend supports (CPU for gloo). At most
            8 dimensions.

    Returns:
        ``(N, ...)`` tensor, differentiable w.r.t. ``x`` when ``x`` requires grad.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: ``x`` is 0-dimensional or has more than 8 dimensions (raised on that rank
            only: check before calling if ranks may differ), or the ranks' trailing shapes
            differ (raised on every rank).

    Every rank must call it, in the same order, in forward and (when the graph reaches it)
    in backward; it is a collective.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"all_gather_with_grad expects a tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.dim() > _MAX_DIMS:
        raise ValueError(f"all_gather_with_grad expects a tensor with 1..{_MAX_DIMS} dimensions (rows first), "
                         f"got shape {tuple(x.shape)}")
    if not is_distributed():
        return x
    return _AllGatherWithGrad.apply(x)


# ---------------------------------------------------------------------------------------------
# What the Trainer does around each step (DDP's semantics, without wrapping the model)
def broadcast_module_state(modules: Iterable[nn.Module], *, parameters: bool = True, src: int = 0) -> None:
    """Copy the parameters (if ``parameters``) and buffers of ``modules`` from rank ``src`` to every rank.

    Called once before training so that all ranks start identical (DDP does it in its
    constructor), and with ``parameters=False`` at each step for buffers such as BatchNorm
    running statistics (DDP's ``broadcast_buffers=True``). A no-op when not distributed.
    """
    if not is_distributed():
        return
    tensors: List[Tensor] = []
    for module in modules:
        if parameters:
            tensors += [p.data for p in module.parameters()]
        tensors += [b for b in module.buffers()]
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src=src)
        _unflatten_into(flat, bucket)


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """Replace each ``p.grad`` by its mean over all ranks, in place (what DDP's reducer does).

    ``params`` must be the same list, in the same order, on every rank. A parameter whose
    gradient is ``None`` on some ranks but not others counts as zero there (DDP's
    ``find_unused_parameters`` semantics); one whose gradient is ``None`` on every rank
    (frozen, or unused by the step) stays ``None``, so the optimizer still skips it (no
    weight decay, no momentum). Costs one small all-reduce of the ``None`` pattern plus
    the gradient all-reduces in buckets of 25 MB. A no-op when not distributed.
    """
    if not is_distributed() or not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=_comm_device())
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    used = [p for p, flag in zip(params, present.tolist()) if flag]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    w = dist.get_world_size()
    for bucket in _buckets([p.grad for p in used]):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= w
        _unflatten_into(flat, bucket)


def all_reduce_mean(values: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Mean over ranks of each scalar in ``values`` (same keys on every rank), in one collective.

    Returns a new dict, or ``values`` itself when not distributed.
    """
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().reshape(()).to(_comm_device(), torch.float64) for k in keys])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat = flat.cpu() / dist.get_world_size()
    return {k: flat[i] for i, k in enumerate(keys)}


def all_reduce_sum_counts(counts: Tuple[int, int]) -> Tuple[int, int]:
    """Sum ``(correct, total)`` over ranks (sharded evaluation); unchanged when not distributed."""
    if not is_distributed():
        return counts
    t = torch.tensor(counts, dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t[0]), int(t[1])


def _comm_device() -> torch.device:
    """Where small bookkeeping tensors must live for the backend: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _buckets(tensors: Sequence[Tensor]) -> List[List[Tensor]]:
    """Consecutive groups of same-dtype, same-device tensors of at most ~25 MB each."""
    out: List[List[Tensor]] = []
    size = 0
    for t in tensors:
        if t.numel() == 0:
            continue
        last = out[-1] if out else None
        nbytes = t.numel() * t.element_size()
        if last is None or last[0].dtype != t.dtype or last[0].device != t.device or size + nbytes > _BUCKET_BYTES:
            out.append([t])
            size = nbytes
        else:
            last.append(t)
            size += nbytes
    return out


def _unflatten_into(flat: Tensor, bucket: Sequence[Tensor]) -> None:
    pos = 0
    with torch.no_grad():
        for t in bucket:
            n = t.numel()
            t.copy_(flat[pos:pos + n].view_as(t))
            pos += n
