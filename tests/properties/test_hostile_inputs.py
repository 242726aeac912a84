r"""Property 12: every reference function returns finite values or raises the documented ValueError.

The contract (``docs/conventions.md``, "Errors"): bad input raises ``ValueError("<argument>=<value>: …")``;
a singular equation raises :class:`ddspec.reference.SingularError` (a ValueError subclass); a reference
function never returns NaN (nor ±inf unless its docstring says so — none does). Any other exception
escaping a reference function (TypeError, IndexError, KeyError, AttributeError, ZeroDivisionError,
OverflowError, FloatingPointError, …) is a bug: the caller cannot tell bad input from a broken
reference.

How. :data:`TABLE` maps every public function (and every validated public class and its methods) of
every public module of ``ddspec.reference`` to a builder of one *valid* call. For each entry, Hypothesis
replaces **one** argument at a time with a hostile value — NaN, ±inf, empty arrays, wrong shapes and
dtypes, ragged lists, complex and object arrays, negative/zero/huge/β ≥ 1 schedules, out-of-range and
non-integer timesteps, ints beyond int64, bools, strings, bytes, None, non-callables and callables that
return garbage, huge finite data that overflow the arithmetic — and asserts: the call raises ValueError
(or a subclass), or it returns a result whose every numeric part is finite. :func:`test_table_covers_every_public_name`
introspects ``__all__`` of every module, so a new public function cannot be left out.

Functions are called through their module attribute at call time (``getattr(module, name)``), so that
``tests/quality/test_property_power_part2.py`` can patch in one that returns NaN silently.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pkgutil
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import ddspec.reference as reference
from ddspec.reference import oracles

# ---------------------------------------------------------------------------------------------------
# valid values
# ---------------------------------------------------------------------------------------------------

T = 6
BETAS = np.array([1e-3, 0.01, 0.05, 0.1, 0.2, 0.3])
X = np.array([[0.3, -1.2, 0.5], [2.0, 0.1, -0.7]])
X2 = np.array([[-0.4, 0.9, 1.5], [0.2, -2.0, 0.6]])
GRID = (2.0 * np.array([[10, 128, 255], [0, 77, 200]]) - 255.0) / 255.0  # on the 8-bit grid


def _x() -> np.ndarray:
    return X.copy()


def _x2() -> np.ndarray:
    return X2.copy()


def _model_eps(x: np.ndarray, t: int) -> np.ndarray:
    return 0.1 * x


def _model_mean_logvar(x: np.ndarray, t: int) -> tuple[np.ndarray, float]:
    return 0.9 * x, -3.0


def _gaussian_score(x: np.ndarray, sigma: float) -> np.ndarray:
    return -(x - 0.5) / (1.0 + sigma * sigma)


def _alpha_bar_fn(u: float) -> float:
    return 1.0 - 0.9 * u


def _point_mass() -> oracles.PointMass:
    return oracles.PointMass(np.array([0.3, -1.0, 2.0]))


def _gauss() -> oracles.IsotropicGaussian:
    return oracles.IsotropicGaussian(np.array([0.3, -1.0, 2.0]), np.array([0.5, 1.0, 0.0]))


def _mixture() -> oracles.GaussianMixture:
    return oracles.GaussianMixture(np.array([0.25, 0.75]), np.array([[0.0, 1.0, -1.0], [0.5, -0.5, 2.0]]), np.array([0.1, 0.3]))


def _audit_rows() -> list:
    return importlib.import_module("ddspec.reference.audit").audit_case("linear", 3, dps=30)


def _common_step() -> dict[str, Any]:
    return dict(clip_sample=True, clip_sample_range=1.5, thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)


# Each builder returns the keyword arguments of one valid call (fresh objects every time).
Builder = Callable[[], dict[str, Any]]

TABLE: dict[str, Builder] = {
    # alphas
    "alphas.alpha_bar_tables": lambda: dict(betas=BETAS.copy()),
    # vocabulary
    "vocabulary.reference_variance_type": lambda: dict(declared="fixed_small"),
    "alphas.alphas": lambda: dict(betas=BETAS.copy()),
    "alphas.alpha_bar": lambda: dict(betas=BETAS.copy()),
    "alphas.alpha_bar_prev": lambda: dict(betas=BETAS.copy()),
    "alphas.one_minus_alpha_bar": lambda: dict(betas=BETAS.copy()),
    "alphas.sqrt_alpha_bar": lambda: dict(betas=BETAS.copy()),
    "alphas.sqrt_one_minus_alpha_bar": lambda: dict(betas=BETAS.copy()),
    "alphas.snr": lambda: dict(betas=BETAS.copy()),
    "alphas.log_snr": lambda: dict(betas=BETAS.copy()),
    "alphas.alpha_bar_at": lambda: dict(betas=BETAS.copy(), t=3),
    "alphas.one_minus_alpha_bar_at": lambda: dict(betas=BETAS.copy(), t=np.array([0, 5, -1])),
    "alphas.alpha_bar_ratio": lambda: dict(betas=BETAS.copy(), t=4, s=1),
    "alphas.one_minus_alpha_bar_ratio": lambda: dict(betas=BETAS.copy(), t=4, s=-1),
    # audit (the accuracy report; dps kept small so a call is fast)
    "audit.audit_case": lambda: dict(schedule="linear", T=3, dps=30, progress=None),
    "audit.run_audit": lambda: dict(cases=(("linear", 3),), dps=30, progress=None),
    "audit.audit_notes": lambda: dict(cases=(("jsd", 4),)),
    "audit.format_table": lambda: dict(rows=_audit_rows()),
    # ddim
    "ddim.ddim_sigma": lambda: dict(betas=BETAS.copy(), t=4, t_prev=2, eta=0.5),
    "ddim.ddim_sigmas": lambda: dict(betas=BETAS.copy(), timesteps=np.array([5, 3, 1]), eta=0.5),
    "ddim.ddim_sigma_max": lambda: dict(betas=BETAS.copy(), t=4, t_prev=2),
    "ddim.q_sigma": lambda: dict(x0=_x(), x_t=_x2(), t=4, t_prev=2, sigma=0.1, betas=BETAS.copy()),
    "ddim.ddim_mean_coefficients": lambda: dict(betas=BETAS.copy(), t=4, t_prev=2, sigma=0.1),
    "ddim.ddim_direction_coefficient": lambda: dict(betas=BETAS.copy(), t=4, t_prev=2, eta=0.7),
    "ddim.q_sigma_forward": lambda: dict(x_prev=_x2(), x0=_x(), t=4, t_prev=2, sigma=0.1, betas=BETAS.copy()),
    "ddim.ddim_gamma_weight": lambda: dict(betas=BETAS.copy(), t=4, t_prev=2, sigma=0.1),
    "ddim.ode_sigma": lambda: dict(betas=BETAS.copy(), t=np.array([5, 0, -1])),
    "ddim.ddim_ode_step": lambda: dict(x_bar=_x(), eps=_x2(), sigma_from=1.5, sigma_to=0.5),
    # forward
    "forward.q_step": lambda: dict(x_prev=_x(), t=2, betas=BETAS.copy()),
    "forward.q_marginal": lambda: dict(x0=_x(), t=2, betas=BETAS.copy()),
    "forward.q_transition": lambda: dict(x_s=_x(), t=4, s=1, betas=BETAS.copy()),
    "forward.q_sample": lambda: dict(x0=_x(), t=2, noise=_x2(), betas=BETAS.copy()),
    # gaussian
    "gaussian.Gaussian": lambda: dict(mean=_x(), variance=np.array(0.5)),
    "gaussian.Gaussian.log_prob": lambda: dict(x=_x2()),
    # guidance
    "guidance.classifier_guided_mean": lambda: dict(mean=_x(), variance=0.1, grad_log_p_y=_x2(), scale=2.0),
    "guidance.classifier_guided_eps": lambda: dict(eps=_x(), grad_log_p_y=_x2(), t=3, betas=BETAS.copy(), scale=2.0),
    "guidance.classifier_free_guidance": lambda: dict(eps_uncond=_x(), eps_cond=_x2(), scale=7.5),
    # interpolation
    "interpolation.slerp": lambda: dict(z0=_x(), z1=_x2(), alpha=0.3),
    # inversion
    "inversion.ddim_invert_step": lambda: dict(eps=_x2(), t_from=1, t_to=3, x=_x(), betas=BETAS.copy()),
    "inversion.ddim_invert": lambda: dict(model_fn=_model_eps, x0=_x(), timesteps=np.array([0, 2, 4]), betas=BETAS.copy(), model_at="source"),
    # langevin
    "langevin.annealed_langevin_step": lambda: dict(x=_x(), score=_x2(), step_size=0.01, noise=_x2()),
    "langevin.langevin_step_size": lambda: dict(sigma_i=0.5, sigma_L=0.01, epsilon=2e-5),
    # likelihood
    "likelihood.normal_kl": lambda: dict(mean1=_x(), logvar1=np.full((2, 3), -1.0), mean2=_x2(), logvar2=0.5),
    "likelihood.approx_standard_normal_cdf": lambda: dict(x=_x()),
    "likelihood.standard_normal_cdf": lambda: dict(x=_x()),
    "likelihood.log_standard_normal_cdf": lambda: dict(x=_x()),
    "likelihood.discretized_gaussian_log_likelihood": lambda: dict(x=GRID.copy(), means=0.5 * _x(), log_scales=np.full((2, 3), -2.0), cdf="exact"),
    "likelihood.prior_kl": lambda: dict(x0=GRID.copy(), betas=BETAS.copy()),
    "likelihood.prior_bpd": lambda: dict(x0=GRID.copy(), betas=BETAS.copy()),
    "likelihood.vlb_term": lambda: dict(x0=GRID.copy(), x_t=_x(), t=2, model_mean=_x2(), model_log_variance=-3.0, betas=BETAS.copy(), cdf="exact"),
    "likelihood.mean_flat_bpd": lambda: dict(values=np.abs(_x())),
    "likelihood.vlb_terms_bpd": lambda: dict(
        x0=GRID.copy(), x_ts=np.stack([_x()] * T), model_means=np.stack([_x2()] * T), model_log_variances=np.full(T, -3.0),
        betas=BETAS.copy(), cdf="exact"),
    "likelihood.total_vlb_bpd": lambda: dict(x0=GRID.copy(), model_fn=_model_mean_logvar, betas=BETAS.copy(), noises=np.stack([_x2()] * T), cdf="tanh"),
    "likelihood.l_simple": lambda: dict(eps=_x(), eps_pred=_x2()),
    "likelihood.l_simple_per_sample": lambda: dict(eps=_x(), eps_pred=_x2()),
    "likelihood.l_hybrid": lambda: dict(eps=_x(), eps_pred=_x2(), vlb_term_value=np.array([0.1, 0.2]), lam=0.001),
    "likelihood.eps_kl_weight": lambda: dict(betas=BETAS.copy(), t=3, sigma2=0.05),
    "likelihood.eps_kl_constant": lambda: dict(betas=BETAS.copy(), t=3, sigma2=0.05),
    "likelihood.vb_term_scale": lambda: dict(num_timesteps=4000, loss_type="rescaled_mse"),
    "likelihood.l_hybrid_rescaled": lambda: dict(eps=_x(), eps_pred=_x2(), vb_term_bpd=np.array([0.1, 0.2]), num_timesteps=4000),
    "likelihood.log_q_trajectory": lambda: dict(x0=GRID.copy(), x_ts=np.stack([_x()] * T), betas=BETAS.copy()),
    "likelihood.log_p_trajectory": lambda: dict(
        x0=GRID.copy(), x_ts=np.stack([_x()] * T), model_means=np.stack([_x2()] * T), model_log_variances=np.full(T, -3.0),
        betas=BETAS.copy(), cdf="exact"),
    # ncsn
    "ncsn.geometric_sigmas": lambda: dict(sigma_max=1.0, sigma_min=0.01, num_levels=10),
    "ncsn.annealed_langevin_dynamics": lambda: dict(
        score_fn=_gaussian_score, x_init=_x(), sigmas=np.array([1.0, 0.5, 0.1]), epsilon=1e-3, noises=np.stack([np.stack([_x2()] * 2)] * 3)),
    "ncsn.dsm_loss_per_sample": lambda: dict(score=_x(), x=_x2(), x_noisy=_x2() + 0.1, sigma=np.array([0.5, 0.1])),
    "ncsn.annealed_dsm_loss": lambda: dict(score=_x(), x=_x2(), x_noisy=_x2() + 0.1, sigma=0.5, weight_power=2.0),
    # oracles (classes, their methods, the Gaussian propagation)
    "oracles.PointMass": lambda: dict(point=np.array([0.3, -1.0, 2.0])),
    "oracles.PointMass.x0": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.PointMass.eps": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.PointMass.v": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.PointMass.marginal": lambda: dict(t=3, betas=BETAS.copy()),
    "oracles.IsotropicGaussian": lambda: dict(mean=np.array([0.3, -1.0, 2.0]), variance=np.array([0.5, 1.0, 0.0])),
    "oracles.IsotropicGaussian.x0": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.IsotropicGaussian.eps": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.IsotropicGaussian.v": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.IsotropicGaussian.marginal": lambda: dict(t=3, betas=BETAS.copy()),
    "oracles.GaussianMixture": lambda: dict(weights=np.array([0.25, 0.75]), means=np.array([[0.0, 1.0, -1.0], [0.5, -0.5, 2.0]]), variances=np.array([0.1, 0.3])),
    "oracles.GaussianMixture.responsibilities": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.GaussianMixture.x0": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.GaussianMixture.eps": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.GaussianMixture.v": lambda: dict(x_t=_x(), t=3, betas=BETAS.copy()),
    "oracles.GaussianMixture.marginal_log_prob": lambda: dict(x=_x(), t=3, betas=BETAS.copy()),
    "oracles.gaussian_step_map": lambda: dict(oracle=_gauss(), betas=BETAS.copy(), t=4, t_prev=2, family="ddim", eta=0.5, variance_type="fixed_small"),
    "oracles.gaussian_run_output": lambda: dict(
        oracle=_gauss(), betas=BETAS.copy(), timesteps=np.array([5, 3, 1]), family="ddpm", eta=0.0, variance_type="fixed_large",
        final_alpha_bar_is_one=True, prior_mean=0.0, prior_variance=1.0),
    # parameterisation
    "parameterisation.predict_x0_from_eps": lambda: dict(x_t=_x(), eps=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.predict_eps_from_x0": lambda: dict(x_t=_x(), x0=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.v_from_x0_eps": lambda: dict(x0=_x(), eps=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.predict_x0_from_v": lambda: dict(x_t=_x(), v=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.predict_eps_from_v": lambda: dict(x_t=_x(), v=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.score_from_eps": lambda: dict(eps=_x(), t=3, betas=BETAS.copy()),
    "parameterisation.eps_from_score": lambda: dict(score=_x(), t=3, betas=BETAS.copy()),
    "parameterisation.ddpm_mean_from_eps": lambda: dict(x_t=_x(), eps=_x2(), t=3, betas=BETAS.copy()),
    "parameterisation.split_prediction": lambda: dict(model_output=_x2(), x_t=_x(), t=3, betas=BETAS.copy(), prediction_type="v_prediction"),
    # posterior
    "posterior.posterior_coefficients": lambda: dict(betas=BETAS.copy(), t=4, t_prev=1),
    "posterior.posterior_mean_coef1": lambda: dict(betas=BETAS.copy()),
    "posterior.posterior_mean_coef2": lambda: dict(betas=BETAS.copy()),
    "posterior.beta_tilde": lambda: dict(betas=BETAS.copy()),
    "posterior.posterior_variance": lambda: dict(betas=BETAS.copy()),
    "posterior.posterior_log_variance_clipped": lambda: dict(betas=BETAS.copy()),
    "posterior.posterior_mean": lambda: dict(x0=_x(), x_t=_x2(), t=4, betas=BETAS.copy(), t_prev=None),
    "posterior.q_posterior": lambda: dict(x0=_x(), x_t=_x2(), t=4, betas=BETAS.copy(), t_prev=2),
    # postprocess
    "postprocess.to_uint8": lambda: dict(x=np.clip(_x(), -1, 1), rounding="round"),
    # sampling
    "sampling.ddpm_step": lambda: dict(
        model_output=_x2(), t=4, x_t=_x(), betas=BETAS.copy(), noise=_x2(), t_prev=2, prediction_type="epsilon",
        variance_type="learned_range", model_var_output=np.clip(_x2(), -1, 1), **_common_step()),
    "sampling.generalized_step": lambda: dict(pred_x0=_x(), pred_eps=_x2(), t=4, t_prev=2, sigma=0.1, betas=BETAS.copy(), noise=_x2()),
    "sampling.ddim_step": lambda: dict(
        model_output=_x2(), t=4, t_prev=2, x_t=_x(), betas=BETAS.copy(), eta=0.5, noise=_x2(), prediction_type="sample",
        use_clipped_model_output=True, **_common_step()),
    "sampling.ddim_sample_loop": lambda: dict(
        model_fn=_model_eps, x_T=_x(), timesteps=np.array([5, 3, 1]), betas=BETAS.copy(), eta=1.0, noises=np.stack([_x2()] * 3),
        prediction_type="epsilon", final_alpha_bar_is_one=False, use_clipped_model_output=False, **_common_step()),
    "sampling.ddpm_sample_loop": lambda: dict(
        model_fn=_model_eps, x_T=_x(), timesteps=np.array([5, 3, 1]), betas=BETAS.copy(), noises=[_x2(), _x2(), None],
        variance_type="fixed_large", prediction_type="epsilon", **_common_step()),
    # registry (the declarative index) and traceability (its generated table)
    "registry.entry": lambda: dict(function="alphas.alpha_bar"),
    "registry.resolve": lambda: dict(name="posterior.beta_tilde", twin=True),
    "registry.audit_entry": lambda: dict(quantity="beta_tilde"),
    "registry.probe_errors": lambda: dict(function="alphas.alpha_bar_ratio"),
    "traceability.render": lambda: dict(entries=importlib.import_module("ddspec.reference.registry").REGISTRY[:3]),
    # schedules
    "schedules.linear_betas": lambda: dict(num_timesteps=10, beta_start=1e-4, beta_end=0.02),
    "schedules.improved_linear_betas": lambda: dict(num_timesteps=30),
    "schedules.scaled_linear_betas": lambda: dict(num_timesteps=10, beta_start=0.00085, beta_end=0.012),
    "schedules.quad_betas": lambda: dict(num_timesteps=10, beta_start=1e-4, beta_end=0.02),
    "schedules.cosine_betas": lambda: dict(num_timesteps=10, s=0.008, max_beta=0.999),
    "schedules.betas_for_alpha_bar": lambda: dict(alpha_bar_fn=_alpha_bar_fn, num_timesteps=10, max_beta=0.999),
    "schedules.sigmoid_betas": lambda: dict(num_timesteps=10, beta_start=1e-4, beta_end=0.02, start=-6.0, end=6.0),
    "schedules.const_betas": lambda: dict(num_timesteps=10, beta=0.02),
    "schedules.jsd_betas": lambda: dict(num_timesteps=10),
    "schedules.warmup_betas": lambda: dict(num_timesteps=10, warmup_frac=0.5, beta_start=1e-4, beta_end=0.02),
    "schedules.custom_betas": lambda: dict(betas=BETAS.copy()),
    "schedules.rescale_zero_terminal_snr": lambda: dict(betas=BETAS.copy()),
    "schedules.get_betas": lambda: dict(name="cosine", num_timesteps=10),
    # thresholding
    "thresholding.clip_x0": lambda: dict(x0=_x(), clip_range=1.0),
    "thresholding.dynamic_threshold_scale": lambda: dict(x0=3 * _x(), ratio=0.9, max_value=2.0),
    "thresholding.dynamic_threshold": lambda: dict(x0=3 * _x(), ratio=0.9, max_value=2.0),
    "thresholding.constrain_x0": lambda: dict(
        x0=3 * _x(), clip_sample=True, clip_sample_range=1.0, thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
    # timesteps
    "timesteps.uniform_timesteps": lambda: dict(num_train_timesteps=12, num_inference_steps=4, strict=True),
    "timesteps.quadratic_timesteps": lambda: dict(num_train_timesteps=12, num_inference_steps=3, strict=False),
    "timesteps.section_timesteps": lambda: dict(num_train_timesteps=12, section_counts=[2, 3]),
    "timesteps.leading_timesteps": lambda: dict(num_train_timesteps=12, num_inference_steps=4, steps_offset=1),
    "timesteps.trailing_timesteps": lambda: dict(num_train_timesteps=12, num_inference_steps=5),
    "timesteps.linspace_timesteps": lambda: dict(num_train_timesteps=12, num_inference_steps=5),
    "timesteps.timestep_pairs": lambda: dict(timesteps=np.array([5, 3, 1]), num_train_timesteps=6),
    "timesteps.respaced_betas": lambda: dict(betas=BETAS.copy(), timesteps=np.array([5, 3, 1])),
    "timesteps.check_subsequence": lambda: dict(timesteps=np.array([5, 3, 1]), num_train_timesteps=6, name="timesteps"),
    "timesteps.get_timesteps": lambda: dict(spacing="leading", num_train_timesteps=12, num_inference_steps=4, steps_offset=1),
    # variances
    "variances.reverse_variance": lambda: dict(
        betas=BETAS.copy(), t=0, variance_type="learned_range", t_prev=-1, t_next=3, model_var_output=np.clip(_x2(), -1, 1)),
    "variances.check_model_var_output": lambda: dict(variance_type="learned", model_var_output=_x2()),
}

#: Instances whose methods the table calls ("module.Class.method" keys).
INSTANCES: dict[str, Callable[[], Any]] = {
    "gaussian.Gaussian": lambda: importlib.import_module("ddspec.reference.gaussian").Gaussian(_x(), np.array(0.5)),
    "oracles.PointMass": _point_mass,
    "oracles.IsotropicGaussian": _gauss,
    "oracles.GaussianMixture": _mixture,
}

#: Public names of ``__all__`` that are not in the table, each with the reason.
EXEMPT: dict[str, str] = {
    "__init__.SingularError": "the exception type itself",
    "audit.BOUNDS": "constant (dict of documented ULP bounds)",
    "audit.STANDARD_CASES": "constant",
    "audit.QUICK_CASES": "constant",
    "audit.Progress": "type alias of the progress callback",
    "audit.AuditRow": "result container built by audit_case; takes no user input",
    "audit.main": "command-line entry point: argparse turns bad argv into SystemExit(2) with a usage line (the CLI "
                  "contract); its numeric work is audit_case/run_audit/format_table, which are in the table",
    "interpolation.SMALL_ANGLE": "constant",
    "inversion.MODEL_AT": "constant",
    "alphas.AlphaBarTables": "result container (frozen dataclass) built by alpha_bar_tables; takes no user input",
    "validation.SingularError": "exception class",
    "validation.fail": "raises ValueError by design (the error constructor); tested in tests/reference/test_validate.py",
    "validation.as_array": "an argument validator: its contract (ValueError naming the argument) is tests/reference/test_validate.py",
    "validation.as_betas": "an argument validator (tests/reference/test_validate.py)",
    "validation.as_timestep": "an argument validator (tests/reference/test_validate.py)",
    "validation.as_timesteps": "an argument validator (tests/reference/test_validate.py)",
    "validation.as_int": "an argument validator (tests/reference/test_validate.py)",
    "validation.as_scalar": "an argument validator (tests/reference/test_validate.py)",
    "validation.check_same_shape": "an argument validator (tests/reference/test_validate.py)",
    "validation.check_finite_result": "the result guard (raises SingularError by design; tests/reference/test_validate.py)",
    # reference/vocabulary.py (the lead's one vocabulary, issue 8): enums and their value tuples
    **{f"vocabulary.{name}": "enum of the vocabulary (str values; no computation)" for name in (
        "Family", "PredictionType", "VarianceType", "DeclaredVarianceType", "TimestepSpacing", "BetaSchedule", "X0Constraint")},
    **{f"vocabulary.{name}": "constant (the values of a vocabulary enum)" for name in (
        "FAMILIES", "PREDICTION_TYPES", "VARIANCE_TYPES", "DECLARED_VARIANCE_TYPES", "NAMED_SPACINGS", "TIMESTEP_SPACINGS",
        "NAMED_BETA_SCHEDULES", "BETA_SCHEDULES", "X0_CONSTRAINTS", "LEARNED_VARIANCE_TYPES")},
    "likelihood.VLBTerms": "result container (frozen dataclass) built by vlb_terms_bpd",
    "likelihood.VB_LOSS_TYPES": "constant (improved-diffusion's loss-type names)",
    "oracles.AffineStep": "result container (frozen dataclass) built by gaussian_step_map",
    "parameterisation.PREDICTION_TYPES": "constant",
    "parameterisation.Prediction": "result container (frozen dataclass) built by split_prediction",
    "posterior.PosteriorCoefficients": "result container (frozen dataclass) built by posterior_coefficients",
    "postprocess.ROUNDINGS": "constant",
    "sampling.StepResult": "result container (frozen dataclass) built by the step functions",
    "sampling.SampleTrajectory": "result container (frozen dataclass) built by the loops",
    "registry.Probe": "declarative record (frozen dataclass) of the registry's probe points",
    "registry.Entry": "declarative record (frozen dataclass) of one registry row",
    "registry.REGISTRY": "constant (the registry itself)",
    "registry.TOOLING_MODULES": "constant",
    "registry.UNIT_ROUNDOFF": "constant",
    "traceability.main": "command-line entry point (python -m ddspec.reference.traceability); takes no options "
                         "and rejects any with exit status 2; its work is render, which is in the table",
    "schedules.NAMED_SCHEDULES": "constant mapping to builders that are in the table (reached through get_betas)",
    "timesteps.SPACINGS": "constant mapping to rules that are in the table (reached through get_timesteps)",
    "variances.VARIANCE_TYPES": "constant",
    "variances.LEARNED_VARIANCE_TYPES": "constant",
    "variances.ReverseVariance": "result container (frozen dataclass) built by reverse_variance",
}

#: Arguments not corrupted, with the reason.
NOT_CORRUPTED: dict[str, set[str]] = {
    # progress is a user callback and stream a file object, passed through to print(); a bad one fails in
    # the caller's own object, not in the reference. dps is the twin's working precision: a huge value
    # makes mpmath work (correctly) for an unbounded time.
    "audit.audit_case": {"progress", "dps"},
    "audit.run_audit": {"dps"},
}


@functools.lru_cache(maxsize=1)
def public_modules() -> dict[str, Any]:
    """Every public module of ddspec.reference (names without a leading underscore; the twin package is
    the mpmath test oracle, not part of the float64 API, and is excluded), plus the package itself."""
    mods = {"__init__": reference}
    for info in pkgutil.iter_modules(reference.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        mods[info.name] = importlib.import_module(f"ddspec.reference.{info.name}")
    return mods


def test_table_covers_every_public_name() -> None:
    """Introspection: every name in every public module's ``__all__`` is in TABLE or EXEMPT (with a reason)."""
    missing, stale = [], []
    for mod_name, mod in public_modules().items():
        names = getattr(mod, "__all__", None)
        assert names is not None, f"module {mod_name} has no __all__"
        for name in names:
            key = f"{mod_name}.{name}"
            if key not in TABLE and key not in EXEMPT:
                missing.append(key)
    for key in list(TABLE) + list(EXEMPT):
        mod_name, name = key.split(".", 1)[0], key.split(".")[1]
        mod = public_modules().get(mod_name)
        if mod is None or name not in getattr(mod, "__all__", []):
            stale.append(key)
    assert not missing, f"public names without a hostile-input entry: {missing}"
    assert not stale, f"table entries for names that are not public (any more): {stale}"


