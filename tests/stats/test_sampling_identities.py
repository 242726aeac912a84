r"""Sampling identities of DDPM and DDIM, tested by sampling, with a stated error budget.

Each **identity** is a sampler (or a chain of forward steps) whose output law is known in closed
form; the test draws ``n`` outputs as one vectorised ``(n, d)`` batch and tests them against that
law with :mod:`ddspec.conformance.stats`:

* forward chain: ``t`` single steps :math:`q(x_s \mid x_{s-1})` (``forward.q_step``, fresh noise each
  step) from a fixed x₀ give :math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)I)`
  (Ho et al. 2020, eqs. 2 and 4), for the papers' t = 1, 10, 500 on the linear schedule (T = 1000);
* posterior step: one ``sampling.ddpm_step`` (``fixed_small``) fed the true ε of a fixed x_t (so
  x̂₀ = x₀, a point-mass denoiser) samples :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`
  (eqs. 6–7; ``posterior.q_posterior``), also for a strided step (Nichol & Dhariwal 2021, §4);
* full runs with the exact Gaussian denoiser (``oracles.IsotropicGaussian``, d = 3): a full DDPM run
  (``ddpm_sample_loop``, T = 50, improved-diffusion's linear schedule) and DDIM runs with
  η ∈ {0, 0.5, 1} (``ddim_sample_loop`` on the 10-step uniform subsequence of T = 1000) output the
  Gaussian of ``oracles.gaussian_run_output`` (η = 0 is deterministic given x_T ~ N(0, I), so its
  output is still Gaussian);
* DDIM with η = 1 and DDPM on the full schedule (T = 50) have the same output law (Song et al. 2021,
  §4.1: σ(η = 1) is the DDPM posterior variance), checked by two-sample tests on independent runs.

**Error budget.** The whole run has a false-failure budget of 1e-6 (``stats.LEDGER``). Each identity
here has ``ALPHA = 1e-8``, split evenly over its tests: a one-sample identity runs
``gaussian_moments_test`` (mean and variance, α/4 each) and ``dkw_cdf_test`` (α/2); the two-sample
identity runs ``two_sample_mean_test`` (known variances), ``two_sample_variance_test`` and
``two_sample_dkw_test`` at α/3 each. 12 identities: 1.2e-7. Each power test below may fail by chance
only by *missing* its planted discrepancy; that probability is bounded (exactly, or by the stats
module's power guarantee) by ``MISS = 5e-9`` and allocated as such: 12 power tests, 6e-8. This
file: 1.8e-7 of the 1e-6 budget. Every result is recorded in the ledger under a unique name; a
failing identity never retries.

**Seeds.** ``stats.seed_for(<identity name>)``: fixed (crc32 of the name), fresh with
``DDSPEC_FRESH_SEEDS=1``. ``benchmarks/measure_flake_rates.py`` runs the same identities
(``IDENTITIES``; ``Identity.draw`` then ``Identity.check(sample, alpha)``) over ≥ 1000 fresh seeds at
α = 0.01 and 0.05 and compares the observed failure rate with α (``docs/statistics.md``).

**Power tests** (same file, also ``statistical``): each identity family must reject a sampler with a
planted bug, e.g. forward steps with sqrt(β) missing, DDPM with ``fixed_large`` instead of
``fixed_small``, DDIM with σ² used as σ, and planted discrepancies of the documented min-detectable
size. A discrepancy of exactly the documented size (power 0.999) would be missed once in a thousand
runs, far above any share of the budget, so the planted sizes are the min-detectable sizes at power
1 − MISS (about 1.2–1.3× the documented ones at power 0.999); every realistic bug's discrepancy is
computed in closed form and its miss probability is asserted to be ≤ MISS before the test runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats as sps

from ddspec.conformance import stats as S
from ddspec.reference import alphas, ddim, forward, oracles, posterior, sampling, schedules
from ddspec.reference import timesteps as timesteps_mod
from ddspec.reference.gaussian import Gaussian

pytestmark = pytest.mark.statistical

Array = NDArray[np.float64]

ALPHA = 1e-8  # false-failure rate of one identity, split evenly over its tests
MISS = 5e-9  # allotted probability that a power test misses its planted discrepancy

BETAS_1000 = schedules.linear_betas(1000)  # Ho et al. 2020: 1e-4 .. 0.02, T = 1000
BETAS_50 = schedules.improved_linear_betas(50)  # the same end points scaled by 1000/50
FULL_50 = np.arange(49, -1, -1)  # every step of T = 50, sampling order
DDIM_10 = np.asarray(timesteps_mod.uniform_timesteps(1000, 10))  # [900, 800, ..., 0]

X0_FORWARD = np.array([1.5, -0.5])
N_FORWARD = 10_000  # the t = 500 chain draws 500 * n * d normals
X0_POSTERIOR = np.array([0.8, -1.2, 0.3])
EPS_POSTERIOR = np.array([0.5, -1.0, 1.5])  # the ε that makes x_t from x0 (fixed)
ORACLE = oracles.IsotropicGaussian(np.array([0.5, -1.0, 2.0]), np.array([0.25, 1.0, 0.04]))
N = 20_000

# Minimum detectable discrepancies at power 0.999 quoted in the docstrings, by (n, d):
# (mean shift in units of the null σ, variance ratio ρ (detected outside [1/ρ, ρ]), sup|ΔF|).
# test_documented_min_detectable re-derives them from stats.min_detectable.
DOCUMENTED = {
    (N_FORWARD, 2): (0.092, 1.139, 0.051),
    (N, 3): (0.065, 1.097, 0.036),
}
DOCUMENTED_TWO_SAMPLE = (0.092, 1.139, 0.065)  # n = m = 20000, d = 3: |Δmean|/σ, F ratio, sup|ΔF|


# ---------------------------------------------------------------------------------------------------
# Identities: a draw (seed -> samples) and a check (samples, alpha -> StatResults)
# ---------------------------------------------------------------------------------------------------


def _variance(law: Gaussian) -> Array:
    return np.broadcast_to(law.variance, law.mean.shape).astype(np.float64)


def one_sample_checks(x: Array, law: Gaussian, alpha: float, name: str) -> tuple[S.StatResult, S.StatResult]:
    r"""Test draws ``x`` (n, d) against the Gaussian ``law``: moments at α/2 (mean α/4, variance α/4), DKW at α/2."""
    var = _variance(law)
    moments = S.gaussian_moments_test(x, law.mean, var, alpha / 2, name=f"{name}/moments")
    sd = np.sqrt(var)
    dkw = S.dkw_cdf_test(x, lambda v: sps.norm.cdf((v - law.mean) / sd), alpha / 2, name=f"{name}/dkw")
    return moments, dkw


def two_sample_checks(
    a: Array, b: Array, law_a: Gaussian, law_b: Gaussian, alpha: float, name: str
) -> tuple[S.StatResult, S.StatResult, S.StatResult]:
    r"""Two-sample tests of equal laws at α/3 each: z-test of means (variances known from the laws), F-test, DKW."""
    mean = S.two_sample_mean_test(
        a, b, alpha / 3, variance_a=_variance(law_a), variance_b=_variance(law_b), name=f"{name}/two_sample_mean"
    )
    var = S.two_sample_variance_test(a, b, alpha / 3, name=f"{name}/two_sample_variance")
    cdf = S.two_sample_dkw_test(a, b, alpha / 3, name=f"{name}/two_sample_dkw")
    return mean, var, cdf


@dataclass(frozen=True)
class Identity:
    r"""A sampler whose output law is known: ``draw(rng)`` gives the samples, ``check`` tests them.

    One-sample identities (``law_b is None``): ``draw`` returns an (n, d) array whose law should be
    ``law``. Two-sample identities: ``draw`` returns a pair (a, b) of independent (n, d) batches whose
    laws should be equal (``law`` and ``law_b`` are their closed forms, used for the known variances
    of the z-test). ``check(sample, alpha)`` runs the same tests at any α (α is the identity's total,
    split evenly over its tests), so that the flake benchmark runs exactly this code at large α.
    """

    name: str
    n: int
    law: Gaussian
    draw: Callable[[np.random.Generator], Any]
    law_b: Gaussian | None = None

    @property
    def two_sample(self) -> bool:
        return self.law_b is not None

    def check(self, sample: Any, alpha: float) -> tuple[S.StatResult, ...]:
        if self.law_b is None:
            return one_sample_checks(sample, self.law, alpha, self.name)
        a, b = sample
        return two_sample_checks(a, b, self.law, self.law_b, alpha, self.name)

    def run(self, seed: int, alpha: float) -> tuple[S.StatResult, ...]:
        return self.check(self.draw(np.random.default_rng(seed)), alpha)

    def planted(self, name: str, plant: Callable[[Array], Array]) -> "Identity":
        """The same identity with ``plant`` applied to its output (sample a for two-sample ones)."""
        if self.law_b is None:
            draw = lambda rng: plant(self.draw(rng))  # noqa: E731
        else:
            def draw(rng: np.random.Generator) -> tuple[Array, Array]:
                a, b = self.draw(rng)
                return plant(a), b
        return Identity(name, self.n, self.law, draw, self.law_b)


# -- forward chain ------------------------------------------------------------------------------------

StepFn = Callable[[Array, int, np.random.Generator], Array]


def _q_step_sample(x: Array, i: int, rng: np.random.Generator) -> Array:
    g = forward.q_step(x, i, BETAS_1000)
    return g.mean + np.sqrt(g.variance) * rng.standard_normal(x.shape)


def forward_chain(t: int, *, step: StepFn = _q_step_sample, name: str | None = None) -> Identity:
    r"""``t`` forward steps (the papers' t; indices 0..t−1) from X0_FORWARD; law q(x_t | x_0) of eq. 4."""
    n, x0 = N_FORWARD, X0_FORWARD

    def draw(rng: np.random.Generator) -> Array:
        x = np.broadcast_to(x0, (n, x0.size)).copy()
        for i in range(t):
            x = step(x, i, rng)
        return x

    law = Gaussian(alphas.sqrt_alpha_bar(BETAS_1000)[t - 1] * x0, alphas.one_minus_alpha_bar(BETAS_1000)[t - 1])
    return Identity(name or f"sampling/forward_chain/t={t}", n, law, draw)


# -- one posterior step -------------------------------------------------------------------------------


def _x_t(t: int) -> Array:
    sa, s1 = alphas.sqrt_alpha_bar(BETAS_1000)[t], alphas.sqrt_one_minus_alpha_bar(BETAS_1000)[t]
    return sa * X0_POSTERIOR + s1 * EPS_POSTERIOR


def posterior_step(
    t: int, t_prev: int | None = None, *, variance_type: str = "fixed_small", name: str | None = None
) -> Identity:
    r"""``ddpm_step`` from the fixed x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε at index t, model output the true ε."""
    n, d = N, X0_POSTERIOR.size
    x_t = _x_t(t)

    def draw(rng: np.random.Generator) -> Array:
        xt = np.broadcast_to(x_t, (n, d))
        eps = np.broadcast_to(EPS_POSTERIOR, (n, d))
        z = rng.standard_normal((n, d))
        return sampling.ddpm_step(eps, t, xt, BETAS_1000, noise=z, t_prev=t_prev, variance_type=variance_type).prev_sample

    law = posterior.q_posterior(X0_POSTERIOR, x_t, t, BETAS_1000, t_prev)
    stride = "" if t_prev is None else f"->{t_prev}"
    return Identity(name or f"sampling/posterior_step/t={t}{stride}", n, law, draw)


# -- full runs with the exact Gaussian denoiser ----------------------------------------------------


def _model(betas: Array) -> Callable[[Array, int], Array]:
    return lambda x, t: ORACLE.eps(x, t, betas)


def _ddpm_draw(betas: Array, ts: Array, variance_type: str, n: int) -> Callable[[np.random.Generator], Array]:
    d = ORACLE.dim

    def draw(rng: np.random.Generator) -> Array:
        x_T = rng.standard_normal((n, d))
        noises: list[Array | None] = [rng.standard_normal((n, d)) for _ in range(ts.size - 1)]
        noises.append(None)  # the final step adds no noise
        traj = sampling.ddpm_sample_loop(_model(betas), x_T, ts, betas, noises=noises, variance_type=variance_type)
        return traj.samples[-1]

    return draw


def _ddim_draw(betas: Array, ts: Array, eta: float, n: int) -> Callable[[np.random.Generator], Array]:
    d = ORACLE.dim
    sigmas = ddim.ddim_sigmas(betas, ts, eta)

    def draw(rng: np.random.Generator) -> Array:
        x_T = rng.standard_normal((n, d))
        noises = [rng.standard_normal((n, d)) if s > 0.0 else None for s in sigmas]
        return sampling.ddim_sample_loop(_model(betas), x_T, ts, betas, eta=eta, noises=noises).samples[-1]

    return draw


def ddpm_run(*, variance_type: str = "fixed_small", name: str | None = None) -> Identity:
    r"""A full DDPM run (T = 50) with the exact Gaussian denoiser; law ``gaussian_run_output(family="ddpm")``."""
    law = oracles.gaussian_run_output(ORACLE, BETAS_50, FULL_50, family="ddpm")
    return Identity(name or "sampling/ddpm_run/T=50", N, law, _ddpm_draw(BETAS_50, FULL_50, variance_type, N))


def ddim_run(eta: float) -> Identity:
    r"""A DDIM run with η on the 10-step uniform subsequence of T = 1000; law ``gaussian_run_output(eta=η)``."""
    law = oracles.gaussian_run_output(ORACLE, BETAS_1000, DDIM_10, family="ddim", eta=eta)
    return Identity(f"sampling/ddim_run/10_of_1000/eta={eta}", N, law, _ddim_draw(BETAS_1000, DDIM_10, eta, N))


def _ddim_sigma_squared_bug_draw(betas: Array, ts: Array, eta: float, n: int) -> Callable[[np.random.Generator], Array]:
    r"""DDIM with the bug "σ² used as σ": each step adds σ²z and uses √(1 − ᾱ_s − σ⁴) (steps called directly)."""
    d = ORACLE.dim
    targets = [int(v) for v in ts[1:]] + [-1]
    sigmas = ddim.ddim_sigmas(betas, ts, eta)

    def draw(rng: np.random.Generator) -> Array:
        x = rng.standard_normal((n, d))
        for t, s, sg in zip((int(v) for v in ts), targets, sigmas):
            z = rng.standard_normal((n, d)) if sg > 0.0 else None
            x = sampling.generalized_step(ORACLE.x0(x, t, betas), ORACLE.eps(x, t, betas), t, s, sg * sg, betas, z)
        return x

    return draw


def ddim_law_with_sigmas(betas: Array, ts: Array, sigmas: Array) -> Gaussian:
    r"""Output law of DDIM eq. 12 with the exact Gaussian denoiser and arbitrary per-step σ, from N(0, I).

    .. math::

        \hat x_0^* = a_0 x + b_0,\ \hat\epsilon^* = a_\epsilon x + b_\epsilon,\quad
        (m, v) \mapsto \big(c_{x_0}(a_0 m + b_0) + c_\epsilon(a_\epsilon m + b_\epsilon),\
        (c_{x_0}a_0 + c_\epsilon a_\epsilon)^2 v + \sigma^2\big)

    with :math:`(c_{x_0}, c_\epsilon)` = ``ddim.ddim_mean_coefficients`` (Song et al. 2021, eq. 12) and
    the affine gains read off the oracle at x = 0 and x = 1 (it is affine per coordinate). Used for a
    planted bug whose σ is not of the form σ(η); with σ = σ(η) it equals ``gaussian_run_output``
    (checked in the power test).
    """
    d = ORACLE.dim
    zero, one = np.zeros(d), np.ones(d)
    m, v = np.zeros(d), np.ones(d)
    targets = [int(x) for x in ts[1:]] + [-1]
    for t, s, sg in zip((int(x) for x in ts), targets, sigmas):
        b0, be = ORACLE.x0(zero, t, betas), ORACLE.eps(zero, t, betas)
        a0, ae = ORACLE.x0(one, t, betas) - b0, ORACLE.eps(one, t, betas) - be
        c_x0, c_eps = ddim.ddim_mean_coefficients(betas, t, s, float(sg))
        m = c_x0 * (a0 * m + b0) + c_eps * (ae * m + be)
        v = (c_x0 * a0 + c_eps * ae) ** 2 * v + float(sg) ** 2
    return Gaussian(m, v)


def ddpm_vs_ddim_eta1(*, ddim_sigma_squared_bug: bool = False, name: str | None = None) -> Identity:
    r"""Independent runs of DDPM (a) and DDIM η = 1 (b) on the full T = 50 schedule: equal laws."""
    ddpm_draw = _ddpm_draw(BETAS_50, FULL_50, "fixed_small", N)
    if ddim_sigma_squared_bug:
        ddim_draw = _ddim_sigma_squared_bug_draw(BETAS_50, FULL_50, 1.0, N)
    else:
        ddim_draw = _ddim_draw(BETAS_50, FULL_50, 1.0, N)

    def draw(rng: np.random.Generator) -> tuple[Array, Array]:
        return ddpm_draw(rng), ddim_draw(rng)

    law_a = oracles.gaussian_run_output(ORACLE, BETAS_50, FULL_50, family="ddpm")
    law_b = oracles.gaussian_run_output(ORACLE, BETAS_50, FULL_50, family="ddim", eta=1.0)
    return Identity(name or "sampling/ddpm_vs_ddim_eta1/T=50", N, law_a, draw, law_b)


FORWARD = [forward_chain(1), forward_chain(10), forward_chain(500)]
POSTERIOR = [posterior_step(1), posterior_step(500), posterior_step(999), posterior_step(999, 899)]
RUNS = [ddpm_run(), ddim_run(0.0), ddim_run(0.5), ddim_run(1.0)]
TWO_SAMPLE = [ddpm_vs_ddim_eta1()]
IDENTITIES: list[Identity] = FORWARD + POSTERIOR + RUNS + TWO_SAMPLE
"""Every identity of this file (the flake benchmark runs these)."""


# ---------------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------------


def _message(r: S.StatResult) -> str:
    return (
        f"{r.name}: statistic {r.statistic:.6g} vs threshold {r.threshold:.6g} "
        f"(p = {r.p_value:.3g}, alpha = {r.false_failure_rate:.3g}, n = {r.n}"
        f"{'' if r.m is None else f', m = {r.m}'}); min detectable {r.describe_min_detectable()} "
        f"at power {r.power}\n{r.detail}"
    )


def _check_identity(identity: Identity) -> None:
    results = identity.run(S.seed_for(identity.name), ALPHA)
    for r in results:
        S.record(r)
    for r in results:
        assert r.passed, _message(r)


def _expect_rejection(result: S.StatResult, miss: float) -> None:
    """A power test: the miss probability bound must be within MISS; the test must reject."""
    assert 0.0 <= miss <= MISS * (1.0 + 1e-6), (
        f"{result.name}: planted discrepancy too small, miss probability {miss:.3g} > {MISS:.3g}"
    )
    S.LEDGER.allocate(result.name, MISS)
    S.record(result)
    assert not result.passed, (
        f"{result.name}: the planted discrepancy went undetected (miss bound {miss:.3g})\n" + _message(result)
    )


def _between(dist: Any, lo: float, hi: float, scale: Array) -> Array:
    """P(lo <= scale * X <= hi) for X ~ dist, computed from both tails (accurate near 0 and 1)."""
    by_cdf = dist.cdf(hi / scale) - dist.cdf(lo / scale)
    by_sf = dist.sf(lo / scale) - dist.sf(hi / scale)
    return np.clip(np.maximum(by_cdf, by_sf), 0.0, 1.0)


def moments_miss(n: int, alpha: float, null: Gaussian, true: Gaussian) -> float:
    r"""Upper bound on P(``gaussian_moments_test`` at level α passes) when the draws are N(true), d coords.

    Per coordinate j, with null (μ, σ²), true (μ', rσ²) and per-part level a = α/(2d):
    :math:`z = \sqrt n(\bar x - \mu)/\sigma \sim \mathcal N(\sqrt n(\mu'-\mu)/\sigma,\ r)` and
    :math:`S = \sum (x - \bar x)^2/\sigma^2 \sim r\,\chi^2_{n-1}`, so the mean part passes with
    probability :math:`P(|z| \le z_{a/2})` and the variance part with
    :math:`P(\chi^2_{n-1;a/2} \le S \le \chi^2_{n-1;1-a/2})`. The joint test passes only if every part
    of every coordinate does, so the minimum of these is an upper bound.
    """
    var0 = _variance(null)
    d = var0.size
    a = alpha / 2 / d
    shift = math.sqrt(n) * (true.mean - null.mean) / np.sqrt(var0)
    r = _variance(true) / var0
    c = float(sps.norm.isf(a / 2))
    miss_mean = _between(sps.norm(loc=shift, scale=np.sqrt(r)), -c, c, np.ones_like(r))
    chi = sps.chi2(n - 1)
    miss_var = _between(chi, float(chi.ppf(a / 2)), float(chi.isf(a / 2)), r)
    return float(min(np.min(miss_mean), np.min(miss_var)))


def two_sample_miss(
    n: int, m: int, alpha: float, null_a: Gaussian, null_b: Gaussian, true_a: Gaussian, true_b: Gaussian
) -> float:
    r"""Upper bound on P(the z-test of means and the F-test, each at α, both pass) for Gaussian draws.

    z-test with known variances (those of the nulls): :math:`z \sim \mathcal N(\Delta/se_0,\ se^2/se_0^2)`;
    F-test: :math:`F \sim r\,F_{n-1,m-1}` with r the true variance ratio; per-coordinate level α/d.
    """
    va0, vb0 = _variance(null_a), _variance(null_b)
    va, vb = _variance(true_a), _variance(true_b)
    d = va0.size
    a = alpha / d
    se0 = np.sqrt(va0 / n + vb0 / m)
    k = np.sqrt(va / n + vb / m) / se0
    c = float(sps.norm.isf(a / 2))
    miss_mean = _between(sps.norm(loc=(true_a.mean - true_b.mean) / se0, scale=k), -c, c, np.ones_like(k))
    f = sps.f(n - 1, m - 1)
    miss_var = _between(f, float(f.ppf(a / 2)), float(f.isf(a / 2)), va / vb)
    return float(min(np.min(miss_mean), np.min(miss_var)))


# ---------------------------------------------------------------------------------------------------
# The identities
# ---------------------------------------------------------------------------------------------------


def test_documented_min_detectable() -> None:
    """The min-detectable sizes quoted in this file's docstrings are those of the tests as run."""
    for (n, d), (mean_sd, ratio, sup) in DOCUMENTED.items():
        assert S.min_detectable(n, ALPHA / 4, S.DEFAULT_POWER, "mean", dims=d) == pytest.approx(mean_sd, abs=5e-4)
        assert S.min_detectable(n, ALPHA / 4, S.DEFAULT_POWER, "variance", dims=d) == pytest.approx(ratio, abs=5e-4)
        assert S.min_detectable(n, ALPHA / 2, S.DEFAULT_POWER, "cdf", dims=d) == pytest.approx(sup, abs=5e-4)
    mean_sd, ratio, sup = DOCUMENTED_TWO_SAMPLE
    assert S.min_detectable(N, ALPHA / 3, S.DEFAULT_POWER, "two_sample_mean", dims=3) == pytest.approx(mean_sd, abs=5e-4)
    assert S.min_detectable(N, ALPHA / 3, S.DEFAULT_POWER, "two_sample_variance", dims=3) == pytest.approx(ratio, abs=5e-4)
    assert S.min_detectable(N, ALPHA / 3, S.DEFAULT_POWER, "two_sample_cdf", dims=3) == pytest.approx(sup, abs=5e-4)
    # the results report the same numbers (the mean in absolute units: times the largest null σ)
    r = one_sample_checks(np.random.default_rng(0).normal(size=(N, 3)), Gaussian(np.zeros(3), np.float64(4.0)), ALPHA, "x")
    assert r[0].min_detectable == pytest.approx(2 * DOCUMENTED[(N, 3)][0], abs=2e-3)
    assert r[0].parts[1].min_detectable == pytest.approx(DOCUMENTED[(N, 3)][1], abs=5e-4)
    assert r[1].min_detectable == pytest.approx(DOCUMENTED[(N, 3)][2], abs=5e-4)


@pytest.mark.parametrize("identity", FORWARD, ids=lambda i: i.name)
def test_forward_chain_gives_q_marginal(identity: Identity) -> None:
    r"""t single forward steps q(x_s | x_{s−1}) from x₀ give q(x_t | x₀) = N(√ᾱ_t x₀, (1 − ᾱ_t) I).

    Ho et al. 2020, eq. 2 iterated vs eq. 4; t = 1, 10, 500 (papers' t) on the linear schedule,
    x₀ = (1.5, −0.5), n = 10 000 chains in one batch. α = 1e-8 (moments 5e-9, DKW 5e-9). Detects a
    mean shift of ≥ 0.092 σ and a variance ratio outside [1/1.139, 1.139] (in any coordinate), and
    a sup-CDF distance ≥ 0.051, each with power 0.999 (σ² = 1 − ᾱ_t, the null variance).
    """
    _check_identity(identity)


@pytest.mark.parametrize("identity", POSTERIOR, ids=lambda i: i.name)
def test_ddpm_step_with_true_eps_samples_the_posterior(identity: Identity) -> None:
    r"""One ``ddpm_step`` (fixed_small) fed the true ε samples q(x_{t−1} | x_t, x₀) = N(μ̃_t, β̃_t I).

    Ho et al. 2020, eqs. 6–7 (``posterior.q_posterior``): with x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε and model
    output ε, x̂₀ = x₀ and the step must be the posterior. Indices 1, 500, 999 and the strided step
    999 → 899 (the posterior of the respaced schedule, Nichol & Dhariwal 2021, §4); n = 20 000, d = 3.
    α = 1e-8. Detects a mean shift of ≥ 0.065 σ and a variance ratio outside [1/1.097, 1.097] and a
    sup-CDF distance ≥ 0.036, with power 0.999 (σ² = β̃_t).
    """
    _check_identity(identity)


@pytest.mark.parametrize("identity", RUNS, ids=lambda i: i.name)
def test_runs_with_exact_gaussian_denoiser_match_closed_form(identity: Identity) -> None:
    r"""DDPM (T = 50) and DDIM η ∈ {0, 0.5, 1} (10 of T = 1000) runs output ``gaussian_run_output``'s law.

    Data N(m, diag(s²)), m = (0.5, −1, 2), s² = (0.25, 1, 0.04), driven by its exact ε* through the
    reference loops (``ddpm_sample_loop``, ``ddim_sample_loop``), x_T ~ N(0, I), n = 20 000. Every step
    is affine in x plus independent Gaussian noise, so the output is exactly Gaussian (also for η = 0,
    deterministic given x_T). α = 1e-8. Detects a mean shift of ≥ 0.065 σ, a variance ratio outside
    [1/1.097, 1.097] and a sup-CDF distance ≥ 0.036, with power 0.999 (σ the output law's). Note that
    the output laws of different η are close with the exact denoiser (η = 0 vs 0.5: variance ratio
    ≈ 1.04, undetected; η = 0 vs 1: ≈ 1.26, detected), see ``test_power_ddim_sigma_squared_as_sigma``.
    """
    _check_identity(identity)


@pytest.mark.parametrize("identity", TWO_SAMPLE, ids=lambda i: i.name)
def test_ddim_eta1_and_ddpm_have_the_same_law(identity: Identity) -> None:
    r"""DDIM with η = 1 and DDPM (fixed_small) on the full T = 50 schedule: same output law.

    Song et al. 2021, §4.1 (σ_t(1)² = β̃_t makes eq. 12 the DDPM posterior step). Independent noise,
    n = m = 20 000, d = 3; two-sample z-test of means (variances known in closed form), F-test and
    two-sample DKW, α/3 each, α = 1e-8. Detects a mean difference of ≥ 0.092 σ, a variance ratio
    outside [1/1.139, 1.139] and a sup-CDF distance ≥ 0.065, with power 0.999. The closed forms agree
    too (deterministic check).
    """
    law_a, law_b = identity.law, identity.law_b
    assert law_b is not None
    np.testing.assert_allclose(law_a.mean, law_b.mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(law_a.variance, law_b.variance, rtol=1e-13)
    _check_identity(identity)


# ---------------------------------------------------------------------------------------------------
# Power: each identity family rejects a planted discrepancy
# ---------------------------------------------------------------------------------------------------


def _forward_law_of(step_coeffs: Callable[[int], tuple[float, float]], t: int) -> Gaussian:
    """Law of t steps x ← a_i x + b_i z from X0_FORWARD (closed form: mean ∏a · x0, variance by recursion)."""
    keep, var = 1.0, 0.0
    for i in range(t):
        a, b = step_coeffs(i)
        keep *= a
        var = a * a * var + b * b
    return Gaussian(keep * X0_FORWARD, np.float64(var))


def test_power_forward_chain_sqrt_beta_missing() -> None:
    r"""Forward steps adding β_t z instead of √β_t z (t = 10) are rejected.

    Buggy law: mean √ᾱ_t x₀, variance v_t = (1 − β_t) v_{t−1} + β_t² ≈ 3.9e-7 against
    1 − ᾱ_10 ≈ 1.9e-3 (ratio ≈ 2e-4, far outside [1/1.18, 1.18], the variance ratio detected with
    power 1 − 5e-9). Miss probability computed exactly.
    """

    def bug(x: Array, i: int, rng: np.random.Generator) -> Array:
        g = forward.q_step(x, i, BETAS_1000)
        return g.mean + g.variance * rng.standard_normal(x.shape)  # sqrt missing

    ident = forward_chain(10, step=bug, name="sampling/power/forward_chain_sqrt_beta_missing/t=10")
    b = BETAS_1000
    true = _forward_law_of(lambda i: (math.sqrt(1 - b[i]), b[i]), 10)
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(ident.n, ALPHA / 2, ident.law, true))


def test_power_forward_chain_mean_coefficient() -> None:
    r"""Forward steps with (1 − β_t) instead of √(1 − β_t) (t = 500) are rejected.

    Buggy law: mean ∏(1 − β_s) x₀ = ᾱ_500 x₀ ≈ 0.079·x₀ instead of √ᾱ_500 x₀ ≈ 0.28·x₀ (a shift of
    ≈ 0.32 σ in the first coordinate, against 0.118 σ detected with power 1 − 5e-9), variance ratio
    ≈ 0.54 (by the recursion). Miss probability computed exactly.
    """

    def bug(x: Array, i: int, rng: np.random.Generator) -> Array:
        beta = BETAS_1000[i]
        return (1.0 - beta) * x + math.sqrt(beta) * rng.standard_normal(x.shape)

    ident = forward_chain(500, step=bug, name="sampling/power/forward_chain_mean_coefficient/t=500")
    b = BETAS_1000
    true = _forward_law_of(lambda i: (1.0 - b[i], math.sqrt(b[i])), 500)
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(ident.n, ALPHA / 2, ident.law, true))


