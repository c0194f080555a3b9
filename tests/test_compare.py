"""The comparison run and the ``adaptlib`` command, on a small budget on the real data."""
import json

import pytest
import torch

from adaptlib.cli import main
from adaptlib.compare import CompareConfig, compare, few_shot_split, run_one


def test_few_shot_split_is_per_class_and_disjoint():
    y = torch.tensor([0] * 5 + [1] * 7 + [2] * 4)
    lab, rest = few_shot_split(y, 3, seed=1)
    assert torch.bincount(y[lab]).tolist() == [3, 3, 3]
    assert set(lab.tolist()).isdisjoint(rest.tolist()) and len(lab) + len(rest) == len(y)
    assert torch.equal(lab, few_shot_split(y, 3, seed=1)[0])
    with pytest.raises(ValueError, match="shots"):
        few_shot_split(y, 4, seed=0)


def test_finetune_is_scored_on_unlabelled_target_only(data_root):
    cfg = CompareConfig(methods=("finetune",), tasks=("D->W",), seeds=1, steps=20, root=str(data_root)).resolved()
    rec = run_one(cfg, "D->W", "finetune", 0)
    assert rec["uses_target_labels"] and rec["n_test"] == 295 - 30
    rec = run_one(cfg, "D->W", "source-only", 0)
    assert not rec["uses_target_labels"] and rec["n_test"] == 295


def test_compare_is_deterministic_across_worker_counts(data_root, tmp_path):
    base = dict(methods=("source-only", "dann"), tasks=("D->W", "W->D"), seeds=2, steps=40, root=str(data_root))
    one = compare(CompareConfig(workers=1, **base), progress=False)
    two = compare(CompareConfig(workers=2, **base), progress=False)
    assert [r["accuracy"] for r in one.records] == [r["accuracy"] for r in two.records]
    assert len(one.records) == 2 * 2 * 2
    paths = one.save(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["config"]["steps"] == 40 and "torch" in saved["versions"]
    assert "| **Mean** |" in paths["markdown"].read_text()
    assert paths["csv"].read_text().count("\n") == 1 + 2 * 3


def test_cli_compare_writes_table(data_root, tmp_path, capsys):
    rc = main(["compare", "office-caltech10-surf", "--methods", "source-only,finetune", "--tasks", "D->W",
               "--seeds", "1", "--steps", "20", "--workers", "1", "--quiet", "--root", str(data_root),
               "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "| D->W |" in out and "finetune †" in out
    assert (tmp_path / "results.csv").exists()


def test_cli_errors_are_clear(data_root, tmp_path, capsys):
    assert main(["compare", "office-caltech10-surf", "--methods", "nope", "--root", str(data_root)]) == 2
    assert "methods" in capsys.readouterr().err
    assert main(["compare", "office-caltech10-surf", "--root", str(tmp_path), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err


def test_accuracy_is_a_fraction_in_records_and_files_and_percent_in_the_table(data_root, tmp_path):
    cfg = CompareConfig(methods=("source-only",), tasks=("D->W", "W->D"), seeds=1, steps=10, workers=1,
                        root=str(data_root))
    result = compare(cfg, progress=False)
    accs = [r["accuracy"] for r in result.records]
    assert all(0 < a <= 1 for a in accs)
    paths = result.save(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["units"]["accuracy"] == "fraction in [0, 1]"
    mean = next(r for r in saved["summary"] if r["task"] == "Mean")["mean"]
    assert mean == pytest.approx(sum(accs) / 2) and 0 < mean <= 1
    csv_mean = next(line for line in paths["csv"].read_text().splitlines() if ",Mean," in line).split(",")[3]
    assert float(csv_mean) == pytest.approx(mean, abs=1e-4)
    table = paths["markdown"].read_text()
    assert f"| **Mean** | {100 * mean:.1f} ± " in table and "Target accuracy (%)" in table


def test_a_benchmarks_method_default_is_trained_recorded_and_shown(data_root, tmp_path, monkeypatch):
    import adaptlib.compare as compare_module

    monkeypatch.setitem(compare_module.METHOD_DEFAULTS, "office-caltech10-surf", {"dann": {"trade_off": 0.25}})
    built = []
    real = compare_module.get_method
    monkeypatch.setattr(compare_module, "get_method", lambda name, **kw: built.append(real(name, **kw)) or built[-1])
    cfg = CompareConfig(methods=("source-only", "dann"), tasks=("D->W",), seeds=1, steps=5, workers=1,
                        root=str(data_root))
    result = compare(cfg, progress=False)
    assert [m.trade_off for m in built if m.name == "dann"] == [0.25]
    saved = json.loads(result.save(tmp_path)["json"].read_text())
    assert saved["config"]["method_kwargs"] == {"dann": {"trade_off": 0.25}}
    assert "dann trade_off=0.25 (this benchmark's default, chosen by DEV)" in result.markdown()
    paper = CompareConfig(methods=("dann",), tasks=("D->W",), seeds=1, steps=5, workers=1, root=str(data_root),
                          method_kwargs={"dann": {"trade_off": 1.0}})
    assert "dann trade_off=1 (the method's default, set for this run)" in compare(paper, progress=False).markdown()
