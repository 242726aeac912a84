"""Tests of ddspec.conformance.stats: calibration, power, inverse relations, DKW constant, ledger, seeds.

The calibration and power tests are themselves statistical ("meta") tests. Each allocates its
false-failure rate Q = 1e-9 from the run's ledger ``stats.LEDGER`` (about 30 checks: this file fails by
chance with probability about 3e-8 when run with fresh seeds) and uses a binomial band at Q: under the
claim being tested, the number of rejections among R independent replications is Binomial(R, rate),
so ``lower <= count <= upper`` with ``lower = binom.ppf(q/2)``, ``upper = binom.isf(q/2)`` fails with
probability < q. Replications are vectorised by putting them in the coordinates: each coordinate's
p-value (``StatResult.p_values``) is that of the one-coordinate test, which rejects at level alpha
iff ``p <= alpha`` (checked in ``test_p_values_agree_with_single_coordinate_decisions``). The joint
result's own ``min_detectable`` is that of the R-coordinate Bonferroni test, hence ``dims=R`` where
it is compared.

Seeds come from ``seed_for`` (fixed per test; ``DDSPEC_FRESH_SEEDS=1`` makes them fresh).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy import stats as sps
from scipy.optimize import brentq

from ddspec.conformance import stats as S

Q = 1e-9  # meta false-failure rate of one binomial band, allocated from the run's ledger
R = 20_000  # replications of a calibration or power check

pytestmark = pytest.mark.statistical


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(S.seed_for(f"tests/stats/{name}"))


def _band(name: str, count: int, trials: int, rate: float, *, side: str = "both") -> None:
    """Assert that ``count`` is consistent with Binomial(trials, rate), at meta rate Q."""
    q = S.LEDGER.allocate(f"tests/stats/{name}", Q)
    lower = int(sps.binom.ppf(q / 2, trials, rate)) if side in ("both", "lower") else 0
    upper = int(sps.binom.isf(q / 2, trials, rate)) if side in ("both", "upper") else trials
    assert lower <= count <= upper, f"{name}: {count} of {trials}, expected in [{lower}, {upper}] (rate {rate:.5g})"


# ---------------------------------------------------------------------------------------------------
# Calibration under the null
# ---------------------------------------------------------------------------------------------------

ALPHAS = (0.05, 0.2)


def test_mean_test_calibration() -> None:
    n, mu, var = 25, 1.5, 4.0
    x = _rng("mean_cal").normal(mu, math.sqrt(var), size=(n, R))
    p = S.mean_test(x, mu, var, 0.1).p_values
    for a in ALPHAS:
        _band(f"mean_cal_{a}", int(np.sum(p <= a)), R, a)


@pytest.mark.parametrize("known_mean", [False, True])
def test_variance_test_calibration(known_mean: bool) -> None:
    n, mu, var = 12, -0.5, 0.3
    x = _rng(f"var_cal_{known_mean}").normal(mu, math.sqrt(var), size=(n, R))
    p = S.variance_test(x, var, 0.1, mean=mu if known_mean else None).p_values
    for a in ALPHAS:
        _band(f"var_cal_{known_mean}_{a}", int(np.sum(p <= a)), R, a)


def test_dkw_cdf_test_calibration() -> None:
    # For continuous F, P(D_n > eps) is the exact Kolmogorov distribution (scipy.stats.kstwo);
    # Massart's DKW inequality says it is <= alpha.
    n = 40
    x = _rng("dkw_cal").exponential(2.0, size=(n, R))
    p = S.dkw_cdf_test(x, sps.expon(scale=2.0).cdf, 0.1).p_values
    for a in ALPHAS:
        exact = float(sps.kstwo(n).sf(S.dkw_epsilon(n, a)))
        assert exact <= a
        _band(f"dkw_cal_{a}", int(np.sum(p < a)), R, exact)


def test_two_sample_mean_test_calibration() -> None:
    n, m = 20, 35
    rng = _rng("mean2_cal")
    a = rng.normal(3.0, 1.0, size=(n, R))
    b = rng.normal(3.0, 3.0, size=(m, R))
    # Welch's level is approximate; at these sizes its error (~1e-3) is far inside the band (~1e-2).
    p_welch = S.two_sample_mean_test(a, b, 0.1).p_values
    p_z = S.two_sample_mean_test(a, b, 0.1, variance_a=1.0, variance_b=9.0).p_values
    for al in ALPHAS:
        _band(f"mean2_welch_cal_{al}", int(np.sum(p_welch <= al)), R, al)
        _band(f"mean2_z_cal_{al}", int(np.sum(p_z <= al)), R, al)


def test_two_sample_variance_test_calibration() -> None:
    rng = _rng("var2_cal")
    a = rng.normal(0.0, 2.0, size=(15, R))
    b = rng.normal(5.0, 2.0, size=(9, R))
    p = S.two_sample_variance_test(a, b, 0.1).p_values
    for al in ALPHAS:
        _band(f"var2_cal_{al}", int(np.sum(p <= al)), R, al)


def test_two_sample_dkw_test_calibration() -> None:
    # Conservative: the rejection rate may only be below alpha.
    rng = _rng("dkw2_cal")
    a = rng.normal(size=(30, R))
    b = rng.normal(size=(50, R))
    p = S.two_sample_dkw_test(a, b, 0.1).p_values
    for al in ALPHAS:
        _band(f"dkw2_cal_{al}", int(np.sum(p < al)), R, al, side="upper")


def test_gaussian_moments_test_calibration() -> None:
    # x-bar and s^2 of Gaussian draws are independent: the exact level is 1 - (1 - alpha/2)^2.
    n, mu, var = 10, 2.0, 0.5
    x = _rng("moments_cal").normal(mu, math.sqrt(var), size=(n, R))
    p = S.gaussian_moments_test(x, mu, var, 0.1).p_values
    for a in ALPHAS:
        _band(f"moments_cal_{a}", int(np.sum(p <= a)), R, 1.0 - (1.0 - a / 2.0) ** 2)


def test_joint_bonferroni_calibration() -> None:
    # d independent coordinates tested jointly at alpha: exact level 1 - (1 - alpha/d)^d <= alpha.
    n, d, alpha, reps = 20, 10, 0.2, 2000
    x = _rng("joint_cal").normal(size=(reps, n, d))
    fails = sum(not S.mean_test(x[r], 0.0, 1.0, alpha).passed for r in range(reps))
    exact = 1.0 - (1.0 - alpha / d) ** d
    assert exact <= alpha
    _band("joint_cal", fails, reps, exact)


def test_p_values_agree_with_single_coordinate_decisions() -> None:
    rng = _rng("agree")
    x = rng.normal(0.3, 1.0, size=(30, 40))  # mean shifted: both decisions occur
    y = rng.normal(0.0, 1.6, size=(25, 40))
    alpha = 0.05
    cases = [
        (lambda s: S.mean_test(s, 0.0, 1.0, alpha), x),
        (lambda s: S.variance_test(s, 1.6, alpha), x),
        (lambda s: S.dkw_cdf_test(s, sps.norm.cdf, alpha), x),
        (lambda s: S.gaussian_moments_test(s, 0.0, 1.0, alpha), x),
    ]
    for test, data in cases:
        joint = test(data)
        single = [test(data[:, j]) for j in range(data.shape[1])]
        assert [r.passed for r in single] == list(joint.p_values > alpha)
        assert [r.p_value for r in single] == pytest.approx(list(joint.p_values), rel=1e-12)
    two = [
        lambda a, b: S.two_sample_mean_test(a, b, alpha),
        lambda a, b: S.two_sample_variance_test(a, b, alpha),
        lambda a, b: S.two_sample_dkw_test(a, b, alpha),
    ]
    for test in two:
        joint = test(x, y)
        single = [test(x[:, j], y[:, j]) for j in range(x.shape[1])]
        assert [r.passed for r in single] == list(joint.p_values > alpha)
    assert any(not r.passed for r in (S.mean_test(x[:, j], 0.0, 1.0, alpha) for j in range(40)))


# ---------------------------------------------------------------------------------------------------
# Power at the stated minimum detectable discrepancy
# ---------------------------------------------------------------------------------------------------

SMALL_ALPHA = 1e-6
POWER = 0.9  # a low power makes the power check sharp; DEFAULT_POWER is checked in closed form below


def test_mean_test_power() -> None:
    n, var = 50, 2.0
    delta = S.min_detectable(n, SMALL_ALPHA, POWER, "mean", variance=var)
    x = _rng("mean_pow").normal(1.0 + delta, math.sqrt(var), size=(n, R))
    res = S.mean_test(x, 1.0, var, SMALL_ALPHA, power=POWER)
    assert res.min_detectable == S.min_detectable(n, SMALL_ALPHA, POWER, "mean", variance=var, dims=R)
    # exact power of the two-sided z-test at shift delta (closed form)
    z_a, shift = sps.norm.isf(SMALL_ALPHA / 2), delta * math.sqrt(n / var)
    exact = sps.norm.sf(z_a - shift) + sps.norm.cdf(-z_a - shift)
    assert exact >= POWER and exact == pytest.approx(POWER, abs=1e-9)
    _band("mean_pow", int(np.sum(res.p_values <= SMALL_ALPHA)), R, exact)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_variance_test_power(direction: str) -> None:
    n, var = 60, 1.5
    rho = S.min_detectable(n, SMALL_ALPHA, POWER, "variance")
    ratio = rho if direction == "up" else 1.0 / rho
    x = _rng(f"var_pow_{direction}").normal(0.0, math.sqrt(var * ratio), size=(n, R))
    res = S.variance_test(x, var, SMALL_ALPHA, power=POWER)
    assert res.min_detectable == S.min_detectable(n, SMALL_ALPHA, POWER, "variance", dims=R)
    chi = sps.chi2(n - 1)
    c_lo, c_hi = chi.ppf(SMALL_ALPHA / 2), chi.isf(SMALL_ALPHA / 2)
    exact = chi.sf(c_hi / ratio) + chi.cdf(c_lo / ratio)  # statistic is ratio * chi2_{n-1}
    assert exact >= POWER * (1 - 1e-12)
    _band(f"var_pow_{direction}", int(np.sum(res.p_values <= SMALL_ALPHA)), R, exact)


def test_dkw_cdf_test_power() -> None:
    # Alternative N(s, 1) against F = N(0, 1): sup|G - F| = 2 Phi(s/2) - 1 (at x = s/2).
    n = 400
    delta = S.min_detectable(n, SMALL_ALPHA, POWER, "cdf")
    s = 2.0 * sps.norm.ppf((1.0 + delta) / 2.0)
    reps = 5000
    x = _rng("dkw_pow").normal(s, 1.0, size=(n, reps))
    res = S.dkw_cdf_test(x, sps.norm.cdf, SMALL_ALPHA, power=POWER)
    assert res.min_detectable == S.min_detectable(n, SMALL_ALPHA, POWER, "cdf", dims=reps)
    _band("dkw_pow", int(np.sum(res.p_values < SMALL_ALPHA)), reps, POWER, side="lower")


def test_two_sample_mean_test_power() -> None:
    n, m, var = 40, 40, 1.0
    delta = S.min_detectable(n, SMALL_ALPHA, POWER, "two_sample_mean", variance=var, m=m)
    rng = _rng("mean2_pow")
    a = rng.normal(delta, 1.0, size=(n, R))
    b = rng.normal(0.0, 1.0, size=(m, R))
    res = S.two_sample_mean_test(a, b, SMALL_ALPHA, variance_a=var, variance_b=var, power=POWER)
    assert res.min_detectable == pytest.approx(
        S.min_detectable(n, SMALL_ALPHA, POWER, "two_sample_mean", variance=var, m=m, dims=R), rel=1e-12
    )
    z_a, shift = sps.norm.isf(SMALL_ALPHA / 2), delta / math.sqrt(2 * var / n)
    exact = sps.norm.sf(z_a - shift) + sps.norm.cdf(-z_a - shift)
    _band("mean2_pow", int(np.sum(res.p_values <= SMALL_ALPHA)), R, exact)
    # Welch: at the shift whose noncentral-t power (nu = n + m - 2, the Welch dof at equal sizes and
    # variances) is POWER. The test estimates nu, so its power is approximately POWER: allow 0.01.
    nu = n + m - 2
    crit = sps.t.isf(SMALL_ALPHA / 2, nu)
    lam = brentq(lambda nc: sps.nct.sf(crit, nu, nc) - POWER, 0.0, 3 * crit)
    se = math.sqrt(2 * var / n)
    a_w = a - delta + lam * se
    welch = S.two_sample_mean_test(a_w, b, SMALL_ALPHA, power=POWER)
    _band("mean2_welch_pow", int(np.sum(welch.p_values <= SMALL_ALPHA)), R, POWER - 0.01, side="lower")
    # One coordinate's plug-in minimum detectable shift estimates lam * se: it uses the sample standard
    # error and the estimated nu <= n + m - 2 (so at least se_hat * lam); its median is close to lam * se.
    single = np.array(
        [S.two_sample_mean_test(a_w[:, j], b[:, j], SMALL_ALPHA, power=POWER).min_detectable for j in range(200)]
    )
    se_hat = np.sqrt(a_w[:, :200].var(axis=0, ddof=1) / n + b[:, :200].var(axis=0, ddof=1) / m)
    assert np.all(single >= lam * se_hat * (1 - 1e-9))
    # the median's sd is ~0.7 %: 6 % is more than 8 sd (normal tail < 1e-15)
    S.LEDGER.allocate("tests/stats/mean2_welch_median", Q)
    assert np.median(single) == pytest.approx(lam * se, rel=0.06)


def test_welch_min_detectable_is_finite_at_tiny_dof_and_level() -> None:
    # two draws each (nu >= 1) at alpha = 1e-12: scipy's noncentral t is not finite there, so the
    # conservative bound z_{beta/2} + t_{nu; alpha/2} sqrt(chi2_{nu; 1-beta/2} / nu) is used.
    a, b = np.array([0.0, 1.0]), np.array([0.5, 2.0])
    r = S.two_sample_mean_test(a, b, 1e-12)
    se = math.sqrt(0.5 / 2 + 1.125 / 2)
    nu = se**4 / ((0.5 / 2) ** 2 + (1.125 / 2) ** 2)  # Welch-Satterthwaite, n = m = 2
    beta = 1 - S.DEFAULT_POWER
    bound = sps.norm.isf(beta / 2) + sps.t.isf(0.5e-12, nu) * math.sqrt(sps.chi2.isf(beta / 2, nu) / nu)
    assert math.isfinite(r.min_detectable)
    assert se * sps.t.isf(0.5e-12, nu) < r.min_detectable <= se * bound * (1 + 1e-12)


def test_two_sample_variance_test_power() -> None:
    n, m = 80, 60
    rho = S.min_detectable(n, SMALL_ALPHA, POWER, "two_sample_variance", m=m)
    rng = _rng("var2_pow")
    a = rng.normal(0.0, math.sqrt(rho), size=(n, R))
    b = rng.normal(0.0, 1.0, size=(m, R))
    res = S.two_sample_variance_test(a, b, SMALL_ALPHA, power=POWER)
    assert res.min_detectable == S.min_detectable(n, SMALL_ALPHA, POWER, "two_sample_variance", m=m, dims=R)
    f = sps.f(n - 1, m - 1)
    exact = f.sf(f.isf(SMALL_ALPHA / 2) / rho) + f.cdf(f.ppf(SMALL_ALPHA / 2) / rho)
    assert exact >= POWER * (1 - 1e-12)
    _band("var2_pow", int(np.sum(res.p_values <= SMALL_ALPHA)), R, exact)


def test_two_sample_dkw_test_power() -> None:
    n, m = 300, 500
    delta = S.min_detectable(n, SMALL_ALPHA, POWER, "two_sample_cdf", m=m)
    s = 2.0 * sps.norm.ppf((1.0 + delta) / 2.0)
    rng = _rng("dkw2_pow")
    res = S.two_sample_dkw_test(rng.normal(s, 1.0, size=(n, 4000)), rng.normal(size=(m, 4000)), SMALL_ALPHA)
    _band("dkw2_pow", int(np.sum(res.p_values < SMALL_ALPHA)), 4000, POWER, side="lower")


def test_gaussian_moments_and_joint_power() -> None:
    # One coordinate of d = 8 shifted by the joint (Bonferroni) minimum detectable shift.
    n, d, reps = 30, 8, 600
    res0 = S.gaussian_moments_test(np.zeros((n, d)) + np.arange(n)[:, None], 0.0, 1.0, SMALL_ALPHA, power=POWER)
    delta = res0.min_detectable
    assert delta == S.min_detectable(n, SMALL_ALPHA / 2, POWER, "mean", dims=d)
    x = _rng("moments_pow").normal(size=(reps, n, d))
    x[:, :, 3] += delta
    fails = sum(not S.gaussian_moments_test(x[r], 0.0, 1.0, SMALL_ALPHA, power=POWER).passed for r in range(reps))
    _band("moments_pow", fails, reps, POWER, side="lower")


# ---------------------------------------------------------------------------------------------------
# Closed forms: minimum detectable discrepancy, its inverse, the DKW constant
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("power", [S.DEFAULT_POWER, 0.5, 0.99])
@pytest.mark.parametrize("dims", [1, 7])
def test_min_detectable_has_stated_power_in_closed_form(power: float, dims: int) -> None:
    alpha, n, var = 1e-6, 500, 3.0
    ac = alpha / dims
    # mean: exact power of the two-sided z-test
    delta = S.min_detectable(n, alpha, power, "mean", dims=dims, variance=var)
    shift = delta / math.sqrt(var / n)
    z_a = sps.norm.isf(ac / 2)
    assert sps.norm.sf(z_a - shift) + sps.norm.cdf(-z_a - shift) == pytest.approx(power, abs=1e-9)
    # variance: exact detection probability at rho and at 1/rho, the binding side equals power
    for known_mean, k in ((False, n - 1), (True, n)):
        rho = S.min_detectable(n, alpha, power, "variance", dims=dims, known_mean=known_mean)
        chi = sps.chi2(k)
        c_lo, c_hi = chi.ppf(ac / 2), chi.isf(ac / 2)
        up = chi.sf(c_hi / rho) + chi.cdf(c_lo / rho)
        down = chi.sf(c_hi * rho) + chi.cdf(c_lo * rho)
        assert min(up, down) == pytest.approx(power, abs=1e-9)
        assert max(up, down) >= power
    # cdf: epsilon(alpha) + Hoeffding slack, Massart's constant
    eps = math.sqrt(math.log(2 * dims / alpha) / (2 * n))
    assert S.min_detectable(n, alpha, power, "cdf", dims=dims) == pytest.approx(
        eps + math.sqrt(math.log(1 / (1 - power)) / (2 * n)), rel=1e-14
    )


@pytest.mark.parametrize("kind", S.KINDS)
@pytest.mark.parametrize("alpha", [1e-9, 0.01])
def test_min_num_samples_inverts_min_detectable(kind: str, alpha: float) -> None:
    power, var, dims = S.DEFAULT_POWER, 2.5, 3
    for target in ((1.05, 1.3, 3.0) if "variance" in kind else (0.01, 0.1, 0.7)):
        n = S.min_num_samples(target, alpha, power, kind, dims=dims, variance=var)
        kw = dict(dims=dims, variance=var)
        assert S.min_detectable(n, alpha, power, kind, **kw) <= target
        if n > 2:
            assert S.min_detectable(n - 1, alpha, power, kind, **kw) > target
        ac, lb = alpha / dims, math.log(1 / (1 - power))
        zz = (sps.norm.isf(ac / 2) + sps.norm.isf(1 - power)) ** 2
        closed = {
            "mean": var * zz / target**2,
            "two_sample_mean": 2 * var * zz / target**2,
            "cdf": (math.sqrt(math.log(2 / ac)) + math.sqrt(lb)) ** 2 / (2 * target**2),
            "two_sample_cdf": (math.sqrt(2 * math.log(4 / ac)) + math.sqrt(lb)) ** 2 / target**2,
        }.get(kind)
        if closed is not None and abs(closed - round(closed)) > 1e-6:
            assert n == max(2, math.ceil(closed))


def test_dkw_constant() -> None:
    for n in (1, 10, 1000, 10**7):
        for alpha in (1e-12, 1e-6, 0.05, 0.5):
            assert S.dkw_epsilon(n, alpha) == pytest.approx(math.sqrt(math.log(2 / alpha) / (2 * n)), rel=1e-15)
            assert S.two_sample_dkw_epsilon(n, 3 * n, alpha) == pytest.approx(
                math.sqrt(math.log(4 / alpha) / (2 * n)) + math.sqrt(math.log(4 / alpha) / (6 * n)), rel=1e-14
            )
    # Massart's bound is valid (exact Kolmogorov distribution below alpha) and nearly tight for large n.
    for n in (5, 50, 5000):
        for alpha in (1e-6, 0.01, 0.2):
            exact = sps.kstwo(n).sf(S.dkw_epsilon(n, alpha))
            assert exact <= alpha
    assert sps.kstwo(5000).sf(S.dkw_epsilon(5000, 0.05)) > 0.9 * 0.05
    # the test uses it, at alpha / d per coordinate
    x = np.linspace(0.01, 0.99, 99)[:, None] * np.ones((1, 4))
    assert S.dkw_cdf_test(x, lambda v: np.clip(v, 0, 1), 1e-3).threshold == S.dkw_epsilon(99, 1e-3 / 4)


def test_ks_statistics_match_scipy() -> None:
    rng = _rng("ks_scipy")
    x = rng.normal(size=(57, 5))
    res = S.dkw_cdf_test(x, sps.norm.cdf, 0.01)
    for j in range(5):
        assert res.p_values[j] == pytest.approx(
            min(1.0, 2 * math.exp(-2 * 57 * sps.kstest(x[:, j], sps.norm.cdf).statistic ** 2)), rel=1e-12
        )
    # two-sample, with heavy ties (integer data)
    a = rng.integers(0, 6, size=(40, 6)).astype(float)
    b = rng.integers(0, 7, size=(23, 6)).astype(float)
    res2 = S.two_sample_dkw_test(a, b, 0.01)
    scale = 1 / math.sqrt(40) + 1 / math.sqrt(23)
    for j in range(6):
        d = sps.ks_2samp(a[:, j], b[:, j]).statistic
        assert res2.p_values[j] == pytest.approx(min(1.0, 4 * math.exp(-2 * d**2 / scale**2)), rel=1e-12)
    worst = res2.worst_coordinate
    assert res2.statistic == pytest.approx(sps.ks_2samp(a[:, worst], b[:, worst]).statistic, rel=1e-15)


def test_shapes_flatten_to_coordinates() -> None:
    rng = _rng("shapes")
    x = rng.normal(size=(30, 2, 3))
    mu = np.arange(6.0).reshape(2, 3) / 10
    var = np.linspace(0.5, 2, 3)  # broadcasts along the last axis
    r3 = S.gaussian_moments_test(x, mu, var, 1e-3)
    r2 = S.gaussian_moments_test(x.reshape(30, 6), mu.ravel(), np.tile(var, 2), 1e-3)
    assert r3.dims == r2.dims == 6
    np.testing.assert_array_equal(r3.p_values, r2.p_values)
    c = S.dkw_cdf_test(x, sps.norm(loc=mu).cdf, 1e-3)  # per-coordinate CDF parameters broadcast
    assert c.dims == 6
    assert c.p_values[5] == S.dkw_cdf_test(x[:, 1, 2], sps.norm(loc=mu[1, 2]).cdf, 1e-3).p_values[0]


def test_failing_results_report_failure() -> None:
    x = _rng("fail").normal(5.0, 1.0, size=(200, 3))
    assert not S.mean_test(x, 0.0, 1.0, 1e-9).passed
    assert not S.variance_test(x * 3.0, 1.0, 1e-9, mean=15.0).passed
    assert not S.dkw_cdf_test(x, sps.norm.cdf, 1e-9).passed
    r = S.gaussian_moments_test(x, 5.0, 9.0, 1e-9)
    assert not r.passed and r.parts[0].passed and not r.parts[1].passed
    assert r.statistic == r.parts[1].statistic


# ---------------------------------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------------------------------


def test_ledger_arithmetic_and_budget() -> None:
    led = S.Ledger(budget=1e-6)
    assert led.allocate("t1", 3e-7) == 3e-7
    led.allocate("t2", 2e-7)
    assert led.total == pytest.approx(5e-7, rel=1e-15)
    assert led.remaining() == pytest.approx(5e-7, rel=1e-12)
    assert led.remaining(2e-6) == pytest.approx(1.5e-6, rel=1e-12)
    with pytest.raises(ValueError, match="alpha"):
        led.allocate("t3", 6e-7)
    assert [e.name for e in led.entries] == ["t1", "t2"]
    with pytest.raises(ValueError, match="name"):
        led.allocate("t1", 1e-9)
    for i in range(5):  # filling the budget exactly is allowed
        led.allocate(f"fill{i}", 1e-7)
    assert led.remaining() == pytest.approx(0.0, abs=1e-20)
    with pytest.raises(ValueError, match="alpha"):
        led.allocate("over", 1e-12)
    assert S.LEDGER.budget == 1e-6 == S.DEFAULT_BUDGET


def test_ledger_record_and_format() -> None:
    led = S.Ledger()
    x = _rng("ledger").normal(size=(100, 2))
    led.allocate("my_mean_check", 1e-8)
    r1 = S.mean_test(x, 0.0, 1.0, 1e-8, name="my_mean_check")
    assert S.record(r1, led) is r1
    r2 = S.record(S.gaussian_moments_test(x, 0.0, 1.0, 1e-7, name="moments"), led)
    r3 = S.record(S.mean_test(x, 4.0, 1.0, 1e-9, name="shifted"), led)
    led.allocate("not_run_yet", 1e-9)
    assert [e.result for e in led.entries] == [r1, r2, r3, None]
    assert led.total == pytest.approx(1e-8 + 1e-7 + 1e-9 + 1e-9, rel=1e-15)
    table = led.format()
    for text in ("my_mean_check", "moments", "shifted", "not_run_yet", "not recorded", "NO", "yes", "alpha", "100"):
        assert text in table
    assert f"{r1.min_detectable:.3g}" in table
    with pytest.raises(ValueError, match="result"):
        led.record(r1)  # already recorded
    led.allocate("small", 1e-10)
    with pytest.raises(ValueError, match="result"):
        led.record(S.mean_test(x, 0.0, 1.0, 1e-8, name="small"))  # spends more than allocated
    with pytest.raises(ValueError, match="result"):
        led.record("not a result")  # type: ignore[arg-type]
    led.reset()
    assert led.entries == () and led.total == 0.0


# ---------------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------------


def test_seed_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(S.FRESH_SEEDS_ENV, raising=False)
    assert S.seed_for("some/test") == zlib.crc32(b"some/test")
    assert S.seed_for("some/test", 7) == zlib.crc32(b"7:some/test")
    assert S.seed_for("other") != S.seed_for("some/test")
    monkeypatch.setenv(S.FRESH_SEEDS_ENV, "0")
    assert S.seed_for("some/test") == zlib.crc32(b"some/test")
    monkeypatch.setenv(S.FRESH_SEEDS_ENV, "1")
    seeds = [S.seed_for("some/test", 7) for _ in range(2)]
    assert all(0 <= s < 2**32 for s in seeds)
    S.LEDGER.allocate("tests/stats/fresh_seeds_differ", 2.0**-32)  # two fresh 32-bit seeds collide with prob 2^-32
    assert seeds[0] != seeds[1]
    assert S.issued_seeds()["some/test"] == seeds[1]
    monkeypatch.setenv(S.FRESH_SEEDS_ENV, "yes")
    with pytest.raises(ValueError, match=S.FRESH_SEEDS_ENV):
        S.seed_for("x")


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------

_X = np.random.default_rng(0).normal(size=(10, 2))


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.1"])
def test_bad_alpha(alpha: object) -> None:
    for call in (
        lambda: S.mean_test(_X, 0.0, 1.0, alpha),
        lambda: S.variance_test(_X, 1.0, alpha),
        lambda: S.dkw_cdf_test(_X, sps.norm.cdf, alpha),
        lambda: S.two_sample_mean_test(_X, _X, alpha),
        lambda: S.two_sample_variance_test(_X, _X, alpha),
        lambda: S.two_sample_dkw_test(_X, _X, alpha),
        lambda: S.gaussian_moments_test(_X, 0.0, 1.0, alpha),
        lambda: S.min_num_samples(0.1, alpha, 0.9, "mean"),
        lambda: S.min_detectable(10, alpha, 0.9, "cdf"),
        lambda: S.dkw_epsilon(10, alpha),
        lambda: S.Ledger().allocate("a", alpha),
    ):
        with pytest.raises(ValueError, match="alpha"):
            call()


def test_bad_samples() -> None:
    nan = _X.copy()
    nan[3, 1] = np.nan
    for bad in (np.zeros((1, 3)), np.array([1.0]), 2.0, nan, np.full((4, 2), np.inf), np.zeros((5, 0)), ["a", "b"]):
        with pytest.raises(ValueError, match="samples"):
            S.mean_test(bad, 0.0, 1.0, 0.01)
        with pytest.raises(ValueError, match="samples"):
            S.dkw_cdf_test(bad, sps.norm.cdf, 0.01)
    with pytest.raises(ValueError, match="n=1"):
        S.variance_test(np.zeros((1, 3)), 1.0, 0.01)
    with pytest.raises(ValueError, match="a="):
        S.two_sample_dkw_test(nan, _X, 0.01)
    with pytest.raises(ValueError, match="b="):
        S.two_sample_mean_test(_X, np.zeros((1, 2)), 0.01)
    with pytest.raises(ValueError, match="b="):
        S.two_sample_variance_test(_X, np.ones((5, 3)), 0.01)  # coordinate shapes differ
    with pytest.raises(ValueError, match="b="):
        S.two_sample_variance_test(_X, np.ones((5, 2)), 0.01)  # zero variance


@pytest.mark.parametrize("variance", [0.0, -1.0, [1.0, 0.0], float("inf")])
def test_bad_variance(variance: object) -> None:
    with pytest.raises(ValueError, match="variance"):
        S.mean_test(_X, 0.0, variance, 0.01)
    with pytest.raises(ValueError, match="variance"):
        S.variance_test(_X, variance, 0.01)
    with pytest.raises(ValueError, match="variance"):
        S.gaussian_moments_test(_X, 0.0, variance, 0.01)
    with pytest.raises(ValueError, match="variance_a"):
        S.two_sample_mean_test(_X, _X, 0.01, variance_a=variance, variance_b=1.0)


def test_bad_other_arguments() -> None:
    with pytest.raises(ValueError, match="mean"):
        S.mean_test(_X, [0.0, 1.0, 2.0], 1.0, 0.01)
    with pytest.raises(ValueError, match="mean"):
        S.variance_test(_X, 1.0, 0.01, mean=float("nan"))
    with pytest.raises(ValueError, match="variance_b"):
        S.two_sample_mean_test(_X, _X, 0.01, variance_a=1.0)
    with pytest.raises(ValueError, match="cdf"):
        S.dkw_cdf_test(_X, "norm", 0.01)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cdf"):
        S.dkw_cdf_test(_X, lambda v: v[:, 0], 0.01)  # wrong shape
    with pytest.raises(ValueError, match="cdf"):
        S.dkw_cdf_test(_X, lambda v: v, 0.01)  # outside [0, 1]
    with pytest.raises(ValueError, match="cdf"):
        S.dkw_cdf_test(_X, lambda v: 1.0 - sps.norm.cdf(v), 0.01)  # decreasing
    for power in (0.0, 1.0, 2.0):
        with pytest.raises(ValueError, match="power"):
            S.mean_test(_X, 0.0, 1.0, 0.01, power=power)
    with pytest.raises(ValueError, match="kind"):
        S.min_num_samples(0.1, 0.01, 0.9, "median")
    with pytest.raises(ValueError, match="discrepancy"):
        S.min_num_samples(1.0, 0.01, 0.9, "variance")
    with pytest.raises(ValueError, match="discrepancy"):
        S.min_num_samples(0.0, 0.01, 0.9, "mean")
    with pytest.raises(ValueError, match="discrepancy"):
        S.min_num_samples(1e-9, 1e-9, 0.9, "cdf")  # needs more than 1e15 draws
    with pytest.raises(ValueError, match="n="):
        S.min_detectable(1, 0.01, 0.9, "mean")
    with pytest.raises(ValueError, match="dims"):
        S.min_detectable(10, 0.01, 0.9, "mean", dims=0)
    with pytest.raises(ValueError, match="name"):
        S.mean_test(_X, 0.0, 1.0, 0.01, name="")
    with pytest.raises(ValueError, match="budget"):
        S.Ledger(budget=0.0)
    with pytest.raises(ValueError, match="name"):
        S.Ledger().allocate("", 1e-9)
    with pytest.raises(ValueError, match="name"):
        S.seed_for("")
    with pytest.raises(ValueError, match="base_seed"):
        S.seed_for("x", -1)


# ---------------------------------------------------------------------------------------------------
# The offset-tolerant variance test (loop.noise's small-σ steps)
# ---------------------------------------------------------------------------------------------------


def _offset_tolerant_rate(n: int, lam: float, a: float, scale: float = 1.0, allowance: float | None = None) -> float:
    """Exact rejection rate at level a of one column: statistic = scale * ncx2(n, lam / scale), thresholds from
    the central chi-square (lower) and the non-central chi-square at ``allowance`` (upper)."""
    allowance = lam if allowance is None else allowance
    c_lo = sps.chi2(n).ppf(a / 2)
    c_hi = sps.ncx2(n, allowance).isf(a / 2) if allowance > 0 else sps.chi2(n).isf(a / 2)
    law = sps.ncx2(n, lam / scale) if lam > 0 else sps.chi2(n)
    return float(law.cdf(c_lo / scale) + law.sf(c_hi / scale))


def test_offset_tolerant_variance_test_calibration_at_the_worst_offset() -> None:
    # every residual off by b: the non-centrality is exactly n b^2, the allowance's worst case
    n, b, a = 40, 0.5, 0.05
    lam = n * b * b
    x = _rng("otv_cal").normal(0.0, 1.0, size=(n, R)) + b
    res = S.offset_tolerant_variance_test(x, np.full(R, lam), 0.1)
    exact = _offset_tolerant_rate(n, lam, a)
    assert exact <= a  # the level holds whatever the offsets inside the allowance
    _band("otv_cal", int(np.sum(res.p_values <= a)), R, exact)
    # the plain variance test, blind to the offsets, rejects far above its level on the same draws
    plain = S.variance_test(x, 1.0, 0.1, mean=0.0).p_values
    assert _offset_tolerant_rate(n, lam, a, allowance=0.0) > 3 * a
    _band("otv_cal_plain", int(np.sum(plain <= a)), R, _offset_tolerant_rate(n, lam, a, allowance=0.0))


def test_offset_tolerant_variance_test_power() -> None:
    n, lam = 60, 6.0
    res0 = S.offset_tolerant_variance_test(np.zeros((n, R)) + 1.0, np.full(R, lam), SMALL_ALPHA, power=POWER)
    ratio = res0.min_detectable
    x = _rng("otv_pow").normal(0.0, math.sqrt(ratio), size=(n, R))
    res = S.offset_tolerant_variance_test(x, np.full(R, lam), SMALL_ALPHA, power=POWER)
    exact = _offset_tolerant_rate(n, 0.0, SMALL_ALPHA / R, scale=ratio, allowance=lam)
    assert exact >= POWER * (1 - 1e-12)
    _band("otv_pow", int(np.sum(res.p_values <= SMALL_ALPHA / R)), R, exact)


def test_offset_tolerant_variance_test_pooled_is_one_long_column() -> None:
    x = _rng("otv_pool").normal(0.0, 1.1, size=(50, 7))
    lam = np.linspace(0.0, 3.0, 7)
    pooled = S.offset_tolerant_variance_test(x, lam, 1e-3, pooled=True)
    long = S.offset_tolerant_variance_test(x.T.reshape(-1, 1), [lam.sum()], 1e-3)
    assert pooled.statistic == pytest.approx(float(np.sum(x * x)) / x.size, rel=1e-12)
    assert pooled.p_value == pytest.approx(long.p_value, rel=1e-9)
    assert pooled.threshold == pytest.approx(long.threshold, rel=1e-12)
    assert pooled.dims == 7 and pooled.kind == "pooled_variance"


@pytest.mark.parametrize("allowance", [-1.0, float("nan"), [1.0, 2.0, 3.0]])
def test_offset_tolerant_variance_test_bad_allowance(allowance: object) -> None:
    with pytest.raises(ValueError, match="allowance"):
        S.offset_tolerant_variance_test(np.ones((5, 2)), allowance, 0.01)
