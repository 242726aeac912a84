r"""Statistical tests with a stated false-failure rate and a stated power, written once.

Every sampling-based check of ddspec (the property suite and the conformance harness) goes through
this module. It follows the design of TensorFlow Probability's ``statistical_testing`` module
(facts only, no code): a test is a pair

* a **false-failure rate** :math:`\alpha`: the probability that the test fails although the sampler
  is correct (the null hypothesis holds), and
* a **minimum detectable discrepancy** :math:`\delta_{\min}(n, \alpha, 1-\beta)`: the smallest
  departure from the null that the test detects with probability at least the **power**
  :math:`1-\beta` at its sample size :math:`n`.

Defaults: power :math:`1-\beta = 0.999` (``DEFAULT_POWER``; the false-pass rate
:math:`\beta = 10^{-3}` at the stated discrepancy), and a whole-run false-failure budget of
:math:`10^{-6}` (``DEFAULT_BUDGET``) split across all statistical tests through :class:`Ledger`.

Conventions shared by every test:

* ``samples`` is an array of shape ``(n,)`` or ``(n, d)``; more trailing axes ``(n, *shape)`` are
  flattened into ``d = prod(shape)`` coordinates. Axis 0 indexes independent draws. The ``d``
  coordinates are tested **jointly with a Bonferroni split**: coordinate ``j`` is tested at level
  :math:`\alpha/d`, and the joint test fails when any coordinate fails, so that by the union bound
  the joint false-failure rate is at most :math:`\alpha` whatever the dependence between
  coordinates. Parameters (``mean``, ``variance``) broadcast to ``shape``.
* A test never asserts: it returns a frozen :class:`StatResult` and the caller decides.
* Bad input raises ``ValueError("<argument>=<value>: <reason>")``.

This module imports numpy and scipy only, so it runs on any array (``tensor.cpu().numpy()``).
"""

from __future__ import annotations

import math
import os
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from scipy.optimize import brentq

from ddspec.reference._validate import as_array, as_int, as_scalar, fail

__all__ = [
    "DEFAULT_POWER",
    "DEFAULT_BUDGET",
    "KINDS",
    "StatResult",
    "mean_test",
    "variance_test",
    "dkw_cdf_test",
    "two_sample_mean_test",
    "two_sample_variance_test",
    "two_sample_dkw_test",
    "gaussian_moments_test",
    "POOLED_KINDS",
    "pooled_min_detectable",
    "pooled_mean_test",
    "pooled_variance_test",
    "offset_tolerant_variance_test",
    "mean_pattern_test",
    "dkw_epsilon",
    "two_sample_dkw_epsilon",
    "min_detectable",
    "min_num_samples",
    "LedgerEntry",
    "Ledger",
    "LEDGER",
    "record",
    "FRESH_SEEDS_ENV",
    "seed_for",
    "issued_seeds",
]

DEFAULT_POWER: float = 1.0 - 1e-3
"""Default detection probability :math:`1-\\beta` at the minimum detectable discrepancy."""

DEFAULT_BUDGET: float = 1e-6
"""Default false-failure budget of a whole test run, split across its statistical tests."""

KINDS: tuple[str, ...] = (
    "mean",
    "variance",
    "cdf",
    "two_sample_mean",
    "two_sample_variance",
    "two_sample_cdf",
)
"""Kinds accepted by :func:`min_detectable` and :func:`min_num_samples`."""

_MAX_SAMPLES = 10**15  # min_num_samples refuses discrepancies that would need more draws than this


# ---------------------------------------------------------------------------------------------------
# Result type
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatResult:
    r"""Outcome of one statistical test. Never asserted on here: the caller decides.

    Attributes:
        name: the test's name (the ledger key).
        kind: which test (``"mean"``, ``"variance"``, ``"cdf"``, ``"two_sample_mean"``,
            ``"two_sample_variance"``, ``"two_sample_cdf"``, ``"gaussian_moments"``, or a pooled kind
            of :data:`POOLED_KINDS`, whose ``min_detectable`` is in units of each coordinate's σ and
            whose single p-value is compared with α itself, not α/d).
        passed: ``True`` when no coordinate rejects the null hypothesis.
        statistic: the test statistic of the worst coordinate (the one with the smallest p-value),
            in the test's natural units (z, variance ratio, sup-distance, ...).
        threshold: the critical value that ``statistic`` is compared with (for two-sided ratio tests,
            the critical value on the side where ``statistic`` lies).
        p_value: the smallest per-coordinate p-value; ``passed`` is equivalent to
            ``p_value > false_failure_rate / dims`` (Bonferroni), up to rounding at the boundary.
        false_failure_rate: :math:`\alpha`, the probability of ``passed == False`` under the null,
            for all coordinates together.
        power: :math:`1-\beta`, the detection probability at ``min_detectable``.
        min_detectable: the smallest discrepancy (in the units of ``kind``, see
            :func:`min_detectable`) detected with probability at least ``power``; for several
            coordinates, the largest over coordinates (a discrepancy this large in any single
            coordinate is detected).
        n: number of draws (of the first sample, for two-sample tests).
        m: number of draws of the second sample (two-sample tests), else ``None``.
        dims: number of coordinates ``d`` tested jointly.
        worst_coordinate: flat index of the worst coordinate.
        detail: a human-readable account (statistic, critical values, levels).
        p_values: the per-coordinate p-values, shape ``(d,)``. Each equals the p-value of the
            one-coordinate test of that coordinate alone, which makes replications vectorisable:
            put replications in the coordinates and count ``p_values <= alpha``.
        parts: the component results of a combined test (:func:`gaussian_moments_test`).
    """

    name: str
    kind: str
    passed: bool
    statistic: float
    threshold: float
    p_value: float
    false_failure_rate: float
    power: float
    min_detectable: float
    n: int
    m: int | None
    dims: int
    worst_coordinate: int
    detail: str
    p_values: NDArray[np.float64] = field(compare=False, repr=False)
    parts: tuple["StatResult", ...] = ()

    def describe_min_detectable(self) -> str:
        r"""The minimum detectable discrepancy as text, with its units (used by :meth:`Ledger.format`)."""
        if self.parts:
            return "; ".join(p.describe_min_detectable() for p in self.parts)
        v = self.min_detectable
        if self.kind in ("mean", "two_sample_mean"):
            return f"|Δmean| ≥ {v:.3g}"
        if self.kind in ("variance", "two_sample_variance"):
            return f"var ratio ∉ (1/{v:.4g}, {v:.4g})"
        if self.kind == "pooled_mean":
            return f"common |Δmean| ≥ {v:.3g} σ"
        if self.kind == "pooled_variance":
            return f"var ratio ∉ (1/{v:.6g}, {v:.6g}) (std error ≥ {100 * (math.sqrt(v) - 1):.3g} %)"
        if self.kind == "mean_pattern":
            return f"RMS |Δmean| ≥ {v:.3g} σ"
        return f"sup|ΔF| ≥ {v:.3g}"


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------


def _alpha(alpha: Any, name: str = "alpha") -> float:
    return as_scalar(alpha, name, low=0.0, high=1.0, low_open=True, high_open=True)


def _power(power: Any) -> float:
    return as_scalar(power, "power", low=0.0, high=1.0, low_open=True, high_open=True)


def _name(name: Any, default: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str) or not name:
        fail("name", name, "expected a non-empty string")
    return name


def _samples(x: ArrayLike, name: str) -> tuple[NDArray[np.float64], tuple[int, ...]]:
    """Validate draws along axis 0; return them as ``(n, d)`` and the coordinate shape."""
    arr = as_array(x, name)
    if arr.ndim == 0:
        fail(name, x, "expected an array of draws along axis 0, shape (n,) or (n, d), got a scalar")
    n = arr.shape[0]
    if n < 2:
        fail(name, x, f"need at least n >= 2 draws along axis 0, got n={n}")
    coord_shape = arr.shape[1:]
    if math.prod(coord_shape) == 0:
        fail(name, x, f"has no coordinates (shape {arr.shape})")
    return arr.reshape(n, -1), coord_shape


def _param(x: ArrayLike, name: str, coord_shape: tuple[int, ...], *, positive: bool) -> NDArray[np.float64]:
    """Validate a per-coordinate parameter and broadcast it to the flattened coordinates ``(d,)``."""
    arr = as_array(x, name)
    if positive and np.any(arr <= 0.0):
        fail(name, x, "must be > 0")
    try:
        out = np.broadcast_to(arr, coord_shape)
    except ValueError:
        fail(name, x, f"shape {arr.shape} does not broadcast to the coordinate shape {coord_shape}")
    return np.ascontiguousarray(out, dtype=np.float64).reshape(-1)


