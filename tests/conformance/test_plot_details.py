r"""The data the HTML report plots is recorded by the checks (issue 12 §2): per-step errors, ULP per index,
whole timestep sequences and QQ points. Expected sequences are derived from the rules' definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Report
from ddspec.conformance.runner import installed_checks, run_checks
from ddspec.conformance.torch_port import make_reference_port


@pytest.fixture(scope="module")
def report() -> Report:
    port = make_reference_port()
    return run_checks(port, CheckContext(port, dtype="float32", profile="quick", seed=0), installed_checks())


def _named(report: Report, prefix: str) -> list:
    found = [r for r in report.checks if r.name.startswith(prefix)]
    assert found, prefix
    return found


def test_deterministic_checks_record_every_compared_step(report: Report) -> None:
    for r in _named(report, "single_step.") + _named(report, "oracle.point_mass."):
        per_step = r.details["per_step"]
        assert len(per_step) >= 2
        for item in per_step:
            assert item["error"] <= item["tolerance"] and item["ratio"] <= 1.0
        assert max(item["ratio"] for item in per_step) == pytest.approx(
            max(f.error / f.tolerance for f in r.findings if f.tolerance), rel=1e-9)


def test_schedule_checks_record_ulp_per_index(report: Report) -> None:
    for r in _named(report, "schedule."):
        ulps = r.details["ulp_per_index"]
        assert len(ulps) == 1000 and all(v is not None and v >= 0 for v in ulps)


@pytest.mark.parametrize("n", [3, 7, 10])
def test_timesteps_record_the_whole_sequences(report: Report, n: int) -> None:
    # the port's default spacing is 'leading': t_k = k * (T // N), k = 0..N-1, noisiest first
    leading = [k * (1000 // n) for k in range(n)][::-1]
    r = _named(report, f"timesteps.sequence.N={n}")[0]
    assert r.details["expected"] == leading and r.details["got"] == leading


def test_run_output_records_qq_points(report: Report) -> None:
    for r in _named(report, "distribution.run_output."):
        qq = r.details["qq"]
        theo, emp = np.array(qq["theoretical"]), np.array(qq["empirical"])
        assert 2 <= theo.size == emp.size <= 200
        assert np.all(np.diff(theo) > 0) and np.all(np.diff(emp) >= 0)
        # the 2000 standardized draws are N(0, 1): their median order statistic sits within 6 standard errors
        # of 0 (the sample median's s.e. is sqrt(pi/2)/sqrt(n) = 0.028 for n = 2000)
        mid = emp[np.argmin(np.abs(theo))]
        assert abs(mid) < 6 * np.sqrt(np.pi / 2) / np.sqrt(r.details["chains"])
        assert theo[0] == pytest.approx(sps.norm.ppf(0.5 / r.details["chains"]), rel=1e-3)
