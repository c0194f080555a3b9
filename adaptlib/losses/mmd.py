r"""Maximum mean discrepancy with multiple Gaussian kernels (DAN) and its joint version (JAN).

Both losses are computed from one kernel matrix of the stacked batch ``Z = [source; target]``:
squared distances come from a single Gram matrix ``Z Z^T`` (never from an ``(N+M)^2 x D``
tensor of differences), the Gaussian kernels of all bandwidths are combined into one matrix,
and one private estimator turns that matrix into the biased, unbiased or linear-time estimate.

References:
    * A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola. "A Kernel Two-Sample Test".
      JMLR 13, 2012.
    * M. Long, Y. Cao, J. Wang, M. Jordan. "Learning Transferable Features with Deep
      Adaptation Networks" (DAN). ICML 2015.
    * M. Long, H. Zhu, J. Wang, M. Jordan. "Deep Transfer Learning with Joint Adaptation
      Networks" (JAN). ICML 2017.

Computation paths (``path=``, see :mod:`adaptlib.kernels`): ``"dense"`` builds the whole
``(N+M, N+M)`` kernel matrix and differentiates it with autograd (twice differentiable);
``"tiled"`` (:mod:`adaptlib.kernels.mmd_tiled`) and ``"triton"``
(:mod:`adaptlib.kernels.mmd_triton`) never hold the matrix and compute the gradients in the
same pass as the value (once differentiable). All paths use the same data-driven bandwidths
(:func:`_heuristic_sigmas`), so they agree to rounding. Half-precision inputs
(float16/bfloat16, also under ``torch.autocast``) are computed in float32.

This module holds the two public losses and the choice of their computation path; their
parts live beside it: the bandwidths in :mod:`adaptlib.losses._mmd_bandwidths`, the dense
kernel matrices and the estimator in :mod:`adaptlib.losses._mmd_estimators`.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_features, check_same_space, check_weights
from ..kernels import check_path, resolve_path
from ..kernels.mmd_autograd import pair_value
from ..kernels.mmd_spec import LayerSpec, PairSpec, geometric_squarings
from ..kernels.mmd_tiled import DEFAULT_BLOCK
from ._mmd_bandwidths import (DEFAULT_MULTIPLIERS, HEURISTICS, MIN_BANDWIDTH, BandwidthSpec,  # noqa: F401
                              _check_multipliers, _explicit_bandwidths, _heuristic_sigmas, _layer_sigmas, gaussian_bandwidths)
from ._mmd_estimators import (_centre, _check_generator, _check_rows, _check_unbiased_mass, _combined_gaussian,
                              _exact_zero, _linear_indices, _linear_pair_sq_dists, _max_row_norm, _mmd_estimate,
                              _same_sample, _stacked_sq_dists, _target_first)
from ._validate import check_feature_pair, check_same_kind, check_tensor_kind, compute_dtype, no_autocast

__all__ = ["mmd", "jmmd", "gaussian_bandwidths"]


#: ``path="auto"``: from this many stacked rows on, the tiled path replaces the dense one even
#: below :data:`adaptlib.kernels.DENSE_MAX_BYTES` (measured on the CPU, D = 256, fwd+bwd:
#: equal at 128 rows, tiled 2x faster at 512, 5x at 2048, 11x at 4096).
AUTO_TILED_MIN_ROWS: int = 512
ESTIMATORS = ("biased", "unbiased", "linear")


def _check_block_size(block_size: object) -> Optional[int]:
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
    return block_size


def _dense_bytes(p: int, kernels_per_layer: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes of ``(P, P)`` matrices the dense path keeps for autograd (Gram, distances, and two
    per bandwidth: scaled distances and exponential, plus the layer's combined kernel)."""
    item = torch.finfo(dtype).bits // 8
    mats = sum(2 * k + 3 for k in kernels_per_layer) + 1
    return mats * p * p * item


def _resolve(path: str, device: torch.device, rows: int, dense_bytes: int) -> str:
    """:func:`adaptlib.kernels.resolve_path`, except that ``"auto"`` also leaves the dense path
    for the tiled one from :data:`AUTO_TILED_MIN_ROWS` stacked rows on (where the tiled
    path is faster)."""
    concrete = resolve_path(path, device, dense_bytes)
    if path == "auto" and concrete == "dense" and rows >= AUTO_TILED_MIN_ROWS:
        return "tiled"
    return concrete


