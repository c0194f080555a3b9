"""Domain-adaptation methods: each turns a batch into named loss terms for the Trainer.

``METHODS`` maps registry names to classes; :func:`get_method` builds one by name.
"""
from __future__ import annotations

from typing import Any, Dict, Type, Union

from .afn import AFN
from .base import Batch, LabeledBatch, Method, Progress, StepOutput, UnlabeledBatch, dann_warmup
from .bnm import BNM
from .cdan import CDAN, CDANE
from .coral import DeepCORAL
from .dan import DAN
from .dann import DANN
from .entropy_min import EntropyMinimization
from .finetune import FineTune
from .jan import JAN
from .jdot import DeepJDOT
from .mcc import MCC
from .mdd import MDD
from .search_space import Choice, HParam, LogUniform, ScaledGrid, Uniform
from .sinkhorn_align import SinkhornAlign
from .source_only import SourceOnly

METHODS: Dict[str, Type[Method]] = {
    cls.name: cls for cls in (SourceOnly, FineTune, DANN, DAN, DeepCORAL, DeepJDOT, SinkhornAlign,
                              CDAN, CDANE, MCC, BNM, AFN, EntropyMinimization, JAN, MDD)
}


def get_method(method: Union[str, Method], **hparams: Any) -> Method:
    """Return a :class:`Method`: ``method`` itself if it is one, else ``METHODS[method](**hparams)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), or hyper-parameters given
            together with an already-built method.
        TypeError: a hyper-parameter the method does not take.
    """
    if isinstance(method, Method):
        if hparams:
            raise ValueError("method is already built: pass its hyper-parameters to its constructor instead")
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be a Method or one of {sorted(METHODS)}, got {method!r}")
    try:
        return METHODS[method](**hparams)
    except TypeError as e:
        raise TypeError(f"bad hyper-parameter for method {method!r}: {e}") from None


__all__ = [
    "Batch", "LabeledBatch", "UnlabeledBatch", "Progress", "StepOutput", "Method", "dann_warmup",
    "SourceOnly", "FineTune", "DANN", "DAN", "DeepCORAL", "DeepJDOT", "SinkhornAlign", "CDAN", "CDANE", "MCC", "BNM",
    "AFN", "EntropyMinimization", "JAN", "MDD", "METHODS", "get_method",
    "HParam", "Uniform", "LogUniform", "Choice", "ScaledGrid",
]
