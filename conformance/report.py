r"""Rendering a :class:`~ddspec.conformance.results.Report`: text, JSON, JUnit XML.

Text (:func:`format_text`)
--------------------------
A header (target, device, dtype, versions, profile, seed), then the failures first, each with its
worst findings (``step S, timestep T, element E: expected X, got Y, |err| Z > tolerance B``) and the
snippet that reproduces it; then allowed deviations, acceptable variants with their consequence,
unsupported features and skipped checks; then a table of every check; and a final summary line
``N passed, M failed, K acceptable, U unsupported, S skipped``.

JSON (:func:`to_json`), schema ``ddspec.report/1``
----------------------------------------------------
One object per target::

    {
      "schema_version": "ddspec.report/1",
      "target": "diffusers:DDIMScheduler",       # the spec, or the sampler's name
      "ddspec_version": "0.1.0",                 # "unknown" when not installed
      "torch_version": "2.4.0",                  # null when absent
      "diffusers_version": "0.30.0",             # null when absent
      "device": "cpu", "dtype": "float32",
      "profile": "quick" | "default" | "thorough",
      "seed": 0,
      "started_at": "2025-01-01T12:00:00+00:00", # ISO 8601, UTC
      "conventions": {...} | null,               # what the target declared
      "allowances": {"<name or glob>": "<reason>"},
      "summary": {
        "counts": {"pass": n, "fail": n, "allowed": n, "acceptable": n,
                   "unsupported": n, "skipped": n},   # "fail" excludes allowed failures
        "exit_code": 0 | 1, "exit_code_strict": 0 | 1,
        "unused_allowances": ["<pattern>", ...]
      },
      "checks": [{
        "name": "schedule.alphas_cumprod",
        "family": "schedule" | "timesteps" | "oracle" | "single_step" | "distribution"
                  | "invariants" | "load" | "harness",
        "verdict": "pass" | "acceptable" | "fail" | "unsupported" | "skipped",
        "observed": float | null,                # the worst observed error ("Infinity" when a call
                                                 # of the target gave no usable output)
        "tolerance": float | null,               # the bound applied to it
        "message": str,
        "findings": [{"step": int|null, "timestep": int|null, "element": [int, ...]|null,
                      "expected": float|null, "got": float|null, "error": float|null,
                      "tolerance": float|null, "message": str}],   # worst first, at most 5
        "consequence": str | null,
        "reproduce": str | null,                 # a Python snippet
        "details": {...},                        # free-form JSON data
        "duration_s": float,
        "allowed": str | null                    # the allowance's reason, for an allowed failure
      }, ...]
    }

Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the file
is strict JSON). Several targets (``ddspec check A B --json out.json``) are written by
:func:`reports_to_json` as ``{"schema_version": "ddspec.reports/1", "reports": [<report>, ...]}``.
A consumer must check ``schema_version``; fields may be added within a version, never removed or
changed in meaning.

JUnit XML (:func:`write_junit`)
-------------------------------
One ``<testsuite>`` per target and one ``<testcase>`` per check result (``classname`` is
``ddspec.<target>.<family>``): a ``<failure>`` for a failure that no allowance covers, ``<skipped>``
for skipped and unsupported checks, nothing for pass, acceptable and allowed failures (their
consequence or reason is in ``<system-out>``).
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from typing import Sequence

from .results import SCHEMA_VERSION, CheckResult, Finding, Report, Verdict

__all__ = [
    "format_text",
    "format_finding",
    "format_check",
    "summary_line",
    "to_json",
    "reports_to_json",
    "write_json",
    "write_junit",
    "BUNDLE_SCHEMA_VERSION",
]

#: Version tag of the several-targets JSON bundle.
BUNDLE_SCHEMA_VERSION = "ddspec.reports/1"

_RULE = "=" * 78


def _num(x: float | None) -> str:
    """A value in full precision (errors and tolerances use :func:`_err`)."""
    if x is None:
        return "-"
    return repr(x)  # the shortest string that reads back as the same double


def _err(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isnan(x) or math.isinf(x):
        return repr(x)
    return f"{x:.3g}"


def format_finding(finding: Finding) -> str:
    r"""One line: ``"step S, timestep T, element E: expected X, got Y, |err| Z > tolerance B"``.

    Parts that are None are left out; the finding's message follows after `` — ``.
    """
    where = []
    if finding.step is not None:
        where.append(f"step {finding.step}")
    if finding.timestep is not None:
        where.append(f"timestep {finding.timestep}")
    if finding.element is not None:
        where.append(f"element {tuple(finding.element)}")
    what = []
    if finding.expected is not None:
        what.append(f"expected {_num(finding.expected)}")
    if finding.got is not None:
        what.append(f"got {_num(finding.got)}")
    error = finding.error
    if error is not None:
        bound = ""
        if finding.tolerance is not None:
            relation = "<=" if error <= finding.tolerance else ">"
            bound = f" {relation} tolerance {_err(finding.tolerance)}"
        what.append(f"|err| {_err(error)}{bound}")
    elif finding.tolerance is not None:
        what.append(f"tolerance {_err(finding.tolerance)}")
    line = ", ".join(where)
    if what:
        line = f"{line}: {', '.join(what)}" if line else ", ".join(what)
    if finding.message:
        line = f"{line} — {finding.message}" if line else finding.message
    return line or "(empty finding)"


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def format_check(result: CheckResult, *, show_traceback: bool = False, reason: str | None = None) -> str:
    r"""A check result as a block of text: name, verdict, observed vs tolerance, message, findings,
    consequence, reproduce snippet (and the traceback of a crashed check when ``show_traceback``).
    ``reason`` is an allowance's reason, shown for an allowed failure.
    """
    head = f"{result.verdict.value.upper():<11} {result.name}"
    if result.observed is not None or result.tolerance is not None:
        head += f"  (observed {_err(result.observed)}, tolerance {_err(result.tolerance)})"
    lines = [head]
    if reason is not None:
        lines.append(f"    allowed deviation: {reason}")
    if result.message:
        lines.append(_indent(result.message, "    "))
    for finding in result.findings:
        lines.append("    - " + format_finding(finding))
    if result.consequence:
        lines.append(_indent(f"consequence: {result.consequence}", "    "))
    if result.reproduce:
        lines.append("    reproduce:")
        lines.append(_indent(result.reproduce.rstrip(), "        "))
    tb = result.details.get("traceback") if isinstance(result.details, dict) else None
    if isinstance(tb, str):
        if show_traceback:
            lines.append("    traceback:")
            lines.append(_indent(tb.rstrip(), "        "))
        else:
            lines.append("    (traceback hidden: rerun with --traceback, or see details.traceback in the JSON)")
    return "\n".join(lines)


def summary_line(report: Report) -> str:
    r"""``"N passed, M failed, K acceptable, U unsupported, S skipped"`` (and allowed deviations)."""
    c = report.counts()
    line = (
        f"{c['pass']} passed, {c['fail']} failed, {c['acceptable']} acceptable, "
        f"{c['unsupported']} unsupported, {c['skipped']} skipped"
    )
    if c["allowed"]:
        line += f", {c['allowed']} allowed deviation{'s' if c['allowed'] != 1 else ''}"
    unused = report.unused_allowances()
    if unused:
        line += f", {len(unused)} unused allowance{'s' if len(unused) != 1 else ''}"
    return line


def format_text(report: Report, *, show_tracebacks: bool = False) -> str:
    r"""The report for a terminal: failures first, then the rest, a table, and a summary line."""
    versions = f"ddspec {report.ddspec_version}, torch {report.torch_version or 'absent'}"
    versions += f", diffusers {report.diffusers_version or 'absent'}"
    lines = [
        _RULE,
        f"ddspec conformance report: {report.target}",
        f"  device {report.device}, dtype {report.dtype}, profile {report.profile}, "
        f"seed {report.seed}",
        f"  {versions}",
        f"  started {report.started_at}",
        _RULE,
    ]

    def section(title: str, blocks: Sequence[str]) -> None:
        if blocks:
            lines.append("")
            lines.append(f"{title} ({len(blocks)})")
            lines.extend(_indent(block, "  ") for block in blocks)

    section(
        "FAILURES",
        [format_check(r, show_traceback=show_tracebacks) for r in report.failures()],
    )
    section(
        "ALLOWED DEVIATIONS",
        [format_check(r, reason=why, show_traceback=show_tracebacks)
         for r, why in report.allowed_deviations()],
    )
    section(
        "UNUSED ALLOWANCES (no failing check matches; remove them)",
        [f"{pattern}: {report.allowances[pattern]}" for pattern in report.unused_allowances()],
    )
    section("ACCEPTABLE", [format_check(r) for r in report.by_verdict(Verdict.ACCEPTABLE)])
    section(
        "UNSUPPORTED (not checked)",
        [f"{r.name}: {r.message}" if r.message else r.name
         for r in report.by_verdict(Verdict.UNSUPPORTED)],
    )
    section(
        "SKIPPED",
        [f"{r.name}: {r.message}" if r.message else r.name
         for r in report.by_verdict(Verdict.SKIPPED)],
    )

    lines.append("")
    if report.checks:
        width = max(len("check"), *(len(r.name) for r in report.checks))
        lines.append(f"  {'check':<{width}}  {'verdict':<11}  {'observed':>10}  {'tolerance':>10}")
        for r in report.checks:
            verdict = "allowed" if report.allowed_reason(r) is not None else r.verdict.value
            lines.append(
                f"  {r.name:<{width}}  {verdict:<11}  {_err(r.observed):>10}  {_err(r.tolerance):>10}"
            )
    else:
        lines.append("  no checks were run")
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def to_json(report: Report, indent: int | None = 2) -> str:
    r"""The report as strict JSON text, schema ``ddspec.report/1`` (see the module docstring)."""
    if not isinstance(report, Report):
        raise ValueError(f"report={report!r}: must be a Report")
    return json.dumps(report.to_json_dict(), indent=indent, allow_nan=False)


def reports_to_json(reports: Sequence[Report], indent: int | None = 2) -> str:
    r"""Several reports as one JSON object ``{"schema_version": "ddspec.reports/1", "reports": [...]}``."""
    reports = list(reports)
    for r in reports:
        if not isinstance(r, Report):
            raise ValueError(f"reports: {r!r} is not a Report")
    data = {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "report_schema_version": SCHEMA_VERSION,
        "reports": [r.to_json_dict() for r in reports],
    }
    return json.dumps(data, indent=indent, allow_nan=False)


def write_json(reports: Report | Sequence[Report], path: str | os.PathLike[str]) -> None:
    r"""Write one report (:func:`to_json`) or several (:func:`reports_to_json`) to ``path``."""
    if isinstance(reports, Report):
        text = to_json(reports)
    elif len(reports) == 1:
        text = to_json(reports[0])
    else:
        text = reports_to_json(reports)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def _xml_text(text: str) -> str:
    """Drop the characters XML 1.0 cannot hold (control characters other than tab, LF, CR)."""
    return "".join(
        ch for ch in text if ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd")
        or ch >= "\U00010000"
    )


def _testsuite(report: Report) -> ET.Element:
    counts = report.counts()
    skipped = counts["skipped"] + counts["unsupported"]
    total_time = sum(r.duration_s for r in report.checks)
    suite = ET.Element(
        "testsuite",
        {
            "name": _xml_text(f"ddspec {report.target}"),
            "tests": str(len(report.checks)),
            "failures": str(counts["fail"]),
            "errors": "0",
            "skipped": str(skipped),
            "time": f"{total_time:.3f}",
            "timestamp": _xml_text(report.started_at),
        },
    )
    props = ET.SubElement(suite, "properties")
    for key in ("target", "device", "dtype", "profile", "seed", "ddspec_version", "torch_version",
                "diffusers_version", "schema_version"):
        ET.SubElement(props, "property", {"name": key, "value": _xml_text(str(getattr(report, key)))})
    for r in report.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": _xml_text(f"ddspec.{report.target}.{r.family}"),
                "name": _xml_text(r.name),
                "time": f"{r.duration_s:.3f}",
            },
        )
        reason = report.allowed_reason(r)
        if r.verdict is Verdict.FAIL and reason is None:
            failure = ET.SubElement(case, "failure", {"message": _xml_text(r.message), "type": "fail"})
            failure.text = _xml_text(format_check(r, show_traceback=True))
        elif r.verdict in (Verdict.SKIPPED, Verdict.UNSUPPORTED):
            ET.SubElement(
                case, "skipped", {"message": _xml_text(f"{r.verdict.value}: {r.message}")}
            )
        else:
            note = None
            if reason is not None:
                note = f"allowed deviation: {reason}\n{format_check(r)}"
            elif r.verdict is Verdict.ACCEPTABLE:
                note = format_check(r)
            if note:
                out = ET.SubElement(case, "system-out")
                out.text = _xml_text(note)
    return suite


def write_junit(reports: Report | Sequence[Report], path: str | os.PathLike[str]) -> None:
    r"""Write one or several reports as JUnit XML (one ``<testsuite>`` per target) to ``path``."""
    reports = [reports] if isinstance(reports, Report) else list(reports)
    for r in reports:
        if not isinstance(r, Report):
            raise ValueError(f"reports: {r!r} is not a Report")
    root = ET.Element("testsuites", {"name": "ddspec"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for r in reports:
        suite = _testsuite(r)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        total_time += float(suite.get("time", "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(os.fspath(path), encoding="utf-8", xml_declaration=True)
