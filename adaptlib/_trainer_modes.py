"""Modules' modes during training: recording and restoring each module's ``training`` flag,
frozen modules, and the hooks that let batch-norm layers in train mode take one-row batches.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Modes = List[Tuple[nn.Module, bool]]


def _record_modes(*roots: nn.Module) -> Modes:
    """Every submodule of ``roots`` with its ``training`` flag (the user's modes, to restore later)."""
    return [(m, m.training) for root in roots for m in root.modules()]


def _restore_modes(modes: Modes, frozen: Tuple[nn.Module, ...] = ()) -> None:
    """Give each module its recorded mode, then put the ``frozen`` ones (and their submodules) in eval mode."""
    for module, training in modes:
        module.training = training
    for module in frozen:
        module.eval()


class Frozen:
    """The modules frozen now (a method's :meth:`frozen_modules` plus the current phase's), over ``modes``.

    :meth:`set` changes the modes only when the frozen set changes (once per phase switch for a
    multi-phase step, rarely otherwise); :attr:`params` are the parameters whose gradients the
    Trainer drops before the optimizer step; :meth:`restore` gives every module its recorded mode
    with the frozen ones in eval mode (after an evaluation or a callback).
    """

    def __init__(self, modes: Modes) -> None:
        self.modes = modes
        self.modules: Tuple[nn.Module, ...] = ()
        self.params: List[Tensor] = []

    def set(self, modules: Sequence[nn.Module]) -> None:
        modules = tuple(modules)
        if len(modules) != len(self.modules) or any(a is not b for a, b in zip(modules, self.modules)):
            self.modules = modules
            self.params = [p for m in modules for p in m.parameters()]
            _restore_modes(self.modes, modules)

    def restore(self) -> None:
        _restore_modes(self.modes, self.modules)


def _one_row_pre_hook(module: nn.Module, args: Tuple[Any, ...]) -> None:
    x = args[0] if args else None
    if module.training and isinstance(x, Tensor) and x.dim() >= 2 and x.numel() == x.shape[1]:
        module.training = False  # one value per channel: normalise with the running statistics
        module._adaptlib_one_row = True  # type: ignore[attr-defined]


def _one_row_post_hook(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
    if getattr(module, "_adaptlib_one_row", False):
        module.training = True
        module._adaptlib_one_row = False  # type: ignore[attr-defined]


def _one_row_hooks(modes: Modes) -> List[Any]:
    """Hooks on every batch-norm layer in train mode in ``modes``: one-row inputs are normalised with
    the running statistics (as in eval mode) and do not update them. Remove them when done."""
    return [h for m, training in modes if isinstance(m, _BatchNorm) and training
            for h in (m.register_forward_pre_hook(_one_row_pre_hook),
                      m.register_forward_hook(_one_row_post_hook))]
