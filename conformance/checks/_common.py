r"""Shared plumbing of the checks: what every family reads and plans before the core drives, expects and judges.

Nothing here decides what is right: expected values come from :mod:`ddspec.conformance.expectation`
(hence from :mod:`ddspec.reference`), verdicts from :mod:`ddspec.conformance.judge` (re-exported here:
:class:`Tally`, :class:`BrokenCalls`, :func:`tally_result`, :class:`StepTolerance`, :func:`judge_transition`)
and tolerances from :mod:`ddspec.conformance.tolerances`. This module only

* reads the target's declarations and tables through :meth:`CheckContext.call` (:func:`conventions_of`,
  :func:`read_table`), turning every exception, timeout or malformed value into a message;
* picks the step counts a family runs (:func:`plan_step_family`, :func:`step_counts`: the profile's N that the
  target's ``supported_num_steps`` admits) and the timesteps a run visits (:func:`plan_run`): the target's
  own sequence where it is a valid subsequence, so that a step check measures the step and not the
  timestep rule (the timesteps check judges the rule), else the reference's;
* calls the target's ``step`` through the drive stage of the core
  (:class:`~ddspec.conformance.trajectory.StepDriver`, :func:`call_step`), which records transitions and
  says why a call gave none (it raised, hung, or returned no tensor of x_t's shape, dtype and device);
* derives reproducible input seeds (:func:`offset_for`) and the target's error model (:func:`step_tolerance`:
  its table's dtype, a declared ``coefficient_dtype``).

A failed call is one finding per step count and reason (:class:`BrokenCalls`): ``"N=1: step raised
IndexError: …"``, its exception in ``details["errors"]`` (``[{"num_steps": n, "error": "<ExcType>: <message>"}]``,
:attr:`~ddspec.conformance.trajectory.StepCall.error`), and the other step counts keep their numbers.

The invariant and distribution checks read the target once into a :class:`TargetSetup`
(:func:`setup_target`) and call its step through :func:`call_step`; their expected values come from
:func:`reference_or_why` and their rounding allowance from :func:`error_bound` and
:func:`error_bound_envelope`. Every family that calls the step takes its timesteps from
:func:`plan_run` (:func:`plan_for` for these two).

Input seeds. Every random tensor is ``ctx.randn(shape, offset)`` with ``offset = offset_for(...)``, a
CRC-32 of a text key naming the check, the run and the role of the tensor. A finding therefore
reproduces from ``(seed, offset)`` alone, and the reproduce snippets print the offsets.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from scipy import special
from numpy.typing import NDArray

from ddspec.reference import SingularError
from ddspec.reference import alphas as ref_alphas
from ddspec.reference.timesteps import check_subsequence
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..context import CheckContext
from ..expectation import (
    UnsupportedConvention,
    reference_betas,
    reference_step,
    reference_timesteps,
    step_pairs,
    step_spec,
    zero_snr_original,
)
from ..protocol import Conventions, NumStepsSupport, coefficient_dtype, noise_source, supported_num_steps
from ..trajectory import StepCall, StepDriver, exact_of, failed_call
from ..judge import MAX_PER_STEP, BrokenCalls, StepTolerance, Tally, judge_transition, tally_result
from ..results import CheckResult, Verdict
from ..tolerances import UNIT_ROUNDOFF, alpha_bar_relative_bound, step_bound, table_roundoff, unit_roundoff

__all__ = [
    "CONVENTION_FIELDS",
    "conventions_of",
    "unsupported_entries",
    "unsupported_results",
    "fail_result",
    "read_table",
    "dtype_of_roundoff",
    "offset_for",
    "RunPlan",
    "plan_run",
    "judge_transition",
    "MAX_PER_STEP",
    "failed_call",
    "BrokenCalls",
    "Tally",
    "tally_result",
    "StepTolerance",
    "StepFamilyPlan",
    "plan_step_family",
    "step_tolerance",
    "choose_steps",
    "torch_input",
    "oracle_inputs",
    "exact_of",
    "TargetSetup",
    "elapsed",
    "setup_target",
    "step_counts",
    "skipped_counts",
    "MAX_REPRESENTATIVE_STEPS",
    "representative_steps",
    "plan_for",
    "run_variants",
    "step_positions",
    "is_learned",
    "random_predicted_variance",
    "call_step",
    "reference_or_why",
    "error_bound",
    "error_bound_envelope",
    "reproduce_call",
]

Array = NDArray[np.float64]

#: Every field of :class:`Conventions`. An ``unsupported`` entry whose field is not one of these is a
#: config option the adapter does not know: it may change anything, so every check treats it as relevant.
CONVENTION_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Conventions))


# -- declarations ------------------------------------------------------------------------------------


def conventions_of(ctx: CheckContext) -> tuple[Conventions | None, str | None]:
    r"""The target's :class:`Conventions`, or ``(None, why)`` when they cannot be read or are not one."""
    outcome = ctx.call(lambda: ctx.sampler.conventions)
    if not outcome.ok:
        return None, f"reading sampler.conventions failed: {outcome.error}"
    conv = outcome.value
    if not isinstance(conv, Conventions):
        return None, (
            f"sampler.conventions is a {type(conv).__name__}, not a ddspec.conformance.protocol.Conventions: "
            "the harness cannot know which reference computation applies"
        )
    return conv, None


