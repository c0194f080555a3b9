"""The report of a comparison study: tables (Markdown, CSV, LaTeX) and figures (PNG) from its records.

:func:`write_report` is what ``adaptlib study report`` calls. From the records (one row per
run and checkpoint, see :func:`adaptlib.studies.analysis.check_records`) it selects a
checkpoint per trial with the study's primary validator (the realistic rule) and with the
oracle (target accuracy: an upper bound), and writes into the folder:

=====================  =======================================================================
``accuracy.*``         per task and method (and the mean over tasks): realistic and oracle
                       accuracy, mean ± std over trials with 95% Student-t CI, and the gap
``validators.*``       mean-over-tasks accuracy per method under every validator's selection,
                       the oracle, and the best validator per method (chosen in hindsight)
``ranks.*``            average ranks over tasks (realistic and oracle selection)
``pairwise.*``         Wilcoxon signed-rank tests of every pair of methods, Holm-corrected
``selected.csv``       every selection made: rule, trial, chosen config and step, accuracy
``report.md``          all of the above with the Friedman test, the Nemenyi CD and the figures
``cd_diagram.png``     critical-difference diagram (realistic selection)
``accuracy_vs_step.png``  mean target accuracy vs step (config chosen by the primary validator)
``per_task_<b>.png``   per task bars, realistic vs oracle, one file per benchmark
=====================  =======================================================================

``*`` is ``md``, ``csv`` and ``tex``. CSV files hold the unformatted numbers, accuracies (and
their std, intervals, gaps and differences) as fractions in [0, 1] like the records; Markdown
and LaTeX hold ``mean ± std`` cells in percent, and their headers and captions say "%" or
"points". Confidence intervals are clipped to [0, 100] %, and the report warns when there
are fewer than 3 trials (:data:`~adaptlib.studies.analysis.MIN_TRIALS_FOR_CI`): the interval
then says little. Methods that train on target labels carry "†".
"""
from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from . import analysis as A
from . import plots

__all__ = ["write_report"]

_ALPHA = 0.05
_CONFIDENCE = 0.95
_DAGGER = {"md": " †", "tex": r"$^\dagger$"}
_PM = {"md": " ± ", "tex": r" $\pm$ "}
_DASH = {"md": "–", "tex": "--"}

_TEX_MAP = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "→": r"$\rightarrow$", "±": r"$\pm$", "†": r"$^\dagger$",
            "−": "-", "–": "--"}


def _tex(text: str) -> str:
    """Escape plain text for LaTeX ("->" becomes an arrow)."""
    return "".join(_TEX_MAP.get(ch, ch) for ch in str(text).replace("->", "→"))


def _num(x: float, digits: int = 1, style: str = "md") -> str:
    if x is None or math.isnan(float(x)):
        return _DASH[style]
    if math.isinf(float(x)):
        return ("" if x > 0 else "-") + ("∞" if style == "md" else r"$\infty$")
    return f"{float(x):.{digits}f}"


def _pm(mean: float, std: float, style: str) -> str:
    """``mean ± std`` of an accuracy given as a fraction, shown in percent."""
    if not math.isfinite(float(mean)):
        return _DASH[style]
    if not math.isfinite(float(std)):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f}{_PM[style]}{100 * std:.1f}"


def _ci(lo: float, hi: float, style: str) -> str:
    """``[low, high]`` of an accuracy interval given as fractions, shown in percent."""
    if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return _DASH[style]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _pval(p: float, style: str) -> str:
    if not math.isfinite(float(p)):
        return _DASH[style]
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def _few_trials_note(frame: pd.DataFrame, pct: int) -> str:
    """A warning when some (benchmark, task, method) has fewer trials than a usable interval needs."""
    fewest = int(frame.groupby(list(A.GROUP_COLUMNS[:3]))["trial"].nunique().min())
    if fewest >= A.MIN_TRIALS_FOR_CI:
        return ""
    if fewest == 1:
        return (f"Warning: some cells have a single trial, which gives no {pct}% interval (–); with fewer than "
                f"{A.MIN_TRIALS_FOR_CI} trials the intervals are not meaningful.")
    from scipy import stats

    t = float(stats.t.ppf(0.5 + _CONFIDENCE / 2, fewest - 1))
    return (f"Warning: with {fewest} trials the {pct}% intervals are not meaningful (Student-t quantile {t:.1f}: "
            f"they span most of the range even after clipping to [0, 100]); run at least {A.MIN_TRIALS_FOR_CI} "
            "trials (seeds) before reading them.")