def test_power_posterior_step_fixed_large() -> None:
    r"""A posterior step with ``fixed_large`` (Σ = β_t) instead of β̃_t is rejected at index 1.

    Variance ratio β_t/β̃_t = (1 − ᾱ_t)/(1 − ᾱ_{t−1}) ≈ 2.2 at index 1 (outside [1/1.126, 1.126], the
    ratio detected with power 1 − 5e-9). At large t the two variances agree to O(β_t): the ratio is
    ≈ 1.0009 at index 500, which would take n ≈ 2·10⁸ draws, so the bug is tested where it shows.
    """
    ident = posterior_step(1, variance_type="fixed_large", name="sampling/power/posterior_step_fixed_large/t=1")
    true = Gaussian(ident.law.mean, np.float64(BETAS_1000[1]))
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(ident.n, ALPHA / 2, ident.law, true))


def test_power_ddpm_run_fixed_large() -> None:
    r"""A full DDPM run (T = 50) with ``fixed_large`` instead of ``fixed_small`` is rejected.

    Buggy law ``gaussian_run_output(variance_type="fixed_large")``: output variance ratios ≈ 1.35, 1.17,
    1.92 against the fixed_small law (detected outside [1/1.126, 1.126] with power 1 − 5e-9).
    """
    ident = ddpm_run(variance_type="fixed_large", name="sampling/power/ddpm_run_fixed_large/T=50")
    true = oracles.gaussian_run_output(ORACLE, BETAS_50, FULL_50, family="ddpm", variance_type="fixed_large")
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(ident.n, ALPHA / 2, ident.law, true))


