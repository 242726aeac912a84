r"""The quantities a formula can be checked against: each bound to reference function(s) and a symbolic form.

A :class:`Quantity` says

* which reference function(s) of :mod:`ddspec.reference` give its float64 value at an evaluation point,
* its symbolic reference form over the vocabulary of :mod:`ddspec.audit.formula`, with the paper and
  equation it comes from,
* where it is evaluated (:class:`Point`): every index of each schedule; for DDIM also the strided
  (t, t_prev) pairs of 50- and 10-step ``leading`` subsequences and several η; for the L_t weight both
  fixed variances,
* the reference's float64 error bound in ULP (docs/accuracy.md, ``audit/accuracy.py`` ``BOUNDS``, or
  derived here from those bounds plus one rounding per operation), which is the checker's tolerance.

Index convention: a point's ``t`` is the 0-based index (docs/conventions.md) and ``t_prev = -1`` is
the data; the formula's ``t`` symbol is the papers' ``t + 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import mpmath
import numpy as np
from numpy.typing import NDArray

from ddspec.reference import alphas as r_alphas
from ddspec.reference import ddim as r_ddim
from ddspec.reference import likelihood as r_likelihood
from ddspec.reference import parameterisation as r_param
from ddspec.reference import posterior as r_posterior
from ddspec.reference import schedules as r_schedules
from ddspec.reference import timesteps as r_timesteps
from ddspec.reference import variances as r_variances

from .formula import MP_DPS, Tables

__all__ = [
    "U",
    "DEFAULT_SCHEDULES",
    "DEFAULT_ETAS",
    "Point",
    "ScheduleData",
    "Quantity",
    "QUANTITIES",
    "schedule_data",
    "parse_schedule",
]

#: Unit in the last place, relative: ulp(x) <= U·|x| for a normal double x.
U = 2.0**-52
#: The standard schedules: Ho et al.'s linear 1e-4..0.02, the cosine schedule, Stable Diffusion's scaled_linear.
DEFAULT_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "scaled_linear")
#: The η at which DDIM quantities are evaluated.
DEFAULT_ETAS: tuple[float, ...] = (0.0, 0.5, 1.0)
#: Sampling subsequences (``leading`` spacing) whose (t, t_prev) pairs DDIM quantities are evaluated at.
STRIDED_STEPS: tuple[int, ...] = (50, 10)
_COSINE_S = 0.008
_COSINE_MAX_BETA = 0.999


@dataclass(frozen=True)
class Point:
    """Where a quantity is evaluated: 0-based index ``t``, previous index ``t_prev`` (−1 = data), η, σ² choice."""

    schedule: str
    t: int
    t_prev: int
    eta: float | None = None
    sigma2: str | None = None

    def describe(self) -> str:
        parts = [f"schedule={self.schedule}", f"index t={self.t} (papers' t={self.t + 1})", f"t_prev={self.t_prev}"]
        if self.eta is not None:
            parts.append(f"eta={self.eta:g}")
        if self.sigma2 is not None:
            parts.append(f"sigma^2={self.sigma2}")
        return ", ".join(parts)


def parse_schedule(spec: object) -> tuple[str, int]:
    """``"linear"`` or ``"linear:1000"`` → (name, T); ValueError naming ``schedules`` otherwise."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"schedules={spec!r}: each schedule must be a name such as 'linear' or 'cosine:1000'")
    name, _, size = spec.partition(":")
    if name not in r_schedules.NAMED_SCHEDULES:
        raise ValueError(f"schedules={spec!r}: unknown schedule {name!r}; known: {', '.join(sorted(r_schedules.NAMED_SCHEDULES))}")
    if not size:
        return name, 1000
    if not size.isdigit() or not 2 <= int(size) <= 100000:
        raise ValueError(f"schedules={spec!r}: T must be an integer in [2, 100000], got {size!r}")
    return name, int(size)


@dataclass(frozen=True)
class ScheduleData:
    """One schedule: float64 β (exact inputs) and its exact mpf tables."""

    label: str
    name: str
    T: int
    betas: NDArray[np.float64]
    tables: Tables  # exact products of the float64 β
    cosine_tables: Tables | None  # β table with the closed-form ᾱ = f(k)/f(0) (cosine schedules only)
    cache: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


