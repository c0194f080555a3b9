r"""The Sinkhorn iterations behind :func:`adaptlib.losses.sinkhorn` and
:func:`adaptlib.losses.sinkhorn_divergence`, all without autograd (gradients come from the
envelope theorem, :mod:`adaptlib.losses._sinkhorn_envelope`):

* dense cost matrix: :func:`_sinkhorn_exp` (exp-domain scalings with absorption of large
  scalings into the potentials, the fast path) falling back to :func:`_sinkhorn_log`
  (log-domain, never overflows) when a scaling turns non-finite; :func:`_solve_dense` chains
  them;
* self terms :math:`\mathrm{OT}_\varepsilon(a, a)` of the divergence:
  :func:`_sinkhorn_symmetric_exp` / :func:`_sinkhorn_symmetric_log`, the averaged symmetric
  iteration :math:`f \leftarrow \tfrac12 (f + T(f))`;
* tiled and Triton paths, which never form the matrix: :func:`_sinkhorn_log_ops` and
  :func:`_sinkhorn_symmetric_ops` run the same log-domain loop on a softmin operator;
* epsilon scaling (annealing): :func:`_epsilon_schedule`.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor


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
