r"""The ``adapter`` family: what a library adds beyond the step protocol, judged against the reference.

Some library objects do more than a reverse step: diffusers' parallel schedulers have
``batch_step_no_noise`` (many timesteps in one batch), an inverse scheduler (or improved-diffusion's
``ddim_reverse_sample``) runs DDIM backwards, and the pipelines post-process the final state to [0, 1]
and uint8. Their adapters only *drive* the library: a duck-typed ``recordings(dtype=, steps=, seed=)``
method returns :mod:`ddspec.conformance.records` (recorded transitions, or a pipeline's outputs). This
module *judges* them, over the drive → expect → judge core (``/work/shared/architecture.md``); it never
imports an adapter:

* ``single_step.batch_step_no_noise.N=<n>[,eta=<e>]``: every element against the reference step's mean
  (:func:`~ddspec.conformance.expectation.expect_transition`: Ho et al. 2020 eq. 7, Song et al. 2021 eq. 12
  without σz) from its timestep to the list's next one, within the step error model
  (:class:`~ddspec.conformance.judge.StepTolerance`);
* ``single_step.inversion.N=<n>`` (a scheduler) and ``loop.inversion.N=<n>`` (a library loop): every
  step against :func:`~ddspec.conformance.expectation.expect_inversion_transition` (Song et al. 2021 eq. 12
  with σ = 0 run towards noisier indices) from the declared source; the first step from the data has its
  own bound (:func:`~ddspec.conformance.tolerances.inversion_from_data_bound`);
* ``loop.postprocess.unit`` / ``loop.postprocess.uint8``: a pipeline's [0, 1] and uint8 outputs against
  :math:`\mathrm{clip}((x+1)/2, 0, 1)` and :func:`ddspec.reference.postprocess.to_uint8`.

Where the library steps to (or from) ``t ∓ library_stride`` instead of the listed neighbour, the result
says at which steps. The runner's call of ``recordings`` goes through
:meth:`~ddspec.conformance.context.CheckContext.call`, so an exception or a hang of the library becomes
one failed result ``adapter.extra_checks``, never a crash of the run. A target without the method gets
no result from here.

The conveniences :func:`check_batch_step_no_noise`, :func:`check_inversion`, :func:`check_reverse_sample`
and :func:`check_postprocess` drive through the adapter object they are given (duck-typed) and judge here.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.postprocess import to_uint8

from ..context import CheckContext
from ..expectation import (
    UnsupportedConvention,
    expect_inversion_transition,
    expect_transition,
    reference_betas,
    step_spec,
    zero_snr_original,
)
from ..judge import StepTolerance, Tally, judge_transition, tally_result, transition_label
from ..protocol import supported_num_steps
from ..records import PostprocessRecord, StepRecord
from ..results import CheckResult, Finding, Verdict
from ..tolerances import (
    UNIT_ROUNDOFF,
    alpha_bar_relative_bound,
    inversion_from_data_bound,
    table_roundoff,
    unit_roundoff,
)

__all__ = [
    "CHECKS",
    "EXTRA_MAX_STEPS",
    "check_adapter_extras",
    "judge_record",
    "judge_step_record",
    "judge_postprocess_record",
    "record_tolerance",
    "check_batch_step_no_noise",
    "check_inversion",
    "check_reverse_sample",
    "check_postprocess",
]

FAMILY = "adapter"
#: The largest profile step count the adapter checks run at (they drive whole batches of timesteps).
EXTRA_MAX_STEPS = 50
#: ᾱ floor of an inversion's destination in the error model: a zero-terminal-SNR ᾱ of exactly 0 would
#: divide by zero in the σ(η) term of :func:`~ddspec.conformance.tolerances.step_bound`, which η = 0
#: multiplies away; a tiny positive value keeps it finite.
_ALPHA_BAR_FLOOR = 1e-300

Array = NDArray[np.float64]


# -- the error model of a record ---------------------------------------------------------------------


def _dtype_of(u: float) -> str:
    return next((name for name, value in UNIT_ROUNDOFF.items() if value == u), f"u={u:g}")


def record_tolerance(record: StepRecord, betas: Array) -> StepTolerance:
    r"""The :class:`~ddspec.conformance.judge.StepTolerance` of a record's target.

    The target's ᾱ table is judged as a running product in the dtype it is stored in
    (:func:`~ddspec.conformance.tolerances.table_roundoff`). Without a declared ``coefficient_dtype``
    the target forms its step coefficients from that table in the table's dtype or the run's, whichever
    is wider in roundoff: ``u_table = u_step = max(u_table, u_compute)`` (diffusers' float32 0-d
    tensors). With one, the table keeps its own precision and each coefficient is rounded once to
    ``coefficient_dtype``: ``u_step = max(u_table, u_compute, u_coefficient)`` (improved-diffusion's
    float64 tables and ``.float()`` coefficients). For an inversion, whose destination may be a
    zero-terminal-SNR ᾱ of exactly 0, ᾱ is floored at 1e-300 in the error model only.
    """
    conv = record.conventions
    u_compute = unit_roundoff(record.dtype)
    table = record.alphas_cumprod
    u_tab = table_roundoff(np.asarray(table, dtype=np.float64)) if table is not None else u_compute
    if record.coefficient_dtype is None:
        u_table = max(u_tab, u_compute)
        u_step = u_table
    else:
        u_table = u_tab
        u_step = max(u_tab, u_compute, unit_roundoff(record.coefficient_dtype))
    deltas = alpha_bar_relative_bound(betas, conv.beta_schedule, u_table, zero_snr_original=zero_snr_original(conv))
    ab = ref_alphas.alpha_bar(betas)
    if record.kind == "inversion":
        ab = np.maximum(ab, _ALPHA_BAR_FLOOR)
    note = None if table is not None else "the target's alphas_cumprod was not recorded; u_table = u_compute assumed"
    return StepTolerance(ab, deltas, u_table, u_compute, u_step, _dtype_of(u_table), note)


# -- the step records --------------------------------------------------------------------------------


def _moved(record: StepRecord) -> list[tuple[int, int, int]]:
    r"""``(t, listed, used)`` for each transition whose other end is not where the library's stride puts it.

    Reverse steps: the library steps from t to ``max(t − stride, −1)``; inversion steps: it steps to t
    from ``t − stride``. The last reverse step to 0 of the ᾱ₀ variant and an inversion's first step from
    a negative index (the data, or ᾱ₀) are where the library's own end rule applies, not the stride.
    """
    stride = record.library_stride
    if stride is None:
        return []
    out = []
    for tr in record.transitions:
        if record.kind == "batch_step_no_noise":
            used = tr.t - stride
            if max(used, -1) != tr.t_prev and not (tr.t_prev == 0 and not record.conventions.final_alpha_bar_is_one):
                out.append((tr.t, tr.t_prev, used))
        else:
            used = tr.t_prev - stride
            if max(used, -1) != tr.t and not (tr.step == 0 and used < 0):
                out.append((tr.t_prev, tr.t, used))
    return out


def _first_nonfinite(record: StepRecord) -> int | None:
    for tr in record.transitions:
        if not (np.all(np.isfinite(tr.x_t)) and np.all(np.isfinite(tr.model_output))):
            return tr.step
    return None


def _judge_batch(record: StepRecord, betas: Array, tol: StepTolerance, tally: Tally) -> None:
    """Each reverse step against the reference step's mean (no noise was injected: z = 0)."""
    spec = step_spec(record.conventions, record.eta)
    for tr in record.transitions:
        expected = expect_transition(record.conventions, betas, tr, record.eta)
        judge_transition(tally, tol, spec, expected, num_steps=record.num_steps)


