r"""The CompVis latent-/stable-diffusion adapter against the faithful stand-in (:mod:`tests.conformance.standins.compvis`).

Correct configurations pass in float32 and float64 (quick profile); the libraries' declared conventions
(the last step to ᾱ₀, the +1 shift, N + 1 steps when N does not divide T) are reported *acceptable*
with their consequence, the N for which the library raises or repeats an index are declared
unsupported; the real bug (``DDIMSampler`` reading an x̂₀ model as ε) and planted bugs fail. Expected
timestep lists are derived here by hand from ``make_ddim_timesteps``' documented rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters import adapt
from ddspec.conformance.adapters import compvis as adapter
from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks

from .standins import compvis as lib

T = 1000

# the libraries call numpy ufuncs on torch tensors (np.sqrt(1 - alphas_cumprod.cpu())), as the stand-in does
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


def _report(target: LoopSampler, *, dtype: str = "float32", seed: int = 0, steps: tuple[int, ...] | None = None) -> Report:
    ctx = CheckContext(target, dtype=dtype, profile="quick", seed=seed, steps=steps)
    return run_checks(target, ctx, installed_checks())


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:300]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


def _verdicts(report: Report) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in report.checks}


def _ldm(**kwargs: Any) -> lib.LatentDiffusion:
    """Stable Diffusion's schedule: 'linear' with linear_start 0.00085, linear_end 0.012 (v1 configs)."""
    return lib.LatentDiffusion(linear_start=0.00085, linear_end=0.012, **kwargs)


# -- one line -----------------------------------------------------------------------------------------------


def test_adapt_recognises_the_sampler_and_the_ddpm_model() -> None:
    target = adapt(lib.DDIMSampler(_ldm()))
    assert isinstance(target, LoopSampler)
    conv = target.conventions
    assert (conv.family, conv.beta_schedule, conv.beta_start, conv.beta_end) == ("ddim", "scaled_linear", 0.00085, 0.012)
    assert conv.final_alpha_bar_is_one is False and conv.unsupported == ()
    assert target.table_dtype == torch.float32 and target.noise_source == "global"
    notes = " ".join(target.notes)
    assert "ᾱ at index 0" in notes and "+ 1" in notes and "cuda" in notes
    ddpm = adapt(lib.DDPM())
    assert ddpm.conventions.family == "ddpm" and ddpm.conventions.variance_type == "fixed_small"
    assert ddpm.conventions.clip_sample is True and ddpm.supports(T) and not ddpm.supports(T // 2)
    with pytest.raises(TypeError, match="DDIMSampler"):
        adapt(_ldm())  # a latent model's p_sample takes a conditioning


def test_the_library_sampler_needs_cuda_and_the_adapter_keeps_the_device() -> None:
    sampler = lib.DDIMSampler(_ldm())
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):  # register_buffer moves every tensor to cuda
            sampler.make_schedule(10, verbose=False)
    report = _report(adapter.ddim_sampler_target(sampler), steps=(10,))
    assert not _bad(report), _bad(report)
    assert "register_buffer" not in vars(sampler) and "apply_model" not in vars(sampler.model)  # restored


# -- the timestep rule, derived by hand --------------------------------------------------------------------------


