"""One script for a CUDA machine: Triton tests for real, then the alignment benchmark, then a
Markdown table.

1. Runs ``pytest tests/test_kernels_*.py`` and the Triton-path tests of the loss test files
   (``-k triton``) with ``TRITON_INTERPRET`` unset, so the kernels are compiled and run on the
   GPU (on the CPU the test suite runs them through Triton's interpreter).
2. Times forward+backward of adaptlib's ``mmd`` (5 bandwidths), ``sinkhorn`` and ``coral``
   along every path (``auto``, ``dense``, ``tiled``, ``triton``; ``path=`` is only passed
   when the loss accepts it) and of the peers (TLlib/DeepDA-style MMD, skada, POT, GeomLoss;
   see ``alignment_cases.py``), float32 and under ``torch.autocast(dtype=torch.bfloat16)``,
   for N = M up to 65536, D = 256. Each case is guarded: estimated memory above 90 % of the
   free GPU memory is skipped, an out-of-memory error or any exception is recorded and the
   run goes on, a case whose time predicted from the previous N (N^2 scaling, N^3 for
   ``emd2``) exceeds ``--max-call-s`` or the remaining budget is skipped.
3. Writes a Markdown table (machine line, torch/Triton/CUDA versions, test summary, medians,
   ratios to adaptlib's default call of the same problem and dtype, peak GPU memory, values)
   to ``--out`` (default ``$OUT/gpu.md`` when ``$OUT`` is set, else ``gpu.md``), and prints it.

The whole run stays within ``--budget-s`` seconds (default 540): the tests get at most
``--tests-timeout`` of it, the benchmark skips the remaining cases once the budget is spent.
Without CUDA it prints a message and exits with status 0 (``--device cpu`` runs the same
logic on the CPU at small sizes, to check the script itself).

    python benchmarks/gpu.py                      # on the GPU machine, writes $OUT/gpu.md
    python benchmarks/gpu.py --sizes 1024 4096 --budget-s 200 --skip-tests
    python benchmarks/gpu.py --device cpu --sizes 128 --skip-tests --out /tmp/gpu_cpu.md
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="Markdown output path (default $OUT/gpu.md or ./gpu.md)")
    p.add_argument("--budget-s", type=float, default=540.0, help="total time budget in seconds (default 540)")
    p.add_argument("--tests-timeout", type=float, default=180.0, help="max seconds for the Triton tests")
    p.add_argument("--skip-tests", action="store_true", help="do not run the Triton tests")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384, 65536], help="N = M values")
    p.add_argument("--d", type=int, default=256, help="feature dimension (default 256)")
    p.add_argument("--problems", nargs="+", default=["mmd", "sinkhorn", "coral"], choices=["mmd", "sinkhorn", "coral"])
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast cases")
    p.add_argument("--no-peers", action="store_true", help="only adaptlib's paths and the floors")
    p.add_argument("--max-call-s", type=float, default=20.0, help="skip cases predicted slower than this per call")
    p.add_argument("--case-s", type=float, default=2.0, help="target seconds of timed calls per case")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: check the script only")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------
# Table formatting (pure functions, checked by hand with --device cpu)
# ----------------------------------------------------------------------------------------
def fmt_ms(seconds):
    if seconds is None:
        return "–"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else (f"{ms:.2f}" if ms < 100 else f"{ms:.0f}")


def fmt_ratio(r):
    return "–" if r is None else (f"{r:.3f}" if r < 10 else f"{r:.1f}")


def fmt_value(rec):
    parts = []
    for key in ("ot_eps", "transport_cost", "exact_ot", "n_iter", "value"):
        if key in rec:
            v = rec[key]
            parts.append(f"{key}={v:.6g}" if isinstance(v, float) else f"{key}={v}")
    return ", ".join(parts) or "–"


def markdown_table(header_lines, rows):
    """Rows: dicts with problem, n, d, dtype, impl, median (s or None), peak (bytes or None),
    rec (dict), status. Ratios are to the row of the same (problem, n, d, dtype) whose impl is
    ``adaptlib`` (the default call)."""
    base = {}
    for r in rows:
        if r["impl"] == "adaptlib" and r["median"] is not None:
            base[(r["problem"], r["n"], r["d"], r["dtype"])] = r["median"]
    out = list(header_lines) + [
        "",
        "| problem | N = M | D | dtype | implementation | median (ms) | × adaptlib | peak GPU memory | values | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    not_run = [r for r in rows if r.get("status") == "skipped: time budget spent"]
    rows = [r for r in rows if r.get("status") != "skipped: time budget spent"]
    for r in rows:
        b = base.get((r["problem"], r["n"], r["d"], r["dtype"]))
        ratio = r["median"] / b if (b and r["median"] is not None) else None
        peak = "–" if r.get("peak") is None else f"{r['peak'] / 1024 ** 3:.2f} GiB"
        status = str(r.get("status", "")).replace("|", "/").replace("\n", " ")
        out.append(f"| {r['problem']} | {r['n']} | {r['d']} | {r['dtype']} | {r['impl']} | {fmt_ms(r['median'])} | "
                   f"{fmt_ratio(ratio)} | {peak} | {fmt_value(r.get('rec', {}))} | {status} |")
    if not_run:
        sizes = sorted({r["n"] for r in not_run})
        out += ["", f"{len(not_run)} further cases were not run: the time budget was spent "
                    f"(N = {', '.join(map(str, sizes))})."]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------
# 1. Triton tests
# ----------------------------------------------------------------------------------------
def run_tests(timeout):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    kernels = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_kernels_*.py"))
    loss_files = [f for f in ("tests/test_losses_mmd.py", "tests/test_losses_sinkhorn.py") if (REPO / f).exists()]
    results = []
    start = time.perf_counter()
    for label, cmd in (
        ("kernel tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *kernels]),
        ("loss tests, Triton path", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                     "-k", "triton", *loss_files]),
    ):
        if label == "kernel tests" and not kernels:
            results.append((label, "no tests/test_kernels_*.py found"))
            continue
        left = timeout - (time.perf_counter() - start)
        if left < 10:
            results.append((label, "not run: test time budget spent"))
            continue
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=left)
            lines = [l for l in proc.stdout.strip().splitlines() if l.strip()]
            summary = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            summary = re.sub(r"=+", "", summary).strip()
            failed = [l for l in lines if l.startswith("FAILED") or l.startswith("ERROR")]
            text = f"exit {proc.returncode}: {summary} ({time.perf_counter() - t0:.0f} s)"
            if failed:
                text += "; " + "; ".join(failed[:8])
        except subprocess.TimeoutExpired:
            text = f"killed after {left:.0f} s"
        print(f"[tests] {label}: {text}", flush=True)
        results.append((label, text))
    return results


# ----------------------------------------------------------------------------------------
# 2. Benchmark
# ----------------------------------------------------------------------------------------
def benchmark(args, deadline):
    import torch

    import alignment_cases as ac

    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtypes = ["float32"] + ([] if args.no_bf16 else ["bf16 autocast"])
    rows = []
    seconds = {}  # (problem, impl, dtype) -> [(n, t)]
    for n in args.sizes:
        d = args.d
        for problem in args.problems:
            impls = ac.implementations(problem)
            if args.no_peers:
                impls = [i for i in impls if i.name.startswith("adaptlib") or i.floor]
            try:
                x, y = ac.make_pair(n, n, d, device=dev)
            except Exception as exc:  # OOM for the inputs themselves
                rows.append(dict(problem=problem, n=n, d=d, dtype="float32", impl="inputs", median=None,
                                 rec={}, status=f"could not create inputs: {type(exc).__name__}"))
                continue
            x.requires_grad_()
            y.requires_grad_()
            for dtype in dtypes:
                for impl in impls:
                    row = dict(problem=problem, n=n, d=d, dtype=dtype, impl=impl.name, median=None, peak=None,
                               rec={}, status="")
                    rows.append(row)
                    left = deadline - time.perf_counter()
                    if left < 5:
                        row["status"] = "skipped: time budget spent"
                        continue
                    if dev.type not in impl.devices:
                        row["status"] = f"skipped: {dev.type} not supported by this path"
                        continue
                    if not impl.available[0]:
                        row["status"] = f"skipped: {impl.available[1]}"
                        continue
                    if impl.floor and dtype != "float32":
                        row["status"] = "skipped: floors only in float32"
                        continue
                    if problem == "sinkhorn" and "sinkhorn_log" in impl.name and (n, n, d) not in ac.ITER_GUESS:
                        try:
                            ac.ITER_GUESS[(n, n, d)] = ac.sinkhorn_iterations(x, y)
                        except Exception:
                            ac.ITER_GUESS[(n, n, d)] = ac.MAX_ITER
                    need = impl.mem(n, n, d)
                    if cuda:
                        free = torch.cuda.mem_get_info()[0] * 0.9
                    else:
                        free = ac.mem_limit_bytes()
                    if need > free:
                        row["status"] = f"skipped: needs ~{ac.fmt_bytes(need)} > {ac.fmt_bytes(free)} free"
                        continue
                    prev = [(pn, t) for pn, t in seconds.get((problem, impl.name, dtype), []) if pn < n]
                    if prev:
                        pn, t = max(prev)
                        pred = t * (n / pn) ** impl.order
                        if pred > args.max_call_s or 2 * pred > left:
                            row["status"] = f"skipped: predicted ~{pred:.0f} s per call (from N={pn})"
                            continue
                    try:
                        run, rec = impl.make(x, y)
                        step = ac.fwd_bwd(run, x, y, impl.floor)
                        if dtype != "float32":
                            inner = step

                            def step(inner=inner):
                                with torch.autocast(dev.type, dtype=torch.bfloat16):
                                    inner()
                        if cuda:
                            torch.cuda.reset_peak_memory_stats()
                            base_mem = torch.cuda.memory_allocated()
                        first = ac.time_once(step, sync)  # warm-up (compiles Triton kernels)
                        seconds.setdefault((problem, impl.name, dtype), []).append((n, first))
                        times = []
                        reps = max(1, min(10, int(args.case_s / max(first, 1e-6))))
                        for _ in range(reps):
                            if time.perf_counter() + first > deadline:
                                break
                            times.append(ac.time_once(step, sync))
                        if not times:
                            times = [first]
                            row["status"] = "ok (warm-up call only)"
                        else:
                            row["status"] = f"ok ({len(times)} calls)"
                        seconds[(problem, impl.name, dtype)][-1] = (n, statistics.median(times))
                        row["median"] = statistics.median(times)
                        if cuda:
                            row["peak"] = torch.cuda.max_memory_allocated() - base_mem
                        row["rec"] = dict(rec)
                    except Exception as exc:  # torch.cuda.OutOfMemoryError included
                        msg = str(exc).strip().splitlines()[0][:140] if str(exc).strip() else ""
                        row["status"] = ("out of memory" if "out of memory" in str(exc).lower()
                                         else f"error: {type(exc).__name__}: {msg}")
                    finally:
                        x.grad = None
                        y.grad = None
                        run = step = None
                        if cuda:
                            torch.cuda.empty_cache()
                    print(f"[bench] {problem} N={n} {dtype} {impl.name}: {fmt_ms(row['median'])} ms, "
                          f"{row['status']}", flush=True)
            del x, y
    return rows


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    if args.device == "cuda":
        os.environ.pop("TRITON_INTERPRET", None)  # before adaptlib's kernels are imported
    else:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    out = args.out or (str(Path(os.environ["OUT"]) / "gpu.md") if os.environ.get("OUT") else "gpu.md")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu.py: CUDA is not available on this machine (torch.cuda.is_available() is False); "
              "nothing to run. Use --device cpu to check the script's logic on the CPU.")
        return 0
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(REPO))
    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"not importable ({type(exc).__name__})"
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        machine = (f"{props.name}, {props.total_memory / 1024 ** 3:.0f} GiB, CUDA {torch.version.cuda}, "
                   f"{os.cpu_count()} CPUs")
    else:
        machine = f"CPU only ({platform.machine()}, {os.cpu_count()} CPUs) — script check, not a GPU result"
    header = [
        "# adaptlib alignment losses on the GPU",
        "",
        f"Machine: {machine}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"Triton {triton_version}.",
        f"Command: `python benchmarks/gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "Forward+backward per call, median over the timed calls after one warm-up call; "
        "ratios are to `adaptlib` (the default `path`) of the same problem and dtype.",
    ]
    tests = []
    if not args.skip_tests:
        tests = run_tests(min(args.tests_timeout, 0.4 * args.budget_s))
        header += ["", "Triton tests (TRITON_INTERPRET unset):", ""]
        header += [f"- {label}: {text}" for label, text in tests]
    rows = benchmark(args, deadline - 10)
    header += ["", f"Total time of this script: {time.perf_counter() - t_start:.0f} s."]
    table = markdown_table(header, rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(table)
    print(table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
