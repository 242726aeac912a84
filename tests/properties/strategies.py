r"""Hypothesis strategies and helpers shared by the property suite (``tests/properties``).

Every property test in this package takes one argument, ``data`` (``@given(st.data())``), and draws
its inputs with labelled draws, ``data.draw(strategy, label="...")``, so that a shrunk
counterexample reads as a list of named inputs. ``tests/quality`` relies on that signature to re-run a
property with other settings (see ``tests/quality/test_property_power_part1.py``).

What is here
------------

Inputs (strategies):

* :func:`schedules` — a noise schedule as a :class:`Schedule` (the β array plus a Python expression
  that rebuilds it exactly). Three families: short explicit arrays (every element drawn, values from
  1e-12 up to 1 − 1e-6), long piecewise schedules (:func:`piecewise_betas`: a few knots interpolated
  geometrically, plus spikes), and the named schedules of :mod:`ddspec.reference.schedules` with
  random parameters (``linear``, ``scaled_linear``, ``cosine``, ``sigmoid``, ``const``). T runs
  from 2 to 2000 unless narrowed. The total log-decay :math:`\sum_t -\log(1-\beta_t) = -\log\bar\alpha_T`
  is capped (default 600, so ᾱ ≥ e⁻⁶⁰⁰ ≈ 2.7e-261; see :data:`MAX_LOG_DECAY` for why not 700). With
  ``zero_terminal=True`` some schedules end with β = 1 (ᾱ_T = 0): Lin et al.'s rescaling, ``jsd``,
  and cosine with ``max_beta = 1``.
* :func:`timesteps` (one index), :func:`timestep_pairs` (−1 ≤ s < t), :func:`subsequences`
  (strictly decreasing, ending anywhere; random sets and diffusers' spacing rules).
* :func:`etas` (η ∈ [0, 1]) and :func:`sigmas` (σ ∈ [0, σ_max]).
* :func:`shapes` (1–3 dims, ≤ 8 per dim), :func:`data_arrays` (finite, |x| = 0 or in [1e-30, 1e3]),
  :func:`noise_arrays` (|x| = 0 or in [1e-30, 8]).

Helpers:

* :data:`U` = 2⁻⁵³, the unit roundoff of float64, in which every tolerance of the suite is written,
  and :data:`FLOOR`, an absolute floor that only absorbs rounding in the subnormal range.
* :func:`crude_tables` — ᾱ, 1 − ᾱ and their square roots from ``numpy`` in the log domain
  (relative error ≲ T·u), *independent of the reference*. Tolerances take their magnitudes from
  here, so that a patched (broken) reference function cannot widen its own tolerance.
* :func:`assert_within` — ``|actual − expected| ≤ bound`` elementwise, with a message that shows the
  worst element and the ratio error/bound.
* :func:`repro` — a one-line Python snippet that rebuilds the inputs; each test ``note()``-s it, so
  that a failure prints a runnable reproduction next to Hypothesis' ``@reproduce_failure`` blob.
  Run the snippet from the repository root (it imports :func:`piecewise_betas` from this file as
  ``tests.properties.strategies``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from ddspec.reference import schedules as _schedules
from ddspec.reference import timesteps as _timesteps

__all__ = [
    "U",
    "FLOOR",
    "BETA_MIN",
    "BETA_MAX",
    "MAX_LOG_DECAY",
    "Schedule",
    "piecewise_betas",
    "beta_values",
    "explicit_schedules",
    "piecewise_schedules",
    "named_schedules",
    "zero_terminal_schedules",
    "schedules",
    "timesteps",
    "timestep_pairs",
    "subsequences",
    "etas",
    "sigmas",
    "shapes",
    "data_arrays",
    "noise_arrays",
    "CrudeTables",
    "crude_tables",
    "assert_within",
    "repro",
]

Array = NDArray[np.float64]

U = 2.0**-53
"""Unit roundoff of float64: a correctly rounded operation has relative error ≤ U."""

FLOOR = 2.0**-1000
"""Absolute tolerance floor (≈ 9e-302). Data are 0 or ≥ 1e-30 in magnitude and every coefficient is
≥ e⁻³⁰⁰ (ᾱ ≥ e⁻⁶⁰⁰), so no correct non-zero result lies below ~1e-300: the floor only absorbs the
absolute rounding of results that underflow into the subnormal range."""

BETA_MIN = 1e-12
"""Smallest β the generic strategies draw."""

BETA_MAX = 1.0 - 1e-6
"""Largest β the generic strategies draw (β = 1 only as a zero-terminal last step)."""

MAX_LOG_DECAY = 600.0
r"""Default cap on :math:`-\log\bar\alpha_T = \sum_t -\log(1-\beta_t)`: ᾱ ≥ e⁻⁶⁰⁰ ≈ 2.7e-261.

