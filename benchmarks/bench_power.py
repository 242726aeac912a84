"""Benchmark: statistical power per second of ``distribution.step_moments``, today's design vs the new one.

Usage::

    python benchmarks/bench_power.py [--repeat 5]

One tested step (the bundled port, DDIM η = 1, t = 480 -> 460 of the default profile's N = 50 run,
float64, the port's own noise from a generator), measured in one process for two designs:

* ``before``: n = 8 192 draws of d = 192 elements, a z-test and a χ² test **per element** (Bonferroni
  over the d elements and over 2 tests x 2 stochastic steps: α_c = α/(4d));
* ``after``: n = 16 384 draws, the elements pooled after standardising each by its reference law: one
  common-mean z-test, one χ² test with d(n − 1) dof and one χ²_d test of the element means
  (α/(3 x 2 stochastic steps) each).

For each it reports the median wall time of one tested step (the target's call plus the tests),
the power against a 1 % standard-deviation error and a common mean shift of 1 % of σ at
α = 1e-6 (closed forms, Gaussian draws, no rounding allowance: the port's float64 allowance is
below 1e-9 σ), the power per second, and the ratios after/before. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from scipy import stats as sps

ALPHA = 1e-6
SHAPE = (3, 8, 8)
STOCHASTIC_STEPS = 2
EPS = 0.01


def _draws(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """n draws of one port step from a fixed x_t, with the reference mean and variance, and the call time."""
    from ddspec.conformance.torch_port import make_reference_port
    from ddspec.reference import sampling

    port = make_reference_port()
    betas = np.asarray(port.betas(), dtype=np.float64)
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn((1,) + SHAPE, generator=g, dtype=torch.float64)
    eps1 = torch.randn((1,) + SHAPE, generator=g, dtype=torch.float64)
    t0 = time.perf_counter()
    out = port.step(eps1.expand((n,) + SHAPE), 480, x1.expand((n,) + SHAPE), num_steps=50, eta=1.0,
                    generator=torch.Generator().manual_seed(1))
    draws = out.reshape(n, -1).numpy()
    elapsed = time.perf_counter() - t0
    ref = sampling.ddim_step(eps1.numpy()[0], 480, 460, x1.numpy()[0], betas, eta=1.0, noise=np.zeros(SHAPE))
    mu = np.asarray(ref.mean).reshape(-1)
    var = np.broadcast_to(np.asarray(ref.variance, dtype=np.float64), SHAPE).reshape(-1)
    return draws, mu, var, elapsed


def _before(draws: np.ndarray, mu: np.ndarray, var: np.ndarray) -> None:
    from ddspec.conformance import stats

    a = ALPHA / (2 * STOCHASTIC_STEPS)
    stats.mean_test(draws, mu, var, a)
    stats.variance_test(draws, var, a)


def _after(draws: np.ndarray, mu: np.ndarray, var: np.ndarray) -> None:
    from ddspec.conformance import stats

    a = ALPHA / (3 * STOCHASTIC_STEPS)
    stats.pooled_mean_test(draws, mu, var, a)
    stats.pooled_variance_test(draws, var, a)
    stats.mean_pattern_test(draws, mu, var, a)


def _power_before(n: int, d: int) -> tuple[float, float]:
    """(std-error power, mean-shift power): any of d per-element tests at alpha/(4d) rejects."""
    a_c = ALPHA / (2 * STOCHASTIC_STEPS) / d
    z = sps.norm.isf(a_c / 2)
    p_mean = sps.norm.sf(z - math.sqrt(n) * EPS) + sps.norm.cdf(-z - math.sqrt(n) * EPS)
    k = n - 1
    r = (1 + EPS) ** 2
    p_var = sps.chi2.sf(sps.chi2.isf(a_c / 2, k) / r, k) + sps.chi2.cdf(sps.chi2.ppf(a_c / 2, k) / r, k)
    return 1 - (1 - p_var) ** d, 1 - (1 - p_mean) ** d


def _power_after(n: int, d: int) -> tuple[float, float]:
    """(std-error power, mean-shift power) of the pooled tests at alpha/6 each."""
    a_c = ALPHA / (3 * STOCHASTIC_STEPS)
    z = sps.norm.isf(a_c / 2)
    root_n = math.sqrt(n * d)
    p_mean = sps.norm.sf(z - root_n * EPS) + sps.norm.cdf(-z - root_n * EPS)
    k = d * (n - 1)
    r = (1 + EPS) ** 2
    p_var = sps.chi2.sf(sps.chi2.isf(a_c / 2, k) / r, k) + sps.chi2.cdf(sps.chi2.ppf(a_c / 2, k) / r, k)
    return float(p_var), float(p_mean)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    d = math.prod(SHAPE)
    rows = {}
    for label, n, tests, power in (("before", 8_192, _before, _power_before), ("after", 16_384, _after, _power_after)):
        times = []
        for _ in range(args.repeat):
            draws, mu, var, t_call = _draws(n)
            t0 = time.perf_counter()
            tests(draws, mu, var)
            times.append(t_call + time.perf_counter() - t0)
        sec = statistics.median(times)
        p_std, p_mean = power(n, d)
        rows[label] = (n, sec, p_std, p_mean)
    print(f"one tested step, {d} elements, alpha {ALPHA:g} per check; power against a {EPS:.0%} std error / "
          f"a {EPS:.0%}-of-sigma common mean shift")
    print(f"{'design':<7} {'draws':>7} {'median s':>9} {'power std':>10} {'power mean':>11} "
          f"{'std power/s':>12} {'mean power/s':>13}")
    for label, (n, sec, p_std, p_mean) in rows.items():
        print(f"{label:<7} {n:>7} {sec:>9.3f} {p_std:>10.4g} {p_mean:>11.4g} {p_std / sec:>12.4g} {p_mean / sec:>13.4g}")
    (_, s0, v0, m0), (_, s1, v1, m1) = rows["before"], rows["after"]
    print(f"ratios after/before: time {s1 / s0:.3g}, std power per second {(v1 / s1) / (v0 / s0):.3g}, "
          f"mean power per second {(m1 / s1) / (m0 / s0):.3g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
