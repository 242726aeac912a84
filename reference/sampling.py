r"""Ancestral DDPM and generalised (DDIM) sampling steps, and the sampling loops built from them.

DDPM (Ho et al. 2020, Algorithm 2, eq. 11): from x_t,

.. math::

    x_{t-1} = \tilde\mu_t\big(x_t, \hat x_0(x_t, t)\big) + \sqrt{\Sigma_\theta}\, z,\qquad z \sim \mathcal N(0, I),

where :math:`\tilde\mu_t` is the posterior mean (eq. 7) evaluated at the model's x̂₀ (eq. 15); for an
ε-prediction this equals eq. 11's :math:`\frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta)`,
and the posterior form is what lets x̂₀ be clipped first (the released code, improved-diffusion and
diffusers all do this).

DDIM (Song et al. 2021, eq. 12): from x_t to x_s, s = t_prev,

.. math::

    x_{s} = \sqrt{\bar\alpha_{s}}\,\hat x_0 + \sqrt{1-\bar\alpha_{s}-\sigma^2}\,\hat\epsilon + \sigma z,
    \qquad \sigma = \sigma_t(\eta)\ \text{(eq. 16)} .

Index convention (``docs/conventions.md``): ``t`` is the 0-based index (the papers' t + 1),
``t_prev`` the index the step goes to, ``-1`` the data (ᾱ = 1). A strided step (``t_prev < t - 1``)
uses the respaced schedule (Nichol & Dhariwal 2021, §4). Randomness: every stochastic step takes its
noise ``z`` as an argument; the final step to the data (``t_prev = -1``) adds none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, as_betas, as_int, as_scalar, as_timestep, check_same_shape, fail
from .ddim import ddim_direction_coefficient, ddim_mean_coefficients, ddim_sigma
from .parameterisation import predict_eps_from_x0, split_prediction
from .posterior import posterior_mean
from .thresholding import constrain_x0
from .timesteps import check_subsequence
from .variances import LEARNED_VARIANCE_TYPES, check_model_var_output, reverse_variance

__all__ = [
    "StepResult",
    "SampleTrajectory",
    "ddpm_step",
    "generalized_step",
    "ddim_step",
    "ddim_sample_loop",
    "ddpm_sample_loop",
]

Array = NDArray[np.float64]
ModelFn = Callable[[Array, int], Any]


@dataclass(frozen=True)
class StepResult:
    r"""One reverse step x_t → x_prev.

    * ``prev_sample``: :math:`x_\mathrm{prev} = \mathrm{mean} + \sqrt{\mathrm{variance}}\,z`;
    * ``pred_x0``: the x̂₀ the mean was formed from (after clipping/thresholding, if asked);
    * ``pred_eps``: the ε̂ of the step (see the step function for raw vs re-derived);
    * ``mean``: the step's mean (posterior mean for DDPM, the noise-free part of eq. 12 for DDIM);
    * ``variance``: the variance of the noise actually added: 0 on the final step and for η = 0;
      a 0-d array for fixed variances, elementwise for the learned types.
    """

    prev_sample: Array
    pred_x0: Array
    pred_eps: Array
    mean: Array
    variance: Array


@dataclass(frozen=True)
class SampleTrajectory:
    r"""The states of a sampling (or inversion) run.

    ``samples[k]`` is the state at index ``timesteps[k]``: ``samples[0]`` is the start (x_T for a
    sampler), ``samples[-1]`` the end; shape ``(K + 1, *x.shape)`` for K steps. ``pred_x0s[k]`` is the
    x̂₀ used by step k, shape ``(K, *x.shape)``. ``timesteps`` has K + 1 entries; −1 is the data.
    """

    samples: Array
    pred_x0s: Array
    timesteps: tuple[int, ...]


def _noise_or_none(noise: ArrayLike | None, like: Array, name: str = "noise") -> Array | None:
    if noise is None:
        return None
    z = as_array(noise, name)
    check_same_shape(x_t=like, **{name: z})
    return z


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(name, value, "expected a bool")
    return bool(value)


def ddpm_step(
    model_output: ArrayLike,
    t: int,
    x_t: ArrayLike,
    betas: ArrayLike,
    *,
    noise: ArrayLike | None = None,
    t_prev: int | None = None,
    prediction_type: str = "epsilon",
    variance_type: str = "fixed_small",
    model_var_output: ArrayLike | None = None,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    thresholding: bool = False,
    dynamic_thresholding_ratio: float = 0.995,
    sample_max_value: float = 1.0,
) -> StepResult:
    r"""One ancestral DDPM step from index ``t`` to ``t_prev`` (default ``t - 1``).

    .. math::

        \hat x_0 = \mathrm{constrain}\big(\hat x_0(\text{model\_output}, x_t)\big),\quad
        \mu = \tilde\mu(x_t, \hat x_0) = c_{x_0}\hat x_0 + c_{x_t} x_t,\quad
        x_\mathrm{prev} = \mu + \sqrt{\Sigma_\theta}\, z

    Source: Ho et al. 2020, Algorithm 2 and eq. 11, in the posterior-mean form (eq. 7 at x̂₀, eq. 15);
    for a strided ``t_prev`` the coefficients and β, β̃ are those of the respaced schedule
    (Nichol & Dhariwal 2021, §4), as in improved-diffusion's respacing and diffusers' DDPM with
    ``num_inference_steps``.

    * x̂₀ and ε̂ from the model output by ``prediction_type`` ("epsilon", "sample", "v_prediction";
      :func:`~ddspec.reference.parameterisation.split_prediction`), then x̂₀ is thresholded or clipped
      if asked (:func:`~ddspec.reference.thresholding.constrain_x0`; diffusers' option names, but
      ``clip_sample`` defaults to False here, True in diffusers).
    * The mean is :func:`~ddspec.reference.posterior.posterior_mean` at (x̂₀, x_t).
    * Σ_θ is :func:`~ddspec.reference.variances.reverse_variance` (``variance_type``,
      ``model_var_output`` for the learned types).
    * No noise at the final step (``t_prev = -1``): x_prev = μ, whatever the variance type, as in
      Algorithm 2 (z = 0 for t = 1), improved-diffusion and diffusers (``variance`` is reported 0);
      ``noise`` may be None there. Elsewhere ``noise`` (same shape as x_t) is required.

    ``pred_eps`` is the model's ε̂ as converted from the output (not re-derived from a clipped x̂₀;
    the DDPM mean does not use it). Accuracy: a few units of roundoff of the magnitudes of the terms
    (the sum :math:`|c_{x_0}\hat x_0| + |c_{x_t}x_t| + \sqrt\Sigma|z|`, with x̂₀'s own terms), i.e. a
    few ULP where the terms do not cancel.
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    s = tt - 1 if t_prev is None else as_int(t_prev, "t_prev", low=-1, high=tt - 1)
    xt = as_array(x_t, "x_t")
    pred = split_prediction(model_output, xt, tt, b, prediction_type)
    x0 = constrain_x0(
        pred.x0,
        clip_sample=clip_sample,
        clip_sample_range=clip_sample_range,
        thresholding=thresholding,
        dynamic_thresholding_ratio=dynamic_thresholding_ratio,
        sample_max_value=sample_max_value,
    )
    mean = posterior_mean(x0, xt, tt, b, s)
    m = check_model_var_output(variance_type, model_var_output)
    if m is not None:
        check_same_shape(x_t=xt, model_var_output=m)
    z = _noise_or_none(noise, xt)
    if s == -1:
        return StepResult(mean, x0, pred.eps, mean, np.asarray(0.0))
    var = reverse_variance(b, tt, variance_type, t_prev=s, model_var_output=m).variance
    if z is None:
        fail("noise", noise, f"the step t={tt} -> t_prev={s} has a non-zero variance and needs noise z")
    return StepResult(mean + np.sqrt(var) * z, x0, pred.eps, mean, var)


def _ddim_mean(pred_x0: Array, pred_eps: Array, t: int, t_prev: int, sigma: float, betas: Array) -> Array:
    c_x0, c_eps = ddim_mean_coefficients(betas, t, t_prev, sigma)
    return c_x0 * pred_x0 + c_eps * pred_eps


def generalized_step(
    pred_x0: ArrayLike,
    pred_eps: ArrayLike,
    t: int,
    t_prev: int,
    sigma: float,
    betas: ArrayLike,
    noise: ArrayLike | None = None,
) -> Array:
    r"""The generalised (DDIM) update from index ``t`` to ``t_prev`` for given x̂₀, ε̂ and σ.

    .. math:: x_{s} = \sqrt{\bar\alpha_{s}}\,\hat x_0 + \sqrt{1-\bar\alpha_{s}-\sigma^2}\,\hat\epsilon + \sigma z,\qquad s = t_\mathrm{prev}

    Source: Song et al. 2021 (DDIM), eq. 12 (their α is our ᾱ). ``-1 <= t_prev <= t``: ``-1`` is the
    data (ᾱ = 1), ``t_prev == t`` is diffusers' ``set_alpha_to_one=False`` final step. σ must be
    admissible (σ² ≤ 1 − ᾱ_s; :func:`~ddspec.reference.ddim.ddim_mean_coefficients`), and ``noise``
    is required when σ > 0. η does not appear: any σ works (e.g. :func:`~ddspec.reference.ddim.ddim_sigma`).
    """
    x0 = as_array(pred_x0, "pred_x0")
    eps = as_array(pred_eps, "pred_eps")
    check_same_shape(pred_x0=x0, pred_eps=eps)
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    # t_prev == t only as the ᾱ_0-variant final step 0 -> 0 (diffusers set_alpha_to_one=False)
    s = as_int(t_prev, "t_prev", low=-1, high=tt if tt == 0 else tt - 1)
    sg = as_scalar(sigma, "sigma", low=0.0)
    mean = _ddim_mean(x0, eps, tt, s, sg, b)
    z = _noise_or_none(noise, x0)
    if sg == 0.0:
        return mean
    if z is None:
        fail("noise", noise, f"sigma={sg!r} > 0, so the step needs noise z")
    return mean + sg * z


def ddim_step(
    model_output: ArrayLike,
    t: int,
    t_prev: int,
    x_t: ArrayLike,
    betas: ArrayLike,
    *,
    eta: float = 0.0,
    noise: ArrayLike | None = None,
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    thresholding: bool = False,
    dynamic_thresholding_ratio: float = 0.995,
    sample_max_value: float = 1.0,
    use_clipped_model_output: bool = False,
) -> StepResult:
    r"""One DDIM step from index ``t`` to ``t_prev`` with :math:`\sigma = \sigma_t(\eta)`.

    .. math::

        \sigma = \eta\sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}}\sqrt{1-\tfrac{\bar\alpha_t}{\bar\alpha_s}},\quad
        x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\epsilon + \sigma z

    Source: Song et al. 2021 (DDIM), eqs. 12 and 16; σ from :func:`~ddspec.reference.ddim.ddim_sigma`
    (η = 0: deterministic DDIM; η = 1: the DDPM posterior variance β̃ of the (respaced) step).

    * x̂₀ and ε̂ from ``model_output`` by ``prediction_type``; x̂₀ is thresholded or clipped if asked
      (:func:`~ddspec.reference.thresholding.constrain_x0`).
    * ``use_clipped_model_output``: diffusers' default (False) keeps the model's raw ε̂ in the
      direction term even when x̂₀ was clipped; with True, ε̂ is re-derived from the clipped x̂₀,
      :math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}`, which is what
      improved-diffusion, guided-diffusion and lucidrains always do (``docs/conventions.md``). Without
      clipping the two agree up to rounding.
    * ``-1 <= t_prev <= t``; ``t_prev == t`` is the last step of diffusers' ``set_alpha_to_one=False``
      (ᾱ at index 0, from index 0: σ = 0). ``noise`` (same shape as x_t) is required when σ > 0.

    ``StepResult.mean`` is eq. 12 without σz, ``variance`` is σ², ``pred_eps`` the ε̂ used.
    """
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    # t_prev == t only as the ᾱ_0-variant final step 0 -> 0 (diffusers set_alpha_to_one=False)
    s = as_int(t_prev, "t_prev", low=-1, high=tt if tt == 0 else tt - 1)
    xt = as_array(x_t, "x_t")
    use_clipped = _check_flag(use_clipped_model_output, "use_clipped_model_output")
    sigma = ddim_sigma(b, tt, s, eta)
    pred = split_prediction(model_output, xt, tt, b, prediction_type)
    x0 = constrain_x0(
        pred.x0,
        clip_sample=clip_sample,
        clip_sample_range=clip_sample_range,
        thresholding=thresholding,
        dynamic_thresholding_ratio=dynamic_thresholding_ratio,
        sample_max_value=sample_max_value,
    )
    eps = predict_eps_from_x0(xt, x0, tt, b) if use_clipped else pred.eps
    # ε̂'s coefficient from η directly (no cancellation; see ddim.ddim_direction_coefficient)
    c_x0, _ = ddim_mean_coefficients(b, tt, s, sigma)
    mean = c_x0 * x0 + ddim_direction_coefficient(b, tt, s, eta) * eps
    z = _noise_or_none(noise, xt)
    if sigma == 0.0:
        return StepResult(mean, x0, eps, mean, np.asarray(0.0))
    if z is None:
        fail("noise", noise, f"eta={eta!r} gives sigma={sigma!r} > 0 for t={tt} -> t_prev={s}, so the step needs noise z")
    return StepResult(mean + sigma * z, x0, eps, mean, np.asarray(sigma * sigma))


def _noise_list(noises: Any, k: int, like: Array) -> list[Any]:
    """Split ``noises`` (None, a sequence of K arrays/None, or an array of shape (K, *x.shape)) into K entries."""
    if noises is None:
        return [None] * k
    if isinstance(noises, np.ndarray):
        if noises.ndim != like.ndim + 1 or noises.shape[0] != k:
            fail("noises", noises, f"an array of noises must have shape ({k}, *{like.shape})")
        return [noises[i] for i in range(k)]
    if isinstance(noises, (str, bytes)) or not isinstance(noises, Sequence):
        fail("noises", noises, f"expected None, a sequence of {k} arrays, or an array of shape ({k}, ...)")
    if len(noises) != k:
        fail("noises", noises, f"needs one entry per step: {k} steps, got {len(noises)} entries")
    return list(noises)


def _start(x_T: ArrayLike, timesteps: ArrayLike, betas: ArrayLike) -> tuple[Array, NDArray[np.int64], Array]:
    b = as_betas(betas)
    ts = check_subsequence(timesteps, b.size, "timesteps")
    x = as_array(x_T, "x_T")
    return b, ts, x


def _call(model_fn: ModelFn, x: Array, t: int) -> Any:
    if not callable(model_fn):
        fail("model_fn", model_fn, "expected a callable model_fn(x, t)")
    return model_fn(x.copy(), t)


def ddim_sample_loop(
    model_fn: ModelFn,
    x_T: ArrayLike,
    timesteps: ArrayLike,
    betas: ArrayLike,
    *,
    eta: float = 0.0,
    noises: Any = None,
    prediction_type: str = "epsilon",
    final_alpha_bar_is_one: bool = True,
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    thresholding: bool = False,
    dynamic_thresholding_ratio: float = 0.995,
    sample_max_value: float = 1.0,
    use_clipped_model_output: bool = False,
) -> SampleTrajectory:
    r"""DDIM sampling on a subsequence τ (Song et al. 2021, §4.2, eq. 12 on τ): K = len(timesteps) steps.

    .. math::

        x_{\tau_{i-1}} = \sqrt{\bar\alpha_{\tau_{i-1}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{\tau_{i-1}}-\sigma_{\tau_i}^2}\,\hat\epsilon_\theta(x_{\tau_i}, \tau_i) + \sigma_{\tau_i} z_i

    ``timesteps`` = [τ_K, …, τ_1] in sampling order (strictly decreasing indices in [0, T − 1]). The
    steps are (τ_K, τ_{K−1}), …, (τ_2, τ_1), and the last goes from τ_1 to the data (index −1,
    ᾱ = 1) when ``final_alpha_bar_is_one`` (the DDIM authors' code, improved-diffusion, diffusers'
    ``set_alpha_to_one=True``), or to index 0 otherwise (diffusers' ``set_alpha_to_one=False``: the
    result keeps noise of std sqrt(1 − ᾱ at index 0); with τ_1 = 0 that last step is 0 → 0).

    ``model_fn(x, t)`` returns the model output (of ``prediction_type``) at state x and index t.
    ``noises``: None (allowed when every σ is 0, e.g. η = 0), a sequence of K arrays (entries may be
    None where σ = 0), or an array of shape (K, *x_T.shape). The other options are those of
    :func:`ddim_step`. Returns the states (x_T first) and the x̂₀ of every step.
    """
    b, ts, x = _start(x_T, timesteps, betas)
    final_one = _check_flag(final_alpha_bar_is_one, "final_alpha_bar_is_one")
    k = ts.size
    zs = _noise_list(noises, k, x)
    targets = [int(v) for v in ts[1:]] + [-1 if final_one else 0]
    samples = [x]
    pred_x0s = []
    for i, (t, s) in enumerate(zip((int(v) for v in ts), targets)):
        if zs[i] is None and ddim_sigma(b, t, s, eta) > 0.0:
            fail("noises", noises, f"step {i} (t={t} -> t_prev={s}) has sigma > 0 (eta={eta!r}) and needs noise")
        res = ddim_step(
            _call(model_fn, x, t), t, s, x, b,
            eta=eta,
            noise=zs[i],
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            use_clipped_model_output=use_clipped_model_output,
        )
        x = res.prev_sample
        samples.append(x)
        pred_x0s.append(res.pred_x0)
    return SampleTrajectory(np.stack(samples), np.stack(pred_x0s), tuple([int(v) for v in ts] + [targets[-1]]))


def ddpm_sample_loop(
    model_fn: ModelFn,
    x_T: ArrayLike,
    timesteps: ArrayLike,
    betas: ArrayLike,
    *,
    noises: Any,
    variance_type: str = "fixed_small",
    prediction_type: str = "epsilon",
    clip_sample: bool = False,
    clip_sample_range: float = 1.0,
    thresholding: bool = False,
    dynamic_thresholding_ratio: float = 0.995,
    sample_max_value: float = 1.0,
) -> SampleTrajectory:
    r"""Ancestral DDPM sampling, respaced to a subsequence τ (Ho et al. 2020, Algorithm 2; Nichol & Dhariwal 2021, §4).

    .. math:: x_{\tau_{i-1}} = \tilde\mu'(x_{\tau_i}, \hat x_0) + \sqrt{\Sigma'_\theta}\, z_i,\qquad x_{\tau_0} = x_{-1}\ \text{the data, with}\ z = 0

    ``timesteps`` = [τ_K, …, τ_1] in sampling order; the steps are (τ_K, τ_{K−1}), …, (τ_1, −1), each
    a :func:`ddpm_step` with the respaced β′ and β̃′. With ``timesteps = [T−1, …, 0]`` this is
    Algorithm 2 exactly. The final step adds no noise.

    ``model_fn(x, t)`` returns the model output; for the learned variance types it returns a pair
    ``(model_output, model_var_output)``. ``noises``: a sequence of K arrays (the last entry may be
    None: it is not used) or an array of shape (K, *x_T.shape).
    """
    b, ts, x = _start(x_T, timesteps, betas)
    k = ts.size
    zs = _noise_list(noises, k, x)
    learned = isinstance(variance_type, str) and variance_type in LEARNED_VARIANCE_TYPES
    targets = [int(v) for v in ts[1:]] + [-1]
    samples = [x]
    pred_x0s = []
    for i, (t, s) in enumerate(zip((int(v) for v in ts), targets)):
        out = _call(model_fn, x, t)
        var_out = None
        if learned:
            if not (isinstance(out, tuple) and len(out) == 2):
                fail("model_fn", model_fn, f"with variance_type={variance_type!r} it must return (model_output, model_var_output)")
            out, var_out = out
        if s != -1 and zs[i] is None:
            fail("noises", noises, f"step {i} (t={t} -> t_prev={s}) is not the final step and needs noise")
        res = ddpm_step(
            out, t, x, b,
            noise=zs[i] if s != -1 else None,
            t_prev=s,
            prediction_type=prediction_type,
            variance_type=variance_type,
            model_var_output=var_out,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
        )
        x = res.prev_sample
        samples.append(x)
        pred_x0s.append(res.pred_x0)
    return SampleTrajectory(np.stack(samples), np.stack(pred_x0s), tuple([int(v) for v in ts] + [-1]))
