"""The hyper-parameter registry of studies: search spaces, sampled configurations and seeds.

Each method declares its tunable hyper-parameters beside its class
(``Method.search_space``, :mod:`adaptlib.methods.search_space`); the learning rate, a
Trainer hyper-parameter shared by every method, is declared here in
:data:`TRAINER_SEARCH_SPACE`. A study samples ``N`` configurations per method:

- configuration 0 is the defaults (the method's ``__init__`` defaults, updated by the
  benchmark's own method defaults, ``adaptlib.compare.METHOD_DEFAULTS``, and the study's
  learning rate), i.e. exactly what ``adaptlib compare`` trains;
- configuration ``k >= 1`` draws every hyper-parameter, in sorted name order, from a
  :class:`random.Random` seeded by :func:`derive_seed` ``(study, method, "config", k)``; the same
  configuration is used on every task and in every trial.

Each run's seed is ``derive_seed(study, method, task, config, trial)``. Both are written in
the study's records, so the search space and the seeding are part of the result.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Dict, Mapping, Optional, Tuple

from ..methods import METHODS
from ..methods.search_space import HParam, LogUniform

__all__ = ["TRAINER_SEARCH_SPACE", "derive_seed", "run_seed", "search_space", "sample_config",
           "split_hparams", "describe_search_space"]

#: The Trainer's tunable hyper-parameters, shared by every method. The default is
#: ``Trainer(lr=0.01)``; a study's configuration 0 uses the study's ``lr`` instead (the
#: benchmark's setting unless the study file sets it), and the other configurations draw from
#: this distribution rescaled around the study's ``lr`` (:func:`sample_config`).
TRAINER_SEARCH_SPACE: Dict[str, HParam] = {
    "lr": HParam(0.01, LogUniform(0.003, 0.03)),
}


def derive_seed(*parts: Any) -> int:
    """A seed in ``[0, 2**31)`` from the parts: the first 8 bytes of ``sha256("|".join(map(str, parts)))``, mod ``2**31``.

    Stable across processes, machines and Python versions (unlike ``hash``), so a study
    resumed elsewhere draws the same configurations and seeds.
    """
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2 ** 31)


def run_seed(study: str, method: str, task: str, config: int, trial: int) -> int:
    """The seed of one run: :func:`derive_seed` of ``(study, method, task, config, trial)``."""
    return derive_seed(study, method, task, int(config), int(trial))


def search_space(method: str) -> Dict[str, HParam]:
    """The full search space of ``method``: the Trainer's (``lr``) and the method's own, by name.

    Raises:
        ValueError: unknown method (the message lists the known ones), or a method declaring
            a name that collides with a Trainer hyper-parameter.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    own = dict(METHODS[method].search_space)
    clash = sorted(set(own) & set(TRAINER_SEARCH_SPACE))
    if clash:
        raise ValueError(f"method {method!r} declares {clash}, which are Trainer hyper-parameters")
    return {**TRAINER_SEARCH_SPACE, **own}


def _plain(value: Any) -> Any:
    """JSON-friendly form: tuples become lists."""
    return list(value) if isinstance(value, tuple) else value


def sample_config(study: str, method: str, config: int, *, lr: Optional[float] = None,
                  defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The hyper-parameters of configuration ``config`` of ``method`` in study ``study``.

    Args:
        study: the study's name (part of the sampling seed).
        method: registry name of the method.
        config: ``0`` for the defaults, ``k >= 1`` for the ``k``-th random configuration.
        lr: the learning rate of configuration 0 (default: the Trainer default). Other
            configurations draw ``lr`` from :data:`TRAINER_SEARCH_SPACE` rescaled by
            ``lr / 0.01``, i.e. log-uniformly in ``[lr / 3.33, 3 lr]`` around it (an Adam recipe at
            3e-3 searches 9e-4 to 9e-3, not SGD's range).
        defaults: configuration 0's values that replace the method's search-space defaults (a
            benchmark's own method defaults, :func:`adaptlib.compare.method_defaults_for`);
            ignored by the drawn configurations. Each name must be one of the method's own
            hyper-parameters (not ``lr``, which is the ``lr`` argument); the values are checked
            where they are made (``check_method_kwargs`` tests every shipped entry).

    Returns:
        name -> value (``lr`` and the method's tunable arguments; tuples as lists), JSON-ready.

    Raises:
        ValueError: ``config`` is not a non-negative integer, ``method`` is unknown, or ``defaults``
            is not a mapping or names a hyper-parameter outside the method's own search space.
    """
    if not isinstance(config, int) or isinstance(config, bool) or config < 0:
        raise ValueError(f"config must be a non-negative integer, got {config!r}")
    space = search_space(method)
    if defaults is not None and not isinstance(defaults, Mapping):
        raise ValueError(f"defaults must map hyper-parameter names to values, got {defaults!r}")
    own = {name: h for name, h in space.items() if name not in TRAINER_SEARCH_SPACE}
    unknown = sorted(set(defaults or {}) - set(own))
    if unknown:
        raise ValueError(f"defaults: {unknown} are not hyper-parameters of {method!r}'s search space "
                         f"({sorted(own)}; the learning rate is the lr argument)")
    if config == 0:
        out = {name: h.default for name, h in space.items()}
        out.update(defaults or {})
        if lr is not None:
            out["lr"] = float(lr)
    else:
        rng = random.Random(derive_seed(study, method, "config", config))
        out = {name: space[name].distribution.sample(rng) for name in sorted(space)}
        if lr is not None:  # the same draw, rescaled around the study's learning rate
            out["lr"] = float(out["lr"]) * float(lr) / TRAINER_SEARCH_SPACE["lr"].default
    return {name: _plain(out[name]) for name in sorted(out)}


def split_hparams(hparams: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Split a configuration into ``(trainer_kwargs, method_kwargs)`` (``lr`` goes to the Trainer)."""
    trainer = {k: v for k, v in hparams.items() if k in TRAINER_SEARCH_SPACE}
    method = {k: (tuple(v) if isinstance(v, list) else v) for k, v in hparams.items()
              if k not in TRAINER_SEARCH_SPACE}
    return trainer, method


def describe_search_space(method: str) -> Dict[str, Dict[str, Any]]:
    """``name -> {"default": ..., "distribution": "LogUniform(low=0.1, high=10.0)"}``, for records and docs."""
    return {name: {"default": _plain(h.default), "distribution": repr(h.distribution)}
            for name, h in sorted(search_space(method).items())}
