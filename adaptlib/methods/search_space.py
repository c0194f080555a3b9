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

import difflib
import inspect
import math
import random
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple, Union

__all__ = ["Uniform", "LogUniform", "Choice", "ScaledGrid", "HParam", "Distribution", "check_hparams"]


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


# ---------------------------------------------------------------------------------------------
# Checking user-given hyper-parameters before any run (``adaptlib compare --method-kwargs``, studies)
_NO_DEFAULT = inspect.Parameter.empty


def _kind(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_type(method: str, name: str, value: Any, default: Any) -> None:
    """Check ``value`` against the type of the ``__init__`` default ``default`` (no default: anything)."""
    where = f"{method}: {name}"
    if default is _NO_DEFAULT or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {_kind(value)}")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where} must be an integer, got {_kind(value)}")
    elif isinstance(default, float):
        if not _is_number(value) or not math.isfinite(float(value)):
            raise ValueError(f"{where} must be a finite number, got {_kind(value)}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {_kind(value)}")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{where} must be a list like {list(default)!r}, got {_kind(value)}")
        if default and all(_is_number(d) for d in default):
            if not all(_is_number(v) and math.isfinite(float(v)) for v in value):
                raise ValueError(f"{where} must be a list of finite numbers like {list(default)!r}, got {value!r}")
        elif default and all(isinstance(d, str) for d in default):
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"{where} must be a list of strings like {list(default)!r}, got {value!r}")


def check_hparams(method_cls: type, hparams: Mapping[str, Any], *, model: Any = None) -> Dict[str, Any]:
    """Check hyper-parameters for a method class before any training; return them as a dict.

    What is checked, in this order, each failure a ``ValueError`` that names the method, the
    parameter and what is allowed:

    1. every name is an argument of ``method_cls.__init__`` (the message lists them all and
       suggests the closest one: ``tradeoff`` -> ``trade_off``);
    2. each value has the type of the ``__init__`` default (a number for a float default,
       an integer for an int default, true/false for a bool, a string, a list of numbers);
    3. a hyper-parameter searched on a log scale (:class:`LogUniform`, :class:`ScaledGrid` in
       ``method_cls.search_space``) is a magnitude: it must be ``>= 0`` (0 switches a weight
       off; negative values would reverse the term);
    4. the method's own checks: it is built once with ``hparams`` and, if ``model`` (an
       :class:`~adaptlib.models.AdaptModel`) is given, set up on it, so its constructor's and
       its modules' errors (a bad ``layer`` name, ``dropout`` outside [0, 1]) surface here.

    Args:
        method_cls: a :class:`~adaptlib.methods.Method` subclass (``METHODS[name]``).
        hparams: name -> value, as given by the user (JSON values: lists for tuples).
        model: optional small model to run the method's ``setup`` on.

    Raises:
        ValueError: see above.
    """
    method = getattr(method_cls, "name", method_cls.__name__)
    if not isinstance(hparams, Mapping):
        raise ValueError(f"{method}: hyper-parameters must be an object of name: value, got {_kind(hparams)}")
    params = {n: p for n, p in inspect.signature(method_cls.__init__).parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(method_cls.__init__).parameters.values())
    valid = ", ".join(params) or "none"
    for name in hparams:
        if not isinstance(name, str) or (name not in params and not accepts_any):
            close = difflib.get_close_matches(str(name), list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{method}: unknown hyper-parameter {name!r}{hint}; {method} takes: {valid}")
    space = getattr(method_cls, "search_space", {}) or {}
    for name, value in hparams.items():
        _check_type(method, name, value, params[name].default if name in params else _NO_DEFAULT)
        dist = space[name].distribution if name in space else None
        if isinstance(dist, (LogUniform, ScaledGrid)):
            values = value if isinstance(value, (tuple, list)) else [value]
            if any(_is_number(v) and float(v) < 0 for v in values):
                raise ValueError(f"{method}: {name} must be >= 0 (a weight or scale; the search draws it from "
                                 f"{dist!r}), got {value!r}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in hparams.items()}
    try:
        built = method_cls(**kwargs)
        if model is not None:
            built.setup(model)
    except (ValueError, TypeError, RuntimeError) as e:
        given = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "the defaults"
        raise ValueError(f"{method}: invalid hyper-parameters ({given}): {e}") from None
    return dict(hparams)
