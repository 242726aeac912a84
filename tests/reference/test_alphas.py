"""Tests of ddspec.reference.alphas: the schedule tables against their mpmath twin, ULP by ULP.

Every expected value comes from the twin (``reference/twin/alphas.py``: the literal product of
``1 - mpf(β)`` at 40 digits) or from a closed form. Schedules: linear and scaled_linear from their
``linspace`` definitions, and the cosine schedule computed here in mpmath from its definition
(Nichol & Dhariwal 2021, eq. 17 with s = 0.008, β capped at 0.999) and rounded to float64.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError
from ddspec.reference import alphas as A
from ddspec.reference.twin import alphas as TA
from ddspec.reference.twin import mpf_list, ulp_error

DPS = 40
SIZES = (10, 1000, 4000)
KINDS = ("linear", "scaled_linear", "cosine")
CASES = [(kind, size) for kind in KINDS for size in SIZES]
TABLES = ("alpha_bar", "one_minus_alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar")


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta), ᾱ(u) = cos²((u+s)/(1+s)·π/2), in mpmath, rounded once."""
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


@pytest.fixture(scope="module")
def schedules() -> dict[tuple[str, int], np.ndarray]:
    return {case: make_betas(*case) for case in CASES}


@pytest.fixture(scope="module")
def twins(schedules):
    """Every twin table of every schedule, computed once for the module."""
    names = TABLES + ("snr", "log_snr")
    return {case: {name: getattr(TA, name)(b, dps=DPS) for name in names} for case, b in schedules.items()}


# --- accuracy: every table within a few ULP of the exact value, at every index ----------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{n}" for k, n in CASES])
@pytest.mark.parametrize("name", TABLES)
def test_table_within_8_ulp_at_every_index(schedules, twins, case, name):
    got = getattr(A, name)(schedules[case])
    err = ulp_error(got, twins[case][name])
    assert err.max() <= 8.0, f"{name} {case}: worst {err.max():.2f} ULP at index {int(err.argmax())}"


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_snr_is_rounded_once(schedules, twins, case):
    # SNR is one double-double quotient of two double-double tables (each good to ~2^-100), rounded
    # once: 0.5 ULP plus a negligible term. Allow 2.
    err = ulp_error(A.snr(schedules[case]), twins[case]["snr"])
    assert err.max() <= 2.0, f"snr {case}: worst {err.max():.2f} ULP"


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_log_snr_within_4_ulp(schedules, twins, case):
    # Away from SNR = 1 (|λ| >= log 2), λ = log ᾱ − log(1 − ᾱ) with each log within 1 ULP of its own
    # magnitude; the magnitudes are at most ~2.2|λ| there, so ≈ 1 + 2.2 + 0.5 rounding ≲ 4 ULP.
    # Near SNR = 1 log1p of an exactly formed (ᾱ − (1 − ᾱ))/(1 − ᾱ) is within ~1.5 ULP.
    err = ulp_error(A.log_snr(schedules[case]), twins[case]["log_snr"])
    assert err.max() <= 4.0, f"log_snr {case}: worst {err.max():.2f} ULP at index {int(err.argmax())}"


def test_linear_1000_crosses_snr_one_so_both_log_snr_branches_are_tested(schedules):
    lam = A.log_snr(schedules[("linear", 1000)])
    assert np.any(np.abs(lam) < np.log(2.0)) and np.any(np.abs(lam) > np.log(2.0))


# --- the textbook forms are not good enough -----------------------------------------------------------


def test_naive_cumprod_loses_many_ulp(schedules, twins):
    b = schedules[("linear", 1000)]
    naive = np.cumprod(1.0 - b)
    err_ab = ulp_error(naive, twins[("linear", 1000)]["alpha_bar"])
    err_c = ulp_error(1.0 - naive, twins[("linear", 1000)]["one_minus_alpha_bar"])
    assert err_ab.max() > 8.0
    # At index 0, 1 − fl(1 − β₀) carries fl's absolute error (up to 2^-54) on a value of ~1e-4.
    assert err_c[0] > 100.0
    assert err_c.max() > 1000.0


# --- closed forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_first_entries_are_exact(schedules, case):
    b = schedules[case]
    # ᾱ_1 = 1 − β_1: the exact value rounds to fl(1 − β_1); 1 − ᾱ_1 = β_1 is a double already.
    assert A.alpha_bar(b)[0] == 1.0 - b[0]
    assert A.one_minus_alpha_bar(b)[0] == b[0]
    assert A.alpha_bar_prev(b)[0] == 1.0
    np.testing.assert_array_equal(A.alpha_bar_prev(b)[1:], A.alpha_bar(b)[:-1])
    np.testing.assert_array_equal(A.alphas(b), 1.0 - b)