def _p_is(p: float) -> str:
    text = _pval(p, "md")
    return "p " + text if text.startswith("<") else "p = " + text


class _Writer:
    """Writes a display table as Markdown and LaTeX and the numeric table as CSV; records paths."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: Dict[str, Path] = {}

    def table(self, name: str, numeric: pd.DataFrame, md: pd.DataFrame, tex: pd.DataFrame, caption: str) -> str:
        numeric.to_csv(self.folder / f"{name}.csv", index=False)
        text = md.to_markdown(index=False, disable_numparse=True) + "\n"
        (self.folder / f"{name}.md").write_text(text + "\n" + caption + "\n")
        latex = tex.to_latex(index=False, escape=False, caption=_tex(caption), label=f"tab:{name}",
                             column_format="l" * tex.shape[1])
        (self.folder / f"{name}.tex").write_text(latex)
        for ext, key in (("md", "markdown"), ("csv", "csv"), ("tex", "latex")):
            self.paths[f"{name}_{key}"] = self.folder / f"{name}.{ext}"
        return text


def _labels(frame: pd.DataFrame, methods: Sequence[str], style: str) -> Dict[str, str]:
    flags = frame.groupby("method")["uses_target_labels"].first()
    return {m: (m if style == "md" else _tex(m)) + (_DAGGER[style] if bool(flags[m]) else "") for m in methods}


def _ordered(df: pd.DataFrame, methods: Sequence[str], tasks: Dict[str, List[str]],
             by_task: bool = True) -> pd.DataFrame:
    """Sort rows by benchmark and task (order of the records), then method (``methods`` order)."""
    key = {m: i for i, m in enumerate(methods)}
    df = df.assign(_m=df["method"].map(key))
    sort = ["_m"]
    if by_task and "task" in df.columns:
        tkey = {(b, t): i for b, ts in tasks.items() for i, t in enumerate(ts + [A.MEAN_TASK])}
        df = df.assign(_t=[tkey[b, t] for b, t in zip(df["benchmark"], df["task"])])
        sort = ["_t", "_m"]
    df = df.assign(_b=df["benchmark"].map({b: i for i, b in enumerate(tasks)}))
    sort = ["_b"] + sort
    return df.sort_values(sort, kind="mergesort").drop(columns=[c for c in ("_m", "_t", "_b") if c in df.columns])


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "benchmark"


def write_report(frame: pd.DataFrame, folder: os.PathLike, *, primary: str, validators: Sequence[str],
                 methods: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Write the tables and figures of a comparison study into ``folder``; return their paths.

    Selection rules: the *realistic* rule selects, per (benchmark, task, method, trial), the
    (config, step) with the highest ``primary`` validator score; the *oracle* selects by target
    test accuracy and is labelled an upper bound everywhere (ties: smallest config, then earliest
    step -- :func:`~adaptlib.studies.analysis.select`). Cells are mean ± sample std over trials
    with the 95% Student-t interval; the mean over tasks averages each trial over tasks first.
    Ranks, the Friedman test (tasks as blocks, k >= 3), the Nemenyi critical difference
    (alpha = 0.05) and the Holm-corrected pairwise Wilcoxon tests use the per-task mean over
    trials of the realistic selection (Demšar 2006; García & Herrera 2008). The step curves
    follow the config chosen by ``primary`` in each trial.

    Args:
        frame: study records, one row per (run, checkpoint)
            (:func:`~adaptlib.studies.analysis.check_records` lists the columns).
        folder: output folder (created if needed; existing files of the same names are replaced).
        primary: the study's primary validator (a column of ``frame``; not ``"oracle"``).
        validators: validator columns for the validator table (``primary`` is added if absent).
        methods: methods to report, in this order (default: all, in order of appearance).

    Returns:
        Dict from a key (``"report"``, ``"accuracy_markdown"``, ``"accuracy_csv"``,
        ``"accuracy_latex"``, likewise ``validators_*``, ``ranks_*``, ``pairwise_*``,
        ``"selected_csv"``, ``"cd_diagram"``, ``"accuracy_vs_step"``, ``"per_task_<benchmark>"``)
        to the written file. Statistics that do not apply (one method, one task, an incomplete
        task x method matrix, fewer than 3 methods for Friedman) are explained in ``report.md``
        and their files are not written.

    Raises:
        TypeError / ValueError: bad records, ``primary`` unknown or ``"oracle"``, an unknown
            validator or method, or a trial where ``primary`` scored no checkpoint.
    """
    A.check_records(frame)
    if not isinstance(primary, str) or primary == A.ORACLE:
        raise ValueError(f"primary must be a validator column (the realistic rule), got {primary!r}")
    if isinstance(validators, str):
        raise TypeError("validators must be a sequence of validator names, not a single string")
    validators = list(dict.fromkeys([primary] + list(validators)))
    for v in validators:
        A._score_column(frame, v)  # clear error for unknown names
    present = list(dict.fromkeys(frame["method"]))
    if methods is None:
        methods = present
    else:
        methods = list(methods)
        unknown = [m for m in methods if m not in present]
        if unknown or not methods:
            raise ValueError(f"methods: {unknown or 'none'} not in the records; present are {present}")
        frame = frame[frame["method"].isin(methods)]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = _Writer(folder)
    tasks = {b: list(dict.fromkeys(frame.loc[frame["benchmark"] == b, "task"]))
             for b in dict.fromkeys(frame["benchmark"])}
    multi_bench = len(tasks) > 1
    lab_md, lab_tex = _labels(frame, methods, "md"), _labels(frame, methods, "tex")
    any_dagger = bool(frame["uses_target_labels"].any())
    n_trials = int(frame.groupby(list(A.GROUP_COLUMNS[:3]))["trial"].nunique().max())
    pct = int(round(100 * _CONFIDENCE))

    # -- selections ------------------------------------------------------------------------
    realistic = A.select(frame, primary)
    oracle = A.select(frame, A.ORACLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        others = [A.select(frame, v, on_missing="skip") for v in validators if v != primary]
    selected_all = pd.concat([realistic, oracle] + others, ignore_index=True)
    selected_all.to_csv(folder / "selected.csv", index=False)
    out.paths["selected_csv"] = folder / "selected.csv"

    # -- accuracy: realistic vs oracle -----------------------------------------------------
    comp = _ordered(A.rule_comparison(frame, primary, _CONFIDENCE), methods, tasks).reset_index(drop=True)
    real_head, orac_head = f"realistic ({primary})", "oracle (upper bound)"

    def accuracy_display(style: str) -> pd.DataFrame:
        lab = lab_md if style == "md" else lab_tex
        esc = (lambda s: s) if style == "md" else _tex
        rows = []
        for _, r in comp.iterrows():
            task = "mean over tasks" if r["task"] == A.MEAN_TASK else r["task"]
            row = {}
            if multi_bench:
                row["benchmark"] = esc(r["benchmark"])
            row.update({"task": (f"**{task}**" if style == "md" and r["task"] == A.MEAN_TASK else esc(task)),
                        "method": lab[r["method"]],
                        esc(real_head): _pm(r["realistic_mean"], r["realistic_std"], style),
                        f"{pct}% CI (realistic)": _ci(r["realistic_ci_low"], r["realistic_ci_high"], style),
                        esc(orac_head): _pm(r["oracle_mean"], r["oracle_std"], style),
                        f"{pct}% CI (oracle)": _ci(r["oracle_ci_low"], r["oracle_ci_high"], style),
                        "gap": _num(100 * r["gap"], 1, style)})
            rows.append(row)
        df = pd.DataFrame(rows)
        if style == "tex":
            df.columns = [_tex(c) for c in df.columns]
        return df

    acc_caption = (f"Target accuracy (%) of the checkpoint selected per trial, mean ± std over {n_trials} trial(s) "
                   f"and {pct}% Student-t confidence interval. Realistic: (config, step) chosen by the {primary} "
                   "validator (no target label). Oracle: chosen by target test accuracy, an upper bound that no "
                   "unsupervised selection can reach. Gap = oracle − realistic (points). Mean over tasks: each "
                   "trial averaged over tasks, then over trials. Intervals are clipped to [0, 100].")
    few = _few_trials_note(frame, pct)
    if few:
        acc_caption += " " + few
    if any_dagger:
        acc_caption += " † the method trains on labelled target samples."
    acc_md = out.table("accuracy", comp, accuracy_display("md"), accuracy_display("tex"), acc_caption)

    # -- validators -------------------------------------------------------------------------
    vt = _ordered(A.validator_table(frame, validators, _CONFIDENCE), methods, tasks, by_task=False)
    vt = vt.reset_index(drop=True)

    def validators_display(style: str) -> pd.DataFrame:
        lab = lab_md if style == "md" else lab_tex
        esc = (lambda s: s) if style == "md" else _tex
        rows = []
        for (bench, method), sub in vt.groupby(["benchmark", "method"], sort=False):
            sub = sub.set_index("rule")
            row = {"benchmark": esc(bench)} if multi_bench else {}
            row["method"] = lab[method]
            for v in validators:
                head = f"{v} (primary)" if v == primary else v
                row[esc(head)] = _pm(sub.loc[v, "mean"], sub.loc[v, "std"], style)
            row[esc(orac_head)] = _pm(sub.loc[A.ORACLE, "mean"], sub.loc[A.ORACLE, "std"], style)
            best = sub["best_validator"].iloc[0]
            row[esc("best validator (in hindsight)")] = esc(best) if isinstance(best, str) else _DASH[style]
            rows.append(row)
        return pd.DataFrame(rows)

    val_caption = (f"Mean-over-tasks target accuracy (%), mean ± std over trials, when each validator selects the "
                   f"(config, step) of every trial; {primary} is the study's primary validator. The oracle column is "
                   "an upper bound (selection by target test accuracy). 'Best validator' is picked after the fact "
                   "with target labels (in hindsight), so it is not a valid selection rule. – : not computed for "
                   "every task.")
    if any_dagger:
        val_caption += " † the method trains on labelled target samples."
    val_md = out.table("validators", vt, validators_display("md"), validators_display("tex"), val_caption)

    # -- ranks and statistics ---------------------------------------------------------------
    stats_md: List[str] = []
    ranks_md = pair_md = pair_caption = ""
    try:
        scores = A.task_scores(realistic, methods)
        scores_oracle = A.task_scores(oracle, methods)
    except ValueError as err:
        scores = None
        stats_md.append(f"Rank statistics skipped: {err}")
    if scores is not None and len(methods) < 2:
        stats_md.append("Rank statistics skipped: only one method.")
        scores = None
    if scores is not None:
        n_blocks, k = scores.shape
        avg = A.average_ranks(scores)
        avg_o = A.average_ranks(scores_oracle)
        ranks_num = pd.DataFrame({"method": methods, "uses_target_labels": [lab_md[m].endswith("†") for m in methods],
                                  "average_rank_realistic": avg.reindex(methods).to_numpy(),
                                  "average_rank_oracle": avg_o.reindex(methods).to_numpy(),
                                  "mean_accuracy_realistic": scores.mean(axis=0).reindex(methods).to_numpy(),
                                  "mean_accuracy_oracle": scores_oracle.mean(axis=0).reindex(methods).to_numpy()})
        ranks_num = ranks_num.sort_values("average_rank_realistic", kind="mergesort").reset_index(drop=True)

        def ranks_display(style: str) -> pd.DataFrame:
            lab = lab_md if style == "md" else lab_tex
            esc = (lambda s: s) if style == "md" else _tex
            return pd.DataFrame({
                "method": [lab[m] for m in ranks_num["method"]],
                esc(f"average rank, {primary}"): [f"{x:.2f}" for x in ranks_num["average_rank_realistic"]],
                esc("average rank, oracle (upper bound)"): [f"{x:.2f}" for x in ranks_num["average_rank_oracle"]],
                esc(f"accuracy (%), {primary}"): [f"{100 * x:.1f}" for x in ranks_num["mean_accuracy_realistic"]],
                esc("accuracy (%), oracle (upper bound)"): [f"{100 * x:.1f}"
                                                            for x in ranks_num["mean_accuracy_oracle"]]})

        ranks_caption = (f"Average rank over {n_blocks} task(s) (rank 1 = best within a task, ties share the average "
                         f"rank) of the per-task mean target accuracy over trials, under the {primary} selection and "
                         "the oracle selection (upper bound); accuracy columns: mean over tasks.")
        ranks_md = out.table("ranks", ranks_num, ranks_display("md"), ranks_display("tex"), ranks_caption)

        if n_blocks >= 2:
            cd = A.critical_difference(k, n_blocks, _ALPHA)
            groups = A.nemenyi_groups(avg, cd)
            if k >= 3:
                fr = A.friedman(scores)
                stats_md.append(
                    f"Friedman test over N = {n_blocks} tasks (blocks) and k = {k} methods, {primary} selection: "
                    f"χ²_F = {fr.statistic:.3f}, {_p_is(fr.pvalue)}; Iman–Davenport "
                    f"F_F = {_num(fr.iman_davenport, 3)}, {_p_is(fr.iman_davenport_pvalue)} "
                    f"(df {k - 1}, {(k - 1) * (n_blocks - 1)}). "
                    + ("The methods differ significantly at α = 0.05." if fr.pvalue < _ALPHA else
                       "No significant difference at α = 0.05: the post-hoc tests below are descriptive."))
            else:
                stats_md.append("Friedman test not applicable with 2 methods (the pairwise Wilcoxon test is used).")
            stats_md.append(
                f"Nemenyi critical difference at α = 0.05: CD = q_α·sqrt(k(k+1)/(6N)) = "
                f"{A.nemenyi_q(k, _ALPHA):.3f}·sqrt({k}·{k + 1}/(6·{n_blocks})) = {cd:.3f}. Groups not "
                "significantly different: " + ("; ".join("{" + ", ".join(g) + "}" for g in groups) or "none") + ".")
            title = (f"Critical difference diagram, {primary} selection: Nemenyi α = 0.05, CD = {cd:.2f} "
                     f"(k = {k} methods, N = {n_blocks} tasks)")
            out.paths["cd_diagram"] = plots.plot_cd_diagram(avg, cd, folder / "cd_diagram.png", groups=groups,
                                                            labels=lab_md, title=title)
        else:
            stats_md.append("Friedman, Nemenyi and Wilcoxon tests skipped: they need at least 2 tasks.")

        if n_blocks >= 2:
            pw = A.wilcoxon_holm(scores, _ALPHA)
            pw = pw.assign(better=[a if d > 0 else (b if d < 0 else "") for a, b, d in
                                   zip(pw["method_a"], pw["method_b"], pw["mean_difference"])])

            def pair_display(style: str) -> pd.DataFrame:
                lab = lab_md if style == "md" else lab_tex
                esc = (lambda s: s) if style == "md" else _tex
                return pd.DataFrame({
                    "method A": [lab[m] for m in pw["method_a"]], "method B": [lab[m] for m in pw["method_b"]],
                    esc("mean A − B (points)"): [f"{100 * x:+.2f}" for x in pw["mean_difference"]],
                    "W": [_num(x, 1, style) for x in pw["statistic"]],
                    "p": [_pval(x, style) for x in pw["pvalue"]],
                    esc("p (Holm)"): [_pval(x, style) for x in pw["pvalue_holm"]],
                    esc("significant (α = 0.05)"): ["yes" if s else "no" for s in pw["significant"]]})

            min_p = 2.0 / 2 ** n_blocks
            pair_caption = (f"Pairwise two-sided Wilcoxon signed-rank tests over the {n_blocks} tasks (per-task mean "
                            f"over trials, {primary} selection), p-values corrected by Holm's step-down procedure "
                            "(family-wise α = 0.05).")
            if min_p > _ALPHA:
                pair_caption += (f" With {n_blocks} tasks the smallest attainable exact p-value is {min_p:.3f} > 0.05: "
                                 "no pair can be declared significant; more tasks are needed.")
            pair_md = out.table("pairwise", pw, pair_display("md"), pair_display("tex"), pair_caption)

    # -- figures ------------------------------------------------------------------------------
    curves = A.accuracy_curves(frame, realistic)
    out.paths["accuracy_vs_step"] = plots.plot_accuracy_curves(
        curves, folder / "accuracy_vs_step.png", methods=methods, labels=lab_md,
        title=(f"Target accuracy vs training step, config chosen by {primary} in each trial "
               "(mean over tasks and trials; band = ±1 std over trials)"))
    for bench in tasks:
        key = f"per_task_{_safe_name(bench)}"
        out.paths[key] = plots.plot_task_bars(comp, folder / f"{key}.png", benchmark=bench, methods=methods,
                                              labels=lab_md, primary=primary)

    # -- report.md ------------------------------------------------------------------------------
    studies = ", ".join(map(str, dict.fromkeys(frame["study"])))
    n_cfg = int(frame.groupby(list(A.GROUP_COLUMNS[:3]))["config"].nunique().max())
    steps = sorted(frame["step"].unique().tolist())
    lines = [f"# Study report: {studies}", "",
             f"Benchmarks: {', '.join(f'{b} ({len(t)} tasks)' for b, t in tasks.items())}. "
             f"Methods: {', '.join(lab_md[m] for m in methods)}. Up to {n_cfg} configuration(s) × {n_trials} "
             f"trial(s) × {len(steps)} checkpoint(s) (steps {steps[0]}–{steps[-1]}) per method and task.", "",
             f"**Selection.** Realistic: per trial, the (config, step) with the highest `{primary}` score (the "
             "study's primary validator; no target label is used). Oracle: the (config, step) with the highest "
             "target test accuracy: an *upper bound*, not a usable method. Ties: the smallest config (0 = default "
             "hyper-parameters), then the earliest step. Checkpoints without a score cannot be selected.", ""]
    if few:
        lines += [f"**{few}**", ""]
    if any_dagger:
        lines += ["† trains on labelled target samples: not comparable with the unsupervised methods.", ""]
    lines += ["## Realistic vs oracle selection", "", acc_md, acc_caption, "",
              "## Every validator", "", val_md, val_caption, ""]
    if ranks_md:
        lines += ["## Ranks and tests", "", ranks_md]
    elif stats_md:
        lines += ["## Ranks and tests", ""]
    lines += [s + "\n" for s in stats_md]
    if "cd_diagram" in out.paths:
        lines += ["![critical difference diagram](cd_diagram.png)", ""]
    if pair_md:
        lines += [pair_md, pair_caption, ""]
    lines += ["## Figures", "",
              f"Accuracy vs step: for each trial, the checkpoints of the configuration that `{primary}` selected; "
              "mean over tasks and trials.", "", "![accuracy vs step](accuracy_vs_step.png)", ""]
    for bench in tasks:
        name = f"per_task_{_safe_name(bench)}.png"
        lines += [f"![{bench}: per task, realistic vs oracle]({name})", ""]
    (folder / "report.md").write_text("\n".join(lines))
    out.paths["report"] = folder / "report.md"
    return out.paths
