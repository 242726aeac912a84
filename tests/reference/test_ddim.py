"""Tests of ddspec.reference.ddim: σ_t(η) (Song et al. 2021, eq. 16) and q_σ (eq. 7).

Expected values come from the mpmath twin (``reference/twin/ddim.py``: eq. 16 with its two square
roots and the quotient ᾱ_t/ᾱ_s, literally, at 40 digits), from the posterior twin (η = 1 gives the
DDPM posterior, DDIM §4.1) or from closed forms. Schedules: linear, scaled_linear and a cosine table
computed here in mpmath, at T = 10, 1000 and 4000; full (t → t − 1) and strided (every 20th index).
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import alphas as A
from ddspec.reference import ddim as D
from ddspec.reference import posterior as P
from ddspec.reference.twin import alphas as TA
from ddspec.reference.twin import ddim as TD
from ddspec.reference.twin import ulp_error

DPS = 40
U = 2.0**-53
SIZES = (10, 1000, 4000)
KINDS = ("linear", "scaled_linear", "cosine")
CASES = [(kind, size) for kind in KINDS for size in SIZES]
IDS = [f"{k}-{n}" for k, n in CASES]
ETAS = (0.5, 1.0)


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


def step_pairs(size: int, stride: int) -> list[tuple[int, int]]:
    """(t, t_prev) along every ``stride``-th index from T − 1 down; the last step goes to the data (−1)."""
    seq = list(range(size - 1, -1, -stride))
    return list(zip(seq, seq[1:] + [-1]))


@pytest.fixture(scope="module")
def sigmas():
    """σ(η) from the reference (vectorised ``ddim_sigmas``) and from the twin, for every schedule, η,
    and full/strided sequence, computed once. ``ddim_sigma`` (one step) is checked equal to it below."""
    out = {}
    for case in CASES:
        b = make_betas(*case)
        for mode, stride in (("full", 1), ("strided", 20 if b.size > 20 else 3)):
            pairs = step_pairs(b.size, stride)
            ts = np.array([t for t, _ in pairs])
            for eta in ETAS:
                got = D.ddim_sigmas(b, ts, eta)
                want = [TD.ddim_sigma(b, t, s, eta, dps=DPS) for t, s in pairs]
                out[case, mode, eta] = (b, pairs, got, want)
    return out


# --- accuracy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("mode", ["full", "strided"])
@pytest.mark.parametrize("eta", ETAS)
def test_sigma_within_8_ulp(sigmas, case, mode, eta):
    _, pairs, got, want = sigmas[case, mode, eta]
    err = ulp_error(got, want)
    assert err.max() <= 8.0, f"sigma {case} {mode} eta={eta}: worst {err.max():.2f} ULP at step {pairs[int(err.argmax())]}"


@pytest.mark.parametrize("case", [c for c in CASES if c[1] <= 1000], ids=[i for c, i in zip(CASES, IDS) if c[1] <= 1000])
def test_one_step_sigma_equals_the_vectorised_one(sigmas, case):
    # ddim_sigma and ddim_sigmas evaluate the same expression: bitwise equal, so both carry the bound.
    for mode, eta in (("full", 1.0), ("strided", 0.5), ("strided", 1.0)):
        b, pairs, got, _ = sigmas[case, mode, eta]
        one = np.array([D.ddim_sigma(b, t, s, eta) for t, s in pairs])
        np.testing.assert_array_equal(one, got)


def test_textbook_sigma_is_far_off(sigmas):
    # Eq. 16 evaluated literally on float64 ᾱ: 1 − ᾱ_t/ᾱ_{t−1} cancels (ᾱ_t/ᾱ_{t−1} = 1 − β_t with β_t ≈ 1e-4).
    b, pairs, _, want = sigmas[("linear", 1000), "full", 1.0]
    for ab in (np.cumprod(1.0 - b), A.alpha_bar(b)):
        abp = np.concatenate([[1.0], ab[:-1]])
        naive = np.sqrt((1.0 - abp) / (1.0 - ab)) * np.sqrt(1.0 - ab / abp)
        assert [t for t, _ in pairs] == list(range(999, -1, -1))
        assert ulp_error(naive[::-1], want).max() > 100.0


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eta_one_variance_is_beta_tilde(sigmas, case):
    # σ(1)² = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t−1}) = β̃_t (DDIM §4.1 / DDPM eq. 7).
    b, pairs, got, _ = sigmas[case, "full", 1.0]
    bt = P.beta_tilde(b)
    idx = np.array([t for t, _ in pairs])
    assert np.all(np.abs(got**2 - bt[idx]) <= 8 * np.spacing(bt[idx]))
    # and strided: σ(1)² is the variance of the respaced posterior
    b, pairs, got, _ = sigmas[case, "strided", 1.0]
    var = np.array([P.posterior_coefficients(b, t, s).variance for t, s in pairs])
    assert np.all(np.abs(got**2 - var) <= 8 * np.spacing(var))


@pytest.mark.parametrize("case", [("linear", 1000), ("cosine", 1000)], ids=["linear", "cosine"])
def test_sigma_max_and_mean_coefficients_against_twin(case):
    b = make_betas(*case)
    for t, s in [(999, 979), (500, 499), (1, 0), (0, -1), (20, -1)]:
        assert ulp_error(D.ddim_sigma_max(b, t, s), TD.ddim_sigma_max(b, t, s, dps=DPS))[0] <= 2.0
        for eta in (0.0, 0.5, 1.0):
            # exact for the given double σ: sqrt(1 − ᾱ_s − σ²). With η = 1 at the cosine schedule's
            # last strided step σ² ≈ 1 − ᾱ_s, so a float64 difference would cancel (~5e4 ULP).
            sigma = D.ddim_sigma(b, t, s, eta)
            c_x0, c_eps = D.ddim_mean_coefficients(b, t, s, sigma)
            with mpmath.workdps(DPS):
                ab_s = TA.alpha_bar_at(b, s, dps=DPS)
                assert ulp_error(c_x0, mpmath.sqrt(ab_s))[0] <= 2.0
                assert ulp_error(c_eps, mpmath.sqrt(1 - ab_s - mpmath.mpf(sigma) ** 2))[0] <= 2.0, (t, s, eta)


# --- closed forms and identities ----------------------------------------------------------------------


def test_special_sigmas_are_exactly_zero():
    b = np.linspace(1e-4, 0.02, 100)
    assert D.ddim_sigma(b, 50, 49, 0.0) == 0.0  # η = 0: deterministic DDIM
    assert D.ddim_sigma(b, 50, -1, 1.0) == 0.0  # to the data: 1 − ᾱ_s = 0
    assert D.ddim_sigma(b, 0, -1, 1.0) == 0.0
    assert D.ddim_sigma(b, 0, 0, 1.0) == 0.0  # t_prev = t (set_alpha_to_one=False's last step): ratio 1
    assert D.ddim_sigma_max(b, 5, -1) == 0.0


def test_eta_above_one_while_admissible():
    # σ(η) = η σ(1); at t = 500 of the linear schedule σ(1)² = β̃ ≈ 0.01, far below 1 − ᾱ_{499} ≈ 0.92.
    b = np.linspace(1e-4, 0.02, 1000)
    with mpmath.workdps(DPS):
        want = 1.5 * TD.ddim_sigma(b, 500, 499, 1.0, dps=DPS)
    assert ulp_error(D.ddim_sigma(b, 500, 499, 1.5), want)[0] <= 8.0


def test_q_sigma_with_eta_one_is_the_posterior():
    b = np.linspace(1e-4, 0.02, 1000)
    rng = np.random.default_rng(3)
    x0 = rng.standard_normal(16)
    xt = rng.standard_normal(16)
    for t, s in [(999, 998), (500, 499), (1, 0), (0, -1), (999, 979), (100, 40), (60, -1)]:
        sigma = D.ddim_sigma(b, t, s, 1.0)
        qs = D.q_sigma(x0, xt, t, s, sigma, b)
        qp = P.q_posterior(x0, xt, t, b, s)
        # Both means are a few roundings of terms of size ≲ |x0| + |x_t|; the direction term of eq. 7
        # has coefficient sqrt(1 − ᾱ_s − σ²)/sqrt(1 − ᾱ_t) ≤ 1.
        tol = 64 * U * (np.abs(x0) + np.abs(xt))
        assert np.all(np.abs(qs.mean - qp.mean) <= tol), (t, s)
        assert abs(float(qs.variance) - float(qp.variance)) <= 8 * np.spacing(float(qp.variance)) + 1e-300


def test_q_sigma_against_twin():
    b = make_betas("cosine", 1000)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(8)
    xt = rng.standard_normal(8)
    for t, s in [(999, 979), (500, 499), (2, 1), (1, 0), (0, -1)]:
        for eta in (0.0, 0.5, 1.0):
            sigma = D.ddim_sigma(b, t, s, eta)
            qs = D.q_sigma(x0, xt, t, s, sigma, b)
            want = TD.q_sigma_mean(x0, xt, t, s, sigma, b, dps=DPS)
            with mpmath.workdps(DPS):
                err = np.array([float(abs(mpmath.mpf(g) - w)) for g, w in zip(qs.mean.tolist(), want)])
            assert np.all(err <= 16 * U * (np.abs(x0) + np.abs(xt))), (t, s, eta)
            assert float(qs.variance) == float(TD.q_sigma_variance(sigma, dps=DPS))  # σ² of a double, rounded once


def test_q_sigma_marginal_is_preserved():
    # DDIM Lemma 1: if x_t ~ q(x_t|x0) then x_s ~ q(x_s|x0) under q_σ for every admissible σ. With
    # x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε, the q_σ mean is sqrt(ᾱ_s) x0 + sqrt(1 − ᾱ_s − σ²) ε, whose
    # variance over ε plus σ² is 1 − ᾱ_s: check the coefficient identity c_eps² + σ² = 1 − ᾱ_s.
    b = make_betas("scaled_linear", 1000)
    for t, s in [(999, 979), (10, 9), (300, -1)]:
        for eta in (0.0, 0.3, 1.0):
            sigma = D.ddim_sigma(b, t, s, eta)
            c_x0, c_eps = D.ddim_mean_coefficients(b, t, s, sigma)
            c_s = float(A.one_minus_alpha_bar_at(b, s))
            assert abs(c_eps**2 + sigma**2 - c_s) <= 8 * U * max(c_s, 1e-300)


# --- validation ---------------------------------------------------------------------------------------


def test_validation_names_the_argument():
    b = np.linspace(1e-4, 0.02, 100)
    x = np.zeros(3)
    with pytest.raises(ValueError, match="^eta="):
        D.ddim_sigma(b, 50, 49, -0.1)
    with pytest.raises(ValueError, match="^eta="):
        D.ddim_sigma(b, 50, 49, float("nan"))
    with pytest.raises(ValueError, match="^eta=.*not admissible"):
        D.ddim_sigma(b, 50, 49, 1e3)  # σ² ≈ 1e6 β̃ > 1 − ᾱ_s
    with pytest.raises(ValueError, match="^eta=.*not admissible"):
        D.ddim_sigma(b, 1, 0, 1.5)  # σ(1)² = β_1β_2/(1 − ᾱ_2) ≈ 0.75 β_1, so 2.25 σ(1)² > β_1 = 1 − ᾱ_s
    with pytest.raises(ValueError, match="^t_prev="):
        D.ddim_sigma(b, 50, 51, 0.5)
    with pytest.raises(ValueError, match="^t_prev="):
        D.ddim_sigma(b, 50, -2, 0.5)
    with pytest.raises(ValueError, match="^t="):
        D.ddim_sigma(b, 100, 50, 0.5)
    with pytest.raises(ValueError, match="^sigma="):
        D.q_sigma(x, x, 50, 49, 1.0, b)  # σ² = 1 > 1 − ᾱ_49
    with pytest.raises(ValueError, match="^sigma="):
        D.ddim_mean_coefficients(b, 50, 49, -0.01)
    with pytest.raises(ValueError, match="^x0="):
        D.q_sigma(np.zeros(4), x, 50, 49, 0.0, b)
    with pytest.raises(ValueError, match="^x_t="):
        D.q_sigma(x, [0.0, np.nan, 0.0], 50, 49, 0.0, b)
    with pytest.raises(ValueError, match="^betas="):
        D.ddim_sigma([0.1, 1.0, 0.1], 2, 1, 0.5)
    with pytest.raises(ValueError, match="^betas="):
        D.q_sigma(x, x, 1, 0, 0.0, [0.1, -0.1])


@pytest.mark.parametrize("t,t_prev", [(999, 979), (600, 300), (20, 0), (5, -1), (0, -1), (0, 0)])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_direction_coefficient_against_twin(t: int, t_prev: int, eta: float) -> None:
    """sqrt(1 − ᾱ_s − σ(η)²) (DDIM eq. 12 with eq. 16) from η directly is within 4 ULP of the twin."""
    import mpmath

    from ddspec.reference.twin import alphas as t_alphas
    from ddspec.reference.twin import ddim as t_ddim

    betas = np.linspace(1e-4, 0.02, 1000)
    got = D.ddim_direction_coefficient(betas, t, t_prev, eta)
    with mpmath.workdps(40):
        c_s = 1 - (mpmath.mpf(1) if t_prev < 0 else t_alphas.alpha_bar_at(betas, t_prev, dps=40))
        sig = t_ddim.ddim_sigma(betas, t, t_prev, eta, dps=40) if t_prev < t else mpmath.mpf(0)
        exact = mpmath.sqrt(c_s - sig**2)
    assert ulp_error([got], [exact])[0] <= 4.0


def test_t_prev_equal_to_t_only_for_the_step_0_to_0() -> None:
    """t_prev == t is the ᾱ_0-variant final step (0 → 0) only; elsewhere it is an error naming t_prev."""
    betas = np.linspace(1e-4, 0.02, 1000)
    assert D.ddim_sigma(betas, 0, 0, 1.0) == 0.0
    with pytest.raises(ValueError, match="t_prev"):
        D.ddim_sigma(betas, 5, 5, 0.5)


# ---------------------------------------------------------------------------------------------------
# DDIM's forward process (eq. 8), Theorem 1's γ, the ODE in σ-space (eqs. 13–14)
# ---------------------------------------------------------------------------------------------------

_SMALL = np.array([0.1, 0.2, 0.5])  # ᾱ = 0.9, 0.72, 0.36: hand-checkable


def test_forward_gamma_and_ode_closed_forms() -> None:
    """Hand values on β = [0.1, 0.2, 0.5] (ᾱ = 0.9, 0.72, 0.36), t = 2, s = 0.

    q_σ(x_2 | x_0-index, x0) at σ = 0: variance 0, gain √(0.64)·√(0.1)/0.1 = 0.8/√0.1 … the mean is
    √ᾱ_t x0 + √(1 − ᾱ_t)√(1 − ᾱ_s)/(1 − ᾱ_s)(x_s − √ᾱ_s x0) = 0.6 x0 + (0.8/√0.1)(x_s − √0.9 x0).
    γ at σ² = 0.05: (√(0.64·0.9/0.36) − √(0.05))²/(2·0.05) = (√1.6 − √0.05)²/0.1.
    ODE σ: √(0.64/0.36) = 4/3 at t = 2, 0 at t = −1.
    """
    g = D.q_sigma_forward(np.array([1.0]), np.array([0.0]), 2, 0, 0.0, _SMALL)
    assert float(g.variance) == 0.0
    assert abs(g.mean[0] - 0.8 / np.sqrt(0.1)) <= 8 * U * 0.8 / np.sqrt(0.1)
    g0 = D.q_sigma_forward(np.array([0.0]), np.array([1.0]), 2, 0, 0.0, _SMALL)
    assert abs(g0.mean[0] - (0.6 - 0.8 / np.sqrt(0.1) * np.sqrt(0.9))) <= 16 * U * 3.0
    sigma = float(np.sqrt(0.05))
    want = (np.sqrt(1.6) - np.sqrt(0.1 - 0.05)) ** 2 / (2 * 0.05)
    assert abs(D.ddim_gamma_weight(_SMALL, 2, 0, sigma) - want) <= 1e-13 * want
    assert abs(float(D.ode_sigma(_SMALL, 2)) - 4.0 / 3.0) <= 4 * U * 4 / 3
    assert float(D.ode_sigma(_SMALL, -1)) == 0.0
    np.testing.assert_array_equal(D.ddim_ode_step([1.0, 2.0], [0.5, -1.0], 1.5, 0.5), [0.5, 3.0])


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: D.q_sigma_forward([0.0], [0.0], 2, -1, 0.0, _SMALL), "t_prev"),
        (lambda: D.q_sigma_forward([0.0], [0.0], 0, 0, 0.0, _SMALL), "t"),
        (lambda: D.q_sigma_forward([0.0], [0.0, 1.0], 2, 1, 0.0, _SMALL), "x0"),
        (lambda: D.q_sigma_forward([0.0], [0.0], 2, 0, 0.5, _SMALL), "sigma"),
        (lambda: D.ddim_gamma_weight(_SMALL, 2, 0, 0.0), "sigma"),
        (lambda: D.ddim_gamma_weight(_SMALL, 2, 2, 0.1), "t_prev"),
        (lambda: D.ode_sigma(np.array([0.1, 1.0]), 1), "t"),
        (lambda: D.ddim_ode_step([1.0], [1.0], -1.0, 0.5), "sigma_from"),
        (lambda: D.ddim_ode_step([1.0], [1.0, 2.0], 1.0, 0.5), "eps"),
    ],
)
def test_new_ddim_functions_name_bad_arguments(call, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}="):
        call()


def _variance_sigma2(x_prev, x0, t, t_prev, sigma, betas):  # forgets the (1 − ᾱ_t)/(1 − ᾱ_s) factor
    g = _TRUE_FORWARD(x_prev, x0, t, t_prev, sigma, betas)
    return type(g)(g.mean, np.float64(float(sigma) ** 2))


_TRUE_FORWARD = D.q_sigma_forward


@pytest.mark.parametrize(
    "name, bug, prop",
    [
        ("q_sigma_forward", _variance_sigma2, "test_ddim_forward_and_q_sigma_are_one_joint_law"),
        ("q_sigma_forward", _variance_sigma2, "test_ddim_forward_at_eta_one_is_the_ddpm_forward"),
        ("ddim_gamma_weight", lambda betas, t, t_prev, sigma: 2.0 * _TRUE_GAMMA(betas, t, t_prev, sigma),
         "test_gamma_at_eta_one_is_the_ddpm_eps_weight"),
        ("ddim_ode_step", lambda x_bar, eps, sigma_from, sigma_to: _TRUE_ODE(x_bar, eps, sigma_to, sigma_from),
         "test_ode_euler_step_is_the_deterministic_ddim_step"),
        ("ode_sigma", lambda betas, t: np.sqrt(A.one_minus_alpha_bar_at(betas, t)),
         "test_ode_euler_step_is_the_deterministic_ddim_step"),
    ],
)
def test_each_new_ddim_property_catches_a_planted_bug(monkeypatch: pytest.MonkeyPatch, name: str, bug, prop: str) -> None:
    """Each planted slip (a missing variance factor, γ without its ½, the σ difference reversed, the VP σ
    √(1 − ᾱ) for the VE σ √((1 − ᾱ)/ᾱ)) fails its property."""
    from tests.properties import test_ddim_properties as props

    monkeypatch.setattr(D, name, bug)
    with pytest.raises(AssertionError):
        run_quickly(getattr(props, prop))


from tests.reference.test_ncsn import run_quickly  # noqa: E402

_TRUE_GAMMA = D.ddim_gamma_weight
_TRUE_ODE = D.ddim_ode_step


def test_gamma_weight_of_a_subnormal_sigma_is_a_clear_error() -> None:
    # 2 sigma^2 den^2 underflows to 0 for sigma = 5e-324: the weight is +inf in exact arithmetic's limit, so the
    # function must name sigma in a ValueError, not raise ZeroDivisionError (found by the hostile-input property)
    b = np.linspace(1e-4, 0.02, 1000)
    with pytest.raises(ValueError, match=r"sigma=5e-324"):
        D.ddim_gamma_weight(b, 500, 400, 5e-324)
