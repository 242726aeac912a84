"""Tests of reference/oracles.py: exact denoisers of analytic data, checked by quadrature and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from ddspec.reference import oracles
from ddspec.reference.alphas import alpha_bar

BETAS = np.linspace(1e-4, 0.02, 1000)


def _posterior_mean_by_quadrature(prior_pdf, lo: float, hi: float, x_t: float, t: int) -> float:
    """E[x0 | x_t] = ∫ x0 p(x0) N(x_t; sqrt(ab) x0, 1-ab) dx0 / ∫ p(x0) N(...) dx0, by scipy quad."""
    ab = float(alpha_bar(BETAS)[t])
    lik = lambda x0: stats.norm.pdf(x_t, loc=np.sqrt(ab) * x0, scale=np.sqrt(1 - ab))  # noqa: E731
    # the likelihood is narrow (std sqrt(1-ab)/sqrt(ab) in x0) near t = 0: integrate around its peak
    peak, width = x_t / np.sqrt(ab), 12 * np.sqrt((1 - ab) / ab)
    a, b = max(lo, peak - width), min(hi, peak + width)
    num = integrate.quad(lambda x0: x0 * prior_pdf(x0) * lik(x0), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
    den = integrate.quad(lambda x0: prior_pdf(x0) * lik(x0), a, b, epsabs=0, epsrel=1e-12, limit=200)[0]
    return num / den


def test_point_mass_eps_recovers_the_noise() -> None:
    """For data δ(x0*), x_t = sqrt(ab) x0* + sqrt(1-ab) ε gives ε*(x_t) = ε (Ho et al. eq. 4 inverted)."""
    pm = oracles.PointMass(np.array([0.3, -1.7, 2.5]))
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((5, 3))
    for t in (0, 10, 500, 999):
        ab = float(alpha_bar(BETAS)[t])
        x_t = np.sqrt(ab) * pm.point + np.sqrt(1 - ab) * eps
        np.testing.assert_allclose(pm.eps(x_t, t, BETAS), eps, rtol=0, atol=1e-10 / np.sqrt(1 - ab) * 1e-3 + 1e-12)
        np.testing.assert_array_equal(pm.x0(x_t, t, BETAS), np.broadcast_to(pm.point, x_t.shape))


@pytest.mark.parametrize("t", [0, 100, 600, 999])
def test_gaussian_denoiser_matches_quadrature(t: int) -> None:
    """E[x0|x_t] for N(m, s²) data equals the Bayes posterior mean computed by numerical integration."""
    m, s2 = 0.4, 0.3
    g = oracles.IsotropicGaussian(np.array([m]), s2)
    for x_t in (-2.0, 0.1, 1.5):
        expected = _posterior_mean_by_quadrature(lambda x: stats.norm.pdf(x, m, np.sqrt(s2)), -12, 12, x_t, t)
        assert g.x0(np.array([[x_t]]), t, BETAS)[0, 0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("t", [0, 200, 999])
def test_mixture_denoiser_matches_quadrature(t: int) -> None:
    """E[x0|x_t] for a two-component 1-D mixture equals numerical integration of the Bayes posterior."""
    w, mu, s2 = np.array([0.25, 0.75]), np.array([[-1.0], [0.8]]), np.array([0.05, 0.2])
    gm = oracles.GaussianMixture(w, mu, s2)
    pdf = lambda x: w[0] * stats.norm.pdf(x, -1.0, np.sqrt(0.05)) + w[1] * stats.norm.pdf(x, 0.8, np.sqrt(0.2))  # noqa: E731
    for x_t in (-1.5, 0.0, 0.9):
        expected = _posterior_mean_by_quadrature(pdf, -10, 10, x_t, t)
        assert gm.x0(np.array([[x_t]]), t, BETAS)[0, 0] == pytest.approx(expected, rel=1e-8, abs=1e-11)
    # ε* is consistent with x̂0* through eq. 4
    ab = float(alpha_bar(BETAS)[t])
    x = np.array([[0.3]])
    np.testing.assert_allclose(
        np.sqrt(ab) * gm.x0(x, t, BETAS) + np.sqrt(1 - ab) * gm.eps(x, t, BETAS), x, rtol=1e-13, atol=1e-13
    )


def test_mixture_marginal_is_a_density() -> None:
    """The marginal law of x_t integrates to 1 (1-D mixture, quadrature)."""
    gm = oracles.GaussianMixture([0.5, 0.5], [[-1.0], [1.0]], [0.1, 0.1])
    total = integrate.quad(lambda x: np.exp(gm.marginal_log_prob(np.array([x]), 300, BETAS)), -20, 20)[0]
    assert total == pytest.approx(1.0, abs=1e-10)


def test_gaussian_run_ddpm_equals_ddim_eta_one_on_full_schedule() -> None:
    """DDIM with η = 1 on the full schedule is the DDPM posterior (DDIM §4.1), so the output laws agree."""
    g = oracles.IsotropicGaussian(np.array([0.5, -0.3]), np.array([0.2, 0.05]))
    ts = np.arange(999, -1, -1)
    a = oracles.gaussian_run_output(g, BETAS, ts, family="ddpm")
    b = oracles.gaussian_run_output(g, BETAS, ts, family="ddim", eta=1.0)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-10)


def test_gaussian_run_with_zero_variance_data_is_exact() -> None:
    """With s² = 0 (a point mass) the deterministic DDIM lands on the point with zero variance."""
    g = oracles.IsotropicGaussian(np.array([0.7]), 0.0)
    out = oracles.gaussian_run_output(g, BETAS, np.arange(999, -1, -50), family="ddim", eta=0.0)
    assert out.mean[0] == pytest.approx(0.7, abs=1e-14)
    assert out.variance[0] == 0.0


def test_gaussian_single_step_closed_form() -> None:
    """One DDIM η=0 step from x_T ~ N(0,1) straight to the data: output = x̂0*(x_T), law N(b0, a0²)."""
    m, s2, t = 0.2, 0.5, 999
    g = oracles.IsotropicGaussian(np.array([m]), s2)
    ab = float(alpha_bar(BETAS)[t])
    V = ab * s2 + 1 - ab
    a0 = np.sqrt(ab) * s2 / V
    out = oracles.gaussian_run_output(g, BETAS, [t], family="ddim", eta=0.0)
    assert out.mean[0] == pytest.approx(m - a0 * np.sqrt(ab) * m, rel=1e-14)
    assert out.variance[0] == pytest.approx(a0**2, rel=1e-13)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="point"):
        oracles.PointMass(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="variance"):
        oracles.IsotropicGaussian(np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="weights"):
        oracles.GaussianMixture([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0])
    g = oracles.IsotropicGaussian(np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="x_t"):
        g.eps(np.zeros((3, 5)), 0, BETAS)
    with pytest.raises(ValueError, match="timesteps"):
        oracles.gaussian_run_output(g, BETAS, [5, 10])
    with pytest.raises(ValueError, match="family"):
        oracles.gaussian_run_output(g, BETAS, [10, 5], family="ddxm")
    with pytest.raises(ValueError, match="t"):
        g.eps(np.zeros((1, 2)), 1000, BETAS)


# -- learned variances in the closed-form run law ------------------------------------------------------


def _learned_case():
    from ddspec.reference import schedules, timesteps

    betas = schedules.linear_betas(1000)
    ts = timesteps.leading_timesteps(1000, 10)
    oracle = oracles.IsotropicGaussian(np.array([0.3, -0.2, 0.05]), 0.5)
    return betas, ts, oracle


def test_learned_range_endpoints_give_the_fixed_laws_exactly() -> None:
    r"""Nichol & Dhariwal eq. 15 at m = −1 is Σ = β̃′ and at m = +1 is Σ = β′ (exactly: the reference
    returns the endpoints themselves), so a learned_range run with a constant ∓1 output has exactly the
    fixed_small / fixed_large run law."""
    betas, ts, oracle = _learned_case()
    for m, fixed in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        want = oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type=fixed)
        got = oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="learned_range",
                                          model_var_outputs=np.full(ts.size, m))
        np.testing.assert_array_equal(got.mean, want.mean)
        np.testing.assert_array_equal(got.variance, want.variance)


def test_learned_log_variance_of_beta_tilde_gives_the_fixed_small_law() -> None:
    r"""``learned`` takes a log-variance: log β̃′ at every step reproduces the fixed_small law (to the
    rounding of exp(log), a few ULP), and a larger log-variance widens the output (Σ enters the output
    variance with a positive weight A² ≥ 0 at every later step)."""
    from ddspec.reference import posterior

    betas, ts, oracle = _learned_case()
    pairs = list(zip(ts.tolist(), ts.tolist()[1:] + [-1]))
    logs = np.array([np.log(float(posterior.posterior_coefficients(betas, t, s).variance)) if s >= 0 else 0.0
                     for t, s in pairs])
    want = oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="fixed_small")
    got = oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="learned",
                                      model_var_outputs=logs)
    np.testing.assert_allclose(got.variance, want.variance, rtol=1e-13)
    np.testing.assert_array_equal(got.mean, want.mean)
    wider = oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="learned",
                                        model_var_outputs=logs + 0.5)
    assert np.all(wider.variance > want.variance)


def test_learned_run_law_validates_its_variance_outputs() -> None:
    betas, ts, oracle = _learned_case()
    with pytest.raises(ValueError, match="model_var_output"):
        oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="learned_range")
    with pytest.raises(ValueError, match="model_var_outputs"):
        oracles.gaussian_run_output(oracle, betas, ts, family="ddpm", variance_type="learned_range",
                                    model_var_outputs=np.zeros(ts.size - 1))
    with pytest.raises(ValueError, match="model_var_output"):
        oracles.gaussian_step_map(oracle, betas, 500, 400, family="ddpm", variance_type="fixed_small",
                                  model_var_output=0.0)


@pytest.mark.parametrize("t", [0, 250, 999])
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_gaussian_affine_coefficients_match_the_quadrature_denoiser(t: int, kind: str) -> None:
    """The (A, B) of the exact denoiser are an affine closed form; evaluated at x_t they give the Bayes posterior
    mean of x0 by numerical integration (scipy quad), converted to ε = (x_t − √ᾱ x0)/√(1−ᾱ) and
    v = √ᾱ ε − √(1−ᾱ) x0 (Ho et al. eq. 4; Salimans & Ho 2022 §4), coordinate by coordinate."""
    m, s2 = np.array([0.4, -1.1]), np.array([0.3, 0.05])
    g = oracles.IsotropicGaussian(m, s2)
    A, B = g.affine(t, BETAS, kind)
    assert A.shape == B.shape == (2,)
    ab = float(alpha_bar(BETAS)[t])
    for x_t in (-2.0, 0.1, 1.5):
        for j in range(2):
            x0 = _posterior_mean_by_quadrature(lambda x: stats.norm.pdf(x, m[j], np.sqrt(s2[j])), -12, 12, x_t, t)
            eps = (x_t - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
            expected = {"sample": x0, "epsilon": eps, "v_prediction": np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0}[kind]
            assert A[j] * x_t + B[j] == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_gaussian_affine_rejects_an_unknown_prediction_type() -> None:
    g = oracles.IsotropicGaussian(np.array([0.0]), 1.0)
    with pytest.raises(ValueError, match="prediction_type"):
        g.affine(3, BETAS, "score")
