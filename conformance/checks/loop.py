r"""The ``loop`` family: a whole sampling loop, judged from what the probe recorded.

It compares, for every tested N (and η for DDIM), a run of the loop driven by the probe
(:mod:`ddspec.conformance.trajectory`) with the reference, without any cooperation from the loop:

``loop.timesteps.N=<n>``
    The t the model was called with, against the declared rule (``ddspec.reference.timesteps``) or
    the declared explicit list. A declared list that follows no named rule is ``acceptable``, with the
    nearest named rule and how it differs ("equals leading except 2 positions: 334 vs 333, …").
``loop.steps.N=<n>[,eta=<e>]``
    Every deterministic transition x_k → x_{k+1} but the last, against the reference step
    (:func:`ddspec.conformance.expectation.reference_step`) at the recorded (t_k, t_{k+1}), within the
    error model (:class:`~ddspec.conformance.checks._common.StepTolerance`, with the loop's declared
    ``table_dtype`` / ``coefficient_dtype``).
``loop.final_step.N=<n>[,eta=<e>]``
    The last transition (to index −1, where no noise may be added), the same way.
``loop.noise.N=<n>[,eta=<e>]``
    The noisy transitions, statistically: the standardized residual
    :math:`r_k = (x_{k+1} - \mu_\mathrm{ref})/\sigma_\mathrm{ref}` must be N(0, 1), step by step
    and pooled (mean and variance tests of :mod:`ddspec.conformance.stats`).
``loop.noise_independence.N=<n>[,eta=<e>]``
    :math:`r_k` must be independent of x_k, of :math:`r_{k-1}` (noise reused across steps) and across
    batch elements (noise shared across the batch): exact z-tests of
    :math:`\sum_i r_i w_i/\lVert w\rVert \sim \mathcal N(0, 1)` given w.
``loop.output_law.N=<n>[,eta=<e>]``
    The output of runs driven by the exact Gaussian denoiser and started from the data's marginal,
    against the closed-form law (:func:`ddspec.reference.oracles.gaussian_run_output`) for the
    declared timesteps; N up to the profile's ``oracle_max_steps``.
``loop.inputs_unchanged``, ``loop.determinism``, ``loop.run.N=<n>[,eta=<e>]``
    x_T is not modified; the same seed gives the same output (and a generator loop ignores the global
    RNG); a run that raised, hung or returned a wrong or non-finite tensor fails ``loop.run``.

Every statistical result spends the profile's false-failure rate (``false_failure_rate``, split
evenly over its tests) and states its minimum detectable discrepancy at power 0.999. A noisy step
enters those tests only where the error model's rounding allowance of its mean cannot move a z
statistic by more than :data:`RESIDUAL_ROUNDING_LIMIT` (:func:`ddspec.conformance.transition_stats.usable`:
the statistical judge of noisy transitions lives in the core). Failures carry a snippet that reruns the
check function with the run's context.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.oracles import gaussian_run_output
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES, reference_variance_type

from .. import stats
from ..context import CheckContext
from ..expectation import (
    ExpectedTransition, expect_transition, final_step_consequence, reference_betas, step_pairs, step_spec,
    zero_snr_original,
)
from ..judge import StepTolerance, Tally, judge_transition, tally_result, transition_label
from ..protocol import Conventions, supported_num_steps
from ..protocol import coefficient_dtype as declared_coefficient_dtype
from ..results import MAX_FINDINGS, CheckResult, Finding, Verdict
from ..tolerances import alpha_bar_relative_bound, table_roundoff, unit_roundoff
from ..transition_stats import (
    RESIDUAL_ROUNDING_LIMIT, independence_result, noise_result, offset_tolerant, residuals, stat_result, usable,
)
from ..trajectory import FIELD_SCALE, Probe, Trajectory, Transition, drive, probe_oracle
from .distribution import CLIP_DATA_SCALES, CLIP_TAIL_FRACTION, clip_tail_bound
from ._common import choose_steps, dtype_of_roundoff, elapsed, offset_for, reproduce_call
from .timesteps import named_rule_match, tie_positions

__all__ = ["CHECKS", "check_loop_runs", "check_loop_output_law", "check_loop_determinism", "named_rule_match",
           "STATE_SHAPE", "RESIDUAL_ROUNDING_LIMIT"]

FAMILY = "loop"
#: Per-sample state shape of every probe run (a small image: channels, height, width).
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


def _suffix(n: int, eta: float | None) -> str:
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


def _setup(ctx: CheckContext, name: str) -> LoopSetup | CheckResult:
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


def _law_batch(ctx: CheckContext, n: int) -> int:
    per = int(np.prod(STATE_SHAPE))
    return min(_LAW_BATCH.get(ctx.profile, 1024), max(128, _MAX_LAW // (per * n)))


def _seed(ctx: CheckContext, *parts: object) -> int:
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
    run = _run(ctx, setup, n, eta, kind="field")
    runs[key] = run
    # keep at most SHARED_MAX_ELEMENTS recorded state elements per context: drop the oldest runs first
    while len(runs) > 1 and sum(_recorded(r) for r in runs.values()) > SHARED_MAX_ELEMENTS:
        del runs[next(iter(runs))]
    return run


def _recorded(run: Trajectory) -> int:
    return sum(c.x_t.size + c.output.size for c in run.calls if c.x_t is not None and c.output is not None)


def _run(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None, *, kind: str,
         global_seed: int | None = None, tag: str = "", start: tuple[Any, Any] | None = None,
         data_scale: float = 1.0) -> Trajectory:
    r"""One run of the loop driven by the field probe (``kind="field"``, states recorded) or the pure oracle
    (``"oracle"``). x_T is standard normal, or ``start = (mean, variance)`` per coordinate; the probe's data
    law is :func:`~ddspec.conformance.trajectory.probe_oracle` scaled by ``data_scale`` (:func:`_data_oracle`).
    The plain field run of a context is :func:`field_run` (driven once, shared)."""
    batch = _field_batch(ctx, n) if kind == "field" else _law_batch(ctx, n)
    shape = (batch, *STATE_SHAPE)
    if setup.hung:  # an abandoned call may still be running: call the loop no more
        return Trajectory(n, eta, np.zeros(shape), None, (), (), f"not called: {setup.hung[0]}", False, False, 0.0)
    x_T = ctx.randn(shape, offset_for("loop", kind, n, eta, tag, "x_T"), dtype=torch.float64, device="cpu")
    if start is not None:
        mean = torch.from_numpy(np.array(start[0], dtype=np.float64).reshape(STATE_SHAPE))
        x_T = mean + torch.from_numpy(np.sqrt(np.array(start[1], dtype=np.float64)).reshape(STATE_SHAPE)) * x_T
    x_T = x_T.to(device=ctx.device, dtype=ctx.dtype)
    probe = Probe(setup.conv, setup.betas, _data_oracle(shape, data_scale), seed=_seed(ctx, "loop", kind, n, "field"),
                  field_scale=FIELD_SCALE if kind == "field" else 0.0, timestep_table=setup.timestep_table,
                  record=kind == "field")
    run = drive(setup.target, probe, x_T, n, eta=eta, seed=_seed(ctx, "loop", kind, n, eta, tag, "rng"),
                call=ctx.call, global_seed=global_seed)
    if run.error is not None and "timed out" in run.error:
        setup.hung.append(f"an earlier run timed out (N={n})")
    return run


def _data_oracle(shape: tuple[int, ...], scale: float = 1.0) -> Any:
    r"""The probe's Gaussian data law, its mean and standard deviation scaled by λ = ``scale`` ∈ (0, 1]."""
    return probe_oracle(shape, spread=_PROBE_SPREAD * scale, std=_PROBE_STD * scale)


