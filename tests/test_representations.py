"""mSDA (Chen et al., ICML 2012): the closed form against an exact expectation over every
corruption, the stacking, bad input, and the cached Amazon representation built from it."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from adaptlib.representations import msda_fit, msda_layer, msda_transform


def _expected_least_squares(x: np.ndarray, p: float) -> np.ndarray:
    """argmin_W sum_i E||x_i - W [x_i * mask; 1]||², the expectation taken exactly by enumerating
    all 2^D drop masks with their probabilities (float64 weighted least squares)."""
    n, d = x.shape
    rows, targets, weights = [], [], []
    for mask in itertools.product((0.0, 1.0), repeat=d):
        m = np.asarray(mask)
        prob = np.prod(np.where(m == 1.0, 1.0 - p, p))
        rows.append(np.hstack([x * m, np.ones((n, 1))]))
        targets.append(x)
        weights.append(np.full(n, prob))
    a, b, w = np.vstack(rows), np.vstack(targets), np.sqrt(np.concatenate(weights))
    sol, *_ = np.linalg.lstsq(a * w[:, None], b * w[:, None], rcond=None)
    return sol.T  # (D, D + 1)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7])
def test_msda_layer_is_the_expected_least_squares_denoiser(p):
    g = np.random.default_rng(0)
    x = g.normal(size=(9, 4)) * np.array([1.0, 3.0, 0.5, 2.0])
    w = msda_layer(torch.tensor(x), p, reg=0.0)
    assert w.shape == (4, 5) and w.dtype == torch.float64
    np.testing.assert_allclose(w.numpy(), _expected_least_squares(x, p), rtol=1e-8, atol=1e-10)


def test_msda_layer_without_noise_is_the_identity():
    x = torch.randn(20, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = msda_layer(x, 0.0, reg=0.0)
    torch.testing.assert_close(w, torch.cat([torch.eye(5), torch.zeros(5, 1)], 1).double(), rtol=0, atol=1e-10)


def test_msda_layer_counts_like_features_keep_dtype_and_reg_makes_absent_features_solvable():
    x = torch.poisson(torch.full((30, 6), 0.7), generator=torch.Generator().manual_seed(2))
    x[:, 3] = 0.0  # a word that never occurs: Q is singular without the ridge
    w = msda_layer(x, 0.5)
    assert w.dtype == torch.float32 and torch.isfinite(w).all()
    assert torch.all(w[3] == 0) and torch.all(w[:, 3] == 0)  # nothing predicts it, it predicts nothing


def test_msda_fit_stacks_on_tanh_outputs_and_transform_concatenates():
    x = torch.rand(40, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    weights = msda_fit(x, noise=0.4, layers=3)
    assert len(weights) == 3 and all(w.shape == (6, 7) for w in weights)
    h1 = torch.tanh(x @ weights[0][:, :6].T + weights[0][:, 6])
    torch.testing.assert_close(weights[1], msda_layer(h1, 0.4))
    h2 = torch.tanh(h1 @ weights[1][:, :6].T + weights[1][:, 6])
    h3 = torch.tanh(h2 @ weights[2][:, :6].T + weights[2][:, 6])
    z = msda_transform(x, weights, chunk_size=7)
    torch.testing.assert_close(z, torch.cat([x, h1, h2, h3], 1))
    torch.testing.assert_close(msda_transform(x, weights, include_input=False), torch.cat([h1, h2, h3], 1))


def test_msda_bad_input_is_named():
    x = torch.rand(5, 3)
    with pytest.raises(ValueError, match="noise"):
        msda_layer(x, 1.0)
    with pytest.raises(ValueError, match="reg"):
        msda_layer(x, 0.5, reg=-1.0)
    with pytest.raises(ValueError, match="layers"):
        msda_fit(x, layers=0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        msda_layer(torch.rand(5), 0.5)
    with pytest.raises(TypeError, match="floating-point"):
        msda_layer(torch.ones(5, 3, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        msda_layer(torch.tensor([[float("nan"), 1.0]]), 0.5)
    w = msda_fit(x, layers=1)
    with pytest.raises(ValueError, match=r"weights\[0\] must have shape \(4, 5\)"):
        msda_transform(torch.rand(5, 4), w)
    with pytest.raises(TypeError, match="dtype"):
        msda_transform(x.double(), w)
    with pytest.raises(ValueError, match="at least one"):
        msda_transform(x, [])
    with pytest.raises(TypeError, match="list of"):
        msda_transform(x, w[0])
    z = msda_transform(x.clone().requires_grad_(True), w)  # a fixed feature map: no autograd graph
    assert not z.requires_grad and z.shape == (5, 6)
    assert len(msda_fit(x, np.float32(0.5), np.int64(2))) == 2  # NumPy scalars are numbers too


def test_amazon_msda_benchmark_fits_once_per_pair_and_caches(data_root, tmp_path, monkeypatch):
    """One real pair, one layer, the first 300 words (the benchmark uses five layers on all 5000,
    a minute of solves): the cached layers are a fresh fit's, and B->K and K->B share them."""
    from adaptlib.datasets import Domain
    from adaptlib.datasets import amazon_reviews_msda as am
    from adaptlib.datasets import load_amazon_reviews

    def first_words(*args, **kwargs):
        d = load_amazon_reviews(*args, **kwargs)
        return Domain(name=d.name, x=d.x[:, :300].contiguous(), y=d.y, classes=d.classes)

    monkeypatch.setattr(am, "load_amazon_reviews", first_words)
    fits = []
    real_fit = am._fit_and_store
    monkeypatch.setattr(am, "_fit_and_store", lambda *a, **k: (fits.append(a[0]), real_fit(*a, **k)))
    s, tt, te = am.load_amazon_reviews_msda("B", "K", data_root, layers=1, cache_dir=tmp_path)
    assert fits == [("books", "kitchen")]
    assert (s.x.shape, tt.x.shape, te.x.shape) == ((2000, 600), (2000, 600), (5945, 600))
    books, kitchen = first_words("books", "train", data_root), first_words("kitchen", "train", data_root)
    assert torch.equal(s.x[:, :300], books.x) and torch.equal(s.y, books.y)
    assert torch.equal(te.y, load_amazon_reviews("kitchen", "test", data_root).y)
    presence = lambda x: (x > 0).float()  # noqa: E731  Chen et al.'s code: mSDA(double(xx>0), ...)
    weights = msda_fit(torch.cat([presence(books.x), presence(kitchen.x)]), noise=am.MSDA_NOISE, layers=1)
    fresh = msda_transform(presence(kitchen.x), weights, include_input=False)
    torch.testing.assert_close(tt.x[:, 300:], fresh, rtol=0, atol=2e-3)  # float16 storage
    assert fresh.std() > 0.05  # the layer carries signal, not a constant
    assert books.x.max() > 1  # counts, so presence and counts fits differ

    # layer_input="counts" (the first version): its own cache folder, fitted on the raw counts
    _, tt_counts, _ = am.load_amazon_reviews_msda("B", "K", data_root, layers=1, layer_input="counts",
                                                   cache_dir=tmp_path)
    assert fits == [("books", "kitchen")] * 2 and len(list(tmp_path.rglob("*.npy"))) == 2 * 4
    weights = msda_fit(torch.cat([books.x, kitchen.x]), noise=am.MSDA_NOISE, layers=1)
    fresh_counts = msda_transform(kitchen.x, weights, include_input=False)
    torch.testing.assert_close(tt_counts.x[:, 300:], fresh_counts, rtol=0, atol=2e-3)
    assert torch.equal(tt_counts.x[:, :300], tt.x[:, :300])
    assert (tt_counts.x[:, 300:] - tt.x[:, 300:]).abs().max() > 0.1
    fits.clear()

    s2, tt2, _ = am.load_amazon_reviews_msda("kitchen", "books", data_root, layers=1, cache_dir=tmp_path)
    assert fits == []  # the reverse task reads the same fit
    assert torch.equal(s2.x, tt.x) and torch.equal(tt2.x, s.x)
    with pytest.raises(ValueError, match="different domains"):
        am.load_amazon_reviews_msda("B", "books", data_root, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="noise"):
        am.load_amazon_reviews_msda("B", "K", data_root, noise=1.5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="layer_input must be one of"):
        am.load_amazon_reviews_msda("B", "K", data_root, layer_input="binary", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="transform must be one of"):
        am.load_amazon_reviews_msda("B", "D", data_root, transform="sqrt", cache_dir=tmp_path)
    assert fits == []  # refused before any fit

    # transform= changes the counts block only; the layers are the same cached ones
    s_log, _, te_log = am.load_amazon_reviews_msda("B", "K", data_root, layers=1, transform="log1p",
                                                   cache_dir=tmp_path)
    assert fits == []
    torch.testing.assert_close(s_log.x[:, :300], torch.log1p(s.x[:, :300]))
    assert torch.equal(s_log.x[:, 300:], s.x[:, 300:]) and torch.equal(te_log.y, te.y)


