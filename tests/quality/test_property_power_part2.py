r"""Every property of ``tests/properties`` (part 2: inversion, output laws, KL, schedules, guidance, hostile
inputs) proves its power: a deliberately broken reference function makes it FAIL.

The approach is that of ``test_property_power_part1.py``:

* For each identity, a fixture patches a broken version into the **module attribute** that the property
  calls (``inversion.ddim_invert``, ``sampling.ddim_step``, ``likelihood.normal_kl``, …) with pytest's
  ``monkeypatch`` (undone after the test). The properties look every reference function up through its
  module at call time, and the reference's own callers look their helpers up as module globals
  (``oracles.gaussian_run_output`` calls ``gaussian_step_map``), so the patch reaches the property.
* The broken functions are written here from the equations *with the bug*, on top of the original
  reference functions captured when this module is imported (before any patch).
* The property is re-run afresh from ``test_fn.hypothesis.inner_test`` (Hypothesis' documented handle on
  the undecorated test) under deterministic power settings — ``derandomize=True``, no database, no
  shrinking, one error — and must raise ``AssertionError``: its own assertion, not an exception of the
  reference. Nothing of the collected test is mutated.
* A control re-runs every property unpatched under the same settings and must pass, so each failure
  above is the planted bug's.

The property-12 test (hostile inputs) is parametrized by the table entry; it is re-run for a sample of
entries, with the entry bound.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy import special

from ddspec.reference import alphas, forward, guidance, inversion, likelihood, oracles, parameterisation, sampling, schedules
from ddspec.reference.gaussian import Gaussian

from ..properties import test_guidance_properties as GUI
from ..properties import test_hostile_inputs as HOS
from ..properties import test_inversion_properties as INV
from ..properties import test_kl_properties as KL
from ..properties import test_output_distribution_properties as OUT
from ..properties import test_schedule_properties as SCH

# --------------------------------------------------------------------------------------------------
# running a property with power settings
# --------------------------------------------------------------------------------------------------

POWER = dict(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    report_multiple_bugs=False,
    phases=(Phase.generate,),
    suppress_health_check=list(HealthCheck),
)

#: Fewer examples for the one slow property (each example runs 2·(16 + 32 + 64) DDIM steps at T = 1000).
MAX_EXAMPLES: dict[str, int] = {"test_gaussian_round_trip_error_shrinks_with_the_step": 8}


def run_property(test_fn: Callable[..., None], **bound: object) -> None:
    """Run the property ``test_fn`` afresh under deterministic power settings (other arguments bound)."""
    inner = test_fn.hypothesis.inner_test
    params = list(inspect.signature(inner).parameters)
    assert params[-1] == "data" and set(params[:-1]) == set(bound), f"{test_fn.__name__}: unexpected signature {params}"

    def prop(data: st.DataObject) -> None:
        inner(**bound, data=data)

    n = MAX_EXAMPLES.get(test_fn.__name__, 50)
    settings(max_examples=n, **POWER)(given(data=st.data())(prop))()


ALL_PROPERTIES = [
    INV.test_point_mass_inversion_then_sampling_is_exact,
    INV.test_gaussian_round_trip_error_shrinks_with_the_step,
    OUT.test_run_output_law_equals_the_composition_of_the_actual_steps,
    KL.test_normal_kl_is_nonnegative_and_zero_only_for_equal_gaussians,
    KL.test_normal_kl_matches_numerical_integration,
    KL.test_decoder_bin_probabilities_sum_to_one,
    KL.test_kl_term_in_eps_form,
    SCH.test_cosine_alpha_bar_is_f_ratio_where_the_cap_is_inactive,
    SCH.test_cosine_cap_is_active_exactly_where_the_raw_beta_exceeds_max_beta,
    SCH.test_zero_terminal_snr_rescaling,
    GUI.test_classifier_guidance_with_the_exact_likelihood_is_the_exact_conditional_eps,
    GUI.test_classifier_free_guidance_endpoints_and_the_implicit_classifier,
    GUI.test_guided_mean_is_the_guided_eps_through_eq_11,
]

# --------------------------------------------------------------------------------------------------
# the originals, captured before any patch
# --------------------------------------------------------------------------------------------------

_alpha_bar = alphas.alpha_bar
_sqrt_alpha_bar = alphas.sqrt_alpha_bar
_sqrt_one_minus_alpha_bar = alphas.sqrt_one_minus_alpha_bar
_ddim_step = sampling.ddim_step
_ddpm_step = sampling.ddpm_step
_gaussian_step_map = oracles.gaussian_step_map
_normal_kl = likelihood.normal_kl
_cosine_betas = schedules.cosine_betas
_v_from_x0_eps = parameterisation.v_from_x0_eps


def _coefs(betas, t: int) -> tuple[float, float]:
    """(√ᾱ, √(1 − ᾱ)) at index t, with index −1 the data (1, 0)."""
    if t == -1:
        return 1.0, 0.0
    return float(_sqrt_alpha_bar(betas)[t]), float(_sqrt_one_minus_alpha_bar(betas)[t])


# --------------------------------------------------------------------------------------------------
# planted bugs, property 7 (inversion)
# --------------------------------------------------------------------------------------------------


def _invert_with_source_coefficients(eps, t_from, t_to, x, betas):
    """x_to = √ᾱ_from x̂₀ + √(1 − ᾱ_from) ε: the destination's ᾱ replaced by the source's."""
    e, xx = np.asarray(eps, dtype=np.float64), np.asarray(x, dtype=np.float64)
    sa_f, s1_f = _coefs(betas, t_from)
    x0 = xx if t_from == -1 else (xx - s1_f * e) / sa_f
    return sa_f * x0 + s1_f * e


@pytest.fixture
def invert_step_uses_alpha_bar_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ddim_invert_step`` with ᾱ_from where ᾱ_to belongs (the step goes nowhere)."""
    monkeypatch.setattr(inversion, "ddim_invert_step", _invert_with_source_coefficients)


