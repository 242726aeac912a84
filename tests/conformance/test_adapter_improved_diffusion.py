r"""The improved-/guided-diffusion adapter against the faithful stand-in (:mod:`tests.conformance.standins.improved_diffusion`).

Correct configurations pass in float32 and float64 (quick profile); the libraries' quirks are reported
as declared (notes, ``supported_num_steps``, ``unsupported``), never as failures; planted bugs in the
stand-in fail their check family. Expected timestep lists are derived here by hand from the documented
rules (the smallest integer stride with exactly N steps; the fractional stride of each section).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters import adapt
from ddspec.conformance.adapters import improved_diffusion as adapter
from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.checks.adapter_extras import check_reverse_sample, judge_record
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks

from .standins import improved_diffusion as lib


def _report(target: LoopSampler, *, dtype: str = "float32", seed: int = 0, steps: tuple[int, ...] | None = None) -> Report:
    ctx = CheckContext(target, dtype=dtype, profile="quick", seed=seed, steps=steps)
    return run_checks(target, ctx, installed_checks())


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:300]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


def _ratio(result: Any) -> float:
    """The worst |got - expected| / tolerance of a compared result (observed and tolerance of its worst element)."""
    assert result.observed is not None and result.tolerance, result.message
    return float(result.observed) / float(result.tolerance)


def _families(report: Report, verdicts: tuple[Verdict, ...] = (Verdict.PASS, Verdict.ACCEPTABLE)) -> set[str]:
    return {r.name.split(".")[1] for r in report.checks if r.verdict in verdicts}


def _spaced(section: str, *, var: lib.ModelVarType = lib.ModelVarType.FIXED_SMALL, **kwargs: Any) -> lib.SpacedDiffusion:
    betas = lib.get_named_beta_schedule("linear", 1000)
    return lib.SpacedDiffusion(lib.space_timesteps(1000, section), betas=betas, model_mean_type=lib.ModelMeanType.EPSILON,
                               model_var_type=var, loss_type=lib.LossType.MSE, **kwargs)


# -- one line -------------------------------------------------------------------------------------------


def test_adapt_recognises_a_diffusion_in_one_line() -> None:
    diffusion = lib.create_gaussian_diffusion(timestep_respacing="ddim50")
    target = adapt(diffusion)
    assert isinstance(target, LoopSampler)
    conv = target.conventions
    assert (conv.family, conv.variance_type, conv.prediction_type, conv.clip_sample) == ("ddpm", "fixed_large", "epsilon", True)
    assert conv.num_train_timesteps == 1000 and conv.unsupported == ()
    assert target.coefficient_dtype == torch.float32 and target.noise_source == "global"
    notes = " ".join(target.notes)
    assert "float32" in notes and "ddimN" in notes and "N=1 not supported" in notes
    # the base table of a SpacedDiffusion is identified: the libraries' linear 1e-4..0.02 at T = 1000
    np.testing.assert_allclose(target.reading.base_betas[[0, -1]], [1e-4, 0.02], rtol=1e-12)


# -- correct configurations ----------------------------------------------------------------------------------

CONFIGS: dict[str, Any] = {
    "ddim50_fixed_large": lambda: lib.create_gaussian_diffusion(timestep_respacing="ddim50"),
    "sections100_fixed_small": lambda: lib.create_gaussian_diffusion(timestep_respacing="100", sigma_small=True),
    "learned_range_rescaled": lambda: lib.create_gaussian_diffusion(timestep_respacing="25", learn_sigma=True,
                                                                    rescale_timesteps=True),
    "start_x_cosine": lambda: lib.create_gaussian_diffusion(timestep_respacing="50", predict_xstart=True,
                                                            noise_schedule="cosine"),
    "learned_log_variance": lambda: _spaced("20", var=lib.ModelVarType.LEARNED),
    "unspaced_T200": lambda: lib.GaussianDiffusion(betas=lib.get_named_beta_schedule("linear", 200),
                                                   model_mean_type=lib.ModelMeanType.EPSILON,
                                                   model_var_type=lib.ModelVarType.FIXED_SMALL, loss_type=lib.LossType.MSE),
}


# Every configuration in both families and dtypes; the default run keeps one float32 and one float64
# case of each family plus every ddpm configuration (the test run's statistical budget is booked), and
# --run-slow runs the rest.
_FAST = {("ddim50_fixed_large", "ddpm", "float32"), ("ddim50_fixed_large", "ddim", "float32"),
         ("ddim50_fixed_large", "ddpm", "float64"), ("learned_range_rescaled", "ddim", "float64"),
         ("learned_log_variance", "ddpm", "float32"), ("start_x_cosine", "ddpm", "float32"),
         ("start_x_cosine", "ddim", "float32"), ("sections100_fixed_small", "ddpm", "float32"),
         ("unspaced_T200", "ddpm", "float32")}
_CASES = [pytest.param(c, f, d, marks=() if (c, f, d) in _FAST else pytest.mark.slow)
          for c in sorted(CONFIGS) for f in ("ddpm", "ddim") for d in ("float32", "float64")]


@pytest.mark.parametrize(("config", "family", "dtype"), _CASES)
def test_correct_configuration_passes(config: str, family: str, dtype: str) -> None:
    diffusion = CONFIGS[config]()
    target = adapter.p_sample_target(diffusion) if family == "ddpm" else adapter.ddim_target(diffusion)
    own = len(target.reading.kept)
    report = _report(target, dtype=dtype, steps=(own if own <= 50 else 20,))  # the object's own N, if small
    assert not _bad(report), _bad(report)
    required = {"timesteps", "final_step", "inputs_unchanged", "determinism"} | ({"steps"} if family == "ddim" else set())
    assert required <= _families(report, (Verdict.PASS,))
    n = own if own <= 50 else 20
    assert any(r.name.startswith(f"loop.timesteps.N={n}") and r.verdict == Verdict.PASS for r in report.checks)


def test_fixed_sections_check_their_own_step_count() -> None:
    target = adapter.p_sample_target(_spaced("10,15,20"))
    assert target.supports(45) and not target.supports(44) and not target.supports(10)
    report = _report(target)
    assert not _bad(report), _bad(report)
    verdicts = {r.name: r.verdict for r in report.checks}
    assert verdicts["loop.noise.N=45"] == Verdict.PASS and verdicts["loop.final_step.N=45"] == Verdict.PASS
    assert verdicts["loop.timesteps.N=45"] == Verdict.ACCEPTABLE  # a declared list on no named rule


# -- the timestep rules, derived by hand ----------------------------------------------------------------------


def test_ddim_stride_rule() -> None:
    # N = 50: stride 20 gives ceil(1000/20) = 50; N = 7: 1000/7 = 142.9, ceil(1000/143) = 7 and ceil(1000/142) = 8
    assert adapter.ddim_stride_timesteps(1000, 50) == list(range(980, -1, -20))
    assert adapter.ddim_stride_timesteps(1000, 7) == [858, 715, 572, 429, 286, 143, 0]
    with pytest.raises(ValueError, match="num_steps=1"):
        adapter.ddim_stride_timesteps(1000, 1)  # ceil(1000/k) = 1 needs k >= 1000: no stride in [1, T)


def test_section_rule() -> None:
    # T = 300 in sections "10,15,20" (the libraries' docstring example): sizes 100 each;
    # strides 99/9 = 11 (exact), 99/14 and 99/19; the first and last index of every section are kept.
    kept = sorted(adapter.section_timesteps(300, [10, 15, 20]))
    assert len(kept) == 45
    assert kept[:10] == list(range(0, 100, 11))
    assert (kept[10], kept[24], kept[25], kept[44]) == (100, 199, 200, 299)
    # one section of 4 in 10: stride 3 exactly
    assert adapter.section_timesteps(10, [4]) == [9, 6, 3, 0]
    with pytest.raises(ValueError, match="counts"):
        adapter.section_timesteps(10, [11])


@pytest.mark.parametrize("section", ["ddim25", "ddim40", "37", "250", "3,7,11"])
def test_the_adapter_rule_agrees_with_the_library_function(section: str) -> None:
    diffusion = _spaced(section)
    assert list(adapter.read_diffusion(diffusion).kept) == sorted(lib.space_timesteps(1000, section), reverse=True)


# -- quirks: declared, not failed -------------------------------------------------------------------------------


def test_one_step_process_is_declared_unsupported() -> None:
    with pytest.raises(IndexError):  # the library's posterior_variance[1] of a one-step process
        _spaced("1")
    target = adapter.p_sample_target(_spaced("10"))
    assert not target.supports(1) and target.supports(2)
    report = _report(target, steps=(1, 10))
    assert [r.verdict for r in report.checks if r.name == "loop.timesteps.N=1"] == [Verdict.SKIPPED]
    assert not _bad(report)


def test_previous_x_and_unknown_fields_are_unsupported_never_defaulted() -> None:
    diffusion = _spaced("10")
    diffusion.model_mean_type = lib.ModelMeanType.PREVIOUS_X
    diffusion.use_fp16_tables = True
    conv = adapter.p_sample_target(diffusion).conventions
    assert conv.prediction_type == "previous_x"
    assert any(u.startswith("prediction_type=previous_x") and "PREVIOUS_X" in u for u in conv.unsupported)
    assert any(u.startswith("use_fp16_tables=True") for u in conv.unsupported)
    report = _report(adapter.p_sample_target(diffusion))
    assert {r.verdict for r in report.checks} == {Verdict.UNSUPPORTED}
    assert all("PREVIOUS_X" in r.message for r in report.checks)


def test_spaced_diffusion_with_an_unknown_base_schedule_asks_for_betas() -> None:
    betas = np.linspace(2e-4, 0.03, 1000)
    diffusion = lib.SpacedDiffusion(lib.space_timesteps(1000, "20"), betas=betas, model_mean_type=lib.ModelMeanType.EPSILON,
                                    model_var_type=lib.ModelVarType.FIXED_SMALL, loss_type=lib.LossType.MSE)
    with pytest.raises(ValueError, match="betas="):
        adapter.p_sample_target(diffusion)
    report = _report(adapter.p_sample_target(diffusion, betas=betas))
    assert not _bad(report), _bad(report)


def test_rescaled_timesteps_are_declared_and_an_undeclared_rescale_fails() -> None:
    diffusion = lib.create_gaussian_diffusion(timestep_respacing="ddim10", rescale_timesteps=True, steps=500)
    target = adapter.p_sample_target(diffusion)
    assert target.model_timestep is not None and target.model_timestep(250) == 500.0  # 250·1000/500
    assert any("t·1000/500" in n for n in target.notes)
    target.model_timestep = None  # as if the adapter had not read rescale_timesteps
    report = _report(target)
    assert any(r.name.startswith("loop.timesteps") and r.verdict == Verdict.FAIL for r in report.checks)


# -- planted bugs in the stand-in ---------------------------------------------------------------------------------


class _NoTimestepMap(lib.SpacedDiffusion):
    """The model sees the respaced index, not the original one."""

    def _wrap_model(self, model: Any) -> Any:
        return model


class _DDIMPrevIsCurrent(lib.SpacedDiffusion):
    """ddim_sample takes ᾱ_prev from alphas_cumprod (the current index) instead of alphas_cumprod_prev."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alphas_cumprod_prev = self.alphas_cumprod.copy()