def _pair_path(
    path: str,
    zs: Sequence[Tensor],
    sigmas: Sequence[Tensor],
    betas: Sequence[Tensor],
    n: int,
    a: Tensor,
    b: Tensor,
    estimator: str,
    block_size: Optional[int],
) -> Tensor:
    """Biased/unbiased MMD² of the product kernel on the tiled or Triton path."""
    dt = zs[0].dtype
    c = torch.cat([a, -b])
    one = torch.ones((), dtype=dt, device=c.device)
    if estimator == "unbiased":
        tw = torch.stack([1.0 / (1.0 - (a * a).sum()), 1.0 / (1.0 - (b * b).sum()), one])
    else:
        tw = torch.stack([one, one, one])
    layers, ordered = [], []
    for sig, bt in zip(sigmas, betas):
        s = sig.detach()
        gam = 1.0 / (2.0 * s * s)
        order = torch.argsort(gam.cpu(), stable=True).to(gam.device)
        g = [float(v) for v in gam[order].tolist()]
        layers.append(LayerSpec(tuple(g), geometric_squarings(g, dt)))
        ordered.append(bt[order])
    if path == "triton":
        from ..kernels.mmd_triton import check_triton_layers, default_block

        check_triton_layers(len(zs))
        block = default_block(c.device, len(zs)) if block_size is None else block_size
    else:
        block = DEFAULT_BLOCK if block_size is None else block_size
    spec = PairSpec(n=n, unbiased=estimator == "unbiased", layers=tuple(layers), block=block,
                    engine=path, want_grad=torch.is_grad_enabled())
    shifted = [z - _centre(z, n) for z in zs]  # translation invariant, better conditioned
    return pair_value(spec, c, tw, ordered, shifted)


