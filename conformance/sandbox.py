r"""The sandbox: the target runs in a supervised worker process, and its global state is watched.

A conformance gate must not be fooled by the code it judges. A target that ends its process
(``os._exit``, a segfault in a native kernel, an out-of-memory kill), hangs, raises
``KeyboardInterrupt`` or ``SystemExit``, leaves a thread running, or changes torch's global state
must come out as a failure, never as a pass or a half-written report. This module contains that.

Isolation (the default of ``ddspec check`` and of the pytest plugin)
--------------------------------------------------------------------
:func:`isolate` wraps a loaded target in a :class:`WorkerSampler`: a proxy with the target's public
members (``name``, ``conventions``, ``betas()``, ``alphas_cumprod()``, ``timesteps(N)``,
``step(...)``, and any other attribute a check reads) that forwards every member access over a pipe
to a worker process holding the real target. The parent keeps the plan, the reference, the judging
and the report; the checks are unchanged, since they reach the target only through
``ctx.sampler`` and :meth:`~ddspec.conformance.context.CheckContext.call`.

* **Calls and timeouts.** In isolation, :meth:`CheckContext.call` runs its callable in the calling
  thread (no helper thread) with a deadline of ``timeout_s``; each forwarded member access waits for
  the worker's answer until that deadline. A call past it is a timed-out
  :class:`~ddspec.conformance.guard.CallOutcome`, the worker is killed (``SIGKILL``), and a fresh one
  is started for the next call: nothing is abandoned.
* **Deaths.** A worker that dies during a call (any exit code, a signal, an OOM kill) makes that
  call a failed outcome, ``"WorkerDied: the target ended the worker process with exit code 0 during
  step(t=700, num_steps=10, eta=0) in single_step.check_…"``, and a fresh worker serves the next
  call. After :data:`MAX_RESTARTS` deaths or kills the target is not started again and every further
  call fails at once, saying so (a target that dies on every call cannot make a run take forever).
* **Exceptions.** The worker catches every :class:`BaseException` of the target. ``SystemExit`` is
  described as it is (``"SystemExit: 0"``); ``KeyboardInterrupt`` raised by the target becomes
  ``"TargetInterrupt: the target raised KeyboardInterrupt"``, a failure of the target, not a user's
  Ctrl-C. The worker ignores ``SIGINT``: a user's Ctrl-C reaches the parent, which stops the run.
* **Tensors.** Arguments and results travel pickled (:mod:`pickle`; torch tensors pickle by value).
  What a call does to its arguments comes back: a tensor argument the target modified is copied
  into the caller's tensor (so ``invariants.no_input_mutation`` sees it), and a ``torch.Generator``
  argument gets the state the target left it in. The global RNGs (torch CPU and CUDA, numpy's
  legacy global, Python's ``random``) are kept in step both ways: the caller's states go to the
  worker before a call when they changed, and a change the target made comes back to the caller, so
  ``invariants.no_global_rng`` judges an isolated target exactly as an in-process one.
* **Start method.** CPU targets are *forked* from the parent after it loaded them: starting (and
  restarting) a worker takes tens of milliseconds and needs nothing picklable. GNU OpenMP cannot run
  a parallel region in a child forked after its parent used one, so a forked worker runs torch with
  one intra-op thread (``torch.set_num_threads(1)``). CUDA targets are *spawned* (forking after CUDA
  is initialised is unsafe): the worker re-loads the target from its ``module:attr`` spec (or
  unpickles it), which takes seconds, and keeps torch's thread count. CUDA tensors travel through
  the CPU (pickling copies them), and arrive on the same device.
* **Memory.** ``max_memory`` (bytes; ``--max-memory``) limits how far the worker's address space may
  grow beyond its size at start (``RLIMIT_AS``). An allocation past it raises in the target (a
  ``MemoryError`` or torch's ``can't allocate memory``) or ends the process; either way the call
  fails and the message names the limit.
* **Loop targets** (:class:`~ddspec.conformance.adapters.loop.LoopSampler`) are driven in-process:
  their model is the harness's recording probe, which lives in the parent. :func:`isolate` returns
  them unchanged and :func:`isolation_of` says so.

Global state
------------
Around every call into the target (in the worker, or in the calling thread with ``--in-process``)
:func:`torch_state_snapshot` records torch's global settings (:data:`STATE_FIELDS`: the default
dtype, grad mode, the number of intra-op threads, the deterministic-algorithms flag, the TF32 flags
and the float32 matmul precision) and the threads alive. A call that changes a setting, or returns
leaving a thread of its own running, is recorded in a :class:`StateLog` (what changed, in which
call, during which check) and the settings are restored at once; a worker left with a thread of the
target's running is replaced before the next call. ``invariants.no_global_state_change``
(:mod:`ddspec.conformance.checks.global_state`) reports the log. The global RNGs are left to
``invariants.no_global_rng``.

``--in-process`` keeps the target in the harness's process (for pdb): calls run in a helper thread
with :func:`~ddspec.conformance.guard.call_with_timeout` (a hung call is abandoned, not killed),
global state is watched the same way, and a target's ``KeyboardInterrupt`` is still told apart from
a user's Ctrl-C (it is raised in the helper thread, a Ctrl-C in the main thread). A target that ends
the process still ends the run there.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import random
import re
import signal
import sys
import threading
import time
import traceback as _traceback
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from .guard import CallOutcome, _describe_exception, _one_line, call_with_timeout
from .protocol import target_kind

__all__ = [
    "ISOLATION_MODES",
    "MAX_RESTARTS",
    "STATE_FIELDS",
    "StateChange",
    "StateLog",
    "TargetInterrupt",
    "WorkerSampler",
    "call_in_process",
    "call_isolated",
    "current_check",
    "describe_call",
    "describe_memory",
    "isolate",
    "isolation_of",
    "parse_memory",
    "restore_torch_state",
    "state_differences",
    "torch_state_snapshot",
]

#: ``"process"`` (a supervised worker process, the default of the CLI and the pytest plugin) or
#: ``"in-process"`` (the target runs in the harness's process, for debugging).
ISOLATION_MODES: tuple[str, ...] = ("process", "in-process")

#: How many times a target's worker is restarted (after deaths, kills on timeout, or threads left
#: running) before the target is given up: every later call then fails at once.
MAX_RESTARTS = 24

#: The torch global settings watched around every call, in the order they are reported.
STATE_FIELDS: tuple[str, ...] = (
    "default dtype",
    "grad mode",
    "number of threads",
    "deterministic algorithms",
    "TF32 matmul (torch.backends.cuda.matmul.allow_tf32)",
    "TF32 cuDNN (torch.backends.cudnn.allow_tf32)",
    "float32 matmul precision",
)

#: How long a spawned worker may take to import torch and load the target (a forked one: a quarter).
STARTUP_TIMEOUT_S = 120.0

_HARNESS_THREAD_PREFIX = "ddspec-call:"


# ---------------------------------------------------------------------------------------------------
# Global state
# ---------------------------------------------------------------------------------------------------


def torch_state_snapshot() -> dict[str, Any]:
    r"""torch's global settings (:data:`STATE_FIELDS` -> value); empty when torch is not imported.

    Grad mode is thread-local in torch: the snapshot is the calling thread's.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    return {
        STATE_FIELDS[0]: torch.get_default_dtype(),
        STATE_FIELDS[1]: torch.is_grad_enabled(),
        STATE_FIELDS[2]: torch.get_num_threads(),
        STATE_FIELDS[3]: (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled()),
        STATE_FIELDS[4]: bool(torch.backends.cuda.matmul.allow_tf32),
        STATE_FIELDS[5]: bool(torch.backends.cudnn.allow_tf32),
        STATE_FIELDS[6]: torch.get_float32_matmul_precision(),
    }


