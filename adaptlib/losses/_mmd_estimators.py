"""Kernel matrices of the stacked batch ``Z = [source; target]`` and the one estimator shared
by :func:`adaptlib.losses.mmd` and :func:`adaptlib.losses.jmmd` on the dense path (biased,
unbiased and linear-time), with their input checks.

Squared distances come from a single Gram matrix of the batch shifted by its (symmetric)
centre, never from an ``(N+M)^2 x D`` tensor of differences.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

def _centre(z: Tensor, n: int) -> Tensor:
    """Detached centre of a stacked batch ``[source; target]`` with ``n`` source rows: the
    midpoint of the first source row and the first target row.

    Distances are translation invariant, so shifting by it changes no value or gradient, but
    the Gram expansion loses far less precision for data with a large common offset. The
    midpoint is the same when source and target are swapped, which keeps
    ``mmd(x, y) == mmd(y, x)`` to rounding (a shift by the first row is not: it makes one
    cloud exact and leaves the other with rounding noise of the size of its offset).
    """
    z = z.detach()
    if n <= 0 or n >= z.shape[0]:
        return z[:1]
    return 0.5 * (z[:1] + z[n : n + 1])


def _stacked_sq_dists(z: Tensor, centre: Tensor) -> Tensor:
    """Pairwise squared distances ``(P, P)`` of the rows of ``z - centre`` from one Gram matrix."""
    z = z - centre
    gram = z @ z.T
    sq_norms = gram.diagonal()
    return (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2.0 * gram).clamp_min(0)


def _max_row_norm(*tensors: Tensor) -> Tensor:
    """Largest Euclidean row norm over ``tensors`` (detached): the feature magnitude ``R``."""
    with torch.no_grad():
        return torch.stack([t.detach().norm(dim=1).max() for t in tensors if t.shape[0] > 0]).max()


def _combined_gaussian(sq: Tensor, sigmas: Tensor, betas: Tensor) -> Tensor:
    r"""``sum_k betas[k] * exp(-sq / (2 sigmas[k]^2))``, same shape as ``sq``."""
    gammas = 1.0 / (2.0 * sigmas * sigmas)
    out = None
    for k in range(sigmas.shape[0]):
        term = betas[k] * torch.exp(-sq * gammas[k])
        out = term if out is None else out + term
    return out


def _mmd_estimate(
    kernel: Tensor,
    estimator: str,
    n: int = 0,
    a: Optional[Tensor] = None,
    b: Optional[Tensor] = None,
) -> Tensor:
    r"""Turn a combined kernel into an MMD^2 estimate (shared by :func:`mmd` and :func:`jmmd`).

    * ``"biased"`` / ``"unbiased"``: ``kernel`` is the ``(N+M, N+M)`` matrix of the stacked
      batch, ``n`` the number of source rows, ``a`` ``(N,)`` and ``b`` ``(M,)`` probability
      weights.
    * ``"linear"``: ``kernel`` is ``(4, P)`` with rows ``k(x_{2i-1}, x_{2i})``,
      ``k(y_{2i-1}, y_{2i})``, ``k(x_{2i-1}, y_{2i})``, ``k(x_{2i}, y_{2i-1})``.
    """
    if estimator == "linear":
        return (kernel[0] + kernel[1] - kernel[2] - kernel[3]).mean()
    kxx = kernel[:n, :n]
    kyy = kernel[n:, n:]
    kxy = kernel[:n, n:]
    xx = a @ kxx @ a
    yy = b @ kyy @ b
    xy = a @ kxy @ b
    if estimator == "biased":
        return xx + yy - 2.0 * xy
    # unbiased: drop the diagonal terms and renormalise the remaining off-diagonal mass
    a2 = a * a
    b2 = b * b
    xx = (xx - (a2 * kxx.diagonal()).sum()) / (1.0 - a2.sum())
    yy = (yy - (b2 * kyy.diagonal()).sum()) / (1.0 - b2.sum())
    return xx + yy - 2.0 * xy


def _check_unbiased_mass(w: Tensor, name: str) -> None:
    """The unbiased estimator needs off-diagonal mass: at least two points with weight > 0."""
    if int((w > 0).sum()) < 2:
        raise ValueError(
            f"estimator='unbiased' needs at least two points with positive weight in {name}"
        )


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _linear_indices(
    n: int, m: int, device: torch.device, generator: Optional[torch.Generator]
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Random equal-size subsets for the linear estimator when ``n != m`` (else no change).

    The smaller side's permutation is drawn first, then the larger side's, so that swapping
    source and target (with the same generator state) selects the same rows of each cloud.
    """
    if n == m:
        return None, None
    size = min(n, m)
    gdev = generator.device if generator is not None else torch.device("cpu")
    first = torch.randperm(size, generator=generator, device=gdev)
    second = torch.randperm(max(n, m), generator=generator, device=gdev)[:size]
    ix, iy = (first, second) if n < m else (second, first)
    return ix.to(device), iy.to(device)


