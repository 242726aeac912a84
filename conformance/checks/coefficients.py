r"""Coefficient identification: each step's (a, b, c) fitted by least squares and compared with the reference.

Away from clipping every DDPM/DDIM step is affine in its inputs,

.. math::

    x_{t_\mathrm{prev}} = a\,x_t + b\,m + c\,z

(DDIM: Song et al. 2021, eq. 12 with σ(η) of eq. 16; DDPM: Ho et al. 2020, eq. 7 and Algorithm 2 on
the respaced schedule; m the model output read as the declared ``prediction_type``). A structural
bug changes a coefficient for every element alike; the target's rounding is an element-wise,
zero-mean disturbance. Fitting (a, b, c) over a large batch separates the two, so that a
half-precision target is judged on its coefficients as sharply as its dtype allows (issue 13).

**Inputs.** At :func:`fit_steps` steps of every run of the profile (``choose_steps``: the first, the
last and random others; 6 quick, 10 default, 40 thorough) the harness draws, over a batch of about
``n_single_step_draws`` elements (shape ``(B, *sample_shape[1:])``, :func:`fit_batch_shape`):

* *independent* x_t, m ~ N(0, 1) where :func:`independent_inputs_fit` allows it: no clipping or
  thresholding is declared and the x̂₀ they imply cannot overflow the dtype;
* otherwise inputs *consistent with an oracle data law* (:func:`oracle_inputs`): data
  :math:`x_0 = \rho\,(2\Phi(g)-1)`, uniform on (−ρ, ρ), ε standard normal,
  :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon` rounded to the target's
  dtype, and the model output an exact model of that data would give for the *rounded* x_t, rounded;
  ρ is :func:`data_range`: half the clip range when the target clips, ½ when it thresholds (dynamic
  thresholding with s ≥ 1 is the identity on |x̂₀| ≤ 1), 1 otherwise;
* z standard normal (given where :mod:`~.single_step` gives it), and for the learned variance types
  a *constant* variance output (0.25 for ``learned_range``; ¾β′ for ``learned``), so that c is one
  number.

Clipping and thresholding are *provably* inactive on the elements that are fitted: an element
(clipping) or a sample (thresholding) enters the fit only if the exact x̂₀ of its rounded inputs plus
the error model's bound on the target's x̂₀ (``SAFETY·(γ_K(u) + table terms)·M``,
:mod:`~ddspec.conformance.tolerances`) lies inside the range. Steps where fewer than
:data:`MIN_ROWS` elements qualify (half precision at ᾱ ≈ 0, where the inputs' own rounding moves x̂₀
by u/√ᾱ) are not fitted and are counted in ``details``.

**The fit and its tolerance.** The target's output, cast to float64, is regressed on the columns
(x_t, m[, z]) without intercept; the standard errors are heteroscedasticity-consistent (HC0,
White 1980: :math:`(X^\top X)^{-1}X^\top\mathrm{diag}(r^2)X(X^\top X)^{-1}`), because the
rounding's size follows each element's magnitude. A coefficient passes when

.. math::

    |\hat\theta - \theta_\mathrm{ref}| \le R_\theta + z_{\alpha}\,\mathrm{se}(\hat\theta) + F_\theta + W_\theta

with R the rounding bound of the coefficient in the target's dtype
(:func:`~ddspec.conformance.tolerances.coefficient_bound`: each scalar factor formed in the target's
table dtype and rounded once to the compute dtype, plus the tables' own error), z the two-sided
normal quantile at the profile's false-failure rate split over every coefficient the result tests
(Bonferroni), F the float64 fit's own error (:func:`fit_error_bound`), and W the worst case of one
rounding of every element's magnitude (:attr:`Fit.worst_case`): where the output lies next to the
inputs' grid (consistent inputs, x_t ≈ √(1−ᾱ)m) or a term is below the output's ulp (a small σz),
the output's rounding snaps, a deterministic function of the fitted direction rather than noise
(``docs/tolerances.md``, "Why W"). ``details["false_failure_rate"]`` registers the result as
statistical. The expected θ_ref comes from the reference step (:func:`reference_coefficients`:
:func:`~ddspec.conformance.expectation.reference_step` at unit inputs).

Results: ``coefficients.eta=<η>`` (DDIM, one per profile η) or ``coefficients.variance_type=<type>``
(DDPM). ``details["coefficients"]`` lists, per fitted step, ``{"num_steps", "step", "t", "t_prev",
"fitted": {"a", "b"[, "c"]}, "reference": {...}, "tolerance": {...}, "rounding_bound": {...},
"standard_error": {...}, "output_rounding": {...}, "fit_error": {...}, "design", "n_elements"}``.

**Loop targets** (:func:`check_loop_coefficients`, one result ``loop.coefficients``, family ``loop``
like every result of a loop target; :data:`LOOP_CHECKS`, in ``ALL_CHECKS``): the ``loop`` family's
field-probe runs (the same recorded runs, shared) and each chosen recorded transition is fitted,
x_{k+1} ≈ a·x_k + b·out_k, with the same tolerance; the residual's
standard deviation estimates c and is judged by a χ² interval widened by the rounding (rows carry a
``"noise_std"`` entry).

Index convention (``docs/conventions.md``): t is the 0-based timestep index; t_prev = −1 is the data, ᾱ = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats as sps

from ddspec.reference import SingularError
from ddspec.reference import alphas as ref_alphas
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from ..context import CheckContext
from ..expectation import reference_step, step_spec, zero_snr_original
from ..protocol import Conventions, coefficient_dtype
from ..results import MAX_FINDINGS, CheckResult, Finding, Verdict
from ..trajectory import StepDriver
from ._loop import field_run, setup_loop
from ..tolerances import (
    K_OPS,
    coefficient_terms,
    SAFETY,
    UNIT_ROUNDOFF,
    alpha_bar_relative_bound,
    coefficient_bound,
    gamma,
    table_roundoff,
    unit_roundoff,
)
from ._common import (
    BrokenCalls,
    RunPlan,
    StepFamilyPlan,
    choose_steps,
    dtype_of_roundoff,
    offset_for,
    plan_step_family,
    read_table,
    oracle_inputs,
)

__all__ = [
    "FAMILY",
    "MIN_ROWS",
    "LEARNED_RANGE_OUTPUT",
    "Fit",
    "fit_coefficients",
    "fit_error_bound",
    "data_range",
    "reference_coefficients",
    "fit_batch_shape",
    "FIT_STEPS",
    "fit_steps",
    "check_coefficients",
    "check_loop_coefficients",
    "CHECKS",
    "LOOP_CHECKS",
]

FAMILY = "coefficients"
#: The names of the step-target results (:func:`~._common.plan_step_family` builds them).
RESULT_NAMES = ("coefficients.eta=<η>", "coefficients.variance_type=<type>")
#: A loop target's result belongs to the ``loop`` family (every result of a loop target does): ``loop.coefficients``.
LOOP_FAMILY = "loop"
LOOP_NAME = "loop.coefficients"
#: The fewest elements a step's fit uses (else the step is not fitted).
MIN_ROWS = 256
#: The constant variance output given to a ``learned_range`` target (exact in every dtype).
LEARNED_RANGE_OUTPUT = 0.25
#: The fraction of β′ given as the constant variance output of a ``learned`` target.
LEARNED_FRACTION = 0.75
#: How many steps of each run are fitted, per profile (the first, the last and random others): a
#: structural bug changes the coefficients of most steps, and ``single_step`` covers the breadth.
FIT_STEPS = {"quick": 6, "default": 10, "thorough": 40}


def fit_steps(ctx: CheckContext) -> int:
    """The number of steps per run that are fitted: :data:`FIT_STEPS` of the profile (≤ its ``n_timesteps``)."""
    cap = FIT_STEPS.get(ctx.profile, 10)
    n = ctx.settings.n_timesteps
    return cap if n is None else min(cap, n)


# -- the fit -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    r"""A least-squares fit :math:`y \approx X\theta` with HC0 standard errors.

    ``coef``/``se`` are keyed by column name; ``residual_std`` is the root mean square residual,
    ``condition`` the 2-norm condition number of the column-normalised design, ``n`` the rows used.
    """

    coef: dict[str, float]
    se: dict[str, float]
    worst_case: dict[str, float]
    residual_std: float
    condition: float
    n: int
    norm_x: float
    norm_r: float


def fit_coefficients(y: np.ndarray, columns: dict[str, np.ndarray], scale_of_error: np.ndarray | None = None) -> Fit:
    r"""Least squares of ``y`` on ``columns`` (no intercept), with heteroscedasticity-consistent errors.

    .. math::

        \hat\theta = \arg\min_\theta \|y - X\theta\|_2,\qquad
        \widehat{\mathrm{Var}}(\hat\theta) = (X^\top X)^{-1} X^\top \mathrm{diag}(r_i^2)\, X (X^\top X)^{-1}

    (White 1980, HC0; r the residuals). Columns are scaled to unit norm before solving (SVD,
    ``numpy.linalg.lstsq``) and the result scaled back. Raises ``ValueError`` naming the argument for
    empty, mismatched or non-finite input, or a rank-deficient design.
    """
    names = list(columns)
    if not names:
        raise ValueError("columns={}: at least one regressor is needed")
    y = np.asarray(y, dtype=np.float64).ravel()
    X = np.stack([np.asarray(columns[k], dtype=np.float64).ravel() for k in names], axis=1)
    if X.shape[0] != y.size:
        raise ValueError(f"columns: {X.shape[0]} rows, but y has {y.size}")
    if y.size <= len(names):
        raise ValueError(f"y: {y.size} rows cannot fit {len(names)} coefficients")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("y/columns: non-finite values cannot be fitted")
    scale = np.linalg.norm(X, axis=0)
    if np.any(scale == 0.0):
        zero = [names[i] for i in np.flatnonzero(scale == 0.0)]
        raise ValueError(f"columns={zero}: an all-zero regressor cannot be fitted")
    Xs = X / scale
    theta_s, _, rank, sv = np.linalg.lstsq(Xs, y, rcond=None)
    if rank < len(names):
        raise ValueError(f"columns={names}: the design is rank deficient (rank {rank})")
    r = y - Xs @ theta_s
    inv = np.linalg.inv(Xs.T @ Xs)
    meat = (Xs * r[:, None]).T @ (Xs * r[:, None])
    cov = inv @ meat @ inv
    theta = theta_s / scale
    se = np.sqrt(np.maximum(np.diag(cov), 0.0)) / scale
    w = np.ones_like(y) if scale_of_error is None else np.asarray(scale_of_error, dtype=np.float64).ravel()
    worst = (np.abs(inv @ Xs.T) @ w) / scale
    return Fit(
        coef={k: float(v) for k, v in zip(names, theta)},
        se={k: float(v) for k, v in zip(names, se)},
        worst_case={k: float(v) for k, v in zip(names, worst)},
        residual_std=float(np.sqrt(np.mean(r * r))),
        condition=float(sv[0] / sv[-1]),
        n=int(y.size),
        norm_x=float(np.sqrt(np.max(np.linalg.eigvalsh(X.T @ X)))),
        norm_r=float(np.linalg.norm(r)),
    )


def fit_error_bound(fit: Fit, name: str) -> float:
    r"""The float64 solver's own error in coefficient ``name``: a first-order least-squares
    perturbation bound (Higham 2002, Thm 20.1) with a backward error of :math:`10\,p\,u_{64}`,

    .. math::

        F_j = 10\,p\,u_{64}\,\kappa\,\Big(|\hat\theta_j| + \max_i|\hat\theta_i|
              + \kappa\,\frac{\|r\|_2}{\|X\|_2}\Big)

    (κ the condition number of the column-normalised design; the columns are O(1) draws).
    Negligible except for float64 targets at ill-conditioned steps.
    """
    p = len(fit.coef)
    u64 = UNIT_ROUNDOFF["float64"]
    theta = abs(fit.coef[name]) + max(abs(v) for v in fit.coef.values())
    return 10.0 * p * u64 * fit.condition * (theta + fit.condition * fit.norm_r / max(fit.norm_x, 1e-300))


# -- inputs --------------------------------------------------------------------------------------------


def data_range(conv: Conventions) -> float:
    r"""ρ of the oracle data law x₀ ~ U(−ρ, ρ) of the fit (see the module docstring)."""
    if conv.clip_sample and conv.thresholding:
        return 0.5 * min(float(conv.clip_sample_range), 1.0)
    if conv.clip_sample:
        return 0.5 * float(conv.clip_sample_range)
    if conv.thresholding:
        return 0.5
    return 1.0


def fit_batch_shape(ctx: CheckContext) -> tuple[int, ...]:
    """``(B, *sample_shape[1:])`` with B·prod(sample_shape[1:]) ≈ the profile's ``n_single_step_draws``."""
    inner = tuple(int(s) for s in ctx.settings.sample_shape[1:])
    per = int(np.prod(inner)) if inner else 1
    return (max(1, int(ctx.settings.n_single_step_draws) // per), *inner)


def independent_inputs_fit(
    conv: Conventions, alpha_bar_t: float, x: np.ndarray, m: np.ndarray, dtype: torch.dtype,
) -> bool:
    r"""Whether independent x_t, m may be used: no clipping or thresholding is declared, and the
    x̂₀ they imply stays below 1/16 of the dtype's largest finite value with the error model's
    magnitude (:math:`(|x_t| + \sqrt{1-\bar\alpha}|m|)/\sqrt{\bar\alpha}` for ε), so that no
    intermediate can overflow."""
    if conv.clip_sample or conv.thresholding or alpha_bar_t <= 0.0:
        return False
    sa, s1 = np.sqrt(alpha_bar_t), np.sqrt(1.0 - alpha_bar_t)
    ax, am = np.abs(x), np.abs(m)
    if conv.prediction_type == "epsilon":
        mag = (ax + s1 * am) / sa
    elif conv.prediction_type == "sample":
        mag = (ax + sa * am) / s1
    else:
        mag = ax + am
    return bool(np.max(mag) * 16.0 <= float(torch.finfo(dtype).max))


def _design(
    ctx: CheckContext, conv: Conventions, a: float, shape: tuple[int, ...], off_x0: int, off_eps: int, rho: float,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x_t, m, design): independent standard normals where :func:`independent_inputs_fit` allows, else
    :func:`oracle_inputs` (the same offsets)."""
    x_ind = ctx.randn(shape, off_x0, dtype=torch.float64, device="cpu").numpy()
    m_ind = ctx.randn(shape, off_eps, dtype=torch.float64, device="cpu").numpy()
    if independent_inputs_fit(conv, a, x_ind, m_ind, ctx.dtype):
        return ctx.to_target(x_ind), ctx.to_target(m_ind), "independent"
    x, m, _ = oracle_inputs(ctx, conv.prediction_type, a, shape, off_x0, off_eps, rho)
    return x, m, "consistent"


def _no_clip(conv: Conventions) -> Conventions:
    return dataclasses.replace(conv, clip_sample=False, thresholding=False)


def reference_coefficients(
    conv: Conventions, betas: np.ndarray, t: int, t_prev: int, eta: float, predicted_variance: float | None,
) -> dict[str, float]:
    r"""(a, b, c) of the reference step at (t, t_prev): :func:`reference_step` (clipping off) at unit inputs.

    The step is evaluated once on the four points (x_t, m, z) = 0, e_x, e_m, e_z; a = f(e_x) − f(0),
    and so on. ``c`` is 0 where the reference adds no noise (DDIM η = 0, the last DDPM step).
    Raises :class:`~ddspec.reference.SingularError` where the reference is singular.
    """
    x = np.array([0.0, 1.0, 0.0, 0.0])
    m = np.array([0.0, 0.0, 1.0, 0.0])
    z = np.array([0.0, 0.0, 0.0, 1.0])
    pv = None if predicted_variance is None else np.full(4, float(predicted_variance))
    res = reference_step(_no_clip(conv), betas, model_output=m, t=t, t_prev=t_prev, x_t=x, noise=z, eta=eta,
                         predicted_variance=pv)
    out = np.asarray(res.prev_sample, dtype=np.float64)
    return {"a": float(out[1] - out[0]), "b": float(out[2] - out[0]), "c": float(out[3] - out[0])}


def _constant_variance(conv: Conventions, betas: np.ndarray, t: int, t_prev: int, ctx: CheckContext) -> float | None:
    """The constant variance output of a learned type, as the target's dtype holds it; else None."""
    vt = conv.variance_type
    if conv.family != "ddpm" or vt not in LEARNED_VARIANCE_TYPES:
        return None
    if vt == "learned_range":
        value = LEARNED_RANGE_OUTPUT
    else:
        value = LEARNED_FRACTION * float(ref_alphas.one_minus_alpha_bar_ratio(betas, t, t_prev))
    return float(ctx.to_target(np.array(value)).to(torch.float64).item())


def _x0_error_bound(conv: Conventions, a: float, delta_a: float, u_c: float, u_t: float,
                    x: np.ndarray, m: np.ndarray) -> np.ndarray:
    r"""Bound on |target's x̂₀ − exact x̂₀| per element: SAFETY·(γ_K(u_c) + 2u_table + δ_a/(1−ᾱ))·M,
    M the x̂₀ formula with absolute values (as :func:`~ddspec.conformance.tolerances.step_bound`)."""
    sa, s1 = np.sqrt(a), np.sqrt(max(1.0 - a, 0.0))
    ax, am = np.abs(x), np.abs(m)
    if conv.prediction_type == "epsilon":
        M = (ax + s1 * am) / sa
    elif conv.prediction_type == "sample":
        M = am
    else:
        M = sa * ax + s1 * am
    rel = float(gamma(K_OPS, u_c)) + 2.0 * u_t + delta_a / max(1.0 - a, 1e-300)
    return SAFETY * rel * M


def _fit_mask(conv: Conventions, x0: np.ndarray, err: np.ndarray) -> np.ndarray:
    """The elements on which clipping/thresholding is provably inactive (all when neither is declared)."""
    if not (conv.clip_sample or conv.thresholding):
        return np.ones(x0.shape, dtype=bool)
    r = float(conv.clip_sample_range) if conv.clip_sample else 1.0
    if conv.thresholding:
        r = min(r, 1.0)
    ok = np.abs(x0) + err <= r
    if conv.thresholding:  # the quantile is per sample: a sample qualifies as a whole
        per = ok.reshape(ok.shape[0], -1).all(axis=1)
        ok = np.broadcast_to(per.reshape((-1,) + (1,) * (ok.ndim - 1)), ok.shape)
    return ok


# -- the check -----------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One fitted step: what goes to details["coefficients"] and the worst ratio."""

    record: dict[str, Any]
    ratios: dict[str, float]
    info: dict[str, Any]


def _variant(
    ctx: CheckContext, conv: Conventions, betas: np.ndarray, plans: list[RunPlan], name: str, eta: float,
    driver: StepDriver, u_c: float, u_t: float, deltas: np.ndarray,
) -> tuple[list[_Row], BrokenCalls, dict[str, Any]]:
    shape = fit_batch_shape(ctx)
    spec = step_spec(_no_clip(conv), eta)
    ab = ref_alphas.alpha_bar(betas)
    rho = data_range(conv)
    rows: list[_Row] = []
    broken = BrokenCalls()
    counts = {"singular": 0, "clip_range": 0, "no_injection": 0, "rejected": 0, "identity": 0}
    designs: dict[str, int] = {}
    for plan in plans:
        N = plan.num_steps
        if driver.timed_out:
            break
        rng = np.random.default_rng([ctx.seed, offset_for(FAMILY, "choose", N)])
        for k in choose_steps(len(plan.pairs), fit_steps(ctx), rng):
            t, t_prev = plan.pairs[k]
            if t == t_prev:
                # the ᾱ_0 variant's last step of a run ending at index 0 (t = t_prev = 0): the identity in exact
                # arithmetic, (a, b, c) = (1, 0, 0), whose rounding terms are 0/0; single_step judges it exactly
                counts["identity"] += 1
                continue
            stochastic = eta > 0.0 if conv.family == "ddim" else t_prev >= 0
            if stochastic and not conv.supports_noise_injection:
                counts["no_injection"] += 1
                continue
            use_noise = (stochastic or conv.family == "ddpm") and conv.supports_noise_injection
            a = float(ab[t])
            p = 1.0 if t_prev < 0 else float(ab[t_prev])
            pv_value = _constant_variance(conv, betas, t, t_prev, ctx)
            try:
                ref = reference_coefficients(conv, betas, t, t_prev, eta, pv_value)
            except SingularError:
                counts["singular"] += 1
                continue
            except ValueError:
                counts["rejected"] += 1
                continue
            key = (FAMILY, name, N, k, t)
            off_x0, off_eps, off_z = (offset_for(*key, role) for role in ("x0", "eps", "z"))
            x, m, design = _design(ctx, conv, a, shape, off_x0, off_eps, rho)
            designs[design] = designs.get(design, 0) + 1
            z = ctx.randn(shape, off_z) if use_noise else None
            x64 = x.detach().to("cpu", torch.float64).numpy()
            m64 = m.detach().to("cpu", torch.float64).numpy()
            z64 = None if z is None else z.detach().to("cpu", torch.float64).numpy()
            mask = np.ones(shape, dtype=bool)
            if conv.clip_sample or conv.thresholding:
                exact = reference_step(_no_clip(conv), betas, model_output=m64, t=t, t_prev=t_prev, x_t=x64,
                                       noise=np.zeros_like(x64), eta=eta,
                                       predicted_variance=None if pv_value is None else np.full(shape, pv_value))
                err = _x0_error_bound(conv, a, float(deltas[t]), u_c, u_t, x64, m64)
                mask = _fit_mask(conv, np.asarray(exact.pred_x0), err)
            if int(mask.sum()) < MIN_ROWS:
                counts["clip_range"] += 1
                continue
            pv = None if pv_value is None else ctx.to_target(np.full(shape, pv_value))
            info = {"N": N, "k": k, "t": t, "t_prev": t_prev, "eta": eta}
            where = f"step {k} (t={t} -> t_prev={t_prev})"
            tr, call = driver.transition(step=k, t=t, t_prev=t_prev, num_steps=N, eta=eta, model_output=m, x_t=x,
                                         noise=z, predicted_variance=pv)
            got, why = (None, call.why or "no output") if tr is None else (tr.x_prev, None)
            if why is None and not np.all(np.isfinite(got)):
                bad = int(np.count_nonzero(~np.isfinite(got)))
                why = (f"step returned {bad} non-finite element(s) on inputs consistent with the data law "
                       f"x0 ~ U(-{rho:g}, {rho:g}) (a real failure: a model's output never puts x0 out of range)")
            if why is not None:
                broken.add(num_steps=N, reason=why, error=call.error, where=where, step=k, timestep=t, info=info)
                if driver.timed_out:
                    break
                continue
            cols = {"a": x64[mask], "b": m64[mask]}
            if z64 is not None:
                cols["c"] = z64[mask]
            cb = coefficient_bound(spec, alpha_bar_t=a, alpha_bar_prev=p, delta_t=float(deltas[t]),
                                   delta_prev=0.0 if t_prev < 0 else float(deltas[t_prev]), u_compute=u_c,
                                   u_table=u_t, predicted_variance=pv_value)
            mags = {c: sum(abs(term.value) for term in ts) for c, ts in
                    coefficient_terms(spec, a, p, pv_value).items()}
            ref_y = ref["a"] * x64 + ref["b"] * m64 + (0.0 if z64 is None else ref["c"] * z64)
            magnitude = mags["a"] * np.abs(x64) + mags["b"] * np.abs(m64) + np.abs(ref_y)
            if z64 is not None:
                magnitude = magnitude + mags["c"] * np.abs(z64)
            fit = fit_coefficients(got[mask], cols, scale_of_error=u_c * magnitude[mask])
            rows.append(_Row(
                record={"num_steps": N, "step": k, "t": t, "t_prev": t_prev,
                        "fitted": dict(fit.coef), "reference": {c: ref[c] for c in fit.coef},
                        "standard_error": dict(fit.se), "rounding_bound": {c: cb.bound[c] for c in fit.coef},
                        "fit_error": {c: fit_error_bound(fit, c) for c in fit.coef},
                        "output_rounding": dict(fit.worst_case), "design": design,
                        "n_elements": fit.n, "residual_std": fit.residual_std},
                ratios={}, info=info))
    extra: dict[str, Any] = {}
    extra["designs"] = designs
    if counts["singular"]:
        extra["singular_steps_skipped"] = counts["singular"]
    if counts["clip_range"]:
        extra["steps_not_fitted_x0_may_reach_clip_range"] = counts["clip_range"]
    if counts["no_injection"]:
        extra["stochastic_steps_skipped_no_noise_injection"] = counts["no_injection"]
    if counts["rejected"]:
        extra["steps_the_reference_rejects"] = counts["rejected"]
    if counts["identity"]:
        extra["identity_steps_left_to_single_step"] = counts["identity"]
    return rows, broken, extra


def _judge(rows: list[_Row], alpha: float) -> tuple[float, int]:
    """Fill each row's tolerance and ratios; return the z bound and the number of coefficients tested."""
    n_tests = sum(len(r.record["fitted"]) for r in rows)
    z = float(sps.norm.isf(alpha / (2.0 * max(n_tests, 1))))
    for r in rows:
        rec = r.record
        snap = rec["output_rounding"]
        tol = {c: rec["rounding_bound"][c] + z * rec["standard_error"][c] + rec["fit_error"][c] + snap[c]
               for c in rec["fitted"]}
        rec["tolerance"] = tol
        for c in rec["fitted"]:
            diff = abs(rec["fitted"][c] - rec["reference"][c])
            r.ratios[c] = diff / tol[c] if tol[c] > 0 else (np.inf if diff > 0 else 0.0)
    return z, n_tests


def _finding(row: _Row, c: str, ratio: float) -> Finding:
    rec = row.record
    status = "exceeds the tolerance" if ratio > 1.0 else "within the tolerance"
    if c == "noise_std":
        ns = rec["noise_std"]
        lo, hi = ns["interval"]
        return Finding(
            step=rec["step"], timestep=rec["t"], expected=ns["reference"], got=ns["fitted"],
            tolerance=abs(ns["fitted"] - ns["reference"]) / ratio if ratio > 0 else None,
            message=(f"N={rec['num_steps']}, step {rec['step']} (t={rec['t']} -> t_prev={rec['t_prev']}): the residual's "
                     f"std (the noise c) is {ns['fitted']:.6g}, reference c = {ns['reference']:.6g}, interval "
                     f"[{lo:.6g}, {hi:.6g}] (chi-square, dof {ns['dof']}, widened by the rounding); {status}"),
        )
    return Finding(
        step=rec["step"], timestep=rec["t"], expected=rec["reference"][c], got=rec["fitted"][c],
        tolerance=rec["tolerance"][c],
        message=(f"N={rec['num_steps']}, step {rec['step']} (t={rec['t']} -> t_prev={rec['t_prev']}): coefficient "
                 f"{c} fitted {rec['fitted'][c]:.9g}, reference {rec['reference'][c]:.9g}, |diff| / tolerance = "
                 f"{ratio:.3g} (tolerance = rounding {rec['rounding_bound'][c]:.3g} + z*se "
                 f"{rec['tolerance'][c] - rec['rounding_bound'][c] - rec['fit_error'][c]:.3g}); {status}"),
    )


def _reproduce(ctx: CheckContext, name: str, function: str = "check_coefficients") -> str:
    return (
        "from ddspec.conformance.context import CheckContext\n"
        f"from ddspec.conformance.checks.coefficients import {function} as check_coefficients\n"
        "# sampler = the target (a Sampler, or ddspec.conformance.adapters.adapt(<scheduler>))\n"
        f"ctx = CheckContext(sampler, device={str(ctx.device)!r}, dtype={ctx.dtype_name!r}, "
        f"profile={ctx.profile!r}, seed={ctx.seed})\n"
        f"r = [r for r in check_coefficients(ctx) if r.name == {name!r}][0]\n"
        "print([row for row in r.details['coefficients'] if max(abs(row['fitted'][c] - row['reference'][c]) "
        "/ row['tolerance'][c] for c in row['fitted']) > 1])\n"
    )


def _result(ctx: CheckContext, name: str, what: str, rows: list[_Row], broken: BrokenCalls,
            details: dict[str, Any], alpha: float | None = None, family: str = FAMILY) -> CheckResult:
    """The verdict over fitted rows; ``alpha`` (default: the profile's rate) is split over the coefficients."""
    alpha = float(ctx.settings.false_failure_rate) if alpha is None else alpha
    z, n_tests = _judge(rows, alpha)
    details = dict(details, false_failure_rate=details.get("false_failure_rate", alpha), z_bound=z,
                   n_coefficients_tested=n_tests,
                   n_steps_fitted=len(rows), coefficients=[r.record for r in rows])
    scored = sorted(((ratio, r, c) for r in rows for c, ratio in r.ratios.items()), key=lambda e: -e[0])
    worst = scored[0] if scored else None
    exceeding = [e for e in scored if e[0] > 1.0]
    failed = bool(exceeding) or len(broken) > 0
    if broken.errors():
        details["errors"] = broken.errors()
    if not rows and not len(broken):
        return CheckResult(name=name, family=family, verdict=Verdict.SKIPPED, details=details,
                           message=f"{what}: no step could be fitted (" + ", ".join(
                               f"{k}={v}" for k, v in details.items() if k.startswith(("steps_", "singular",
                                                                                       "stochastic"))) + ")")
    shown = exceeding if exceeding else scored[:1]
    findings = broken.findings() + [_finding(r, c, ratio) for ratio, r, c in shown]
    observed = tolerance = None
    if worst is not None and worst[2] == "noise_std":
        f = _finding(worst[1], "noise_std", worst[0])
        observed, tolerance = abs(f.got - f.expected), f.tolerance
    elif worst is not None:
        rec = worst[1].record
        observed = abs(rec["fitted"][worst[2]] - rec["reference"][worst[2]])
        tolerance = rec["tolerance"][worst[2]]
    parts = []
    if len(broken):
        parts.append(f"{broken.n_calls} step call(s) produced no usable output: {broken.summary()}")
    if exceeding:
        parts.append(f"{len(exceeding)} of {len(scored)} fitted coefficients outside their tolerance "
                     f"(worst ratio {worst[0]:.3g}: {worst[2]} at t={worst[1].record['t']})")
    elif rows:
        parts.append(f"every fitted coefficient of {len(rows)} steps within its tolerance "
                     f"(worst ratio {worst[0]:.3g}, z = {z:.2f})")
    return CheckResult(
        name=name, family=family, verdict=Verdict.FAIL if failed else Verdict.PASS,
        observed=observed, tolerance=tolerance, message=f"{what}: " + "; ".join(parts),
        findings=tuple(findings[:MAX_FINDINGS]),
        reproduce=_reproduce(ctx, name, "check_loop_coefficients" if family == LOOP_FAMILY else "check_coefficients")
        if failed else None,
        details=details,
    )


def check_coefficients(ctx: CheckContext) -> list[CheckResult]:
    r"""``coefficients.eta=<η>`` (DDIM) or ``coefficients.variance_type=<type>`` (DDPM); see the module docstring."""
    family = plan_step_family(ctx, FAMILY)
    if not isinstance(family, StepFamilyPlan):
        return family
    conv, betas, variants, plans = family.conv, family.betas, family.variants, list(family.plans)
    skipped = family.skipped
    u_c = unit_roundoff(ctx.dtype)
    table, table_why = read_table(ctx, "alphas_cumprod", conv.num_train_timesteps)
    u_t = u_c if table is None else table_roundoff(table)
    deltas = alpha_bar_relative_bound(betas, conv.beta_schedule, u_t, zero_snr_original=zero_snr_original(conv))
    declared = coefficient_dtype(ctx.sampler)  # plan_step_family has validated it
    if declared is not None:  # coefficients rounded to a declared dtype: that rounding is the table-side term
        u_t = max(u_t, unit_roundoff(declared))
    base: dict[str, Any] = {
        "prediction_type": conv.prediction_type,
        "u_compute": u_c,
        "u_table": u_t,
        "target_alpha_bar_table_dtype": dtype_of_roundoff(table_roundoff(table)) if table is not None else "unknown",
        "coefficient_dtype": None if declared is None else str(declared).removeprefix("torch."),
        "data_law": f"x0 ~ U(-{data_range(conv):g}, {data_range(conv):g}), model output exact for the rounded x_t",
        "batch_shape": list(fit_batch_shape(ctx)),
        "steps_tested": [p.num_steps for p in plans],
    }
    if table is None:
        base["table_note"] = f"{table_why}; coefficients assumed formed in the compute dtype"
    if skipped:
        base["runs_skipped"] = skipped
    driver = StepDriver(ctx, ctx.sampler)
    results = []
    for name, eta in variants:
        rows, broken, extra = _variant(ctx, conv, betas, plans, name, eta, driver, u_c, u_t, deltas)
        what = f"eta={eta:g}" if conv.family == "ddim" else f"variance_type={conv.variance_type!r}"
        results.append(_result(ctx, name, what, rows, broken, dict(base, eta=eta, **extra)))
    return results


check_coefficients.target_kinds = ("step",)  # type: ignore[attr-defined]


# -- loop targets: the recorded transitions --------------------------------------------------------------


def _loop_rows(ctx: CheckContext, setup: Any, n: int, eta: float | None) -> tuple[list[_Row], str | None, dict[str, Any]]:
    r"""Fit every chosen transition of one field-probe run of the loop (see :func:`check_loop_coefficients`)."""
    run = field_run(ctx, setup, n, eta)
    if run.error is not None:
        return [], run.error, {}
    conv, betas = setup.conv, setup.betas
    ab = ref_alphas.alpha_bar(betas)
    u_c, u_t = unit_roundoff(ctx.dtype), float(setup.tol.u_step)
    learned = conv.family == "ddpm" and conv.variance_type in LEARNED_VARIANCE_TYPES
    spec = step_spec(_no_clip(conv), eta or 0.0)
    rng = np.random.default_rng([ctx.seed, offset_for(FAMILY, "loop", n, eta)])
    body = list(run.transitions)
    rows: list[_Row] = []
    counts = {"singular": 0, "clipped": 0}
    for i in choose_steps(len(body), fit_steps(ctx), rng):
        tr = body[i]
        a = float(ab[tr.t])
        p = 1.0 if tr.t_prev < 0 else float(ab[tr.t_prev])
        dummy = 0.0 if conv.variance_type == "learned_range" else 1e-3  # a, b do not depend on it
        try:
            ref = reference_coefficients(conv, betas, tr.t, tr.t_prev, eta or 0.0, dummy if learned else None)
        except (SingularError, ValueError):
            counts["singular"] += 1
            continue
        mask = np.ones(tr.x_t.shape, dtype=bool)
        if conv.clip_sample or conv.thresholding:
            exact = reference_step(_no_clip(conv), betas, model_output=tr.model_output, t=tr.t, t_prev=tr.t_prev,
                                   x_t=tr.x_t, noise=np.zeros_like(tr.x_t), eta=eta or 0.0,
                                   predicted_variance=tr.predicted_variance)
            err = _x0_error_bound(conv, a, float(setup.tol.deltas[tr.t]), u_c, u_t, tr.x_t, tr.model_output)
            mask = _fit_mask(conv, np.asarray(exact.pred_x0), err)
        if int(mask.sum()) < MIN_ROWS // 4:
            counts["clipped"] += 1
            continue
        cb = coefficient_bound(spec, alpha_bar_t=a, alpha_bar_prev=p, delta_t=float(setup.tol.deltas[tr.t]),
                               delta_prev=0.0 if tr.t_prev < 0 else float(setup.tol.deltas[tr.t_prev]),
                               u_compute=u_c, u_table=u_t, predicted_variance=dummy if learned else None)
        mags = {c: sum(abs(term.value) for term in ts) for c, ts in
                coefficient_terms(spec, a, p, dummy if learned else None).items()}
        magnitude = mags["a"] * np.abs(tr.x_t) + mags["b"] * np.abs(tr.model_output) + np.abs(tr.x_prev)
        fit = fit_coefficients(tr.x_prev[mask], {"a": tr.x_t[mask], "b": tr.model_output[mask]},
                               scale_of_error=u_c * magnitude[mask])
        record: dict[str, Any] = {
            "num_steps": n, "step": tr.step, "t": tr.t, "t_prev": tr.t_prev, "fitted": dict(fit.coef),
            "reference": {"a": ref["a"], "b": ref["b"]}, "standard_error": dict(fit.se),
            "rounding_bound": {"a": cb.bound["a"], "b": cb.bound["b"]},
            "fit_error": {c: fit_error_bound(fit, c) for c in fit.coef}, "output_rounding": dict(fit.worst_case),
            "design": "consistent", "n_elements": fit.n, "residual_std": fit.residual_std,
        }
        if not learned:
            # the residual holds c·z and the rounding: its variance estimates c² (Ho et al. Algorithm 2 / DDIM eq. 12)
            dof = fit.n - len(fit.coef)
            record["noise_std"] = {"fitted": float(fit.norm_r / math.sqrt(dof)), "reference": ref["c"],
                                   "dof": dof, "rounding_rms": float(np.sqrt(np.mean((SAFETY * float(
                                       gamma(K_OPS, u_c)) * magnitude[mask]) ** 2))), "rounding_bound": cb.bound["c"]}
        rows.append(_Row(record=record, ratios={}, info={"N": n, "t": tr.t, "t_prev": tr.t_prev, "eta": eta}))
    extra = {}
    if counts["singular"]:
        extra["singular_steps_skipped"] = counts["singular"]
    if counts["clipped"]:
        extra["steps_not_fitted_x0_may_reach_clip_range"] = counts["clipped"]
    return rows, None, extra


def _judge_noise(rows: list[_Row], alpha: float) -> int:
    r"""The residual's standard deviation against c: a χ² interval for the noise, widened by the rounding.

    With z Gaussian and dof = n − 2, dof·ŝ²/c² ~ χ²_dof; the rounding adds at most ``rounding_rms`` to
    ŝ and moves c by at most its rounding bound. Bonferroni over the rows that have a noise entry;
    the ratio is |ŝ − c| over the half-width of the interval on the side where ŝ lies.
    """
    noisy = [r for r in rows if "noise_std" in r.record]
    if not noisy:
        return 0
    q = alpha / (2.0 * len(noisy))
    for r in noisy:
        ns = r.record["noise_std"]
        dof, c, s = ns["dof"], abs(ns["reference"]), ns["fitted"]
        lo = c * math.sqrt(float(sps.chi2.ppf(q, dof)) / dof) - ns["rounding_bound"]
        hi = c * math.sqrt(float(sps.chi2.isf(q, dof)) / dof) + ns["rounding_bound"] + ns["rounding_rms"]
        ns["interval"] = [max(lo, 0.0), hi]
        width = (hi - c) if s >= c else (c - max(lo, 0.0))
        r.ratios["noise_std"] = abs(s - c) / width if width > 0 else (math.inf if s != c else 0.0)
    return len(noisy)


def check_loop_coefficients(ctx: CheckContext) -> list[CheckResult]:
    r"""``loop.coefficients`` (family ``loop``): the coefficients of a loop target's recorded transitions.

    The loop is driven once per tested (N, η) with the ``loop`` family's field probe
    (:mod:`ddspec.conformance.trajectory`: out = A_t x_t + B_t + λE_t, consistent with a Gaussian data
    law, so x̂₀ stays in range). For each chosen transition x_k → x_{k+1} the deterministic part is
    fitted, x_{k+1} ≈ a·x_k + b·out_k, and judged as the step targets' fit (with the worst-case
    output-rounding term W);
    the residual's standard deviation estimates c (noise the loop draws itself) and is judged by a χ²
    interval widened by the rounding (:func:`_judge_noise`; not for the learned variance types, whose
    c varies per element). One result for every run together (rows carry ``num_steps`` and ``eta``),
    the false-failure rate split over all of them.
    """
    setup = setup_loop(ctx, LOOP_NAME)
    if isinstance(setup, CheckResult):
        return [setup]
    alpha = float(ctx.settings.false_failure_rate)
    rows: list[_Row] = []
    extra: dict[str, Any] = {}
    runs_without_transitions: list[str] = []
    for n in setup.counts:
        for eta in setup.etas:
            label = f"N={n}" + ("" if eta is None else f",eta={eta:g}")
            got, error, more = _loop_rows(ctx, setup, n, eta)
            if error is not None:
                runs_without_transitions.append(f"{label}: {error}")
                continue
            for row in got:
                row.record["eta"] = eta
            rows.extend(got)
            for key, value in more.items():
                extra[key] = extra.get(key, 0) + value
    if not rows:
        why = "; ".join(runs_without_transitions) or "no supported N"
        return [CheckResult.skipped(LOOP_NAME, LOOP_FAMILY, f"no transition could be fitted ({why[:300]}); "
                                                            "the loop family reports why")]
    base = {"u_compute": unit_roundoff(ctx.dtype), "u_table": float(setup.tol.u_step),
            "runs": [f"N={n}" + ("" if e is None else f",eta={e:g}") for n in setup.counts for e in setup.etas], **extra}
    if runs_without_transitions:
        base["runs_without_transitions"] = runs_without_transitions
    n_noise = _judge_noise(rows, alpha / 2.0)
    return [_result(ctx, LOOP_NAME, "recorded transitions", rows, BrokenCalls(),
                    dict(base, n_noise_tests=n_noise, false_failure_rate=alpha), alpha=alpha / 2.0,
                    family=LOOP_FAMILY)]


check_loop_coefficients.target_kinds = ("loop",)  # type: ignore[attr-defined]

#: The step-target check, in :data:`ddspec.conformance.checks.ALL_CHECKS`.
CHECKS: list = [check_coefficients]
#: The loop-target check (``target_kinds = ("loop",)``), in ``ALL_CHECKS`` after the ``loop`` family: it
#: fits the field runs that family recorded (:func:`~ddspec.conformance.checks.loop.field_run`), so it drives
#: the loop again only for a run the shared store no longer holds.
LOOP_CHECKS: list = [check_loop_coefficients]
