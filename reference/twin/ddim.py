r"""mpmath twin of :mod:`ddspec.reference.ddim`: σ_t(η) and the inference distribution q_σ (Song et al. 2021).

DDIM eq. 16, with the DDIM paper's α written ᾱ (DDPM notation) and s the previous index of the
(sub)sequence:

.. math::

    \sigma(\eta) = \eta\,\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}\,\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_s}}

and DDIM eq. 7:

.. math::

    q_\sigma(x_s \mid x_t, x_0) = \mathcal{N}\Big(\sqrt{\bar\alpha_s}\,x_0
      + \sqrt{1-\bar\alpha_s-\sigma^2}\cdot\frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma^2 I\Big).

Both are evaluated literally (two square roots, the quotient ᾱ_t/ᾱ_s of the twin's products) at
``dps`` digits; 1 − ᾱ_t/ᾱ_s loses about log10(1/β) of them, far fewer than ``dps``. Index
convention: 0-based t and ``t_prev`` with ``-1 <= t_prev <= t``; ``-1`` is the data (ᾱ = 1).
"""

from __future__ import annotations

import mpmath
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar_at

__all__ = [
    "ddim_sigma",
    "ddim_sigma_max",
    "q_sigma_mean",
    "q_sigma_variance",
    "q_sigma_forward",
    "ddim_gamma_weight",
    "ode_sigma",
    "ddim_ode_step",
]


def _check(t: int, t_prev: int) -> None:
    if not -1 <= t_prev <= t:
        raise ValueError(f"t_prev={t_prev}: the twin needs -1 <= t_prev <= t={t}")


def ddim_sigma(betas: ArrayLike, t: int, t_prev: int, eta: float, *, dps: int = DEFAULT_DPS) -> mpf:
    r"""σ(η) of DDIM eq. 16 for the step from index ``t`` to index ``t_prev``."""
    _check(t, t_prev)
    with mpmath.workdps(dps):
        ab_t = alpha_bar_at(betas, t, dps=dps)
        ab_s = alpha_bar_at(betas, t_prev, dps=dps)
        return mpf(eta) * mpmath.sqrt((1 - ab_s) / (1 - ab_t)) * mpmath.sqrt(1 - ab_t / ab_s)