def _linear_pair_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared distances ``(4, P)`` of the disjoint pairs used by the linear estimator."""
    p = x.shape[0] // 2
    x1, x2 = x[0 : 2 * p : 2], x[1 : 2 * p : 2]
    y1, y2 = y[0 : 2 * p : 2], y[1 : 2 * p : 2]
    pairs = torch.stack([x1 - x2, y1 - y2, x1 - y2, x2 - y1])  # (4, P, D): O(N D) memory
    return (pairs * pairs).sum(-1)


def _check_rows(n: int, m: int, estimator: str, src: str, tgt: str) -> None:
    if estimator in ("unbiased", "linear"):
        if n < 2:
            raise ValueError(f"estimator={estimator!r} needs at least 2 rows in {src}, got {n}")
        if m < 2:
            raise ValueError(f"estimator={estimator!r} needs at least 2 rows in {tgt}, got {m}")


def _target_first(srcs: Sequence[Tensor], tgts: Sequence[Tensor], a: Tensor, b: Tensor) -> bool:
    """Whether the canonical order of the pair puts the target first.

    The biased and unbiased estimates are symmetric formulas, but their Gram matrices, medians
    and sums round differently when the stacked rows come in another order; for near-duplicate
    clouds (distances near the Gram expansion's resolution) that reached a relative 1e-5.
    Computing every pair in one canonical order makes ``mmd(x, y)`` and ``mmd(y, x)`` run
    the same operations: the side with fewer rows first, else the one whose first differing
    entry (features of each layer, then weights) is smaller. ``O(N D)``, done once per call.
    """
    n, m = srcs[0].shape[0], tgts[0].shape[0]
    if n != m:
        return n > m
    for s, t in list(zip(srcs, tgts)) + [(a, b)]:
        if s.shape != t.shape:
            return False
        differ = (s != t).reshape(-1).nonzero()
        if differ.numel():
            i = differ[0, 0]
            return bool(s.reshape(-1)[i] > t.reshape(-1)[i])
    return False


def _same_sample(srcs: Sequence[Tensor], tgts: Sequence[Tensor], a: Tensor, b: Tensor) -> bool:
    """Whether source and target are the same weighted sample (every layer equal, same weights).

    Costs one ``O(N D)`` comparison, nothing next to the ``O((N+M)^2 D)`` estimate."""
    return all(s.shape == t.shape and torch.equal(s, t) for s, t in zip(srcs, tgts)) and torch.equal(a, b)


def _exact_zero(*tensors: Tensor) -> Tensor:
    """An exact 0 connected to ``tensors`` with zero gradient (the biased MMD of a sample
    with itself: its minimum, so the first derivatives vanish). Summing the Gram-matrix
    estimate instead leaves rounding residues of about ``1e-16`` there."""
    zero = None
    for t in tensors:
        term = (t * 0.0).sum()
        zero = term if zero is None else zero + term
    return zero
