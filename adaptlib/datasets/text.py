"""Text domains and the on-disk cache of their sentence embeddings.

A frozen encoder maps each text to the same vector on every run, so the embeddings of a domain
are computed once and stored; every later run (every method, seed and worker process) reads
them in milliseconds. :func:`cached_text_embeddings` does that for the all-MiniLM-L6-v2
encoder (:class:`adaptlib.backbones.SentenceEncoder`).

The cache (see :func:`embedding_cache_dir`): one file per (encoder, texts) pair,
``<cache>/all-MiniLM-L6-v2/<tag>-<key>.pt``, where ``key`` is the first 24 hex digits of the
sha256 of

* the encoder: its name, the sha256 of its weights file and of its ``tokenizer.json``, the
  truncation length ``max_length``, the pooling (``mean``) and whether it L2-normalises;
* the texts: the sha256 of the texts in order (each UTF-8 encoded, prefixed by its length).

So a changed review, order, length limit or weights file gives a new key (a miss), never a
stale hit. A file holds ``{"embeddings": (N, D) float32, "texts_sha256", "encoder"}`` and is
read with ``torch.load(weights_only=True)``; one whose contents do not match its key (a
truncated write, a hand-copied file) is recomputed and replaced, with a warning. Files are
written to a temporary name and renamed, so concurrent processes never read half a file.
Embeddings of a randomly initialised encoder (``pretrained=False``) are never cached.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = ["TextDomain", "embedding_cache_dir", "cache_subdir", "cached_text_embeddings", "texts_sha256", "CACHE_ENV"]

logger = logging.getLogger("adaptlib.datasets")

#: Environment variable naming the cache folder (embeddings go to ``$ADAPTLIB_CACHE/embeddings``).
CACHE_ENV = "ADAPTLIB_CACHE"


@dataclass(frozen=True, eq=False)
class TextDomain:
    """One labelled domain of raw texts.

    Attributes:
        name: domain name, e.g. ``"books"``.
        texts: the ``N`` texts, a tuple of str.
        y: labels, shape ``(N,)``, dtype ``torch.int64``, values in ``0..C-1``.
        classes: the ``C`` class names.

    Raises:
        TypeError / ValueError: on construction, when ``texts`` is not a tuple of str, ``y`` is
            not an int64 ``(N,)`` tensor of labels in ``0..C-1``, or the lengths differ.
    """

    name: str
    texts: Tuple[str, ...]
    y: torch.Tensor
    classes: Tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.texts, tuple) or not all(isinstance(t, str) for t in self.texts):
            raise TypeError("TextDomain texts must be a tuple of str")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise TypeError(f"TextDomain y must be an int64 tensor of shape (N,), got {getattr(self.y, 'dtype', '')} "
                            f"{tuple(getattr(self.y, 'shape', ()))}")
        if self.y.shape[0] != len(self.texts):
            raise ValueError(f"TextDomain texts and y must have the same length, got {len(self.texts)} and "
                             f"{self.y.shape[0]}")
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise ValueError(f"TextDomain y must hold labels in 0..{len(self.classes) - 1}")

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"TextDomain(name={self.name!r}, texts={len(self.texts)}, num_classes={self.num_classes})"


def embedding_cache_dir(cache_dir: Union[str, "os.PathLike[str]", None] = None) -> Path:
    """The folder that holds cached embeddings, as an absolute ``Path`` (not created here).

    Resolution order: ``cache_dir`` if given; else ``$ADAPTLIB_CACHE/embeddings``; else
    ``$XDG_CACHE_HOME/adaptlib/embeddings``; else ``~/.cache/adaptlib/embeddings``. The data
    root (``ADAPTLIB_DATA``) is not used: it may be a shared, read-only folder.

    Raises:
        TypeError: ``cache_dir`` is not a path.
    """
    return cache_subdir("embeddings", cache_dir)


def cache_subdir(name: str, cache_dir: Union[str, "os.PathLike[str]", None] = None) -> Path:
    """The folder of one kind of cached data (``"embeddings"``, ``"msda"``), absolute, not created.

    Resolution order: ``cache_dir`` if given; else ``$ADAPTLIB_CACHE/<name>``; else
    ``$XDG_CACHE_HOME/adaptlib/<name>``; else ``~/.cache/adaptlib/<name>``.

    Raises:
        TypeError: ``cache_dir`` is not a path.
    """
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path, got {type(cache_dir).__name__}")
        return Path(cache_dir).expanduser().absolute()
    env = os.environ.get(CACHE_ENV, "")
    if env:
        return (Path(env).expanduser() / name).absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "adaptlib" / name).absolute()


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 (hex) of ``texts`` in order: each text UTF-8 encoded and prefixed by its byte length (8 bytes)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _shared_encoder():
    """One pretrained encoder per process (loading it takes seconds)."""
    from ..backbones import SentenceEncoder

    return SentenceEncoder()


def _encoder_id(encoder: Any, max_length: int) -> Optional[Dict[str, Any]]:
    """What identifies the embeddings an encoder computes; ``None`` for a random (uncached) one."""
    from ..backbones.text import MINILM_NAME, _fingerprint, minilm_path

    if encoder is None:
        weights, tokenizer = _fingerprint(minilm_path())
        normalize = True
    else:
        if not getattr(encoder, "pretrained", False):
            return None
        weights, tokenizer = encoder.fingerprint()
        normalize = encoder.normalize
    return {"model": MINILM_NAME, "weights_sha256": weights, "tokenizer_sha256": tokenizer,
            "max_length": int(max_length), "pooling": "mean", "normalize": bool(normalize)}


def _read(path: Path, texts_sha: str, encoder_id: Dict[str, Any], n: int) -> Optional[torch.Tensor]:
    """The embeddings stored in ``path`` if they are the ones asked for, else ``None`` (with a warning)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        emb = blob["embeddings"]
        ok = (blob["texts_sha256"] == texts_sha and blob["encoder"] == encoder_id and isinstance(emb, torch.Tensor)
              and emb.dtype == torch.float32 and emb.dim() == 2 and emb.shape[0] == n
              and bool(torch.isfinite(emb).all()))
    except Exception as e:  # a truncated or foreign file: recompute it
        warnings.warn(f"embedding cache file {path} could not be read ({type(e).__name__}: {e}); recomputing it",
                      UserWarning, stacklevel=3)
        return None
    if not ok:
        warnings.warn(f"embedding cache file {path} does not hold the embeddings of its key; recomputing it",
                      UserWarning, stacklevel=3)
        return None
    return emb