def test_power_ddim_sigma_squared_as_sigma() -> None:
    r"""DDIM η = 1 (10 of T = 1000) with σ² used as σ (in the noise and in √(1 − ᾱ_s − σ²)) is rejected.

    Its law is propagated in closed form by :func:`ddim_law_with_sigmas` (which reproduces
    ``gaussian_run_output`` for the correct σ, checked here): output variance ratios ≈ 1.23, 1.21,
    1.25 (outside [1/1.126, 1.126], detected with power 1 − 5e-9); the miss probability of the
    moments test is computed exactly from it. Limitation: with the *exact* denoiser every η gives
    nearly the same output law (the DDIM family shares the marginals of the forward process; the
    laws differ only by discretisation error), so the same bug at η = 0.5 changes the output variance
    by only ≈ 4 % (ratio ≈ 1.037), which this n = 20 000 misses; detecting it at α/4 = 2.5e-9 with
    power 0.999 would take n ≈ 130 000.
    """
    ref = ddim_run(1.0)
    sig = ddim.ddim_sigmas(BETAS_1000, DDIM_10, 1.0)
    for eta in (0.5, 1.0):  # the helper reproduces the closed form for the correct sigma
        law = oracles.gaussian_run_output(ORACLE, BETAS_1000, DDIM_10, family="ddim", eta=eta)
        check = ddim_law_with_sigmas(BETAS_1000, DDIM_10, ddim.ddim_sigmas(BETAS_1000, DDIM_10, eta))
        np.testing.assert_allclose(check.mean, law.mean, rtol=1e-12)
        np.testing.assert_allclose(check.variance, law.variance, rtol=1e-12)
    true = ddim_law_with_sigmas(BETAS_1000, DDIM_10, sig * sig)
    ident = Identity(
        "sampling/power/ddim_sigma_squared_as_sigma/eta=1.0", N, ref.law,
        _ddim_sigma_squared_bug_draw(BETAS_1000, DDIM_10, 1.0, N),
    )
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(ident.n, ALPHA / 2, ident.law, true))


