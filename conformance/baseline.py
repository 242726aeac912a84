r"""Baselines: catch a precision regression that stays inside the tolerance.

A conformance run passes as long as every observed error is within its tolerance. An error that grew
100× but still sits under the bound passes silently. A *baseline* is a run saved as JSON (schema
``ddspec.baseline/1``, :func:`save_baseline`); :func:`compare` judges a later run against it, check by
check, and fails (:attr:`BaselineComparison.exit_code` = 1) when

* a verdict changed for the worse (ranked ``pass`` < ``acceptable`` < ``skipped`` < ``unsupported`` <
  ``fail``: a check that is no longer applicable lost coverage), or
* a deterministic check's observed error grew by more than ``max_growth`` (default 10):

  .. math::

      g = \frac{o_\text{new}}{\max(o_\text{base},\; 10^{-3}\,\tau_\text{base})} > \text{max\_growth},

  with :math:`o` the check's ``observed`` and :math:`\tau` its ``tolerance``. The floor
  :math:`10^{-3}\tau` (:data:`ZERO_FLOOR`) makes growth from an exact 0 measurable: a float64 table that
  matched to the last bit may later err by up to :math:`10^{-3}\tau\cdot\text{max\_growth}` (1 % of the
  tolerance at the default) before the gate speaks. When the tolerance is missing or 0 too, any
  non-zero error grown from 0 is a regression. A NaN or infinite new error is a regression unless the
  baseline's was the same; a NaN baseline value cannot be compared and is reported as a note.
* a statistical check's :math:`|z|` grew beyond ``max_growth`` × ``max(|z_base|, 1)``. The statistical
  checks record their tests in ``details["tests"]`` (a ``z`` number, or ``"z = …"`` in the test's
  ``detail`` text); the largest :math:`|z|` is the check's *z*. Their ``observed`` is a noise draw in
  units of the allowed deviation, so it is not judged by growth; the floor 1 (one standard error)
  keeps a draw of :math:`|z| = 0.05` from turning the next honest draw into a "40× regression".

Checks present on one side only are reported (added, removed) and never fail the gate: a new ddspec
adds checks, a different profile runs others. Improvements (a verdict that got better, an error that
shrank by the factor) are reported too. Checks are matched by ``(target, dtype, name)``.

Command line (``ddspec check ... --save-baseline b.json``; ``--baseline b.json [--max-growth 10]``)
and pytest (``--ddspec-baseline b.json``): the gate's exit code is combined with the report's as the
larger of the two.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TextIO

from .results import Report, Verdict, json_safe
from .report import short_number

__all__ = [
    "BASELINE_SCHEMA_VERSION",
    "ZERO_FLOOR",
    "Z_FLOOR",
    "BaselineEntry",
    "Baseline",
    "Change",
    "BaselineComparison",
    "entry_of",
    "baseline_of",
    "save_baseline",
    "load_baseline",
    "compare",
    "run_gate",
]

#: Version tag of the baseline file.
BASELINE_SCHEMA_VERSION = "ddspec.baseline/1"

#: Growth of an observed error is measured on ``max(observed, ZERO_FLOOR * tolerance)``.
ZERO_FLOOR = 1e-3

#: Growth of a statistical ``|z|`` is measured on ``max(|z|, Z_FLOOR)`` (one standard error).
Z_FLOOR = 1.0

#: Worse verdicts rank higher.
_RANK = {
    Verdict.PASS.value: 0,
    Verdict.ACCEPTABLE.value: 1,
    Verdict.SKIPPED.value: 2,
    Verdict.UNSUPPORTED.value: 3,
    Verdict.FAIL.value: 4,
}

_Z_TEXT = re.compile(r"\bz\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan)")


def _bad(name: str, value: Any, why: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{name}={shown}: {why}")


def _float_or_none(value: Any) -> float | None:
    """A float from a JSON field (``"NaN"``/``"Infinity"`` strings included), None when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        table = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        return table.get(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _ratio(observed: float | None, tolerance: float | None) -> float | None:
    """``observed / tolerance``; None when either is missing, the tolerance is 0 or either is NaN."""
    if observed is None or tolerance is None or tolerance == 0.0:
        return None
    if math.isnan(observed) or math.isnan(tolerance):
        return None
    if math.isinf(tolerance):
        return 0.0 if math.isfinite(observed) else None
    return observed / tolerance


def _z_of_test(test: Mapping[str, Any]) -> float | None:
    z = _float_or_none(test.get("z"))
    if z is not None:
        return z
    detail = test.get("detail")
    if isinstance(detail, str):
        match = _Z_TEXT.search(detail)
        if match:
            try:
                return float(match.group(1))
            except ValueError:
                return None
    return None


def statistical_z(details: Mapping[str, Any]) -> float | None:
    r"""The largest :math:`|z|` among ``details["tests"]`` (or ``details["z"]``); None when there is none."""
    if not isinstance(details, Mapping):
        return None
    zs: list[float] = []
    top = _float_or_none(details.get("z"))
    if top is not None:
        zs.append(abs(top))
    tests = details.get("tests")
    if isinstance(tests, list):
        for test in tests:
            if isinstance(test, Mapping):
                z = _z_of_test(test)
                if z is not None:
                    zs.append(abs(z))
    if not zs:
        return None
    if any(math.isnan(z) for z in zs):
        return math.nan
    return max(zs)


@dataclass(frozen=True)
class BaselineEntry:
    r"""What the baseline keeps of one check result.

    Attributes:
        verdict: the raw verdict (``"pass"``, ``"fail"``, ...).
        observed: the worst observed error, or None.
        tolerance: the bound applied to it, or None.
        ratio: ``observed / tolerance`` (None when undefined).
        z: the largest statistical :math:`|z|` the check recorded, or None (a deterministic check).
    """

    verdict: str
    observed: float | None = None
    tolerance: float | None = None
    ratio: float | None = None
    z: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return json_safe(
            {"verdict": self.verdict, "observed": self.observed, "tolerance": self.tolerance,
             "ratio": self.ratio, "z": self.z}
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], where: str) -> BaselineEntry:
        if not isinstance(data, Mapping):
            raise _bad(where, data, "must be an object")
        verdict = data.get("verdict")
        if verdict not in _RANK:
            raise _bad(f"{where}.verdict", verdict, f"must be one of {', '.join(_RANK)}")
        return cls(
            verdict=verdict,
            observed=_float_or_none(data.get("observed")),
            tolerance=_float_or_none(data.get("tolerance")),
            ratio=_float_or_none(data.get("ratio")),
            z=_float_or_none(data.get("z")),
        )


