r"""The error model: tolerances derived from the target's dtype, the step's conditioning and its tables.

Every tolerance the harness applies comes from here; ``docs/tolerances.md`` gives the derivation.
A step of any DDPM/DDIM sampler is, given its two table entries :math:`a = \bar\alpha_t` and
:math:`p = \bar\alpha_{t_\mathrm{prev}}`, a short expression in the model output m, the state x and
the noise z. Its float error has two sources:

1. **Rounding in the step itself.** Evaluating an expression of k operations in a dtype with unit
   roundoff u gives (Higham 2002, §3.1, the bound :math:`\gamma_k = ku/(1-ku)`) an absolute error at
   most :math:`\gamma_k \cdot M`, where M is the same expression evaluated with the absolute value of
   every operand and coefficient (no cancellation). :func:`step_bound` evaluates M along the exact
   path the step takes (prediction type, clipping, re-derived ε, variance).
2. **Error in the target's tables.** A target usually stores ᾱ in its own dtype (diffusers: float32
   even for float64 runs) and computes it by a running product. With relative error
   :math:`\delta_a, \delta_p` in a and p, the step output moves by at most
   :math:`|\partial x_\mathrm{prev}/\partial \ln a|\,\delta_a + |\partial x_\mathrm{prev}/\partial \ln p|\,\delta_p`
   (first order). The derivatives are this step's conditioning with respect to its coefficients;
   they are taken by central differences of the coefficient-form step in float64. The table error
   :math:`\delta` comes from :func:`alpha_bar_relative_bound`: the γ bound of a running product of
   t factors in the table's dtype plus the propagated error of β itself.

The tolerance is ``SAFETY × (γ_K(u) M + table term)`` per element, with ``K = 12`` operations and
``SAFETY = 4``. Both are stated constants, not tuned to make a target pass: the self-tests show that
every correct configuration passes and every planted bug fails with them.

The coefficient-form step below duplicates the equations only to *measure conditioning*; expected
values always come from :mod:`ddspec.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "K_OPS",
    "SAFETY",
    "UNIT_ROUNDOFF",
    "unit_roundoff",
    "table_roundoff",
    "gamma",
    "ELEMENTARY_U",
    "LINSPACE_U",
    "LINSPACE_SQRT_U",
    "LINSPACE_ABS_U",
    "COSINE_ANGLE_U",
    "beta_relative_bound",
    "alpha_bar_relative_bound",
    "StepSpec",
    "StepBound",
    "step_bound",
    "SAFETY_COEF",
    "CoefficientFactor",
    "CoefficientTerm",
    "CoefficientBound",
    "coefficient_terms",
    "coefficient_bound",
]

Array = NDArray[np.float64]

K_OPS = 12
SAFETY = 4.0
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}


def unit_roundoff(dtype: object) -> float:
    """Unit roundoff u of a dtype given as a name, a numpy dtype or a torch dtype."""
    name = str(dtype).replace("torch.", "")
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"dtype={dtype!r}: unknown floating dtype; expected one of {sorted(UNIT_ROUNDOFF)}")
    return UNIT_ROUNDOFF[name]


def gamma(k: float | Array, u: float) -> Array:
    r""":math:`\gamma_k = k u / (1 - k u)` (Higham 2002, Lemma 3.1); ``inf`` where ku ≥ 1."""
    ku = np.asarray(k, dtype=np.float64) * u
    with np.errstate(divide="ignore"):
        return np.where(ku < 1.0, ku / (1.0 - np.minimum(ku, 0.999999)), np.inf)


def _bf16_exact(x: Array) -> bool:
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return bool(np.all(np.asarray(x, dtype=np.float32) == x) and np.all(bits & 0xFFFF == 0))


def table_roundoff(table: Array) -> float:
    """Unit roundoff of the narrowest dtype in which every entry of ``table`` is exactly representable.

    A target's table as it holds it (cast up to float64 by the adapter) reveals its storage dtype:
    float32 values are exactly float32-representable, and so on.
    """
    t = np.asarray(table, dtype=np.float64)
    with np.errstate(over="ignore"):
        # bfloat16 first: its values (8-bit significand) are mostly float16-exact too, and of the two
        # readings the coarser one is the safe bound.
        if _bf16_exact(t):
            return UNIT_ROUNDOFF["bfloat16"]
        if np.all(t.astype(np.float16).astype(np.float64) == t):
            return UNIT_ROUNDOFF["float16"]
        if np.all(t.astype(np.float32).astype(np.float64) == t):
            return UNIT_ROUNDOFF["float32"]
    return UNIT_ROUNDOFF["float64"]


# -- β tables: the textbook evaluation of every named schedule (docs/tolerances.md, "Error in the tables")

#: Relative error of an elementary function (cos, exp, pow) in units of u: at most 1 ULP = 2u
#: (glibc's libm and SLEEF's ``_u10`` kernels, which torch uses on CPU, are within 1 ULP).
ELEMENTARY_U = 2.0
#: Relative error of a ``linspace`` point between end points of one sign whose own relative error is
#: at most u (a float64 end point rounded to the table's dtype): 3u + 4u (derivation in the docs;
#: it holds for ``start + i·step``, ``end − j·step`` past the middle, and ``start + (end − start)·i/(T−1)``).
LINSPACE_U = 7.0
#: ... the same with end points of relative error 2u (a square root, then a rounding): 3·2u + 4u.
LINSPACE_SQRT_U = 10.0
#: Absolute error of a ``linspace`` point in units of u·(|start| + |end|), for end points of either sign.
LINSPACE_ABS_U = 4.0
#: Relative error of the textbook cosine angle θ = (i/T + s)/(1 + s)·π/2, in units of u: i/T + s
#: (2: i/T and s rounded, positive terms, and the sum), 1 + s (2), the quotient (1), π rounded and
#: the product (2; the halving is exact): 7, plus one spare for another association of the formula.
COSINE_ANGLE_U = 8.0
#: The offset s of the cosine schedule the harness declares (``ddspec.reference.schedules.cosine_betas``).
COSINE_S = 0.008
#: The defaults of the sigmoid schedule's argument range (``ddspec.reference.schedules.sigmoid_betas``).
SIGMOID_RANGE = (-6.0, 6.0)


def _cosine_f_bound(T: int, u: float) -> Array:
    r"""Relative error bound of the textbook :math:`f(i) = \cos^2\theta_i`, i = 0 … T, in a dtype of roundoff u.

    .. math::

        \delta c_i = \theta_i\tan\theta_i\,c_\theta u + 2u,\qquad \delta f_i = 2\delta c_i + 3u

    with :math:`\theta_i = (i/T + s)/(1+s)\cdot\pi/2`: the angle is rounded (relative error
    :math:`c_\theta u`, :data:`COSINE_ANGLE_U`), which cos amplifies by its condition number
    :math:`\theta\tan\theta` (about 10³ next to π/2 at T = 1000), cos itself is within 1 ULP (2u),
    the square (pow, 1 ULP) and a normalisation f/f(0) add 3u. ``inf`` at i = T (cos(π/2) = 0).
    """
    i = np.arange(T + 1, dtype=np.float64)
    theta = (i / T + COSINE_S) / (1.0 + COSINE_S) * (np.pi / 2.0)
    with np.errstate(over="ignore", invalid="ignore"):
        cond = np.where(i < T, theta * np.tan(np.minimum(theta, np.nextafter(np.pi / 2.0, 0.0))), np.inf)
    d_cos = COSINE_ANGLE_U * u * cond + ELEMENTARY_U * u
    return 2.0 * d_cos + (ELEMENTARY_U + 1.0) * u


def _cosine_relative_bound(betas: Array, u: float) -> Array:
    r"""δβ of the textbook cosine schedule (Nichol & Dhariwal 2021, eq. 17) in a dtype of roundoff u.

    .. math::

        \delta\beta_i = \frac{1-\beta_i}{\beta_i}\,(\delta f_{i+1} + \delta f_i + u) + 2u

    (``betas[i]`` uses f(i+1)/f(i), 0-based; :func:`_cosine_f_bound`): the quotient adds u, and
    1 − quotient amplifies the quotient's relative error by (1 − β)/β; the subtraction and a final
    rounding into the table add 2u. The last entry is the clip constant (f(T) = cos²(π/2) = 0): 2u.
    """
    T = betas.size
    d_f = _cosine_f_bound(T, u)
    d_q = d_f[1:] + d_f[:-1] + u
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where(betas > 0, (1.0 - betas) / betas, np.inf) * d_q + 2.0 * u
    return np.where(np.arange(T) == T - 1, 2.0 * u, out)


def _cosine_alpha_bar_bound(betas: Array, u: float) -> Array:
    r"""δᾱ of cumprod(1 − β) over a textbook cosine β table, in a dtype of roundoff u.

    The product telescopes: :math:`\prod_{i\le t} f(i+1)/f(i) = f(t+1)/f(0)`, so the errors of the
    intermediate f cancel, and what is left is :math:`\delta f_{t+1} + \delta f_0` plus, per factor,
    the quotient (u), 1 − β̂ of a β̂ with relative error 2u (:math:`2u\,\beta_i/(1-\beta_i)`), the
    subtraction (u) and the product (u). The clipped last entry breaks the telescoping: it adds
    :math:`2u + 2u\,\beta/(1-\beta)` to the previous bound (β = 0.999 rounded).
    """
    T = betas.size
    d_f = _cosine_f_bound(T, u)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(betas < 1.0, betas / (1.0 - betas), 0.0)
    steps = np.cumsum(3.0 * u + 2.0 * u * sens)
    out = d_f[1:] + d_f[0] + steps
    prev = out[T - 2] if T >= 2 else 0.0
    out[T - 1] = prev + 2.0 * u + 2.0 * u * sens[T - 1]
    return out


def _sigmoid_relative_bound(betas: Array, u: float) -> Array:
    r"""δβ of diffusers' sigmoid schedule :math:`\sigma(x_i)(\beta_{\rm end}-\beta_{\rm start}) + \beta_{\rm start}`.

    :math:`x_i` = ``linspace(-6, 6, T)`` has absolute error :math:`\Delta x \le 4u(|x_0|+|x_1|)`; σ moves
    by :math:`(1-\sigma)\Delta x` relative and is evaluated as 1/(1 + exp(−x)) within 4u; the rest
    (end points rounded, their difference, the product and the sum) costs 6u:
    :math:`\delta\beta \le \Delta x + 10u`.
    """
    x0, x1 = SIGMOID_RANGE
    return np.full(betas.shape, LINSPACE_ABS_U * u * (abs(x0) + abs(x1)) + 10.0 * u)


def _base_relative_bound(betas: Array, schedule: str, u: float) -> Array:
    """δβ of a schedule before any zero-terminal-SNR rescaling (see :func:`beta_relative_bound`)."""
    if schedule == "linear":
        return np.full(betas.shape, LINSPACE_U * u)
    if schedule == "scaled_linear":
        # the square doubles the linspace's error and adds one rounding of pow (1 ULP)
        return np.full(betas.shape, 2.0 * LINSPACE_SQRT_U * u + ELEMENTARY_U * u)
    if schedule == "cosine":
        return _cosine_relative_bound(betas, u)
    if schedule == "sigmoid":
        return _sigmoid_relative_bound(betas, u)
    # custom (a given table, rounded once to the table's dtype) and anything else: a few roundings
    return np.full(betas.shape, float(gamma(4, u)))


def beta_relative_bound(betas: Array, schedule: str, u_table: float, *, zero_snr_original: Array | None = None) -> Array:
    r"""Relative error bound of a target's β table, evaluated the textbook way in a dtype of roundoff ``u_table``.

    Every operation is assumed to run in the table's dtype (the worst case: a wider intermediate,
    e.g. Python's ``math.cos`` before a cast to float32, only lowers each term), and the result to be
    rounded into the table once more. First order in u; ``docs/tolerances.md`` derives each line.

    * linear: a ``linspace`` of float64 end points, :math:`\delta\beta \le 7u`.
    * scaled_linear: ``linspace(√β_start, √β_end, T)²``, :math:`\delta\beta \le 2\cdot 10u + 2u`.
    * sigmoid: :func:`_sigmoid_relative_bound`, 58u for the default range ±6.
    * cosine: :math:`1 - f(i+1)/f(i)` with :math:`f = \cos^2\theta`; cos of a rounded angle near π/2
      has relative error :math:`\theta\tan\theta\cdot\delta\theta`, and 1 − ratio amplifies the
      ratio's error by (1 − β)/β: :func:`_cosine_relative_bound`.
    * custom: the given table rounded, :math:`\gamma_4(u)`.
    * zero-terminal-SNR rescaling (Lin et al. 2023, Algorithm 1) of the textbook base schedule
      ``zero_snr_original``, in the same dtype: :func:`_zero_snr_relative_bound`.
    """
    b = np.asarray(betas, dtype=np.float64)
    if zero_snr_original is None:
        return _base_relative_bound(b, schedule, u_table)
    original = np.asarray(zero_snr_original, dtype=np.float64)
    return _zero_snr_relative_bound(original, b, _base_relative_bound(original, schedule, u_table), u_table)


def _zero_snr_relative_bound(original: Array, rescaled: Array, base: Array, u: float) -> Array:
    r"""δβ′ of Algorithm 1 of Lin et al. 2023 run on a textbook base table (relative error ``base``).

    Algorithm 1 forms ᾱ = cumprod(1 − β), r = √ᾱ, :math:`d_t = r_t - r_T`,
    :math:`r'_t = d_t \cdot r_1/(r_1 - r_T)`, ᾱ′ = r′², α′_t = ᾱ′_t/ᾱ′_{t−1} (α′_1 = ᾱ′_1) and β′ = 1 − α′.
    The common factor cancels from α′_t, and so does the error shared by r_t and r_{t−1} (the running
    product up to t − 1). With :math:`\varepsilon_i \le 2u + \beta_i\delta\beta_i/(1-\beta_i)` the error
    the running product picks up at i and :math:`B_t = \sum_{i \ge t}\varepsilon_i`, the relative
    error of :math:`d_t/d_{t-1}` is at most

    .. math::

        P_t = \frac{r_t\varepsilon_t}{2d_t} + \Big(\frac{B_t}{2} + u\Big)\frac{r_T\,(d_{t-1}-d_t)}{d_t\,d_{t-1}}
              + u\Big(\frac{r_t}{d_t} + \frac{r_{t-1}}{d_{t-1}}\Big) + 2u,

    and :math:`\delta\beta'_t \le \frac{1-\beta'_t}{\beta'_t}(2P_t + 9u) + 2u`. The first entry keeps
    its β (the same rounded :math:`r_1 - r_T` is multiplied and divided):
    :math:`\delta\beta'_1 \le \delta\beta_1 + 9u(1-\beta_1)/\beta_1 + 2u`. The last is exactly 1 (u).
    """
    from ddspec.reference import alphas as ref_alphas

    n = original.size
    r = np.sqrt(ref_alphas.alpha_bar(original))
    r_T = r[-1]
    d = r - r_T
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = 2.0 * u + np.where(original < 1.0, original / (1.0 - original), 0.0) * base
    B = np.cumsum(eps[::-1])[::-1]
    out = np.full(n, u)
    if n >= 3:
        t = np.arange(1, n - 1)
        dt, dp = d[t], d[t - 1]
        P = (r[t] * eps[t] / (2.0 * dt) + (B[t] / 2.0 + u) * r_T * (dp - dt) / (dt * dp)
             + u * (r[t] / dt + r[t - 1] / dp) + 2.0 * u)
        bt = rescaled[t]
        out[t] = (1.0 - bt) / bt * (2.0 * P + 9.0 * u) + 2.0 * u
    out[0] = base[0] + 9.0 * u * (1.0 - original[0]) / original[0] + 2.0 * u
    return out


def alpha_bar_relative_bound(betas: Array, schedule: str, u_table: float, *, zero_snr_original: Array | None = None) -> Array:
    r"""Relative error bound of a target's ᾱ table (running product in a dtype of roundoff ``u_table``).

    .. math::

        \delta_{\bar\alpha_t} \le \gamma_{2(t+1)}(u) + \sum_{i \le t} \frac{\beta_i}{1-\beta_i}\,\delta_{\beta_i}

    The first term bounds forming each 1 − β_i and each partial product (Higham 2002, Lemma 3.1
    applied to a product of 2(t+1) rounded factors); the second propagates the error of β itself
    (:func:`beta_relative_bound`), since :math:`\partial\ln\bar\alpha_t/\partial\ln\beta_i = -\beta_i/(1-\beta_i)`.
    A β of exactly 1 (ᾱ = 0 afterwards) contributes nothing: 1 − 1 is exact.

    The cosine schedule (without rescaling) is the exception: its β are quotients of one sequence
    f, so the product telescopes and the errors of the intermediate f cancel
    (:func:`_cosine_alpha_bar_bound`); the sum above would count each of them twice over.
    """
    b = np.asarray(betas, dtype=np.float64)
    if schedule == "cosine" and zero_snr_original is None:
        return _cosine_alpha_bar_bound(b, u_table)
    db = beta_relative_bound(b, schedule, u_table, zero_snr_original=zero_snr_original)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(b < 1.0, b / (1.0 - b), 0.0)
    n = np.arange(1, b.size + 1)
    return gamma(2 * n, u_table) + np.cumsum(sens * db)


@dataclass(frozen=True)
class StepSpec:
    """The conventions that shape one step's expression (a subset of the sampler's declarations)."""

    family: str
    prediction_type: str = "epsilon"
    variance_type: str | None = None
    eta: float = 0.0
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    use_clipped_model_output: bool = False


@dataclass(frozen=True)
class StepBound:
    """Per-element tolerance of one step, with its two parts for reporting."""

    bound: Array
    rounding: Array
    table: Array


def _x0_eps(spec: StepSpec, a: float, m: Array, x: Array) -> tuple[Array, Array]:
    sa, s1 = np.sqrt(a), np.sqrt(max(1.0 - a, 0.0))
    if spec.prediction_type == "epsilon":
        x0 = (x - s1 * m) / sa if sa > 0 else np.zeros_like(x)
        return x0, m
    if spec.prediction_type == "sample":
        return m, (x - sa * m) / s1 if s1 > 0 else np.zeros_like(x)
    return sa * x - s1 * m, s1 * x + sa * m


def _coef_step(spec: StepSpec, a: float, p: float, m: Array, x: Array, z: Array | None, pv: Array | None) -> Array:
    """The step as a function of its two table entries (float64), for conditioning only."""
    x0, eps = _x0_eps(spec, a, m, x)
    if spec.clip_sample or spec.thresholding:
        r = spec.clip_sample_range if spec.clip_sample else 1.0
        x0c = np.clip(x0, -r, r)
        if spec.use_clipped_model_output or spec.family == "ddpm":
            eps = (x - np.sqrt(a) * x0c) / np.sqrt(max(1.0 - a, 1e-300))
        x0 = x0c
    if spec.family == "ddim":
        c_t, c_p = 1.0 - a, 1.0 - p
        var = spec.eta**2 * c_p / c_t * (1.0 - a / p) if c_t > 0 else 0.0
        out = np.sqrt(p) * x0 + np.sqrt(max(c_p - var, 0.0)) * eps
        return out + (np.sqrt(max(var, 0.0)) * z if z is not None else 0.0)
    bp = 1.0 - a / p
    c_t, c_p = 1.0 - a, 1.0 - p
    mean = np.sqrt(p) * bp / c_t * x0 + np.sqrt(max(1.0 - bp, 0.0)) * c_p / c_t * x
    if z is None:
        return mean
    vt = spec.variance_type or "fixed_small"
    small = c_p / c_t * bp
    if vt.startswith("fixed_small"):
        var = small
    elif vt.startswith("fixed_large"):
        var = bp
    elif vt == "learned_range" and pv is not None:
        f = (pv + 1.0) / 2.0
        var = np.exp(f * np.log(bp) + (1.0 - f) * np.log(max(small, 1e-20)))
    elif vt == "learned" and pv is not None:
        var = pv
    else:
        var = small
    return mean + np.sqrt(np.maximum(var, 0.0)) * z


def _cond(x: float, y: float) -> float:
    """Relative-error amplification of forming x − y from rounded x, y: (|x| + |y|)/|x − y| (0 if x = y)."""
    d = abs(x - y)
    return (abs(x) + abs(y)) / d if d > 0 else 0.0


def _magnitude(
    spec: StepSpec, a: float, p: float, m: Array, x: Array, z: Array | None, pv: Array | None, u: float
) -> tuple[Array, Array, Array]:
    r"""(M, C, D): the step with absolute values everywhere, its terms weighted by their coefficients'
    conditioning, and the absolute error of a square root taken of a cancelling difference.

    ``M`` is the γ_k bound's scale (every subtraction replaced by an addition). ``C`` is
    Σ |term| · κ(term), where κ is the relative-error amplification of the subtractions that form the
    term's coefficient from the tables (1 − ᾱ_t, 1 − ᾱ_prev, 1 − ᾱ_t/ᾱ_prev, 1 − ᾱ_prev − σ²): a target
    that forms, say, β′ = 1 − ᾱ_t/ᾱ_prev in float32 near t = 0 loses ~u/β′ of it, which the γ_k term,
    blind to cancellation inside coefficients, would miss.

    ``D`` covers the one place where first-order conditioning fails: DDIM's
    :math:`\sqrt{1-\bar\alpha_s-\sigma^2}` when the difference is (nearly) 0, e.g. η = 1 at a
    zero-terminal-SNR step, where it is exactly 0. If the difference r is formed with absolute error
    δ, the root is off by at most :math:`\min(\delta/(2\sqrt r), \sqrt\delta)`, i.e. up to
    :math:`\sqrt{u}`-sized, not u-sized.
    """
    sa, s1 = np.sqrt(a), np.sqrt(max(1.0 - a, 0.0))
    k_a = _cond(1.0, a) if a < 1.0 else 0.0
    k_p = _cond(1.0, p) if p < 1.0 else 0.0
    k_r = _cond(1.0, a / p) if 0.0 < p and a < p else 0.0
    am, ax = np.abs(m), np.abs(x)
    # x̂₀ and ε̂ magnitudes, and the conditioning-weighted parts that come from √(1 − ᾱ_t)
    if spec.prediction_type == "epsilon":
        x0 = (ax + s1 * am) / sa if sa > 0 else np.zeros_like(ax)
        x0_c = (s1 * am / sa) * (k_a / 2) if sa > 0 else np.zeros_like(ax)
        eps, eps_c = am, np.zeros_like(am)
    elif spec.prediction_type == "sample":
        x0, x0_c = am, np.zeros_like(am)
        eps = (ax + sa * am) / s1 if s1 > 0 else np.zeros_like(ax)
        eps_c = eps * (k_a / 2)
    else:
        x0, x0_c = sa * ax + s1 * am, s1 * am * (k_a / 2)
        eps, eps_c = s1 * ax + sa * am, s1 * ax * (k_a / 2)
    if spec.clip_sample or spec.thresholding:
        extra = (ax + sa * x0) / max(s1, 1e-150)
        eps, eps_c = eps + extra, eps_c + extra * (k_a / 2)
    az = np.abs(z) if z is not None else 0.0
    out = np.abs(_coef_step(spec, a, p, m, x, z, pv))
    if spec.family == "ddim":
        c_t, c_p = max(1.0 - a, 1e-300), 1.0 - p
        var = spec.eta**2 * c_p / c_t * abs(1.0 - a / p) if p > 0 else 0.0
        k_var = k_p + k_a + k_r
        rest = c_p - var
        c_eps = np.sqrt(max(rest, 0.0))
        # absolute error of forming rest = (1 − ᾱ_s) − σ² from rounded table entries, and of its root
        delta = 2.0 * u * (c_p * (1 + k_p) + var * (1 + k_var))
        root_err = min(delta / (2.0 * c_eps), np.sqrt(delta)) if c_eps > 0 else np.sqrt(delta)
        M = np.sqrt(p) * x0 + c_eps * eps + np.sqrt(var) * az + out
        C = np.sqrt(p) * x0_c + c_eps * eps_c + np.sqrt(var) * az * (k_var / 2)
        D = root_err * eps
        return M, C, D
    bp = abs(1.0 - a / p)
    c_t = max(1.0 - a, 1e-300)
    c_x0 = np.sqrt(p) * bp / c_t
    c_xt = np.sqrt(abs(1.0 - bp)) * (1.0 - p) / c_t
    vt = spec.variance_type or "fixed_small"
    if vt.startswith("fixed_large"):
        var_mag, k_v = bp, k_r
    else:
        var_mag, k_v = max(bp, (1.0 - p) / c_t * bp), k_p + k_a + k_r
    if vt == "learned" and pv is not None:
        var_mag, k_v = np.abs(pv), 0.0
    M = c_x0 * x0 + c_xt * ax + np.sqrt(var_mag) * az + out
    C = c_x0 * (x0 * (k_r + k_a) + x0_c) + c_xt * ax * (k_p + k_a) + np.sqrt(var_mag) * az * (k_v / 2)
    return M, C, np.zeros_like(M)


def step_bound(
    spec: StepSpec,
    *,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    delta_t: float,
    delta_prev: float,
    model_output: Array,
    x_t: Array,
    noise: Array | None,
    predicted_variance: Array | None = None,
    u_compute: float,
    safety: float = SAFETY,
    k_ops: int = K_OPS,
) -> StepBound:
    r"""Per-element tolerance for one step (see the module docstring).

    ``delta_t``/``delta_prev`` are the relative error bounds of the target's ᾱ_t and ᾱ_prev
    (:func:`alpha_bar_relative_bound`; 0 for an exact 1 at the final step). ``u_compute`` is the unit
    roundoff of the dtype the step runs in; tables used in a narrower dtype than they are stored in
    are covered because the caller passes ``max(u_table, u_compute)`` into the δ's.
    """
    m = np.asarray(model_output, dtype=np.float64)
    x = np.asarray(x_t, dtype=np.float64)
    z = None if noise is None else np.asarray(noise, dtype=np.float64)
    pv = None if predicted_variance is None else np.asarray(predicted_variance, dtype=np.float64)
    a, p = float(alpha_bar_t), float(alpha_bar_prev)
    M, C, D = _magnitude(spec, a, p, m, x, z, pv, u_compute)
    # γ_K over the whole expression, plus one rounding of each table entry amplified by the
    # conditioning of the subtractions that form the coefficients from it (factor 2: the entry's own
    # rounding and the rounding of the subtraction's other operand).
    rounding = gamma(k_ops, u_compute) * M + 2.0 * u_compute * C + D
    table = np.zeros_like(x)
    h = 1e-7
    for which, delta in (("t", delta_t), ("p", delta_prev)):
        if delta <= 0.0:
            continue
        if which == "t":
            lo_a, hi_a = a * (1 - h), min(a * (1 + h), np.nextafter(1.0, 0.0))
            if hi_a <= lo_a or a <= 0.0:
                continue
            d = (_coef_step(spec, hi_a, p, m, x, z, pv) - _coef_step(spec, lo_a, p, m, x, z, pv)) / np.log(hi_a / lo_a)
        else:
            lo_p, hi_p = p * (1 - h), min(p * (1 + h), 1.0)
            lo_p = max(lo_p, a) if spec.family == "ddpm" else lo_p
            if hi_p <= lo_p or p <= 0.0:
                continue
            d = (_coef_step(spec, a, hi_p, m, x, z, pv) - _coef_step(spec, a, lo_p, m, x, z, pv)) / np.log(hi_p / lo_p)
        # delta may be inf (a γ bound past 1/u: no useful bound); 0 sensitivity then still costs nothing
        with np.errstate(invalid="ignore"):  # inf * 0 where d == 0: masked to 0 just below
            table = table + np.where(d == 0.0, 0.0, np.abs(d) * delta)
    bound = safety * (rounding + table)
    return StepBound(bound=bound, rounding=rounding, table=table)


# -- coefficient identification (the ``coefficients`` check family) -------------------------------
#
# Away from clipping, every DDPM/DDIM step is affine in its inputs: x_prev = a·x_t + b·m + c·z. A
# target's *systematic* error is the error of its effective coefficients (a, b, c); the rounding of
# its tensor arithmetic is an element-wise, zero-mean disturbance that a least-squares fit over a
# large batch averages out (``docs/tolerances.md``, "Coefficient identification").

#: Safety factor of the coefficient-rounding bound: covers second-order terms (products of two
#: roundings) and another association of a factor than the one counted below.
SAFETY_COEF = 2.0


@dataclass(frozen=True)
class CoefficientFactor:
    r"""One scalar factor of one term of a step coefficient.

    ``value`` is the exact factor; ``form`` the relative error of forming it from the target's
    tables, in units of the tables' unit roundoff (not counting the tables' own error, which the
    table term propagates): e.g. :math:`\sqrt{1-\bar\alpha_t}` costs a subtraction and a square
    root (2), :math:`\beta' = 1 - \bar\alpha_t/\bar\alpha_s` a division and a subtraction that
    amplifies the quotient's error by :math:`(\bar\alpha_t/\bar\alpha_s)/\beta'`. ``compute`` is
    the relative error of arithmetic the target must do in the compute dtype (on a tensor, e.g. the
    learned-range interpolation of log-variances), in units of the compute dtype's unit roundoff,
    beyond the one rounding every factor is charged.
    """

    value: float
    form: float
    compute: float = 0.0


@dataclass(frozen=True)
class CoefficientTerm:
    r"""A term of a coefficient: ``sign`` × the product of its factors."""

    sign: float
    factors: tuple[CoefficientFactor, ...]

    @property
    def value(self) -> float:
        out = self.sign
        for f in self.factors:
            out *= f.value
        return out


@dataclass(frozen=True)
class CoefficientBound:
    r"""The coefficients (a, b, c) of one step in closed form and the bound on a correct target's
    deviation from them (see :func:`coefficient_bound`); dicts keyed ``"a"``, ``"b"``, ``"c"``."""

    values: dict[str, float]
    bound: dict[str, float]
    rounding: dict[str, float]
    table: dict[str, float]


def _rel_cond(r: float) -> float:
    """Amplification r/(1 − r) of the relative error of r in 1 − r (0 when r = 0, inf when r = 1)."""
    return r / (1.0 - r) if r < 1.0 else np.inf


def _prediction_maps(kind: str, a: float) -> tuple[list[CoefficientTerm], ...]:
    r"""(x̂₀ ← x, x̂₀ ← m, ε̂ ← x, ε̂ ← m) as term lists for the prediction type ``kind`` at ᾱ_t = a."""
    F = CoefficientFactor
    s_a, s_1 = np.sqrt(a), np.sqrt(max(1.0 - a, 0.0))
    inv_sa = F(1.0 / s_a, 2.0) if s_a > 0 else F(np.inf, 2.0)
    inv_s1 = F(1.0 / s_1, 3.0) if s_1 > 0 else F(np.inf, 3.0)
    if kind == "epsilon":
        return ([CoefficientTerm(1.0, (inv_sa,))], [CoefficientTerm(-1.0, (F(s_1, 2.0), inv_sa))],
                [], [CoefficientTerm(1.0, ())])
    if kind == "sample":
        return ([], [CoefficientTerm(1.0, ())],
                [CoefficientTerm(1.0, (inv_s1,))], [CoefficientTerm(-1.0, (F(s_a, 1.0), inv_s1))])
    if kind == "v_prediction":
        return ([CoefficientTerm(1.0, (F(s_a, 1.0),))], [CoefficientTerm(-1.0, (F(s_1, 2.0),))],
                [CoefficientTerm(1.0, (F(s_1, 2.0),))], [CoefficientTerm(1.0, (F(s_a, 1.0),))])
    raise ValueError(f"prediction_type={kind!r}: expected 'epsilon', 'sample' or 'v_prediction'")


def _scaled(factor: CoefficientFactor, terms: list[CoefficientTerm]) -> list[CoefficientTerm]:
    return [CoefficientTerm(t.sign, (factor, *t.factors)) for t in terms]


def _scaled_many(factors: tuple[CoefficientFactor, ...], terms: list[CoefficientTerm]) -> list[CoefficientTerm]:
    return [CoefficientTerm(t.sign, (*factors, *t.factors)) for t in terms]


def coefficient_terms(
    spec: StepSpec, a: float, p: float, predicted_variance: float | None = None
) -> dict[str, list[CoefficientTerm]]:
    r"""The step :math:`x_\mathrm{prev} = a\,x_t + b\,m + c\,z` as sums of products of scalar factors.

    With :math:`\hat x_0 = A_x x_t + A_m m` and :math:`\hat\epsilon = E_x x_t + E_m m` for the
    prediction type (ε: :math:`A_x = 1/\sqrt{\bar\alpha_t}`, :math:`A_m = -\sqrt{1-\bar\alpha_t}/\sqrt{\bar\alpha_t}`,
    :math:`E_m = 1`; x₀: :math:`A_m = 1`, :math:`E_x = 1/\sqrt{1-\bar\alpha_t}`,
    :math:`E_m = -\sqrt{\bar\alpha_t}/\sqrt{1-\bar\alpha_t}`; v: Salimans & Ho 2022, §4):

    * DDIM (Song et al. 2021, eq. 12, σ of eq. 16):
      :math:`a = \sqrt{\bar\alpha_s}A_x + d\,E_x`, :math:`b = \sqrt{\bar\alpha_s}A_m + d\,E_m`,
      :math:`c = \sigma`, :math:`d = \sqrt{1-\bar\alpha_s-\sigma^2}`;
    * DDPM (Ho et al. 2020, eq. 7 on the respaced schedule):
      :math:`a = c_0 A_x + c_t`, :math:`b = c_0 A_m`, :math:`c = \sqrt{\mathrm{var}}` with
      :math:`c_0 = \sqrt{\bar\alpha_s}\beta'/(1-\bar\alpha_t)`,
      :math:`c_t = \sqrt{\alpha'}(1-\bar\alpha_s)/(1-\bar\alpha_t)` and the variance of the declared type
      (``predicted_variance``: the constant model output of the learned types, as the target gets it).

    Clipping and thresholding are not modelled: the caller guarantees they are inactive. ``p = 1``
    at the last step (s = −1). The closed forms are for the error bound only; the expected
    coefficients come from the reference (``checks/coefficients.py``), and a test holds the two equal.
    """
    F = CoefficientFactor
    ax, am, ex, em = _prediction_maps(spec.prediction_type, a)
    c_t, c_p = 1.0 - a, 1.0 - p
    ratio = a / p if p > 0 else np.inf
    beta_p = 1.0 - ratio
    k_r = _rel_cond(ratio)
    if spec.family == "ddim":
        var = spec.eta**2 * c_p / c_t * beta_p if c_t > 0 and p > 0 else 0.0
        var = max(var, 0.0)
        var_form = 4.0 + 1.0 + k_r  # (1 − p), (1 − a), their quotient, the product, and β'
        rest = c_p - var
        d = np.sqrt(max(rest, 0.0))
        # relative error of rest, then halved by the root (+1 for the root); near rest = 0 the root's
        # own edge is covered by coefficient_bound's absolute term
        rest_form = (c_p * 1.0 + var * (var_form + 1.0)) / rest + 1.0 if rest > 0 else 0.0
        f_d = F(d, rest_form / 2.0 + 1.0)
        f_p = F(np.sqrt(p), 1.0)
        terms = {
            "a": _scaled(f_p, ax) + _scaled(f_d, ex),
            "b": _scaled(f_p, am) + _scaled(f_d, em),
            "c": [CoefficientTerm(1.0, (F(np.sqrt(var), var_form / 2.0 + 1.0),))] if var > 0 else [],
        }
        return terms
    if spec.family != "ddpm":
        raise ValueError(f"family={spec.family!r}: expected 'ddim' or 'ddpm'")
    f_beta = F(beta_p, 1.0 + k_r)
    inv_ct = F(1.0 / c_t, 2.0) if c_t > 0 else F(np.inf, 2.0)
    c0 = (F(np.sqrt(p), 1.0), f_beta, inv_ct)
    ct = CoefficientTerm(1.0, (F(np.sqrt(max(ratio, 0.0)), 2.0), F(c_p, 1.0), inv_ct))
    small = c_p / c_t * beta_p if c_t > 0 else 0.0
    small_form = 1.0 + 2.0 + (1.0 + k_r) + 1.0
    vt = spec.variance_type or "fixed_small"
    if p >= 1.0:  # the last step adds no noise (Ho et al. Algorithm 2, z = 0 at t = 1)
        c_terms: list[CoefficientTerm] = []
    elif vt.startswith("fixed_large"):
        c_terms = [CoefficientTerm(1.0, (F(np.sqrt(beta_p), (1.0 + k_r) / 2.0 + 1.0),))]
    elif vt == "learned_range":
        if predicted_variance is None:
            raise ValueError("predicted_variance=None: variance_type='learned_range' needs the model's variance output")
        frac = (float(predicted_variance) + 1.0) / 2.0
        log_var = frac * np.log(beta_p) + (1.0 - frac) * np.log(max(small, 1e-300))
        # absolute error of the exponent = relative error of the variance; exp and the root add 2
        form = frac * (1.0 + k_r) + (1.0 - frac) * small_form + 2.0
        # the interpolation runs on the variance tensor, in the compute dtype: the fraction (2
        # roundings), two products, the sum (absolute error u·Σ|terms| of the exponent), ½, exp
        log_b, log_s = np.log(beta_p), np.log(max(small, 1e-300))
        compute = 0.5 * (2.0 * abs(frac * log_b) + 2.0 * abs((1.0 - frac) * log_s) + abs(log_var)
                         + 2.0 * frac * abs(log_b - log_s)) + 2.0
        c_terms = [CoefficientTerm(1.0, (F(float(np.exp(0.5 * log_var)), form / 2.0 + 2.0, compute),))]
    elif vt == "learned":
        if predicted_variance is None:
            raise ValueError("predicted_variance=None: variance_type='learned' needs the model's variance output")
        c_terms = [CoefficientTerm(1.0, (F(float(np.sqrt(predicted_variance)), 0.0),))]
    else:
        c_terms = [CoefficientTerm(1.0, (F(np.sqrt(small), small_form / 2.0 + 1.0),))]
    return {"a": _scaled_many(c0, ax) + [ct], "b": _scaled_many(c0, am), "c": c_terms}


def _coefficient_values(spec: StepSpec, a: float, p: float, pv: float | None) -> dict[str, float]:
    return {k: float(sum(t.value for t in terms)) for k, terms in coefficient_terms(spec, a, p, pv).items()}


def coefficient_bound(
    spec: StepSpec,
    *,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    delta_t: float,
    delta_prev: float,
    u_compute: float,
    u_table: float,
    predicted_variance: float | None = None,
    safety: float = SAFETY_COEF,
) -> CoefficientBound:
    r"""How far a correct target's effective coefficients (a, b, c) may lie from the exact ones.

    Which rounding applies. A target forms each scalar factor of a coefficient (√ᾱ, 1/(1 − ᾱ_t),
    β′, σ, …) from its tables in the tables' dtype (unit roundoff ``u_table``, read off the target's
    ᾱ table), and each factor meets the tensor once: a Python float or a float32 0-d tensor times a
    bfloat16 tensor is rounded to bfloat16 by torch's type promotion (a 0-d tensor does not promote a
    dimensioned one; torch 2.x keeps a Python float in float32 arithmetic, but a 0-d tensor is cast
    first — both are within the bound). A term of k factors is therefore off by at most

    .. math::

        |{\rm term}|\Big(\gamma_k(u_c) + u_{\rm table}\sum_f \mathrm{form}_f\Big)

    (:class:`CoefficientFactor` ``form``), and the coefficient by the sum over its terms (no
    cancellation assumed), times ``safety``. The tables' own error propagates as
    :math:`|\partial c/\partial\ln\bar\alpha_t|\,\delta_t + |\partial c/\partial\ln\bar\alpha_s|\,\delta_s`
    (central differences of the closed form). DDIM's :math:`d = \sqrt{1-\bar\alpha_s-\sigma^2}` of a
    (nearly) cancelling difference r formed with absolute error Δ is off by at most
    :math:`\min(\Delta/(2\sqrt r), \sqrt\Delta)` (as in :func:`step_bound`), added to the terms that hold d.
    """
    a, p = float(alpha_bar_t), float(alpha_bar_prev)
    terms = coefficient_terms(spec, a, p, predicted_variance)
    values = {k: float(sum(t.value for t in ts)) for k, ts in terms.items()}
    rounding: dict[str, float] = {}
    for key, ts in terms.items():
        total = 0.0
        for term in ts:
            k = len(term.factors)
            rel = (float(gamma(k, u_compute)) + u_table * sum(f.form for f in term.factors)
                   + u_compute * sum(f.compute for f in term.factors))
            total += abs(term.value) * rel
        rounding[key] = safety * total
    if spec.family == "ddim":
        var = max(spec.eta**2 * (1.0 - p) / (1.0 - a) * (1.0 - a / p), 0.0) if a < 1.0 and p > 0 else 0.0
        rest = (1.0 - p) - var
        delta = 2.0 * u_table * ((1.0 - p) + var * (6.0 + _rel_cond(a / p) if p > 0 else 0.0))
        root_err = min(delta / (2.0 * np.sqrt(rest)), np.sqrt(delta)) if rest > 0 else np.sqrt(max(delta, 0.0))
        _, _, ex, em = _prediction_maps(spec.prediction_type, a)
        for key, maps in (("a", ex), ("b", em)):
            rounding[key] += safety * root_err * sum(abs(t.value) for t in maps)
    table: dict[str, float] = {k: 0.0 for k in terms}
    h = 1e-7
    for which, delta in (("t", delta_t), ("p", delta_prev)):
        if not delta > 0.0:
            continue
        if which == "t":
            lo, hi = a * (1 - h), min(a * (1 + h), np.nextafter(min(1.0, p), 0.0))
            if a <= 0.0 or hi <= lo:
                continue
            v_hi = _coefficient_values(spec, hi, p, predicted_variance)
            v_lo = _coefficient_values(spec, lo, p, predicted_variance)
        else:
            lo, hi = max(p * (1 - h), a if spec.family == "ddpm" else 0.0), min(p * (1 + h), 1.0)
            if p <= 0.0 or hi <= lo:
                continue
            v_hi = _coefficient_values(spec, a, hi, predicted_variance)
            v_lo = _coefficient_values(spec, a, lo, predicted_variance)
        for key in terms:
            d = (v_hi[key] - v_lo[key]) / np.log(hi / lo)
            if d != 0.0:
                table[key] += abs(d) * delta
    bound = {k: rounding[k] + safety * table[k] for k in terms}
    return CoefficientBound(values=values, bound=bound, rounding=rounding, table=table)


# -- the first step of an inversion from the data ----------------------------------------------------


def inversion_from_data_bound(alpha_bar_to: float, delta_to: float, u: float, x: Array, eps: Array) -> Array:
    r"""Per-element tolerance of an inversion's first step, from the data (index −1, ᾱ = 1) to index t.

    .. math::

        x_t = s\,x + c\,\hat\epsilon,\qquad s = \sqrt{\bar\alpha_t},\quad c = \sqrt{1-\bar\alpha_t}

    (Song et al. 2021 eq. 12 with σ = 0 run towards noisier indices, §4.3; at the data x̂₀ = x exactly).
    The general step model (:func:`step_bound`) cannot serve this step: its conditioning of
    1 − ᾱ_source is infinite at ᾱ_source = 1, a difference this step never forms.

    Derivation, to first order in the relative errors:

    * the target's ᾱ_t carries a relative error ``delta_to`` (:func:`alpha_bar_relative_bound`): s moves
      by ½δ relative, and c by ½δ·ᾱ/(1 − ᾱ) relative (∂ ln c / ∂ ln ᾱ = −½ ᾱ/(1 − ᾱ));
    * forming 1 − ᾱ_t in the run adds u·ᾱ/(1 − ᾱ) relative to c's radicand (so ½ of it to c), and each
      square root u; two more roundings are charged to each coefficient as slack (2u each);
    * the two products and the sum add at most γ₃(u) of :math:`s|x| + c|\hat\epsilon|`
      (Higham 2002, Lemma 3.1).

    .. math::

        \mathrm{bound} = 2\Big[(\tfrac12\delta + 2u)\,s|x| + \big(\tfrac12(\delta + u)\tfrac{\bar\alpha}{1-\bar\alpha}
        + 2u\big)\,c|\hat\epsilon| + \gamma_3(u)\,(s|x| + c|\hat\epsilon|)\Big]

    The factor 2 covers the second-order terms. At ᾱ_t = 1 (no noise at all) c's relative term is
    infinite: the bound is then inf wherever ε̂ ≠ 0, and nothing beyond finiteness is asserted there.
    Index convention: ``alpha_bar_to`` is ᾱ at the destination index t (0-based).
    """
    a = float(alpha_bar_to)
    s, c = np.sqrt(a), np.sqrt(max(1.0 - a, 0.0))
    xx = np.abs(np.asarray(x, dtype=np.float64))
    ee = np.abs(np.asarray(eps, dtype=np.float64))
    rel_s = 0.5 * float(delta_to) + 2.0 * u
    rel_c = 0.5 * (float(delta_to) + u) * a / (1.0 - a) + 2.0 * u if a < 1.0 else np.inf
    g3 = float(gamma(3, u))
    with np.errstate(invalid="ignore"):
        cterm = np.where(ee > 0, rel_c * c * ee, 0.0)
    return 2.0 * (rel_s * s * xx + cterm + g3 * (s * xx + c * ee))


__all__ += ["inversion_from_data_bound"]
