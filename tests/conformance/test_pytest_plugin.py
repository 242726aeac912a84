"""Tests of conformance/pytest_plugin.py: --ddspec-* options, generated items, allowances, helpers.

The inner pytest sessions run in this process (pytester), with ``adapt`` and the installed checks
replaced by fakes, so that only the plugin is under test.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

import ddspec.conformance.checks as checks_package
from ddspec.conformance import loader
from ddspec.conformance.loader import TargetLoadError
from ddspec.conformance.pytest_plugin import assert_conforms, ddspec_check
from ddspec.conformance.results import CheckResult, Finding, Verdict

pytest_plugins = ["pytester"]

TARGET_MODULE = """
import numpy as np

class FakeSampler:
    name = "fake"
    def betas(self):
        return np.full(10, 0.01)

def make():
    return FakeSampler()
"""


def fake_adapt(obj):
    if type(obj).__name__ == "FakeSampler":
        return obj
    raise TypeError(f"adapt: cannot adapt {type(obj).__qualname__}")


def four_verdicts(ctx):
    return [
        CheckResult(name="schedule.betas", family="schedule", verdict=Verdict.PASS),
        CheckResult(name="oracle.step", family="oracle", verdict=Verdict.FAIL, message="step is off",
                    findings=(Finding(step=0, timestep=9, expected=1.0, got=1.5, tolerance=1e-3),)),
        CheckResult(name="timesteps.spacing", family="timesteps", verdict=Verdict.ACCEPTABLE,
                    consequence="a different subsequence"),
        CheckResult(name="invariants.noise", family="invariants", verdict=Verdict.UNSUPPORTED,
                    message="no noise injection"),
    ]


def four_verdicts_and_skipped(ctx):
    return four_verdicts(ctx) + [
        CheckResult(name="distribution.law", family="distribution", verdict=Verdict.SKIPPED, message="n/a"),
    ]


def all_pass(ctx):
    return [CheckResult(name="schedule.betas", family="schedule", verdict=Verdict.PASS)]


@pytest.fixture
def spec(pytester, monkeypatch):
    name = f"ddspec_plugin_target_{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(**{name: TARGET_MODULE})
    pytester.syspathinsert()
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [four_verdicts])
    return f"{name}:make"


def test_one_item_per_check_result(pytester, spec):
    result = pytester.runpytest("--ddspec-target", spec, "-rA")
    # unsupported fails, as in ddspec check: the harness could not verify it
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        f"*ddspec:oracle.step[[]{spec}[]]*",
        "*step 0, timestep 9: expected 1.0, got 1.5, |err| 0.5 > tolerance 0.001*",
        "*unsupported: the harness could not verify it*",
        "*acceptable timesteps.spacing: a different subsequence*",
        f"PASSED ddspec[[]{spec}[]]::schedule.betas",
    ])
    assert result.ret == 1


def test_allowance_and_strict(pytester, spec, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [four_verdicts_and_skipped])
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*::known bug #7", "-rA")
    # the allowances item passes too; unsupported fails; skipped is skipped
    result.assert_outcomes(passed=3, xfailed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*allowed deviation: known bug #7*"])
    strict = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*::known bug #7",
                                "--ddspec-allow", "gone.*::fixed long ago", "--ddspec-strict")
    # strict: acceptable, unsupported, skipped and the unused allowance fail; the allowed failure is xfailed
    strict.assert_outcomes(passed=1, failed=4, xfailed=1)


def test_unused_allowance_warns_without_strict(pytester, spec, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*::known bug #7")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*unused allowance*oracle.*"])


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("oracle.step", "--ddspec-allow='oracle.step': expected NAME::REASON*"),
        ("oracle.step=bug #7", "*the separator is '::'*"),
        ("oracle.step::", "*needs a reason*"),
    ],
)
def test_malformed_allowance_is_a_usage_error(pytester, spec, value, fragment):
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*ddspec: error: {fragment}"])


def test_allowance_of_a_name_containing_equals(pytester, spec, monkeypatch):
    def eta_fail(ctx):
        return [CheckResult(name="single_step.eta=0", family="single_step", verdict=Verdict.FAIL, message="off")]

    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass, eta_fail])
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "single_step.eta=0::bug #8")
    result.assert_outcomes(passed=2, xfailed=1)
    assert result.ret == 0


def test_usage_errors_share_the_ddspec_prefix(pytester, spec):
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-seed", "-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ddspec: error: --ddspec-seed=-3: must be >= 0*"])


def test_default_profile_is_the_cli_default(pytester, spec):
    """The plugin and ddspec check default to the same profile, so that they check the same thing."""
    from ddspec.conformance.cli import build_parser

    cli_default = build_parser().parse_args(["check"]).profile
    assert cli_default == "default"
    result = pytester.runpytest("--ddspec-target", spec)
    result.stdout.fnmatch_lines([f"*{spec} (cpu, float32, profile {cli_default}): does not conform*"])
    assert ddspec_check(spec).profile == cli_default


def test_summary_names_the_file_the_target_came_from(pytester, spec, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    result = pytester.runpytest("--ddspec-target", spec)
    path = os.path.realpath(str(pytester.path / (spec.split(":")[0] + ".py")))
    result.stdout.fnmatch_lines([f"  loaded from {path}"])


def test_unloadable_target_is_one_failing_item(pytester, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    result = pytester.runpytest("--ddspec-target", "nonexistent_mod_xyz:make")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ddspec: error: cannot check 'nonexistent_mod_xyz:make'*no module named*"])


def test_items_can_be_selected_with_k_and_m(pytester, spec):
    result = pytester.runpytest("--ddspec-target", spec, "-k", "schedule")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("--ddspec-target", spec, "-m", "not ddspec")
    result.assert_outcomes()


def test_fixture_is_parametrized_over_targets(pytester, spec, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    pytester.makepyfile(test_user="""
        from ddspec.conformance.pytest_plugin import assert_conforms

        def test_conforms(ddspec_report):
            assert ddspec_report.profile == "default"
            assert_conforms(ddspec_report)
    """)
    result = pytester.runpytest("test_user.py", "--ddspec-target", spec, "-m", "not ddspec")
    result.assert_outcomes(passed=1)
    without = pytester.runpytest("test_user.py")
    without.assert_outcomes(skipped=1)


def test_nothing_happens_without_targets(pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "ddspec: checking" not in out and "= ddspec =" not in out


def test_ddspec_check_and_assert_conforms(spec):
    report = ddspec_check(spec, dtype="float64", seed=2)
    assert (report.dtype, report.profile, report.seed, report.target) == ("float64", "default", 2, spec)
    with pytest.raises(AssertionError) as info:
        assert_conforms(report)
    text = str(info.value)
    assert "does not conform" in text and text.index("FAILURES") < text.index("ACCEPTABLE")
    with pytest.raises(AssertionError):  # the failure is allowed, but an unsupported check is not conformance
        assert_conforms(report, allow={"oracle.step": "bug #7"})
    allowed = ddspec_check(spec, allow={"oracle.*": "bug #7"}, checks=[four_verdicts])
    assert allowed.allowances == {"oracle.*": "bug #7"} and allowed.exit_code() == 1  # still unsupported
    with pytest.raises(ValueError, match="allow"):
        ddspec_check(spec, allow={"oracle.*": ""})
    with pytest.raises(TargetLoadError):
        ddspec_check(42)


# -- the CLI and the plugin agree on every verdict mix ---------------------------------------------------

_VERDICTS = ("pass", "fail", "acceptable", "unsupported", "skipped")


def _mixes():
    for k in range(len(_VERDICTS) + 1):
        yield from itertools.combinations(_VERDICTS, k)


def check_by_mix(ctx):
    """The results named by the target's ``mix`` (one per verdict)."""
    return [CheckResult(name=f"oracle.c{i}_{v}", family="oracle", verdict=v, message=v)
            for i, v in enumerate(ctx.sampler.mix)]


