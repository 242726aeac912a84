"""Tests of conformance/cli.py: the ``ddspec`` command's arguments, exit codes and outputs.

Targets come from a temporary module, ``adapt`` is replaced by a fake, and the installed checks by
small fake check functions, so that these tests check the command alone.
"""

from __future__ import annotations

import io
import json
import os
import re
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
from ddspec.conformance.results import CheckResult, Finding, Report, Verdict

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
    assert err.startswith("ddspec: error: "), err  # one prefix for every usage error
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
        (["check", "--allow", "schedule.x"], "--allow='schedule.x': expected NAME::REASON"),
        (["check", "--allow", "single_step.eta=0=bug #1"], "--allow='single_step.eta=0=bug #1'"),
        (["check", "--allow", "schedule.x::"], "needs a reason"),
        (["check", "--allow", "::bug #1"], "name before '::' is empty"),
        (["check", "--bogus-option"], "--bogus-option"),
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
                   "--strict", "--timeout", "--traceback", "--no-progress", "--allow", "--failures-only",
                   "-q", "NAME::REASON"):
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
    assert captured.err == ""  # stderr is not a terminal here: no progress


def test_allow_turns_the_failure_into_an_allowed_deviation(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_fail)
    assert main(["check", target, "--allow", "oracle.*::known bug #1", "--no-progress"]) == 0
    assert "ALLOWED DEVIATIONS (1)" in capsys.readouterr().out
    assert main(["check", target, "--allow", "oracle.*::known bug #1", "--allow", "x::stale", "--strict",
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
    assert data["schema_version"] == "ddspec.report/2" and data["target"] == target
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

    def fake_load(spec):
        made.append(spec)
        return loader.LoadedTarget(types.SimpleNamespace(name=spec, betas=lambda: np.ones(4) / 2), spec)

    monkeypatch.setattr(loader, "default_target_specs", lambda: ["ref", "other"])
    monkeypatch.setattr(loader, "load", fake_load)
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


# -- issue 7 §4: version, help held to the exit codes, allowances, progress, compact report -------------


def test_version(capsys):
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ddspec {importlib.metadata.version('ddspec')}"


def _synthetic(*verdicts, allow=None):
    checks = [CheckResult(name=f"oracle.c{i}", family="oracle", verdict=v) for i, v in enumerate(verdicts)]
    return Report(target="t", device="cpu", dtype="float32", profile="quick", seed=0, checks=tuple(checks),
                  allowances=allow or {})


#: One synthetic report per row of the exit-code table in ``ddspec check --help``.
HELP_ROWS = {
    "a failure that no --allow covers": _synthetic("pass", "fail"),
    "an unsupported check (could not be verified)": _synthetic("pass", "unsupported"),
    "nothing checked (only skipped or unsupported)": _synthetic("skipped", "unsupported"),
    "an acceptable convention variant": _synthetic("pass", "acceptable"),
    "a skipped check (not applicable)": _synthetic("pass", "skipped"),
    "an --allow that matches no failing check": _synthetic("pass", allow={"gone.*": "fixed in 2.0"}),
    "only passes and allowed failures": _synthetic("pass", "fail", allow={"oracle.c1": "bug #1"}),
}


def _help_exit_table(text):
    """{row: (default, strict)} parsed from the 'exit codes' table of the help text."""
    lines = text[text.index("exit codes"):].splitlines()[1:]
    rows = {}
    for line in lines:
        match = re.fullmatch(r"  (\S.*?)\s{2,}([01])\s+([01])\s*", line)
        if match:
            rows[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return rows


def test_help_exit_code_table_is_the_real_exit_code(capsys):
    """Every row of the help's exit-code table, built as a report, has exactly that Report.exit_code."""
    assert main(["check", "--help"]) == 0
    text = capsys.readouterr().out
    table = _help_exit_table(text)
    assert set(table) == set(HELP_ROWS), table  # a row added to the help needs a report here
    for row, (default, strict) in table.items():
        report = HELP_ROWS[row]
        assert (report.exit_code(False), report.exit_code(True)) == (default, strict), row
    assert "2: bad arguments (a malformed --allow" in text and "cannot be loaded" in text


def check_eta_equals(ctx):
    return [CheckResult(name="single_step.eta=0", family="single_step", verdict=Verdict.FAIL, observed=1.0,
                        tolerance=1e-6, message="off")]


@pytest.mark.parametrize("pattern", ["single_step.eta=0", "single_step.eta=*", "single_step.*"])
def test_allowance_of_a_check_name_containing_equals(target, monkeypatch, capsys, pattern):
    """Check names contain '='; NAME::REASON splits at '::' so the whole name (or glob) is the pattern."""
    use_checks(monkeypatch, check_eta_equals)
    assert main(["check", target, "--no-progress"]) == 1
    assert main(["check", target, "--no-progress", "--allow", f"{pattern}::upstream bug #4"]) == 0
    out = capsys.readouterr().out
    assert "allowed deviation: upstream bug #4" in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_when_stderr_is_a_terminal(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass, check_fail)
    assert main(["check", target]) == 1
    assert capsys.readouterr().err == ""  # a file or a CI log: no progress at all, no '\r'
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["check", target]) == 1
    drawn = terminal.getvalue()
    assert "0/2" in drawn and target in drawn  # the tqdm bar over the 2 check functions, on the terminal
    terminal.truncate(0)
    assert main(["check", target, "--no-progress"]) == 1
    assert terminal.getvalue().strip("\x00") == ""


def test_audit_progress_only_on_a_terminal(monkeypatch):
    import ddspec.reference

    seen = []
    fake = types.ModuleType("ddspec.reference.audit")

    def fake_main(argv, progress=None):
        seen.append(progress)
        if progress is not None:
            progress(0, 2, "linear T=10: beta")
            progress(2, 2, "done")
        return 0

    fake.main = fake_main
    monkeypatch.setitem(sys.modules, "ddspec.reference.audit", fake)
    monkeypatch.setattr(ddspec.reference, "audit", fake, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert main(["audit", "--quick"]) == 0
    assert seen == [None]
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["audit", "--quick"]) == 0
    assert callable(seen[-1]) and "ddspec audit" in terminal.getvalue() and "/2" in terminal.getvalue()


def check_many_findings(ctx):
    findings = tuple(Finding(step=k, timestep=99 - k, element=(k,), expected=1.0, got=1.0 + 0.1 * (5 - k),
                             tolerance=1e-3) for k in range(5))
    return [CheckResult(name=f"single_step.eta={eta}", family="single_step", verdict=Verdict.FAIL,
                        observed=0.5, tolerance=1e-3, message="step is off\nsecond line of the message",
                        findings=findings, reproduce="line 1\nline 2\nline 3\nline 4",
                        consequence="samples drift") for eta in (0, 0.5, 1)]


def test_failures_only_is_compact(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass, check_many_findings)
    assert main(["check", target, "--no-progress"]) == 1
    full = capsys.readouterr().out
    assert main(["check", target, "--no-progress", "-q"]) == 1
    compact = capsys.readouterr().out
    assert main(["check", target, "--no-progress", "--failures-only"]) == 1
    # the two runs may start in different seconds: compare with the header's timestamp masked
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")
    assert stamp.sub("<time>", capsys.readouterr().out) == stamp.sub("<time>", compact)
    lines = compact.strip().splitlines()
    # the header (5 lines with the file), two lines per failing check, the summary
    assert len(lines) <= 5 + 2 * 3 + 1 < len(full.splitlines())
    for eta in (0, 0.5, 1):
        i = next(k for k, line in enumerate(lines) if line.startswith(f"FAIL  single_step.eta={eta} "))
        assert "step 0, timestep 99, element (0,): expected 1.0, got 1.5" in lines[i + 1]  # the worst finding
    assert "reproduce" not in compact and "schedule.betas" not in compact
    assert lines[-1].startswith("1 passed, 3 failed")


def test_report_header_names_the_file_the_target_came_from(target, monkeypatch, capsys):
    use_checks(monkeypatch, check_pass)
    assert main(["check", target, "--no-progress"]) == 0
    module = sys.modules[target.split(":")[0]]
    assert f"  loaded from {os.path.realpath(module.__file__)}\n" in capsys.readouterr().out


def test_formula_subcommand_is_wired_to_the_checker(capsys) -> None:
    """``ddspec formula`` reaches :func:`ddspec.audit.cli_main`: a known erratum exits 1 and is named,
    the correct form exits 0, and a bad expression exits 2 with the house error prefix."""
    from ddspec.conformance.cli import main

    assert main(["formula", "sqrt(eta*beta_tilde_t)", "--quantity", "ddim_sigma", "--schedule", "linear:20"]) == 1
    assert "sigma_squared_eta_beta_tilde" in capsys.readouterr().out
    assert main(["formula", "eta*sqrt(beta_tilde_t)", "--quantity", "ddim_sigma", "--schedule", "linear:20"]) == 0
    capsys.readouterr()
    assert main(["formula", "x+", "--quantity", "ddim_sigma"]) == 2
    assert capsys.readouterr().err.startswith("ddspec: error: ")


def test_derive_subcommand_is_wired_to_the_derivations(capsys) -> None:
    """``ddspec derive NAME`` reaches :func:`ddspec.derivations.cli_main`: a derivation checks (exit 0,
    a ✓ per step), and an unknown name exits 2 with the house error prefix."""
    from ddspec.conformance.cli import main

    assert main(["derive", "ddim-eta-one"]) == 0
    out = capsys.readouterr().out
    assert "✓ ddim-eta-one" in out and "✗" not in out
    assert main(["derive", "no-such-derivation"]) == 2
    assert capsys.readouterr().err.startswith("ddspec: error: ")


def test_ctrl_c_writes_the_partial_report_and_exits_130(tmp_path, monkeypatch, capsys) -> None:
    """A user's Ctrl-C (a KeyboardInterrupt reaching the runner between checks, not one the target
    raises) stops the run with exit 130, and the JSON report holds the checks that finished."""
    import json

    from ddspec.conformance import runner
    from ddspec.conformance.checks import schedule
    from ddspec.conformance.cli import main

    def user_pressed_ctrl_c(ctx):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "installed_checks", lambda: [*schedule.CHECKS, user_pressed_ctrl_c])
    out = tmp_path / "partial.json"
    code = main(["check", "ddspec.conformance.torch_port:make_reference_port", "--no-progress", "--in-process",
                 "--json", str(out)])
    assert code == 130
    data = json.loads(out.read_text())
    names = [c["name"] for c in (data["reports"][0] if "reports" in data else data)["checks"]]
    assert names and all(n.startswith("schedule.") for n in names)
    assert "interrupted" in capsys.readouterr().err
