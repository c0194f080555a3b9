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
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_features, check_positive, check_weights
from ..kernels import check_path, resolve_path
from ..kernels import sinkhorn_tiled as _tiled
from ._validate import check_feature_pair, check_tensor_kind, compute_dtype, no_autocast

__all__ = ["sinkhorn", "SinkhornResult", "sinkhorn_divergence", "sinkhorn_plan"]


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


@torch.no_grad()
def _sq_cost_nograd(x: Tensor, y: Tensor) -> Tensor:
    """Detached ``(N, M)`` squared Euclidean cost of already shifted points: one ``addmm``
    plus in-place passes (no temporaries of size ``N x M`` beyond the result)."""
    c = torch.addmm((y * y).sum(1).unsqueeze(0), x, y.T, beta=1.0, alpha=-2.0)
    return c.add_((x * x).sum(1).unsqueeze(1)).clamp_min_(0.0)


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


_ABSORB_LOG = {torch.float32: 20.0, torch.float64: 200.0}  # |log u| above which u is absorbed


@torch.no_grad()
def _sinkhorn_exp(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    f: Optional[Tensor],
    g: Optional[Tensor],
    stages: Sequence[float] = (),
) -> Optional[Tuple[Tensor, Tensor, Tensor, int, bool]]:
    """Stabilised exp-domain Sinkhorn with absorption (Schmitzer, SIAM J. Sci. Comput. 2019, Alg. 2).

    The kernel ``K = exp((f_abs (+) g_abs - C) / eps)`` is formed once (one exp pass over
    the cost) and the iterations only rescale it, ``u <- 1 / K (b v)``, ``v <- 1 / K^T (a u)``:
    two matrix-vector products per iteration instead of two log-sum-exp passes. The
    potentials are ``f = f_abs + eps log u``, ``g = g_abs + eps log v``. Whenever
    ``max |log u|`` or ``max |log v|`` exceeds ``_ABSORB_LOG`` (20 in float32, 200 in
    float64) the scalings are absorbed into ``f_abs, g_abs`` and ``K`` is recomputed, so the
    products never overflow; the same happens at every epsilon of the annealing schedule.
    Without ``init`` (``f is None``), ``f_abs_i = min_j C_ij`` and
    ``g_abs_j = min_i (C_ij - f_abs_i)``, which puts an entry 1 in every row and column of
    ``K`` (no row or column underflows at the start, however small ``eps``).

    Stopping test, stage rules and ``n_iter`` are those of :func:`_sinkhorn_log`: the L1 row
    violation of the current pair, ``sum_i a_i |u_i (K b v)_i - 1|``, comes for free from
    the next ``u`` update. Returns ``(f, g, plan, n_iter, converged)``, or ``None`` when a
    scaling became non-finite (a whole row or column of ``K`` underflowed); the caller then
    falls back to the log-domain iterations.
    """
    tau = _ABSORB_LOG.get(cost.dtype, 20.0)
    K = torch.empty_like(cost)
    if f is None or g is None:
        f_abs = cost.amin(1)
        g_abs = torch.sub(cost, f_abs.unsqueeze(1), out=K).amin(0)
    else:
        f_abs, g_abs = f.clone(), g.clone()
    u = torch.ones_like(a)
    v = torch.ones_like(b)
    n_iter = 0
    converged = False

    def kernel(e: float) -> None:
        torch.sub(cost, f_abs.unsqueeze(1), out=K)
        K.sub_(g_abs.unsqueeze(0)).mul_(-1.0 / e).exp_()

    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL)) for e in stages]
    schedule.append((eps, max_iter, tol))
    Kt = K.T
    for e, budget, stop_tol in schedule:
        kernel(e)
        converged = False
        for it in range(budget + 1):
            Kv = torch.mv(K, b * v)
            if it > 0:
                row_err = float((a * (u * Kv - 1.0).abs()).sum())
                if not math.isfinite(row_err):
                    return None
                if row_err <= stop_tol:
                    converged = True
                    break
            if it == budget:
                break
            u = 1.0 / Kv
            v = 1.0 / torch.mv(Kt, a * u)
            n_iter += 1
            lu, lv = u.log(), v.log()
            big = float(torch.maximum(lu.abs().max(), lv.abs().max()))
            if not math.isfinite(big):
                return None
            if big > tau:
                f_abs, g_abs = f_abs + e * lu, g_abs + e * lv
                u, v = torch.ones_like(u), torch.ones_like(v)
                kernel(e)
        if e != eps:  # absorb before the next epsilon
            f_abs, g_abs = f_abs + e * u.log(), g_abs + e * v.log()
            u, v = torch.ones_like(u), torch.ones_like(v)
    plan = K.mul_((a * u).unsqueeze(1)).mul_((b * v).unsqueeze(0))
    return f_abs + eps * u.log(), g_abs + eps * v.log(), plan, n_iter, converged


