"""Trainer overhead: DANN on Office-Caltech10 SURF (amazon -> webcam) through adaptlib.Trainer
versus a hand-written PyTorch loop doing the same computation on the same batches.

Both runs start from the same weights and draw the same batches; the test first checks that
they end with the same parameters (so the comparison is of equal work), then times each.
Goal (issue 2): the Trainer's median time is within 10 % of the hand-written loop's.

    ADAPTLIB_DATA=../shared/data python -m pytest benchmarks/test_trainer_overhead.py
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
