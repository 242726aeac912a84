r"""Full power in half precision (issue 13): the planted-bug zoo in float16 and bfloat16.

Each bug of :data:`HALF_ZOO` (the step bugs of ``tests/quality/zoo.py`` plus the issue's own,
defined below) is run through the ``coefficients`` family (and, for the clipping bugs, which change
no coefficient, ``single_step``) in float16 and bfloat16, profile ``quick``. Asserted:

* **the line holds.** A bug's *coefficient change* at a fitted step is the difference between its
  coefficients and the reference's, both evaluated in float64 at unit inputs (the bug's own step
  on x_t = e_x, m = e_m, z = e_z; :func:`ddspec.conformance.checks.coefficients.reference_coefficients`),
  in units of the dtype's coefficient-rounding bound R
  (:func:`ddspec.conformance.tolerances.coefficient_bound`). A bug whose change reaches
  :data:`LINE` × R at some fitted step is *above the line* and must fail. The others are the
  exceptions: :data:`BELOW_THE_LINE` lists them per dtype, and docs/tolerances.md's detection table
  states them with the reason; a test holds both to the computed truth.
* **no false alarm.** Correct configurations (cosine and zero-SNR included, and the issue's
  float16 false alarm: DDPM cosine, fixed_large, no clipping) pass ``coefficients`` and
  ``single_step`` in both dtypes over several seeds.
* **the false alarm is gone for the right reason.** With the old random model outputs, x̂₀ of that
  configuration at t = 999 exceeds float16's range; with the consistent inputs it stays inside.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks.coefficients import check_coefficients, reference_coefficients
from ddspec.conformance.checks.single_step import check_single_steps
from ddspec.conformance.context import CheckContext
from ddspec.conformance.expectation import reference_betas
from ddspec.conformance.results import Verdict

from . import zoo

DTYPES = ("float16", "bfloat16")
SEED = 0
#: A bug whose coefficient change reaches LINE × the coefficient-rounding bound at a fitted step must
#: fail. Above 1: the tolerance also holds the fit's statistical term (small at these batch sizes).
LINE = 1.5
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tolerances.md"


# ================================================================================================
# The bugs that tests/quality/zoo.py does not have (each one method around a zoo base)
# ================================================================================================


class PrevAlphaBarOffByOne(zoo.HandDDIM):
    """ᾱ_prev read one index off: the step goes to ᾱ[t_prev − 1] where ᾱ[t_prev] belongs."""

    name = "ddim-prev-alpha-bar-off-by-one"

    def prev_timestep(self, t: int, num_steps: int) -> int:
        s = super().prev_timestep(t, num_steps)
        return s - 1 if s >= 1 else s


class DirectionWithoutSigma(zoo.HandDDIM):
    """The direction coefficient √(1 − ᾱ_prev) without −σ² (DDIM eq. 12 has √(1 − ᾱ_prev − σ²))."""

    name = "ddim-direction-without-sigma"

    def direction_coef(self, p: float, sigma: float) -> float:
        return math.sqrt(1.0 - p)


class X0WithAlphaT(zoo.HandDDIM):
    """x̂₀ formed with the one-step α_t = 1 − β_t where ᾱ_t belongs (Ho et al. eq. 15)."""

    name = "ddim-x0-with-alpha-t"

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self._t = int(t)
        return super().step(model_output, t, x_t, **kwargs)

    def predict_x0(self, eps: torch.Tensor, x_t: torch.Tensor, a: float) -> torch.Tensor:
        alpha_t = 1.0 - float(self.betas[self._t])
        return (x_t - math.sqrt(1.0 - alpha_t) * eps) / math.sqrt(alpha_t)


class SwappedPosteriorCoefficients(zoo.HandDDPM):
    r"""The posterior mean with its two coefficients swapped: :math:`\tilde\mu = c_t\hat x_0 + c_0 x_t`
    (Ho et al. eq. 7 has :math:`c_0\hat x_0 + c_t x_t`)."""

    name = "ddpm-swapped-posterior-coefficients"

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, *, num_steps: int, eta: float = 0.0,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
             predicted_variance: torch.Tensor | None = None) -> torch.Tensor:
        t = int(t)
        s = self.prev_timestep(t, num_steps)
        a, p = self.abar(t), self.abar(s)
        beta_p = self.respaced_beta(t, s)
        x0 = self.predict_x0(model_output, x_t, a)
        c0 = math.sqrt(p) * beta_p / (1.0 - a)
        ct = math.sqrt(1.0 - beta_p) * (1.0 - p) / (1.0 - a)
        mean = ct * x0 + c0 * x_t
        if not self.adds_noise(s):
            return mean
        var = (1.0 - p) / (1.0 - a) * beta_p
        return mean + math.sqrt(var) * self.draw(x_t, noise, generator)


class StdTimesOnePercent(zoo.HandDDPM):
    """The noise's standard deviation 1 % too large: 1.01·σ z."""

    name = "ddpm-std-times-1.01"

    def draw(self, x_t: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        return 1.01 * super().draw(x_t, noise, generator)


# ================================================================================================
# The half-precision zoo
# ================================================================================================


@dataclass(frozen=True)
class HalfBug:
    r"""One planted bug for the half-precision run.

    ``family`` is the check family that must catch it (``coefficients`` for a coefficient change,
    ``single_step`` for a clipping bug, which changes no coefficient where x̂₀ is inside the range).
    """

    name: str
    factory: Callable[[], Any]
    family: str
    description: str


HALF_ZOO: tuple[HalfBug, ...] = (
    HalfBug("alpha_bar_index_off_by_one", lambda: zoo.AlphaBarIndexOffByOne().as_sampler(), "coefficients",
            "ᾱ[t − 1] at index t"),
    HalfBug("prev_alpha_bar_off_by_one", lambda: PrevAlphaBarOffByOne().as_sampler(), "coefficients",
            "ᾱ_prev one index off"),
    HalfBug("final_alpha_bar_not_one", lambda: zoo.DDIMFinalAlphaBarNotOne(), "coefficients",
            "the wrong final ᾱ (ᾱ_0 instead of 1)"),
    HalfBug("missing_sqrt", lambda: zoo.MissingSqrt().as_sampler(), "coefficients",
            "x̂₀ with 1 − ᾱ_t for √(1 − ᾱ_t)"),
    HalfBug("x0_with_alpha_t", lambda: X0WithAlphaT().as_sampler(), "coefficients", "x̂₀ formed with α_t"),
    HalfBug("v_prediction_sign", lambda: zoo.DDIMVPredictionSign(prediction_type="v_prediction"), "coefficients",
            "the v sign"),
    HalfBug("sigma_unrespaced_beta", lambda: zoo.DDIMSigmaUnrespacedBeta(), "coefficients", "σ from β_t"),
    HalfBug("sigma_not_squared", lambda: zoo.SigmaNotSquared().as_sampler(), "coefficients", "σ² used as σ"),
    HalfBug("direction_without_sigma", lambda: DirectionWithoutSigma().as_sampler(), "coefficients",
            "the direction term without σ"),
    HalfBug("eta_ignored", lambda: zoo.DDIMEtaIgnored(), "coefficients", "η ignored"),
    HalfBug("beta_for_beta_tilde", lambda: zoo.DDPMBetaForBetaTilde(), "coefficients", "β for β̃"),
    HalfBug("respaced_beta_wrong", lambda: zoo.RespacedBetaWrong().as_sampler(), "coefficients",
            "β_t for the respaced β′"),
    HalfBug("swapped_posterior_coefficients", lambda: SwappedPosteriorCoefficients().as_sampler(), "coefficients",
            "swapped posterior coefficients"),
    HalfBug("std_times_1_01", lambda: StdTimesOnePercent().as_sampler(), "coefficients", "std × 1.01"),
    HalfBug("final_step_noise", lambda: zoo.FinalStepNoise().as_sampler(), "coefficients",
            "noise added at the last step"),
    HalfBug("clip_range_ignored", lambda: zoo.ClipRangeIgnored(clip_sample=True, clip_sample_range=2.0),
            "single_step", "clip range 2 declared, ±1 used"),
    HalfBug("x0_not_clipped", lambda: zoo.X0NotClipped(clip_sample=True), "single_step", "x̂₀ never clipped"),
)
_BUGS = {b.name: b for b in HALF_ZOO}

#: The exceptions: bugs whose coefficient change stays below LINE × the coefficient rounding of the
#: dtype at every fitted step of the quick profile (docs/tolerances.md, "Detection in half precision").
BELOW_THE_LINE: dict[str, frozenset[str]] = {
    "float16": frozenset(),
    "bfloat16": frozenset({"prev_alpha_bar_off_by_one", "std_times_1_01"}),
}


def _context(sampler: Any, dtype: str, seed: int = SEED, profile: str = "quick") -> CheckContext:
    return CheckContext(sampler, dtype=dtype, profile=profile, seed=seed)


_RESULTS: dict[tuple[str, str], list] = {}


def _coefficient_results(name: str, dtype: str) -> list:
    key = (name, dtype)
    if key not in _RESULTS:
        sampler = adapt(_BUGS[name].factory())
        _RESULTS[key] = check_coefficients(_context(sampler, dtype))
    return _RESULTS[key]


def _unit_coefficients(sampler: Any, row: dict[str, Any], eta: float) -> dict[str, float]:
    """The sampler's own (a, b, c) at one step, float64, from its step at unit inputs."""
    x = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    m = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    z = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    out = sampler.step(m, row["t"], x, num_steps=row["num_steps"], eta=eta, noise=z).double().numpy().ravel()
    return {"a": out[1] - out[0], "b": out[2] - out[0], "c": out[3] - out[0]}


def coefficient_change(name: str, dtype: str) -> float:
    r"""max over fitted steps and coefficients of |bug − reference| / R (R the dtype's rounding bound)."""
    sampler = adapt(_BUGS[name].factory())
    conv = sampler.conventions
    betas = reference_betas(conv)
    worst = 0.0
    for result in _coefficient_results(name, dtype):
        eta = float(result.details.get("eta", 0.0))
        for row in result.details.get("coefficients", []):
            bug = _unit_coefficients(sampler, row, eta)
            ref = reference_coefficients(conv, betas, row["t"], row["t_prev"], eta, None)
            for c in row["fitted"]:
                diff, bound = abs(bug[c] - ref[c]), row["rounding_bound"][c] + row["output_rounding"][c]
                worst = max(worst, diff / bound if bound > 0 else (math.inf if diff > 0 else 0.0))
    return worst


# ================================================================================================
# Tests
# ================================================================================================


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [b.name for b in HALF_ZOO if b.family == "coefficients"])
def test_bug_above_the_line_fails(name: str, dtype: str) -> None:
    change = coefficient_change(name, dtype)
    results = _coefficient_results(name, dtype)
    failed = [r.name for r in results if r.verdict is Verdict.FAIL]
    if name in BELOW_THE_LINE[dtype]:
        assert change < LINE, f"{name} in {dtype} is listed below the line, but its coefficient change is {change:.3g} R"
        return
    assert change >= LINE, (
        f"{name} in {dtype}: coefficient change {change:.3g} R is below the line {LINE} R; list it in BELOW_THE_LINE "
        "and in docs/tolerances.md"
    )
    assert failed, (f"{name} ({_BUGS[name].description}) in {dtype}: change {change:.3g} R, but no coefficients "
                    "check failed: " + "; ".join(f"{r.name}: {r.message}" for r in results))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [b.name for b in HALF_ZOO if b.family == "single_step"])
