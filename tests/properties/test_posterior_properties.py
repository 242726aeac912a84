r"""Properties of the forward-process posterior q(x_{t−1} | x_t, x₀) (properties 2 and 3 of the suite).

.. math::

    q(x_{t-1} \mid x_t, x_0)\,q(x_t \mid x_0) = q(x_t \mid x_{t-1})\,q(x_{t-1} \mid x_0),\qquad
    \frac{1}{\tilde\beta_t} = \frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}},\qquad
    \tilde\mu_t\big(x_t, \hat x_0(x_t, \epsilon)\big) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon\Big)

Sources: Ho et al. 2020, eqs. 2, 4, 6, 7 (the posterior), 11 (μ_θ from ε) and 15 (x̂₀ from ε).
Index convention (``docs/conventions.md``): 0-based; the posterior "from index t" is the state at
index t − 1, and at index 0 it is the point mass at x₀ (β̃ = 0).

Reference functions are called through their module attributes (``posterior.q_posterior``, …) so that
the planted-bug tests in ``tests/quality`` can patch them. Tolerances are in units of u = 2⁻⁵³,
derived in the comments, with magnitudes from :func:`strategies.crude_tables` (independent of the
reference).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from ddspec.reference import alphas, forward, parameterisation, posterior
from ddspec.reference.twin import posterior as twin_posterior

from .strategies import (
    FLOOR,
    U,
    assert_within,
    crude_tables,
    data_arrays,
    noise_arrays,
    repro,
    schedules,
    shapes,
    timesteps,
)


def _log_prob_error_bound(x: np.ndarray, mean_hat: np.ndarray, mean_mag: np.ndarray, var: float) -> np.ndarray:
    r"""Bound on the rounding error of ``Gaussian.log_prob(x)`` = −½ log(2πv) − ½ d²/v, d = x − μ.

    With a mean μ̂ of relative error ≤ 8u with respect to its magnitude M (the sum of the absolute
    contributions, e.g. |c₀x₀| + |c_t x_t|) and a variance v̂ of relative error e_v ≤ 8u, first
    order: log(2πv̂) is off by ≤ e_v + 2u(1 + |log 2πv|); d̂ = fl(x − μ̂) by ≤ 8uM + u|d̂|; and
    d̂²/v̂ by ≤ (e_v + 6u) d̂²/v + 2|d|·8uM/v. Hence ≤ 16u (1 + |log 2πv| + d̄²/v + d̄M/v) with
    d̄ = |d̂| + 8uM (which bounds the exact |d|).
    """
    d_bar = np.abs(x - mean_hat) + 8 * U * mean_mag
    return 16 * U * (1.0 + abs(np.log(2 * np.pi * var)) + d_bar * d_bar / var + d_bar * mean_mag / var)


@given(st.data())
def test_bayes_rule_links_posterior_and_forward(data: st.DataObject) -> None:
    r"""Bayes' rule for the forward chain, evaluated as log-densities at random points, for index t ≥ 1.

    .. math::

        \log q(x_{t-1} \mid x_t, x_0) + \log q(x_t \mid x_0) = \log q(x_t \mid x_{t-1}) + \log q(x_{t-1} \mid x_0)

    This is the definition of the posterior (Ho et al. 2020, eq. 6 with eq. 7; Markov property
    q(x_t | x_{t−1}, x₀) = q(x_t | x_{t−1}), eq. 2; marginals eq. 4). It holds at every point, so
    the points are either typical (drawn through the chain from x₀) or arbitrary. Index t ≥ 1
    keeps the posterior variance positive (index 0's posterior is a point mass).
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    t = data.draw(timesteps(sched.T, low=1), label="t")
    shape = data.draw(shapes(), label="shape")
    x0 = data.draw(data_arrays(shape), label="x0")
    ct = crude_tables(b)
    _, c_t, sa_t, _ = ct.at(t)
    _, c_p, sa_p, s1_p = ct.at(t - 1)
    beta = float(b[t])
    if data.draw(st.sampled_from(["typical", "arbitrary"]), label="points") == "typical":
        z1 = data.draw(noise_arrays(shape), label="z1")
        z2 = data.draw(noise_arrays(shape), label="z2")
        x_prev = sa_p * x0 + s1_p * z1
        x_t = np.sqrt(1.0 - beta) * x_prev + np.sqrt(beta) * z2
    else:
        x_prev = data.draw(data_arrays(shape), label="x_prev")
        x_t = data.draw(data_arrays(shape), label="x_t")
    note(repro(betas=sched, t=t, x0=x0, x_prev=x_prev, x_t=x_t) + "; posterior.q_posterior(x0, x_t, t, betas).log_prob(x_prev)")

    post = posterior.q_posterior(x0, x_t, t, b)
    marg_t = forward.q_marginal(x0, t, b)
    step = forward.q_step(x_prev, t, b)
    marg_prev = forward.q_marginal(x0, t - 1, b)
    # All four are proper densities for index t ≥ 1: β̃_t, 1 − ᾱ_t, β_t, 1 − ᾱ_{t−1} > 0.
    for name, g in (("posterior", post), ("q(x_t|x0)", marg_t), ("q(x_t|x_{t-1})", step), ("q(x_{t-1}|x0)", marg_prev)):
        assert np.all(g.variance > 0), f"{name} has variance {g.variance!r}; it must be > 0 for index t = {t} >= 1"
    terms = [
        post.log_prob(x_prev),
        marg_t.log_prob(x_t),
        step.log_prob(x_t),
        marg_prev.log_prob(x_prev),
    ]
    lhs = terms[0] + terms[1]
    rhs = terms[2] + terms[3]

    # Magnitudes (crude, independent): posterior c₀ = √ᾱ_{t−1} β/(1−ᾱ_t), c_t = √α (1−ᾱ_{t−1})/(1−ᾱ_t),
    # β̃ = (1−ᾱ_{t−1}) β/(1−ᾱ_t) (eq. 7); marginals √ᾱ, 1−ᾱ (eq. 4); step √(1−β), β (eq. 2).
    c0 = sa_p * beta / c_t
    cx = np.sqrt(1.0 - beta) * c_p / c_t
    bound = (
        _log_prob_error_bound(x_prev, post.mean, c0 * np.abs(x0) + cx * np.abs(x_t), c_p * beta / c_t)
        + _log_prob_error_bound(x_t, marg_t.mean, sa_t * np.abs(x0), c_t)
        + _log_prob_error_bound(x_t, step.mean, np.sqrt(1.0 - beta) * np.abs(x_prev), beta)
        + _log_prob_error_bound(x_prev, marg_prev.mean, sa_p * np.abs(x0), c_p)
    )
    # The two additions add ≤ u·Σ|terms|, already below the bound's d̄²/v and log parts.
    bound = bound + U * sum(np.abs(term) for term in terms)
    assert_within(lhs, rhs, bound, "log q(x_{t-1}|x_t,x0) + log q(x_t|x0) vs log q(x_t|x_{t-1}) + log q(x_{t-1}|x0)")


@given(st.data())
def test_beta_tilde_closed_forms_and_bounds(data: st.DataObject) -> None:
    r"""β̃_t in its precision form and its ratio form, and 0 ≤ β̃_t ≤ β_t.

    .. math::

        \tilde\beta_t = \Big(\frac{\alpha_t}{\beta_t} + \frac{1}{1-\bar\alpha_{t-1}}\Big)^{-1}
                      = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t,\qquad 0 \le \tilde\beta_t \le \beta_t

    The ratio form is Ho et al. 2020, eq. 7; the precision form is the precision of the product
    q(x_t | x_{t−1}) q(x_{t−1} | x₀) in x_{t−1} (completing the square in Bayes' rule, eq. 6).
    The bound holds because 1 − ᾱ_{t−1} ≤ 1 − ᾱ_t. Index 0 gives β̃ = 0 exactly (ᾱ before the first
    step is 1). Where the float64 β̃ exceeds β by rounding, the mpmath twin decides: the exact β̃ must
    be ≤ β and the float64 β̃ within the bound of it.
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    note(repro(betas=sched) + "; bt = posterior.beta_tilde(betas)")
    bt = posterior.beta_tilde(b)
    assert bt.shape == b.shape
    assert bt[0] == 0.0, f"beta_tilde at index 0 must be exactly 0 (posterior of the first step is a point mass), got {bt[0]!r}"
    assert np.all(bt >= 0.0), "beta_tilde must be >= 0"

    al = alphas.alphas(b)
    c = alphas.one_minus_alpha_bar(b)
    c_prev = np.concatenate([[0.0], c[:-1]])
    with np.errstate(divide="ignore"):
        precision_form = 1.0 / (al / b + 1.0 / c_prev)  # index 0: 1/(·+inf) = 0
    ratio_form = c_prev * b / c
    mag = crude_tables(b)
    exact_mag = mag.one_minus_alpha_bar[:-1] * b / mag.one_minus_alpha_bar[1:]
    # Every operation in either form combines non-negative numbers (no cancellation). Precision form:
    # α/β (fl(1−β): u, ÷: u), 1/(1−ᾱ_{t−1}) (table 2u, ÷ u), + (u), 1/· (u): ≤ 5u. Ratio form and
    # beta_tilde: two table entries (2u each) and two operations: ≤ 6u each. Bound: 2·(6u + 6u) = 24u.
    assert_within(bt, precision_form, 24 * U * exact_mag + FLOOR, "beta_tilde vs 1/(alpha/beta + 1/(1-alpha_bar_prev))")
    assert_within(bt, ratio_form, 24 * U * exact_mag + FLOOR, "beta_tilde vs beta (1-alpha_bar_prev)/(1-alpha_bar)")

    over = np.flatnonzero(bt > b)
    if over.size:
        # float64 cannot decide whether β̃ ≤ β here (β̃/β = 1 − O(u)): ask the exact twin.
        exact = twin_posterior.beta_tilde(b)
        for i in over.tolist():
            assert exact[i] <= b[i], f"exact beta_tilde[{i}] = {exact[i]} > beta = {b[i]!r}"
            assert_within(bt[i], float(exact[i]), 12 * U * float(exact[i]), f"beta_tilde[{i}] (above beta by rounding) vs exact")


@given(st.data())
def test_posterior_mean_at_predicted_x0_is_ddpm_eq11(data: st.DataObject) -> None:
    r"""The posterior mean at x̂₀(x_t, ε) is the reverse mean of DDPM eq. 11.

    .. math::

        \tilde\mu_t\Big(x_t,\ \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}\Big)
        = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon\Big)

    Ho et al. 2020, §3.2: eq. 7 (μ̃) with x₀ from eq. 4's reparameterisation (eq. 15) gives eqs.
    10–11. Checks ``posterior.posterior_mean`` ∘ ``parameterisation.predict_x0_from_eps``
    against ``parameterisation.ddpm_mean_from_eps`` at every index, for arbitrary x_t and ε (the
    identity is algebraic in them). Schedules with ᾱ_T > 0 (x̂₀ is singular at ᾱ = 0).
    """
    sched = data.draw(schedules(), label="schedule")
    b = sched.betas
    t = data.draw(timesteps(sched.T), label="t")
    shape = data.draw(shapes(), label="shape")
    x_t = data.draw(data_arrays(shape), label="x_t")
    eps = data.draw(data_arrays(shape), label="eps")
    note(
        repro(betas=sched, t=t, x_t=x_t, eps=eps)
        + "; posterior.posterior_mean(parameterisation.predict_x0_from_eps(x_t, eps, t, betas), x_t, t, betas)"
        + " - parameterisation.ddpm_mean_from_eps(x_t, eps, t, betas)"
    )
    x0_hat = parameterisation.predict_x0_from_eps(x_t, eps, t, b)
    lhs = posterior.posterior_mean(x0_hat, x_t, t, b)
    rhs = parameterisation.ddpm_mean_from_eps(x_t, eps, t, b)

    ct = crude_tables(b)
    _, c_t, sa_t, s1_t = ct.at(t)
    _, c_p, sa_p, _ = ct.at(t - 1)
    beta = float(b[t])
    sqrt_alpha = np.sqrt(1.0 - beta)
    c0 = sa_p * beta / c_t
    cx = sqrt_alpha * c_p / c_t
    ax, ae = np.abs(x_t), np.abs(eps)
    # x̂₀ = (x_t − √(1−ᾱ)ε)/√ᾱ: the numerator ≤ 4u(|x_t| + √(1−ᾱ)|ε|) (coefficient 2u, ×, −), the
    # division ≤ 3u more: δx̂₀ ≤ 7u (|x_t| + √(1−ᾱ)|ε|)/√ᾱ. μ̃ = c₀x̂₀ + c_t x_t: δ ≤ c₀δx̂₀ +
    # 7u(c₀|x̂₀| + c_t|x_t|) (coefficients ≤ 5u, ×, +). Eq. 11: β/√(1−ᾱ) (3u), ×ε, −, ÷√α (fl(1−β), sqrt,
    # ÷): ≤ 7u (|x_t| + β|ε|/√(1−ᾱ))/√α. With |x̂₀| ≤ (|x_t| + √(1−ᾱ)|ε|)/√ᾱ, the sum is below
    # 16u [c₀(|x_t| + √(1−ᾱ)|ε|)/√ᾱ + c_t|x_t| + (|x_t| + β|ε|/√(1−ᾱ))/√α].
    bound = 16 * U * (c0 * (ax + s1_t * ae) / sa_t + cx * ax + (ax + beta * ae / s1_t) / sqrt_alpha) + FLOOR
    assert_within(lhs, rhs, bound, "posterior_mean(x0_hat(x_t, eps), x_t) vs DDPM eq. 11 mean")
