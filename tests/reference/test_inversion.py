"""Tests of reference/inversion.py: the η = 0 DDIM step run towards noise, and inversion ∘ sampling."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import inversion, sampling
from ddspec.reference.alphas import sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from ddspec.reference.schedules import linear_betas
from ddspec.reference.twin import ulp_error
from ddspec.reference.twin import variances as twin_variances
from tests.reference.pairs import twin_of

LINEAR = linear_betas(1000)


def _point_mass_model(x0_star: np.ndarray, betas: np.ndarray):
    """Exact ε of the point mass δ(x0*): ε(x_t, t) = (x_t − sqrt(ᾱ_t) x0*)/sqrt(1 − ᾱ_t) (Ho et al. eq. 4)."""
    sa, s1 = sqrt_alpha_bar(betas), sqrt_one_minus_alpha_bar(betas)
    return lambda x, t: (x - sa[t] * x0_star) / s1[t]


def test_invert_step_from_data_matches_twin() -> None:
    """From the data (t_from = −1): x̂₀ = x and x_to = sqrt(ᾱ_to) x + sqrt(1 − ᾱ_to) ε; positive terms: ≤ 3 ULP."""
    rng = np.random.default_rng(0)
    x, eps = rng.uniform(0.1, 2.0, (2, 6))
    for t_to in (0, 1, 500, 999):
        got = inversion.ddim_invert_step(eps, -1, t_to, x, LINEAR)
        with mpmath.workdps(50):
            ab = twin_variances.alpha_bar(LINEAR, t_to)
            exact = [mpmath.sqrt(ab) * mpmath.mpf(a) + mpmath.sqrt(1 - ab) * mpmath.mpf(e) for a, e in zip(x, eps)]
        assert np.all(ulp_error(got, exact) <= 3.0)


def test_invert_step_undoes_the_ddim_step() -> None:
    """With the same ε, DDIM η = 0 from t to s and inversion from s to t are inverse maps (DDIM eq. 12)."""
    rng = np.random.default_rng(1)
    x_t, eps = rng.standard_normal((2, 5))
    for t, s in [(999, 979), (500, 0), (10, 9)]:
        x_s = sampling.ddim_step(eps, t, s, x_t, LINEAR).prev_sample
        back = inversion.ddim_invert_step(eps, s, t, x_s, LINEAR)
        np.testing.assert_allclose(back, x_t, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model_at", ["source", "destination"])
def test_inversion_then_sampling_returns_the_start_for_a_point_mass(model_at: str) -> None:
    """Point-mass denoiser: ε̂ is the same at every state of a deterministic path, so inverting x0* and
    sampling back (DDIM η = 0 on the reversed indices, ending at the data) returns x0* to ~1e-12."""
    x0_star = np.array([0.7, -0.2, 1.3, -1.9])
    model = _point_mass_model(x0_star, LINEAR)
    up = [0] + list(range(50, 1000, 50)) + [999]
    start = [-1] + up if model_at == "destination" else up  # "source" cannot call the model at the data
    traj = inversion.ddim_invert(model, x0_star, start, LINEAR, model_at=model_at)
    assert traj.timesteps == tuple(start) and traj.samples.shape == (len(start), 4)
    back = sampling.ddim_sample_loop(model, traj.samples[-1], up[::-1], LINEAR)
    np.testing.assert_allclose(back.samples[-1], x0_star, rtol=0, atol=1e-12)


def test_inversion_round_trip_from_a_noisy_state() -> None:
    """model_at="source": the point-mass ε̂(x_τ, τ) is the path's own ε, so starting at a noisy state x at
    index 30, inverting to 999 and stepping back with DDIM η = 0 recovers every state, to ~1e-12."""
    x0_star = np.array([0.3, -0.6])
    model = _point_mass_model(x0_star, LINEAR)
    x_start = np.array([0.9, 0.1])
    up = [30, 100, 400, 800, 999]
    traj = inversion.ddim_invert(model, x_start, up, LINEAR, model_at="source")
    x = traj.samples[-1]
    for k in range(len(up) - 1, 0, -1):
        x = sampling.ddim_step(model(x, up[k]), up[k], up[k - 1], x, LINEAR).prev_sample
        np.testing.assert_allclose(x, traj.samples[k - 1], rtol=0, atol=1e-12)


def test_destination_convention_first_step_closed_form() -> None:
    """model_at="destination" evaluates the model on the source state at the destination index. For the
    point mass from the data: ε̂ = (x0* − sqrt(ᾱ)x0*)/sqrt(1 − ᾱ), so x_τ = sqrt(ᾱ)x0* + sqrt(1 − ᾱ)ε̂ = x0*:
    the first state does not move (the approximation ε(x_{t−1}, t) ≈ ε(x_t, t) is exact only in the limit)."""
    x0_star = np.array([0.3, -0.6, 1.1])
    model = _point_mass_model(x0_star, LINEAR)
    traj = inversion.ddim_invert(model, x0_star, [-1, 200, 600], LINEAR, model_at="destination")
    np.testing.assert_allclose(traj.samples[1], x0_star, rtol=0, atol=1e-14)
    # whereas the source convention, started at index 0, moves it to the point mass's noisy marginal path
    src = inversion.ddim_invert(model, x0_star, [0, 200, 600], LINEAR, model_at="source")
    assert np.max(np.abs(src.samples[1] - x0_star)) > 1e-3


def test_model_is_called_at_the_documented_index() -> None:
    calls: list[int] = []

    def model(x: np.ndarray, t: int) -> np.ndarray:
        calls.append(t)
        return np.zeros_like(x)

    inversion.ddim_invert(model, np.ones(2), [0, 10, 20], LINEAR, model_at="source")
    assert calls == [0, 10]
    calls.clear()
    inversion.ddim_invert(model, np.ones(2), [-1, 10, 20], LINEAR, model_at="destination")
    assert calls == [10, 20]


def test_validation_errors_name_the_argument() -> None:
    model = lambda x, t: np.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="model_at"):
        inversion.ddim_invert(model, np.ones(2), [0, 10], LINEAR, model_at="middle")
    with pytest.raises(ValueError, match="model_at"):
        inversion.ddim_invert(model, np.ones(2), [-1, 10], LINEAR, model_at="source")
    with pytest.raises(ValueError, match="timesteps"):
        inversion.ddim_invert(model, np.ones(2), [10, 5], LINEAR)
    with pytest.raises(ValueError, match="timesteps"):
        inversion.ddim_invert(model, np.ones(2), [10], LINEAR)
    with pytest.raises(ValueError, match="model_fn"):
        inversion.ddim_invert(None, np.ones(2), [0, 10], LINEAR)
    with pytest.raises(ValueError, match="eps"):
        inversion.ddim_invert(lambda x, t: np.zeros(3), np.ones(2), [0, 10], LINEAR)
    with pytest.raises(ValueError, match="t_to"):
        inversion.ddim_invert_step(np.zeros(2), 10, 10, np.zeros(2), LINEAR)
    with pytest.raises(ValueError, match="t_from"):
        inversion.ddim_invert_step(np.zeros(2), -2, 10, np.zeros(2), LINEAR)
    with pytest.raises(ValueError, match="eps"):
        inversion.ddim_invert_step(np.zeros(3), 0, 10, np.zeros(2), LINEAR)


@pytest.mark.parametrize("t_from,t_to", [(-1, 0), (-1, 999), (0, 1), (10, 30), (500, 520), (979, 999)])
def test_invert_step_against_the_mpmath_twin(t_from: int, t_to: int) -> None:
    """Within 8 roundoff units of the terms' magnitude of the independent twin (DDIM eq. 12, σ = 0)."""
    import mpmath


    betas = np.linspace(1e-4, 0.02, 1000)
    rng = np.random.default_rng(t_from + 7 * t_to + 11)
    eps, x = rng.standard_normal((2, 16))
    got = inversion.ddim_invert_step(eps, t_from, t_to, x, betas)
    exact = twin_of("inversion.ddim_invert_step")(eps, t_from, t_to, x, betas, dps=40)
    # scale: sqrt(ᾱ_to/ᾱ_from)(|x| + sqrt(1-ᾱ_from)|ε|) + sqrt(1-ᾱ_to)|ε| bounds every term
    ab = np.concatenate([[1.0], np.cumprod(1 - betas)])
    a_f, a_t = ab[t_from + 1], ab[t_to + 1]
    scale = np.sqrt(a_t / a_f) * (np.abs(x) + np.sqrt(1 - a_f) * np.abs(eps)) + np.sqrt(1 - a_t) * np.abs(eps)
    with mpmath.workdps(40):
        err = np.array([float(abs(mpmath.mpf(g) - e)) for g, e in zip(got, exact)])
    assert np.all(err <= 8 * 2.0**-53 * scale)
