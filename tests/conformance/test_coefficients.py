r"""Tests of the ``coefficients`` check family (coefficient identification by regression, issue 13).

Where each expectation comes from:

* the least-squares fit is checked on a synthetic affine model with known coefficients and known
  noise: the HC0 standard error must match the closed form σ/√n of independent unit-variance
  columns, and the estimates must fall within a few standard errors;
* the closed-form coefficient terms of :func:`ddspec.conformance.tolerances.coefficient_terms` must
  sum to the coefficients the *reference step* gives at unit inputs, and those must equal the
  papers' closed forms evaluated in mpmath (DDIM eq. 12 with σ of eq. 16; DDPM eq. 7);
* the rounding bound must cover the error of actually rounding every factor once to the dtype,
  and must not be vacuous (a few u of the coefficient);
* power: a planted 1 % noise-scale bug fails in float16 (where single_step, per element, passes
  it), a planted 1e-4 change fails in float32; correct targets pass in every dtype.
"""

from __future__ import annotations

import math
from typing import Any

import mpmath
import numpy as np
import pytest
import torch

from ddspec.conformance.checks import coefficients as coef
from ddspec.conformance.checks import single_step
from ddspec.conformance.context import CheckContext
from ddspec.conformance.expectation import reference_betas, step_spec
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import FAMILIES, Verdict
from ddspec.conformance.runner import installed_checks, run_checks, select_checks
from ddspec.conformance.tolerances import UNIT_ROUNDOFF, coefficient_bound, coefficient_terms
from ddspec.conformance.torch_port import ReferencePort, make_reference_port
from ddspec.reference.alphas import alpha_bar
from ddspec.reference.schedules import linear_betas

# -- the fit -------------------------------------------------------------------------------------------


def test_fit_recovers_known_coefficients_with_the_closed_form_standard_error() -> None:
    rng = np.random.default_rng(7)
    n, sigma = 40_000, 1e-3
    x, m, z = rng.standard_normal((3, n))
    y = 2.0 * x - 0.5 * m + 0.3 * z + sigma * rng.standard_normal(n)
    fit = coef.fit_coefficients(y, {"a": x, "b": m, "c": z})
    # independent unit-variance columns, homoscedastic noise: se = σ/√n (to sampling error, ≈ 1 %)
    for name, true in (("a", 2.0), ("b", -0.5), ("c", 0.3)):
        assert fit.se[name] == pytest.approx(sigma / math.sqrt(n), rel=0.05)
        assert abs(fit.coef[name] - true) <= 6.0 * fit.se[name]
    assert fit.residual_std == pytest.approx(sigma, rel=0.02)
    assert fit.n == n


def test_fit_standard_error_follows_heteroscedastic_noise() -> None:
    """HC0: noise proportional to |x| inflates se(a) by √(E[x⁴]) = √3 over the homoscedastic value."""
    rng = np.random.default_rng(8)
    n, s = 200_000, 1e-3
    x, m = rng.standard_normal((2, n))
    y = x + m + s * np.abs(x) * rng.standard_normal(n)
    fit = coef.fit_coefficients(y, {"a": x, "b": m})
    assert fit.se["a"] == pytest.approx(math.sqrt(3.0) * s / math.sqrt(n), rel=0.05)
    assert fit.se["b"] == pytest.approx(s / math.sqrt(n), rel=0.05)


