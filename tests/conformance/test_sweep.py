"""Tests of conformance/sweep.py and the ``ddspec sweep`` / ``ddspec sweep-merge`` commands.

The live tests run one real sweep of diffusers' DDIMScheduler over a 4-cell grid (timestep_spacing
leading/linspace x prediction_type epsilon/v_prediction, quick profile) as two shards: shard 1/2 on two
pytest-xdist workers, shard 2/2 on one, then merge them. What they expect is derived, not recorded:

* leading spacing is diffusers' correct DDIM (docs/diffusers.md, results table), and linspace steps to
  t - T//N instead of the next timestep (docs/diffusers.md §3, Song et al. 2021 eq. 12 on the
  subsequence): its ``oracle`` and ``single_step`` checks fail, by far (430x the tolerance), so that
  verdict sits on no rounding edge;
* every statistical result runs at alpha = B / (C K) with B the stated budget, C = 4 cells and
  K = statistical_checks_per_cell (Boole's inequality, module docstring of sweep.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ddspec.conformance import stats, sweep
from ddspec.conformance.cli import main

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "diffusers.md"
GRIDS = REPO / "docs" / "grids"

#: The live sweep's stated false-failure budget, booked in the test run's ledger.
LIVE_BUDGET = 1e-9
LIVE_BOUND = 16

SMALL_GRID = f"""
name = "small"
factory = "diffusers:DDIMScheduler"
statistical_checks_per_cell = {LIVE_BOUND}