def _clip_range(conv: Conventions) -> float | None:
    r"""The range x̂₀ is confined to when the loop clips or thresholds (dynamic thresholding is the identity
    while every |x̂₀| ≤ 1), else None."""
    if conv.thresholding:
        return 1.0
    return float(conv.clip_sample_range) if conv.clip_sample else None


def _clipped_scale(ctx: CheckContext, setup: LoopSetup, ts: NDArray[np.int64], eta: float | None, batch: int,
                   r: float) -> tuple[float | None, float, str | None]:
    r"""``(λ, tail, None)``: the largest data scale λ of
    :data:`~ddspec.conformance.checks.distribution.CLIP_DATA_SCALES` for which the union bound on some run's
    x̂₀ leaving ±r (:func:`~ddspec.conformance.checks.distribution.clip_tail_bound`, from the data's marginal at
    the first timestep, with the loop's error model) is at most ``CLIP_TAIL_FRACTION`` of the false-failure
    rate; ``(None, tail, why)`` when none is. Chosen from the configuration alone, never from the draws.

    Why it is needed: a declared clipping is a no-op under the exact denoiser only while x̂₀ stays in ±r;
    DDPM's ``fixed_large`` (β′ > β̃′) widens every state beyond the data's marginal, and x̂₀ with it
    (improved-diffusion's defaults: FIXED_LARGE with clipping). A narrower data law keeps x̂₀ inside.
    """
    conv = setup.conv
    limit = CLIP_TAIL_FRACTION * float(ctx.settings.false_failure_rate)
    pairs = step_pairs(conv, ts)
    vt = reference_variance_type(conv.variance_type or "fixed_small").value

    def delta_at(t: int) -> float:
        return 0.0 if t < 0 else float(setup.tol.deltas[t])

    tail = math.inf
    for scale in CLIP_DATA_SCALES:
        oracle = _data_oracle((1, *STATE_SHAPE), scale)
        first = oracle.marginal(int(ts[0]), setup.betas)
        tail = clip_tail_bound(conv, setup.betas, oracle, r, pairs, eta or 0.0, batch, u_table=setup.tol.u_step,
                               delta_at=delta_at, step_kwargs=lambda t, tp: {"variance_type": vt},
                               start_mean=first.mean, start_variance=first.variance)
        if tail <= limit:
            return scale, tail, None
    if math.isinf(tail):
        return None, tail, (f"x0 is clipped to +-{r:g}, and at some step the error model's margin for the loop's "
                            f"rounding of x0 (u = {setup.tol.u_step:.3g}; a conversion with 1/sqrt(alpha_bar) at the "
                            "noisiest steps) leaves no room inside that range: whether the clipping acts cannot be "
                            "bounded, so the output law need not be Gaussian (the step checks still judge every step)")
    return None, tail, (f"x0 is clipped to +-{r:g}, and even at the smallest data scale ({CLIP_DATA_SCALES[-1]:g}) the "
                        f"union bound on some run's x0 leaving that range is {tail:.3g} > {limit:.3g}: the output law "
                        "need not be Gaussian")


