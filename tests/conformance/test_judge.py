"""The expect and judge stages of the core (expectation.expect_transition, judge.judge_transition).

Expected values are the closed form of the DDIM step (Song et al. 2021 eq. 12, σ = 0), written here from
the paper, not taken from the code under test.
"""

from __future__ import annotations

import math

import numpy as np

from ddspec.conformance.expectation import expect_transition, step_spec
from ddspec.conformance.judge import StepTolerance, Tally, judge_transition, tally_result
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import Verdict
from ddspec.conformance.tolerances import UNIT_ROUNDOFF, alpha_bar_relative_bound
from ddspec.conformance.trajectory import Transition

T = 10
BETAS = np.linspace(1e-3, 0.2, T)
CONV = Conventions(family="ddim", num_train_timesteps=T, beta_schedule="custom", trained_betas=tuple(BETAS),
                   variance_type=None, timestep_spacing="leading")


def _alpha_bar(t: int) -> float:
    return 1.0 if t < 0 else math.prod(1.0 - b for b in BETAS[: t + 1])


def _ddim_eq12(x: np.ndarray, eps: np.ndarray, t: int, t_prev: int) -> np.ndarray:
    a, p = _alpha_bar(t), _alpha_bar(t_prev)
    x0 = (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)
    return math.sqrt(p) * x0 + math.sqrt(1.0 - p) * eps


def _tolerance(u: float) -> StepTolerance:
    ab = np.array([_alpha_bar(t) for t in range(T)])
    deltas = alpha_bar_relative_bound(BETAS, "custom", u)
    return StepTolerance(ab, deltas, u, u, u, "float32", None)


def _transition(x_prev_shift: float = 0.0, t: int = 5, t_prev: int = 3) -> Transition:
    rng = np.random.default_rng(1)
    x, eps = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    x_prev = _ddim_eq12(x, eps, t, t_prev)
    x_prev[1, 2] += x_prev_shift
    return Transition(t=t, t_prev=t_prev, x_t=x, model_output=eps, x_prev=x_prev, step=2)


def test_expect_transition_is_the_papers_step_on_the_recorded_values() -> None:
    tr = _transition()
    e = expect_transition(CONV, BETAS, tr, 0.0)
    assert e.why is None and not e.noisy
    np.testing.assert_allclose(e.prev_sample, _ddim_eq12(tr.x_t, tr.model_output, 5, 3), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(e.mean, e.prev_sample)


def test_the_exact_step_passes_and_a_shift_beyond_the_bound_fails_naming_where() -> None:
    tol, spec = _tolerance(UNIT_ROUNDOFF["float32"]), step_spec(CONV, 0.0)
    good = Tally()
    ratio = judge_transition(good, tol, spec, expect_transition(CONV, BETAS, _transition(), 0.0), num_steps=4)
    assert ratio <= 1e-3 and not good.failed  # float64 closed form vs float64 reference: ~1e-16 of a float32 bound

    bad = Tally()
    judge_transition(bad, tol, spec, expect_transition(CONV, BETAS, _transition(1e-3), 0.0), num_steps=4)
    assert bad.failed and bad.n_exceeding == 1  # 1e-3 ≫ the float32 bound (~1e-6 of |x_prev| ~ 1)
    finding = bad.findings()[0]
    assert finding.element == (1, 2) and finding.step == 2 and finding.timestep == 5
    assert "N=4, step 2 (t=5 -> t_prev=3)" in finding.message and "exceeds the tolerance" in finding.message
    assert abs(finding.got - finding.expected) > finding.tolerance
    result = tally_result("x", "single_step", bad, what="w", exceeding="e", within="ok", reproduce=None, details={})
    assert result.verdict is Verdict.FAIL


def test_a_transition_the_reference_cannot_take_is_broken_never_skipped() -> None:
    """t_prev above t is no reverse step: the expectation says why, and the judge records a broken call."""
    e = expect_transition(CONV, BETAS, _transition(t=3, t_prev=5), 0.0)
    assert e.why is not None and e.why_kind == "outside" and e.prev_sample is None
    tally = Tally()
    assert judge_transition(tally, _tolerance(UNIT_ROUNDOFF["float32"]), step_spec(CONV, 0.0), e, num_steps=4) == math.inf
    assert tally.failed and tally.n_broken == 1 and "t=3 -> 5" in tally.findings()[0].message