[axes]
timestep_spacing = ["leading", "linspace"]
prediction_type = ["epsilon", "v_prediction"]
"""


def _grid(text: str, tmp_path: Path, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the grid file ----------------------------------------------------------------------------------


def test_grid_cells_are_the_product_in_file_order() -> None:
    grid = sweep.parse_grid({
        "fixed": {"num_train_timesteps": 1000},
        "axes": {"timestep_spacing": ["leading", "trailing", "linspace"], "clip_sample": [True, False],
                 "num_steps": [[1, 10], 7, "profile"]},
    })
    cells = sweep.grid_cells(grid, dtype="float64")
    assert grid.size == 3 * 2 * 3 == len(cells)
    assert [c.index for c in cells] == list(range(18))
    # the last axis varies fastest
    assert [c.num_steps for c in cells[:3]] == [(1, 10), (7,), None]
    assert dict(cells[3].config) == {"num_train_timesteps": 1000, "timestep_spacing": "leading", "clip_sample": False}
    assert all("num_steps" not in dict(c.config) and c.dtype == "float64" for c in cells)
    assert cells[17].label == "timestep_spacing=linspace, clip_sample=false, N=profile"


def test_grid_json_round_trips() -> None:
    """The plan a worker receives carries the grid as JSON; parsing it back gives the same cells."""
    grid = sweep.parse_grid({"name": "g", "fixed": {"beta_end": 0.02},
                             "axes": {"num_steps": ["profile", 7, [2, 25]], "clip_sample": [True, False]}})
    again = sweep.parse_grid(grid.to_json_dict())
    assert again == grid
    assert sweep.grid_cells(again) == sweep.grid_cells(grid)


def test_dtype_axis_overrides_the_default_dtype() -> None:
    grid = sweep.parse_grid({"axes": {"dtype": ["float32", "float64"], "eta": [0.0]}})
    assert [c.dtype for c in sweep.grid_cells(grid, dtype="float16")] == ["float32", "float64"]
    assert all(dict(c.config) == {"eta": 0.0} for c in sweep.grid_cells(grid))


@pytest.mark.parametrize(
    "data, names",
    [
        ({"axes": {"a": [1]}, "colour": 1}, ["key='colour'", "unknown"]),
        ({"axes": {}}, ["axes={}", "non-empty"]),
        ({"axes": {"a": []}}, ["axes.a=[]", "non-empty list"]),
        ({"axes": {"a": [{"x": 1}]}}, ["axes.a={'x': 1}", "string, a boolean or a finite number"]),
        ({"axes": {"a": [float("nan")]}}, ["axes.a=nan"]),
        ({"axes": {"num_steps": [0]}}, ["axes.num_steps=0", "int >= 1"]),
        ({"axes": {"num_steps": [[1, True]]}}, ["axes.num_steps=[1, True]"]),
        ({"axes": {"dtype": ["float8"]}}, ["axes.dtype='float8'", "float64"]),
        ({"axes": {"a": [1, 1]}}, ["axes.a=[1, 1]", "twice"]),
        ({"axes": {"a": [1]}, "fixed": {"a": 2}}, ["fixed.a=2", "also an axis"]),
        ({"axes": {"a": [1]}, "fixed": {"num_steps": 10}}, ["fixed.num_steps=10", "under [axes]"]),
        ({"axes": {"a": [1]}, "statistical_checks_per_cell": 0}, ["statistical_checks_per_cell=0", ">= 1"]),
        ({"axes": {"a": [1]}, "factory": "nocolon"}, ["factory='nocolon'", "module:attr"]),
    ],
)
def test_bad_grid_is_refused_naming_the_key_and_value(data: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        sweep.parse_grid(data, source="g.toml")
    message = str(info.value)
    assert message.startswith("g.toml: ")
    for part in names:
        assert part in message, message


def test_load_grid_reads_toml_and_names_a_syntax_error(tmp_path: Path) -> None:
    grid = sweep.load_grid(_grid(SMALL_GRID, tmp_path))
    assert (grid.name, grid.factory, grid.size, grid.checks_per_cell) == ("small", "diffusers:DDIMScheduler", 4,
                                                                        LIVE_BOUND)
    with pytest.raises(ValueError, match=r"bad\.toml: not valid TOML"):
        sweep.load_grid(_grid("[axes\n", tmp_path, "bad.toml"))


@pytest.mark.parametrize("path", sorted(GRIDS.glob("*.toml")), ids=lambda p: p.name)
def test_the_documented_grids_parse(path: Path) -> None:
    grid = sweep.load_grid(path)
    assert grid.name == path.stem and grid.factory is not None and grid.size >= 2


# -- shards and the budget --------------------------------------------------------------------------


@pytest.mark.parametrize("n_cells, n", [(4, 2), (96, 5), (7, 7), (3, 8)])
def test_shards_partition_the_grid_evenly(n_cells: int, n: int) -> None:
    grid = sweep.parse_grid({"axes": {"a": list(range(n_cells))}})
    cells = sweep.grid_cells(grid)
    shards = [sweep.shard_cells(cells, sweep.Shard(i, n)) for i in range(1, n + 1)]
    indices = [c.index for shard in shards for c in shard]
    assert sorted(indices) == list(range(n_cells))  # every cell once
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n_cells
    # deterministic: the same shard twice is the same cells
    assert sweep.shard_cells(cells, sweep.Shard(1, n)) == shards[0]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "2", "1/2/3"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"--shard={text!r}")):
        sweep.parse_shard(text)


def test_alpha_spreads_the_budget_over_every_booked_check() -> None:
    alpha = sweep.alpha_per_check(1e-6, 200, 32)
    assert alpha == pytest.approx(1e-6 / 6400, rel=1e-15)
    assert alpha * 200 * 32 <= 1e-6 * (1 + 1e-15)
    for bad in (0.0, 1.0, -1e-6, float("nan")):
        with pytest.raises(ValueError, match="budget="):
            sweep.alpha_per_check(bad, 4, 32)
    with pytest.raises(ValueError, match="n_cells=0"):
        sweep.alpha_per_check(1e-6, 0, 32)


def test_the_plan_digest_separates_different_sweeps() -> None:
    grid = sweep.parse_grid({"axes": {"a": [1, 2]}})
    base = sweep.make_plan("m:f", grid)
    assert base.digest == sweep.make_plan("m:f", grid, shard=sweep.Shard(2, 2)).digest  # shards of one sweep
    for other in (sweep.make_plan("m:g", grid), sweep.make_plan("m:f", grid, seed=1),
                  sweep.make_plan("m:f", grid, budget=1e-7), sweep.make_plan("m:f", grid, profile="default"),
                  sweep.make_plan("m:f", sweep.parse_grid({"axes": {"a": [1, 3]}}))):
        assert other.digest != base.digest


# -- one cell, in this process (no statistical check runs) -------------------------------------------


def test_a_configuration_the_factory_refuses_is_a_load_failure_of_that_cell() -> None:
    grid = sweep.parse_grid({"axes": {"no_such_option": [1]}})
    plan = sweep.make_plan("diffusers:DDIMScheduler", grid, in_process=True)
    record = sweep.run_cell(plan, sweep.grid_cells(grid)[0])
    assert record["status"] == "done" and record["exit_code"] == 1
    assert record["families"] == {"load": "fail"} and record["failing"] == ["load.factory"]
    message = record["report"]["checks"][0]["message"]
    assert "no_such_option" in message and "TypeError" in message
    assert record["ledger"]["statistical_checks"] == 0


def test_an_allowance_applies_in_every_cell_and_is_part_of_the_sweep() -> None:
    grid = sweep.parse_grid({"axes": {"no_such_option": [1, 2]}})
    plan = sweep.make_plan("diffusers:DDIMScheduler", grid, in_process=True, allow={"load.*": "known: issue 1"})
    for cell in sweep.grid_cells(grid):
        record = sweep.run_cell(plan, cell)
        assert record["exit_code"] == 0 and record["failing"] == [] and record["families"] == {"load": "allowed"}
        assert record["report"]["checks"][0]["allowed"] == "known: issue 1"
    # shards with other allowances are not parts of one sweep
    assert plan.digest != sweep.make_plan("diffusers:DDIMScheduler", grid, in_process=True).digest
    with pytest.raises(ValueError, match="allow"):
        sweep.make_plan("m:f", grid, allow={"load.*": " "})


def test_a_factory_that_cannot_be_loaded_is_a_load_failure() -> None:
    grid = sweep.parse_grid({"axes": {"a": [1]}})
    plan = sweep.make_plan("ddspec_no_such_module_xyz:make", grid, in_process=True)
    record = sweep.run_cell(plan, sweep.grid_cells(grid)[0])
    assert record["failing"] == ["load.factory"]
    assert "ddspec_no_such_module_xyz" in record["report"]["checks"][0]["message"]


# -- the live sweep: two shards, two and one workers, merged ----------------------------------------


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``ddspec ARGS`` in a child process (a sweep's pytest-xdist workers are its children)."""
    return subprocess.Popen([sys.executable, "-m", "ddspec.conformance.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _ddspec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _finish(_start(*args, cwd=cwd))


@dataclasses.dataclass(frozen=True)
class LiveSweep:
    shards: tuple[dict[str, Any], ...]
    merged: dict[str, Any]
    runs: tuple[subprocess.CompletedProcess[str], ...]
    merge_run: subprocess.CompletedProcess[str]
    markdown: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveSweep:
    pytest.importorskip("diffusers")
    pytest.importorskip("xdist")
    stats.LEDGER.allocate("tests/conformance/test_sweep.py: the live 4-cell sweep", LIVE_BUDGET)
    tmp = tmp_path_factory.mktemp("sweep")
    grid = _grid(SMALL_GRID, tmp)
    # the two shards run at the same time, as on two CI machines
    started = [_start("sweep", "--grid", str(grid), "--shard", shard, "-n", workers, "--budget", str(LIVE_BUDGET),
                      "--json", f"shard{shard[0]}.json", cwd=tmp)
               for shard, workers in (("1/2", "2"), ("2/2", "1"))]
    runs = [_finish(process) for process in started]
    merge_run = _ddspec("sweep-merge", "shard1.json", "shard2.json", "-o", "merged.json", "--markdown", "m.md",
                        cwd=tmp)
    shards = tuple(sweep.load_sweep(tmp / f"shard{i}.json") for i in (1, 2))
    return LiveSweep(shards=shards, merged=sweep.load_sweep(tmp / "merged.json"), runs=tuple(runs),
                     merge_run=merge_run, markdown=(tmp / "m.md").read_text())


def test_live_merged_ledger_is_the_sum_of_the_shards_ledgers(live: LiveSweep) -> None:
    """Acceptance (issue 12 §4): the merged false-failure ledger equals the sum of its shards'."""
    merged, shards = live.merged["ledger"], [s["ledger"] for s in live.shards]
    assert merged["cells_run"] == sum(s["cells_run"] for s in shards) == 4
    assert merged["statistical_checks"] == sum(s["statistical_checks"] for s in shards)
    assert merged["statistical_checks"] >= 4  # every DDIM cell runs statistical checks
    assert merged["spent"] == pytest.approx(math.fsum(s["spent"] for s in shards), rel=1e-12)
    # one stated budget for the whole sweep: every shard books the whole grid, and the sum stays within it
    for ledger in [merged, *shards]:
        assert ledger["budget"] == LIVE_BUDGET and ledger["n_cells"] == 4
        assert ledger["alpha_per_check"] == pytest.approx(LIVE_BUDGET / (4 * LIVE_BOUND), rel=1e-15)
    assert merged["spent"] <= LIVE_BUDGET
    assert sweep.ledger_problems(live.merged) == []
    assert live.merged["shards"] == ["1/2", "2/2"]


def test_live_every_statistical_result_ran_at_the_cell_alpha(live: LiveSweep) -> None:
    """The budget reaches the checks: each statistical result's alpha is B / (C K), and a cell's spending
    is its count times that alpha."""
    alpha = LIVE_BUDGET / (4 * LIVE_BOUND)
    for cell in live.merged["cells"]:
        rates = [c["details"]["false_failure_rate"] for c in cell["report"]["checks"]
                 if "false_failure_rate" in c["details"]]
        assert rates and all(r == pytest.approx(alpha, rel=1e-12) for r in rates), (cell["label"], rates)
        assert cell["ledger"]["statistical_checks"] == len(rates)
        assert cell["ledger"]["spent"] == pytest.approx(len(rates) * alpha, rel=1e-12)


def test_live_shards_hold_their_cells_and_the_merge_holds_all(live: LiveSweep) -> None:
    assert [c["index"] for c in live.shards[0]["cells"]] == [0, 2]
    assert [c["index"] for c in live.shards[1]["cells"]] == [1, 3]
    assert [c["index"] for c in live.merged["cells"]] == [0, 1, 2, 3]
    assert sweep.missing_cells(live.merged) == [] and sweep.missing_cells(live.shards[0]) == [1, 3]
    assert all(c["status"] == "done" and c["worker"] in ("gw0", "gw1") for c in live.merged["cells"])
    assert [r["workers"] for r in live.merged["runs"]] == ["2", "1"]


def test_live_summary_says_which_cells_fail_which_family(live: LiveSweep) -> None:
    by_index = {c["index"]: c for c in live.merged["cells"]}
    for index in (0, 1):  # leading: diffusers' correct DDIM
        assert by_index[index]["exit_code"] == 0 and set(by_index[index]["families"].values()) == {"pass"}
    for index in (2, 3):  # linspace: docs/diffusers.md §3
        assert by_index[index]["exit_code"] == 1
        assert by_index[index]["families"]["oracle"] == by_index[index]["families"]["single_step"] == "fail"
        assert by_index[index]["families"]["schedule"] == "pass"
    table = sweep.summary_table(live.merged)
    assert "oracle fails in 2 of 4 cells: 2, 3" in table
    assert "single_step fails in 2 of 4 cells: 2, 3" in table
    assert "2 of 4 cells conform" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:5]}
    assert rows["0"][1:3] == ["leading", "epsilon"] and rows["3"][1:3] == ["linspace", "v_prediction"]
    header = table.splitlines()[0].split()
    assert rows["2"][header.index("oracle")] == "F" and rows["0"][header.index("oracle")] == "."
    # the merge command prints the same table and exits 1 (cells fail)
    assert live.merge_run.returncode == 1, live.merge_run.stderr
    assert live.merge_run.stdout == table