def _worst(p: NDArray[np.float64]) -> int:
    return int(np.argmin(p))


# ---------------------------------------------------------------------------------------------------
# Minimum detectable discrepancy (forward) and its inverse
# ---------------------------------------------------------------------------------------------------


def dkw_epsilon(n: int, alpha: float) -> float:
    r"""Half-width of the DKW confidence band of an empirical CDF (Massart's tight constant).

    .. math::

        \Pr\Big(\sup_x |F_n(x) - F(x)| > \varepsilon\Big) \le 2 e^{-2 n \varepsilon^2}
        \quad\Longrightarrow\quad
        \varepsilon(n, \alpha) = \sqrt{\frac{\log(2/\alpha)}{2n}}

    Source: Dvoretzky, Kiefer & Wolfowitz (1956), with the constant 2 proved by Massart (1990),
    *The tight constant in the Dvoretzky–Kiefer–Wolfowitz inequality*, Ann. Probab. 18(3), Thm. 1
    (valid whenever the bound is at most 1, i.e. for every :math:`\alpha \in (0, 1)`). It holds for
    every distribution :math:`F`; it is conservative (its level is below :math:`\alpha`), and
    nearly tight for continuous :math:`F` and large :math:`n`.
    """
    n = as_int(n, "n", low=1)
    alpha = _alpha(alpha)
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def two_sample_dkw_epsilon(n: int, m: int, alpha: float) -> float:
    r"""Critical value of the two-sample DKW test: the sum of two one-sample bands at level α/2.

    .. math::

        \sup_x |F_n(x) - G_m(x)| \le \sup_x |F_n - F| + \sup_x |G_m - F|
        \quad\text{under } F = G, \qquad
        \varepsilon_2(n, m, \alpha) = \varepsilon(n, \alpha/2) + \varepsilon(m, \alpha/2)
        = \sqrt{\frac{\log(4/\alpha)}{2}}\Big(\frac{1}{\sqrt n} + \frac{1}{\sqrt m}\Big)

    Source: the triangle inequality and :func:`dkw_epsilon` with a union bound; the same
    construction as TensorFlow Probability's two-sample DKWM assertion. Conservative (the exact
    two-sample Kolmogorov–Smirnov level is well below :math:`\alpha`), but valid for every ``n``,
    ``m`` and every :math:`\alpha`, unlike asymptotic p-values.
    """
    n = as_int(n, "n", low=1)
    m = as_int(m, "m", low=1)
    alpha = _alpha(alpha)
    return math.sqrt(math.log(4.0 / alpha) / 2.0) * (1.0 / math.sqrt(n) + 1.0 / math.sqrt(m))


def _mean_factor(alpha_c: float, beta: float) -> float:
    """z_{1-α_c/2} + z_{1-β}: the shift, in standard errors, detected with probability 1-β."""
    return float(sps.norm.isf(alpha_c / 2.0) + sps.norm.isf(beta))


def _welch_factor(nu: float, alpha_c: float, beta: float) -> float:
    """Noncentrality (in standard errors) at which a two-sided t-test with ``nu`` dof detects w.p. 1-β.

    Solves ``P(T_{nu, nc} > t_{nu; alpha_c/2}) = 1 - β`` for ``nc`` (noncentral t, upper tail only,
    which is conservative); decreasing in ``nu``. The root is bracketed by the conservative closed form
    ``z_{β/2} + t_{nu; alpha_c/2} sqrt(χ²_{nu; 1-β/2} / nu)`` (union bound over the normal numerator
    and the chi-square denominator of T), which is also returned where scipy's noncentral t is not
    finite (extreme tails at nu of order 1).
    """
    crit = float(sps.t.isf(alpha_c / 2.0, nu))
    bound = float(sps.norm.isf(beta / 2.0) + crit * math.sqrt(sps.chi2.isf(beta / 2.0, nu) / nu))

    def miss(nc: float) -> float:
        return float(sps.nct.cdf(crit, nu, nc)) - beta

    lo_miss, hi_miss = miss(0.0), miss(bound)
    if not (math.isfinite(lo_miss) and math.isfinite(hi_miss)) or hi_miss > 0.0:
        return bound
    if lo_miss <= 0.0:
        return 0.0
    try:
        return float(brentq(miss, 0.0, bound, xtol=1e-12, rtol=1e-12))
    except (ValueError, RuntimeError):  # a NaN from scipy's noncentral t inside the bracket
        return bound


def _ratio_min_detectable(dist: Any, alpha_c: float, beta: float) -> float:
    """max(c_hi / q_β, q_{1-β} / c_lo) for a scale family ``ratio * dist``."""
    c_lo, c_hi = float(dist.ppf(alpha_c / 2.0)), float(dist.isf(alpha_c / 2.0))
    q_beta, q_1mbeta = float(dist.ppf(beta)), float(dist.isf(beta))
    return max(c_hi / q_beta, q_1mbeta / c_lo)


def min_detectable(
    n: int,
    alpha: float,
    power: float,
    kind: str,
    *,
    dims: int = 1,
    variance: float = 1.0,
    known_mean: bool = False,
    m: int | None = None,
) -> float:
    r"""Smallest discrepancy detected with probability ≥ ``power`` by a test of level ``alpha``.

    With :math:`\alpha_c = \alpha/d` the per-coordinate level (Bonferroni over ``dims`` = d),
    :math:`\beta = 1 - \text{power}`, :math:`z_q` the standard normal upper-:math:`q` quantile
    (``norm.isf(q)``) and :math:`\varepsilon` of :func:`dkw_epsilon`:

    ``"mean"`` (|true mean − hypothesised mean|, z-test with known variance :math:`\sigma^2` =
    ``variance``):

    .. math:: \delta_{\min} = \frac{\sigma}{\sqrt n}\big(z_{\alpha_c/2} + z_{\beta}\big)

    (exact for Gaussian draws: the power is
    :math:`\Phi(z_\beta) + \Phi(-2 z_{\alpha_c/2} - z_\beta) \ge 1 - \beta`).

    ``"two_sample_mean"``: the same with :math:`\sigma/\sqrt n` replaced by
    :math:`\sqrt{\sigma^2/n + \sigma^2/m}` (both samples of variance ``variance``).

    ``"variance"`` (ratio :math:`r` = true variance / hypothesised variance; the chi-square statistic
    is :math:`r\,\chi^2_k` with :math:`k = n` for a known mean, :math:`k = n-1` otherwise):

    .. math::

        \rho = \max\Big(\frac{\chi^2_{k;\,1-\alpha_c/2}}{\chi^2_{k;\,\beta}},\;
                        \frac{\chi^2_{k;\,1-\beta}}{\chi^2_{k;\,\alpha_c/2}}\Big)

    (lower-tail quantiles :math:`\chi^2_{k;q}`); every ratio :math:`r \ge \rho` or
    :math:`r \le 1/\rho` is detected. Exact for Gaussian draws.

    ``"two_sample_variance"``: the same with the :math:`F_{n-1,\,m-1}` distribution (ratio
    :math:`\sigma_a^2/\sigma_b^2`).

    ``"cdf"`` (sup-distance :math:`\sup_x|G - F|` between true and hypothesised CDFs):

    .. math:: \delta_{\min} = \varepsilon(n, \alpha_c) + \sqrt{\frac{\log(1/\beta)}{2n}}

    ``"two_sample_cdf"``:

    .. math::

        \delta_{\min} = \varepsilon_2(n, m, \alpha_c)
                      + \sqrt{\frac{\log(1/\beta)}{2}\Big(\frac1n + \frac1m\Big)}

    Derivation of the CDF forms: if :math:`|G(x^*) - F(x^*)| = \delta`, the test passes only if
    :math:`|F_n(x^*) - G(x^*)| \ge \delta - \varepsilon`, a deviation of a mean of ``n`` bounded
    variables in one direction, of probability at most :math:`e^{-2n(\delta-\varepsilon)^2}` by
    Hoeffding (1963), Thm. 2 (for two samples, the difference of the two means, with ranges
    :math:`1/n` and :math:`1/m`). This is conservative (the true power is higher).

    Args:
        n: number of draws (first sample for two-sample kinds), ``n >= 2``.
        alpha: false-failure rate of the whole test, in (0, 1).
        power: detection probability :math:`1-\beta`, in (0, 1).
        kind: one of :data:`KINDS`.
        dims: number of coordinates tested jointly (Bonferroni).
        variance: :math:`\sigma^2` for the mean kinds (ignored otherwise).
        known_mean: for ``"variance"``: whether the mean is known (k = n) or estimated (k = n - 1).
        m: second sample size for two-sample kinds (default ``n``).
    """
    n = as_int(n, "n", low=2)
    alpha = _alpha(alpha)
    beta = 1.0 - _power(power)
    dims = as_int(dims, "dims", low=1)
    if kind not in KINDS:
        fail("kind", kind, f"expected one of {KINDS}")
    variance = as_scalar(variance, "variance", low=0.0, low_open=True)
    if m is None:
        m = n
    m = as_int(m, "m", low=2)
    alpha_c = alpha / dims
    if kind == "mean":
        return math.sqrt(variance / n) * _mean_factor(alpha_c, beta)
    if kind == "two_sample_mean":
        return math.sqrt(variance / n + variance / m) * _mean_factor(alpha_c, beta)
    if kind == "variance":
        k = n if known_mean else n - 1
        return _ratio_min_detectable(sps.chi2(k), alpha_c, beta)
    if kind == "two_sample_variance":
        return _ratio_min_detectable(sps.f(n - 1, m - 1), alpha_c, beta)
    if kind == "cdf":
        return dkw_epsilon(n, alpha_c) + math.sqrt(math.log(1.0 / beta) / (2.0 * n))
    # two_sample_cdf
    return two_sample_dkw_epsilon(n, m, alpha_c) + math.sqrt(math.log(1.0 / beta) / 2.0 * (1.0 / n + 1.0 / m))