class _NoiseAtLastStep(lib.SpacedDiffusion):
    def p_sample(self, model: Any, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True, **kwargs: Any) -> dict:
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised)
        return {"sample": out["mean"] + torch.exp(0.5 * out["log_variance"]) * torch.randn_like(x)}


class _ReverseToPrev(lib.SpacedDiffusion):
    """ddim_reverse_sample steps to the *less* noisy index (alphas_cumprod_next replaced by _prev)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alphas_cumprod_next = self.alphas_cumprod_prev


def _bugged(cls: type, section: str = "ddim20") -> Any:
    return cls(lib.space_timesteps(1000, section), betas=lib.get_named_beta_schedule("linear", 1000),
               model_mean_type=lib.ModelMeanType.EPSILON, model_var_type=lib.ModelVarType.FIXED_SMALL,
               loss_type=lib.LossType.MSE)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("cls", "family", "prefix"), [
    (_NoTimestepMap, "ddpm", "loop.timesteps"),
    (_DDIMPrevIsCurrent, "ddim", "loop.steps"),
    (_NoiseAtLastStep, "ddpm", "loop.final_step"),
])
def test_planted_bug_fails_its_family(cls: type, family: str, prefix: str, dtype: str) -> None:
    diffusion = _bugged(cls)
    target = adapter.p_sample_target(diffusion) if family == "ddpm" else adapter.ddim_target(diffusion)
    report = _report(target, dtype=dtype)
    failing = [r.name for r in report.checks if r.verdict == Verdict.FAIL]
    assert any(name.startswith(prefix) for name in failing), (cls.__name__, failing)


# -- inversion -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("config", ["ddim50_fixed_large", "start_x_cosine", "learned_range_rescaled", "rescaled_T500"])
def test_ddim_reverse_sample_matches_the_reference_inversion(config: str, dtype: str) -> None:
    make = CONFIGS.get(config) or (lambda: lib.create_gaussian_diffusion(steps=500, timestep_respacing="ddim20",
                                                                         rescale_timesteps=True))
    result = check_reverse_sample(adapter.reverse_sample_target(make()), dtype=dtype)
    assert result.verdict == Verdict.PASS, result.message
    assert result.name.startswith("loop.inversion.N=") and result.details["transitions"] >= 19
    assert _ratio(result) <= 0.5  # a factor-2 margin below the bound


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_planted_inversion_bug_fails(dtype: str) -> None:
    result = check_reverse_sample(adapter.reverse_sample_target(_bugged(_ReverseToPrev)), dtype=dtype)
    assert result.verdict == Verdict.FAIL and _ratio(result) >= 2.0
    worst = result.findings[0]
    assert worst.step is not None and worst.timestep is not None and worst.element is not None
    assert "expected" in result.message and "tolerance" in result.message


def test_the_float32_coefficient_declaration_is_needed_in_float64() -> None:
    """Without ``coefficient_dtype=float32`` the float64 error model (about 1e-15 relative) must reject the
    library's float32 coefficients (2^-24 relative each): the declaration is what admits them."""
    target = adapter.ddim_target(CONFIGS["ddim50_fixed_large"]())
    target.coefficient_dtype = None
    report = _report(target, dtype="float64", steps=(50,))
    assert any(r.name.startswith("loop.steps.N=50") and r.verdict == Verdict.FAIL for r in report.checks)


