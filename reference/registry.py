r"""One declarative registry of the reference: each public equation, its twin, domain, bound and tests.

Every public function of every equation module of :mod:`ddspec.reference` has one :class:`Entry`:

* the **equation** (plain text) and its **source** (paper and equation number);
* its **mpmath twin**, a name in :mod:`ddspec.reference.twin` (``None``: no twin, listed as a gap);
* its **input domain**, in words, and one or more :class:`Probe` points inside it;
* its **bound**: a documented worst case in ULP (``ulp_bound``, enforced by ``ddspec audit`` at every
  timestep of the standard schedules for the ``audit`` quantities), or, for the equations on arbitrary
  arrays, the normwise bound of its probes in units of roundoff :math:`u = 2^{-53}`:

  .. math:: \max_i |\hat y_i - y_i| \le k\,u\,\max\big(1, \max_i |y_i|\big);

* the names of its **property tests** (``file::test`` under ``tests/properties/``) and of the
  **harness checks** (``ddspec check`` names or name stems, such as ``single_step.eta``) that exercise
  it, as plain strings. ``tests/reference/test_registry.py`` checks that every cited name exists.

``ddspec audit`` (:mod:`ddspec.audit.accuracy`) takes its pairings and bounds from here, and
``docs/traceability.md`` is generated from here (:mod:`ddspec.reference.traceability`).

Index convention: 0-based timestep index, ᾱ before the first step = 1 (docs/conventions.md). This
module imports numpy and mpmath only; it names functions as strings and resolves them on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Any

import mpmath
import numpy as np

from .validation import fail

__all__ = ["Probe", "Entry", "REGISTRY", "TOOLING_MODULES", "UNIT_ROUNDOFF", "entry", "resolve", "audit_entry", "probe_errors"]

#: u = 2⁻⁵³, the unit roundoff of float64: the unit of the ``"norm"`` probe bounds.
UNIT_ROUNDOFF: float = 2.0**-53

#: Modules of ddspec.reference that state no equation (the accuracy report, this index, input validation, the vocabulary).
TOOLING_MODULES: tuple[str, ...] = ("audit", "registry", "traceability", "validation", "vocabulary")


@dataclass(frozen=True)
class Probe:
    """One point of the input domain, and how to compare the function with its twin there.

    ``kwargs`` are the reference function's arguments; ``twin_kwargs`` the twin's where they differ
    (None: the same). ``select`` names the attributes of a result object (a Gaussian's ``mean`` and
    ``variance``) compared, in order, with the twin's tuple. ``metric`` is ``"ulp"`` (elementwise ULP
    of the exact value, bound ``tol``) or ``"norm"`` (``max|ŷ − y| ≤ tol·u·max(1, max|y|)``).
    """

    kwargs: Mapping[str, Any]
    twin_kwargs: Mapping[str, Any] | None = None
    select: tuple[str, ...] = ()
    metric: str = "ulp"
    tol: float = 8.0


@dataclass(frozen=True)
class Entry:
    """One public reference function: where its equation comes from and what checks it."""

    function: str
    equation: str
    source: str
    twin: str | None
    domain: str
    _: KW_ONLY
    ulp_bound: float | None = None
    audit: tuple[str, ...] = ()
    properties: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    probes: tuple[Probe, ...] = field(default_factory=tuple)
    note: str = ""

    @property
    def module(self) -> str:
        return self.function.split(".")[0]


# ---------------------------------------------------------------------------------------------------
# probe data: exact float64 values inside every domain
# ---------------------------------------------------------------------------------------------------

_LIN = np.linspace(1e-4, 0.02, 1000)  # DDPM's linear schedule, T = 1000
_SHORT = np.array([1e-3, 0.01, 0.05, 0.1, 0.2, 0.3])
_X = np.array([0.3, -1.2, 0.5, 2.0])
_E = np.array([-0.4, 0.9, 1.5, -2.0])
_U = np.array([0.7, 0.2, -1.1, 0.4])


# seeded standard-normal probe data (fixed by the seed: the probes are the same on every machine)
_R1 = np.random.default_rng(1).standard_normal((2, 40))
_R2 = np.random.default_rng(2).standard_normal((2, 30))
_R2_VAR = np.random.default_rng(3).uniform(1e-4, 0.02, 30)
_R3 = np.random.default_rng(0).standard_normal((3, 20))
#: half an ULP plus a hair: the bound of a correctly rounded result
_HALF_ULP = 0.5 + 1e-6


def _decaying_alpha_bar(u: Any) -> Any:
    """ᾱ(u) = 1 − 0.9 u, a probe for betas_for_alpha_bar: exact in float64 and in mpmath alike."""
    return 1 - 0.9 * u


def _table(*extra: Mapping[str, Any], tol: float = 8.0) -> tuple[Probe, ...]:
    base = (Probe({"betas": _SHORT}, tol=tol), Probe({"betas": _LIN}, tol=tol))
    return base + tuple(Probe(k, tol=tol) for k in extra)


def _norm(*kwargs: Mapping[str, Any], tol: float = 16.0, select: tuple[str, ...] = ()) -> tuple[Probe, ...]:
    return tuple(Probe(k, select=select, metric="norm", tol=tol) for k in kwargs)


_PRED = (
    {"x_t": _X, "eps": _E, "t": 3, "betas": _SHORT},
    {"x_t": _X, "eps": _E, "t": 500, "betas": _LIN},
)
_GAUSS = ("mean", "variance")

_DSM = {"score": _X.reshape(2, 2), "x": _E.reshape(2, 2), "x_noisy": _U.reshape(2, 2), "sigma": np.array([0.5, 0.1])}
_GRID = (2.0 * np.array([[77.0, 200.0]]) - 255.0) / 255.0  # x_0 on the 8-bit grid, shape (1, 2)
_TRAJ_Q = {"x0": _GRID, "x_ts": np.array([[[0.3, -0.5]], [[0.1, 0.9]], [[-1.2, 0.4]]]), "betas": _SHORT[:3]}
_TRAJ_P = {**_TRAJ_Q, "model_means": np.array([[[-0.39, 0.57]], [[0.25, -0.4]], [[0.05, 0.8]]]),
           "model_log_variances": np.array([-6.0, -3.5, -2.0])}


def _gaussian_score(x: Any, sigma: Any) -> Any:
    """The score of N(0.5, 1 + σ²): −(x − 0.5)/(1 + σ²); runs on float64 arrays and on mpf object arrays alike."""
    return -(x - 0.5) / (1.0 + sigma * sigma)


_P = "test_posterior_properties.py::"
_F = "test_forward_properties.py::"
_D = "test_ddim_properties.py::"
_Z = "test_parameterisation_properties.py::"
_S = "test_schedule_properties.py::"
_K = "test_kl_properties.py::"
_G = "test_guidance_properties.py::"
_I = "test_inversion_properties.py::"
_N = "test_ncsn_properties.py::"
_ELBO = "test_elbo_properties.py::"
_O = "test_output_distribution_properties.py::test_run_output_law_equals_the_composition_of_the_actual_steps"

_SCHED_CHECKS = ("schedule.betas", "schedule.alphas_cumprod")
_STEP_CHECKS = ("single_step.eta", "single_step.variance_type")
_RUN_CHECKS = ("loop.steps", "loop.output_law", "distribution.run_output")
_DDPM = "Ho et al. 2020 (DDPM)"
_DDIM = "Song et al. 2021 (DDIM)"
_IDDPM = "Nichol & Dhariwal 2021 (Improved DDPM)"


def _entries() -> tuple[Entry, ...]:
    e = Entry
    return (
        # ---- alphas --------------------------------------------------------------------------------
        e("alphas.alpha_bar_tables", "ᾱ_t = ∏_{s≤t} (1 − β_s) and 1 − ᾱ_t as double-doubles, computed once",
          f"{_DDPM}, §2 (eq. 4)", "alphas.alpha_bar_tables", "β ∈ (0, 1]^T",
          properties=(_F + "test_alpha_bar_is_the_running_product_of_alphas",),
          note="the kernel of every ᾱ table; each rounded table is audited through alpha_bar and one_minus_alpha_bar",
          probes=(Probe({"betas": _SHORT}, select=("alpha_bar", "one_minus_alpha_bar")),
                  Probe({"betas": _LIN}, select=("alpha_bar", "one_minus_alpha_bar")))),
        e("alphas.alphas", "α_t = 1 − β_t", f"{_DDPM}, §2", "alphas.alphas", "β ∈ (0, 1]^T",
          properties=(_F + "test_alpha_bar_is_the_running_product_of_alphas",), probes=_table()),
        e("alphas.alpha_bar", "ᾱ_t = ∏_{s≤t} (1 − β_s)", f"{_DDPM}, §2 (eq. 4)", "alphas.alpha_bar", "β ∈ (0, 1]^T",
          ulp_bound=8.0, audit=("alpha_bar",), properties=(_F + "test_alpha_bar_is_the_running_product_of_alphas",),
          checks=_SCHED_CHECKS + ("oracle.point_mass",), probes=_table()),
        e("alphas.alpha_bar_prev", "ᾱ_{t−1}, with ᾱ_{−1} = 1", f"{_DDPM}, eq. 7 (ᾱ_{{t−1}})", None, "β ∈ (0, 1]^T",
          note="a shift of alpha_bar by one index; measured through posterior_mean_coef1/2 and beta_tilde"),
        e("alphas.one_minus_alpha_bar", "1 − ᾱ_t", f"{_DDPM}, eq. 4", "alphas.one_minus_alpha_bar", "β ∈ (0, 1]^T",
          ulp_bound=8.0, audit=("one_minus_alpha_bar",), checks=("schedule.alphas_cumprod",), probes=_table()),
        e("alphas.sqrt_alpha_bar", "√ᾱ_t", f"{_DDPM}, eq. 4", "alphas.sqrt_alpha_bar", "β ∈ (0, 1]^T",
          ulp_bound=8.0, audit=("sqrt_alpha_bar",), probes=_table()),
        e("alphas.sqrt_one_minus_alpha_bar", "√(1 − ᾱ_t)", f"{_DDPM}, eq. 4", "alphas.sqrt_one_minus_alpha_bar",
          "β ∈ (0, 1]^T", ulp_bound=8.0, audit=("sqrt_one_minus_alpha_bar",), probes=_table()),
        e("alphas.snr", "SNR_t = ᾱ_t / (1 − ᾱ_t)", "Lin et al. 2023, §2", "alphas.snr", "β ∈ (0, 1]^T",
          ulp_bound=8.0, audit=("snr",), properties=(_S + "test_zero_terminal_snr_rescaling",), probes=_table()),
        e("alphas.log_snr", "λ_t = log ᾱ_t − log(1 − ᾱ_t)", "Kingma et al. 2021 (VDM), §3", "alphas.log_snr",
          "β ∈ (0, 1)^T (λ_T = −∞ where β_T = 1)", ulp_bound=8.0, audit=("log_snr",), probes=_table()),
        e("alphas.alpha_bar_at", "ᾱ at index t; ᾱ_{−1} = 1", f"{_DDPM}, eq. 4", "alphas.alpha_bar_at",
          "β ∈ (0, 1]^T, t ∈ [−1, T−1]", probes=(Probe({"betas": _LIN, "t": 499}), Probe({"betas": _SHORT, "t": -1}))),
        e("alphas.one_minus_alpha_bar_at", "1 − ᾱ at index t; 0 at t = −1", f"{_DDPM}, eq. 4",
          "alphas.one_minus_alpha_bar_at", "β ∈ (0, 1]^T, t ∈ [−1, T−1]",
          probes=(Probe({"betas": _LIN, "t": 0}), Probe({"betas": _LIN, "t": 999}))),
        e("alphas.alpha_bar_ratio", "ᾱ_t / ᾱ_s = ∏_{s<r≤t} α_r", "Kingma et al. 2021 (VDM), eq. 21",
          "alphas.alpha_bar_ratio", "β ∈ (0, 1]^T, −1 ≤ s ≤ t ≤ T−1",
          probes=(Probe({"betas": _LIN, "t": 700, "s": 20}),)),
        e("alphas.one_minus_alpha_bar_ratio", "1 − ᾱ_t / ᾱ_s (no cancellation)", f"{_IDDPM}, §4 (β′)",
          "alphas.one_minus_alpha_bar_ratio", "β ∈ (0, 1]^T, −1 ≤ s ≤ t ≤ T−1",
          checks=("oracle.point_mass", "single_step.eta"),
          note="the kernel of respaced_betas and ddim_sigma, audited through them",
          probes=(Probe({"betas": _LIN, "t": 1, "s": 0}), Probe({"betas": _LIN, "t": 900, "s": 880}))),
        # ---- ddim ----------------------------------------------------------------------------------
        e("ddim.ddim_sigma", "σ(η) = η √((1−ᾱ_s)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_s)", f"{_DDIM}, eq. 16", "ddim.ddim_sigma",
          "β ∈ (0, 1)^T, −1 ≤ t_prev < t, η ≥ 0",
          properties=(_D + "test_eta_one_is_the_ddpm_posterior",
                      _D + "test_eta_one_on_a_subsequence_is_the_respaced_posterior"),
          checks=("single_step.eta",),
          probes=(Probe({"betas": _LIN, "t": 600, "t_prev": 580, "eta": 1.0}),
                  Probe({"betas": _LIN, "t": 0, "t_prev": -1, "eta": 0.5}))),
        e("ddim.ddim_sigmas", "σ(η) of eq. 16 along a subsequence", f"{_DDIM}, eq. 16", "ddim.ddim_sigma",
          "β ∈ (0, 1)^T, a strictly decreasing subsequence, η ≥ 0", ulp_bound=8.0,
          audit=("ddim_sigma(eta=1)", "ddim_sigma(eta=0.5)", "ddim_sigma(eta=1, stride)"),
          checks=("single_step.eta", "loop.steps"),
          note="the twin is the per-step ddim_sigma; the audit evaluates its equation on one twin ᾱ table per schedule"),
        e("ddim.ddim_sigma_max", "σ_max = √(1 − ᾱ_s)", f"{_DDIM}, eq. 7", "ddim.ddim_sigma_max",
          "β ∈ (0, 1)^T, −1 ≤ t_prev < t", probes=(Probe({"betas": _LIN, "t": 600, "t_prev": 580}),)),
        e("ddim.q_sigma", "q_σ(x_s|x_t,x_0) = N(√ᾱ_s x_0 + √(1−ᾱ_s−σ²)(x_t−√ᾱ_t x_0)/√(1−ᾱ_t), σ²I)", f"{_DDIM}, eq. 7",
          "ddim.q_sigma_mean", "σ² ≤ 1 − ᾱ_s", properties=(_D + "test_q_sigma_preserves_the_forward_marginals",),
          probes=_norm({"x0": _X, "x_t": _E, "t": 600, "t_prev": 580, "sigma": 0.05, "betas": _LIN}, select=("mean",)),
          note="the twin gives the mean (q_sigma_mean) and the variance (q_sigma_variance) separately"),
        e("ddim.ddim_mean_coefficients", "(√ᾱ_s, √(1 − ᾱ_s − σ²))", f"{_DDIM}, eq. 12", None, "σ² ≤ 1 − ᾱ_s",
          properties=(_D + "test_eta_zero_is_deterministic",), checks=("single_step.eta",)),
        e("ddim.ddim_direction_coefficient", "√(1 − ᾱ_s − σ(η)²)", f"{_DDIM}, eq. 12", None, "0 ≤ η ≤ 1",
          checks=("single_step.eta",)),
        e("ddim.q_sigma_forward", "q_σ(x_t|x_s,x_0) = N(√ᾱ_t x_0 + √(1−ᾱ_t)√(1−ᾱ_s−σ²)/(1−ᾱ_s) (x_s − √ᾱ_s x_0), σ²(1−ᾱ_t)/(1−ᾱ_s))",
          f"{_DDIM}, eq. 8 (Bayes' rule on eq. 7)", "ddim.q_sigma_forward", "0 ≤ t_prev < t ≤ T−1, σ² ≤ 1 − ᾱ_s",
          properties=(_D + "test_ddim_forward_and_q_sigma_are_one_joint_law",
                      _D + "test_ddim_forward_at_eta_one_is_the_ddpm_forward"),
          probes=_norm({"x_prev": _X, "x0": _E, "t": 600, "t_prev": 580, "sigma": 0.05, "betas": _LIN},
                       {"x_prev": _X, "x0": _E, "t": 3, "t_prev": 1, "sigma": 0.05, "betas": _SHORT}, select=_GAUSS, tol=64.0)),
        e("ddim.ddim_gamma_weight", "γ = (√((1−ᾱ_t)ᾱ_s/ᾱ_t) − √(1−ᾱ_s−σ²))² / (2σ²)", f"{_DDIM}, Theorem 1 (proof, App. B)",
          "ddim.ddim_gamma_weight", "0 ≤ t_prev < t ≤ T−1, 0 < σ² ≤ 1 − ᾱ_s",
          properties=(_D + "test_gamma_at_eta_one_is_the_ddpm_eps_weight",),
          probes=(Probe({"betas": _LIN, "t": 600, "t_prev": 580, "sigma": 0.05}, tol=16.0),
                  Probe({"betas": _LIN, "t": 600, "t_prev": 599, "sigma": 1e-6}, tol=16.0),
                  Probe({"betas": _SHORT, "t": 5, "t_prev": 2, "sigma": 0.2}, tol=16.0))),
        e("ddim.ode_sigma", "σ = √((1 − ᾱ_t)/ᾱ_t); 0 at t = −1", f"{_DDIM}, §4.3 (under eq. 14)", "ddim.ode_sigma",
          "β ∈ (0, 1)^T, −1 ≤ t ≤ T−1", properties=(_D + "test_ode_euler_step_is_the_deterministic_ddim_step",),
          probes=(Probe({"betas": _LIN, "t": 500}), Probe({"betas": _LIN, "t": 0}), Probe({"betas": _SHORT, "t": 5}))),
        e("ddim.ddim_ode_step", "x̄′ = x̄ + (σ′ − σ) ε_θ(x̄/√(σ²+1))", f"{_DDIM}, eqs. 13–14", "ddim.ddim_ode_step",
          "σ, σ′ ≥ 0", properties=(_D + "test_ode_euler_step_is_the_deterministic_ddim_step",),
          probes=_norm({"x_bar": _X, "eps": _E, "sigma_from": 1.5, "sigma_to": 0.75})),
        # ---- forward -------------------------------------------------------------------------------
        e("forward.q_step", "q(x_t|x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)", f"{_DDPM}, eq. 2", "forward.q_step",
          "β ∈ (0, 1]^T, 0 ≤ t ≤ T−1", properties=(_F + "test_forward_transitions_compose",),
          probes=_norm({"x_prev": _X, "t": 2, "betas": _SHORT}, select=_GAUSS)),
        e("forward.q_marginal", "q(x_t|x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I)", f"{_DDPM}, eq. 4", "forward.q_marginal",
          "β ∈ (0, 1]^T, 0 ≤ t ≤ T−1", properties=(_F + "test_forward_transitions_compose",),
          checks=("distribution.step_moments",),
          probes=_norm({"x0": _X, "t": 500, "betas": _LIN}, select=_GAUSS)),
        e("forward.q_transition", "q(x_t|x_s) = N(√(ᾱ_t/ᾱ_s) x_s, (1 − ᾱ_t/ᾱ_s) I)", "Kingma et al. 2021 (VDM), eq. 21",
          "forward.q_transition", "β ∈ (0, 1]^T, −1 ≤ s < t ≤ T−1",
          properties=(_F + "test_forward_transitions_compose",),
          probes=_norm({"x_s": _X, "t": 700, "s": 100, "betas": _LIN}, select=_GAUSS)),
        e("forward.q_sample", "x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε", f"{_DDPM}, eq. 4 and Algorithm 1", "forward.q_sample",
          "β ∈ (0, 1]^T, 0 ≤ t ≤ T−1", checks=("distribution.step_moments",),
          probes=_norm({"x0": _X, "t": 500, "noise": _E, "betas": _LIN})),
        # ---- guidance ------------------------------------------------------------------------------
        e("guidance.classifier_guided_mean", "μ + s Σ ∇ log p(y|x_t)", "Dhariwal & Nichol 2021, Algorithm 1",
          "guidance.classifier_guided_mean", "Σ > 0, s ∈ ℝ",
          properties=(_G + "test_guided_mean_is_the_guided_eps_through_eq_11",),
          probes=_norm({"mean": _X, "variance": np.full(4, 0.1), "grad_log_p_y": _E, "scale": 2.0})
          + tuple(Probe({"mean": _R2[0], "variance": _R2_VAR, "grad_log_p_y": _R2[1], "scale": s}, tol=_HALF_ULP)
                  for s in (0.0, 1.0, 10.0, 100.0)),
          note="correctly rounded (double-double): ≤ ½ ULP at the ULP probes"),
        e("guidance.classifier_guided_eps", "ε − s √(1−ᾱ_t) ∇ log p(y|x_t)", "Dhariwal & Nichol 2021, Algorithm 2, eq. 14",
          "guidance.classifier_guided_eps", "β ∈ (0, 1]^T, 0 ≤ t ≤ T−1",
          properties=(_G + "test_classifier_guidance_with_the_exact_likelihood_is_the_exact_conditional_eps",),
          probes=_norm({"eps": _X, "grad_log_p_y": _E, "t": 3, "betas": _SHORT, "scale": 2.0})),
        e("guidance.classifier_free_guidance", "ε_u + w (ε_c − ε_u)", "Ho & Salimans 2022, eq. 6",
          "guidance.classifier_free_guidance", "w ∈ ℝ",
          properties=(_G + "test_classifier_free_guidance_endpoints_and_the_implicit_classifier",),
          probes=_norm({"eps_uncond": _X, "eps_cond": _E, "scale": 7.5})
          + tuple(Probe({"eps_uncond": _R1[0], "eps_cond": _R1[1], "scale": s}, tol=_HALF_ULP)
                  for s in (7.5, 3.0, 1.5, -0.5, 0.3)),
          note="correctly rounded: ≤ ½ ULP of (1 + w)ε_c − wε_u at the ULP probes"),
        # ---- interpolation, inversion, langevin ----------------------------------------------------
        e("interpolation.slerp", "sin((1−α)θ)/sin θ · z_0 + sin(αθ)/sin θ · z_1", f"{_DDIM}, §5.3", "interpolation.slerp",
          "z_0, z_1 non-zero, α ∈ [0, 1]", probes=_norm({"z0": _X, "z1": _E, "alpha": 0.3})),
        e("inversion.ddim_invert_step", "DDIM eq. 12 with η = 0, run from t_from to the noisier t_to",
          f"{_DDIM}, §4.3 eq. 14 (ODE), §5.4 (inversion)", "inversion.ddim_invert_step", "−1 ≤ t_from < t_to ≤ T−1",
          properties=(_I + "test_point_mass_inversion_then_sampling_is_exact",),
          probes=_norm({"eps": _E, "t_from": 100, "t_to": 140, "x": _X, "betas": _LIN})),
        e("inversion.ddim_invert", "K inversion steps along τ_0 < … < τ_K", f"{_DDIM}, §4.3 eq. 14 (ODE), §5.4 (inversion)", None,
          "a strictly increasing subsequence",
          properties=(_I + "test_gaussian_round_trip_error_shrinks_with_the_step",)),
        e("langevin.langevin_step_size", "α_i = ε σ_i² / σ_L²", "Song & Ermon 2019, Algorithm 1, line 3",
          "langevin.langevin_step_size", "σ_i, σ_L, ε > 0",
          probes=(Probe({"sigma_i": 0.5, "sigma_L": 0.01, "epsilon": 2e-5}, tol=3.0),
                  Probe({"sigma_i": 1.0, "sigma_L": 0.01, "epsilon": 2e-5}, tol=3.0))),
        e("langevin.annealed_langevin_step", "x + (α/2) ∇ log p(x) + √α z", "Song & Ermon 2019, Algorithm 1, line 6",
          "langevin.annealed_langevin_step", "α > 0",
          probes=_norm({"x": _X, "score": _E, "step_size": 0.01, "noise": _U},
                       *({"x": _R3[0], "score": 50.0 * _R3[1], "step_size": a, "noise": _R3[2]} for a in (1e-5, 0.003, 0.2)),
                       tol=16.0)),
        # ---- likelihood ----------------------------------------------------------------------------
        e("likelihood.normal_kl", "KL(N(μ_1, e^{v_1}) ‖ N(μ_2, e^{v_2})), elementwise", f"{_DDPM}, §2 (closed-form Gaussian KL)",
          "likelihood.normal_kl", "finite means and log-variances",
          properties=(_K + "test_normal_kl_is_nonnegative_and_zero_only_for_equal_gaussians",
                      _K + "test_normal_kl_matches_numerical_integration"),
          probes=(Probe({"mean1": 0.3, "logvar1": -1.0, "mean2": -0.2, "logvar2": 0.5},
                        {"mean1": 0.3, "logvar1": -1.0, "mean2": -0.2, "logvar2": 0.5}, metric="norm", tol=16.0),)),
        e("likelihood.approx_standard_normal_cdf", "Φ(x) ≈ ½(1 + tanh(√(2/π)(x + 0.044715 x³)))",
          "DDPM authors' and improved-diffusion code (the tanh CDF of L_0)", None, "x ∈ ℝ"),
        e("likelihood.standard_normal_cdf", "Φ(x) = ½ erfc(−x/√2)", "definition of Φ (the exact CDF of L_0's decoder)", None, "x ∈ ℝ",
          note="scipy.special.ndtr"),
        e("likelihood.log_standard_normal_cdf", "log Φ(x)", "definition of Φ (the exact CDF of L_0's decoder)", None, "x ∈ ℝ",
          note="scipy.special.log_ndtr"),
        e("likelihood.discretized_gaussian_log_likelihood", "log ∫_{bin(x)} N(μ, σ²): the decoder p_θ(x_0|x_1)",
          f"{_DDPM}, eq. 13", "likelihood.discretized_gaussian_log_likelihood", "x on the 8-bit grid 2k/255 − 1",
          properties=(_K + "test_decoder_bin_probabilities_sum_to_one",),
          probes=(Probe({"x": np.array([2 * 77 / 255 - 1]), "means": np.array([0.1]), "log_scales": np.array([-2.0])},
                        {"x": 2 * 77 / 255 - 1, "mean": 0.1, "log_scale": -2.0}, metric="norm", tol=64.0),)),
        e("likelihood.prior_kl", "L_T = KL(q(x_T|x_0) ‖ N(0, I))", f"{_DDPM}, eq. 5", "likelihood.prior_kl",
          "x_0 ∈ ℝ, β ∈ (0, 1]^T",
          probes=(Probe({"x0": np.array([0.5]), "betas": _LIN}, {"x0": 0.5, "betas": _LIN}, metric="norm", tol=64.0),)),
        e("likelihood.prior_bpd", "L_T in bits per dimension", f"{_DDPM}, §4", None, "x_0 ∈ ℝ^{B×…}"),
        e("likelihood.vlb_term", "L_{t−1} = KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)); L_0 at t = 0", f"{_DDPM}, eq. 5",
          None, "x_0 on the 8-bit grid, 0 ≤ t ≤ T−1", properties=(_K + "test_kl_term_in_eps_form",)),
        e("likelihood.mean_flat_bpd", "nats per element → bits per dimension", f"{_DDPM}, §4 (bits/dim)", None,
          "finite values, batch-first"),
        e("likelihood.vlb_terms_bpd", "L_vlb = L_T + Σ L_t + L_0", f"{_DDPM}, eq. 5", None, "x_0 on the 8-bit grid"),
        e("likelihood.total_vlb_bpd", "L_vlb of a model given as a function", f"{_DDPM}, eq. 5", None,
          "x_0 on the 8-bit grid"),
        e("likelihood.l_simple", "E‖ε − ε_θ‖²", f"{_DDPM}, eq. 14", None, "finite arrays"),
        e("likelihood.l_simple_per_sample", "mean over non-batch axes of (ε − ε_θ)²", f"{_DDPM}, eq. 14", None, "finite arrays"),
        e("likelihood.l_hybrid", "L_simple + λ L_vlb", f"{_IDDPM}, eq. 16", None, "λ ≥ 0"),
        e("likelihood.eps_kl_weight", "β_t² / (2 σ² α_t (1 − ᾱ_t))", f"{_DDPM}, eq. 12", "likelihood.eps_kl_weight",
          "σ² > 0, 1 ≤ t ≤ T−1", properties=(_K + "test_kl_term_in_eps_form",),
          probes=(Probe({"betas": _LIN, "t": 300, "sigma2": 0.01}, metric="norm", tol=64.0),)),
        e("likelihood.eps_kl_constant", "½(σ̃²/σ² − 1 − log(σ̃²/σ²))", f"{_DDPM}, eq. 8", "likelihood.eps_kl_constant",
          "σ² > 0, 1 ≤ t ≤ T−1", properties=(_K + "test_kl_term_in_eps_form",),
          probes=(Probe({"betas": _LIN, "t": 300, "sigma2": 0.01}, metric="norm", tol=64.0),)),
        e("likelihood.vb_term_scale", "improved-diffusion's factor on L_t [bits/dim]: T/1000 (RESCALED_MSE), T (RESCALED_KL), else 1",
          f"{_IDDPM}, eq. 16; released code (gaussian_diffusion.py, training_losses)", "likelihood.vb_term_scale",
          "T ≥ 1, loss_type ∈ VB_LOSS_TYPES", properties=(_ELBO + "test_rescaled_vb_term_averages_to_lambda_times_the_vlb",),
          probes=(Probe({"num_timesteps": 4000}), Probe({"num_timesteps": 1000, "loss_type": "rescaled_kl"}))),
        e("likelihood.l_hybrid_rescaled", "L_simple + (T/1000) L_t [bits/dim]", f"{_IDDPM}, eq. 16 (λ = 0.001); released code",
          "likelihood.l_hybrid_rescaled", "finite arrays, T ≥ 1",
          properties=(_ELBO + "test_rescaled_vb_term_averages_to_lambda_times_the_vlb",),
          probes=_norm({"eps": _X.reshape(2, 2), "eps_pred": _E.reshape(2, 2), "vb_term_bpd": np.array([0.3, 1.7]),
                        "num_timesteps": 4000}, tol=64.0)),
        e("likelihood.log_q_trajectory", "log q(x_{1:T}|x_0) = Σ_t log N(x_t; √(1−β_t) x_{t−1}, β_t I)", f"{_DDPM}, eqs. 2–3",
          "likelihood.log_q_trajectory", "β ∈ (0, 1]^T, x_ts of shape (T, B, …)",
          properties=(_ELBO + "test_trajectory_log_ratio_is_the_vlb_in_expectation",),
          probes=_norm(_TRAJ_Q, tol=256.0)),
        e("likelihood.log_p_trajectory", "log p_θ(x_{0:T}) = log N(x_T; 0, I) + Σ_t log N(x_{t−1}; μ_θ, Σ_θ) + log p_θ(x_0|x_1)",
          f"{_DDPM}, eqs. 1, 3 and 13", "likelihood.log_p_trajectory", "x_0 on the 8-bit grid, x_ts of shape (T, B, …)",
          properties=(_ELBO + "test_trajectory_log_ratio_is_the_vlb_in_expectation",),
          probes=_norm(_TRAJ_P, tol=256.0)),
        # ---- ncsn --------------------------------------------------------------------------------
        e("ncsn.geometric_sigmas", "σ_i = σ_1 (σ_L/σ_1)^{(i−1)/(L−1)}", "Song & Ermon 2019, §4.1 and §5", "ncsn.geometric_sigmas",
          "σ_1 > σ_L > 0, L ≥ 2", properties=(_N + "test_geometric_ladder_has_a_constant_ratio_and_exact_ends",),
          probes=(Probe({"sigma_max": 1.0, "sigma_min": 0.01, "num_levels": 10}, tol=12.0),
                  Probe({"sigma_max": 50.0, "sigma_min": 0.01, "num_levels": 232}, tol=20.0))),
        e("ncsn.annealed_langevin_dynamics", "for each σ_i: T steps x ← x + (α_i/2) s_θ(x, σ_i) + √α_i z, α_i = ε σ_i²/σ_L²",
          "Song & Ermon 2019, Algorithm 1", "ncsn.annealed_langevin_dynamics", "σ strictly decreasing, ε > 0",
          properties=(_N + "test_annealed_langevin_on_a_gaussian_score_is_the_derived_affine_map",),
          probes=_norm({"score_fn": _gaussian_score, "x_init": _X, "sigmas": np.array([1.0, 0.5, 0.25]),
                        "epsilon": 0.01, "noises": np.linspace(-1.5, 1.5, 24).reshape(3, 2, 4)}, tol=256.0)),
        e("ncsn.dsm_loss_per_sample", "ℓ = ½ ‖s_θ(x̃, σ) + (x̃ − x)/σ²‖²", "Song & Ermon 2019, eqs. 2 and 5",
          "ncsn.dsm_loss_per_sample", "σ > 0, batch first",
          properties=(_N + "test_dsm_loss_expectation_is_the_closed_form_and_the_noisy_score_minimises_it",),
          probes=_norm(_DSM, tol=64.0)),
        e("ncsn.annealed_dsm_loss", "(1/B) Σ_b σ_b² ℓ_b", "Song & Ermon 2019, eq. 6 with λ(σ) = σ² (§4.2)",
          "ncsn.annealed_dsm_loss", "σ > 0, batch first",
          properties=(_N + "test_sigma_squared_weighting_is_half_the_norm_of_sigma_score_plus_z",),
          probes=_norm(_DSM, tol=64.0)),
        # ---- oracles -------------------------------------------------------------------------------
        e("oracles.gaussian_step_map", "one DDPM/DDIM step with the exact Gaussian denoiser, as x′ = A x + B + σ z",
          f"{_DDPM}, Algorithm 2; {_DDIM}, eq. 12; {_IDDPM}, eq. 15", None, "an IsotropicGaussian oracle",
          properties=(_O,), checks=("distribution.step_moments",)),
        e("oracles.gaussian_run_output", "the exact law of a whole run with the Gaussian denoiser",
          f"{_DDPM}, Algorithm 2; {_DDIM}, eq. 12", None, "an IsotropicGaussian oracle", properties=(_O,),
          checks=_RUN_CHECKS),
        # ---- parameterisation ----------------------------------------------------------------------
        e("parameterisation.predict_x0_from_eps", "x̂_0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t", f"{_DDPM}, eq. 4 solved for x_0 (eq. 15)",
          "parameterisation.predict_x0_from_eps", "β ∈ (0, 1)^T", properties=(_Z + "test_eps_x0_round_trip",),
          checks=_STEP_CHECKS,
          probes=_norm(*_PRED)),
        e("parameterisation.predict_eps_from_x0", "ε = (x_t − √ᾱ_t x_0) / √(1−ᾱ_t)", f"{_DDPM}, eq. 4",
          "parameterisation.predict_eps_from_x0", "β ∈ (0, 1]^T", properties=(_Z + "test_eps_x0_round_trip",),
          checks=_STEP_CHECKS,
          probes=_norm({"x_t": _X, "x0": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.v_from_x0_eps", "v = √ᾱ_t ε − √(1−ᾱ_t) x_0", "Salimans & Ho 2022, §4",
          "parameterisation.v_from_x0_eps", "β ∈ (0, 1]^T", properties=(_Z + "test_v_round_trip",),
          probes=_norm({"x0": _X, "eps": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.predict_x0_from_v", "x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v", "Salimans & Ho 2022, §4",
          "parameterisation.predict_x0_from_v", "β ∈ (0, 1]^T", properties=(_Z + "test_v_round_trip",),
          checks=_STEP_CHECKS,
          probes=_norm({"x_t": _X, "v": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.predict_eps_from_v", "ε̂ = √(1−ᾱ_t) x_t + √ᾱ_t v", "Salimans & Ho 2022, §4",
          "parameterisation.predict_eps_from_v", "β ∈ (0, 1]^T", properties=(_Z + "test_v_round_trip",),
          checks=_STEP_CHECKS,
          probes=_norm({"x_t": _X, "v": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.score_from_eps", "∇ log q(x_t) = −ε / √(1−ᾱ_t)", "Dhariwal & Nichol 2021, eq. 11",
          "parameterisation.score_from_eps", "β ∈ (0, 1]^T", properties=(_Z + "test_score_is_minus_eps_over_sigma",),
          probes=_norm({"eps": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.eps_from_score", "ε = −√(1−ᾱ_t) ∇ log q(x_t)", "Dhariwal & Nichol 2021, eq. 11 (inverted)",
          "parameterisation.eps_from_score", "β ∈ (0, 1]^T", properties=(_Z + "test_score_is_minus_eps_over_sigma",),
          probes=_norm({"score": _E, "t": 500, "betas": _LIN})),
        e("parameterisation.ddpm_mean_from_eps", "μ_θ = (x_t − β_t/√(1−ᾱ_t) ε) / √α_t", f"{_DDPM}, eq. 11",
          "parameterisation.ddpm_mean_from_eps", "β ∈ (0, 1)^T",
          properties=(_P + "test_posterior_mean_at_predicted_x0_is_ddpm_eq11",),
          checks=_STEP_CHECKS, probes=_norm(*_PRED)),
        e("parameterisation.split_prediction", "model output (ε, x_0, v or score) → (x̂_0, ε̂)", "Salimans & Ho 2022, §4",
          None, "prediction_type ∈ PREDICTION_TYPES", checks=_STEP_CHECKS),
        # ---- posterior -----------------------------------------------------------------------------
        e("posterior.posterior_coefficients", "(√ᾱ_s β′/(1−ᾱ_t), √(ᾱ_t/ᾱ_s)(1−ᾱ_s)/(1−ᾱ_t), β̃′)",
          f"{_DDPM}, eq. 7; {_IDDPM}, §4 (respaced)", "posterior.posterior_coefficients", "−1 ≤ t_prev < t ≤ T−1",
          properties=(_P + "test_bayes_rule_links_posterior_and_forward",), checks=_STEP_CHECKS,
          probes=(Probe({"betas": _LIN, "t": 600, "t_prev": 580}, select=("coef_x0", "coef_xt", "variance"),
          metric="norm", tol=16.0),)),
        e("posterior.posterior_mean_coef1", "√ᾱ_{t−1} β_t / (1 − ᾱ_t)", f"{_DDPM}, eq. 7", "posterior.posterior_mean_coef1",
          "β ∈ (0, 1)^T", ulp_bound=8.0, audit=("posterior_mean_coef1",),
          properties=(_P + "test_bayes_rule_links_posterior_and_forward",),
          checks=_STEP_CHECKS, probes=_table()),
        e("posterior.posterior_mean_coef2", "√α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)", f"{_DDPM}, eq. 7", "posterior.posterior_mean_coef2",
          "β ∈ (0, 1)^T", ulp_bound=8.0, audit=("posterior_mean_coef2",),
          properties=(_P + "test_bayes_rule_links_posterior_and_forward",),
          checks=_STEP_CHECKS, probes=_table()),
        e("posterior.beta_tilde", "β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t", f"{_DDPM}, eq. 7", "posterior.beta_tilde",
          "β ∈ (0, 1)^T", ulp_bound=8.0, audit=("beta_tilde",),
          properties=(_P + "test_beta_tilde_closed_forms_and_bounds",), checks=_STEP_CHECKS, probes=_table()),
        e("posterior.posterior_variance", "β̃_t (improved-diffusion's name)", f"{_DDPM}, eq. 7", "posterior.beta_tilde",
          "β ∈ (0, 1)^T", ulp_bound=8.0, audit=("beta_tilde",),
          properties=(_P + "test_beta_tilde_closed_forms_and_bounds",), checks=_STEP_CHECKS, probes=_table()),
        e("posterior.posterior_log_variance_clipped", "log β̃_t, with log β̃_1 in place of the singular log β̃_0",
          "DDPM authors' and improved-diffusion code (log β̃, clipped)", "posterior.posterior_log_variance_clipped", "β ∈ (0, 1)^T, T ≥ 2",
          ulp_bound=8.0,
          audit=("posterior_log_variance_clipped",), checks=("single_step.variance_type",), probes=_table()),
        e("posterior.posterior_mean", "μ̃_t = coef1 x_0 + coef2 x_t", f"{_DDPM}, eq. 7", "posterior.posterior_mean",
          "−1 ≤ t_prev < t ≤ T−1", properties=(_P + "test_posterior_mean_at_predicted_x0_is_ddpm_eq11",),
          checks=_STEP_CHECKS,
          probes=_norm({"x0": _X, "x_t": _E, "t": 500, "betas": _LIN})),
        e("posterior.q_posterior", "q(x_{t−1}|x_t,x_0) = N(μ̃_t, β̃_t I)", f"{_DDPM}, eqs. 6–7", None, "−1 ≤ t_prev < t ≤ T−1",
          properties=(_P + "test_bayes_rule_links_posterior_and_forward",), checks=_STEP_CHECKS,
          note="composed of posterior_mean and posterior_coefficients, which have twins"),
        # ---- postprocess ---------------------------------------------------------------------------
        e("postprocess.to_uint8", "the 8-bit grid e_k = 2k/255 − 1 ↦ k", f"{_DDPM}, §3.3 (data scaling)", None,
          "x ∈ [−1, 1]", note="exact integer map; tested exactly in tests/reference/test_postprocess.py"),
        # ---- sampling ------------------------------------------------------------------------------
        e("sampling.ddpm_step", "x_{t−1} = μ_θ(x_t) + σ_t z", f"{_DDPM}, Algorithm 2; {_IDDPM}, §4", "sampling.ddpm_step",
          "−1 ≤ t_prev < t ≤ T−1", properties=(_O,), checks=_STEP_CHECKS + ("distribution.step_moments",),
          probes=_norm({"model_output": _E, "t": 500, "x_t": _X, "betas": _LIN, "noise": _U, "t_prev": 480},
                       select=("prev_sample", "pred_x0", "mean"))),
        e("sampling.generalized_step", "x_s = √ᾱ_s x̂_0 + √(1−ᾱ_s−σ²) ε̂ + σ z", f"{_DDIM}, eq. 12",
          "sampling.generalized_step", "σ² ≤ 1 − ᾱ_s", properties=(_D + "test_eta_zero_is_deterministic",),
          checks=("single_step.eta",),
          probes=_norm({"pred_x0": _X, "pred_eps": _E, "t": 500, "t_prev": 480, "sigma": 0.05, "betas": _LIN, "noise": _U})),
        e("sampling.ddim_step", "eq. 12 with σ = σ_t(η)", f"{_DDIM}, eqs. 12 and 16", "sampling.ddim_step",
          "−1 ≤ t_prev < t ≤ T−1, η ≥ 0", properties=(_D + "test_eta_one_is_the_ddpm_posterior", _O),
          checks=("single_step.eta",),
          probes=_norm({"model_output": _E, "t": 500, "t_prev": 480, "x_t": _X, "betas": _LIN, "eta": 0.5, "noise": _U},
                       select=("prev_sample", "pred_x0", "mean"))),
        e("sampling.ddim_sample_loop", "eq. 12 along a subsequence τ", f"{_DDIM}, §4.2", None,
          "a strictly decreasing subsequence", properties=(_O,), checks=_RUN_CHECKS + ("loop.timesteps",)),
        e("sampling.ddpm_sample_loop", "Algorithm 2, respaced to τ", f"{_DDPM}, Algorithm 2; {_IDDPM}, §4", None,
          "a strictly decreasing subsequence", properties=(_O,),
          checks=_RUN_CHECKS + ("loop.noise", "loop.final_step")),
        # ---- schedules -----------------------------------------------------------------------------
        e("schedules.linear_betas", "β linear from β_1 to β_T", f"{_DDPM}, §4", "schedules.linear_betas", "T ≥ 1",
          ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS, probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.improved_linear_betas", "DDPM's linear end points × 1000/T", f"{_IDDPM}, released code",
          "schedules.improved_linear_betas", "T ≥ 1", ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS,
          probes=(Probe({"num_timesteps": 4000}),)),
        e("schedules.scaled_linear_betas", "√β linear, squared", "latent diffusion (Stable Diffusion) released config",
          "schedules.scaled_linear_betas", "T ≥ 1", ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS,
          probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.quad_betas", "√β linear, squared (\"quad\")", f"{_DDPM}, released code", "schedules.quad_betas",
          "T ≥ 1", ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS, probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.cosine_betas", "ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2); β capped at max_beta",
          f"{_IDDPM}, eq. 17", "schedules.cosine_betas", "T ≥ 1, s ≥ 0, 0 < max_beta < 1", ulp_bound=8.0,
          audit=("beta",),
          properties=(_S + "test_cosine_alpha_bar_is_f_ratio_where_the_cap_is_inactive",
           _S + "test_cosine_cap_is_active_exactly_where_the_raw_beta_exceeds_max_beta"),
          checks=_SCHED_CHECKS, probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.betas_for_alpha_bar", "β_t = min(1 − ᾱ(t/T)/ᾱ((t−1)/T), max_beta)", f"{_IDDPM}, §3.2",
          "schedules.betas_for_alpha_bar", "ᾱ(u) decreasing on [0, 1]", checks=_SCHED_CHECKS,
          probes=(Probe({"alpha_bar_fn": _decaying_alpha_bar, "num_timesteps": 50}, metric="norm", tol=64.0),)),
        e("schedules.sigmoid_betas", "β = σ(linspace(start, end)) scaled to [β_1, β_T]", "diffusers DDPMScheduler (\"sigmoid\")",
          "schedules.sigmoid_betas", "T ≥ 1", ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS,
          probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.const_betas", "β_t = β", f"{_DDPM}, released code", "schedules.const_betas", "T ≥ 1",
          ulp_bound=8.0, audit=("beta",),
          checks=_SCHED_CHECKS, probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.jsd_betas", "β_t = 1/(T − t + 1)", f"{_DDPM}, released code", "schedules.jsd_betas", "T ≥ 1",
          ulp_bound=8.0,
          audit=("beta",), checks=_SCHED_CHECKS, probes=(Probe({"num_timesteps": 1000}),)),
        e("schedules.warmup_betas", "linear warm-up over a fraction F, then β_T", f"{_DDPM}, released code",
          "schedules.warmup_betas", "T ≥ 1, 0 < F ≤ 1", ulp_bound=8.0, audit=("beta",), checks=_SCHED_CHECKS,
          probes=(Probe({"num_timesteps": 1000, "warmup_frac": 0.1}),)),
        e("schedules.custom_betas", "a user's β, validated", "docs/conventions.md", "schedules.custom_betas",
          "0 < β < 1 (the last may be 1)", checks=_SCHED_CHECKS, probes=(Probe({"betas": _SHORT}),)),
        e("schedules.rescale_zero_terminal_snr", "√ᾱ′ = (√ᾱ − √ᾱ_T) √ᾱ_1 / (√ᾱ_1 − √ᾱ_T)", "Lin et al. 2023, Algorithm 1",
          "schedules.rescale_zero_terminal_snr", "β ∈ (0, 1)^T, T ≥ 2",
          properties=(_S + "test_zero_terminal_snr_rescaling",),
          checks=_SCHED_CHECKS, probes=(Probe({"betas": _LIN}, metric="norm", tol=64.0),)),
        e("schedules.get_betas", "a named schedule with its default parameters", "see the named schedule's row", None,
          "name ∈ NAMED_SCHEDULES", checks=_SCHED_CHECKS, note="dispatch only; each named schedule has its own row"),
        # ---- thresholding --------------------------------------------------------------------------
        e("thresholding.clip_x0", "clip(x̂_0, −c, c)", f"{_DDPM}, released sampler (§3.3 data range)", None, "c > 0",
          checks=_STEP_CHECKS),
        e("thresholding.dynamic_threshold_scale", "s = max(quantile_p |x̂_0|, 1) capped at max_value",
          "Saharia et al. 2022 (Imagen), §2.3", "thresholding.dynamic_threshold_scale", "0 < p ≤ 1, max_value ≥ 1",
          probes=(Probe({"x0": 3 * _X.reshape(1, -1), "ratio": 0.9, "max_value": 2.0},
                        {"sample": 3 * _X, "ratio": 0.9, "max_value": 2.0}, metric="norm", tol=16.0),)),
        e("thresholding.dynamic_threshold", "clip(x̂_0, −s, s) / s", "Saharia et al. 2022 (Imagen), §2.3", None,
          "0 < p ≤ 1, max_value ≥ 1", checks=_STEP_CHECKS,
          note="twin: threshold_given_scale with dynamic_threshold_scale, compared in tests/reference/test_thresholding.py"),
        e("thresholding.constrain_x0", "dynamic thresholding, else clipping, else none", "diffusers schedulers", None,
          "the step settings", checks=_STEP_CHECKS),
        # ---- timesteps -----------------------------------------------------------------------------
        e("timesteps.uniform_timesteps", "τ_i = c i, c = ⌊T/N⌋", f"{_DDIM}, §4.2 and §D.2 (\"linear\")", None, "1 ≤ N ≤ T",
          checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.quadratic_timesteps", "τ_i = ⌊c i²⌋", f"{_DDIM}, §4.2 and §D.2 (\"quadratic\")", None, "1 ≤ N ≤ T",
          checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.section_timesteps", "evenly spaced within each section", f"{_IDDPM}, §4", None, "section counts ≤ section sizes",
          checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.leading_timesteps", "multiples of ⌊T/N⌋, reversed, + offset", "Lin et al. 2023, §3.3 and Table 2", None,
          "1 ≤ N ≤ T", checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.trailing_timesteps", "round(T − iT/N) − 1", "Lin et al. 2023, §3.3 and Table 2", None, "1 ≤ N ≤ T",
          checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.linspace_timesteps", "round(linspace(0, T − 1, N)), reversed", "Lin et al. 2023, §3.3 and Table 2", None,
          "1 ≤ N ≤ T", checks=("timesteps.sequence", "loop.timesteps")),
        e("timesteps.timestep_pairs", "(τ_i, τ_{i+1}), then (τ_K, −1)", f"{_DDIM}, eq. 12", None,
          "a strictly decreasing subsequence", checks=("loop.steps",)),
        e("timesteps.respaced_betas", "β′_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}", f"{_IDDPM}, §4", "timesteps.respaced_betas",
          "distinct τ in [0, T−1]", ulp_bound=8.0, audit=("respaced_beta",),
          properties=(_D + "test_eta_one_on_a_subsequence_is_the_respaced_posterior",),
          checks=("single_step.variance_type",),
          probes=(Probe({"betas": _LIN, "timesteps": np.arange(999, -1, -20)}),)),
        e("timesteps.check_subsequence", "validation of a sampling subsequence", "docs/conventions.md", None,
          "1-D, strictly decreasing, in [0, T−1]", note="validation, no equation"),
        e("timesteps.get_timesteps", "a named spacing rule", "see the rule's row", None, "spacing ∈ SPACINGS",
          checks=("timesteps.sequence",), note="dispatch only; each rule has its own row"),
        # ---- variances -----------------------------------------------------------------------------
        e("variances.reverse_variance", "Σ_θ ∈ {β′, β̃′, exp(v log β′ + (1−v) log β̃′), …}",
          f"{_DDPM}, §3.2; {_IDDPM}, eq. 15", "variances.reverse_variance", "−1 ≤ t_prev < t ≤ T−1",
          checks=("single_step.variance_type",),
          probes=(Probe({"betas": _LIN, "t": 500, "variance_type": "fixed_small"},
                        {"betas": _LIN.tolist(), "t": 500, "variance_type": "fixed_small"},
                        select=("variance", "log_variance"), metric="norm", tol=16.0),)),
        e("variances.check_model_var_output", "validation of the model's variance output", f"{_IDDPM}, eq. 15", None,
          "variance_type ∈ VARIANCE_TYPES", note="validation, no equation"),
    )


#: Every entry, in module order (one per public function of each equation module).
REGISTRY: tuple[Entry, ...] = _entries()
_BY_NAME: Mapping[str, Entry] = MappingProxyType({x.function: x for x in REGISTRY})


def entry(function: str) -> Entry:
    """The registry entry of ``function`` (``"module.name"``, e.g. ``"alphas.alpha_bar"``)."""
    if not isinstance(function, str) or function not in _BY_NAME:
        fail("function", function, "expected 'module.name' of a public reference function in the registry")
    return _BY_NAME[function]


def resolve(name: str, *, twin: bool = False) -> Callable[..., Any]:
    """The callable named ``"module.name"`` in :mod:`ddspec.reference` (``twin=True``: in its twin package)."""
    if not isinstance(twin, bool):
        fail("twin", twin, "expected True (the mpmath twin package) or False (the float64 reference)")
    if not isinstance(name, str) or name.count(".") != 1 or not all(p.isidentifier() for p in name.split(".")):
        fail("name", name, "expected 'module.name'")
    mod, attr = name.split(".")
    package = "ddspec.reference.twin" if twin else "ddspec.reference"
    try:
        target = getattr(importlib.import_module(f"{package}.{mod}"), attr)
    except (ImportError, AttributeError):
        fail("name", name, f"no such function in {package}")
    if not callable(target):
        fail("name", name, f"{package}.{name} is not callable")
    return target


def audit_entry(quantity: str) -> Entry:
    """The first entry that ``ddspec audit`` measures as ``quantity`` (a key of ``audit.BOUNDS``)."""
    for x in REGISTRY:
        if isinstance(quantity, str) and quantity in x.audit:
            return x
    fail("quantity", quantity, "expected an audited quantity named in the registry")
    raise AssertionError("unreachable")  # pragma: no cover


def _parts(value: Any, select: tuple[str, ...]) -> list[Any]:
    """The compared parts of a result: the selected attributes, the items of a tuple, or the value."""
    if select and isinstance(value, Mapping) and all(s in value for s in select):
        return [value[s] for s in select]
    if select and all(hasattr(value, s) for s in select):
        return [getattr(value, s) for s in select]
    if isinstance(value, tuple):
        return list(value)
    return [value]


def _flat(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [y for v in value for y in _flat(v)]
    if isinstance(value, np.ndarray):
        return [float(v) for v in value.ravel()]
    return [value]


def _probe_error(x: Entry, probe: Probe) -> float:
    got = _parts(resolve(x.function)(**probe.kwargs), probe.select)
    assert x.twin is not None
    want = _parts(resolve(x.twin, twin=True)(**(probe.kwargs if probe.twin_kwargs is None else probe.twin_kwargs)),
                  probe.select)
    if len(got) != len(want):
        fail("function", x.function, f"result has {len(got)} parts, its twin {len(want)}")
    worst = 0.0
    with mpmath.workdps(60):
        for g, w in zip(got, want):
            a = [float(v) for v in np.asarray(g, dtype=np.float64).ravel()]
            b = [mpmath.mpf(v) for v in _flat(w)]
            if len(b) == 1 and len(a) > 1:
                b = b * len(a)
            if len(a) != len(b):
                fail("function", x.function, f"a part has {len(a)} values, its twin {len(b)}")
            if probe.metric == "ulp":
                worst = max(worst, max((float(abs(mpmath.mpf(p) - q) / float(np.spacing(abs(float(q)))))
                                        if q != 0 else (0.0 if p == 0.0 else np.inf)) for p, q in zip(a, b)))
            else:
                scale = max([mpmath.mpf(1)] + [abs(q) for q in b])
                worst = max(worst, float(max(abs(mpmath.mpf(p) - q) for p, q in zip(a, b)) / (UNIT_ROUNDOFF * scale)))
    return worst


def probe_errors(function: str) -> tuple[tuple[float, float], ...]:
    r"""For each probe of ``function``'s entry: (error, bound) against its twin, in the probe's unit.

    The unit is ULP of the exact value (``metric="ulp"``) or :math:`u\,\max(1, \max|y|)`
    (``metric="norm"``). The twin runs at its default precision (50 digits or more).
    """
    x = entry(function)
    if x.twin is None:
        fail("function", function, "has no twin in the registry")
    return tuple((_probe_error(x, p), p.tol) for p in x.probes)