def test_make_ddim_timesteps_rule() -> None:
    # uniform N = 10: c = 100, range(0, 1000, 100) + 1
    assert adapter.ddim_timesteps("uniform", 10, T) == list(range(901, 0, -100))
    # uniform N = 7: c = 142, ceil(1000/142) = 8 indices 0, 142, ..., 994, + 1
    assert adapter.ddim_timesteps("uniform", 7, T) == [995, 853, 711, 569, 427, 285, 143, 1]
    # quad N = 5: (k·√800/4)² = 50 k², k = 0..4, truncated, + 1; exact values sit on integers, so use N = 4:
    # (k·√800/3)² = 800 k²/9 = 0, 88.9, 355.6, 800 -> 0, 88, 355, 800 (the last is an integer edge: skip it)
    assert adapter.ddim_timesteps("quad", 4, T)[1:] == [356, 89, 1]
    # the last uniform index passes T - 1 after the shift for N = 3 (c = 333: 999 + 1) and N = T
    target = adapter.ddim_sampler_target(lib.DDIMSampler(_ldm()))
    assert not target.supports(3) and not target.supports(T) and target.supports(7) and target.supports(10)
    # quad repeats an index from N = 30: the step √800/29 < 1 puts k = 0 and k = 1 both at 0; for N = 29 the
    # step √800/28 > 1, so consecutive squares differ by more than 1 and every index is distinct
    assert math.sqrt(800) / 29 < 1 < math.sqrt(800) / 28
    quad = adapter.ddim_sampler_target(lib.DDIMSampler(_ldm()), ddim_discretize="quad")
    assert quad.supports(29) and not quad.supports(30)


@pytest.mark.parametrize("n", [3, 9, 27, T])
def test_the_unsupported_n_really_raise_in_the_library(n: int) -> None:
    with pytest.raises(IndexError):
        lib.make_ddim_sampling_parameters(_ldm().alphas_cumprod, lib.make_ddim_timesteps("uniform", n, T, verbose=False),
                                          0.0, verbose=False)


# -- correct configurations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("discretize", "steps", "dtype"), [
    ("uniform", (10, 50), "float32"), ("uniform", (50,), "float64"), ("quad", (20,), "float32"),
    pytest.param("quad", (10, 20), "float64", marks=pytest.mark.slow)])
def test_ddim_sampler_passes_with_its_conventions_declared(discretize: str, steps: tuple[int, ...], dtype: str) -> None:
    report = _report(adapter.ddim_sampler_target(lib.DDIMSampler(_ldm()), ddim_discretize=discretize),
                     dtype=dtype, steps=steps)
    assert not _bad(report), _bad(report)
    verdicts = _verdicts(report)
    for n in steps:
        assert verdicts[f"loop.steps.N={n},eta=0"] == Verdict.PASS
        assert verdicts[f"loop.final_step.N={n},eta=0"] == Verdict.ACCEPTABLE  # to ᾱ_0, not to the data
    final = [r for r in report.checks if r.name == f"loop.final_step.N={steps[0]},eta=1"][0]
    assert final.verdict == Verdict.ACCEPTABLE and "noisy" in final.message


def test_n_not_dividing_t_takes_n_plus_one_steps_and_is_reported() -> None:
    report = _report(adapter.ddim_sampler_target(lib.DDIMSampler(_ldm())), steps=(7,))
    assert not _bad(report), _bad(report)
    timesteps = [r for r in report.checks if r.name == "loop.timesteps.N=7"][0]
    assert timesteps.verdict == Verdict.ACCEPTABLE and "8 timesteps" in timesteps.message


@pytest.mark.parametrize(("kwargs", "dtype"), [
    ({}, "float32"), ({}, "float64"), ({"parameterization": "x0", "v_posterior": 1.0}, "float32"),
    pytest.param({"parameterization": "x0", "v_posterior": 1.0}, "float64", marks=pytest.mark.slow),
], ids=["eps_small-float32", "eps_small-float64", "x0_large-float32", "x0_large-float64"])
def test_ddpm_p_sample_passes(kwargs: dict[str, Any], dtype: str) -> None:
    target = adapter.ddpm_target(lib.DDPM(**kwargs))
    report = _report(target, dtype=dtype)
    assert not _bad(report), _bad(report)
    assert _verdicts(report)[f"loop.noise.N={T}"] == Verdict.PASS


def test_a_custom_table_is_read_as_custom() -> None:
    betas = np.linspace(2e-4, 0.03, 200)
    target = adapter.ddim_sampler_target(lib.DDIMSampler(_ldm(given_betas=betas)))
    conv = target.conventions
    assert conv.beta_schedule == "custom" and conv.num_train_timesteps == 200
    np.testing.assert_allclose(conv.trained_betas, betas, rtol=2.0**-24)
    report = _report(target, steps=(10,))
    assert not _bad(report), _bad(report)


