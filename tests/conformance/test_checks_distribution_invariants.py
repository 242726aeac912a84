r"""Tests for ddspec.conformance.checks.distribution and ddspec.conformance.checks.invariants.

What is asserted, and where the expectations come from:

* Known-good targets pass: the bundled reference port (DDIM and DDPM, float32 and float64, two
  seeds) and its variants (clipping, thresholding, v-prediction, fixed_large, zero terminal SNR);
  diffusers' DDPMScheduler() and DDIMScheduler() defaults pass, and the Stable-Diffusion-style DDIM
  (``set_alpha_to_one=False``) is ``acceptable`` with its consequence.
* Planted bugs fail the check written for them (in-place mutation, a float32 output in a float64 run,
  NaN, drawing from the global RNG, batch coupling, noise at the final step, σ² used as σ).
* Real diffusers discrepancies are detected exactly when diffusers shows them: the ground truth is
  read from diffusers directly in each test (NaN output, final-step noise, the DDIM previous
  timestep), so the tests keep meaning something if diffusers changes.
* Robustness: a target that raises, hangs, returns the wrong thing or declares unsupported
  conventions yields ``fail``/``unsupported`` results, never a crash.
* Bookkeeping: the Bonferroni split derived from the design (α over 2 tests per stochastic step;
  over 3 tests per step count), the ledger of each result, and the rounding-allowance envelope.

Every run uses the quick profile and fixed seeds: the statistical results are deterministic, and the
probability that a seed is unlucky for a correct target is at most 1e-6 per statistical result.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
import torch

from ddspec.conformance.checks import distribution, invariants
from ddspec.conformance.context import PROFILES, CheckContext
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import Verdict
from ddspec.conformance.runner import run_checks
from ddspec.conformance.torch_port import make_reference_port
from ddspec.reference.ddim import ddim_sigma

ALL = distribution.CHECKS + invariants.CHECKS


def _quick():
    """The quick profile as the tests run it (tests/conftest.py lowers its false-failure rate)."""
    return PROFILES["quick"]
INVARIANT_NAMES = {
    "invariants.no_input_mutation",
    "invariants.output_shape_dtype_device",
    "invariants.finite",
    "invariants.deterministic",
    "invariants.batch_independence",
    "invariants.no_final_noise",
    "invariants.no_global_rng",
}


def _run(sampler, dtype="float32", seed=0, checks=ALL, **kwargs):
    """Run ``checks`` through the runner (quick profile); results by name."""
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=seed, **kwargs)
    report = run_checks(sampler, ctx, checks)
    return {r.name: r for r in report.checks}


def _verdicts(results):
    return {name: r.verdict for name, r in results.items()}


def _failing(results):
    return {name for name, r in results.items() if r.verdict is Verdict.FAIL}


def _expected_names(family):
    if family == "ddim":
        variants = [f"eta={eta:g}" for eta in _quick().etas]
    else:
        variants = ["variance_type=fixed_small"]
    return INVARIANT_NAMES | {f"distribution.{c}.{v}" for c in ("step_moments", "run_output") for v in variants}


# ---------------------------------------------------------------------------------------------------
# Known-good targets
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("family", ["ddim", "ddpm"])
def test_reference_port_passes(family, dtype, seed):
    results = _run(make_reference_port(family=family), dtype, seed)
    assert set(results) == _expected_names(family)
    bad = {n: (r.verdict.value, r.message) for n, r in results.items() if r.verdict is not Verdict.PASS}
    assert not bad, bad


@pytest.mark.parametrize(
    "overrides",
    [
        dict(family="ddpm", clip_sample=True),
        dict(family="ddim", thresholding=True),
        dict(family="ddim", prediction_type="v_prediction", timestep_spacing="trailing"),
        dict(family="ddpm", prediction_type="sample", variance_type="fixed_large"),
        dict(family="ddim", beta_schedule="cosine", prediction_type="v_prediction", clip_sample=True),
    ],
    ids=["ddpm-clip", "ddim-threshold", "ddim-v-trailing", "ddpm-sample-large", "ddim-cosine-v-clip"],
)
def test_reference_port_variants_pass(overrides):
    results = _run(make_reference_port(**overrides))
    bad = {n: (r.verdict.value, r.message) for n, r in results.items() if r.verdict is not Verdict.PASS}
    assert not bad, bad


def _one_step_clip_tail(scale, beta_0, n, r=1.0):
    r"""Union bound on P(some chain's x0* leaves [-r, r]) for the single step t = 0 -> data from
    x ~ N(0, 1), data N(mu, s^2) with mu = scale r (0.1, -0.1, 0.05, 0), s = 0.1 scale r (closed form):
    x0* = mu + a0 (x - sqrt(abar) mu), a0 = sqrt(abar) s^2 / (abar s^2 + 1 - abar), abar = 1 - beta_0,
    so x0* ~ N(mu (1 - sqrt(abar) a0), a0^2) per coordinate; summed over n chains and 4 coordinates."""
    from scipy.stats import norm

    abar = 1.0 - beta_0
    mu = scale * r * np.array([0.1, -0.1, 0.05, 0.0])
    s2 = (0.1 * scale * r) ** 2
    a0 = math.sqrt(abar) * s2 / (abar * s2 + beta_0)
    m = mu * (1.0 - math.sqrt(abar) * a0)
    return n * float(np.sum(norm.sf((r - m) / a0) + norm.cdf((-r - m) / a0)))


def test_clipping_uses_the_bounded_oracle_and_charges_its_tail():
    results = _run(make_reference_port(family="ddpm", clip_sample=True), checks=[distribution.check_run_output_distribution])
    r = results["distribution.run_output.variance_type=fixed_small"]
    assert r.verdict is Verdict.PASS
    oracle = distribution.data_oracle(1.0)
    assert r.details["oracle"]["clip_range"] == 1.0
    np.testing.assert_array_equal(r.details["oracle"]["mean"], oracle.mean)
    alpha, n = _quick().false_failure_rate, _quick().n_distribution_samples
    limit = distribution.CLIP_TAIL_FRACTION * alpha / len(_quick().steps)
    # every step count is judged, none skipped for clipping
    runs = {run["num_steps"]: run for run in r.details["runs"]}
    assert sorted(runs) == sorted(_quick().steps)
    assert not any("clipped" in note for note in r.details["notes"])
    # leading spacing with N = 1 is the single step t = 0 -> data from N(0, I): with the default clipped
    # law x0 ~ 0.99 x_T leaves [-1, 1] with probability ~0.3 per coordinate, so the data law is scaled
    # down to the largest scale of the ladder whose (closed-form) tail fits the budget
    scales = distribution.CLIP_DATA_SCALES
    chosen = runs[1]["data_scale"]
    i = scales.index(chosen)
    assert i > 0 and _one_step_clip_tail(chosen, 1e-4, n) < limit / 10
    assert _one_step_clip_tail(scales[i - 1], 1e-4, n) > 10 * limit
    assert runs[1]["clip_tail_probability"] == pytest.approx(_one_step_clip_tail(chosen, 1e-4, n), rel=0.05)
    np.testing.assert_allclose(runs[1]["data_mean"], chosen * oracle.mean, rtol=1e-15)
    # N = 10 follows the marginals closely: the default clipped law is kept
    assert runs[10]["data_scale"] == 1.0
    for run in runs.values():
        assert 0.0 < run["clip_tail_probability"] <= limit
    assert any("clipping active" in line for line in r.details["ledger"])


def test_clipped_fixed_large_ddpm_is_judged_at_every_step_count():
    # diffusers' DDPMScheduler(variance_type="fixed_large") clips by default: beta' > beta_tilde' widens
    # the state before the last step beyond the marginal, so the default clipped law leaves [-1, 1] there
    # (a union bound >> 1); a smaller data scale keeps the check judging every N
    port = make_reference_port(family="ddpm", variance_type="fixed_large", clip_sample=True)
    limit = distribution.CLIP_TAIL_FRACTION * _quick().false_failure_rate / len(_quick().steps)
    for dtype in ("float32", "float64"):
        r = _run(port, dtype, checks=[distribution.check_run_output_distribution])["distribution.run_output.variance_type=fixed_large"]
        assert r.verdict is Verdict.PASS, r.message
        assert [run["num_steps"] for run in r.details["runs"]] == sorted(_quick().steps)
        for run in r.details["runs"]:
            assert run["data_scale"] < 1.0 and 0.0 < run["clip_tail_probability"] <= limit


def test_clipping_that_no_data_scale_avoids_is_skipped_with_the_union_bound():
    # beta_0 = 1e-8: at t = 0, a0 = s^2 / (s^2 + 1e-8) ~ 1 down to the smallest scale (s = 1e-3), so the
    # N = 1 run's x0 ~ N(0, 1) leaves [-1, 1] in ~32 % of the 8000 (chain, coordinate) pairs
    port = make_reference_port(family="ddim", clip_sample=True, beta_start=1e-8)
    results = _run(port, "float64", checks=[distribution.check_run_output_distribution], steps=(1,))
    expected = _one_step_clip_tail(distribution.CLIP_DATA_SCALES[-1], 1e-8, _quick().n_distribution_samples)
    assert expected > 1000
    for r in results.values():
        assert r.verdict is Verdict.SKIPPED, r.message
        assert "the union bound on the chance that some chain's x0" in r.message and "> the budget" in r.message
        assert "probability" not in r.message
        reported = float(r.message.split("at some step is ", 1)[1].split(" ", 1)[0])
        assert reported == pytest.approx(expected, rel=0.01)


def test_clip_range_below_the_rounding_margin_is_skipped():
    # float32 eps-prediction at t = 900: the x0 conversion's rounding (~gamma_12(2^-24) |x| / sqrt(abar))
    # exceeds a clip range of 1e-4, so no run can guarantee an unclipped x0
    port = make_reference_port(family="ddim", clip_sample=True, clip_sample_range=1e-4)
    results = _run(port, checks=[distribution.check_run_output_distribution])
    for r in results.values():
        assert r.verdict is Verdict.SKIPPED, r.message
        assert "clipped/thresholded" in r.message and "leaves no room" in r.message
        assert "probability" not in r.message


def test_point_mass_output_law_is_checked_without_statistics():
    # zero terminal SNR + v-prediction + trailing: N = 1 is one step from alpha_bar = 0, where x0* = m
    # exactly; with eta = 0 the output law is the point mass at m (variance 0)
    port = make_reference_port(family="ddim", rescale_betas_zero_snr=True, prediction_type="v_prediction",
                               timestep_spacing="trailing")
    results = _run(port, checks=[distribution.check_run_output_distribution])
    r = results["distribution.run_output.eta=0"]
    assert r.verdict is Verdict.PASS, r.message
    first = r.details["runs"][0]
    assert first["num_steps"] == 1
    np.testing.assert_array_equal(first["law_variance"], 0.0)
    np.testing.assert_allclose(first["law_mean"], distribution.data_oracle().mean, rtol=0, atol=1e-15)
    # only N = 10 spends alpha: 3 tests
    assert r.details["alpha_per_test"] == pytest.approx(_quick().false_failure_rate / 3, rel=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_learned_range_run_output_is_checked_against_its_closed_form(dtype):
    """The harness is the model, so it supplies the variance output too (a fixed, known function of t):
    the run law of a learned_range DDPM is closed-form again and is checked, not unsupported."""
    results = _run(make_reference_port(family="ddpm", variance_type="learned_range"), dtype=dtype)
    assert results["distribution.step_moments.variance_type=learned_range"].verdict is Verdict.PASS
    r = results["distribution.run_output.variance_type=learned_range"]
    assert r.verdict is Verdict.PASS, r.message
    assert r.details["variance_type"] == "learned_range" and "sin" in r.details["model_variance_output"]


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_diffusers_learned_variances_run_output_passes(variance_type):
    """diffusers' ``learned`` takes the variance itself, ``learned_range`` the fraction m ∈ [−1, 1]: both
    are fed the harness's known variance output and match the closed-form law."""
    from diffusers import DDPMScheduler

    from ddspec.conformance.adapters import adapt

    sampler = adapt(DDPMScheduler(variance_type=variance_type))
    results = _run(sampler, checks=[distribution.check_run_output_distribution])
    r = results[f"distribution.run_output.variance_type={variance_type}"]
    assert r.verdict is Verdict.PASS, r.message


class _FlippedRange:
    """A learned_range DDPM that reads the model's variance output with the wrong sign (m → −m: the
    interpolation of Nichol & Dhariwal eq. 15 runs from β′ to β̃′ instead of from β̃′ to β′)."""

    def __new__(cls):
        from ddspec.conformance.torch_port import ReferencePort

        class Flipped(ReferencePort):
            def step(self, model_output, t, x_t, *, predicted_variance=None, **kw):
                pv = None if predicted_variance is None else -predicted_variance
                return super().step(model_output, t, x_t, predicted_variance=pv, **kw)

        return Flipped(family="ddpm", variance_type="learned_range", name="flipped-learned-range")


def test_learned_range_run_output_catches_a_flipped_variance_fraction():
    """Power: with the harness's variance output f(t) ∈ [0.1, 0.9], flipping m moves every noisy step's
    variance towards the other end (β′ ↔ β̃′, a ratio up to ~10 at small t for N = 10), which the run
    law's variance test sees (observed/allowed 2.2 at seed 0 in the quick profile)."""
    results = _run(_FlippedRange(), checks=[distribution.check_run_output_distribution])
    r = results["distribution.run_output.variance_type=learned_range"]
    assert r.verdict is Verdict.FAIL, r.message


# ---------------------------------------------------------------------------------------------------
# diffusers
# ---------------------------------------------------------------------------------------------------


def _diffusers():
    import diffusers  # a test dependency ([test] extra): never skipped

    return diffusers


def _adapt(scheduler):
    from ddspec.conformance.adapters import adapt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adapt(scheduler)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", ["DDPMScheduler", "DDIMScheduler"])
def test_diffusers_defaults_pass(which, dtype):
    cls = getattr(_diffusers(), which)
    results = _run(_adapt(cls()), dtype)
    bad = {n: (r.verdict.value, r.message) for n, r in results.items() if r.verdict is not Verdict.PASS}
    assert not bad, bad


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stable_diffusion_ddim_is_acceptable(dtype):
    d = _diffusers()
    sched = d.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                            set_alpha_to_one=False, steps_offset=1, clip_sample=False)
    results = _run(_adapt(sched), dtype)
    verdicts = _verdicts(results)
    assert set(verdicts.values()) <= {Verdict.PASS, Verdict.ACCEPTABLE}, {
        n: r.message for n, r in results.items() if r.verdict not in (Verdict.PASS, Verdict.ACCEPTABLE)}
    variant = [n for n in verdicts if n.startswith("distribution.") or n == "invariants.no_final_noise"]
    for name in variant:
        assert verdicts[name] is Verdict.ACCEPTABLE, name
        assert "set_alpha_to_one=False" in results[name].consequence
    # with eta > 0 the declared last step (t=1 -> 0) is stochastic: tested statistically, not as "no noise"
    positions = results["distribution.step_moments.eta=1"].details["positions"]
    assert positions[-1]["t_prev"] == 0 and positions[-1]["kind"] == "stochastic"