Why 600 and not ~700 (the float64 limit, e⁻⁷⁰⁸): the reference's double-double ᾱ tables
(:mod:`ddspec.reference.alphas`) keep ~106 bits only while the low part ᾱ·2⁻⁵³ of each entry is a
normal double, i.e. ᾱ ≳ 2⁻⁹⁶⁹ ≈ e⁻⁶⁷². Below that the low parts turn subnormal and
``one_minus_alpha_bar_ratio`` (hence ``forward.q_transition``'s variance, the strided posterior's β′
and ``ddim.ddim_sigma``) loses accuracy: measured 1.3e5 ULP at ᾱ ≈ 9e-302 with β = 1e-12, 3e7 ULP at
ᾱ ≈ e⁻⁷⁰⁰; the composition property finds it (reported to the lead). At e⁻⁶⁰⁰ the lost bits are
~2⁻¹⁰⁷⁴/ᾱ ≈ 2e-63 relative, far below every tolerance."""


# --------------------------------------------------------------------------------------------------
# schedules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Schedule:
    """A drawn noise schedule: ``betas`` and ``expr``, a Python expression that rebuilds it exactly.

    ``expr`` is evaluated in a namespace with ``np``, ``schedules`` (:mod:`ddspec.reference.schedules`)
    and ``piecewise_betas`` (this module); ``repr`` shows it, so Hypothesis prints the expression.
    """

    betas: Array
    expr: str

    @property
    def T(self) -> int:
        """Number of steps."""
        return int(self.betas.size)

    def __repr__(self) -> str:
        return self.expr

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """Hypothesis' pretty printer prints dataclasses field by field; print the expression instead."""
        p.text(self.expr)


def _float_list(values: Any) -> str:
    """Exact, round-tripping text of float values (``repr`` of Python floats)."""
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()) + "]"


def _array_expr(a: Any) -> str:
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        body = "[" + ", ".join(str(int(v)) for v in arr.ravel()) + "]"
        text = f"np.array({body}, dtype=np.int64)"
    else:
        text = f"np.array({_float_list(arr)})"
    if arr.ndim != 1:
        text += f".reshape({arr.shape!r})"
    return text


def _cap_log_decay(betas: Array, max_log_decay: float) -> Array:
    r"""Scale the per-step decays :math:`d_t = -\log(1-\beta_t)` by one factor so that Σ d_t ≤ the cap.

    β' = −expm1(f·log1p(−β)) with f = cap / Σ d (no change when Σ d ≤ cap); then clipped to
    [BETA_MIN, BETA_MAX] (which can raise Σ d by at most T·1e-12).
    """
    d = -np.log1p(-betas)
    total = float(d.sum())
    if total > max_log_decay:
        betas = -np.expm1(-d * (max_log_decay / total))
    return np.clip(betas, BETA_MIN, BETA_MAX)


def piecewise_betas(
    num_timesteps: int,
    knots: Sequence[tuple[float, float]],
    spikes: Sequence[tuple[int, float]] = (),
    max_log_decay: float = MAX_LOG_DECAY,
) -> Array:
    r"""A deterministic long schedule from a few numbers (the builder behind :func:`piecewise_schedules`).

    ``knots`` are ``(position in [0, 1], β)`` pairs; β is interpolated linearly in log β between
    them over the indices 0, …, T − 1 (constant beyond the first and last knot). ``spikes`` are
    ``(index, β)`` overrides (index taken modulo T). The result is then passed through the log-decay
    cap (:func:`_cap_log_decay`), so :math:`-\log\bar\alpha_T \le` ``max_log_decay``.
    """
    n = int(num_timesteps)
    ks = sorted((float(p), float(b)) for p, b in knots)
    xs = np.array([p for p, _ in ks]) * (n - 1)
    ys = np.log(np.array([b for _, b in ks]))
    betas = np.exp(np.interp(np.arange(n, dtype=np.float64), xs, ys))
    for i, b in spikes:
        betas[int(i) % n] = float(b)
    return _cap_log_decay(np.clip(betas, BETA_MIN, BETA_MAX), float(max_log_decay))


