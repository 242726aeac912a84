"""Tests of reference/postprocess.py: [−1, 1] → uint8 with diffusers' rounding and improved-diffusion's truncation."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ddspec.reference.postprocess import to_uint8


def _exact_uint8(x: float, rounding: str) -> int:
    """The exact function, in rational arithmetic: y = 127.5(x + 1), rounded half-to-even or floored, clamped."""
    y = Fraction(255, 2) * (Fraction(x) + 1)
    f = math.floor(y)
    if rounding == "truncate":
        r = f
    else:
        frac = y - f
        r = f + 1 if frac > Fraction(1, 2) else f if frac < Fraction(1, 2) else (f if f % 2 == 0 else f + 1)
    return min(max(r, 0), 255)


def test_endpoints_and_midpoint() -> None:
    """−1 → 0 and 1 → 255 in both; 0 → 127.5 → 128 (ties to even) or 127 (truncation)."""
    x = np.array([-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(to_uint8(x), [0, 255, 128])
    np.testing.assert_array_equal(to_uint8(x, rounding="truncate"), [0, 255, 127])
    assert to_uint8(x).dtype == np.uint8


def test_out_of_range_values_are_clamped() -> None:
    x = np.array([-7.0, -1.0000001, 1.0000001, 1e300, -1e300])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 255, 255, 0])
    np.testing.assert_array_equal(to_uint8(x, rounding="truncate"), [0, 0, 255, 255, 0])


@pytest.mark.parametrize("rounding", ["round", "truncate"])
def test_exact_at_and_around_every_boundary(rounding: str) -> None:
    """Inputs at, and one ULP either side of, every rounding boundary (y = k + 1/2 for round, y = k for
    truncate), plus random inputs: equal to the exact function of the float64 input."""
    k = np.arange(256, dtype=np.float64)
    edges = (2 * k + 1) / 255 - 1 if rounding == "round" else 2 * k / 255 - 1
    edges = edges[np.abs(edges) <= 1]
    xs = np.concatenate([edges, np.nextafter(edges, -2), np.nextafter(edges, 2),
                         np.random.default_rng(0).uniform(-1, 1, 300)])
    got = to_uint8(xs, rounding=rounding)
    expected = np.array([_exact_uint8(float(v), rounding) for v in xs])
    np.testing.assert_array_equal(got, expected)


def test_the_conventions_differ_by_at_most_one_level() -> None:
    xs = np.linspace(-1, 1, 2001)
    d = to_uint8(xs).astype(int) - to_uint8(xs, rounding="truncate").astype(int)
    assert set(np.unique(d)) <= {0, 1} and d.sum() > 0


def test_validation_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(np.zeros(2), rounding="floor")
    with pytest.raises(ValueError, match="x"):
        to_uint8(np.array([np.nan]))
