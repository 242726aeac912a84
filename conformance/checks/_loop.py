r"""The loop family's plumbing: what every loop check reads once and the runs they share.

A loop target (:class:`~ddspec.conformance.adapters.loop.LoopSampler`, or any object whose ``target_kind`` is
``"loop"``) is read into a :class:`LoopSetup` (:func:`setup_loop`: the declared conventions, the reference β,
the error model, the step counts its ``supported_num_steps`` admits, the η to pass) and driven by the core's
:func:`~ddspec.conformance.trajectory.drive` with the probe (:func:`run_loop`); the field-probe run of each
(N, η) is shared by the families that read it (:func:`field_run`: ``loop`` and ``loop.coefficients``). Nothing
here judges.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas

from ..context import CheckContext
from ..expectation import reference_betas, zero_snr_original
from ..judge import StepTolerance
from ..protocol import Conventions, supported_num_steps
from ..protocol import coefficient_dtype as declared_coefficient_dtype
from ..results import CheckResult, Verdict
from ..tolerances import alpha_bar_relative_bound, table_roundoff, unit_roundoff
from ..trajectory import FIELD_SCALE, Probe, Trajectory, drive, probe_oracle
from ._common import dtype_of_roundoff, offset_for

__all__ = ["LoopSetup", "setup_loop", "field_run", "run_loop", "suffix", "law_batch", "loop_seed", "data_oracle",
           "STATE_SHAPE", "SHARED_MAX_ELEMENTS"]

FAMILY = "loop"
#: The probe's data law at scale 1 (:func:`~ddspec.conformance.trajectory.probe_oracle`'s defaults).
_PROBE_SPREAD, _PROBE_STD = 0.3, 0.12
STATE_SHAPE = (3, 4, 4)
_FIELD_BATCH = {"quick": 16, "default": 32, "thorough": 128}
_LAW_BATCH = {"quick": 256, "default": 512, "thorough": 2048}
#: At most this many state elements are recorded per field run (N × batch × 48): bounds the memory.
_MAX_RECORDED = 1_500_000
#: At most this many state elements are pushed through the loop per output-law run.
_MAX_LAW = 10_000_000
#: The probe's data law at scale 1 (:func:`~ddspec.conformance.trajectory.probe_oracle`'s defaults).
_PROBE_SPREAD, _PROBE_STD = 0.3, 0.12


# -- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopSetup:
    r"""The loop target and what every loop check needs, read once.

    ``counts`` are the tested N (the supported ones), ``skipped`` the profile N the loop does not
    support, with the reason; ``etas`` the η variants (None for DDPM, or a loop that takes no η).
    """

    target: Any
    conv: Conventions
    betas: NDArray[np.float64]
    tol: StepTolerance
    counts: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]
    etas: tuple[float | None, ...]
    timestep_table: NDArray[np.float64] | None
    coverage: str
    hung: list[str] = field(default_factory=list, compare=False)


def suffix(n: int, eta: float | None) -> str:
    return f"N={n}" if eta is None else f"N={n},eta={eta:g}"


def _u_of(dtype: torch.dtype | None) -> float:
    return 0.0 if dtype is None else float(torch.finfo(dtype).eps) / 2.0


def _tolerance(ctx: CheckContext, target: Any, conv: Conventions, betas: NDArray[np.float64]) -> StepTolerance:
    r"""The error model of the loop: tables in ``table_dtype`` (or as exposed), coefficients in the declared
    ``coefficient_dtype`` (:func:`~ddspec.conformance.protocol.coefficient_dtype`): u_step = max(u_table, u_coef)."""
    u_compute = unit_roundoff(ctx.dtype)
    u_table, note = max(u_compute, _u_of(target.table_dtype)), None
    if getattr(target, "has_tables", False):
        try:
            u_table = max(u_table, table_roundoff(np.asarray(target.alphas_cumprod(), dtype=np.float64)))
        except Exception as exc:  # noqa: BLE001 - the schedule family reports an unreadable table
            note = f"alphas_cumprod unreadable ({type(exc).__name__})"
    coefficients = declared_coefficient_dtype(target)
    u_step = max(u_table, _u_of(coefficients))
    deltas = alpha_bar_relative_bound(betas, conv.beta_schedule, u_table, zero_snr_original=zero_snr_original(conv))
    return StepTolerance(ref_alphas.alpha_bar(betas), deltas, u_table, u_compute, u_step, dtype_of_roundoff(u_table), note,
                         None if coefficients is None else dtype_of_roundoff(_u_of(coefficients)))


def setup_loop(ctx: CheckContext, name: str) -> LoopSetup | CheckResult:
    target = ctx.sampler
    if getattr(target, "target_kind", None) != "loop":
        return CheckResult.skipped(name, FAMILY, "not a loop target (wrap a sampling loop in LoopSampler)")
    conv = target.conventions
    if conv.unsupported:
        return CheckResult.unsupported(name, FAMILY, "the declaration could not interpret: " + "; ".join(conv.unsupported))
    try:
        betas = reference_betas(conv)
        table = target.model_timestep_table()
    except ValueError as exc:
        return CheckResult.unsupported(name, FAMILY, f"no reference for the declared conventions: {exc}")
    T = conv.num_train_timesteps
    wanted = {int(n) for n in ctx.steps if 1 <= int(n) <= T}
    if ctx.settings.full_schedule and ctx.num_train_timesteps is None and set(ctx.steps) == set(ctx.settings.steps):
        wanted.add(T)  # the context could not ask a table-less loop for T
    try:  # the protocol's declarations (any target kind); a malformed or raising one is the loop's error
        support = supported_num_steps(target)
        declared_coefficient_dtype(target)
        choice = support.choose(wanted, T)
    except ValueError as exc:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL,
                           message=f"the loop's declaration is not usable: {exc}")
    counts = list(choice.counts)
    skipped = tuple((n, f"N={n} is not supported ({support.description})") for n in sorted(choice.skipped))
    coverage = "every profile N"
    if choice.fallback is not None:
        coverage = f"no profile N is supported ({support.description}); checked N={counts} instead"
    elif skipped and not counts:
        coverage = f"no N <= T = {T} is supported ({support.description}): the loop is not run"
    elif skipped:
        coverage = f"checked N={counts} only ({support.description})"
    # DDPM has no η; a DDIM loop that takes none is deterministic DDIM (η = 0), and none is passed
    etas: tuple[float | None, ...] = (None,)
    if conv.family == "ddim" and target.accepts_eta:
        etas = tuple(float(e) for e in ctx.settings.etas)
    return LoopSetup(target, conv, betas, _tolerance(ctx, target, conv, betas), tuple(counts), skipped, etas,
                     table, coverage)


def _field_batch(ctx: CheckContext, n: int) -> int:
    per = int(np.prod(STATE_SHAPE))
    b = min(_FIELD_BATCH.get(ctx.profile, 32), max(4, _MAX_RECORDED // (per * n)))
    return max(2, b - b % 2)


def law_batch(ctx: CheckContext, n: int) -> int:
    per = int(np.prod(STATE_SHAPE))
    return min(_LAW_BATCH.get(ctx.profile, 1024), max(128, _MAX_LAW // (per * n)))


def loop_seed(ctx: CheckContext, *parts: object) -> int:
    return (ctx.seed + offset_for(*parts)) % (2**62)


#: The most recorded state elements (float64) of shared field runs kept per context (about 32 MB).
SHARED_MAX_ELEMENTS = 4_000_000
#: The recorded field runs of each context, by (N, η): ``loop.*``, ``loop.coefficients`` and the diagnosis
#: judge the same run instead of driving the loop again (a run is a pure function of the context's seed).
#: Keyed by ``id(ctx)`` (a context is a mutable dataclass, unhashable); an entry goes when its context does.
_FIELD_RUNS: dict[int, dict[tuple[int, float | None], Trajectory]] = {}


def _runs_of(ctx: CheckContext) -> dict[tuple[int, float | None], Trajectory]:
    key = id(ctx)
    if key not in _FIELD_RUNS:
        _FIELD_RUNS[key] = {}
        weakref.finalize(ctx, _FIELD_RUNS.pop, key, None)
    return _FIELD_RUNS[key]


def field_run(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None) -> Trajectory:
    r"""The field-probe run of N steps at η for this context, driven once and shared by every check that judges
    it (``loop.steps``/``noise``/``final_step``, ``loop.coefficients``, the diagnosis)."""
    runs = _runs_of(ctx)
    key = (int(n), eta)
    if key in runs:
        return runs[key]
    run = run_loop(ctx, setup, n, eta, kind="field")
    runs[key] = run
    # keep at most SHARED_MAX_ELEMENTS recorded state elements per context: drop the oldest runs first
    while len(runs) > 1 and sum(_recorded(r) for r in runs.values()) > SHARED_MAX_ELEMENTS:
        del runs[next(iter(runs))]
    return run


def _recorded(run: Trajectory) -> int:
    return sum(c.x_t.size + c.output.size for c in run.calls if c.x_t is not None and c.output is not None)


def run_loop(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None, *, kind: str,
         global_seed: int | None = None, tag: str = "", start: tuple[Any, Any] | None = None,
         data_scale: float = 1.0) -> Trajectory:
    r"""One run of the loop driven by the field probe (``kind="field"``, states recorded) or the pure oracle
    (``"oracle"``). x_T is standard normal, or ``start = (mean, variance)`` per coordinate; the probe's data
    law is :func:`~ddspec.conformance.trajectory.probe_oracle` scaled by ``data_scale`` (:func:`data_oracle`).
    The plain field run of a context is :func:`field_run` (driven once, shared)."""
    batch = _field_batch(ctx, n) if kind == "field" else law_batch(ctx, n)
    shape = (batch, *STATE_SHAPE)
    if setup.hung:  # an abandoned call may still be running: call the loop no more
        return Trajectory(n, eta, np.zeros(shape), None, (), (), f"not called: {setup.hung[0]}", False, False, 0.0)
    x_T = ctx.randn(shape, offset_for("loop", kind, n, eta, tag, "x_T"), dtype=torch.float64, device="cpu")
    if start is not None:
        mean = torch.from_numpy(np.array(start[0], dtype=np.float64).reshape(STATE_SHAPE))
        x_T = mean + torch.from_numpy(np.sqrt(np.array(start[1], dtype=np.float64)).reshape(STATE_SHAPE)) * x_T
    x_T = x_T.to(device=ctx.device, dtype=ctx.dtype)
    probe = Probe(setup.conv, setup.betas, data_oracle(shape, data_scale), seed=loop_seed(ctx, "loop", kind, n, "field"),
                  field_scale=FIELD_SCALE if kind == "field" else 0.0, timestep_table=setup.timestep_table,
                  record=kind == "field")
    run = drive(setup.target, probe, x_T, n, eta=eta, seed=loop_seed(ctx, "loop", kind, n, eta, tag, "rng"),
                call=ctx.call, global_seed=global_seed)
    if run.error is not None and "timed out" in run.error:
        setup.hung.append(f"an earlier run timed out (N={n})")
    return run


def data_oracle(shape: tuple[int, ...], scale: float = 1.0) -> Any:
    r"""The probe's Gaussian data law, its mean and standard deviation scaled by λ = ``scale`` ∈ (0, 1]."""
    return probe_oracle(shape, spread=_PROBE_SPREAD * scale, std=_PROBE_STD * scale)
