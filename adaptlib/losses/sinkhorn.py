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
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .._checks import check_features, check_positive, check_weights
from ._validate import check_feature_pair, check_tensor_kind

__all__ = ["sinkhorn", "SinkhornResult", "sinkhorn_divergence"]


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
        plan: ``(N, M)`` detached transport plan :math:`P`.
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
    """

    value: Tensor
    transport_cost: Tensor
    plan: Tensor
    f: Tensor
    g: Tensor
    n_iter: int
    converged: bool
    marginal_error: float
    epsilon: float


def _sq_euclidean_cost(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean cost ``(N, M)`` by matmul expansion, clamped at 0.

    Both clouds are shifted by the (detached) first source row first; this changes neither
    the cost nor its gradient but avoids the cancellation of the expansion for data with a
    large common offset.
    """
    ref = x[:1].detach()
    x = x - ref
    y = y - ref
    xx = (x * x).sum(dim=1)
    yy = (y * y).sum(dim=1)
    return (xx.unsqueeze(1) + yy.unsqueeze(0) - 2.0 * (x @ y.T)).clamp_min(0)


def _check_cost(cost: object) -> Tensor:
    if not isinstance(cost, Tensor):
        raise TypeError(f"cost must be a torch.Tensor of shape (N, M), got {type(cost).__name__}")
    if not cost.is_floating_point():
        raise TypeError(f"cost must be a floating-point tensor, got dtype {cost.dtype}")
    check_tensor_kind(cost, "cost")
    if cost.dim() != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"cost must have shape (N, M) with N, M >= 1, got {tuple(cost.shape)}")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost contains NaN or inf")
    return cost


def _check_options(epsilon: float, max_iter: int, tol: float) -> Tuple[float, int, float]:
    eps = check_positive(epsilon, "epsilon")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    try:
        tol_f = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a non-negative number, got {tol!r}") from None
    if not (tol_f >= 0 and math.isfinite(tol_f)):
        raise ValueError(f"tol must be a finite non-negative number, got {tol!r}")
    return eps, max_iter, tol_f


def _check_init(init: object, n: int, m: int, like: Tensor) -> Tuple[Tensor, Tensor]:
    if not isinstance(init, (tuple, list)) or len(init) != 2:
        raise TypeError("init must be a pair (f0, g0) of tensors of shapes (N,) and (M,)")
    out = []
    for t, size, name in ((init[0], n, "init[0] (f0)"), (init[1], m, "init[1] (g0)")):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor of shape ({size},)")
        if t.dim() != 1 or t.shape[0] != size:
            raise ValueError(f"{name} must have shape ({size},), got {tuple(t.shape)}")
        if t.device != like.device:
            raise ValueError(f"{name} must be on {like.device}, got {t.device}")
        t = t.detach().to(like.dtype)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
        out.append(t.clone())
    return out[0], out[1]


def _check_scaling(scaling: object) -> Optional[float]:
    """``None`` (no epsilon scaling) or a ratio in (0, 1)."""
    if scaling is None:
        return None
    if isinstance(scaling, bool):
        raise TypeError(f"scaling must be None or a number in (0, 1), got {scaling!r}")
    try:
        s = float(scaling)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"scaling must be None or a number in (0, 1), got {scaling!r}") from None
    if not (0.0 < s < 1.0):
        raise ValueError(f"scaling must be None or a number in (0, 1), got {scaling!r}")
    return s


def _epsilon_schedule(eps: float, cost_range: float, scaling: Optional[float]) -> List[float]:
    """Annealing stages ``[eps_0, eps_0 s, eps_0 s^2, ...]`` strictly above ``eps`` (may be empty).

    ``eps_0`` is the range ``max C - min C`` of the cost (the plan does not change when a
    constant is added to ``C``), floored at ``eps``: a constant cost needs no annealing.
    """
    if scaling is None or not math.isfinite(cost_range):
        return []
    stages: List[float] = []
    e = max(cost_range, eps)
    while e > eps:
        stages.append(e)
        e *= scaling
    return stages


_STAGE_MAX_ITER = 100  # iteration cap per annealing stage of epsilon scaling
_STAGE_TOL = 1e-3  # row-marginal tolerance that ends an annealing stage early


