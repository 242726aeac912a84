r"""The Gaussian facts the derivations use, written once.

Every Gaussian of DDPM/DDIM has an isotropic covariance :math:`vI`, so each identity holds per
element and is stated for one scalar element :math:`x`.

* :func:`log_normal` is the log-density :math:`\log\mathcal N(x;\mu,v)`, exactly, with its constant.
  Two log-densities in x that agree *up to a constant in x* are equal as densities (both are
  normalised); "completing the square" is that statement.
* :func:`gaussian_expectation` is :math:`\mathbb E_{x\sim\mathcal N(\mu,v)}[P(x)]` of a polynomial
  :math:`P`, from the raw moments :math:`\mathbb E[x^k] = \sum_{j\,\rm even}\binom{k}{j}\mu^{k-j}v^{j/2}(j-1)!!`.
"""

from __future__ import annotations

import sympy as sp

__all__ = ["log_normal", "gaussian_moment", "gaussian_expectation"]


def log_normal(x: sp.Expr, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    r"""The log-density of :math:`\mathcal N(\mu, v)` at x.

    .. math:: \log\mathcal N(x;\mu,v) = -\frac{(x-\mu)^2}{2v} - \frac12\log(2\pi v)
    """
    return -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def gaussian_moment(k: int, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    r"""The raw moment :math:`\mathbb E[x^k]` of :math:`\mathcal N(\mu, v)`.

    .. math:: \mathbb E[x^k] = \sum_{j=0,\,j\ \rm even}^{k}\binom{k}{j}\,\mu^{k-j}\,v^{j/2}\,(j-1)!!
    """
    if k < 0:
        raise ValueError(f"k={k!r}: a moment order must be >= 0")
    return sp.Add(
        *[sp.binomial(k, j) * mean ** (k - j) * var ** (j // 2) * sp.factorial2(j - 1) for j in range(0, k + 1, 2)]
    )


def gaussian_expectation(expr: sp.Expr, x: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    r""":math:`\mathbb E_{x\sim\mathcal N(\mu,v)}[P(x)]` of an expression polynomial in x.

    Terms free of x are constants of the expectation (they may contain logarithms of the
    parameters); the polynomial part is replaced moment by moment (:func:`gaussian_moment`).
    """
    poly = sp.Poly(sp.expand(expr), x)
    return sp.Add(*[c * gaussian_moment(m[0], mean, var) for m, c in zip(poly.monoms(), poly.coeffs())])