def beta_values(min_beta: float = BETA_MIN, max_beta: float = BETA_MAX) -> st.SearchStrategy[float]:
    """One β in [min_beta, max_beta]: log-uniform near 0, uniform, log-uniform near 1, and landmarks."""
    lo, hi = math.log10(min_beta), math.log10(0.5)
    parts = [
        st.sampled_from([min_beta, max_beta, 1e-4, 0.02, 0.5]),
        st.floats(lo, hi).map(lambda e: 10.0**e),
        st.floats(min_beta, max_beta),
    ]
    if max_beta > 0.5:
        parts.append(st.floats(math.log10(1.0 - max_beta), math.log10(0.5)).map(lambda e: 1.0 - 10.0**e))
    return st.one_of(*parts).map(lambda b: min(max(b, min_beta), max_beta))


@st.composite
def explicit_schedules(
    draw: st.DrawFn, min_T: int = 2, max_T: int = 24, max_log_decay: float = MAX_LOG_DECAY
) -> Schedule:
    """A short schedule whose every β is drawn (:func:`beta_values`), log-decay capped."""
    values = draw(st.lists(beta_values(), min_size=min_T, max_size=max(min_T, max_T)))
    betas = _cap_log_decay(np.array(values, dtype=np.float64), max_log_decay)
    return Schedule(betas, _array_expr(betas))


@st.composite
def piecewise_schedules(
    draw: st.DrawFn, min_T: int = 2, max_T: int = 2000, max_log_decay: float = MAX_LOG_DECAY
) -> Schedule:
    """A schedule of :func:`piecewise_betas` with 1–5 knots and 0–3 spikes, T in [min_T, max_T]."""
    n = draw(st.integers(min_T, max_T))
    knots = tuple(draw(st.lists(st.tuples(st.floats(0.0, 1.0), beta_values()), min_size=1, max_size=5)))
    spikes = tuple(draw(st.lists(st.tuples(st.integers(0, n - 1), beta_values()), max_size=3)))
    betas = piecewise_betas(n, knots, spikes, max_log_decay)
    expr = f"piecewise_betas({n}, knots={knots!r}, spikes={spikes!r}, max_log_decay={max_log_decay!r})"
    return Schedule(betas, expr)


def _log_decay(betas: Array) -> float:
    b = betas[betas < 1.0]
    return float(-np.log1p(-b).sum())


@st.composite
def named_schedules(
    draw: st.DrawFn, min_T: int = 2, max_T: int = 2000, max_log_decay: float = MAX_LOG_DECAY
) -> Schedule:
    """A named schedule of :mod:`ddspec.reference.schedules` with random parameters and T.

    ``linear`` / ``scaled_linear`` / ``sigmoid``: 0 < beta_start ≤ beta_end with beta_end ≤
    1 − exp(−cap/T), so that every β ≤ beta_end keeps the log-decay under the cap. ``cosine``: random
    offset s and cap max_beta < 1. ``const``: one β, likewise bounded.
    """
    kind = draw(st.sampled_from(["linear", "scaled_linear", "cosine", "sigmoid", "const"]))
    n = draw(st.integers(min_T, max_T))
    top = min(BETA_MAX, -math.expm1(-max_log_decay / n))
    if kind == "cosine":
        s = draw(st.one_of(st.just(0.008), st.floats(0.0, 0.5)))
        max_beta = draw(st.one_of(st.just(0.999), st.floats(0.5, BETA_MAX)))
        betas = _schedules.cosine_betas(n, s=s, max_beta=max_beta)
        assume(_log_decay(betas) <= max_log_decay)
        return Schedule(betas, f"schedules.cosine_betas({n}, s={s!r}, max_beta={max_beta!r})")
    if kind == "const":
        beta = draw(beta_values(max_beta=top) if top > BETA_MIN else st.just(top))
        return Schedule(_schedules.const_betas(n, beta), f"schedules.const_betas({n}, beta={beta!r})")
    end = min(10.0 ** draw(st.floats(-8.0, math.log10(top))), top)
    start = max(end * draw(st.floats(1e-6, 1.0)), BETA_MIN)
    if kind == "sigmoid":
        x0 = draw(st.floats(-10.0, 0.0))
        x1 = draw(st.floats(0.0, 10.0))
        betas = _schedules.sigmoid_betas(n, beta_start=start, beta_end=end, start=x0, end=x1)
        expr = f"schedules.sigmoid_betas({n}, beta_start={start!r}, beta_end={end!r}, start={x0!r}, end={x1!r})"
        return Schedule(betas, expr)
    fn = _schedules.linear_betas if kind == "linear" else _schedules.scaled_linear_betas
    betas = fn(n, beta_start=start, beta_end=end)
    return Schedule(betas, f"schedules.{fn.__name__}({n}, beta_start={start!r}, beta_end={end!r})")


