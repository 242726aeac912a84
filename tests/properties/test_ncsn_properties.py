r"""Properties of the NCSN equations (Song & Ermon 2019): the σ ladder, annealed Langevin dynamics, the DSM loss.

* §4.1: the ladder is geometric, σ_{i+1}/σ_i = (σ_L/σ_1)^{1/(L−1)}, with the given ends.
* Algorithm 1 with the exact score of Gaussian data N(m, s²) perturbed at level σ,
  :math:`s(x, \sigma) = -(x - m)/(s^2 + \sigma^2)`, is affine: each step is
  :math:`x' - m = (1 - \tfrac{a}{2v})(x - m) + \sqrt a\,z` with v = s² + σ², so the whole run is
  :math:`x_\mathrm{out} - m = P(x_0 - m) + \sum_k c_k z_k`, P the product of the factors and c_k = √a_k
  times the product of the later factors (derived here, not taken from the code).
* eq. 5: for data N(m, v) and a linear score s(x̃) = a x̃ + b, the expected DSM loss is
  :math:`\tfrac12[(am + b)^2 + a^2 v + (a\sigma + 1/\sigma)^2]` (x̃ = x + σz: the residual
  s + (x̃ − x)/σ² = a x + b + (aσ + 1/σ)z has that mean and variance); it is minimised by the score of
  the perturbed data, a = −1/(v + σ²), b = m/(v + σ²), where it exceeds its minimum by
  :math:`\tfrac12[(\delta a\, m + \delta b)^2 + \delta a^2 (v + \sigma^2)]`. The expectation is taken by a
  3×3-point Gauss–Hermite rule, exact for this degree-2 integrand.
* eq. 6 with λ(σ) = σ²: σ²·ℓ = ½‖σ s + z‖² at x̃ = x + σz.

Tolerances are in units of u = 2⁻⁵³ and derived in each docstring.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from ddspec.reference import ncsn

from .strategies import FLOOR, U, assert_within, data_arrays, noise_arrays, repro


@given(st.data())
def test_geometric_ladder_has_a_constant_ratio_and_exact_ends(data: st.DataObject) -> None:
    r"""σ_1 and σ_L are returned exactly; every ratio σ_{i+1}/σ_i equals q = (σ_L/σ_1)^{1/(L−1)}.

    Each σ_i = fl(σ_1 exp(fl(f_i · fl(log r)))) with |log r| = ρ: its relative error is ≤ (2 + 2ρ)u
    (log r and the product f_i log r carry ≤ ρu each, exp and the products ≤ 2u); a ratio of two
    doubles ≤ (5 + 4ρ)u, and q computed here by exp(log r/(L − 1)) ≤ (2 + ρ)u: total (8 + 5ρ)u.
    """
    hi = data.draw(st.floats(1e-3, 1e3), label="sigma_max")
    r = data.draw(st.floats(1e-6, 0.999), label="sigma_min / sigma_max")
    n = data.draw(st.integers(2, 500), label="num_levels")
    lo = hi * r
    note(repro(sigma_max=hi, sigma_min=lo, num_levels=n) + "; ncsn.geometric_sigmas(sigma_max, sigma_min, num_levels)")
    s = ncsn.geometric_sigmas(hi, lo, n)
    assert s.shape == (n,), s.shape
    assert s[0] == hi and s[-1] == lo, (s[0], hi, s[-1], lo)
    rho = abs(math.log(lo / hi))
    q = math.exp(math.log(lo / hi) / (n - 1))
    assert_within(s[1:] / s[:-1], q, (8 + 5 * rho) * U * q, f"ratio of consecutive levels, L={n}")


@given(st.data())
def test_annealed_langevin_on_a_gaussian_score_is_the_derived_affine_map(data: st.DataObject) -> None:
    r"""Algorithm 1 with the exact Gaussian score is x_out = m + P(x_0 − m) + Σ_k c_k z_k (module docstring).

    The step sizes a_i = ε σ_i²/σ_L² with ε ≤ σ_L² keep every factor 1 − a/(2v) in [1/2, 1], so no
    rounding is amplified: every iterate and every term is bounded by
    M = |x_0 − m| + |m| + Σ_k √a_k |z_k|, and each of the n steps adds ≤ 12u·M (the update's three
    terms and their sum, the score's subtraction and division), as does the closed form's sum:
    the bound is 24·n·u·M.
    """
    L = data.draw(st.integers(1, 4), label="levels")
    hi = data.draw(st.floats(0.05, 10.0), label="sigma_1")
    ladder = ncsn.geometric_sigmas(hi, hi * data.draw(st.floats(0.01, 0.9), label="ratio"), L) if L > 1 else np.array([hi])
    steps = data.draw(st.integers(1, 5), label="steps per level")
    eps = data.draw(st.floats(1e-6, 1.0), label="epsilon / sigma_L^2") * float(ladder[-1]) ** 2
    d = data.draw(st.integers(1, 4), label="dimension")
    m = data.draw(data_arrays((d,), 10.0), label="m")
    s2 = data.draw(st.floats(0.0, 4.0), label="s^2")
    x0 = data.draw(data_arrays((d,), 10.0), label="x_init")
    z = data.draw(noise_arrays((L, steps, d)), label="noises")
    note(repro(sigmas=ladder, epsilon=eps, m=m, s2=s2, x_init=x0, noises=z)
         + "; ncsn.annealed_langevin_dynamics(lambda x, sg: -(x - m) / (s2 + sg * sg), x_init, sigmas, epsilon, noises)")
    out = ncsn.annealed_langevin_dynamics(lambda x, sg: -(x - m) / (s2 + sg * sg), x0, ladder, eps, z)

    a = [eps * (float(sg) / float(ladder[-1])) ** 2 for sg in ladder for _ in range(steps)]
    f = [1.0 - a_k / (2.0 * (s2 + float(sg) ** 2)) for a_k, sg in zip(a, np.repeat(ladder, steps))]
    zz = z.reshape(L * steps, d)
    n = len(a)
    expected = np.prod(f) * (x0 - m) + m
    for k in range(n):
        expected = expected + math.sqrt(a[k]) * math.prod(f[k + 1:]) * zz[k]
    M = np.abs(x0 - m) + np.abs(m) + sum(math.sqrt(a[k]) * np.abs(zz[k]) for k in range(n))
    assert_within(out, expected, 24 * n * U * M + FLOOR, f"Langevin run ({L} levels x {steps} steps) vs the affine map")


def _gauss_hermite_dsm(a: float, b: float, m: float, v: float, sigma: float) -> tuple[float, float]:
    """(E[ℓ] by a 3×3 Gauss–Hermite rule over x ~ N(m, v), z ~ N(0, 1), and a bound on its rounding)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)  # ∫ f(u) e^{−u²/2} du; weights sum to √(2π)
    w = np.outer(weights, weights).ravel() / (2.0 * math.pi)
    x = (m + math.sqrt(v) * np.repeat(nodes, 3))
    z = np.tile(nodes, 3)
    x_noisy = x + sigma * z
    per = ncsn.dsm_loss_per_sample(a * x_noisy + b, x, x_noisy, sigma)
    # ℓ = r²/2 with r = a x̃ + b + (x̃ − x)/σ²: each part of r carries ≤ 4u of the sum of magnitudes, and
    # x̃ − x is off by u|x̃| (the rounding of x + σz), i.e. u|x̃|/σ² in r.
    mag = np.abs(a * x_noisy) + abs(b) + np.abs(z) / sigma
    dr = 4 * U * mag + U * np.abs(x_noisy) / sigma**2
    err = np.sum(w * (mag * dr + 0.5 * dr * dr + 2 * U * mag * mag))
    return float(np.sum(w * per)), float(err)


