"""MNIST and USPS as images, sampled under the 2,000 / 1,800 protocol (Long et al. 2013; Tzeng et al. 2017).

Data (see ``shared/data/README.md``):

* ``mnist/t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz``: the official MNIST
  **test** split, 10,000 28x28 uint8 images (the training split is not available here).
* ``usps/usps.h5``: the full USPS corpus, ``train`` 7,291 and ``test`` 2,007 16x16 images,
  float32 in [0, 1] (ink bright on a dark background, like MNIST).

Protocol (the one of JDA, Long et al., ICCV 2013, used by ADDA, Tzeng et al., CVPR 2017, for
its MNIST<->USPS rows): 2,000 MNIST images and 1,800 USPS images, drawn at random once; every
image is a 28x28 grey image (USPS upsampled bilinearly from 16x16, as ADDA resizes USPS to
28x28). A task trains on all labelled source images and all unlabelled target images and
reports accuracy on the same target images (transductive, as JDA).

How the sample is drawn (:func:`sample_indices`): per class, proportionally to the class counts
of the pool (largest-remainder rounding), then uniformly at random inside each class, with a
``torch.Generator`` seeded by ``data_seed``. The sample's class distribution is therefore the
pool's (up to rounding) for every seed, and only *which* images are drawn depends on the seed.
The pools: the MNIST test split (JDA and ADDA draw from the 60,000 training images, which are
not available; the test images come from the same writers' population) and the USPS
``train`` split (as JDA: "from its 7291 training images"). ``data_seed`` is separate from the
training seed: every training seed of a comparison sees the same fixed sample (``data_seed=0``).

Cite:
    M. Long, J. Wang, G. Ding, J. Sun, P. S. Yu. Transfer Feature Learning with Joint
    Distribution Adaptation. ICCV 2013.
    E. Tzeng, J. Hoffman, K. Saenko, T. Darrell. Adversarial Discriminative Domain
    Adaptation. CVPR 2017.
    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Proc. IEEE 86(11), 1998 (MNIST).
    J. J. Hull. IEEE TPAMI 16(5), 1994 (USPS).
"""
from __future__ import annotations

import functools
import gzip
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ._files import Domain, PathLike, _file_key, fetch

__all__ = ["load_digit_images", "sample_indices", "DIGIT_IMAGE_DOMAINS", "DIGIT_IMAGE_SIZES"]

#: Domain name -> number of images drawn under the protocol.
DIGIT_IMAGE_DOMAINS: Dict[str, int] = {"mnist": 2000, "usps": 1800}

#: Native side (pixels) of each domain's images.
DIGIT_IMAGE_SIZES: Dict[str, int] = {"mnist": 28, "usps": 16}

_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))
_ALIASES = {"mnist": "mnist", "m": "mnist", "usps": "usps", "u": "usps"}
_MNIST_FILES = ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
_USPS_FILE = "usps/usps.h5"


def resolve_domain(domain: object, argname: str = "domain") -> str:
    """``"mnist"`` or ``"usps"`` for ``domain`` (case-insensitive; ``"M"``/``"U"`` accepted).

    Raises:
        ValueError: any other value (the message names ``argname``).
    """
    key = _ALIASES.get(domain.strip().lower()) if isinstance(domain, str) else None
    if key is None:
        raise ValueError(f"{argname} must be one of {list(DIGIT_IMAGE_DOMAINS)} (or 'M'/'U'), got {domain!r}")
    return key


