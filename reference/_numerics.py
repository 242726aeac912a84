r"""Numerical kernels of the likelihood equations: series, quadrature and tail-safe normal CDF pieces.

Private to :mod:`ddspec.reference` (next to :mod:`ddspec.reference._dd`, the double-double arithmetic).
:mod:`ddspec.reference.likelihood` states the equations and calls these for the parts that need care
in float64:

* :func:`expm1_minus_id` — :math:`h(d) = e^d - 1 - d` for the Gaussian KL (Taylor series by Horner
  near 0, where ``expm1(d) - d`` would cancel);
* :func:`r_minus_log1p` — :math:`k(r) = r - \log(1+r)` for the prior term and the variance part of a
  KL term (alternating series near 0);
* :func:`log_bin_probability` — :math:`\log\int_{\text{bin }k}\mathcal N(u;\mu,\sigma^2)\,du` for the
  discretized decoder (Ho et al. 2020, eq. 13): 20-point Gauss–Legendre quadrature of the density for
  narrow central bins, ``log_ndtr`` tails and reflection elsewhere, never a difference of two CDF
  values close to each other;
* :func:`horner`, :func:`gauss_legendre`, :func:`log_ndtr`, :func:`rational_minus` — their building blocks.

The accuracy statements are in the docstrings of the public functions of
:mod:`ddspec.reference.likelihood` that use them (measured against :mod:`ddspec.reference.twin.likelihood`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.special as sc
from numpy.typing import NDArray

from . import _dd

__all__ = [
    "horner",
    "expm1_minus_id",
    "r_minus_log1p",
    "gauss_legendre",
    "log_ndtr",
    "rational_minus",
    "log_bin_probability",
]

Array = NDArray[np.float64]


# 1/k! for k = 3 .. 30 (the series tail of e^d − 1 − d − d²/2 on −1 <= d <= 2 is below 2^-60 relative).
_INV_FACT = [1.0 / math.factorial(k) for k in range(3, 31)]
# (−1)^k / k for k = 3 .. 130 (the series tail of r − log1p(r) − r²/2 on −0.7 <= r <= 1/2 is below 2^-60 relative).
_ALT_INV = [(-1.0) ** k / k for k in range(3, 131)]


def horner(coefs: list[float], x: Array) -> Array:
    """Σ_j coefs[j] x^j by Horner's rule."""
    acc = np.full_like(x, coefs[-1])
    for c in reversed(coefs[:-1]):
        acc = acc * x + c
    return acc


def expm1_minus_id(dh: Array, dl: Array) -> Array:
    r""":math:`h(d) = e^{d} - 1 - d \ge 0` for :math:`d = d_h + d_l` given as an unevaluated sum.

    −1 <= d <= 2: :math:`d^2/2` exactly (TwoProduct) plus the series :math:`d^3\sum_{k\ge3} d^{k-3}/k!`.
    d > 2: ``expm1(d) − d``; d < −1: ``(−d − 1) + exp(d)`` (no cancellation either way).
    The low part enters to first order, :math:`h'(d_h) d_l = \operatorname{expm1}(d_h) d_l`.
    """
    out = np.empty_like(dh)
    small = (dh >= -1.0) & (dh <= 2.0)
    big = dh > 2.0
    neg = dh < -1.0
    if small.any():
        d = dh[small]
        p, e = _dd.two_prod(d, d)
        tail = d * p * horner(_INV_FACT, d)
        out[small] = 0.5 * p + (0.5 * e + tail + np.expm1(d) * dl[small])
    if big.any():
        d = dh[big]
        em = np.expm1(d)
        out[big] = (em - d) + em * dl[big]
    if neg.any():
        d = dh[neg]
        out[neg] = (-d - 1.0) + (np.exp(d) + np.expm1(d) * dl[neg])
    return out


def r_minus_log1p(r: Array) -> Array:
    r""":math:`k(r) = r - \log(1 + r) \ge 0` for :math:`r > -1`, without cancellation.

    −0.7 <= r <= 1/2: :math:`r^2/2` exactly (TwoProduct) plus :math:`r^3\sum_{k\ge3}(-1)^k r^{k-3}/k`
    (for r < 0 every term is positive); elsewhere the direct difference (there
    :math:`k(r) \ge 0.19\,|r|`, so only a few bits cancel).
    """
    out = np.empty_like(r)
    small = (r >= -0.7) & (r <= 0.5)
    if small.any():
        x = r[small]
        p, e = _dd.two_prod(x, x)
        out[small] = 0.5 * p + (0.5 * e + x * p * horner(_ALT_INV, x))
    if (~small).any():
        x = r[~small]
        out[~small] = x - np.log1p(x)
    return out