def test_cli_and_plugin_agree_on_every_verdict_mix(pytester, monkeypatch, capsys):
    """Every subset of the verdicts (the empty one too) is one target. For default and strict, with no
    allowance, one covering the failure and an unused one: whether pytest fails an item of that target
    and Report.exit_code agree, and pytest's exit status is their maximum; ``ddspec check TARGET``
    gives the same code for every mix without allowances (and for an allowed lone failure)."""
    from ddspec.conformance.cli import main as cli_main

    mixes = list(_mixes())
    name = f"ddspec_plugin_mixes_{uuid.uuid4().hex[:8]}"
    makers = "".join(f"make_{i} = _maker({mix!r})\n" for i, mix in enumerate(mixes))
    pytester.makepyfile(**{name: TARGET_MODULE + """
def _maker(mix):
    def make():
        sampler = FakeSampler()
        sampler.mix = mix
        return sampler
    return make
""" + makers})
    pytester.syspathinsert()
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [check_by_mix])
    specs = [f"{name}:make_{i}" for i in range(len(mixes))]
    reports = {spec: ddspec_check(spec) for spec in specs}

    allowances = {"none": [], "covering": ["oracle.*_fail::bug #1"], "unused": ["gone.*::fixed"]}
    disagreements = []
    for strict in (False, True):
        for kind, allow in allowances.items():
            allow_map = dict(text.split("::") for text in allow)
            strict_flag = ["--ddspec-strict"] if strict else []
            targets = [a for spec in specs for a in ("--ddspec-target", spec)]
            plugin_allow = [a for text in allow for a in ("--ddspec-allow", text)]
            rec = pytester.inline_run(*targets, *plugin_allow, *strict_flag, "-p", "no:cacheprovider")
            failed = {r.nodeid.split("]::")[0] + "]" for r in rec.getreports("pytest_runtest_logreport")
                      if r.failed}
            expected_all = []
            for mix, spec in zip(mixes, specs):
                expected = reports[spec].with_allowances(allow_map).exit_code(strict)
                expected_all.append(expected)
                plugin = int(f"ddspec[{spec}]" in failed)
                cli = None
                if kind == "none" or (kind == "covering" and mix == ("fail",)):
                    cli_allow = [a for text in allow for a in ("--allow", text)]
                    cli = cli_main(["check", spec, "--no-progress", *cli_allow, *(["--strict"] if strict else [])])
                    capsys.readouterr()
                if plugin != expected or cli not in (None, expected):
                    disagreements.append((mix, strict, kind, cli, plugin, expected))
            assert rec.ret == (pytest.ExitCode.TESTS_FAILED if max(expected_all) else pytest.ExitCode.OK)
    assert not disagreements


