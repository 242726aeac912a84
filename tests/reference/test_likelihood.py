r"""Tests of :mod:`ddspec.reference.likelihood` against its mpmath twin, quadrature, closed forms and paper values.

Accuracy is measured against ``ddspec.reference.twin.likelihood`` (100 digits for the KL terms, 60
for the decoder). Worst errors measured when these tests were written (x86-64, scipy's cephes
``ndtr``/``log_ndtr``):

=============================================================  ====================================
quantity                                                       worst error
=============================================================  ====================================
normal_kl, 3000 random cases incl. KL ~ 1e-27 .. 1e+8           1.8 ULP
normal_kl, equal means, d = ℓ₁ − ℓ₂ in [−5, 5] and ±1e-20..1    1.6 ULP
prior_kl, all 256 grid values of x₀ (linear T = 1000 / T = 1)   1.9 / 2.5 ULP
eps_kl_weight                                                   0.5 ULP
eps_kl_constant (σ² ≠ fl(β̃); incl. σ² = β̃(1 + 1e-9))           3.4 ULP
eps_kl_constant at σ² = fl(β̃) (exact value ~1e-33)              absolute error < 1e-45 (~7000 ULP:
                                                               β̃'s double-double low part decides)
decoder log-probability, exact Φ, relative                      5.8e-14 = 522 u at an edge bin with
                                                               log p = −6e-167 (Φ(z), z = 27.6:
                                                               condition number z² ≈ 760); ≤ 11 u
                                                               where |log p| > 1e-7
decoder, 256 bin probabilities summed, |Σ − 1|                  4.4e-16
max |Φ_tanh − Φ|                                                1.789e-4 at |x| = 2.592
L_T, linear T = 1000, x₀ uniform on the grid                    9.78e-6 bits/dim (paper: ≈ 1e-5)
=============================================================  ====================================

The tests assert ≤ 4 ULP for the KL terms, ≤ 1e-12 relative for the decoder and ≤ 1e-12 for the
sum of the bins.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import mpmath
import numpy as np
import pytest
from scipy import integrate
from scipy.special import ndtr

from ddspec.reference import SingularError
from ddspec.reference import likelihood as L
from ddspec.reference.twin import likelihood as TW
from ddspec.reference.twin import ulp_error

MAX_ULP = 4.0
U = 2.0**-53

GRID = (2.0 * np.arange(256) - 255.0) / 255.0  # the 8-bit data grid on [−1, 1]
LINEAR_1000 = np.linspace(1e-4, 0.02, 1000)  # Ho et al. 2020, §4


def _worst(err: np.ndarray, label: str) -> float:
    i = int(np.argmax(err))
    print(f"{label}: worst {err[i]:.3f} at i={i}, mean {err.mean():.3f}")
    return float(err[i])


# ---------------------------------------------------------------------------------------------
# normal_kl
# ---------------------------------------------------------------------------------------------


def _kl_cases(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Random (mean1, logvar1, mean2, logvar2): near-equal (KL ~ 1e-20), equal means, equal
    variances, far apart, and tiny mean difference with moderate variance ratio."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m2 = rng.normal() * rng.choice([1.0, 1e-3, 10.0])
        l2 = rng.normal() * rng.choice([1.0, 3.0, 0.1])
        kind = rng.integers(0, 5)
        if kind == 0:
            m1 = m2 + rng.normal() * 10.0 ** rng.uniform(-12, -8)
            l1 = l2 + rng.normal() * 10.0 ** rng.uniform(-12, -8)
        elif kind == 1:
            m1, l1 = m2, l2 + rng.uniform(-3, 3)
        elif kind == 2:
            m1, l1 = m2 + rng.normal() * 10.0 ** rng.uniform(-5, 2), l2
        elif kind == 3:
            m1, l1 = rng.normal() * 5, rng.uniform(-20, 20)
        else:
            m1, l1 = m2 + rng.normal() * 1e-10, l2 + rng.uniform(-2.5, 2.5)
        out.append((m1, l1, m2, l2))
    return np.array(out)


def test_normal_kl_ulp_vs_twin_random() -> None:
    c = _kl_cases()
    kl = L.normal_kl(c[:, 0], c[:, 1], c[:, 2], c[:, 3])
    exact = [TW.normal_kl(*row) for row in c.tolist()]
    assert min(exact) < 1e-19  # the grid does contain nearly equal Gaussians
    assert _worst(ulp_error(kl, exact), "normal_kl random") <= MAX_ULP


def test_normal_kl_ulp_vs_twin_variance_ratio_grid() -> None:
    """Equal means, d = ℓ₁ − ℓ₂ across every branch of h(d) = e^d − 1 − d, incl. |d| = 1e-20."""
    tiny = 10.0 ** np.linspace(-20, 0, 120)
    d = np.concatenate([np.linspace(-5, 5, 1001), tiny, -tiny, [-1.0, 2.0, np.nextafter(2.0, 3.0)]])
    for base in (0.0, 0.3, -7.25):
        kl = L.normal_kl(1.5, base + d, 1.5, base)
        # (base + d) rounded is what the function receives; the twin gets the same doubles
        exact = [TW.normal_kl(1.5, float(v), 1.5, base) for v in (base + d).tolist()]
        assert _worst(ulp_error(kl, exact), f"normal_kl d-grid base={base}") <= MAX_ULP


def test_normal_kl_naive_formula_would_fail() -> None:
    """The test above can fail: the literal float64 formula is wrong by orders of magnitude at KL ~ 1e-20."""
    m1, l1, m2, l2 = 0.2, 0.5 + 1e-10, 0.2 + 1e-10, 0.5
    naive = 0.5 * (-1.0 + l2 - l1 + math.exp(l1 - l2) + (m1 - m2) ** 2 * math.exp(-l2))
    exact = TW.normal_kl(m1, l1, m2, l2)
    assert ulp_error(naive, [exact])[0] > 1e6
    assert ulp_error(L.normal_kl(m1, l1, m2, l2), [exact])[0] <= MAX_ULP


def test_normal_kl_nonnegative_and_zero_for_identical() -> None:
    c = _kl_cases(2000, seed=3)
    assert np.all(L.normal_kl(c[:, 0], c[:, 1], c[:, 2], c[:, 3]) >= 0.0)
    m = np.array([-3.0, 0.0, 1e-300, 7.5, 1e200])
    lv = np.array([-40.0, 0.0, 3.0, -0.5, 600.0])
    assert np.all(L.normal_kl(m, lv, m, lv) == 0.0)


@pytest.mark.parametrize(
    ("m1", "v1", "m2", "v2"),
    [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 4.0, 0.0, 0.25), (-2.0, 0.01, -1.9, 0.02), (0.0, 1.0, 0.001, 1.0)],
)
def test_normal_kl_vs_quadrature(m1: float, v1: float, m2: float, v2: float) -> None:
    """KL = ∫ p log(p/q) dx by adaptive quadrature (scipy.integrate.quad), 1-D."""
    s1 = math.sqrt(v1)

    def integrand(x: float) -> float:
        logp = -0.5 * math.log(2 * math.pi * v1) - (x - m1) ** 2 / (2 * v1)
        logq = -0.5 * math.log(2 * math.pi * v2) - (x - m2) ** 2 / (2 * v2)
        return math.exp(logp) * (logp - logq)

    val, err = integrate.quad(integrand, m1 - 40 * s1, m1 + 40 * s1, epsabs=1e-14, epsrel=1e-12, limit=200)
    got = float(L.normal_kl(m1, math.log(v1), m2, math.log(v2)))
    assert got == pytest.approx(val, rel=1e-9, abs=1e-13)


def test_normal_kl_broadcasts_and_validates() -> None:
    out = L.normal_kl(np.zeros((2, 3)), 0.0, np.ones(3), 0.0)
    assert out.shape == (2, 3) and np.all(out == 0.5)
    with pytest.raises(ValueError, match="mean2"):
        L.normal_kl(np.zeros((2, 3)), 0.0, np.ones(4), 0.0)
    with pytest.raises(ValueError, match="logvar1"):
        L.normal_kl(0.0, np.nan, 0.0, 0.0)
    with pytest.raises(ValueError, match="mean1"):
        L.normal_kl("a", 0.0, 0.0, 0.0)
    with pytest.raises(SingularError, match="overflow"):
        L.normal_kl(0.0, 800.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Φ and the discretized decoder
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _tanh_error_bound() -> float:
    """E >= sup_x |Φ_tanh(x) − Φ(x)|: the maximum on a grid of step h = 1e-5 over [−8, 8], plus h/2 × 0.8.

    Between grid points the error moves by at most max|e'| × h/2, and |e'| = |Φ_tanh' − φ| <= 0.4 + 0.4
    (each density is at most sqrt(2/π)/2 ≈ 0.399 — the tanh form's derivative
    0.5 sqrt(2/π)(1 + 0.134 x²) sech²(·) is largest at 0). Beyond |x| = 8 both CDFs are within 1e-14 of 0 or 1.
    """
    x = np.linspace(-8.0, 8.0, 1_600_001)
    e = np.abs(L.approx_standard_normal_cdf(x) - ndtr(x))
    return float(e.max()) + 0.8 * 0.5e-5


def test_tanh_cdf_error_is_the_documented_one() -> None:
    x = np.linspace(-8.0, 8.0, 160_001)
    e = np.abs(L.approx_standard_normal_cdf(x) - ndtr(x))
    i = int(np.argmax(e))
    print(f"max |tanh Phi - Phi| = {e[i]:.6g} at x = {x[i]:.5f}")
    assert 1.78e-4 < e[i] < 1.80e-4  # the value the docstrings quote
    assert abs(abs(x[i]) - 2.592) < 2e-3
    assert _tanh_error_bound() < 1.84e-4
    assert float(L.approx_standard_normal_cdf(0.0)) == 0.5


def test_exact_cdf_helpers() -> None:
    x = np.array([-40.0, -5.0, 0.0, 1.3, 9.0])
    with mpmath.workdps(40):
        exact = [mpmath.ncdf(mpmath.mpf(v)) for v in x.tolist()]
        logs = [mpmath.log(mpmath.ncdf(mpmath.mpf(v))) for v in x.tolist()]
    # scipy's ndtr evaluates erfc(x·(1/√2)): the rounded argument alone costs ~x² ULP in the tail
    # (relative condition number of Φ at x is x φ(x)/Φ(x) ≈ x²)
    assert np.all(ulp_error(L.standard_normal_cdf(x), exact) <= 4 + x**2)
    assert np.all(ulp_error(L.log_standard_normal_cdf(x), logs) <= 4 + x**2)
    with pytest.raises(ValueError, match="x"):
        L.standard_normal_cdf(np.inf)


MU_SIGMA = [
    (0.0, -12.0), (0.0, -6.0), (0.0, -4.5), (0.0, -2.0), (0.0, 0.0), (0.0, 3.0),
    (0.3, -4.0), (0.3, -1.0), (-0.77, -12.0), (-0.77, -3.0), (-0.77, 1.0),
    (1.5, -4.0), (1.5, -1.0), (1.5, 6.0), (-3.0, -2.0), (-3.0, 0.0),
    (0.999, -6.0), (float(GRID[100]), -12.0), (float(GRID[100]) + 1e-9, -12.0), (float(GRID[100] + GRID[101]) / 2, -9.0),
]


@pytest.mark.parametrize(("mu", "log_scale"), MU_SIGMA)
def test_decoder_bins_sum_to_one(mu: float, log_scale: float) -> None:
    """The 256 bins partition the real line (edge bins open): Σ p = 1, incl. μ outside [−1, 1] and σ ~ 1e-5."""
    p = np.exp(L.discretized_gaussian_log_likelihood(GRID, mu, log_scale))
    assert abs(p.sum() - 1.0) <= 1e-12
    assert np.all(p >= 0)


def test_decoder_vs_twin() -> None:
    worst = 0.0
    where = None
    for mu, ls in MU_SIGMA:
        lp = L.discretized_gaussian_log_likelihood(GRID, mu, ls)
        for k in list(range(0, 256, 17)) + [1, 99, 100, 101, 254, 255]:
            ex = TW.discretized_gaussian_log_likelihood(float(GRID[k]), mu, ls)
            if abs(ex) < 1e-300:  # below the float64 range: the only correct double is 0
                assert lp[k] == 0.0
                continue
            rel = float(abs(mpmath.mpf(float(lp[k])) - ex) / abs(ex))
            if rel > worst:
                worst, where = rel, (mu, ls, k, float(ex))
    print(f"decoder vs twin: worst relative error {worst:.3g} ({worst / U:.1f} u) at {where}")
    assert worst <= 1e-12


def test_decoder_edge_bins_are_open() -> None:
    """x = −1 collects all mass below −1 + 1/255, x = 1 all mass above 1 − 1/255 (Ho et al. 2020, eq. 13)."""
    lp = L.discretized_gaussian_log_likelihood(np.array([-1.0, 1.0]), np.array([-3.0, 3.0]), np.log(0.5))
    # mass below −254/255 under N(−3, 0.25) = Φ((−254/255 + 3) / 0.5)
    with mpmath.workdps(40):
        p_low = mpmath.ncdf((mpmath.mpf(-254) / 255 + 3) / mpmath.mpf(0.5))
    assert ulp_error(lp, [mpmath.log(p_low)] * 2).max() <= 16
    # a closed edge bin [−1 − 1/255, −1 + 1/255] would hold almost nothing
    closed = ndtr((-254 / 255 + 3) / 0.5) - ndtr((-256 / 255 + 3) / 0.5)
    assert closed < 1e-5 and np.exp(lp[0]) > 0.9999
    lp_t = L.discretized_gaussian_log_likelihood(np.array([-1.0, 1.0]), np.array([-3.0, 3.0]), np.log(0.5), cdf="tanh")
    assert np.all(np.exp(lp_t) > 0.999)


@pytest.mark.parametrize(("mu", "log_scale"), MU_SIGMA)
def test_decoder_tanh_vs_exact(mu: float, log_scale: float) -> None:
    r"""|P_tanh − P_exact| <= 2E + 1e-12 per interior bin, E + 1e-12 per edge bin.

    Derivation: P_tanh − P = (Φ̃(b) − Φ(b)) − (Φ̃(a) − Φ(a)) with |Φ̃ − Φ| <= E everywhere (an edge
    bin has one term); the anchors' floor max(p, 1e-12) moves p by at most 1e-12. On the grid the
    tanh decoder's bins are the exact decoder's (|x| > 0.999 only at k = 0, 255).
    """
    bound = _tanh_error_bound()
    p = np.exp(L.discretized_gaussian_log_likelihood(GRID, mu, log_scale))
    pt = np.exp(L.discretized_gaussian_log_likelihood(GRID, mu, log_scale, cdf="tanh"))
    diff = np.abs(pt - p)
    assert np.all(diff[1:-1] <= 2 * bound + 1e-12)
    assert diff[0] <= bound + 1e-12 and diff[-1] <= bound + 1e-12
    assert np.all(np.log(pt) >= np.log(1e-12) - 1e-12)  # the anchors' floor


def test_decoder_tanh_floor_exact_no_clamp() -> None:
    """The tanh decoder floors probabilities at 1e-12; the exact one does not clamp."""
    x = GRID[128:129]  # 1/255 (0 is not on the grid: 255 is odd)
    far = L.discretized_gaussian_log_likelihood(x, 0.9, -6.0, cdf="tanh")
    assert far[0] == pytest.approx(math.log(1e-12), rel=1e-15)
    exact = L.discretized_gaussian_log_likelihood(x, 0.9, -6.0)
    ex = TW.discretized_gaussian_log_likelihood(float(x[0]), 0.9, -6.0)
    assert exact[0] < -1e4 and abs(exact[0] - float(ex)) <= 1e-12 * abs(float(ex))


def test_decoder_validation() -> None:
    with pytest.raises(ValueError, match="x="):
        L.discretized_gaussian_log_likelihood(np.array([0.5]), 0.0, 0.0)  # 0.5 is between grid points
    with pytest.raises(ValueError, match="x="):
        L.discretized_gaussian_log_likelihood(np.array([1.0 + 2 / 255]), 0.0, 0.0)  # beyond the last bin
    with pytest.raises(ValueError, match="x="):
        L.discretized_gaussian_log_likelihood(np.array([GRID[7] + 3e-6]), 0.0, 0.0)
    ok = L.discretized_gaussian_log_likelihood(np.array([np.float32(GRID[7])]), 0.0, 0.0)  # float32 data: within 1e-7
    assert ok == L.discretized_gaussian_log_likelihood(np.array([GRID[7]]), 0.0, 0.0)
    with pytest.raises(ValueError, match="means"):
        L.discretized_gaussian_log_likelihood(GRID[:3], np.zeros(4), 0.0)
    with pytest.raises(ValueError, match="log_scales"):
        L.discretized_gaussian_log_likelihood(GRID[:3], 0.0, np.inf)
    with pytest.raises(ValueError, match="cdf"):
        L.discretized_gaussian_log_likelihood(GRID[:3], 0.0, 0.0, cdf="erf")
    with pytest.raises(SingularError, match="float64 range"):
        L.discretized_gaussian_log_likelihood(np.array([1.0]), -1.0, -400.0)


# ---------------------------------------------------------------------------------------------
# Prior term L_T
# ---------------------------------------------------------------------------------------------


# L_T ≈ 1e-5 bits/dim (Ho et al. 2020, §4) is in tests/reference/test_worked_examples.py.


@pytest.mark.parametrize("betas", [LINEAR_1000, np.array([0.3]), np.linspace(0.1, 0.9, 5), np.linspace(1e-4, 0.02, 10)])
def test_prior_kl_ulp_vs_twin(betas: np.ndarray) -> None:
    pk = L.prior_kl(GRID, betas)
    exact = [TW.prior_kl(float(v), betas) for v in GRID]
    assert _worst(ulp_error(pk, exact), f"prior_kl T={betas.size}") <= MAX_ULP


def test_prior_zero_terminal_snr_is_zero() -> None:
    betas = np.array([0.1, 0.5, 1.0])  # ᾱ_T = 0: q(x_T | x_0) is exactly N(0, I)
    assert np.all(L.prior_kl(GRID, betas) == 0.0)
    with pytest.raises(ValueError, match="x0"):
        L.prior_bpd(0.5, betas)  # no batch axis
    with pytest.raises(ValueError, match="betas"):
        L.prior_kl(GRID, np.array([0.1, 1.5]))


# ---------------------------------------------------------------------------------------------
# ε form of the KL terms (Ho et al. 2020, eq. 12)
# ---------------------------------------------------------------------------------------------


def _beta_tilde_exact(betas: np.ndarray, t: int) -> float:
    with mpmath.workdps(60):
        ab = [mpmath.mpf(1)]
        for b in betas[: t + 1].tolist():
            ab.append(ab[-1] * (1 - mpmath.mpf(b)))
        return float((1 - ab[t]) / (1 - ab[t + 1]) * mpmath.mpf(float(betas[t])))


@pytest.mark.parametrize("t", [1, 2, 10, 500, 999])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde", "other"])
def test_eps_kl_decomposition(t: int, variance: str) -> None:
    """vlb_term with μ_θ = (x_t − β/√(1−ᾱ) ε_θ)/√α equals w (ε − ε_θ)² + C, elementwise (Ho et al. 2020,
    eq. 8 for the split into the mean part and C, eq. 12 for the mean part's ε form)."""
    b = LINEAR_1000
    rng = np.random.default_rng(t)
    x0 = rng.uniform(-1, 1, size=(3, 5))
    eps = rng.normal(size=x0.shape)
    eps_theta = eps + rng.normal(size=x0.shape) * rng.choice([1.0, 1e-3])
    # closed forms, written here from the paper (eq. 4 for x_t, eq. 11 for μ_θ), at 60 digits
    with mpmath.workdps(60):
        ab = mpmath.fprod(1 - mpmath.mpf(v) for v in b[: t + 1].tolist())
        beta = mpmath.mpf(float(b[t]))
        sa, s1, ra = mpmath.sqrt(ab), mpmath.sqrt(1 - ab), mpmath.sqrt(1 - beta)
        x_t = np.array([float(sa * mpmath.mpf(a) + s1 * mpmath.mpf(e)) for a, e in zip(x0.ravel(), eps.ravel())]).reshape(x0.shape)
        mu = np.array([float((mpmath.mpf(x) - beta / s1 * mpmath.mpf(e)) / ra) for x, e in zip(x_t.ravel(), eps_theta.ravel())]).reshape(x0.shape)
    sigma2 = {"beta": float(b[t]), "beta_tilde": _beta_tilde_exact(b, t), "other": 3.7 * float(b[t])}[variance]
    got = L.vlb_term(x0, x_t, t, mu, math.log(sigma2), b)
    w = L.eps_kl_weight(b, t, sigma2)
    c = L.eps_kl_constant(b, t, sigma2)
    expected = w * (eps - eps_theta) ** 2 + c
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-300)
    if variance == "beta_tilde":
        assert abs(c) < 1e-30  # exactly 0 for σ² = β̃; here σ² is β̃ rounded to a double