def min_num_samples(
    discrepancy: float,
    alpha: float,
    power: float,
    kind: str,
    *,
    dims: int = 1,
    variance: float = 1.0,
    known_mean: bool = False,
) -> int:
    r"""Smallest ``n`` whose :func:`min_detectable` is at most ``discrepancy``: its exact inverse.

    .. math:: n^* = \min\{\, n \ge 2 : \delta_{\min}(n, \alpha, 1-\beta) \le \delta \,\}

    so that ``min_detectable(n*) <= discrepancy < min_detectable(n* - 1)`` (the second part when
    ``n* > 2``). For two-sample kinds, ``n`` is the size of *each* sample (``m = n``). Closed forms
    (ceilings, up to rounding) for the mean and CDF kinds:

    .. math::

        n^*_{\text{mean}} = \Big\lceil \frac{\sigma^2 (z_{\alpha_c/2} + z_\beta)^2}{\delta^2} \Big\rceil,
        \qquad
        n^*_{\text{cdf}} = \Big\lceil \frac{\big(\sqrt{\log(2/\alpha_c)} + \sqrt{\log(1/\beta)}\big)^2}
                                        {2\delta^2} \Big\rceil,

        n^*_{\text{two\_sample\_mean}} = \Big\lceil \frac{2\sigma^2 (z_{\alpha_c/2} + z_\beta)^2}{\delta^2} \Big\rceil,
        \qquad
        n^*_{\text{two\_sample\_cdf}} = \Big\lceil \frac{\big(\sqrt{2\log(4/\alpha_c)} + \sqrt{\log(1/\beta)}\big)^2}
                                                 {\delta^2} \Big\rceil.

    The variance kinds have no closed form; ``discrepancy`` is then the ratio :math:`\rho > 1`.
    All kinds are computed by the same integer search on :func:`min_detectable` (decreasing in n),
    which makes the inverse relation exact.

    Args:
        discrepancy: mean shift or sup-CDF distance (> 0), or variance ratio (> 1).
        alpha, power, kind, dims, variance, known_mean: as in :func:`min_detectable`.
    """
    alpha = _alpha(alpha)
    power = _power(power)
    dims = as_int(dims, "dims", low=1)
    if kind not in KINDS:
        fail("kind", kind, f"expected one of {KINDS}")
    if kind in ("variance", "two_sample_variance"):
        delta = as_scalar(discrepancy, "discrepancy", low=1.0, low_open=True)
    elif kind in ("cdf", "two_sample_cdf"):
        delta = as_scalar(discrepancy, "discrepancy", low=0.0, high=1.0, low_open=True)
    else:
        delta = as_scalar(discrepancy, "discrepancy", low=0.0, low_open=True)

    def detectable(n: int) -> bool:
        return min_detectable(n, alpha, power, kind, dims=dims, variance=variance, known_mean=known_mean) <= delta

    lo = 2
    if detectable(lo):
        return lo
    hi = 4
    while not detectable(hi):  # invariant: not detectable(lo)
        lo = hi
        hi *= 2
        if hi > _MAX_SAMPLES:
            fail("discrepancy", discrepancy, f"needs more than {_MAX_SAMPLES:.0e} samples at alpha={alpha!r}")
    while hi - lo > 1:  # invariant: not detectable(lo), detectable(hi)
        mid = (lo + hi) // 2
        if detectable(mid):
            hi = mid
        else:
            lo = mid
    return hi


# ---------------------------------------------------------------------------------------------------
# One-sample tests
# ---------------------------------------------------------------------------------------------------


