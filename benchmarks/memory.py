"""Peak memory of one forward+backward of the alignment losses, each case in a fresh process.

Issue 3's memory goal: adaptlib's ``mmd`` and ``sinkhorn`` at N = M = 65536, D = 256 with
``path="tiled"`` in under 2 GiB, where the peers' MMDs (which form the ``(N+M)^2 x D`` tensor
of differences or several ``N^2`` kernel matrices) cannot run at N = 8192.

Each case runs in a new Python process (``--child``): it imports torch and adaptlib, creates
the float32 inputs (``alignment_cases.make_pair``), records ``ru_maxrss`` (the baseline), runs
the loss forward and backward once, and reports the peak ``ru_maxrss`` minus that baseline,
i.e. the extra resident memory the computation needed at its peak. Before launching, every
case's memory is estimated (formulas in ``alignment_cases.implementations``) and the case is
skipped, with the reason in the table, when the estimate exceeds the limit
(``--limit-gib``, default 16, and never more than 85 % of the available memory).

The tiled cases cost about 2-9 TFLOP per pass at N = 65536 (minutes on a 2-core CPU per pass);
Sinkhorn runs ``--sinkhorn-max-iter`` iterations (default 2; the peak memory of the tiled
path does not grow with the iterations, the time does). Use ``--n-tiled`` to try smaller N.

    python benchmarks/memory.py --out benchmarks/memory.md
    python benchmarks/memory.py --n-tiled 16384 --cases adaptlib-mmd-tiled   # quicker check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import alignment_cases as ac  # noqa: E402

GIB = ac.GIB


def _cases(args):
    """(key, label, problem, impl name, n, d, extra kwargs)."""
    n8, nt, d = args.n_peers, args.n_tiled, args.d
    return [
        ("tllib-mmd", "TLlib-style MMD (broadcast)", "mmd", "TLlib-style (broadcast)", n8, d),
        ("deepda-mmd", "DeepDA-style MMD (broadcast)", "mmd", "DeepDA-style (broadcast)", n8, d),
        ("skada-dan33", "skada dan_loss (33 sigmas)", "mmd", "skada dan_loss (33 sigmas, default)", n8, d),
        ("skada-dan5", "skada dan_loss (5 sigmas)", "mmd", "skada dan_loss (5 sigmas)", n8, d),
        ("adaptlib-mmd", "adaptlib mmd (default path)", "mmd", "adaptlib", n8, d),
        ("adaptlib-mmd-tiled-small", "adaptlib mmd path=tiled", "mmd", "adaptlib path=tiled", n8, d),
        ("adaptlib-mmd-tiled", "adaptlib mmd path=tiled", "mmd", "adaptlib path=tiled", nt, d),
        ("adaptlib-sinkhorn-tiled", "adaptlib sinkhorn path=tiled", "sinkhorn", "adaptlib path=tiled", nt, d),
        ("adaptlib-mmd-dense-big", "adaptlib mmd path=dense", "mmd", "adaptlib path=dense", nt, d),
    ]


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(problem: str, impl_name: str, n: int, d: int, sinkhorn_max_iter: int) -> None:
    import torch

    ac.MAX_ITER = sinkhorn_max_iter
    impl = next(i for i in ac.implementations(problem) if i.name == impl_name)
    x, y = ac.make_pair(n, n, d)
    x.requires_grad_()
    y.requires_grad_()
    run, rec = impl.make(x, y)
    step = ac.fwd_bwd(run, x, y, impl.floor)
    import warnings

    warnings.simplefilter("ignore")  # non-convergence after a few iterations is expected
    base = _maxrss_bytes()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = _maxrss_bytes()
    ok = bool(torch.isfinite(x.grad).all()) if x.grad is not None else False
    print(json.dumps({"baseline": base, "peak": peak, "seconds": seconds, "grad_finite": ok,
                      **{k: v for k, v in rec.items()}}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-peers", type=int, default=8192, help="N = M of the peer cases (default 8192)")
    p.add_argument("--n-tiled", type=int, default=65536, help="N = M of the tiled cases (default 65536)")
    p.add_argument("--d", type=int, default=256, help="feature dimension (default 256)")
    p.add_argument("--sinkhorn-max-iter", type=int, default=2, help="Sinkhorn iterations (default 2)")
    p.add_argument("--limit-gib", type=float, default=16.0, help="skip cases estimated above this")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per case before it is killed")
    p.add_argument("--cases", nargs="*", default=None, help="keys of the cases to run (default all)")
    p.add_argument("--out", type=str, default=None, help="write the Markdown table here")
    p.add_argument("--child", nargs=5, metavar=("PROBLEM", "IMPL", "N", "D", "MAXITER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        problem, impl, n, d, mi = args.child
        child(problem, impl, int(n), int(d), int(mi))
        return 0

    import torch
    from adaptlib.losses import mmd, sinkhorn

    os.environ["ADAPTLIB_BENCH_MEM_GIB"] = str(args.limit_gib)
    rows = []
    for key, label, problem, impl_name, n, d in _cases(args):
        if args.cases and key not in args.cases:
            continue
        impls = {i.name: i for i in ac.implementations(problem, include_paths=("dense", "tiled"))}
        row = {"case": label, "n": n, "d": d, "est": None, "extra": None, "seconds": None, "status": ""}
        rows.append(row)
        impl = impls.get(impl_name)
        if impl is None:
            fn = mmd if problem == "mmd" else sinkhorn
            row["status"] = (f"skipped: adaptlib.losses.{fn.__name__} has no `path` argument yet"
                             if not ac.has_path_arg(fn) else "skipped: not available")
            print(f"{label} N={n}: {row['status']}", flush=True)
            continue
        if not impl.available[0]:
            row["status"] = f"skipped: {impl.available[1]}"
            continue
        est = impl.mem(n, n, d)
        row["est"] = est
        limit = ac.mem_limit_bytes()
        if est > limit:
            row["status"] = f"skipped: needs ~{ac.fmt_bytes(est)} > {ac.fmt_bytes(limit)} limit"
            print(f"{label} N={n}: {row['status']}", flush=True)
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", problem, impl_name, str(n), str(d),
               str(args.sinkhorn_max_iter)]
        print(f"{label} N={n}: running (estimate {ac.fmt_bytes(est)}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            row["status"] = f"killed after {args.timeout:.0f} s (--timeout)"
            continue
        row["seconds"] = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            row["status"] = f"failed (exit {proc.returncode}): {tail[0][:120]}"
            print(f"  {row['status']}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        row["extra"] = res["peak"] - res["baseline"]
        row["seconds"] = res["seconds"]
        row["status"] = "ok" if res.get("grad_finite") else "ok (non-finite gradient!)"
        if problem == "sinkhorn":
            row["status"] += f", {args.sinkhorn_max_iter} iterations"
        print(f"  peak extra {ac.fmt_bytes(row['extra'])}, {row['seconds']:.1f} s", flush=True)

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}; float32, one forward+backward per fresh process.",
        "",
        "| case | N = M | D | estimated | peak RSS − baseline | time of the call | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n']} | {r['d']} | "
            f"{ac.fmt_bytes(r['est']) if r['est'] is not None else '–'} | "
            f"{ac.fmt_bytes(r['extra']) if r['extra'] is not None else '–'} | "
            f"{'%.1f s' % r['seconds'] if r['seconds'] is not None else '–'} | {r['status']} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
