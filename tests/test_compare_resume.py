"""adaptlib compare's journal (runs.jsonl) and --resume: a stopped or extended comparison keeps
its finished runs, trains only the missing ones, and ends with the tables of one whole run."""
from __future__ import annotations

import json

import pytest

from adaptlib.cli import main
from adaptlib.compare import JOURNAL_FILE, CompareConfig, compare, read_journal

BENCH = "office-caltech10-surf"


def run_cli(capsys, *argv):
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def args(root, out, seeds=1, methods="source-only,dann", *extra):
    return ["compare", BENCH, "--methods", methods, "--tasks", "D->W", "--seeds", str(seeds), "--steps", "5",
            "--workers", "1", "--quiet", "--root", str(root), "--output", str(out), *extra]


def runs(folder):
    """(task, method, seed) -> (accuracy, final losses) of a results.json: what a run trained."""
    records = json.loads((folder / "results.json").read_text())["records"]
    return {(r["task"], r["method"], r["seed"]): (r["accuracy"], r["final_losses"]) for r in records}


def test_resume_trains_only_the_missing_runs_and_equals_one_whole_comparison(data_root, tmp_path, capsys):
    out, whole = tmp_path / "out", tmp_path / "whole"
    assert run_cli(capsys, *args(data_root, out))[0] == 0
    assert len((out / JOURNAL_FILE).read_text().splitlines()) == 2  # one line per finished run
    first = runs(out)
    # more seeds and another method: only the 2 * 3 - 2 new runs train
    rc, stdout, _ = run_cli(capsys, *args(data_root, out, 2, "source-only,dann,deep-coral"), "--resume")
    assert rc == 0 and f"6 runs in" in stdout and f"2 kept from {JOURNAL_FILE}" in stdout
    resumed = runs(out)
    assert len(resumed) == 6 and all(resumed[k] == v for k, v in first.items())
    assert len((out / JOURNAL_FILE).read_text().splitlines()) == 6
    assert "deep-coral" in (out / "table.md").read_text()
    # runs are deterministic: the resumed folder holds what one uninterrupted comparison trains
    assert run_cli(capsys, *args(data_root, whole, 2, "source-only,dann,deep-coral"))[0] == 0
    assert resumed == runs(whole)


def test_an_interrupted_journal_keeps_its_finished_runs(data_root, tmp_path):
    config = CompareConfig(methods=("source-only", "dann"), tasks=("D->W",), seeds=1, steps=5, workers=1,
                           root=str(data_root))
    journal = tmp_path / JOURNAL_FILE
    full = compare(config, progress=False, journal=journal)
    lines = journal.read_text().splitlines()
    # killed while writing the second line: the first run is kept, the torn line is skipped
    journal.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    with pytest.warns(RuntimeWarning, match="last line is incomplete"):
        again = compare(config, progress=False, journal=journal, resume=True)
    assert again.reused == 1 and len(again.records) == 2
    key = lambda r: (r["method"], r["accuracy"], r["final_losses"])  # noqa: E731
    assert sorted(map(key, again.records)) == sorted(map(key, full.records))
    # the torn line is gone, not glued to the next entry: a third call reads both runs, trains none
    assert len(journal.read_text().splitlines()) == 2
    third = compare(config, progress=False, journal=journal, resume=True)
    assert third.reused == 2 and sorted(map(key, third.records)) == sorted(map(key, full.records))
    with pytest.raises(ValueError, match="needs journal="):
        compare(config, progress=False, resume=True)


def test_resume_refuses_runs_trained_with_other_settings(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(capsys, *args(data_root, out))[0] == 0
    before = (out / "results.json").read_text()
    rc, _, err = run_cli(capsys, *args(data_root, out), "--resume", "--lr", "0.01")
    assert rc == 2 and "was trained with lr=0.003" in err and "lr=0.01" in err and "--overwrite" in err
    rc, _, err = run_cli(capsys, *args(data_root, out), "--resume", "--method-kwargs", '{"dann": {"trade_off": 2}}')
    assert rc == 2 and "dann" in err and "method_kwargs" in err
    assert (out / "results.json").read_text() == before  # nothing trained, nothing replaced
    rc, _, err = run_cli(capsys, *args(data_root, out), "--resume", "--overwrite")
    assert rc == 2 and "give one of them" in err
    config = CompareConfig(methods=("source-only",), tasks=("D->W",), seeds=1, steps=6, workers=1,
                           root=str(data_root)).resolved()
    with pytest.raises(ValueError, match="steps=5"):
        read_journal(out / JOURNAL_FILE, config)
    (tmp_path / "bad.jsonl").write_text("not json\n{}\n")
    with pytest.raises(ValueError, match="line 1: not a journal entry"):
        read_journal(tmp_path / "bad.jsonl", config)


def test_a_folder_with_only_a_journal_is_refused_with_the_resume_hint(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(capsys, *args(data_root, out))[0] == 0
    for name in ("table.md", "results.csv", "results.json"):  # as if stopped before the tables were written
        (out / name).unlink()
    rc, _, err = run_cli(capsys, *args(data_root, out))
    assert rc == 2 and JOURNAL_FILE in err and "--resume" in err
    assert run_cli(capsys, *args(data_root, out), "--overwrite")[0] == 0
    assert len((out / JOURNAL_FILE).read_text().splitlines()) == 2  # started afresh, not appended
