"""Tests of ddspec.reference.posterior: q(x_{t-1} | x_t, x_0) of Ho et al. 2020, eq. 7.

Expected values come from the mpmath twin (``reference/twin/posterior.py``, eq. 7 evaluated literally
at 40 digits) or from closed forms at the first step. Schedules as in ``test_alphas.py``: linear,
scaled_linear and a cosine table computed here in mpmath, at T = 10, 1000 and 4000.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError
from ddspec.reference import alphas as A
from ddspec.reference import posterior as P
from ddspec.reference.twin import posterior as TP
from ddspec.reference.twin import ulp_error

DPS = 40
U = 2.0**-53
SIZES = (10, 1000, 4000)
KINDS = ("linear", "scaled_linear", "cosine")
CASES = [(kind, size) for kind in KINDS for size in SIZES]
IDS = [f"{k}-{n}" for k, n in CASES]
TABLES = ("posterior_mean_coef1", "posterior_mean_coef2", "beta_tilde")


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta), ᾱ(u) = cos²((u+s)/(1+s)·π/2) (Nichol & Dhariwal 2021), in mpmath."""
    with mpmath.workdps(DPS):
        off = mpmath.mpf(s)

        def abar(i: int) -> mpmath.mpf:
            return mpmath.cos((mpmath.mpf(i) / num_timesteps + off) / (1 + off) * mpmath.pi / 2) ** 2

        return np.array([float(min(1 - abar(i + 1) / abar(i), mpmath.mpf(max_beta))) for i in range(num_timesteps)])


def make_betas(kind: str, size: int) -> np.ndarray:
    if kind == "linear":
        return np.linspace(1e-4, 0.02, size)
    if kind == "scaled_linear":
        return np.linspace(0.00085**0.5, 0.012**0.5, size) ** 2
    return cosine_betas(size)


def strided_pairs(size: int, stride: int = 20) -> list[tuple[int, int]]:
    """(t, t_prev) along every ``stride``-th index from T − 1 down, the last step going to the data."""
    seq = list(range(size - 1, -1, -stride))
    return list(zip(seq, seq[1:] + [-1]))


@pytest.fixture(scope="module")
def schedules() -> dict[tuple[str, int], np.ndarray]:
    return {case: make_betas(*case) for case in CASES}


@pytest.fixture(scope="module")
def twins(schedules):
    names = TABLES + ("posterior_log_variance_clipped",)
    return {case: {name: getattr(TP, name)(b, dps=DPS) for name in names} for case, b in schedules.items()}


# --- accuracy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("name", TABLES)
def test_coefficient_tables_within_8_ulp(schedules, twins, case, name):
    err = ulp_error(getattr(P, name)(schedules[case]), twins[case][name])
    assert err.max() <= 8.0, f"{name} {case}: worst {err.max():.2f} ULP at index {int(err.argmax())}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_clipped_log_variance_within_8_ulp(schedules, twins, case):
    # Including where β̃ ≈ 1 (the cosine schedule's capped last step, log β̃ ≈ −1e-3), where the log of
    # a rounded β̃ would be off by ~300 ULP.
    err = ulp_error(P.posterior_log_variance_clipped(schedules[case]), twins[case]["posterior_log_variance_clipped"])
    assert err.max() <= 8.0, f"{case}: worst {err.max():.2f} ULP at index {int(err.argmax())}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_strided_posterior_coefficients_within_8_ulp(schedules, case):
    b = schedules[case]
    stride = 20 if b.size > 20 else 3
    errs = {"coef_x0": [], "coef_xt": [], "variance": []}
    for t, s in strided_pairs(b.size, stride):
        got = P.posterior_coefficients(b, t, s)
        want = TP.posterior_coefficients(b, t, s, dps=DPS)
        for name in errs:
            errs[name].append(ulp_error(getattr(got, name), getattr(want, name))[0])
    for name, e in errs.items():
        assert max(e) <= 8.0, f"{name} {case}: worst {max(e):.2f} ULP"


def test_default_t_prev_matches_tables(schedules, twins):
    # posterior_coefficients(b, t) takes a different code path (ratio forms) from the tables.
    b = schedules[("linear", 1000)]
    for t in range(0, 1000, 7):
        pc = P.posterior_coefficients(b, t)
        assert ulp_error(pc.coef_x0, twins[("linear", 1000)]["posterior_mean_coef1"][t])[0] <= 8.0
        assert ulp_error(pc.coef_xt, twins[("linear", 1000)]["posterior_mean_coef2"][t])[0] <= 8.0
        assert ulp_error(pc.variance, twins[("linear", 1000)]["beta_tilde"][t])[0] <= 8.0


# --- closed forms at the first step and identities ----------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_first_step_is_the_point_mass_at_x0(schedules, case):
    # ᾱ_0 = 1 and 1 − ᾱ_1 = β_1: coef1 = β_1/β_1 = 1, coef2 = 0, β̃_1 = 0 exactly.
    b = schedules[case]
    assert P.posterior_mean_coef1(b)[0] == 1.0
    assert P.posterior_mean_coef2(b)[0] == 0.0
    assert P.beta_tilde(b)[0] == 0.0
    pc = P.posterior_coefficients(b, 0)
    assert (pc.coef_x0, pc.coef_xt, pc.variance) == (1.0, 0.0, 0.0)
    lv = P.posterior_log_variance_clipped(b)
    assert lv[0] == lv[1]
    np.testing.assert_array_equal(P.posterior_variance(b), P.beta_tilde(b))


