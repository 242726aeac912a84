r"""mpmath twin of :mod:`ddspec.reference.alphas`: the schedule tables from their definitions.

.. math::

    \alpha_t = 1 - \beta_t,\qquad \bar\alpha_t = \prod_{s=1}^{t} (1 - \beta_s)

(Ho et al. 2020, §2). Written from the formulas, not from the float64 code: ᾱ is the literal running
product of ``1 - mpf(β)`` at ``dps`` significant digits, 1 − ᾱ, the square roots, SNR and log-SNR
are the textbook expressions of that ᾱ. No rewriting against cancellation is needed: at ``dps``
digits, ``1 - ᾱ`` near the first step (ᾱ ≈ 1 − β, β ≥ 1e-6 or so) loses about log10(1/β) digits and
keeps more than ``dps - 10``.

Inputs: float64 betas, converted exactly (``mpmath.mpf(float)`` is exact). Index convention: element
``i`` of each list is the papers' t = i + 1; a timestep argument is the 0-based index and ``-1``
means the clean data (ᾱ = 1). Every function returns ``mpmath.mpf`` or ``list[mpmath.mpf]``; the
values keep their ``dps``-digit precision after the call.

The running products are cached per (betas, dps), because the accuracy tests ask for many entries
of the same long schedule.
"""

from __future__ import annotations

from functools import lru_cache

import mpmath
import numpy as np
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS

__all__ = [
    "alpha_bar_tables",
    "alphas",
    "alpha_bar",
    "alpha_bar_at",
    "one_minus_alpha_bar",
    "one_minus_alpha_bar_at",
    "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar",
    "snr",
    "log_snr",
    "alpha_bar_ratio",
    "one_minus_alpha_bar_ratio",
]


def _betas(betas: ArrayLike) -> np.ndarray:
    b = np.ascontiguousarray(np.asarray(betas, dtype=np.float64).ravel())
    if b.size == 0 or not np.all((b > 0) & (b <= 1)):
        raise ValueError("betas: the twin expects a non-empty schedule with every β in (0, 1]")
    return b


@lru_cache(maxsize=32)
def _products(key: bytes, dps: int) -> tuple[mpf, ...]:
    """ᾱ_1, …, ᾱ_T for the betas whose bytes are ``key``: the literal running product at ``dps`` digits."""
    out = []
    with mpmath.workdps(dps):
        prod = mpf(1)
        for b in np.frombuffer(key, dtype=np.float64).tolist():
            prod = prod * (1 - mpf(b))
            out.append(prod)
    return tuple(out)


def alphas(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\alpha_t = 1 - \beta_t` (Ho et al. 2020, §2), exact at ``dps`` ≥ 33 digits."""
    with mpmath.workdps(dps):
        return [1 - mpf(b) for b in _betas(betas).tolist()]


def alpha_bar(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\bar\alpha_t = \prod_{s=1}^{t}(1-\beta_s)` for every index (Ho et al. 2020, §2)."""
    return list(_products(_betas(betas).tobytes(), dps))


def alpha_bar_at(betas: ArrayLike, t: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`\bar\alpha` at 0-based index ``t``; index −1 (the data) gives 1."""
    b = _betas(betas)
    if not -1 <= t <= b.size - 1:
        raise ValueError(f"t={t}: the twin needs -1 <= t <= T-1")
    if t == -1:
        return mpf(1)
    return _products(b.tobytes(), dps)[t]


def one_minus_alpha_bar(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`1 - \bar\alpha_t`, the variance of :math:`q(x_t \mid x_0)` (Ho et al. 2020, eq. 4)."""
    with mpmath.workdps(dps):
        return [1 - a for a in alpha_bar(betas, dps=dps)]


def one_minus_alpha_bar_at(betas: ArrayLike, t: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`1 - \bar\alpha` at 0-based index ``t``; index −1 (the data) gives 0."""
    with mpmath.workdps(dps):
        return 1 - alpha_bar_at(betas, t, dps=dps)


def sqrt_alpha_bar(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\sqrt{\bar\alpha_t}` (Ho et al. 2020, eq. 4)."""
    with mpmath.workdps(dps):
        return [mpmath.sqrt(a) for a in alpha_bar(betas, dps=dps)]


def sqrt_one_minus_alpha_bar(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\sqrt{1 - \bar\alpha_t}` (Ho et al. 2020, eq. 4)."""
    with mpmath.workdps(dps):
        return [mpmath.sqrt(1 - a) for a in alpha_bar(betas, dps=dps)]


def snr(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)` (Kingma et al. 2021, eq. 2)."""
    with mpmath.workdps(dps):
        return [a / (1 - a) for a in alpha_bar(betas, dps=dps)]


def log_snr(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\lambda_t = \log\bar\alpha_t - \log(1-\bar\alpha_t)` (Kingma et al. 2021, §3); −inf where ᾱ = 0."""
    with mpmath.workdps(dps):
        return [mpmath.log(a) - mpmath.log(1 - a) if a > 0 else mpf("-inf") for a in alpha_bar(betas, dps=dps)]


def alpha_bar_ratio(betas: ArrayLike, t: int, s: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`\bar\alpha_t/\bar\alpha_s = \prod_{r=s+1}^{t}(1-\beta_r)` for 0-based ``-1 <= s <= t``.

    The literal product of the factors between the two indices (Kingma et al. 2021, eq. 21; the
    Markov chain of Ho et al. 2020, eq. 2, composed). The empty product (s = t) is 1.
    """
    b = _betas(betas)
    if not -1 <= s <= t <= b.size - 1:
        raise ValueError(f"s={s}, t={t}: the twin needs -1 <= s <= t <= T-1")
    with mpmath.workdps(dps):
        prod = mpf(1)
        for beta in b[s + 1 : t + 1].tolist():
            prod = prod * (1 - mpf(beta))
        return prod


def one_minus_alpha_bar_ratio(betas: ArrayLike, t: int, s: int, *, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`1 - \bar\alpha_t/\bar\alpha_s`, the variance of :math:`q(x_t \mid x_s)` (Kingma et al. 2021, eq. 21)."""
    with mpmath.workdps(dps):
        return 1 - alpha_bar_ratio(betas, t, s, dps=dps)


def alpha_bar_tables(betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> tuple[list[mpf], list[mpf]]:
    r"""(ᾱ_t, 1 − ᾱ_t) for every index: the literal running product and one minus it, at ``dps`` digits."""
    ab = alpha_bar(betas, dps=dps)
    with mpmath.workdps(dps):
        return ab, [1 - a for a in ab]