@torch.no_grad()
def _sinkhorn_symmetric_exp(
    cost: Tensor, a: Tensor, eps: float, max_iter: int, tol: float, stages: Sequence[float] = ()
) -> Optional[Tuple[Tensor, Tensor, int, bool]]:
    """Exp-domain form of :func:`_sinkhorn_symmetric_log` (same update, stopping test, stages).

    With ``K = exp((f_abs (+) f_abs - C) / eps)`` and ``f = f_abs + eps log u``, the averaged
    update ``f <- (f + T(f)) / 2`` is ``u <- sqrt(u / K (a u))``: one matrix-vector product per
    iteration; absorption as in :func:`_sinkhorn_exp`. ``f_abs`` starts at 0 (the cost of a
    cloud with itself has a zero diagonal, so every row of ``K`` holds an entry 1). Returns
    ``(f, plan, n_iter, converged)`` or ``None`` on a non-finite scaling.
    """
    tau = _ABSORB_LOG.get(cost.dtype, 20.0)
    f_abs = torch.zeros_like(a)
    K = torch.empty_like(cost)
    u = torch.ones_like(a)
    n_iter = 0
    converged = False

    def kernel(e: float) -> None:
        torch.sub(cost, f_abs.unsqueeze(1), out=K)
        K.sub_(f_abs.unsqueeze(0)).mul_(-1.0 / e).exp_()

    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL)) for e in stages]
    schedule.append((eps, max_iter, tol))
    for e, budget, stop_tol in schedule:
        kernel(e)
        converged = False
        for it in range(budget + 1):
            Ku = torch.mv(K, a * u)
            if it > 0:
                err = float((a * (u * Ku - 1.0).abs()).sum())
                if not math.isfinite(err):
                    return None
                if err <= stop_tol:
                    converged = True
                    break
            if it == budget:
                break
            u = torch.sqrt(u / Ku)
            n_iter += 1
            lu = u.log()
            big = float(lu.abs().max())
            if not math.isfinite(big):
                return None
            if big > tau:
                f_abs = f_abs + e * lu
                u = torch.ones_like(u)
                kernel(e)
        if e != eps:
            f_abs = f_abs + e * u.log()
            u = torch.ones_like(u)
    au = a * u
    plan = K.mul_(au.unsqueeze(1)).mul_(au.unsqueeze(0))
    return f_abs + eps * u.log(), plan, n_iter, converged


@torch.no_grad()
def _sinkhorn_log_ops(
    softmin_rows: Callable[[Tensor, float], Tensor],
    softmin_cols: Callable[[Tensor, float], Tensor],
    a: Tensor,
    b: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    f: Tensor,
    g: Tensor,
    stages: Sequence[float] = (),
) -> Tuple[Tensor, Tensor, int, bool, bool]:
    """Log-domain Sinkhorn on the tiled/Triton paths: the iterations of :func:`_sinkhorn_log`
    with the soft minima ``softmin_rows(g, e)`` (new ``f``) and ``softmin_cols(f, e)`` (new
    ``g``) streamed over tiles. No absorption: the cost is recomputed on every pass. Returns
    ``(f, g, n_iter, converged, diverged)``."""
    check_every = 1 if a.device.type == "cpu" else 10
    n_iter = 0
    converged = diverged = False
    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL)) for e in stages]
    schedule.append((eps, max_iter, tol))
    for e, budget, stop_tol in schedule:
        converged = False
        for it in range(budget + 1):
            f_new = softmin_rows(g, e)
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
            g = softmin_cols(f, e)
            n_iter += 1
        if diverged:
            break
    return f, g, n_iter, converged and not diverged, diverged