@pytest.mark.parametrize("t", [0, 1, 2, 10, 100, 500, 998, 999])
def test_eps_kl_weight_and_constant_ulp(t: int) -> None:
    b = LINEAR_1000
    bt = _beta_tilde_exact(b, max(t, 1))
    werr, cerr = [], []
    for s2 in [b[t], 2 * b[t], 0.1 * bt, 10 * b[t], bt * (1 + 1e-9), 0.45 * bt, 0.55 * bt, 3.0 * bt, 1e-3 * bt]:
        s2 = float(s2)
        werr.append(ulp_error(L.eps_kl_weight(b, t, s2), [TW.eps_kl_weight(b, t, s2)])[0])
        if t >= 1:
            cerr.append(ulp_error(L.eps_kl_constant(b, t, s2), [TW.eps_kl_constant(b, t, s2)])[0])
    assert _worst(np.array(werr), f"eps_kl_weight t={t}") <= MAX_ULP
    if t >= 1:
        assert _worst(np.array(cerr), f"eps_kl_constant t={t}") <= MAX_ULP
        # σ² = fl(β̃): the exact constant is ~1e-33, not 0; absolute agreement
        c = L.eps_kl_constant(b, t, bt)
        assert c < 1e-30 and abs(c - float(TW.eps_kl_constant(b, t, bt))) < 1e-45


