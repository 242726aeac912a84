"""Tests of reference/langevin.py: annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1)."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError
from ddspec.reference.langevin import annealed_langevin_step, langevin_step_size
from ddspec.reference.twin import langevin as twin

U = 2.0**-53


def test_step_size_closed_form() -> None:
    """α_i = ε σ_i²/σ_L²: (σ_i, σ_L, ε) = (2, 0.5, 2⁻¹⁰) gives 16·2⁻¹⁰ = 2⁻⁶ exactly; α_L = ε."""
    assert langevin_step_size(2.0, 0.5, 2.0**-10) == 2.0**-6
    assert langevin_step_size(0.01, 0.01, 2e-5) == 2e-5
    # Song & Ermon's CIFAR-10 setting: σ_1 = 1, σ_L = 0.01, ε = 2e-5 → α_1 = 0.2 (≤ 3 ULP of the twin:
    # the registry's probe, tests/reference/test_registry.py)
    assert abs(langevin_step_size(1.0, 0.01, 2e-5) - 0.2) < 1e-15


def test_step_closed_form() -> None:
    """x + (α/2)s + sqrt(α)z with α = 0.25: 1 + 0.125·2 + 0.5·4 = 3.25 (exact in binary)."""
    np.testing.assert_array_equal(annealed_langevin_step([1.0, 0.0], [2.0, -8.0], 0.25, [4.0, 1.0]), [3.25, -0.5])


def test_step_matches_twin() -> None:
    """Elementwise, in units of u·(|x| + α/2|s| + √α|z|) (a sharper metric than the registry's normwise probe)."""
    rng = np.random.default_rng(0)
    x, s, z = rng.standard_normal((3, 20))
    s *= 50.0
    for a in (1e-5, 0.003, 0.2):
        got = annealed_langevin_step(x, s, a, z)
        exact = twin.annealed_langevin_step(x, s, a, z)
        with mpmath.workdps(50):
            mag = [abs(mpmath.mpf(p)) + mpmath.mpf(a) / 2 * abs(mpmath.mpf(q)) + mpmath.sqrt(a) * abs(mpmath.mpf(r))
                   for p, q, r in zip(x, s, z)]
            err = [float(abs(mpmath.mpf(float(g)) - e) / (U * m)) for g, e, m in zip(got, exact, mag)]
        assert max(err) <= 4.0


def test_validation_errors_name_the_argument() -> None:
    x = np.zeros(3)
    with pytest.raises(ValueError, match="step_size"):
        annealed_langevin_step(x, x, 0.0, x)
    with pytest.raises(ValueError, match="noise"):
        annealed_langevin_step(x, x, 0.1, np.zeros(2))
    with pytest.raises(ValueError, match="score"):
        annealed_langevin_step(x, [np.inf, 0, 0], 0.1, x)
    with pytest.raises(ValueError, match="sigma_i"):
        langevin_step_size(-1.0, 0.1, 1e-5)
    with pytest.raises(ValueError, match="sigma_L"):
        langevin_step_size(1.0, 0.0, 1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        langevin_step_size(1.0, 0.1, 0.0)
    with pytest.raises(SingularError):
        annealed_langevin_step([1e308], [1e308], 10.0, [0.0])
