r"""Running the checks against one target: the run plan, progress and the report.

* :func:`select_checks` picks the check functions for the target's kind (step or loop target).
* :func:`run_checks` runs them and builds the :class:`~ddspec.conformance.results.Report`. A check
  function that crashes becomes a ``fail`` result, so that one broken check never hides the others.

Calling the target safely (timeouts, exception descriptions, global-RNG leak detection) lives in
:mod:`ddspec.conformance.guard`; its names are re-exported here for existing callers.
"""


from __future__ import annotations

import sys
import time
import traceback as _traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

from .guard import (
    CallOutcome,
    RngSnapshot,
    _describe_exception,
    _one_line,
    call_with_timeout,
    restore_rng_state,
    rng_leaked,
    rng_state_snapshot,
)
from .protocol import target_kind
from .results import FAMILIES, CheckResult, Report, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from .context import CheckContext

__all__ = [
    "CallOutcome",
    "call_with_timeout",
    "RngSnapshot",
    "rng_state_snapshot",
    "rng_leaked",
    "restore_rng_state",
    "check_label",
    "installed_checks",
    "target_kind",
    "select_checks",
    "run_checks",
    "InterruptedRun",
]

def installed_checks() -> list[Callable[..., Any]]:
    r"""The check functions ``ddspec check`` runs: ``ddspec.conformance.checks.ALL_CHECKS``.

    An empty list when ``ALL_CHECKS`` is missing or empty.

    Raises:
        ModuleNotFoundError: a check module imports a package that is not installed (a broken
            installation, reported rather than silently running fewer checks).
    """
    try:
        from ddspec.conformance.checks import ALL_CHECKS
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name not in (None, "ddspec.conformance.checks"):
            raise
        return []
    return list(ALL_CHECKS or [])


def check_label(check: Callable[..., Any]) -> str:
    r"""The name a check function is known by: ``"<module's last part>.<function name>"``.

    E.g. ``check_alphas_cumprod`` in ``ddspec.conformance.checks.schedule`` is
    ``"schedule.check_alphas_cumprod"``.
    """
    name = getattr(check, "__name__", None) or type(check).__name__
    module = getattr(check, "__module__", None) or ""
    short = module.rsplit(".", 1)[-1]
    return f"{short}.{name}" if short else name


def _family_of(check: Callable[..., Any]) -> str:
    module = getattr(check, "__module__", None) or ""
    short = module.rsplit(".", 1)[-1]
    return short if short in FAMILIES else "harness"


def _crash_result(check: Callable[..., Any], message: str, tb: str | None, elapsed: float) -> CheckResult:
    details: dict[str, Any] = {"check_function": check_label(check)}
    if tb is not None:
        details["traceback"] = tb
    return CheckResult(
        name=check_label(check),
        family=_family_of(check),
        verdict=Verdict.FAIL,
        message=message,
        details=details,
        duration_s=elapsed,
    )


def _conventions_of(sampler: Any, timeout_s: float) -> dict[str, Any] | None:
    """The sampler's declared conventions as JSON data, or None if they cannot be read."""
    import dataclasses

    from .results import json_safe

    outcome = call_with_timeout(lambda: sampler.conventions, timeout_s=timeout_s)
    if not outcome.ok:
        return None
    conventions = outcome.value
    try:
        if dataclasses.is_dataclass(conventions) and not isinstance(conventions, type):
            data = dataclasses.asdict(conventions)
        elif isinstance(conventions, dict):
            data = dict(conventions)
        else:
            return None
        return json_safe(data)
    except Exception:  # noqa: BLE001 - reading the target is best effort here; checks report it
        return None


def _isolation_of(context: Any) -> str | None:
    """How the target ran (the context's ``isolation``), or None when the context cannot say."""
    try:
        value = context.isolation
    except Exception:  # noqa: BLE001 - a report is never lost for want of this label
        return None
    return value if isinstance(value, str) else None


def _notes_of(sampler: Any) -> tuple[str, ...]:
    r"""The adapter's notes on how it read the target (e.g. ``"diffusers 0.14.0 has no timestep_spacing:
    leading, as that release always did"``): its ``notes`` attribute, strings only; () when absent."""
    notes = getattr(sampler, "notes", ())
    if not isinstance(notes, (tuple, list)):
        return ()
    return tuple(n for n in notes if isinstance(n, str))


def select_checks(sampler: Any, checks: Sequence[Callable[..., Any]]) -> list[Callable[..., Any]]:
    r"""The checks of ``checks`` that apply to ``sampler``'s kind, in their order.

    A check function declares the kinds it serves in a ``target_kinds`` attribute (default
    ``("step",)``). A step target keeps every step check (exactly today's list); a loop or inversion
    target gets the checks that declare its kind, plus the schedule family when it exposes its tables
    (``has_tables``).
    """
    kind = target_kind(sampler)
    chosen = []
    for check in checks:
        kinds = getattr(check, "target_kinds", ("step",))
        if kind in kinds:
            chosen.append(check)
        elif kind != "step" and _family_of(check) == "schedule" and getattr(sampler, "has_tables", False):
            chosen.append(check)
    return chosen


