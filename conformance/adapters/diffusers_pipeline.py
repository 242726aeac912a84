r"""diffusers' ``DDPMPipeline`` and ``DDIMPipeline`` as whole-loop targets, and their output post-processing.

What the pipelines do (diffusers 0.42, ``pipelines/ddpm/pipeline_ddpm.py``, ``pipelines/ddim/pipeline_ddim.py``):

* draw x_T with ``randn_tensor(shape, generator, dtype=unet.dtype)``, ``scheduler.set_timesteps(N)``,
  then for every t: ``unet(image, t).sample`` and ``scheduler.step(..., generator=generator)``
  (DDIM: ``eta`` and ``use_clipped_model_output`` passed through);
* ``DDIMPipeline.__init__`` replaces any scheduler by ``DDIMScheduler.from_config(scheduler.config)``;
* post-process: ``(image / 2 + 0.5).clamp(0, 1)`` (the [0, 1] output; ``output_type="pt"`` keeps
  NCHW, ``"np"`` moves to NHWC numpy), then for ``"pil"`` ``numpy_to_pil``: ``(images * 255).round()``
  to uint8.

How the loop is driven (:class:`DiffusersPipelineLoop`, a :class:`~.loop.LoopSampler`): each run builds
a fresh pipeline of the user's class around a copy of the user's scheduler (``from_config``) and a small
module standing in for the UNet (the harness's probe; ``config.sample_size`` and ``in_channels`` from
x_T, ``dtype`` x_T's). On its first call the module overwrites the pipeline's own x_T draw in place with
the harness's x_T, so the run starts where the harness says; no torch or diffusers function is
replaced. The copy's ``step`` is wrapped at the instance to keep the last ``prev_sample``: the loop
returns that state (before post-processing); :meth:`~DiffusersPipelineLoop.record_postprocess` records
it with the pipeline's [0, 1] and uint8 outputs (a :class:`~ddspec.conformance.records.PostprocessRecord`),
which the ``adapter`` check family judges (:mod:`ddspec.conformance.checks.adapter_extras`, also
:func:`~ddspec.conformance.checks.adapter_extras.check_postprocess`). The conventions are the scheduler
adapters' (:mod:`.diffusers_ddpm`, :mod:`.diffusers_ddim`), so a pipeline gets the verdicts its scheduler gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from ddspec.reference._validate import as_int, fail

from ..records import PostprocessRecord, dtype_name
from .diffusers_ddim import DiffusersDDIMAdapter
from .diffusers_ddpm import DiffusersDDPMAdapter
from .loop import LoopSampler

__all__ = ["DiffusersPipelineLoop"]


class _ProbeUNet(torch.nn.Module):
    """The pipeline's ``unet`` during a run: the probe, plus the start overwritten on the first call."""

    def __init__(self, probe: Callable[..., torch.Tensor], x_T: torch.Tensor) -> None:
        super().__init__()
        self.probe = probe
        self.x_T = x_T
        self.started = False
        size = tuple(int(s) for s in x_T.shape[2:])
        self.config = SimpleNamespace(sample_size=size[0] if len(set(size)) == 1 else size, in_channels=int(x_T.shape[1]))

    @property
    def dtype(self) -> torch.dtype:
        return self.x_T.dtype

    @property
    def device(self) -> torch.device:
        return self.x_T.device

    def forward(self, x: torch.Tensor, t: Any) -> SimpleNamespace:
        if not self.started:
            self.started = True
            if tuple(x.shape) != tuple(self.x_T.shape):
                raise ValueError(f"x: the pipeline's start has shape {tuple(x.shape)}, expected x_T's {tuple(self.x_T.shape)}")
            x.copy_(self.x_T)
        tt = torch.as_tensor(t)
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        return SimpleNamespace(sample=self.probe(x, tt))