# --------------------------------------------------------------------------------------
# Public losses
# --------------------------------------------------------------------------------------
def mmd(
    source: Tensor,
    target: Tensor,
    *,
    bandwidths: Optional[BandwidthSpec] = None,
    heuristic: str = "median",
    multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
    estimator: str = "biased",
    source_weights: Optional[Tensor] = None,
    target_weights: Optional[Tensor] = None,
    kernel_weights: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    path: str = "auto",
    block_size: Optional[int] = None,
) -> Tensor:
    r"""Squared multi-kernel maximum mean discrepancy (MK-MMD²) between two batches.

    Used as the alignment loss of DAN (Long et al., "Learning Transferable Features with Deep
    Adaptation Networks", ICML 2015); estimators from Gretton et al., "A Kernel Two-Sample
    Test", JMLR 2012.

    **Definition.** For distributions :math:`P, Q` and a characteristic kernel :math:`k` with
    feature map :math:`\phi`,

    .. math::
        \begin{aligned}
        \mathrm{MMD}^2_k(P, Q) &= \| \mathbb{E}_P[\phi(x)] - \mathbb{E}_Q[\phi(y)] \|^2_{\mathcal H_k} \\
        &= \mathbb{E}\,k(x, x') + \mathbb{E}\,k(y, y') - 2\,\mathbb{E}\,k(x, y).
        \end{aligned}

    The kernel is a convex combination of Gaussian kernels

    .. math::
        \begin{aligned}
        k(x, y) &= \sum_{u=1}^{K} \beta_u \exp\!\Big(-\frac{\|x - y\|^2}{2\sigma_u^2}\Big), \\
        \beta_u &\ge 0,\ \sum_u \beta_u = 1.
        \end{aligned}

    **Estimators** (with :math:`a \in \Delta_N`, :math:`b \in \Delta_M` the normalised sample
    weights, uniform by default, and :math:`K_{xx}, K_{yy}, K_{xy}` the kernel blocks):

    * ``"biased"`` (V-statistic):
      :math:`a^\top K_{xx} a + b^\top K_{yy} b - 2 a^\top K_{xy} b`. Non-negative up to
      rounding, exactly 0 for a sample compared with itself.
    * ``"unbiased"`` (U-statistic): the diagonals of :math:`K_{xx}` and :math:`K_{yy}` are
      excluded and the remaining mass renormalised,

      .. math::
          \frac{\sum_{i \ne j} a_i a_j k(x_i, x_j)}{1 - \sum_i a_i^2}
          + \frac{\sum_{i \ne j} b_i b_j k(y_i, y_j)}{1 - \sum_j b_j^2}
          - 2 \sum_{i, j} a_i b_j k(x_i, y_j),

      which with uniform weights is exactly :math:`\frac{1}{N(N-1)}\sum_{i\ne j} k(x_i,x_j)`
      (and likewise for the target). Can be negative. Needs ``N >= 2``, ``M >= 2`` and at
      least two points of positive weight on each side.
    * ``"linear"`` (Gretton et al. 2012, Lemma 14): with :math:`L` rows per side and
      :math:`P = \lfloor L/2 \rfloor` disjoint pairs,
      :math:`\frac1P \sum_{i=1}^{P} k(x_{2i-1}, x_{2i}) + k(y_{2i-1}, y_{2i})
      - k(x_{2i-1}, y_{2i}) - k(x_{2i}, y_{2i-1})`, costing :math:`O(L D)`. Rows are paired in
      the given order (an odd last row is unused). If ``N != M`` both sides are randomly
      permuted with ``generator`` (the smaller side first) and truncated to
      :math:`L = \min(N, M)` rows. Sample
      weights are not supported.

    **Bandwidths.** Either ``bandwidths`` (the :math:`\sigma_u`, in feature-distance units)
    or :math:`\sigma_u = \mathrm{multipliers}[u] \cdot h` with :math:`h` the median/mean
    of the non-zero pairwise distances of the stacked batch ``[source; target]`` (all
    off-diagonal pairs up to :data:`HEURISTIC_MAX_ROWS` = 1024 stacked rows; above that, the
    pairs of about 1024 rows strided evenly over each side in proportion to its size, the
    same on every path; for ``"linear"`` the :math:`4P` distances the estimator computes),
    detached and floored as in :func:`gaussian_bandwidths`: distances below
    :math:`\max(\sqrt{\varepsilon_{\mathrm{mach}}} R, 10^{-6})` (:math:`R` the largest row
    norm, :data:`MIN_BANDWIDTH` the absolute part) count as duplicates, so repeated or dead
    (all-zero) rows do not drag the bandwidth to 0, and clouds that are identical to the
    data's resolution give about 0 with small, finite gradients. The value is symmetric:
    ``mmd(x, y) == mmd(y, x)`` exactly, for every estimator and path (the pair is computed
    in one canonical order: fewer rows first, else the smaller first differing entry).

    A sample compared with itself (``source`` equal to ``target`` element for element, and
    equal weights) gives an exact 0 with zero gradient for ``"biased"`` (its minimum; second
    derivatives are then not available there).

    **Computation.** Squared distances come from Gram products
    :math:`D^2_{ij} = G_{ii} + G_{jj} - 2G_{ij}` (clamped at 0; the batch is first shifted by
    the midpoint of its first source and first target rows, which changes nothing
    mathematically but preserves precision and is the same when the inputs are swapped). Paths
    (``"linear"`` is :math:`O(L D)` and ignores ``path``):

    * ``"dense"``: the whole combined kernel matrix, differentiated by autograd (also twice).
      Memory :math:`O((N+M)^2 K)`.
    * ``"tiled"``: tiles of ``block_size`` rows (default 512) of the symmetric kernel matrix
      (only tiles ``I <= J``); the gradients w.r.t. the features and all weights are
      accumulated in the same pass and scaled by the incoming gradient in backward
      (once differentiable). When the bandwidth ratios are powers of two (the default
      multipliers), one exponential per tile gives all bandwidths by repeated squaring
      (relative error of the narrowest kernel about :math:`2^8 \varepsilon`: ``3e-5`` in
      float32). Memory :math:`O((N+M) D + K \cdot \mathrm{block}^2)`, any device.
    * ``"triton"``: fused Triton kernels (distances, all exponentials, weighted sums and the
      gradient accumulation per tile; the matrix is never written). CUDA, or the CPU under
      ``TRITON_INTERPRET=1``. ``block_size`` must then be a power of two >= 16 (default 64
      on CUDA, 32 for JMMD with several layers, 16 in the interpreter).
    * ``"auto"``: :func:`adaptlib.kernels.resolve_path` (Triton on CUDA, the tiled path when
      the dense matrices would exceed 1 GiB, else dense), and the tiled path instead of the
      dense one from ``N + M >= 512`` (:data:`AUTO_TILED_MIN_ROWS`), where it is faster.
      Use ``path="dense"`` for higher-order gradients.

    Float16/bfloat16 inputs (and ``torch.autocast`` regions) are computed in float32 on every
    path; the value is float32 and the gradients flow back in the input dtype.

    Args:
        source: ``(N, D)`` floating-point source features (float32, float64, float16 or
            bfloat16).
        target: ``(M, D)`` target features, same ``D``, dtype and device as ``source``.
            ``N`` and ``M`` may differ (except that ``"linear"`` subsamples).
        bandwidths: optional explicit bandwidths, a sequence or 1-d tensor of ``K`` positive
            values. When given, ``heuristic`` and ``multipliers`` are ignored.
        heuristic: ``"median"`` or ``"mean"``: distance statistic for data-driven bandwidths.
        multipliers: ``K`` positive factors applied to the heuristic scale.
        estimator: ``"biased"``, ``"unbiased"`` or ``"linear"``.
        source_weights: optional ``(N,)`` non-negative per-sample weights (e.g. importance
            weights), normalised to sum to 1.
        target_weights: optional ``(M,)`` non-negative per-sample weights, normalised.
        kernel_weights: optional ``(K,)`` non-negative kernel weights :math:`\beta`,
            normalised to sum to 1; default uniform ``1/K``.
        generator: optional ``torch.Generator`` used only by ``"linear"`` when ``N != M``
            (its device decides where the permutation is drawn).
        path: ``"auto"``, ``"dense"``, ``"tiled"`` or ``"triton"`` (see above).
        block_size: rows per tile of the tiled/Triton paths (``None``: the default).

    Returns:
        Scalar tensor on ``source``'s device, float64 for float64 inputs and float32
        otherwise: the MMD² estimate, differentiable w.r.t. ``source``, ``target`` and the
        weights (not through data-driven bandwidths).

    Raises:
        TypeError: non-tensor or non-floating inputs, dtype mismatch, bad ``generator``.
        ValueError: wrong shapes, feature-dimension or device mismatch, NaN/inf inputs,
            unknown ``heuristic``/``estimator``/``path``, invalid ``bandwidths``,
            ``multipliers``, weights or ``block_size``, fewer than 2 rows for
            ``"unbiased"``/``"linear"``, sample weights with ``"linear"``, or
            ``path="triton"`` where Triton cannot run.

    Example::

        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> xs, xt = torch.randn(32, 16), torch.randn(48, 16) + 1.0
        >>> loss = mmd(xs, xt)            # multi-kernel, median heuristic, biased
        >>> loss.shape, bool(loss > 0)
        (torch.Size([]), True)
        >>> float(mmd(xs, xs))
        0.0
    """
    check_feature_pair(source, target, "source", "target", half_ok=True)
    check_choice(estimator, "estimator", ESTIMATORS)
    check_choice(heuristic, "heuristic", HEURISTICS)
    check_path(path)
    block_size = _check_block_size(block_size)
    mults = _check_multipliers(DEFAULT_MULTIPLIERS if multipliers is None else multipliers)
    _check_generator(generator)
    n, m = source.shape[0], target.shape[0]
    _check_rows(n, m, estimator, "source", "target")
    with no_autocast(source.device):
        cd = compute_dtype(source.dtype)
        return _mmd(source.to(cd), target.to(cd), bandwidths, heuristic, mults, estimator,
                    source_weights, target_weights, kernel_weights, generator, path, block_size)


