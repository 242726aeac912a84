"""Tests of conformance/cli.py: the ``ddspec`` command's arguments, exit codes and outputs.

Targets come from a temporary module, ``adapt`` is replaced by a fake, and the installed checks by
small fake check functions, so that these tests check the command alone.
"""

from __future__ import annotations

import json
import sys
import types
import uuid
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import ddspec.conformance.checks as checks_package
from ddspec.conformance import loader
from ddspec.conformance.cli import main
from ddspec.conformance.results import CheckResult, Finding, Verdict

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


def check_pass(ctx):
    return [CheckResult(name="schedule.betas", family="schedule", verdict=Verdict.PASS, observed=0.0, tolerance=1e-6)]


def check_fail(ctx):
    return [CheckResult(
        name="oracle.step", family="oracle", verdict=Verdict.FAIL, observed=0.5, tolerance=1e-3,
        message="step is off",
        findings=(Finding(step=0, timestep=9, element=(1,), expected=1.0, got=1.5, tolerance=1e-3),),
        reproduce="sampler.step(eps, 9, x, num_steps=1)",
    )]


def check_acceptable(ctx):
    return [CheckResult(name="timesteps.spacing", family="timesteps", verdict=Verdict.ACCEPTABLE,
                        consequence="a different subsequence")]


def check_records_context(ctx):
    check_records_context.seen = (ctx.device, ctx.dtype, ctx.profile, ctx.seed, ctx.steps, ctx.timeout_s)
    return check_pass(ctx)


@pytest.fixture
def target(tmp_path, monkeypatch):
    name = f"ddspec_cli_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(TARGET_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    yield f"{name}:make"
    sys.modules.pop(name, None)


def use_checks(monkeypatch, *checks):
    monkeypatch.setattr(checks_package, "ALL_CHECKS", list(checks))


def assert_one_line_error(captured, *fragments):
    err = captured.err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# -- usage errors: exit 2, one line -----------------------------------------------------------------------


def test_nonexistent_target_is_exit_2_with_one_line(capsys):
    assert main(["check", "nonexistent.module:x"]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured, "nonexistent")
    assert captured.out == ""


def test_traceback_flag_shows_the_traceback(capsys):
    assert main(["check", "nonexistent.module:x", "--traceback"]) == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["check", "--dtype", "float8"], "--dtype"),
        (["check", "--profile", "huge"], "--profile"),
        (["check", "--steps", "0"], "--steps"),
        (["check", "--timeout", "-1"], "--timeout"),
        (["check", "--seed", "x"], "--seed"),
        (["check", "--allow", "schedule.x"], "NAME=REASON"),
        (["check", "--allow", "schedule.x="], "reason"),
        (["check", "--device", "tpu"], "--device tpu"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_are_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr(), fragment)


