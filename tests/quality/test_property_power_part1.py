r"""Every property of ``tests/properties`` (part 1: forward, posterior, parameterisation, DDIM) proves its power.

For each identity, a deliberately broken reference function is patched into the module attribute
that the property calls, and the property must then FAIL with an ``AssertionError`` (its own
assertion, not an exception of the reference). A control re-runs every property unpatched under
the same settings and must pass, so that a failure is due to the planted bug.

How a property is re-run (the approach, and why it is robust)
--------------------------------------------------------------

Every property test takes exactly one argument, ``data``, drawn from ``st.data()`` (a convention of
``tests/properties``, checked here). Hypothesis keeps the undecorated function as
``test_fn.hypothesis.inner_test`` (documented API), so :func:`run_property` wraps that function
*afresh*, ``settings(...)(given(data=st.data())(inner))``, and calls it:

* nothing of the original test is mutated (applying ``settings`` to the collected test itself would
  change its settings for the rest of the session);
* ``derandomize=True, database=None``: the same examples every run, no state carried between runs,
  so a power test is deterministic;
* ``phases=(Phase.generate,)``: no shrinking (the first failing example is enough, and fast);
  ``report_multiple_bugs=False``: one exception, not an ExceptionGroup;
* ``max_examples=50`` (the dev profile's count): measured, every planted bug below fails within the
  first 5 derandomized examples, and on 28 %–93 % of random examples (so a dev-profile run of the
  property itself misses a bug with probability < 0.72⁵⁰ ≈ 1e-7).

The bugs are patched with pytest's ``monkeypatch`` (undone after each test). The properties call
the reference through module attributes (``posterior.beta_tilde(...)``, never a from-import), and
the reference's own callers look their helpers up as module globals (``posterior.q_posterior`` calls
``posterior_coefficients``; ``ddim.q_sigma`` is patched as a whole), so a patch reaches the property.
The broken functions are written from the equations with the bug, using the *original* reference
functions captured when this module is imported (before any patch).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ddspec.reference import alphas, ddim, forward, parameterisation, posterior
from ddspec.reference.gaussian import Gaussian

from ..properties import test_ddim_properties as DDIM
from ..properties import test_forward_properties as FWD
from ..properties import test_parameterisation_properties as PAR
from ..properties import test_posterior_properties as POST

# --------------------------------------------------------------------------------------------------
# running a property with power settings
# --------------------------------------------------------------------------------------------------


def run_property(test_fn: Callable[..., None], max_examples: int = 50) -> None:
    """Run the property ``test_fn`` (an ``@given(st.data())`` test) afresh under deterministic power settings."""
    inner = test_fn.hypothesis.inner_test
    assert list(inspect.signature(inner).parameters) == ["data"], f"{test_fn.__name__} must take exactly (data)"
    wrapped = settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )(given(data=st.data())(inner))
    wrapped()


ALL_PROPERTIES = [
    FWD.test_alpha_bar_is_the_running_product_of_alphas,
    FWD.test_forward_transitions_compose,
    POST.test_bayes_rule_links_posterior_and_forward,
    POST.test_beta_tilde_closed_forms_and_bounds,
    POST.test_posterior_mean_at_predicted_x0_is_ddpm_eq11,
    PAR.test_eps_x0_round_trip,
    PAR.test_v_round_trip,
    PAR.test_score_is_minus_eps_over_sigma,
    DDIM.test_q_sigma_preserves_the_forward_marginals,
    DDIM.test_eta_one_is_the_ddpm_posterior,
    DDIM.test_eta_one_on_a_subsequence_is_the_respaced_posterior,
    DDIM.test_eta_zero_is_deterministic,
]

# --------------------------------------------------------------------------------------------------
# the originals, captured before any patch
# --------------------------------------------------------------------------------------------------

_alpha_bar = alphas.alpha_bar
_alpha_bar_at = alphas.alpha_bar_at
_alpha_bar_ratio = alphas.alpha_bar_ratio
_one_minus_alpha_bar_at = alphas.one_minus_alpha_bar_at
_one_minus_alpha_bar_ratio = alphas.one_minus_alpha_bar_ratio
_sqrt_alpha_bar = alphas.sqrt_alpha_bar
_sqrt_one_minus_alpha_bar = alphas.sqrt_one_minus_alpha_bar
_posterior_coefficients = posterior.posterior_coefficients
_q_posterior = posterior.q_posterior
_ddim_sigma = ddim.ddim_sigma


def _t_prev(t: int, t_prev: int | None) -> int:
    return t - 1 if t_prev is None else t_prev


# --------------------------------------------------------------------------------------------------
# planted bugs (each a fixture that patches one module attribute)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def alpha_bar_off_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """ᾱ off by one index: ``alpha_bar(betas)[i]`` returns ᾱ at index i − 1 (ᾱ_{t−1} where ᾱ_t belongs)."""
    monkeypatch.setattr(alphas, "alpha_bar", lambda betas: np.concatenate([[1.0], _alpha_bar(betas)[:-1]]))


@pytest.fixture
def q_marginal_off_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """q(x_t | x₀) built from ᾱ at index t − 1 (the classic 0-/1-based mix-up)."""

    def broken(x0, t, betas):
        ab = float(_alpha_bar_at(betas, t - 1))
        return Gaussian(np.sqrt(ab) * np.asarray(x0, dtype=np.float64), np.float64(float(_one_minus_alpha_bar_at(betas, t - 1))))

    monkeypatch.setattr(forward, "q_marginal", broken)


@pytest.fixture
def q_transition_variance_uses_alpha_bar_t(monkeypatch: pytest.MonkeyPatch) -> None:
    """q(x_t | x_s) with variance 1 − ᾱ_t instead of 1 − ᾱ_t/ᾱ_s (mean still √(ᾱ_t/ᾱ_s))."""

    def broken(x_s, t, s, betas):
        keep = float(_alpha_bar_ratio(betas, t, s))
        return Gaussian(np.sqrt(keep) * np.asarray(x_s, dtype=np.float64), np.float64(float(_one_minus_alpha_bar_at(betas, t))))

    monkeypatch.setattr(forward, "q_transition", broken)


@pytest.fixture
def q_posterior_variance_is_beta(monkeypatch: pytest.MonkeyPatch) -> None:
    """The posterior q(x_{t−1} | x_t, x₀) with variance β_t: β where β̃ belongs (mean unchanged)."""

    def broken(x0, x_t, t, betas, t_prev=None):
        g = _q_posterior(x0, x_t, t, betas, t_prev)
        return Gaussian(g.mean, np.float64(float(_one_minus_alpha_bar_ratio(betas, t, _t_prev(t, t_prev)))))

    monkeypatch.setattr(posterior, "q_posterior", broken)


@pytest.fixture
def beta_tilde_is_beta(monkeypatch: pytest.MonkeyPatch) -> None:
    """β̃ = β: the posterior variance table returns the betas."""
    monkeypatch.setattr(posterior, "beta_tilde", lambda betas: np.array(betas, dtype=np.float64))


@pytest.fixture
def posterior_coef_missing_sqrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The posterior mean's x_t coefficient with α_t instead of √α_t: (1 − ᾱ_{t−1}) α_t/(1 − ᾱ_t).

    Patches ``posterior.posterior_coefficients``, which ``posterior_mean`` and ``q_posterior`` call.
    """

    def broken(betas, t, t_prev=None):
        pc = _posterior_coefficients(betas, t, t_prev)
        keep = float(_alpha_bar_ratio(betas, t, _t_prev(t, t_prev)))
        return posterior.PosteriorCoefficients(pc.coef_x0, np.float64(float(pc.coef_xt) * np.sqrt(keep)), pc.variance)

    monkeypatch.setattr(posterior, "posterior_coefficients", broken)


