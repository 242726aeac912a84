r"""Invariants: contracts every DDPM/DDIM step must keep, whatever its numbers.

These checks do not compare a step with the reference's values (the ``single_step`` family does);
they check the contract of :meth:`ddspec.conformance.protocol.Sampler.step`:

``invariants.no_input_mutation``
    ``model_output``, ``x_t``, ``noise`` (and ``predicted_variance``) are bitwise unchanged by the call.
``invariants.output_shape_dtype_device``
    The output is a tensor with ``x_t``'s shape, dtype and device.
``invariants.finite``
    No NaN or inf in the output where the reference step (float64, same inputs) is finite.
``invariants.deterministic``
    Two calls with the same injected noise, or with two identically seeded generators, give bitwise
    equal outputs.
``invariants.batch_independence``
    Sample i's output does not depend on the rest of the batch: the first and the last sample stepped
    alone (with their slice of the noise) agree with the batched output within twice the error model's
    per-element bound (each output is within one bound of the exact step,
    :func:`ddspec.conformance.tolerances.step_bound`). Dynamic thresholding is per sample by definition
    (Saharia et al. 2022, §2.3), so it passes; a step that normalises by batch statistics fails.
``invariants.no_final_noise``
    The final step (to the data, ᾱ = 1) adds no noise (Ho et al. 2020, Algorithm 2: z = 0 for t = 1;
    DDIM eq. 12 with σ = 0 at ᾱ_prev = 1): two different injected noises, and two differently seeded
    generators, give bitwise equal outputs there. Under the declared variant
    ``final_alpha_bar_is_one=False`` (diffusers' ``set_alpha_to_one=False``) the last step goes to
    ᾱ at index 0 and DDIM with η > 0 adds σ > 0 noise there by definition: such steps are left to
    ``distribution.step_moments`` and the verdict is ``acceptable`` with the consequence. Outputs that
    differ are judged by the size of the noise (:func:`final_noise_size`): a measured std at most half
    an ulp of the state's magnitude in the output dtype is below what the output can represent there
    (diffusers' 1e-10 final noise in float32) and is ``acceptable``, with the std stated; above it the
    check fails, stating the std (``docs/tolerances.md``, "Final noise below the output's resolution").
``invariants.no_global_rng``
    A step given explicit noise or a generator leaves every global RNG untouched (torch CPU/CUDA, numpy,
    Python; :func:`ddspec.conformance.guard.rng_state_snapshot`). A leak is restored at once, so that
    it cannot disturb later checks.

Which steps are exercised: the N-step run of the largest profile step count N ≤ 50 (its first,
middle and last step; every step for ``finite``), each DDIM η of the profile, and for
``no_final_noise`` the last step of every profile N. Inputs are drawn by
:meth:`~ddspec.conformance.context.CheckContext.randn` (``sample_shape`` of the profile) and are
reproducible from the seed. The run's timesteps are the target's own when they form a valid
subsequence, else the declared rule's from the reference (``details["timesteps_source"]`` and a note
say so): a wrong sequence is reported by ``timesteps.sequence.N=<N>``, and the invariants still judge
the step.

Targets without a reference. When the declared conventions have no reference (``unsupported``
entries, e.g. an ``__init__`` parameter the adapter does not know, or an unknown ``beta_schedule``),
the invariants that compare the target only with itself (``no_input_mutation``,
``output_shape_dtype_device``, ``deterministic``, ``no_global_rng``) still run, on the target's own
``timesteps(N)`` and ``alphas_cumprod()`` table, and a note says so. ``finite`` and
``no_final_noise`` need the reference step (its finiteness, its variance) and ``batch_independence``
needs the error model of the declared step: they are ``unsupported``, quoting the entries.

Verdicts: ``fail`` when the contract is violated, or when a call raises, hangs or returns no usable
tensor (the message leads with it; the calls of one step count that fail alike are one finding,
``"N=<n>: step raised <ExcType>: …"``, and the exception is recorded in ``details["errors"]``),
except where the reference itself is singular (ε-prediction at ᾱ = 0), which is skipped and said
so. ``observed``/``tolerance``: the number of violating cases against 0, or for
``batch_independence`` the worst ``|batched − alone| / (2 · step_bound)`` against 1, over the cases
whose calls worked; inf only when no call worked, since nothing could be measured.

The target is read once per check (:func:`~._common.setup_target`) and called through
:func:`~._common.call_step` (the drive stage, :class:`~ddspec.conformance.trajectory.StepDriver`); these helpers are shared with :mod:`.distribution`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from numpy.typing import NDArray

from .. import expectation
from ..results import CheckResult, Finding, Verdict
from ..guard import restore_rng_state, rng_leaked, rng_state_snapshot
from ..protocol import noise_source
from ..trajectory import StepCall
from ..tolerances import unit_roundoff
from ._common import (
    MAX_REPRESENTATIVE_STEPS,
    BrokenCalls,
    TargetSetup,
    call_step,
    conventions_of,
    elapsed,
    error_bound,
    exact_of,
    plan_for,
    random_predicted_variance,
    read_table,
    reference_or_why,
    representative_steps,
    reproduce_call,
    run_variants,
    setup_target,
    skipped_counts,
    step_counts,
    step_positions,
    offset_for,
)

__all__ = [
    "CHECKS",
    "MAX_REPRESENTATIVE_STEPS",
    "check_no_input_mutation",
    "check_output_shape_dtype_device",
    "check_finite",
    "check_deterministic",
    "check_batch_independence",
    "check_no_final_noise",
    "check_no_global_rng",
]

Array = NDArray[np.float64]
FAMILY = "invariants"

#: Offsets of the random streams of this module (``seed + offset``), named, never numbered by hand.
_OFF_X, _OFF_MO, _OFF_Z, _OFF_Z2, _OFF_PV, _OFF_GEN, _OFF_GEN2 = (
    offset_for(FAMILY, role) for role in ("x", "model_output", "z", "z2", "pv", "generator", "generator2"))


# ---------------------------------------------------------------------------------------------------
# Inputs, configurations and results of this module
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    """Random step inputs in the target's dtype/device, and their exact float64 values."""

    x: torch.Tensor
    mo: torch.Tensor
    z: torch.Tensor
    z2: torch.Tensor
    pv: torch.Tensor | None
    x64: Array
    mo64: Array
    z64: Array
    pv64: Array | None


