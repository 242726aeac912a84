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

:func:`check_inversion` runs the scheduler's inversion loop on a batch of data, records every step,
and compares each recorded step with :func:`~ddspec.reference.inversion.ddim_invert_step` from the
*declared* source index (the previous element of the list; −1, or 0 with ``set_alpha_to_one=False``,
before the first) within the step error model. A spacing whose stride is not T//N (trailing with
N ∤ T) makes the scheduler read another source ᾱ than the list's: the check reports where.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference._validate import as_int, fail
from ddspec.reference.inversion import ddim_invert_step

from ..protocol import Conventions
from ..results import CheckResult, Verdict
from ..tolerances import StepSpec
from .diffusers_ddim import _DDIM_FIELDS, DDIM_BETA_SCHEDULE_NAMES
from .diffusers_ddpm import read_common_config, table
from .diffusers_parallel import Transition, bound_of, error_model, judge_transitions

__all__ = ["DiffusersInverseAdapter", "InversionRun", "check_inversion"]



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
    its tables and :func:`check_inversion` through :meth:`extra_checks`
    (:mod:`ddspec.conformance.checks.adapter_extras`); it has no reverse ``step``.

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

    def extra_checks(self, *, dtype: torch.dtype = torch.float32, steps: tuple[int, ...] = (1, 10), seed: int = 0
                     ) -> list[CheckResult]:
        """:func:`check_inversion` at every N of ``steps``."""
        return [check_inversion(self, n, dtype=dtype, seed=seed) for n in steps]

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


def _eps_of(kind: str, m: NDArray[np.float64], x: NDArray[np.float64], a: float) -> NDArray[np.float64] | None:
    r"""ε̂ at the source (ᾱ = a) from the model output (Salimans & Ho 2022 §4 for v); None where singular."""
    if kind == "epsilon":
        return m
    if kind == "v_prediction":
        return np.sqrt(a) * m + np.sqrt(1.0 - a) * x
    if a >= 1.0:
        return None  # x̂₀-prediction at the data: ε̂ = (x − x̂₀)/0
    return (x - np.sqrt(a) * m) / np.sqrt(1.0 - a)


def _from_data_bound(a: float, delta: float, u: float, x: NDArray[np.float64], eps: NDArray[np.float64]) -> NDArray[np.float64]:
    r"""Tolerance of the first step from the data, :math:`x_{t} = s\,x + c\,\epsilon`, :math:`s = \sqrt{\bar\alpha_t}`,
    :math:`c = \sqrt{1-\bar\alpha_t}` (x̂₀ = x exactly, ᾱ = 1 at the source).

    A relative error δ of the table's ᾱ moves s by ½δ and c by ½δ·ᾱ/(1−ᾱ) (relative); forming 1 − ᾱ adds
    u·ᾱ/(1−ᾱ), each square root u, and the two products and the sum γ₃(u) of the total; factor 2 for safety
    (second-order terms). (The general step model's conditioning of 1 − ᾱ_source is infinite at ᾱ = 1,
    which this step never forms.)
    """
    s, c = np.sqrt(a), np.sqrt(1.0 - a)
    rel_s = 0.5 * delta + 2 * u
    rel_c = 0.5 * (delta + u) * a / (1.0 - a) + 2 * u if a < 1.0 else np.inf
    gamma3 = 3 * u / (1 - 3 * u)
    mag = s * np.abs(x) + c * np.abs(eps)
    return 2.0 * (rel_s * s * np.abs(x) + rel_c * c * np.abs(eps) + gamma3 * mag)