def unsupported_entries(conv: Conventions, fields: Iterable[str] | None) -> list[str]:
    r"""The ``conv.unsupported`` entries that concern a check reading ``fields`` (None: every field).

    An entry ``"<field>=<value>: <why>"`` concerns the check when ``<field>`` is one it reads, or is
    not a :class:`Conventions` field at all (an option the adapter could not interpret may change
    anything).
    """
    wanted = None if fields is None else frozenset(fields)
    out = []
    for entry in conv.unsupported:
        name = entry.split("=", 1)[0].strip()
        if wanted is None or name in wanted or name not in CONVENTION_FIELDS:
            out.append(entry)
    return out


def unsupported_results(names: Iterable[str], family: str, entries: list[str]) -> list[CheckResult]:
    r"""One ``unsupported`` result per name, quoting the adapter's entries (never a silent default)."""
    why = "; ".join(entries)
    return [
        CheckResult(
            name=name,
            family=family,
            verdict=Verdict.UNSUPPORTED,
            message=f"the target declares conventions the harness cannot state a reference for: {why}",
            details={"unsupported": list(entries)},
        )
        for name in names
    ]


def fail_result(name: str, family: str, message: str, **details: Any) -> CheckResult:
    """A ``fail`` result with a message and no number (the target broke a contract)."""
    return CheckResult(name=name, family=family, verdict=Verdict.FAIL, message=message, details=details)


# -- tables ------------------------------------------------------------------------------------------


def _as_float64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64).numpy().copy()
    return np.array(value, dtype=np.float64, copy=True)


def read_table(ctx: CheckContext, method: str, length: int) -> tuple[Array | None, str | None]:
    r"""``sampler.<method>()`` as a float64 array of shape ``(length,)``, or ``(None, why)``.

    Fails (with the reason) when the call raises or times out, or the value is not a 1-D real array of
    the right length with finite entries.
    """
    fn = getattr(ctx.sampler, method, None)
    if not callable(fn):
        return None, f"sampler.{method} is not callable"
    outcome = ctx.call(fn)
    if not outcome.ok:
        return None, f"sampler.{method}() failed: {outcome.error}"
    try:
        arr = _as_float64(outcome.value)
    except (TypeError, ValueError, RuntimeError) as exc:
        return None, f"sampler.{method}() returned a {type(outcome.value).__name__}, not a real array ({exc})"
    if arr.shape != (length,):
        return None, f"sampler.{method}() has shape {arr.shape}, expected ({length},) = (num_train_timesteps,)"
    bad = ~np.isfinite(arr)
    if np.any(bad):
        i = int(np.argmax(bad))
        return None, f"sampler.{method}() holds {int(bad.sum())} non-finite values (first at index {i}: {arr[i]!r})"
    return arr, None


def dtype_of_roundoff(u: float) -> str:
    """The dtype name whose unit roundoff is ``u`` (one of ``tolerances.UNIT_ROUNDOFF``)."""
    for name, value in UNIT_ROUNDOFF.items():
        if value == u:
            return name
    return f"u={u:g}"


# -- reproducible inputs ----------------------------------------------------------------------------


