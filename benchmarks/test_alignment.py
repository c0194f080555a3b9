"""Alignment losses (issue 3): forward+backward time of adaptlib's ``mmd`` (5 bandwidths),
``sinkhorn`` and ``coral`` against the peers installed here, float32, on the CPU.

Each problem (loss, N = M, D) is one pytest-benchmark group whose baseline is adaptlib's
default call; ``benchmarks/conftest.py`` prints every row's median as a ratio to it, and for
Sinkhorn the values (``ot_eps`` = entropic OT value, ``transport_cost`` = <P, C>) with their
relative difference to adaptlib's. Problems, units and the reproduced TLlib/DeepDA MMDs are
described in ``benchmarks/alignment_cases.py``.

    python -m pytest benchmarks/test_alignment.py -q -rs           # ~15 min on 2 cores
    ADAPTLIB_BENCH_FULL=1 python -m pytest benchmarks/test_alignment.py -q -rs

Default grid: N in {256, 1024, 4096} with D = 256, plus D = 2048 at N in {256, 1024}.
``ADAPTLIB_BENCH_FULL=1``: N in {256, 1024, 4096, 16384} x D in {256, 2048}.
A case is skipped, with the reason in the output, when its estimated memory exceeds
``ADAPTLIB_BENCH_MEM_GIB`` (default 16) GiB or 85 % of the available memory, or when its time
per call, predicted from the same implementation at the previous N (N^2 scaling; N^3 for
``emd2``), exceeds ``ADAPTLIB_BENCH_MAX_CALL_S`` (default 60) seconds (never adaptlib's
default call, the baseline). Rounds are chosen so
that each case takes about ``ADAPTLIB_BENCH_CASE_S`` (default 6) seconds after one warm-up
call (between 1 and 7 rounds). ``ADAPTLIB_BENCH_THREADS`` sets torch's intra-op threads
(default: torch's own choice, 2 here).
"""
import os

import pytest
import torch

import alignment_cases as ac

FULL = os.environ.get("ADAPTLIB_BENCH_FULL", "") not in ("", "0")
MAX_CALL_S = float(os.environ.get("ADAPTLIB_BENCH_MAX_CALL_S", "60"))
CASE_S = float(os.environ.get("ADAPTLIB_BENCH_CASE_S", "6"))
if os.environ.get("ADAPTLIB_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["ADAPTLIB_BENCH_THREADS"]))


def _grid():
    if FULL:
        return [(n, d) for d in (256, 2048) for n in (256, 1024, 4096, 16384)]
    return [(n, 256) for n in (256, 1024, 4096)] + [(n, 2048) for n in (256, 1024)]


def _cases():
    out = []
    for problem in ("mmd", "sinkhorn", "coral"):
        for n, d in _grid():
            for impl in ac.implementations(problem):
                out.append(pytest.param(problem, n, d, impl.name,
                                        id=f"{problem}-N{n}-D{d}-{impl.name}"))
    return out


# measured seconds of one call per (problem, impl, D, N), to predict the next N's time
_SECONDS = {}
_DATA = {}


def _data(n, d):
    key = (n, d)
    if key not in _DATA:
        _DATA.clear()  # keep only the current problem's inputs alive
        x, y = ac.make_pair(n, n, d)
        _DATA[key] = (x.requires_grad_(), y.requires_grad_())
    return _DATA[key]


@pytest.mark.parametrize("problem,n,d,impl_name", _cases())
def test_alignment(benchmark, problem, n, d, impl_name):
    impl = next(i for i in ac.implementations(problem) if i.name == impl_name)
    benchmark.group = f"{problem} N=M={n} D={d}"
    benchmark.extra_info["baseline"] = impl.baseline
    if not impl.available[0]:
        pytest.skip(f"{impl.name}: {impl.available[1]}")
    if "cpu" not in impl.devices:
        pytest.skip(f"{impl.name}: CUDA only (Triton's CPU interpreter is for tests, far too slow to time)")
    x, y = _data(n, d)
    if problem == "sinkhorn" and (n, n, d) not in ac.ITER_GUESS and "sinkhorn_log" in impl.name:
        ac.ITER_GUESS[(n, n, d)] = ac.sinkhorn_iterations(x, y)
    need = impl.mem(n, n, d)
    limit = ac.mem_limit_bytes()
    if need > limit:
        pytest.skip(f"{impl.name}: needs ~{ac.fmt_bytes(need)} > {ac.fmt_bytes(limit)} limit")
    prev = [(pn, t) for (pp, name, pd, pn), t in _SECONDS.items()
            if pp == problem and name == impl.name and pd == d and pn < n]
    if prev and not impl.baseline:  # the baseline is never skipped for time
        pn, t = max(prev)
        predicted = t * (n / pn) ** impl.order
        if predicted > MAX_CALL_S:
            pytest.skip(f"{impl.name}: predicted ~{predicted:.0f} s per call (from {t:.2f} s at N={pn}) "
                        f"> {MAX_CALL_S:.0f} s cap")
    run, rec = impl.make(x, y)
    step = ac.fwd_bwd(run, x, y, impl.floor)
    first = ac.time_once(step)  # warm-up call, also sizes the rounds
    _SECONDS[(problem, impl.name, d, n)] = first
    if first > MAX_CALL_S and not impl.baseline:
        pytest.skip(f"{impl.name}: one call took {first:.0f} s > {MAX_CALL_S:.0f} s cap")
    rounds = max(1, min(7, int(CASE_S / max(first, 1e-9))))
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(rec)
    benchmark.extra_info["est_mem_gib"] = round(need / ac.GIB, 3)
    benchmark.extra_info["first_call_s"] = round(first, 4)
