"""Infinite re-shuffling batch streams over in-memory tensors or any map-style Dataset.

Source and target sets usually differ in length; each stream cycles through its own data
independently (fresh permutation every epoch, incomplete last batch dropped, as with
``DataLoader(shuffle=True, drop_last=True)``), so training runs for exactly the requested
number of steps whatever the sizes.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler


class TensorStream:
    """Batches of rows drawn from tensors that share their first dimension ``N``.

    The batch size is ``min(batch_size, N)`` so a labelled set smaller than the batch (three
    shots per class, say) still yields full batches of all of it, reshuffled.
    """

    def __init__(self, tensors: Sequence[Tensor], batch_size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        self.tensors = [t.to(device) for t in tensors]
        self.n = int(self.tensors[0].shape[0])
        self.batch_size = min(int(batch_size), self.n)
        self.generator = generator
        self._perm: Optional[Tensor] = None
        self._pos = 0
        self.epoch = 0

    def next(self) -> Tuple[Tensor, ...]:
        b = self.batch_size
        if self._perm is None or self._pos + b > self.n:
            self._perm = torch.randperm(self.n, generator=self.generator).to(self.tensors[0].device)
            self._pos = 0
            self.epoch += 1
        idx = self._perm[self._pos:self._pos + b]
        self._pos += b
        return tuple(t[idx] for t in self.tensors)


class DatasetStream:
    """Batches from a map-style ``Dataset`` through a ``DataLoader`` restarted at each epoch.

    ``keep`` is how many leading fields of each collated batch to return: 2 for
    ``(x, y)`` source data, 1 for target data (labels, if the dataset has any, are dropped
    here and never reach the method).
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                 keep: int, num_workers: int = 0) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        self.loader = DataLoader(dataset, batch_size=min(int(batch_size), n), drop_last=True,
                                 sampler=RandomSampler(dataset, generator=generator), num_workers=num_workers)
        self.device = device
        self.keep = keep
        self._it: Optional[Iterator] = None
        self.epoch = 0

    def next(self) -> Tuple[Tensor, ...]:
        if self._it is None:
            self._it = iter(self.loader)
            self.epoch += 1
        try:
            item = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            self.epoch += 1
            item = next(self._it)
        fields = item if isinstance(item, (tuple, list)) else (item,)
        if len(fields) < self.keep:
            raise ValueError(f"dataset items must have at least {self.keep} field(s) (x, y), got {len(fields)}")
        return tuple(f.to(self.device, non_blocking=True) for f in fields[: self.keep])
