"""The Trainer and the user's modules: frozen parts stay frozen, the user's train/eval modes are
kept, small data sets and one-row batches, array-like inputs, feature-dimension and dtype
errors, divergence, and the thread setting for small models (issue 9, items 6, 7, 8, 10, 11, 15).
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from adaptlib import AdaptModel, Trainer, mlp

QUIET = dict(progress_bar=False, device="cpu")


def _bn_model(in_dim=8, seed=0, num_classes=3, dropout=0.0):
    """Backbone ``Linear(in_dim, 16) -> BatchNorm1d(16) -> ReLU``, no bottleneck, head 16 -> C."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(in_dim, 16), nn.BatchNorm1d(16), nn.ReLU())
    return AdaptModel(backbone, num_classes=num_classes, bottleneck_dim=8 if dropout else None, dropout=dropout)


def _data(n_source=64, n_target=40, in_dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_source, in_dim, generator=g)
    ys = torch.arange(n_source) % 3
    xt = torch.randn(n_target, in_dim, generator=g) + 1.0
    yt = torch.arange(n_target) % 3
    return xs, ys, xt, yt


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _modes_seen(module):
    """Record ``module.training`` at each of its forward calls on more than one row (the Trainer's
    set-up check runs one row of each input through the model, in eval mode)."""
    seen = []
    module.register_forward_pre_hook(lambda m, args: seen.append(m.training) if args[0].shape[0] > 1 else None)
    return seen


# ---------------------------------------------------------------------------------------------
# 6. A frozen backbone stays frozen: eval mode, whole state (parameters and buffers) bit-identical.

def test_finetune_frozen_backbone_is_bit_identical_over_the_target_phase():
    xs, ys, xt, yt = _data()
    model = _bn_model()
    modes = _modes_seen(model.backbone)
    t = Trainer(model, "finetune", method_kwargs={"freeze_backbone": True, "source_fraction": 0.5},
                steps=20, batch_size=8, **QUIET)
    snaps = {}
    t.fit((xs, ys), target_labeled=(xt[:12], yt[:12]), callback=lambda tr: snaps.update({tr.step: _state(tr.model)}),
          callback_every=1)
    before, after = snaps[10], snaps[20]  # after the 10 source steps, after the 10 target steps
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any(k.endswith("running_mean") for k in backbone) and any(k.endswith("num_batches_tracked") for k in backbone)
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert not torch.equal(before["head.weight"], after["head.weight"])  # the head did train
    assert int(snaps[10]["backbone.1.num_batches_tracked"]) == 10  # the source phase updated the statistics
    assert modes[:10] == [True] * 10 and modes[10:20] == [False] * 10  # train, then eval when frozen
    assert model.backbone.training  # the user's mode is back after fit


# ---------------------------------------------------------------------------------------------
# 7. The user's modes are kept: a backbone in eval mode with requires_grad_(False) stays as it is.

def test_a_backbone_the_user_put_in_eval_mode_is_not_switched_back_to_train():
    xs, ys, xt, yt = _data()
    model = _bn_model(dropout=0.5)
    model.backbone.eval().requires_grad_(False)
    before = _state(model.backbone)
    backbone_modes, bottleneck_modes = _modes_seen(model.backbone), _modes_seen(model.bottleneck)
    t = Trainer(model, "dann", steps=12, batch_size=8, eval_every=3, **QUIET)
    t.fit((xs, ys), xt, eval_sets={"target": (xt, yt)}, callback=lambda tr: tr.model.eval(), callback_every=4)
    assert _same_state(before, _state(model.backbone))  # statistics and weights unchanged
    assert not any(backbone_modes)
    # the rest trained in train mode at every step, also after each evaluation and callback
    assert bottleneck_modes.count(True) == 12
    assert not model.backbone.training and model.bottleneck.training and model.head.training
    assert t.evaluate((xt, yt)) >= 0 and not model.backbone.training and model.head.training
    t.predict(xt)
    assert not model.backbone.training and model.head.training


def test_a_model_in_train_mode_trains_in_train_mode_after_evaluations_and_callbacks():
    """The other half: the default (all in train mode) gives dropout and batch statistics at every step,
    even after an evaluation or a callback left the model in eval mode."""
    xs, ys, xt, yt = _data()
    model = _bn_model(dropout=0.5)
    modes = _modes_seen(model.bottleneck)
    t = Trainer(model, "dann", steps=9, batch_size=8, eval_every=2, **QUIET)
    t.fit((xs, ys), xt, eval_sets={"target": (xt, yt)}, callback=lambda tr: tr.model.eval(), callback_every=3)
    assert modes.count(True) == 9
    assert all(m.training for m in model.modules()) and all(m.training for m in t.method.modules())
    assert int(model.backbone[1].num_batches_tracked) == 9


