r"""diffusers (installed, 0.42.1): ``DDIMInverseScheduler``, ``DDPMParallelScheduler`` / ``DDIMParallelScheduler``
(with ``batch_step_no_noise``), and ``DDPMPipeline`` / ``DDIMPipeline`` as loop targets with their post-processing.

Every adapter is one line of glue. Correct configurations pass in float32 and float64; the findings
(``t − T//N`` as the previous/source timestep, x̂₀-prediction's singular first inversion step) are shown
with their cause; planted bugs fail. Expected values come from the reference (``ddim_invert_step``, the
reference step's mean, ``to_uint8``) or closed forms written here, never from the code under test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMInverseScheduler,
    DDIMParallelScheduler,
    DDIMPipeline,
    DDIMScheduler,
    DDPMParallelScheduler,
    DDPMPipeline,
    DDPMScheduler,
)

from ddspec.conformance.adapters.diffusers_ddim import DiffusersDDIMAdapter  # noqa: E402
from ddspec.conformance.adapters.diffusers_ddpm import DiffusersDDPMAdapter  # noqa: E402
from ddspec.conformance.adapters.diffusers_inverse import DiffusersInverseAdapter  # noqa: E402
from ddspec.conformance.adapters.diffusers_parallel import (  # noqa: E402
    DiffusersDDIMParallelAdapter,
    DiffusersDDPMParallelAdapter,
)
from ddspec.conformance.adapters.diffusers_pipeline import DiffusersPipelineLoop  # noqa: E402
from ddspec.conformance.checks.adapter_extras import (  # noqa: E402
    check_batch_step_no_noise,
    check_inversion,
    check_postprocess,
    judge_record,
)
from ddspec.conformance.context import CheckContext  # noqa: E402
from ddspec.conformance.results import Report, Verdict  # noqa: E402
from ddspec.conformance.runner import installed_checks, run_checks  # noqa: E402

DTYPES = [torch.float32, torch.float64]


def _report(target: Any, dtype: str = "float32", steps: tuple[int, ...] | None = None) -> Report:
    return run_checks(target, CheckContext(target, dtype=dtype, profile="quick", seed=0, steps=steps), installed_checks())


def _ratio(result: Any) -> float:
    """The worst |got - expected| / tolerance of a compared result (observed and tolerance of its worst element)."""
    assert result.observed is not None and result.tolerance, result.message
    return float(result.observed) / float(result.tolerance)


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:240]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


# -- DDIMInverseScheduler ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", [
    {}, {"clip_sample": False}, {"set_alpha_to_one": False}, {"prediction_type": "v_prediction"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, {"beta_schedule": "squaredcos_cap_v2"},
    {"timestep_spacing": "trailing"},
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_inversion_passes(config: dict, dtype: torch.dtype) -> None:
    adapter = DiffusersInverseAdapter(DDIMInverseScheduler(**config))
    for n in (1, 10, 50):  # T // N divides T: the source t − T//N is the previous listed timestep
        result = check_inversion(adapter, n, dtype=dtype)
        assert result.verdict == Verdict.PASS, result.message
        assert _ratio(result) <= 0.5  # factor-2 margin


def test_inversion_model_is_called_at_the_destination() -> None:
    adapter = DiffusersInverseAdapter(DDIMInverseScheduler())
    seen: list[int] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    run = adapter.invert(model, torch.zeros(2, 3, 4, 4), 4)
    assert seen == [0, 250, 500, 750] == run.timesteps.tolist()  # leading: k * (1000 // 4)
    assert "destination" in " ".join(adapter.notes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_trailing_inversion_steps_from_t_minus_stride(dtype: torch.dtype) -> None:
    # trailing, N = 7: the list is round(1000 - k * 1000/7) - 1 ascending; the scheduler steps from t - 142,
    # so already its first step starts at index 142 - 142 = 0 instead of the data (-1)
    adapter = DiffusersInverseAdapter(DDIMInverseScheduler(timestep_spacing="trailing"))
    listed = sorted(round(1000 - k * 1000 / 7) - 1 for k in range(7))
    assert adapter.timesteps(7).tolist() == listed
    result = check_inversion(adapter, 7, dtype=dtype)
    assert result.verdict == Verdict.FAIL and _ratio(result) > 2.0
    assert "t - T//N" in result.message and f"to {listed[0]} from {listed[0] - 142}, listed -1" in result.message


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_prediction_first_inversion_step_is_non_finite(dtype: torch.dtype) -> None:
    # from the data (alpha_bar = 1) eps = (x - x0_hat) / sqrt(1 - 1): diffusers divides by zero
    result = check_inversion(DiffusersInverseAdapter(DDIMInverseScheduler(prediction_type="sample")), 10, dtype=dtype)
    assert result.verdict == Verdict.FAIL
    assert "singular" in result.message and "non-finite" in result.message


class AlphaOneIgnored(DDIMInverseScheduler):
    """Planted: starts from alpha_bar_0 although set_alpha_to_one=True."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_alpha_cumprod = self.alphas_cumprod[0]


