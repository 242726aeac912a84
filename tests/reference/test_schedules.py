r"""Tests of :mod:`ddspec.reference.schedules` against its mpmath twin, closed forms and paper values.

Accuracy is measured in ULP against the exact value of each formula for the given float64 inputs
(the twin, ``ddspec.reference.twin.schedules``, at 50 digits; 30 digits for cosine at T = 100000),
at every index. Worst errors measured when these tests were written (x86-64, glibc ``sin``):

- linear, T = 10 / 1000 / 4000: 0.48 / 0.50 / 0.50
- scaled_linear, T = 10 / 1000 / 4000: 0.43 / 0.50 / 0.50
- cosine, T = 10 / 1000 / 4000 / 100000: 1.49 / 2.25 / 2.74 / 3.88
- improved_linear, quad, jsd, warmup10, warmup50, const (T = 1000): ≤ 0.50
- sigmoid (T = 1000): 1.75
- rescale_zero_terminal_snr of scaled_linear / linear / cosine (T = 1000): 1.90 / 2.12 / 2.06
- the textbook cosine 1 − f(t)/f(t−1) in float64 (T = 1000): ~2.8e4

The tests assert ≤ 8 ULP everywhere (the textbook form must be off by more than 1000).
"""

from __future__ import annotations

from functools import lru_cache

import mpmath
import numpy as np
import pytest

from ddspec.reference import alphas
from ddspec.reference import schedules as S
from ddspec.reference.twin import schedules as TW

MAX_ULP = 8.0


def ulp_errors(approx: np.ndarray, exact: list) -> np.ndarray:
    """|approx − exact| / ulp(exact) per element; exact values are mpmath numbers."""
    approx = np.asarray(approx, dtype=np.float64)
    assert approx.shape == (len(exact),)
    out = np.empty(len(exact))
    for k, (a, e) in enumerate(zip(approx.tolist(), exact)):
        out[k] = float(abs(mpmath.mpf(a) - e) / np.spacing(abs(float(e))))
    return out


def worst(approx: np.ndarray, exact: list, label: str) -> float:
    err = ulp_errors(approx, exact)
    i = int(np.argmax(err))
    print(f"{label}: worst {err[i]:.3f} ULP at i={i}, mean {err.mean():.3f}")
    return float(err[i])


# The twin, keyed by schedule name (default parameters), cached across tests.
_TWIN = {
    "linear": lambda T, dps: TW.linear_betas(T, dps=dps),
    "improved_linear": lambda T, dps: TW.improved_linear_betas(T, dps=dps),
    "scaled_linear": lambda T, dps: TW.scaled_linear_betas(T, dps=dps),
    "cosine": lambda T, dps: TW.cosine_betas(T, dps=dps),
    "sigmoid": lambda T, dps: TW.sigmoid_betas(T, dps=dps),
    "quad": lambda T, dps: TW.quad_betas(T, dps=dps),
    "const": lambda T, dps: TW.const_betas(T, dps=dps),
    "jsd": lambda T, dps: TW.jsd_betas(T, dps=dps),
    "warmup10": lambda T, dps: TW.warmup_betas(T, 0.1, dps=dps),
    "warmup50": lambda T, dps: TW.warmup_betas(T, 0.5, dps=dps),
}


@lru_cache(maxsize=None)
def twin(name: str, T: int, dps: int = 50) -> tuple:
    return tuple(_TWIN[name](T, dps))


def cosine_f(u: mpmath.mpf, s: float = 0.008) -> mpmath.mpf:
    """ᾱ(u) = cos²((u + s)/(1 + s) · π/2), Nichol & Dhariwal 2021 eq. 17 (current mp precision)."""
    s_ = mpmath.mpf(s)
    return mpmath.cos((u + s_) / (1 + s_) * mpmath.pi / 2) ** 2


# ------------------------------------------------------------------------------------------------
# ULP accuracy against the twin, at every index
# ------------------------------------------------------------------------------------------------