def test_live_sweep_exit_codes_and_progress(live: LiveSweep) -> None:
    for run, cells in zip(live.runs, ((0, 2), (1, 3))):
        assert run.returncode == 1, run.stderr  # each shard has a failing linspace cell
        lines = [line for line in run.stderr.splitlines() if line.startswith("[")]
        assert len(lines) == 2, run.stderr
        assert {int(re.match(r"\[\d/2\] cell (\d+)", line).group(1)) for line in lines} == set(cells)
        assert any("fail: oracle single_step" in line for line in lines)
        assert "not run here (other shards): 2 of 4 cells" in run.stdout
    ok_only = dict(live.merged, cells=[c for c in live.merged["cells"] if c["index"] in (0, 1)])
    assert sweep.sweep_exit_code(ok_only) == 0


def linspace_ddim() -> Any:
    """Cell 2 of the live grid as a zero-argument factory, for ``ddspec check``."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(timestep_spacing="linspace", prediction_type="epsilon")


def test_live_cell_is_what_ddspec_check_reports(live: LiveSweep, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A cell is ``ddspec check`` of the configured scheduler: the same checks, and the same verdict for
    every deterministic one (the statistical ones run at another alpha here: the test run's)."""
    out = tmp_path / "check.json"
    assert main(["check", f"{Path(__file__).as_posix()}:linspace_ddim", "--profile", "quick", "--no-progress",
                 "--json", str(out)]) == 1
    capsys.readouterr()
    checked = json.loads(out.read_text())
    checked = checked["reports"][0] if "reports" in checked else checked
    cell = next(c for c in live.merged["cells"] if c["index"] == 2)

    def verdicts(report: dict[str, Any]) -> dict[str, str]:
        return {c["name"]: c["verdict"] for c in report["checks"] if "false_failure_rate" not in c["details"]}

    assert [c["name"] for c in cell["report"]["checks"]] == [c["name"] for c in checked["checks"]]
    assert verdicts(cell["report"]) == verdicts(checked)


