r"""mpmath twin of :mod:`ddspec.reference.langevin` (Song & Ermon 2019, Algorithm 1)."""

from __future__ import annotations

from collections.abc import Sequence

import mpmath

from . import DEFAULT_DPS, mpf_list

__all__ = ["langevin_step_size", "annealed_langevin_step"]

MP = mpmath.mpf


def langevin_step_size(sigma_i: float, sigma_L: float, epsilon: float) -> MP:
    r""":math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`."""
    with mpmath.workdps(DEFAULT_DPS):
        return mpmath.mpf(epsilon) * mpmath.mpf(sigma_i) ** 2 / mpmath.mpf(sigma_L) ** 2


def annealed_langevin_step(
    x: Sequence[float], score: Sequence[float], step_size: float, noise: Sequence[float]
) -> list[MP]:
    r""":math:`x + \tfrac{\alpha}{2}s + \sqrt{\alpha}\,z` elementwise."""
    with mpmath.workdps(DEFAULT_DPS):
        a = mpmath.mpf(step_size)
        r = mpmath.sqrt(a)
        return [xx + a / 2 * s + r * z for xx, s, z in zip(mpf_list(x), mpf_list(score), mpf_list(noise))]
