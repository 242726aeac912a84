r"""Stand-in for CompVis latent-diffusion / stable-diffusion (``ldm/models/diffusion/ddpm.py``, ``ddim.py``,
``ldm/modules/diffusionmodules/util.py``).

Re-stated from the libraries' interface and semantics (Rombach et al. 2022; the two repositories share
this code). PyTorch Lightning is replaced by ``torch.nn.Module``, the UNet by any callable, and the
first-stage / conditioning models are left out: they do not touch the sampler's numbers. What is kept:

* ``make_beta_schedule``: "linear" is :math:`(\mathrm{linspace}(\sqrt{\beta_s}, \sqrt{\beta_e}, T))^2` in
  float64 (diffusers' ``scaled_linear``); ``register_schedule`` builds float64 numpy tables and stores
  every one as a **float32** buffer; ``v_posterior`` mixes β̃ and β; the log variance is clipped at 1e-20;
* ``DDPM.p_sample``: x̂₀ from ε (or the model's x̂₀), clamped **in place** when ``clip_denoised``, the
  posterior mean, noise from ``noise_like`` (float32 ``torch.randn``, the global RNG), masked at t = 0;
* ``make_ddim_timesteps``: "uniform" ``range(0, T, T//S)``, "quad" ``(linspace(0, √(0.8T), S)²).astype(int)``,
  then **+1**; ``make_ddim_sampling_parameters``: ``alphas_prev`` starts with ᾱ at index 0 (not 1);
* ``DDIMSampler.register_buffer`` moves every tensor to ``cuda`` unconditionally (it raises where
  CUDA is absent); ``p_sample_ddim`` reads the model output as ε whatever ``parameterization`` is,
  builds float32 coefficients with ``torch.full`` and draws noise with ``noise_like``.

Index convention: the library's t is the 0-based index into the T-step tables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn


def make_beta_schedule(schedule: str, n_timestep: int, linear_start: float = 1e-4, linear_end: float = 2e-2,
                       cosine_s: float = 8e-3) -> np.ndarray:
    if schedule == "linear":
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, n_timestep, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        steps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * np.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        betas = np.clip(1 - alphas[1:] / alphas[:-1], a_min=0, a_max=0.999)
    elif schedule == "sqrt_linear":
        betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64)
    elif schedule == "sqrt":
        betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64) ** 0.5
    else:
        raise ValueError(f"schedule '{schedule}' unknown.")
    return betas.numpy()


def make_ddim_timesteps(ddim_discr_method: str, num_ddim_timesteps: int, num_ddpm_timesteps: int,
                        verbose: bool = True) -> np.ndarray:
    if ddim_discr_method == "uniform":
        c = num_ddpm_timesteps // num_ddim_timesteps
        ddim_timesteps = np.asarray(list(range(0, num_ddpm_timesteps, c)))
    elif ddim_discr_method == "quad":
        ddim_timesteps = ((np.linspace(0, np.sqrt(num_ddpm_timesteps * 0.8), num_ddim_timesteps)) ** 2).astype(int)
    else:
        raise NotImplementedError(f'There is no ddim discretization method called "{ddim_discr_method}"')
    steps_out = ddim_timesteps + 1  # "to get the final alpha values right"
    if verbose:
        print(f"Selected timesteps for ddim sampler: {steps_out}")
    return steps_out


def make_ddim_sampling_parameters(alphacums: torch.Tensor, ddim_timesteps: np.ndarray, eta: float,
                                  verbose: bool = True) -> tuple[Any, Any, np.ndarray]:
    alphas = alphacums[ddim_timesteps]
    alphas_prev = np.asarray([alphacums[0]] + alphacums[ddim_timesteps[:-1]].tolist())
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    if verbose:
        print(f"Selected alphas for ddim sampler: a_t: {alphas}; a_(t-1): {alphas_prev}")
    return sigmas, alphas, alphas_prev


def noise_like(shape: tuple[int, ...], device: Any, repeat: bool = False) -> torch.Tensor:
    if repeat:
        return torch.randn((1, *shape[1:]), device=device).repeat(shape[0], *((1,) * (len(shape) - 1)))
    return torch.randn(shape, device=device)


def extract_into_tensor(a: torch.Tensor, t: torch.Tensor, x_shape: tuple[int, ...]) -> torch.Tensor:
    b, *_ = t.shape
    return a.gather(-1, t).reshape(b, *((1,) * (len(x_shape) - 1)))


class DiffusionWrapper(nn.Module):
    """The UNet holder; with ``conditioning_key=None`` it calls ``diffusion_model(x, t)``."""

    def __init__(self, diffusion_model: Callable, conditioning_key: str | None = None) -> None:
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x: torch.Tensor, t: torch.Tensor, c_concat: list | None = None,
                c_crossattn: list | None = None) -> torch.Tensor:
        if self.conditioning_key is None:
            return self.diffusion_model(x, t)
        raise NotImplementedError("the stand-in keeps only the unconditional path")


class DDPM(nn.Module):
    def __init__(self, unet: Callable | None = None, timesteps: int = 1000, beta_schedule: str = "linear",
                 loss_type: str = "l2", log_every_t: int = 100, clip_denoised: bool = True,
                 linear_start: float = 1e-4, linear_end: float = 2e-2, cosine_s: float = 8e-3,
                 given_betas: Any = None, original_elbo_weight: float = 0.0, v_posterior: float = 0.0,
                 l_simple_weight: float = 1.0, conditioning_key: str | None = None, parameterization: str = "eps",
                 image_size: int = 256, channels: int = 3) -> None:
        super().__init__()
        assert parameterization in ["eps", "x0"], 'currently only supporting "eps" and "x0"'
        self.parameterization = parameterization
        self.clip_denoised = clip_denoised
        self.log_every_t = log_every_t
        self.image_size = image_size
        self.channels = channels
        self.model = DiffusionWrapper(unet if unet is not None else (lambda x, t: torch.zeros_like(x)), conditioning_key)
        self.v_posterior = v_posterior
        self.original_elbo_weight = original_elbo_weight
        self.l_simple_weight = l_simple_weight
        self.register_schedule(given_betas=given_betas, beta_schedule=beta_schedule, timesteps=timesteps,
                               linear_start=linear_start, linear_end=linear_end, cosine_s=cosine_s)
        self.loss_type = loss_type

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def register_schedule(self, given_betas: Any = None, beta_schedule: str = "linear", timesteps: int = 1000,
                          linear_start: float = 1e-4, linear_end: float = 2e-2, cosine_s: float = 8e-3) -> None:
        betas = given_betas if given_betas is not None else make_beta_schedule(
            beta_schedule, timesteps, linear_start=linear_start, linear_end=linear_end, cosine_s=cosine_s)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas, axis=0)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        (timesteps,) = betas.shape
        self.num_timesteps = int(timesteps)
        self.linear_start = linear_start
        self.linear_end = linear_end
        to_torch = partial(torch.tensor, dtype=torch.float32)
        self.register_buffer("betas", to_torch(betas))
        self.register_buffer("alphas_cumprod", to_torch(alphas_cumprod))
        self.register_buffer("alphas_cumprod_prev", to_torch(alphas_cumprod_prev))
        self.register_buffer("sqrt_alphas_cumprod", to_torch(np.sqrt(alphas_cumprod)))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", to_torch(np.sqrt(1.0 - alphas_cumprod)))
        self.register_buffer("sqrt_recip_alphas_cumprod", to_torch(np.sqrt(1.0 / alphas_cumprod)))
        self.register_buffer("sqrt_recipm1_alphas_cumprod", to_torch(np.sqrt(1.0 / alphas_cumprod - 1)))
        posterior_variance = ((1 - self.v_posterior) * betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
                              + self.v_posterior * betas)
        self.register_buffer("posterior_variance", to_torch(posterior_variance))
        self.register_buffer("posterior_log_variance_clipped", to_torch(np.log(np.maximum(posterior_variance, 1e-20))))
        self.register_buffer("posterior_mean_coef1", to_torch(betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)))
        self.register_buffer("posterior_mean_coef2",
                             to_torch((1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)))

    def predict_start_from_noise(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise)

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mean = (extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return (mean, extract_into_tensor(self.posterior_variance, t, x_t.shape),
                extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape))

    def p_mean_variance(self, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool) -> tuple[torch.Tensor, ...]:
        model_out = self.model(x, t)
        if self.parameterization == "eps":
            x_recon = self.predict_start_from_noise(x, t=t, noise=model_out)
        else:
            x_recon = model_out
        if clip_denoised:
            x_recon.clamp_(-1.0, 1.0)
        return self.q_posterior(x_start=x_recon, x_t=x, t=t)

    @torch.no_grad()
    def p_sample(self, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True, repeat_noise: bool = False) -> torch.Tensor:
        b = x.shape[0]
        mean, _, log_variance = self.p_mean_variance(x=x, t=t, clip_denoised=clip_denoised)
        noise = noise_like(x.shape, x.device, repeat_noise)
        nonzero_mask = (1 - (t == 0).float()).reshape(b, *((1,) * (len(x.shape) - 1)))
        return mean + nonzero_mask * (0.5 * log_variance).exp() * noise

    @torch.no_grad()
    def p_sample_loop(self, shape: tuple[int, ...], return_intermediates: bool = False) -> Any:
        device = self.betas.device
        b = shape[0]
        img = torch.randn(shape, device=device)  # no way to pass x_T
        intermediates = [img]
        for i in reversed(range(0, self.num_timesteps)):
            img = self.p_sample(img, torch.full((b,), i, device=device, dtype=torch.long), clip_denoised=self.clip_denoised)
            if i % self.log_every_t == 0 or i == self.num_timesteps - 1:
                intermediates.append(img)
        return (img, intermediates) if return_intermediates else img


class LatentDiffusion(DDPM):
    """The latent model: the sampler reaches the UNet through ``apply_model(x, t, cond)``."""

    def __init__(self, unet: Callable | None = None, scale_factor: float = 1.0, conditioning_key: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(unet, conditioning_key=conditioning_key, **kwargs)
        self.clip_denoised = False
        self.scale_factor = scale_factor

    def apply_model(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: Any, return_ids: bool = False) -> torch.Tensor:
        if not isinstance(cond, dict):
            key = "c_concat" if self.model.conditioning_key == "concat" else "c_crossattn"
            cond = {key: cond if isinstance(cond, list) else [cond]}
        out = self.model(x_noisy, t, **cond)
        return out[0] if isinstance(out, tuple) and not return_ids else out


class DDIMSampler:
    def __init__(self, model: Any, schedule: str = "linear", **kwargs: Any) -> None:
        self.model = model
        self.ddpm_num_timesteps = model.num_timesteps
        self.schedule = schedule

    def register_buffer(self, name: str, attr: Any) -> None:
        if type(attr) == torch.Tensor and attr.device != torch.device("cuda"):  # noqa: E721 - as written upstream
            attr = attr.to(torch.device("cuda"))
        setattr(self, name, attr)

    def make_schedule(self, ddim_num_steps: int, ddim_discretize: str = "uniform", ddim_eta: float = 0.0,
                      verbose: bool = True) -> None:
        self.ddim_timesteps = make_ddim_timesteps(ddim_discretize, ddim_num_steps, self.ddpm_num_timesteps, verbose=verbose)
        alphas_cumprod = self.model.alphas_cumprod
        assert alphas_cumprod.shape[0] == self.ddpm_num_timesteps, "alphas have to be defined for each timestep"

        def to_torch(x: torch.Tensor) -> torch.Tensor:
            return x.clone().detach().to(torch.float32).to(self.model.device)

        self.register_buffer("betas", to_torch(self.model.betas))
        self.register_buffer("alphas_cumprod", to_torch(alphas_cumprod))
        self.register_buffer("alphas_cumprod_prev", to_torch(self.model.alphas_cumprod_prev))
        self.register_buffer("sqrt_one_minus_alphas_cumprod", to_torch(np.sqrt(1.0 - alphas_cumprod.cpu())))
        sigmas, alphas, alphas_prev = make_ddim_sampling_parameters(alphas_cumprod.cpu(), self.ddim_timesteps,
                                                                    ddim_eta, verbose=verbose)
        self.register_buffer("ddim_sigmas", sigmas)
        self.register_buffer("ddim_alphas", alphas)
        self.register_buffer("ddim_alphas_prev", alphas_prev)
        self.register_buffer("ddim_sqrt_one_minus_alphas", np.sqrt(1.0 - alphas))

    @torch.no_grad()
    def sample(self, S: int, batch_size: int, shape: tuple[int, ...], conditioning: Any = None, eta: float = 0.0,
               temperature: float = 1.0, noise_dropout: float = 0.0, verbose: bool = True, x_T: torch.Tensor | None = None,
               log_every_t: int = 100, unconditional_guidance_scale: float = 1.0,
               unconditional_conditioning: Any = None, **kwargs: Any) -> tuple[torch.Tensor, dict]:
        self.make_schedule(ddim_num_steps=S, ddim_eta=eta, verbose=verbose)
        C, H, W = shape
        print(f"Data shape for DDIM sampling is {(batch_size, C, H, W)}, eta {eta}")
        return self.ddim_sampling(conditioning, (batch_size, C, H, W), x_T=x_T, temperature=temperature,
                                  noise_dropout=noise_dropout, log_every_t=log_every_t,
                                  unconditional_guidance_scale=unconditional_guidance_scale,
                                  unconditional_conditioning=unconditional_conditioning)

    @torch.no_grad()
    def ddim_sampling(self, cond: Any, shape: tuple[int, ...], x_T: torch.Tensor | None = None,
                      ddim_use_original_steps: bool = False, timesteps: Any = None, log_every_t: int = 100,
                      temperature: float = 1.0, noise_dropout: float = 0.0, unconditional_guidance_scale: float = 1.0,
                      unconditional_conditioning: Any = None) -> tuple[torch.Tensor, dict]:
        device = self.model.betas.device
        b = shape[0]
        img = torch.randn(shape, device=device) if x_T is None else x_T
        if timesteps is None:
            timesteps = self.ddpm_num_timesteps if ddim_use_original_steps else self.ddim_timesteps
        intermediates: dict[str, list] = {"x_inter": [img], "pred_x0": [img]}
        time_range = reversed(range(0, timesteps)) if ddim_use_original_steps else np.flip(timesteps)
        total_steps = timesteps if ddim_use_original_steps else timesteps.shape[0]
        print(f"Running DDIM Sampling with {total_steps} timesteps")
        for i, step in enumerate(time_range):
            index = total_steps - i - 1
            ts = torch.full((b,), step, device=device, dtype=torch.long)
            img, pred_x0 = self.p_sample_ddim(img, cond, ts, index=index, use_original_steps=ddim_use_original_steps,
                                              temperature=temperature, noise_dropout=noise_dropout,
                                              unconditional_guidance_scale=unconditional_guidance_scale,
                                              unconditional_conditioning=unconditional_conditioning)
            if index % log_every_t == 0 or index == total_steps - 1:
                intermediates["x_inter"].append(img)
                intermediates["pred_x0"].append(pred_x0)
        return img, intermediates

    @torch.no_grad()
    def p_sample_ddim(self, x: torch.Tensor, c: Any, t: torch.Tensor, index: int, repeat_noise: bool = False,
                      use_original_steps: bool = False, temperature: float = 1.0, noise_dropout: float = 0.0,
                      unconditional_guidance_scale: float = 1.0, unconditional_conditioning: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, device = x.shape[0], x.device
        if unconditional_conditioning is None or unconditional_guidance_scale == 1.0:
            e_t = self.model.apply_model(x, t, c)
        else:
            e_t_uncond, e_t = self.model.apply_model(torch.cat([x] * 2), torch.cat([t] * 2),
                                                     torch.cat([unconditional_conditioning, c])).chunk(2)
            e_t = e_t_uncond + unconditional_guidance_scale * (e_t - e_t_uncond)
        alphas = self.model.alphas_cumprod if use_original_steps else self.ddim_alphas
        alphas_prev = self.model.alphas_cumprod_prev if use_original_steps else self.ddim_alphas_prev
        sqrt_one_minus = self.model.sqrt_one_minus_alphas_cumprod if use_original_steps else self.ddim_sqrt_one_minus_alphas
        sigmas = self.ddim_sigmas
        a_t = torch.full((b, 1, 1, 1), float(alphas[index]), device=device)
        a_prev = torch.full((b, 1, 1, 1), float(alphas_prev[index]), device=device)
        sigma_t = torch.full((b, 1, 1, 1), float(sigmas[index]), device=device)
        sqrt_one_minus_at = torch.full((b, 1, 1, 1), float(sqrt_one_minus[index]), device=device)
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * noise_like(x.shape, device, repeat_noise) * temperature
        if noise_dropout > 0.0:
            noise = torch.nn.functional.dropout(noise, p=noise_dropout)
        return a_prev.sqrt() * pred_x0 + dir_xt + noise, pred_x0
