r"""Rank tests: the comparison of several methods over several tasks, from a (tasks x methods)
score matrix (:func:`adaptlib.studies.analysis.task_scores`).

:func:`rank_scores`, :func:`average_ranks`, :func:`friedman`, :func:`nemenyi_q`,
:func:`critical_difference`, :func:`nemenyi_groups` follow J. Demšar, "Statistical
Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1-30, 2006 (average ranks,
Friedman test, Nemenyi critical difference); :func:`holm` and :func:`wilcoxon_holm` the
Wilcoxon signed-rank / Holm post-hoc of S. García, F. Herrera, JMLR 9:2677-2694, 2008, and
S. Holm, Scand. J. Statistics 6(2):65-70, 1979. Re-exported by
:mod:`adaptlib.studies.analysis`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["rank_scores", "average_ranks", "FriedmanResult", "friedman", "nemenyi_q", "critical_difference",
           "nemenyi_groups", "holm", "wilcoxon_holm"]


def _check_matrix(scores: pd.DataFrame, min_methods: int = 2) -> np.ndarray:
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a DataFrame (tasks x methods), got {type(scores).__name__}")
    x = scores.to_numpy(dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < min_methods or x.shape[0] < 1:
        raise ValueError(f"scores: need a (N tasks, k >= {min_methods} methods) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("scores: must be finite (every method scored on every task)")
    return x


def rank_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Rank the methods within each task (row): rank 1 = highest accuracy, ties get their average rank.

    ``scores`` is ``(N tasks, k methods)``; the result has the same shape and labels, each row a
    permutation-average of ``1..k`` (e.g. two methods tied for first both get 1.5).
    """
    _check_matrix(scores, min_methods=1)
    return scores.rank(axis=1, ascending=False, method="average")


def average_ranks(scores: pd.DataFrame) -> pd.Series:
    r"""Average rank of each method over tasks, :math:`R_j = \frac1N \sum_i r_i^j` (Demšar 2006, §3.2.2).

    ``scores`` is ``(N tasks, k methods)`` (higher is better); returns a Series indexed by
    method, in the column order of ``scores``.
    """
    return rank_scores(scores).mean(axis=0).rename("average_rank")


@dataclass
class FriedmanResult:
    r"""The Friedman test of k methods over N tasks (Demšar 2006, §3.2.2).

    Attributes:
        statistic: :math:`\chi^2_F` as computed by :func:`scipy.stats.friedmanchisquare`
            (with its tie correction; without ties it equals
            :math:`\frac{12N}{k(k+1)}\big[\sum_j R_j^2 - \frac{k(k+1)^2}{4}\big]`).
        pvalue: :math:`P(\chi^2_{k-1} \ge \chi^2_F)`.
        iman_davenport: :math:`F_F = \frac{(N-1)\chi^2_F}{N(k-1) - \chi^2_F}` (Iman & Davenport
            1980, less conservative); ``inf`` (p = 0) when every task ranks the methods alike.
        iman_davenport_pvalue: :math:`P(F_{k-1,(k-1)(N-1)} \ge F_F)`.
        k, n: number of methods and of tasks.
        average_ranks: :func:`average_ranks` of the matrix.
    """

    statistic: float
    pvalue: float
    iman_davenport: float
    iman_davenport_pvalue: float
    k: int
    n: int
    average_ranks: pd.Series


