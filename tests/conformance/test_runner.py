"""Tests of conformance/runner.py: safe calls, global-RNG leak detection, and run_checks."""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import CheckResult, Report, Verdict
from ddspec.conformance.runner import (
    CallOutcome,
    call_with_timeout,
    check_label,
    restore_rng_state,
    rng_leaked,
    rng_state_snapshot,
    run_checks,
)


@dataclass(frozen=True)
class FakeConventions:
    family: str = "ddim"
    num_train_timesteps: int = 10


class FakeSampler:
    """The smallest object with the Sampler protocol's surface (T = 10, linear betas)."""

    name = "fake-sampler"
    conventions = FakeConventions()

    def betas(self):
        return np.linspace(1e-4, 0.02, 10)

    def alphas_cumprod(self):
        return np.cumprod(1.0 - self.betas())

    def timesteps(self, num_steps):
        return np.arange(num_steps)[::-1]

    def step(self, model_output, t, x_t, *, num_steps, eta=0.0, noise=None, generator=None,
             predicted_variance=None):
        return x_t


# -- call_with_timeout ----------------------------------------------------------------------------------


def test_call_returns_the_value_and_passes_arguments():
    out = call_with_timeout(lambda a, *, b: a + b, 2, b=3, timeout_s=5.0)
    assert isinstance(out, CallOutcome)
    assert out.ok and out.value == 5
    assert out.error is None and out.traceback is None and not out.timed_out
    assert 0.0 <= out.elapsed_s < 5.0


def test_call_catches_exceptions_with_type_and_one_line_message():
    def boom():
        raise ValueError("bad t\nsecond line")

    out = call_with_timeout(boom, timeout_s=5.0)
    assert not out.ok and not out.timed_out and out.value is None
    assert out.error == "ValueError: bad t second line"
    assert "\n" not in out.error
    assert "boom" in out.traceback and "ValueError" in out.traceback


def test_call_catches_system_exit_but_not_keyboard_interrupt():
    def exits():
        raise SystemExit(3)

    out = call_with_timeout(exits, timeout_s=5.0)
    assert not out.ok and out.error == "SystemExit: 3"

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_timeout(interrupted, timeout_s=5.0)


def test_call_times_out_within_timeout_plus_half_a_second():
    release = threading.Event()
    start = time.perf_counter()
    out = call_with_timeout(release.wait, 10.0, timeout_s=0.2)
    wall = time.perf_counter() - start
    release.set()  # let the abandoned thread finish
    assert out.timed_out and not out.ok
    assert "timed out after 0.2 s" in out.error
    assert 0.2 <= out.elapsed_s < 0.7
    assert wall < 0.7


def test_call_inherits_grad_mode():
    with torch.no_grad():
        out = call_with_timeout(torch.is_grad_enabled, timeout_s=5.0)
    assert out.ok and out.value is False
    assert call_with_timeout(torch.is_grad_enabled, timeout_s=5.0).value is True


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "1", True])
def test_call_rejects_bad_timeouts(timeout):
    with pytest.raises(ValueError, match="timeout_s"):
        call_with_timeout(lambda: None, timeout_s=timeout)


# -- RNG leaks ------------------------------------------------------------------------------------------


def test_no_leak_when_nothing_draws_from_global_rngs():
    before = rng_state_snapshot()
    gen = torch.Generator().manual_seed(0)
    torch.randn(4, generator=gen)
    np.random.default_rng(0).random(3)
    random.Random(0).random()
    assert rng_leaked(before) is None


@pytest.mark.parametrize(
    "draw, label",
    [
        (lambda: torch.randn(3), "torch CPU global RNG"),
        (lambda: np.random.rand(2), "numpy global RNG"),
        (lambda: random.random(), "python random global RNG"),
    ],
)
def test_leak_is_detected_and_named(draw, label):
    before = rng_state_snapshot()
    draw()
    leaked = rng_leaked(before)
    assert leaked is not None and label in leaked
    restore_rng_state(before)
    assert rng_leaked(before) is None


