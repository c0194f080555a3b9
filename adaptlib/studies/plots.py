r"""Figures of a comparison study (matplotlib, Agg renderer: files only, no display needed).

* :func:`plot_cd_diagram` -- critical-difference diagram of J. Demšar, "Statistical Comparisons
  of Classifiers over Multiple Data Sets", JMLR 7:1-30, 2006 (Fig. 1-2): an axis of average
  ranks, the methods on both sides, thick bars joining groups of methods that the Nemenyi test
  does not separate;
* :func:`plot_accuracy_curves` -- mean target accuracy vs training step per method;
* :func:`plot_task_bars` -- per task, realistic vs oracle selected accuracy per method.

Every function writes one PNG and returns its path. Figures are built as
:class:`matplotlib.figure.Figure` objects rendered by Agg, without pyplot: importing this module
does not change the user's matplotlib backend, and no figure stays open.
"""
from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .analysis import MEAN_TASK, nemenyi_groups

__all__ = ["method_colors", "plot_cd_diagram", "plot_accuracy_curves", "plot_task_bars"]

_DPI = 150


def method_colors(methods: Sequence[str]) -> Dict[str, Tuple[float, float, float, float]]:
    """One fixed colour per method (matplotlib's ``tab10``, then ``tab20``), in ``methods`` order."""
    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # render with Agg whatever the session's backend
    return fig


