"""Composition of methods: ``DANN() + 0.5 * MCC()``, ``["dann", "mcc"]``, ``"dann+mcc"``.

The composed loss equals the sum of the parts' weighted terms with the source cross-entropy
once (computed part by part, on real SURF data, float64); the parts share one forward pass;
every term gets the Trainer's label smoothing; names, search space and hyper-parameters are
prefixed per term; a composition trains through the Trainer and through ``compare``.
"""
import pytest
import torch
import torch.nn.functional as F

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib.compare import CompareConfig, check_method_kwargs, compare
from adaptlib.methods import (DANN, MCC, METHODS, MCD, SHOT, Batch, Composed, LabeledBatch, Progress, UnlabeledBatch,
                              dann_warmup, get_method)


def _model(in_dim):
    torch.manual_seed(0)
    return AdaptModel(mlp(in_dim, [64]), num_classes=10, bottleneck_dim=32).double()  # no dropout: deterministic


def _batch(surf_small, n=32):
    xs, ys, xt, _ = surf_small
    return Batch(LabeledBatch(xs[:n].double(), ys[:n]), UnlabeledBatch(xt[:n].double(), torch.arange(n)))


def test_composed_loss_is_the_weighted_sum_of_the_parts_with_cross_entropy_once(surf_small):
    model = _model(surf_small[0].shape[1])
    method = DANN(dropout=0.0) + 0.5 * MCC(temperature=2.0)
    assert isinstance(method, Composed) and method.name == "dann+mcc" and method.weights == [1.0, 0.5]
    method.setup(model)
    method.double()
    method.label_smoothing = 0.1  # what the Trainer does: every term gets it
    dann, mcc = method.terms
    assert dann.label_smoothing == mcc.label_smoothing == 0.1
    batch, progress = _batch(surf_small), Progress(50, 100)
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    out = method.loss_terms(model, batch, progress)
    assert len(calls) == 1  # one forward pass shared by both terms
    hook.remove()
    parts = [m.loss_terms(model, batch, progress).losses for m in (dann, mcc)]
    assert set(out.losses) == {"classification", "dann/domain", "mcc/mcc"}
    ce = F.cross_entropy(model(batch.source.x).logits, batch.source.y, label_smoothing=0.1)
    for part in parts:
        assert torch.allclose(part["classification"], ce, rtol=1e-12)
    assert torch.allclose(out.losses["classification"], ce, rtol=1e-12)
    assert torch.allclose(out.losses["dann/domain"], parts[0]["domain"], rtol=1e-12)
    assert torch.allclose(out.losses["mcc/mcc"], 0.5 * parts[1]["mcc"], rtol=1e-12)
    total = sum(out.losses.values())
    assert torch.allclose(total, ce + parts[0]["domain"] + 0.5 * parts[1]["mcc"], rtol=1e-12)
    assert out.metrics["dann/grl_coefficient"] == pytest.approx(dann_warmup(0.5))


def test_weights_can_be_schedules_and_compositions_flatten(surf_small):
    model = _model(surf_small[0].shape[1])
    method = Composed([DANN(dropout=0.0), (MCC(), dann_warmup)])
    nested = 2.0 * method
    assert [m.name for m in nested.terms] == ["dann", "mcc"] and nested.weights[0] == 2.0
    nested.setup(model)
    nested.double()
    batch = _batch(surf_small)
    for step in (0, 30, 90):
        out = nested.loss_terms(model, batch, Progress(step, 100))
        alone = nested.terms[1].loss_terms(model, batch, Progress(step, 100)).losses["mcc"]
        w = 2.0 * dann_warmup(step / 100)
        assert out.metrics["mcc/weight"] == pytest.approx(w)
        assert torch.allclose(out.losses["mcc/mcc"], w * alone, rtol=1e-12, atol=1e-15)
    assert nested.hparams()["mcc.weight"] == "dann_warmup*2.0"


