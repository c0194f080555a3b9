"""The options of the shared training recipe (issue 10) and the source-only recipe selection script."""
import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib.compare import BENCHMARK_SETTINGS, RECIPE_KEYS, CompareConfig, build_model, build_trainer
from adaptlib.methods import get_method

from conftest import REPO


def _data(n=64, d=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, torch.arange(n) % c


# ------------------------------------------------------------------ AdaptModel(bottleneck_norm=...)
def test_bottleneck_norm_is_linear_batchnorm_relu():
    model = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8, bottleneck_norm=True)
    kinds = [type(m) for m in model.bottleneck]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] and model.bottleneck_norm
    out = model(torch.randn(5, 12))
    assert out.features.shape == (5, 8) and out.logits.shape == (5, 3)
    plain = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8)
    assert [type(m) for m in plain.bottleneck] == [nn.Linear, nn.ReLU]  # the default is unchanged


def test_bottleneck_norm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    torch.manual_seed(0)
    model = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8, bottleneck_norm=True)
    x = torch.randn(32, 12) * 3 + 1
    pre = model.bottleneck[1](model.bottleneck[0](model.backbone(x)))  # training mode: normalised over the batch
    assert pre.mean(0).abs().max() < 1e-5 and (pre.var(0, unbiased=False) - 1).abs().max() < 1e-3
    model.eval()
    with torch.no_grad():
        a, b = model(x[:1]).logits, model(x).logits[:1]
    assert torch.allclose(a, b, atol=1e-6)  # eval: a sample's output does not depend on its batch


def test_bottleneck_norm_needs_a_bottleneck():
    with pytest.raises(ValueError, match="bottleneck_norm"):
        AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=None, bottleneck_norm=True)


# ------------------------------------------------------------------ Trainer(label_smoothing=...)
def test_classification_applies_the_method_label_smoothing():
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    method = get_method("source-only")
    assert method.classification(logits, y) == pytest.approx(float(F.cross_entropy(logits, y)))
    method.label_smoothing = 0.2
    target = torch.full((6, 4), 0.2 / 4)
    target[torch.arange(6), y] += 0.8
    ref = -(target * logits.log_softmax(1)).sum(1).mean()  # independent of F.cross_entropy
    assert method.classification(logits, y) == pytest.approx(float(ref), rel=1e-6)


@pytest.mark.parametrize("method", ["source-only", "dann", "mcc"])
def test_trainer_sets_label_smoothing_on_the_method_and_trains(method):
    x, y = _data()
    torch.manual_seed(0)
    model = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8)
    trainer = Trainer(model, method, steps=3, batch_size=8, label_smoothing=0.1, progress_bar=False, device="cpu")
    assert trainer.method.label_smoothing == 0.0  # set when fit starts
    trainer.fit((x, y), x if trainer.method.uses_target else None)
    assert trainer.method.label_smoothing == 0.1
    assert math.isfinite(trainer.history.train[-1]["classification"])


def test_label_smoothing_changes_the_logged_source_loss():
    x, y = _data()
    losses = []
    for eps in (0.0, 0.5):
        torch.manual_seed(0)
        t = Trainer(AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8), steps=1, batch_size=64,
                    label_smoothing=eps, lr=1e-9, progress_bar=False, device="cpu", log_every=1)
        t.fit((x, y))
        losses.append(t.history.train[0]["classification"])
    assert losses[0] != pytest.approx(losses[1])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "0.1", True, float("nan")])
def test_label_smoothing_is_checked(bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        Trainer(AdaptModel(mlp(12, [16]), num_classes=3), label_smoothing=bad)


def test_label_smoothing_is_in_the_checkpoint_settings(tmp_path):
    x, y = _data()
    kw = dict(steps=2, batch_size=8, progress_bar=False, device="cpu")
    model = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8)
    t = Trainer(model, label_smoothing=0.1, **kw)
    assert "label_smoothing" not in Trainer(model, **kw)._settings()  # 0: absent, so older checkpoints still load
    t.fit((x, y))
    path = t.save_checkpoint(tmp_path / "a.pt")
    assert torch.load(path, weights_only=True)["settings"]["label_smoothing"] == 0.1
    with pytest.raises(ValueError, match="label_smoothing: 0.1 in the checkpoint, None now"):
        Trainer(model, **kw).load_checkpoint(path)
    Trainer(model, label_smoothing=0.1, **kw).load_checkpoint(path)  # same settings: accepted


