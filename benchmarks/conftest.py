"""Print, after the pytest-benchmark table, each benchmark's median as a ratio to its group's baseline.

A benchmark marks itself as its group's baseline with ``benchmark.extra_info["baseline"] = True``.
Ratios are only ever taken within one run, on one machine.
"""
import os
import platform

import pytest


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
                          f"{ratio:.3f} x {base.name}")