def test_the_inversion_recorder_only_drives_and_the_check_judges_its_record() -> None:
    """Drive and judge are separate: the record holds the library's steps (source t, destination t_prev, the
    kept list ascending), and the same record with one step's output moved by a relative 1e-3 fails."""
    recorder = adapter.reverse_sample_target(CONFIGS["ddim50_fixed_large"]())
    (record,) = recorder.recordings(steps=(50,))
    kept = sorted(adapter.ddim_stride_timesteps(1000, 50))  # range(0, 1000, 20): stride 20 gives exactly 50
    assert record.timesteps.tolist() == kept and record.coefficient_dtype == "float32"
    assert [(tr.t, tr.t_prev) for tr in record.transitions] == list(zip(kept[:-1], kept[1:]))
    assert [r.verdict for r in judge_record(record)] == [Verdict.PASS]
    tr = record.transitions[7]
    planted = dataclasses.replace(record, transitions=record.transitions[:7] + (
        dataclasses.replace(tr, x_prev=tr.x_prev * (1 + 1e-3)),) + record.transitions[8:])
    (result,) = judge_record(planted)
    assert result.verdict == Verdict.FAIL and result.findings[0].step == 7 and _ratio(result) >= 2.0
    assert "expected" in result.message and "tolerance" in result.message