@pytest.fixture
def invert_loop_uses_alpha_bar_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ddim_invert`` whose every step uses ᾱ_from where ᾱ_to belongs."""

    def broken(model_fn, x0, timesteps, betas, *, model_at="source"):
        steps = [int(v) for v in timesteps]
        x = np.asarray(x0, dtype=np.float64)
        samples, x0s = [x], []
        for f, g in zip(steps[:-1], steps[1:]):
            e = np.asarray(model_fn(x.copy(), f if model_at == "source" else g), dtype=np.float64)
            x = _invert_with_source_coefficients(e, f, g, x, betas)
            samples.append(x)
            x0s.append(x)
        return sampling.SampleTrajectory(np.stack(samples), np.stack(x0s), tuple(steps))

    monkeypatch.setattr(inversion, "ddim_invert", broken)


# --------------------------------------------------------------------------------------------------
# planted bugs, property 8 (output laws)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def ddim_step_drops_sigma_z(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ddim_step`` returns the mean as the sample: the σz term of DDIM eq. 12 dropped."""

    def broken(*args, **kwargs):
        r = _ddim_step(*args, **kwargs)
        return sampling.StepResult(r.mean, r.pred_x0, r.pred_eps, r.mean, r.variance)

    monkeypatch.setattr(sampling, "ddim_step", broken)


