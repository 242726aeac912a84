r"""Adapter for hand-written samplers given as a step function plus declared conventions.

:class:`FunctionSampler` turns ``step_fn`` + ``betas`` + :class:`~ddspec.conformance.protocol.Conventions`
into a :class:`~ddspec.conformance.protocol.Sampler`. The step function has the protocol's signature
without ``self``::

    def step_fn(model_output, t, x_t, *, num_steps, eta, noise, generator, predicted_variance) -> x_prev

The timesteps default to the declared ``timestep_spacing`` rule
(:func:`~ddspec.conformance.protocol.declared_timesteps`); a sampler with its own rule passes
``timesteps_fn`` (required for ``timestep_spacing="custom"``). ᾱ defaults to the exact product of the
given β (:func:`ddspec.reference.alphas.alpha_bar`); a sampler that stores a lower-precision table
should pass it as ``alphas_cumprod`` so that the harness sees what the sampler really uses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from ddspec.reference._validate import as_array, as_betas, as_int, fail
from ddspec.reference.alphas import alpha_bar
from ddspec.reference.vocabulary import NAMED_SPACINGS

from ..protocol import (
    NOISE_SOURCES,
    Conventions,
    NumStepsSupport,
    as_coefficient_dtype,
    declared_timesteps,
    num_steps_support,
)

__all__ = ["FunctionSampler", "StepFn"]

StepFn = Callable[..., torch.Tensor]
"""``step_fn(model_output, t, x_t, *, num_steps, eta, noise, generator, predicted_variance) -> x_prev``."""


class FunctionSampler:
    r"""A :class:`~ddspec.conformance.protocol.Sampler` built from a step function.

    Parameters
    ----------
    step_fn:
        The reverse step (see the module docstring); called with every protocol keyword.
    betas:
        The sampler's β table (length ``conventions.num_train_timesteps``, ``betas[i]`` is β_{i+1}).
    conventions:
        What the sampler declares.
    timesteps_fn:
        ``timesteps_fn(num_steps) -> int array`` in sampling order (noisiest first). Default: the
        declared spacing rule.
    alphas_cumprod:
        The sampler's own ᾱ table, if it stores one; default :func:`ddspec.reference.alphas.alpha_bar`.
    name:
        Label for reports.
    noise_source:
        Where the step draws its noise when none is injected: ``"generator"`` (the one it is given, the
        default) or ``"global"`` (torch's global RNG; the harness seeds it per call inside ``fork_rng``,
        :func:`~ddspec.conformance.protocol.noise_source`).
    supported_num_steps:
        The N the step supports: a set of ints or a predicate ``N -> bool`` (e.g. ``{T}`` for a step
        that only works when every training step is visited). The checks run only these N and report
        the others as not supported. None (default): every N. Exposed as the attribute
        ``supported_num_steps``, a :class:`~ddspec.conformance.protocol.NumStepsSupport`.
    coefficient_dtype:
        The dtype the step rounds each coefficient to when it takes it from wider tables (float64
        tables read with ``.float()``: ``torch.float32``; a torch dtype or its name). The error model
        then admits exactly that rounding. None (default): the run's dtype. Exposed as the attribute
        ``coefficient_dtype`` (a torch dtype or None).

    Raises
    ------
    ValueError
        A malformed argument; the message names it and the value.
    """

    def __init__(
        self,
        step_fn: StepFn,
        betas: ArrayLike,
        conventions: Conventions,
        *,
        timesteps_fn: Callable[[int], ArrayLike] | None = None,
        alphas_cumprod: ArrayLike | None = None,
        name: str = "function",
        noise_source: str = "generator",
        supported_num_steps: Collection[int] | Callable[[int], bool] | NumStepsSupport | None = None,
        coefficient_dtype: torch.dtype | str | None = None,
    ) -> None:
        if not callable(step_fn):
            fail("step_fn", step_fn, "must be callable")
        if not isinstance(conventions, Conventions):
            fail("conventions", conventions, "expected a Conventions instance")
        b = as_betas(betas)
        if b.size != conventions.num_train_timesteps:
            fail("betas", betas, f"has length {b.size}, conventions.num_train_timesteps={conventions.num_train_timesteps}")
        if timesteps_fn is None:
            if conventions.timestep_spacing not in NAMED_SPACINGS:
                fail("timesteps_fn", None,
                     f"is required for timestep_spacing={conventions.timestep_spacing!r} (no built-in rule)")
        elif not callable(timesteps_fn):
            fail("timesteps_fn", timesteps_fn, "must be callable or None")
        if alphas_cumprod is None:
            ab = alpha_bar(b)
        else:
            ab = as_array(alphas_cumprod, "alphas_cumprod")
            if ab.shape != b.shape:
                fail("alphas_cumprod", alphas_cumprod, f"shape {ab.shape} does not match betas' shape {b.shape}")
        self._step_fn = step_fn
        self._betas = b
        self._alphas_cumprod = ab
        self._timesteps_fn = timesteps_fn
        self.conventions = conventions
        self.name = str(name)
        if noise_source not in NOISE_SOURCES:
            fail("noise_source", noise_source, f"must be one of {NOISE_SOURCES}")
        self.noise_source = noise_source
        self.supported_num_steps: NumStepsSupport = num_steps_support(supported_num_steps)
        self.coefficient_dtype: torch.dtype | None = as_coefficient_dtype(coefficient_dtype)

    def betas(self) -> NDArray[np.float64]:
        """float64 copy of the β table given at construction."""
        return self._betas.copy()

    def alphas_cumprod(self) -> NDArray[np.float64]:
        r"""float64 copy of the ᾱ table (given, or the exact product of the β)."""
        return self._alphas_cumprod.copy()

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        """``timesteps_fn(num_steps)`` as int64, or the declared spacing rule."""
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        if self._timesteps_fn is None:
            return declared_timesteps(self.conventions, n)
        ts = np.asarray(self._timesteps_fn(n))
        if ts.ndim != 1 or ts.dtype.kind not in "iu":
            fail("timesteps_fn", self._timesteps_fn, f"returned {ts!r}; expected a 1-D integer array")
        return ts.astype(np.int64)

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
        """Call ``step_fn`` with every protocol argument; check that it returns a tensor of x_t's shape."""
        out: Any = self._step_fn(
            model_output,
            t,
            x_t,
            num_steps=num_steps,
            eta=eta,
            noise=noise,
            generator=generator,
            predicted_variance=predicted_variance,
        )
        if not isinstance(out, torch.Tensor) or out.shape != x_t.shape:
            raise TypeError(
                f"{self.name}: step_fn returned {type(out).__name__} of shape {getattr(out, 'shape', None)}; "
                f"expected a torch.Tensor of x_t's shape {tuple(x_t.shape)}"
            )
        return out