@given(st.data())
def test_dsm_loss_expectation_is_the_closed_form_and_the_noisy_score_minimises_it(data: st.DataObject) -> None:
    r"""E[ℓ] = ½[(am + b)² + a²v + (aσ + 1/σ)²] (eq. 5), and E[ℓ](a* + δa, b* + δb) − E[ℓ](a*, b*) is the quadratic form.

    Derivation in the module docstring. The Gauss–Hermite rule is exact for the degree-2 integrand, so
    the only error is rounding, bounded in ``_gauss_hermite_dsm``; the closed form's own rounding is
    ≤ 8u times the sum of its (non-negative) terms, (|am| + |b|)² + a²v + (|a|σ + 1/σ)².
    """
    m = data.draw(st.floats(-3.0, 3.0), label="m")
    v = data.draw(st.floats(0.0, 4.0), label="v")
    sigma = data.draw(st.floats(0.01, 5.0), label="sigma")
    a = data.draw(st.floats(-5.0, 5.0), label="a")
    b = data.draw(st.floats(-5.0, 5.0), label="b")
    note(repro(m=m, v=v, sigma=sigma, a=a, b=b))
    got, err = _gauss_hermite_dsm(a, b, m, v, sigma)
    expected = 0.5 * ((a * m + b) ** 2 + a * a * v + (a * sigma + 1.0 / sigma) ** 2)
    scale = (abs(a * m) + abs(b)) ** 2 + a * a * v + (abs(a) * sigma + 1.0 / sigma) ** 2
    assert_within(got, expected, err + 8 * U * scale, f"E[dsm loss] for a={a}, b={b}")

    a_star, b_star = -1.0 / (v + sigma**2), m / (v + sigma**2)
    da = data.draw(st.floats(-1.0, 1.0), label="delta a")
    db = data.draw(st.floats(-1.0, 1.0), label="delta b")
    low, err_low = _gauss_hermite_dsm(a_star, b_star, m, v, sigma)
    high, err_high = _gauss_hermite_dsm(a_star + da, b_star + db, m, v, sigma)
    excess = 0.5 * ((da * m + db) ** 2 + da * da * (v + sigma**2))
    # the perturbed coefficients are rounded sums: a* + δa is off by u|a* + δa|, which moves E by at most
    # |∂E/∂a|·u|a| ≤ (|am + b||m| + |a|v + |aσ + 1/σ|σ)·u|a| (and likewise for b)
    a1, b1 = a_star + da, b_star + db
    grad = (abs(a1 * m + b1) * abs(m) + abs(a1) * v + abs(a1 * sigma + 1 / sigma) * sigma) * U * abs(a1) \
        + abs(a1 * m + b1) * U * abs(b1)
    assert_within(high - low, excess, err_low + err_high + 4 * grad + 8 * U * excess + FLOOR,
                  "excess DSM loss over the perturbed-data score")