def _error_of(size):
    def check(ctx):
        return [CheckResult(name="single_step.eta=0", family="single_step", verdict=Verdict.PASS,
                            observed=size, tolerance=1e-6)]
    return check


def test_baseline_item_fails_on_error_growth(pytester, spec, monkeypatch, tmp_path):
    """``--ddspec-baseline``: one ``ddspec:baseline[SPEC]`` item per target, failing exactly when the
    gate of ``ddspec check --baseline`` would: an error 100× its baseline (inside its tolerance) fails
    at the default growth 10, the same error passes."""
    from ddspec.conformance import baseline as bl
    from ddspec.conformance.results import Report

    path = tmp_path / "b.json"
    bl.save_baseline([Report(target=spec, device="cpu", dtype="float32", profile="default", seed=0,
                             checks=tuple(_error_of(1e-9)(None)))], path)
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [_error_of(1e-9)])
    same = pytester.runpytest("--ddspec-target", spec, "--ddspec-baseline", str(path), "-rA")
    same.assert_outcomes(passed=2)
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [_error_of(1e-7)])
    grown = pytester.runpytest("--ddspec-target", spec, "--ddspec-baseline", str(path), "-rA")
    grown.assert_outcomes(passed=1, failed=1)
    assert "single_step.eta=0" in grown.stdout.str() and "baseline" in grown.stdout.str()
