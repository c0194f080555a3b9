"""MCD's multi-phase step and SHOT's source-free phase, through the Trainer on real SURF data.

* MCD: phase B leaves the generator (parameters and batch-norm buffers) bit-identical while it
  changes the classifiers; every phase C leaves both classifiers bit-identical while it changes
  the generator; the logged discrepancy is the float64 formula of the two heads.
* SHOT: once the target phase starts the source data is never read, proved structurally: the
  source is a Dataset whose items raise once the target phase begins (armed before the step
  draws its batches), the Trainer holds no source stream any more, and every batch the method
  sees has ``source=None``; the same holds for a run resumed from a checkpoint of the target
  phase, and for SHOT(source_fraction=0), which takes no source at all.
"""
import math

import pytest
import torch
from torch.utils.data import Dataset

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib.methods import MCD, SHOT, Phase, Progress


def _model(in_dim, norm=True):
    torch.manual_seed(0)
    return AdaptModel(mlp(in_dim, [64], dropout=0.3), num_classes=10, bottleneck_dim=32, bottleneck_norm=norm)


def _state(*modules):
    return [t.detach().clone() for m in modules for t in list(m.parameters()) + list(m.buffers())]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


class _SpyMCD(MCD):
    """Records the generator's and both classifiers' state when each phase starts (after the previous
    phase's optimizer step)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.snapshots = []

    def phases(self, model, progress):
        out = []
        for ph in super().phases(model, progress):
            def run(m, batch, p, _ph=ph):
                self.snapshots.append((_ph.name, _state(m.backbone, m.bottleneck), _state(m.head, self.classifier2)))
                return _ph.loss_terms(m, batch, p)
            out.append(Phase(ph.name, run, ph.frozen))
        return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mcd_phase_b_keeps_the_generator_and_phase_c_the_classifiers(optimizer, surf_small):
    xs, ys, xt, _ = surf_small
    model = _model(xs.shape[1])
    method = _SpyMCD(num_generator_steps=2)
    trainer = Trainer(model, method, steps=2, batch_size=16, optimizer=optimizer, lr=0.05, progress_bar=False)
    hist = trainer.fit((xs, ys), xt)
    end = ("end", _state(model.backbone, model.bottleneck), _state(model.head, method.classifier2))
    snaps = method.snapshots + [end]
    assert [s[0] for s in snaps] == ["A", "B", "C1", "C2"] * 2 + ["end"]
    for (name, gen, cls), (_, gen_after, cls_after) in zip(snaps, snaps[1:]):
        if name == "A":  # trains everything
            assert not _same(gen, gen_after) and not _same(cls, cls_after)
        elif name == "B":  # generator frozen (its batch-norm statistics included), classifiers trained
            assert _same(gen, gen_after) and not _same(cls, cls_after)
        else:  # C: both classifiers frozen, generator trained
            assert _same(cls, cls_after) and not _same(gen, gen_after)
    rec = hist.train[-1]
    assert {"A/classification", "A/classification_2", "B/classification", "B/classification_2",
            "B/discrepancy", "C1/discrepancy", "C2/discrepancy"} <= set(rec)
    assert rec["B/discrepancy"] <= 0 <= rec["C1/discrepancy"]
    assert model.training and method.classifier2.training  # fit gives every module its mode back


def test_mcd_discrepancy_is_the_float64_formula_of_the_two_heads(surf_small):
    xs, ys, xt, _ = surf_small
    model = _model(xs.shape[1], norm=False).double().eval()
    method = MCD(trade_off=0.7).double()
    method.setup(model)
    method.double()
    from adaptlib.methods import Batch, LabeledBatch, UnlabeledBatch
    batch = Batch(LabeledBatch(xs[:16].double(), ys[:16]), UnlabeledBatch(xt[:16].double()))
    progress = Progress(0, 10)
    f = model(xt[:16].double()).features
    p1, p2 = torch.softmax(model.head(f), 1).tolist(), torch.softmax(method.classifier2(f), 1).tolist()
    ref = sum(abs(a - b) for r1, r2 in zip(p1, p2) for a, b in zip(r1, r2)) / (16 * 10)
    c = method.loss_terms(model, batch, progress, phase="C").losses["discrepancy"].detach()
    b = method.loss_terms(model, batch, progress, phase="B").losses["discrepancy"].detach()
    assert float(c) == pytest.approx(0.7 * ref, rel=1e-12) and float(b) == pytest.approx(-0.7 * ref, rel=1e-12)
    with pytest.raises(ValueError, match="phase"):
        method.loss_terms(model, batch, progress, phase="D")
    with pytest.raises(ValueError, match="num_generator_steps"):
        MCD(num_generator_steps=0)


# ------------------------------------------------------------------ SHOT
class _SourceTrap(Dataset):
    """Labelled source data that raises on any read once ``armed``; counts the reads before."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.armed = False
        self.reads = 0

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        if self.armed:
            raise AssertionError(f"source item {i} was read during source-free adaptation")
        self.reads += 1
        return self.x[i], self.y[i]


