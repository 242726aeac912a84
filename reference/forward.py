r"""The forward (noising) process of DDPM: one step, the marginal, the transition, and a sample.

Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", eq. 2 (one step of the Markov
chain) and eq. 4 (its closed-form marginal):

.. math::

    q(x_t \mid x_{t-1}) = \mathcal{N}\big(x_t;\ \sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big),\qquad
    q(x_t \mid x_0) = \mathcal{N}\big(x_t;\ \sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big).

Composing the chain between any two times gives the transition of Kingma et al. 2021 (Variational
Diffusion Models), eq. 21, with :math:`\alpha_{t|s}^2 = \bar\alpha_t/\bar\alpha_s`:

.. math::

    q(x_t \mid x_s) = \mathcal{N}\Big(x_t;\ \sqrt{\bar\alpha_t/\bar\alpha_s}\,x_s,\
        \big(1-\bar\alpha_t/\bar\alpha_s\big) I\Big),\qquad s < t.

Index convention (``docs/conventions.md``): ``t`` is the 0-based index, the papers' t + 1, in
``[0, T-1]``; index ``-1`` is the clean data x₀ (ᾱ = 1). So ``q_step(x_prev, 0, betas)`` noises the
data once, and ``q_transition(x, t, -1, betas)`` is ``q_marginal(x, t, betas)``.

Accuracy: every coefficient comes from the double-double tables of :mod:`~ddspec.reference.alphas`
(ᾱ, 1 − ᾱ and the ratio forms without cancellation), rounded once and square-rooted once, so each
is within about 1 ULP of its exact value for the given β; a textbook ``1 - alpha_bar_t/alpha_bar_s``
would lose up to ~1/β ULP.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .alphas import alpha_bar_ratio, one_minus_alpha_bar, one_minus_alpha_bar_ratio, sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from .validation import as_array, as_betas, as_int, as_timestep, check_same_shape
from .gaussian import Gaussian

__all__ = ["q_step", "q_marginal", "q_transition", "q_sample"]

Array = NDArray[np.float64]


def _sqrt_one_minus(beta: float) -> float:
    r""":math:`\sqrt{1-\beta}` with 1 − β carried exactly (Fast2Sum) and one double-double square root."""
    h = 1.0 - beta
    low = -beta - (h - 1.0)
    rh, rl = _dd.dd_sqrt(h, low)
    return float(rh + rl)


def q_step(x_prev: ArrayLike, t: int, betas: ArrayLike) -> Gaussian:
    r"""One step of the forward Markov chain, :math:`q(x_t \mid x_{t-1})` (Ho et al. 2020, eq. 2).

    .. math:: q(x_t \mid x_{t-1}) = \mathcal{N}\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big)

    Index convention: ``t`` is the 0-based index of the state produced; ``x_prev`` is the state at
    index ``t - 1``, which for ``t = 0`` is the data x₀. The variance is ``betas[t]`` exactly and the
    mean coefficient :math:`\sqrt{1-\beta_t}` is computed from the exact 1 − β (one rounding).
    With a last β of 1 the last step forgets x_prev entirely (mean 0, variance 1).
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    x = as_array(x_prev, "x_prev")
    beta = float(b[tt])
    return Gaussian(_sqrt_one_minus(beta) * x, np.float64(beta))


def q_marginal(x0: ArrayLike, t: int, betas: ArrayLike) -> Gaussian:
    r"""The forward marginal :math:`q(x_t \mid x_0)` (Ho et al. 2020, eq. 4).

    .. math:: q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I\big),\qquad
              \bar\alpha_t = \prod_{s=1}^{t}(1-\beta_s)

    Index convention: ``t`` is the 0-based index in ``[0, T-1]`` (``t = 0`` is one step of noise,
    where the variance is ``betas[0]`` exactly). :math:`\sqrt{\bar\alpha_t}` and
    :math:`1-\bar\alpha_t` are the accurate tables of :mod:`~ddspec.reference.alphas`.
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    x = as_array(x0, "x0")
    return Gaussian(float(sqrt_alpha_bar(b)[tt]) * x, np.float64(one_minus_alpha_bar(b)[tt]))


def q_transition(x_s: ArrayLike, t: int, s: int, betas: ArrayLike) -> Gaussian:
    r"""The forward transition between two times, :math:`q(x_t \mid x_s)` for ``-1 <= s < t``.

    .. math:: q(x_t \mid x_s) = \mathcal{N}\Big(\sqrt{\bar\alpha_t/\bar\alpha_s}\,x_s,\
              \big(1-\bar\alpha_t/\bar\alpha_s\big) I\Big),\qquad
              \frac{\bar\alpha_t}{\bar\alpha_s} = \prod_{r=s+1}^{t}(1-\beta_r)

    Source: Kingma et al. 2021, eq. 21 (:math:`\alpha_{t|s}^2 = \bar\alpha_t/\bar\alpha_s`,
    :math:`\sigma_{t|s}^2 = 1-\bar\alpha_t/\bar\alpha_s`); equivalently the chain of Ho et al. 2020,
    eq. 2 composed from s to t. Index convention: 0-based ``t`` and ``s``; ``s = t - 1`` is
    :func:`q_step` and ``s = -1`` (the data) is :func:`q_marginal`. The ratio and 1 − ratio come from
    :func:`~ddspec.reference.alphas.alpha_bar_ratio` and
    :func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio` (no cancellation).
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    ss = as_int(s, "s", low=-1, high=tt - 1)
    x = as_array(x_s, "x_s")
    keep = float(alpha_bar_ratio(b, tt, ss))
    variance = float(one_minus_alpha_bar_ratio(b, tt, ss))
    return Gaussian(np.sqrt(keep) * x, np.float64(variance))


def q_sample(x0: ArrayLike, t: int, noise: ArrayLike, betas: ArrayLike) -> Array:
    r"""A draw from :math:`q(x_t \mid x_0)` with the given standard-normal ``noise`` (Ho et al. 2020, eq. 4).

    .. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad \epsilon \sim \mathcal{N}(0, I)

    This is the reparameterisation used in training (Ho et al. 2020, Algorithm 1 and eq. 12). The
    reference is deterministic: ``noise`` is ε, and must have exactly the shape of ``x0`` (no
    broadcasting). Index convention: ``t`` is the 0-based index in ``[0, T-1]``.
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    x = as_array(x0, "x0")
    eps = as_array(noise, "noise")
    check_same_shape(x0=x, noise=eps)
    return float(sqrt_alpha_bar(b)[tt]) * x + float(sqrt_one_minus_alpha_bar(b)[tt]) * eps
