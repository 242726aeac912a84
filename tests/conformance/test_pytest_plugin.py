"""Tests of conformance/pytest_plugin.py: --ddspec-* options, generated items, allowances, helpers.

The inner pytest sessions run in this process (pytester), with ``adapt`` and the installed checks
replaced by fakes, so that only the plugin is under test.
"""

from __future__ import annotations

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
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        f"*ddspec:oracle.step[[]{spec}[]]*",
        "*step 0, timestep 9: expected 1.0, got 1.5, |err| 0.5 > tolerance 0.001*",
        "*acceptable timesteps.spacing: a different subsequence*",
        f"PASSED ddspec[[]{spec}[]]::schedule.betas",
        f"SKIPPED [[]1[]] ddspec[[]{spec}[]]*unsupported: no noise injection",
    ])
    assert result.ret == 1


def test_allowance_and_strict(pytester, spec):
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*=known bug #7", "-rA")
    result.assert_outcomes(passed=3, xfailed=1, skipped=1)  # the allowances item passes too
    result.stdout.fnmatch_lines(["*allowed deviation: known bug #7*"])
    strict = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*=known bug #7",
                                "--ddspec-allow", "gone.*=fixed long ago", "--ddspec-strict")
    # strict: acceptable, unsupported and the unused allowance fail; the allowed failure is xfailed
    strict.assert_outcomes(passed=1, failed=3, xfailed=1)


def test_unused_allowance_warns_without_strict(pytester, spec, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.*=known bug #7")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*unused allowance*oracle.*"])


def test_allowance_without_reason_is_a_usage_error(pytester, spec):
    result = pytester.runpytest("--ddspec-target", spec, "--ddspec-allow", "oracle.step")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ddspec-allow*NAME=REASON*"])


def test_unloadable_target_is_one_failing_item(pytester, monkeypatch):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", [all_pass])
    result = pytester.runpytest("--ddspec-target", "nonexistent_mod_xyz:make")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot check 'nonexistent_mod_xyz:make'*no module named*"])


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
            assert ddspec_report.profile == "quick"
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
    assert (report.dtype, report.profile, report.seed, report.target) == ("float64", "quick", 2, spec)
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