def test_diffusers_ddpm_fixed_large_log_nan_is_detected():
    d = _diffusers()
    sched = d.DDPMScheduler(variance_type="fixed_large_log")
    sched.set_timesteps(10)
    z = torch.zeros(1, 1, 2, 2)
    upstream_nan = bool(torch.isnan(sched.step(z, 900, z, generator=torch.Generator().manual_seed(0)).prev_sample).any())
    results = _run(_adapt(d.DDPMScheduler(variance_type="fixed_large_log")),
                   checks=[invariants.check_finite, distribution.check_step_moments])
    # diffusers 0.42 takes the square root of log(beta) (step(): `_get_variance(t) ** 0.5`): NaN for t > 0
    assert (results["invariants.finite"].verdict is Verdict.FAIL) == upstream_nan
    assert (results["distribution.step_moments.variance_type=fixed_large_log"].verdict is Verdict.FAIL) == upstream_nan


def test_diffusers_ddpm_final_step_noise_is_detected():
    d = _diffusers()
    sched = d.DDPMScheduler(variance_type="fixed_large", timestep_spacing="trailing")
    sched.set_timesteps(10)
    t_last = int(sched.timesteps[-1])
    z = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    a, b = (sched.step(z, t_last, z, generator=torch.Generator().manual_seed(k)).prev_sample for k in (0, 1))
    upstream_noisy = not torch.equal(a, b)  # diffusers adds noise when t > 0, not when t_prev >= 0
    results = _run(_adapt(d.DDPMScheduler(variance_type="fixed_large", timestep_spacing="trailing")), "float64",
                   checks=[invariants.check_no_final_noise, distribution.check_step_moments])
    assert (results["invariants.no_final_noise"].verdict is Verdict.FAIL) == upstream_noisy
    sm = results["distribution.step_moments.variance_type=fixed_large"]
    assert (sm.verdict is Verdict.FAIL) == upstream_noisy
    if upstream_noisy:
        assert "the target adds noise" in sm.message


