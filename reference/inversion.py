r"""Deterministic DDIM inversion: running the η = 0 update towards noisier indices.

DDIM with η = 0 is the Euler discretisation of an ODE (Song et al. 2021, §4.3, eq. 14), so it can be
run backwards to encode data into latents ("DDIM inversion", §5.4 uses it for reconstruction):

.. math::

    x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\hat\epsilon,\qquad
    \hat x_0 = \frac{x_{t_\mathrm{from}} - \sqrt{1-\bar\alpha_{t_\mathrm{from}}}\,\hat\epsilon}{\sqrt{\bar\alpha_{t_\mathrm{from}}}},
    \qquad t_\mathrm{to} > t_\mathrm{from}.

This is eq. 12 with σ = 0 and the roles of the two indices swapped. The ε̂ of a step must come from
the model at one of the two indices, and the public implementations differ:

* improved-diffusion / guided-diffusion (``ddim_reverse_sample``, η = 0 only) call the model at the
  **source** index, on the state that is there: :math:`\hat\epsilon = \epsilon_\theta(x_{t_\mathrm{from}}, t_\mathrm{from})`;
* diffusers' ``DDIMInverseScheduler`` calls it at the **destination** index, on the source state:
  :math:`\hat\epsilon = \epsilon_\theta(x_{t_\mathrm{from}}, t_\mathrm{to})`.

Index convention (``docs/conventions.md``): 0-based indices, ``-1`` is the clean data (ᾱ = 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .validation import as_array, as_betas, as_int, as_timesteps, check_same_shape, fail
from .alphas import sqrt_alpha_bar, sqrt_one_minus_alpha_bar
from .parameterisation import predict_x0_from_eps
from .sampling import ModelFn, SampleTrajectory

__all__ = ["MODEL_AT", "ddim_invert_step", "ddim_invert"]

Array = NDArray[np.float64]
MODEL_AT = ("source", "destination")


def _invert(eps: Array, t_from: int, t_to: int, x: Array, b: Array) -> tuple[Array, Array]:
    x0 = x if t_from == -1 else predict_x0_from_eps(x, eps, t_from, b)
    x_to = float(sqrt_alpha_bar(b)[t_to]) * x0 + float(sqrt_one_minus_alpha_bar(b)[t_to]) * eps
    return x_to, x0


def ddim_invert_step(eps: ArrayLike, t_from: int, t_to: int, x: ArrayLike, betas: ArrayLike) -> Array:
    r"""One deterministic (η = 0) DDIM step from index ``t_from`` to the noisier index ``t_to``.

    .. math::

        x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\epsilon,\qquad
        \hat x_0 = \begin{cases} x & t_\mathrm{from} = -1 \\
          (x - \sqrt{1-\bar\alpha_{t_\mathrm{from}}}\,\epsilon)/\sqrt{\bar\alpha_{t_\mathrm{from}}} & \text{otherwise}\end{cases}

    Source: Song et al. 2021 (DDIM), eq. 12 with σ = 0, run from t_from to t_to > t_from (§4.3,
    the ODE of eq. 14). At ``t_from = -1`` the state is the data, so x̂₀ = x (ᾱ = 1) and ε only
    sets the direction. ``-1 <= t_from < t_to <= T - 1``; ``eps`` and ``x`` have the same shape.
    """
    e = as_array(eps, "eps")
    xx = as_array(x, "x")
    check_same_shape(x=xx, eps=e)
    b = as_betas(betas)
    tf = as_int(t_from, "t_from", low=-1, high=b.size - 2)
    tt = as_int(t_to, "t_to", low=tf + 1, high=b.size - 1)
    return _invert(e, tf, tt, xx, b)[0]


def ddim_invert(
    model_fn: ModelFn,
    x0: ArrayLike,
    timesteps: ArrayLike,
    betas: ArrayLike,
    *,
    model_at: str = "source",
) -> SampleTrajectory:
    r"""DDIM inversion along ``timesteps`` = [τ_0 < τ_1 < … < τ_K]: K steps τ_i → τ_{i+1}.

    .. math::

        x_{\tau_{i+1}} = \sqrt{\bar\alpha_{\tau_{i+1}}}\,\hat x_0(x_{\tau_i}, \hat\epsilon_i) + \sqrt{1-\bar\alpha_{\tau_{i+1}}}\,\hat\epsilon_i,\qquad
        \hat\epsilon_i = \begin{cases}\epsilon_\theta(x_{\tau_i}, \tau_i) & \text{model\_at = "source"}\\
                                      \epsilon_\theta(x_{\tau_i}, \tau_{i+1}) & \text{model\_at = "destination"}\end{cases}

    ``x0`` is the state at τ_0: the clean data when τ_0 = −1. ``"source"`` is improved-diffusion's
    convention (its loop starts at index 0 and treats the data as the state there, i.e.
    τ_0 = 0); ``"destination"`` is diffusers' ``DDIMInverseScheduler`` (τ_0 = −1 with
    ``set_alpha_to_one=True``, τ_0 = 0 otherwise). With ``"source"`` the model would be evaluated at
    the data, so τ_0 = −1 is refused (ValueError naming ``model_at``).

    ``model_fn(x, t)`` returns an ε-prediction. Returns the states (``x0`` first, the latent last)
    and the x̂₀ of each step. With ``"source"``, DDIM η = 0 steps on the reversed indices undo the
    inversion exactly when the model's ε̂(x_τ, τ) is constant along the path (the point-mass oracle);
    for a real model, and with ``"destination"`` (which evaluates the model on the source state at the
    destination index, the approximation ε(x_{t−1}, t) ≈ ε(x_t, t)), only approximately.
    """
    if not isinstance(model_at, str) or model_at not in MODEL_AT:
        fail("model_at", model_at, f"must be one of {MODEL_AT}")
    if not callable(model_fn):
        fail("model_fn", model_fn, "expected a callable model_fn(x, t)")
    b = as_betas(betas)
    if np.ndim(timesteps) != 1 or np.size(timesteps) < 2:
        fail("timesteps", timesteps, "must be 1-D with at least two entries (the start index and one target)")
    ts = as_timesteps(timesteps, b.size, "timesteps", allow_data=True)
    if np.any(np.diff(ts) <= 0):
        i = int(np.argmax(np.diff(ts) <= 0))
        fail("timesteps", timesteps, f"must be strictly increasing (inversion order); {int(ts[i])} at position {i} "
             f"is followed by {int(ts[i + 1])}")
    if model_at == "source" and ts[0] == -1:
        fail("model_at", model_at, "cannot evaluate the model at the data (timesteps[0] = -1); start at index 0 "
             "(improved-diffusion's convention) or use model_at='destination' (diffusers')")
    x = as_array(x0, "x0")
    samples = [x]
    pred_x0s = []
    steps = [int(v) for v in ts]
    for t_from, t_to in zip(steps[:-1], steps[1:]):
        t_model = t_from if model_at == "source" else t_to
        eps: Any = model_fn(x.copy(), t_model)
        e = as_array(eps, "eps")
        check_same_shape(x=x, eps=e)
        x, x0_hat = _invert(e, t_from, t_to, x, b)
        samples.append(x)
        pred_x0s.append(x0_hat)
    return SampleTrajectory(np.stack(samples), np.stack(pred_x0s), tuple(steps))