def _cosine_f(k: int, T: int) -> mpmath.mpf:
    s = mpmath.mpf(_COSINE_S)
    return mpmath.cos((mpmath.mpf(k) / T + s) / (1 + s) * mpmath.pi / 2) ** 2


@lru_cache(maxsize=32)
def schedule_data(spec: str) -> ScheduleData:
    """The schedule named by ``spec`` (see :func:`parse_schedule`), with exact tables at :data:`MP_DPS` digits."""
    name, T = parse_schedule(spec)
    betas = r_schedules.NAMED_SCHEDULES[name](T)
    with mpmath.workdps(MP_DPS + 10):
        beta_mp = [mpmath.mpf(0)] + [mpmath.mpf(float(b)) for b in betas]
        ab = [mpmath.mpf(1)]
        for b in beta_mp[1:]:
            ab.append(ab[-1] * (1 - b))
        cos_tab = None
        if name == "cosine":
            f0 = _cosine_f(0, T)
            cos_tab = Tables(tuple(beta_mp), tuple(_cosine_f(k, T) / f0 for k in range(T + 1)), False)
    return ScheduleData(spec, name, T, betas, Tables(tuple(beta_mp), tuple(ab)), cos_tab)


# --------------------------------------------------------------------------------------------------
# evaluation points and the exact environment of a point
# --------------------------------------------------------------------------------------------------


def _step_points(sd: ScheduleData) -> list[Point]:
    return [Point(sd.label, i, i - 1) for i in range(sd.T)]


def _ddim_pairs(sd: ScheduleData) -> list[tuple[int, int]]:
    pairs = [(i, i - 1) for i in range(sd.T)]
    for n in STRIDED_STEPS:
        if n < sd.T:
            seq = r_timesteps.leading_timesteps(sd.T, n)
            pairs += [(int(a), int(b)) for a, b in r_timesteps.timestep_pairs(seq, sd.T) if int(b) != int(a) - 1]
    return pairs


def _ddim_points(sd: ScheduleData, etas: tuple[float, ...]) -> list[Point]:
    return [Point(sd.label, i, j, eta=e) for e in etas for i, j in _ddim_pairs(sd)]


def _lt_points(sd: ScheduleData) -> list[Point]:
    pts = [Point(sd.label, i, i - 1, sigma2="beta_t") for i in range(sd.T)]
    return pts + [Point(sd.label, i, i - 1, sigma2="fl(beta_tilde_t)") for i in range(1, sd.T)]


def _cosine_ab_points(sd: ScheduleData) -> list[Point]:
    # papers' t = 0 .. T−1 (index −1 .. T−2): the table's ᾱ equals f(t)/f(0) where no β was capped
    capped = np.nonzero(sd.betas >= _COSINE_MAX_BETA)[0]
    last = int(capped[0]) if capped.size else sd.T
    return [Point(sd.label, i, i - 1) for i in range(-1, last)]


def base_env(sd: ScheduleData, p: Point, kind: str) -> dict[str, object]:
    """Exact (mpf) values of the vocabulary at point ``p`` (see :mod:`ddspec.audit.formula`)."""
    cosine = kind in ("cosine_alpha_bar", "cosine_beta")
    tabs = sd.cosine_tables if cosine and sd.cosine_tables is not None else sd.tables
    i, j = p.t, p.t_prev
    env: dict[str, object] = {
        "__tables": tabs,
        "t": mpmath.mpf(i + 1),
        "idx": mpmath.mpf(i),
        "T": mpmath.mpf(sd.T),
        "s": mpmath.mpf(_COSINE_S),
        "max_beta": mpmath.mpf(_COSINE_MAX_BETA),
    }
    if i < 0:
        env["alpha_bar_t"] = tabs.alpha_bar[0]
        return env
    ab_t = tabs.alpha_bar[i + 1]
    ab_p = tabs.alpha_bar[j + 1]
    with mpmath.workdps(MP_DPS + 10):
        beta = sd.tables.beta[i + 1] if (j == i - 1 or cosine) else 1 - ab_t / ab_p
        env.update({
            "t_prev": mpmath.mpf(j + 1),
            "alpha_bar_t": ab_t,
            "alpha_bar_prev": ab_p,
            "beta_t": beta,
            "alpha_t": 1 - beta,
            "beta_tilde_t": (1 - ab_p) / (1 - ab_t) * beta if ab_t != 1 else mpmath.mpf(0),
        })
        if p.eta is not None:
            env["eta"] = mpmath.mpf(p.eta)
            env["sigma_t"] = mpmath.mpf(p.eta) * mpmath.sqrt(env["beta_tilde_t"])  # type: ignore[arg-type]
        if p.sigma2 is not None:
            env["sigma_t"] = mpmath.sqrt(mpmath.mpf(_lt_sigma2(sd, p)))
    return env