def _roots(betas, t):
    return float(_sqrt_alpha_bar(betas)[t]), float(_sqrt_one_minus_alpha_bar(betas)[t])


@pytest.fixture
def predict_x0_wrong_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    """x̂₀ = (x_t + √(1−ᾱ) ε)/√ᾱ: the sign of the noise term flipped."""

    def broken(x_t, eps, t, betas):
        sa, s1 = _roots(betas, t)
        return (np.asarray(x_t, dtype=np.float64) + s1 * np.asarray(eps, dtype=np.float64)) / sa

    monkeypatch.setattr(parameterisation, "predict_x0_from_eps", broken)


@pytest.fixture
def v_swapped_coefficients(monkeypatch: pytest.MonkeyPatch) -> None:
    """v = √(1−ᾱ) ε − √ᾱ x₀: the two coefficients swapped."""

    def broken(x0, eps, t, betas):
        sa, s1 = _roots(betas, t)
        return s1 * np.asarray(eps, dtype=np.float64) - sa * np.asarray(x0, dtype=np.float64)

    monkeypatch.setattr(parameterisation, "v_from_x0_eps", broken)


@pytest.fixture
def score_missing_sqrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """score = −ε/(1 − ᾱ): the square root of the noise variance missing."""

    def broken(eps, t, betas):
        _, s1 = _roots(betas, t)
        return -np.asarray(eps, dtype=np.float64) / (s1 * s1)

    monkeypatch.setattr(parameterisation, "score_from_eps", broken)


@pytest.fixture
def ddim_sigma_missing_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    """σ(η) = η √(1 − ᾱ_t/ᾱ_s): DDIM eq. 16 without the factor √((1 − ᾱ_s)/(1 − ᾱ_t))."""

    def broken(betas, t, t_prev, eta):
        return float(eta) * float(np.sqrt(_one_minus_alpha_bar_ratio(betas, t, t_prev)))

    monkeypatch.setattr(ddim, "ddim_sigma", broken)


