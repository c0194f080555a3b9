"""Print, after the pytest-benchmark table, each benchmark's median as a ratio to its group's baseline.

A benchmark marks itself as its group's baseline with ``benchmark.extra_info["baseline"] = True``.
Ratios are only ever taken within one run, on one machine.

Values a benchmark records in ``extra_info`` under the keys of ``VALUE_KEYS`` (for instance the
Sinkhorn values of ``test_alignment.py``) are printed too, with their relative difference to
the baseline's value of the same key when the baseline has one. Skip reasons are always
reported (``-rs``): the alignment benchmarks skip cases that would not fit in memory or time.
"""
import os
import platform

import pytest

VALUE_KEYS = ("ot_eps", "transport_cost", "exact_ot", "n_iter")


def pytest_configure(config):
    chars = getattr(config.option, "reportchars", "") or ""
    if "s" not in chars and "a" not in chars and "A" not in chars:
        config.option.reportchars = chars + "s"


def _values(bench, base):
    parts = []
    for key in VALUE_KEYS:
        if key not in bench.extra_info:
            continue
        v = bench.extra_info[key]
        text = f"{key}={v:.7g}" if isinstance(v, float) else f"{key}={v}"
        ref = base.extra_info.get(key)
        if key != "n_iter" and bench is not base and isinstance(ref, (int, float)) and ref:
            text += f" (rel. diff {abs(v - ref) / abs(ref):.1e})"
        parts.append(text)
    return (", " + ", ".join(parts)) if parts else ""


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group, []).append(bench)
    tr = terminalreporter
    tr.section("ratios to the baseline of each group (median times, this run)")
    tr.write_line(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}")
    for group, benches in groups.items():
        base = next((b for b in benches if b.extra_info.get("baseline")), None)
        if base is None:
            continue
        for b in benches:
            ratio = b.stats.median / base.stats.median
            tr.write_line(f"{group}: {b.name}: median {b.stats.median * 1e3:.1f} ms, "
                          f"{ratio:.3f} x {base.name}{_values(b, base)}")