def offset_for(*parts: object) -> int:
    r"""A reproducible ``ctx.randn`` offset for the input named by ``parts`` (CRC-32 of ``"a|b|c"``)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode("utf-8"))


# -- which timesteps a run visits --------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    r"""The steps of one N-step run: ``pairs[k] = (t, t_prev)`` (reference convention, ``step_pairs``).

    ``source`` is ``"target"`` when the target's own timesteps are used (a valid subsequence) and
    ``"reference"`` otherwise; ``note`` says why the target's were not used.
    """

    num_steps: int
    timesteps: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    source: str
    note: str | None = None


def plan_run(ctx: CheckContext, conv: Conventions, num_steps: int) -> tuple[RunPlan | None, str | None]:
    r"""The steps of an N-step run, or ``(None, reason)`` when it cannot be run (the reason says why).

    The target's ``timesteps(N)`` are used when they form a valid subsequence (strictly decreasing
    indices in [0, T − 1]): a step check then measures the step alone, and the timesteps check judges
    the rule. Otherwise (the call fails, or e.g. diffusers' trailing spacing returns N + 1 entries
    ending in −1) the declared rule's timesteps from the reference are used, and ``note`` says so.
    """
    T = conv.num_train_timesteps
    if num_steps > T:
        return None, f"N={num_steps} exceeds num_train_timesteps={T}"
    note = None
    outcome = ctx.call(lambda: ctx.sampler.timesteps(num_steps))
    if outcome.ok:
        try:
            raw = outcome.value
            arr = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise ValueError(f"timesteps({num_steps}) is not a 1-D integer array: {arr!r}")
            ts = check_subsequence(arr, T, f"timesteps({num_steps})")
            seq = tuple(int(v) for v in ts)
            return RunPlan(num_steps, seq, tuple(step_pairs(conv, ts)), "target"), None
        except ValueError as exc:
            note = f"the target's timesteps({num_steps}) are not a valid subsequence ({exc}); the reference's are used"
    else:
        note = f"the target's timesteps({num_steps}) failed ({outcome.error}); the reference's are used"
    try:
        ts = reference_timesteps(conv, num_steps)
    except UnsupportedConvention as exc:
        return None, f"{note}, but the declared spacing has no reference rule: {exc}"
    except ValueError as exc:
        return None, f"{note}, but the reference rule is undefined for N={num_steps}: {exc}"
    seq = tuple(int(v) for v in ts)
    return RunPlan(num_steps, seq, tuple(step_pairs(conv, ts)), "reference", note), None


# -- the error model ---------------------------------------------------------------------------------


def step_tolerance(ctx: CheckContext, conv: Conventions, betas: Array) -> StepTolerance:
    r"""The :class:`StepTolerance` of the target: ``u_table = max(table_roundoff(target ᾱ), u_compute)`` for
    the δ's, and ``u_step = max(u_table, u(coefficient_dtype))`` for the rounding term of each step.

    The target's ᾱ table reveals its storage dtype (:func:`~ddspec.conformance.tolerances.table_roundoff`);
    a table narrower than the run's dtype is rounded again when used, hence the max. When the table
    cannot be read, ``u_table = u_compute`` and ``table_note`` says why (the schedule check fails then).

    A target that declares ``coefficient_dtype`` (:func:`~ddspec.conformance.protocol.coefficient_dtype`:
    float64 tables whose per-step coefficients are rounded to, e.g., float32) has each coefficient
    :math:`c` used as :math:`c(1+\delta)`, :math:`|\delta| \le u_\mathrm{coef}`; the rounding term of
    :func:`~ddspec.conformance.tolerances.step_bound` charges every coefficient at ``u_step``, so
    ``u_step = max(u_table, u_coef)`` admits exactly that rounding, and ``table_note`` says so. Undeclared,
    ``u_step = u_table``. A declaration that cannot be read is not charged (the note says why;
    :func:`plan_step_family` fails the step families on it).
    """
    u_compute = unit_roundoff(ctx.dtype)
    table, why = read_table(ctx, "alphas_cumprod", conv.num_train_timesteps)
    if table is None:
        u_tab, name, note = u_compute, "unknown", f"{why}; u_table = u_compute assumed"
    else:
        u_tab = table_roundoff(table)
        name, note = dtype_of_roundoff(u_tab), None
    u_table = max(u_tab, u_compute)
    deltas = alpha_bar_relative_bound(betas, conv.beta_schedule, u_table, zero_snr_original=zero_snr_original(conv))
    u_step, coef_note, coef_name = u_table, None, None
    declared = ctx.call(lambda: coefficient_dtype(ctx.sampler))
    if not declared.ok:
        coef_note = f"the target's coefficient_dtype is not usable ({declared.describe()}); not charged"
    elif declared.value is not None:
        u_coef = unit_roundoff(declared.value)
        u_step, coef_name = max(u_table, u_coef), dtype_of_roundoff(u_coef)
        coef_note = (f"coefficients rounded to {dtype_of_roundoff(u_coef)} (declared coefficient_dtype): "
                     f"u_step = max(u_table, {u_coef:.3g}) = {u_step:.3g}")
    note = "; ".join(n for n in (note, coef_note) if n) or None
    return StepTolerance(ref_alphas.alpha_bar(betas), deltas, u_table, u_compute, u_step, name, note, coef_name)


def choose_steps(n_steps: int, n_wanted: int | None, rng: np.random.Generator) -> list[int]:
    r"""Which steps of a K-step run to check: all when K ≤ ``n_wanted`` (None: all); else the first,
    the last and ``n_wanted − 2`` others drawn without replacement, in run order."""
    if n_wanted is None or n_steps <= n_wanted:
        return list(range(n_steps))
    inner = rng.choice(np.arange(1, n_steps - 1), size=max(n_wanted - 2, 0), replace=False)
    return sorted({0, n_steps - 1, *(int(i) for i in inner)})


def torch_input(ctx: CheckContext, values: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    r"""``values`` cast to the target's dtype/device, and the float64 value the target actually gets."""
    tensor = ctx.to_target(values)
    return tensor, tensor.detach().to("cpu", torch.float64).numpy().copy()


