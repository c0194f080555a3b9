"""Contract test: every method (and a composition, "dann+mcc") takes one training step on a small real subset.

Checks, for each method and each phase of its step: the loss terms are finite scalars; each
term sends gradient to exactly the parameters it should, apart from the parts frozen in that
phase, whose gradients the Trainer drops (alignment terms reach the feature extractor but not
the classifier head; the domain term reaches the discriminator); target labels are never used.
"""
import pytest
import torch

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib.methods import (METHODS, Batch, LabeledBatch, Progress, UnlabeledBatch, get_method)

FEATURE = {"backbone", "bottleneck"}
ALL_MODEL = {"backbone", "bottleneck", "head"}

# term -> the parameter owners that must receive a non-zero gradient from it (all others none).
EXPECTED = {
    "source-only": {"classification": ALL_MODEL},
    "finetune": {"classification": ALL_MODEL},
    "dann": {"classification": ALL_MODEL, "domain": FEATURE | {"discriminator"}},
    "dan": {"classification": ALL_MODEL, "mmd": FEATURE},
    "deep-coral": {"classification": ALL_MODEL, "coral": FEATURE},
    "deepjdot": {"classification": ALL_MODEL, "jdot_feature": FEATURE, "jdot_label": ALL_MODEL},
    "sinkhorn": {"classification": ALL_MODEL, "ot": FEATURE},
    "cdan": {"classification": ALL_MODEL, "domain": FEATURE | {"discriminator"}},  # predictions detached
    "cdan-e": {"classification": ALL_MODEL, "domain": FEATURE | {"discriminator"}},
    "mcc": {"classification": ALL_MODEL, "mcc": ALL_MODEL},
    "bnm": {"classification": ALL_MODEL, "bnm": ALL_MODEL},
    "afn": {"classification": ALL_MODEL, "feature_norm": FEATURE},
    "entropy-min": {"classification": ALL_MODEL, "entropy": ALL_MODEL},
    "jan": {"classification": ALL_MODEL, "jmmd": ALL_MODEL},  # softmax(logits) is the second JMMD layer
    "mdd": {"classification": ALL_MODEL, "disparity": FEATURE | {"adversarial_head"}},  # argmax of h: no gradient
    # multi-phase: "<phase>/<term>" (C1..Cn share "C"); B: generator frozen, C: both classifiers frozen
    "mcd": {"A/classification": ALL_MODEL, "A/classification_2": FEATURE | {"classifier2"},
            "B/classification": {"head"}, "B/classification_2": {"classifier2"},
            "B/discrepancy": {"head", "classifier2"}, "C/discrepancy": FEATURE},
    # source phase, then target phase (head frozen: the source hypothesis)
    "shot": {"classification": ALL_MODEL, "information": FEATURE, "pseudo_label": FEATURE},
}
COMPOSED = {"dann+mcc": {"classification": ALL_MODEL, "dann/domain": FEATURE | {"discriminator"},
                         "mcc/mcc": ALL_MODEL}}
# the progress (step of 100) at which each method's terms are checked: every phase of its training
PROGRESS = {"finetune": (0,), "shot": (10, 80)}


def _model(in_dim: int) -> AdaptModel:
    torch.manual_seed(0)
    return AdaptModel(mlp(in_dim, [64]), num_classes=10, bottleneck_dim=32)


def _owners(model, method):
    """(owner, parameter) pairs; a composition's term modules are named by their own attribute
    (``terms.0.discriminator.net...`` -> ``discriminator``)."""
    named = [(f"{n.split('.')[0]}", p) for n, p in model.named_parameters()]
    named += [(n.split(".")[2] if n.startswith("terms.") else n.split(".")[0], p)
              for n, p in method.named_parameters()]
    return named


def _batch(surf_small, n=32):
    xs, ys, xt, _ = surf_small
    return Batch(LabeledBatch(xs[:n], ys[:n]), UnlabeledBatch(xt[:n], torch.arange(n)),
                 LabeledBatch(xt[:20], surf_small[3][:20]))


def test_every_method_is_covered():
    assert set(EXPECTED) == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS) + sorted(COMPOSED))
