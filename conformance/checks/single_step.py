r"""Single-step checks: one reverse step of the target from random inputs against the reference step.

At steps of several runs (every N in ``ctx.steps``; when a run has more than
``ctx.settings.n_timesteps`` steps, its first and last steps and a seeded random choice of the others)
the harness draws a random state :math:`x_t`, a random model output m, noise z and (for the learned
variance types) a predicted variance, all with ``ctx.randn`` in the target's dtype, and compares the
target's :math:`x_{t_\mathrm{prev}}` with :func:`ddspec.conformance.expectation.reference_step`
evaluated on exactly the values the target was given (cast back to float64):

* DDIM (Song et al. 2021, eq. 12 with σ(η) of eq. 16): one result per η in ``ctx.settings.etas``,
  ``single_step.eta=<η>``; z is given for η > 0;
* DDPM (Ho et al. 2020, Algorithm 2, posterior mean eq. 7 on the respaced schedule): one result for the
  declared variance type, ``single_step.variance_type=<type>``; z is given at every step, also the last
  one, where the reference adds none (a target that adds noise there fails). For ``learned_range`` the
  predicted value is :math:`\tanh(g)\in(-1, 1)`, for ``learned`` the variance :math:`\beta' e^{g/2} > 0`,
  g standard normal.

**Half precision (float16, bfloat16): realistic inputs.** A random model output that is
inconsistent with x_t makes x̂₀ ≈ (x_t − √(1−ᾱ)m)/√ᾱ as large as 1e5 at t = T − 1 of a cosine
schedule, past float16's 65504: a correct sampler then overflows on inputs no model produces. In
half precision the harness therefore draws (x_t, m) consistent with an oracle data law,
x₀ ~ U(−ρ, ρ) with ρ = twice the clip range (2 without clipping), by
:func:`~ddspec.conformance.checks._common.oracle_inputs` (same offsets): x̂₀ is then x₀ up to the
inputs' rounding, in the data's range, and clipping still acts. A run that still overflows on such
inputs is a real failure. float32 and float64 keep the independent random draws (no overflow is
possible there, and they exercise every term of the step).

The model output is read with the target's declared ``prediction_type`` (reported in ``details``).
Every element must satisfy ``|got − expected| ≤ step_bound`` (:func:`ddspec.conformance.tolerances.step_bound`,
``u_table = max(table_roundoff(target ᾱ), u_compute)``); an exception, a timeout, NaN/inf, or a tensor
of the wrong shape, dtype or device fails. Every N is sampled on its own: the calls of one N that fail
alike are one finding, ``"N=<n>: step raised <ExcType>: …"`` (the exception recorded in
``details["errors"]``), and ``observed``/``tolerance`` remain those of the steps that were compared. The steps are those of the target's own ``timesteps(N)``
when that is a valid subsequence (the timesteps check judges the rule itself), the step pairs those of
:func:`~ddspec.conformance.expectation.step_pairs` (the next timestep, then −1, or 0 for
``final_alpha_bar_is_one=False``).

A step where the reference equation is singular (ε-prediction at ᾱ = 0) is skipped and counted in
``details``. Stochastic steps of a target that cannot take injected noise are skipped (the
distribution checks cover them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..context import CheckContext
from ..expectation import expect_transition, step_spec
from ..judge import judge_transition
from ..trajectory import StepDriver, Transition
from ..protocol import Conventions
from ..results import CheckResult, Verdict
from ._common import (
    RunPlan,
    StepFamilyPlan,
    Tally,
    choose_steps,
    exact_of,
    oracle_inputs,
    offset_for,
    plan_step_family,
    step_tolerance,
    tally_result,
    torch_input,
)

__all__ = ["check_single_steps", "CHECKS"]

FAMILY = "single_step"
#: The names of this family's results (:func:`~._common.plan_step_family` builds them): one per DDIM η of the
#: profile, or one for a DDPM target's declared variance.
RESULT_NAMES = ("single_step.eta=<η>", "single_step.variance_type=<type>")


#: The dtypes whose single steps are fed inputs consistent with an oracle data law (issue 13 §3).
CONSISTENT_DTYPES = ("float16", "bfloat16")


def uses_consistent_inputs(ctx: CheckContext) -> bool:
    """Whether this run draws (x_t, m) consistent with an oracle data law: in half precision."""
    return ctx.dtype_name in CONSISTENT_DTYPES


def consistent_data_range(conv: Conventions) -> float:
    r"""ρ of the data law x₀ ~ U(−ρ, ρ) of the consistent inputs: twice the clip range (so that
    clipping and thresholding still act on about half the elements), 2 when nothing is clipped."""
    return 2.0 * (float(conv.clip_sample_range) if conv.clip_sample else 1.0)


def _predicted_variance(ctx: CheckContext, conv, betas, t: int, t_prev: int, offset: int) -> np.ndarray | None:
    """The float64 predicted variance drawn for a learned variance type (before the cast), else None."""
    vt = conv.variance_type
    if vt not in LEARNED_VARIANCE_TYPES:
        return None
    g = ctx.randn(ctx.settings.sample_shape, offset, dtype="float64", device="cpu").numpy()
    if vt == "learned_range":
        return np.tanh(g)
    beta_p = float(ref_alphas.one_minus_alpha_bar_ratio(betas, t, t_prev))
    return beta_p * np.exp(0.5 * g)


def _reproduce(ctx: CheckContext, conv, info: dict[str, Any]) -> str:
    shape = tuple(ctx.settings.sample_shape)
    lines = [
        "import numpy as np, torch",
        "from ddspec.conformance.context import CheckContext",
        "from ddspec.conformance.expectation import reference_betas, reference_step",
        "from ddspec.reference.alphas import one_minus_alpha_bar_ratio",
        "# `sampler`: the target under test",
        f"ctx = CheckContext(sampler, device={str(ctx.device)!r}, dtype={ctx.dtype_name!r}, seed={ctx.seed})",
        "conv, betas = sampler.conventions, reference_betas(sampler.conventions)",
    ]
    if info.get("consistent_range") is not None:
        lines += [
            "from ddspec.conformance.checks._common import oracle_inputs",
            "from ddspec.reference.alphas import alpha_bar",
            f"x_t, m, _ = oracle_inputs(ctx, conv.prediction_type, float(alpha_bar(betas)[{info['t']}]), {shape}, "
            f"{info['off_x']}, {info['off_m']}, {info['consistent_range']!r})",
        ]
    else:
        lines += [f"x_t = ctx.randn({shape}, {info['off_x']})", f"m = ctx.randn({shape}, {info['off_m']})"]
    lines += [
        f"z = ctx.randn({shape}, {info['off_z']})" if info.get("off_z") is not None else "z = None",
    ]
    if info.get("off_pv") is not None:
        g = f"ctx.randn({shape}, {info['off_pv']}, dtype='float64', device='cpu').numpy()"
        if conv.variance_type == "learned_range":
            lines.append(f"pv = ctx.to_target(np.tanh({g}))")
        else:
            lines.append(
                f"pv = ctx.to_target(float(one_minus_alpha_bar_ratio(betas, {info['t']}, {info['t_prev']})) "
                f"* np.exp(0.5 * {g}))"
            )
    else:
        lines.append("pv = None")
    f64 = "lambda a: None if a is None else a.double().cpu().numpy()"
    lines += [
        f"f64 = {f64}",
        f"got = sampler.step(m, {info['t']}, x_t, num_steps={info['N']}, eta={info['eta']!r}, noise=z, "
        "predicted_variance=pv)",
        f"ref = reference_step(conv, betas, model_output=f64(m), t={info['t']}, t_prev={info['t_prev']}, "
        f"x_t=f64(x_t), noise=f64(z), eta={info['eta']!r}, predicted_variance=f64(pv))",
        f"e = {tuple(info['element'])}" if info.get("element") is not None else "e = ...",
        "print(f64(got)[e], ref.prev_sample[e])",
    ]
    return "\n".join(lines) + "\n"


def _run_variant(
    ctx: CheckContext,
    conv,
    betas: np.ndarray,
    tol,
    plans: list[RunPlan],
    name: str,
    eta: float,
    driver: StepDriver,
) -> tuple[Tally, dict[str, Any]]:
    shape = tuple(ctx.settings.sample_shape)
    spec = step_spec(conv, eta)
    consistent = uses_consistent_inputs(ctx)
    rho = consistent_data_range(conv)
    alpha_bar = ref_alphas.alpha_bar(betas)
    tally = Tally()
    singular: list[str] = []
    rejected: list[str] = []
    no_injection = 0
    per_run: dict[str, float] = {}
    not_run: list[int] = []
    for plan in plans:
        N = plan.num_steps
        if driver.timed_out and tally.n_broken:  # an abandoned call may still be running: no more calls
            not_run.append(N)
            continue
        rng = np.random.default_rng([ctx.seed, offset_for("single_step", "choose", N)])
        chosen = choose_steps(len(plan.pairs), ctx.settings.n_timesteps, rng)
        worst = 0.0
        for k in chosen:
            t, t_prev = plan.pairs[k]
            key = ("single_step", name, N, k, t)
            off_x, off_m, off_z, off_pv = (offset_for(*key, role) for role in ("x", "m", "z", "pv"))
            if conv.family == "ddim":
                stochastic = eta > 0.0
            else:
                stochastic = t_prev >= 0
            wants_noise = stochastic or conv.family == "ddpm"
            if stochastic and not conv.supports_noise_injection:
                no_injection += 1
                continue
            use_noise = wants_noise and conv.supports_noise_injection
            if consistent:
                x, m, _ = oracle_inputs(ctx, conv.prediction_type, float(alpha_bar[t]), shape, off_x, off_m, rho)
            else:
                x = ctx.randn(shape, off_x)
                m = ctx.randn(shape, off_m)
            z = ctx.randn(shape, off_z) if use_noise else None
            pv64 = _predicted_variance(ctx, conv, betas, t, t_prev, off_pv)
            pv = None
            if pv64 is not None:
                pv, pv64 = torch_input(ctx, pv64)
            info = {"N": N, "k": k, "t": t, "t_prev": t_prev, "eta": eta, "off_x": off_x, "off_m": off_m,
                    "off_z": off_z if z is not None else None, "off_pv": off_pv if pv is not None else None,
                    "consistent_range": rho if consistent else None}
            # expect (on exactly the values the target is given) -> drive -> judge
            given = Transition(t=t, t_prev=t_prev, x_t=exact_of(x), model_output=exact_of(m), x_prev=exact_of(x),
                               noise=None if z is None else exact_of(z), predicted_variance=pv64, step=k)
            expected = expect_transition(conv, betas, given, eta)
            if expected.why_kind == "singular":
                singular.append(f"N={N} step {k} (t={t} -> {t_prev}): {expected.why}")
                continue
            if expected.why is not None:  # the declared options are outside the reference's domain
                rejected.append(f"N={N} step {k} (t={t} -> {t_prev}): {expected.why}")
                continue
            tr, call = driver.transition(step=k, t=t, t_prev=t_prev, num_steps=N, eta=eta, model_output=m, x_t=x,
                                         noise=z, predicted_variance=pv)
            if tr is None:
                tally.broken(step=k, timestep=t, message=call.why or "no output", info=info, num_steps=N,
                             error=call.error, where=f"step {k} (t={t} -> t_prev={t_prev})")
                worst = float("inf")
                if driver.timed_out:
                    break
                continue
            worst = max(worst, judge_transition(tally, tol, spec, replace(expected, transition=tr), num_steps=N,
                                                info=info))
        per_run[f"N={N}"] = worst
    extra: dict[str, Any] = {"worst_ratio_per_run": per_run}
    if not_run:
        extra["steps_not_run_after_timeout"] = not_run
    if singular:
        extra["singular_steps_skipped"] = singular[:10]
        extra["n_singular_steps_skipped"] = len(singular)
    if rejected:
        extra["steps_the_reference_rejects"] = rejected[:10]
        extra["n_steps_the_reference_rejects"] = len(rejected)
    if no_injection:
        extra["stochastic_steps_skipped_no_noise_injection"] = no_injection
    return tally, extra


def check_single_steps(ctx: CheckContext) -> list[CheckResult]:
    r"""``single_step.eta=<η>`` (DDIM) or ``single_step.variance_type=<type>`` (DDPM); see the module docstring."""
    family = plan_step_family(ctx, FAMILY)
    if not isinstance(family, StepFamilyPlan):
        return family
    conv, betas, variants, plans = family.conv, family.betas, family.variants, list(family.plans)
    skipped_runs, notes = family.skipped, family.notes
    tol = step_tolerance(ctx, conv, betas)
    base = {
        "prediction_type": conv.prediction_type,
        "prediction_type_note": "the model output is read as the target declares it (conventions.prediction_type)",
        "steps_tested": [p.num_steps for p in plans],
        "timesteps_source": {f"N={p.num_steps}": p.source for p in plans},
        "inputs": (f"consistent with the data law x0 ~ U(-{consistent_data_range(conv):g}, "
                   f"{consistent_data_range(conv):g}) (half precision)" if uses_consistent_inputs(ctx)
                   else "independent standard normal x_t and model output"),
        **tol.details(),
    }
    if skipped_runs:
        base["runs_skipped"] = skipped_runs
    if notes:
        base["timesteps_notes"] = notes

    driver = StepDriver(ctx, ctx.sampler)
    results = []
    for name, eta in variants:
        tally, extra = _run_variant(ctx, conv, betas, tol, plans, name, eta, driver)
        details = dict(base, eta=eta, variance_type=conv.variance_type, **extra,
                       worst_ratio=tally.worst_ratio, n_steps_compared=tally.n_steps,
                       n_elements_compared=tally.n_elements, n_elements_exceeding=tally.n_exceeding,
                       n_steps_broken=tally.n_broken,
                       n_elements_without_finite_tolerance=tally.n_unbounded)
        what = f"eta={eta:g}" if conv.family == "ddim" else f"variance_type={conv.variance_type!r}"
        if tally.n_steps == 0 and tally.n_broken == 0 and extra.get("n_steps_the_reference_rejects"):
            results.append(CheckResult(
                name=name, family=FAMILY, verdict=Verdict.UNSUPPORTED, details=details,
                message="the reference cannot evaluate the declared step: " + extra["steps_the_reference_rejects"][0]))
            continue
        if tally.n_steps == 0 and tally.n_broken == 0:
            reason = "no step could be compared"
            if extra.get("stochastic_steps_skipped_no_noise_injection"):
                reason += ": the target cannot take injected noise (supports_noise_injection=False); " \
                          "the distribution checks cover its stochastic steps"
            elif extra.get("n_singular_steps_skipped"):
                reason += ": every sampled step is singular in the reference"
            results.append(CheckResult(name=name, family=FAMILY, verdict=Verdict.SKIPPED, message=reason,
                                       details=details))
            continue
        info = tally.worst_info()
        results.append(tally_result(
            name, FAMILY, tally, what=what,
            exceeding=f"of {tally.n_elements} elements exceed the step tolerance",
            within=f"every element of {tally.n_steps} steps within the step tolerance",
            reproduce=_reproduce(ctx, conv, info) if info else None, details=details))
    return results


CHECKS: list = [check_single_steps]