@torch.no_grad()
def _sinkhorn_log(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    f: Tensor,
    g: Tensor,
    stages: Sequence[float] = (),
) -> Tuple[Tensor, Tensor, Tensor, int, bool, bool]:
    """Log-domain Sinkhorn iterations for min <P,C> + eps KL(P | a x b).

    Each iteration updates ``f`` (rows) then ``g`` (columns), so the plan of the current
    pair always has exact column marginals; the row violation of the current pair comes for
    free from the next ``f`` update: ``P_i. = a_i exp((f_i - f_new_i) / eps)``.

    ``stages`` are the annealing epsilons of epsilon scaling (largest first). At the start
    of every stage and of the final iterations the current potentials are absorbed into the
    cost, ``K = C - f (+) g``, and the loop continues on ``K`` with potentials that start
    at 0 (Schmitzer 2019). The entries of ``K`` that matter are then near 0 instead of near
    ``max C``, so ``(g - K) / eps`` keeps its precision even when ``eps / max C`` is below
    the dtype's resolution (float32 with a cost of 1e4 and ``eps = 1e-3``). Each annealing
    stage runs until its row violation is at most ``max(tol, _STAGE_TOL)`` or for
    ``_STAGE_MAX_ITER`` iterations; ``max_iter`` and the stopping test apply to the final
    stage only. Without stages nothing is absorbed (the plain iteration).

    Returns ``(f, g, log_plan, n_iter, converged, diverged)``: the total potentials, the
    log of the plan computed from the absorbed quantities (accurate to the dtype's
    resolution near 0), the number of (f, g) updates (all stages), and flags; a non-finite
    update stops the loop with ``diverged=True``.
    """
    log_a = a.log()
    log_b = b.log()
    log_ab = log_a.unsqueeze(1) + log_b.unsqueeze(0)
    # Checking the error needs a host sync; on accelerators do it only every few iterations.
    check_every = 1 if cost.device.type == "cpu" else 10
    f_abs = torch.zeros_like(f)
    g_abs = torch.zeros_like(g)
    K = cost
    n_iter = 0
    converged = diverged = False
    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL), True) for e in stages]
    schedule.append((eps, max_iter, tol, bool(stages)))
    for e, budget, stop_tol, absorb in schedule:
        if absorb:
            f_abs, g_abs = f_abs + f, g_abs + g
            K = cost - f_abs.unsqueeze(1) - g_abs.unsqueeze(0)
            f, g = torch.zeros_like(f), torch.zeros_like(g)
        converged = False
        for it in range(budget + 1):
            f_new = -e * torch.logsumexp(log_b.unsqueeze(0) + (g.unsqueeze(0) - K) / e, dim=1)
            if it > 0 and (it % check_every == 0 or it == budget):
                if not (bool(torch.isfinite(f_new).all()) and bool(torch.isfinite(g).all())):
                    diverged = True
                    break
                row_err = float((a * (torch.exp((f - f_new) / e) - 1.0).abs()).sum())
                if row_err <= stop_tol:
                    converged = True
                    break
            if it == budget:
                break
            f = f_new
            g = -e * torch.logsumexp(log_a.unsqueeze(1) + (f.unsqueeze(1) - K) / e, dim=0)
            n_iter += 1
        if diverged:
            break
    log_plan = log_ab + (f.unsqueeze(1) + g.unsqueeze(0) - K) / eps
    return f_abs + f, g_abs + g, log_plan, n_iter, converged and not diverged, diverged


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
) -> SinkhornResult:
    r"""Entropic optimal transport between two weighted point clouds (log-domain Sinkhorn).

    From Cuturi, "Sinkhorn Distances", NeurIPS 2013. Solves

    .. math::
        \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle P, C\rangle
        + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)
        = \max_{f, g}\ \langle a, f\rangle + \langle b, g\rangle
        - \varepsilon \langle a \otimes b, e^{(f \oplus g - C)/\varepsilon} - 1\rangle,

    with :math:`C_{ij} = \|x_i - y_j\|^2` (squared Euclidean, matmul expansion clamped at 0)
    unless ``cost`` is given. The optimal plan
    :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)` is the same as for POT's
    ``ot.sinkhorn(a, b, C, reg=epsilon)`` (entropy :math:`-H(P)` differs from the KL term by
    a constant on :math:`\Pi(a, b)`), so ``transport_cost`` matches ``ot.sinkhorn2``.

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

    **Gradients** (envelope theorem, exact at convergence, nothing unrolled, memory one
    ``(N, M)`` plan): :math:`\partial\,\mathrm{value}/\partial C_{ij} = P_{ij}` (hence
    :math:`\partial/\partial x_i = \sum_j P_{ij}\,2(x_i - y_j)`),
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
            counts the updates of all stages.

    Returns:
        :class:`SinkhornResult`. ``value``/``transport_cost`` have the dtype and device of
        the inputs; plan and potentials are detached.

    Raises:
        TypeError: non-tensor or non-floating inputs (points or ``cost``), half precision
            (only float32 and float64 are supported), dtype mismatch, bad ``init`` or
            ``scaling``.
        ValueError: shape/device mismatches (naming the argument), NaN/inf inputs, invalid
            weights, ``epsilon <= 0`` or too small for the dtype, ``max_iter < 1``,
            ``tol < 0``, ``scaling`` outside (0, 1), neither points nor ``cost`` given.

    Warns:
        RuntimeWarning: the iterations produced non-finite values (e.g. a cost near the
            dtype's overflow limit); ``converged`` is then False.

    Example::

        >>> x, y = torch.randn(20, 3), torch.randn(30, 3) + 1.0
        >>> res = sinkhorn(x, y, epsilon=0.1)
        >>> res.plan.shape, res.converged
        (torch.Size([20, 30]), True)
        >>> bool(res.value >= res.transport_cost)  # value = <P, C> + eps KL(P | a x b)
        True
    """
    eps, max_iter, tol = _check_options(epsilon, max_iter, tol)
    scaling = _check_scaling(scaling)
    if cost is None:
        if source is None or target is None:
            raise ValueError("source and target are required unless cost is given")
        check_feature_pair(source, target, "source", "target")
        C = _sq_euclidean_cost(source, target)
    else:
        C = _check_cost(cost)
        for t, name, size in ((source, "source", C.shape[0]), (target, "target", C.shape[1])):
            if t is not None:
                check_tensor_kind(t, name)
                if t.device != C.device:
                    raise ValueError(f"{name} must be on the device of cost ({C.device}), got {t.device}")
                check_features(t, name)
                if t.shape[0] != size:
                    raise ValueError(
                        f"{name} has {t.shape[0]} rows but cost has shape {tuple(C.shape)}"
                    )
                if t.device != C.device:
                    raise ValueError(f"{name} must be on the device of cost ({C.device}), got {t.device}")
    n, m = C.shape
    info = torch.finfo(C.dtype)
    if eps < info.tiny or not math.isfinite(1.0 / eps) or 1.0 / eps > info.max:
        raise ValueError(f"epsilon={eps:g} is outside the range representable in {C.dtype}")
    a = check_weights(source_weights, n, C, "source_weights")
    b = check_weights(target_weights, m, C, "target_weights")
    a_d, b_d, C_d = a.detach(), b.detach(), C.detach()
    if init is None:
        f0 = torch.zeros(n, dtype=C.dtype, device=C.device)
        g0 = torch.zeros(m, dtype=C.dtype, device=C.device)
    else:
        f0, g0 = _check_init(init, n, m, C)

    stages = _epsilon_schedule(eps, float(C_d.max() - C_d.min()), scaling) if scaling is not None else []
    f, g, log_plan, n_iter, converged, diverged = _sinkhorn_log(
        C_d, a_d, b_d, eps, max_iter, tol, f0, g0, stages
    )
    with torch.no_grad():
        plan = torch.exp(log_plan)
        finite = bool(torch.isfinite(plan).all()) and bool(torch.isfinite(f).all()) and bool(torch.isfinite(g).all())
        marginal_error = float((plan.sum(1) - a_d).abs().sum() + (plan.sum(0) - b_d).abs().sum())
        fa = (a_d * f).sum()
        gb = (b_d * g).sum()
        dual = fa + gb
    # Guard: the log-domain stopping test can be fooled by rounding when epsilon is tiny
    # relative to the cost, so the returned plan itself must also satisfy the marginals.
    guard = max(tol, math.sqrt(torch.finfo(C.dtype).eps))
    converged = converged and finite and marginal_error <= guard
    if diverged or not finite:
        warnings.warn(
            f"sinkhorn produced non-finite values (epsilon={eps:g} in cost units, cost range "
            f"[{float(C_d.min()):.3g}, {float(C_d.max()):.3g}]); the result is not converged",
            RuntimeWarning,
            stacklevel=2,
        )
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
    )


