r"""Adapter for diffusers' ``DDIMScheduler`` (and subclasses): the DDIM step, eq. 12 with σ(η) of eq. 16.

Facts about the target (diffusers 0.42, ``schedulers/scheduling_ddim.py``; see ``/work/shared/anchors.md``):

* float32 tables ``betas`` and ``alphas_cumprod``; ``beta_schedule`` is one of linear, scaled_linear,
  squaredcos_cap_v2 (no sigmoid).
* ``set_alpha_to_one``: the ᾱ used after the last step is 1 when True (default), else ᾱ at index 0
  (``final_alpha_cumprod``), which leaves noise of std √(1 − ᾱ₀) — declared here as
  ``final_alpha_bar_is_one``.
* The previous timestep is ``t − T // N`` whatever the ``timestep_spacing``; for spacings whose
  stride is not T // N this differs from the next element of ``timesteps`` (the harness detects it).
* ``step(model_output, timestep, sample, eta, use_clipped_model_output, generator, variance_noise)``:
  the noise tensor is a plain argument (``variance_noise``), used when η > 0, so injection needs no patch.
  diffusers refuses ``generator`` together with ``variance_noise``; the adapter passes only the noise.
* ``use_clipped_model_output`` is a per-call argument, not config: the adapter takes it as an option
  (default False, diffusers' default) and declares it.

Old releases (0.10 on): a config field the release does not have (``timestep_spacing`` before 0.17,
``clip_sample_range`` and ``thresholding`` before 0.15, ...) is read with that release's behaviour
(:mod:`._diffusers_compat`), and the adapter's ``notes`` say so. ``variance_noise`` exists from 0.10 on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference._validate import as_int, as_scalar, fail

from ..protocol import Conventions
from .diffusers_ddpm import as_step_timestep, check_step_inputs, read_common_config, table

__all__ = ["DiffusersDDIMAdapter", "DDIM_BETA_SCHEDULE_NAMES"]

DDIM_BETA_SCHEDULE_NAMES: dict[str, str] = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "squaredcos_cap_v2": "cosine",
}
"""diffusers DDIM ``beta_schedule`` name -> ddspec name."""

_DDIM_FIELDS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "clip_sample",
    "set_alpha_to_one",
    "steps_offset",
    "prediction_type",
    "thresholding",
    "dynamic_thresholding_ratio",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "rescale_betas_zero_snr",
)


class DiffusersDDIMAdapter:
    r"""Wrap a diffusers ``DDIMScheduler`` (or subclass instance) as a :class:`~ddspec.conformance.protocol.Sampler`.

    ``conventions`` are read from ``scheduler.config`` (every field in ``_DDIM_FIELDS``;
    ``set_alpha_to_one`` becomes ``final_alpha_bar_is_one``), plus the adapter option
    ``use_clipped_model_output`` passed to every ``step``. Unknown values are kept raw and listed in
    ``conventions.unsupported``. A field the release at hand does not have (diffusers 0.10 on) is
    read as that release behaves, and ``notes`` says so (:mod:`._diffusers_compat`).
    """

    #: The diffusers class this adapter reads (a subclass adapter for a sibling class names its own).
    DIFFUSERS_CLASS = "DDIMScheduler"
    #: Notes the adapter adds to the release's notes (a sibling class says how it is read).
    EXTRA_NOTES: tuple[str, ...] = ()

    def __init__(self, scheduler: Any, *, use_clipped_model_output: bool = False, name: str | None = None) -> None:
        import diffusers  # lazy: ddspec.conformance imports without diffusers

        base = getattr(diffusers, self.DIFFUSERS_CLASS)
        if not isinstance(scheduler, base):
            fail("scheduler", scheduler, f"expected a diffusers {self.DIFFUSERS_CLASS} (or subclass) instance")
        if not isinstance(use_clipped_model_output, bool):
            fail("use_clipped_model_output", use_clipped_model_output, "must be a bool")
        self.scheduler = scheduler
        self.name = name if name is not None else f"diffusers.{type(scheduler).__name__}"
        fields, unsupported, rc = read_common_config(scheduler, _DDIM_FIELDS, schedule_names=DDIM_BETA_SCHEDULE_NAMES,
                                                     family="ddim", base=base)
        #: the diffusers release the scheduler comes from, and one note per config field that release
        #: does not have (filled with its behaviour), e.g. "diffusers 0.14.0 has no timestep_spacing: ...".
        self.release: str = rc.release
        self.notes: tuple[str, ...] = rc.notes + self.EXTRA_NOTES
        self.conventions = Conventions(
            family="ddim",
            variance_type=None,
            final_alpha_bar_is_one=bool(rc["set_alpha_to_one"]),
            use_clipped_model_output=use_clipped_model_output,
            supports_noise_injection=True,
            unsupported=tuple(unsupported),
            **fields,
        )

    def betas(self) -> NDArray[np.float64]:
        r"""The scheduler's ``betas`` tensor as float64 (float32 values cast up, not recomputed)."""
        return table(self.scheduler.betas)

    def alphas_cumprod(self) -> NDArray[np.float64]:
        r"""The scheduler's ``alphas_cumprod`` tensor (its float32 cumprod) as float64."""
        return table(self.scheduler.alphas_cumprod)

    def _ensure_timesteps(self, num_steps: int) -> NDArray[np.int64]:
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        if self.scheduler.num_inference_steps != n:
            try:
                self.scheduler.set_timesteps(n)
            except BaseException:
                # a set_timesteps that raised may have set num_inference_steps before failing: forget
                # it, so that the next call with the same N raises again instead of running on a
                # half-built scheduler (one root crash stays one failure, reported every time)
                self.scheduler.num_inference_steps = None
                raise
        return self.scheduler.timesteps.detach().to("cpu").numpy().astype(np.int64)

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        r"""``scheduler.timesteps`` after ``set_timesteps(num_steps)``, as int64 (the target's own rule)."""
        return self._ensure_timesteps(num_steps).copy()

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
        r"""``scheduler.step(model_output, t, x_t, eta=eta, use_clipped_model_output=..., variance_noise=noise).prev_sample``.

        ``noise`` (if given) is cast to ``model_output``'s dtype/device, as diffusers' own draw would be,
        and passed as ``variance_noise``; ``generator`` is then not passed.
        ``predicted_variance`` must be ``None`` (DDIM has no learned variance).
        """
        check_step_inputs(model_output, x_t, noise)
        e = as_scalar(eta, "eta", low=0.0)
        if predicted_variance is not None:
            fail("predicted_variance", tuple(predicted_variance.shape), "must be None for a DDIM sampler")
        ts = self._ensure_timesteps(num_steps)
        tt = as_step_timestep(t, ts, num_steps)
        out = self.scheduler.step(
            model_output,
            tt,
            x_t,
            eta=e,
            use_clipped_model_output=self.conventions.use_clipped_model_output,
            generator=generator if noise is None else None,
            variance_noise=None if noise is None else noise.to(dtype=model_output.dtype, device=model_output.device),
        )
        return out.prev_sample
