"""Tests of reference/audit.py: the accuracy audit passes, matches docs/accuracy.md, and can fail."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ddspec.reference import alphas, audit

DOCS = Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"


def test_quick_audit_is_within_every_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """Every quantity on every standard schedule with T <= 1000 is within its documented ULP bound."""
    rows = audit.run_audit(audit.QUICK_CASES, dps=40, progress=True)
    bad = [r for r in rows if not r.passed]
    assert not bad, audit.format_table(bad)
    # every quantity of BOUNDS is measured on at least one schedule
    assert {r.quantity for r in rows} == set(audit.BOUNDS)
    assert "done:" in capsys.readouterr().err  # progress is shown while it works


@pytest.mark.parametrize("schedule,T", [("linear", 4000), ("scaled_linear", 4000), ("cosine", 4000)])
def test_audit_at_t4000(schedule: str, T: int) -> None:
    """The T = 4000 standard schedules, every timestep, every quantity."""
    rows = audit.audit_case(schedule, T, dps=30)
    bad = [r for r in rows if not r.passed]
    assert not bad, audit.format_table(bad)


def test_audit_cosine_t100000() -> None:
    """Cosine at T = 100000: the catastrophic-cancellation case of the textbook formulas."""
    rows = audit.audit_case("cosine", 100000, dps=30)
    bad = [r for r in rows if not r.passed]
    assert not bad, audit.format_table(bad)


def test_bounds_match_the_documentation() -> None:
    """docs/accuracy.md lists the same bound for every audited quantity as audit.BOUNDS."""
    text = DOCS.read_text()
    for quantity, bound in audit.BOUNDS.items():
        stem = quantity.split("(")[0]
        rows = [line for line in text.splitlines() if line.startswith(f"| {stem}")]
        assert rows, f"docs/accuracy.md has no row for {quantity}"
        for line in rows:
            assert re.split(r"\s*\|\s*", line)[2] == f"{bound:.0f}", line


def test_audit_fails_on_a_planted_textbook_cumprod(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the naive float64 cumprod planted in, the audit reports ᾱ-derived quantities over bound and exits 1."""
    naive = lambda betas: np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))  # noqa: E731
    monkeypatch.setattr(alphas, "alpha_bar", naive)
    monkeypatch.setattr(alphas, "one_minus_alpha_bar", lambda betas: 1.0 - naive(betas))
    rows = audit.audit_case("linear", 1000, dps=40)
    over = {r.quantity for r in rows if not r.passed}
    assert "one_minus_alpha_bar" in over
    monkeypatch.setattr(audit, "QUICK_CASES", (("linear", 1000),))
    assert audit.main(["--quick", "--no-progress", "--dps", "30"]) == 1


def test_main_passes_and_prints_the_table(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "QUICK_CASES", (("linear", 10), ("cosine", 10)))
    assert audit.main(["--quick", "--dps", "30"]) == 0
    out = capsys.readouterr().out
    assert "worst ULP" in out and "alpha_bar" in out and "0 exceed their bound" in out


def test_main_rejects_too_few_digits() -> None:
    with pytest.raises(SystemExit) as exc:
        audit.main(["--dps", "10"])
    assert exc.value.code == 2
