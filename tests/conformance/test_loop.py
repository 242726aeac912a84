r"""Unit tests of the loop wing: LoopSampler's declarations, the probe, drive, the timestep-rule matching,
and the runner's choice of checks by target kind.

Expected values come from the reference (the Gaussian oracle's closed form, the named timestep rules
written out from their definitions), never from the code under test.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters import adapt
from ddspec.conformance.adapters.loop import LoopSampler
from ddspec.conformance.checks import ALL_CHECKS
from ddspec.conformance.checks import adapter_extras, coefficients
from ddspec.conformance.checks import loop as loop_checks
from ddspec.conformance.context import CheckContext
from ddspec.conformance.loader import load
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import Verdict
from ddspec.conformance.runner import CallOutcome, call_with_timeout, run_checks, select_checks, target_kind
from ddspec.conformance.trajectory import Probe, Trajectory, drive, probe_oracle
from ddspec.reference import schedules

T = 1000
DDIM = Conventions(family="ddim", num_train_timesteps=T)
DDPM = Conventions(family="ddpm", num_train_timesteps=T, variance_type="fixed_small")
BETAS = schedules.linear_betas(T)


def _noop_loop(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    x = x_T
    for t in range(0, T, T // num_steps)[:num_steps][::-1]:
        x = x - 0.0 * model(x, torch.full((x.shape[0],), t, dtype=torch.long))
    return x


def _call(fn: Callable, *args: Any, **kwargs: Any) -> CallOutcome:
    return call_with_timeout(fn, *args, timeout_s=10.0, **kwargs)


# -- LoopSampler -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, argument", [
    ({"noise_source": "cuda"}, "noise_source"),
    ({"accepts_generator": False, "noise_source": "generator"}, "noise_source"),
    ({"timesteps": 3}, "timesteps"),
    ({"timesteps": {0: [1]}}, "timesteps"),
    ({"timesteps": {2: [3.5, 1]}}, "timesteps[2]"),
    ({"supported_num_steps": "10"}, "supported_num_steps"),
    ({"supported_num_steps": {0}}, "supported_num_steps"),
    ({"coefficient_dtype": torch.int32}, "coefficient_dtype"),
    ({"table_dtype": "float32"}, "table_dtype"),
    ({"model_timestep": 2.0}, "model_timestep"),
    ({"accepts_eta": 1}, "accepts_eta"),
    ({"betas": np.ones(3)}, "betas"),
])
def test_bad_declarations_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(ValueError, match=rf"^{argument.replace('[', '.').replace(']', '.')}="):
        LoopSampler(_noop_loop, DDIM, **kwargs)


def test_bad_sample_and_conventions_are_refused() -> None:
    with pytest.raises(ValueError, match="^sample="):
        LoopSampler(3, DDIM)
    with pytest.raises(ValueError, match="^conventions="):
        LoopSampler(_noop_loop, {"family": "ddim"})


def test_expected_timesteps_follow_the_declaration() -> None:
    rule = LoopSampler(_noop_loop, DDIM)
    # leading: k * (T // N) reversed
    assert rule.expected_timesteps(4).tolist() == [750, 500, 250, 0]
    explicit = LoopSampler(_noop_loop, DDIM, timesteps=lambda n: list(range(0, T, T // n))[::-1])
    assert explicit.expected_timesteps(3).tolist() == [999, 666, 333, 0]
    mapping = LoopSampler(_noop_loop, DDIM, timesteps={2: [900, 100]})
    assert mapping.expected_timesteps(2).tolist() == [900, 100]
    assert mapping.supports(2) and not mapping.supports(3)
    with pytest.raises(ValueError, match="^num_steps="):
        mapping.expected_timesteps(3)
    custom = LoopSampler(_noop_loop, Conventions(family="ddim", num_train_timesteps=T, timestep_spacing="custom"))
    with pytest.raises(ValueError, match="^timestep_spacing="):
        custom.expected_timesteps(4)


def test_supported_num_steps_set_and_predicate() -> None:
    only_t = LoopSampler(_noop_loop, DDIM, supported_num_steps={T})
    assert only_t.supports(T) and not only_t.supports(10) and not only_t.supports(T + 1)
    divisors = LoopSampler(_noop_loop, DDIM, supported_num_steps=lambda n: T % n == 0)
    assert divisors.supports(8) and not divisors.supports(7)


def test_model_timestep_table_and_tables() -> None:
    target = LoopSampler(_noop_loop, DDIM, model_timestep=lambda t: t * 0.25)
    table = target.model_timestep_table()
    assert table.shape == (T,) and table[889] == 222.25
    assert not target.has_tables
    with pytest.raises(AttributeError):
        target.betas()
    ab = np.cumprod(1 - BETAS)
    exposed = LoopSampler(_noop_loop, DDIM, betas=BETAS, alphas_cumprod=torch.from_numpy(ab).float())
    assert exposed.has_tables and exposed.alphas_cumprod().dtype == np.float64
    with pytest.raises(ValueError, match="^model_timestep="):
        LoopSampler(_noop_loop, DDIM, model_timestep=lambda t: 1 / (t - 5)).model_timestep_table()


# -- the probe -------------------------------------------------------------------------------------


def _probe(conv: Conventions = DDIM, **kwargs: Any) -> Probe:
    return Probe(conv, BETAS, probe_oracle((2, 3, 2, 2)), seed=7, **kwargs)


def test_the_oracle_probe_returns_the_exact_gaussian_denoiser() -> None:
    oracle = probe_oracle((2, 3, 2, 2))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for kind, fn in (("epsilon", oracle.eps), ("sample", oracle.x0), ("v_prediction", oracle.v)):
        conv = Conventions(family="ddim", num_train_timesteps=T, prediction_type=kind)
        out = _probe(conv, field_scale=0.0)(x, torch.full((2,), 321, dtype=torch.long))
        expected = fn(x.numpy().reshape(2, -1), 321, BETAS).reshape(x.shape)
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-13, atol=1e-13)


def test_the_probe_is_a_function_of_x_and_t_and_records_copies() -> None:
    probe = _probe()
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.full((2,), 500, dtype=torch.long)
    first = probe(x, t)
    again = probe(x.clone(), t.clone())
    assert torch.equal(first, again)
    other_t = probe(x, torch.full((2,), 499, dtype=torch.long))
    assert not torch.equal(first, other_t)
    recorded_x, recorded_out = probe.calls[0].x_t.copy(), probe.calls[0].output.copy()
    x.add_(1.0)
    first.mul_(0.0)
    assert np.array_equal(probe.calls[0].x_t, recorded_x) and np.array_equal(probe.calls[0].output, recorded_out)
    assert first.dtype == x.dtype and [c.t for c in probe.calls] == [500, 500, 499]


def test_the_probe_decodes_timesteps() -> None:
    probe = _probe()
    x = torch.zeros(2, 3, 2, 2)
    probe(x, torch.ones(2) * 7)  # ermongroup: a float tensor of integral values
    probe(x, torch.tensor([5, 6]))  # different timesteps across the batch
    probe(x, torch.full((2,), T))  # out of range
    probe(x, torch.full((2,), 0.25))  # a rescaled t, undeclared
    calls = probe.calls
    assert calls[0].t == 7 and calls[0].t_problem is None
    assert calls[1].t is None and "differs across the batch" in calls[1].t_problem
    assert calls[2].t is None and f"outside the timestep indices [0, {T - 1}]" in calls[2].t_problem
    assert calls[3].t is None and "model_timestep" in calls[3].t_problem
    declared = _probe(timestep_table=np.arange(T) * 0.25)
    declared(x, torch.full((2,), 222.25))
    assert declared.calls[0].t == 889


def test_learned_variances_are_concatenated_on_dim_1() -> None:
    conv = Conventions(family="ddpm", num_train_timesteps=T, variance_type="learned_range")
    out = _probe(conv)(torch.zeros(2, 3, 2, 2), torch.full((2,), 10))
    assert out.shape == (2, 6, 2, 2)
    assert torch.all(out[:, 3:].abs() < 1)  # learned_range's v = tanh(g) lies in (-1, 1)


# -- drive -----------------------------------------------------------------------------------------


def _run(loop: Callable, conv: Conventions = DDIM, n: int = 4, eta: float | None = None, **kwargs: Any) -> Trajectory:
    target = LoopSampler(loop, conv, **kwargs)
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return drive(target, _probe(conv), x, n, eta=eta, seed=3, call=_call)


def test_drive_builds_transitions_from_consecutive_calls() -> None:
    run = _run(_noop_loop)
    assert run.error is None and run.timesteps == (750, 500, 250, 0)
    assert [(tr.t, tr.t_prev) for tr in run.transitions] == [(750, 500), (500, 250), (250, 0), (0, -1)]
    assert np.array_equal(run.transitions[1].x_t, run.transitions[0].x_prev)
    assert np.array_equal(run.transitions[-1].x_prev, run.output)
    alpha0 = Conventions(family="ddim", num_train_timesteps=T, final_alpha_bar_is_one=False)
    assert _run(_noop_loop, alpha0).transitions[-1].t_prev == 0


def test_drive_passes_eta_and_generator_only_when_accepted() -> None:
    def strict_loop(model: Callable, x_T: torch.Tensor, num_steps: int) -> torch.Tensor:
        return _noop_loop(model, x_T, num_steps)

    run = _run(strict_loop, eta=0.5, accepts_eta=False, accepts_generator=False)
    assert run.error is None
    broken = _run(strict_loop, eta=0.5)  # declared as accepting eta: the call raises TypeError
    assert broken.error is not None and "TypeError" in broken.error and not broken.returned


@pytest.mark.parametrize("result, needle", [
    (lambda x: x[:1], "shape"),
    (lambda x: x * float("nan"), "non-finite"),
    (lambda x: x.float(), "dtype"),
    (lambda x: x.numpy(), "ndarray"),
])
def test_drive_reports_a_bad_return_value(result: Callable, needle: str) -> None:
    def loop(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
             generator: torch.Generator | None = None) -> Any:
        return result(_noop_loop(model, x_T, num_steps))

    run = _run(loop)
    assert run.error is not None and needle in run.error and run.returned


def test_drive_leaves_the_global_rng_state_unchanged_and_sees_mutation() -> None:
    def global_loop(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        x_T.add_(torch.randn_like(x_T))
        return _noop_loop(model, x_T.clone(), num_steps)

    before = torch.get_rng_state().clone()
    run = _run(global_loop)
    assert torch.equal(torch.get_rng_state(), before)
    assert run.input_mutated


# -- timestep rules --------------------------------------------------------------------------------


def test_named_rule_match() -> None:
    # range(0, 1000, 142): 8 elements for N = 7, the DDIM authors' "uniform" rule
    uniform = np.array(list(range(0, T, T // 7))[::-1])
    assert loop_checks.named_rule_match(uniform, T, 7)[0] == "uniform"
    # improved-diffusion "ddim3": the first stride giving 3 steps is 334 -> 668, 334, 0; leading 666, 333, 0
    rule, text = loop_checks.named_rule_match(np.array([668, 334, 0]), T, 3)
    assert rule == "ddimN"
    # leading N = 3: 666, 333, 0 (one difference); leading + 1: 667, 334, 1 and the others differ more
    rule, text = loop_checks.named_rule_match(np.array([666, 333, 5]), T, 3)
    assert rule is None and text == "equals leading except 1 position(s): 5 vs 0"
    rule, text = loop_checks.named_rule_match(np.array([900, 700, 500, 100, 0]), T, 3)
    assert rule is None and text.startswith("has 5 elements, which no named rule gives for N=3")


# -- runner and adapt ------------------------------------------------------------------------------


def test_runner_gives_each_kind_its_checks() -> None:
    from diffusers import DDIMScheduler

    step = adapt(DDIMScheduler())
    loop_target = LoopSampler(_noop_loop, DDIM)
    with_tables = LoopSampler(_noop_loop, DDIM, betas=BETAS, alphas_cumprod=np.cumprod(1 - BETAS))
    assert target_kind(step) == "step" and target_kind(loop_target) == "loop"
    # every kind also gets the adapter's own extra checks (a duck-typed hook that returns nothing without one)
    extras = adapter_extras.CHECKS
    loop_only = loop_checks.CHECKS + coefficients.LOOP_CHECKS
    assert select_checks(step, ALL_CHECKS) == [c for c in ALL_CHECKS if c not in loop_only]
    assert select_checks(loop_target, ALL_CHECKS) == loop_only + extras
    chosen = select_checks(with_tables, ALL_CHECKS)
    k = len(loop_only + extras)
    assert chosen[-k:] == loop_only + extras
    assert {c.__module__.rsplit(".", 1)[-1] for c in chosen[:-k]} == {"schedule"}


def test_adapt_and_load_accept_a_loop_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = LoopSampler(_noop_loop, DDIM)
    assert adapt(target) is target
    assert adapt(lambda: target) is target
    (tmp_path / "my_loop.py").write_text(textwrap.dedent("""
        import torch
        from ddspec.conformance.adapters.loop import LoopSampler
        from ddspec.conformance.protocol import Conventions

        def sample(model, x_T, num_steps, *, eta=0.0, generator=None):
            return x_T

        target = LoopSampler(sample, Conventions(family="ddim", num_train_timesteps=1000))

        def make():
            return target
    """))
    monkeypatch.chdir(tmp_path)
    assert isinstance(load(str(tmp_path / "my_loop.py") + ":target").sampler, LoopSampler)
    assert isinstance(load(str(tmp_path / "my_loop.py") + ":make").sampler, LoopSampler)


def test_a_broken_loop_fails_checks_and_never_crashes_the_harness() -> None:
    def raises(model: Callable, x_T: torch.Tensor, num_steps: int, *, eta: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    target = LoopSampler(raises, DDIM)
    report = run_checks(target, CheckContext(target, profile="quick"), ALL_CHECKS)
    assert report.checks and all(r.family == "loop" for r in report.checks)
    assert not [r for r in report.checks if r.details.get("check_function")]
    runs = [r for r in report.checks if r.name.startswith("loop.run.")]
    assert runs and all(r.verdict == Verdict.FAIL and "RuntimeError: CUDA out of memory" in r.message for r in runs)
    assert report.exit_code() == 1
