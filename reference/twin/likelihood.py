r"""mpmath twin of :mod:`ddspec.reference.likelihood`: KL terms and the decoder from their definitions.

.. math::

    D_\mathrm{KL}\big(\mathcal N(\mu_1, e^{\ell_1}) \,\|\, \mathcal N(\mu_2, e^{\ell_2})\big)
      = \tfrac12\big(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2} + (\mu_1-\mu_2)^2 e^{-\ell_2}\big)

evaluated literally (no rewriting against cancellation) at ``dps`` digits, which is enough: for
inputs of size ~1 and a KL of ~1e-20 the literal sum loses ~20 of the default 100 digits. The
decoder (Ho et al. 2020, eq. 13) is the literal difference of ``mpmath.ncdf`` at the exact bin
edges :math:`(2k-256)/255` and :math:`(2k-254)/255`, with only the symmetry
:math:`\Phi(b) - \Phi(a) = \Phi(-a) - \Phi(-b)` used to keep both CDF values in a tail where mpf
represents them with full relative precision (mpf exponents are unbounded, so nothing underflows),
and, for the bin that holds the mode, :math:`\log(1 - \Phi(a) - \Phi(-b))` through ``log1p`` (its
log-probability may be −1e-300, beyond any fixed working precision of a literal ``log``).

Inputs are float64 values taken exactly (scalars); results are ``mpmath.mpf``. Index convention:
0-based timestep index, index t is the papers' t + 1. ᾱ comes from :mod:`ddspec.reference.twin.alphas`
(the literal running product of ``1 - mpf(β)``).
"""

from __future__ import annotations

import mpmath
from mpmath import mpf
from numpy.typing import ArrayLike

from .alphas import alpha_bar_at

__all__ = [
    "KL_DPS",
    "normal_kl",
    "grid_index",
    "discretized_gaussian_log_likelihood",
    "prior_kl",
    "eps_kl_weight",
    "eps_kl_constant",
]

#: Default working precision of this twin (digits).
KL_DPS = 100


def normal_kl(mean1: float, logvar1: float, mean2: float, logvar2: float, *, dps: int = KL_DPS) -> mpf:
    r"""KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats, the literal closed form at ``dps`` digits.

    The literal form cancels (−1 + e^d − d with d = lv₁ − lv₂), so its absolute error is about
    10^(−dps): it is exact to float64 precision only for KL ≫ 10^(16 − dps) (KL ≳ 1e-80 at the
    default 100 digits). Near-equal Gaussians with a smaller KL need a larger ``dps``.
    """
    with mpmath.workdps(dps):
        m1, l1, m2, l2 = (mpf(float(v)) for v in (mean1, logvar1, mean2, logvar2))
        return (-1 + l2 - l1 + mpmath.exp(l1 - l2) + (m1 - m2) ** 2 * mpmath.exp(-l2)) / 2


def grid_index(x: float) -> int:
    """The bin k of x on the grid {−1 + 2k/255}; ValueError if x is more than 1e-6 from the grid."""
    k = int(round((float(x) + 1.0) * 127.5))
    if not 0 <= k <= 255 or abs(mpf(float(x)) - (mpf(2 * k - 255) / 255)) > mpf("1e-6"):
        raise ValueError(f"x={x!r}: not on the 8-bit grid")
    return k


def _log_bin_probability(k: int, mean: float, log_scale: float) -> mpf:
    mu = mpf(float(mean))
    sigma = mpmath.exp(mpf(float(log_scale)))
    a = (mpf(2 * k - 256) / 255 - mu) / sigma  # standardized lower edge
    b = (mpf(2 * k - 254) / 255 - mu) / sigma  # standardized upper edge
    if k == 0:
        a = mpmath.ninf
    if k == 255:
        b = mpmath.inf
    if a < 0 < b:  # the bin holds the mode: P = 1 − Φ(a) − Φ(−b), log via log1p (P may be 1 − 1e-300)
        return mpmath.log1p(-(mpmath.ncdf(a) + mpmath.ncdf(-b)))
    if a >= 0:  # reflect so that both CDF values are the small (lower-tail) ones
        a, b = -b, -a
    return mpmath.log(mpmath.ncdf(b) - mpmath.ncdf(a))


def discretized_gaussian_log_likelihood(x: float, mean: float, log_scale: float, *, dps: int = 60) -> mpf:
    r"""log P(bin of x) under N(mean, e^{2 log_scale}) in nats (Ho et al. 2020, eq. 13), exact Φ, edge bins open."""
    with mpmath.workdps(dps):
        return _log_bin_probability(grid_index(x), mean, log_scale)


def prior_kl(x0: float, betas: ArrayLike, *, dps: int = KL_DPS) -> mpf:
    r"""The prior term per dimension, KL(N(sqrt(ᾱ_T) x0, 1 − ᾱ_T) || N(0, 1)) in nats (Ho et al. 2020, eqs. 4–5)."""
    with mpmath.workdps(dps):
        ab = alpha_bar_at(betas, len(betas) - 1, dps=dps)
        x = mpf(float(x0))
        # KL of N(m, v) from N(0, 1): (−1 − log v + v + m²) / 2
        v = 1 - ab
        return (-1 - mpmath.log(v) + v + ab * x * x) / 2


def _beta_tilde(betas: ArrayLike, t: int, dps: int) -> mpf:
    beta = mpf(float(betas[t]))
    return (1 - alpha_bar_at(betas, t - 1, dps=dps)) / (1 - alpha_bar_at(betas, t, dps=dps)) * beta


def eps_kl_weight(betas: ArrayLike, t: int, sigma2: float, *, dps: int = KL_DPS) -> mpf:
    r""":math:`\beta_t^2 / (2\sigma_t^2\alpha_t(1-\bar\alpha_t))` at 0-based index t (Ho et al. 2020, eq. 12)."""
    with mpmath.workdps(dps):
        beta = mpf(float(betas[t]))
        return beta**2 / (2 * mpf(float(sigma2)) * (1 - beta) * (1 - alpha_bar_at(betas, t, dps=dps)))


def eps_kl_constant(betas: ArrayLike, t: int, sigma2: float, *, dps: int = KL_DPS) -> mpf:
    r"""KL(N(0, β̃_t) || N(0, σ²)) = (β̃/σ² − 1 − log(β̃/σ²))/2 at 0-based index t >= 1, literal, at ``dps`` digits."""
    if t < 1:
        raise ValueError(f"t={t}: beta_tilde is 0 at index 0")
    with mpmath.workdps(dps):
        ratio = _beta_tilde(betas, t, dps) / mpf(float(sigma2))
        return (ratio - 1 - mpmath.log(ratio)) / 2