def _save(fig: Figure, path: os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight", format="png")
    return path


def plot_cd_diagram(avg_ranks: pd.Series, cd: float, path: os.PathLike, *,
                    groups: Optional[Sequence[Sequence[str]]] = None, labels: Optional[Mapping[str, str]] = None,
                    title: Optional[str] = None) -> Path:
    """Draw a Demšar (2006) critical-difference diagram and save it as a PNG.

    The horizontal axis holds average ranks from 1 (best, left) to k; each method hangs from its
    average rank by an elbow line to its label, the better half on the left, the other half on
    the right. A segment of length ``cd`` above the axis shows the critical difference, and
    thick bars under the axis join the methods of each group that is not significantly
    different (Nemenyi test: average ranks less than ``cd`` apart).

    Args:
        avg_ranks: average rank per method (Series indexed by method name), values in [1, k].
        cd: Nemenyi critical difference (:func:`~adaptlib.studies.analysis.critical_difference`).
        path: output PNG file (parent folders are created).
        groups: the bars to draw; default :func:`~adaptlib.studies.analysis.nemenyi_groups`.
        labels: display name per method (e.g. with a "†"); default the method name.
        title: figure title (default names the test and the CD).

    Returns:
        ``Path`` of the written PNG.

    Raises:
        ValueError: fewer than 2 methods, non-finite ranks, or ``cd`` not positive.
    """
    if not isinstance(avg_ranks, pd.Series) or len(avg_ranks) < 2:
        raise ValueError("avg_ranks: need a Series of at least 2 methods' average ranks")
    vals = avg_ranks.to_numpy(dtype=float)
    if not np.isfinite(vals).all():
        raise ValueError(f"avg_ranks: must be finite, got {avg_ranks.to_dict()}")
    if not (math.isfinite(cd) and cd > 0):
        raise ValueError(f"cd must be a positive finite number, got {cd!r}")
    groups = list(groups) if groups is not None else nemenyi_groups(avg_ranks, cd)
    labels = dict(labels or {})
    r = avg_ranks.sort_values(kind="mergesort")
    names = list(r.index)
    k = len(names)
    n_left = (k + 1) // 2
    lo, hi = 1.0, float(max(k, math.ceil(r.max())))
    span = hi - lo
    row_h, bar_h = 0.32, 0.16
    y_bars = 0.28
    y_rows0 = y_bars + bar_h * max(len(groups), 1) + 0.25
    n_rows = max(n_left, k - n_left)
    bottom = y_rows0 + row_h * (n_rows - 1) + 0.3
    width = 9.0
    fig = _figure(width, 1.4 + 0.75 * bottom + 0.6)
    ax = fig.subplots()
    margin = 0.42 * span + 0.6
    ax.set_xlim(lo - margin, hi + margin)
    ax.set_ylim(bottom, -1.05)
    ax.axis("off")
    # rank axis with ticks and labels
    ax.plot([lo, hi], [0, 0], color="black", lw=1.2)
    for t in np.arange(lo, hi + 1e-9, 1.0):
        ax.plot([t, t], [0, -0.12], color="black", lw=1.0)
        ax.text(t, -0.18, f"{t:g}", ha="center", va="bottom", fontsize=10)
    for t in np.arange(lo + 0.5, hi, 1.0):
        ax.plot([t, t], [0, -0.06], color="black", lw=0.8)
    ax.text((lo + hi) / 2, -0.55, "average rank (1 = best)", ha="center", va="bottom", fontsize=9, color="0.3")
    # critical difference segment, top left
    ax.plot([lo, lo + cd], [-0.85, -0.85], color="black", lw=1.6)
    for x in (lo, lo + cd):
        ax.plot([x, x], [-0.8, -0.9], color="black", lw=1.2)
    ax.text(lo + cd / 2, -0.9, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=10)
    # methods: elbow lines from the axis to the labels
    for i, name in enumerate(names):
        rank = float(r[name])
        text = f"{labels.get(name, name)}  ({rank:.2f})" if i < n_left else f"({rank:.2f})  {labels.get(name, name)}"
        if i < n_left:  # better half, left side; larger rank hangs lower
            y = y_rows0 + row_h * i
            x_end, ha = lo - 0.1 * span - 0.2, "right"
        else:  # worse half, right side; smaller rank hangs lower
            y = y_rows0 + row_h * (k - 1 - i)
            x_end, ha = hi + 0.1 * span + 0.2, "left"
        ax.plot([rank, rank, x_end], [0, y, y], color="black", lw=1.0)
        ax.text(x_end + (-0.05 if ha == "right" else 0.05), y, text, ha=ha, va="center", fontsize=10)
    # groups not significantly different
    for g, members in enumerate(groups):
        ranks = [float(r[m]) for m in members]
        y = y_bars + bar_h * g
        ax.plot([min(ranks) - 0.04, max(ranks) + 0.04], [y, y], color="black", lw=4.0, solid_capstyle="butt")
    ax.set_title(title or f"Critical difference diagram (Nemenyi test, CD = {cd:.2f})", fontsize=11)
    return _save(fig, path)


def plot_accuracy_curves(curves: pd.DataFrame, path: os.PathLike, *, methods: Optional[Sequence[str]] = None,
                         labels: Optional[Mapping[str, str]] = None, title: Optional[str] = None) -> Path:
    """Plot mean target accuracy vs checkpoint step, one line per method, one panel per benchmark.

    Args:
        curves: output of :func:`~adaptlib.studies.analysis.accuracy_curves` (columns
            ``benchmark, method, step, n_trials, mean, std``; accuracies as fractions in [0, 1],
            drawn in percent); a band of +-1 std over trials is drawn where the std is defined,
            clipped to [0, 100] %.
        path: output PNG file.
        methods: which methods, in which order (default: order in ``curves``).
        labels: display name per method.
        title: figure title.

    Returns:
        ``Path`` of the written PNG.

    Raises:
        ValueError: missing columns or no rows.
    """
    need = ["benchmark", "method", "step", "mean", "std"]
    missing = [c for c in need if c not in curves.columns]
    if missing or curves.empty:
        raise ValueError(f"curves: need the non-empty output of accuracy_curves(); missing columns {missing}")
    methods = list(methods) if methods is not None else list(dict.fromkeys(curves["method"]))
    labels = dict(labels or {})
    colors = method_colors(methods)
    benches = list(dict.fromkeys(curves["benchmark"]))
    fig = _figure(max(8.0, 6.5 * len(benches)), 4.6)
    axes = fig.subplots(1, len(benches), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        sub = curves[curves["benchmark"] == bench]
        for m in methods:
            c = sub[sub["method"] == m].sort_values("step")
            if c.empty:
                continue
            x = c["step"].to_numpy()
            y, s = 100 * c["mean"].to_numpy(dtype=float), 100 * c["std"].to_numpy(dtype=float)
            ax.plot(x, y, marker="o", ms=4, lw=1.6, color=colors[m], label=labels.get(m, m))
            ok = np.isfinite(s)
            if ok.any():
                ax.fill_between(x[ok], np.clip(y - s, 0, 100)[ok], np.clip(y + s, 0, 100)[ok], color=colors[m],
                                alpha=0.15, lw=0)
        ax.set_xlabel("training step (checkpoint)")
        ax.set_ylabel("target accuracy (%)")
        ax.set_title(bench, fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, frameon=False)
    fig.suptitle(textwrap.fill(title or "Target accuracy vs training step (mean over tasks and trials, "
                               "band = ±1 std over trials)", 90), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_task_bars(comparison: pd.DataFrame, path: os.PathLike, *, benchmark: Optional[str] = None,
                   methods: Optional[Sequence[str]] = None, labels: Optional[Mapping[str, str]] = None,
                   primary: str = "validator", title: Optional[str] = None) -> Path:
    """Per task, bars of the realistic and the oracle selected accuracy (%) of every method.

    One panel per task of ``benchmark`` plus the mean over tasks; in each, per method, a solid
    bar (selection by ``primary``) and a hatched, lighter bar (oracle selection, an upper bound)
    with 95% confidence-interval whiskers where defined, clipped to [0, 100] % so that they stay
    inside the plot. Bars start at 0.

    Args:
        comparison: output of :func:`~adaptlib.studies.analysis.rule_comparison` (accuracies as
            fractions in [0, 1]; drawn in percent).
        path: output PNG file.
        benchmark: which benchmark (default: the only one; required if there are several).
        methods: which methods, in which order (default: order in ``comparison``).
        labels: display name per method.
        primary: the realistic rule's name, for the legend.
        title: figure title.

    Returns:
        ``Path`` of the written PNG.

    Raises:
        ValueError: missing columns, unknown or ambiguous ``benchmark``.
    """
    need = ["benchmark", "task", "method", "realistic_mean", "realistic_ci_low", "realistic_ci_high",
            "oracle_mean", "oracle_ci_low", "oracle_ci_high"]
    missing = [c for c in need if c not in comparison.columns]
    if missing:
        raise ValueError(f"comparison: missing column(s) {missing}; pass the output of rule_comparison()")
    benches = list(dict.fromkeys(comparison["benchmark"]))
    if benchmark is None:
        if len(benches) != 1:
            raise ValueError(f"benchmark: name one of {benches}")
        benchmark = benches[0]
    if benchmark not in benches:
        raise ValueError(f"benchmark: unknown {benchmark!r}; present are {benches}")
    sub = comparison[comparison["benchmark"] == benchmark].copy()
    percent = [c for c in need[3:] if c in sub.columns]  # fractions -> percent, intervals inside [0, 100]
    sub[percent] = 100 * sub[percent].astype(float)
    for c in ("realistic_ci_low", "realistic_ci_high", "oracle_ci_low", "oracle_ci_high"):
        sub[c] = sub[c].clip(0.0, 100.0)
    methods = list(methods) if methods is not None else list(dict.fromkeys(sub["method"]))
    labels = dict(labels or {})
    colors = method_colors(methods)
    tasks = [t for t in dict.fromkeys(sub["task"]) if t != MEAN_TASK] + [MEAN_TASK]
    ncol = min(4, len(tasks))
    nrow = math.ceil(len(tasks) / ncol)
    fig = _figure(3.3 * ncol + 0.4 * len(methods), 3.2 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    x = np.arange(len(methods))
    w = 0.38
    vals = sub[["realistic_ci_high", "oracle_ci_high", "realistic_mean", "oracle_mean"]].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    top = min(100.0, float(vals.max())) * 1.08 if vals.size else 100.0
    for idx, task in enumerate(tasks):
        ax = axes[idx // ncol][idx % ncol]
        t = sub[sub["task"] == task].set_index("method").reindex(methods)
        for off, kind, alpha, hatch in ((-w / 2, "realistic", 0.95, None), (w / 2, "oracle", 0.45, "//")):
            mean = t[f"{kind}_mean"].to_numpy(dtype=float)
            lo_ = mean - t[f"{kind}_ci_low"].to_numpy(dtype=float)
            hi_ = t[f"{kind}_ci_high"].to_numpy(dtype=float) - mean
            err = np.vstack([np.nan_to_num(lo_), np.nan_to_num(hi_)])
            ax.bar(x + off, np.nan_to_num(mean), w, color=[colors[m] for m in methods], alpha=alpha, hatch=hatch,
                   edgecolor="black", linewidth=0.5, yerr=err, capsize=2, error_kw={"lw": 0.8})
        gap = t["oracle_mean"].to_numpy(dtype=float) - t["realistic_mean"].to_numpy(dtype=float)
        head = np.fmax(t["oracle_ci_high"].to_numpy(dtype=float), t["oracle_mean"].to_numpy(dtype=float))
        for xi, g, h in zip(x, gap, head):
            if math.isfinite(g) and math.isfinite(h):
                ax.text(xi, min(h + 0.02 * top, 0.97 * top), f"+{g:.1f}" if g >= 0 else f"{g:.1f}",
                        ha="center", va="bottom", fontsize=7, color="0.25")
        ax.set_xticks(x)
        ax.set_xticklabels([labels.get(m, m) for m in methods], rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, top)
        ax.set_title("mean over tasks" if task == MEAN_TASK else task, fontsize=10,
                     fontweight="bold" if task == MEAN_TASK else None)
        ax.grid(True, axis="y", alpha=0.3)
        if idx % ncol == 0:
            ax.set_ylabel("target accuracy (%)")
    for idx in range(len(tasks), nrow * ncol):
        axes[idx // ncol][idx % ncol].axis("off")
    handles = [Patch(facecolor="0.4", edgecolor="black", label=f"realistic: selected by {primary}"),
               Patch(facecolor="0.8", edgecolor="black", hatch="//", label="oracle (upper bound, uses target labels)"),
               Patch(facecolor="none", edgecolor="none", label="+x.x = gap, oracle − realistic (points)")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9, frameon=False)
    fig.suptitle(title or f"{benchmark}: selected target accuracy per task, realistic vs oracle (95% CI whiskers)",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