@lru_cache(maxsize=1)
def gauss_legendre() -> tuple[Array, Array]:
    nodes, weights = np.polynomial.legendre.leggauss(20)
    return nodes, weights


def log_ndtr(z: Array) -> Array:
    """log Φ(z): ``log_ndtr`` for z <= 0, ``log1p(−Φ(−z))`` for z > 0 (scipy's log(Φ(z)) there loses
    relative accuracy when log Φ(z) is small, ~10 ULP at z ≈ 1.4)."""
    return np.where(z > 0, np.log1p(-sc.ndtr(-np.abs(z))), sc.log_ndtr(np.minimum(z, 0.0)))


def rational_minus(num: Array, mu: Array) -> Array:
    """fl(num/255 − mu) from the double-double num/255: no rounding of the grid point is amplified
    when mu is close to it (num is an integer, exact in float64)."""
    qh, ql = _dd.dd_div(num, np.zeros_like(num), 255.0, 0.0)
    dh, dl = _dd.two_sum(qh, -mu)
    return dh + (dl + ql)


def log_bin_probability(k: NDArray[np.int64], mu: Array, log_s: Array) -> Array:
    r"""log P(bin k) under N(mu, e^{2 log_s}) with the exact Φ; edge bins open.

    The bins are those of :func:`ddspec.reference.likelihood.discretized_gaussian_log_likelihood`
    (whose docstring states the method and its accuracy): edges (2k − 256)/255 and (2k − 254)/255.
    """
    inv_s = np.exp(-log_s)
    a = rational_minus(2.0 * k - 256.0, mu) * inv_s  # standardized lower edge
    b = rational_minus(2.0 * k - 254.0, mu) * inv_s  # standardized upper edge
    m = rational_minus(2.0 * k - 255.0, mu) * inv_s  # standardized bin centre
    h = (2.0 / 255.0) * inv_s  # standardized bin width
    out = np.empty_like(mu)

    first = k == 0
    last = k == 255
    inner = ~first & ~last
    out[first] = log_ndtr(b[first])  # (−∞, −1 + 1/255]
    out[last] = log_ndtr(-a[last])  # [1 − 1/255, +∞): log(1 − Φ(a)) = log Φ(−a)

    # Narrow bin near the centre of the Gaussian: integrate the density, no CDF difference.
    quad = inner & (h <= 1.0) & (np.abs(m) * h <= 1.0)
    if quad.any():
        mq, hq = m[quad], h[quad]
        nodes, weights = gauss_legendre()
        u = 0.5 * hq[:, None] * nodes[None, :]
        mean_g = 0.5 * np.sum(weights[None, :] * np.exp(-mq[:, None] * u - 0.5 * u * u), axis=1)
        # ∫ = h · mean_g with log h = log(2/255) − log σ taken directly (no underflow for huge σ)
        log_h = math.log(2.0 / 255.0) - log_s[quad]
        out[quad] = -0.5 * mq * mq - 0.5 * math.log(2.0 * math.pi) + (log_h + np.log(mean_g))

    # Otherwise reflect so that the bin centre is <= 0 (Φ(b) − Φ(a) = Φ(−a) − Φ(−b)).
    rest = inner & ~quad
    if rest.any():
        ar, br, mr = a[rest], b[rest], m[rest]
        flip = mr > 0
        lo_s = np.where(flip, -br, ar)
        hi_s = np.where(flip, -ar, br)
        res = np.empty_like(ar)
        tail = hi_s <= 0  # both ends in the lower tail: log Φ(hi) + log(1 − Φ(lo)/Φ(hi))
        if tail.any():
            la = sc.log_ndtr(lo_s[tail])
            lb = sc.log_ndtr(hi_s[tail])
            res[tail] = lb + np.log(-np.expm1(la - lb))
        strad = ~tail  # the bin contains 0 (and is wider than 1 here): 1 − Φ(lo) − Φ(−hi)
        if strad.any():
            res[strad] = np.log1p(-(sc.ndtr(lo_s[strad]) + sc.ndtr(-hi_s[strad])))
        out[rest] = res
    return out