@pytest.fixture
def ddpm_step_large_is_small(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ddpm_step`` ignores ``variance_type="fixed_large"`` and adds the β̃ noise of fixed_small."""

    def broken(*args, **kwargs):
        if kwargs.get("variance_type") == "fixed_large":
            kwargs["variance_type"] = "fixed_small"
        return _ddpm_step(*args, **kwargs)

    monkeypatch.setattr(sampling, "ddpm_step", broken)


@pytest.fixture
def step_map_variance_is_sigma(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gaussian_step_map`` reports σ where σ² belongs (``gaussian_run_output`` calls it)."""

    def broken(*args, **kwargs):
        s = _gaussian_step_map(*args, **kwargs)
        return oracles.AffineStep(s.t, s.t_prev, s.A, s.B, float(np.sqrt(s.noise_variance)))

    monkeypatch.setattr(oracles, "gaussian_step_map", broken)


@pytest.fixture
def run_output_sign_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``gaussian_run_output`` propagates the mean as A m − B (sign of the offset flipped)."""

    def broken(oracle, betas, timesteps, *, family="ddim", eta=0.0, variance_type="fixed_small",
               final_alpha_bar_is_one=True, prior_mean=0.0, prior_variance=1.0):
        ts = [int(v) for v in timesteps]
        m = np.broadcast_to(np.asarray(prior_mean, dtype=np.float64), oracle.mean.shape).astype(np.float64)
        v = np.broadcast_to(np.asarray(prior_variance, dtype=np.float64), oracle.mean.shape).astype(np.float64)
        targets = ts[1:] + [-1 if final_alpha_bar_is_one else 0]
        for t, s in zip(ts, targets):
            st_ = _gaussian_step_map(oracle, betas, t, s, family=family, eta=eta, variance_type=variance_type)
            m = st_.A * m - st_.B
            v = st_.A * st_.A * v + st_.noise_variance
        return Gaussian(m, v)

    monkeypatch.setattr(oracles, "gaussian_run_output", broken)


# --------------------------------------------------------------------------------------------------
# planted bugs, property 9 (KL)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def normal_kl_missing_half(monkeypatch: pytest.MonkeyPatch) -> None:
    """KL = (−1 + ℓ₂ − ℓ₁ + e^{ℓ₁−ℓ₂} + (μ₁−μ₂)² e^{−ℓ₂}) without the factor ½."""
    monkeypatch.setattr(likelihood, "normal_kl", lambda m1, l1, m2, l2: 2.0 * _normal_kl(m1, l1, m2, l2))


@pytest.fixture
def normal_kl_literal_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The textbook closed form evaluated literally: e^{d} − 1 − d cancels, nearly equal Gaussians go ≤ 0."""

    def broken(m1, l1, m2, l2):
        m1, l1, m2, l2 = (np.asarray(a, dtype=np.float64) for a in (m1, l1, m2, l2))
        with np.errstate(all="ignore"):
            return 0.5 * (-1.0 + l2 - l1 + np.exp(l1 - l2) + (m1 - m2) ** 2 * np.exp(-l2))

    monkeypatch.setattr(likelihood, "normal_kl", broken)


@pytest.fixture
def decoder_edge_bins_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoder with every bin closed, x ± 1/255 (Ho et al. eq. 13 without the open edge bins)."""

    def broken(x, means, log_scales, *, cdf="exact"):
        x, mu, ls = (np.asarray(a, dtype=np.float64) for a in (x, means, log_scales))
        inv = np.exp(-ls)
        with np.errstate(divide="ignore"):
            return np.log(special.ndtr((x + 1 / 255 - mu) * inv) - special.ndtr((x - 1 / 255 - mu) * inv))

    monkeypatch.setattr(likelihood, "discretized_gaussian_log_likelihood", broken)


@pytest.fixture
def eps_kl_weight_missing_alpha(monkeypatch: pytest.MonkeyPatch) -> None:
    """w_t = β_t²/(2σ_t²(1 − ᾱ_t)): Ho et al. eq. 12's α_t missing from the denominator."""

    def broken(betas, t, sigma2):
        b = np.asarray(betas, dtype=np.float64)
        return float(b[t] ** 2 / (2.0 * sigma2 * (1.0 - _alpha_bar(b)[t])))

    monkeypatch.setattr(likelihood, "eps_kl_weight", broken)


@pytest.fixture
def eps_kl_constant_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variance-mismatch constant taken as 0 for every σ² (true only for σ² = β̃)."""
    monkeypatch.setattr(likelihood, "eps_kl_constant", lambda betas, t, sigma2: 0.0)


# --------------------------------------------------------------------------------------------------
# planted bugs, property 10 (schedules)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def cosine_without_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cosine_betas`` ignores ``max_beta`` (no clipping, Nichol & Dhariwal §3.2 forgotten)."""
    monkeypatch.setattr(schedules, "cosine_betas", lambda num_timesteps, s=0.008, max_beta=0.999: _cosine_betas(num_timesteps, s, 1.0))


@pytest.fixture
def cosine_ignores_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cosine_betas`` uses s = 0.008 whatever ``s`` is given."""
    monkeypatch.setattr(schedules, "cosine_betas", lambda num_timesteps, s=0.008, max_beta=0.999: _cosine_betas(num_timesteps, 0.008, max_beta))


@pytest.fixture
def rescale_without_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero-terminal-SNR rescaling that forgets the shift (r' = r·r₁/r₁): the schedule comes back unchanged."""
    monkeypatch.setattr(schedules, "rescale_zero_terminal_snr", lambda betas: np.array(betas, dtype=np.float64))


@pytest.fixture
def rescale_without_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero-terminal-SNR rescaling that shifts but does not rescale: r' = r − r_T (ᾱ'_1 is not kept)."""

    def broken(betas):
        b = np.asarray(betas, dtype=np.float64)
        r = _sqrt_alpha_bar(b)
        ab = (r - r[-1]) ** 2
        out = np.empty_like(b)
        out[0] = 1.0 - ab[0]
        out[1:] = 1.0 - ab[1:] / ab[:-1]
        out[-1] = 1.0
        return out

    monkeypatch.setattr(schedules, "rescale_zero_terminal_snr", broken)


# --------------------------------------------------------------------------------------------------
# planted bugs, property 11 (guidance)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def classifier_eps_sign_flipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """ε̂ = ε + s√(1 − ᾱ)∇log p(y|x_t): the sign of Dhariwal & Nichol's eq. 14 flipped."""

    def broken(eps, grad_log_p_y, t, betas, scale):
        _, s1 = _coefs(betas, t)
        return np.asarray(eps, dtype=np.float64) + scale * s1 * np.asarray(grad_log_p_y, dtype=np.float64)

    monkeypatch.setattr(guidance, "classifier_guided_eps", broken)


