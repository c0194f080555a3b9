"""Model selection, summaries, rank statistics, figures and the report of a comparison study.

References are independent of the code under test: brute-force loops over records, hand
formulas (Student t, Friedman, Holm), scipy on the same matrices, and the published table of
Nemenyi critical values (Demšar 2006, Table 5a).
"""
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from adaptlib.studies import analysis as A
from adaptlib.studies import plots
from adaptlib.studies.report import write_report

VALIDATORS = ["source-accuracy", "iwv", "dev", "snd", "entropy"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_records(methods=("source-only", "dann", "finetune"), tasks=("A->B", "B->A", "A->C", "C->A"), configs=2,
                 trials=3, steps=(100, 200), seed=0, benchmark="toy", integer_scores=False):
    """Synthetic study records of the real shape (accuracy a fraction); method i is about 0.05 better than i-1."""
    rng = np.random.default_rng(seed)
    rows = []
    for mi, m in enumerate(methods):
        for task in tasks:
            for c in range(configs):
                for t in range(trials):
                    for s in steps:
                        pct = 60 + 5 * mi + 2 * c + s / 100 + rng.normal(0, 2)
                        acc = pct / 100
                        row = dict(study="toy-study", benchmark=benchmark, task=task, method=m, config=c, trial=t,
                                   seed=1000 * c + t, step=s, hparams=json.dumps({"lr": 0.01 * (c + 1)}),
                                   uses_target_labels=(m == "finetune"), target_accuracy=acc)
                        for v in VALIDATORS:
                            score = pct + rng.normal(0, 3)
                            row[v] = float(round(score / 4)) if integer_scores else score  # coarse -> many ties
                        rows.append(row)
    return pd.DataFrame(rows)


def brute_force_select(frame, column):
    """Reference selection: loop over records; best score, then smallest config, then smallest step."""
    best = {}
    for r in frame.to_dict("records"):
        score = r[column]
        if math.isnan(score):
            continue
        key = (r["benchmark"], r["task"], r["method"], r["trial"])
        cand = (-score, r["config"], r["step"])
        if key not in best or cand < best[key][0]:
            best[key] = (cand, r["config"], r["step"], r["target_accuracy"])
    return {k: v[1:] for k, v in best.items()}


def as_dict(sel):
    return {(r.benchmark, r.task, r.method, r.trial): (r.config, r.step, r.target_accuracy)
            for r in sel.itertuples(index=False)}


# -------------------------------------------------------------------------------------------
# selection
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("integer_scores", [False, True])
@pytest.mark.parametrize("rule", ["dev", "entropy", "oracle"])
def test_select_matches_brute_force_argmax_with_tie_rule(rule, integer_scores):
    frame = make_records(configs=3, steps=(10, 20, 30), integer_scores=integer_scores)
    rng = np.random.default_rng(1)
    if rule != "oracle":  # some checkpoints unscored
        frame.loc[rng.random(len(frame)) < 0.2, rule] = np.nan
    ref = brute_force_select(frame, "target_accuracy" if rule == "oracle" else rule)
    sel = A.select(frame, rule)
    assert len(sel) == 3 * 4 * 3 and (sel["rule"] == rule).all()
    assert as_dict(sel) == ref
    # independent of row order
    shuffled = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert as_dict(A.select(shuffled, rule)) == ref


def test_select_tie_prefers_default_config_then_earliest_step():
    base = make_records(methods=("dann",), tasks=("A->B",), configs=3, trials=1, steps=(10, 20))
    base["dev"] = 1.0
    base.loc[(base["config"] == 2), "dev"] = 5.0  # config 2: both steps tie for the best
    sel = A.select(base, "dev")
    assert (int(sel["config"][0]), int(sel["step"][0])) == (2, 10)
    base.loc[(base["config"] == 1) & (base["step"] == 20), "dev"] = 5.0  # now config 1 ties too
    sel = A.select(base.iloc[::-1].reset_index(drop=True), "dev")
    assert (int(sel["config"][0]), int(sel["step"][0])) == (1, 20)


def test_realistic_selection_never_reads_target_accuracy():
    frame = make_records(configs=3, steps=(10, 20, 30))
    before = A.select(frame, "dev")
    perturbed = frame.copy()
    perturbed["target_accuracy"] = np.random.default_rng(7).uniform(0, 1, len(frame))
    after = A.select(perturbed, "dev")
    pd.testing.assert_frame_equal(before[["task", "method", "trial", "config", "step", "score"]],
                                  after[["task", "method", "trial", "config", "step", "score"]])
    # ...but the reported accuracy is that of the chosen checkpoint in the perturbed records
    keyed = perturbed.set_index(["task", "method", "trial", "config", "step"])["target_accuracy"]
    expect = [keyed[r.task, r.method, r.trial, r.config, r.step] for r in after.itertuples()]
    np.testing.assert_array_equal(after["target_accuracy"].to_numpy(), expect)
    # the oracle does follow target accuracy: it is the maximum of each group
    orac = A.select(perturbed, "oracle")
    group_max = perturbed.groupby(["task", "method", "trial"])["target_accuracy"].max()
    np.testing.assert_array_equal(orac.set_index(["task", "method", "trial"])["target_accuracy"].sort_index(),
                                  group_max.sort_index())


def test_select_unscored_group_raises_or_skips():
    frame = make_records()
    frame.loc[(frame["method"] == "dann") & (frame["task"] == "B->A") & (frame["trial"] == 1), "snd"] = np.nan
    with pytest.raises(ValueError, match="no checkpoint with a 'snd' score"):
        A.select(frame, "snd")
    sel = A.select(frame, "snd", on_missing="skip")
    assert len(sel) == 3 * 4 * 3 - 1
    frame.loc[0, "iwv"] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        A.select(frame, "iwv")


def test_bad_input_raises_clear_errors():
    frame = make_records()
    with pytest.raises(ValueError, match=r"missing column\(s\) \['target_accuracy'\]"):
        A.select(frame.drop(columns="target_accuracy"), "dev")
    with pytest.raises(ValueError, match="rule: unknown 'accuracy'.*'oracle'.*'dev'"):
        A.select(frame, "accuracy")
    with pytest.raises(ValueError, match="rule: unknown 'target_accuracy'.*rule='oracle'"):
        A.select(frame, "target_accuracy")
    with pytest.raises(TypeError, match="'dev' must be numeric"):
        A.select(frame.assign(dev="high"), "dev")
    with pytest.raises(TypeError, match="DataFrame"):
        A.select(frame.to_dict("records"), "dev")
    with pytest.raises(ValueError, match="empty"):
        A.select(frame.iloc[:0], "dev")
    with pytest.raises(TypeError, match=r"frame\['step'\] must hold integers"):
        A.select(frame.assign(step=frame["step"] / 1.0), "dev")
    with pytest.raises(ValueError, match="share"):
        A.select(pd.concat([frame, frame.iloc[:1]]), "dev")
    with pytest.raises(ValueError, match="on_missing"):
        A.select(frame, "dev", on_missing="drop")
    with pytest.raises(ValueError, match="primary"):
        write_report(frame, "unused", primary="oracle", validators=VALIDATORS)
    with pytest.raises(ValueError, match="rule: unknown 'nope'"):
        write_report(frame, "unused", primary="nope", validators=VALIDATORS)
    with pytest.raises(ValueError, match="methods"):
        write_report(frame, "unused", primary="dev", validators=VALIDATORS, methods=["dann", "dan"])


# -------------------------------------------------------------------------------------------
# summaries
# -------------------------------------------------------------------------------------------
def test_t_interval_against_hand_computation():
    mean, std, lo, hi = A.t_interval([1.0, 2.0, 4.0])
    s = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302653 * s / math.sqrt(3)  # t_{0.975, 2} from a Student-t table
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(s)
    assert lo == pytest.approx(7 / 3 - half, abs=1e-5) and hi == pytest.approx(7 / 3 + half, abs=1e-5)
    _, _, lo90, hi90 = A.t_interval([1.0, 2.0, 4.0], confidence=0.90)
    assert hi90 - 7 / 3 == pytest.approx(2.919986 * s / math.sqrt(3), abs=1e-5)  # t_{0.95, 2}
    m1, s1, l1, h1 = A.t_interval([5.0])
    assert m1 == 5.0 and all(math.isnan(v) for v in (s1, l1, h1))
    with pytest.raises(ValueError, match="values"):
        A.t_interval([])
    with pytest.raises(ValueError, match="confidence"):
        A.t_interval([1.0, 2.0], confidence=95)


def test_summarize_cells_and_mean_over_tasks_by_hand():
    frame = make_records(configs=1, steps=(10,), trials=3)
    sel = A.select(frame, "oracle")
    summ = A.summarize(sel).set_index(["task", "method"])
    for method in ("dann", "finetune"):
        cell = frame[(frame["task"] == "B->A") & (frame["method"] == method)].sort_values("trial")
        acc = cell["target_accuracy"].to_numpy()
        row = summ.loc[("B->A", method)]
        assert row["n"] == 3 and row["mean"] == pytest.approx(sum(acc) / 3)
        assert row["std"] == pytest.approx(math.sqrt(sum((a - sum(acc) / 3) ** 2 for a in acc) / 2))
        per_trial = [frame[(frame["method"] == method) & (frame["trial"] == t)]["target_accuracy"].mean()
                     for t in range(3)]
        mean_row = summ.loc[(A.MEAN_TASK, method)]
        m, s = sum(per_trial) / 3, math.sqrt(sum((p - sum(per_trial) / 3) ** 2 for p in per_trial) / 2)
        assert mean_row["mean"] == pytest.approx(m) and mean_row["std"] == pytest.approx(s)
        assert mean_row["ci_high"] - m == pytest.approx(4.302653 * s / math.sqrt(3), abs=1e-5)
    assert bool(summ.loc[("A->B", "finetune"), "uses_target_labels"])
    # a trial missing a task is left out of the mean row, with a warning
    partial = sel[~((sel["method"] == "dann") & (sel["trial"] == 2) & (sel["task"] == "C->A"))]
    with pytest.warns(RuntimeWarning, match="trial"):
        summ = A.summarize(partial).set_index(["task", "method"])
    assert summ.loc[(A.MEAN_TASK, "dann"), "n"] == 2


def test_rule_comparison_gap_is_nonnegative_and_matches_means():
    frame = make_records()
    comp = A.rule_comparison(frame, "dev")
    assert (comp["gap"] >= -1e-12).all()
    real = A.summarize(A.select(frame, "dev")).set_index(["task", "method"])["mean"]
    orac = A.summarize(A.select(frame, "oracle")).set_index(["task", "method"])["mean"]
    got = comp.set_index(["task", "method"])
    np.testing.assert_allclose(got["gap"], (orac - real).reindex(got.index))


def test_validator_table_marks_uncomputed_and_best_in_hindsight():
    frame = make_records()
    frame.loc[frame["method"] == "dann", "snd"] = np.nan
    vt = A.validator_table(frame, ["dev", "snd", "entropy"])
    assert len(vt) == 3 * 4
    assert math.isnan(vt[(vt["method"] == "dann") & (vt["rule"] == "snd")]["mean"].iloc[0])
    for _method, sub in vt.groupby("method"):
        means = sub[sub["rule"] != "oracle"].set_index("rule")["mean"]
        assert sub["best_validator"].iloc[0] == means.idxmax()
        assert sub.set_index("rule").loc["oracle", "mean"] >= means.max() - 1e-12
    with pytest.raises(ValueError, match="oracle"):
        A.validator_table(frame, ["dev", "oracle"])


def test_accuracy_curves_by_hand():
    frame = make_records(configs=2, trials=2, steps=(10, 20))
    curves = A.accuracy_curves(frame)  # default config 0
    sub = frame[(frame["config"] == 0) & (frame["method"] == "dann") & (frame["step"] == 20)]
    per_trial = sub.groupby("trial")["target_accuracy"].mean().to_numpy()
    row = curves[(curves["method"] == "dann") & (curves["step"] == 20)].iloc[0]
    assert row["mean"] == pytest.approx(per_trial.mean()) and row["std"] == pytest.approx(per_trial.std(ddof=1))
    sel = A.select(frame, "dev")
    curves = A.accuracy_curves(frame, sel)
    chosen = frame.merge(sel[["task", "method", "trial", "config"]], on=["task", "method", "trial", "config"])
    ref = chosen[chosen["step"] == 10].groupby(["method", "trial"])["target_accuracy"].mean().groupby("method").mean()
    got = curves[curves["step"] == 10].set_index("method")["mean"]
    np.testing.assert_allclose(got.reindex(ref.index), ref)
    assert list(dict.fromkeys(curves["method"])) == ["source-only", "dann", "finetune"]


# -------------------------------------------------------------------------------------------
# ranks and tests
# -------------------------------------------------------------------------------------------
def test_ranks_with_ties_are_averaged():
    scores = pd.DataFrame([[90.0, 80.0, 80.0], [70.0, 70.0, 70.0], [60.0, 65.0, 50.0]], columns=["a", "b", "c"])
    ranks = A.rank_scores(scores)
    np.testing.assert_array_equal(ranks.to_numpy(), [[1, 2.5, 2.5], [2, 2, 2], [2, 1, 3]])
    np.testing.assert_allclose(A.average_ranks(scores).to_numpy(), [5 / 3, 11 / 6, 15 / 6])


def test_friedman_equals_scipy_and_hand_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 5)) + np.arange(5)  # no ties
    scores = pd.DataFrame(x, columns=list("abcde"))
    res = A.friedman(scores)
    n, k = x.shape
    r = (-x).argsort(axis=1).argsort(axis=1) + 1.0  # rank 1 = best, no ties
    big_r = r.mean(axis=0)
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(big_r ** 2) - k * (k + 1) ** 2 / 4)
    assert res.statistic == pytest.approx(chi2)
    assert res.statistic == pytest.approx(stats.friedmanchisquare(*x.T).statistic)
    assert res.pvalue == pytest.approx(stats.chi2.sf(chi2, k - 1))
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert res.iman_davenport == pytest.approx(ff)
    assert res.iman_davenport_pvalue == pytest.approx(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    np.testing.assert_allclose(res.average_ranks.to_numpy(), big_r)
    tied = pd.DataFrame([[1.0, 1.0, 2.0], [3.0, 2.0, 2.0], [1.0, 5.0, 0.0], [2.0, 2.0, 2.0]])
    assert A.friedman(tied).statistic == pytest.approx(stats.friedmanchisquare(*tied.to_numpy().T).statistic)
    with pytest.raises(ValueError, match="k >= 3"):
        A.friedman(scores[["a", "b"]])


# Demšar (2006), Table 5(a): critical values q_alpha of the two-tailed Nemenyi test, k = 2..10.
DEMSAR_Q05 = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
DEMSAR_Q10 = [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]


def test_nemenyi_q_and_cd_reproduce_demsar_table():
    for k, (q05, q10) in enumerate(zip(DEMSAR_Q05, DEMSAR_Q10), start=2):
        assert A.nemenyi_q(k, 0.05) == pytest.approx(q05, abs=1.1e-3)  # table is rounded to 3 decimals
        assert A.nemenyi_q(k, 0.10) == pytest.approx(q10, abs=1.1e-3)
    # Demšar's worked example (Section 3.2.4): 4 classifiers, 14 data sets, CD = 1.25
    assert A.critical_difference(4, 14, 0.05) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), abs=1e-3)
    assert round(A.critical_difference(4, 14, 0.05), 2) == 1.25
    with pytest.raises(ValueError, match="k must be"):
        A.nemenyi_q(1)
    with pytest.raises(ValueError, match="n must be"):
        A.critical_difference(3, 0)


