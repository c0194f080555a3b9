r"""CORrelation ALignment (Deep CORAL).

Reference:
    B. Sun, K. Saenko. "Deep CORAL: Correlation Alignment for Deep Domain Adaptation".
    ECCV 2016 Workshops (TASK-CV).
"""
from __future__ import annotations

from torch import Tensor

from ._validate import check_feature_pair, compute_dtype, no_autocast

__all__ = ["coral"]


def _check_two_rows(x: Tensor, name: str) -> None:
    if x.shape[0] < 2:
        raise ValueError(
            f"{name} needs at least 2 rows to estimate a covariance, got shape {tuple(x.shape)}"
        )


def coral(source: Tensor, target: Tensor) -> Tensor:
    r"""Deep CORAL loss: squared Frobenius distance between feature covariances.

    From Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation",
    ECCV-W 2016:

    .. math::
        \ell_{\mathrm{CORAL}} = \frac{1}{4 d^2} \, \| C_S - C_T \|_F^2, \qquad
        C_S = \frac{1}{N - 1} (X_S - \bar X_S)^\top (X_S - \bar X_S),

    with :math:`C_T` likewise (unbiased sample covariances, :math:`d` = feature dimension).
    The loss only depends on second moments: shifting either batch by a constant vector
    leaves it unchanged. It is finite when :math:`d > N` (singular covariances are fine).

    Computation: when :math:`d \le N + M` the two :math:`d \times d` covariances are formed
    directly. When :math:`d > N + M` the identity
    :math:`\|C_S - C_T\|_F^2 = \|C_S\|_F^2 + \|C_T\|_F^2 - 2\langle C_S, C_T\rangle_F` is
    evaluated with the small Gram matrices :math:`X_S X_S^\top`, :math:`X_T X_T^\top`,
    :math:`X_S X_T^\top` (centred), costing :math:`O((N+M)^2 d)` instead of
    :math:`O((N+M) d^2)`; that form is clamped at 0 against rounding.

    Args:
        source: ``(N, d)`` floating-point source features, ``N >= 2``. float16 and
            bfloat16 inputs are computed in float32 (the result is then float32 and the
            gradients come back in the input dtype).
        target: ``(M, d)`` target features, ``M >= 2``; same ``d``, dtype and device as
            ``source`` (``N`` and ``M`` may differ).

    Returns:
        Scalar tensor (dtype/device of ``source``; float32 for half-precision inputs) in
        squared feature units, differentiable w.r.t. both inputs.

    Raises:
        TypeError: non-tensor or non-floating input, dtype mismatch.
        ValueError: wrong shapes, fewer than 2 rows (naming ``source`` or ``target``),
            feature-dimension or device mismatch, NaN/inf.

    Example::

        >>> xs = torch.randn(32, 8)
        >>> float(coral(xs, xs + 3.0)) < 1e-6          # a pure shift is ignored
        True
        >>> bool(coral(xs, 2.0 * xs) > 0)               # a rescaling is not
        True
    """
    check_feature_pair(source, target, "source", "target", half_ok=True)
    _check_two_rows(source, "source")
    _check_two_rows(target, "target")
    with no_autocast(source.device):  # half inputs (or autocast): accumulate in float32
        cd = compute_dtype(source.dtype)
        return _coral(source.to(cd), target.to(cd))


def _coral(source: Tensor, target: Tensor) -> Tensor:
    """The loss of :func:`coral` on checked inputs of the compute dtype."""
    n, d = source.shape
    m = target.shape[0]
    xs = source - source.mean(dim=0, keepdim=True)
    xt = target - target.mean(dim=0, keepdim=True)
    if d <= n + m:
        diff = xs.T @ xs / (n - 1) - xt.T @ xt / (m - 1)
        sq_fro = (diff * diff).sum()
    else:
        gss = xs @ xs.T
        gtt = xt @ xt.T
        gst = xs @ xt.T
        ss = (gss * gss).sum() / float((n - 1) ** 2)
        tt = (gtt * gtt).sum() / float((m - 1) ** 2)
        st = (gst * gst).sum() / float((n - 1) * (m - 1))
        sq_fro = (ss + tt - 2.0 * st).clamp_min(0)
    return sq_fro / (4.0 * d * d)