# ---------------------------------------------------------------------------------------------------
# calling and judging
# ---------------------------------------------------------------------------------------------------


def _target(key: str) -> Callable[..., Any]:
    """The callable for a table key, looked up through the module attribute at call time."""
    parts = key.split(".")
    mod = public_modules()[parts[0]]
    if len(parts) == 2:
        return getattr(mod, parts[1])
    return getattr(INSTANCES[f"{parts[0]}.{parts[1]}"](), parts[2])


def _non_finite(value: Any, path: str = "result", depth: int = 0) -> str | None:
    """The path of the first non-finite number in ``value`` (arrays, scalars, containers, dataclasses), or None."""
    if depth > 6 or value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return None
    if isinstance(value, (float, np.floating, complex, np.complexfloating)):
        return None if np.isfinite(value) else f"{path} = {value!r}"
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
            return f"{path} (array {value.dtype}{value.shape}) contains {value[~np.isfinite(value)][:3]!r}"
        if value.dtype == object:
            for i, v in enumerate(value.ravel()[:64]):
                bad = _non_finite(v, f"{path}.flat[{i}]", depth + 1)
                if bad:
                    return bad
        return None
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            bad = _non_finite(v, f"{path}[{i}]", depth + 1)
            if bad:
                return bad
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _non_finite(v, f"{path}[{k!r}]", depth + 1)
            if bad:
                return bad
        return None
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            bad = _non_finite(getattr(value, f.name), f"{path}.{f.name}", depth + 1)
            if bad:
                return bad
        return None
    return None


