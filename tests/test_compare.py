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
