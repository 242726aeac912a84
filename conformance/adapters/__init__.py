r"""Adapters: one module per foreign library, all behind :class:`ddspec.conformance.protocol.Sampler`.

:func:`adapt` turns what a user hands the harness into a :class:`~ddspec.conformance.protocol.Sampler`:

1. an object that already implements the protocol, or a whole-loop target
   (:class:`~.loop.LoopSampler`), is returned as it is;
2. a diffusers ``DDPMScheduler`` / ``DDIMScheduler`` instance (or subclass instance) is wrapped in
   :class:`~.diffusers_ddpm.DiffusersDDPMAdapter` / :class:`~.diffusers_ddim.DiffusersDDIMAdapter`
   (diffusers is imported only when the object's class comes from it, so this package imports
   without diffusers installed);
3. a zero-argument callable (a factory, or a class such as ``DDIMScheduler``) is called once and its
   result adapted by rules 1–2;
4. anything else raises ``TypeError`` with a one-line reason.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..protocol import Sampler
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

        if isinstance(obj, DDPMScheduler):
            return DiffusersDDPMAdapter(obj)
        if isinstance(obj, DDIMScheduler):
            return DiffusersDDIMAdapter(obj)
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
            "which is neither a Sampler nor a diffusers DDPMScheduler/DDIMScheduler"
        )
    what = type(obj).__module__ + "." + type(obj).__qualname__
    if _from_diffusers(obj):
        reason = "only DDPMScheduler and DDIMScheduler (and their subclasses) are supported"
    elif callable(obj):
        reason = "a callable must take no arguments"
    else:
        reason = "expected a Sampler, a diffusers DDPMScheduler/DDIMScheduler, or a zero-argument factory"
    raise TypeError(f"adapt: cannot adapt {what}: {reason}")
