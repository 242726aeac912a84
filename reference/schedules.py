r"""Noise schedules β_1, …, β_T: every schedule of the papers and of the implementations ddspec checks.

Index convention (``docs/conventions.md``): each builder returns a 1-D float64 array ``betas`` of
length T, and ``betas[i]`` is the papers' :math:`\beta_{i+1}`.

Accuracy. Parameters given as float64 (``beta_start``, ``beta_end``, ``s``, ``max_beta``, the betas
of :func:`custom_betas`) are exact inputs; every builder is measured against the exact mathematical
value of its formula for those doubles (the mpmath twin, ``ddspec.reference.twin.schedules``). The
linear-type schedules are formed in double-double arithmetic (``_dd``) and rounded once, so they are
correctly rounded up to a few units of 2⁻¹⁰⁴. The cosine schedule is rewritten so that it does not
cancel (see :func:`cosine_betas`); the zero-terminal-SNR rescaling likewise
(:func:`rescale_zero_terminal_snr`). The bounds measured by ``tests/reference/test_schedules.py``
are stated there; every schedule here is within 8 ULP of the exact value at every index.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from . import _dd
from .validation import as_betas, as_int, as_scalar, fail
from .alphas import alpha_bar, one_minus_alpha_bar_ratio, sqrt_alpha_bar

__all__ = [
    "linear_betas",
    "improved_linear_betas",
    "scaled_linear_betas",
    "quad_betas",
    "cosine_betas",
    "betas_for_alpha_bar",
    "sigmoid_betas",
    "const_betas",
    "jsd_betas",
    "warmup_betas",
    "custom_betas",
    "rescale_zero_terminal_snr",
    "NAMED_SCHEDULES",
    "get_betas",
]

Array = NDArray[np.float64]

# π as a double-double: π = _PI_HI + _PI_LO to about 2⁻¹⁰⁷ relative.
_PI_HI = 3.141592653589793
_PI_LO = 1.2246467991473532e-16


# --------------------------------------------------------------------------------------------------
# validation and double-double helpers
# --------------------------------------------------------------------------------------------------


def _num_timesteps(num_timesteps: object, low: int = 1) -> int:
    return as_int(num_timesteps, "num_timesteps", low=low)


def _beta_range(beta_start: object, beta_end: object) -> tuple[float, float]:
    """``0 < beta_start <= beta_end < 1``."""
    b0 = as_scalar(beta_start, "beta_start", low=0.0, high=1.0, low_open=True, high_open=True)
    b1 = as_scalar(beta_end, "beta_end", low=0.0, high=1.0, low_open=True, high_open=True)
    if b0 > b1:
        fail("beta_start", beta_start, f"must be <= beta_end={b1!r}")
    return b0, b1


def _dd_linspace(
    start_hi: float, start_lo: float, end_hi: float, end_lo: float, n: int
) -> tuple[Array, Array]:
    r"""The exact ``linspace(start, end, n)`` as double-doubles (``start``, ``end`` double-doubles).

    .. math:: x_i = \frac{(n-1-i)\,x_{\rm start} + i\,x_{\rm end}}{n-1}, \qquad x_0 = x_{\rm start} \text{ if } n = 1

    The integer weights are exact doubles, the products and the sum are carried in double-double and
    the quotient has relative error ~2⁻¹⁰⁴, so rounding ``hi + lo`` gives the correctly rounded value
    (up to that tiny slack). Both ends are reproduced exactly.
    """
    if n == 1:
        return np.array([start_hi]), np.array([start_lo])
    i = np.arange(n, dtype=np.float64)
    w_start = (n - 1) - i
    p0h, p0l = _dd.dd_mul(w_start, np.zeros(n), start_hi, start_lo)
    p1h, p1l = _dd.dd_mul(i, np.zeros(n), end_hi, end_lo)
    sh, sl = _dd.dd_add(p0h, p0l, p1h, p1l)
    qh, ql = _dd.dd_div(sh, sl, float(n - 1), 0.0)
    # both ends exactly (dd_div of an exact multiple is exact in exact arithmetic; make it explicit)
    qh[0], ql[0] = start_hi, start_lo
    qh[-1], ql[-1] = end_hi, end_lo
    return qh, ql


def _dd_sin(x_hi: Array, x_lo: Array) -> tuple[Array, Array]:
    r"""sin of a double-double angle, as ``(sin(x_hi), cos(x_hi)·x_lo)``.

    The second part is the first-order correction for the angle's low part
    (:math:`\sin(x_h + x_l) = \sin x_h + x_l \cos x_h + O(x_l^2)`), so the result is within the
    rounding of ``sin(x_hi)`` (≤ 1 ULP, normally ≤ 0.5) of the sine of the double-double angle.
    """
    return np.sin(x_hi), np.cos(x_hi) * x_lo


def _linspace_sqrt_squared(num_timesteps: int, beta_start: float, beta_end: float) -> Array:
    r"""``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2``, in double-double, rounded once."""
    r0h, r0l = _dd.dd_sqrt(np.float64(beta_start), np.float64(0.0))
    r1h, r1l = _dd.dd_sqrt(np.float64(beta_end), np.float64(0.0))
    xh, xl = _dd_linspace(float(r0h), float(r0l), float(r1h), float(r1l), num_timesteps)
    bh, bl = _dd.dd_mul(xh, xl, xh, xl)
    return np.asarray(bh + bl, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# linear family
# --------------------------------------------------------------------------------------------------


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Array:
    r"""The linear schedule of DDPM: β increases linearly from ``beta_start`` to ``beta_end``.

    .. math::

        \beta_t = \beta_{\rm start} + \frac{t-1}{T-1}\,(\beta_{\rm end} - \beta_{\rm start}),
        \qquad t = 1, \dots, T

    Source: Ho et al. 2020, §4 ("β_1 = 10⁻⁴ to β_T = 0.02", linear). This is
    ``linspace(beta_start, beta_end, T)`` of diffusers (``"linear"``), of the DDIM authors' code and
    of the DDPM authors' code. Index convention: ``betas[i]`` is β_{i+1}, so ``betas[0] == beta_start``
    and ``betas[-1] == beta_end`` exactly.

    ``T = 1`` gives ``[beta_start]`` (what ``linspace`` gives for one point).

    Evaluated as :math:`((T-1-i)\,\beta_{\rm start} + i\,\beta_{\rm end})/(T-1)` in double-double and
    rounded once: correctly rounded (to ~2⁻¹⁰⁴) for the given doubles.

    Requires ``0 < beta_start <= beta_end < 1``.
    """
    n = _num_timesteps(num_timesteps)
    b0, b1 = _beta_range(beta_start, beta_end)
    hi, lo = _dd_linspace(b0, 0.0, b1, 0.0, n)
    return np.asarray(hi + lo, dtype=np.float64)


def improved_linear_betas(num_timesteps: int) -> Array:
    r"""improved-diffusion's linear schedule: DDPM's end points scaled by 1000/T.

    .. math::

        \beta_t = \frac{1000}{T}\Big(\beta_{\rm start} + \frac{t-1}{T-1}(\beta_{\rm end} - \beta_{\rm start})\Big),
        \qquad \beta_{\rm start} = 10^{-4},\ \beta_{\rm end} = 0.02

    Source: the code of Nichol & Dhariwal 2021 (Improved DDPM; improved-diffusion's and
    guided-diffusion's ``"linear"`` named schedule), which scales both end points by ``1000 / T`` so
    that any T keeps roughly the T = 1000 schedule's overall noise. Index convention: ``betas[i]``
    is β_{i+1}.

    Rounding. The exact value here is that of the doubles ``1e-4`` and ``0.02`` times the *exact*
    rational 1000/T (their code rounds ``scale``, each scaled end point and every ``linspace`` point
    separately, a few ULP away). It is formed in double-double and rounded once.

    Requires ``num_timesteps >= 21``: for T <= 20 the last β, 1000·0.02/T (with the double 0.02,
    slightly above 1/50), is at least 1.
    """
    n = _num_timesteps(num_timesteps, low=21)
    hi, lo = _dd_linspace(1e-4, 0.0, 0.02, 0.0, n)
    hi, lo = _dd.dd_mul(hi, lo, 1000.0, 0.0)
    hi, lo = _dd.dd_div(hi, lo, float(n), 0.0)
    return np.asarray(hi + lo, dtype=np.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> Array:
    r"""The "scaled linear" schedule of latent diffusion: linear in :math:`\sqrt\beta`, then squared.

    .. math::

        \beta_t = \Big(\sqrt{\beta_{\rm start}} + \frac{t-1}{T-1}\big(\sqrt{\beta_{\rm end}} - \sqrt{\beta_{\rm start}}\big)\Big)^2

    Source: Rombach et al. 2022 (Latent Diffusion; Stable Diffusion uses ``beta_start = 0.00085``,
    ``beta_end = 0.012``, T = 1000); diffusers' ``"scaled_linear"``. The same formula with DDPM's
    end points is the DDPM authors' ``"quad"`` (:func:`quad_betas`). Index convention:
    ``betas[i]`` is β_{i+1}; ``T = 1`` gives ``[beta_start]``.

    The square roots are exact square roots of the given doubles, carried as double-doubles; the
    interpolation and the square are in double-double, rounded once.

    Requires ``0 < beta_start <= beta_end < 1``.
    """
    n = _num_timesteps(num_timesteps)
    b0, b1 = _beta_range(beta_start, beta_end)
    return _linspace_sqrt_squared(n, b0, b1)


def quad_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Array:
    r"""The DDPM authors' ``"quad"`` schedule: linear in :math:`\sqrt\beta`, then squared.

    .. math::

        \beta_t = \Big(\sqrt{\beta_{\rm start}} + \frac{t-1}{T-1}\big(\sqrt{\beta_{\rm end}} - \sqrt{\beta_{\rm start}}\big)\Big)^2

    Source: Ho et al.'s code (``get_beta_schedule("quad", …)``, also in the DDIM authors' code). It
    is the same formula as :func:`scaled_linear_betas`; only the default end points differ (DDPM's
    10⁻⁴ and 0.02). Index convention: ``betas[i]`` is β_{i+1}.

    Requires ``0 < beta_start <= beta_end < 1``.
    """
    n = _num_timesteps(num_timesteps)
    b0, b1 = _beta_range(beta_start, beta_end)
    return _linspace_sqrt_squared(n, b0, b1)


# --------------------------------------------------------------------------------------------------
# schedules defined through a continuous ᾱ(u)
# --------------------------------------------------------------------------------------------------


def betas_for_alpha_bar(
    alpha_bar_fn: Callable[[float], float], num_timesteps: int, max_beta: float = 0.999
) -> Array:
    r"""Discretise a continuous signal level ᾱ(u), u ∈ [0, 1], into T betas.

    .. math::

        \beta_t = \min\!\Big(1 - \frac{\bar\alpha(t/T)}{\bar\alpha((t-1)/T)},\ \beta_{\max}\Big),
        \qquad t = 1, \dots, T

    Source: Nichol & Dhariwal 2021, §3.2 (the text after eq. 17: β is clipped at 0.999 to avoid the
    singularity at the end of the process, near t = T); diffusers' ``betas_for_alpha_bar``. Index convention: ``betas[i]`` uses
    :math:`u_i = \mathrm{fl}(i/T)` and :math:`u_{i+1}`; ``alpha_bar_fn`` is called with Python floats.

    Accuracy. This generic form *cancels*: where β is small the ratio is close to 1 and
    ``1 - ratio`` keeps only the ratio's rounding error (for the cosine schedule, ~2·10⁴ ULP at
    T = 1000). It is exact only to the accuracy of ``alpha_bar_fn`` divided by β. For the cosine
    schedule use :func:`cosine_betas`, the accurate specialisation.

    ``alpha_bar_fn`` must return finite values, positive at :math:`u_0, \dots, u_{T-1}`, non-negative
    at :math:`u_T = 1`, and strictly decreasing (so that every β is in (0, 1]; a β of 1 is allowed
    only last). Requires ``0 < max_beta <= 1``.
    """
    if not callable(alpha_bar_fn):
        fail("alpha_bar_fn", alpha_bar_fn, "must be callable u -> alpha_bar(u)")
    n = _num_timesteps(num_timesteps)
    cap = as_scalar(max_beta, "max_beta", low=0.0, high=1.0, low_open=True)
    values = np.empty(n + 1)
    for i in range(n + 1):
        u = i / n
        try:
            v = float(alpha_bar_fn(u))
        except (TypeError, ValueError) as exc:
            fail("alpha_bar_fn", alpha_bar_fn, f"did not return a real number at u={u!r} ({exc})")
        if not np.isfinite(v):
            fail("alpha_bar_fn", alpha_bar_fn, f"returned {v!r} at u={u!r}: must be finite")
        if v < 0.0 or (v == 0.0 and i < n):
            fail("alpha_bar_fn", alpha_bar_fn, f"returned {v!r} at u={u!r}: must be > 0 before u = 1")
        if i > 0 and not v < values[i - 1]:
            fail(
                "alpha_bar_fn",
                alpha_bar_fn,
                f"must be strictly decreasing; f({u!r})={v!r} >= f({(i - 1) / n!r})={values[i - 1]!r}",
            )
        values[i] = v
    betas = np.minimum(1.0 - values[1:] / values[:-1], cap)
    return as_betas(betas)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Array:
    r"""The cosine schedule of Improved DDPM, evaluated without cancellation.

    .. math::

        \bar\alpha(u) = \cos^2\!\Big(\frac{u + s}{1 + s}\cdot\frac{\pi}{2}\Big), \qquad
        \beta_t = \min\!\Big(1 - \frac{\bar\alpha(t/T)}{\bar\alpha((t-1)/T)},\ \beta_{\max}\Big)

    Source: Nichol & Dhariwal 2021, eq. 17 and §3.2 (s = 0.008, clip at 0.999); diffusers'
    ``"squaredcos_cap_v2"``. Index convention: ``betas[i]`` is β_{i+1}, i.e. uses ᾱ((i+1)/T)/ᾱ(i/T).
    The exact value is that of the formula with exact π and the given doubles ``s``, ``max_beta``.

    Why a rewrite. Evaluated as written, ``1 - f(t)/f(t-1)`` cancels: β_1 ≈ 4·10⁻⁵ at T = 1000, so
    the ratio's rounding error is amplified ~2·10⁴ times (~3·10⁶ at T = 100000), and near u = 1 the
    cosine of an angle close to π/2 loses its relative accuracy too. Instead:

    1. Complementary angle: :math:`\cos\big(\tfrac{u+s}{1+s}\tfrac{\pi}{2}\big) = \sin\big(\tfrac{\pi}{2}\tfrac{1-u}{1+s}\big)`.
       With :math:`\theta = \pi / (2T(1+s))` and 0-based ``i``, the angle at :math:`u = i/T` is
       :math:`(T-i)\theta`, so with :math:`a = T - i` and :math:`b = T - i - 1`,
       :math:`\beta = 1 - \sin^2(b\theta)/\sin^2(a\theta)`.
    2. :math:`\sin^2 x - \sin^2 y = \sin(x - y)\sin(x + y)` turns the difference into a product:

       .. math::

           \beta_{i+1} = \frac{\sin(\theta)\,\sin\big((2T - 2i - 1)\theta\big)}{\sin^2\big((T - i)\theta\big)}.

    3. ``sin`` is badly conditioned near π, and :math:`(2T-2i-1)\theta` reaches
       :math:`\pi(1 - s/(1+s)) - \theta`. Since :math:`\pi = 2T(1+s)\theta`, where that angle exceeds
       π/2 the code uses :math:`\sin(\pi - x)` with :math:`\pi - x = (2Ts + 2i + 1)\theta`.
       Every angle used is then in (0, π/2], where ``sin`` has condition number ≤ 1.

    θ, the angles :math:`k\theta` and :math:`2Ts + 2i + 1` are formed in double-double (π as a
    double-double, 1 + s exactly); each sine is ``sin`` of the angle's high part plus the first-order
    term for its low part, and the products and the quotient are in double-double, rounded once.
    (For small angles β hardly depends on θ, :math:`\beta \approx (2a - 1)/a^2`, but for the first
    steps β ∝ θ², hence the care with θ.) What is left is the rounding of the three ``sin`` values
    (≤ 1 ULP each in libm, ``sin((T-i)θ)`` counted twice): measured ≤ 4 ULP for
    T ∈ {10, 1000, 4000, 100000}.

    The last step (i = T − 1, u = 1) has :math:`\bar\alpha(1) = 0`, so β = 1 exactly before the cap.
    Requires ``s >= 0`` and ``0 < max_beta <= 1``; with ``max_beta = 1`` the last β is 1 (ᾱ_T = 0).
    """
    n = _num_timesteps(num_timesteps)
    s_ = as_scalar(s, "s", low=0.0)
    cap = as_scalar(max_beta, "max_beta", low=0.0, high=1.0, low_open=True)

    # θ = π / (2T(1 + s)) as a double-double
    one_plus_s_h, one_plus_s_l = _dd.two_sum(1.0, s_)
    den_h, den_l = _dd.dd_mul(one_plus_s_h, one_plus_s_l, float(2 * n), 0.0)
    theta_h, theta_l = _dd.dd_div(_PI_HI, _PI_LO, den_h, den_l)

    i = np.arange(n, dtype=np.float64)
    zeros = np.zeros(n)
    a = float(n) - i  # T - i, exact
    m = 2.0 * float(n) - 2.0 * i - 1.0  # 2T - 2i - 1, exact
    # π/θ - m = 2Ts + 2i + 1, exact as a double-double
    ts_h, ts_l = _dd.two_prod(2.0 * float(n), s_)
    c_h, c_l = _dd.dd_add(np.full(n, ts_h), np.full(n, ts_l), 2.0 * i + 1.0, zeros)

    sin_theta = _dd_sin(np.float64(theta_h), np.float64(theta_l))
    direct_h, direct_l = _dd.dd_mul(m, zeros, theta_h, theta_l)
    compl_h, compl_l = _dd.dd_mul(c_h, c_l, theta_h, theta_l)
    use_direct = direct_h <= compl_h  # the angle in (0, π/2]
    sin_m = _dd_sin(np.where(use_direct, direct_h, compl_h), np.where(use_direct, direct_l, compl_l))
    sin_a = _dd_sin(*_dd.dd_mul(a, zeros, theta_h, theta_l))
    num_h, num_l = _dd.dd_mul(*sin_theta, *sin_m)
    den_h, den_l = _dd.dd_mul(*sin_a, *sin_a)
    q_h, q_l = _dd.dd_div(num_h, num_l, den_h, den_l)
    betas = np.asarray(q_h + q_l, dtype=np.float64)
    betas[-1] = 1.0  # ᾱ(1) = cos²(π/2) = 0
    return as_betas(np.minimum(betas, cap))


def sigmoid_betas(
    num_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    start: float = -6.0,
    end: float = 6.0,
) -> Array:
    r"""diffusers' DDPM ``"sigmoid"`` schedule: a logistic curve from ``beta_start`` to ``beta_end``.

    .. math::

        \beta_t = \sigma(x_t)\,(\beta_{\rm end} - \beta_{\rm start}) + \beta_{\rm start}, \quad
        x_t = x_{\rm start} + \frac{t-1}{T-1}(x_{\rm end} - x_{\rm start}), \quad
        \sigma(x) = \frac{1}{1 + e^{-x}}

    Source: diffusers' ``DDPMScheduler`` (``beta_schedule="sigmoid"``, ``linspace(-6, 6, T)``); it is
    not in a paper. (lucidrains' sigmoid schedule is a different one, defined in ᾱ-space.) Index
    convention: ``betas[i]`` is β_{i+1}. β never reaches the end points: σ(±6) ≠ 0, 1.

    The grid point :math:`x_t` is formed in double-double; σ is ``scipy.special.expit`` at its high
    part plus the first-order correction :math:`\sigma(1-\sigma)\,x_{\rm lo}`; the difference of end
    points is exact (TwoSum) and the product and sum are in double-double, rounded once.

    Requires ``0 < beta_start <= beta_end < 1`` and finite ``start``, ``end``.
    """
    n = _num_timesteps(num_timesteps)
    b0, b1 = _beta_range(beta_start, beta_end)
    x0 = as_scalar(start, "start")
    x1 = as_scalar(end, "end")
    xh, xl = _dd_linspace(x0, 0.0, x1, 0.0, n)
    sig = expit(xh)
    sig = sig + sig * (1.0 - sig) * xl
    dh, dl = _dd.two_sum(b1, -b0)
    ph, pl = _dd.dd_mul(sig, np.zeros(n), dh, dl)
    rh, rl = _dd.dd_add(ph, pl, b0, 0.0)
    return as_betas(rh + rl)


# --------------------------------------------------------------------------------------------------
# the DDPM authors' other schedules
# --------------------------------------------------------------------------------------------------


def const_betas(num_timesteps: int, beta: float = 0.02) -> Array:
    r"""A constant schedule :math:`\beta_t = \beta` for every t, so :math:`\bar\alpha_t = (1-\beta)^t`.

    Source: Ho et al.'s code, ``get_beta_schedule("const", …)`` (there β = ``beta_end``). Index
    convention: ``betas[i]`` is β_{i+1}. Requires ``0 < beta < 1``.
    """
    n = _num_timesteps(num_timesteps)
    b = as_scalar(beta, "beta", low=0.0, high=1.0, low_open=True, high_open=True)
    return np.full(n, b, dtype=np.float64)


def jsd_betas(num_timesteps: int) -> Array:
    r"""The DDPM authors' ``"jsd"`` schedule, :math:`\beta_t = 1/(T - t + 1)`: 1/T, 1/(T−1), …, 1.

    .. math::

        \beta_t = \frac{1}{T - t + 1}, \qquad
        \bar\alpha_t = \prod_{r=1}^{t} \frac{T - r}{T - r + 1} = \frac{T - t}{T}

    Source: Ho et al.'s code, ``get_beta_schedule("jsd", …)`` ("1/T, 1/(T-1), 1/(T-2), ..., 1").
    Index convention: ``betas[i] = 1/(T - i)``, correctly rounded. The last β is exactly 1, so
    ᾱ_T = 0 (allowed as the last β; see :func:`ddspec.reference.validation.as_betas`).
    """
    n = _num_timesteps(num_timesteps)
    return 1.0 / (float(n) - np.arange(n, dtype=np.float64))


def warmup_betas(
    num_timesteps: int, warmup_frac: float, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Array:
    r"""The DDPM authors' ``"warmupF"`` schedules: a linear warm-up, then constant ``beta_end``.

    .. math::

        \beta_t = \begin{cases}
            \beta_{\rm start} + \frac{t-1}{W-1}(\beta_{\rm end} - \beta_{\rm start}) & t \le W \\
            \beta_{\rm end} & t > W
        \end{cases}, \qquad W = \mathrm{int}(\mathrm{fl}(F \cdot T))

    Source: Ho et al.'s code, ``get_beta_schedule("warmup10", …)`` (F = 0.1) and ``"warmup50"``
    (F = 0.5). Index convention: ``betas[i]`` is β_{i+1}; the warm-up is ``betas[:W]``, which is
    ``linspace(beta_start, beta_end, W)`` (so ``betas[W-1] == beta_end``; W = 1 gives
    ``beta_start``; W = 0 gives the constant schedule).

    The warm-up length is their definition, ``int(warmup_frac * num_timesteps)`` with the product
    rounded in float64. This is the one place where a float64 parameter is not treated as an exact
    input: e.g. F = 0.7, T = 10 gives W = 7 although the double 0.7 is slightly below 7/10. For
    F = 0.1 and 0.5 the two readings agree at every T.

    Requires ``0 <= warmup_frac <= 1`` and ``0 < beta_start <= beta_end < 1``.
    """
    n = _num_timesteps(num_timesteps)
    frac = as_scalar(warmup_frac, "warmup_frac", low=0.0, high=1.0)
    b0, b1 = _beta_range(beta_start, beta_end)
    warmup = int(frac * n)
    betas = np.full(n, b1, dtype=np.float64)
    if warmup > 0:
        hi, lo = _dd_linspace(b0, 0.0, b1, 0.0, warmup)
        betas[:warmup] = hi + lo
    return betas


def custom_betas(betas: ArrayLike) -> Array:
    r"""A user-given schedule, validated: 1-D, finite, :math:`0 < \beta_t < 1` (the last may be 1).

    Returns a float64 copy. Index convention: ``betas[i]`` is β_{i+1}.
    """
    return np.array(as_betas(betas, "betas"), dtype=np.float64, copy=True)


# --------------------------------------------------------------------------------------------------
# zero terminal SNR
# --------------------------------------------------------------------------------------------------


def rescale_zero_terminal_snr(betas: ArrayLike) -> Array:
    r"""Rescale a schedule so that its terminal SNR is zero (ᾱ_T = 0), keeping ᾱ_1.

    .. math::

        r_t = \sqrt{\bar\alpha_t}, \quad
        r'_t = (r_t - r_T)\,\frac{r_1}{r_1 - r_T}, \quad
        \bar\alpha'_t = r'^2_t, \quad
        \beta'_1 = 1 - \bar\alpha'_1, \quad \beta'_t = 1 - \frac{\bar\alpha'_t}{\bar\alpha'_{t-1}}

    Source: Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Algorithm 1 (diffusers' ``rescale_betas_zero_snr``). Index convention: ``betas[i]`` is β_{i+1};
    in 0-based terms ``r[0]`` is r_1 and ``r[T-1]`` is r_T. Consequences: β'_1 = β_1 (since
    r'_1 = r_1) and β'_T = 1 exactly (r'_T = 0).

    Evaluation without cancellation. Written as above, r_{t-1} − r_T and 1 − ᾱ'_t/ᾱ'_{t-1} both
    cancel (by ~170× for Stable Diffusion's schedule near t = T). The common factor
    :math:`r_1/(r_1 - r_T)` cancels from the ratio, and with :math:`d_t = r_t - r_T`:

    .. math::

        \beta'_t = \frac{(r_{t-1} - r_t)(d_{t-1} + d_t)}{d_{t-1}^2}, \qquad
        r_{t-1} - r_t = \frac{\bar\alpha_{t-1}\,\beta_t}{r_{t-1} + r_t}, \qquad
        d_t = \frac{\bar\alpha_t\,(1 - \bar\alpha_T/\bar\alpha_t)}{r_t + r_T}

    The inputs ᾱ, r = sqrt(ᾱ) and 1 − ᾱ_T/ᾱ_t are the tables of :mod:`ddspec.reference.alphas`
    (formed in double-double, rounded once, ~1 ULP each); every remaining operation adds, multiplies
    or divides positive numbers in double-double and β' is rounded once, so each β' is within a few
    ULP of the exact value of Algorithm 1 for the given β (measured: ≤ 3.2 ULP for the named
    schedules at T ≤ 4000).

    Requires at least two steps (with T = 1, r_1 = r_T and the rescaling is 0/0).
    """
    b = as_betas(betas, "betas")
    n = b.size
    if n < 2:
        fail("betas", betas, "needs at least 2 steps (with one step r_1 = r_T and the rescaling is 0/0)")
    ab = alpha_bar(b)
    r = sqrt_alpha_bar(b)
    zeros = np.zeros(n - 1)
    # d_t = r_t - r_T = ᾱ_t (1 - ᾱ_T/ᾱ_t) / (r_t + r_T) for t < T (0-based k < T-1), and d_T = 0
    q = one_minus_alpha_bar_ratio(b, n - 1, np.arange(n - 1))  # no cancellation
    num_h, num_l = _dd.two_prod(ab[:-1], q)
    sum_h, sum_l = _dd.two_sum(r[:-1], np.full(n - 1, r[-1]))
    d_h, d_l = _dd.dd_div(num_h, num_l, sum_h, sum_l)
    d_h, d_l = np.append(d_h, 0.0), np.append(d_l, 0.0)
    # r_{t-1} - r_t = ᾱ_{t-1} β_t / (r_{t-1} + r_t) for 0-based i = 1 .. T-1
    num_h, num_l = _dd.two_prod(ab[:-1], b[1:])
    sum_h, sum_l = _dd.two_sum(r[:-1], r[1:])
    step_h, step_l = _dd.dd_div(num_h, num_l, sum_h, sum_l)
    # β'_t = (r_{t-1} - r_t)(d_{t-1} + d_t) / d_{t-1}²
    dsum_h, dsum_l = _dd.dd_add(d_h[:-1], d_l[:-1], d_h[1:], d_l[1:])
    top_h, top_l = _dd.dd_mul(step_h, step_l, dsum_h, dsum_l)
    bottom_h, bottom_l = _dd.dd_mul(d_h[:-1], d_l[:-1], d_h[:-1], d_l[:-1])
    ratio_h, ratio_l = _dd.dd_div(top_h, top_l, bottom_h, bottom_l)
    rescaled = np.empty(n)
    rescaled[0] = b[0]  # β'_1 = 1 - r_1² = β_1
    rescaled[1:] = ratio_h + ratio_l
    rescaled[-1] = 1.0  # r'_T = 0
    return as_betas(rescaled, "rescaled betas")


# --------------------------------------------------------------------------------------------------
# named schedules
# --------------------------------------------------------------------------------------------------


def _warmup10(num_timesteps: int) -> Array:
    return warmup_betas(num_timesteps, 0.1)


def _warmup50(num_timesteps: int) -> Array:
    return warmup_betas(num_timesteps, 0.5)


NAMED_SCHEDULES: dict[str, Callable[[int], Array]] = {
    "linear": linear_betas,
    "improved_linear": improved_linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
    "quad": quad_betas,
    "const": const_betas,
    "jsd": jsd_betas,
    "warmup10": _warmup10,
    "warmup50": _warmup50,
}
"""Every named schedule with its default parameters: ``name -> (num_timesteps -> betas)``."""


def get_betas(name: str, num_timesteps: int) -> Array:
    r"""The named schedule (a key of :data:`NAMED_SCHEDULES`) with its default parameters, T steps.

    Names: ``linear``, ``improved_linear``, ``scaled_linear`` (0.00085–0.012), ``cosine``
    (s = 0.008, max_beta = 0.999), ``sigmoid``, ``quad``, ``const`` (β = 0.02), ``jsd``,
    ``warmup10``, ``warmup50``. Index convention: ``betas[i]`` is β_{i+1}.
    """
    if not isinstance(name, str) or name not in NAMED_SCHEDULES:
        fail("name", name, f"unknown schedule; known: {', '.join(sorted(NAMED_SCHEDULES))}")
    return NAMED_SCHEDULES[name](num_timesteps)
