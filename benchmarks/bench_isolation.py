"""Benchmark: what running the target in a supervised worker process costs, against ``--in-process``.

Usage::

    python benchmarks/bench_isolation.py [TARGET ...] [--profile default] [--repeat 3]

TARGETs default to the bundled reference port and diffusers' ``DDIMScheduler``/``DDPMScheduler``.
For each target the script runs every installed check in both modes, alternating (in-process,
isolated, in-process, ...) so that both see the same machine load, ``--repeat`` times, and reports
the median wall times, the added seconds (isolated − in-process; the budget of issue 15 is ≤ 1 s per
target on a CPU in the default profile), their ratio, and the number of calls into the target and of
worker (re)starts. Both modes must give the same verdicts; a difference is printed and makes the exit
code 1.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

BUDGET_S = 1.0


def _targets(specs: list[str]) -> list[tuple[str, Any]]:
    from ddspec.conformance.loader import default_target_specs, load

    return [(spec, load(spec).sampler) for spec in (specs or default_target_specs())]


def _run(sampler: Any, label: str, profile: str, isolated: bool) -> tuple[float, dict[str, str], int, int]:
    """(wall seconds, verdicts by name, calls into the target, worker restarts)."""
    from ddspec.conformance.checks import ALL_CHECKS
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.runner import run_checks
    from ddspec.conformance.sandbox import WorkerSampler, isolate

    t0 = time.perf_counter()
    target = isolate(sampler) if isolated else sampler
    try:
        ctx = CheckContext(target, profile=profile)
        report = run_checks(target, ctx, ALL_CHECKS, target=label)
        calls = ctx.state_log.calls
    finally:
        restarts = target.restarts if isinstance(target, WorkerSampler) else 0
        if isinstance(target, WorkerSampler):
            target.close()
    return time.perf_counter() - t0, {r.name: r.verdict.value for r in report.checks}, calls, restarts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET")
    parser.add_argument("--profile", default="default", choices=("quick", "default", "thorough"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    code = 0
    print(f"profile {args.profile}, {args.repeat} repeats per mode, alternating; budget: isolated - in-process "
          f"<= {BUDGET_S:g} s per target")
    print(f"{'target':42s} {'in-process':>10s} {'isolated':>9s} {'added':>7s} {'ratio':>6s} {'calls':>6s} "
          f"{'restarts':>8s}")
    for label, sampler in _targets(args.targets):
        local: list[float] = []
        remote: list[float] = []
        verdicts: dict[bool, dict[str, str]] = {}
        calls = restarts = 0
        for _ in range(args.repeat):
            for isolated in (False, True):
                seconds, verdicts[isolated], n, r = _run(sampler, label, args.profile, isolated)
                (remote if isolated else local).append(seconds)
                if isolated:
                    calls, restarts = n, r
        a, b = statistics.median(local), statistics.median(remote)
        flag = "" if b - a <= BUDGET_S else "  OVER BUDGET"
        print(f"{label:42s} {a:9.2f}s {b:8.2f}s {b - a:+6.2f}s {b / a:6.3f} {calls:6d} {restarts:8d}{flag}")
        if verdicts[False] != verdicts[True]:
            code = 1
            for name in sorted(set(verdicts[False]) | set(verdicts[True])):
                if verdicts[False].get(name) != verdicts[True].get(name):
                    print(f"    verdicts differ: {name}: in-process {verdicts[False].get(name)}, "
                          f"isolated {verdicts[True].get(name)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
