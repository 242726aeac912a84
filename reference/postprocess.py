r"""Post-processing of samples: model space [−1, 1] → 8-bit pixels [0, 255].

The data are scaled to [−1, 1] for training (Ho et al. 2020, §3.3): pixel k ∈ {0, …, 255} becomes the
grid value

.. math:: e_k = \frac{2k}{255} - 1 = \frac{k}{127.5} - 1,

the centre of the decoder's bin k (eq. 13; :func:`~ddspec.reference.likelihood.discretized_gaussian_log_likelihood`).
Samples are mapped back with

.. math:: y = \tfrac{255}{2}(x + 1) = 127.5\,(x + 1),

clamped to [0, 255] and made integers. The public implementations differ in the last step:

* diffusers (``VaeImageProcessor``: ``denormalize`` then ``numpy_to_pil``): (x/2 + 0.5) clamped to
  [0, 1], times 255, then numpy's ``round`` (ties to even): ``rounding="round"``;
* improved-diffusion / guided-diffusion (``image_sample.py``): ((x + 1) · 127.5) clamped to [0, 255]
  and cast to uint8, which truncates: ``rounding="truncate"``.

They differ by one level for about half of all inputs (e.g. x = 0 gives 128 resp. 127). Both map the
grid to itself: ``to_uint8(e_k) == k`` for every k, in both modes (see :func:`to_uint8` for why
truncation needs a tolerance of a few units of roundoff to do so).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .validation import as_array, fail

__all__ = ["ROUNDINGS", "to_uint8"]

ROUNDINGS = ("round", "truncate")

#: truncate's tolerance below a grid value, in units of the input dtype's machine epsilon
#: (``np.finfo(dtype).eps``: 2⁻⁵² for float64, 2⁻²³ for float32); see :func:`to_uint8`. Not exported.
TRUNCATE_TOL_EPS = 4


@lru_cache(maxsize=2)
def _truncate_thresholds(eps: float) -> NDArray[np.float64]:
    r"""For k = 1..255 the smallest double :math:`L_k \ge e_k - \tau`, τ = TRUNCATE_TOL_EPS·eps, exactly.

    ``x >= L_k`` is then the exact comparison :math:`x \ge e_k - \tau` for every double x (rational
    arithmetic, one correctly rounded conversion, and a step up where it rounded down).
    """
    tau = TRUNCATE_TOL_EPS * Fraction(eps)
    out = np.empty(255, dtype=np.float64)
    for k in range(1, 256):
        edge = Fraction(2 * k - 255, 255) - tau
        d = float(edge)  # correctly rounded
        if Fraction(d) < edge:
            d = float(np.nextafter(d, np.inf))
        out[k - 1] = d
    return out


def to_uint8(x: ArrayLike, *, rounding: str = "round") -> NDArray[np.uint8]:
    r"""Map samples in [−1, 1] to uint8 pixels; the 8-bit grid :math:`e_k = 2k/255 - 1` maps to k.

    .. math::

        \texttt{round}:\ \mathrm{clip}\big(\mathrm{rne}(127.5(x+1)),\,0,\,255\big),\qquad
        \texttt{truncate}:\ \mathrm{clip}\big(\lfloor 127.5(x+1+\tau_D)\rfloor,\,0,\,255\big)
        = \max\{k \in \{0..255\} : x \ge e_k - \tau_D\},\qquad \tau_D = 4\,\varepsilon_D

    ``rne`` rounds to the nearest integer, ties to even (numpy's ``round``, diffusers); ``truncate``
    is improved-diffusion's cast (floor, since the clamped value is ≥ 0), with a tolerance τ_D below
    each grid value. :math:`\varepsilon_D` is the machine epsilon of the input's dtype: 2⁻²³ for a
    float32 array, 2⁻⁵² for everything else (float64, integers, Python floats; a float16 array is
    taken as float64). Values outside [−1, 1] are clamped, as both do. Endpoints: −1 → 0, 1 → 255;
    x = 0 (y = 127.5) → 128 (round) or 127 (truncate).

    Why truncation needs τ. The grid value :math:`e_k` is the *lower edge* of truncation's bin k
    (:math:`y = k` exactly), and :math:`e_k` is not a binary number for 0 < k < 255. Its float
    representation — whether correctly rounded, ``(2k - 255)/255``, or built with a couple of
    roundings, ``k/127.5 - 1`` — lies below :math:`e_k` for about half of all k (by at most
    1.25 ε_D for the usual formulas), and the exact floor then gives k − 1: the exact-floor
    definition maps 131 of the 256 float64 values ``k/127.5 - 1`` to k − 1. With τ_D = 4 ε_D
    every such representation maps to k, so uint8 → grid → uint8 is the identity, as the decoder's
    bins (centred on :math:`e_k`) assume. τ_D is far below the decoder's own grid tolerance
    (``likelihood.GRID_TOL`` = 1e-6): every input that truncate moves up to k is one the decoder
    already reads as :math:`e_k`.

    Relation to the float cast ``((x + 1) * 127.5).to(uint8)`` in dtype D. The cast computes
    :math:`\lfloor \mathrm{fl}(\mathrm{fl}(x+1)\cdot 127.5)\rfloor`; its two roundings move y by at
    most :math:`64\varepsilon_D + 64\varepsilon_D = 128\varepsilon_D` (|x + 1| ≤ 2 and y < 256), i.e.
    x by at most :math:`\tfrac{128}{127.5}\varepsilon_D`. So the cast equals the exact floor except
    within about ε_D of a grid value, where its roundings decide: it maps 20 of the 256 float64
    values ``k/127.5 - 1`` (and 95 of the float32 ones) to k − 1. This definition agrees with the
    cast everywhere except for x in :math:`[e_k - 4\varepsilon_D,\ e_k + \tfrac{128}{127.5}\varepsilon_D]`,
    a band of a few units of roundoff around each grid value, where it returns k (the grid value) and
    the cast returns k or k − 1 depending on how its roundings fall.

    Exactness: for round, y = 127.5(x + 1) is formed exactly as a double-double and rounded from
    that; for truncate, x is compared exactly with the doubles :math:`L_k = \lceil e_k - \tau_D\rceil`
    (computed in rational arithmetic). The result is the exact function of the input, on every
    machine. diffusers evaluates (x/2 + 0.5)·255 in the model's dtype and float32, which can land on
    the other side of a rounding boundary (y = k + ½) for inputs within a few ULP of it.
    """
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        fail("rounding", rounding, f"must be one of {ROUNDINGS}")
    xx = np.clip(as_array(x, "x"), -1.0, 1.0)  # the same as clamping y to [0, 255]; keeps two_prod finite
    if rounding == "truncate":
        is32 = np.asarray(x).dtype == np.float32
        eps = float(np.finfo(np.float32 if is32 else np.float64).eps)
        # the number of thresholds L_1..L_255 at or below x is max{k : x >= e_k - tau}
        k = np.searchsorted(_truncate_thresholds(eps), xx, side="right")
        return np.asarray(k).astype(np.uint8)
    ph, pl = _dd.two_prod(127.5, xx)
    yh, yl = _dd.dd_add(ph, pl, np.full_like(ph, 127.5), np.zeros_like(ph))
    yh = np.asarray(yh, dtype=np.float64)
    yl = np.asarray(yl, dtype=np.float64)
    r = np.rint(yh)  # ties to even on the leading part
    d = yh - r  # exact: |yh - r| <= 1/2 and both are doubles of similar size
    half = np.abs(d) == 0.5
    # yh is a half-integer: the low part decides, and only an exact tie (yl == 0) keeps rint's even choice
    up = half & (yl > 0) & (d > 0)
    down = half & (yl < 0) & (d < 0)
    out = np.where(up, r + 1.0, np.where(down, r - 1.0, r))
    return out.astype(np.uint8)