def test_a_variance_mixture_and_unknown_fields_are_unsupported() -> None:
    model = lib.DDPM(v_posterior=0.3)
    model.sampling_temperature = 0.9
    conv = adapter.ddpm_target(model).conventions
    assert any(u.startswith("variance_type=") and "v_posterior=0.3" in u for u in conv.unsupported)
    assert any(u.startswith("sampling_temperature=0.9") for u in conv.unsupported)


# -- the real bug and planted ones --------------------------------------------------------------------------------


def test_ddim_sampler_reads_an_x0_model_as_eps() -> None:
    """A real bug of the library: p_sample_ddim ignores ``parameterization``; with "x0" every step is wrong."""
    report = _report(adapter.ddim_sampler_target(lib.DDIMSampler(_ldm(parameterization="x0"))), steps=(10,))
    assert _verdicts(report)["loop.steps.N=10,eta=0"] == Verdict.FAIL


class _PrevAtCurrent(lib.DDIMSampler):
    """ᾱ_prev taken at the current timestep (alphas_prev = alphas)."""

    def make_schedule(self, *args: Any, **kwargs: Any) -> None:
        super().make_schedule(*args, **kwargs)
        self.ddim_alphas_prev = np.asarray(self.ddim_alphas, dtype=np.float64)


class _NoiseSharedAcrossBatch(lib.DDIMSampler):
    def p_sample_ddim(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return super().p_sample_ddim(*args, **{**kwargs, "repeat_noise": True})


class _NoMask(lib.DDPM):
    """p_sample without the t == 0 mask: noise at the last step."""

    @torch.no_grad()
    def p_sample(self, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True, repeat_noise: bool = False) -> torch.Tensor:
        mean, _, log_variance = self.p_mean_variance(x=x, t=t, clip_denoised=clip_denoised)
        return mean + (0.5 * log_variance).exp() * lib.noise_like(x.shape, x.device)


@pytest.mark.parametrize(("make", "prefix"), [
    (lambda: adapter.ddim_sampler_target(_PrevAtCurrent(_ldm())), "loop.steps"),
    (lambda: adapter.ddim_sampler_target(_NoiseSharedAcrossBatch(_ldm())), "loop.noise_independence"),
    (lambda: adapter.ddpm_target(_NoMask(v_posterior=1.0)), "loop.final_step"),
], ids=["alpha_prev_at_t", "noise_shared_across_batch", "noise_at_last_step"])
def test_planted_bug_fails_its_family(make: Any, prefix: str) -> None:
    target = make()
    report = _report(target, steps=None if target.name.endswith(".p_sample") else (10,))
    failing = [r.name for r in report.checks if r.verdict == Verdict.FAIL]
    assert any(name.startswith(prefix) for name in failing), failing


# -- the user's one line ------------------------------------------------------------------------------------------


def test_ddspec_check_on_a_module_attribute(tmp_path: Any, capsys: Any) -> None:
    import json
    from pathlib import Path

    from ddspec.conformance.cli import main

    root = Path(__file__).resolve().parents[2]
    glue = tmp_path / "glue_compvis.py"
    glue.write_text(
        f"import sys\nsys.path.insert(0, {str(root)!r})\n"
        "from tests.conformance.standins.compvis import DDIMSampler, LatentDiffusion\n"
        "sampler = DDIMSampler(LatentDiffusion(linear_start=0.00085, linear_end=0.012))\n")
    out = tmp_path / "report.json"
    assert main(["check", f"{glue}:sampler", "--profile", "quick", "--steps", "10", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert any("index 0" in note for note in report["target_notes"])
    assert {c["verdict"] for c in report["checks"]} <= {"pass", "acceptable"}
