"""Closed-form representations learned from unlabelled source and target data.

:func:`msda_fit` / :func:`msda_transform`: the marginalized stacked denoising autoencoder
(mSDA) of Chen, Xu, Weinberger and Sha (ICML 2012). Each layer is a linear denoiser whose
weights are the *expected* least-squares fit over all random corruptions of the inputs, so it
has a closed form (one ``(D+1, D+1)`` linear solve, no training); the layer's output is
``tanh`` of the reconstruction. Fitted on the union of the source and the (unlabelled) target
samples, the denoisers learn which features co-occur across both domains, and a classifier
trained on the stacked representation transfers better. The DANN paper's best Amazon-reviews
result (81.3 %, Ganin et al., JMLR 2016, Table 1) is DANN trained on this representation.

Example::

    import torch
    from adaptlib.representations import msda_fit, msda_transform
    x_source, x_target = torch.rand(200, 50), torch.rand(300, 50)   # e.g. word counts, no labels
    weights = msda_fit(torch.cat([x_source, x_target]), noise=0.5, layers=5)
    z_source = msda_transform(x_source, weights)      # (200, 50 * 6)

Cite:
    M. Chen, Z. Xu, K. Q. Weinberger, F. Sha. Marginalized Denoising Autoencoders for Domain
    Adaptation. ICML 2012.
"""
from __future__ import annotations

import numbers
from typing import List, Sequence

import torch

__all__ = ["msda_layer", "msda_fit", "msda_transform"]


