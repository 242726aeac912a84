r"""Power of the harness: every planted bug of the zoo (``tests/quality/zoo.py``) must fail.

For each :data:`~tests.quality.zoo.ZOO` entry the whole harness (``ALL_CHECKS``, profile ``quick``)
runs on the buggy sampler in each of the entry's dtypes, as ``ddspec check`` would
(:func:`ddspec.conformance.runner.run_checks`). Asserted:

* the harness never crashes: ``run_checks`` returns, and no result is a crashed check function (a
  harness bug) rather than a verdict on the target;
* every check family (name prefix) the entry declares has a ``fail`` result;
* the text report (:func:`ddspec.conformance.report.format_text`) opens with the failures, lists
  the expected failure there, and shows it with numbers (``expected X, got Y, |err| Z > tolerance B``)
  or, for a contract failure (exception, hang, wrong dtype, RNG use, NaN), with what went wrong.

The unbugged hand-written bases of the zoo (:data:`~tests.quality.zoo.CONTROLS`) must pass, so
that each failure above belongs to its planted bug.
"""

from __future__ import annotations

import functools
import re

import pytest

from ddspec.conformance import checks as checks_package
from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks import ALL_CHECKS
from ddspec.conformance.context import CheckContext
from ddspec.conformance.report import format_check, format_text
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import run_checks

from .zoo import CONTROLS, ZOO, HandDDIM, ZooEntry

SEED = 0
NUMBERS = re.compile(r"expected \S+, got \S+, \|err\| \S+ > tolerance \S+")
CRASH_PREFIX = "the check function raised"

_ENTRIES = {e.name: e for e in ZOO}
_CASES = [pytest.param(e.name, dtype, id=f"{e.name}-{dtype}") for e in ZOO for dtype in e.dtypes]


@functools.lru_cache(maxsize=None)
def _zoo_report(name: str, dtype: str) -> Report:
    entry = _ENTRIES[name]
    sampler = adapt(entry.factory())
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=SEED, timeout_s=entry.timeout_s)
    return run_checks(sampler, ctx, ALL_CHECKS)


def _crashes(report: Report) -> list[str]:
    return [
        f"{r.name}: {r.message}"
        for r in report.checks
        if r.family == "harness" or r.message.startswith(CRASH_PREFIX)
    ]


def _failing(report: Report, prefix: str) -> list:
    """The failing results named ``prefix`` or ``prefix.<anything>``."""
    return [r for r in report.failures() if r.name == prefix or r.name.startswith(prefix + ".")]


def _sections_before(text: str, marker: str) -> list[int]:
    """Positions of the other section headers (``ACCEPTABLE (n)``, ...) and of the table that come before ``marker``."""
    start = text.index(marker)
    heads = [m.start() for m in re.finditer(r"^(ALLOWED|UNUSED|ACCEPTABLE|UNSUPPORTED|SKIPPED) ", text, re.M)]
    table = text.find("\n  check ")
    return [h for h in heads + [table] if h >= 0 and h < start]


def test_all_check_families_are_registered() -> None:
    """ALL_CHECKS holds every check module's CHECKS (else the zoo below tests fewer checks than ``ddspec check``)."""
    from ddspec.conformance.checks import distribution, invariants, oracle, schedule, single_step, timesteps

    registered = set(ALL_CHECKS)
    for module in (schedule, timesteps, oracle, single_step, distribution, invariants):
        missing = [c.__name__ for c in module.CHECKS if c not in registered]
        assert not missing, f"{module.__name__}.CHECKS not in {checks_package.__name__}.ALL_CHECKS: {missing}"


