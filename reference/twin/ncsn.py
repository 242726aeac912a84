r"""mpmath twin of :mod:`ddspec.reference.ncsn` (Song & Ermon 2019), written from the formulas.

* σ_i = σ_1 (σ_L/σ_1)^{(i−1)/(L−1)} (§4.1), as an mpmath power;
* Algorithm 1 literally, at ``dps`` digits, with :math:`\alpha_i = \epsilon\sigma_i^2/\sigma_L^2`;
* ½‖s + (x̃ − x)/σ²‖² per sample (eq. 5) and the σ^p-weighted batch mean (eq. 6).

Arrays are passed to the score function as NumPy object arrays of ``mpmath.mpf`` (so a score written
with ordinary arithmetic, such as ``-(x - m) / (v + sigma**2)``, runs at the twin's precision), and the
noise level as an ``mpf``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS

__all__ = ["geometric_sigmas", "annealed_langevin_dynamics", "dsm_loss_per_sample", "annealed_dsm_loss"]


def _obj(values: ArrayLike) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    return np.vectorize(lambda v: mpf(float(v)), otypes=[object])(a) if a.size else a.astype(object)


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\sigma_i = \sigma_1 (\sigma_L/\sigma_1)^{(i-1)/(L-1)}`, i = 1..L."""
    with mpmath.workdps(dps):
        s1, sl = mpf(sigma_max), mpf(sigma_min)
        n = int(num_levels)
        return [s1 * (sl / s1) ** (mpf(i) / (n - 1)) for i in range(n)]


def annealed_langevin_dynamics(
    score_fn: Callable[[Any, Any], Any], x_init: ArrayLike, sigmas: ArrayLike, epsilon: float, noises: ArrayLike,
    *, dps: int = DEFAULT_DPS,
) -> list[mpf]:
    """Algorithm 1 at ``dps`` digits; returns the final iterate, flattened."""
    with mpmath.workdps(dps):
        x = _obj(x_init)
        levels = [mpf(float(s)) for s in np.asarray(sigmas, dtype=np.float64).ravel()]
        z = _obj(noises)
        eps = mpf(epsilon)
        for i, sigma in enumerate(levels):
            alpha = eps * sigma**2 / levels[-1] ** 2
            for k in range(z.shape[1]):
                s = np.asarray(score_fn(x, sigma), dtype=object)
                x = x + alpha / 2 * s + mpmath.sqrt(alpha) * z[i, k]
        return [mpf(v) for v in x.ravel()]


def dsm_loss_per_sample(score: ArrayLike, x: ArrayLike, x_noisy: ArrayLike, sigma: ArrayLike,
                        *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r"""½‖s_b + (x̃_b − x_b)/σ_b²‖² for each sample b (batch first)."""
    s = np.asarray(score, dtype=np.float64)
    batch = s.shape[0]
    s = s.reshape(batch, -1)
    xx = np.asarray(x, dtype=np.float64).reshape(batch, -1)
    xn = np.asarray(x_noisy, dtype=np.float64).reshape(batch, -1)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (batch,))
    with mpmath.workdps(dps):
        out = []
        for b in range(batch):
            var = mpf(float(sig[b])) ** 2
            out.append(sum((mpf(float(p)) + (mpf(float(q)) - mpf(float(r))) / var) ** 2
                           for p, q, r in zip(s[b], xn[b], xx[b])) / 2)
        return out


def annealed_dsm_loss(score: ArrayLike, x: ArrayLike, x_noisy: ArrayLike, sigma: ArrayLike,
                      *, weight_power: float = 2.0, dps: int = DEFAULT_DPS) -> mpf:
    r""":math:`\frac1B\sum_b \sigma_b^p\,\ell_b`."""
    per = dsm_loss_per_sample(score, x, x_noisy, sigma, dps=dps)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(per),))
    with mpmath.workdps(dps):
        return sum(mpf(float(s)) ** mpf(weight_power) * v for s, v in zip(sig, per)) / len(per)