_ETA0 = RUNS[1]


def test_power_planted_mean_shift() -> None:
    r"""The DDIM η = 0 output shifted by the min-detectable mean shift (power 1 − 5e-9) is rejected.

    Shift in coordinate 1 (σ² ≈ 0.69): δ = σ (z_{α/(4·2·3)} + z_{5e-9})/√n ≈ 0.084 σ, the documented
    0.065 σ at power 0.999 scaled to the power test's miss budget. Miss probability computed exactly.
    """
    law = _ETA0.law
    sd = np.sqrt(_variance(law))
    delta = S.min_detectable(N, ALPHA / 4, 1 - MISS, "mean", dims=3, variance=float(sd[1] ** 2))
    shift = np.array([0.0, delta, 0.0])
    ident = _ETA0.planted("sampling/power/planted_mean_shift/ddim_eta=0", lambda x: x + shift)
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    _expect_rejection(moments, moments_miss(N, ALPHA / 2, law, Gaussian(law.mean + shift, law.variance)))
    assert not moments.parts[0].passed  # the mean part is what rejects


def test_power_planted_variance_ratio() -> None:
    r"""The DDIM η = 0 output with coordinate 0's variance scaled by ρ(power 1 − 5e-9) ≈ 1.126 is rejected.

    x ↦ m + √ρ (x − m) in coordinate 0: mean unchanged, variance ratio exactly ρ (documented 1.097 at
    power 0.999). Miss probability computed exactly.
    """
    law = _ETA0.law
    rho = S.min_detectable(N, ALPHA / 4, 1 - MISS, "variance", dims=3)
    scale = np.array([math.sqrt(rho), 1.0, 1.0])
    ident = _ETA0.planted("sampling/power/planted_variance_ratio/ddim_eta=0", lambda x: law.mean + scale * (x - law.mean))
    moments, _ = ident.run(S.seed_for(ident.name), ALPHA)
    true = Gaussian(law.mean, _variance(law) * scale**2)
    _expect_rejection(moments, moments_miss(N, ALPHA / 2, law, true))
    assert not moments.parts[1].passed  # the variance part is what rejects