@pytest.fixture
def cfg_paper_w_as_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """CFG with the scale used as the paper's w: (1 + s)ε_c − sε_u (so s = 1 does not give ε_c)."""
    monkeypatch.setattr(
        guidance, "classifier_free_guidance",
        lambda eps_uncond, eps_cond, scale: (1.0 + scale) * np.asarray(eps_cond, dtype=np.float64) - scale * np.asarray(eps_uncond, dtype=np.float64),
    )


@pytest.fixture
def guided_mean_uses_std(monkeypatch: pytest.MonkeyPatch) -> None:
    """μ + s√Σ∇: the standard deviation where Algorithm 1 has the variance Σ."""
    monkeypatch.setattr(
        guidance, "classifier_guided_mean",
        lambda mean, variance, grad_log_p_y, scale: np.asarray(mean, dtype=np.float64)
        + scale * np.sqrt(np.asarray(variance, dtype=np.float64)) * np.asarray(grad_log_p_y, dtype=np.float64),
    )


# --------------------------------------------------------------------------------------------------
# planted bugs, property 12 (hostile inputs; a sample)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def v_target_returns_nan_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """``v_from_x0_eps`` without input validation: a NaN in, a NaN out, silently."""

    def broken(x0, eps, t, betas):
        sa, s1 = _coefs(np.asarray(betas, dtype=np.float64), int(t))
        return sa * np.asarray(eps, dtype=np.float64) - s1 * np.asarray(x0, dtype=np.float64)

    monkeypatch.setattr(parameterisation, "v_from_x0_eps", broken)


@pytest.fixture
def custom_betas_unvalidated(monkeypatch: pytest.MonkeyPatch) -> None:
    """``custom_betas`` that only converts (no range, finiteness or shape checks)."""
    monkeypatch.setattr(schedules, "custom_betas", lambda betas: np.array(betas, dtype=np.float64))


