r"""What the MMD / JMMD pair-sum engines share: the static description of one evaluation
(:class:`PairSpec`, one :class:`LayerSpec` per layer), the engines' output (:class:`PairSums`)
and the repeated-squaring plan of a layer's bandwidths (:func:`geometric_squarings`).

The tiled engine (:mod:`adaptlib.kernels.mmd_tiled`), the Triton engine
(:mod:`adaptlib.kernels.mmd_triton`) and the autograd glue that picks one of them
(:mod:`adaptlib.kernels.mmd_autograd`) all import these types from here, so that no engine
imports another. The math is in the docstring of :mod:`adaptlib.kernels.mmd_tiled`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["LayerSpec", "PairSpec", "PairSums", "MAX_SQUARINGS", "geometric_squarings"]

#: Largest total number of squarings used to derive all bandwidths of a layer from one
#: exponential (relative error amplification ``2 ** MAX_SQUARINGS``).
MAX_SQUARINGS: int = 10

@dataclass(frozen=True)
class LayerSpec:
    """Bandwidths of one layer: ``gammas`` ``1/(2 sigma^2)`` ascending, and the squarings.

    ``squarings[u - 1]`` is the number of squarings turning ``exp(-gammas[u-1] d2)`` into
    ``exp(-gammas[u] d2)``; ``None`` when the ratios are not powers of two (one exponential
    per bandwidth).
    """

    gammas: Tuple[float, ...]
    squarings: Optional[Tuple[int, ...]]


@dataclass(frozen=True)
class PairSpec:
    """Static description of one pair-sum evaluation (see the module docstring)."""

    n: int  # source rows: rows < n are source, the others target
    unbiased: bool  # exclude the diagonal i == j
    layers: Tuple[LayerSpec, ...]
    block: int
    engine: str  # "tiled" or "triton"
    want_grad: bool  # grad mode was on at the call


@dataclass
class PairSums:
    """Engine output: ``R`` ``(3,)`` float64 and the gradients of ``f = w . R``.

    ``gz[l]`` is ``(P, D_l)``, ``gc`` ``(P,)``, ``gb[l]`` ``(K_l,)``; ``None`` when not needed.
    """

    R: Tensor
    gz: List[Optional[Tensor]]
    gc: Optional[Tensor]
    gb: List[Optional[Tensor]]


def geometric_squarings(gammas: Sequence[float], dtype: torch.dtype) -> Optional[Tuple[int, ...]]:
    """Squarings between consecutive ascending ``gammas`` if every ratio is ``2**s``, else ``None``.

    A ratio counts as a power of two when it is within ``64 eps`` (relative, ``eps`` of
    ``dtype``) of one; ``s = 0`` (repeated bandwidths) is allowed. ``None`` as well when the
    total number of squarings exceeds :data:`MAX_SQUARINGS`.
    """
    tol = 64.0 * torch.finfo(dtype).eps
    out = []
    for g0, g1 in zip(gammas, gammas[1:]):
        if not (g0 > 0 and g1 >= g0):
            return None
        r = g1 / g0
        s = int(round(math.log2(r)))
        if s < 0 or abs(r - 2.0 ** s) > tol * 2.0 ** s:
            return None
        out.append(s)
    if sum(out) > MAX_SQUARINGS:
        return None
    return tuple(out)
