"""Validators (issue 4): known answers, independent numpy references, label hygiene, real data.

Every expected value comes from a closed form (perfect/random/uniform predictors, the
analytic density ratio of two Gaussians) or from a separate numpy/scipy/sklearn
computation written here, never from the module's own output.
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

import adaptlib.validation as V
from adaptlib.validation import (
    NEEDS_WEIGHTS,
    VALIDATORS,
    Predictions,
    dev_risk,
    evaluate,
    importance_weights,
    oracle,
    soft_neighborhood_density,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _onehot(y, c):
    return torch.nn.functional.one_hot(y, c).to(F64)


def _dirichlet(alpha, c, n, seed=0):
    """``(n, c)`` float64 rows drawn from a symmetric Dirichlet(alpha) (numpy, seeded)."""
    return torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(c, alpha), size=n))


def _preds(probs, labels=None, features=None, seed=0):
    if features is None:
        features = torch.randn(probs.shape[0], 3, generator=_gen(seed), dtype=F64)
    return Predictions(features=features, probs=probs, labels=labels)


def _np_dev_risk(loss, w):
    """DEV Algorithm 1 in numpy (np.cov / np.var with ddof=1)."""
    big_l = w * loss
    var_w = np.var(w, ddof=1)
    eta = 0.0 if var_w == 0 else -np.cov(np.stack([big_l, w]))[0, 1] / var_w
    return big_l.mean() + eta * w.mean() - eta


def _np_snd(probs, tau=0.05):
    """SND with the diagonal excluded, straight from the formula (scipy logsumexp)."""
    p = probs / np.linalg.norm(probs, axis=1, keepdims=True)
    s = p @ p.T / tau
    n = len(p)
    ents = []
    for i in range(n):
        row = np.delete(s[i], i)
        logp = row - logsumexp(row)
        ents.append(-(np.exp(logp) * logp).sum())
    return float(np.mean(ents))


# ----------------------------------------------------------------------------- Predictions
def test_predictions_checks_name_the_field():
    p = torch.full((4, 2), 0.5, dtype=F64)
    f = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="Predictions.probs.*sum to 1"):
        Predictions(f, torch.ones(4, 2))  # logits, not probabilities
    with pytest.raises(ValueError, match="Predictions.probs.*one row per row"):
        Predictions(f, p[:3])
    with pytest.raises(TypeError, match="Predictions.features.*float32 or float64"):
        Predictions(torch.zeros(4, 3, dtype=torch.int64), p)
    with pytest.raises(ValueError, match="Predictions.features.*shape"):
        Predictions(torch.zeros(4), p)
    with pytest.raises(ValueError, match="Predictions.probs.*non-negative"):
        Predictions(f, torch.tensor([[1.5, -0.5]] * 4, dtype=F64))
    with pytest.raises(ValueError, match="Predictions.labels.*0..1"):
        Predictions(f, p, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="Predictions.labels.*integer"):
        Predictions(f, p, torch.zeros(4))
    with pytest.raises(ValueError, match="Predictions.features.*NaN"):
        Predictions(torch.full((4, 3), float("nan")), p)
    ok = Predictions(f, p, torch.tensor([0, 1, 1, 0], dtype=torch.int32))
    assert ok.labels.dtype == torch.int64 and ok.num_classes == 2 and len(ok) == 4


# ----------------------------------------------------------------------------- known answers
C = 10


@pytest.fixture(scope="module")
def perfect_and_random():
    g = _gen(1)
    n = 4000
    ys, yt = torch.randint(0, C, (n,), generator=g), torch.randint(0, C, (n,), generator=g)
    perfect_s, perfect_t = _preds(_onehot(ys, C), ys), _preds(_onehot(yt, C))
    random_s, random_t = _preds(_dirichlet(1.0, C, n, seed=2), ys), _preds(_dirichlet(1.0, C, n, seed=3))
    return ys, yt, (perfect_s, perfect_t), (random_s, random_t)


def test_perfect_vs_random_predictor(perfect_and_random):
    _, yt, (ps, pt), (rs, rt) = perfect_and_random
    assert VALIDATORS["source-accuracy"](ps, pt, None) == 1.0
    assert oracle(pt, yt) == 1.0
    assert VALIDATORS["entropy"](ps, pt, None) == 0.0  # one-hot: 0 log 0 = 0, exactly
    # a random predictor is right with probability 1/C (binomial sd ~0.005 at n=4000)
    assert abs(VALIDATORS["source-accuracy"](rs, rt, None) - 1 / C) < 0.02
    assert abs(oracle(rt, yt) - 1 / C) < 0.02
    # Dirichlet(1) rows: E[H] = psi(C+1) - psi(2) (closed form for the flat Dirichlet)
    from scipy.special import digamma
    assert abs(-VALIDATORS["entropy"](rs, rt, None) - (digamma(C + 1) - digamma(2))) < 0.02
    uniform = _preds(torch.full((50, C), 1 / C, dtype=F64))
    assert VALIDATORS["entropy"](ps, uniform, None) == pytest.approx(-math.log(C), abs=1e-12)


def test_entropy_matches_scipy():
    from scipy.stats import entropy as sp_entropy

    p = _dirichlet(0.3, 6, 300, seed=4)
    t = _preds(p)
    expected = -float(np.mean(sp_entropy(p.numpy(), axis=1)))
    assert VALIDATORS["entropy"](t, t, None) == pytest.approx(expected, abs=1e-12)


def test_iwv_with_unit_weights_is_source_accuracy(perfect_and_random):
    _, _, _, (rs, rt) = perfect_and_random
    ones = torch.ones(len(rs), dtype=F64)
    assert VALIDATORS["iwv"](rs, rt, ones) == VALIDATORS["source-accuracy"](rs, rt, None)
    # self-normalised: any constant scale gives the same score
    assert VALIDATORS["iwv"](rs, rt, 3.7 * ones) == pytest.approx(VALIDATORS["source-accuracy"](rs, rt, None), abs=1e-12)


def test_dev_with_unit_weights_is_minus_mean_cross_entropy(perfect_and_random):
    _, _, _, (rs, rt) = perfect_and_random
    ce = torch.nn.functional.nll_loss(rs.probs.log(), rs.labels).item()  # independent: torch's NLL of log p
    assert VALIDATORS["dev"](rs, rt, torch.ones(len(rs), dtype=F64)) == pytest.approx(-ce, abs=1e-12)


def test_dev_risk_matches_numpy_algorithm():
    g = np.random.default_rng(0)
    loss = g.exponential(size=500)
    w = g.lognormal(sigma=0.7, size=500)
    assert dev_risk(torch.from_numpy(loss), torch.from_numpy(w)) == pytest.approx(_np_dev_risk(loss, w), rel=1e-12)
    # the control variate: when L_i = a * W_i the risk estimate is exactly a (Var of the estimate is 0)
    assert dev_risk(torch.full((500,), 2.0, dtype=F64), torch.from_numpy(w)) == pytest.approx(2.0, rel=1e-12)


def test_weights_change_iwv_and_dev_in_the_expected_direction():
    # The model is right on x < 0 and wrong on x > 0; the target lies mostly at x > 0.
    x = torch.linspace(-2, 2, 400, dtype=F64)
    y = torch.zeros(400, dtype=torch.int64)
    p1 = torch.sigmoid(3 * x)  # predicts class 1 for x > 0: wrong there
    sv = _preds(torch.stack([1 - p1, p1], 1), y, features=x[:, None])
    tg = _preds(torch.full((10, 2), 0.5, dtype=F64), features=torch.ones(10, 1, dtype=F64))
    # more weight where the model is wrong; a density ratio has source mean 1 (DEV's control
    # variate relies on E_S[w] = 1: with mean-one weights it vanishes and DEV = -mean(w * loss))
    w = torch.exp(1.5 * x)
    w = w / w.mean()
    sa = VALIDATORS["source-accuracy"](sv, tg, None)
    assert sa == pytest.approx(0.5)
    iwv = VALIDATORS["iwv"](sv, tg, w)
    expected_iwv = float(w[x < 0].sum() / w.sum())
    assert iwv == pytest.approx(expected_iwv, abs=1e-12) and iwv < sa - 0.3
    ones = torch.ones(400, dtype=F64)
    loss = -torch.stack([1 - p1, p1], 1)[torch.arange(400), y].log()
    assert VALIDATORS["dev"](sv, tg, w) == pytest.approx(-float((w * loss).mean()), abs=1e-12)
    assert VALIDATORS["dev"](sv, tg, w) < VALIDATORS["dev"](sv, tg, ones) - 0.5
    # the mirror image: weight where the model is right raises both scores
    assert VALIDATORS["iwv"](sv, tg, w.flip(0)) > sa + 0.3
    assert VALIDATORS["dev"](sv, tg, w.flip(0)) > VALIDATORS["dev"](sv, tg, ones) + 0.3


# ----------------------------------------------------------------------------- importance weights
@pytest.mark.parametrize("mu", [[1.0], [0.8, -0.6]])
def test_importance_weights_match_gaussian_density_ratio(mu):
    # N_s(0, I) vs N_t(mu, I): log w(x) = mu.x - |mu|^2/2, linear, so logistic regression is well specified.
    # Unequal sizes (3000 vs 1500) check the N_s/N_t prior correction (without it, log w is off by log 2).
    mu = torch.tensor(mu, dtype=F64)
    d = mu.numel()
    g = _gen(3)
    xs = torch.randn(3000, d, generator=g, dtype=F64)
    xt = torch.randn(1500, d, generator=g, dtype=F64) + mu
    grid = torch.linspace(-1.0, 2.0, 13, dtype=F64)
    q = grid[:, None] if d == 1 else torch.cartesian_prod(grid, grid)
    w = importance_weights(xs.float(), xt.float(), q.float())
    assert w.dtype == F64 and w.shape == (q.shape[0],) and bool((w > 0).all())
    true_log = q @ mu - mu.square().sum() / 2
    assert np.corrcoef(w.log().numpy(), true_log.numpy())[0, 1] > 0.99
    assert float((w.log() - true_log).abs().max()) < 0.25
    rel = ((w - true_log.exp()) / true_log.exp()).abs()
    assert float(rel.median()) < 0.1


def test_importance_weights_errors():
    a = torch.randn(10, 2)
    with pytest.raises(ValueError, match="target_features"):
        importance_weights(a, torch.randn(10, 3), a)
    with pytest.raises(ValueError, match="query_features"):
        importance_weights(a, a, torch.randn(4))
    with pytest.raises(TypeError, match="source_features"):
        importance_weights(a.numpy(), a, a)


def test_iwv_and_dev_track_the_target_under_covariate_shift():
    # y = 1[x > 0] in both domains; the model's threshold is at -0.5. Source N(0,1), target N(1,1).
    # Target accuracy 1 - (Phi(-1) - Phi(-1.5)) = 0.908, source accuracy 1 - (Phi(0) - Phi(-0.5)) = 0.809.
    g = _gen(4)

    def domain(n, shift, labelled):
        x = torch.randn(n, 1, generator=g, dtype=F64) + shift
        p1 = torch.sigmoid(4 * (x[:, 0] + 0.5))
        y = (x[:, 0] > 0).long()
        return Predictions(x, torch.stack([1 - p1, p1], 1), y if labelled else None), y

    s_train, _ = domain(2000, 0.0, True)
    s_val, _ = domain(2000, 0.0, True)
    tgt, yt = domain(2000, 1.0, False)
    target_acc = 1 - (norm.cdf(-1) - norm.cdf(-1.5))
    scores = evaluate(["source-accuracy", "iwv", "dev"], source_train=s_train, source_val=s_val, target=tgt)
    assert abs(scores["iwv"] - target_acc) < 0.03
    assert abs(scores["iwv"] - target_acc) < abs(scores["source-accuracy"] - target_acc) - 0.05
    assert abs(oracle(tgt, yt) - target_acc) < 0.03
    target_ce = torch.nn.functional.nll_loss(tgt.probs.log(), yt).item()
    source_ce = torch.nn.functional.nll_loss(s_val.probs.log(), s_val.labels).item()
    assert abs(-scores["dev"] - target_ce) < abs(source_ce - target_ce) / 2


# ----------------------------------------------------------------------------- SND
def test_snd_matches_numpy_reference():
    p = _dirichlet(0.5, 5, 70, seed=5)
    tg = _preds(p)
    assert VALIDATORS["snd"](tg, tg, None) == pytest.approx(_np_snd(p.numpy()), abs=1e-10)
    # float32 input: computed in float64 from the float32 values
    assert soft_neighborhood_density(p.float()) == pytest.approx(_np_snd(p.float().double().numpy()), abs=1e-9)


def test_snd_blocks(monkeypatch):
    # the N x N similarities are processed in blocks of rows; a block smaller than N gives the same
    p = _dirichlet(1.0, 4, 50, seed=6)
    monkeypatch.setattr(V, "_SND_BLOCK", 7)
    assert soft_neighborhood_density(p) == pytest.approx(_np_snd(p.numpy()), abs=1e-10)


def test_snd_close_to_authors_diagonal_fill():
    # The authors' code (and skada) fill the diagonal with -1/tau instead of removing it.
    p = _dirichlet(1.0, 6, 40, seed=7).numpy()
    q = p / np.linalg.norm(p, axis=1, keepdims=True)
    s = q @ q.T / 0.05
    np.fill_diagonal(s, -1 / 0.05)
    logp = s - logsumexp(s, axis=1, keepdims=True)
    authors = float(np.mean(-(np.exp(logp) * logp).sum(1)))
    assert soft_neighborhood_density(torch.from_numpy(p)) == pytest.approx(authors, abs=1e-6)


def test_snd_prefers_clustered_confident_predictions():
    g = _gen(5)
    n, c = 200, 10
    y = torch.arange(n) % c
    clustered = (6 * _onehot(y, c) + 0.5 * torch.randn(n, c, generator=g, dtype=F64)).softmax(1)
    scattered = (2 * torch.randn(n, c, generator=g, dtype=F64)).softmax(1)  # confident-ish, no clusters
    snd = VALIDATORS["snd"]
    s_clustered = snd(_preds(clustered), _preds(clustered), None)
    s_scattered = snd(_preds(scattered), _preds(scattered), None)
    # c equal clusters of one-hot-like rows: each row spreads evenly over its n/c - 1 cluster mates
    assert s_clustered == pytest.approx(math.log(n / c - 1), abs=1e-3)
    assert s_clustered > s_scattered + 0.3
    assert 0 <= s_scattered <= math.log(n - 1)
    # Known limit of the formula: identical (e.g. uniform) rows are one dense cluster: log(N - 1).
    uniform = _preds(torch.full((n, c), 1 / c, dtype=F64))
    assert snd(uniform, uniform, None) == pytest.approx(math.log(n - 1), abs=1e-12)


# ----------------------------------------------------------------------------- label hygiene, evaluate
@pytest.mark.parametrize("name", sorted(VALIDATORS))
def test_target_labels_reach_only_the_oracle(name):
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]] * 3, dtype=F64)  # predicts y
    sv = _preds(probs, y)
    labelled_target = _preds(probs, y)
    with pytest.raises(ValueError, match="target labels reach only the oracle"):
        VALIDATORS[name](sv, labelled_target, torch.ones(6, dtype=F64))
    with pytest.raises(ValueError, match="target labels reach only the oracle"):
        evaluate([name], source_train=sv, source_val=sv, target=labelled_target)
    assert oracle(labelled_target, y) == 1.0  # the oracle may see them
    with pytest.raises(ValueError, match="differ"):
        oracle(labelled_target, 1 - y)


def test_validator_argument_errors():
    y = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]] * 2, dtype=F64)
    sv, tg = _preds(probs, y), _preds(probs)
    with pytest.raises(ValueError, match="weights must be given"):
        VALIDATORS["iwv"](sv, tg, None)
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\)"):
        VALIDATORS["dev"](sv, tg, torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        VALIDATORS["iwv"](sv, tg, torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="source_val.labels must be given"):
        VALIDATORS["source-accuracy"](tg, tg, None)
    with pytest.raises(ValueError, match="same number of classes"):
        VALIDATORS["entropy"](sv, _preds(torch.full((4, 3), 1 / 3, dtype=F64)), None)
    with pytest.raises(TypeError, match="target must be"):
        VALIDATORS["snd"](sv, probs, None)
    with pytest.raises(ValueError, match="target_labels"):
        oracle(tg, torch.tensor([0, 1]))


def test_evaluate_computes_weights_once_and_returns_all_names(monkeypatch):
    g = _gen(6)

    def dom(n, shift, labelled):
        x = torch.randn(n, 2, generator=g, dtype=F64) + shift
        p = torch.softmax(torch.randn(n, 3, generator=g, dtype=F64), 1)
        return Predictions(x, p, torch.randint(0, 3, (n,), generator=g) if labelled else None)

    st, sv, tg = dom(100, 0.0, True), dom(60, 0.0, True), dom(80, 0.5, False)
    calls = []
    real = V.importance_weights

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(V, "importance_weights", counting)
    names = ["entropy", "dev", "source-accuracy", "iwv", "snd"]
    out = evaluate(names, source_train=st, source_val=sv, target=tg, seed=3)
    assert list(out) == names and calls == [3]
    w = real(st.features, tg.features, sv.features, seed=3)
    for name in names:
        assert out[name] == VALIDATORS[name](sv, tg, w)
    evaluate(["entropy", "snd", "source-accuracy"], source_train=st, source_val=sv, target=tg)
    assert calls == [3]  # no weights needed, none computed
    evaluate(["iwv"], source_train=st, source_val=sv, target=tg, weights=torch.ones(60, dtype=F64))
    assert calls == [3]  # precomputed weights are used as given
    assert NEEDS_WEIGHTS == {"iwv", "dev"}


def test_evaluate_name_errors():
    p = _preds(torch.full((4, 2), 0.5, dtype=F64), torch.tensor([0, 1, 0, 1]))
    t = _preds(torch.full((4, 2), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="unknown \\['accuracy'\\]; known are"):
        evaluate(["accuracy"], source_train=p, source_val=p, target=t)
    with pytest.raises(ValueError, match="oracle is computed apart"):
        evaluate(["oracle"], source_train=p, source_val=p, target=t)
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(["snd", "snd"], source_train=p, source_val=p, target=t)
    with pytest.raises(ValueError, match="at least one"):
        evaluate([], source_train=p, source_val=p, target=t)
    with pytest.raises(TypeError, match="sequence of names"):
        evaluate("snd", source_train=p, source_val=p, target=t)


# ----------------------------------------------------------------------------- real data
def test_validators_on_surf_subset(surf_small):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt, yt = surf_small
    num_classes = 10
    xs, xt = xs.double().numpy(), xt.double().numpy()
    train, val = np.arange(80), np.arange(80, 120)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(xs[train], ys[train].numpy())
    assert list(clf.classes_) == list(range(num_classes))  # every class is in the 80 training rows
    pca = PCA(8, random_state=0).fit(xs[train])  # stand-in for a learnt bottleneck

    def preds(x, y=None):
        return Predictions(torch.from_numpy(pca.transform(x)), torch.from_numpy(clf.predict_proba(x)), y)

    st, sv, tg = preds(xs[train], ys[train]), preds(xs[val], ys[val]), preds(xt)
    scores = evaluate(sorted(VALIDATORS), source_train=st, source_val=sv, target=tg)
    assert set(scores) == set(VALIDATORS) and all(math.isfinite(v) for v in scores.values())
    assert scores["source-accuracy"] == pytest.approx(clf.score(xs[val], ys[val].numpy()), abs=1e-12)
    assert 0 <= scores["iwv"] <= 1
    assert -math.log(num_classes) <= scores["entropy"] <= 0
    assert 0 <= scores["snd"] <= math.log(len(tg) - 1)
    assert oracle(tg, yt) == pytest.approx(clf.score(xt, yt.numpy()), abs=1e-12)
