"""Tests of reference/interpolation.py: slerp endpoints, norms, closed forms, degenerate angles, twin."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference.interpolation import SMALL_ANGLE, slerp
from ddspec.reference.twin import interpolation as twin
from tests.reference.pairs import twin_of

U = 2.0**-53


def test_endpoints_are_exact() -> None:
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(slerp(z0, z1, 0.0), z0)
    np.testing.assert_array_equal(slerp(z0, z1, 1.0), z1)


def test_orthogonal_closed_forms() -> None:
    """θ = π/2, sin θ = 1: α = 1/2 gives (z0 + z1)/√2; α = 1/3 gives (√3/2) z0 + (1/2) z1."""
    z0, z1 = np.array([3.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0])
    np.testing.assert_allclose(slerp(z0, z1, 0.5), [3 / np.sqrt(2), 3 / np.sqrt(2), 0.0], rtol=4 * U, atol=0)
    np.testing.assert_allclose(slerp(z0, z1, 1 / 3), [1.5 * np.sqrt(3), 1.5, 0.0], rtol=4 * U, atol=1e-300)


def test_half_way_closed_form() -> None:
    """α = 1/2: sin(θ/2)/sin θ = 1/(2 cos(θ/2)), so slerp = (z0 + z1)/(2 cos(θ/2)) for any norms."""
    rng = np.random.default_rng(1)
    z0, z1 = rng.standard_normal((2, 16))
    z1 *= 2.5
    theta = float(twin.angle(z0, z1))
    expected = (z0 + z1) / (2 * np.cos(theta / 2))
    np.testing.assert_allclose(slerp(z0, z1, 0.5), expected, rtol=1e-14, atol=1e-14)


def test_norm_preserved_for_equal_norms() -> None:
    rng = np.random.default_rng(2)
    z0 = rng.standard_normal(64)
    z1 = rng.standard_normal(64)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    for a in (0.1, 0.37, 0.5, 0.9):
        assert abs(np.linalg.norm(slerp(z0, z1, a)) / np.linalg.norm(z0) - 1) < 1e-14


def test_matches_twin() -> None:
    """Within a few units of roundoff of |c0 z0| + |c1 z1| (the terms may cancel elementwise)."""
    rng = np.random.default_rng(3)
    for scale in (1.0, 1e-3, 7.0):
        z0, z1 = rng.standard_normal((2, 10))
        z1 = scale * z1
        for a in (0.05, 0.5, 0.81):
            got = slerp(z0, z1, a)
            exact = twin_of("interpolation.slerp")(z0, z1, a)
            theta = twin.angle(z0, z1)
            with mpmath.workdps(50):
                c0 = mpmath.sin((1 - mpmath.mpf(a)) * theta) / mpmath.sin(theta)
                c1 = mpmath.sin(mpmath.mpf(a) * theta) / mpmath.sin(theta)
                mag = [c0 * abs(mpmath.mpf(x)) + c1 * abs(mpmath.mpf(y)) for x, y in zip(z0, z1)]
                err = [float(abs(mpmath.mpf(float(g)) - e) / (U * m)) for g, e, m in zip(got, exact, mag)]
            assert max(err) <= 8.0


def test_small_angle_falls_back_to_lerp() -> None:
    """θ < 2⁻²⁶: linear interpolation, which agrees with slerp to within rounding there."""
    z0 = np.array([1.0, 2.0, 3.0])
    z1 = z0 * (1 + 1e-3) + np.array([0.0, 1e-12, 0.0])  # nearly parallel, different norm
    theta = float(twin.angle(z0, z1))
    assert 0 < theta < SMALL_ANGLE
    got = slerp(z0, z1, 0.3)
    np.testing.assert_array_equal(got, 0.7 * z0 + 0.3 * z1)
    exact = twin_of("interpolation.slerp")(z0, z1, 0.3)
    np.testing.assert_allclose(got, [float(v) for v in exact], rtol=4 * U, atol=0)
    np.testing.assert_array_equal(slerp(z0, 2 * z0, 0.5), 1.5 * z0)  # θ = 0 exactly


def test_validation_errors_name_the_argument() -> None:
    z = np.array([1.0, -2.0, 0.5])
    with pytest.raises(ValueError, match="z1"):
        slerp(z, -z, 0.5)  # antipodal
    with pytest.raises(ValueError, match="z1"):
        slerp(z, -3.0 * z + np.array([0.0, 1e-14, 0.0]), 0.5)
    with pytest.raises(ValueError, match="z0"):
        slerp(np.zeros(3), z, 0.5)
    with pytest.raises(ValueError, match="z1"):
        slerp(z, np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        slerp(z, z[::-1], 1.5)
    with pytest.raises(ValueError, match="z1"):
        slerp(z, np.ones(4), 0.5)