# -- expect ----------------------------------------------------------------------------------------


def _expect(setup: LoopSetup, tr: Transition, eta: float | None) -> ExpectedTransition:
    """The expect stage of the core on a recorded loop transition (no noise was injected: z = 0)."""
    return expect_transition(setup.conv, setup.betas, tr, eta or 0.0)


# -- timesteps -------------------------------------------------------------------------------------

def _timesteps_result(setup: LoopSetup, n: int, runs: list[Trajectory]) -> CheckResult:
    name = f"loop.timesteps.N={n}"
    T = setup.conv.num_train_timesteps
    target = setup.target
    complete = [r for r in runs if r.returned and r.calls]
    if not complete:
        return CheckResult.skipped(name, FAMILY, f"no run with N={n} returned (see loop.run.N={n}...)")
    try:
        expected = target.expected_timesteps(n)
    except ValueError as exc:
        return CheckResult.skipped(name, FAMILY, f"the declared timesteps are undefined for N={n}: {exc}")
    source = "the declared list" if target.explicit_timesteps else f"the declared {setup.conv.timestep_spacing!r} rule"
    details: dict[str, Any] = {"N": n, "expected_head": [int(v) for v in expected[:12]],
                               "expected_length": int(expected.size), "source": source}
    for run in complete:
        problems = run.t_problems
        if problems:
            findings = tuple(Finding(step=i, message=f"model call {i}: {why}") for i, why in problems[:MAX_FINDINGS])
            return CheckResult(
                name=name, family=FAMILY, verdict=Verdict.FAIL, message=(
                    f"the loop called the model with {len(problems)} timestep value(s) that are not declared "
                    f"timestep indices; first: call {problems[0][0]}: {problems[0][1]}"),
                findings=findings, details=dict(details, got_values=[c.t_value for c in run.calls[:12]]))
        got = np.asarray(run.timesteps, dtype=np.int64)
        if not np.array_equal(got, expected):
            rule, text = named_rule_match(got, T, n)
            common = min(got.size, expected.size)
            diff = [k for k in range(common) if got[k] != expected[k]]
            findings = [Finding(step=k, timestep=int(expected[k]), expected=float(expected[k]), got=float(got[k]),
                                tolerance=0.0, message=f"call {k}: expected t={int(expected[k])}, got t={int(got[k])}")
                        for k in diff[:MAX_FINDINGS]]
            length = (f"the loop called the model {got.size} times, {source} has {expected.size} timesteps; "
                      if got.size != expected.size else "")
            if got.size != expected.size and not diff:
                findings.append(Finding(step=common, message=(
                    f"extra calls at t={[int(v) for v in got[common:common + 6]]}" if got.size > expected.size
                    else f"missing t={[int(v) for v in expected[common:common + 6]]}")))
            tie = (not target.explicit_timesteps and got.size == expected.size and diff
                   and all(k in tie_positions(setup.conv.timestep_spacing, T, n) and abs(int(got[k]) - int(expected[k])) == 1
                           for k in diff))
            if tie:
                return CheckResult(
                    name=name, family=FAMILY, verdict=Verdict.ACCEPTABLE, observed=1.0, tolerance=0.0,
                    message=f"the timesteps differ from {source} by one index at rounding ties {diff[:10]}",
                    findings=tuple(findings), details=dict(details, got_head=[int(v) for v in got[:12]]),
                    consequence="a tie k + 1/2 rounded the other way: the step uses alpha_bar one index away")
            return CheckResult(
                name=name, family=FAMILY, verdict=Verdict.FAIL, observed=float(len(diff) + abs(got.size - expected.size)),
                tolerance=0.0, message=(
                    f"{length}the model was called at t={[int(v) for v in got[:10]]}{' ...' if got.size > 10 else ''}, "
                    f"expected {[int(v) for v in expected[:10]]}{' ...' if expected.size > 10 else ''} ({source}); "
                    f"the recorded sequence {text}"
                    + ("; declare it with LoopSampler(..., timesteps=...) or restrict supported_num_steps"
                       if rule is not None else "")),
                findings=tuple(findings[:MAX_FINDINGS]),
                details=dict(details, got_head=[int(v) for v in got[:12]], got_length=int(got.size),
                             recorded_matches_rule=rule))
    if not target.explicit_timesteps:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.PASS, observed=0.0, tolerance=0.0,
                           message=f"the model was called at the {expected.size} timesteps of {source}", details=details)
    rule, text = named_rule_match(expected, T, n)
    details["nearest_rule"] = text
    if rule is not None:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.PASS, observed=0.0, tolerance=0.0,
                           message=f"the model was called at the declared list, which {text}", details=details)
    return CheckResult(
        name=name, family=FAMILY, verdict=Verdict.ACCEPTABLE, observed=0.0, tolerance=0.0,
        message=f"the model was called at the declared list of {expected.size} timesteps, which {text}",
        consequence=(f"the loop follows its own timestep list ({text}); its step maths was checked for the "
                     "declared (t, t_prev) pairs, so only the choice of timesteps differs from a named rule"),
        details=details)


