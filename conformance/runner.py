r"""Calling a target safely, and running the checks.

A conformance harness calls code it does not trust: the target may raise, hang, return garbage, or
quietly draw from a global random number generator. This module contains that:

* :func:`call_with_timeout` runs one call in a worker thread and always returns a
  :class:`CallOutcome` (value, or error, or timeout). It never raises.
* :func:`rng_state_snapshot` / :func:`rng_leaked` detect a target that used a global RNG (torch's CPU
  and CUDA default generators, numpy's legacy global ``RandomState``, Python's ``random``) instead of
  the generator it was given.
* :func:`run_checks` runs the check functions against one target and builds the
  :class:`~ddspec.conformance.results.Report`. A check function that crashes becomes a ``fail``
  result, so that one broken check never hides the others.

Timeouts and abandoned threads
------------------------------
Python cannot kill a thread. A call that runs past its timeout is *abandoned*: its daemon thread keeps
running in the background until the call returns (or the process exits), and whatever it finally
returns is dropped. It may still be using CPU or GPU time and may still change the target's state or a
global RNG. A report that contains a timeout should therefore be read as "the target hung here", and
results after it as possibly disturbed.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import traceback as _traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

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

_MAX_ERROR_CHARS = 500


def _one_line(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    """Collapse whitespace (newlines included) and cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _describe_exception(exc: BaseException) -> str:
    """``"ValueError: bad t"``: type name and message on one line."""
    message = _one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


@dataclass(frozen=True)
class CallOutcome:
    r"""What happened when the harness called the target once.

    Attributes:
        ok: the call returned (``value`` holds the result).
        value: the return value, or None when not ``ok``.
        error: ``"<ExceptionType>: <message>"`` on one line, or ``"timed out after X s"``; None when
            ``ok``.
        traceback: the formatted traceback of the exception, or None.
        timed_out: the call ran past its timeout and was abandoned (see the module docstring).
        elapsed_s: wall time until the call returned, raised, or was abandoned.
    """

    ok: bool
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    timed_out: bool = False
    elapsed_s: float = 0.0

    def describe(self) -> str:
        """One line: ``"ok in 0.012 s"``, the error, or the timeout."""
        if self.ok:
            return f"ok in {self.elapsed_s:.3g} s"
        return self.error or "failed"


def _validate_timeout(timeout_s: Any) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise ValueError(f"timeout_s={timeout_s!r}: must be a number of seconds > 0")
    if not timeout_s > 0 or timeout_s == float("inf"):
        raise ValueError(f"timeout_s={timeout_s!r}: must be a finite number of seconds > 0")
    return float(timeout_s)


def call_with_timeout(fn: Callable[..., Any], *args: Any, timeout_s: float, **kwargs: Any) -> CallOutcome:
    r"""Call ``fn(*args, **kwargs)`` in a daemon worker thread, waiting at most ``timeout_s`` seconds.

    Never raises for anything ``fn`` does: an exception (any :class:`BaseException`, ``SystemExit``
    included) comes back as ``ok=False`` with its one-line description and traceback; a call still
    running after ``timeout_s`` comes back as ``timed_out=True`` and its thread is abandoned (see the
    module docstring). The exception is :class:`KeyboardInterrupt`, which is re-raised in the caller,
    so that Ctrl-C stops a run.

    The worker thread inherits the caller's autograd mode and current CUDA device (both are
    thread-local in torch).

    Raises:
        ValueError: ``timeout_s`` is not a finite number > 0 (a harness bug, not the target's).
    """
    timeout = _validate_timeout(timeout_s)
    box: dict[str, Any] = {}
    done = threading.Event()

    torch = sys.modules.get("torch")
    grad_enabled = torch.is_grad_enabled() if torch is not None else None
    cuda_device = None
    if torch is not None and torch.cuda.is_initialized():
        try:
            cuda_device = torch.cuda.current_device()
        except Exception:  # pragma: no cover - a broken CUDA runtime
            cuda_device = None

    def worker() -> None:
        try:
            if torch is not None:
                if cuda_device is not None:
                    torch.cuda.set_device(cuda_device)
                with torch.set_grad_enabled(bool(grad_enabled)):
                    box["value"] = fn(*args, **kwargs)
            else:
                box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the target is untrusted
            box["exc"] = exc
            box["tb"] = _traceback.format_exc()
        finally:
            done.set()

    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    thread = threading.Thread(target=worker, name=f"ddspec-call:{name}", daemon=True)
    start = time.perf_counter()
    thread.start()
    finished = done.wait(timeout)
    elapsed = time.perf_counter() - start
    if not finished:
        return CallOutcome(
            ok=False,
            error=f"timed out after {timeout:g} s (call abandoned, still running in the background)",
            timed_out=True,
            elapsed_s=elapsed,
        )
    if "exc" in box:
        exc = box["exc"]
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        return CallOutcome(
            ok=False, error=_describe_exception(exc), traceback=box["tb"], elapsed_s=elapsed
        )
    return CallOutcome(ok=True, value=box.get("value"), elapsed_s=elapsed)