def _inputs(ctx: Any, setup: TargetSetup, shape: tuple[int, ...]) -> _Inputs:
    x = ctx.randn(shape, _OFF_X)
    mo = ctx.randn(shape, _OFF_MO)
    z = ctx.randn(shape, _OFF_Z)
    z2 = ctx.randn(shape, _OFF_Z2)
    pv = random_predicted_variance(ctx, setup.conv, shape, _OFF_PV)
    return _Inputs(x, mo, z, z2, pv, exact_of(x), exact_of(mo), exact_of(z), None if pv is None else exact_of(pv))


@dataclass(frozen=True)
class _Config:
    label: str
    eta: float
    num_steps: int
    k: int
    t: int
    t_prev: int


@dataclass
class _Run:
    r"""One invariant check in progress: the target, the configurations to call, the inputs, and what
    was found. ``broken`` holds the calls that gave no usable output, ``violations`` the cases that
    break the invariant, ``checked`` counts the cases tried."""

    name: str
    start: float
    setup: TargetSetup
    cfgs: list[_Config]
    inp: _Inputs
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    broken: BrokenCalls = field(default_factory=BrokenCalls)
    violations: list[Finding] = field(default_factory=list)
    checked: int = 0
    reference_free: bool = False

    def break_at(self, cfg: _Config, mode: str, why: StepCall | str, *, part: str | None = None) -> None:
        r"""Record a call that raised, hung or returned no usable tensor (``why``: the failed
        :class:`~ddspec.conformance.trajectory.StepCall`, or a shape test's text; ``part`` names the call
        within the case).

        Calls of one step count that fail alike make one finding, ``"N=<n>: step raised <ExcType>: …"``,
        and the exception goes to ``details["errors"]`` (:class:`~ddspec.conformance.judge.BrokenCalls`).
        """
        if isinstance(why, StepCall):
            reason, error, refused = why.why or "no output", why.error, why.refused
        else:
            reason, error, refused = why, None, False
        where = f"{cfg.label}, step {cfg.k} (t={cfg.t} -> {cfg.t_prev}), {mode}" + (f", {part}" if part else "")
        self.broken.add(num_steps=cfg.num_steps, reason=reason, error=error, where=where, step=cfg.k,
                        timestep=cfg.t, refused=refused)


def _target_only_setup(ctx: Any, unsupported: CheckResult) -> tuple[TargetSetup | None, str]:
    r"""A :class:`~._common.TargetSetup` built from the target alone, for a reference-free invariant
    on a target whose conventions have no reference (``unsupported`` is :func:`~._common.setup_target`'s
    result saying why): ``alpha_bar`` is the target's own ``alphas_cumprod()`` (NaN when unreadable),
    ``betas`` follow from it (:math:`\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}`, Ho et al. 2020,
    §2), and ``delta`` is 0 (nothing here is compared with an exact value). Returns ``(setup, note)``,
    or ``(None, why)`` when even the conventions' step count is unusable.
    """
    conv, why = conventions_of(ctx)
    if conv is None:
        return None, why
    T = int(conv.num_train_timesteps)
    if T < 1:
        return None, f"num_train_timesteps={T}"
    table, why = read_table(ctx, "alphas_cumprod", T)
    if table is None:
        table = np.full(T, np.nan)
        table_note = f"{why}; no singular step can be recognised"
    else:
        table_note = "the target's own alphas_cumprod() table"
    with np.errstate(divide="ignore", invalid="ignore"):
        betas = 1.0 - table / np.concatenate(([1.0], table[:-1]))
    u_compute = unit_roundoff(ctx.dtype)
    source = ctx.call(lambda: noise_source(ctx.sampler))
    setup = TargetSetup(ctx.sampler, conv, betas, table, u_compute, u_compute, np.zeros(T), table_note,
                        noise_source=source.value if source.ok else "generator")
    note = (f"reference-free: {unsupported.message}; this invariant needs no reference, so it runs on the "
            f"target's own timesteps(N) and {table_note}")
    return setup, note


