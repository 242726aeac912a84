r"""mpmath twin of :mod:`ddspec.reference.parameterisation`: ε ↔ x̂₀ ↔ v ↔ score, and μ_θ from ε.

Every conversion is the forward marginal :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`
(Ho et al. 2020, eq. 4) solved for one unknown, or the v-target of Salimans & Ho 2022, §4, or the
reverse mean of Ho et al. 2020, eq. 11, each written literally at ``dps`` digits with the twin's ᾱ.
Arrays are flattened; results are ``list[mpf]``. Index convention: 0-based ``t`` in [0, T-1].
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf
from numpy.typing import ArrayLike

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar_at

__all__ = [
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "v_from_x0_eps",
    "predict_x0_from_v",
    "predict_eps_from_v",
    "score_from_eps",
    "eps_from_score",
    "ddpm_mean_from_eps",
]


def _roots(betas: ArrayLike, t: int, dps: int) -> tuple[mpf, mpf]:
    ab = alpha_bar_at(betas, t, dps=dps)
    return mpmath.sqrt(ab), mpmath.sqrt(1 - ab)


def predict_x0_from_eps(x_t: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}` (Ho et al. 2020, eq. 4/15)."""
    with mpmath.workdps(dps):
        sa, s1 = _roots(betas, t, dps)
        return [(x - s1 * e) / sa for x, e in zip(mpf_list(x_t), mpf_list(eps))]


def predict_eps_from_x0(x_t: ArrayLike, x0: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\epsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0)/\sqrt{1-\bar\alpha_t}` (Ho et al. 2020, eq. 4)."""
    with mpmath.workdps(dps):
        sa, s1 = _roots(betas, t, dps)
        return [(x - sa * y) / s1 for x, y in zip(mpf_list(x_t), mpf_list(x0))]


def v_from_x0_eps(x0: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0` (Salimans & Ho 2022, §4)."""
    with mpmath.workdps(dps):
        sa, s1 = _roots(betas, t, dps)
        return [sa * e - s1 * x for x, e in zip(mpf_list(x0), mpf_list(eps))]


def predict_x0_from_v(x_t: ArrayLike, v: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v` (Salimans & Ho 2022, §4)."""
    with mpmath.workdps(dps):
        sa, s1 = _roots(betas, t, dps)
        return [sa * x - s1 * w for x, w in zip(mpf_list(x_t), mpf_list(v))]


def predict_eps_from_v(x_t: ArrayLike, v: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\hat\epsilon = \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,v` (Salimans & Ho 2022, §4)."""
    with mpmath.workdps(dps):
        sa, s1 = _roots(betas, t, dps)
        return [s1 * x + sa * w for x, w in zip(mpf_list(x_t), mpf_list(v))]


def score_from_eps(eps: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\nabla_{x_t}\log q(x_t) = -\epsilon/\sqrt{1-\bar\alpha_t}` (Song et al. 2021, score SDE, eq. 4)."""
    with mpmath.workdps(dps):
        _, s1 = _roots(betas, t, dps)
        return [-e / s1 for e in mpf_list(eps)]


def eps_from_score(score: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\epsilon = -\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}\log q(x_t)`."""
    with mpmath.workdps(dps):
        _, s1 = _roots(betas, t, dps)
        return [-s1 * g for g in mpf_list(score)]


def ddpm_mean_from_eps(x_t: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike, *, dps: int = DEFAULT_DPS) -> list[mpf]:
    r""":math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon\big)` (Ho et al. 2020, eq. 11)."""
    with mpmath.workdps(dps):
        beta = mpf(float(np.asarray(betas, dtype=np.float64)[t]))
        _, s1 = _roots(betas, t, dps)
        return [(x - beta / s1 * e) / mpmath.sqrt(1 - beta) for x, e in zip(mpf_list(x_t), mpf_list(eps))]