def test_eps_kl_constant_cites_eq_8_for_c() -> None:
    """Ho et al. 2020 introduce C in eq. 8, L_{t−1} = E_q[‖μ̃_t − μ_θ‖²/(2σ_t²)] + C; eq. 12 is the ε form
    of the mean part, which has no C (the docstring used to cite eq. 12 for C)."""
    doc = L.eps_kl_constant.__doc__ or ""
    assert re.search(r"constant C of Ho et al\. 2020, eq\. 8\b", doc), doc
    assert not re.search(r"C\W+of Ho et al\. 2020, eq\. 12", doc)
    weight_doc = L.eps_kl_weight.__doc__ or ""
    assert "Ho et al. 2020, eq. 12" in weight_doc and "(eq. 11)" in weight_doc and "eq. 4" in weight_doc


def test_eps_kl_weight_closed_form_first_step() -> None:
    """At index 0 (papers' t = 1), 1 − ᾱ₁ = β₁, so w = β₁ / (2σ² (1 − β₁))."""
    b = LINEAR_1000
    with mpmath.workdps(40):
        exact = mpmath.mpf(1e-4) / (2 * mpmath.mpf(0.5) * (1 - mpmath.mpf(1e-4)))
    assert ulp_error(L.eps_kl_weight(b, 0, 0.5), [exact])[0] <= 1