def test_power_planted_cdf_distance() -> None:
    r"""A shift of coordinate 0 with sup|ΔF| = δ_cdf(power 1 − 5e-9) ≈ 0.045 is rejected by the DKW test.

    A shift by Δσ moves a Gaussian CDF by at most 2Φ(Δ/2) − 1 (at the midpoint); Δ is chosen so that
    this equals the DKW test's min-detectable sup-distance at power 1 − 5e-9 (documented 0.036 at
    0.999). Miss probability ≤ exp(−2n(δ − ε)²) (Hoeffding), ε the DKW critical value.
    """
    law = _ETA0.law
    sd = np.sqrt(_variance(law))
    sup = S.min_detectable(N, ALPHA / 2, 1 - MISS, "cdf", dims=3)
    shift = np.array([2.0 * sps.norm.ppf((1.0 + sup) / 2.0) * sd[0], 0.0, 0.0])
    ident = _ETA0.planted("sampling/power/planted_cdf_distance/ddim_eta=0", lambda x: x + shift)
    _, dkw = ident.run(S.seed_for(ident.name), ALPHA)
    eps = S.dkw_epsilon(N, ALPHA / 2 / 3)
    _expect_rejection(dkw, math.exp(-2.0 * N * (sup - eps) ** 2))


_TWO = TWO_SAMPLE[0]


