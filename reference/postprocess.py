r"""Post-processing of samples: model space [−1, 1] → 8-bit pixels [0, 255].

The data are scaled to [−1, 1] for training (Ho et al. 2020, §3.3), and samples are mapped back with

.. math:: y = \tfrac{255}{2}(x + 1) = 127.5\,(x + 1),

clamped to [0, 255] and made integers. The public implementations differ in the last step:

* diffusers (``VaeImageProcessor``: ``denormalize`` then ``numpy_to_pil``): (x/2 + 0.5) clamped to
  [0, 1], times 255, then numpy's ``round`` (ties to even): ``rounding="round"``;
* improved-diffusion / guided-diffusion (``image_sample.py``): ((x + 1) · 127.5) clamped to [0, 255]
  and cast to uint8, which truncates: ``rounding="truncate"``.

They differ by one level for about half of all inputs (e.g. x = 0 gives 128 resp. 127).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from ._validate import as_array, fail

__all__ = ["ROUNDINGS", "to_uint8"]

ROUNDINGS = ("round", "truncate")


def to_uint8(x: ArrayLike, *, rounding: str = "round") -> NDArray[np.uint8]:
    r"""Map samples in [−1, 1] to uint8 pixels.

    .. math::

        \texttt{round}:\ \mathrm{clip}\big(\mathrm{rne}(127.5(x+1)),\,0,\,255\big),\qquad
        \texttt{truncate}:\ \mathrm{clip}\big(\lfloor 127.5(x+1)\rfloor,\,0,\,255\big)

    ``rne`` rounds to the nearest integer, ties to even (numpy's ``round``, diffusers); ``truncate``
    is improved-diffusion's cast (floor, since the clamped value is ≥ 0). Values outside [−1, 1] are
    clamped, as both do (clamping before or after rounding is the same, the bounds being integers).
    Endpoints: −1 → 0, 1 → 255; x = 0 (y = 127.5) → 128 (round) or 127 (truncate).

    Exactness: y = 127.5(x + 1) is formed exactly as a double-double and rounded/floored from that,
    so the result is the exact function of the float64 input. diffusers evaluates (x/2 + 0.5)·255 in
    the model's dtype and float32, which can land on the other side of a rounding boundary for inputs
    within a few ULP of it (a difference of one level).
    """
    if not isinstance(rounding, str) or rounding not in ROUNDINGS:
        fail("rounding", rounding, f"must be one of {ROUNDINGS}")
    xx = np.clip(as_array(x, "x"), -1.0, 1.0)  # the same as clamping y to [0, 255]; keeps two_prod finite
    ph, pl = _dd.two_prod(127.5, xx)
    yh, yl = _dd.dd_add(ph, pl, np.full_like(ph, 127.5), np.zeros_like(ph))
    yh = np.asarray(yh, dtype=np.float64)
    yl = np.asarray(yl, dtype=np.float64)
    if rounding == "truncate":
        f = np.floor(yh)
        out = np.where((yh == f) & (yl < 0), f - 1.0, f)
    else:
        r = np.rint(yh)  # ties to even on the leading part
        d = yh - r  # exact: |yh - r| <= 1/2 and both are doubles of similar size
        half = np.abs(d) == 0.5
        # yh is a half-integer: the low part decides, and only an exact tie (yl == 0) keeps rint's even choice
        up = half & (yl > 0) & (d > 0)
        down = half & (yl < 0) & (d < 0)
        out = np.where(up, r + 1.0, np.where(down, r - 1.0, r))
    return out.astype(np.uint8)
