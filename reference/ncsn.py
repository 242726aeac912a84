r"""Noise-conditional score networks (NCSN): the σ ladder, annealed Langevin dynamics and the DSM loss.

Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution":

* the noise levels are a geometric sequence :math:`\sigma_1 > \sigma_2 > \dots > \sigma_L`,
  :math:`\sigma_{i+1}/\sigma_i` constant (§4.1; §5: σ_1 = 1, σ_10 = 0.01, L = 10);
* the denoising score-matching loss at one level (eq. 5, from eq. 2 with
  :math:`q_\sigma(\tilde x \mid x) = \mathcal N(\tilde x; x, \sigma^2 I)`),

  .. math::

      \ell(\theta;\sigma) = \tfrac12\,\mathbb E_{p(x)}\mathbb E_{\tilde x\sim\mathcal N(x,\sigma^2I)}
          \Big\|s_\theta(\tilde x,\sigma) + \frac{\tilde x - x}{\sigma^2}\Big\|_2^2,

  and the unified objective over the levels (eq. 6) with :math:`\lambda(\sigma) = \sigma^2` (§4.2),
  :math:`\mathcal L(\theta;\{\sigma_i\}) = \frac1L\sum_i \lambda(\sigma_i)\,\ell(\theta;\sigma_i)`;
* annealed Langevin dynamics (Algorithm 1), for each level T steps of
  :math:`\tilde x_t = \tilde x_{t-1} + \frac{\alpha_i}{2} s_\theta(\tilde x_{t-1},\sigma_i) + \sqrt{\alpha_i}\,z_t`
  with :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`. The single update and the step size are
  :mod:`ddspec.reference.langevin`; this module runs the whole loop with the noise given as an
  argument, so that it is deterministic.

Index convention: levels are 0-based here (``sigmas[0]`` is the paper's σ_1, the largest); a
Langevin step inside a level is 0-based too (``noises[i, k]`` is the paper's z_{k+1} at level i + 1).
NCSN has no diffusion timestep, so ᾱ does not appear (docs/conventions.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import langevin
from .validation import as_array, as_int, as_scalar, check_finite_result, check_same_shape, fail

__all__ = ["geometric_sigmas", "annealed_langevin_dynamics", "dsm_loss_per_sample", "annealed_dsm_loss"]

Array = NDArray[np.float64]

ScoreFn = Callable[[Array, float], ArrayLike]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> Array:
    r"""The NCSN noise levels: a geometric sequence from σ_1 = ``sigma_max`` down to σ_L = ``sigma_min``.

    .. math:: \sigma_i = \sigma_1\Big(\frac{\sigma_L}{\sigma_1}\Big)^{(i-1)/(L-1)},\qquad i = 1, \dots, L

    Source: Song & Ermon 2019, §4.1 ("a positive geometric sequence that satisfies
    σ_1/σ_2 = ··· = σ_{L−1}/σ_L > 1") and §5 (σ_1 = 1, σ_L = 0.01, L = 10). Returned 0-based,
    largest first (``out[0]`` is σ_1).

    Requires ``sigma_max > sigma_min > 0`` and ``num_levels >= 2``. The two ends are returned exactly
    as given; each interior level is :math:`\sigma_1\exp(\tfrac{i-1}{L-1}\log(\sigma_L/\sigma_1))`,
    within :math:`(2 + 2\rho)` ULP of the exact power, :math:`\rho = |\log(\sigma_L/\sigma_1)|` (the
    absolute error of the exponent, ≤ ρu twice over, becomes a relative error of the result):
    about 11 ULP for Song & Ermon's σ_1/σ_L = 100, 19 ULP for a ladder 50 → 0.01.
    """
    hi = as_scalar(sigma_max, "sigma_max", low=0.0, low_open=True)
    lo = as_scalar(sigma_min, "sigma_min", low=0.0, low_open=True)
    n = as_int(num_levels, "num_levels", low=2, high=10**7)
    if not lo < hi:
        fail("sigma_min", sigma_min, f"must be < sigma_max={sigma_max!r} (the ladder decreases)")
    frac = np.arange(n, dtype=np.float64) / (n - 1)
    out = hi * np.exp(frac * np.log(lo / hi))
    out[0], out[-1] = hi, lo
    return out


def _check_sigmas(sigmas: ArrayLike) -> Array:
    s = as_array(sigmas, "sigmas")
    if s.ndim != 1:
        fail("sigmas", sigmas, f"must be 1-D (the noise levels), got shape {s.shape}")
    if np.any(s <= 0.0):
        fail("sigmas", sigmas, "every noise level must be > 0")
    if s.size > 1 and np.any(np.diff(s) >= 0.0):
        fail("sigmas", sigmas, "must be strictly decreasing (σ_1 > σ_2 > … > σ_L)")
    return s


def annealed_langevin_dynamics(
    score_fn: ScoreFn,
    x_init: ArrayLike,
    sigmas: ArrayLike,
    epsilon: float,
    noises: ArrayLike,
) -> Array:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1), deterministic given the noise.

    .. math::

        \text{for } i = 1..L:\quad \alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2;\quad
        \text{for } t = 1..T:\quad \tilde x_t = \tilde x_{t-1} + \frac{\alpha_i}{2}\,s_\theta(\tilde x_{t-1}, \sigma_i)
            + \sqrt{\alpha_i}\,z_t;\quad \tilde x_0 \leftarrow \tilde x_T

    (lines 1–8 of Algorithm 1; ``x_init`` is :math:`\tilde x_0`, drawn by the caller from the prior).
    ``score_fn(x, sigma)`` returns :math:`s_\theta(x, \sigma)` with the shape of x; ``sigmas`` is the
    strictly decreasing ladder (e.g. :func:`geometric_sigmas`); ``epsilon`` > 0 is the base step
    size; ``noises`` has shape (L, T, \*x_init.shape): ``noises[i, k]`` is :math:`z_{k+1}` at level
    i + 1 (0-based, see the module docstring), so T = ``noises.shape[1]`` ≥ 1.

    Returns :math:`\tilde x_T` of the last level. Each update is
    :func:`ddspec.reference.langevin.annealed_langevin_step` with the step size
    :func:`ddspec.reference.langevin.langevin_step_size`; a score that is not finite or has the
    wrong shape is an error naming ``score_fn``.
    """
    if not callable(score_fn):
        fail("score_fn", score_fn, "must be callable as score_fn(x, sigma) -> score with x's shape")
    x = as_array(x_init, "x_init")
    s = _check_sigmas(sigmas)
    e = as_scalar(epsilon, "epsilon", low=0.0, low_open=True)
    z = as_array(noises, "noises")
    if z.ndim < 2 or z.shape[0] != s.size or z.shape[2:] != x.shape or z.shape[1] < 1:
        fail("noises", noises, f"shape {z.shape} must be (L, T, *x_init.shape) = ({s.size}, T >= 1, *{x.shape})")
    sigma_last = float(s[-1])
    for i, sigma in enumerate(s.tolist()):
        alpha = langevin.langevin_step_size(sigma, sigma_last, e)
        for k in range(z.shape[1]):
            out = score_fn(x.copy(), sigma)
            try:
                score = as_array(out, "score_fn")
                check_same_shape(x=x, score_fn=score)
            except ValueError as exc:
                raise ValueError(f"score_fn={score_fn!r}: at level {i}, step {k} it returned a bad score ({exc})") from None
            x = langevin.annealed_langevin_step(x, score, alpha, z[i, k])
    return np.asarray(check_finite_result(x, "annealed_langevin_dynamics", "the iterate overflows float64"))


def _sigma_per_sample(sigma: ArrayLike, batch: int) -> Array:
    s = as_array(sigma, "sigma")
    if s.ndim > 1 or (s.ndim == 1 and s.size != batch):
        fail("sigma", sigma, f"must be a scalar or one level per sample, shape ({batch},)")
    if np.any(s <= 0.0):
        fail("sigma", sigma, "every noise level must be > 0")
    return np.broadcast_to(s, (batch,)).astype(np.float64)


def dsm_loss_per_sample(score: ArrayLike, x: ArrayLike, x_noisy: ArrayLike, sigma: ArrayLike) -> Array:
    r"""The denoising score-matching loss of each sample at its noise level, in squared score units.

    .. math:: \ell_b = \tfrac12\Big\|s_b + \frac{\tilde x_b - x_b}{\sigma_b^2}\Big\|_2^2

    Source: Song & Ermon 2019, eq. 5 (eq. 2 with :math:`\nabla_{\tilde x}\log q_\sigma(\tilde x\mid x)
    = -(\tilde x - x)/\sigma^2`), before the expectation. ``score`` is :math:`s_\theta(\tilde x, \sigma)`;
    ``score``, ``x`` and ``x_noisy`` (:math:`\tilde x`) have the same shape (B, …), batch first; the
    squared norm sums over every axis but the first (the NCSN code's ``.sum(dim=-1)`` over flattened
    samples). ``sigma`` is a scalar or one level per sample, shape (B,), each > 0. Returns shape (B,).
    A 1-D input is a batch of one-dimensional samples.
    """
    s = as_array(score, "score")
    xx = as_array(x, "x")
    xn = as_array(x_noisy, "x_noisy")
    check_same_shape(score=s, x=xx, x_noisy=xn)
    if s.ndim < 1:
        fail("score", score, "needs a batch axis (ndim >= 1)")
    sig = _sigma_per_sample(sigma, s.shape[0])
    var = (sig * sig).reshape((-1,) + (1,) * (s.ndim - 1))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = s + (xn - xx) / var
        out = 0.5 * (r * r).reshape(r.shape[0], -1).sum(axis=1)
    return np.asarray(check_finite_result(out, "dsm_loss_per_sample",
                                          "the residual overflows float64 (sigma too small for |x_noisy - x|)"))


def annealed_dsm_loss(
    score: ArrayLike, x: ArrayLike, x_noisy: ArrayLike, sigma: ArrayLike, *, weight_power: float = 2.0
) -> float:
    r"""The NCSN training loss: the batch mean of :math:`\lambda(\sigma_b)\,\ell_b` with :math:`\lambda(\sigma) = \sigma^{p}`.

    .. math:: \mathcal L = \frac1B\sum_b \sigma_b^{\,p}\;\tfrac12\Big\|s_b + \frac{\tilde x_b - x_b}{\sigma_b^2}\Big\|_2^2

    Source: Song & Ermon 2019, eq. 6 with λ(σ) = σ² (§4.2, p = ``weight_power`` = 2). With the
    level of each sample drawn uniformly from the ladder (as the NCSN code does) this batch mean is the
    unbiased estimate of :math:`\frac1L\sum_i\lambda(\sigma_i)\ell(\theta;\sigma_i)`. With p = 2 and
    :math:`\tilde x = x + \sigma z` each term is :math:`\tfrac12\|\sigma s + z\|^2`, of order one at every
    level (the paper's reason for this λ). Arguments as in :func:`dsm_loss_per_sample`; ``weight_power``
    is finite.
    """
    per = dsm_loss_per_sample(score, x, x_noisy, sigma)
    p = as_scalar(weight_power, "weight_power", low=-8.0, high=8.0)
    sig = _sigma_per_sample(sigma, per.size)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.mean(sig**p * per)
    return float(check_finite_result(np.float64(out), "annealed_dsm_loss", "the weighted loss overflows float64"))
