"""Computation paths of the alignment losses.

The losses in :mod:`adaptlib.losses` (``mmd``, ``jmmd``, ``sinkhorn``,
``sinkhorn_divergence``) compute the same quantity along one of three paths:

* ``"dense"``: the whole ``(N, M)`` kernel or cost matrix is formed with one matmul
  (fastest for small batches on the CPU; memory ``O(N M)``);
* ``"tiled"``: blocks of rows and columns in plain torch, never holding more than one block
  of the matrix, forward and backward (memory ``O((N + M) D + block^2)``; any device);
* ``"triton"``: fused Triton kernels (CUDA; on the CPU only under ``TRITON_INTERPRET=1``,
  Triton's interpreter, which is how the test suite runs them).

``path="auto"`` (the default of every loss) picks Triton on a CUDA device when Triton is
installed, the tiled path when the dense matrices would exceed :data:`DENSE_MAX_BYTES`,
and the dense path otherwise. An explicit ``path="dense"`` whose matrices would not fit in
the device's memory (:func:`dense_limit_bytes`) is refused before anything is allocated,
with an error that suggests ``path="tiled"``.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

__all__ = ["PATHS", "DENSE_MAX_BYTES", "DENSE_LIMIT_BYTES", "check_path", "dense_limit_bytes",
           "triton_available", "resolve_path"]

PATHS: Tuple[str, ...] = ("auto", "dense", "tiled", "triton")

#: Above this many bytes of dense intermediate matrices, ``path="auto"`` uses the tiled path.
DENSE_MAX_BYTES: int = 1 << 30

#: Memory budget of an explicit ``path="dense"``, in bytes; ``None`` (default): the device's
#: memory (see :func:`dense_limit_bytes`). Set it to refuse smaller dense calls too.
DENSE_LIMIT_BYTES: Optional[int] = None


def dense_limit_bytes(device: torch.device) -> int:
    """Bytes of dense intermediate matrices that ``path="dense"`` accepts on ``device``.

    :data:`DENSE_LIMIT_BYTES` when set; else the device's total memory: the GPU's
    (``torch.cuda.get_device_properties``) on CUDA, the machine's physical memory elsewhere
    (``os.sysconf``; unlimited where the platform does not report it). A call above it could
    only fail in the allocator (or swap for minutes), so it is refused up front.
    """
    if DENSE_LIMIT_BYTES is not None:
        return int(DENSE_LIMIT_BYTES)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 62


def check_path(path: object, name: str = "path") -> str:
    """Return ``path`` if it is one of :data:`PATHS`, else raise ``ValueError`` naming ``name``."""
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"{name} must be one of {list(PATHS)}, got {path!r}")
    return path


def triton_available(device: torch.device) -> bool:
    """Whether the Triton path can run on ``device``.

    True on a CUDA device when ``triton`` imports, and on the CPU only when
    ``TRITON_INTERPRET=1`` was set before ``adaptlib`` was imported (the interpreter is slow
    and meant for tests).
    """
    if device.type not in ("cuda", "cpu"):
        return False
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_path(path: str, device: torch.device, dense_bytes: int, name: str = "path") -> str:
    """The concrete path (``"dense"``, ``"tiled"`` or ``"triton"``) for a loss call.

    Args:
        path: the user's choice, one of :data:`PATHS`.
        device: device of the inputs.
        dense_bytes: bytes the dense path would allocate for its matrices.
        name: argument name used in error messages.

    Raises:
        ValueError: unknown ``path``; ``"triton"`` where Triton cannot run (not installed,
            or CPU tensors without ``TRITON_INTERPRET=1``); ``"dense"`` when ``dense_bytes``
            exceeds :func:`dense_limit_bytes` (the message gives both sizes and suggests
            ``path="tiled"``).
    """
    check_path(path, name)
    if path == "triton":
        if not triton_available(device):
            raise ValueError(
                f"{name}='triton' needs the triton package and a CUDA device (on the CPU only under "
                f"TRITON_INTERPRET=1); inputs are on {device}"
            )
        return "triton"
    if path == "dense":
        limit = dense_limit_bytes(device)
        if dense_bytes > limit:
            raise ValueError(
                f"{name}='dense' would allocate about {dense_bytes / 2**30:.1f} GiB of dense matrices, "
                f"above the {limit / 2**30:.1f} GiB budget of {device.type} (adaptlib.kernels.DENSE_LIMIT_BYTES); "
                f"use {name}='tiled' (memory O((N + M) D + block^2)) or {name}='auto'"
            )
        return path
    if path != "auto":
        return path
    if device.type == "cuda" and triton_available(device):
        return "triton"
    return "tiled" if dense_bytes > DENSE_MAX_BYTES else "dense"
