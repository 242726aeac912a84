"""Tests of ddspec.reference.parameterisation: ε ↔ x̂₀ ↔ v ↔ score, and μ_θ from ε.

Expected values come from the mpmath twin (``reference/twin/parameterisation.py``: each conversion
written from the forward marginal x_t = sqrt(ᾱ_t) x₀ + sqrt(1 − ᾱ_t) ε, Ho et al. 2020 eq. 4, or from
Salimans & Ho 2022 §4 and Ho et al. 2020 eq. 11, at 40 digits), from round trips through
:func:`q_sample`, or from the identity DDPM eq. 11 = eq. 7 at x̂₀ (eq. 15).

Error bounds: each conversion is a few roundings of terms a·p + b·q with coefficients within 1 ULP,
so the absolute error is at most k·u·(|a·p| + |b·q|) (u = 2^-53), divided by the coefficient the
formula divides by.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError
from ddspec.reference import alphas as A
from ddspec.reference import parameterisation as Z
from ddspec.reference import posterior as P
from ddspec.reference.forward import q_sample
from ddspec.reference.twin import parameterisation as TZ
from ddspec.reference.twin import posterior as TP

DPS = 40
U = 2.0**-53
LINEAR = np.linspace(1e-4, 0.02, 1000)
COSINE_LIKE = np.concatenate([np.linspace(4e-5, 0.05, 999), [0.999]])  # a capped last step, ᾱ_T ≈ 9e-15
TIMES = (0, 1, 10, 500, 998, 999)
RNG = np.random.default_rng(20240101)
X0 = RNG.standard_normal((2, 3))
EPS = RNG.standard_normal((2, 3))
XT = RNG.standard_normal((2, 3))


def _abs_err(got: np.ndarray, want: list) -> np.ndarray:
    with mpmath.workdps(DPS):
        return np.array([float(abs(mpmath.mpf(g) - w)) for g, w in zip(np.ravel(got).tolist(), want)]).reshape(np.shape(got))


def _roots(betas: np.ndarray, t: int) -> tuple[float, float]:
    return float(A.sqrt_alpha_bar(betas)[t]), float(A.sqrt_one_minus_alpha_bar(betas)[t])


@pytest.mark.parametrize("betas", [LINEAR, COSINE_LIKE], ids=["linear", "capped"])
@pytest.mark.parametrize("t", TIMES)
def test_conversions_against_twin(betas, t):
    sa, s1 = _roots(betas, t)
    a, b = np.abs(XT), np.abs(EPS)
    cases = [
        (Z.predict_x0_from_eps(XT, EPS, t, betas), TZ.predict_x0_from_eps(XT, EPS, t, betas, dps=DPS), (a + s1 * b) / sa),
        (Z.predict_eps_from_x0(XT, X0, t, betas), TZ.predict_eps_from_x0(XT, X0, t, betas, dps=DPS), (a + sa * np.abs(X0)) / s1),
        (Z.v_from_x0_eps(X0, EPS, t, betas), TZ.v_from_x0_eps(X0, EPS, t, betas, dps=DPS), sa * b + s1 * np.abs(X0)),
        (Z.predict_x0_from_v(XT, EPS, t, betas), TZ.predict_x0_from_v(XT, EPS, t, betas, dps=DPS), sa * a + s1 * b),
        (Z.predict_eps_from_v(XT, EPS, t, betas), TZ.predict_eps_from_v(XT, EPS, t, betas, dps=DPS), s1 * a + sa * b),
        (Z.score_from_eps(EPS, t, betas), TZ.score_from_eps(EPS, t, betas, dps=DPS), b / s1),
        (Z.eps_from_score(EPS, t, betas), TZ.eps_from_score(EPS, t, betas, dps=DPS), s1 * b),
        (Z.ddpm_mean_from_eps(XT, EPS, t, betas), TZ.ddpm_mean_from_eps(XT, EPS, t, betas, dps=DPS), (a + betas[t] / s1 * b) / np.sqrt(1 - betas[t])),
    ]
    for k, (got, want, scale) in enumerate(cases):
        assert got.shape == XT.shape
        assert np.all(_abs_err(got, want) <= 6 * U * scale), k


@pytest.mark.parametrize("t", TIMES)
def test_predict_x0_from_eps_inverts_q_sample(t):
    for betas in (LINEAR, COSINE_LIKE):
        sa, s1 = _roots(betas, t)
        xt = q_sample(X0, t, EPS, betas)
        x0_hat = Z.predict_x0_from_eps(xt, EPS, t, betas)
        # error of x_t (≤ 3u(|sa x0| + |s1 ε|)) plus that of the inversion, both divided by sqrt(ᾱ_t)
        assert np.all(np.abs(x0_hat - X0) <= 8 * U * (sa * np.abs(X0) + s1 * np.abs(EPS)) / sa)
        eps_hat = Z.predict_eps_from_x0(xt, X0, t, betas)
        assert np.all(np.abs(eps_hat - EPS) <= 8 * U * (sa * np.abs(X0) + s1 * np.abs(EPS)) / s1)


@pytest.mark.parametrize("t", TIMES)
def test_v_round_trip(t):
    # x̂₀ = sqrt(ᾱ) x_t − sqrt(1 − ᾱ) v = x₀ (ᾱ + 1 − ᾱ) and ε̂ = sqrt(1 − ᾱ) x_t + sqrt(ᾱ) v = ε (Salimans & Ho 2022).
    for betas in (LINEAR, COSINE_LIKE):
        xt = q_sample(X0, t, EPS, betas)
        v = Z.v_from_x0_eps(X0, EPS, t, betas)
        tol = 8 * U * (np.abs(X0) + np.abs(EPS))
        assert np.all(np.abs(Z.predict_x0_from_v(xt, v, t, betas) - X0) <= tol)
        assert np.all(np.abs(Z.predict_eps_from_v(xt, v, t, betas) - EPS) <= tol)


def test_score_round_trip():
    for t in TIMES:
        s = Z.score_from_eps(EPS, t, LINEAR)
        np.testing.assert_allclose(Z.eps_from_score(s, t, LINEAR), EPS, rtol=4 * U, atol=0)


@pytest.mark.parametrize("t", TIMES)
def test_ddpm_mean_is_the_posterior_mean_at_x0_hat(t):
    # Ho et al. 2020: eq. 11 is eq. 7 with x₀ replaced by x̂₀(x_t, ε) of eq. 15. First at 40 digits in
    # the twins (the identity itself, to 1e-30), then in float64 (both sides within a few u of their terms).
    mu_twin = TZ.ddpm_mean_from_eps(XT, EPS, t, LINEAR, dps=DPS)
    x0_twin = TZ.predict_x0_from_eps(XT, EPS, t, LINEAR, dps=DPS)
    pc = TP.posterior_coefficients(LINEAR, t, dps=DPS)
    with mpmath.workdps(DPS):
        for m, x0, xt in zip(mu_twin, x0_twin, XT.ravel().tolist()):
            assert abs(m - (pc.coef_x0 * x0 + pc.coef_xt * mpmath.mpf(xt))) < mpmath.mpf(10) ** -30
    mu = Z.ddpm_mean_from_eps(XT, EPS, t, LINEAR)
    post = P.posterior_mean(Z.predict_x0_from_eps(XT, EPS, t, LINEAR), XT, t, LINEAR)
    sa, s1 = _roots(LINEAR, t)
    scale = (np.abs(XT) + LINEAR[t] / s1 * np.abs(EPS)) / np.sqrt(1 - LINEAR[t])
    # x̂₀ carries |x_t|/sa-sized rounding into c_x0 x̂₀, with c_x0 ≤ sqrt(ᾱ_{t−1}) β_t/(1 − ᾱ_t)
    scale = scale + float(pc.coef_x0) * (np.abs(XT) + s1 * np.abs(EPS)) / sa
    assert np.all(np.abs(mu - post) <= 16 * U * scale)


def test_split_prediction_three_ways_agree():
    t = 400
    xt = q_sample(X0, t, EPS, LINEAR)
    v = Z.v_from_x0_eps(X0, EPS, t, LINEAR)
    tol = 16 * U * (np.abs(X0) + np.abs(EPS)) / float(A.sqrt_alpha_bar(LINEAR)[t])
    for kind, out in (("epsilon", EPS), ("sample", X0), ("v_prediction", v)):
        p = Z.split_prediction(out, xt, t, LINEAR, kind)
        assert np.all(np.abs(p.x0 - X0) <= tol), kind
        assert np.all(np.abs(p.eps - EPS) <= tol), kind
    with pytest.raises(ValueError, match="^prediction_type="):
        Z.split_prediction(EPS, xt, t, LINEAR, "eps")


def test_singular_at_alpha_bar_zero():
    b = np.linspace(1e-4, 0.02, 50)
    b[-1] = 1.0  # ᾱ_T = 0 (zero terminal SNR)
    x = np.array([0.5, -1.0])
    with pytest.raises(SingularError, match="alpha_bar"):
        Z.predict_x0_from_eps(x, x, 49, b)
    with pytest.raises(SingularError):
        Z.split_prediction(x, x, 49, b, "epsilon")
    with pytest.raises(SingularError):
        Z.ddpm_mean_from_eps(x, x, 49, b)
    assert issubclass(SingularError, ValueError)
    # v- and x0-predictions stay defined: sqrt(ᾱ) = 0, sqrt(1 − ᾱ) = 1, so x̂₀ = −v and ε̂ = x_t.
    v = np.array([0.25, 2.0])
    np.testing.assert_array_equal(Z.predict_x0_from_v(x, v, 49, b), -v)
    np.testing.assert_array_equal(Z.predict_eps_from_v(x, v, 49, b), x)
    np.testing.assert_array_equal(Z.predict_eps_from_x0(x, v, 49, b), x)
    # one step earlier everything is regular
    assert np.all(np.isfinite(Z.predict_x0_from_eps(x, x, 48, b)))


def test_validation_names_the_argument():
    b = np.linspace(1e-4, 0.02, 10)
    x = np.zeros(3)
    with pytest.raises(ValueError, match="^eps="):
        Z.predict_x0_from_eps(x, np.zeros(4), 3, b)
    with pytest.raises(ValueError, match="^x_t="):
        Z.predict_x0_from_eps([np.nan, 0.0, 0.0], x, 3, b)
    with pytest.raises(ValueError, match="^x0="):
        Z.predict_eps_from_x0(x, np.zeros((3, 1)), 3, b)
    with pytest.raises(ValueError, match="^v="):
        Z.predict_x0_from_v(x, [0.0, np.inf, 0.0], 3, b)
    with pytest.raises(ValueError, match="^score="):
        Z.eps_from_score("x", 3, b)
    with pytest.raises(ValueError, match="^model_output="):
        Z.split_prediction([np.nan, 0.0, 0.0], x, 3, b, "sample")
    for t in (10, -1, 1.5):
        with pytest.raises(ValueError, match="^t="):
            Z.v_from_x0_eps(x, x, t, b)
        with pytest.raises(ValueError, match="^t="):
            Z.ddpm_mean_from_eps(x, x, t, b)
    with pytest.raises(ValueError, match="^betas="):
        Z.score_from_eps(x, 0, [0.1, 1.0, 0.1])
    with pytest.raises(ValueError, match="^betas="):
        Z.predict_x0_from_eps(x, x, 0, [0.0, 0.1])