def test_nemenyi_groups_are_maximal_runs_within_cd():
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2})
    assert A.nemenyi_groups(ranks, 1.0) == [("a", "b"), ("c", "d")]
    ranks = pd.Series({"w": 1.0, "x": 1.8, "y": 2.6, "z": 3.4})
    assert A.nemenyi_groups(ranks, 1.7) == [("w", "x", "y"), ("x", "y", "z")]
    assert A.nemenyi_groups(ranks, 0.5) == []
    assert A.nemenyi_groups(ranks, 0.85) == [("w", "x"), ("x", "y"), ("y", "z")]
    exact = pd.Series({"w": 1.0, "x": 1.5, "y": 2.0, "z": 2.5})  # differences of exactly CD are significant
    assert A.nemenyi_groups(exact, 0.5) == []
    assert A.nemenyi_groups(exact, 0.75) == [("w", "x"), ("x", "y"), ("y", "z")]
    with pytest.raises(ValueError, match="cd"):
        A.nemenyi_groups(ranks, 0.0)


def test_holm_against_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max-accumulated 0.06
    adjusted, reject = A.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_array_equal(reject, [True, False, False, True])
    # step-down by thresholds alpha/(m-i+1): 0.005 <= .0125, 0.01 <= .0167, 0.03 > .025 -> stop
    adjusted, reject = A.holm([0.5, 0.9])
    np.testing.assert_allclose(adjusted, [1.0, 1.0])
    with pytest.raises(ValueError, match="pvalues"):
        A.holm([0.1, 1.5])


