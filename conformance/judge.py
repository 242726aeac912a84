r"""Judge: the verdict stage of the drive → expect → judge core (``/work/shared/architecture.md``).

A check family drives its target into recorded :class:`~ddspec.conformance.trajectory.Transition`\ s
(:mod:`ddspec.conformance.trajectory`, for step and loop targets alike), asks the reference for the
expected transition (:func:`ddspec.conformance.expectation.expect_transition`) and hands the pair here.
This module decides, and nothing else:

* :class:`StepTolerance` is the per-step error model of one target (the δ of its ᾱ table, the unit
  roundoff its coefficients are formed in), over :func:`ddspec.conformance.tolerances.step_bound`;
* :func:`judge_transition` compares one transition with its expectation element by element within that
  bound, into a :class:`Tally`;
* a :class:`Tally` keeps the worst findings and the calls that broke (:class:`BrokenCalls`, one entry per
  step count and reason), and :func:`tally_result` turns it into a
  :class:`~ddspec.conformance.results.CheckResult`.

The statistical judges (noisy transitions, laws) are :mod:`ddspec.conformance.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .expectation import ExpectedTransition
from .results import MAX_FINDINGS, CheckResult, Finding, Verdict
from .tolerances import StepSpec, step_bound
from .trajectory import Transition

__all__ = [
    "BrokenCalls",
    "Tally",
    "MAX_PER_STEP",
    "tally_result",
    "StepTolerance",
    "judge_transition",
    "transition_label",
]

Array = NDArray[np.float64]


@dataclass
class _BrokenEntry:
    num_steps: int | None
    reason: str
    error: str | None
    where: str | None
    step: int | None
    timestep: int | None
    info: dict[str, Any]
    calls: int = 1
    refused: int = 0


@dataclass
class BrokenCalls:
    r"""The calls of one check that gave no usable output, one entry per (step count, reason).

    A step count whose calls raise gives one entry, however many of its calls raised alike (every
    step, every point, every noise mode): a root crash is one finding, not one per call. An entry's
    finding reads ``"N=<n>: <reason> (first at <where>; <k> calls)"``. ``errors()`` is the contract
    with the report (``details["errors"]``): one ``{"num_steps", "error"}`` per distinct step count
    and exception (or timeout), ``error`` the runner's ``"<ExcType>: <message>"``; calls that failed
    without raising (a wrong shape, no tensor) are findings but not errors.
    """

    entries: dict[tuple[int | None, str], _BrokenEntry] = field(default_factory=dict)
    n_calls: int = 0

    def add(
        self, *, num_steps: int | None, reason: str, error: str | None = None, where: str | None = None,
        step: int | None = None, timestep: int | None = None, info: dict[str, Any] | None = None,
        refused: bool = False,
    ) -> None:
        r"""Record one failed call; a repeat of an entry's (step count, reason) only counts.

        ``refused``: the call was not made because an earlier one timed out (``error`` is that
        timeout); when this check recorded the timeout itself, the refusal is counted there.
        """
        self.n_calls += 1
        if refused:
            cause = next((e for e in self.entries.values() if error is not None and e.error == error), None)
            if cause is not None:
                cause.refused += 1
                return
        key = (num_steps, reason)
        entry = self.entries.get(key)
        if entry is not None:
            entry.calls += 1
            return
        self.entries[key] = _BrokenEntry(num_steps, reason, error, where, step, timestep, dict(info or {}))

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def _text(entry: _BrokenEntry) -> str:
        head = entry.reason if entry.num_steps is None else f"N={entry.num_steps}: {entry.reason}"
        extra = []
        if entry.where:
            extra.append(f"first at {entry.where}" if entry.calls > 1 else f"at {entry.where}")
        if entry.calls > 1:
            extra.append(f"{entry.calls} calls")
        if entry.refused:
            extra.append(f"{entry.refused} later call(s) not made")
        return head + (f" ({'; '.join(extra)})" if extra else "")

    def findings(self) -> list[Finding]:
        """One finding per entry, in the order they were first met."""
        return [Finding(step=e.step, timestep=e.timestep, message=self._text(e)) for e in self.entries.values()]

    def errors(self) -> list[dict[str, Any]]:
        """``details["errors"]``: ``[{"num_steps": N or None, "error": "<ExcType>: <message>"}, ...]``, distinct."""
        out: list[dict[str, Any]] = []
        for e in self.entries.values():
            item = {"num_steps": e.num_steps, "error": e.error}
            if e.error is not None and item not in out:
                out.append(item)
        return out

    def summary(self, limit: int = 3) -> str:
        """The first ``limit`` entries as text, ``"; "``-separated (and how many more)."""
        texts = [self._text(e) for e in self.entries.values()]
        more = len(texts) - limit
        return "; ".join(texts[:limit]) + (f"; and {more} more" if more > 0 else "")

    def first_info(self) -> dict[str, Any] | None:
        """The ``info`` of the first entry, or None."""
        return next(iter(self.entries.values())).info if self.entries else None


# -- comparisons -------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    ratio: float
    finding: Finding
    info: dict[str, Any]


@dataclass
class Tally:
    r"""Per-element comparisons of one check result, across every step and run it covers.

    ``compare`` records ``|got − expected|`` against a per-element bound; ``broken`` records a call
    that produced no comparable number (an exception, a timeout, a wrong shape). The worst
    :data:`~ddspec.conformance.results.MAX_FINDINGS` compared places are kept, worst first; ``info``
    travels with a finding so that the check can write a reproduce snippet for the worst one.

    Broken calls are kept apart (:class:`BrokenCalls`), one entry per step count and reason: a step
    count that cannot be run is one finding, and the numbers (``observed``, ``tolerance``,
    ``worst_ratio``) stay those of the elements that were compared, from the step counts that worked.
    """

    worst_ratio: float = 0.0
    observed: float | None = None
    tolerance: float | None = None
    n_steps: int = 0
    n_elements: int = 0
    n_exceeding: int = 0
    n_broken: int = 0
    n_unbounded: int = 0
    first_broken: str | None = None
    _worst_compared: float = 0.0
    candidates: list[_Candidate] = field(default_factory=list)
    calls: BrokenCalls = field(default_factory=BrokenCalls)
    per_step: list[dict[str, Any]] = field(default_factory=list)

    def _keep(self, ratio: float, finding: Finding, info: dict[str, Any]) -> None:
        self.candidates.append(_Candidate(ratio, finding, info))
        if len(self.candidates) > 4 * MAX_FINDINGS:
            self.candidates.sort(key=lambda c: -c.ratio)
            del self.candidates[MAX_FINDINGS:]

    def compare(
        self,
        got: np.ndarray,
        expected: np.ndarray,
        bound: np.ndarray,
        *,
        step: int | None,
        timestep: int | None,
        label: str,
        info: dict[str, Any] | None = None,
    ) -> float:
        r"""Compare one tensor; return its worst ratio ``|got − expected| / bound`` (inf for NaN/inf in got)."""
        got = np.asarray(got, dtype=np.float64)
        expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), got.shape)
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), got.shape)
        unbounded = np.isnan(bound) | np.isposinf(bound)
        if np.any(unbounded):
            # the error model gives no finite bound here (e.g. γ_k(u) = inf for a bfloat16 table of
            # many steps, times a zero derivative = NaN): nothing can be asserted beyond finiteness
            self.n_unbounded += int(np.count_nonzero(unbounded))
            bound = np.where(unbounded, np.inf, bound)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            err = np.abs(got - expected)
            ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
        ratio = np.where(np.isfinite(got), ratio, np.inf)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        self.n_steps += 1
        self.n_elements += int(got.size)
        self.n_exceeding += int(np.count_nonzero(ratio > 1.0))
        flat = ratio.ravel()
        k = min(MAX_FINDINGS, flat.size)
        order = np.argsort(-flat, kind="stable")[:k]
        for i in order:
            r = float(flat[i])
            element = tuple(int(j) for j in np.unravel_index(int(i), got.shape))
            exp_v, got_v, tol_v = float(expected[element]), float(got[element]), float(bound[element])
            status = "non-finite output" if not np.isfinite(got_v) else (
                "exceeds the tolerance" if r > 1.0 else "within the tolerance")
            finding = Finding(
                step=step, timestep=timestep, element=element, expected=exp_v, got=got_v, tolerance=tol_v,
                message=f"{label}: {status} (|got - expected| / tolerance = {r:.3g})",
            )
            self._keep(r, finding, dict(info or {}, element=element))
            if i == order[0] and (self.observed is None or r > self._worst_compared):
                self._worst_compared = r
                self.observed = abs(got_v - exp_v) if np.isfinite(got_v) else got_v
                self.tolerance = tol_v
        top = float(flat[order[0]]) if k else 0.0
        self.worst_ratio = max(self.worst_ratio, top)
        if k and len(self.per_step) < MAX_PER_STEP:
            worst = tuple(int(j) for j in np.unravel_index(int(order[0]), got.shape))
            err_w = float(err[worst]) if np.isfinite(err[worst]) else None
            self.per_step.append({"step": step, "timestep": timestep, "label": label, "error": err_w,
                                  "tolerance": float(bound[worst]) if np.isfinite(bound[worst]) else None,
                                  "ratio": top if np.isfinite(top) else None})
        return top

    def broken(
        self,
        *,
        step: int | None,
        timestep: int | None,
        message: str,
        info: dict[str, Any] | None = None,
        num_steps: int | None = None,
        error: str | None = None,
        where: str | None = None,
    ) -> None:
        r"""Record a call that gave nothing to compare; it fails the result.

        ``message`` says what went wrong (``"step raised IndexError: …"``, :func:`failed_call`),
        ``num_steps`` the step count whose run it belongs to, ``error`` the runner's
        ``"<ExcType>: <message>"`` when the call raised or hung (:attr:`TargetCaller.last_error`,
        :func:`call_error`), ``where`` the place of the call (step, timestep, …). Calls of one step
        count that fail alike (same ``message``) make one finding (:class:`BrokenCalls`).
        """
        self.n_broken += 1
        if self.first_broken is None:
            self.first_broken = message
        self.calls.add(num_steps=num_steps, reason=message, error=error, where=where, step=step,
                       timestep=timestep, info=info)

    @property
    def failed(self) -> bool:
        return self.n_broken > 0 or self.worst_ratio > 1.0

    @property
    def worst_compared_ratio(self) -> float:
        """The worst ratio among the compared elements (broken calls, which compared nothing, left out)."""
        return self._worst_compared

    def findings(self) -> tuple[Finding, ...]:
        r"""One finding per broken (step count, reason) first, then the worst compared places (those
        beyond their tolerance when the result fails, else the single worst)."""
        ordered = sorted(self.candidates, key=lambda c: -c.ratio)
        if self.failed:
            ordered = [c for c in ordered if c.ratio > 1.0]
        else:
            ordered = ordered[:1]
        out = self.calls.findings() + [c.finding for c in ordered]
        return tuple(out[:MAX_FINDINGS])

    def worst_info(self) -> dict[str, Any] | None:
        """The ``info`` of the first broken call, else of the worst compared place; None when neither."""
        if self.calls.entries:
            return self.calls.first_info()
        if not self.candidates:
            return None
        return max(self.candidates, key=lambda c: c.ratio).info


#: The most compared steps a :class:`Tally` records in ``details["per_step"]`` (the HTML report's curve).
MAX_PER_STEP = 400


def tally_result(
    name: str,
    family: str,
    tally: Tally,
    *,
    what: str,
    exceeding: str,
    within: str,
    reproduce: str | None,
    details: dict[str, Any],
) -> CheckResult:
    r"""The verdict of a :class:`Tally`: ``fail`` when a call broke or an element left its tolerance.

    The message is ``"<what>: ..."``. A failure leads with the calls that broke, one entry per step
    count and reason (``"N=1: step raised IndexError: …"``), then the ``n_exceeding`` elements beyond
    their tolerance (``exceeding`` names them) or, when none is, ``within`` for the calls that
    worked; either way with the worst ratio of the compared elements. A pass says ``within``.
    ``observed`` and ``tolerance`` are those of the worst compared element, also when a call broke
    (the verdict says fail); only when nothing at all could be compared is ``observed`` inf and
    ``tolerance`` None. The exceptions behind the broken calls go to ``details["errors"]``
    (:meth:`BrokenCalls.errors`). ``reproduce`` is attached to a failure only.
    """
    observed, tolerance = tally.observed, tally.tolerance
    if tally.failed:
        parts = []
        if tally.n_broken:
            parts.append(f"{tally.n_broken} step call(s) produced no usable output: {tally.calls.summary()}")
            if tally.n_steps == 0:
                observed, tolerance = math.inf, None
        if tally.n_exceeding:
            parts.append(f"{tally.n_exceeding} {exceeding} (worst ratio {tally.worst_compared_ratio:.3g})")
        elif tally.n_steps:
            parts.append(f"where the calls worked, {within} (worst ratio {tally.worst_compared_ratio:.3g})")
        message = f"{what}: " + "; ".join(parts)
    else:
        message = f"{what}: {within} (worst ratio {tally.worst_ratio:.3g})"
    errors = tally.calls.errors()
    if errors:
        details = dict(details, errors=errors)
    if tally.per_step and "per_step" not in details:
        details = dict(details, per_step=list(tally.per_step))
    return CheckResult(
        name=name, family=family, verdict=Verdict.FAIL if tally.failed else Verdict.PASS,
        observed=observed, tolerance=tolerance, message=message, findings=tally.findings(),
        reproduce=reproduce if tally.failed else None, details=details,
    )


# -- per-step tolerance ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTolerance:
    r"""What :func:`~ddspec.conformance.tolerances.step_bound` needs for every step of one target.

    ``alpha_bar`` is the reference ᾱ of the declared schedule; ``deltas[t]`` the relative error bound
    of the target's ᾱ_t (:func:`~ddspec.conformance.tolerances.alpha_bar_relative_bound` with
    ``u_table``); ``u_compute`` the unit roundoff of the run's dtype; ``u_step`` the unit roundoff
    the rounding term of :func:`~ddspec.conformance.tolerances.step_bound` is evaluated at,
    ``max(u_compute, u_table)``: a target forms its step coefficients (√ᾱ, β′ = 1 − ᾱ_t/ᾱ_prev, σ, …)
    from its tables, in the tables' dtype (diffusers: float32 0-d tensors, also in a float64 run), and
    those roundings are independent of one another, so the consistent perturbation of ᾱ_t and
    ᾱ_prev that the table term models does not cover them where its derivative nearly vanishes.
    """

    alpha_bar: Array
    deltas: Array
    u_table: float
    u_compute: float
    u_step: float
    table_dtype: str
    table_note: str | None
    #: the declared ``coefficient_dtype`` (its name) when one is charged in ``u_step``, else None
    coefficient_dtype: str | None = None

    def bound(
        self,
        spec: StepSpec,
        t: int,
        t_prev: int,
        *,
        model_output: np.ndarray,
        x_t: np.ndarray,
        noise: np.ndarray | None,
        predicted_variance: np.ndarray | None = None,
    ) -> np.ndarray:
        r"""Per-element tolerance of the step ``t → t_prev`` (ᾱ = 1 and δ = 0 at ``t_prev = -1``)."""
        a = float(self.alpha_bar[t])
        p = 1.0 if t_prev < 0 else float(self.alpha_bar[t_prev])
        return step_bound(
            spec,
            alpha_bar_t=a,
            alpha_bar_prev=p,
            delta_t=float(self.deltas[t]),
            delta_prev=0.0 if t_prev < 0 else float(self.deltas[t_prev]),
            model_output=model_output,
            x_t=x_t,
            noise=noise,
            predicted_variance=predicted_variance,
            u_compute=self.u_step,
        ).bound

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target_alpha_bar_table_dtype": self.table_dtype,
            "u_table": self.u_table,
            "u_compute": self.u_compute,
            "u_step": self.u_step,
        }
        if self.coefficient_dtype is not None:
            out["coefficient_dtype"] = self.coefficient_dtype
        if self.table_note:
            out["table_note"] = self.table_note
        return out


def transition_label(tr: Transition) -> str:
    """``"step k (t=… -> t_prev=…)"``: where a transition sits in its run, for messages."""
    return f"step {tr.step} (t={tr.t} -> t_prev={tr.t_prev})"


def judge_transition(
    tally: Tally,
    tol: StepTolerance,
    spec: StepSpec,
    expected: ExpectedTransition,
    *,
    num_steps: int | None = None,
    label: str | None = None,
    info: dict[str, Any] | None = None,
) -> float:
    r"""Judge one recorded transition against its expectation, exactly, within the error model.

    .. math:: |x_\mathrm{prev} - \mathbb E_\mathrm{ref}[x_\mathrm{prev} \mid x_t, \hat m, z]|
              \le \mathrm{step\_bound}(t, t_\mathrm{prev}, \hat m, x_t, z)

    element by element. The expected value is the reference's ``prev_sample`` with the transition's
    injected noise z (the mean where none was injected, or where the step adds none). A transition
    the reference cannot take (``expected.why``) is recorded as broken, never skipped silently.
    Returns the worst ratio ``|got − expected| / bound`` (inf when broken or non-finite).
    """
    tr = expected.transition
    where = transition_label(tr)
    if expected.why is not None:
        tally.broken(step=tr.step, timestep=tr.t, message=expected.why, info=info, num_steps=num_steps, where=where)
        return math.inf
    bound = tol.bound(spec, tr.t, tr.t_prev, model_output=tr.model_output, x_t=tr.x_t,
                      noise=tr.noise if expected.noisy else None, predicted_variance=tr.predicted_variance)
    head = where if num_steps is None else f"N={num_steps}, {where}"
    return tally.compare(tr.x_prev, expected.prev_sample, bound, step=tr.step, timestep=tr.t,
                         label=label or head, info=info)
