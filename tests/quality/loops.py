r"""Whole sampling loops for the self-test of the ``loop`` family: four real styles and planted bugs.

The four styles are written here from the libraries' interfaces and equations (``/work/shared/anchors.md``,
"Whole loops, as the libraries write them"); no library code is copied:

1. :func:`tutorial_sample`: the hand-written DDPM loop of every tutorial (Ho et al. 2020, Algorithm 2
   with σ² = β̃), float32 tables, every training step only (N = T).
2. :func:`generalized_steps`: ermongroup/ddim's style: ``seq`` / ``seq_next = [-1] + seq[:-1]`` walked
   in reverse, ᾱ from a zero-padded β in :func:`compute_alpha` (index −1 gives ᾱ = 1), float model
   timesteps ``torch.ones(n) * i``, noise from ``torch.randn_like`` (the global RNG).
3. :class:`SpacedDiffusion`: improved-diffusion's style: ``space_timesteps`` respacing, float64 numpy
   tables whose per-step coefficients are rounded to float32 (:func:`extract_into_tensor`), the model
   wrapped to map the respaced index back (optionally rescaled to 0..1000), ``nonzero_mask``.
4. :class:`DDIMSamplerStyle`: CompVis' ``DDIMSampler`` style: ``range(0, T, T//S) + 1``,
   ``alphas_prev = [ᾱ_0] + ᾱ[timesteps[:-1]]`` (the last step goes to ᾱ_0), noise from the global RNG.

:data:`CORRECT` declares each (the ≤ 10 lines of glue of docs/loops.md); :data:`BUGS` holds the planted
bugs, each a small change to :class:`PlainDDIM` / :class:`PlainDDPM` (both correct, :data:`CONTROLS`)
with the check-name prefix that must fail.

Index convention (``docs/conventions.md``): t is the 0-based index, −1 the data with ᾱ = 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.protocol import Conventions

__all__ = [
    "T", "BETAS64", "tutorial_sample", "compute_alpha", "generalized_steps", "space_timesteps", "SpacedDiffusion",
    "DDIMSamplerStyle", "LoopCase", "CORRECT", "CONTROLS", "BUGS", "PlainDDIM", "PlainDDPM",
    "tutorial_target", "ermongroup_target", "improved_diffusion_target", "compvis_target", "lucidrains_style_times",
]

T = 1000
#: The linear schedule (Ho et al. 2020, §4: 1e-4 to 0.02 over T = 1000), float64 as numpy makes it.
BETAS64 = np.linspace(1e-4, 0.02, T, dtype=np.float64)


# -- 1. the tutorial loop ---------------------------------------------------------------------------


def tutorial_sample(model: Callable, x_T: torch.Tensor, num_steps: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, σ² = β̃), every one of the T steps."""
    betas = torch.linspace(1e-4, 0.02, T)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    x = x_T
    for i in reversed(range(T)):
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        eps = model(x, t)
        mean = (x - betas[i] / torch.sqrt(1.0 - alphas_cumprod[i]) * eps) / torch.sqrt(alphas[i])
        if i > 0:
            var = betas[i] * (1.0 - alphas_cumprod[i - 1]) / (1.0 - alphas_cumprod[i])
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = mean + torch.sqrt(var) * z
        else:
            x = mean
    return x