def _check_x(x: object, argname: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{argname} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{argname} must have shape (N, D) with N, D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{argname} must be a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{argname} contains NaN or inf")
    return x


def msda_layer(x: torch.Tensor, noise: float, *, reg: float = 1e-5) -> torch.Tensor:
    """Weights of one marginalized denoising autoencoder (mDA) layer, in closed form.

    With ``x̄_i = [x_i; 1]`` (a bias feature appended) and each of the ``D`` input features
    of ``x̄_i`` set to zero independently with probability ``p = noise`` (the bias never),
    ``W`` minimises the expected reconstruction error over all corruptions ``x̃_i``::

        W = argmin_W  sum_i E ||x_i - W x̃_i||²  =  P Q⁻¹,
        S = sum_i x̄_i x̄_iᵀ,   q = [1-p, ..., 1-p, 1],
        Q_jk = S_jk q_j q_k  (j != k),   Q_jj = S_jj q_j,   P_jk = S_jk q_k   (rows j <= D),

    with ``reg`` added to the diagonal of ``Q`` (not to the bias entry), as in Chen et al.'s
    code, so features that never occur keep it invertible. The layer's output is
    ``tanh(W x̄)`` (:func:`msda_transform`).

    Args:
        x: ``(N, D)`` floating-point inputs, one sample per row (source and target samples
            together; no labels). Any device; the solve runs in float64 on that device.
        noise: corruption probability ``p`` in ``[0, 1)``.
        reg: ridge added to ``Q``'s diagonal, ``>= 0``.

    Returns:
        ``W`` of shape ``(D, D + 1)`` in ``x``'s dtype and device; its last column is the bias.
        A fixed closed-form fit: no gradient flows back to ``x`` (it is detached).

    Raises:
        TypeError / ValueError: ``x`` is not a finite ``(N, D)`` float tensor; ``noise`` is not
            in ``[0, 1)``; ``reg`` is negative.
        torch.linalg.LinAlgError: ``Q`` is singular (``reg = 0`` and a feature never occurs).

    Cite: Chen et al., Marginalized Denoising Autoencoders for Domain Adaptation, ICML 2012, Sec. 3.
    """
    x = _check_x(x)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not 0.0 <= noise < 1.0:
        raise ValueError(f"noise must be a corruption probability in [0, 1), got {noise!r}")
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not reg >= 0.0:
        raise ValueError(f"reg must be a number >= 0, got {reg!r}")
    noise, reg = float(noise), float(reg)
    x = x.detach()
    n, d = x.shape
    xb = torch.cat([x.double(), x.new_ones(n, 1, dtype=torch.float64)], dim=1)
    q = xb.new_full((d + 1,), 1.0 - noise)
    q[-1] = 1.0
    s = xb.T @ xb
    qmat = s * torch.outer(q, q)
    qmat.diagonal().copy_(q * s.diagonal())
    qmat.diagonal()[:d] += reg
    p = s[:d, :] * q[None, :]
    # W Q = P and Q is symmetric, so W = (Q⁻¹ Pᵀ)ᵀ.
    w = torch.linalg.solve(qmat, p.T).T
    return w.to(x.dtype)


def msda_fit(x: torch.Tensor, noise: float = 0.5, layers: int = 5, *, reg: float = 1e-5) -> List[torch.Tensor]:
    """Fit a marginalized *stacked* denoising autoencoder: ``layers`` mDA layers, each on the
    ``tanh`` output of the one below.

    Layer 1 is :func:`msda_layer` on ``x``; layer ``l`` is :func:`msda_layer` on
    ``h_{l-1} = tanh(W_{l-1} [h_{l-2}; 1])``. Unsupervised: pass the source and target samples
    together (the DANN paper and Chen et al. fit it on both domains' unlabelled reviews).

    Args:
        x: ``(N, D)`` floating-point inputs (source and target rows; no labels).
        noise: corruption probability of every layer, in ``[0, 1)``.
        layers: number of stacked layers, ``>= 1``.
        reg: as :func:`msda_layer`.

    Returns:
        The ``layers`` weight matrices, each ``(D, D + 1)``, in ``x``'s dtype and device.

    Raises:
        TypeError / ValueError: as :func:`msda_layer`; ``layers`` is not a positive int.

    Cite: Chen et al., ICML 2012, Algorithm 1 (mSDA).
    """
    if isinstance(layers, bool) or not isinstance(layers, numbers.Integral) or layers < 1:
        raise ValueError(f"layers must be an int >= 1, got {layers!r}")
    h = _check_x(x).detach()
    weights = []
    for _ in range(int(layers)):
        w = msda_layer(h, noise, reg=reg)
        weights.append(w)
        h = _apply(h, w)
    return weights


def _apply(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(torch.addmm(w[:, -1], h, w[:, :-1].T))


def msda_transform(x: torch.Tensor, weights: Sequence[torch.Tensor], *, include_input: bool = True,
                   chunk_size: int = 4096) -> torch.Tensor:
    """The stacked mSDA representation ``[x, h_1, ..., h_L]`` of ``x``.

    ``h_l = tanh(W_l [h_{l-1}; 1])`` with ``h_0 = x``; the DANN paper's Amazon representation is
    this concatenation for ``L = 5`` layers on the 5000-d counts (30,000-d).

    Args:
        x: ``(N, D)`` inputs, same ``D`` as the samples the weights were fitted on.
        weights: the ``(D, D + 1)`` matrices from :func:`msda_fit` (same dtype and device as ``x``).
        include_input: prepend ``x`` itself (the paper's representation); ``False`` returns only
            the ``L`` hidden layers.
        chunk_size: rows processed at a time (bounds the temporary memory).

    Returns:
        ``(N, D * (L + 1))`` (``(N, D * L)`` without the input), in ``x``'s dtype and device; a
        fixed feature map, computed without autograd (``x`` and the weights are detached).

    Raises:
        TypeError / ValueError: ``x`` is not a finite float ``(N, D)`` tensor; ``weights`` is
            empty or a matrix is not ``(D, D + 1)`` of ``x``'s dtype and device.
    """
    x = _check_x(x).detach()
    d = x.shape[1]
    if isinstance(weights, torch.Tensor):
        raise TypeError("weights must be the list of (D, D + 1) matrices that msda_fit returns, got one tensor "
                        f"of shape {tuple(weights.shape)} (wrap it in a list)")
    weights = [w.detach() if isinstance(w, torch.Tensor) else w for w in weights]
    if not weights:
        raise ValueError("weights must hold at least one (D, D + 1) matrix from msda_fit")
    for i, w in enumerate(weights):
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != (d, d + 1):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"weights[{i}] must have shape ({d}, {d + 1}) for x of shape (N, {d}), got {shape}")
        if w.dtype != x.dtype or w.device != x.device:
            raise TypeError(f"weights[{i}] must have x's dtype and device ({x.dtype}, {x.device}), "
                            f"got ({w.dtype}, {w.device})")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    blocks = len(weights) + int(include_input)
    out = x.new_empty(x.shape[0], d * blocks)
    for start in range(0, x.shape[0], chunk_size):
        h = x[start:start + chunk_size]
        parts = [h] if include_input else []
        for w in weights:
            h = _apply(h, w)
            parts.append(h)
        torch.cat(parts, dim=1, out=out[start:start + chunk_size])
    return out
