r"""Schedule tables: α, ᾱ, 1 − ᾱ, their square roots, SNR and log-SNR.

Index convention (``docs/conventions.md``): ``betas[i]`` is the papers' :math:`\beta_{i+1}`; the
tables have length T and ``alpha_bar[i]`` is :math:`\bar\alpha_{i+1}`. The timestep index ``-1``
means the clean data, with :math:`\bar\alpha = 1`.

Accuracy. The papers define

.. math::

    \alpha_t = 1 - \beta_t, \qquad \bar\alpha_t = \prod_{s=1}^{t} \alpha_s

(Ho et al. 2020, §2, the line after eq. 4). Evaluated literally in float64, ``cumprod(1 - betas)``
rounds ``1 - β`` (relative error up to 2⁻⁵³ per factor, with β ≈ 1e-4 that is all of β's low bits)
and then rounds every partial product, so ᾱ drifts by about 11 ULP at T = 1000; ``1 - cumprod`` then
cancels, and near the first step (1 − ᾱ ≈ β ≈ 1e-4) it is off by ~1400 ULP.

The reference instead carries each factor exactly as a double-double,
:math:`1 - \beta = h + \ell` with :math:`h = \mathrm{fl}(1-\beta)` and :math:`\ell = (1-\beta) - h`
(exact by Fast2Sum), forms the running product in double-double (≈ 106 bits), and only then rounds.
:math:`1 - \bar\alpha` is formed from the double-double ᾱ, so it does not cancel: at t = 1 it is β₁
exactly. Each table entry is then within about 1 ULP of the exact value for the given β (the
measured bounds are in ``docs/accuracy.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .validation import SingularError, as_betas, as_timesteps, check_finite_result, fail

__all__ = [
    "AlphaBarTables",
    "alpha_bar_tables",
    "alphas",
    "alpha_bar",
    "alpha_bar_prev",
    "one_minus_alpha_bar",
    "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar",
    "snr",
    "log_snr",
    "alpha_bar_at",
    "one_minus_alpha_bar_at",
    "alpha_bar_ratio",
    "one_minus_alpha_bar_ratio",
]

Array = NDArray[np.float64]


@lru_cache(maxsize=64)
def _tables(key: bytes) -> tuple[Array, Array, Array, Array]:
    """Double-double ᾱ and 1 − ᾱ for the betas whose bytes are ``key`` (cached; read-only arrays)."""
    betas = np.frombuffer(key, dtype=np.float64)
    n = betas.size
    ab_hi = np.empty(n)
    ab_lo = np.empty(n)
    ph, pl = 1.0, 0.0
    for i, b in enumerate(betas.tolist()):
        # 1 - β exactly: h = fl(1 - β), l = -β - (h - 1)   (Fast2Sum, |1| >= |β|)
        h = 1.0 - b
        low = -b - (h - 1.0)
        ph, pl = _dd.dd_mul(ph, pl, h, low)
        ab_hi[i] = ph
        ab_lo[i] = pl
    # 1 - ᾱ as a double-double: (1 - hi) is exact where hi >= 1/2 (Sterbenz); TwoSum in general.
    s, e = _dd.two_sum(1.0, -ab_hi)
    c_hi, c_lo = _dd.fast_two_sum(s, e - ab_lo)
    for arr in (ab_hi, ab_lo, c_hi, c_lo):
        arr.setflags(write=False)
    return ab_hi, ab_lo, c_hi, c_lo


@dataclass(frozen=True)
class AlphaBarTables:
    r"""The schedule's tables, computed once: ᾱ and 1 − ᾱ as double-doubles (``hi + lo``, read-only arrays).

    ``alpha_bar_hi[i] + alpha_bar_lo[i]`` is :math:`\bar\alpha_{i+1}` to about 2⁻¹⁰⁶ relative, and
    ``one_minus_hi[i] + one_minus_lo[i]`` is :math:`1 - \bar\alpha_{i+1}` without cancellation (see the
    module docstring). Every table of this module and of :mod:`~ddspec.reference.posterior`,
    :mod:`~ddspec.reference.ddim`, :mod:`~ddspec.reference.variances` and
    :mod:`~ddspec.reference.likelihood` is formed from these, as improved-diffusion forms all of its
    tables once in ``GaussianDiffusion.__init__``. Unpacks as the four arrays in field order.
    """

    alpha_bar_hi: Array
    alpha_bar_lo: Array
    one_minus_hi: Array
    one_minus_lo: Array

    def __iter__(self) -> Iterator[Array]:
        return iter((self.alpha_bar_hi, self.alpha_bar_lo, self.one_minus_hi, self.one_minus_lo))

    @property
    def alpha_bar(self) -> Array:
        r""":math:`\bar\alpha`, rounded once from the double-double."""
        return self.alpha_bar_hi + self.alpha_bar_lo

    @property
    def one_minus_alpha_bar(self) -> Array:
        r""":math:`1 - \bar\alpha`, rounded once from the double-double."""
        return self.one_minus_hi + self.one_minus_lo


def alpha_bar_tables(betas: ArrayLike) -> AlphaBarTables:
    r"""The double-double tables of :math:`\bar\alpha_t = \prod_{s\le t}(1-\beta_s)` and :math:`1-\bar\alpha_t`.

    .. math:: \bar\alpha_t = h_t + \ell_t,\qquad 1 - \bar\alpha_t = c_t + d_t\quad(\text{unevaluated sums})

    Source: Ho et al. 2020, §2 (eq. 4 uses ᾱ). Index convention: entry i is the papers' t = i + 1;
    ᾱ before the first step (index −1) is 1 and is not stored. Computed once per schedule (cached on
    the bytes of ``betas``) as described in the module docstring; the arrays are read-only.
    """
    return AlphaBarTables(*_tables(np.ascontiguousarray(as_betas(betas)).tobytes()))


def _dd_tables(betas: ArrayLike) -> tuple[Array, Array, Array, Array]:
    """Deprecated private name: the tuple of :func:`alpha_bar_tables`."""
    return tuple(alpha_bar_tables(betas))  # type: ignore[return-value]


def _zero_by_a_beta_of_one(betas: ArrayLike, i: int) -> bool:
    """Whether ᾱ reaches 0 at index ``i`` because a β up to there is exactly 1 (rather than underflow)."""
    b = as_betas(betas)
    return bool(np.any(b[: i + 1] == 1.0))


def alphas(betas: ArrayLike) -> Array:
    r"""Per-step signal retention :math:`\alpha_t = 1 - \beta_t` (Ho et al. 2020, §2).

    Index convention: ``alphas(betas)[i]`` is :math:`\alpha_{i+1}`. Rounded once from the exact value.
    """
    b = as_betas(betas)
    return 1.0 - b


def alpha_bar(betas: ArrayLike) -> Array:
    r"""Cumulative signal level :math:`\bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)`.

    Source: Ho et al. 2020, §2 (eq. 4 uses it). Index convention: ``alpha_bar(betas)[i]`` is
    :math:`\bar\alpha_{i+1}`, so ``alpha_bar(betas)[0] == 1 - betas[0]``. Computed as a double-double
    product (see the module docstring), then rounded once.
    """
    hi, lo, _, _ = alpha_bar_tables(betas)
    return hi + lo


def alpha_bar_prev(betas: ArrayLike) -> Array:
    r""":math:`\bar\alpha_{t-1}` aligned with index t: ``[1, ᾱ_1, …, ᾱ_{T-1}]`` (ᾱ_0 = 1 by convention)."""
    ab = alpha_bar(betas)
    return np.concatenate([[1.0], ab[:-1]])


def one_minus_alpha_bar(betas: ArrayLike) -> Array:
    r""":math:`1 - \bar\alpha_t`, the variance of :math:`q(x_t \mid x_0)` (Ho et al. 2020, eq. 4).

    Formed from the double-double ᾱ, so there is no cancellation: at index 0 the result is β₁ exactly.
    """
    _, _, c_hi, c_lo = alpha_bar_tables(betas)
    return c_hi + c_lo


def sqrt_alpha_bar(betas: ArrayLike) -> Array:
    r""":math:`\sqrt{\bar\alpha_t}`, the mean coefficient of :math:`q(x_t \mid x_0)` (Ho et al. 2020, eq. 4).

    Evaluated as a double-double square root of the double-double ᾱ, then rounded once.
    """
    hi, lo, _, _ = alpha_bar_tables(betas)
    rh, rl = _dd.dd_sqrt(hi, lo)
    return np.asarray(rh + rl, dtype=np.float64)


def sqrt_one_minus_alpha_bar(betas: ArrayLike) -> Array:
    r""":math:`\sqrt{1 - \bar\alpha_t}`, the standard deviation of :math:`q(x_t \mid x_0)` (Ho et al. 2020, eq. 4)."""
    _, _, c_hi, c_lo = alpha_bar_tables(betas)
    rh, rl = _dd.dd_sqrt(c_hi, c_lo)
    return np.asarray(rh + rl, dtype=np.float64)


def snr(betas: ArrayLike) -> Array:
    r"""Signal-to-noise ratio :math:`\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)`.

    Source: Kingma et al. 2021 (Variational Diffusion Models), eq. 2 with
    :math:`\alpha^2 = \bar\alpha`, :math:`\sigma^2 = 1 - \bar\alpha`; Lin et al. 2023, §2.
    It is 0 where ᾱ = 0 (a zero-terminal-SNR schedule's last step). Double-double quotient; raises
    :class:`SingularError` where the SNR exceeds ~1e300 (β ≲ 1e-300 at the first step), beyond the
    quotient's range, instead of returning NaN.
    """
    hi, lo, c_hi, c_lo = alpha_bar_tables(betas)
    with np.errstate(over="ignore", invalid="ignore"):
        qh, ql = _dd.dd_div(hi, lo, c_hi, c_lo)
        out = np.asarray(qh + ql, dtype=np.float64)
    # The double-double quotient needs the SNR below ~1e300 (its splitting multiplies by 2^27 + 1):
    # a first step with β below ~1e-300 is refused rather than returned as NaN.
    return check_finite_result(out, "snr", "SNR beyond ~1e300 (a beta below ~1e-300 at the start of the schedule)")


def log_snr(betas: ArrayLike) -> Array:
    r"""Log signal-to-noise ratio :math:`\lambda_t = \log \bar\alpha_t - \log(1 - \bar\alpha_t)`.

    Source: Kingma et al. 2021, §3 (their γ = −λ). Where SNR is within a factor 2 of 1 the direct
    difference of logs cancels; there :math:`\lambda = \operatorname{log1p}((\bar\alpha - (1-\bar\alpha))/(1-\bar\alpha))`
    with the numerator formed exactly from the double-doubles. Elsewhere
    :math:`\log h + \ell/h` for each double-double.

    Raises :class:`SingularError` where ᾱ = 0 (λ = −∞), rather than returning −inf.
    """
    hi, lo, c_hi, c_lo = alpha_bar_tables(betas)
    if np.any(hi <= 0.0):
        i = int(np.argmax(hi <= 0.0))
        why = ("a beta of 1 there: zero terminal SNR" if _zero_by_a_beta_of_one(betas, i)
               else "the running product underflowed float64 (total log-decay beyond ~745)")
        raise SingularError(f"log_snr: alpha_bar[{i}] = 0 ({why}), so log-SNR is -inf there")
    ratio = (hi + lo) / (c_hi + c_lo)
    near_one = (ratio > 0.5) & (ratio < 2.0)
    dh, dl = _dd.dd_add(hi, lo, -c_hi, -c_lo)
    qh, ql = _dd.dd_div(dh, dl, c_hi, c_lo)
    direct = (np.log(hi) + lo / hi) - (np.log(c_hi) + c_lo / c_hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        near = np.log1p(qh) + ql / (1.0 + qh)
    return np.where(near_one, near, direct)


def alpha_bar_at(betas: ArrayLike, t: ArrayLike) -> Array:
    r""":math:`\bar\alpha` at 0-based index t (any shape); index −1 (the data) gives 1."""
    ab = alpha_bar(betas)
    tt = as_timesteps(t, ab.size, "t", allow_data=True)
    return np.where(tt < 0, 1.0, ab[np.maximum(tt, 0)])


def one_minus_alpha_bar_at(betas: ArrayLike, t: ArrayLike) -> Array:
    r""":math:`1 - \bar\alpha` at 0-based index t (any shape); index −1 (the data) gives 0."""
    c = one_minus_alpha_bar(betas)
    tt = as_timesteps(t, c.size, "t", allow_data=True)
    return np.where(tt < 0, 0.0, c[np.maximum(tt, 0)])


def _ratio_dd(betas: ArrayLike, t: ArrayLike, s: ArrayLike) -> tuple[Array, Array, NDArray[np.int64], NDArray[np.int64]]:
    hi, lo, _, _ = alpha_bar_tables(betas)
    n = hi.size
    tt = as_timesteps(t, n, "t", allow_data=True)
    ss = as_timesteps(s, n, "s", allow_data=True)
    try:
        tt, ss = np.broadcast_arrays(tt, ss)
    except ValueError:
        fail("s", s, f"shape {np.shape(s)} does not broadcast with t's shape {np.shape(t)}")
    if np.any(ss > tt):
        i = np.argwhere(ss > tt)[0]
        fail("s", s, f"must satisfy s <= t; s={ss[tuple(i)]} > t={tt[tuple(i)]}")
    th = np.where(tt < 0, 1.0, hi[np.maximum(tt, 0)])
    tl = np.where(tt < 0, 0.0, lo[np.maximum(tt, 0)])
    sh = np.where(ss < 0, 1.0, hi[np.maximum(ss, 0)])
    sl = np.where(ss < 0, 0.0, lo[np.maximum(ss, 0)])
    if np.any(sh <= 0.0):
        fail("s", s, "alpha_bar at s is 0 (a beta of 1, or a running product that underflowed float64), "
                     "so the ratio alpha_bar_t / alpha_bar_s is undefined")
    qh, ql = _dd.dd_div(th, tl, sh, sl)
    return np.asarray(qh), np.asarray(ql), tt, ss


def alpha_bar_ratio(betas: ArrayLike, t: ArrayLike, s: ArrayLike) -> Array:
    r""":math:`\bar\alpha_t / \bar\alpha_s = \prod_{r=s+1}^{t} \alpha_r` for 0-based indices ``-1 <= s <= t``.

    This is the mean² coefficient of :math:`q(x_t \mid x_s)` (Kingma et al. 2021, eq. 21; with
    s = t − 1 it is α_t). Double-double quotient of the tables.
    """
    qh, ql, _, _ = _ratio_dd(betas, t, s)
    return qh + ql


def one_minus_alpha_bar_ratio(betas: ArrayLike, t: ArrayLike, s: ArrayLike) -> Array:
    r""":math:`1 - \bar\alpha_t / \bar\alpha_s` for 0-based indices ``-1 <= s <= t``, without cancellation.

    The variance of :math:`q(x_t \mid x_s)`, and the β′ of a respaced schedule
    (Nichol & Dhariwal 2021, §4: :math:`\beta'_i = 1 - \bar\alpha_{\tau_i}/\bar\alpha_{\tau_{i-1}}`).
    With s = t − 1 it equals β_t. Formed as :math:`1 - q` with q the double-double quotient, so the
    subtraction is exact to ~2⁻¹⁰⁶ and the only rounding is the final one.
    """
    qh, ql, _, _ = _ratio_dd(betas, t, s)
    s1, e1 = _dd.two_sum(1.0, -qh)
    return np.asarray(s1 + (e1 - ql), dtype=np.float64)
