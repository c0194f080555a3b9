"""Trainer overhead: DANN on Office-Caltech10 SURF (amazon -> webcam) through adaptlib.Trainer
versus a hand-written PyTorch loop doing the same computation on the same batches.

Both runs start from the same weights and draw the same batches; the test first checks that
they end with the same parameters (so the comparison is of equal work), then times each.
Goal (issue 2): the Trainer's median time is within 10 % of the hand-written loop's.

Second part (issue 9, item 15): the per-step cost of tiny networks, where the Trainer's own
work and the thread pool weigh most. MLP 20 -> 64 -> 2 (no bottleneck), batch 32 (+ 32
target rows for DANN), 200 steps on synthetic Gaussian data; a hand-written loop (one
optimizer group, what a user writes) against the Trainer, each with one intra-op thread and
with torch's default thread count (taken when this module is imported). The Trainer's default
``num_threads="auto"`` uses one thread for such models. Goal: the Trainer within 1.5x of the
hand-written loop.

    ADAPTLIB_DATA=../shared/data python -m pytest benchmarks/test_trainer_overhead.py
    python -m pytest benchmarks/test_trainer_overhead.py -k tiny    # the tiny-network part only
"""
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaptlib import AdaptModel, DomainDiscriminator, Trainer, mlp
from adaptlib.datasets import load_office_caltech10_surf

STEPS, BATCH, LR, SEED = 300, 32, 0.01, 0
DEFAULT_THREADS = torch.get_num_threads()  # torch's default, before any test sets it


