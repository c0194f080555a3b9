"""Reliability of the Trainer: determinism of whole tables, labels, gradient reversal, data sizes.

Every case states what adaptlib does: a result (bit-identical, exact count) or a clear error
that names the argument and says how to fix it. Never a silent wrong answer.
"""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

import adaptlib.losses.adversarial as adversarial
from adaptlib import AdaptModel, Trainer, encode_labels, mlp
from adaptlib._streams import DatasetStream, TensorStream
from adaptlib.methods import Batch, LabeledBatch, Progress, UnlabeledBatch, dann_warmup, get_method

QUIET = dict(progress_bar=False)


def _model(in_dim=800, seed=0, num_classes=10, dropout=0.5):
    torch.manual_seed(seed)
    return AdaptModel(mlp(in_dim, [64], dropout=dropout), num_classes=num_classes, bottleneck_dim=32)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _spy(method):
    """Record every batch the method sees."""
    seen = []
    original = method.loss_terms

    def spy(model, batch, progress):
        seen.append(batch)
        return original(model, batch, progress)

    method.loss_terms = spy
    return seen


# ---------------------------------------------------------------------------------------------
# 2. Determinism: the same seeds give the same table, twice.

def test_compare_twice_gives_the_same_table(data_root):
    from adaptlib.compare import CompareConfig, compare

    config = CompareConfig(methods=("dann", "finetune"), tasks=("D->W", "W->D"), seeds=2, steps=12,
                           workers=1, root=str(data_root))
    first, second = compare(config, progress=False), compare(config, progress=False)
    assert len(first.records) == 2 * 2 * 2
    key = lambda r: (r["task"], r["method"], r["seed"])  # noqa: E731
    assert [key(r) for r in first.records] == [key(r) for r in second.records]
    assert [r["accuracy"] for r in first.records] == [r["accuracy"] for r in second.records]
    assert [r["final_losses"] for r in first.records] == [r["final_losses"] for r in second.records]
    assert first.markdown() == second.markdown()
    # the seeds do make a difference (the table is not constant by accident)
    assert len({tuple(sorted(r["final_losses"].items())) for r in first.records}) == 8


# ---------------------------------------------------------------------------------------------
# 3. Labels.

@pytest.mark.parametrize("labels, codes, classes", [
    (torch.tensor([1, 3, 2, 3]), [0, 2, 1, 2], (1, 2, 3)),                    # 1-based
    (torch.tensor([0, 5, 2, 5], dtype=torch.int32), [0, 2, 1, 2], (0, 2, 5)),  # gaps, int32
    (np.array([5, 0, 2]), [2, 0, 1], (0, 2, 5)),                               # numpy ints
    (np.array(["cat", "ant", "cat"]), [1, 0, 1], ("ant", "cat")),              # numpy strings
    (["bike", "mug", "bike"], [0, 1, 0], ("bike", "mug")),                     # a list of strings
    (np.array([2.0, 1.0]), [1, 0], (1.0, 2.0)),                                # floats holding classes
])
def test_encode_labels(labels, codes, classes):
    got, got_classes = encode_labels(labels)
    assert got.dtype == torch.int64 and got.tolist() == codes and got_classes == classes
    values = labels.tolist() if hasattr(labels, "tolist") else labels
    assert [got_classes[c] for c in got.tolist()] == list(values)


def test_encode_labels_target_with_the_source_classes():
    _, classes = encode_labels(["bike", "cup", "mug"])
    codes, same = encode_labels(["mug", "mug"], classes=classes)  # the target lacks two classes
    assert codes.tolist() == [2, 2] and same == classes  # encoding it alone would have given 0
    with pytest.raises(ValueError, match="not in classes.*'phone'"):
        encode_labels(["mug", "phone"], classes=classes)
    with pytest.raises(TypeError, match="cannot be sorted together.*classes="):
        encode_labels([1, "a"])
    assert encode_labels([1, "a"], classes=("a", 1))[0].tolist() == [1, 0]
    with pytest.raises(ValueError, match="NaN"):
        encode_labels(np.array([1.0, float("nan")]))
    with pytest.raises(ValueError, match="one-dimensional"):
        encode_labels(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="empty"):
        encode_labels([])
    with pytest.raises(ValueError, match="distinct"):
        encode_labels([1], classes=(1, 1))
    with pytest.raises(TypeError, match="labels must be"):
        encode_labels("abc")


