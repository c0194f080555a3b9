"""Tests of adaptlib.datasets on the real benchmark data ($ADAPTLIB_DATA, else ../shared/data).

They check shapes, class counts and label ranges against the data README, the documented
preprocessing, and reproduce the 1-NN accuracies of the JDA paper (which only come out with
the right preprocessing and label mapping). Nothing here touches the network.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptlib import datasets
from adaptlib.datasets import (
    BENCHMARKS,
    Benchmark,
    ChecksumError,
    DatasetNotFoundError,
    Domain,
    TransferTask,
    data_root,
    fetch,
    get_benchmark,
    load_amazon_reviews,
    load_mnist_usps_jda,
    load_office_caltech10_surf,
)
from adaptlib.datasets import _files

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ADAPTLIB_DATA", REPO.parent / "shared" / "data")).absolute()


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """Folder with the real data files; skip (with the reason) if it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA}; set ADAPTLIB_DATA to the data folder")
    return DATA


def one_nn_accuracy(source: Domain, target: Domain) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=1).fit(source.x.numpy(), source.y.numpy())
    return 100.0 * float((clf.predict(target.x.numpy()) == target.y.numpy()).mean())


# ----------------------------------------------------------------------------------------
# Office-Caltech10 SURF
# ----------------------------------------------------------------------------------------
OFFICE_COUNTS = {  # README table, labels 1..10 -> 0..9
    "amazon": (958, [92, 82, 94, 99, 100, 100, 99, 100, 94, 98]),
    "webcam": (295, [29, 21, 31, 27, 27, 30, 43, 30, 27, 30]),
    "dslr": (157, [12, 21, 12, 13, 10, 24, 22, 12, 8, 23]),
    "caltech": (1123, [151, 110, 100, 138, 85, 128, 133, 94, 87, 97]),
}
OFFICE_NN = dict(zip(
    ["C->A", "C->W", "C->D", "A->C", "A->W", "A->D", "W->C", "W->A", "W->D", "D->C", "D->A", "D->W"],
    [23.70, 25.76, 25.48, 26.00, 29.83, 25.48, 19.86, 22.96, 59.24, 26.27, 28.50, 63.39],
))
OFFICE_FILE = {"amazon": "amazon", "webcam": "webcam", "dslr": "dslr", "caltech": "Caltech10"}


@pytest.mark.parametrize("domain", list(OFFICE_COUNTS))
def test_office_shapes_counts_and_zscore(data_dir, domain):
    d = load_office_caltech10_surf(domain, root=data_dir)
    n, counts = OFFICE_COUNTS[domain]
    assert isinstance(d, Domain) and d.name == domain
    assert d.x.shape == (n, 800) and d.x.dtype == torch.float32
    assert d.y.shape == (n,) and d.y.dtype == torch.int64
    assert int(d.y.min()) == 0 and int(d.y.max()) == 9
    assert torch.bincount(d.y, minlength=10).tolist() == counts
    assert torch.isfinite(d.x).all()
    # z-scored per feature with the population std (constant columns only centred)
    x = d.x.double()
    assert x.mean(0).abs().max() < 1e-5
    std = x.std(0, unbiased=False)
    assert ((std - 1).abs() < 1e-4).logical_or(std < 1e-6).all()


@pytest.mark.parametrize("domain", list(OFFICE_COUNTS))
def test_office_preprocess_options_match_raw_file(data_dir, domain):
    import scipy.io

    mat = scipy.io.loadmat(data_dir / "office_caltech10_surf" / f"{OFFICE_FILE[domain]}_SURF_L10.mat")
    raw = load_office_caltech10_surf(domain, root=data_dir, preprocess=None)
    assert np.array_equal(raw.x.numpy(), mat["fts"].astype(np.float32))
    assert np.array_equal(raw.y.numpy(), mat["labels"].ravel().astype(np.int64) - 1)
    l1 = load_office_caltech10_surf(domain, root=data_dir, preprocess="l1")
    assert torch.allclose(l1.x.double().sum(1), torch.ones(len(l1), dtype=torch.float64), atol=1e-5)
    # default = l1 rows, then (x - mean) / population std, as in the GFK README
    ref = mat["fts"].astype(np.float64)
    ref = ref / ref.sum(1, keepdims=True)
    sd = ref.std(0)
    ref = (ref - ref.mean(0)) / np.where(sd > 0, sd, 1.0)
    assert np.allclose(load_office_caltech10_surf(domain, root=data_dir).x.numpy(), ref, atol=1e-5)


