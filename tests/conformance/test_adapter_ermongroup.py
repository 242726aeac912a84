r"""ermongroup/ddim's ``generalized_steps`` and ``ddpm_steps``, against the stand-in of ``standins/ermongroup.py``.

The user's glue is either the five-line LoopSampler recipe (below, as docs/ecosystem.md shows it) or the
one-line helper ``ermongroup_target``. ``range(0, T, T // N)`` has N + 1 entries when N does not divide T:
undeclared, ``loop.timesteps`` reports it; declared, it is *acceptable*. Expected counts are derived from
the rule's definition (⌈T / ⌊T/N⌋⌉), never read back from the harness.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import pytest
import torch

from ddspec.conformance.adapters.ermongroup import ermongroup_target, quad_seq, uniform_seq
from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks

from .standins import ermongroup as E

T = 1000
BETAS = torch.from_numpy(E.get_beta_schedule("linear", beta_start=1e-4, beta_end=0.02, num_diffusion_timesteps=T)).float()


def _report(target: Any, dtype: str = "float32", steps: tuple[int, ...] | None = None, seed: int = 0) -> Report:
    return run_checks(target, CheckContext(target, dtype=dtype, profile="quick", seed=seed, steps=steps),
                      installed_checks())


def _bad(report: Report) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: {r.message[:240]}" for r in report.checks
            if r.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)]


def _result(report: Report, name: str) -> Any:
    return next(r for r in report.checks if r.name == name)


# -- the five-line recipe (docs/ecosystem.md) --------------------------------------------------------


def recipe(generalized_steps: Callable, betas: torch.Tensor) -> LoopSampler:
    def sample(model, x_T, num_steps, *, eta=0.0):  # noqa: ANN001, ANN202 - the user's glue, as documented
        return generalized_steps(x_T, range(0, 1000, 1000 // num_steps), model, betas, eta=eta)[0][-1]
    return LoopSampler(sample, Conventions(family="ddim", num_train_timesteps=1000), accepts_generator=False,
                       timesteps=lambda n: list(range(0, 1000, 1000 // n))[::-1], table_dtype=torch.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_five_line_recipe_passes(dtype: str) -> None:
    report = _report(recipe(E.generalized_steps, BETAS), dtype, steps=(1, 7, 10))
    assert not _bad(report), _bad(report)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_helper_passes_generalized_steps(dtype: str) -> None:
    target = ermongroup_target(E.generalized_steps, BETAS)
    assert target.conventions.family == "ddim" and target.accepts_eta
    report = _report(target, dtype, steps=(1, 7, 10))
    assert not _bad(report), _bad(report)
    passed = {r.name.split(".")[1] for r in report.checks if r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE)}
    assert {"timesteps", "steps", "noise", "final_step", "output_law"} <= passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_helper_passes_ddpm_steps(dtype: str) -> None:
    target = ermongroup_target(E.ddpm_steps, BETAS)
    conv = target.conventions
    assert (conv.family, conv.variance_type, conv.clip_sample, target.accepts_eta) == ("ddpm", "fixed_large", True, False)
    report = _report(target, dtype, steps=(1, 7, 10))
    assert not _bad(report), _bad(report)
    for n in (1, 7, 10):
        assert _result(report, f"loop.output_law.N={n}").verdict == Verdict.PASS
    passed = {r.name.split(".")[1] for r in report.checks if r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE)}
    assert {"timesteps", "noise", "noise_independence", "final_step"} <= passed


def test_ddpm_steps_clipping_under_fixed_large_is_kept_a_no_op() -> None:
    r"""ddpm_steps adds σ² = β' (fixed_large), more than the posterior's β̃', so its states drift off the
    marginal, and with the probe's full-scale data law the exact x̂₀ would leave [−1, 1] and the declared clamp
    would act (the closed-form law holds only while clipping is a no-op). The output-law check therefore
    narrows the data law until the union bound on x̂₀ leaving [−1, 1] is within 1 % of its false-failure rate,
    and the clamped loop passes; the control without the clamp keeps the full-scale law and passes too."""
    clipped = _result(_report(ermongroup_target(E.ddpm_steps, BETAS), "float64", steps=(5,)), "loop.output_law.N=5")
    assert clipped.verdict == Verdict.PASS and clipped.details["data_scale"] < 1.0
    assert clipped.details["clip_tail_probability"] <= 0.01 * 1e-6
    unclipped = ermongroup_target(lambda x, seq, model, b: E.ddpm_steps(x, seq, model, b, _clip=False), BETAS,
                                  kind="ddpm")
    unclipped.conventions = dataclasses.replace(unclipped.conventions, clip_sample=False)
    report = _report(unclipped, "float64", steps=(5,))
    assert not _bad(report) and _result(report, "loop.output_law.N=5").details["data_scale"] == 1.0


def test_quad_skip_passes() -> None:
    # quad at N = 10: int((k * sqrt(800) / 9)^2) = int(k^2 * 800 / 81), k = 0..9
    assert quad_seq(T, 10) == [int(k * k * 800 / 81) for k in range(10)]
    report = _report(ermongroup_target(E.generalized_steps, BETAS, skip_type="quad"), steps=(10,))
    assert not _bad(report), _bad(report)


# -- N + 1 steps where N does not divide T ---------------------------------------------------------


def test_uniform_skip_has_n_plus_one_steps_when_n_does_not_divide_t() -> None:
    for n in (3, 7, 10, 300):
        expected = math.ceil(T / (T // n))
        assert len(uniform_seq(T, n)) == expected
    assert len(uniform_seq(T, 7)) == 8 and len(uniform_seq(T, 10)) == 10


def test_undeclared_n_plus_one_steps_are_reported() -> None:
    bare = LoopSampler(lambda model, x_T, n, *, eta=0.0: E.generalized_steps(x_T, range(0, T, T // n), model, BETAS,
                                                                            eta=eta)[0][-1],
                       Conventions(family="ddim", num_train_timesteps=T), accepts_generator=False,
                       table_dtype=torch.float32)
    result = _result(_report(bare, steps=(7,)), "loop.timesteps.N=7")
    assert result.verdict == Verdict.FAIL
    assert "called the model 8 times" in result.message and "timesteps=" in result.message


def test_declared_list_is_acceptable_and_divisors_are_exact() -> None:
    listed = _result(_report(ermongroup_target(E.generalized_steps, BETAS), steps=(7,)), "loop.timesteps.N=7")
    assert listed.verdict in (Verdict.PASS, Verdict.ACCEPTABLE) and "uniform" in listed.message
    divisors = ermongroup_target(E.generalized_steps, BETAS, declare="divisors")
    assert divisors.supports(8) and not divisors.supports(7)
    report = _report(divisors, steps=(7, 10))
    assert not _bad(report)
    assert _result(report, "loop.timesteps.N=10").verdict == Verdict.PASS
    skipped = _result(report, "loop.timesteps.N=7")
    assert skipped.verdict == Verdict.SKIPPED and "not supported" in skipped.message


def test_bad_arguments_name_themselves() -> None:
    for kwargs, arg in (({"kind": "heun"}, "kind"), ({"skip_type": "cubic"}, "skip_type"),
                        ({"declare": "all"}, "declare"), ({"skip_type": "quad", "declare": "divisors"}, "declare")):
        with pytest.raises(ValueError, match=f"^{arg}="):
            ermongroup_target(E.generalized_steps, BETAS, **kwargs)
    with pytest.raises(ValueError, match="^betas"):
        ermongroup_target(E.generalized_steps, torch.ones(3, 3))


# -- planted bugs -------------------------------------------------------------------------------------


def _alpha_at_t_minus_one(x: torch.Tensor, seq: Any, model: Callable, b: torch.Tensor, **kwargs: Any) -> Any:
    """generalized_steps with seq_next = seq shifted by one index (t − 1) instead of the previous entry."""
    n = x.size(0)
    xs = [x]
    with torch.no_grad():
        for i in reversed(list(seq)):
            at = E.compute_alpha(b, (torch.ones(n) * i).long())
            at_next = E.compute_alpha(b, (torch.ones(n) * (i - 1)).long())
            et = model(xs[-1], torch.ones(n) * i)
            x0 = (xs[-1] - et * (1 - at).sqrt()) / at.sqrt()
            c1 = kwargs.get("eta", 0) * ((1 - at / at_next) * (1 - at_next) / (1 - at)).sqrt()
            xs.append(at_next.sqrt() * x0 + c1 * torch.randn_like(x) + ((1 - at_next) - c1**2).sqrt() * et)
    return xs, []


def _ddpm_noise_on_every_step(x: torch.Tensor, seq: Any, model: Callable, b: torch.Tensor, **kwargs: Any) -> Any:
    """ddpm_steps with the ``t == 0`` mask dropped: noise √β'₀ at the last step."""
    n = x.size(0)
    xs = [x]
    with torch.no_grad():
        for i, j in zip(reversed(list(seq)), reversed([-1] + list(seq[:-1]))):
            at = E.compute_alpha(b, (torch.ones(n) * i).long())
            atm1 = E.compute_alpha(b, (torch.ones(n) * j).long())
            beta_t = 1 - at / atm1
            xc = xs[-1]
            e = model(xc, torch.ones(n) * i)
            x0 = torch.clamp((1.0 / at).sqrt() * xc - (1.0 / at - 1).sqrt() * e, -1, 1)
            mean = ((atm1.sqrt() * beta_t) * x0 + ((1 - beta_t).sqrt() * (1 - atm1)) * xc) / (1.0 - at)
            xs.append(mean + beta_t.sqrt() * torch.randn_like(xc))
    return xs, []


def test_planted_bugs_fail_their_family() -> None:
    shifted = _report(ermongroup_target(_alpha_at_t_minus_one, BETAS, kind="generalized"), steps=(10,))
    assert any(r.name.startswith("loop.steps") and r.verdict == Verdict.FAIL for r in shifted.checks), _bad(shifted)
    noisy = _report(ermongroup_target(_ddpm_noise_on_every_step, BETAS, kind="ddpm"), steps=(10,))
    assert any(r.name.startswith("loop.final_step") and r.verdict == Verdict.FAIL for r in noisy.checks), _bad(noisy)
