"""The Trainer's optimizer step: torch's fused kernel (what :meth:`adaptlib.Trainer` builds, through
``adaptlib.trainer._fused_optimizer``) against the per-tensor implementation that torch uses on
the CPU when ``fused`` is not asked for (``foreach=False``; its default there).

Networks: the shared MLP of ``amazon-reviews-msda`` (30000 -> 256 -> 128 + BatchNorm -> 2, 7.7 M
parameters, where the step weighed 40 % of a training step before) and the tiny MLP 20 -> 64 -> 2
of ``test_trainer_overhead.py`` (1.5 k parameters, where a fused kernel must not cost more). Both
optimizers hold the same parameter groups (backbone and head, as the Trainer's) and the same
gradients; only ``step()`` is timed. Goal: the fused step at least 2x faster on the large
network, and no slower on the tiny one. One intra-op thread, as ``adaptlib compare`` trains.

    python -m pytest benchmarks/test_optimizer_step.py
"""
import pytest
import torch

from adaptlib import AdaptModel, mlp
from adaptlib.trainer import _fused_optimizer

NETWORKS = {"mSDA MLP 30000-256-128-2": (30000, 256, 128), "tiny MLP 20-64-2": (20, 64, None)}
OPTIMIZERS = {"adam": (torch.optim.Adam, {}), "sgd": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True})}


def _groups(network):
    torch.manual_seed(0)
    inputs, hidden, bottleneck = NETWORKS[network]
    model = AdaptModel(mlp(inputs, [hidden], dropout=0.5), num_classes=2, bottleneck_dim=bottleneck)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    backbone = list(model.backbone.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in backbone)]
    return [{"params": backbone}, {"params": rest}]


@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", ["per-tensor", "fused"])
def test_optimizer_step(benchmark, network, optimizer, kind):
    torch.set_num_threads(1)
    cls, kwargs = OPTIMIZERS[optimizer]
    groups = _groups(network)
    if kind == "fused":
        opt = _fused_optimizer(cls, groups, lr=3e-4, weight_decay=5e-4, **kwargs)
        assert all(g["fused"] for g in opt.param_groups), "torch has no fused CPU kernel here"
    else:
        opt = cls(groups, lr=3e-4, weight_decay=5e-4, foreach=False, **kwargs)
    benchmark.group = f"{optimizer} step, {network}"
    benchmark.extra_info["baseline"] = kind == "per-tensor"
    tiny = network.startswith("tiny")
    benchmark.pedantic(opt.step, rounds=30 if tiny else 15, iterations=5 if tiny else 1, warmup_rounds=2)