def test_each_loss_term_reaches_exactly_its_parameters(name, surf_small):
    """Every phase of every step the Trainer would run, built as the Trainer builds it: no source
    batch when the method reads none, the frozen parts' gradients discounted (the Trainer drops them)."""
    model = _model(surf_small[0].shape[1])
    method = get_method(name)
    method.setup(model)
    expected = {**EXPECTED, **COMPOSED}[name]
    owners = _owners(model, method)
    seen = set()
    for step in PROGRESS.get(name, (50,)):  # mid-training by default: DANN's coefficient is non-zero
        progress = Progress(step=step, total_steps=100)
        full = _batch(surf_small)
        batch = Batch(full.source if method.reads_source(progress) else None, full.target,
                      full.target_labeled if method.uses_target_labels else None)
        if method.needs_target_outputs(progress):
            with torch.no_grad():
                method.on_target_outputs(model, model.eval()(surf_small[2]), progress)
            model.train()
        step_frozen = tuple(method.frozen_modules(model, progress))
        for phase in method.phases(model, progress):
            frozen = {id(p) for m in step_frozen + tuple(phase.frozen) for p in m.parameters()}
            out = phase.loss_terms(model, batch, progress)
            for term, value in out.losses.items():
                key = f"{phase.name.rstrip('0123456789')}/{term}" if phase.name else term
                seen.add(key)
                assert value.dim() == 0 and torch.isfinite(value), (name, key, value)
                grads = torch.autograd.grad(value, [p for _, p in owners], retain_graph=True, allow_unused=True)
                reached = {owner for (owner, p), g in zip(owners, grads)
                           if g is not None and bool(g.abs().sum() > 0) and id(p) not in frozen}
                assert reached == expected[key], (name, key, reached)
    assert seen == set(expected)


def test_finetune_target_phase_and_frozen_backbone(surf_small):
    model = _model(surf_small[0].shape[1])
    batch = _batch(surf_small)
    late = Progress(step=80, total_steps=100)
    for kwargs, expected in (({}, ALL_MODEL), ({"freeze_backbone": True}, {"bottleneck", "head"})):
        method = get_method("finetune", **kwargs)
        method.setup(model)
        out = method.loss_terms(model, batch, late)
        assert set(out.losses) == {"target_classification"}
        owners = _owners(model, method)
        grads = torch.autograd.grad(out.losses["target_classification"], [p for _, p in owners], allow_unused=True)
        assert {o for (o, _), g in zip(owners, grads) if g is not None} == expected


def test_finetune_l2sp_pulls_toward_source_weights(surf_small):
    model = _model(surf_small[0].shape[1])
    method = get_method("finetune", l2sp=1.0)
    method.setup(model)
    late = Progress(step=60, total_steps=100)
    with torch.no_grad():
        method.on_step_start(model, late)  # snapshot w0
        for p in model.backbone.parameters():
            p.add_(0.1)
    out = method.loss_terms(model, _batch(surf_small), late)
    n_params = sum(p.numel() for p in model.backbone.parameters())
    assert torch.allclose(out.losses["l2sp"], torch.tensor(0.5 * n_params * 0.01), rtol=1e-3)


class _LabelTrap:
    """A target domain whose labels raise if anything reads them."""

    def __init__(self, x):
        self.x = x

    @property
    def y(self):
        raise AssertionError("target labels were read during unsupervised training")


@pytest.mark.parametrize("name", [n for n, c in METHODS.items() if c.uses_target] + sorted(COMPOSED))
def test_unsupervised_methods_never_see_target_labels(name, surf_small):
    xs, ys, xt, yt = surf_small
    seen = []
    method = get_method(name)
    original = method.loss_terms

    def spy(model, batch, progress, **phase):
        seen.append(batch)
        return original(model, batch, progress, **phase)

    method.loss_terms = spy
    trainer = Trainer(_model(xs.shape[1]), method, steps=3, batch_size=16, progress_bar=False)
    trainer.fit((xs, ys), _LabelTrap(xt), eval_sets={"target": (xt, yt)})
    assert len(seen) == 3 * len(method.phases(trainer.model, Progress(0, 3)))
    for batch in seen:
        assert isinstance(batch.target, UnlabeledBatch) and not hasattr(batch.target, "y")
        assert batch.target_labeled is None
    with pytest.raises(ValueError, match="target_labeled"):
        Trainer(_model(xs.shape[1]), name, steps=1, progress_bar=False).fit(
            (xs, ys), xt, target_labeled=(xt[:10], yt[:10]))
    with pytest.raises(TypeError, match="target"):
        Trainer(_model(xs.shape[1]), name, steps=1, progress_bar=False).fit((xs, ys), (xt, yt))


