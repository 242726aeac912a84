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
    ``distribution.step_moments`` and the verdict is ``acceptable`` with the consequence.
``invariants.no_global_rng``
    A step given explicit noise or a generator leaves every global RNG untouched (torch CPU/CUDA, numpy,
    Python; :func:`ddspec.conformance.runner.rng_state_snapshot`). A leak is restored at once, so that
    it cannot disturb later checks.

Which steps are exercised: the N-step run of the largest profile step count N ≤ 50 (its first,
middle and last step; every step for ``finite``), each DDIM η of the profile, and for
``no_final_noise`` the last step of every profile N. Inputs are drawn by
:meth:`~ddspec.conformance.context.CheckContext.randn` (``sample_shape`` of the profile) and are
reproducible from the seed. A call that raises or times out is a ``fail`` finding, except where the
reference itself is singular there (ε-prediction at ᾱ = 0), which is skipped and said so.

The private helpers at the top (reading the target's conventions, its timesteps, calling its step,
the reference step and the error-model bound) are shared with :mod:`.distribution`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ddspec.reference import SingularError
from ddspec.reference import alphas as ref_alphas

from .. import expectation, tolerances
from ..protocol import Conventions
from ..results import CheckResult, Finding, Verdict
from ..runner import restore_rng_state, rng_leaked, rng_state_snapshot

__all__ = [
    "CHECKS",
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

#: The largest step count used for the per-step checks (the profile's largest N up to this).
MAX_REPRESENTATIVE_STEPS = 50
#: Offsets of the random streams of this module (``seed + offset``); distinct from other checks'.
_OFF_X, _OFF_MO, _OFF_Z, _OFF_Z2, _OFF_PV, _OFF_GEN, _OFF_GEN2 = 7201, 7202, 7203, 7204, 7205, 7206, 7207


# ---------------------------------------------------------------------------------------------------
# Shared private helpers (also used by .distribution)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    r"""What every check of these two families needs to know about the target, read once.

    ``betas``/``alpha_bar`` are the *reference's* tables for the declared schedule (expected values
    always come from the reference); ``delta[t]`` bounds the relative error of the *target's* ᾱ_t
    (:func:`ddspec.conformance.tolerances.alpha_bar_relative_bound`, with the table's dtype read off
    the target's own table, and never narrower than the compute dtype: ``u_table``). ``hung`` records
    a timed-out call, after which the check calls the target no more.
    """

    sampler: Any
    conv: Conventions
    betas: Array
    alpha_bar: Array
    u_compute: float
    u_table: float
    delta: Array
    table_note: str
    hung: list[str] = field(default_factory=list, compare=False)

    def ab(self, t: int) -> float:
        """ᾱ at index t (1 at t = −1, the data)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def delta_at(self, t: int) -> float:
        """Relative error bound of the target's ᾱ_t (0 at t = −1: an exact 1)."""
        return 0.0 if t < 0 else float(self.delta[t])


def _elapsed(start: float) -> float:
    return max(time.perf_counter() - start, 1e-9)


def _setup(ctx: Any, name: str, family: str) -> _Setup | CheckResult:
    r"""Read the target's conventions and tables; a ``fail``/``unsupported`` result when that is impossible."""
    start = time.perf_counter()
    outcome = ctx.call(lambda: ctx.sampler.conventions)
    if not outcome.ok:
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"could not read the target's conventions: {outcome.describe()}",
                           duration_s=_elapsed(start))
    conv = outcome.value
    if not isinstance(conv, Conventions):
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL,
                           message=f"the target's conventions are a {type(conv).__name__}, not a Conventions",
                           duration_s=_elapsed(start))
    if conv.unsupported:
        return CheckResult(name=name, family=family, verdict=Verdict.UNSUPPORTED,
                           message="the adapter could not interpret: " + "; ".join(conv.unsupported),
                           duration_s=_elapsed(start))
    try:
        betas = expectation.reference_betas(conv)
    except ValueError as exc:  # UnsupportedConvention included
        return CheckResult(name=name, family=family, verdict=Verdict.UNSUPPORTED,
                           message=f"no reference schedule for the declared conventions: {exc}",
                           duration_s=_elapsed(start))
    u_compute = tolerances.unit_roundoff(ctx.dtype)
    table = ctx.call(lambda: np.asarray(ctx.sampler.alphas_cumprod(), dtype=np.float64))
    if table.ok and table.value.shape == betas.shape and np.all(np.isfinite(table.value)):
        u_tab = tolerances.table_roundoff(table.value)
        note = f"target's alpha_bar table read as exact in a dtype of unit roundoff {u_tab:.3g}"
    else:
        u_tab = u_compute
        note = "target's alpha_bar table unreadable (see the schedule checks); assumed stored in the compute dtype"
    u_table = max(u_tab, u_compute)
    delta = tolerances.alpha_bar_relative_bound(betas, conv.beta_schedule, u_table, zero_snr_original=expectation.zero_snr_original(conv))
    return _Setup(ctx.sampler, conv, betas, ref_alphas.alpha_bar(betas), u_compute, u_table, delta, note)