def oracle_inputs(
    ctx: CheckContext, prediction_type: str, alpha_bar_t: float, shape: tuple[int, ...],
    offset_x0: int, offset_eps: int, x0_range: float,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    r"""(x_t, model output, x₀): inputs consistent with the data law x₀ ~ U(−ρ, ρ), ρ = ``x0_range``.

    :math:`x_0 = \rho(2\Phi(g)-1)` and ε from ``ctx.randn`` (float64), x_t = √ᾱ x₀ + √(1−ᾱ) ε
    rounded to the target's dtype, then the exact model output *for the rounded x_t*: with
    ε̃ = (x_t − √ᾱ x₀)/√(1−ᾱ), ε̃ (``epsilon``), x₀ (``sample``) or √ᾱ ε̃ − √(1−ᾱ) x₀
    (``v_prediction``; Salimans & Ho 2022, §4), rounded. The x̂₀ a target forms from them is x₀ up to
    the inputs' rounding (:math:`\lesssim u\,|m|\sqrt{1-\bar\alpha}/\sqrt{\bar\alpha}` for ε).
    """
    if not 0.0 <= alpha_bar_t < 1.0:
        raise ValueError(f"alpha_bar_t={alpha_bar_t!r}: must be in [0, 1)")
    if not x0_range > 0.0:
        raise ValueError(f"x0_range={x0_range!r}: must be > 0")
    g = ctx.randn(shape, offset_x0, dtype=torch.float64, device="cpu").numpy()
    x0 = x0_range * (2.0 * special.ndtr(g) - 1.0)
    eps = ctx.randn(shape, offset_eps, dtype=torch.float64, device="cpu").numpy()
    sa, s1 = np.sqrt(alpha_bar_t), np.sqrt(1.0 - alpha_bar_t)
    x, x64 = torch_input(ctx, sa * x0 + s1 * eps)
    eps_c = (x64 - sa * x0) / s1
    if prediction_type == "epsilon":
        m = eps_c
    elif prediction_type == "sample":
        m = x0
    elif prediction_type == "v_prediction":
        m = sa * eps_c - s1 * x0
    else:
        raise ValueError(f"prediction_type={prediction_type!r}: expected 'epsilon', 'sample' or 'v_prediction'")
    model_output, _ = torch_input(ctx, m)
    return x, model_output, x0


# -- the invariant and distribution checks' view of the target --------------------------------------

#: The largest step count of the runs whose single steps the invariant and step-moment checks call
#: (the profile's largest N up to this).
MAX_REPRESENTATIVE_STEPS = 50


@dataclass(frozen=True)
class TargetSetup:
    r"""What every invariant and distribution check needs to know about the target, read once.

    ``betas``/``alpha_bar`` are the *reference's* tables for the declared schedule (expected values
    always come from the reference); ``delta[t]`` bounds the relative error of the *target's* ᾱ_t
    (:func:`ddspec.conformance.tolerances.alpha_bar_relative_bound`, with the table's dtype read off
    the target's own table, and never narrower than the compute dtype: ``u_table``). :meth:`driver`
    drives its step (after a timed-out call, the check calls the target no more).
    """

    sampler: Any
    conv: Conventions
    betas: Array
    alpha_bar: Array
    u_compute: float
    u_table: float
    delta: Array
    table_note: str
    noise_source: str = "generator"
    drivers: dict[int, StepDriver] = field(default_factory=dict, compare=False, repr=False)

    def driver(self, ctx: Any) -> StepDriver:
        """The :class:`~ddspec.conformance.trajectory.StepDriver` of this target in ``ctx`` (one per check
        context, so that a call that timed out stops the calls of that check only)."""
        key = id(ctx)
        if key not in self.drivers:
            self.drivers[key] = StepDriver(ctx, self.sampler, noise_source=self.noise_source)
        return self.drivers[key]

    def ab(self, t: int) -> float:
        """ᾱ at index t (1 at t = −1, the data)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def delta_at(self, t: int) -> float:
        """Relative error bound of the target's ᾱ_t (0 at t = −1: an exact 1)."""
        return 0.0 if t < 0 else float(self.delta[t])


def elapsed(start: float) -> float:
    """Seconds since ``start`` (a :func:`time.perf_counter` value), at least 1 ns."""
    return max(time.perf_counter() - start, 1e-9)


def setup_target(ctx: Any, name: str, family: str) -> TargetSetup | CheckResult:
    r"""Read the target's conventions, tables and declarations; a ``fail``/``unsupported``/``skipped`` result
    named ``name`` when that is impossible.

    The declarations of the protocol are read here (:func:`~ddspec.conformance.protocol.supported_num_steps`,
    :func:`~ddspec.conformance.protocol.coefficient_dtype`): a malformed one fails, and a target whose
    ``supported_num_steps`` admits none of the profile's N ≤ T nor any other N ≤ T is ``skipped`` with
    that reason. A declared ``coefficient_dtype`` raises ``u_table`` (the unit roundoff the rounding term
    of :func:`error_bound` is charged at) to its unit roundoff; the δ's of the table keep the table's.
    """
    start = time.perf_counter()
    outcome = ctx.call(lambda: ctx.sampler.conventions)
    if not outcome.ok:
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"could not read the target's conventions: {outcome.describe()}",
                           duration_s=elapsed(start))
    conv = outcome.value
    if not isinstance(conv, Conventions):
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"the target's conventions are a {type(conv).__name__}, not a Conventions",
                           duration_s=elapsed(start))
    if conv.unsupported:
        return CheckResult(name=name, family=family, verdict=Verdict.UNSUPPORTED,
                           message="the adapter could not interpret: " + "; ".join(conv.unsupported),
                           duration_s=elapsed(start))
    try:
        betas = reference_betas(conv)
    except ValueError as exc:  # UnsupportedConvention included
        return CheckResult(name=name, family=family, verdict=Verdict.UNSUPPORTED,
                           message=f"no reference schedule for the declared conventions: {exc}",
                           duration_s=elapsed(start))
    source = ctx.call(lambda: noise_source(ctx.sampler))
    if not source.ok:
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"the target's noise_source is not usable: {source.describe()}",
                           duration_s=elapsed(start))
    declared = ctx.call(lambda: (supported_num_steps(ctx.sampler), coefficient_dtype(ctx.sampler)))
    if not declared.ok:
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"the target's declarations are not usable: {declared.describe()}",
                           duration_s=elapsed(start))
    support, coef_dtype = declared.value
    T = conv.num_train_timesteps
    try:
        in_range = [int(n) for n in ctx.steps or () if 1 <= int(n) <= T]
        runnable = not in_range or any(support.supports(n) for n in in_range) or support.smallest(T) is not None
    except ValueError as exc:
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"the target's supported_num_steps is not usable: {exc}", duration_s=elapsed(start))
    if not runnable:
        return CheckResult.skipped(name, family, f"no N <= T = {T} is in the target's supported_num_steps "
                                                 f"({support.description}): nothing to run")
    u_compute = unit_roundoff(ctx.dtype)
    table = ctx.call(lambda: np.asarray(ctx.sampler.alphas_cumprod(), dtype=np.float64))
    if table.ok and table.value.shape == betas.shape and np.all(np.isfinite(table.value)):
        u_tab = table_roundoff(table.value)
        note = f"target's alpha_bar table read as exact in a dtype of unit roundoff {u_tab:.3g}"
    else:
        u_tab = u_compute
        note = "target's alpha_bar table unreadable (see the schedule checks); assumed stored in the compute dtype"
    u_table = max(u_tab, u_compute)
    delta = alpha_bar_relative_bound(betas, conv.beta_schedule, u_table, zero_snr_original=zero_snr_original(conv))
    if coef_dtype is not None:
        # the declared coefficient rounding is charged in the rounding term (u_table), not in the δ's of the table
        u_coef = unit_roundoff(coef_dtype)
        u_table = max(u_table, u_coef)
        note += (f"; coefficients rounded to {dtype_of_roundoff(u_coef)} (declared coefficient_dtype), "
                 f"rounding charged at u = {u_table:.3g}")
    return TargetSetup(ctx.sampler, conv, betas, ref_alphas.alpha_bar(betas), u_compute, u_table, delta, note,
                       noise_source=source.value)


