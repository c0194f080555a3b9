"""Composition: one training step whose loss is a weighted sum of several methods' terms.

``DANN() + MCC()``, ``DANN() + 0.5 * MCC()``, ``Composed([(DANN(), 1.0), (MCC(), 0.5)])``, the
Trainer's ``method=["dann", "mcc"]`` and the registry name ``"dann+mcc"`` (``adaptlib compare
--methods dann+mcc``) all build a :class:`Composed`; no new code per combination (the idea of
pytorch-adapt's hooks, with typed batches and outputs).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Dict, List, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from .._checks import check_non_negative
from ..models import AdaptModel, ModelOutput
from .base import Batch, Method, Progress, StepOutput
from .search_space import check_hparams

__all__ = ["Composed", "composed_class"]

#: A term's weight: a number ``>= 0``, or a schedule ``fraction -> weight`` of the training progress
#: ``p`` in [0, 1) (e.g. :func:`~adaptlib.methods.dann_warmup`).
Weight = Union[float, Callable[[float], float]]


class _SharedForward:
    """The model as the terms of one composed step see it: ``model(x)`` runs once per distinct input
    (compared by value), so DANN and MCC share one forward pass, one dropout mask and one batch-norm
    update, as in the papers' combined methods. Any other attribute is the model's own."""

    def __init__(self, model: AdaptModel) -> None:
        self._model = model
        self._cache: List[Tuple[Tensor, ModelOutput]] = []

    def __call__(self, x: Tensor) -> ModelOutput:
        for seen, out in self._cache:
            if seen is x or (seen.shape == x.shape and seen.dtype == x.dtype and seen.device == x.device
                             and torch.equal(seen, x)):
                return out
        out = self._model(x)
        self._cache.append((x, out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _prefixes(names: Sequence[str]) -> List[str]:
    """Distinct prefixes of the terms: the method's name, then ``name_2``, ``name_3`` for repeats."""
    seen: Counter = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _scaled(a: Weight, b: Weight) -> Weight:
    """The product of two weights (a schedule if either one is)."""
    if callable(a) or callable(b):
        def schedule(p: float) -> float:
            return (a(p) if callable(a) else a) * (b(p) if callable(b) else b)
        schedule.__name__ = f"{getattr(a, '__name__', a)}*{getattr(b, '__name__', b)}"
        return schedule
    return a * b


class Composed(Method):
    """Several methods trained as one: their loss terms, weighted, summed in one step.

    Loss of a step, for terms ``(m_k, w_k)`` and progress ``p``::

        L = CE(h(g(x_s)), y_s) + sum_k w_k(p) * sum_{t != "classification"} L_{m_k, t}

    * the source cross-entropy (each method's ``"classification"`` term) is counted once: the
      first term's, unweighted;
    * every other term of method ``m_k`` is multiplied by ``w_k`` (a number, or a schedule of the
      progress fraction) and logged as ``"<prefix>/<term>"``, the prefix being the method's
      name (``"dann/domain"``, ``"mcc/mcc"``; ``mcc_2`` for a second MCC); metrics likewise;
    * the model runs once per distinct input within a step (:class:`_SharedForward`): DANN and
      MCC see the same features, as in MCC's DANN + MCC;
    * each term keeps its own schedule (DANN's reversal warm-up), modules (discriminator: all
      are trained), frozen modules and ``on_step_start``; each gets the Trainer's
      ``label_smoothing``.

    A weight scales a term as a whole: for DANN both the discriminator's gradient and the
    reversed one (its ``trade_off`` scales the reversed one only). Methods with several phases
    (MCD) or without source data (SHOT) have no single summed step and are refused; nested
    compositions are flattened.

    Args:
        terms: methods, or ``(method, weight)`` pairs; a weight is a number ``>= 0`` (default 1)
            or a callable ``fraction -> weight``.

    Attributes:
        name: ``"+"``-joined names of the terms (``"dann+mcc"``).
        search_space: the union of the terms' spaces, keys prefixed ``"<prefix>.<name>"``.

    Raises:
        TypeError: a term is not a :class:`Method` (build names with :func:`~adaptlib.methods.get_method`).
        ValueError: no term, a negative weight, or a term that cannot be composed.

    Example:
        >>> from adaptlib.methods import DANN, MCC
        >>> method = DANN() + 0.5 * MCC()   # or Trainer(model, ["dann", ("mcc", 0.5)]) or "dann+mcc"
        >>> method.name
        'dann+mcc'
    """

    name = "composed"

    def __init__(self, terms: Sequence[Union[Method, Tuple[Method, Weight]]]) -> None:
        super().__init__()
        flat: List[Tuple[Method, Weight]] = []
        for item in terms:
            method, weight = item if isinstance(item, tuple) else (item, 1.0)
            if not isinstance(method, Method):
                raise TypeError(f"the terms of a composition must be Methods or (Method, weight) pairs, got "
                                f"{type(method).__name__} (method names are built by adaptlib.methods.get_method)")
            if not callable(weight):
                weight = check_non_negative(weight, f"the weight of {method.name!r}")
            if isinstance(method, Composed):
                flat += [(m, _scaled(w, weight)) for m, w in zip(method.terms, method.weights)]
                continue
            if not method.composable:
                raise ValueError(f"method {method.name!r} cannot be a term of a composition: its step is not one sum "
                                 "of loss terms (several phases, or no source data); train it on its own")
            flat.append((method, weight))
        if not flat:
            raise ValueError("a composition needs at least one method")
        self.terms = nn.ModuleList([m for m, _ in flat])
        self.weights: List[Weight] = [w for _, w in flat]
        self.prefixes = _prefixes([m.name for m in self.terms])
        self.name = "+".join(m.name for m in self.terms)  # type: ignore[misc]
        self.uses_target = any(m.uses_target for m in self.terms)  # type: ignore[misc]
        self.uses_target_labels = any(m.uses_target_labels for m in self.terms)  # type: ignore[misc]
        self.search_space = {f"{p}.{k}": hp for p, m in zip(self.prefixes, self.terms)  # type: ignore[misc]
                             for k, hp in m.search_space.items()}

    @property  # type: ignore[override]
    def label_smoothing(self) -> float:
        """The Trainer's label smoothing, passed on to every term when set."""
        return self._label_smoothing if "_label_smoothing" in self.__dict__ else 0.0

    @label_smoothing.setter
    def label_smoothing(self, value: float) -> None:
        self.__dict__["_label_smoothing"] = float(value)
        for m in self.terms:
            m.label_smoothing = float(value)

    def setup(self, model: AdaptModel) -> None:
        for m in self.terms:
            m.setup(model)

    def frozen_modules(self, model: AdaptModel, progress: Progress) -> Tuple[nn.Module, ...]:
        """The union of the terms' frozen modules (each module once)."""
        out: List[nn.Module] = []
        for m in self.terms:
            out += [f for f in m.frozen_modules(model, progress) if all(f is not g for g in out)]
        return tuple(out)

    def on_step_start(self, model: AdaptModel, progress: Progress) -> None:
        for m in self.terms:
            m.on_step_start(model, progress)

    def loss_terms(self, model: AdaptModel, batch: Batch, progress: Progress) -> StepOutput:
        shared = _SharedForward(model)
        losses: Dict[str, Tensor] = {}
        metrics: Dict[str, Any] = {}
        for prefix, method, weight in zip(self.prefixes, self.terms, self.weights):
            w = float(weight(progress.fraction)) if callable(weight) else weight
            out = method.loss_terms(shared, batch, progress)  # type: ignore[arg-type]
            for k, v in out.losses.items():
                if k == "classification":
                    losses.setdefault(k, v)  # the source cross-entropy, once
                else:
                    losses[f"{prefix}/{k}"] = w * v
            metrics.update({f"{prefix}/{k}": v for k, v in out.metrics.items()})
            if callable(weight):
                metrics[f"{prefix}/weight"] = w
        return StepOutput(losses, metrics)

    def hparams(self) -> Dict[str, Any]:
        """Every term's hyper-parameters as ``"<prefix>.<name>"``, and its ``"<prefix>.weight"`` (a
        schedule by its name), so that ``METHODS[name](**hparams())`` rebuilds a numeric composition."""
        out: Dict[str, Any] = {}
        for p, m, w in zip(self.prefixes, self.terms, self.weights):
            out.update({f"{p}.{k}": v for k, v in m.hparams().items()})
            out[f"{p}.weight"] = getattr(w, "__name__", repr(w)) if callable(w) else w
        return out