def test_planted_inversion_bug_fails() -> None:
    result = check_inversion(DiffusersInverseAdapter(AlphaOneIgnored()), 10)
    assert result.verdict == Verdict.FAIL and result.findings[0].step == 0


def test_inverse_adapter_refuses_other_objects() -> None:
    with pytest.raises(ValueError, match="^scheduler="):
        DiffusersInverseAdapter(DDIMScheduler())


# -- parallel schedulers -----------------------------------------------------------------------------


def test_parallel_adapters_declare_what_the_plain_ones_declare() -> None:
    cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
           "prediction_type": "v_prediction", "timestep_spacing": "trailing"}
    assert DiffusersDDPMParallelAdapter(DDPMParallelScheduler(**cfg)).conventions == \
        DiffusersDDPMAdapter(DDPMScheduler(**cfg)).conventions
    assert DiffusersDDIMParallelAdapter(DDIMParallelScheduler(**cfg)).conventions == \
        DiffusersDDIMAdapter(DDIMScheduler(**cfg)).conventions
    with pytest.raises(ValueError, match="^scheduler="):
        DiffusersDDPMParallelAdapter(DDPMScheduler())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cls, adapter", [(DDPMParallelScheduler, DiffusersDDPMParallelAdapter),
                                          (DDIMParallelScheduler, DiffusersDDIMParallelAdapter)])
def test_parallel_step_passes_the_step_checks(cls: type, adapter: type, dtype: str) -> None:
    report = _report(adapter(cls()), dtype)
    assert not _bad(report), _bad(report)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls, adapter", [(DDPMParallelScheduler, DiffusersDDPMParallelAdapter),
                                          (DDIMParallelScheduler, DiffusersDDIMParallelAdapter)])
@pytest.mark.parametrize("config", [{}, {"prediction_type": "v_prediction", "clip_sample": True},
                                    {"timestep_spacing": "trailing"}], ids=["default", "v_clip", "trailing"])
def test_batch_step_no_noise_passes(cls: type, adapter: type, config: dict, dtype: torch.dtype) -> None:
    a = adapter(cls(**config))
    for n in (1, 10, 50):  # N divides T: t - T//N is the next listed timestep for leading and trailing alike
        result = check_batch_step_no_noise(a, n, dtype=dtype)
        assert result.verdict == Verdict.PASS, result.message
        assert _ratio(result) <= 0.5