def test_wilcoxon_holm_matches_scipy_pairs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3)) + np.array([0.0, 0.5, 1.5])
    x[:, 2] = x[:, 1]  # one pair with all-zero differences
    x[0, 2] += 1.0
    x[:, 0] = x[:, 1]
    scores = pd.DataFrame(x, columns=["a", "b", "c"])
    pw = A.wilcoxon_holm(scores)
    assert list(zip(pw["method_a"], pw["method_b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pw["pvalue"][0] == 1.0  # a == b everywhere
    assert pw["pvalue"][1] == pytest.approx(stats.wilcoxon(x[:, 0], x[:, 2]).pvalue)
    adjusted, _ = A.holm(pw["pvalue"].to_numpy())
    np.testing.assert_allclose(pw["pvalue_holm"], adjusted)


def test_task_scores_needs_complete_matrix():
    sel = A.select(make_records(), "dev")
    scores = A.task_scores(sel, ["finetune", "dann", "source-only"])
    assert list(scores.columns) == ["finetune", "dann", "source-only"] and scores.shape == (4, 3)
    assert scores.loc["toy/A->B", "dann"] == pytest.approx(
        sel[(sel["task"] == "A->B") & (sel["method"] == "dann")]["target_accuracy"].mean())
    with pytest.raises(ValueError, match="every method on every task"):
        A.task_scores(sel[~((sel["task"] == "A->B") & (sel["method"] == "dann"))])


# -------------------------------------------------------------------------------------------
# figures and the report
# -------------------------------------------------------------------------------------------
def _is_png(path):
    data = path.read_bytes()
    return len(data) > 5000 and data.startswith(PNG_MAGIC)


def test_figures_are_written(tmp_path):
    ranks = pd.Series({"a": 1.2, "b": 2.1, "c": 2.6, "d": 4.1})
    path = plots.plot_cd_diagram(ranks, 1.5, tmp_path / "sub" / "cd.png", labels={"a": "a †"})
    assert _is_png(path)
    frame = make_records()
    path = plots.plot_accuracy_curves(A.accuracy_curves(frame), tmp_path / "curves.png")
    assert _is_png(path)
    path = plots.plot_task_bars(A.rule_comparison(frame, "dev"), tmp_path / "bars.png", primary="dev")
    assert _is_png(path)
    with pytest.raises(ValueError, match="avg_ranks"):
        plots.plot_cd_diagram(ranks[:1], 1.0, tmp_path / "x.png")


def test_write_report_writes_every_file(tmp_path):
    frame = make_records()  # 3 methods x 4 tasks x 2 configs x 3 trials x 2 steps
    frame.loc[frame["method"] == "dann", "snd"] = np.nan  # a validator not computed for one method
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report itself must not warn
        paths = write_report(frame, tmp_path / "report", primary="dev", validators=VALIDATORS)
    expected = {"report", "selected_csv", "cd_diagram", "accuracy_vs_step", "per_task_toy"} | {
        f"{t}_{k}" for t in ("accuracy", "validators", "ranks", "pairwise") for k in ("markdown", "csv", "latex")}
    assert set(paths) == expected
    for key, path in paths.items():
        assert path.exists() and path.stat().st_size > 0, key
        if path.suffix == ".png":
            assert _is_png(path), key
    acc = pd.read_csv(paths["accuracy_csv"])
    assert len(acc) == (4 + 1) * 3 and (acc["gap"] >= -1e-12).all()
    assert len(pd.read_csv(paths["validators_csv"])) == 3 * (len(VALIDATORS) + 1)
    assert len(pd.read_csv(paths["pairwise_csv"])) == 3
    report = paths["report"].read_text()
    for text in ("upper bound", "finetune †", "realistic (dev)", "in hindsight", "Friedman", "CD =",
                 "cd_diagram.png", "per_task_toy.png"):
        assert text in report, text
    tex = paths["accuracy_latex"].read_text()
    assert r"\begin{tabular}" in tex and r"finetune$^\dagger$" in tex and r"$\rightarrow$" in tex
    # methods: a subset, in the given order
    paths = write_report(frame, tmp_path / "two", primary="iwv", validators=["dev"], methods=["finetune", "dann"])
    ranks = pd.read_csv(paths["ranks_csv"])
    assert set(ranks["method"]) == {"finetune", "dann"}
    assert "Friedman test not applicable" in paths["report"].read_text()


# -------------------------------------------------------------------------------------------
# units (accuracy is a fraction in data, percent in renderings) and intervals with few trials
# -------------------------------------------------------------------------------------------
def test_records_hold_fractions_and_renderings_show_percent(tmp_path):
    frame = make_records(trials=3)
    with pytest.raises(ValueError, match=r"fraction in \[0, 1\].*percent\? divide by 100"):
        A.check_records(frame.assign(target_accuracy=100 * frame["target_accuracy"]))
    paths = write_report(frame, tmp_path / "r", primary="dev", validators=["dev"])
    acc = pd.read_csv(paths["accuracy_csv"])
    for col in ("realistic_mean", "realistic_ci_low", "realistic_ci_high", "oracle_mean", "oracle_std"):
        assert acc[col].between(0, 1).all(), col
    row = acc[(acc["task"] == "A->B") & (acc["method"] == "dann")].iloc[0]
    md = paths["accuracy_markdown"].read_text()
    assert f"{100 * row['realistic_mean']:.1f} ± {100 * row['realistic_std']:.1f}" in md
    assert "Target accuracy (%)" in md
    ranks = pd.read_csv(paths["ranks_csv"])
    assert ranks["mean_accuracy_oracle"].between(0, 1).all()
    assert f"{100 * ranks['mean_accuracy_oracle'].iloc[0]:.1f}" in paths["ranks_markdown"].read_text()
    pw = pd.read_csv(paths["pairwise_csv"])
    assert (pw["mean_difference"].abs() < 1).all()
    assert f"{100 * pw['mean_difference'].iloc[0]:+.2f}" in paths["pairwise_markdown"].read_text()
    assert "not meaningful" not in paths["report"].read_text()  # 3 trials: no warning


def test_t_interval_clips_to_bounds():
    mean, std, lo, hi = A.t_interval([0.55, 0.98])
    assert lo < 0 and hi > 1  # t(0.975, 1) = 12.7: the raw interval leaves [0, 1]
    assert A.t_interval([0.55, 0.98], bounds=(0.0, 1.0)) == (mean, std, 0.0, 1.0)
    assert A.t_interval([0.5, 0.6, 0.55], bounds=(0.0, 1.0)) == A.t_interval([0.5, 0.6, 0.55])


def test_two_trials_intervals_are_clipped_and_the_report_warns(tmp_path, monkeypatch):
    frame = make_records(methods=("source-only", "dann"), configs=1, trials=2, steps=(10,))
    spread = (frame["method"] == "dann") & (frame["task"] == "A->B")
    frame.loc[spread, "target_accuracy"] = np.where(frame.loc[spread, "trial"] == 0, 0.55, 0.98)
    summary = A.summarize(A.select(frame, "oracle"))
    assert summary["ci_low"].min() >= 0 and summary["ci_high"].max() <= 1
    cell = summary[(summary["task"] == "A->B") & (summary["method"] == "dann")].iloc[0]
    assert cell["ci_high"] == 1.0 and cell["ci_low"] == 0.0
    # whiskers drawn by the per-task figure stay inside [0, 100] %, even for an unclipped input
    from matplotlib.axes import Axes

    drawn = []
    real_bar = Axes.bar

    def bar(self, x, height, *args, yerr=None, **kwargs):
        drawn.append((np.asarray(height, dtype=float), np.asarray(yerr, dtype=float)))
        return real_bar(self, x, height, *args, yerr=yerr, **kwargs)

    monkeypatch.setattr(Axes, "bar", bar)
    comp = A.rule_comparison(frame, "dev")
    comp.loc[0, "realistic_ci_high"] = 1.3  # as an unclipped interval would be
    plots.plot_task_bars(comp, tmp_path / "bars.png", primary="dev")
    assert drawn and all((h - e[0] >= -1e-9).all() and (h + e[1] <= 100 + 1e-9).all() for h, e in drawn)
    assert max(h.max() for h, _ in drawn) > 1  # drawn in percent
    monkeypatch.undo()
    paths = write_report(frame, tmp_path / "r", primary="dev", validators=["dev"])
    acc = pd.read_csv(paths["accuracy_csv"])
    assert acc["realistic_ci_low"].min() >= 0 and acc["oracle_ci_high"].max() <= 1
    report = paths["report"].read_text()
    assert "with 2 trials the 95% intervals are not meaningful" in report
    assert "[0.0, 100.0]" in paths["accuracy_markdown"].read_text()
