r"""A stand-in for denoising-diffusion-pytorch's ``GaussianDiffusion`` (lucidrains), for the adapter tests.

The library imports torchvision, which does not import beside the CPU torch build used here, so the
adapter is tested against this re-statement. It is written from the library's interface and equations
(``denoising_diffusion_pytorch/denoising_diffusion_pytorch.py``, read at commit faed4db); no code is
copied. What it keeps, because the adapter and the harness depend on it:

* attribute names: ``model``, ``channels``, ``self_condition``, ``image_size``, ``objective``,
  ``num_timesteps``, ``sampling_timesteps``, ``is_ddim_sampling``, ``ddim_sampling_eta``,
  ``normalize`` / ``unnormalize``, and the float32 buffers (``betas``, ``alphas_cumprod``,
  ``sqrt_recip_alphas_cumprod``, ``posterior_mean_coef1``, …) computed in float64 and then rounded;
* the three schedules (linear scaled by 1000/T, cosine of Nichol & Dhariwal eq. 17, the ᾱ-space sigmoid
  of Chen 2023), each β clipped to [0, 0.999] where the library clips;
* ``model_predictions(x, t, x_self_cond, clip_x_start, rederive_pred_noise)``: the model is called as
  ``self.model(x, t, x_self_cond)``; for ``pred_x0`` and ``pred_v`` ε̂ is always re-derived from the
  (maybe clipped) x̂₀;
* ``p_sample`` (posterior mean of the x̂₀ clamped *in place*, σ = exp(½ log β̃ clipped at 1e-20), no
  noise at t = 0), ``p_sample_loop`` (T steps), ``ddim_sample`` (``linspace(-1, T-1, N+1).int()``,
  x̂₀ clipped, ε̂ re-derived, the last step returns x̂₀), ``sample`` choosing between them;
* x_T drawn inside the loops with ``torch.randn(shape)`` and noise with ``torch.randn_like`` (global
  RNG), the loops under ``torch.inference_mode()``, the output passed through ``unnormalize``.

It is a plain ``torch.nn.Module`` with registered buffers, like the original. :class:`TinyUnet` stands
in for the library's ``Unet`` attributes (``channels``, ``out_dim``, ``self_condition``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

__all__ = ["GaussianDiffusion", "TinyUnet", "linear_schedule", "cosine_schedule", "sigmoid_schedule"]


def linear_schedule(T: int) -> torch.Tensor:
    """Ho et al.'s 1e-4 … 0.02, scaled by 1000/T, in float64."""
    k = 1000 / T
    return torch.linspace(k * 0.0001, k * 0.02, T, dtype=torch.float64)


def _betas_of(ab: torch.Tensor) -> torch.Tensor:
    ab = ab / ab[0]
    return torch.clip(1 - ab[1:] / ab[:-1], 0, 0.999)


def cosine_schedule(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17, in float64."""
    u = torch.linspace(0, T, T + 1, dtype=torch.float64) / T
    return _betas_of(torch.cos((u + s) / (1 + s) * math.pi * 0.5) ** 2)


def sigmoid_schedule(T: int, start: float = -3, end: float = 3, tau: float = 1, clamp_min: float = 1e-5) -> torch.Tensor:
    """Chen 2023's sigmoid schedule in ᾱ-space, in float64 (``clamp_min`` is accepted and unused, as in the library)."""
    u = torch.linspace(0, T, T + 1, dtype=torch.float64) / T
    lo = torch.tensor(start / tau).sigmoid()
    hi = torch.tensor(end / tau).sigmoid()
    return _betas_of((hi - ((u * (end - start) + start) / tau).sigmoid()) / (hi - lo))


_SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": linear_schedule, "cosine": cosine_schedule, "sigmoid": sigmoid_schedule,
}


class TinyUnet(torch.nn.Module):
    """The attributes ``GaussianDiffusion`` reads off its ``Unet``; its forward returns zeros."""

    def __init__(self, channels: int = 3, self_condition: bool = False) -> None:
        super().__init__()
        self.channels = channels
        self.out_dim = channels
        self.self_condition = self_condition

    def forward(self, x: torch.Tensor, t: torch.Tensor, x_self_cond: Any = None) -> torch.Tensor:
        return torch.zeros_like(x)


def _gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return table.gather(-1, t).reshape(t.shape[0], *([1] * (like.ndim - 1)))


