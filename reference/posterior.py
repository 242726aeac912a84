r"""The forward-process posterior :math:`q(x_{t-1} \mid x_t, x_0)` (Ho et al. 2020, eqs. 6–7).

.. math::

    q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(x_{t-1};\ \tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),\qquad
    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
                + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t,\qquad
    \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t .

Index convention (``docs/conventions.md``): index ``t`` is the papers' t + 1; the "previous" state of
index 0 is the data (index −1, ᾱ = 1), where β̃ = 0 and the posterior is the point mass at x₀.

Strided sampling uses the same posterior for the respaced schedule (Nichol & Dhariwal 2021, §4): from
index t to an earlier index ``t_prev`` the role of β_t is played by
:math:`\beta' = 1 - \bar\alpha_t/\bar\alpha_{t_\mathrm{prev}}` and that of α_t by
:math:`\bar\alpha_t/\bar\alpha_{t_\mathrm{prev}}`. :func:`posterior_coefficients` takes ``t_prev``.

Accuracy: every coefficient is a product/quotient of accurate table entries (double-double ᾱ, exact
1 − ᾱ_t/ᾱ_prev), so each is within a few ULP of the exact value (``docs/accuracy.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .alphas import alpha_bar_tables, alpha_bar_at, alpha_bar_ratio, one_minus_alpha_bar_at, one_minus_alpha_bar_ratio
from .validation import SingularError, as_array, as_betas, as_int, as_timestep, check_same_shape, fail
from .gaussian import Gaussian

__all__ = [
    "PosteriorCoefficients",
    "posterior_coefficients",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "beta_tilde",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean",
    "q_posterior",
]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class PosteriorCoefficients:
    r"""The three numbers that define :math:`q(x_{t_\mathrm{prev}} \mid x_t, x_0)`.

    ``coef_x0`` multiplies x₀ and ``coef_xt`` multiplies x_t in the mean; ``variance`` is β̃.
    """

    coef_x0: Array
    coef_xt: Array
    variance: Array


def posterior_coefficients(betas: ArrayLike, t: int, t_prev: int | None = None) -> PosteriorCoefficients:
    r"""Mean coefficients and variance of the posterior from index ``t`` to ``t_prev`` (default t − 1).

    .. math::

        \beta' = 1 - \frac{\bar\alpha_t}{\bar\alpha_{s}},\quad
        c_{x_0} = \frac{\sqrt{\bar\alpha_{s}}\,\beta'}{1-\bar\alpha_t},\quad
        c_{x_t} = \frac{(1-\bar\alpha_{s})\sqrt{1-\beta'}}{1-\bar\alpha_t},\quad
        \tilde\beta = \frac{(1-\bar\alpha_{s})\,\beta'}{1-\bar\alpha_t}

    with s = t_prev. For s = t − 1 this is Ho et al. 2020 eq. 7 (β' = β_t); for a strided s it is the
    posterior of the respaced schedule (Nichol & Dhariwal 2021, §4). Index convention: 0-based t,
    ``t_prev = -1`` is the data (ᾱ = 1), giving c_{x0} = 1, c_{xt} = 0, β̃ = 0.
    """
    b = as_betas(betas)
    n = b.size
    tt = as_timestep(t, n, "t")
    s = tt - 1 if t_prev is None else as_int(t_prev, "t_prev", low=-1, high=tt - 1)
    bprime = float(one_minus_alpha_bar_ratio(b, tt, s))
    keep = float(alpha_bar_ratio(b, tt, s))
    ab_s = float(alpha_bar_at(b, s))
    c_s = float(one_minus_alpha_bar_at(b, s))
    c_t = float(one_minus_alpha_bar_at(b, tt))
    coef_x0 = np.sqrt(ab_s) * bprime / c_t
    coef_xt = c_s * np.sqrt(keep) / c_t
    var = c_s * bprime / c_t
    return PosteriorCoefficients(np.float64(coef_x0), np.float64(coef_xt), np.float64(var))


def _prev_tables(betas: ArrayLike) -> tuple[Array, Array, Array, Array, Array]:
    b = as_betas(betas)
    hi, lo, c_hi, c_lo = alpha_bar_tables(b)
    ab = hi + lo
    c = c_hi + c_lo
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    c_prev = np.concatenate([[0.0], c[:-1]])
    return b, ab, c, ab_prev, c_prev


def posterior_mean_coef1(betas: ArrayLike) -> Array:
    r"""Coefficient of x₀ in the posterior mean, for every index t.

    .. math:: \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}

    Source: Ho et al. 2020, eq. 7. Index convention: entry i is the papers' t = i + 1, and entry 0
    is exactly 1 (ᾱ_0 = 1, 1 − ᾱ_1 = β_1).
    """
    b, _, c, ab_prev, _ = _prev_tables(betas)
    return np.sqrt(ab_prev) * b / c


def posterior_mean_coef2(betas: ArrayLike) -> Array:
    r"""Coefficient of x_t in the posterior mean, for every index t.

    .. math:: \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}

    Source: Ho et al. 2020, eq. 7. Entry 0 is 0. :math:`\sqrt{\alpha_t}` is the double-double square
    root of the exact 1 − β_t, so no rounding of 1 − β enters.
    """
    b, _, c, _, c_prev = _prev_tables(betas)
    h = 1.0 - b
    low = -b - (h - 1.0)
    rh, rl = _dd.dd_sqrt(h, low)
    return np.asarray(rh + rl) * c_prev / c


def beta_tilde(betas: ArrayLike) -> Array:
    r"""Posterior variance :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t`.

    Source: Ho et al. 2020, eq. 7. Index convention: entry 0 is 0 (the posterior of the first step is
    the point mass at x₀). Also the "fixed small" reverse variance (Ho et al. 2020, §3.2).
    """
    b, _, c, _, c_prev = _prev_tables(betas)
    return c_prev * b / c


def posterior_variance(betas: ArrayLike) -> Array:
    r"""The posterior variance β̃_t, under the name improved-diffusion and diffusers use; see :func:`beta_tilde`."""
    return beta_tilde(betas)


def posterior_log_variance_clipped(betas: ArrayLike) -> Array:
    r""":math:`\log\tilde\beta_t`, with the singular first entry replaced by :math:`\log\tilde\beta_2`.

    .. math:: \ell_t = \log\tilde\beta_{\max(t, 2)}

    β̃₁ = 0, so log β̃₁ = −∞. The DDPM authors' code and improved-diffusion clip it to the value at
    the second step (``posterior_log_variance_clipped``); diffusers and lucidrains clamp β̃ at 1e-20
    instead (``docs/conventions.md``; the harness treats that as a known variant). Index convention:
    entry 0 equals entry 1. Raises :class:`SingularError` when T = 1 (there is no second step).
    """
    b = as_betas(betas)
    if b.size < 2:
        raise SingularError("posterior_log_variance_clipped: T = 1, so log beta_tilde at the first step "
                            "(= log 0) has no second-step value to clip to")
    # log β̃_t = log β_t + log(1 − ᾱ_{t−1}) − log(1 − ᾱ_t), each log of a double-double (log h + ℓ/h).
    # Taking the log of the rounded β̃ instead would lose ~1/|log β̃| ULP where β̃ ≈ 1 (the cosine
    # schedule's capped last step, β̃ ≈ 0.999: ~300 ULP).
    _, _, c_hi, c_lo = alpha_bar_tables(b)
    log_c = np.log(c_hi) + c_lo / c_hi
    out = np.log(b[1:]) + log_c[:-1] - log_c[1:]
    return np.concatenate([[out[0]], out])


def posterior_mean(x0: ArrayLike, x_t: ArrayLike, t: int, betas: ArrayLike, t_prev: int | None = None) -> Array:
    r"""Posterior mean :math:`\tilde\mu_t(x_t, x_0)` (Ho et al. 2020, eq. 7); see :func:`posterior_coefficients`."""
    xx0 = as_array(x0, "x0")
    xt = as_array(x_t, "x_t")
    check_same_shape(x_t=xt, x0=xx0)
    pc = posterior_coefficients(betas, t, t_prev)
    return pc.coef_x0 * xx0 + pc.coef_xt * xt


def q_posterior(x0: ArrayLike, x_t: ArrayLike, t: int, betas: ArrayLike, t_prev: int | None = None) -> Gaussian:
    r"""The posterior :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t, \tilde\beta_t I)` (Ho et al. 2020, eqs. 6–7).

    Index convention: 0-based t; the state returned is that of index ``t_prev`` (default t − 1).
    """
    xx0 = as_array(x0, "x0")
    xt = as_array(x_t, "x_t")
    check_same_shape(x_t=xt, x0=xx0)
    pc = posterior_coefficients(betas, t, t_prev)
    return Gaussian(pc.coef_x0 * xx0 + pc.coef_xt * xt, pc.variance)
