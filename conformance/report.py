r"""Rendering a :class:`~ddspec.conformance.results.Report`: text, JSON, JUnit XML.

Text (:func:`format_text`)
--------------------------
The report opens with the *diagnosis*: one ``DIAGNOSIS: ...`` headline per root cause that
:mod:`ddspec.conformance.diagnosis` named (the known bug pattern, the checks it explains, the residual
after the fix against the tolerance), or "no known pattern explains this" with the closest pattern (no
such line when nothing failed). Then a header (target, the file it was loaded from, device, dtype,
versions, profile, seed); then, when
several failures share one root exception (a check records the exceptions the target raised in
``details["errors"]``, a list of ``{"num_steps": int | None, "error": "<ExcType>: <message>"}``), one
headline per distinct exception naming the step counts and the checks it hit; then the failures, each with its
worst findings (``step S, timestep T, element E: expected X, got Y, |err| Z > tolerance B``) and the
snippet that reproduces it; then allowed deviations, acceptable variants with their consequence,
unsupported features and skipped checks; then a table of every check; and a final summary line
``N passed, M failed, K acceptable, U unsupported, S skipped``. With ``failures_only`` (the CLI's
``--failures-only`` / ``-q``) it is compact: the diagnosis, the header, the root-exception headlines, one or two lines
per failing check (its worst finding) and per unsupported check, and the summary line.

JSON (:func:`to_json`), schema ``ddspec.report/2``
----------------------------------------------------
One object per target::

    {
      "schema_version": "ddspec.report/2",
      "target": "diffusers:DDIMScheduler",       # the spec, or the sampler's name
      "ddspec_version": "0.1.0",                 # "unknown" when not installed
      "torch_version": "2.4.0",                  # null when absent
      "diffusers_version": "0.30.0",             # null when absent
      "device": "cpu", "dtype": "float32",
      "profile": "quick" | "default" | "thorough",
      "seed": 0,
      "started_at": "2025-01-01T12:00:00+00:00", # ISO 8601, UTC
      "origin": "/abs/path/mypkg/sampler.py" | null,  # the file the target was loaded from
      "target_notes": ["diffusers 0.14.0 has no timestep_spacing: ..."],  # how the adapter read it
      "isolation": "worker process (fork, 1 torch thread)" | "in-process" | null,
      "conventions": {...} | null,               # what the target declared
      "allowances": {"<name or glob>": "<reason>"},
      "summary": {
        "counts": {"pass": n, "fail": n, "allowed": n, "acceptable": n,
                   "unsupported": n, "skipped": n},   # "fail" excludes allowed failures
        "exit_code": 0 | 1, "exit_code_strict": 0 | 1,
        "unused_allowances": ["<pattern>", ...]
      },
      "diagnosis": [{                            # [] when nothing failed
        "pattern": "prev_timestep_minus_one" | null,   # null: "no known pattern explains this"
        "headline": str,                         # the line the text report opens with
        "parameters": {...},                     # fitted values, e.g. {"factor": 1.5}
        "explains": ["single_step.eta=0", ...],  # the failing checks it explains (or leaves unexplained)
        "residual": float | null, "tolerance": float | null,   # the evidence's worst residual after the fix
        "source": str | null,                    # paper and equation, or the library bug
        "closest": str | null                    # for a null pattern: the closest catalogue entry
      }, ...],
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

Migration from ``ddspec.report/1``: version 2 adds the top-level ``diagnosis`` list and changes nothing
else. A ``/1`` report is a ``/2`` report with ``"diagnosis": []``;
:meth:`~ddspec.conformance.results.Report.from_json_dict` (and so the baseline gate and every reader in
ddspec) reads both, and writes ``/2``.

JUnit XML (:func:`write_junit`)
-------------------------------
One ``<testsuite>`` per target and one ``<testcase>`` per check result (``classname`` is
``ddspec.<target>.<family>``): a ``<failure>`` for every result that makes the exit code 1 without
``--strict`` (:meth:`Report.blocking_reason`): a failure that no allowance covers (``type="fail"``)
and an unsupported check (``type="unsupported"``: it could not be verified, which is never read as
conformance); ``<skipped>`` for skipped checks; nothing for pass, acceptable and allowed failures
(their consequence or reason is in ``<system-out>``). A failing check that a diagnosis explains
carries that diagnosis's headline at the start of its failure ``message`` (and a ``diagnosis``
property); the testsuite lists every headline as ``diagnosis`` properties.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Sequence

from .results import SCHEMA_VERSION, CheckResult, Finding, Report, Verdict

__all__ = [
    "format_text",
    "format_finding",
    "short_number",
    "format_check",
    "summary_line",
    "root_errors",
    "format_root_errors",
    "format_diagnosis",
    "diagnosis_of",
    "RootError",
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


def short_number(x: float | None) -> str:
    """An error or a tolerance for a report line: 3 significant digits; ``-`` for None; nan/inf as is."""
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
            bound = f" {relation} tolerance {short_number(finding.tolerance)}"
        what.append(f"|err| {short_number(error)}{bound}")
    elif finding.tolerance is not None:
        what.append(f"tolerance {short_number(finding.tolerance)}")
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
        head += f"  (observed {short_number(result.observed)}, tolerance {short_number(result.tolerance)})"
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


@dataclass(frozen=True)
class RootError:
    r"""One exception the target raised, and every failing check it made fail.

    Attributes:
        error: ``"<ExcType>: <message>"``, as the checks recorded it in ``details["errors"]``.
        num_steps: the step counts it was raised for, ascending (None, for "not tied to a step
            count", last).
        checks: the names of the failing checks that recorded it, in report order.
    """

    error: str
    num_steps: tuple[int | None, ...]
    checks: tuple[str, ...]


def _recorded_errors(result: CheckResult) -> list[tuple[int | None, str]]:
    """``[(num_steps, error), ...]`` from ``details["errors"]``; malformed entries are ignored."""
    entries = result.details.get("errors") if isinstance(result.details, dict) else None
    if not isinstance(entries, list):
        return []
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        error = entry.get("error")
        n = entry.get("num_steps")
        if not isinstance(error, str) or not error.strip():
            continue
        if isinstance(n, bool) or not (n is None or isinstance(n, int)):
            n = None
        out.append((n, " ".join(error.split())))
    return out


def root_errors(report: Report) -> tuple[RootError, ...]:
    r"""The distinct exceptions behind the report's failures (those no allowance covers).

    Grouped by the exact ``"<ExcType>: <message>"`` string of ``details["errors"]``; ordered by the
    number of checks hit, most first (then by first appearance). A report whose checks record no
    errors gives ``()``.
    """
    order: list[str] = []
    steps: dict[str, set[int | None]] = {}
    hit: dict[str, list[str]] = {}
    for result in report.failures():
        for n, error in _recorded_errors(result):
            if error not in steps:
                order.append(error)
                steps[error], hit[error] = set(), []
            steps[error].add(n)
            if result.name not in hit[error]:
                hit[error].append(result.name)
    groups = [
        RootError(
            error=e,
            num_steps=tuple(sorted(steps[e], key=lambda n: (n is None, n or 0))),
            checks=tuple(hit[e]),
        )
        for e in order
    ]
    groups.sort(key=lambda g: -len(g.checks))  # stable: ties keep their first appearance
    return tuple(groups)


def _compress_names(names: Sequence[str], report: Report) -> str:
    """``"oracle.*, distribution.run_output.*, invariants.finite"``: the shortest dotted prefix ``P``
    such that every check of the report named ``P.<anything>`` (at least two) is among ``names`` is
    written as the glob ``P.*``; other names are written as they are."""
    chosen = set(names)
    all_names = [r.name for r in report.checks]
    parts: list[str] = []
    for name in names:
        pieces = name.split(".")
        written = name
        for depth in range(1, len(pieces)):
            prefix = ".".join(pieces[:depth]) + "."
            members = [n for n in all_names if n.startswith(prefix)]
            if len(members) > 1 and all(m in chosen for m in members):
                written = prefix + "*"
                break
        if written not in parts:
            parts.append(written)
    return ", ".join(parts)


def _steps_text(num_steps: Sequence[int | None]) -> str:
    known = [str(n) for n in num_steps if n is not None]
    return f"N={', '.join(known)}" if known else "N=?"


def format_root_errors(report: Report) -> list[str]:
    r"""The headline lines, one per distinct root exception (see :func:`root_errors`)."""
    lines = []
    for group in root_errors(report):
        count = len(group.checks)
        lines.append(
            f"{_shorten(group.error, 200)} — {_steps_text(group.num_steps)} — hit {count} "
            f"check{'s' if count != 1 else ''}: {_compress_names(group.checks, report)}"
        )
    return lines


def format_diagnosis(report: Report) -> list[str]:
    r"""The diagnosis headlines, one per named root cause (then "no known pattern ..." when some failing
    check is left unexplained); empty when nothing failed or no diagnosis ran."""
    return [d.headline for d in report.diagnosis]


def diagnosis_of(report: Report, result: CheckResult) -> str | None:
    r"""The headline of the named root cause that explains ``result`` (None when none does)."""
    for d in report.diagnosis:
        if d.pattern is not None and result.name in d.explains:
            return d.headline
    return None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _header(report: Report, origin: str | None) -> list[str]:
    versions = f"ddspec {report.ddspec_version}, torch {report.torch_version or 'absent'}"
    versions += f", diffusers {report.diffusers_version or 'absent'}"
    lines = [f"ddspec conformance report: {report.target}"]
    origin = origin or report.origin
    if origin:
        lines.append(f"  loaded from {origin}")
    lines += [f"  note: {n}" for n in report.target_notes]
    lines += [
        f"  device {report.device}, dtype {report.dtype}, profile {report.profile}, seed {report.seed}"
        + (f", isolation: {report.isolation}" if report.isolation else ""),
        f"  {versions}",
        f"  started {report.started_at}",
    ]
    return lines


def _compact_check(result: CheckResult) -> list[str]:
    head = f"FAIL  {result.name}"
    if result.observed is not None or result.tolerance is not None:
        head += f"  (observed {short_number(result.observed)}, tolerance {short_number(result.tolerance)})"
    lines = [head]
    if result.findings:
        lines.append("      " + _shorten(format_finding(result.findings[0]), 300))
    elif result.message:
        lines.append("      " + _shorten(" ".join(result.message.split()), 300))
    return lines


def format_text(
    report: Report, *, show_tracebacks: bool = False, failures_only: bool = False, origin: str | None = None
) -> str:
    r"""The report for a terminal: root exceptions, failures first, then the rest, a table, a summary.

    Args:
        report: the report.
        show_tracebacks: show the traceback of a crashed check.
        failures_only: compact form: header, root-exception headlines, each failing check with its
            worst finding, each unsupported check on one line, and the summary line.
        origin: the file the target was loaded from, shown in the header.
    """
    roots = format_root_errors(report)
    diagnosis = format_diagnosis(report)
    opening = [f"DIAGNOSIS: {line}" for line in diagnosis]
    if failures_only:
        lines = [*opening, *_header(report, origin)]
        if roots:
            lines.append("root errors:")
            lines.extend("  " + line for line in roots)
        for r in report.failures():
            lines.extend(_compact_check(r))
        for r in report.by_verdict(Verdict.UNSUPPORTED):
            lines.append(_shorten(f"UNSUPPORTED  {r.name}: {' '.join(r.message.split())}", 300))
        lines.append(summary_line(report))
        return "\n".join(lines) + "\n"

    lines = [*opening, _RULE, *_header(report, origin), _RULE]

    def section(title: str, blocks: Sequence[str]) -> None:
        if blocks:
            lines.append("")
            lines.append(f"{title} ({len(blocks)})")
            lines.extend(_indent(block, "  ") for block in blocks)

    section("ROOT ERRORS (each exception the target raised, and the checks it failed)", roots)
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
                f"  {r.name:<{width}}  {verdict:<11}  {short_number(r.observed):>10}  {short_number(r.tolerance):>10}"
            )
    else:
        lines.append("  no checks were run")
    lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def to_json(report: Report, indent: int | None = 2) -> str:
    r"""The report as strict JSON text, schema ``ddspec.report/2`` (see the module docstring)."""
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
    skipped = counts["skipped"]
    total_time = sum(r.duration_s for r in report.checks)
    suite = ET.Element(
        "testsuite",
        {
            "name": _xml_text(f"ddspec {report.target}"),
            "tests": str(len(report.checks)),
            "failures": str(counts["fail"] + counts["unsupported"]),
            "errors": "0",
            "skipped": str(skipped),
            "time": f"{total_time:.3f}",
            "timestamp": _xml_text(report.started_at),
        },
    )
    props = ET.SubElement(suite, "properties")
    for key in ("target", "device", "dtype", "profile", "seed", "ddspec_version", "torch_version",
                "diffusers_version", "schema_version", "origin", "isolation"):
        value = getattr(report, key)
        ET.SubElement(props, "property", {"name": key, "value": _xml_text("" if value is None else str(value))})
    for line in format_diagnosis(report):
        ET.SubElement(props, "property", {"name": "diagnosis", "value": _xml_text(line)})
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
        case_props = ET.SubElement(case, "properties")
        for key, value in (("verdict", r.verdict.value), ("observed", r.observed), ("tolerance", r.tolerance),
                           ("root_errors", "; ".join(sorted({str(e.get("error")) for e in r.details.get("errors") or ()
                                                             if isinstance(e, dict) and e.get("error")})) or None),
                           ("diagnosis", diagnosis_of(report, r) or r.details.get("diagnosis"))):
            if value is not None:
                text = f"{value:.6g}" if isinstance(value, float) else str(value)
                ET.SubElement(case_props, "property", {"name": key, "value": _xml_text(text)})
        reason = report.allowed_reason(r)
        if report.blocking_reason(r) is not None:
            headline = diagnosis_of(report, r)
            message = f"{headline} | {r.message}" if headline else r.message
            failure = ET.SubElement(case, "failure", {"message": _xml_text(message), "type": r.verdict.value})
            failure.text = _xml_text(format_check(r, show_traceback=True))
        elif r.verdict is Verdict.SKIPPED:
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
