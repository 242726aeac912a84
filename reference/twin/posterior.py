r"""mpmath twin of :mod:`ddspec.reference.posterior`: :math:`q(x_{t-1} \mid x_t, x_0)` from Ho et al. 2020, eq. 7.

.. math::

    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
                + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t,\qquad
    \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t

evaluated literally at ``dps`` digits from the twin's ᾱ (the running product of ``1 - mpf(β)``).
For a strided step from index t to ``t_prev`` (Nichol & Dhariwal 2021, §4) β_t becomes
:math:`\beta' = 1 - \prod_{r=t_\mathrm{prev}+1}^{t}(1-\beta_r)` and α_t becomes that product.

Index convention: 0-based, entry ``i`` is the papers' t = i + 1, and the "previous" state of index 0
is the data (index −1, ᾱ = 1). Inputs are float64 values taken exactly; results are ``mpmath.mpf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar, alpha_bar_at, alpha_bar_ratio, alphas

__all__ = [
    "PosteriorCoefficients",
    "posterior_coefficients",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "beta_tilde",
    "posterior_log_variance_clipped",
    "posterior_mean",
]


@dataclass(frozen=True)
class PosteriorCoefficients:
    """``coef_x0`` (on x₀) and ``coef_xt`` (on x_t) of the posterior mean, and its variance β̃, as mpf."""

    coef_x0: mpf
    coef_xt: mpf
    variance: mpf


def _previous(abar: list[mpf]) -> list[mpf]:
    """ᾱ_{t−1} aligned with index t: ᾱ before the first step is 1."""
    return [mpf(1)] + abar[:-1]


def posterior_mean_coef1(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\sqrt{\bar\alpha_{t-1}}\,\beta_t/(1-\bar\alpha_t)` for every index (Ho et al. 2020, eq. 7)."""
    with mpmath.workdps(dps):
        ab = alpha_bar(betas, dps=dps)
        return [mpmath.sqrt(p) * b / (1 - a) for p, b, a in zip(_previous(ab), mpf_list(betas), ab)]


def posterior_mean_coef2(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})/(1-\bar\alpha_t)` for every index (Ho et al. 2020, eq. 7)."""
    with mpmath.workdps(dps):
        ab = alpha_bar(betas, dps=dps)
        al = alphas(betas, dps=dps)
        return [mpmath.sqrt(x) * (1 - p) / (1 - a) for x, p, a in zip(al, _previous(ab), ab)]


def beta_tilde(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t` for every index (Ho et al. 2020, eq. 7)."""
    with mpmath.workdps(dps):
        ab = alpha_bar(betas, dps=dps)
        return [(1 - p) / (1 - a) * b for p, b, a in zip(_previous(ab), mpf_list(betas), ab)]


def posterior_log_variance_clipped(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\log\tilde\beta_{\max(t,2)}`: log β̃ with the first (singular, β̃₁ = 0) entry replaced by the second."""
    bt = beta_tilde(betas, dps=dps)
    if len(bt) < 2:
        raise ValueError("betas: the clipped log-variance needs T >= 2")
    with mpmath.workdps(dps):
        return [mpmath.log(bt[max(i, 1)]) for i in range(len(bt))]


def posterior_coefficients(
    betas: ArrayLike, t: int, t_prev: int | None = None, *, dps: int = DEFAULT_DPS
) -> PosteriorCoefficients:
    r"""The posterior from index ``t`` to ``t_prev`` (default t − 1; −1 is the data), strided if t_prev < t − 1.

    .. math::

        \beta' = 1 - \prod_{r=s+1}^{t}(1-\beta_r),\quad
        c_{x_0} = \frac{\sqrt{\bar\alpha_s}\,\beta'}{1-\bar\alpha_t},\quad
        c_{x_t} = \frac{\sqrt{1-\beta'}\,(1-\bar\alpha_s)}{1-\bar\alpha_t},\quad
        \tilde\beta = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\beta'

    (Ho et al. 2020, eq. 7 on the respaced schedule of Nichol & Dhariwal 2021, §4), s = t_prev.
    """
    s = t - 1 if t_prev is None else t_prev
    if not -1 <= s < t:
        raise ValueError(f"t_prev={t_prev}: the twin needs -1 <= t_prev < t={t}")
    with mpmath.workdps(dps):
        keep = alpha_bar_ratio(betas, t, s, dps=dps)
        bprime = 1 - keep
        ab_s = alpha_bar_at(betas, s, dps=dps)
        one_minus_t = 1 - alpha_bar_at(betas, t, dps=dps)
        return PosteriorCoefficients(
            coef_x0=mpmath.sqrt(ab_s) * bprime / one_minus_t,
            coef_xt=mpmath.sqrt(keep) * (1 - ab_s) / one_minus_t,
            variance=(1 - ab_s) / one_minus_t * bprime,
        )


def posterior_mean(
    x0: ArrayLike, x_t: ArrayLike, t: int, betas: ArrayLike, t_prev: int | None = None, *, dps: int = DEFAULT_DPS
) -> list[mpf]:
    r""":math:`\tilde\mu = c_{x_0} x_0 + c_{x_t} x_t`, elementwise over the flattened arrays (Ho et al. 2020, eq. 7)."""
    pc = posterior_coefficients(betas, t, t_prev, dps=dps)
    with mpmath.workdps(dps):
        return [pc.coef_x0 * a + pc.coef_xt * b for a, b in zip(mpf_list(x0), mpf_list(x_t))]
