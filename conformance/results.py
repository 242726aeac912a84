r"""What a conformance run produces: verdicts, findings, check results and the report.

A *check* compares one aspect of a target sampler (its schedule, its timestep subsequence, one step,
the distribution of its samples, ...) with the float64 reference and returns one or more
:class:`CheckResult`. A :class:`Report` gathers the results of every check run against one target,
with the environment it ran in, and decides the exit code.

Verdicts
--------
``pass``
    The target agrees with the reference within the tolerance.
``acceptable``
    The target follows a convention *variant* the reference knows (for example diffusers' DDIM with
    ``set_alpha_to_one=False``). It is not an error, but it changes what the sampler computes, and the
    result says how in :attr:`CheckResult.consequence`.
``fail``
    The target disagrees with the reference beyond the tolerance, crashed, hung or broke a contract.
``unsupported``
    A feature or configuration the harness cannot check (say, a schedule it has no reference for). It
    is reported and never silently replaced by a default.
``skipped``
    The check does not apply to this target (the message says why).

Exit codes (:meth:`Report.exit_code`)
-------------------------------------
======================  ===========  ==========
any result is ...       default      ``strict``
======================  ===========  ==========
``fail`` (not allowed)  1            1
``unsupported``         1            1
``acceptable``          0            1
``skipped``             0            1
unused allowance        0            1
nothing checked         1            1
only pass               0            0
======================  ===========  ==========

``unsupported`` fails even without ``strict``: the harness could not verify that part of the target,
and a CI gate must not read "could not check" as "conforms". ``acceptable`` (a declared convention
variant, with its consequence) and ``skipped`` (not applicable, with the reason) pass by default;
with ``strict`` only ``pass`` does.

Allowances
----------
A *known deviation* can be allowed: :attr:`Report.allowances` maps a check-name pattern
(:func:`fnmatch.fnmatchcase`, so an exact name or a glob such as ``"distribution.*"``) to the reason it
is allowed. A ``fail`` whose name matches is reported as an *allowed deviation* and does not fail the
run. The verdicts themselves are never rewritten: the report keeps what the harness observed, and the
allowance is a policy laid on top. An allowance that matches no failing result is *unused* (the bug
was fixed, or the pattern has a typo): reported always, and a failure under ``strict``. On the
command line an allowance is ``NAME::REASON`` (:func:`parse_allowance`): split at the first ``::``,
since check names contain ``=`` (``single_step.eta=0``).

:meth:`Report.blocking_reason` is the per-result half of the exit code; ``ddspec check`` returns
:meth:`Report.exit_code`, and the pytest plugin fails exactly the items whose result has a blocking
reason (plus one item when nothing was checked, and the unused-allowance item under strict), so that
the two faces agree on every mix of verdicts.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import json
import math
import numbers
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_SCHEMA_VERSIONS",
    "FAMILIES",
    "Diagnosis",
    "MAX_FINDINGS",
    "Verdict",
    "Finding",
    "CheckResult",
    "Report",
    "json_safe",
    "parse_allowance",
    "validate_allowances",
    "ALLOWANCE_SEPARATOR",
]

#: Version tag of the JSON report (see :mod:`ddspec.conformance.report`).
SCHEMA_VERSION = "ddspec.report/2"

#: Report schema versions :meth:`Report.from_json_dict` reads. ``ddspec.report/1`` is ``/2`` without the
#: ``diagnosis`` list; it is read with ``diagnosis = []`` (the documented migration, ``report.py``).
READABLE_SCHEMA_VERSIONS = ("ddspec.report/1", "ddspec.report/2")

#: Check families. ``harness`` is used only for a check function that crashed and whose family could
#: not be read from its module name.
FAMILIES = (
    "schedule",
    "timesteps",
    "oracle",
    "single_step",
    "coefficients",
    "distribution",
    "invariants",
    "loop",
    "adapter",
    "load",
    "harness",
)

#: A result keeps at most this many findings (the worst ones; the check orders them worst first).
MAX_FINDINGS = 5


def _bad(name: str, value: Any, why: str) -> ValueError:
    """A ValueError in the project's format ``"<argument>=<value>: <reason>"``."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"{name}={shown}: {why}")


