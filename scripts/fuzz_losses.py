#!/usr/bin/env python
"""Hypothesis-driven fuzz run of every public loss in :mod:`adaptlib.losses`.

Each example draws a loss's inputs: sizes 1..64, feature dimension 1..16, scales 1e-6..1e4,
float32/float64 (and sometimes float16, bfloat16 or int64), structure (random, identical
clouds, duplicated rows, constant rows, all zeros, a large common offset) and, with some
probability, a defect (NaN, inf, mismatched dtypes, out-of-range labels). It then checks:

* the call either returns, or raises ``ValueError``/``TypeError`` whose message names one of
  the loss's arguments (the documented errors); anything else is a failure;
* a returned value and the gradients w.r.t. every floating input are finite (no NaN/inf);
* a ``SinkhornResult`` whose value is not finite is never flagged ``converged``.

Warnings (e.g. "did not converge") are allowed and counted. Nothing is shrunk: a failure is
recorded with its inputs and the run goes on, so the per-loss counts cover every example.

Usage::

    python scripts/fuzz_losses.py --examples 10000 [--seed 0] [--show 5]

Prints, per loss, the examples run, returned values, documented errors raised, warnings and
failures, and exits with status 1 if there was any failure.
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from typing import Callable, Dict, List

import torch
from hypothesis import HealthCheck, Phase, given, seed as hyp_seed, settings
from hypothesis import strategies as st

from adaptlib import losses as L

torch.set_num_threads(1)

LOSSES = [
    "mmd",
    "jmmd",
    "coral",
    "sinkhorn",
    "sinkhorn_divergence",
    "jdot",
    "domain_adversarial",
    "entropy",
    "gradient_reversal",
]
DTYPES = [torch.float32, torch.float64]
ODD_DTYPES = [torch.float16, torch.bfloat16, torch.int64]
SCALES = [1e-6, 1e-3, 1e-1, 1.0, 10.0, 1e2, 1e3, 1e4]
STRUCTURES = ["random", "identical", "duplicates", "constant", "zeros", "offset"]
DEFECTS = ["nan", "inf", "dtype_mismatch", "odd_dtype"]

stats: Dict[str, Counter] = defaultdict(Counter)
failures: Dict[str, List[str]] = defaultdict(list)


def arg_names(fn: Callable) -> List[str]:
    return list(inspect.signature(fn).parameters)


# ----------------------------------------------------------------------------- data
def draw_common(data):
    """dtype, scale, structure and an optional defect."""
    odd = data.draw(st.integers(0, 19)) == 0
    dtype = data.draw(st.sampled_from(ODD_DTYPES)) if odd else data.draw(st.sampled_from(DTYPES))
    scale = data.draw(st.sampled_from(SCALES))
    structure = data.draw(st.sampled_from(STRUCTURES))
    defect = data.draw(st.sampled_from(DEFECTS)) if data.draw(st.integers(0, 9)) == 0 else None
    seed = data.draw(st.integers(0, 2**31 - 1))
    return dtype, scale, structure, defect, torch.Generator().manual_seed(seed)


def make_pair(data, n, m, d, scale, structure, gen):
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    y = torch.randn(m, d, generator=gen, dtype=torch.float64) * scale + 0.5 * scale
    if structure == "identical":
        y = x.clone()
    elif structure == "duplicates":
        x = torch.cat([x[: (n + 1) // 2], x[: n // 2]])
        y = torch.cat([y[: (m + 1) // 2], y[: m // 2]])
    elif structure == "constant":
        x = x[:1].repeat(n, 1)
        y = x[:1].repeat(m, 1) if data.draw(st.booleans()) else y[:1].repeat(m, 1)
    elif structure == "zeros":
        x, y = torch.zeros(n, d, dtype=torch.float64), torch.zeros(m, d, dtype=torch.float64)
    elif structure == "offset":
        shift = data.draw(st.sampled_from([1e2, 1e3])) * max(scale, 1.0)
        x, y = x + shift, y + shift
    return x, y


def cast(t, dtype):
    if dtype in (torch.int64,):
        return t.round().to(dtype)
    return t.to(dtype)


def apply_defect(x, y, defect, gen):
    """Returns (x, y) with the defect; tensors are float64 in, any dtype out."""
    if defect in ("nan", "inf"):
        bad = float("nan") if defect == "nan" else float("inf")
        t = x if torch.rand((), generator=gen) < 0.5 else y
        i = int(torch.randint(t.shape[0], (), generator=gen))
        t[i, 0] = bad
    return x, y


def leaf(t):
    if t.is_floating_point():
        return t.detach().clone().requires_grad_()
    return t


# ----------------------------------------------------------------------------- per-loss calls
def build_call(name, data):
    """Draw inputs for loss ``name``; return (thunk returning outputs, leaves, description)."""
    dtype, scale, structure, defect, gen = draw_common(data)
    n = data.draw(st.integers(1, 64))
    m = n if data.draw(st.booleans()) else data.draw(st.integers(1, 64))
    d = data.draw(st.integers(1, 16))
    x64, y64 = make_pair(data, n, m, d, scale, structure, gen)
    x64, y64 = apply_defect(x64, y64, defect, gen)
    xd = yd = dtype
    if defect == "dtype_mismatch" and dtype in DTYPES:
        yd = torch.float64 if dtype == torch.float32 else torch.float32
    if defect == "odd_dtype":
        xd = yd = data.draw(st.sampled_from(ODD_DTYPES))
    x, y = leaf(cast(x64, xd)), leaf(cast(y64, yd))
    desc = dict(loss=name, n=n, m=m, d=d, dtype=str(dtype), scale=scale, structure=structure, defect=defect)

    if name == "mmd":
        est = data.draw(st.sampled_from(["biased", "unbiased", "linear"]))
        kw = dict(estimator=est, heuristic=data.draw(st.sampled_from(["median", "mean"])))
        if data.draw(st.booleans()):
            kw["generator"] = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
        if est != "linear" and data.draw(st.integers(0, 3)) == 0:
            kw["source_weights"] = leaf(torch.rand(n, generator=gen, dtype=torch.float64).to(x.dtype if x.is_floating_point() else torch.float32))
        if data.draw(st.integers(0, 4)) == 0:
            kw["bandwidths"] = [data.draw(st.sampled_from([1e-3, 1.0, 1e3]))] * 2
        desc.update({k: v for k, v in kw.items() if isinstance(v, str)})
        leaves = [x, y] + ([kw["source_weights"]] if "source_weights" in kw else [])
        return (lambda: L.mmd(x, y, **kw)), leaves, desc
    if name == "jmmd":
        est = data.draw(st.sampled_from(["biased", "unbiased", "linear"]))
        x2, y2 = leaf(cast(x64[:, :1] * 2, xd)), leaf(cast(y64[:, :1] * 2, yd))
        desc["estimator"] = est
        return (lambda: L.jmmd([x, x2], [y, y2], estimator=est)), [x, y, x2, y2], desc
    if name == "coral":
        return (lambda: L.coral(x, y)), [x, y], desc
    if name in ("sinkhorn", "sinkhorn_divergence"):
        eps = data.draw(st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 10.0]))
        rel = data.draw(st.booleans())  # epsilon relative to the squared scale, or absolute
        if rel:
            eps = eps * scale * scale
        scaling = data.draw(st.sampled_from([None, None, 0.5, 0.8]))
        kw = dict(epsilon=eps, max_iter=data.draw(st.sampled_from([1, 50, 300])), scaling=scaling)
        desc.update(epsilon=eps, scaling=scaling, max_iter=kw["max_iter"])
        leaves = [x, y]
        if data.draw(st.integers(0, 3)) == 0:
            w = leaf(torch.rand(m, generator=gen, dtype=torch.float64).to(x.dtype if x.is_floating_point() else torch.float32))
            kw["target_weights"] = w
            leaves.append(w)
        fn = L.sinkhorn if name == "sinkhorn" else L.sinkhorn_divergence
        return (lambda: fn(x, y, **kw)), leaves, desc
    if name == "jdot":
        c = data.draw(st.integers(1, 5))
        hi = c + (1 if defect == "nan" and data.draw(st.booleans()) else 0)  # sometimes out of range
        labels = torch.randint(0, hi, (n,), generator=gen)
        if data.draw(st.integers(0, 19)) == 0:
            labels[0] = -1
        logits = leaf(cast(torch.randn(m, c, generator=gen, dtype=torch.float64) * data.draw(st.sampled_from([1.0, 1e2, 1e4])), yd))
        solver = data.draw(st.sampled_from(["emd", "sinkhorn"]))
        alpha = data.draw(st.sampled_from([0.0, 1e-3, 1.0]))
        desc.update(solver=solver, alpha=alpha, classes=c)
        return (lambda: L.jdot(x, y, labels, logits, alpha=alpha, solver=solver, epsilon=1.0)), [x, y, logits], desc
    if name == "domain_adversarial":
        disc_dtype = x.dtype if x.is_floating_point() else torch.float32
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
        disc = torch.nn.Sequential(torch.nn.Linear(d, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).to(disc_dtype)
        coef = data.draw(st.sampled_from([0.0, 0.1, 1.0, 10.0]))
        return (lambda: L.domain_adversarial(x, y, disc, coef)), [x, y], desc
    if name == "entropy":
        red = data.draw(st.sampled_from(["mean", "sum", "none"]))
        desc["reduction"] = red
        return (lambda: L.entropy(x, red)), [x], desc
    if name == "gradient_reversal":
        coef = data.draw(st.sampled_from([0.0, 0.5, 1.0, 1e3]))
        desc["coefficient"] = coef
        return (lambda: L.gradient_reversal(x, coef)), [x], desc
    raise AssertionError(name)


def scalar_outputs(name, out):
    """The tensors to check for finiteness and to backpropagate, and a converged flag check."""
    if name == "domain_adversarial":
        return [out[0], out[1]], out[0]
    if name == "sinkhorn":
        if out.converged and not bool(torch.isfinite(out.value)):
            raise AssertionError("non-finite sinkhorn value reported as converged")
        return [out.value, out.transport_cost, out.plan, out.f, out.g], out.value + out.transport_cost
    if name == "jdot":
        return [out.value, out.plan], out.value
    if name == "gradient_reversal":
        return [out], out.sum() if out.requires_grad else None  # upstream gradient = 1
    if name == "entropy":
        return [out], out.sum()
    return [out], out


def run_one(name, data):
    thunk, leaves, desc = build_call(name, data)
    names = arg_names(getattr(L, name))
    st_ = stats[name]
    st_["examples"] += 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = thunk()
            tensors, to_back = scalar_outputs(name, out)
            if name == "gradient_reversal":
                # a layer, not a loss: the identity forward passes NaN/inf through unchanged
                if not torch.equal(out.detach().nan_to_num(), leaves[0].detach().nan_to_num()):
                    raise AssertionError("gradient_reversal changed its input")
                if not bool(torch.isfinite(leaves[0]).all()):
                    tensors, to_back = [], None
            for t in tensors:
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise AssertionError(f"non-finite output {t}")
            if to_back is not None and to_back.requires_grad:
                to_back.backward()
                for lf in leaves:
                    if lf.is_floating_point() and lf.grad is not None and not bool(torch.isfinite(lf.grad).all()):
                        raise AssertionError(f"non-finite gradient {lf.grad}")
                if name == "gradient_reversal":
                    expected = torch.full_like(leaves[0], -desc["coefficient"])
                    if not torch.equal(leaves[0].grad, expected):
                        raise AssertionError("gradient_reversal: gradient is not -coefficient")
        st_["returned"] += 1
        if caught:
            st_["warned"] += 1
    except (ValueError, TypeError) as e:
        msg = str(e)
        if any(a in msg for a in names):
            st_["documented_errors"] += 1
        else:
            st_["failures"] += 1
            failures[name].append(f"{desc}: undocumented {type(e).__name__}: {msg}")
    except Exception as e:  # noqa: BLE001 - everything else is a failure
        st_["failures"] += 1
        tb = traceback.format_exc(limit=3).strip().splitlines()[-3:]
        failures[name].append(f"{desc}: {type(e).__name__}: {e} | {' / '.join(tb)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=10000, help="total examples over all losses")
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (reproducible runs)")
    p.add_argument("--show", type=int, default=5, help="failures to print per loss")
    p.add_argument("--losses", nargs="*", default=LOSSES, choices=LOSSES)
    args = p.parse_args(argv)
    per_loss = max(1, math.ceil(args.examples / len(args.losses)))
    t0 = time.time()
    for name in args.losses:
        t1 = time.time()

        @hyp_seed(args.seed)
        @settings(
            max_examples=per_loss,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def fuzz(data):
            run_one(current[0], data)

        current = [name]
        fuzz()
        print(f"  {name}: {stats[name]['examples']} examples in {time.time() - t1:.1f}s", flush=True)
    total = Counter()
    print(f"\n{'loss':22s} {'examples':>9s} {'returned':>9s} {'doc.errors':>10s} {'warned':>7s} {'failures':>9s}")
    for name in args.losses:
        s = stats[name]
        total.update(s)
        print(f"{name:22s} {s['examples']:9d} {s['returned']:9d} {s['documented_errors']:10d} {s['warned']:7d} {s['failures']:9d}")
    print(f"{'TOTAL':22s} {total['examples']:9d} {total['returned']:9d} {total['documented_errors']:10d} {total['warned']:7d} {total['failures']:9d}")
    print(f"runtime {time.time() - t0:.1f}s")
    for name in args.losses:
        for f in failures[name][: args.show]:
            print(f"FAIL {f}")
    return 1 if total["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