# -- deterministic transitions -----------------------------------------------------------------------


def _tally(setup: LoopSetup, expected: list[ExpectedTransition], eta: float | None, n: int) -> Tally:
    """The judge stage of the core on the deterministic transitions (the same as a step target's)."""
    tally = Tally()
    spec = step_spec(setup.conv, eta or 0.0)
    for e in expected:
        judge_transition(tally, setup.tol, spec, e, num_steps=n, label=transition_label(e.transition))
    return tally


def _tol_details(setup: LoopSetup) -> dict[str, Any]:
    out = setup.tol.details()  # with the declared coefficient_dtype, when one is charged
    out["table_dtype"] = str(setup.target.table_dtype) if setup.target.table_dtype else None
    return out


def _looks_noisy(setup: LoopSetup, tr: Transition, eta: float | None) -> bool:
    """Whether the declared step (t → t_prev) adds noise (the reference's variance decides in the end)."""
    return 0 <= tr.t_prev < tr.t and (setup.conv.family == "ddpm" or bool(eta))


def _select(ctx: CheckContext, setup: LoopSetup, run: Trajectory, eta: float | None) -> tuple[list[Transition], list[Transition]]:
    r"""The non-final transitions to judge: (deterministic ones, noisy ones).

    At most the profile's ``n_timesteps`` deterministic ones (the first, the last and random others,
    :func:`~ddspec.conformance.checks._common.choose_steps`), and at most ``4 × n_timesteps`` noisy ones,
    drawn as consecutive pairs so that the reuse of noise across steps stays testable.
    """
    body = list(run.transitions[:-1])
    det = [tr for tr in body if not _looks_noisy(setup, tr, eta)]
    noisy = [tr for tr in body if _looks_noisy(setup, tr, eta)]
    cap = ctx.settings.n_timesteps
    rng = np.random.default_rng(_seed(ctx, "loop.select", run.num_steps, eta))
    det = [det[i] for i in choose_steps(len(det), cap, rng)]
    if cap is not None and len(noisy) > 4 * cap:
        starts = choose_steps(len(noisy) - 1, 2 * cap, rng)
        keep = sorted({i for s in starts for i in (s, s + 1)})
        noisy = [noisy[i] for i in keep]
    return det, noisy


