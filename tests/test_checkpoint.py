"""Checkpoints: a run killed at step 17 and resumed equals, bit for bit, the uninterrupted run.

Also: the file is safe to load (``weights_only=True``), written atomically, and refused when
it was saved with other settings or data.
"""
import os
import pickle

import pytest
import torch
from torch.utils.data import TensorDataset

from adaptlib import AdaptModel, Trainer, mlp

STEPS, KILL = 40, 17  # 17 is mid-epoch for every stream below and mid logging interval (log_every=5)
SETTINGS = dict(steps=STEPS, batch_size=16, log_every=5, eval_every=10, progress_bar=False)

CASES = {
    "dann": dict(method="dann"),
    "dann-adam": dict(method="dann", optimizer="adam", lr=1e-3),
    "dan": dict(method="dan"),
    # L2-SP with the phase switch at step 12, before the kill: the anchor must come from the checkpoint.
    "finetune-switch-before-kill": dict(method="finetune", method_kwargs={"l2sp": 1.0, "source_fraction": 0.3}),
    # ... and at step 20, after the kill: the resumed run must take the anchor at step 20 itself.
    "finetune-switch-after-kill": dict(method="finetune", method_kwargs={"l2sp": 1.0, "source_fraction": 0.5}),
}


class Killed(Exception):
    pass


def _model(seed=0):
    torch.manual_seed(seed)
    return AdaptModel(mlp(800, [64], dropout=0.5), num_classes=10, bottleneck_dim=32)


def _fit(trainer, data, datasets=False, **kwargs):
    xs, ys, xt, yt = data
    m = trainer.method
    source = TensorDataset(xs[:77], ys[:77]) if datasets else (xs, ys)
    target = (TensorDataset(xt[:45], yt[:45]) if datasets else xt) if m.uses_target else None
    labelled = (xt[:20], yt[:20]) if m.uses_target_labels else None
    return trainer.fit(source, target, target_labeled=labelled, eval_sets={"target": (xt, yt)}, **kwargs)


def _kill_at(trainer, step):
    original = trainer.method.on_step_start

    def hook(model, progress):
        if progress.step == step:
            raise Killed
        original(model, progress)

    trainer.method.on_step_start = hook


def _state(trainer):
    return {**{"model." + k: v for k, v in trainer.model.state_dict().items()},
            **{"method." + k: v for k, v in trainer.method.state_dict().items()}}


def _assert_same_run(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k
    assert a.history.train == b.history.train
    assert a.history.eval == b.history.eval
    assert a.step == b.step == STEPS


@pytest.fixture(scope="module")
def reference(surf_small):
    """The uninterrupted runs, once per case (and per input kind)."""
    cache = {}

    def get(case, datasets=False):
        if (case, datasets) not in cache:
            t = Trainer(_model(), **CASES[case], **SETTINGS)
            _fit(t, surf_small, datasets)
            cache[case, datasets] = t
        return cache[case, datasets]

    return get


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_and_resumed_run_is_bit_identical(case, surf_small, reference, tmp_path):
    ref = reference(case)
    first = Trainer(_model(), **CASES[case], **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=KILL)
    _kill_at(first, KILL)
    with pytest.raises(Killed):
        _fit(first, surf_small)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == KILL
    # A new process: other initial weights, other global RNG state; everything comes from the file.
    torch.manual_seed(12345)
    resumed = Trainer(_model(seed=7), **CASES[case], **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=KILL)
    history = _fit(resumed, surf_small, resume=True)
    _assert_same_run(ref, resumed)
    assert history is resumed.history and [r["step"] for r in history.eval] == [10, 20, 30, 40]
    if case.startswith("finetune"):
        assert resumed.method.anchor.numel() == sum(p.numel() for p in resumed.model.backbone.parameters())
        assert "l2sp" in history.train[-1]
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left behind


def test_checkpoint_of_another_optimizer_kernel_resumes_with_this_processs_kernel(surf_small, reference, tmp_path):
    """A checkpoint saved by a per-tensor optimizer step (adaptlib before its fused step, or a torch
    without fused kernels) resumes with the step this process built: the saved ``fused`` and
    ``foreach`` flags are not restored, so the run ends exactly as the uninterrupted fused one."""
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 4):
        pytest.skip("torch before 2.4 has no fused CPU kernels: both runs use the per-tensor step")
    first = Trainer(_model(), **CASES["dann-adam"], **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=KILL)
    _kill_at(first, KILL)
    with pytest.raises(Killed):
        _fit(first, surf_small)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    for group in saved["optimizer"]["param_groups"]:
        assert group["fused"] is True
        group["fused"], group["foreach"] = None, False
    torch.save(saved, tmp_path / "last.pt")
    resumed = Trainer(_model(seed=7), **CASES["dann-adam"], **SETTINGS, checkpoint_dir=tmp_path)
    _fit(resumed, surf_small, resume=True)
    assert all(g["fused"] is True for g in resumed._optimizer.param_groups)
    _assert_same_run(reference("dann-adam"), resumed)