def _judge_inversion(record: StepRecord, betas: Array, tol: StepTolerance, tally: Tally) -> tuple[list[str], dict[str, Any]]:
    """Each inversion step against eq. 12 (σ = 0) run backwards; returns notes for the message and details."""
    conv = record.conventions
    spec = replace(step_spec(conv, 0.0), prediction_type="epsilon")  # judged on the ε̂ the step uses
    extra: list[str] = []
    singular: list[int] = []
    clipped = 0
    stop = _first_nonfinite(record)
    for tr in record.transitions:
        if stop is not None and tr.step >= stop:
            tally.broken(step=tr.step, timestep=tr.t, num_steps=record.num_steps, where=transition_label(tr),
                         message=f"the state or model output is non-finite from step {stop} on; later steps not compared")
            break
        inv = expect_inversion_transition(conv, betas, tr)
        exp = inv.expected
        clipped += int(inv.clipped)
        if exp.why_kind == "singular":
            bad = int(np.sum(~np.isfinite(tr.x_prev)))
            singular.append(bad)
            if bad:  # a non-finite output where the reference is singular: never silent
                tally.broken(step=tr.step, timestep=tr.t, num_steps=record.num_steps, where=transition_label(tr),
                             message=f"{exp.why}; the library returned {bad} non-finite value(s) there")
            continue
        if exp.why is not None or tr.t >= 0:
            judge_transition(tally, tol, spec, exp, num_steps=record.num_steps,
                             label=f"N={record.num_steps}, inversion step {tr.step} (from t={tr.t} to t={tr.t_prev})")
            continue
        bound = inversion_from_data_bound(float(tol.alpha_bar[tr.t_prev]), float(tol.deltas[tr.t_prev]), tol.u_step,
                                          tr.x_t, exp.transition.model_output)
        tally.compare(tr.x_prev, exp.prev_sample, bound, step=tr.step, timestep=tr.t,
                      label=f"N={record.num_steps}, inversion step {tr.step} (from the data to t={tr.t_prev})")
    if singular and not any(singular):
        extra.append("the first step from the data is singular for x0-prediction (eps = (x - x0)/sqrt(1 - 1)); the "
                     "library returned finite values there, not compared")
    if clipped:
        extra.append(f"x0 clipping bound in {clipped} step(s); compared with the clipped reference")
    return extra, {"singular_nonfinite": singular, "clipped_steps": clipped}