def test_eps_kl_validation() -> None:
    b = LINEAR_1000
    with pytest.raises(SingularError, match="index 0"):
        L.eps_kl_constant(b, 0, 1e-4)
    with pytest.raises(ValueError, match="sigma2"):
        L.eps_kl_weight(b, 3, 0.0)
    with pytest.raises(ValueError, match="sigma2"):
        L.eps_kl_constant(b, 3, -1.0)
    with pytest.raises(ValueError, match="t="):
        L.eps_kl_weight(b, 1000, 1e-4)
    with pytest.raises(ValueError, match="t="):
        L.eps_kl_constant(b, -1, 1e-4)
    with pytest.raises(SingularError, match="alpha_t = 0"):
        L.eps_kl_weight(np.array([0.5, 1.0]), 1, 1e-4)


# ---------------------------------------------------------------------------------------------
# vlb_term, the whole VLB, bpd
# ---------------------------------------------------------------------------------------------


def test_vlb_term_index0_is_decoder_nll_with_half_log_variance() -> None:
    rng = np.random.default_rng(5)
    x0 = GRID[rng.integers(0, 256, size=(2, 6))]
    mean = x0 + rng.normal(size=x0.shape) * 0.01
    lv = math.log(1e-4)
    got = L.vlb_term(x0, x0 + 0.01, 0, mean, lv, LINEAR_1000)
    for idx in np.ndindex(x0.shape):
        ex = -TW.discretized_gaussian_log_likelihood(float(x0[idx]), float(mean[idx]), lv / 2)
        assert abs(got[idx] - float(ex)) <= 1e-13 * abs(float(ex))
    with pytest.raises(ValueError, match="x0"):
        L.vlb_term(x0 + 0.3, x0, 0, mean, lv, LINEAR_1000)


