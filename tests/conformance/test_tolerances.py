"""Tests of conformance/tolerances.py: the error model bounds real rounding and table error, and no more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddspec.conformance import tolerances as tol
from ddspec.reference import alphas, sampling, schedules

BETAS = schedules.linear_betas(1000)


def test_gamma_is_highams_closed_form() -> None:
    """γ_k = k u / (1 − k u) (Higham 2002, Lemma 3.1), inf once k u ≥ 1."""
    u = 2.0**-24
    assert tol.gamma(10, u) == pytest.approx(10 * u / (1 - 10 * u), rel=1e-15)
    assert np.isinf(tol.gamma(2**24, u))


@pytest.mark.parametrize(
    "dtype,u", [(np.float16, 2.0**-11), (np.float32, 2.0**-24), (np.float64, 2.0**-53)]
)
def test_table_roundoff_reads_the_storage_dtype(dtype: type, u: float) -> None:
    table = np.linspace(0.1, 0.9, 50).astype(dtype).astype(np.float64)
    assert tol.table_roundoff(table) == u


def test_table_roundoff_detects_bfloat16() -> None:
    table = torch.linspace(0.1, 0.9, 50, dtype=torch.bfloat16).double().numpy()
    assert tol.table_roundoff(table) == 2.0**-8


def test_unit_roundoff_names() -> None:
    assert tol.unit_roundoff(torch.float32) == 2.0**-24
    assert tol.unit_roundoff("bfloat16") == 2.0**-8
    with pytest.raises(ValueError, match="dtype"):
        tol.unit_roundoff("int8")


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_alpha_bar_bound_covers_a_float32_running_product(schedule: str) -> None:
    """A float32 table built the usual way (float32 β, float32 cumprod) stays inside the bound at every t."""
    ref = schedules.get_betas(schedule, 1000)
    b32 = torch.tensor(ref, dtype=torch.float32)
    ab32 = torch.cumprod(1.0 - b32, dim=0).double().numpy()
    ab = alphas.alpha_bar(ref)
    rel = np.abs(ab32 - ab) / ab
    bound = tol.alpha_bar_relative_bound(ref, schedule, 2.0**-24)
    assert np.all(rel <= bound), f"worst ratio {np.max(rel / bound):.3g}"
    # and the bound is not vacuous: a float16 product breaks it at most t
    ab16 = torch.cumprod(1.0 - b32.half(), dim=0).double().numpy()
    assert np.mean(np.abs(ab16 - ab) / ab > tol.SAFETY * bound) > 0.5


def test_ddim_sensitivity_matches_the_analytic_derivative() -> None:
    """η = 0, ε-prediction: ∂x_prev/∂ln p = p (x̂₀/(2√p) − ε/(2√(1−p))) (differentiate DDIM eq. 12)."""
    spec = tol.StepSpec(family="ddim")
    a, p = 0.3, 0.6
    x, m = np.array([0.7, -1.2]), np.array([0.4, 0.9])
    bound = tol.step_bound(spec, alpha_bar_t=a, alpha_bar_prev=p, delta_t=0.0, delta_prev=1.0,
                           model_output=m, x_t=x, noise=None, u_compute=2.0**-53, safety=1.0)
    x0 = (x - np.sqrt(1 - a) * m) / np.sqrt(a)
    analytic = np.abs(p * (x0 / (2 * np.sqrt(p)) - m / (2 * np.sqrt(1 - p))))
    np.testing.assert_allclose(bound.table, analytic, rtol=1e-6)


@pytest.mark.parametrize("t,t_prev", [(999, 979), (500, 480), (20, 0), (0, -1)])
def test_float32_step_is_inside_its_bound_and_an_off_by_one_is_not(t: int, t_prev: int) -> None:
    """A DDIM step computed in float32 from float32 tables is within the bound; the same step at t − 1 is not."""
    rng = np.random.default_rng(t)
    x = rng.standard_normal(256).astype(np.float32).astype(np.float64)
    m = rng.standard_normal(256).astype(np.float32).astype(np.float64)
    ab32 = torch.cumprod(1.0 - torch.tensor(BETAS, dtype=torch.float32), 0)
    a32 = ab32[t]
    p32 = ab32[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    xt, mt = torch.tensor(x, dtype=torch.float32), torch.tensor(m, dtype=torch.float32)
    x0 = (xt - (1 - a32).sqrt() * mt) / a32.sqrt()
    got = (p32.sqrt() * x0 + (1 - p32).sqrt() * mt).double().numpy()
    expected = sampling.ddim_step(m, t, t_prev, x, BETAS, eta=0.0).prev_sample
    ab = alphas.alpha_bar(BETAS)
    delta = tol.alpha_bar_relative_bound(BETAS, "linear", 2.0**-24)
    b = tol.step_bound(tol.StepSpec(family="ddim"), alpha_bar_t=ab[t], alpha_bar_prev=ab[t_prev] if t_prev >= 0 else 1.0,
                       delta_t=delta[t], delta_prev=delta[t_prev] if t_prev >= 0 else 0.0,
                       model_output=m, x_t=x, noise=None, u_compute=2.0**-24)
    assert np.all(np.abs(got - expected) <= b.bound)
    if t >= 1:
        wrong = sampling.ddim_step(m, t - 1, min(t_prev, t - 2), x, BETAS, eta=0.0).prev_sample
        assert np.any(np.abs(wrong - expected) > b.bound)


# -- β tables: the textbook evaluation (docs/tolerances.md, "The textbook evaluation") ---------------


@pytest.mark.parametrize("u", [2.0**-53, 2.0**-24])
@pytest.mark.parametrize("schedule,units", [("linear", 7.0), ("scaled_linear", 22.0), ("sigmoid", 58.0)])
def test_linspace_schedule_bounds_are_the_derived_constants(schedule: str, units: float, u: float) -> None:
    """linspace: 3e + 4u with e = u (linear); squared with e = 2u: 2·10u + 2u; sigmoid: 48u + 10u."""
    betas = schedules.get_betas(schedule, 1000)
    np.testing.assert_allclose(tol.beta_relative_bound(betas, schedule, u), units * u, rtol=1e-15)


def _textbook_cosine_float64(T: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17, written plainly with math.cos (the table of issue 7)."""
    import math

    def f(i: int) -> float:
        return math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)])