def test_labels_outside_0_to_c_minus_1_are_refused_with_the_fix(surf_small):
    xs, ys, xt, yt = surf_small
    t = Trainer(_model(), steps=1, **QUIET)
    with pytest.raises(ValueError, match=r"source labels must be class indices in 0\.\.9 \(the model has 10 "
                                         r"classes\), got values 1\.\.10.*adaptlib.encode_labels"):
        t.fit((xs, ys + 1))  # 1-based
    gaps = torch.tensor([0, 2, 5])[torch.arange(len(ys)) % 3]
    with pytest.raises(ValueError, match=r"0\.\.2 .*got values 0\.\.5.*encode_labels"):
        Trainer(_model(num_classes=3), steps=1, **QUIET).fit((xs, gaps))
    with pytest.raises(ValueError, match="got values -1"):
        t.fit((xs, ys - 1))
    with pytest.raises(TypeError, match="source labels must be integer.*float32.*encode_labels"):
        t.fit((xs, ys.float()))
    with pytest.raises(TypeError, match="source labels must be integer.*bool"):
        t.fit((xs, ys > 4))
    with pytest.raises(TypeError, match="source labels must be numbers.*encode_labels"):
        t.fit((xs, ["bike"] * len(xs)))  # array-likes are accepted (tests/test_trainer_modes.py), strings are not
    with pytest.raises(TypeError, match="source labels must be integer.*float64.*encode_labels"):
        t.fit((xs.numpy(), ys.double().numpy()))
    with pytest.raises(ValueError, match=r"eval_sets\['target'\] labels"):
        t.fit((xs, ys), eval_sets={"target": (xt, yt + 10)})
    with pytest.raises(ValueError, match="target_labeled labels"):
        Trainer(_model(), "finetune", steps=1, **QUIET).fit((xs, ys), target_labeled=(xt[:5], yt[:5] + 10))
    with pytest.raises(ValueError, match="data labels"):
        t.evaluate((xt, yt + 1))
    # ... and the fix the message points to works:
    codes, classes = encode_labels(gaps)
    Trainer(_model(num_classes=len(classes)), steps=2, **QUIET).fit((xs, codes))