def _steps_result(setup: LoopSetup, n: int, eta: float | None, chosen: list[ExpectedTransition]) -> CheckResult | None:
    if not chosen:
        return None
    tally = _tally(setup, chosen, eta, n)
    return tally_result(
        f"loop.steps.{_suffix(n, eta)}", FAMILY, tally,
        what=f"{len(chosen)} deterministic transition(s) of the {n}-step run against the reference step",
        exceeding="element(s) beyond the error model", within="every element within the error model",
        reproduce=None, details=dict(_tol_details(setup), N=n, eta=eta, transitions_checked=len(chosen)))


def _final_result(setup: LoopSetup, n: int, eta: float | None, last: ExpectedTransition) -> CheckResult:
    name = f"loop.final_step.{_suffix(n, eta)}"
    tr = last.transition
    consequence = final_step_consequence(setup.conv, setup.betas)
    if last.why is None and last.noisy:
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.ACCEPTABLE,
            message=f"the declared last step (t={tr.t} -> {tr.t_prev}) is noisy for eta={eta}; judged in loop.noise",
            consequence=consequence)
    tally = _tally(setup, [last], eta, n)
    result = tally_result(
        name, FAMILY, tally, what=f"the last step (t={tr.t} -> {tr.t_prev}) against the reference's noise-free step",
        exceeding="element(s) beyond the error model: noise added at the last step, or the loop returned another state",
        within="no noise added and the step as the reference's", reproduce=None,
        details=dict(_tol_details(setup), N=n, eta=eta))
    if result.verdict == Verdict.PASS and consequence is not None:
        result = replace(result, verdict=Verdict.ACCEPTABLE, consequence=consequence)
    return result


# -- per run ---------------------------------------------------------------------------------------


def _run_failed(n: int, eta: float | None, run: Trajectory) -> CheckResult:
    return CheckResult(name=f"loop.run.{_suffix(n, eta)}", family=FAMILY, verdict=Verdict.FAIL,
                       message=f"the {n}-step run gave no usable output: {run.error}",
                       findings=(Finding(message=run.error or "failed"),),
                       details={"N": n, "eta": eta, "model_calls": len(run.calls), "elapsed_s": run.elapsed_s})


