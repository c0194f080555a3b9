"""Worker for tests/test_distributed.py, started by ``torchrun --nproc_per_node=2`` (gloo, CPU).

Each rank runs every check and saves what it computed to ``<out>/rank<r>.pt``; the test
compares the ranks with each other and with single-process computations. The data are
rebuilt from fixed seeds by :func:`problem` in the test process too.
"""
from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from adaptlib import AdaptModel, Trainer, mlp
from adaptlib.distributed import all_gather_with_grad, average_gradients, rank, world_size
from adaptlib.losses import mmd
from adaptlib.methods import DAN, DANN, Batch, DeepCORAL, LabeledBatch, Progress, UnlabeledBatch
from adaptlib.models import ModelOutput

BANDWIDTHS = (0.5, 1.0, 2.0)
SOURCE_ROWS = (5, 7)  # unequal per-rank sizes for the gather check
TARGET_ROWS = (6, 4)
BATCH = 16  # equal per-rank batch for the method checks


def problem():
    """Global float64 data: source (12, 3), target (10, 3), a (3, 3) linear map, method batches."""
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(sum(SOURCE_ROWS), 3, generator=g, dtype=torch.float64)
    xt = torch.randn(sum(TARGET_ROWS), 3, generator=g, dtype=torch.float64) + 0.5
    theta = torch.randn(3, 3, generator=g, dtype=torch.float64)
    fs = torch.randn(2 * BATCH, 8, generator=g)
    ft = torch.randn(2 * BATCH, 8, generator=g) * 1.5 + 0.3
    ys = torch.randint(0, 3, (2 * BATCH,), generator=g)
    return xs, xt, theta, fs, ft, ys


def rows(counts, r):
    start = sum(counts[:r])
    return slice(start, start + counts[r])


class Features(torch.nn.Module):
    """A stand-in model whose features are given: ``model(x)`` returns ``x`` as features."""

    feature_dim = 8

    def forward(self, x):
        return ModelOutput(features=x, logits=x[:, :3])


def gather_checks(r):
    xs, xt, theta, *_ = problem()
    xs_r = xs[rows(SOURCE_ROWS, r)].clone().requires_grad_(True)
    xt_r = xt[rows(TARGET_ROWS, r)].clone().requires_grad_(True)
    value = mmd(all_gather_with_grad(xs_r), all_gather_with_grad(xt_r), bandwidths=BANDWIDTHS)
    value.backward()
    # the same loss through a shared parameter, with the Trainer's gradient averaging
    p = torch.nn.Parameter(theta.clone())
    loss = mmd(all_gather_with_grad(xs[rows(SOURCE_ROWS, r)] @ p), all_gather_with_grad(xt[rows(TARGET_ROWS, r)] @ p),
               bandwidths=BANDWIDTHS)
    loss.backward()
    average_gradients([p])
    labels = all_gather_with_grad(torch.arange(SOURCE_ROWS[r]) + 100 * r)
    return {"mmd": value.detach(), "grad_source": xs_r.grad, "grad_target": xt_r.grad,
            "theta_grad": p.grad, "labels": labels}


def scope_checks(r):
    *_, fs, ft, ys = problem()
    sl = slice(r * BATCH, (r + 1) * BATCH)
    batch = Batch(LabeledBatch(fs[sl], ys[sl]), UnlabeledBatch(ft[sl]))
    model, progress = Features(), Progress(50, 100)
    out = {}
    for scope in ("local", "global"):
        methods = {
            "dan": DAN(multipliers=(1.0,), estimator="biased", normalize=False, warmup=False, alignment=scope),
            "coral": DeepCORAL(alignment=scope),
            "dann": DANN(dropout=0.0, alignment=scope),
        }
        for name, method in methods.items():
            torch.manual_seed(0)
            method.setup(model)
            method.eval()
            terms = method.loss_terms(model, batch, progress).losses
            out[f"{scope}/{name}"] = next(v for k, v in terms.items() if k != "classification").detach()
    return out


def trainer_runs(r):
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.randn(96, 10, generator=g), torch.randint(0, 3, (96,), generator=g)
    xt = torch.randn(80, 10, generator=g) + 0.5
    out = {}
    for name, alignment in (("dann", "global"), ("dan", "local")):
        torch.manual_seed(100 + r)  # different initialisations: the Trainer must broadcast rank 0's
        model = AdaptModel(mlp(10, [16], dropout=0.1), num_classes=3, bottleneck_dim=8)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = Trainer(model, name, method_kwargs={"alignment": alignment}, steps=10, batch_size=8, lr=0.05,
                          log_every=5, eval_every=5, progress_bar=False, device="cpu")
        history = trainer.fit((xs, ys), xt, eval_sets={"target": (xt, ys[:80])})
        out[name] = {"model": model.state_dict(), "method": trainer.method.state_dict(), "initial": initial,
                     "train": history.train, "eval": history.eval}
    trainer = Trainer(AdaptModel(mlp(10, [16]), num_classes=3), steps=1, device="cpu")
    out["first_batch"] = trainer._stream("tensor", (xs, ys), 8, 1, keep=2).next()[1]
    return out


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    r = rank()
    result = {"world_size": world_size(), "gather": gather_checks(r), "scope": scope_checks(r),
              "train": trainer_runs(r)}
    torch.save(result, f"{out_dir}/rank{r}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