def tutorial_sample_sigma_beta_t(model: Callable, x_T: torch.Tensor, num_steps: int, *,
                                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The tutorial loop with a planted bug: σ² = β_t where it declares β̃_t (Ho et al. 2020 allow both, §3.2,
    but the declaration says fixed_small). With float32 tables the two differ visibly only at the last steps."""
    betas = torch.linspace(1e-4, 0.02, T)
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    x = x_T
    for i in reversed(range(T)):
        eps = model(x, torch.full((x.shape[0],), i, dtype=torch.long))
        mean = (x - betas[i] / torch.sqrt(1.0 - alphas_cumprod[i]) * eps) / torch.sqrt(alphas[i])
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = mean + torch.sqrt(betas[i]) * z if i > 0 else mean
    return x


# -- 2. ermongroup/ddim style -----------------------------------------------------------------------


def compute_alpha(beta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ at index t per batch element, from β padded with a leading 0 (so t = −1 reads ᾱ = 1)."""
    padded = torch.cat([torch.zeros(1, dtype=beta.dtype, device=beta.device), beta], dim=0)
    return (1 - padded).cumprod(dim=0).index_select(0, t + 1).view(-1, 1, 1, 1)


def generalized_steps(x: torch.Tensor, seq: Any, model: Callable, b: torch.Tensor, **kwargs: Any) -> tuple[list, list]:
    """DDIM (Song et al. 2021, eq. 12 with σ(η) of eq. 16) walked over ``seq`` in reverse; returns the states."""
    with torch.no_grad():
        n = x.size(0)
        seq_next = [-1] + list(seq[:-1])
        states, x0s = [x], []
        for i, j in zip(reversed(seq), reversed(seq_next)):
            t = torch.ones(n) * i
            t_next = torch.ones(n) * j
            a_t = compute_alpha(b, t.long())
            a_next = compute_alpha(b, t_next.long())
            x_t = states[-1]
            e_t = model(x_t, t)
            x0_t = (x_t - e_t * (1 - a_t).sqrt()) / a_t.sqrt()
            x0s.append(x0_t)
            c1 = kwargs.get("eta", 0) * ((1 - a_t / a_next) * (1 - a_next) / (1 - a_t)).sqrt()
            c2 = ((1 - a_next) - c1**2).sqrt()
            states.append(a_next.sqrt() * x0_t + c1 * torch.randn_like(x) + c2 * e_t)
    return states, x0s


# -- 3. improved-diffusion style --------------------------------------------------------------------


def space_timesteps(num_timesteps: int, section_counts: str) -> set[int]:
    """The kept timesteps: per equal section, ``count`` indices at a fractional stride, rounded."""
    counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, kept = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += stride
        start += size
    return set(kept)


def extract_into_tensor(arr: np.ndarray, timesteps: torch.Tensor, broadcast_shape: tuple[int, ...]) -> torch.Tensor:
    """``arr[t]`` per batch element as a float32 tensor broadcastable to ``broadcast_shape``."""
    res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class _WrappedModel:
    def __init__(self, model: Callable, timestep_map: list[int], rescale: bool, original: int) -> None:
        self.model, self.timestep_map, self.rescale, self.original = model, timestep_map, rescale, original

    def __call__(self, x: torch.Tensor, ts: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        new_ts = torch.tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)[ts]
        if self.rescale:
            new_ts = new_ts.float() * (1000.0 / self.original)
        return self.model(x, new_ts, **kwargs)


class SpacedDiffusion:
    """Respaced DDPM (Nichol & Dhariwal 2021, §4): β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}, FIXED_SMALL, ε-prediction."""

    def __init__(self, betas: np.ndarray, use_timesteps: set[int], *, rescale_timesteps: bool = False) -> None:
        self.original_num_steps = len(betas)
        base = np.cumprod(1.0 - betas)
        last, new_betas, self.timestep_map = 1.0, [], []
        for i, ab in enumerate(base):
            if i in use_timesteps:
                new_betas.append(1 - ab / last)
                last = ab
                self.timestep_map.append(i)
        self.rescale_timesteps = rescale_timesteps
        b = np.array(new_betas, dtype=np.float64)
        self.num_timesteps = len(b)
        ac = np.cumprod(1.0 - b)
        ac_prev = np.append(1.0, ac[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        self.posterior_variance = b * (1.0 - ac_prev) / (1.0 - ac)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:])) \
            if len(b) > 1 else np.log(np.array([max(self.posterior_variance[0], 1e-20)]))
        self.posterior_mean_coef1 = b * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac)

    def p_sample(self, model: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool) -> torch.Tensor:
        eps = model(x, t)
        pred_xstart = (extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x.shape) * x
                       - extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x.shape) * eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = (extract_into_tensor(self.posterior_mean_coef1, t, x.shape) * pred_xstart
                + extract_into_tensor(self.posterior_mean_coef2, t, x.shape) * x)
        log_variance = extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
        noise = torch.randn_like(x)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        return mean + nonzero_mask * torch.exp(0.5 * log_variance) * noise

    def p_sample_loop(self, model: Callable, shape: tuple[int, ...], noise: torch.Tensor | None = None,
                      clip_denoised: bool = True) -> torch.Tensor:
        wrapped = _WrappedModel(model, self.timestep_map, self.rescale_timesteps, self.original_num_steps)
        img = noise if noise is not None else torch.randn(*shape)
        for i in list(range(self.num_timesteps))[::-1]:
            t = torch.tensor([i] * shape[0], device=img.device)
            with torch.no_grad():
                img = self.p_sample(wrapped, img, t, clip_denoised)
        return img