class DiffusersPipelineLoop(LoopSampler):
    r"""A diffusers ``DDPMPipeline`` / ``DDIMPipeline`` as a :class:`~.loop.LoopSampler` (the UNet is the probe).

    Args:
        pipeline: the pipeline instance (its UNet is not used; its scheduler's config is).
        use_clipped_model_output: DDIMPipeline's call argument (default None: the scheduler's step default, False).
        name: the report label.

    Raises:
        ValueError: not a DDPMPipeline/DDIMPipeline (naming it), or its scheduler cannot be adapted.
    """

    def __init__(self, pipeline: Any, *, use_clipped_model_output: bool | None = None, name: str | None = None) -> None:
        from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler  # lazy

        if isinstance(pipeline, DDIMPipeline):
            kind = "ddim"
            scheduler = pipeline.scheduler
            if not isinstance(scheduler, DDIMScheduler):
                scheduler = DDIMScheduler.from_config(scheduler.config)
            adapter: Any = DiffusersDDIMAdapter(scheduler, use_clipped_model_output=bool(use_clipped_model_output))
        elif isinstance(pipeline, DDPMPipeline):
            kind = "ddpm"
            scheduler = pipeline.scheduler
            if not isinstance(scheduler, DDPMScheduler):
                fail("pipeline", pipeline, f"its scheduler is a {type(scheduler).__name__}; DDPMPipeline is adapted "
                     "with a DDPMScheduler only")
            adapter = DiffusersDDPMAdapter(scheduler)
        else:
            fail("pipeline", pipeline, "expected a diffusers DDPMPipeline or DDIMPipeline instance")
        self.pipeline = pipeline
        self.kind = kind
        self.scheduler_adapter = adapter
        self.use_clipped_model_output = use_clipped_model_output
        super().__init__(self._sample, adapter.conventions, name=name or f"diffusers.{type(pipeline).__name__}",
                         accepts_eta=kind == "ddim", accepts_generator=True, noise_source="generator",
                         table_dtype=torch.float32, betas=adapter.betas(), alphas_cumprod=adapter.alphas_cumprod())
        self.notes: tuple[str, ...] = tuple(adapter.notes) + (
            f"{type(pipeline).__name__}: scheduler {type(scheduler).__name__} (config read as the scheduler adapter reads it)",
            "the UNet is replaced by the harness's probe; the pipeline's own x_T draw is overwritten in place on the "
            "first UNet call",
            "the returned state is the last scheduler.step output, before (image / 2 + 0.5).clamp(0, 1); "
            "that map and the uint8 conversion are recorded (record_postprocess) and judged by the adapter family",
        ) + (("DDIMPipeline replaces its scheduler by DDIMScheduler.from_config(...)",)
             if kind == "ddim" and not isinstance(pipeline.scheduler, DDIMScheduler) else ())

    def recordings(self, *, dtype: torch.dtype = torch.float32, steps: Sequence[int] = (10,), seed: int = 0
                   ) -> list[PostprocessRecord]:
        """:meth:`record_postprocess` at every N of ``steps`` (the loop family judges the state before it)."""
        return [self.record_postprocess(num_steps=n, dtype=dtype, seed=seed) for n in steps]

    def _pipeline(self, unet: torch.nn.Module) -> tuple[Any, list[torch.Tensor]]:
        source = self.pipeline.scheduler
        scheduler = type(source).from_config(source.config)
        states: list[torch.Tensor] = []
        inner = scheduler.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            states.append(out.prev_sample if hasattr(out, "prev_sample") else out[0])
            return out

        scheduler.step = step  # the private copy's instance attribute; the user's scheduler is untouched
        pipe = type(self.pipeline)(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        if self.kind == "ddim":  # DDIMPipeline.__init__ built its own DDIMScheduler from the config: wrap that one
            if pipe.scheduler is not scheduler:
                inner = pipe.scheduler.step
                pipe.scheduler.step = step
        return pipe, states

    def _run(self, model: Callable[..., torch.Tensor], x_T: torch.Tensor, num_steps: int, eta: float,
             generator: torch.Generator | None, output_type: str) -> tuple[torch.Tensor, Any]:
        unet = _ProbeUNet(model, x_T)
        pipe, states = self._pipeline(unet)
        kwargs: dict[str, Any] = {"batch_size": int(x_T.shape[0]), "generator": generator,
                                  "num_inference_steps": int(num_steps), "output_type": output_type}
        if self.kind == "ddim":
            kwargs["eta"] = float(eta)
            kwargs["use_clipped_model_output"] = self.use_clipped_model_output
        images = pipe(**kwargs).images
        if not states:
            raise RuntimeError("the pipeline never called scheduler.step")
        return states[-1], images

    def _sample(self, model: Callable[..., torch.Tensor], x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        state, _ = self._run(model, x_T, num_steps, eta, generator, "pt")
        return state.detach().clone()

    def postprocess_run(self, model: Callable[..., torch.Tensor], x_T: torch.Tensor, num_steps: int, *,
                        eta: float = 0.0, seed: int = 0) -> PostprocessRecord:
        r"""One run with ``output_type="np"``, recorded: the final state, the [0, 1] images (back to NCHW) and
        the uint8 pixels of ``numpy_to_pil`` (back to NCHW; diffusers rounds: ``rounding="round"``)."""
        state, images = self._run(model, x_T, num_steps, eta, torch.Generator().manual_seed(int(seed)), "np")
        unit = np.asarray(images, dtype=np.float64).transpose(0, 3, 1, 2)
        pils = self.pipeline.numpy_to_pil(np.asarray(images))
        pixels = np.stack([np.asarray(p, dtype=np.uint8).reshape(unit.shape[2], unit.shape[3], -1) for p in pils])
        return PostprocessRecord(
            num_steps=int(num_steps), state=state.detach().to("cpu", torch.float64).numpy(), unit=unit,
            pixels=pixels.transpose(0, 3, 1, 2), dtype=dtype_name(x_T.dtype), rounding="round",
            unit_expression="(x/2 + 0.5).clamp(0, 1)",
            reproduce_unit="pipe(..., output_type='np').images vs np.clip((x + 1) / 2, 0, 1)",
            reproduce_pixels="np.array(pipe.numpy_to_pil(images)[i]) vs to_uint8(x, rounding='round')")

    def record_postprocess(self, *, num_steps: int = 10, dtype: torch.dtype = torch.float32, seed: int = 0,
                           batch: int = 64) -> PostprocessRecord:
        r"""The run the post-processing check judges: x_T standard normal (float64 draws cast down, shape
        (``batch``, 3, 4, 4)) and a model whose ε̂ = −0.3·x, so that the final states spread beyond [−1, 1]
        and the clamp acts.

        Raises:
            ValueError: ``num_steps``, ``batch`` or ``dtype`` out of range (naming it).
        """
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        b = as_int(batch, "batch", low=1)
        run_dtype = getattr(torch, dtype_name(dtype))
        g = torch.Generator().manual_seed(int(seed))
        x_T = torch.randn((b, 3, 4, 4), generator=g, dtype=torch.float64).to(run_dtype)
        return self.postprocess_run(_spreading_model(0.3), x_T, n, seed=seed)


def _spreading_model(scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """ε̂(x, t) = −scale·x: the sampled state grows past [−1, 1], where the post-processing clamp acts."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -scale * x

    return model