class _ArmingSHOT(SHOT):
    """Arms the source trap before the first target-phase step draws its batches; records every batch."""

    def __init__(self, trap, **kw):
        super().__init__(**kw)
        self.trap, self.batches = trap, []

    def on_step_start(self, model, progress):
        if self.in_target_phase(progress):
            self.trap.armed = True

    def loss_terms(self, model, batch, progress):
        self.batches.append((progress.step, batch))
        return super().loss_terms(model, batch, progress)


def test_shot_never_reads_source_data_during_adaptation(surf_small, tmp_path):
    xs, ys, xt, yt = surf_small
    trap = _SourceTrap(xs, ys)
    method = _ArmingSHOT(trap, source_fraction=0.5, refreshes=4)
    trainer = Trainer(_model(xs.shape[1]), method, steps=16, batch_size=16, progress_bar=False, log_every=1,
                      checkpoint_dir=tmp_path, checkpoint_every=12)
    hist = trainer.fit(trap, xt, eval_sets={"target": (xt, yt)})
    assert trap.armed and trap.reads == 8 * 16  # the source phase did read it: the trap was live
    assert "source" not in trainer._streams
    for step, batch in method.batches:
        assert (batch.source is None) == (step >= 8), step
    assert {"information", "pseudo_label"} <= set(hist.train[-1]) and "classification" in hist.train[0]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["streams"].keys() == {"target"}


def test_shot_resumes_mid_target_phase_without_source_and_bit_identically(surf_small, tmp_path):
    xs, ys, xt, _ = surf_small
    full = Trainer(_model(xs.shape[1]), SHOT(refreshes=3), steps=12, batch_size=16, progress_bar=False)
    full.fit((xs, ys), xt)
    first = Trainer(_model(xs.shape[1]), SHOT(refreshes=3), steps=12, batch_size=16, progress_bar=False,
                    checkpoint_dir=tmp_path, checkpoint_every=9)
    def interrupt(trainer):  # a pre-emption right after the checkpoint of step 9
        if trainer.step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.fit((xs, ys), xt, callback=interrupt)
    trap = _SourceTrap(xs, ys)
    trap.armed = True  # step 9 of 12 is in the target phase: the resumed run must not read source at all
    second = Trainer(_model(xs.shape[1]), SHOT(refreshes=3), steps=12, batch_size=16, progress_bar=False,
                     checkpoint_dir=tmp_path, checkpoint_every=9)
    second.fit(trap, xt, resume=True)
    assert trap.reads == 0
    assert all(torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), second.model.state_dict().values()))


def test_shot_adapts_a_source_trained_model_from_target_data_only(surf_small):
    xs, ys, xt, yt = surf_small
    model = _model(xs.shape[1])
    Trainer(model, "source-only", steps=30, batch_size=16, progress_bar=False).fit((xs, ys))
    head = _state(model.head)
    backbone = _state(model.backbone)
    shot = SHOT(source_fraction=0.0, refreshes=2)
    assert not shot.uses_source
    hist = Trainer(model, shot, steps=10, batch_size=16, progress_bar=False, log_every=5).fit(
        target=xt, eval_sets={"target": (xt, yt)})
    assert _same(head, _state(model.head))  # the source hypothesis stays frozen
    assert not _same(backbone, _state(model.backbone))
    assert math.isfinite(hist.train[-1]["information"]) and shot.pseudo_labels.shape == (xt.shape[0],)
    with pytest.raises(ValueError, match="source-free"):
        Trainer(model, SHOT(source_fraction=0.0), steps=2, progress_bar=False).fit((xs, ys), xt)
    with pytest.raises(ValueError, match="pass source"):
        Trainer(model, SHOT(), steps=2, progress_bar=False).fit(target=xt)


def test_shot_refreshes_its_pseudo_labels_evenly_in_the_target_phase():
    shot = SHOT(source_fraction=0.5, refreshes=5)
    shot.pseudo_labels = torch.zeros(3, dtype=torch.int64)
    due = [s for s in range(100) if shot.needs_target_outputs(Progress(s, 100))]
    assert due == [50, 60, 70, 80, 90]
    assert [s for s in range(7) if shot.reads_source(Progress(s, 7))] == [0, 1, 2, 3]  # 3/7 < 0.5 <= 4/7
    assert not any(SHOT(beta=0.0).needs_target_outputs(Progress(s, 10)) for s in range(10))  # SHOT-IM
    with pytest.raises(ValueError, match="source_fraction"):
        SHOT(source_fraction=1.0)
