"""Benchmark: how long `ddspec check` takes per target, step targets and loop targets side by side, in one run.

Usage::

    python benchmarks/bench_check.py [TARGET] [--dtype float32] [--repeat 3] [--no-loops]

For each profile (quick, default) the script runs every installed check, ``--repeat`` times, on

* the step target: TARGET (``module:attr``) or, by default, the bundled reference port;
* the four loop styles of ``tests/quality/loops.py`` (tutorial, ermongroup, improved-diffusion, CompVis),
  unless ``--no-loops``;

and prints the median wall time, the budget from the conformance issues (quick ≤ 5 s, default ≤ 20 s per
target on a 2-core CPU), the ratio time/budget, each target's time as a ratio to the step target's, and
the step target's time as a ratio to a calibration workload (1000 float64 reference DDIM steps). The ratios
are measured in the same process, so that they compare across machines.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

BUDGETS_S = {"quick": 5.0, "default": 20.0}


def _calibration() -> float:
    from ddspec.reference import sampling, schedules

    betas = schedules.linear_betas(1000)
    rng = np.random.default_rng(0)
    x, eps = rng.standard_normal((2, 64))
    t0 = time.perf_counter()
    for k in range(1000):
        t = 999 - (k % 999)
        sampling.ddim_step(eps, t, t - 1, x, betas, eta=0.0)
    return time.perf_counter() - t0


def _targets(spec: str | None, loops: bool) -> dict[str, Callable[[], Any]]:
    from ddspec.conformance.loader import load_target
    from ddspec.conformance.torch_port import make_reference_port

    step_label = "reference-port (step)" if spec is None else f"{spec} (step)"
    out: dict[str, Callable[[], Any]] = {step_label: make_reference_port if spec is None else (lambda: load_target(spec)[0])}
    if loops:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        from tests.quality import loops as styles

        out.update({
            "tutorial (loop, N = T)": styles.tutorial_target,
            "ermongroup (loop)": styles.ermongroup_target,
            "improved-diffusion (loop)": styles.improved_diffusion_target,
            "compvis (loop)": styles.compvis_target,
        })
    return out


def _run_once(factory: Callable[[], Any], dtype: str, profile: str, seed: int) -> tuple[float, dict[str, int], list[tuple[str, float]]]:
    from ddspec.conformance.checks import ALL_CHECKS
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks

    sampler = factory()
    t0 = time.perf_counter()
    report = run_checks(sampler, CheckContext(sampler, dtype=dtype, profile=profile, seed=seed), ALL_CHECKS)
    elapsed = time.perf_counter() - t0
    per_family: dict[str, float] = {}
    for r in report.checks:
        per_family[r.family] = per_family.get(r.family, 0.0) + r.duration_s
    return elapsed, report.counts(), sorted(per_family.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default=None, help="module:attr of a step target (default: the bundled port)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-loops", action="store_true", help="time the step target only")
    args = parser.parse_args(argv)
    targets = _targets(args.target, not args.no_loops)
    step_label = next(iter(targets))
    calib = _calibration()
    print(f"calibration: 1000 reference DDIM steps in {calib:.3f} s")
    over = False
    for profile, budget in BUDGETS_S.items():
        runs = {name: [_run_once(f, args.dtype, profile, seed) for seed in range(args.repeat)]
                for name, f in targets.items()}
        med = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
        base = med[step_label]
        print(f"\nprofile {profile} ({args.dtype}, median of {args.repeat}; budget {budget:g} s per target; "
              f"step target = {base / calib:.1f} x calibration)")
        print(f"  {'target':<30} {'median s':>9} {'x budget':>9} {'x step':>7}  counts")
        for name, seconds in med.items():
            over |= seconds > budget
            print(f"  {name:<30} {seconds:>9.2f} {seconds / budget:>9.2f} {seconds / base:>7.2f}  {runs[name][0][1]}")
        print("  slowest families of the step target: "
              + ", ".join(f"{k} {v:.2f}s" for k, v in runs[step_label][0][2][:4]))
    print("\nwithin budget" if not over else "\nOVER BUDGET")
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
