r"""Measure the false-failure (flake) rates of the statistical sampling identities at a large α.

At the α of the test run (1e-8 per identity) no failure would ever be seen; this script runs the
*same* identities of ``tests/stats/test_sampling_identities.py`` (``IDENTITIES``: the same draws,
the same sample sizes, the same ``Identity.check(sample, alpha)``) at large α (default 0.01 and
0.05) over many fresh seeds, and compares the observed failure rate with the rate the test should
have. For every seed the samples are drawn once and checked at every α.

Rows: one per test of an identity (the ``StatResult`` s of ``check``) and one for the identity as a
whole ("any": it fails when any of its tests fails), at each α. The α of a row is that test's share
(α/2 for the moments and DKW tests of a one-sample identity, α/3 for each two-sample test). The
**reference** rate is

* exact, where the test's level is exact: the moments test (mean and variance part, α/4 each,
  Bonferroni over d independent coordinates, mean and variance independent for Gaussian draws):
  1 − (1 − α_row/(2d))^{2d}; the two-sample z- and F-tests: 1 − (1 − α_row/d)^d;
* exact for the one-sample DKW test too (the Kolmogorov distribution, ``scipy.stats.kstwo``, at
  Massart's critical value): 1 − (1 − P(D_n > ε(n, α_row/d)))^d, below α_row (DKW is conservative);
* "≈", the asymptotic Kolmogorov level (``scipy.stats.kstwobign``) for the two-sample DKW test,
  whose critical value is a sum of two one-sample bands (level well below α_row);
* "≤ α" for the identity as a whole (its tests share the draws, so only the union bound holds).

Each row reports the failures among the seeds, the observed rate with its exact (Clopper–Pearson)
95 % interval, and the two-sided binomial p-value of the count under the exact/approximate
reference rate (for "≤" rows: the one-sided p-value of seeing at least that many failures at the
bound). With ~80 rows, a few rows outside their 95 % interval are expected by chance; a real
miscalibration shows as a tiny p-value.

Usage (from the repository root)::

    .venv/bin/python benchmarks/measure_flake_rates.py --seeds 1000 --alphas 0.01 0.05 --workers 2

Seeds are fresh by default (a random base seed, printed); ``--base-seed`` reproduces a run. Each
failing (identity, seed, α) is listed, so that it can be replayed with
``IDENTITIES[k].run(seed, alpha)``. ``--markdown`` prints the table for docs/statistics.md.

Conformance distribution checks: when ``ddspec.conformance.checks.distribution`` exists (and
``--no-conformance`` is not given), its two checks (``check_step_moments``,
``check_run_output_distribution``) are also run on the bundled torch port
(``ddspec.conformance.torch_port.make_reference_port()``: DDIM, and ``family="ddpm"``), float64 on
the CPU, profile ``--conformance-profile`` (default ``quick``), one fresh ``CheckContext.seed`` per
replication, at ``--conformance-alpha`` (default 0.05; the profile's ``false_failure_rate`` is
replaced for the measurement). Each check result is a row; its reference is "≤ α" (the checks
widen their tests by the rounding allowance, so their level is below α).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import math
import os
import platform
import secrets
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ddspec.conformance import stats as S  # noqa: E402
from tests.stats import test_sampling_identities as M  # noqa: E402

CHUNK = 20  # seeds per task


# ---------------------------------------------------------------------------------------------------
# Reference rates
# ---------------------------------------------------------------------------------------------------


def part_rows(ident: M.Identity, alpha: float) -> list[tuple[str, float, float, str]]:
    r"""(test label, α of the test, reference rate, relation) for each test of ``ident`` at total ``alpha``.

    relation: "=" exact, "≈" asymptotic, "≤" a bound.
    """
    n, d = ident.n, ident.law.mean.size
    if not ident.two_sample:
        a = alpha / 2
        moments = 1.0 - (1.0 - a / (2 * d)) ** (2 * d)
        ks = float(sps.kstwo(n).sf(S.dkw_epsilon(n, a / d)))
        dkw = 1.0 - (1.0 - ks) ** d
        return [("moments", a, moments, "="), ("dkw", a, dkw, "=")]
    a = alpha / 3
    z = 1.0 - (1.0 - a / d) ** d
    eps2 = S.two_sample_dkw_epsilon(n, n, a / d)
    ks2 = float(sps.kstwobign.sf(eps2 * math.sqrt(n * n / (2 * n))))
    return [
        ("two_sample_mean", a, z, "="),
        ("two_sample_variance", a, z, "="),
        ("two_sample_dkw", a, 1.0 - (1.0 - ks2) ** d, "≈"),
    ]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    r"""Exact binomial confidence interval: Beta quantiles (Clopper & Pearson 1934)."""
    q = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(sps.beta.ppf(q, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1.0 - q, k + 1, n - k))
    return lo, hi


def binomial_p(k: int, n: int, rate: float, relation: str) -> float:
    if relation == "≤":
        return float(sps.binom.sf(k - 1, n, rate))  # P(X >= k) at the bound
    return float(sps.binomtest(k, n, rate).pvalue)


# ---------------------------------------------------------------------------------------------------
# Work
# ---------------------------------------------------------------------------------------------------


_PORTS: dict[str, object] = {}


def _run_conformance_chunk(
    task: tuple[str, list[int], float, str],
) -> tuple[str, dict[str, list[int]], list[tuple[int, float, str]]]:
    """Run the conformance distribution checks on a bundled port per seed; count (runs, failures) per result."""
    import dataclasses

    import torch

    from ddspec.conformance import context as C
    from ddspec.conformance.checks import distribution as D
    from ddspec.conformance.torch_port import make_reference_port

    torch.set_num_threads(1)
    family, seeds, alpha, profile = task
    if family not in _PORTS:
        _PORTS[family] = make_reference_port(family=family)
    tally: dict[str, list[int]] = {}
    failures: list[tuple[int, float, str]] = []
    for seed in seeds:
        ctx = C.CheckContext(_PORTS[family], device="cpu", dtype="float64", profile=profile, seed=seed)
        # the measurement raises the profile's per-check false-failure rate (a frozen Profile: replaced)
        ctx._settings = dataclasses.replace(ctx._settings, false_failure_rate=alpha)
        for result in D.check_step_moments(ctx) + D.check_run_output_distribution(ctx):
            verdict = str(result.verdict)
            if verdict not in ("pass", "fail"):
                raise RuntimeError(f"{result.name}: verdict {verdict!r} ({result.message}) at seed {seed}")
            runs_fails = tally.setdefault(result.name, [0, 0])
            runs_fails[0] += 1
            runs_fails[1] += verdict == "fail"
            if verdict == "fail":
                failures.append((seed, alpha, f"{family}:{result.name}"))
    return family, tally, failures


def _run_chunk(task: tuple[int, list[int], tuple[float, ...]]) -> tuple[int, np.ndarray, list[tuple[int, float, str]]]:
    """Draw once per seed, check at every α; count failures per (α, test) and list the failing seeds."""
    k, seeds, alphas = task
    ident = M.IDENTITIES[k]
    n_parts = 3 if ident.two_sample else 2
    counts = np.zeros((len(alphas), n_parts + 1), dtype=np.int64)  # last column: any test failed
    failures: list[tuple[int, float, str]] = []
    for seed in seeds:
        sample = ident.draw(np.random.default_rng(seed))
        for i, alpha in enumerate(alphas):
            results = ident.check(sample, alpha)
            failed = [not r.passed for r in results]
            counts[i, :n_parts] += failed
            counts[i, n_parts] += any(failed)
            failures += [(seed, alpha, r.name) for r in results if not r.passed]
    return k, counts, failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000, help="fresh seeds per identity (default 1000)")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.05], help="total α per identity")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--base-seed", type=int, default=None, help="reproduce a run (default: fresh)")
    ap.add_argument("--only", type=str, default=None, help="run only identities whose name contains this")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--no-conformance", action="store_true", help="skip the conformance distribution checks")
    ap.add_argument("--conformance-alpha", type=float, default=0.05, help="α of each conformance check (default 0.05)")
    ap.add_argument("--conformance-profile", default="quick", help="conformance profile (default quick)")
    args = ap.parse_args()
    if args.seeds < 1:
        raise SystemExit(f"--seeds={args.seeds}: must be >= 1")
    for a in args.alphas:
        if not 0.0 < a < 1.0:
            raise SystemExit(f"--alphas: {a} is not in (0, 1)")
    alphas = tuple(args.alphas)
    base = secrets.randbits(63) if args.base_seed is None else args.base_seed
    chosen = [k for k, ident in enumerate(M.IDENTITIES) if args.only is None or args.only in ident.name]

    tasks = []
    for k in chosen:
        # independent 64-bit seeds per identity, from the base seed (SeedSequence spawn keys)
        seeds = [int(s) for s in np.random.SeedSequence(base, spawn_key=(k,)).generate_state(args.seeds, dtype=np.uint64)]
        tasks += [(k, seeds[i : i + CHUNK], alphas) for i in range(0, len(seeds), CHUNK)]

    dist_spec = importlib.util.find_spec("ddspec.conformance.checks.distribution")
    conformance = dist_spec is not None and not args.no_conformance and args.only is None
    conf_tasks = []
    if conformance:
        for i, family in enumerate(("ddim", "ddpm")):
            seeds = [int(s) % 2**62 for s in
                     np.random.SeedSequence(base, spawn_key=(1000 + i,)).generate_state(args.seeds, dtype=np.uint64)]
            conf_tasks += [(family, seeds[j : j + CHUNK], args.conformance_alpha, args.conformance_profile)
                           for j in range(0, len(seeds), CHUNK)]
    print(f"base seed {base}; {len(chosen)} identities x {args.seeds} seeds at alphas {alphas}; "
          f"{args.workers} workers; conformance.checks.distribution "
          f"{'absent' if dist_spec is None else ('run' if conformance else 'skipped')}", file=sys.stderr)

    totals = {k: None for k in chosen}
    failures: list[tuple[int, float, str]] = []
    t0 = time.perf_counter()
    done = 0
    conf_tally: dict[tuple[str, str], list[int]] = {}
    n_chunks = len(tasks) + len(conf_tasks)
    with Pool(args.workers) as pool:
        for k, counts, fails in pool.imap_unordered(_run_chunk, tasks):
            totals[k] = counts if totals[k] is None else totals[k] + counts
            failures += fails
            done += 1
            if done % 20 == 0 or done == n_chunks:
                print(f"  {done}/{n_chunks} chunks, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for family, tally, fails in pool.imap_unordered(_run_conformance_chunk, conf_tasks):
            for name, (runs, nf) in tally.items():
                acc = conf_tally.setdefault((family, name), [0, 0])
                acc[0] += runs
                acc[1] += nf
            failures += fails
            done += 1
            if done % 20 == 0 or done == n_chunks:
                print(f"  {done}/{n_chunks} chunks, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    wall = time.perf_counter() - t0

    header = ("test", "α (test)", "seeds", "failures", "observed rate", "95 % CI (Clopper–Pearson)",
              "reference rate", "binomial p")
    rows = []
    stats_rows: list[tuple[float, float, float, str, float]] = []  # (lo, hi, reference, relation, p) per row
    for k in chosen:
        ident = M.IDENTITIES[k]
        counts = totals[k]
        for i, alpha in enumerate(alphas):
            parts = part_rows(ident, alpha) + [("any", alpha, alpha, "≤")]
            for j, (label, a_part, ref, rel) in enumerate(parts):
                f = int(counts[i, j])
                lo, hi = clopper_pearson(f, args.seeds)
                p = binomial_p(f, args.seeds, ref, rel)
                stats_rows.append((lo, hi, ref, rel, p))
                rows.append((
                    f"{ident.name}/{label}", f"{a_part:.4g}", str(args.seeds), str(f), f"{f / args.seeds:.4f}",
                    f"[{lo:.4f}, {hi:.4f}]", f"{rel} {ref:.4g}", f"{p:.3g}",
                ))
    for (family, name), (runs, nf) in sorted(conf_tally.items()):
        lo, hi = clopper_pearson(nf, runs)
        a = args.conformance_alpha
        stats_rows.append((lo, hi, a, "≤", binomial_p(nf, runs, a, "≤")))
        rows.append((
            f"conformance ({args.conformance_profile}, float64, {family} port): {name}", f"{a:.4g}", str(runs), str(nf),
            f"{nf / runs:.4f}", f"[{lo:.4f}, {hi:.4f}]", f"≤ {a:.4g}", f"{binomial_p(nf, runs, a, '≤'):.3g}",
        ))
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    exact = [(lo, hi, ref) for lo, hi, ref, rel, _ in stats_rows if rel != "≤"]
    outside = sum(1 for lo, hi, ref in exact if not lo <= ref <= hi)
    above = sum(1 for lo, _, ref, rel, _ in stats_rows if rel == "≤" and lo > ref)
    print(f"\n{len(rows)} rows; {outside} of {len(exact)} exact/approximate reference rates outside their 95 % CI; "
          f"{above} bounded rows with the CI above the bound; smallest binomial p "
          f"{min(p for *_, p in stats_rows):.3g}", file=sys.stderr)
    print(f"date {_dt.date.today().isoformat()}, {platform.node() or 'unknown host'} "
          f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), python {platform.python_version()}, "
          f"numpy {np.__version__}; wall {wall:.0f} s; base seed {base}", file=sys.stderr)
    if failures:
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddspec_flake_failures_{base}.txt"
        path.write_text("".join(f"{name}\t{alpha}\t{seed}\n" for seed, alpha, name in failures))
        print(f"{len(failures)} failing (test, alpha, seed) listed in {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