def _step_counts(ctx: Any, setup: _Setup) -> list[int]:
    """The profile's step counts that the target can run (N ≤ T)."""
    T = setup.conv.num_train_timesteps
    return [int(n) for n in ctx.steps if 1 <= int(n) <= T]


def _representative_steps(ctx: Any, setup: _Setup) -> int | None:
    """The largest profile N ≤ :data:`MAX_REPRESENTATIVE_STEPS` (else the smallest N), or None."""
    counts = _step_counts(ctx, setup)
    if not counts:
        return None
    small = [n for n in counts if n <= MAX_REPRESENTATIVE_STEPS]
    return max(small) if small else min(counts)


def _timesteps(ctx: Any, setup: _Setup, num_steps: int) -> tuple[NDArray[np.int64] | None, str | None]:
    r"""The target's own N-step timesteps, validated (1-D ints, strictly decreasing, in [0, T−1])."""
    outcome = ctx.call(lambda: setup.sampler.timesteps(num_steps))
    if not outcome.ok:
        return None, f"timesteps({num_steps}) failed: {outcome.describe()}"
    try:
        raw = np.asarray(outcome.value)
    except Exception as exc:  # noqa: BLE001 - the target is untrusted
        return None, f"timesteps({num_steps}) returned {type(outcome.value).__name__}: {exc}"
    if raw.ndim != 1 or raw.size == 0 or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        return None, f"timesteps({num_steps}) is not a non-empty 1-D array of integers (shape {raw.shape}, {raw.dtype})"
    if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
        return None, f"timesteps({num_steps}) holds non-integer values"
    ts = raw.astype(np.int64)
    T = setup.conv.num_train_timesteps
    if np.any(ts < 0) or np.any(ts > T - 1):
        return None, f"timesteps({num_steps}) leaves [0, {T - 1}]: {ts.tolist()[:8]}"
    if np.any(np.diff(ts) >= 0):
        return None, f"timesteps({num_steps}) is not strictly decreasing: {ts.tolist()[:8]}"
    return ts, None


def _pairs(setup: _Setup, ts: NDArray[np.int64]) -> list[tuple[int, int]]:
    """(t, t_prev) of every step of the run (the last goes to −1, or to 0 under the ᾱ_0 variant)."""
    return expectation.step_pairs(setup.conv, ts)


def _variants(ctx: Any, setup: _Setup) -> list[tuple[str, float]]:
    """(label, η): every profile η for DDIM; the declared variance for DDPM (η unused)."""
    if setup.conv.family == "ddim":
        return [(f"ddim_eta={eta:g}", float(eta)) for eta in ctx.settings.etas]
    return [(f"ddpm_{setup.conv.variance_type}", 0.0)]


