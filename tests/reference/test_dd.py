"""Tests of ddspec.reference._dd: the error-free transformations and double-double arithmetic.

Exactness is checked with :class:`fractions.Fraction` (exact rational arithmetic on the doubles);
the accuracy of the double-double operations against Fraction or mpmath at 60 digits.
"""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest

from ddspec.reference import _dd

RNG = np.random.default_rng(123)


def _random_doubles(n: int, low_exp: int = -60, high_exp: int = 60) -> np.ndarray:
    """Random signs, full random mantissas, exponents in [low_exp, high_exp]."""
    m = RNG.uniform(1.0, 2.0, n)
    e = RNG.integers(low_exp, high_exp + 1, n)
    s = RNG.choice([-1.0, 1.0], n)
    return s * np.ldexp(m, e)


# adversarial pairs: huge cancellations, a tiny addend, ties, exact results
SUM_PAIRS = [
    (1.0, 2.0**-53),
    (1.0, 2.0**-54),
    (1e16, 1.0),
    (1.0, -(1.0 - 2.0**-53)),
    (0.1, 0.2),
    (2.0**1000, -(2.0**-1000)),
    (1.0, 1e-300),
    (-3.5, 3.5),
    (0.0, 0.0),
]


@pytest.mark.parametrize(("a", "b"), SUM_PAIRS)
def test_two_sum_is_exact_on_adversarial_pairs(a, b):
    for x, y in ((a, b), (b, a)):
        s, e = _dd.two_sum(x, y)
        assert s == x + y
        assert Fraction(s) + Fraction(e) == Fraction(x) + Fraction(y)


def test_two_sum_and_fast_two_sum_exact_on_random_arrays():
    a = _random_doubles(2000)
    b = _random_doubles(2000)
    s, e = _dd.two_sum(a, b)
    for x, y, ss, ee in zip(a.tolist(), b.tolist(), s.tolist(), e.tolist()):
        assert Fraction(ss) + Fraction(ee) == Fraction(x) + Fraction(y)
    big = np.where(np.abs(a) >= np.abs(b), a, b)
    small = np.where(np.abs(a) >= np.abs(b), b, a)
    s2, e2 = _dd.fast_two_sum(big, small)
    for x, y, ss, ee in zip(big.tolist(), small.tolist(), s2.tolist(), e2.tolist()):
        assert Fraction(ss) + Fraction(ee) == Fraction(x) + Fraction(y)
        assert ss == x + y


def test_fast_two_sum_needs_its_ordering():
    # |a| < |b| breaks Fast2Sum's precondition: the identity can fail (so the precondition matters).
    a, b = 2.0**-60, 1.0 + 2.0**-52
    s, e = _dd.fast_two_sum(a, b)
    assert Fraction(s) + Fraction(e) != Fraction(a) + Fraction(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [(1.0 + 2.0**-52, 1.0 - 2.0**-53), (0.1, 0.1), (3.0, 1.0 / 3.0), (2.0**500, 2.0**-500 * 1.1), (-7.25, 1e-10)],
)
def test_two_prod_is_exact_on_adversarial_pairs(a, b):
    p, e = _dd.two_prod(a, b)
    assert p == a * b
    assert Fraction(p) + Fraction(e) == Fraction(a) * Fraction(b)


def test_two_prod_is_exact_on_random_arrays():
    # Veltkamp splitting needs |a|, |b| < 2^996 and the error term above the subnormal range.
    a = _random_doubles(2000, -200, 200)
    b = _random_doubles(2000, -200, 200)
    p, e = _dd.two_prod(a, b)
    for x, y, pp, ee in zip(a.tolist(), b.tolist(), p.tolist(), e.tolist()):
        assert Fraction(pp) + Fraction(ee) == Fraction(x) * Fraction(y)


def _dd_random(n: int) -> tuple[np.ndarray, np.ndarray]:
    hi = _random_doubles(n, -20, 20)
    lo = hi * RNG.uniform(-1.0, 1.0, n) * 2.0**-54  # |lo| <= ulp(hi)/2
    return _dd.fast_two_sum(hi, lo)


def _rel_err(hi: float, lo: float, exact: Fraction) -> float:
    return float(abs(Fraction(hi) + Fraction(lo) - exact) / abs(exact))


def test_dd_mul_add_div_are_accurate_to_about_2_to_the_minus_100():
    ah, al = _dd_random(300)
    bh, bl = _dd_random(300)
    worst = {"mul": 0.0, "add": 0.0, "div": 0.0}
    mh, ml = _dd.dd_mul(ah, al, bh, bl)
    sh, sl = _dd.dd_add(ah, al, bh, bl)
    qh, ql = _dd.dd_div(ah, al, bh, bl)
    for i in range(ah.size):
        a = Fraction(ah[i]) + Fraction(al[i])
        b = Fraction(bh[i]) + Fraction(bl[i])
        worst["mul"] = max(worst["mul"], _rel_err(mh[i], ml[i], a * b))
        if a + b != 0:
            # the sum's error is relative to the larger input (cancellation is exact up to that)
            err = float(abs(Fraction(sh[i]) + Fraction(sl[i]) - (a + b)) / max(abs(a), abs(b)))
            worst["add"] = max(worst["add"], err)
        worst["div"] = max(worst["div"], _rel_err(qh[i], ql[i], a / b))
    assert worst["mul"] <= 2.0**-100
    assert worst["add"] <= 2.0**-100
    assert worst["div"] <= 2.0**-100


def test_dd_sqrt_is_accurate_and_handles_zero():
    hi, lo = _dd_random(300)
    hi, lo = np.abs(hi), np.where(hi < 0, -lo, lo)
    rh, rl = _dd.dd_sqrt(hi, lo)
    with mpmath.workdps(60):
        for h, l, r1, r2 in zip(hi.tolist(), lo.tolist(), rh.tolist(), rl.tolist()):
            exact = mpmath.sqrt(mpmath.mpf(h) + mpmath.mpf(l))
            assert abs(mpmath.mpf(r1) + mpmath.mpf(r2) - exact) / exact <= mpmath.mpf(2) ** -100
    zh, zl = _dd.dd_sqrt(0.0, 0.0)
    assert float(zh) == 0.0 and float(zl) == 0.0


def test_dd_to_float_is_the_rounded_sum():
    # For the exact pairs of TwoSum/TwoProduct, rounding hi + lo gives back fl(a + b) and fl(a * b).
    a = _random_doubles(500)
    b = _random_doubles(500)
    np.testing.assert_array_equal(_dd.dd_to_float(*_dd.two_sum(a, b)), a + b)
    np.testing.assert_array_equal(_dd.dd_to_float(*_dd.two_prod(a, b)), a * b)