@pytest.fixture
def q_sample_raises_type_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``q_sample`` that does the arithmetic first: strings, None or objects escape as TypeError."""

    def broken(x0, t, noise, betas):
        sa, s1 = _coefs(np.asarray(betas, dtype=np.float64), int(t))
        return sa * np.asarray(x0) + s1 * np.asarray(noise)

    monkeypatch.setattr(forward, "q_sample", broken)


# --------------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------------

CASES = [
    # property 7: inversion
    ("invert_step_uses_alpha_bar_from", INV.test_point_mass_inversion_then_sampling_is_exact),
    ("invert_loop_uses_alpha_bar_from", INV.test_point_mass_inversion_then_sampling_is_exact),
    ("invert_loop_uses_alpha_bar_from", INV.test_gaussian_round_trip_error_shrinks_with_the_step),
    # property 8: output laws
    ("ddim_step_drops_sigma_z", OUT.test_run_output_law_equals_the_composition_of_the_actual_steps),
    ("ddpm_step_large_is_small", OUT.test_run_output_law_equals_the_composition_of_the_actual_steps),
    ("step_map_variance_is_sigma", OUT.test_run_output_law_equals_the_composition_of_the_actual_steps),
    ("run_output_sign_error", OUT.test_run_output_law_equals_the_composition_of_the_actual_steps),
    # property 9: KL
    ("normal_kl_literal_cancels", KL.test_normal_kl_is_nonnegative_and_zero_only_for_equal_gaussians),
    ("normal_kl_missing_half", KL.test_normal_kl_matches_numerical_integration),
    ("normal_kl_missing_half", KL.test_kl_term_in_eps_form),
    ("decoder_edge_bins_closed", KL.test_decoder_bin_probabilities_sum_to_one),
    ("eps_kl_weight_missing_alpha", KL.test_kl_term_in_eps_form),
    ("eps_kl_constant_dropped", KL.test_kl_term_in_eps_form),
    # property 10: schedules
    ("cosine_ignores_offset", SCH.test_cosine_alpha_bar_is_f_ratio_where_the_cap_is_inactive),
    ("cosine_without_cap", SCH.test_cosine_cap_is_active_exactly_where_the_raw_beta_exceeds_max_beta),
    ("rescale_without_shift", SCH.test_zero_terminal_snr_rescaling),
    ("rescale_without_scale", SCH.test_zero_terminal_snr_rescaling),
    # property 11: guidance
    ("classifier_eps_sign_flipped", GUI.test_classifier_guidance_with_the_exact_likelihood_is_the_exact_conditional_eps),
    ("classifier_eps_sign_flipped", GUI.test_classifier_free_guidance_endpoints_and_the_implicit_classifier),
    ("cfg_paper_w_as_scale", GUI.test_classifier_free_guidance_endpoints_and_the_implicit_classifier),
    ("guided_mean_uses_std", GUI.test_guided_mean_is_the_guided_eps_through_eq_11),
]

# The η = 0 DDIM step has σ = 0, so dropping σz changes nothing there: that pairing is a *negative*
# control (the property must still pass), showing that a patch does not make a property fail by itself.
NEGATIVE_CONTROLS = [("ddim_step_drops_sigma_z", INV.test_point_mass_inversion_then_sampling_is_exact)]

HOSTILE_CASES = [
    ("v_target_returns_nan_silently", "parameterisation.v_from_x0_eps"),
    ("custom_betas_unvalidated", "schedules.custom_betas"),
    ("q_sample_raises_type_error", "forward.q_sample"),
]


@pytest.mark.parametrize(("bug", "prop"), CASES, ids=[f"{bug}-{prop.__name__}" for bug, prop in CASES])
def test_planted_bug_makes_the_property_fail(bug: str, prop: Callable[..., None], request: pytest.FixtureRequest) -> None:
    """With the bug patched in, the property's own assertion fails on one of its derandomized examples."""
    request.getfixturevalue(bug)
    with pytest.raises(AssertionError):
        run_property(prop)


@pytest.mark.parametrize(("bug", "prop"), NEGATIVE_CONTROLS, ids=[f"{b}-{p.__name__}" for b, p in NEGATIVE_CONTROLS])
def test_a_patch_that_changes_nothing_there_does_not_fail(bug: str, prop: Callable[..., None], request: pytest.FixtureRequest) -> None:
    """Negative control: dropping σz from DDIM at η = 0 (σ = 0) is harmless, and the property says so."""
    request.getfixturevalue(bug)
    run_property(prop)


@pytest.mark.parametrize(("bug", "key"), HOSTILE_CASES, ids=[f"{b}-{k}" for b, k in HOSTILE_CASES])
def test_planted_bug_makes_the_hostile_input_property_fail(bug: str, key: str, request: pytest.FixtureRequest) -> None:
    """Property 12 catches a function that returns NaN silently, skips validation, or leaks a TypeError."""
    request.getfixturevalue(bug)
    with pytest.raises(AssertionError):
        run_property(HOS.test_hostile_inputs_raise_value_error_or_return_finite, key=key)


def test_every_property_has_a_planted_bug() -> None:
    """No property of part 2 is left without a bug that it must catch."""
    covered = {prop for _, prop in CASES}
    missing = [p.__name__ for p in ALL_PROPERTIES if p not in covered]
    assert not missing, f"properties without a planted bug: {missing}"


@pytest.mark.parametrize("prop", ALL_PROPERTIES, ids=[p.__name__ for p in ALL_PROPERTIES])
def test_property_passes_unpatched_under_power_settings(prop: Callable[..., None]) -> None:
    """Control: the same derandomized run passes on the unpatched reference, so each failure above is the bug's."""
    run_property(prop)


@pytest.mark.parametrize("key", [k for _, k in HOSTILE_CASES])
def test_hostile_property_passes_unpatched_under_power_settings(key: str) -> None:
    """Control for property 12's sample entries."""
    run_property(HOS.test_hostile_inputs_raise_value_error_or_return_finite, key=key)
