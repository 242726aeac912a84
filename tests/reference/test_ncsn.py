"""Tests of reference/ncsn.py: closed forms, validation, and the power of the NCSN properties.

The twin comparisons are the registry's (reference/registry.py, run by test_registry.py). Here:
hand-computed values (exact in binary where possible), every bad argument named in the error, and
each property of tests/properties/test_ncsn_properties.py failing on a planted bug.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddspec.reference import langevin, ncsn
from tests.properties import test_ncsn_properties as P


def test_ladder_closed_forms() -> None:
    """σ_1 = 1, σ_L = 0.01, L = 3: [1, 0.1, 0.01]; Song & Ermon §5 (L = 10): ratio 10^(−2/9) ≈ 0.5995."""
    s = ncsn.geometric_sigmas(1.0, 0.01, 3)
    assert s[0] == 1.0 and s[2] == 0.01 and abs(s[1] - 0.1) <= 4 * np.spacing(0.1)
    ten = ncsn.geometric_sigmas(1.0, 0.01, 10)
    assert np.allclose(ten[1:] / ten[:-1], 10 ** (-2 / 9), rtol=1e-14, atol=0)


def test_langevin_loop_closed_forms() -> None:
    """One level, one step, zero score: x + √ε z; with α = ε = 0.25 and z = 4: x + 2 (exact)."""
    out = ncsn.annealed_langevin_dynamics(lambda x, s: np.zeros_like(x), [1.0, -3.0], [0.5], 0.25, [[[4.0, 1.0]]])
    np.testing.assert_array_equal(out, [3.0, -2.5])
    # two levels 2 → 1 with ε = 1/16: α = (1/16)·4 = 1/4 at level 1, 1/16 at level 2; zero noise, score −x
    out = ncsn.annealed_langevin_dynamics(lambda x, s: -x, [8.0], [2.0, 1.0], 1.0 / 16, np.zeros((2, 1, 1)))
    np.testing.assert_array_equal(out, [8.0 * (1 - 1 / 8) * (1 - 1 / 32)])
    # the loop is Algorithm 1's composition of the single updates
    z = np.array([[[0.5]], [[-1.5]]])
    x = 1.0 - 0.5 * 0.25 / 2 * 1.0 + math.sqrt(0.25) * 0.5  # level 1: α = 0.25, score = −x/2 at x = 1
    step1 = langevin.annealed_langevin_step([1.0], [-0.5], 0.25, [0.5])
    assert step1[0] == x
    got = ncsn.annealed_langevin_dynamics(lambda x, s: -x / 2, [1.0], [2.0, 1.0], 1.0 / 16, z)
    np.testing.assert_array_equal(got, langevin.annealed_langevin_step(step1, -step1 / 2, 1.0 / 16, [-1.5]))


def test_dsm_closed_forms() -> None:
    """ℓ = ½‖s + (x̃ − x)/σ²‖²: s = [1, −2], x̃ − x = [0.5, 0.5], σ = 0.5 → r = [3, 0], ℓ = 4.5; σ²ℓ = 1.125."""
    per = ncsn.dsm_loss_per_sample([[1.0, -2.0]], [[0.0, 1.0]], [[0.5, 1.5]], 0.5)
    np.testing.assert_array_equal(per, [4.5])
    assert ncsn.annealed_dsm_loss([[1.0, -2.0]], [[0.0, 1.0]], [[0.5, 1.5]], 0.5) == 1.125
    # the exact perturbed score −(x̃ − x)/σ² gives zero
    assert ncsn.annealed_dsm_loss([[-2.0]], [[0.0]], [[0.5]], 0.5) == 0.0


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: ncsn.geometric_sigmas(0.01, 1.0, 5), "sigma_min"),
        (lambda: ncsn.geometric_sigmas(1.0, 0.0, 5), "sigma_min"),
        (lambda: ncsn.geometric_sigmas(1.0, 0.1, 1), "num_levels"),
        (lambda: ncsn.annealed_langevin_dynamics(None, [0.0], [1.0], 0.1, [[[0.0]]]), "score_fn"),
        (lambda: ncsn.annealed_langevin_dynamics(lambda x, s: x, [0.0], [0.1, 1.0], 0.1, np.zeros((2, 1, 1))), "sigmas"),
        (lambda: ncsn.annealed_langevin_dynamics(lambda x, s: x, [0.0], [1.0], 0.1, np.zeros((2, 1, 1))), "noises"),
        (lambda: ncsn.annealed_langevin_dynamics(lambda x, s: x, [0.0], [1.0], -0.1, np.zeros((1, 1, 1))), "epsilon"),
        (lambda: ncsn.annealed_langevin_dynamics(lambda x, s: [1.0, 2.0], [0.0], [1.0], 0.1, np.zeros((1, 1, 1))), "score_fn"),
        (lambda: ncsn.dsm_loss_per_sample([[1.0]], [[0.0]], [[0.5]], 0.0), "sigma"),
        (lambda: ncsn.dsm_loss_per_sample([[1.0]], [[0.0, 1.0]], [[0.5]], 0.5), "x"),
        (lambda: ncsn.dsm_loss_per_sample([[1.0], [2.0]], [[0.0], [1.0]], [[0.5], [1.0]], [0.5, 0.5, 0.5]), "sigma"),
        (lambda: ncsn.annealed_dsm_loss([[1.0]], [[0.0]], [[0.5]], 0.5, weight_power=float("nan")), "weight_power"),
    ],
)
def test_bad_arguments_are_named(call, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}="):
        call()


# ---------------------------------------------------------------------------------------------------
# power: each property fails on a planted bug
# ---------------------------------------------------------------------------------------------------


def _linear_ladder(sigma_max: float, sigma_min: float, num_levels: int) -> np.ndarray:
    return np.linspace(sigma_max, sigma_min, num_levels)  # arithmetic instead of geometric


def _alpha_for_sqrt_alpha(x, score, step_size, noise):  # √α z written as α z
    return np.asarray(x) + 0.5 * step_size * np.asarray(score) + step_size * np.asarray(noise)


def _sigma_for_sigma_squared(score, x, x_noisy, sigma):  # (x̃ − x)/σ instead of /σ²
    s, xx, xn = (np.asarray(a, dtype=float) for a in (score, x, x_noisy))
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (s.shape[0],)).reshape((-1,) + (1,) * (s.ndim - 1))
    r = s + (xn - xx) / sig
    return 0.5 * (r * r).reshape(r.shape[0], -1).sum(axis=1)


@pytest.mark.parametrize(
    "module, name, bug, prop",
    [
        (ncsn, "geometric_sigmas", _linear_ladder, P.test_geometric_ladder_has_a_constant_ratio_and_exact_ends),
        (langevin, "annealed_langevin_step", _alpha_for_sqrt_alpha,
         P.test_annealed_langevin_on_a_gaussian_score_is_the_derived_affine_map),
        (ncsn, "dsm_loss_per_sample", _sigma_for_sigma_squared,
         P.test_dsm_loss_expectation_is_the_closed_form_and_the_noisy_score_minimises_it),
        (ncsn, "annealed_dsm_loss", lambda score, x, x_noisy, sigma, weight_power=2.0:
         float(np.mean(np.asarray(sigma) * ncsn.dsm_loss_per_sample(score, x, x_noisy, sigma))),  # λ = σ, not σ²
         P.test_sigma_squared_weighting_is_half_the_norm_of_sigma_score_plus_z),
    ],
)
def test_each_ncsn_property_catches_a_planted_bug(monkeypatch: pytest.MonkeyPatch, module, name: str, bug, prop) -> None:
    monkeypatch.setattr(module, name, bug)
    with pytest.raises(AssertionError):
        run_quickly(prop)


def run_quickly(prop) -> None:
    """Run a Hypothesis property on 40 derandomized examples, without shrinking (for planted-bug power tests).

    The property's undecorated function (``prop.hypothesis.inner_test``, Hypothesis' documented API;
    every property takes one ``data`` argument) is wrapped afresh, so the collected test is never
    mutated and may run again in the same session (as tests/quality/test_property_power_part1.py does).
    """
    from hypothesis import Phase, given, settings
    from hypothesis import strategies as st

    inner = prop.hypothesis.inner_test
    settings(max_examples=40, phases=(Phase.generate,), database=None, derandomize=True, deadline=None,
             report_multiple_bugs=False)(given(data=st.data())(inner))()
