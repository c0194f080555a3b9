r"""Model selection and statistics over study records (pure functions of a pandas DataFrame).

A study writes one record per (run, checkpoint): which benchmark, task, method,
hyper-parameter configuration (``config``), repetition (``trial``) and training ``step``,
the target test accuracy (the *oracle*, which a practitioner never sees; a fraction in
[0, 1], as are every accuracy, std, interval and difference computed here) and the score of
every *validator* (an unsupervised estimate of target accuracy; higher is better). This
module turns those records into the numbers a report shows:

* :func:`select` -- model selection: per (benchmark, task, method, trial), the (config,
  step) that maximises a validator's score ("realistic" selection) or the target accuracy
  itself (``"oracle"``, an upper bound no unsupervised method can reach);
* :func:`summarize`, :func:`t_interval` -- mean, sample standard deviation and Student-t
  confidence interval over trials, plus the mean over tasks (per trial average over
  tasks, then over trials);
* :func:`rule_comparison`, :func:`validator_table` -- realistic vs oracle with the gap,
  and every validator side by side;
* :func:`task_scores`, :func:`rank_scores`, :func:`average_ranks`, :func:`friedman`,
  :func:`nemenyi_q`, :func:`critical_difference`, :func:`nemenyi_groups`,
  :func:`holm`, :func:`wilcoxon_holm` -- the comparison of several methods over several
  tasks of J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets",
  JMLR 7:1-30, 2006 (average ranks, Friedman test, Nemenyi critical difference) with the
  Wilcoxon signed-rank / Holm post-hoc of S. García, F. Herrera, "An Extension on
  'Statistical Comparisons of Classifiers over Multiple Data Sets' for all Pairwise
  Comparisons", JMLR 9:2677-2694, 2008, and S. Holm, "A Simple Sequentially Rejective
  Multiple Test Procedure", Scand. J. Statistics 6(2):65-70, 1979. The rank tests are in
  :mod:`adaptlib.studies.rank_tests` and re-exported here.

Validator names and the selection protocol follow K. You et al., "Towards Accurate Model
Selection in Deep Unsupervised Domain Adaptation", ICML 2019 (DEV), and K. Musgrave et al.,
"Benchmarking Validation Methods for Unsupervised Domain Adaptation", 2021.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats

# The rank tests live in rank_tests.py; they are part of this module's interface.
from .rank_tests import (FriedmanResult, average_ranks, critical_difference, friedman, holm,  # noqa: F401
                         nemenyi_groups, nemenyi_q, rank_scores, wilcoxon_holm)

__all__ = [
    "VALIDATORS", "ORACLE", "MEAN_TASK", "REQUIRED_COLUMNS", "GROUP_COLUMNS", "ACCURACY_RANGE", "MIN_TRIALS_FOR_CI",
    "check_records", "validator_columns", "select", "t_interval", "summarize", "rule_comparison",
    "validator_table", "accuracy_curves", "task_scores", "rank_scores", "average_ranks", "FriedmanResult", "friedman",
    "nemenyi_q", "critical_difference", "nemenyi_groups", "holm", "wilcoxon_holm",
]

#: The validator columns a study writes (higher is better; NaN where not computed).
VALIDATORS: Tuple[str, ...] = ("source-accuracy", "iwv", "dev", "snd", "entropy")
#: The selection rule that looks at the target test accuracy (an upper bound, not a method).
ORACLE = "oracle"
#: The ``task`` label of the mean-over-tasks rows.
MEAN_TASK = "Mean"
#: Columns every record frame must have (plus one float column per validator).
REQUIRED_COLUMNS: Tuple[str, ...] = (
    "study", "benchmark", "task", "method", "config", "trial", "seed", "step", "hparams",
    "uses_target_labels", "target_accuracy")
#: One selection is made per group of these columns (a trial of one method on one task).
GROUP_COLUMNS: Tuple[str, ...] = ("benchmark", "task", "method", "trial")
_INT_COLUMNS = ("config", "trial", "seed", "step")
_SUMMARY_KEYS = ["benchmark", "task", "method"]


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def check_records(frame: pd.DataFrame, *, validators: Sequence[str] = ()) -> None:
    """Check that ``frame`` has the shape of study records; raise a clear error otherwise.

    Expected: a :class:`pandas.DataFrame`, one row per (run, checkpoint), with the columns
    :data:`REQUIRED_COLUMNS` -- ``config``, ``trial``, ``seed``, ``step`` integer,
    ``target_accuracy`` numeric, a fraction in [0, 1] (NaN allowed), ``uses_target_labels``
    boolean and constant per method --
    plus every name in ``validators`` as a numeric column. No two rows may share
    (benchmark, task, method, trial, config, step).

    Raises:
        TypeError: ``frame`` is not a DataFrame, or a column has the wrong dtype (named).
        ValueError: ``frame`` is empty, a column is missing (all missing ones are named),
            ``target_accuracy`` outside [0, 1] (e.g. percent), duplicated checkpoints, or a
            method with mixed ``uses_target_labels``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame of study records, got {type(frame).__name__}")
    missing = [c for c in list(REQUIRED_COLUMNS) + list(validators) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame: missing column(s) {missing}; study records need {list(REQUIRED_COLUMNS)} "
                         f"plus one numeric column per validator")
    if frame.empty:
        raise ValueError("frame: no records (the DataFrame is empty)")
    for col in _INT_COLUMNS:
        if not pd.api.types.is_integer_dtype(frame[col]):
            raise TypeError(f"frame[{col!r}] must hold integers, got dtype {frame[col].dtype}")
    for col in ["target_accuracy"] + list(validators):
        if not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            raise TypeError(f"frame[{col!r}] must be numeric (float), got dtype {frame[col].dtype}")
    acc = frame["target_accuracy"].to_numpy(dtype=np.float64)
    outside = acc[~np.isnan(acc) & ((acc < 0) | (acc > 1))]
    if outside.size:
        raise ValueError(f"frame['target_accuracy'] must be a fraction in [0, 1], got {outside.size} value(s) outside, "
                         f"e.g. {float(outside[0])!r}" + (" (percent? divide by 100)" if outside.max() <= 100 else ""))
    if not pd.api.types.is_bool_dtype(frame["uses_target_labels"]):
        raise TypeError(f"frame['uses_target_labels'] must be boolean, got dtype {frame['uses_target_labels'].dtype}")
    mixed = frame.groupby("method")["uses_target_labels"].nunique()
    if (mixed > 1).any():
        raise ValueError(f"frame: methods {list(mixed[mixed > 1].index)} have both True and False "
                         "uses_target_labels")
    keys = list(GROUP_COLUMNS) + ["config", "step"]
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].to_dict()
        raise ValueError(f"frame: {int(dup.sum())} rows share (benchmark, task, method, trial, config, step) "
                         f"with another row, e.g. {first}; each checkpoint must appear once "
                         "(several studies in one frame must differ in benchmark, task or method)")