def check_inversion(adapter: DiffusersInverseAdapter, num_steps: int, *,
                    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    x0: torch.Tensor | None = None, dtype: torch.dtype = torch.float32, seed: int = 0) -> CheckResult:
    r"""Every step of the scheduler's N-step inversion against :func:`~ddspec.reference.inversion.ddim_invert_step`.

    .. math:: x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\hat\epsilon

    from the declared source index (Song et al. 2021 eq. 12, σ = 0, §4.3), with x̂₀ clamped where
    ``clip_sample`` is declared, within the step error model of ``docs/tolerances.md``. Defaults: data
    x0 uniform in [−0.9, 0.9] (shape (8, 3, 4, 4)) and a model returning a fixed standard-normal field
    per timestep (so that every term matters). Returns ``single_step.inversion.N=<n>``.
    """
    n = as_int(num_steps, "num_steps", low=1, high=adapter.conventions.num_train_timesteps)
    conv = adapter.conventions
    name = f"single_step.inversion.N={n}"
    if conv.unsupported:
        return CheckResult.unsupported(name, "single_step", "; ".join(conv.unsupported))
    g = torch.Generator().manual_seed(int(seed))
    if x0 is None:
        x0 = (torch.rand((8, 3, 4, 4), generator=g, dtype=torch.float64) * 1.8 - 0.9).to(dtype)
    if model is None:
        fields: dict[int, torch.Tensor] = {}

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            key = int(t.reshape(-1)[0])
            if key not in fields:
                fields[key] = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(seed) * 7919 + key),
                                          dtype=torch.float64)
            return fields[key].to(x.dtype)

    run = adapter.invert(model, x0, n)
    betas, deltas, u = error_model(conv, adapter.alphas_cumprod(), dtype)
    ab = ref_alphas.alpha_bar(betas)
    spec = StepSpec(family="ddim", prediction_type="epsilon", clip_sample=conv.clip_sample,
                    clip_sample_range=conv.clip_sample_range)
    transitions, singular, clipped, moved = [], [], 0, []
    nonfinite_from: int | None = None
    stride = conv.num_train_timesteps // n
    for k, t_to in enumerate(run.timesteps.tolist()):
        t_from = adapter.source_index(run.timesteps, k)
        used = t_to - stride
        if max(used, -1) != t_from and not (k == 0 and used < 0):
            moved.append((t_to, t_from, used))
        x, m = run.x_from[k], run.model_output[k]
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(m))):
            nonfinite_from = k
            break
        a_from = 1.0 if t_from < 0 else float(ab[t_from])
        eps = _eps_of(conv.prediction_type, m, x, a_from)
        if eps is None:
            singular.append(int(np.sum(~np.isfinite(run.x_to[k]))))
            continue
        # eq. 12 (σ = 0) written out; the reference function itself wherever it applies (t_from < t_to, no
        # clipping bound). set_alpha_to_one=False starts at index 0 and steps 0 -> 0 (the identity unclipped).
        x0_hat = x if t_from < 0 else (x - np.sqrt(1.0 - a_from) * eps) / np.sqrt(a_from)
        x0_used = np.clip(x0_hat, -conv.clip_sample_range, conv.clip_sample_range) if conv.clip_sample else x0_hat
        if np.any(x0_used != x0_hat):
            clipped += 1
        if t_from < t_to and np.array_equal(x0_used, x0_hat):
            expected = ddim_invert_step(eps, t_from, t_to, x, betas)
        else:
            expected = np.sqrt(ab[t_to]) * x0_used + np.sqrt(1.0 - ab[t_to]) * eps
        if t_from < 0:
            bound = _from_data_bound(float(ab[t_to]), float(deltas[t_to]), u, x, eps)
        else:
            bound = bound_of(spec, ab, deltas, u, t_from, t_to, eps, x)
        transitions.append(Transition(k, int(t_to), int(t_from), run.x_to[k], np.asarray(expected, dtype=np.float64), bound))
    result = judge_transitions(name, "single_step", transitions,
                               f"DDIM inversion (model at the destination) vs ddim_invert_step from the listed source "
                               f"({conv.timestep_spacing}, {conv.prediction_type})",
                               reproduce=f"scheduler.set_timesteps({n}); for t in scheduler.timesteps: "
                                         "x = scheduler.step(model(x, t), t, x).prev_sample")
    extra = []
    if moved:
        t, listed, used = moved[0]
        extra.append(f"the scheduler steps from t - T//N (T//N = {stride}), not from the previous listed timestep, at "
                     f"{len(moved)} of {run.timesteps.size} steps (first: to {t} from {used}, listed {listed})")
    if singular:
        extra.append(f"the first step from the data is singular for x0-prediction (eps = (x - x0)/sqrt(1 - 1)); the "
                     f"scheduler returned {singular[0]} non-finite value(s) there, not compared")
    if nonfinite_from is not None:
        extra.append(f"the state is non-finite from step {nonfinite_from} on; later steps not compared")
    if clipped:
        extra.append(f"x0 clipping bound in {clipped} step(s); compared with the clipped reference")
    if any(singular) or nonfinite_from is not None:
        result = replace(result, verdict=Verdict.FAIL)  # non-finite output where the reference is singular: never silent
    if extra:
        result = replace(result, message=result.message + "; " + "; ".join(extra),
                         details={**result.details, "moved": [list(m) for m in moved], "singular_nonfinite": singular,
                                  "clipped_steps": clipped})
    return result
