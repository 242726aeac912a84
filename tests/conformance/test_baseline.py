r"""The baseline gate (issue 12, §1): :mod:`ddspec.conformance.baseline`.

Each rule of the module docstring is shown on synthetic results, with values chosen well away from
the thresholds (a growth of 5× or 20× against the factor 10, never 10× itself). The floor for growth
from an exact 0 is :math:`10^{-3}\tau` by definition (:data:`~ddspec.conformance.baseline.ZERO_FLOOR`),
so with :math:`\tau = 10^{-6}` the floor is :math:`10^{-9}` and an error of :math:`5\cdot10^{-9}` is a
growth of 5, :math:`2\cdot10^{-8}` one of 20.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ddspec.conformance import baseline as bl
from ddspec.conformance.results import CheckResult, Report


def _r(name: str = "single_step.eta=0", verdict: str = "pass", observed: float | None = 1e-7,
       tolerance: float | None = 1e-5, details: dict | None = None, family: str | None = None) -> CheckResult:
    return CheckResult(name=name, family=family or name.split(".")[0], verdict=verdict,
                       observed=observed, tolerance=tolerance, details=details or {})


def _rep(*checks: CheckResult, target: str = "t", dtype: str = "float32", device: str = "cpu") -> Report:
    return Report(target=target, device=device, dtype=dtype, profile="quick", seed=0, checks=checks)


def _stat(z: float, observed: float) -> CheckResult:
    return _r("distribution.run_output.eta=1", observed=observed, tolerance=1.0,
              details={"tests": [{"name": "a/mean", "detail": f"z-test: z = {z}, pass iff |z| <= 5.4"},
                                 {"name": "a/var", "z": -0.1}]})


def test_save_load_round_trip_with_non_finite_values(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    report = _rep(_r(), _r("invariants.finite", "fail", math.inf, None), _r("oracle.x", observed=math.nan),
                  _stat(-2.5, 0.3))
    saved = bl.save_baseline(report, path)
    text = path.read_text()
    json.loads(text)  # strict JSON (no NaN literals)
    assert "NaN" in text and "Infinity" in text and bl.BASELINE_SCHEMA_VERSION in text
    loaded = bl.load_baseline(path)
    assert loaded.groups.keys() == saved.groups.keys() == {"t [float32]"}
    entries = loaded.groups["t [float32]"]
    assert entries["single_step.eta=0"].ratio == pytest.approx(1e-7 / 1e-5)
    assert math.isinf(entries["invariants.finite"].observed) and entries["invariants.finite"].ratio is None
    assert math.isnan(entries["oracle.x"].observed)
    assert entries["distribution.run_output.eta=1"].z == 2.5  # the largest |z|, from the text
    assert loaded.meta["t [float32]"]["device"] == "cpu"


@pytest.mark.parametrize(
    ("content", "field"),
    [("not json", "is not JSON"), ('{"schema_version": "ddspec.baseline/0", "groups": {}}', "schema_version"),
     ('{"schema_version": "ddspec.baseline/1"}', "groups"),
     ('{"schema_version": "ddspec.baseline/1", "groups": {"g": {"checks": {"c": {"verdict": "great"}}}}}',
      "verdict")],
)
def test_bad_baseline_file_names_the_field(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=field):
        bl.load_baseline(path)


@pytest.mark.parametrize("bad", [1, 1.0, 0.5, math.nan, math.inf, True, "10"])
def test_max_growth_must_be_a_finite_number_above_one(bad: object) -> None:
    base = bl.baseline_of(_rep(_r()))
    with pytest.raises(ValueError, match=r"^max_growth="):
        bl.compare(_rep(_r()), base, max_growth=bad)  # type: ignore[arg-type]


def test_growth_beyond_the_factor_within_tolerance_is_a_regression() -> None:
    base = bl.baseline_of(_rep(_r(observed=1e-8)))
    grown = bl.compare(_rep(_r(observed=2e-7)), base)  # 20x, still 50x under the tolerance 1e-5
    assert grown.exit_code == 1 and [c.kind for c in grown.regressions] == ["observed"]
    assert grown.regressions[0].growth == pytest.approx(20.0)
    assert "20×" in grown.format_text() and "REGRESSION" in grown.format_text()
    mild = bl.compare(_rep(_r(observed=5e-8)), base)  # 5x
    assert mild.exit_code == 0 and mild.regressions == ()
    assert bl.compare(_rep(_r(observed=5e-8)), base, max_growth=3).exit_code == 1


def test_growth_from_zero_is_measured_on_the_tolerance_floor() -> None:
    base = bl.baseline_of(_rep(_r(observed=0.0, tolerance=1e-6)))
    assert bl.compare(_rep(_r(observed=5e-9, tolerance=1e-6)), base).exit_code == 0  # 5x the floor 1e-9
    worse = bl.compare(_rep(_r(observed=2e-8, tolerance=1e-6)), base)  # 20x the floor
    assert worse.exit_code == 1 and worse.regressions[0].growth == pytest.approx(20.0)


def test_growth_from_zero_without_a_tolerance() -> None:
    base = bl.baseline_of(_rep(_r("timesteps.sequence.N=3", observed=0.0, tolerance=None)))
    assert bl.compare(_rep(_r("timesteps.sequence.N=3", observed=0.0, tolerance=None)), base).exit_code == 0
    worse = bl.compare(_rep(_r("timesteps.sequence.N=3", observed=1.0, tolerance=None)), base)
    assert worse.exit_code == 1 and math.isinf(worse.regressions[0].growth)


def test_non_finite_errors() -> None:
    base = bl.baseline_of(_rep(_r(observed=1e-7)))
    nan = bl.compare(_rep(_r(observed=math.nan)), base)
    inf = bl.compare(_rep(_r(observed=math.inf)), base)
    assert nan.exit_code == 1 and "NaN" in nan.regressions[0].message
    assert inf.exit_code == 1 and "infinite" in inf.regressions[0].message
    nan_base = bl.baseline_of(_rep(_r(observed=math.nan)))
    noted = bl.compare(_rep(_r(observed=1e-7)), nan_base)
    assert noted.exit_code == 0 and any("NaN" in n for n in noted.notes)
    missing = bl.compare(_rep(_r(observed=None, tolerance=None)), base)
    assert missing.exit_code == 0


def test_verdict_changes() -> None:
    base = bl.baseline_of(_rep(_r(), _r("oracle.x", "fail", 1.0, 1e-3), _r("invariants.y", "pass", 0.0, 0.0)))
    run = _rep(_r(verdict="fail", observed=2e-5), _r("oracle.x", "pass", 1e-5, 1e-3),
               _r("invariants.y", "skipped", None, None))
    cmp = bl.compare(run, base)
    assert cmp.exit_code == 1
    assert {(c.name, c.kind) for c in cmp.regressions} == {("single_step.eta=0", "verdict"),
                                                            ("invariants.y", "verdict")}
    assert [(c.name, c.kind) for c in cmp.improvements] == [("oracle.x", "verdict")]
    assert "pass -> fail" in cmp.format_text()


def test_added_and_removed_checks_are_reported_not_failed() -> None:
    base = bl.baseline_of(_rep(_r(), _r("oracle.gone")))
    cmp = bl.compare(_rep(_r(), _r("loop.new", family="loop")), base)
    assert cmp.exit_code == 0 and cmp.compared == 1
    assert [c.name for c in cmp.added] == ["loop.new"] and [c.name for c in cmp.removed] == ["oracle.gone"]
    text = cmp.format_text()
    assert "added" in text and "loop.new" in text and "oracle.gone" in text


def test_shrinking_error_is_an_improvement() -> None:
    base = bl.baseline_of(_rep(_r(observed=1e-6)))
    cmp = bl.compare(_rep(_r(observed=2e-8)), base)  # 50x smaller, above the floor 1e-8
    assert cmp.exit_code == 0 and [c.kind for c in cmp.improvements] == ["observed"]


def test_statistical_checks_are_judged_by_z_with_a_floor_of_one() -> None:
    base = bl.baseline_of(_rep(_stat(0.05, 0.01)))
    # |z| 0.05 -> 4: a growth of 4 on the floor 1, not 80; the noisy observed ratio is not judged
    calm = bl.compare(_rep(_stat(4.0, 0.8)), base)
    assert calm.exit_code == 0, calm.format_text()
    jump = bl.compare(_rep(_stat(-20.0, 0.9)), base)  # same verdict (synthetic), |z| 20 on the floor 1
    assert jump.exit_code == 1 and jump.regressions[0].kind == "z"
    assert jump.regressions[0].growth == pytest.approx(20.0)


def test_statistical_z_parsing() -> None:
    assert bl.statistical_z({"tests": [{"detail": "pooled z-test: z = -0.9758, pass iff |z| <= 5.2"}]}) == 0.9758
    assert bl.statistical_z({"tests": [{"z": 1.5}, {"z": -3.0}]}) == 3.0
    assert bl.statistical_z({"z": "NaN"}) != bl.statistical_z({"z": "NaN"})  # NaN
    assert bl.statistical_z({"tests": [{"detail": "no statistic"}]}) is None
    assert bl.statistical_z({}) is None


def test_groups_by_target_and_dtype_and_notes_mismatches() -> None:
    base = bl.baseline_of([_rep(_r(observed=1e-8), dtype="float32"), _rep(_r(observed=1e-6), dtype="float16")])
    ok = bl.compare([_rep(_r(observed=1e-8), dtype="float32"), _rep(_r(observed=2e-6), dtype="float16")], base)
    assert ok.exit_code == 0 and ok.compared == 2
    # the float16 error against the float32 baseline would be a 200x regression: groups keep them apart
    other = bl.compare(_rep(_r(observed=2e-6), dtype="float32"), base)
    assert other.exit_code == 1
    moved = bl.compare(_rep(_r(observed=1e-8), device="cuda:0"), base)
    assert any("device" in n for n in moved.notes)
    unknown = bl.compare(_rep(_r(), target="other"), base)
    assert unknown.exit_code == 0 and len(unknown.added) == 1 and any("not in the baseline" in n for n in unknown.notes)


def test_compare_accepts_a_path(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    bl.save_baseline([_rep(_r(observed=1e-8))], path)
    assert bl.compare(_rep(_r(observed=2e-7)), path).exit_code == 1


def test_run_gate_compares_then_saves(tmp_path: Path) -> None:
    import io

    path = tmp_path / "b.json"
    out = io.StringIO()
    assert bl.run_gate(_rep(_r(observed=1e-8)), save=path, stream=out) == 0 and out.getvalue() == ""
    # compared with the old file before it is overwritten by this run's values
    assert bl.run_gate(_rep(_r(observed=2e-7)), save=path, baseline=path, stream=out) == 1
    assert "REGRESSION" in out.getvalue()
    assert bl.load_baseline(path).groups["t [float32]"]["single_step.eta=0"].observed == 2e-7