def friedman(scores: pd.DataFrame) -> FriedmanResult:
    """Friedman test that all k methods perform alike over the N tasks (tasks are the blocks).

    Args:
        scores: ``(N tasks, k methods)`` accuracies, ``k >= 3`` (scipy's requirement; with two
            methods use the Wilcoxon test), ``N >= 2``.

    Raises:
        ValueError: fewer than 3 methods or 2 tasks, or non-finite scores.
    """
    x = _check_matrix(scores, min_methods=3)
    n, k = x.shape
    if n < 2:
        raise ValueError(f"scores: the Friedman test needs at least 2 tasks, got {n}")
    res = stats.friedmanchisquare(*[x[:, j] for j in range(k)])
    chi2 = float(res.statistic)
    denom = n * (k - 1) - chi2
    if denom > 1e-12 * n * k:
        ff = (n - 1) * chi2 / denom
        ff_p = float(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    else:  # every task ranks the methods identically: F_F is infinite
        ff, ff_p = math.inf, 0.0
    return FriedmanResult(chi2, float(res.pvalue), ff, ff_p, k, n, average_ranks(scores))


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    r"""Critical value :math:`q_\alpha` of the Nemenyi test for ``k`` methods (Demšar 2006, Table 5a).

    :math:`q_\alpha = q_{1-\alpha}(k, \infty) / \sqrt 2`, the studentized range quantile with
    infinite degrees of freedom (:data:`scipy.stats.studentized_range`) over :math:`\sqrt2`;
    e.g. 2.343 (k = 3) and 2.949 (k = 7) at :math:`\alpha = 0.05`.

    Raises:
        ValueError: ``k < 2`` or ``alpha`` outside (0, 1).
    """
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (number of methods), got {k!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(stats.studentized_range.ppf(1.0 - alpha, int(k), np.inf) / math.sqrt(2.0))


def critical_difference(k: int, n: int, alpha: float = 0.05) -> float:
    r"""Nemenyi critical difference of average ranks, :math:`CD = q_\alpha \sqrt{k(k+1)/(6N)}` (Demšar 2006, eq. 5).

    Two methods' performances differ significantly (at level ``alpha``, all pairs) when their
    average ranks over ``n`` tasks differ by at least CD.

    Raises:
        ValueError: ``k < 2``, ``n < 1`` or ``alpha`` outside (0, 1).
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of tasks), got {n!r}")
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def nemenyi_groups(avg_ranks: pd.Series, cd: float) -> List[Tuple[str, ...]]:
    """Maximal groups of methods whose average ranks all lie within less than ``cd`` of each other.

    These are the bars of a critical-difference diagram: methods are sorted by average rank;
    a group is a maximal run of consecutive methods with ``max rank - min rank < cd`` (no pair
    inside it differs significantly by the Nemenyi test). Groups of one method are omitted.
    Returned in order of their best (lowest) rank, each group in rank order.

    Raises:
        ValueError: ``cd`` not positive and finite.
    """
    if not (isinstance(cd, (int, float)) and math.isfinite(cd) and cd > 0):
        raise ValueError(f"cd must be a positive finite number, got {cd!r}")
    r = avg_ranks.sort_values(kind="mergesort")
    names, vals = list(r.index), r.to_numpy(dtype=float)
    groups: List[Tuple[str, ...]] = []
    last_end = -1
    for i in range(len(vals)):
        j = i
        while j + 1 < len(vals) and vals[j + 1] - vals[i] < cd:
            j += 1
        if j > i and j > last_end:  # not contained in the previous group
            groups.append(tuple(names[i:j + 1]))
            last_end = j
    return groups


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> Tuple[np.ndarray, np.ndarray]:
    r"""Holm's step-down correction of ``m`` p-values (Holm 1979).

    With the p-values sorted :math:`p_{(1)} \le \dots \le p_{(m)}`, the adjusted values are
    :math:`\tilde p_{(i)} = \max_{j \le i} \min\big(1, (m - j + 1)\, p_{(j)}\big)`; hypothesis
    :math:`(i)` is rejected when :math:`\tilde p_{(i)} \le \alpha` -- equivalently, reject
    :math:`(1), (2), \dots` while :math:`p_{(i)} \le \alpha / (m - i + 1)` and stop at the first
    failure. Controls the family-wise error rate at ``alpha``.

    Args:
        pvalues: 1-D sequence of p-values in [0, 1] (original order is kept in the outputs).
        alpha: family-wise level, in (0, 1).

    Returns:
        ``(adjusted, reject)``: float64 and bool arrays of shape ``(m,)``.

    Raises:
        ValueError: p-values outside [0, 1] or NaN, or ``alpha`` outside (0, 1).
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if p.size and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise ValueError(f"pvalues must be in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="mergesort")
    adj_sorted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(adj_sorted) if m else adj_sorted
    adjusted = np.empty(m)
    adjusted[order] = adj_sorted
    return adjusted, adjusted <= alpha


def wilcoxon_holm(scores: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    r"""All pairwise Wilcoxon signed-rank tests over tasks, Holm-corrected (García & Herrera 2008).

    For every pair of methods (a, b), the differences :math:`d_i = a_i - b_i` over the N tasks
    (the rows of ``scores``; per-task means over trials) are tested with
    :func:`scipy.stats.wilcoxon` (two-sided, ``zero_method="wilcox"``: zero differences are
    dropped; exact null distribution for small samples without ties, normal approximation
    otherwise). If every difference is zero the pair gets p = 1. The m = k(k-1)/2 p-values are
    corrected with :func:`holm`. With N tasks the smallest attainable two-sided exact p-value is
    :math:`2/2^N` (0.125 for N = 4), so few tasks cannot show significance.

    Returns:
        DataFrame, one row per pair in column order of ``scores``: ``method_a, method_b, n_tasks,
        mean_difference`` (a - b, a difference of accuracies as fractions), ``statistic, pvalue,
        pvalue_holm, significant``.

    Raises:
        ValueError: fewer than 2 methods, or non-finite scores.
    """
    x = _check_matrix(scores, min_methods=2)
    names = list(scores.columns)
    rows = []
    for a, b in combinations(range(len(names)), 2):
        d = x[:, a] - x[:, b]
        if np.all(d == 0):
            stat, p = math.nan, 1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # small-sample / ties notes from scipy
                res = stats.wilcoxon(x[:, a], x[:, b], zero_method="wilcox", alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
        rows.append({"method_a": names[a], "method_b": names[b], "n_tasks": int(x.shape[0]),
                     "mean_difference": float(d.mean()), "statistic": stat, "pvalue": p})
    out = pd.DataFrame(rows, columns=["method_a", "method_b", "n_tasks", "mean_difference", "statistic", "pvalue"])
    adjusted, reject = holm(out["pvalue"].to_numpy(), alpha)
    out["pvalue_holm"] = adjusted
    out["significant"] = reject
    return out