def test_resume_with_dataset_inputs_mid_epoch(surf_small, reference, tmp_path):
    """Dataset streams (77 source rows, 45 target rows, batch 16) resume at the same place of the same epoch."""
    ref = reference("dann", datasets=True)
    first = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=KILL)
    _kill_at(first, KILL)
    with pytest.raises(Killed):
        _fit(first, surf_small, datasets=True)
    streams = torch.load(tmp_path / "last.pt", weights_only=True)["streams"]
    assert streams["source"]["pos"] == 16 and streams["source"]["epoch"] == 5  # 17 = 4 epochs of 4 batches + 1
    resumed = Trainer(_model(seed=7), "dann", **SETTINGS, checkpoint_dir=tmp_path)
    _fit(resumed, surf_small, datasets=True, resume=True)
    _assert_same_run(ref, resumed)


def test_save_and_load_checkpoint_explicitly(surf_small, reference, tmp_path):
    case = "finetune-switch-before-kill"
    first = Trainer(_model(), **CASES[case], **SETTINGS)
    _kill_at(first, KILL)
    with pytest.raises(Killed):
        _fit(first, surf_small)
    path = first.save_checkpoint(tmp_path / "sub" / "at17.pt")
    resumed = Trainer(_model(seed=7), **CASES[case], **SETTINGS)
    resumed.load_checkpoint(path)
    assert resumed.step == KILL and resumed.history.train == first.history.train
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.parameters(), first.model.parameters()))
    _fit(resumed, surf_small)  # continues from the loaded checkpoint
    _assert_same_run(reference(case), resumed)
    # resume=<path> is the same in one call
    again = Trainer(_model(seed=8), **CASES[case], **SETTINGS)
    _fit(again, surf_small, resume=path)
    _assert_same_run(reference(case), again)


def test_resume_true_without_a_checkpoint_starts_fresh(surf_small, reference, tmp_path):
    t = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=tmp_path / "new")
    _fit(t, surf_small, resume=True)
    _assert_same_run(reference("dann"), t)
    assert torch.load(tmp_path / "new" / "last.pt", weights_only=True)["step"] == STEPS
    # resuming a finished run does nothing more and returns the same history
    again = Trainer(_model(seed=3), "dann", **SETTINGS, checkpoint_dir=tmp_path / "new")
    _fit(again, surf_small, resume=True)
    _assert_same_run(reference("dann"), again)


ALLOWED = (torch.Tensor, int, float, str, bool, type(None))


def _only_plain_types(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and _only_plain_types(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_only_plain_types(v) for v in obj)
    return isinstance(obj, ALLOWED)


def test_checkpoint_holds_only_plain_types(surf_small, tmp_path):
    t = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=tmp_path)
    _fit(t, surf_small)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert _only_plain_types(ckpt)
    assert ckpt["rng"]["torch"].dtype == torch.uint8
    assert ckpt["streams"]["source"]["generator"].dtype == torch.uint8
    assert ckpt["settings"]["method"] == "dann" and ckpt["settings"]["seed"] == 0
    assert all(isinstance(v, float) for r in ckpt["history"]["train"] for k, v in r.items() if k != "step")


