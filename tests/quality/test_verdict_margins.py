r"""No verdict of the self-test sits on a rounding edge: margins between what was observed and the bound.

A deterministic check compares an observed error e with a worst-case bound B and fails iff e > B. Its
verdict can change between machines only if a machine-dependent rounding moves e across B. Rounding
differences between CPUs, libm builds and torch's vector kernels are a few units in the last place of
the target's working dtype, so they change e by a factor close to 1. These tests require a factor of
:data:`MARGIN` on the right side of the bound for every verdict the self-test asserts:

* every passing deterministic check of a correct configuration (``tests/quality/zoo.py``'s
  ``CORRECT_CONFIGS`` and ``CONTROLS``) has e ≤ B / MARGIN;
* every planted bug (``ZOO``) fails each family it is expected to fail with some result whose e ≥
  MARGIN · B, or with no number at all (an exception, a hang, a NaN: a contract failure).

* every known diffusers discrepancy (``KNOWN_DISCREPANCIES``, strict xfails) has at least one failing
  check at e ≥ MARGIN · B (or a contract failure), so that the expected failure cannot vanish.

Statistical checks (``distribution.*``) report e as the worst test statistic over its acceptance
bound (B = 1). A planted bug must fail them by MARGIN too: the target's own noise stream may differ
between CPU kernels (float32 ``randn`` does), and a statistic at twice its critical value does not
fall below it on another stream except with negligible probability. A *passing* statistical check of
a correct configuration is not held to a margin: there the statistic is random by design, judged at
a stated false-failure rate (``docs/statistics.md``), and the harness draws its own inputs
bit-identically on every CPU (``docs/conventions.md``, "Machine independence").

The reports are the ones the false-alarm and zoo tests already computed (their ``lru_cache``), so
this module adds almost no run time.
"""

from __future__ import annotations

import math

import pytest

from ddspec.conformance.results import CheckResult, Verdict

from .test_harness_false_alarms import SEEDS
from .test_harness_false_alarms import _report as config_report
from .test_harness_zoo import _zoo_report
from .zoo import CORRECT_CONFIGS, KNOWN_DISCREPANCIES, ZOO

#: How far on the right side of its bound every asserted verdict must be. Machine-dependent rounding
#: moves an observed error by a few ULP of the working dtype; the bounds are worst cases of whole
#: operation counts (docs/tolerances.md), so a factor 2 is far beyond any such change.
MARGIN = 2.0

#: Families judged by a deterministic bound.
DETERMINISTIC = ("schedule", "timesteps", "oracle", "single_step", "invariants")


def ratio(result: CheckResult) -> float | None:
    """observed / tolerance, or None when the result carries no comparable pair."""
    if result.observed is None or result.tolerance is None:
        return None
    if not math.isfinite(result.observed):
        return math.inf
    if result.tolerance == 0.0:
        return math.inf if result.observed != 0.0 else 0.0
    return abs(result.observed) / result.tolerance


def _correct_cases() -> list:
    return [pytest.param(c.name, d, id=f"{c.name}-{d}") for c in CORRECT_CONFIGS for d in c.dtypes]


@pytest.mark.parametrize(("name", "dtype"), _correct_cases())
def test_correct_configurations_pass_with_margin(name: str, dtype: str) -> None:
    report = config_report(name, dtype, SEEDS[0])
    close = {}
    for r in report.checks:
        if r.family not in DETERMINISTIC or r.verdict is not Verdict.PASS:
            continue
        q = ratio(r)
        if q is not None and q > 1.0 / MARGIN:
            close[r.name] = (q, r.observed, r.tolerance)
    assert not close, (
        f"{name} in {dtype}: passing checks within a factor {MARGIN:g} of their bound "
        f"(ratio, observed, tolerance): {close}"
    )


def _contract_failure(result: CheckResult) -> bool:
    """A failure with no number to put beside a bound: a call raised or hung (``details["errors"]``), or
    a finding records something other than a compared value (a NaN, a wrong shape, a global RNG draw)."""
    if result.details.get("errors"):
        return True
    return any(f.expected is None or f.got is None or not math.isfinite(f.got) for f in result.findings)


def _zoo_cases() -> list:
    return [pytest.param(e.name, d, id=f"{e.name}-{d}") for e in ZOO for d in e.dtypes]


@pytest.mark.parametrize(("name", "dtype"), _zoo_cases())
def test_planted_bugs_fail_with_margin(name: str, dtype: str) -> None:
    entry = {e.name: e for e in ZOO}[name]
    report = _zoo_report(name, dtype)
    for prefix in entry.expect:
        failing = [r for r in report.failures() if r.name == prefix or r.name.startswith(prefix + ".")]
        assert failing, f"{name} in {dtype}: nothing under {prefix} failed"
        ratios = [None if _contract_failure(r) else ratio(r) for r in failing]
        if any(q is None or q >= MARGIN for q in ratios):
            continue  # a contract failure (no number) or a failure far outside the bound
        detail = {r.name: (q, r.observed, r.tolerance) for r, q in zip(failing, ratios)}
        pytest.fail(f"{name} in {dtype}: every {prefix} failure is within a factor {MARGIN:g} of its bound: {detail}")


def _discrepancy_cases() -> list:
    return [pytest.param(c.name, d, id=f"{c.name}-{d}") for c in KNOWN_DISCREPANCIES for d in c.dtypes]


@pytest.mark.parametrize(("name", "dtype"), _discrepancy_cases())
def test_known_discrepancies_fail_with_margin(name: str, dtype: str) -> None:
    report = config_report(name, dtype, 0)
    failing = report.failures()
    assert failing, f"{name} in {dtype}: the documented discrepancy no longer fails anything"
    ratios = {r.name: (None if _contract_failure(r) else ratio(r)) for r in failing}
    assert any(q is None or q >= MARGIN for q in ratios.values()), (
        f"{name} in {dtype}: every failure is within a factor {MARGIN:g} of its bound: {ratios}"
    )
