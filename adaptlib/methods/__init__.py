"""Domain-adaptation methods: each turns a batch into named loss terms for the Trainer.

``METHODS`` maps registry names to classes (and ``"a+b"`` names to compositions);
:func:`get_method` builds one by name, or a :class:`Composed` from a list.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Type, Union

from .afn import AFN
from .base import Batch, LabeledBatch, Method, Phase, Progress, StepOutput, UnlabeledBatch, dann_warmup
from .bnm import BNM
from .cdan import CDAN, CDANE
from .composed import Composed, composed_class
from .coral import DeepCORAL
from .dan import DAN
from .dann import DANN
from .entropy_min import EntropyMinimization
from .finetune import FineTune
from .jan import JAN
from .jdot import DeepJDOT
from .mcc import MCC
from .mcd import MCD
from .mdd import MDD
from .search_space import Choice, HParam, LogUniform, ScaledGrid, Uniform
from .shot import SHOT
from .sinkhorn_align import SinkhornAlign
from .source_only import SourceOnly


class MethodRegistry(dict):
    """Registry name -> method class; a name joining registered names with ``+`` (``"dann+mcc"``)
    resolves to the :class:`Composed` subclass of those methods (:func:`composed_class`, built on
    first use and cached), so ``"dann+mcc" in METHODS`` and ``METHODS["dann+mcc"]`` work wherever a
    name does (compare, studies). Iterating, ``len`` and ``keys`` give the registered names only.

    Raises (on lookup of a ``+`` name): ``ValueError`` when a part cannot be composed (MCD, SHOT).
    """

    def __init__(self, classes: Sequence[Type[Method]]) -> None:
        super().__init__({cls.name: cls for cls in classes})
        self._composed: Dict[str, Type[Method]] = {}

    def __missing__(self, name: str) -> Type[Method]:
        parts = name.split("+") if isinstance(name, str) else []
        if len(parts) < 2 or not all(dict.__contains__(self, p) for p in parts):
            raise KeyError(name)
        if name not in self._composed:
            self._composed[name] = composed_class([dict.__getitem__(self, p) for p in parts])
        return self._composed[name]

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (KeyError, ValueError, TypeError):
            return False
        return True

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self else default


METHODS: MethodRegistry = MethodRegistry(
    (SourceOnly, FineTune, DANN, DAN, DeepCORAL, DeepJDOT, SinkhornAlign, CDAN, CDANE, MCC, BNM, AFN,
     EntropyMinimization, JAN, MDD, MCD, SHOT))

MethodSpec = Union[str, Method, Sequence[Union[str, Method, Tuple[Union[str, Method], float]]]]


def get_method(method: MethodSpec, **hparams: Any) -> Method:
    """Return a :class:`Method`: ``method`` itself if it is one, ``METHODS[method](**hparams)`` for a name
    (``"dann"``; ``"dann+mcc"`` with hyper-parameters ``"mcc.trade_off"``...), or a :class:`Composed` of
    a list of methods, names and ``(method or name, weight)`` pairs (``["dann", ("mcc", 0.5)]``; with
    ``hparams`` only when every item is a name: the list then means the name ``"+".join(items)``).

    Raises:
        ValueError: unknown name (the message lists the known ones), hyper-parameters given
            together with an already-built method, or a term that cannot be composed.
        TypeError: a hyper-parameter the method does not take; a list item of another type.
    """
    if isinstance(method, Method):
        if hparams:
            raise ValueError("method is already built: pass its hyper-parameters to its constructor instead")
        return method
    if isinstance(method, (list, tuple)):
        if method and all(isinstance(m, str) for m in method):
            return get_method("+".join(method), **hparams) if len(method) > 1 else get_method(method[0], **hparams)
        if hparams:
            raise ValueError("hyper-parameters of a list of methods: build the terms with theirs "
                             "(e.g. [DANN(trade_off=0.5), (MCC(), 0.5)]) or use a list of names")
        return Composed([(get_method(m[0]), m[1]) if isinstance(m, tuple) else get_method(m) for m in method])
    if not isinstance(method, str) or method not in METHODS:
        if isinstance(method, str) and "+" in method:
            try:
                METHODS[method]  # known methods that cannot be composed: its own ValueError
            except KeyError:
                pass
        raise ValueError(f"method must be a Method or one of {sorted(METHODS)} (or names joined by '+', e.g. "
                         f"'dann+mcc'), got {method!r}")
    try:
        return METHODS[method](**hparams)
    except TypeError as e:
        raise TypeError(f"bad hyper-parameter for method {method!r}: {e}") from None


__all__ = [
    "Batch", "LabeledBatch", "UnlabeledBatch", "Progress", "StepOutput", "Phase", "Method", "dann_warmup",
    "SourceOnly", "FineTune", "DANN", "DAN", "DeepCORAL", "DeepJDOT", "SinkhornAlign", "CDAN", "CDANE", "MCC", "BNM",
    "AFN", "EntropyMinimization", "JAN", "MDD", "MCD", "SHOT", "Composed", "composed_class", "MethodRegistry",
    "METHODS", "get_method",
    "HParam", "Uniform", "LogUniform", "Choice", "ScaledGrid",
]
