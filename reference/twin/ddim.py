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

__all__ = ["ddim_sigma", "ddim_sigma_max", "q_sigma_mean", "q_sigma_variance"]


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
