r"""Drive: run a target once and record what it did, as transitions the checks can judge.

This is the first stage of the drive → expect → judge core (``/work/shared/architecture.md``). A
*transition* is one reverse step as the target took it: ``(t, t_prev, x_t, model_output, x_prev,
noise)``. Every check family reads transitions, asks the reference for the expected transition or
law (:func:`ddspec.conformance.expectation.expect_transition`), and hands the pair to the judge
(:mod:`ddspec.conformance.judge`, :mod:`ddspec.conformance.stats`). Both kinds of target produce them:

* a **step target** is driven by a :class:`StepDriver`: the check chooses the inputs (x_t, model output,
  noise), the driver makes one guarded call of ``sampler.step`` and records the transition, or why there
  is none (the call raised, hung, or returned no tensor like x_t);
* a **loop target** (:class:`~ddspec.conformance.adapters.loop.LoopSampler`) is driven by :func:`drive`
  with the probe below as its model, and its transitions are read off the probe's calls.

**The probe.** A loop is driven with the harness's own model, a :class:`Probe`, which records every
call ``(t, x_t, output)`` as float64 copies, so that the loop cannot rewrite history by mutating a
tensor later. Its output depends on ``(x_t, t)`` only, so it is a valid model:

.. math::

    \mathrm{out}(x_t, t) = f^*_t(x_t) + \lambda\,E_t

where :math:`f^*_t` is the exact ε̂/x̂₀/v̂ of Gaussian data :math:`\mathcal N(m, s^2 I)`
(:class:`ddspec.reference.oracles.IsotropicGaussian`, affine in x_t) and :math:`E_t` a fixed
standard-normal tensor seeded by ``(seed, t, shape)``; :math:`f^*_t` is affine in x_t,
:math:`A_t x_t + B_t` (:meth:`~ddspec.reference.oracles.IsotropicGaussian.affine`). With λ > 0 (the *field* probe) the outputs
are generic enough for every term of the step to matter (x̂₀ leaves [−1, 1] at large t, so clipping
is visible); with λ = 0 (the *oracle* probe) a whole run has the closed-form output law of
:func:`ddspec.reference.oracles.gaussian_run_output`.

**Transitions from calls.** Consecutive model calls k and k+1 give the transition
``x_t = x_k → x_prev = x_{k+1}`` at ``(t_k, t_{k+1})``; the last call's transition ends at the loop's
return value and goes to index −1 (or 0 for ``final_alpha_bar_is_one=False``). No noise is injected
(``noise=None``): the checks judge noisy transitions statistically.

Index convention (``docs/conventions.md``): t is the 0-based timestep index, −1 the data (ᾱ = 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference.oracles import IsotropicGaussian
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from .protocol import Conventions

if TYPE_CHECKING:
    from .context import CheckContext

__all__ = [
    "FIELD_SCALE",
    "ModelCall",
    "Transition",
    "Trajectory",
    "Probe",
    "probe_oracle",
    "drive",
    "StepCall",
    "StepDriver",
    "failed_call",
    "exact_of",
]

Array = NDArray[np.float64]

#: λ, the weight of the fixed random field :math:`E_t` in the field probe's output.
FIELD_SCALE = 0.5
#: (A_t, B_t) of the oracle's affine output per (prediction type, β table, oracle) and t, shared by probes.
_AFFINE: dict[tuple[Any, ...], dict[int, tuple[Array, Array]]] = {}
#: Relative tolerance when a received timestep value is matched to the declared ``model_timestep`` map.
_MATCH_RTOL = 1e-6


@dataclass(frozen=True)
class ModelCall:
    r"""One call of the probe, as the loop made it.

    Attributes:
        index: the call's position (0 = the first).
        t_value: the timestep value received (first batch element, as float).
        t: the 0-based timestep index it decodes to, or None when it decodes to none (``t_problem``).
        t_problem: why the value is not a declared timestep (None when it is).
        x_t: float64 copy of the state received (None when the probe does not record states).
        output: float64 copy of what the probe returned (None when not recorded).
    """

    index: int
    t_value: float
    t: int | None
    t_problem: str | None
    x_t: Array | None
    output: Array | None


@dataclass(frozen=True)
class Transition:
    r"""One reverse step x_t → x_prev as the target took it (float64 copies of the target's values).

    ``model_output`` is the prediction (ε̂, x̂₀ or v̂); ``predicted_variance`` the model's variance output
    for the learned variance types, else None; ``noise`` the injected z, None when not injected;
    ``step`` the position in the run (0 = the first step).
    """

    t: int
    t_prev: int
    x_t: Array
    model_output: Array
    x_prev: Array
    noise: Array | None = None
    predicted_variance: Array | None = None
    step: int = 0


@dataclass(frozen=True)
class Trajectory:
    r"""A recorded run of a loop target.

    Attributes:
        num_steps: the N the loop was asked for.
        eta: the η passed (None when none was passed).
        x_T: float64 copy of the start the loop was given.
        output: float64 copy of what the loop returned, or None when it returned no usable tensor.
        calls: every model call, in order.
        transitions: the steps between consecutive calls (empty when a timestep could not be decoded
            or the run broke).
        error: why the run gave no usable output (raised, timed out, wrong type/shape/dtype, NaN), or None.
        returned: whether the loop returned at all (False when it raised or timed out: then ``calls``
            is only a prefix of the run).
        input_mutated: whether the loop modified the x_T tensor it was given.
        elapsed_s: wall time of the loop call.
    """

    num_steps: int
    eta: float | None
    x_T: Array
    output: Array | None
    calls: tuple[ModelCall, ...]
    transitions: tuple[Transition, ...]
    error: str | None
    returned: bool
    input_mutated: bool
    elapsed_s: float

    @property
    def timesteps(self) -> tuple[int | None, ...]:
        """The decoded timestep of every model call, in call order."""
        return tuple(c.t for c in self.calls)

    @property
    def t_problems(self) -> list[tuple[int, str]]:
        """``(call index, why)`` for every call whose timestep could not be decoded."""
        return [(c.index, c.t_problem) for c in self.calls if c.t_problem is not None]


def probe_oracle(shape: tuple[int, ...], *, spread: float = 0.3, std: float = 0.12) -> IsotropicGaussian:
    r"""The Gaussian data law of the probe for states of ``shape`` (batch first): d = prod(shape[1:]) coordinates,

    .. math:: m_j = \text{spread}\cdot\cos(1 + 2.4 j), \qquad s_j = \text{std}

    Bounded well inside [−1, 1] (|m| + 5.8 s ≤ 1, and the exact x̂₀ of a state drawn from the
    marginal is N(m, ᾱ s⁴/V), narrower still), so a declared clipping is a no-op under the oracle
    probe for runs started from the marginal, and the closed-form output law holds.
    """
    d = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    j = np.arange(d, dtype=np.float64)
    return IsotropicGaussian(spread * np.cos(1.0 + 2.4 * j), np.full(d, std * std))


class Probe:
    r"""The harness's model: exact-oracle output plus a fixed per-timestep field, every call recorded.

    Args:
        conventions: the target's declarations (prediction type, variance type, T).
        betas: the reference β table of the declared schedule (float64).
        oracle: the Gaussian data law whose exact denoiser the output is built on.
        seed: seeds the field :math:`E_t` (and the learned-variance field).
        field_scale: λ (0 for the pure oracle).
        timestep_table: ``model_timestep(t)`` for every t when the loop passes a mapped value, else None.
        record: keep float64 copies of every x_t and output (the step checks need them; the output
            law does not, and large runs would not fit).
    """

    def __init__(
        self,
        conventions: Conventions,
        betas: Array,
        oracle: IsotropicGaussian,
        *,
        seed: int,
        field_scale: float = FIELD_SCALE,
        timestep_table: Array | None = None,
        record: bool = True,
    ) -> None:
        self.conv = conventions
        self.betas = betas
        self.oracle = oracle
        self.seed = int(seed)
        self.field_scale = float(field_scale)
        self.table = timestep_table
        self.record = record
        self.calls: list[ModelCall] = []
        self._fields: dict[tuple[Any, ...], Array] = {}
        self.learned = conventions.family == "ddpm" and conventions.variance_type in LEARNED_VARIANCE_TYPES
        self._affine_key = (conventions.prediction_type, hash(np.asarray(betas).tobytes()),
                            hash(oracle.mean.tobytes()), hash(oracle.variance.tobytes()))

    # -- timesteps ----------------------------------------------------------------------------------

    def _decode(self, t: Any, batch: int) -> tuple[float, int | None, str | None]:
        T = self.conv.num_train_timesteps
        try:
            tt = torch.as_tensor(t).detach().to("cpu")
        except Exception as exc:  # noqa: BLE001 - whatever the loop passed
            return float("nan"), None, f"t is a {type(t).__name__}, not a tensor or number ({exc})"
        if tt.is_complex() or tt.dtype == torch.bool:
            return float("nan"), None, f"t has dtype {tt.dtype}, expected int64 (or float) timesteps"
        flat = tt.reshape(-1).to(torch.float64)
        if flat.numel() == 0:
            return float("nan"), None, "t is empty"
        if flat.numel() not in (1, batch):
            return float(flat[0]), None, f"t has {flat.numel()} elements, expected the batch size {batch}"
        value = float(flat[0])
        if not bool(torch.all(flat == flat[0])):
            return value, None, f"t differs across the batch: {sorted(set(flat.tolist()))[:4]}"
        if not np.isfinite(value):
            return value, None, f"t={value} is not finite"
        if self.table is not None:
            j = int(np.argmin(np.abs(self.table - value)))
            if abs(self.table[j] - value) <= _MATCH_RTOL * max(1.0, abs(value)):
                return value, j, None
            return value, None, (f"t={value:.9g} is not model_timestep(t) of any index t "
                                 f"(nearest: model_timestep({j}) = {self.table[j]:.9g})")
        if value != round(value):
            return value, None, (f"t={value:.9g} is not an integer index (a rescaled t? declare "
                                 "LoopSampler(..., model_timestep=...))")
        index = int(round(value))
        if not 0 <= index <= T - 1:
            return value, None, f"t={index} is outside the timestep indices [0, {T - 1}]"
        return value, index, None  # also a float of integral value: ermongroup's torch.ones(n) * i

    # -- output -------------------------------------------------------------------------------------

    def _field(self, kind: str, t: int, shape: tuple[int, ...]) -> Array:
        key = (kind, t, shape)
        cached = self._fields.get(key)
        if cached is None:
            rng = np.random.default_rng([self.seed, 0 if kind == "E" else 1, t, *shape])
            cached = rng.standard_normal(shape)
            self._fields[key] = cached
        return cached

    def _affine(self, t: int) -> tuple[Array, Array]:
        r"""(A_t, B_t) with oracle output = A_t x + B_t per coordinate (:meth:`IsotropicGaussian.affine`), once per t."""
        table = _AFFINE.setdefault(self._affine_key, {})
        cached = table.get(t)
        if cached is None:
            cached = self.oracle.affine(t, self.betas, self.conv.prediction_type)
            table[t] = cached
        return cached

    def _prediction(self, x: Array, t: int) -> Array:
        flat = x.reshape(x.shape[0], -1)
        A, B = self._affine(t)
        out = (A * flat + B).reshape(x.shape)
        if self.field_scale:
            out = out + self.field_scale * self._field("E", t, x.shape)
        return out

    def _variance_output(self, x: Array, t: int) -> Array:
        g = self._field("V", t, x.shape)
        if self.conv.variance_type == "learned_range":
            return np.tanh(g)
        return 1e-2 * np.exp(0.5 * g)  # "learned": a variance (the Conventions' meaning)

    def __call__(self, x_t: torch.Tensor, t: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim < 1 or not x_t.is_floating_point():
            raise TypeError(f"ddspec probe: x_t must be a floating tensor with a batch dimension, got {type(x_t).__name__}")
        x64 = x_t.detach().to("cpu", torch.float64).numpy().copy()
        value, index, problem = self._decode(t, int(x_t.shape[0]))
        T = self.conv.num_train_timesteps
        t_eval = index if index is not None else int(np.clip(np.nan_to_num(np.round(value), nan=T - 1), 0, T - 1))
        out = self._prediction(x64, t_eval)
        if self.learned:
            if x64.ndim < 2:
                raise TypeError("ddspec probe: learned variances are concatenated on dim 1; x_t needs a channel dim")
            out = np.concatenate([out, self._variance_output(x64, t_eval)], axis=1)
        result = torch.from_numpy(out).to(dtype=x_t.dtype, device=x_t.device)
        recorded = result.detach().to("cpu", torch.float64).numpy().copy() if self.record else None
        self.calls.append(ModelCall(len(self.calls), value, index, problem, x64 if self.record else None, recorded))
        return result


def _final_t_prev(conv: Conventions, t: int) -> int:
    return min(-1 if conv.final_alpha_bar_is_one else 0, t)


def _transitions(conv: Conventions, calls: list[ModelCall], output: Array, channels: int | None) -> tuple[Transition, ...]:
    if not calls or any(c.t is None or c.x_t is None or c.output is None for c in calls):
        return ()
    out: list[Transition] = []
    for k, call in enumerate(calls):
        x_prev = calls[k + 1].x_t if k + 1 < len(calls) else output
        t_prev = calls[k + 1].t if k + 1 < len(calls) else _final_t_prev(conv, call.t)
        if x_prev is None or x_prev.shape != call.x_t.shape:
            return tuple(out)
        pred, var = call.output, None
        if channels is not None:
            pred, var = call.output[:, :channels], call.output[:, channels:]
        out.append(Transition(t=int(call.t), t_prev=int(t_prev), x_t=call.x_t, model_output=pred, x_prev=x_prev,
                              noise=None, predicted_variance=var, step=k))
    return tuple(out)


def _describe_output(value: Any, like: torch.Tensor) -> tuple[Array | None, str | None]:
    if not isinstance(value, torch.Tensor):
        return None, f"the loop returned a {type(value).__name__}, expected a tensor like x_T"
    if tuple(value.shape) != tuple(like.shape):
        return None, f"the loop returned shape {tuple(value.shape)}, expected x_T's shape {tuple(like.shape)}"
    if value.dtype != like.dtype:
        return None, f"the loop returned dtype {value.dtype}, expected x_T's dtype {like.dtype}"
    arr = value.detach().to("cpu", torch.float64).numpy().copy()
    bad = ~np.isfinite(arr)
    if np.any(bad):
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape))
        return arr, f"the loop returned {int(bad.sum())} non-finite value(s) (first at element {where}: {arr[where]!r})"
    return arr, None


def drive(
    target: Any,
    probe: Probe,
    x_T: torch.Tensor,
    num_steps: int,
    *,
    eta: float | None,
    seed: int,
    call: Callable[..., Any],
    global_seed: int | None = None,
) -> Trajectory:
    r"""Run ``target.sample(probe, x_T, num_steps[, eta=][, generator=])`` once and record it.

    ``eta`` is passed only when not None and the target accepts it; a ``torch.Generator`` seeded with
    ``seed`` only when it accepts one. The call runs inside ``torch.random.fork_rng`` with the global
    RNG seeded with ``global_seed`` (default ``seed``), so that a loop drawing from the global RNG is
    reproducible and the caller's global RNG state is unchanged afterwards. ``call`` is the
    harness's timeout wrapper (``ctx.call``): a loop that raises or hangs gives a trajectory with
    ``error`` set, never an exception here.
    """
    kwargs: dict[str, Any] = {}
    if eta is not None and target.accepts_eta:
        kwargs["eta"] = float(eta)
    if target.accepts_generator:
        kwargs["generator"] = torch.Generator(device=x_T.device).manual_seed(int(seed))
    keep = x_T.detach().clone()
    devices = [x_T.device.index or 0] if x_T.device.type == "cuda" else []
    start = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed if global_seed is None else global_seed))
        outcome = call(target.sample, probe, x_T, int(num_steps), **kwargs)
    elapsed = time.perf_counter() - start
    mutated = not torch.equal(x_T.detach(), keep)
    x_start = keep.to("cpu", torch.float64).numpy().copy()
    calls = list(probe.calls)
    if not outcome.ok:
        error = f"the loop failed: {outcome.describe()}"
        return Trajectory(int(num_steps), eta, x_start, None, tuple(calls), (), error, False, mutated, elapsed)
    output, error = _describe_output(outcome.value, x_T)
    if not calls and error is None:
        error = "the loop returned without calling the model"
    channels = int(x_T.shape[1]) if probe.learned and x_T.ndim >= 2 else None
    transitions = _transitions(probe.conv, calls, output, channels) if output is not None and probe.record else ()
    return Trajectory(int(num_steps), eta, x_start, output, tuple(calls), transitions, error, True, mutated, elapsed)


# -- step targets ------------------------------------------------------------------------------------

#: How a refused call (after a timeout) begins its reason.
REFUSED = "step not called: an earlier call timed out"


def failed_call(call: str, error: str) -> str:
    r"""``"step raised IndexError: …"`` (or ``"step timed out after …"``): a failed call of the target in
    words, ``error`` being the runner's description (:meth:`ddspec.conformance.guard.CallOutcome.describe`)."""
    return f"{call} {error}" if error.startswith("timed out") else f"{call} raised {error}"


def exact_of(value: torch.Tensor) -> Array:
    """The float64 numpy value of a tensor the target was given (exact: float64 holds every narrower float)."""
    return value.detach().to("cpu", torch.float64).numpy().copy()


def _exact(value: torch.Tensor | None) -> Array | None:
    return None if value is None else exact_of(value)


@dataclass(frozen=True)
class StepCall:
    r"""What one call of a step target's ``step`` gave.

    Attributes:
        value: the returned tensor (None when the call failed or returned something else).
        why: None when the call gave a usable tensor, else the reason in words: ``"step raised
            <ExcType>: <message>"``, ``"step timed out after …"``, ``"step not called: an earlier call timed
            out (…)"``, ``"step returned a list, expected a torch.Tensor"``, or a shape/dtype/device mismatch.
        error: the runner's ``"<ExcType>: <message>"`` (or the timeout) when the call raised or hung (for a
            refused call, the timeout that refused it), else None. It goes to ``details["errors"]``.
        refused: the call was not made because an earlier one timed out.
    """

    value: torch.Tensor | None
    why: str | None = None
    error: str | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.why is None


def _check_like(value: torch.Tensor, like: torch.Tensor) -> str | None:
    if tuple(value.shape) != tuple(like.shape):
        return f"step returned shape {tuple(value.shape)}, expected x_t's shape {tuple(like.shape)}"
    if value.dtype != like.dtype:
        return f"step returned dtype {value.dtype}, expected x_t's dtype {like.dtype}"
    if value.device != like.device:
        return f"step returned a tensor on {value.device}, expected x_t's device {like.device}"
    return None


class StepDriver:
    r"""Drives a step target: guarded calls of ``sampler.step``, each recorded as a :class:`Transition`.

    Every call goes through :meth:`CheckContext.call` (timeouts, a worker process when isolated). A timed-out
    call keeps running in the background, so after the first timeout no further call is made: each is
    *refused* at once with that timeout as its error, instead of piling up hung calls.

    Noise reaches the step in one of three ways (:func:`~ddspec.conformance.protocol.noise_source`): the
    check's ``noise`` tensor (injected, exact comparison), the ``generator`` it hands over, or, for a target
    whose noise source is ``"global"``, torch's global RNG seeded with a draw from that generator inside
    ``torch.random.fork_rng`` (successive calls get fresh seeds, the caller's global state comes back
    unchanged).
    """

    def __init__(self, ctx: CheckContext, sampler: Any, *, noise_source: str = "generator") -> None:
        self.ctx = ctx
        self.sampler = sampler
        self.noise_source = noise_source
        #: the timeout that stopped further calls, or None
        self.hung: str | None = None

    @property
    def timed_out(self) -> bool:
        """Whether a call has timed out (later calls are refused)."""
        return self.hung is not None

    def call(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        *,
        num_steps: int,
        eta: float,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        predicted_variance: torch.Tensor | None = None,
    ) -> StepCall:
        r"""One guarded call ``sampler.step(model_output, t, x_t, num_steps=, eta=, noise=, generator=,
        predicted_variance=)``; the value must be a tensor (not checked further: see :meth:`transition`)."""
        if self.hung is not None:
            return StepCall(None, f"{REFUSED} ({self.hung})", self.hung, refused=True)
        fn = getattr(self.sampler, "step", None)
        if not callable(fn):
            return StepCall(None, "sampler.step is not callable")
        kwargs = dict(num_steps=int(num_steps), eta=float(eta), noise=noise, generator=generator,
                      predicted_variance=predicted_variance)
        if generator is not None and noise is None and self.noise_source == "global":
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
            devices = [x_t.device] if x_t.device.type == "cuda" else []
            kwargs["generator"] = None

            def step() -> Any:
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    return fn(model_output, int(t), x_t, **kwargs)
        else:
            def step() -> Any:
                return fn(model_output, int(t), x_t, **kwargs)
        outcome = self.ctx.call(step)
        if not outcome.ok:
            error = outcome.describe()
            if outcome.timed_out:
                self.hung = error
            return StepCall(None, failed_call("step", error), error)
        if not isinstance(outcome.value, torch.Tensor):
            return StepCall(None, f"step returned a {type(outcome.value).__name__}, expected a torch.Tensor")
        return StepCall(outcome.value)

    def transition(
        self,
        *,
        step: int,
        t: int,
        t_prev: int,
        num_steps: int,
        eta: float,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        predicted_variance: torch.Tensor | None = None,
    ) -> tuple[Transition | None, StepCall]:
        r"""Drive one step and record it: ``(Transition, call)``, or ``(None, call)`` with ``call.why`` set.

        The transition holds float64 copies of exactly what the target was given (x_t, model output, z,
        predicted variance, taken before the call, so that a step that writes into its inputs cannot
        rewrite the record) and of what it returned; the returned tensor must have x_t's shape, dtype and
        device (protocol: a new tensor like x_t).
        """
        x64, m64, z64, pv64 = _exact(x_t), _exact(model_output), _exact(noise), _exact(predicted_variance)
        result = self.call(model_output, t, x_t, num_steps=num_steps, eta=eta, noise=noise, generator=generator,
                           predicted_variance=predicted_variance)
        if not result.ok:
            return None, result
        mismatch = _check_like(result.value, x_t)
        if mismatch is not None:
            return None, StepCall(None, mismatch)
        out = _exact(result.value)
        return Transition(t=int(t), t_prev=int(t_prev), x_t=x64, model_output=m64, x_prev=out, noise=z64,
                          predicted_variance=pv64, step=int(step)), result