@pytest.fixture()
def dann_checkpoint(surf_small, tmp_path):
    t = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=KILL)
    _kill_at(t, KILL)
    with pytest.raises(Killed):
        _fit(t, surf_small)
    return tmp_path


@pytest.mark.parametrize("change, message", [
    (dict(method="dan"), "method: 'dann' in the checkpoint, 'dan' now"),
    (dict(method_kwargs={"trade_off": 0.5}), "method_hparams"),
    (dict(steps=50), "steps: 40 in the checkpoint, 50 now"),
    (dict(batch_size=8), "batch_size: 16 in the checkpoint, 8 now"),
    (dict(seed=1), "seed: 0 in the checkpoint, 1 now"),
    (dict(lr=0.1), "lr: 0.01"),
])
def test_checkpoint_with_other_settings_is_refused(change, message, surf_small, dann_checkpoint):
    settings = {"method": "dann", **SETTINGS, **change}
    t = Trainer(_model(), **settings, checkpoint_dir=dann_checkpoint)
    with pytest.raises(ValueError, match="other settings") as err:
        _fit(t, surf_small, resume=True)
    assert message in str(err.value)
    with pytest.raises(ValueError, match="other settings"):
        Trainer(_model(), **settings).load_checkpoint(dann_checkpoint / "last.pt")


def test_checkpoint_with_other_data_is_refused(surf_small, dann_checkpoint):
    xs, ys, xt, yt = surf_small
    t = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=dann_checkpoint)
    with pytest.raises(ValueError, match="source: the stream was saved with n=120 but now has n=100"):
        t.fit((xs[:100], ys[:100]), xt, resume=True)


def test_resume_errors(surf_small, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _fit(Trainer(_model(), "dann", **SETTINGS), surf_small, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _fit(Trainer(_model(), "dann", **SETTINGS), surf_small, resume=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint_dir"):
        Trainer(_model(), checkpoint_every=5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(_model(), checkpoint_dir=tmp_path, checkpoint_every=0)
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an adaptlib Trainer checkpoint"):
        Trainer(_model(), **SETTINGS).load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        Trainer(_model(), **SETTINGS).load_checkpoint(tmp_path / "garbage.pt")


CALLED = []


def _side_effect(*args):
    CALLED.append(args)
    return {}


class Payload:
    """Unpickling this would call _side_effect: a stand-in for a malicious checkpoint."""

    def __reduce__(self):
        return (_side_effect, ("payload ran",))


def test_checkpoint_with_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "adaptlib.Trainer checkpoint", "model": Payload()}, path)
    with pytest.raises(ValueError, match="does not unpickle"):
        Trainer(_model(), **SETTINGS).load_checkpoint(path)
    assert CALLED == []


def test_checkpoint_is_replaced_atomically(surf_small, tmp_path, monkeypatch):
    t = Trainer(_model(), "dann", **SETTINGS, checkpoint_dir=tmp_path, checkpoint_every=10)
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(obj["step"])
        if obj["step"] == 20:  # the disk fills up half-way through the second checkpoint
            f.write(b"partial")
            raise OSError("No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        _fit(t, surf_small)
    assert calls == [10, 20]
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # the temporary file is gone
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 10  # the previous checkpoint is intact


def test_finetune_anchor_is_a_buffer_in_state_dict(surf_small):
    from adaptlib.methods import FineTune, Progress

    model = _model()
    method = FineTune(l2sp=1.0, source_fraction=0.5)
    method.setup(model)
    assert method.state_dict()["anchor"].numel() == 0
    method.on_step_start(model, Progress(60, 100))
    state = method.state_dict()
    flat = torch.cat([p.detach().flatten() for p in model.backbone.parameters()])
    assert torch.equal(state["anchor"], flat)
    other = FineTune(l2sp=1.0, source_fraction=0.5)
    other.setup(model)
    other.load_state_dict(state)
    assert torch.equal(other.anchor, flat)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.1)
    other.on_step_start(model, Progress(70, 100))  # the anchor is not re-taken once it exists
    assert torch.equal(other.anchor, flat)
    assert pickle.loads(pickle.dumps(other.anchor)).shape == flat.shape