@st.composite
def zero_terminal_schedules(draw: st.DrawFn, min_T: int = 2, max_T: int = 2000) -> Schedule:
    """A schedule whose last β is exactly 1 (ᾱ_T = 0, zero terminal SNR).

    Lin et al. 2023's rescaling (:func:`~ddspec.reference.schedules.rescale_zero_terminal_snr`) of a
    schedule with log-decay ≤ 50 (so that the rescaled ᾱ stay far from underflow), the DDPM
    authors' ``jsd``, or cosine with ``max_beta = 1``.
    """
    min_T = max(min_T, 2)
    kind = draw(st.sampled_from(["rescaled", "jsd", "cosine"]))
    if kind == "rescaled":
        base = draw(schedules(min_T=min_T, max_T=max_T, max_log_decay=50.0))
        try:
            rescaled = _schedules.rescale_zero_terminal_snr(base.betas)
        except ValueError:
            # An intermediate rescaled β' within 2⁻⁵⁴ of 1 rounds to 1 and is refused (e.g. a tiny
            # last β: [1e-4, 0.02, 1e-12] has β'_2 = 1 − 2.5e-21); such a base has no valid rescaling.
            assume(False)
        return Schedule(rescaled, f"schedules.rescale_zero_terminal_snr({base.expr})")
    n = draw(st.integers(min_T, max_T))
    if kind == "jsd":
        return Schedule(_schedules.jsd_betas(n), f"schedules.jsd_betas({n})")
    s = draw(st.one_of(st.just(0.008), st.floats(0.0, 0.5)))
    return Schedule(_schedules.cosine_betas(n, s=s, max_beta=1.0), f"schedules.cosine_betas({n}, s={s!r}, max_beta=1.0)")


def schedules(
    *, min_T: int = 2, max_T: int = 2000, max_log_decay: float = MAX_LOG_DECAY, zero_terminal: bool = False
) -> st.SearchStrategy[Schedule]:
    """Any valid schedule: explicit short arrays, piecewise long ones, named ones (and zero-terminal ones if asked).

    ``max_T`` bounds T (use a small one where a test evaluates an O(T) mpmath twin).
    ``max_log_decay`` caps −log ᾱ_T for the schedules with ᾱ_T > 0.
    """
    parts = [
        explicit_schedules(min_T=min_T, max_T=min(max_T, 24), max_log_decay=max_log_decay),
        piecewise_schedules(min_T=min_T, max_T=max_T, max_log_decay=max_log_decay),
        named_schedules(min_T=min_T, max_T=max_T, max_log_decay=max_log_decay),
    ]
    if zero_terminal:
        parts.append(zero_terminal_schedules(min_T=min_T, max_T=max_T))
    return st.one_of(*parts)


# --------------------------------------------------------------------------------------------------
# timesteps
# --------------------------------------------------------------------------------------------------