@torch.no_grad()
def _sinkhorn_symmetric_ops(
    softmin_self: Callable[[Tensor, float], Tensor],
    a: Tensor,
    eps: float,
    max_iter: int,
    tol: float,
    stages: Sequence[float] = (),
) -> Tuple[Tensor, int, bool]:
    """Symmetric averaged iterations of :func:`_sinkhorn_symmetric_log` with a streamed soft
    minimum ``softmin_self(f, e) = T(f)``. Returns ``(f, n_iter, converged)``."""
    check_every = 1 if a.device.type == "cpu" else 10
    f = torch.zeros_like(a)
    n_iter = 0
    converged = diverged = False
    schedule = [(e, _STAGE_MAX_ITER, max(tol, _STAGE_TOL)) for e in stages]
    schedule.append((eps, max_iter, tol))
    for e, budget, stop_tol in schedule:
        converged = False
        for it in range(budget + 1):
            tf = softmin_self(f, e)
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
    return f, n_iter, converged and not diverged


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


def _frobenius(p: Tensor, c: Tensor, rows: int = 256) -> Tensor:
    """``sum(p * c)`` by blocks of rows: pairwise-summation accuracy without an ``N x M`` temporary."""
    return sum(((p[i:i + rows] * c[i:i + rows]).sum() for i in range(0, p.shape[0], rows)), p.new_zeros(()))




def _check_eps_dtype(eps: float, dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    if eps < info.tiny or not math.isfinite(1.0 / eps) or 1.0 / eps > info.max:
        raise ValueError(f"epsilon={eps:g} is outside the range representable in {dtype}")


def _check_block(block_size: object) -> Optional[int]:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be None or a positive integer, got {block_size!r}")
    return block_size


@torch.no_grad()
def _shifted(x: Tensor, y: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Detached copies of both clouds in ``dtype``, shifted by the first source row.

    The shift changes neither the cost nor its gradient but avoids the cancellation of the
    matmul expansion for data with a large common offset.
    """
    ref = x[:1].detach().to(dtype)
    return (x.detach().to(dtype) - ref).contiguous(), (y.detach().to(dtype) - ref).contiguous()


def _bbox_range(xs: Tensor, ys: Tensor) -> float:
    """Squared diameter of the bounding box of both clouds, an upper bound on ``max C - min C``."""
    lo = torch.minimum(xs.amin(0), ys.amin(0))
    hi = torch.maximum(xs.amax(0), ys.amax(0))
    return float(((hi - lo) ** 2).sum())


def _kernels(path: str, block: Optional[int]):
    """``(softmin, plan_stats)`` of the tiled or Triton path with a common signature."""
    if path == "tiled":
        bs = block or _tiled.DEFAULT_BLOCK

        def softmin(x, y, h, lw, e):
            return _tiled.softmin(x, y, h, lw, e, block=bs)

        def stats(x, y, f, g, la, lb, e, moments):
            return _tiled.plan_stats(x, y, f, g, la, lb, e, block=bs, moments=moments)

        return softmin, stats
    from ..kernels import sinkhorn_triton as _tri  # imported lazily: needs triton

    kw = {} if block is None else {"block_n": block, "block_m": block}

    def softmin_t(x, y, h, lw, e):
        return _tri.softmin(x, y, h, lw, e, **kw)

    def stats_t(x, y, f, g, la, lb, e, moments):
        return _tri.plan_stats(x, y, f, g, la, lb, e, moments=moments, **kw)

    return softmin_t, stats_t


def _solve_dense(C, a, b, eps, max_iter, tol, f0, g0, stages):
    """Exp-domain solver with absorption, falling back to the log domain if a scaling is non-finite."""
    out = _sinkhorn_exp(C, a, b, eps, max_iter, tol, f0, g0, stages)
    if out is not None:
        f, g, plan, n_iter, converged = out
        return f, g, plan, n_iter, converged, False
    f0 = torch.zeros_like(a) if f0 is None else f0
    g0 = torch.zeros_like(b) if g0 is None else g0
    f, g, log_plan, n_iter, converged, diverged = _sinkhorn_log(C, a, b, eps, max_iter, tol, f0, g0, stages)
    return f, g, torch.exp(log_plan), n_iter, converged, diverged


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
        \mathrm{OT}_\varepsilon(a, b) = \min_{P \in \Pi(a, b)} \langle P, C\rangle
        + \varepsilon\, \mathrm{KL}(P \,\|\, a \otimes b)
        = \max_{f, g}\ \langle a, f\rangle + \langle b, g\rangle
        - \varepsilon \langle a \otimes b, e^{(f \oplus g - C)/\varepsilon} - 1\rangle,

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