@pytest.mark.parametrize(
    ("y", "columns", "needle"),
    [
        (np.ones(5), {}, "columns"),
        (np.ones(5), {"a": np.ones(4)}, "columns"),
        (np.ones(2), {"a": np.ones(2), "b": np.arange(2.0)}, "y"),
        (np.array([1.0, np.nan, 2.0, 3.0]), {"a": np.arange(4.0)}, "non-finite"),
        (np.ones(5), {"a": np.zeros(5)}, "all-zero"),
        (np.ones(5), {"a": np.arange(5.0), "b": 2.0 * np.arange(5.0)}, "rank deficient"),
    ],
)
def test_fit_rejects_bad_input_naming_it(y: np.ndarray, columns: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        coef.fit_coefficients(y, columns)


def test_worst_case_term_bounds_an_adversarial_disturbance() -> None:
    """Σ|P_ji| w_i bounds the coefficient change of any disturbance |e_i| ≤ w_i, and is attained by sign(P_ji)."""
    rng = np.random.default_rng(9)
    x, m = rng.standard_normal((2, 2000))
    w = 1e-3 * (1.0 + np.abs(x))
    fit = coef.fit_coefficients(x + m, {"a": x, "b": m}, scale_of_error=w)
    X = np.stack([x, m], axis=1)
    P = np.linalg.pinv(X)
    adversarial = fit_a = coef.fit_coefficients(x + m + np.sign(P[0]) * w, {"a": x, "b": m})
    assert adversarial.coef["a"] - 1.0 == pytest.approx(fit.worst_case["a"], rel=1e-9)
    random = coef.fit_coefficients(x + m + w * rng.uniform(-1, 1, x.size), {"a": x, "b": m})
    assert abs(random.coef["a"] - 1.0) <= fit.worst_case["a"]
    assert fit_a.coef["b"] - 1.0 <= fit.worst_case["b"]


# -- the coefficients: closed forms against the reference ------------------------------------------------


def _conv(**kw: Any) -> Conventions:
    return Conventions(num_train_timesteps=1000, **kw)


CASES = [
    ("ddim", "epsilon", None, 0.0),
    ("ddim", "epsilon", None, 1.0),
    ("ddim", "sample", None, 0.5),
    ("ddim", "v_prediction", None, 1.0),
    ("ddpm", "epsilon", "fixed_small", 0.0),
    ("ddpm", "epsilon", "fixed_large", 0.0),
    ("ddpm", "v_prediction", "fixed_small", 0.0),
    ("ddpm", "sample", "learned_range", 0.0),
    ("ddpm", "epsilon", "learned", 0.0),
]


@pytest.mark.parametrize(("family", "prediction", "variance", "eta"), CASES)
@pytest.mark.parametrize(("t", "t_prev"), [(999, 899), (500, 400), (40, 0), (0, -1)])
def test_coefficient_terms_sum_to_the_reference_step_at_unit_inputs(
    family: str, prediction: str, variance: str | None, eta: float, t: int, t_prev: int
) -> None:
    kw: dict[str, Any] = {"family": family, "prediction_type": prediction}
    if variance is not None:
        kw["variance_type"] = variance
    conv = _conv(**kw)
    betas = reference_betas(conv)
    ab = alpha_bar(betas)
    a, p = float(ab[t]), 1.0 if t_prev < 0 else float(ab[t_prev])
    pv = {"learned_range": 0.25, "learned": 0.75 * (1.0 - a / p) if t_prev >= 0 else 0.5}.get(variance or "")
    ref = coef.reference_coefficients(conv, betas, t, t_prev, eta, pv)
    terms = coefficient_terms(step_spec(conv, eta), a, p, pv)
    for key in ("a", "b", "c"):
        closed = sum(term.value for term in terms[key])
        assert closed == pytest.approx(ref[key], rel=1e-11, abs=1e-13), (key, closed, ref[key])


def test_reference_coefficients_equal_the_papers_closed_forms_in_mpmath() -> None:
    """DDIM ε, η = 1 (Song et al. eq. 12, σ of eq. 16) and DDPM ε fixed_small (Ho et al. eq. 7, var β̃')."""
    mpmath.mp.dps = 40
    betas = linear_betas(1000, 1e-4, 0.02)
    t, s = 700, 600
    abar = [mpmath.mpf(1)]
    for b in betas:
        abar.append(abar[-1] * (1 - mpmath.mpf(float(b))))
    a, p = abar[t + 1], abar[s + 1]
    sigma = mpmath.sqrt((1 - p) / (1 - a) * (1 - a / p))
    ddim = coef.reference_coefficients(_conv(family="ddim"), betas, t, s, 1.0, None)
    assert ddim["a"] == pytest.approx(float(mpmath.sqrt(p / a)), rel=1e-12)
    assert ddim["b"] == pytest.approx(float(mpmath.sqrt(1 - p - sigma**2) - mpmath.sqrt(p * (1 - a) / a)), rel=1e-11)
    assert ddim["c"] == pytest.approx(float(sigma), rel=1e-12)
    bp = 1 - a / p
    ddpm = coef.reference_coefficients(_conv(family="ddpm", variance_type="fixed_small"), betas, t, s, 0.0, None)
    c0, ct = mpmath.sqrt(p) * bp / (1 - a), mpmath.sqrt(1 - bp) * (1 - p) / (1 - a)
    assert ddpm["a"] == pytest.approx(float(c0 / mpmath.sqrt(a) + ct), rel=1e-12)
    assert ddpm["b"] == pytest.approx(float(-c0 * mpmath.sqrt(1 - a) / mpmath.sqrt(a)), rel=1e-12)
    assert ddpm["c"] == pytest.approx(float(mpmath.sqrt((1 - p) / (1 - a) * bp)), rel=1e-12)


def _round(value: float, dtype: torch.dtype) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(dtype).double())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("t", "t_prev"), [(900, 800), (300, 200), (0, -1)])
def test_rounding_bound_covers_every_factor_rounded_once_and_is_not_vacuous(
    dtype: torch.dtype, t: int, t_prev: int
) -> None:
    """DDIM ε, η = 1: a = fl(√ᾱ_s)·fl(1/√ᾱ_t) + fl(d)·0 etc.; every factor rounded to the dtype."""
    conv = _conv(family="ddim")
    betas = reference_betas(conv)
    ab = alpha_bar(betas)
    a, p = float(ab[t]), 1.0 if t_prev < 0 else float(ab[t_prev])
    spec = step_spec(conv, 1.0)
    u = UNIT_ROUNDOFF[str(dtype).replace("torch.", "")]
    bound = coefficient_bound(spec, alpha_bar_t=a, alpha_bar_prev=p, delta_t=0.0, delta_prev=0.0,
                              u_compute=u, u_table=UNIT_ROUNDOFF["float64"])
    terms = coefficient_terms(spec, a, p)
    for key, ts in terms.items():
        rounded = 0.0
        for term in ts:
            value = term.sign
            for f in term.factors:
                value *= _round(f.value, dtype)
            rounded += value
        exact = bound.values[key]
        assert abs(rounded - exact) <= bound.bound[key], (key, rounded, exact, bound.bound[key])
        magnitude = sum(abs(term.value) for term in ts)
        assert bound.bound[key] <= 16.0 * u * magnitude + 1e-15, (key, bound.bound[key], magnitude)


