"""Search distributions of hyper-parameters, declared by each method beside its class.

A method lists its tunable hyper-parameters once, each with its default and its search
distribution side by side (DomainBed's ``hparams_registry``), in the class attribute
``search_space``::

    class DANN(Method):
        search_space = {
            "trade_off": HParam(1.0, LogUniform(0.1, 10.0)),
            ...
        }
        def __init__(self, trade_off: float = 1.0, ...)

The default must equal the ``__init__`` default (a test checks every method), so a study's
configuration 0 is exactly what ``adaptlib compare`` trains. Sampling is done by
:mod:`adaptlib.studies.registry` with a :class:`random.Random` seeded per configuration.
The distributions are plain frozen dataclasses: no torch, no NumPy, reproducible across
platforms (Python's Mersenne Twister and ``random.random`` are stable across versions).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Tuple, Union

__all__ = ["Uniform", "LogUniform", "Choice", "ScaledGrid", "HParam", "Distribution"]


@dataclass(frozen=True)
class Uniform:
    """``x ~ U(low, high)``, a float. Raises ``ValueError`` unless ``low < high``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not float(self.low) < float(self.high):
            raise ValueError(f"Uniform needs low < high, got low={self.low!r}, high={self.high!r}")

    def sample(self, rng: random.Random) -> float:
        """One draw, ``low + (high - low) * u`` with ``u = rng.random()``."""
        return float(self.low) + (float(self.high) - float(self.low)) * rng.random()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in ``[low, high]``."""
        return isinstance(value, (int, float)) and float(self.low) <= float(value) <= float(self.high)


@dataclass(frozen=True)
class LogUniform:
    """``log x ~ U(log low, log high)``: every decade between ``low`` and ``high`` equally likely.

    The usual prior of learning rates and loss weights. Raises ``ValueError`` unless
    ``0 < low < high``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 < float(self.low) < float(self.high):
            raise ValueError(f"LogUniform needs 0 < low < high, got low={self.low!r}, high={self.high!r}")

    def sample(self, rng: random.Random) -> float:
        """One draw, ``exp(log low + (log high - log low) * u)`` with ``u = rng.random()``."""
        lo, hi = math.log(float(self.low)), math.log(float(self.high))
        return math.exp(lo + (hi - lo) * rng.random())

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in ``[low, high]``."""
        return isinstance(value, (int, float)) and float(self.low) <= float(value) <= float(self.high)


@dataclass(frozen=True)
class Choice:
    """One of ``values``, each with probability ``1 / len(values)``. Raises ``ValueError`` when empty."""

    values: Tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.values:
            raise ValueError("Choice needs at least one value")

    def sample(self, rng: random.Random) -> Any:
        """One draw, ``values[floor(u * len(values))]`` with ``u = rng.random()``."""
        return self.values[min(int(rng.random() * len(self.values)), len(self.values) - 1)]

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of ``values``."""
        return value in self.values


@dataclass(frozen=True)
class ScaledGrid:
    """A grid of values multiplied by one log-uniform scale: ``s * grid`` with ``s ~ LogUniform(low, high)``.

    For a list of kernel-bandwidth multipliers (DAN's ``(0.25, 0.5, 1, 2, 4)`` times the
    median heuristic) the search moves the whole grid up or down by its base scale ``s``
    and keeps its shape; ``s = 1`` gives ``grid`` itself. Values are returned as a tuple.
    """

    grid: Tuple[float, ...]
    low: float
    high: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(float(g) for g in self.grid))
        if not self.grid or any(g <= 0 for g in self.grid):
            raise ValueError(f"ScaledGrid needs a non-empty grid of positive values, got {self.grid!r}")
        LogUniform(self.low, self.high)  # validates low and high

    def sample(self, rng: random.Random) -> Tuple[float, ...]:
        """One draw: ``tuple(s * g for g in grid)`` with ``s`` drawn from ``LogUniform(low, high)``."""
        s = LogUniform(self.low, self.high).sample(rng)
        return tuple(s * g for g in self.grid)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is ``s * grid`` for some ``s`` in ``[low, high]`` (relative tolerance 1e-9)."""
        try:
            values = tuple(float(v) for v in value)
        except TypeError:
            return False
        if len(values) != len(self.grid):
            return False
        s = values[0] / self.grid[0]
        return (float(self.low) * (1 - 1e-9) <= s <= float(self.high) * (1 + 1e-9)
                and all(math.isclose(v, s * g, rel_tol=1e-9) for v, g in zip(values, self.grid)))


Distribution = Union[Uniform, LogUniform, Choice, ScaledGrid]


@dataclass(frozen=True)
class HParam:
    """One tunable hyper-parameter: its ``default`` and the ``distribution`` a search samples it from.

    ``default`` is what the method uses when nothing is passed (and must equal the
    ``__init__`` default); it need not lie inside ``distribution`` (``l2sp = 0`` for one).
    """

    default: Any
    distribution: Distribution
