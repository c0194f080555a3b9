r"""Entropic optimal transport (log-domain Sinkhorn) and the Sinkhorn divergence.

References:
    * M. Cuturi. "Sinkhorn Distances: Lightspeed Computation of Optimal Transport".
      NeurIPS 2013.
    * A. Genevay, G. Peyré, M. Cuturi. "Learning Generative Models with Sinkhorn
      Divergences". AISTATS 2018.
    * J. Feydy, T. Séjourné, F.-X. Vialard, S. Amari, A. Trouvé, G. Peyré. "Interpolating
      between Optimal Transport and MMD using Sinkhorn Divergences". AISTATS 2019.
    * G. Peyré, M. Cuturi. "Computational Optimal Transport". Foundations and Trends in
      Machine Learning, 2019 (log-domain iterations, envelope-theorem gradients).

This module holds the public entry points: :func:`sinkhorn` (the value, the plan and the
potentials, as a :class:`SinkhornResult`) and :func:`sinkhorn_plan`. Their parts live beside
it: the iterations in :mod:`adaptlib.losses._sinkhorn_solvers`, the envelope-theorem
gradients in :mod:`adaptlib.losses._sinkhorn_envelope`, the costs and the tiled/Triton
softmin operators in :mod:`adaptlib.losses._sinkhorn_costs`, the argument checks in
:mod:`adaptlib.losses._sinkhorn_checks`; the debiased divergence is in
:mod:`adaptlib.losses.sinkhorn_divergence`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_features, check_weights
from ..kernels import check_path, resolve_path
from ..kernels import sinkhorn_tiled as _tiled
from ._sinkhorn_checks import (_check_block, _check_cost, _check_eps_dtype, _check_init, _check_options,
                               _check_scaling)
from ._sinkhorn_costs import _bbox_range, _frobenius, _kernels, _shifted, _sq_cost_nograd
from ._sinkhorn_envelope import _EnvelopeOT, _EnvelopePoints, _Solved
from ._sinkhorn_solvers import _epsilon_schedule, _sinkhorn_log_ops, _solve_dense
from ._validate import check_feature_pair, check_tensor_kind, compute_dtype, no_autocast

__all__ = ["sinkhorn", "SinkhornResult", "sinkhorn_plan"]


@dataclass
class SinkhornResult:
    r"""Result of :func:`sinkhorn`.

    Attributes:
        value: scalar tensor, the entropic OT cost
            :math:`\mathrm{OT}_\varepsilon(a, b) = \langle a, f\rangle + \langle b, g\rangle`
            (dual objective at the returned potentials); differentiable by the envelope
            theorem w.r.t. the points (or the given cost) and the weights.
        transport_cost: scalar tensor :math:`\langle P, C\rangle = \sum_{ij} P_{ij} C_{ij}`
            (what POT's ``ot.sinkhorn2`` returns); its gradient treats ``P`` as fixed.
        plan: ``(N, M)`` detached transport plan :math:`P` on the dense path; ``None`` on
            the tiled and Triton paths, which never hold an ``N x M`` matrix (get it, or a
            block of it, with :func:`sinkhorn_plan`, which recomputes it from ``f`` and ``g``).
        f: ``(N,)`` detached source dual potential, in cost units.
        g: ``(M,)`` detached target dual potential, in cost units.
        n_iter: number of full (f, g) Sinkhorn updates run, counting those of every
            annealing stage when epsilon scaling is on (so it can exceed ``max_iter``).
        converged: True iff the stopping test (L1 row-marginal violation, evaluated in the
            log domain, at most ``tol``) was met, every value is finite (a non-finite result
            is never "converged"), and the returned plan's ``marginal_error`` is at most
            ``max(tol, sqrt(machine eps))`` (a guard against the log-domain test being
            fooled by rounding when ``epsilon`` is tiny relative to the cost).
        marginal_error: L1 violation of both marginals of ``plan``,
            :math:`\|P 1 - a\|_1 + \|P^\top 1 - b\|_1`.
        epsilon: the regularisation used, in cost units.
        path: the computation path that ran (``"dense"``, ``"tiled"`` or ``"triton"``).
    """

    value: Tensor
    transport_cost: Tensor
    plan: Optional[Tensor]
    f: Tensor
    g: Tensor
    n_iter: int
    converged: bool
    marginal_error: float
    epsilon: float
    path: str = "dense"


def _warn_non_finite(eps: float, where: str) -> None:
    warnings.warn(
        f"sinkhorn produced non-finite values (epsilon={eps:g} in cost units, {where}); the result is not converged",
        RuntimeWarning,
        stacklevel=3,
    )


def _warn_not_converged(where: str, result: SinkhornResult, stacklevel: int = 3) -> None:
    """Warn (``RuntimeWarning``) that the solve behind ``result`` did not converge, and what to try."""
    warnings.warn(
        f"{where}: Sinkhorn did not converge after {result.n_iter} iterations (marginal error "
        f"{result.marginal_error:.3g}, epsilon={result.epsilon:g} in cost units); the value and plan are "
        "approximate. Use scaling= (epsilon scaling, e.g. 0.5), a larger epsilon or a larger max_iter",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def sinkhorn(
    source: Optional[Tensor],
    target: Optional[Tensor],
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    *,
    epsilon: float = 0.05,
    cost: Optional[Tensor] = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init: Optional[Tuple[Tensor, Tensor]] = None,
    scaling: Optional[float] = None,
    path: str = "auto",
    block_size: Optional[int] = None,
) -> SinkhornResult:
    r"""Entropic optimal transport between two weighted point clouds (log-domain Sinkhorn).

    From Cuturi, "Sinkhorn Distances", NeurIPS 2013. Solves

    .. math::
        \begin{aligned}
        \mathrm{OT}_\varepsilon(a, b) &= \min_{P \in \Pi(a, b)} \langle P, C\rangle
        + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b) \\
        &= \max_{f, g}\ \langle a, f\rangle + \langle b, g\rangle
        - \varepsilon \langle a \otimes b, e^{(f \oplus g - C)/\varepsilon} - 1\rangle,
        \end{aligned}

    with :math:`C_{ij} = \|x_i - y_j\|^2` (squared Euclidean, matmul expansion clamped at 0)
    unless ``cost`` is given. The optimal plan
    :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)` is the same as for POT's
    ``ot.sinkhorn(a, b, C, reg=epsilon)`` (entropy :math:`-H(P)` differs from the KL term by
    a constant on :math:`\Pi(a, b)`), so ``transport_cost`` matches ``ot.sinkhorn2``.

    **Computation paths** (``path``, see :mod:`adaptlib.kernels`; ``"auto"`` picks Triton on
    CUDA, the tiled path when the dense matrices would exceed
    :data:`adaptlib.kernels.DENSE_MAX_BYTES`, the dense path otherwise):

    * ``"dense"``: the ``(N, M)`` cost is formed with one matmul and the iterations run in
      the exp domain with absorption (Schmitzer, SIAM J. Sci. Comput. 2019): the kernel
      :math:`K = e^{(\tilde f \oplus \tilde g - C)/\varepsilon}` is computed once and an
      iteration is two matrix-vector products, ``u <- 1 / K (b v)``, ``v <- 1 / K^T (a u)``;
      scalings larger than :math:`e^{20}` (float32; :math:`e^{200}` in float64) are absorbed into
      the potentials and ``K`` is recomputed. If a scaling still becomes non-finite (a whole
      row of ``K`` underflows) the solve restarts with the log-domain iterations below. The
      fixed point is the same. Memory ``O(N M)``; ``plan`` is returned.
    * ``"tiled"``: the log-domain iterations below, each soft minimum streamed over blocks of
      ``block_size`` rows and columns with an online maximum (flash-attention style), the
      cost recomputed per block; memory ``O((N + M) D + block^2)`` on any device.
      ``plan`` is ``None`` (see :func:`sinkhorn_plan`).
    * ``"triton"``: the same streamed updates as fused Triton kernels (CUDA; on the CPU only
      under ``TRITON_INTERPRET=1``). ``plan`` is ``None``.

    Marginal errors, ``transport_cost`` and the gradients are computed tile by tile on the
    non-dense paths. **Precision**: float16/bfloat16 points (and calls under
    ``torch.autocast``) are computed in float32 (autocast is switched off inside), float64
    stays float64; ``value``, ``transport_cost`` and the potentials are float32 for half
    inputs and gradients flow back in the inputs' dtypes.

    **Iterations** (log domain, under ``torch.no_grad``, potentials start at 0 or ``init``):

    .. math::
        f_i \leftarrow -\varepsilon \log\sum_j b_j e^{(g_j - C_{ij})/\varepsilon}, \qquad
        g_j \leftarrow -\varepsilon \log\sum_i a_i e^{(f_i - C_{ij})/\varepsilon}.

    After each ``g`` update the columns of :math:`P` are exact; the loop stops once the L1
    row-marginal violation is at most ``tol`` (checked every iteration on CPU, every 10 on
    other devices) or after ``max_iter`` iterations.

    **Epsilon scaling** (``scaling=s``, off by default). With a small ``epsilon`` relative
    to the cost (say :math:`\varepsilon < 10^{-2} \max C`) plain Sinkhorn needs a number of
    iterations that grows like :math:`\max C / \varepsilon` and, started from zero
    potentials, stalls far from the solution (e.g. a ``transport_cost`` 50 % below the OT
    cost after 10,000 iterations for costs up to 1e4 and :math:`\varepsilon = 10^{-3}`).
    Epsilon scaling (Schmitzer, "Stabilized sparse scaling algorithms for entropy
    regularized transport problems", SIAM J. Sci. Comput. 2019; Feydy et al. 2019, as in
    GeomLoss) anneals :math:`\varepsilon_k = \varepsilon_0 s^k` from
    :math:`\varepsilon_0 = \max C - \min C` (floored at ``epsilon``) down to ``epsilon``,
    warm-starting each stage with the previous potentials. Each annealing stage runs until
    its row violation is at most ``max(tol, 1e-3)`` or for 100 iterations; ``max_iter``
    and ``tol`` govern the final stage at ``epsilon``. At every stage the current
    potentials are absorbed into the cost (:math:`C - f \oplus g`, iterating on small
    residual potentials), which keeps full precision when :math:`\varepsilon / \max C` is
    below the dtype's resolution (float32 with costs of 1e4 and :math:`\varepsilon = 10^{-3}`
    converges). ``s`` in ``[0.5, 0.9]`` is typical: smaller ``s`` means fewer stages, larger
    ``s`` fewer iterations per stage. It is not switched on automatically, so that the
    default iterates (and results) stay those of the plain algorithm; turn it on whenever
    ``epsilon`` is small relative to the cost. Because columns are exact,
    :math:`\sum P = 1` and ``value`` :math:`= \langle a,f\rangle + \langle b,g\rangle` is the
    dual objective at the returned potentials (a lower bound that is tight at convergence).

    **Gradients** (envelope theorem, exact at convergence, nothing unrolled; memory one
    ``(N, M)`` plan on the dense path, nothing beyond the points and potentials on the
    others, which recompute the plan tile by tile in the backward):
    :math:`\partial\,\mathrm{value}/\partial C_{ij} = P_{ij}` (hence
    :math:`\partial/\partial x_i = \sum_j P_{ij}\,2(x_i - y_j) = 2((P1)_i x_i - (Py)_i)`),
    :math:`\partial/\partial a = f - \langle a, f\rangle` and
    :math:`\partial/\partial b = g - \langle b, g\rangle`: the potentials, centred so the
    gradient is orthogonal to the weights (the constant part is meaningless on the simplex;
    raw weights are normalised inside, whose Jacobian removes it anyway). ``transport_cost``
    is differentiated as :math:`\langle P, C\rangle` with :math:`P` held fixed.

    Args:
        source: ``(N, D)`` source points, or ``None`` when ``cost`` is given.
        target: ``(M, D)`` target points (same ``D``, dtype, device), or ``None`` when
            ``cost`` is given.
        source_weights: optional ``(N,)`` non-negative masses :math:`a`, normalised to sum 1
            (uniform by default). Zero entries are allowed.
        target_weights: optional ``(M,)`` non-negative masses :math:`b`, normalised.
        epsilon: entropic regularisation :math:`\varepsilon > 0`, **absolute, in units of
            the cost** (squared feature units for the default cost). Small values relative
            to the typical cost need more iterations.
        cost: optional ``(N, M)`` finite cost matrix used instead of the squared Euclidean
            cost; ``source``/``target``, if given, must then have ``N``/``M`` rows.
        max_iter: maximum number of Sinkhorn iterations (>= 1).
        tol: stopping threshold on the L1 row-marginal violation (>= 0). In float32 values
            much below ~1e-6 may be unreachable.
        init: optional ``(f0, g0)`` potentials of shapes ``(N,)``, ``(M,)`` to warm-start.
        scaling: ``None`` (default, no epsilon scaling) or the ratio :math:`s \in (0, 1)`
            between successive epsilons of the annealing schedule (see above). With it,
            ``max_iter`` bounds the iterations at the target ``epsilon`` and ``n_iter``
            counts the updates of all stages. On the tiled and Triton paths the schedule
            starts at the squared diameter of the clouds' bounding box (an upper bound of
            the cost range, which is not formed there).
        path: ``"auto"`` (default), ``"dense"``, ``"tiled"`` or ``"triton"`` (see above).
            ``cost`` works on ``"dense"``/``"auto"`` only.
        block_size: rows and columns per block on the tiled path (default 2048) and per
            Triton tile (default 64; rounded to a power of two >= 16); ignored by ``"dense"``.

    Returns:
        :class:`SinkhornResult`. ``value``/``transport_cost`` have the dtype and device of
        the inputs; plan and potentials are detached.

    Raises:
        TypeError: non-tensor or non-floating inputs (points or ``cost``), a half-precision
            ``cost`` (points may be half), dtype mismatch, bad ``init`` or ``scaling``.
        ValueError: shape/device mismatches (naming the argument), NaN/inf inputs, invalid
            weights, ``epsilon <= 0`` or too small for the dtype, ``max_iter < 1``,
            ``tol < 0``, ``scaling`` outside (0, 1), neither points nor ``cost`` given,
            unknown ``path``, ``cost`` with ``path="tiled"``/``"triton"``, ``"triton"``
            where Triton cannot run, ``block_size < 1``.

    Warns:
        RuntimeWarning: the solve did not converge (``converged`` is False): the stopping
            test was not met within ``max_iter`` iterations, or the iterations produced
            non-finite values (e.g. a cost near the dtype's overflow limit). The value and
            the plan are then approximate: for 200 points at unit-variance scale x30 with
            ``epsilon=0.01`` the ``transport_cost`` after 1000 iterations is 67.4 against the
            exact 97.4. Use ``scaling=`` (epsilon scaling, e.g. ``0.5``), a larger
            ``epsilon`` or more ``max_iter``. To silence it where a non-converged solve is
            acceptable, filter ``RuntimeWarning`` and read ``result.converged``.

    Example::

        >>> x, y = torch.randn(20, 3), torch.randn(30, 3) + 1.0
        >>> res = sinkhorn(x, y, epsilon=0.1)
        >>> res.plan.shape, res.converged
        (torch.Size([20, 30]), True)
        >>> bool(res.value >= res.transport_cost)  # value = <P, C> + eps KL(P | a x b)
        True
        >>> tiled = sinkhorn(x, y, epsilon=0.1, path="tiled")
        >>> tiled.plan is None, sinkhorn_plan(x, y, tiled).shape
        (True, torch.Size([20, 30]))
    """
    result = _sinkhorn(
        source, target, source_weights, target_weights, epsilon=epsilon, cost=cost, max_iter=max_iter,
        tol=tol, init=init, scaling=scaling, path=path, block_size=block_size,
    )
    if not result.converged and bool(torch.isfinite(result.value.detach())):
        _warn_not_converged("sinkhorn", result)  # (a non-finite solve has warned already)
    return result


def _sinkhorn(
    source: Optional[Tensor],
    target: Optional[Tensor],
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    *,
    epsilon: float = 0.05,
    cost: Optional[Tensor] = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init: Optional[Tuple[Tensor, Tensor]] = None,
    scaling: Optional[float] = None,
    path: str = "auto",
    block_size: Optional[int] = None,
) -> SinkhornResult:
    """:func:`sinkhorn` without the warning on non-convergence (for callers that report it
    themselves: :func:`sinkhorn_divergence`, :func:`~adaptlib.losses.jdot`, the methods)."""
    eps, max_iter, tol = _check_options(epsilon, max_iter, tol)
    scaling = _check_scaling(scaling)
    check_path(path)
    block = _check_block(block_size)
    if cost is not None:
        if path in ("tiled", "triton"):
            raise ValueError(
                f"cost= is only supported on path='dense' (or 'auto'), got path={path!r}: the tiled and "
                "Triton paths recompute the squared Euclidean cost from source and target"
            )
        return _sinkhorn_given_cost(
            source, target, source_weights, target_weights, eps, cost, max_iter, tol, init, scaling
        )
    if source is None or target is None:
        raise ValueError("source and target are required unless cost is given")
    check_feature_pair(source, target, "source", "target", half_ok=True)
    cd = compute_dtype(source.dtype)
    n, m = source.shape[0], target.shape[0]
    itemsize = torch.empty((), dtype=cd).element_size()
    p = resolve_path(path, source.device, 2 * n * m * itemsize)
    _check_eps_dtype(eps, cd)
    like = torch.empty(0, dtype=cd, device=source.device)
    a = check_weights(source_weights, n, like, "source_weights")
    b = check_weights(target_weights, m, like, "target_weights")
    a_d, b_d = a.detach(), b.detach()
    f0, g0 = (None, None) if init is None else _check_init(init, n, m, like)
    with no_autocast(source.device), torch.no_grad():
        xs, ys = _shifted(source, target, cd)
        if p == "dense":
            C = _sq_cost_nograd(xs, ys)
            stages = _epsilon_schedule(eps, float(C.max() - C.min()), scaling) if scaling is not None else []
            f, g, plan, n_iter, converged, diverged = _solve_dense(C, a_d, b_d, eps, max_iter, tol, f0, g0, stages)
            row_sum, col_sum = plan.sum(1), plan.sum(0)
            # The plan is non-negative: a NaN or inf entry makes its row sum non-finite, so
            # this is the finiteness test of the whole plan at the cost of N values.
            finite = bool(torch.isfinite(row_sum).all())
            tc = _frobenius(plan, C)
            del C

            def moments(plan=plan, xs=xs, ys=ys, r=row_sum, c=col_sum):
                return r, c, plan @ ys, (xs.T @ plan).T

        else:
            softmin, stats = _kernels(p, block)
            log_a, log_b = a_d.log(), b_d.log()
            stages = _epsilon_schedule(eps, _bbox_range(xs, ys), scaling) if scaling is not None else []
            f, g, n_iter, converged, diverged = _sinkhorn_log_ops(
                lambda h, e: softmin(xs, ys, h, log_b, e),
                lambda h, e: softmin(ys, xs, h, log_a, e),
                a_d, b_d, eps, max_iter, tol,
                torch.zeros_like(a_d) if f0 is None else f0,
                torch.zeros_like(b_d) if g0 is None else g0,
                stages,
            )
            st = stats(xs, ys, f, g, log_a, log_b, eps, False)
            row_sum, col_sum, tc = st["row_sum"], st["col_sum"], st["cost"]
            finite = bool(torch.isfinite(row_sum).all()) and bool(torch.isfinite(col_sum).all())
            plan = None

            def moments(stats=stats, xs=xs, ys=ys, f=f, g=g, log_a=log_a, log_b=log_b):
                s = stats(xs, ys, f, g, log_a, log_b, eps, True)
                return s["row_sum"], s["col_sum"], s["Py"], s["Ptx"]

        finite = finite and bool(torch.isfinite(f).all()) and bool(torch.isfinite(g).all())
        finite = finite and bool(torch.isfinite(tc))
        marginal_error = float((row_sum - a_d).abs().sum() + (col_sum - b_d).abs().sum())
        fa, gb = (a_d * f).sum(), (b_d * g).sum()
        dual = fa + gb
    guard = max(tol, math.sqrt(torch.finfo(cd).eps))
    converged = converged and finite and math.isfinite(marginal_error) and marginal_error <= guard
    if diverged or not finite:
        _warn_non_finite(eps, f"path {p!r}")
    solved = _Solved(xs, ys, moments, dual, tc, f - fa, g - gb)
    value, transport_cost = _EnvelopePoints.apply(source, target, a, b, solved)
    return SinkhornResult(
        value=value,
        transport_cost=transport_cost,
        plan=plan,
        f=f,
        g=g,
        n_iter=n_iter,
        converged=converged,
        marginal_error=marginal_error,
        epsilon=eps,
        path=p,
    )


def _sinkhorn_given_cost(source, target, source_weights, target_weights, eps, cost, max_iter, tol, init, scaling):
    """Dense solve on a user-given cost matrix (gradient w.r.t. the cost = the plan)."""
    C = _check_cost(cost)
    for t, name, size in ((source, "source", C.shape[0]), (target, "target", C.shape[1])):
        if t is not None:
            check_tensor_kind(t, name)
            if t.device != C.device:
                raise ValueError(f"{name} must be on the device of cost ({C.device}), got {t.device}")
            check_features(t, name)
            if t.shape[0] != size:
                raise ValueError(f"{name} has {t.shape[0]} rows but cost has shape {tuple(C.shape)}")
    n, m = C.shape
    _check_eps_dtype(eps, C.dtype)
    a = check_weights(source_weights, n, C, "source_weights")
    b = check_weights(target_weights, m, C, "target_weights")
    a_d, b_d, C_d = a.detach(), b.detach(), C.detach()
    f0, g0 = (None, None) if init is None else _check_init(init, n, m, C)
    stages = _epsilon_schedule(eps, float(C_d.max() - C_d.min()), scaling) if scaling is not None else []
    with torch.no_grad():
        f, g, plan, n_iter, converged, diverged = _solve_dense(C_d, a_d, b_d, eps, max_iter, tol, f0, g0, stages)
        finite = bool(torch.isfinite(plan).all()) and bool(torch.isfinite(f).all()) and bool(torch.isfinite(g).all())
        marginal_error = float((plan.sum(1) - a_d).abs().sum() + (plan.sum(0) - b_d).abs().sum())
        fa = (a_d * f).sum()
        gb = (b_d * g).sum()
        dual = fa + gb
    # Guard: the stopping test can be fooled by rounding when epsilon is tiny relative to
    # the cost, so the returned plan itself must also satisfy the marginals.
    guard = max(tol, math.sqrt(torch.finfo(C.dtype).eps))
    converged = converged and finite and marginal_error <= guard
    if diverged or not finite:
        _warn_non_finite(eps, f"cost range [{float(C_d.min()):.3g}, {float(C_d.max()):.3g}]")
    value = _EnvelopeOT.apply(C, a, b, dual, plan, f - fa, g - gb)
    transport_cost = (plan * C).sum()
    return SinkhornResult(
        value=value,
        transport_cost=transport_cost,
        plan=plan,
        f=f,
        g=g,
        n_iter=n_iter,
        converged=converged,
        marginal_error=marginal_error,
        epsilon=eps,
        path="dense",
    )


def sinkhorn_plan(
    source: Tensor,
    target: Tensor,
    result: SinkhornResult,
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    *,
    rows: Optional[Union[slice, Tensor]] = None,
    cols: Optional[Union[slice, Tensor]] = None,
) -> Tensor:
    r"""Recompute the transport plan (or a block of it) from the potentials of a :func:`sinkhorn` result.

    .. math::
        P_{ij} = a_i\, b_j \exp\big((f_i + g_j - \|x_i - y_j\|^2)/\varepsilon\big)

    with ``f, g, epsilon`` from ``result``. The tiled and Triton paths return
    ``result.plan = None`` (an ``(N, M)`` plan is what they avoid storing); this function
    gives the plan on demand: the whole of it, or only the rows ``rows`` and columns
    ``cols`` (slices or integer index tensors), which costs ``O(n m D)`` for an ``n x m``
    block. For a dense result it reproduces ``result.plan`` up to rounding.

    Args:
        source, target: the ``(N, D)``/``(M, D)`` clouds passed to :func:`sinkhorn`.
        result: the :class:`SinkhornResult` of that call (squared Euclidean cost).
        source_weights, target_weights: the weights passed to that call (``None``: uniform).
        rows, cols: optional selection of rows of ``source`` and columns of ``target``.

    Returns:
        Detached ``(n, m)`` tensor in float64 for float64 inputs, float32 otherwise.

    Raises:
        ValueError: shapes that do not match ``result`` (naming the argument), and the
            errors of :func:`sinkhorn` for the points and weights.

    Example::

        >>> x, y = torch.randn(300, 8), torch.randn(200, 8)
        >>> res = sinkhorn(x, y, epsilon=1.0, path="tiled")
        >>> res.plan is None
        True
        >>> block = sinkhorn_plan(x, y, res, rows=slice(0, 10))   # the first 10 rows of P
        >>> block.shape
        torch.Size([10, 200])
        >>> dense = sinkhorn(x, y, epsilon=1.0, path="dense")
        >>> bool(torch.allclose(sinkhorn_plan(x, y, dense), dense.plan, atol=1e-7))
        True
    """
    check_feature_pair(source, target, "source", "target", half_ok=True)
    if not isinstance(result, SinkhornResult):
        raise TypeError(f"result must be a SinkhornResult, got {type(result).__name__}")
    n, m = source.shape[0], target.shape[0]
    if result.f.shape != (n,) or result.g.shape != (m,):
        raise ValueError(
            f"result has potentials of shapes {tuple(result.f.shape)}, {tuple(result.g.shape)}; "
            f"source and target have {n} and {m} rows"
        )
    cd = compute_dtype(source.dtype)
    like = torch.empty(0, dtype=cd, device=source.device)
    a = check_weights(source_weights, n, like, "source_weights").detach()
    b = check_weights(target_weights, m, like, "target_weights").detach()
    rows = slice(None) if rows is None else rows
    cols = slice(None) if cols is None else cols
    with no_autocast(source.device), torch.no_grad():
        xs, ys = _shifted(source, target, cd)
        f, g = result.f.to(cd), result.g.to(cd)
        return _tiled.plan_block(
            xs[rows], ys[cols], f[rows], g[cols], a[rows].log(), b[cols].log(), result.epsilon
        )
