r"""mpmath twin of :mod:`ddspec.reference.sampling`: DDPM and DDIM steps from the formulas.

Inputs are float64 values (exact), flattened to lists; results are lists of mpf. Besides the values,
each step returns ``magnitude``: the same expression evaluated with every term replaced by its
absolute value. A float64 evaluation of a sum of products is accurate to a few units of roundoff of
that magnitude (not of the result, which may cancel), so tests bound ``|approx − exact|`` by
``k · 2⁻⁵³ · magnitude`` and, where nothing cancels, in plain ULP.

Formulas: x̂₀ from ε, x₀ or v (Ho et al. 2020, eq. 15; Salimans & Ho 2022, §4); the posterior of the
(respaced) step (Ho et al. 2020, eq. 7); DDIM eq. 12 and σ(η) of eq. 16 (Song et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath

from . import DEFAULT_DPS, mpf_list
from .variances import alpha_bar, reverse_variance, step_beta

__all__ = ["split_prediction", "posterior", "ddpm_step", "ddim_sigma", "generalized_step", "ddim_step"]

MP = mpmath.mpf


def _clip(v: MP, c: float | None) -> MP:
    if c is None:
        return v
    cc = mpmath.mpf(c)
    return max(-cc, min(cc, v))


def split_prediction(
    model_output: Sequence[float], x_t: Sequence[float], t: int, betas: Sequence[float], prediction_type: str
) -> tuple[list[MP], list[MP], list[MP], list[MP]]:
    r"""(x̂₀, ε̂, |x̂₀| magnitude, |ε̂| magnitude) from a model output of ``prediction_type``."""
    with mpmath.workdps(DEFAULT_DPS):
        ab = alpha_bar(betas, t)
        sa, s1 = mpmath.sqrt(ab), mpmath.sqrt(1 - ab)
        out, xt = mpf_list(model_output), mpf_list(x_t)
        x0, eps, mx0, meps = [], [], [], []
        for o, x in zip(out, xt):
            if prediction_type == "epsilon":
                x0.append((x - s1 * o) / sa)
                eps.append(o)
                mx0.append((abs(x) + s1 * abs(o)) / sa)
                meps.append(abs(o))
            elif prediction_type == "sample":
                x0.append(o)
                eps.append((x - sa * o) / s1)
                mx0.append(abs(o))
                meps.append((abs(x) + sa * abs(o)) / s1)
            elif prediction_type == "v_prediction":
                x0.append(sa * x - s1 * o)
                eps.append(s1 * x + sa * o)
                mx0.append(sa * abs(x) + s1 * abs(o))
                meps.append(s1 * abs(x) + sa * abs(o))
            else:
                raise ValueError(f"prediction_type={prediction_type!r}: unknown")
        return x0, eps, mx0, meps


def posterior(betas: Sequence[float], t: int, t_prev: int) -> tuple[MP, MP, MP]:
    r"""(coef_x0, coef_xt, β̃′) of :math:`q(x_{t_\mathrm{prev}} \mid x_t, x_0)` for the (respaced) step.

    .. math:: \frac{\sqrt{\bar\alpha_s}\beta'}{1-\bar\alpha_t},\ \frac{\sqrt{\bar\alpha_t/\bar\alpha_s}(1-\bar\alpha_s)}{1-\bar\alpha_t},\ \frac{(1-\bar\alpha_s)\beta'}{1-\bar\alpha_t}
    """
    with mpmath.workdps(DEFAULT_DPS):
        ab_t, ab_s = alpha_bar(betas, t), alpha_bar(betas, t_prev)
        bp = step_beta(betas, t, t_prev)
        return (
            mpmath.sqrt(ab_s) * bp / (1 - ab_t),
            mpmath.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t),
            (1 - ab_s) * bp / (1 - ab_t),
        )


def ddpm_step(
    model_output: Sequence[float],
    t: int,
    x_t: Sequence[float],
    betas: Sequence[float],
    noise: Sequence[float] | None = None,
    *,
    t_prev: int | None = None,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    model_var_output: Sequence[float] | None = None,
    clip_range: float | None = None,
) -> dict[str, Any]:
    r"""DDPM step: x̂₀ (clipped to ±clip_range if given), μ = c₀x̂₀ + c_t x_t, x_prev = μ + sqrt(Σ)z (z = 0 at t_prev = −1).

    Returns ``prev_sample``, ``pred_x0``, ``mean`` (lists), ``variance`` (mpf or list; 0 at the final
    step) and ``magnitude`` (list, for ``prev_sample``) and ``mean_magnitude``.
    """
    s = t - 1 if t_prev is None else t_prev
    with mpmath.workdps(DEFAULT_DPS):
        x0, _, mx0, _ = split_prediction(model_output, x_t, t, betas, prediction_type)
        x0 = [_clip(v, clip_range) for v in x0]
        c0, c1, _ = posterior(betas, t, s)
        xt = mpf_list(x_t)
        mean = [c0 * a + c1 * x for a, x in zip(x0, xt)]
        mmean = [c0 * a + c1 * abs(x) for a, x in zip(mx0, xt)]
        n = len(xt)
        if s == -1:
            return {"prev_sample": mean, "pred_x0": x0, "mean": mean, "variance": mpmath.mpf(0),
                    "magnitude": mmean, "mean_magnitude": mmean}
        var, _ = reverse_variance(betas, t, variance_type, t_prev=s, model_var_output=model_var_output)
        vars_ = var if isinstance(var, list) else [var] * n
        z = mpf_list(noise)
        prev = [m + mpmath.sqrt(v) * zz for m, v, zz in zip(mean, vars_, z)]
        mag = [m + mpmath.sqrt(v) * abs(zz) for m, v, zz in zip(mmean, vars_, z)]
        return {"prev_sample": prev, "pred_x0": x0, "mean": mean, "variance": var,
                "magnitude": mag, "mean_magnitude": mmean}


def ddim_sigma(betas: Sequence[float], t: int, t_prev: int, eta: float) -> MP:
    r"""σ_t(η) = η sqrt((1 − ᾱ_s)/(1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_s) (DDIM eq. 16)."""
    with mpmath.workdps(DEFAULT_DPS):
        ab_t, ab_s = alpha_bar(betas, t), alpha_bar(betas, t_prev)
        return mpmath.mpf(eta) * mpmath.sqrt((1 - ab_s) / (1 - ab_t)) * mpmath.sqrt(1 - ab_t / ab_s)


def generalized_step(
    pred_x0: Sequence[Any],
    pred_eps: Sequence[Any],
    t: int,
    t_prev: int,
    sigma: Any,
    betas: Sequence[float],
    noise: Sequence[float] | None = None,
) -> list[MP]:
    r"""DDIM eq. 12: sqrt(ᾱ_s) x̂₀ + sqrt(1 − ᾱ_s − σ²) ε̂ + σ z (x̂₀, ε̂, σ may be mpf)."""
    with mpmath.workdps(DEFAULT_DPS):
        ab_s = alpha_bar(betas, t_prev)
        sg = mpmath.mpf(sigma)
        ca, ce = mpmath.sqrt(ab_s), mpmath.sqrt(1 - ab_s - sg * sg)
        zs = mpf_list(noise) if noise is not None else [mpmath.mpf(0)] * len(pred_x0)
        return [ca * mpmath.mpf(a) + ce * mpmath.mpf(e) + sg * z for a, e, z in zip(pred_x0, pred_eps, zs)]


def ddim_step(
    model_output: Sequence[float],
    t: int,
    t_prev: int,
    x_t: Sequence[float],
    betas: Sequence[float],
    *,
    eta: float = 0.0,
    noise: Sequence[float] | None = None,
    prediction_type: str = "epsilon",
    clip_range: float | None = None,
    use_clipped_model_output: bool = False,
    sigma: float | None = None,
) -> dict[str, Any]:
    r"""DDIM step with σ(η): x̂₀ (clipped if asked), ε̂ raw or re-derived from the clipped x̂₀, then eq. 12.

    ``sigma``, if given, replaces σ(η) (e.g. the float64 σ a float64 step used, taken as exact).

    Returns ``prev_sample``, ``pred_x0``, ``pred_eps``, ``mean`` (lists), ``variance`` (σ², mpf) and
    ``magnitude`` (list).
    """
    with mpmath.workdps(DEFAULT_DPS):
        x0, eps, mx0, meps = split_prediction(model_output, x_t, t, betas, prediction_type)
        x0 = [_clip(v, clip_range) for v in x0]
        ab_t = alpha_bar(betas, t)
        if use_clipped_model_output:
            sa, s1 = mpmath.sqrt(ab_t), mpmath.sqrt(1 - ab_t)
            xt = mpf_list(x_t)
            eps = [(x - sa * a) / s1 for x, a in zip(xt, x0)]
            meps = [(abs(x) + sa * m) / s1 for x, m in zip(xt, mx0)]
        sg = ddim_sigma(betas, t, t_prev, eta) if sigma is None else mpmath.mpf(sigma)
        ab_s = alpha_bar(betas, t_prev)
        ca, ce = mpmath.sqrt(ab_s), mpmath.sqrt(1 - ab_s - sg * sg)
        mean = [ca * a + ce * e for a, e in zip(x0, eps)]
        mag = [ca * a + ce * e for a, e in zip(mx0, meps)]
        zs = mpf_list(noise) if noise is not None else [mpmath.mpf(0)] * len(mean)
        prev = [m + sg * z for m, z in zip(mean, zs)]
        mag = [m + sg * abs(z) for m, z in zip(mag, zs)]
        return {"prev_sample": prev, "pred_x0": x0, "pred_eps": eps, "mean": mean, "variance": sg * sg,
                "magnitude": mag}