def _judge_run(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None, run: Trajectory) -> list[CheckResult]:
    if run.error is not None:
        return [_run_failed(n, eta, run)]
    if not run.transitions:
        why = "the model's timesteps could not be decoded (see loop.timesteps)" if run.t_problems else "no transitions"
        return [CheckResult.skipped(f"loop.steps.{_suffix(n, eta)}", FAMILY, why)]
    det, noisy = _select(ctx, setup, run, eta)
    expected = [_expect(setup, tr, eta) for tr in det + noisy]
    last = _expect(setup, run.transitions[-1], eta)
    deterministic = [e for e in expected if e.why is not None or not e.noisy]
    results = []
    steps = _steps_result(setup, n, eta, deterministic)
    if steps is not None:
        results.append(steps)
    results.append(_final_result(setup, n, eta, last))
    everything = residuals(setup.tol, step_spec(setup.conv, eta or 0.0),
                           [e for e in expected if e.why is None and e.noisy] + [last])
    per, pooled = usable(everything)
    tolerant = offset_tolerant(everything, per)
    details = {"N": n, "eta": eta, "noisy_steps": len(everything), "per_step_tested": len(per),
               "pooled_tested": len(pooled), "variance_only_tested": len(tolerant),
               "elements_per_step": int(run.transitions[0].x_t.size), "rounding_limit_z": RESIDUAL_ROUNDING_LIMIT}
    if per or tolerant:
        results.append(noise_result(f"loop.noise.{_suffix(n, eta)}", FAMILY, ctx.settings.false_failure_rate,
                                    per, pooled, tolerant, details))
    if per:
        results.append(independence_result(f"loop.noise_independence.{_suffix(n, eta)}", FAMILY,
                                           ctx.settings.false_failure_rate, per, pooled, everything, details))
    elif everything and not tolerant:
        results.append(CheckResult(
            name=f"loop.noise.{_suffix(n, eta)}", family=FAMILY, verdict=Verdict.SKIPPED,
            message=(f"all {len(everything)} noisy step(s) have a rounding allowance that could move a z statistic "
                     f"by more than {RESIDUAL_ROUNDING_LIMIT}"), details=details))
    return results


def check_loop_runs(ctx: CheckContext) -> list[CheckResult]:
    r"""Drive the loop with the field probe for every tested (N, η) and judge the recorded runs:
    ``loop.timesteps``, ``loop.steps``, ``loop.final_step``, ``loop.noise``, ``loop.noise_independence``,
    ``loop.run``, ``loop.inputs_unchanged`` (see the module docstring)."""
    setup = _setup(ctx, "loop.timesteps")
    if isinstance(setup, CheckResult):
        return [setup]
    results: list[CheckResult] = []
    mutated: list[str] = []
    for n, why in setup.skipped:
        results.append(CheckResult.skipped(f"loop.timesteps.N={n}", FAMILY, why))
    for n in setup.counts:
        start = time.perf_counter()
        runs = [(eta, field_run(ctx, setup, n, eta)) for eta in setup.etas]
        per_n = [_timesteps_result(setup, n, [r for _, r in runs])]
        for eta, run in runs:
            if run.input_mutated:
                mutated.append(_suffix(n, eta))
            per_n.extend(_judge_run(ctx, setup, n, eta, run))
        share = elapsed(start) / len(per_n)
        results.extend(replace(r, duration_s=share, message=r.message if setup.coverage == "every profile N"
                               else f"{r.message} [{setup.coverage}]") if r.name.startswith("loop.timesteps") else
                       replace(r, duration_s=share) for r in per_n)
    runs = len(setup.counts) * len(setup.etas)
    if not runs:
        results.append(CheckResult.skipped("loop.inputs_unchanged", FAMILY, "no supported N: the loop was not run"))
    elif mutated:
        results.append(CheckResult(name="loop.inputs_unchanged", family=FAMILY, verdict=Verdict.FAIL,
                                   message=f"the loop modified the x_T tensor it was given (runs {mutated[:6]})",
                                   findings=(Finding(message=f"x_T changed in run {mutated[0]}"),), duration_s=1e-9))
    else:
        results.append(CheckResult(name="loop.inputs_unchanged", family=FAMILY, verdict=Verdict.PASS,
                                   message=f"x_T unchanged after every run ({runs} runs)",
                                   duration_s=1e-9))
    return results