def step_counts(ctx: Any, setup: TargetSetup) -> list[int]:
    """The profile's step counts that the target can run: N ≤ T and in its ``supported_num_steps``.

    When the declaration rejects every profile N ≤ T, the smallest supported N ≤ T instead (as the loop
    family does); ``[]`` when there is none, or no profile N ≤ T at all. A declaration that cannot be read
    gives ``[]`` (:func:`setup_target` has failed on it already).
    """
    try:
        return list(supported_num_steps(setup.sampler).choose(ctx.steps, setup.conv.num_train_timesteps).counts)
    except ValueError:
        return []


def skipped_counts(ctx: Any, setup: TargetSetup) -> dict[str, str]:
    """The profile's N ≤ T that :func:`step_counts` leaves out, with the reason (``{"N=10": "not in the target's
    supported_num_steps (…)"}``), for a result's ``details["runs_skipped"]``; empty when every N is supported."""
    try:
        choice = supported_num_steps(setup.sampler).choose(ctx.steps, setup.conv.num_train_timesteps)
    except ValueError:
        return {}
    out = {f"N={n}": why for n, why in choice.skipped.items()}
    if choice.fallback is not None:
        out["fallback"] = choice.fallback
    return out


def representative_steps(ctx: Any, setup: TargetSetup) -> int | None:
    """The largest supported profile N ≤ :data:`MAX_REPRESENTATIVE_STEPS` (else the smallest N), or None
    (:func:`step_counts`: the smallest supported N ≤ T when no profile N is supported)."""
    counts = step_counts(ctx, setup)
    if not counts:
        return None
    small = [n for n in counts if n <= MAX_REPRESENTATIVE_STEPS]
    return max(small) if small else min(counts)