def _begin(
    ctx: Any, name: str, *, every_step: bool = False, min_batch: int = 1, reference_free: bool = False,
) -> _Run | CheckResult:
    r"""Read the target and lay out the configurations of the representative run, or the result that
    ends the check at once (conventions unreadable or unsupported, a batch too small, no run).

    With ``reference_free`` (an invariant that compares the target only with itself), a target whose
    conventions have no reference is still checked, on its own timesteps and ᾱ table
    (:func:`_target_only_setup`), and the result's notes say so; it stays ``unsupported`` only when
    the run cannot be laid out without the reference.
    """
    start = time.perf_counter()
    setup = setup_target(ctx, name, FAMILY)
    free_note = None
    if isinstance(setup, CheckResult):
        if not (reference_free and setup.verdict is Verdict.UNSUPPORTED):
            return setup
        unsupported = setup
        setup, free_note = _target_only_setup(ctx, unsupported)
        if setup is None:
            return dataclasses.replace(unsupported, message=f"{unsupported.message}; and {free_note}")
    shape = tuple(ctx.settings.sample_shape)
    if shape[0] < min_batch:
        return CheckResult.skipped(name, FAMILY, f"the profile's sample_shape {shape} has a batch of {shape[0]}")
    n = representative_steps(ctx, setup)
    if n is None:
        T = setup.conv.num_train_timesteps
        return _fatal(name, start, f"cannot run the target: no profile step count N <= T = {T}")
    plan, note, why = plan_for(ctx, setup, n)
    if plan is None:
        if free_note is not None:
            return dataclasses.replace(unsupported, message=f"{unsupported.message}; and the target's own "
                                       f"timesteps cannot be run: {why}", duration_s=elapsed(start))
        return _fatal(name, start, f"cannot run the target: {why}")
    ks = range(len(plan.pairs)) if every_step else step_positions(len(plan.pairs))
    cfgs = [_Config(label, eta, n, k, plan.pairs[k][0], plan.pairs[k][1])
            for label, eta in run_variants(ctx, setup) for k in ks]
    run = _Run(name, start, setup, cfgs, _inputs(ctx, setup, shape), reference_free=free_note is not None)
    run.details["timesteps_source"] = {f"N={n}": plan.source}
    if skipped := skipped_counts(ctx, setup):
        run.details["runs_skipped"] = skipped
    if free_note is not None:
        run.notes.append(free_note)
        run.details["reference"] = "none: the target's own timesteps and alphas_cumprod() table"
    if note:
        run.notes.append(note)
    return run


def _cases(ctx: Any, run: _Run) -> Iterator[tuple[_Config, str]]:
    """(configuration, noise mode) for every configuration where the reference can state the step,
    each with every mode of :func:`_modes`; the other configurations are noted and skipped.

    A reference-free run has no reference to ask: it skips only ε-prediction at the target's own
    ᾱ_t = 0, where the step is singular by definition (ε-parameterisation, Ho et al. 2020, eq. 11).
    """
    for cfg in run.cfgs:
        if run.reference_free:
            if run.setup.conv.prediction_type == "epsilon" and run.setup.ab(cfg.t) == 0.0:
                run.notes.append(f"{_where(cfg, '-')}: skipped, epsilon prediction at the target's alpha_bar_t = 0")
                continue
            for mode in _modes(ctx, run.setup):
                yield cfg, mode
            continue
        _, why = reference_or_why(run.setup, run.inp.mo64, cfg.t, cfg.t_prev, run.inp.x64, cfg.eta,
                                  run.inp.z64, run.inp.pv64)
        if why:
            run.notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        for mode in _modes(ctx, run.setup):
            yield cfg, mode


def _fatal(name: str, start: float, message: str) -> CheckResult:
    return CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL, message=message, duration_s=elapsed(start))


def _modes(ctx: Any, setup: TargetSetup) -> list[str]:
    """How noise reaches the target: injected (when supported), and through a generator or, for a target whose
    ``noise_source`` is ``"global"``, the global RNG (seeded per call by
    :func:`~ddspec.conformance.checks._common.call_step` from the generator it is handed)."""
    return (["noise"] if setup.conv.supports_noise_injection else []) + [setup.noise_source]


def _call_mode(
    ctx: Any, setup: TargetSetup, inp: _Inputs, cfg: _Config, mode: str, *,
    mo: torch.Tensor | None = None, x: torch.Tensor | None = None, z: torch.Tensor | None = None,
    pv: torch.Tensor | None = None, gen_offset: int = _OFF_GEN,
) -> tuple[torch.Tensor | None, StepCall | None]:
    r"""Call the step on *clones* of the inputs (so that a step that writes into its inputs cannot
    disturb the other cases; ``no_input_mutation`` passes its own tensors and compares them)."""
    mo = (inp.mo if mo is None else mo).clone()
    x = (inp.x if x is None else x).clone()
    pv = inp.pv if pv is None else pv
    pv = None if pv is None else pv.clone()
    if mode == "noise":
        return call_step(ctx, setup, mo, cfg.t, x, cfg.num_steps, cfg.eta,
                         noise=(inp.z if z is None else z).clone(), predicted_variance=pv)
    return call_step(ctx, setup, mo, cfg.t, x, cfg.num_steps, cfg.eta,
                     generator=ctx.generator(gen_offset), predicted_variance=pv)


