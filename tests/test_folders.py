"""The user's own domains: real data written to a folder as .npy pairs, CSV files and PNG image
folders, read back exactly, and run through ``adaptlib compare --data-dir`` and a study."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptlib.cli import main
from adaptlib.datasets import folder_spec, get_benchmark, load_folder_domains
from adaptlib.datasets import load_mnist_usps_jda, load_office_caltech10_surf
from adaptlib.studies import load_study, run_study

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def surf_domains(data_root):
    """60 rows of each of Amazon and Webcam SURF (GFK preprocessing), labels as class names."""
    out = {}
    for name in ("amazon", "webcam"):
        d = load_office_caltech10_surf(name, data_root)
        idx = torch.randperm(len(d), generator=torch.Generator().manual_seed(0))[:60]
        out[name] = (d.x[idx].numpy(), np.array(d.classes)[d.y[idx].numpy()])
    return out


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory, surf_domains):
    folder = tmp_path_factory.mktemp("npy")
    for name, (x, y) in surf_domains.items():
        np.save(folder / f"{name}_X.npy", x)
        np.save(folder / f"{name}_y.npy", y)
    return folder


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory, surf_domains):
    """The same rows as CSV, label column 'category' in the middle, floats written exactly (%.9g)."""
    folder = tmp_path_factory.mktemp("csv")
    for name, (x, y) in surf_domains.items():
        header = [f"f{i}" for i in range(3)] + ["category"] + [f"f{i}" for i in range(3, x.shape[1])]
        lines = [",".join(header)]
        for row, label in zip(x, y):
            cells = [f"{v:.9g}" for v in row]
            lines.append(",".join(cells[:3] + [label] + cells[3:]))
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_npy_and_csv_folders_read_back_the_arrays(npy_dir, csv_dir, surf_domains):
    for folder, kw in ((npy_dir, {}), (csv_dir, {"label_column": "category"})):
        doms = load_folder_domains(folder, **kw)
        assert list(doms) == ["amazon", "webcam"]
        for name, (x, y) in surf_domains.items():
            d = doms[name]
            assert torch.equal(d.x, torch.from_numpy(x))  # exact: %.9g round-trips float32
            assert d.classes == tuple(sorted(set(surf_domains["amazon"][1]) | set(surf_domains["webcam"][1])))
            assert [d.classes[i] for i in d.y.tolist()] == list(y)
    bench = get_benchmark(folder_spec(npy_dir))
    assert bench.tasks == ("amazon->webcam", "webcam->amazon") and bench.input_dim == 800
    task = bench.load("Amazon->Webcam")  # case-insensitive, as the built-in benchmarks
    assert task.name == "amazon->webcam" and torch.equal(task.target_test.x, task.target_train.x)
    assert task.target_test.x is not task.target_train.x
    z = load_folder_domains(npy_dir, standardize="domain")["webcam"].x.double()
    assert torch.allclose(z.mean(0), torch.zeros(800, dtype=torch.float64), atol=1e-5)
    std = z.std(0, unbiased=False)
    assert torch.allclose(std[std > 0], torch.ones_like(std[std > 0]), atol=1e-4)


def test_compare_on_npy_and_csv_gives_the_same_table(npy_dir, csv_dir, tmp_path, capsys):
    """``adaptlib compare --data-dir`` on the same rows stored two ways: identical accuracies, and the
    results name the folder benchmark, its tasks and the recipe of user data."""
    accs = []
    for folder, extra in ((npy_dir, []), (csv_dir, ["--format", "csv", "--label-column", "category"])):
        out = tmp_path / folder.name
        rc = main(["compare", "--data-dir", str(folder), *extra, "--tasks", "webcam->amazon", "--methods",
                   "source-only,dann", "--seeds", "1", "--steps", "15", "--batch-size", "32", "--workers", "1", "--quiet",
                   "--output", str(out)])
        assert rc == 0, capsys.readouterr().err
        res = json.loads((out / "results.json").read_text())
        assert res["config"]["benchmark"].startswith("folder:") and res["config"]["device"] == "cpu"
        assert res["config"]["hidden"] == [512] and res["config"]["optimizer"] == "adam"  # USER_DATA_SETTINGS
        accs.append([r["accuracy"] for r in res["records"]])
    assert accs[0] == accs[1] and all(0.0 <= a <= 1.0 for a in accs[0])
    assert "webcam->amazon" in capsys.readouterr().out


def test_image_folders_from_real_digits(tmp_path, data_root, capsys):
    """A few MNIST and USPS digits written as PNG into <domain>/<class>/ folders: read back to the
    stored pixels (up to 8-bit rounding), then compared on both tasks."""
    src, tgt = load_mnist_usps_jda("mnist->usps", data_root, normalize=None)
    kept = {}
    for dom in (src, tgt):
        rows = []
        for digit in range(10):
            for i in torch.nonzero(dom.y == digit).flatten()[:12].tolist():
                pixels = np.rint(dom.x[i].numpy().reshape(16, 16) * 255).astype(np.uint8)
                path = tmp_path / "digits" / dom.name / f"digit{digit}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode="L").save(path)
                rows.append((f"digit{digit}", dom.x[i]))
        kept[dom.name] = rows
    doms = load_folder_domains(tmp_path / "digits", image_mode="L")
    assert sorted(doms) == ["mnist", "usps"]
    for name, rows in kept.items():
        d = doms[name]
        assert d.x.shape == (120, 256) and d.classes == tuple(f"digit{k}" for k in range(10))
        got = sorted((d.classes[int(y)], tuple(x.tolist())) for x, y in zip(d.x, d.y))
        want = sorted((c, tuple((torch.round(x * 255) / 255).tolist())) for c, x in rows)
        assert got == want  # every image, with its class, at 8-bit precision
    assert load_folder_domains(tmp_path / "digits", image_mode="RGB")["usps"].input_dim == 3 * 256
    assert load_folder_domains(tmp_path / "digits", image_mode="L", image_size=8)["usps"].input_dim == 64
    rc = main(["compare", "--data-dir", str(tmp_path / "digits"), "--image-mode", "L", "--methods", "source-only",
               "--seeds", "1", "--steps", "60", "--workers", "1", "--quiet", "--output", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["config"]["tasks"] == ["mnist->usps", "usps->mnist"]
    assert all(r["accuracy"] > 0.2 for r in res["records"])  # chance is 0.1 with 120 digits per domain


def test_a_study_on_a_folder(npy_dir, tmp_path):
    study_file = tmp_path / "mine.toml"
    study_file.write_text(f'name = "mine"\nbenchmark = "folder:{npy_dir}"\ntasks = ["amazon->webcam"]\n'
                          f'methods = ["source-only"]\nseeds = 1\nsteps = 10\ncheckpoint_every = 5\n'
                          f'validators = ["source-accuracy", "entropy"]\ndatabase = "{tmp_path / "r.sqlite"}"\n')
    study = load_study(study_file)
    assert study.benchmark == folder_spec(npy_dir)
    summary = run_study(study, workers=1, progress=False)
    assert summary.ran == 1
    from adaptlib.studies import RecordStore

    frame = RecordStore(study.database).frame()
    assert set(frame["benchmark"]) == {folder_spec(npy_dir)} and set(frame["step"]) == {5, 10}


def test_folder_errors_name_the_file_and_the_fix(tmp_path, npy_dir, capsys):
    (tmp_path / "a_X.npy").write_bytes((npy_dir / "amazon_X.npy").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"a_X.npy has no labels: expected .*a_y.npy"):
        load_folder_domains(tmp_path)
    np.save(tmp_path / "a_y.npy", np.zeros(60, int))
    np.save(tmp_path / "b_X.npy", np.zeros((5, 3)))
    np.save(tmp_path / "b_y.npy", np.zeros(5, int))
    with pytest.raises(ValueError, match="different feature dimensions"):
        load_folder_domains(tmp_path)
    np.save(tmp_path / "b_X.npy", np.array([[object()]] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="save plain numeric"):
        load_folder_domains(tmp_path)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        get_benchmark(f"folder:{npy_dir}?colour=red")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "a.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="a.csv: no label column 'label' in the header"):
        load_folder_domains(tmp_path / "csv")
    (tmp_path / "csv" / "b.csv").write_text("x,y\n1,cat\noops,dog\n")
    with pytest.raises(ValueError, match="b.csv, line 3: column 'x' is not a number"):
        load_folder_domains(tmp_path / "csv", label_column="y")
    assert main(["compare", "office-caltech10-surf", "--data-dir", str(npy_dir)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["compare", "--data-dir", str(npy_dir), "--device", "cuda"]) == 2
    assert "device='cuda' is not available" in capsys.readouterr().err or torch.cuda.is_available()
