r"""Stand-in for openai/improved-diffusion and openai/guided-diffusion (``gaussian_diffusion.py``, ``respace.py``).

Re-stated from the libraries' interface and semantics (Nichol & Dhariwal 2021; the two repositories'
``GaussianDiffusion`` share the numerics, guided-diffusion adds ``cond_fn``, which is left out here).
What is kept because it changes numbers:

* float64 numpy tables built once in ``__init__``; every per-step coefficient is gathered by
  :func:`_extract_into_tensor`, which rounds it to **float32** (``.float()``) whatever the state's dtype;
* ``posterior_log_variance_clipped`` replaces entry 0 by entry 1 (the noise there is masked anyway);
  FIXED_LARGE uses β with the same first-entry replacement; LEARNED is a *log* variance,
  LEARNED_RANGE the fraction v in [−1, 1] between log β̃ (min) and log β (max);
* x̂₀ is clamped to [−1, 1] when ``clip_denoised`` (the default: True) and, for DDIM, ε̂ is re-derived
  from the clamped x̂₀;
* noise is drawn with ``randn_like`` (the global RNG) and masked with ``t != 0``;
* ``space_timesteps`` with "a,b,c" sections (fractional stride, Python ``round``) or "ddimN" (the smallest
  integer stride giving exactly N steps); ``SpacedDiffusion`` re-derives β' from the kept ᾱ and wraps the
  model so that it sees the original index (times 1000/T when ``rescale_timesteps``).

Index convention: the library's t is the 0-based index of the (respaced) process.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch as th


class ModelMeanType(enum.Enum):
    PREVIOUS_X = enum.auto()
    START_X = enum.auto()
    EPSILON = enum.auto()


class ModelVarType(enum.Enum):
    LEARNED = enum.auto()
    FIXED_SMALL = enum.auto()
    FIXED_LARGE = enum.auto()
    LEARNED_RANGE = enum.auto()


class LossType(enum.Enum):
    MSE = enum.auto()
    RESCALED_MSE = enum.auto()
    KL = enum.auto()
    RESCALED_KL = enum.auto()


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """"linear": Ho et al.'s 1e-4..0.02 scaled by 1000/T (float64 linspace); "cosine": eq. 17 of Nichol & Dhariwal."""
    if schedule_name == "linear":
        scale = 1000 / num_diffusion_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if schedule_name == "cosine":
        return betas_for_alpha_bar(num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise NotImplementedError(f"unknown beta schedule: {schedule_name}")


def betas_for_alpha_bar(num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    out = []
    for i in range(num_diffusion_timesteps):
        lo, hi = i / num_diffusion_timesteps, (i + 1) / num_diffusion_timesteps
        out.append(min(1 - alpha_bar(hi) / alpha_bar(lo), max_beta))
    return np.array(out)


def _extract_into_tensor(arr: np.ndarray, timesteps: th.Tensor, broadcast_shape: tuple[int, ...]) -> th.Tensor:
    """``arr[t]`` per batch element, as float32, broadcast to ``broadcast_shape``."""
    res = th.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


class GaussianDiffusion:
    def __init__(self, *, betas: Any, model_mean_type: ModelMeanType, model_var_type: ModelVarType,
                 loss_type: LossType, rescale_timesteps: bool = False) -> None:
        self.model_mean_type = model_mean_type
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.rescale_timesteps = rescale_timesteps
        betas = np.array(betas, dtype=np.float64)
        self.betas = betas
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = int(betas.shape[0])
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # entry 0 (β̃ = 0) replaced by entry 1: a one-step process raises IndexError here, as in the library
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # -- the posterior and the model's reading --------------------------------------------------------

    def q_posterior_mean_variance(self, x_start: th.Tensor, x_t: th.Tensor, t: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        mean = (_extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return (mean, _extract_into_tensor(self.posterior_variance, t, x_t.shape),
                _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape))

    def p_mean_variance(self, model: Callable, x: th.Tensor, t: th.Tensor, clip_denoised: bool = True,
                        denoised_fn: Callable | None = None, model_kwargs: dict | None = None) -> dict[str, th.Tensor]:
        model_kwargs = model_kwargs or {}
        B, C = x.shape[:2]
        assert t.shape == (B,)
        out = model(x, self._scale_timesteps(t), **model_kwargs)
        if self.model_var_type in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE):
            assert out.shape == (B, C * 2, *x.shape[2:])
            out, var_values = th.split(out, C, dim=1)
            if self.model_var_type == ModelVarType.LEARNED:
                log_var = var_values
            else:
                min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
                max_log = _extract_into_tensor(np.log(self.betas), t, x.shape)
                frac = (var_values + 1) / 2
                log_var = frac * max_log + (1 - frac) * min_log
            var = th.exp(log_var)
        else:
            table = {
                ModelVarType.FIXED_LARGE: np.append(self.posterior_variance[1], self.betas[1:]),
                ModelVarType.FIXED_SMALL: self.posterior_variance,
            }[self.model_var_type]
            log_table = (np.log(table) if self.model_var_type == ModelVarType.FIXED_LARGE
                         else self.posterior_log_variance_clipped)
            var = _extract_into_tensor(table, t, x.shape)
            log_var = _extract_into_tensor(log_table, t, x.shape)

        def process_xstart(v: th.Tensor) -> th.Tensor:
            if denoised_fn is not None:
                v = denoised_fn(v)
            return v.clamp(-1, 1) if clip_denoised else v

        if self.model_mean_type == ModelMeanType.PREVIOUS_X:
            pred_xstart = process_xstart(self._predict_xstart_from_xprev(x, t, out))
            mean = out
        elif self.model_mean_type in (ModelMeanType.START_X, ModelMeanType.EPSILON):
            if self.model_mean_type == ModelMeanType.START_X:
                pred_xstart = process_xstart(out)
            else:
                pred_xstart = process_xstart(self._predict_xstart_from_eps(x, t, out))
            mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        else:
            raise NotImplementedError(self.model_mean_type)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_xstart": pred_xstart}

    def _predict_xstart_from_eps(self, x_t: th.Tensor, t: th.Tensor, eps: th.Tensor) -> th.Tensor:
        return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

    def _predict_xstart_from_xprev(self, x_t: th.Tensor, t: th.Tensor, xprev: th.Tensor) -> th.Tensor:
        return (_extract_into_tensor(1.0 / self.posterior_mean_coef1, t, x_t.shape) * xprev
                - _extract_into_tensor(self.posterior_mean_coef2 / self.posterior_mean_coef1, t, x_t.shape) * x_t)

    def _predict_eps_from_xstart(self, x_t: th.Tensor, t: th.Tensor, pred_xstart: th.Tensor) -> th.Tensor:
        return ((_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
                / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def _scale_timesteps(self, t: th.Tensor) -> th.Tensor:
        return t.float() * (1000.0 / self.num_timesteps) if self.rescale_timesteps else t

    # -- ancestral sampling -------------------------------------------------------------------------

    def p_sample(self, model: Callable, x: th.Tensor, t: th.Tensor, clip_denoised: bool = True,
                 denoised_fn: Callable | None = None, model_kwargs: dict | None = None) -> dict[str, th.Tensor]:
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        noise = th.randn_like(x)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        return {"sample": out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise,
                "pred_xstart": out["pred_xstart"]}

    def p_sample_loop(self, model: Callable, shape: tuple[int, ...], noise: th.Tensor | None = None,
                      clip_denoised: bool = True, denoised_fn: Callable | None = None, model_kwargs: dict | None = None,
                      device: Any = None, progress: bool = False) -> th.Tensor:
        final = None
        for final in self._progressive(self.p_sample, model, shape, noise, device, clip_denoised=clip_denoised,
                                       denoised_fn=denoised_fn, model_kwargs=model_kwargs):
            pass
        assert final is not None
        return final["sample"]

    def _progressive(self, step: Callable, model: Callable, shape: tuple[int, ...], noise: th.Tensor | None,
                     device: Any, **kwargs: Any) -> Iterator[dict[str, th.Tensor]]:
        if device is None:
            device = next(model.parameters()).device  # as the library: a model without parameters needs device=
        assert isinstance(shape, (tuple, list))
        img = noise if noise is not None else th.randn(*shape, device=device)
        for i in list(range(self.num_timesteps))[::-1]:
            t = th.tensor([i] * shape[0], device=device)
            with th.no_grad():
                out = step(model, img, t, **kwargs)
                yield out
                img = out["sample"]

    # -- DDIM ---------------------------------------------------------------------------------------

    def ddim_sample(self, model: Callable, x: th.Tensor, t: th.Tensor, clip_denoised: bool = True,
                    denoised_fn: Callable | None = None, model_kwargs: dict | None = None,
                    eta: float = 0.0) -> dict[str, th.Tensor]:
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract_into_tensor(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract_into_tensor(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * th.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * th.sqrt(1 - alpha_bar / alpha_bar_prev)
        noise = th.randn_like(x)
        mean_pred = out["pred_xstart"] * th.sqrt(alpha_bar_prev) + th.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))
        return {"sample": mean_pred + nonzero_mask * sigma * noise, "pred_xstart": out["pred_xstart"]}

    def ddim_reverse_sample(self, model: Callable, x: th.Tensor, t: th.Tensor, clip_denoised: bool = True,
                            denoised_fn: Callable | None = None, model_kwargs: dict | None = None,
                            eta: float = 0.0) -> dict[str, th.Tensor]:
        """x_t → x_{t+1} along the η = 0 ODE, the model called at the source index t."""
        assert eta == 0.0, "Reverse ODE only for deterministic path"
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        eps = ((_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x.shape) * x - out["pred_xstart"])
               / _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x.shape))
        alpha_bar_next = _extract_into_tensor(self.alphas_cumprod_next, t, x.shape)
        mean_pred = out["pred_xstart"] * th.sqrt(alpha_bar_next) + th.sqrt(1 - alpha_bar_next) * eps
        return {"sample": mean_pred, "pred_xstart": out["pred_xstart"]}

    def ddim_sample_loop(self, model: Callable, shape: tuple[int, ...], noise: th.Tensor | None = None,
                         clip_denoised: bool = True, denoised_fn: Callable | None = None,
                         model_kwargs: dict | None = None, device: Any = None, progress: bool = False,
                         eta: float = 0.0) -> th.Tensor:
        final = None
        for final in self._progressive(self.ddim_sample, model, shape, noise, device, clip_denoised=clip_denoised,
                                       denoised_fn=denoised_fn, model_kwargs=model_kwargs, eta=eta):
            pass
        assert final is not None
        return final["sample"]


# -- respacing -------------------------------------------------------------------------------------------


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """The kept original indices: "ddimN" (smallest integer stride with exactly N steps) or per-section counts."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return set(range(0, num_timesteps, stride))
            raise ValueError(f"cannot create exactly {num_timesteps} steps with an integer stride")
        section_counts = [int(c) for c in section_counts.split(",")]
    size_per, extra = divmod(num_timesteps, len(section_counts))
    start, kept = 0, []
    for i, count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        frac_stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            kept.append(start + round(cur))
            cur += frac_stride
        start += size
    return set(kept)


class SpacedDiffusion(GaussianDiffusion):
    def __init__(self, use_timesteps: Iterable[int], **kwargs: Any) -> None:
        self.use_timesteps = set(use_timesteps)
        self.timestep_map: list[int] = []
        self.original_num_steps = len(kwargs["betas"])
        base = GaussianDiffusion(**kwargs)
        last, new_betas = 1.0, []
        for i, alpha_cumprod in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
                self.timestep_map.append(i)
        kwargs["betas"] = np.array(new_betas)
        super().__init__(**kwargs)

    def p_mean_variance(self, model: Callable, *args: Any, **kwargs: Any) -> dict[str, th.Tensor]:
        return super().p_mean_variance(self._wrap_model(model), *args, **kwargs)

    def _wrap_model(self, model: Callable) -> Callable:
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(model, self.timestep_map, self.rescale_timesteps, self.original_num_steps)

    def _scale_timesteps(self, t: th.Tensor) -> th.Tensor:
        return t  # the wrapped model scales


class _WrappedModel:
    def __init__(self, model: Callable, timestep_map: list[int], rescale_timesteps: bool, original_num_steps: int) -> None:
        self.model = model
        self.timestep_map = timestep_map
        self.rescale_timesteps = rescale_timesteps
        self.original_num_steps = original_num_steps

    def __call__(self, x: th.Tensor, ts: th.Tensor, **kwargs: Any) -> th.Tensor:
        new_ts = th.tensor(self.timestep_map, device=ts.device, dtype=ts.dtype)[ts]
        if self.rescale_timesteps:
            new_ts = new_ts.float() * (1000.0 / self.original_num_steps)
        return self.model(x, new_ts, **kwargs)


def create_gaussian_diffusion(*, steps: int = 1000, learn_sigma: bool = False, sigma_small: bool = False,
                              noise_schedule: str = "linear", use_kl: bool = False, predict_xstart: bool = False,
                              rescale_timesteps: bool = False, rescale_learned_sigmas: bool = False,
                              timestep_respacing: str = "") -> SpacedDiffusion:
    """The libraries' ``script_util.create_gaussian_diffusion``: always a SpacedDiffusion ("" keeps every step)."""
    betas = get_named_beta_schedule(noise_schedule, steps)
    loss_type = LossType.RESCALED_KL if use_kl else (LossType.RESCALED_MSE if rescale_learned_sigmas else LossType.MSE)
    if not timestep_respacing:
        timestep_respacing = [steps]
    var_type = (ModelVarType.LEARNED_RANGE if learn_sigma
                else (ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE))
    return SpacedDiffusion(
        use_timesteps=space_timesteps(steps, timestep_respacing), betas=betas,
        model_mean_type=ModelMeanType.START_X if predict_xstart else ModelMeanType.EPSILON,
        model_var_type=var_type, loss_type=loss_type, rescale_timesteps=rescale_timesteps)