@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_bound_covers_the_textbook_float64_table(T: int) -> None:
    """The plain float64 cosine table is within SAFETY·δβ at every index, with a margin of 2 or more.

    Issue 7: at T = 1000, index 997 (β ≈ 0.556) is off by 1.03·10⁻¹³ relative, 32× the old term
    4u(1 − β)/β·SAFETY, which ignored the conditioning θ·tan θ ≈ 320–500 of cos there.
    """
    ref = schedules.cosine_betas(T)
    rel = np.abs(_textbook_cosine_float64(T) - ref) / ref
    ratio = rel / (tol.SAFETY * tol.beta_relative_bound(ref, "cosine", 2.0**-53))
    assert ratio.max() <= 0.5, f"worst ratio {ratio.max():.3g} at index {ratio.argmax()}"


def test_cosine_bound_has_the_condition_number_of_cos_near_pi_over_2() -> None:
    r"""Near u = 1, δβ_i ≈ (1 − β_i)/β_i·2·c_θ·u·(θ_{i+1} tan θ_{i+1} + θ_i tan θ_i).

    With θ_v = (v/T + s)/(1 + s)·π/2 and π/2 − θ_v small, θ tan θ ≈ (π/2)/(π/2 − θ_v); at
    T = 1000, i = 997: π/2 − θ = (T − v)/T/(1 + s)·π/2, so θ₉₉₈ tan θ₉₉₈ ≈ 503 and θ₉₉₇ tan θ₉₉₇ ≈ 335.
    The bound is then ≈ 0.8·16u·838, within the 0.2 % the closed-form tangent and the u-sized terms leave.
    """
    T, s, u, i = 1000, 0.008, 2.0**-53, 997
    ref = schedules.cosine_betas(T)

    def cond(v: int) -> float:
        gap = (T - v) / T / (1 + s) * np.pi / 2
        return (np.pi / 2 - gap) / np.tan(gap)  # θ tan θ with tan θ = cot(π/2 − θ)

    expected = (1 - ref[i]) / ref[i] * 2 * tol.COSINE_ANGLE_U * u * (cond(i + 1) + cond(i))
    assert tol.beta_relative_bound(ref, "cosine", u)[i] == pytest.approx(expected, rel=2e-3)


def test_cosine_alpha_bar_bound_telescopes_and_covers_a_float32_textbook_product() -> None:
    """ᾱ = cumprod(1 − β) of a float32 torch.cos table is within the telescoped bound
    δf_{t+1} + δf_0 + Σ(3u + 2uβ/(1 − β)) (×SAFETY), which is far below the generic sum."""
    import math

    T = 1000
    steps = torch.arange(T + 1, dtype=torch.float32)
    f = torch.cos((steps / T + 0.008) / (1 + 0.008) * math.pi / 2) ** 2
    b32 = torch.clamp(1 - f[1:] / f[:-1], max=0.999)
    ab32 = torch.cumprod(1 - b32, 0).double().numpy()
    ref = schedules.cosine_betas(T)
    ab = alphas.alpha_bar(ref)
    bound = tol.alpha_bar_relative_bound(ref, "cosine", 2.0**-24)
    ratio = np.abs(ab32 - ab) / ab / (tol.SAFETY * bound)
    assert ratio.max() <= 0.5, f"worst ratio {ratio.max():.3g} at t = {ratio.argmax()}"
    # without telescoping (γ_{2(t+1)} + Σ β/(1 − β)·δβ) the bound would be ~10× looser at the end
    db = tol.beta_relative_bound(ref, "cosine", 2.0**-24)
    generic = tol.gamma(2 * np.arange(1, T + 1), 2.0**-24) + np.cumsum(ref / (1 - ref) * db)
    assert generic[-2] > 5 * bound[-2]


def test_zero_snr_first_entry_keeps_its_beta() -> None:
    r"""Algorithm 1 multiplies and divides by the same rounded r₁ − r_T, so r′₁ = r₁(1 + 2u) and
    δβ′₁ = δβ₁ + 9u(1 − β₁)/β₁ + 2u; the exact last β′ = 1 costs u."""
    u = 2.0**-24
    base = schedules.scaled_linear_betas(1000)
    rescaled = schedules.rescale_zero_terminal_snr(base)
    bound = tol.beta_relative_bound(rescaled, "scaled_linear", u, zero_snr_original=base)
    assert bound[0] == pytest.approx(22 * u + 9 * u * (1 - base[0]) / base[0] + 2 * u, rel=1e-14)
    assert bound[-1] == u
