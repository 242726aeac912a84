r"""Adapters for diffusers' ``DDPMParallelScheduler`` and ``DDIMParallelScheduler``, and a driver of ``batch_step_no_noise``.

The two classes (diffusers 0.42, ``schedulers/scheduling_{ddpm,ddim}_parallel.py``) are copies of
``DDPMScheduler`` / ``DDIMScheduler`` (same ``__init__`` fields, same ``step``) that do *not* derive
from them, plus ``batch_step_no_noise(model_output, timesteps, sample[, eta, use_clipped_model_output])``:
one noise-free step for a batch whose elements sit at different timesteps (ParaDiGMS-style parallel
sampling). Their ``step`` is adapted by the existing adapters, whose table, timestep and step methods
are reused unchanged (:class:`DiffusersDDPMParallelAdapter`, :class:`DiffusersDDIMParallelAdapter`).

``batch_step_no_noise`` is only *driven* here (:meth:`~_BatchStepNoNoise.record_batch_step_no_noise`):
one batch holding every timestep of the N-step list, recorded as
:class:`~ddspec.conformance.trajectory.Transition`\ s from each timestep t to the list's next (−1 after
the last) in a :class:`~ddspec.conformance.records.StepRecord`. The ``adapter`` check family
(:mod:`ddspec.conformance.checks.adapter_extras`, also :func:`~ddspec.conformance.checks.adapter_extras.check_batch_step_no_noise`)
judges every element against the reference step's *mean* (Ho et al. 2020 eq. 7, posterior mean; Song et
al. 2021 eq. 12 without the σ z term) within the step error model (``docs/tolerances.md``). diffusers
takes the previous timestep as ``t − T // N`` for every element, whatever the ``timestep_spacing``
(declared as the record's ``library_stride``); where that is not the list's next timestep (trailing,
linspace, custom timesteps) the check reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference.validation import as_int, as_scalar

from ..protocol import Conventions
from ..records import StepRecord, dtype_name
from ..trajectory import Transition
from .diffusers_ddim import DiffusersDDIMAdapter
from .diffusers_ddpm import DiffusersDDPMAdapter

__all__ = [
    "DiffusersDDPMParallelAdapter",
    "DiffusersDDIMParallelAdapter",
]


def _declared_prev(conv: Conventions, ts: NDArray[np.int64], k: int) -> int:
    """The list's next timestep after ``ts[k]``; after the last −1 (0 with ``set_alpha_to_one=False``)."""
    if k + 1 < ts.size:
        return int(ts[k + 1])
    return -1 if conv.final_alpha_bar_is_one else 0