def timesteps(T: int, *, low: int = 0, high: int | None = None) -> st.SearchStrategy[int]:
    """A 0-based index in [low, high] (default [0, T − 1]); the ends and index 1 are drawn often."""
    hi = T - 1 if high is None else high
    landmarks = sorted({v for v in (low, low + 1, hi - 1, hi) if low <= v <= hi})
    return st.one_of(st.sampled_from(landmarks), st.integers(low, hi))


@st.composite
def timestep_pairs(draw: st.DrawFn, T: int, *, adjacent: bool | None = None, allow_data: bool = True) -> tuple[int, int]:
    """``(t, s)`` with ``-1 <= s < t <= T - 1`` (``s = -1`` the data, unless ``allow_data=False``).

    ``adjacent=True`` forces s = t − 1 (a step of the full schedule), ``False`` draws s freely,
    ``None`` (default) does either.
    """
    low_s = -1 if allow_data else 0
    t = draw(timesteps(T, low=low_s + 1))
    if adjacent is None:
        adjacent = draw(st.booleans())
    if adjacent:
        return t, t - 1
    return t, draw(timesteps(T, low=low_s, high=t - 1))


@st.composite
def subsequences(draw: st.DrawFn, T: int, *, max_len: int = 24) -> NDArray[np.int64]:
    """A sampling-order subsequence of [0, T − 1]: strictly decreasing, 1 ≤ length ≤ max_len, ending anywhere.

    Either a random set of indices, or diffusers' ``leading`` / ``trailing`` / ``linspace`` rule
    (:mod:`ddspec.reference.timesteps`) for a random number of steps, possibly cut at both ends.
    """
    if draw(st.booleans()):
        values = draw(st.lists(timesteps(T), min_size=1, max_size=min(max_len, T), unique=True))
        return np.array(sorted(values, reverse=True), dtype=np.int64)
    rule = draw(st.sampled_from(["leading", "trailing", "linspace"]))
    n = draw(st.integers(1, min(max_len, T)))
    full = _timesteps.get_timesteps(rule, T, n)
    first = draw(st.integers(0, n - 1))
    last = draw(st.integers(first + 1, n))
    return np.asarray(full[first:last], dtype=np.int64)


def etas() -> st.SearchStrategy[float]:
    """η ∈ [0, 1] (DDIM eq. 16), with 0 (deterministic DDIM) and 1 (DDPM) drawn often."""
    return st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))


def sigmas(sigma_max: float) -> st.SearchStrategy[float]:
    """σ ∈ [0, σ_max] (DDIM eq. 7 admits σ² ≤ 1 − ᾱ_prev): 0, σ_max, just below it, and uniform fractions."""
    return st.one_of(
        st.sampled_from([0.0, sigma_max, sigma_max * (1.0 - 1e-9)]),
        st.floats(0.0, 1.0).map(lambda f: f * sigma_max),
    )


# --------------------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------------------


def shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """A small array shape: 1–3 dimensions, 1–8 elements each."""
    return hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=8)


def _moderate_floats(magnitude: float) -> st.SearchStrategy[float]:
    return st.one_of(
        st.just(0.0),
        st.floats(1e-30, magnitude),
        st.floats(-magnitude, -1e-30),
    )


def data_arrays(shape: tuple[int, ...], magnitude: float = 1e3) -> st.SearchStrategy[Array]:
    """A float64 array of ``shape``: finite, each element 0 or of magnitude in [1e-30, ``magnitude``]."""
    return hnp.arrays(np.float64, shape, elements=_moderate_floats(magnitude))


def noise_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[Array]:
    """A float64 array of ``shape`` for a standard-normal draw ε or z: 0 or magnitude in [1e-30, 8]."""
    return data_arrays(shape, magnitude=8.0)