def mean_test(
    samples: ArrayLike,
    mean: ArrayLike,
    variance: ArrayLike,
    alpha: float,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""One-sample two-sided z-test that the true mean equals ``mean`` when the variance is known.

    .. math::

        z_j = \frac{\sqrt n\,(\bar x_j - \mu_j)}{\sigma_j}, \qquad
        \text{fail} \iff \max_j |z_j| > z_{\alpha/(2d)}, \qquad
        p_j = 2\,\Phi(-|z_j|)

    Under the null :math:`z_j \sim \mathcal N(0, 1)` exactly for Gaussian draws (so the level is
    exactly :math:`\alpha/d` per coordinate), and approximately (central limit theorem) otherwise.
    Minimum detectable shift: ``min_detectable(n, alpha, power, "mean", dims=d, variance=max σ_j²)``,
    i.e. :math:`\max_j \sigma_j (z_{\alpha/(2d)} + z_\beta)/\sqrt n`.

    Args:
        samples: draws, shape ``(n,)`` or ``(n, *shape)``.
        mean: hypothesised mean :math:`\mu`, broadcast to ``shape``.
        variance: known true variance :math:`\sigma^2 > 0`, broadcast to ``shape``.
        alpha: false-failure rate of the joint test, in (0, 1).
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"mean_test"``).
    """
    x, shape = _samples(samples, "samples")
    mu = _param(mean, "mean", shape, positive=False)
    var = _param(variance, "variance", shape, positive=True)
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "mean_test")
    n, d = x.shape
    alpha_c = alpha / d
    z = math.sqrt(n) * (x.mean(axis=0) - mu) / np.sqrt(var)
    p = 2.0 * sps.norm.sf(np.abs(z))
    crit = float(sps.norm.isf(alpha_c / 2.0))
    j = _worst(p)
    passed = bool(np.all(np.abs(z) <= crit))
    delta = min_detectable(n, alpha, power, "mean", dims=d, variance=float(var.max()))
    detail = (
        f"z-test, known variance: worst coordinate {j} of {d}: z = {z[j]:.4g}, pass iff |z| <= {crit:.4g} "
        f"(per-coordinate alpha {alpha_c:.3g}); detects |Δmean| >= {delta:.4g} "
        f"(= {delta / math.sqrt(float(var.max())):.4g} σ) with probability >= {power}"
    )
    return StatResult(
        name=name, kind="mean", passed=passed,
        statistic=float(abs(z[j])), threshold=crit, p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=delta,
        n=n, m=None, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


def variance_test(
    samples: ArrayLike,
    variance: ArrayLike,
    alpha: float,
    mean: ArrayLike | None = None,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""One-sample two-sided chi-square test that a Gaussian's true variance equals ``variance``.

    .. math::

        S_j = \frac{\sum_i (x_{ij} - c_j)^2}{\sigma_j^2} \sim \chi^2_k, \qquad
        c_j = \mu_j,\ k = n \ \text{(mean known)};\quad c_j = \bar x_j,\ k = n - 1 \ \text{(estimated)}

    .. math::

        \text{fail} \iff S_j \notin [\chi^2_{k;\,\alpha/(2d)},\ \chi^2_{k;\,1-\alpha/(2d)}]
        \text{ for some } j, \qquad p_j = 2 \min\big(F_{\chi^2_k}(S_j),\ 1 - F_{\chi^2_k}(S_j)\big)

    Source: Cochran's theorem (the sample variance of Gaussian draws is a scaled :math:`\chi^2_{n-1}`).
    The level is exact for Gaussian draws only; the test is not robust to heavy tails. The reported
    ``statistic`` and ``threshold`` are the variance ratio :math:`S_j/k` of the worst coordinate and
    the critical ratio on its side. Minimum detectable ratio: ``min_detectable(..., "variance")``.

    Args:
        samples: draws, shape ``(n,)`` or ``(n, *shape)``.
        variance: hypothesised variance :math:`\sigma^2 > 0`, broadcast to ``shape``.
        alpha: false-failure rate of the joint test, in (0, 1).
        mean: the known true mean, or ``None`` to estimate it.
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"variance_test"``).
    """
    x, shape = _samples(samples, "samples")
    var = _param(variance, "variance", shape, positive=True)
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "variance_test")
    n, d = x.shape
    if mean is None:
        k = n - 1
        center = x.mean(axis=0)
    else:
        k = n
        center = _param(mean, "mean", shape, positive=False)
    s = np.sum((x - center) ** 2, axis=0) / var
    dist = sps.chi2(k)
    p = np.minimum(1.0, 2.0 * np.minimum(dist.cdf(s), dist.sf(s)))
    alpha_c = alpha / d
    c_lo, c_hi = float(dist.ppf(alpha_c / 2.0)), float(dist.isf(alpha_c / 2.0))
    j = _worst(p)
    passed = bool(np.all((s >= c_lo) & (s <= c_hi)))
    ratio = float(s[j] / k)
    threshold = c_hi / k if s[j] > dist.median() else c_lo / k
    rho = min_detectable(n, alpha, power, "variance", dims=d, known_mean=mean is not None)
    detail = (
        f"chi-square test ({'known' if mean is not None else 'estimated'} mean, {k} dof): worst coordinate "
        f"{j} of {d}: variance ratio {ratio:.4g}, pass iff ratio in [{c_lo / k:.4g}, {c_hi / k:.4g}] "
        f"(per-coordinate alpha {alpha_c:.3g}); detects ratio >= {rho:.4g} or <= 1/{rho:.4g} "
        f"with probability >= {power}"
    )
    return StatResult(
        name=name, kind="variance", passed=passed,
        statistic=ratio, threshold=threshold, p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=rho,
        n=n, m=None, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


def dkw_cdf_test(
    samples: ArrayLike,
    cdf: Callable[[NDArray[np.float64]], ArrayLike],
    alpha: float,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""Whole-CDF test by the DKW inequality with Massart's constant.

    .. math::

        D_j = \sup_x |F_{n,j}(x) - F_j(x)|
            = \max_i \max\Big(\frac{i}{n} - F_j(x_{(i)j}),\ F_j(x_{(i)j}) - \frac{i-1}{n}\Big),

        \text{fail} \iff \max_j D_j > \varepsilon(n, \alpha/d) = \sqrt{\frac{\log(2d/\alpha)}{2n}},
        \qquad p_j = \min\big(1,\ 2 e^{-2 n D_j^2}\big)

    (:math:`x_{(i)j}` the order statistics of coordinate j; the formula is also right with ties.)
    The level is at most :math:`\alpha` for any true distribution (Massart 1990); ``p_j`` is the
    DKW bound, a valid (conservative) p-value. Minimum detectable sup-distance:
    ``min_detectable(n, alpha, power, "cdf", dims=d)``.

    Args:
        samples: draws, shape ``(n,)`` or ``(n, *shape)``.
        cdf: the hypothesised CDF, a vectorised callable. It is called once on the draws sorted along
            axis 0, an array of the shape of ``samples``, so per-coordinate parameters broadcast
            (e.g. ``scipy.stats.norm(loc=mu, scale=sd).cdf`` with ``mu`` of shape ``shape``). It must
            return values in [0, 1] of the same shape, non-decreasing along axis 0.
        alpha: false-failure rate of the joint test, in (0, 1).
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"dkw_cdf_test"``).
    """
    x, shape = _samples(samples, "samples")
    if not callable(cdf):
        fail("cdf", cdf, "expected a callable CDF")
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "dkw_cdf_test")
    n, d = x.shape
    xs = np.sort(x, axis=0)
    f = np.asarray(cdf(xs.reshape((n,) + shape)), dtype=np.float64)
    if f.shape != (n,) + shape:
        fail("cdf", cdf, f"returned shape {f.shape}, expected the samples' shape {(n,) + shape}")
    f = f.reshape(n, d)
    if not np.all(np.isfinite(f)) or np.any(f < 0.0) or np.any(f > 1.0):
        fail("cdf", cdf, "returned values outside [0, 1] or non-finite values")
    if np.any(np.diff(f, axis=0) < 0.0):
        fail("cdf", cdf, "is not non-decreasing")
    i = np.arange(1, n + 1, dtype=np.float64)[:, None]
    dist = np.maximum(np.max(i / n - f, axis=0), np.max(f - (i - 1.0) / n, axis=0))
    p = np.minimum(1.0, 2.0 * np.exp(-2.0 * n * dist**2))
    eps = dkw_epsilon(n, alpha / d)
    j = _worst(p)
    passed = bool(np.all(dist <= eps))
    delta = min_detectable(n, alpha, power, "cdf", dims=d)
    detail = (
        f"DKW test (Massart constant): worst coordinate {j} of {d}: sup|F_n - F| = {dist[j]:.4g}, "
        f"pass iff <= {eps:.4g} (per-coordinate alpha {alpha / d:.3g}); detects sup|ΔF| >= {delta:.4g} "
        f"with probability >= {power}"
    )
    return StatResult(
        name=name, kind="cdf", passed=passed,
        statistic=float(dist[j]), threshold=eps, p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=delta,
        n=n, m=None, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


# ---------------------------------------------------------------------------------------------------
# Two-sample tests
# ---------------------------------------------------------------------------------------------------


def _two_samples(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], tuple[int, ...]]:
    xa, shape_a = _samples(a, "a")
    xb, shape_b = _samples(b, "b")
    if shape_a != shape_b:
        fail("b", b, f"coordinate shape {shape_b} does not match a's coordinate shape {shape_a}")
    return xa, xb, shape_a


def two_sample_mean_test(
    a: ArrayLike,
    b: ArrayLike,
    alpha: float,
    *,
    variance_a: ArrayLike | None = None,
    variance_b: ArrayLike | None = None,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""Two-sample two-sided test that two true means are equal: Welch's t, or z with known variances.

    Known variances (both ``variance_a`` and ``variance_b`` given), exact for Gaussian draws:

    .. math::

        z_j = \frac{\bar a_j - \bar b_j}{\sqrt{\sigma_{a,j}^2/n + \sigma_{b,j}^2/m}}, \qquad
        \text{fail} \iff \max_j |z_j| > z_{\alpha/(2d)}

    Unknown variances: Welch's t-test (Welch 1947, *Biometrika* 34), computed by
    ``scipy.stats.ttest_ind(a, b, equal_var=False)``, :math:`t_j` with Welch–Satterthwaite degrees of
    freedom :math:`\nu_j`; fail iff :math:`|t_j| > t_{\nu_j;\,\alpha/(2d)}` (upper quantile). Its level
    is approximate (exact as n, m grow, very close for Gaussian draws). Minimum detectable shift:
    :math:`\max_j \mathrm{se}_j (z_{\alpha/(2d)} + z_\beta)` with known variances (exact), and for
    Welch the plug-in :math:`\max_j \widehat{\mathrm{se}}_j\,\lambda(\min_j \nu_j)`, where
    :math:`\lambda(\nu)` solves :math:`\Pr(T_{\nu,\lambda} > t_{\nu;\,\alpha/(2d)}) = 1-\beta` for the
    noncentral t (an estimate: it uses the sample variances and the Welch–Satterthwaite
    approximation; exact power for equal sizes and variances given the standard error).

    Args:
        a, b: draws, shapes ``(n, *shape)`` and ``(m, *shape)``.
        alpha: false-failure rate of the joint test, in (0, 1).
        variance_a, variance_b: known true variances (both or neither), broadcast to ``shape``.
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"two_sample_mean_test"``).
    """
    xa, xb, shape = _two_samples(a, b)
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "two_sample_mean_test")
    if (variance_a is None) != (variance_b is None):
        missing = "variance_b" if variance_b is None else "variance_a"
        fail(missing, None, "give both known variances (z-test) or neither (Welch t-test)")
    n, d = xa.shape
    m = xb.shape[0]
    alpha_c = alpha / d
    beta = 1.0 - power
    diff = xa.mean(axis=0) - xb.mean(axis=0)
    if variance_a is not None:
        va = _param(variance_a, "variance_a", shape, positive=True)
        vb = _param(variance_b, "variance_b", shape, positive=True)
        se = np.sqrt(va / n + vb / m)
        stat = diff / se
        p = 2.0 * sps.norm.sf(np.abs(stat))
        crit = np.full(d, float(sps.norm.isf(alpha_c / 2.0)))
        delta = float(se.max()) * _mean_factor(alpha_c, beta)
        how = "z-test, known variances"
    else:
        res = sps.ttest_ind(xa, xb, axis=0, equal_var=False)
        stat = np.asarray(res.statistic, dtype=np.float64)
        p = np.asarray(res.pvalue, dtype=np.float64)
        nu = np.asarray(res.df, dtype=np.float64)
        if not (np.all(np.isfinite(stat)) and np.all(np.isfinite(nu))):
            fail("a", a, "Welch's t is undefined: both samples are constant in some coordinate")
        se = np.sqrt(xa.var(axis=0, ddof=1) / n + xb.var(axis=0, ddof=1) / m)
        crit = sps.t.isf(alpha_c / 2.0, nu)
        delta = float(se.max()) * _welch_factor(float(nu.min()), alpha_c, beta)
        how = "Welch t-test"
    j = _worst(p)
    passed = bool(np.all(np.abs(stat) <= crit))
    detail = (
        f"{how}: worst coordinate {j} of {d}: statistic {stat[j]:.4g}, pass iff |statistic| <= {crit[j]:.4g} "
        f"(per-coordinate alpha {alpha_c:.3g}); detects |Δmean| >= {delta:.4g} with probability >= {power}"
    )
    return StatResult(
        name=name, kind="two_sample_mean", passed=passed,
        statistic=float(abs(stat[j])), threshold=float(crit[j]), p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=delta,
        n=n, m=m, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


def two_sample_variance_test(
    a: ArrayLike,
    b: ArrayLike,
    alpha: float,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""Two-sample two-sided F-test that two Gaussians' true variances are equal.

    .. math::

        F_j = \frac{s_{a,j}^2}{s_{b,j}^2} \sim F_{n-1,\,m-1}, \qquad
        \text{fail} \iff F_j \notin [F_{n-1,m-1;\,\alpha/(2d)},\ F_{n-1,m-1;\,1-\alpha/(2d)}]
        \text{ for some } j

    (sample variances with ``ddof=1``, lower-tail quantiles). Source: Fisher's variance-ratio
    distribution; exact for Gaussian draws only, and not robust to heavy tails (scipy has no
    plain F-test; the distribution is ``scipy.stats.f``). Under a true ratio
    :math:`r = \sigma_a^2/\sigma_b^2` the statistic is :math:`r F_{n-1,m-1}`, which gives the minimum
    detectable ratio ``min_detectable(n, alpha, power, "two_sample_variance", dims=d, m=m)``.

    Args:
        a, b: draws, shapes ``(n, *shape)`` and ``(m, *shape)``.
        alpha: false-failure rate of the joint test, in (0, 1).
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"two_sample_variance_test"``).
    """
    xa, xb, _ = _two_samples(a, b)
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "two_sample_variance_test")
    n, d = xa.shape
    m = xb.shape[0]
    va, vb = xa.var(axis=0, ddof=1), xb.var(axis=0, ddof=1)
    if np.any(va == 0.0):
        fail("a", a, "has zero sample variance in some coordinate")
    if np.any(vb == 0.0):
        fail("b", b, "has zero sample variance in some coordinate")
    ratio = va / vb
    dist = sps.f(n - 1, m - 1)
    p = np.minimum(1.0, 2.0 * np.minimum(dist.cdf(ratio), dist.sf(ratio)))
    alpha_c = alpha / d
    c_lo, c_hi = float(dist.ppf(alpha_c / 2.0)), float(dist.isf(alpha_c / 2.0))
    j = _worst(p)
    passed = bool(np.all((ratio >= c_lo) & (ratio <= c_hi)))
    threshold = c_hi if ratio[j] > dist.median() else c_lo
    rho = min_detectable(n, alpha, power, "two_sample_variance", dims=d, m=m)
    detail = (
        f"F-test ({n - 1}, {m - 1} dof): worst coordinate {j} of {d}: variance ratio {ratio[j]:.4g}, "
        f"pass iff in [{c_lo:.4g}, {c_hi:.4g}] (per-coordinate alpha {alpha_c:.3g}); detects ratio >= {rho:.4g} "
        f"or <= 1/{rho:.4g} with probability >= {power}"
    )
    return StatResult(
        name=name, kind="two_sample_variance", passed=passed,
        statistic=float(ratio[j]), threshold=threshold, p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=rho,
        n=n, m=m, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


def two_sample_dkw_test(
    a: ArrayLike,
    b: ArrayLike,
    alpha: float,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""Two-sample whole-CDF test: the Kolmogorov–Smirnov distance against a two-sample DKW bound.

    .. math::

        D_j = \sup_x |F_{n,j}(x) - G_{m,j}(x)|, \qquad
        \text{fail} \iff \max_j D_j > \varepsilon_2(n, m, \alpha/d), \qquad
        p_j = \min\Big(1,\ 4 \exp\Big(-\frac{2 D_j^2}{(n^{-1/2} + m^{-1/2})^2}\Big)\Big)

    with :math:`\varepsilon_2` of :func:`two_sample_dkw_epsilon`. :math:`D_j` is the statistic of
    ``scipy.stats.ks_2samp``, computed here vectorised over coordinates (exact integer arithmetic,
    ties handled); the critical value is the DKW bound rather than ks_2samp's p-value because that
    p-value is asymptotic or approximate at the tiny levels of a budgeted run, while the DKW bound
    holds for every n, m and alpha. The price is conservatism: the true level is well below alpha.
    Minimum detectable sup-distance: ``min_detectable(n, alpha, power, "two_sample_cdf", dims=d, m=m)``.

    Args:
        a, b: draws, shapes ``(n, *shape)`` and ``(m, *shape)``.
        alpha: false-failure rate of the joint test, in (0, 1).
        power: detection probability at ``min_detectable`` (default 0.999).
        name: ledger name (default ``"two_sample_dkw_test"``).
    """
    xa, xb, _ = _two_samples(a, b)
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "two_sample_dkw_test")
    n, d = xa.shape
    m = xb.shape[0]
    pooled = np.concatenate([xa, xb], axis=0)
    # n m (F_n - G_m) jumps by +m at a draw of a and by -n at a draw of b: exact in int64.
    steps = np.concatenate([np.full(n, m, dtype=np.int64), np.full(m, -n, dtype=np.int64)])
    order = np.argsort(pooled, axis=0, kind="stable")
    values = np.take_along_axis(pooled, order, axis=0)
    walk = np.cumsum(steps[order], axis=0)
    last_of_ties = np.ones_like(values, dtype=bool)
    last_of_ties[:-1] = values[:-1] != values[1:]
    dist = np.max(np.where(last_of_ties, np.abs(walk), 0), axis=0).astype(np.float64) / (n * m)
    scale = 1.0 / math.sqrt(n) + 1.0 / math.sqrt(m)
    p = np.minimum(1.0, 4.0 * np.exp(-2.0 * dist**2 / scale**2))
    eps = two_sample_dkw_epsilon(n, m, alpha / d)
    j = _worst(p)
    passed = bool(np.all(dist <= eps))
    delta = min_detectable(n, alpha, power, "two_sample_cdf", dims=d, m=m)
    detail = (
        f"two-sample DKW test: worst coordinate {j} of {d}: sup|F_n - G_m| = {dist[j]:.4g}, pass iff <= {eps:.4g} "
        f"(per-coordinate alpha {alpha / d:.3g}); detects sup|ΔF| >= {delta:.4g} with probability >= {power}"
    )
    return StatResult(
        name=name, kind="two_sample_cdf", passed=passed,
        statistic=float(dist[j]), threshold=eps, p_value=float(p[j]),
        false_failure_rate=alpha, power=power, min_detectable=delta,
        n=n, m=m, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


# ---------------------------------------------------------------------------------------------------
# Combined test
# ---------------------------------------------------------------------------------------------------


def gaussian_moments_test(
    samples: ArrayLike,
    mean: ArrayLike,
    variance: ArrayLike,
    alpha: float,
    *,
    power: float = DEFAULT_POWER,
    name: str | None = None,
) -> StatResult:
    r"""Test "the draws are N(mean, variance)" through their first two moments, alpha split in two.

    .. math::

        \text{fail} \iff \text{mean\_test}(\alpha/2) \text{ fails or }
        \text{variance\_test}(\alpha/2,\ \text{mean estimated}) \text{ fails}

    Per coordinate the combined p-value is :math:`\min(1, 2\min(p^{\text{mean}}_j, p^{\text{var}}_j))`
    (Bonferroni). For Gaussian draws :math:`\bar x` and :math:`s^2` are independent, so the exact
    false-failure rate is :math:`1 - (1 - \alpha/2)^2 = \alpha - \alpha^2/4 \le \alpha`. The variance
    part estimates the mean, so that a mean shift fails only the mean part (clear diagnostics).
    ``min_detectable`` is the mean part's shift; ``parts`` holds both results (the variance part's
    ratio is in its ``min_detectable``). ``statistic``/``threshold`` are those of the part closest
    to failing (smallest Bonferroni-adjusted p-value).

    Args:
        samples: draws, shape ``(n,)`` or ``(n, *shape)``.
        mean, variance: the hypothesised Gaussian's per-coordinate mean and variance (> 0).
        alpha: false-failure rate of the combined test, in (0, 1).
        power: detection probability at each part's ``min_detectable`` (default 0.999).
        name: ledger name (default ``"gaussian_moments_test"``).
    """
    alpha = _alpha(alpha)
    name = _name(name, "gaussian_moments_test")
    mean_part = mean_test(samples, mean, variance, alpha / 2.0, power=power, name=f"{name}/mean")
    var_part = variance_test(samples, variance, alpha / 2.0, power=power, name=f"{name}/variance")
    p = np.minimum(1.0, 2.0 * np.minimum(mean_part.p_values, var_part.p_values))
    worst = min((mean_part, var_part), key=lambda r: r.p_value)
    j = _worst(p)
    passed = mean_part.passed and var_part.passed
    detail = f"mean part: {mean_part.detail}\nvariance part: {var_part.detail}"
    return StatResult(
        name=name, kind="gaussian_moments", passed=passed,
        statistic=worst.statistic, threshold=worst.threshold, p_value=float(p[j]),
        false_failure_rate=alpha, power=mean_part.power, min_detectable=mean_part.min_detectable,
        n=mean_part.n, m=None, dims=mean_part.dims, worst_coordinate=j, detail=detail, p_values=p,
        parts=(mean_part, var_part),
    )


# ---------------------------------------------------------------------------------------------------
# Pooled tests: many coordinates with one law up to location and scale
# ---------------------------------------------------------------------------------------------------

POOLED_KINDS: tuple[str, ...] = ("pooled_mean", "pooled_variance", "mean_pattern")
"""Kinds accepted by :func:`pooled_min_detectable` (the pooled tests below)."""


def _standardised_means(x: NDArray[np.float64], mu: NDArray[np.float64], var: NDArray[np.float64]) -> NDArray[np.float64]:
    r""":math:`\bar y_j = (\bar x_j - \mu_j)/\sigma_j`, shape ``(d,)``."""
    return (x.mean(axis=0) - mu) / np.sqrt(var)


def pooled_min_detectable(n: int, dims: int, alpha: float, power: float, kind: str) -> float:
    r"""Smallest discrepancy that a pooled test of ``n`` draws of ``dims`` coordinates detects with
    probability ≥ ``power`` at level ``alpha``; in standardised units (the coordinates' own σ_j).

    With :math:`N = n d` standardised draws :math:`y_{ij} = (x_{ij} - \mu_j)/\sigma_j`,
    :math:`\beta = 1 - \text{power}`:

    ``"pooled_mean"`` (the same shift :math:`\delta\sigma_j` in every coordinate; :func:`pooled_mean_test`):

    .. math:: \delta_{\min} = \frac{z_{\alpha/2} + z_\beta}{\sqrt{n d}}

    ``"pooled_variance"`` (the same variance ratio r in every coordinate; :func:`pooled_variance_test`,
    :math:`k = d(n-1)` degrees of freedom): the ratio
    :math:`\rho = \max(\chi^2_{k;1-\alpha/2}/\chi^2_{k;\beta},\ \chi^2_{k;1-\beta}/\chi^2_{k;\alpha/2})`
    (every r ≥ ρ or r ≤ 1/ρ is detected), i.e. ``min_detectable(d (n - 1) + 1, alpha, power, "variance")``.

    ``"mean_pattern"`` (any shifts :math:`\delta_j\sigma_j`, of any signs; :func:`mean_pattern_test`):
    the root mean square :math:`\delta_{\mathrm{rms}} = \sqrt{\textstyle\sum_j \delta_j^2/d}` at which
    the noncentral :math:`\chi^2_d(\lambda)`, :math:`\lambda = n d\,\delta_{\mathrm{rms}}^2`, exceeds
    the critical value :math:`\chi^2_{d;1-\alpha}` with probability :math:`1-\beta`.

    All three are exact for Gaussian draws.
    """
    n = as_int(n, "n", low=2)
    dims = as_int(dims, "dims", low=1)
    alpha = _alpha(alpha)
    beta = 1.0 - _power(power)
    if kind not in POOLED_KINDS:
        fail("kind", kind, f"expected one of {POOLED_KINDS}")
    if kind == "pooled_mean":
        return _mean_factor(alpha, beta) / math.sqrt(n * dims)
    if kind == "pooled_variance":
        return _ratio_min_detectable(sps.chi2(dims * (n - 1)), alpha, beta)
    crit = float(sps.chi2.isf(alpha, dims))

    def miss(lam: float) -> float:
        return float(sps.ncx2.cdf(crit, dims, lam)) - beta

    hi = (math.sqrt(crit) + float(sps.norm.isf(beta)) + 1.0) ** 2
    while miss(hi) > 0.0:
        hi *= 2.0
    lam = float(brentq(miss, 1e-12, hi, xtol=1e-10, rtol=1e-12))
    return math.sqrt(lam / (n * dims))


def _pooled_inputs(
    samples: ArrayLike, mean: ArrayLike | None, variance: ArrayLike, alpha: float, power: float
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64], float, float]:
    x, shape = _samples(samples, "samples")
    mu = None if mean is None else _param(mean, "mean", shape, positive=False)
    var = _param(variance, "variance", shape, positive=True)
    return x, mu, var, _alpha(alpha), _power(power)