@pytest.fixture
def q_sigma_mean_ignores_sigma(monkeypatch: pytest.MonkeyPatch) -> None:
    """q_σ's mean with √(1 − ᾱ_s) where √(1 − ᾱ_s − σ²) belongs (variance still σ²)."""

    def broken(x0, x_t, t, t_prev, sigma, betas):
        x0 = np.asarray(x0, dtype=np.float64)
        x_t = np.asarray(x_t, dtype=np.float64)
        sa_t = float(np.sqrt(_alpha_bar_at(betas, t)))
        s1_t = float(np.sqrt(_one_minus_alpha_bar_at(betas, t)))
        sa_s = float(np.sqrt(_alpha_bar_at(betas, t_prev)))
        s1_s = float(np.sqrt(_one_minus_alpha_bar_at(betas, t_prev)))
        eps = (x_t - sa_t * x0) / s1_t
        return Gaussian(sa_s * x0 + s1_s * eps, np.float64(float(sigma) ** 2))

    monkeypatch.setattr(ddim, "q_sigma", broken)


@pytest.fixture
def ddim_sigma_ignores_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    """σ(η) computed as σ(1) whatever η: η = 0 no longer gives the deterministic DDIM."""
    monkeypatch.setattr(ddim, "ddim_sigma", lambda betas, t, t_prev, eta: _ddim_sigma(betas, t, t_prev, 1.0))


# --------------------------------------------------------------------------------------------------
# the cases: (planted bug, property that must catch it)
# --------------------------------------------------------------------------------------------------

CASES = [
    # property 1: forward
    ("alpha_bar_off_by_one", FWD.test_alpha_bar_is_the_running_product_of_alphas),
    ("q_marginal_off_by_one", FWD.test_forward_transitions_compose),
    ("q_transition_variance_uses_alpha_bar_t", FWD.test_forward_transitions_compose),
    # property 2: Bayes
    ("q_marginal_off_by_one", POST.test_bayes_rule_links_posterior_and_forward),
    ("q_posterior_variance_is_beta", POST.test_bayes_rule_links_posterior_and_forward),
    ("posterior_coef_missing_sqrt", POST.test_bayes_rule_links_posterior_and_forward),
    # property 3: β̃ and the posterior mean
    ("beta_tilde_is_beta", POST.test_beta_tilde_closed_forms_and_bounds),
    ("posterior_coef_missing_sqrt", POST.test_posterior_mean_at_predicted_x0_is_ddpm_eq11),
    ("predict_x0_wrong_sign", POST.test_posterior_mean_at_predicted_x0_is_ddpm_eq11),
    # property 4: parameterisations
    ("predict_x0_wrong_sign", PAR.test_eps_x0_round_trip),
    ("v_swapped_coefficients", PAR.test_v_round_trip),
    ("score_missing_sqrt", PAR.test_score_is_minus_eps_over_sigma),
    # property 5: DDIM Lemma 1
    ("q_sigma_mean_ignores_sigma", DDIM.test_q_sigma_preserves_the_forward_marginals),
    # property 6: η = 1 and η = 0
    ("ddim_sigma_missing_factor", DDIM.test_eta_one_is_the_ddpm_posterior),
    ("q_posterior_variance_is_beta", DDIM.test_eta_one_is_the_ddpm_posterior),
    ("posterior_coef_missing_sqrt", DDIM.test_eta_one_is_the_ddpm_posterior),
    ("q_sigma_mean_ignores_sigma", DDIM.test_eta_one_is_the_ddpm_posterior),
    ("ddim_sigma_missing_factor", DDIM.test_eta_one_on_a_subsequence_is_the_respaced_posterior),
    ("q_sigma_mean_ignores_sigma", DDIM.test_eta_one_on_a_subsequence_is_the_respaced_posterior),
    ("posterior_coef_missing_sqrt", DDIM.test_eta_one_on_a_subsequence_is_the_respaced_posterior),
    ("ddim_sigma_ignores_eta", DDIM.test_eta_zero_is_deterministic),
]


@pytest.mark.parametrize(("bug", "prop"), CASES, ids=[f"{bug}-{prop.__name__}" for bug, prop in CASES])
def test_planted_bug_makes_the_property_fail(bug: str, prop: Callable[..., None], request: pytest.FixtureRequest) -> None:
    """With the bug patched in, the property's own assertion fails on one of its derandomized examples."""
    request.getfixturevalue(bug)
    with pytest.raises(AssertionError):
        run_property(prop)


def test_every_property_has_a_planted_bug() -> None:
    """No property of part 1 is left without a bug that it must catch."""
    covered = {prop for _, prop in CASES}
    missing = [p.__name__ for p in ALL_PROPERTIES if p not in covered]
    assert not missing, f"properties without a planted bug: {missing}"


@pytest.mark.parametrize("prop", ALL_PROPERTIES, ids=[p.__name__ for p in ALL_PROPERTIES])
def test_property_passes_unpatched_under_power_settings(prop: Callable[..., None]) -> None:
    """Control: the same derandomized run passes on the unpatched reference, so each failure above is the bug's."""
    run_property(prop)
