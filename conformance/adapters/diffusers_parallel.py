r"""Adapters for diffusers' ``DDPMParallelScheduler`` and ``DDIMParallelScheduler``, and a check of ``batch_step_no_noise``.

The two classes (diffusers 0.42, ``schedulers/scheduling_{ddpm,ddim}_parallel.py``) are copies of
``DDPMScheduler`` / ``DDIMScheduler`` (same ``__init__`` fields, same ``step``) that do *not* derive
from them, plus ``batch_step_no_noise(model_output, timesteps, sample[, eta, use_clipped_model_output])``:
one noise-free step for a batch whose elements sit at different timesteps (ParaDiGMS-style parallel
sampling). Their ``step`` is adapted by the existing adapters, whose table, timestep and step methods
are reused unchanged (:class:`DiffusersDDPMParallelAdapter`, :class:`DiffusersDDIMParallelAdapter`).

``batch_step_no_noise`` is checked by :func:`check_batch_step_no_noise`: every element's result
against the reference step's *mean* (Ho et al. 2020 eq. 7, posterior mean; Song et al. 2021 eq. 12
without the σ z term) from its timestep t to the next timestep of the N-step list (−1 after the last),
within the step error model (``docs/tolerances.md``). diffusers takes the previous timestep as
``t − T // N`` for every element, whatever the ``timestep_spacing``; where that is not the list's next
timestep (trailing, linspace, custom timesteps) the check reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.validation import as_int, as_scalar

from ..expectation import reference_betas, reference_step, step_spec
from ..protocol import Conventions
from ..results import CheckResult, Finding, Verdict
from ..tolerances import StepSpec, alpha_bar_relative_bound, step_bound, table_roundoff, unit_roundoff
from .diffusers_ddim import DiffusersDDIMAdapter
from .diffusers_ddpm import DiffusersDDPMAdapter

__all__ = [
    "DiffusersDDPMParallelAdapter",
    "DiffusersDDIMParallelAdapter",
    "Transition",
    "judge_transitions",
    "check_batch_step_no_noise",
]


# -- a small judge shared with diffusers_inverse ----------------------------------------------------


@dataclass(frozen=True)
class Transition:
    r"""One observed step, with what the reference needs to recompute it.

    ``expected`` is the reference value (float64); ``bound`` the per-element tolerance
    (:func:`~ddspec.conformance.tolerances.step_bound`); ``step``/``t``/``t_prev`` say where.
    """

    step: int
    t: int
    t_prev: int
    got: NDArray[np.float64]
    expected: NDArray[np.float64]
    bound: NDArray[np.float64]


def judge_transitions(name: str, family: str, transitions: Sequence[Transition], what: str,
                      reproduce: str | None = None) -> CheckResult:
    r"""One result for the transitions: pass iff every element has :math:`|got - expected| \le bound`.

    ``observed`` is the worst ratio error/bound (tolerance 1); findings give step, timestep, element,
    expected, got and the tolerance applied, worst first.
    """
    if not transitions:
        return CheckResult.skipped(name, family, f"{what}: nothing to compare")
    rows: list[tuple[float, Finding]] = []
    worst = 0.0
    for tr in transitions:
        err = np.abs(tr.got - tr.expected)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(np.isfinite(err), err / np.maximum(tr.bound, np.finfo(np.float64).tiny), np.inf)
        j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        r = float(ratio[j])
        worst = max(worst, r)
        rows.append((r, Finding(step=tr.step, timestep=tr.t, element=tuple(int(i) for i in j),
                                expected=float(tr.expected[j]), got=float(tr.got[j]), tolerance=float(tr.bound[j]),
                                message=f"step {tr.t} -> {tr.t_prev}: error {float(err[j]):.3g}, {r:.3g} x tolerance")))
    rows.sort(key=lambda row: -row[0])
    findings = tuple(f for _, f in rows[:5])
    ok = worst <= 1.0
    head = findings[0]
    msg = (f"{what}: {len(transitions)} transitions, worst error {worst:.3g} x tolerance "
           f"(step {head.step}, t={head.timestep}, element {head.element}: expected {head.expected!r}, got {head.got!r}, "
           f"tolerance {head.tolerance:.3g})")
    return CheckResult(name=name, family=family, verdict=Verdict.PASS if ok else Verdict.FAIL, observed=worst,
                       tolerance=1.0, message=msg, findings=findings, reproduce=reproduce,
                       details={"transitions": len(transitions)})


def error_model(conv: Conventions, target_alphas_cumprod: NDArray[np.float64], dtype: torch.dtype
                ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    r"""``(reference betas, δ of the target's ᾱ per index, u of the run)`` for :func:`step_bound`.

    The target's table is judged as a running product in the dtype it is stored in
    (:func:`~ddspec.conformance.tolerances.table_roundoff`), the step's arithmetic in the run's dtype.
    """
    betas = reference_betas(conv)
    u_compute = unit_roundoff(dtype)
    u_table = max(u_compute, table_roundoff(target_alphas_cumprod))
    deltas = alpha_bar_relative_bound(betas, conv.beta_schedule, u_table)
    return betas, deltas, max(u_compute, u_table)


def bound_of(spec: StepSpec, ab: NDArray[np.float64], deltas: NDArray[np.float64], u: float, t: int, t_prev: int,
             model_output: NDArray[np.float64], x_t: NDArray[np.float64]) -> NDArray[np.float64]:
    """The step's per-element tolerance from ``t`` to ``t_prev`` (−1 is the data, ᾱ = 1 exactly)."""
    a_t = 1.0 if t < 0 else float(ab[t])
    # a zero-terminal-SNR ᾱ of exactly 0 (as an inversion's destination) would divide by zero in the
    # σ(η) term of the error model, which η = 0 multiplies away: a positive subnormal keeps it finite
    a_p = 1.0 if t_prev < 0 else max(float(ab[t_prev]), 1e-300)
    d_t = 0.0 if t < 0 else float(deltas[t])
    d_p = 0.0 if t_prev < 0 else float(deltas[t_prev])
    return step_bound(spec, alpha_bar_t=a_t, alpha_bar_prev=a_p, delta_t=d_t, delta_prev=d_p,
                      model_output=model_output, x_t=x_t, noise=None, u_compute=u).bound


# -- the adapters ------------------------------------------------------------------------------------


class DiffusersDDPMParallelAdapter(DiffusersDDPMAdapter):
    r"""``DDPMParallelScheduler`` as a :class:`~ddspec.conformance.protocol.Sampler` (its ``step``).

    The conventions are read exactly as for ``DDPMScheduler`` (same fields, same release table); the
    tables, timesteps and ``step`` are :class:`~.diffusers_ddpm.DiffusersDDPMAdapter`'s.
    """

    DIFFUSERS_CLASS = "DDPMParallelScheduler"
    EXTRA_NOTES = ("DDPMParallelScheduler does not derive from DDPMScheduler; read as one",)

    def extra_checks(self, *, dtype: torch.dtype = torch.float32, steps: Sequence[int] = (1, 10), seed: int = 0
                     ) -> list[CheckResult]:
        """``check_batch_step_no_noise`` at every N of ``steps`` (the checks the step families do not run)."""
        return [check_batch_step_no_noise(self, n, dtype=dtype, seed=seed) for n in steps]


class DiffusersDDIMParallelAdapter(DiffusersDDIMAdapter):
    r"""``DDIMParallelScheduler`` as a :class:`~ddspec.conformance.protocol.Sampler` (its ``step``).

    Read exactly as ``DDIMScheduler``; tables, timesteps and ``step`` are
    :class:`~.diffusers_ddim.DiffusersDDIMAdapter`'s.
    """

    DIFFUSERS_CLASS = "DDIMParallelScheduler"
    EXTRA_NOTES = ("DDIMParallelScheduler does not derive from DDIMScheduler; read as one",)

    def extra_checks(self, *, dtype: torch.dtype = torch.float32, steps: Sequence[int] = (1, 10), seed: int = 0
                     ) -> list[CheckResult]:
        """``check_batch_step_no_noise`` at every N of ``steps`` (the checks the step families do not run)."""
        return [check_batch_step_no_noise(self, n, dtype=dtype, seed=seed) for n in steps]


# -- batch_step_no_noise -----------------------------------------------------------------------------


def _declared_prev(conv: Conventions, ts: NDArray[np.int64], k: int) -> int:
    if k + 1 < ts.size:
        return int(ts[k + 1])
    return -1 if conv.final_alpha_bar_is_one else 0


def check_batch_step_no_noise(
    adapter: DiffusersDDPMParallelAdapter | DiffusersDDIMParallelAdapter,
    num_steps: int,
    *,
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    eta: float = 0.0,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    per_timestep: int = 2,
) -> CheckResult:
    r"""``scheduler.batch_step_no_noise`` for one batch holding every timestep of the N-step list.

    Each element k (``per_timestep`` elements per timestep t_k) is compared with the reference mean
    from t_k to the list's next timestep (−1, or 0 with ``set_alpha_to_one=False``, after the last):
    ``reference_step(...).mean`` (Ho et al. eq. 7 / Song et al. eq. 12 without σz), within
    :func:`~ddspec.conformance.tolerances.step_bound`. Inputs: x_t standard normal (float64 draws cast
    down) and model output ``model(x_t, t)`` (default: an independent standard normal field).

    Returns one :class:`~ddspec.conformance.results.CheckResult` named
    ``single_step.batch_step_no_noise.N=<n>[,eta=<e>]``.
    """
    n = as_int(num_steps, "num_steps", low=1, high=adapter.conventions.num_train_timesteps)
    e = as_scalar(eta, "eta", low=0.0)
    k_per = as_int(per_timestep, "per_timestep", low=1)
    conv = adapter.conventions
    name = f"single_step.batch_step_no_noise.N={n}" + (f",eta={e:g}" if conv.family == "ddim" else "")
    if conv.unsupported:
        return CheckResult.unsupported(name, "single_step", "; ".join(conv.unsupported))
    if conv.family == "ddim" and e != 0.0:
        return CheckResult.skipped(name, "single_step", "DDIMParallelScheduler.batch_step_no_noise is noise-free by "
                                   "design: it asserts eta == 0 (diffusers 0.42), so only eta = 0 is checked")
    ts = adapter.timesteps(n)
    g = torch.Generator().manual_seed(int(seed))
    shape = (ts.size * k_per, 3, 4, 4)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    t_batch = torch.from_numpy(np.repeat(ts, k_per))
    out = model(x, t_batch) if model is not None else torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    kwargs: dict[str, Any] = {"eta": e, "use_clipped_model_output": conv.use_clipped_model_output} if conv.family == "ddim" else {}
    got = adapter.scheduler.batch_step_no_noise(out, t_batch, x, **kwargs).detach().to("cpu", torch.float64).numpy()
    betas, deltas, u = error_model(conv, adapter.alphas_cumprod(), dtype)
    ab = ref_alphas.alpha_bar(betas)
    spec = step_spec(conv, e)
    x64 = x.to(torch.float64).numpy()
    m64 = out.detach().to(torch.float64).numpy()
    transitions = []
    for k, t in enumerate(ts.tolist()):
        rows = slice(k * k_per, (k + 1) * k_per)
        t_prev = _declared_prev(conv, ts, k)
        ref = reference_step(conv, betas, model_output=m64[rows], t=int(t), t_prev=t_prev, x_t=x64[rows],
                             noise=np.zeros_like(x64[rows]) if t_prev >= 0 else None, eta=e)  # only .mean is used
        bound = bound_of(spec, ab, deltas, u, int(t), t_prev, m64[rows], x64[rows])
        transitions.append(Transition(k, int(t), t_prev, got[rows], np.asarray(ref.mean, dtype=np.float64), bound))
    reproduce = (f"scheduler.set_timesteps({n}); scheduler.batch_step_no_noise(model_output, timesteps, sample"
                 + (f", eta={e:g}" if conv.family == "ddim" else "") + ")")
    result = judge_transitions(name, "single_step", transitions,
                               f"batch_step_no_noise vs the reference mean to the next listed timestep "
                               f"({conv.timestep_spacing})", reproduce)
    stride = conv.num_train_timesteps // n
    moved = [(tr.t, tr.t_prev, tr.t - stride) for tr in transitions
             if max(tr.t - stride, -1) != tr.t_prev and not (tr.t_prev == 0 and not conv.final_alpha_bar_is_one)]
    if moved:
        t, listed, used = moved[0]
        result = replace(result, message=result.message + (
            f"; batch_step_no_noise steps to t - T//N (T//N = {stride}), not to the next listed timestep, at "
            f"{len(moved)} of {len(transitions)} timesteps (first: {t} -> {used}, listed {listed})"),
            details={**result.details, "prev_t_minus_stride": [list(m) for m in moved]})
    return result