# -- inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_oracle_inputs_give_x0_in_the_data_range(prediction: str, dtype: str) -> None:
    """x̂₀ of the rounded inputs is x₀ up to the inputs' rounding: u(|x_t| + √(1−ᾱ)|m|)/√ᾱ-sized for ε."""
    ctx = CheckContext(make_reference_port(), dtype=dtype, profile="quick")
    a = 0.3
    x, m, x0 = coef.oracle_inputs(ctx, prediction, a, (64, 8), 11, 12, 1.0)
    assert x.dtype == ctx.dtype and m.dtype == ctx.dtype
    assert np.all(np.abs(x0) < 1.0)
    xx, mm = x.double().numpy(), m.double().numpy()
    sa, s1 = math.sqrt(a), math.sqrt(1 - a)
    x0_hat = {"epsilon": (xx - s1 * mm) / sa, "sample": mm, "v_prediction": sa * xx - s1 * mm}[prediction]
    u = ctx.unit_roundoff
    bound = 2.0 * u * (np.abs(xx) + np.abs(mm) + np.abs(x0)) / sa
    assert np.all(np.abs(x0_hat - x0) <= bound)


def test_oracle_inputs_reject_bad_arguments() -> None:
    ctx = CheckContext(make_reference_port(), dtype="float32", profile="quick")
    with pytest.raises(ValueError, match="alpha_bar_t"):
        coef.oracle_inputs(ctx, "epsilon", 1.0, (4,), 1, 2, 1.0)
    with pytest.raises(ValueError, match="x0_range"):
        coef.oracle_inputs(ctx, "epsilon", 0.5, (4,), 1, 2, 0.0)
    with pytest.raises(ValueError, match="prediction_type"):
        coef.oracle_inputs(ctx, "score", 0.5, (4,), 1, 2, 1.0)


