r"""Distribution checks: the law of what a sampler draws, tested at a stated false-failure rate.

Two checks, each returning one result per DDIM η of the profile (``..eta=<η>``) or one for the
declared DDPM variance (``..ddpm_<variance_type>``):

``distribution.step_moments.<variant>`` (:func:`check_step_moments`)
    One step from a **fixed** x_t (and a fixed model output), replicated n =
    ``n_single_step_draws`` times in one batch; the target draws its own noise (``noise=None``,
    ``generator=ctx.generator(k)``). Given its inputs a step is exactly Gaussian,
    :math:`x_\mathrm{prev} \sim \mathcal N(\mu, \Sigma)` with μ the reference's ``StepResult.mean``
    and Σ its ``variance`` (σ² of DDIM eq. 12/16; β̃′, β′ or the learned variance of Ho et al.
    Algorithm 2 / Nichol & Dhariwal eq. 15). At the first, middle and last step of the N-step run
    (N = the profile's largest step count ≤ 50) the mean and variance are tested **pooled over the
    elements**: given the fixed inputs the elements are independent, element j ~ N(μ_j, σ_j²), so
    the n·d draws standardised by their own element's law, :math:`y_{ij} = (x_{ij}-\mu_j)/\sigma_j`,
    are n·d i.i.d. N(0, 1) draws (d = elements of one sample; default n·d = 16 384 · 192 ≈ 3.1·10⁶ per
    step). Three tests per stochastic step (:func:`_pooled_parts`): the common mean (z), the variance
    (χ² with d(n − 1) dof, each element's mean estimated) and the pattern of element means (χ²_d,
    which sees shifts of mixed signs). Where Σ = 0 (the final step to the data, DDIM η = 0) every
    draw must be **bitwise equal** and within the error model's bound of μ: noise added at the final
    step fails here.
``distribution.run_output.<variant>`` (:func:`check_run_output_distribution`)
    A whole run driven by the exact denoiser of Gaussian data,
    :class:`ddspec.reference.oracles.IsotropicGaussian` in d = 4 dimensions, from x_T ~ N(0, I),
    n = ``n_distribution_samples`` chains in one batch, the target drawing its own noise. With an
    exact Gaussian denoiser every step is affine plus Gaussian noise, so the output law is Gaussian
    and known in closed form (:func:`ddspec.reference.oracles.gaussian_run_output`, the declared
    ``final_alpha_bar_is_one`` variant included). Tested per coordinate: mean and variance; and the
    whole CDF of the standardised first coordinate against Φ (DKW). Step counts: the smallest, the
    middle and the largest of the profile's step counts ≤ 50.

Statistics (``docs/statistics.md``; every test is one of :mod:`ddspec.conformance.stats`)
------------------------------------------------------------------------------------------
* **False-failure rate.** Each *result* has false-failure rate at most α =
  ``ctx.settings.false_failure_rate``, split by **Bonferroni** over its statistical tests: equally
  over the (common mean, variance, mean pattern) triples of its stochastic steps (step moments; the
  pattern test is dropped where a step has a single stochastic element), or over (mean, variance,
  DKW) × step counts after the clipping tail (run output, below). A run-output test splits its share
  again over its d coordinates (:mod:`~ddspec.conformance.stats`); the pooled step tests do not
  (one statistic each). By the union bound a correct sampler
  fails a result with probability ≤ α; a report with R statistical results has false-failure
  probability ≤ R α.
* **Ledger.** Every result keeps its own :class:`~ddspec.conformance.stats.Ledger` with budget α,
  in which each test is allocated and recorded (so the split cannot exceed α); its table is in
  ``details["ledger"]``. The process-wide ``stats.LEDGER`` is *not* used: its budget (10⁻⁶) is one
  run's, while the harness runs the same check on several targets, dtypes and seeds in one process,
  each report with its own budget.
* **Power.** ``details["tests"]`` lists, per test, its α, n, the minimum detectable discrepancy at
  power 0.999 (:func:`~ddspec.conformance.stats.min_detectable`,
  :func:`~ddspec.conformance.stats.pooled_min_detectable`) plus the rounding allowance below; the
  message states, and ``details["min_detectable"]`` holds, the smallest std error, mean shift (in σ)
  and, for the run output, sup-CDF error detected at power 0.999 at *every* tested step (the worst
  over steps), rounding allowance included: a discrepancy is the departure of the target's computed
  law, its rounding included, so the allowance b adds once. The allowance limits what can be seen:
  in the default profile the statistical part is 0.47 % of σ (mean) and 0.34 % (std), and a target
  that keeps ᾱ in float32 (diffusers, in a float32 or a float64 run) adds b ≈ 0.4 % of σ at the
  tested steps, for about 0.9 % and 0.8 %; with a float64 table b is below 10⁻⁹ σ.
* **Rounding allowance.** A correct target in dtype d is off the exact law by its deterministic
  rounding, bounded per element by :func:`ddspec.conformance.tolerances.step_bound` (the error model
  of ``docs/tolerances.md``; it includes the target's ᾱ-table error, and its rounding term is charged
  at the coarser of the compute and the table dtype, since a target may form its coefficients in its
  table's dtype: diffusers does, in float32, in a float64 run). The tests are widened by it:
  the run-output mean test passes iff :math:`|\bar x - \mu| \le z_{\alpha_c/2}\,\sigma/\sqrt n + b`
  (b = mean of the per-draw bounds); the variance test passes iff the sample standard deviation is
  within :math:`[\sqrt{L}\,\sigma - b_2,\ \sqrt{U}\,\sigma + b_2]` ([L, U] the chi-square acceptance
  ratios, b₂ the RMS of the bounds: by Minkowski's inequality a perturbation e moves the sample
  standard deviation by at most RMS(e)); the DKW test passes iff
  :math:`\sup|F_n - \Phi| \le \varepsilon + \varphi(0)\, b_\infty/\sigma` (b∞ the largest bound).
  The pooled step tests are widened the same way in standardised units, a_j = b_j/σ_j: the common
  mean by the mean of a_j, the pooled standard-deviation ratio by √(n/(n−1))·RMS(a_j) (Minkowski
  over all n·d draws), √Q of the mean pattern by √n‖a‖₂ (Minkowski in R^d).
  The bounds depend on |z|: they are evaluated at an envelope (|z| ≤ 2 for the mean and RMS
  allowances, which holds for the mean of |z| and the RMS of z over n ≥ 512 draws except with
  probability < 1e-100 by Chernoff's bound; |z| ≤ 9 for the largest bound of the DKW allowance,
  violated with probability ≤ n·K·2.3e-19 over n chains of K steps). Over a run, an error in x_t
  leaves a step multiplied by the slope A of the exact step map (first order; per coordinate,
  :func:`~ddspec.reference.oracles.gaussian_step_map`), so each chain's allowance is propagated
  as :math:`E \leftarrow |A| E + b_k`.
* **Gaussianity.** The mean (z) and variance (χ²) tests are exact for Gaussian draws; a step given
  its inputs is exactly Gaussian, and so is the run output with the Gaussian oracle.
* **Clipping and thresholding.** With ``clip_sample`` or ``thresholding`` the run output is not
  Gaussian in general. The run check then uses a smaller oracle, mean λ r·(0.1, −0.1, 0.05, 0) and
  standard deviation 0.1 λ r (r = ``clip_sample_range``, or 1 for thresholding, where every
  :math:`|\hat x_0| \le 1` makes the threshold s = 1 and the operation the identity). x̂₀* is affine in
  x_t and x_t's law at every step is known (the same propagation), so a union bound on the chance
  that some chain's x̂₀ leaves [−r, r] at some step (less a margin for the target's rounding of x̂₀)
  follows from the normal tails. Per step count, λ is the largest of :data:`CLIP_DATA_SCALES`
  (1 down to 0.01) whose bound is at most 1 % of α over the step counts; that bound is charged to
  the ledger. A smaller λ is needed where a run's state is wider than the marginal its data law
  implies: N = 1 with leading spacing is one step from t = 0 starting at N(0, I), and DDPM's
  ``fixed_large`` variance widens every later state. λ depends on the configuration only, never on
  the draws. If no λ fits, that step count is ``skipped`` with the bound (or with the reason it
  cannot be bounded: the rounding margin leaves no room inside ±r).
* **Flakes.** Every random stream is a function of ``ctx.seed`` (inputs from
  :meth:`~ddspec.conformance.context.CheckContext.randn`, the target's noise from
  :meth:`~ddspec.conformance.context.CheckContext.generator`), so a check is deterministic for a
  given target, device and seed; α is the probability that a seed is unlucky for a correct target.

Targets are run on ``ctx.device``; only the test statistics are computed on the CPU, in float64.
The runs use the target's own timesteps where they form a valid subsequence, else the declared
rule's from the reference (``details["timesteps_source"]``, and a note naming the
``timesteps.sequence.N=<N>`` check that reports the wrong sequence); β and ᾱ are those of the
declared schedule. Each step count is evaluated on its own: a call that raises, hangs or returns
no tensor of the right shape gives one finding prefixed ``"N=<n>: "`` for its step count, the
result carries ``details["errors"] = [{"num_steps": n, "error": "<ExcType>: <message>"}]``, fails,
and its message leads with it; the statistics of the step counts (and positions) that worked are
still computed and reported, and ``observed`` is their worst observed/allowed (inf only when
nothing could be tested, or for a non-finite draw).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import stats as sps

from ddspec.reference import forward, parameterisation
from ddspec.reference.oracles import IsotropicGaussian, gaussian_run_output, gaussian_step_map
from ddspec.reference.variances import reverse_variance
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES

from .. import expectation, stats
from ..clip_tail import CLIP_DATA_SCALES, CLIP_TAIL_FRACTION, Z_MAX as _Z_MAX, clip_tail_bound
from ..results import CheckResult, Finding, Verdict
from ._common import (
    RunPlan,
    TargetSetup,
    call_step,
    elapsed,
    error_bound,
    error_bound_envelope,
    exact_of,
    is_learned,
    plan_for,
    random_predicted_variance,
    reference_or_why,
    representative_steps,
    reproduce_call,
    run_variants,
    setup_target,
    skipped_counts,
    step_counts,
    step_positions,
    offset_for,
)

__all__ = [
    "CHECKS", "check_step_moments", "check_run_output_distribution", "DATA_DIM", "CLIP_DATA_SCALES", "data_oracle",
]

Array = NDArray[np.float64]
FAMILY = "distribution"

#: Data dimension of the Gaussian oracle of the run check.
DATA_DIM = 4
_DATA_MEAN = np.array([0.5, -0.5, 0.25, 0.0])
_DATA_VARIANCE = 0.25
_CLIP_MEAN = np.array([0.1, -0.1, 0.05, 0.0])  # times the clip range r
_CLIP_SD = 0.1  # times r
#: Largest N used by the run check (keeps the default profile at a few seconds on a CPU).
MAX_RUN_STEPS = 50
_Z_MEAN = 2.0  # |z| envelope for the mean and RMS of the per-draw bounds
_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)  # max of the standard normal density



def _offset(*parts: object) -> int:
    r"""The offset (seed + offset) of one of this module's random streams, named, never numbered by hand
    (:func:`~ddspec.conformance.checks._common.offset_for`)."""
    return offset_for("distribution", *parts)


# ---------------------------------------------------------------------------------------------------
# Statistical tests widened by the rounding allowance
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Account:
    """The tests of one result: its ledger, their summaries and its findings."""

    name: str
    ledger: stats.Ledger
    tests: list[dict[str, Any]]
    findings: list[tuple[float, Finding]]
    worst: float = 0.0
    measured: bool = False  # whether any statistic or deterministic comparison was made

    def see(self, ratio: float) -> None:
        """Count one observed/allowed ratio."""
        self.worst = max(self.worst, ratio)
        self.measured = True

    def add(self, result: stats.StatResult, ratio: float, allowance: float, extra: str = "") -> None:
        self.ledger.record(result)
        self.see(ratio)
        self.tests.append({
            "name": result.name, "kind": result.kind, "alpha": result.false_failure_rate, "n": result.n,
            "dims": result.dims, "passed": result.passed, "observed_over_allowed": ratio,
            "min_detectable": result.describe_min_detectable() + (f" (+ rounding allowance {allowance:.3g})" if allowance else ""),
            "power": result.power, "detail": result.detail + extra,
        })


def _add_worst(acc: _Account, ratio: Array, where: dict[str, Any], coords: NDArray[np.int64],
               coord_shape: tuple[int, ...], describe: Any) -> None:
    r"""Findings for the (at most 3) worst tested coordinates whose observed/allowed ``ratio`` exceeds 1;
    ``describe(i)`` gives ``(expected, got, tolerance, message)`` of the i-th tested coordinate."""
    for i in np.argsort(-ratio)[:3]:
        if ratio[i] > 1.0:
            expected, got, tolerance, message = describe(int(i))
            acc.findings.append((float(ratio[i]), Finding(
                step=where.get("step"), timestep=where.get("timestep"), element=_element(int(coords[i]), coord_shape),
                expected=expected, got=got, tolerance=tolerance, message=f"{where['what']}: {message}")))


def _mean_part(acc: _Account, draws: Array, mu: Array, var: Array, alpha: float, allowance: Array,
               name: str, where: dict[str, Any], coords: NDArray[np.int64], coord_shape: tuple[int, ...]) -> None:
    r"""z-test of the mean, widened by ``allowance``: pass iff :math:`|\bar x - \mu| \le z\sigma/\sqrt n + b`."""
    r = stats.mean_test(draws, mu, var, alpha, name=name)
    n, d = draws.shape
    crit = float(sps.norm.isf(alpha / d / 2.0))
    dev = np.abs(draws.mean(axis=0) - mu)
    allowed = crit * np.sqrt(var / n) + allowance
    ratio = dev / allowed
    passed = bool(np.all(ratio <= 1.0))
    j = int(np.argmax(ratio))
    extra = (f"; widened by the rounding allowance (max {float(allowance.max()):.3g}): pass iff "
             f"|mean - mu| <= z*sd/sqrt(n) + allowance; worst coordinate {j}: {dev[j]:.4g} vs {allowed[j]:.4g}")
    acc.add(replace(r, passed=passed), float(ratio[j]), float(allowance.max()), extra)
    if not passed:
        _add_worst(acc, ratio, where, coords, coord_shape, lambda i: (
            float(mu[i]), float(draws[:, i].mean()), float(allowed[i]),
            f"mean of {n} draws is {dev[i] / math.sqrt(var[i] / n):.3g} standard errors from the reference mean "
            f"(allowed {crit:.3g} + rounding)"))


def _variance_part(acc: _Account, draws: Array, var: Array, alpha: float, allowance: Array,
                   name: str, where: dict[str, Any], coords: NDArray[np.int64], coord_shape: tuple[int, ...]) -> None:
    r"""χ² test of the variance (mean estimated), widened: pass iff
    :math:`\sqrt{L}\sigma - b \le s \le \sqrt{U}\sigma + b`."""
    r = stats.variance_test(draws, var, alpha, name=name)
    n, d = draws.shape
    k = n - 1
    lo = float(sps.chi2.ppf(alpha / d / 2.0, k)) / k
    hi = float(sps.chi2.isf(alpha / d / 2.0, k)) / k
    sd0 = np.sqrt(var)
    sd = draws.std(axis=0, ddof=1)
    sd_lo = np.maximum(math.sqrt(lo) * sd0 - allowance, 0.0)
    sd_hi = math.sqrt(hi) * sd0 + allowance
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sd >= sd0, (sd - sd0) / (sd_hi - sd0), (sd0 - sd) / (sd0 - sd_lo))
    passed = bool(np.all((sd >= sd_lo) & (sd <= sd_hi)))
    j = int(np.argmax(ratio))
    extra = (f"; widened by the rounding allowance (max {float(allowance.max()):.3g}) on the standard deviation: "
             f"worst coordinate {j}: sd {sd[j]:.4g}, allowed [{sd_lo[j]:.4g}, {sd_hi[j]:.4g}]")
    acc.add(replace(r, passed=passed), float(ratio[j]), float(allowance.max()), extra)

    def describe(i: int) -> tuple[float, float, float, str]:
        limit = sd_hi[i] if sd[i] >= sd0[i] else sd_lo[i]
        return (float(var[i]), float(sd[i] ** 2), float(abs(limit**2 - var[i])),
                f"variance of {n} draws is {sd[i] ** 2 / var[i]:.4g} times the reference variance "
                f"(allowed [{(sd_lo[i] / sd0[i]) ** 2:.4g}, {(sd_hi[i] / sd0[i]) ** 2:.4g}])")

    if not passed:
        _add_worst(acc, ratio, where, coords, coord_shape, describe)


def _dkw_part(acc: _Account, u: Array, alpha: float, shift: float, name: str, where: dict[str, Any],
              coord: int = 0) -> None:
    r"""DKW test of standardised draws against Φ, widened: pass iff :math:`D \le \varepsilon + \varphi(0)\,\text{shift}`."""
    r = stats.dkw_cdf_test(u, sps.norm.cdf, alpha, name=name)
    allowed = r.threshold + _PHI0 * shift
    ratio = r.statistic / allowed
    passed = bool(r.statistic <= allowed)
    extra = f"; widened by phi(0) x rounding allowance {shift:.3g} (standardised): pass iff D <= {allowed:.4g}"
    acc.add(replace(r, passed=passed), float(ratio), _PHI0 * shift, extra)
    if not passed:
        acc.findings.append((float(ratio), Finding(
            step=where.get("step"), timestep=where.get("timestep"), element=(coord,), expected=0.0, got=r.statistic,
            tolerance=allowed,
            message=f"{where['what']}: sup |F_n - Phi| of the standardised coordinate {coord} is {r.statistic:.4g} "
                    f"(allowed {allowed:.4g})",
        )))


def _pooled_parts(acc: _Account, draws: Array, mu: Array, var: Array, alpha: float, allowance: Array,
                  label: str, where: dict[str, Any], coords: NDArray[np.int64],
                  coord_shape: tuple[int, ...]) -> dict[str, Any]:
    r"""The pooled tests of one stochastic step (the module docstring), widened by the rounding
    allowance; returns what they detect at power :data:`~ddspec.conformance.stats.DEFAULT_POWER`.

    With :math:`y_{ij} = (x_{ij} - \mu_j)/\sigma_j` (n draws, d tested elements) and
    :math:`a_j = b_j/\sigma_j` the standardised allowance (``allowance`` = b, the |z| ≤ 2 envelope):

    * common mean (z): pass iff :math:`|\bar y| \le z_{\alpha/2}/\sqrt{nd} + \bar a`;
    * variance (χ², each element's mean estimated, k = d(n − 1)): with
      :math:`s = \sqrt{S/k}` the pooled standard-deviation ratio, pass iff
      :math:`\sqrt{L} - a_2 \le s \le \sqrt{U} + a_2`, :math:`a_2 = \sqrt{n/(n-1)}\,\mathrm{RMS}_j(a_j)`
      (Minkowski over all nd centred, standardised draws; centring does not increase the norm);
    * mean pattern (χ²_d of the element means), only for d ≥ 2: pass iff
      :math:`\sqrt{Q} \le \sqrt{\chi^2_{d;1-\alpha}} + \sqrt n\,\lVert a\rVert_2` (Minkowski in R^d).
    """
    n, d = draws.shape
    sd0 = np.sqrt(var)
    a = allowance / sd0
    big_n = n * d
    out: dict[str, Any] = {"step": where.get("step"), "t": where.get("timestep"), "elements": d, "draws": n}
    # common mean
    r = stats.pooled_mean_test(draws, mu, var, alpha, name=f"{label}/mean")
    ybar = (draws.mean(axis=0) - mu) / sd0
    shift = float(ybar.mean())
    a_mean = float(a.mean())
    allowed = float(r.threshold) / math.sqrt(big_n) + a_mean
    ratio = abs(shift) / allowed
    acc.add(replace(r, passed=ratio <= 1.0), ratio, a_mean,
            f"; widened by the rounding allowance {a_mean:.3g} σ: pass iff |mean shift| <= {allowed:.4g} σ")
    out["mean_shift_sigma"] = r.min_detectable + a_mean
    if ratio > 1.0:
        j = int(np.argmax(np.abs(ybar)))
        acc.findings.append((ratio, Finding(
            step=where.get("step"), timestep=where.get("timestep"), element=None, expected=0.0, got=shift,
            tolerance=allowed,
            message=f"{where['what']}: the mean of the {n} x {d} draws, each standardised by its element's reference "
                    f"mean and σ, is {shift:+.4g} σ off the reference (allowed {allowed:.4g} σ = {r.threshold:.3g}/sqrt({big_n}) "
                    f"+ rounding {a_mean:.3g} σ); element {_element(int(coords[j]), coord_shape)} is off by "
                    f"{float(ybar[j]):+.3g} σ")))
    # variance
    r = stats.pooled_variance_test(draws, var, alpha, name=f"{label}/variance")
    k = d * (n - 1)
    lo = float(sps.chi2.ppf(alpha / 2.0, k)) / k
    hi = float(sps.chi2.isf(alpha / 2.0, k)) / k
    a2 = math.sqrt(n / (n - 1.0)) * math.sqrt(float(np.mean(a**2)))
    s = math.sqrt(float(r.statistic))
    s_lo, s_hi = max(math.sqrt(lo) - a2, 0.0), math.sqrt(hi) + a2
    ratio = (s - 1.0) / (s_hi - 1.0) if s >= 1.0 else (1.0 - s) / (1.0 - s_lo)
    acc.add(replace(r, passed=s_lo <= s <= s_hi), ratio, a2,
            f"; widened by the rounding allowance {a2:.3g} on the standard-deviation ratio: sd ratio {s:.6g}, "
            f"allowed [{s_lo:.6g}, {s_hi:.6g}]")
    rho_sd = math.sqrt(r.min_detectable)
    out["std_error"] = max(rho_sd - 1.0, 1.0 - 1.0 / rho_sd) + a2
    if not s_lo <= s <= s_hi:
        v_ref = float(var.mean())
        limit = s_hi if s > 1.0 else s_lo
        acc.findings.append((ratio, Finding(
            step=where.get("step"), timestep=where.get("timestep"), element=None, expected=v_ref,
            got=v_ref * s * s, tolerance=v_ref * abs(limit * limit - 1.0),
            message=f"{where['what']}: the variance of the {n} x {d} draws, pooled over the elements with each "
                    f"standardised by its reference σ, is {s * s:.6g} times the reference (standard deviation "
                    f"{100 * (s - 1.0):+.3g} %; allowed standard-deviation ratio [{s_lo:.6g}, {s_hi:.6g}], "
                    f"rounding {a2:.3g} included)")))
    if d >= 2:
        r = stats.mean_pattern_test(draws, mu, var, alpha, name=f"{label}/mean_pattern")
        a_pat = math.sqrt(n) * float(np.linalg.norm(a))
        root_q, root_c, root_d = math.sqrt(r.statistic), math.sqrt(r.threshold), math.sqrt(d)
        limit = root_c + a_pat
        ratio = max(root_q - root_d, 0.0) / (limit - root_d)
        a_rms = a_pat / math.sqrt(big_n)
        acc.add(replace(r, passed=root_q <= limit), ratio, a_rms,
                f"; widened by the rounding allowance: pass iff sqrt(Q) <= {limit:.4g}; observed/allowed is "
                f"(sqrt(Q) - sqrt(d))/(allowed - sqrt(d))")
        out["mean_pattern_rms_sigma"] = r.min_detectable + a_rms
        if root_q > limit:
            j = int(np.argmax(np.abs(ybar)))
            rms = math.sqrt(float(np.mean(ybar**2)))
            acc.findings.append((ratio, Finding(
                step=where.get("step"), timestep=where.get("timestep"), element=_element(int(coords[j]), coord_shape),
                expected=float(mu[j]), got=float(draws[:, j].mean()), tolerance=float(limit / math.sqrt(n) * sd0[j]),
                message=f"{where['what']}: the element means of {n} draws are off the reference by an RMS of {rms:.4g} σ "
                        f"(chi-square Q = {r.statistic:.4g} over {d} elements, allowed sqrt(Q) <= {limit:.4g}, "
                        f"rounding included); worst element off by {float(ybar[j]):+.3g} σ")))
    out["rounding_allowance_sigma"] = {"mean": a_mean, "std": a2}
    return out


def _pct(x: float) -> str:
    """A fraction as a percentage with two significant digits (``0.0091`` -> ``"0.91"``)."""
    return f"{100 * x:.2g}" if 100 * x < 100 else f"{100 * x:.0f}"


def _detect_text(detect: dict[str, float], power: float) -> str:
    """``"detects a std error ≥ 0.9 % and a mean shift ≥ 0.8 % of σ ... at power 0.999"``."""
    text = (f"detects a std error >= {_pct(detect['std_error'])} % and a common mean shift >= "
            f"{_pct(detect['mean_shift_sigma'])} % of σ")
    if "mean_pattern_rms_sigma" in detect:
        text += f" (mean shifts of mixed signs: RMS >= {_pct(detect['mean_pattern_rms_sigma'])} % of σ)"
    return text + f" at every tested step, at power {power:g}, rounding allowance included"


def _element(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else (flat,)


def _verdict_result(
    ctx: Any, name: str, function: str, start: float, acc: _Account, *, message_ok: str, message_fail: str,
    notes: list[str], details: dict[str, Any], checked: int, consequence: str | None,
    fatal: list[Finding], broken: list[Finding], detect: str = "",
) -> CheckResult:
    r"""The result of one distribution check: ``fail`` on any finding, ``skipped`` when nothing was
    checked, else ``pass`` (``acceptable`` under a declared variant).

    ``broken`` are the calls that gave no usable output (raised, hung, a non-tensor or a wrong shape),
    one per step count: a failure's message leads with them, and ``observed`` stays the worst
    observed/allowed of what could be tested (inf when nothing could). ``fatal`` are contract
    violations without a statistic (a non-finite draw, noise where the reference has none): they make
    ``observed`` inf. ``detect`` (what the tests detect) ends the message of a failure too.
    """
    details = dict(details)
    details.update({
        "false_failure_rate": acc.ledger.budget,
        "false_failure_rate_spent": acc.ledger.total,
        "tests": acc.tests,
        "ledger": acc.ledger.format().splitlines(),
        "notes": notes,
    })
    violations = fatal + [f for _, f in sorted(acc.findings, key=lambda p: -p[0])]
    if fatal or (broken and not acc.measured):
        acc.worst = math.inf  # a non-finite output, noise where there must be none, or nothing ran
    suffix = (" Notes: " + "; ".join(notes[:2]) + ("; ..." if len(notes) > 2 else "")) if notes else ""
    common = dict(name=name, family=FAMILY, observed=acc.worst, tolerance=1.0, details=details,
                  reproduce=reproduce_call("distribution", function, name, ctx))
    if broken or violations:
        parts = []
        if broken:
            parts.append(f"{len(broken)} call(s) of the target's step gave no usable output, so their draws "
                         f"could not be tested: {broken[0].message}")
        if violations:
            parts.append(message_fail + ": " + violations[0].message)
        return CheckResult(verdict=Verdict.FAIL, message="; ".join(parts) + "." + detect + suffix,
                           findings=tuple(broken + violations), consequence=consequence, duration_s=elapsed(start),
                           **common)
    if checked == 0:
        return CheckResult(name=name, family=FAMILY, verdict=Verdict.SKIPPED,
                           message="nothing could be checked." + suffix, details=details, duration_s=elapsed(start))
    verdict = Verdict.ACCEPTABLE if consequence else Verdict.PASS
    return CheckResult(verdict=verdict, message=message_ok + suffix, consequence=consequence,
                       duration_s=elapsed(start), **common)


# ---------------------------------------------------------------------------------------------------
# distribution.step_moments
# ---------------------------------------------------------------------------------------------------


def _step_inputs(
    ctx: Any, setup: TargetSetup, t: int, shape: tuple[int, ...], position: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    r"""One plausible (x_t, model output, predicted variance) at index t, shape ``(1, *shape)``.

    :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon` (Ho et al. 2020, eq. 4) with
    :math:`x_0 \sim \mathcal N(0, 0.25)`, ε ~ N(0, 1), and a model that is slightly wrong,
    :math:`\hat x_0 = x_0 + 0.05\,g`, given in the declared parameterisation (ε̂ of eq. 15's inverse,
    x̂₀, or v = √ᾱ ε̂ − √(1−ᾱ) x̂₀). Values of this size keep x̂₀ near the data (a random model output
    would make x̂₀ huge at large t, where clipping would then hide the x̂₀ path). float64 draws from
    ``seed + offset``, cast to the target's dtype; the reference gets the cast values.
    """
    g = ctx.randn((3, 1) + shape, _offset("step_moments", "x", position), dtype=torch.float64, device="cpu").numpy()
    betas = setup.betas
    x0 = 0.5 * g[0]
    x_t = forward.q_sample(x0, t, g[1], betas)
    x0_hat = x0 + 0.05 * g[2]
    pt = setup.conv.prediction_type
    if pt == "sample":
        mo = x0_hat
    else:
        eps_hat = parameterisation.predict_eps_from_x0(x_t, x0_hat, t, betas)
        mo = eps_hat if pt == "epsilon" else parameterisation.v_from_x0_eps(x0_hat, eps_hat, t, betas)
    pv = random_predicted_variance(ctx, setup.conv, (1,) + shape, _offset("step_moments", "pv", position))
    return ctx.to_target(x_t), ctx.to_target(mo), pv


def check_step_moments(ctx: Any) -> list[CheckResult]:
    r"""Per-step mean and variance of x_prev from a fixed x_t, against the reference (see the module docstring).

    For each variant (DDIM η, or the DDPM variance) one result ``distribution.step_moments.<variant>``
    covering the first, middle and last step of the representative N-step run. At each step the
    reference :math:`\mathcal N(\mu, \Sigma)` comes from :func:`ddspec.conformance.expectation.reference_step`
    (with zero noise its ``prev_sample`` is μ; Σ is its ``variance``).

    * Σ > 0: the pooled common-mean z-test, variance χ²-test and mean-pattern χ²-test on the n draws
      of d elements (:func:`_pooled_parts`), each at α/(3 S) for S stochastic steps (Bonferroni),
      widened by the rounding allowance.
    * A call that raises: one finding ``"N=<n>: ..."`` and ``details["errors"]``; the other
      positions are still tested.
    * Σ = 0: all n draws must be bitwise equal, and within :func:`~ddspec.conformance.tolerances.step_bound`
      of μ (no statistics, no α).
    """
    base, start = "distribution.step_moments", time.perf_counter()
    setup = setup_target(ctx, base, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    n_steps = representative_steps(ctx, setup)
    if n_steps is None:
        return [CheckResult(name=base, family=FAMILY, verdict=Verdict.FAIL, duration_s=elapsed(start),
                            message=f"no profile step count N <= T = {setup.conv.num_train_timesteps}")]
    run, note, why = plan_for(ctx, setup, n_steps)
    if run is None:
        return [CheckResult(name=base, family=FAMILY, verdict=Verdict.FAIL, duration_s=elapsed(start),
                            message=f"cannot run the target: {why}")]
    return [
        _step_moments_variant(ctx, setup, f"{base}.{label}", vi, eta, n_steps, list(run.pairs), run.source, note)
        for vi, (label, eta) in enumerate(run_variants(ctx, setup))
    ]


@dataclass(frozen=True)
class _PlannedStep:
    r"""One step of a step-moments variant: where it is, its inputs (as given to the target and as float64)
    and the reference law :math:`\mathcal N(\mu, \mathrm{diag}(v))` of its output."""

    position: int
    step: int
    t: int
    t_prev: int
    mean: Array
    variance: Array
    x_t: Any
    model_output: Any
    predicted_variance: Any
    x_t64: Array
    model_output64: Array
    predicted_variance64: Array | None

    @property
    def stochastic(self) -> bool:
        return bool(np.any(self.variance > 0))


@dataclass(frozen=True)
class _PlannedRun:
    r"""One N of a run-output variant: its timesteps, step pairs, the closed-form output law, the probability
    budgeted for x̂₀ leaving the clip range, and the data oracle (with its scale) the run is driven by."""

    n_steps: int
    timesteps: NDArray[np.int64]
    pairs: list[tuple[int, int]]
    law: Any
    tail: float
    oracle: IsotropicGaussian
    scale: float | None


def _step_moments_variant(
    ctx: Any, setup: TargetSetup, name: str, vi: int, eta: float, n_steps: int, pairs: list[tuple[int, int]],
    source: str, note: str | None,
) -> CheckResult:
    start = time.perf_counter()
    n = int(ctx.settings.n_single_step_draws)
    shape = tuple(int(s) for s in ctx.settings.sample_shape[1:])
    alpha = float(ctx.settings.false_failure_rate)
    notes: list[str] = [note] if note else []
    fatal: list[Finding] = []
    broken: list[Finding] = []

    plan = []
    for pi, k in enumerate(step_positions(len(pairs))):
        t, tp = pairs[k]
        x1, mo1, pv1 = _step_inputs(ctx, setup, t, shape, pi)
        x64, mo64 = exact_of(x1), exact_of(mo1)
        pv64 = None if pv1 is None else exact_of(pv1)
        ref, why = reference_or_why(setup, mo64, t, tp, x64, eta, None, pv64)
        if ref is None:
            notes.append(f"step {k} (t={t} -> {tp}): skipped, reference {why}")
            continue
        var = np.broadcast_to(np.asarray(ref.variance, dtype=np.float64), x64.shape).reshape(-1)
        plan.append(_PlannedStep(pi, k, t, tp, ref.mean.reshape(-1), var, x1, mo1, pv1, x64, mo64, pv64))
    n_stat = sum(_n_step_tests(int(np.count_nonzero(p.variance > 0))) for p in plan)
    alpha_each = alpha / n_stat if n_stat else alpha
    acc = _Account(name, stats.Ledger(budget=alpha), [], [])
    positions = []
    detects: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []

    for planned in plan:
        pi, k, t, tp, mu, var = planned.position, planned.step, planned.t, planned.t_prev, planned.mean, planned.variance
        x1, mo1, pv1 = planned.x_t, planned.model_output, planned.predicted_variance
        x64, mo64, pv64 = planned.x_t64, planned.model_output64, planned.predicted_variance64
        where = {"step": k, "timestep": t, "what": f"step {k} of N={n_steps} (t={t} -> {tp})"}
        positions.append({"step": k, "t": t, "t_prev": tp, "max_variance": float(var.max()),
                          "kind": "stochastic" if np.any(var > 0) else "deterministic"})
        xb = x1.expand((n,) + shape).contiguous()
        mob = mo1.expand((n,) + shape).contiguous()
        pvb = None if pv1 is None else pv1.expand((n,) + shape).contiguous()
        out, call = call_step(ctx, setup, mob, t, xb, n_steps, eta,
                              generator=ctx.generator(_offset("step_moments", "generator", vi, pi)), predicted_variance=pvb)
        err = None if call is None else call.why
        if err is None and tuple(out.shape) != (n,) + shape:
            err = f"output shape {tuple(out.shape)}, expected {(n,) + shape}"
        if err is not None:
            # one finding per step count (issue 7 section 3); the other positions are still tested
            if not errors:
                errors.append({"num_steps": n_steps, "error": (call.error if call is not None else None) or err})
                broken.append(Finding(step=k, timestep=t, message=f"N={n_steps}: {where['what']}: {err}"))
            continue
        draws = exact_of(out).reshape(n, -1)
        bad = ~np.isfinite(draws)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            fatal.append(Finding(step=k, timestep=t, element=_element(j, shape), expected=float(mu[j]), got=float(draws[bad][0]),
                                 message=f"{where['what']}: {int(bad.sum())} non-finite draws"))
            continue
        det = var == 0.0
        if det.any():
            bound = error_bound(setup, eta, t, tp, mo64, x64, None, pv64).reshape(-1)
            spread = np.any(draws[:, det] != draws[0, det], axis=0)
            if spread.any():
                j = int(np.flatnonzero(det)[int(np.argmax(spread))])
                diffs = np.abs(draws[:, j] - draws[0, j])
                i = int(np.argmax(diffs))
                fatal.append(Finding(step=k, timestep=t, element=_element(j, shape), expected=float(draws[0, j]),
                                     got=float(draws[i, j]), tolerance=0.0,
                                     message=f"{where['what']}: the reference variance is 0 (no noise"
                                             f"{' at the final step' if tp == pairs[-1][1] and k == len(pairs) - 1 else ''}), "
                                             f"but the draws differ in {int(spread.sum())} element(s) "
                                             f"(max |difference| {float(diffs.max()):.3g}): the target adds noise"))
            else:
                errs = np.abs(draws[0, det] - mu[det])
                ratio = errs / np.maximum(bound[det], 1e-300)
                acc.see(float(ratio.max()) if ratio.size else 0.0)
                if np.any(errs > bound[det]):
                    i = int(np.argmax(ratio))
                    j = int(np.flatnonzero(det)[i])
                    acc.findings.append((float(ratio[i]), Finding(
                        step=k, timestep=t, element=_element(j, shape), expected=float(mu[j]), got=float(draws[0, j]),
                        tolerance=float(bound[j]),
                        message=f"{where['what']}: deterministic output off the reference mean by more than the error bound")))
        sto = ~det
        if sto.any():
            coords = np.flatnonzero(sto)
            env = error_bound_envelope(setup, eta, t, tp, mo64, x64, _Z_MEAN, pv64).reshape(-1)[sto]
            label = f"{name}/N={n_steps}/step={k}/t={t}"
            detects.append(_pooled_parts(acc, draws[:, sto], mu[sto], var[sto], alpha_each, env, label, where,
                                         coords, shape))

    consequence = expectation.final_step_consequence(setup.conv, setup.betas)
    tested = ", ".join(f"{p['step']} (t={p['t']}, {p['kind']})" for p in positions)
    power = stats.DEFAULT_POWER
    worst_detect = {key: max(dt[key] for dt in detects) for key in ("mean_shift_sigma", "std_error",
                                                                   "mean_pattern_rms_sigma")
                    if detects and all(key in dt for dt in detects)}
    details = {
        "num_steps": n_steps, "timesteps_source": source, "eta": eta, "draws": n, "positions": positions,
        **({"runs_skipped": skipped} if (skipped := skipped_counts(ctx, setup)) else {}),
        "elements": math.prod(shape), "scalar_draws_per_step": n * math.prod(shape),
        "alpha_per_test": alpha_each if n_stat else None,
        "bonferroni": (f"alpha {alpha:g} split equally over {n_stat} tests (pooled mean, pooled variance and mean "
                       "pattern of each stochastic step)"),
        "rounding_allowance": "tolerances.step_bound at |z| = 2 (sum of the bounds at z = +2 and z = -2); "
                              + setup.table_note,
        "min_detectable": {"power": power, "worst": worst_detect, "per_step": detects},
        "errors": errors,
    }
    detect = f" It {_detect_text(worst_detect, power)}." if worst_detect else ""
    return _verdict_result(
        ctx, name, "check_step_moments", start, acc,
        message_ok=(f"x_prev from a fixed x_t over {n} draws of {math.prod(shape)} elements matches the reference law "
                    f"at steps {tested} of N={n_steps}; worst observed/allowed {acc.worst:.3g}; false-failure rate "
                    f"{alpha:g}.{detect}"),
        message_fail=f"x_prev from a fixed x_t over {n} draws (N={n_steps}) departs from the reference law",
        notes=notes, details=details, checked=len(positions), consequence=consequence, fatal=fatal,
        broken=broken, detect=detect,
    )


def _n_step_tests(n_stochastic: int) -> int:
    """Statistical tests of one step with ``n_stochastic`` stochastic elements: pooled mean and variance,
    and the mean pattern where there are at least 2 elements."""
    if n_stochastic == 0:
        return 0
    return 3 if n_stochastic >= 2 else 2


# ---------------------------------------------------------------------------------------------------
# distribution.run_output
# ---------------------------------------------------------------------------------------------------


def data_oracle(clip_range: float | None = None, scale: float = 1.0) -> IsotropicGaussian:
    r"""The Gaussian data law of the run check.

    Without clipping: mean (0.5, −0.5, 0.25, 0), variance 0.25 per coordinate (``scale`` unused).
    With a clip range r: mean λ r·(0.1, −0.1, 0.05, 0) and standard deviation 0.1 λ r, λ = ``scale``
    in (0, 1], so that x̂₀* stays in [−r, r] with overwhelming probability (the tail is computed,
    not assumed, and λ chosen per run: see the module docstring).

    Raises:
        ValueError: ``clip_range`` not > 0, or ``scale`` not in (0, 1].
    """
    if clip_range is None:
        return IsotropicGaussian(_DATA_MEAN.copy(), np.full(DATA_DIM, _DATA_VARIANCE))
    r = float(clip_range)
    if not r > 0:
        raise ValueError(f"clip_range={clip_range!r}: must be > 0")
    lam = float(scale)
    if not 0.0 < lam <= 1.0:
        raise ValueError(f"scale={scale!r}: must be in (0, 1]")
    return IsotropicGaussian(lam * r * _CLIP_MEAN, np.full(DATA_DIM, (lam * _CLIP_SD * r) ** 2))


def _run_schedule(ctx: Any, setup: TargetSetup) -> list[int]:
    """Smallest, middle and largest profile step counts ≤ :data:`MAX_RUN_STEPS`."""
    counts = [n for n in step_counts(ctx, setup) if n <= MAX_RUN_STEPS] or step_counts(ctx, setup)[:1]
    if not counts:
        return []
    return sorted({counts[0], counts[len(counts) // 2], counts[-1]})


@dataclass(frozen=True)
class _RunVariance:
    r"""The reverse variance of every step of a run-output check.

    A fixed type (``fixed_small`` / ``fixed_large``) is the reference's. For a learned DDPM variance the
    harness is the model, so it also chooses the variance output: a fixed, known function of t,
    :math:`f(t) = 0.5 + 0.4\sin(0.37t + 0.3) \in [0.1, 0.9]`, the interpolation fraction of Nichol &
    Dhariwal eq. 15 between log β̃′ and log β′. The target receives m = 2f − 1 (``learned_range``) or the
    variance :math:`\exp(f\log\beta' + (1-f)\log\tilde\beta')` (``learned``, diffusers' meaning: a
    variance), rounded to its dtype; the reference is given exactly that rounded value (as a
    log-variance for ``learned``). The law stays Gaussian and closed-form
    (:func:`~ddspec.reference.oracles.gaussian_run_output` with ``model_var_outputs``). At the last step
    (to the data) no noise is added, and the value sent is β′'s (it is not used).
    """

    variance_type: str
    dtype: torch.dtype | None = None
    betas: Array | None = None

    @property
    def learned(self) -> bool:
        return self.variance_type in LEARNED_VARIANCE_TYPES

    def _fraction(self, t: int) -> float:
        return 0.5 + 0.4 * math.sin(0.37 * t + 0.3)

    def target_value(self, t: int, t_prev: int) -> float | None:
        """What the target receives as its variance output at the step t → t_prev (rounded to its dtype)."""
        if not self.learned:
            return None
        f = self._fraction(t)
        if self.variance_type == "learned_range":
            value = 2.0 * f - 1.0
        else:
            big = float(reverse_variance(self.betas, t, "fixed_large", t_prev=t_prev).variance)
            if t_prev < 0:
                value = big
            else:
                small = float(reverse_variance(self.betas, t, "fixed_small", t_prev=t_prev).variance)
                value = math.exp(f * math.log(big) + (1.0 - f) * math.log(small))
        return float(torch.tensor(value, dtype=torch.float64).to(self.dtype).double())

    def reference_value(self, t: int, t_prev: int) -> float | None:
        """The reference's ``model_var_output`` for the same step (a log-variance for ``learned``)."""
        value = self.target_value(t, t_prev)
        if value is None or self.variance_type == "learned_range":
            return value
        return math.log(value)

    def step_kwargs(self, t: int, t_prev: int) -> dict[str, Any]:
        """Keyword arguments of :func:`~ddspec.reference.oracles.gaussian_step_map` for this step."""
        return {"variance_type": self.variance_type, "model_var_output": self.reference_value(t, t_prev)}

    def run_outputs(self, pairs: list[tuple[int, int]]) -> Array | None:
        """``model_var_outputs`` of :func:`~ddspec.reference.oracles.gaussian_run_output`, or None."""
        if not self.learned:
            return None
        return np.array([self.reference_value(t, tp) for t, tp in pairs], dtype=np.float64)


def _clip_tail(
    ctx: Any, setup: TargetSetup, oracle: IsotropicGaussian, r: float, pairs: list[tuple[int, int]],
    eta: float, variance: _RunVariance, n: int,
) -> float:
    r""":func:`clip_tail_bound` for a run-output check of a step target (chains from N(0, I), the target's
    table error model ``setup``)."""
    return clip_tail_bound(setup.conv, setup.betas, oracle, r, pairs, eta, n, u_table=setup.u_table,
                           delta_at=setup.delta_at, step_kwargs=variance.step_kwargs)


def _clipped_oracle(
    ctx: Any, setup: TargetSetup, r: float, pairs: list[tuple[int, int]], eta: float, variance: _RunVariance,
    n: int, limit: float,
) -> tuple[IsotropicGaussian | None, float, float, str | None]:
    r"""The clipped run's data law: ``(oracle, scale, tail, None)`` for the largest scale of
    :data:`CLIP_DATA_SCALES` whose clipping tail (:func:`_clip_tail`) is at most ``limit``, else
    ``(None, smallest scale, its tail, why)``.

    Why a smaller scale helps: x̂₀* = a₀ x_t + b₀ with a₀ = √ᾱ s²/(ᾱ s² + 1 − ᾱ) for data N(μ, s²).
    When a run's state is wider than the marginal the data law implies (it starts from N(0, I)
    whatever the first timestep: N = 1 with leading spacing is one step from t = 0; DDPM's
    ``fixed_large`` variance β' > β̃' widens every later state), x̂₀'s spread a₀ √v exceeds s, and
    only a smaller s, hence a smaller a₀, keeps x̂₀ inside ±r. λ is chosen from the configuration
    alone (never from the draws), so the false-failure bound of the union argument stands.
    """
    tail = math.inf
    for scale in CLIP_DATA_SCALES:
        oracle = data_oracle(r, scale)
        tail = _clip_tail(ctx, setup, oracle, r, pairs, eta, variance, n)
        if tail <= limit:
            return oracle, scale, tail, None
    smallest = CLIP_DATA_SCALES[-1]
    tried = f"data scales {CLIP_DATA_SCALES[0]:g} to {smallest:g} of the clipped law tried"
    if math.isinf(tail):
        return None, smallest, tail, (
            f"x0 is clipped/thresholded to +-{r:g}, and at some step the margin for the target's rounding of x0 in "
            f"{ctx.dtype_name} (or a singular x0 conversion) leaves no room inside that range ({tried}): whether x0 "
            "stays unclipped cannot be bounded, so the output law need not be Gaussian")
    return None, smallest, tail, (
        f"x0 is clipped/thresholded to +-{r:g}, and even at the smallest data scale ({tried}) the union bound on "
        f"the chance that some chain's x0 (or its rounding in {ctx.dtype_name}) leaves +-{r:g} at some step is "
        f"{tail:.3g} > the budget {limit:.3g} ({CLIP_TAIL_FRACTION:g} of the false-failure rate, split over the "
        "step counts): the output law need not be Gaussian")


def check_run_output_distribution(ctx: Any) -> list[CheckResult]:
    r"""The law of a whole run's output with the exact Gaussian denoiser (see the module docstring).

    One result ``distribution.run_output.<variant>`` per DDIM η (or for the declared DDPM variance),
    covering the run step counts (smallest, middle, largest profile N ≤ 50). Per N: n chains from
    x_T ~ N(0, I), model output = the oracle's exact ε*/x̂₀*/v* of the current batch state (computed on
    the device), the target's own noise from one generator per run. Tests per N, at
    (α − clipping tail)/(3 × #N) each: per-coordinate mean (z) and variance (χ²) against
    :func:`~ddspec.reference.oracles.gaussian_run_output`, and DKW of the standardised first
    coordinate against Φ, all widened by the accumulated rounding allowance of each chain.

    Learned DDPM variances are checked too: the harness chooses the model's variance output as well, a
    fixed, known function of t (:class:`_RunVariance`), so the law stays closed-form. ``unsupported``
    for a DDPM declaring ``final_alpha_bar_is_one=False``; steps that are singular for the reference (ε-prediction at
    ᾱ = 0) skip their N.
    """
    base, start = "distribution.run_output", time.perf_counter()
    setup = setup_target(ctx, base, FAMILY)
    if isinstance(setup, CheckResult):
        return [setup]
    conv = setup.conv
    if conv.family == "ddpm":
        if not conv.final_alpha_bar_is_one:
            return [CheckResult.unsupported(base, FAMILY, "final_alpha_bar_is_one=False is a DDIM convention; "
                                                          "no closed-form law for a DDPM declaring it")]
        if is_learned(conv):
            variance = _RunVariance(conv.variance_type, ctx.dtype, setup.betas)
        else:
            variance = _RunVariance("fixed_large" if conv.variance_type.startswith("fixed_large") else "fixed_small")
    else:
        variance = _RunVariance("fixed_small")
    counts = _run_schedule(ctx, setup)
    if not counts:
        return [CheckResult(name=base, family=FAMILY, verdict=Verdict.FAIL, duration_s=elapsed(start),
                            message=f"no profile step count N <= T = {conv.num_train_timesteps}")]
    clip_range = None
    if conv.thresholding:
        if conv.sample_max_value < 1.0:
            return [CheckResult.skipped(base, FAMILY, f"thresholding with sample_max_value={conv.sample_max_value} < 1 "
                                                      "rescales every x0; the output law has no closed form")]
        clip_range = 1.0
    elif conv.clip_sample:
        clip_range = float(conv.clip_sample_range)
        if not clip_range > 0:
            return [CheckResult.skipped(base, FAMILY, f"clip_sample_range={clip_range} <= 0")]
    runs = [(n_steps, *plan_for(ctx, setup, n_steps)) for n_steps in counts]
    return [
        _run_variant(ctx, setup, f"{base}.{label}", vi, eta, runs, clip_range, variance)
        for vi, (label, eta) in enumerate(run_variants(ctx, setup))
    ]


def _run_variant(
    ctx: Any, setup: TargetSetup, name: str, vi: int, eta: float,
    runs: list[tuple[int, RunPlan | None, str | None, str | None]], clip_range: float | None,
    variance: _RunVariance,
) -> CheckResult:
    start = time.perf_counter()
    conv = setup.conv
    n = int(ctx.settings.n_distribution_samples)
    alpha = float(ctx.settings.false_failure_rate)
    notes: list[str] = []
    fatal: list[Finding] = []
    broken: list[Finding] = []
    sources: dict[str, str] = {}
    plan = []
    for n_steps, run, note, why in runs:
        if run is None:
            broken.append(Finding(message=f"N={n_steps}: cannot run the target: {why}"))
            continue
        sources[f"N={n_steps}"] = run.source
        if note:
            notes.append(note)
        ts, pairs = np.asarray(run.timesteps, dtype=np.int64), list(run.pairs)
        if conv.prediction_type == "epsilon" and any(setup.ab(t) == 0.0 for t, _ in pairs):
            notes.append(f"N={n_steps}: skipped, epsilon-prediction is singular at alpha_bar = 0 (zero terminal SNR)")
            continue
        oracle, scale, tail = data_oracle(), None, 0.0
        if clip_range is not None:
            limit = CLIP_TAIL_FRACTION * alpha / len(runs)
            oracle, scale, tail, why = _clipped_oracle(ctx, setup, clip_range, pairs, eta, variance, n, limit)
            if oracle is None:
                notes.append(f"N={n_steps}: skipped, {why}")
                continue
        try:
            law = gaussian_run_output(oracle, setup.betas, ts, family=conv.family, eta=eta,
                                      variance_type=variance.variance_type,
                                      final_alpha_bar_is_one=conv.final_alpha_bar_is_one,
                                      model_var_outputs=variance.run_outputs(pairs))
        except ValueError as exc:
            notes.append(f"N={n_steps}: skipped, no closed-form law: {exc}")
            continue
        plan.append(_PlannedRun(n_steps, ts, pairs, law, tail, oracle, scale))
    acc = _Account(name, stats.Ledger(budget=alpha), [], [])
    power = stats.DEFAULT_POWER
    detects: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    tail_total = math.fsum(p.tail for p in plan)
    if tail_total > 0:
        acc.ledger.allocate(f"{name}/x0 leaves +-{clip_range:g} (clipping active)", tail_total)
    n_tests = sum(3 for p in plan if np.any(np.asarray(p.law.variance) > 0))
    alpha_each = (alpha - tail_total) / n_tests if n_tests else alpha
    summaries = []
    qq: dict[str, Any] | None = None
    for ni, planned_run in enumerate(plan):
        n_steps, ts, pairs, law = planned_run.n_steps, planned_run.timesteps, planned_run.pairs, planned_run.law
        tail, oracle, scale = planned_run.tail, planned_run.oracle, planned_run.scale
        where = {"step": len(pairs) - 1, "timestep": pairs[-1][1], "what": f"output of the N={n_steps} run"}
        mu = np.asarray(law.mean, dtype=np.float64)
        var = np.broadcast_to(np.asarray(law.variance, dtype=np.float64), mu.shape)
        det = var == 0.0
        samples, allow, err, call_broke = _run_chains(
            ctx, setup, oracle, n, n_steps, pairs, eta, variance, _offset("run_output", "x_T", vi, ni),
            _offset("run_output", "generator", vi, ni), all_max=bool(det.any()))
        if samples is None:
            (broken if call_broke else fatal).append(Finding(step=None, message=f"N={n_steps}: {err}"))
            if call_broke:
                errors.append({"num_steps": n_steps, "error": call_broke})
            continue
        b_mean, b_rms, e_max = allow["mean"], allow["rms"], allow["max"]
        label = f"{name}/N={n_steps}"
        if det.any():
            # a point mass (e.g. one deterministic step from alpha_bar = 0): every chain within its own bound
            off = np.abs(samples[:, det] - mu[det])
            ratio = off / np.maximum(e_max[:, det], 1e-300)
            acc.see(float(ratio.max()))
            if np.any(off > e_max[:, det]):
                i, jj = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
                j = int(np.flatnonzero(det)[jj])
                acc.findings.append((float(ratio[i, jj]), Finding(
                    step=where["step"], timestep=where["timestep"], element=(j,), expected=float(mu[j]),
                    got=float(samples[i, j]), tolerance=float(e_max[i, j]),
                    message=f"output of the N={n_steps} run: the closed-form law is a point mass in coordinate {j}, "
                            f"but chain {i} is off it by more than its rounding bound")))
        sto = ~det
        if sto.any():
            coords = np.flatnonzero(sto)
            _mean_part(acc, samples[:, sto], mu[sto], var[sto], alpha_each, b_mean[sto], f"{label}/mean",
                       where, coords, (DATA_DIM,))
            _variance_part(acc, samples[:, sto], var[sto], alpha_each, b_rms[sto], f"{label}/variance",
                           where, coords, (DATA_DIM,))
            j0 = int(coords[0])
            sd0 = math.sqrt(float(var[j0]))
            shift0 = float(e_max[:, j0 if det.any() else 0].max()) / sd0
            _dkw_part(acc, (samples[:, j0] - mu[j0]) / sd0, alpha_each, shift0, f"{label}/dkw", where, j0)
            if qq is None:
                qq = _qq_points((samples[:, j0] - mu[j0]) / sd0, f"N={n_steps}, coordinate {j0}, standardized")
            sd_all = np.sqrt(var[sto])
            rho = stats.min_detectable(n, alpha_each, power, "variance", dims=int(sto.sum()))
            detects.append({
                "num_steps": n_steps,
                "mean_shift_sigma": stats.min_detectable(n, alpha_each, power, "mean", dims=int(sto.sum()))
                + float(np.max(b_mean[sto] / sd_all)),
                "std_error": max(math.sqrt(rho) - 1.0, 1.0 - 1.0 / math.sqrt(rho)) + float(np.max(b_rms[sto] / sd_all)),
                "cdf_sup": stats.min_detectable(n, alpha_each, power, "cdf") + _PHI0 * shift0,
            })
        summaries.append({"num_steps": n_steps, "timesteps": [int(t) for t in ts[:6]] + (["..."] if len(ts) > 6 else []),
                          "timesteps_source": sources[f"N={n_steps}"], "data_scale": scale,
                          "data_mean": oracle.mean, "data_variance": oracle.variance,
                          "law_mean": mu, "law_variance": var, "clip_tail_probability": tail,
                          "rounding_allowance_mean": float(b_mean.max()), "rounding_allowance_max": float(e_max.max())})
    consequence = expectation.final_step_consequence(conv, setup.betas)
    base_oracle = data_oracle(clip_range)
    details = {
        **({"runs_skipped": skipped} if (skipped := skipped_counts(ctx, setup)) else {}),
        "oracle": {"mean": base_oracle.mean, "variance": base_oracle.variance, "clip_range": clip_range,
                   "data_scales_tried": list(CLIP_DATA_SCALES) if clip_range is not None else None},
        "timesteps_source": sources,
        "chains": n, "eta": eta, "variance_type": variance.variance_type if conv.family == "ddpm" else None,
        "model_variance_output": ("0.5 + 0.4 sin(0.37 t + 0.3): the interpolation fraction of Nichol & Dhariwal "
                                  "eq. 15, sent as m = 2f - 1 (learned_range) or the variance (learned)")
        if variance.learned else None,
        "runs": summaries, "alpha_per_test": alpha_each if n_tests else None,
        "bonferroni": (f"alpha {alpha:g}: clipping tail {tail_total:.3g}, the rest split equally over {n_tests} tests "
                       "(mean, variance, DKW per step count)"),
        "rounding_allowance": ("per chain, tolerances.step_bound of every step propagated through the exact step "
                               "maps (E <- |A| E + b); |z| <= 2 for the mean and RMS allowances, |z| <= 9 for the "
                               "largest; " + setup.table_note),
    }
    worst_detect = {key: max(dt[key] for dt in detects) for key in ("mean_shift_sigma", "std_error", "cdf_sup")
                    if detects}
    details["min_detectable"] = {"power": power, "worst": worst_detect, "per_step_count": detects}
    details["errors"] = errors
    if qq is not None:
        details["qq"] = qq
    detect = ""
    if worst_detect:
        detect = (f" Per coordinate of the output it detects a std error >= {_pct(worst_detect['std_error'])} %, "
                  f"a mean shift >= {_pct(worst_detect['mean_shift_sigma'])} % of σ and a CDF error "
                  f"sup|ΔF| >= {worst_detect['cdf_sup']:.2g} at every step count, at power {power:g}, rounding "
                  "allowance included.")
    ns = ", ".join(str(s["num_steps"]) for s in summaries)
    return _verdict_result(
        ctx, name, "check_run_output_distribution", start, acc,
        message_ok=(f"{n} chains driven by the exact Gaussian denoiser match the closed-form output law for N = {ns}; "
                    f"worst observed/allowed {acc.worst:.3g}; false-failure rate {alpha:g}.{detect}"),
        message_fail=f"{n} chains driven by the exact Gaussian denoiser depart from the closed-form output law",
        notes=notes, details=details, checked=len(summaries), consequence=consequence, fatal=fatal, broken=broken,
        detect=detect,
    )


#: Points of the QQ plot kept in ``details["qq"]`` (evenly spaced order statistics).
QQ_POINTS = 200


def _qq_points(u: Array, what: str) -> dict[str, Any]:
    r"""QQ data of standardized draws u against N(0, 1): order statistics at plotting positions (i + ½)/n,
    at most :data:`QQ_POINTS` of them, 4 significant digits (``details["qq"]`` for the HTML report)."""
    u = np.sort(np.asarray(u, dtype=np.float64)[np.isfinite(u)])
    if u.size == 0:
        return {"what": what, "theoretical": [], "empirical": []}
    idx = np.unique(np.linspace(0, u.size - 1, min(QQ_POINTS, u.size)).round().astype(int))
    theo = sps.norm.ppf((idx + 0.5) / u.size)
    return {"what": what, "theoretical": [float(f"{v:.4g}") for v in theo],
            "empirical": [float(f"{v:.4g}") for v in u[idx]]}


def _run_chains(
    ctx: Any, setup: TargetSetup, oracle: IsotropicGaussian, n: int, n_steps: int, pairs: list[tuple[int, int]],
    eta: float, variance: _RunVariance, x_offset: int, gen_offset: int, *, all_max: bool = False,
) -> tuple[Array | None, dict[str, Any] | None, str | None, str | None]:
    r"""Run n chains through the target: (final samples (n, d), rounding allowances, error, and when the
    error is a call that gave no usable output rather than a non-finite state, that call's
    ``"<ExcType>: <message>"`` for ``details["errors"]``, else None).

    The allowances propagate the per-step bounds through the exact step maps
    :math:`x_\mathrm{prev} = A x_t + B + \sigma z` (:func:`~ddspec.reference.oracles.gaussian_step_map`):
    an error e in x_t leaves the step as A e (first order), so per chain and coordinate
    :math:`E \leftarrow |A| E + b_k`. ``mean`` is the mean over chains of E with the bounds at
    |z| ≤ 2, ``rms`` the same recursion on the RMS over chains (Minkowski), ``max`` the per-chain E
    with the bounds at |z| ≤ 9, shape (n, d) with ``all_max``, else (n, 1) for the first coordinate.
    """
    conv = setup.conv
    shape = (n, DATA_DIM, 1, 1)
    x = ctx.randn(shape, x_offset)
    generator = ctx.generator(gen_offset)
    e_mean = np.zeros((n, DATA_DIM))
    e_rms = np.zeros(DATA_DIM)
    cols = DATA_DIM if all_max else 1
    e_max = np.zeros((n, cols))
    work = torch.float64 if ctx.device.type != "mps" else torch.float32
    for k, (t, tp) in enumerate(pairs):
        x64 = exact_of(x).reshape(n, DATA_DIM)
        if k > 0 and not np.all(np.isfinite(x64)):
            return None, None, f"step {k - 1}: {int((~np.isfinite(x64)).sum())} non-finite output elements", None
        a, b = oracle.affine(t, setup.betas, conv.prediction_type)
        a_t = torch.as_tensor(a, dtype=work, device=ctx.device).reshape(1, DATA_DIM, 1, 1)
        b_t = torch.as_tensor(b, dtype=work, device=ctx.device).reshape(1, DATA_DIM, 1, 1)
        mo = (x.to(work) * a_t + b_t).to(ctx.dtype)
        pv_value = variance.target_value(t, tp)
        pv = None if pv_value is None else torch.full(shape, pv_value, dtype=ctx.dtype, device=ctx.device)
        out, call = call_step(ctx, setup, mo, t, x, n_steps, eta, generator=generator, predicted_variance=pv)
        err = None if call is None else call.why
        if err is None and tuple(out.shape) != shape:
            err = f"output shape {tuple(out.shape)}, expected {shape}"
        if err is not None:
            return None, None, f"step {k} (t={t}): {err}", (call.error if call is not None else None) or err
        mo64 = exact_of(mo).reshape(n, DATA_DIM)
        slope = np.abs(gaussian_step_map(oracle, setup.betas, t, tp, family=conv.family, eta=eta,
                                         **variance.step_kwargs(t, tp)).A)
        pv64 = None if pv_value is None else np.full_like(x64, pv_value)
        b2 = error_bound_envelope(setup, eta, t, tp, mo64, x64, _Z_MEAN, pv64)
        b9 = error_bound_envelope(setup, eta, t, tp, mo64[:, :cols], x64[:, :cols], _Z_MAX,
                                  None if pv64 is None else pv64[:, :cols])
        e_mean = slope * e_mean + b2
        e_rms = slope * e_rms + np.sqrt(np.mean(b2**2, axis=0))
        e_max = slope[:cols] * e_max + b9
        x = out
    final = exact_of(x).reshape(n, DATA_DIM)
    if not np.all(np.isfinite(final)):
        return None, None, f"step {len(pairs) - 1}: {int((~np.isfinite(final)).sum())} non-finite output elements", None
    return final, {"mean": e_mean.mean(axis=0), "rms": e_rms, "max": e_max}, None, None


#: The distribution checks, in the order they run.
CHECKS: list = [check_step_moments, check_run_output_distribution]
