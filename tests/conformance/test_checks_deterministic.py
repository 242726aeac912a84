r"""Tests of the deterministic harness checks: schedule, timesteps, oracle and single_step.

What is asserted, and where the expectations come from:

* Known-good targets pass every check (the bundled :class:`ReferencePort`, DDIM and DDPM with
  ``fixed_large``; diffusers' default DDPM and DDIM and a Stable-Diffusion-style DDIM, whose declared
  ``set_alpha_to_one=False`` is reported once as ``acceptable``), in float32 and float64, for two seeds.
* Planted bugs fail the check that targets them; the expected positions are derived by hand below
  (leading spacing: τ_k = k·⌊T/N⌋ + offset; trailing ties: T(N−k)/N is a tie k + 1/2 exactly when
  2·(T(N−k) mod N) = N).
* A target that raises, hangs, returns NaN, or a tensor of the wrong shape or dtype yields ``fail``
  results, never an exception; undeclared conventions yield ``unsupported``.
* Known diffusers discrepancies are found: DDPM adds noise at the final step when ``steps_offset=1``
  (it tests t > 0, not t_prev ≥ 0), ``fixed_large_log`` takes the square root of a log (NaN),
  DDIM steps to t − T//N for every spacing, trailing spacing returns N + 1 timesteps ending in −1.

Everything runs with the ``quick`` profile and its (2, 3, 4, 4) tensors.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters.function import FunctionSampler
from ddspec.conformance.checks import oracle, schedule, single_step, timesteps
from ddspec.conformance.checks._common import Tally, choose_steps, offset_for
from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import Conventions, declared_timesteps
from ddspec.conformance.results import CheckResult, Verdict
from ddspec.conformance.runner import run_checks
from ddspec.conformance.torch_port import ReferencePort, make_reference_port
from ddspec.reference.alphas import alpha_bar
from ddspec.reference.schedules import linear_betas

CHECKS = [*schedule.CHECKS, *timesteps.CHECKS, *oracle.CHECKS, *single_step.CHECKS]
MY_FAMILIES = {"schedule", "timesteps", "oracle", "single_step"}


def run(sampler: Any, dtype: str = "float32", seed: int = 0, **ctx_kw: Any) -> dict[str, CheckResult]:
    """Every deterministic check through the runner; results by name (a crashed check would be a result too)."""
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=seed, **ctx_kw)
    report = run_checks(sampler, ctx, CHECKS)
    crashed = [r for r in report.checks if "traceback" in r.details]
    assert not crashed, f"a check function crashed: {crashed[0].message}"
    names = [r.name for r in report.checks]
    assert len(names) == len(set(names)), f"duplicate result names: {names}"
    return {r.name: r for r in report.checks}


def verdicts(results: dict[str, CheckResult]) -> dict[str, str]:
    return {n: r.verdict.value for n, r in results.items()}


def assert_all_pass(results: dict[str, CheckResult], *, acceptable: set[str] = frozenset(),
                    skipped: set[str] = frozenset()) -> None:
    for name, r in results.items():
        want = Verdict.ACCEPTABLE if name in acceptable else Verdict.SKIPPED if name in skipped else Verdict.PASS
        assert r.verdict is want, f"{name}: {r.verdict.value}: {r.message} {r.findings[:1]}"
        assert r.family in MY_FAMILIES
        if want is Verdict.PASS and r.observed is not None and r.tolerance is not None and r.family != "timesteps":
            assert r.observed <= r.tolerance


# -- the bundled known-good port ---------------------------------------------------------------------

PORTS = {
    "ddim": lambda: make_reference_port(),
    "ddpm_fixed_large": lambda: make_reference_port(family="ddpm", variance_type="fixed_large"),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("port", sorted(PORTS))
def test_reference_port_passes_every_check(port: str, dtype: str, seed: int) -> None:
    results = run(PORTS[port](), dtype, seed)
    assert_all_pass(results)
    expected = {"schedule.betas", "schedule.alphas_cumprod",
                *(f"timesteps.sequence.N={n}" for n in (1, 2, 3, 7, 10, 1000))}
    if port == "ddim":
        expected |= {"oracle.point_mass.eta=0", "oracle.point_mass.eta=1",
                     "single_step.eta=0", "single_step.eta=1"}
    else:
        expected |= {"oracle.point_mass.variance_type=fixed_large", "single_step.variance_type=fixed_large"}
    assert set(results) == expected
    # the port holds the reference's own float64 tables: no table error at all
    assert results["schedule.alphas_cumprod"].observed == 0.0
    assert results["schedule.betas"].details["table_dtype"] == "float64"


# -- diffusers ---------------------------------------------------------------------------------------


def _diffusers(kind: str):
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    if kind == "ddpm":
        return adapt(diffusers.DDPMScheduler())
    if kind == "ddim":
        return adapt(diffusers.DDIMScheduler())
    if kind == "sd_ddim":
        return adapt(diffusers.DDIMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
            set_alpha_to_one=False, steps_offset=1, clip_sample=False))
    raise AssertionError(kind)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["ddpm", "ddim", "sd_ddim"])
def test_diffusers_default_configs_pass(kind: str, dtype: str, seed: int) -> None:
    results = run(_diffusers(kind), dtype, seed)
    acceptable, skipped = set(), set()
    if kind == "sd_ddim":
        # set_alpha_to_one=False is a declared variant. Leading with steps_offset=1 has no N = T rule
        # (the largest timestep would be 999·1 + 1 = 1000 > T − 1), and diffusers returns 1000 there
        # (its step then raises IndexError): a real discrepancy (docs/diffusers.md §6), reported as FAIL.
        acceptable = {"oracle.final_alpha_bar"}
        n_t = results.pop("timesteps.sequence.N=1000")
        assert n_t.verdict is Verdict.FAIL and "steps_offset" in n_t.message
        assert n_t.findings[0].timestep == 1000
        assert "sqrt(1 - alpha_bar_0)" in results["oracle.final_alpha_bar"].consequence
    assert_all_pass(results, acceptable=acceptable, skipped=skipped)
    # diffusers holds float32 tables whatever the run's dtype
    assert results["schedule.alphas_cumprod"].details["table_dtype"] == "float32"
    step_result = next(r for n, r in results.items() if n.startswith("single_step."))
    assert step_result.details["u_table"] == 2.0**-24


def test_diffusers_trailing_spacing_ties_are_acceptable_and_extra_timestep_fails() -> None:
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    sampler = adapt(diffusers.DDPMScheduler(timestep_spacing="trailing"))
    ctx = CheckContext(sampler, dtype="float32", profile="quick", steps=(48, 61))
    results = {r.name: r for r in timesteps.check_timesteps(ctx)}
    # T = 1000, N = 48: T(N−k)/N is a tie when 1000(48−k) ≡ 24 (mod 48); 1000 ≡ 40, so with j = 48 − k,
    # 40j ≡ 24 (mod 48) ⇔ 5j ≡ 3 (mod 6) ⇔ j ≡ 3 (mod 6): k = 3, 9, …, 45
    ties = set(range(3, 48, 6))
    assert timesteps.tie_positions("trailing", 1000, 48) == ties
    r48 = results["timesteps.sequence.N=48"]
    assert r48.verdict is Verdict.ACCEPTABLE
    assert r48.details["differing_positions"] and set(r48.details["differing_positions"]) <= ties
    assert "tie broken by float rounding" in r48.consequence
    # N = 61: diffusers' float arange gives 62 entries, the last rounding to 0 and becoming −1
    r61 = results["timesteps.sequence.N=61"]
    assert r61.verdict is Verdict.FAIL
    assert r61.details["got_length"] == 62 and r61.details["expected_length"] == 61
    assert "[-1]" in r61.message
    # the step checks fall back to the reference's 61 timesteps and say so
    ctx61 = CheckContext(sampler, dtype="float32", profile="quick", steps=(61,))
    step_r = single_step.check_single_steps(ctx61)[0]
    assert step_r.details["timesteps_source"] == {"N=61": "reference"}
    assert "not a valid subsequence" in step_r.details["timesteps_notes"]["N=61"]


def test_linspace_tie_position_is_derived() -> None:
    # T = 1000, N = 27: j·999/26 is a tie when 999j ≡ 13 (mod 26); 999 ≡ 11, 11·13 = 143 ≡ 13: j = 13,
    # sampling-order position 26 − 13 = 13 (and no other j < 26 solves it, 11 being invertible mod 26)
    assert timesteps.tie_positions("linspace", 1000, 27) == {13}
    assert timesteps.tie_positions("leading", 1000, 27) == set()


def test_diffusers_ddpm_steps_offset_adds_noise_at_the_final_step() -> None:
    """Known discrepancy: DDPMScheduler adds noise when t > 0; with steps_offset=1 the last t is 1.

    With ``fixed_small`` that noise has variance β̃ = 0 clamped to 1e-20 (std 1e-10, below float32
    resolution, so it passes); with ``fixed_large`` it is β′ = 1 − ᾱ_1 ≈ 2.2e-4 (std ≈ 0.015).
    """
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    sampler = adapt(diffusers.DDPMScheduler(steps_offset=1, variance_type="fixed_large"))
    ctx = CheckContext(sampler, dtype="float32", profile="quick", steps=(10,))
    r = single_step.check_single_steps(ctx)[0]
    assert r.verdict is Verdict.FAIL
    # leading, N = 10, offset 1: 901, 801, …, 1; the last step (k = 9) goes 1 -> −1 (the data)
    assert {(f.step, f.timestep) for f in r.findings} == {(9, 1)}
    o = {x.name: x for x in oracle.check_point_mass_oracle(ctx)}["oracle.point_mass.variance_type=fixed_large"]
    assert o.verdict is Verdict.FAIL and o.findings[0].timestep == 1


def test_diffusers_ddpm_fixed_large_log_gives_nan() -> None:
    """Known discrepancy: variance_type='fixed_large_log' takes the square root of log β′ < 0."""
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    sampler = adapt(diffusers.DDPMScheduler(variance_type="fixed_large_log"))
    ctx = CheckContext(sampler, dtype="float32", profile="quick", steps=(10,))
    r = single_step.check_single_steps(ctx)[0]
    assert r.verdict is Verdict.FAIL
    assert "non-finite output" in r.findings[0].message


def test_diffusers_ddim_previous_timestep_is_wrong_for_trailing() -> None:
    """Known discrepancy: DDIMScheduler steps to t − T//N for every spacing (trailing N = 7: 999 → 857, not 856)."""
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    sampler = adapt(diffusers.DDIMScheduler(timestep_spacing="trailing", clip_sample=False))
    ctx = CheckContext(sampler, dtype="float32", profile="quick", steps=(7,))
    results = {r.name: r for r in single_step.check_single_steps(ctx)}
    r = results["single_step.eta=0"]
    assert r.verdict is Verdict.FAIL
    # trailing T = 1000, N = 7: round(1000·(7−k)/7) − 1 = 999, 856, 713, 570, 428, 285, 142
    assert list(sampler.timesteps(7)) == [999, 856, 713, 570, 428, 285, 142]


