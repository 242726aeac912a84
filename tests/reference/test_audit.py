"""Tests of audit/accuracy.py (``ddspec audit``, formerly reference/audit.py): the accuracy audit passes,
matches docs/accuracy.md, and can fail; the old path ``ddspec.reference.audit`` is an alias of it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ddspec.audit import accuracy as audit
from ddspec.reference import alphas

DOCS = Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"


def test_quick_audit_is_within_every_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """Every quantity on every standard schedule with T <= 1000 is within its documented ULP bound."""
    events: list[tuple[int, int, str]] = []
    rows = audit.run_audit(audit.QUICK_CASES, dps=40, progress=lambda *e: events.append(e))
    bad = [r for r in rows if not r.passed]
    assert not bad, audit.format_table(bad)
    # every quantity of BOUNDS is measured on at least one schedule
    assert {r.quantity for r in rows} == set(audit.BOUNDS)
    # progress goes to the callback only: nothing is written by the reference itself
    n = len(audit.QUICK_CASES)
    assert events[-1] == (n, n, "done") and {e[1] for e in events} == {n}
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert (0, n, f"{audit.QUICK_CASES[0][0]} T={audit.QUICK_CASES[0][1]}: beta") == events[0]
    assert capsys.readouterr() == ("", "")


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
    out, err = capsys.readouterr()
    assert "worst ULP" in out and "alpha_bar" in out and "0 exceed their bound" in out
    assert err == "" and "\r" not in out  # silent without a progress callback
    seen: list[tuple[int, int, str]] = []
    assert audit.main(["--quick", "--dps", "30"], progress=lambda *e: seen.append(e)) == 0
    assert seen[-1] == (2, 2, "done")
    seen.clear()
    assert audit.main(["--quick", "--dps", "30", "--no-progress"], progress=lambda *e: seen.append(e)) == 0
    assert seen == []


def test_table_columns_stay_aligned_for_long_names() -> None:
    """Every column starts at the same offset on every line, whatever the length of the names."""
    rows = [
        audit.AuditRow("posterior_log_variance_clipped", "cosine", 100000, 1.5, 99999, 0.1, 8.0, 100000),
        audit.AuditRow("beta", "linear", 10, 0.25, 3, 0.1, 8.0, 10),
        audit.AuditRow("ddim_sigma(eta=1, stride)", "scaled_linear", 4000, 12.0, 7, 0.1, 8.0, 80),
    ]
    lines = audit.format_table(rows).splitlines()
    head, body = lines[0], lines[2:5]
    for title in ("schedule", "T", "worst ULP", "at index", "bound", "verdict"):
        end = head.index(title) + len(title)
        for line, row in zip(body, rows):
            cell = {"schedule": row.schedule, "T": str(row.num_timesteps), "worst ULP": f"{row.worst_ulp:.2f}",
                    "at index": str(row.where), "bound": f"{row.bound:.0f}",
                    "verdict": "ok" if row.passed else "EXCEEDS BOUND"}[title]
            if title in ("schedule", "verdict"):  # left-aligned: starts under the title
                assert line[head.index(title):].startswith(cell), (title, line)
            else:  # right-aligned: ends under the title
                assert line[:end].endswith(cell) and line[end] == " ", (title, line)


def test_zero_terminal_snr_schedule_rows_are_present_or_explained() -> None:
    """jsd has beta_T = 1: its SNR row is audited (SNR_T = 0 exactly); log-SNR is -inf at T and crosses 0
    where alpha_bar = 1/2, so it is left out, and the table says why."""
    rows = audit.audit_case("jsd", 1000, dps=30)
    quantities = {r.quantity for r in rows}
    assert "snr" in quantities and "log_snr" not in quantities
    snr_row = next(r for r in rows if r.quantity == "snr")
    assert snr_row.count == 1000 and snr_row.passed
    (note,) = audit.audit_notes((("jsd", 1000), ("linear", 10)))
    # ᾱ_t = (T - 1 - i)/T for jsd (ddspec.reference.schedules.jsd_betas): 1/2 at index T/2 - 1
    assert note.startswith("log_snr on jsd T=1000: not audited") and "alpha_bar[499]" in note
    assert "-inf" in note and note in audit.format_table(rows, [note])
    assert audit.audit_notes((("linear", 10),)) == []
    # odd T: alpha_bar = (T - 1 - i)/T never equals 1/2, so only the -inf endpoint is given as the reason
    (odd,) = audit.audit_notes((("jsd", 3),))
    assert "alpha_bar[2] = 0" in odd and "1/2" not in odd
    with pytest.raises(ValueError, match="cases"):
        audit.audit_notes("jsd")


def test_main_rejects_too_few_digits() -> None:
    with pytest.raises(SystemExit) as exc:
        audit.main(["--dps", "10"])
    assert exc.value.code == 2


def test_the_old_import_path_is_the_same_module() -> None:
    """``ddspec.reference.audit`` (used by ``ddspec audit`` in conformance/cli.py) is the moved module itself."""
    import importlib

    old = importlib.import_module("ddspec.reference.audit")
    assert old is audit
    assert old.main is audit.main and old.BOUNDS is audit.BOUNDS