def test_live_markdown_is_the_writer_output(live: LiveSweep) -> None:
    assert live.markdown == sweep.format_markdown(live.merged)
    row = next(line for line in live.markdown.splitlines() if line.startswith("| 2 |"))
    assert "| linspace | epsilon |" in row and "oracle.*" in row and "single_step.*" in row


def test_merge_refuses_other_sweeps_and_duplicate_cells(live: LiveSweep) -> None:
    with pytest.raises(ValueError, match=r"cell=0: is also in docs\[0\]"):
        sweep.merge_sweeps([live.shards[0], live.shards[0]])
    other = dict(live.shards[1], sweep_digest="0" * 16)
    with pytest.raises(ValueError, match=r"docs\[1\]\.sweep_digest='0000000000000000'"):
        sweep.merge_sweeps([live.shards[0], other])


def test_an_overspent_cell_is_reported_and_exits_2(live: LiveSweep) -> None:
    """Planted: one cell claims more statistical checks than the per-cell booking; the ledger check
    names it and the sweep's exit code is 2."""
    doc = json.loads(json.dumps(live.merged))
    cell = doc["cells"][1]
    cell["ledger"]["statistical_checks"] = LIVE_BOUND + 1
    cell["ledger"]["spent"] = (LIVE_BOUND + 1) * doc["ledger"]["alpha_per_check"]
    problems = sweep.ledger_problems(doc)
    assert len(problems) == 1 and problems[0].startswith("cell 1 (") and f"{LIVE_BOUND + 1} statistical" in problems[0]
    assert sweep.sweep_exit_code(doc) == 2
    assert sweep.ledger_problems(live.merged) == [] and sweep.sweep_exit_code(live.merged) == 1


