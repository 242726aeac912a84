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
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ddspec.reference.oracles import gaussian_run_output
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES, reference_variance_type

from .. import stats
from ..clip_tail import CLIP_DATA_SCALES, CLIP_TAIL_FRACTION, clip_tail_bound
from ..context import CheckContext
from ..expectation import (
    ExpectedTransition, expect_transition, final_step_consequence, named_rule_match, step_pairs, step_spec,
    tie_positions,
)
from ..judge import Tally, judge_transition, tally_result, transition_label
from ..protocol import Conventions
from ..results import MAX_FINDINGS, CheckResult, Finding, Verdict
from ..transition_stats import (
    RESIDUAL_ROUNDING_LIMIT, independence_result, noise_result, offset_tolerant, residuals, stat_result, usable,
)
from ..trajectory import Trajectory, Transition
from ._common import choose_steps, elapsed, reproduce_call
from ._loop import (
    STATE_SHAPE, LoopSetup, data_oracle, field_run, law_batch, loop_seed, run_loop, setup_loop, suffix,
)

__all__ = ["CHECKS", "check_loop_runs", "check_loop_output_law", "check_loop_determinism", "named_rule_match",
           "STATE_SHAPE", "RESIDUAL_ROUNDING_LIMIT"]

FAMILY = "loop"
#: Per-sample state shape of every probe run (a small image: channels, height, width).
def _clip_range(conv: Conventions) -> float | None:
    r"""The range x̂₀ is confined to when the loop clips or thresholds (dynamic thresholding is the identity
    while every |x̂₀| ≤ 1), else None."""
    if conv.thresholding:
        return 1.0
    return float(conv.clip_sample_range) if conv.clip_sample else None


def _clipped_scale(ctx: CheckContext, setup: LoopSetup, ts: NDArray[np.int64], eta: float | None, batch: int,
                   r: float) -> tuple[float | None, float, str | None]:
    r"""``(λ, tail, None)``: the largest data scale λ of
    :data:`~ddspec.conformance.clip_tail.CLIP_DATA_SCALES` for which the union bound on some run's
    x̂₀ leaving ±r (:func:`~ddspec.conformance.clip_tail.clip_tail_bound`, from the data's marginal at
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
        oracle = data_oracle((1, *STATE_SHAPE), scale)
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
    rng = np.random.default_rng(loop_seed(ctx, "loop.select", run.num_steps, eta))
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
        f"loop.steps.{suffix(n, eta)}", FAMILY, tally,
        what=f"{len(chosen)} deterministic transition(s) of the {n}-step run against the reference step",
        exceeding="element(s) beyond the error model", within="every element within the error model",
        reproduce=None, details=dict(_tol_details(setup), N=n, eta=eta, transitions_checked=len(chosen)))


def _final_result(setup: LoopSetup, n: int, eta: float | None, last: ExpectedTransition) -> CheckResult:
    name = f"loop.final_step.{suffix(n, eta)}"
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
    return CheckResult(name=f"loop.run.{suffix(n, eta)}", family=FAMILY, verdict=Verdict.FAIL,
                       message=f"the {n}-step run gave no usable output: {run.error}",
                       findings=(Finding(message=run.error or "failed"),),
                       details={"N": n, "eta": eta, "model_calls": len(run.calls), "elapsed_s": run.elapsed_s})


def _judge_run(ctx: CheckContext, setup: LoopSetup, n: int, eta: float | None, run: Trajectory) -> list[CheckResult]:
    if run.error is not None:
        return [_run_failed(n, eta, run)]
    if not run.transitions:
        why = "the model's timesteps could not be decoded (see loop.timesteps)" if run.t_problems else "no transitions"
        return [CheckResult.skipped(f"loop.steps.{suffix(n, eta)}", FAMILY, why)]
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
        results.append(noise_result(f"loop.noise.{suffix(n, eta)}", FAMILY, ctx.settings.false_failure_rate,
                                    per, pooled, tolerant, details))
    if per:
        results.append(independence_result(f"loop.noise_independence.{suffix(n, eta)}", FAMILY,
                                           ctx.settings.false_failure_rate, per, pooled, everything, details))
    elif everything and not tolerant:
        results.append(CheckResult(
            name=f"loop.noise.{suffix(n, eta)}", family=FAMILY, verdict=Verdict.SKIPPED,
            message=(f"all {len(everything)} noisy step(s) have a rounding allowance that could move a z statistic "
                     f"by more than {RESIDUAL_ROUNDING_LIMIT}"), details=details))
    return results


def check_loop_runs(ctx: CheckContext) -> list[CheckResult]:
    r"""Drive the loop with the field probe for every tested (N, η) and judge the recorded runs:
    ``loop.timesteps``, ``loop.steps``, ``loop.final_step``, ``loop.noise``, ``loop.noise_independence``,
    ``loop.run``, ``loop.inputs_unchanged`` (see the module docstring)."""
    setup = setup_loop(ctx, "loop.timesteps")
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
                mutated.append(suffix(n, eta))
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
    name = f"loop.output_law.{suffix(n, eta)}"
    conv = setup.conv
    if conv.family == "ddpm" and conv.variance_type in LEARNED_VARIANCE_TYPES:
        return CheckResult.skipped(name, FAMILY, f"no closed-form output law for variance_type={conv.variance_type!r}")
    scale, tail = 1.0, 0.0
    try:
        ts = setup.target.expected_timesteps(n)
        r = _clip_range(conv)
        if r is not None:
            found, tail, why = _clipped_scale(ctx, setup, ts, eta, law_batch(ctx, n), r)
            if found is None:
                return CheckResult.skipped(name, FAMILY, why or "clipping")
            scale = found
        oracle = data_oracle((1, *STATE_SHAPE), scale)
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
    run = run_loop(ctx, setup, n, eta, kind="oracle", start=(np.broadcast_to(first.mean, oracle.mean.shape),
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
    setup = setup_loop(ctx, "loop.output_law")
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
    setup = setup_loop(ctx, name)
    if isinstance(setup, CheckResult):
        return [setup]
    if not setup.counts:
        return [CheckResult.skipped(name, FAMILY, "no supported N")]
    several = [c for c in setup.counts if c >= 2]  # N = 1 has only the final, noise-free step
    n = min(several) if several else min(setup.counts)
    etas = [e for e in setup.etas if e is not None]
    eta = max(etas) if etas else None
    g = loop_seed(ctx, "loop.determinism", "global")
    other = g + 1 if setup.target.noise_source == "generator" else g
    first = run_loop(ctx, setup, n, eta, kind="field", global_seed=g, tag="det")
    second = run_loop(ctx, setup, n, eta, kind="field", global_seed=other, tag="det")
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