# -- planted bugs ------------------------------------------------------------------------------------


class TimestepsOffByOne(ReferencePort):
    """Declares leading spacing with offset 0 but returns every timestep one higher (steps consistently)."""

    def timesteps(self, num_steps: int) -> np.ndarray:
        return super().timesteps(num_steps) + 1

    def _t_prev(self, t: int, num_steps: int) -> int:
        ts = self.timesteps(num_steps).tolist()
        k = ts.index(t)
        return ts[k + 1] if k + 1 < len(ts) else -1


def test_planted_timestep_off_by_one_fails_the_timesteps_check() -> None:
    results = run(TimestepsOffByOne(), "float32")
    r = results["timesteps.sequence.N=10"]
    assert r.verdict is Verdict.FAIL
    # leading, T = 1000, N = 10: 900, 800, …, 0; the target gives 901, …, 1
    f = r.findings[0]
    assert (f.step, f.expected, f.got) == (0, 900.0, 901.0)
    assert r.reproduce and "reference_timesteps" in r.reproduce
    # the steps themselves are right for the timesteps the target visits
    assert results["single_step.eta=0"].verdict is Verdict.PASS
    assert results["oracle.point_mass.eta=0"].verdict is Verdict.PASS


def _hand_ddim(conv: Conventions, betas: np.ndarray, index_shift: int):
    r"""A hand-written deterministic DDIM step (eq. 12, η = 0, ε-prediction) reading ᾱ at ``t − index_shift``."""
    ab = alpha_bar(betas)

    def step_fn(model_output, t, x_t, *, num_steps, eta, noise, generator, predicted_variance):
        if eta != 0.0:
            raise NotImplementedError("this sampler is deterministic")
        ts = declared_timesteps(conv, num_steps).tolist()
        k = ts.index(int(t))
        prev = ts[k + 1] if k + 1 < len(ts) else -1
        a = float(ab[max(int(t) - index_shift, 0)])
        p = 1.0 if prev < 0 else float(ab[prev])
        x0 = (x_t - math.sqrt(1 - a) * model_output) / math.sqrt(a)
        return math.sqrt(p) * x0 + math.sqrt(1 - p) * model_output

    return step_fn


