"""Tests of reference/variances.py: Σ_θ of every variance type against the mpmath twin and closed forms."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError, variances
from ddspec.reference.schedules import cosine_betas, linear_betas
from ddspec.reference.twin import ulp_error
from ddspec.reference.twin import variances as twin

LINEAR = linear_betas(1000)
COSINE = cosine_betas(1000)
SCHEDULES = {"linear": LINEAR, "cosine": COSINE}

# (t, t_prev, t_next): first/last steps, interior, strided, and strided final steps
STEPS = [(0, None, None), (1, None, None), (500, None, None), (999, None, None), (998, None, None),
         (999, 899, None), (300, 0, None), (100, -1, 200), (0, -1, 50)]


def _model_var(variance_type: str, rng: np.random.Generator) -> np.ndarray | None:
    if variance_type == "learned_range":
        return np.concatenate([[-1.0, 1.0, 0.0], rng.uniform(-1, 1, 5)])
    if variance_type == "learned":
        return rng.uniform(-14, 0, 6)
    return None


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("variance_type", variances.VARIANCE_TYPES)
def test_matches_twin(schedule: str, variance_type: str) -> None:
    """Every type, at first/last/interior/strided steps, within a few ULP of the mpmath twin.

    learned_range's variance is exp(log Σ): the log's absolute error (≤ 2 ULP of |log Σ|) becomes a
    relative error of about |log Σ| units of roundoff, hence the bound 2 + 2|log Σ| ULP there.
    """
    b = SCHEDULES[schedule]
    rng = np.random.default_rng(7)
    for t, t_prev, t_next in STEPS:
        mv = _model_var(variance_type, rng)
        got = variances.reverse_variance(b, t, variance_type, t_prev=t_prev, t_next=t_next, model_var_output=mv)
        var, log_var = twin.reverse_variance(b, t, variance_type, t_prev=t_prev, model_var_output=mv, t_next=t_next)
        var = var if isinstance(var, list) else [var]
        log_var = log_var if isinstance(log_var, list) else [log_var]
        assert np.all(ulp_error(got.log_variance, log_var) <= 2.0), (t, t_prev)
        bound = 2.0 + 2.0 * np.abs(np.asarray(got.log_variance, dtype=float)) if variance_type == "learned_range" else 2.0
        assert np.all(ulp_error(got.variance, var) <= bound), (t, t_prev)


def test_fixed_small_first_step_is_zero_with_clipped_log() -> None:
    """β̃ at index 0 is 0; its log is log β̃ at index 1 = log(β₂ β₁/(1 − (1−β₁)(1−β₂))) (Ho et al. eq. 7)."""
    b = LINEAR
    r = variances.reverse_variance(b, 0, "fixed_small")
    assert float(r.variance) == 0.0
    with mpmath.workdps(40):
        b1, b2 = mpmath.mpf(b[0]), mpmath.mpf(b[1])
        expected = mpmath.log(b2 * b1 / (1 - (1 - b1) * (1 - b2)))
    assert ulp_error(r.log_variance, [expected])[0] <= 2.0
    # t_prev = -1 given explicitly is the same step
    r2 = variances.reverse_variance(b, 0, "fixed_small", t_prev=-1)
    assert float(r2.log_variance) == float(r.log_variance) and float(r2.variance) == 0.0


def test_fixed_large_is_beta_exactly() -> None:
    """Ho et al. §3.2: σ² = β_t, at every index (including the first) and log β_t."""
    for t in (0, 1, 417, 999):
        r = variances.reverse_variance(LINEAR, t, "fixed_large")
        assert float(r.variance) == LINEAR[t]
        assert float(r.log_variance) == np.log(LINEAR[t])


def test_fixed_large_improved_first_entry_is_beta_tilde_at_index_1() -> None:
    """improved-diffusion's FIXED_LARGE: [β̃₂, β₂, β₃, …] (paper indexing)."""
    b = COSINE
    first = variances.reverse_variance(b, 0, "fixed_large_improved")
    bt1 = variances.reverse_variance(b, 1, "fixed_small")
    assert float(first.variance) == float(bt1.variance)
    assert float(first.log_variance) == float(bt1.log_variance)
    for t in (1, 2, 999):
        r = variances.reverse_variance(b, t, "fixed_large_improved")
        assert float(r.variance) == b[t]


