r"""Parameterisations of the denoiser output: ε ↔ x̂₀ ↔ v ↔ score, and μ_θ from ε.

All follow from the forward marginal :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`
(Ho et al. 2020, eq. 4). Index convention: ``t`` is the 0-based index (the papers' t + 1), in [0, T-1].
Shapes: the two array arguments must have the same shape.

Singularities: at ᾱ_t = 0 (a zero-terminal-SNR schedule's last step) x_t carries no signal, so x̂₀ from
ε is undefined; those functions raise :class:`SingularError` instead of returning inf/NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .alphas import sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from .validation import SingularError, as_array, as_betas, as_timestep, check_finite_result, check_same_shape, fail
from . import vocabulary as _vocabulary

__all__ = [
    "PREDICTION_TYPES",
    "Prediction",
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "v_from_x0_eps",
    "predict_x0_from_v",
    "predict_eps_from_v",
    "score_from_eps",
    "eps_from_score",
    "ddpm_mean_from_eps",
    "split_prediction",
]

Array = NDArray[np.float64]
PREDICTION_TYPES = _vocabulary.PREDICTION_TYPES


def _pair(a: ArrayLike, a_name: str, b: ArrayLike, b_name: str) -> tuple[Array, Array]:
    aa = as_array(a, a_name)
    bb = as_array(b, b_name)
    check_same_shape(**{a_name: aa, b_name: bb})
    return aa, bb


def _finite(out: Array, what: str) -> Array:
    """The result, or SingularError where finite inputs overflowed float64 (never a silent inf/NaN)."""
    return check_finite_result(out, what, "overflows float64 (the inputs are too large for this conversion)")


def _coefs(betas: ArrayLike, t: int) -> tuple[float, float, int]:
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    return float(sqrt_alpha_bar(b)[tt]), float(sqrt_one_minus_alpha_bar(b)[tt]), tt


def predict_x0_from_eps(x_t: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""x̂₀ from a noise prediction (Ho et al. 2020, eq. 4 solved for x₀; eq. 15).

    .. math:: \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}

    improved-diffusion writes the same as :math:`\sqrt{1/\bar\alpha_t}\,x_t - \sqrt{1/\bar\alpha_t - 1}\,\epsilon`;
    the quotient form is used here because it rounds fewer times. Raises :class:`SingularError` at ᾱ_t = 0.
    """
    xt, e = _pair(x_t, "x_t", eps, "eps")
    sa, s1, tt = _coefs(betas, t)
    if sa == 0.0:
        raise SingularError(f"predict_x0_from_eps: alpha_bar[{tt}] = 0, so x0 cannot be recovered from eps "
                            "(x_t carries no signal); use a v- or x0-prediction at this step")
    with np.errstate(over="ignore", invalid="ignore"):
        out = (xt - s1 * e) / sa
    return _finite(out, "predict_x0_from_eps")