# -- 4. CompVis DDIMSampler style ---------------------------------------------------------------------


class DDIMSamplerStyle:
    """DDIM with ``range(0, T, T//S) + 1`` and the last step to ᾱ_0; float32 tables; global-RNG noise."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod

    def make_schedule(self, ddim_num_steps: int, ddim_eta: float) -> None:
        c = len(self.alphas_cumprod) // ddim_num_steps
        self.ddim_timesteps = np.asarray(list(range(0, len(self.alphas_cumprod), c))) + 1
        alphacums = self.alphas_cumprod.cpu().numpy()
        self.ddim_alphas = alphacums[self.ddim_timesteps]
        self.ddim_alphas_prev = np.asarray([alphacums[0]] + alphacums[self.ddim_timesteps[:-1]].tolist())
        self.ddim_sigmas = ddim_eta * np.sqrt((1 - self.ddim_alphas_prev) / (1 - self.ddim_alphas)
                                              * (1 - self.ddim_alphas / self.ddim_alphas_prev))

    def p_sample_ddim(self, model: Callable, x: torch.Tensor, t: torch.Tensor, index: int) -> torch.Tensor:
        b = x.shape[0]
        e_t = model(x, t)
        a_t = torch.full((b, 1, 1, 1), float(self.ddim_alphas[index]))
        a_prev = torch.full((b, 1, 1, 1), float(self.ddim_alphas_prev[index]))
        sigma_t = torch.full((b, 1, 1, 1), float(self.ddim_sigmas[index]))
        sqrt_one_minus_at = torch.full((b, 1, 1, 1), float(np.sqrt(1.0 - self.ddim_alphas[index])))
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * torch.randn(x.shape, device=x.device)
        return a_prev.sqrt() * pred_x0 + dir_xt + noise

    def sample(self, model: Callable, S: int, x_T: torch.Tensor, eta: float = 0.0) -> torch.Tensor:
        self.make_schedule(S, eta)
        img, total = x_T, self.ddim_timesteps.shape[0]
        for i, step in enumerate(np.flip(self.ddim_timesteps)):
            ts = torch.full((img.shape[0],), int(step), dtype=torch.long)
            img = self.p_sample_ddim(model, img, ts, total - i - 1)
        return img


def lucidrains_style_times(n: int) -> list[int]:
    """``linspace(-1, T - 1, S + 1).int()`` reversed, without the final −1 (truncation, not rounding)."""
    return torch.linspace(-1, T - 1, steps=n + 1).int().tolist()[::-1][:-1]


# -- the declarations (docs/loops.md shows these) -----------------------------------------------------


def tutorial_target() -> LoopSampler:
    conv = Conventions(family="ddpm", num_train_timesteps=T, variance_type="fixed_small")
    return LoopSampler(tutorial_sample, conv, accepts_eta=False, supported_num_steps={T}, table_dtype=torch.float32)


_B32 = torch.from_numpy(BETAS64).float()


def _ermongroup_glue(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:
    states, _ = generalized_steps(x_T, range(0, T, T // num_steps), model, _B32, eta=eta)
    return states[-1]


def ermongroup_target(declare_timesteps: bool = True) -> LoopSampler:
    conv = Conventions(family="ddim", num_train_timesteps=T)
    rule = (lambda n: list(range(0, T, T // n))[::-1]) if declare_timesteps else None
    return LoopSampler(_ermongroup_glue, conv, accepts_generator=False, timesteps=rule, table_dtype=torch.float32,
                       name="ermongroup-generalized_steps")


def improved_diffusion_target(*, num_train: int = T, rescale: bool = False, declare_rescale: bool = True) -> LoopSampler:
    betas = np.linspace(1e-4 * 1000 / num_train, 0.02 * 1000 / num_train, num_train, dtype=np.float64)

    def sample(model: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
        diffusion = SpacedDiffusion(betas, space_timesteps(num_train, str(num_steps)), rescale_timesteps=rescale)
        return diffusion.p_sample_loop(model, tuple(x_T.shape), noise=x_T, clip_denoised=True)

    conv = Conventions(family="ddpm", num_train_timesteps=num_train, beta_start=1e-4 * 1000 / num_train,
                       beta_end=0.02 * 1000 / num_train, variance_type="fixed_small", clip_sample=True)
    mapping = (lambda t: t * 1000.0 / num_train) if rescale and declare_rescale else None
    return LoopSampler(sample, conv, accepts_eta=False, accepts_generator=False,
                       timesteps=lambda n: sorted(space_timesteps(num_train, str(n)), reverse=True),
                       coefficient_dtype=torch.float32, model_timestep=mapping, name="improved-diffusion-p_sample_loop")


def compvis_target() -> LoopSampler:
    sampler = DDIMSamplerStyle(torch.from_numpy(np.cumprod(1.0 - BETAS64)).float())

    def sample(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:
        return sampler.sample(model, num_steps, x_T, eta=eta)

    conv = Conventions(family="ddim", num_train_timesteps=T, steps_offset=1, final_alpha_bar_is_one=False)
    return LoopSampler(sample, conv, accepts_generator=False, supported_num_steps=lambda n: T % n == 0 and n < T,
                       table_dtype=torch.float32, name="compvis-DDIMSampler")


# -- plain loops and their planted bugs -----------------------------------------------------------------


class PlainDDIM:
    r"""DDIM (Song et al. 2021, eq. 12, σ(η) of eq. 16), leading spacing, float64 tables, generator noise.

    Each hook is one line of the loop, so that a bug is a subclass overriding one hook.
    """

    clip = False

    def __init__(self) -> None:
        self.ab = torch.from_numpy(np.cumprod(1.0 - BETAS64))

    def timesteps(self, n: int) -> list[int]:
        return list(range(0, T, T // n))[:n][::-1]

    def call_model(self, model: Callable, x: torch.Tensor, t: int) -> torch.Tensor:
        return model(x, torch.full((x.shape[0],), t, dtype=torch.long))

    def alpha_prev(self, ts: list[int], k: int) -> torch.Tensor:
        return self.ab[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)

    def sigma(self, a: torch.Tensor, a_prev: torch.Tensor, eta: float) -> torch.Tensor:
        return eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)

    def noise(self, x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)

    def start(self, x_T: torch.Tensor) -> torch.Tensor:
        return x_T

    def __call__(self, model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        ts = self.timesteps(num_steps)
        x = self.start(x_T)
        for k, t in enumerate(ts):
            a, a_prev = self.ab[t], self.alpha_prev(ts, k)
            eps = self.call_model(model, x, t)
            x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
            if self.clip:
                x0 = x0.clamp(-1, 1)
                eps = (x - torch.sqrt(a) * x0) / torch.sqrt(1 - a)
            s = self.sigma(a, a_prev, eta)
            x = self.update(x, torch.sqrt(a_prev) * x0 + torch.sqrt((1 - a_prev - s**2).clamp(min=0)) * eps)
            if s > 0:
                x = x + s * self.noise(x, k, generator)
        return x

    def update(self, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return new


class PlainDDPM:
    r"""Respaced ancestral DDPM (Ho et al. 2020, eq. 7 and Algorithm 2; β' of the respaced schedule),
    σ² = β̃', leading spacing, float64 tables, generator noise, no noise at the last step."""

    def __init__(self) -> None:
        self.ab = torch.from_numpy(np.cumprod(1.0 - BETAS64))

    def timesteps(self, n: int) -> list[int]:
        return list(range(0, T, T // n))[:n][::-1]

    def variance(self, t: int, t_prev: int, a: torch.Tensor, a_prev: torch.Tensor, beta: torch.Tensor,
                 last_var: torch.Tensor | None) -> torch.Tensor:
        return beta * (1 - a_prev) / (1 - a)

    def adds_noise(self, t_prev: int) -> bool:
        return t_prev >= 0

    def finish(self, x: torch.Tensor, before_last: torch.Tensor) -> torch.Tensor:
        return x

    def __call__(self, model: Callable, x_T: torch.Tensor, num_steps: int, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        ts = self.timesteps(num_steps)
        x, before, var = x_T, x_T, None
        for k, t in enumerate(ts):
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            a = self.ab[t]
            a_prev = self.ab[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
            beta = 1 - a / a_prev
            eps = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
            x0 = (x - torch.sqrt(1 - a) * eps) / torch.sqrt(a)
            mean = torch.sqrt(a_prev) * beta / (1 - a) * x0 + torch.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
            var = self.variance(t, t_prev, a, a_prev, beta, var)
            before = x
            x = mean
            if self.adds_noise(t_prev):
                x = mean + torch.sqrt(var) * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return self.finish(x, before)


class LearnedRangeDDPM(PlainDDPM):
    r"""improved-diffusion's LEARNED_RANGE: the model's second half of channels is v in (−1, 1) and
    log σ² = f log β' + (1 − f) log β̃', f = (v + 1)/2 (Nichol & Dhariwal 2021, eq. 15)."""

    def __call__(self, model: Callable, x_T: torch.Tensor, num_steps: int, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        def split_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = model(x, t)
            self._v = out[:, x.shape[1]:]
            return out[:, : x.shape[1]]

        return super().__call__(split_model, x_T, num_steps, generator=generator)

    def variance(self, t: int, t_prev: int, a: torch.Tensor, a_prev: torch.Tensor, beta: torch.Tensor,
                 last_var: torch.Tensor | None) -> torch.Tensor:
        if t_prev < 0:
            return torch.tensor(0.0, dtype=torch.float64)
        frac = (self._v + 1) / 2
        small = beta * (1 - a_prev) / (1 - a)
        return torch.exp(frac * torch.log(beta) + (1 - frac) * torch.log(small))


class ClippingDDIM(PlainDDIM):
    """DDIM with x̂₀ clipped to [−1, 1] and ε̂ re-derived from it (improved-diffusion's and lucidrains' way)."""

    clip = True


# the planted bugs -----------------------------------------------------------------------------------


class ModelAtTPlusOne(PlainDDIM):
    def call_model(self, model: Callable, x: torch.Tensor, t: int) -> torch.Tensor:
        return model(x, torch.full((x.shape[0],), t + 1, dtype=torch.long))


class UndeclaredRescale(PlainDDIM):
    def call_model(self, model: Callable, x: torch.Tensor, t: int) -> torch.Tensor:
        return model(x, torch.full((x.shape[0],), t / T, dtype=torch.float32))


class AlphaPrevAtTMinusOne(PlainDDIM):
    def alpha_prev(self, ts: list[int], k: int) -> torch.Tensor:
        return self.ab[ts[k] - 1] if ts[k] >= 1 else torch.tensor(1.0, dtype=torch.float64)


class NoiseReusedAcrossSteps(PlainDDIM):
    def noise(self, x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        if k == 0 or not hasattr(self, "_z") or self._z.shape != x.shape:
            self._z = super().noise(x, k, generator)
        return self._z


class NoiseSharedAcrossBatch(PlainDDIM):
    def noise(self, x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn((1, *x.shape[1:]), generator=generator, dtype=x.dtype).expand_as(x)


class NotClipped(ClippingDDIM):
    clip = False


class ClipsUndeclared(PlainDDIM):
    clip = True


class EtaIgnored(PlainDDIM):
    def sigma(self, a: torch.Tensor, a_prev: torch.Tensor, eta: float) -> torch.Tensor:
        return torch.tensor(0.0, dtype=torch.float64)


class WrongOrder(PlainDDIM):
    def timesteps(self, n: int) -> list[int]:
        return super().timesteps(n)[::-1]


class StepSkipped(PlainDDIM):
    def timesteps(self, n: int) -> list[int]:
        return super().timesteps(n)[1:]


class MutatesInput(PlainDDIM):
    def update(self, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return x.copy_(new)


class GlobalNoiseDespiteGenerator(PlainDDIM):
    def noise(self, x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn_like(x)


class SigmaFromBetaT(PlainDDPM):
    def variance(self, t: int, t_prev: int, a: torch.Tensor, a_prev: torch.Tensor, beta: torch.Tensor,
                 last_var: torch.Tensor | None) -> torch.Tensor:
        return torch.tensor(BETAS64[t])


class NoiseAtLastStep(PlainDDPM):
    """improved-diffusion's clipped log-variance at the last step, without its ``nonzero_mask``."""

    def variance(self, t: int, t_prev: int, a: torch.Tensor, a_prev: torch.Tensor, beta: torch.Tensor,
                 last_var: torch.Tensor | None) -> torch.Tensor:
        return last_var if t_prev < 0 and last_var is not None else super().variance(t, t_prev, a, a_prev, beta, last_var)

    def adds_noise(self, t_prev: int) -> bool:
        return True


class ReturnsBeforeLastStep(PlainDDPM):
    def finish(self, x: torch.Tensor, before_last: torch.Tensor) -> torch.Tensor:
        return before_last


class LearnedRangeUnshifted(LearnedRangeDDPM):
    """Takes the model's v in (−1, 1) as the interpolation fraction itself, not (v + 1)/2."""

    def variance(self, t: int, t_prev: int, a: torch.Tensor, a_prev: torch.Tensor, beta: torch.Tensor,
                 last_var: torch.Tensor | None) -> torch.Tensor:
        if t_prev < 0:
            return torch.tensor(0.0, dtype=torch.float64)
        small = beta * (1 - a_prev) / (1 - a)
        return torch.exp(self._v * torch.log(beta) + (1 - self._v) * torch.log(small))


class Crashes(PlainDDIM):
    def call_model(self, model: Callable, x: torch.Tensor, t: int) -> torch.Tensor:
        if t < 500:
            raise IndexError(f"index {t} is out of bounds")
        return super().call_model(model, x, t)


class ReturnsNaN(PlainDDIM):
    def update(self, x: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return new * float("nan")


class Hangs(PlainDDIM):
    HANG_S = 1.5

    def __call__(self, model: Callable, x_T: torch.Tensor, num_steps: int, **kwargs: Any) -> torch.Tensor:
        time.sleep(self.HANG_S)
        return super().__call__(model, x_T, num_steps, **kwargs)


# -- cases --------------------------------------------------------------------------------------------

_DDIM = Conventions(family="ddim", num_train_timesteps=T)
_DDIM_CLIP = Conventions(family="ddim", num_train_timesteps=T, clip_sample=True, use_clipped_model_output=True)
_DDPM = Conventions(family="ddpm", num_train_timesteps=T, variance_type="fixed_small")
_LEARNED = Conventions(family="ddpm", num_train_timesteps=T, variance_type="learned_range")


@dataclass(frozen=True)
class LoopCase:
    r"""A loop target and what must happen to it.

    ``expect_fail`` are the check-name prefixes that must report ``fail`` (empty for a correct loop);
    ``timeout_s`` a per-call limit for the hanging loop.
    """

    name: str
    factory: Callable[[], LoopSampler]
    expect_fail: tuple[str, ...] = ()
    description: str = ""
    timeout_s: float = 30.0


def _ddim(cls: type, conv: Conventions = _DDIM) -> Callable[[], LoopSampler]:
    return lambda: LoopSampler(cls(), conv, name=cls.__name__)


def _ddpm(cls: type) -> Callable[[], LoopSampler]:
    return lambda: LoopSampler(cls(), _DDPM, accepts_eta=False, name=cls.__name__)


CORRECT: tuple[LoopCase, ...] = (
    LoopCase("tutorial", tutorial_target, description="tutorial DDPM loop, N = T only"),
    LoopCase("ermongroup", ermongroup_target, description="ermongroup generalized_steps, global RNG, float32 tables"),
    LoopCase("improved_diffusion", improved_diffusion_target,
             description="improved-diffusion respaced p_sample_loop, float32 coefficients, global RNG"),
    LoopCase("compvis", compvis_target, description="CompVis DDIMSampler, last step to alpha_bar_0, global RNG"),
)

CONTROLS: tuple[LoopCase, ...] = (
    LoopCase("plain_ddim", _ddim(PlainDDIM)),
    LoopCase("clipping_ddim", _ddim(ClippingDDIM, _DDIM_CLIP)),
    LoopCase("plain_ddpm", _ddpm(PlainDDPM)),
    LoopCase("learned_range_ddpm", lambda: LoopSampler(LearnedRangeDDPM(), _LEARNED, accepts_eta=False)),
)

BUGS: tuple[LoopCase, ...] = (
    LoopCase("model_at_t_plus_one", _ddim(ModelAtTPlusOne), ("loop.timesteps",), "model called with t + 1"),
    LoopCase("undeclared_rescale", _ddim(UndeclaredRescale), ("loop.timesteps",), "model called with t/T, undeclared"),
    LoopCase("alpha_prev_at_t_minus_1", _ddim(AlphaPrevAtTMinusOne), ("loop.steps",), "ᾱ_prev taken at t − 1"),
    LoopCase("noise_reused", _ddim(NoiseReusedAcrossSteps), ("loop.noise_independence",), "one z for every step"),
    LoopCase("noise_shared_batch", _ddim(NoiseSharedAcrossBatch), ("loop.noise_independence",),
             "one z for the whole batch"),
    LoopCase("noise_at_last_step", _ddpm(NoiseAtLastStep), ("loop.final_step",),
             "clipped log-variance at the last step without the nonzero mask"),
    LoopCase("not_clipped", _ddim(NotClipped, _DDIM_CLIP), ("loop.steps",), "x̂₀ not clipped although declared"),
    LoopCase("clipped_undeclared", _ddim(ClipsUndeclared), ("loop.steps",), "x̂₀ clipped although not declared"),
    LoopCase("eta_ignored", _ddim(EtaIgnored), ("loop.noise",), "σ = 0 whatever η"),
    LoopCase("sigma_from_beta_t", _ddpm(SigmaFromBetaT), ("loop.noise",), "σ² = β_t of the original schedule"),
    LoopCase("tutorial_sigma_from_beta_t", lambda: LoopSampler(
        tutorial_sample_sigma_beta_t, _DDPM, accepts_eta=False, supported_num_steps={T}, table_dtype=torch.float32),
        ("loop.noise",), "tutorial loop, float32 tables, σ² = β_t declared as β̃_t (the small-σ steps decide)"),
    LoopCase("wrong_order", _ddim(WrongOrder), ("loop.timesteps",), "steps run from the data to the noise"),
    LoopCase("step_skipped", _ddim(StepSkipped), ("loop.timesteps",), "the first step skipped"),
    LoopCase("returns_before_last", _ddpm(ReturnsBeforeLastStep), ("loop.final_step",),
             "returns the state before its last step"),
    LoopCase("mutates_input", _ddim(MutatesInput), ("loop.inputs_unchanged",), "updates x_T in place"),
    LoopCase("global_rng_despite_generator", _ddim(GlobalNoiseDespiteGenerator), ("loop.determinism",),
             "takes a generator but draws from torch's global RNG"),
    LoopCase("learned_range_unshifted", lambda: LoopSampler(LearnedRangeUnshifted(), _LEARNED, accepts_eta=False),
             ("loop.noise",), "learned_range fraction taken as v instead of (v + 1)/2"),
    LoopCase("crashes", _ddim(Crashes), ("loop.run",), "raises IndexError mid-run"),
    LoopCase("returns_nan", _ddim(ReturnsNaN), ("loop.run",), "returns NaN"),
    LoopCase("hangs", _ddim(Hangs), ("loop.run",), "sleeps past the timeout", timeout_s=0.5),
)