# -- output law ------------------------------------------------------------------------------------


def _law_result(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None) -> CheckResult:
    name = f"loop.output_law.{_suffix(n, eta)}"
    conv = setup.conv
    if conv.family == "ddpm" and conv.variance_type in LEARNED_VARIANCE_TYPES:
        return CheckResult.skipped(name, FAMILY, f"no closed-form output law for variance_type={conv.variance_type!r}")
    scale, tail = 1.0, 0.0
    try:
        ts = setup.target.expected_timesteps(n)
        r = _clip_range(conv)
        if r is not None:
            found, tail, why = _clipped_scale(ctx, setup, ts, eta, _law_batch(ctx, n), r)
            if found is None:
                return CheckResult.skipped(name, FAMILY, why or "clipping")
            scale = found
        oracle = _data_oracle((1, *STATE_SHAPE), scale)
        first = oracle.marginal(int(ts[0]), setup.betas)
        law = gaussian_run_output(
            oracle, setup.betas, ts, family=conv.family, eta=eta or 0.0,
            variance_type=reference_variance_type(conv.variance_type or "fixed_small").value,
            final_alpha_bar_is_one=conv.final_alpha_bar_is_one, prior_mean=first.mean, prior_variance=first.variance)
    except ValueError as exc:
        return CheckResult.skipped(name, FAMILY, f"no closed-form law for the declared N={n} run: {exc}")
    start = time.perf_counter()
    # x_T from the data's own marginal at the first timestep: then every x̂₀ stays inside [-1, 1] (a declared
    # clipping is a no-op) even for runs that start at a small t, where N(0, I) is far from that marginal
    run = _run(ctx, setup, n, eta, kind="oracle", start=(np.broadcast_to(first.mean, oracle.mean.shape),
                                                         np.broadcast_to(first.variance, oracle.mean.shape)),
               data_scale=scale)
    if run.error is not None:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL, message=f"the run failed: {run.error}",
                           findings=(Finding(message=run.error),), duration_s=elapsed(start))
    X = run.output.reshape(run.output.shape[0], -1)
    mean, var = np.asarray(law.mean), np.broadcast_to(np.asarray(law.variance), law.mean.shape)
    a = ctx.settings.false_failure_rate - tail
    details = {"N": n, "eta": eta, "batch": int(X.shape[0]), "expected_timesteps_head": [int(v) for v in ts[:12]],
               "expected_mean_head": mean[:4], "expected_variance_head": var[:4], "data_scale": scale,
               "clip_tail_probability": tail}
    if np.any(var <= 0):
        err = np.abs(X - mean)
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL if float(err.max()) > 1e-3 else Verdict.PASS,
                           observed=float(err.max()), tolerance=1e-3,
                           message="the closed-form law is a point mass; compared directly", details=details,
                           duration_s=elapsed(start))
    parts = [
        ("pooled mean", stats.pooled_mean_test(X, mean, var, a / 3, name=f"{name}/pooled mean")),
        ("mean pattern", stats.mean_pattern_test(X, mean, var, a / 3, name=f"{name}/mean pattern")),
        ("pooled variance", stats.pooled_variance_test(X, var, a / 3, name=f"{name}/pooled variance")),
    ]
    what = (f"output of {X.shape[0]} runs driven by the exact Gaussian denoiser, started from the data's marginal "
            f"at t={int(ts[0])}, against the closed-form law (gaussian_run_output over the {ts.size} declared timesteps)")
    result = stat_result(name, FAMILY, [(l, r, None) for l, r in parts], what, details, a)
    return replace(result, duration_s=elapsed(start))