def _opt_float(value: Any, name: str) -> float | None:
    """``None`` or a Python float (numpy and torch scalars are converted; NaN and inf are kept)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(name, value, "must be a real number or None, not a bool")
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        try:
            value = value.item()  # 0-d numpy array or torch tensor
        except (TypeError, ValueError, RuntimeError) as exc:
            raise _bad(name, value, "must be a real number or None") from exc
    if not isinstance(value, numbers.Real):
        raise _bad(name, value, "must be a real number or None")
    return float(value)


def _opt_int(value: Any, name: str) -> int | None:
    """``None`` or a Python int (numpy and torch integer scalars are converted)."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _bad(name, value, "must be an integer or None")
    return int(value)


def json_safe(value: Any) -> Any:
    r"""Convert ``value`` to plain JSON data (dict, list, str, int, float, bool, None).

    Tuples become lists, numpy/torch scalars become Python numbers, numpy arrays and tensors become
    nested lists, enums become their value, and non-finite floats become the strings ``"NaN"``,
    ``"Infinity"`` and ``"-Infinity"`` (strict JSON has no NaN). Dict keys must be strings.

    Raises:
        ValueError: for anything else (a value that has no faithful JSON form).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad("details key", key, "JSON object keys must be strings")
            out[key] = json_safe(item)
        return out
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return json_safe(value.tolist())
    raise _bad("value", value, f"{type(value).__name__} has no JSON form")


def _from_json_float(value: Any) -> float | None:
    """Inverse of :func:`json_safe` for one float field."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return None if value is None else float(value)