@torch.no_grad()
def _sinkhorn_symmetric_log(
    cost: Tensor, a: Tensor, eps: float, max_iter: int, tol: float, stages: Sequence[float] = ()
) -> Tuple[Tensor, Tensor, int, bool]:
    """Symmetric Sinkhorn for OT_eps(a, a) with a symmetric cost (Feydy et al. 2019).

    The averaged update ``f <- (f + T(f)) / 2`` with
    ``T(f)_i = -eps LSE_j(log a_j + (f_j - C_ij) / eps)`` converges much faster than the
    alternating iterations, which oscillate on symmetric problems. The marginal violation of
    ``P = a a^T exp((f + f^T - C) / eps)`` is ``sum_i a_i |exp((f_i - T(f)_i) / eps) - 1|``.
    ``stages`` anneal epsilon with absorption exactly as in :func:`_sinkhorn_log`.
    Returns ``(f, log_plan, n_iter, converged)``.
    """
    log_a = a.log()
    check_every = 1 if cost.device.type == "cpu" else 10
    f = torch.zeros_like(a)
    f_abs = torch.zeros_like(a)
    K = cost
    converged = diverged = False
    n_iter = 0
    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL), True) for e in stages]
    schedule.append((eps, max_iter, tol, bool(stages)))
    for e, budget, stop_tol, absorb in schedule:
        if absorb:
            f_abs = f_abs + f
            K = cost - f_abs.unsqueeze(1) - f_abs.unsqueeze(0)
            K = 0.5 * (K + K.T)
            f = torch.zeros_like(f)
        converged = False
        for it in range(budget + 1):
            tf = -e * torch.logsumexp(log_a.unsqueeze(0) + (f.unsqueeze(0) - K) / e, dim=1)
            if it > 0 and (it % check_every == 0 or it == budget):
                if not bool(torch.isfinite(tf).all()):
                    diverged = True
                    break
                err = float((a * (torch.exp((f - tf) / e) - 1.0).abs()).sum())
                if err <= stop_tol:
                    converged = True
                    break
            if it == budget:
                break
            f = 0.5 * (f + tf)
            n_iter += 1
        if diverged:
            break
    log_plan = log_a.unsqueeze(1) + log_a.unsqueeze(0) + (f.unsqueeze(1) + f.unsqueeze(0) - K) / eps
    return f_abs + f, log_plan, n_iter, converged and not diverged