@pytest.mark.parametrize("shift", [0, 1])
def test_planted_step_reading_the_previous_alpha_bar_fails(shift: int) -> None:
    conv = Conventions(family="ddim", num_train_timesteps=1000)
    betas = linear_betas(1000, 1e-4, 0.02)
    sampler = FunctionSampler(_hand_ddim(conv, betas, shift), betas, conv, name=f"hand-ddim-shift{shift}")
    results = run(sampler, "float32")
    want = Verdict.PASS if shift == 0 else Verdict.FAIL
    assert results["single_step.eta=0"].verdict is want
    assert results["oracle.point_mass.eta=0"].verdict is want
    # η = 1 is refused by this sampler: a broken step, reported as a failure
    assert results["single_step.eta=1"].verdict is Verdict.FAIL
    assert "NotImplementedError" in results["single_step.eta=1"].findings[0].message


def test_planted_fixed_large_instead_of_fixed_small_fails() -> None:
    declared = make_reference_port(family="ddpm", variance_type="fixed_small")
    actual = make_reference_port(family="ddpm", variance_type="fixed_large")
    sampler = FunctionSampler(actual.step, declared.betas(), declared.conventions, name="beta-for-beta-tilde")
    results = run(sampler, "float32")
    r = results["single_step.variance_type=fixed_small"]
    assert r.verdict is Verdict.FAIL
    # the final step (to −1) adds no noise in either, so only stochastic steps differ
    assert all(f.timestep != 0 for f in r.findings)
    assert results["oracle.point_mass.variance_type=fixed_small"].verdict is Verdict.FAIL
    assert results["schedule.betas"].verdict is Verdict.PASS