def test_clipping_bug_fails_single_step(name: str, dtype: str) -> None:
    """Clipping changes no coefficient where x̂₀ is in range; the consistent inputs of single_step
    (x₀ ~ U(−2r, 2r) in half precision) reach past the range, so single_step sees the clip."""
    sampler = adapt(_BUGS[name].factory())
    results = check_single_steps(_context(sampler, dtype))
    assert any(r.verdict is Verdict.FAIL for r in results), [(r.name, r.message) for r in results]


def _docs_table() -> dict[str, dict[str, str]]:
    """docs/tolerances.md's detection table: ``| `bug` | float16 cell | bfloat16 cell | why |`` rows."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("### Detection in half precision")
    rows: dict[str, dict[str, str]] = {}
    for line in text[start:].splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = {"float16": m.group(2).strip(), "bfloat16": m.group(3).strip()}
    return rows


def test_docs_detection_table_states_the_truth() -> None:
    """Every bug has a row; a cell says "caught" exactly when the bug is above the line in that dtype."""
    table = _docs_table()
    assert set(table) == set(_BUGS), (sorted(set(_BUGS) - set(table)), sorted(set(table) - set(_BUGS)))
    for name, cells in table.items():
        for dtype in DTYPES:
            caught = cells[dtype].startswith("caught")
            assert caught == (name not in BELOW_THE_LINE[dtype]), (name, dtype, cells[dtype])
            if not caught:
                assert cells[dtype].startswith("not caught"), (name, dtype, cells[dtype])


# -- correct configurations ----------------------------------------------------------------------


def ddpm_cosine_fixed_large_no_clip() -> DDPMScheduler:
    """The issue's float16 false alarm: x̂₀ ≈ 1e5 at t = 999 from a random model output."""
    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", clip_sample=False)


