r"""Self-test of the ``loop`` family: the four real loop styles pass, every planted loop bug fails its check.

The loops are in :mod:`tests.quality.loops`. A correct loop must give no ``fail`` and no ``unsupported``
result in float32 and float64 over several seeds; a planted bug must make every check-name prefix in
its ``expect_fail`` report ``fail``. Expected texts are derived here from the rules' definitions
(diffusers' trailing spacing, ``linspace(...).int()`` truncation, ``range(0, T, T//N)``), not read
back from the harness.
"""

from __future__ import annotations


import pytest
import torch

from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import CheckResult, Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks

from . import loops

_ALL = {c.name: c for c in loops.CORRECT + loops.CONTROLS + loops.BUGS}


def _report(target: LoopSampler, *, dtype: str = "float32", profile: str = "quick", seed: int = 0,
            timeout_s: float = 30.0, steps: tuple[int, ...] | None = None) -> Report:
    ctx = CheckContext(target, dtype=dtype, profile=profile, seed=seed, timeout_s=timeout_s, steps=steps)
    return run_checks(target, ctx, installed_checks())


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:300]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


def _result(report: Report, name: str) -> CheckResult:
    found = [r for r in report.checks if r.name == name]
    assert found, f"no result named {name}; have {[r.name for r in report.checks]}"
    return found[0]


# -- correct loops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [c.name for c in loops.CORRECT + loops.CONTROLS])
def test_correct_loop_passes(name: str, dtype: str, seed: int) -> None:
    report = _report(_ALL[name].factory(), dtype=dtype, seed=seed)
    assert not _bad(report), _bad(report)
    families = {r.name.split(".")[1] for r in report.checks if r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE)}
    assert {"timesteps", "final_step", "determinism", "inputs_unchanged"} <= families
    learned = report.checks and _ALL[name].factory().conventions.variance_type == "learned_range"
    assert learned or "output_law" in families  # no closed-form law for learned variances
    assert all(r.family == "loop" for r in report.checks)


@pytest.mark.parametrize("name", [c.name for c in loops.CORRECT])
def test_correct_loop_passes_the_default_profile(name: str) -> None:
    report = _report(_ALL[name].factory(), dtype="float32", profile="default", seed=3)
    assert not _bad(report), _bad(report)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 8))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [c.name for c in loops.CORRECT])
def test_correct_loop_passes_wider_seed_sweep(name: str, dtype: str, seed: int) -> None:
    report = _report(_ALL[name].factory(), dtype=dtype, profile="default", seed=seed)
    assert not _bad(report), _bad(report)


def test_noisy_steps_are_judged_statistically() -> None:
    """The stochastic loops really reach the statistical checks (they are not all left out for rounding)."""
    for name in ("tutorial", "ermongroup", "improved_diffusion", "compvis", "plain_ddpm"):
        report = _report(_ALL[name].factory(), dtype="float32")
        noise = [r for r in report.checks if r.name.startswith("loop.noise.")]
        assert any(r.verdict == Verdict.PASS and r.details["per_step_tested"] >= 2 for r in noise), (name, noise)


# -- planted bugs ----------------------------------------------------------------------------------------


def test_there_are_at_least_twelve_planted_loop_bugs() -> None:
    assert len(loops.BUGS) >= 12
    families = {p.split(".")[1] for case in loops.BUGS for p in case.expect_fail}
    assert {"timesteps", "steps", "final_step", "noise", "noise_independence", "run", "inputs_unchanged",
            "determinism"} <= families


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [c.name for c in loops.BUGS])
def test_planted_loop_bug_fails_its_family(name: str, dtype: str) -> None:
    case = _ALL[name]
    report = _report(case.factory(), dtype=dtype, timeout_s=case.timeout_s)
    failing = [r for r in report.checks if r.verdict == Verdict.FAIL]
    for prefix in case.expect_fail:
        assert any(r.name.startswith(prefix) for r in failing), (
            f"{name} ({case.description}): expected a failure of {prefix}, got {[r.name for r in failing]}")
    assert not [r for r in report.checks if r.details.get("check_function")], "a check function crashed"


def test_failure_messages_say_where() -> None:
    report = _report(_ALL["alpha_prev_at_t_minus_1"].factory())
    steps = _result(report, "loop.steps.N=10,eta=0")
    worst = steps.findings[0]
    assert worst.step is not None and worst.timestep is not None and worst.element is not None
    assert worst.expected is not None and worst.got is not None and worst.tolerance is not None
    assert abs(worst.got - worst.expected) > worst.tolerance
    noise = _result(_report(_ALL["eta_ignored"].factory()), "loop.noise.N=10,eta=1")
    assert "variance per step" in noise.message and "false-failure rate" in noise.message