def test_diffusers_ddim_linspace_previous_timestep_is_detected():
    d = _diffusers()
    sched = d.DDIMScheduler(timestep_spacing="linspace", clip_sample=False)
    sched.set_timesteps(10)
    ts = sched.timesteps.tolist()
    # diffusers DDIM steps from t to t - T // N whatever the spacing; linspace(0, 999, 10) has stride 111
    upstream_mismatch = sched.previous_timestep(ts[0]) != ts[1] if hasattr(sched, "previous_timestep") else (
        ts[0] - sched.config.num_train_timesteps // 10 != ts[1])
    results = _run(_adapt(d.DDIMScheduler(timestep_spacing="linspace", clip_sample=False)),
                   checks=[distribution.check_run_output_distribution])
    r = results["distribution.run_output.eta=0"]
    assert (r.verdict is Verdict.FAIL) == bool(upstream_mismatch), r.message


# ---------------------------------------------------------------------------------------------------
# Planted bugs
# ---------------------------------------------------------------------------------------------------


class Planted:
    """The reference port with one bug planted in its step."""

    def __init__(self, bug: str, **port_kwargs):
        self.base = make_reference_port(**port_kwargs)
        self.bug = bug
        self.name = f"planted-{bug}"
        self.conventions = self.base.conventions

    def betas(self):
        return self.base.betas()

    def alphas_cumprod(self):
        return self.base.alphas_cumprod()

    def timesteps(self, num_steps):
        return self.base.timesteps(num_steps)

    @staticmethod
    def _z(x_t, noise, generator):
        if noise is not None:
            return noise.to(x_t)
        return torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)

    def step(self, model_output, t, x_t, *, num_steps, eta=0.0, noise=None, generator=None, predicted_variance=None):
        kw = dict(num_steps=num_steps, eta=eta, noise=noise, generator=generator, predicted_variance=predicted_variance)
        ts = self.base.timesteps(num_steps).tolist()
        if self.bug == "mutate":
            out = self.base.step(model_output, t, x_t, **kw)
            x_t.copy_(out)  # an in-place update of the caller's x_t
            return out
        if self.bug == "float32":
            return self.base.step(model_output, t, x_t, **kw).to(torch.float32)
        if self.bug == "nan":
            out = self.base.step(model_output, t, x_t, **kw).clone()
            out.view(-1)[0] = math.nan
            return out
        if self.bug == "global_rng":  # ignores noise and generator
            kw.update(noise=torch.randn(x_t.shape, dtype=x_t.dtype, device=x_t.device), generator=None)
            return self.base.step(model_output, t, x_t, **kw)
        if self.bug == "batch_mean":
            out = self.base.step(model_output, t, x_t, **kw)
            return out - out.mean(dim=0, keepdim=True)
        if self.bug == "final_noise":
            out = self.base.step(model_output, t, x_t, **kw)
            if t == ts[-1]:
                out = out + math.sqrt(float(self.base.betas()[t])) * self._z(x_t, noise, generator)
            return out
        if self.bug == "sigma_squared":
            k = ts.index(t)
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            sigma = ddim_sigma(self.base.betas(), t, t_prev, eta)
            kw.update(noise=torch.zeros_like(x_t), generator=None)
            mean = self.base.step(model_output, t, x_t, **kw)
            return mean if sigma == 0.0 else mean + sigma**2 * self._z(x_t, noise, generator)
        raise AssertionError(self.bug)