CORRECT: dict[str, Callable[[], Any]] = {
    "ddpm_cosine_fixed_large_no_clip": ddpm_cosine_fixed_large_no_clip,
    "ddim_cosine": zoo.diffusers_ddim_cosine,
    "port_ddim_zero_snr_v_trailing": zoo.port_ddim_zero_snr_v_trailing,
    "ddpm_default": zoo.diffusers_ddpm_default,
    "ddpm_learned_range": zoo.diffusers_ddpm_learned_range,
    "ddim_thresholding": zoo.diffusers_ddim_thresholding,
    "ddim_v_prediction": zoo.diffusers_ddim_v_prediction,
    "port_ddpm": zoo.port_ddpm,
}
#: The default run's representative subset (cosine, zero SNR, the false alarm, clipping) and seeds.
DEFAULT_CORRECT = ("ddpm_cosine_fixed_large_no_clip", "ddim_cosine", "port_ddim_zero_snr_v_trailing", "ddpm_default")
DEFAULT_SEEDS = (0, 1, 2)
SLOW_SEEDS = tuple(range(10))


def _assert_conforms(name: str, dtype: str, seed: int, profile: str) -> None:
    sampler = adapt(CORRECT[name]())
    ctx = _context(sampler, dtype, seed=seed, profile=profile)
    results = [*check_coefficients(ctx), *check_single_steps(ctx)]
    bad = [(r.name, r.verdict.value, r.message[:300]) for r in results if r.verdict is not Verdict.PASS]
    assert not bad, f"{name} in {dtype}, seed {seed}, {profile}: {bad}"