def _where(cfg: _Config, mode: str) -> str:
    return f"{cfg.label}, N={cfg.num_steps}, step {cfg.k} (t={cfg.t} -> {cfg.t_prev}), {mode}"


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: equal values, or NaN in both (same shape assumed)."""
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


def _first_index(mask: NDArray[np.bool_]) -> tuple[int, ...]:
    """The multi-index of the first True element of ``mask``."""
    flat = int(np.flatnonzero(mask.reshape(-1))[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def _finish(
    run: _Run, ctx: Any, function: str, *, what: str, observed: float | None = None, tolerance: float | None = 0.0,
    acceptable: str | None = None,
) -> CheckResult:
    r"""One invariant result: ``fail`` with findings, ``skipped`` if nothing could be checked, else
    ``pass`` (``acceptable`` with its consequence when a declared variant applies).

    A failure's message leads with the calls that broke (they left the invariant unchecked there),
    one entry per step count and reason (``"N=10: step raised RuntimeError: …"``), then the
    violations; its findings are listed in the same order, and the exceptions go to
    ``details["errors"]``. ``observed`` defaults to the number of violating cases (against
    ``tolerance`` 0), counted over the cases where the calls worked; it is inf only when no call
    worked at all (nothing could be measured).
    """
    det: dict[str, Any] = {"configurations_checked": run.checked, "notes": run.notes}
    det.update(run.details)
    notes = run.notes
    suffix = (" Notes: " + "; ".join(notes[:3]) + ("; ..." if len(notes) > 3 else "")) if notes else ""
    n_broken = run.broken.n_calls
    worked = run.checked - n_broken
    if observed is None:
        observed = float(len(run.violations))
    if n_broken and worked <= 0:
        observed = math.inf
    errors = run.broken.errors()
    if errors:
        det["errors"] = errors
    reproduce = reproduce_call("invariants", function, run.name, ctx)
    if run.broken or run.violations:
        parts = []
        if run.broken:
            parts.append(f"the step gave no usable output in {n_broken} of {run.checked} case(s), where it "
                         f"could not be checked that {what}: {run.broken.summary()}")
        if run.violations:
            parts.append(f"{what}: violated in {len(run.violations)} case(s) of {run.checked}: "
                         f"{run.violations[0].message}")
        elif worked > 0:
            parts.append(f"in the other {worked} case(s) it holds")
        return CheckResult(
            name=run.name, family=FAMILY, verdict=Verdict.FAIL, observed=observed, tolerance=tolerance,
            message="; ".join(parts) + "." + suffix,
            findings=tuple(run.broken.findings() + run.violations), reproduce=reproduce,
            details=det, duration_s=elapsed(run.start),
        )
    if run.checked == 0:
        return CheckResult(name=run.name, family=FAMILY, verdict=Verdict.SKIPPED,
                           message=f"{what}: nothing could be checked.{suffix}", details=det,
                           duration_s=elapsed(run.start))
    verdict = Verdict.ACCEPTABLE if acceptable else Verdict.PASS
    return CheckResult(
        name=run.name, family=FAMILY, verdict=verdict, observed=observed, tolerance=tolerance,
        message=f"{what}: holds in all {run.checked} case(s).{suffix}", consequence=acceptable,
        reproduce=reproduce, details=det, duration_s=elapsed(run.start),
    )


# ---------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------


def check_no_input_mutation(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_input_mutation``: the step leaves ``model_output``, ``x_t``, ``noise`` and
    ``predicted_variance`` bitwise unchanged (protocol: "A step must not modify its input tensors").

    Every argument is a fresh clone of the inputs; after the call each is compared with the original
    (exact equality, NaN-aware). First, middle and last step of the representative run, every η,
    with injected noise and with a generator.
    """
    run = _begin(ctx, "invariants.no_input_mutation", reference_free=True)
    if isinstance(run, CheckResult):
        return [run]
    inp = run.inp
    for cfg, mode in _cases(ctx, run):
        args = {"model_output": inp.mo.clone(), "x_t": inp.x.clone()}
        if mode == "noise":
            args["noise"] = inp.z.clone()
        if inp.pv is not None:
            args["predicted_variance"] = inp.pv.clone()
        originals = {"model_output": inp.mo, "x_t": inp.x, "noise": inp.z, "predicted_variance": inp.pv}
        _, call_err = call_step(ctx, run.setup, args["model_output"], cfg.t, args["x_t"], cfg.num_steps, cfg.eta,
                                noise=args.get("noise"),
                                generator=ctx.generator(_OFF_GEN) if mode != "noise" else None,
                                predicted_variance=args.get("predicted_variance"))
        run.checked += 1
        if call_err:
            run.break_at(cfg, mode, call_err)
            continue
        for arg, passed in args.items():
            orig = originals[arg]
            if passed.shape != orig.shape:
                run.violations.append(Finding(
                    step=cfg.k, timestep=cfg.t,
                    message=f"{_where(cfg, mode)}: {arg} was resized in place to {tuple(passed.shape)}"))
                continue
            same = _bitwise_equal(passed, orig)
            if not bool(same.all()):
                bad = ~same.cpu().numpy()
                idx = _first_index(bad)
                run.violations.append(Finding(
                    step=cfg.k, timestep=cfg.t, element=idx, expected=float(orig[idx]), got=float(passed[idx]),
                    tolerance=0.0,
                    message=f"{_where(cfg, mode)}: the step modified {arg} in place ({int(bad.sum())} elements changed)",
                ))
    return [_finish(run, ctx, "check_no_input_mutation", what="inputs are not modified by the step")]