def test_dataset_labels_are_checked_per_batch(surf_small):
    xs, ys, _, _ = surf_small
    with pytest.raises(ValueError, match=r"source labels must be class indices in 0\.\.9.*encode_labels"):
        Trainer(_model(), steps=3, **QUIET).fit(TensorDataset(xs, ys + 1))

    class Named(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return xs[i], "bike"

    with pytest.raises(TypeError, match="source labels must be a tensor.*got (list|tuple).*encode_labels"):
        Trainer(_model(), steps=3, **QUIET).fit(Named())


def test_integer_labels_of_any_dtype_give_the_same_run(surf_small):
    xs, ys, xt, _ = surf_small
    runs = []
    for y in (ys, ys.to(torch.int32), ys.to(torch.uint8)):
        t = Trainer(_model(), "dann", steps=5, batch_size=16, **QUIET)
        t.fit((xs, y), xt)
        runs.append(_params(t.model))
    assert all(torch.equal(a, b) for run in runs[1:] for a, b in zip(runs[0], run))


def test_missing_source_classes_warn(surf_small):
    xs, ys, _, _ = surf_small
    with pytest.warns(UserWarning, match=r"never take the values \[0\] .*encode_labels"):
        Trainer(_model(num_classes=11), steps=1, **QUIET).fit((xs, ys + 1))  # 1-based with C+1 classes


@pytest.mark.parametrize("method", ["source-only", "dann", "deepjdot"])
def test_classes_absent_from_batches_still_train(method, surf_small):
    """Only classes 0..3 in the source (6 of 10 classes never appear), batches of 4: still finite and learning."""
    xs, ys, xt, _ = surf_small
    keep = ys < 4
    t = Trainer(_model(), method, steps=30, batch_size=4, log_every=10, **QUIET)
    seen = _spy(t.method)
    with pytest.warns(UserWarning, match="never take the values"):
        h = t.fit((xs[keep], ys[keep]), xt if t.method.uses_target else None)
    assert t.step == 30 and all(math.isfinite(v) for r in h.train for v in r.values())
    assert any(torch.unique(b.source.y).numel() < 4 for b in seen)  # some batch misses a present class


def test_target_dataset_labels_never_reach_an_unsupervised_method(surf_small):
    """A target Dataset of (x, y): only x is kept (documented); a target (x, y) tuple is an error."""
    xs, ys, xt, yt = surf_small
    t = Trainer(_model(), "dan", steps=4, batch_size=16, **QUIET)
    seen = _spy(t.method)
    t.fit((xs, ys), TensorDataset(xt, yt))
    rows = {tuple(r.tolist()) for r in xt}
    for batch in seen:
        assert type(batch.target) is UnlabeledBatch and batch.target_labeled is None
        assert all(tuple(r.tolist()) in rows for r in batch.target.x)
    with pytest.raises(TypeError, match="target must be an unlabelled tensor.*eval_sets"):
        Trainer(_model(), "dan", steps=1, **QUIET).fit((xs, ys), (xt, yt))
    with pytest.raises(ValueError, match="must not get target_labeled"):
        Trainer(_model(), "dan", steps=1, **QUIET).fit((xs, ys), xt, target_labeled=(xt[:5], yt[:5]))


def test_inputs_of_another_dtype_are_refused(surf_small):
    xs, ys, xt, _ = surf_small
    t = Trainer(_model(), "dann", steps=1, **QUIET)
    with pytest.raises(TypeError, match=r"source inputs are torch.float64 but the model's parameters are "
                                        r"torch.float32.*x.to\(torch.float32\)"):
        t.fit((xs.double(), ys), xt)
    with pytest.raises(TypeError, match="target inputs are torch.float64"):
        t.fit((xs, ys), xt.double())
    with pytest.raises(TypeError, match="source inputs are torch.float64"):
        t.fit(TensorDataset(xs.double(), ys), xt)


def test_inputs_on_another_device(surf_small):
    """Inputs are moved to the trainer's device (here shown with 'meta' as the other device);
    tensors on 'meta', which hold no data, are refused by name."""
    xs, ys, xt, _ = surf_small
    gen = torch.Generator().manual_seed(0)
    meta = torch.device("meta")
    x, y = TensorStream([xs, ys], 8, gen, meta).next()
    assert x.device == meta and y.device == meta and x.shape == (8, 800)
    x, y = DatasetStream(TensorDataset(xs, ys), 8, gen, meta, keep=2).next()
    assert x.device == meta and y.device == meta and x.shape == (8, 800)
    t = Trainer(_model(), "dann", steps=1, device="cpu", **QUIET)
    with pytest.raises(ValueError, match="source inputs are on the meta device"):
        t.fit((xs.to(meta), ys), xt)
    with pytest.raises(ValueError, match="source labels are on the meta device"):
        t.fit((xs, ys.to(meta)), xt)
    with pytest.raises(ValueError, match="target inputs are on the meta device"):
        t.fit((xs, ys), xt.to(meta))


# ---------------------------------------------------------------------------------------------
# 4. Gradient reversal, at the method level and through the Trainer.

def _domain_grads(model, method, batch, progress, seed=0):
    torch.manual_seed(seed)  # the same dropout masks in both computations
    out = method.loss_terms(model, batch, progress)
    feature = list(model.backbone.parameters()) + list(model.bottleneck.parameters())
    grads = torch.autograd.grad(out.losses["domain"], feature + list(method.parameters()) + list(model.head.parameters()),
                                allow_unused=True)
    n = len(feature)
    m = len(list(method.parameters()))
    return grads[:n], grads[n:n + m], grads[n + m:]


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.9])
def test_dann_domain_gradient_is_minus_lambda_times_the_unreversed_one(fraction, surf_small, monkeypatch):
    xs, ys, xt, _ = surf_small
    model = _model()
    method = get_method("dann", trade_off=0.7)
    method.setup(model)
    batch = Batch(LabeledBatch(xs[:32], ys[:32]), UnlabeledBatch(xt[:24]))
    progress = Progress(int(fraction * 100), 100)
    lam = 0.7 * dann_warmup(fraction)
    assert method.coefficient(progress) == lam
    feat_rev, disc_rev, head_rev = _domain_grads(model, method, batch, progress)
    monkeypatch.setattr(adversarial, "gradient_reversal", lambda x, coefficient: x)  # no reversal
    feat, disc, head = _domain_grads(model, method, batch, progress)
    for g_rev, g in zip(feat_rev, feat):
        assert torch.allclose(g_rev, -lam * g, rtol=1e-5, atol=1e-9)
    assert any(g.abs().sum() > 0 for g in feat)
    for g_rev, g in zip(disc_rev, disc):  # the discriminator's own gradient is untouched
        assert torch.equal(g_rev, g)
    assert all(g is None for g in head_rev + head)  # the domain term never reaches the classifier head
    if fraction == 0.0:
        assert all(not g.any() for g in feat_rev)  # lambda_0 = 0: no reversed gradient at the first step