def validator_columns(frame: pd.DataFrame) -> List[str]:
    """Names of the numeric columns of ``frame`` that are neither record metadata nor the oracle.

    These are the columns :func:`select` accepts as a rule (the known :data:`VALIDATORS`
    first, in that order, then any other score column in frame order).
    """
    def numeric(c: str) -> bool:
        return pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])

    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in VALIDATORS and numeric(c)]
    return [v for v in VALIDATORS if v in frame.columns and numeric(v)] + extra


def _score_column(frame: pd.DataFrame, rule: str) -> str:
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a validator name or {ORACLE!r}, got {type(rule).__name__}")
    if rule == ORACLE:
        return "target_accuracy"
    known = validator_columns(frame)
    if rule in frame.columns and rule not in known and rule not in REQUIRED_COLUMNS:
        raise TypeError(f"rule: column {rule!r} must be numeric (validator scores, NaN where not computed), "
                        f"got dtype {frame[rule].dtype}")
    if rule not in known:
        hint = (f" (the target accuracy is selected on with rule={ORACLE!r})" if rule == "target_accuracy" else "")
        raise ValueError(f"rule: unknown {rule!r}{hint}; expected {ORACLE!r} or a validator column of frame: {known}")
    return rule


# --------------------------------------------------------------------------------------
# model selection
# --------------------------------------------------------------------------------------
def select(frame: pd.DataFrame, rule: str, *, on_missing: str = "raise") -> pd.DataFrame:
    r"""Model selection: per (benchmark, task, method, trial), the checkpoint with the best score.

    For each group :math:`g` of records (one trial of one method on one task), over every
    hyper-parameter configuration :math:`c` and checkpoint step :math:`s` of that trial,

    .. math::
        (c^*, s^*) = \operatorname*{arg\,max}_{(c, s) \in g} \; \text{score}_{\text{rule}}(c, s),

    where the score is the validator column named ``rule`` (higher is better), or, with
    ``rule="oracle"``, the target test accuracy (the oracle: an upper bound that uses target
    labels; no unsupervised method can select this way). The reported accuracy of the group is
    the target accuracy of the chosen checkpoint.

    Only the ``rule`` column decides: for a validator rule, ``target_accuracy`` is removed
    before the argmax and read back only for the chosen rows.

    Ties (exactly equal best scores) are broken deterministically, independently of row order:
    the smallest ``config`` wins (config 0, the default hyper-parameters, first), then the
    smallest ``step`` (the earliest checkpoint). Rows whose score is NaN are not selectable.

    Args:
        frame: study records (see :func:`check_records`).
        rule: a validator column name (e.g. ``"dev"``) or ``"oracle"``.
        on_missing: what to do with a group where no row has a score: ``"raise"`` (default)
            or ``"skip"`` (the group is left out of the result; used for validators that were
            not computed for some methods).

    Returns:
        DataFrame with one row per group, sorted by (benchmark, task, method, trial), columns
        ``study, benchmark, task, method, trial, rule, config, step, seed, hparams,
        uses_target_labels, score, target_accuracy``; ``score`` is the rule's value at the
        chosen checkpoint (equal to ``target_accuracy`` for the oracle).

    Raises:
        TypeError / ValueError: bad records (:func:`check_records`), an unknown ``rule``
            (the available validators are listed), an infinite score, ``on_missing`` not one
            of ``"raise"``/``"skip"``, or (with ``"raise"``) groups without any scored row
            (the first few are named).
    """
    check_records(frame)
    if on_missing not in ("raise", "skip"):
        raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}")
    column = _score_column(frame, rule)
    keys = list(GROUP_COLUMNS)
    # The selection sees the group keys, config, step and the rule's score -- nothing else.
    work = frame[keys + ["config", "step", column]].rename(columns={column: "_score"})
    work = work.assign(_row=np.arange(len(frame)), _score=work["_score"].astype("float64"))
    if np.isinf(work["_score"].to_numpy()).any():
        raise ValueError(f"frame[{column!r}]: infinite scores; use NaN for checkpoints a validator did not score")
    scored = work[work["_score"].notna()]
    all_groups = work[keys].drop_duplicates()
    have = scored[keys].drop_duplicates()
    lacking = all_groups.merge(have, how="left", on=keys, indicator=True)
    lacking = lacking[lacking["_merge"] == "left_only"][keys]
    if len(lacking) and on_missing == "raise":
        example = lacking.head(3).to_dict("records")
        raise ValueError(f"select(rule={rule!r}): {len(lacking)} (benchmark, task, method, trial) group(s) have no "
                         f"checkpoint with a {column!r} score (all NaN), e.g. {example}; nothing to select there "
                         f"(pass on_missing='skip' to leave them out)")
    # Order: best score first, then smallest config, then smallest step; keys make it total.
    ranked = scored.sort_values(keys + ["_score", "config", "step"],
                                ascending=[True] * len(keys) + [False, True, True], kind="mergesort")
    chosen = ranked.groupby(keys, sort=True).head(1)
    rows = frame.iloc[chosen["_row"].to_numpy()]
    out = pd.DataFrame({
        "study": rows["study"].to_numpy(), **{k: rows[k].to_numpy() for k in keys}, "rule": rule,
        "config": rows["config"].to_numpy(), "step": rows["step"].to_numpy(), "seed": rows["seed"].to_numpy(),
        "hparams": rows["hparams"].to_numpy(), "uses_target_labels": rows["uses_target_labels"].to_numpy(),
        "score": chosen["_score"].to_numpy(), "target_accuracy": rows["target_accuracy"].to_numpy(dtype=float),
    })
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------
def t_interval(values: Sequence[float], confidence: float = 0.95, *,
               bounds: Optional[Tuple[float, float]] = None) -> Tuple[float, float, float, float]:
    r"""Mean, sample standard deviation and Student-t confidence interval of ``values``.

    With :math:`n` values, mean :math:`\bar x` and sample standard deviation
    :math:`s = \sqrt{\sum_i (x_i - \bar x)^2 / (n - 1)}`, the interval is

    .. math::
        \bar x \pm t_{(1 + \gamma)/2,\; n - 1} \, \frac{s}{\sqrt n}

    (:math:`\gamma` = ``confidence``; :math:`t` from :data:`scipy.stats.t`). Units are those
    of ``values`` (accuracy: a fraction in [0, 1]).

    With few values the interval is wide (:math:`t_{0.975, 1} = 12.7` for two): it can run
    past the range a quantity can take. ``bounds`` clips it to that range, e.g. ``(0, 1)``
    for accuracies; a clipped interval is still not a valid 95 % interval when ``n`` is that
    small, which reports say.

    Args:
        values: 1-D sequence of finite floats, ``n >= 1``.
        confidence: coverage of the interval, in (0, 1).
        bounds: ``(low, high)`` to clip the interval to, or ``None``.

    Returns:
        ``(mean, std, low, high)``; with ``n = 1`` the std and the interval are NaN (one
        trial says nothing about the spread).

    Raises:
        ValueError: empty or non-finite ``values``, or ``confidence`` outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values: need at least one value")
    if not np.isfinite(x).all():
        raise ValueError(f"values: must be finite, got {x.tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, x.size - 1)) * std / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, float(bounds[0])), min(high, float(bounds[1]))
    return mean, std, low, high


def _task_means_per_trial(selected: pd.DataFrame) -> pd.DataFrame:
    """Per (benchmark, method, trial), the target accuracy averaged over the benchmark's tasks.

    A trial that lacks some task of its benchmark (for that method) is dropped with a warning:
    its average would be over other tasks and not comparable.
    """
    out = []
    for (bench, method), sub in selected.groupby(["benchmark", "method"], sort=False):
        n_tasks = selected.loc[selected["benchmark"] == bench, "task"].nunique()
        per = sub.groupby("trial").agg(acc=("target_accuracy", "mean"), n=("task", "nunique"))
        incomplete = per.index[per["n"] < n_tasks].tolist()
        if incomplete:
            warnings.warn(f"{bench}/{method}: trial(s) {incomplete} lack some of the {n_tasks} tasks and are left "
                          "out of the mean over tasks", RuntimeWarning, stacklevel=3)
        per = per[per["n"] == n_tasks]
        for trial, acc in per["acc"].items():
            out.append({"benchmark": bench, "method": method, "trial": trial, "target_accuracy": acc})
    return pd.DataFrame(out, columns=["benchmark", "method", "trial", "target_accuracy"])


#: The range of an accuracy: confidence intervals of accuracies are clipped to it.
ACCURACY_RANGE: Tuple[float, float] = (0.0, 1.0)
#: Fewer trials than this give a confidence interval too wide to mean much (``t_{0.975, 1} = 12.7``):
#: reports warn.
MIN_TRIALS_FOR_CI = 3


def summarize(selected: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    r"""Mean, std and confidence interval over trials per (benchmark, task, method), plus the mean over tasks.

    Each (benchmark, task, method) cell summarises the target accuracies (fractions in [0, 1])
    of the checkpoints :func:`select` chose in each trial with :func:`t_interval` (sample std,
    Student-t CI, clipped to [0, 1]: :data:`ACCURACY_RANGE`; with fewer than
    :data:`MIN_TRIALS_FOR_CI` trials the interval says little even so). The
    extra row with ``task == "Mean"`` (:data:`MEAN_TASK`) per (benchmark, method) first averages
    each trial's accuracy over the benchmark's tasks, then summarises those per-trial averages
    over trials (so its std is the spread of the task average, not of single tasks). Trials
    that miss a task are left out of that row (with a :class:`RuntimeWarning`).

    Args:
        selected: output of :func:`select` (columns ``benchmark, task, method, trial,
            uses_target_labels, target_accuracy`` at least).
        confidence: coverage of the interval, in (0, 1).

    Returns:
        DataFrame with columns ``benchmark, task, method, uses_target_labels, n, mean, std,
        ci_low, ci_high`` (n = number of trials), tasks in order of appearance, the Mean row last
        per benchmark and method.

    Raises:
        ValueError: missing columns, or ``selected`` is empty.
    """
    need = ["benchmark", "task", "method", "trial", "uses_target_labels", "target_accuracy"]
    missing = [c for c in need if c not in selected.columns]
    if missing:
        raise ValueError(f"selected: missing column(s) {missing}; pass the output of select()")
    if selected.empty:
        raise ValueError("selected: no rows")
    labels = selected.groupby("method", sort=False)["uses_target_labels"].first()
    rows = []
    for bench in selected["benchmark"].unique():
        b = selected[selected["benchmark"] == bench]
        tasks = list(b["task"].unique())
        means = _task_means_per_trial(b)
        for method in b["method"].unique():
            for task in tasks + [MEAN_TASK]:
                if task == MEAN_TASK:
                    acc = means.loc[means["method"] == method, "target_accuracy"].to_numpy()
                else:
                    acc = b.loc[(b["task"] == task) & (b["method"] == method), "target_accuracy"].to_numpy()
                if acc.size == 0:
                    mean = std = lo = hi = math.nan
                else:
                    mean, std, lo, hi = t_interval(acc, confidence, bounds=ACCURACY_RANGE)
                rows.append({"benchmark": bench, "task": task, "method": method,
                             "uses_target_labels": bool(labels[method]), "n": int(acc.size), "mean": mean,
                             "std": std, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def rule_comparison(frame: pd.DataFrame, primary: str, confidence: float = 0.95) -> pd.DataFrame:
    r"""Realistic selection (by ``primary``) and oracle selection side by side, with the gap.

    For each (benchmark, task, method) and the mean over tasks, the :func:`summarize` columns of
    both rules (prefixed ``realistic_`` and ``oracle_``) and
    ``gap = oracle_mean - realistic_mean`` (a difference of fractions; :math:`\ge 0` cell by cell since
    the oracle maximises the very accuracy being averaged, over the same trials).

    Raises:
        ValueError: as :func:`select` for either rule (e.g. ``primary`` unknown or unscored).
    """
    if primary == ORACLE:
        raise ValueError(f"primary must be a validator (the realistic rule), not {ORACLE!r}")
    real = summarize(select(frame, primary), confidence)
    orac = summarize(select(frame, ORACLE), confidence)
    stat = ["n", "mean", "std", "ci_low", "ci_high"]
    out = real.rename(columns={c: "realistic_" + c for c in stat}).merge(
        orac[_SUMMARY_KEYS + stat].rename(columns={c: "oracle_" + c for c in stat}), on=_SUMMARY_KEYS, how="left")
    out["gap"] = out["oracle_mean"] - out["realistic_mean"]
    return out


def validator_table(frame: pd.DataFrame, validators: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    r"""Mean-over-tasks target accuracy per method under every validator's selection, and the oracle's.

    For each benchmark, method and rule in ``validators`` + ``["oracle"]``: the ``Mean`` row of
    :func:`summarize` of :func:`select` (``on_missing="skip"``: a validator not computed for a
    method, or for some of its tasks, gives NaN there). ``best_validator`` names, per
    (benchmark, method), the validator with the highest mean -- chosen *in hindsight*, with the
    target labels, so it is not itself a valid selection rule (ties: first in ``validators``).

    Returns:
        DataFrame with columns ``benchmark, method, uses_target_labels, rule, n, mean, std,
        ci_low, ci_high, best_validator`` (one row per benchmark x method x rule).

    Raises:
        ValueError: empty ``validators``, an unknown validator, ``"oracle"`` in ``validators``.
    """
    validators = list(validators)
    if not validators:
        raise ValueError("validators: name at least one validator column")
    if ORACLE in validators:
        raise ValueError(f"validators: {ORACLE!r} is added by validator_table itself; pass validator columns only")
    check_records(frame)
    for v in validators:
        _score_column(frame, v)
    parts = []
    for rule in validators + [ORACLE]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # partial coverage -> NaN below, by design
            sel = select(frame, rule, on_missing="skip")
        combos = frame[["benchmark", "method", "uses_target_labels"]].drop_duplicates(["benchmark", "method"])
        if sel.empty:
            summ = combos.assign(n=0, mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan)
        else:
            s = summarize(sel, confidence)
            s = s[s["task"] == MEAN_TASK].drop(columns=["task", "uses_target_labels"])
            # A method scored on only some tasks of a benchmark has no comparable mean.
            full = frame.groupby(["benchmark", "method"])["task"].nunique().rename("need")
            got = sel.groupby(["benchmark", "method"])["task"].nunique().rename("got")
            cover = pd.concat([full, got], axis=1).reset_index()
            s = s.merge(cover, on=["benchmark", "method"], how="left")
            s.loc[s["got"] < s["need"], ["n", "mean", "std", "ci_low", "ci_high"]] = [0, math.nan, math.nan,
                                                                                     math.nan, math.nan]
            summ = combos.merge(s.drop(columns=["need", "got"]), on=["benchmark", "method"], how="left")
            summ["n"] = summ["n"].fillna(0).astype(int)
        parts.append(summ.assign(rule=rule))
    table = pd.concat(parts, ignore_index=True)
    best = {}
    for (bench, method), sub in table[table["rule"] != ORACLE].groupby(["benchmark", "method"], sort=False):
        means = sub.set_index("rule")["mean"].reindex(validators)
        best[bench, method] = means.idxmax() if means.notna().any() else None
    table["best_validator"] = [best.get((b, m)) for b, m in zip(table["benchmark"], table["method"])]
    return table[["benchmark", "method", "uses_target_labels", "rule", "n", "mean", "std", "ci_low", "ci_high",
                  "best_validator"]]


def accuracy_curves(frame: pd.DataFrame, selected: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    r"""Mean target accuracy per method vs checkpoint step, averaged over tasks and trials.

    Which configuration's checkpoints make a trial's curve: with ``selected`` (the output of
    :func:`select`, normally for the study's primary validator), the config chosen in that
    (benchmark, task, method, trial) -- so the curve goes through the selected checkpoint;
    without it, the default configuration (``config == 0``). For each step, the target
    accuracy is first averaged over the tasks of each trial, then mean and sample std
    (``ddof=1``; NaN with one trial) are taken over trials.

    Returns:
        DataFrame with columns ``benchmark, method, step, n_trials, n_tasks, mean, std``, sorted
        by benchmark and method (order of appearance in ``frame``), then step.

    Raises:
        ValueError: bad records, ``selected`` lacking columns, or no record of config 0 when
            ``selected`` is None.
    """
    check_records(frame)
    keys = list(GROUP_COLUMNS)
    if selected is None:
        rows = frame[frame["config"] == 0]
        if rows.empty:
            raise ValueError("frame: no records of the default configuration (config == 0) to draw curves from")
    else:
        missing = [c for c in keys + ["config"] if c not in selected.columns]
        if missing:
            raise ValueError(f"selected: missing column(s) {missing}; pass the output of select()")
        rows = frame.merge(selected[keys + ["config"]], on=keys + ["config"], how="inner")
    per_trial = rows.groupby(["benchmark", "method", "trial", "step"], sort=False).agg(
        acc=("target_accuracy", "mean"), n_tasks=("task", "nunique")).reset_index()
    out = per_trial.groupby(["benchmark", "method", "step"], sort=False).agg(
        n_trials=("acc", "size"), n_tasks=("n_tasks", "min"), mean=("acc", "mean"),
        std=("acc", lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else math.nan)).reset_index()
    order = {m: i for i, m in enumerate(dict.fromkeys(frame["method"]))}
    benches = {b: i for i, b in enumerate(dict.fromkeys(frame["benchmark"]))}
    out = out.assign(_b=out["benchmark"].map(benches), _o=out["method"].map(order))
    out = out.sort_values(["_b", "_o", "step"], kind="mergesort")
    return out.drop(columns=["_b", "_o"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# ranks and tests (Demšar 2006)
# --------------------------------------------------------------------------------------
def task_scores(selected: pd.DataFrame, methods: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """The blocks x methods matrix the rank tests use: mean target accuracy over trials per task.

    Rows are ``"benchmark/task"`` (every task of every benchmark is one block, i.e. one
    "data set" in Demšar's sense), columns are methods (``methods`` order, else order of
    appearance). Raises ``ValueError`` if a method has no result on some task (rank tests
    need a complete matrix) or a named method is absent.
    """
    cell = selected.groupby(["benchmark", "task", "method"], sort=False)["target_accuracy"].mean().reset_index()
    cell["block"] = cell["benchmark"].astype(str) + "/" + cell["task"].astype(str)
    mat = cell.pivot(index="block", columns="method", values="target_accuracy")
    mat = mat.reindex(index=list(dict.fromkeys(cell["block"])))
    order = list(methods) if methods is not None else list(dict.fromkeys(cell["method"]))
    absent = [m for m in order if m not in mat.columns]
    if absent:
        raise ValueError(f"methods: {absent} have no selected results; present are {list(mat.columns)}")
    mat = mat[order]
    if mat.isna().any().any():
        holes = [(b, m) for b in mat.index for m in mat.columns if pd.isna(mat.loc[b, m])][:5]
        raise ValueError(f"rank tests need every method on every task; missing (task, method) e.g. {holes}")
    mat.columns.name = "method"
    return mat
