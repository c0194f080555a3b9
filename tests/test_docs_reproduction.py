"""The method pages' "Reproduction" tables (scripts/docs_hooks.py) and the API reference's coverage.

A method page prints, per benchmark, adaptlib's mean ± std over seeds read from the
``results.json`` that ``adaptlib compare --output`` writes, beside the paper's own number
(``Method.paper_results``) and their difference. These tests feed the hook the files of a real
(tiny) comparison and of a comparison saved by :meth:`ComparisonResult.save` from given
records, and check the numbers that come out.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]



def _row(page: str, benchmark: str) -> str:
    rows = [ln for ln in page.splitlines() if ln.startswith(f"| {benchmark} |")]
    assert len(rows) == 1, page
    return rows[0]


def _saved_comparison(folder: Path, benchmark: str, accuracies: dict) -> dict:
    """Save, through ComparisonResult.save, a comparison whose every task has accuracy
    ``accuracies[method][seed]``; return its results.json."""
    from adaptlib.compare import CompareConfig, ComparisonResult

    methods = tuple(accuracies)
    seeds = len(next(iter(accuracies.values())))
    config = CompareConfig(benchmark=benchmark, methods=methods, seeds=seeds, workers=1).resolved()
    records = [{"benchmark": benchmark, "task": task, "method": m, "seed": s, "accuracy": accuracies[m][s],
                "uses_target_labels": False}
               for task in config.tasks for m in methods for s in range(seeds)]
    ComparisonResult(config, records, 0.0).save(folder / benchmark)
    return json.loads((folder / benchmark / "results.json").read_text())


def test_reproduction_table_puts_the_paper_beside_adaptlib(hooks, tmp_path):
    from adaptlib.methods import METHODS

    paper_value, where = METHODS["dann"].paper_results["amazon-reviews"]
    data = _saved_comparison(tmp_path, "amazon-reviews", {"source-only": [0.74, 0.75], "dann": [0.77, 0.78]})
    mean = next(r for r in data["summary"] if r["method"] == "dann" and r["task"] == "Mean")
    assert mean["mean"] == pytest.approx(0.775) and mean["std"] == pytest.approx(0.005)

    page = hooks.reproduction_section("dann", results_dir=tmp_path)
    row = _row(page, "amazon-reviews")
    assert "77.5 ± 0.5 (2 seeds)" in row
    assert f"{paper_value:.1f}" in row
    assert row.rstrip(" |").endswith(f"{77.5 - paper_value:+.1f}")
    assert where in page  # the protocol note is printed with the number
    # the benchmarks without a committed file are pending, and have no difference
    for bench in ("office-caltech10-surf", "mnist-usps-jda"):
        row = _row(page, bench)
        assert "pending" in row and row.rstrip(" |").endswith("—")
        assert "no published number on a matching protocol" in row

    # a method whose paper reports none of these benchmarks says so; source-only is in the file
    row = _row(hooks.reproduction_section("source-only", results_dir=tmp_path), "amazon-reviews")
    assert "74.5 ± 0.5 (2 seeds)" in row and "no published number on a matching protocol" in row
    # a method not in the committed comparison
    assert "not in the committed comparison" in _row(hooks.reproduction_section("mcc", results_dir=tmp_path),
                                                     "amazon-reviews")


def test_reproduction_table_reads_a_real_compare_run(hooks, tmp_path, data_root):
    """A real (tiny) `adaptlib compare` on one SURF task: the page shows its number, says it
    covers 1 of 12 tasks and prints no difference (the paper's number is a 12-task mean)."""
    from adaptlib.compare import CompareConfig, compare

    config = CompareConfig(benchmark="office-caltech10-surf", methods=("source-only", "dann"), tasks=("C->A",),
                           seeds=1, steps=30, root=str(data_root), workers=1).resolved()
    compare(config, progress=False).save(tmp_path / "office-caltech10-surf")
    data = hooks.load_results("office-caltech10-surf", tmp_path)
    mean = next(r for r in data["summary"] if r["method"] == "dann" and r["task"] == "Mean")
    row = _row(hooks.reproduction_section("dann", results_dir=tmp_path), "office-caltech10-surf")
    assert f"{100 * mean['mean']:.1f} ± 0.0 (1 seed), 1 of 12 tasks" in row
    assert row.rstrip(" |").endswith("—")

    # the results page shows the committed table
    assert (tmp_path / "office-caltech10-surf" / "table.md").read_text().strip() in hooks.committed_tables(tmp_path)


def test_method_page_has_the_reproduction_section(hooks):
    page = hooks.method_page("dann")
    assert "## Reproduction" in page
    assert re.search(r"\| amazon-reviews \| .* \| 76\.3 \[1\] \|", page), page


def test_results_file_of_another_benchmark_is_refused(hooks, tmp_path):
    from mkdocs.exceptions import PluginError

    _saved_comparison(tmp_path, "mnist-usps-jda", {"dann": [0.5]})
    (tmp_path / "mnist-usps-jda").rename(tmp_path / "amazon-reviews")
    with pytest.raises(PluginError, match="mnist-usps-jda"):
        hooks.load_results("amazon-reviews", tmp_path)


def test_paper_results_are_well_formed():
    from adaptlib.datasets import BENCHMARKS
    from adaptlib.methods import METHODS

    for name, cls in METHODS.items():
        for bench, entry in cls.paper_results.items():
            assert bench in BENCHMARKS, (name, bench)
            value, where = entry
            assert 0.0 < value <= 100.0, (name, bench)  # percent, not a fraction
            assert value > 1.0, (name, bench)
            assert len(where) > 40, (name, bench)  # says where it is reported and how the protocol compares


# ------------------------------------------------------------------ API reference coverage
def test_every_public_module_is_in_the_api_reference(hooks):
    """adaptlib, its subpackages and its public modules with an ``__all__`` all have a reference
    page (the build then fails on any name of their ``__all__`` that the page lacks)."""
    import yaml

    modules = hooks.public_modules()
    assert {"adaptlib", "adaptlib.losses", "adaptlib.kernels", "adaptlib.methods", "adaptlib.studies",
            "adaptlib.datasets", "adaptlib.distributed", "adaptlib.trainer"} <= set(modules)
    missing = [m for m in modules if m not in hooks.REFERENCE]
    assert not missing, f"public modules without an API reference page: {missing}"

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name tags etc.
    nav = json.dumps(yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)["nav"])
    for module, page in hooks.REFERENCE.items():
        path = REPO / "docs" / f"{page}.md"
        assert path.is_file(), path
        assert f"{page}.md" in nav, f"{page}.md is not in the nav of mkdocs.yml"
        text = path.read_text()
        assert f"::: {module}\n" in text or all(
            f"`{n}`" in text or f"- {n}\n" in text or f"::: adaptlib.{n}" in text
            for n in __import__(module, fromlist=["_"]).__all__), module


def test_reference_check_reports_undocumented_names(hooks, tmp_path):
    """The build's check fails on names that no page documents (here: pages without anchors)."""
    for page in set(hooks.REFERENCE.values()):
        (tmp_path / page).mkdir(parents=True, exist_ok=True)
        (tmp_path / page / "index.html").write_text("<html></html>")
    gaps = hooks.reference_gaps(tmp_path)
    assert "adaptlib.distributed.rank (page reference/distributed)" in gaps
    assert "adaptlib.trainer.lr_factor (page reference/trainer)" in gaps
    # a name documented on one page counts for the same object re-exported elsewhere
    (tmp_path / "reference/adaptlib/index.html").write_text('<h2 id="adaptlib.trainer.Trainer">')
    gaps = hooks.reference_gaps(tmp_path)
    assert not any(g.startswith(("adaptlib.Trainer ", "adaptlib.trainer.Trainer ")) for g in gaps)
    assert "adaptlib.trainer.History (page reference/trainer)" in gaps