def test_trainer_uses_the_scheduled_lambda_at_every_step(surf_small, monkeypatch):
    xs, ys, xt, _ = surf_small
    used = []
    real = adversarial.gradient_reversal

    def recording(x, coefficient):
        used.append(coefficient)
        return real(x, coefficient)

    monkeypatch.setattr(adversarial, "gradient_reversal", recording)
    steps = 12
    t = Trainer(_model(), "dann", method_kwargs={"trade_off": 0.5, "gamma": 5.0}, steps=steps, batch_size=16,
                log_every=1, **QUIET)
    h = t.fit((xs, ys), xt)
    expected = [0.5 * dann_warmup(s / steps, 5.0) for s in range(steps)]
    assert used == expected
    assert [r["grl_coefficient"] for r in h.train] == pytest.approx(expected, abs=1e-7)


def test_trainer_step_applies_ce_minus_lambda_domain_gradient(surf_small, monkeypatch):
    """One Trainer step (plain SGD) moves the backbone by ``-lr (g_CE - lambda_p g_domain)``, with ``g_domain``
    the domain loss's gradient computed by hand without any reversal, from the same batch and weights."""
    xs, ys, xt, _ = surf_small
    model = _model(dropout=0.0)
    t = Trainer(model, "dann", method_kwargs={"trade_off": 1.0, "dropout": 0.0}, steps=10, batch_size=16,
                momentum=0.0, weight_decay=0.0, lr=0.1, lr_schedule="constant", **QUIET)
    seen = _spy(t.method)
    before = _params(model)
    original = t.method.on_step_start
    state = {}

    class Stop(Exception):
        pass

    def hook(m, progress):  # snapshot the weights before step 1, stop before step 2
        if progress.step == 1:
            state["params"], state["disc"] = _params(model), _params(t.method)
        if progress.step == 2:
            raise Stop
        original(m, progress)

    t.method.on_step_start = hook
    with pytest.raises(Stop):
        t.fit((xs, ys), xt)
    # Recompute step 1 (lambda_1 = 2/(1+e^{-1})-1 > 0) from the snapshot, by hand.
    batch, progress = seen[1], Progress(1, 10)
    lam = dann_warmup(0.1)
    after = _params(model)
    clone = _model(dropout=0.0)
    with torch.no_grad():
        for p, v in zip(clone.parameters(), state["params"]):
            p.copy_(v)
    method = get_method("dann", trade_off=1.0, dropout=0.0)
    method.setup(clone)
    with torch.no_grad():
        for p, v in zip(method.parameters(), state["disc"]):
            p.copy_(v)
    monkeypatch.setattr(adversarial, "gradient_reversal", lambda x, coefficient: x)  # no reversal
    out = method.loss_terms(clone, batch, progress)
    feature = list(clone.backbone.parameters())
    g_ce = torch.autograd.grad(out.losses["classification"], feature, retain_graph=True)
    g_dom = torch.autograd.grad(out.losses["domain"], feature)
    for p0, p1, a, b in zip(state["params"], after, g_ce, g_dom):
        assert torch.allclose(p1, p0 - 0.1 * (a - lam * b), rtol=1e-5, atol=1e-7)
    assert lam > 0 and any(b.abs().sum() > 0 for b in g_dom)
    assert not all(torch.equal(a, b) for a, b in zip(before, after))


