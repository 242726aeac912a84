r"""Analytic data distributions with exact denoisers: a point mass, a Gaussian and a Gaussian mixture.

For data :math:`x_0 \sim p_0` and the forward marginal :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`
(Ho et al. 2020, eq. 4), the minimum-MSE denoisers are conditional expectations,

.. math::

    \hat x_0^*(x_t, t) = \mathbb E[x_0 \mid x_t],\qquad
    \epsilon^*(x_t, t) = \mathbb E[\epsilon \mid x_t] = \frac{x_t - \sqrt{\bar\alpha_t}\,\hat x_0^*}{\sqrt{1-\bar\alpha_t}},\qquad
    v^* = \sqrt{\bar\alpha_t}\,\epsilon^* - \sqrt{1-\bar\alpha_t}\,\hat x_0^*,

and for these three families they are in closed form (Tweedie's formula; e.g. Karras et al. 2022 §2
and Appendix B.3 of Song et al. 2021). They are the "perfect models" the property suite and the
harness drive samplers with.

Index convention: ``t`` is the 0-based index (the papers' t + 1), in [0, T-1]. Data arrays have shape
``(..., d)``: the last axis is the data dimension, leading axes are a batch.

For the Gaussian, every DDPM/DDIM step with the exact denoiser is affine in x_t plus independent
Gaussian noise, so the output distribution of a whole run is Gaussian and propagates in closed form:
:func:`gaussian_run_output`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from .alphas import alpha_bar_at, one_minus_alpha_bar_at, one_minus_alpha_bar_ratio
from .validation import as_array, as_betas, as_int, as_timestep, as_timesteps, check_finite_result, fail
from .ddim import ddim_direction_coefficient, ddim_mean_coefficients, ddim_sigma
from .gaussian import Gaussian
from .posterior import posterior_coefficients
from .variances import LEARNED_VARIANCE_TYPES, reverse_variance
from .vocabulary import PredictionType

__all__ = [
    "PointMass",
    "IsotropicGaussian",
    "GaussianMixture",
    "AffineStep",
    "gaussian_step_map",
    "gaussian_run_output",
]

Array = NDArray[np.float64]


def _signal_noise(betas: ArrayLike, t: int) -> tuple[float, float]:
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    ab = float(alpha_bar_at(b, tt))
    c = float(one_minus_alpha_bar_at(b, tt))
    return ab, c


_OVERFLOW = "overflows float64 (|x_t| too large for this step)"


def _eps_from_x0(x_t: Array, x0: Array, ab: float, c: float) -> Array:
    with np.errstate(over="ignore", invalid="ignore"):
        eps = (x_t - np.sqrt(ab) * x0) / np.sqrt(c)
    return check_finite_result(eps, "eps", _OVERFLOW)


def _v_from(x0: Array, eps: Array, ab: float, c: float) -> Array:
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.sqrt(ab) * eps - np.sqrt(c) * x0
    return check_finite_result(v, "v", _OVERFLOW)


def _check_x(x_t: ArrayLike, dim: int) -> Array:
    x = as_array(x_t, "x_t")
    if x.ndim == 0 or x.shape[-1] != dim:
        fail("x_t", x_t, f"last axis must be the data dimension {dim}, got shape {x.shape}")
    return x


@dataclass(frozen=True)
class PointMass:
    r"""Data concentrated at one point :math:`x_0^*`: :math:`p_0 = \delta_{x_0^*}`.

    Exact denoiser: :math:`\hat x_0^* = x_0^*` for every x_t, hence
    :math:`\epsilon^* = (x_t - \sqrt{\bar\alpha_t}x_0^*)/\sqrt{1-\bar\alpha_t}`. Every deterministic
    sampler driven by it lands exactly on x₀* (DDIM with η = 0 is exact here for any subsequence).
    """

    point: Array

    def __post_init__(self) -> None:
        p = as_array(self.point, "point")
        if p.ndim != 1:
            fail("point", self.point, "must be a 1-D vector (the data dimension)")
        object.__setattr__(self, "point", p)

    @property
    def dim(self) -> int:
        return int(self.point.size)

    def x0(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        """Exact x̂₀*(x_t, t) = x₀*, broadcast to x_t's shape."""
        x = _check_x(x_t, self.dim)
        _signal_noise(betas, t)
        return np.broadcast_to(self.point, x.shape).copy()

    def eps(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Exact :math:`\epsilon^*(x_t, t) = (x_t - \sqrt{\bar\alpha_t}x_0^*)/\sqrt{1-\bar\alpha_t}`."""
        x = _check_x(x_t, self.dim)
        ab, c = _signal_noise(betas, t)
        return _eps_from_x0(x, self.point, ab, c)

    def v(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        """Exact v*(x_t, t) (Salimans & Ho 2022, §4)."""
        x = _check_x(x_t, self.dim)
        ab, c = _signal_noise(betas, t)
        return _v_from(np.broadcast_to(self.point, x.shape), _eps_from_x0(x, self.point, ab, c), ab, c)

    def marginal(self, t: int, betas: ArrayLike) -> Gaussian:
        r"""The law of x_t: :math:`\mathcal N(\sqrt{\bar\alpha_t}x_0^*, (1-\bar\alpha_t)I)` (Ho et al. 2020, eq. 4)."""
        ab, c = _signal_noise(betas, t)
        return Gaussian(np.sqrt(ab) * self.point, np.full(self.dim, c))


@dataclass(frozen=True)
class IsotropicGaussian:
    r"""Gaussian data :math:`x_0 \sim \mathcal N(m, s^2 I)` (``variance`` may also be a per-coordinate vector).

    Marginal: :math:`x_t \sim \mathcal N(\sqrt{\bar\alpha_t}\,m,\ V_t I)` with :math:`V_t = \bar\alpha_t s^2 + 1 - \bar\alpha_t`.
    Exact denoisers (Gaussian conditioning):

    .. math::

        \hat x_0^* = m + \frac{\sqrt{\bar\alpha_t}\,s^2}{V_t}\,(x_t - \sqrt{\bar\alpha_t}\,m),\qquad
        \epsilon^* = \frac{\sqrt{1-\bar\alpha_t}}{V_t}\,(x_t - \sqrt{\bar\alpha_t}\,m).

    ``variance`` may be 0 in some coordinates (a point mass there).
    """

    mean: Array
    variance: Array

    def __post_init__(self) -> None:
        m = as_array(self.mean, "mean")
        if m.ndim != 1:
            fail("mean", self.mean, "must be a 1-D vector (the data dimension)")
        v = as_array(self.variance, "variance")
        if np.any(v < 0):
            fail("variance", self.variance, "must be >= 0")
        try:
            v = np.broadcast_to(v, m.shape).astype(np.float64)
        except ValueError:
            fail("variance", self.variance, f"must be a scalar or match mean's shape {m.shape}")
        object.__setattr__(self, "mean", m)
        object.__setattr__(self, "variance", v)

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    def _gain(self, betas: ArrayLike, t: int) -> tuple[float, float, Array]:
        ab, c = _signal_noise(betas, t)
        V = ab * self.variance + c
        return ab, c, V

    def x0(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Exact :math:`\mathbb E[x_0 \mid x_t]` (see the class docstring)."""
        x = _check_x(x_t, self.dim)
        ab, _, V = self._gain(betas, t)
        return self.mean + np.sqrt(ab) * self.variance / V * (x - np.sqrt(ab) * self.mean)

    def eps(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Exact :math:`\mathbb E[\epsilon \mid x_t] = \sqrt{1-\bar\alpha_t}\,(x_t - \sqrt{\bar\alpha_t}m)/V_t`."""
        x = _check_x(x_t, self.dim)
        ab, c, V = self._gain(betas, t)
        return np.sqrt(c) / V * (x - np.sqrt(ab) * self.mean)

    def v(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        """Exact v* = sqrt(ᾱ) ε* − sqrt(1 − ᾱ) x̂₀*."""
        ab, c, _ = self._gain(betas, t)
        return _v_from(self.x0(x_t, t, betas), self.eps(x_t, t, betas), ab, c)

    def marginal(self, t: int, betas: ArrayLike) -> Gaussian:
        r"""The law of x_t: :math:`\mathcal N(\sqrt{\bar\alpha_t}m, (\bar\alpha_t s^2 + 1 - \bar\alpha_t) I)`."""
        ab, _, V = self._gain(betas, t)
        return Gaussian(np.sqrt(ab) * self.mean, V)

    def affine(self, t: int, betas: ArrayLike, prediction_type: str) -> tuple[Array, Array]:
        r"""(A, B) with the exact denoiser's output :math:`= A \odot x_t + B` per coordinate (it is affine in x_t).

        With :math:`V_t = \bar\alpha_t s^2 + 1 - \bar\alpha_t` (the class docstring's conditioning):

        .. math::

            \hat x_0^*:&\quad A = \sqrt{\bar\alpha_t}\,s^2/V_t,\qquad B = (1-\bar\alpha_t)\,m/V_t \\
            \epsilon^*:&\quad A = \sqrt{1-\bar\alpha_t}/V_t,\qquad B = -\sqrt{\bar\alpha_t(1-\bar\alpha_t)}\,m/V_t \\
            v^*:&\quad A = \sqrt{\bar\alpha_t(1-\bar\alpha_t)}\,(1-s^2)/V_t,\qquad B = -\sqrt{1-\bar\alpha_t}\,m/V_t

        (v* = √ᾱ ε* − √(1−ᾱ) x̂₀*, Salimans & Ho 2022 §4). ``prediction_type`` is ``"epsilon"``, ``"sample"``
        (x̂₀) or ``"v_prediction"``; t the 0-based index.
        """
        try:
            kind = PredictionType(prediction_type)
        except ValueError:
            fail("prediction_type", prediction_type, f"must be one of {[p.value for p in PredictionType]}")
        ab, c, V = self._gain(betas, t)
        s2, m = self.variance, self.mean
        if kind == PredictionType.SAMPLE:
            A, B = np.sqrt(ab) * s2 / V, c * m / V
        elif kind == PredictionType.EPSILON:
            A, B = np.full_like(m, np.sqrt(c)) / V, -np.sqrt(ab * c) * m / V
        else:
            A, B = np.sqrt(ab * c) * (1.0 - s2) / V, -np.sqrt(c) * m / V
        return np.broadcast_to(A, m.shape).astype(np.float64), np.asarray(B, dtype=np.float64)


@dataclass(frozen=True)
class GaussianMixture:
    r"""A mixture :math:`\sum_k w_k \mathcal N(\mu_k, s_k^2 I)` with isotropic components.

    The marginal of x_t is the mixture of :math:`\mathcal N(\sqrt{\bar\alpha_t}\mu_k, V_{k,t} I)`,
    :math:`V_{k,t} = \bar\alpha_t s_k^2 + 1 - \bar\alpha_t`, with the same weights. The exact x̂₀* is
    the responsibility-weighted sum of the per-component Gaussian denoisers (see
    :class:`IsotropicGaussian`), with responsibilities
    :math:`r_k(x_t) \propto w_k\,\mathcal N(x_t; \sqrt{\bar\alpha_t}\mu_k, V_{k,t} I)`, evaluated with
    log-sum-exp so that they never underflow to 0/0.
    """

    weights: Array
    means: Array
    variances: Array

    def __post_init__(self) -> None:
        w = as_array(self.weights, "weights")
        mu = as_array(self.means, "means")
        s2 = as_array(self.variances, "variances")
        if w.ndim != 1 or np.any(w <= 0) or abs(float(w.sum()) - 1.0) > 1e-12:
            fail("weights", self.weights, "must be a 1-D vector of positive weights summing to 1")
        if mu.ndim != 2 or mu.shape[0] != w.size:
            fail("means", self.means, f"must have shape (K, d) with K = {w.size}")
        if s2.shape != (w.size,) or np.any(s2 < 0):
            fail("variances", self.variances, f"must be K = {w.size} non-negative variances")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "means", mu)
        object.__setattr__(self, "variances", s2)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def responsibilities(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r""":math:`r_k(x_t) = P(k \mid x_t)`, shape ``(..., K)``."""
        x = _check_x(x_t, self.dim)
        ab, c = _signal_noise(betas, t)
        V = ab * self.variances + c  # (K,)
        d = x[..., None, :] - np.sqrt(ab) * self.means  # (..., K, d)
        with np.errstate(over="ignore", invalid="ignore"):
            logp = np.log(self.weights) - 0.5 * self.dim * np.log(2 * np.pi * V) - 0.5 * np.sum(d * d, axis=-1) / V
            r = np.exp(logp - logsumexp(logp, axis=-1, keepdims=True))
        return check_finite_result(r, "responsibilities", _OVERFLOW)

    def x0(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Exact :math:`\mathbb E[x_0 \mid x_t] = \sum_k r_k(x_t)\,\big(\mu_k + \tfrac{\sqrt{\bar\alpha_t}s_k^2}{V_{k,t}}(x_t - \sqrt{\bar\alpha_t}\mu_k)\big)`."""
        x = _check_x(x_t, self.dim)
        ab, c = _signal_noise(betas, t)
        V = ab * self.variances + c
        r = self.responsibilities(x, t, betas)
        comp = self.means + (np.sqrt(ab) * self.variances / V)[:, None] * (x[..., None, :] - np.sqrt(ab) * self.means)
        return np.sum(r[..., None] * comp, axis=-2)

    def eps(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Exact :math:`\epsilon^* = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0^*)/\sqrt{1-\bar\alpha_t}`."""
        x = _check_x(x_t, self.dim)
        ab, c = _signal_noise(betas, t)
        return _eps_from_x0(x, self.x0(x, t, betas), ab, c)

    def v(self, x_t: ArrayLike, t: int, betas: ArrayLike) -> Array:
        """Exact v*."""
        ab, c = _signal_noise(betas, t)
        return _v_from(self.x0(x_t, t, betas), self.eps(x_t, t, betas), ab, c)

    def marginal_log_prob(self, x: ArrayLike, t: int, betas: ArrayLike) -> Array:
        r"""Log-density of the law of x_t (the mixture of the component marginals), shape ``x.shape[:-1]``."""
        xx = _check_x(x, self.dim)
        ab, c = _signal_noise(betas, t)
        V = ab * self.variances + c
        d = xx[..., None, :] - np.sqrt(ab) * self.means
        with np.errstate(over="ignore", invalid="ignore"):
            logp = np.log(self.weights) - 0.5 * self.dim * np.log(2 * np.pi * V) - 0.5 * np.sum(d * d, axis=-1) / V
            out = logsumexp(logp, axis=-1)
        return check_finite_result(out, "marginal_log_prob", "the log-density is below the float64 range (|x| too large)")


@dataclass(frozen=True)
class AffineStep:
    r"""One sampler step with the exact Gaussian denoiser: :math:`x_\mathrm{prev} = A\,x_t + B + \sigma z`, per coordinate."""

    t: int
    t_prev: int
    A: Array
    B: Array
    noise_variance: float


def gaussian_step_map(
    oracle: IsotropicGaussian,
    betas: ArrayLike,
    t: int,
    t_prev: int,
    *,
    family: str = "ddim",
    eta: float = 0.0,
    variance_type: str = "fixed_small",
    model_var_output: float | None = None,
) -> AffineStep:
    r"""The affine map of one DDIM or DDPM step from index t to t_prev driven by the exact Gaussian denoiser.

    With :math:`\hat x_0^* = a_0 x_t + b_0` and :math:`\epsilon^* = a_\epsilon x_t + b_\epsilon`
    (both affine, see :class:`IsotropicGaussian`):

    * DDIM (Song et al. 2021, eq. 12): :math:`x_s = \sqrt{\bar\alpha_s}\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\epsilon + \sigma z`
      with σ = σ(η) of eq. 16;
    * DDPM (Ho et al. 2020, Algorithm 2 with eq. 7 on the respaced schedule):
      :math:`x_s = c_{x_0}\hat x_0 + c_{x_t}x_t + \sqrt{\Sigma}\,z` with Σ = β̃' (``fixed_small``) or β'
      (``fixed_large``), or the learned Σ of a model whose variance output is the scalar
      ``model_var_output`` at this step (``learned``: a log-variance; ``learned_range``: m ∈ [−1, 1],
      Nichol & Dhariwal 2021, eq. 15; :func:`~ddspec.reference.variances.reverse_variance`); no noise at
      the final step (t_prev = −1). A learned variance changes Σ only: the mean map is the same.

    ``t_prev`` may equal ``t`` only for DDIM (diffusers' set_alpha_to_one=False final step).
    """
    if not isinstance(oracle, IsotropicGaussian):
        fail("oracle", oracle, "the closed-form propagation needs an IsotropicGaussian oracle")
    b = as_betas(betas)
    tt = as_timestep(t, b.size, "t")
    # t_prev == t only as the ᾱ_0-variant final step 0 -> 0 (diffusers set_alpha_to_one=False)
    tp = as_int(t_prev, "t_prev", low=-1, high=tt if tt == 0 else tt - 1)
    ab, c = _signal_noise(b, tt)
    V = ab * oracle.variance + c
    a0 = np.sqrt(ab) * oracle.variance / V
    b0 = oracle.mean - a0 * np.sqrt(ab) * oracle.mean
    ae = np.sqrt(c) / V
    be = -ae * np.sqrt(ab) * oracle.mean
    if family == "ddim":
        sigma = ddim_sigma(b, tt, tp, eta)
        cx0, _ = ddim_mean_coefficients(b, tt, tp, sigma)
        ceps = ddim_direction_coefficient(b, tt, tp, eta)  # from η directly: no cancellation of 1 − ᾱ_s − σ²
        return AffineStep(tt, tp, cx0 * a0 + ceps * ae, cx0 * b0 + ceps * be, sigma * sigma)
    if family == "ddpm":
        if tp == tt:
            fail("t_prev", t_prev, "a DDPM step must go to an earlier index")
        pc = posterior_coefficients(b, tt, tp)
        learned = variance_type in LEARNED_VARIANCE_TYPES
        if learned != (model_var_output is not None):
            fail("model_var_output", model_var_output,
                 f"is required for variance_type={variance_type!r} and refused otherwise" if learned
                 else f"is only for the learned variance types {LEARNED_VARIANCE_TYPES}")
        if tp == -1:
            var = 0.0  # Algorithm 2: z = 0 at the last step, whatever the variance type
        elif variance_type == "fixed_small":
            var = float(pc.variance)
        elif variance_type == "fixed_large":
            var = float(one_minus_alpha_bar_ratio(b, tt, tp))
        elif learned:
            m = float(as_array(model_var_output, "model_var_output"))
            var = float(reverse_variance(b, tt, variance_type, t_prev=tp, model_var_output=m).variance)
        else:
            fail("variance_type", variance_type,
                 f"the Gaussian propagation supports 'fixed_small', 'fixed_large' and {LEARNED_VARIANCE_TYPES}")
        return AffineStep(tt, tp, pc.coef_x0 * a0 + pc.coef_xt, pc.coef_x0 * b0, var)
    fail("family", family, "must be 'ddim' or 'ddpm'")
    raise AssertionError  # unreachable


def gaussian_run_output(
    oracle: IsotropicGaussian,
    betas: ArrayLike,
    timesteps: ArrayLike,
    *,
    family: str = "ddim",
    eta: float = 0.0,
    variance_type: str = "fixed_small",
    final_alpha_bar_is_one: bool = True,
    prior_mean: ArrayLike = 0.0,
    prior_variance: ArrayLike = 1.0,
    model_var_outputs: ArrayLike | None = None,
) -> Gaussian:
    r"""Exact law of the output of a whole DDPM/DDIM run driven by the exact Gaussian denoiser.

    Starting from :math:`x_{\tau_1} \sim \mathcal N(m_0, v_0)` (default the standard prior N(0, I)),
    each step maps :math:`(m, v) \mapsto (A m + B,\ A^2 v + \sigma^2)` per coordinate
    (:func:`gaussian_step_map`). ``timesteps`` is the strictly decreasing subsequence visited; the last
    step goes to the data (index −1), or to index 0 when ``final_alpha_bar_is_one`` is False
    (diffusers' ``set_alpha_to_one=False``, DDIM only).

    For a learned DDPM variance (``learned``, ``learned_range``), ``model_var_outputs`` holds the model's
    variance output at each step, one scalar per step in sampling order (the same for every coordinate;
    the last step's value is ignored, since no noise is added there): the model is the exact denoiser
    for the mean and a fixed, known function of t for the variance, so the law stays Gaussian.

    Note that even a perfect sampler does not reproduce N(m, s²) exactly: the output law depends on the
    discretisation (and on the prior being N(0, I) rather than the exact marginal of x_T); this
    function gives the exact law of what the sampler computes, which is what a conformance test needs.
    """
    if not isinstance(oracle, IsotropicGaussian):
        fail("oracle", oracle, "the closed-form propagation needs an IsotropicGaussian oracle")
    b = as_betas(betas)
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or ts.size == 0:
        fail("timesteps", timesteps, "must be a non-empty 1-D sequence")
    ts_list = [int(x) for x in as_timesteps(ts, b.size, "timesteps")]  # rejects non-integers, NaN, complex
    if any(ts_list[i] <= ts_list[i + 1] for i in range(len(ts_list) - 1)):
        fail("timesteps", timesteps, "must be strictly decreasing (sampling order)")
    m = np.broadcast_to(as_array(prior_mean, "prior_mean"), oracle.mean.shape).astype(np.float64)
    v = np.broadcast_to(as_array(prior_variance, "prior_variance"), oracle.mean.shape).astype(np.float64)
    if np.any(v < 0):
        fail("prior_variance", prior_variance, "must be >= 0")
    last = -1 if final_alpha_bar_is_one else 0
    if not final_alpha_bar_is_one and family != "ddim":
        fail("final_alpha_bar_is_one", final_alpha_bar_is_one, "False is a DDIM convention (set_alpha_to_one)")
    mvo: list[float | None] = [None] * len(ts_list)
    if model_var_outputs is not None:
        arr = as_array(model_var_outputs, "model_var_outputs")
        if arr.ndim != 1 or arr.size != len(ts_list):
            fail("model_var_outputs", model_var_outputs, f"must hold one value per step ({len(ts_list)})")
        mvo = [float(v) for v in arr]
    for i, t in enumerate(ts_list):
        t_prev = ts_list[i + 1] if i + 1 < len(ts_list) else min(last, t)
        step = gaussian_step_map(oracle, b, t, t_prev, family=family, eta=eta, variance_type=variance_type,
                                 model_var_output=mvo[i])
        m = step.A * m + step.B
        v = step.A * step.A * v + step.noise_variance
    return Gaussian(m, v)