def test_registry_names_lists_and_hyper_parameters():
    cls = METHODS["dann+mcc"]
    assert "dann+mcc" in METHODS and cls is METHODS["dann+mcc"] and "dann+mcc" not in list(METHODS)
    assert cls.name == "dann+mcc" and cls.uses_target and not cls.uses_target_labels
    assert set(cls.search_space) == {f"dann.{k}" for k in DANN.search_space} | {f"mcc.{k}" for k in MCC.search_space}
    built = get_method("dann+mcc", **{"mcc.trade_off": 0.3, "mcc.weight": 0.5, "dann.gamma": 5.0})
    assert built.terms[1].trade_off == 0.3 and built.weights == [1.0, 0.5] and built.terms[0].gamma == 5.0
    assert type(get_method(built.name, **built.hparams())).__name__ == type(built).__name__
    assert get_method(["dann", "mcc"]).name == "dann+mcc"
    listed = get_method(["dann", ("mcc", 0.5)])
    assert listed.weights == [1.0, 0.5] and isinstance(listed.terms[1], MCC)
    assert get_method("mcc+mcc").prefixes == ["mcc", "mcc_2"]
    with pytest.raises(TypeError, match="'<term>.<name>'"):
        get_method("dann+mcc", trade_off=1.0)
    with pytest.raises(ValueError, match="trade_off must be"):
        get_method("dann+mcc", **{"mcc.trade_off": -1.0})
    with pytest.raises(ValueError, match="cannot be terms of a composition"):
        get_method("dann+mcd")
    assert "dann+mcd" not in METHODS and "dann+nope" not in METHODS
    with pytest.raises(ValueError, match="cannot be a term"):
        DANN() + SHOT()
    with pytest.raises(ValueError, match="cannot be a term"):
        Composed([MCD()])
    with pytest.raises(ValueError, match="weight of 'mcc'"):
        Composed([(MCC(), -0.5)])
    with pytest.raises(ValueError, match="known methods|known are|one of"):
        get_method("dann+nope")
    assert check_method_kwargs({"dann+mcc": {"mcc.temperature": 2.0}}, ["dann+mcc"]) == {
        "dann+mcc": {"mcc.temperature": 2.0}}
    with pytest.raises(ValueError, match="mcc.trade_off must be >= 0"):
        check_method_kwargs({"dann+mcc": {"mcc.trade_off": -2.0}}, ["dann+mcc"])


def test_composition_trains_on_real_data_through_trainer_and_compare(surf_small, data_root):
    xs, ys, xt, yt = surf_small
    torch.manual_seed(0)
    model = AdaptModel(mlp(xs.shape[1], [64], dropout=0.3), num_classes=10, bottleneck_dim=32, bottleneck_norm=True)
    trainer = Trainer(model, ["dann", "mcc"], steps=60, batch_size=32, optimizer="adam", lr=1e-3,
                      label_smoothing=0.1, log_every=10, progress_bar=False)
    hist = trainer.fit((xs, ys), xt, eval_sets={"source": (xs, ys)})
    assert trainer.method.terms[0].label_smoothing == 0.1
    assert {"classification", "dann/domain", "mcc/mcc", "dann/discriminator_accuracy"} <= set(hist.train[-1])
    assert hist.train[-1]["classification"] < hist.train[0]["classification"]
    assert hist.final_eval()["source/accuracy"] > 0.5  # it learns the source classes (chance: 0.1)
    result = compare(CompareConfig(methods=("dann+mcc",), tasks=("A->W",), seeds=1, steps=5, workers=1,
                                   root=str(data_root), method_kwargs={"dann+mcc": {"mcc.weight": 0.5}}),
                     progress=False)
    (record,) = result.records
    assert record["method"] == "dann+mcc" and 0 <= record["accuracy"] <= 1
    assert record["hparams"]["mcc.weight"] == 0.5 and "dann+mcc" in result.markdown()
