r"""mpmath twin of :mod:`ddspec.reference.guidance` (Dhariwal & Nichol 2021, Algorithms 1–2; Ho & Salimans 2022, eq. 6)."""

from __future__ import annotations

from collections.abc import Sequence

import mpmath

from . import DEFAULT_DPS, mpf_list
from .variances import alpha_bar

__all__ = ["classifier_guided_mean", "classifier_guided_eps", "classifier_free_guidance"]

MP = mpmath.mpf


def classifier_guided_mean(
    mean: Sequence[float], variance: Sequence[float], grad_log_p_y: Sequence[float], scale: float
) -> list[MP]:
    r""":math:`\mu + s\,\Sigma\,g` elementwise (``variance`` given per element)."""
    with mpmath.workdps(DEFAULT_DPS):
        s = mpmath.mpf(scale)
        return [m + s * v * g for m, v, g in zip(mpf_list(mean), mpf_list(variance), mpf_list(grad_log_p_y))]


def classifier_guided_eps(
    eps: Sequence[float], grad_log_p_y: Sequence[float], t: int, betas: Sequence[float], scale: float
) -> list[MP]:
    r""":math:`\epsilon - s\sqrt{1-\bar\alpha_t}\,g` elementwise."""
    with mpmath.workdps(DEFAULT_DPS):
        c = mpmath.sqrt(1 - alpha_bar(betas, t))
        s = mpmath.mpf(scale)
        return [e - s * c * g for e, g in zip(mpf_list(eps), mpf_list(grad_log_p_y))]


def classifier_free_guidance(eps_uncond: Sequence[float], eps_cond: Sequence[float], scale: float) -> list[MP]:
    r""":math:`(1 + w)\epsilon_c - w\,\epsilon_u` with w = scale − 1 (the paper's form, eq. 6)."""
    with mpmath.workdps(DEFAULT_DPS):
        w = mpmath.mpf(scale) - 1
        return [(1 + w) * c - w * u for u, c in zip(mpf_list(eps_uncond), mpf_list(eps_cond))]