@pytest.mark.parametrize(
    "bug, dtype, must_fail, only",
    [
        ("mutate", "float32", {"invariants.no_input_mutation"}, True),
        ("float32", "float64", {"invariants.output_shape_dtype_device"}, False),
        ("nan", "float32", {"invariants.finite", "distribution.step_moments.eta=1",
                            "distribution.run_output.eta=1"}, False),
        ("global_rng", "float32", {"invariants.deterministic", "invariants.no_global_rng"}, False),
        ("batch_mean", "float32", {"invariants.batch_independence"}, False),
        ("final_noise", "float32", {"invariants.no_final_noise", "distribution.step_moments.eta=0",
                                    "distribution.step_moments.eta=1"}, False),
        ("sigma_squared", "float32", {"distribution.step_moments.eta=1"}, False),
    ],
)
def test_planted_bug_fails_its_check(bug, dtype, must_fail, only):
    results = _run(Planted(bug), dtype)
    failing = _failing(results)
    assert must_fail <= failing, {n: results[n].message for n in must_fail - failing}
    if only:
        assert failing == must_fail, failing
    for name in must_fail:
        assert results[name].findings, name
        assert results[name].reproduce and name in results[name].reproduce


def test_sigma_squared_bug_fails_through_the_variance_not_the_mean():
    results = _run(Planted("sigma_squared"), checks=[distribution.check_step_moments])
    r = results["distribution.step_moments.eta=1"]
    assert r.verdict is Verdict.FAIL
    failed = {t["name"].rsplit("/", 1)[-1] for t in r.details["tests"] if not t["passed"]}
    assert failed == {"variance"}
    # sigma^2 z instead of sigma z: the draws' variance is sigma^2 times the reference's (< 1 here)
    worst = r.findings[0]
    k = worst.step
    ts = make_reference_port().timesteps(10).tolist()
    t_prev = ts[k + 1] if k + 1 < len(ts) else -1
    sigma2 = ddim_sigma(make_reference_port().betas(), worst.timestep, t_prev, 1.0) ** 2
    assert worst.expected == pytest.approx(sigma2, rel=1e-6)
    assert worst.got / worst.expected == pytest.approx(sigma2, rel=0.4)


