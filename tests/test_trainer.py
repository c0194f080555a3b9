"""The Trainer: determinism, data streams of unequal sizes, schedules, errors."""
import math

import pytest
import torch

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib._streams import TensorStream
from adaptlib.trainer import lr_factor


def _model(in_dim, seed=0):
    torch.manual_seed(seed)
    return AdaptModel(mlp(in_dim, [64], dropout=0.5), num_classes=10, bottleneck_dim=32)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("method", ["dann", "dan"])
def test_same_seed_same_result(method, surf_small):
    xs, ys, xt, yt = surf_small
    runs = []
    for _ in range(2):
        t = Trainer(_model(xs.shape[1]), method, steps=30, batch_size=16, seed=3, log_every=10, progress_bar=False)
        h = t.fit((xs, ys), xt, eval_sets={"target": (xt, yt)})
        runs.append((_params(t.model), h))
    assert torch.equal(runs[0][0], runs[1][0])
    assert runs[0][1].train == runs[1][1].train and runs[0][1].eval == runs[1][1].eval
    t = Trainer(_model(xs.shape[1]), method, steps=30, batch_size=16, seed=4, progress_bar=False)
    t.fit((xs, ys), xt)
    assert not torch.equal(runs[0][0], _params(t.model))


def test_training_reduces_source_loss_and_logs(surf_small):
    xs, ys, xt, yt = surf_small
    t = Trainer(_model(xs.shape[1]), "source-only", steps=200, batch_size=32, log_every=50, eval_every=100,
                progress_bar=False)
    h = t.fit((xs, ys), eval_sets={"source": (xs, ys), "target": (xt, yt)})
    assert [r["step"] for r in h.train] == [50, 100, 150, 200]
    assert h.train[-1]["classification"] < 0.5 * h.train[0]["classification"]
    assert [r["step"] for r in h.eval] == [100, 200]
    assert h.final_eval()["source/accuracy"] > 0.9
    assert h.train[-1]["lr"] == pytest.approx(0.01 * lr_factor("inv", 199 / 200))


def test_streams_run_for_the_requested_steps_with_unequal_sizes():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(10.0).unsqueeze(1)
    s = TensorStream([x], batch_size=4, generator=gen, device=torch.device("cpu"))
    seen = [s.next()[0].flatten().tolist() for _ in range(10)]
    assert all(len(b) == 4 for b in seen)  # 10 is not a multiple of 4: the last partial batch is dropped
    for epoch in range(5):  # within an epoch no sample repeats
        rows = seen[2 * epoch] + seen[2 * epoch + 1]
        assert len(set(rows)) == 8
    small = TensorStream([x[:3]], batch_size=32, generator=gen, device=torch.device("cpu"))
    assert sorted(small.next()[0].flatten().tolist()) == [0.0, 1.0, 2.0]


def test_tiny_target_and_odd_sizes_train_all_steps(surf_small):
    xs, ys, xt, _ = surf_small
    t = Trainer(_model(xs.shape[1]), "dan", steps=25, batch_size=32, target_batch_size=20, log_every=5,
                progress_bar=False)
    h = t.fit((xs[:77], ys[:77]), xt[:7])
    assert t.step == 25 and h.train[-1]["step"] == 25
    assert all(math.isfinite(r["loss"]) for r in h.train)


def test_dataset_inputs_match_tensor_inputs_in_shape(surf_small):
    from torch.utils.data import TensorDataset

    xs, ys, xt, yt = surf_small
    t = Trainer(_model(xs.shape[1]), "dann", steps=10, batch_size=16, progress_bar=False)
    h = t.fit(TensorDataset(xs, ys), TensorDataset(xt, yt), eval_sets={"target": TensorDataset(xt, yt)})
    assert 0.0 <= h.final_eval()["target/accuracy"] <= 1.0


def test_lr_schedules():
    assert lr_factor("inv", 0.0) == 1.0
    assert lr_factor("inv", 1.0) == pytest.approx(11 ** -0.75)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0.5)