def test_power_two_sample_ddim_sigma_squared_as_sigma() -> None:
    r"""DDPM vs DDIM η = 1 with σ² used as σ (full T = 50) is rejected by the two-sample tests.

    The buggy DDIM law comes from :func:`ddim_law_with_sigmas`; the miss probability of the z- and
    F-tests is computed exactly from it.
    """
    sig = ddim.ddim_sigmas(BETAS_50, FULL_50, 1.0)
    true_b = ddim_law_with_sigmas(BETAS_50, FULL_50, sig * sig)
    ident = ddpm_vs_ddim_eta1(ddim_sigma_squared_bug=True, name="sampling/power/two_sample_ddim_sigma_squared/T=50")
    assert ident.law_b is not None
    mean, var, _ = ident.run(S.seed_for(ident.name), ALPHA)
    miss = two_sample_miss(N, N, ALPHA / 3, ident.law, ident.law_b, ident.law, true_b)
    worst = mean if not mean.passed else var
    _expect_rejection(worst, miss)
    assert not (mean.passed and var.passed)


def test_power_two_sample_planted_mean_shift() -> None:
    r"""Sample a shifted by the two-sample min-detectable difference (power 1 − 5e-9, ≈ 0.118 σ) is rejected.

    Coordinate 1 (the largest variance); documented 0.092 σ at power 0.999. Miss computed exactly.
    """
    law = _TWO.law
    assert _TWO.law_b is not None
    v = _variance(law)
    delta = S.min_detectable(N, ALPHA / 3, 1 - MISS, "two_sample_mean", dims=3, variance=float(v[1]))
    shift = np.array([0.0, delta, 0.0])
    ident = _TWO.planted("sampling/power/two_sample_planted_mean_shift/T=50", lambda x: x + shift)
    mean, _, _ = ident.run(S.seed_for(ident.name), ALPHA)
    true_a = Gaussian(law.mean + shift, law.variance)
    _expect_rejection(mean, two_sample_miss(N, N, ALPHA / 3, law, _TWO.law_b, true_a, _TWO.law_b))


