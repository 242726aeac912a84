r"""Properties of the DDIM family q_σ (properties 5 and 6 of the suite).

.. math::

    q_\sigma(x_s \mid x_t, x_0) = \mathcal N\Big(\sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,
        \frac{x_t-\sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma^2 I\Big)\quad\text{(DDIM eq. 7, s the previous index)}

* Lemma 1 of Song et al. 2021 (DDIM): for every admissible σ (σ² ≤ 1 − ᾱ_s), pushing
  q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t)I) through q_σ gives q(x_s | x₀) = N(√ᾱ_s x₀, (1 − ᾱ_s)I),
  on the full schedule and between any two indices of a subsequence (DDIM §4.2).
* DDIM eq. 16 with η = 1 makes q_σ the DDPM posterior (Ho et al. 2020, eq. 7): on the full schedule
  directly; on a subsequence τ, the posterior of the respaced schedule
  β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} (Nichol & Dhariwal 2021, §4).
* η = 0 gives σ = 0: the step is deterministic (DDIM §4.1, eq. 12 with σ = 0) and keeps ε.

q_σ is affine in (x₀, x_t): its coefficients are extracted by evaluating ``ddim.q_sigma`` at
(x₀, x_t) = (1, 0) and (0, 1), and the affine form is confirmed at the drawn inputs.

Reference functions are called through their module attributes (``ddim.q_sigma``, …) so that the
planted-bug tests in ``tests/quality`` can patch them. Tolerances are in units of u = 2⁻⁵³,
derived in the comments; magnitudes come from :func:`strategies.crude_tables` (independent of the
reference). Where the float64 comparison of two reference paths is blurred by the conditioning of
one of them (the respaced schedule), both are compared with the exact mpmath twin.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, note
from hypothesis import strategies as st

from ddspec.reference import alphas, ddim, forward, likelihood, parameterisation, posterior, sampling, timesteps
from ddspec.reference.twin import posterior as twin_posterior

from .strategies import (
    FLOOR,
    U,
    assert_within,
    crude_tables,
    data_arrays,
    etas,
    repro,
    schedules,
    shapes,
    subsequences,
    timestep_pairs,
    timesteps as timestep_indices,
)

_ONE = np.ones(1)
_ZERO = np.zeros(1)


def _affine(gaussian_of) -> tuple[float, float, float]:
    """``(coefficient of x₀, coefficient of x_t, variance)`` of a Gaussian affine in (x₀, x_t), from unit inputs."""
    g1 = gaussian_of(_ONE, _ZERO)
    g2 = gaussian_of(_ZERO, _ONE)
    return float(g1.mean[0]), float(g2.mean[0]), float(g1.variance)


def _q_sigma_coefficient_errors(c_s: float, c_t: float, sa_s: float, sa_t: float, var: float, b_hat: float) -> tuple[float, float]:
    r"""Absolute error bounds ``(e_A, e_B)`` of q_σ's coefficients A (of x₀) and B (of x_t), extracted at unit inputs.

    q_σ computes c = √max(1 − ᾱ_s − σ², 0), B = c·fl(1/√(1−ᾱ_t)) and A = √ᾱ_s − c·fl(√ᾱ_t/√(1−ᾱ_t)).
    Against the exact coefficients for the exact variance ``var`` (= σ² up to σ's own error):
    rest = 1 − ᾱ_s − σ² is off by ≤ 2u(1−ᾱ_s) (table) + (10u)σ² (σ from ddim_sigma, squared) + u·rest,
    then √· squared back and ÷(1 − ᾱ_t) (≤ 8u more): |B̂² − B²| ≤ D = 32u(1 − ᾱ_s + var)/(1 − ᾱ_t).
    Since |B̂ − B|(B̂ + B) = |B̂² − B²| and |B̂ − B| ≤ B̂ + B: e_B = min(D/B̂, √D) (the √ arises where
    rest ≈ 0, i.e. σ at σ_max). A carries the same c: e_A = 8u(√ᾱ_s + B̂√ᾱ_t) + √ᾱ_t·e_B.
    """
    D = 32 * U * (c_s + var) / c_t
    e_b = min(D / b_hat, np.sqrt(D)) if b_hat > 0 else float(np.sqrt(D))
    e_a = 8 * U * (sa_s + b_hat * sa_t) + sa_t * e_b
    return e_a, e_b


@given(st.data())
def test_q_sigma_preserves_the_forward_marginals(data: st.DataObject) -> None:
    r"""DDIM Lemma 1: q_σ pushes q(x_t | x₀) forward to q(x_s | x₀), for every admissible σ.

    With q_σ(x_s | x_t, x₀) = N(A x₀ + B x_t, σ²I) and x_t ~ N(√ᾱ_t x₀, (1 − ᾱ_t)I):

    .. math::

        A + B\sqrt{\bar\alpha_t} = \sqrt{\bar\alpha_s},\qquad B^2 (1-\bar\alpha_t) + \sigma^2 = 1-\bar\alpha_s

    (Song et al. 2021, Lemma 1 with eq. 7, proof in App. B; §4.2 for subsequences). Pairs
    (t, s): a step of the full schedule (s = t − 1) or every step of a random subsequence, down to
    the data (s = −1, where σ must be 0 and q_σ is the point mass at x₀). σ: a fraction of
    σ_max = √(1 − ᾱ_s) (0 and σ_max included), or σ(η) of eq. 16.
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    T = sched.T
    if data.draw(st.booleans(), label="full schedule step"):
        t = data.draw(timestep_indices(T), label="t")
        pairs = [(t, t - 1)]
        tau = None
    else:
        tau = data.draw(subsequences(T), label="subsequence")
        pairs = timesteps.timestep_pairs(tau, T)
    sigma_kind = data.draw(st.sampled_from(["fraction", "eta"]), label="sigma kind")
    if sigma_kind == "fraction":
        frac = data.draw(st.one_of(st.sampled_from([0.0, 1.0, 1.0 - 1e-9]), st.floats(0.0, 1.0)), label="sigma / sigma_max")
    else:
        eta = data.draw(etas(), label="eta")
    shape = data.draw(shapes(), label="shape")
    x0 = data.draw(data_arrays(shape), label="x0")
    x_t = data.draw(data_arrays(shape), label="x_t")
    note(repro(betas=sched, tau=tau, pairs=pairs, x0=x0, x_t=x_t) + "; ddim.q_sigma(x0, x_t, t, s, sigma, betas)")
    ct = crude_tables(b)

    for t, s in pairs:
        if sigma_kind == "fraction":
            sigma = frac * ddim.ddim_sigma_max(b, t, s)
        else:
            sigma = ddim.ddim_sigma(b, t, s, eta)
        note(f"step t={t} -> s={s}: sigma={sigma!r}")
        A, B, var = _affine(lambda a, c: ddim.q_sigma(a, c, t, s, sigma, b))
        # q_σ's variance is σ² rounded once (σ·σ here, pow(σ, 2) there: each ≤ u/2 from the exact σ²).
        assert_within(var, sigma * sigma, 2 * U * sigma * sigma, f"q_sigma variance vs sigma^2 (t={t}, s={s})")
        _, _, sa_t, _ = ct.at(t)
        _, c_s, sa_s, _ = ct.at(s)

        # Affine form at the drawn inputs: q_σ computes √ᾱ_s x₀ + c·(x_t − √ᾱ_t x₀)/√(1−ᾱ_t); with
        # the coefficients A and B extracted above, the two evaluations differ only by rounding,
        # ≤ 8u times the magnitude M = √ᾱ_s|x₀| + B̂(|x_t| + √ᾱ_t|x₀|), B̂ = c/√(1−ᾱ_t) as computed
        # (at σ = σ_max, c is √ of a rounding residue, not 0).
        g = ddim.q_sigma(x0, x_t, t, s, sigma, b)
        M = sa_s * np.abs(x0) + abs(B) * (np.abs(x_t) + sa_t * np.abs(x0))
        assert_within(g.mean, A * x0 + B * x_t, 8 * U * M + FLOOR, f"q_sigma mean at (x0, x_t) vs A x0 + B x_t (t={t}, s={s})")

        # Push q(x_t | x₀) through the affine map.
        marg_t = forward.q_marginal(_ONE, t, b)
        mean_t, var_t = float(marg_t.mean[0]), float(marg_t.variance)
        if s == -1:
            mean_s, var_s = 1.0, 0.0  # the data: point mass at x₀
        else:
            marg_s = forward.q_marginal(_ONE, s, b)
            mean_s, var_s = float(marg_s.mean[0]), float(marg_s.variance)
        pushed_mean = A + B * mean_t
        pushed_var = B * B * var_t + var
        # Mean: A and B·√ᾱ_t share q_σ's c exactly, so c's error cancels; what is left is rounding,
        # ≤ 8u(√ᾱ_s + B√ᾱ_t), plus the tables (2u each): bound 16u(√ᾱ_s + B̂√ᾱ_t). Variance: B̂²(1−ᾱ_t)
        # reproduces fl(1−ᾱ_s − σ²) to ≤ 10u (c², ÷√(1−ᾱ_t) squared, ×(1−ᾱ_t)), whose own error is
        # ≤ 2u(1−ᾱ_s) + u σ² + u·rest; adding σ² and comparing with 1−ᾱ_s (2u): all terms are
        # ≤ 1−ᾱ_s + σ² ≤ 2(1−ᾱ_s), so ≤ 32u(1 − ᾱ_s).
        assert_within(pushed_mean, mean_s, 16 * U * (sa_s + abs(B) * sa_t) + FLOOR, f"A + B sqrt(alpha_bar_t) vs sqrt(alpha_bar_s) (t={t}, s={s})")
        assert_within(pushed_var, var_s, 32 * U * c_s + FLOOR, f"B^2 (1 - alpha_bar_t) + sigma^2 vs 1 - alpha_bar_s (t={t}, s={s})")


def _compare_with_posterior(
    sigma: float, q_of, p: tuple[float, float, float], p_rel: float, crude, t: int, s: int, what: str
) -> tuple[float, float, float]:
    """Compare σ² and q_σ's coefficients (A, B) with a posterior's (c₀, c_t, β̃), the latter of relative error ≤ ``p_rel``.

    ``q_of(x0, x_t)`` evaluates q_σ; it is called only after σ² has been checked (a wrong σ can be
    inadmissible, and q_σ would refuse it before the property could say why). Returns (A, B, σ²).
    """
    c0, cx, bt = p
    _, c_t, sa_t, _ = crude.at(t)
    _, c_s, sa_s, _ = crude.at(s)
    # σ from ddim_sigma: three table entries (2u each), ·, ÷, √: ≤ 5u, so σ² ≤ 11u; plus β̃'s p_rel.
    assert_within(sigma * sigma, bt, (16 * U + p_rel) * bt + FLOOR, f"{what}: sigma(eta=1)^2 vs beta_tilde (t={t}, s={s})")
    A, B, var = _affine(q_of)
    e_a, e_b = _q_sigma_coefficient_errors(c_s, c_t, sa_s, sa_t, bt, B)
    assert_within(B, cx, e_b + p_rel * abs(cx) + FLOOR, f"{what}: q_sigma coefficient of x_t vs posterior coef_xt (t={t}, s={s})")
    assert_within(A, c0, e_a + p_rel * abs(c0) + FLOOR, f"{what}: q_sigma coefficient of x0 vs posterior coef_x0 (t={t}, s={s})")
    return A, B, var


@given(st.data())
def test_eta_one_is_the_ddpm_posterior(data: st.DataObject) -> None:
    r"""On the full schedule, η = 1 turns q_σ into the DDPM posterior: both mean coefficients and σ² = β̃.

    .. math::

        \sigma_t(1)^2 = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\Big(1-\frac{\bar\alpha_t}{\bar\alpha_{t-1}}\Big) = \tilde\beta_t,\qquad
        \sqrt{1-\bar\alpha_{t-1}-\tilde\beta_t}\,\frac{1}{\sqrt{1-\bar\alpha_t}} = \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t},\qquad
        \sqrt{\bar\alpha_{t-1}} - \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\sqrt{\bar\alpha_t}
            = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}

    Song et al. 2021 (DDIM), §4.1 (with this σ the forward process is Markovian again and the
    generative process is a DDPM) and eq. 16 (that σ is η = 1); Ho et al. 2020, eq. 7.
    ``ddim.q_sigma`` with ``ddim.ddim_sigma(eta=1)`` against ``posterior.q_posterior``, at every
    index (index 0 steps to the data: both are the point mass at x₀), also for zero-terminal
    schedules, and at the drawn inputs.
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    t = data.draw(timestep_indices(sched.T), label="t")
    shape = data.draw(shapes(), label="shape")
    x0 = data.draw(data_arrays(shape), label="x0")
    x_t = data.draw(data_arrays(shape), label="x_t")
    note(repro(betas=sched, t=t, x0=x0, x_t=x_t) + "; sigma = ddim.ddim_sigma(betas, t, t - 1, 1.0); ddim.q_sigma(x0, x_t, t, t - 1, sigma, betas); posterior.q_posterior(x0, x_t, t, betas)")
    s = t - 1
    sigma = ddim.ddim_sigma(b, t, s, 1.0)
    p = _affine(lambda a, c: posterior.q_posterior(a, c, t, b))
    crude = crude_tables(b)
    # Posterior coefficients: products/quotients of ≤ 4 table entries (2u each) and ≤ 4 operations: ≤ 12u.
    q = _compare_with_posterior(sigma, lambda a, c: ddim.q_sigma(a, c, t, s, sigma, b), p, 16 * U, crude, t, s, "full schedule")

    # At the drawn inputs: each side is its coefficients applied to (x₀, x_t); the coefficient
    # bounds above times |x₀|, |x_t|, plus 8u of each side's magnitude for the arithmetic.
    _, c_t, sa_t, _ = crude.at(t)
    _, c_s, sa_s, _ = crude.at(s)
    e_a, e_b = _q_sigma_coefficient_errors(c_s, c_t, sa_s, sa_t, p[2], q[1])
    ax0, axt = np.abs(x0), np.abs(x_t)
    m_q = sa_s * ax0 + q[1] * (axt + sa_t * ax0)
    m_p = abs(p[0]) * ax0 + abs(p[1]) * axt
    bound = (e_a + 16 * U * abs(p[0])) * ax0 + (e_b + 16 * U * abs(p[1])) * axt + 8 * U * (m_q + m_p) + FLOOR
    q_mean = ddim.q_sigma(x0, x_t, t, s, sigma, b).mean
    p_mean = posterior.q_posterior(x0, x_t, t, b).mean
    assert_within(q_mean, p_mean, bound, "q_sigma(eta=1) mean vs posterior mean at (x0, x_t)")


def _respaced_relative_error(resp: np.ndarray, j: int) -> float:
    r"""Relative error bound of the posterior coefficients of a respaced schedule at its index j, from rounding β'.

    β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} is rounded once (≤ u β'_i), which perturbs the factor 1 − β'_i by
    ≤ u β'_i/(1 − β'_i): the recomputed ᾱ'_j is off by E_j = u Σ_{i≤j} β'_i/(1 − β'_i) relative, and
    1 − ᾱ'_j by E_j ᾱ'_j/(1 − ᾱ'_j). (A β' of exactly 1, the zero-terminal last step, is exact.)
    The posterior coefficients combine ᾱ'_{j−1}, 1 − ᾱ'_{j−1}, 1 − ᾱ'_j and 1 − β'_j, hence the sum below.
    This is the conditioning of representing the strided step by a rounded β': κ = β'/(1 − β') is
    large for long strides, which is why the respaced posterior is also checked against the twin.
    """
    ok = resp < 1.0
    kappa = np.where(ok, resp / np.where(ok, 1.0 - resp, 1.0), 0.0)
    E = U * np.cumsum(kappa)
    crude = crude_tables(resp)
    ab, c = crude.alpha_bar[1:], crude.one_minus_alpha_bar[1:]
    rel = E[j] * (1.0 + ab[j] / c[j]) + U * kappa[j]
    if j >= 1:
        rel += E[j - 1] * (1.0 + ab[j - 1] / c[j - 1])
    return float(rel)


@given(st.data())
def test_eta_one_on_a_subsequence_is_the_respaced_posterior(data: st.DataObject) -> None:
    r"""On a subsequence τ, η = 1 turns q_σ into the DDPM posterior of the respaced schedule.

    .. math::

        \beta'_i = 1-\frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}},\quad \bar\alpha_{\tau_0} = 1:\qquad
        q_{\sigma(\eta=1)}(x_{\tau_{i-1}} \mid x_{\tau_i}, x_0) = q'(x_{i-1} \mid x_i, x_0)\ \text{(Ho et al. 2020, eq. 7 on } \beta'\text{)}

    Song et al. 2021 (DDIM), §4.2 and eq. 16 (η = 1 is the DDPM of the respaced chain); Nichol &
    Dhariwal 2021, §4 (the respaced β'). For every step (τ_i → τ_{i−1}, the last one to the data)
    of a random subsequence: ``ddim.q_sigma`` on the original schedule with ``t_prev`` against
    ``posterior.q_posterior`` on ``timesteps.respaced_betas`` (to a tolerance that includes the
    respacing's rounding, :func:`_respaced_relative_error`), against the strided
    ``posterior.q_posterior(…, t_prev=…)``, and against the exact mpmath twin of the strided
    posterior (decisive even where the respaced float64 schedule is ill-conditioned).
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    T = sched.T
    tau = data.draw(subsequences(T, max_len=12), label="subsequence")  # ≤ 12 steps: each costs an mpmath twin
    note(repro(betas=sched, tau=tau) + "; resp = timesteps.respaced_betas(betas, tau); ddim.q_sigma(np.ones(1), np.zeros(1), t, s, ddim.ddim_sigma(betas, t, s, 1.0), betas)")
    resp = timesteps.respaced_betas(b, tau)  # ascending: resp[j] belongs to the j-th smallest index
    # A β' that rounds to 1 before the last step (a stride with ᾱ ratio < 2⁻⁵⁴) is not a valid schedule.
    assume(np.all(resp[:-1] < 1.0))
    ascending = np.sort(tau)
    crude = crude_tables(b)
    for t, s in timesteps.timestep_pairs(tau, T):
        j = int(np.searchsorted(ascending, t))
        sigma = ddim.ddim_sigma(b, t, s, 1.0)
        q_of = lambda a, c: ddim.q_sigma(a, c, t, s, sigma, b)  # noqa: E731
        # Against the exact posterior (mpmath, rounded to float64: u); the sharpest check, so first.
        exact = twin_posterior.posterior_coefficients(b, t, s)
        twin = (float(exact.coef_x0), float(exact.coef_xt), float(exact.variance))
        _compare_with_posterior(sigma, q_of, twin, U, crude, t, s, "twin of the strided posterior")
        # The strided posterior in float64 (≤ 12u, as on the full schedule; bound 16u).
        strided = _affine(lambda a, c: posterior.q_posterior(a, c, t, b, t_prev=s))
        _compare_with_posterior(sigma, q_of, strided, 16 * U, crude, t, s, "strided posterior")
        # The posterior of the respaced schedule at its index j (≤ 16u + the respacing's rounding, ×2).
        respaced = _affine(lambda a, c: posterior.q_posterior(a, c, j, resp))
        rel = 16 * U + 2 * _respaced_relative_error(resp, j)
        _compare_with_posterior(sigma, q_of, respaced, rel, crude, t, s, "respaced posterior")


@given(st.data())
def test_eta_zero_is_deterministic(data: st.DataObject) -> None:
    r"""η = 0 gives σ = 0: q_σ is the point mass at DDIM eq. 12's deterministic update, which keeps ε.

    .. math::

        \sigma(0) = 0,\qquad x_s = \sqrt{\bar\alpha_s}\,x_0 + \sqrt{1-\bar\alpha_s}\,\epsilon,\quad
        \epsilon = \frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\qquad
        \frac{x_s - \sqrt{\bar\alpha_s}\,x_0}{\sqrt{1-\bar\alpha_s}} = \epsilon

    Song et al. 2021 (DDIM), eq. 12 with σ_t = 0 and §4.1 (with σ = 0 the step is deterministic
    given x_t and x₀: the implicit model, DDIM); eq. 16 with η = 0. For any pair −1 ≤ s < t
    (s = −1: x_s = x₀ exactly).
    """
    sched = data.draw(schedules(zero_terminal=True), label="schedule")
    b = sched.betas
    t, s = data.draw(timestep_pairs(sched.T), label="(t, s)")
    shape = data.draw(shapes(), label="shape")
    x0 = data.draw(data_arrays(shape), label="x0")
    x_t = data.draw(data_arrays(shape), label="x_t")
    note(repro(betas=sched, t=t, s=s, x0=x0, x_t=x_t) + "; ddim.q_sigma(x0, x_t, t, s, ddim.ddim_sigma(betas, t, s, 0.0), betas)")
    sigma = ddim.ddim_sigma(b, t, s, 0.0)
    assert sigma == 0.0, f"ddim_sigma(eta=0) = {sigma!r}, not 0"
    g = ddim.q_sigma(x0, x_t, t, s, sigma, b)
    assert np.all(g.variance == 0.0), f"q_sigma(sigma=0) variance {g.variance!r} is not 0"
    x_s = g.mean
    if s == -1:
        assert np.array_equal(x_s, x0), "a deterministic step to the data must return x0 exactly"
        return
    eps = parameterisation.predict_eps_from_x0(x_t, x0, t, b)
    crude = crude_tables(b)
    _, _, sa_t, s1_t = crude.at(t)
    _, _, sa_s, s1_s = crude.at(s)
    R = (np.abs(x_t) + sa_t * np.abs(x0)) / s1_t  # magnitude of ε's two terms
    # ε = (x_t − √ᾱ_t x₀)/√(1−ᾱ_t): ≤ 4uR. x_s from q_σ: ≤ 8u(√ᾱ_s|x₀| + √(1−ᾱ_s)R). Re-noising x₀
    # with ε (q_sample): 4u(√ᾱ_s|x₀| + √(1−ᾱ_s)|ε|) + √(1−ᾱ_s)·4uR. Sum ≤ 16u(√ᾱ_s|x₀| + √(1−ᾱ_s)R).
    renoised = forward.q_sample(x0, s, eps, b)
    assert_within(x_s, renoised, 16 * U * (sa_s * np.abs(x0) + s1_s * R) + FLOOR, "q_sigma(sigma=0) mean vs sqrt(ab_s) x0 + sqrt(1-ab_s) eps")
    # ε at x_s: (x_s − √ᾱ_s x₀)/√(1−ᾱ_s) with x_s's 8u(…) and ≤ 3u(|x_s| + √ᾱ_s|x₀|) of its own,
    # ÷√(1−ᾱ_s); plus ε's 4uR: ≤ 32u(√ᾱ_s|x₀|/√(1−ᾱ_s) + R).
    eps_s = parameterisation.predict_eps_from_x0(x_s, x0, s, b)
    assert_within(eps_s, eps, 32 * U * (sa_s * np.abs(x0) / s1_s + R) + FLOOR, "eps at x_s vs eps at x_t (deterministic DDIM keeps eps)")



# ---------------------------------------------------------------------------------------------------
# The forward process of the DDIM family (DDIM eq. 8), Theorem 1's weights, the ODE in σ-space
# ---------------------------------------------------------------------------------------------------


@given(st.data())
def test_ddim_forward_and_q_sigma_are_one_joint_law(data: st.DataObject) -> None:
    r"""Bayes' rule (DDIM eq. 8): q_σ(x_s|x_t,x₀) q(x_t|x₀) and q_σ(x_t|x_s,x₀) q(x_s|x₀) are one joint law.

    With q_σ(x_s|x_t,x₀) = N(A x₀ + B x_t, σ²) (eq. 7) and q_σ(x_t|x_s,x₀) = N(A′ x₀ + G x_s, v)
    (``ddim.q_sigma_forward``), the two factorisations of the Gaussian pair (x_s, x_t) given x₀ agree
    iff, with the marginals of Lemma 1 (Var x_t = 1 − ᾱ_t, Var x_s = 1 − ᾱ_s):

    .. math:: G\,(1-\bar\alpha_s) = B\,(1-\bar\alpha_t) = \mathrm{Cov}(x_s, x_t),\qquad G^2(1-\bar\alpha_s) + v = 1-\bar\alpha_t,
              \qquad A' + G\sqrt{\bar\alpha_s} = \sqrt{\bar\alpha_t}.

    Tolerances: every quantity is a product/quotient of a few exactly-tabled values and the shared
    √(1 − ᾱ_s − σ²) (computed once, in double-double, by ``ddim_mean_coefficients``), so each side
    is within 16u relative of its exact value for the given σ; the sums are of non-negative terms.
    The x₀ identity cancels where G√ᾱ_s ≈ √ᾱ_t: its bound is 16u(|A′| + G√ᾱ_s + √ᾱ_t).
    """
    sched = data.draw(schedules(min_T=2), label="schedule")
    b = sched.betas
    t, s = data.draw(timestep_pairs(sched.T, allow_data=False), label="(t, s)")
    frac = data.draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.0, 1.0)), label="sigma / sigma_max")
    sigma = frac * ddim.ddim_sigma_max(b, t, s)
    note(repro(betas=sched, t=t, s=s, sigma=sigma) + "; ddim.q_sigma_forward(x_s, x0, t, s, sigma, betas)")
    _, B, _ = _affine(lambda a, c: ddim.q_sigma(a, c, t, s, sigma, b))
    A_f, G, v = _affine(lambda a, c: ddim.q_sigma_forward(c, a, t, s, sigma, b))
    # the identity's own values from the reference tables (≤ 1 ULP each); they add ≤ 2u to each side
    c_t, c_s = float(alphas.one_minus_alpha_bar_at(b, t)), float(alphas.one_minus_alpha_bar_at(b, s))
    sa_t, sa_s = float(np.sqrt(alphas.alpha_bar_at(b, t))), float(np.sqrt(alphas.alpha_bar_at(b, s)))
    assert_within(G * c_s, B * c_t, 40 * U * B * c_t + FLOOR, f"Cov(x_s, x_t) two ways at t={t}, s={s}")
    assert_within(G * G * c_s + v, c_t, 40 * U * c_t, f"Var(x_t) at t={t}, s={s}")
    assert_within(A_f + G * sa_s, sa_t, 16 * U * (abs(A_f) + G * sa_s + sa_t) + FLOOR, f"E[x_t] at t={t}, s={s}")


