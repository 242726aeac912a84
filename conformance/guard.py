r"""Calling code the harness does not trust: timeouts, exception descriptions, and global-RNG leaks.

A conformance harness calls code it does not trust: the target may raise, hang, return garbage, or
quietly draw from a global random number generator. This module contains that, below every check:

* :func:`call_with_timeout` runs one call in a worker thread and always returns a
  :class:`CallOutcome` (value, or error, or timeout). It never raises.
* :func:`describe_exception` turns any exception into one line (type, message, innermost frame).
* :func:`rng_state_snapshot` / :func:`rng_leaked` / :func:`restore_rng_state` detect and undo a target that
  used a global RNG (torch's CPU and CUDA default generators, numpy's legacy global ``RandomState``,
  Python's ``random``) instead of the generator it was given.

The worker-process isolation (:mod:`ddspec.conformance.sandbox`) and the check context build on these;
the runner (:mod:`ddspec.conformance.runner`) only orchestrates. This module imports nothing of the
harness, so that there is no import circle.

Timeouts and abandoned threads
------------------------------
Python cannot kill a thread. A call that runs past its timeout is *abandoned*: its daemon thread keeps
running in the background until the call returns (or the process exits), and whatever it finally
returns is dropped. It may still be using CPU or GPU time and may still change the target's state or a
global RNG. A report that contains a timeout should therefore be read as "the target hung here", and
results after it as possibly disturbed. (:mod:`ddspec.conformance.sandbox` runs the target in a worker
process instead, which can be killed.)
"""

from __future__ import annotations

import random
import sys
import threading
import time
import traceback as _traceback
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "CallOutcome",
    "call_with_timeout",
    "describe_exception",
    "one_line",
    "RngSnapshot",
    "rng_state_snapshot",
    "rng_leaked",
    "restore_rng_state",
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


#: Public names of the two text helpers (the underscored names stay for existing callers).
describe_exception = _describe_exception
one_line = _one_line