def _mmd(source, target, bandwidths, heuristic, mults, estimator, source_weights,
         target_weights, kernel_weights, generator, path, block_size) -> Tensor:
    """Body of :func:`mmd` on validated inputs already in the compute dtype."""
    n, m = source.shape[0], target.shape[0]
    if bandwidths is not None:
        sig_given = _explicit_bandwidths(bandwidths, source, "bandwidths")
        num_kernels = sig_given.shape[0]
    else:
        sig_given = None
        num_kernels = len(mults)
    betas = check_weights(kernel_weights, num_kernels, source, "kernel_weights")

    if estimator == "linear":
        if source_weights is not None or target_weights is not None:
            raise ValueError(
                "source_weights/target_weights are not supported with estimator='linear'; "
                "use 'biased' or 'unbiased'"
            )
        ix, iy = _linear_indices(n, m, source.device, generator)
        x = source if ix is None else source[ix]
        y = target if iy is None else target[iy]
        sq = _linear_pair_sq_dists(x, y)
        sig = _layer_sigmas(sq.reshape(-1), sig_given, heuristic, mults, "bandwidths", _max_row_norm(x, y))
        return _mmd_estimate(_combined_gaussian(sq, sig, betas), "linear")

    a = check_weights(source_weights, n, source, "source_weights")
    b = check_weights(target_weights, m, source, "target_weights")
    if _target_first([source], [target], a, b):  # one canonical order: exact symmetry
        source, target, a, b, n, m = target, source, b, a, m, n
    if estimator == "unbiased":
        _check_unbiased_mass(a, "source_weights")
        _check_unbiased_mass(b, "target_weights")
    if estimator == "biased" and _same_sample([source], [target], a, b):
        return _exact_zero(source, target, a, b, betas)
    z = torch.cat([source, target], dim=0)
    concrete = _resolve(path, z.device, n + m, _dense_bytes(n + m, [num_kernels], z.dtype))
    if concrete == "dense":
        sq = _stacked_sq_dists(z, _centre(z, n))
        sig = sig_given if sig_given is not None else _heuristic_sigmas(z, n, heuristic, mults, sq)
        return _mmd_estimate(_combined_gaussian(sq, sig, betas), estimator, n, a, b)
    sig = sig_given if sig_given is not None else _heuristic_sigmas(z, n, heuristic, mults)
    return _pair_path(concrete, [z], [sig], [betas], n, a, b, estimator, block_size)