def _write(path: Path, emb: torch.Tensor, texts_sha: str, encoder_id: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a cache file is as readable as any other
        torch.save({"embeddings": emb.contiguous(), "texts_sha256": texts_sha, "encoder": encoder_id}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_text_embeddings(
    texts: Sequence[str],
    *,
    tag: str = "texts",
    max_length: int = 256,
    cache_dir: Union[str, "os.PathLike[str]", None] = None,
    encoder: Any = None,
    batch_size: int = 64,
) -> Tuple[torch.Tensor, bool]:
    """Sentence embeddings of ``texts`` from the cache, computed and stored on a miss.

    Args:
        texts: the ``N`` texts.
        tag: readable prefix of the cache file name (e.g. ``"amazon-books"``); not part of the key.
        max_length: truncation length in tokens (part of the key).
        cache_dir: cache folder; see :func:`embedding_cache_dir`.
        encoder: a :class:`~adaptlib.backbones.SentenceEncoder` (default: the pretrained
            all-MiniLM-L6-v2, built once per process and only on a miss). A randomly
            initialised one (``pretrained=False``) is run and never cached.
        batch_size: texts per forward pass on a miss.

    Returns:
        ``(embeddings, hit)``: ``(N, D)`` float32 on the CPU (L2-normalised for the default
        encoder, so each row has norm 1), and whether they came from the cache.

    Raises:
        TypeError / ValueError: ``texts`` is not a non-empty sequence of str, or a bad ``tag``.
        ImportError: on a miss without the ``text`` extra (``pip install -e ".[text]"``).
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
        raise TypeError("texts must be a non-empty sequence of str")
    if not isinstance(tag, str) or not tag or any(c in tag for c in "/\\") or tag.startswith("."):
        raise ValueError(f"tag must be a non-empty file-name prefix without '/' or '\\\\', got {tag!r}")
    texts = list(texts)
    enc_id = _encoder_id(encoder, max_length)
    if enc_id is None:  # random weights: computed, never stored
        return encoder.encode(texts, batch_size=batch_size, max_length=max_length), False
    texts_sha = texts_sha256(texts)
    key = hashlib.sha256(json.dumps({"encoder": enc_id, "texts_sha256": texts_sha}, sort_keys=True)
                         .encode("utf-8")).hexdigest()[:24]
    path = embedding_cache_dir(cache_dir) / enc_id["model"] / f"{tag}-{key}.pt"
    if path.is_file():
        emb = _read(path, texts_sha, enc_id, len(texts))
        if emb is not None:
            return emb, True
    logger.info("embedding %d texts with %s (max_length %d) -> %s", len(texts), enc_id["model"], max_length, path)
    enc = encoder if encoder is not None else _shared_encoder()
    emb = enc.encode(texts, batch_size=batch_size, max_length=max_length)
    _write(path, emb, texts_sha, enc_id)
    return emb, False
