"""Benchmark: what the ``coefficients`` family (one batched least-squares fit per tested step) costs.

Usage::

    python benchmarks/bench_coefficients.py [TARGET ...] [--profile default] [--dtype float32] [--repeat 3]

TARGETs default to the bundled reference port and diffusers' ``DDIMScheduler``/``DDPMScheduler``.
For each target the script runs every installed check with and without the ``coefficients`` family,
alternating (without, with, without, ...) so that both see the same machine load, ``--repeat`` times,
in process, after one warm-up run, and reports the median wall times, the ratio (with / without), the
time of the family on its own (``fit``, the runner's timing of its results) and its share of the run
with it, and whether that run stays inside the default profile's budget of 20 s per target. On a
shared machine the two whole-run times are noisy; the ``fit`` column is the direct measurement.
The verdicts of the other checks must be the same in both runs; a difference makes the exit code 1.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

BUDGET_S = 20.0


def _targets(specs: list[str]) -> list[tuple[str, Any]]:
    from ddspec.conformance.loader import default_target_specs, load

    return [(spec, load(spec).sampler) for spec in (specs or default_target_specs())]


def _run(sampler: Any, label: str, profile: str, dtype: str, with_fit: bool) -> tuple[float, float, dict[str, str]]:
    """(wall seconds of the whole run, seconds of the coefficients family, verdicts of the other checks)."""
    from ddspec.conformance.checks import ALL_CHECKS, coefficients
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks

    checks = [c for c in ALL_CHECKS if with_fit or c not in coefficients.CHECKS]
    t0 = time.perf_counter()
    ctx = CheckContext(sampler, profile=profile, dtype=dtype)
    report = run_checks(sampler, ctx, checks, target=label)
    wall = time.perf_counter() - t0
    fit_s = sum(r.duration_s for r in report.checks if r.family == "coefficients")
    return wall, fit_s, {r.name: r.verdict.value for r in report.checks if r.family != "coefficients"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET")
    parser.add_argument("--profile", default="default", choices=("quick", "default", "thorough"))
    parser.add_argument("--dtype", default="float32", choices=("float64", "float32", "float16", "bfloat16"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    status = 0
    print(f"profile {args.profile}, dtype {args.dtype}, {args.repeat} repeats (median); budget {BUDGET_S:g} s per target")
    print(f"{'target':58s} {'without':>8s} {'with':>8s} {'ratio':>6s} {'fit':>6s} {'share':>6s}  budget")
    for label, sampler in _targets(args.targets):
        without, with_, fits = [], [], []
        verdicts: list[dict[str, str]] = []
        _run(sampler, label, "quick", args.dtype, with_fit=True)  # warm caches (tables, imports) before timing
        for i in range(args.repeat):
            if i % 2 == 0:
                w, _, v0 = _run(sampler, label, args.profile, args.dtype, with_fit=False)
                t, f, v1 = _run(sampler, label, args.profile, args.dtype, with_fit=True)
            else:
                t, f, v1 = _run(sampler, label, args.profile, args.dtype, with_fit=True)
                w, _, v0 = _run(sampler, label, args.profile, args.dtype, with_fit=False)
            without.append(w)
            with_.append(t)
            fits.append(f)
            verdicts += [v0, v1]
        a, b, f = statistics.median(without), statistics.median(with_), statistics.median(fits)
        ok = "ok" if b <= BUDGET_S else "OVER"
        print(f"{label[:58]:58s} {a:8.2f} {b:8.2f} {b / a:6.3f} {f:6.2f} {f / b:6.1%}  {ok}")
        if any(v != verdicts[0] for v in verdicts):
            print(f"  verdicts of the other checks differ between runs: {label}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