def test_office_class_names_match_image_names(data_dir):
    import scipy.io

    for domain, stem in OFFICE_FILE.items():
        d = load_office_caltech10_surf(domain, root=data_dir)
        names = scipy.io.loadmat(data_dir / "office_caltech10_surf" / f"{stem}_SURF_L10_imgs.mat")["imgNames"]
        names = [str(np.asarray(v).ravel()[0]) for v in names.ravel()]
        assert len(names) == len(d)
        for label, img in zip(d.y.tolist(), names):
            assert f"_{d.classes[label]}_" in img, (domain, label, img)


def test_office_domain_aliases(data_dir):
    for alias, name in [("A", "amazon"), ("w", "webcam"), ("D", "dslr"), ("C", "caltech"), ("Caltech10", "caltech")]:
        assert load_office_caltech10_surf(alias, root=data_dir).name == name


def test_office_one_nn_reproduces_jda_paper(data_dir):
    bench = get_benchmark("office-caltech10-surf")
    assert bench.tasks == tuple(OFFICE_NN)
    got = {}
    for name in bench.tasks:
        task = bench.load(name, root=data_dir)
        got[name] = round(one_nn_accuracy(task.source, task.target_test), 2)
    assert got == pytest.approx(OFFICE_NN, abs=0.01), got


# ----------------------------------------------------------------------------------------
# MNIST-USPS (JDA)
# ----------------------------------------------------------------------------------------
MNIST_COUNTS = [196, 227, 207, 202, 196, 179, 191, 206, 195, 201]
USPS_COUNTS = [352, 241, 165, 166, 166, 126, 139, 172, 129, 144]


@pytest.mark.parametrize("task", ["mnist->usps", "usps->mnist"])
def test_mnist_usps_shapes_counts_and_l2(data_dir, task):
    src, tgt = load_mnist_usps_jda(task, root=data_dir)
    counts = {"mnist": (2000, MNIST_COUNTS), "usps": (1800, USPS_COUNTS)}
    assert (src.name, tgt.name) == tuple(task.split("->"))
    for d in (src, tgt):
        n, c = counts[d.name]
        assert d.x.shape == (n, 256) and d.x.dtype == torch.float32
        assert d.y.shape == (n,) and d.y.dtype == torch.int64
        assert torch.bincount(d.y, minlength=10).tolist() == c
        assert d.classes == tuple("0123456789")
        assert torch.allclose(d.x.norm(dim=1), torch.ones(n), atol=1e-5)


def test_mnist_usps_raw_matches_file_transposed(data_dir):
    import scipy.io

    mat = scipy.io.loadmat(data_dir / "mnist_usps_jda" / "USPS_vs_MNIST.mat")
    src, tgt = load_mnist_usps_jda("USPS->MNIST", root=data_dir, normalize=None)
    assert np.array_equal(src.x.numpy(), mat["X_src"].T.astype(np.float32))
    assert np.array_equal(tgt.x.numpy(), mat["X_tar"].T.astype(np.float32))
    assert np.array_equal(src.y.numpy(), mat["Y_src"].ravel().astype(np.int64) - 1)
    assert float(src.x.min()) >= 0 and float(src.x.max()) <= 1
    # both files hold the same arrays with source and target swapped
    m_src, m_tgt = load_mnist_usps_jda("M->U", root=data_dir, normalize=None)
    assert torch.equal(m_src.x, tgt.x) and torch.equal(m_tgt.x, src.x)


def test_mnist_usps_label_is_digit(data_dir):
    # label k is digit k: the digit "1" has the least ink (on raw, un-normalised grey values)
    src, _ = load_mnist_usps_jda("mnist->usps", root=data_dir, normalize=None)
    ink = torch.stack([src.x[src.y == k].sum(1).mean() for k in range(10)])
    assert int(ink.argmin()) == 1


