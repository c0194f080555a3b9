r"""Gaussian bandwidths of the MMD losses: explicit ones, the median/mean heuristic (with
its strided row subsample above :data:`HEURISTIC_MAX_ROWS` rows) and the floor every
data-driven bandwidth respects (:data:`MIN_BANDWIDTH`, relative to the feature magnitude).

:func:`gaussian_bandwidths` is public (``adaptlib.losses.gaussian_bandwidths``); the rest
serves :func:`adaptlib.losses.mmd` and :func:`adaptlib.losses.jmmd`, which use the same
bandwidths on every computation path.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._checks import check_choice
from ._mmd_estimators import _centre, _max_row_norm, _stacked_sq_dists

__all__ = ["gaussian_bandwidths", "MIN_BANDWIDTH", "HEURISTIC_MAX_ROWS", "DEFAULT_MULTIPLIERS", "HEURISTICS"]

DEFAULT_MULTIPLIERS: Tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
HEURISTICS = ("median", "mean")

#: Data-driven bandwidths use all off-diagonal pairs of the stacked batch up to this many
#: rows, and above it the pairs of ``HEURISTIC_MAX_ROWS`` evenly strided rows (see
#: :func:`_heuristic_sigmas`).
HEURISTIC_MAX_ROWS: int = 1024

BandwidthSpec = Union[Sequence[float], Tensor]


def _check_multipliers(multipliers: object, name: str = "multipliers") -> Tuple[float, ...]:
    """Return ``multipliers`` as a non-empty tuple of finite positive floats."""
    if isinstance(multipliers, Tensor):
        multipliers = multipliers.detach().reshape(-1).tolist()
    if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, Sequence):
        raise TypeError(f"{name} must be a sequence of positive numbers, got {multipliers!r}")
    if len(multipliers) == 0:
        raise ValueError(f"{name} must contain at least one multiplier")
    out = []
    for m in multipliers:
        try:
            v = float(m)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must hold positive numbers, got {m!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must hold finite positive numbers, got {m!r}")
        out.append(v)
    return tuple(out)


#: Absolute floor of data-driven bandwidths, in feature units (the same for every dtype):
#: distances below it are treated as duplicates by the heuristic, and no data-driven
#: bandwidth is smaller. Features whose meaningful distances are below about 1e-5 should be
#: rescaled or given explicit ``bandwidths``.
MIN_BANDWIDTH: float = 1e-6


def _bandwidth_floor(feature_norm: Tensor, dtype: torch.dtype) -> Tensor:
    r"""Smallest admissible data-driven bandwidth, in feature-distance units.

    :math:`\sigma_{\min} = \max(\sqrt{\varepsilon_{\mathrm{mach}}}\,R,\ \sigma_{\mathrm{abs}})`
    with :math:`R` the largest Euclidean norm of the input rows (the feature magnitude) and
    :math:`\sigma_{\mathrm{abs}}` = :data:`MIN_BANDWIDTH`. ``sqrt(eps) * R`` is the
    resolution of distances of points of norm ``R`` (a difference of ``1e-6`` between
    features of size 3 does not exist in float32, and the Gram expansion of squared
    distances carries an absolute error of about ``eps * R^2``); the absolute part keeps
    clouds that are all (nearly) at the origin from getting a bandwidth of the size of
    rounding noise, whose gradients would explode.
    """
    rel = math.sqrt(torch.finfo(dtype).eps) * feature_norm.clamp_min(0)
    return rel.clamp_min(MIN_BANDWIDTH)


def gaussian_bandwidths(
    sq_dists: Tensor,
    heuristic: str = "median",
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    *,
    feature_norm: Optional[Union[float, Tensor]] = None,
) -> Tensor:
    r"""Gaussian kernel bandwidths from a data-driven distance scale.

    Computes a scale :math:`h` from pairwise distances and returns

    .. math::
        \sigma_k = \max(m_k \, h,\ \sigma_{\min}), \qquad k = 1..K,

    where :math:`h` is the median (``heuristic="median"``) or the mean (``"mean"``) of the
    *non-zero* Euclidean distances :math:`\sqrt{d^2}`, those larger than the floor
    :math:`\sigma_{\min} = \max(\sqrt{\varepsilon_{\mathrm{mach}}}\, R,\ 10^{-6})`, with
    :math:`R` the feature magnitude (``feature_norm``; machine epsilon of the dtype) and
    :data:`MIN_BANDWIDTH` = ``1e-6`` an absolute floor in feature units. Distances at or below
    the floor are duplicates up to the resolution of the data: with dead ReLU rows or
    repeated samples they can be half or more of all pairs, and a plain median would then
    be 0 (every bandwidth at the floor, so every non-duplicate pair has kernel 0, a constant
    MMD and no gradient). If no distance is above the floor, :math:`h = 0` and every
    bandwidth is :math:`\sigma_{\min}`: the points are identical to the data's resolution
    and the MMD is about 0 with small gradients (not the ``0/0`` of a zero bandwidth, nor
    the large value of a bandwidth of the size of rounding noise). The median is the lower
    median (an observed distance).

    The result is computed under ``torch.no_grad`` semantics: it is detached, so no gradient
    flows through the bandwidth (as in DAN/JAN).

    Args:
        sq_dists: squared Euclidean distances, in squared feature units. Either a square
            matrix ``(P, P)`` of all pairwise squared distances of a batch (only the
            off-diagonal pairs ``i < j`` are used), or a 1-d tensor ``(Q,)`` of squared
            distances that are all used (as the linear-time MMD does). Floating point; the
            result has its dtype and device.
        heuristic: ``"median"`` or ``"mean"``.
        multipliers: ``K`` positive factors :math:`m_k` applied to :math:`h`.
        feature_norm: the feature magnitude :math:`R` (largest Euclidean norm of the points
            the distances come from, in feature units). ``None``: the largest distance,
            which is within a factor 2 of it for centred data. :func:`mmd` and
            :func:`jmmd` pass the largest row norm of the stacked batch.

    Returns:
        Tensor of shape ``(K,)``: bandwidths :math:`\sigma_k` in feature-distance units.

    Raises:
        TypeError: ``sq_dists`` is not a floating-point tensor, or ``multipliers`` is not a
            sequence of numbers.
        ValueError: ``sq_dists`` has the wrong shape, has no pair to use (a ``1 x 1``
            matrix or an empty vector) or non-finite entries; unknown ``heuristic``;
            ``multipliers`` empty or not positive.

    Example::

        >>> z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
        >>> gaussian_bandwidths(torch.cdist(z, z) ** 2, "median", (0.5, 1.0, 2.0))
        tensor([ 2.5000,  5.0000, 10.0000])
    """
    check_choice(heuristic, "heuristic", HEURISTICS)
    mults = _check_multipliers(multipliers)
    if not isinstance(sq_dists, Tensor) or not sq_dists.is_floating_point():
        raise TypeError("sq_dists must be a floating-point tensor of squared distances")
    d2 = sq_dists.detach()
    if d2.dim() == 2:
        p = d2.shape[0]
        if d2.shape[1] != p:
            raise ValueError(f"sq_dists must be square (P, P) or 1-d, got shape {tuple(d2.shape)}")
        upper = torch.ones(p, p, dtype=torch.bool, device=d2.device).triu_(diagonal=1)
        vals = d2[upper]  # pairs i < j (a bool mask costs P^2 bytes, less than index pairs)
    elif d2.dim() == 1:
        vals = d2
    else:
        raise ValueError(f"sq_dists must be square (P, P) or 1-d, got shape {tuple(d2.shape)}")
    if vals.numel() == 0:
        raise ValueError("sq_dists holds no pair of distinct points to estimate a bandwidth from")
    if not bool(torch.isfinite(vals).all()):
        raise ValueError("sq_dists contains NaN or inf")
    vals = vals.clamp_min(0)
    if feature_norm is None:
        norm = vals.max().sqrt()
    else:
        norm = torch.as_tensor(feature_norm, dtype=vals.dtype, device=vals.device).detach()
        if norm.numel() != 1 or not bool(torch.isfinite(norm)) or float(norm) < 0:
            raise ValueError(f"feature_norm must be a finite non-negative number, got {feature_norm!r}")
        norm = norm.reshape(())
    floor = _bandwidth_floor(norm, vals.dtype)
    nonzero = vals[vals > floor * floor]
    if nonzero.numel() == 0:
        h = torch.zeros((), dtype=vals.dtype, device=vals.device)
    elif heuristic == "median":
        h = nonzero.median().sqrt()
    else:
        h = nonzero.sqrt().mean()
    m = torch.tensor(mults, dtype=vals.dtype, device=vals.device)
    return torch.maximum(m * h, floor)


def _explicit_bandwidths(bandwidths: BandwidthSpec, like: Tensor, name: str) -> Tensor:
    """Validate user-given bandwidths and return them as a ``(K,)`` tensor like ``like``."""
    if isinstance(bandwidths, Tensor):
        sig = bandwidths.to(dtype=like.dtype, device=like.device)
    else:
        if isinstance(bandwidths, (str, bytes)) or not isinstance(bandwidths, Sequence):
            raise TypeError(f"{name} must be a sequence or 1-d tensor of positive numbers")
        try:
            sig = torch.tensor([float(s) for s in bandwidths], dtype=like.dtype, device=like.device)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must hold positive numbers, got {bandwidths!r}") from None
    if sig.dim() != 1 or sig.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence, got shape {tuple(sig.shape)}")
    s = sig.detach()
    if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
        raise ValueError(f"{name} must hold finite positive values, got {s.tolist()}")
    if not bool(torch.isfinite(1.0 / (2.0 * s * s)).all()):
        raise ValueError(f"{name} are too small for dtype {like.dtype}: 1/(2 sigma^2) overflows")
    return sig


def _layer_sigmas(
    sq: Tensor, bandwidths: Optional[BandwidthSpec], heuristic: str, multipliers, name: str,
    feature_norm: Tensor,
) -> Tensor:
    if bandwidths is not None:
        return _explicit_bandwidths(bandwidths, sq, name)
    return gaussian_bandwidths(sq, heuristic, multipliers, feature_norm=feature_norm)


def _heuristic_rows(n: int, m: int, device: torch.device) -> Optional[Tensor]:
    """Rows of the stacked batch used by the bandwidth heuristic.

    ``None`` (all rows) up to :data:`HEURISTIC_MAX_ROWS` stacked rows; above it, with
    ``S = HEURISTIC_MAX_ROWS`` and ``P = N + M``, the source rows ``floor(i N / S_x)`` for
    ``i < S_x = max(1, floor(S N / P))`` and the target rows ``N + floor(j M / S_y)`` for
    ``j < S_y = max(1, floor(S M / P))``: each side in proportion to its size, evenly
    strided, and the same rows of each cloud when source and target are swapped.
    """
    p = n + m
    if p <= HEURISTIC_MAX_ROWS:
        return None
    s = HEURISTIC_MAX_ROWS
    sx, sy = max(1, (s * n) // p), max(1, (s * m) // p)
    src = torch.div(torch.arange(sx, device=device) * n, sx, rounding_mode="floor")
    tgt = n + torch.div(torch.arange(sy, device=device) * m, sy, rounding_mode="floor")
    return torch.cat([src, tgt])


def _heuristic_sigmas(
    z: Tensor, n: int, heuristic: str, multipliers, sq: Optional[Tensor] = None
) -> Tensor:
    r"""Data-driven bandwidths of a stacked batch ``z`` ``(P, D)`` with ``n`` source rows,
    identical on every path.

    Up to :data:`HEURISTIC_MAX_ROWS` rows: :func:`gaussian_bandwidths` of all off-diagonal
    pairwise squared distances (``sq``, when the dense path already has them). Above it, of
    the pairs of the deterministic strided subsample of :func:`_heuristic_rows` (covering
    source and target in proportion), which costs one ``S x S`` Gram matrix and a median of
    ``S(S-1)/2`` values: about 25 ms of CPU time in all for ``S = 1024``, ``D = 256``
    (0.14 s for ``S = 2048``), where ``torch.median`` alone of all 33.5e6 pairs of
    ``P = 8192`` rows takes about 0.3 s. The feature magnitude of the floor is the largest
    row norm of the whole batch. Detached.
    """
    with torch.no_grad():
        zd = z.detach()
        rows = _heuristic_rows(n, zd.shape[0] - n, zd.device)
        if rows is None:
            if sq is None:
                sq = _stacked_sq_dists(zd, _centre(zd, n))
        else:
            sub = zd[rows]
            sq = _stacked_sq_dists(sub, _centre(zd, n))
        return gaussian_bandwidths(sq, heuristic, multipliers, feature_norm=_max_row_norm(zd))