def entry_of(result: Any) -> BaselineEntry:
    """The :class:`BaselineEntry` of one :class:`~ddspec.conformance.results.CheckResult`."""
    return BaselineEntry(
        verdict=result.verdict.value,
        observed=result.observed,
        tolerance=result.tolerance,
        ratio=_ratio(result.observed, result.tolerance),
        z=statistical_z(result.details),
    )


def _group(target: str, dtype: str) -> str:
    return f"{target} [{dtype}]"


@dataclass(frozen=True)
class Baseline:
    r"""A saved run: ``groups`` maps ``"<target> [<dtype>]"`` to ``{check name: BaselineEntry}``.

    Attributes:
        groups: the entries, per target and dtype.
        meta: per group, the run's device, profile, seed and versions (for the notes of a mismatch).
        schema_version: :data:`BASELINE_SCHEMA_VERSION`.
    """

    groups: dict[str, dict[str, BaselineEntry]]
    meta: dict[str, dict[str, Any]]
    schema_version: str = BASELINE_SCHEMA_VERSION

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "groups": {
                g: {"meta": json_safe(self.meta.get(g, {})),
                    "checks": {n: e.to_json_dict() for n, e in entries.items()}}
                for g, entries in self.groups.items()
            },
        }

    @classmethod
    def from_json_dict(cls, data: Any) -> Baseline:
        if not isinstance(data, Mapping):
            raise _bad("baseline", data, "must be a JSON object")
        version = data.get("schema_version")
        if version != BASELINE_SCHEMA_VERSION:
            raise _bad("schema_version", version, f"expected {BASELINE_SCHEMA_VERSION!r} (a ddspec baseline file)")
        raw = data.get("groups")
        if not isinstance(raw, Mapping):
            raise _bad("groups", raw, "must be an object {'<target> [<dtype>]': {...}}")
        groups: dict[str, dict[str, BaselineEntry]] = {}
        meta: dict[str, dict[str, Any]] = {}
        for g, body in raw.items():
            if not isinstance(body, Mapping) or not isinstance(body.get("checks"), Mapping):
                raise _bad(f"groups[{g!r}]", body, "must be an object with 'checks'")
            groups[g] = {
                name: BaselineEntry.from_json_dict(e, f"groups[{g!r}].checks[{name!r}]")
                for name, e in body["checks"].items()
            }
            m = body.get("meta")
            meta[g] = dict(m) if isinstance(m, Mapping) else {}
        return cls(groups=groups, meta=meta)


