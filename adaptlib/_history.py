"""What a run logs: the learning-rate schedule's factor, :class:`History` and the running sums of a logging interval.

Re-exported by :mod:`adaptlib.trainer` (``adaptlib.trainer.History``, ``adaptlib.trainer.lr_factor``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["History", "lr_factor"]


def lr_factor(schedule: str, fraction: float, *, gamma: float = 10.0, power: float = 0.75) -> float:
    """Multiplier of the base learning rate at training progress ``fraction`` in [0, 1].

    - ``"inv"``: ``(1 + gamma p)^(-power)``, the annealing of DANN (Ganin et al., JMLR 2016)
      also used by DAN, JAN and CDAN;
    - ``"cosine"``: ``(1 + cos(pi p)) / 2``;
    - ``"constant"``: 1.
    """
    if schedule == "inv":
        return (1.0 + gamma * fraction) ** (-power)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * fraction))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"lr_schedule must be one of ['inv', 'cosine', 'constant'], got {schedule!r}")


@dataclass
class History:
    """What a run logged.

    Attributes:
        train: one record every ``log_every`` steps: ``step`` (steps done), ``lr`` (base group),
            ``loss`` (total) and each named loss term and metric, averaged over the interval.
        eval: one record per evaluation: ``step`` and ``<set>/accuracy`` for each eval set.
    """

    train: List[Dict[str, float]] = field(default_factory=list)
    eval: List[Dict[str, float]] = field(default_factory=list)

    def final_eval(self) -> Dict[str, float]:
        """The last evaluation record (``{}`` when nothing was evaluated)."""
        return dict(self.eval[-1]) if self.eval else {}



class _LogSums:
    """Running sums of the logged scalars over the current logging interval.

    One ``stack`` and one ``add`` per step whatever the number of loss terms and metrics
    (the per-name adds this replaces were a measurable share of the Trainer's overhead).
    """

    def __init__(self) -> None:
        self.names: Tuple[str, ...] = ()
        self.row: Optional[Tensor] = None  # sums of the tensor-valued terms, in the order of names
        self.numbers: Dict[str, float] = {}  # sums of the metrics given as plain numbers

    def state_dict(self) -> Dict[str, Any]:
        """Plain data for a checkpoint (loadable with ``weights_only=True``)."""
        return {"names": list(self.names), "row": None if self.row is None else self.row.detach().cpu(),
                "numbers": dict(self.numbers)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> "_LogSums":
        out = cls()
        out.names = tuple(state["names"])
        out.row = None if state["row"] is None else state["row"].to(device)
        out.numbers = {k: float(v) for k, v in state["numbers"].items()}
        return out

    def add(self, names: Tuple[str, ...], row: Tensor) -> None:
        if self.row is not None and names == self.names:
            self.row = self.row + row
            return
        merged = self.as_dict()  # the set of names changed (e.g. FineTune's phase switch)
        for name, value in zip(names, row.unbind()):
            merged[name] = merged[name] + value if name in merged else value
        self.names, self.row = tuple(merged), torch.stack(list(merged.values()))

    def add_numbers(self, numbers: Mapping[str, float]) -> None:
        for name, value in numbers.items():
            self.numbers[name] = self.numbers.get(name, 0.0) + value

    def as_dict(self) -> Dict[str, Tensor]:
        out = dict(zip(self.names, self.row.unbind())) if self.row is not None else {}
        for name, value in self.numbers.items():
            out[name] = torch.tensor(value, dtype=torch.float64)
        return out