def _show(key: str, value: Any) -> str:
    if key == STATE_FIELDS[3]:
        on, warn_only = value
        return ("on (warn only)" if warn_only else "on") if on else "off"
    return str(value)


def state_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    r"""``["default dtype: torch.float32 -> torch.float64", ...]``: the settings that differ."""
    return [f"{key}: {_show(key, before[key])} -> {_show(key, after.get(key))}"
            for key in STATE_FIELDS if key in before and before[key] != after.get(key)]


def restore_torch_state(snapshot: dict[str, Any]) -> None:
    r"""Put torch's global settings back to ``snapshot`` (from :func:`torch_state_snapshot`)."""
    torch = sys.modules.get("torch")
    if torch is None or not snapshot:
        return
    now = torch_state_snapshot()
    if now[STATE_FIELDS[0]] != snapshot[STATE_FIELDS[0]]:
        torch.set_default_dtype(snapshot[STATE_FIELDS[0]])
    if now[STATE_FIELDS[1]] != snapshot[STATE_FIELDS[1]]:
        torch.set_grad_enabled(snapshot[STATE_FIELDS[1]])
    if now[STATE_FIELDS[2]] != snapshot[STATE_FIELDS[2]]:
        torch.set_num_threads(snapshot[STATE_FIELDS[2]])
    if now[STATE_FIELDS[3]] != snapshot[STATE_FIELDS[3]]:
        on, warn_only = snapshot[STATE_FIELDS[3]]
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
    torch.backends.cuda.matmul.allow_tf32 = snapshot[STATE_FIELDS[4]]
    torch.backends.cudnn.allow_tf32 = snapshot[STATE_FIELDS[5]]
    if now[STATE_FIELDS[6]] != snapshot[STATE_FIELDS[6]]:
        torch.set_float32_matmul_precision(snapshot[STATE_FIELDS[6]])


