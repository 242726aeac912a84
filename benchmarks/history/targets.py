r"""The configurations of the historical-bug benchmark (:mod:`benchmarks.history.bugs`).

Each function is a zero-argument factory that ``ddspec check benchmarks/history/targets.py:<name>``
loads. They build a scheduler of whatever diffusers release is importable (the runner puts one
release at a time on ``PYTHONPATH``), with only keyword arguments every release from 0.10 on takes.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ddpm_default",
    "ddpm_learned_range",
    "ddpm_learned_range_t50",
    "ddpm_after_float16_add_noise",
    "ddim_after_float16_add_noise",
    "ddim_sample_prediction",
    "ddpm_trailing",
    "ddpm_linspace",
]


def ddpm_default() -> Any:
    """``DDPMScheduler()``: linear β 1e-4..0.02, T = 1000, fixed_small, ε-prediction, clip_sample."""
    from diffusers import DDPMScheduler

    return DDPMScheduler()


def ddpm_learned_range() -> Any:
    """``DDPMScheduler(variance_type="learned_range")`` (improved DDPM, Nichol & Dhariwal 2021 eq. 15)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(variance_type="learned_range")


def ddpm_learned_range_t50() -> Any:
    """``learned_range`` with T = 50, run at N = T: the respaced β′ equals β, so only the log/exp matters."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(variance_type="learned_range", num_train_timesteps=50)


def _after_float16_add_noise(scheduler: Any) -> Any:
    """``scheduler`` after one ``add_noise`` call with float16 tensors (as a float16 training loop does)."""
    import torch

    x = torch.zeros(1, 4, dtype=torch.float16)
    scheduler.add_noise(x, x, torch.tensor([10]))
    return scheduler


def ddpm_after_float16_add_noise() -> Any:
    """``DDPMScheduler()`` after ``add_noise`` in float16."""
    from diffusers import DDPMScheduler

    return _after_float16_add_noise(DDPMScheduler())


def ddim_after_float16_add_noise() -> Any:
    """``DDIMScheduler()`` after ``add_noise`` in float16."""
    from diffusers import DDIMScheduler

    return _after_float16_add_noise(DDIMScheduler())


def ddim_sample_prediction() -> Any:
    """``DDIMScheduler(prediction_type="sample")``: the model predicts x̂₀."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(prediction_type="sample")


def ddpm_trailing() -> Any:
    """``DDPMScheduler(timestep_spacing="trailing")`` (diffusers 0.18 on)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(timestep_spacing="trailing")


def ddpm_linspace() -> Any:
    """``DDPMScheduler(timestep_spacing="linspace")`` (diffusers 0.18 on)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(timestep_spacing="linspace")