def test_dann_reversal_coefficient_follows_the_schedule(surf_small):
    xs, ys, xt, yt = surf_small
    trainer = Trainer(_model(xs.shape[1]), "dann", steps=100, batch_size=16, log_every=1, progress_bar=False)
    hist = trainer.fit((xs, ys), xt)
    import math
    for rec in hist.train:
        p = (rec["step"] - 1) / 100
        assert rec["grl_coefficient"] == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1, abs=1e-6)
    assert hist.train[0]["grl_coefficient"] == 0.0


def test_get_method_errors():
    with pytest.raises(ValueError, match="method must be"):
        get_method("nope")
    with pytest.raises(TypeError, match="dann"):
        get_method("dann", not_a_hparam=1)


def test_cdan_randomized_map_is_automatic_above_4096_and_saved_with_the_method(surf_small):
    xs, ys, xt, _ = surf_small
    small = _model(xs.shape[1])  # D*C = 32*10: the full multilinear map
    big = AdaptModel(mlp(xs.shape[1], [64]), num_classes=10, bottleneck_dim=512)  # 5120 > 4096
    for model, randomized, in_dim in ((small, False, 320), (big, True, 1024)):
        for name in ("cdan", "cdan-e"):
            method = get_method(name)
            method.setup(model)
            assert method.uses_randomized_map(model) is randomized
            first = next(m for m in method.discriminator.modules() if isinstance(m, torch.nn.Linear))
            assert first.in_features == in_dim
            assert ("random_features" in method.state_dict()) is randomized
            assert method.entropy_conditioning is (name == "cdan-e")
            out = method.loss_terms(model, _batch(surf_small), Progress(50, 100))
            assert torch.isfinite(out.losses["domain"])
    forced = get_method("cdan", randomized=True, randomized_dim=16)
    forced.setup(small)
    assert forced.random_features.shape == (32, 16) and forced.random_predictions.shape == (10, 16)


def test_mdd_adversary_ascends_the_disparity_and_features_descend_it(surf_small):
    """One small gradient step of the summed loss: the adversarial head raises D, the features lower it."""
    torch.manual_seed(0)
    model = _model(surf_small[0].shape[1])
    method = get_method("mdd")
    method.setup(model)
    progress = Progress(step=50, total_steps=100)
    batch = _batch(surf_small)
    batch = Batch(batch.source, batch.target, None)
    out = method.loss_terms(model, batch, progress)
    d0 = float(out.metrics["mdd"])
    groups = ((list(method.adversarial_head.parameters()), 1), (list(model.bottleneck.parameters()), -1))
    all_grads = [torch.autograd.grad(out.losses["disparity"], params, retain_graph=True) for params, _ in groups]
    for (params, sign), grads in zip(groups, all_grads):
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(1e-3 * g / max(float(g.norm()), 1e-12))
            d1 = float(method.loss_terms(model, batch, progress).metrics["mdd"])
            for p, g in zip(params, grads):
                p.add_(1e-3 * g / max(float(g.norm()), 1e-12))
        assert sign * (d1 - d0) > 0, (sign, d0, d1)


@pytest.mark.parametrize("name", sorted(n for n, c in METHODS.items()
                                        if {"trade_off", "alpha"} & set(c.search_space)))
def test_constructors_refuse_negative_trade_off(name):
    weight = "alpha" if "alpha" in METHODS[name].search_space else "trade_off"
    with pytest.raises(ValueError, match=f"{weight} must be a finite number >= 0"):
        get_method(name, **{weight: -0.5})
    with pytest.raises(TypeError, match=weight):
        get_method(name, **{weight: "1"})
    assert getattr(get_method(name, **{weight: 0.0}), weight) == 0.0  # 0 switches the term off