# ---------------------------------------------------------------------------------------------
# 5. Data sizes: training always runs the requested number of steps.

class Indexed(Dataset):
    """``n`` items ``(x, y)`` whose first input feature is the item's index."""

    def __init__(self, n, num_classes=3):
        self.n, self.c = n, num_classes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i), 1.0, -1.0]), i % self.c


def _small_model():
    torch.manual_seed(0)
    return AdaptModel(mlp(3, [8]), num_classes=3, bottleneck_dim=4)


@pytest.mark.parametrize("method", ["source-only", "dann", "finetune"])
def test_a_dataset_smaller_than_the_batch_runs_all_steps(method):
    """Source of 5 items with batch 8; target 7 items with batch 32; 4 labelled target items."""
    t = Trainer(_small_model(), method, steps=11, batch_size=8, target_batch_size=32, log_every=5, **QUIET)
    seen = _spy(t.method)
    m = t.method
    h = t.fit(Indexed(5), Indexed(7) if m.uses_target else None,
              target_labeled=Indexed(4) if m.uses_target_labels else None)
    assert t.step == 11 and len(seen) == 11 and [r["step"] for r in h.train] == [5, 10, 11]
    for b in seen:
        assert b.source.x.shape[0] == 5 and sorted(b.source.x[:, 0].tolist()) == [0, 1, 2, 3, 4]
        if m.uses_target:
            assert sorted(b.target.x[:, 0].tolist()) == list(range(7))
        if m.uses_target_labels:
            assert sorted(b.target_labeled.x[:, 0].tolist()) == [0, 1, 2, 3]


def test_sizes_not_a_multiple_of_the_batch_cycle_in_full_epochs():
    """23 items, batch 5: epochs of 4 full batches (3 items left out, a different 3 each epoch)."""
    t = Trainer(_small_model(), "source-only", steps=20, batch_size=5, **QUIET)
    seen = _spy(t.method)
    t.fit(Indexed(23))
    idx = [b.source.x[:, 0].long().tolist() for b in seen]
    assert all(len(b) == 5 for b in idx)
    epochs = [sum(idx[4 * e:4 * e + 4], []) for e in range(5)]
    assert all(len(set(e)) == 20 for e in epochs)
    assert len({tuple(sorted(set(range(23)) - set(e))) for e in epochs}) > 1


def test_dataset_and_tensor_inputs_give_the_same_run(surf_small):
    """A Dataset stream draws the same permutations as a tensor stream: same seed, same run, bit for bit."""
    xs, ys, xt, yt = surf_small
    runs = []
    for wrap in (lambda *t: t if len(t) > 1 else t[0], TensorDataset):
        t = Trainer(_model(), "dann", steps=15, batch_size=16, target_batch_size=20, log_every=5, **QUIET)
        h = t.fit(wrap(xs[:77], ys[:77]), wrap(xt[:45]), eval_sets={"target": wrap(xt, yt)})
        runs.append((_params(t.model) + _params(t.method), h))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][1].train == runs[1][1].train and runs[0][1].eval == runs[1][1].eval