def plan_for(ctx: Any, setup: TargetSetup, num_steps: int) -> tuple[RunPlan | None, str | None, str | None]:
    r"""``(plan, note, None)`` for an N-step run of the invariant and distribution checks, or
    ``(None, None, why)`` when it cannot be run.

    The timesteps are the target's own when they are a valid subsequence, else the declared rule's
    from the reference (:func:`plan_run`): these checks judge the step, and a wrong sequence is the
    timesteps check's to report, not theirs. ``note`` says so for such a run, naming that check.
    """
    plan, why = plan_run(ctx, setup.conv, num_steps)
    if plan is None:
        return None, None, why
    note = None
    if plan.source != "target":
        note = f"N={num_steps}: {plan.note} (reported by timesteps.sequence.N={num_steps})"
    return plan, note, None


@dataclass(frozen=True)
class StepFamilyPlan:
    r"""What a step-by-step family (``single_step``, ``coefficients``) needs before it drives the target, read once.

    ``variants`` are ``(result name, η)``: ``<family>.eta=<η>`` for each profile η (DDIM), or one
    ``<family>.variance_type=<type>`` (DDPM, η unused). ``plans`` are the runs the profile's step counts give
    (:func:`plan_run`: the target's own timesteps where valid), ``skipped`` the step counts that cannot be
    run, with the reason, and ``notes`` the runs whose timesteps come from the reference.
    """

    conv: Conventions
    betas: Array
    variants: tuple[tuple[str, float], ...]
    plans: tuple[RunPlan, ...]
    skipped: dict[str, str]
    notes: dict[str, str]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.variants]


