r"""Properties of the parameterisations ε ↔ x̂₀ ↔ v ↔ score (property 4 of the suite).

All follow from the forward marginal :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`
(Ho et al. 2020, eq. 4): each test draws x₀ and ε, forms x_t with ``forward.q_sample``, and checks
that the conversions recover x₀, ε and v and give the score of q(x_t | x₀).

Reference functions are called through their module attributes (``parameterisation.…``) so that
the planted-bug tests in ``tests/quality`` can patch them. Tolerances are in units of u = 2⁻⁵³ and
derived in the comments, with √ᾱ, √(1 − ᾱ) from :func:`strategies.crude_tables` (independent of
the reference).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from ddspec.reference import forward, parameterisation

from .strategies import FLOOR, U, assert_within, crude_tables, data_arrays, noise_arrays, repro, schedules, shapes, timesteps


def _draw_inputs(data: st.DataObject, zero_terminal: bool):
    sched = data.draw(schedules(zero_terminal=zero_terminal), label="schedule")
    t = data.draw(timesteps(sched.T), label="t")
    shape = data.draw(shapes(), label="shape")
    x0 = data.draw(data_arrays(shape), label="x0")
    eps = data.draw(noise_arrays(shape), label="eps")
    return sched, t, x0, eps


@given(st.data())
def test_eps_x0_round_trip(data: st.DataObject) -> None:
    r"""ε → x̂₀ → ε: the ε- and x₀-parameterisations invert the forward marginal and each other.

    .. math::

        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}} = x_0,\qquad
        \hat\epsilon = \frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}} = \epsilon,\qquad
        \hat\epsilon(x_t, \hat x_0(x_t, \epsilon)) = \epsilon

    Ho et al. 2020, eq. 4 solved for x₀ (their eq. 15) and for ε. Schedules with ᾱ_T > 0 (x̂₀ from
    ε is singular at ᾱ = 0).
    """
    sched, t, x0, eps = _draw_inputs(data, zero_terminal=False)
    b = sched.betas
    note(repro(betas=sched, t=t, x0=x0, eps=eps) + "; x_t = forward.q_sample(x0, t, eps, betas); parameterisation.predict_x0_from_eps(x_t, eps, t, betas)")
    x_t = forward.q_sample(x0, t, eps, b)
    x0_hat = parameterisation.predict_x0_from_eps(x_t, eps, t, b)
    eps_hat = parameterisation.predict_eps_from_x0(x_t, x0, t, b)
    eps_round_trip = parameterisation.predict_eps_from_x0(x_t, x0_hat, t, b)

    _, _, sa, s1 = crude_tables(b).at(t)
    # S = √ᾱ|x₀| + √(1−ᾱ)|ε| is the magnitude of x_t's two terms; q_sample: δx_t ≤ 4uS (coefficients
    # 2u, ×, +). x̂₀: numerator ≤ 4uS + 4u·S, ÷√ᾱ (3u): δx̂₀ ≤ 11u S/√ᾱ; bound 16u S/√ᾱ (the condition
    # number of recovering x₀ is S/(√ᾱ|x₀|)). ε̂ likewise ≤ 11u S/√(1−ᾱ); bound 16u. The round trip
    # adds √ᾱ·δx̂₀ = 11uS and the ops again: ≤ 23u S/√(1−ᾱ); bound 32u.
    S = sa * np.abs(x0) + s1 * np.abs(eps)
    assert_within(x0_hat, x0, 16 * U * S / sa + FLOOR, "predict_x0_from_eps(q_sample(x0, eps), eps) vs x0")
    assert_within(eps_hat, eps, 16 * U * S / s1 + FLOOR, "predict_eps_from_x0(q_sample(x0, eps), x0) vs eps")
    assert_within(eps_round_trip, eps, 32 * U * S / s1 + FLOOR, "predict_eps_from_x0(x_t, predict_x0_from_eps(x_t, eps)) vs eps")


@given(st.data())
def test_v_round_trip(data: st.DataObject) -> None:
    r"""v → (x̂₀, ε̂) → v: the v-parameterisation recovers x₀ and ε, and v from them.

    .. math::

        v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0,\qquad
        \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v = x_0,\qquad
        \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,v = \epsilon

    Salimans & Ho 2022, §4 (both use ᾱ + (1 − ᾱ) = 1, so they hold at ᾱ = 0 too: zero-terminal
    schedules are included).
    """
    sched, t, x0, eps = _draw_inputs(data, zero_terminal=True)
    b = sched.betas
    note(repro(betas=sched, t=t, x0=x0, eps=eps) + "; v = parameterisation.v_from_x0_eps(x0, eps, t, betas); x_t = forward.q_sample(x0, t, eps, betas)")
    v = parameterisation.v_from_x0_eps(x0, eps, t, b)
    x_t = forward.q_sample(x0, t, eps, b)
    x0_hat = parameterisation.predict_x0_from_v(x_t, v, t, b)
    eps_hat = parameterisation.predict_eps_from_v(x_t, v, t, b)
    v_round_trip = parameterisation.v_from_x0_eps(x0_hat, eps_hat, t, b)

    # S = |x₀| + |ε| bounds |x_t| and |v| (√ᾱ, √(1−ᾱ) ≤ 1). δv, δx_t ≤ 4uS each; x̂₀ = √ᾱ x_t − √(1−ᾱ) v
    # adds (√ᾱ + √(1−ᾱ))·4uS ≤ 4√2 uS and its own 4u(√ᾱ|x_t| + √(1−ᾱ)|v|) ≤ 4√2 uS: ≤ 12uS; bound 16uS.
    # Same for ε̂. The round trip: (√ᾱ + √(1−ᾱ))·12uS + 4uS ≤ 21uS; bound 32uS.
    S = np.abs(x0) + np.abs(eps)
    assert_within(x0_hat, x0, 16 * U * S + FLOOR, "predict_x0_from_v(x_t, v) vs x0")
    assert_within(eps_hat, eps, 16 * U * S + FLOOR, "predict_eps_from_v(x_t, v) vs eps")
    assert_within(v_round_trip, v, 32 * U * S + FLOOR, "v_from_x0_eps(x0_hat, eps_hat) vs v")


@given(st.data())
def test_score_is_minus_eps_over_sigma(data: st.DataObject) -> None:
    r"""The score of q(x_t | x₀) at x_t = √ᾱ x₀ + √(1−ᾱ) ε is −ε/√(1 − ᾱ_t); ε_from_score inverts it.

    .. math::

        \nabla_{x_t}\log\mathcal N\big(x_t; \sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)I\big)
        = -\frac{x_t - \sqrt{\bar\alpha_t}x_0}{1-\bar\alpha_t} = -\frac{\epsilon}{\sqrt{1-\bar\alpha_t}}

    The gradient is taken analytically from the Gaussian ``forward.q_marginal`` returns (Ho et al.
    2020, eq. 4); the relation score = −ε/√(1−ᾱ) is the denoising-score-matching target (Vincent
    2011) used by Song et al. 2021 (score SDE) and Dhariwal & Nichol 2021, §4 (classifier guidance).
    Zero-terminal schedules are included (there 1 − ᾱ = 1).
    """
    sched, t, x0, eps = _draw_inputs(data, zero_terminal=True)
    b = sched.betas
    note(repro(betas=sched, t=t, x0=x0, eps=eps) + "; parameterisation.score_from_eps(eps, t, betas)")
    x_t = forward.q_sample(x0, t, eps, b)
    marginal = forward.q_marginal(x0, t, b)
    gradient = -(x_t - marginal.mean) / marginal.variance
    score = parameterisation.score_from_eps(eps, t, b)

    _, c, sa, s1 = crude_tables(b).at(t)
    # x_t − μ = √(1−ᾱ)ε up to δx_t + δμ ≤ 4uS + 2u√ᾱ|x₀| ≤ 6uS (S = √ᾱ|x₀| + √(1−ᾱ)|ε|) and the
    # subtraction's u√(1−ᾱ)|ε|; ÷(1−ᾱ) (2u + u): ≤ 10u S/(1−ᾱ). The score: ε/√(1−ᾱ) ≤ 3u|ε|/√(1−ᾱ)
    # ≤ 3uS/(1−ᾱ). Bound 16u S/(1−ᾱ) (recovering ε from x_t has condition number S/(√(1−ᾱ)|ε|)).
    S = sa * np.abs(x0) + s1 * np.abs(eps)
    assert_within(score, gradient, 16 * U * S / c + FLOOR, "score_from_eps(eps) vs grad log q(x_t|x0)")
    # Round trip: ÷√(1−ᾱ) then ×√(1−ᾱ): two roundings and the coefficient twice (2u each): ≤ 6u|ε|.
    assert_within(parameterisation.eps_from_score(score, t, b), eps, 8 * U * np.abs(eps) + FLOOR, "eps_from_score(score_from_eps(eps)) vs eps")
