"""Tests of conformance/results.py (verdicts, results, Report) and conformance/report.py (renderers)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ddspec.conformance.report import (
    BUNDLE_SCHEMA_VERSION,
    RootError,
    format_finding,
    format_root_errors,
    format_text,
    root_errors,
    reports_to_json,
    summary_line,
    to_json,
    write_json,
    write_junit,
)
from ddspec.conformance.results import (
    MAX_FINDINGS,
    SCHEMA_VERSION,
    CheckResult,
    Finding,
    Report,
    Verdict,
    json_safe,
    parse_allowance,
    validate_allowances,
)


def result(name: str, verdict: str, **kwargs) -> CheckResult:
    family = name.split(".", 1)[0]
    return CheckResult(name=name, family=family, verdict=Verdict(verdict), **kwargs)


def report_of(*results: CheckResult, **kwargs) -> Report:
    return Report(target="pkg:make", device="cpu", dtype="float32", profile="quick", seed=7,
                  checks=results, **kwargs)


# -- Finding / CheckResult ------------------------------------------------------------------------------


def test_verdict_values_are_the_documented_strings():
    assert [v.value for v in Verdict] == ["pass", "acceptable", "fail", "unsupported", "skipped"]
    assert Verdict("fail") is Verdict.FAIL
    assert str(Verdict.PASS) == "pass"


def test_finding_converts_numpy_scalars_and_computes_the_error():
    f = Finding(step=np.int64(3), timestep=np.int32(999), element=[np.int64(0), 1],
                expected=np.float32(0.5), got=np.float64(0.75), tolerance=1e-3)
    assert f.step == 3 and type(f.step) is int
    assert f.element == (0, 1)
    assert type(f.expected) is float
    assert f.error == 0.25  # |0.75 - 0.5|, exact in binary
    assert Finding(message="no numbers").error is None


@pytest.mark.parametrize(
    "kwargs, arg",
    [({"step": 1.5}, "step"), ({"expected": "x"}, "expected"), ({"element": 3}, "element"),
     ({"got": True}, "got"), ({"message": None}, "message")],
)
def test_finding_rejects_bad_fields(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        Finding(**kwargs)


def test_check_result_validates_and_normalises():
    r = CheckResult(name="schedule.alphas_cumprod", family="schedule", verdict="pass",
                    observed=np.float64(1e-7), details={"arr": np.arange(3), "x": np.float32(0.5)})
    assert r.verdict is Verdict.PASS
    assert r.details == {"arr": [0, 1, 2], "x": 0.5}
    with pytest.raises(ValueError, match="family"):
        CheckResult(name="x", family="nonsense", verdict=Verdict.PASS)
    with pytest.raises(ValueError, match="verdict"):
        CheckResult(name="x", family="schedule", verdict="maybe")
    with pytest.raises(ValueError, match="name"):
        CheckResult(name="", family="schedule", verdict="pass")
    with pytest.raises(ValueError, match="observed"):  # message passed positionally by mistake
        CheckResult("x", "schedule", Verdict.PASS, "a message")
    with pytest.raises(ValueError, match="duration_s"):
        CheckResult(name="x", family="schedule", verdict="pass", duration_s=-1.0)
    with pytest.raises(ValueError, match="details"):
        CheckResult(name="x", family="schedule", verdict="pass", details={"f": object()})


def test_check_result_keeps_at_most_max_findings_worst_first():
    findings = [Finding(step=i) for i in range(MAX_FINDINGS + 3)]
    r = CheckResult(name="x.y", family="oracle", verdict="fail", findings=findings)
    assert [f.step for f in r.findings] == list(range(MAX_FINDINGS))


def test_json_safe_encodes_non_finite_floats_as_strings():
    assert json_safe({"a": (math.nan, math.inf, -math.inf, 1.5)}) == {"a": ["NaN", "Infinity", "-Infinity", 1.5]}
    with pytest.raises(ValueError, match="key"):
        json_safe({1: 2})


# -- exit codes and allowances --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verdicts, expected_default, expected_strict",
    [
        ((), 1, 1),  # nothing was checked
        (("pass",), 0, 0),
        (("pass", "skipped"), 0, 1),
        (("pass", "acceptable"), 0, 1),
        (("pass", "unsupported"), 1, 1),  # could not verify: never reads as conforming
        (("pass", "fail"), 1, 1),
        (("acceptable", "unsupported", "fail"), 1, 1),
        (("skipped", "skipped"), 1, 1),  # nothing was checked
        (("acceptable",), 0, 1),
    ],
)
def test_exit_code_matrix(verdicts, expected_default, expected_strict):
    rep = report_of(*(result(f"oracle.c{i}", v) for i, v in enumerate(verdicts)))
    assert rep.exit_code(strict=False) == expected_default
    assert rep.exit_code(strict=True) == expected_strict
    for strict, expected in ((False, expected_default), (True, expected_strict)):
        # the per-result rule the plugin's items follow explains every 1
        assert bool(rep.nonconformities(strict)) == bool(expected)
        blocking = [r.name for r in rep.checks if rep.blocking_reason(r, strict)]
        assert bool(blocking) or rep.nothing_checked() or not expected


def test_allowance_excuses_a_failure_and_unused_allowance_fails_strict():
    rep = report_of(result("distribution.mean", "fail"), result("oracle.step", "pass"))
    assert rep.exit_code() == 1
    allowed = rep.with_allowances({"distribution.*": "upstream bug #1"})
    assert allowed.exit_code() == 0 and allowed.exit_code(strict=True) == 0
    assert allowed.failures() == ()
    assert [(r.name, why) for r, why in allowed.allowed_deviations()] == [("distribution.mean", "upstream bug #1")]
    assert allowed.counts() == {"pass": 1, "fail": 0, "allowed": 1, "acceptable": 0, "unsupported": 0, "skipped": 0}
    # The verdict itself is not rewritten.
    assert allowed.checks[0].verdict is Verdict.FAIL

    unused = allowed.with_allowances({"oracle.step": "was broken once"})
    assert unused.unused_allowances() == ("oracle.step",)
    assert unused.exit_code(strict=False) == 0
    assert unused.exit_code(strict=True) == 1


def test_allowance_parsing_requires_a_reason():
    assert parse_allowance("schedule.x :: bug #3 ") == ("schedule.x", "bug #3")
    # check names contain '=': NAME::REASON splits at the first '::' only
    assert parse_allowance("single_step.eta=0::upstream a=b::c") == ("single_step.eta=0", "upstream a=b::c")
    assert parse_allowance("single_step.eta=*::bug #4") == ("single_step.eta=*", "bug #4")
    for bad in ("schedule.x", "schedule.x::", "::reason", "schedule.x::   ", "single_step.eta=0=bug"):
        with pytest.raises(ValueError, match="allowance=") as info:
            parse_allowance(bad)
        assert repr(bad) in str(info.value)  # names the value
    with pytest.raises(ValueError, match=r"^--ddspec-allow='a=b': .*separator is '::'"):
        parse_allowance("a=b", option="--ddspec-allow")
    with pytest.raises(ValueError, match="allow"):
        validate_allowances({"x": ""})
    with pytest.raises(ValueError, match="allow"):
        Report(target="t", device="cpu", dtype="float32", profile="quick", seed=0, allowances={"x": " "})


# -- JSON -----------------------------------------------------------------------------------------------


def sample_report() -> Report:
    bad = result(
        "single_step.ddpm_mean", "fail", observed=0.5, tolerance=1e-3, message="posterior mean is off",
        findings=(Finding(step=3, timestep=999, element=(0, 1), expected=1.0, got=1.5, tolerance=1e-3),
                  Finding(step=4, timestep=998, expected=2.0, got=math.nan, tolerance=1e-3)),
        reproduce="import torch\nsampler.step(eps, 999, x, num_steps=10)",
    )
    ok = result("schedule.alphas_cumprod", "pass", observed=1e-8, tolerance=1e-6)
    variant = result("timesteps.final_alpha_bar", "acceptable", message="set_alpha_to_one=False",
                     consequence="the last step leaves noise of std sqrt(1 - alpha_bar_0)")
    unsupported = result("oracle.thresholding", "unsupported", message="thresholding has no reference")
    skipped = result("invariants.generator", "skipped", message="deterministic sampler")
    return report_of(ok, variant, bad, unsupported, skipped)


def test_json_has_schema_versions_and_round_trips():
    rep = sample_report()
    data = json.loads(to_json(rep))  # strict JSON: the NaN finding is a string
    assert data["schema_version"] == SCHEMA_VERSION == "ddspec.report/2"
    for key in ("ddspec_version", "torch_version", "diffusers_version", "device", "dtype", "profile",
                "seed", "started_at", "target"):
        assert key in data
    assert data["ddspec_version"] == "0.1.0"  # pyproject.toml
    assert data["summary"]["counts"]["fail"] == 1
    assert data["summary"]["exit_code"] == 1
    assert data["checks"][2]["findings"][1]["got"] == "NaN"
    assert [c["verdict"] for c in data["checks"]] == ["pass", "acceptable", "fail", "unsupported", "skipped"]
    back = Report.from_json_dict(data)
    assert back.checks[2].findings[1].got != back.checks[2].findings[1].got  # NaN came back as NaN
    assert back.to_json_dict() == data
    with pytest.raises(ValueError, match="schema_version"):
        Report.from_json_dict({**data, "schema_version": "ddspec.report/0"})


def test_several_reports_are_bundled(tmp_path):
    rep = sample_report()
    bundle = json.loads(reports_to_json([rep, rep]))
    assert bundle["schema_version"] == BUNDLE_SCHEMA_VERSION
    assert len(bundle["reports"]) == 2
    write_json([rep], tmp_path / "one.json")
    assert json.loads((tmp_path / "one.json").read_text())["schema_version"] == SCHEMA_VERSION


# -- JUnit ----------------------------------------------------------------------------------------------


def test_junit_xml_parses_with_the_right_counts(tmp_path):
    path = tmp_path / "r.xml"
    rep = sample_report().with_allowances({"nothing.matches": "stale"})
    write_junit([rep, report_of(result("oracle.a", "pass"))], path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    # unsupported is a failure, as in the exit code (it could not be verified)
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("6", "2", "1")
    suite = root.findall("testsuite")[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {r.name for r in rep.checks}
    failure = cases["single_step.ddpm_mean"].find("failure")
    assert failure is not None and failure.get("message") == "posterior mean is off"
    assert "expected 1.0, got 1.5" in failure.text
    assert cases["oracle.thresholding"].find("failure").get("type") == "unsupported"
    assert cases["invariants.generator"].find("skipped") is not None
    assert cases["schedule.alphas_cumprod"].find("failure") is None
    assert "sqrt(1 - alpha_bar_0)" in cases["timesteps.final_alpha_bar"].find("system-out").text


def test_junit_allowed_failure_is_not_a_failure(tmp_path):
    rep = report_of(result("oracle.a", "fail", message="off\x07 by one")).with_allowances({"oracle.a": "bug #9"})
    write_junit(rep, tmp_path / "r.xml")
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0"
    assert "bug #9" in suite.find("testcase").find("system-out").text


# -- text -----------------------------------------------------------------------------------------------


def test_format_finding_line():
    f = Finding(step=3, timestep=999, element=(0, 1), expected=1.0, got=1.5, tolerance=1e-3)
    assert format_finding(f) == "step 3, timestep 999, element (0, 1): expected 1.0, got 1.5, |err| 0.5 > tolerance 0.001"
    within = Finding(expected=1.0, got=1.0, tolerance=1e-3, message="ok here")
    assert format_finding(within) == "expected 1.0, got 1.0, |err| 0 <= tolerance 0.001 — ok here"


def test_text_report_lists_failures_first_with_numbers_and_reproducer():
    rep = sample_report()
    text = format_text(rep)
    header, _, body = text.partition("FAILURES (1)")
    assert "pkg:make" in header and "float32" in header and "seed 7" in header and "torch" in header
    assert body, "the failures section is missing"
    assert "ACCEPTABLE" not in header  # failures come before every other section
    assert body.index("single_step.ddpm_mean") < body.index("ACCEPTABLE")
    assert "step 3, timestep 999, element (0, 1): expected 1.0, got 1.5, |err| 0.5 > tolerance 0.001" in body
    assert "sampler.step(eps, 999, x, num_steps=10)" in body
    assert "consequence: the last step leaves noise" in body
    assert "UNSUPPORTED" in body and "thresholding has no reference" in body
    lines = text.rstrip().splitlines()
    assert lines[-1] == "1 passed, 1 failed, 1 acceptable, 1 unsupported, 1 skipped"
    # the table has one row per check
    assert sum(1 for line in lines if line.strip().startswith(tuple(r.name for r in rep.checks))) >= 5


def test_text_report_shows_allowed_and_unused_allowances():
    rep = sample_report().with_allowances({"single_step.*": "known, issue #4", "gone.*": "fixed"})
    text = format_text(rep)
    assert "FAILURES" not in text
    assert "ALLOWED DEVIATIONS (1)" in text and "known, issue #4" in text
    assert "UNUSED ALLOWANCES" in text and "gone.*: fixed" in text
    assert summary_line(rep).endswith("1 allowed deviation, 1 unused allowance")


def test_crashed_check_traceback_only_on_request():
    crashed = result("harness.broken", "fail", message="raised", details={"traceback": "Traceback: boom"})
    hidden = format_text(report_of(crashed))
    assert "Traceback: boom" not in hidden and "rerun with --traceback" in hidden
    assert "Traceback: boom" in format_text(report_of(crashed), show_tracebacks=True)


# -- root exceptions: one crash is one headline (issue 7 §3, report side) ---------------------------------

INDEX_ERROR = "IndexError: index 1 is out of bounds for axis 0 with size 1"


def crashed(name: str, *errors: tuple[int | None, str], verdict: str = "fail") -> CheckResult:
    """A result as the checks write it when a step count raises: one finding per step count."""
    return result(
        name, verdict, observed=math.inf, tolerance=1e-6, message="a step count raised",
        findings=tuple(Finding(message=f"N={n}: step raised {e}") for n, e in errors),
        details={"errors": [{"num_steps": n, "error": e} for n, e in errors]},
    )


def crash_report() -> Report:
    other = "RuntimeError: shape mismatch"
    return report_of(
        crashed("oracle.inside", (1, INDEX_ERROR)),
        crashed("oracle.outside", (1, INDEX_ERROR)),
        crashed("single_step.eta=0", (1, INDEX_ERROR), (50, other)),
        crashed("single_step.eta=1", (1, INDEX_ERROR)),
        result("schedule.betas", "pass", observed=0.0, tolerance=1e-6),
        result("timesteps.sequence", "fail", observed=3.0, tolerance=0.0, message="off by one"),
    )


def test_root_errors_group_failures_by_exception():
    groups = root_errors(crash_report())
    assert groups == (
        RootError(INDEX_ERROR, (1,), ("oracle.inside", "oracle.outside", "single_step.eta=0", "single_step.eta=1")),
        RootError("RuntimeError: shape mismatch", (50,), ("single_step.eta=0",)),
    )
    lines = format_root_errors(crash_report())
    assert lines[0] == f"{INDEX_ERROR} — N=1 — hit 4 checks: oracle.*, single_step.*"
    assert lines[1] == "RuntimeError: shape mismatch — N=50 — hit 1 check: single_step.eta=0"


def test_root_error_check_lists_use_the_shortest_covering_glob():
    rep = report_of(
        crashed("oracle.a", (1, INDEX_ERROR)),
        crashed("oracle.b", (1, INDEX_ERROR)),
        crashed("distribution.run_output.eta=0", (1, INDEX_ERROR)),
        crashed("distribution.run_output.eta=1", (1, INDEX_ERROR)),
        result("distribution.step_moments.eta=0", "pass"),
        crashed("invariants.no_final_noise", (1, INDEX_ERROR)),
        result("invariants.finite", "pass"),
    )
    assert format_root_errors(rep) == [
        f"{INDEX_ERROR} — N=1 — hit 5 checks: oracle.*, distribution.run_output.*, invariants.no_final_noise"
    ]


def test_root_errors_list_every_step_count_and_skip_allowed_and_malformed():
    rep = report_of(
        crashed("oracle.a", (2, INDEX_ERROR), (1, INDEX_ERROR), (None, INDEX_ERROR)),
        crashed("oracle.b", (7, "ValueError: x")),
        result("oracle.c", "fail", details={"errors": [{"num_steps": "1", "error": 3}, "junk"]}),
        result("oracle.d", "fail", details={"errors": "not a list"}),
    ).with_allowances({"oracle.b": "known"})
    (group,) = root_errors(rep)
    assert (group.num_steps, group.checks) == ((1, 2, None), ("oracle.a",))  # None (unknown N) last
    assert format_root_errors(rep) == [f"{INDEX_ERROR} — N=1, 2 — hit 1 check: oracle.a"]


def test_text_report_opens_with_the_root_errors():
    text = format_text(crash_report())
    assert text.index("ROOT ERRORS") < text.index("FAILURES") < text.index("timesteps.sequence")
    assert f"{INDEX_ERROR} — N=1 — hit 4 checks: oracle.*, single_step.*" in text
    # without details["errors"] there is no headline, and the report is otherwise the same
    plain = report_of(result("timesteps.sequence", "fail", message="off by one"))
    assert "ROOT ERRORS" not in format_text(plain) and root_errors(plain) == ()


def test_failures_only_is_a_compact_report():
    rep = crash_report()
    compact = format_text(rep, failures_only=True, origin="/src/pkg/make.py")
    lines = compact.splitlines()
    assert lines[0] == "ddspec conformance report: pkg:make" and lines[1] == "  loaded from /src/pkg/make.py"
    assert "root errors:" in lines and f"  {INDEX_ERROR} — N=1 — hit 4 checks: oracle.*, single_step.*" in lines
    i = lines.index("FAIL  single_step.eta=0  (observed inf, tolerance 1e-06)")
    assert lines[i + 1] == f"      N=1: step raised {INDEX_ERROR}"  # the worst finding only
    assert lines[i + 2].startswith("FAIL  ")
    i = lines.index("FAIL  timesteps.sequence  (observed 3, tolerance 0)")
    assert lines[i + 1] == "      off by one"  # no finding: the message
    assert "schedule.betas" not in compact
    assert lines[-1] == summary_line(rep)
    assert len(lines) == 5 + 3 + 2 * 5 + 1  # header, headlines, two lines per failure, summary
    assert "loaded from /src/pkg/make.py" in format_text(rep, origin="/src/pkg/make.py")


def test_origin_travels_through_json_text_and_junit(tmp_path) -> None:
    """The file a target was loaded from is part of the report: text header, JSON (round trip) and JUnit."""
    import json as _json
    import xml.etree.ElementTree as _ET

    from ddspec.conformance.report import format_text, write_junit
    from ddspec.conformance.results import CheckResult, Report

    report = Report(target="t", device="cpu", dtype="float32", profile="quick", seed=0,
                    checks=(CheckResult(name="schedule.betas", family="schedule", verdict="pass"),),
                    origin="/somewhere/mypkg/sampler.py")
    data = _json.loads(report.to_json())
    assert data["origin"] == "/somewhere/mypkg/sampler.py"
    assert Report.from_json_dict(data).origin == report.origin
    assert "loaded from /somewhere/mypkg/sampler.py" in format_text(report)
    path = tmp_path / "r.xml"
    write_junit(report, path)
    props = {p.get("name"): p.get("value") for p in _ET.parse(path).getroot().iter("property")}
    assert props["origin"] == "/somewhere/mypkg/sampler.py"
    with pytest.raises(ValueError, match="origin"):
        Report(target="t", device="cpu", dtype="float32", profile="quick", seed=0, origin=3)  # type: ignore[arg-type]


def test_adapter_notes_reach_the_report() -> None:
    """An adapter's ``notes`` (how it read an old release's configuration) appear in the text header and
    the JSON report, and survive a JSON round trip."""
    import json as _json

    from ddspec.conformance.checks import schedule
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.report import format_text
    from ddspec.conformance.results import Report
    from ddspec.conformance.runner import run_checks
    from ddspec.conformance.torch_port import make_reference_port

    sampler = make_reference_port()
    sampler.notes = ("diffusers 0.14.0 has no timestep_spacing: leading, as that release always did",)
    report = run_checks(sampler, CheckContext(sampler, profile="quick"), schedule.CHECKS)
    assert report.target_notes == sampler.notes
    assert "  note: diffusers 0.14.0 has no timestep_spacing" in format_text(report)
    data = _json.loads(report.to_json())
    assert data["target_notes"] == list(sampler.notes)
    assert Report.from_json_dict(data).target_notes == sampler.notes


def test_junit_testcases_carry_observed_tolerance_and_root_errors(tmp_path) -> None:
    """Each JUnit ``<testcase>`` carries its verdict, observed error, tolerance and root exception as
    properties, so a CI dashboard can plot them without parsing messages."""
    import xml.etree.ElementTree as _ET

    from ddspec.conformance.report import write_junit
    from ddspec.conformance.results import CheckResult, Report

    checks = (
        CheckResult(name="single_step.eta=0", family="single_step", verdict="fail", observed=3e-5, tolerance=1e-6,
                    details={"errors": [{"num_steps": 1, "error": "IndexError: index 1 is out of bounds"}]}),
        CheckResult(name="schedule.betas", family="schedule", verdict="pass", observed=0.0, tolerance=2e-16),
    )
    path = tmp_path / "r.xml"
    write_junit(Report(target="t", device="cpu", dtype="float32", profile="quick", seed=0, checks=checks), path)
    cases = {c.get("name"): c for c in _ET.parse(path).getroot().iter("testcase")}
    props = {name: {p.get("name"): p.get("value") for p in case.find("properties")} for name, case in cases.items()}
    assert props["single_step.eta=0"] == {"verdict": "fail", "observed": "3e-05", "tolerance": "1e-06",
                                          "root_errors": "IndexError: index 1 is out of bounds"}
    assert props["schedule.betas"] == {"verdict": "pass", "observed": "0", "tolerance": "2e-16"}