def test_vlb_term_kl_vs_twin() -> None:
    """Index t >= 1: KL(q(x_{t−1}|x_t, x_0) || N(μ_θ, e^ℓ)) with the twin's posterior (Ho et al. 2020, eq. 7)."""
    b = LINEAR_1000
    t = 37
    x0, x_t, mm = np.array([0.25, -0.5]), np.array([0.4, 1.3]), np.array([0.37, 1.1])
    lv = math.log(float(b[t]))
    got = L.vlb_term(x0, x_t, t, mm, lv, b)
    with mpmath.workdps(60):
        ab = [mpmath.mpf(1)]
        for v in b[: t + 1].tolist():
            ab.append(ab[-1] * (1 - mpmath.mpf(v)))
        ab_t, ab_p, beta = ab[t + 1], ab[t], mpmath.mpf(float(b[t]))
        bt = (1 - ab_p) / (1 - ab_t) * beta
        for i in range(2):
            mt = mpmath.sqrt(ab_p) * beta / (1 - ab_t) * x0[i] + mpmath.sqrt(1 - beta) * (1 - ab_p) / (1 - ab_t) * x_t[i]
            ex = (-1 + lv - mpmath.log(bt) + bt / mpmath.exp(lv) + (mt - mm[i]) ** 2 / mpmath.exp(lv)) / 2
            # the posterior coefficients and log β̃ are few-ULP table values, and the mean difference cancels
            assert abs(got[i] - float(ex)) <= 1e-12 * float(ex)


