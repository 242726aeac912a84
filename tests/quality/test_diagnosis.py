"""Self-test of the diagnosis: every planted bug gets the right top diagnosis, correct targets get none,
out-of-catalogue bugs get "no known pattern".

The expected diagnosis of each planted bug is the catalogue entry that describes it, read off the bug's
own code in ``tests/quality/zoo.py`` / ``loops.py`` (:data:`ddspec.conformance.diagnosis.selftest.EXPECTED`).
By default a representative subset runs in float32; the full table in both dtypes, and the check that
docs/diagnosis.md is current, are ``slow``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from ddspec.conformance.adapters import adapt
from ddspec.conformance.context import CheckContext
from ddspec.conformance.diagnosis.selftest import EXPECTED, cases, render_table, run_case, top_diagnosis
from ddspec.conformance.protocol import declared_timesteps
from ddspec.conformance.report import format_text
from ddspec.conformance.runner import installed_checks, run_checks
from tests.quality import loops, zoo

DOC = Path(__file__).resolve().parents[2] / "docs" / "diagnosis.md"

#: One bug per kind of evidence (transitions, table, timesteps, model t, noise reuse, final state), a
#: contract bug and both out-of-catalogue bugs; kept small for the statistical-check budget of the run.
SUBSET = (
    "ddim_sigma_not_squared", "ddim_alpha_bar_float16", "ddim_timesteps_off_by_one", "ddim_last_step_raises",
    "loop:alpha_prev_at_t_minus_1", "loop:noise_reused", "loop:model_at_t_plus_one", "loop:returns_before_last",
    "out:coefficient_3pct", "out:uniform_noise_loop",
)
_CASES = {c.name: c for c in cases()}


def _check(name: str, dtype: str) -> None:
    report = run_case(_CASES[name], dtype)
    got = top_diagnosis(report)
    expected = EXPECTED[name]
    shown = [d.headline for d in report.diagnosis]
    assert got == expected, f"{name} [{dtype}]: expected top diagnosis {expected!r}, got {got!r}: {shown}"
    if expected is None and report.diagnosis:
        assert report.diagnosis[-1].pattern is None
        assert report.diagnosis[-1].headline.startswith("no known pattern explains")


@pytest.mark.parametrize("name", SUBSET)
def test_planted_bug_gets_its_diagnosis_float32(name: str) -> None:
    _check(name, "float32")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_planted_bug_gets_its_diagnosis(name: str, dtype: str) -> None:
    if dtype not in _CASES[name].dtypes:
        pytest.skip(f"{name} is a bug in {', '.join(_CASES[name].dtypes)} only")
    _check(name, dtype)


@pytest.mark.parametrize("factory", [zoo.CONTROLS[0][1], loops.CONTROLS[0].factory])
def test_correct_targets_get_no_diagnosis(factory) -> None:
    sampler = adapt(factory())
    report = run_checks(sampler, CheckContext(sampler, dtype="float32", profile="quick"), installed_checks())
    assert not report.failures() and report.diagnosis == ()
    assert "DIAGNOSIS" not in format_text(report)


class PrevAtTMinusOne(zoo.HandDDIM):
    """The issue's bug on a step target: ᾱ_prev read at t − 1 instead of at the next timestep of the run."""

    name = "hand-ddim-prev-t-minus-1"

    def prev_timestep(self, t: int, num_steps: int) -> int:
        ts = declared_timesteps(self.conventions, num_steps).tolist()
        return t - 1 if ts.index(t) + 1 < len(ts) else -1


def test_user_reads_the_t_minus_one_bug_in_the_first_line() -> None:
    sampler = PrevAtTMinusOne().as_sampler()
    report = run_checks(sampler, CheckContext(sampler, dtype="float32", profile="quick"), installed_checks())
    assert report.failures()
    first = format_text(report).splitlines()[0]
    assert first.startswith("DIAGNOSIS: ᾱ_prev is taken at t − 1 instead of the previous sampled timestep"), first
    d = report.diagnosis[0]
    assert d.pattern == "prev_timestep_minus_one" and d.residual <= d.tolerance
    n = len(d.explains)
    assert f"this explains {n} failing check" in first and n >= len([r for r in report.failures()
                                                                     if r.family in ("single_step", "oracle")])


def test_docs_table_is_diagonal() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- confusion-table -->", 1)[1].split("<!-- /confusion-table -->", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert len(rows) == len(EXPECTED)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(c.startswith(("✓", "—")) for c in cells[2:]) and any(c.startswith("✓") for c in cells[2:]), row
    m = re.search(r"(\d+) of (\d+) runs", block)
    assert m and m.group(1) == m.group(2)


@pytest.mark.slow
def test_docs_table_is_current() -> None:
    from ddspec.conformance.diagnosis.__main__ import DTYPES, confusion_rows

    table = render_table(confusion_rows(), DTYPES)
    block = DOC.read_text(encoding="utf-8").split("<!-- confusion-table -->\n", 1)[1].split("<!-- /confusion-table -->", 1)[0]
    assert block == table, "docs/diagnosis.md is stale: python -m ddspec.conformance.diagnosis --table --write docs/diagnosis.md"


def test_math_of_the_unit_uniform() -> None:
    # the out-of-catalogue noise 2·rand − 1 has std 1/√3 (not 1) and kurtosis 1.8 (not 3): a check fails,
    # and no catalogue entry (a Gaussian with a wrong std included) explains it
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    assert float(u.std()) == pytest.approx(1 / math.sqrt(3), rel=1e-2)
    assert float((u**4).mean() / u.var() ** 2) == pytest.approx(1.8, rel=2e-2)