def test_check_reverse_sample_names_a_raw_diffusion_and_skips_an_unsupported_n() -> None:
    with pytest.raises(TypeError, match="^target=SpacedDiffusion: .*reverse_sample_target"):
        check_reverse_sample(CONFIGS["ddim50_fixed_large"]())
    # 'ddimN' needs an integer stride with exactly N indices in range(0, 1000, k): none gives N = 999
    result = check_reverse_sample(adapter.reverse_sample_target(CONFIGS["ddim50_fixed_large"]()), num_steps=999)
    assert result.verdict == Verdict.SKIPPED and "N=999" in result.message


# -- the inversion's expect stage and its first-step bound (library-free) -------------------------------------------

_BETAS = tuple(float(b) for b in np.linspace(1e-4, 0.02, 20))


def _mp_alpha_bar(t: int) -> Any:
    """ᾱ_t = Π_{i ≤ t} (1 − β_i) in 60-digit arithmetic (0-based t; ᾱ_{−1} = 1)."""
    import mpmath

    with mpmath.workdps(60):
        out = mpmath.mpf(1)
        for b in _BETAS[: t + 1]:
            out *= 1 - mpmath.mpf(b)
        return out


def _mp_invert(x: float, eps: float, t_from: int, t_to: int, *, clip: float | None = None,
               rederive: bool = False) -> tuple[float, bool]:
    """Song et al. 2021 eq. 12 with σ = 0 from t_from to t_to, element by element, written out in mpmath."""
    import mpmath

    with mpmath.workdps(60):
        a, p = _mp_alpha_bar(t_from), _mp_alpha_bar(t_to)
        xm, em = mpmath.mpf(x), mpmath.mpf(eps)
        x0 = xm if t_from < 0 else (xm - mpmath.sqrt(1 - a) * em) / mpmath.sqrt(a)
        clipped = clip is not None and abs(x0) > clip
        if clipped:
            x0 = mpmath.mpf(clip) * mpmath.sign(x0)
            if rederive:
                em = (xm - mpmath.sqrt(a) * x0) / mpmath.sqrt(1 - a)
        return float(mpmath.sqrt(p) * x0 + mpmath.sqrt(1 - p) * em), clipped