@given(st.data())
def test_sigma_squared_weighting_is_half_the_norm_of_sigma_score_plus_z(data: st.DataObject) -> None:
    r"""With λ(σ) = σ² (eq. 6) and x̃ = x + σz: the loss is the batch mean of ½‖σ s + z‖².

    Rounding: σ r = σ s + (x̃ − x)/σ, whose second part is off by ≤ 2u(|x| + σ|z|)/σ (x̃'s rounding,
    then the subtraction) and whose sum ≤ 4u(|σ s| + |z|); the square, the σ² weight and the sums add
    ≤ 8u of ½(σ r)² per element. Per element δ = 2u(|x| + σ|z|)/σ + 4u(|σs| + |z|) and the bound is
    the batch mean of Σ(|σ r|δ + δ²/2 + 8u·(σ r)²/2).
    """
    B = data.draw(st.integers(1, 4), label="batch")
    d = data.draw(st.integers(1, 4), label="dimension")
    x = data.draw(data_arrays((B, d), 10.0), label="x")
    z = data.draw(noise_arrays((B, d)), label="z")
    s = data.draw(data_arrays((B, d), 100.0), label="score")
    sig = np.array(data.draw(st.lists(st.floats(1e-3, 50.0), min_size=B, max_size=B), label="sigma"))
    note(repro(x=x, z=z, score=s, sigma=sig) + "; ncsn.annealed_dsm_loss(score, x, x + sigma[:, None] * z, sigma)")
    x_noisy = x + sig[:, None] * z
    got = ncsn.annealed_dsm_loss(s, x, x_noisy, sig)
    sr = sig[:, None] * s + z
    expected = float(np.mean(0.5 * np.sum(sr * sr, axis=1)))
    delta = 2 * U * (np.abs(x) + sig[:, None] * np.abs(z)) / sig[:, None] + 4 * U * (np.abs(sig[:, None] * s) + np.abs(z))
    bound = float(np.mean(np.sum(np.abs(sr) * delta + 0.5 * delta * delta + 4 * U * sr * sr, axis=1)))
    assert_within(got, expected, bound + FLOOR, "sigma^2-weighted DSM loss vs 1/2 |sigma s + z|^2")