def test_data_index_minus_one():
    b = np.linspace(1e-4, 0.02, 50)
    assert A.alpha_bar_at(b, -1) == 1.0
    assert A.one_minus_alpha_bar_at(b, -1) == 0.0
    np.testing.assert_array_equal(A.alpha_bar_at(b, [[-1, 3], [49, 0]]), [[1.0, A.alpha_bar(b)[3]], [A.alpha_bar(b)[49], 1 - b[0]]])
    np.testing.assert_array_equal(A.one_minus_alpha_bar_at(b, np.arange(50)), A.one_minus_alpha_bar(b))


@pytest.mark.parametrize("case", [("linear", 1000), ("cosine", 1000)], ids=["linear", "cosine"])
def test_ratios_against_twin(schedules, case):
    b = schedules[case]
    ts = np.arange(1, b.size)
    # s = t − 1: the ratio is α_t and 1 − ratio is β_t, exactly representable.
    np.testing.assert_array_equal(A.one_minus_alpha_bar_ratio(b, ts, ts - 1), b[1:])
    err = ulp_error(A.alpha_bar_ratio(b, ts, ts - 1), TA.alphas(b, dps=DPS)[1:])
    assert err.max() <= 1.0
    # Strided by 20 and from the data (s = −1).
    t = np.arange(20, b.size, 20)
    for s in (t - 20, np.full(t.shape, -1)):
        got_r = A.alpha_bar_ratio(b, t, s)
        got_c = A.one_minus_alpha_bar_ratio(b, t, s)
        want_r = [TA.alpha_bar_ratio(b, int(i), int(j), dps=DPS) for i, j in zip(t, s)]
        want_c = [TA.one_minus_alpha_bar_ratio(b, int(i), int(j), dps=DPS) for i, j in zip(t, s)]
        assert ulp_error(got_r, want_r).max() <= 2.0
        assert ulp_error(got_c, want_c).max() <= 2.0
    # s = t: ratio 1, 1 − ratio 0.
    assert A.alpha_bar_ratio(b, 7, 7) == 1.0 and A.one_minus_alpha_bar_ratio(b, 7, 7) == 0.0


def test_naive_ratio_cancels():
    # 1 − ᾱ_t/ᾱ_{t−1} from rounded tables is far from β_t; the reference's form is exact.
    b = np.linspace(1e-4, 0.02, 1000)
    ab = A.alpha_bar(b)
    naive = 1.0 - ab[1:] / ab[:-1]
    assert ulp_error(naive, mpf_list(b[1:])).max() > 100.0


def test_zero_terminal_snr_schedule():
    b = np.linspace(1e-4, 0.02, 20)
    b[-1] = 1.0
    assert A.alpha_bar(b)[-1] == 0.0
    assert A.one_minus_alpha_bar(b)[-1] == 1.0
    assert A.sqrt_alpha_bar(b)[-1] == 0.0
    assert A.sqrt_one_minus_alpha_bar(b)[-1] == 1.0
    assert A.snr(b)[-1] == 0.0
    assert ulp_error(A.alpha_bar(b)[:-1], TA.alpha_bar(b, dps=DPS)[:-1]).max() <= 1.0
    with pytest.raises(SingularError, match="alpha_bar"):
        A.log_snr(b)
    with pytest.raises(ValueError, match="^s="):
        A.alpha_bar_ratio(b, 19, 19)  # ᾱ_s = 0 in the denominator


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        [0.1, 0.0, 0.2],
        [0.1, -0.2],
        [0.1, 1.5],
        [0.1, 1.0, 0.2],  # a β of 1 that is not the last
        [0.1, np.nan],
        [0.1, np.inf],
        [[0.1, 0.2]],
        [],
        "0.1",
    ],
)
@pytest.mark.parametrize("name", ["alpha_bar", "one_minus_alpha_bar", "sqrt_alpha_bar", "snr", "log_snr", "alphas"])
def test_bad_betas_are_rejected_by_name(bad, name):
    with pytest.raises(ValueError, match="^betas="):
        getattr(A, name)(bad)


def test_bad_timesteps_name_the_argument():
    b = np.linspace(1e-4, 0.02, 10)
    with pytest.raises(ValueError, match="^t="):
        A.alpha_bar_at(b, 10)
    with pytest.raises(ValueError, match="^t="):
        A.alpha_bar_at(b, -2)
    with pytest.raises(ValueError, match="^t="):
        A.one_minus_alpha_bar_at(b, 2.5)
    with pytest.raises(ValueError, match="^s="):
        A.alpha_bar_ratio(b, 3, 4)
    with pytest.raises(ValueError, match="^s="):
        A.one_minus_alpha_bar_ratio(b, [3, 5], [2, 6])
    with pytest.raises(ValueError, match="^s="):
        A.alpha_bar_ratio(b, [1, 2, 3], [0, 1])