def _lt_sigma2(sd: ScheduleData, p: Point) -> float:
    if p.sigma2 == "beta_t":
        return float(sd.betas[p.t])
    return float(_cached(sd, "beta_tilde", lambda: r_posterior.beta_tilde(sd.betas))[p.t])


def _cached(sd: ScheduleData, key: str, make: Callable[[], NDArray[np.float64]]) -> NDArray[np.float64]:
    if key not in sd.cache:
        sd.cache[key] = make()
    return sd.cache[key]  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# reference values
# --------------------------------------------------------------------------------------------------

RefFn = Callable[[ScheduleData, Point], float]


def _table(fn: Callable[[NDArray[np.float64]], NDArray[np.float64]], key: str) -> RefFn:
    return lambda sd, p: float(_cached(sd, key, lambda: fn(sd.betas))[p.t])


def _probe(fn: Callable[..., NDArray[np.float64]], a: float, b: float) -> RefFn:
    """Coefficient of a linear map ``fn(first, second, t, betas)``, read by probing with (a, b) ∈ {(1, 0), (0, 1)}: exact."""
    return lambda sd, p: float(fn(np.array([a]), np.array([b]), p.t, sd.betas)[0])


def _ddim_sigma(sd: ScheduleData, p: Point) -> float:
    """ddim.ddim_sigmas (vectorised ddim_sigma) over the consecutive sequence and each strided one, cached."""
    key = f"ddim_sigmas:{p.eta!r}"
    if key not in sd.cache:
        table: dict[tuple[int, int], float] = {}
        seqs = [np.arange(sd.T - 1, -1, -1)] + [r_timesteps.leading_timesteps(sd.T, n) for n in STRIDED_STEPS if n < sd.T]
        for seq in seqs:
            sig = r_ddim.ddim_sigmas(sd.betas, seq, float(p.eta or 0.0))
            prev = list(seq[1:]) + [-1]
            table.update({(int(a), int(b)): float(v) for a, b, v in zip(seq, prev, sig)})
        sd.cache[key] = table
    return sd.cache[key][(p.t, p.t_prev)]  # type: ignore[index]


def _ddim_direction(sd: ScheduleData, p: Point) -> float:
    return r_ddim.ddim_direction_coefficient(sd.betas, p.t, p.t_prev, float(p.eta or 0.0))


def _ddim_x0(sd: ScheduleData, p: Point) -> float:
    # the x̂₀ coefficient does not depend on σ (σ = 0 is always admissible)
    return r_ddim.ddim_mean_coefficients(sd.betas, p.t, p.t_prev, 0.0)[0]


def _ddim_xt(sd: ScheduleData, p: Point) -> float:
    s1 = _cached(sd, "sqrt_1m_ab", lambda: r_alphas.sqrt_one_minus_alpha_bar(sd.betas))
    return _ddim_direction(sd, p) / float(s1[p.t])


def _lt_weight(sd: ScheduleData, p: Point) -> float:
    return r_likelihood.eps_kl_weight(sd.betas, p.t, _lt_sigma2(sd, p))


def _noise_small(sd: ScheduleData, p: Point) -> float:
    if p.t == 0:
        return 0.0  # Ho et al. 2020, Algorithm 2: z = 0 at the last step
    return float(np.sqrt(r_variances.reverse_variance(sd.betas, p.t, "fixed_small").variance))


