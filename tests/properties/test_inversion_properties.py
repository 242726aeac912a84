r"""Property 7: DDIM inversion followed by DDIM sampling on the same subsequence returns the start.

DDIM with η = 0 (Song et al. 2021, eq. 12 with σ = 0) is an Euler step of the probability-flow ODE
(§4.3, eq. 14) in the variables :math:`\bar x = x/\sqrt{\bar\alpha}`,
:math:`\bar\sigma = \sqrt{(1-\bar\alpha)/\bar\alpha}`:

.. math:: \bar x_{\mathrm{to}} = \bar x_{\mathrm{from}} + (\bar\sigma_{\mathrm{to}} - \bar\sigma_{\mathrm{from}})\,\hat\epsilon .

Inversion (``inversion.ddim_invert`` / ``inversion.ddim_invert_step``) runs it towards noise, sampling
(``sampling.ddim_sample_loop`` / ``sampling.ddim_step``) back. The two are exact inverses when ε̂ is
the same at both ends of every step, which is the case for the point-mass denoiser evaluated at the
state's own index (and for any model whose ε̂ is fixed); for other denoisers the ε̂ of the two
directions are evaluated at different states or indices, and the round trip carries a discretisation
error that vanishes as the steps shrink.

Every reference function is called through its module attribute, so that
``tests/quality/test_property_power_part2.py`` can patch a broken one in and watch these fail.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ddspec.reference import alphas, inversion, oracles, sampling, schedules, timesteps

from . import strategies
from .strategies import FLOOR, U, assert_within, crude_tables, repro


def _ratio(a: float, b: float) -> float:
    """a/b, and 1 where b = 0 (a step into or from the data, where nothing is divided by √(1−ᾱ) = 0)."""
    return a / b if b > 0.0 else 1.0


@given(st.data())
def test_point_mass_inversion_then_sampling_is_exact(data: st.DataObject) -> None:
    r"""When ε̂ is the same at both ends of every step, invert-then-sample returns the start to rounding error.

    Lemma. A DDIM step (eq. 12, σ = 0) from index f to index g with x̂₀ = (x − √(1−ᾱ_f) ε̂)/√ᾱ_f and
    x_g = √ᾱ_g x̂₀ + √(1−ᾱ_g) ε̂ keeps x̂₀ and ε̂: x_g = √ᾱ_g x̂₀ + √(1−ᾱ_g) ε̂ gives back the same x̂₀
    for the same ε̂. So if the sampling step from g uses the ε̂ that the inversion step into g used,
    it undoes it exactly, and the whole path is :math:`x_k = \sqrt{\bar\alpha_k}\hat x_0 + \sqrt{1-\bar\alpha_k}\,e`.

    * Point mass :math:`\delta_p`, ``model_at="source"`` (improved-diffusion: ε̂ from the model at the
      state's own index): :math:`\epsilon^*(x, t) = (x - \sqrt{\bar\alpha_t}p)/\sqrt{1-\bar\alpha_t}` is
      exactly the e of the path through x with x̂₀ = p, so the lemma applies. Run with the step APIs
      (``inversion.ddim_invert_step`` up, ``sampling.ddim_step`` down, from any state at any τ₀ ≥ 0) and
      with the loop APIs (``inversion.ddim_invert`` from τ₀ = 0, ``sampling.ddim_sample_loop`` with
      ``final_alpha_bar_is_one=False`` back to index 0).
    * ``model_at="destination"`` (diffusers' DDIMInverseScheduler: ε̂ from the model at the *next* index,
      on the current state) evaluates ε* off the path, so the point mass does not satisfy the lemma there
      (and its round trip to the data is trivially p: the last sampling step returns x̂₀ = p). That
      convention is checked with a model whose ε̂ is a fixed vector e, for which it is exact from any data
      x₀: loop APIs from index −1 back to the data.

    Both the end state (= the start) and the latent (= √ᾱ_K x̂₀ + √(1−ᾱ_K) e, which a sampler that always
    lands on p could not hide) are checked.

    Error bound, derived. Per coordinate let M = |x̂₀| + |e| + |x_start|. A step from index f
    to g forms ε̂ (÷√(1−ᾱ_f), point mass only), x̂₀ (÷√ᾱ_f) and √ᾱ_g x̂₀ + √(1−ᾱ_g) ε̂; each of its ≤ 10
    roundings (≤ 2u with the coefficient's own ULP) is scaled at most by √ᾱ_g/√ᾱ_f or √(1−ᾱ_g)/√(1−ᾱ_f), so
    the step adds ≤ 32u·M·(1 + √ᾱ_g/√ᾱ_f + √(1−ᾱ_g)/√(1−ᾱ_f)) (the last ratio is 1 from the data). The
    exact steps are affine in the state with slope S(g)/S(f) — S = √(1−ᾱ) for the point mass (ε* moves
    with x), S = √ᾱ for a fixed ε̂ (only x̂₀ moves) — and the slopes telescope, so a deviation made at
    level k reaches the end scaled by S(τ₀)/S(k) (≤ 1 for the point mass; for a fixed ε̂ this is the
    1/√ᾱ_k ill-conditioning of recovering x̂₀ at low SNR) and the latent scaled by S(τ_K)/S(k).
    Measured: the largest error/bound ratio over 2000 examples is 0.068.
    """
    sched = data.draw(strategies.schedules(max_T=200), label="schedule")
    betas, T = sched.betas, sched.T
    ct = crude_tables(betas)
    sub = data.draw(strategies.subsequences(T, max_len=16), label="subsequence")  # sampling order
    route = data.draw(st.sampled_from(["source, step APIs", "source, loop APIs", "destination, loop APIs"]), label="route")
    d = data.draw(st.integers(1, 4), label="dim")
    p = data.draw(strategies.data_arrays((d,), magnitude=10.0), label="point (or data x0)")
    sa_ref, s1_ref = alphas.sqrt_alpha_bar(betas), alphas.sqrt_one_minus_alpha_bar(betas)

    if route == "destination, loop APIs":
        e = data.draw(strategies.noise_arrays((d,)), label="constant eps")

        def model(x: np.ndarray, t: int) -> np.ndarray:
            return e.copy()

        up = [-1] + [int(v) for v in sub[::-1]]
        x_start, x0_path, e_path = p.copy(), p, e
        note(repro(betas=sched, subsequence=sub, x0=p, eps=e) + "; " + route)
        latent = inversion.ddim_invert(model, x_start, np.array(up), betas, model_at="destination").samples[-1]
        back = sampling.ddim_sample_loop(model, latent, sub, betas).samples[-1]
    else:
        oracle = oracles.PointMass(p)

        def model(x: np.ndarray, t: int) -> np.ndarray:
            return oracle.eps(x, t, betas)

        if route == "source, loop APIs":  # improved-diffusion: the start is the state at index 0
            up = [0] + [int(v) for v in sub[::-1] if v != 0]
        else:
            up = [int(v) for v in sub[::-1]]
        if len(up) == 1:  # need τ₀ < τ₁: add a second index (T ≥ 2)
            up = sorted({up[0], up[0] - 1 if up[0] > 0 else up[0] + 1})
            if route == "source, loop APIs":
                up = [0, 1]
        x_start = data.draw(strategies.data_arrays((d,), magnitude=10.0), label="start state")
        x0_path, e_path = p, (x_start - sa_ref[up[0]] * p) / s1_ref[up[0]]
        note(repro(betas=sched, timesteps_up=np.array(up), point=p, x_start=x_start) + "; " + route)
        if route == "source, loop APIs":
            latent = inversion.ddim_invert(model, x_start, np.array(up), betas, model_at="source").samples[-1]
            back = sampling.ddim_sample_loop(model, latent, np.array(up[:0:-1]), betas, final_alpha_bar_is_one=False).samples[-1]
        else:
            x = x_start
            for f, g in zip(up[:-1], up[1:]):
                x = inversion.ddim_invert_step(model(x, f), f, g, x, betas)
            latent = x
            for f, g in zip(up[:0:-1], up[-2::-1]):
                x = sampling.ddim_step(model(x, f), f, g, x, betas).prev_sample
            back = x

    M = np.abs(x0_path) + np.abs(e_path) + np.abs(x_start)

    def slope_scale(t: int) -> float:
        """S(t): the exact step f -> g is affine in the state with slope S(g)/S(f)."""
        _, _, sa, s1 = ct.at(t)
        return sa if route == "destination, loop APIs" else s1  # ε̂ fixed: ∂x_g/∂x_f = √ᾱ_g/√ᾱ_f

    S0, SK = slope_scale(up[0]), slope_scale(up[-1])
    rho, grow = 0.0, 0.0
    for f, g in zip(up[:-1], up[1:]):  # inversion f -> g and sampling g -> f
        _, _, sa_f, s1_f = ct.at(f)
        _, _, sa_g, s1_g = ct.at(g)
        local_up = 1.0 + _ratio(sa_g, sa_f) + (_ratio(s1_g, s1_f) if f >= 0 else 1.0)
        local_down = 1.0 + _ratio(sa_f, sa_g) + (_ratio(s1_f, s1_g) if f >= 0 else 1.0)
        rho += local_up * _ratio(S0, slope_scale(g)) + local_down * _ratio(S0, slope_scale(f))
        grow += local_up * _ratio(SK, slope_scale(g))
    assert_within(back, x_start, 32 * U * M * rho + FLOOR, f"DDIM invert then sample ({route})")
    expected = sa_ref[up[-1]] * x0_path + s1_ref[up[-1]] * e_path  # reference ᾱ tables (property 1 checks them)
    assert_within(latent, expected, 32 * U * M * (grow + 1.0) + FLOOR, f"latent vs √ᾱ_K x̂₀ + √(1−ᾱ_K) e ({route})")


# ---------------------------------------------------------------------------------------------------
# a Gaussian denoiser: the discretisation error, measured
# ---------------------------------------------------------------------------------------------------

GRID = (16, 32, 64)
T_GAUSS = 1000


def _round_trip(betas: np.ndarray, oracle: oracles.IsotropicGaussian, x0: np.ndarray, n: int, model_at: str, spacing: str) -> np.ndarray:
    """Invert from x₀ along ``spacing``'s n-step subsequence and sample back; returns the end state."""

    def model(x: np.ndarray, t: int) -> np.ndarray:
        return oracle.eps(x, t, betas)

    up = timesteps.get_timesteps(spacing, T_GAUSS, n)[::-1]
    if model_at == "destination":  # diffusers: from the data (index -1), sample back to the data
        lat = inversion.ddim_invert(model, x0, np.concatenate([[-1], up]), betas, model_at=model_at).samples[-1]
        return sampling.ddim_sample_loop(model, lat, up[::-1], betas).samples[-1]
    if up[0] != 0:  # improved-diffusion: the data is the state at index 0; sample back to index 0
        up = np.concatenate([[0], up])
    lat = inversion.ddim_invert(model, x0, up, betas, model_at=model_at).samples[-1]
    return sampling.ddim_sample_loop(model, lat, up[:0:-1], betas, final_alpha_bar_is_one=False).samples[-1]


@settings(max_examples=max(5, settings().max_examples // 4))  # each example runs 2·(16+32+64) steps at T = 1000
@given(st.data())
def test_gaussian_round_trip_error_shrinks_with_the_step(data: st.DataObject) -> None:
    r"""With the exact N(m, s²) denoiser the round trip misses its start by O(1/N) (O(log N/N) in one term).

    Structure (exact). Every step is affine per coordinate, jointly in the state and in m, so the round
    trip maps x₀ to :math:`x_0 + a_N (x_0 - m) + b_N m`, where a_N, b_N depend only on s², the schedule, the
    subsequence and the convention. The line :math:`x = \sqrt{\bar\alpha}\,m` is invariant under a step that
    evaluates ε* on the state it moves (there ε* = 0, x̂₀* = m): with "source" (the data is the state at
    index 0) the error is exactly a_N·(x₀ − √ᾱ₀ m), i.e. b_N = a_N(1 − √ᾱ₀); "destination" evaluates ε*
    at the *next* index on the current state (for the first step: on clean data at index τ₁), which
    moves off the line, so b_N ≠ 0.

    Why first order. Take m = 0. With :math:`\bar x = x/\sqrt{\bar\alpha}` and h = σ̄_g − σ̄_f, the step is
    Euler, :math:`\bar x_g = \bar x_f + h\,\hat\epsilon`, and the exact denoiser is
    :math:`\epsilon^*(x, t) = g(\bar\sigma_t)\,x/\sqrt{\bar\alpha_t}`, :math:`g(\bar\sigma) = \bar\sigma/(s^2+\bar\sigma^2)`.
    One inverse step f → g and the sampling step back multiply x̄ by :math:`(1 + h g_f)(1 - h g_g)`
    ("source") or :math:`(1 + h g_g\rho)(1 - h g_g)`, ρ = √ᾱ_f/√ᾱ_g ("destination": ε* at index g on the
    state of index f). Both are 1 + O(h²)·(|g'| + g²) + O(h)·|ρ − 1|·g with ρ − 1 = O(h): summed over the
    steps, O(max h). Since :math:`\max g = 1/(2s)` and :math:`\int|g'| \le 1/s`, the constant grows like 1/s.

    Measured (T = 1000, linspace spacing), first N·|a_N| (m = 0, x₀ = 1), N = 8, 16, 32, 64, 128, 256, 512, 1000:

    ================ ============ ======= ===============================================
    schedule         convention   s²      N·|a_N|
    ================ ============ ======= ===============================================
    linear           source       0.01    7.32 12.4 17.1 20.3 22.1 23.2 23.8 23.7
    linear           source       1       3.30 3.47 3.56 3.60 3.63 3.66 3.69 3.65
    linear           source       10      2.77 2.87 2.92 2.95 2.96 2.98 3.00 2.97
    linear           destination  0.01    7.36 12.5 17.3 20.1 21.4 22.2 22.7 22.8
    linear           destination  1       0.636 0.288 0.136 0.0663 0.0328 0.0164 0.0083 0.0041
    linear           destination  10      2.00 2.13 2.16 2.16 2.17 2.18 2.19 2.17
    cosine           source       0.01    6.51 9.11 10.6 11.6 12.1 12.4 12.7 12.6
    cosine           source       10      3.73 3.98 4.11 4.18 4.22 4.25 4.29 4.25
    cosine           destination  10      0.932 1.76 2.33 2.72 3.00 3.20 3.34 3.38
    scaled_linear    source       0.01    6.14 10.4 16.1 22.7 28.4 32.5 34.7 35.0
    scaled_linear    destination  0.01    6.75 11.4 17.0 22.2 25.3 26.8 28.2 30.5
    ================ ============ ======= ===============================================

    (trailing spacing: the same to within a third; largest 35.1, scaled_linear, destination, s² = 0.01,
    N = 256.) N·|a_N| levels off: first order. At s² = 1 the
    "destination" a_N is second order (N·|a_N| halves with each doubling). Even N = T = 1000 keeps an
    error: the full schedule is itself a discretisation.

    Then N·|b_N| ("destination", x₀ = m = 1), N = 16, 32, 64, 128, 256, 1000 ("source": |b_N| ≤ 0.015/N):

    ================ ======= =====================================
    schedule         s²      N·|b_N|
    ================ ======= =====================================
    linear           1       3.30 3.60 3.75 3.83 3.88 3.89
    linear           10      5.37 5.53 5.60 5.65 5.68 5.67
    scaled_linear    10      3.14 3.12 3.11 3.10 3.11 3.09
    cosine           1       4.10 5.16 6.22 7.30 8.39 10.4
    cosine           10      8.62 11.4 14.5 17.6 21.0 27.2
    ================ ======= =====================================

    For linear and scaled_linear b_N is first order too; for cosine N·|b_N| grows by about 3 per doubling
    (b_N ≈ c·log N/N, measured up to N = 1000). √N·|b_N| ≤ 0.55(1 + s) over all cases with N ≥ 16, and
    |b_N| decreases monotonically in N everywhere measured.

    Asserted, for N ∈ {16, 32, 64}, s² ∈ [0.01, 10], the three schedules and both spacings:

    * envelope: error ≤ (6 + 4/s)/N·|x₀ − m| + (1 + s)/√N·|m| (measured max of N·|a_N|/(6 + 4/s) is 0.74
      and of √N·|b_N|/(1 + s) 0.55, over a 40–60-point s² grid, both spacings, N ≤ 256);
    * "source": the error decreases strictly with N (it is |a_N|·|x₀ − √ᾱ₀m|; measured ratios
      |a_{2N}/a_N| = 0.50–0.78 for N ≥ 16). Not asserted for "destination": its a_N changes sign at s² = 1,
      and for s² ∈ (1, 1.4] it crosses zero between N = 16 and 128 (measured at s² = 1.08, 1.22, 1.37).

    Rounding is negligible here (≤ 1e-11 relative against errors ≥ 1e-6), absorbed by a 1e-10·(1 + |m| + |x₀|) floor.
    """
    name = data.draw(st.sampled_from(["linear", "cosine", "scaled_linear"]), label="schedule")
    spacing = data.draw(st.sampled_from(["linspace", "trailing"]), label="spacing")
    model_at = data.draw(st.sampled_from(["source", "destination"]), label="model_at")
    d = 3
    log_s2 = data.draw(st.lists(st.floats(-2.0, 1.0), min_size=d, max_size=d), label="log10 s2")
    s2 = 10.0 ** np.array(log_s2)
    m = data.draw(strategies.data_arrays((d,), magnitude=3.0), label="data mean m")
    offset = data.draw(st.lists(st.one_of(st.floats(0.1, 3.0), st.floats(-3.0, -0.1)), min_size=d, max_size=d), label="x0 - m")
    x0 = m + np.array(offset)
    betas = schedules.get_betas(name, T_GAUSS)
    oracle = oracles.IsotropicGaussian(m, s2)
    note(f"betas = schedules.get_betas({name!r}, {T_GAUSS}); spacing={spacing!r}, model_at={model_at!r}, "
         f"m={m.tolist()!r}, s2={s2.tolist()!r}, x0={x0.tolist()!r}")

    dev = np.abs(x0 - m)
    floor = 1e-10 * (1.0 + np.abs(m) + np.abs(x0))
    K_a, K_b = 6.0 + 4.0 / np.sqrt(s2), 1.0 + np.sqrt(s2)
    errs = []
    for n in GRID:
        err = np.abs(_round_trip(betas, oracle, x0, n, model_at, spacing) - x0)
        errs.append(err)
        assert_within(err, 0.0, K_a / n * dev + K_b / np.sqrt(n) * np.abs(m) + floor,
                      f"round trip with N={n} steps: error vs envelope (6 + 4/s)/N·|x0 - m| + (1 + s)/sqrt(N)·|m|")
    if model_at == "source":
        for n, small, big in zip(GRID[1:], errs[1:], errs[:-1]):
            assert np.all(small < big + floor), f"source round-trip error did not shrink from N={n // 2} to N={n}: {big} -> {small}"
