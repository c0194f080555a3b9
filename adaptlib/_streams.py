"""Infinite re-shuffling batch streams over in-memory tensors or any map-style Dataset.

Source and target sets usually differ in length; each stream cycles through its own data
independently (fresh permutation every epoch, incomplete last batch dropped, as with
``DataLoader(shuffle=True, drop_last=True)``), so training runs for exactly the requested
number of steps whatever the sizes.

Both streams draw each epoch's permutation from their own ``torch.Generator`` and never from
the global RNG, and both expose ``state_dict()`` / ``load_state_dict()`` (the generator state,
the current permutation, the position in it and the epoch count: tensors and ints only), so a
checkpointed run resumes with exactly the batches it would have drawn.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class _Epochs:
    """Permutation bookkeeping shared by the two streams: ``n`` rows, batches of ``batch_size``."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n = int(n)
        self.batch_size = min(int(batch_size), self.n)
        self.generator = generator
        self._perm: Optional[Tensor] = None  # CPU int64 permutation of the current epoch
        self._pos = 0
        self.epoch = 0
        #: ``(batch_size,)`` int64 row indices of the last batch :meth:`next` returned, into the data
        #: (on the data's device for tensors, on the CPU for a ``Dataset``); ``None`` before the first batch.
        self.last_index: Optional[Tensor] = None

    def _new_epoch(self) -> None:
        self._perm = torch.randperm(self.n, generator=self.generator)
        self._pos = 0
        self.epoch += 1

    def _epoch_done(self) -> bool:
        return self._perm is None or self._pos + self.batch_size > self.n

    def state_dict(self) -> Dict[str, Any]:
        """``generator`` (uint8 tensor), ``perm`` (int64 tensor, empty before the first batch), ``pos``, ``epoch``, ``n``, ``batch_size``."""
        return {"generator": self.generator.get_state(),
                "perm": self._perm.clone() if self._perm is not None else torch.empty(0, dtype=torch.int64),
                "pos": self._pos, "epoch": self.epoch, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Raises ``ValueError`` if the data size or batch size differ."""
        for key in ("n", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"the stream was saved with {key}={int(state[key])} but now has {key}="
                                 f"{getattr(self, key)}: resume with the same data and batch size")
        self.generator.set_state(state["generator"])
        perm = state["perm"]
        self._perm = perm.to(torch.int64).cpu().clone() if perm.numel() else None
        self._pos = int(state["pos"])
        self.epoch = int(state["epoch"])


class TensorStream(_Epochs):
    """Batches of rows drawn from tensors that share their first dimension ``N``.

    The tensors are moved to ``device`` once. The batch size is ``min(batch_size, N)`` so a
    labelled set smaller than the batch (three shots per class, say) still yields full
    batches of all of it, reshuffled.
    """

    def __init__(self, tensors: Sequence[Tensor], batch_size: int, generator: torch.Generator,
                 device: torch.device) -> None:
        self.tensors = [t.to(device) for t in tensors]
        super().__init__(int(self.tensors[0].shape[0]), batch_size, generator)
        self._device_perm: Optional[Tensor] = None

    def next(self) -> Tuple[Tensor, ...]:
        if self._epoch_done():
            self._new_epoch()
            self._device_perm = None
        if self._device_perm is None:
            self._device_perm = self._perm.to(self.tensors[0].device)  # type: ignore[union-attr]
        idx = self._device_perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        self.last_index = idx
        return tuple(t[idx] for t in self.tensors)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._device_perm = None


class _EpochBatchSampler(Sampler[List[int]]):
    """Yields the index batches of the stream's current permutation from its current position."""

    def __init__(self, stream: "DatasetStream") -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[List[int]]:
        s = self.stream
        perm, b = s._perm, s.batch_size
        return iter([perm[i:i + b].tolist() for i in range(s._pos, s.n - b + 1, b)])  # type: ignore[index]

    def __len__(self) -> int:
        s = self.stream
        return max(0, (s.n - s._pos) // s.batch_size)


class DatasetStream(_Epochs):
    """Batches from a map-style ``Dataset``, loaded by a ``DataLoader`` over the stream's permutation.

    ``keep`` is how many leading fields of each collated batch to return: 2 for
    ``(x, y)`` source data, 1 for target data (labels, if the dataset has any, are dropped
    here and never reach the method). ``check``, if given, is called with the kept CPU fields
    of every batch before they are moved to ``device`` (the trainer validates labels there).

    Resuming restores the permutation and the position in it; the loader is restarted at
    that position, so the same items come in the same batches. Items are loaded in the main
    process by default, where any randomness of the dataset's ``__getitem__`` (augmentation)
    comes from the global torch RNG, which the trainer's checkpoints restore. With
    ``num_workers > 0`` the workers are re-seeded at each epoch from the stream's seed and the
    epoch number, so indices stay identical on resume but a random augmentation drawn inside
    the workers after a mid-epoch resume may differ.
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator, device: torch.device,
                 keep: int, num_workers: int = 0,
                 check: Optional[Callable[[Tuple[Any, ...]], None]] = None) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the dataset is empty")
        super().__init__(n, batch_size, generator)
        self._seed = generator.initial_seed()
        self._loader_generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_sampler=_EpochBatchSampler(self), num_workers=num_workers,
                                 generator=self._loader_generator)
        self.device = device
        self.keep = keep
        self.check = check
        self._it: Optional[Iterator] = None

    def next(self) -> Tuple[Any, ...]:
        if self._epoch_done():
            self._new_epoch()
            self._it = None
        if self._it is None:  # (re)start the loader at the current position of the permutation
            # Worker seeds come from this private generator, never from the global RNG.
            self._loader_generator.manual_seed((self._seed * 1000003 + self.epoch) % (2 ** 63))
            self._it = iter(self.loader)
        item = next(self._it)
        self.last_index = self._perm[self._pos:self._pos + self.batch_size]  # type: ignore[index]
        self._pos += self.batch_size
        fields = item if isinstance(item, (tuple, list)) else (item,)
        if len(fields) < self.keep:
            raise ValueError(f"dataset items must have at least {self.keep} field(s) (x, y), got {len(fields)}")
        fields = tuple(fields[: self.keep])
        if self.check is not None:
            self.check(fields)
        return tuple(f.to(self.device, non_blocking=True) if isinstance(f, Tensor) else f for f in fields)

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._it = None
