r"""Spherical linear interpolation of latents (Shoemake 1985), as DDIM uses it to interpolate x_T.

DDIM's deterministic generator makes x_T a meaningful latent code; Song et al. 2021 (§5.3, App. D)
interpolate two latents with

.. math::

    z_\alpha = \frac{\sin((1-\alpha)\theta)}{\sin\theta}\,z_0 + \frac{\sin(\alpha\theta)}{\sin\theta}\,z_1,
    \qquad \theta = \arccos\frac{\langle z_0, z_1\rangle}{\lVert z_0\rVert\,\lVert z_1\rVert},

which keeps the interpolants at the norm a Gaussian latent typically has (linear interpolation
shrinks it). Each latent is one vector: every axis is flattened.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, as_scalar, check_same_shape, fail

__all__ = ["SMALL_ANGLE", "slerp"]

Array = NDArray[np.float64]

#: Below this angle (2⁻²⁶ rad) slerp and lerp differ by less than θ²/6 < 2⁻⁵⁴ relative: lerp is used.
SMALL_ANGLE = 2.0**-26


def slerp(z0: ArrayLike, z1: ArrayLike, alpha: float) -> Array:
    r"""Spherical interpolation between latents ``z0`` (α = 0) and ``z1`` (α = 1).

    .. math::

        \mathrm{slerp}(z_0, z_1; \alpha) = \frac{\sin((1-\alpha)\theta)\,z_0 + \sin(\alpha\theta)\,z_1}{\sin\theta},
        \qquad \theta = \angle(z_0, z_1) \in [0, \pi]

    Source: Shoemake 1985 ("Animating rotation with quaternion curves"); used for DDIM latent
    interpolation (Song et al. 2021, §5.3 and App. D). The vectors are not normalised: for
    equal norms the result has that norm, and the endpoints are returned exactly.

    * θ is computed as :math:`2\,\mathrm{atan2}(\lVert u_0 - u_1\rVert, \lVert u_0 + u_1\rVert)` with
      :math:`u_i = z_i/\lVert z_i\rVert` (Kahan's formula; equal to the arccos of the normalised dot
      product, which loses half the digits near 0 and π).
    * θ < 2⁻²⁶ (:data:`SMALL_ANGLE`, nearly parallel): falls back to linear interpolation
      :math:`(1-\alpha)z_0 + \alpha z_1`, which agrees with slerp to within rounding there.
    * π − θ < 2⁻²⁶ (antipodal to working precision): raises ValueError naming ``z1``: every great
      circle through z₀ passes through −z₀, so the path is ambiguous.
    * ``alpha`` ∈ [0, 1]; zero-norm latents are refused; ``z0`` and ``z1`` have the same shape.
    """
    a0 = as_array(z0, "z0")
    a1 = as_array(z1, "z1")
    check_same_shape(z0=a0, z1=a1)
    a = as_scalar(alpha, "alpha", low=0.0, high=1.0)
    n0 = float(np.linalg.norm(a0))
    n1 = float(np.linalg.norm(a1))
    if n0 == 0.0:
        fail("z0", z0, "has norm 0: its direction (and the angle to z1) is undefined")
    if n1 == 0.0:
        fail("z1", z1, "has norm 0: its direction (and the angle to z0) is undefined")
    if a == 0.0:
        return a0.copy()
    if a == 1.0:
        return a1.copy()
    u0 = a0 / n0
    u1 = a1 / n1
    theta = 2.0 * float(np.arctan2(np.linalg.norm(u0 - u1), np.linalg.norm(u0 + u1)))
    if np.pi - theta < SMALL_ANGLE:
        fail("z1", z1, f"is antipodal to z0 (angle {theta!r} rad within 2**-26 of pi): the great circle is ambiguous")
    if theta < SMALL_ANGLE:
        return (1.0 - a) * a0 + a * a1
    sin_theta = np.sin(theta)
    return (np.sin((1.0 - a) * theta) / sin_theta) * a0 + (np.sin(a * theta) / sin_theta) * a1
