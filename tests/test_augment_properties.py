"""Property tests of affine_images (the transform behind RandomAffine) against independent
references: zero-padded slicing for integer shifts, torch.rot90 for quarter turns, and the
linearity and convex-combination bounds every bilinear resampling with zero fill obeys.

Derandomized in the suite (tests/conftest.py); scripts/randomized_properties.py runs them with
fresh seeds."""
from __future__ import annotations

import math
import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptlib.models import affine_images

sizes = st.integers(min_value=2, max_value=12)
_MIN_EXAMPLES = int(os.environ.get("ADAPTLIB_HYPOTHESIS_EXAMPLES", "0"))


def examples(n: int) -> int:
    """``n`` examples in the suite; at least ``ADAPTLIB_HYPOTHESIS_EXAMPLES`` in a randomized run."""
    return max(n, _MIN_EXAMPLES)


def images(seed: int, n: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(n, 2, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def shifted_reference(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x moved dx pixels right and dy down, zeros where nothing comes in (plain slicing)."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@settings(max_examples=examples(60), deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 31 - 1), h=sizes, w=sizes, data=st.data())
def test_integer_shifts_equal_zero_padded_slicing(seed, h, w, data):
    dx = data.draw(st.integers(-w - 1, w + 1), label="dx")
    dy = data.draw(st.integers(-h - 1, h + 1), label="dy")
    x = images(seed, 1, h, w)
    y = affine_images(x, torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                      torch.tensor([[dx, dy]], dtype=torch.float64))
    assert torch.allclose(y, shifted_reference(x, dx, dy), atol=1e-10)


@settings(max_examples=examples(40), deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 31 - 1), side=sizes, k=st.integers(-4, 4))
def test_quarter_turns_equal_rot90(seed, side, k):
    x = images(seed, 2, side, side)
    angle = torch.full((2,), k * math.pi / 2, dtype=torch.float64)
    y = affine_images(x, angle, torch.ones(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64))
    assert torch.allclose(y, torch.rot90(x, k, dims=(2, 3)), atol=1e-10)


@settings(max_examples=examples(60), deadline=None, database=None)
@given(seed=st.integers(0, 2 ** 31 - 1), h=sizes, w=sizes, angle=st.floats(-math.pi, math.pi),
       scale=st.floats(0.25, 4.0), dx=st.floats(-8, 8), dy=st.floats(-8, 8),
       a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_linear_in_the_images_and_within_the_convex_hull_of_pixels_and_zero(seed, h, w, angle, scale, dx, dy, a, b):
    x, z = images(seed, 1, h, w), images(seed + 1, 1, h, w) - 0.5
    params = (torch.tensor([angle], dtype=torch.float64), torch.tensor([scale], dtype=torch.float64),
              torch.tensor([[dx, dy]], dtype=torch.float64))
    tx, tz = affine_images(x, *params), affine_images(z, *params)
    assert torch.allclose(affine_images(a * x + b * z, *params), a * tx + b * tz, atol=1e-10)
    # Bilinear weights are non-negative and sum to at most 1 (the rest is the zero fill).
    assert tz.min() >= min(0.0, z.min().item()) - 1e-12 and tz.max() <= max(0.0, z.max().item()) + 1e-12