def _check_layers(tensors: object, name: str) -> List[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"{name} must be a sequence (list/tuple) of (rows, D_l) tensors, one per layer")
    if len(tensors) == 0:
        raise ValueError(f"{name} must contain at least one layer")
    out = []
    for l, t in enumerate(tensors):
        check_tensor_kind(t, f"{name}[{l}]", half_ok=True)
    for l, t in enumerate(tensors):
        check_features(t, f"{name}[{l}]")
        if t.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"all layers of {name} must have the same number of rows, "
                f"got {tensors[0].shape[0]} in {name}[0] and {t.shape[0]} in {name}[{l}]"
            )
        if t.dtype != tensors[0].dtype or t.device != tensors[0].device:
            raise ValueError(
                f"all layers of {name} must share dtype and device, {name}[{l}] is "
                f"{t.dtype} on {t.device} but {name}[0] is {tensors[0].dtype} on {tensors[0].device}"
            )
        out.append(t)
    return out


def jmmd(
    sources: Sequence[Tensor],
    targets: Sequence[Tensor],
    *,
    bandwidths: Optional[Sequence[Optional[BandwidthSpec]]] = None,
    multipliers: Optional[Sequence[Sequence[float]]] = None,
    heuristic: str = "median",
    estimator: str = "biased",
    generator: Optional[torch.Generator] = None,
    path: str = "auto",
    block_size: Optional[int] = None,
) -> Tensor:
    r"""Joint maximum mean discrepancy (JMMD²) over several layers, as in JAN.

    From Long et al., "Deep Transfer Learning with Joint Adaptation Networks", ICML 2017.
    The joint distribution of the activations of layers :math:`l = 1..L` is compared with
    the tensor-product kernel

    .. math::
        \begin{aligned}
        k\big((x^1..x^L), (y^1..y^L)\big) &= \prod_{l=1}^{L} k_l(x^l, y^l), \\
        k_l(x^l, y^l) &= \frac{1}{K_l}\sum_{u=1}^{K_l} \exp\!\Big(-\frac{\|x^l - y^l\|^2}{2\sigma_{l,u}^2}\Big),
        \end{aligned}

    i.e. the kernel matrix is the elementwise product of the per-layer multi-kernel matrices
    and the estimate is then computed exactly as in :func:`mmd` (same private estimator:
    ``"biased"``, ``"unbiased"`` or ``"linear"``; uniform sample weights).

    Default multipliers follow JAN: ``(0.25, 0.5, 1, 2, 4)`` for every layer except the last
    (the softmax/prediction layer), which gets ``(1.0,)``; with a single layer that layer is
    the last one. Bandwidths are per layer: :math:`\sigma_{l,u} = m_{l,u} h_l` with
    :math:`h_l` the median/mean pairwise distance of layer :math:`l` (detached, floored as in
    :func:`gaussian_bandwidths`, strided row subsample above 1024 stacked rows exactly as in
    :func:`mmd`), unless given explicitly.

    Paths as in :func:`mmd`: ``"dense"`` multiplies the per-layer ``(N+M)^2`` kernel
    matrices (memory :math:`O((N+M)^2 \sum_l K_l)`); ``"tiled"`` and ``"triton"`` form the
    product kernel tile by tile, with :math:`\partial K / \partial d^2_l = k_l'
    \prod_{m \ne l} k_m` accumulated per layer in the same pass (memory
    :math:`O((N+M)\sum_l D_l + \mathrm{block}^2 (L + K))`). The Triton kernel loops over the
    layers of one concatenated feature matrix and supports 1 to 3 layers. Half precision is
    computed in float32 as in :func:`mmd`.

    Args:
        sources: ``L`` tensors, ``sources[l]`` of shape ``(N, D_l)`` (same ``N`` for all).
        targets: ``L`` tensors, ``targets[l]`` of shape ``(M, D_l)``; each layer must match
            its source layer in ``D_l``, dtype and device.
        bandwidths: optional list of ``L`` entries, each ``None`` (use the heuristic) or a
            sequence/1-d tensor of positive bandwidths for that layer.
        multipliers: optional list of ``L`` sequences of positive multipliers.
        heuristic: ``"median"`` or ``"mean"``.
        estimator: ``"biased"``, ``"unbiased"`` or ``"linear"``.
        generator: optional ``torch.Generator`` for the ``"linear"`` subsampling when
            ``N != M``; the same rows are used in every layer.
        path: ``"auto"``, ``"dense"``, ``"tiled"`` or ``"triton"``.
        block_size: rows per tile of the tiled/Triton paths (``None``: the default).

    Returns:
        Scalar tensor (float64 for float64 inputs, else float32): the JMMD² estimate,
        differentiable w.r.t. every layer's features.

    Raises:
        TypeError: ``sources``/``targets`` are not sequences of floating tensors, or their
            dtypes differ.
        ValueError: empty or different numbers of layers, rows differing between layers,
            shape/dtype/device mismatches, ``bandwidths``/``multipliers`` of the wrong
            length or invalid, unknown options, too few rows for the estimator, bad
            ``block_size``, ``path="triton"`` where Triton cannot run or with more than
            3 layers.

    Example::

        >>> feats_s, feats_t = torch.randn(32, 64), torch.randn(32, 64)
        >>> probs_s, probs_t = torch.randn(32, 10).softmax(1), torch.randn(32, 10).softmax(1)
        >>> jmmd([feats_s, probs_s], [feats_t, probs_t]).shape
        torch.Size([])
    """
    for seq, seq_name in ((sources, "sources"), (targets, "targets")):
        if isinstance(seq, Tensor) or not isinstance(seq, Sequence):
            raise TypeError(f"{seq_name} must be a sequence (list/tuple) of (rows, D_l) tensors, one per layer")
        for l, t in enumerate(seq):
            check_tensor_kind(t, f"{seq_name}[{l}]", half_ok=True)
    if len(sources) and len(targets):
        check_same_kind([(sources[0], "sources[0]"), (targets[0], "targets[0]")])
    srcs = _check_layers(sources, "sources")
    tgts = _check_layers(targets, "targets")
    num_layers = len(srcs)
    if len(tgts) != num_layers:
        raise ValueError(f"sources and targets must have the same number of layers, got {num_layers} and {len(tgts)}")
    for l in range(num_layers):
        check_same_space(srcs[l], tgts[l], f"sources[{l}]", f"targets[{l}]")
    check_choice(estimator, "estimator", ESTIMATORS)
    check_choice(heuristic, "heuristic", HEURISTICS)
    check_path(path)
    block_size = _check_block_size(block_size)
    _check_generator(generator)
    if multipliers is None:
        mults = [DEFAULT_MULTIPLIERS] * (num_layers - 1) + [(1.0,)]
    else:
        if isinstance(multipliers, (str, bytes)) or not isinstance(multipliers, Sequence) or len(multipliers) != num_layers:
            raise ValueError(f"multipliers must be a list with one sequence per layer ({num_layers})")
        mults = [_check_multipliers(mu, f"multipliers[{l}]") for l, mu in enumerate(multipliers)]
    if bandwidths is None:
        bws: List[Optional[BandwidthSpec]] = [None] * num_layers
    else:
        if isinstance(bandwidths, (str, bytes, Tensor)) or not isinstance(bandwidths, Sequence) or len(bandwidths) != num_layers:
            raise ValueError(f"bandwidths must be a list with one entry (or None) per layer ({num_layers})")
        bws = list(bandwidths)
    n, m = srcs[0].shape[0], tgts[0].shape[0]
    _check_rows(n, m, estimator, "sources", "targets")
    with no_autocast(srcs[0].device):
        cd = compute_dtype(srcs[0].dtype)
        return _jmmd([t.to(cd) for t in srcs], [t.to(cd) for t in tgts], bws, mults, heuristic,
                     estimator, generator, path, block_size)