def test_cuda_without_cuda_is_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["check", "--device", "cuda"]) == 2
    assert_one_line_error(capsys.readouterr(), "CUDA is not available")
    assert main(["check", "--device", "cuda:1"]) == 2
    assert_one_line_error(capsys.readouterr(), "CUDA is not available")


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: ddspec" in out and "check" in out and "audit" in out
    assert main(["check", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--device", "--dtype", "--steps", "--json", "--junit", "--profile", "--seed",
                   "--strict", "--timeout", "--traceback", "--no-progress", "--allow"):
        assert option in out
    assert "examples:" in out and "ddspec check mypkg.sampler:make_sampler" in out
    assert main([]) == 2  # no command: help on stderr


# -- running checks ---------------------------------------------------------------------------------------


def test_passing_target_exit_0(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass)
    assert main(["check", target, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "schedule.betas" in captured.out and "1 passed, 0 failed" in captured.out
    assert captured.err == ""


def test_failing_target_exit_1_with_failures_first(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass, check_fail)
    assert main(["check", target]) == 1
    captured = capsys.readouterr()
    out = captured.out
    assert out.index("FAILURES (1)") < out.index("schedule.betas")
    assert "step 0, timestep 9, element (1,): expected 1.0, got 1.5, |err| 0.5 > tolerance 0.001" in out
    assert "[2/2] oracle.step  fail" in captured.err  # progress on stderr by default


def test_allow_turns_the_failure_into_an_allowed_deviation(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_fail)
    assert main(["check", target, "--allow", "oracle.*=known bug #1", "--no-progress"]) == 0
    assert "ALLOWED DEVIATIONS (1)" in capsys.readouterr().out
    assert main(["check", target, "--allow", "oracle.*=known bug #1", "--allow", "x=stale", "--strict",
                 "--no-progress"]) == 1  # the unused allowance fails under --strict


def test_strict_fails_on_acceptable(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass, check_acceptable)
    assert main(["check", target, "--no-progress"]) == 0
    assert main(["check", target, "--no-progress", "--strict"]) == 1


def test_options_reach_the_context(target, monkeypatch):
    use_checks(monkeypatch, check_records_context)
    assert main(["check", target, "--no-progress", "--dtype", "float16", "--profile", "quick",
                 "--seed", "5", "--steps", "3", "1", "--timeout", "2.5"]) == 0
    assert check_records_context.seen == (torch.device("cpu"), torch.float16, "quick", 5, (1, 3), 2.5)


def test_json_and_junit_outputs(target, monkeypatch, tmp_path, capsys):
    use_checks(monkeypatch, check_pass, check_fail)
    json_path, junit_path = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["check", target, "--no-progress", "--json", str(json_path), "--junit", str(junit_path)]) == 1
    data = json.loads(json_path.read_text())
    assert data["schema_version"] == "ddspec.report/1" and data["target"] == target
    assert [c["verdict"] for c in data["checks"]] == ["pass", "fail"]
    suite = ET.parse(junit_path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    # two targets: a bundle
    assert main(["check", target, target, "--no-progress", "--json", str(json_path)]) == 1
    assert len(json.loads(json_path.read_text())["reports"]) == 2


def test_unwritable_output_is_exit_2(target, monkeypatch, tmp_path, capsys):
    use_checks(monkeypatch, check_pass)
    assert main(["check", target, "--no-progress", "--json", str(tmp_path / "no" / "dir" / "r.json")]) == 2
    assert "cannot write the report" in capsys.readouterr().err


def test_no_checks_installed_warns(target, monkeypatch, capsys):
    monkeypatch.delattr(checks_package, "ALL_CHECKS")
    assert main(["check", target, "--no-progress"]) == 1  # nothing was checked: not "conforms"
    captured = capsys.readouterr()
    assert "no checks are installed" in captured.err and "no checks were run" in captured.out


def test_no_target_checks_the_default_targets(monkeypatch, capsys):
    made = []

    def fake_defaults():
        made.append(True)
        return [("ref", types.SimpleNamespace(name="ref", betas=lambda: np.ones(4) / 2)),
                ("other", types.SimpleNamespace(name="other", betas=lambda: np.ones(4) / 2))]

    monkeypatch.setattr(loader, "default_targets", fake_defaults)
    use_checks(monkeypatch, check_pass)
    assert main(["check", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert made and "ddspec conformance report: ref" in out and "ddspec conformance report: other" in out


def test_audit_is_delegated(monkeypatch):
    import ddspec.reference

    calls = []
    fake = types.ModuleType("ddspec.reference.audit")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "ddspec.reference.audit", fake)
    monkeypatch.setattr(ddspec.reference, "audit", fake, raising=False)
    assert main(["audit", "--dps", "50", "--quick"]) == 3
    assert calls == [["--dps", "50", "--quick"]]

    def exits(argv):
        raise SystemExit(0)

    fake.main = exits
    assert main(["audit", "--help"]) == 0  # the audit's argparse exit becomes a return code


def test_steps_above_T_is_an_argument_error(target, monkeypatch, capsys):
    """More inference steps than training timesteps is the user's mistake, not the target's: exit 2."""
    use_checks(monkeypatch, check_pass)
    assert main(["check", target, "--no-progress", "--steps", "5000"]) == 2
    assert "--steps 5000" in capsys.readouterr().err


def test_unwritable_report_path_is_refused_before_running(target, monkeypatch, tmp_path, capsys):
    """A bad --json/--junit directory is reported before any check runs."""
    ran = []

    def check_runs(ctx):
        ran.append(1)
        return check_pass(ctx)

    use_checks(monkeypatch, check_runs)
    assert main(["check", target, "--no-progress", "--junit", str(tmp_path / "missing" / "r.xml")]) == 2
    assert not ran and "--junit" in capsys.readouterr().err