Method._composer = Composed


def composed_class(classes: Sequence[Type[Method]]) -> Type[Composed]:
    """The :class:`Composed` subclass of a registry name such as ``"dann+mcc"``, for method classes ``classes``.

    Its constructor takes every term's hyper-parameter as ``"<prefix>.<name>"`` (``"mcc.trade_off"``)
    and each term's weight as ``"<prefix>.weight"`` (default 1), checked with
    :func:`~adaptlib.methods.search_space.check_hparams`; its class attributes (``name``,
    ``uses_target``, ``uses_target_labels``, ``search_space``: the union, prefixed) are those of
    the composition, so compare and studies treat it as any registered method.

    Raises:
        ValueError: fewer than two classes, or one that cannot be composed (MCD, SHOT).
    """
    if len(classes) < 2:
        raise ValueError("a composed name joins at least two methods with '+', e.g. 'dann+mcc'")
    bad = [c.name for c in classes if not c.composable]
    if bad:
        raise ValueError(f"{'+'.join(c.name for c in classes)}: {bad} cannot be terms of a composition (their step "
                         "is not one sum of loss terms: several phases, or no source data)")
    name = "+".join(c.name for c in classes)
    prefixes = _prefixes([c.name for c in classes])

    def __init__(self: Composed, **hparams: Any) -> None:
        per: Dict[str, Dict[str, Any]] = {p: {} for p in prefixes}
        weights: Dict[str, Weight] = {p: 1.0 for p in prefixes}
        for key, value in hparams.items():
            prefix, dot, inner = key.partition(".")
            if not dot or prefix not in per:
                raise TypeError(f"unknown hyper-parameter {key!r} of {name!r}: name it '<term>.<name>' with <term> "
                                f"one of {prefixes} (e.g. '{prefixes[-1]}.trade_off', '{prefixes[-1]}.weight')")
            if inner == "weight":
                weights[prefix] = value
            else:
                per[prefix][inner] = value
        terms = []
        for p, cls in zip(prefixes, classes):
            kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in check_hparams(cls, per[p]).items()}
            terms.append((cls(**kwargs), weights[p]))
        Composed.__init__(self, terms)

    attrs = {
        "name": name, "__init__": __init__, "__module__": Composed.__module__,
        "__doc__": f"The composition {name!r} of {', '.join(c.__name__ for c in classes)} (see :class:`Composed`).",
        "uses_target": any(c.uses_target for c in classes),
        "uses_target_labels": any(c.uses_target_labels for c in classes),
        "search_space": {f"{p}.{k}": hp for p, c in zip(prefixes, classes) for k, hp in c.search_space.items()},
    }
    return type("Composed_" + "_".join(p.replace("-", "_") for p in prefixes), (Composed,), attrs)