def pooled_mean_test(
    samples: ArrayLike, mean: ArrayLike, variance: ArrayLike, alpha: float, *,
    power: float = DEFAULT_POWER, name: str | None = None,
) -> StatResult:
    r"""One z-test of the mean over all coordinates pooled, each standardised by its own law.

    For draws :math:`x_{ij}` (i = 1..n draws, j = 1..d coordinates) with the coordinates independent
    and :math:`x_{ij} \sim \mathcal N(\mu_j, \sigma_j^2)` under the null:

    .. math::

        z = \sqrt{n d}\;\frac{1}{d}\sum_j \frac{\bar x_j - \mu_j}{\sigma_j} \sim \mathcal N(0, 1),
        \qquad \text{fail} \iff |z| > z_{\alpha/2}

    One test at level α (no Bonferroni split over the coordinates): it sees a shift of the same
    size in every coordinate, :math:`\delta\sigma_j`, down to
    ``pooled_min_detectable(n, d, alpha, power, "pooled_mean")`` σ; shifts of mixed signs cancel
    (:func:`mean_pattern_test` sees those). ``statistic`` is |z|, ``min_detectable`` in σ units.
    """
    x, mu, var, alpha, power = _pooled_inputs(samples, mean, variance, alpha, power)
    name = _name(name, "pooled_mean_test")
    n, d = x.shape
    ybar = _standardised_means(x, mu, var)
    z = math.sqrt(n * d) * float(ybar.mean())
    p = float(2.0 * sps.norm.sf(abs(z)))
    crit = float(sps.norm.isf(alpha / 2.0))
    delta = pooled_min_detectable(n, d, alpha, power, "pooled_mean")
    j = int(np.argmax(np.abs(ybar)))
    detail = (f"pooled z-test over {n} x {d} standardised draws: z = {z:.4g}, pass iff |z| <= {crit:.4g} "
              f"(alpha {alpha:.3g}); mean shift {ybar.mean():.4g} σ; detects a common shift >= {delta:.4g} σ "
              f"with probability >= {power}")
    return StatResult(
        name=name, kind="pooled_mean", passed=bool(abs(z) <= crit), statistic=abs(z), threshold=crit,
        p_value=p, false_failure_rate=alpha, power=power, min_detectable=delta, n=n, m=None, dims=d,
        worst_coordinate=j, detail=detail, p_values=np.array([p]),
    )


