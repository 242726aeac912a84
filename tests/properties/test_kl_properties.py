r"""Property 9: the Gaussian KL, the discretized decoder and the ε-form of a bound term.

* Gibbs' inequality: :math:`D_\mathrm{KL}(p\,\|\,q) \ge 0`, with equality iff p = q.
* The closed form of ``likelihood.normal_kl`` equals :math:`\int p \log(p/q)` by numerical quadrature.
* The 256 bin probabilities of the discretized decoder (Ho et al. 2020, eq. 13) sum to 1.
* Ho et al. 2020, eq. 12: with μ_θ in ε-form (eq. 11) the term :math:`L_{t-1}` is
  :math:`\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\|\epsilon-\epsilon_\theta\|^2 + C`,
  and C = 0 when σ_t² = β̃_t.

Every reference function is called through its module attribute (``likelihood.normal_kl``, …) so that
``tests/quality/test_property_power_part2.py`` can replace it with a broken one.
"""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st
from scipy import integrate

from ddspec.reference import forward, likelihood, parameterisation, posterior

from . import strategies
from .strategies import repro

U = strategies.U
finite = dict(allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------------------------------------
# Gibbs' inequality
# ---------------------------------------------------------------------------------------------------


def _draw_gaussian_pairs(data: st.DataObject) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays (m1, l1, m2, l2): the second Gaussian equal, one ULP off, slightly off, or unrelated."""
    n = data.draw(st.integers(1, 8), label="n")
    m1 = np.array(data.draw(st.lists(st.floats(-1e3, 1e3, **finite), min_size=n, max_size=n), label="mean1"))
    l1 = np.array(data.draw(st.lists(st.floats(-40, 40, **finite), min_size=n, max_size=n), label="logvar1"))
    m2, l2 = m1.copy(), l1.copy()
    kinds = data.draw(st.lists(st.sampled_from(["equal", "ulp_mean", "ulp_logvar", "near", "far"]), min_size=n, max_size=n),
                 label="relation")
    for i, kind in enumerate(kinds):
        if kind == "ulp_mean":
            m2[i] = np.nextafter(m1[i], np.inf)
        elif kind == "ulp_logvar":
            l2[i] = np.nextafter(l1[i], -np.inf)
        elif kind == "near":
            m2[i] = m1[i] + data.draw(st.floats(-1e-6, 1e-6, **finite), label="d_mean")
            l2[i] = l1[i] + data.draw(st.floats(-1e-6, 1e-6, **finite), label="d_logvar")
        elif kind == "far":
            m2[i] = data.draw(st.floats(-1e3, 1e3, **finite), label="mean2")
            l2[i] = data.draw(st.floats(-40, 40, **finite), label="logvar2")
    return m1, l1, m2, l2


def _exact_kl(m1: float, l1: float, m2: float, l2: float) -> mpmath.mpf:
    r"""The exact KL of float inputs: ½(h(d) + (μ₁−μ₂)² e^{−ℓ₂}), h(d) = e^d − 1 − d, d = ℓ₁ − ℓ₂, in mpmath.

    Not the literal closed form of the twin (``twin.likelihood.normal_kl``): its ``-1 + ℓ₂ - ℓ₁ + e^{ℓ₁-ℓ₂}``
    rounds ``-1 + ℓ₂`` at ``dps`` digits, an absolute error ~10^-dps that swamps a KL below that (e.g.
    ℓ₁ = ℓ₂ = −5e-99 with μ₂ − μ₁ = 5e-324: exact 1.2e-647, literal 3.6e-102). Here d and μ₁ − μ₂ are
    exact mpf differences and h(d) is evaluated with enough extra digits for |d|'s size.
    """
    with mpmath.workdps(60):
        d = mpmath.mpf(l1) - mpmath.mpf(l2)  # exact: both are doubles and 60 digits hold the difference
        dm = mpmath.mpf(m1) - mpmath.mpf(m2)
        extra = 0 if d == 0 else max(0, int(-mpmath.log10(abs(d))))
    with mpmath.workdps(60 + extra):
        h = mpmath.expm1(d) - d
        return (h + dm * dm * mpmath.exp(-mpmath.mpf(l2))) / 2


@given(st.data())
def test_normal_kl_is_nonnegative_and_zero_only_for_equal_gaussians(data: st.DataObject) -> None:
    r"""Gibbs' inequality for diagonal Gaussians, decided elementwise against the exact KL in mpmath.

    .. math:: D_\mathrm{KL} = \tfrac12\big(h(\ell_1-\ell_2) + (\mu_1-\mu_2)^2 e^{-\ell_2}\big) \ge 0,\quad h(d) = e^d - 1 - d

    Source: Ho et al. 2020, §3.3 (closed-form Gaussian KLs); Cover & Thomas, Thm. 2.6.3 (Gibbs).
    Both parts are ≥ 0 and vanish only at μ₁ = μ₂, ℓ₁ = ℓ₂, so: KL ≥ 0 always; KL == 0 exactly for
    identical inputs; and KL > 0 wherever the exact KL of the float inputs (:func:`_exact_kl`) is
    at least the smallest normal double 2⁻¹⁰²² (a positive value that large cannot round to 0 under the
    documented few-ULP accuracy). Cases one ULP apart (KL ~ 1e-32 relative to the scales) are included.
    """
    m1, l1, m2, l2 = _draw_gaussian_pairs(data)
    note(repro(m1=m1, l1=l1, m2=m2, l2=l2) + "; likelihood.normal_kl(m1, l1, m2, l2)")
    kl = likelihood.normal_kl(m1, l1, m2, l2)
    assert kl.shape == m1.shape
    assert np.all(kl >= 0.0), f"negative KL {kl}"
    for i in range(m1.size):
        if m1[i] == m2[i] and l1[i] == l2[i]:
            assert kl[i] == 0.0, f"KL of identical Gaussians is {kl[i]!r}"
        else:
            exact = _exact_kl(m1[i], l1[i], m2[i], l2[i])
            note(f"i={i}: exact KL {mpmath.nstr(exact, 10)}, got {kl[i]!r}")
            if exact >= mpmath.mpf(2.0**-1022):
                assert kl[i] > 0.0, f"distinct Gaussians ({m1[i]!r},{l1[i]!r}) vs ({m2[i]!r},{l2[i]!r}) gave KL 0"


@given(st.data())
def test_normal_kl_matches_numerical_integration(data: st.DataObject) -> None:
    r"""The closed form equals :math:`\int p(x)\log\frac{p(x)}{q(x)}\,dx` computed by ``scipy.integrate.quad``.

    With z = (x − μ₁)/σ₁ the integrand is :math:`\varphi(z)\,g(z)`,
    :math:`g(z) = \tfrac12(\ell_2-\ell_1) - z^2/2 + (\mu_1 + \sigma_1 z - \mu_2)^2/(2\sigma_2^2)`
    (log p − log q written out, so nothing under- or overflows), over |z| ≤ 40 (the tail beyond
    carries < e^{-800}).

    Tolerance, derived: quad's own error estimate (×50), plus the rounding of g — each term of g is
    evaluated with relative error ≤ ~8u, and cancellation between them can leave that much of
    :math:`E_\varphi[|g_1| + |g_2| + |g_3|] = |\ell_2-\ell_1|/2 + 1/2 + ((\mu_1-\mu_2)^2 + \sigma_1^2)/(2\sigma_2^2)`,
    counted with a factor 64 for the quadrature's sum of ~10³ weighted values.
    """
    m1, l1, m2, l2 = (data.draw(st.floats(-3, 3, **finite), label=name) for name in ("mean1", "logvar1", "mean2", "logvar2"))
    note(f"likelihood.normal_kl({m1!r}, {l1!r}, {m2!r}, {l2!r})")
    s1, v2 = math.exp(0.5 * l1), math.exp(l2)

    def integrand(z: float) -> float:
        g = 0.5 * (l2 - l1) - 0.5 * z * z + (m1 + s1 * z - m2) ** 2 / (2.0 * v2)
        return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) * g

    with warnings.catch_warnings():
        # Where the KL is tiny (close Gaussians) QUADPACK cannot reach epsrel and says so; the rounding it
        # runs into is the 64·8u·scale term of the tolerance below, so the warning is expected there.
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        value, abserr = integrate.quad(integrand, -40.0, 40.0, epsabs=1e-15, epsrel=1e-13, limit=400, points=[0.0])
    kl = float(likelihood.normal_kl(m1, l1, m2, l2))
    scale = abs(l2 - l1) / 2 + 0.5 + ((m1 - m2) ** 2 + s1 * s1) / (2 * v2)
    tol = 50 * abserr + 64 * 8 * U * scale
    note(f"closed form {kl!r}, quad {value!r} ± {abserr:.2g}, tol {tol:.3g}")
    assert abs(kl - value) <= tol


# ---------------------------------------------------------------------------------------------------
# the discretized decoder
# ---------------------------------------------------------------------------------------------------

GRID = (2.0 * np.arange(256) - 255.0) / 255.0  # the 8-bit grid {−1 + 2k/255}, correctly rounded


@given(st.data())
def test_decoder_bin_probabilities_sum_to_one(data: st.DataObject) -> None:
    r"""The 256 bins of :math:`p_\theta(x_0 \mid x_1)` (Ho et al. 2020, eq. 13) partition the real line.

    .. math:: \sum_{k=0}^{255} \int_{\delta_-(x_k)}^{\delta_+(x_k)} \mathcal N(u;\mu,\sigma^2)\,du = 1

    (the outer bins are open, the inner ones share their edges). Tolerances, derived:

    * ``exact``: the edges are the same doubles for adjacent bins, so the sum telescopes exactly; what
      is left is the relative error of each bin, ≤ 16u·(1 + |log p_k|) (a log-probability accurate to
      ~16u relative, exponentiated), weighted by p_k, plus 256u for the summation.
    * ``tanh`` (the anchors' decoder): adjacent edges x_k + 1/255 and x_{k+1} − 1/255 differ by ≤ 4u
      (two roundings of numbers ≤ 1), the tanh CDF has slope ≤ 0.45/σ, each CDF value is rounded
      (≤ 4u), and each bin probability may be floored up to 1e-12: 256·(1e-12 + 8u + 0.45·4u/σ).
    """
    mean = data.draw(st.floats(-1.5, 1.5, **finite), label="mean")
    log_scale = data.draw(st.floats(-8.0, 1.5, **finite), label="log_scale")
    cdf = data.draw(st.sampled_from(["exact", "tanh"]), label="cdf")
    note(f"likelihood.discretized_gaussian_log_likelihood(GRID, {mean!r}, {log_scale!r}, cdf={cdf!r})")
    logp = likelihood.discretized_gaussian_log_likelihood(GRID, np.full(256, mean), np.full(256, log_scale), cdf=cdf)
    assert logp.shape == (256,) and np.all(np.isfinite(logp)) and np.all(logp <= 0.0)
    p = np.exp(logp)
    total = math.fsum(p.tolist())
    if cdf == "exact":
        tol = float(np.sum(p * 16 * U * (1.0 + np.abs(logp)))) + 256 * U
    else:
        tol = 256 * (1e-12 + 8 * U + 0.45 * 4 * U * math.exp(-log_scale))
    note(f"sum of bin probabilities {total!r}, tol {tol:.3g}")
    assert abs(total - 1.0) <= tol


# ---------------------------------------------------------------------------------------------------
# the ε form of a KL term (Ho et al. 2020, eq. 12)
# ---------------------------------------------------------------------------------------------------


def _draw_eps_kl_case(data: st.DataObject):
    """(schedule, t, sigma2, x0, eps, eps_theta): a shared-strategy schedule (T <= 64), an index t >= 1
    with β_t < 1, a model variance (β̃_t, β_t, or log-uniform in [β̃_t/10, 100 β̃_t]) and vectors."""
    sched = data.draw(strategies.schedules(max_T=64), label="schedule")
    betas = sched.betas
    t = data.draw(strategies.timesteps(sched.T, low=1), label="t")
    bt = float(posterior.beta_tilde(betas)[t])
    which = data.draw(st.sampled_from(["beta_tilde", "beta", "random"]), label="sigma2 kind")
    if which == "beta_tilde":
        sigma2 = bt
    elif which == "beta":
        sigma2 = float(betas[t])
    else:
        sigma2 = bt * 10.0 ** data.draw(st.floats(-1.0, 2.0), label="log10 sigma2/beta_tilde")
    shape = (data.draw(st.integers(1, 4), label="dim"),)
    vec = strategies.noise_arrays(shape)
    return sched, t, sigma2, data.draw(vec, label="x0"), data.draw(vec, label="eps"), data.draw(vec, label="eps_theta")


@given(st.data())
def test_kl_term_in_eps_form(data: st.DataObject) -> None:
    r"""Ho et al. 2020, eq. 12: :math:`L_{t-1} = w_t\|\epsilon - \epsilon_\theta\|^2 + d\cdot C_t`, C_t = 0 iff σ_t² = β̃_t.

    Setup: :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon` (eq. 4, ``forward.q_sample``),
    model mean :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta)`
    (eq. 11, ``parameterisation.ddpm_mean_from_eps``), posterior :math:`\mathcal N(\tilde\mu_t, \tilde\beta_t)` (eq. 7,
    ``posterior.q_posterior``). The left side is ``likelihood.normal_kl`` of the two Gaussians summed over
    the d coordinates, and again ``likelihood.vlb_term`` (the bound's own route); the right side is
    ``likelihood.eps_kl_weight`` and ``likelihood.eps_kl_constant``:
    :math:`w_t = \beta_t^2/(2\sigma_t^2\alpha_t(1-\bar\alpha_t))`,
    :math:`C_t = \tfrac12(\tilde\beta_t/\sigma_t^2 - 1 - \log(\tilde\beta_t/\sigma_t^2))`.

    Tolerance, derived per coordinate (u = 2⁻⁵³):

    * Δμ = μ̃ − μ_θ is a difference of two computed means, each with absolute error
      δ ≤ 16u·(|c₀x₀| + |c_t x_t| + (|x_t| + β/√(1−ᾱ)·|ε_θ|)/√α); the mean part Δμ²/(2σ²) then moves by
      ≤ (|Δμ|δ + δ²/2)/σ².
    * x_t is rounded (e ≤ 2u(√ᾱ|x₀| + √(1−ᾱ)|ε|)), so it is exactly eq. 4 for ε' = ε + e/√(1−ᾱ):
      the right side computed with ε moves by ≤ w(2|ε − ε_θ|e' + e'^2), e' = e/√(1−ᾱ).
    * the variance part: the left side works with ℓ₁ − ℓ₂ = log(fl β̃) − log(fl σ²) (β̃ within ~8u relative,
      each log within 1 ULP, i.e. 2u·|log|), the right side with the double-double β̃. So
      δ = 8u + 2u(|log β̃| + |log σ²|) bounds the error in log(β̃/σ²); ∂C/∂log β̃ = ½|β̃/σ² − 1| and
      ∂²C/∂(log β̃)² = β̃/(2σ²) ≈ ½ where it matters: the constant moves by ≤ ½|β̃/σ² − 1|·δ + δ².
    * each side's own few-ULP rounding: 8u times its value.
    """
    sched, t, sigma2, x0, eps, eps_theta = _draw_eps_kl_case(data)
    betas = sched.betas
    note(repro(betas=sched, t=t, sigma2=sigma2, x0=x0, eps=eps, eps_theta=eps_theta))
    x_t = forward.q_sample(x0, t, eps, betas)
    mu_theta = parameterisation.ddpm_mean_from_eps(x_t, eps_theta, t, betas)
    post = posterior.q_posterior(x0, x_t, t, betas)
    kl = likelihood.normal_kl(post.mean, np.log(post.variance), mu_theta, np.log(sigma2))
    lhs = math.fsum(kl.tolist())
    # the same term through the bound's own route (its log β̃ comes from the β̃ table, not q_posterior)
    lhs_vlb = math.fsum(likelihood.vlb_term(x0, x_t, t, mu_theta, np.log(sigma2), betas).tolist())

    w = likelihood.eps_kl_weight(betas, t, sigma2)
    c = likelihood.eps_kl_constant(betas, t, sigma2)
    d2 = (eps - eps_theta) ** 2
    rhs = w * math.fsum(d2.tolist()) + x0.size * c

    # magnitudes from the crude tables (independent of the reference, so a broken function cannot widen them)
    ct = strategies.crude_tables(betas)
    beta = float(betas[t])
    ab_prev, c_prev, sa_prev, _ = ct.at(t - 1)
    _, c, sa, s1 = ct.at(t)
    sqrt_alpha = math.sqrt(1.0 - beta)
    coef_x0, coef_xt = sa_prev * beta / c, sqrt_alpha * c_prev / c
    delta = 16 * U * (np.abs(coef_x0 * x0) + np.abs(coef_xt * x_t) + (np.abs(x_t) + beta / s1 * np.abs(eps_theta)) / sqrt_alpha)
    dmu = np.abs(post.mean - mu_theta)
    e_prime = 2 * U * (sa * np.abs(x0) + s1 * np.abs(eps)) / s1
    bt = c_prev * beta / c  # β̃_t, crude
    dlog = 8 * U + 2 * U * (abs(math.log(bt)) + abs(math.log(sigma2)))
    tol = (
        float(np.sum((dmu * delta + 0.5 * delta**2) / sigma2))
        + w * float(np.sum(2 * np.sqrt(d2) * e_prime + e_prime**2))
        + x0.size * (0.5 * abs(bt / sigma2 - 1.0) * dlog + dlog**2)
        + 8 * U * (abs(lhs) + abs(rhs))
    )
    note(f"t={t}, sigma2={sigma2!r}, beta_tilde={bt!r}: lhs={lhs!r}, rhs={rhs!r}, tol={tol:.3g}")
    assert abs(lhs - rhs) <= tol
    assert abs(lhs_vlb - rhs) <= tol

    # The constant is 0 for the "fixed small" variance σ² = β̃ (up to the rounding of β̃: C ≈ r²/4 for a
    # relative offset r ≤ 8u between fl(β̃) and the double-double β̃, i.e. C ≤ 16u²).
    bt_ref = float(post.variance)  # fl(β̃) as the reference's posterior gives it: the "fixed small" σ²
    assert likelihood.eps_kl_constant(betas, t, bt_ref) <= 16 * U**2
    if abs(sigma2 / bt_ref - 1.0) > 1e-6:  # C = ½(ρ − 1 − log ρ) ≥ (ρ − 1)²/5 > 1e-13 for |ρ − 1| ∈ (1e-6, 1/2]
        assert c > 0.0