@given(st.data())
def test_ddim_forward_at_eta_one_is_the_ddpm_forward(data: st.DataObject) -> None:
    r"""At σ = σ(η = 1) and s = t − 1, DDIM's forward q_σ(x_t|x_{t−1},x₀) is DDPM's q(x_t|x_{t−1}) = N(√α_t x_{t−1}, β_t).

    The coefficient of x₀ vanishes (the process becomes Markovian), the gain is √(1 − β_t) and the
    variance β_t (Song et al. 2021, §3.1 and eq. 16; Ho et al. 2020, eq. 2).

    Tolerances: σ from ``ddim_sigma`` is within 10u of exact; √(1 − ᾱ_s − σ²) amplifies that by
    κ = (1 − ᾱ_s)/(1 − ᾱ_s − σ²) = (1 − ᾱ_t)/(α_t(1 − ᾱ_s)) at η = 1 (from β̃ = (1 − ᾱ_s)β/(1 − ᾱ_t)),
    so |G − √α_t| ≤ (10κ + 16)u√α_t, the x₀ coefficient √ᾱ_t − G√ᾱ_s is off by that times √ᾱ_s plus
    8u√ᾱ_t, and the variance (1 − ᾱ_t)σ²/(1 − ᾱ_s) by (20 + 8)u relative. κ comes from the crude tables.
    """
    sched = data.draw(schedules(min_T=2), label="schedule")
    b = sched.betas
    t = data.draw(timestep_indices(sched.T, low=1), label="t")
    s = t - 1
    sigma = ddim.ddim_sigma(b, t, s, 1.0)
    note(repro(betas=sched, t=t) + "; ddim.q_sigma_forward(x_s, x0, t, t - 1, ddim.ddim_sigma(betas, t, t - 1, 1.0), betas)")
    A_f, G, v = _affine(lambda a, c: ddim.q_sigma_forward(c, a, t, s, sigma, b))
    beta = float(b[t])
    _, c_t, sa_t, _ = crude_tables(b).at(t)
    _, c_s, sa_s, _ = crude_tables(b).at(s)
    kappa = c_t / ((1.0 - beta) * c_s)
    e_g = (10 * kappa + 16) * U * np.sqrt(1.0 - beta)
    assert_within(G, np.sqrt(1.0 - beta), e_g, f"gain of x_(t-1) at t={t}")
    assert_within(A_f, 0.0, e_g * sa_s + 8 * U * sa_t + FLOOR, f"coefficient of x0 at t={t}")
    assert_within(v, beta, 28 * U * beta, f"variance at t={t}")