@pytest.mark.parametrize("cls, adapter", [(DDPMParallelScheduler, DiffusersDDPMParallelAdapter),
                                          (DDIMParallelScheduler, DiffusersDDIMParallelAdapter)])
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_batch_step_no_noise_takes_t_minus_stride(cls: type, adapter: type, spacing: str) -> None:
    # N = 7: T // N = 142, but trailing's and linspace's strides are 1000/7 and 999/6: the next listed
    # timestep is not t - 142 at most steps
    result = check_batch_step_no_noise(adapter(cls(timestep_spacing=spacing)), 7)
    assert result.verdict == Verdict.FAIL and _ratio(result) > 2.0
    assert "t - T//N" in result.message and result.details["prev_t_minus_stride"]


def test_ddim_batch_step_no_noise_is_checked_at_eta_zero_only() -> None:
    result = check_batch_step_no_noise(DiffusersDDIMParallelAdapter(DDIMParallelScheduler()), 10, eta=0.5)
    assert result.verdict == Verdict.SKIPPED and "eta == 0" in result.message


class ScaledBatchStep(DDPMParallelScheduler):
    """Planted: batch_step_no_noise off by a relative 1e-3."""

    def batch_step_no_noise(self, model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        return super().batch_step_no_noise(model_output, timesteps, sample) * (1 + 1e-3)


def test_planted_batch_step_bug_fails() -> None:
    result = check_batch_step_no_noise(DiffusersDDPMParallelAdapter(ScaledBatchStep()), 10)
    assert result.verdict == Verdict.FAIL and _ratio(result) > 2.0
    assert "expected" in result.message and "tolerance" in result.message


# -- pipelines ---------------------------------------------------------------------------------------


def _unet() -> Any:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=4, in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pipeline_cls, scheduler", [(DDPMPipeline, DDPMScheduler()), (DDIMPipeline, DDIMScheduler()),
                                                     (DDIMPipeline, DDPMScheduler())],
                         ids=["ddpm", "ddim", "ddim_from_ddpm_config"])
def test_pipeline_loop_passes(pipeline_cls: type, scheduler: Any, dtype: str) -> None:
    loop = DiffusersPipelineLoop(pipeline_cls(unet=_unet(), scheduler=scheduler))
    report = _report(loop, dtype)
    assert not _bad(report), _bad(report)
    families = {r.name.split(".")[1] for r in report.checks if r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE)}
    assert {"timesteps", "final_step", "output_law", "determinism", "inputs_unchanged"} <= families


def test_ddim_pipeline_notes_its_scheduler_conversion() -> None:
    loop = DiffusersPipelineLoop(DDIMPipeline(unet=_unet(), scheduler=DDPMScheduler()))
    assert loop.conventions.family == "ddim" and loop.accepts_eta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pipeline_cls, scheduler_cls", [(DDPMPipeline, DDPMScheduler), (DDIMPipeline, DDIMScheduler)])
def test_postprocess_matches_the_reference(pipeline_cls: type, scheduler_cls: type, dtype: torch.dtype) -> None:
    loop = DiffusersPipelineLoop(pipeline_cls(unet=_unet(), scheduler=scheduler_cls(clip_sample=False)))
    unit, uint8 = check_postprocess(loop, dtype=dtype)
    assert unit.verdict == Verdict.PASS and uint8.verdict == Verdict.PASS, (unit.message, uint8.message)
    assert unit.details["outside_share"] > 0, "the clamp to [0, 1] was not exercised"


class TruncatingPipeline(DDPMPipeline):
    """Planted: uint8 by truncation, improved-diffusion's cast, where diffusers rounds."""

    @staticmethod
    def numpy_to_pil(images: np.ndarray) -> list:
        from PIL import Image

        return [Image.fromarray((im * 255).astype("uint8")) for im in images]