def judge_step_record(record: StepRecord) -> CheckResult:
    r"""The verdict on a :class:`~ddspec.conformance.records.StepRecord`: every recorded transition against the
    reference, element by element, within the step error model.

    ``batch_step_no_noise``:

    .. math:: |x_\mathrm{prev} - \mu_\mathrm{ref}(x_t, \hat m; t, t_\mathrm{prev})| \le \mathrm{step\_bound}

    (Ho et al. 2020 eq. 7, posterior mean; Song et al. 2021 eq. 12 without σz); ``inversion``:

    .. math:: |x_{t_\mathrm{to}} - (\sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\hat\epsilon)| \le \mathrm{bound}

    (Song et al. 2021 eq. 12 with σ = 0, §4.3), the bound of an ε-prediction DDIM step on the ε̂ used, or
    :func:`~ddspec.conformance.tolerances.inversion_from_data_bound` from the data. Index convention:
    0-based, −1 the data; a finding's ``timestep`` is the transition's ``t`` (for an inversion, its source).
    Unsupported conventions give ``unsupported``; a record the adapter did not drive,
    ``skipped``.
    """
    start = time.perf_counter()
    conv, name, family = record.conventions, record.name, record.family
    if conv.unsupported:
        return CheckResult.unsupported(name, family, "; ".join(conv.unsupported))
    if record.skipped:
        return CheckResult.skipped(name, family, record.skipped)
    if not record.transitions:
        return CheckResult.skipped(name, family, f"{record.what}: nothing was recorded")
    try:
        betas = reference_betas(conv)
    except UnsupportedConvention as exc:
        return CheckResult.unsupported(name, family, str(exc))
    tol = record_tolerance(record, betas)
    tally = Tally()
    details: dict[str, Any] = {"transitions": len(record.transitions), **tol.details()}
    extra: list[str] = []
    if record.kind == "batch_step_no_noise":
        _judge_batch(record, betas, tol, tally)
    else:
        extra, more = _judge_inversion(record, betas, tol, tally)
        details.update(more)
    if tally.n_steps == 0 and tally.n_broken == 0:
        return CheckResult.skipped(name, family, f"{record.what}: nothing to compare; " + "; ".join(extra))
    result = tally_result(name, family, tally, what=record.what,
                          exceeding="element(s) beyond the step error model",
                          within=f"all {tally.n_elements} elements of {tally.n_steps} transitions within the step error model",
                          reproduce=record.reproduce, details=details)
    worst = next((f for f in result.findings if f.expected is not None), None)
    if result.verdict == Verdict.FAIL and worst is not None:
        extra.insert(0, f"worst at step {worst.step} (t={worst.timestep}, element {worst.element}): expected "
                        f"{worst.expected!r}, got {worst.got!r}, tolerance {worst.tolerance:.3g}")
    moved = _moved(record)
    if moved:
        t, listed, used = moved[0]
        key = "prev_t_minus_stride" if record.kind == "batch_step_no_noise" else "moved"
        if record.kind == "batch_step_no_noise":
            text = (f"batch_step_no_noise steps to t - T//N (T//N = {record.library_stride}), not to the next listed "
                    f"timestep, at {len(moved)} of {len(record.transitions)} timesteps (first: {t} -> {used}, listed {listed})")
        else:
            text = (f"the library steps from t - T//N (T//N = {record.library_stride}), not from the previous listed "
                    f"timestep, at {len(moved)} of {record.timesteps.size} steps (first: to {t} from {used}, listed {listed})")
        extra = [text, *extra]
        result = replace(result, details={**result.details, key: [list(m) for m in moved]})
    if extra:
        result = replace(result, message=result.message + "; " + "; ".join(extra))
    return replace(result, duration_s=time.perf_counter() - start)


