"""Double-double arithmetic: a number is an unevaluated sum ``hi + lo`` with ``|lo| <= ulp(hi)/2``.

This gives about 106 bits of precision out of plain float64 operations. The reference uses it to
build the schedule tables (ᾱ = ∏(1 − β), 1 − ᾱ) so that each table entry is correct to a few ULP
after one final rounding, where a naive ``cumprod`` drifts by ~10 ULP at T = 1000 and ``1 - cumprod``
loses ~1400 ULP near the first step.

The error-free transformations are the classical ones (Knuth's TwoSum, Dekker's Fast2Sum and
Veltkamp–Dekker TwoProduct without FMA). They are written for NumPy arrays and Python floats alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SPLITTER = 134217729.0  # 2**27 + 1, Veltkamp's constant for float64


def two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """``s + e == a + b`` exactly, ``s = fl(a + b)`` (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """``s + e == a + b`` exactly, assuming ``|a| >= |b|`` (Dekker)."""
    s = a + b
    e = b - (s - a)
    return s, e


def _split(a: Any) -> tuple[Any, Any]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: Any, b: Any) -> tuple[Any, Any]:
    """``p + e == a * b`` exactly, ``p = fl(a * b)`` (Dekker; no FMA needed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def dd_mul(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    """Product of two double-doubles, relative error ~ 2**-104."""
    p, e = two_prod(ah, bh)
    e = e + (ah * bl + al * bh)
    return fast_two_sum(p, e)


def dd_add(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    """Sum of two double-doubles (the accurate 'IEEE' variant)."""
    s, e = two_sum(ah, bh)
    t, f = two_sum(al, bl)
    e = e + t
    s, e = fast_two_sum(s, e)
    e = e + f
    return fast_two_sum(s, e)


def dd_div(ah: Any, al: Any, bh: Any, bl: Any) -> tuple[Any, Any]:
    """Quotient of two double-doubles (one Newton correction), relative error ~ 2**-104."""
    q1 = ah / bh
    ph, pl = dd_mul(q1, 0.0 * q1, bh, bl)
    rh, rl = dd_add(ah, al, -ph, -pl)
    q2 = rh / bh
    return fast_two_sum(q1, q2)


def dd_sqrt(ah: Any, al: Any) -> tuple[Any, Any]:
    """Square root of a non-negative double-double (one Newton correction)."""
    ah = np.asarray(ah, dtype=np.float64)
    al = np.asarray(al, dtype=np.float64)
    r = np.sqrt(ah)
    safe = np.where(r > 0, r, 1.0)
    sh, sl = two_prod(r, r)
    corr = ((ah - sh) - sl + al) / (2.0 * safe)
    corr = np.where(r > 0, corr, 0.0)
    return fast_two_sum(r, corr)


def dd_to_float(hi: Any, lo: Any) -> Any:
    """Round a double-double to the nearest double."""
    return hi + lo