def check_output_shape_dtype_device(ctx: Any) -> list[CheckResult]:
    r"""``invariants.output_shape_dtype_device``: the step returns a tensor with ``x_t``'s shape,
    dtype and device (a float64 run must not come back in float32, a CUDA run not on the CPU)."""
    run = _begin(ctx, "invariants.output_shape_dtype_device", reference_free=True)
    if isinstance(run, CheckResult):
        return [run]
    inp = run.inp
    want = (tuple(inp.x.shape), inp.x.dtype, inp.x.device)
    for cfg, mode in _cases(ctx, run):
        out, call_err = _call_mode(ctx, run.setup, inp, cfg, mode)
        run.checked += 1
        if call_err:
            run.break_at(cfg, mode, call_err)
            continue
        got = (tuple(out.shape), out.dtype, out.device)
        wrong = [f"{what} {g} (expected {w})" for what, g, w in zip(("shape", "dtype", "device"), got, want) if g != w]
        if wrong:
            run.violations.append(Finding(step=cfg.k, timestep=cfg.t,
                                          message=f"{_where(cfg, mode)}: output has " + ", ".join(wrong)))
    return [_finish(run, ctx, "check_output_shape_dtype_device",
                    what=f"the output keeps x_t's shape {want[0]}, dtype {want[1]} and device {want[2]}")]


def check_finite(ctx: Any) -> list[CheckResult]:
    r"""``invariants.finite``: no NaN or inf in the output where the reference step is finite.

    Every step of the representative run, every η; the reference gets the same inputs in float64
    (and the injected noise, or zeros when the target draws its own).
    """
    run = _begin(ctx, "invariants.finite", every_step=True)
    if isinstance(run, CheckResult):
        return [run]
    inp = run.inp
    mode = _modes(ctx, run.setup)[0]
    for cfg in run.cfgs:
        ref, why = reference_or_why(run.setup, inp.mo64, cfg.t, cfg.t_prev, inp.x64, cfg.eta,
                                    inp.z64 if mode == "noise" else None, inp.pv64)
        if ref is None:
            run.notes.append(f"{_where(cfg, mode)}: skipped, reference {why}")
            continue
        out, call_err = _call_mode(ctx, run.setup, inp, cfg, mode)
        run.checked += 1
        if call_err or tuple(out.shape) != tuple(inp.x.shape):
            run.break_at(cfg, mode, call_err or f"output shape {tuple(out.shape)} != {tuple(inp.x.shape)}")
            continue
        got = exact_of(out)
        expected = np.broadcast_to(ref.prev_sample, got.shape)
        bad = ~np.isfinite(got) & np.isfinite(expected)
        if bad.any():
            idx = _first_index(bad)
            run.violations.append(Finding(
                step=cfg.k, timestep=cfg.t, element=idx, expected=float(expected[idx]), got=float(got[idx]),
                message=f"{_where(cfg, mode)}: {int(bad.sum())} non-finite output element(s) where the reference is finite"))
    return [_finish(run, ctx, "check_finite", what="the output is finite wherever the reference is")]


def check_deterministic(ctx: Any) -> list[CheckResult]:
    r"""``invariants.deterministic``: two calls with the same injected noise, and two calls with two
    generators seeded alike, give bitwise equal outputs (NaN-aware).

    A step that draws from a global RNG instead of its generator, or ignores the injected noise,
    fails here (and in ``invariants.no_global_rng``).
    """
    run = _begin(ctx, "invariants.deterministic", reference_free=True)
    if isinstance(run, CheckResult):
        return [run]
    inp = run.inp
    for cfg, mode in _cases(ctx, run):
        first, err1 = _call_mode(ctx, run.setup, inp, cfg, mode, z=inp.z.clone())
        second, err2 = _call_mode(ctx, run.setup, inp, cfg, mode, z=inp.z.clone())
        run.checked += 1
        if err1 or err2:
            run.break_at(cfg, mode, err1 or err2)
            continue
        if first.shape != second.shape:
            run.violations.append(Finding(
                step=cfg.k, timestep=cfg.t,
                message=f"{_where(cfg, mode)}: repeated calls return shapes {tuple(first.shape)} and {tuple(second.shape)}"))
            continue
        same = _bitwise_equal(first, second).cpu().numpy()
        if not same.all():
            idx = _first_index(~same)
            run.violations.append(Finding(
                step=cfg.k, timestep=cfg.t, element=idx, expected=float(first[idx]), got=float(second[idx]),
                tolerance=0.0,
                message=f"{_where(cfg, mode)}: two calls with the same {'noise' if mode == 'noise' else 'generator seed'} "
                        f"differ in {int((~same).sum())} element(s)",
            ))
    return [_finish(run, ctx, "check_deterministic",
                    what="same noise (or same generator seed) gives a bitwise equal output")]