class ShrunkOutputPipeline(DDPMPipeline):
    """Planted: the [0, 1] output scaled by 0.999."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = super().__call__(*args, **kwargs)
        out.images = out.images * 0.999
        return out


def test_planted_postprocess_bugs_fail() -> None:
    trunc = check_postprocess(DiffusersPipelineLoop(TruncatingPipeline(unet=_unet(), scheduler=DDPMScheduler(clip_sample=False))))
    assert [r.verdict for r in trunc] == [Verdict.PASS, Verdict.FAIL]
    shrunk = check_postprocess(DiffusersPipelineLoop(ShrunkOutputPipeline(unet=_unet(), scheduler=DDPMScheduler(clip_sample=False))))
    assert shrunk[0].verdict == Verdict.FAIL


class NoiseAtLastStep(DDPMScheduler):
    """Planted: adds noise of std 0.05 after the last step."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None, **kw: Any) -> Any:
        out = super().step(model_output, timestep, sample, generator=generator, **kw)
        if int(timestep) == int(self.timesteps[-1]):
            out.prev_sample = out.prev_sample + 0.05 * torch.randn(sample.shape, generator=generator, dtype=sample.dtype)
        return out


def test_planted_pipeline_loop_bug_fails() -> None:
    report = _report(DiffusersPipelineLoop(DDPMPipeline(unet=_unet(), scheduler=NoiseAtLastStep())))
    assert any(r.name.startswith("loop.final_step") and r.verdict == Verdict.FAIL for r in report.checks), _bad(report)


def test_pipeline_loop_refuses_other_objects_and_leaves_the_pipeline_alone() -> None:
    with pytest.raises(ValueError, match="^pipeline="):
        DiffusersPipelineLoop(DDPMScheduler())
    pipe = DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler())
    unet, scheduler = pipe.unet, pipe.scheduler
    _report(DiffusersPipelineLoop(pipe), steps=(10,))
    assert pipe.unet is unet and pipe.scheduler is scheduler and "step" not in vars(scheduler)


def _judged(records: list) -> list:
    return [r for record in records for r in judge_record(record)]


def test_recordings_hooks_drive_and_the_check_judges() -> None:
    """The hook the runner calls for what the step and loop families do not run: the adapter drives, the check judges."""
    assert [r.name for r in _judged(DiffusersInverseAdapter(DDIMInverseScheduler()).recordings(steps=(10,)))] == \
        ["single_step.inversion.N=10"]
    assert [r.verdict for r in _judged(DiffusersDDPMParallelAdapter(DDPMParallelScheduler()).recordings(steps=(1, 10)))] == \
        [Verdict.PASS, Verdict.PASS]
    loop = DiffusersPipelineLoop(DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()))
    assert [r.name for r in _judged(loop.recordings())] == ["loop.postprocess.unit", "loop.postprocess.uint8"]


def test_batch_step_record_holds_the_declared_pairs() -> None:
    # DDPM leading N = 4: k * (1000 // 4) descending; each timestep steps to the next listed one, the last to -1
    record = DiffusersDDPMParallelAdapter(DDPMParallelScheduler()).record_batch_step_no_noise(4, per_timestep=3)
    assert record.timesteps.tolist() == [750, 500, 250, 0] and record.library_stride == 250
    assert [(tr.t, tr.t_prev) for tr in record.transitions] == [(750, 500), (500, 250), (250, 0), (0, -1)]
    assert all(tr.x_t.shape == (3, 3, 4, 4) and tr.noise is None for tr in record.transitions)


def test_a_planted_bug_in_a_record_fails_without_the_library() -> None:
    """The check judges records, not libraries: one element of one recorded step moved by 1e-3 fails there."""
    record = DiffusersDDIMParallelAdapter(DDIMParallelScheduler()).record_batch_step_no_noise(10)
    tr = record.transitions[4]
    x_prev = tr.x_prev.copy()
    x_prev[1, 2, 3, 0] += 1e-3
    planted = dataclasses.replace(record, transitions=record.transitions[:4] + (dataclasses.replace(tr, x_prev=x_prev),)
                                  + record.transitions[5:])
    (result,) = judge_record(planted)
    assert result.verdict == Verdict.FAIL and _ratio(result) > 2.0
    worst = result.findings[0]
    assert (worst.step, worst.timestep, worst.element) == (4, tr.t, (1, 2, 3, 0))


