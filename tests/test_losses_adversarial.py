"""Tests for gradient_reversal, domain_adversarial and entropy."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy as scipy_entropy
from torch import nn

from adaptlib.losses import GradientReversal, domain_adversarial, entropy, gradient_reversal



# ------------------------------------------------------------------ gradient reversal
@pytest.mark.parametrize("lam", [0.0, 0.37, 1.0, 5.0])
def test_reversed_gradient_is_exactly_minus_lambda_times_plain(lam):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(10, 4, requires_grad=True)
    (plain,) = torch.autograd.grad(net(x).sum(), x)
    y = gradient_reversal(x, lam)
    assert torch.equal(y, x)
    (rev,) = torch.autograd.grad(net(y).sum(), x)
    assert torch.equal(rev, -lam * plain)
    (mod,) = torch.autograd.grad(net(GradientReversal()(x, lam)).sum(), x)
    assert torch.equal(mod, rev)


def test_reversal_coefficient_checks():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(gradient_reversal(x, torch.tensor(0.5)), x)
    with pytest.raises(ValueError, match="coefficient"):
        gradient_reversal(x, -1.0)
    with pytest.raises(ValueError, match="coefficient"):
        gradient_reversal(x, float("nan"))
    with pytest.raises(TypeError, match="coefficient"):
        gradient_reversal(x, "1")
    with pytest.raises(TypeError, match="x"):
        gradient_reversal([1.0], 1.0)


def test_reversal_gradcheck_against_manual_derivative():
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    # d/dx sum(R(x)^2) = -lambda * 2 x
    (g,) = torch.autograd.grad((gradient_reversal(x, 0.7) ** 2).sum(), x)
    torch.testing.assert_close(g, -0.7 * 2 * x.detach())


# ------------------------------------------------------------------ DANN domain loss
def make_disc(d=5, squeeze=False):
    torch.manual_seed(1)
    layers = [nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 1)]
    if squeeze:
        layers.append(nn.Flatten(0))
    return nn.Sequential(*layers).double()


@pytest.mark.parametrize("squeeze", [False, True])
def test_domain_loss_matches_reference(squeeze):
    torch.manual_seed(0)
    disc = make_disc(squeeze=squeeze)
    xs, xt = torch.randn(20, 5, dtype=torch.float64), torch.randn(64, 5, dtype=torch.float64) + 1
    loss, acc = domain_adversarial(xs, xt, disc, 1.0)
    with torch.no_grad():
        ls, lt = disc(xs).reshape(-1), disc(xt).reshape(-1)
    bce_s = F.binary_cross_entropy_with_logits(ls, torch.ones_like(ls))
    bce_t = F.binary_cross_entropy_with_logits(lt, torch.zeros_like(lt))
    assert float(loss.detach()) == pytest.approx(0.5 * float(bce_s + bce_t), rel=1e-12)
    acc_ref = 0.5 * (np.mean(ls.numpy() >= 0) + np.mean(lt.numpy() < 0))
    assert float(acc) == pytest.approx(acc_ref, rel=1e-12)
    assert acc.is_floating_point() and not acc.requires_grad


class FirstColumn(nn.Module):
    def forward(self, z):
        return z[:, :1]


def test_domain_accuracy_is_balanced_and_exact():
    xs = torch.tensor([[0.05], [-1.0], [2.0]])
    xt = torch.tensor([[-0.05], [0.5]])
    loss, acc = domain_adversarial(xs, xt, FirstColumn(), 1.0)
    assert float(acc) == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    ref = 0.5 * (F.softplus(-xs).mean() + F.softplus(xt).mean())
    assert float(loss) == pytest.approx(float(ref))
    # logit exactly 0 counts as "source"
    _, acc0 = domain_adversarial(torch.zeros(2, 1), torch.zeros(3, 1), FirstColumn(), 1.0)
    assert float(acc0) == 0.5


def test_domain_loss_weights():
    disc = make_disc()
    xs, xt = torch.randn(6, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    ws = torch.tensor([1.0, 2, 0, 1, 1, 3], dtype=torch.float64)
    wt = torch.tensor([2.0, 1, 1, 1], dtype=torch.float64)
    loss, _ = domain_adversarial(xs, xt, disc, 1.0, ws, wt)
    # integer weights = duplicated samples
    dup_s = torch.repeat_interleave(xs, ws.long(), dim=0)
    dup_t = torch.repeat_interleave(xt, wt.long(), dim=0)
    loss_dup, _ = domain_adversarial(dup_s, dup_t, disc, 1.0)
    assert float(loss.detach()) == pytest.approx(float(loss_dup.detach()), rel=1e-12)
    with pytest.raises(ValueError, match="source_weights"):
        domain_adversarial(xs, xt, disc, 1.0, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_domain_loss_feature_gradient_is_reversed(lam):
    disc = make_disc()
    xs = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    xt = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    loss, _ = domain_adversarial(xs, xt, disc, lam)
    g_rev = torch.autograd.grad(loss, [xs, xt, *disc.parameters()])
    # the same loss without reversal
    z = disc(torch.cat([xs, xt])).squeeze(1)
    plain = 0.5 * (F.softplus(-z[:7]).mean() + F.softplus(z[7:]).mean())
    g_plain = torch.autograd.grad(plain, [xs, xt, *disc.parameters()])
    torch.testing.assert_close(g_rev[0], -lam * g_plain[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(g_rev[1], -lam * g_plain[1], rtol=1e-12, atol=0)
    for gr, gp in zip(g_rev[2:], g_plain[2:]):  # the discriminator itself is trained normally
        torch.testing.assert_close(gr, gp, rtol=1e-12, atol=1e-15)


def test_domain_loss_bad_inputs():
    xs, xt = torch.randn(4, 5), torch.randn(3, 5)
    with pytest.raises(ValueError, match="discriminator"):
        domain_adversarial(xs, xt, nn.Linear(5, 2), 1.0)
    with pytest.raises(ValueError, match="target_features"):
        domain_adversarial(xs, torch.randn(3, 4), nn.Linear(5, 1), 1.0)
    with pytest.raises(ValueError, match="coefficient"):
        domain_adversarial(xs, xt, nn.Linear(5, 1), -0.1)
    with pytest.raises(TypeError, match="discriminator"):
        domain_adversarial(xs, xt, "disc", 1.0)
    # constant features and a single sample per domain work
    loss, acc = domain_adversarial(torch.zeros(1, 5), torch.zeros(1, 5), nn.Linear(5, 1), 1.0)
    assert torch.isfinite(loss) and torch.isfinite(acc)


# ------------------------------------------------------------------ entropy
def test_entropy_matches_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 7)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = np.array([scipy_entropy(row) for row in p])
    t = torch.tensor(logits)
    np.testing.assert_allclose(entropy(t, "none").numpy(), ref, rtol=1e-12)
    assert float(entropy(t)) == pytest.approx(ref.mean(), rel=1e-12)
    assert float(entropy(t, "sum")) == pytest.approx(ref.sum(), rel=1e-12)
    assert float(entropy(torch.zeros(3, 10))) == pytest.approx(math.log(10), rel=1e-6)


def test_entropy_extreme_logits_finite_gradients():
    for dtype in (torch.float32, torch.float64):
        z = torch.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [-3e38, 3e38, 0.0]], dtype=dtype, requires_grad=True)
        h = entropy(z, "none")
        h.sum().backward()
        assert torch.isfinite(h).all() and torch.isfinite(z.grad).all()
        assert float(h[0].detach()) == 0.0
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(entropy, (x,))


def test_entropy_bad_inputs():
    with pytest.raises(ValueError, match="logits"):
        entropy(torch.randn(4))
    with pytest.raises(ValueError, match="logits"):
        entropy(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError, match="logits"):
        entropy(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        entropy(torch.randn(2, 3), "avg")
