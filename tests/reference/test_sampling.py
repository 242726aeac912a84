"""Tests of reference/sampling.py: DDPM and DDIM steps against the mpmath twin, closed forms, loops."""

from __future__ import annotations

from typing import Any

import mpmath
import numpy as np
import pytest

from ddspec.reference import sampling
from ddspec.reference.alphas import alpha_bar, sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from ddspec.reference.parameterisation import ddpm_mean_from_eps
from ddspec.reference.schedules import cosine_betas, linear_betas
from ddspec.reference.twin import sampling as twin
from ddspec.reference.twin import ulp_error
from ddspec.reference.twin import variances as twin_variances

LINEAR = linear_betas(1000)
COSINE = cosine_betas(1000)
U = 2.0**-53

# first/last, interior, strided, strided to the data
STEPS = [(999, 998), (500, 499), (1, 0), (0, -1), (999, 899), (600, 300), (100, -1)]


def _scaled_error(approx: Any, exact: list[Any], magnitude: list[Any]) -> np.ndarray:
    """|approx − exact| in units of 2⁻⁵³·magnitude (the absolute-value evaluation of the expression)."""
    a = np.asarray(approx, dtype=np.float64).ravel()
    with mpmath.workdps(40):
        return np.array([float(abs(mpmath.mpf(float(x)) - e) / (mpmath.mpf(U) * m)) for x, e, m in zip(a, exact, magnitude)])


def _point_mass_model(x0_star: np.ndarray, betas: np.ndarray):
    """Exact ε of the point mass δ(x0*): ε(x_t, t) = (x_t − sqrt(ᾱ_t) x0*)/sqrt(1 − ᾱ_t) (Ho et al. eq. 4)."""
    sa, s1 = sqrt_alpha_bar(betas), sqrt_one_minus_alpha_bar(betas)
    return lambda x, t: (x - sa[t] * x0_star) / s1[t]


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_step_matches_twin(prediction_type: str, variance_type: str) -> None:
    """Within 4 units of roundoff of the terms' magnitude everywhere, and within 8 ULP where nothing cancels."""
    rng = np.random.default_rng(11)
    for b in (LINEAR, COSINE):
        for t, t_prev in STEPS:
            if prediction_type == "epsilon" and b is COSINE and t == 999:
                continue  # ᾱ_T ≈ 2.4e-9: x̂₀ from ε is ill-conditioned by 1/sqrt(ᾱ); covered on LINEAR
            x = rng.standard_normal(6)
            out = rng.standard_normal(6)
            z = rng.standard_normal(6)
            mv = rng.uniform(-1, 1, 6) if variance_type == "learned_range" else None
            got = sampling.ddpm_step(out, t, x, b, noise=z, t_prev=t_prev, prediction_type=prediction_type,
                                     variance_type=variance_type, model_var_output=mv)
            tw = twin.ddpm_step(out, t, x, b, z, t_prev=t_prev, prediction_type=prediction_type,
                                variance_type=variance_type, model_var_output=mv)
            assert np.all(_scaled_error(got.prev_sample, tw["prev_sample"], tw["magnitude"]) <= 4.0), (t, t_prev)
            assert np.all(_scaled_error(got.mean, tw["mean"], tw["mean_magnitude"]) <= 4.0), (t, t_prev)


