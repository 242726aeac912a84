r"""Worked examples: numbers printed in the papers (and the released code), reproduced by the reference.

Each test names where its number is printed and derives the tolerance from the printed precision
(half a unit in the last printed digit) or from the paper's own "≈". These are regression tests of
the reference against the literature, not of the reference against itself: the expected values are
the printed ones. They were consolidated here from test_likelihood.py and test_schedules.py.

=========================================================  =========================================
number                                                      printed in
=========================================================  =========================================
L_T ≈ 1e-5 bits/dim (linear 1e-4 … 0.02, T = 1000)          Ho et al. 2020, §4 (first paragraph)
cosine: s = 0.008 makes √β_1 slightly below 1/127.5          Nichol & Dhariwal 2021, §3.2
cosine: β clipped at 0.999 (ᾱ(T) = f(T)/f(0) = 0)             Nichol & Dhariwal 2021, §3.2 (eq. 17)
SD scaled_linear 0.00085 … 0.012, T = 1000:                  Lin et al. 2023, §3.1 (text)
√ᾱ_T = 0.068265, SNR_T = 0.004682
improved-diffusion RESCALED_MSE: L_vlb term × T/1000         improved_diffusion/gaussian_diffusion.py,
(× 4 at the paper's T = 4000)                                ``training_losses`` (``num_timesteps / 1000.0``)
=========================================================  =========================================
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

from ddspec.reference import alphas, likelihood, schedules
from ddspec.reference.twin import likelihood as twin_likelihood

GRID = (2.0 * np.arange(256) - 255.0) / 255.0  # the 8-bit data grid on [−1, 1]


def test_ddpm_prior_term_is_1e_minus_5_bits_per_dim() -> None:
    r"""Ho et al. 2020, §4: "L_T = D_KL(q(x_T|x_0) ‖ N(0, I)) ≈ 10⁻⁵ bits per dimension" (linear β, T = 1000).

    For x₀ uniform on the 8-bit grid (every value once). The paper's "≈ 10⁻⁵" is an order of
    magnitude: asserted as 5e-6 < L_T < 2e-5. Closed form: L_T ≈ ½ᾱ_T E[x₀²]/ln 2 with
    ᾱ_T ≈ 4.04e-5 and E[x₀²] = 257/765 ≈ 0.3359 on the grid, i.e. ≈ 9.78e-6; the exact value (the
    mpmath twin, sum over the grid) is matched to 1e-14 relative.
    """
    betas = schedules.linear_betas(1000)
    bpd = likelihood.prior_bpd(GRID.reshape(4, 64), betas)
    total = float(bpd.mean())
    assert 5e-6 < total < 2e-5, f"L_T = {total:.3g} bits/dim; Ho et al. 2020 §4 print ≈ 1e-5"
    with mpmath.workdps(60):
        exact = mpmath.fsum(twin_likelihood.prior_kl(float(v), betas) for v in GRID) / 256 / mpmath.log(2)
    assert abs(total - float(exact)) <= 1e-14 * float(exact), (total, float(exact))
    ab_T = float(alphas.alpha_bar(betas)[-1])
    # −ᾱ − log(1 − ᾱ) = ᾱ²/2 + ᾱ³/3 + …: to second order L_T = ½(ᾱ_T E[x₀²] + ᾱ_T²/2)/ln 2, and the
    # neglected ᾱ_T³/3 is below ᾱ_T² ≈ 1.6e-9 of it, far inside the tolerance ᾱ_T (relative)
    approx = 0.5 * (ab_T * float(np.mean(GRID**2)) + 0.5 * ab_T**2) / math.log(2.0)
    assert abs(total - approx) <= ab_T * approx, (total, approx)


def test_cosine_offset_puts_sqrt_beta_1_just_below_the_pixel_bin() -> None:
    r"""Nichol & Dhariwal 2021, §3.2: s = 0.008 was chosen "such that √β_0 was slightly smaller than the pixel bin size 1/127.5".

    (Their β_0 is our first β, index 0.) At T = 1000: √β_1 = 0.00643 < 1/127.5 = 0.00784, and
    "slightly": above half of it. Without the offset (s = 0) √β_1 ≈ π/(2T) = 0.00157, far below: the
    offset is what puts it near the bin size.
    """
    beta_1 = float(schedules.cosine_betas(1000)[0])
    bin_size = 1.0 / 127.5
    assert 0.5 * bin_size < math.sqrt(beta_1) < bin_size, (math.sqrt(beta_1), bin_size)
    no_offset = float(schedules.cosine_betas(1000, s=0.0)[0])
    assert math.sqrt(no_offset) < 0.25 * bin_size
    assert abs(math.sqrt(no_offset) - math.pi / 2000) <= 1e-3 * math.pi / 2000  # sin(π/2T) ≈ π/2T


def test_cosine_endpoints_and_the_clip() -> None:
    r"""Nichol & Dhariwal 2021, §3.2: ᾱ_t = f(t)/f(0) (eq. 17), so ᾱ_0 = 1 and ᾱ_T = f(T)/f(0) = cos²(π/2)/f(0) = 0;
    "we clip β_t to be no larger than 0.999 to prevent singularities at the end of the diffusion process".

    With the clip only the last β is clipped (its raw value is 1), so ᾱ_T = 0.001·ᾱ_{T−1} instead of 0.
    ᾱ_1 = f(1)/f(0) from eq. 17 directly (math.cos; relative error a few u, tolerance 1e-14).
    """
    for T in (1000, 4000):
        betas = schedules.cosine_betas(T)
        assert betas[-1] == 0.999 and np.all(betas[:-1] < 0.999)
        ab = alphas.alpha_bar(betas)
        assert abs(ab[-1] / ab[-2] - 0.001) <= 1e-12
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        assert abs(ab[0] - f(1 / T) / f(0.0)) <= 1e-14
        assert abs(ab[T // 2 - 1] - f(0.5) / f(0.0)) <= 1e-13


def test_stable_diffusion_terminal_snr() -> None:
    r"""Lin et al. 2023, §3.1: Stable Diffusion's schedule (scaled_linear, 0.00085 … 0.012, T = 1000) ends at
    √ᾱ_T = 0.068265 and SNR_T = 0.004682 (non-zero terminal SNR).

    Tolerance: half a unit in the last printed digit, 5e-7 (the computed values, 0.0682649 and
    0.0046819, are 0.9e-7 and 0.8e-7 from the printed ones: far from a rounding edge).
    """
    betas = schedules.scaled_linear_betas(1000, 0.00085, 0.012)
    assert abs(alphas.sqrt_alpha_bar(betas)[-1] - 0.068265) <= 5e-7
    assert abs(alphas.snr(betas)[-1] - 0.004682) <= 5e-7
    # and the zero-terminal-SNR rescale (Lin et al. 2023, Algorithm 1) takes it to 0 exactly
    assert alphas.alpha_bar(schedules.rescale_zero_terminal_snr(betas))[-1] == 0.0


def test_improved_diffusion_rescaled_vlb_factor() -> None:
    r"""improved-diffusion (Nichol & Dhariwal 2021, released code), ``GaussianDiffusion.training_losses``:
    ``terms["vb"] *= self.num_timesteps / 1000.0`` (RESCALED_MSE) and ``terms["loss"] *= self.num_timesteps``
    (RESCALED_KL). At the paper's T = 4000 the VLB term is weighted by 4, i.e. λ = 1/1000 per unit of T·L_t
    (eq. 16: λ = 0.001).
    """
    assert likelihood.vb_term_scale(4000, "rescaled_mse") == 4.0
    assert likelihood.vb_term_scale(4000, "rescaled_kl") == 4000.0
    assert likelihood.vb_term_scale(4000, "mse") == 1.0 and likelihood.vb_term_scale(4000, "kl") == 1.0
    eps = np.zeros((1, 3))
    assert likelihood.l_hybrid_rescaled(eps, eps + 0.5, np.array([2.0]), 4000)[0] == 0.25 + 4.0 * 2.0
