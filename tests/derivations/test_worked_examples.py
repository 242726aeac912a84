"""Worked examples: the derived formulas, evaluated, give the published numbers and the reference's.

* DDPM's L_T ≈ 10⁻⁵ bits/dim (Ho et al. 2020, §4.1: "L_T = D_KL(q(x_T|x_0) ‖ N(0, I)) ≈ 10⁻⁵ bits per
  dimension"), from the closed-form KL that ``gaussian-kl`` derives, on DDPM's linear schedule.
* The cosine schedule's β: the formula that ``cosine-schedule`` proves equal to 1 − ᾱ_t/ᾱ_{t−1}, at
  50 digits, against ``ddspec.reference.schedules.cosine_betas`` (within its stated 8 ULP).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp

from ddspec.derivations import get
from ddspec.reference.schedules import cosine_betas, linear_betas


def _sym(name: str, derivation: str) -> sp.Symbol:
    return next(v.symbol for v in get(derivation).variables if v.symbol.name == name)


def _alpha_bar_T_linear() -> mpmath.mpf:
    """ᾱ_T of DDPM's linear schedule (T = 1000), exactly for the float64 betas, at 50 digits."""
    with mpmath.workdps(50):
        prod = mpmath.mpf(1)
        for b in linear_betas(1000):
            prod *= 1 - mpmath.mpf(float(b))
        return prod


def test_ddpm_prior_term_is_about_1e_5_bits_per_dim() -> None:
    d = get("gaussian-kl")
    kl = d.steps[2].after  # ½ log(σ_2²/σ_1²) + (σ_1² + (μ_1 − μ_2)²)/(2σ_2²) − ½
    m1, m2, v1, v2 = (_sym(n, "gaussian-kl") for n in ("mu_1", "mu_2", "v_1", "v_2"))
    x0 = sp.Symbol("x0", real=True)
    abar_T = _alpha_bar_T_linear()
    # q(x_T|x_0) = N(√ᾱ_T x_0, 1 − ᾱ_T) against p(x_T) = N(0, 1), per dimension
    with mpmath.workdps(50):
        lt = sp.lambdify(x0, kl.subs({m1: sp.sqrt(sp.Float(abar_T, 50)) * x0, m2: 0, v1: 1 - sp.Float(abar_T, 50), v2: 1}), "mpmath")
        bits = [lt(x) / mpmath.log(2) for x in (mpmath.mpf(0), 1 / mpmath.sqrt(3), mpmath.mpf(1))]
    a = float(abar_T)
    # to leading order in ᾱ_T: ½(ᾱ_T x_0² + ᾱ_T²/2 (1 − 2x_0²) + …) nats; x_0 = 0 keeps only ᾱ_T²/4
    assert 0 < bits[0] < bits[1] < bits[2]
    assert float(bits[0]) == pytest.approx(a**2 / 4 / math.log(2), rel=1e-3)
    assert float(bits[2]) == pytest.approx(a / 2 / math.log(2), rel=1e-3)
    # "≈ 10⁻⁵ bits per dimension" (data scaled to [−1, 1]; E[x_0²] = 1/3 for uniform data): ᾱ_T/(6 ln 2)
    assert float(bits[1]) == pytest.approx(a / 6 / math.log(2), rel=1e-3)
    assert 5e-6 < bits[1] < 2e-5


@pytest.mark.parametrize("num_timesteps", [10, 1000])
def test_cosine_betas_are_the_derived_formula(num_timesteps: int) -> None:
    d = get("cosine-schedule")
    T, i, s = (_sym(n, "cosine-schedule") for n in ("T", "i", "s"))
    definition, rewritten = d.steps[4].before, d.steps[4].after  # 1 − ᾱ_{i+1}/ᾱ_i and the reference's form
    ref = cosine_betas(num_timesteps)
    s_exact = sp.Rational(0.008)  # the double 0.008, exactly (docs/conventions.md: parameters are exact)
    indices = sorted({0, 1, num_timesteps // 2, num_timesteps - 3})
    with mpmath.workdps(50):
        f_def = sp.lambdify((T, i, s), definition, "mpmath")
        f_new = sp.lambdify((T, i, s), rewritten, "mpmath")
        s_mp = mpmath.mpf(s_exact.p) / s_exact.q
        for k in indices:
            exact = f_def(mpmath.mpf(num_timesteps), mpmath.mpf(k), s_mp)
            assert abs(f_new(mpmath.mpf(num_timesteps), mpmath.mpf(k), s_mp) - exact) <= mpmath.mpf("1e-45") * exact
            assert exact < mpmath.mpf("0.999")  # below the clip, so the reference returns the formula
            ulp = np.spacing(float(exact))
            got = mpmath.mpf(float(ref[k]))
            assert abs(got - exact) <= 8 * ulp, (
                f"cosine_betas({num_timesteps})[{k}]: expected {mpmath.nstr(exact, 20)}, got {ref[k]!r}, "
                f"error {mpmath.nstr(abs(got - exact) / ulp, 3)} ULP > 8 ULP"
            )
