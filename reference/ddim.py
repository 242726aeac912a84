r"""The DDIM family of inference distributions :math:`q_\sigma` and its σ(η) (Song et al. 2021).

Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 7:

.. math::

    q_\sigma(x_{t-1} \mid x_t, x_0) = \mathcal{N}\Big(\sqrt{\bar\alpha_{t-1}}\,x_0
      + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\cdot\frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma_t^2 I\Big)

and eq. 16:

.. math::

    \sigma_t(\eta) = \eta\,\sqrt{\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}}\,\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t-1}}} .

Notation: the DDIM paper writes :math:`\alpha_t` for what DDPM (and this package) calls
:math:`\bar\alpha_t`; we use ᾱ throughout. On a subsequence τ the "previous" state is the previous
element of τ (eq. 12 with t − 1 replaced by τ_{i−1}); functions take ``t`` and ``t_prev`` as 0-based
indices, ``t_prev = -1`` being the data (ᾱ = 1). ``t_prev == t`` (only at t = 0: the step 0 → 0) is accepted for the last step of
diffusers' ``set_alpha_to_one=False`` variant (it "steps" to ᾱ at index 0 from index 0).

Admissible σ: the mean's square root needs :math:`\sigma_t^2 \le 1 - \bar\alpha_{t-1}`.

Also here: the family's forward process :math:`q_\sigma(x_t \mid x_{t-1}, x_0)` (eq. 8, Bayes' rule on
eq. 7: :func:`q_sigma_forward`), Theorem 1's weights γ (:func:`ddim_gamma_weight`), and the ODE of
§4.3 in σ-space, :math:`\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}` and :math:`\bar x = x/\sqrt{\bar\alpha}`
(eq. 14: :func:`ode_sigma`, :func:`ddim_ode_step`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .alphas import alpha_bar_tables, alpha_bar_at, alpha_bar_ratio, one_minus_alpha_bar_at, one_minus_alpha_bar_ratio
from .timesteps import check_subsequence
from .validation import as_array, as_betas, as_int, as_scalar, as_timestep, check_same_shape, fail
from .gaussian import Gaussian

__all__ = [
    "ddim_sigma",
    "ddim_sigmas",
    "ddim_sigma_max",
    "q_sigma",
    "ddim_mean_coefficients",
    "ddim_direction_coefficient",
    "q_sigma_forward",
    "ddim_gamma_weight",
    "ode_sigma",
    "ddim_ode_step",
]

_U = 2.0**-53


def _indices(betas: ArrayLike, t: int, t_prev: int) -> tuple[NDArray[np.float64], int, int]:
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    # t_prev == t only as the ᾱ_0-variant final step 0 -> 0 (diffusers set_alpha_to_one=False)
    tp = as_int(t_prev, "t_prev", low=-1, high=tt if tt == 0 else tt - 1)
    return b, tt, tp


def ddim_sigma(betas: ArrayLike, t: int, t_prev: int, eta: float) -> float:
    r"""σ_t(η) of DDIM eq. 16, from index ``t`` to index ``t_prev`` (``-1`` = the data).

    .. math:: \sigma = \eta\,\sqrt{\frac{(1-\bar\alpha_{s})\,(1-\bar\alpha_t/\bar\alpha_{s})}{1-\bar\alpha_t}},\quad s = t_\mathrm{prev}

    η = 0 gives the deterministic DDIM; η = 1 gives the DDPM posterior standard deviation
    :math:`\sqrt{\tilde\beta}` of the (respaced) schedule. η > 1 is accepted only while σ stays
    admissible (σ² ≤ 1 − ᾱ_s); otherwise a ValueError names ``eta``.

    Accuracy: :math:`1-\bar\alpha_t/\bar\alpha_s` is computed without cancellation
    (:func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio`; the textbook form loses ~β⁻¹ ULP),
    and the two square roots are merged into one, so σ is within a few ULP of exact.
    """
    b, tt, tp = _indices(betas, t, t_prev)
    e = as_scalar(eta, "eta", low=0.0)
    c_s = float(one_minus_alpha_bar_at(b, tp))
    c_t = float(one_minus_alpha_bar_at(b, tt))
    ratio_c = float(one_minus_alpha_bar_ratio(b, tt, tp))
    sigma = e * np.sqrt(c_s * ratio_c / c_t)
    if sigma * sigma > c_s * (1.0 + 8 * _U):
        fail("eta", eta, f"gives sigma^2 = {sigma * sigma!r} > 1 - alpha_bar_prev = {c_s!r} (not admissible)")
    return float(sigma)


def ddim_sigma_max(betas: ArrayLike, t: int, t_prev: int) -> float:
    r"""The largest admissible σ for the step t → t_prev: :math:`\sqrt{1-\bar\alpha_{t_\mathrm{prev}}}` (DDIM eq. 7)."""
    b, _, tp = _indices(betas, t, t_prev)
    return float(np.sqrt(one_minus_alpha_bar_at(b, tp)))


def ddim_mean_coefficients(betas: ArrayLike, t: int, t_prev: int, sigma: float) -> tuple[float, float]:
    r"""Coefficients :math:`(\sqrt{\bar\alpha_{s}},\ \sqrt{1-\bar\alpha_{s}-\sigma^2})` of x̂₀ and ε̂ in DDIM eq. 12.

    Validates that σ is admissible: σ ≥ 0 and σ² ≤ 1 − ᾱ_s (up to 8 units of roundoff, which are
    clamped to 0 so that η = 1 at the first step does not fail on rounding).

    Accuracy: :math:`1-\bar\alpha_s-\sigma^2` cancels where σ² is close to 1 − ᾱ_s (η = 1 at a step
    that ends near ᾱ = 0, e.g. the cosine schedule's last step, where the float64 difference was off by
    ~5·10⁴ ULP). It is formed from the double-double 1 − ᾱ_s and the exact σ² (TwoProduct), so the
    coefficient is within about 1 ULP of the exact value for the given σ. (The result is still as
    sensitive to σ as the equation is: a σ rounded from σ(η) moves it by up to (1 − ᾱ_s)/(1 − ᾱ_s − σ²) ULP.)
    """
    b, _, tp = _indices(betas, t, t_prev)
    # an admissible σ is <= sqrt(1 - ᾱ_s) <= 1; the bound 2 keeps σ² far from overflow before the exact check
    sg = as_scalar(sigma, "sigma", low=0.0, high=2.0)
    if tp < 0:
        c_hi, c_lo = 0.0, 0.0
    else:
        _, _, c_hi_table, c_lo_table = alpha_bar_tables(b)
        c_hi, c_lo = float(c_hi_table[tp]), float(c_lo_table[tp])
    c_s = c_hi + c_lo
    sq_hi, sq_lo = _dd.two_prod(sg, sg)  # σ² exactly
    r_hi, r_lo = _dd.dd_add(c_hi, c_lo, -sq_hi, -sq_lo)
    rest = float(r_hi + r_lo)
    if rest < -8 * _U * max(c_s, sq_hi):
        fail("sigma", sigma, f"sigma^2 exceeds 1 - alpha_bar_prev = {c_s!r} (DDIM eq. 7 needs sigma^2 <= 1 - alpha_bar_prev)")
    return float(np.sqrt(alpha_bar_at(b, tp))), float(np.sqrt(max(rest, 0.0)))


def q_sigma(x0: ArrayLike, x_t: ArrayLike, t: int, t_prev: int, sigma: float, betas: ArrayLike) -> Gaussian:
    r"""The DDIM inference distribution :math:`q_\sigma(x_{t_\mathrm{prev}} \mid x_t, x_0)` (DDIM eq. 7).

    .. math::

        \mathcal{N}\Big(\sqrt{\bar\alpha_{s}}\,x_0 + \sqrt{1-\bar\alpha_{s}-\sigma^2}\,
        \frac{x_t-\sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma^2 I\Big),\quad s = t_\mathrm{prev}

    For every admissible σ its marginal is :math:`q(x_s \mid x_0) = \mathcal N(\sqrt{\bar\alpha_s}x_0, (1-\bar\alpha_s)I)`
    (DDIM Lemma 1), which the property suite proves.
    """
    xx0 = as_array(x0, "x0")
    xt = as_array(x_t, "x_t")
    check_same_shape(x_t=xt, x0=xx0)
    b, tt, tp = _indices(betas, t, t_prev)
    c_x0, c_eps = ddim_mean_coefficients(b, tt, tp, sigma)
    sa_t = float(np.sqrt(alpha_bar_at(b, tt)))
    s1_t = float(np.sqrt(one_minus_alpha_bar_at(b, tt)))
    eps = (xt - sa_t * xx0) / s1_t
    return Gaussian(c_x0 * xx0 + c_eps * eps, np.float64(float(sigma) ** 2))


def ddim_sigmas(betas: ArrayLike, timesteps: ArrayLike, eta: float) -> NDArray[np.float64]:
    r"""σ(η) (DDIM eq. 16) for every step of a sampling subsequence, vectorised.

    ``timesteps`` is strictly decreasing (sampling order); step k goes from ``timesteps[k]`` to
    ``timesteps[k+1]`` and the last step to the data (index −1). Entry k equals
    ``ddim_sigma(betas, timesteps[k], timesteps[k+1], eta)``; see :func:`ddim_sigma` for the formula
    and its accuracy. Raises naming ``eta`` if any σ would be inadmissible.
    """
    b = as_betas(betas)
    ts = check_subsequence(timesteps, b.size)
    e = as_scalar(eta, "eta", low=0.0)
    prev = np.concatenate([ts[1:], [-1]])
    c_s = one_minus_alpha_bar_at(b, prev)
    c_t = one_minus_alpha_bar_at(b, ts)
    ratio_c = one_minus_alpha_bar_ratio(b, ts, prev)
    sigma = e * np.sqrt(c_s * ratio_c / c_t)
    if np.any(sigma * sigma > c_s * (1.0 + 8 * _U)):
        fail("eta", eta, "gives sigma^2 > 1 - alpha_bar_prev at some step (not admissible)")
    return sigma


def ddim_direction_coefficient(betas: ArrayLike, t: int, t_prev: int, eta: float) -> float:
    r"""The coefficient :math:`\sqrt{1-\bar\alpha_s-\sigma^2(\eta)}` of ε̂ in DDIM eq. 12, from η directly.

    Substituting eq. 16 and using :math:`(1-\bar\alpha_t) - (1-\bar\alpha_t/\bar\alpha_s) = \bar\alpha_t(1-\bar\alpha_s)/\bar\alpha_s`:

    .. math::

        1-\bar\alpha_s-\sigma^2 = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}
        \Big[(1-\eta^2)(1-\bar\alpha_t) + \eta^2\,\frac{\bar\alpha_t(1-\bar\alpha_s)}{\bar\alpha_s}\Big]

    For 0 ≤ η ≤ 1 both terms are non-negative, so nothing cancels. Going through a rounded σ instead
    (:func:`ddim_mean_coefficients`) amplifies σ's rounding by :math:`(1-\bar\alpha_s)/(1-\bar\alpha_s-\sigma^2)`,
    about 25 for η = 1 on a strided linear schedule. Raises naming ``eta`` where σ is not admissible.
    """
    b, tt, tp = _indices(betas, t, t_prev)
    e = as_scalar(eta, "eta", low=0.0)
    ddim_sigma(b, tt, tp, e)  # admissibility
    c_s = float(one_minus_alpha_bar_at(b, tp))
    c_t = float(one_minus_alpha_bar_at(b, tt))
    if c_s == 0.0 or tp == tt:
        return float(np.sqrt(c_s))
    ab_t = float(alpha_bar_at(b, tt))
    ab_s = float(alpha_bar_at(b, tp))
    inner = (1.0 - e * e) * c_t + e * e * ab_t * (c_s / ab_s)
    return float(np.sqrt(max(c_s * inner / c_t, 0.0)))


# ---------------------------------------------------------------------------------------------------
# The forward process of the DDIM family, Theorem 1's weights, and the ODE in σ-space
# ---------------------------------------------------------------------------------------------------


def _noisy_indices(betas: ArrayLike, t: int, t_prev: int) -> tuple[NDArray[np.float64], int, int]:
    """(betas, t, t_prev) with 0 <= t_prev < t: both ends noisy (ᾱ_s < 1, so 1 − ᾱ_s > 0)."""
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    if tt == 0:
        fail("t", t, "must be >= 1: the step needs a noisy previous index 0 <= t_prev < t")
    tp = as_int(t_prev, "t_prev", low=0, high=tt - 1)
    return b, tt, tp


def q_sigma_forward(x_prev: ArrayLike, x0: ArrayLike, t: int, t_prev: int, sigma: float, betas: ArrayLike) -> Gaussian:
    r"""The forward process of the DDIM family, :math:`q_\sigma(x_t \mid x_{t_\mathrm{prev}}, x_0)`, by Bayes' rule.

    .. math::

        q_\sigma(x_t \mid x_s, x_0) = \frac{q_\sigma(x_s \mid x_t, x_0)\,q(x_t \mid x_0)}{q(x_s \mid x_0)}
          = \mathcal N\Big(\sqrt{\bar\alpha_t}\,x_0 + \frac{\sqrt{1-\bar\alpha_t}\,\sqrt{1-\bar\alpha_s-\sigma^2}}{1-\bar\alpha_s}
            \big(x_s - \sqrt{\bar\alpha_s}\,x_0\big),\ \frac{(1-\bar\alpha_t)\,\sigma^2}{1-\bar\alpha_s}\,I\Big),\quad s = t_\mathrm{prev}

    Source: Song et al. 2021 (DDIM), §3.1, eq. 8 (Bayes' rule on eq. 7 and the marginals of
    Lemma 1). Derivation: under :math:`q(x_t|x_0)` and eq. 7, (x_s, x_t) is jointly Gaussian with
    :math:`\mathrm{Cov}(x_s, x_t) = k(1-\bar\alpha_t)`, :math:`k = \sqrt{1-\bar\alpha_s-\sigma^2}/\sqrt{1-\bar\alpha_t}`,
    and :math:`\mathrm{Var}(x_s) = 1-\bar\alpha_s`; conditioning x_t on x_s gives the line above. Unlike
    DDPM's :math:`q(x_t|x_{t-1})` it depends on x_0 (the process is non-Markovian) except at
    σ = σ(η = 1), where it is :math:`\mathcal N(\sqrt{\bar\alpha_t/\bar\alpha_s}\,x_s, (1-\bar\alpha_t/\bar\alpha_s)I)`
    (DDPM eq. 2 for consecutive indices; the property suite proves it).

    Index convention: 0-based, 0 <= ``t_prev`` < ``t`` (x_s must be noisy: at ``t_prev = -1`` the
    previous state is the data and the forward step is :func:`ddspec.reference.forward.q_marginal`).
    ``sigma`` is admissible, 0 <= σ² <= 1 − ᾱ_s (checked by :func:`ddim_mean_coefficients`).
    ``x_prev`` and ``x0`` have the same shape. The variance is formed from the exact σ² and the
    double-double tables: a few ULP.
    """
    xs = as_array(x_prev, "x_prev")
    xx0 = as_array(x0, "x0")
    check_same_shape(x_prev=xs, x0=xx0)
    b, tt, tp = _noisy_indices(betas, t, t_prev)
    sa_s, root = ddim_mean_coefficients(b, tt, tp, sigma)  # √ᾱ_s, √(1 − ᾱ_s − σ²), σ validated
    sg = float(sigma)
    c_s = float(one_minus_alpha_bar_at(b, tp))
    c_t = float(one_minus_alpha_bar_at(b, tt))
    sa_t = float(np.sqrt(alpha_bar_at(b, tt)))
    gain = float(np.sqrt(c_t)) * root / c_s
    mean = sa_t * xx0 + gain * (xs - sa_s * xx0)
    return Gaussian(mean, np.float64(c_t * (sg * sg) / c_s))


def ddim_gamma_weight(betas: ArrayLike, t: int, t_prev: int, sigma: float) -> float:
    r"""The weight γ of :math:`\|\epsilon_\theta - \epsilon\|^2` in the KL term of DDIM's objective (Theorem 1).

    .. math::

        \gamma = \frac{1}{2\sigma^2}\Big(\sqrt{\frac{(1-\bar\alpha_t)\,\bar\alpha_s}{\bar\alpha_t}} - \sqrt{1-\bar\alpha_s-\sigma^2}\Big)^2
               = \frac{1}{2\sigma^2}\,\frac{\big(\bar\alpha_s/\bar\alpha_t - 1 + \sigma^2\big)^2}
                 {\Big(\sqrt{(1-\bar\alpha_t)\bar\alpha_s/\bar\alpha_t} + \sqrt{1-\bar\alpha_s-\sigma^2}\Big)^2},\quad s = t_\mathrm{prev}

    Source: Song et al. 2021 (DDIM), Theorem 1 and its proof (Appendix B): with
    :math:`p_\theta(x_s|x_t) = q_\sigma(x_s \mid x_t, f_\theta(x_t))` (eq. 10) the two Gaussians share
    σ², so the KL is :math:`\|\mu_q - \mu_p\|^2/(2\sigma^2)`, and by eq. 7 and eq. 9
    (:math:`x_0 - f_\theta = \sqrt{1-\bar\alpha_t}(\epsilon_\theta - \epsilon)/\sqrt{\bar\alpha_t}`)
    :math:`\mu_q - \mu_p = \big(\sqrt{\bar\alpha_s} - \sqrt{1-\bar\alpha_s-\sigma^2}\sqrt{\bar\alpha_t}/\sqrt{1-\bar\alpha_t}\big)(x_0 - f_\theta)`,
    which is the bracket above times :math:`(\epsilon_\theta - \epsilon)`. Per dimension, in nats.
    At σ = σ(η = 1) on consecutive indices it is DDPM's weight
    :math:`\beta_t^2/(2\sigma_t^2\alpha_t(1-\bar\alpha_t))` (Ho et al. 2020, eq. 12;
    :func:`ddspec.reference.likelihood.eps_kl_weight`), as the property suite checks.

    Accuracy: the bracket is a difference of two close square roots (σ → 0, or close indices); it is
    evaluated as the quotient on the right, whose numerator
    :math:`\bar\alpha_s/\bar\alpha_t - 1 + \sigma^2 = \beta'/(1-\beta') + \sigma^2` (β′ = 1 − ᾱ_t/ᾱ_s from
    :func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio`) is a sum of non-negative terms: no
    cancellation, a few ULP.

    Index convention: 0-based, 0 <= ``t_prev`` < ``t`` (the term with ``t_prev = -1`` is the decoder,
    which has no γ). ``sigma`` > 0 and admissible (σ² <= 1 − ᾱ_s); σ = 0 (η = 0) has no KL. Raises
    :class:`~ddspec.reference.SingularError` naming ``t`` where ᾱ_t = 0 (γ is infinite there).
    """
    b, tt, tp = _noisy_indices(betas, t, t_prev)
    sg = as_scalar(sigma, "sigma", low=0.0, low_open=True, high=2.0)
    _, root = ddim_mean_coefficients(b, tt, tp, sg)  # √(1 − ᾱ_s − σ²), admissibility
    beta_p = float(one_minus_alpha_bar_ratio(b, tt, tp))
    q = float(alpha_bar_ratio(b, tt, tp))  # ᾱ_t / ᾱ_s = 1 − β′
    if q == 0.0:
        fail("t", t, "alpha_bar_t = 0 there (zero terminal SNR): x0 = (x_t - sqrt(1 - ab_t) eps)/sqrt(ab_t) "
                     "is undefined, so the weight gamma is infinite", singular=True)
    c_t = float(one_minus_alpha_bar_at(b, tt))
    num = beta_p / q + sg * sg
    den = float(np.sqrt(c_t / q)) + root
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = np.float64(num) / (np.float64(sg) * np.float64(den))  # a subnormal sigma underflows to inf, not 1/0
        gamma = 0.5 * ratio * ratio
    if not np.isfinite(gamma):
        fail("sigma", sigma, "the weight overflows float64 (sigma too small)", singular=True)
    return float(gamma)


def ode_sigma(betas: ArrayLike, t: ArrayLike) -> NDArray[np.float64]:
    r"""The DDIM ODE's noise level :math:`\sigma = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}` at 0-based index t (−1 → 0).

    Source: Song et al. 2021 (DDIM), §4.3, the reparameterisation under eq. 14
    (:math:`\sigma(t) = \sqrt{1-\alpha}/\sqrt\alpha` in DDIM's notation, α = our ᾱ); it is
    :math:`1/\sqrt{\mathrm{SNR}}` and the VE noise level of :math:`\bar x = x/\sqrt{\bar\alpha}`.
    ``t`` is an index or an array of indices in [−1, T − 1]; index −1 (the data) gives 0. Raises
    :class:`SingularError` where ᾱ_t = 0 (σ = ∞). Two roundings of exact-table values: a few ULP.
    """
    b = as_betas(betas)
    ab = alpha_bar_at(b, t)
    if np.any(ab <= 0.0):
        fail("t", t, "alpha_bar is 0 there (zero terminal SNR), so sigma = sqrt((1 - ab)/ab) is infinite",
             singular=True)
    return np.sqrt(one_minus_alpha_bar_at(b, t) / ab)


def ddim_ode_step(x_bar: ArrayLike, eps: ArrayLike, sigma_from: float, sigma_to: float) -> NDArray[np.float64]:
    r"""One Euler step of the DDIM ODE in σ-space (DDIM eq. 14), from σ = ``sigma_from`` to ``sigma_to``.

    .. math::

        \mathrm d\bar x = \epsilon_\theta\Big(\frac{\bar x}{\sqrt{\sigma^2+1}}, t\Big)\,\mathrm d\sigma
        \quad\Rightarrow\quad \bar x' = \bar x + (\sigma' - \sigma)\,\epsilon_\theta,\qquad
        \bar x = x/\sqrt{\bar\alpha},\ \sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}

    Source: Song et al. 2021 (DDIM), §4.3, eqs. 13–14: eq. 13 (DDIM eq. 12 with σ = 0, divided by
    :math:`\sqrt{\bar\alpha_{t-\Delta t}}`) is exactly this Euler step, so mapping back,
    :math:`x_s = \sqrt{\bar\alpha_s}\,\bar x'` is the deterministic DDIM step (η = 0). ``eps`` is
    :math:`\epsilon_\theta` evaluated at :math:`x_t = \bar x/\sqrt{\sigma^2+1}`, same shape as ``x_bar``;
    both σ are >= 0 (:func:`ode_sigma`). Sampling goes from a larger σ to a smaller one; the reverse
    direction is DDIM inversion. One product and one sum per element, the σ difference exact where
    the two are within a factor 2 (Sterbenz).
    """
    xb = as_array(x_bar, "x_bar")
    e = as_array(eps, "eps")
    check_same_shape(x_bar=xb, eps=e)
    s0 = as_scalar(sigma_from, "sigma_from", low=0.0)
    s1 = as_scalar(sigma_to, "sigma_to", low=0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        out = xb + (s1 - s0) * e
    if not np.all(np.isfinite(out)):
        fail("sigma_to", sigma_to, "the step overflows float64", singular=True)
    return out