class Verdict(str, Enum):
    r"""The outcome of one check (see the module docstring for their meaning and the exit codes)."""

    PASS = "pass"
    ACCEPTABLE = "acceptable"
    FAIL = "fail"
    UNSUPPORTED = "unsupported"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    r"""One place where the target and the reference were compared, usually one of the worst.

    Attributes:
        step: position in the sampling loop (0 = the first step taken), or None.
        timestep: the 0-based timestep index ``t`` (docs/conventions.md), or None.
        element: the index of the tensor element, or None.
        expected: the reference value.
        got: the target's value (NaN and inf are kept as they are).
        tolerance: the bound applied to ``|got - expected|`` here.
        message: free text (what was compared, or what went wrong when there is no number).
    """

    step: int | None = None
    timestep: int | None = None
    element: tuple[int, ...] | None = None
    expected: float | None = None
    got: float | None = None
    tolerance: float | None = None
    message: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "step", _opt_int(self.step, "step"))
        object.__setattr__(self, "timestep", _opt_int(self.timestep, "timestep"))
        if self.element is not None:
            try:
                element = tuple(_opt_int(i, "element") for i in self.element)
            except TypeError as exc:
                raise _bad("element", self.element, "must be a tuple of ints or None") from exc
            object.__setattr__(self, "element", element)
        for name in ("expected", "got", "tolerance"):
            object.__setattr__(self, name, _opt_float(getattr(self, name), name))
        if not isinstance(self.message, str):
            raise _bad("message", self.message, "must be a str")

    @property
    def error(self) -> float | None:
        r"""The absolute error :math:`|got - expected|` (None when either is missing)."""
        if self.expected is None or self.got is None:
            return None
        return abs(self.got - self.expected)

    def to_json_dict(self) -> dict[str, Any]:
        """The finding as JSON data (see the schema in :mod:`ddspec.conformance.report`)."""
        return json_safe(
            {
                "step": self.step,
                "timestep": self.timestep,
                "element": self.element,
                "expected": self.expected,
                "got": self.got,
                "error": self.error,
                "tolerance": self.tolerance,
                "message": self.message,
            }
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Rebuild a finding from :meth:`to_json_dict` output."""
        element = data.get("element")
        return cls(
            step=data.get("step"),
            timestep=data.get("timestep"),
            element=None if element is None else tuple(element),
            expected=_from_json_float(data.get("expected")),
            got=_from_json_float(data.get("got")),
            tolerance=_from_json_float(data.get("tolerance")),
            message=data.get("message", ""),
        )


@dataclass(frozen=True)
class CheckResult:
    r"""The result of one named check against one target.

    Attributes:
        name: dotted name, family first, e.g. ``"schedule.alphas_cumprod"``.
        family: one of :data:`FAMILIES`.
        verdict: a :class:`Verdict` (a plain string such as ``"pass"`` is converted).
        observed: the worst observed error (in the unit the check states), or None.
        tolerance: the bound applied to ``observed``, or None.
        message: one or two sentences: what was checked and what was seen; for ``skipped`` and
            ``unsupported``, why.
        findings: the worst places, worst first; at most :data:`MAX_FINDINGS` are kept.
        consequence: for ``acceptable`` (and useful for ``fail``): what the deviation does to the
            samples, in words.
        reproduce: a short Python snippet that reproduces the comparison.
        details: extra JSON-safe data (numpy/torch values are converted on construction).
        duration_s: wall time the check took, in seconds.
    """

    name: str
    family: str
    verdict: Verdict
    observed: float | None = None
    tolerance: float | None = None
    message: str = ""
    findings: tuple[Finding, ...] = ()
    consequence: str | None = None
    reproduce: str | None = None
    details: dict[str, Any] = field(default_factory=dict, hash=False)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise _bad("name", self.name, "must be a non-empty str")
        if self.family not in FAMILIES:
            raise _bad("family", self.family, f"must be one of {', '.join(FAMILIES)}")
        try:
            verdict = Verdict(self.verdict)
        except ValueError as exc:
            raise _bad("verdict", self.verdict, "must be a Verdict") from exc
        object.__setattr__(self, "verdict", verdict)
        object.__setattr__(self, "observed", _opt_float(self.observed, "observed"))
        object.__setattr__(self, "tolerance", _opt_float(self.tolerance, "tolerance"))
        if not isinstance(self.message, str):
            raise _bad("message", self.message, "must be a str")
        for name in ("consequence", "reproduce"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise _bad(name, value, "must be a str or None")
        findings = tuple(self.findings)
        for item in findings:
            if not isinstance(item, Finding):
                raise _bad("findings", item, "every finding must be a Finding")
        object.__setattr__(self, "findings", findings[:MAX_FINDINGS])
        if not isinstance(self.details, Mapping):
            raise _bad("details", self.details, "must be a dict")
        try:
            details = json_safe(dict(self.details))
        except ValueError as exc:
            raise _bad("details", self.details, f"must be JSON-safe ({exc})") from exc
        object.__setattr__(self, "details", details)
        duration = _opt_float(self.duration_s, "duration_s")
        if duration is None or not duration >= 0.0:
            raise _bad("duration_s", self.duration_s, "must be a number >= 0")
        object.__setattr__(self, "duration_s", duration)

    @classmethod
    def skipped(cls, name: str, family: str, reason: str) -> CheckResult:
        """A ``skipped`` result: the check does not apply (``reason`` says why)."""
        return cls(name=name, family=family, verdict=Verdict.SKIPPED, message=reason)

    @classmethod
    def unsupported(cls, name: str, family: str, reason: str) -> CheckResult:
        """An ``unsupported`` result: the harness cannot check this feature (``reason`` says why)."""
        return cls(name=name, family=family, verdict=Verdict.UNSUPPORTED, message=reason)

    def to_json_dict(self) -> dict[str, Any]:
        """The result as JSON data (see the schema in :mod:`ddspec.conformance.report`)."""
        return json_safe(
            {
                "name": self.name,
                "family": self.family,
                "verdict": self.verdict.value,
                "observed": self.observed,
                "tolerance": self.tolerance,
                "message": self.message,
                "findings": [f.to_json_dict() for f in self.findings],
                "consequence": self.consequence,
                "reproduce": self.reproduce,
                "details": self.details,
                "duration_s": self.duration_s,
            }
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Rebuild a result from :meth:`to_json_dict` output."""
        return cls(
            name=data["name"],
            family=data["family"],
            verdict=Verdict(data["verdict"]),
            observed=_from_json_float(data.get("observed")),
            tolerance=_from_json_float(data.get("tolerance")),
            message=data.get("message", ""),
            findings=tuple(Finding.from_json_dict(f) for f in data.get("findings", ())),
            consequence=data.get("consequence"),
            reproduce=data.get("reproduce"),
            details=dict(data.get("details") or {}),
            duration_s=float(data.get("duration_s", 0.0)),
        )


#: The separator between a check-name pattern and its reason in ``--allow`` / ``--ddspec-allow``.
#: Not ``=``: check names contain it (``single_step.eta=0``).
ALLOWANCE_SEPARATOR = "::"


def parse_allowance(text: str, option: str = "allowance") -> tuple[str, str]:
    r"""Parse one ``NAME::REASON`` allowance (as given to ``--allow`` / ``--ddspec-allow``).

    The text is split at the first ``::``. ``NAME`` is a check name or an
    :func:`fnmatch.fnmatchcase` pattern (``single_step.eta=0``, ``distribution.*``); ``REASON``
    must not be empty: a known deviation is allowed only with a stated reason. ``option`` names
    the argument in the error message.

    Raises:
        ValueError: ``"<option>=<text>: <reason>"`` when there is no ``::``, the name is empty or
            the reason is empty.
    """
    example = "expected NAME::REASON, e.g. 'distribution.*::upstream bug #123'"
    if not isinstance(text, str) or ALLOWANCE_SEPARATOR not in text:
        hint = ""
        if isinstance(text, str) and "=" in text:
            hint = " (the separator is '::', not '=': check names contain '=', as in single_step.eta=0)"
        raise _bad(option, text, example + hint)
    name, reason = text.split(ALLOWANCE_SEPARATOR, 1)
    name, reason = name.strip(), reason.strip()
    if not name:
        raise _bad(option, text, f"the check name before '::' is empty; {example}")
    if not reason:
        raise _bad(option, text, f"an allowed deviation needs a reason after '::'; {example}")
    return name, reason


def validate_allowances(allow: Mapping[str, str] | None) -> dict[str, str]:
    r"""Check an allowance mapping ``{pattern: reason}``; return it as a plain dict.

    Raises:
        ValueError: a pattern or a reason that is not a non-empty string.
    """
    if allow is None:
        return {}
    if not isinstance(allow, Mapping):
        raise _bad("allow", allow, "must be a mapping {check name or pattern: reason}")
    out: dict[str, str] = {}
    for pattern, reason in allow.items():
        if not isinstance(pattern, str) or not pattern.strip():
            raise _bad("allow", pattern, "a check name or pattern must be a non-empty str")
        if not isinstance(reason, str) or not reason.strip():
            raise _bad(f"allow[{pattern!r}]", reason, "an allowed deviation needs a non-empty reason")
        out[pattern.strip()] = reason.strip()
    return out


@dataclass(frozen=True)
class Diagnosis:
    r"""One root cause named by :mod:`ddspec.conformance.diagnosis`, or "no known pattern".

    Attributes:
        pattern: the catalogue entry's name, or None for "no known pattern explains this".
        headline: one line for the top of the report (the pattern's title with its fitted
            parameters, the checks it explains, and the residual after the fix against the tolerance).
        parameters: the fitted parameters (JSON data), e.g. ``{"factor": 1.5}``.
        explains: the failing check names it explains (for "no known pattern": those left unexplained).
        residual: the worst residual of the evidence under the pattern (None when not measured).
        tolerance: the bound that residual is compared with.
        source: the paper and equation, or the library bug, the pattern comes from.
        closest: for "no known pattern": the closest pattern's name, else None.
    """

    pattern: str | None
    headline: str
    parameters: dict[str, Any] = field(default_factory=dict, hash=False)
    explains: tuple[str, ...] = ()
    residual: float | None = None
    tolerance: float | None = None
    source: str | None = None
    closest: str | None = None

    def __post_init__(self) -> None:
        if self.pattern is not None and not isinstance(self.pattern, str):
            raise _bad("pattern", self.pattern, "must be a str or None")
        if not isinstance(self.headline, str) or not self.headline:
            raise _bad("headline", self.headline, "must be a non-empty str")
        object.__setattr__(self, "explains", tuple(str(n) for n in self.explains))
        object.__setattr__(self, "parameters", json_safe(dict(self.parameters)))
        object.__setattr__(self, "residual", _opt_float(self.residual, "residual"))
        object.__setattr__(self, "tolerance", _opt_float(self.tolerance, "tolerance"))

    def to_json_dict(self) -> dict[str, Any]:
        """``{pattern, headline, parameters, explains, residual, tolerance, source, closest}``."""
        return json_safe({
            "pattern": self.pattern, "headline": self.headline, "parameters": self.parameters,
            "explains": list(self.explains), "residual": self.residual, "tolerance": self.tolerance,
            "source": self.source, "closest": self.closest,
        })

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        """Rebuild a diagnosis from :meth:`to_json_dict` output."""
        return cls(pattern=data.get("pattern"), headline=data.get("headline") or str(data.get("pattern")),
                   parameters=dict(data.get("parameters") or {}), explains=tuple(data.get("explains") or ()),
                   residual=_from_json_float(data.get("residual")), tolerance=_from_json_float(data.get("tolerance")),
                   source=data.get("source"), closest=data.get("closest"))


def _ddspec_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("ddspec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _dist_version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_version() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    return _dist_version("torch")


def _diffusers_version() -> str | None:
    return _dist_version("diffusers")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Report:
    r"""Every check result for one target, with the environment it ran in.

    Attributes:
        target: what was checked (the ``module:attr`` spec, or the sampler's name).
        device: the torch device, e.g. ``"cpu"`` or ``"cuda:0"``.
        dtype: the dtype the target ran in, e.g. ``"float32"``.
        profile: ``"quick"``, ``"default"`` or ``"thorough"``.
        seed: the base seed of every random input.
        checks: the results, in the order they ran.
        conventions: the conventions the target declared (JSON data), or None.
        allowances: known deviations ``{name pattern: reason}`` (see the module docstring).
        schema_version: :data:`SCHEMA_VERSION`.
        ddspec_version, torch_version, diffusers_version: installed versions (None when absent).
        started_at: ISO 8601 time (UTC) the run started.
        origin: the resolved file the target was loaded from (``ddspec check`` sets it), or None.
        target_notes: the adapter's notes on how it read the target's configuration (e.g. a field
            an old diffusers release lacks, and the behaviour assumed instead).
        isolation: how the target ran (``"worker process (fork, 1 torch thread)"``, ``"in-process"``),
            or None when not recorded.
        diagnosis: the named root causes of the failures (:class:`Diagnosis`), empty when nothing
            failed or no diagnosis was run.
    """

    target: str
    device: str
    dtype: str
    profile: str
    seed: int
    checks: tuple[CheckResult, ...] = ()
    conventions: dict[str, Any] | None = field(default=None, hash=False)
    allowances: dict[str, str] = field(default_factory=dict, hash=False)
    schema_version: str = SCHEMA_VERSION
    ddspec_version: str = field(default_factory=_ddspec_version)
    torch_version: str | None = field(default_factory=_torch_version)
    diffusers_version: str | None = field(default_factory=_diffusers_version)
    started_at: str = field(default_factory=_now_iso)
    origin: str | None = None
    target_notes: tuple[str, ...] = ()
    isolation: str | None = None
    diagnosis: tuple[Diagnosis, ...] = ()

    def __post_init__(self) -> None:
        diagnosis = tuple(self.diagnosis)
        if not all(isinstance(d, Diagnosis) for d in diagnosis):
            raise _bad("diagnosis", self.diagnosis, "every entry must be a Diagnosis")
        object.__setattr__(self, "diagnosis", diagnosis)
        if self.isolation is not None and not isinstance(self.isolation, str):
            raise _bad("isolation", self.isolation, "must be a str or None")
        notes = tuple(self.target_notes)
        if not all(isinstance(n, str) for n in notes):
            raise _bad("target_notes", self.target_notes, "must be a sequence of str")
        object.__setattr__(self, "target_notes", notes)
        if self.origin is not None and not isinstance(self.origin, str):
            raise _bad("origin", self.origin, "must be a str (a file path) or None")
        checks = tuple(self.checks)
        for item in checks:
            if not isinstance(item, CheckResult):
                raise _bad("checks", item, "every entry must be a CheckResult")
        object.__setattr__(self, "checks", checks)
        object.__setattr__(self, "allowances", validate_allowances(self.allowances))
        if self.conventions is not None:
            object.__setattr__(self, "conventions", json_safe(dict(self.conventions)))
        seed = _opt_int(self.seed, "seed")
        if seed is None:
            raise _bad("seed", self.seed, "must be an int")
        object.__setattr__(self, "seed", seed)

    # -- allowances -------------------------------------------------------------------------------

    def allowed_reason(self, result: CheckResult) -> str | None:
        """The reason a *failing* result is allowed, or None (not failing, or no pattern matches)."""
        if result.verdict is not Verdict.FAIL:
            return None
        for pattern, reason in self.allowances.items():
            if fnmatch.fnmatchcase(result.name, pattern):
                return reason
        return None

    def failures(self) -> tuple[CheckResult, ...]:
        """The failing results that no allowance covers."""
        return tuple(
            r for r in self.checks if r.verdict is Verdict.FAIL and self.allowed_reason(r) is None
        )

    def allowed_deviations(self) -> tuple[tuple[CheckResult, str], ...]:
        """The failing results an allowance covers, each with the allowance's reason."""
        out = []
        for r in self.checks:
            reason = self.allowed_reason(r)
            if reason is not None:
                out.append((r, reason))
        return tuple(out)

    def unused_allowances(self) -> tuple[str, ...]:
        """Allowance patterns that match no failing result."""
        failing = [r.name for r in self.checks if r.verdict is Verdict.FAIL]
        return tuple(
            p for p in self.allowances if not any(fnmatch.fnmatchcase(n, p) for n in failing)
        )

    def with_allowances(self, allow: Mapping[str, str] | None) -> Report:
        """A copy whose allowances are this report's plus ``allow`` (``allow`` wins on a clash)."""
        merged = dict(self.allowances)
        merged.update(validate_allowances(allow))
        return dataclasses.replace(self, allowances=merged)

    # -- verdicts ---------------------------------------------------------------------------------

    def by_verdict(self, verdict: Verdict | str) -> tuple[CheckResult, ...]:
        """The results with this verdict (raw: allowed failures are included under ``fail``)."""
        verdict = Verdict(verdict)
        return tuple(r for r in self.checks if r.verdict is verdict)

    def counts(self) -> dict[str, int]:
        r"""Number of results per outcome.

        Keys: ``"pass"``, ``"fail"`` (failures *not* allowed), ``"allowed"`` (failures an allowance
        covers), ``"acceptable"``, ``"unsupported"``, ``"skipped"``. They sum to ``len(checks)``.
        """
        counts = {v.value: 0 for v in Verdict}
        counts["allowed"] = 0
        for r in self.checks:
            if r.verdict is Verdict.FAIL and self.allowed_reason(r) is not None:
                counts["allowed"] += 1
            else:
                counts[r.verdict.value] += 1
        order = ("pass", "fail", "allowed", "acceptable", "unsupported", "skipped")
        return {key: counts[key] for key in order}

    def blocking_reason(self, result: CheckResult, strict: bool = False) -> str | None:
        r"""Why ``result`` keeps the target from conforming, or None (the table in the module docstring).

        The one per-result rule that :meth:`exit_code`, ``ddspec check`` and the pytest plugin's
        items all follow: a failure no allowance covers and an ``unsupported`` result block always;
        under ``strict``, ``acceptable`` and ``skipped`` block too.
        """
        if not isinstance(strict, bool):
            raise _bad("strict", strict, "must be a bool")
        if result.verdict is Verdict.FAIL:
            return None if self.allowed_reason(result) is not None else "failed"
        if result.verdict is Verdict.UNSUPPORTED:
            return "unsupported: the harness could not verify it, which is never read as conformance"
        if strict and result.verdict is Verdict.ACCEPTABLE:
            return "an acceptable variant, which fails under strict"
        if strict and result.verdict is Verdict.SKIPPED:
            return "skipped, which fails under strict"
        return None

    def nothing_checked(self) -> bool:
        """True when no result is ``pass``, ``acceptable`` or ``fail`` (an empty report included)."""
        return all(r.verdict in (Verdict.SKIPPED, Verdict.UNSUPPORTED) for r in self.checks)

    def nonconformities(self, strict: bool = False) -> tuple[str, ...]:
        r"""Every reason the target does not conform, one line each (empty: it conforms).

        Per result (:meth:`blocking_reason`), ``"nothing was checked"`` (:meth:`nothing_checked`), and
        under ``strict`` each unused allowance.
        """
        reasons = [
            f"{r.name}: {why}" for r in self.checks
            if (why := self.blocking_reason(r, strict)) is not None
        ]
        if self.nothing_checked():
            reasons.append("nothing was checked (every result is skipped or unsupported, or there is none)")
        if strict:
            reasons.extend(
                f"unused allowance {p!r}: no failing check matches (fails under strict)"
                for p in self.unused_allowances()
            )
        return tuple(reasons)

    def exit_code(self, strict: bool = False) -> int:
        r"""0 if the target conforms, 1 if it does not (table in the module docstring).

        The one rule both faces use: ``ddspec check`` returns it, and the pytest plugin's items fail
        exactly for the reasons of :meth:`nonconformities`. Default: 0 only if every result passes,
        is ``acceptable`` (a declared variant the reference knows), is ``skipped`` (not applicable,
        with its reason) or is a failure an allowance covers, and something was checked.
        ``unsupported`` gives 1: the harness could not verify that part of the target, and a gate
        must not read that as conformance. ``strict``: only ``pass`` and allowed failures give 0
        (``acceptable``, ``skipped`` and ``unsupported`` give 1, and so does an unused allowance).
        """
        return 1 if self.nonconformities(strict) else 0

    # -- serialisation ----------------------------------------------------------------------------

    def to_json_dict(self) -> dict[str, Any]:
        """The report as JSON data, schema :data:`SCHEMA_VERSION` (documented in ``report.py``)."""
        return json_safe(
            {
                "schema_version": self.schema_version,
                "target": self.target,
                "ddspec_version": self.ddspec_version,
                "torch_version": self.torch_version,
                "diffusers_version": self.diffusers_version,
                "device": self.device,
                "dtype": self.dtype,
                "profile": self.profile,
                "seed": self.seed,
                "started_at": self.started_at,
                "origin": self.origin,
                "target_notes": list(self.target_notes),
                "isolation": self.isolation,
                "conventions": self.conventions,
                "allowances": self.allowances,
                "summary": {
                    "counts": self.counts(),
                    "exit_code": self.exit_code(False),
                    "exit_code_strict": self.exit_code(True),
                    "unused_allowances": list(self.unused_allowances()),
                },
                "diagnosis": [d.to_json_dict() for d in self.diagnosis],
                "checks": [
                    dict(r.to_json_dict(), allowed=self.allowed_reason(r)) for r in self.checks
                ],
            }
        )

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_json_dict` output.

        Reads every version of :data:`READABLE_SCHEMA_VERSIONS`; a ``ddspec.report/1`` report (no
        ``diagnosis``) is migrated with ``diagnosis = ()`` and comes back as the current schema.

        Raises:
            ValueError: ``schema_version`` is not one of :data:`READABLE_SCHEMA_VERSIONS`.
        """
        if data.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
            raise _bad("schema_version", data.get("schema_version"), f"expected one of {READABLE_SCHEMA_VERSIONS!r}")
        return cls(
            target=data["target"],
            device=data["device"],
            dtype=data["dtype"],
            profile=data["profile"],
            seed=data["seed"],
            checks=tuple(CheckResult.from_json_dict(c) for c in data.get("checks", ())),
            conventions=data.get("conventions"),
            allowances=dict(data.get("allowances") or {}),
            ddspec_version=data.get("ddspec_version", "unknown"),
            torch_version=data.get("torch_version"),
            diffusers_version=data.get("diffusers_version"),
            started_at=data.get("started_at", ""),
            origin=data.get("origin"),
            target_notes=tuple(data.get("target_notes") or ()),
            isolation=data.get("isolation"),
            diagnosis=tuple(Diagnosis.from_json_dict(d) for d in data.get("diagnosis") or ()),
        )

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_json_dict` as strict JSON text (no NaN literals)."""
        return json.dumps(self.to_json_dict(), indent=indent, allow_nan=False)