def test_bad_arguments_are_named(surf_small):
    xs, ys, xt, yt = surf_small
    m = _model(xs.shape[1])
    with pytest.raises(ValueError, match="steps"):
        Trainer(m, steps=0)
    with pytest.raises(ValueError, match="optimizer"):
        Trainer(m, optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        Trainer(m, lr=-1.0)
    with pytest.raises(ValueError, match="needs unlabelled target"):
        Trainer(m, "dann", progress_bar=False).fit((xs, ys))
    with pytest.raises(ValueError, match="source labels"):
        Trainer(m, steps=1, progress_bar=False).fit((xs, ys + 1))  # 1-based labels: 10 is out of range
    with pytest.raises(TypeError, match="source labels"):
        Trainer(m, steps=1, progress_bar=False).fit((xs, ys.float()))
    bad = xs.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="source inputs contain NaN"):
        Trainer(m, steps=1, progress_bar=False).fit((bad, ys))


def test_non_finite_loss_is_reported(surf_small):
    xs, ys, xt, _ = surf_small
    t = Trainer(_model(xs.shape[1]), "source-only", steps=20, lr=1e12, momentum=0.0, weight_decay=0.0,
                lr_schedule="constant", log_every=1, progress_bar=False)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        t.fit((xs * 1e6, ys))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_step_is_fused_and_equals_the_per_tensor_update(optimizer):
    """The Trainer builds torch's fused optimizer (one kernel per step) where torch has one; its
    update equals the per-tensor implementation's (torch's reference loop) up to float round-off."""
    import copy

    torch.manual_seed(0)
    model = AdaptModel(mlp(12, [16]), num_classes=3, bottleneck_dim=8)
    reference_model = copy.deepcopy(model)
    t = Trainer(model, optimizer=optimizer, lr=0.05, weight_decay=1e-3, momentum=0.9)
    fused = t._make_optimizer()
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4):
        pytest.skip("torch before 2.4 has no fused CPU kernels: the Trainer uses the per-tensor step")
    assert all(g["fused"] for g in fused.param_groups), "torch >= 2.4 has fused CPU kernels for all three"
    names = dict(model.named_parameters())
    reference_params = dict(reference_model.named_parameters())
    index = {id(p): n for n, p in names.items()}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "fused": False, "foreach": False,
               "params": [reference_params[index[id(p)]] for p in g["params"]]} for g in fused.param_groups]
    reference = type(fused)(groups, lr=0.05)
    initial = {n: p.detach().clone() for n, p in names.items()}
    for _ in range(5):
        for n, p in names.items():
            p.grad = torch.randn_like(p)
            reference_params[n].grad = p.grad.clone()
        fused.step()
        reference.step()
    for n, p in names.items():
        assert not torch.equal(p, initial[n]), f"{n} did not move"
        torch.testing.assert_close(p, reference_params[n], rtol=1e-5, atol=1e-6, msg=n)


def test_optimizer_falls_back_where_torch_has_no_fused_kernel():
    from adaptlib.trainer import _fused_optimizer

    # torch >= 2.4 refuses integer parameters only at the first step(): decided before building
    counts = torch.nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)
    opt = _fused_optimizer(torch.optim.Adam, [{"params": [torch.nn.Parameter(torch.ones(2)), counts]}], lr=0.1)
    assert not opt.param_groups[0]["fused"]
    opt.step()  # no gradients: a no-op, but the fused kernel would have raised here

    class NoFusedKernel(torch.optim.SGD):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kwargs)

    w = torch.nn.Parameter(torch.ones(3))
    opt = _fused_optimizer(NoFusedKernel, [w], lr=0.5, weight_decay=0.0)
    assert isinstance(opt, NoFusedKernel) and not opt.param_groups[0]["fused"]
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(w.detach(), torch.full((3,), 0.5))