@pytest.fixture(scope="module")
def data():
    root = os.environ.get("ADAPTLIB_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    src = load_office_caltech10_surf("amazon", root=root)
    tgt = load_office_caltech10_surf("webcam", root=root)
    return src.x, src.y, tgt.x


def _model():
    torch.manual_seed(123)
    return AdaptModel(mlp(800, [256], dropout=0.5), num_classes=10, bottleneck_dim=128)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def hand_written_dann(model, xs, ys, xt):
    """DANN written out by hand: what a user would write without adaptlib."""
    torch.manual_seed(SEED)
    disc = DomainDiscriminator(model.feature_dim, 256, dropout=0.5)
    backbone = list(model.backbone.parameters())
    rest = list(model.bottleneck.parameters()) + list(model.head.parameters())
    opt = torch.optim.SGD([{"params": backbone}, {"params": rest}, {"params": disc.parameters()}],
                          lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
    gs = torch.Generator().manual_seed(SEED * 1000003 + 1)
    gt = torch.Generator().manual_seed(SEED * 1000003 + 2)
    ps, pt, ks, kt = None, None, len(xs), len(xt)
    model.train()
    disc.train()
    for step in range(STEPS):
        p = step / STEPS
        for g in opt.param_groups:
            g["lr"] = LR * (1 + 10 * p) ** -0.75
        if ks + BATCH > len(xs):
            ps, ks = torch.randperm(len(xs), generator=gs), 0
        if kt + BATCH > len(xt):
            pt, kt = torch.randperm(len(xt), generator=gt), 0
        i, j = ps[ks:ks + BATCH], pt[kt:kt + BATCH]
        ks, kt = ks + BATCH, kt + BATCH
        out = model(torch.cat([xs[i], xt[j]]))
        cls = F.cross_entropy(out.logits[:BATCH], ys[i])
        lam = 2 / (1 + math.exp(-10 * p)) - 1
        d = disc(_Reverse.apply(out.features, lam)).squeeze(1)
        dom = 0.5 * (F.binary_cross_entropy_with_logits(d[:BATCH], torch.ones(BATCH))
                     + F.binary_cross_entropy_with_logits(d[BATCH:], torch.zeros(BATCH)))
        opt.zero_grad(set_to_none=True)
        (cls + dom).backward()
        opt.step()
    return model


def adaptlib_dann(model, xs, ys, xt):
    trainer = Trainer(model, "dann", steps=STEPS, batch_size=BATCH, lr=LR, seed=SEED, device="cpu",
                      progress_bar=False)
    trainer.fit((xs, ys), xt)
    return model


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_computation(data):
    a = _flat(hand_written_dann(_model(), *data))
    b = _flat(adaptlib_dann(_model(), *data))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.benchmark(group="trainer-overhead: DANN on SURF A->W, 300 steps")
def test_hand_written_loop(benchmark, data):
    torch.set_num_threads(1)
    benchmark.extra_info["baseline"] = True
    benchmark.pedantic(lambda: hand_written_dann(_model(), *data), rounds=11, warmup_rounds=2)


@pytest.mark.benchmark(group="trainer-overhead: DANN on SURF A->W, 300 steps")
def test_adaptlib_trainer(benchmark, data):
    torch.set_num_threads(1)
    benchmark.pedantic(lambda: adaptlib_dann(_model(), *data), rounds=11, warmup_rounds=2)


# --------------------------------------------------------------------------------------------
# Tiny networks (issue 9, item 15): MLP 20 -> 64 -> 2, batch 32, source-only and DANN.

TINY_STEPS, TINY_DIM, TINY_HIDDEN = 200, 20, 64


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(1000, TINY_DIM, generator=g)
    ys = (xs[:, 0] + 0.5 * xs[:, 1] > 0).long()
    xt = torch.randn(800, TINY_DIM, generator=g) * 1.5 + 0.5
    return xs, ys, xt


def _tiny_model():
    torch.manual_seed(123)
    return AdaptModel(mlp(TINY_DIM, [TINY_HIDDEN]), num_classes=2, bottleneck_dim=None)


def hand_written_tiny(method, xs, ys, xt, steps=TINY_STEPS):
    """The tiny run written by hand: one optimizer group, the same batches and updates as the Trainer."""
    model = _tiny_model()
    torch.manual_seed(SEED)
    disc = DomainDiscriminator(model.feature_dim, 256, dropout=0.5) if method == "dann" else None
    params = list(model.parameters()) + (list(disc.parameters()) if disc is not None else [])
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
    gs = torch.Generator().manual_seed(SEED * 1000003 + 1)
    gt = torch.Generator().manual_seed(SEED * 1000003 + 2)
    ps, pt, ks, kt = None, None, len(xs), len(xt)
    ones, zeros = torch.ones(BATCH), torch.zeros(BATCH)
    for step in range(steps):
        p = step / steps
        opt.param_groups[0]["lr"] = LR * (1 + 10 * p) ** -0.75
        if ks + BATCH > len(xs):
            ps, ks = torch.randperm(len(xs), generator=gs), 0
        i = ps[ks:ks + BATCH]
        ks += BATCH
        if disc is None:
            loss = F.cross_entropy(model(xs[i]).logits, ys[i])
        else:
            if kt + BATCH > len(xt):
                pt, kt = torch.randperm(len(xt), generator=gt), 0
            j = pt[kt:kt + BATCH]
            kt += BATCH
            out = model(torch.cat([xs[i], xt[j]]))
            d = disc(_Reverse.apply(out.features, 2 / (1 + math.exp(-10 * p)) - 1)).squeeze(1)
            loss = F.cross_entropy(out.logits[:BATCH], ys[i]) + 0.5 * (
                F.binary_cross_entropy_with_logits(d[:BATCH], ones) + F.binary_cross_entropy_with_logits(d[BATCH:], zeros))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def adaptlib_tiny(method, xs, ys, xt, steps=TINY_STEPS, num_threads="auto"):
    model = _tiny_model()
    trainer = Trainer(model, method, steps=steps, batch_size=BATCH, lr=LR, seed=SEED, device="cpu",
                      progress_bar=False, num_threads=num_threads)
    trainer.fit((xs, ys), xt if method == "dann" else None)
    return model


@pytest.mark.parametrize("method", ["source-only", "dann"])
def test_tiny_same_computation(method, tiny_data):
    torch.set_num_threads(1)
    a = _flat(hand_written_tiny(method, *tiny_data))
    b = _flat(adaptlib_tiny(method, *tiny_data))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _tiny_bench(benchmark, fn, threads, rounds=9):
    benchmark.extra_info["steps"] = TINY_STEPS
    benchmark.extra_info["threads"] = threads

    def setup():
        torch.set_num_threads(threads)

    benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=2)
    torch.set_num_threads(1)


@pytest.mark.parametrize("method", ["source-only", "dann"])
@pytest.mark.parametrize("threads", ["1", "default"])
def test_tiny_hand_written_loop(benchmark, tiny_data, method, threads):
    """Baseline of each group: the hand-written loop with one thread."""
    n = 1 if threads == "1" else DEFAULT_THREADS
    benchmark.group = f"tiny MLP 20-64-2, {method}, batch 32, {TINY_STEPS} steps"
    benchmark.extra_info["baseline"] = threads == "1"
    _tiny_bench(benchmark, lambda: hand_written_tiny(method, *tiny_data), n)


@pytest.mark.parametrize("method", ["source-only", "dann"])
@pytest.mark.parametrize("threads", ["auto", "default"])
def test_tiny_adaptlib_trainer(benchmark, tiny_data, method, threads):
    """``auto``: the Trainer's default (one thread for this model); ``default``: ``num_threads=None``
    with torch's default thread count."""
    benchmark.group = f"tiny MLP 20-64-2, {method}, batch 32, {TINY_STEPS} steps"
    if threads == "auto":
        _tiny_bench(benchmark, lambda: adaptlib_tiny(method, *tiny_data), DEFAULT_THREADS)
    else:
        _tiny_bench(benchmark, lambda: adaptlib_tiny(method, *tiny_data, num_threads=None), DEFAULT_THREADS)