def test_vlb_term_validation() -> None:
    b = LINEAR_1000
    z = np.zeros(3)
    with pytest.raises(ValueError, match="model_mean"):
        L.vlb_term(z, z, 3, np.zeros(4), 0.0, b)
    with pytest.raises(ValueError, match="x_t"):
        L.vlb_term(z, np.zeros(2), 3, z, 0.0, b)
    with pytest.raises(ValueError, match="model_log_variance"):
        L.vlb_term(z, z, 3, z, np.zeros(2), b)
    with pytest.raises(ValueError, match="model_log_variance"):
        L.vlb_term(z, z, 3, z, np.nan, b)
    with pytest.raises(ValueError, match="t="):
        L.vlb_term(z, z, 1000, z, 0.0, b)
    with pytest.raises(ValueError, match="cdf"):
        L.vlb_term(z, z, 3, z, 0.0, b, cdf="approx")


def test_mean_flat_bpd() -> None:
    v = np.full((2, 3, 4), math.log(2.0))
    assert np.allclose(L.mean_flat_bpd(v), [1.0, 1.0], rtol=0, atol=1e-15)
    assert L.mean_flat_bpd(np.array([math.log(2.0), 0.0])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="values"):
        L.mean_flat_bpd(1.0)


def _toy_setup() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T = 4, batch of 2 images of 3 pixels; noises for every index."""
    betas = np.array([0.05, 0.1, 0.2, 0.4])
    rng = np.random.default_rng(11)
    x0 = GRID[rng.integers(0, 256, size=(2, 3))]
    noises = rng.normal(size=(4, 2, 3))
    with mpmath.workdps(40):
        ab, p = [], mpmath.mpf(1)
        for v in betas.tolist():
            p *= 1 - mpmath.mpf(v)
            ab.append(p)
        x_ts = np.array(
            [[[float(mpmath.sqrt(ab[t]) * x0[i, j] + mpmath.sqrt(1 - ab[t]) * noises[t, i, j]) for j in range(3)] for i in range(2)] for t in range(4)]
        )
    return betas, x0, noises, x_ts


def test_vlb_terms_bpd_with_true_posterior_model() -> None:
    """A model whose mean and variance equal the posterior's has L_t = 0 for t >= 1; the bound is L_T + L_0."""
    from ddspec.reference.posterior import beta_tilde, posterior_log_variance_clipped, posterior_mean

    betas, x0, _, x_ts = _toy_setup()
    means = np.stack([x_ts[0] * 0.9] + [posterior_mean(x0, x_ts[t], t, betas) for t in range(1, 4)])
    logvars = posterior_log_variance_clipped(betas)  # (T,): one log-variance per index
    res = L.vlb_terms_bpd(x0, x_ts, means, logvars, betas)
    assert res.terms_bpd.shape == (2, 4) and res.prior_bpd.shape == (2,) and res.total_bpd.shape == (2,)
    assert np.all(res.terms_bpd[:, 1:] == 0.0)
    # L_0 from the twin decoder, L_T from the twin prior, both per sample in bits/dim
    ln2 = mpmath.log(2)
    for i in range(2):
        l0 = -mpmath.fsum(TW.discretized_gaussian_log_likelihood(float(x0[i, j]), float(means[0, i, j]), float(logvars[0]) / 2) for j in range(3)) / 3 / ln2
        lt = mpmath.fsum(TW.prior_kl(float(x0[i, j]), betas) for j in range(3)) / 3 / ln2
        assert res.terms_bpd[i, 0] == pytest.approx(float(l0), rel=1e-13)
        assert res.prior_bpd[i] == pytest.approx(float(lt), rel=1e-13)
        assert res.total_bpd[i] == pytest.approx(float(l0 + lt), rel=1e-13)
    assert beta_tilde(betas)[0] == 0.0  # (why index 0 is the decoder, not a KL)