def check_loop_output_law(ctx: CheckContext) -> list[CheckResult]:
    r"""``loop.output_law.N=<n>[,eta=<e>]``: the output law of a run driven by the exact Gaussian denoiser,
    for every tested N up to the profile's ``oracle_max_steps`` (the smallest N when none is)."""
    setup = _setup(ctx, "loop.output_law")
    if isinstance(setup, CheckResult):
        return [setup]
    cap = ctx.settings.oracle_max_steps
    counts = [n for n in setup.counts if cap is None or n <= cap]
    if not counts and setup.counts:
        counts = [min(setup.counts)]
    return [_law_result(ctx, setup, n, eta) for n in counts for eta in setup.etas]


# -- determinism -----------------------------------------------------------------------------------


def check_loop_determinism(ctx: CheckContext) -> list[CheckResult]:
    r"""``loop.determinism``: two runs with the same seed give the same output, bit for bit.

    For ``noise_source="generator"`` the two runs get generators seeded alike but different global RNG
    seeds (a loop that secretly draws from the global RNG then differs); for ``"global"`` the same
    global seed. Both run inside ``torch.random.fork_rng``: the caller's global RNG state is unchanged.
    """
    name = "loop.determinism"
    setup = _setup(ctx, name)
    if isinstance(setup, CheckResult):
        return [setup]
    if not setup.counts:
        return [CheckResult.skipped(name, FAMILY, "no supported N")]
    several = [c for c in setup.counts if c >= 2]  # N = 1 has only the final, noise-free step
    n = min(several) if several else min(setup.counts)
    etas = [e for e in setup.etas if e is not None]
    eta = max(etas) if etas else None
    g = _seed(ctx, "loop.determinism", "global")
    other = g + 1 if setup.target.noise_source == "generator" else g
    first = _run(ctx, setup, n, eta, kind="field", global_seed=g, tag="det")
    second = _run(ctx, setup, n, eta, kind="field", global_seed=other, tag="det")
    where = f"N={n}" + (f", eta={eta:g}" if eta is not None else "")
    for run in (first, second):
        if run.error is not None:
            return [CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL, message=f"the run failed: {run.error}",
                                findings=(Finding(message=run.error),))]
    if np.array_equal(first.output, second.output):
        how = ("generators seeded alike, different global RNG seeds" if setup.target.noise_source == "generator"
               else "the same global RNG seed")
        return [CheckResult(name=name, family=FAMILY, verdict=Verdict.PASS, observed=0.0, tolerance=0.0,
                            message=f"two runs ({where}; {how}) gave identical outputs")]
    diff = np.abs(first.output - second.output)
    element = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    cause = ("the loop draws from the global RNG although it declared noise_source='generator'"
             if setup.target.noise_source == "generator" else "the output is not a function of the global seed")
    return [CheckResult(
        name=name, family=FAMILY, verdict=Verdict.FAIL, observed=float(diff.max()), tolerance=0.0,
        message=f"two runs with the same seed ({where}) differ at {int(np.count_nonzero(diff))} element(s): {cause}",
        findings=(Finding(element=element, expected=float(first.output[element]), got=float(second.output[element]),
                          tolerance=0.0, message="first run vs second run"),))]


def _with_reproduce(ctx: CheckContext, function: str, results: list[CheckResult]) -> list[CheckResult]:
    """Attach to every failure a snippet that reruns ``function`` with the run's context."""
    return [replace(r, reproduce=reproduce_call("loop", function, r.name, ctx))
            if r.verdict == Verdict.FAIL and r.reproduce is None else r for r in results]


def _reproducible(check: Any) -> Any:
    def wrapped(ctx: CheckContext) -> list[CheckResult]:
        return _with_reproduce(ctx, check.__name__, check(ctx))

    wrapped.__name__ = check.__name__
    wrapped.__qualname__ = check.__qualname__
    wrapped.__doc__ = check.__doc__
    wrapped.__module__ = check.__module__
    wrapped.target_kinds = ("loop",)  # the runner gives these to loop targets only
    return wrapped


check_loop_runs = _reproducible(check_loop_runs)
check_loop_output_law = _reproducible(check_loop_output_law)
check_loop_determinism = _reproducible(check_loop_determinism)

CHECKS: list = [check_loop_runs, check_loop_output_law, check_loop_determinism]