@pytest.mark.parametrize(
    "task,normalize,expected",
    [("MNIST->USPS", "l2", 65.94), ("USPS->MNIST", "l2", 44.70), ("MNIST->USPS", None, 64.44), ("USPS->MNIST", None, 35.85)],
)
def test_mnist_usps_one_nn_reproduces_jda_paper(data_dir, task, normalize, expected):
    t = get_benchmark("mnist-usps-jda").load(task, root=data_dir, normalize=normalize)
    assert round(one_nn_accuracy(t.source, t.target_test), 2) == pytest.approx(expected, abs=0.01)


# ----------------------------------------------------------------------------------------
# Amazon reviews
# ----------------------------------------------------------------------------------------
AMAZON_COUNTS = {  # (n, neg, pos) per README table
    ("books", "train"): (2000, 1000, 1000), ("books", "test"): (4465, 2201, 2264),
    ("dvd", "train"): (2000, 1000, 1000), ("dvd", "test"): (3586, 1779, 1807),
    ("electronics", "train"): (2000, 1000, 1000), ("electronics", "test"): (5681, 2824, 2857),
    ("kitchen", "train"): (2000, 1000, 1000), ("kitchen", "test"): (5945, 2991, 2954),
}


@pytest.mark.parametrize("domain,split", list(AMAZON_COUNTS))
def test_amazon_shapes_and_counts(data_dir, domain, split):
    d = load_amazon_reviews(domain, split, root=data_dir)
    n, neg, pos = AMAZON_COUNTS[domain, split]
    assert d.name == domain and d.classes == ("negative", "positive")
    assert d.x.shape == (n, 5000) and d.x.dtype == torch.float32
    assert d.y.dtype == torch.int64 and torch.bincount(d.y, minlength=2).tolist() == [neg, pos]
    # default: raw counts (non-negative integers)
    assert float(d.x.min()) == 0.0 and torch.equal(d.x, d.x.round())


def test_amazon_matches_svmlight_and_transforms(data_dir):
    from sklearn.datasets import load_svmlight_file

    x, y = load_svmlight_file(str(data_dir / "amazon_reviews_dann" / "kitchen_train.svmlight"),
                              n_features=5000, zero_based=True)
    raw = load_amazon_reviews("K", "train", root=data_dir)
    assert np.array_equal(raw.x.numpy(), x.toarray().astype(np.float32))
    assert np.array_equal(raw.y.numpy(), (y > 0).astype(np.int64))
    log = load_amazon_reviews("kitchen", "train", root=data_dir, transform="log1p")
    assert torch.allclose(log.x, torch.log1p(raw.x))
    binary = load_amazon_reviews("kitchen", "train", root=data_dir, transform="binary")
    assert torch.equal(binary.x, (raw.x > 0).float())


def test_amazon_benchmark_follows_dann_protocol(data_dir):
    bench = get_benchmark("amazon-reviews")
    assert len(bench.tasks) == 12 and bench.tasks[:3] == ("B->D", "B->E", "B->K")
    t = bench.load("B->K", root=data_dir)
    assert (t.source.name, t.target_train.name, t.target_test.name) == ("books", "kitchen", "kitchen")
    assert (len(t.source), len(t.target_train), len(t.target_test)) == (2000, 2000, 5945)
    assert bench.load("books -> kitchen", root=data_dir).name == "B->K"


# ----------------------------------------------------------------------------------------
# Benchmarks, caching, safety
# ----------------------------------------------------------------------------------------
def test_benchmark_registry():
    assert {"office-caltech10-surf", "mnist-usps-jda", "amazon-reviews", "digits-images",
            "digits-images-efficientnet"} <= set(BENCHMARKS)  # + the text ones (test_datasets_text.py)
    for name, b in BENCHMARKS.items():
        assert isinstance(b, Benchmark) and b.name == name and get_benchmark(name) is b
        assert all(rel in _files.REGISTRY for rel in b.files)
    assert (BENCHMARKS["office-caltech10-surf"].num_classes, BENCHMARKS["office-caltech10-surf"].input_dim) == (10, 800)
    assert BENCHMARKS["mnist-usps-jda"].tasks == ("MNIST->USPS", "USPS->MNIST")
    assert (BENCHMARKS["amazon-reviews"].num_classes, BENCHMARKS["amazon-reviews"].input_dim) == (2, 5000)
    with pytest.raises(ValueError, match="office-caltech10-surf"):
        get_benchmark("office31")


