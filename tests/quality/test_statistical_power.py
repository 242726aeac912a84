r"""Power of ``distribution.step_moments``: a 1 % standard-deviation error and a mean shift of 1 % of σ
at one step are caught in the default profile, for a sampler that draws its own noise.

The planted targets are diffusers' ``DDIMScheduler()`` (η = 1 draws its own noise from the generator;
the harness injects none) with one bug at one tested step, t = 480 (step 25 of the default profile's
N = 50 run; the tested steps are 0, 25 and 49, the last deterministic):

* ``std``: the noise term scaled by 1 + ε, ε = 0.01 (the draws' standard deviation × 1.01);
* ``mean``: the output shifted by ε σ_t, ε = 0.01 (σ_t = η √(σ² of DDIM eq. 16)).

Expected power (derived here, checked in :func:`_expected_power`). In the tests α = 10⁻¹⁰ per check
(``tests/conftest.py``); step_moments.eta=1 has 2 stochastic steps × 3 pooled tests, so each
test runs at α_c = α/6. Each step gives N = n·d standardised draws y (n = 16 384 draws of
d = 3·8·8 = 192 elements: N = 3 145 728). With the target's own rounding offset taken as 0 (the
allowance a, read from the result, is a *bound* with a safety factor; the real offset is far smaller):

* mean: ȳ ~ N(ε, 1/N); the test fails iff |ȳ| > z_{α_c/2}/√N + a, so the power is
  Φ(√N (ε − a) − z_{α_c/2}) (+ the negligible other tail). With z_{α_c/2} = 6.733, √N = 1773.6 and
  a ≈ 0.0044 (diffusers keeps ᾱ in float32, in a float64 run too): Φ(9.93 − 6.73) = Φ(3.20) ≈ 0.9993.
  (At the profile's own α = 10⁻⁶, z_{α_c/2} = 5.33 and the power is Φ(4.6) ≈ 0.999998.)
* std: s² = S/k with S ~ (1 + ε)² χ²_k, k = d(n − 1) = 3 145 536; it fails iff s > √U + a₂
  (U = χ²_{k;1−α_c/2}/k, √U = 1.00268; a₂ = a √(n/(n−1))), so the power is
  P(χ²_k > k ((√U + a₂)/(1 + ε))²) = 1 − 2·10⁻¹³.

Both are computed from scipy's quantiles in :func:`_expected_power`, with the allowance the result
reports, and asserted ≥ 0.999 before the verdict is asserted. Correct targets (the same scheduler
unmodified, and the bundled port) pass. The default-profile tests take a few seconds each and are
marked ``slow``; a quick-profile variant (n·d = 4096·48) plants a 5 % error at t = 400 (power
derived the same way: Φ(443·(0.05 − a) − 6.73) ≈ 1 for a < 0.03) and runs in the default suite,
with the level and power of the pooled tests themselves.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler
from scipy import stats as sps

from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks import distribution
from ddspec.conformance.context import PROFILES, CheckContext
from ddspec.conformance.results import Verdict
from ddspec.conformance.torch_port import make_reference_port

BUG_T = 480
NAME = "distribution.step_moments.eta=1"


class PlantedDDIM(DDIMScheduler):
    """DDIM whose step at ``bug_t`` has its noise scaled by 1 + ``size`` (``kind="std"``) or its output
    shifted by ``size`` σ_t (``kind="mean"``); it draws its own noise from the generator."""

    kind: str = "none"
    size: float = 0.0
    bug_t: int = BUG_T

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: Any = None, variance_noise: Any = None,
             return_dict: bool = True) -> Any:
        res = super().step(model_output, timestep, sample, eta, use_clipped_model_output, generator, variance_noise)
        if int(timestep) != self.bug_t or eta == 0 or self.kind == "none":
            return res
        if self.kind == "std":
            mean = super().step(model_output, timestep, sample, eta, use_clipped_model_output, None,
                                torch.zeros_like(sample)).prev_sample
            res.prev_sample = mean + (1.0 + self.size) * (res.prev_sample - mean)
        else:
            prev = int(timestep) - self.config.num_train_timesteps // self.num_inference_steps
            sigma = eta * float(self._get_variance(int(timestep), prev)) ** 0.5
            res.prev_sample = res.prev_sample + self.size * sigma
        return res


def _planted(kind: str, size: float, bug_t: int = BUG_T) -> Any:
    s = PlantedDDIM()
    s.kind, s.size, s.bug_t = kind, size, bug_t
    return adapt(s)


def _step_moments(sampler: Any, profile: str, dtype: str = "float32", seed: int = 0):
    ctx = CheckContext(sampler, dtype=dtype, profile=profile, seed=seed)
    return {r.name: r for r in distribution.check_step_moments(ctx)}


def _expected_power(result: Any, kind: str, size: float, bug_t: int = BUG_T) -> float:
    """Power at the planted step from the closed forms of the module docstring (target rounding 0)."""
    step = next(s for s in result.details["min_detectable"]["per_step"] if s["t"] == bug_t)
    n, d = step["draws"], step["elements"]
    big_n, k = n * d, d * (n - 1)
    alpha_c = result.details["alpha_per_test"]
    if kind == "mean":
        a = step["rounding_allowance_sigma"]["mean"]
        return float(sps.norm.cdf(math.sqrt(big_n) * (size - a) - sps.norm.isf(alpha_c / 2)))
    a2 = step["rounding_allowance_sigma"]["std"]
    upper = math.sqrt(sps.chi2.isf(alpha_c / 2, k) / k) + a2
    return float(sps.chi2.sf(k * (upper / (1.0 + size)) ** 2, k))


def test_default_profile_sizes_are_those_derived():
    p = PROFILES["default"]
    assert p.n_single_step_draws * math.prod(p.sample_shape[1:]) == 16_384 * 192


@pytest.mark.slow  # about 6 s each on a 2-core CPU (two default-profile runs); the quick variant runs by default
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["std", "mean"])
def test_one_percent_error_at_one_step_fails_the_default_profile(kind, dtype):
    correct = _step_moments(_planted("none", 0.0), "default", dtype)[NAME]
    assert correct.verdict is Verdict.PASS, correct.message
    power = _expected_power(correct, kind, 0.01)
    assert power >= 0.999, power
    r = _step_moments(_planted(kind, 0.01), "default", dtype)[NAME]
    assert r.verdict is Verdict.FAIL, r.message
    failed = {t["name"].rsplit("/", 1)[-1] for t in r.details["tests"] if not t["passed"]}
    assert failed <= ({"variance"} if kind == "std" else {"mean", "mean_pattern"}) and failed, failed
    assert all(f.timestep == BUG_T for f in r.findings), [f.timestep for f in r.findings]
    assert "detects a std error >= " in r.message and "power 0.999" in r.message


@pytest.mark.parametrize("kind", ["std", "mean"])
def test_five_percent_error_fails_the_quick_profile(kind):
    """Quick profile (n = 4096 draws of 48 elements, N = 196 608; at N = 10 the tested steps are 0,
    5 and 9, so the planted step is t = 400 there: the bug moves with ``bug_t``)."""
    correct = _step_moments(_planted("none", 0.0), "quick")[NAME]
    assert correct.verdict is Verdict.PASS, correct.message
    assert _expected_power(correct, kind, 0.05, bug_t=400) >= 0.999
    r = _step_moments(_planted(kind, 0.05, bug_t=400), "quick")[NAME]
    assert r.verdict is Verdict.FAIL, r.message
    assert all(f.timestep == 400 for f in r.findings)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_correct_targets_pass_the_default_profile(dtype, seed):
    """(The correct DDIM at seed 0 passes in every test above.)"""
    for sampler in (adapt(DDIMScheduler()), make_reference_port()):
        results = _step_moments(sampler, "default", dtype, seed=seed)
        bad = {n: r.message for n, r in results.items() if r.verdict is not Verdict.PASS}
        assert not bad, bad


# ---------------------------------------------------------------------------------------------------
# The pooled tests themselves (ddspec.conformance.stats): level and power from first principles
# ---------------------------------------------------------------------------------------------------


def test_pooled_min_detectable_closed_forms():
    """common mean: (z_{α/2} + z_β)/sqrt(nd); variance: the chi-square ratio with d(n − 1) dof, from
    scipy's quantiles; mean pattern: at the stated RMS shift the noncentral chi-square χ²_d(n d δ²)
    exceeds χ²_{d;1−α} with probability exactly the power (here via scipy's ncx2 survival function)."""
    from ddspec.conformance import stats

    n, d, alpha, power = 16_384, 192, 1e-6 / 6, 0.999
    beta = 1 - power
    assert stats.pooled_min_detectable(n, d, alpha, power, "pooled_mean") == pytest.approx(
        (sps.norm.isf(alpha / 2) + sps.norm.isf(beta)) / math.sqrt(n * d), rel=1e-12)
    k = d * (n - 1)
    rho = max(sps.chi2.isf(alpha / 2, k) / sps.chi2.ppf(beta, k), sps.chi2.isf(beta, k) / sps.chi2.ppf(alpha / 2, k))
    assert stats.pooled_min_detectable(n, d, alpha, power, "pooled_variance") == pytest.approx(rho, rel=1e-9)
    delta = stats.pooled_min_detectable(n, d, alpha, power, "mean_pattern")
    assert sps.ncx2.sf(sps.chi2.isf(alpha, d), d, n * d * delta**2) == pytest.approx(power, abs=1e-8)
    with pytest.raises(ValueError, match="kind"):
        stats.pooled_min_detectable(n, d, alpha, power, "mean")


@pytest.mark.statistical
def test_pooled_tests_reject_at_their_level_and_detect_at_their_power():
    """R = 1000 replications of n = 64 draws of d = 5 elements with unequal means and σ: under the null
    each test rejects at α = 0.2 (count inside the two-sided Binomial(R, 0.2) band at 1e-9); with a
    common shift / std ratio / shift pattern equal to its δ_min at power 0.9, each detects with
    probability ≥ 0.9 (count above the lower Binomial(R, 0.9) band at 1e-9)."""
    import numpy as np

    from ddspec.conformance import stats

    R, n, d, alpha, power = 1000, 64, 5, 0.2, 0.9
    # six bands at 1e-9 each: the chance that this fixed seed is unlucky for correct tests
    stats.LEDGER.allocate("tests/quality/pooled_tests_level_and_power", 6e-9)
    rng = np.random.default_rng(20261205)
    mu = np.array([0.5, -1.0, 2.0, 0.0, 3.0])
    sd = np.array([0.1, 1.0, 2.0, 0.5, 3.0])
    lo, hi = sps.binom.ppf(0.5e-9, R, alpha), sps.binom.isf(0.5e-9, R, alpha)
    floor = sps.binom.ppf(1e-9, R, power)  # one-sided: P(count < floor) <= 1e-9 at power exactly 0.9
    m_shift = stats.pooled_min_detectable(n, d, alpha, power, "pooled_mean")
    rho = stats.pooled_min_detectable(n, d, alpha, power, "pooled_variance")
    rms = stats.pooled_min_detectable(n, d, alpha, power, "mean_pattern")
    pattern = rms * np.array([1.0, -1.0, 1.0, -1.0, 0.0]) * math.sqrt(d / 4)  # RMS = rms, mixed signs
    null = [0, 0, 0]
    hit = [0, 0, 0]
    for _ in range(R):
        z = rng.standard_normal((n, d))
        x = mu + sd * z
        null[0] += not stats.pooled_mean_test(x, mu, sd**2, alpha).passed
        null[1] += not stats.pooled_variance_test(x, sd**2, alpha).passed
        null[2] += not stats.mean_pattern_test(x, mu, sd**2, alpha).passed
        hit[0] += not stats.pooled_mean_test(x + m_shift * sd, mu, sd**2, alpha).passed
        hit[1] += not stats.pooled_variance_test(mu + math.sqrt(rho) * sd * z, sd**2, alpha).passed
        hit[2] += not stats.mean_pattern_test(x + pattern * sd, mu, sd**2, alpha).passed
    assert all(lo <= c <= hi for c in null), (null, lo, hi)
    assert all(c >= floor for c in hit), (hit, floor)
