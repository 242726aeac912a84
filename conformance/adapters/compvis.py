r"""CompVis latent-diffusion / stable-diffusion: ``DDIMSampler`` and the ``DDPM`` model's ``p_sample`` as loop targets.

One line for the user::

    ddspec check mypkg:sampler          # a DDIMSampler(model); adapt() recognises it
    ddspec check mypkg:ddpm             # a DDPM (image-space) model: its p_sample over all T steps

**Why the loop route.** ``p_sample_ddim`` and ``p_sample`` draw their noise with ``noise_like``
(float32 ``torch.randn``, the global RNG) and take no noise tensor. The adapter therefore runs the
library's own loop with the harness's probe in place of the UNet (:class:`~.loop.LoopSampler`): the
probe records every call, and the harness judges each transition (deterministic steps within the error
model, noisy ones statistically) and the output law. For the DDIM sampler the probe replaces
``model.apply_model`` for the duration of a call; for ``DDPM`` it replaces the ``model``
(``DiffusionWrapper``) submodule; both are restored afterwards.

**What the adapter reads** (the library is never imported):

* the model's float32 buffers ``betas`` and ``alphas_cumprod`` (built in float64 by
  ``register_schedule``, stored as float32: ``table_dtype=torch.float32``); the schedule is named
  ``scaled_linear`` when the table is the libraries' "linear" :math:`(\mathrm{linspace}(\sqrt{\beta_s},
  \sqrt{\beta_e}, T))^2` of ``linear_start``/``linear_end`` (to float32 rounding), else ``custom``;
* ``parameterization``: "eps" → ``"epsilon"``, "x0" → ``"sample"``; others go to ``unsupported``;
* ``DDPM``: ``clip_denoised`` and ``v_posterior`` (0: β̃, 1: β; a mixture has no ddspec variance type
  and goes to ``unsupported``);
* ``DDIMSampler``: ``ddpm_num_timesteps``, and the call arguments of ``make_schedule``:
  ``ddim_discretize`` ("uniform", what ``sample`` uses, or "quad") and ``ddim_eta``.

Declared conventions (the report's notes): the timesteps of ``make_ddim_timesteps``, stated here
independently of the library: uniform ``range(0, T, T//N) + 1`` (N + 1 steps when N does not divide T),
quad :math:`\lfloor (k\sqrt{0.8T}/(N-1))^2\rfloor + 1`; the last step goes to ᾱ at index 0, not to
ᾱ = 1 (``alphas_prev = [ᾱ_0] + ᾱ[τ_{:-1}]``: ``final_alpha_bar_is_one=False``), so the output keeps
noise of std :math:`\sqrt{1-\bar\alpha_0}` (and, for η > 0, a last noisy step); float32 per-step
coefficients (``torch.full`` in the default dtype); no x̂₀ clipping in DDIM. N for which the library
raises (uniform: an index past T − 1 after the +1 shift) or repeats an index (quad, N ≥ 30 of T = 1000)
are left out of ``supported_num_steps`` and named in the notes.

Index convention (``docs/conventions.md``): t is the 0-based index into the T-step tables.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import schedules

from ..protocol import Conventions
from .loop import LoopSampler

__all__ = [
    "is_ddim_sampler",
    "is_ldm_ddpm",
    "ddim_timesteps",
    "CompVisReading",
    "read_model",
    "ddim_sampler_target",
    "ddpm_target",
]

_PARAMETERIZATIONS = {"eps": "epsilon", "x0": "sample"}
#: Public instance attributes of DDPM / LatentDiffusion that do not change the sampler's numbers
#: (training, logging, conditioning and first-stage plumbing) or that the adapter reads.
_KNOWN_FIELDS = frozenset({
    "parameterization", "clip_denoised", "log_every_t", "image_size", "channels", "v_posterior", "num_timesteps",
    "linear_start", "linear_end", "original_elbo_weight", "l_simple_weight", "loss_type", "learn_logvar", "logvar",
    "use_ema", "monitor", "use_scheduler", "scheduler_config", "use_positional_encodings", "first_stage_key",
    "cond_stage_model", "cond_stage_key", "cond_stage_forward", "cond_stage_trainable", "concat_mode",
    "num_timesteps_cond", "shorten_cond_schedule", "scale_by_std", "scale_factor", "num_downs",
    "restarted_from_ckpt", "bbox_tokenizer", "be_unconditional", "cond_ids", "training", "prepare_data_per_node",
    "allow_zero_length_dataloader_with_multiple_devices",
})


def is_ddim_sampler(obj: object) -> bool:
    """Duck-typed: a CompVis ``DDIMSampler`` (a model with ``alphas_cumprod``, and ``make_schedule``/``ddim_sampling``)."""
    return (not isinstance(obj, type) and hasattr(obj, "model") and hasattr(obj, "ddpm_num_timesteps")
            and all(callable(getattr(obj, m, None)) for m in ("make_schedule", "ddim_sampling", "p_sample_ddim"))
            and hasattr(obj.model, "alphas_cumprod"))


def is_ldm_ddpm(obj: object) -> bool:
    """Duck-typed: a CompVis ``DDPM`` model (``parameterization``, ``v_posterior``, ``register_schedule``, ``p_sample``)."""
    return (not isinstance(obj, type)
            and all(hasattr(obj, a) for a in ("parameterization", "v_posterior", "num_timesteps", "alphas_cumprod",
                                              "clip_denoised", "posterior_log_variance_clipped"))
            and all(callable(getattr(obj, m, None)) for m in ("register_schedule", "p_sample", "p_mean_variance")))


def ddim_timesteps(discretize: str, n: int, T: int) -> list[int]:
    r"""``make_ddim_timesteps`` as documented, noisiest first (may repeat indices or pass T − 1: see the callers).

    uniform: :math:`\{kc + 1 : 0 \le kc < T\}`, c = ⌊T/N⌋; quad: :math:`\lfloor (k\sqrt{0.8T}/(N-1))^2\rfloor + 1`,
    k = 0..N−1 (the float64 ``linspace`` squared and truncated).
    """
    if discretize == "uniform":
        c = T // n
        if c < 1:
            raise ValueError(f"num_steps={n}: more than T={T} steps")
        return [k + 1 for k in range(0, T, c)][::-1]
    if discretize == "quad":
        return [int(v) + 1 for v in (np.linspace(0.0, math.sqrt(T * 0.8), n) ** 2)][::-1]
    raise ValueError(f"ddim_discretize={discretize!r}: must be 'uniform' or 'quad'")


def _ddim_supported(discretize: str, n: int, T: int) -> bool:
    try:
        seq = ddim_timesteps(discretize, n, T)
    except ValueError:
        return False
    return max(seq) <= T - 1 and len(set(seq)) == len(seq)


@dataclass(frozen=True)
class CompVisReading:
    """What the adapter read from a CompVis model: the ``Conventions`` fields it implies and its notes."""

    T: int
    betas: NDArray[np.float64]
    alphas_cumprod: NDArray[np.float64]
    beta_schedule: str
    beta_start: float
    beta_end: float
    prediction_type: str
    unsupported: tuple[str, ...]
    schedule_note: str


def _table(value: Any, name: str) -> NDArray[np.float64]:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy().copy()
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as a float table ({type(value).__name__})") from exc


def read_model(model: Any) -> CompVisReading:
    r"""Read a CompVis ``DDPM`` / ``LatentDiffusion`` (see the module docstring)."""
    T = int(model.num_timesteps)
    betas = _table(model.betas, "betas")
    ab = _table(model.alphas_cumprod, "alphas_cumprod")
    if betas.shape != (T,) or ab.shape != (T,):
        raise ValueError(f"betas/alphas_cumprod: must have shape ({T},) = (num_timesteps,), got {betas.shape}, {ab.shape}")
    unsupported: list[str] = []
    start, end = getattr(model, "linear_start", None), getattr(model, "linear_end", None)
    schedule, b0, b1 = "custom", 1e-4, 0.02
    note = "β: the model's float32 table (float64 of its values), declared custom"
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and 0 < start <= end < 1:
        named = schedules.scaled_linear_betas(T, float(start), float(end))
        if np.allclose(named, betas, rtol=2.0**-22, atol=0.0):
            schedule, b0, b1 = "scaled_linear", float(start), float(end)
            note = (f"β: the libraries' 'linear' = (linspace(√{start:g}, √{end:g}, T))² (diffusers' scaled_linear), "
                    "matched to float32 rounding")
    param = getattr(model, "parameterization", None)
    prediction = _PARAMETERIZATIONS.get(param) if isinstance(param, str) else None
    if prediction is None:
        prediction = str(param)
        unsupported.append(f"prediction_type={prediction}: parameterization={param!r} is not 'eps' or 'x0'")
    for field in sorted(k for k in vars(model) if not k.startswith("_")):
        if field not in _KNOWN_FIELDS and not callable(getattr(model, field)):
            shown = repr(getattr(model, field))
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            unsupported.append(f"{field}={shown}: not a field of CompVis' DDPM/LatentDiffusion; "
                               "ddspec cannot tell whether it changes the numbers")
    return CompVisReading(T, betas, ab, schedule, b0, b1, prediction, tuple(unsupported), note)


@contextlib.contextmanager
def _instance_override(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``obj.name = value`` for the block, then restore what the instance held (or drop the override)."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        if had:
            object.__setattr__(obj, name, old)
        else:
            object.__delattr__(obj, name)


def _device_keeping_register_buffer(sampler: Any) -> Callable[[str, Any], None]:
    def register_buffer(name: str, attr: Any) -> None:
        if isinstance(attr, torch.Tensor):
            attr = attr.to(sampler.model.betas.device)
        setattr(sampler, name, attr)

    return register_buffer


def ddim_sampler_target(sampler: Any, *, ddim_discretize: str = "uniform") -> LoopSampler:
    r"""A CompVis ``DDIMSampler`` (Song et al. 2021 eq. 12, σ(η) of eq. 16) as a :class:`~.loop.LoopSampler`.

    ``ddim_discretize="uniform"`` runs the public ``sample(S, batch_size, shape, eta=, x_T=)``;
    ``"quad"`` runs ``make_schedule(..., ddim_discretize="quad")`` then ``ddim_sampling`` (what
    ``sample`` does, with the spacing ``sample`` does not expose).
    """
    if not is_ddim_sampler(sampler):
        raise TypeError(f"ddim_sampler_target: {type(sampler).__qualname__} is not a CompVis DDIMSampler")
    if ddim_discretize not in ("uniform", "quad"):
        raise ValueError(f"ddim_discretize={ddim_discretize!r}: must be 'uniform' or 'quad'")
    model = sampler.model
    reading = read_model(model)
    T = int(sampler.ddpm_num_timesteps)
    if T != reading.T:
        raise ValueError(f"ddpm_num_timesteps={T}: differs from the model's num_timesteps={reading.T}")
    unsupported = reading.unsupported
    conv = Conventions(
        family="ddim", num_train_timesteps=T, beta_schedule=reading.beta_schedule, beta_start=reading.beta_start,
        beta_end=reading.beta_end,
        trained_betas=tuple(float(b) for b in reading.betas) if reading.beta_schedule == "custom" else None,
        prediction_type=reading.prediction_type, timestep_spacing="custom", final_alpha_bar_is_one=False,
        supports_noise_injection=False, unsupported=unsupported)

    def sample(probe: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0) -> torch.Tensor:
        def apply_model(x: torch.Tensor, t: torch.Tensor, cond: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            return probe(x, t)

        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # the library prints on every call
            stack.enter_context(_instance_override(model, "apply_model", apply_model))
            stack.enter_context(_instance_override(sampler, "register_buffer", _device_keeping_register_buffer(sampler)))
            if ddim_discretize == "uniform":
                out, _ = sampler.sample(num_steps, x_T.shape[0], tuple(x_T.shape[1:]), eta=eta, x_T=x_T, verbose=False)
            else:
                sampler.make_schedule(ddim_num_steps=num_steps, ddim_discretize="quad", ddim_eta=eta, verbose=False)
                out, _ = sampler.ddim_sampling(None, tuple(x_T.shape), x_T=x_T)
        return out

    def supported(n: int) -> bool:
        return _ddim_supported(ddim_discretize, n, T)

    supported.__qualname__ = f"make_ddim_timesteps('{ddim_discretize}') stays within T and repeats no index"
    target = LoopSampler(
        sample, conv, name=f"{type(sampler).__qualname__}[{ddim_discretize}]", accepts_generator=False,
        noise_source="global", timesteps=lambda n: ddim_timesteps(ddim_discretize, n, T),
        supported_num_steps=supported,
        table_dtype=torch.float32, coefficient_dtype=torch.float32,
        betas=reading.betas, alphas_cumprod=reading.alphas_cumprod)
    first_bad = next((n for n in range(1, T + 1) if not _ddim_supported(ddim_discretize, n, T)), None)
    if ddim_discretize == "uniform":
        limit = (f"N for which range(0, T, T//N)[-1] + 1 = T (e.g. N={first_bad}, N=T) raise IndexError in "
                 "make_ddim_sampling_parameters and are not checked; N not dividing T take N + 1 steps (declared)")
    else:
        limit = f"quad repeats an index from N={first_bad} (a null step at a repeated t): those N are not checked"
    target.notes = (  # type: ignore[attr-defined]
        reading.schedule_note,
        f"timesteps: make_ddim_timesteps('{ddim_discretize}') + 1; {limit}",
        "the last step goes to ᾱ at index 0 (alphas_prev starts with ᾱ_0), not to ᾱ = 1: final_alpha_bar_is_one=False",
        "tables: float64 built, stored float32 (register_schedule); per-step coefficients float32 (torch.full)",
        "noise: noise_like (float32 torch.randn, the global RNG); no x̂₀ clipping",
        "DDIMSampler.register_buffer moves every tensor to cuda; the adapter keeps them on the model's device",
        "the model output is read as ε whatever parameterization says (p_sample_ddim)",
    )
    target.reading = reading  # type: ignore[attr-defined]
    return target


class _ProbeModule(torch.nn.Module):
    """The probe as the ``DiffusionWrapper`` submodule (``DDPM.model`` must be an ``nn.Module``)."""

    def __init__(self, probe: Callable) -> None:
        super().__init__()
        self.probe = probe

    def forward(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.probe(x, t)


def ddpm_target(model: Any) -> LoopSampler:
    r"""A CompVis ``DDPM`` model's ``p_sample`` (Ho et al. 2020 eq. 7, Algorithm 2) over all T steps.

    ``DDPM.p_sample_loop`` takes no x_T (it draws it with ``torch.randn``), so the adapter runs its loop
    body itself: ``p_sample(img, full((B,), i), clip_denoised=model.clip_denoised)`` for i = T−1..0.
    Only N = T is supported (``p_sample`` reads the full-T tables).
    """
    if not is_ldm_ddpm(model):
        raise TypeError(f"ddpm_target: {type(model).__qualname__} is not a CompVis DDPM")
    if callable(getattr(model, "apply_model", None)):
        raise TypeError(f"ddpm_target: {type(model).__qualname__} is a latent model, whose p_sample takes a "
                        "conditioning; check it through DDIMSampler(model) with ddim_sampler_target")
    reading = read_model(model)
    T = reading.T
    unsupported = list(reading.unsupported)
    v = model.v_posterior
    if v == 0:
        variance = "fixed_small"
    elif v == 1:
        variance = "fixed_large"
    else:
        variance = "v_posterior_mixture"
        unsupported.append(f"variance_type={variance}: v_posterior={v!r} mixes β̃ and β; ddspec has no such variance type")
    clip = model.clip_denoised
    if not isinstance(clip, bool):
        unsupported.append(f"clip_sample={clip!r}: clip_denoised must be a bool")
        clip = bool(clip)
    conv = Conventions(
        family="ddpm", num_train_timesteps=T, beta_schedule=reading.beta_schedule, beta_start=reading.beta_start,
        beta_end=reading.beta_end,
        trained_betas=tuple(float(b) for b in reading.betas) if reading.beta_schedule == "custom" else None,
        prediction_type=reading.prediction_type, variance_type=variance, clip_sample=clip,
        supports_noise_injection=False, unsupported=tuple(unsupported))

    def sample(probe: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
        if num_steps != T:
            raise ValueError(f"num_steps={num_steps}: DDPM.p_sample runs all T={T} steps")
        original = model.model
        model.model = _ProbeModule(probe)
        try:
            img = x_T
            for i in reversed(range(T)):
                img = model.p_sample(img, torch.full((x_T.shape[0],), i, dtype=torch.long, device=x_T.device),
                                     clip_denoised=model.clip_denoised)
        finally:
            model.model = original
        return img

    target = LoopSampler(sample, conv, name=f"{type(model).__qualname__}.p_sample", accepts_eta=False,
                         accepts_generator=False, noise_source="global", supported_num_steps={T},
                         table_dtype=torch.float32, coefficient_dtype=torch.float32,
                         betas=reading.betas, alphas_cumprod=reading.alphas_cumprod)
    target.notes = (  # type: ignore[attr-defined]
        reading.schedule_note,
        f"N = T = {T} only: p_sample reads the full-T tables; p_sample_loop draws its own x_T, so the adapter runs its body",
        "tables: float64 built, stored float32 (register_schedule); coefficients gathered in float32",
        f"variance: v_posterior={v!r}; log variance clipped at 1e-20 (masked at t = 0)",
        f"x̂₀ clamped in place to [-1, 1]: clip_denoised={model.clip_denoised!r}",
        "noise: noise_like (float32 torch.randn, the global RNG), none at t = 0",
    )
    target.reading = reading  # type: ignore[attr-defined]
    return target
