"""Every tutorial's code runs: the ```python blocks of docs/tutorials/*.md, executed in order in
one namespace per tutorial (in a temporary folder, with the benchmark data of the test
configuration), and the generated example of every method page.

The tutorials keep their own step counts small, so that this file runs in well under a minute
on two cores.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((REPO / "docs" / "tutorials").glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks(path: Path):
    return [m.group(1) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def test_every_tutorial_has_code():
    assert len(TUTORIALS) >= 6
    for path in TUTORIALS:
        assert python_blocks(path), f"{path.name} has no python block"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch, data_root, capsys):
    if path.stem == "dask":
        pytest.importorskip("dask.distributed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTLIB_DATA", str(data_root))
    old_threads = torch.get_num_threads()
    namespace = {"__name__": f"tutorial_{path.stem}"}
    try:
        for i, code in enumerate(python_blocks(path)):
            exec(compile(code, f"{path.name}[block {i}]", "exec"), namespace)
    finally:
        torch.set_num_threads(old_threads)
    assert capsys.readouterr().out  # every tutorial shows a result



def test_method_page_examples_run(hooks):
    """The example on each generated method page trains (with a few steps)."""
    from adaptlib.methods import METHODS

    for name in METHODS:
        code = hooks.method_example(name, steps=3)
        namespace: dict = {}
        exec(compile(code, f"method page {name}", "exec"), namespace)
        assert namespace["history"].train, name


def test_method_pages_name_every_loss_term(hooks):
    """The loss terms a method page lists are the ones a step returns (checked on DANN, FineTune's
    source phase, and CDAN-E, whose terms come from its parent class)."""
    from adaptlib.methods import METHODS

    assert hooks.loss_terms(METHODS["dann"]) == (["classification", "domain"],
                                                 ["discriminator_accuracy", "grl_coefficient"])
    assert hooks.loss_terms(METHODS["cdan-e"])[0] == ["classification", "domain"]
    assert set(hooks.loss_terms(METHODS["finetune"])[0]) == {"classification", "target_classification", "l2sp"}
    for name, cls in METHODS.items():
        assert "classification" in hooks.loss_terms(cls)[0] or name == "finetune", name