def pooled_variance_test(
    samples: ArrayLike, variance: ArrayLike, alpha: float, *,
    power: float = DEFAULT_POWER, name: str | None = None,
) -> StatResult:
    r"""One chi-square test of the variance over all coordinates pooled (each coordinate's mean estimated).

    .. math::

        S = \sum_j \frac{\sum_i (x_{ij} - \bar x_j)^2}{\sigma_j^2} \sim \chi^2_k,\quad k = d(n-1),
        \qquad \text{fail} \iff S \notin [\chi^2_{k;\alpha/2},\ \chi^2_{k;1-\alpha/2}]

    (Cochran's theorem per coordinate; the d independent chi-squares add.) Estimating each
    coordinate's mean keeps mean shifts out of this test. ``statistic`` is the pooled variance ratio
    S/k, ``min_detectable`` the ratio ρ of ``pooled_min_detectable(..., "pooled_variance")``.
    """
    x, _, var, alpha, power = _pooled_inputs(samples, None, variance, alpha, power)
    name = _name(name, "pooled_variance_test")
    n, d = x.shape
    k = d * (n - 1)
    per = x.var(axis=0, ddof=1) / var
    s = float(per.sum() * (n - 1))
    dist = sps.chi2(k)
    p = float(min(1.0, 2.0 * min(dist.cdf(s), dist.sf(s))))
    c_lo, c_hi = float(dist.ppf(alpha / 2.0)), float(dist.isf(alpha / 2.0))
    ratio = s / k
    rho = pooled_min_detectable(n, d, alpha, power, "pooled_variance")
    with np.errstate(divide="ignore"):  # a zero per-element variance (shared or missing noise) is the worst, at inf
        j = int(np.argmax(np.abs(np.log(per))))
    detail = (f"pooled chi-square test over {n} x {d} draws ({k} dof, means estimated): variance ratio "
              f"{ratio:.6g}, pass iff in [{c_lo / k:.6g}, {c_hi / k:.6g}] (alpha {alpha:.3g}); detects a ratio "
              f">= {rho:.6g} or <= 1/{rho:.6g} with probability >= {power}")
    return StatResult(
        name=name, kind="pooled_variance", passed=bool(c_lo <= s <= c_hi), statistic=ratio,
        threshold=(c_hi if s > dist.median() else c_lo) / k, p_value=p, false_failure_rate=alpha, power=power,
        min_detectable=rho, n=n, m=None, dims=d, worst_coordinate=j, detail=detail, p_values=np.array([p]),
    )