def test_adamw_optimizer():
    t = Trainer(AdaptModel(mlp(12, [16]), num_classes=3), optimizer="adamw", weight_decay=0.01, lr=1e-3)
    opt = t._make_optimizer()
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 0.01
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(AdaptModel(mlp(12, [16]), num_classes=3), optimizer="lbfgs")


# ------------------------------------------------------------------ the compare recipe
def test_every_benchmark_setting_holds_the_whole_recipe():
    for name, settings in BENCHMARK_SETTINGS.items():
        assert set(RECIPE_KEYS) <= set(settings), name
        cfg = CompareConfig(benchmark=name, methods=("source-only",)).resolved()
        for key in RECIPE_KEYS:
            assert getattr(cfg, key) == (tuple(settings[key]) if key == "hidden" else settings[key]), (name, key)


def test_build_model_and_trainer_follow_the_config():
    cfg = CompareConfig(methods=("source-only",), hidden=(16,), bottleneck=8, bottleneck_norm=True, dropout=0.1,
                        optimizer="adamw", lr=2e-3, weight_decay=0.01, lr_schedule="cosine", label_smoothing=0.1,
                        steps=7, batch_size=4).resolved()
    model = build_model(cfg, 12, 3)
    assert isinstance(model.bottleneck[1], nn.BatchNorm1d) and model.feature_dim == 8
    t = build_trainer(cfg, model, "source-only", seed=3)
    assert (t.optimizer_name, t.lr, t.weight_decay, t.lr_schedule, t.label_smoothing, t.steps, t.batch_size, t.seed) \
        == ("adamw", 2e-3, 0.01, "cosine", 0.1, 7, 4, 3)


def test_config_load_options_reach_the_loader(data_root):
    from adaptlib.compare import run_one

    cfg = CompareConfig(methods=("source-only",), tasks=("D->W",), seeds=1, steps=2, root=str(data_root),
                        load_options={"preprocess": "nope"}).resolved()
    with pytest.raises(ValueError, match="preprocess"):
        run_one(cfg, "D->W", "source-only", 0)


# ------------------------------------------------------------------ SURF preprocessing
def test_surf_sqrt_preprocessing(data_root):
    from adaptlib.datasets.office_caltech import load_office_caltech10_surf

    raw = load_office_caltech10_surf("dslr", data_root, preprocess=None).x
    sq = load_office_caltech10_surf("dslr", data_root, preprocess="sqrt").x
    ref = torch.sqrt(raw / raw.sum(1, keepdim=True))
    assert torch.allclose(sq, ref, atol=1e-6)
    assert torch.allclose(sq.norm(dim=1), torch.ones(len(sq)), atol=1e-5)  # Hellinger rows have unit L2 norm
    z = load_office_caltech10_surf("dslr", data_root, preprocess="sqrt-zscore").x.double()
    assert z.mean(0).abs().max() < 1e-5
    std = z.std(0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).logical_or(std < 1e-6).all()
    with pytest.raises(ValueError, match="preprocess"):
        load_office_caltech10_surf("dslr", data_root, preprocess="sqrt-l2")


