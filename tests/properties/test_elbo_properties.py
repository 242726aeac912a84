r"""The whole-trajectory bound and improved-diffusion's rescaled VLB term.

**The trajectory ELBO** (Ho et al. 2020, eq. 3 and eq. 5). For any model p_θ and every x₀,

.. math::

    \mathbb E_{q(x_{1:T}|x_0)}\big[\log q(x_{1:T}\mid x_0) - \log p_\theta(x_{0:T})\big]
      = L_T + \sum_{t\ge2} \mathbb E_q\,L_{t-1}(x_t) + \mathbb E_q\,L_0(x_1),

because :math:`q(x_{1:T}|x_0) = q(x_T|x_0)\prod_{t\ge2} q(x_{t-1}|x_t,x_0)` (eq. 5's rewriting), and the
expectation of each log-ratio over x_{t−1} given (x_t, x_0) is the KL term at x_t. So on every
forward trajectory the difference

.. math:: D = \log q(x_{1:T}|x_0) - \log p_\theta(x_{0:T}) - \big(L_T + \textstyle\sum_t L_t(x_t)\big)

(the bracket is ``vlb_terms_bpd`` on the same trajectory, in nats) has mean exactly 0. The test draws N
forward trajectories (Ho et al. 2020, eq. 2) from a fixed x₀ on the 8-bit grid, takes the Gaussian
oracle's exact denoiser as the model (the posterior mean at its x̂₀, variance β̃; the decoder at index 0),
and asserts |mean D| ≤ 6.5 standard errors (the SE estimated from the same N samples).

*False-failure rate*: under the normal approximation P(|Z| > 6.5) = 8.0e-11; with the estimated SE
(Student t, N − 1 = 15999 degrees of freedom) and the CLT's error for this sum of T smooth terms, it is
booked as 1e-9 in the statistical ledger. The seed is fixed (``stats.seed_for``), so the test is
deterministic. *Power*: a planted erratum (the forward mean √(1 − β) replaced by 1 − β, and the
prior term dropped) moves mean D by more than 1.5 times the bound (asserted in the second test).

**The rescaled term** (Nichol & Dhariwal 2021, eq. 16; improved-diffusion ``RESCALED_MSE``):
averaging T/1000 · L_t over every t (the uniform t of training) gives (1/1000) Σ_t L_t = λ(L_vlb − L_T).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from numpy.typing import NDArray

from ddspec.conformance import stats as S
from ddspec.reference import likelihood, oracles, posterior, schedules

from .strategies import U, assert_within, data_arrays, noise_arrays, repro

Array = NDArray[np.float64]

ELBO_NAME = "tests/properties/trajectory_elbo_monte_carlo"
ELBO_ALPHA = S.LEDGER.allocate(ELBO_NAME, 1e-9)
Z_BOUND = 6.5
N = 16_000
T = 20
BETAS = schedules.linear_betas(T, 1e-3, 0.3)
ORACLE = oracles.IsotropicGaussian(np.array([0.4, -0.3, 0.1]), np.array([0.09, 0.25, 0.04]))
X0 = (2.0 * np.array([178.0, 89.0, 140.0]) - 255.0) / 255.0  # on the 8-bit grid


def _trajectories(rng: np.random.Generator, forward_gain: Callable[[float], float]) -> tuple[Array, Array]:
    """x0 repeated (N, d) and N forward trajectories (T, N, d): x_t = g(β_t) x_{t−1} + √β_t z_t."""
    x0 = np.broadcast_to(X0, (N, X0.size)).copy()
    xs = np.empty((T, N, X0.size))
    prev = x0
    for t in range(T):
        beta = float(BETAS[t])
        prev = forward_gain(beta) * prev + math.sqrt(beta) * rng.standard_normal(prev.shape)
        xs[t] = prev
    return x0, xs


def _model(xs: Array) -> tuple[Array, Array]:
    """The oracle's reverse model: μ_θ(x_t) = μ̃_t(x̂₀*(x_t), x_t), log-variance log β̃ (index 0: the decoder)."""
    means = np.stack([posterior.posterior_mean(ORACLE.x0(xs[t], t, BETAS), xs[t], t, BETAS) for t in range(T)])
    return means, posterior.posterior_log_variance_clipped(BETAS)


def _elbo_gap(log_q: Callable[..., Array], log_p: Callable[..., Array], gain: Callable[[float], float]) -> tuple[float, float]:
    """(mean D, standard error of mean D) over N trajectories (module docstring)."""
    rng = np.random.default_rng(S.seed_for(ELBO_NAME))
    x0, xs = _trajectories(rng, gain)
    means, logvars = _model(xs)
    vlb = likelihood.vlb_terms_bpd(x0, xs, means, logvars, BETAS)
    vlb_nats = vlb.total_bpd * math.log(2.0) * X0.size
    d = log_q(x0, xs, BETAS) - log_p(x0, xs, means, logvars, BETAS) - vlb_nats
    return float(np.mean(d)), float(np.std(d, ddof=1) / math.sqrt(N))