# -- post-processing ---------------------------------------------------------------------------------


def judge_postprocess_record(record: PostprocessRecord) -> list[CheckResult]:
    r"""A pipeline's output maps against the reference, on the state it really produced.

    * ``loop.postprocess.unit``: the library's [0, 1] output vs the exact
      :math:`\mathrm{clip}((x+1)/2, 0, 1)` (Ho et al. 2020 §3.3), tolerance 2u (u the unit roundoff of the
      run's dtype: the result is at most 1 and x/2 is exact, so one rounding of the sum and one of the
      clamp's operand);
    * ``loop.postprocess.uint8``: the library's pixels vs :func:`ddspec.reference.postprocess.to_uint8`
      with the declared ``rounding``, exact, except for elements whose exact 127.5(x + 1) lies within
      256·4u of a rounding boundary k + ½, where the library's float32 arithmetic decides (counted, not
      judged).
    """
    u = unit_roundoff(record.dtype)
    exact = np.clip((record.state + 1.0) / 2.0, 0.0, 1.0)
    err = np.abs(record.unit - exact)
    tol = 2.0 * u
    j = np.unravel_index(int(np.argmax(np.where(np.isfinite(err), err, np.inf))), err.shape)
    worst = float(err[j]) if np.isfinite(err[j]) else float("inf")
    share = float(np.mean((record.state < -1) | (record.state > 1)))
    unit_ok = bool(worst <= tol)
    results = [CheckResult(
        name="loop.postprocess.unit", family="loop", verdict=Verdict.PASS if unit_ok else Verdict.FAIL,
        observed=worst, tolerance=tol,
        message=(f"{record.unit_expression} vs clip((x + 1)/2, 0, 1) over {err.size} elements ({share:.0%} outside "
                 f"[-1, 1]): worst error {worst:.3g} at element {tuple(int(i) for i in j)} "
                 f"(expected {float(exact[j])!r}, got {float(record.unit[j])!r}), tolerance {tol:.3g}"),
        findings=(Finding(element=tuple(int(i) for i in j), expected=float(exact[j]), got=float(record.unit[j]),
                          tolerance=tol, message="[0, 1] output"),),
        reproduce=record.reproduce_unit, details={"outside_share": share})]
    expected_px = to_uint8(record.state, rounding=record.rounding)
    y = 127.5 * (record.state + 1.0)
    edge = np.abs(y - np.floor(y) - 0.5) <= 256 * 4 * max(u, UNIT_ROUNDOFF["float32"])
    differ = (record.pixels != expected_px) & ~edge
    n_bad = int(differ.sum())
    if n_bad:
        k = np.unravel_index(int(np.argmax(differ)), differ.shape)
        finding = Finding(element=tuple(int(i) for i in k), expected=float(expected_px[k]), got=float(record.pixels[k]),
                          tolerance=0.0, message=f"x = {float(record.state[k])!r}")
        msg = (f"{n_bad} of {differ.size} pixels differ from to_uint8(x, rounding={record.rounding!r}); first at "
               f"{finding.element}: expected {int(expected_px[k])}, got {int(record.pixels[k])} (x = {float(record.state[k])!r})")
    else:
        finding = Finding(message="all pixels equal")
        msg = (f"the library's pixels equal to_uint8(x, rounding={record.rounding!r}) at all "
               f"{differ.size - int(edge.sum())} judged elements ({int(edge.sum())} within 256*4u of a half-integer, "
               "where float32 rounding decides, not judged)")
    results.append(CheckResult(name="loop.postprocess.uint8", family="loop", verdict=Verdict.FAIL if n_bad else Verdict.PASS,
                               observed=float(n_bad), tolerance=0.0, message=msg, findings=(finding,),
                               reproduce=record.reproduce_pixels))
    return results


