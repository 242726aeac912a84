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
