"""Tests of reference/postprocess.py: [−1, 1] → uint8 with diffusers' rounding and improved-diffusion's truncation.

Every expected value is the exact function evaluated in rational arithmetic (``fractions.Fraction``) on
the float input, never the code's own output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest

from ddspec.reference.postprocess import TRUNCATE_TOL_EPS, to_uint8

K = np.arange(256)
DTYPES = {"float64": np.float64, "float32": np.float32}


def _tau(dtype: type) -> Fraction:
    """truncate's tolerance τ_D = 4 ε_D below a grid value (the module's definition, in exact arithmetic)."""
    return TRUNCATE_TOL_EPS * Fraction(float(np.finfo(dtype).eps))


def _exact_uint8(x: float, rounding: str, dtype: type = np.float64) -> int:
    """The exact function, in rational arithmetic: y = 127.5(x + 1) rounded half-to-even, or
    ⌊127.5(x + 1 + τ_D)⌋; clamped to [0, 255]."""
    xf = Fraction(float(x))
    if rounding == "truncate":
        r = math.floor(Fraction(255, 2) * (xf + 1 + _tau(dtype)))
    else:
        y = Fraction(255, 2) * (xf + 1)
        f = math.floor(y)
        frac = y - f
        r = f + 1 if frac > Fraction(1, 2) else f if frac < Fraction(1, 2) else (f if f % 2 == 0 else f + 1)
    return min(max(r, 0), 255)


def _grid(dtype: type) -> dict[str, np.ndarray]:
    """The 8-bit grid e_k = 2k/255 − 1 as users build it in ``dtype`` (every formula rounds differently)."""
    d = dtype
    k = K.astype(d)
    forms: dict[str, Callable[[], np.ndarray]] = {
        "k/127.5-1": lambda: k / d(127.5) - d(1),
        "(2k-255)/255": lambda: (d(2) * k - d(255)) / d(255),
        "k*(2/255)-1": lambda: k * (d(2) / d(255)) - d(1),
        "(k-127.5)/127.5": lambda: (k - d(127.5)) / d(127.5),
        "k/255*2-1": lambda: k / d(255) * d(2) - d(1),
        "nearest": lambda: np.array([Fraction(2 * int(j) - 255, 255) for j in K], dtype=np.float64).astype(d),
    }
    return {name: np.asarray(f(), dtype=d) for name, f in forms.items()}


@pytest.mark.parametrize("rounding", ["round", "truncate"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_every_grid_value_maps_to_its_pixel(dtype: str, rounding: str) -> None:
    """uint8 → [−1, 1] → uint8 is the identity for all 256 k, however the grid value was rounded.

    Before the tolerance, truncate took the exact floor of a float64 ``k/127.5 - 1`` below e_k and
    returned k − 1 for 131 of the 256 values (127 of the float32 ones)."""
    d = DTYPES[dtype]
    for form, g in _grid(d).items():
        # the grid values really are off the exact grid (else the test proves nothing) and within τ_D of it
        err = [Fraction(float(v)) - Fraction(2 * int(j) - 255, 255) for v, j in zip(g, K)]
        assert max(abs(e) for e in err) <= _tau(d), form
        got = to_uint8(g, rounding=rounding)
        expected = np.array([_exact_uint8(float(v), rounding, d) for v in g])
        np.testing.assert_array_equal(expected, K, err_msg=f"exact function, {form} in {dtype}")
        bad = np.flatnonzero(got != K)
        assert bad.size == 0, (f"{rounding}: grid value {form} in {dtype} at k={bad[0]} (x={g[bad[0]]!r}) "
                               f"gave {got[bad[0]]}, expected {bad[0]}; {bad.size} of 256 wrong")
    assert any(Fraction(float(v)) < Fraction(2 * int(j) - 255, 255) for v, j in zip(_grid(d)["nearest"], K))


def _around(points: np.ndarray, dtype: type, steps: int) -> np.ndarray:
    """points and their neighbours up to ``steps`` ULP either side, in ``dtype``."""
    out = [points.astype(dtype)]
    lo = hi = points.astype(dtype)
    for _ in range(steps):
        lo = np.nextafter(lo, dtype(-2))
        hi = np.nextafter(hi, dtype(2))
        out += [lo, hi]
    return np.concatenate(out)


@pytest.mark.parametrize("rounding", ["round", "truncate"])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_exact_at_and_around_every_bin_edge(dtype: str, rounding: str) -> None:
    """Inputs at and a few ULP either side of every bin edge — y = k + 1/2 for round; x = e_k − τ_D
    (the threshold) and x = e_k (the grid value) for truncate — plus random inputs: equal to the
    exact function of the input, in rational arithmetic."""
    d = DTYPES[dtype]
    k = np.arange(1, 256)
    if rounding == "round":
        edges = np.array([float(Fraction(2 * int(j) - 1, 255) - 1) for j in k])
    else:
        edges = np.concatenate([np.array([float(Fraction(2 * int(j), 255) - 1 - _tau(d)) for j in k]),
                                np.array([float(Fraction(2 * int(j), 255) - 1) for j in k])])
    xs = np.concatenate([_around(edges, d, 5), np.random.default_rng(0).uniform(-1, 1, 300).astype(d)])
    got = to_uint8(xs, rounding=rounding)
    expected = np.array([_exact_uint8(float(v), rounding, d) for v in xs])
    bad = np.flatnonzero(got != expected)
    assert bad.size == 0, f"x={xs[bad[0]]!r} ({dtype}): expected {expected[bad[0]]}, got {got[bad[0]]}"
    if rounding == "truncate":
        # both sides of every threshold e_k − τ_D: the last value below it gives k − 1, the first at or above it k
        thr = [Fraction(2 * int(j), 255) - 1 - _tau(d) for j in k]
        first = np.array([_first_at_or_above(t, d) for t in thr], dtype=d)
        np.testing.assert_array_equal(to_uint8(first, rounding="truncate"), k)
        np.testing.assert_array_equal(to_uint8(np.nextafter(first, d(-2)), rounding="truncate"), k - 1)


def _first_at_or_above(t: Fraction, dtype: type) -> float:
    """The smallest ``dtype`` value >= t (exact comparisons)."""
    v = dtype(float(t))
    while Fraction(float(v)) >= t:
        v = np.nextafter(v, dtype(-2))
    while Fraction(float(v)) < t:
        v = np.nextafter(v, dtype(2))
    return float(v)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_truncate_agrees_with_the_float_cast_outside_a_band_of_roundoff(dtype: str) -> None:
    """improved-diffusion's ``((x + 1) * 127.5).to(uint8)`` in dtype D rounds twice, moving x by at most
    (128/127.5) ε_D; truncate differs from it only in [e_k − 4ε_D, e_k + (128/127.5) ε_D] (docstring).
    Checked on inputs within 12 ULP of every grid value and on random inputs; the band is from the
    error analysis, so the assertion holds however the cast's roundings fall."""
    d = DTYPES[dtype]
    eps = Fraction(float(np.finfo(d).eps))
    xs = np.concatenate([_around(_grid(d)["nearest"], d, 12), np.random.default_rng(1).uniform(-1, 1, 2000).astype(d)])
    xs = xs[(xs >= -1) & (xs <= 1)]
    with np.errstate(all="raise"):
        cast = np.floor(np.clip((xs + d(1)) * d(127.5), d(0), d(255))).astype(np.uint8)
    got = to_uint8(xs, rounding="truncate")
    differ = np.flatnonzero(got != cast)
    assert differ.size > 0  # the cast is not a fixed point of the grid (else the band would be untested)
    for i in differ:
        x = Fraction(float(xs[i]))
        j = round((x + 1) * Fraction(255, 2))
        off = x - Fraction(2 * j - 255, 255)
        assert -TRUNCATE_TOL_EPS * eps <= off <= Fraction(128, 127) * eps, (
            f"x={xs[i]!r} ({dtype}): truncate gave {got[i]}, the cast {cast[i]}, "
            f"{float(off / eps):.3g} eps from the grid value e_{j}")


