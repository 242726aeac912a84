"""Benchmark: what the diagnosis adds to a failing run, and to a passing run, as ratios in one run.

Usage::

    python benchmarks/bench_diagnosis.py [--profile default] [--dtype float32] [--repeat 3]

For each target it runs every installed check ``--repeat`` times and times the checks and the
diagnosis of their report separately (what ``run_checks(..., diagnose=True)`` does: the checks, then
the diagnosis when something failed), and prints the median times and the ratio
(checks + diagnosis) / checks. The budget (issue 10 §5) is a ratio ≤ 1.25 for a failing target and 1.00 for a passing one,
where the diagnosis never runs. Failing targets: planted bugs of ``tests/quality/zoo.py`` (step) and
``tests/quality/loops.py`` (loop); passing: the bundled reference port and the plain DDIM loop.

Nothing here is a test: timings are never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

BUDGET_FAILING = 1.25
BUDGET_PASSING = 1.00


def _targets() -> list[tuple[str, bool, Callable[[], Any]]]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from ddspec.conformance.torch_port import make_reference_port
    from tests.quality import loops, zoo

    bugs = {e.name: e.factory for e in zoo.ZOO}
    loop_bugs = {c.name: c.factory for c in loops.BUGS}
    return [
        ("ddim_final_alpha_bar_not_one (step, diffusers)", True, bugs["ddim_final_alpha_bar_not_one"]),
        ("ddpm_beta_for_beta_tilde (step, diffusers)", True, bugs["ddpm_beta_for_beta_tilde"]),
        ("ddim_sigma_not_squared (step, hand-written)", True, bugs["ddim_sigma_not_squared"]),
        ("alpha_prev_at_t_minus_1 (loop)", True, loop_bugs["alpha_prev_at_t_minus_1"]),
        ("noise_reused (loop)", True, loop_bugs["noise_reused"]),
        ("reference port (step, passing)", False, make_reference_port),
        ("plain DDIM loop (passing)", False, dict((c.name, c.factory) for c in loops.CONTROLS)["plain_ddim"]),
    ]


def _time(factory: Callable[[], Any], profile: str, dtype: str) -> tuple[float, float, Any]:
    r"""(seconds of the checks, seconds of the diagnosis of their report, the report).

    ``run_checks(..., diagnose=True)`` is exactly the checks followed by ``diagnose(report, context)``
    when something failed, and the checks alone otherwise; timing the two parts of one run, rather
    than two separate runs, keeps the ratio steady on a loaded machine.
    """
    from ddspec.conformance.adapters import adapt
    from ddspec.conformance.context import CheckContext
    from ddspec.conformance.diagnosis import diagnose
    from ddspec.conformance.results import Verdict
    from ddspec.conformance.runner import installed_checks, run_checks

    sampler = adapt(factory())
    ctx = CheckContext(sampler, dtype=dtype, profile=profile)
    start = time.perf_counter()
    report = run_checks(sampler, ctx, installed_checks(), diagnose=False)
    checks_s = time.perf_counter() - start
    start = time.perf_counter()
    found = diagnose(report, ctx) if report.by_verdict(Verdict.FAIL) else ()  # run_checks' own rule
    return checks_s, time.perf_counter() - start, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default", choices=("quick", "default", "thorough"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for label, failing, factory in _targets():
        checks, diag = [], []
        top = "-"
        for _ in range(args.repeat):
            c, d, found = _time(factory, args.profile, args.dtype)
            checks.append(c)
            diag.append(d)
            top = next((x.pattern or "no known pattern" for x in found), "-")
        m_c, m_d = statistics.median(checks), statistics.median(diag)
        budget = BUDGET_FAILING if failing else BUDGET_PASSING
        rows.append((label, m_c, m_d, (m_c + m_d) / m_c, budget, top))
    width = max(len(r[0]) for r in rows)
    print(f"profile={args.profile} dtype={args.dtype} repeat={args.repeat} (median wall time)")
    print(f"{'target':<{width}}  {'checks':>8}  {'diagnosis':>9}  {'ratio':>6}  {'budget':>6}  top diagnosis")
    for label, a, b, r, budget, top in rows:
        print(f"{label:<{width}}  {a:>7.2f}s  {b:>8.3f}s  {r:>6.3f}  {budget:>6.2f}  {top}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