ULP_CASES = [(name, T) for name in ("linear", "scaled_linear", "cosine") for T in (10, 1000, 4000)] + [
    (name, 1000)
    for name in ("improved_linear", "sigmoid", "quad", "jsd", "warmup10", "warmup50", "const")
]


@pytest.mark.parametrize(("name", "T"), ULP_CASES)
def test_ulp_accuracy_against_twin(name: str, T: int) -> None:
    betas = S.get_betas(name, T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert worst(betas, list(twin(name, T)), f"{name} T={T}") <= MAX_ULP


def test_cosine_ulp_accuracy_at_T_100000() -> None:
    T = 100_000
    betas = S.cosine_betas(T)
    exact = TW.cosine_betas(T, dps=30)  # cancellation costs ≤ 7 digits; 23 are left
    assert worst(betas, exact, f"cosine T={T}") <= MAX_ULP


@pytest.mark.parametrize("name", ["scaled_linear", "linear", "cosine"])
def test_rescale_zero_terminal_snr_ulp_accuracy(name: str) -> None:
    betas = S.get_betas(name, 1000)
    rescaled = S.rescale_zero_terminal_snr(betas)
    exact = TW.rescale_zero_terminal_snr(betas)
    assert worst(rescaled, exact, f"rescale_zero_terminal_snr({name} 1000)") <= MAX_ULP


def test_textbook_cosine_formula_cancels() -> None:
    """1 − f(t)/f(t−1) in float64 is off by > 10³ ULP at T = 1000; the rewrite is not."""
    T, s = 1000, 0.008
    u = np.arange(T + 1) / T
    f = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    textbook = np.minimum(1.0 - f[1:] / f[:-1], 0.999)
    exact = list(twin("cosine", T))
    assert worst(textbook, exact, "textbook cosine T=1000") > 1e3
    # the generic discretisation is the same textbook form
    generic = S.betas_for_alpha_bar(lambda x: np.cos((x + s) / (1 + s) * np.pi / 2) ** 2, T)
    assert worst(generic, exact, "betas_for_alpha_bar(cosine) T=1000") > 1e3
    np.testing.assert_allclose(generic, S.cosine_betas(T), rtol=1e-9)


@pytest.mark.parametrize("T", [1, 2, 7])
def test_small_T_against_twin(T: int) -> None:
    cases = [
        (S.linear_betas(T), TW.linear_betas(T)),
        (S.scaled_linear_betas(T), TW.scaled_linear_betas(T)),
        (S.cosine_betas(T), TW.cosine_betas(T)),
        (S.sigmoid_betas(T), TW.sigmoid_betas(T)),
        (S.jsd_betas(T), TW.jsd_betas(T)),
        (S.warmup_betas(T, 0.5), TW.warmup_betas(T, 0.5)),
    ]
    for got, exact in cases:
        assert np.max(ulp_errors(got, exact)) <= MAX_ULP


def test_non_default_parameters_against_twin() -> None:
    T = 300
    cases = [
        (S.linear_betas(T, 3e-5, 0.05), TW.linear_betas(T, 3e-5, 0.05)),
        (S.quad_betas(T, 2e-4, 0.03), TW.quad_betas(T, 2e-4, 0.03)),
        (S.cosine_betas(T, s=0.0, max_beta=0.9), TW.cosine_betas(T, s=0.0, max_beta=0.9)),
        (S.cosine_betas(T, s=0.3, max_beta=1.0), TW.cosine_betas(T, s=0.3, max_beta=1.0)),
        (S.sigmoid_betas(T, 1e-3, 0.1, -3.0, 5.0), TW.sigmoid_betas(T, 1e-3, 0.1, -3.0, 5.0)),
        (S.warmup_betas(T, 0.37, 1e-3, 0.04), TW.warmup_betas(T, 0.37, 1e-3, 0.04)),
        (S.improved_linear_betas(4000), TW.improved_linear_betas(4000)),
    ]
    for got, exact in cases:
        assert np.max(ulp_errors(got, exact)) <= MAX_ULP


# ------------------------------------------------------------------------------------------------
# Paper values
# ------------------------------------------------------------------------------------------------


def test_linear_terminal_signal_ho_et_al() -> None:
    """Ho et al. 2020 linear schedule, T = 1000: sqrt(ᾱ_T) = 0.00635 (3 significant figures)."""
    r_T = alphas.sqrt_alpha_bar(S.linear_betas(1000))[-1]
    assert abs(r_T - 0.00635) <= 0.000005


# SD's terminal SNR (Lin et al. 2023, §3.1) is in tests/reference/test_worked_examples.py.


def test_cosine_only_last_beta_is_capped_at_T_1000() -> None:
    T = 1000
    betas = S.cosine_betas(T)
    assert betas[-1] == 0.999
    assert np.all(betas[:-1] < 0.999)
    # the uncapped exact schedule: only the last β (which is 1, as ᾱ(1) = 0) reaches 0.999
    uncapped = TW.cosine_betas(T, max_beta=1.0)
    assert [i for i, b in enumerate(uncapped) if b >= mpmath.mpf(0.999)] == [T - 1]
    assert abs(uncapped[-1] - 1) < mpmath.mpf(10) ** -40
    # with max_beta = 1 the float64 schedule ends at exactly 1 (ᾱ_T = 0)
    assert S.cosine_betas(T, max_beta=1.0)[-1] == 1.0
    assert alphas.alpha_bar(S.cosine_betas(T, max_beta=1.0))[-1] == 0.0


def test_cosine_terminal_signal() -> None:
    """sqrt(ᾱ_T) ≈ 4.9e-5 at T = 1000: ᾱ_T = f((T−1)/T)/f(0) · (1 − 0.999), derived with mpmath."""
    T = 1000
    with mpmath.workdps(40):
        exact = mpmath.sqrt(cosine_f(mpmath.mpf(T - 1) / T) / cosine_f(mpmath.mpf(0)) * (1 - mpmath.mpf(0.999)))
    r_T = alphas.sqrt_alpha_bar(S.cosine_betas(T))[-1]
    assert abs(r_T - exact) <= 1e-12 * exact
    assert round(float(exact), 6) == 4.9e-5


def test_cosine_alpha_bar_closed_form() -> None:
    """Where the cap is inactive, ᾱ_t = ∏(1 − β) telescopes to f(t/T)/f(0)."""
    T = 1000
    ab = alphas.alpha_bar(S.cosine_betas(T))
    with mpmath.workdps(40):
        f0 = cosine_f(mpmath.mpf(0))
        exact = [cosine_f(mpmath.mpf(k + 1) / T) / f0 for k in range(T - 1)]
    # each ᾱ is a product of up to 999 factors with a few ULP each: allow a relative 1e-14
    rel = np.array([float(abs(a - e) / e) for a, e in zip(ab[:-1].tolist(), exact)])
    print(f"cosine alpha_bar closed form: worst relative error {rel.max():.3g}")
    assert rel.max() <= 1e-14


# ------------------------------------------------------------------------------------------------
# Zero terminal SNR
# ------------------------------------------------------------------------------------------------


def test_zero_terminal_snr_properties() -> None:
    betas = S.scaled_linear_betas(1000)
    rescaled = S.rescale_zero_terminal_snr(betas)
    assert rescaled.dtype == np.float64 and rescaled.shape == betas.shape
    assert rescaled[-1] == 1.0
    assert alphas.alpha_bar(rescaled)[-1] == 0.0
    assert alphas.snr(rescaled)[-1] == 0.0
    r_old, r_new = alphas.sqrt_alpha_bar(betas), alphas.sqrt_alpha_bar(rescaled)
    assert abs(r_new[0] - r_old[0]) <= 2 * np.spacing(r_old[0])  # sqrt(ᾱ_1) unchanged
    # r' is the affine map (r − r_T)·r_1/(r_1 − r_T) of r (Lin et al. 2023, Algorithm 1)
    with mpmath.workdps(40):
        ab = mpmath.mpf(1)
        r = []
        for b in betas.tolist():
            ab *= 1 - mpmath.mpf(b)
            r.append(mpmath.sqrt(ab))
        expected = [(x - r[-1]) * r[0] / (r[0] - r[-1]) for x in r]
    err = ulp_errors(r_new[:-1], expected[:-1])
    assert err.max() <= MAX_ULP
    # the rescaled schedule has lower SNR at every step after the first
    assert np.all(alphas.alpha_bar(rescaled)[1:] < alphas.alpha_bar(betas)[1:])


def test_zero_terminal_snr_small_and_already_zero() -> None:
    b = np.array([0.1, 0.2])
    assert np.array_equal(S.rescale_zero_terminal_snr(b), [0.1, 1.0])
    # a schedule that already ends at ᾱ_T = 0 is left unchanged (r_T = 0 → r' = r)
    jsd = S.jsd_betas(50)
    np.testing.assert_allclose(S.rescale_zero_terminal_snr(jsd), jsd, rtol=1e-15, atol=0)


# ------------------------------------------------------------------------------------------------
# Closed forms and structure
# ------------------------------------------------------------------------------------------------


def test_jsd_alpha_bar_closed_form() -> None:
    """β_i = 1/(T − i) gives ᾱ at index k = ∏_{i≤k} (T−i−1)/(T−i) = (T − k − 1)/T."""
    T = 1000
    betas = S.jsd_betas(T)
    assert betas[0] == 1.0 / T and betas[-1] == 1.0
    ab = alphas.alpha_bar(betas)
    with mpmath.workdps(30):
        expected = [mpmath.mpf(T - k - 1) / T for k in range(T)]
    assert ab[-1] == 0.0
    assert ulp_errors(ab[:-1], expected[:-1]).max() <= 2.0


def test_const_alpha_bar_closed_form() -> None:
    """Constant β gives ᾱ at index k = (1 − β)^(k+1)."""
    T, beta = 1000, 0.02
    betas = S.const_betas(T, beta)
    assert np.all(betas == beta)
    with mpmath.workdps(40):
        expected = [(1 - mpmath.mpf(beta)) ** (k + 1) for k in range(T)]
    assert ulp_errors(alphas.alpha_bar(betas), expected).max() <= 2.0


def test_warmup_lengths() -> None:
    T = 1000
    w10, w50 = S.get_betas("warmup10", T), S.get_betas("warmup50", T)
    for betas, W in ((w10, 100), (w50, 500)):
        assert betas[0] == 1e-4
        assert np.all(betas[W - 1 :] == 0.02)  # the warm-up's last point is beta_end
        assert np.all(np.diff(betas[:W]) > 0)
        assert np.count_nonzero(betas < 0.02) == W - 1
        np.testing.assert_array_equal(betas[:W], S.linear_betas(W))
    # the DDPM authors' W = int(F·T) with a float64 product: 0.7·10 rounds to 7.0
    assert np.count_nonzero(S.warmup_betas(10, 0.7) < 0.02) == 6
    np.testing.assert_array_equal(S.warmup_betas(T, 0.0), S.const_betas(T, 0.02))
    np.testing.assert_array_equal(S.warmup_betas(T, 1.0), S.linear_betas(T))
    assert np.array_equal(S.warmup_betas(30, 1 / 30), [1e-4] + [0.02] * 29)  # W = 1: beta_start


def test_linear_family_end_points_and_identities() -> None:
    betas = S.linear_betas(1000)
    assert betas[0] == 1e-4 and betas[-1] == 0.02
    assert np.all(np.diff(betas) > 0)
    assert np.array_equal(S.linear_betas(1, 1e-4, 0.02), [1e-4])
    # improved-diffusion's scale 1000/T is exactly 1 at T = 1000
    np.testing.assert_array_equal(S.improved_linear_betas(1000), betas)
    imp = S.improved_linear_betas(4000)
    assert imp[0] == 2.5e-5  # 1e-4/4: an exact power-of-two scaling
    assert imp[-1] == 0.005
    assert S.improved_linear_betas(21)[-1] < 1.0
    # quad and scaled_linear are the same formula
    np.testing.assert_array_equal(S.quad_betas(500, 0.00085, 0.012), S.scaled_linear_betas(500))
    sl = S.scaled_linear_betas(1000)
    assert abs(sl[0] - 0.00085) <= np.spacing(0.00085) and abs(sl[-1] - 0.012) <= np.spacing(0.012)


def test_sigmoid_symmetry_and_range() -> None:
    """σ(x) + σ(−x) = 1 on a symmetric grid gives β_i + β_{T−1−i} = beta_start + beta_end."""
    T = 1000
    betas = S.sigmoid_betas(T)
    assert np.all(np.diff(betas) > 0)
    assert np.all((betas > 1e-4) & (betas < 0.02))
    np.testing.assert_allclose(betas + betas[::-1], 1e-4 + 0.02, rtol=1e-15, atol=0)


def test_betas_for_alpha_bar_generic() -> None:
    """ᾱ(u) = 1 − u gives β_i = 1 − (T−i−1)/(T−i) = 1/(T − i): the jsd schedule, capped."""
    T = 200
    got = S.betas_for_alpha_bar(lambda u: 1.0 - u, T, max_beta=1.0)
    np.testing.assert_allclose(got, S.jsd_betas(T), rtol=1e-12)
    assert got[-1] == 1.0
    capped = S.betas_for_alpha_bar(lambda u: 1.0 - u, T)
    assert capped[-1] == 0.999 and np.all(capped[:-1] < 0.999)
    # exponential decay gives a constant β = 1 − e^{−1/T}
    exp_betas = S.betas_for_alpha_bar(lambda u: float(np.exp(-u)), T)
    np.testing.assert_allclose(exp_betas, -np.expm1(-1.0 / T), rtol=1e-10)


def test_named_schedules() -> None:
    expected_names = {
        "linear", "improved_linear", "scaled_linear", "cosine", "sigmoid",
        "quad", "const", "jsd", "warmup10", "warmup50",
    }  # fmt: skip
    assert set(S.NAMED_SCHEDULES) == expected_names
    T = 100
    for name in expected_names:
        betas = S.get_betas(name, T)
        assert betas.dtype == np.float64 and betas.shape == (T,)
        assert np.all(np.isfinite(betas)) and np.all(betas > 0) and np.all(betas <= 1)
    np.testing.assert_array_equal(S.get_betas("cosine", T), S.cosine_betas(T, 0.008, 0.999))
    np.testing.assert_array_equal(S.get_betas("scaled_linear", T), S.scaled_linear_betas(T, 0.00085, 0.012))
    np.testing.assert_array_equal(S.get_betas("warmup50", T), S.warmup_betas(T, 0.5))
    np.testing.assert_array_equal(S.get_betas("const", T), np.full(T, 0.02))


def test_custom_betas_copies() -> None:
    given = np.array([0.1, 0.5, 1.0])
    got = S.custom_betas(given)
    np.testing.assert_array_equal(got, given)
    got[0] = 0.3
    assert given[0] == 0.1
    assert S.custom_betas([0.25, 0.5]).dtype == np.float64


# ------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

BAD_CALLS = [
    # (callable, argument name in the error)
    (lambda: S.linear_betas(0), "num_timesteps"),
    (lambda: S.linear_betas(10.0), "num_timesteps"),
    (lambda: S.linear_betas(True), "num_timesteps"),
    (lambda: S.linear_betas(10, 0.0, 0.02), "beta_start"),
    (lambda: S.linear_betas(10, -1e-4, 0.02), "beta_start"),
    (lambda: S.linear_betas(10, NAN, 0.02), "beta_start"),
    (lambda: S.linear_betas(10, 1e-4, 1.0), "beta_end"),
    (lambda: S.linear_betas(10, 1e-4, INF), "beta_end"),
    (lambda: S.linear_betas(10, 0.03, 0.02), "beta_start"),
    (lambda: S.improved_linear_betas(20), "num_timesteps"),
    (lambda: S.improved_linear_betas(0), "num_timesteps"),
    (lambda: S.scaled_linear_betas(-1), "num_timesteps"),
    (lambda: S.scaled_linear_betas(10, 0.02, 0.012), "beta_start"),
    (lambda: S.scaled_linear_betas(10, 0.00085, NAN), "beta_end"),
    (lambda: S.quad_betas(0), "num_timesteps"),
    (lambda: S.quad_betas(10, 0.0, 0.02), "beta_start"),
    (lambda: S.quad_betas(10, 1e-4, 1.5), "beta_end"),
    (lambda: S.cosine_betas(0), "num_timesteps"),
    (lambda: S.cosine_betas(10, s=-0.1), "s"),
    (lambda: S.cosine_betas(10, s=NAN), "s"),
    (lambda: S.cosine_betas(10, s=INF), "s"),
    (lambda: S.cosine_betas(10, max_beta=0.0), "max_beta"),
    (lambda: S.cosine_betas(10, max_beta=1.5), "max_beta"),
    (lambda: S.cosine_betas(10, max_beta=NAN), "max_beta"),
    (lambda: S.betas_for_alpha_bar("cos", 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: NAN, 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: 1.0 + u, 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: 1.0, 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: 0.5 - u, 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: "x", 10), "alpha_bar_fn"),
    (lambda: S.betas_for_alpha_bar(lambda u: 1.0 - u, 0), "num_timesteps"),
    (lambda: S.betas_for_alpha_bar(lambda u: 1.0 - u, 10, max_beta=0.0), "max_beta"),
    (lambda: S.sigmoid_betas(0), "num_timesteps"),
    (lambda: S.sigmoid_betas(10, 0.03, 0.02), "beta_start"),
    (lambda: S.sigmoid_betas(10, start=NAN), "start"),
    (lambda: S.sigmoid_betas(10, end=INF), "end"),
    (lambda: S.const_betas(0), "num_timesteps"),
    (lambda: S.const_betas(10, 0.0), "beta"),
    (lambda: S.const_betas(10, 1.0), "beta"),
    (lambda: S.const_betas(10, NAN), "beta"),
    (lambda: S.jsd_betas(0), "num_timesteps"),
    (lambda: S.jsd_betas("10"), "num_timesteps"),
    (lambda: S.warmup_betas(0, 0.1), "num_timesteps"),
    (lambda: S.warmup_betas(10, -0.1), "warmup_frac"),
    (lambda: S.warmup_betas(10, 1.1), "warmup_frac"),
    (lambda: S.warmup_betas(10, NAN), "warmup_frac"),
    (lambda: S.warmup_betas(10, 0.1, 0.03, 0.02), "beta_start"),
    (lambda: S.custom_betas([]), "betas"),
    (lambda: S.custom_betas([0.1, 0.0]), "betas"),
    (lambda: S.custom_betas([1.0, 0.5]), "betas"),
    (lambda: S.custom_betas([0.1, NAN]), "betas"),
    (lambda: S.custom_betas([[0.1, 0.2]]), "betas"),
    (lambda: S.rescale_zero_terminal_snr([0.5]), "betas"),
    (lambda: S.rescale_zero_terminal_snr([0.0, 0.1]), "betas"),
    (lambda: S.rescale_zero_terminal_snr([0.1, INF]), "betas"),
    (lambda: S.get_betas("nope", 10), "name"),
    (lambda: S.get_betas(None, 10), "name"),
    (lambda: S.get_betas("linear", 0), "num_timesteps"),
]


@pytest.mark.parametrize(("call", "arg"), BAD_CALLS)
def test_validation_errors(call, arg: str) -> None:
    with pytest.raises(ValueError, match=rf"^{arg}="):
        call()


def test_unknown_name_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="squaredcos_cap_v2"):
        S.get_betas("squaredcos_cap_v2", 10)