def judge_record(record: Any) -> list[CheckResult]:
    """The results of one record: a :class:`StepRecord` gives one, a :class:`PostprocessRecord` two.

    Raises:
        TypeError: ``record`` is neither (naming its type).
    """
    if isinstance(record, StepRecord):
        return [judge_step_record(record)]
    if isinstance(record, PostprocessRecord):
        return judge_postprocess_record(record)
    raise TypeError(f"record={type(record).__name__}: expected a ddspec.conformance.records StepRecord or PostprocessRecord")


# -- the runner's check ------------------------------------------------------------------------------


def _steps(ctx: CheckContext) -> tuple[int, ...]:
    """Up to three profile N ≤ :data:`EXTRA_MAX_STEPS` that the target supports (its ``supported_num_steps``)."""
    support = supported_num_steps(ctx.sampler)
    small = [n for n in support.choose(ctx.steps, EXTRA_MAX_STEPS).counts]
    return tuple(small[:3]) or (1,)


def _failed(message: str, start: float, error: str | None = None) -> CheckResult:
    return CheckResult(name="adapter.extra_checks", family=FAMILY, verdict=Verdict.FAIL, message=message,
                       findings=(Finding(message=error or message),), duration_s=time.perf_counter() - start,
                       details={"errors": [{"num_steps": None, "error": error}]} if error else {})


def check_adapter_extras(ctx: CheckContext) -> list[CheckResult]:
    r"""The adapter's ``recordings`` at up to three profile step counts ≤ :data:`EXTRA_MAX_STEPS`, judged here."""
    start = time.perf_counter()
    fn: Any = getattr(ctx.sampler, "recordings", None)
    if not callable(fn):
        return []
    chosen = ctx.call(lambda: _steps(ctx))
    if not chosen.ok:
        return [_failed(f"the target's supported_num_steps is not usable: {chosen.describe()}", start)]
    steps = chosen.value
    outcome = ctx.call(fn, dtype=ctx.dtype, steps=steps, seed=int(ctx.seed))
    if not outcome.ok:
        return [_failed(f"the adapter's recordings(steps={steps}) failed: {outcome.describe()}", start, outcome.describe())]
    value = outcome.value
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, (StepRecord, PostprocessRecord)) for r in value):
        return [_failed(f"the adapter's recordings returned {type(value).__name__}, not a list of StepRecord / "
                        "PostprocessRecord (ddspec.conformance.records)", start)]
    return [r for record in value for r in judge_record(record)]


check_adapter_extras.target_kinds = ("step", "loop", "inversion")  # type: ignore[attr-defined]

CHECKS: list = [check_adapter_extras]


# -- conveniences: drive through the adapter given, judge here -----------------------------------------


def _recorder(obj: Any, method: str, arg: str, hint: str) -> Callable[..., Any]:
    fn = getattr(obj, method, None)
    if not callable(fn):
        raise TypeError(f"{arg}={type(obj).__name__}: has no {method}() method; {hint}")
    return fn


