"""Amazon reviews sentiment data (Blitzer et al., 2007) in the 5000-d representation of
Chen et al. (mSDA, ICML 2012), as distributed with the DANN code.

Data: ``{books,dvd,electronics,kitchen}_{train,test}.svmlight`` from
GRAAL-Research/domain_adversarial_neural_network@74eec5e0 ``data/`` (see
``shared/data/README.md``). Each review is a vector of counts of the 5000 most frequent
unigrams and bigrams (zero-based feature indices); labels are -1 (negative) / +1 (positive).

Cite:
    J. Blitzer, M. Dredze, F. Pereira. Biographies, Bollywood, Boom-boxes and Blenders:
    Domain Adaptation for Sentiment Classification. ACL 2007.
    M. Chen, Z. Xu, K. Weinberger, F. Sha. Marginalized Denoising Autoencoders for Domain
    Adaptation. ICML 2012.
    Y. Ganin, E. Ustinova, H. Ajakan, P. Germain, H. Larochelle, F. Laviolette, M. Marchand,
    V. Lempitsky. Domain-Adversarial Training of Neural Networks. JMLR 17(59), 2016.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
import torch

from ._files import Domain, PathLike, _file_key, fetch

__all__ = ["load_amazon_reviews", "AMAZON_CLASSES", "AMAZON_DOMAINS", "AMAZON_NUM_FEATURES"]

#: Class names; label 0 is a negative review (file label -1), 1 a positive one (+1).
AMAZON_CLASSES: Tuple[str, ...] = ("negative", "positive")
#: Canonical domain names.
AMAZON_DOMAINS: Tuple[str, ...] = ("books", "dvd", "electronics", "kitchen")
#: Feature dimension (5000 most frequent unigrams/bigrams).
AMAZON_NUM_FEATURES = 5000

_ALIASES = {
    "books": "books", "b": "books",
    "dvd": "dvd", "d": "dvd",
    "electronics": "electronics", "e": "electronics",
    "kitchen": "kitchen", "k": "kitchen",
}
#: One-letter code of each domain, as used in task names ("B->D").
DOMAIN_LETTERS = {"books": "B", "dvd": "D", "electronics": "E", "kitchen": "K"}
_SPLITS = ("train", "test")
_TRANSFORMS = (None, "log1p", "binary")


def resolve_domain(domain: object, argname: str = "domain") -> str:
    """Return the canonical Amazon domain name (case-insensitive; ``B``/``D``/``E``/``K`` work).

    Raises:
        ValueError: unknown ``domain`` (the message names ``argname``).
    """
    key = domain.strip().lower() if isinstance(domain, str) else None
    if key not in _ALIASES:
        raise ValueError(
            f"{argname} must be one of {list(AMAZON_DOMAINS)} (or the letters B, D, E, K), got {domain!r}"
        )
    return _ALIASES[key]


@functools.lru_cache(maxsize=16)
def _load_cached(key: Tuple[str, int, int]):
    from sklearn.datasets import load_svmlight_file

    path = key[0]
    x, y = load_svmlight_file(path, n_features=AMAZON_NUM_FEATURES, zero_based=True, dtype=np.float32)
    x = x.tocsr()
    x.sort_indices()
    labels = np.unique(y)
    if not set(labels.tolist()) <= {-1.0, 1.0}:
        raise ValueError(f"{path}: labels must be -1 or +1, got {labels.tolist()}")
    y = (y > 0).astype(np.int64)
    for a in (x.data, x.indices, x.indptr, y):
        a.flags.writeable = False
    return x, y


def load_amazon_reviews(
    domain: str,
    split: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    transform: Optional[str] = None,
) -> Domain:
    """Load one split of one Amazon reviews domain (DANN / mSDA 5000-d version).

    Args:
        domain: ``"books"``, ``"dvd"``, ``"electronics"`` or ``"kitchen"``
            (case-insensitive; ``"B"``, ``"D"``, ``"E"``, ``"K"`` work).
        split: ``"train"`` (2000 reviews, balanced) or ``"test"`` (3586-5945 reviews).
        root: data root; see :func:`adaptlib.datasets.data_root`.
        download: download the file if it is missing.
        transform: applied elementwise to the word counts.
            ``None`` (default): raw counts. This is what the DANN paper (JMLR 2016,
            Sec. 5.1) uses: it takes Chen et al.'s representation as is, and its reference
            code (``experiments_amazon.py``) densifies the svmlight matrix and feeds it to
            the network unchanged, so results stay comparable with published numbers. ``"log1p"``: ``log(1 + count)``, which
            compresses the heavy tail (counts reach 61, row sums 1860) and can help
            distance-based losses. ``"binary"``: ``count > 0`` as 0/1.
            (In a quick source-only check with logistic regression and a 1-hidden-layer
            MLP on four tasks the three choices were within about 1 point of each other.)

    Returns:
        :class:`Domain` with dense ``x`` of shape ``(N, 5000)`` float32, ``y`` of shape
        ``(N,)`` int64 (0 = negative, file label -1; 1 = positive, +1), ``classes`` =
        ``("negative", "positive")``. Parsed sparse matrices are cached per process; the
        dense tensor is built fresh on every call.

    Raises:
        ValueError: unknown ``domain``, ``split`` or ``transform``.
        DatasetNotFoundError: the file is missing and ``download`` is false.
        ChecksumError: the file's sha256 is wrong.

    Cite: Blitzer et al., ACL 2007; Chen et al., ICML 2012; Ganin et al., JMLR 2016.
    """
    name = resolve_domain(domain)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {list(_TRANSFORMS)}, got {transform!r}")
    path = fetch(f"amazon_reviews_dann/{name}_{split}.svmlight", root=root, download=download)
    x_sparse, y = _load_cached(_file_key(path))
    x = x_sparse.toarray()  # fresh float32 array
    if transform == "log1p":
        np.log1p(x, out=x)
    elif transform == "binary":
        x = (x > 0).astype(np.float32)
    return Domain(name=name, x=torch.from_numpy(x), y=torch.tensor(y), classes=AMAZON_CLASSES)