class NoiseAtFinalStep(ReferencePort):
    """DDPM that adds sqrt(β_t)·z also on the last step (to the data)."""

    def step(self, model_output, t, x_t, *, num_steps, noise=None, **kwargs):
        out = super().step(model_output, t, x_t, num_steps=num_steps, noise=noise, **kwargs)
        if int(t) == int(self.timesteps(num_steps)[-1]) and noise is not None:
            out = out + math.sqrt(float(self.betas()[int(t)])) * noise
        return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_noise_at_the_final_step_fails(dtype: str) -> None:
    results = run(NoiseAtFinalStep(family="ddpm"), dtype)
    r = results["single_step.variance_type=fixed_small"]
    assert r.verdict is Verdict.FAIL
    # leading: N = 1 is [0] and N = 10 ends at 0, so every failing step is t = 0 -> −1
    assert {f.timestep for f in r.findings} == {0}
    assert results["oracle.point_mass.variance_type=fixed_small"].verdict is Verdict.FAIL
    # the reproduce snippet recreates the worst finding exactly
    namespace: dict[str, Any] = {"sampler": NoiseAtFinalStep(family="ddpm"), "print": lambda *a: None}
    exec(r.reproduce, namespace)
    got = namespace["f64"](namespace["got"])[namespace["e"]]
    assert got == r.findings[0].got
    assert namespace["ref"].prev_sample[namespace["e"]] == r.findings[0].expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_planted_float16_schedule_table_fails_the_schedule_check(dtype: str) -> None:
    port = make_reference_port()
    b16 = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float16)
    ab16 = torch.cumprod(1 - b16, 0)
    sampler = FunctionSampler(port.step, b16.double().numpy(), port.conventions,
                              alphas_cumprod=ab16.double().numpy(), name="float16-tables")
    results = {r.name: r for r in schedule.check_schedule(CheckContext(sampler, dtype=dtype, profile="quick"))}
    for name in ("schedule.betas", "schedule.alphas_cumprod"):
        assert results[name].verdict is Verdict.FAIL, name
        assert results[name].details["table_dtype"] == "float16"
        assert results[name].details["judged_at"] == "float32"
        assert results[name].reproduce
    # in a float16 run a float16 table is what the dtype allows: judged at float16, it passes
    r16 = {r.name: r for r in schedule.check_schedule(CheckContext(sampler, dtype="float16", profile="quick"))}
    assert r16["schedule.betas"].verdict is Verdict.PASS
    assert r16["schedule.betas"].details["judged_at"] == "float16"