def test_power_two_sample_planted_variance_ratio() -> None:
    r"""Sample a's coordinate 0 scaled to the F-test's min-detectable ratio (power 1 − 5e-9, ≈ 1.182) is rejected.

    Documented 1.139 at power 0.999. Miss computed exactly.
    """
    law = _TWO.law
    assert _TWO.law_b is not None
    rho = S.min_detectable(N, ALPHA / 3, 1 - MISS, "two_sample_variance", dims=3)
    scale = np.array([math.sqrt(rho), 1.0, 1.0])
    ident = _TWO.planted(
        "sampling/power/two_sample_planted_variance_ratio/T=50", lambda x: law.mean + scale * (x - law.mean)
    )
    _, var, _ = ident.run(S.seed_for(ident.name), ALPHA)
    true_a = Gaussian(law.mean, _variance(law) * scale**2)
    _expect_rejection(var, two_sample_miss(N, N, ALPHA / 3, law, _TWO.law_b, true_a, _TWO.law_b))


def test_power_two_sample_planted_cdf_distance() -> None:
    r"""Sample a shifted so that sup|ΔF| = the two-sample DKW min-detectable distance (power 1 − 5e-9) is rejected.

    ≈ 0.078 (documented 0.065 at 0.999). Miss ≤ exp(−2(δ − ε₂)²/(1/n + 1/m)) (Hoeffding).
    """
    law = _TWO.law
    sd = np.sqrt(_variance(law))
    sup = S.min_detectable(N, ALPHA / 3, 1 - MISS, "two_sample_cdf", dims=3)
    shift = np.array([2.0 * sps.norm.ppf((1.0 + sup) / 2.0) * sd[0], 0.0, 0.0])
    ident = _TWO.planted("sampling/power/two_sample_planted_cdf_distance/T=50", lambda x: x + shift)
    _, _, dkw = ident.run(S.seed_for(ident.name), ALPHA)
    eps2 = S.two_sample_dkw_epsilon(N, N, ALPHA / 3 / 3)
    _expect_rejection(dkw, math.exp(-2.0 * (sup - eps2) ** 2 / (2.0 / N)))
