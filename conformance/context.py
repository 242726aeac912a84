r"""What every check receives: the target, where and how to run it, and the size of the run.

:class:`CheckContext` carries the sampler under test, the torch device and dtype it runs in, the
profile (how thorough the run is), the base seed, and the per-call timeout. Its helpers make every
random input reproducible from ``(seed, offset)`` alone, and call the target safely
(:meth:`CheckContext.call`).

Profiles
--------
:data:`PROFILES` is the one table of run sizes. A check reads ``ctx.settings`` (the
:class:`Profile` of ``ctx.profile``) instead of hard-coding numbers, so that ``--profile quick`` is fast
and ``--profile thorough`` is thorough everywhere.

Randomness
----------
Every random tensor is drawn in float64 on the CPU from a :class:`torch.Generator` seeded with
``seed + offset``, and only then cast to the target's dtype and moved to its device. The inputs are
therefore the same on every device and for every dtype (up to the final rounding), and a check can
give the reference exactly what the target got: ``x.to(torch.float64).cpu()``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .guard import CallOutcome
from .sandbox import StateLog, WorkerSampler, call_in_process, call_isolated, isolation_of

__all__ = ["Profile", "PROFILES", "DTYPES", "CheckContext", "parse_dtype", "parse_device"]


@dataclass(frozen=True)
class Profile:
    r"""How large a conformance run is. One instance per profile name, in :data:`PROFILES`.

    Attributes:
        name: ``"quick"``, ``"default"`` or ``"thorough"``.
        steps: numbers of inference steps ``N`` to test (those above ``T`` are dropped).
        full_schedule: also test ``N = T`` (every training timestep).
        etas: DDIM ``eta`` values to test.
        sample_shape: shape of the tensors given to deterministic checks (batch first).
        n_timesteps: how many timesteps a per-timestep check samples (None: all ``T``).
        n_single_step_draws: noise draws for the statistical single-step checks.
        n_distribution_samples: samples for the end-to-end distribution checks.
        false_failure_rate: the budgeted probability that a statistical check fails a correct
            sampler (per check).
        oracle_max_steps: the longest run (N) the exact-oracle check drives end to end (None: every
            N in ``steps``); single-step checks still sample every N.
    """

    name: str
    steps: tuple[int, ...]
    full_schedule: bool
    etas: tuple[float, ...]
    sample_shape: tuple[int, ...]
    n_timesteps: int | None
    n_single_step_draws: int
    n_distribution_samples: int
    false_failure_rate: float
    oracle_max_steps: int | None = None


#: The run sizes, in one place. ``quick`` is for CI smoke tests (seconds), ``default`` for a normal
#: audit (a minute or so on a CPU), ``thorough`` for a release audit.
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        steps=(1, 10),
        full_schedule=False,
        etas=(0.0, 1.0),
        sample_shape=(2, 3, 4, 4),
        n_timesteps=8,
        n_single_step_draws=4_096,
        n_distribution_samples=2_000,
        false_failure_rate=1e-6,
        oracle_max_steps=10,
    ),
    "default": Profile(
        name="default",
        steps=(1, 2, 7, 10, 50),
        full_schedule=True,
        etas=(0.0, 0.5, 1.0),
        sample_shape=(4, 3, 8, 8),
        n_timesteps=64,
        n_single_step_draws=16_384,
        n_distribution_samples=20_000,
        false_failure_rate=1e-6,
        oracle_max_steps=100,
    ),
    "thorough": Profile(
        name="thorough",
        steps=(1, 2, 3, 7, 10, 20, 25, 50, 100, 250, 500),
        full_schedule=True,
        etas=(0.0, 0.25, 0.5, 1.0),
        sample_shape=(8, 3, 16, 16),
        n_timesteps=None,
        n_single_step_draws=65_536,
        n_distribution_samples=200_000,
        false_failure_rate=1e-6,
    ),
}

#: The dtypes a target can be run in, by name.
DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{name}={value!r}: {why}")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    r"""``"float32"`` / ``torch.float32`` (or another of :data:`DTYPES`) -> the torch dtype.

    Raises:
        ValueError: not one of :data:`DTYPES`.
    """
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise _bad("dtype", dtype, f"must be one of {', '.join(DTYPES)}")
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name in DTYPES:
            return DTYPES[name]
    raise _bad("dtype", dtype, f"must be one of {', '.join(DTYPES)}")


def parse_device(device: str | torch.device) -> torch.device:
    r"""``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a :class:`torch.device` that exists here.

    ``"cuda"`` is resolved to the current CUDA device (``"cuda:0"`` unless changed).

    Raises:
        ValueError: malformed name, ``"CUDA is not available"``, or no such CUDA device.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise _bad("device", device, "expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad("device", str(device), "CUDA is not available")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= count:
            raise _bad("device", str(device), f"no such CUDA device ({count} visible)")
        return torch.device("cuda", index)
    raise _bad("device", str(device), "expected 'cpu', 'cuda' or 'cuda:N'")


def _positive_steps(steps: Any) -> tuple[int, ...]:
    try:
        values = tuple(steps)
    except TypeError as exc:
        raise _bad("steps", steps, "must be a sequence of positive ints") from exc
    for n in values:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise _bad("steps", steps, "every step count must be an int >= 1")
    if not values:
        raise _bad("steps", steps, "must not be empty")
    return tuple(sorted({int(n) for n in values}))


@dataclass
class CheckContext:
    r"""Everything a check function needs.

    Attributes:
        sampler: the target (an object following :class:`ddspec.conformance.protocol.Sampler`).
        device: the torch device the target runs on (a string is parsed by :func:`parse_device`).
        dtype: the dtype the target runs in (a name is parsed by :func:`parse_dtype`).
        profile: a key of :data:`PROFILES`.
        seed: base seed; every random input is a function of ``seed + offset``.
        timeout_s: limit for one call into the target (see :meth:`call`).
        progress: print one line per check on stderr (used by the runner).
        steps: inference step counts to test. None (the default) takes the profile's, dropping those
            above ``T`` and adding ``T`` when the profile's ``full_schedule`` is set. Counts given
            explicitly are kept as given (sorted, without duplicates), even above ``T``.
        num_train_timesteps: ``T``. None (the default) asks the sampler: ``len(sampler.betas())``
            through :meth:`call`; it stays None if that fails (the schedule checks report why).
    """

    sampler: Any
    device: torch.device | str = "cpu"
    dtype: torch.dtype | str = torch.float32
    profile: str = "default"
    seed: int = 0
    timeout_s: float = 30.0
    progress: bool = False
    steps: tuple[int, ...] | None = None
    num_train_timesteps: int | None = None
    _settings: Profile = field(init=False, repr=False)
    _state_log: StateLog = field(default_factory=StateLog, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.device = parse_device(self.device)
        self.dtype = parse_dtype(self.dtype)
        if self.profile not in PROFILES:
            raise _bad("profile", self.profile, f"must be one of {', '.join(PROFILES)}")
        self._settings = PROFILES[self.profile]
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise _bad("seed", self.seed, "must be an int")
        if not 0 <= int(self.seed) < 2**63 - 2**32:
            raise _bad("seed", self.seed, "must be in [0, 2**63 - 2**32)")
        self.seed = int(self.seed)
        if (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, numbers.Real)
            or not math.isfinite(self.timeout_s)
            or self.timeout_s <= 0
        ):
            raise _bad("timeout_s", self.timeout_s, "must be a finite number of seconds > 0")
        self.timeout_s = float(self.timeout_s)
        self.progress = bool(self.progress)
        if self.num_train_timesteps is None:
            self.num_train_timesteps = self._ask_num_train_timesteps()
        elif (
            isinstance(self.num_train_timesteps, bool)
            or not isinstance(self.num_train_timesteps, numbers.Integral)
            or self.num_train_timesteps < 1
        ):
            raise _bad("num_train_timesteps", self.num_train_timesteps, "must be an int >= 1")
        if self.steps is None:
            self.steps = self._profile_steps()
        else:
            self.steps = _positive_steps(self.steps)

    def _ask_num_train_timesteps(self) -> int | None:
        outcome = self.call(lambda: len(self.sampler.betas()))
        if outcome.ok and isinstance(outcome.value, int) and outcome.value >= 1:
            return outcome.value
        return None

    def _profile_steps(self) -> tuple[int, ...]:
        T = self.num_train_timesteps
        steps = set(self._settings.steps)
        if T is not None:
            steps = {n for n in steps if n <= T}
            if self._settings.full_schedule:
                steps.add(T)
        return tuple(sorted(steps))

    # -- properties --------------------------------------------------------------------------------

    @property
    def settings(self) -> Profile:
        """The :class:`Profile` of :attr:`profile` (step counts, sample sizes, ...)."""
        return self._settings

    @property
    def dtype_name(self) -> str:
        """The dtype's name, e.g. ``"float32"``."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def unit_roundoff(self) -> float:
        r"""Unit roundoff :math:`u = \epsilon / 2` of :attr:`dtype` (2**-53 for float64)."""
        return float(torch.finfo(self.dtype).eps) / 2.0

    # -- randomness --------------------------------------------------------------------------------

    def _seed_for(self, offset: int) -> int:
        if isinstance(offset, bool) or not isinstance(offset, numbers.Integral) or offset < 0:
            raise _bad("offset", offset, "must be an int >= 0")
        return self.seed + int(offset)

    def generator(self, offset: int = 0) -> torch.Generator:
        r"""A fresh :class:`torch.Generator` on :attr:`device`, seeded with ``seed + offset``.

        Give it to the target's ``step(..., generator=...)``. Use a different ``offset`` for every
        independent stream within a check.
        """
        return torch.Generator(device=self.device).manual_seed(self._seed_for(offset))

    def randn(
        self,
        shape: tuple[int, ...],
        offset: int = 0,
        *,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        r"""Standard normal draws: float64 on the CPU from ``seed + offset``, then cast and moved.

        The result has dtype ``dtype`` (default :attr:`dtype`) on ``device`` (default
        :attr:`device`). ``randn(shape, k, dtype=torch.float64, device="cpu")`` is the exact float64
        value the cast tensor was rounded from.
        """
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise _bad("shape", shape, "sizes must be >= 0")
        gen = torch.Generator(device="cpu").manual_seed(self._seed_for(offset))
        x = torch.randn(shape, generator=gen, dtype=torch.float64, device="cpu")
        return x.to(
            device=self.device if device is None else parse_device(device),
            dtype=self.dtype if dtype is None else parse_dtype(dtype),
        )

    def to_target(self, values: Any) -> torch.Tensor:
        """``values`` (array-like, float64 exact) as a tensor in :attr:`dtype` on :attr:`device`."""
        array = np.asarray(values, dtype=np.float64)
        return torch.from_numpy(array.copy()).to(device=self.device, dtype=self.dtype)

    # -- calling the target ------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> CallOutcome:
        r"""``fn(*args, **kwargs)``, safely: never raises for what the target does.

        An exception, a call running past :attr:`timeout_s`, or (in isolation) the death of the
        target's worker process comes back in the :class:`~ddspec.conformance.guard.CallOutcome`.
        When :attr:`sampler` is isolated (a :class:`~ddspec.conformance.sandbox.WorkerSampler`, from
        :func:`~ddspec.conformance.sandbox.isolate`), ``fn`` runs in this thread and every access to
        the target within it shares the deadline (:func:`~ddspec.conformance.sandbox.call_isolated`);
        otherwise it runs in a helper thread
        (:func:`~ddspec.conformance.sandbox.call_in_process`). Either way torch's global settings are
        watched around the target's code and changes go to :attr:`state_log`; a ``KeyboardInterrupt``
        raised by the target is its failure, a user's Ctrl-C is re-raised.
        """
        if isinstance(self.sampler, WorkerSampler):
            return call_isolated(self.sampler, fn, args, kwargs, timeout_s=self.timeout_s)
        return call_in_process(fn, args, kwargs, timeout_s=self.timeout_s, log=self._state_log)

    @property
    def isolation(self) -> str:
        r"""How the target runs: ``"worker process (fork, 1 torch thread)"``, ``"in-process"``, ...
        (:func:`~ddspec.conformance.sandbox.isolation_of`)."""
        return isolation_of(self.sampler)

    @property
    def state_log(self) -> StateLog:
        r"""The :class:`~ddspec.conformance.sandbox.StateLog` of the calls into the target: the
        worker's for an isolated target, else this context's own."""
        if isinstance(self.sampler, WorkerSampler):
            return self.sampler.state_log
        return self._state_log