def test_leaked_global_rng_is_restored_by_the_check():
    before = torch.get_rng_state().clone()
    ctx = CheckContext(Planted("global_rng"), profile="quick", seed=0)
    [r] = invariants.check_no_global_rng(ctx)
    assert r.verdict is Verdict.FAIL
    assert "torch CPU global RNG" in r.message
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------------------------------------------
# Robustness: bad targets give results, not crashes
# ---------------------------------------------------------------------------------------------------


class Broken:
    """The reference port whose step misbehaves in a given way."""

    def __init__(self, how: str, conventions: Conventions | None = None):
        self.base = make_reference_port()
        self.how = how
        self.name = f"broken-{how}"
        self._conventions = conventions or self.base.conventions

    @property
    def conventions(self):
        if self.how == "conventions":
            raise RuntimeError("no conventions today")
        return self._conventions

    def betas(self):
        return self.base.betas()

    def alphas_cumprod(self):
        return self.base.alphas_cumprod()

    def timesteps(self, num_steps):
        return self.base.timesteps(num_steps)

    def step(self, model_output, t, x_t, **kw):
        if self.how == "raise":
            raise RuntimeError("boom")
        if self.how == "raise_last" and int(t) == int(self.base.timesteps(kw["num_steps"])[-1]):
            raise RuntimeError("last step boom")
        if self.how == "hang":
            time.sleep(1.0)
        out = self.base.step(model_output, t, x_t, **kw)
        if self.how == "shape":
            return out[:1]
        if self.how == "numpy":
            return out.numpy()
        return out


@pytest.mark.parametrize("how, needle", [("raise", "RuntimeError: boom"), ("shape", "shape"), ("numpy", "ndarray")])
def test_misbehaving_step_fails_every_check_that_calls_it(how, needle):
    results = _run(Broken(how))
    assert all(r.family in ("distribution", "invariants") for r in results.values())
    must = {"invariants.output_shape_dtype_device", "distribution.step_moments.eta=0",
            "distribution.run_output.eta=0"}
    assert must <= _failing(results)
    assert any(needle in r.message or any(needle in f.message for f in r.findings) for r in results.values())


def test_hanging_step_times_out_once_per_check():
    start = time.perf_counter()
    results = _run(Broken("hang"), timeout_s=0.2)
    elapsed = time.perf_counter() - start
    assert all(r.verdict is Verdict.FAIL for r in results.values()), _verdicts(results)
    assert all("timed out" in r.message or any("timed out" in f.message for f in r.findings) for r in results.values())
    # one 0.2 s timeout per check function (9), later calls short-circuited: well under the ~100 calls x 0.2 s
    assert elapsed < 9 * 0.2 + 6.0


def test_broken_calls_lead_the_message_and_keep_the_working_cases_numbers():
    """Only the last step of each run raises, so the other cases are checked and hold: every invariant
    still fails, its message leads with the broken calls, the one root exception is recorded once per
    step count in ``details["errors"]`` (issue 7 §3: one root crash is one failure), and ``observed``
    is that of the cases that ran (0 violations; for batch_independence its worst ratio, < 1), not
    inf -- in the result and in the text report, where the row still reads ``fail``. Only
    ``no_final_noise``, which looks at the last step alone, has no working case: observed is inf."""
    from ddspec.conformance.report import format_text
    from ddspec.conformance.results import Report

    results = _run(Broken("raise_last"), checks=invariants.CHECKS)
    assert set(results) == INVARIANT_NAMES
    for name, r in results.items():
        assert r.verdict is Verdict.FAIL, (name, r.message)
        assert r.message.startswith("the step gave no usable output in "), r.message
        assert "RuntimeError: last step boom" in r.message and "violated" not in r.message
        assert {"num_steps": 10, "error": "RuntimeError: last step boom"} in r.details["errors"], (name, r.details)
        assert {e["error"] for e in r.details["errors"]} == {"RuntimeError: last step boom"}, (name, r.details)
        if name == "invariants.no_final_noise":  # it looks at the last step only: no case worked
            assert r.observed == math.inf, (name, r.observed)
        else:
            assert r.observed is not None and math.isfinite(r.observed), (name, r.observed)
        assert "last step boom" in r.findings[0].message
    assert results["invariants.batch_independence"].tolerance == 1.0
    assert results["invariants.batch_independence"].observed < 1.0
    text = format_text(Report(target="broken", device="cpu", dtype="float32", profile="quick", seed=0,
                              checks=tuple(results.values())))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  invariants.")}
    assert rows and all(row[0] == "fail" for row in rows.values()), rows


