r"""The variational bound and the training losses of DDPM (Ho et al. 2020, §3.3–§4; Nichol & Dhariwal 2021, §3.1).

.. math::

    L_\mathrm{vlb} = \underbrace{D_\mathrm{KL}(q(x_T\mid x_0)\,\|\,p(x_T))}_{L_T}
        + \sum_{t>1} \underbrace{D_\mathrm{KL}(q(x_{t-1}\mid x_t,x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))}_{L_{t-1}}
        \underbrace{-\,\log p_\theta(x_0\mid x_1)}_{L_0}

(Ho et al. 2020, eq. 5). This module states each piece: the Gaussian KL (:func:`normal_kl`), the
discretized decoder :math:`p_\theta(x_0 \mid x_1)` (eq. 13, :func:`discretized_gaussian_log_likelihood`),
the prior term (:func:`prior_kl`, :func:`prior_bpd`), one term of the sum (:func:`vlb_term`), the whole
bound (:func:`vlb_terms_bpd`, :func:`total_vlb_bpd`), the simple and hybrid losses (eq. 14,
:func:`l_simple`; Nichol & Dhariwal 2021 eq. 16, :func:`l_hybrid`, and improved-diffusion's rescaled
form with its units, :func:`l_hybrid_rescaled`, :func:`vb_term_scale`), the ε-form of a KL term
(eq. 8's mean part in the ε form of eq. 12, :func:`eps_kl_weight`, and eq. 8's constant C,
:func:`eps_kl_constant`), and the whole-trajectory densities whose expected log-ratio is the bound
(eq. 3: :func:`log_q_trajectory`, :func:`log_p_trajectory`). The numerical kernels (series,
quadrature) are in ``reference/_numerics.py``.

Index convention (``docs/conventions.md``): a timestep argument is the 0-based index; index ``t``
is the papers' t + 1. :func:`vlb_term` at index ``t >= 1`` is the papers' :math:`L_{t}` (the KL
for the step from papers' t + 1 to t), and at index 0 it is the decoder term :math:`L_0`.

Units: KL values and log-likelihoods are in nats, elementwise; "bpd" values are bits per dimension,
the mean over every axis but the first (the batch axis) divided by ln 2, as in the DDPM authors'
code and improved-diffusion (``docs/conventions.md``, anchors "Likelihood").

Accuracy (measured against the mpmath twin :mod:`ddspec.reference.twin.likelihood`; numbers in
``tests/reference/test_likelihood.py``): :func:`normal_kl` is within a few ULP of the exact KL of
its float64 inputs, also when the two Gaussians nearly coincide (KL ~ 1e-20), because it never
forms :math:`-1 + e^d - d` by cancellation. The exact decoder evaluates log-probabilities through
``log_ndtr`` and a quadrature of the density, never by subtracting two CDF values close to 1 or to
each other, so it does not underflow and does not clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.special as sc
from numpy.typing import ArrayLike, NDArray

from . import _dd, _numerics
from .alphas import alpha_bar_tables, alpha_bar, sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from .validation import (
    SingularError,
    as_array,
    as_betas,
    as_int,
    as_scalar,
    as_timestep,
    check_finite_result,
    check_same_shape,
    fail,
)
from .forward import q_step
from .posterior import posterior_log_variance_clipped, q_posterior

__all__ = [
    "VLBTerms",
    "normal_kl",
    "approx_standard_normal_cdf",
    "standard_normal_cdf",
    "log_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "prior_kl",
    "prior_bpd",
    "vlb_term",
    "mean_flat_bpd",
    "vlb_terms_bpd",
    "total_vlb_bpd",
    "l_simple",
    "l_simple_per_sample",
    "l_hybrid",
    "eps_kl_weight",
    "eps_kl_constant",
    "VB_LOSS_TYPES",
    "vb_term_scale",
    "l_hybrid_rescaled",
    "log_q_trajectory",
    "log_p_trajectory",
]

Array = NDArray[np.float64]

LN2 = math.log(2.0)

#: Half the width of one of the 256 decoder bins on [−1, 1]: the bins are x ± 1/255.
HALF_BIN = 1.0 / 255.0

#: Off-grid tolerance of the decoder's ``x`` (absolute): data decoded from uint8 through float32
#: lands within ~1e-7 of the grid.
GRID_TOL = 1e-6

#: The anchors' edge thresholds and probability floor (tanh decoder only).
TANH_EDGE = 0.999
TANH_FLOOR = 1e-12


# ---------------------------------------------------------------------------------------------
# Argument handling (the numerical kernels are in reference/_numerics.py)
# ---------------------------------------------------------------------------------------------


def _broadcast(**arrays: Array) -> tuple[Array, ...]:
    """Broadcast named arrays together; a mismatch is an error naming the first array that fails."""
    items = list(arrays.items())
    shape = np.shape(items[0][1])
    for name, a in items[1:]:
        try:
            shape = np.broadcast_shapes(shape, np.shape(a))
        except ValueError:
            fail(name, a, f"shape {np.shape(a)} does not broadcast with {items[0][0]}'s shape {np.shape(items[0][1])}")
    return tuple(np.broadcast_to(a, shape).astype(np.float64) for _, a in items)


def _check_cdf(cdf: str) -> str:
    if cdf not in ("exact", "tanh"):
        fail("cdf", cdf, 'must be "exact" or "tanh"')
    return cdf


# ---------------------------------------------------------------------------------------------
# Gaussian KL
# ---------------------------------------------------------------------------------------------


def normal_kl(mean1: ArrayLike, logvar1: ArrayLike, mean2: ArrayLike, logvar2: ArrayLike) -> Array:
    r"""KL divergence between diagonal Gaussians, elementwise, in nats.

    .. math::

        D_\mathrm{KL}\big(\mathcal N(\mu_1, e^{\ell_1}) \,\|\, \mathcal N(\mu_2, e^{\ell_2})\big)
          = \tfrac12\Big(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2} + (\mu_1-\mu_2)^2 e^{-\ell_2}\Big)
          = \tfrac12\Big(h(\ell_1 - \ell_2) + (\mu_1-\mu_2)^2 e^{-\ell_2}\Big),\quad h(d) = e^{d} - 1 - d .

    Source: the closed form used for every KL term of Ho et al. 2020 (§2, after eq. 7: "Rao–Blackwellized
    fashion with closed form expressions"); anchors "Likelihood" (same formula, log-variances).

    Accuracy. Both parts are non-negative and are evaluated without cancellation:
    :math:`d = \ell_1 - \ell_2` is kept exactly as a TwoSum pair, :math:`h(d)` uses the Taylor series
    :math:`d^2/2 + d^3/6 + \dots` for −1 <= d <= 2 (where ``expm1(d) − d`` would cancel, e.g. KL ~ 1e-20
    for nearly equal Gaussians) and the direct forms elsewhere, and :math:`(\mu_1-\mu_2)^2` is
    formed from an exact TwoSum difference. The result is within a few ULP of the exact KL of the
    float64 inputs (measured bound in the tests).

    Non-negativity: the exact KL is >= 0 (Gibbs' inequality), and each part is >= 0 by construction,
    so the result is never negative; a final ``max(·, 0)`` guards this and can only move the result
    towards the exact value. Identical Gaussians give exactly 0.

    Arguments broadcast against each other. Raises :class:`SingularError` where the KL overflows
    float64 (e.g. :math:`\ell_1 - \ell_2 > 709`).
    """
    m1 = as_array(mean1, "mean1")
    l1 = as_array(logvar1, "logvar1")
    m2 = as_array(mean2, "mean2")
    l2 = as_array(logvar2, "logvar2")
    m1, l1, m2, l2 = _broadcast(mean1=m1, logvar1=l1, mean2=m2, logvar2=l2)
    with np.errstate(over="ignore", invalid="ignore"):
        dh, dl = _dd.two_sum(l1, -l2)
        h = _numerics.expm1_minus_id(np.asarray(dh, dtype=np.float64), np.asarray(dl, dtype=np.float64))
        sh, sl = _dd.two_sum(m1, -m2)
        p, e = _dd.two_prod(sh, sh)
        sq = p + (e + 2.0 * sh * sl)
        q = np.where(sq == 0.0, 0.0, sq * np.exp(-l2))
        kl = np.maximum(0.5 * (h + q), 0.0)
    return check_finite_result(kl, "normal_kl", "the KL divergence overflows float64 (variance ratio or "
                               "squared mean difference over variance beyond ~1e308)")


# ---------------------------------------------------------------------------------------------
# Standard normal CDF
# ---------------------------------------------------------------------------------------------


def approx_standard_normal_cdf(x: ArrayLike) -> Array:
    r"""The tanh approximation of the standard normal CDF.

    .. math:: \Phi(x) \approx \tfrac12\Big(1 + \tanh\big(\sqrt{2/\pi}\,(x + 0.044715\,x^3)\big)\Big)

    Used by the DDPM authors' code and improved-diffusion for the decoder (anchors "Likelihood").
    Its largest absolute error is about 1.79e-4, near |x| = 2.59 (measured in the tests against
    the exact Φ). It is exactly 1/2 at 0 and saturates to exactly 0 or 1 in float64 for |x| ≳ 6.5.
    """
    xx = as_array(x, "x")
    return 0.5 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (xx + 0.044715 * xx**3)))


def standard_normal_cdf(x: ArrayLike) -> Array:
    r"""The exact standard normal CDF :math:`\Phi(x) = \tfrac12\operatorname{erfc}(-x/\sqrt2)` (``scipy.special.ndtr``).

    Accurate in relative terms in the lower tail (it is erfc there); for the upper tail use
    :math:`1 - \Phi(x) = \Phi(-x)`.
    """
    return np.asarray(sc.ndtr(as_array(x, "x")), dtype=np.float64)


def log_standard_normal_cdf(x: ArrayLike) -> Array:
    r""":math:`\log\Phi(x)` without underflow (``scipy.special.log_ndtr``).

    Finite for every x ≥ −1.8·10¹⁵⁴; below that, :math:`\log\Phi(x) \approx -x^2/2` is beyond the float64
    range and :class:`SingularError` is raised (rather than returning −inf).
    """
    out = np.asarray(sc.log_ndtr(as_array(x, "x")), dtype=np.float64)
    return check_finite_result(out, "log_standard_normal_cdf", "log Phi(x) is below the float64 range (x < -1.8e154)")


# ---------------------------------------------------------------------------------------------
# Discretized Gaussian decoder (L_0)
# ---------------------------------------------------------------------------------------------


def _grid_index(x: Array, name: str) -> NDArray[np.int64]:
    """Bin index k of each x on the grid {−1 + 2k/255}; off-grid values (> GRID_TOL away) are an error."""
    k = np.rint((x + 1.0) * 127.5)
    grid = (2.0 * k - 255.0) / 255.0
    bad = (k < 0) | (k > 255) | (np.abs(x - grid) > GRID_TOL)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        fail(name, x, f"must lie on the 8-bit grid {{-1 + 2k/255, k = 0..255}} (within {GRID_TOL:g}); "
                      f"bad value {x[i]!r} at index {i if len(i) != 1 else i[0]}")
    return k.astype(np.int64)


def _log_bin_tanh(x: Array, mu: Array, log_s: Array) -> Array:
    """The anchors' decoder: tanh Φ, edges at ±0.999, probabilities floored at 1e-12."""
    inv_s = np.exp(-log_s)
    centred = x - mu
    cdf_plus = approx_standard_normal_cdf(inv_s * (centred + HALF_BIN))
    cdf_min = approx_standard_normal_cdf(inv_s * (centred - HALF_BIN))
    log_cdf_plus = np.log(np.maximum(cdf_plus, TANH_FLOOR))
    log_one_minus_cdf_min = np.log(np.maximum(1.0 - cdf_min, TANH_FLOOR))
    log_delta = np.log(np.maximum(cdf_plus - cdf_min, TANH_FLOOR))
    return np.where(x < -TANH_EDGE, log_cdf_plus, np.where(x > TANH_EDGE, log_one_minus_cdf_min, log_delta))


def _decoder(x: ArrayLike, means: ArrayLike, log_scales: ArrayLike, cdf: str, x_name: str) -> Array:
    xx = as_array(x, x_name)
    mu = as_array(means, "means")
    ls = as_array(log_scales, "log_scales")
    _check_cdf(cdf)
    xx, mu, ls = _broadcast(**{x_name: xx, "means": mu, "log_scales": ls})
    if np.any(ls < -700.0):
        fail("log_scales", log_scales, "must be >= -700 (1/σ = e^-log_scales overflows float64 below that)")
    k = _grid_index(xx, x_name)
    shape = xx.shape
    if cdf == "tanh":
        out = _log_bin_tanh(xx.ravel(), mu.ravel(), ls.ravel())
    else:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = _numerics.log_bin_probability(k.ravel(), mu.ravel(), ls.ravel())
    out = out.reshape(shape)
    return check_finite_result(out, "discretized_gaussian_log_likelihood",
                               "log-probability below the float64 range (a scale e^log_scales too small "
                               "for a bin this far from the mean)")


def discretized_gaussian_log_likelihood(
    x: ArrayLike, means: ArrayLike, log_scales: ArrayLike, *, cdf: str = "exact"
) -> Array:
    r"""Log-probability of 8-bit data under the discretized Gaussian decoder :math:`p_\theta(x_0 \mid x_1)`.

    .. math::

        p(x \mid \mu, \sigma) = \int_{\delta_-(x)}^{\delta_+(x)} \mathcal N(u; \mu, \sigma^2)\,du,\qquad
        \delta_+(x) = \begin{cases}\infty & x = 1\\ x + \tfrac1{255} & x < 1\end{cases},\quad
        \delta_-(x) = \begin{cases}-\infty & x = -1\\ x - \tfrac1{255} & x > -1\end{cases}

    Source: Ho et al. 2020, eq. 13 (the data are integers 0..255 scaled to [−1, 1], so there are 256
    bins of width 2/255 and the outer two are open). Elementwise, in nats; ``σ = exp(log_scales)``
    (for :math:`L_0`, log_scales = ½ · model log-variance).

    ``x`` must lie on the grid :math:`\{-1 + 2k/255\}`: a value farther than 1e-6 from it raises a
    ValueError naming ``x``. ``x``, ``means`` and ``log_scales`` broadcast together.

    ``cdf="exact"`` (default): the exact Φ. ``x`` is snapped to its grid point k and the bin edges
    are :math:`(2k-256)/255` and :math:`(2k-254)/255`; each standardized edge
    :math:`(\text{edge} - \mu)/\sigma` is formed from the edge as a double-double, so adjacent bins
    share their edges exactly and the 256 probabilities sum to 1 up to rounding. The edge bins are
    :math:`\log\Phi(b)` and :math:`\log\Phi(-a)` (``log_ndtr``, no underflow); an interior bin is
    (standardized ends a < b, centre m, width h)

    * if h <= 1 and |m| h <= 1: :math:`-m^2/2 - \tfrac12\log 2\pi + \log\int_{-h/2}^{h/2} e^{-mu-u^2/2}du`
      (20-point Gauss–Legendre, all terms positive: no CDF difference is formed);
    * otherwise, after reflecting the bin so that m <= 0: if b <= 0,
      :math:`\log\Phi(b) + \log(1 - e^{\log\Phi(a) - \log\Phi(b)})`, where the ratio
      :math:`\Phi(a)/\Phi(b) \le e^{-1}` (since h > 1 or |m| h > 1, and the inverse Mills ratio
      :math:`\varphi/\Phi(x) > -x`); else (a < 0 < b, width > 1) :math:`\log(1 - \Phi(a) - \Phi(-b))`.

    No clamping is needed; the result is always finite unless it lies below the float64 range
    (σ ~ 1e-150 for a far bin), which raises :class:`SingularError`.

    ``cdf="tanh"`` reproduces the anchors' convention (the DDPM authors' code and improved-diffusion):
    :func:`approx_standard_normal_cdf`, bins ``x ± 1/255`` around the given (unsnapped) x, edges open
    where ``x < −0.999`` / ``x > 0.999``, and each probability floored at 1e-12 before the log (so
    log-probabilities are >= log 1e-12 ≈ −27.6). Its probabilities differ from the exact ones by at
    most about 2 × 1.79e-4 (twice the tanh error; see the tests).
    """
    return _decoder(x, means, log_scales, cdf, "x")


# ---------------------------------------------------------------------------------------------
# Prior term L_T
# ---------------------------------------------------------------------------------------------


def prior_kl(x0: ArrayLike, betas: ArrayLike) -> Array:
    r"""The prior term :math:`L_T = D_\mathrm{KL}(q(x_T\mid x_0)\,\|\,\mathcal N(0, I))` per element, in nats.

    .. math::

        L_T = \tfrac12\Big(\bar\alpha_T x_0^2 - \bar\alpha_T - \log(1-\bar\alpha_T)\Big)
            = \tfrac12\Big(\bar\alpha_T x_0^2 + k(-\bar\alpha_T)\Big),\quad k(r) = r - \log(1+r)

    (:func:`normal_kl` with :math:`\mu_1 = \sqrt{\bar\alpha_T}x_0`, :math:`\ell_1 = \log(1-\bar\alpha_T)`,
    :math:`\mu_2 = \ell_2 = 0`; q from Ho et al. 2020, eq. 4; L_T from eq. 5). Evaluated from ᾱ_T
    itself: forming log(1 − ᾱ_T) from the rounded 1 − ᾱ_T would lose ᾱ_T's low digits when ᾱ_T is
    small (ᾱ_T ≈ 4e-5 for the linear schedule at T = 1000, where L_T ≈ ᾱ_T x₀²/2). Zero-terminal-SNR
    schedules (ᾱ_T = 0) give exactly 0.
    """
    xx = as_array(x0, "x0")
    b = as_betas(betas)
    ab = float(alpha_bar(b)[-1])
    with np.errstate(over="ignore", invalid="ignore"):
        p, e = _dd.two_prod(xx, xx)
        sig = ab * (p + e)
    var = float(_numerics.r_minus_log1p(np.array([-ab]))[0])
    return check_finite_result(0.5 * (sig + var), "prior_kl", "ᾱ_T x0² overflows float64")


def mean_flat_bpd(values: ArrayLike) -> Array:
    r"""Nats per element → bits per dimension per sample: the mean over every axis but the first, divided by ln 2.

    .. math:: \mathrm{bpd}_b = \frac{1}{D \ln 2}\sum_{d} v_{b,d}

    The first axis is the batch axis (improved-diffusion's ``mean_flat`` then ``/ log 2``). A 1-D
    input is a batch of one-dimensional samples and is returned divided by ln 2.
    """
    v = as_array(values, "values")
    if v.ndim < 1:
        fail("values", values, "needs a batch axis (ndim >= 1)")
    if v.ndim == 1:
        return v / LN2
    with np.errstate(over="ignore"):
        out = v.reshape(v.shape[0], -1).mean(axis=1) / LN2
    return check_finite_result(out, "mean_flat_bpd", "the mean overflows float64")


def prior_bpd(x0: ArrayLike, betas: ArrayLike) -> Array:
    r"""The prior term :math:`L_T` in bits/dim per sample: :func:`mean_flat_bpd` of :func:`prior_kl`.

    Ho et al. 2020, §4: with the linear schedule (β from 1e-4 to 0.02, T = 1000) the prior term is
    :math:`L_T \approx 10^{-5}` bits per dimension. It does not depend on the model.
    """
    xx = as_array(x0, "x0")
    if xx.ndim < 1:
        fail("x0", x0, "needs a batch axis (ndim >= 1)")
    return mean_flat_bpd(prior_kl(xx, betas))


# ---------------------------------------------------------------------------------------------
# One VLB term, the whole VLB
# ---------------------------------------------------------------------------------------------


def vlb_term(
    x0: ArrayLike,
    x_t: ArrayLike,
    t: int,
    model_mean: ArrayLike,
    model_log_variance: ArrayLike,
    betas: ArrayLike,
    *,
    cdf: str = "exact",
) -> Array:
    r"""One term of the variational bound at index ``t``, elementwise, in nats.

    .. math::

        \text{index } t \ge 1:\quad
        D_\mathrm{KL}\big(\mathcal N(\tilde\mu_t(x_t, x_0), \tilde\beta_t) \,\|\,
                          \mathcal N(\mu_\theta, e^{\ell_\theta})\big),\qquad
        \text{index } 0:\quad -\log p_\theta(x_0\mid x_1)

    Source: Ho et al. 2020, eq. 5 (the terms :math:`L_{t-1}` and :math:`L_0`), eqs. 6–7 (the
    posterior), eq. 13 (the decoder, with log-scale :math:`\tfrac12\ell_\theta`). In papers' terms
    index t is the KL between the posterior and the model for the step x_{t+1} → x_t.

    The posterior log-variance is ``posterior_log_variance_clipped(betas)[t]`` = log β̃ at index
    t >= 1 (β̃ > 0 there; the clipping only concerns index 0, which does not use it). At index 0,
    ``x0`` must lie on the 8-bit grid and ``x_t`` is only checked for shape. ``x0``, ``x_t`` and
    ``model_mean`` must have the same shape; ``model_log_variance`` broadcasts against them (a
    scalar for a fixed variance). ``cdf`` selects the decoder's Φ (see
    :func:`discretized_gaussian_log_likelihood`).
    """
    xx0 = as_array(x0, "x0")
    xt = as_array(x_t, "x_t")
    mm = as_array(model_mean, "model_mean")
    mlv = as_array(model_log_variance, "model_log_variance")
    check_same_shape(x0=xx0, x_t=xt, model_mean=mm)
    try:
        np.broadcast_to(mlv, xx0.shape)
    except ValueError:
        fail("model_log_variance", model_log_variance,
             f"shape {mlv.shape} does not broadcast to x0's shape {xx0.shape}")
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    _check_cdf(cdf)
    if tt == 0:
        return -_decoder(xx0, mm, 0.5 * np.broadcast_to(mlv, xx0.shape), cdf, "x0")
    post = q_posterior(xx0, xt, tt, b)
    post_logvar = float(posterior_log_variance_clipped(b)[tt])
    return normal_kl(post.mean, post_logvar, mm, np.broadcast_to(mlv, xx0.shape))


@dataclass(frozen=True)
class VLBTerms:
    r"""The variational bound of a batch, in bits per dimension.

    ``prior_bpd``: :math:`L_T`, shape (B,). ``terms_bpd``: shape (B, T), column t is
    :func:`vlb_term` at index t (column 0 is the decoder NLL :math:`L_0`; batch first, as
    improved-diffusion's ``vb``). ``total_bpd``: shape (B,), :math:`L_T + \sum_t` ``terms_bpd[:, t]``.
    """

    prior_bpd: Array
    terms_bpd: Array
    total_bpd: Array


def _per_step_log_variances(mlv: NDArray[np.float64], given: ArrayLike, n: int, full: tuple[int, ...]) -> NDArray[np.float64]:
    r"""The model's log-variances per step, shape ``(T, *x0.shape)``: a 1-D array of length T (one per step,
    broadcast over the elements) or anything that broadcasts to ``full``; a ValueError naming
    ``model_log_variances`` otherwise."""
    if mlv.ndim == 1:
        if mlv.size != n:
            fail("model_log_variances", given, f"a 1-D array must have length T = {n}")
        mlv = mlv.reshape((n,) + (1,) * (len(full) - 1))
    try:
        return np.broadcast_to(mlv, full)
    except ValueError:
        fail("model_log_variances", given, f"shape {mlv.shape} does not broadcast to {full}")
    raise AssertionError("unreachable")  # fail() raises


def vlb_terms_bpd(
    x0: ArrayLike,
    x_ts: ArrayLike,
    model_means: ArrayLike,
    model_log_variances: ArrayLike,
    betas: ArrayLike,
    *,
    cdf: str = "exact",
) -> VLBTerms:
    r"""The whole variational bound :math:`L_\mathrm{vlb} = L_T + \sum_{t=1}^{T-1} L_t + L_0`, in bits/dim.

    .. math::

        L_\mathrm{vlb} = D_\mathrm{KL}(q(x_T|x_0)\|\mathcal N(0,I))
          + \sum_{t>1} D_\mathrm{KL}(q(x_{t-1}|x_t,x_0)\|p_\theta(x_{t-1}|x_t)) - \log p_\theta(x_0|x_1)

    Source: Ho et al. 2020, eq. 5; improved-diffusion's ``calc_bpd_loop`` evaluates the same sum.
    Each term is a single-sample estimate: the caller draws :math:`x_t \sim q(x_t \mid x_0)` for
    every index and runs the model on it. Shapes, with ``x0`` of shape (B, …) on the 8-bit grid:

    * ``x_ts``, ``model_means``: (T, B, …); entry t is the noisy sample at index t and the model mean
      :math:`\mu_\theta(x_t, t)` computed from it;
    * ``model_log_variances``: (T,) (one log-variance per index, e.g. a fixed variance) or any shape
      that broadcasts to (T, B, …).

    Returns :class:`VLBTerms` (bits/dim per sample). Index convention: 0-based t, see :func:`vlb_term`.
    """
    xx0 = as_array(x0, "x0")
    if xx0.ndim < 1:
        fail("x0", x0, "needs a batch axis (ndim >= 1)")
    b = as_betas(betas)
    n = b.size
    full = (n,) + xx0.shape
    xts = as_array(x_ts, "x_ts")
    mms = as_array(model_means, "model_means")
    mlv = as_array(model_log_variances, "model_log_variances")
    if xts.shape != full:
        fail("x_ts", x_ts, f"shape {xts.shape} must be (T, *x0.shape) = {full}")
    if mms.shape != full:
        fail("model_means", model_means, f"shape {mms.shape} must be (T, *x0.shape) = {full}")
    mlv = _per_step_log_variances(mlv, model_log_variances, n, full)
    _check_cdf(cdf)
    _grid_index(xx0, "x0")
    terms = np.stack([mean_flat_bpd(vlb_term(xx0, xts[t], t, mms[t], mlv[t], b, cdf=cdf)) for t in range(n)], axis=1)
    prior = prior_bpd(xx0, b)
    total = check_finite_result(prior + terms.sum(axis=1), "vlb_terms_bpd", "the sum of the terms overflows float64")
    return VLBTerms(prior_bpd=prior, terms_bpd=terms, total_bpd=total)


def total_vlb_bpd(
    x0: ArrayLike,
    model_fn: Callable[[Array, int], tuple[ArrayLike, ArrayLike]],
    betas: ArrayLike,
    noises: ArrayLike,
    *,
    cdf: str = "exact",
) -> VLBTerms:
    r"""The variational bound for a model given as a function: samples every x_t, calls the model, sums.

    .. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon_t,\qquad
              (\mu_\theta, \ell_\theta) = \texttt{model\_fn}(x_t, t)

    (Ho et al. 2020, eq. 4 for the sample, eq. 5 for the bound). ``noises`` has shape (T, *x0.shape):
    ``noises[t]`` is the standard normal ε used at index t (the reference is deterministic).
    ``model_fn(x_t, t)`` returns the model mean (shape of x0) and log-variance (broadcastable to it).
    Then :func:`vlb_terms_bpd`.
    """
    xx0 = as_array(x0, "x0")
    if not callable(model_fn):
        fail("model_fn", model_fn, "must be callable as model_fn(x_t, t) -> (mean, log_variance)")
    b = as_betas(betas)
    n = b.size
    eps = as_array(noises, "noises")
    if eps.shape != (n,) + xx0.shape:
        fail("noises", noises, f"shape {eps.shape} must be (T, *x0.shape) = {(n,) + xx0.shape}")
    sa = sqrt_alpha_bar(b)
    s1 = sqrt_one_minus_alpha_bar(b)
    x_ts = np.stack([sa[t] * xx0 + s1[t] * eps[t] for t in range(n)])
    means = []
    logvars = []
    for t in range(n):
        out = model_fn(x_ts[t], t)
        if not (isinstance(out, tuple) and len(out) == 2):
            fail("model_fn", model_fn, f"must return a pair (mean, log_variance); at t={t} it returned {type(out).__name__}")
        mean, logvar = out
        means.append(as_array(mean, "model_fn mean"))
        lv = as_array(logvar, "model_fn log_variance")
        try:
            logvars.append(np.broadcast_to(lv, xx0.shape))
        except ValueError:
            fail("model_fn log_variance", logvar, f"shape {lv.shape} does not broadcast to x0's shape {xx0.shape}")
    return vlb_terms_bpd(xx0, x_ts, np.stack(means), np.stack(logvars), b, cdf=cdf)


# ---------------------------------------------------------------------------------------------
# Training losses
# ---------------------------------------------------------------------------------------------


def _eps_pair(eps: ArrayLike, eps_pred: ArrayLike) -> tuple[Array, Array]:
    e = as_array(eps, "eps")
    ep = as_array(eps_pred, "eps_pred")
    check_same_shape(eps=e, eps_pred=ep)
    return e, ep


def l_simple(eps: ArrayLike, eps_pred: ArrayLike) -> float:
    r"""The simple loss, mean squared error over all elements.

    .. math:: L_\mathrm{simple} = \mathbb E_{t, x_0, \epsilon}\big[\|\epsilon - \epsilon_\theta(x_t, t)\|^2\big]

    Source: Ho et al. 2020, eq. 14. Reduction: the mean over every element (batch and dimensions),
    i.e. the paper's squared norm divided by the number of dimensions and averaged over the batch,
    as the DDPM authors' code, improved-diffusion (``mean_flat``) and diffusers' training scripts do.
    ``eps`` and ``eps_pred`` must have the same shape.
    """
    e, ep = _eps_pair(eps, eps_pred)
    d = e - ep
    with np.errstate(over="ignore"):
        out = np.mean(d * d)
    return float(check_finite_result(out, "l_simple", "the squared error overflows float64"))


def l_simple_per_sample(eps: ArrayLike, eps_pred: ArrayLike) -> Array:
    r"""The simple loss per sample: the mean of :math:`(\epsilon - \epsilon_\theta)^2` over every axis but the first.

    .. math:: L_{\mathrm{simple},b} = \frac1D \sum_d (\epsilon_{b,d} - \epsilon_{\theta,b,d})^2

    Ho et al. 2020, eq. 14, before the batch average (improved-diffusion's ``mean_flat``). A 1-D
    input is a batch of one-dimensional samples.
    """
    e, ep = _eps_pair(eps, eps_pred)
    d = e - ep
    if d.ndim < 1:
        fail("eps", eps, "needs a batch axis (ndim >= 1)")
    with np.errstate(over="ignore"):
        out = (d * d).reshape(d.shape[0], -1).mean(axis=1)
    return check_finite_result(out, "l_simple_per_sample", "the squared error overflows float64")


def l_hybrid(eps: ArrayLike, eps_pred: ArrayLike, vlb_term_value: ArrayLike, lam: float = 0.001) -> Array:
    r"""The hybrid loss per sample, :math:`L_\mathrm{simple} + \lambda L_\mathrm{vlb}`.

    .. math:: L_\mathrm{hybrid} = L_\mathrm{simple} + \lambda\, L_\mathrm{vlb},\qquad \lambda = 0.001

    Source: Nichol & Dhariwal 2021, §3.1 (eq. 16). Returns shape (B,): :func:`l_simple_per_sample`
    plus ``lam * vlb_term_value``, where ``vlb_term_value`` broadcasts to (B,).

    The stop-gradient. In the paper (and improved-diffusion) :math:`L_\mathrm{vlb}` is evaluated with
    the model mean :math:`\mu_\theta` detached, so that :math:`L_\mathrm{vlb}` trains only the
    variance and :math:`L_\mathrm{simple}` remains the only source of gradient for the mean. A NumPy
    reference has no gradients: the value is the same either way, and the caller is responsible for
    computing ``vlb_term_value`` with the mean held fixed (e.g. :func:`vlb_term` with the model mean
    as a constant). Units: whatever ``vlb_term_value`` is in. improved-diffusion passes one term in
    bits/dim multiplied by T/1000 (``RESCALED_MSE``), i.e. λ·T·L_t, the uniform-t estimate of
    λ·L_vlb with λ = 1/1000 (anchors "Likelihood"): that form, with its units, is
    :func:`l_hybrid_rescaled` (and the factor alone :func:`vb_term_scale`).
    """
    ls = l_simple_per_sample(eps, eps_pred)
    v = as_array(vlb_term_value, "vlb_term_value")
    lam_v = as_scalar(lam, "lam", low=0.0)
    try:
        v = np.broadcast_to(v, ls.shape)
    except ValueError:
        fail("vlb_term_value", vlb_term_value, f"shape {v.shape} does not broadcast to the batch shape {ls.shape}")
    with np.errstate(over="ignore"):
        out = ls + lam_v * v
    return check_finite_result(out, "l_hybrid", "the loss overflows float64")


# ---------------------------------------------------------------------------------------------
# The ε form of a KL term (Ho et al. 2020, eq. 12)
# ---------------------------------------------------------------------------------------------


def _beta_tilde_dd(b: Array, t: int) -> tuple[float, float]:
    """β̃ at index t >= 1 as a double-double: (1 − ᾱ_{t−1}) β_t / (1 − ᾱ_t)."""
    _, _, c_hi, c_lo = alpha_bar_tables(b)
    nh, nl = _dd.dd_mul(float(c_hi[t - 1]), float(c_lo[t - 1]), float(b[t]), 0.0)
    qh, ql = _dd.dd_div(nh, nl, float(c_hi[t]), float(c_lo[t]))
    return float(qh), float(ql)


def eps_kl_weight(betas: ArrayLike, t: int, sigma2: float) -> float:
    r"""The weight of :math:`\|\epsilon - \epsilon_\theta\|^2` in a KL term of the bound.

    .. math:: w_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}

    Source: Ho et al. 2020, eq. 12. With :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}
    {\sqrt{1-\bar\alpha_t}}\epsilon_\theta)` (eq. 11) and x_t from eq. 4, the posterior mean is the
    same expression with ε, so :math:`\tilde\mu_t - \mu_\theta = \frac{\beta_t}{\sqrt{\alpha_t}\sqrt{1-\bar\alpha_t}}
    (\epsilon_\theta - \epsilon)` and :math:`\|\tilde\mu_t - \mu_\theta\|^2/(2\sigma_t^2) = w_t \|\epsilon-\epsilon_\theta\|^2`.

    Index convention: 0-based index t is the papers' t + 1 (so the KL term is :func:`vlb_term` at
    index t); index 0 is allowed (papers' t = 1: :math:`w = \beta_1/(2\sigma^2\alpha_1)`).
    ``sigma2`` is the model variance :math:`\sigma_t^2 > 0`. Double-double, one final rounding.
    Raises :class:`SingularError` where β_t = 1 (α_t = 0).
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    s2 = as_scalar(sigma2, "sigma2", low=0.0, low_open=True)
    beta = float(b[tt])
    if beta >= 1.0:
        raise SingularError(f"eps_kl_weight: betas[{tt}] = 1, so alpha_t = 0 and the weight is infinite")
    _, _, c_hi, c_lo = alpha_bar_tables(b)
    a_h = 1.0 - beta
    a_l = -beta - (a_h - 1.0)  # 1 − β exactly (Fast2Sum)
    nh, nl = _dd.two_prod(beta, beta)
    dh, dl = _dd.dd_mul(a_h, a_l, float(c_hi[tt]), float(c_lo[tt]))
    dh, dl = _dd.dd_mul(dh, dl, 2.0 * s2, 0.0)
    if dh == 0.0:  # 2σ²α(1 − ᾱ) underflowed (σ² subnormal): the weight is beyond float64
        raise SingularError(f"eps_kl_weight: the weight overflows float64 (sigma2={s2!r} too small)")
    qh, ql = _dd.dd_div(nh, nl, dh, dl)
    w = float(qh + ql)
    if not math.isfinite(w):
        raise SingularError(f"eps_kl_weight: the weight overflows float64 (sigma2={s2!r} too small)")
    return w


def eps_kl_constant(betas: ArrayLike, t: int, sigma2: float) -> float:
    r"""The variance-mismatch constant of a KL term in ε form, per dimension, in nats.

    .. math::

        D_\mathrm{KL}\big(\mathcal N(\tilde\mu_t, \tilde\beta_t) \,\|\, \mathcal N(\mu_\theta, \sigma_t^2)\big)
          = w_t (\epsilon - \epsilon_\theta)^2 + C_t,\qquad
        C_t = \tfrac12\Big(\frac{\tilde\beta_t}{\sigma_t^2} - 1 - \log\frac{\tilde\beta_t}{\sigma_t^2}\Big) \ge 0

    Derivation: :func:`normal_kl` with :math:`\ell_1 = \log\tilde\beta_t`, :math:`\ell_2 = \log\sigma_t^2`
    splits into the mean part :math:`(\tilde\mu_t - \mu_\theta)^2/(2\sigma_t^2) = w_t(\epsilon-\epsilon_\theta)^2`
    (see :func:`eps_kl_weight`) and the variance part :math:`\tfrac12(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2})`,
    which does not depend on ε or ε_θ: it is the KL between two Gaussians with equal means and
    variances β̃_t and σ_t². It is the constant C of Ho et al. 2020, eq. 8,

    .. math:: L_{t-1} = \mathbb E_q\Big[\frac{1}{2\sigma_t^2}\|\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\|^2\Big] + C

    (independent of θ for fixed σ_t; eqs. 10–12 rewrite only the mean part, into the ε form with
    weight :math:`w_t`, and drop C). It is >= 0, and 0 exactly when :math:`\sigma_t^2 = \tilde\beta_t` ("fixed small").

    Computed as :math:`\tfrac12(r - \log(1+r))` with :math:`r = (\tilde\beta_t - \sigma_t^2)/\sigma_t^2`, β̃
    in double-double, so that C keeps its relative accuracy also when σ² is close to β̃ (e.g.
    σ² = β_t late in the schedule). Note that for σ² = fl(β̃_t) the exact constant is not 0 but
    ~(relative rounding of β̃)² ~ 1e-33.

    Index convention: 0-based index t >= 1 (papers' t + 1 >= 2). At index 0, β̃ = 0 (the posterior
    is a point mass) and log β̃ = −∞: raises :class:`SingularError`.
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    s2 = as_scalar(sigma2, "sigma2", low=0.0, low_open=True)
    if tt == 0:
        raise SingularError("eps_kl_constant: at index 0 beta_tilde = 0 (the posterior is the point mass at x0), "
                            "so the variance KL log(sigma2/beta_tilde) is infinite; index 0 is the decoder term")
    bh, bl = _beta_tilde_dd(b, tt)
    rho_h, rho_l = _dd.dd_div(bh, bl, s2, 0.0)
    rho = float(rho_h + rho_l)  # β̃ / σ²
    if rho < 0.25:
        # σ² > 4β̃: −log ρ > 1.38 dominates ρ − 1 > −1, so ρ − 1 − log ρ > 0.63 loses at most ~2 bits
        # (and r = ρ − 1 could round to −1 where ρ < 1e-16).
        c = 0.5 * ((rho - 1.0) - math.log(rho))
    else:
        num_h, num_l = _dd.two_sum(bh, -s2)  # β̃ − σ² = num_h + num_l exactly (TwoSum)
        r = (num_h + (num_l + bl)) / s2
        c = 0.5 * float(_numerics.r_minus_log1p(np.array([r]))[0])
    if not math.isfinite(c):
        raise SingularError(f"eps_kl_constant: the constant overflows float64 (sigma2={s2!r})")
    return max(c, 0.0)


# ---------------------------------------------------------------------------------------------
# L_hybrid with units: improved-diffusion's rescaled VLB term
# ---------------------------------------------------------------------------------------------

#: improved-diffusion's ``LossType`` names (lower case) and the factor each applies to the VLB term.
VB_LOSS_TYPES: tuple[str, ...] = ("mse", "rescaled_mse", "kl", "rescaled_kl")


def vb_term_scale(num_timesteps: int, loss_type: str = "rescaled_mse") -> float:
    r"""The factor improved-diffusion applies to the one-timestep VLB term :math:`L_t` (in bits/dim).

    .. math::

        \texttt{mse}, \texttt{kl}: 1,\qquad \texttt{rescaled\_mse}: \frac{T}{1000},\qquad \texttt{rescaled\_kl}: T

    Source: Nichol & Dhariwal 2021, §3.1 (eq. 16, λ = 0.001) and its released code,
    ``improved_diffusion/gaussian_diffusion.py`` (``GaussianDiffusion.training_losses``):
    ``terms["vb"] *= self.num_timesteps / 1000.0`` under ``LossType.RESCALED_MSE`` (the default when
    the variance is learned) and ``terms["loss"] *= self.num_timesteps`` under ``LossType.RESCALED_KL``.
    The term is ``_vb_terms_bpd``'s output, in bits per dimension (``mean_flat(kl) / log(2)``), at one
    timestep t drawn uniformly from 0..T−1. Since :math:`\mathbb E_t[T\,L_t] = \sum_t L_t`, the rescaled
    term is the single-sample estimate of :math:`\lambda\,L_\mathrm{vlb}` with λ = 1/1000
    (``rescaled_mse``) or of :math:`L_\mathrm{vlb}` itself (``rescaled_kl``), in bits/dim, without the
    prior term :math:`L_T` (which has no parameters). Index convention: T = ``num_timesteps`` >= 1.
    """
    n = as_int(num_timesteps, "num_timesteps", low=1, high=10**9)
    if loss_type not in VB_LOSS_TYPES:
        fail("loss_type", loss_type, f"must be one of {VB_LOSS_TYPES}")
    return {"mse": 1.0, "kl": 1.0, "rescaled_mse": n / 1000.0, "rescaled_kl": float(n)}[loss_type]


def l_hybrid_rescaled(eps: ArrayLike, eps_pred: ArrayLike, vb_term_bpd: ArrayLike, num_timesteps: int) -> Array:
    r"""improved-diffusion's hybrid loss per sample, with its units: :math:`L_\mathrm{simple} + \frac{T}{1000}L_t`.

    .. math::

        L_{\mathrm{hybrid},b} = \frac1D\sum_d(\epsilon_{b,d} - \epsilon_{\theta,b,d})^2
          + \frac{T}{1000}\,L_{t_b}[\text{bits/dim}],\qquad
        \mathbb E_{t\sim\mathcal U\{0..T-1\}}\Big[\frac{T}{1000}L_t\Big] = \frac{1}{1000}\sum_t L_t

    Source: Nichol & Dhariwal 2021, eq. 16 (:math:`L_\mathrm{hybrid} = L_\mathrm{simple} + \lambda L_\mathrm{vlb}`,
    λ = 0.001), as the released code computes it (``LossType.RESCALED_MSE``, see :func:`vb_term_scale`):
    the MSE is ``mean_flat`` (:func:`l_simple_per_sample`), and ``vb_term_bpd`` is the VLB term of
    each sample at its own timestep, in **bits per dimension** (:func:`vlb_term` through
    :func:`mean_flat_bpd`), computed with the model mean held fixed (the stop-gradient). ``eps`` and
    ``eps_pred`` have shape (B, …); ``vb_term_bpd`` broadcasts to (B,). Returns shape (B,).
    Compare :func:`l_hybrid`, which takes the VLB value in whatever units and a free λ.
    """
    scale = vb_term_scale(num_timesteps, "rescaled_mse")
    return l_hybrid(eps, eps_pred, vb_term_bpd, lam=scale)


# ---------------------------------------------------------------------------------------------
# The whole-trajectory densities behind the bound
# ---------------------------------------------------------------------------------------------


def _trajectory(x0: ArrayLike, x_ts: ArrayLike, betas: ArrayLike) -> tuple[Array, Array, Array]:
    xx0 = as_array(x0, "x0")
    if xx0.ndim < 1:
        fail("x0", x0, "needs a batch axis (ndim >= 1)")
    b = as_betas(betas)
    xts = as_array(x_ts, "x_ts")
    full = (b.size,) + xx0.shape
    if xts.shape != full:
        fail("x_ts", x_ts, f"shape {xts.shape} must be (T, *x0.shape) = {full}")
    return xx0, xts, b


def _per_sample_sum(values: Array) -> Array:
    return values.reshape(values.shape[0], -1).sum(axis=1)


def log_q_trajectory(x0: ArrayLike, x_ts: ArrayLike, betas: ArrayLike) -> Array:
    r"""The log-density of a whole forward trajectory, :math:`\log q(x_{1:T} \mid x_0)`, per sample, in nats.

    .. math:: \log q(x_{1:T}\mid x_0) = \sum_{t=1}^{T}\log\mathcal N\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big)

    Source: Ho et al. 2020, eq. 2 (the forward chain). ``x0`` has shape (B, …); ``x_ts`` has shape
    (T, B, …) and ``x_ts[t]`` is the state at 0-based index t (the papers' x_{t+1}), the layout of
    :func:`vlb_terms_bpd`. Summed over every axis but the batch axis; returns shape (B,). Together
    with :func:`log_p_trajectory` it states the bound as an expectation,
    :math:`L_\mathrm{vlb} = \mathbb E_q[\log q(x_{1:T}|x_0) - \log p_\theta(x_{0:T})]`
    (Ho et al. 2020, eq. 3), whose term-by-term form is eq. 5 (:func:`vlb_terms_bpd`).
    """
    xx0, xts, b = _trajectory(x0, x_ts, betas)
    total = np.zeros(xx0.shape[0])
    for t in range(b.size):
        prev = xx0 if t == 0 else xts[t - 1]
        total = total + _per_sample_sum(q_step(prev, t, b).log_prob(xts[t]))
    return check_finite_result(total, "log_q_trajectory", "the log-density overflows float64")


def log_p_trajectory(
    x0: ArrayLike,
    x_ts: ArrayLike,
    model_means: ArrayLike,
    model_log_variances: ArrayLike,
    betas: ArrayLike,
    *,
    cdf: str = "exact",
) -> Array:
    r"""The log-probability of a whole reverse trajectory, :math:`\log p_\theta(x_{0:T})`, per sample, in nats.

    .. math::

        \log p_\theta(x_{0:T}) = \log\mathcal N(x_T; 0, I)
          + \sum_{t=2}^{T}\log\mathcal N\big(x_{t-1};\ \mu_\theta(x_t, t),\ \Sigma_\theta(x_t, t)\big)
          + \log p_\theta(x_0 \mid x_1)

    Source: Ho et al. 2020, eq. 1 (the reverse chain) with the discretized decoder of eq. 13
    (:func:`discretized_gaussian_log_likelihood`, so ``x0`` lies on the 8-bit grid and its term is a
    log-probability, the others log-densities). Shapes as in :func:`vlb_terms_bpd`: ``x_ts`` and
    ``model_means`` are (T, B, …), ``model_means[t]`` is :math:`\mu_\theta` computed from ``x_ts[t]``
    at index t; ``model_log_variances`` is (T,) or broadcasts to (T, B, …). Entry 0 of the model
    outputs parameterises the decoder (log-scale ½ ℓ). Returns shape (B,).
    """
    xx0, xts, b = _trajectory(x0, x_ts, betas)
    n = b.size
    full = xts.shape
    mms = as_array(model_means, "model_means")
    if mms.shape != full:
        fail("model_means", model_means, f"shape {mms.shape} must be (T, *x0.shape) = {full}")
    mlv = as_array(model_log_variances, "model_log_variances")
    mlv = _per_step_log_variances(mlv, model_log_variances, n, full)
    _check_cdf(cdf)
    with np.errstate(over="ignore", invalid="ignore"):
        prior = -0.5 * (math.log(2.0 * math.pi) + xts[n - 1] * xts[n - 1])
        total = _per_sample_sum(prior)
        for t in range(1, n):
            d = xts[t - 1] - mms[t]
            step = -0.5 * (math.log(2.0 * math.pi) + mlv[t] + d * d * np.exp(-mlv[t]))
            total = total + _per_sample_sum(step)
    total = total + _per_sample_sum(_decoder(xx0, mms[0], 0.5 * mlv[0], cdf, "x0"))
    return check_finite_result(total, "log_p_trajectory", "the log-density overflows float64")
