r"""mpmath twin of :mod:`ddspec.reference.timesteps`: the β′ of a respaced schedule.

Written independently of the float64 reference: ᾱ is the twin's one ᾱ
(:func:`ddspec.reference.twin.alphas.alpha_bar`, the plain product of the exact factors 1 − β at
``dps`` significant digits), and β′ is 1 minus the quotient. At 50 digits the cancellation
in 1 − ᾱ_t/ᾱ_s (≈ 4 digits for β ≈ 1e-4) leaves far more than float64 needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath
import numpy as np
from numpy.typing import ArrayLike

from .alphas import alpha_bar as _alpha_bar

__all__ = ["respaced_betas"]


def respaced_betas(betas: ArrayLike, timesteps: Sequence[int] | ArrayLike, dps: int = 50) -> list[mpmath.mpf]:
    r""":math:`\beta'_i = 1 - \bar\alpha_{\tau_i} / \bar\alpha_{\tau_{i-1}}` for τ sorted ascending, ᾱ before τ_1 equal to 1.

    Source: Nichol & Dhariwal 2021, §4. ``betas`` are exact float64 inputs; ``timesteps`` are
    distinct 0-based indices in [0, T − 1], in any order. Returns the β′ in ascending order of τ,
    as mpf at ``dps`` digits (call ``float`` on them to round once).
    """
    b = [float(v) for v in np.asarray(betas, dtype=np.float64).ravel()]
    tau = sorted(int(t) for t in np.asarray(timesteps).ravel())
    if len(set(tau)) != len(tau):
        raise ValueError(f"timesteps={tau!r}: must be distinct")
    if not tau or tau[0] < 0 or tau[-1] >= len(b):
        raise ValueError(f"timesteps={tau!r}: must be non-empty indices in [0, {len(b) - 1}]")
    with mpmath.workdps(dps):
        one = mpmath.mpf(1)
        alpha_bar = _alpha_bar(np.asarray(b, dtype=np.float64), dps=dps)
        out: list[mpmath.mpf] = []
        previous = one
        for t in tau:
            out.append(one - alpha_bar[t] / previous)
            previous = alpha_bar[t]
        return out