def test_batch_coupling_reports_its_worst_ratio_against_one():
    """A genuine violation of a ratio-style invariant: observed is the worst |batched - alone| / 2b (> 1),
    tolerance 1, and the message names the violation, not a broken call."""
    r = _run(Planted("batch_mean"), checks=[invariants.check_batch_independence])["invariants.batch_independence"]
    assert r.verdict is Verdict.FAIL and r.tolerance == 1.0
    assert 1.0 < r.observed < math.inf
    assert r.observed == pytest.approx(max(f.error / f.tolerance for f in r.findings), rel=1e-12)
    assert "violated in" in r.message and "no usable output" not in r.message


class ExtraTimestep:
    """diffusers' trailing N = 61 in miniature: timesteps(N) returns the port's N timesteps plus a
    trailing -1 (not a valid subsequence); the step itself is the port's, optionally writing into x_t."""

    def __init__(self, mutate: bool = False):
        self.base = make_reference_port()
        self.mutate = mutate
        self.name = "extra-timestep"
        self.conventions = self.base.conventions

    def betas(self):
        return self.base.betas()

    def alphas_cumprod(self):
        return self.base.alphas_cumprod()

    def timesteps(self, num_steps):
        return np.append(self.base.timesteps(num_steps), -1)

    def step(self, model_output, t, x_t, **kw):
        out = self.base.step(model_output, t, x_t, **kw)
        if self.mutate:
            x_t.copy_(out)
        return out


def test_invalid_target_timesteps_fall_back_to_the_reference_and_are_noted():
    """The wrong sequence is the timesteps check's to report; the invariants and distribution checks
    run on the declared rule's timesteps (those of the reference) and pass, saying so."""
    results = _run(ExtraTimestep())
    assert set(results) == _expected_names("ddim")
    bad = {n: (r.verdict.value, r.message) for n, r in results.items() if r.verdict is not Verdict.PASS}
    assert not bad, bad
    for name in INVARIANT_NAMES:
        r = results[name]
        assert set(r.details["timesteps_source"].values()) == {"reference"}, name
        assert any("reported by timesteps.sequence.N=" in note for note in r.details["notes"]), name
    assert results["distribution.step_moments.eta=0"].details["timesteps_source"] == "reference"
    assert set(results["distribution.run_output.eta=0"].details["timesteps_source"].values()) == {"reference"}


def test_a_genuine_violation_still_fails_on_the_fallback_timesteps():
    results = _run(ExtraTimestep(mutate=True), checks=invariants.CHECKS)
    assert _failing(results) == {"invariants.no_input_mutation"}
    r = results["invariants.no_input_mutation"]
    assert "modified x_t in place" in r.message and r.observed >= 1.0 and r.tolerance == 0.0


def test_unreadable_conventions_fail_and_unsupported_ones_are_reported():
    results = _run(Broken("conventions"))
    assert results and all(r.verdict is Verdict.FAIL for r in results.values())
    assert all("conventions" in r.message for r in results.values())
    conv = Conventions(family="ddim", num_train_timesteps=1000, unsupported=("magic_knob=3: not interpreted",))
    results = _run(Broken("none", conventions=conv))
    assert results and all(r.verdict is Verdict.UNSUPPORTED for n, r in results.items()
                            if n not in REFERENCE_FREE), _verdicts(results)
    assert all("magic_knob=3" in r.message for n, r in results.items() if n not in REFERENCE_FREE)
    # the reference-free invariants still judge the target, on its own timesteps and table, and say why
    assert all(results[n].verdict is Verdict.PASS for n in REFERENCE_FREE), _verdicts(results)
    assert all(any("magic_knob=3" in note for note in results[n].details["notes"]) for n in REFERENCE_FREE)


#: The invariants that compare the target only with itself (no reference equation needed).
REFERENCE_FREE = {
    "invariants.no_input_mutation",
    "invariants.output_shape_dtype_device",
    "invariants.deterministic",
    "invariants.no_global_rng",
}


def _knob_ddim(mutate: bool = False):
    """A diffusers DDIMScheduler subclass whose ``__init__`` has one parameter the adapter does not
    know (hence an ``unsupported`` entry); with ``mutate`` its step also overwrites the caller's sample."""
    d = _diffusers()

    class KnobDDIM(d.DDIMScheduler):
        def __init__(self, knob: float = 0.5, **kwargs):
            super().__init__(**kwargs)
            self.knob = knob

        def step(self, model_output, timestep, sample, *args, **kwargs):
            out = super().step(model_output, timestep, sample, *args, **kwargs)
            if mutate:
                sample.copy_(out.prev_sample if hasattr(out, "prev_sample") else out[0])
            return out

    return _adapt(KnobDDIM())


def test_unsupported_target_still_runs_the_reference_free_invariants():
    sampler = _knob_ddim()
    assert any(e.startswith("knob") for e in sampler.conventions.unsupported), sampler.conventions.unsupported
    results = _run(sampler)
    verdicts = _verdicts(results)
    assert {n for n, v in verdicts.items() if v is Verdict.PASS} == REFERENCE_FREE, verdicts
    others = set(results) - REFERENCE_FREE
    assert {"invariants.finite", "invariants.no_final_noise", "invariants.batch_independence"} <= others
    for name in others:
        assert verdicts[name] is Verdict.UNSUPPORTED and "knob" in results[name].message, (name, results[name].message)
    for name in REFERENCE_FREE:
        r = results[name]
        assert r.details["configurations_checked"] > 0, r.details
        assert set(r.details["timesteps_source"].values()) == {"target"}, r.details
        assert any(note.startswith("reference-free") and "knob" in note for note in r.details["notes"]), r.details