def call_and_judge(key: str, kwargs: dict[str, Any]) -> str:
    """Call the entry; return "raised ValueError" / "finite"; raise AssertionError for a contract violation."""
    fn = _target(key)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # judge values, not numpy's warnings (and not pytest's -W setting)
            result = fn(**kwargs)
    except ValueError:
        return "raised ValueError"
    except Exception as exc:  # noqa: BLE001 - the point of the property
        raise AssertionError(f"{key} raised {type(exc).__name__}: {exc}"[:2000]) from exc
    bad = _non_finite(result)
    if bad is not None:
        raise AssertionError(f"{key} returned a non-finite value silently: {bad}"[:2000])
    return "finite"


@pytest.mark.parametrize("key", sorted(TABLE))
def test_table_builders_make_valid_calls(key: str) -> None:
    """Sanity: each builder's call succeeds with a finite result (so a hostile call differs in one argument only)."""
    assert call_and_judge(key, TABLE[key]()) == "finite"


# ---------------------------------------------------------------------------------------------------
# hostile values
# ---------------------------------------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")


def _first(a: np.ndarray, value: float) -> np.ndarray:
    b = np.array(a, dtype=np.float64, copy=True)
    if b.size:
        b.flat[0] = value
    return b


def _nan_fn(*args: Any, **kwargs: Any) -> float:
    return NAN