# -- global RNG leaks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RngSnapshot:
    r"""The state of every global RNG a sampler might (wrongly) draw from.

    Attributes:
        torch_cpu: ``torch.get_rng_state()`` (None when torch is not imported).
        torch_cuda: ``torch.cuda.get_rng_state_all()`` when CUDA is initialised, else None.
        numpy: ``numpy.random.get_state()`` of the legacy global ``RandomState``.
        python: ``random.getstate()``.
    """

    torch_cpu: Any
    torch_cuda: tuple[Any, ...] | None
    numpy: Any
    python: Any


def rng_state_snapshot() -> RngSnapshot:
    r"""Record the global RNG states (torch CPU, torch CUDA if initialised, numpy, Python).

    Taking a snapshot does not change any of them.
    """
    torch = sys.modules.get("torch")
    torch_cpu = torch_cuda = None
    if torch is not None:
        torch_cpu = torch.get_rng_state().clone()
        if torch.cuda.is_initialized():
            torch_cuda = tuple(s.clone() for s in torch.cuda.get_rng_state_all())
    np = sys.modules.get("numpy")
    numpy_state = np.random.get_state() if np is not None else None
    return RngSnapshot(
        torch_cpu=torch_cpu, torch_cuda=torch_cuda, numpy=numpy_state, python=random.getstate()
    )


def _numpy_state_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    import numpy as np

    name_a, keys_a, pos_a, has_gauss_a, gauss_a = a
    name_b, keys_b, pos_b, has_gauss_b, gauss_b = b
    return (
        name_a == name_b
        and np.array_equal(keys_a, keys_b)
        and pos_a == pos_b
        and has_gauss_a == has_gauss_b
        and gauss_a == gauss_b
    )


def rng_leaked(before: RngSnapshot) -> str | None:
    r"""Which global RNGs changed since ``before``: e.g. ``"torch CPU global RNG, numpy global RNG"``.

    Returns None when none changed. A sampler given a ``generator`` (or explicit noise) should leave
    every global RNG untouched; a change means that it drew from one.
    """
    if not isinstance(before, RngSnapshot):
        raise ValueError(f"before={before!r}: must be an RngSnapshot from rng_state_snapshot()")
    now = rng_state_snapshot()
    changed = []
    if before.torch_cpu is not None and now.torch_cpu is not None:
        import torch

        if not torch.equal(before.torch_cpu, now.torch_cpu):
            changed.append("torch CPU global RNG")
    if now.torch_cuda is not None:
        import torch

        if before.torch_cuda is None:
            changed.append("torch CUDA global RNG (CUDA was initialised during the call)")
        elif len(before.torch_cuda) != len(now.torch_cuda) or not all(
            torch.equal(a, b) for a, b in zip(before.torch_cuda, now.torch_cuda)
        ):
            changed.append("torch CUDA global RNG")
    if not _numpy_state_equal(before.numpy, now.numpy):
        changed.append("numpy global RNG")
    if before.python != now.python:
        changed.append("python random global RNG")
    return ", ".join(changed) if changed else None


def restore_rng_state(snapshot: RngSnapshot) -> None:
    r"""Put every global RNG back to ``snapshot`` (so a leaking target cannot disturb later checks)."""
    if not isinstance(snapshot, RngSnapshot):
        raise ValueError(f"snapshot={snapshot!r}: must be an RngSnapshot from rng_state_snapshot()")
    torch = sys.modules.get("torch")
    if torch is not None and snapshot.torch_cpu is not None:
        torch.set_rng_state(snapshot.torch_cpu)
        if snapshot.torch_cuda is not None and torch.cuda.is_initialized():
            torch.cuda.set_rng_state_all(list(snapshot.torch_cuda))
    np = sys.modules.get("numpy")
    if np is not None and snapshot.numpy is not None:
        np.random.set_state(snapshot.numpy)
    random.setstate(snapshot.python)


# -- running checks ----------------------------------------------------------------------------------


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


def target_kind(sampler: Any) -> str:
    r"""``"loop"`` for a whole-loop target (:class:`~ddspec.conformance.adapters.loop.LoopSampler`, or any
    object whose ``target_kind`` attribute is ``"loop"``), else ``"step"``."""
    return "loop" if getattr(sampler, "target_kind", None) == "loop" else "step"


def select_checks(sampler: Any, checks: Sequence[Callable[..., Any]]) -> list[Callable[..., Any]]:
    r"""The checks of ``checks`` that apply to ``sampler``'s kind, in their order.

    A check function declares the kinds it serves in a ``target_kinds`` attribute (default
    ``("step",)``). A step target keeps every step check (exactly today's list); a loop target gets
    the checks that declare ``"loop"``, plus the schedule family when it exposes its tables
    (``has_tables``).
    """
    kind = target_kind(sampler)
    chosen = []
    for check in checks:
        kinds = getattr(check, "target_kinds", ("step",))
        if kind in kinds:
            chosen.append(check)
        elif kind == "loop" and _family_of(check) == "schedule" and getattr(sampler, "has_tables", False):
            chosen.append(check)
    return chosen


def run_checks(
    sampler: Any,
    context: CheckContext,
    checks: Sequence[Callable[[CheckContext], list[CheckResult]]],
    *,
    target: str | None = None,
    stream: TextIO | None = None,
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
    return replace(
        report_started, checks=tuple(results), conventions=_conventions_of(sampler, context.timeout_s),
        target_notes=_notes_of(sampler), isolation=_isolation_of(context),
    )


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