def test_benchmark_tasks_are_transductive_and_independent(data_dir):
    bench = get_benchmark("office-caltech10-surf")
    t = bench.load("c->a", root=data_dir)
    assert isinstance(t, TransferTask) and t.name == "C->A" and t.benchmark == bench.name
    assert (t.source.name, t.target_train.name) == ("caltech", "amazon")
    assert torch.equal(t.target_train.x, t.target_test.x) and torch.equal(t.target_train.y, t.target_test.y)
    assert t.target_train.x.data_ptr() != t.target_test.x.data_ptr()
    assert (t.num_classes, t.input_dim) == (bench.num_classes, bench.input_dim)
    with pytest.raises(ValueError, match="task must be one of"):
        bench.load("A->A", root=data_dir)
    with pytest.raises(ValueError, match="task must be one of"):
        bench.load("B->D", root=data_dir)


def test_loaded_tensors_cannot_corrupt_the_cache(data_dir):
    a = load_office_caltech10_surf("dslr", root=data_dir)
    x0, y0 = a.x.clone(), a.y.clone()
    a.x.zero_()
    a.y.fill_(3)
    b = load_office_caltech10_surf("dslr", root=data_dir)
    assert torch.equal(b.x, x0) and torch.equal(b.y, y0)
    s, _ = load_mnist_usps_jda("usps->mnist", root=data_dir)
    s.x.add_(1)
    assert torch.allclose(load_mnist_usps_jda("usps->mnist", root=data_dir)[0].x.norm(dim=1), torch.ones(1800), atol=1e-5)
    r = load_amazon_reviews("dvd", "train", root=data_dir)
    r.x.fill_(-1)
    assert float(load_amazon_reviews("dvd", "train", root=data_dir).x.min()) == 0.0


def test_parsed_files_are_cached_in_process(data_dir):
    from adaptlib.datasets import office_caltech

    bench = get_benchmark("office-caltech10-surf")
    for name in bench.tasks:
        bench.load(name, root=data_dir)
    misses = office_caltech._load_cached.cache_info().misses
    for name in bench.tasks:
        bench.load(name, root=data_dir)
    assert office_caltech._load_cached.cache_info().misses == misses


def test_domain_validates_its_fields():
    x = torch.zeros(3, 2)
    Domain("d", x, torch.tensor([0, 1, 1]), ("a", "b"))
    with pytest.raises(TypeError, match="float32"):
        Domain("d", x.double(), torch.tensor([0, 1, 1]), ("a", "b"))
    with pytest.raises(TypeError, match="int64"):
        Domain("d", x, torch.tensor([0, 1, 1], dtype=torch.int32), ("a", "b"))
    with pytest.raises(ValueError, match="same number of rows"):
        Domain("d", x, torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="0..1"):
        Domain("d", x, torch.tensor([0, 1, 2]), ("a", "b"))


# ----------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------
def test_bad_arguments_name_the_argument(data_dir):
    with pytest.raises(ValueError, match="domain must be one of"):
        load_office_caltech10_surf("office", root=data_dir)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        load_office_caltech10_surf("amazon", root=data_dir, preprocess="minmax")
    with pytest.raises(ValueError, match="task must be one of"):
        load_mnist_usps_jda("mnist->mnist", root=data_dir)
    with pytest.raises(ValueError, match="normalize must be one of"):
        load_mnist_usps_jda("mnist->usps", root=data_dir, normalize="l1")
    with pytest.raises(ValueError, match="domain must be one of"):
        load_amazon_reviews("music", "train", root=data_dir)
    with pytest.raises(ValueError, match="split must be one of"):
        load_amazon_reviews("books", "valid", root=data_dir)
    with pytest.raises(ValueError, match="transform must be one of"):
        load_amazon_reviews("books", "train", root=data_dir, transform="tfidf")
    with pytest.raises(TypeError, match="root"):
        data_root(123)
    with pytest.raises(ValueError, match="relpath"):
        fetch("office_caltech10_surf/nope.mat", root=data_dir)
    with pytest.raises(ValueError, match="benchmark_name must be one of"):
        datasets.download("office31", root=data_dir)