def test_restore_replays_the_same_draws():
    before = rng_state_snapshot()
    first = (torch.randn(3), np.random.rand(3), random.random())
    restore_rng_state(before)
    second = (torch.randn(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]
    with pytest.raises(ValueError, match="before"):
        rng_leaked("not a snapshot")


# -- run_checks -----------------------------------------------------------------------------------------


def passing_check(ctx):
    return [CheckResult(name="oracle.one", family="oracle", verdict=Verdict.PASS),
            CheckResult(name="oracle.two", family="oracle", verdict=Verdict.ACCEPTABLE,
                        consequence="none", duration_s=0.25)]


def crashing_check(ctx):
    raise RuntimeError("harness bug")


def wrong_return_check(ctx):
    return "pass"


def leaky_check(ctx):
    torch.randn(5)
    np.random.rand(5)
    return [CheckResult(name="invariants.leak", family="invariants", verdict=Verdict.PASS)]


crashing_check.__module__ = "ddspec.conformance.checks.schedule"


def make_context(**kwargs):
    return CheckContext(sampler=kwargs.pop("sampler", FakeSampler()), device="cpu", dtype="float32",
                        profile="quick", seed=3, **kwargs)


def test_check_label_uses_the_module_short_name():
    assert check_label(crashing_check) == "schedule.crashing_check"
    assert check_label(passing_check) == "test_runner.passing_check"


def test_run_checks_turns_a_crash_into_a_fail_and_keeps_going():
    ctx = make_context()
    rep = run_checks(ctx.sampler, ctx, [crashing_check, passing_check, wrong_return_check])
    assert isinstance(rep, Report)
    names = [r.name for r in rep.checks]
    assert names == ["schedule.crashing_check", "oracle.one", "oracle.two", "test_runner.wrong_return_check"]
    crash = rep.checks[0]
    assert crash.verdict is Verdict.FAIL and crash.family == "schedule"
    assert "RuntimeError: harness bug" in crash.message
    assert "Traceback" in crash.details["traceback"] and "harness bug" in crash.details["traceback"]
    wrong = rep.checks[3]
    assert wrong.verdict is Verdict.FAIL and wrong.family == "harness"
    assert "not a list of CheckResult" in wrong.message
    assert rep.exit_code() == 1


def test_run_checks_fills_the_report_and_durations():
    ctx = make_context()
    rep = run_checks(ctx.sampler, ctx, [passing_check])
    assert (rep.target, rep.device, rep.dtype, rep.profile, rep.seed) == ("fake-sampler", "cpu", "float32", "quick", 3)
    assert rep.conventions == {"family": "ddim", "num_train_timesteps": 10}
    one, two = rep.checks
    assert two.duration_s == 0.25  # timed by the check itself: kept
    assert one.duration_s >= 0.0
    assert run_checks(ctx.sampler, ctx, [], target="pkg:make").target == "pkg:make"


def test_run_checks_restores_global_rngs_after_each_check():
    ctx = make_context()
    before = rng_state_snapshot()
    rep = run_checks(ctx.sampler, ctx, [leaky_check])
    assert rep.checks[0].verdict is Verdict.PASS
    assert rng_leaked(before) is None


def test_progress_lines_one_per_result():
    stream = io.StringIO()
    ctx = make_context(progress=True)
    run_checks(ctx.sampler, ctx, [passing_check, crashing_check], stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines == ["[1/2] oracle.one  pass", "[1/2] oracle.two  acceptable", "[2/2] schedule.crashing_check  fail"]
    quiet = io.StringIO()
    run_checks(ctx.sampler, make_context(sampler=ctx.sampler), [passing_check], stream=quiet)
    assert quiet.getvalue() == ""


def test_progress_goes_to_stderr_by_default(capsys):
    ctx = make_context(progress=True)
    run_checks(ctx.sampler, ctx, [passing_check])
    captured = capsys.readouterr()
    assert "oracle.one  pass" in captured.err and captured.out == ""


def test_run_checks_usage_errors():
    ctx = make_context()
    with pytest.raises(ValueError, match="sampler"):
        run_checks(FakeSampler(), ctx, [])
    with pytest.raises(ValueError, match="checks"):
        run_checks(ctx.sampler, ctx, ["not callable"])
