r"""The denoising-diffusion-pytorch (lucidrains) adapter, against the stand-in of ``standins/lucidrains.py``.

One line of glue: ``LucidrainsAdapter(diffusion)``. Correct configurations pass in float32 and float64;
the library's conventions (``p_sample_loop`` runs N = T only; ``ddim_sample``'s truncated linspace) are
reported as declared, not failed; planted bugs fail their family. Expected values are derived from the
definitions (the linspace rule written out by hand, Ho et al.'s (x + 1)/2), never read back from the code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters.lucidrains import LucidrainsAdapter, ddim_times, identify_schedule, unnormalize_error
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks

from .standins import lucidrains as L

T = 1000


def _diffusion(objective: str = "pred_v", schedule: str = "sigmoid", sampling_timesteps: int | None = 10,
               cls: type = L.GaussianDiffusion, **kwargs: Any) -> L.GaussianDiffusion:
    return cls(L.TinyUnet(), image_size=4, timesteps=T, objective=objective, beta_schedule=schedule,
               sampling_timesteps=sampling_timesteps, **kwargs)


def _report(target: Any, dtype: str = "float32", steps: tuple[int, ...] | None = None, seed: int = 0) -> Report:
    return run_checks(target, CheckContext(target, dtype=dtype, profile="quick", seed=seed, steps=steps),
                      installed_checks())


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:240]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


def _failing(report: Report) -> set[str]:
    return {r.name for r in report.checks if r.verdict == Verdict.FAIL}


# -- correct configurations --------------------------------------------------------------------------


# ε-prediction on the cosine and sigmoid schedules is checked at N = 10 only: see
# test_eps_prediction_at_the_terminal_step_is_a_harness_limit for why N = 1 is not.
_DDIM_CASES = [(o, s, (1, 10)) for o in ("pred_v", "pred_x0") for s in ("linear", "cosine", "sigmoid")] + [
    ("pred_noise", "linear", (1, 10)), ("pred_noise", "cosine", (10,)), ("pred_noise", "sigmoid", (10,))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("objective, schedule, steps", _DDIM_CASES)
def test_ddim_sample_passes(objective: str, schedule: str, steps: tuple[int, ...], dtype: str) -> None:
    target = LucidrainsAdapter(_diffusion(objective, schedule))
    assert target.conventions.family == "ddim" and target.conventions.use_clipped_model_output
    report = _report(target, dtype, steps)
    assert not _bad(report), _bad(report)
    passed = {r.name.split(".")[1] for r in report.checks if r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE)}
    assert {"timesteps", "steps", "noise", "final_step"} <= passed
    if objective == "pred_noise" and schedule != "linear":
        # lucidrains always clips x0; at t = T - 1 of these schedules the error model's margin for the float32
        # x0 conversion (1/sqrt(alpha_bar) ~ 2e4) leaves no room inside [-1, 1], so whether the clip acts
        # cannot be bounded and the output law is not judged (see the test of the terminal step below)
        law = [r for r in report.checks if r.name.startswith("loop.output_law")]
        assert law and all(r.verdict == Verdict.PASS or (r.verdict == Verdict.SKIPPED and "no room" in r.message)
                           for r in law)
    else:
        assert "output_law" in passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_p_sample_loop_passes_and_declares_n_equals_t(dtype: str) -> None:
    target = LucidrainsAdapter(_diffusion("pred_noise", "linear", sampling_timesteps=None))
    assert target.conventions.family == "ddpm" and target.supports(T) and not target.supports(10)
    report = _report(target, dtype)
    assert not _bad(report), _bad(report)
    # the quick profile asks for N = 1, 10: both are reported as unsupported by the library, and N = T is run
    verdicts = {r.name: r.verdict for r in report.checks if r.name.startswith("loop.timesteps")}
    assert verdicts == {f"loop.timesteps.N={T}": Verdict.PASS, "loop.timesteps.N=1": Verdict.SKIPPED,
                        "loop.timesteps.N=10": Verdict.SKIPPED}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("objective, schedule", [("pred_v", "sigmoid"), ("pred_x0", "cosine"), ("pred_noise", "cosine")])
def test_p_sample_loop_passes_other_objectives(objective: str, schedule: str, dtype: str) -> None:
    report = _report(LucidrainsAdapter(_diffusion(objective, schedule, sampling_timesteps=None)), dtype)
    assert not _bad(report), _bad(report)


def test_self_condition_and_no_auto_normalize_pass() -> None:
    d = L.GaussianDiffusion(L.TinyUnet(self_condition=True), image_size=4, timesteps=T, objective="pred_v",
                            beta_schedule="linear", sampling_timesteps=10, auto_normalize=False)
    target = LucidrainsAdapter(d)
    assert any("self_condition" in n for n in target.notes)
    assert not _bad(_report(target))


def test_an_unrecognised_schedule_is_declared_from_the_objects_table() -> None:
    d = _diffusion("pred_v", "cosine", schedule_fn_kwargs={"s": 0.02})
    target = LucidrainsAdapter(d)
    assert target.conventions.beta_schedule == "custom"
    assert any("unrecognised" in n for n in target.notes)
    assert not _bad(_report(target, steps=(10,)))


def test_the_object_is_left_as_it_was() -> None:
    d = _diffusion("pred_v", "sigmoid", sampling_timesteps=25, ddim_sampling_eta=0.3)
    model, unnormalize = d.model, d.unnormalize
    _report(LucidrainsAdapter(d), steps=(10,))
    assert d.model is model and d.unnormalize is unnormalize
    assert (d.sampling_timesteps, d.is_ddim_sampling, d.ddim_sampling_eta) == (25, True, 0.3)


# -- declarations -------------------------------------------------------------------------------------


def test_ddim_times_are_the_truncated_linspace() -> None:
    # linspace(-1, 999, 4) = -1, 999/3 - 2/3 ... written out: -1 + k * 1000/3 = -1, 332.33, 665.67, 999
    expected = [math.trunc(-1 + k * 1000 / 3) for k in (3, 2, 1)]
    assert ddim_times(T, 3) == expected == [999, 665, 332]
    assert ddim_times(T, 10) == [999 - 100 * k for k in range(10)]


def test_the_truncated_list_is_reported_acceptable_with_the_nearest_rule() -> None:
    report = _report(LucidrainsAdapter(_diffusion()), steps=(3,))
    result = next(r for r in report.checks if r.name == "loop.timesteps.N=3")
    assert result.verdict == Verdict.ACCEPTABLE, result.message
    # trailing (diffusers): round(1000 - k * 1000/3) - 1 = 999, 666, 332: one position differs
    assert "trailing" in result.message and "665" in result.message and "666" in result.message


def test_schedules_are_identified_from_the_float32_buffer() -> None:
    for name in ("linear", "cosine", "sigmoid"):
        d = _diffusion("pred_v", name)
        found, table = identify_schedule(d.betas.double().numpy())
        assert found == name and table is not None
    # the linear schedule's end points are Ho et al.'s, scaled by 1000/T (T = 500: 2e-4 and 0.04)
    d = L.GaussianDiffusion(L.TinyUnet(), image_size=4, timesteps=500, objective="pred_v", beta_schedule="linear")
    conv = LucidrainsAdapter(d).conventions
    assert conv.beta_schedule == "linear" and conv.beta_start == pytest.approx(2e-4) and conv.beta_end == pytest.approx(0.04)


def test_unnormalize_is_checked_against_x_plus_one_over_two() -> None:
    x = torch.linspace(-1, 1, 101)
    assert unnormalize_error(_diffusion(), x) <= 1.0
    assert unnormalize_error(_diffusion(auto_normalize=False), x) == 0.0
    broken = _diffusion()
    broken.unnormalize = lambda z: z * 0.5 + 0.49  # off by 0.01: 0.01 / ulp(0.5 in float32) = 0.01 * 2**24 units
    assert unnormalize_error(broken, x) > 1e4


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match="^diffusion="):
        LucidrainsAdapter(object())
    with pytest.raises(ValueError, match="^sampler="):
        LucidrainsAdapter(_diffusion(), sampler="heun")


def test_an_unknown_objective_is_unsupported_not_defaulted() -> None:
    d = _diffusion()
    d.objective = "pred_score"
    report = _report(LucidrainsAdapter(d), steps=(10,))
    loop_results = list(report.checks)
    assert loop_results and all(r.verdict == Verdict.UNSUPPORTED for r in loop_results)
    assert "pred_score" in loop_results[0].message


def test_a_subclass_overriding_the_sampling_maths_is_unsupported_unless_trusted() -> None:
    target = LucidrainsAdapter(_diffusion(cls=EtaIgnored))
    assert any(u.startswith("class=EtaIgnored: overrides ddim_sample") for u in target.conventions.unsupported)
    assert not LucidrainsAdapter(_diffusion(cls=EtaIgnored), trust_subclass=True).conventions.unsupported
    assert not LucidrainsAdapter(_diffusion()).conventions.unsupported


# -- a measured limit of the harness -----------------------------------------------------------------


def test_eps_prediction_at_the_terminal_step_is_a_harness_limit() -> None:
    r"""ε-prediction at t = 999 of the cosine schedule: ᾱ = ᾱ_998 · (1 − 0.999) ≈ 2.4e-9, so
    x̂₀ = A x − B ε̂ with A = 1/√ᾱ ≈ 2.0e4 and B = √(1/ᾱ − 1) ≈ A, each stored in float32. Their rounding
    (up to ½ ulp(2e4) ≈ 1e-3 each) moves x̂₀ by ~1e-3, while the exact N = 1 output law has a standard
    deviation of √ᾱ·s²/… ≈ 1e-6. The declared float32 coefficients make the step checks pass. The output-law
    check, since lucidrains clips x̂₀, first bounds the chance that the clip acts; the margin for that rounding
    at t = 999 leaves no room inside [−1, 1], so the law is not judged (skipped, with the reason) rather than
    failed: the earlier false alarm at N = 1 is gone, and every step is still judged by ``loop.steps``."""
    d = _diffusion("pred_noise", "cosine")
    ab = d.alphas_cumprod.double()[-1].item()
    A = 1 / math.sqrt(ab)
    assert 1e-9 < ab < 5e-9 and 0.5 * float(np.spacing(np.float32(A))) > 5e-4
    report = _report(LucidrainsAdapter(d), "float64", steps=(1, 10))
    assert not _failing(report)
    law = [r for r in report.checks if r.name.startswith("loop.output_law.N=1")]
    assert law and all(r.verdict == Verdict.SKIPPED and "no room" in r.message for r in law)
    assert any(r.name.startswith("loop.steps.N=1") and r.verdict == Verdict.PASS for r in report.checks)


# -- planted bugs -------------------------------------------------------------------------------------


class NoRederive(L.GaussianDiffusion):
    """ddim_sample with the raw ε̂ in the direction term, although x̂₀ was clipped."""

    def model_predictions(self, x: Any, t: Any, x_self_cond: Any = None, clip_x_start: bool = False,
                          rederive_pred_noise: bool = False) -> Any:
        return super().model_predictions(x, t, x_self_cond, clip_x_start, False)


class NoiseAtTZero(L.GaussianDiffusion):
    """p_sample with noise at t = 0 (the ``if t > 0`` mask dropped)."""

    @torch.inference_mode()
    def p_sample(self, x: Any, t: int, x_self_cond: Any = None) -> Any:
        times = torch.full((x.shape[0],), t, dtype=torch.long)
        mean, _, log_var, x_start = self.p_mean_variance(x, times, x_self_cond, clip_denoised=True)
        var = self.posterior_variance[max(t, 1)]  # the t = 1 variance, as a log-variance clipped at t = 0 would give
        return mean + var.sqrt() * torch.randn_like(x), x_start


class RoundedTimes(L.GaussianDiffusion):
    """ddim_sample on rounded instead of truncated linspace values (1 of 3 timesteps moves at N = 3)."""

    @torch.inference_mode()
    def ddim_sample(self, shape: tuple[int, ...], return_all_timesteps: bool = False) -> Any:
        return _rounded_ddim(self, shape)


def _rounded_ddim(d: Any, shape: tuple[int, ...]) -> Any:
    T_, N = d.num_timesteps, d.sampling_timesteps
    times = list(reversed(torch.linspace(-1, T_ - 1, steps=N + 1).round().int().tolist()))
    img = torch.randn(shape)
    x_start = None
    for time, time_next in zip(times[:-1], times[1:]):
        cond = torch.full((shape[0],), time, dtype=torch.long)
        noise, x_start = d.model_predictions(img, cond, None, clip_x_start=True, rederive_pred_noise=True)
        if time_next < 0:
            img = x_start
            continue
        a, a_next = d.alphas_cumprod[time], d.alphas_cumprod[time_next]
        sigma = d.ddim_sampling_eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
        img = x_start * a_next.sqrt() + (1 - a_next - sigma**2).sqrt() * noise + sigma * torch.randn_like(img)
    return d.unnormalize(img)


class EtaIgnored(L.GaussianDiffusion):
    """ddim_sample with σ = 0 whatever ``ddim_sampling_eta``."""

    @torch.inference_mode()
    def ddim_sample(self, shape: tuple[int, ...], return_all_timesteps: bool = False) -> Any:
        eta, self.ddim_sampling_eta = self.ddim_sampling_eta, 0.0
        try:
            return super().ddim_sample(shape, return_all_timesteps)
        finally:
            self.ddim_sampling_eta = eta


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, sampling, steps, family", [
    (NoRederive, 10, (10,), "loop.steps"),
    (RoundedTimes, 10, (3,), "loop.timesteps"),
    (EtaIgnored, 10, (10,), "loop.noise"),
])
def test_planted_ddim_bug_fails_its_family(cls: type, sampling: int, steps: tuple[int, ...], family: str,
                                           dtype: str) -> None:
    # pred_noise on the linear schedule: the probe's field pushes x̂₀ outside [-1, 1], so clipping matters
    target = LucidrainsAdapter(_diffusion("pred_noise", "linear", sampling, cls=cls), trust_subclass=True)
    report = _report(target, dtype, steps)
    assert any(name.startswith(family) for name in _failing(report)), (family, _failing(report))


def test_planted_ddpm_bug_fails_its_family() -> None:
    report = _report(LucidrainsAdapter(_diffusion("pred_noise", "linear", None, cls=NoiseAtTZero), trust_subclass=True))
    assert any(name.startswith("loop.final_step") for name in _failing(report)), _failing(report)
