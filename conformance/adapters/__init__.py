r"""Adapters: one module per foreign library, all behind :class:`ddspec.conformance.protocol.Sampler`.

:func:`adapt` turns what a user hands the harness into a :class:`~ddspec.conformance.protocol.Sampler`:

1. an object that already implements the protocol, or a whole-loop target
   (:class:`~.loop.LoopSampler`), is returned as it is;
2. a diffusers ``DDPMScheduler`` / ``DDIMScheduler`` instance (or subclass instance) is wrapped in
   :class:`~.diffusers_ddpm.DiffusersDDPMAdapter` / :class:`~.diffusers_ddim.DiffusersDDIMAdapter`
   (diffusers is imported only when the object's class comes from it, so this package imports
   without diffusers installed);
3. objects of libraries that are not installable here, recognised by duck typing (each adapter imports
   nothing from its library at module import) and wrapped as whole-loop targets:
   an improved-/guided-diffusion ``GaussianDiffusion``/``SpacedDiffusion`` → its ``p_sample_loop``
   (:func:`~.improved_diffusion.p_sample_target`; ``ddim_target`` for DDIM), a CompVis ``DDIMSampler``
   → :func:`~.compvis.ddim_sampler_target`, a CompVis image-space ``DDPM`` → :func:`~.compvis.ddpm_target`,
   a denoising-diffusion-pytorch ``GaussianDiffusion`` → :class:`~.lucidrains.LucidrainsAdapter`;
   diffusers' ``DDPMPipeline``/``DDIMPipeline`` (→ :class:`~.diffusers_pipeline.DiffusersPipelineLoop`, the probe
   in place of the UNet), ``DDPMParallelScheduler``/``DDIMParallelScheduler`` (→ step targets whose
   ``batch_step_no_noise`` is checked too) and ``DDIMInverseScheduler`` (→ an inversion target,
   :class:`~.diffusers_inverse.DiffusersInverseAdapter`); ermongroup/ddim's functions are wrapped with
   :func:`~.ermongroup.ermongroup_target`;
4. a zero-argument callable (a factory, or a class such as ``DDIMScheduler``) is called once and its
   result adapted by rules 1–3;
5. anything else raises ``TypeError`` with a one-line reason.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..protocol import Sampler
from . import compvis, improved_diffusion
from .diffusers_ddim import DiffusersDDIMAdapter
from .diffusers_ddpm import DiffusersDDPMAdapter
from .function import FunctionSampler
from .loop import LoopSampler

__all__ = ["adapt", "FunctionSampler", "LoopSampler", "DiffusersDDPMAdapter", "DiffusersDDIMAdapter"]


def _from_diffusers(obj: object) -> bool:
    return any(cls.__module__.split(".")[0] == "diffusers" for cls in type(obj).__mro__)


def _adapt_instance(obj: object) -> Sampler | LoopSampler | None:
    if isinstance(obj, (Sampler, LoopSampler)):
        return obj
    if _from_diffusers(obj):
        from diffusers import DDIMScheduler, DDPMScheduler

        extra = _adapt_diffusers_extra(obj)
        if extra is not None:
            return extra
        if isinstance(obj, DDPMScheduler):
            return DiffusersDDPMAdapter(obj)
        if isinstance(obj, DDIMScheduler):
            return DiffusersDDIMAdapter(obj)
    return _adapt_duck_typed(obj)


def _adapt_duck_typed(obj: object) -> LoopSampler | None:
    r"""Objects of libraries not installed here, recognised by their attributes (issue 9)."""
    # issue 9 part A: improved-/guided-diffusion and CompVis latent/stable diffusion
    if improved_diffusion.is_gaussian_diffusion(obj):
        return improved_diffusion.p_sample_target(obj)
    if compvis.is_ddim_sampler(obj):
        return compvis.ddim_sampler_target(obj)
    if compvis.is_ldm_ddpm(obj):
        if callable(getattr(obj, "apply_model", None)):
            raise TypeError(f"adapt: cannot adapt {type(obj).__module__}.{type(obj).__qualname__}: a latent model's "
                            "p_sample takes a conditioning; wrap it as DDIMSampler(model), or use "
                            "ddspec.conformance.adapters.compvis.ddim_sampler_target")
        return compvis.ddpm_target(obj)
    # issue 9 part B: denoising-diffusion-pytorch (ermongroup/ddim is a function, wrapped with
    # ermongroup.ermongroup_target; diffusers' extra classes are in _adapt_diffusers_extra)
    from .lucidrains import LucidrainsAdapter, is_lucidrains_diffusion

    if is_lucidrains_diffusion(obj):
        return LucidrainsAdapter(obj)
    return None


def _adapt_diffusers_extra(obj: object) -> Any:
    r"""diffusers' pipelines (whole-loop targets), parallel schedulers (step targets with
    ``batch_step_no_noise``) and the inverse scheduler (an inversion target), or None."""
    import diffusers

    pipelines = tuple(getattr(diffusers, n) for n in ("DDPMPipeline", "DDIMPipeline") if hasattr(diffusers, n))
    if pipelines and isinstance(obj, pipelines):
        from .diffusers_pipeline import DiffusersPipelineLoop

        return DiffusersPipelineLoop(obj)
    if isinstance(obj, getattr(diffusers, "DDPMParallelScheduler", ())):
        from .diffusers_parallel import DiffusersDDPMParallelAdapter

        return DiffusersDDPMParallelAdapter(obj)
    if isinstance(obj, getattr(diffusers, "DDIMParallelScheduler", ())):
        from .diffusers_parallel import DiffusersDDIMParallelAdapter

        return DiffusersDDIMParallelAdapter(obj)
    if isinstance(obj, getattr(diffusers, "DDIMInverseScheduler", ())):
        from .diffusers_inverse import DiffusersInverseAdapter

        return DiffusersInverseAdapter(obj)
    return None


def _is_zero_arg_callable(obj: object) -> bool:
    if not callable(obj):
        return False
    try:
        inspect.signature(obj).bind()
    except (TypeError, ValueError):
        return False
    return True


def adapt(obj: Any) -> Sampler | LoopSampler:
    r"""Return a :class:`~ddspec.conformance.protocol.Sampler` for ``obj`` (see the module docstring).

    Raises ``TypeError`` (one line, naming the type) when ``obj`` is none of: a Sampler, a
    LoopSampler, a diffusers DDPMScheduler/DDIMScheduler instance, or a zero-argument callable
    returning one of those.
    """
    sampler = _adapt_instance(obj)
    if sampler is not None:
        return sampler
    if _is_zero_arg_callable(obj):
        made = obj()
        sampler = _adapt_instance(made)
        if sampler is not None:
            return sampler
        raise TypeError(
            f"adapt: the factory {getattr(obj, '__qualname__', repr(obj))} returned {type(made).__qualname__}, "
            "which adapt() does not recognise (not a Sampler, a LoopSampler, nor an object of a supported library)"
        )
    what = type(obj).__module__ + "." + type(obj).__qualname__
    if _from_diffusers(obj):
        reason = ("supported diffusers classes: DDPMScheduler, DDIMScheduler (and subclasses), DDPMParallelScheduler, "
                  "DDIMParallelScheduler, DDIMInverseScheduler, DDPMPipeline, DDIMPipeline")
    elif callable(obj):
        reason = "a callable must take no arguments"
    else:
        reason = ("expected a Sampler, a LoopSampler, a diffusers DDPMScheduler/DDIMScheduler, an improved-diffusion "
                  "GaussianDiffusion, a CompVis DDIMSampler or DDPM, or a zero-argument factory")
    raise TypeError(f"adapt: cannot adapt {what}: {reason}")