def test_total_vlb_bpd_matches_vlb_terms_bpd() -> None:
    """total_vlb_bpd draws x_t = √ᾱ x0 + √(1−ᾱ) ε (eq. 4) itself and calls the model; same result."""
    betas, x0, noises, x_ts = _toy_setup()
    seen: list[int] = []

    def model_fn(x_t: np.ndarray, t: int) -> tuple[np.ndarray, float]:
        seen.append(t)
        return 0.8 * x_t + 0.01 * t, math.log(betas[t])

    res = L.total_vlb_bpd(x0, model_fn, betas, noises)
    assert seen == [0, 1, 2, 3]
    ref = L.vlb_terms_bpd(x0, x_ts, np.stack([0.8 * x_ts[t] + 0.01 * t for t in range(4)]), np.log(betas), betas)
    np.testing.assert_allclose(res.terms_bpd, ref.terms_bpd, rtol=1e-12)
    np.testing.assert_allclose(res.total_bpd, ref.total_bpd, rtol=1e-12)
    assert np.all(res.terms_bpd > 0)
    np.testing.assert_allclose(res.total_bpd, res.prior_bpd + res.terms_bpd.sum(axis=1), rtol=1e-15)
    with pytest.raises(ValueError, match="noises"):
        L.total_vlb_bpd(x0, model_fn, betas, noises[:3])
    with pytest.raises(ValueError, match="model_fn"):
        L.total_vlb_bpd(x0, None, betas, noises)  # type: ignore[arg-type]


def test_vlb_terms_bpd_validation() -> None:
    betas, x0, _, x_ts = _toy_setup()
    with pytest.raises(ValueError, match="x_ts"):
        L.vlb_terms_bpd(x0, x_ts[:3], x_ts, np.zeros(4), betas)
    with pytest.raises(ValueError, match="model_means"):
        L.vlb_terms_bpd(x0, x_ts, x_ts[:, :1], np.zeros(4), betas)
    with pytest.raises(ValueError, match="model_log_variances"):
        L.vlb_terms_bpd(x0, x_ts, x_ts, np.zeros(3), betas)
    with pytest.raises(ValueError, match="x0"):
        L.vlb_terms_bpd(x0 + 1e-3, x_ts, x_ts, np.zeros(4), betas)


# ---------------------------------------------------------------------------------------------
# L_simple and L_hybrid
# ---------------------------------------------------------------------------------------------