# -- declarations ---------------------------------------------------------------------------------------


def test_ermongroup_n_plus_one_steps_are_reported_and_declarable() -> None:
    # range(0, 1000, 1000 // 7) = 0, 142, ..., 994: ceil(1000 / 142) = 8 steps for N = 7
    expected_calls = len(range(0, loops.T, loops.T // 7))
    assert expected_calls == 8
    undeclared = _report(loops.ermongroup_target(declare_timesteps=False), steps=(7,))
    result = _result(undeclared, "loop.timesteps.N=7")
    assert result.verdict == Verdict.FAIL
    assert f"called the model {expected_calls} times" in result.message
    assert "uniform" in result.message and "timesteps=" in result.message
    declared = _report(loops.ermongroup_target(declare_timesteps=True), steps=(7,))
    assert not _bad(declared), _bad(declared)
    assert "uniform" in _result(declared, "loop.timesteps.N=7").message


def test_an_explicit_list_off_every_named_rule_is_acceptable_with_the_nearest_rule() -> None:
    # lucidrains: linspace(-1, 999, 4) = -1, 332.33, 665.67, 999, truncated: 999, 665, 332
    # trailing (diffusers): round(1000 - k * 1000/3) - 1 = 999, 666, 332
    times = loops.lucidrains_style_times(3)
    trailing = [round(1000 - k * 1000 / 3) - 1 for k in range(3)]
    assert times == [999, 665, 332] and trailing == [999, 666, 332]

    class LucidrainsTimes(loops.PlainDDIM):
        def timesteps(self, n: int) -> list[int]:
            return loops.lucidrains_style_times(n)

    target = LoopSampler(LucidrainsTimes(), Conventions(family="ddim", num_train_timesteps=loops.T),
                         timesteps=loops.lucidrains_style_times)
    report = _report(target, steps=(3,))
    assert not _bad(report), _bad(report)
    result = _result(report, "loop.timesteps.N=3")
    assert result.verdict == Verdict.ACCEPTABLE
    assert "equals trailing except 1 position(s): 665 vs 666" in result.message
    assert result.consequence and "declared (t, t_prev) pairs" in result.consequence


def test_supported_num_steps_restricts_and_says_so() -> None:
    report = _report(loops.tutorial_target())
    skipped = [r for r in report.checks if r.verdict == Verdict.SKIPPED and r.name.startswith("loop.timesteps")]
    assert {r.name for r in skipped} == {"loop.timesteps.N=1", "loop.timesteps.N=10"}
    assert all("not supported" in r.message for r in skipped)
    ran = _result(report, f"loop.timesteps.N={loops.T}")
    assert ran.verdict == Verdict.PASS and "supported_num_steps" in ran.message


@pytest.mark.parametrize("declare", [True, False])
def test_a_rescaled_model_timestep_passes_only_when_declared(declare: bool) -> None:
    # T = 4000: improved-diffusion passes t * 1000 / 4000 = t / 4, which is not an index for t = 889
    target = loops.improved_diffusion_target(num_train=4000, rescale=True, declare_rescale=declare)
    report = _report(target)
    timesteps = _result(report, "loop.timesteps.N=10")
    if declare:
        assert not _bad(report), _bad(report)
    else:
        assert timesteps.verdict == Verdict.FAIL and "model_timestep" in timesteps.message


def test_undeclared_float32_coefficients_are_caught_in_float64() -> None:
    """The coefficient_dtype declaration is what admits improved-diffusion's float32 coefficients."""
    honest = loops.improved_diffusion_target()
    silent = LoopSampler(honest.sample, honest.conventions, accepts_eta=False, accepts_generator=False,
                         timesteps=honest.timestep_declaration)
    assert not _bad(_report(honest, dtype="float64"))
    failing = [r.name for r in _report(silent, dtype="float64").checks if r.verdict == Verdict.FAIL]
    assert any(n.startswith("loop.final_step") for n in failing), failing


# -- the caller's RNG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ermongroup", "tutorial", "improved_diffusion"])
def test_the_global_rng_state_comes_back_unchanged(name: str) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state().clone()
    expected_next = torch.rand(3)
    torch.set_rng_state(before)
    _report(_ALL[name].factory())
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(3), expected_next)