def _noise_large(sd: ScheduleData, p: Point) -> float:
    if p.t == 0:
        return 0.0  # Ho et al. 2020, Algorithm 2: z = 0 at the last step
    return float(np.sqrt(r_variances.reverse_variance(sd.betas, p.t, "fixed_large").variance))


def _cosine_ab(sd: ScheduleData, p: Point) -> float:
    return float(r_alphas.alpha_bar_at(sd.betas, p.t))


def _cosine_ab_tolerance(sd: ScheduleData, p: Point) -> float:
    """8 ULP for the table, plus each β's 8-ULP error propagated: d log ᾱ_t = Σ β_k/(1 − β_k) · d log β_k."""
    if p.t < 0:
        return 8 * U
    b = sd.betas[: p.t + 1]
    return 8 * U * (1.0 + float(np.sum(b / (1.0 - b))))


@dataclass(frozen=True)
class Quantity:
    """A checkable quantity: its reference function(s), symbolic form, source, points and tolerance."""

    name: str
    title: str
    reference_form: str  # sympy, over the vocabulary
    source: str
    reference_functions: str
    kind: str  # "step", "ddim", "lt", "cosine_alpha_bar", "cosine_beta"
    ulp_bound: float
    ulp_note: str
    value: RefFn = field(repr=False, compare=False)
    tolerance_fn: Callable[[ScheduleData, Point], float] | None = field(default=None, repr=False, compare=False)

    def points(self, sd: ScheduleData, etas: tuple[float, ...]) -> list[Point]:
        if self.kind == "ddim":
            return _ddim_points(sd, etas)
        if self.kind == "lt":
            return _lt_points(sd)
        if self.kind == "cosine_alpha_bar":
            return _cosine_ab_points(sd)
        return _step_points(sd)

    def tolerance(self, sd: ScheduleData, p: Point) -> float:
        """Relative tolerance at ``p``: the reference's ULP bound × U (plus propagated input error where stated)."""
        if self.tolerance_fn is not None:
            return self.tolerance_fn(sd, p)
        return self.ulp_bound * U

    @property
    def cosine_only(self) -> bool:
        return self.kind in ("cosine_alpha_bar", "cosine_beta")


_TAB8 = "audited table, docs/accuracy.md (audit/accuracy.py BOUNDS)"
_H = "Ho et al. 2020"
_D = "Song, Meng & Ermon 2021 (DDIM)"
_SH = "Salimans & Ho 2022, §4"

