"""Office-Caltech10 with 800-d SURF bag-of-words features (the GFK / JDA data package).

Data: Gong et al.'s GFK package, copied from AngryCarrot/JDA@12167daf ``data/`` (see
``shared/data/README.md``). Four domains, ten classes shared by Office-31 and Caltech-256.

Cite:
    B. Gong, Y. Shi, F. Sha, K. Grauman. Geodesic Flow Kernel for Unsupervised Domain
    Adaptation. CVPR 2012.
    K. Saenko, B. Kulis, M. Fritz, T. Darrell. Adapting Visual Category Models to New
    Domains. ECCV 2010.
    G. Griffin, A. Holub, P. Perona. Caltech-256 Object Category Dataset. Caltech Tech.
    Report, 2007.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from ._files import Domain, PathLike, _file_key, fetch

__all__ = ["load_office_caltech10_surf", "OFFICE_CALTECH10_CLASSES", "OFFICE_CALTECH10_DOMAINS"]

#: Class names; label ``k`` (0-based) is ``OFFICE_CALTECH10_CLASSES[k]`` (file label ``k+1``).
OFFICE_CALTECH10_CLASSES: Tuple[str, ...] = (
    "back_pack",
    "bike",
    "calculator",
    "headphones",
    "keyboard",
    "laptop_computer",
    "monitor",
    "mouse",
    "mug",
    "projector",
)

#: Canonical domain names, in the order amazon, webcam, dslr, caltech.
OFFICE_CALTECH10_DOMAINS: Tuple[str, ...] = ("amazon", "webcam", "dslr", "caltech")

_FILES = {
    "amazon": "office_caltech10_surf/amazon_SURF_L10.mat",
    "webcam": "office_caltech10_surf/webcam_SURF_L10.mat",
    "dslr": "office_caltech10_surf/dslr_SURF_L10.mat",
    "caltech": "office_caltech10_surf/Caltech10_SURF_L10.mat",
}
_ALIASES = {
    "amazon": "amazon", "a": "amazon",
    "webcam": "webcam", "w": "webcam",
    "dslr": "dslr", "d": "dslr",
    "caltech": "caltech", "c": "caltech", "caltech10": "caltech", "caltech256": "caltech",
}
#: One-letter code of each domain, as used in task names ("C->A").
DOMAIN_LETTERS = {"amazon": "A", "webcam": "W", "dslr": "D", "caltech": "C"}

_PREPROCESS = ("zscore", "l1", "sqrt", "sqrt-zscore", None)
_STD_FLOOR = 1e-12


def resolve_domain(domain: object, argname: str = "domain") -> str:
    """Return the canonical Office-Caltech10 domain name for ``domain`` (case-insensitive).

    Accepts ``amazon``/``A``, ``webcam``/``W``, ``dslr``/``D``, ``caltech``/``C``/``Caltech10``.

    Raises:
        ValueError: ``domain`` is not one of those (the message names ``argname``).
    """
    key = domain.strip().lower() if isinstance(domain, str) else None
    if key not in _ALIASES:
        raise ValueError(
            f"{argname} must be one of {list(OFFICE_CALTECH10_DOMAINS)} "
            f"(or the letters A, W, D, C), got {domain!r}"
        )
    return _ALIASES[key]


def _zscore_rows_l1(counts: np.ndarray, preprocess: Optional[str]) -> np.ndarray:
    x = counts.astype(np.float64)
    if preprocess is None:
        return x.astype(np.float32)
    sums = x.sum(axis=1, keepdims=True)
    x = x / np.where(sums > 0, sums, 1.0)
    if preprocess in ("sqrt", "sqrt-zscore"):
        x = np.sqrt(x)  # Hellinger map: each non-empty row now has unit L2 norm
    if preprocess in ("l1", "sqrt"):
        return x.astype(np.float32)
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True)  # population std (ddof=0), MATLAB zscore(X, 1)
    std = np.where(std > _STD_FLOOR, std, 1.0)
    return ((x - mean) / std).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _load_cached(key: Tuple[str, int, int], preprocess: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    import scipy.io

    path = key[0]
    mat = scipy.io.loadmat(path)
    try:
        fts, labels = mat["fts"], mat["labels"]
    except KeyError as exc:
        raise ValueError(f"{path} is not a GFK SURF .mat file: missing key {exc}") from None
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if fts.ndim != 2 or fts.shape[0] != labels.shape[0]:
        raise ValueError(f"{path}: fts shape {fts.shape} does not match {labels.shape[0]} labels")
    if labels.min() < 1 or labels.max() > len(OFFICE_CALTECH10_CLASSES):
        raise ValueError(f"{path}: labels must be 1..10, got {labels.min()}..{labels.max()}")
    x = _zscore_rows_l1(fts, preprocess)
    y = labels - 1
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_office_caltech10_surf(
    domain: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    preprocess: Optional[str] = "zscore",
) -> Domain:
    """Load one Office-Caltech10 domain with 800-d SURF bag-of-visual-words features.

    Args:
        domain: ``"amazon"``, ``"webcam"``, ``"dslr"`` or ``"caltech"`` (case-insensitive;
            the letters ``"A"``, ``"W"``, ``"D"``, ``"C"`` also work).
        root: data root; see :func:`adaptlib.datasets.data_root`.
        download: download the file if it is missing (from the pinned GitHub URL or
            ``$ADAPTLIB_MIRROR``).
        preprocess: ``"zscore"`` (default, the GFK/JDA preprocessing): divide each row by
            its sum (``fts ./ sum(fts, 2)``), then z-score each feature with the population
            std (``zscore(fts, 1)``); a feature whose std is 0 is only centred (divided by 1),
            so no NaN appears. Statistics are computed **per domain**, as in the GFK code.
            ``"l1"``: row-sum normalisation only. ``"sqrt"``: the square root of the
            row-normalised histogram (the Hellinger map, ``sqrt(fts ./ sum(fts, 2))``; every
            row then has unit L2 norm, and frequent words weigh less). ``"sqrt-zscore"``: that
            map, then the per-domain z-score of ``"zscore"``. ``None``: raw word counts.

    Returns:
        :class:`Domain` with ``x`` of shape ``(N, 800)`` float32, ``y`` of shape ``(N,)``
        int64 in ``0..9`` (file labels 1..10 minus 1), ``classes`` =
        :data:`OFFICE_CALTECH10_CLASSES`. ``N`` is 958 (amazon), 295 (webcam), 157 (dslr),
        1123 (caltech). Tensors are fresh copies (parsed arrays are cached per process).

    Raises:
        ValueError: unknown ``domain`` or ``preprocess``.
        DatasetNotFoundError: the file is missing and ``download`` is false.
        ChecksumError: the file's sha256 is wrong.

    Cite: Gong et al., CVPR 2012 (GFK); Saenko et al., ECCV 2010; Griffin et al., 2007.
    With the default preprocessing, 1-NN on the 12 classic tasks reproduces the NN numbers
    of Long et al., ICCV 2013 (JDA).
    """
    name = resolve_domain(domain)
    if preprocess not in _PREPROCESS:
        raise ValueError(f"preprocess must be one of {list(_PREPROCESS)}, got {preprocess!r}")
    path: Path = fetch(_FILES[name], root=root, download=download)
    x, y = _load_cached(_file_key(path), preprocess)
    return Domain(name=name, x=torch.tensor(x), y=torch.tensor(y), classes=OFFICE_CALTECH10_CLASSES)
