"""Tests of reference/guidance.py: classifier guidance (mean and ε) and classifier-free guidance."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import guidance, registry
from ddspec.reference.schedules import linear_betas
from ddspec.reference.twin import guidance as twin
from ddspec.reference.twin import variances as twin_variances

LINEAR = linear_betas(1000)
U = 2.0**-53


def test_cfg_scale_zero_and_one_are_exact() -> None:
    """s = 0 is the unconditional model, s = 1 the conditional one (w = s − 1 in Ho & Salimans eq. 6)."""
    rng = np.random.default_rng(0)
    eu, ec = rng.standard_normal((2, 50))
    ec[:3] = [1e-20, -1e300, 5e-324]
    eu[:3] = [1.0, 1e-300, -7.0]
    np.testing.assert_array_equal(guidance.classifier_free_guidance(eu, ec, 0.0), eu)
    np.testing.assert_array_equal(guidance.classifier_free_guidance(eu, ec, 1.0), ec)


def test_cfg_matches_paper_form_correctly_rounded() -> None:
    """Correctly rounded against (1 + w)ε_c − wε_u: the twin pairing (≤ ½ ULP at s = 7.5, 3, 1.5, −0.5, 0.3)
    is the registry's (reference/registry.py, run by tests/reference/test_registry.py)."""
    probes = registry.probe_errors("guidance.classifier_free_guidance")
    assert sum(tol == 0.5 + 1e-6 for _, tol in probes) == 5 and all(err <= tol for err, tol in probes)
    # a hand example: s = 2: 2ε_c − ε_u
    np.testing.assert_array_equal(guidance.classifier_free_guidance([1.0, -2.0], [3.0, 0.5], 2.0), [5.0, 3.0])


def test_classifier_guided_mean() -> None:
    """Dhariwal & Nichol Algorithm 1: μ + sΣ∇; correctly rounded (double-double), s = 0 returns μ."""
    probes = registry.probe_errors("guidance.classifier_guided_mean")  # ≤ ½ ULP at s = 0, 1, 10, 100 (registry)
    assert sum(tol == 0.5 + 1e-6 for _, tol in probes) == 4 and all(err <= tol for err, tol in probes)
    rng = np.random.default_rng(2)
    mu, g = rng.standard_normal((2, 30))
    var = rng.uniform(1e-4, 0.02, 30)
    np.testing.assert_array_equal(guidance.classifier_guided_mean(mu, var, g, 0.0), mu)
    # a scalar variance broadcasts; hand example: 1 + 2·0.25·(−4) = −1
    np.testing.assert_array_equal(guidance.classifier_guided_mean([1.0], 0.25, [-4.0], 2.0), [-1.0])


def test_classifier_guided_eps() -> None:
    """Algorithm 2 / eq. 14: ε − s sqrt(1 − ᾱ_t)∇, within a few units of roundoff of the terms."""
    rng = np.random.default_rng(3)
    eps, g = rng.standard_normal((2, 20))
    for t in (0, 500, 999):
        for s in (0.5, 4.0):
            got = guidance.classifier_guided_eps(eps, g, t, LINEAR, s)
            exact = twin.classifier_guided_eps(eps, g, t, LINEAR, s)
            with mpmath.workdps(50):
                c = mpmath.sqrt(1 - twin_variances.alpha_bar(LINEAR, t))
                mag = [abs(mpmath.mpf(e)) + s * c * abs(mpmath.mpf(x)) for e, x in zip(eps, g)]
                err = [float(abs(mpmath.mpf(float(a)) - b) / (U * m)) for a, b, m in zip(got, exact, mag)]
            assert max(err) <= 4.0
    np.testing.assert_array_equal(guidance.classifier_guided_eps(eps, g, 10, LINEAR, 0.0), eps)


def test_guided_eps_is_the_guided_score() -> None:
    """score = −ε/sqrt(1 − ᾱ): the guided ε is the ε of ∇log p(x_t) + s∇log p(y|x_t) (Dhariwal & Nichol §4.2)."""
    rng = np.random.default_rng(4)
    eps, g = rng.standard_normal((2, 5))
    t, s = 300, 2.0
    c = float(np.sqrt(1 - float(twin_variances.alpha_bar(LINEAR, t))))
    score = -eps / c + s * g
    np.testing.assert_allclose(guidance.classifier_guided_eps(eps, g, t, LINEAR, s), -c * score, rtol=1e-13, atol=1e-13)


def test_validation_errors_name_the_argument() -> None:
    x = np.zeros(3)
    with pytest.raises(ValueError, match="eps_cond"):
        guidance.classifier_free_guidance(x, np.zeros(2), 2.0)
    with pytest.raises(ValueError, match="scale"):
        guidance.classifier_free_guidance(x, x, float("nan"))
    with pytest.raises(ValueError, match="variance"):
        guidance.classifier_guided_mean(x, -1.0, x, 1.0)
    with pytest.raises(ValueError, match="variance"):
        guidance.classifier_guided_mean(x, np.ones(2), x, 1.0)
    with pytest.raises(ValueError, match="grad_log_p_y"):
        guidance.classifier_guided_mean(x, 0.1, np.zeros(4), 1.0)
    with pytest.raises(ValueError, match="grad_log_p_y"):
        guidance.classifier_guided_eps(x, np.zeros(4), 3, LINEAR, 1.0)
    with pytest.raises(ValueError, match="t"):
        guidance.classifier_guided_eps(x, x, 1000, LINEAR, 1.0)
    with pytest.raises(ValueError, match="scale"):
        guidance.classifier_guided_eps(x, x, 3, LINEAR, "big")