def offset_tolerant_variance_test(
    residuals: ArrayLike, allowance: ArrayLike, alpha: float, *, pooled: bool = False,
    power: float = DEFAULT_POWER, name: str | None = None,
) -> StatResult:
    r"""Chi-square test that standardized residuals have unit variance, when their means may be off by a bounded amount.

    The residuals :math:`r_{ij} = z_{ij} + b_{ij}` of column j (a step) are unit Gaussians plus a
    deterministic offset that is unknown but bounded, :math:`\sum_i b_{ij}^2 \le \lambda_j` (the error
    model's rounding allowance of the step mean, over σ). Then :math:`S_j = \sum_i r_{ij}^2` is
    non-central chi-square with n degrees of freedom and non-centrality :math:`\le \lambda_j`, and the
    family is stochastically increasing in the non-centrality, so

    .. math::

        \text{fail} \iff S_j < \chi^2_{n;\,\alpha_c/2} \ \text{ or } \
        S_j > \chi'^2_{n,\lambda_j;\,1-\alpha_c/2}

    has level at most α (α_c = α/d, Bonferroni) whatever the offsets within the allowance. With
    ``pooled=True`` the columns add: :math:`S = \sum_j S_j` against :math:`\chi'^2_{nd,\sum\lambda_j}`.
    Source: the non-central chi-square law (Johnson, Kotz & Balakrishnan, *Continuous Univariate
    Distributions* vol. 2, ch. 29) and its monotone likelihood ratio in λ.

    ``statistic`` is the variance ratio S/n (S/(nd) pooled) of the worst column; ``min_detectable`` the
    ratio ρ such that a variance ρ (or 1/ρ) times the declared one is rejected with probability ≥
    ``power`` (computed for zero offsets; offsets only raise S, so the upper side is conservative).

    Args:
        residuals: standardized residuals, shape ``(n,)`` or ``(n, d)``.
        allowance: :math:`\lambda_j \ge 0` per column, shape ``(d,)`` (or a scalar).
        alpha: false-failure rate of the whole test, in (0, 1).
        pooled: one test over all columns instead of one per column.
    """
    x, shape = _samples(residuals, "residuals")
    n, d = x.shape
    lam = np.asarray(allowance, dtype=np.float64)
    if lam.ndim > 1 or lam.size not in (1, d) or not np.all(np.isfinite(lam)) or np.any(lam < 0):
        fail("allowance", allowance, f"must be finite and >= 0, a scalar or one per column ({d})")
    lam = np.broadcast_to(lam.reshape(-1), (d,))
    alpha = _alpha(alpha)
    power = _power(power)
    name = _name(name, "offset_tolerant_variance_test")
    beta = 1.0 - power
    s_cols = np.sum(x * x, axis=0)
    if pooled:
        s_all, k, lam_all, alpha_c = np.array([float(s_cols.sum())]), n * d, np.array([float(lam.sum())]), alpha
    else:
        s_all, k, lam_all, alpha_c = s_cols, n, lam, alpha / d
    central = sps.chi2(k)
    c_lo = float(central.ppf(alpha_c / 2.0))
    # the upper critical value once per distinct allowance (ncx2's quantile is costly); lambda = 0 is chi2
    values, where = np.unique(lam_all, return_inverse=True)
    c_vals = np.array([float(central.isf(alpha_c / 2.0)) if v == 0.0 else float(sps.ncx2(k, v).isf(alpha_c / 2.0))
                       for v in values])
    c_hi = c_vals[where.reshape(-1)]
    central_sf = central.sf(s_all)
    with np.errstate(all="ignore"):
        nc_sf = sps.ncx2.sf(s_all, k, np.where(lam_all > 0, lam_all, 1.0))
    p_hi = np.where(lam_all > 0, nc_sf, central_sf)
    p = np.minimum(1.0, 2.0 * np.minimum(central.cdf(s_all), p_hi))
    passed = bool(np.all((s_all >= c_lo) & (s_all <= c_hi)))
    j = _worst(p)
    ratio = float(s_all[j] / k)
    threshold = float(c_hi[j] / k) if s_all[j] > central.median() else c_lo / k
    rho = max(float(np.max(c_hi)) / float(central.ppf(beta)), float(central.isf(beta)) / c_lo)
    scope = f"pooled over {d} column(s), {k} dof" if pooled else f"worst column {j} of {d}, {k} dof"
    detail = (f"offset-tolerant chi-square test ({scope}): variance ratio {ratio:.4g}, pass iff in "
              f"[{c_lo / k:.4g}, {float(c_hi[j]) / k:.4g}] (non-centrality allowance {float(lam_all[j]):.3g}, "
              f"alpha {alpha_c:.3g}); detects a ratio >= {rho:.4g} or <= 1/{rho:.4g} with probability >= {power}")
    return StatResult(
        name=name, kind="pooled_variance" if pooled else "variance", passed=passed, statistic=ratio,
        threshold=threshold, p_value=float(p[j]), false_failure_rate=alpha, power=power, min_detectable=rho,
        n=n, m=None, dims=d, worst_coordinate=j, detail=detail, p_values=p,
    )