def test_oracle_reproduce_snippet_reruns_the_failing_run() -> None:
    sampler = NoiseAtFinalStep(family="ddpm")
    r = {x.name: x for x in oracle.check_point_mass_oracle(CheckContext(sampler, profile="quick"))}[
        "oracle.point_mass.variance_type=fixed_small"]
    assert r.verdict is Verdict.FAIL
    namespace: dict[str, Any] = {"sampler": sampler, "print": lambda *a: None}
    exec(r.reproduce, namespace)
    assert namespace["r"].verdict is Verdict.FAIL
    assert namespace["r"].findings[0] == r.findings[0]


# -- broken targets ----------------------------------------------------------------------------------


class Broken:
    """A protocol-shaped sampler whose step misbehaves in the way ``mode`` names."""

    def __init__(self, mode: str, family: str = "ddim") -> None:
        self.mode = mode
        self.name = f"broken-{mode}"
        self.port = make_reference_port(family=family)
        self.conventions = self.port.conventions

    def betas(self):
        if self.mode == "tables":
            raise RuntimeError("no tables here")
        return self.port.betas()

    def alphas_cumprod(self):
        if self.mode == "tables":
            raise RuntimeError("no tables here")
        return self.port.alphas_cumprod()

    def timesteps(self, num_steps):
        if self.mode == "timesteps":
            raise RuntimeError("no timesteps here")
        return self.port.timesteps(num_steps)

    def step(self, model_output, t, x_t, **kwargs):
        out = self.port.step(model_output, t, x_t, **kwargs)
        if self.mode.endswith("raise_last") and int(t) == int(self.port.timesteps(kwargs["num_steps"])[-1]):
            raise RuntimeError("last step exploded")
        if self.mode.startswith("bias"):
            return out + 0.05
        if self.mode == "raise":
            raise RuntimeError("step exploded")
        if self.mode == "nan":
            return out * float("nan")
        if self.mode == "shape":
            return out[..., :2]
        if self.mode == "dtype":
            return out.double() if out.dtype != torch.float64 else out.float()
        if self.mode == "list":
            return out.tolist()
        if self.mode == "hang":
            time.sleep(0.6)
        return out


@pytest.mark.parametrize(
    ("mode", "text"),
    [("raise", "RuntimeError: step exploded"), ("nan", "non-finite output"), ("shape", "shape"),
     ("dtype", "dtype"), ("list", "expected a torch.Tensor")],
)
def test_misbehaving_step_fails_without_raising(mode: str, text: str) -> None:
    results = run(Broken(mode), "float32", steps=(1, 10))
    for name in ("single_step.eta=0", "single_step.eta=1",
                 "oracle.point_mass.eta=0", "oracle.point_mass.eta=1"):
        r = results[name]
        assert r.verdict is Verdict.FAIL, name
        assert text in r.findings[0].message, (name, r.findings[0].message)
    assert results["schedule.betas"].verdict is Verdict.PASS


def test_hanging_step_times_out_once_and_fails() -> None:
    sampler = Broken("hang")
    ctx = CheckContext(sampler, profile="quick", steps=(10,), timeout_s=0.1)
    start = time.perf_counter()
    results = {r.name: r for r in single_step.check_single_steps(ctx)}
    # one timed-out call, then no more: 16 calls (8 steps × 2 etas) would take >= 1.6 s
    assert time.perf_counter() - start < 1.0
    r0, r1 = results["single_step.eta=0"], results["single_step.eta=1"]
    assert r0.verdict is Verdict.FAIL and r1.verdict is Verdict.FAIL
    assert len(r0.findings) == 1 and r0.findings[0].message.startswith("N=10: step timed out after 0.1 s")
    assert len(r1.findings) == 1 and "not called" in r1.findings[0].message
    # one root cause: both record the same timeout, so that the report groups them
    [e0], [e1] = r0.details["errors"], r1.details["errors"]
    assert e0["error"].startswith("timed out after 0.1 s") and e1["error"] == e0["error"]


STEP_RESULTS = ("single_step.eta=0", "single_step.eta=1", "oracle.point_mass.eta=0", "oracle.point_mass.eta=1")