# -- the check ---------------------------------------------------------------------------------------


def _check(sampler: Any, dtype: str, seed: int = 0) -> dict[str, Any]:
    return {r.name: r for r in coef.check_coefficients(CheckContext(sampler, dtype=dtype, profile="quick", seed=seed))}


def test_family_is_registered_and_given_to_step_targets_only() -> None:
    from ddspec.conformance.checks import ALL_CHECKS

    assert "coefficients" in FAMILIES
    assert coef.check_coefficients in ALL_CHECKS
    assert coef.check_coefficients in select_checks(make_reference_port(), ALL_CHECKS)
    assert coef.check_coefficients.target_kinds == ("step",)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("family", ["ddim", "ddpm"])
def test_correct_port_passes_with_the_coefficients_in_details(dtype: str, family: str) -> None:
    port = make_reference_port(family=family) if family == "ddpm" else make_reference_port()
    results = _check(port, dtype)
    assert results
    for r in results.values():
        assert r.verdict is Verdict.PASS, r.message
        rows = r.details["coefficients"]
        assert rows and r.details["false_failure_rate"] > 0
        for row in rows:
            assert {"t", "t_prev", "fitted", "reference", "tolerance"} <= set(row)
            assert set(row["fitted"]) == set(row["reference"]) == set(row["tolerance"])
            assert set(row["fitted"]) >= {"a", "b"}


class _ScaledNoisePort(ReferencePort):
    """Planted bug: the noise term scaled by ``factor`` (σ → factor·σ)."""

    factor = 1.01

    def _noise(self, x_t: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        return super()._noise(x_t, noise, generator) * self.factor


class _TinyScalePort(_ScaledNoisePort):
    factor = 1.0 + 1e-4


def test_planted_one_percent_noise_bug_fails_in_float16_where_single_step_passes_it() -> None:
    port = _ScaledNoisePort(family="ddpm")
    results = _check(port, "float16")
    r = results["coefficients.variance_type=fixed_small"]
    assert r.verdict is Verdict.FAIL, r.message
    assert r.findings and "coefficient c" in r.findings[-1].message
    ctx = CheckContext(port, dtype="float16", profile="quick")
    assert all(s.verdict is Verdict.PASS for s in single_step.check_single_steps(ctx))


def test_float32_is_a_sharper_view() -> None:
    """A 1e-4 relative change of σ: far below float16's coefficient rounding, far above float32's."""
    port = _TinyScalePort(family="ddpm")
    assert _check(port, "float32")["coefficients.variance_type=fixed_small"].verdict is Verdict.FAIL
    assert _check(port, "float16")["coefficients.variance_type=fixed_small"].verdict is Verdict.PASS


def test_non_finite_output_on_consistent_inputs_is_a_failure() -> None:
    class Overflowing(ReferencePort):
        def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, **kw: Any) -> torch.Tensor:
            out = super().step(model_output, t, x_t, **kw)
            return out * torch.tensor(float("inf"), dtype=out.dtype) if int(t) == 0 else out

    results = _check(Overflowing(), "float16")
    r = results["coefficients.eta=0"]
    assert r.verdict is Verdict.FAIL
    assert "non-finite" in r.message and "consistent" in r.message


