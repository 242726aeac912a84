"""Benchmark: how long `ddspec check` takes on one target, per profile, measured within one run.

Usage::

    python benchmarks/bench_check.py [TARGET] [--dtype float32] [--repeat 3]

TARGET defaults to the bundled reference port. For each profile (quick, default) the script runs every
installed check on the target `--repeat` times and reports the median wall time, the budget from the
conformance issue (quick ≤ 5 s, default ≤ 20 s on a 2-core CPU) and the ratio time/budget. It also
reports each profile's time as a ratio to a calibration workload run in the same process (1000 float64
reference DDIM steps), so that results from different machines can be compared.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

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


def _run_once(spec: str | None, dtype: str, profile: str, seed: int) -> tuple[float, dict[str, int], list[tuple[str, float]]]:
    from ddspec.conformance.checks import ALL_CHECKS
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.loader import load_target
    from ddspec.conformance.runner import run_checks
    from ddspec.conformance.torch_port import make_reference_port

    sampler, label = (make_reference_port(), "reference-port") if spec is None else load_target(spec)
    t0 = time.perf_counter()
    ctx = CheckContext(sampler, dtype=dtype, profile=profile, seed=seed)
    report = run_checks(sampler, ctx, ALL_CHECKS, target=label)
    elapsed = time.perf_counter() - t0
    per_check: dict[str, float] = {}
    for r in report.checks:
        per_check[r.name.split(".")[0]] = per_check.get(r.name.split(".")[0], 0.0) + r.duration_s
    return elapsed, report.counts(), sorted(per_check.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default=None, help="module:attr (default: the bundled port)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    calib = _calibration()
    print(f"calibration: 1000 reference DDIM steps in {calib:.3f} s")
    print(f"{'profile':<9} {'median s':>9} {'budget s':>9} {'time/budget':>12} {'time/calibration':>17}  counts")
    over = False
    for profile in ("quick", "default"):
        runs = [_run_once(args.target, args.dtype, profile, seed) for seed in range(args.repeat)]
        med = statistics.median(r[0] for r in runs)
        budget = BUDGETS_S[profile]
        over |= med > budget
        print(f"{profile:<9} {med:>9.2f} {budget:>9.1f} {med / budget:>12.2f} {med / calib:>17.1f}  {runs[0][1]}")
        print("          slowest families: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[0][2][:4]))
    print("within budget" if not over else "OVER BUDGET")
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