def test_a_broken_step_count_is_one_finding_and_the_working_steps_keep_their_numbers() -> None:
    """Steps 0-8 of the 10-step run are exact, step 9 raises: every step result fails, its message
    leads with the broken step count and its cause, the calls that raised alike (one per oracle
    point) are one finding, the exception is recorded in ``details["errors"]``, and ``observed`` /
    ``tolerance`` are those of the steps that were compared (finite, within the tolerance: the
    port is exact there), in the result and in the text report, whose verdict still says fail."""
    from ddspec.conformance.report import format_check, format_text
    from ddspec.conformance.results import Report

    results = run(Broken("raise_last"), "float32", steps=(10,))
    for name in STEP_RESULTS:
        r = results[name]
        assert r.verdict is Verdict.FAIL, name
        assert r.details["errors"] == [{"num_steps": 10, "error": "RuntimeError: last step exploded"}], name
        broken = [f for f in r.findings if "raised" in f.message]
        assert len(broken) == 1 and broken[0].message.startswith(
            "N=10: step raised RuntimeError: last step exploded ("), (name, broken)
        assert broken[0].step == 9 and broken[0].timestep == 0  # leading, N = 10: the last step is t = 0
        assert r.observed is not None and r.tolerance is not None, name
        assert 0.0 <= r.observed <= r.tolerance < math.inf, (name, r.observed, r.tolerance)
        head, _, rest = r.message.partition(": ")
        assert re.match(r"\d+ step call\(s\) produced no usable output: N=10: step raised ", rest), r.message
        assert "where the calls worked" in rest and "exceed" not in rest and "leave" not in rest
        assert format_check(r).splitlines()[0].startswith(f"FAIL        {name}  (observed ")
    # the oracle drives two points per run, both end at the raising step: one finding for both calls
    assert "2 calls" in results["oracle.point_mass.eta=0"].findings[0].message
    text = format_text(Report(target="broken", device="cpu", dtype="float32", profile="quick", seed=0,
                              checks=tuple(results[n] for n in STEP_RESULTS)))
    rows = [line.split() for line in text.splitlines() if line.strip().startswith(STEP_RESULTS)]
    assert len(rows) == 4 and all(row[1] == "fail" and row[2] not in ("inf", "-") for row in rows), rows


def test_broken_and_exceeding_steps_are_both_reported_with_a_finite_worst_ratio() -> None:
    """Every output is off by 0.05 (far beyond a float32 step tolerance of ~1e-5) and the last step
    raises: the message names the broken call first, then the exceeding elements with the worst
    ratio of the elements that were compared (finite); ``observed`` is the planted 0.05 of the
    compared elements (up to the float32 step error), not the inf a broken call stands for."""
    results = run(Broken("bias_raise_last"), "float32", steps=(10,))
    r = results["single_step.eta=0"]
    assert r.verdict is Verdict.FAIL
    assert r.observed == pytest.approx(0.05, rel=1e-3) and r.tolerance is not None and r.tolerance < 1e-3
    broken_at = r.message.index("produced no usable output")
    exceed_at = r.message.index("elements exceed the step tolerance (worst ratio ")
    assert broken_at < exceed_at
    worst = float(r.message[exceed_at:].split("worst ratio ", 1)[1].split(")", 1)[0])
    assert 1.0 < worst < math.inf
    assert worst == pytest.approx(max(f.error / f.tolerance for f in r.findings if f.tolerance), rel=5e-3)


