r"""mpmath twin of :mod:`ddspec.reference.interpolation`: slerp with θ from the arccos of the cosine.

The cosine is formed at working precision, so the textbook arccos formula is accurate here.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath

from . import DEFAULT_DPS, mpf_list

__all__ = ["angle", "slerp"]

MP = mpmath.mpf


def angle(z0: Sequence[float], z1: Sequence[float]) -> MP:
    r""":math:`\theta = \arccos(\langle z_0, z_1\rangle / (\lVert z_0\rVert\lVert z_1\rVert))`."""
    with mpmath.workdps(DEFAULT_DPS):
        a, b = mpf_list(z0), mpf_list(z1)
        dot = mpmath.fsum(x * y for x, y in zip(a, b))
        n0 = mpmath.sqrt(mpmath.fsum(x * x for x in a))
        n1 = mpmath.sqrt(mpmath.fsum(y * y for y in b))
        return mpmath.acos(dot / (n0 * n1))


def slerp(z0: Sequence[float], z1: Sequence[float], alpha: float) -> list[MP]:
    r""":math:`(\sin((1-\alpha)\theta) z_0 + \sin(\alpha\theta) z_1)/\sin\theta` (Shoemake 1985)."""
    with mpmath.workdps(DEFAULT_DPS):
        th = angle(z0, z1)
        al = mpmath.mpf(alpha)
        c0 = mpmath.sin((1 - al) * th) / mpmath.sin(th)
        c1 = mpmath.sin(al * th) / mpmath.sin(th)
        return [c0 * x + c1 * y for x, y in zip(mpf_list(z0), mpf_list(z1))]