def test_unsupported_target_with_an_in_place_step_fails_no_input_mutation():
    results = _run(_knob_ddim(mutate=True), checks=invariants.CHECKS)
    r = results["invariants.no_input_mutation"]
    assert r.verdict is Verdict.FAIL and "modified x_t in place" in r.message, r.message
    assert r.findings and r.observed >= 1.0 and r.tolerance == 0.0
    for name in ("invariants.finite", "invariants.no_final_noise", "invariants.batch_independence"):
        assert results[name].verdict is Verdict.UNSUPPORTED, name


# ---------------------------------------------------------------------------------------------------
# Bookkeeping: alpha split, ledger, power, allowance
# ---------------------------------------------------------------------------------------------------


def test_step_moments_bonferroni_split_and_ledger():
    results = _run(make_reference_port(), checks=[distribution.check_step_moments])
    alpha = _quick().false_failure_rate
    r0, r1 = results["distribution.step_moments.eta=0"], results["distribution.step_moments.eta=1"]
    # eta = 0: every step deterministic, no statistics, no alpha spent
    assert r0.details["tests"] == [] and r0.details["false_failure_rate_spent"] == 0.0
    # eta = 1, N = 10: steps 0 and 5 stochastic, step 9 goes to the data (sigma = 0): 2 steps x 3 pooled
    # tests (common mean, variance, mean pattern)
    kinds = [p["kind"] for p in r1.details["positions"]]
    assert [p["step"] for p in r1.details["positions"]] == [0, 5, 9]
    assert kinds == ["stochastic", "stochastic", "deterministic"]
    assert [t["kind"] for t in r1.details["tests"]] == ["pooled_mean", "pooled_variance", "mean_pattern"] * 2
    for test in r1.details["tests"]:
        assert test["alpha"] == pytest.approx(alpha / 6, rel=1e-15)
        assert test["n"] == _quick().n_single_step_draws
        assert test["dims"] == math.prod(_quick().sample_shape[1:])
        assert test["passed"] and test["observed_over_allowed"] <= 1.0
    assert r1.details["false_failure_rate"] == alpha
    assert r1.details["false_failure_rate_spent"] <= alpha * (1 + 1e-12)
    assert r1.details["ledger"][0].startswith(f"false-failure budget {alpha:.3g}: 6 tests")


def test_step_moments_state_their_min_detectable_discrepancy():
    """The stated power is the closed form of the pooled tests plus the rounding allowance: a common
    shift of (z_{α/2} + z_β)/sqrt(n d) σ; a standard-deviation ratio sqrt(ρ) of the chi-square with
    d (n − 1) dof (ρ from scipy's quantiles here, independently of stats.py)."""
    from scipy import stats as sps

    r = _run(make_reference_port(), "float64", checks=[distribution.check_step_moments])[
        "distribution.step_moments.eta=1"]
    n, d = _quick().n_single_step_draws, math.prod(_quick().sample_shape[1:])
    a = r.details["alpha_per_test"]
    beta = 1e-3
    mean_stat = (sps.norm.isf(a / 2) + sps.norm.isf(beta)) / math.sqrt(n * d)
    k = d * (n - 1)
    rho = max(sps.chi2.isf(a / 2, k) / sps.chi2.ppf(beta, k), sps.chi2.isf(beta, k) / sps.chi2.ppf(a / 2, k))
    for step in r.details["min_detectable"]["per_step"]:
        allowance = step["rounding_allowance_sigma"]
        assert 0 < allowance["mean"] < 1e-6 and 0 < allowance["std"] < 1e-6  # float64: negligible
        assert step["mean_shift_sigma"] == pytest.approx(mean_stat + allowance["mean"], rel=1e-9)
        assert step["std_error"] == pytest.approx(math.sqrt(rho) - 1 + allowance["std"], rel=1e-6)
    worst = r.details["min_detectable"]["worst"]
    assert f"detects a std error >= {100 * worst['std_error']:.2g} %" in r.message
    assert f"common mean shift >= {100 * worst['mean_shift_sigma']:.2g} % of σ" in r.message
    assert "power 0.999" in r.message


class RaisesFor:
    """The reference port whose step raises for one step count (``num_steps``), or at one timestep."""

    def __init__(self, num_steps: int | None = None, t: int | None = None, family: str = "ddim"):
        self.base = make_reference_port(family=family)
        self.num_steps, self.t = num_steps, t
        self.name = "raises-for"
        self.conventions = self.base.conventions

    def betas(self):
        return self.base.betas()

    def alphas_cumprod(self):
        return self.base.alphas_cumprod()

    def timesteps(self, num_steps):
        return self.base.timesteps(num_steps)

    def step(self, model_output, t, x_t, **kw):
        if kw["num_steps"] == self.num_steps or int(t) == self.t:
            raise IndexError(f"index {kw['num_steps']} is out of bounds for posterior_variance")
        return self.base.step(model_output, t, x_t, **kw)