def test_ddpm_step_plain_ulp_without_cancellation() -> None:
    """x_t > 0, ε < 0, z > 0: every term is positive, so the result is within a few plain ULP."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.5, 2.0, 8)
    eps = -rng.uniform(0.5, 2.0, 8)
    z = rng.uniform(0.5, 2.0, 8)
    for t, t_prev in STEPS:
        got = sampling.ddpm_step(eps, t, x, LINEAR, noise=z, t_prev=t_prev)
        tw = twin.ddpm_step(eps, t, x, LINEAR, z, t_prev=t_prev)
        assert np.all(ulp_error(got.prev_sample, tw["prev_sample"]) <= 8.0), (t, t_prev)
        assert np.all(ulp_error(got.pred_x0, tw["pred_x0"]) <= 4.0), (t, t_prev)


def test_ddpm_step_with_clipping_matches_twin() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal(10) * 3
    out = rng.standard_normal(10)
    z = rng.standard_normal(10)
    for t, t_prev in [(50, 49), (400, 300), (0, -1)]:
        got = sampling.ddpm_step(out, t, x, LINEAR, noise=z, t_prev=t_prev, clip_sample=True, clip_sample_range=0.8)
        tw = twin.ddpm_step(out, t, x, LINEAR, z, t_prev=t_prev, clip_range=0.8)
        assert np.max(np.abs(got.pred_x0)) <= 0.8
        assert np.all(_scaled_error(got.prev_sample, tw["prev_sample"], tw["magnitude"]) <= 4.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddim_step_matches_twin(prediction_type: str) -> None:
    rng = np.random.default_rng(13)
    for t, t_prev in STEPS + [(0, 0)]:
        for eta in (0.0, 0.5, 1.0):
            for use_clipped in (False, True):
                x = rng.standard_normal(6)
                out = rng.standard_normal(6)
                z = rng.standard_normal(6)
                got = sampling.ddim_step(out, t, t_prev, x, LINEAR, eta=eta, noise=z, prediction_type=prediction_type,
                                         clip_sample=use_clipped, use_clipped_model_output=use_clipped)
                kw = dict(eta=eta, noise=z, prediction_type=prediction_type,
                          clip_range=1.0 if use_clipped else None, use_clipped_model_output=use_clipped)
                tw = twin.ddim_step(out, t, t_prev, x, LINEAR, **kw)
                assert ulp_error([got.variance], [tw["variance"]])[0] <= 4.0
                # as a function of η: ε̂'s coefficient is formed from η without cancellation
                # (ddim.ddim_direction_coefficient), so a few units of roundoff of the terms, with no
                # amplification of σ's rounding by κ = (1 − ᾱ_s)/(1 − ᾱ_s − σ²) (≈ 25 at η = 1, 600 → 300)
                assert np.all(_scaled_error(got.prev_sample, tw["prev_sample"], tw["magnitude"]) <= 4.0)


def test_ddim_step_plain_ulp_without_cancellation() -> None:
    """sample-prediction with x̂₀ > 0 and x_t large positive: ε̂ > 0, all terms positive."""
    rng = np.random.default_rng(6)
    x0 = rng.uniform(0.1, 1.0, 8)
    x = 40.0 + rng.uniform(0, 1, 8)
    z = rng.uniform(0.5, 2.0, 8)
    for t, t_prev in STEPS:
        got = sampling.ddim_step(x0, t, t_prev, x, LINEAR, eta=0.7, noise=z, prediction_type="sample")
        tw = twin.ddim_step(x0, t, t_prev, x, LINEAR, eta=0.7, noise=z, prediction_type="sample")
        assert np.all(ulp_error(got.prev_sample, tw["prev_sample"]) <= 8.0), (t, t_prev)


def test_generalized_step_matches_twin() -> None:
    rng = np.random.default_rng(8)
    x0, eps, z = rng.standard_normal((3, 7))
    for t, t_prev in [(999, 979), (10, 9), (5, -1), (0, 0)]:
        sigma = 0.5 * float(twin.ddim_sigma(LINEAR, t, t_prev, 1.0))
        got = sampling.generalized_step(x0, eps, t, t_prev, sigma, LINEAR, z)
        exact = twin.generalized_step(x0, eps, t, t_prev, sigma, LINEAR, z)
        mag = twin.generalized_step(np.abs(x0), np.abs(eps), t, t_prev, sigma, LINEAR, np.abs(z))
        assert np.all(_scaled_error(got, exact, mag) <= 4.0)


def test_first_step_fixed_small_returns_x0_hat_exactly() -> None:
    """At index 0 (to the data) the posterior has c_x0 = β₁/β₁ = 1, c_xt = 0, β̃ = 0: x_prev = x̂₀."""
    rng = np.random.default_rng(1)
    x, eps = rng.standard_normal((2, 9))
    r = sampling.ddpm_step(eps, 0, x, LINEAR)
    assert float(r.variance) == 0.0
    np.testing.assert_array_equal(r.prev_sample, r.pred_x0)
    np.testing.assert_array_equal(r.mean, r.pred_x0)
    # the same for a strided final step and for a DDIM step to the data (sqrt(ᾱ)=1, sqrt(1-ᾱ-σ²)=0)
    r2 = sampling.ddpm_step(eps, 250, x, LINEAR, t_prev=-1)
    np.testing.assert_array_equal(r2.prev_sample, r2.pred_x0)
    r3 = sampling.ddim_step(eps, 250, -1, x, LINEAR, eta=1.0)
    np.testing.assert_array_equal(r3.prev_sample, r3.pred_x0)


def test_no_noise_at_the_final_step_for_every_variance_type() -> None:
    """Algorithm 2: z = 0 at t = 1, even for fixed_large (σ² = β₁ ≠ 0)."""
    x, eps = np.array([0.3, -0.2]), np.array([0.1, 0.4])
    for vt, mv in [("fixed_small", None), ("fixed_large", None), ("fixed_large_improved", None),
                   ("learned", np.array([-3.0, -4.0])), ("learned_range", np.array([0.2, -0.9]))]:
        r = sampling.ddpm_step(eps, 0, x, LINEAR, variance_type=vt, model_var_output=mv, noise=None)
        np.testing.assert_array_equal(r.prev_sample, r.mean)
        assert float(np.max(r.variance)) == 0.0


def test_ddim_eta_one_equals_ddpm_fixed_small() -> None:
    """η = 1 gives σ² = β̃ and, with ε̂ consistent with x̂₀, DDIM eq. 12 equals the posterior step (DDIM §4.1)."""
    rng = np.random.default_rng(4)
    for t, t_prev in [(999, 998), (500, 499), (1, 0), (999, 899), (600, 300)]:
        x, eps, z = rng.standard_normal((3, 8))
        ddpm = sampling.ddpm_step(eps, t, x, LINEAR, noise=z, t_prev=t_prev)
        ddim = sampling.ddim_step(eps, t, t_prev, x, LINEAR, eta=1.0, noise=z)
        tw = twin.ddpm_step(eps, t, x, LINEAR, z, t_prev=t_prev)
        assert ulp_error([ddim.variance], [twin.ddim_sigma(LINEAR, t, t_prev, 1.0) ** 2])[0] <= 4
        assert abs(float(ddim.variance) - float(ddpm.variance)) <= 8 * U * float(ddpm.variance)
        tw_ddim = twin.ddim_step(eps, t, t_prev, x, LINEAR, eta=1.0, noise=z)
        # the identity itself, in exact arithmetic (mpmath at 50 digits)
        assert max(abs(a - b) for a, b in zip(tw_ddim["prev_sample"], tw["prev_sample"])) < mpmath.mpf(10) ** -35
        c_s = 1 - float(twin_variances.alpha_bar(LINEAR, t_prev))
        kappa = c_s / (c_s - float(ddim.variance))  # σ's rounding amplified in sqrt(1 − ᾱ_s − σ²)
        assert np.all(_scaled_error(ddim.prev_sample, tw["prev_sample"], tw_ddim["magnitude"]) <= 4.0 + kappa)
        assert np.all(_scaled_error(ddpm.prev_sample, tw["prev_sample"], tw["magnitude"]) <= 4.0)


def test_ddpm_step_equals_eq_11_mean() -> None:
    """The posterior-mean form equals Ho et al. eq. 11 for an unclipped ε-prediction."""
    rng = np.random.default_rng(9)
    for t in (1, 300, 999):
        x, eps = rng.standard_normal((2, 8))
        r = sampling.ddpm_step(eps, t, x, LINEAR, noise=np.zeros(8))
        tw = twin.ddpm_step(eps, t, x, LINEAR, np.zeros(8))
        assert np.all(_scaled_error(ddpm_mean_from_eps(x, eps, t, LINEAR), tw["mean"], tw["mean_magnitude"]) <= 8)
        assert np.all(_scaled_error(r.mean, tw["mean"], tw["mean_magnitude"]) <= 4)


def test_use_clipped_model_output_switches_eps() -> None:
    """Raw ε̂ by default (diffusers); re-derived from the clipped x̂₀ when asked (improved-diffusion)."""
    x = np.array([2.0, -0.1])
    eps = np.array([-1.5, 0.2])
    t = 300
    raw = sampling.ddim_step(eps, t, 200, x, LINEAR, clip_sample=True)
    rederived = sampling.ddim_step(eps, t, 200, x, LINEAR, clip_sample=True, use_clipped_model_output=True)
    np.testing.assert_array_equal(raw.pred_eps, eps)
    sa, s1 = float(sqrt_alpha_bar(LINEAR)[t]), float(sqrt_one_minus_alpha_bar(LINEAR)[t])
    np.testing.assert_allclose(rederived.pred_eps, (x - sa * raw.pred_x0) / s1, rtol=4 * U, atol=0)
    assert rederived.pred_eps[0] != eps[0]  # x̂₀[0] was clipped, so the two conventions differ


def test_ddim_loop_point_mass_reaches_x0() -> None:
    """The exact point-mass denoiser gives x̂₀ = x0* at every step, so the loop ends at x0* (to rounding)."""
    x0_star = np.array([0.4, -0.9, 0.05])
    model = _point_mass_model(x0_star, LINEAR)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(3)
    ts = np.arange(999, -1, -50)
    traj = sampling.ddim_sample_loop(model, x_T, ts, LINEAR)
    assert traj.samples.shape == (ts.size + 1, 3) and traj.pred_x0s.shape == (ts.size, 3)
    assert traj.timesteps == tuple(int(v) for v in ts) + (-1,)
    np.testing.assert_array_equal(traj.samples[0], x_T)
    np.testing.assert_allclose(traj.samples[-1], x0_star, rtol=0, atol=1e-12)
    noises = rng.standard_normal((ts.size, 3))
    traj1 = sampling.ddim_sample_loop(model, x_T, ts, LINEAR, eta=1.0, noises=noises)
    np.testing.assert_allclose(traj1.samples[-1], x0_star, rtol=0, atol=1e-12)


def test_ddim_loop_final_alpha_bar_not_one() -> None:
    """set_alpha_to_one=False: the last step goes to ᾱ at index 0. With the point mass and η = 0 the
    noise direction ε_T = (x_T − sqrt(ᾱ_T)x0*)/sqrt(1 − ᾱ_T) is kept, so the end is
    sqrt(ᾱ₀)x0* + sqrt(1 − ᾱ₀)ε_T (DDIM eq. 12)."""
    x0_star = np.array([0.25, -0.5])
    model = _point_mass_model(x0_star, LINEAR)
    x_T = np.array([1.1, 0.3])
    ab = alpha_bar(LINEAR)
    eps_T = (x_T - np.sqrt(ab[999]) * x0_star) / np.sqrt(1 - ab[999])
    expected = np.sqrt(ab[0]) * x0_star + np.sqrt(1 - ab[0]) * eps_T
    for ts in (np.arange(999, -1, -111), np.arange(999, 0, -111)):  # last τ = 0 (0 -> 0) and last τ = 9 (9 -> 0)
        traj = sampling.ddim_sample_loop(model, x_T, ts, LINEAR, final_alpha_bar_is_one=False)
        assert traj.timesteps[-1] == 0
        np.testing.assert_allclose(traj.samples[-1], expected, rtol=0, atol=1e-12)


def test_ddpm_loop_composes_steps_and_ends_without_noise() -> None:
    rng = np.random.default_rng(12)
    x0_star = np.array([0.3, -0.3, 0.9])
    model = _point_mass_model(x0_star, COSINE)
    ts = np.array([999, 700, 400, 100, 3])
    x_T = rng.standard_normal(3)
    noises = [rng.standard_normal(3) for _ in range(4)] + [None]
    traj = sampling.ddpm_sample_loop(model, x_T, ts, COSINE, noises=noises)
    x = x_T
    for i, (t, s) in enumerate(zip(ts, [700, 400, 100, 3, -1])):
        x = sampling.ddpm_step(model(x, int(t)), int(t), x, COSINE, noise=noises[i], t_prev=s).prev_sample
        np.testing.assert_array_equal(traj.samples[i + 1], x)
    np.testing.assert_allclose(traj.samples[-1], x0_star, rtol=0, atol=1e-12)


def test_ddpm_loop_learned_range_model_returns_pair() -> None:
    x0_star = np.array([0.1, 0.2])
    eps_model = _point_mass_model(x0_star, LINEAR)
    model = lambda x, t: (eps_model(x, t), np.array([0.5, -0.5]))  # noqa: E731
    rng = np.random.default_rng(3)
    ts = np.arange(999, -1, -100)
    traj = sampling.ddpm_sample_loop(model, rng.standard_normal(2), ts, LINEAR, variance_type="learned_range",
                                     noises=rng.standard_normal((ts.size, 2)))
    np.testing.assert_allclose(traj.samples[-1], x0_star, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="model_fn"):
        sampling.ddpm_sample_loop(eps_model, np.zeros(2), ts, LINEAR, variance_type="learned_range",
                                  noises=np.zeros((ts.size, 2)))


def test_validation_errors_name_the_argument() -> None:
    x = np.zeros(3)
    with pytest.raises(ValueError, match="noise"):
        sampling.ddpm_step(x, 10, x, LINEAR)
    with pytest.raises(ValueError, match="noise"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=np.zeros(4))
    with pytest.raises(ValueError, match="noise"):
        sampling.ddim_step(x, 10, 5, x, LINEAR, eta=0.5)
    with pytest.raises(ValueError, match="noise"):
        sampling.generalized_step(x, x, 10, 5, 0.01, LINEAR)
    with pytest.raises(ValueError, match="variance_type"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=x, variance_type="fixed_medium")
    with pytest.raises(ValueError, match="variance_type"):
        sampling.ddpm_step(x, 0, x, LINEAR, variance_type="fixed_medium")
    with pytest.raises(ValueError, match="model_var_output"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=x, variance_type="learned_range", model_var_output=np.full(3, 2.0))
    with pytest.raises(ValueError, match="model_var_output"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=x, variance_type="learned_range", model_var_output=np.zeros(2))
    with pytest.raises(ValueError, match="prediction_type"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=x, prediction_type="score")
    with pytest.raises(ValueError, match="t_prev"):
        sampling.ddpm_step(x, 10, x, LINEAR, noise=x, t_prev=10)
    with pytest.raises(ValueError, match="t_prev"):
        sampling.ddim_step(x, 10, 11, x, LINEAR)
    with pytest.raises(ValueError, match="eta"):
        sampling.ddim_step(x, 10, 5, x, LINEAR, eta=-0.1, noise=x)
    with pytest.raises(ValueError, match="eta"):
        sampling.ddim_step(x, 10, 5, x, LINEAR, eta=1e6, noise=x)
    with pytest.raises(ValueError, match="sigma"):
        sampling.generalized_step(x, x, 10, 5, 10.0, LINEAR, x)
    with pytest.raises(ValueError, match="use_clipped_model_output"):
        sampling.ddim_step(x, 10, 5, x, LINEAR, use_clipped_model_output="no")
    with pytest.raises(ValueError, match="x_t"):
        sampling.ddim_step(x, 10, 5, np.zeros(4), LINEAR)
    model = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="timesteps"):
        sampling.ddim_sample_loop(model, x, [5, 10], LINEAR)
    with pytest.raises(ValueError, match="noises"):
        sampling.ddim_sample_loop(model, x, [10, 5], LINEAR, eta=1.0)
    with pytest.raises(ValueError, match="noises"):
        sampling.ddim_sample_loop(model, x, [10, 5], LINEAR, eta=1.0, noises=[x])
    with pytest.raises(ValueError, match="noises"):
        sampling.ddpm_sample_loop(model, x, [10, 5], LINEAR, noises=[None, None])
    with pytest.raises(ValueError, match="final_alpha_bar_is_one"):
        sampling.ddim_sample_loop(model, x, [10, 5], LINEAR, final_alpha_bar_is_one=None)
    with pytest.raises(ValueError, match="model_fn"):
        sampling.ddim_sample_loop(None, x, [10, 5], LINEAR)