# ----------------------------------------------------------------------------------------
# Finding files, checksums, error messages
# ----------------------------------------------------------------------------------------
def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTLIB_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADAPTLIB_DATA", "../rel/data")
    assert data_root() == tmp_path / ".." / "rel" / "data"
    monkeypatch.delenv("ADAPTLIB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root() == tmp_path / "xdg" / "adaptlib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "adaptlib"


def test_env_var_is_used_by_loaders(data_dir, monkeypatch):
    monkeypatch.setenv("ADAPTLIB_DATA", str(data_dir))
    assert len(load_office_caltech10_surf("D")) == 157


def test_registry_matches_sha256sums(data_dir):
    sums = {}
    for line in (data_dir / "SHA256SUMS").read_text().splitlines():
        sha, rel = line.split()
        sums[rel.removeprefix("./")] = sha
    for rel, spec in _files.REGISTRY.items():
        assert sums[rel] == spec.sha256, rel
        assert spec.url.startswith("https://raw.githubusercontent.com/") and len(spec.commit) == 40
    assert _files.REGISTRY["office_caltech10_surf/amazon_SURF_L10.mat"].url == (
        "https://raw.githubusercontent.com/AngryCarrot/JDA/12167daf32b01a07b85fdfa3db57a42b3be7eefe/data/amazon_SURF_L10.mat")
    assert _files.REGISTRY["amazon_reviews_dann/books_train.svmlight"].url == (
        "https://raw.githubusercontent.com/GRAAL-Research/domain_adversarial_neural_network/"
        "74eec5e0ae06bd6614bce048abba492c16a633e3/data/books_train.svmlight")


def test_fetch_verifies_once_per_process(data_dir, tmp_path, monkeypatch):
    rel = "office_caltech10_surf/dslr_SURF_L10.mat"
    (tmp_path / "office_caltech10_surf").mkdir()
    shutil.copyfile(data_dir / rel, tmp_path / rel)
    calls = []
    real = _files._sha256_file
    monkeypatch.setattr(_files, "_sha256_file", lambda p: calls.append(p) or real(p))
    assert fetch(rel, root=tmp_path) == tmp_path / rel
    fetch(rel, root=tmp_path)
    load_office_caltech10_surf("dslr", root=tmp_path)
    assert len(calls) == 1
    # a changed file (same size, new mtime) is hashed again and rejected
    data = bytearray((tmp_path / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / rel).write_bytes(bytes(data))
    st = (tmp_path / rel).stat()
    os.utime(tmp_path / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ChecksumError):
        fetch(rel, root=tmp_path)
    assert len(calls) == 2


def test_checksum_mismatch_is_detected(data_dir, tmp_path):
    rel = "office_caltech10_surf/dslr_SURF_L10.mat"
    (tmp_path / "office_caltech10_surf").mkdir()
    data = bytearray((data_dir / rel).read_bytes())
    data[100] ^= 0x01
    (tmp_path / rel).write_bytes(bytes(data))
    expected = _files.REGISTRY[rel].sha256
    with pytest.raises(ChecksumError) as info:
        load_office_caltech10_surf("dslr", root=tmp_path)
    msg = str(info.value)
    assert rel in msg and expected in msg
    import hashlib

    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    # download=True never overwrites an existing (corrupt) file: it still raises
    with pytest.raises(ChecksumError):
        fetch(rel, root=tmp_path, download=True, mirror="http://127.0.0.1:9/never-used")
    assert (tmp_path / rel).read_bytes() == bytes(data)


def test_missing_file_error_says_what_where_and_how(tmp_path):
    rel = "office_caltech10_surf/amazon_SURF_L10.mat"
    with pytest.raises(DatasetNotFoundError) as info:
        load_office_caltech10_surf("amazon", root=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert rel in msg
    assert str(tmp_path / "office_caltech10_surf" / "amazon_SURF_L10.mat") in msg
    assert f"adaptlib download office-caltech10-surf --root {tmp_path}" in msg
    assert "ADAPTLIB_DATA" in msg and "download=True" in msg and "--download" in msg
    assert _files.REGISTRY[rel].url in msg
    assert not any(tmp_path.iterdir())  # nothing created
    with pytest.raises(DatasetNotFoundError, match="adaptlib download amazon-reviews"):
        load_amazon_reviews("books", "test", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="adaptlib download mnist-usps-jda"):
        get_benchmark("mnist-usps-jda").load("USPS->MNIST", root=tmp_path)