@given(st.data())
def test_gamma_at_eta_one_is_the_ddpm_eps_weight(data: st.DataObject) -> None:
    r"""DDIM Theorem 1's γ_t at σ = σ(η = 1), s = t − 1, is DDPM's weight β_t²/(2σ_t²α_t(1 − ᾱ_t)) (Ho et al. 2020, eq. 12).

    Both are evaluated at the same float σ (``ddim_sigma``, within 10u of the exact σ(η = 1)), DDPM's
    with σ² = fl(σ·σ). They agree exactly at the exact σ; at σ(1 + δ) their logarithms move apart by
    at most (2 + 2σ²/B²)|δ| with B = √(1 − ᾱ_s − σ²), and σ²/B² = β_t/(α_t(1 − ᾱ_s)) at η = 1
    (from the crude tables). Each function is within 8u of its exact value; total
    |γ − w| ≤ (16 + 10(2 + 2σ²/B²) + 2)u·w.
    """
    sched = data.draw(schedules(min_T=2), label="schedule")
    b = sched.betas
    t = data.draw(timestep_indices(sched.T, low=1), label="t")
    sigma = ddim.ddim_sigma(b, t, t - 1, 1.0)
    assume(sigma > 1e-150)  # σ² representable: below, both weights overflow (SingularError, a separate contract)
    note(repro(betas=sched, t=t) + "; ddim.ddim_gamma_weight(betas, t, t - 1, ddim.ddim_sigma(betas, t, t - 1, 1.0))")
    beta = float(b[t])
    _, c_s, _, _ = crude_tables(b).at(t - 1)
    try:
        w = likelihood.eps_kl_weight(b, t, sigma * sigma)
    except ValueError:  # SingularError: the weight overflows float64 (σ tiny)
        assume(False)
    gamma = ddim.ddim_gamma_weight(b, t, t - 1, sigma)
    ratio = beta / ((1.0 - beta) * c_s)
    assert_within(gamma, w, (18 + 10 * (2 + 2 * ratio)) * U * w, f"gamma vs eps_kl_weight at t={t}")


