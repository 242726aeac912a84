"""Tests of ddspec.reference.forward: q(x_t | x_{t-1}), q(x_t | x_0), q(x_t | x_s) and q_sample.

Expected values come from the mpmath twin (``reference/twin/forward.py``: Ho et al. 2020, eqs. 2 and 4,
and Kingma et al. 2021, eq. 21, with literal products at 40 digits) or from closed forms (the first
step's variance is β₁; a last β of 1 forgets x entirely).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import alphas as A
from ddspec.reference import forward as F
from ddspec.reference.gaussian import Gaussian
from ddspec.reference.twin import forward as TF
from ddspec.reference.twin import ulp_error

DPS = 40
U = 2.0**-53
LINEAR = np.linspace(1e-4, 0.02, 1000)
SCALED = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2


def _abs_err(got: np.ndarray, want: list) -> np.ndarray:
    with mpmath.workdps(DPS):
        return np.array([float(abs(mpmath.mpf(g) - w)) for g, w in zip(np.ravel(got).tolist(), want)])


@pytest.mark.parametrize("betas", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_q_step_against_twin_at_every_t(betas):
    one = np.ones(1)
    errs = []
    for t in range(betas.size):
        g = F.q_step(one, t, betas)
        mean, var = TF.q_step(one, t, betas, dps=DPS)
        assert float(g.variance) == betas[t]  # β_t is a double: exact
        assert var == mpmath.mpf(betas[t])
        errs.append(ulp_error(g.mean, mean)[0])  # mean of x = 1 is the coefficient sqrt(1 − β_t)
    assert max(errs) <= 1.0


@pytest.mark.parametrize("betas", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_q_marginal_against_twin_at_every_t(betas):
    one = np.ones(1)
    e_mean, e_var = [], []
    for t in range(betas.size):
        g = F.q_marginal(one, t, betas)
        mean, var = TF.q_marginal(one, t, betas, dps=DPS)
        e_mean.append(ulp_error(g.mean, mean)[0])
        e_var.append(ulp_error(g.variance, var)[0])
    assert max(e_mean) <= 1.0 and max(e_var) <= 1.0


def test_q_marginal_first_step_is_one_step_of_the_chain():
    # ᾱ_1 = 1 − β_1: q(x_1 | x_0) = q(x_1 | x_{0}) of eq. 2, variance β_1 exactly.
    x = np.array([0.3, -1.7, 2.0])
    m = F.q_marginal(x, 0, LINEAR)
    s = F.q_step(x, 0, LINEAR)
    assert float(m.variance) == LINEAR[0] == float(s.variance)
    np.testing.assert_allclose(m.mean, s.mean, rtol=2 * U, atol=0)


@pytest.mark.parametrize("betas", [LINEAR, SCALED], ids=["linear", "scaled_linear"])
def test_q_transition_against_twin(betas):
    one = np.ones(1)
    T = betas.size
    for s_of in (lambda t: t - 1, lambda t: t - 20, lambda t: -1, lambda t: t // 2):
        e_mean, e_var = [], []
        for t in range(20, T, 7):
            s = s_of(t)
            g = F.q_transition(one, t, s, betas)
            mean, var = TF.q_transition(one, t, s, betas, dps=DPS)
            e_mean.append(ulp_error(g.mean, mean)[0])
            e_var.append(ulp_error(g.variance, var)[0])
        assert max(e_mean) <= 2.0 and max(e_var) <= 2.0


def test_q_transition_special_cases():
    x = np.array([0.5, -2.0, 1e-3])
    for t in (0, 1, 500, 999):
        # s = −1 is the marginal; s = t − 1 is one step (variance β_t exactly).
        tr, m = F.q_transition(x, t, -1, LINEAR), F.q_marginal(x, t, LINEAR)
        assert abs(float(tr.variance) - float(m.variance)) <= np.spacing(float(m.variance))
        np.testing.assert_allclose(tr.mean, m.mean, rtol=4 * U, atol=0)
        tr, st = F.q_transition(x, t, t - 1, LINEAR), F.q_step(x, t, LINEAR)
        assert float(tr.variance) == float(st.variance) == LINEAR[t]
        np.testing.assert_allclose(tr.mean, st.mean, rtol=4 * U, atol=0)


def test_transitions_compose_to_the_marginal():
    # q(x_t|x_s) ∘ q(x_s|x_0): mean coefficient sqrt(ᾱ_t/ᾱ_s)·sqrt(ᾱ_s) = sqrt(ᾱ_t) and variance
    # (ᾱ_t/ᾱ_s)(1 − ᾱ_s) + (1 − ᾱ_t/ᾱ_s) = 1 − ᾱ_t (Kingma et al. 2021, eq. 21-22).
    one = np.ones(1)
    for t, s in [(999, 500), (10, 0), (300, 299), (999, 0)]:
        ts_ = F.q_transition(one, t, s, LINEAR)
        s0 = F.q_marginal(one, s, LINEAR)
        t0 = F.q_marginal(one, t, LINEAR)
        assert abs(ts_.mean[0] * s0.mean[0] - t0.mean[0]) <= 4 * U * t0.mean[0]
        var = ts_.mean[0] ** 2 * float(s0.variance) + float(ts_.variance)
        assert abs(var - float(t0.variance)) <= 8 * U * max(float(t0.variance), ts_.mean[0] ** 2 * float(s0.variance))


def test_q_sample_against_twin():
    rng = np.random.default_rng(11)
    x0 = rng.standard_normal((2, 5))
    eps = rng.standard_normal((2, 5))
    for betas in (LINEAR, SCALED):
        for t in (0, 1, 250, 999):
            got = F.q_sample(x0, t, eps, betas)
            assert got.shape == (2, 5)
            want = TF.q_sample(x0, t, eps, betas, dps=DPS)
            sa = float(A.sqrt_alpha_bar(betas)[t])
            s1 = float(A.sqrt_one_minus_alpha_bar(betas)[t])
            # two coefficients within 1 ULP, two products and a sum
            assert np.all(_abs_err(got, want) <= 4 * U * (sa * np.abs(x0) + s1 * np.abs(eps)).ravel())


def test_q_sample_is_mean_plus_std_noise():
    rng = np.random.default_rng(12)
    x0 = rng.standard_normal(7)
    eps = rng.standard_normal(7)
    g = F.q_marginal(x0, 321, LINEAR)
    np.testing.assert_array_equal(F.q_sample(x0, 321, np.zeros(7), LINEAR), g.mean)
    np.testing.assert_allclose(F.q_sample(x0, 321, eps, LINEAR), g.mean + g.std * eps, rtol=0, atol=8 * U * 5)


def test_zero_terminal_snr_last_step_forgets_x():
    b = np.linspace(1e-4, 0.02, 20)
    b[-1] = 1.0
    x = np.array([3.0, -1.0])
    st = F.q_step(x, 19, b)
    np.testing.assert_array_equal(st.mean, [0.0, 0.0])
    assert float(st.variance) == 1.0
    m = F.q_marginal(x, 19, b)
    np.testing.assert_array_equal(m.mean, [0.0, 0.0])
    assert float(m.variance) == 1.0
    eps = np.array([0.25, -0.5])
    np.testing.assert_array_equal(F.q_sample(x, 19, eps, b), eps)
    tr = F.q_transition(x, 19, 5, b)
    assert float(tr.variance) == 1.0 and np.all(tr.mean == 0.0)


def test_results_are_gaussians_with_densities():
    g = F.q_marginal([0.0, 1.0], 10, LINEAR)
    assert isinstance(g, Gaussian)
    lp = g.log_prob([0.1, 0.9])
    assert lp.shape == (2,) and np.all(np.isfinite(lp))


# --- validation ---------------------------------------------------------------------------------------


def test_validation_names_the_argument():
    b = np.linspace(1e-4, 0.02, 10)
    x = np.zeros(3)
    for t in (10, -1, 2.0, "3"):
        with pytest.raises(ValueError, match="^t="):
            F.q_marginal(x, t, b)
    with pytest.raises(ValueError, match="^t="):
        F.q_step(x, 10, b)
    with pytest.raises(ValueError, match="^t="):
        F.q_sample(x, -1, x, b)
    with pytest.raises(ValueError, match="^s="):
        F.q_transition(x, 5, 5, b)
    with pytest.raises(ValueError, match="^s="):
        F.q_transition(x, 5, 7, b)
    with pytest.raises(ValueError, match="^s="):
        F.q_transition(x, 5, -2, b)
    with pytest.raises(ValueError, match="^x_prev="):
        F.q_step([0.0, np.nan], 1, b)
    with pytest.raises(ValueError, match="^x0="):
        F.q_marginal([np.inf], 1, b)
    with pytest.raises(ValueError, match="^x_s="):
        F.q_transition([np.nan], 3, 1, b)
    with pytest.raises(ValueError, match="^x0="):
        F.q_sample([np.nan, 0.0, 0.0], 3, x, b)
    with pytest.raises(ValueError, match="^noise="):
        F.q_sample(x, 3, np.zeros(4), b)
    with pytest.raises(ValueError, match="^noise="):
        F.q_sample(x, 3, np.zeros((1, 3)), b)  # no broadcasting
    with pytest.raises(ValueError, match="^noise="):
        F.q_sample(x, 3, [0.0, np.nan, 0.0], b)
    for bad in ([0.1, 0.0], [0.5, 1.0, 0.5], [0.1, 1.2], [np.nan], [[0.1]]):
        with pytest.raises(ValueError, match="^betas="):
            F.q_step(np.zeros(1), 0, bad)
        with pytest.raises(ValueError, match="^betas="):
            F.q_marginal(np.zeros(1), 0, bad)
        with pytest.raises(ValueError, match="^betas="):
            F.q_transition(np.zeros(1), 0, -1, bad)
        with pytest.raises(ValueError, match="^betas="):
            F.q_sample(np.zeros(1), 0, np.zeros(1), bad)