def test_endpoints_and_midpoint() -> None:
    """−1 → 0 and 1 → 255 in both; 0 → 127.5 → 128 (ties to even) or 127 (truncation)."""
    x = np.array([-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(to_uint8(x), [0, 255, 128])
    np.testing.assert_array_equal(to_uint8(x, rounding="truncate"), [0, 255, 127])
    assert to_uint8(x).dtype == np.uint8 and to_uint8(x, rounding="truncate").dtype == np.uint8


def test_out_of_range_values_are_clamped() -> None:
    x = np.array([-7.0, -1.0000001, 1.0000001, 1e300, -1e300])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 255, 255, 0])
    np.testing.assert_array_equal(to_uint8(x, rounding="truncate"), [0, 0, 255, 255, 0])


def test_shape_is_kept() -> None:
    x = np.zeros((2, 3))
    assert to_uint8(x).shape == (2, 3) and to_uint8(x, rounding="truncate").shape == (2, 3)
    assert to_uint8(0.0, rounding="truncate").shape == ()


def test_the_conventions_differ_by_at_most_one_level() -> None:
    xs = np.linspace(-1, 1, 2001)
    d = to_uint8(xs).astype(int) - to_uint8(xs, rounding="truncate").astype(int)
    assert set(np.unique(d)) <= {0, 1} and d.sum() > 0


def test_validation_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(np.zeros(2), rounding="floor")
    with pytest.raises(ValueError, match="x"):
        to_uint8(np.array([np.nan]))
    with pytest.raises(ValueError, match="x"):
        to_uint8(np.array([np.inf]), rounding="truncate")
