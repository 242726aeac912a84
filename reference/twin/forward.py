r"""mpmath twin of :mod:`ddspec.reference.forward`: the forward process of Ho et al. 2020 at ``dps`` digits.

.. math::

    q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)\ \text{(eq. 2)},\qquad
    q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)\ \text{(eq. 4)},

    q(x_t \mid x_s) = \mathcal{N}\Big(\sqrt{\textstyle\prod_{r=s+1}^{t}(1-\beta_r)}\,x_s,\
        \big(1-\textstyle\prod_{r=s+1}^{t}(1-\beta_r)\big) I\Big)\ \text{(Kingma et al. 2021, eq. 21)}.

Written from the formulas with the twin's literal products. A Gaussian is returned as the pair
``(mean, variance)``: ``mean`` a ``list[mpf]`` over the flattened input, ``variance`` one ``mpf``.
Index convention: 0-based ``t``; ``s = -1`` is the data (ᾱ = 1).
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar_at, alpha_bar_ratio

__all__ = ["q_step", "q_marginal", "q_transition", "q_sample"]


def q_step(x_prev: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> tuple[list[mpf], mpf]:
    r"""``(mean, variance)`` of :math:`q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)` (eq. 2)."""
    with mpmath.workdps(dps):
        beta = mpf(float(np.asarray(betas, dtype=np.float64)[t]))
        c = mpmath.sqrt(1 - beta)
        return [c * x for x in mpf_list(x_prev)], beta


def q_marginal(x0: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> tuple[list[mpf], mpf]:
    r"""``(mean, variance)`` of :math:`q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)` (eq. 4)."""
    with mpmath.workdps(dps):
        ab = alpha_bar_at(betas, t, dps=dps)
        c = mpmath.sqrt(ab)
        return [c * x for x in mpf_list(x0)], 1 - ab


def q_transition(
    x_s: ArrayLike, t: int, s: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS
) -> tuple[list[mpf], mpf]:
    r"""``(mean, variance)`` of :math:`q(x_t \mid x_s)`, ``-1 <= s < t`` (Kingma et al. 2021, eq. 21)."""
    if not -1 <= s < t:
        raise ValueError(f"s={s}: the twin needs -1 <= s < t={t}")
    with mpmath.workdps(dps):
        keep = alpha_bar_ratio(betas, t, s, dps=dps)
        c = mpmath.sqrt(keep)
        return [c * x for x in mpf_list(x_s)], 1 - keep


def q_sample(x0: ArrayLike, t: int, noise: ArrayLike, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon` (eq. 4 reparameterised), flattened."""
    with mpmath.workdps(dps):
        ab = alpha_bar_at(betas, t, dps=dps)
        a, c = mpmath.sqrt(ab), mpmath.sqrt(1 - ab)
        return [a * x + c * e for x, e in zip(mpf_list(x0), mpf_list(noise))]