def _threads_left(before: set[threading.Thread]) -> list[str]:
    """The threads started since ``before`` that are still running (the harness's own excepted)."""
    return [f"{t.name!r}" + (" (daemon)" if t.daemon else "") for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(_HARNESS_THREAD_PREFIX)]


@dataclass(frozen=True)
class StateChange:
    r"""One call into the target that changed torch's global state.

    Attributes:
        index: the call's number in the run (1-based).
        call: what was called, e.g. ``"step(t=700, num_steps=10, eta=0)"``.
        check: the check function in progress (``"single_step.check_step"``), or None.
        changes: what changed, e.g. ``("default dtype: torch.float32 -> torch.float64",)``, and
            ``"a thread left running: 'Thread-3 (mutate)'"``.
    """

    index: int
    call: str
    check: str | None
    changes: tuple[str, ...]

    def where(self) -> str:
        """``"call #12, step(...), during single_step.check_step"``."""
        return f"call #{self.index}, {self.call}" + (f", during {self.check}" if self.check else "")


@dataclass
class StateLog:
    r"""Every call into one target and the global-state changes among them (thread-safe).

    Attributes:
        calls: how many calls were watched.
        changes: the calls that changed something, in order.
        mode: the isolation it was recorded under (:func:`isolation_of`).
    """

    calls: int = 0
    changes: list[StateChange] = field(default_factory=list)
    mode: str = "in-process"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, call: str, check: str | None, changes: list[str]) -> int:
        """Count one call; keep it when ``changes`` is not empty. Returns the call's number."""
        with self._lock:
            self.calls += 1
            if changes:
                self.changes.append(StateChange(self.calls, call, check, tuple(changes)))
            return self.calls


def current_check() -> str | None:
    r"""The check function in progress in this thread (``"invariants.check_finite"``), or None.

    Found on the stack: the innermost frame of a ``check_*`` function of a module in
    ``ddspec.conformance.checks``.
    """
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name.startswith("check_") and ".conformance.checks." in f"{module}.":
            return f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}"
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------------------------------------
# Errors that travel from the worker
# ---------------------------------------------------------------------------------------------------


class TargetInterrupt(Exception):
    """The target raised ``KeyboardInterrupt`` (a failure of the target, not a user's Ctrl-C)."""


class _TargetRaised(Exception):
    """The target raised in the worker: ``description`` is the runner's one-line description."""

    def __init__(self, description: str, tb: str | None) -> None:
        super().__init__(description)
        self.description = description
        self.tb = tb


class _WorkerDied(Exception):
    """The worker ended (or could not be used) during a call; the message says why."""


class _WorkerTimedOut(BaseException):
    """A forwarded call ran past the deadline (BaseException: a target-side ``except`` cannot hide it)."""


def _describe_target_exception(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return f"{TargetInterrupt.__name__}: the target raised KeyboardInterrupt"
    return _describe_exception(exc)


def _memory_note(text: str, max_memory: int | None) -> str:
    if max_memory is None:
        return text
    lowered = text.lower()
    if any(k in lowered for k in ("memoryerror", "can't allocate memory", "out of memory", "cannot allocate")):
        return f"{text} (the worker's memory limit, --max-memory {describe_memory(max_memory)}, was reached)"
    return text


# ---------------------------------------------------------------------------------------------------
# Memory sizes
# ---------------------------------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_memory(text: str | int, *, option: str = "max_memory") -> int:
    r"""``"512M"``, ``"2G"``, ``"1.5GiB"`` or a number of bytes -> bytes (binary units: M = 2**20).

    Raises:
        ValueError: not a size, or below 1 MiB; the message names ``option`` and the value.
    """
    if isinstance(text, bool):
        raise ValueError(f"{option}={text!r}: expected a size such as 512M or 2G")
    if isinstance(text, int):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"{option}={text!r}: expected a size such as 512M or 2G (units B, K, M, G, T)")
        value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value < 2**20:
        raise ValueError(f"{option}={text!r}: must be at least 1M")
    return int(value)