def test_a_model_entirely_in_eval_mode_warns():
    xs, ys, _, _ = _data()
    model = _bn_model().eval()
    with pytest.warns(UserWarning, match=r"eval mode.*model.train\(\)"):
        Trainer(model, steps=2, batch_size=8, **QUIET).fit((xs, ys))
    assert not model.training


# ---------------------------------------------------------------------------------------------
# 8. Small data sets: one-row batches with batch norm, batches larger than the set.

def test_finetune_with_one_labelled_target_row_and_batch_norm_runs():
    xs, ys, xt, yt = _data()
    model = _bn_model()
    t = Trainer(model, "finetune", steps=10, batch_size=8, **QUIET)
    snaps = {}
    with pytest.warns(UserWarning, match=r"target_labeled has 1 row.*batch-norm"):
        h = t.fit((xs, ys), target_labeled=(xt[:1], yt[:1]),
                  callback=lambda tr: snaps.update({tr.step: _state(tr.model.backbone[1])}), callback_every=5)
    assert t.step == 10 and h.train[-1]["step"] == 10 and all(np.isfinite(r["loss"]) for r in h.train)
    # one-row batches are normalised with the running statistics, which they do not update
    assert int(snaps[5]["num_batches_tracked"]) == 5
    assert all(torch.equal(snaps[5][k], snaps[10][k]) for k in ("running_mean", "running_var", "num_batches_tracked"))
    assert not torch.equal(snaps[5]["weight"], snaps[10]["weight"])  # the backbone still trains
    assert model.backbone[1].training  # the mode is the user's again after fit
    assert not model.backbone[1]._forward_pre_hooks  # no hook left behind


def test_one_row_batches_without_running_statistics_are_refused_at_set_up():
    xs, ys, xt, yt = _data()
    torch.manual_seed(0)
    model = AdaptModel(nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16, track_running_stats=False), nn.ReLU()),
                       num_classes=3, bottleneck_dim=None)
    with pytest.raises(ValueError, match=r"target_labeled has 1 row.*track_running_stats"):
        Trainer(model, "finetune", steps=4, batch_size=8, **QUIET).fit((xs, ys), target_labeled=(xt[:1], yt[:1]))


