r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

For noise levels :math:`\sigma_1 > \sigma_2 > \dots > \sigma_L`, Song & Ermon sample from a noise-
conditional score network :math:`s_\theta(x, \sigma)` by running T Langevin steps at each level with
step size :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2`:

.. math:: \tilde x_t = \tilde x_{t-1} + \frac{\alpha_i}{2}\, s_\theta(\tilde x_{t-1}, \sigma_i) + \sqrt{\alpha_i}\, z_t,\qquad z_t \sim \mathcal N(0, I).

The score of a DDPM's noisy marginal is :math:`-\epsilon_\theta/\sqrt{1-\bar\alpha_t}`
(:func:`~ddspec.reference.parameterisation.score_from_eps`), which is how a corrector step
(Song et al. 2021, score SDE, predictor–corrector) uses the same update. The noise is an argument.
The whole loop of Algorithm 1, the σ ladder and the NCSN loss are in :mod:`ddspec.reference.ncsn`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, as_scalar, check_finite_result, check_same_shape

__all__ = ["annealed_langevin_step", "langevin_step_size"]

Array = NDArray[np.float64]


def langevin_step_size(sigma_i: float, sigma_L: float, epsilon: float) -> float:
    r"""The step size of noise level i in annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1, line 3).

    .. math:: \alpha_i = \epsilon\cdot\frac{\sigma_i^2}{\sigma_L^2}

    ``sigma_i`` and ``sigma_L`` (the smallest level) are > 0, ``epsilon`` > 0. Evaluated as
    :math:`\epsilon\,(\sigma_i/\sigma_L)^2` (three roundings).
    """
    si = as_scalar(sigma_i, "sigma_i", low=0.0, low_open=True)
    sl = as_scalar(sigma_L, "sigma_L", low=0.0, low_open=True)
    e = as_scalar(epsilon, "epsilon", low=0.0, low_open=True)
    with np.errstate(over="ignore"):
        r = np.float64(si) / np.float64(sl)
        alpha = np.float64(e) * (r * r)
    return float(check_finite_result(np.float64(alpha), "langevin_step_size", "the step size overflows float64"))


def annealed_langevin_step(x: ArrayLike, score: ArrayLike, step_size: float, noise: ArrayLike) -> Array:
    r"""One Langevin update (Song & Ermon 2019, Algorithm 1, line 6).

    .. math:: x' = x + \frac{\alpha}{2}\, s + \sqrt{\alpha}\, z

    ``score`` is :math:`s_\theta(x, \sigma_i)` at the current x, ``step_size`` is α > 0 (see
    :func:`langevin_step_size`), ``noise`` is z; all arrays have the same shape. Accuracy: a few
    units of roundoff of :math:`|x| + \tfrac{\alpha}{2}|s| + \sqrt\alpha|z|`.
    """
    xx = as_array(x, "x")
    s = as_array(score, "score")
    z = as_array(noise, "noise")
    check_same_shape(x=xx, score=s, noise=z)
    a = as_scalar(step_size, "step_size", low=0.0, low_open=True)
    with np.errstate(over="ignore", invalid="ignore"):
        out = xx + (0.5 * a) * s + np.sqrt(a) * z
    return np.asarray(check_finite_result(out, "annealed_langevin_step", "the update overflows float64"))