class GaussianDiffusion(torch.nn.Module):
    """The library's ``GaussianDiffusion`` sampling side (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, *, image_size: int | tuple[int, int], timesteps: int = 1000,
                 sampling_timesteps: int | None = None, objective: str = "pred_v", beta_schedule: str = "sigmoid",
                 schedule_fn_kwargs: dict | None = None, ddim_sampling_eta: float = 0.0,
                 auto_normalize: bool = True) -> None:
        super().__init__()
        if objective not in ("pred_noise", "pred_x0", "pred_v"):
            raise ValueError(f"objective={objective!r}: must be pred_noise, pred_x0 or pred_v")
        if beta_schedule not in _SCHEDULES:
            raise ValueError(f"unknown beta schedule {beta_schedule}")
        self.model = model
        self.channels = model.channels
        self.self_condition = model.self_condition
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.objective = objective
        betas = _SCHEDULES[beta_schedule](timesteps, **(schedule_fn_kwargs or {}))
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, dim=0)
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        self.num_timesteps = int(betas.shape[0])
        self.sampling_timesteps = timesteps if sampling_timesteps is None else sampling_timesteps
        if self.sampling_timesteps > timesteps:
            raise ValueError("sampling_timesteps must be <= timesteps")
        self.is_ddim_sampling = self.sampling_timesteps < timesteps
        self.ddim_sampling_eta = ddim_sampling_eta
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        tables = {
            "betas": betas, "alphas_cumprod": ab, "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas_cumprod": ab.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - ab).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / ab).sqrt(), "sqrt_recipm1_alphas_cumprod": (1.0 / ab - 1).sqrt(),
            "posterior_variance": post_var, "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
        }
        for key, value in tables.items():  # computed in float64, stored in float32, as the library does
            self.register_buffer(key, value.to(torch.float32))
        self.normalize = (lambda x: x * 2 - 1) if auto_normalize else (lambda x: x)
        self.unnormalize = (lambda x: (x + 1) * 0.5) if auto_normalize else (lambda x: x)

    @property
    def device(self) -> torch.device:
        return self.betas.device

    # -- parameterisations (Ho et al. eq. 15; Salimans & Ho 2022 §4) --------------------------------

    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * noise

    def predict_noise_from_start(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def predict_start_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _gather(self.sqrt_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x_start + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _gather(self.posterior_variance, t, x_t), _gather(self.posterior_log_variance_clipped, t, x_t)

    def model_predictions(self, x: torch.Tensor, t: torch.Tensor, x_self_cond: Any = None, clip_x_start: bool = False,
                          rederive_pred_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x, t, x_self_cond)
        clip = (lambda z: torch.clamp(z, -1.0, 1.0)) if clip_x_start else (lambda z: z)
        if self.objective == "pred_noise":
            noise = out
            x_start = clip(self.predict_start_from_noise(x, t, noise))
            if clip_x_start and rederive_pred_noise:
                noise = self.predict_noise_from_start(x, t, x_start)
        else:
            raw = out if self.objective == "pred_x0" else self.predict_start_from_v(x, t, out)
            x_start = clip(raw)
            noise = self.predict_noise_from_start(x, t, x_start)
        return noise, x_start

    # -- ancestral sampling (Ho et al. 2020, Algorithm 2) -------------------------------------------

    def p_mean_variance(self, x: torch.Tensor, t: torch.Tensor, x_self_cond: Any = None,
                        clip_denoised: bool = True) -> tuple[torch.Tensor, ...]:
        _, x_start = self.model_predictions(x, t, x_self_cond)
        if clip_denoised:
            x_start.clamp_(-1.0, 1.0)
        mean, var, log_var = self.q_posterior(x_start, x, t)
        return mean, var, log_var, x_start

    @torch.inference_mode()
    def p_sample(self, x: torch.Tensor, t: int, x_self_cond: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        times = torch.full((x.shape[0],), t, device=self.device, dtype=torch.long)
        mean, _, log_var, x_start = self.p_mean_variance(x, times, x_self_cond, clip_denoised=True)
        noise = torch.randn_like(x) if t > 0 else 0.0
        return mean + (0.5 * log_var).exp() * noise, x_start

    @torch.inference_mode()
    def p_sample_loop(self, shape: tuple[int, ...], return_all_timesteps: bool = False) -> torch.Tensor:
        img = torch.randn(shape, device=self.device)
        imgs, x_start = [img], None
        for t in reversed(range(self.num_timesteps)):
            img, x_start = self.p_sample(img, t, x_start if self.self_condition else None)
            imgs.append(img)
        return self.unnormalize(torch.stack(imgs, dim=1) if return_all_timesteps else img)

    # -- DDIM (Song et al. 2021, eq. 12 with σ(η) of eq. 16) ----------------------------------------

    @torch.inference_mode()
    def ddim_sample(self, shape: tuple[int, ...], return_all_timesteps: bool = False) -> torch.Tensor:
        T, N, eta = self.num_timesteps, self.sampling_timesteps, self.ddim_sampling_eta
        times = list(reversed(torch.linspace(-1, T - 1, steps=N + 1).int().tolist()))
        img = torch.randn(shape, device=self.device)
        imgs, x_start = [img], None
        for time, time_next in zip(times[:-1], times[1:]):
            cond = torch.full((shape[0],), time, device=self.device, dtype=torch.long)
            pred_noise, x_start = self.model_predictions(img, cond, x_start if self.self_condition else None,
                                                         clip_x_start=True, rederive_pred_noise=True)
            if time_next < 0:
                img = x_start
                imgs.append(img)
                continue
            a, a_next = self.alphas_cumprod[time], self.alphas_cumprod[time_next]
            sigma = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            c = (1 - a_next - sigma**2).sqrt()
            img = x_start * a_next.sqrt() + c * pred_noise + sigma * torch.randn_like(img)
            imgs.append(img)
        return self.unnormalize(torch.stack(imgs, dim=1) if return_all_timesteps else img)

    @torch.inference_mode()
    def sample(self, batch_size: int = 16, return_all_timesteps: bool = False) -> torch.Tensor:
        h, w = self.image_size
        fn = self.ddim_sample if self.is_ddim_sampling else self.p_sample_loop
        return fn((batch_size, self.channels, h, w), return_all_timesteps=return_all_timesteps)