def _read_idx(path, magic: int, ndim: int) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    if int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{path} is not an IDX file with magic {magic:#x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@functools.lru_cache(maxsize=4)
def _pool_cached(domain: str, keys: Tuple[Tuple[str, int, int], ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The whole pool of a domain: ``(images (N, s, s) float32 in [0, 1], labels (N,) int64)``.

    Cached per process; callers index it (which copies) and never change it in place.
    """
    if domain == "mnist":
        x = _read_idx(keys[0][0], 0x00000803, 3).astype(np.float32) / 255.0
        y = _read_idx(keys[1][0], 0x00000801, 1).astype(np.int64)
    else:
        try:
            import h5py
        except ImportError as exc:  # pragma: no cover - h5py is a dependency
            raise ImportError("reading usps.h5 needs h5py: pip install h5py") from exc
        with h5py.File(keys[0][0], "r") as f:
            x = np.asarray(f["train/data"][()], dtype=np.float32).reshape(-1, 16, 16)
            y = np.asarray(f["train/target"][()], dtype=np.int64)
    if x.shape[0] != y.shape[0] or y.min() < 0 or y.max() > 9:
        raise ValueError(f"{domain}: {x.shape[0]} images and {y.shape[0]} labels in 0..9 expected")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def sample_indices(labels: torch.Tensor, n: int, data_seed: int) -> torch.Tensor:
    """Indices of a class-stratified random sample of ``n`` items of ``labels`` ``(N,)``, sorted.

    Class ``c`` gets ``n * N_c / N`` items rounded by largest remainder (ties to the smaller
    class index), so the counts sum to ``n`` and follow the pool's class distribution for
    every seed; inside a class the items are drawn uniformly without replacement with a
    ``torch.Generator`` seeded by ``data_seed``.

    Raises:
        ValueError: ``n`` is not in ``1..N`` or ``data_seed`` is not a non-negative int.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= labels.numel():
        raise ValueError(f"n must be an int in 1..{labels.numel()}, got {n!r}")
    if not isinstance(data_seed, int) or isinstance(data_seed, bool) or data_seed < 0:
        raise ValueError(f"data_seed must be a non-negative int, got {data_seed!r}")
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * n / labels.numel()
    take = quota.floor().long()
    remainder = quota - take
    order = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), i))
    for i in order[: n - int(take.sum())]:
        take[i] += 1
    gen = torch.Generator().manual_seed(data_seed)
    chosen = []
    for c, k in zip(classes, take):
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[: int(k)]])
    return torch.cat(chosen).sort().values


def load_digit_images(
    domain: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    size: int = 28,
    n: Optional[int] = None,
    data_seed: int = 0,
) -> Domain:
    """Load the protocol's sample of one digit domain as flattened grey images.

    Args:
        domain: ``"mnist"`` or ``"usps"`` (``"M"``/``"U"`` work).
        root: data root; see :func:`adaptlib.datasets.data_root`.
        download: download missing files.
        size: side of the returned images in pixels (default 28, the protocol's); images are
            resized with bilinear interpolation (``align_corners=False``; antialiased when
            downsampling), so values stay in [0, 1].
        n: number of images drawn (default: 2000 for MNIST, 1800 for USPS); ``n`` equal to
            the pool size (10000 / 7291) returns the whole pool.
        data_seed: seed of the draw (:func:`sample_indices`), separate from any training seed.

    Returns:
        :class:`Domain` with ``x`` ``(n, size * size)`` float32 in [0, 1] (row-major images:
        ``x.view(-1, 1, size, size)``), ``y`` ``(n,)`` int64 digits 0..9, in pool order;
        fresh tensors on every call.

    Raises:
        ValueError: unknown ``domain``; ``size`` not an int in 8..256; bad ``n`` or ``data_seed``.
        DatasetNotFoundError, ChecksumError: as :func:`adaptlib.datasets.fetch`.
    """
    name = resolve_domain(domain)
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 256:
        raise ValueError(f"size must be an int in 8..256 (pixels), got {size!r}")
    files = _MNIST_FILES if name == "mnist" else (_USPS_FILE,)
    keys = tuple(_file_key(fetch(rel, root=root, download=download)) for rel in files)
    x_all, labels = _pool_cached(name, keys)
    idx = sample_indices(labels, DIGIT_IMAGE_DOMAINS[name] if n is None else n, data_seed)
    x = x_all[idx].unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < x.shape[-1]).clamp_(0.0, 1.0)
    return Domain(name, x.reshape(len(idx), size * size).contiguous(), labels[idx], _CLASSES)