def test_a_batch_larger_than_the_data_warns_naming_the_argument_and_sizes():
    xs, ys, xt, _ = _data(n_source=100, n_target=50)
    t = Trainer(_bn_model(), "dann", steps=2, batch_size=64, **QUIET)
    with pytest.warns(UserWarning, match=r"target has 50 rows but target_batch_size is 64"):
        t.fit((xs, ys), xt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(_bn_model(), "dann", steps=2, batch_size=32, **QUIET).fit((xs, ys), xt)


def test_the_batch_rules_are_in_the_trainer_docstring():
    doc = " ".join(Trainer.__doc__.split())
    assert "drop" in doc and "min(batch_size, N)" in doc and "one row" in doc


# ---------------------------------------------------------------------------------------------
# 11. Array-likes, feature dimensions, dtypes.

def test_numpy_arrays_and_lists_are_accepted_like_tensors():
    xs, ys, xt, yt = _data()
    ref = Trainer(_bn_model(), "dann", steps=6, batch_size=8, **QUIET)
    ref.fit((xs, ys), xt, eval_sets={"t": (xt, yt)})
    t = Trainer(_bn_model(), "dann", steps=6, batch_size=8, **QUIET)
    # float64 arrays become the model's float32, integer labels int64
    h = t.fit((xs.double().numpy(), ys.int().numpy()), xt.double().numpy(), eval_sets={"t": (xt.tolist(), yt.tolist())})
    assert all(torch.equal(a, b) for a, b in zip(ref.model.state_dict().values(), t.model.state_dict().values()))
    assert h.eval == ref.history.eval
    logits = t.predict(xt.numpy().astype(np.float64))
    assert logits.dtype == torch.float32 and torch.equal(logits, t.predict(xt))
    assert t.evaluate((xt.numpy(), yt.numpy())) == t.evaluate((xt, yt))
    assert torch.equal(t.predict(xt.tolist()), t.predict(xt))


def test_a_feature_dimension_mismatch_names_both_dimensions():
    xs, ys, xt, yt = _data(in_dim=16)
    t = Trainer(_bn_model(in_dim=16), "dann", steps=2, batch_size=8, **QUIET)
    with pytest.raises(ValueError, match="target has 20 features but the model's backbone expects 16"):
        t.fit((xs, ys), torch.randn(30, 20))
    with pytest.raises(ValueError, match="source has 12 features but the model's backbone expects 16"):
        t.fit((torch.randn(30, 12), ys[:30]), xt)
    with pytest.raises(ValueError, match=r"eval_sets\['t'\] has 20 features"):
        t.fit((xs, ys), xt, eval_sets={"t": (torch.randn(5, 20), yt[:5])})
    with pytest.raises(ValueError, match="x has 20 features but the model's backbone expects 16"):
        t.predict(torch.randn(5, 20))
    with pytest.raises(ValueError, match="data has 20 features but the model's backbone expects 16"):
        t.evaluate((torch.randn(5, 20), yt[:5]))
    assert t.step == 0  # nothing trained


def test_the_dtype_error_names_the_dtype_to_convert_to():
    xs, ys, xt, _ = _data()
    t = Trainer(_bn_model(), "dann", steps=1, **QUIET)
    with pytest.raises(TypeError, match=r"x.to\(torch.float32\).*model.to\(torch.float64\)"):
        t.fit((xs.double(), ys), xt)
    with pytest.raises(TypeError, match=r"x.to\(torch.float32\).*model.to\(torch.float64\)"):
        t.predict(xt.double())


# ---------------------------------------------------------------------------------------------
# 10. Divergence: FloatingPointError naming the step and what to try.

def test_divergence_names_the_step_and_what_to_try():
    xs, ys, _, _ = _data()
    t = Trainer(_bn_model(), "source-only", steps=30, batch_size=8, lr=1e6, lr_schedule="constant", **QUIET)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step (\d+) of 30.*lower learning rate.*"
                                                 r"max_grad_norm") as info:
        t.fit((xs * 1e3, ys))
    step = int(info.value.args[0].split("step ")[1].split(" ")[0])
    assert t.step == step - 1  # the parameters are those before the step that diverged
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    assert all(m.training for m in t.model.modules())  # modes (and threads) restored on the way out


def test_modes_and_threads_are_restored_when_fit_raises():
    xs, ys, _, _ = _data()
    model = _bn_model()
    model.backbone.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def boom(tr):
            tr.model.eval()
            assert torch.get_num_threads() == 1
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            Trainer(model, steps=5, batch_size=8, **QUIET).fit((xs, ys), callback=boom, callback_every=2)
        assert torch.get_num_threads() == 2
        assert not model.backbone.training and model.head.training and model.training
    finally:
        torch.set_num_threads(previous)


def test_max_grad_norm_clips_the_update():
    xs, ys, _, _ = _data()
    t = Trainer(_bn_model(), "source-only", steps=1, batch_size=8, lr=1.0, momentum=0.0, weight_decay=0.0,
                max_grad_norm=1e-3, **QUIET)
    before = torch.cat([p.detach().flatten().clone() for p in t.model.parameters()])
    t.fit((xs, ys))
    after = torch.cat([p.detach().flatten() for p in t.model.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-4)
    with pytest.raises(ValueError, match="max_grad_norm"):
        Trainer(_bn_model(), max_grad_norm=0.0)


# ---------------------------------------------------------------------------------------------
# 15. Threads: one intra-op thread for small models on the CPU, during fit only.

def test_small_models_train_with_one_thread_and_the_setting_is_restored():
    xs, ys, _, _ = _data()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        Trainer(_bn_model(), steps=2, batch_size=8, **QUIET).fit(
            (xs, ys), callback=lambda tr: seen.append(torch.get_num_threads()), callback_every=1)
        assert seen == [1, 1] and torch.get_num_threads() == 2
        seen.clear()
        Trainer(_bn_model(), steps=1, batch_size=8, num_threads=None, **QUIET).fit(
            (xs, ys), callback=lambda tr: seen.append(torch.get_num_threads()))
        assert seen == [2]
        big = AdaptModel(mlp(8, [1024, 1024]), num_classes=3, bottleneck_dim=None)  # > 1e6 parameters
        Trainer(big, steps=1, batch_size=8, **QUIET).fit((xs, ys), callback=lambda tr: seen.append(torch.get_num_threads()))
        assert seen == [2, 2] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="num_threads"):
            Trainer(_bn_model(), num_threads=0)
    finally:
        torch.set_num_threads(previous)