@pytest.mark.parametrize("seed", DEFAULT_SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", DEFAULT_CORRECT)
def test_correct_configuration_passes_in_half_precision(name: str, dtype: str, seed: int) -> None:
    _assert_conforms(name, dtype, seed, "quick")


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_configuration_passes_in_half_precision_wide(name: str, dtype: str, seed: int) -> None:
    _assert_conforms(name, dtype, seed, "default")


def test_float16_false_alarm_is_gone_for_the_right_reason() -> None:
    """At t = 999 of the cosine schedule (ᾱ ≈ 2.4e-9), x̂₀ of independent random float16 inputs exceeds
    float16's largest value 65504; the consistent inputs keep x̂₀ within the data range plus the inputs'
    rounding, u·max|m|·√(1−ᾱ)/√ᾱ·2 (derived from x̂₀ = (x_t − √(1−ᾱ) m)/√ᾱ), and the run passes."""
    sampler = adapt(ddpm_cosine_fixed_large_no_clip())
    ctx = _context(sampler, "float16", profile="quick")
    shape = tuple(ctx.settings.sample_shape)
    a = float(np.cumprod(1.0 - reference_betas(sampler.conventions))[999])
    sa, s1 = math.sqrt(a), math.sqrt(1.0 - a)
    x, m = ctx.randn(shape, 1).double().numpy(), ctx.randn(shape, 2).double().numpy()
    assert np.max(np.abs((x - s1 * m) / sa)) > 65504.0
    from ddspec.conformance.checks._common import oracle_inputs

    x, m, x0 = oracle_inputs(ctx, "epsilon", a, shape, 1, 2, 2.0)
    xx, mm = x.double().numpy(), m.double().numpy()
    x0_hat = (xx - s1 * mm) / sa
    limit = 2.0 + 2.0 * ctx.unit_roundoff * float(np.max(np.abs(mm))) * s1 / sa * 2.0
    assert np.max(np.abs(x0_hat)) <= limit < 65504.0 / 8
    ctx_full = CheckContext(sampler, dtype="float16", profile="quick", steps=(1000,), seed=SEED)
    results = check_single_steps(ctx_full)
    assert all(r.verdict is Verdict.PASS for r in results), [(r.name, r.message) for r in results]
    assert "consistent" in results[0].details["inputs"]
    ctx32 = CheckContext(sampler, dtype="float32", profile="quick", steps=(10,), seed=SEED)
    assert "independent" in check_single_steps(ctx32)[0].details["inputs"]
