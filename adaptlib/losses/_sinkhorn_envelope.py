r"""Envelope-theorem gradients of entropic OT: the solve runs without autograd, then one
:class:`torch.autograd.Function` gives the gradient of the value at the optimum (the plan
and the centred potentials), so backward memory does not grow with the iteration count.

* :class:`_EnvelopeOT`: a user-given cost matrix (``d value / d C = P``);
* :class:`_EnvelopePoints`: point clouds with the squared Euclidean cost, whose backward
  needs only the plan's moments (:class:`_Solved`), recomputed tile by tile on the tiled and
  Triton paths.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor


class _EnvelopeOT(torch.autograd.Function):
    """Value of entropic OT with envelope-theorem gradients (no unrolled iterations).

    forward(cost, a, b, value, plan, f_centred, g_centred) returns ``value``; backward gives
    ``d value / d cost = plan``, ``d value / d a = f_centred``, ``d value / d b = g_centred``.
    Saved memory is one ``(N, M)`` plan, independent of the iteration count.
    """

    @staticmethod
    def forward(ctx, cost, a, b, value, plan, f_c, g_c):  # type: ignore[override]
        ctx.save_for_backward(plan, f_c, g_c)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        plan, f_c, g_c = ctx.saved_tensors
        g_cost = grad * plan if ctx.needs_input_grad[0] else None
        g_a = grad * f_c if ctx.needs_input_grad[1] else None
        g_b = grad * g_c if ctx.needs_input_grad[2] else None
        return g_cost, g_a, g_b, None, None, None, None


class _Solved:
    """What the backward of :class:`_EnvelopePoints` needs: shifted points and a way to get the plan's moments.

    ``moments()`` returns ``(P 1, P^T 1, P y~, P^T x~)`` for the shifted points ``x~, y~``
    (from the stored dense plan, or recomputed tile by tile from the potentials).
    """

    def __init__(self, xs: Tensor, ys: Tensor, moments: Callable[[], Tuple[Tensor, Tensor, Tensor, Tensor]],
                 value: Tensor, transport_cost: Tensor, f_c: Tensor, g_c: Tensor, self_term: bool = False):
        self.xs, self.ys, self.moments = xs, ys, moments
        self.value, self.transport_cost, self.f_c, self.g_c = value, transport_cost, f_c, g_c
        self.self_term = self_term


class _EnvelopePoints(torch.autograd.Function):
    r"""``(value, transport_cost)`` of entropic OT between point clouds, envelope-theorem backward.

    With :math:`C_{ij} = \|x_i - y_j\|^2`: :math:`\partial/\partial x_i = 2((P1)_i x_i - (P y)_i)`,
    :math:`\partial/\partial y_j = 2((P^\top 1)_j y_j - (P^\top x)_j)` for both outputs
    (``transport_cost`` holds :math:`P` fixed), and for ``value`` only
    :math:`\partial/\partial a = f - \langle a, f\rangle`, :math:`\partial/\partial b = g - \langle b, g\rangle`.
    For a self term (``y is x``, OT(a, a)) the two roles add up: :math:`4((P1)_i x_i - (P x)_i)`
    and :math:`2 (f - \langle a, f\rangle)`. Gradients are returned in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, x, y, a, b, st):  # type: ignore[override]
        ctx.st = st
        ctx.dtypes = (x.dtype, None if y is None else y.dtype)
        return st.value.clone(), st.transport_cost.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gv, gt):  # type: ignore[override]
        st = ctx.st
        gv = torch.zeros((), dtype=st.value.dtype, device=st.value.device) if gv is None else gv.to(st.value.dtype)
        gt = torch.zeros((), dtype=st.value.dtype, device=st.value.device) if gt is None else gt.to(st.value.dtype)
        w = gv + gt
        gx = gy = ga = gb = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            r, c, Py, Ptx = st.moments()
            if st.self_term:
                gx = (4.0 * w) * (r.unsqueeze(1) * st.xs - Py)
            else:
                if ctx.needs_input_grad[0]:
                    gx = (2.0 * w) * (r.unsqueeze(1) * st.xs - Py)
                if ctx.needs_input_grad[1]:
                    gy = (2.0 * w) * (c.unsqueeze(1) * st.ys - Ptx)
            gx = None if gx is None else gx.to(ctx.dtypes[0])
            gy = None if gy is None else gy.to(ctx.dtypes[1])
        if ctx.needs_input_grad[2]:
            ga = gv * st.f_c * (2.0 if st.self_term else 1.0)
        if ctx.needs_input_grad[3] and st.g_c is not None:
            gb = gv * st.g_c
        return gx, gy, ga, gb, None
