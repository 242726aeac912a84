"""Unit tests of the diagnosis: the catalogue's perturbed steps, the fitting rules, the report schema.

Expected values are derived independently: the perturbed steps are compared with the equations written
out here (Song et al. 2021 eq. 12/16, Ho et al. 2020 eq. 7/15) on hand-picked numbers, and the
unperturbed catalogue step with :func:`ddspec.conformance.expectation.reference_step`.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ddspec.conformance.diagnosis import CATALOGUE, Knobs, pattern_named, perturbed_step
from ddspec.conformance.diagnosis.fit import (
    BEAT_FACTOR,
    Evidence,
    Score,
    Z_CRIT,
    _fit_schedule,
    _score_table,
    _score_transitions,
    diagnose_evidence,
)
from ddspec.conformance.diagnosis.patterns import Obs, make_env
from ddspec.conformance.expectation import reference_betas, reference_step
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.report import format_text, write_junit
from ddspec.conformance.results import SCHEMA_VERSION, CheckResult, Diagnosis, Report, Verdict
from ddspec.reference import schedules

T = 1000
DDIM = Conventions(family="ddim", num_train_timesteps=T)
DDPM = Conventions(family="ddpm", num_train_timesteps=T, variance_type="fixed_small")


def _obs(t: int, t_prev: int, n: int, eta: float, *, last: bool = False, seed: int = 0, x_prev=None, noise=True) -> Obs:
    rng = np.random.default_rng(seed)
    x, m, z = rng.standard_normal((3, 2, 8))
    return Obs(t, t_prev, n, eta, x, m, np.zeros_like(x) if x_prev is None else x_prev, z if noise else None,
               last=last, bound=np.full_like(x, 1e-12))


def _ab(betas: np.ndarray, i: int) -> float:
    return 1.0 if i < 0 else float(np.prod(1.0 - betas[: i + 1]))


# -- the catalogue's steps -----------------------------------------------------------------------------


@pytest.mark.parametrize("conv,eta", [(DDIM, 0.0), (DDIM, 1.0), (DDIM, 0.5), (DDPM, 0.0),
                                      (Conventions(family="ddpm", num_train_timesteps=T, variance_type="fixed_large"), 0.0),
                                      (Conventions(family="ddim", num_train_timesteps=T, prediction_type="v_prediction"), 1.0),
                                      (Conventions(family="ddim", num_train_timesteps=T, clip_sample=True), 0.0)])
def test_unperturbed_catalogue_step_is_the_reference(conv: Conventions, eta: float) -> None:
    betas = reference_betas(conv)
    env = make_env(conv, betas)
    for t, s in ((900, 800), (500, 400), (100, 0)):
        o = _obs(t, s, 10, eta, seed=t)
        ref = reference_step(conv, betas, model_output=o.model_output, t=t, t_prev=s, x_t=o.x_t, noise=o.noise, eta=eta)
        pred = perturbed_step(env, o, Knobs())
        np.testing.assert_allclose(pred.mean + pred.sigma * o.noise, ref.prev_sample, rtol=1e-12, atol=1e-12)


def test_prev_minus_one_uses_alpha_bar_at_t_minus_one() -> None:
    betas = reference_betas(DDIM)
    env = make_env(DDIM, betas)
    o = _obs(500, 400, 10, 0.0)
    a, p = _ab(betas, 500), _ab(betas, 499)  # ᾱ_prev at t − 1
    x0 = (o.x_t - math.sqrt(1 - a) * o.model_output) / math.sqrt(a)
    expected = math.sqrt(p) * x0 + math.sqrt(1 - p) * o.model_output  # DDIM eq. 12, η = 0
    got = pattern_named("prev_timestep_minus_one").predict(env, o)
    np.testing.assert_allclose(got.mean, expected, rtol=1e-10)


def test_stride_goes_to_t_minus_T_over_N() -> None:
    betas = reference_betas(DDIM)
    env = make_env(DDIM, betas)
    o = _obs(999, 888, 10, 0.0)  # linspace's next timestep is 888; t − T//N = 899
    a, p = _ab(betas, 999), _ab(betas, 899)
    x0 = (o.x_t - math.sqrt(1 - a) * o.model_output) / math.sqrt(a)
    np.testing.assert_allclose(pattern_named("prev_timestep_stride").predict(env, o).mean,
                               math.sqrt(p) * x0 + math.sqrt(1 - p) * o.model_output, rtol=1e-10)


def test_sigma_variants_follow_their_equations() -> None:
    betas = reference_betas(DDIM)
    env = make_env(DDIM, betas)
    o = _obs(500, 400, 10, 1.0)
    a, p = _ab(betas, 500), _ab(betas, 400)
    x0 = (o.x_t - math.sqrt(1 - a) * o.model_output) / math.sqrt(a)
    var = (1 - p) / (1 - a) * (1 - a / p)  # DDIM eq. 16 at η = 1
    for name, direction, sigma in (
        ("sigma_squared_as_sigma", math.sqrt(1 - p - math.sqrt(var)), math.sqrt(var)),
        ("direction_without_sigma", math.sqrt(1 - p), math.sqrt(var)),
        ("eta_ignored", math.sqrt(1 - p), 0.0),
        ("sigma_from_beta", math.sqrt(1 - p - (1 - p) / (1 - a) * betas[500]),
         math.sqrt((1 - p) / (1 - a) * betas[500])),
    ):
        pred = pattern_named(name).predict(env, o)
        np.testing.assert_allclose(pred.mean, math.sqrt(p) * x0 + direction * o.model_output, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(pred.sigma, sigma, rtol=1e-9, err_msg=name)


def test_ddpm_variants_follow_ho_eq7() -> None:
    betas = reference_betas(DDPM)
    env = make_env(DDPM, betas)
    o = _obs(500, 400, 10, 0.0)
    a, p = _ab(betas, 500), _ab(betas, 400)
    bp = 1 - a / p
    x0 = (o.x_t - math.sqrt(1 - a) * o.model_output) / math.sqrt(a)
    c0, cx = math.sqrt(p) * bp / (1 - a), math.sqrt(1 - bp) * (1 - p) / (1 - a)
    swapped = pattern_named("posterior_coefficients_swapped").predict(env, o)
    np.testing.assert_allclose(swapped.mean, cx * x0 + c0 * o.x_t, rtol=1e-9)
    large = pattern_named("beta_for_beta_tilde").predict(env, o)
    np.testing.assert_allclose(large.sigma, math.sqrt(bp), rtol=1e-9)
    b = float(betas[500])
    unres = pattern_named("unrespaced_beta").predict(env, o)
    np.testing.assert_allclose(unres.mean, math.sqrt(p) * b / (1 - a) * x0 + math.sqrt(1 - b) * (1 - p) / (1 - a) * o.x_t,
                               rtol=1e-9)


def test_every_pattern_is_documented() -> None:
    names = [p.name for p in CATALOGUE]
    assert len(names) == len(set(names))
    required = {"prev_timestep_stride", "prev_timestep_minus_one", "final_alpha_bar", "steps_offset_ignored",
                "timestep_count", "model_timestep_offset", "sigma_from_beta", "sigma_squared_as_sigma",
                "direction_without_sigma", "eta_ignored", "final_step_noise", "noise_scale", "noise_reused",
                "x0_clip_missing", "x0_clip_unexpected", "x0_from_alpha", "v_sign", "beta_for_beta_tilde",
                "beta_tilde_for_beta", "posterior_coefficients_swapped", "table_precision", "schedule_parameter",
                "unclamped_sqrt_nan", "input_mutation"}
    assert required <= set(names)
    for p in CATALOGUE:
        assert p.title and p.source and p.explains, p.name
    with pytest.raises(ValueError, match="pattern='nope'"):
        pattern_named("nope")


# -- fitting ----------------------------------------------------------------------------------------


def _planted_obs(conv: Conventions, knobs: Knobs, eta: float, n: int = 10) -> tuple[list[Obs], object]:
    betas = reference_betas(conv)
    env = make_env(conv, betas)
    ts = list(range(900, -1, -100))
    out = []
    for k, t in enumerate(ts):
        s = ts[k + 1] if k + 1 < len(ts) else -1
        o = _obs(t, s, n, eta, last=k == len(ts) - 1, seed=k)
        pred = perturbed_step(env, o, knobs)
        x_prev = pred.mean + pred.sigma * o.noise
        bound = 1e-9 * (1.0 + np.abs(x_prev))
        out.append(Obs(t, s, n, eta, o.x_t, o.model_output, x_prev, o.noise, last=o.last, step=k, bound=bound))
    return out, env


def test_planted_minus_one_is_named_and_beats_the_reference() -> None:
    obs, env = _planted_obs(DDIM, Knobs(prev="minus_one"), 0.0)
    ev = Evidence("step", env, obs)
    out = diagnose_evidence(ev, ["single_step.eta=0", "oracle.point_mass.eta=0", "invariants.no_global_rng"])
    assert out[0].pattern == "prev_timestep_minus_one"
    assert out[0].explains == ("single_step.eta=0", "oracle.point_mass.eta=0")
    assert out[0].residual <= out[0].tolerance
    assert "ᾱ_prev is taken at t − 1" in out[0].headline and "explains 2 failing checks" in out[0].headline


def test_noise_factor_is_fitted() -> None:
    obs, env = _planted_obs(DDIM, Knobs(noise_scale=1.37), 1.0)
    out = diagnose_evidence(Evidence("step", env, obs), ["single_step.eta=1"])
    assert out[0].pattern == "noise_scale"
    assert out[0].parameters["factor"] == pytest.approx(1.37, rel=1e-9)


def test_out_of_catalogue_perturbation_gets_no_pattern_with_the_closest() -> None:
    obs, env = _planted_obs(DDIM, Knobs(), 1.0)
    obs = [Obs(o.t, o.t_prev, o.num_steps, o.eta, o.x_t, o.model_output, o.x_prev * 1.03, o.noise, last=o.last,
               step=o.step, bound=o.bound) for o in obs]
    out = diagnose_evidence(Evidence("step", env, obs), ["single_step.eta=1"])
    assert len(out) == 1 and out[0].pattern is None
    assert out[0].headline.startswith("no known pattern explains 1 failing check") and "closest:" in out[0].headline
    assert out[0].closest is not None and out[0].residual > out[0].tolerance


def test_reference_that_fits_is_never_beaten() -> None:
    obs, env = _planted_obs(DDIM, Knobs(), 1.0)
    out = diagnose_evidence(Evidence("step", env, obs), ["single_step.eta=1"])
    assert [d.pattern for d in out] == [None]


def test_beat_rule_needs_a_clear_margin() -> None:
    # a pattern must fit (ratio <= 1) and the reference must be at least BEAT_FACTOR times worse
    assert BEAT_FACTOR >= 2.0 and Z_CRIT == pytest.approx(4.8916, abs=1e-4)


def test_uniform_noise_is_no_known_pattern() -> None:
    betas = reference_betas(DDIM)
    env = make_env(DDIM, betas)
    rng = np.random.default_rng(3)
    obs = []
    for k, t in enumerate(range(900, 0, -100)):
        s = t - 100
        o = _obs(t, s, 10, 1.0, seed=k, noise=False)
        big = np.repeat(o.x_t[None], 64, axis=0).reshape(-1, 8)
        bigm = np.repeat(o.model_output[None], 64, axis=0).reshape(-1, 8)
        o2 = Obs(t, s, 10, 1.0, big, bigm, np.zeros_like(big), None, step=k, bound=np.full_like(big, 1e-12))
        pred = perturbed_step(env, o2, Knobs())
        u = rng.uniform(-1.0, 1.0, size=big.shape)
        obs.append(Obs(t, s, 10, 1.0, big, bigm, pred.mean + pred.sigma * u, None, step=k, bound=o2.bound))
    out = diagnose_evidence(Evidence("loop", env, obs), ["loop.noise.N=10,eta=1"])
    assert out[0].pattern is None  # noise_scale would fit the variance, the kurtosis (1.8) rules it out


def test_table_precision_fits_the_dtype() -> None:
    import torch

    betas = reference_betas(DDIM)
    env = make_env(DDIM, betas)
    table = torch.cumprod(torch.from_numpy(1.0 - betas).to(torch.float16), 0).to(torch.float32).double().numpy()
    ev = Evidence("step", env, table=table, table_delta=np.full(T, 1e-6))
    ref, scores = _score_table(ev)
    assert ref.ratio > 100
    best = min(scores, key=lambda s: s.ratio)
    assert best.pattern == "table_precision" and best.parameters == {"dtype": "float16"} and best.ratio <= 1.0


@pytest.mark.parametrize("s_true", [0.004, 0.02])
def test_cosine_s_is_fitted(s_true: float) -> None:
    conv = Conventions(family="ddim", num_train_timesteps=T, beta_schedule="cosine")
    table = np.cumprod(1.0 - schedules.cosine_betas(T, s_true))
    _, params = _fit_schedule(conv, table)
    assert params["s"] == pytest.approx(s_true, rel=1e-4)


def test_linear_range_is_fitted() -> None:
    table = np.cumprod(1.0 - schedules.linear_betas(T, 2e-4, 0.03))
    _, params = _fit_schedule(DDIM, table)
    assert params["beta_start"] == pytest.approx(2e-4, rel=1e-6) and params["beta_end"] == pytest.approx(0.03, rel=1e-6)


def test_score_is_infinite_for_nan_free_mismatch_only() -> None:
    obs, env = _planted_obs(DDIM, Knobs(), 0.0)
    s = _score_transitions(env, obs, Knobs(), None, {})
    assert isinstance(s, Score) and s.ratio <= 1.0


# -- the report ---------------------------------------------------------------------------------------


def _report() -> Report:
    checks = (
        CheckResult("single_step.eta=0", "single_step", Verdict.FAIL, 1.0, 1e-5, "step differs"),
        CheckResult("schedule.alphas_cumprod", "schedule", Verdict.PASS, 0.0, 1e-6),
    )
    d = Diagnosis("prev_timestep_minus_one", "ᾱ_prev is taken at t − 1 instead of the previous sampled timestep; "
                  "this explains 1 failing check (single_step.*); residual after the fix 3e-08 ≤ tolerance 7e-05",
                  {}, ("single_step.eta=0",), 3e-8, 7e-5, "DDIM eq. 12")
    return Report("t", "cpu", "float32", "quick", 0, checks=checks, diagnosis=(d,))


def test_text_report_opens_with_the_headline() -> None:
    text = format_text(_report())
    assert text.splitlines()[0].startswith("DIAGNOSIS: ᾱ_prev is taken at t − 1")
    assert format_text(_report(), failures_only=True).splitlines()[0].startswith("DIAGNOSIS: ᾱ_prev")


def test_json_round_trip_and_v1_migration() -> None:
    rep = _report()
    data = json.loads(rep.to_json())
    assert data["schema_version"] == SCHEMA_VERSION == "ddspec.report/2"
    assert data["diagnosis"][0]["pattern"] == "prev_timestep_minus_one"
    assert data["diagnosis"][0]["explains"] == ["single_step.eta=0"]
    back = Report.from_json_dict(data)
    assert back.diagnosis == rep.diagnosis
    old = dict(data, schema_version="ddspec.report/1")
    del old["diagnosis"]
    assert Report.from_json_dict(old).diagnosis == ()
    with pytest.raises(ValueError, match="schema_version='ddspec.report/9'"):
        Report.from_json_dict(dict(data, schema_version="ddspec.report/9"))


def test_junit_failure_message_carries_the_headline(tmp_path) -> None:
    path = tmp_path / "j.xml"
    write_junit(_report(), path)
    root = ET.parse(path).getroot()
    failure = root.find(".//testcase[@name='single_step.eta=0']/failure")
    assert failure is not None and failure.get("message").startswith("ᾱ_prev is taken at t − 1")
    props = [p.get("value") for p in root.iter("property") if p.get("name") == "diagnosis"]
    assert any(v.startswith("ᾱ_prev is taken at t − 1") for v in props)


def test_html_shows_the_headline() -> None:
    from ddspec.conformance.html_report import render_html

    assert "ᾱ_prev is taken at t − 1" in render_html(_report())


def test_baseline_reads_both_schema_versions(tmp_path) -> None:
    from ddspec.conformance.baseline import baseline_of

    rep = _report()
    data = json.loads(rep.to_json())
    old = dict(data, schema_version="ddspec.report/1")
    del old["diagnosis"]
    for d in (data, old):
        b = baseline_of(Report.from_json_dict(d))
        assert b is not None


def test_passing_run_pays_nothing() -> None:
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks
    from ddspec.conformance.torch_port import make_reference_port

    calls = []

    def check(ctx):
        calls.append(1)
        return [CheckResult("schedule.x", "schedule", Verdict.PASS)]

    port = make_reference_port()
    rep = run_checks(port, CheckContext(port, profile="quick"), [check])
    assert rep.diagnosis == () and len(calls) == 1


def test_a_hung_target_is_not_driven_again() -> None:
    from ddspec.conformance.diagnosis import diagnose

    rep = Report("t", "cpu", "float32", "quick", 0, checks=(
        CheckResult("single_step.eta=0", "single_step", Verdict.FAIL, message="step(t=0) failed: timed out after 1 s"),))
    assert diagnose(rep, None) == ()  # the context is never touched: driving it would wait again


def test_nothing_failed_means_no_diagnosis() -> None:
    from ddspec.conformance.diagnosis import diagnose

    rep = Report("t", "cpu", "float32", "quick", 0, checks=(CheckResult("schedule.x", "schedule", Verdict.PASS),))
    assert diagnose(rep, None) == ()
