"""Autograd glue of the MMD / JMMD ``"tiled"`` and ``"triton"`` paths: :func:`pair_value`.

``f = w . R`` (see :mod:`adaptlib.kernels.mmd_tiled` for the math) is evaluated by the engine
named in :class:`~adaptlib.kernels.mmd_spec.PairSpec` (``"tiled"``:
:func:`adaptlib.kernels.mmd_tiled.tiled_pair_sums`, ``"triton"``:
:func:`adaptlib.kernels.mmd_triton.triton_pair_sums`), which returns the value *and* its
gradients in one pass; backward only scales the stored gradients by ``grad_output``, so
these paths are once differentiable.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import mmd_tiled
from .mmd_spec import PairSpec, PairSums

__all__ = ["pair_value"]


class _PairMMD(torch.autograd.Function):
    """``f = w . R`` with gradients computed in the forward pass (see module docstring)."""

    @staticmethod
    def forward(ctx, spec: PairSpec, c: Tensor, tw: Tensor, *tensors: Tensor) -> Tensor:
        num_layers = len(spec.layers)
        betas, zs = tensors[:num_layers], tensors[num_layers:]
        need = ctx.needs_input_grad
        want = spec.want_grad
        need_c = want and need[1]
        need_b = [want and need[3 + l] for l in range(num_layers)]
        need_z = [want and need[3 + num_layers + l] for l in range(num_layers)]
        if spec.engine == "triton":
            from .mmd_triton import triton_pair_sums  # imported lazily: needs triton

            out = triton_pair_sums(spec, c, tw, betas, zs, need_c, need_b, need_z)
        else:
            out = mmd_tiled.tiled_pair_sums(spec, c, tw, betas, zs, need_c, need_b, need_z)
        ctx.out = out
        ctx.num_layers = num_layers
        return (tw.detach().double() * out.R).sum().to(c.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the tiled/triton MMD paths are once differentiable (their gradients are computed "
                "in the forward pass); use path='dense' for higher-order gradients (create_graph=True)"
            )
        out: PairSums = ctx.out
        num_layers = ctx.num_layers
        need = ctx.needs_input_grad
        g64 = grad.double()
        gc = out.gc * grad if (need[1] and out.gc is not None) else None
        gtw = (out.R * g64).to(grad.dtype) if need[2] else None
        gb = [(b * g64).to(grad.dtype) if (b is not None and need[3 + l]) else None
              for l, b in enumerate(out.gb)]
        gz = [z * grad if (z is not None and need[3 + num_layers + l]) else None
              for l, z in enumerate(out.gz)]
        return (None, gc, gtw, *gb, *gz)


def pair_value(spec: PairSpec, c: Tensor, tw: Tensor, betas: Sequence[Tensor], zs: Sequence[Tensor]) -> Tensor:
    """Differentiable ``f = w . R`` (once differentiable: no double backward) on ``spec.engine``.

    ``betas[l]`` must be ordered like ``spec.layers[l].gammas``; all tensors share one
    floating dtype (float32 or float64) and device.
    """
    return _PairMMD.apply(spec, c, tw, *betas, *zs)
