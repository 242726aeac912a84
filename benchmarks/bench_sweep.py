"""Benchmark: a 200-cell sweep of diffusers' DDIMScheduler in the quick profile, on 1 and on 2 workers.

Usage::

    python benchmarks/bench_sweep.py [--workers 1 2] [--shard i/n] [--profile quick] [--json out.json]

The grid (built here) has 200 cells: num_train_timesteps (1000, 500, 250, 100, 50) x timestep_spacing
(leading, trailing) x prediction_type (epsilon, v_prediction) x set_alpha_to_one x num_steps (1, 2, 7,
10, 25). ``--shard i/n`` sweeps one shard of it, for a shorter run. The same cells are swept once per
``--workers`` value, one after the other, in this one process run, and the script prints each wall time,
the cells per second, and the speed-up ``t(1 worker) / t(2 workers)`` (ideal: 2 on a machine with two
free cores; worker start-up, about one torch and diffusers import each, is part of the time). The runs
must give the same verdict in every cell; a difference is printed and makes the exit code 1.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

GRID = {
    "name": "bench_ddim",
    "factory": "diffusers:DDIMScheduler",
    "axes": {
        "num_train_timesteps": [1000, 500, 250, 100, 50],
        "timestep_spacing": ["leading", "trailing"],
        "prediction_type": ["epsilon", "v_prediction"],
        "set_alpha_to_one": [True, False],
        "num_steps": [1, 2, 7, 10, 25],
    },
}


def _run(plan: Any, workers: int) -> tuple[float, dict[int, tuple[str, ...]]]:
    from ddspec.conformance import sweep

    t0 = time.perf_counter()
    doc = sweep.run_sweep(plan, workers=workers, stream=None)
    wall = time.perf_counter() - t0
    return wall, {c["index"]: (c["status"],) + tuple(sorted(c["failing"])) for c in doc["cells"]}


def main(argv: list[str] | None = None) -> int:
    from ddspec.conformance import sweep

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--shard", default="1/1", help="sweep only this shard of the 200 cells (i/n)")
    parser.add_argument("--profile", default="quick", choices=("quick", "default", "thorough"))
    parser.add_argument("--json", metavar="PATH", help="write the timings as JSON")
    args = parser.parse_args(argv)
    grid = sweep.parse_grid(GRID)
    plan = sweep.make_plan(grid.factory, grid, profile=args.profile, shard=sweep.parse_shard(args.shard))
    n = len(plan.cells)
    results = {}
    for workers in args.workers:
        wall, verdicts = _run(plan, workers)
        results[workers] = (wall, verdicts)
        print(f"{n} cells, {workers} worker(s): {wall:.1f} s ({n / wall:.2f} cells/s)", flush=True)
    base = args.workers[0]
    code = 0
    for workers in args.workers[1:]:
        print(f"speed-up {base} -> {workers} workers: {results[base][0] / results[workers][0]:.2f}x")
        if results[workers][1] != results[base][1]:
            diff = [i for i in results[base][1] if results[base][1][i] != results[workers][1].get(i)]
            print(f"verdicts differ between {base} and {workers} workers in cells {diff}", file=sys.stderr)
            code = 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"cells": n, "grid_cells": grid.size, "profile": args.profile,
                       "wall_s": {str(w): r[0] for w, r in results.items()}}, handle, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