def check_batch_independence(ctx: Any) -> list[CheckResult]:
    r"""``invariants.batch_independence``: sample i's output does not depend on the other samples.

    The whole batch is stepped, then the first and the last sample alone, with the matching slice of
    the injected noise (and of the predicted variance). Each output is within the error model's bound
    ``b`` of the exact step (:func:`ddspec.conformance.tolerances.step_bound`, evaluated on that
    sample's inputs), so the two may differ by at most ``2 b`` per element; more means coupling.
    ``observed`` is the worst ratio ``|batched − alone| / 2b`` (``tolerance`` 1), inf when a call gave
    no usable output. Without noise injection only deterministic steps (σ = 0) can be compared; the
    others are noted.
    """
    run = _begin(ctx, "invariants.batch_independence", min_batch=2)
    if isinstance(run, CheckResult):
        return [run]
    inp, setup = run.inp, run.setup
    shape = tuple(inp.x.shape)
    worst = 0.0
    for cfg in run.cfgs:
        ref, why = reference_or_why(setup, inp.mo64, cfg.t, cfg.t_prev, inp.x64, cfg.eta, inp.z64, inp.pv64)
        if ref is None:
            run.notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        deterministic = not np.any(np.asarray(ref.variance) > 0)
        if setup.conv.supports_noise_injection:
            mode = "noise"
        elif deterministic:
            mode = setup.noise_source
        else:
            run.notes.append(f"{_where(cfg, '-')}: skipped, stochastic step and the target takes no injected noise")
            continue
        full, call_err = _call_mode(ctx, setup, inp, cfg, mode)
        if call_err or tuple(full.shape) != shape:
            run.checked += 1
            run.break_at(cfg, mode, call_err or f"output shape {tuple(full.shape)}", part="batched call")
            continue
        for i in sorted({0, shape[0] - 1}):
            sl = slice(i, i + 1)
            one, call_err = _call_mode(ctx, setup, inp, cfg, mode, mo=inp.mo[sl], x=inp.x[sl], z=inp.z[sl],
                                       pv=None if inp.pv is None else inp.pv[sl])
            run.checked += 1
            if call_err or tuple(one.shape) != (1,) + shape[1:]:
                run.break_at(cfg, mode, call_err or f"output shape {tuple(one.shape)}", part=f"sample {i} alone")
                continue
            bound = 2.0 * error_bound(setup, cfg.eta, cfg.t, cfg.t_prev, inp.mo64[sl], inp.x64[sl],
                                      inp.z64[sl] if mode == "noise" else None,
                                      None if inp.pv64 is None else inp.pv64[sl])
            a, b = exact_of(full[sl]), exact_of(one)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b) / bound)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            ok = ratio <= 1.0
            worst = max(worst, float(ratio.max()))
            if not ok.all():
                j = tuple(int(v) for v in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
                run.violations.append(Finding(
                    step=cfg.k, timestep=cfg.t, element=(i,) + j[1:], expected=float(a[j]), got=float(b[j]),
                    tolerance=float(bound[j]),
                    message=f"{_where(cfg, mode)}: sample {i} stepped alone differs from the batched output "
                            f"in {int((~ok).sum())} element(s) beyond 2x the error bound",
                ))
    run.violations.sort(key=lambda f: -((f.error or 0.0) / f.tolerance if f.tolerance else math.inf))
    return [_finish(run, ctx, "check_batch_independence",
                    what="a sample's output is independent of the rest of the batch "
                         "(|batched - alone| <= 2 x step_bound; observed = worst ratio)",
                    observed=worst, tolerance=1.0)]


def check_no_final_noise(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_final_noise``: the final step to the data adds no noise.

    For the last step of every profile N (and every η), where the reference variance is 0: two
    different injected noises, and two generators with different seeds, must give bitwise equal
    outputs. A target that adds noise at its final step fails (e.g. a DDPM that adds noise when t > 0
    rather than when t_prev ≥ 0, with ``steps_offset`` = 1). Under ``final_alpha_bar_is_one=False``
    the verdict is ``acceptable``: the last step goes to ᾱ at index 0, keeps noise of std
    √(1 − ᾱ₀), and with η > 0 adds σ z by definition (those steps are checked statistically by
    ``distribution.step_moments``).

    Two outputs that differ are judged by the size of the noise, :func:`final_noise_size`: its
    measured std σ̂ = rms(a − b) / rms(z₁ − z₂) against τ, half an ulp of the state's magnitude
    m = rms(a) in the output dtype. σ̂ ≤ τ is below the output's resolution there: ``acceptable``,
    the consequence stating σ̂, m and τ (``details["final_noise_std"]`` lists every case). σ̂ > τ is a
    violation whose message states them (and its finding's ``tolerance`` is τ).
    """
    name, start = "invariants.no_final_noise", time.perf_counter()
    setup = setup_target(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    counts = step_counts(ctx, setup)
    if not counts:
        return [_fatal(name, start, f"no profile step count N <= T = {setup.conv.num_train_timesteps}")]
    run = _Run(name, start, setup, [], _inputs(ctx, setup, ctx.settings.sample_shape))
    if skipped := skipped_counts(ctx, setup):
        run.details["runs_skipped"] = skipped
    inp = run.inp
    sources: dict[str, str] = {}
    sizes: list[tuple[FinalNoiseSize, _Config, str]] = []
    for n in counts:
        plan, note, why = plan_for(ctx, setup, n)
        if plan is None:
            run.notes.append(f"N={n}: skipped, {why}")
            continue
        sources[f"N={n}"] = plan.source
        if note:
            run.notes.append(note)
        t, tp = plan.pairs[-1]
        for label, eta in run_variants(ctx, setup):
            cfg = _Config(label, eta, n, len(plan.pairs) - 1, t, tp)
            ref, why = reference_or_why(setup, inp.mo64, t, tp, inp.x64, eta, inp.z64, inp.pv64)
            if ref is None:
                run.notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
                continue
            if np.any(np.asarray(ref.variance) > 0):
                run.notes.append(f"{_where(cfg, '-')}: the declared last step goes to t_prev={tp} with variance > 0 "
                                 "(checked by distribution.step_moments)")
                continue
            for mode in _modes(ctx, setup):
                if mode == "noise":
                    a, err1 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z)
                    b, err2 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z2)
                else:
                    a, err1 = _call_mode(ctx, setup, inp, cfg, mode, gen_offset=_OFF_GEN)
                    b, err2 = _call_mode(ctx, setup, inp, cfg, mode, gen_offset=_OFF_GEN2)
                run.checked += 1
                if err1 or err2:
                    run.break_at(cfg, mode, err1 or err2)
                    continue
                if a.shape != b.shape:
                    run.violations.append(Finding(step=cfg.k, timestep=t,
                                                  message=f"{_where(cfg, mode)}: output shapes differ"))
                    continue
                same = _bitwise_equal(a, b).cpu().numpy()
                if not same.all():
                    a64, b64 = exact_of(a), exact_of(b)
                    diff = np.abs(a64 - b64)
                    z_rms = _noise_difference_rms(inp, mode)
                    size = final_noise_size(a64, b64, z_rms, ctx.dtype)
                    sizes.append((size, cfg, mode))
                    if not size.representable:
                        continue  # below the output's resolution: acceptable, stated below
                    j = tuple(int(v) for v in np.unravel_index(int(np.nanargmax(np.where(same, -1.0, diff))), same.shape))
                    run.violations.append(Finding(
                        step=cfg.k, timestep=t, element=j, expected=float(a[j]), got=float(b[j]), tolerance=size.threshold,
                        message=f"{_where(cfg, mode)}: the final step (to t_prev={tp}, variance 0) depends on the "
                                f"{'injected noise' if mode == 'noise' else 'generator'}: {int((~same).sum())} element(s) differ, "
                                f"max |difference| {float(np.nanmax(np.where(same, 0.0, diff))):.3g}; {size.describe()}",
                    ))
    run.details["timesteps_source"] = sources
    run.violations.sort(key=lambda f: -(f.error or 0.0))
    acceptable = expectation.final_step_consequence(setup.conv, setup.betas)
    if sizes:
        worst, wcfg, wmode = max(sizes, key=lambda item: item[0].std / item[0].threshold if item[0].threshold > 0 else math.inf)
        run.details["final_noise_std"] = [
            {"where": _where(c, m), "std": sz.std, "threshold": sz.threshold, "magnitude": sz.magnitude,
             "representable": sz.representable} for sz, c, m in sizes]
        if not run.violations:
            below = (f"the final step adds noise too small for {worst.dtype} to represent at the state's magnitude, "
                     f"in {len(sizes)} case(s); the largest, {_where(wcfg, wmode)}: {worst.describe()}")
            acceptable = below if acceptable is None else f"{acceptable}; {below}"
    return [_finish(run, ctx, "check_no_final_noise", what="no noise is added at the final step",
                    acceptable=acceptable)]


@dataclass(frozen=True)
class FinalNoiseSize:
    r"""The size of the noise a final step added, against what the output dtype can represent.

    Attributes:
        std: the measured noise std, :math:`\hat\sigma = \mathrm{rms}(a - b) / \mathrm{rms}(z_1 - z_2)`
            over the outputs ``a``, ``b`` of the two calls (``rms(z1 - z2)`` is the injected noises'
            own, or its expectation √2 for two independent generator draws).
        magnitude: the state's magnitude :math:`m = \mathrm{rms}(a)`.
        threshold: half an ulp of ``m`` in the output dtype, :math:`\tau = u\,2^{\lfloor\log_2 m\rfloor}`
            (``u`` the unit roundoff; ``docs/tolerances.md``, "Final noise below the output's resolution").
        dtype: the output dtype's name.
        representable: ``std > threshold`` (a failure); otherwise the noise is below the output's
            resolution at the state's magnitude (acceptable, with the std stated).
    """

    std: float
    magnitude: float
    threshold: float
    dtype: str
    representable: bool

    def describe(self) -> str:
        verdict = "above" if self.representable else "below"
        return (f"measured noise std {self.std:.3g}, {verdict} half an ulp of the state's magnitude "
                f"{self.magnitude:.3g} in {self.dtype} ({self.threshold:.3g})")


def half_ulp(magnitude: float, dtype: object) -> float:
    r"""Half an ulp of ``magnitude`` in ``dtype``: :math:`u\,2^{\lfloor\log_2 m\rfloor}` (``u``: unit
    roundoff); for ``m`` = 0 or below the normal range, half the smallest normal's ulp."""
    u = unit_roundoff(dtype)
    name = str(dtype).replace("torch.", "")
    tiny = float(np.finfo(np.float32).tiny) if name in ("float32", "bfloat16") else (
        float(np.finfo(np.float16).tiny) if name == "float16" else float(np.finfo(np.float64).tiny))
    m = max(float(magnitude), tiny) if math.isfinite(magnitude) else math.inf
    if not math.isfinite(m):
        return math.inf
    return u * 2.0 ** math.floor(math.log2(m))


def final_noise_size(a: Array, b: Array, z_diff_rms: float, dtype: object) -> FinalNoiseSize:
    r"""Measure the noise that made two final-step outputs ``a`` and ``b`` differ (see :class:`FinalNoiseSize`).

    Non-finite elements are left out; if nothing finite is left the size is inf (a failure).
    """
    ok = np.isfinite(a) & np.isfinite(b)
    name = str(dtype).replace("torch.", "")
    if not ok.any() or z_diff_rms <= 0.0:
        return FinalNoiseSize(math.inf, math.nan, 0.0, name, True)
    d = (a - b)[ok]
    std = float(np.sqrt(np.mean(d * d))) / z_diff_rms
    magnitude = float(np.sqrt(np.mean(a[ok] ** 2)))
    threshold = half_ulp(magnitude, dtype)
    return FinalNoiseSize(std, magnitude, threshold, name, not std <= threshold)


def _noise_difference_rms(inp: _Inputs, mode: str) -> float:
    """rms(z1 - z2) of the two noises of a no_final_noise comparison: the injected ones', or √2 for
    two independent standard normal draws through generators (its expectation)."""
    if mode == "noise":
        d = inp.z64 - exact_of(inp.z2)
        return float(np.sqrt(np.mean(d * d)))
    return math.sqrt(2.0)


def check_no_global_rng(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_global_rng``: a step given explicit noise or a generator draws from no global RNG.

    The global states (torch CPU and CUDA, numpy's legacy global, Python's ``random``) are recorded
    before each call (:func:`~ddspec.conformance.guard.rng_state_snapshot`) and compared after it
    (:func:`~ddspec.conformance.guard.rng_leaked`); a leak is reported and the states are restored
    (:func:`~ddspec.conformance.guard.restore_rng_state`) at once.
    """
    run = _begin(ctx, "invariants.no_global_rng", reference_free=True)
    if isinstance(run, CheckResult):
        return [run]
    inp = run.inp
    if run.setup.noise_source == "global":
        run.notes.append("the target declares noise_source='global': the harness seeds torch's global RNG for each "
                         "call inside fork_rng, so that use is declared, not a leak; numpy's and Python's global "
                         "RNGs must still not move")
    for cfg, mode in _cases(ctx, run):
        generator = ctx.generator(_OFF_GEN) if mode != "noise" else None
        before = rng_state_snapshot()
        try:
            _, call_err = call_step(ctx, run.setup, inp.mo.clone(), cfg.t, inp.x.clone(), cfg.num_steps, cfg.eta,
                                    noise=inp.z.clone() if mode == "noise" else None, generator=generator,
                                    predicted_variance=None if inp.pv is None else inp.pv.clone())
            leaked = rng_leaked(before)
        finally:
            restore_rng_state(before)
        run.checked += 1
        if leaked:
            run.violations.append(Finding(step=cfg.k, timestep=cfg.t,
                                          message=f"{_where(cfg, mode)}: the step changed the {leaked}"
                                                  + (f" (and failed: {call_err.why})" if call_err else "")))
        elif call_err:
            run.break_at(cfg, mode, call_err)
    return [_finish(run, ctx, "check_no_global_rng",
                    what="no global RNG is used when noise or a generator is given")]


#: The invariant checks, in the order they run.
CHECKS: list = [
    check_no_input_mutation,
    check_output_shape_dtype_device,
    check_finite,
    check_deterministic,
    check_batch_independence,
    check_no_final_noise,
    check_no_global_rng,
]