def _as_reports(reports: Report | Iterable[Report]) -> list[Report]:
    items = [reports] if isinstance(reports, Report) else list(reports)
    for item in items:
        if not isinstance(item, Report):
            raise _bad("reports", item, "every entry must be a Report")
    return items


def _meta(report: Report) -> dict[str, Any]:
    return {
        "device": report.device, "profile": report.profile, "seed": report.seed,
        "ddspec_version": report.ddspec_version, "torch_version": report.torch_version,
        "diffusers_version": report.diffusers_version, "started_at": report.started_at,
    }


def baseline_of(reports: Report | Iterable[Report]) -> Baseline:
    """The :class:`Baseline` of one report or several (a later report of the same target and dtype wins)."""
    groups: dict[str, dict[str, BaselineEntry]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for report in _as_reports(reports):
        g = _group(report.target, report.dtype)
        groups[g] = {r.name: entry_of(r) for r in report.checks}
        meta[g] = _meta(report)
    return Baseline(groups=groups, meta=meta)


def save_baseline(reports: Report | Iterable[Report], path: str | os.PathLike[str]) -> Baseline:
    """Write the baseline of ``reports`` to ``path`` as strict JSON; return it."""
    baseline = baseline_of(reports)
    text = json.dumps(baseline.to_json_dict(), indent=2, allow_nan=False, sort_keys=False)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    return baseline


def load_baseline(path: str | os.PathLike[str]) -> Baseline:
    """Read a baseline written by :func:`save_baseline`.

    Raises:
        ValueError: ``"baseline=<path>: ..."`` for a file that is not JSON or not a ``ddspec.baseline/1``
            file (the message names the bad field).
        OSError: the file cannot be read.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad("baseline", os.fspath(path), f"is not JSON ({exc})") from exc
    try:
        return Baseline.from_json_dict(data)
    except ValueError as exc:
        raise ValueError(f"baseline={os.fspath(path)!r}: {exc}") from exc


@dataclass(frozen=True)
class Change:
    r"""One check that differs from the baseline.

    Attributes:
        group: ``"<target> [<dtype>]"``.
        name: the check's name.
        kind: ``"verdict"``, ``"observed"``, ``"z"``, ``"added"`` or ``"removed"``.
        message: one line: what was seen, against what, with the factor applied.
        growth: the growth factor (None for verdict changes, added and removed checks).
    """

    group: str
    name: str
    kind: str
    message: str
    growth: float | None = None

    def line(self) -> str:
        return f"{self.group} {self.name}: {self.message}"


@dataclass(frozen=True)
class BaselineComparison:
    r"""The result of :func:`compare`.

    Attributes:
        regressions: the changes that fail the gate.
        improvements: verdicts that got better, errors (or ``|z|``) that shrank by the factor.
        added: checks the run has and the baseline has not (reported, never failed).
        removed: checks the baseline has and the run has not (reported, never failed).
        notes: what could not be compared (a NaN baseline, a device or profile mismatch, a target
            absent from the baseline).
        max_growth: the factor applied.
        compared: the number of checks found on both sides.
    """

    regressions: tuple[Change, ...]
    improvements: tuple[Change, ...]
    added: tuple[Change, ...]
    removed: tuple[Change, ...]
    notes: tuple[str, ...]
    max_growth: float
    compared: int

    @property
    def exit_code(self) -> int:
        """1 when there is a regression, else 0."""
        return 1 if self.regressions else 0

    def format_text(self) -> str:
        """The gate's report: regressions first, then improvements, added and removed checks, notes."""
        lines = [f"ddspec baseline gate (max growth {self.max_growth:g}×): {self.compared} checks compared, "
                 f"{len(self.regressions)} regression{'s' if len(self.regressions) != 1 else ''}, "
                 f"{len(self.improvements)} improved, {len(self.added)} added, {len(self.removed)} removed"]
        for title, items in (("REGRESSION", self.regressions), ("improved", self.improvements),
                             ("added", self.added), ("removed", self.removed)):
            lines += [f"  {title:<10} {c.line()}" for c in items]
        lines += [f"  note       {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _compare_observed(
    group: str, name: str, base: BaselineEntry, new: BaselineEntry, max_growth: float
) -> tuple[Change | None, Change | None, str | None]:
    """(regression, improvement, note) from the observed errors of one deterministic check."""
    o_b, o_n = base.observed, new.observed
    if o_b is None or o_n is None:
        return None, None, None
    if math.isnan(o_b):
        if math.isnan(o_n):
            return None, None, None
        return None, None, f"{group} {name}: the baseline's observed error is NaN; the run's ({short_number(o_n)}) is not compared"
    tol = base.tolerance if base.tolerance is not None and math.isfinite(base.tolerance) else 0.0
    floor = ZERO_FLOOR * abs(tol)
    denom = max(o_b, floor)
    how = (f"observed {short_number(o_n)} vs baseline {short_number(o_b)} (growth measured on max(baseline, "
           f"{ZERO_FLOOR:g}·tolerance {short_number(base.tolerance)}) = {short_number(denom)})")
    if math.isnan(o_n):
        return Change(group, name, "observed", f"observed error is NaN; {how}", math.nan), None, None
    if math.isinf(o_n) and not math.isinf(o_b):
        return Change(group, name, "observed", f"observed error became infinite; {how}", math.inf), None, None
    if math.isinf(o_b):
        if not math.isinf(o_n):
            return None, Change(group, name, "observed", f"observed error became finite; {how}", 0.0), None
        return None, None, None
    if denom == 0.0:  # exact before, no tolerance to scale a floor
        if o_n > 0.0:
            return Change(group, name, "observed",
                          f"observed {short_number(o_n)} grew from exactly 0 (no tolerance to floor the growth)",
                          math.inf), None, None
        return None, None, None
    growth = o_n / denom
    if growth > max_growth:
        return Change(group, name, "observed",
                      f"error grew {growth:.3g}× > {max_growth:g}× (still {short_number(o_n)} vs tolerance "
                      f"{short_number(new.tolerance)}); {how}", growth), None, None
    new_denom = max(o_n, floor)
    if new_denom > 0.0 and o_b / new_denom > max_growth:
        return None, Change(group, name, "observed", f"error shrank {o_b / new_denom:.3g}×; {how}",
                            o_n / denom), None
    return None, None, None


def _compare_z(
    group: str, name: str, base: BaselineEntry, new: BaselineEntry, max_growth: float
) -> tuple[Change | None, Change | None, str | None]:
    z_b, z_n = base.z, new.z
    if z_b is None or z_n is None:
        return None, None, None
    if math.isnan(z_b):
        return None, None, f"{group} {name}: the baseline's |z| is NaN; not compared"
    how = f"|z| {short_number(z_n)} vs baseline {short_number(z_b)} (growth measured on max(|z|, {Z_FLOOR:g}))"
    if math.isnan(z_n):
        return Change(group, name, "z", f"|z| is NaN; {how}", math.nan), None, None
    growth = z_n / max(z_b, Z_FLOOR)
    if growth > max_growth:
        return Change(group, name, "z", f"|z| grew {growth:.3g}× > {max_growth:g}×; {how}", growth), None, None
    if z_b / max(z_n, Z_FLOOR) > max_growth:
        return None, Change(group, name, "z", f"|z| shrank; {how}", growth), None
    return None, None, None


def _validate_growth(max_growth: Any) -> float:
    if isinstance(max_growth, bool) or not isinstance(max_growth, (int, float)):
        raise _bad("max_growth", max_growth, "must be a number > 1")
    value = float(max_growth)
    if not (math.isfinite(value) and value > 1.0):
        raise _bad("max_growth", max_growth, "must be a finite number > 1 (the allowed growth factor)")
    return value


def compare(
    report_or_reports: Report | Sequence[Report],
    baseline: Baseline | str | os.PathLike[str],
    max_growth: float = 10.0,
) -> BaselineComparison:
    r"""Judge a run against a baseline (the rules are in the module docstring).

    Args:
        report_or_reports: one :class:`Report` or several.
        baseline: a :class:`Baseline`, or the path of a baseline file.
        max_growth: the factor an error (or a statistical ``|z|``) may grow by; > 1.

    Raises:
        ValueError: ``max_growth`` is not a finite number > 1; a bad baseline file.
    """
    factor = _validate_growth(max_growth)
    if not isinstance(baseline, Baseline):
        baseline = load_baseline(baseline)
    regressions: list[Change] = []
    improvements: list[Change] = []
    added: list[Change] = []
    removed: list[Change] = []
    notes: list[str] = []
    compared = 0
    for report in _as_reports(report_or_reports):
        g = _group(report.target, report.dtype)
        base_entries = baseline.groups.get(g)
        if base_entries is None:
            known = ", ".join(baseline.groups) or "none"
            notes.append(f"{g}: not in the baseline (it has {known}); every check counts as added")
            base_entries = {}
        else:
            meta = baseline.meta.get(g, {})
            for key in ("device", "profile"):
                if key in meta and meta[key] != getattr(report, key):
                    notes.append(f"{g}: the baseline ran with {key} {meta[key]!r}, this run with "
                                 f"{getattr(report, key)!r}")
        seen: set[str] = set()
        for result in report.checks:
            if result.name in seen:
                continue
            seen.add(result.name)
            new = entry_of(result)
            base = base_entries.get(result.name)
            if base is None:
                added.append(Change(g, result.name, "added", f"new check ({new.verdict}); not in the baseline"))
                continue
            compared += 1
            rank_b, rank_n = _RANK[base.verdict], _RANK[new.verdict]
            if rank_n > rank_b:
                regressions.append(Change(g, result.name, "verdict", f"verdict {base.verdict} -> {new.verdict}"))
                continue
            if rank_n < rank_b:
                improvements.append(Change(g, result.name, "verdict", f"verdict {base.verdict} -> {new.verdict}"))
                continue
            judge = _compare_z if (base.z is not None and new.z is not None) else _compare_observed
            worse, better, note = judge(g, result.name, base, new, factor)
            if worse is not None:
                regressions.append(worse)
            if better is not None:
                improvements.append(better)
            if note is not None:
                notes.append(note)
        removed.extend(
            Change(g, name, "removed", f"in the baseline ({e.verdict}); not run now")
            for name, e in base_entries.items() if name not in seen
        )
    return BaselineComparison(
        regressions=tuple(regressions), improvements=tuple(improvements), added=tuple(added),
        removed=tuple(removed), notes=tuple(notes), max_growth=factor, compared=compared,
    )


def run_gate(
    reports: Report | Sequence[Report],
    *,
    save: str | os.PathLike[str] | None = None,
    baseline: Baseline | str | os.PathLike[str] | None = None,
    max_growth: float = 10.0,
    stream: TextIO | None = None,
) -> int:
    r"""What ``ddspec check --save-baseline SAVE --baseline BASELINE --max-growth F`` does after the run.

    Compares ``reports`` with ``baseline`` (a :class:`Baseline` or a file; when given) and prints
    :meth:`BaselineComparison.format_text` to ``stream`` (default stdout); then saves the baseline of
    ``reports`` to ``save`` (when given; after the comparison, so one file may be both). Returns the
    gate's exit code (0 without ``baseline``), to be combined with the reports' as the larger.

    Raises:
        ValueError: a bad ``max_growth`` or baseline file. OSError: a file cannot be read or written.
    """
    code = 0
    if baseline is not None:
        comparison = compare(reports, baseline, max_growth)
        (stream if stream is not None else sys.stdout).write(comparison.format_text())
        code = comparison.exit_code
    if save is not None:
        save_baseline(reports, save)
    return code
