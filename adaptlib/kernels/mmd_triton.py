r"""Fused Triton kernels for the MMD / JMMD pair sums (the ``"triton"`` path).

Computes exactly what :func:`adaptlib.kernels.mmd_tiled.tiled_pair_sums` computes (see
:mod:`adaptlib.kernels.mmd_tiled` for the math), with one kernel launch over a grid of
``(BLOCK, BLOCK)`` tiles of the ``(P, P)`` kernel matrix of the stacked batch. A program:

1. loads its row block ``I`` and column block ``J`` of the features of every layer (the
   layers are concatenated into one ``(P, sum_l D_l)`` matrix and addressed with per-layer
   column offsets; 1 to 3 layers, unrolled at compile time), and forms the squared
   distances ``|z_i|^2 + |z_j|^2 - 2 z_i . z_j`` with ``tl.dot`` in IEEE precision (no TF32)
   over chunks of ``BLOCK_D`` features;
2. evaluates every bandwidth's exponential (one ``exp`` and repeated squaring when the
   ratios of the ``gamma`` are powers of two), the kernel ``k_l`` and its derivative
   ``k_l'``, and the product kernel ``K``;
3. accumulates, with atomic adds, the block sums ``R_t`` of ``c_i c_j K_ij``, the weight
   gradient ``2 sum_j w_t K_ij c_j``, the kernel-weight gradients, and for the feature
   gradient the row sums ``s_i = sum_j W_ij c_j`` and ``V_i = sum_j W_ij c_j z_j`` (a second
   ``tl.dot`` per feature chunk), with ``W = w_t dK/dd^2_l``.

The ``(P, P)`` matrix is never written to memory: global memory holds the inputs and the
``O(P sum_l D_l)`` accumulators. The gradient is ``4 c_i (s_i z_i - V_i)``, finished in
torch. All ordered tiles are visited (no symmetry trick), and the atomic float additions
make the last bits depend on scheduling on a GPU.

On the CPU the kernels run only under ``TRITON_INTERPRET=1`` (Triton's interpreter: slow,
for tests).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .mmd_spec import PairSpec, PairSums

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the path reports itself unavailable
    triton = None
    tl = None

__all__ = ["MAX_LAYERS", "default_block", "check_triton_layers", "triton_pair_sums"]

#: Layers supported by the fused kernel (unrolled at compile time).
MAX_LAYERS: int = 3


def default_block(device: torch.device, num_layers: int = 1) -> int:
    """Tile size of the Triton path: 64 on CUDA (32 for several layers, whose per-layer
    distance/kernel tiles are all live in registers), 16 in the CPU interpreter."""
    if device.type != "cuda":
        return 16
    return 64 if num_layers == 1 else 32


def check_triton_layers(num_layers: int) -> None:
    """Raise ``ValueError`` when the fused kernel cannot take ``num_layers`` layers."""
    if num_layers > MAX_LAYERS:
        raise ValueError(
            f"path='triton' supports at most {MAX_LAYERS} layers, got {num_layers}; use path='tiled'"
        )


if triton is not None:

    @triton.jit
    def _layer_kernel(Z, stride_z, ri, rj, mi, mj, off, dim, G, BT, kofs, nk,
                      GEOM: tl.constexpr, SQ, MAX_SQ: tl.constexpr,
                      BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        """Squared distances, kernel and its derivative of one layer on one tile."""
        gram = tl.zeros((BLOCK_I, BLOCK_J), dtype=Z.dtype.element_ty)
        ni = tl.zeros((BLOCK_I,), dtype=Z.dtype.element_ty)
        nj = tl.zeros((BLOCK_J,), dtype=Z.dtype.element_ty)
        for d0 in range(0, dim, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            cm = cols < dim
            a = tl.load(Z + ri[:, None] * stride_z + off + cols[None, :], mask=mi[:, None] & cm[None, :], other=0.0)
            b = tl.load(Z + rj[:, None] * stride_z + off + cols[None, :], mask=mj[:, None] & cm[None, :], other=0.0)
            gram += tl.dot(a, tl.trans(b), input_precision="ieee")
            ni += tl.sum(a * a, axis=1)
            nj += tl.sum(b * b, axis=1)
        d2 = tl.maximum(ni[:, None] + nj[None, :] - 2.0 * gram, 0.0)
        g0 = tl.load(G + kofs)
        b0 = tl.load(BT + kofs)
        e = tl.exp(-g0 * d2)
        k = b0 * e
        kp = -(b0 * g0) * e
        for u in range(1, nk):
            gu = tl.load(G + kofs + u)
            bu = tl.load(BT + kofs + u)
            if GEOM:
                s = tl.load(SQ + kofs + u)
                for q in tl.static_range(MAX_SQ):
                    e = tl.where(q < s, e * e, e)
            else:
                e = tl.exp(-gu * d2)
            k += bu * e
            kp -= (bu * gu) * e
        return d2, k, kp

    @triton.jit
    def _layer_beta_grad(d2, weight, G, GB, kofs, nk, GEOM: tl.constexpr, SQ, MAX_SQ: tl.constexpr):
        """``GB[kofs + u] += sum(weight * exp(-gamma_u d2))`` for every bandwidth ``u``."""
        g0 = tl.load(G + kofs)
        e = tl.exp(-g0 * d2)
        tl.atomic_add(GB + kofs, tl.sum(tl.sum(weight * e, axis=1), axis=0))
        for u in range(1, nk):
            if GEOM:
                s = tl.load(SQ + kofs + u)
                for q in tl.static_range(MAX_SQ):
                    e = tl.where(q < s, e * e, e)
            else:
                e = tl.exp(-tl.load(G + kofs + u) * d2)
            tl.atomic_add(GB + kofs + u, tl.sum(tl.sum(weight * e, axis=1), axis=0))

    @triton.jit
    def _layer_z_grad(W, Z, stride_z, rj, mj, ri, mi, off, dim, S, lidx, NUM_LAYERS: tl.constexpr,
                      V, stride_v, BLOCK_D: tl.constexpr):
        """``S[i, l] += sum_j W_ij`` and ``V[i, off:off+dim] += W @ z_J`` (W includes c_j)."""
        tl.atomic_add(S + ri * NUM_LAYERS + lidx, tl.sum(W, axis=1), mask=mi)
        for d0 in range(0, dim, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            cm = cols < dim
            b = tl.load(Z + rj[:, None] * stride_z + off + cols[None, :], mask=mj[:, None] & cm[None, :], other=0.0)
            v = tl.dot(W, b, input_precision="ieee")
            tl.atomic_add(V + ri[:, None] * stride_v + off + cols[None, :], v, mask=mi[:, None] & cm[None, :])

    @triton.jit
    def _pair_kernel(Z, stride_z, C, TW, G, BT, SQ, R, GC, GB, S, V, stride_v, P, n,
                     off0, dim0, kofs0, nk0, off1, dim1, kofs1, nk1, off2, dim2, kofs2, nk2,
                     NUM_LAYERS: tl.constexpr, GEOM: tl.constexpr, MAX_SQ: tl.constexpr, UNBIASED: tl.constexpr,
                     NEED_C: tl.constexpr, NEED_Z: tl.constexpr, NEED_B: tl.constexpr,
                     BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
        """One ``(BLOCK_I, BLOCK_J)`` tile of the pair sums (see the module docstring)."""
        ri = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
        rj = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
        mi = ri < P
        mj = rj < P
        ci = tl.load(C + ri, mask=mi, other=0.0)
        cj = tl.load(C + rj, mask=mj, other=0.0)
        d2a, ka, kpa = _layer_kernel(Z, stride_z, ri, rj, mi, mj, off0, dim0, G, BT, kofs0, nk0,
                                     GEOM, SQ, MAX_SQ, BLOCK_I, BLOCK_J, BLOCK_D)
        K = ka
        if NUM_LAYERS >= 2:
            d2b, kb, kpb = _layer_kernel(Z, stride_z, ri, rj, mi, mj, off1, dim1, G, BT, kofs1, nk1,
                                         GEOM, SQ, MAX_SQ, BLOCK_I, BLOCK_J, BLOCK_D)
            K = K * kb
        if NUM_LAYERS >= 3:
            d2c, kc, kpc = _layer_kernel(Z, stride_z, ri, rj, mi, mj, off2, dim2, G, BT, kofs2, nk2,
                                         GEOM, SQ, MAX_SQ, BLOCK_I, BLOCK_J, BLOCK_D)
            K = K * kc
        si = ri < n
        sj = rj < n
        ss = si[:, None] & sj[None, :]
        tt = (ri >= n)[:, None] & (rj >= n)[None, :]
        valid = mi[:, None] & mj[None, :]
        if UNBIASED:
            valid = valid & (ri[:, None] != rj[None, :])
        tw0 = tl.load(TW)
        tw1 = tl.load(TW + 1)
        tw2 = tl.load(TW + 2)
        wt = tl.where(ss, tw0, tl.where(tt, tw1, tw2))
        cc = ci[:, None] * cj[None, :]
        Kv = tl.where(valid, K, 0.0)
        r = cc * Kv
        tl.atomic_add(R, tl.sum(tl.sum(tl.where(ss, r, 0.0), axis=1), axis=0))
        tl.atomic_add(R + 1, tl.sum(tl.sum(tl.where(tt, r, 0.0), axis=1), axis=0))
        tl.atomic_add(R + 2, tl.sum(tl.sum(tl.where(ss | tt, 0.0, r), axis=1), axis=0))
        if NEED_C:
            tl.atomic_add(GC + ri, 2.0 * tl.sum(wt * Kv * cj[None, :], axis=1), mask=mi)
        wc = wt * cj[None, :]
        if NEED_Z:
            Wa = wc * kpa
            if NUM_LAYERS >= 2:
                Wa = Wa * kb
            if NUM_LAYERS >= 3:
                Wa = Wa * kc
            _layer_z_grad(Wa, Z, stride_z, rj, mj, ri, mi, off0, dim0, S, 0, NUM_LAYERS, V, stride_v, BLOCK_D)
            if NUM_LAYERS >= 2:
                Wb = wc * kpb * ka
                if NUM_LAYERS >= 3:
                    Wb = Wb * kc
                _layer_z_grad(Wb, Z, stride_z, rj, mj, ri, mi, off1, dim1, S, 1, NUM_LAYERS, V, stride_v, BLOCK_D)
            if NUM_LAYERS >= 3:
                Wc = wc * kpc * ka * kb
                _layer_z_grad(Wc, Z, stride_z, rj, mj, ri, mi, off2, dim2, S, 2, NUM_LAYERS, V, stride_v, BLOCK_D)
        if NEED_B:
            wcc = tl.where(valid, wt * cc, 0.0)
            oa = wcc
            if NUM_LAYERS >= 2:
                oa = oa * kb
            if NUM_LAYERS >= 3:
                oa = oa * kc
            _layer_beta_grad(d2a, oa, G, GB, kofs0, nk0, GEOM, SQ, MAX_SQ)
            if NUM_LAYERS >= 2:
                ob = wcc * ka
                if NUM_LAYERS >= 3:
                    ob = ob * kc
                _layer_beta_grad(d2b, ob, G, GB, kofs1, nk1, GEOM, SQ, MAX_SQ)
            if NUM_LAYERS >= 3:
                _layer_beta_grad(d2c, wcc * ka * kb, G, GB, kofs2, nk2, GEOM, SQ, MAX_SQ)


def triton_pair_sums(
    spec: PairSpec,
    c: Tensor,
    tw: Tensor,
    betas: Sequence[Tensor],
    zs: Sequence[Tensor],
    need_c: bool,
    need_b: Sequence[bool],
    need_z: Sequence[bool],
) -> PairSums:
    """The Triton engine: same arguments and result as
    :func:`adaptlib.kernels.mmd_tiled.tiled_pair_sums`.

    Raises:
        ValueError: more than :data:`MAX_LAYERS` layers, or ``spec.block`` not a power of
            two >= 16 (``tl.dot`` needs it).
        RuntimeError: Triton is not installed.
    """
    if triton is None:
        raise RuntimeError("path='triton' needs the triton package (pip install -e '.[triton]')")
    num_layers = len(zs)
    check_triton_layers(num_layers)
    block = spec.block
    if block < 16 or block & (block - 1):
        raise ValueError(f"block_size must be a power of two >= 16 on path='triton', got {block}")
    p = c.shape[0]
    dt, dev = c.dtype, c.device
    zcat = torch.cat(list(zs), dim=1).contiguous()
    dims = [z.shape[1] for z in zs]
    offs = [sum(dims[:l]) for l in range(num_layers)]
    gam = [g for lay in spec.layers for g in lay.gammas]
    nks = [len(lay.gammas) for lay in spec.layers]
    kofs = [sum(nks[:l]) for l in range(num_layers)]
    geom = all(lay.squarings is not None for lay in spec.layers)
    sq = []
    for lay in spec.layers:
        sq += [0] + (list(lay.squarings) if geom else [0] * (len(lay.gammas) - 1))
    max_sq = max(sq + [1])
    G = torch.tensor(gam, dtype=dt, device=dev)
    BT = torch.cat([b.detach().to(dt) for b in betas]).contiguous()
    SQ = torch.tensor(sq, dtype=torch.int32, device=dev)
    c_ = c.detach().contiguous()
    tw_ = tw.detach().to(dt).contiguous()
    R = torch.zeros(3, dtype=dt, device=dev)
    GC = torch.zeros(p, dtype=dt, device=dev)
    GB = torch.zeros(len(gam), dtype=dt, device=dev)
    any_z = any(need_z)
    S = torch.zeros(p, num_layers, dtype=dt, device=dev) if any_z else torch.zeros(1, dtype=dt, device=dev)
    V = torch.zeros(p, zcat.shape[1], dtype=dt, device=dev) if any_z else torch.zeros(1, 1, dtype=dt, device=dev)
    lay_args = []
    for l in range(MAX_LAYERS):
        lay_args += [offs[l], dims[l], kofs[l], nks[l]] if l < num_layers else [0, 0, 0, 0]
    block_d = 16 if dev.type != "cuda" else 32
    grid = (triton.cdiv(p, block), triton.cdiv(p, block))
    _pair_kernel[grid](
        zcat, zcat.stride(0), c_, tw_, G, BT, SQ, R, GC, GB, S, V, V.stride(0), p, spec.n,
        *lay_args,
        NUM_LAYERS=num_layers, GEOM=geom, MAX_SQ=max_sq, UNBIASED=bool(spec.unbiased), NEED_C=bool(need_c), NEED_Z=any_z,
        NEED_B=any(need_b), BLOCK_I=block, BLOCK_J=block, BLOCK_D=block_d,
    )
    gz = []
    for l, z in enumerate(zs):
        if need_z[l]:
            vl = V[:, offs[l]:offs[l] + dims[l]]
            gz.append(4.0 * c_[:, None] * (S[:, l:l + 1] * z.detach() - vl))
        else:
            gz.append(None)
    gb = [GB[kofs[l]:kofs[l] + nks[l]].double() if need_b[l] else None for l in range(num_layers)]
    return PairSums(R=R.double(), gz=gz, gc=GC if need_c else None, gb=gb)