def test_l_simple_is_mean_over_all_elements() -> None:
    """ε_θ = ε + c with c = 0.5 · row index: per-sample MSE is c², the total its mean (Ho et al. 2020, eq. 14)."""
    rng = np.random.default_rng(2)
    eps = rng.normal(size=(3, 4, 5))
    shift = np.array([0.0, 0.5, 1.0])[:, None, None]
    per = L.l_simple_per_sample(eps, eps + shift)
    np.testing.assert_allclose(per, [0.0, 0.25, 1.0], rtol=1e-15, atol=1e-15)
    assert L.l_simple(eps, eps + shift) == pytest.approx((0.0 + 0.25 + 1.0) / 3, rel=1e-15)
    with pytest.raises(ValueError, match="eps_pred"):
        L.l_simple(eps, eps[:2])
    with pytest.raises(ValueError, match="eps"):
        L.l_simple_per_sample(np.nan, 0.0)


def test_l_hybrid() -> None:
    """L_simple + λ L_vlb per sample, λ = 0.001 by default (Nichol & Dhariwal 2021, §3.1)."""
    eps = np.zeros((2, 3))
    eps_pred = np.ones((2, 3))
    vlb = np.array([2.0, 5.0])
    np.testing.assert_allclose(L.l_hybrid(eps, eps_pred, vlb), [1.002, 1.005], rtol=1e-15)
    np.testing.assert_allclose(L.l_hybrid(eps, eps_pred, vlb, lam=0.0), [1.0, 1.0], rtol=0)
    np.testing.assert_allclose(L.l_hybrid(eps, eps_pred, 3.0, lam=0.5), [2.5, 2.5], rtol=1e-15)
    with pytest.raises(ValueError, match="lam"):
        L.l_hybrid(eps, eps_pred, vlb, lam=-1.0)
    with pytest.raises(ValueError, match="vlb_term_value"):
        L.l_hybrid(eps, eps_pred, np.ones(3))


# ---------------------------------------------------------------------------------------------
# L_hybrid with units (improved-diffusion RESCALED_MSE) and the trajectory densities
# ---------------------------------------------------------------------------------------------


def test_rescaled_hybrid_property_catches_a_planted_unit_slip(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rescaled-VLB property fails when the term is weighted T/100 instead of T/1000 (λ off by 10) and
    when RESCALED_KL's factor T is dropped (the per-t term in place of its uniform-t estimate)."""
    from tests.properties import test_elbo_properties as props
    from tests.reference.test_ncsn import run_quickly

    true_scale = L.vb_term_scale
    monkeypatch.setattr(L, "l_hybrid_rescaled",
                        lambda eps, eps_pred, vb, n: L.l_hybrid(eps, eps_pred, vb, lam=n / 100.0))
    with pytest.raises(AssertionError):
        run_quickly(props.test_rescaled_vb_term_averages_to_lambda_times_the_vlb)
    monkeypatch.undo()
    monkeypatch.setattr(L, "vb_term_scale", lambda n, loss_type="rescaled_mse": 1.0 if loss_type == "rescaled_kl"
                        else true_scale(n, loss_type))
    with pytest.raises(AssertionError):
        run_quickly(props.test_rescaled_vb_term_averages_to_lambda_times_the_vlb)


def test_trajectory_densities_closed_forms() -> None:
    """T = 1, one element: log q = log N(x_1; √(1−β)x_0, β); log p = log N(x_1; 0, 1) + the decoder's log P(bin)."""
    betas = np.array([0.36])
    x0 = np.array([[GRID[200]]])
    x1 = np.array([[[0.5]]])
    lq = L.log_q_trajectory(x0, x1, betas)
    want = -0.5 * (math.log(2 * math.pi * 0.36) + (0.5 - 0.8 * GRID[200]) ** 2 / 0.36)
    assert abs(lq[0] - want) <= 8 * 2.0**-53 * (abs(want) + 2)
    lp = L.log_p_trajectory(x0, x1, np.array([[[0.6]]]), np.array([-4.0]), betas)
    dec = L.discretized_gaussian_log_likelihood(x0, np.array([[0.6]]), np.array([[-2.0]]))
    want_p = -0.5 * (math.log(2 * math.pi) + 0.25) + float(dec[0, 0])
    assert abs(lp[0] - want_p) <= 8 * 2.0**-53 * (abs(want_p) + 2)
    with pytest.raises(ValueError, match="x_ts="):
        L.log_q_trajectory(x0, np.zeros((2, 1, 1)), betas)
    with pytest.raises(ValueError, match="x0="):
        L.log_p_trajectory(np.array([[0.123]]), x1, x1, np.array([-4.0]), betas)
    with pytest.raises(ValueError, match="loss_type="):
        L.vb_term_scale(1000, "rescaled")