class _BatchStepNoNoise:
    r"""Drives ``scheduler.batch_step_no_noise`` (shared by the two parallel adapters; mixed into a scheduler
    adapter, whose ``scheduler``, ``conventions``, ``timesteps(N)`` and ``alphas_cumprod()`` it uses)."""

    scheduler: Any
    conventions: Conventions

    def record_batch_step_no_noise(
        self,
        num_steps: int,
        *,
        model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        eta: float = 0.0,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        per_timestep: int = 2,
    ) -> StepRecord:
        r"""One ``batch_step_no_noise`` call for a batch holding every timestep of the N-step list, recorded.

        Element rows k·``per_timestep`` … sit at t_k; each row group becomes one transition from t_k to the
        list's next timestep (−1, or 0 with ``set_alpha_to_one=False``, after the last). Inputs: x_t
        standard normal (float64 draws cast down) and model output ``model(x_t, t)`` (default: an
        independent standard normal field). Nothing is driven where the conventions are unsupported, or
        for DDIM at η ≠ 0 (diffusers asserts η = 0: the record says so in ``skipped``).

        Raises:
            ValueError: ``num_steps``, ``eta`` or ``per_timestep`` out of range (naming it).
        """
        conv = self.conventions
        n = as_int(num_steps, "num_steps", low=1, high=conv.num_train_timesteps)
        e = as_scalar(eta, "eta", low=0.0)
        k_per = as_int(per_timestep, "per_timestep", low=1)
        ddim = conv.family == "ddim"
        reproduce = (f"scheduler.set_timesteps({n}); scheduler.batch_step_no_noise(model_output, timesteps, sample"
                     + (f", eta={e:g}" if ddim else "") + ")")

        def record(ts: NDArray[np.int64], transitions: tuple[Transition, ...], table: NDArray[np.float64] | None,
                   skipped: str | None = None) -> StepRecord:
            return StepRecord(kind="batch_step_no_noise", family="single_step", num_steps=n, eta=e, conventions=conv,
                              timesteps=ts, transitions=transitions, alphas_cumprod=table, dtype=dtype_name(dtype),
                              library_stride=conv.num_train_timesteps // n,
                              what=f"batch_step_no_noise vs the reference mean to the next listed timestep "
                                   f"({conv.timestep_spacing})",
                              reproduce=reproduce, skipped=skipped)

        empty = np.zeros(0, dtype=np.int64)
        if conv.unsupported:
            return record(empty, (), None)
        if ddim and e != 0.0:
            return record(empty, (), None, "DDIMParallelScheduler.batch_step_no_noise is noise-free by design: it "
                                           "asserts eta == 0 (diffusers 0.42), so only eta = 0 is checked")
        ts = self.timesteps(n)  # type: ignore[attr-defined]
        g = torch.Generator().manual_seed(int(seed))
        shape = (ts.size * k_per, 3, 4, 4)
        x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        t_batch = torch.from_numpy(np.repeat(ts, k_per))
        out = model(x, t_batch) if model is not None else torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        kwargs: dict[str, Any] = {"eta": e, "use_clipped_model_output": conv.use_clipped_model_output} if ddim else {}
        got = self.scheduler.batch_step_no_noise(out, t_batch, x, **kwargs).detach().to("cpu", torch.float64).numpy()
        x64 = x.to(torch.float64).numpy()
        m64 = out.detach().to("cpu", torch.float64).numpy()
        transitions = tuple(
            Transition(t=int(t), t_prev=_declared_prev(conv, ts, k), x_t=x64[k * k_per:(k + 1) * k_per].copy(),
                       model_output=m64[k * k_per:(k + 1) * k_per].copy(), x_prev=got[k * k_per:(k + 1) * k_per].copy(),
                       step=k)
            for k, t in enumerate(ts.tolist()))
        return record(ts, transitions, np.asarray(self.alphas_cumprod(), dtype=np.float64))  # type: ignore[attr-defined]

    def recordings(self, *, dtype: torch.dtype = torch.float32, steps: Sequence[int] = (1, 10), seed: int = 0
                   ) -> list[StepRecord]:
        """:meth:`record_batch_step_no_noise` at every N of ``steps`` (what the step families do not run)."""
        return [self.record_batch_step_no_noise(n, dtype=dtype, seed=seed) for n in steps]


# -- the adapters ------------------------------------------------------------------------------------


class DiffusersDDPMParallelAdapter(_BatchStepNoNoise, DiffusersDDPMAdapter):
    r"""``DDPMParallelScheduler`` as a :class:`~ddspec.conformance.protocol.Sampler` (its ``step``).

    The conventions are read exactly as for ``DDPMScheduler`` (same fields, same release table); the
    tables, timesteps and ``step`` are :class:`~.diffusers_ddpm.DiffusersDDPMAdapter`'s;
    ``batch_step_no_noise`` is driven by :meth:`record_batch_step_no_noise` / :meth:`recordings`.
    """

    DIFFUSERS_CLASS = "DDPMParallelScheduler"
    EXTRA_NOTES = ("DDPMParallelScheduler does not derive from DDPMScheduler; read as one",)


class DiffusersDDIMParallelAdapter(_BatchStepNoNoise, DiffusersDDIMAdapter):
    r"""``DDIMParallelScheduler`` as a :class:`~ddspec.conformance.protocol.Sampler` (its ``step``).

    Read exactly as ``DDIMScheduler``; tables, timesteps and ``step`` are
    :class:`~.diffusers_ddim.DiffusersDDIMAdapter`'s; ``batch_step_no_noise`` is driven by
    :meth:`record_batch_step_no_noise` / :meth:`recordings`.
    """

    DIFFUSERS_CLASS = "DDIMParallelScheduler"
    EXTRA_NOTES = ("DDIMParallelScheduler does not derive from DDIMScheduler; read as one",)