def test_tally_result_words_every_outcome() -> None:
    """The shared verdict of the oracle and single-step checks: a pass quotes the worst ratio; a
    failure leads with the broken calls, one entry per step count and reason, quotes the worst
    ratio of the compared elements, |1.5 - 1| / 0.1 = 5 here, and keeps their observed error and
    tolerance; only when nothing was compared is observed inf (and tolerance None)."""
    from ddspec.conformance.checks._common import tally_result

    def result(tally: Tally) -> CheckResult:
        return tally_result("single_step.x", "single_step", tally, what="x", exceeding="of 2 elements exceed",
                            within="all within", reproduce="snippet", details={})

    ok = Tally()
    ok.compare(np.array([1.0, 2.0]), np.array([1.0, 2.05]), np.array([0.1, 0.1]), step=0, timestep=5, label="k=0")
    r = result(ok)
    assert r.verdict is Verdict.PASS and r.message == "x: all within (worst ratio 0.5)"
    assert r.observed == pytest.approx(0.05) and r.tolerance == 0.1 and r.reproduce is None
    assert "errors" not in r.details

    bad = Tally()
    bad.compare(np.array([1.5, 2.0]), np.array([1.0, 2.0]), np.array([0.1, 0.1]), step=0, timestep=5, label="k=0")
    r = result(bad)
    assert r.verdict is Verdict.FAIL and r.message == "x: 1 of 2 elements exceed (worst ratio 5)"
    assert r.observed == pytest.approx(0.5) and r.tolerance == 0.1 and r.reproduce == "snippet"

    for k in (1, 2):  # two calls of the 3-step run raise alike: one entry
        bad.broken(step=k, timestep=3 - k, message="step raised RuntimeError: no", num_steps=3,
                   error="RuntimeError: no", where=f"step {k}")
    r = result(bad)
    assert r.message == ("x: 2 step call(s) produced no usable output: N=3: step raised RuntimeError: no "
                         "(first at step 1; 2 calls); 1 of 2 elements exceed (worst ratio 5)")
    assert r.observed == pytest.approx(0.5) and r.tolerance == 0.1
    assert [f.step for f in r.findings] == [1, 0]
    assert r.details["errors"] == [{"num_steps": 3, "error": "RuntimeError: no"}]

    within = Tally()
    within.compare(np.array([1.0]), np.array([1.02]), np.array([0.1]), step=0, timestep=5, label="k=0")
    within.broken(step=0, timestep=9, message="step returned a list, expected a torch.Tensor", num_steps=1)
    r = result(within)
    assert r.verdict is Verdict.FAIL
    assert r.message == ("x: 1 step call(s) produced no usable output: N=1: step returned a list, expected a "
                         "torch.Tensor; where the calls worked, all within (worst ratio 0.2)")
    assert r.observed == pytest.approx(0.02) and r.tolerance == 0.1
    assert "errors" not in r.details  # no exception: a contract failure, not a root crash

    none = Tally()
    none.broken(step=0, timestep=9, message="step raised RuntimeError: no", num_steps=1, error="RuntimeError: no")
    r = result(none)
    assert r.verdict is Verdict.FAIL and r.observed == math.inf and r.tolerance is None


def test_unreadable_tables_and_timesteps_fail_the_checks_that_read_them() -> None:
    results = run(Broken("tables"), "float32", steps=(10,))
    for name in ("schedule.betas", "schedule.alphas_cumprod"):
        assert results[name].verdict is Verdict.FAIL and "no tables here" in results[name].message
    # the step checks still run; they cannot infer the table dtype and say so
    assert results["single_step.eta=0"].verdict is Verdict.PASS
    assert "no tables here" in results["single_step.eta=0"].details["table_note"]

    results = run(Broken("timesteps"), "float32", steps=(10,))
    assert results["timesteps.sequence.N=10"].verdict is Verdict.FAIL
    assert "no timesteps here" in results["timesteps.sequence.N=10"].message
    r = results["single_step.eta=0"]
    assert r.verdict is Verdict.PASS and r.details["timesteps_source"] == {"N=10": "reference"}


def test_conventions_that_are_not_conventions_fail() -> None:
    sampler = Broken("none")
    sampler.conventions = {"family": "ddim"}
    results = run(sampler, "float32")
    assert results and all(r.verdict is Verdict.FAIL for r in results.values())
    assert all("not a ddspec.conformance.protocol.Conventions" in r.message for r in results.values())


def test_unsupported_declarations_are_reported_not_defaulted() -> None:
    port = make_reference_port(family="ddpm")
    conv = Conventions(family="ddpm", num_train_timesteps=1000, beta_schedule="laplace", variance_type="fixed_small",
                       unsupported=("beta_schedule='laplace': no ddspec schedule of this name",))
    sampler = FunctionSampler(port.step, port.betas(), conv, name="laplace")
    results = run(sampler, "float32")
    for name in ("schedule.betas", "schedule.alphas_cumprod", "oracle.point_mass.variance_type=fixed_small",
                 "single_step.variance_type=fixed_small"):
        assert results[name].verdict is Verdict.UNSUPPORTED, name
        assert "laplace" in results[name].message
    # the timestep rule does not depend on the schedule
    assert results["timesteps.sequence.N=10"].verdict is Verdict.PASS