def describe_memory(n: int) -> str:
    """``536870912`` -> ``"512 MiB"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"


def _address_space_now() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------------
# RNG states (kept in step between the caller and the worker)
# ---------------------------------------------------------------------------------------------------


def _rng_now() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    state: dict[str, Any] = {"python": random.getstate()}
    if np is not None:
        state["numpy"] = np.random.get_state()
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_initialized():
            state["cuda"] = tuple(torch.cuda.get_rng_state_all())
    return state


def _rng_equal(key: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if key == "torch":
        return bytes(a.numpy()) == bytes(b.numpy())
    if key == "cuda":
        return len(a) == len(b) and all(bytes(x.numpy()) == bytes(y.numpy()) for x, y in zip(a, b))
    if key == "numpy":
        import numpy as np

        return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])
    return a == b


def _rng_changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in after.items() if not _rng_equal(k, before.get(k), v)}


def _rng_set(states: dict[str, Any]) -> None:
    torch = sys.modules.get("torch")
    np = sys.modules.get("numpy")
    for key, value in states.items():
        if key == "python":
            random.setstate(value)
        elif key == "numpy" and np is not None:
            np.random.set_state(value)
        elif key == "torch" and torch is not None:
            torch.set_rng_state(value)
        elif key == "cuda" and torch is not None and torch.cuda.is_initialized():
            if len(value) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(list(value))


# ---------------------------------------------------------------------------------------------------
# In-process calls
# ---------------------------------------------------------------------------------------------------


def call_in_process(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, timeout_s: float, log: StateLog,
) -> CallOutcome:
    r"""``fn(*args, **kwargs)`` by :func:`~ddspec.conformance.guard.call_with_timeout`, watched.

    torch's global settings and the threads alive are recorded around the call *in the helper thread*
    (grad mode is thread-local) and a change is logged in ``log`` and restored. A ``KeyboardInterrupt``
    raised by ``fn`` (in the helper thread) becomes :class:`TargetInterrupt`, a failed outcome; a
    user's Ctrl-C (in the calling thread) still stops the run.
    """
    check = current_check()

    def watched() -> Any:
        before = torch_state_snapshot()
        threads = set(threading.enumerate())
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise TargetInterrupt("the target raised KeyboardInterrupt") from exc
        finally:
            changes = state_differences(before, torch_state_snapshot())
            restore_torch_state(before)
            changes += [f"a thread left running: {name}" for name in _threads_left(threads)]
            log.record(_callable_name(fn), check, changes)

    return call_with_timeout(watched, timeout_s=timeout_s)


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{name}()"


# ---------------------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    kind: str  # "get", "call" or "stop"
    name: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    grad: bool = True


@dataclass(frozen=True)
class _Reply:
    kind: str  # "value", "method", "missing", "error"
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    mutated: dict[Any, Any] = field(default_factory=dict)
    generators: dict[Any, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    changes: tuple[str, ...] = ()
    threads_left: bool = False


def _bits(t: Any) -> Any:
    """``t``'s elements as raw bytes (a uint8 tensor; NaN payloads included), to see whether a call
    modified it: compare two with ``torch.equal``."""
    import torch

    data = t.detach().resolve_conj().resolve_neg().contiguous()
    return data.view(-1).view(torch.uint8) if data.numel() else data.view(-1).to(torch.uint8)


def _unchanged(before: Any, tensor: Any) -> bool:
    import torch

    now = _bits(tensor)
    return before.shape == now.shape and bool(torch.equal(before, now))


def _rebuild_tensor(array: Any, dtype: str, view: str | None, device: str, requires_grad: bool) -> Any:
    import torch

    tensor = torch.from_numpy(array)
    if view is not None:
        tensor = tensor.view(getattr(torch, view))
    if device != "cpu":
        tensor = tensor.to(device)
    return tensor.requires_grad_(requires_grad) if requires_grad else tensor


def _rebuild_generator(device: str, state: Any) -> Any:
    import torch

    generator = torch.Generator(device=device)
    generator.set_state(torch.from_numpy(state))
    return generator


_NUMPY_LESS = {"bfloat16": "int16", "complex32": "int32"}


class _Pickler(pickle.Pickler):
    """Pickles torch tensors and generators through numpy (about 20 times faster than torch's own
    reduction for the small tensors of a step call); everything else as :mod:`pickle` does."""

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None:
            return NotImplemented
        if type(obj) is torch.Tensor:
            name = str(obj.dtype).removeprefix("torch.")
            if obj.is_sparse or obj.is_quantized or name not in _NUMPY_OK:
                return NotImplemented
            data = obj.detach().resolve_conj().resolve_neg()
            if data.device.type != "cpu":
                data = data.cpu()
            view = None
            if name in _NUMPY_LESS:
                data, view = data.view(getattr(torch, _NUMPY_LESS[name])), name
            return _rebuild_tensor, (data.numpy(), name, view, str(obj.device), bool(obj.requires_grad))
        if type(obj) is torch.Generator:
            return _rebuild_generator, (str(obj.device), obj.get_state().numpy())
        return NotImplemented


_NUMPY_OK = frozenset({"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                       "bool", "complex64", "complex128"})


def _dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _arguments(req: _Request) -> list[tuple[Any, Any]]:
    return [(i, a) for i, a in enumerate(req.args)] + list(req.kwargs.items())


def _handle(target: Any, req: _Request, max_memory: int | None) -> _Reply:
    import torch

    if req.rng:
        _rng_set(req.rng)
    torch.set_grad_enabled(req.grad)
    rng_before = _rng_now()
    state_before = torch_state_snapshot()
    threads = set(threading.enumerate())
    tensors = {key: (a, _bits(a).clone()) for key, a in _arguments(req) if isinstance(a, torch.Tensor)}
    generators = {key: a for key, a in _arguments(req) if isinstance(a, torch.Generator)}
    kind, value, error, tb = "value", None, None, None
    try:
        if req.kind == "get":
            missing = object()
            value = getattr(target, req.name, missing)
            if value is missing:
                kind, value = "missing", None
            elif callable(value) and not isinstance(value, type):
                kind, value = "method", None
        else:
            value = getattr(target, req.name)(*req.args, **req.kwargs)
    except BaseException as exc:  # noqa: BLE001 - the target is untrusted: SystemExit and KI included
        kind, value = "error", None
        error = _memory_note(_describe_target_exception(exc), max_memory)
        tb = _traceback.format_exc()
    changes = state_differences(state_before, torch_state_snapshot())
    restore_torch_state(state_before)
    left = _threads_left(threads)
    changes += [f"a thread left running: {name}" for name in left]
    mutated = {key: a for key, (a, data) in tensors.items() if not _unchanged(data, a)}
    return _Reply(kind, value, error, tb, mutated,
                  {key: g.get_state() for key, g in generators.items()},
                  _rng_changed(rng_before, _rng_now()), tuple(changes), bool(left))


def _detached(value: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_detached(v) for v in value)
    if isinstance(value, list):
        return [_detached(v) for v in value]
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _encode(reply: _Reply) -> bytes:
    try:
        return _dumps(reply)
    except Exception:  # noqa: BLE001 - e.g. a result that still requires grad
        pass
    try:
        return _dumps(_Reply(**{**reply.__dict__, "value": _detached(reply.value),
                                "mutated": _detached(reply.mutated)}))
    except Exception as exc:  # noqa: BLE001
        return pickle.dumps(_Reply("error", error=f"UnpicklableResult: the target's result cannot be sent to "
                                   f"the harness ({_describe_exception(exc)})", changes=reply.changes,
                                   threads_left=reply.threads_left), protocol=pickle.HIGHEST_PROTOCOL)


def _watch_parent(parent: int) -> None:
    """End this worker when its parent is gone (killed without closing it): never an orphan, even hung."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(70)

    threading.Thread(target=watch, name=f"{_HARNESS_THREAD_PREFIX}watchdog", daemon=True).start()


