"""Tests for adaptlib.losses.coral against a numpy float64 reference (np.cov, explicit loops)."""
import numpy as np
import pytest
import torch

from adaptlib.losses import CORALLoss, coral



def ref_coral(xs, xt):
    xs = np.asarray(xs, dtype=np.float64)
    xt = np.asarray(xt, dtype=np.float64)
    d = xs.shape[1]
    cs = np.cov(xs, rowvar=False, ddof=1).reshape(d, d)
    ct = np.cov(xt, rowvar=False, ddof=1).reshape(d, d)
    total = 0.0
    for i in range(d):
        for j in range(d):
            total += (cs[i, j] - ct[i, j]) ** 2
    return total / (4.0 * d * d)


def t64(a):
    return torch.tensor(a, dtype=torch.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize("shape_s,shape_t", [((20, 5), (64, 5)),  # d <= N + M: covariance path
                                             ((6, 40), (9, 40)),   # d > N + M: Gram path
                                             ((2, 3), (2, 3))])
def test_matches_reference(rng, shape_s, shape_t):
    xs = rng.normal(size=shape_s)
    xt = rng.normal(size=shape_t) * 1.7 + 0.3
    got = coral(t64(xs), t64(xt))
    assert got.shape == () and got.dtype == torch.float64
    assert float(got) == pytest.approx(ref_coral(xs, xt), rel=1e-10)
    got32 = coral(t64(xs).float(), t64(xt).float())
    assert got32.dtype == torch.float32
    assert float(got32) == pytest.approx(ref_coral(xs, xt), rel=1e-4)


@pytest.mark.parametrize("d", [3, 30])
def test_gradcheck_both_paths(d):
    torch.manual_seed(0)
    xs = torch.randn(5, d, dtype=torch.float64, requires_grad=True)
    xt = (torch.randn(7, d, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(coral, (xs, xt), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(coral, (xs, xt), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("d", [4, 50])
def test_ignores_mean_shift(rng, d):
    xs, xt = t64(rng.normal(size=(10, d))), t64(rng.normal(size=(12, d)))
    shift = t64(rng.normal(size=(1, d)) * 5)
    assert float(coral(xs + shift, xt)) == pytest.approx(float(coral(xs, xt)), rel=1e-9)
    assert abs(float(coral(xs, xs + shift))) < 1e-12


def test_identical_and_constant_inputs(rng):
    for d in (4, 50):
        x = t64(rng.normal(size=(8, d))).requires_grad_()
        v = coral(x, x.detach().clone())
        v.backward()
        assert float(v.detach()) == 0.0 and torch.isfinite(x.grad).all()
        for value in (0.0, 7.5):
            c = torch.full((8, d), value, requires_grad=True)
            v = coral(c, torch.full((5, d), value))
            v.backward()
            assert float(v.detach()) == 0.0
            assert torch.isfinite(c.grad).all() and float(c.grad.abs().max()) == 0.0


def test_d_larger_than_n_is_finite(rng):
    xs = torch.randn(3, 256, requires_grad=True)
    v = coral(xs, torch.randn(4, 256) * 3)
    v.backward()
    assert torch.isfinite(v) and float(v.detach()) > 0 and torch.isfinite(xs.grad).all()


def test_scaling_is_detected(rng):
    x = t64(rng.normal(size=(30, 4)))
    # C(2x) = 4 C(x): ||3 C||^2 / (4 d^2)
    cov = np.cov(x.numpy(), rowvar=False)
    assert float(coral(x, 2 * x)) == pytest.approx(9 * np.sum(cov ** 2) / (4 * 16), rel=1e-10)


def test_module_and_errors():
    x, y = torch.randn(5, 3), torch.randn(6, 3)
    assert float(CORALLoss()(x, y)) == float(coral(x, y))
    with pytest.raises(ValueError, match="source"):
        coral(x[:1], y)
    with pytest.raises(ValueError, match="target"):
        coral(x, y[:1])
    with pytest.raises(ValueError, match="target"):
        coral(x, torch.randn(6, 4))
    with pytest.raises(TypeError, match="source"):
        coral([[1.0, 2.0]], y)
    with pytest.raises(ValueError, match="source"):
        coral(torch.randn(5), y)
    with pytest.raises(ValueError, match="target"):
        coral(x, torch.full((6, 3), float("inf")))
    with pytest.raises(TypeError, match="target"):
        coral(x, y.double())
