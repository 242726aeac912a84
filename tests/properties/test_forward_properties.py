r"""Properties of the forward process (property 1 of the suite): ᾱ is the running product, and the
forward Gaussians compose.

.. math::

    \bar\alpha_t = \bar\alpha_{t-1}\,\alpha_t,\ \bar\alpha_0 = 1;\qquad
    q(x_t \mid x_r) \circ q(x_r \mid x_s) = q(x_t \mid x_s)\quad (s < r < t)

Sources: Ho et al. 2020, §2 (ᾱ_t = Π α_s) and eqs. 2 and 4; Kingma et al. 2021 (VDM), eq. 21 (the
transition q(x_t | x_s)). Index convention (``docs/conventions.md``):
0-based indices, ``-1`` is the data (ᾱ = 1), so "ᾱ_0 = 1" of the papers is ``alpha_bar_at(betas, -1)``.

Every reference function is called through its module attribute (``forward.q_marginal(...)``), so
that ``tests/quality/test_property_power_part1.py`` can patch a broken version in and watch the
property fail. Tolerances are in units of u = 2⁻⁵³ and derived in the comments; the magnitudes come
from :func:`strategies.crude_tables`, independent of the reference.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from ddspec.reference import alphas, forward

from .strategies import FLOOR, U, assert_within, crude_tables, data_arrays, repro, schedules, shapes, timesteps


@given(st.data())
def test_alpha_bar_is_the_running_product_of_alphas(data: st.DataObject) -> None:
    r"""ᾱ_t = ᾱ_{t−1} α_t for every index, with ᾱ before the first step equal to 1.

    Source: Ho et al. 2020, §2 (":math:`\alpha_t := 1-\beta_t`, :math:`\bar\alpha_t := \prod_{s=1}^t \alpha_s`");
    docs/conventions.md (index −1 is the data, ᾱ = 1). Checks ``alphas.alpha_bar`` against
    ``alphas.alphas`` at every index of schedules with T up to 2000, including zero-terminal ones
    (ᾱ_T = 0 exactly).
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    note(repro(betas=sched) + "; ab = alphas.alpha_bar(betas); al = alphas.alphas(betas)")

    assert float(alphas.alpha_bar_at(b, -1)) == 1.0, "alpha_bar before the first step (index -1) must be 1"
    ab = alphas.alpha_bar(b)
    al = alphas.alphas(b)
    assert ab.shape == b.shape
    expected = np.concatenate([[1.0], ab[:-1]]) * al
    # Error budget, relative to ᾱ_t: each table entry is within 1 ULP of exact (≤ 2u relative; two
    # entries), fl(1 − β) ≤ u, the product here ≤ u: 6u. Bound: 12u (×2 for the ULP-vs-u slack).
    mag = crude_tables(b).alpha_bar[1:]
    assert_within(ab, expected, 12 * U * mag + FLOOR, "alpha_bar[t] vs alpha_bar[t-1] * alphas[t]")


@given(st.data())
def test_forward_transitions_compose(data: st.DataObject) -> None:
    r"""Pushing q(x_r | x_s) through q(x_t | x_r) gives q(x_t | x_s); the transition reduces to eq. 2 and eq. 4.

    For −1 ≤ s < r < t (s = −1: x_s is the data x₀ and q(x_r | x₀) is the marginal, Ho et al.
    2020, eq. 4), a linear-Gaussian push forward gives

    .. math::

        \text{mean: } \sqrt{\bar\alpha_t/\bar\alpha_r}\,\sqrt{\bar\alpha_r/\bar\alpha_s} = \sqrt{\bar\alpha_t/\bar\alpha_s},\qquad
        \text{variance: } \frac{\bar\alpha_t}{\bar\alpha_r}\Big(1-\frac{\bar\alpha_r}{\bar\alpha_s}\Big) + 1-\frac{\bar\alpha_t}{\bar\alpha_r}
            = 1-\frac{\bar\alpha_t}{\bar\alpha_s}

    (Kingma et al. 2021, eq. 21). Also: ``q_transition(x, t, -1)`` is
    ``q_marginal(x, t)`` (eq. 4) and ``q_transition(x, t, t-1)`` is ``q_step(x, t)`` (eq. 2).
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    T = sched.T
    shape = data.draw(shapes(), label="shape")
    x = data.draw(data_arrays(shape), label="x_s")
    t = data.draw(timesteps(T, low=1), label="t")
    r = data.draw(timesteps(T, low=0, high=t - 1), label="r")
    s = data.draw(st.one_of(st.just(-1), timesteps(T, low=-1, high=r - 1)), label="s")
    note(repro(betas=sched, x=x, t=t, r=r, s=s) + "; forward.q_transition(x, t, s, betas)")
    ct = crude_tables(b)
    one = np.ones(1)

    # --- reductions: eq. 4 (s = -1) and eq. 2 (s = t - 1) ---
    # Both sides are a coefficient (≤ 1 ULP: sqrt of a ≤ 1-ULP table entry, or a table entry) times
    # x (one rounding): ≤ 2·2u + 2u = 6u relative; bound 8u.
    for tt in (t, r):
        _, c_tt, sa_tt, _ = ct.at(tt)
        via_transition = forward.q_transition(x, tt, -1, b)
        marginal = forward.q_marginal(x, tt, b)
        assert_within(via_transition.mean, marginal.mean, 8 * U * sa_tt * np.abs(x) + FLOOR, f"q_transition(x, {tt}, -1).mean vs q_marginal(x, {tt}).mean")
        assert_within(via_transition.variance, marginal.variance, 8 * U * c_tt + FLOOR, f"q_transition(x, {tt}, -1).variance vs q_marginal(x, {tt}).variance")
    step = forward.q_step(x, t, b)
    via_transition = forward.q_transition(x, t, t - 1, b)
    assert_within(via_transition.mean, step.mean, 8 * U * np.sqrt(1.0 - b[t]) * np.abs(x) + FLOOR, "q_transition(x, t, t-1).mean vs q_step(x, t).mean")
    assert_within(via_transition.variance, step.variance, 8 * U * b[t] + FLOOR, "q_transition(x, t, t-1).variance vs q_step(x, t).variance")

    # --- composition s -> r -> t ---
    inner = forward.q_marginal(x, r, b) if s == -1 else forward.q_transition(x, r, s, b)
    outer_coef = float(forward.q_transition(one, t, r, b).mean[0])  # the affine map's slope
    outer_var = float(forward.q_transition(one, t, r, b).variance)
    direct = forward.q_marginal(x, t, b) if s == -1 else forward.q_transition(x, t, s, b)
    pushed_mean = outer_coef * inner.mean
    pushed_var = outer_coef**2 * inner.variance + outer_var
    # Mean: fl(a₂·fl(a₁·x)) vs fl(a·x) with three coefficients each ≤ 2u relative: 3·2u + 3u = 9u
    # relative to |a·x|; bound 16u.
    coef = np.sqrt(ct.ratio(t, s))
    assert_within(pushed_mean, direct.mean, 16 * U * coef * np.abs(x) + FLOOR, "mean of q(x_t|x_r) pushed over q(x_r|x_s) vs q(x_t|x_s)")
    # Variance: a₂² (2·2u + u), times v₁ (2u) rounded (u): 8u on the first term; v₂ 2u; both terms
    # are ≥ 0, so the sum (u) has relative error ≤ 9u; the direct variance 2u: 11u; bound 16u.
    assert_within(pushed_var, direct.variance, 16 * U * ct.one_minus_ratio(t, s) + FLOOR, "variance of q(x_t|x_r) pushed over q(x_r|x_s) vs q(x_t|x_s)")