def crash_or_port(crash: bool = False) -> Any:
    """A sweep factory: the bundled reference port, or (``crash=True``) the death of the worker process."""
    if crash:
        os._exit(3)
    from ddspec.conformance.torch_port import make_reference_port

    return make_reference_port()


@pytest.mark.slow
def test_a_cell_whose_worker_dies_is_crashed_and_the_others_still_run(tmp_path: Path) -> None:
    """Planted: the factory of cell 1 ends its xdist worker; the sweep records that cell as crashed (with
    xdist's message), runs the other cell, and exits 1."""
    stats.LEDGER.allocate("tests/conformance/test_sweep.py: the crash sweep", LIVE_BUDGET)
    grid = _grid(f'factory = "{Path(__file__).as_posix()}:crash_or_port"\n[axes]\ncrash = [false, true]\n',
                 tmp_path)
    run = _ddspec("sweep", "--grid", str(grid), "-n", "1", "--budget", str(LIVE_BUDGET), "--json", "c.json",
                  "--profile", "quick", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    doc = sweep.load_sweep(tmp_path / "c.json")
    ok, crashed = doc["cells"]
    assert ok["status"] == "done" and ok["exit_code"] == 0
    assert crashed["status"] == "crashed" and crashed["exit_code"] == 1 and "crashed" in crashed["error"]
    assert "crashed (no record): 1" in run.stdout


# -- the command line: usage errors (nothing runs) ---------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--shard", "3/2"], "--shard='3/2'"),
        (["-n", "0"], "-n 0"),
        (["--budget", "2"], "--budget=2.0"),
        (["--dtype", "float64"], "--dtype float64: the grid"),
        (["--allow", "oracle.*=oops"], "--allow='oracle.*=oops'"),
    ],
)
def test_sweep_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                   expected: str) -> None:
    grid = _grid('factory = "m:f"\n[axes]\ndtype = ["float32"]\n', tmp_path)
    assert main(["sweep", "--grid", str(grid), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddspec: error: ") and expected in err, err


def test_sweep_without_factory_or_grid_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid("[axes]\na = [1]\n", tmp_path)
    assert main(["sweep", "--grid", str(grid)]) == 2
    assert "FACTORY: none given" in capsys.readouterr().err
    assert main(["sweep", "nocolon", "--grid", str(grid)]) == 2
    assert "FACTORY 'nocolon': must be 'module:attr'" in capsys.readouterr().err
    assert main(["sweep", "m:f", "--grid", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: cannot read it" in capsys.readouterr().err
    assert main(["sweep", "m:f", "--grid", str(_grid("[axes]\na = []\n", tmp_path, "e.toml"))]) == 2
    assert "axes.a=[]" in capsys.readouterr().err


def test_sweep_merge_refuses_a_report_that_is_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": "ddspec.report/1"}))
    assert main(["sweep-merge", str(path)]) == 2
    err = capsys.readouterr().err
    assert "schema_version='ddspec.report/1'" in err and "ddspec.sweep/1" in err


# -- docs/diffusers.md: the tables are the sweep's ---------------------------------------------------


@pytest.mark.parametrize("name", ["diffusers_ddim", "diffusers_ddpm"])
def test_diffusers_doc_tables_are_generated_from_the_recorded_sweeps(name: str) -> None:
    """docs/diffusers.md's grid tables are what the Markdown writer makes of the recorded sweep, and the
    recording is a complete sweep of today's grid file (regenerate: docs/sweeps.md)."""
    recorded = sweep.load_sweep(GRIDS / f"{name}.sweep.json")
    grid = sweep.load_grid(GRIDS / f"{name}.toml")
    assert recorded["grid"] == grid.to_json_dict(), f"docs/grids/{name}.toml changed since the recorded sweep"
    assert sweep.missing_cells(recorded) == [] and sweep.ledger_problems(recorded) == []
    assert all(c["status"] == "done" for c in recorded["cells"])
    section = sweep.doc_section(DOC.read_text(), name)
    assert section == sweep.format_markdown(recorded), (
        f"docs/diffusers.md's {name} table differs from the recorded sweep: run "
        f"'ddspec sweep-merge docs/grids/{name}.sweep.json --update-doc docs/diffusers.md'")


def test_replace_doc_section_round_trips_and_names_a_missing_block() -> None:
    text = "intro\n" + "\n".join(sweep._markers("g")) + "\noutro\n"
    updated = sweep.replace_doc_section(text, "g", "| a |\n")
    assert sweep.doc_section(updated, "g") == "| a |\n"
    assert updated.startswith("intro\n") and updated.endswith("outro\n")
    assert sweep.replace_doc_section(updated, "g", "| b |\n") == sweep.replace_doc_section(text, "g", "| b |\n")
    with pytest.raises(ValueError, match="section='h'"):
        sweep.replace_doc_section(text, "h", "")
