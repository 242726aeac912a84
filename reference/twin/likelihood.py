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
import numpy as np
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
    "vb_term_scale",
    "l_hybrid_rescaled",
    "log_q_trajectory",
    "log_p_trajectory",
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


def vb_term_scale(num_timesteps: int, loss_type: str = "rescaled_mse", *, dps: int = KL_DPS) -> mpf:
    """improved-diffusion's factor on the VLB term: T/1000 (rescaled_mse), T (rescaled_kl), else 1."""
    with mpmath.workdps(dps):
        n = mpf(int(num_timesteps))
        return {"rescaled_mse": n / 1000, "rescaled_kl": n}.get(loss_type, mpf(1))


def l_hybrid_rescaled(eps: ArrayLike, eps_pred: ArrayLike, vb_term_bpd: ArrayLike, num_timesteps: int,
                      *, dps: int = KL_DPS) -> list[mpf]:
    r"""Per sample: :math:`\frac1D\sum_d(\epsilon-\epsilon_\theta)^2 + \frac{T}{1000}L_t` (improved-diffusion's RESCALED_MSE)."""
    e = np.asarray(eps, dtype=np.float64)
    batch = e.shape[0]
    e = e.reshape(batch, -1)
    p = np.asarray(eps_pred, dtype=np.float64).reshape(batch, -1)
    v = np.broadcast_to(np.asarray(vb_term_bpd, dtype=np.float64), (batch,))
    with mpmath.workdps(dps):
        scale = mpf(int(num_timesteps)) / 1000
        return [sum((mpf(float(a)) - mpf(float(c))) ** 2 for a, c in zip(e[b], p[b])) / e.shape[1]
                + scale * mpf(float(v[b])) for b in range(batch)]


def _log_normal(x: mpf, mean: mpf, var: mpf) -> mpf:
    return -(mpmath.log(2 * mpmath.pi * var) + (x - mean) ** 2 / var) / 2


def log_q_trajectory(x0: ArrayLike, x_ts: ArrayLike, betas: ArrayLike, *, dps: int = KL_DPS) -> list[mpf]:
    r""":math:`\sum_t \log\mathcal N(x_t; \sqrt{1-\beta_t}x_{t-1}, \beta_t)` per sample (Ho et al. 2020, eq. 2), literally."""
    xs = np.asarray(x_ts, dtype=np.float64)
    n, batch = xs.shape[0], xs.shape[1]
    xs = xs.reshape(n, batch, -1)
    start = np.asarray(x0, dtype=np.float64).reshape(batch, -1)
    bs = np.asarray(betas, dtype=np.float64)
    with mpmath.workdps(dps):
        out = []
        for b in range(batch):
            total = mpf(0)
            for t in range(n):
                beta = mpf(float(bs[t]))
                prev = start[b] if t == 0 else xs[t - 1, b]
                total += sum(_log_normal(mpf(float(x)), mpmath.sqrt(1 - beta) * mpf(float(p)), beta)
                             for x, p in zip(xs[t, b], prev))
            out.append(total)
        return out


def log_p_trajectory(x0: ArrayLike, x_ts: ArrayLike, model_means: ArrayLike, model_log_variances: ArrayLike,
                     betas: ArrayLike, *, dps: int = KL_DPS) -> list[mpf]:
    r""":math:`\log\mathcal N(x_T;0,1) + \sum_{t\ge2}\log\mathcal N(x_{t-1};\mu_\theta,e^{\ell}) + \log p(x_0|x_1)` per sample."""
    xs = np.asarray(x_ts, dtype=np.float64)
    n, batch = xs.shape[0], xs.shape[1]
    xs = xs.reshape(n, batch, -1)
    mm = np.asarray(model_means, dtype=np.float64).reshape(n, batch, -1)
    lv = np.asarray(model_log_variances, dtype=np.float64)
    lv = np.broadcast_to(lv.reshape((n,) + (1,) * (np.ndim(x_ts) - 1)) if lv.ndim == 1 else lv, np.shape(x_ts))
    lv = lv.reshape(n, batch, -1)
    start = np.asarray(x0, dtype=np.float64).reshape(batch, -1)
    with mpmath.workdps(dps):
        out = []
        for b in range(batch):
            total = sum(_log_normal(mpf(float(x)), mpf(0), mpf(1)) for x in xs[n - 1, b])
            for t in range(1, n):
                total += sum(_log_normal(mpf(float(x)), mpf(float(m)), mpmath.exp(mpf(float(v))))
                             for x, m, v in zip(xs[t - 1, b], mm[t, b], lv[t, b]))
            total += sum(_log_bin_probability(grid_index(float(x)), float(m), float(v) / 2)
                         for x, m, v in zip(start[b], mm[0, b], lv[0, b]))
            out.append(total)
        return out