def _positions(num: int) -> list[int]:
    """First, middle and last step of a run of ``num`` steps."""
    return sorted({0, num // 2, num - 1})


def _np64(x: torch.Tensor) -> Array:
    """A tensor as a float64 numpy array on the CPU (exact for every floating dtype)."""
    return x.detach().to(device="cpu", dtype=torch.float64).numpy()


def _learned(conv: Conventions) -> bool:
    return conv.family == "ddpm" and conv.variance_type in ("learned", "learned_range")


def _predicted_variance(ctx: Any, conv: Conventions, shape: tuple[int, ...], offset: int) -> torch.Tensor | None:
    r"""A model variance output for the learned types, else None.

    ``learned_range``: :math:`v = \tanh(g) \in (-1, 1)` (the interpolation fraction is (v+1)/2);
    ``learned`` (diffusers' meaning, a variance): :math:`10^{-2} e^{g/2}`. g ~ N(0, 1) from ``seed + offset``.
    """
    if not _learned(conv):
        return None
    g = ctx.randn(shape, offset, dtype=torch.float64, device="cpu")
    pv = torch.tanh(g) if conv.variance_type == "learned_range" else 1e-2 * torch.exp(0.5 * g)
    return pv.to(device=ctx.device, dtype=ctx.dtype)


def _call_step(
    ctx: Any,
    setup: _Setup,
    model_output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    num_steps: int,
    eta: float,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    predicted_variance: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, str | None]:
    """One call of the target's step through ``ctx.call``: (output tensor, None) or (None, why not).

    After a call has timed out, later calls of the same check are not made (the abandoned call may
    still be running and changing the target): they return the timeout again at once.
    """
    if setup.hung:
        return None, f"not called: {setup.hung[0]}"
    outcome = ctx.call(
        lambda: setup.sampler.step(
            model_output, int(t), x_t, num_steps=int(num_steps), eta=float(eta), noise=noise,
            generator=generator, predicted_variance=predicted_variance,
        )
    )
    if not outcome.ok:
        why = f"step(t={t}, num_steps={num_steps}, eta={eta:g}) failed: {outcome.describe()}"
        if outcome.timed_out:
            setup.hung.append(f"an earlier call timed out ({why})")
        return None, why
    if not isinstance(outcome.value, torch.Tensor):
        return None, f"step(t={t}, num_steps={num_steps}, eta={eta:g}) returned {type(outcome.value).__name__}, not a tensor"
    return outcome.value, None


def _reference(
    setup: _Setup, model_output: Array, t: int, t_prev: int, x_t: Array, eta: float,
    noise: Array | None, predicted_variance: Array | None,
) -> tuple[Any, str | None]:
    r"""The reference step (float64) for the declared conventions: (StepResult, None) or (None, why).

    ``noise=None`` is replaced by zeros, so that ``prev_sample`` is the mean; ``variance`` is σ² (or
    the DDPM variance), 0 where the step is deterministic.
    """
    z = np.zeros_like(x_t) if noise is None else noise
    try:
        res = expectation.reference_step(
            setup.conv, setup.betas, model_output=model_output, t=t, t_prev=t_prev, x_t=x_t,
            noise=z, eta=eta, predicted_variance=predicted_variance,
        )
    except SingularError as exc:
        return None, f"singular: {exc}"
    except ValueError as exc:  # UnsupportedConvention included
        return None, f"unsupported: {exc}"
    return res, None


def _bound(
    setup: _Setup, eta: float, t: int, t_prev: int, model_output: Array, x_t: Array,
    noise: Array | None, predicted_variance: Array | None,
) -> Array:
    r"""Per-element error bound of one step (:func:`ddspec.conformance.tolerances.step_bound`).

    The rounding term is charged at ``u_table`` = max(unit roundoff of the target's table dtype,
    of the compute dtype), not at the compute dtype alone: a target may form its coefficients
    (1 − ᾱ, square roots, σ) in its table's dtype even when the step runs in a wider one (diffusers
    does, in float32, in a float64 run). These two families test laws and contracts, not precision
    (the ``single_step`` checks judge precision), so they take the coarser of the two.
    """
    return tolerances.step_bound(
        expectation.step_spec(setup.conv, eta),
        alpha_bar_t=setup.ab(t), alpha_bar_prev=setup.ab(t_prev),
        delta_t=setup.delta_at(t), delta_prev=setup.delta_at(t_prev),
        model_output=model_output, x_t=x_t, noise=noise, predicted_variance=predicted_variance,
        u_compute=setup.u_table,
    ).bound


def _bound_envelope(
    setup: _Setup, eta: float, t: int, t_prev: int, model_output: Array, x_t: Array,
    z_max: float, predicted_variance: Array | None,
) -> Array:
    r"""A per-element bound valid for *every* noise value :math:`|z| \le z_{\max}`.

    :func:`~ddspec.conformance.tolerances.step_bound` is a sum of terms of the form
    :math:`|a + c z|` (and :math:`|z|`); since :math:`|a + c z| \le |a| + |c| z_{\max}
    \le |a + c z_{\max}| + |a - c z_{\max}|`, the sum of the bounds at :math:`z = \pm z_{\max}` bounds
    the error at every :math:`|z| \le z_{\max}` (conservative by at most a factor 2).
    """
    zp = np.full_like(x_t, z_max)
    return (_bound(setup, eta, t, t_prev, model_output, x_t, zp, predicted_variance)
            + _bound(setup, eta, t, t_prev, model_output, x_t, -zp, predicted_variance))


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: equal values, or NaN in both (same shape assumed)."""
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


def _first_index(mask: NDArray[np.bool_]) -> tuple[int, ...]:
    """The multi-index of the first True element of ``mask``."""
    flat = int(np.flatnonzero(mask.reshape(-1))[0])
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape))


def _reproduce(module: str, function: str, result_name: str, ctx: Any) -> str:
    return (
        "from ddspec.conformance.context import CheckContext\n"
        f"from ddspec.conformance.checks.{module} import {function}\n"
        "# sampler = the target (a Sampler, or ddspec.conformance.adapters.adapt(<scheduler>))\n"
        f"ctx = CheckContext(sampler, device={str(ctx.device)!r}, dtype={ctx.dtype_name!r}, "
        f"profile={ctx.profile!r}, seed={ctx.seed})\n"
        f"[r for r in {function}(ctx) if r.name == {result_name!r}]"
    )


def _finish(
    name: str, ctx: Any, start: float, function: str, *, findings: list[Finding], checked: int,
    what: str, notes: list[str], observed: float | None = None, tolerance: float | None = None,
    acceptable: str | None = None, details: dict[str, Any] | None = None,
) -> CheckResult:
    r"""One invariant result: ``fail`` with findings, ``skipped`` if nothing could be checked, else
    ``pass`` (``acceptable`` with its consequence when a declared variant applies)."""
    det: dict[str, Any] = {"configurations_checked": checked, "notes": notes}
    det.update(details or {})
    suffix = (" Notes: " + "; ".join(notes[:3]) + ("; ..." if len(notes) > 3 else "")) if notes else ""
    if findings:
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.FAIL, observed=observed, tolerance=tolerance,
            message=f"{what}: violated in {len(findings)} case(s) of {checked}: {findings[0].message}.{suffix}",
            findings=tuple(findings), reproduce=_reproduce("invariants", function, name, ctx),
            details=det, duration_s=_elapsed(start),
        )
    if checked == 0:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.SKIPPED,
                           message=f"{what}: nothing could be checked.{suffix}", details=det,
                           duration_s=_elapsed(start))
    verdict = Verdict.ACCEPTABLE if acceptable else Verdict.PASS
    return CheckResult(
        name=name, family=FAMILY, verdict=verdict, observed=observed, tolerance=tolerance,
        message=f"{what}: holds in all {checked} case(s).{suffix}", consequence=acceptable,
        reproduce=_reproduce("invariants", function, name, ctx), details=det, duration_s=_elapsed(start),
    )


# ---------------------------------------------------------------------------------------------------
# Inputs and configurations of this module
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


def _inputs(ctx: Any, setup: _Setup, shape: tuple[int, ...]) -> _Inputs:
    x = ctx.randn(shape, _OFF_X)
    mo = ctx.randn(shape, _OFF_MO)
    z = ctx.randn(shape, _OFF_Z)
    z2 = ctx.randn(shape, _OFF_Z2)
    pv = _predicted_variance(ctx, setup.conv, shape, _OFF_PV)
    return _Inputs(x, mo, z, z2, pv, _np64(x), _np64(mo), _np64(z), None if pv is None else _np64(pv))


@dataclass(frozen=True)
class _Config:
    label: str
    eta: float
    num_steps: int
    k: int
    t: int
    t_prev: int


def _configs(
    ctx: Any, setup: _Setup, *, every_step: bool = False
) -> tuple[list[_Config], list[str], str | None]:
    r"""The (variant, step) configurations of the representative run: (configs, notes, fatal error)."""
    n = _representative_steps(ctx, setup)
    if n is None:
        return [], [], f"no profile step count N <= T = {setup.conv.num_train_timesteps}"
    ts, err = _timesteps(ctx, setup, n)
    if ts is None:
        return [], [], err
    pairs = _pairs(setup, ts)
    ks = range(len(pairs)) if every_step else _positions(len(pairs))
    return [_Config(label, eta, n, k, pairs[k][0], pairs[k][1]) for label, eta in _variants(ctx, setup) for k in ks], [], None


def _fatal(name: str, start: float, message: str) -> CheckResult:
    return CheckResult(name=name, family=FAMILY, verdict=Verdict.FAIL, message=message, duration_s=_elapsed(start))


def _singular(setup: _Setup, inp: _Inputs, cfg: _Config) -> str | None:
    """Why the reference cannot state this step (singular/unsupported), or None."""
    _, why = _reference(setup, inp.mo64, cfg.t, cfg.t_prev, inp.x64, cfg.eta, inp.z64, inp.pv64)
    return why


def _modes(ctx: Any, setup: _Setup) -> list[str]:
    """How noise reaches the target: injected (when supported) and through a generator."""
    return (["noise"] if setup.conv.supports_noise_injection else []) + ["generator"]


def _call_mode(
    ctx: Any, setup: _Setup, inp: _Inputs, cfg: _Config, mode: str, *,
    mo: torch.Tensor | None = None, x: torch.Tensor | None = None, z: torch.Tensor | None = None,
    pv: torch.Tensor | None = None, gen_offset: int = _OFF_GEN,
) -> tuple[torch.Tensor | None, str | None]:
    r"""Call the step on *clones* of the inputs (so that a step that writes into its inputs cannot
    disturb the other cases; ``no_input_mutation`` passes its own tensors and compares them)."""
    mo = (inp.mo if mo is None else mo).clone()
    x = (inp.x if x is None else x).clone()
    pv = inp.pv if pv is None else pv
    pv = None if pv is None else pv.clone()
    if mode == "noise":
        return _call_step(ctx, setup, mo, cfg.t, x, cfg.num_steps, cfg.eta,
                          noise=(inp.z if z is None else z).clone(), predicted_variance=pv)
    return _call_step(ctx, setup, mo, cfg.t, x, cfg.num_steps, cfg.eta,
                      generator=ctx.generator(gen_offset), predicted_variance=pv)


def _where(cfg: _Config, mode: str) -> str:
    return f"{cfg.label}, N={cfg.num_steps}, step {cfg.k} (t={cfg.t} -> {cfg.t_prev}), {mode}"


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
    name, start = "invariants.no_input_mutation", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    cfgs, notes, err = _configs(ctx, setup)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    findings: list[Finding] = []
    checked = 0
    for cfg in cfgs:
        why = _singular(setup, inp, cfg)
        if why:
            notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        for mode in _modes(ctx, setup):
            args = {"model_output": inp.mo.clone(), "x_t": inp.x.clone()}
            if mode == "noise":
                args["noise"] = inp.z.clone()
            if inp.pv is not None:
                args["predicted_variance"] = inp.pv.clone()
            originals = {"model_output": inp.mo, "x_t": inp.x, "noise": inp.z, "predicted_variance": inp.pv}
            _, call_err = _call_step(ctx, setup, args["model_output"], cfg.t, args["x_t"], cfg.num_steps, cfg.eta,
                                     noise=args.get("noise"),
                                     generator=ctx.generator(_OFF_GEN) if mode == "generator" else None,
                                     predicted_variance=args.get("predicted_variance"))
            checked += 1
            if call_err:
                findings.append(Finding(step=cfg.k, timestep=cfg.t, message=f"{_where(cfg, mode)}: {call_err}"))
                continue
            for arg, passed in args.items():
                orig = originals[arg]
                same = _bitwise_equal(passed, orig) if passed.shape == orig.shape else None
                if same is None or not bool(same.all()):
                    if same is None:
                        findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                                message=f"{_where(cfg, mode)}: {arg} was resized in place to {tuple(passed.shape)}"))
                        continue
                    bad = ~same.cpu().numpy()
                    idx = _first_index(bad)
                    findings.append(Finding(
                        step=cfg.k, timestep=cfg.t, element=idx, expected=float(orig[idx]), got=float(passed[idx]),
                        tolerance=0.0,
                        message=f"{_where(cfg, mode)}: the step modified {arg} in place ({int(bad.sum())} elements changed)",
                    ))
    return [_finish(name, ctx, start, "check_no_input_mutation", findings=findings, checked=checked,
                    what="inputs are not modified by the step", notes=notes,
                    observed=float(len(findings)), tolerance=0.0)]


def check_output_shape_dtype_device(ctx: Any) -> list[CheckResult]:
    r"""``invariants.output_shape_dtype_device``: the step returns a tensor with ``x_t``'s shape,
    dtype and device (a float64 run must not come back in float32, a CUDA run not on the CPU)."""
    name, start = "invariants.output_shape_dtype_device", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    cfgs, notes, err = _configs(ctx, setup)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    findings: list[Finding] = []
    checked = 0
    want = (tuple(inp.x.shape), inp.x.dtype, inp.x.device)
    for cfg in cfgs:
        why = _singular(setup, inp, cfg)
        if why:
            notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        for mode in _modes(ctx, setup):
            out, call_err = _call_mode(ctx, setup, inp, cfg, mode)
            checked += 1
            if call_err:
                findings.append(Finding(step=cfg.k, timestep=cfg.t, message=f"{_where(cfg, mode)}: {call_err}"))
                continue
            got = (tuple(out.shape), out.dtype, out.device)
            wrong = [f"{what} {g} (expected {w})" for what, g, w in zip(("shape", "dtype", "device"), got, want) if g != w]
            if wrong:
                findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                        message=f"{_where(cfg, mode)}: output has " + ", ".join(wrong)))
    return [_finish(name, ctx, start, "check_output_shape_dtype_device", findings=findings, checked=checked,
                    what=f"output shape {want[0]}, dtype {want[1]}, device {want[2]} preserved", notes=notes,
                    observed=float(len(findings)), tolerance=0.0)]


def check_finite(ctx: Any) -> list[CheckResult]:
    r"""``invariants.finite``: no NaN or inf in the output where the reference step is finite.

    Every step of the representative run, every η; the reference gets the same inputs in float64
    (and the injected noise, or zeros when the target draws its own).
    """
    name, start = "invariants.finite", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    cfgs, notes, err = _configs(ctx, setup, every_step=True)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    mode = _modes(ctx, setup)[0]
    findings: list[Finding] = []
    checked = 0
    for cfg in cfgs:
        ref, why = _reference(setup, inp.mo64, cfg.t, cfg.t_prev, inp.x64, cfg.eta,
                              inp.z64 if mode == "noise" else None, inp.pv64)
        if ref is None:
            notes.append(f"{_where(cfg, mode)}: skipped, reference {why}")
            continue
        out, call_err = _call_mode(ctx, setup, inp, cfg, mode)
        checked += 1
        if call_err:
            findings.append(Finding(step=cfg.k, timestep=cfg.t, message=f"{_where(cfg, mode)}: {call_err}"))
            continue
        if tuple(out.shape) != tuple(inp.x.shape):
            findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                    message=f"{_where(cfg, mode)}: output shape {tuple(out.shape)} != {tuple(inp.x.shape)}"))
            continue
        got = _np64(out)
        expected = np.broadcast_to(ref.prev_sample, got.shape)
        bad = ~np.isfinite(got) & np.isfinite(expected)
        if bad.any():
            idx = _first_index(bad)
            findings.append(Finding(step=cfg.k, timestep=cfg.t, element=idx, expected=float(expected[idx]),
                                    got=float(got[idx]),
                                    message=f"{_where(cfg, mode)}: {int(bad.sum())} non-finite output element(s) where the reference is finite"))
    return [_finish(name, ctx, start, "check_finite", findings=findings, checked=checked,
                    what="output finite wherever the reference is", notes=notes,
                    observed=float(len(findings)), tolerance=0.0)]


def check_deterministic(ctx: Any) -> list[CheckResult]:
    r"""``invariants.deterministic``: two calls with the same injected noise, and two calls with two
    generators seeded alike, give bitwise equal outputs (NaN-aware).

    A step that draws from a global RNG instead of its generator, or ignores the injected noise,
    fails here (and in ``invariants.no_global_rng``).
    """
    name, start = "invariants.deterministic", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    cfgs, notes, err = _configs(ctx, setup)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    findings: list[Finding] = []
    checked = 0
    for cfg in cfgs:
        why = _singular(setup, inp, cfg)
        if why:
            notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        for mode in _modes(ctx, setup):
            first, err1 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z.clone())
            second, err2 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z.clone())
            checked += 1
            if err1 or err2:
                findings.append(Finding(step=cfg.k, timestep=cfg.t, message=f"{_where(cfg, mode)}: {err1 or err2}"))
                continue
            if first.shape != second.shape:
                findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                        message=f"{_where(cfg, mode)}: repeated calls return shapes {tuple(first.shape)} and {tuple(second.shape)}"))
                continue
            same = _bitwise_equal(first, second).cpu().numpy()
            if not same.all():
                idx = _first_index(~same)
                findings.append(Finding(
                    step=cfg.k, timestep=cfg.t, element=idx, expected=float(first[idx]), got=float(second[idx]),
                    tolerance=0.0,
                    message=f"{_where(cfg, mode)}: two calls with the same {'noise' if mode == 'noise' else 'generator seed'} "
                            f"differ in {int((~same).sum())} element(s)",
                ))
    return [_finish(name, ctx, start, "check_deterministic", findings=findings, checked=checked,
                    what="same noise (or same generator seed) gives a bitwise equal output", notes=notes,
                    observed=float(len(findings)), tolerance=0.0)]


def check_batch_independence(ctx: Any) -> list[CheckResult]:
    r"""``invariants.batch_independence``: sample i's output does not depend on the other samples.

    The whole batch is stepped, then the first and the last sample alone, with the matching slice of
    the injected noise (and of the predicted variance). Each output is within the error model's bound
    ``b`` of the exact step (:func:`ddspec.conformance.tolerances.step_bound`, evaluated on that
    sample's inputs), so the two may differ by at most ``2 b`` per element; more means coupling.
    Without noise injection only deterministic steps (σ = 0) can be compared; the others are noted.
    """
    name, start = "invariants.batch_independence", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    shape = tuple(ctx.settings.sample_shape)
    if shape[0] < 2:
        return [CheckResult.skipped(name, FAMILY, f"the profile's sample_shape {shape} has a batch of 1")]
    cfgs, notes, err = _configs(ctx, setup)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, shape)
    findings: list[Finding] = []
    checked = 0
    worst = 0.0
    for cfg in cfgs:
        ref, why = _reference(setup, inp.mo64, cfg.t, cfg.t_prev, inp.x64, cfg.eta, inp.z64, inp.pv64)
        if ref is None:
            notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        deterministic = not np.any(np.asarray(ref.variance) > 0)
        if setup.conv.supports_noise_injection:
            mode = "noise"
        elif deterministic:
            mode = "generator"
        else:
            notes.append(f"{_where(cfg, '-')}: skipped, stochastic step and the target takes no injected noise")
            continue
        full, call_err = _call_mode(ctx, setup, inp, cfg, mode)
        if call_err or tuple(full.shape) != shape:
            checked += 1
            findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                    message=f"{_where(cfg, mode)}: batched call: {call_err or f'output shape {tuple(full.shape)}'}"))
            continue
        for i in sorted({0, shape[0] - 1}):
            sl = slice(i, i + 1)
            one, call_err = _call_mode(ctx, setup, inp, cfg, mode, mo=inp.mo[sl], x=inp.x[sl], z=inp.z[sl],
                                       pv=None if inp.pv is None else inp.pv[sl])
            checked += 1
            if call_err or tuple(one.shape) != (1,) + shape[1:]:
                findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                        message=f"{_where(cfg, mode)}: sample {i} alone: {call_err or f'output shape {tuple(one.shape)}'}"))
                continue
            bound = 2.0 * _bound(setup, cfg.eta, cfg.t, cfg.t_prev, inp.mo64[sl], inp.x64[sl],
                                 inp.z64[sl] if mode == "noise" else None,
                                 None if inp.pv64 is None else inp.pv64[sl])
            a, b = _np64(full[sl]), _np64(one)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, np.abs(a - b) / bound)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            ok = ratio <= 1.0
            worst = max(worst, float(ratio.max()))
            if not ok.all():
                j = tuple(int(v) for v in np.unravel_index(int(np.argmax(ratio)), ratio.shape))
                findings.append(Finding(
                    step=cfg.k, timestep=cfg.t, element=(i,) + j[1:], expected=float(a[j]), got=float(b[j]),
                    tolerance=float(bound[j]),
                    message=f"{_where(cfg, mode)}: sample {i} stepped alone differs from the batched output "
                            f"in {int((~ok).sum())} element(s) beyond 2x the error bound",
                ))
    findings.sort(key=lambda f: -((f.error or 0.0) / f.tolerance if f.tolerance else math.inf))
    return [_finish(name, ctx, start, "check_batch_independence", findings=findings, checked=checked,
                    what="a sample's output is independent of the rest of the batch "
                         "(|batched - alone| <= 2 x step_bound; observed = worst ratio)",
                    notes=notes, observed=worst, tolerance=1.0)]


def check_no_final_noise(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_final_noise``: the final step to the data adds no noise.

    For the last step of every profile N (and every η), where the reference variance is 0: two
    different injected noises, and two generators with different seeds, must give bitwise equal
    outputs. A target that adds noise at its final step fails (e.g. a DDPM that adds noise when t > 0
    rather than when t_prev ≥ 0, with ``steps_offset`` = 1). Under ``final_alpha_bar_is_one=False``
    the verdict is ``acceptable``: the last step goes to ᾱ at index 0, keeps noise of std
    √(1 − ᾱ₀), and with η > 0 adds σ z by definition (those steps are checked statistically by
    ``distribution.step_moments``).
    """
    name, start = "invariants.no_final_noise", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    findings: list[Finding] = []
    notes: list[str] = []
    checked = 0
    counts = _step_counts(ctx, setup)
    if not counts:
        return [_fatal(name, start, f"no profile step count N <= T = {setup.conv.num_train_timesteps}")]
    for n in counts:
        ts, err = _timesteps(ctx, setup, n)
        if ts is None:
            notes.append(f"N={n}: skipped, {err} (reported by the timesteps checks)")
            continue
        pairs = _pairs(setup, ts)
        t, tp = pairs[-1]
        for label, eta in _variants(ctx, setup):
            cfg = _Config(label, eta, n, len(pairs) - 1, t, tp)
            ref, why = _reference(setup, inp.mo64, t, tp, inp.x64, eta, inp.z64, inp.pv64)
            if ref is None:
                notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
                continue
            if np.any(np.asarray(ref.variance) > 0):
                notes.append(f"{_where(cfg, '-')}: the declared last step goes to t_prev={tp} with variance > 0 "
                             "(checked by distribution.step_moments)")
                continue
            for mode in _modes(ctx, setup):
                if mode == "noise":
                    a, err1 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z)
                    b, err2 = _call_mode(ctx, setup, inp, cfg, mode, z=inp.z2)
                else:
                    a, err1 = _call_mode(ctx, setup, inp, cfg, mode, gen_offset=_OFF_GEN)
                    b, err2 = _call_mode(ctx, setup, inp, cfg, mode, gen_offset=_OFF_GEN2)
                checked += 1
                if err1 or err2:
                    findings.append(Finding(step=cfg.k, timestep=t, message=f"{_where(cfg, mode)}: {err1 or err2}"))
                    continue
                if a.shape != b.shape:
                    findings.append(Finding(step=cfg.k, timestep=t, message=f"{_where(cfg, mode)}: output shapes differ"))
                    continue
                same = _bitwise_equal(a, b).cpu().numpy()
                if not same.all():
                    diff = np.abs(_np64(a) - _np64(b))
                    j = tuple(int(v) for v in np.unravel_index(int(np.nanargmax(np.where(same, -1.0, diff))), same.shape))
                    findings.append(Finding(
                        step=cfg.k, timestep=t, element=j, expected=float(a[j]), got=float(b[j]), tolerance=0.0,
                        message=f"{_where(cfg, mode)}: the final step (to t_prev={tp}, variance 0) depends on the "
                                f"{'injected noise' if mode == 'noise' else 'generator'}: {int((~same).sum())} element(s) differ, "
                                f"max |difference| {float(np.nanmax(np.where(same, 0.0, diff))):.3g}",
                    ))
    findings.sort(key=lambda f: -(f.error or 0.0))
    acceptable = expectation.final_step_consequence(setup.conv, setup.betas)
    return [_finish(name, ctx, start, "check_no_final_noise", findings=findings, checked=checked,
                    what="no noise is added at the final step", notes=notes,
                    observed=float(len(findings)), tolerance=0.0, acceptable=acceptable)]


def check_no_global_rng(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_global_rng``: a step given explicit noise or a generator draws from no global RNG.

    The global states (torch CPU and CUDA, numpy's legacy global, Python's ``random``) are recorded
    before each call (:func:`~ddspec.conformance.runner.rng_state_snapshot`) and compared after it
    (:func:`~ddspec.conformance.runner.rng_leaked`); a leak is reported and the states are restored
    (:func:`~ddspec.conformance.runner.restore_rng_state`) at once.
    """
    name, start = "invariants.no_global_rng", time.perf_counter()
    setup = _setup(ctx, name, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    cfgs, notes, err = _configs(ctx, setup)
    if err:
        return [_fatal(name, start, f"cannot run the target: {err}")]
    inp = _inputs(ctx, setup, ctx.settings.sample_shape)
    findings: list[Finding] = []
    checked = 0
    for cfg in cfgs:
        why = _singular(setup, inp, cfg)
        if why:
            notes.append(f"{_where(cfg, '-')}: skipped, reference {why}")
            continue
        for mode in _modes(ctx, setup):
            generator = ctx.generator(_OFF_GEN) if mode == "generator" else None
            before = rng_state_snapshot()
            try:
                _, call_err = _call_step(ctx, setup, inp.mo.clone(), cfg.t, inp.x.clone(), cfg.num_steps, cfg.eta,
                                         noise=inp.z.clone() if mode == "noise" else None, generator=generator,
                                         predicted_variance=None if inp.pv is None else inp.pv.clone())
                leaked = rng_leaked(before)
            finally:
                restore_rng_state(before)
            checked += 1
            if leaked:
                findings.append(Finding(step=cfg.k, timestep=cfg.t,
                                        message=f"{_where(cfg, mode)}: the step changed the {leaked}"
                                                + (f" (and failed: {call_err})" if call_err else "")))
            elif call_err:
                findings.append(Finding(step=cfg.k, timestep=cfg.t, message=f"{_where(cfg, mode)}: {call_err}"))
    return [_finish(name, ctx, start, "check_no_global_rng", findings=findings, checked=checked,
                    what="no global RNG is used when noise or a generator is given", notes=notes,
                    observed=float(len(findings)), tolerance=0.0)]


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