def run_checks(
    sampler: Any,
    context: CheckContext,
    checks: Sequence[Callable[[CheckContext], list[CheckResult]]],
    *,
    target: str | None = None,
    stream: TextIO | None = None,
    diagnose: bool = True,
) -> Report:
    r"""Run every check function against ``sampler`` and gather the :class:`Report`.

    Only the checks that apply to the target's kind run (:func:`select_checks`: a loop target gets
    the ``loop`` family, a step target everything else). Each check is called as ``check(context)``
    and must return a list of
    :class:`~ddspec.conformance.results.CheckResult`. The runner times it; results that did not time
    themselves (``duration_s == 0``) share the function's wall time equally. A check function that
    raises (a harness bug, or a target failure the check did not catch) or returns something other
    than a list of results becomes one ``fail`` result named :func:`check_label` of the function, with
    the traceback in ``details["traceback"]``: the runner itself never raises for a check
    (:class:`KeyboardInterrupt` excepted). The global RNG states are restored after every check, so
    that a target that leaks into them cannot change what later checks see.

    Args:
        sampler: the target; must be ``context.sampler``.
        context: the :class:`~ddspec.conformance.context.CheckContext` every check receives.
        checks: the check functions, run in this order.
        target: the report's ``target`` (default: ``sampler.name``, or the type name).
        stream: where progress goes when ``context.progress`` (default: ``sys.stderr``); one line per
            result: ``[i/n] name  verdict``.
        diagnose: when some check fails, name the root causes (:mod:`ddspec.conformance.diagnosis`) in
            ``Report.diagnosis``; a run without failures never runs it.

    Raises:
        ValueError: ``context.sampler`` is not ``sampler``, or ``checks`` is not a sequence of
            callables (harness usage errors).
    """
    if context.sampler is not sampler:
        raise ValueError("sampler: must be the same object as context.sampler")
    checks = list(checks)
    for check in checks:
        if not callable(check):
            raise ValueError(f"checks: {check!r} is not callable")
    checks = select_checks(sampler, checks)
    if target is None:
        name = getattr(sampler, "name", None)
        target = name if isinstance(name, str) and name else type(sampler).__name__
    out = stream if stream is not None else sys.stderr

    report_started = Report(
        target=target,
        device=str(context.device),
        dtype=context.dtype_name,
        profile=context.profile,
        seed=context.seed,
    )
    results: list[CheckResult] = []
    try:
        _run_all(checks, context, results, out)
    except KeyboardInterrupt:
        # the user's Ctrl-C (a target's own KeyboardInterrupt is caught by ctx.call as its failure):
        # stop, but hand the checks that finished to the caller, which writes the partial report
        raise InterruptedRun(replace(report_started, checks=tuple(results), target_notes=_notes_of(sampler))) from None
    report = replace(
        report_started, checks=tuple(results), conventions=_conventions_of(sampler, context.timeout_s),
        target_notes=_notes_of(sampler), isolation=_isolation_of(context),
    )
    if diagnose and report.by_verdict(Verdict.FAIL):
        report = replace(report, diagnosis=_diagnosis_of(report, context))
    return report


def _diagnosis_of(report: Report, context: CheckContext) -> tuple[Any, ...]:
    """The diagnosis of a failing report (never raises; the global RNGs are restored afterwards)."""
    from .diagnosis import diagnose

    before = rng_state_snapshot()
    try:
        return diagnose(report, context)
    except KeyboardInterrupt:
        raise
    except Exception:  # noqa: BLE001 - diagnosis is advice; a report is never lost for it
        return ()
    finally:
        restore_rng_state(before)


class InterruptedRun(KeyboardInterrupt):
    r"""A user's Ctrl-C during :func:`run_checks`; ``report`` holds the checks that finished before it.

    A :class:`KeyboardInterrupt`, so that code that does not know it still stops; ``ddspec check``
    catches it, writes the partial report (text, JSON, JUnit, HTML) and exits 130.
    """

    def __init__(self, report: Report) -> None:
        super().__init__("interrupted")
        self.report = report


def _run_all(
    checks: list[Callable[..., Any]], context: CheckContext, results: list[CheckResult], out: TextIO
) -> None:
    """The check loop of :func:`run_checks`: appends to ``results`` as each check finishes."""
    total = len(checks)
    for index, check in enumerate(checks, start=1):
        before = rng_state_snapshot()
        start = time.perf_counter()
        try:
            produced = check(context)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a crashing check must not stop the run
            elapsed = time.perf_counter() - start
            produced = [
                _crash_result(
                    check,
                    f"the check function raised {_describe_exception(exc)}",
                    _traceback.format_exc(),
                    elapsed,
                )
            ]
        else:
            elapsed = time.perf_counter() - start
            if not isinstance(produced, (list, tuple)) or not all(
                isinstance(r, CheckResult) for r in produced
            ):
                produced = [
                    _crash_result(
                        check,
                        "the check function returned "
                        f"{_one_line(repr(produced), 120)}, not a list of CheckResult",
                        None,
                        elapsed,
                    )
                ]
            else:
                untimed = [r for r in produced if r.duration_s == 0.0]
                share = elapsed / len(untimed) if untimed else 0.0
                produced = [replace(r, duration_s=share) if r.duration_s == 0.0 else r for r in produced]
        finally:
            restore_rng_state(before)
        results.extend(produced)
        if context.progress:
            if not produced:
                print(f"[{index}/{total}] {check_label(check)}  (no results)", file=out, flush=True)
            for r in produced:
                print(f"[{index}/{total}] {r.name}  {r.verdict.value}", file=out, flush=True)
