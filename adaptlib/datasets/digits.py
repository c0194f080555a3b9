"""MNIST-USPS digit pair as used by the JDA/TCA papers (16x16 grey images, 256-d).

Data: ``MNIST_vs_USPS.mat`` / ``USPS_vs_MNIST.mat`` from AngryCarrot/JDA@12167daf ``data/``
(see ``shared/data/README.md``): 2000 MNIST and 1800 USPS images rescaled to 16x16, values
in [0, 1]. The two files hold the same arrays with source and target swapped.

Cite:
    M. Long, J. Wang, G. Ding, J. Sun, P. S. Yu. Transfer Feature Learning with Joint
    Distribution Adaptation. ICCV 2013.
    J. J. Hull. A database for handwritten text recognition research. IEEE TPAMI 16(5), 1994.
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to document
    recognition. Proc. IEEE 86(11), 1998.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
import torch

from ._files import Domain, PathLike, _file_key, fetch

__all__ = ["load_mnist_usps_jda", "DIGIT_CLASSES", "MNIST_USPS_TASKS"]

#: Class names; label ``k`` is the digit ``k`` (file label ``k+1``).
DIGIT_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))

#: Canonical task names (lower-case, as accepted by :func:`load_mnist_usps_jda`).
MNIST_USPS_TASKS: Tuple[str, ...] = ("mnist->usps", "usps->mnist")

_FILES = {
    "mnist->usps": ("mnist_usps_jda/MNIST_vs_USPS.mat", "mnist", "usps"),
    "usps->mnist": ("mnist_usps_jda/USPS_vs_MNIST.mat", "usps", "mnist"),
}
_DOMAIN_ALIASES = {"mnist": "mnist", "m": "mnist", "usps": "usps", "u": "usps"}
_NORMALIZE = ("l2", None)


def resolve_task(task: object, argname: str = "task") -> str:
    """Return the canonical task name (``"mnist->usps"`` or ``"usps->mnist"``) for ``task``.

    Case-insensitive; spaces are ignored, ``→`` is accepted for ``->`` and ``M``/``U`` for
    ``mnist``/``usps``.

    Raises:
        ValueError: ``task`` is not one of the two tasks (the message names ``argname``).
    """
    if isinstance(task, str):
        parts = task.replace("→", "->").replace(" ", "").lower().split("->")
        if len(parts) == 2 and all(p in _DOMAIN_ALIASES for p in parts):
            key = f"{_DOMAIN_ALIASES[parts[0]]}->{_DOMAIN_ALIASES[parts[1]]}"
            if key in _FILES:
                return key
    raise ValueError(f"{argname} must be one of {list(MNIST_USPS_TASKS)}, got {task!r}")


def _rows(mat: dict, xkey: str, ykey: str, path: str, normalize: Optional[str]):
    try:
        x, y = np.asarray(mat[xkey], dtype=np.float64), np.asarray(mat[ykey]).reshape(-1)
    except KeyError as exc:
        raise ValueError(f"{path} is not a JDA MNIST/USPS .mat file: missing key {exc}") from None
    # Stored (256, n), one column per image (MATLAB convention): transpose to rows.
    if x.ndim != 2 or x.shape[0] != 256 or x.shape[1] != y.shape[0]:
        raise ValueError(f"{path}: {xkey} has shape {x.shape}, expected (256, {y.shape[0]})")
    x = np.ascontiguousarray(x.T)
    if normalize == "l2":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    y = y.astype(np.int64)
    if y.min() < 1 or y.max() > 10:
        raise ValueError(f"{path}: {ykey} must be 1..10, got {y.min()}..{y.max()}")
    x, y = x.astype(np.float32), y - 1
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


@functools.lru_cache(maxsize=4)
def _load_cached(key: Tuple[str, int, int], normalize: Optional[str]):
    import scipy.io

    path = key[0]
    mat = scipy.io.loadmat(path)
    return _rows(mat, "X_src", "Y_src", path, normalize), _rows(mat, "X_tar", "Y_tar", path, normalize)


def load_mnist_usps_jda(
    task: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    normalize: Optional[str] = "l2",
) -> Tuple[Domain, Domain]:
    """Load the JDA MNIST-USPS pair for one transfer direction.

    Args:
        task: ``"mnist->usps"`` or ``"usps->mnist"`` (case-insensitive; ``"M->U"`` works).
        root: data root; see :func:`adaptlib.datasets.data_root`.
        download: download the file if it is missing.
        normalize: ``"l2"`` (default): divide each sample (row) by its Euclidean norm (an
            all-zero row stays zero). This is the preprocessing under which 1-NN gives
            65.94 (MNIST->USPS) and 44.70 (USPS->MNIST), the NN numbers of the JDA paper.
            ``None``: the stored grey values in [0, 1] (1-NN then gives 64.44 / 35.85).

    Returns:
        ``(source, target)`` :class:`Domain` s. ``x`` is ``(N, 256)`` float32, one 16x16
        image per row (the stored ``(256, N)`` column-major matrix transposed); ``y`` is
        ``(N,)`` int64 with ``y == digit`` (file labels 1..10 minus 1); ``classes`` are
        ``"0"``..``"9"``. MNIST has N=2000, USPS N=1800. Fresh tensor copies on every call.

    Raises:
        ValueError: unknown ``task`` or ``normalize``.
        DatasetNotFoundError: the file is missing and ``download`` is false.
        ChecksumError: the file's sha256 is wrong.

    Cite: Long et al., ICCV 2013 (JDA); Hull, TPAMI 1994 (USPS); LeCun et al., 1998 (MNIST).
    """
    key = resolve_task(task)
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {list(_NORMALIZE)}, got {normalize!r}")
    relpath, src_name, tgt_name = _FILES[key]
    path = fetch(relpath, root=root, download=download)
    (xs, ys), (xt, yt) = _load_cached(_file_key(path), normalize)
    source = Domain(src_name, torch.tensor(xs), torch.tensor(ys), DIGIT_CLASSES)
    target = Domain(tgt_name, torch.tensor(xt), torch.tensor(yt), DIGIT_CLASSES)
    return source, target
