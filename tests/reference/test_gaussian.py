"""Tests of ddspec.reference.gaussian: the diagonal Gaussian result type.

Expected log-densities come from the closed form −½ log(2πσ²) − (x − μ)²/(2σ²) evaluated in mpmath
at 40 digits, and from normalisation (∫ p = 1, by scipy quadrature).
"""

from __future__ import annotations

import dataclasses

import mpmath
import numpy as np
import pytest
from scipy import integrate

from ddspec.reference.gaussian import Gaussian

U = 2.0**-53


def _exact_log_prob(x: float, mu: float, var: float) -> mpmath.mpf:
    with mpmath.workdps(40):
        x, mu, var = mpmath.mpf(x), mpmath.mpf(mu), mpmath.mpf(var)
        return -mpmath.log(2 * mpmath.pi * var) / 2 - (x - mu) ** 2 / (2 * var)


def test_fields_are_float64_arrays_and_frozen():
    g = Gaussian([1, 2, 3], 2)
    assert g.mean.dtype == np.float64 and g.variance.dtype == np.float64
    assert g.mean.shape == (3,) and g.variance.shape == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.mean = np.zeros(3)  # type: ignore[misc]


def test_std_is_sqrt_variance():
    g = Gaussian(np.zeros(3), np.array([4.0, 0.25, 0.0]))
    np.testing.assert_array_equal(g.std, [2.0, 0.5, 0.0])


@pytest.mark.parametrize(
    ("x", "mu", "var"),
    [(0.0, 0.0, 1.0), (1.5, -0.3, 0.02), (-7.0, 2.0, 3.5), (1e-3, 1e-3, 1e-8), (0.1, 0.0, 1e-4)],
)
def test_log_prob_against_closed_form(x, mu, var):
    got = float(Gaussian(np.array([mu]), var).log_prob([x])[0])
    want = _exact_log_prob(x, mu, var)
    # three terms, each a few roundings of its own size
    with mpmath.workdps(40):
        scale = abs(mpmath.log(2 * mpmath.pi * var)) / 2 + (mpmath.mpf(x) - mu) ** 2 / (2 * var)
        assert abs(mpmath.mpf(got) - want) <= 8 * U * scale


def test_log_prob_broadcasts_and_normalises():
    g = Gaussian(np.array([0.0, 1.0]), np.array([1.0, 0.09]))
    lp = g.log_prob(np.array([[0.0, 1.0], [1.0, 0.7]]))
    assert lp.shape == (2, 2)
    # ∫ exp(log p) dx = 1 for each component (quadrature to 1e-10)
    for mu, var in ((0.0, 1.0), (1.0, 0.09)):
        one = Gaussian(np.array([mu]), var)
        total, _ = integrate.quad(lambda x: float(np.exp(one.log_prob([x])[0])), -np.inf, np.inf)
        assert abs(total - 1.0) < 1e-10


def test_validation_names_the_argument():
    with pytest.raises(ValueError, match="^variance="):
        Gaussian(np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="^variance="):
        Gaussian(np.zeros(2), np.array([1.0, -1e-300]))
    with pytest.raises(ValueError, match="^variance="):
        Gaussian(np.zeros(2), np.ones(3))  # shapes do not broadcast
    with pytest.raises(ValueError, match="^variance="):
        Gaussian(np.zeros(2), np.nan)
    with pytest.raises(ValueError, match="^mean="):
        Gaussian([0.0, np.inf], 1.0)
    with pytest.raises(ValueError, match="^mean="):
        Gaussian("0", 1.0)
    point = Gaussian(np.zeros(2), 0.0)  # a point mass is a valid Gaussian ...
    with pytest.raises(ValueError, match="^variance="):
        point.log_prob([0.0, 0.0])  # ... without a density
    with pytest.raises(ValueError, match="^x="):
        Gaussian(np.zeros(2), 1.0).log_prob([0.0, np.nan])