def check_batch_step_no_noise(adapter: Any, num_steps: int, *,
                              model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                              eta: float = 0.0, dtype: torch.dtype = torch.float32, seed: int = 0,
                              per_timestep: int = 2) -> CheckResult:
    r"""``scheduler.batch_step_no_noise`` for one batch holding every timestep of the N-step list.

    Drives ``adapter.record_batch_step_no_noise(...)`` (diffusers' ``DDPMParallelScheduler`` /
    ``DDIMParallelScheduler`` adapters) and judges the record (:func:`judge_step_record`): each element
    against the reference mean from its timestep to the list's next (Ho et al. 2020 eq. 7; Song et al.
    2021 eq. 12 without σz). Returns ``single_step.batch_step_no_noise.N=<n>[,eta=<e>]``.

    Raises:
        TypeError: ``adapter`` cannot record ``batch_step_no_noise``.
    """
    fn = _recorder(adapter, "record_batch_step_no_noise", "adapter",
                   "expected a DiffusersDDPMParallelAdapter / DiffusersDDIMParallelAdapter")
    return judge_step_record(fn(num_steps, model=model, eta=eta, dtype=dtype, seed=seed, per_timestep=per_timestep))


def check_inversion(adapter: Any, num_steps: int | None = None, *,
                    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    x0: torch.Tensor | None = None, dtype: torch.dtype | str = torch.float32, seed: int = 0) -> CheckResult:
    r"""Every step of an N-step inversion against the reference DDIM inversion.

    .. math:: x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\hat\epsilon

    from the declared source index (Song et al. 2021 eq. 12, σ = 0, §4.3). Drives
    ``adapter.record_inversion(...)`` (diffusers' ``DiffusersInverseAdapter``, or improved-diffusion's
    ``reverse_sample_target(diffusion)``) and judges the record (:func:`judge_step_record`). Returns
    ``single_step.inversion.N=<n>`` (a scheduler) or ``loop.inversion.N=<n>`` (a library loop).

    Raises:
        TypeError: ``adapter`` cannot record an inversion.
    """
    fn = _recorder(adapter, "record_inversion", "adapter",
                   "expected a DiffusersInverseAdapter or adapters.improved_diffusion.reverse_sample_target(diffusion)")
    kwargs: dict[str, Any] = {"dtype": dtype, "seed": seed}
    if model is not None:
        kwargs["model"] = model
    if x0 is not None:
        kwargs["x0"] = x0
    return judge_step_record(fn(num_steps, **kwargs))


def check_reverse_sample(target: Any, *, num_steps: int | None = None, dtype: str = "float32", seed: int = 0,
                         batch: int = 8) -> CheckResult:
    r"""improved-/guided-diffusion's ``ddim_reverse_sample`` against the reference inversion, step by step.

    ``target`` is ``adapters.improved_diffusion.reverse_sample_target(diffusion)``. Each step
    :math:`x_{\tau_k} \to x_{\tau_{k+1}}` (the model called at the **source** index, η = 0,
    ``clip_denoised=False``) is compared with Song et al. 2021 eq. 12 with σ = 0 run towards noisier
    indices, fed the same ε̂, within the error model of a DDIM step with float32 coefficients. Returns
    ``loop.inversion.N=<n>`` (N: the object's own when None).

    Raises:
        TypeError: ``target`` cannot record ``ddim_reverse_sample`` (a raw diffusion object: wrap it).
    """
    fn = _recorder(target, "record_inversion", "target",
                   "wrap the diffusion with adapters.improved_diffusion.reverse_sample_target(diffusion)")
    return judge_step_record(fn(num_steps, dtype=dtype, seed=seed, batch=batch))


def check_postprocess(loop: Any, *, num_steps: int = 10, dtype: torch.dtype = torch.float32, seed: int = 0,
                      batch: int = 64) -> list[CheckResult]:
    r"""A pipeline's [0, 1] and uint8 outputs against the reference (:func:`judge_postprocess_record`).

    Drives ``loop.record_postprocess(...)`` (diffusers' ``DiffusersPipelineLoop``). Returns
    ``[loop.postprocess.unit, loop.postprocess.uint8]``.

    Raises:
        TypeError: ``loop`` cannot record its post-processing.
    """
    fn = _recorder(loop, "record_postprocess", "loop", "expected a DiffusersPipelineLoop")
    return judge_postprocess_record(fn(num_steps=num_steps, dtype=dtype, seed=seed, batch=batch))