# --------------------------------------------------------------------------------------------------
# tolerances and reporting
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrudeTables:
    r"""ᾱ, 1 − ᾱ, :math:`\sqrt{\bar\alpha}`, :math:`\sqrt{1-\bar\alpha}` (length T + 1: entry ``t + 1`` is index t, entry 0 is the data)."""

    betas: Array
    alpha_bar: Array
    one_minus_alpha_bar: Array
    sqrt_alpha_bar: Array
    sqrt_one_minus_alpha_bar: Array

    def at(self, t: int) -> tuple[float, float, float, float]:
        """``(ᾱ, 1 − ᾱ, √ᾱ, √(1 − ᾱ))`` at index t ∈ [−1, T − 1]."""
        i = t + 1
        return (
            float(self.alpha_bar[i]),
            float(self.one_minus_alpha_bar[i]),
            float(self.sqrt_alpha_bar[i]),
            float(self.sqrt_one_minus_alpha_bar[i]),
        )

    def ratio(self, t: int, s: int) -> float:
        r""":math:`\bar\alpha_t/\bar\alpha_s = \prod_{r=s+1}^{t}(1-\beta_r)` for −1 ≤ s ≤ t (relative error ≲ (t − s)·u)."""
        with np.errstate(divide="ignore"):
            return float(np.exp(np.sum(np.log1p(-self.betas[s + 1 : t + 1]))))

    def one_minus_ratio(self, t: int, s: int) -> float:
        r""":math:`1-\bar\alpha_t/\bar\alpha_s` for −1 ≤ s ≤ t, without cancellation (−expm1 of the summed logs)."""
        with np.errstate(divide="ignore"):
            return float(-np.expm1(np.sum(np.log1p(-self.betas[s + 1 : t + 1]))))


def crude_tables(betas: Array) -> CrudeTables:
    r"""Schedule tables for *tolerance magnitudes only*: ᾱ = exp(Σ log1p(−β)), 1 − ᾱ = −expm1(Σ log1p(−β)).

    Independent of :mod:`ddspec.reference.alphas` (so a planted bug there cannot scale its own
    tolerance); relative error ≲ T·u, which is irrelevant for a tolerance. Index −1 (entry 0) is the
    data, ᾱ = 1. A last β of 1 gives ᾱ = 0 there.
    """
    b = np.asarray(betas, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = np.concatenate([[0.0], np.cumsum(np.log1p(-b))])
    ab = np.exp(logs)
    c = -np.expm1(logs)
    return CrudeTables(b, ab, c, np.sqrt(ab), np.sqrt(c))


def assert_within(actual: Any, expected: Any, bound: Any, what: str) -> None:
    """Assert ``|actual - expected| <= bound`` elementwise (broadcasting); the message shows the worst element."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    bd = np.broadcast_to(np.asarray(bound, dtype=np.float64), np.broadcast_shapes(a.shape, e.shape))
    err = np.abs(a - e)
    bad = ~(err <= bd)  # NaN counts as a failure
    if np.any(bad):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(bd > 0, err / bd, np.inf)
        k = np.unravel_index(int(np.nanargmax(np.where(bad, ratio, -1.0))), bd.shape)
        ab, eb = np.broadcast_to(a, bd.shape), np.broadcast_to(e, bd.shape)
        raise AssertionError(
            f"{what}: |actual - expected| exceeds the derived bound at {tuple(int(i) for i in k)}: "
            f"actual={float(ab[k])!r}, expected={float(eb[k])!r}, error={float(err[k]) if err.shape else float(err)!r}, "
            f"bound={float(bd[k])!r} (error/bound={float(ratio[k]):.3g}; {int(bad.sum())} of {bad.size} elements fail)"
        )


def repro(**values: Any) -> str:
    """A one-line snippet (run from the repository root) that rebuilds the named inputs exactly.

    Schedules print their expression, arrays ``np.array([...])`` with exact float reprs, scalars
    their repr. Append the call under test: ``note(repro(betas=s, t=t) + "; posterior.beta_tilde(betas)")``.
    """
    parts = [
        "import numpy as np",
        "from ddspec.reference import alphas, ddim, forward, parameterisation, posterior, schedules, timesteps",
        "from tests.properties.strategies import piecewise_betas",
    ]
    for name, v in values.items():
        if isinstance(v, Schedule):
            parts.append(f"{name} = {v.expr}")
        elif isinstance(v, np.ndarray):
            parts.append(f"{name} = {_array_expr(v)}")
        elif isinstance(v, (float, np.floating)):
            parts.append(f"{name} = {float(v)!r}")
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            parts.append(f"{name} = {int(v)}")
        else:
            parts.append(f"{name} = {v!r}")
    return "; ".join(parts)
