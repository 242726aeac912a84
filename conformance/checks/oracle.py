r"""Exact-oracle checks: whole sampling runs driven by the exact point-mass denoiser.

The data distribution is a point mass :math:`\delta_{x_0^*}` (:class:`ddspec.reference.oracles.PointMass`),
whose exact denoiser is :math:`\hat x_0^* = x_0^*`, :math:`\epsilon^*(x_t) = (x_t - \sqrt{\bar\alpha_t}x_0^*)/\sqrt{1-\bar\alpha_t}`,
:math:`v^* = \sqrt{\bar\alpha_t}\epsilon^* - \sqrt{1-\bar\alpha_t}x_0^*`. Two points are used: one inside
[−1, 1] and one outside it, so that a declared ``clip_sample`` changes the trajectory (the reference
step applies the declared clipping, so both sides clip alike).

For every N in ``ctx.steps`` and each path

* ``oracle.point_mass.eta=0``: DDIM, η = 0 (deterministic; Song et al. 2021, eq. 12);
* ``oracle.point_mass.eta=1``: DDIM, η = 1, with injected noise;
* ``oracle.point_mass.variance_type=<type>``: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) with injected noise
  (DDPM has no deterministic path),

the harness starts both sides from the same :math:`x_T` (``ctx.randn``, in the target's dtype) and at
each step computes the model output *from the target's own current state* with the oracle (in the
declared ``prediction_type``), calls the target's step, and compares the target's new state with the
reference trajectory, which runs :func:`ddspec.conformance.expectation.reference_step` on its own
states with the same oracle and the same noise tensors. With the exact point-mass denoiser every step's
Jacobian in x is at most 1 (``docs/tolerances.md``, "Multi-step trajectories"), so errors do not grow
and the tolerance after k steps is the sum of the per-step bounds
(:func:`~ddspec.conformance.tolerances.step_bound`, evaluated on the reference state).

For the learned variance types the predicted variance is fixed: ``learned_range`` gets v = 0 (the
geometric mean of β′ and β̃′), ``learned`` the variance β′.

Verdicts: ``fail`` at the first state outside the accumulated tolerance (step, timestep, element and
values in the findings), or when the target raises, hangs, returns NaN/inf or a tensor of the wrong
shape/dtype. Every N is run on its own: the calls of one N that fail alike are one finding,
``"N=<n>: step raised <ExcType>: …"`` (the exception recorded in ``details["errors"]``), and
``observed``/``tolerance`` remain those of the runs that worked (after a timeout no further call is
made: ``details["steps_not_run_after_timeout"]``); ``skipped`` for the stochastic paths of a target that cannot take injected noise
(``supports_noise_injection=False``; the distribution checks cover them) and for runs where the
reference step is singular (ε-prediction at ᾱ = 0). A declared ``final_alpha_bar_is_one=False``
(diffusers DDIM ``set_alpha_to_one=False``) is followed by the reference (the last step goes to ᾱ at
index 0) and reported once as ``oracle.final_alpha_bar``, ``acceptable``, with its consequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ddspec.reference import SingularError
from ddspec.reference import alphas as ref_alphas
from ddspec.reference.oracles import PointMass
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..context import CheckContext
from ..expectation import UnsupportedConvention, final_step_consequence, reference_step, step_spec
from ..judge import Tally
from ..protocol import Conventions
from ..results import CheckResult, Verdict
from ..trajectory import StepDriver
from ._common import (
    RunPlan,
    StepFamilyPlan,
    exact_of,
    offset_for,
    plan_step_family,
    step_tolerance,
    tally_result,
    torch_input,
)

__all__ = ["check_point_mass_oracle", "CHECKS", "POINTS"]

FAMILY = "oracle"

#: The data points, cycled over the last (data) axis: one inside [-1, 1], one outside it.
POINTS: dict[str, tuple[float, ...]] = {
    "inside": (0.5, -0.25, 0.75, -0.6),
    "outside": (1.7, -1.3, 2.1, -1.9),
}


def _point(values: tuple[float, ...], dim: int) -> np.ndarray:
    return np.array([values[i % len(values)] for i in range(dim)], dtype=np.float64)


def _oracle_output(oracle: PointMass, prediction_type: str, x: np.ndarray, t: int, betas: np.ndarray) -> np.ndarray:
    """The exact model output of the declared parameterisation at state x and index t (float64)."""
    if prediction_type == "epsilon":
        return oracle.eps(x, t, betas)
    if prediction_type == "sample":
        return oracle.x0(x, t, betas)
    if prediction_type == "v_prediction":
        return oracle.v(x, t, betas)
    raise UnsupportedConvention(f"prediction_type={prediction_type!r} has no oracle output")


def _fixed_variance(conv, betas: np.ndarray, t: int, t_prev: int, shape: tuple[int, ...]) -> np.ndarray | None:
    if conv.family != "ddpm" or conv.variance_type not in LEARNED_VARIANCE_TYPES:
        return None
    if conv.variance_type == "learned_range":
        return np.zeros(shape)
    return np.full(shape, float(ref_alphas.one_minus_alpha_bar_ratio(betas, t, t_prev)))


def _reproduce(ctx: CheckContext, name: str, n: int) -> str:
    return (
        "from ddspec.conformance.context import CheckContext\n"
        "from ddspec.conformance.checks.oracle import check_point_mass_oracle\n"
        "# `sampler`: the target under test; reruns the oracle runs of this N only\n"
        f"ctx = CheckContext(sampler, device={str(ctx.device)!r}, dtype={ctx.dtype_name!r}, "
        f"profile={ctx.profile!r}, seed={ctx.seed}, steps=({n},))\n"
        f"r = next(r for r in check_point_mass_oracle(ctx) if r.name == {name!r})\n"
        "print(r.verdict, r.message)\n"
        "for f in r.findings:\n"
        "    print(f)\n"
    )


def _run(
    ctx: CheckContext,
    conv,
    betas: np.ndarray,
    tol,
    plan: RunPlan,
    path: str,
    eta: float,
    stochastic: bool,
    point_name: str,
    tally: Tally,
    driver: StepDriver,
) -> tuple[float, str | None]:
    r"""Drive one run; return (worst ratio, reason it stopped early or None)."""
    shape = tuple(ctx.settings.sample_shape)
    N = plan.num_steps
    point = _point(POINTS[point_name], shape[-1])
    oracle = PointMass(point)
    spec = step_spec(conv, eta)
    key = ("oracle", path, point_name, N)
    x_tgt = ctx.randn(shape, offset_for(*key, "x_T"))
    x_ref = exact_of(x_tgt)
    acc = np.zeros(shape)
    worst = 0.0
    for k, (t, t_prev) in enumerate(plan.pairs):
        label = f"N={N}, point {point_name} {point.tolist()}, state after step {k} (t={t} -> t_prev={t_prev})"
        info = {"N": N, "k": k, "t": t}
        m_ref = _oracle_output(oracle, conv.prediction_type, x_ref, t, betas)
        m_tgt, _ = torch_input(ctx, _oracle_output(oracle, conv.prediction_type, exact_of(x_tgt), t, betas))
        z = z64 = None
        if stochastic:
            z = ctx.randn(shape, offset_for(*key, k, "z"))
            z64 = exact_of(z)
        pv = pv64 = None
        fixed = _fixed_variance(conv, betas, t, t_prev, shape)
        if fixed is not None:
            pv, pv64 = torch_input(ctx, fixed)
        try:
            ref = reference_step(conv, betas, model_output=m_ref, t=t, t_prev=t_prev, x_t=x_ref,
                                 noise=z64, eta=eta, predicted_variance=pv64)
        except SingularError as exc:
            return worst, f"the reference step is singular at step {k} (t={t} -> {t_prev}): {exc}"
        except ValueError as exc:  # the declared options are outside the reference's domain
            return worst, f"the reference rejects step {k} (t={t} -> {t_prev}): {exc}"
        noisy = bool(np.any(np.asarray(ref.variance) > 0.0))
        acc = acc + tol.bound(spec, t, t_prev, model_output=m_ref, x_t=x_ref,
                              noise=z64 if noisy else None, predicted_variance=pv64)
        tr, call = driver.transition(step=k, t=t, t_prev=t_prev, num_steps=N, eta=eta, model_output=m_tgt,
                                     x_t=x_tgt, noise=z, predicted_variance=pv)
        if tr is None:
            tally.broken(step=k, timestep=t, message=call.why or "no output", info=info, num_steps=N,
                         error=call.error, where=f"point {point_name}, step {k} (t={t} -> t_prev={t_prev})")
            return float("inf"), None
        # the judge: the target's state after k+1 steps against the reference trajectory's, within the
        # accumulated bound (not one transition against one step: the states compound)
        ratio = tally.compare(tr.x_prev, ref.prev_sample, acc, step=k, timestep=t, label=label, info=info)
        worst = max(worst, ratio)
        if not np.all(np.isfinite(tr.x_prev)):
            return float("inf"), None
        x_tgt, x_ref = call.value, ref.prev_sample
    return worst, None


def _paths(conv: Conventions) -> tuple[tuple[str, float], ...]:
    """The runs of the family: DDIM with η = 0 (deterministic) and η = 1 (stochastic); DDPM with its variance."""
    if conv.family == "ddim":
        return (("oracle.point_mass.eta=0", 0.0), ("oracle.point_mass.eta=1", 1.0))
    return ((f"oracle.point_mass.variance_type={conv.variance_type}", 0.0),)


def check_point_mass_oracle(ctx: CheckContext) -> list[CheckResult]:
    r"""``oracle.point_mass.<path>`` for the family's paths, plus ``oracle.final_alpha_bar`` for the
    declared final-step variant (see the module docstring)."""
    if len(ctx.settings.sample_shape) < 1:
        return [CheckResult.skipped("oracle.point_mass", FAMILY, "the profile's sample shape has no data axis")]
    cap = getattr(ctx.settings, "oracle_max_steps", None)
    family = plan_step_family(
        ctx, FAMILY, variants=_paths,
        max_steps=None if cap is None else (cap, f"longer than the profile's oracle_max_steps={cap} "
                                                 "(single_step covers it; --profile thorough runs it end to end)"))
    if not isinstance(family, StepFamilyPlan):
        return family
    conv, betas, plans, skipped_runs, notes = family.conv, family.betas, list(family.plans), family.skipped, family.notes
    paths = [(name.removeprefix("oracle.point_mass."), eta, conv.family == "ddpm" or eta > 0.0)
             for name, eta in family.variants]
    names = family.names
    tol = step_tolerance(ctx, conv, betas)
    base: dict[str, Any] = {
        "prediction_type": conv.prediction_type,
        "points": {k: _point(v, ctx.settings.sample_shape[-1]).tolist() for k, v in POINTS.items()},
        "steps_tested": [p.num_steps for p in plans],
        "timesteps_source": {f"N={p.num_steps}": p.source for p in plans},
        "tolerance_model": "sum of the per-step step_bound's along the reference trajectory (Jacobian <= 1)",
        **tol.details(),
    }
    if skipped_runs:
        base["runs_skipped"] = skipped_runs
    if notes:
        base["timesteps_notes"] = notes

    results: list[CheckResult] = []
    driver = StepDriver(ctx, ctx.sampler)
    for (path, eta, stochastic), name in zip(paths, names):
        if stochastic and not conv.supports_noise_injection:
            results.append(CheckResult(
                name=name, family=FAMILY, verdict=Verdict.SKIPPED,
                message=("the target cannot take injected noise (supports_noise_injection=False), so its "
                         "stochastic trajectory cannot be compared deterministically; the distribution checks cover it"),
                details=base))
            continue
        if not plans:
            results.append(CheckResult.skipped(name, FAMILY, "no run can be checked: " + "; ".join(
                f"{k}: {v}" for k, v in skipped_runs.items())))
            continue
        tally = Tally()
        per_run: dict[str, float] = {}
        stopped: dict[str, str] = {}
        not_run: list[int] = []
        for plan in plans:
            if driver.timed_out and tally.n_broken:  # an abandoned call may still be running: no more calls
                not_run.append(plan.num_steps)
                continue
            for point_name in POINTS:
                worst, reason = _run(ctx, conv, betas, tol, plan, path, eta, stochastic, point_name, tally, driver)
                per_run[f"N={plan.num_steps}/{point_name}"] = worst
                if reason:
                    stopped[f"N={plan.num_steps}/{point_name}"] = reason
                if driver.timed_out:
                    break
        details = dict(base, eta=eta if conv.family == "ddim" else None, variance_type=conv.variance_type,
                       worst_ratio_per_run=per_run, worst_ratio=tally.worst_ratio, n_states_compared=tally.n_steps,
                       n_elements_exceeding=tally.n_exceeding, n_steps_broken=tally.n_broken,
                       n_elements_without_finite_tolerance=tally.n_unbounded)
        if stopped:
            details["runs_stopped"] = stopped
        if not_run:
            details["steps_not_run_after_timeout"] = not_run
        if tally.n_steps == 0 and tally.n_broken == 0:
            rejects = any(v.startswith("the reference rejects") for v in stopped.values())
            results.append(CheckResult(name=name, family=FAMILY,
                                       verdict=Verdict.UNSUPPORTED if rejects else Verdict.SKIPPED,
                                       message="no state could be compared: " + "; ".join(stopped.values()),
                                       details=details))
            continue
        info = tally.worst_info()
        results.append(tally_result(
            name, FAMILY, tally, what=path, exceeding="state elements leave the accumulated tolerance",
            within=f"every state of {sum(np.isfinite(v) for v in per_run.values())} run(s) stays within the "
                   "accumulated tolerance",
            reproduce=_reproduce(ctx, name, int(info["N"])) if (info and "N" in info) else None,
            details=details))

    consequence = final_step_consequence(conv, betas)
    if consequence is not None:
        results.append(CheckResult(
            name="oracle.final_alpha_bar", family=FAMILY, verdict=Verdict.ACCEPTABLE,
            message=("the target declares final_alpha_bar_is_one=False: its last step goes to alpha_bar at index 0, "
                     "not to the data; the oracle runs above follow that variant"),
            consequence=consequence,
            details={"final_alpha_bar_is_one": False, "alpha_bar_0": float(ref_alphas.alpha_bar(betas)[0])}))
    return results


CHECKS: list = [check_point_mass_oracle]
