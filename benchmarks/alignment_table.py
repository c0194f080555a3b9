"""Markdown tables from a pytest-benchmark JSON file of ``test_alignment.py``.

    python -m pytest benchmarks/test_alignment.py -q --benchmark-json=/tmp/align.json
    python benchmarks/alignment_table.py /tmp/align.json

One table per problem (mmd, sinkhorn, coral): one row per implementation, one column pair
(median, ratio to adaptlib's median of the same group) per (N, D). Sinkhorn values
(``ot_eps``, ``transport_cost``) and their relative difference to adaptlib's follow.
"""
from __future__ import annotations

import argparse
import json
import re
import sys


def _parse(name):
    m = re.search(r"\[(\w+)-N(\d+)-D(\d+)-(.*)\]$", name)
    return (m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)) if m else None


def _fmt(seconds):
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else (f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}")


def tables(data):
    rows = {}
    for b in data["benchmarks"]:
        key = _parse(b["name"])
        if key:
            rows[key] = b
    out = []
    mi = data.get("machine_info", {})
    out.append(f"Machine: {mi.get('machine', '?')}, {mi.get('cpu', {}).get('count', '?')} CPUs, "
               f"Python {mi.get('python_version', '?')}; run started {data.get('datetime', '?')}.")
    for problem in ("mmd", "sinkhorn", "coral"):
        keys = [k for k in rows if k[0] == problem]
        if not keys:
            continue
        sizes = sorted({(k[1], k[2]) for k in keys}, key=lambda s: (s[1], s[0]))
        impls = []
        for k in sorted(keys, key=lambda k: list(rows).index(k)):
            if k[3] not in impls:
                impls.append(k[3])
        out += ["", f"**{problem}** — median of forward+backward in ms (ratio to adaptlib in the same run)", ""]
        out.append("| implementation | " + " | ".join(f"N={n}, D={d}" for n, d in sizes) + " |")
        out.append("|---|" + "---|" * len(sizes))
        for impl in impls:
            cells = []
            for n, d in sizes:
                b = rows.get((problem, n, d, impl))
                base = rows.get((problem, n, d, "adaptlib"))
                if b is None:
                    cells.append("skipped")
                    continue
                med = b["stats"]["median"]
                ratio = f" ({med / base['stats']['median']:.2f}×)" if base else ""
                cells.append(_fmt(med) + ratio)
            out.append(f"| {impl} | " + " | ".join(cells) + " |")
        if problem == "sinkhorn":
            out += ["", "Sinkhorn values (ε = 0.1, tol = 1e-4; relative difference to adaptlib's value "
                    "of the same kind; adaptlib's n_iter):", ""]
            out.append("| implementation | " + " | ".join(f"N={n}, D={d}" for n, d in sizes) + " |")
            out.append("|---|" + "---|" * len(sizes))
            for impl in impls:
                cells = []
                for n, d in sizes:
                    b = rows.get((problem, n, d, impl))
                    base = rows.get((problem, n, d, "adaptlib"))
                    if b is None:
                        cells.append("–")
                        continue
                    ei, bi = b.get("extra_info", {}), (base or {}).get("extra_info", {})
                    parts = []
                    for k in ("ot_eps", "transport_cost", "exact_ot"):
                        if k in ei:
                            txt = f"{k} {ei[k]:.6g}"
                            if impl != "adaptlib" and k in bi and bi[k]:
                                txt += f" (Δrel {abs(ei[k] - bi[k]) / abs(bi[k]):.1e})"
                            parts.append(txt)
                    if "n_iter" in ei:
                        parts.append(f"n_iter {ei['n_iter']}")
                    cells.append("; ".join(parts) or "–")
                out.append(f"| {impl} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json_file")
    args = p.parse_args(argv)
    with open(args.json_file) as fh:
        data = json.load(fh)
    sys.stdout.write(tables(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