def plan_step_family(
    ctx: CheckContext,
    family: str,
    *,
    variants: Callable[[Conventions], tuple[tuple[str, float], ...]] | None = None,
    max_steps: tuple[int, str] | None = None,
) -> StepFamilyPlan | list[CheckResult]:
    r"""The shared preamble of the step families: the conventions, the variants, the reference β, the runs.

    ``variants(conv)`` gives the ``(result name, η)`` pairs when the family has its own (default: one per
    profile η for DDIM, ``<family>.variance_type=<type>`` for DDPM); ``max_steps = (n, why)`` skips the runs
    longer than n, with ``why``.

    Returns the plan, or the results that end the family at once: ``fail`` when the conventions cannot be read,
    ``unsupported`` (one per variant) when the adapter could not interpret a field, the ᾱ₀ variant is declared
    for DDPM (the reference defines it for DDIM only) or the reference cannot build the schedule, ``fail`` when
    the target's ``supported_num_steps`` or ``coefficient_dtype`` is malformed, and ``skipped`` when no step
    count can be run.

    Only the N in the target's ``supported_num_steps`` (:func:`~ddspec.conformance.protocol.supported_num_steps`)
    are run; the others are in ``skipped`` as ``"N=<n>": "not in the target's supported_num_steps (<description>)"``.
    When the declaration rejects every profile N ≤ T, the smallest supported N ≤ T is run instead (as the loop
    family does), and ``notes`` says so.
    """
    conv, why = conventions_of(ctx)
    if conv is None:
        return [fail_result(family, family, why or "no conventions")]
    if variants is not None:
        chosen = tuple(variants(conv))
    elif conv.family == "ddim":
        chosen = tuple((f"{family}.eta={eta:g}", float(eta)) for eta in ctx.settings.etas)
    else:
        chosen = ((f"{family}.variance_type={conv.variance_type}", 0.0),)
    names = [n for n, _ in chosen]
    entries = unsupported_entries(conv, None)
    if entries:
        return unsupported_results(names, family, entries)
    if conv.family == "ddpm" and not conv.final_alpha_bar_is_one:
        return unsupported_results(names, family, [
            "final_alpha_bar_is_one=False: the reference defines this variant for DDIM only"])
    try:
        betas = reference_betas(conv)
    except UnsupportedConvention as exc:
        return unsupported_results(names, family, [str(exc)])
    except ValueError as exc:
        return unsupported_results(names, family, [f"the reference cannot build the declared schedule: {exc}"])
    declared = ctx.call(lambda: (supported_num_steps(ctx.sampler), coefficient_dtype(ctx.sampler)))
    if not declared.ok:
        return [fail_result(n, family, f"the target's declarations are not usable: {declared.describe()}")
                for n in names]
    support: NumStepsSupport = declared.value[0]
    T = conv.num_train_timesteps
    plans: list[RunPlan] = []
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    try:
        choice = support.choose(ctx.steps or (), T)
    except ValueError as exc:  # the declared predicate raised
        return [fail_result(n, family, f"the target's supported_num_steps is not usable: {exc}") for n in names]
    skipped.update({f"N={n}": why for n, why in choice.skipped.items()})
    if choice.fallback is not None:
        notes[f"N={choice.counts[0]}"] = choice.fallback
    counts = list(choice.counts) + sorted({int(n) for n in ctx.steps or () if int(n) > T})  # plan_run says why not
    if max_steps is not None:
        skipped.update({f"N={n}": max_steps[1] for n in counts if n > max_steps[0]})
        counts = [n for n in counts if n <= max_steps[0]]
    for n in counts:
        plan, reason = plan_run(ctx, conv, n)
        if plan is None:
            skipped[f"N={n}"] = reason or "cannot be run"
            continue
        plans.append(plan)
        if plan.note:
            notes[f"N={n}"] = "; ".join(x for x in (notes.get(f"N={n}"), plan.note) if x)
    if not plans:
        return [CheckResult.skipped(n, family, "no run can be checked: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items())) for n in names]
    return StepFamilyPlan(conv, betas, chosen, tuple(plans), skipped, notes)


def run_variants(ctx: Any, setup: TargetSetup) -> list[tuple[str, float]]:
    """(label, η): every profile η for DDIM; the declared variance for DDPM (η unused)."""
    if setup.conv.family == "ddim":
        return [(f"eta={eta:g}", float(eta)) for eta in ctx.settings.etas]
    return [(f"variance_type={setup.conv.variance_type}", 0.0)]


def step_positions(num: int) -> list[int]:
    """First, middle and last step of a run of ``num`` steps."""
    return sorted({0, num // 2, num - 1})


def is_learned(conv: Conventions) -> bool:
    """Whether the declared variance is a model output (DDPM ``learned`` / ``learned_range``)."""
    return conv.family == "ddpm" and conv.variance_type in LEARNED_VARIANCE_TYPES


def random_predicted_variance(ctx: Any, conv: Conventions, shape: tuple[int, ...], offset: int) -> torch.Tensor | None:
    r"""A model variance output for the learned types (in the target's dtype and device), else None.

    ``learned_range``: :math:`v = \tanh(g) \in (-1, 1)` (the interpolation fraction is (v+1)/2);
    ``learned`` (diffusers' meaning, a variance): :math:`10^{-2} e^{g/2}`. g ~ N(0, 1) from ``seed + offset``.
    """
    if not is_learned(conv):
        return None
    g = ctx.randn(shape, offset, dtype=torch.float64, device="cpu")
    pv = torch.tanh(g) if conv.variance_type == "learned_range" else 1e-2 * torch.exp(0.5 * g)
    return pv.to(device=ctx.device, dtype=ctx.dtype)


def call_step(
    ctx: Any,
    setup: TargetSetup,
    model_output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    num_steps: int,
    eta: float,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    predicted_variance: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, StepCall | None]:
    """One guarded call of the target's step by the setup's :class:`~ddspec.conformance.trajectory.StepDriver`:
    ``(tensor, None)``, or ``(None, call)`` where ``call.why`` says why not and ``call.error`` is the exception.

    After a call has timed out, later calls of the same check are refused at once with that timeout.
    """
    call = setup.driver(ctx).call(model_output, t, x_t, num_steps=num_steps, eta=eta, noise=noise,
                                  generator=generator, predicted_variance=predicted_variance)
    return (call.value, None) if call.ok else (None, call)


def reference_or_why(
    setup: TargetSetup, model_output: Array, t: int, t_prev: int, x_t: Array, eta: float,
    noise: Array | None, predicted_variance: Array | None,
) -> tuple[Any, str | None]:
    r"""The reference step (float64) for the declared conventions: (StepResult, None) or (None, why).

    ``noise=None`` is replaced by zeros, so that ``prev_sample`` is the mean; ``variance`` is σ² (or
    the DDPM variance), 0 where the step is deterministic.
    """
    z = np.zeros_like(x_t) if noise is None else noise
    try:
        res = reference_step(
            setup.conv, setup.betas, model_output=model_output, t=t, t_prev=t_prev, x_t=x_t,
            noise=z, eta=eta, predicted_variance=predicted_variance,
        )
    except SingularError as exc:
        return None, f"singular: {exc}"
    except ValueError as exc:  # UnsupportedConvention included
        return None, f"unsupported: {exc}"
    return res, None


def error_bound(
    setup: TargetSetup, eta: float, t: int, t_prev: int, model_output: Array, x_t: Array,
    noise: Array | None, predicted_variance: Array | None,
) -> Array:
    r"""Per-element error bound of one step (:func:`ddspec.conformance.tolerances.step_bound`).

    The rounding term is charged at ``u_table`` = max(unit roundoff of the target's table dtype,
    of the compute dtype), not at the compute dtype alone: a target may form its coefficients
    (1 − ᾱ, square roots, σ) in its table's dtype even when the step runs in a wider one (diffusers
    does, in float32, in a float64 run). The invariant and distribution families test laws and
    contracts, not precision (the ``single_step`` checks judge precision), so they take the coarser
    of the two.
    """
    return step_bound(
        step_spec(setup.conv, eta),
        alpha_bar_t=setup.ab(t), alpha_bar_prev=setup.ab(t_prev),
        delta_t=setup.delta_at(t), delta_prev=setup.delta_at(t_prev),
        model_output=model_output, x_t=x_t, noise=noise, predicted_variance=predicted_variance,
        u_compute=setup.u_table,
    ).bound


def error_bound_envelope(
    setup: TargetSetup, eta: float, t: int, t_prev: int, model_output: Array, x_t: Array,
    z_max: float, predicted_variance: Array | None,
) -> Array:
    r"""A per-element bound valid for *every* noise value :math:`|z| \le z_{\max}`.

    :func:`~ddspec.conformance.tolerances.step_bound` is a sum of terms of the form
    :math:`|a + c z|` (and :math:`|z|`); since :math:`|a + c z| \le |a| + |c| z_{\max}
    \le |a + c z_{\max}| + |a - c z_{\max}|`, the sum of the bounds at :math:`z = \pm z_{\max}` bounds
    the error at every :math:`|z| \le z_{\max}` (conservative by at most a factor 2).
    """
    zp = np.full_like(x_t, z_max)
    return (error_bound(setup, eta, t, t_prev, model_output, x_t, zp, predicted_variance)
            + error_bound(setup, eta, t, t_prev, model_output, x_t, -zp, predicted_variance))


def reproduce_call(module: str, function: str, result_name: str, ctx: Any) -> str:
    r"""A snippet that reruns ``checks.<module>.<function>`` with the run's context and picks ``result_name``."""
    return (
        "from ddspec.conformance.context import CheckContext\n"
        f"from ddspec.conformance.checks.{module} import {function}\n"
        "# sampler = the target (a Sampler, or ddspec.conformance.adapters.adapt(<scheduler>))\n"
        f"ctx = CheckContext(sampler, device={str(ctx.device)!r}, dtype={ctx.dtype_name!r}, "
        f"profile={ctx.profile!r}, seed={ctx.seed})\n"
        f"[r for r in {function}(ctx) if r.name == {result_name!r}]"
    )