_LIST: tuple[Quantity, ...] = (
    Quantity("posterior_variance", "posterior variance β̃_t", "(1 - alpha_bar_prev)/(1 - alpha_bar_t)*beta_t",
             f"{_H}, eq. 7", "posterior.posterior_variance", "step", 8, _TAB8,
             _table(r_posterior.posterior_variance, "beta_tilde")),
    Quantity("posterior_mean_coef1", "coefficient of x₀ in the posterior mean μ̃_t",
             "sqrt(alpha_bar_prev)*beta_t/(1 - alpha_bar_t)", f"{_H}, eq. 7", "posterior.posterior_mean_coef1", "step", 8,
             _TAB8, _table(r_posterior.posterior_mean_coef1, "coef1")),
    Quantity("posterior_mean_coef2", "coefficient of x_t in the posterior mean μ̃_t",
             "sqrt(alpha_t)*(1 - alpha_bar_prev)/(1 - alpha_bar_t)", f"{_H}, eq. 7", "posterior.posterior_mean_coef2",
             "step", 8, _TAB8, _table(r_posterior.posterior_mean_coef2, "coef2")),
    Quantity("alpha_bar", "ᾱ_t = ∏_{s≤t} α_s", "alpha_bar_prev*alpha_t", f"{_H}, eq. 4 (and the line above it)",
             "alphas.alpha_bar", "step", 8, _TAB8, _table(r_alphas.alpha_bar, "alpha_bar")),
    Quantity("forward_mean_coef", "√ᾱ_t, the mean coefficient of q(x_t|x₀)", "sqrt(alpha_bar_t)", f"{_H}, eq. 4",
             "alphas.sqrt_alpha_bar", "step", 8, _TAB8, _table(r_alphas.sqrt_alpha_bar, "sqrt_ab")),
    Quantity("forward_std", "√(1 − ᾱ_t), the std of q(x_t|x₀)", "sqrt(1 - alpha_bar_t)", f"{_H}, eq. 4",
             "alphas.sqrt_one_minus_alpha_bar", "step", 8, _TAB8, _table(r_alphas.sqrt_one_minus_alpha_bar, "sqrt_1m_ab")),
    Quantity("ddim_sigma", "DDIM σ_t(η)", "eta*sqrt((1 - alpha_bar_prev)/(1 - alpha_bar_t))*sqrt(1 - alpha_bar_t/alpha_bar_prev)",
             f"{_D}, eq. 16", "ddim.ddim_sigma", "ddim", 8, _TAB8, _ddim_sigma),
    Quantity("ddim_direction", "DDIM direction coefficient √(1 − ᾱ_prev − σ²)", "sqrt(1 - alpha_bar_prev - sigma_t**2)",
             f"{_D}, eq. 12", "ddim.ddim_direction_coefficient", "ddim", 24,
             "derived: the radicand is a sum of positive products of four 8-ULP table values with 7 roundings "
             "(≤ 39 ULP), halved by the square root", _ddim_direction),
    Quantity("ddim_x0_coefficient", "coefficient √ᾱ_prev of x̂₀ in a DDIM step", "sqrt(alpha_bar_prev)",
             f"{_D}, eq. 12 (eq. 7; on a subsequence τ, §4.2)", "ddim.ddim_mean_coefficients", "ddim", 8,
             "derived: √ of an 8-ULP table value (≤ 4.5 ULP)", _ddim_x0),
    Quantity("ddim_xt_coefficient", "coefficient of x_t in the mean of q_σ(x_prev|x_t, x₀)",
             "sqrt(1 - alpha_bar_prev - sigma_t**2)/sqrt(1 - alpha_bar_t)", f"{_D}, eq. 7",
             "ddim.ddim_direction_coefficient / alphas.sqrt_one_minus_alpha_bar", "ddim", 33,
             "derived: direction (24) + table (8) + one division", _ddim_xt),
    Quantity("lt_weight", "weight of ‖ε − ε_θ‖² in L_{t−1}", "beta_t**2/(2*sigma_t**2*alpha_t*(1 - alpha_bar_t))",
             f"{_H}, eq. 12", "likelihood.eps_kl_weight", "lt", 8,
             "double-double from exact inputs and the double-double 1 − ᾱ table, rounded once", _lt_weight),
    Quantity("x0_from_eps_coef_xt", "coefficient of x_t in x̂₀(x_t, ε)", "1/sqrt(alpha_bar_t)", f"{_H}, eq. 4 solved for x₀ (eq. 15)",
             "parameterisation.predict_x0_from_eps", "step", 10, "derived: 1/(8-ULP table) + one rounding",
             _probe(r_param.predict_x0_from_eps, 1.0, 0.0)),
    Quantity("x0_from_eps_coef_eps", "coefficient of ε in x̂₀(x_t, ε)", "-sqrt(1 - alpha_bar_t)/sqrt(alpha_bar_t)",
             f"{_H}, eq. 4 solved for x₀ (eq. 15)", "parameterisation.predict_x0_from_eps", "step", 18,
             "derived: quotient of two 8-ULP tables + rounding", _probe(r_param.predict_x0_from_eps, 0.0, 1.0)),
    Quantity("v_coef_eps", "coefficient of ε in v", "sqrt(alpha_bar_t)", _SH, "parameterisation.v_from_x0_eps", "step", 8,
             _TAB8, _probe(r_param.v_from_x0_eps, 0.0, 1.0)),
    Quantity("v_coef_x0", "coefficient of x₀ in v", "-sqrt(1 - alpha_bar_t)", _SH, "parameterisation.v_from_x0_eps", "step",
             8, _TAB8, _probe(r_param.v_from_x0_eps, 1.0, 0.0)),
    Quantity("x0_from_v_coef_xt", "coefficient of x_t in x̂₀(x_t, v)", "sqrt(alpha_bar_t)", _SH,
             "parameterisation.predict_x0_from_v", "step", 8, _TAB8, _probe(r_param.predict_x0_from_v, 1.0, 0.0)),
    Quantity("x0_from_v_coef_v", "coefficient of v in x̂₀(x_t, v)", "-sqrt(1 - alpha_bar_t)", _SH,
             "parameterisation.predict_x0_from_v", "step", 8, _TAB8, _probe(r_param.predict_x0_from_v, 0.0, 1.0)),
    Quantity("eps_from_v_coef_xt", "coefficient of x_t in ε̂(x_t, v)", "sqrt(1 - alpha_bar_t)", _SH,
             "parameterisation.predict_eps_from_v", "step", 8, _TAB8, _probe(r_param.predict_eps_from_v, 1.0, 0.0)),
    Quantity("eps_from_v_coef_v", "coefficient of v in ε̂(x_t, v)", "sqrt(alpha_bar_t)", _SH,
             "parameterisation.predict_eps_from_v", "step", 8, _TAB8, _probe(r_param.predict_eps_from_v, 0.0, 1.0)),
    Quantity("ddpm_mean_coef_xt", "coefficient of x_t in μ_θ(x_t, ε_θ)", "1/sqrt(alpha_t)", f"{_H}, eq. 11",
             "parameterisation.ddpm_mean_from_eps", "step", 4, "derived: 1/√(1 − β) with three roundings",
             _probe(r_param.ddpm_mean_from_eps, 1.0, 0.0)),
    Quantity("ddpm_mean_coef_eps", "coefficient of ε_θ in μ_θ(x_t, ε_θ)", "-beta_t/(sqrt(alpha_t)*sqrt(1 - alpha_bar_t))",
             f"{_H}, eq. 11", "parameterisation.ddpm_mean_from_eps", "step", 12,
             "derived: an 8-ULP table and four roundings", _probe(r_param.ddpm_mean_from_eps, 0.0, 1.0)),
    Quantity("ddpm_noise_std", "std of the noise a DDPM step adds, σ_t² = β̃_t (\"fixed small\")", "sqrt(beta_tilde_t)",
             f"{_H}, Algorithm 2 and §3.2 (z = 0 at t = 1, where β̃_1 = 0)", "variances.reverse_variance(fixed_small)",
             "step", 8, "derived: √ of an 8-ULP value", _noise_small),
    Quantity("ddpm_noise_std_fixed_large", "std of the noise a DDPM step adds, σ_t² = β_t (\"fixed large\")",
             "Piecewise((sqrt(beta_t), t > 1), (0, True))", f"{_H}, Algorithm 2 and §3.2 (z = 0 at t = 1)",
             "variances.reverse_variance(fixed_large)", "step", 8, "derived: √ of an 8-ULP value", _noise_large),
    Quantity("cosine_alpha_bar", "cosine schedule ᾱ(t) = f(t)/f(0)",
             "cos((t/T + s)/(1 + s)*pi/2)**2/cos(s/(1 + s)*pi/2)**2", "Nichol & Dhariwal 2021, eq. 17",
             "alphas.alpha_bar_at(schedules.cosine_betas)", "cosine_alpha_bar", 8,
             "8 ULP (table) + 8 ULP of each β propagated: 8·Σ_{k≤t} β_k/(1 − β_k) ULP; t < T (the capped last β "
             "makes the table's ᾱ_T differ from f(T)/f(0) = 0 by design)", _cosine_ab, _cosine_ab_tolerance),
    Quantity("cosine_beta", "cosine schedule β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999)", "Min(1 - alpha_bar_t/alpha_bar_prev, max_beta)",
             "Nichol & Dhariwal 2021, eq. 17 and §3.2 (the clip)", "schedules.cosine_betas", "cosine_beta", 8, _TAB8,
             _table(lambda b: b, "betas")),
)

#: Every quantity, by name.
QUANTITIES: dict[str, Quantity] = {q.name: q for q in _LIST}
