r"""diffusers' ``DDIMInverseScheduler`` against the reference DDIM inversion (``ddspec.reference.inversion``).

What the scheduler does (diffusers 0.42, ``schedulers/scheduling_ddim_inverse.py``):

* ``set_timesteps(N)``: ascending indices, ``leading`` (``k·(T//N) + steps_offset``) or ``trailing``
  (``round(arange(T, 0, −T/N))[::-1] − 1``); no ``linspace``.
* ``step(model_output, t, x)`` goes from the *source* index ``t − T//N`` (for every spacing) to the
  *destination* ``t``; a negative source reads ``initial_alpha_cumprod`` (1 with ``set_alpha_to_one``,
  else ᾱ₀). The caller evaluates the model at the destination ``t`` on the source state — the
  reference's ``model_at="destination"`` (:func:`~ddspec.reference.inversion.ddim_invert`).
* ε̂ is the model output as it is (``epsilon``), or derived from it (``sample``, ``v_prediction``);
  x̂₀ is clamped to ``±clip_sample_range`` when ``clip_sample`` (the default is True).
* The step is DDIM eq. 12 with σ = 0 run towards noisier indices (Song et al. 2021, §4.3 eq. 14):
  :math:`x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\hat\epsilon`.

:meth:`DiffusersInverseAdapter.record_inversion` only *drives*: it runs the scheduler's inversion loop
on a batch of data and records every step as a :class:`~ddspec.conformance.trajectory.Transition` from
the *declared* source index (the previous element of the list; −1, or 0 with ``set_alpha_to_one=False``,
before the first; ``t`` the source, ``t_prev`` the destination) in a
:class:`~ddspec.conformance.records.StepRecord`. The ``adapter`` check family
(:mod:`ddspec.conformance.checks.adapter_extras`, also
:func:`~ddspec.conformance.checks.adapter_extras.check_inversion`) judges each step against
:func:`~ddspec.reference.inversion.ddim_invert_step` within the step error model. A spacing whose
stride is not T//N (trailing with N ∤ T) makes the scheduler read another source ᾱ than the list's
(declared as the record's ``library_stride``): the check reports where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference._validate import as_int, fail

from ..protocol import Conventions
from ..records import StepRecord, dtype_name
from ..trajectory import Transition
from .diffusers_ddim import _DDIM_FIELDS, DDIM_BETA_SCHEDULE_NAMES
from .diffusers_ddpm import read_common_config, table

__all__ = ["DiffusersInverseAdapter", "InversionRun"]


@dataclass(frozen=True)
class InversionRun:
    r"""A recorded inversion: ``timesteps`` (ascending, the destinations), and per step k the source state
    ``x_from[k]``, the model output ``model_output[k]`` and the result ``x_to[k]`` (float64 copies)."""

    timesteps: NDArray[np.int64]
    x_from: tuple[NDArray[np.float64], ...]
    model_output: tuple[NDArray[np.float64], ...]
    x_to: tuple[NDArray[np.float64], ...]


class DiffusersInverseAdapter:
    r"""Read a diffusers ``DDIMInverseScheduler``'s conventions and run its inversion loop.

    ``conventions`` is a :class:`~ddspec.conformance.protocol.Conventions` (``family="ddim"``) read from
    the config like ``DDIMScheduler``'s (:func:`~.diffusers_ddpm.read_common_config`); ``set_alpha_to_one``
    here says where the *first* step starts (ᾱ = 1: the data, index −1; else ᾱ₀, index 0).

    It is an *inversion target* (``target_kind = "inversion"``): ``ddspec check`` runs the schedule family on
    its tables and judges the inversions :meth:`recordings` drives (:mod:`ddspec.conformance.checks.adapter_extras`);
    it has no reverse ``step``.

    Raises:
        ValueError: ``scheduler`` is not a ``DDIMInverseScheduler`` (naming it).
    """

    target_kind = "inversion"
    has_tables = True

    def __init__(self, scheduler: Any, *, name: str | None = None) -> None:
        from diffusers import DDIMInverseScheduler  # lazy

        if not isinstance(scheduler, DDIMInverseScheduler):
            fail("scheduler", scheduler, "expected a diffusers DDIMInverseScheduler (or subclass) instance")
        self.scheduler = scheduler
        self.name = name if name is not None else f"diffusers.{type(scheduler).__name__}"
        fields, unsupported, rc = read_common_config(scheduler, _DDIM_FIELDS, schedule_names=DDIM_BETA_SCHEDULE_NAMES,
                                                     family="ddim", base=DDIMInverseScheduler)
        self.release = rc.release
        self.notes: tuple[str, ...] = rc.notes + (
            "inversion: the model is evaluated at the destination index on the source state (model_at='destination')",
            f"first step from {'the data (alpha_bar = 1, index -1)' if rc['set_alpha_to_one'] else 'alpha_bar_0 (index 0)'}",
        )
        self.conventions = Conventions(family="ddim", variance_type=None, final_alpha_bar_is_one=bool(rc["set_alpha_to_one"]),
                                       unsupported=tuple(unsupported), **fields)

    def recordings(self, *, dtype: torch.dtype = torch.float32, steps: Sequence[int] = (1, 10), seed: int = 0
                   ) -> list[StepRecord]:
        """:meth:`record_inversion` at every N of ``steps`` (for the ``adapter`` check family)."""
        return [self.record_inversion(n, dtype=dtype, seed=seed) for n in steps]

    def betas(self) -> NDArray[np.float64]:
        """The scheduler's β (float32 values cast up)."""
        return table(self.scheduler.betas)

    def alphas_cumprod(self) -> NDArray[np.float64]:
        """The scheduler's ᾱ (its float32 cumprod, cast up)."""
        return table(self.scheduler.alphas_cumprod)

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        """``scheduler.timesteps`` after ``set_timesteps(num_steps)`` (ascending: the destinations)."""
        n = as_int(num_steps, "num_steps", low=1, high=self.conventions.num_train_timesteps)
        self.scheduler.set_timesteps(n)
        return self.scheduler.timesteps.detach().to("cpu").numpy().astype(np.int64)

    def source_index(self, timesteps: NDArray[np.int64], k: int) -> int:
        """The declared source of step k: the previous destination, or −1 (0 with ``set_alpha_to_one=False``) first."""
        if k > 0:
            return int(timesteps[k - 1])
        return -1 if self.conventions.final_alpha_bar_is_one else 0

    def invert(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
               num_steps: int) -> InversionRun:
        r"""The usual inversion loop: for t in ``timesteps``: ``x = step(model(x, t), t, x).prev_sample``."""
        ts = self.timesteps(num_steps)
        x = x0
        xs, ms, outs = [], [], []
        for t in ts.tolist():
            tt = torch.full((x.shape[0],), int(t), dtype=torch.long)
            m = model(x, tt)
            new = self.scheduler.step(m, int(t), x).prev_sample
            xs.append(x.detach().to("cpu", torch.float64).numpy().copy())
            ms.append(m.detach().to("cpu", torch.float64).numpy().copy())
            outs.append(new.detach().to("cpu", torch.float64).numpy().copy())
            x = new
        return InversionRun(ts, tuple(xs), tuple(ms), tuple(outs))

    def record_inversion(self, num_steps: int, *,
                         model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                         x0: torch.Tensor | None = None, dtype: torch.dtype | str = torch.float32,
                         seed: int = 0) -> StepRecord:
        r"""Run the scheduler's N-step inversion (:meth:`invert`) and record every step from its declared source.

        Defaults: data x0 uniform in [−0.9, 0.9] (shape (8, 3, 4, 4), float64 draws cast down) and a model
        returning a fixed standard-normal field per timestep (so that every term of the step matters).
        Transition k goes from :meth:`source_index` (``t``) to the k-th listed timestep (``t_prev``). The
        scheduler's own source is ``t − T//N`` for every spacing: the record's ``library_stride``. Nothing
        is driven where the conventions are unsupported.

        Raises:
            ValueError: ``num_steps`` out of range or ``dtype`` unknown (naming it).
        """
        conv = self.conventions
        n = as_int(num_steps, "num_steps", low=1, high=conv.num_train_timesteps)
        run_dtype = getattr(torch, dtype_name(dtype))

        def record(ts: NDArray[np.int64], transitions: tuple[Transition, ...], tab: NDArray[np.float64] | None
                   ) -> StepRecord:
            return StepRecord(kind="inversion", family="single_step", num_steps=n, eta=0.0, conventions=conv,
                              timesteps=ts, transitions=transitions, alphas_cumprod=tab, dtype=dtype_name(dtype),
                              library_stride=conv.num_train_timesteps // n,
                              what=f"DDIM inversion (model at the destination) vs ddim_invert_step from the listed "
                                   f"source ({conv.timestep_spacing}, {conv.prediction_type})",
                              reproduce=f"scheduler.set_timesteps({n}); for t in scheduler.timesteps: "
                                        "x = scheduler.step(model(x, t), t, x).prev_sample")

        if conv.unsupported:
            return record(np.zeros(0, dtype=np.int64), (), None)
        g = torch.Generator().manual_seed(int(seed))
        if x0 is None:
            x0 = (torch.rand((8, 3, 4, 4), generator=g, dtype=torch.float64) * 1.8 - 0.9).to(run_dtype)
        if model is None:
            model = _field_model(int(seed))
        run = self.invert(model, x0, n)
        transitions = tuple(
            Transition(t=self.source_index(run.timesteps, k), t_prev=int(t_to), x_t=run.x_from[k],
                       model_output=run.model_output[k], x_prev=run.x_to[k], step=k)
            for k, t_to in enumerate(run.timesteps.tolist()))
        return record(run.timesteps, transitions, self.alphas_cumprod())


def _field_model(seed: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A model returning a fixed standard-normal field per timestep (seeded by ``(seed, t)``; a function of t)."""
    fields: dict[int, torch.Tensor] = {}

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        key = int(t.reshape(-1)[0])
        if key not in fields:
            fields[key] = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed * 7919 + key),
                                      dtype=torch.float64)
        return fields[key].to(x.dtype)

    return model
