r"""Property 11: guidance is exact for a Gaussian model with its exact noisy-data likelihood.

Model. :math:`x_0 \sim \mathcal N(m, s^2 I)`, an observation :math:`y = x_0 + n`, :math:`n \sim \mathcal N(0, \tau^2 I)`,
and the forward marginal :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon` (Ho et al. 2020, eq. 4).
Per coordinate, with :math:`V = \bar\alpha_t s^2 + 1 - \bar\alpha_t`:

* :math:`x_0 \mid y \sim \mathcal N(m_c, s_c^2)`, :math:`s_c^2 = s^2\tau^2/(s^2+\tau^2)`,
  :math:`m_c = (\tau^2 m + s^2 y)/(s^2+\tau^2)` (Gaussian conditioning), so the exact conditional denoiser
  ε*(x_t | y) is that of ``oracles.IsotropicGaussian(m_c, s_c²)``;
* :math:`x_0 \mid x_t \sim \mathcal N(\mu_0, v_0)`, :math:`\mu_0 = m + \frac{\sqrt{\bar\alpha_t}s^2}{V}(x_t - \sqrt{\bar\alpha_t}m)`,
  :math:`v_0 = s^2(1-\bar\alpha_t)/V`; since y = x₀ + n with n independent of (x₀, x_t),
  :math:`p(y \mid x_t) = \mathcal N(y;\ \mu_0(x_t),\ v_0 + \tau^2)`, and as μ₀ is affine in x_t with slope
  :math:`\sqrt{\bar\alpha_t}s^2/V` and v₀ does not depend on x_t,

  .. math:: \nabla_{x_t}\log p(y \mid x_t) = \frac{y - \mu_0(x_t)}{v_0 + \tau^2}\cdot\frac{\sqrt{\bar\alpha_t}\,s^2}{V}.

Bayes: :math:`\nabla\log p(x_t \mid y) = \nabla\log p(x_t) + \nabla\log p(y \mid x_t)`, and
:math:`\epsilon^* = -\sqrt{1-\bar\alpha_t}\,\nabla\log p(x_t)` (Song et al. 2021 (SDE), eq. 4; Dhariwal & Nichol
2021, eq. 11), hence :math:`\epsilon^*(x_t\mid y) = \epsilon^*(x_t) - \sqrt{1-\bar\alpha_t}\,\nabla\log p(y\mid x_t)`:
classifier guidance (Dhariwal & Nichol 2021, Algorithm 2, eq. 14) with scale 1 is exact.

Every reference function is called through its module attribute (``guidance.classifier_guided_eps``, …)
so that ``tests/quality/test_property_power_part2.py`` can break it. Magnitudes for the tolerances come
from :func:`strategies.crude_tables`.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from ddspec.reference import alphas, guidance, oracles, parameterisation

from . import strategies
from .strategies import FLOOR, U, assert_within, crude_tables, repro


def _draw_case(data: st.DataObject, *, zero_terminal: bool = True):
    sched = data.draw(strategies.schedules(max_T=500, zero_terminal=zero_terminal), label="schedule")
    t = data.draw(strategies.timesteps(sched.T), label="t")
    d = data.draw(st.integers(1, 4), label="dim")
    positive = st.floats(-3.0, 1.0).map(lambda e: 10.0**e)
    m = data.draw(strategies.data_arrays((d,), magnitude=10.0), label="prior mean m")
    s2 = data.draw(st.lists(positive, min_size=d, max_size=d).map(np.array), label="prior variance s2")
    tau2 = data.draw(st.lists(positive, min_size=d, max_size=d).map(np.array), label="observation variance tau2")
    y = data.draw(strategies.data_arrays((d,), magnitude=10.0), label="observation y")
    x_t = data.draw(strategies.data_arrays((d,), magnitude=10.0), label="x_t")
    return sched, t, m, s2, tau2, y, x_t


def _exact(sched, t, m, s2, tau2, y, x_t):
    """ε*(x_t), ε*(x_t | y), ∇ log p(y | x_t) from the closed forms of the module docstring."""
    betas = sched.betas
    # the closed forms are evaluated with the accurate tables (the oracle uses them too: a crude ᾱ would
    # differ from the oracle's by ~|log ᾱ|·u relative and blur the comparison); magnitudes stay crude
    ab, c = float(alphas.alpha_bar_at(betas, t)), float(alphas.one_minus_alpha_bar_at(betas, t))
    sa = math.sqrt(ab)
    eps_u = oracles.IsotropicGaussian(m, s2).eps(x_t, t, betas)
    m_c = (tau2 * m + s2 * y) / (s2 + tau2)
    s2_c = s2 * tau2 / (s2 + tau2)
    eps_c = oracles.IsotropicGaussian(m_c, s2_c).eps(x_t, t, betas)
    V = ab * s2 + c
    mu0 = m + sa * s2 / V * (x_t - sa * m)
    v0 = s2 * c / V
    grad = (y - mu0) / (v0 + tau2) * (sa * s2 / V)
    return eps_u, eps_c, grad, m_c, mu0, v0, V


def _eps_tolerance(sched, t, m, s2, tau2, y, x_t, eps_u, eps_c, grad, m_c, mu0, v0, V, scale=1.0):
    r"""Per-coordinate bound on |ε̂_guided − ε̂_target|, derived.

    Each quantity is a handful (≤ 8) of correctly rounded operations on the inputs, so its absolute
    error is ≤ 16u times the sum of the magnitudes of its terms:

    * ε*(x_t) and ε*(x_t | y) (oracle): √(1−ᾱ)/V·(|x_t| + √ᾱ|m|) resp. with m_c, V_c; m_c itself
      carries (|τ²m| + |s²y|)/(s²+τ²), which enters ε*(x_t | y) times √(1−ᾱ)√ᾱ/V_c;
    * ∇ log p(y | x_t): (|y| + |μ₀| + √ᾱ s²/V·(|x_t| + √ᾱ|m|))·√ᾱ s²/(V(v₀+τ²)), entering times |scale|·√(1−ᾱ);
    * the guided combination itself: |ε_u| + |scale|·√(1−ᾱ)|∇|.
    """
    ab, c, sa, s1 = crude_tables(sched.betas).at(t)
    V_c = ab * s2 * tau2 / (s2 + tau2) + c
    mc_mag = (np.abs(tau2 * m) + np.abs(s2 * y)) / (s2 + tau2)
    g_mag = (np.abs(y) + np.abs(mu0) + sa * s2 / V * (np.abs(x_t) + sa * np.abs(m))) * sa * s2 / (V * (v0 + tau2))
    mags = (
        s1 / V * (np.abs(x_t) + sa * np.abs(m))
        + s1 / V_c * (np.abs(x_t) + sa * np.abs(m_c) + sa * mc_mag)
        + abs(scale) * s1 * (g_mag + np.abs(grad))
        + np.abs(eps_u)
        + np.abs(eps_c)
    )
    return 16 * U * mags + FLOOR


@given(st.data())
def test_classifier_guidance_with_the_exact_likelihood_is_the_exact_conditional_eps(data: st.DataObject) -> None:
    r"""``classifier_guided_eps(ε*(x_t), ∇ log p(y|x_t), t, scale=1) == ε*(x_t | y)`` (Dhariwal & Nichol 2021, eq. 14).

    Derivation in the module docstring: Bayes' rule for the score of x_t given y, with ε = −√(1−ᾱ_t)·score.
    The schedules include zero-terminal ones: at ᾱ_t = 0, x_t carries no information about y, the
    gradient is 0 and both sides are x_t.
    """
    case = _draw_case(data)
    sched, t, m, s2, tau2, y, x_t = case
    note(repro(betas=sched, t=t, m=m, s2=s2, tau2=tau2, y=y, x_t=x_t))
    eps_u, eps_c, grad, m_c, mu0, v0, V = _exact(*case)
    guided = guidance.classifier_guided_eps(eps_u, grad, t, sched.betas, 1.0)
    tol = _eps_tolerance(*case, eps_u, eps_c, grad, m_c, mu0, v0, V)
    assert_within(guided, eps_c, tol, "classifier-guided ε (scale 1) vs exact conditional ε*(x_t | y)")


@given(st.data())
def test_classifier_free_guidance_endpoints_and_the_implicit_classifier(data: st.DataObject) -> None:
    r"""Classifier-free guidance (Ho & Salimans 2022, eq. 6): ε̃ = ε_u + s(ε_c − ε_u), diffusers' scale s = 1 + w.

    * s = 1 returns the conditional prediction and s = 0 the unconditional one, *exactly* (the
      docstring promises a double-double evaluation rounded once; x + 1·(y − x) = y then holds exactly);
    * the implicit classifier (Ho & Salimans 2022, §3.2): with the exact Gaussian ε*(x_t) and ε*(x_t | y),
      ε_c − ε_u = −√(1−ᾱ_t)∇ log p(y | x_t), so for every s, CFG with scale s equals classifier guidance
      (``classifier_guided_eps``) with scale s. Tolerance :func:`_eps_tolerance` with that scale, twice
      (once for each route).
    """
    case = _draw_case(data)
    sched, t, m, s2, tau2, y, x_t = case
    scale = data.draw(st.one_of(st.sampled_from([0.0, 1.0, 7.5]), st.floats(-2.0, 20.0)), label="scale")
    note(repro(betas=sched, t=t, m=m, s2=s2, tau2=tau2, y=y, x_t=x_t, scale=scale))
    eps_u, eps_c, grad, m_c, mu0, v0, V = _exact(*case)
    np.testing.assert_array_equal(guidance.classifier_free_guidance(eps_u, eps_c, 1.0), eps_c)
    np.testing.assert_array_equal(guidance.classifier_free_guidance(eps_u, eps_c, 0.0), eps_u)
    cfg = guidance.classifier_free_guidance(eps_u, eps_c, scale)
    cg = guidance.classifier_guided_eps(eps_u, grad, t, sched.betas, scale)
    tol = 2 * _eps_tolerance(*case, eps_u, eps_c, grad, m_c, mu0, v0, V, scale=max(1.0, abs(scale)))
    assert_within(cfg, cg, tol, f"classifier-free guidance (scale {scale!r}) vs classifier guidance with the implicit classifier")


@given(st.data())
def test_guided_mean_is_the_guided_eps_through_eq_11(data: st.DataObject) -> None:
    r"""Algorithm 1's mean shift and Algorithm 2's ε shift are the same step when Σ = β_t/√α_t.

    With μ(ε) = (x_t − β_t/√(1−ᾱ_t)·ε)/√α_t (Ho et al. 2020, eq. 11, ``parameterisation.ddpm_mean_from_eps``),
    shifting ε by −s√(1−ᾱ_t)∇ (Dhariwal & Nichol 2021, eq. 14) shifts the mean by +s(β_t/√α_t)∇, which is
    ``classifier_guided_mean(μ, Σ = β_t/√α_t, ∇, s)`` (Algorithm 1: μ + sΣ∇). Algorithm 1's Σ (β̃_t or β_t)
    is this factor to first order in β_t. With the exact Gaussian gradient and s = 1 the guided mean is the
    exact conditional model's mean μ(ε*(x_t | y)).

    Tolerance: μ(ε) has absolute error ≤ 16u·(|x_t| + β_t/√(1−ᾱ_t)·|ε|)/√α_t; the ε shift adds
    β_t/(√α_t√(1−ᾱ_t)) times the ε tolerance of :func:`_eps_tolerance`, and the mean shift 16u·|s|β_t/√α_t·|∇|.
    """
    case = _draw_case(data, zero_terminal=False)  # eq. 11 divides by √α_t: β_t < 1
    sched, t, m, s2, tau2, y, x_t = case
    betas = sched.betas
    scale = data.draw(st.one_of(st.just(1.0), st.floats(-2.0, 20.0)), label="scale")
    note(repro(betas=sched, t=t, m=m, s2=s2, tau2=tau2, y=y, x_t=x_t, scale=scale))
    eps_u, eps_c, grad, m_c, mu0, v0, V = _exact(*case)
    beta = float(betas[t])
    _, _, _, s1 = crude_tables(betas).at(t)
    sqrt_alpha = math.sqrt(1.0 - beta)
    factor = beta / sqrt_alpha

    mean_u = parameterisation.ddpm_mean_from_eps(x_t, eps_u, t, betas)
    via_mean = guidance.classifier_guided_mean(mean_u, factor, grad, scale)
    via_eps = parameterisation.ddpm_mean_from_eps(x_t, guidance.classifier_guided_eps(eps_u, grad, t, betas, scale), t, betas)
    eps_tol = _eps_tolerance(*case, eps_u, eps_c, grad, m_c, mu0, v0, V, scale=max(1.0, abs(scale)))
    tol = (
        16 * U * (2 * np.abs(x_t) + beta / s1 * (np.abs(eps_u) + np.abs(eps_c) + abs(scale) * s1 * np.abs(grad))) / sqrt_alpha
        + beta / (sqrt_alpha * s1) * eps_tol
        + 16 * U * abs(scale) * factor * np.abs(grad)
        + FLOOR
    )
    assert_within(via_mean, via_eps, tol, "classifier_guided_mean(μ, β/√α, ∇, s) vs μ(classifier_guided_eps(ε, ∇, s))")
    if scale == 1.0:
        exact_mean = parameterisation.ddpm_mean_from_eps(x_t, eps_c, t, betas)
        assert_within(via_mean, exact_mean, tol, "guided mean (scale 1) vs the exact conditional model's mean")
