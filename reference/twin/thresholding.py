r"""mpmath twin of :mod:`ddspec.reference.thresholding`: the linear quantile and the clip-and-divide.

Quantile (Hyndman & Fan type 7, numpy's and torch's default "linear"): for n sorted values
:math:`a_0 \le \dots \le a_{n-1}` and :math:`h = (n-1)r` (exact, r's double taken as exact),
:math:`Q = a_{\lfloor h\rfloor} + (h-\lfloor h\rfloor)(a_{\lfloor h\rfloor+1} - a_{\lfloor h\rfloor})`.
"""

from __future__ import annotations

from collections.abc import Sequence

import mpmath

from . import DEFAULT_DPS, mpf_list

__all__ = ["quantile_linear", "dynamic_threshold_scale", "threshold_given_scale"]

MP = mpmath.mpf


def quantile_linear(values: Sequence[float], ratio: float) -> MP:
    """The type-7 quantile of ``values`` at ``ratio``, exactly."""
    with mpmath.workdps(DEFAULT_DPS):
        a = sorted(mpf_list(values))
        h = (len(a) - 1) * mpmath.mpf(ratio)
        lo = int(mpmath.floor(h))
        if lo >= len(a) - 1:
            return a[-1]
        return a[lo] + (h - lo) * (a[lo + 1] - a[lo])


def dynamic_threshold_scale(sample: Sequence[float], ratio: float, max_value: float) -> MP:
    r""":math:`s = \min(\max(Q_r(|x|), 1), s_{\max})` for one sample (flattened)."""
    with mpmath.workdps(DEFAULT_DPS):
        q = quantile_linear([abs(float(v)) for v in sample], ratio)
        return min(max(q, mpmath.mpf(1)), mpmath.mpf(max_value))


def threshold_given_scale(sample: Sequence[float], s: float) -> list[MP]:
    r""":math:`\min(\max(x, -s), s)/s` for one sample, with s given (taken as exact)."""
    with mpmath.workdps(DEFAULT_DPS):
        ss = mpmath.mpf(s)
        return [max(-ss, min(ss, v)) / ss for v in mpf_list(sample)]