def test_zoo_is_large_and_mixed() -> None:
    """At least 15 distinct bugs, with diffusers subclasses and hand-written samplers among them."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from ddspec.conformance.adapters.function import FunctionSampler
    from ddspec.conformance.torch_port import ReferencePort

    assert len(ZOO) >= 15
    assert len(_ENTRIES) == len(ZOO), "zoo names must be unique"
    kinds = {"diffusers": 0, "function": 0, "port": 0}
    for e in ZOO:
        assert e.expect and e.description and e.dtypes, e.name
        made = e.factory()
        if isinstance(made, (DDIMScheduler, DDPMScheduler)):
            assert type(made) not in (DDIMScheduler, DDPMScheduler), f"{e.name}: not a subclass"
            kinds["diffusers"] += 1
        elif isinstance(made, FunctionSampler):
            kinds["function"] += 1
        else:
            assert isinstance(made, ReferencePort) and type(made) is not ReferencePort, e.name
            kinds["port"] += 1
    assert min(kinds.values()) >= 3, kinds


@pytest.mark.parametrize(("name", "dtype"), _CASES)
def test_planted_bug_fails_the_expected_checks(name: str, dtype: str) -> None:
    entry: ZooEntry = _ENTRIES[name]
    report = _zoo_report(name, dtype)
    assert not _crashes(report), f"{name}: the harness crashed instead of judging the target: {_crashes(report)}"
    verdicts = {r.name: r.verdict.value for r in report.checks}
    for prefix in entry.expect:
        assert _failing(report, prefix), (
            f"{name} ({entry.description}) in {dtype}: no '{prefix}' check failed; verdicts: {verdicts}"
        )
    assert report.exit_code() == 1


@pytest.mark.parametrize(("name", "dtype"), _CASES)
def test_report_lists_the_failure_first_with_its_evidence(name: str, dtype: str) -> None:
    entry = _ENTRIES[name]
    report = _zoo_report(name, dtype)
    text = format_text(report)
    failures = report.failures()
    assert failures
    marker = f"FAILURES ({len(failures)})"
    assert marker in text
    # the failures come before every other section and before the table of all checks
    assert not _sections_before(text, marker), f"{name}: something is listed before the failures"
    first_block = text[text.index(marker):].splitlines()[1]
    assert first_block.split()[:2] == ["FAIL", failures[0].name]
    failure_section = text[text.index(marker): text.index("\n  check ")]
    for prefix in entry.expect:
        results = _failing(report, prefix)
        for r in results:
            assert f"FAIL        {r.name}" in failure_section
        blocks = [format_check(r) for r in results]
        if entry.numeric:
            assert any(NUMBERS.search(b) for b in blocks), (
                f"{name}: no '{prefix}' failure shows expected/got/tolerance:\n" + "\n".join(blocks)
            )
        else:
            assert all(r.message and (r.findings or r.observed is not None) for r in results), (
                f"{name}: a '{prefix}' failure has no message or no finding:\n" + "\n".join(blocks)
            )
        if entry.shows is not None:
            assert any(entry.shows in b for b in blocks), (
                f"{name}: no '{prefix}' failure mentions {entry.shows!r}:\n" + "\n".join(blocks)
            )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", [c[0] for c in CONTROLS])
def test_unbugged_bases_pass(name: str, dtype: str) -> None:
    """The hand-written bases of the zoo conform: a zoo failure is its planted bug's, not the base's."""
    factory = dict(CONTROLS)[name]
    sampler = adapt(factory())
    report = run_checks(sampler, CheckContext(sampler, dtype=dtype, profile="quick", seed=SEED), ALL_CHECKS)
    bad = {r.name: (r.verdict.value, r.message[:200]) for r in report.checks
           if r.verdict not in (Verdict.PASS, Verdict.SKIPPED)}
    assert not bad, f"{name} in {dtype}: {bad}"
    assert sum(r.verdict is Verdict.PASS for r in report.checks) >= 15


def test_hand_ddim_agrees_with_the_reference_port_in_float64() -> None:
    """The hand-written base is the textbook DDIM step: it agrees with the port to a few ULP (float64)."""
    import torch

    from ddspec.conformance.torch_port import make_reference_port

    hand, port = HandDDIM().as_sampler(), make_reference_port()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    m = torch.randn(4, 8, generator=gen, dtype=torch.float64)
    for t in (900, 400, 0):
        a = hand.step(m, t, x, num_steps=10)
        b = port.step(m, t, x, num_steps=10)
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), (t, float((a - b).abs().max()))
