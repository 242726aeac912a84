"""Benchmark: how long `ddspec check` takes on a loop target, beside a step target, in one run.

Usage::

    python benchmarks/bench_loops.py [--dtype float32] [--repeat 3]

For each profile (quick, default) it runs every installed check on the four loop styles of
``tests/quality/loops.py`` (tutorial, ermongroup, improved-diffusion, CompVis) and on the bundled
reference port (a step target), ``--repeat`` times each, and prints the median wall time, the issue's
budget (quick ≤ 5 s, default ≤ 20 s per target on a 2-core CPU) and each loop's time as a ratio to the
step target's, measured in the same process so that the ratio is comparable across machines.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

BUDGETS_S = {"quick": 5.0, "default": 20.0}


def _targets() -> dict[str, object]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ddspec.conformance.torch_port import make_reference_port
    from tests.quality import loops

    return {
        "reference-port (step)": make_reference_port,
        "tutorial (loop, N = T)": loops.tutorial_target,
        "ermongroup (loop)": loops.ermongroup_target,
        "improved-diffusion (loop)": loops.improved_diffusion_target,
        "compvis (loop)": loops.compvis_target,
    }


def _once(factory: object, dtype: str, profile: str) -> float:
    from ddspec.conformance.checks import ALL_CHECKS
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks

    target = factory()
    start = time.perf_counter()
    run_checks(target, CheckContext(target, dtype=dtype, profile=profile, seed=0), ALL_CHECKS)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    targets = _targets()
    _once(targets["compvis (loop)"], args.dtype, "quick")  # warm-up: imports, caches
    for profile, budget in BUDGETS_S.items():
        times = {name: statistics.median(_once(f, args.dtype, profile) for _ in range(args.repeat))
                 for name, f in targets.items()}
        base = times["reference-port (step)"]
        print(f"profile {profile} ({args.dtype}, median of {args.repeat}; budget {budget:g} s per target)")
        for name, seconds in times.items():
            print(f"  {name:28s} {seconds:7.2f} s   {seconds / budget:5.2f} x budget   {seconds / base:5.2f} x step target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