def test_amazon_msda_concurrent_loads_of_one_pair_fit_it_once(data_root, tmp_path, monkeypatch):
    """Two loads of the same pair at once (two workers on B->K and K->B) make one fit: the second
    waits on the pair's lock and reads the first's layers."""
    import threading
    import time

    from adaptlib.datasets import Domain
    from adaptlib.datasets import amazon_reviews_msda as am
    from adaptlib.datasets import load_amazon_reviews

    def first_words(*args, **kwargs):
        d = load_amazon_reviews(*args, **kwargs)
        return Domain(name=d.name, x=d.x[:, :100].contiguous(), y=d.y, classes=d.classes)

    monkeypatch.setattr(am, "load_amazon_reviews", first_words)
    fits, real_fit = [], am._fit_and_store

    def slow_fit(*args, **kwargs):
        fits.append(args[0])
        time.sleep(1.0)  # long enough for the other load to reach the cache check meanwhile
        real_fit(*args, **kwargs)

    monkeypatch.setattr(am, "_fit_and_store", slow_fit)
    out, errors = {}, []

    def load(s, t):
        try:
            out[(s, t)] = am.load_amazon_reviews_msda(s, t, data_root, layers=1, cache_dir=tmp_path)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=p) for p in (("B", "K"), ("K", "B"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == [] and len(out) == 2
    assert fits == [("books", "kitchen")]  # one fit, not one per load
    (s, tt, _), (s2, tt2, _) = out[("B", "K")], out[("K", "B")]
    assert torch.equal(s.x, tt2.x) and torch.equal(tt.x, s2.x)
    assert len([p for p in tmp_path.rglob("*") if p.is_dir() and p.name.startswith("books-kitchen")]) == 1
