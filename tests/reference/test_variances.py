"""Tests of reference/variances.py: Σ_θ of every variance type against the mpmath twin and closed forms."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from ddspec.reference import SingularError, variances
from ddspec.reference.schedules import cosine_betas, linear_betas
from ddspec.reference.timesteps import respaced_betas
from ddspec.reference.twin import ulp_error
from ddspec.reference.twin import variances as twin
from tests.reference.pairs import twin_of

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
        var, log_var = twin_of("variances.reverse_variance")(b, t, variance_type, t_prev=t_prev, model_var_output=mv, t_next=t_next)
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
    # t_prev = -1 given explicitly, with the unstrided t_next = 1, is the same step
    r2 = variances.reverse_variance(b, 0, "fixed_small", t_prev=-1, t_next=1)
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


def _within_1_ulp(got: float, expected: float) -> bool:
    return abs(got - expected) <= np.spacing(abs(expected))


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_learned_range_endpoints_are_the_fixed_variances(schedule: str) -> None:
    """Nichol & Dhariwal eq. 15 at its ends, at every index: m = 1 (v = 1) gives fixed_large's β_t and
    m = −1 (v = 0) fixed_small's β̃_t (the clipped β̃ at index 0, i.e. fixed_large_improved's value),
    within 1 ULP, with exactly the fixed types' log-variances. Before, the variance was exp(log Σ),
    up to ~2.4e-15 relative (up to 8 ULP) off."""
    b = SCHEDULES[schedule]
    m = np.array([1.0, -1.0])
    naive_misses = 0  # exp(log β_t), the old value at v = 1: its log's rounding alone is ~|log β| ULP after exp
    for t in range(b.size):
        r = variances.reverse_variance(b, t, "learned_range", model_var_output=m)
        naive_misses += not _within_1_ulp(float(np.exp(r.log_variance[0])), b[t])
        large = variances.reverse_variance(b, t, "fixed_large")
        small = variances.reverse_variance(b, t, "fixed_small" if t > 0 else "fixed_large_improved")
        where = f"{schedule} t={t}"
        assert _within_1_ulp(float(r.variance[0]), float(large.variance)), (
            f"{where}: v=1 gave {r.variance[0]!r}, expected fixed_large {float(large.variance)!r} (1 ULP)")
        assert _within_1_ulp(float(r.variance[1]), float(small.variance)), (
            f"{where}: v=0 gave {r.variance[1]!r}, expected fixed_small {float(small.variance)!r} (1 ULP)")
        assert float(r.log_variance[0]) == float(large.log_variance), where
        assert float(r.log_variance[1]) == float(small.log_variance), where
        assert float(r.variance[0]) == b[t], where  # Ho et al. §3.2: fixed_large is β_t itself
    assert naive_misses > 0  # (about 430 of the 1000 indices), so the test can fail


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_learned_range_endpoints_on_strided_steps_match_the_twin(schedule: str) -> None:
    """Strided steps t → t − 10 (and the strided final step): the endpoints are β′ and β̃′ of the
    respaced step within 1 ULP of the reference's fixed types (with their log-variances exactly), and
    the variances within 2 ULP of the mpmath twin (inside the range the bound is 2 + 2|log Σ| ULP,
    test_matches_twin). The strided log β̃′ is a sum of three logs, each rounded, so its bound is
    4 ULP here (measured worst 2.01, cosine 120 → 110)."""
    b = SCHEDULES[schedule]
    m = np.array([1.0, -1.0])
    for t in list(range(10, b.size, 10)) + [9]:
        s = t - 10
        nxt = t + 10 if t + 10 < b.size else None
        kw = dict(t_prev=s, t_next=nxt)
        r = variances.reverse_variance(b, t, "learned_range", model_var_output=m, **kw)
        large = variances.reverse_variance(b, t, "fixed_large", **kw)
        small = variances.reverse_variance(b, t, "fixed_small" if s >= 0 else "fixed_large_improved", **kw)
        where = f"{schedule} t={t} -> t_prev={s}"
        assert _within_1_ulp(float(r.variance[0]), float(large.variance)), (
            f"{where}: v=1 gave {r.variance[0]!r}, expected fixed_large {float(large.variance)!r} (1 ULP)")
        assert _within_1_ulp(float(r.variance[1]), float(small.variance)), (
            f"{where}: v=0 gave {r.variance[1]!r}, expected fixed_small {float(small.variance)!r} (1 ULP)")
        assert float(r.log_variance[0]) == float(large.log_variance), where
        assert float(r.log_variance[1]) == float(small.log_variance), where
        tw_var, tw_log = twin_of("variances.reverse_variance")(b, t, "learned_range", t_prev=s, model_var_output=m, t_next=nxt)
        assert np.all(ulp_error(r.variance, tw_var) <= 2.0), (where, ulp_error(r.variance, tw_var))
        assert np.all(ulp_error(r.log_variance, tw_log) <= 4.0), (where, ulp_error(r.log_variance, tw_log))


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


def _log_beta_tilde_closed_form(b: np.ndarray, upper: int, lower: int) -> mpmath.mpf:
    r"""log β̃(upper → lower) = log[(1 − ᾱ_u/ᾱ_l)(1 − ᾱ_l)/(1 − ᾱ_u)], from the exact products ᾱ = ∏(1 − β)."""
    with mpmath.workdps(50):
        ab_u, ab_l = twin.alpha_bar(b, upper), twin.alpha_bar(b, lower)
        return mpmath.log((1 - ab_u / ab_l) * (1 - ab_l) / (1 - ab_u))


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large_improved", "learned_range"])
def test_final_strided_step_uses_the_declared_t_next(variance_type: str) -> None:
    """At t_prev = −1 the clipped value is β̃(t_next → t) (improved-diffusion's respaced table) for the
    declared t_next, checked against the closed form: respaced subsequence …, 200, 100 → data."""
    mv = np.array([-1.0]) if variance_type == "learned_range" else None
    r = variances.reverse_variance(LINEAR, 100, variance_type, t_prev=-1, t_next=200, model_var_output=mv)
    expected = _log_beta_tilde_closed_form(LINEAR, 200, 100)
    assert ulp_error(np.ravel(r.log_variance), [expected])[0] <= 2.0
    if variance_type == "fixed_small":
        assert float(r.variance) == 0.0
    else:
        with mpmath.workdps(50):
            assert ulp_error(np.ravel(r.variance), [mpmath.exp(expected)])[0] <= 2.0
    # the same value as the unstrided step 200 → 100 that it borrows
    step = variances.reverse_variance(LINEAR, 200, "fixed_small", t_prev=100)
    assert float(np.ravel(r.log_variance)[0]) == float(step.log_variance)
    # and t_next = 101 (what an implicit t + 1 would give) is a different value
    other = variances.reverse_variance(LINEAR, 100, variance_type, t_prev=-1, t_next=101, model_var_output=mv)
    assert abs(float(np.ravel(other.log_variance)[0]) - float(expected)) > 0.5


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large_improved", "learned_range"])
@pytest.mark.parametrize("t", [0, 100])
def test_explicit_final_step_without_t_next_is_an_error(variance_type: str, t: int) -> None:
    """With an explicit t_prev = −1 the next index is not guessed (it was t + 1, silently wrong for a
    respaced VLB): the error names t_next, also at t = 0, where a respaced subsequence such as
    0, 10, 20, … has t_next = 10 and not 1."""
    mv = np.array([0.3]) if variance_type == "learned_range" else None
    with pytest.raises(ValueError, match=r"^t_next=None: .*final step t=%d -> t_prev=-1" % t):
        variances.reverse_variance(LINEAR, t, variance_type, t_prev=-1, model_var_output=mv)
    with pytest.raises(ValueError, match="t_next"):
        twin_of("variances.reverse_variance")(LINEAR, t, variance_type, t_prev=-1, model_var_output=mv)


def test_types_that_do_not_clip_need_no_t_next() -> None:
    """fixed_large and learned never use β̃(t_next → t): the final step needs no t_next."""
    r = variances.reverse_variance(LINEAR, 100, "fixed_large", t_prev=-1)
    with mpmath.workdps(50):
        expected = 1 - twin.alpha_bar(LINEAR, 100)
    assert ulp_error(r.variance, [expected])[0] <= 2.0
    r2 = variances.reverse_variance(LINEAR, 100, "learned", t_prev=-1, model_var_output=np.array([-3.0]))
    assert float(r2.log_variance[0]) == -3.0


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_respaced_schedule_agrees_with_the_strided_call(schedule: str) -> None:
    """Two routes to improved-diffusion's respaced table: reverse_variance on the respaced β′ (where the
    default t_next = t + 1 is the next element of the subsequence) and on the original β with the
    declared t_next. Each route is within ~2 ULP of the exact value (the accuracy documented in
    reverse_variance), so they agree within 4 ULP (measured worst: 1 linear, 2 cosine), including the
    final step's clipped log, which needs the declared t_next = 100 for the step 50 → data."""
    b = SCHEDULES[schedule]
    ts = np.arange(50, 1000, 50)  # 50, 100, …, 950
    rb = respaced_betas(b, ts)
    for i, t in enumerate(ts):
        s = int(ts[i - 1]) if i > 0 else -1
        nxt = int(ts[i + 1]) if i + 1 < ts.size else None
        for vt in ("fixed_small", "fixed_large", "fixed_large_improved"):
            a = variances.reverse_variance(rb, i, vt)
            b_ = variances.reverse_variance(b, int(t), vt, t_prev=s, t_next=nxt)
            for what, x, y in (("variance", a.variance, b_.variance), ("log_variance", a.log_variance, b_.log_variance)):
                x, y = float(x), float(y)
                assert abs(x - y) <= 4 * np.spacing(abs(y)), (
                    f"{schedule} {vt} {what} at t={int(t)} -> t_prev={s} (t_next={nxt}): respaced table {x!r}, "
                    f"strided call {y!r}, tolerance 4 ULP")


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
    with pytest.raises(ValueError, match="t_next"):
        variances.reverse_variance(LINEAR, 5, "fixed_small", t_prev=-1, t_next=1000)
    with pytest.raises(ValueError, match="t"):
        variances.reverse_variance(LINEAR, 1000, "fixed_small")
    with pytest.raises(SingularError):
        variances.reverse_variance(np.array([0.1]), 0, "fixed_small")
    with pytest.raises(SingularError):  # no index above t at all: singular, whether t_prev is explicit or not
        variances.reverse_variance(np.array([0.1]), 0, "fixed_small", t_prev=-1)
