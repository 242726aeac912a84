r"""mpmath twin of :mod:`ddspec.reference.inversion`: the deterministic DDIM step towards noise.

Written from DDIM eq. 12 with σ = 0, run from ``t_from`` to a noisier ``t_to``:
x_to = sqrt(ᾱ_to)·x̂₀ + sqrt(1 − ᾱ_to)·ε with x̂₀ = (x − sqrt(1 − ᾱ_from)·ε)/sqrt(ᾱ_from), and x̂₀ = x
at ``t_from = -1`` (the data). ᾱ is :func:`ddspec.reference.twin.alphas.alpha_bar_at` (the literal running product of (1 − β) at ``dps`` digits).
"""

from __future__ import annotations

import mpmath
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar_at

__all__ = ["ddim_invert_step"]


def ddim_invert_step(eps: ArrayLike, t_from: int, t_to: int, x: ArrayLike, betas: ArrayLike,
                     *, dps: int = DEFAULT_DPS) -> list[mpf]:
    """The exact x at index ``t_to`` (a list of mpf, elementwise over the flattened inputs)."""
    with mpmath.workdps(dps):
        a_from = alpha_bar_at(betas, t_from, dps=dps)
        a_to = alpha_bar_at(betas, t_to, dps=dps)
        out = []
        for e, xx in zip(mpf_list(eps), mpf_list(x)):
            x0 = xx if t_from < 0 else (xx - mpmath.sqrt(1 - a_from) * e) / mpmath.sqrt(a_from)
            out.append(mpmath.sqrt(a_to) * x0 + mpmath.sqrt(1 - a_to) * e)
        return out