def ddim_sigma_max(betas: ArrayLike, t: int, t_prev: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r"""The largest admissible σ, :math:`\sqrt{1-\bar\alpha_s}` (DDIM eq. 7 needs σ² ≤ 1 − ᾱ_s)."""
    _check(t, t_prev)
    with mpmath.workdps(dps):
        return mpmath.sqrt(1 - alpha_bar_at(betas, t_prev, dps=dps))


def q_sigma_mean(
    x0: ArrayLike, x_t: ArrayLike, t: int, t_prev: int, sigma: float, betas: ArrayLike, *, dps: int = DEFAULT_DPS
) -> list[mpf]:
    r"""Mean of :math:`q_\sigma(x_s \mid x_t, x_0)` (DDIM eq. 7), elementwise over the flattened arrays."""
    _check(t, t_prev)
    with mpmath.workdps(dps):
        ab_t = alpha_bar_at(betas, t, dps=dps)
        ab_s = alpha_bar_at(betas, t_prev, dps=dps)
        sg = mpf(sigma)
        rest = 1 - ab_s - sg * sg
        if rest < 0:
            raise ValueError(f"sigma={sigma}: sigma^2 > 1 - alpha_bar_prev, not admissible (DDIM eq. 7)")
        c_x0 = mpmath.sqrt(ab_s)
        c_dir = mpmath.sqrt(rest) / mpmath.sqrt(1 - ab_t)
        sa_t = mpmath.sqrt(ab_t)
        return [c_x0 * a + c_dir * (b - sa_t * a) for a, b in zip(mpf_list(x0), mpf_list(x_t))]


def q_sigma_variance(sigma: float, *, dps: int = DEFAULT_DPS) -> mpf:
    r"""Variance of :math:`q_\sigma`: σ² (DDIM eq. 7), exact for a float64 σ at ``dps`` ≥ 32."""
    with mpmath.workdps(dps):
        return mpf(sigma) ** 2


def q_sigma_forward(
    x_prev: ArrayLike, x0: ArrayLike, t: int, t_prev: int, sigma: float, betas: ArrayLike, *, dps: int = DEFAULT_DPS
) -> tuple[list[mpf], mpf]:
    r"""(mean, variance) of :math:`q_\sigma(x_t \mid x_s, x_0)` by Gaussian conditioning of the joint law.

    Under :math:`x_t \sim \mathcal N(\sqrt{\bar\alpha_t}x_0, 1-\bar\alpha_t)` and eq. 7,
    :math:`x_s = \sqrt{\bar\alpha_s}x_0 + k(x_t - \sqrt{\bar\alpha_t}x_0) + \sigma z`, :math:`k = \sqrt{1-\bar\alpha_s-\sigma^2}/\sqrt{1-\bar\alpha_t}`:
    :math:`C = \mathrm{Cov}(x_t, x_s) = k(1-\bar\alpha_t)`, :math:`V_s = k^2(1-\bar\alpha_t) + \sigma^2`; then
    mean :math:`\sqrt{\bar\alpha_t}x_0 + (C/V_s)(x_s - \sqrt{\bar\alpha_s}x_0)`, variance :math:`(1-\bar\alpha_t) - C^2/V_s`.
    """
    if not 0 <= t_prev < t:
        raise ValueError(f"t_prev={t_prev}: the twin needs 0 <= t_prev < t={t}")
    with mpmath.workdps(dps):
        ab_t = alpha_bar_at(betas, t, dps=dps)
        ab_s = alpha_bar_at(betas, t_prev, dps=dps)
        sg = mpf(sigma)
        k = mpmath.sqrt(1 - ab_s - sg * sg) / mpmath.sqrt(1 - ab_t)
        cov = k * (1 - ab_t)
        var_s = k * k * (1 - ab_t) + sg * sg
        mean = [mpmath.sqrt(ab_t) * a + cov / var_s * (xs - mpmath.sqrt(ab_s) * a)
                for xs, a in zip(mpf_list(x_prev), mpf_list(x0))]
        return mean, (1 - ab_t) - cov * cov / var_s


def ddim_gamma_weight(betas: ArrayLike, t: int, t_prev: int, sigma: float, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`\|\mu_q - \mu_p\|^2/(2\sigma^2)` per unit :math:`(\epsilon_\theta - \epsilon)^2`, literally:
    :math:`\big(\sqrt{\bar\alpha_s} - \sqrt{1-\bar\alpha_s-\sigma^2}\sqrt{\bar\alpha_t/(1-\bar\alpha_t)}\big)^2
    (1-\bar\alpha_t)/\bar\alpha_t / (2\sigma^2)`."""
    if not 0 <= t_prev < t:
        raise ValueError(f"t_prev={t_prev}: the twin needs 0 <= t_prev < t={t}")
    with mpmath.workdps(dps):
        ab_t = alpha_bar_at(betas, t, dps=dps)
        ab_s = alpha_bar_at(betas, t_prev, dps=dps)
        sg = mpf(sigma)
        c = mpmath.sqrt(ab_s) - mpmath.sqrt(1 - ab_s - sg * sg) * mpmath.sqrt(ab_t) / mpmath.sqrt(1 - ab_t)
        return c * c * (1 - ab_t) / ab_t / (2 * sg * sg)


def ode_sigma(betas: ArrayLike, t: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`\sqrt{(1-\bar\alpha_t)/\bar\alpha_t}` (DDIM §4.3); 0 at index −1."""
    with mpmath.workdps(dps):
        ab = alpha_bar_at(betas, t, dps=dps)
        return mpmath.sqrt((1 - ab) / ab)


def ddim_ode_step(x_bar: ArrayLike, eps: ArrayLike, sigma_from: float, sigma_to: float,
                  *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\bar x + (\sigma' - \sigma)\epsilon` elementwise (DDIM eq. 14, one Euler step)."""
    with mpmath.workdps(dps):
        d = mpf(sigma_to) - mpf(sigma_from)
        return [x + d * e for x, e in zip(mpf_list(x_bar), mpf_list(eps))]