def test_run_output_reports_a_raising_step_count_once_and_keeps_the_others():
    """Issue 7 section 3: N = 1 raises; one finding prefixed "N=1: ", details["errors"] names it, and
    the other step count (N = 10) is still tested and reported (observed finite)."""
    r = _run(RaisesFor(num_steps=1, family="ddpm"), checks=[distribution.check_run_output_distribution])[
        "distribution.run_output.variance_type=fixed_small"]
    assert r.verdict is Verdict.FAIL
    assert r.details["errors"] == [{"num_steps": 1, "error": "IndexError: index 1 is out of bounds for posterior_variance"}]
    broken = [f for f in r.findings if "IndexError" in f.message]
    assert len(broken) == 1 and broken[0].message.startswith("N=1: ")
    assert [run["num_steps"] for run in r.details["runs"]] == [10]
    assert {t["name"].split("/")[1] for t in r.details["tests"]} == {"N=10"}
    assert all(t["passed"] for t in r.details["tests"])
    assert math.isfinite(r.observed) and r.observed <= 1.0


def test_step_moments_reports_a_raising_call_once_and_keeps_the_other_steps():
    """A call raising at the last step (t = 0) of the N = 10 run: one finding "N=10: ...", the error in
    details["errors"], and the stochastic steps 0 and 5 still tested; observed stays their worst ratio."""
    r = _run(RaisesFor(t=0), checks=[distribution.check_step_moments])["distribution.step_moments.eta=1"]
    assert r.verdict is Verdict.FAIL
    assert r.details["errors"] == [{"num_steps": 10, "error": "IndexError: index 10 is out of bounds for posterior_variance"}]
    assert [f.message.startswith("N=10: ") for f in r.findings] == [True]
    assert len(r.details["tests"]) == 6 and all(t["passed"] for t in r.details["tests"])
    assert r.observed == pytest.approx(max(t["observed_over_allowed"] for t in r.details["tests"]), rel=1e-12)
    assert r.message.startswith("1 call(s) of the target's step gave no usable output")


def test_run_output_split_and_min_detectable():
    from ddspec.conformance import stats

    results = _run(make_reference_port(family="ddpm"), checks=[distribution.check_run_output_distribution])
    r = results["distribution.run_output.variance_type=fixed_small"]
    alpha = _quick().false_failure_rate
    n_counts = len(r.details["runs"])
    assert [run["num_steps"] for run in r.details["runs"]] == sorted(_quick().steps)
    assert r.details["alpha_per_test"] == pytest.approx(alpha / (3 * n_counts), rel=1e-12)
    mean_tests = [t for t in r.details["tests"] if t["kind"] == "mean"]
    assert len(mean_tests) == n_counts
    # the reported power is that of stats.min_detectable at the sample size (+ the rounding allowance)
    law_var = float(np.max(r.details["runs"][0]["law_variance"]))  # the first mean test is the first run's
    delta = stats.min_detectable(_quick().n_distribution_samples, r.details["alpha_per_test"], 0.999, "mean",
                                 dims=distribution.DATA_DIM, variance=law_var)
    assert mean_tests[0]["min_detectable"].startswith(f"|Δmean| ≥ {delta:.3g}")


def test_bound_envelope_covers_every_noise_value_within_it():
    from ddspec.conformance.checks._common import error_bound, error_bound_envelope, setup_target

    ctx = CheckContext(make_reference_port(), profile="quick", dtype="float32", seed=0)
    setup = setup_target(ctx, "x", "distribution")
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(2, 64))
    env = error_bound_envelope(setup, 1.0, 900, 800, m, x, 2.0, None)
    for z in (rng.uniform(-2, 2, 64), np.full(64, 2.0), np.full(64, -2.0), np.zeros(64)):
        assert np.all(error_bound(setup, 1.0, 900, 800, m, x, z, None) <= env * (1 + 1e-12))


def test_distribution_checks_use_no_private_helper_of_the_invariants_module():
    """The target setup, the step call, the reference step and the error bound the two families share
    live in checks/_common.py; neither family reaches into the other's private names."""
    import ast
    import inspect

    for module, other in ((distribution, "invariants"), (invariants, "distribution")):
        tree = ast.parse(inspect.getsource(module))
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert other not in imported and f"ddspec.conformance.checks.{other}" not in imported, module.__name__


def test_data_oracle_matches_its_documentation():
    plain, clipped = distribution.data_oracle(), distribution.data_oracle(2.0)
    np.testing.assert_array_equal(plain.mean, [0.5, -0.5, 0.25, 0.0])
    np.testing.assert_array_equal(plain.variance, np.full(4, 0.25))
    np.testing.assert_array_equal(clipped.mean, 2.0 * np.array([0.1, -0.1, 0.05, 0.0]))
    np.testing.assert_allclose(clipped.variance, np.full(4, 0.2**2), rtol=1e-15)
    scaled = distribution.data_oracle(2.0, 0.25)
    np.testing.assert_allclose(scaled.mean, 0.5 * np.array([0.1, -0.1, 0.05, 0.0]), rtol=1e-15)
    np.testing.assert_allclose(scaled.variance, np.full(4, 0.05**2), rtol=1e-15)
    assert distribution.CLIP_DATA_SCALES[0] == 1.0 and list(distribution.CLIP_DATA_SCALES) == sorted(
        distribution.CLIP_DATA_SCALES, reverse=True)
    for bad in (0.0, -0.5, 1.5, math.nan):
        with pytest.raises(ValueError, match="scale"):
            distribution.data_oracle(1.0, bad)
    with pytest.raises(ValueError, match="clip_range"):
        distribution.data_oracle(0.0)