def test_step_to_the_data_from_any_t():
    # t_prev = −1: ᾱ_s = 1, so β' = 1 − ᾱ_t and c_x0 = (1 − ᾱ_t)/(1 − ᾱ_t) = 1, c_xt = 0, β̃ = 0.
    b = np.linspace(1e-4, 0.02, 1000)
    for t in (0, 1, 17, 500, 999):
        pc = P.posterior_coefficients(b, t, -1)
        assert abs(pc.coef_x0 - 1.0) <= 2 * U
        assert pc.coef_xt == 0.0 and pc.variance == 0.0


def test_beta_tilde_is_below_beta():
    # (1 − ᾱ_{t−1})/(1 − ᾱ_t) < 1 for t ≥ 2, so β̃_t < β_t (Ho et al. 2020, §3.2).
    b = np.linspace(1e-4, 0.02, 1000)
    bt = P.beta_tilde(b)
    assert np.all(bt[1:] < b[1:])
    assert np.all(bt[1:] > 0)


def test_zero_terminal_snr_schedule():
    # With β_T = 1: 1 − ᾱ_T = 1, so β̃_T = 1 − ᾱ_{T−1}, coef1_T = sqrt(ᾱ_{T−1}), coef2_T = 0.
    b = np.linspace(1e-4, 0.02, 30)
    b[-1] = 1.0
    for name in TABLES:
        assert ulp_error(getattr(P, name)(b), getattr(TP, name)(b, dps=DPS)).max() <= 8.0
    assert P.posterior_mean_coef2(b)[-1] == 0.0


def test_q_posterior_against_twin():
    b = np.linspace(1e-4, 0.02, 1000)
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((3, 4))
    xt = rng.standard_normal((3, 4))
    for t, s in [(0, None), (1, None), (500, None), (999, None), (999, 979), (40, -1)]:
        g = P.q_posterior(x0, xt, t, b, s)
        pc = TP.posterior_coefficients(b, t, s, dps=DPS)
        want = TP.posterior_mean(x0, xt, t, b, s, dps=DPS)
        # two rounded coefficients (≤ 8 ULP each), two products and a sum
        scale = float(abs(pc.coef_x0)) * np.abs(x0) + float(abs(pc.coef_xt)) * np.abs(xt)
        with mpmath.workdps(DPS):
            err = np.array([float(abs(mpmath.mpf(a) - w)) for a, w in zip(g.mean.ravel().tolist(), want)])
        assert np.all(err <= 20 * U * scale.ravel())
        assert ulp_error(g.variance, pc.variance)[0] <= 8.0
        assert g.mean.shape == (3, 4)
        np.testing.assert_array_equal(P.posterior_mean(x0, xt, t, b, s), g.mean)


# --- validation ---------------------------------------------------------------------------------------


def test_validation_names_the_argument():
    b = np.linspace(1e-4, 0.02, 10)
    x = np.zeros(3)
    with pytest.raises(ValueError, match="^t="):
        P.posterior_coefficients(b, 10)
    with pytest.raises(ValueError, match="^t="):
        P.posterior_coefficients(b, -1)
    with pytest.raises(ValueError, match="^t_prev="):
        P.posterior_coefficients(b, 5, 5)
    with pytest.raises(ValueError, match="^t_prev="):
        P.posterior_coefficients(b, 5, 7)
    with pytest.raises(ValueError, match="^t_prev="):
        P.posterior_coefficients(b, 5, -2)
    with pytest.raises(ValueError, match="^x0="):
        P.q_posterior(np.zeros(4), x, 3, b)
    with pytest.raises(ValueError, match="^x0="):
        P.posterior_mean([0.0, np.nan, 0.0], x, 3, b)
    with pytest.raises(ValueError, match="^x_t="):
        P.q_posterior(x, [0.0, 0.0, np.inf], 3, b)
    for bad in ([0.1, 0.0], [0.5, 1.0, 0.5], [0.1, 1.2], [0.1, np.nan]):
        for f in (P.beta_tilde, P.posterior_mean_coef1, P.posterior_mean_coef2, P.posterior_log_variance_clipped):
            with pytest.raises(ValueError, match="^betas="):
                f(bad)
        with pytest.raises(ValueError, match="^betas="):
            P.posterior_coefficients(bad, 1)


def test_clipped_log_variance_needs_two_steps():
    with pytest.raises(SingularError, match="T = 1"):
        P.posterior_log_variance_clipped([0.01])


def test_tables_agree_with_alpha_tables():
    # β̃_t (1 − ᾱ_t) = (1 − ᾱ_{t−1}) β_t, checked to a few ULP of the products.
    b = np.linspace(1e-4, 0.02, 1000)
    lhs = P.beta_tilde(b) * A.one_minus_alpha_bar(b)
    rhs = np.concatenate([[0.0], A.one_minus_alpha_bar(b)[:-1]]) * b
    np.testing.assert_allclose(lhs, rhs, rtol=8 * U, atol=0)
