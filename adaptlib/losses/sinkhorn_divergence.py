r"""The debiased Sinkhorn divergence :func:`sinkhorn_divergence`: one cross OT problem
(:func:`adaptlib.losses.sinkhorn`) minus the two self terms, solved by the symmetric
iterations of :mod:`adaptlib.losses._sinkhorn_solvers` (:func:`_self_ot`).

References:
    * A. Genevay, G. Peyré, M. Cuturi. "Learning Generative Models with Sinkhorn
      Divergences". AISTATS 2018.
    * J. Feydy, T. Séjourné, F.-X. Vialard, S. Amari, A. Trouvé, G. Peyré. "Interpolating
      between Optimal Transport and MMD using Sinkhorn Divergences". AISTATS 2019.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._checks import check_weights
from ..kernels import check_path, resolve_path
from ._sinkhorn_checks import _check_block, _check_options, _check_scaling
from ._sinkhorn_costs import _bbox_range, _kernels, _shifted, _sq_cost_nograd
from ._sinkhorn_envelope import _EnvelopePoints, _Solved
from ._sinkhorn_solvers import (_epsilon_schedule, _sinkhorn_symmetric_exp, _sinkhorn_symmetric_log,
                                _sinkhorn_symmetric_ops)
from ._validate import check_feature_pair, compute_dtype, no_autocast
from .sinkhorn import _sinkhorn

__all__ = ["sinkhorn_divergence"]


def _self_ot(
    x: Tensor,
    w: Optional[Tensor],
    name: str,
    eps: float,
    max_iter: int,
    tol: float,
    scaling: Optional[float] = None,
    path: str = "dense",
    block: Optional[int] = None,
) -> Tuple[Tensor, bool]:
    """Differentiable OT_eps(a, a) for one cloud via the symmetric iterations (``path`` concrete)."""
    cd = compute_dtype(x.dtype)
    like = torch.empty(0, dtype=cd, device=x.device)
    a = check_weights(w, x.shape[0], like, name)
    a_d = a.detach()
    with no_autocast(x.device), torch.no_grad():
        xs, _ = _shifted(x, x[:1], cd)
        if path == "dense":
            C = _sq_cost_nograd(xs, xs)
            C = 0.5 * (C + C.T)  # exact symmetry (the matmul need not be bitwise symmetric)
            stages = _epsilon_schedule(eps, float(C.max() - C.min()), scaling) if scaling is not None else []
            out = _sinkhorn_symmetric_exp(C, a_d, eps, max_iter, tol, stages)
            if out is None:
                f, log_plan, _, converged = _sinkhorn_symmetric_log(C, a_d, eps, max_iter, tol, stages)
                plan = torch.exp(log_plan)
            else:
                f, plan, _, converged = out
            del C
            row_sum, total = plan.sum(1), plan.sum()

            def moments(plan=plan, xs=xs, r=row_sum):
                return r, r, plan @ xs, None

        else:
            softmin, stats = _kernels(path, block)
            log_a = a_d.log()
            stages = _epsilon_schedule(eps, _bbox_range(xs, xs), scaling) if scaling is not None else []
            f, _, converged = _sinkhorn_symmetric_ops(
                lambda h, e: softmin(xs, xs, h, log_a, e), a_d, eps, max_iter, tol, stages
            )
            s = stats(xs, xs, f, f, log_a, log_a, eps, False)
            row_sum, total = s["row_sum"], s["row_sum"].sum()

            def moments(stats=stats, xs=xs, f=f, log_a=log_a):
                s = stats(xs, xs, f, f, log_a, log_a, eps, True)
                return s["row_sum"], s["col_sum"], s["Py"], None

        fa = (a_d * f).sum()
        # exact dual objective at (f, f): 2<a, f> - eps (sum P - 1)
        dual = 2.0 * fa - eps * (total - 1.0)
        finite = bool(torch.isfinite(dual)) and bool(torch.isfinite(row_sum).all())
        err = float((row_sum - a_d).abs().sum())  # the loop's criterion (rows = columns)
    guard = max(tol, math.sqrt(torch.finfo(cd).eps))
    converged = converged and finite and err <= guard
    solved = _Solved(xs, xs, moments, dual, dual, f - fa, None, self_term=True)
    value, _ = _EnvelopePoints.apply(x, None, a, None, solved)
    return value, converged


def sinkhorn_divergence(
    source: Tensor,
    target: Tensor,
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    *,
    epsilon: float = 0.05,
    max_iter: int = 1000,
    tol: float = 1e-6,
    scaling: Optional[float] = None,
    path: str = "auto",
    block_size: Optional[int] = None,
) -> Tensor:
    r"""Debiased Sinkhorn divergence between two weighted point clouds.

    From Genevay et al., AISTATS 2018, and Feydy et al., "Interpolating between Optimal
    Transport and MMD using Sinkhorn Divergences", AISTATS 2019:

    .. math::
        S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
        - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
        - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

    with :math:`\mathrm{OT}_\varepsilon` the KL-regularised entropic OT of :func:`sinkhorn`
    (squared Euclidean cost). :math:`S_\varepsilon \ge 0`, with equality iff the clouds
    are equal; it interpolates between OT (:math:`\varepsilon \to 0`) and an MMD
    (:math:`\varepsilon \to \infty`).

    The cross term uses :func:`sinkhorn` (``value``); the two self terms use the symmetric
    averaged iteration :math:`f \leftarrow \tfrac12 (f + T(f))` of Feydy et al., which
    converges much faster than alternating updates on symmetric problems. Exactly
    identical inputs (same points and weights) short-circuit to an exact 0 whose gradient
    is 0 (the divergence is minimal there). Otherwise the result is not clamped and can be
    slightly negative (of the order of ``tol``) for nearly identical clouds. Gradients:
    envelope theorem, as in :func:`sinkhorn`.

    Args:
        source: ``(N, D)`` source points.
        target: ``(M, D)`` target points, same ``D``, dtype and device.
        source_weights: optional ``(N,)`` non-negative masses, normalised.
        target_weights: optional ``(M,)`` non-negative masses, normalised.
        epsilon: regularisation in squared feature units (absolute).
        max_iter: maximum Sinkhorn iterations per OT problem (at the target ``epsilon``
            when ``scaling`` is given).
        tol: L1 marginal tolerance per OT problem.
        scaling: ``None`` or the epsilon-scaling ratio in (0, 1), applied to all three OT
            problems (see :func:`sinkhorn`); use it when ``epsilon`` is small relative to
            the squared distances.
        path: computation path of all three problems, as in :func:`sinkhorn` (``"auto"``
            decides from the largest of the three matrices).
        block_size: block/tile size of the tiled and Triton paths.

    Returns:
        Scalar tensor in squared feature units (device of the inputs; float64 for float64
        inputs, float32 otherwise, half inputs included).

    Raises:
        ValueError: the errors of :func:`sinkhorn` (arguments named ``source``, ``target``, ...);
            ``TypeError`` likewise.

    Warns:
        RuntimeWarning: one of the three OT problems did not converge within ``max_iter``.

    Example::

        >>> x = torch.randn(30, 2)
        >>> float(sinkhorn_divergence(x, x))
        0.0
        >>> y = torch.randn(40, 2) + 2.0
        >>> bool(sinkhorn_divergence(x, y, epsilon=0.5) > 1.0)
        True
    """
    check_feature_pair(source, target, "source", "target", half_ok=True)
    eps, max_iter, tol = _check_options(epsilon, max_iter, tol)
    scaling = _check_scaling(scaling)
    check_path(path)
    block = _check_block(block_size)
    cd = compute_dtype(source.dtype)
    like = torch.empty(0, dtype=cd, device=source.device)
    a = check_weights(source_weights, source.shape[0], like, "source_weights")
    b = check_weights(target_weights, target.shape[0], like, "target_weights")
    if source.shape == target.shape and torch.equal(source, target) and torch.equal(a, b):
        zero = (source * 0.0).sum().to(cd) + (target * 0.0).sum().to(cd)
        if source_weights is not None:
            zero = zero + (source_weights * 0.0).sum().to(cd)
        if target_weights is not None:
            zero = zero + (target_weights * 0.0).sum().to(cd)
        return zero
    n, m = source.shape[0], target.shape[0]
    itemsize = torch.empty((), dtype=cd).element_size()
    p = resolve_path(path, source.device, 2 * max(n, m) ** 2 * itemsize)
    cross = _sinkhorn(
        source, target, source_weights, target_weights, epsilon=eps, max_iter=max_iter, tol=tol,
        scaling=scaling, path=p, block_size=block,
    )
    aa, conv_a = _self_ot(source, source_weights, "source_weights", eps, max_iter, tol, scaling, p, block)
    bb, conv_b = _self_ot(target, target_weights, "target_weights", eps, max_iter, tol, scaling, p, block)
    if not (cross.converged and conv_a and conv_b):
        warnings.warn(
            f"sinkhorn_divergence: an OT problem did not converge within max_iter={max_iter} "
            f"(epsilon={eps:g} in squared feature units); the value is approximate",
            RuntimeWarning,
            stacklevel=2,
        )
    return cross.value - 0.5 * (aa + bb)
