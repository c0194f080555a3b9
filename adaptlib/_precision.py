"""Device checks and mixed precision for the :class:`~adaptlib.Trainer`.

:func:`check_device` turns a ``device`` argument into a ``torch.device`` and refuses one this
machine does not have (``"cuda"`` on a CPU-only build), so the error comes at set-up, naming the
device, instead of deep inside the first step.

:class:`MixedPrecision` is the Trainer's mixed-precision policy (Micikevicius et al., "Mixed
Precision Training", ICLR 2018): the weights, the optimizer state and the gradients stay in
float32; only the forward pass of a training step (the method's :meth:`loss_terms`) runs under
``torch.autocast``, which computes matrix products and convolutions in bfloat16 or float16.
With float16, whose range is small (max 65504, gradients below about 6e-8 flush to zero), the
loss is multiplied by a dynamic scale before ``backward`` (``torch.amp.GradScaler``); the
gradients are divided by it before clipping and the optimizer step, and a step whose
gradients hold inf or NaN is skipped while the scale is halved. bfloat16 has float32's
range, so it needs no scaling.

The alignment losses compute in float32 under autocast: MMD, JMMD, CORAL and the Sinkhorn
losses turn autocast off and cast their inputs to float32 (``adaptlib.losses._validate.
no_autocast``), because squared distances of half-precision features lose the differences
these losses measure; cross-entropy and binary cross-entropy are on autocast's float32 list.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, ContextManager, Dict, Optional, Union

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "check_device", "check_precision", "MixedPrecision"]

#: The precisions :class:`MixedPrecision` accepts, canonical spelling first.
PRECISIONS = ("32", "bf16", "fp16")
_ALIASES = {"32": "32", "fp32": "32", "float32": "32", "bf16": "bf16", "bfloat16": "bf16",
            "fp16": "fp16", "16": "fp16", "float16": "fp16"}
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: Any) -> str:
    """The canonical name (``"32"``, ``"bf16"`` or ``"fp16"``) of ``precision``.

    Accepts ``"32"``/``32``/``"fp32"``/``"float32"``, ``"bf16"``/``"bfloat16"`` and
    ``"fp16"``/``"16"``/``16``/``"float16"``.

    Raises:
        ValueError: any other value, naming ``precision`` and the accepted values.
    """
    key = str(precision).lower() if isinstance(precision, (str, int)) and not isinstance(precision, bool) else None
    if key not in _ALIASES:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return _ALIASES[key]


def _torch_build() -> str:
    cuda = torch.version.cuda
    return f"torch {torch.__version__}" + (f" with CUDA {cuda}" if cuda else ", built without CUDA")


def check_device(device: Union[str, torch.device, None]) -> torch.device:
    """``device`` as a ``torch.device``, checked to exist on this machine.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``, a ``torch.device``, or
            ``None`` for ``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``.

    Returns:
        The ``torch.device``. Device types this function does not know are passed through.

    Raises:
        ValueError: ``device`` is not a device string (naming it), or names an accelerator this
            machine or this torch build does not have (the message says which and what torch sees,
            e.g. "``device='cuda'`` is not available: torch 2.13.0+cpu, built without CUDA").
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>', 'mps' or a torch.device, "
                         f"got {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} is not available: {_torch_build()}, and "
                             f"torch.cuda.is_available() is False; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device={str(device)!r} is not available: torch.backends.mps.is_available() is "
                             f"False ({_torch_build()}); use device='cpu'")
    elif dev.type == "xpu":
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            raise ValueError(f"device={str(device)!r} is not available: torch.xpu.is_available() is False "
                             f"({_torch_build()}); use device='cpu'")
    return dev


class MixedPrecision:
    """The Trainer's precision policy for one device: autocast of the forward pass, loss scaling.

    ``"32"`` does nothing (every method is a no-op wrapper). ``"bf16"`` and ``"fp16"`` run the
    forward pass under ``torch.autocast(device.type, dtype)``; ``"fp16"`` also scales the loss
    with ``torch.amp.GradScaler(device.type)`` (initial scale 2**16, halved after a step with
    non-finite gradients, which is then skipped; doubled after 2000 good steps). Parameters,
    gradients and optimizer state stay in the model's dtype (float32).

    Args:
        precision: ``"32"``, ``"bf16"`` or ``"fp16"`` (aliases: :func:`check_precision`).
        device: the device the model trains on.

    Raises:
        ValueError: unknown ``precision``; or a precision the device cannot run, naming both:
            autocast not available for that device type, bfloat16 on a CUDA GPU without
            bfloat16 support, float16 on the CPU with a torch whose CPU autocast or
            ``GradScaler`` does not support it (older than 2.3).
    """

    def __init__(self, precision: Any, device: torch.device) -> None:
        self.precision = check_precision(precision)
        self.device_type = torch.device(device).type
        self.dtype: Optional[torch.dtype] = _DTYPES.get(self.precision)
        self.scaler: Optional[Any] = None
        if self.dtype is None:
            return
        where = f"precision={self.precision!r} on device {str(device)!r}"
        is_available = getattr(torch.amp, "is_autocast_available", None)
        if self.device_type not in ("cpu", "cuda") and (is_available is None or not is_available(self.device_type)):
            raise ValueError(f"{where}: torch.autocast does not support device type {self.device_type!r} in "
                             f"{_torch_build()}; use precision='32'")
        if self.precision == "bf16" and self.device_type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{where}: this GPU does not support bfloat16 (torch.cuda.is_bf16_supported() is "
                             f"False); use precision='fp16' or '32'")
        with warnings.catch_warnings(record=True) as caught:  # an unsupported dtype only warns and disables
            warnings.simplefilter("always")
            with torch.autocast(self.device_type, dtype=self.dtype):
                pass
        refused = [str(w.message) for w in caught if "autocast" in str(w.message).lower()]
        if refused:
            raise ValueError(f"{where}: torch.autocast refuses it in {_torch_build()} ({refused[0]}); "
                             f"use precision='bf16' or '32'")
        if self.precision == "fp16":
            try:
                self.scaler = torch.amp.GradScaler(self.device_type)
            except (AttributeError, TypeError, RuntimeError) as e:
                raise ValueError(f"{where}: no gradient scaler for this device in {_torch_build()} ({e}); "
                                 f"use precision='bf16' or '32'") from None

    @property
    def enabled(self) -> bool:
        """Whether autocast is used (``precision`` is not ``"32"``)."""
        return self.dtype is not None

    def autocast(self) -> ContextManager:
        """The context the forward pass of a training step runs in (a no-op for ``"32"``)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, with the loss multiplied by the current scale under ``"fp16"``."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients by the scale in place (``"fp16"``; a no-op otherwise). Call before
        clipping or reading gradient norms; :meth:`step` then does not divide them again."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under ``"fp16"`` skipped when the gradients hold inf or NaN, and the
        scale is updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        """The scaler's state (numbers only; empty without one), saved in a Trainer checkpoint."""
        return dict(self.scaler.state_dict()) if self.scaler is not None else {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (ignored without a scaler)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
