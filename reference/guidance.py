r"""Guidance: classifier guidance (Dhariwal & Nichol 2021) and classifier-free guidance (Ho & Salimans 2022).

Classifier guidance shifts the reverse step by the gradient of a classifier's log-likelihood
:math:`\nabla_{x_t}\log p_\phi(y \mid x_t)`, either in the mean (ancestral sampling, Algorithm 1) or in
ε (DDIM and any ε-based sampler, Algorithm 2). Classifier-free guidance extrapolates from the
unconditional towards the conditional noise prediction of one jointly trained model.

Index convention (``docs/conventions.md``): ``t`` is the 0-based index (the papers' t + 1).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .validation import as_array, as_betas, as_scalar, as_timestep, check_finite_result, check_same_shape, fail
from .alphas import sqrt_one_minus_alpha_bar

__all__ = ["classifier_guided_mean", "classifier_guided_eps", "classifier_free_guidance"]

Array = NDArray[np.float64]


def _finite_or_plain(dd_result: Array, plain: Array, what: str) -> Array:
    """The double-double result; where its error-free splitting overflowed (|values| ≳ 1e299), the plain
    float64 expression; a result that is itself out of range raises (never a silent inf/NaN)."""
    out = np.where(np.isfinite(dd_result), dd_result, plain)
    return np.asarray(check_finite_result(out, what, "the guided value overflows float64"), dtype=np.float64)


def classifier_guided_mean(mean: ArrayLike, variance: ArrayLike, grad_log_p_y: ArrayLike, scale: float) -> Array:
    r"""The classifier-guided reverse-process mean (Dhariwal & Nichol 2021, Algorithm 1).

    .. math:: \mu_\mathrm{guided} = \mu + s\,\Sigma\,\nabla_{x_t}\log p_\phi(y \mid x_t)

    ``mean`` and ``grad_log_p_y`` have the same shape; ``variance`` (Σ, ≥ 0; diagonal) is a scalar or
    broadcasts against the mean; ``scale`` is the guidance scale s (s = 0: unguided). The variance of
    the step is unchanged (Algorithm 1 samples from :math:`\mathcal N(\mu_\mathrm{guided}, \Sigma)`).

    Accuracy: the product and the sum are carried in double-double and rounded once, so the error is
    at most half an ULP of the result plus about 2⁻¹⁰⁴ of :math:`|s\,\Sigma\,\nabla|` (the inputs are exact).
    """
    mu = as_array(mean, "mean")
    g = as_array(grad_log_p_y, "grad_log_p_y")
    check_same_shape(mean=mu, grad_log_p_y=g)
    var = as_array(variance, "variance")
    if np.any(var < 0):
        fail("variance", variance, "must be >= 0")
    try:
        np.broadcast_shapes(var.shape, mu.shape)
    except ValueError:
        fail("variance", variance, f"shape {var.shape} does not broadcast with mean's shape {mu.shape}")
    s = as_scalar(scale, "scale")
    with np.errstate(over="ignore", invalid="ignore"):
        ph, pl = _dd.two_prod(s, var)
        qh, ql = _dd.dd_mul(ph, pl, g, np.zeros_like(g))
        rh, rl = _dd.dd_add(mu, np.zeros_like(mu), qh, ql)
        plain = mu + (s * var) * g
    return _finite_or_plain(rh + rl, plain, "classifier_guided_mean")


def classifier_guided_eps(eps: ArrayLike, grad_log_p_y: ArrayLike, t: int, betas: ArrayLike, scale: float) -> Array:
    r"""The classifier-guided noise prediction (Dhariwal & Nichol 2021, Algorithm 2 and eq. 14).

    .. math:: \hat\epsilon = \epsilon_\theta(x_t) - s\,\sqrt{1-\bar\alpha_t}\;\nabla_{x_t}\log p_\phi(y \mid x_t)

    It is the ε of the score of :math:`p(x_t)\,p_\phi(y \mid x_t)^s` (score = −ε/sqrt(1 − ᾱ_t)), so it
    can be used in DDIM and any other ε-based step. ``eps`` and ``grad_log_p_y`` have the same shape;
    ``t`` is the 0-based index; ``scale`` is s (s = 0: unguided).
    """
    e = as_array(eps, "eps")
    g = as_array(grad_log_p_y, "grad_log_p_y")
    check_same_shape(eps=e, grad_log_p_y=g)
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    s = as_scalar(scale, "scale")
    c = float(sqrt_one_minus_alpha_bar(b)[tt])
    with np.errstate(over="ignore", invalid="ignore"):
        out = e - (s * c) * g
    return np.asarray(check_finite_result(out, "classifier_guided_eps", "the guided value overflows float64"))


def classifier_free_guidance(eps_uncond: ArrayLike, eps_cond: ArrayLike, scale: float) -> Array:
    r"""Classifier-free guidance of the noise prediction (Ho & Salimans 2022, eq. 6).

    .. math:: \tilde\epsilon = \epsilon_u + s\,(\epsilon_c - \epsilon_u) = (1 + w)\,\epsilon_c - w\,\epsilon_u,\qquad s = 1 + w

    Convention: ``scale`` is diffusers' ``guidance_scale`` s (also Stable Diffusion's and GLIDE's),
    which is the paper's guidance strength w plus one: s = 1 (w = 0) returns the conditional
    prediction, s = 0 (w = −1) the unconditional one, and s > 1 extrapolates beyond the conditional.

    Accuracy: evaluated in double-double and rounded once, so s = 0 and s = 1 return ``eps_uncond``
    and ``eps_cond`` exactly, and for every other s the error is at most half an ULP of the result
    plus about 2⁻¹⁰⁴ of :math:`|s(\epsilon_c - \epsilon_u)|`.
    """
    eu = as_array(eps_uncond, "eps_uncond")
    ec = as_array(eps_cond, "eps_cond")
    check_same_shape(eps_uncond=eu, eps_cond=ec)
    s = as_scalar(scale, "scale")
    with np.errstate(over="ignore", invalid="ignore"):
        dh, dl = _dd.two_sum(ec, -eu)
        ph, pl = _dd.dd_mul(np.full_like(dh, s), np.zeros_like(dh), dh, dl)
        rh, rl = _dd.dd_add(eu, np.zeros_like(eu), ph, pl)
        plain = eu + s * (ec - eu)
    return _finite_or_plain(rh + rl, plain, "classifier_free_guidance")