# ------------------------------------------------------------------ scripts/select_recipe.py
def _load_script(name: str):
    """Import ``scripts/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script():
    return _load_script("select_recipe")


def test_holdout_split_is_per_class_disjoint_and_fixed():
    sr = _script()
    y = torch.tensor([0] * 10 + [1] * 21 + [2] * 3)
    tr, va = sr.holdout_split(y, 0.2, seed=1)
    assert torch.bincount(y[va]).tolist() == [2, 4, 1]
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == len(y)
    assert torch.equal(va, sr.holdout_split(y, 0.2, seed=1)[1])


def test_select_recipe_reads_source_data_only(data_root, monkeypatch):
    import adaptlib.datasets.amazon_reviews as amazon

    sr = _script()
    splits = []
    real = amazon.load_amazon_reviews

    def spy(domain, split, *args, **kwargs):
        splits.append((domain, split))
        return real(domain, split, *args, **kwargs)

    monkeypatch.setattr(amazon, "load_amazon_reviews", spy)
    domains = sr.load_source_domains("amazon-reviews", {}, str(data_root))
    assert sorted(domains) == ["B", "D", "E", "K"]
    assert {s for _, s in splits} == {"train"}  # the target test split is never opened
    digits = sr.load_source_domains("mnist-usps-jda", {}, str(data_root))
    assert {k: v.name for k, v in digits.items()} == {"MNIST": "mnist", "USPS": "usps"}
    import adaptlib.datasets.digit_images as digit_images

    opened = []
    real_images = digit_images.load_digit_images
    monkeypatch.setattr(digit_images, "load_digit_images", lambda d, *a, **k: opened.append(d) or real_images(d, *a, **k))
    images = sr.load_source_domains("digits-images", {}, str(data_root))
    assert {k: v.name for k, v in images.items()} == {"M": "mnist", "U": "usps"} and opened == ["mnist", "usps"]


def test_select_recipe_grid_and_choice():
    sr = _script()
    for bench in ("office-caltech10-surf", "mnist-usps-jda", "amazon-reviews", "digits-images"):
        grid = sr.candidates(bench)
        names = [n for _, n, _ in grid]
        baselines = {"centre"} if bench in sr.SMALL_GRIDS else {"old", "centre", "hand-written"}
        assert len(set(names)) == len(names) and baselines <= set(names)
        for _, _, recipe in grid:  # every candidate is a complete, valid compare recipe
            CompareConfig(benchmark=bench, methods=("source-only",), **recipe).resolved()
    # The digits grid's centre trains without augmentation whatever the benchmark's default is, and
    # spelling that out keeps the keys of runs recorded before the augment field (--reuse).
    digits = {n: r for _, n, r in sr.candidates("digits-images")}
    assert CompareConfig(benchmark="digits-images", **digits["centre"]).resolved().augment == {}
    assert CompareConfig(benchmark="digits-images", **digits["affine"]).resolved().augment["degrees"] == 10
    assert sr._key(digits["centre"], "M", 0) == sr._key(
        {k: v for k, v in digits["centre"].items() if k != "augment"}, "M", 0)
    rows = [{"recipe": "a", "mean": 0.800, "cost": 10}, {"recipe": "b", "mean": 0.799, "cost": 5},
            {"recipe": "c", "mean": 0.790, "cost": 1}]
    assert sr.choose(rows, 0.002)["recipe"] == "b"  # the cheapest within 0.2 points of the best


def test_select_recipe_msda_grid_and_source_loading(monkeypatch):
    """The mSDA grid is the benchmark's first recipe (noise 0.5) against log1p of its counts block and two
    other noises; stage 2 merges a winning transform and a winning noise; a job loads one pair only."""
    import adaptlib.datasets.amazon_reviews_msda as msda
    from adaptlib.datasets._files import Domain

    sr = _script()
    grid = {n: r for _, n, r in sr.candidates("amazon-reviews-msda")}
    assert sorted(grid) == ["centre", "log1p", "noise0.3", "noise0.7"]
    recipe = BENCHMARK_SETTINGS["amazon-reviews-msda"]
    for name, candidate in grid.items():
        cfg = CompareConfig(benchmark="amazon-reviews-msda", methods=("source-only",), **candidate).resolved()
        # Everything but the counts block's transform and the layers' noise is the benchmark's recipe.
        assert {k: getattr(cfg, k) for k in RECIPE_KEYS if k != "load_options"} == \
            {k: recipe[k] for k in RECIPE_KEYS if k != "load_options"}
        assert cfg.load_options["layer_input"] == "presence"
        assert cfg.load_options.get("transform") == ("log1p" if name == "log1p" else None)
        assert cfg.load_options.get("noise") == {"noise0.3": 0.3, "noise0.7": 0.7}.get(name)
    # The centre is the first recipe (the loader's noise 0.5); the benchmark now trains the grid's choice.
    assert msda.MSDA_NOISE == 0.5 and "noise" not in grid["centre"]["load_options"]
    assert recipe["load_options"] == grid["noise0.3"]["load_options"] == {"layer_input": "presence", "noise": 0.3}
    # Stage 2: if log1p and noise 0.3 both beat the centre, the combination keeps both loader options.
    rows = [{"recipe": n, "factor": f, "mean": m, "settings": grid[n]}
            for f, n, m in (("centre", "centre", 0.80), ("preprocessing", "log1p", 0.81),
                            ("noise", "noise0.3", 0.82), ("noise", "noise0.7", 0.79))]
    names, combined = sr.combine("amazon-reviews-msda", rows)
    assert names == ["noise0.3", "log1p"]
    assert combined["load_options"] == {"layer_input": "presence", "noise": 0.3, "transform": "log1p"}
    calls = []

    def fake(source, target, root=None, download=False, **options):
        calls.append((source, target, options))
        x, y = torch.zeros(4, 3), torch.tensor([0, 1, 0, 1])
        classes = ("negative", "positive")
        return Domain(source, x, y, classes), Domain(target, x, y, classes), Domain(target, x, y, classes)

    monkeypatch.setattr(msda, "load_amazon_reviews_msda", fake)
    out = sr.load_source_domains("amazon-reviews-msda", {"transform": "log1p"}, None, only="E")
    assert list(out) == ["E"] and out["E"].name == "electronics"
    assert calls == [("electronics", "books", {"transform": "log1p"})]  # E->B, the first task with source E
    calls.clear()
    assert sorted(sr.load_source_domains("amazon-reviews-msda", {}, None)) == ["B", "D", "E", "K"]
    assert [c[0] for c in calls] == ["books", "dvd", "electronics", "kitchen"]
    with pytest.raises(ValueError, match="only must be one of the source domains"):
        sr.load_source_domains("amazon-reviews-msda", {}, None, only="X")


def test_select_recipe_grid_for_the_text_benchmark():
    """amazon-reviews-text has no pre-issue-10 recipe: the grid starts at the plain loop and the centre."""
    sr = _script()
    grid = sr.candidates("amazon-reviews-text")
    names = [n for _, n, _ in grid]
    assert "old" not in names and {"centre", "hand-written", "lr3e-3", "batch64", "steps500"} <= set(names)
    for _, _, recipe in grid:
        cfg = CompareConfig(benchmark="amazon-reviews-text", methods=("source-only",), **recipe).resolved()
        assert cfg.backbone == "mlp" and cfg.load_options == {}
    assert "steps500" not in [n for _, n, _ in sr.candidates("amazon-reviews")]  # an extra of the text grid only


# ------------------------------------------------------------------ scripts/select_defaults.py
def _select_defaults():
    return _load_script("select_defaults")


def test_select_defaults_ranks_ties_and_keeps_the_current_default_on_a_tie():
    sd = _select_defaults()
    assert sd._ranks([0.2, float("nan"), 0.5, 0.5]) == [3.0, 4.0, 1.5, 1.5]
    keys = ["0.3", "1", "3"]
    # a sum of twelve ranks / 12 is not exactly 2.0 in floating point: still a tie
    tied = {"0.3": sum([2.0] * 12) / 12, "1": sum([1.0, 3.0] * 6) / 12, "3": sum([3.0 / 12] * 6 + [1.0 / 12] * 6)}
    assert sd.choose(tied, keys, 1.0) == "1"  # the current default, compared as a value (1 == 1.0)
    assert sd.choose(tied, keys, 10.0) is None  # no single value: nothing replaces the current default
    assert sd.choose({"0.3": 2.0, "1": 4.0, "3": 2.0}, keys, 1.0) is None  # the paper's last, but no winner
    assert sd.choose({"0.3": 1.75, "1": 2.83, "3": 2.67}, keys, 1.0) == "0.3"  # alone at the top


def test_select_defaults_reranks_stored_runs_without_training(tmp_path):
    sd = _select_defaults()
    out = tmp_path / "defaults"
    assert sd.main(["dann", "trade_off", "0.1,0.3,1,3", "--from-runs",
                    str(REPO / "docs" / "defaults" / "office-caltech10-surf-dann-trade_off.json"),
                    "--validator", "snd", "--out", str(out)]) == 0
    redone = json.loads((out / "office-caltech10-surf-dann-trade_off-snd.json").read_text())  # not DEV's file
    assert redone["validator"] == "snd" and len(redone["runs"]) == 48
    with pytest.raises(SystemExit):  # runs trained without the pinned value
        sd.main(["dann", "trade_off", "0.1,0.3,1,3", "--fixed", "gamma=3", "--from-runs",
                 str(REPO / "docs" / "defaults" / "office-caltech10-surf-dann-trade_off.json"), "--out", str(out)])
    with pytest.raises(SystemExit):  # another grid than the stored one
        sd.main(["dann", "trade_off", "0.3,1", "--from-runs",
                 str(REPO / "docs" / "defaults" / "office-caltech10-surf-dann-trade_off.json"), "--out", str(out)])