@pytest.mark.statistical
def test_trajectory_log_ratio_is_the_vlb_in_expectation() -> None:
    """E_q[log q(x_{1:T}|x0) − log p(x_{0:T})] = L_T + Σ L_t + L_0, by Monte Carlo (module docstring)."""
    mean, se = _elbo_gap(likelihood.log_q_trajectory, likelihood.log_p_trajectory, lambda b: math.sqrt(1.0 - b))
    assert se > 0
    assert abs(mean) <= Z_BOUND * se, (
        f"trajectory ELBO: expected mean log q/p − (L_T + Σ L_t + L_0) = 0 within {Z_BOUND} SE "
        f"(false-failure rate {ELBO_ALPHA:g}); got mean {mean:.6g} nats, SE {se:.3g} (N={N}, T={T})")


@pytest.mark.statistical
def test_trajectory_elbo_check_catches_planted_errata() -> None:
    """Power: two classic slips move mean D beyond 1.5 times the bound.

    (a) Forward chain with mean (1 − β)x_{t−1} instead of √(1 − β)x_{t−1} in log q: the trajectories
    are still drawn from the true q, so log q is now the wrong density and D's mean shifts by
    −E[Σ_t ((√α_t − α_t)x_{t−1})²/(2β_t) + …] (about 12 SE here).
    (b) log p without its prior term log N(x_T; 0, I): the mean shifts by
    −E[log N(x_T; 0, I)] = d(½ log 2π + ½ E|x_T|²/d) ≈ 4.3 nats.
    """
    def wrong_q(x0: Array, xs: Array, betas: Array) -> Array:
        total = np.zeros(x0.shape[0])
        for t in range(T):
            prev = x0 if t == 0 else xs[t - 1]
            beta = float(betas[t])
            d = xs[t] - (1.0 - beta) * prev
            total = total + np.sum(-0.5 * (math.log(2 * math.pi * beta) + d * d / beta), axis=1)
        return total

    def no_prior_p(x0: Array, xs: Array, means: Array, lv: Array, betas: Array) -> Array:
        prior = np.sum(-0.5 * (math.log(2 * math.pi) + xs[-1] ** 2), axis=1)
        return likelihood.log_p_trajectory(x0, xs, means, lv, betas) - prior

    gain = lambda b: math.sqrt(1.0 - b)  # noqa: E731
    mean_a, se_a = _elbo_gap(wrong_q, likelihood.log_p_trajectory, gain)
    assert abs(mean_a) > 1.5 * Z_BOUND * se_a, (mean_a, se_a)
    mean_b, se_b = _elbo_gap(likelihood.log_q_trajectory, no_prior_p, gain)
    assert abs(mean_b) > 1.5 * Z_BOUND * se_b, (mean_b, se_b)


@given(st.data())
def test_rescaled_vb_term_averages_to_lambda_times_the_vlb(data: st.DataObject) -> None:
    r"""Averaged over every t, improved-diffusion's loss is L_simple + (1/1000) Σ_t L_t (RESCALED_MSE) and
    its RESCALED_KL term averages to Σ_t L_t.

    .. math:: \frac1T\sum_t\Big(L_\mathrm{simple} + \frac{T}{1000}L_t\Big) - L_\mathrm{simple} = \frac{1}{1000}\sum_t L_t,\qquad
              \frac1T\sum_t T\,L_t = \sum_t L_t

    Rounding: each loss is L_simple + fl(T/1000)·L_t (≤ 4u of its magnitude), the mean over T values
    adds ≤ T·u of the sum of magnitudes (recursive summation), and subtracting L_simple is exact to
    ≤ u of it: bound (T + 8)·u·(L_simple + (T/1000) max L_t) per sample.
    """
    n_t = data.draw(st.integers(1, 4000), label="T")
    batch = data.draw(st.integers(1, 3), label="batch")
    d = data.draw(st.integers(1, 4), label="dimension")
    eps = data.draw(noise_arrays((batch, d)), label="eps")
    eps_pred = data.draw(noise_arrays((batch, d)), label="eps_pred")
    terms = np.abs(data.draw(data_arrays((batch, 5), 100.0), label="L_t pattern"))
    table = np.tile(terms, (1, n_t // 5 + 1))[:, :n_t]  # (batch, T) VLB terms in bits/dim
    note(repro(T=n_t, eps=eps, eps_pred=eps_pred, terms=terms))
    simple = likelihood.l_simple_per_sample(eps, eps_pred)
    losses = np.stack([likelihood.l_hybrid_rescaled(eps, eps_pred, table[:, t], n_t) for t in range(n_t)], axis=1)
    mag = simple + (n_t / 1000.0) * table.max(axis=1)
    assert_within(losses.mean(axis=1) - simple, table.sum(axis=1) / 1000.0, (n_t + 8) * U * mag,
                  f"mean over t of the RESCALED_MSE loss minus L_simple, T={n_t}")
    kl = likelihood.vb_term_scale(n_t, "rescaled_kl") * table
    assert_within(kl.mean(axis=1), table.sum(axis=1), (n_t + 4) * U * n_t * table.max(axis=1),
                  f"mean over t of the RESCALED_KL loss, T={n_t}")