def _jmmd(srcs, tgts, bws, mults, heuristic, estimator, generator, path, block_size) -> Tensor:
    """Body of :func:`jmmd` on validated inputs already in the compute dtype."""
    num_layers = len(srcs)
    n, m = srcs[0].shape[0], tgts[0].shape[0]
    if estimator == "linear":
        ix, iy = _linear_indices(n, m, srcs[0].device, generator)
        kernel = None
        for l in range(num_layers):
            x = srcs[l] if ix is None else srcs[l][ix]
            y = tgts[l] if iy is None else tgts[l][iy]
            sq = _linear_pair_sq_dists(x, y)
            sig = _layer_sigmas(sq.reshape(-1), bws[l], heuristic, mults[l], f"bandwidths[{l}]",
                                _max_row_norm(x, y))
            betas = torch.full((sig.shape[0],), 1.0 / sig.shape[0], dtype=sq.dtype, device=sq.device)
            k_l = _combined_gaussian(sq, sig, betas)
            kernel = k_l if kernel is None else kernel * k_l
        return _mmd_estimate(kernel, "linear")

    if _target_first(srcs, tgts, srcs[0].new_zeros(0), tgts[0].new_zeros(0)):  # exact symmetry
        srcs, tgts, n, m = tgts, srcs, m, n
    zs = [torch.cat([srcs[l], tgts[l]], dim=0) for l in range(num_layers)]
    dt, dev = zs[0].dtype, zs[0].device
    num_k = [len(mults[l]) if bws[l] is None else -1 for l in range(num_layers)]
    sigs: List[Optional[Tensor]] = [None] * num_layers
    for l in range(num_layers):  # explicit bandwidths are validated before any heavy work
        if bws[l] is not None:
            sigs[l] = _explicit_bandwidths(bws[l], zs[l], f"bandwidths[{l}]")
            num_k[l] = sigs[l].shape[0]
    a = torch.full((n,), 1.0 / n, dtype=dt, device=dev)
    b = torch.full((m,), 1.0 / m, dtype=dt, device=dev)
    if estimator == "biased" and _same_sample(srcs, tgts, a, b):
        return _exact_zero(*srcs, *tgts)
    concrete = _resolve(path, dev, n + m, _dense_bytes(n + m, num_k, dt))
    if concrete == "triton" and path == "auto" and num_layers > 3:
        concrete = "tiled"
    if concrete == "dense":
        kernel = None
        for l in range(num_layers):
            sq = _stacked_sq_dists(zs[l], _centre(zs[l], n))
            sig = sigs[l] if sigs[l] is not None else _heuristic_sigmas(zs[l], n, heuristic, mults[l], sq)
            betas = torch.full((sig.shape[0],), 1.0 / sig.shape[0], dtype=dt, device=dev)
            k_l = _combined_gaussian(sq, sig, betas)
            kernel = k_l if kernel is None else kernel * k_l
        return _mmd_estimate(kernel, estimator, n, a, b)
    sigs = [sigs[l] if sigs[l] is not None else _heuristic_sigmas(zs[l], n, heuristic, mults[l])
            for l in range(num_layers)]
    betas = [torch.full((sg.shape[0],), 1.0 / sg.shape[0], dtype=dt, device=dev) for sg in sigs]
    return _pair_path(concrete, zs, sigs, betas, n, a, b, estimator, block_size)