def _worker_main(conn: Any, target: Any, spec: str | None, options: dict[str, Any], other: Any = None) -> None:
    r"""The worker's loop: answer requests until ``"stop"`` or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if other is not None:
        other.close()
    _watch_parent(os.getppid())
    import torch

    if options.get("one_thread"):
        torch.set_num_threads(1)
    max_memory = options.get("max_memory")
    if max_memory is not None:
        import resource

        base = _address_space_now() or 0
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = base + int(max_memory)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    if target is None and spec is not None:
        try:
            from .loader import load

            target = load(spec).sampler
        except BaseException as exc:  # noqa: BLE001 - reported to the harness, which fails the calls
            conn.send_bytes(pickle.dumps(("failed", f"the worker could not load {spec!r}: {_describe_exception(exc)}")))
            return
    # the bookkeeping of a call imports and initialises a few things once: not on the first call's clock
    _rng_changed(_rng_now(), _rng_now())
    restore_torch_state(torch_state_snapshot())
    pickle.loads(_dumps(_Reply("value", torch.zeros(1), generators={0: torch.Generator()})))
    conn.send_bytes(pickle.dumps(("ready", None)))
    while True:
        try:
            req = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if req.kind == "stop":
            return
        conn.send_bytes(_encode(_handle(target, req, max_memory)))


# ---------------------------------------------------------------------------------------------------
# The proxy
# ---------------------------------------------------------------------------------------------------


def _describe_arg(value: Any) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return "tensor(" + "x".join(str(s) for s in value.shape) + ")"
    if torch is not None and isinstance(value, torch.Generator):
        return "generator"
    if isinstance(value, float):
        return f"{value:g}"
    return _one_line(repr(value), 40)


def describe_call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    r"""``"step(t=700, num_steps=10, eta=0)"``: a call in words (``step``'s tensors left out)."""
    if name == "step":
        t = args[1] if len(args) > 1 else kwargs.get("t")
        parts = [f"t={_describe_arg(t)}"]
        parts += [f"{k}={_describe_arg(kwargs[k])}" for k in ("num_steps", "eta") if k in kwargs]
        return f"step({', '.join(parts)})"
    parts = [_describe_arg(a) for a in args] + [f"{k}={_describe_arg(v)}" for k, v in kwargs.items() if v is not None]
    return f"{name}({', '.join(parts)})"


class _RemoteMethod:
    """A method of the target in the worker: calling it forwards the call."""

    def __init__(self, proxy: WorkerSampler, name: str) -> None:
        self._proxy = proxy
        self._name = name
        self.__qualname__ = f"{type(proxy).__name__}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._proxy._request("call", self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name} of {self._proxy!r}>"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_SIGNAL_NOTES = {
    "SIGSEGV": "segmentation fault",
    "SIGKILL": "the out-of-memory killer, or another process",
    "SIGABRT": "abort",
    "SIGBUS": "bus error",
    "SIGFPE": "arithmetic error",
    "SIGILL": "illegal instruction",
}


class WorkerSampler:
    r"""A target held by a supervised worker process (see the module docstring); build it with
    :func:`isolate`.

    Every public attribute of the target is read in the worker; a method comes back as a callable
    that forwards its call. Reading or calling raises in the caller what happened to the worker
    (an exception of the target, a death, a timeout), for
    :meth:`~ddspec.conformance.context.CheckContext.call` to turn into a
    :class:`~ddspec.conformance.guard.CallOutcome`.

    Attributes:
        state_log: the :class:`StateLog` of every forwarded call.
        start_method: ``"fork"`` or ``"spawn"``.
        max_memory: the worker's memory limit in bytes, or None.
        restarts: how many workers were started after the first.
    """

    def __init__(self, target: Any, *, timeout_s: float = 30.0, max_memory: int | None = None,
                 start_method: str = "fork", spec: str | None = None) -> None:
        if start_method not in ("fork", "spawn", "forkserver"):
            raise ValueError(f"start_method={start_method!r}: must be 'fork', 'spawn' or 'forkserver'")
        self.__dict__.update(
            _target=target, _spec=spec, timeout_s=float(timeout_s), max_memory=max_memory,
            start_method=start_method, restarts=0, _proc=None, _conn=None, _synced=None,
            _methods=set(), _lock=threading.RLock(), _local=threading.local(), _given_up=None,
            _last_death=None, _started=0,
        )
        self.state_log = StateLog(mode=self.mode)
        self.__dict__["_finalizer"] = weakref.finalize(self, WorkerSampler._kill_process, self.__dict__)

    # -- description -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The isolation in words, e.g. ``"worker process (fork, 1 torch thread)"``."""
        how = "fork, 1 torch thread" if self.start_method == "fork" else self.start_method
        if self.max_memory is not None:
            how += f", memory limit {describe_memory(self.max_memory)}"
        return f"worker process ({how})"

    def __repr__(self) -> str:
        return f"WorkerSampler({type(self._target).__name__}, {self.mode})"

    # -- member access -----------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            return _RemoteMethod(self, name)
        try:
            return self._request("get", name, (), {})
        except (_WorkerDied, _WorkerTimedOut, _TargetRaised) as exc:
            if getattr(self._local, "deadline", None) is not None:
                raise  # within CheckContext.call: it becomes the call's outcome
            # read by the harness outside a call (``getattr(sampler, "notes", ())``): no such value
            raise AttributeError(f"{name}: the isolated target could not be read ({exc})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state_log":
            self.__dict__[name] = value
            return
        raise AttributeError(f"cannot set {name!r} on an isolated target (it lives in the worker process)")

    # -- deadlines ---------------------------------------------------------------------------------

    def _deadline(self) -> float:
        deadline = getattr(self._local, "deadline", None)
        return deadline if deadline is not None else time.monotonic() + self.timeout_s

    def _set_deadline(self, deadline: float | None) -> float | None:
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline
        return previous

    # -- the worker's life -------------------------------------------------------------------------

    @staticmethod
    def _kill_process(state: dict[str, Any]) -> None:
        proc, conn = state.get("_proc"), state.get("_conn")
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(5)
        state["_proc"] = state["_conn"] = None

    def give_up(self, why: str) -> None:
        r"""Kill the worker and start no other: every later access fails at once with ``why``."""
        with self._lock:
            self._kill_process(self.__dict__)
            self.__dict__["_given_up"] = why

    def close(self) -> None:
        r"""Stop the worker (politely, then ``SIGKILL``). A later call starts a new one."""
        with self._lock:
            conn, proc = self._conn, self._proc
            if conn is not None and proc is not None and proc.is_alive():
                try:
                    conn.send_bytes(pickle.dumps(_Request("stop")))
                    proc.join(1.0)
                except OSError:
                    pass
            self._kill_process(self.__dict__)

    def _start(self) -> None:
        import multiprocessing

        if self._given_up is not None:
            raise _WorkerDied(self._given_up)
        if self._started:
            if self.restarts >= MAX_RESTARTS:
                self.__dict__["_given_up"] = (
                    f"not called: the target's worker was restarted {MAX_RESTARTS} times and is not started "
                    f"again (the last end: {self._last_death})")
                raise _WorkerDied(self._given_up)
            self.__dict__["restarts"] = self.restarts + 1
        ctx = multiprocessing.get_context(self.start_method)
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        options = {"max_memory": self.max_memory, "one_thread": self.start_method == "fork"}
        if self.start_method == "fork":
            args = (child_conn, self._target, None, options, parent_conn)
        else:
            args = (child_conn, None if self._spec else self._target, self._spec, options)
        proc = ctx.Process(target=_worker_main, args=args, name="ddspec-worker", daemon=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python >= 3.12)
            proc.start()
        child_conn.close()
        self.__dict__.update(_proc=proc, _conn=parent_conn, _synced=None, _started=self._started + 1)
        # the worker says when it is ready (a spawned one re-imports torch and re-loads the target
        # first): that time is not charged to the first call's timeout
        limit = STARTUP_TIMEOUT_S if self.start_method != "fork" else max(STARTUP_TIMEOUT_S / 4, self.timeout_s)
        try:
            status, why = pickle.loads(parent_conn.recv_bytes()) if parent_conn.poll(limit) else ("slow", None)
        except (EOFError, OSError):
            raise _WorkerDied(self._death("its start")) from None
        if status != "ready":
            why = why or f"the worker did not start within {limit:g} s"
            self._kill_process(self.__dict__)
            self.__dict__["_last_death"] = why
            raise _WorkerDied(why)

    def _death(self, during: str) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
            code = proc.exitcode
        if code is None:
            cause = "the worker process stopped answering"
        elif code < 0:
            name = _signal_name(-code)
            note = _SIGNAL_NOTES.get(name)
            cause = f"the worker process was killed by signal {name}" + (f" ({note})" if note else "")
        else:
            cause = f"the target ended the worker process with exit code {code}"
        note = ""
        if self.max_memory is not None and code is not None and code < 0:
            note = (f" (the worker runs under --max-memory {describe_memory(self.max_memory)}; an allocation "
                    "past it may end the process)")
        self._kill_process(self.__dict__)
        message = f"{cause} during {during}{note}"
        self.__dict__["_last_death"] = message
        return message + "; a fresh worker serves the next call"

    # -- one forwarded access ----------------------------------------------------------------------

    def _request(self, kind: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        torch = sys.modules.get("torch")
        what = describe_call(name, args, kwargs) if kind == "call" else f"reading {name}"
        check = current_check()
        during = what if check is None else f"{what} in {check}"
        with self._lock:
            deadline = self._deadline()
            if self._proc is None or not self._proc.is_alive():
                if self._proc is not None:
                    self._death("the previous call")
                starting = time.monotonic()
                self._start()
                startup = time.monotonic() - starting  # starting a worker is not the target's time
                deadline += startup
                if getattr(self._local, "deadline", None) is not None:
                    self._local.deadline += startup
            now_rng = _rng_now()
            send_rng = None
            if self._synced is None:
                send_rng = now_rng
            else:
                changed = _rng_changed(self._synced, now_rng)
                send_rng = changed or None
            request = _Request(kind, name, tuple(args), dict(kwargs), send_rng,
                               bool(torch.is_grad_enabled()) if torch is not None else True)
            try:
                blob = _dumps(request)
            except Exception as exc:  # noqa: BLE001 - an argument that cannot travel
                raise _WorkerDied(f"the arguments of {during} cannot be sent to the worker "
                                  f"({_describe_exception(exc)})") from None
            try:
                self._conn.send_bytes(blob)
            except OSError:
                raise _WorkerDied(self._death(during)) from None
            remaining = max(deadline - time.monotonic(), 0.0)
            if not self._conn.poll(remaining):
                self._kill_process(self.__dict__)
                self.__dict__["_last_death"] = f"killed after the timeout during {during}"
                self.state_log.record(what, check, [])
                raise _WorkerTimedOut(during)
            try:
                reply: _Reply = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                message = self._death(during)
                self.state_log.record(what, check, [])
                raise _WorkerDied(message) from None
            self.__dict__["_synced"] = now_rng
            if reply.rng:
                _rng_set(reply.rng)
                self.__dict__["_synced"] = {**now_rng, **reply.rng}
            if reply.kind != "method" or reply.changes:  # a method looked up is not a call
                self.state_log.record(what, check, list(reply.changes))
            if reply.threads_left:  # the worker holds a thread of the target's: replace it
                self._kill_process(self.__dict__)
                self.__dict__["_last_death"] = f"replaced: a thread was left running after {during}"
        self._apply(args, kwargs, reply)
        if reply.kind == "error":
            raise _TargetRaised(reply.error or "failed", reply.traceback)
        if reply.kind == "missing":
            raise AttributeError(f"{type(self._target).__name__!r} object has no attribute {name!r}")
        if reply.kind == "method":
            self._methods.add(name)
            return _RemoteMethod(self, name)
        return reply.value

    @staticmethod
    def _apply(args: tuple[Any, ...], kwargs: dict[str, Any], reply: _Reply) -> None:
        """What the call did to its arguments, done to the caller's: mutated tensors, generator states."""
        def original(key: Any) -> Any:
            return args[key] if isinstance(key, int) else kwargs[key]

        if reply.mutated:
            import torch

            with torch.no_grad():
                for key, value in reply.mutated.items():
                    target = original(key)
                    if target.shape == value.shape:
                        target.copy_(value)
        for key, state in reply.generators.items():
            original(key).set_state(state)


# ---------------------------------------------------------------------------------------------------
# Isolating a target, and calling it
# ---------------------------------------------------------------------------------------------------


def isolate(sampler: Any, *, device: Any = "cpu", timeout_s: float = 30.0, max_memory: int | str | None = None,
            spec: str | None = None, start_method: str | None = None) -> Any:
    r"""``sampler`` in a supervised worker process: a :class:`WorkerSampler` (or ``sampler`` itself
    for a loop target, which is driven in-process; see the module docstring).

    Args:
        sampler: the loaded target.
        device: the run's device; a CUDA device selects the ``spawn`` start method.
        timeout_s: the limit of one forwarded access when no
            :meth:`~ddspec.conformance.context.CheckContext.call` deadline applies.
        max_memory: bytes (or a size such as ``"512M"``) the worker's address space may grow by.
        spec: the ``module:attr`` the worker re-loads the target from under ``spawn`` (else the
            target is pickled).
        start_method: ``"fork"`` (default on the CPU) or ``"spawn"`` (default for CUDA).

    Raises:
        ValueError: a bad ``max_memory`` or ``start_method``.
    """
    limit = None if max_memory is None else parse_memory(max_memory)
    if target_kind(sampler) != "step" or getattr(sampler, "noise_source", None) == "global":
        return sampler  # the harness seeds the global RNG around each call: it must be this process's
    if start_method is None:
        start_method = "spawn" if str(device).startswith("cuda") else "fork"
    if start_method == "fork" and not hasattr(os, "fork"):
        start_method = "spawn"
    return WorkerSampler(sampler, timeout_s=timeout_s, max_memory=limit, start_method=start_method, spec=spec)


def isolation_of(sampler: Any) -> str:
    r"""How ``sampler`` runs, in words: ``"worker process (fork, 1 torch thread)"`` or ``"in-process"``
    (``"in-process (a loop target)"`` for a loop target)."""
    if isinstance(sampler, WorkerSampler):
        return sampler.mode
    if target_kind(sampler) != "step":
        kind = target_kind(sampler)
        return f"in-process ({'an' if kind[0] in 'aeiou' else 'a'} {kind} target)"
    if getattr(sampler, "noise_source", None) == "global":
        return "in-process (draws from the global RNG)"
    return "in-process"


def call_isolated(proxy: WorkerSampler, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
                  timeout_s: float) -> CallOutcome:
    r"""``fn(*args, **kwargs)`` in the calling thread, every access to ``proxy`` within ``timeout_s``.

    Never raises for what the target does: its exception, the worker's death or a timeout come back
    as a :class:`~ddspec.conformance.guard.CallOutcome`. A ``KeyboardInterrupt`` here is the user's
    (the target's is caught in the worker) and is re-raised.
    """
    start = time.perf_counter()
    previous = proxy._set_deadline(time.monotonic() + timeout_s)
    try:
        value = fn(*args, **kwargs)
    except _WorkerTimedOut:
        return CallOutcome(ok=False, error=f"timed out after {timeout_s:g} s (the worker process was killed; a "
                           "fresh one serves the next call)", timed_out=True, elapsed_s=time.perf_counter() - start)
    except _TargetRaised as exc:
        return CallOutcome(ok=False, error=exc.description, traceback=exc.tb, elapsed_s=time.perf_counter() - start)
    except _WorkerDied as exc:
        return CallOutcome(ok=False, error=f"WorkerDied: {exc}", elapsed_s=time.perf_counter() - start)
    except KeyboardInterrupt:
        # the user's Ctrl-C: the worker (which ignores SIGINT) may be busy with the abandoned call, so stop it
        # now; later reads of the target (the partial report's notes) then fail at once instead of waiting
        # for that call's deadline
        proxy.give_up("the run was interrupted by the user")
        raise
    except BaseException as exc:  # noqa: BLE001 - harness-side code of the callable
        return CallOutcome(ok=False, error=_describe_exception(exc), traceback=_traceback.format_exc(),
                           elapsed_s=time.perf_counter() - start)
    finally:
        proxy._set_deadline(previous)
    return CallOutcome(ok=True, value=value, elapsed_s=time.perf_counter() - start)