class _EnvelopeSelfOT(torch.autograd.Function):
    """OT_eps(a, a) value; backward: d/dC = P, d/da = 2 (f - <a, f>) (a enters twice)."""

    @staticmethod
    def forward(ctx, cost, a, value, plan, f_c):  # type: ignore[override]
        ctx.save_for_backward(plan, f_c)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        plan, f_c = ctx.saved_tensors
        g_cost = grad * plan if ctx.needs_input_grad[0] else None
        g_a = 2.0 * grad * f_c if ctx.needs_input_grad[1] else None
        return g_cost, g_a, None, None, None


def _self_ot(
    x: Tensor,
    w: Optional[Tensor],
    name: str,
    eps: float,
    max_iter: int,
    tol: float,
    scaling: Optional[float] = None,
) -> Tuple[Tensor, bool]:
    """Differentiable OT_eps(a, a) for one cloud via the symmetric iterations."""
    C = _sq_euclidean_cost(x, x)
    C = 0.5 * (C + C.T)  # exact symmetry (the matmul need not be bitwise symmetric)
    a = check_weights(w, x.shape[0], x, name)
    a_d, C_d = a.detach(), C.detach()
    stages = _epsilon_schedule(eps, float(C_d.max() - C_d.min()), scaling) if scaling is not None else []
    f, log_plan, _, converged = _sinkhorn_symmetric_log(C_d, a_d, eps, max_iter, tol, stages)
    with torch.no_grad():
        plan = torch.exp(log_plan)
        fa = (a_d * f).sum()
        # exact dual objective at (f, f): 2<a, f> - eps (sum P - 1)
        dual = 2.0 * fa - eps * (plan.sum() - 1.0)
        finite = bool(torch.isfinite(dual)) and bool(torch.isfinite(plan).all())
        err = float((plan.sum(1) - a_d).abs().sum())  # the loop's criterion (rows = columns)
    guard = max(tol, math.sqrt(torch.finfo(C.dtype).eps))
    converged = converged and finite and err <= guard
    return _EnvelopeSelfOT.apply(C, a, dual, plan, f - fa), converged


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

    Returns:
        Scalar tensor in squared feature units (dtype/device of the inputs).

    Raises:
        The errors of :func:`sinkhorn` (arguments named ``source``, ``target``, ...).

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
    check_feature_pair(source, target, "source", "target")
    eps, max_iter, tol = _check_options(epsilon, max_iter, tol)
    scaling = _check_scaling(scaling)
    a = check_weights(source_weights, source.shape[0], source, "source_weights")
    b = check_weights(target_weights, target.shape[0], source, "target_weights")
    if source.shape == target.shape and torch.equal(source, target) and torch.equal(a, b):
        zero = (source * 0.0).sum() + (target * 0.0).sum()
        if source_weights is not None:
            zero = zero + (source_weights * 0.0).sum()
        if target_weights is not None:
            zero = zero + (target_weights * 0.0).sum()
        return zero
    cross = sinkhorn(
        source, target, source_weights, target_weights, epsilon=eps, max_iter=max_iter, tol=tol, scaling=scaling
    )
    aa, conv_a = _self_ot(source, source_weights, "source_weights", eps, max_iter, tol, scaling)
    bb, conv_b = _self_ot(target, target_weights, "target_weights", eps, max_iter, tol, scaling)
    if not (cross.converged and conv_a and conv_b):
        warnings.warn(
            f"sinkhorn_divergence: an OT problem did not converge within max_iter={max_iter} "
            f"(epsilon={eps:g} in squared feature units); the value is approximate",
            RuntimeWarning,
            stacklevel=2,
        )
    return cross.value - 0.5 * (aa + bb)