def _str_fn(*args: Any, **kwargs: Any) -> str:
    return "not a number"


def _none_fn(*args: Any, **kwargs: Any) -> None:
    return None


def _inf_array_fn(*args: Any, **kwargs: Any) -> np.ndarray:
    return np.full((2, 3), INF)


def _wrong_shape_fn(*args: Any, **kwargs: Any) -> np.ndarray:
    return np.zeros((5, 7))


def _pair_nan_fn(*args: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    return np.full((2, 3), NAN), -3.0


# Hostile replacements that do not depend on the valid value.
GENERIC: dict[str, Callable[[Any], Any]] = {
    "None": lambda v: None,
    "True": lambda v: True,
    "False": lambda v: False,
    "np.bool_(True)": lambda v: np.bool_(True),
    "'a'": lambda v: "a",
    "''": lambda v: "",
    "b'x'": lambda v: b"x",
    "1j": lambda v: 1j,
    "[]": lambda v: [],
    "[[]]": lambda v: [[]],
    "[1, 'a']": lambda v: [1, "a"],
    "ragged [[1, 2], [3]]": lambda v: [[1.0, 2.0], [3.0]],
    "object()": lambda v: object(),
    "{}": lambda v: {},
    "nan": lambda v: NAN,
    "inf": lambda v: INF,
    "-inf": lambda v: -INF,
    "np.float32(nan)": lambda v: np.float32(NAN),
    "0": lambda v: 0,
    "-1": lambda v: -1,
    "-2": lambda v: -2,
    "2**62": lambda v: 2**62,
    "2**70": lambda v: 2**70,
    "-2**70": lambda v: -(2**70),
    "0.5": lambda v: 0.5,
    "-0.5": lambda v: -0.5,
    "1e308": lambda v: 1e308,
    "-1e308": lambda v: -1e308,
    "5e-324": lambda v: 5e-324,
    "Fraction(1, 3)": lambda v: Fraction(1, 3),
    "np.array([])": lambda v: np.array([]),
    "np.array([[nan]])": lambda v: np.array([[NAN]]),
    "np.array(['a'])": lambda v: np.array(["a"]),
    "np.array([1+2j])": lambda v: np.array([1 + 2j]),
    "np.array([1.0], dtype=object)": lambda v: np.array([1.0], dtype=object),
    "np.array([True, False])": lambda v: np.array([True, False]),
    "np.datetime64": lambda v: np.datetime64("2020-01-01"),
    "betas with a 0": lambda v: np.array([0.1, 0.0, 0.2]),
    "betas with a 1 not last": lambda v: np.array([0.1, 1.0, 0.2]),
    "betas [1.0]": lambda v: np.array([1.0]),
    "betas ending in 1": lambda v: np.array([0.1, 0.2, 1.0]),
    "betas [2.0, 0.5]": lambda v: np.array([2.0, 0.5]),
    "betas [-0.1, 0.5]": lambda v: np.array([-0.1, 0.5]),
    "betas subnormal": lambda v: np.array([5e-324, 1e-310, 0.5]),
    "betas near 1": lambda v: np.array([1.0 - 2.0**-53, 1.0 - 2.0**-52, 0.5]),
    "callable -> nan": lambda v: _nan_fn,
    "callable -> str": lambda v: _str_fn,
    "callable -> None": lambda v: _none_fn,
    "callable -> inf array": lambda v: _inf_array_fn,
    "callable -> wrong shape": lambda v: _wrong_shape_fn,
    "callable -> (nan array, -3)": lambda v: _pair_nan_fn,
    "oracle: a PointMass": lambda v: _point_mass(),
    "oracle: a mixture": lambda v: _mixture(),
}


def _as_float_array(v: Any) -> np.ndarray | None:
    try:
        a = np.asarray(v)
    except Exception:  # noqa: BLE001
        return None
    if a.dtype.kind not in "biuf" or a.dtype == bool:
        return None
    return a.astype(np.float64)


def _mutations(v: Any) -> dict[str, Callable[[Any], Any]]:
    """Hostile variants of the valid value v (one argument's worth)."""
    out: dict[str, Callable[[Any], Any]] = {}
    a = _as_float_array(v)
    if a is not None and a.ndim >= 1:
        out.update({
            "first element nan": lambda v: _first(a, NAN),
            "first element inf": lambda v: _first(a, INF),
            "first element -inf": lambda v: _first(a, -INF),
            "first element 0": lambda v: _first(a, 0.0),
            "first element 1": lambda v: _first(a, 1.0),
            "first element -1": lambda v: _first(a, -1.0),
            "first element 1e308": lambda v: _first(a, 1e308),
            "negated": lambda v: -a,
            "times 1e300": lambda v: a * 1e300 + 1e300,
            "times 1e-300": lambda v: a * 1e-300,
            "empty of its ndim": lambda v: np.zeros((0,) * max(a.ndim, 1)),
            "extra leading axis": lambda v: a[None],
            "extra trailing axis": lambda v: a[..., None],
            "flattened": lambda v: a.ravel(),
            "truncated": lambda v: a.ravel()[:-1],
            "doubled": lambda v: np.concatenate([a.ravel(), a.ravel()]),
            "transposed": lambda v: a.T.copy() if a.ndim > 1 else a[:, None].copy(),
            "as complex": lambda v: a.astype(np.complex128) + 1j,
            "as object": lambda v: a.astype(object),
            "as str": lambda v: a.astype(str),
            "as bool": lambda v: a.astype(bool),
            "as float32": lambda v: a.astype(np.float32),
            "as nested list": lambda v: a.tolist(),
            "scalar (first element)": lambda v: float(a.ravel()[0]) if a.size else 0.0,
            "0-d array": lambda v: np.array(a.ravel()[0] if a.size else 0.0),
        })
    if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
        iv = int(v)
        out.update({
            "int + 1": lambda v: iv + 1,
            "int - 1": lambda v: iv - 1,
            "int + 1000": lambda v: iv + 1000,
            "-int - 2": lambda v: -iv - 2,
            "as float": lambda v: float(iv),
            "as float + 0.5": lambda v: iv + 0.5,
            "as np.int64": lambda v: np.int64(iv),
            "as np.uint64": lambda v: np.uint64(abs(iv)),
            "as np.float64": lambda v: np.float64(iv),
            "as str": lambda v: str(iv),
            "as 1-element array": lambda v: np.array([iv]),
        })
    if isinstance(v, (float, np.floating)) or (isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind == "f"):
        fv = float(v)
        out.update({
            "negated": lambda v: -fv,
            "times 1e300": lambda v: fv * 1e300 + 1e300,
            "plus 1": lambda v: fv + 1.0,
            "as 1-element array": lambda v: np.array([fv]),
            "as str": lambda v: str(fv),
            "as complex": lambda v: complex(fv, 1.0),
        })
    if isinstance(v, str):
        out.update({
            "upper-case": lambda v: v.upper(),
            "with a space": lambda v: v + " ",
            "as bytes": lambda v: v.encode(),
            "as list of chars": lambda v: list(v),
        })
    if isinstance(v, (list, tuple)) and v and not isinstance(v[0], (int, float, np.number)):
        out.update({
            "empty": lambda v: type(v)(),
            "doubled": lambda v: list(v) + list(v),
            "first replaced by None": lambda v: [None] + list(v)[1:],
            "first replaced by 'x'": lambda v: ["x"] + list(v)[1:],
        })
    return out


def _hostile(data: st.DataObject, key: str, kwargs: dict[str, Any]) -> tuple[str, str, Any]:
    names = sorted(set(kwargs) - NOT_CORRUPTED.get(key, set()))
    arg = data.draw(st.sampled_from(names), label="argument")
    pool = {**GENERIC, **_mutations(kwargs[arg])}
    how = data.draw(st.sampled_from(sorted(pool)), label="hostile value")
    return arg, how, pool[how](kwargs[arg])


@settings(max_examples=max(20, settings().max_examples))
@pytest.mark.parametrize("key", sorted(TABLE))
@given(data=st.data())
def test_hostile_inputs_raise_value_error_or_return_finite(key: str, data: st.DataObject) -> None:
    r"""Replace one argument of a valid call by a hostile value: ValueError (or SingularError), or a finite result.

    Source of the contract: ``docs/conventions.md`` ("Errors": ValueError naming the argument;
    SingularError for a singular equation; never NaN, ±inf only where documented). TypeError,
    IndexError, KeyError, AttributeError, ZeroDivisionError, OverflowError, FloatingPointError or a
    silent NaN/inf are failures.
    """
    kwargs = TABLE[key]()
    arg, how, value = _hostile(data, key, kwargs)
    kwargs[arg] = value
    note(f"{key}(...) with {arg} = {how}")
    call_and_judge(key, kwargs)


def test_the_judge_finds_non_finite_values() -> None:
    """Self-check of the judge: NaN/inf anywhere in a nested result is found, finite results pass."""
    assert _non_finite(np.array([1.0, np.nan])) is not None
    assert _non_finite((1.0, [np.array(2.0), {"a": math.inf}])) is not None
    assert _non_finite(public_modules()["gaussian"].Gaussian(np.zeros(2), np.array(1.0))) is None
    assert _non_finite(np.array([1, 2], dtype=np.uint8)) is None