def _inv_transition(t_from: int, t_to: int, x: np.ndarray, out: np.ndarray) -> Any:
    from ddspec.conformance.trajectory import Transition

    return Transition(t=t_from, t_prev=t_to, x_t=x, model_output=out, x_prev=np.zeros_like(x))


@pytest.mark.parametrize(("t_from", "t_to"), [(3, 9), (-1, 5), (0, 0), (0, 19)])
def test_expect_inversion_matches_eq_12_run_backwards(t_from: int, t_to: int) -> None:
    from ddspec.conformance.expectation import expect_inversion_transition
    from ddspec.conformance.protocol import Conventions

    conv = Conventions(family="ddim", num_train_timesteps=20, beta_schedule="custom", trained_betas=_BETAS,
                       clip_sample=False)
    rng = np.random.default_rng(7)
    x, eps = rng.standard_normal(6), rng.standard_normal(6)
    got = expect_inversion_transition(conv, np.array(_BETAS), _inv_transition(t_from, t_to, x, eps))
    want = [_mp_invert(float(a), float(b), t_from, t_to)[0] for a, b in zip(x, eps)]
    assert got.expected.why is None and not got.clipped
    np.testing.assert_allclose(got.expected.prev_sample, want, rtol=1e-12, atol=1e-13)
    if t_from == t_to:  # the same index both ways: x̂₀ and ε̂ recombine into x itself
        np.testing.assert_allclose(got.expected.prev_sample, x, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("rederive", [False, True])
def test_expect_inversion_clips_and_rederives_as_declared(rederive: bool) -> None:
    from ddspec.conformance.expectation import expect_inversion_transition
    from ddspec.conformance.protocol import Conventions

    conv = Conventions(family="ddim", num_train_timesteps=20, beta_schedule="custom", trained_betas=_BETAS,
                       clip_sample=True, use_clipped_model_output=rederive)
    x, eps = np.array([2.5, -3.0, 0.2]), np.array([0.1, -0.2, 0.3])  # x̂₀ ≈ x here: the first two leave [-1, 1]
    got = expect_inversion_transition(conv, np.array(_BETAS), _inv_transition(10, 15, x, eps))
    want = [_mp_invert(float(a), float(b), 10, 15, clip=1.0, rederive=rederive) for a, b in zip(x, eps)]
    assert got.clipped and [c for _, c in want] == [True, True, False]
    np.testing.assert_allclose(got.expected.prev_sample, [w for w, _ in want], rtol=1e-12, atol=1e-13)


def test_expect_inversion_refuses_what_the_reference_cannot_take() -> None:
    from ddspec.conformance.expectation import expect_inversion_transition
    from ddspec.conformance.protocol import Conventions

    conv = Conventions(family="ddim", num_train_timesteps=20, beta_schedule="custom", trained_betas=_BETAS,
                       prediction_type="sample", clip_sample=False)
    x = np.ones(3)
    singular = expect_inversion_transition(conv, np.array(_BETAS), _inv_transition(-1, 4, x, x))
    assert singular.expected.why_kind == "singular" and "x0-prediction" in (singular.expected.why or "")
    backwards = expect_inversion_transition(conv, np.array(_BETAS), _inv_transition(6, 4, x, x))
    assert backwards.expected.why_kind == "outside"


def test_the_first_inversion_step_bound_admits_float32_and_rejects_a_planted_error() -> None:
    """x_t = √ᾱ_t x + √(1 − ᾱ_t) ε evaluated honestly in float32 from a float32 running-product table stays
    within half of :func:`inversion_from_data_bound`; √ᾱ one index off (t + 1) or scaled by 1 + 1e-3 exceeds it 2×."""
    from ddspec.conformance.tolerances import alpha_bar_relative_bound, inversion_from_data_bound, unit_roundoff

    T = 1000
    betas = np.linspace(1e-4, 0.02, T)
    exact_ab = np.cumprod(1.0 - betas)
    ab32 = np.cumprod((1.0 - betas.astype(np.float32)).astype(np.float32), dtype=np.float32)
    u = unit_roundoff("float32")
    deltas = alpha_bar_relative_bound(betas, "linear", u)
    rng = np.random.default_rng(11)
    x = rng.uniform(-0.9, 0.9, 256).astype(np.float32)
    e = rng.standard_normal(256).astype(np.float32)
    x64, e64 = x.astype(np.float64), e.astype(np.float64)

    def run(a: np.float32) -> np.ndarray:
        s, c = np.sqrt(a, dtype=np.float32), np.sqrt(np.float32(1.0) - a, dtype=np.float32)
        return (s * x + c * e).astype(np.float64)

    for t in (0, 9, 99, 499, 998):
        expected = np.sqrt(exact_ab[t]) * x64 + np.sqrt(1.0 - exact_ab[t]) * e64
        bound = inversion_from_data_bound(float(exact_ab[t]), float(deltas[t]), u, x64, e64)
        assert np.all(np.abs(run(ab32[t]) - expected) <= 0.5 * bound), t
        assert np.max(np.abs(run(ab32[t + 1]) - expected) / bound) > 2.0, t
        scaled = run(ab32[t]) * (1 + 1e-3)
        assert np.max(np.abs(scaled - expected) / bound) > 2.0, t