def mean_pattern_test(
    samples: ArrayLike, mean: ArrayLike, variance: ArrayLike, alpha: float, *,
    power: float = DEFAULT_POWER, name: str | None = None,
) -> StatResult:
    r"""One chi-square test of all coordinate means together: shifts of any pattern of signs.

    .. math::

        Q = n \sum_j \Big(\frac{\bar x_j - \mu_j}{\sigma_j}\Big)^2 \sim \chi^2_d, \qquad
        \text{fail} \iff Q > \chi^2_{d;1-\alpha}

    (exact for independent Gaussian coordinates). Under shifts :math:`\delta_j\sigma_j`,
    :math:`Q \sim \chi^2_d(\lambda)` with :math:`\lambda = n\sum_j\delta_j^2`; ``min_detectable`` is
    the root-mean-square standardised shift of ``pooled_min_detectable(..., "mean_pattern")``.
    ``statistic`` is Q.
    """
    x, mu, var, alpha, power = _pooled_inputs(samples, mean, variance, alpha, power)
    name = _name(name, "mean_pattern_test")
    n, d = x.shape
    ybar = _standardised_means(x, mu, var)
    q = float(n * np.sum(ybar**2))
    crit = float(sps.chi2.isf(alpha, d))
    p = float(sps.chi2.sf(q, d))
    delta = pooled_min_detectable(n, d, alpha, power, "mean_pattern")
    j = int(np.argmax(np.abs(ybar)))
    detail = (f"chi-square test of the {d} standardised coordinate means of {n} draws: Q = {q:.4g}, pass iff "
              f"Q <= {crit:.4g} (alpha {alpha:.3g}); RMS shift {math.sqrt(float(np.mean(ybar**2))):.4g} σ; "
              f"detects an RMS shift >= {delta:.4g} σ with probability >= {power}")
    return StatResult(
        name=name, kind="mean_pattern", passed=bool(q <= crit), statistic=q, threshold=crit, p_value=p,
        false_failure_rate=alpha, power=power, min_detectable=delta, n=n, m=None, dims=d, worst_coordinate=j,
        detail=detail, p_values=np.array([p]),
    )


# ---------------------------------------------------------------------------------------------------
# False-failure budget ledger
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """One named allocation of the false-failure budget, and the result once recorded."""

    name: str
    alpha: float
    result: StatResult | None = None


class Ledger:
    r"""The false-failure budget of a test run, split across its statistical tests.

    The whole test run has a total false-failure budget, :math:`10^{-6}` by default, split across
    its statistical tests. Each test allocates its share :math:`\alpha_i` under a unique name
    before (or when) it runs; by the union bound the probability that *any* statistical test of a
    correct implementation fails is at most :math:`\sum_i \alpha_i \le` budget. An allocation that
    would exceed the budget raises ``ValueError`` naming ``alpha``; a name used twice raises
    ``ValueError`` naming ``name`` (each allocation is spent once: a test that runs twice in one
    process needs two names, e.g. with its parameters in the name).

    A ledger counts one process; under pytest-xdist each worker has its own, and the run's total
    is the sum over workers of distinct tests, which is still the sum of the allocations.
    """

    def __init__(self, budget: float = DEFAULT_BUDGET) -> None:
        self._budget = _alpha(budget, "budget")
        self._entries: list[LedgerEntry] = []

    @property
    def budget(self) -> float:
        """The total false-failure budget."""
        return self._budget

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """All allocations, in order."""
        return tuple(self._entries)

    @property
    def total(self) -> float:
        r"""Sum of the allocated false-failure rates, :math:`\sum_i \alpha_i` (``math.fsum``)."""
        return math.fsum(e.alpha for e in self._entries)

    def remaining(self, budget: float | None = None) -> float:
        """``budget - total``; ``budget`` defaults to this ledger's budget."""
        b = self._budget if budget is None else _alpha(budget, "budget")
        return b - self.total

    def allocate(self, name: str, alpha: float) -> float:
        """Record a named allocation of ``alpha`` and return ``alpha``.

        Raises ``ValueError`` naming ``alpha`` if the total would exceed the budget (a relative
        rounding slack of 1e-12 is allowed) and naming ``name`` if the name is already allocated.
        """
        if not isinstance(name, str) or not name:
            fail("name", name, "expected a non-empty string")
        alpha = _alpha(alpha)
        if any(e.name == name for e in self._entries):
            fail("name", name, "already allocated in this ledger; give each statistical test its own name")
        new_total = math.fsum([self.total, alpha])
        if new_total > self._budget * (1.0 + 1e-12):
            fail(
                "alpha",
                alpha,
                f"allocating it to {name!r} brings the false-failure total to {new_total:.4g}, over the "
                f"budget {self._budget:.4g} (remaining {self.remaining():.4g})",
            )
        self._entries.append(LedgerEntry(name, alpha))
        return alpha

    def record(self, result: StatResult) -> StatResult:
        """Attach a result to its allocation (same name), allocating ``result.false_failure_rate`` if
        there is none yet; return the result.

        Raises ``ValueError`` naming ``result`` if the result spent more than its allocation or its
        allocation already holds a result.
        """
        if not isinstance(result, StatResult):
            fail("result", result, "expected a StatResult")
        for i, e in enumerate(self._entries):
            if e.name == result.name:
                if e.result is not None:
                    fail("result", result.name, "this name already holds a recorded result")
                if result.false_failure_rate > e.alpha * (1.0 + 1e-12):
                    fail(
                        "result",
                        result.name,
                        f"false_failure_rate {result.false_failure_rate:.4g} exceeds its allocation {e.alpha:.4g}",
                    )
                self._entries[i] = LedgerEntry(e.name, e.alpha, result)
                return result
        self.allocate(result.name, result.false_failure_rate)
        self._entries[-1] = LedgerEntry(result.name, result.false_failure_rate, result)
        return result

    def reset(self) -> None:
        """Forget every allocation (the budget stays)."""
        self._entries.clear()

    def format(self) -> str:
        """A table: test name, alpha, minimum detectable discrepancy (at its power), n, passed.

        An allocation without a recorded result shows "(not recorded)" and "-".
        """
        header = ("test", "alpha", "min detectable", "power", "n", "passed")
        rows = []
        for e in self._entries:
            r = e.result
            if r is None:
                rows.append((e.name, f"{e.alpha:.3g}", "(not recorded)", "-", "-", "-"))
            else:
                n = str(r.n) if r.m is None else f"{r.n}/{r.m}"
                verdict = "yes" if r.passed else "NO"
                rows.append((e.name, f"{e.alpha:.3g}", r.describe_min_detectable(), f"{r.power:g}", n, verdict))
        widths = [max(len(h), *(len(row[k]) for row in rows)) if rows else len(h) for k, h in enumerate(header)]
        lines = [
            f"false-failure budget {self._budget:.3g}: {len(rows)} tests, total alpha {self.total:.4g}, "
            f"remaining {self.remaining():.4g}",
            "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


LEDGER = Ledger(budget=DEFAULT_BUDGET)
"""The default ledger of a test run (budget 1e-6)."""


def record(result: StatResult, ledger: Ledger | None = None) -> StatResult:
    """Record ``result`` in ``ledger`` (default :data:`LEDGER`) and return it; see :meth:`Ledger.record`."""
    return (LEDGER if ledger is None else ledger).record(result)


# ---------------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------------

FRESH_SEEDS_ENV = "DDSPEC_FRESH_SEEDS"
"""Environment variable: ``1`` makes :func:`seed_for` return fresh random seeds."""

_ISSUED: dict[str, int] = {}


def seed_for(name: str, base_seed: int | None = None) -> int:
    r"""A fixed seed in :math:`[0, 2^{32})` derived from a test name; fresh if ``DDSPEC_FRESH_SEEDS=1``.

    .. math::

        \text{seed} = \operatorname{crc32}(\text{name}) \ \text{ or, with a base seed, }\
        \operatorname{crc32}(\text{"<base\_seed>:<name>"})

    (UTF-8 bytes, ``zlib.crc32``: stable across Python versions, platforms and processes, unlike
    ``hash``). Fixed seeds make every statistical test deterministic: a test either always passes
    or always fails for a given implementation. Its stated false-failure rate is then the chance
    that the fixed seed happens to be unlucky. To measure the real flake rate, run with
    ``DDSPEC_FRESH_SEEDS=1``: every call returns a fresh seed from ``secrets.randbits(32)``;
    the seeds issued are kept by :func:`issued_seeds` so that a failure can be reproduced.
    Any other value than unset, ``""``, ``"0"`` or ``"1"`` raises ``ValueError``.
    """
    if not isinstance(name, str) or not name:
        fail("name", name, "expected a non-empty string")
    if base_seed is not None:
        base_seed = as_int(base_seed, "base_seed", low=0)
    mode = os.environ.get(FRESH_SEEDS_ENV, "")
    if mode not in ("", "0", "1"):
        fail(FRESH_SEEDS_ENV, mode, 'expected unset, "0" or "1"')
    if mode == "1":
        seed = secrets.randbits(32)
    else:
        key = name if base_seed is None else f"{base_seed}:{name}"
        seed = zlib.crc32(key.encode("utf-8"))
    _ISSUED[name] = seed
    return seed


def issued_seeds() -> dict[str, int]:
    """A copy of the last seed issued by :func:`seed_for` for each name in this process."""
    return dict(_ISSUED)
