r"""Thin :class:`torch.nn.Module` wrappers around the functional losses.

Each module stores its keyword options (validated at construction, so a misconfigured loss
fails when it is built, not at the first batch) and its ``forward`` calls the function of
the same name. They hold no parameters and no state between calls.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice
from .adversarial import gradient_reversal
from .coral import coral
from .mmd import (
    DEFAULT_MULTIPLIERS,
    ESTIMATORS,
    HEURISTICS,
    _check_generator,
    _check_multipliers,
    jmmd,
    mmd,
)
from ..kernels import check_path
from ._sinkhorn_checks import _check_options, _check_scaling
from .sinkhorn import SinkhornResult, sinkhorn

__all__ = ["MMDLoss", "JMMDLoss", "CORALLoss", "SinkhornLoss", "GradientReversal"]


class MMDLoss(nn.Module):
    r"""Module form of :func:`~adaptlib.losses.mmd` (multi-kernel Gaussian MMD², DAN).

    Args: the keyword options of :func:`~adaptlib.losses.mmd` (``bandwidths``,
    ``heuristic``, ``multipliers``, ``estimator``, ``kernel_weights``, ``generator``,
    ``path``, ``block_size``).

    Inputs: ``source`` ``(N, D)``, ``target`` ``(M, D)``, optional ``source_weights``
    ``(N,)`` and ``target_weights`` ``(M,)``. Output: scalar MMD² estimate.

    Raises: ``ValueError``/``TypeError`` at construction for invalid options, and the errors
    of :func:`~adaptlib.losses.mmd` in ``forward``.

    Example::

        >>> loss_fn = MMDLoss(estimator="unbiased")
        >>> loss_fn(torch.randn(16, 4), torch.randn(20, 4)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        bandwidths=None,
        heuristic: str = "median",
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        estimator: str = "biased",
        kernel_weights: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
        path: str = "auto",
        block_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_choice(heuristic, "heuristic", HEURISTICS)
        check_choice(estimator, "estimator", ESTIMATORS)
        _check_generator(generator)
        self.path = check_path(path)
        self.block_size = block_size
        self.bandwidths = bandwidths
        self.heuristic = heuristic
        self.multipliers = _check_multipliers(multipliers)
        self.estimator = estimator
        self.kernel_weights = kernel_weights
        self.generator = generator

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        source_weights: Optional[Tensor] = None,
        target_weights: Optional[Tensor] = None,
    ) -> Tensor:
        return mmd(
            source,
            target,
            bandwidths=self.bandwidths,
            heuristic=self.heuristic,
            multipliers=self.multipliers,
            estimator=self.estimator,
            source_weights=source_weights,
            target_weights=target_weights,
            kernel_weights=self.kernel_weights,
            generator=self.generator,
            path=self.path,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        bw = "heuristic" if self.bandwidths is None else "fixed"
        return (f"estimator={self.estimator!r}, bandwidths={bw}, heuristic={self.heuristic!r}, "
                f"multipliers={self.multipliers}, path={self.path!r}")


class JMMDLoss(nn.Module):
    r"""Module form of :func:`~adaptlib.losses.jmmd` (joint MMD², JAN).

    Args: the keyword options of :func:`~adaptlib.losses.jmmd` (``bandwidths``,
    ``multipliers``, ``heuristic``, ``estimator``, ``generator``, ``path``, ``block_size``).

    Inputs: ``sources`` and ``targets``, lists of ``L`` tensors ``(N, D_l)`` / ``(M, D_l)``.
    Output: scalar JMMD² estimate.

    Example::

        >>> loss_fn = JMMDLoss()
        >>> f_s, f_t = torch.randn(16, 8), torch.randn(16, 8)
        >>> p_s, p_t = torch.randn(16, 3).softmax(1), torch.randn(16, 3).softmax(1)
        >>> loss_fn([f_s, p_s], [f_t, p_t]).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        bandwidths=None,
        multipliers: Optional[Sequence[Sequence[float]]] = None,
        heuristic: str = "median",
        estimator: str = "biased",
        generator: Optional[torch.Generator] = None,
        path: str = "auto",
        block_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_choice(heuristic, "heuristic", HEURISTICS)
        check_choice(estimator, "estimator", ESTIMATORS)
        _check_generator(generator)
        self.path = check_path(path)
        self.block_size = block_size
        if multipliers is not None:
            multipliers = [_check_multipliers(mu, f"multipliers[{l}]") for l, mu in enumerate(multipliers)]
        self.bandwidths = bandwidths
        self.multipliers = multipliers
        self.heuristic = heuristic
        self.estimator = estimator
        self.generator = generator

    def forward(self, sources: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        return jmmd(
            sources,
            targets,
            bandwidths=self.bandwidths,
            multipliers=self.multipliers,
            heuristic=self.heuristic,
            estimator=self.estimator,
            generator=self.generator,
            path=self.path,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}, heuristic={self.heuristic!r}, path={self.path!r}"


class CORALLoss(nn.Module):
    r"""Module form of :func:`~adaptlib.losses.coral` (Deep CORAL).

    Inputs: ``source`` ``(N, d)``, ``target`` ``(M, d)`` with ``N, M >= 2``.
    Output: scalar :math:`\|C_S - C_T\|_F^2 / (4 d^2)`.

    Example::

        >>> CORALLoss()(torch.randn(8, 5), torch.randn(6, 5)).shape
        torch.Size([])
    """

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        return coral(source, target)


class SinkhornLoss(nn.Module):
    r"""Module form of :func:`~adaptlib.losses.sinkhorn` returning the entropic OT value.

    Args: ``epsilon`` (absolute, squared feature units), ``max_iter``, ``tol``,
    ``scaling`` (epsilon scaling, default off), ``path`` and ``block_size``, as in
    :func:`~adaptlib.losses.sinkhorn`.

    Inputs: ``source`` ``(N, D)``, ``target`` ``(M, D)``, optional weights ``(N,)``,
    ``(M,)``. Output: scalar :math:`\mathrm{OT}_\varepsilon` (``SinkhornResult.value``),
    differentiable by the envelope theorem.

    After each call, :attr:`last_result` holds the whole :class:`SinkhornResult` (plan,
    potentials, ``n_iter``) and :attr:`converged` its convergence flag. A solve that did not
    converge warns (``RuntimeWarning``) as :func:`~adaptlib.losses.sinkhorn` does: pass
    ``scaling=`` (epsilon scaling, e.g. 0.5) when ``epsilon`` is small relative to the
    squared distances.

    Example::

        >>> SinkhornLoss(epsilon=0.1)(torch.randn(8, 2), torch.randn(10, 2)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        epsilon: float = 0.05,
        max_iter: int = 1000,
        tol: float = 1e-6,
        scaling: Optional[float] = None,
        path: str = "auto",
        block_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.epsilon, self.max_iter, self.tol = _check_options(epsilon, max_iter, tol)
        self.scaling = _check_scaling(scaling)
        self.path = check_path(path)
        self.block_size = block_size
        self.last_result: Optional[SinkhornResult] = None

    @property
    def converged(self) -> Optional[bool]:
        """Whether the last call's solve converged (``None`` before the first call)."""
        return None if self.last_result is None else self.last_result.converged

    def forward(
        self,
        source: Tensor,
        target: Tensor,
        source_weights: Optional[Tensor] = None,
        target_weights: Optional[Tensor] = None,
    ) -> Tensor:
        self.last_result = sinkhorn(
            source,
            target,
            source_weights,
            target_weights,
            epsilon=self.epsilon,
            max_iter=self.max_iter,
            tol=self.tol,
            scaling=self.scaling,
            path=self.path,
            block_size=self.block_size,
        )
        return self.last_result.value

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, max_iter={self.max_iter}, tol={self.tol}, path={self.path!r}"


class GradientReversal(nn.Module):
    r"""Module form of :func:`~adaptlib.losses.gradient_reversal`.

    ``forward(x, coefficient)``: identity on ``x`` (any shape); the backward multiplies the
    gradient by ``-coefficient`` (Ganin & Lempitsky, ICML 2015). The coefficient is passed
    on every call, so schedules live in the training loop, not in the module.

    Example::

        >>> grl = GradientReversal()
        >>> x = torch.ones(2, requires_grad=True)
        >>> grl(x, 2.0).sum().backward(); x.grad
        tensor([-2., -2.])
    """

    def forward(self, x: Tensor, coefficient: float) -> Tensor:
        return gradient_reversal(x, coefficient)