def predict_eps_from_x0(x_t: ArrayLike, x0: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""ε from an x₀ prediction: :math:`\epsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0)/\sqrt{1-\bar\alpha_t}` (Ho et al. 2020, eq. 4).

    Used to re-derive ε from a clipped x̂₀ (DDIM, improved-diffusion). 1 − ᾱ_t > 0 for every valid schedule.
    """
    xt, x = _pair(x_t, "x_t", x0, "x0")
    sa, s1, _ = _coefs(betas, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (xt - sa * x) / s1
    return _finite(out, "predict_eps_from_x0")


def v_from_x0_eps(x0: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""The v-target :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0` (Salimans & Ho 2022, §4)."""
    x, e = _pair(x0, "x0", eps, "eps")
    sa, s1, _ = _coefs(betas, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = sa * e - s1 * x
    return _finite(out, "v_from_x0_eps")


def predict_x0_from_v(x_t: ArrayLike, v: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""x̂₀ from a v-prediction: :math:`\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v` (Salimans & Ho 2022, §4).

    Uses :math:`\bar\alpha_t + (1-\bar\alpha_t) = 1`; defined at ᾱ_t = 0 too.
    """
    xt, vv = _pair(x_t, "x_t", v, "v")
    sa, s1, _ = _coefs(betas, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = sa * xt - s1 * vv
    return _finite(out, "predict_x0_from_v")


def predict_eps_from_v(x_t: ArrayLike, v: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""ε from a v-prediction: :math:`\hat\epsilon = \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,v` (Salimans & Ho 2022, §4)."""
    xt, vv = _pair(x_t, "x_t", v, "v")
    sa, s1, _ = _coefs(betas, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = s1 * xt + sa * vv
    return _finite(out, "predict_eps_from_v")


def score_from_eps(eps: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""Score of the noisy marginal from ε: :math:`\nabla_{x_t}\log q(x_t) = -\epsilon/\sqrt{1-\bar\alpha_t}`.

    Source: Song et al. 2021 (score SDE), eq. 4 and App. B; Dhariwal & Nichol 2021, eq. 11.
    """
    e = as_array(eps, "eps")
    _, s1, _ = _coefs(betas, t)
    with np.errstate(over="ignore", invalid="ignore"):
        out = -e / s1
    return _finite(out, "score_from_eps")


def eps_from_score(score: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""ε from a score: :math:`\epsilon = -\sqrt{1-\bar\alpha_t}\,\nabla_{x_t}\log q(x_t)` (inverse of :func:`score_from_eps`)."""
    s = as_array(score, "score")
    _, s1, _ = _coefs(betas, t)
    return -s1 * s


def ddpm_mean_from_eps(x_t: ArrayLike, eps: ArrayLike, t: int, betas: ArrayLike) -> Array:
    r"""The reverse-process mean from a noise prediction (Ho et al. 2020, eq. 11).

    .. math:: \mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big)

    Equal to the posterior mean :math:`\tilde\mu_t(x_t, \hat x_0(x_t, \epsilon))` (eq. 7 with eq. 15),
    which is what the property suite proves. Defined at ᾱ_t = 0 too (it never divides by ᾱ_t).
    """
    xt, e = _pair(x_t, "x_t", eps, "eps")
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    s1 = float(sqrt_one_minus_alpha_bar(b)[tt])
    beta = float(b[tt])
    if beta >= 1.0:
        raise SingularError(f"ddpm_mean_from_eps: betas[{tt}] = 1, so alpha_t = 0 and 1/sqrt(alpha_t) is infinite")
    with np.errstate(over="ignore", invalid="ignore"):
        out = (xt - (beta / s1) * e) / np.sqrt(1.0 - beta)
    return _finite(out, "ddpm_mean_from_eps")


@dataclass(frozen=True)
class Prediction:
    """A model output converted to both x̂₀ and ε̂ (the two forms every step needs)."""

    x0: Array
    eps: Array


def split_prediction(model_output: ArrayLike, x_t: ArrayLike, t: int, betas: ArrayLike, prediction_type: str) -> Prediction:
    r"""Convert a model output of ``prediction_type`` to (x̂₀, ε̂) consistent with x_t.

    ``"epsilon"``: ε̂ = output, x̂₀ by :func:`predict_x0_from_eps`; ``"sample"``: x̂₀ = output, ε̂ by
    :func:`predict_eps_from_x0`; ``"v_prediction"``: both by Salimans & Ho 2022, §4.
    """
    if prediction_type not in PREDICTION_TYPES:
        fail("prediction_type", prediction_type, f"must be one of {PREDICTION_TYPES}")
    out, xt = _pair(model_output, "model_output", x_t, "x_t")
    if prediction_type == "epsilon":
        return Prediction(predict_x0_from_eps(xt, out, t, betas), out)
    if prediction_type == "sample":
        return Prediction(out, predict_eps_from_x0(xt, out, t, betas))
    return Prediction(predict_x0_from_v(xt, out, t, betas), predict_eps_from_v(xt, out, t, betas))
