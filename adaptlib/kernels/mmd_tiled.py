r"""Blockwise (tiled) MMD / JMMD pair sums with a fused gradient (the ``"tiled"`` engine).

Both the ``"tiled"`` path (plain torch, this module) and the ``"triton"`` path
(:mod:`adaptlib.kernels.mmd_triton`) evaluate the same quantity for the stacked batch
:math:`z = [x; y]` of :math:`P = N + M` rows (one ``z^{(l)}`` per layer for JMMD):

.. math::
    f = \sum_{t \in \{ss, tt, st\}} w_t R_t, \qquad
    R_t = \sum_{(i, j) \in t} c_i c_j \prod_{l} k_l(\|z^{(l)}_i - z^{(l)}_j\|^2),
    \qquad k_l(d^2) = \sum_u \beta_{l,u} e^{-\gamma_{l,u} d^2},

over *ordered* pairs, with :math:`c = [a; -b]` (source weights, minus target weights),
:math:`t` the block of the pair (source-source, target-target, source-target in either
order), :math:`w = (w_{ss}, w_{tt}, w_{st})` the block scales and, for the unbiased
estimator, the diagonal :math:`i = j` excluded. The biased MMD² is :math:`w = (1, 1, 1)`
(:math:`c^\top K c`), the unbiased one :math:`w = (1/(1-\sum a^2), 1/(1-\sum b^2), 1)`.

Because the bandwidths are detached, the gradients are computed **in the same pass** as the
value and stored; backward only scales them by ``grad_output``:

.. math::
    \frac{\partial f}{\partial z^{(l)}_i} = 4 c_i \sum_j w_{t(ij)} c_j\,
        \frac{\partial K_{ij}}{\partial d^2_{l,ij}} (z^{(l)}_i - z^{(l)}_j), \quad
    \frac{\partial f}{\partial c_i} = 2 \sum_j w_{t(ij)} K_{ij} c_j, \quad
    \frac{\partial f}{\partial w_t} = R_t, \quad
    \frac{\partial f}{\partial \beta_{l,u}} = \sum_{ij} w_t c_i c_j e^{-\gamma_{l,u} d^2_{l,ij}}
        \prod_{m \ne l} k_m,

where :math:`\partial K / \partial d^2_l = k_l'(d^2_l) \prod_{m \ne l} k_m` and
:math:`k_l' = -\sum_u \beta_{l,u}\gamma_{l,u} e^{-\gamma_{l,u} d^2}`. The :math:`z` gradient of
a tile is one extra matmul ``W @ [c * z, c]``. The kernel matrix is symmetric, so the tiled
path visits only tiles ``I <= J`` (off-diagonal tiles count twice and feed the gradients of
both row blocks). Every gradient is skipped when its input does not require grad.

**Repeated squaring.** When the sorted :math:`\gamma_{l,u}` of a layer have ratios that are
powers of two (the default multipliers ``(0.25, 0.5, 1, 2, 4)`` give ratio 4), one
exponential :math:`e^{-\gamma_{\min} d^2}` serves every bandwidth:
:math:`e^{-4\gamma d^2} = ((e^{-\gamma d^2})^2)^2`. Each squaring doubles the relative
rounding error of the exponential, so the narrowest kernel carries a relative error of about
:math:`2^{s}\,\varepsilon` with :math:`s` the total number of squarings (8 for the
default: about :math:`3 \times 10^{-5}` in float32, :math:`6 \times 10^{-14}` in float64), still
below the error of the squared distances of the Gram expansion. At most
:data:`MAX_SQUARINGS` squarings in total are used; otherwise each bandwidth gets its own
exponential.

Per tile and layer the squared distances come from one matmul of the augmented features
``[z_I, |z_I|^2, 1] @ [2 g z_J, -g, -g |z_J|^2]^T = -g d^2`` (``g`` the smallest gamma), then
one in-place clamp, one ``exp`` and the squarings fill a reusable ``(K, B, B)`` buffer, one
small matmul ``(2, K) @ (K, B^2)`` combines it into ``k`` and ``k'``, and the value and
gradients cost one matrix-vector product and two matmuls ``W @ [c z, c]`` (rows ``I`` and,
transposed, rows ``J``).

Memory of the tiled path: per layer the augmented features ``(P, D_l + 2)``, ``[c z, c]``
and one ``(P, D_l + 1)`` gradient accumulator, i.e. :math:`O(P D)` (about 8 copies of the
inputs in all, with autograd's), plus :math:`(K + 2) B^2` floats of tile scratch (``B`` =
``block_size``, 512 by default: 7 MiB in float32 with ``K = 5``); no ``(P, P)`` tensor is
ever allocated. Measured: peak RSS grows by 250 MiB for ``N = M = 16384``, ``D = 256``
(inputs 32 MiB), which extrapolates to about 1 GiB for ``N = M = 65536``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# The shared types live in mmd_spec (re-exported here: they are part of this engine's interface).
from .mmd_spec import MAX_SQUARINGS, LayerSpec, PairSpec, PairSums, geometric_squarings

__all__ = [
    "LayerSpec",
    "PairSpec",
    "PairSums",
    "MAX_SQUARINGS",
    "DEFAULT_BLOCK",
    "geometric_squarings",
    "tile_blocks",
    "tiled_pair_sums",
]

#: Default rows per tile of the tiled path (tile scratch about ``(K + 5) * B^2`` floats).
DEFAULT_BLOCK: int = 512


def tile_blocks(n: int, p: int, block: int) -> List[Tuple[int, int]]:
    """Row ranges of the tiles: ``[0, n)`` and ``[n, p)`` each cut into ``block`` rows.

    The source/target boundary is a tile boundary, so every tile lies in one block
    (source-source, target-target or source-target) of the kernel matrix.
    """
    return [(s, min(s + block, n)) for s in range(0, n, block)] + [
        (s, min(s + block, p)) for s in range(n, p, block)
    ]


class _LayerTiles:
    """Per-layer data of the tiled engine: augmented features and reusable tile buffers.

    ``za = [z, |z|^2, 1]`` and, per column block, ``zb = [2 g0 z, -g0, -g0 |z|^2]`` (``g0``
    the smallest gamma) make one matmul ``za_I @ zb_J^T = -g0 * d2`` per tile; ``buf`` holds
    the ``K`` exponentials of a tile and ``kbuf`` the combined kernel and its derivative.
    """

    def __init__(self, z: Tensor, layer: LayerSpec, betas: Sequence[float], block: int, need_kp: bool):
        sq = (z * z).sum(1, keepdim=True)
        self.za = torch.cat([z, sq, torch.ones_like(sq)], 1)
        self.layer = layer
        self.num = len(layer.gammas)
        rows = [betas]
        if need_kp:
            rows.append([-b * g for b, g in zip(betas, layer.gammas)])
        self.coef = torch.tensor(rows, dtype=z.dtype, device=z.device)
        self.buf = torch.empty(self.num * block * block, dtype=z.dtype, device=z.device)
        self.kbuf = torch.empty(len(rows) * block * block, dtype=z.dtype, device=z.device)

    def columns(self, j0: int, j1: int) -> Tensor:
        """``zb`` of rows ``j0:j1``: ``[2 g0 z, -g0, -g0 |z|^2]``, ``(bj, D + 2)``."""
        g0 = self.layer.gammas[0]
        zb = self.za[j0:j1] * (-g0)
        zb[:, :-2].mul_(-2.0)
        return zb[:, [*range(zb.shape[1] - 2), zb.shape[1] - 1, zb.shape[1] - 2]]

    def tile(self, i0: int, i1: int, zb: Tensor):
        """``(k, kp, E)``: kernel, ``dk/dd2`` (or ``None``) and the ``(K, bi, bj)`` exponentials."""
        bi, bj = i1 - i0, zb.shape[0]
        lay = self.layer
        E = self.buf[: self.num * bi * bj].view(self.num, bi, bj)
        a = torch.mm(self.za[i0:i1], zb.T, out=E[0])  # -g0 * d2
        a.clamp_max_(0.0)
        if lay.squarings is None:
            g0 = lay.gammas[0]
            for u in range(1, self.num):
                torch.mul(a, lay.gammas[u] / g0, out=E[u]).exp_()
            a.exp_()
        else:
            a.exp_()
            for u, s in enumerate(lay.squarings, start=1):
                if s == 0:
                    E[u].copy_(E[u - 1])
                    continue
                torch.mul(E[u - 1], E[u - 1], out=E[u])
                for _ in range(s - 1):
                    E[u].mul_(E[u])
        rows = self.coef.shape[0]
        kk = self.kbuf[: rows * bi * bj].view(rows, bi * bj)
        torch.mm(self.coef, E.view(self.num, bi * bj), out=kk)
        kk = kk.view(rows, bi, bj)
        return kk[0], (kk[1] if rows > 1 else None), E


def tiled_pair_sums(
    spec: PairSpec,
    c: Tensor,
    tw: Tensor,
    betas: Sequence[Tensor],
    zs: Sequence[Tensor],
    need_c: bool,
    need_b: Sequence[bool],
    need_z: Sequence[bool],
) -> PairSums:
    """The tiled engine: pair sums and fused gradients over tiles ``I <= J``.

    Args:
        spec: static description (source rows ``n``, estimator, layers, block size).
        c: ``(P,)`` signed sample weights ``[a; -b]``.
        tw: ``(3,)`` block scales ``w``.
        betas: per layer ``(K_l,)`` kernel weights, in the order of ``spec.layers[l].gammas``.
        zs: per layer ``(P, D_l)`` stacked features (all of ``c``'s dtype and device).
        need_c, need_b, need_z: which gradients to compute.

    Returns:
        :class:`PairSums`. Memory: see the module docstring (no ``(P, P)`` tensor).
    """
    p = c.shape[0]
    n = spec.n
    dt = c.dtype
    num_layers = len(zs)
    c = c.detach()
    zs = [z.detach() for z in zs]
    twf = [float(v) for v in tw.detach().cpu()]
    bf = [[float(v) for v in b.detach().cpu()] for b in betas]
    blocks = tile_blocks(n, p, spec.block)
    block = max(e - s for s, e in blocks)
    lays = [_LayerTiles(z, spec.layers[l], bf[l], block, need_z[l]) for l, z in enumerate(zs)]
    cz = [torch.cat([z * c[:, None], c[:, None]], 1) if need_z[l] else None for l, z in enumerate(zs)]
    acc = [torch.zeros(p, z.shape[1] + 1, dtype=dt, device=c.device) if need_z[l] else None
           for l, z in enumerate(zs)]
    parts: List[List[Tensor]] = [[], [], []]
    gc = torch.zeros(p, dtype=dt, device=c.device) if need_c else None
    gparts: List[List[List[Tensor]]] = [[] for _ in range(num_layers)]
    for bj_idx, (j0, j1) in enumerate(blocks):
        zbs = [lay.columns(j0, j1) for lay in lays]
        for i0, i1 in blocks[: bj_idx + 1]:
            diag = i0 == j0
            t = 0 if j0 < n else (1 if i0 >= n else 2)
            w = twf[t]
            mult = 1.0 if diag else 2.0
            tiles = [lay.tile(i0, i1, zb) for lay, zb in zip(lays, zbs)]
            ks = [tl_[0] for tl_ in tiles]
            K = ks[0] if num_layers == 1 else math.prod(ks[1:], start=ks[0])
            if spec.unbiased and diag:
                if num_layers == 1 and (need_z[0] or need_b[0]):
                    K = K.clone()  # ks[0] is still needed for the other products
                K.fill_diagonal_(0.0)
            ci, cj = c[i0:i1], c[j0:j1]
            kcj = K @ cj
            parts[t].append(torch.dot(ci, kcj) * mult)
            if need_c:
                gc[i0:i1].add_(kcj, alpha=2.0 * w)
                if not diag:
                    gc[j0:j1].addmv_(K.T, ci, alpha=2.0 * w)
            for l in range(num_layers):
                others = [ks[m] for m in range(num_layers) if m != l]
                if need_z[l]:
                    kp = tiles[l][1]
                    W = kp if not others else math.prod(others, start=kp)
                    acc[l][i0:i1].addmm_(W, cz[l][j0:j1], alpha=w)
                    if not diag:
                        acc[l][j0:j1].addmm_(W.T, cz[l][i0:i1], alpha=w)
                if need_b[l]:
                    E = tiles[l][2]
                    if others:
                        E = E * math.prod(others[1:], start=others[0])
                    if spec.unbiased and diag:
                        E = E.clone() if not others else E
                        E.diagonal(dim1=1, dim2=2).zero_()
                    q = torch.matmul(E, cj)  # (K, bi)
                    gparts[l].append((q @ ci) * (mult * w))
    R = torch.stack([torch.stack(pt).double().sum() if pt else torch.zeros((), dtype=torch.float64, device=c.device)
                     for pt in parts])
    gb = [torch.stack(gparts[l]).double().sum(0) if need_b[l] else None for l in range(num_layers)]
    del lays, cz, zbs
    gz: List[Optional[Tensor]] = []
    for l, z in enumerate(zs):
        if need_z[l]:
            d = z.shape[1]
            g = acc[l][:, d:] * z  # 4 c_i (s_i z_i - V_i), one temporary
            g.sub_(acc[l][:, :d]).mul_(4.0 * c[:, None])
            acc[l] = None
            gz.append(g)
        else:
            gz.append(None)
    return PairSums(R=R, gz=gz, gc=gc, gb=gb)