def test_no_noise_injection_skips_the_stochastic_paths() -> None:
    class NoInjection(ReferencePort):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.conventions = Conventions(**{**self.conventions.__dict__, "supports_noise_injection": False})

    results = run(NoInjection(family="ddpm"), "float32")
    assert results["oracle.point_mass.variance_type=fixed_small"].verdict is Verdict.SKIPPED
    assert "supports_noise_injection=False" in results["oracle.point_mass.variance_type=fixed_small"].message
    # the deterministic final steps are still compared (N = 1: t = 0 -> −1; N = 10: 0 -> −1)
    r = results["single_step.variance_type=fixed_small"]
    assert r.verdict is Verdict.PASS
    assert r.details["n_steps_compared"] == 2
    # quick profile: N = 10 is sampled at 8 of its steps, the last one (to the data) among them
    assert r.details["stochastic_steps_skipped_no_noise_injection"] == 7


def test_singular_reference_steps_are_skipped_with_the_reason() -> None:
    # zero terminal SNR: ᾱ_{T−1} = 0, so the ε-parameterisation cannot recover x̂₀ at t = T − 1,
    # the first trailing timestep
    port = make_reference_port(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    ctx = CheckContext(port, profile="quick")
    r = single_step.check_single_steps(ctx)[0]
    assert r.verdict is Verdict.PASS
    assert r.details["n_singular_steps_skipped"] == 2  # N = 10's first step, and N = 1 (trailing: [999])
    o = {x.name: x for x in oracle.check_point_mass_oracle(ctx)}["oracle.point_mass.eta=0"]
    assert o.verdict is Verdict.SKIPPED and "singular" in o.message


# -- helpers -----------------------------------------------------------------------------------------


def test_tally_orders_findings_worst_first_and_counts_nonfinite_as_failures() -> None:
    tally = Tally()
    expected = np.zeros((2, 3))
    got = np.array([[0.0, 0.5, 3.0], [np.nan, 0.1, 2.0]])
    ratio = tally.compare(got, expected, np.ones((2, 3)), step=4, timestep=7, label="x")
    assert ratio == math.inf and tally.failed
    found = tally.findings()
    assert [f.element for f in found] == [(1, 0), (0, 2), (1, 2)]  # NaN first, then 3.0 and 2.0 (> tolerance 1)
    assert found[1].error == 3.0 and found[1].tolerance == 1.0 and found[1].step == 4 and found[1].timestep == 7
    assert tally.n_exceeding == 3


def test_choose_steps_keeps_first_and_last() -> None:
    rng = np.random.default_rng(0)
    chosen = choose_steps(1000, 8, rng)
    assert len(chosen) == 8 and chosen[0] == 0 and chosen[-1] == 999 and chosen == sorted(set(chosen))
    assert choose_steps(5, 8, rng) == [0, 1, 2, 3, 4]
    assert choose_steps(5, None, rng) == [0, 1, 2, 3, 4]


def test_offsets_are_stable_and_distinct() -> None:
    import zlib

    assert offset_for("a", 1, "x") == zlib.crc32(b"a|1|x")
    assert offset_for("a", 1, "x") != offset_for("a", 1, "z")


def test_broken_calls_make_one_finding_per_step_count_and_reason() -> None:
    from ddspec.conformance.checks._common import BrokenCalls

    calls = BrokenCalls()
    for k in range(3):
        calls.add(num_steps=1, reason="step raised E: x", error="E: x", where=f"step {k}", step=k)
    calls.add(num_steps=7, reason="step raised E: x", error="E: x", where="step 6", step=6)
    calls.add(num_steps=7, reason="step returned shape (1,)", where="step 2", step=2)
    assert calls.n_calls == 5 and len(calls) == 3
    assert [f.message for f in calls.findings()] == [
        "N=1: step raised E: x (first at step 0; 3 calls)",
        "N=7: step raised E: x (at step 6)",
        "N=7: step returned shape (1,) (at step 2)",
    ]
    assert calls.errors() == [{"num_steps": 1, "error": "E: x"}, {"num_steps": 7, "error": "E: x"}]
    assert calls.summary(limit=1) == "N=1: step raised E: x (first at step 0; 3 calls); and 2 more"
    # a call refused after this check's own timeout counts under that timeout, not as a new finding
    hang = BrokenCalls()
    hang.add(num_steps=10, reason="step timed out after 1 s", error="timed out after 1 s", where="step 3")
    hang.add(num_steps=10, reason="step not called: ...", error="timed out after 1 s", refused=True)
    assert len(hang) == 1 and hang.n_calls == 2
    assert hang.findings()[0].message == "N=10: step timed out after 1 s (at step 3; 1 later call(s) not made)"