@given(st.data())
def test_ode_euler_step_is_the_deterministic_ddim_step(data: st.DataObject) -> None:
    r"""An Euler step of DDIM eq. 14 in σ-space, mapped back by x = √ᾱ x̄, is the η = 0 DDIM step (eq. 12, eq. 13).

    .. math:: \sqrt{\bar\alpha_s}\Big(\frac{x_t}{\sqrt{\bar\alpha_t}} + (\sigma_s - \sigma_t)\,\epsilon\Big)
              = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s}\,\epsilon,\quad
              \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}},\ \sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}

    (``ddim.ode_sigma``, ``ddim.ddim_ode_step`` against ``sampling.ddim_step``). Both sides are
    sums of the same terms, each formed with a few roundings: the bound is 32u times
    M = √ᾱ_s(|x_t| + √(1 − ᾱ_t)|ε|)/√ᾱ_t + √(1 − ᾱ_s)|ε| (magnitudes from the crude tables).
    """
    sched = data.draw(schedules(min_T=2), label="schedule")
    b = sched.betas
    t, s = data.draw(timestep_pairs(sched.T), label="(t, s)")
    shape = data.draw(shapes(), label="shape")
    x_t = data.draw(data_arrays(shape), label="x_t")
    eps = data.draw(data_arrays(shape, 8.0), label="eps")
    note(repro(betas=sched, t=t, s=s, x_t=x_t, eps=eps) + "; ddim.ddim_ode_step(...)")
    ab_t, c_t, sa_t, sc_t = crude_tables(b).at(t)
    _, c_s, sa_s, sc_s = crude_tables(b).at(s)
    assume(ab_t > 1e-250)  # x̄ = x/√ᾱ stays far inside the float64 range
    sig_t, sig_s = float(ddim.ode_sigma(b, t)), float(ddim.ode_sigma(b, s))
    x_bar = x_t / float(np.sqrt(alphas.alpha_bar_at(b, t)))
    ode = float(np.sqrt(alphas.alpha_bar_at(b, s))) * ddim.ddim_ode_step(x_bar, eps, sig_t, sig_s)
    step = sampling.ddim_step(eps, t, s, x_t, b, eta=0.0).prev_sample
    M = sa_s * (np.abs(x_t) + sc_t * np.abs(eps)) / sa_t + sc_s * np.abs(eps)
    assert_within(ode, step, 32 * U * M + FLOOR, f"ODE Euler step vs DDIM eta=0 step, t={t} -> s={s}")