def test_clipping_target_fits_only_where_the_clip_is_provably_inactive() -> None:
    """bfloat16, ε-prediction, clip to ±1: at t = 999 the inputs' rounding moves x̂₀ by ~u/√ᾱ ≫ 1, so
    that step is not fitted (and counted); steps of larger ᾱ are fitted and pass."""
    port = make_reference_port(clip_sample=True)
    ctx = CheckContext(port, dtype="bfloat16", profile="quick", steps=(1000,), seed=0)
    r = coef.check_coefficients(ctx)[0]
    assert r.verdict is Verdict.PASS, r.message
    assert r.details["steps_not_fitted_x0_may_reach_clip_range"] >= 1
    assert r.details["n_steps_fitted"] >= 1
    assert all(row["t"] < 999 for row in r.details["coefficients"])


# -- loop targets ----------------------------------------------------------------------------------------


def _loop_results(case_name: str, dtype: str = "float32") -> dict[str, Any]:
    from ..quality import loops

    cases = {c.name: c for c in (*loops.CONTROLS, *loops.BUGS)}
    target = cases[case_name].factory()
    ctx = CheckContext(target, dtype=dtype, profile="quick", seed=0)
    return {r.name: r for r in coef.check_loop_coefficients(ctx)}


def test_loop_check_is_given_to_loop_targets_only() -> None:
    from ddspec.conformance.checks import ALL_CHECKS

    from ..quality import loops

    loop_target = loops.CONTROLS[0].factory()
    checks = [*ALL_CHECKS, *coef.LOOP_CHECKS]
    chosen = select_checks(loop_target, checks)
    assert coef.check_loop_coefficients in chosen and coef.check_coefficients not in chosen
    assert coef.check_loop_coefficients not in select_checks(make_reference_port(), checks)


@pytest.mark.parametrize("case", ["plain_ddim", "plain_ddpm", "clipping_ddim"])
def test_correct_loop_passes_with_noise_estimates(case: str) -> None:
    results = _loop_results(case)
    assert results
    assert list(results) == ["loop.coefficients"]
    for r in results.values():
        assert r.verdict is Verdict.PASS, r.message
        assert {row["num_steps"] for row in r.details["coefficients"]} == {1, 10}
    noisy = [row for r in results.values() for row in r.details["coefficients"]
             if "noise_std" in row and row["noise_std"]["reference"] > 0]
    assert noisy, "no noisy transition was judged"
    for row in noisy:
        lo, hi = row["noise_std"]["interval"]
        assert lo <= row["noise_std"]["fitted"] <= hi


@pytest.mark.parametrize(("case", "what"), [("alpha_prev_at_t_minus_1", "b"), ("sigma_from_beta_t", "noise_std"),
                                            ("noise_at_last_step", "noise_std")])
def test_planted_loop_bug_fails(case: str, what: str) -> None:
    """ᾱ_prev at t − 1 changes (a, b); σ² = β_t and noise at the last step change the residual's std."""
    results = _loop_results(case)
    failed = [r for r in results.values() if r.verdict is Verdict.FAIL]
    assert failed, {n: r.message for n, r in results.items()}
    assert any(f"{what} at t=" in r.message for r in failed), [r.message for r in failed]
    assert all(r.family == "loop" and r.name == "loop.coefficients" for r in results.values())


def test_the_alpha_bar_0_variants_identity_step_is_left_to_single_step() -> None:
    # DDIMScheduler(set_alpha_to_one=False) at N = 1 steps from t = 0 to "index 0" (alpha_bar_0): x_prev = x_t,
    # the coefficients (1, 0, 0) exactly, whose rounding terms are 0/0. The fit skips that step (and says so)
    # instead of judging it against a NaN tolerance; single_step compares it exactly.
    from diffusers import DDIMScheduler

    from ddspec.conformance.adapters import adapt

    target = adapt(DDIMScheduler(set_alpha_to_one=False))
    ctx = CheckContext(target, dtype="float32", profile="quick", seed=0, steps=(1, 10))
    results = {r.name: r for r in run_checks(target, ctx, installed_checks()).checks}
    for eta in ("0", "1"):
        r = results[f"coefficients.eta={eta}"]
        assert r.verdict is Verdict.PASS, r.message
        assert r.details["identity_steps_left_to_single_step"] >= 1
    assert results["single_step.eta=0"].verdict is Verdict.PASS