def test_records_refuse_bad_fields_naming_them() -> None:
    record = DiffusersDDPMParallelAdapter(DDPMParallelScheduler()).record_batch_step_no_noise(2)
    with pytest.raises(ValueError, match="^kind='reverse'"):
        dataclasses.replace(record, kind="reverse")
    with pytest.raises(ValueError, match="^dtype='float8'"):
        dataclasses.replace(record, dtype="float8")
    with pytest.raises(ValueError, match="^eta=-1"):
        dataclasses.replace(record, eta=-1.0)
    with pytest.raises(TypeError, match="^record=str"):
        judge_record("not a record")
    with pytest.raises(TypeError, match="^adapter=DDPMParallelScheduler"):
        check_batch_step_no_noise(DDPMParallelScheduler(), 10)


# -- through adapt() and the runner (one line of glue: `ddspec check mod:scheduler`) ---------------------


def test_adapt_recognises_the_extra_diffusers_classes() -> None:
    from ddspec.conformance.adapters import adapt
    from ddspec.conformance.protocol import target_kind

    assert isinstance(adapt(DDPMParallelScheduler()), DiffusersDDPMParallelAdapter)
    assert isinstance(adapt(DDIMParallelScheduler()), DiffusersDDIMParallelAdapter)
    inverse = adapt(DDIMInverseScheduler())
    assert isinstance(inverse, DiffusersInverseAdapter) and target_kind(inverse) == "inversion"
    pipe = adapt(DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()))
    assert isinstance(pipe, DiffusersPipelineLoop) and target_kind(pipe) == "loop"


def test_the_runner_runs_the_adapters_extra_checks() -> None:
    parallel = _report(DiffusersDDPMParallelAdapter(DDPMParallelScheduler()), steps=(1, 10))
    names = {r.name: r.verdict for r in parallel.checks}
    assert names["single_step.batch_step_no_noise.N=10"] == Verdict.PASS and not _bad(parallel)
    inverse = _report(DiffusersInverseAdapter(DDIMInverseScheduler()), steps=(1, 10))
    assert {r.name for r in inverse.checks} == {"schedule.betas", "schedule.alphas_cumprod",
                                                "single_step.inversion.N=1", "single_step.inversion.N=10"}
    assert not _bad(inverse)


def test_the_runner_fails_a_planted_bug_through_the_extra_checks() -> None:
    report = _report(DiffusersDDPMParallelAdapter(ScaledBatchStep()), steps=(10,))
    failed = {r.name for r in report.checks if r.verdict == Verdict.FAIL}
    assert "single_step.batch_step_no_noise.N=10" in failed
    inverse = _report(DiffusersInverseAdapter(AlphaOneIgnored()), steps=(10,))
    assert [r.name for r in inverse.checks if r.verdict == Verdict.FAIL] == ["single_step.inversion.N=10"]


class _RecordingsRaise(DiffusersDDPMParallelAdapter):
    def recordings(self, **kwargs: Any) -> list:
        raise RuntimeError("library exploded")


class _RecordingsWrongType(DiffusersDDPMParallelAdapter):
    def recordings(self, **kwargs: Any) -> list:
        return ["not a record"]


def test_recordings_that_raise_become_one_failed_result() -> None:
    report = _report(_RecordingsRaise(DDPMParallelScheduler()), steps=(10,))
    bad = [r for r in report.checks if r.name == "adapter.extra_checks"]
    assert len(bad) == 1 and bad[0].verdict == Verdict.FAIL and "RuntimeError: library exploded" in bad[0].message
    wrong = [r for r in _report(_RecordingsWrongType(DDPMParallelScheduler()), steps=(10,)).checks
             if r.name == "adapter.extra_checks"]
    assert len(wrong) == 1 and wrong[0].verdict == Verdict.FAIL and "not a list of StepRecord" in wrong[0].message