def test_learned_range_endpoints_give_beta_and_beta_tilde() -> None:
    """Nichol & Dhariwal eq. 15: v = 1 gives β, v = 0 (model output −1) gives β̃ (clipped at the first step)."""
    for t in (0, 1, 500, 999):
        r = variances.reverse_variance(LINEAR, t, "learned_range", model_var_output=np.array([1.0, -1.0]))
        assert float(r.log_variance[0]) == np.log(LINEAR[t])
        small = variances.reverse_variance(LINEAR, t, "fixed_small").log_variance
        assert float(r.log_variance[1]) == float(small)
        assert ulp_error(r.variance[:1], [mpmath.mpf(LINEAR[t])])[0] <= 2 + 2 * abs(np.log(LINEAR[t]))


def test_learned_is_a_log_variance() -> None:
    """improved-diffusion's LEARNED: the model output is log Σ."""
    m = np.array([-3.0, 0.0, -11.5])
    r = variances.reverse_variance(LINEAR, 10, "learned", model_var_output=m)
    np.testing.assert_array_equal(r.log_variance, m)
    with mpmath.workdps(30):
        assert np.all(ulp_error(r.variance, [mpmath.exp(v) for v in m]) <= 1.0)


def test_strided_uses_respaced_beta() -> None:
    """β' = 1 − ᾱ_t/ᾱ_s and β̃' = β'(1 − ᾱ_s)/(1 − ᾱ_t), from the mpmath products."""
    t, s = 700, 650
    r_large = variances.reverse_variance(COSINE, t, "fixed_large", t_prev=s)
    r_small = variances.reverse_variance(COSINE, t, "fixed_small", t_prev=s)
    with mpmath.workdps(50):
        ab_t, ab_s = twin.alpha_bar(COSINE, t), twin.alpha_bar(COSINE, s)
        bp = 1 - ab_t / ab_s
        bt = bp * (1 - ab_s) / (1 - ab_t)
    assert ulp_error(r_large.variance, [bp])[0] <= 2
    assert ulp_error(r_small.variance, [bt])[0] <= 2


def test_final_strided_step_clips_to_the_step_from_t_next() -> None:
    """At t_prev = −1 the clipped log is log β̃(t_next → t) (improved-diffusion's respaced table)."""
    r = variances.reverse_variance(LINEAR, 100, "fixed_small", t_prev=-1, t_next=200)
    step = variances.reverse_variance(LINEAR, 200, "fixed_small", t_prev=100)
    assert float(r.variance) == 0.0
    assert float(r.log_variance) == float(step.log_variance)
    # default t_next = t + 1
    r_default = variances.reverse_variance(LINEAR, 100, "fixed_small", t_prev=-1)
    assert float(r_default.log_variance) == float(variances.reverse_variance(LINEAR, 101, "fixed_small").log_variance)


def test_validation_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="variance_type"):
        variances.reverse_variance(LINEAR, 5, "fixed_medium")
    with pytest.raises(ValueError, match="model_var_output"):
        variances.reverse_variance(LINEAR, 5, "learned_range", model_var_output=np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="model_var_output"):
        variances.reverse_variance(LINEAR, 5, "learned_range")
    with pytest.raises(ValueError, match="model_var_output"):
        variances.reverse_variance(LINEAR, 5, "fixed_small", model_var_output=np.zeros(2))
    with pytest.raises(ValueError, match="model_var_output"):
        variances.reverse_variance(LINEAR, 5, "learned", model_var_output=np.array([800.0]))
    with pytest.raises(ValueError, match="t_prev"):
        variances.reverse_variance(LINEAR, 5, "fixed_small", t_prev=5)
    with pytest.raises(ValueError, match="t_next"):
        variances.reverse_variance(LINEAR, 5, "fixed_small", t_prev=-1, t_next=5)
    with pytest.raises(ValueError, match="t"):
        variances.reverse_variance(LINEAR, 1000, "fixed_small")
    with pytest.raises(SingularError):
        variances.reverse_variance(np.array([0.1]), 0, "fixed_small")
