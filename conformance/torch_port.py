r"""The bundled known-good target: a torch port of the reference DDPM and DDIM steps.

:class:`ReferencePort` implements :class:`~ddspec.conformance.protocol.Sampler` in torch, on any device
and in any floating dtype (the dtype and device of the ``x_t`` it is given). It exists so that the
harness can be checked end to end on a target that is right by construction: in float64 it agrees
with :mod:`ddspec.reference` to a few ULP, and in lower precision its error is that of the working
dtype alone (the error model's floor).

How it stays accurate. Every per-step coefficient (√ᾱ, √(1−ᾱ), β′ = 1 − ᾱ_t/ᾱ_prev, the posterior
mean coefficients, β̃, DDIM's σ and direction coefficient) is formed in float64 from the double-double
tables of :mod:`ddspec.reference.alphas` (:func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio`
gives β′ without cancellation), then rounded once to the working dtype when it multiplies a tensor.
Only the tensor arithmetic (a handful of multiply-adds per element) runs in the working dtype.

Equations (index convention ``docs/conventions.md``: 0-based ``t``; the step goes from ``t`` to the next
timestep of the N-step schedule, ``t_prev``, and from the last one to ``t_prev = -1``, the data, with
ᾱ = 1). With :math:`s` = t_prev, :math:`\beta' = 1 - \bar\alpha_t/\bar\alpha_s`,
:math:`\alpha' = \bar\alpha_t/\bar\alpha_s` (the respaced schedule, Nichol & Dhariwal 2021, §4):

* x̂₀ and ε̂ from the model output: ε (Ho et al. 2020, eq. 15), x₀, or v (Salimans & Ho 2022, §4);
  then clipping to ±``clip_sample_range`` or dynamic thresholding (Saharia et al. 2022, §2.3).
* DDPM (Ho et al. 2020, eq. 7 and Algorithm 2):
  :math:`x_s = \frac{\sqrt{\bar\alpha_s}\beta'}{1-\bar\alpha_t}\hat x_0 + \frac{\sqrt{\alpha'}(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t + \sigma z`
  with :math:`\sigma^2 = \tilde\beta = \beta'(1-\bar\alpha_s)/(1-\bar\alpha_t)` (fixed_small), β′
  (fixed_large), or :math:`\exp(f\log\beta' + (1-f)\log\tilde\beta)`, f = (v+1)/2 (learned_range,
  Nichol & Dhariwal 2021, eq. 15); no noise on the last step (s = −1).
* DDIM (Song et al. 2021, eq. 12, σ(η) of eq. 16):
  :math:`x_s = \sqrt{\bar\alpha_s}\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\hat\epsilon + \sigma z`,
  :math:`\sigma = \eta\sqrt{\tilde\beta}`. The direction coefficient is evaluated as
  :math:`1-\bar\alpha_s-\sigma^2 = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\big(\alpha'(1-\bar\alpha_s) + (1-\eta^2)\beta'\big)`,
  a sum of non-negative terms for η ≤ 1 (it follows from :math:`1-\bar\alpha_t-\beta' = \alpha'(1-\bar\alpha_s)`),
  so it does not cancel.

The final ᾱ is always 1 (the reference convention); the port declares ``final_alpha_bar_is_one=True``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference import schedules as ref_schedules
from ddspec.reference._validate import SingularError, as_betas, as_int, as_scalar, fail
from ddspec.reference.vocabulary import NAMED_SPACINGS, DeclaredVarianceType

from .protocol import PREDICTION_TYPES, Conventions, declared_timesteps

__all__ = ["ReferencePort", "make_reference_port", "PORT_VARIANCE_TYPES"]

PORT_VARIANCE_TYPES: tuple[str, ...] = tuple(
    v.value for v in (DeclaredVarianceType.FIXED_SMALL, DeclaredVarianceType.FIXED_LARGE, DeclaredVarianceType.LEARNED_RANGE))


def _schedule(
    beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float
) -> NDArray[np.float64]:
    """The named ddspec schedule (float64, from :mod:`ddspec.reference.schedules`)."""
    if beta_schedule == "linear":
        return ref_schedules.linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "scaled_linear":
        return ref_schedules.scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "cosine":
        return ref_schedules.cosine_betas(num_train_timesteps)
    if beta_schedule == "sigmoid":
        return ref_schedules.sigmoid_betas(num_train_timesteps, beta_start, beta_end)
    fail("beta_schedule", beta_schedule, "must be 'linear', 'scaled_linear', 'cosine' or 'sigmoid' (or give betas)")
    raise AssertionError  # unreachable


def _threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    r"""Dynamic thresholding (Saharia et al. 2022, §2.3): per sample (dim 0),
    :math:`s = \mathrm{clamp}(\mathrm{quantile}(|\hat x_0|, r), 1, s_\max)`, then
    :math:`\mathrm{clamp}(\hat x_0, -s, s)/s`. The quantile is taken in float32 for half dtypes.
    """
    work = x0 if x0.dtype in (torch.float32, torch.float64) else x0.float()
    flat = work.reshape(work.shape[0], -1)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)
    out = torch.maximum(torch.minimum(flat, s), -s) / s
    return out.reshape(x0.shape).to(x0.dtype)


class ReferencePort:
    r"""A torch :class:`~ddspec.conformance.protocol.Sampler` that follows the reference equations.

    Parameters
    ----------
    betas:
        An explicit β table (then ``beta_schedule`` must be ``None`` or ``"custom"``). Default: the
        named schedule.
    family:
        ``"ddim"`` (DDIM eq. 12) or ``"ddpm"`` (Ho et al. eq. 7 / Algorithm 2, respaced when strided).
    num_train_timesteps:
        T for a named schedule (default 1000); if given with ``betas`` it must equal ``len(betas)``.
    beta_schedule:
        ``"linear"`` (default when ``betas`` is None), ``"scaled_linear"``, ``"cosine"``, ``"sigmoid"``;
        tables from :mod:`ddspec.reference.schedules` with ``beta_start``/``beta_end`` (cosine ignores them).
    rescale_betas_zero_snr:
        Apply Lin et al. 2023, Algorithm 1 to the schedule.
    prediction_type:
        ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
    variance_type:
        DDPM: ``"fixed_small"`` (β̃), ``"fixed_large"`` (β′) or ``"learned_range"``. For DDIM only the
        default is accepted (σ comes from η), and the declared ``variance_type`` is ``None``.
    timestep_spacing, steps_offset:
        The sampling subsequence (:func:`~ddspec.conformance.protocol.declared_timesteps`).
    clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value:
        Clamping / dynamic thresholding of x̂₀ (thresholding wins when both are set).
    use_clipped_model_output:
        DDIM: re-derive ε̂ from the clipped x̂₀.
    """

    def __init__(
        self,
        betas: NDArray[np.float64] | None = None,
        *,
        family: str = "ddim",
        beta_schedule: str | None = None,
        num_train_timesteps: int | None = None,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        rescale_betas_zero_snr: bool = False,
        prediction_type: str = "epsilon",
        variance_type: str | None = "fixed_small",
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        use_clipped_model_output: bool = False,
        name: str = "ddspec-reference-port",
    ) -> None:
        if family not in ("ddpm", "ddim"):
            fail("family", family, "must be 'ddpm' or 'ddim'")
        if betas is not None:
            if beta_schedule not in (None, "custom"):
                fail("beta_schedule", beta_schedule, "must be None or 'custom' when betas are given")
            base = as_betas(betas).copy()
            schedule = "custom"
            if num_train_timesteps is not None and num_train_timesteps != base.size:
                fail("num_train_timesteps", num_train_timesteps, f"differs from len(betas) = {base.size}")
        else:
            schedule = "linear" if beta_schedule is None else beta_schedule
            T = as_int(1000 if num_train_timesteps is None else num_train_timesteps, "num_train_timesteps", low=2)
            base = _schedule(schedule, T, beta_start, beta_end)
        if not isinstance(rescale_betas_zero_snr, bool):
            fail("rescale_betas_zero_snr", rescale_betas_zero_snr, "must be a bool")
        table = ref_schedules.rescale_zero_terminal_snr(base) if rescale_betas_zero_snr else base
        if prediction_type not in PREDICTION_TYPES:
            fail("prediction_type", prediction_type, f"must be one of {PREDICTION_TYPES}")
        if family == "ddpm":
            if variance_type not in PORT_VARIANCE_TYPES:
                fail("variance_type", variance_type, f"the port supports {PORT_VARIANCE_TYPES}")
            declared_variance: str | None = variance_type
        else:
            if variance_type not in (None, "fixed_small"):
                fail("variance_type", variance_type, "does not apply to family='ddim' (sigma comes from eta)")
            declared_variance = None
        if timestep_spacing not in NAMED_SPACINGS:
            fail("timestep_spacing", timestep_spacing, "must be 'leading', 'trailing' or 'linspace'")
        as_scalar(clip_sample_range, "clip_sample_range", low=0.0, low_open=True)
        as_scalar(dynamic_thresholding_ratio, "dynamic_thresholding_ratio", low=0.0, high=1.0)
        as_scalar(sample_max_value, "sample_max_value", low=1.0)

        self.name = str(name)
        self.conventions = Conventions(
            family=family,
            num_train_timesteps=int(table.size),
            beta_schedule=schedule,
            beta_start=float(beta_start),
            beta_end=float(beta_end),
            trained_betas=tuple(float(b) for b in base) if schedule == "custom" else None,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
            prediction_type=prediction_type,
            variance_type=declared_variance,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            final_alpha_bar_is_one=True,
            clip_sample=clip_sample,
            clip_sample_range=float(clip_sample_range),
            thresholding=thresholding,
            dynamic_thresholding_ratio=float(dynamic_thresholding_ratio),
            sample_max_value=float(sample_max_value),
            use_clipped_model_output=use_clipped_model_output,
            supports_noise_injection=True,
        )
        # float64 tables, each within ~1 ULP of exact (double-double evaluation in reference.alphas)
        self._betas = table
        self._alpha_bar = ref_alphas.alpha_bar(table)
        self._one_minus_alpha_bar = ref_alphas.one_minus_alpha_bar(table)
        self._sqrt_alpha_bar = ref_alphas.sqrt_alpha_bar(table)
        self._sqrt_one_minus_alpha_bar = ref_alphas.sqrt_one_minus_alpha_bar(table)
        self._timesteps_cache: dict[int, NDArray[np.int64]] = {}

    # ------------------------------------------------------------------ protocol: tables
    def betas(self) -> NDArray[np.float64]:
        r"""float64 copy of the port's β table (``betas[i]`` is :math:`\beta_{i+1}`)."""
        return self._betas.copy()

    def alphas_cumprod(self) -> NDArray[np.float64]:
        r""":math:`\bar\alpha` from :func:`ddspec.reference.alphas.alpha_bar` (float64 copy)."""
        return self._alpha_bar.copy()

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        r"""The declared spacing's N timesteps, noisiest first (see :func:`declared_timesteps`)."""
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        if n not in self._timesteps_cache:
            self._timesteps_cache[n] = declared_timesteps(self.conventions, n)
        return self._timesteps_cache[n].copy()

    # ------------------------------------------------------------------ protocol: step
    def _t_prev(self, t: int, num_steps: int) -> int:
        ts = self.timesteps(num_steps)
        hits = np.flatnonzero(ts == t)
        if hits.size == 0:
            fail("t", t, f"is not a timestep of the {num_steps}-step schedule {ts.tolist()[:6]}...")
        k = int(hits[0])
        return int(ts[k + 1]) if k + 1 < ts.size else -1

    def _predict(self, model_output: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""(x̂₀, ε̂) from the model output; ε̂ is ``None`` where the family does not need it (DDPM)."""
        c = self.conventions
        sa = float(self._sqrt_alpha_bar[t])
        s1 = float(self._sqrt_one_minus_alpha_bar[t])
        need_eps = c.family == "ddim"
        if c.prediction_type == "epsilon":
            if sa == 0.0:
                raise SingularError(
                    f"ReferencePort.step: alpha_bar[{t}] = 0 (zero terminal SNR), so x0 cannot be recovered from eps"
                )
            return (x_t - s1 * model_output) / sa, model_output
        if c.prediction_type == "sample":
            eps = (x_t - sa * model_output) / s1 if need_eps else None
            return model_output, eps
        x0 = sa * x_t - s1 * model_output
        eps = s1 * x_t + sa * model_output if need_eps else None
        return x0, eps

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        c = self.conventions
        if c.thresholding:
            if x0.dim() < 2:
                fail("x_t", tuple(x0.shape), "dynamic thresholding needs a batch dimension (ndim >= 2)")
            return _threshold(x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        if c.clip_sample:
            return x0.clamp(-c.clip_sample_range, c.clip_sample_range)
        return x0

    def _noise(
        self, x_t: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        if noise is None:
            return torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        return noise.to(dtype=x_t.dtype, device=x_t.device)

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        *,
        num_steps: int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        predicted_variance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""One reverse step from index ``t`` to the next timestep of the N-step schedule (−1 after the last).

        See the module docstring for the equations. ``noise`` is used as z exactly (cast to x_t's
        dtype/device) when the step is stochastic (DDPM with t_prev ≥ 0, DDIM with σ > 0) and ignored
        otherwise. ``predicted_variance`` is required for ``learned_range`` and refused otherwise.
        """
        c = self.conventions
        for arg, value in (("model_output", model_output), ("x_t", x_t)):
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                fail(arg, value, "expected a floating-point torch.Tensor")
        if model_output.shape != x_t.shape:
            fail("model_output", tuple(model_output.shape), f"shape must equal x_t's shape {tuple(x_t.shape)}")
        if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != x_t.shape):
            fail("noise", getattr(noise, "shape", noise), f"must be a tensor of x_t's shape {tuple(x_t.shape)}")
        learned = c.variance_type == "learned_range"
        if learned:
            if not isinstance(predicted_variance, torch.Tensor) or predicted_variance.shape != x_t.shape:
                fail("predicted_variance", getattr(predicted_variance, "shape", predicted_variance),
                     f"variance_type='learned_range' needs a tensor of x_t's shape {tuple(x_t.shape)}")
        elif predicted_variance is not None:
            fail("predicted_variance", tuple(predicted_variance.shape),
                 f"must be None for variance_type={c.variance_type!r}")
        e = as_scalar(eta, "eta", low=0.0)
        if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point():
            t = int(t.item())
        tt = as_int(t, "t", low=0, high=c.num_train_timesteps - 1)
        s = self._t_prev(tt, num_steps)

        # float64 coefficients from the accurate tables; s = -1 is the data (alpha_bar = 1)
        b = self._betas
        c_t = float(self._one_minus_alpha_bar[tt])
        c_s = 0.0 if s < 0 else float(self._one_minus_alpha_bar[s])
        sa_s = 1.0 if s < 0 else float(self._sqrt_alpha_bar[s])
        beta_p = float(ref_alphas.one_minus_alpha_bar_ratio(b, tt, s))  # β' = 1 − ᾱ_t/ᾱ_s
        alpha_p = float(ref_alphas.alpha_bar_ratio(b, tt, s))  # α' = ᾱ_t/ᾱ_s
        beta_tilde = c_s * beta_p / c_t

        x0, eps = self._predict(model_output, x_t, tt)
        x0 = self._clip(x0)

        if c.family == "ddpm":
            coef_x0 = sa_s * beta_p / c_t
            coef_xt = math.sqrt(alpha_p) * c_s / c_t
            mean = coef_x0 * x0 + coef_xt * x_t
            if s < 0:
                return mean
            z = self._noise(x_t, noise, generator)
            if c.variance_type == "fixed_small":
                return mean + math.sqrt(beta_tilde) * z
            if c.variance_type == "fixed_large":
                return mean + math.sqrt(beta_p) * z
            assert predicted_variance is not None
            frac = (predicted_variance + 1.0) / 2.0
            log_var = frac * math.log(beta_p) + (1.0 - frac) * math.log(beta_tilde)
            return mean + torch.exp(0.5 * log_var) * z

        # DDIM
        assert eps is not None
        if c.use_clipped_model_output:
            eps = (x_t - float(self._sqrt_alpha_bar[tt]) * x0) / float(self._sqrt_one_minus_alpha_bar[tt])
        sigma = e * math.sqrt(beta_tilde)
        dir_sq = c_s / c_t * (alpha_p * c_s + (1.0 - e) * (1.0 + e) * beta_p)
        if dir_sq < 0.0:
            fail("eta", eta, f"gives sigma^2 = {sigma * sigma!r} > 1 - alpha_bar_prev = {c_s!r} (DDIM eq. 7)")
        x_prev = sa_s * x0 + math.sqrt(dir_sq) * eps
        if sigma > 0.0:
            x_prev = x_prev + sigma * self._noise(x_t, noise, generator)
        return x_prev


def make_reference_port(**overrides: object) -> ReferencePort:
    r"""A :class:`ReferencePort` with ddspec's defaults: DDIM, linear 1e-4–0.02, T = 1000, ε-prediction,
    leading spacing, no clipping. Keyword ``overrides`` are passed to the constructor."""
    return ReferencePort(**overrides)  # type: ignore[arg-type]
