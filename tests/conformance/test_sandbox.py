"""Tests of conformance/sandbox.py: the supervised worker process, and the global-state watch.

Each test isolates a tiny hand-written target (forked workers inherit it: nothing here is pickled but
the arguments and results) and checks what the harness sees: values, exceptions, deaths, timeouts,
what a call did to its arguments and to the global RNGs, and the global-state log. The expected
values are those of the same code run in this process (the in-process behaviour the isolation must
reproduce) or closed descriptions (exit code, signal name).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from ddspec.conformance import sandbox
from ddspec.conformance.checks.global_state import NAME, check_no_global_state_change
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Verdict
from ddspec.conformance.sandbox import (
    MAX_RESTARTS,
    StateLog,
    WorkerSampler,
    call_in_process,
    isolate,
    isolation_of,
    parse_memory,
    restore_torch_state,
    state_differences,
    torch_state_snapshot,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the CPU worker is forked")


class Target:
    """A minimal protocol-shaped target whose ``step`` does what ``mode`` says."""

    name = "tiny"

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.calls = 0

    def betas(self) -> np.ndarray:
        return np.full(10, 0.01)

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, *, num_steps: int = 10,
             eta: float = 0.0, noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
             predicted_variance: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        mode = self.mode
        if mode == "raise":
            raise IndexError(f"t={t} out of range")
        if mode == "exit3":
            os._exit(3)
        if mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "hang":
            while True:
                time.sleep(0.01)
        if mode == "ki":
            raise KeyboardInterrupt
        if mode == "sysexit":
            sys.exit(0)
        if mode == "mutate":
            model_output.mul_(2.0)
        if mode == "global_rng":
            return x_t + torch.randn(x_t.shape, dtype=x_t.dtype)
        if mode == "dtype":
            torch.set_default_dtype(torch.float64)
        if mode == "grad":
            torch.set_grad_enabled(not torch.is_grad_enabled())
        if mode == "precision":
            torch.set_float32_matmul_precision("medium")
        if mode == "alloc":
            return torch.empty(2**40 // 4, dtype=torch.float32)
        if mode == "count":
            return torch.tensor(float(self.calls))
        if generator is not None:
            return x_t + torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype)
        return x_t - 0.5 * model_output


def _ctx(target: object, *, isolated: bool, timeout_s: float = 20.0, **kw: object) -> CheckContext:
    sampler = isolate(target, timeout_s=timeout_s, **kw) if isolated else target
    return CheckContext(sampler=sampler, profile="quick", timeout_s=timeout_s, num_train_timesteps=10, steps=(2,))


def _step(ctx: CheckContext, **kw: object):
    x = torch.ones(2, 3)
    m = torch.full((2, 3), 0.25)
    return ctx.call(lambda: ctx.sampler.step(m, 5, x, num_steps=2, **kw))


@pytest.fixture
def closing():
    made: list[WorkerSampler] = []
    yield made
    for proxy in made:
        proxy.close()


def _isolated(mode: str, closing: list, **kw: object) -> CheckContext:
    ctx = _ctx(Target(mode), isolated=True, **kw)
    closing.append(ctx.sampler)
    return ctx


# -- forwarding --------------------------------------------------------------------------------------


def test_members_are_forwarded_and_results_come_back(closing):
    ctx = _isolated("ok", closing)
    assert isinstance(ctx.sampler, WorkerSampler)
    assert ctx.sampler.name == "tiny"
    assert ctx.num_train_timesteps == 10
    outcome = _step(ctx)
    assert outcome.ok, outcome.error
    assert torch.equal(outcome.value, torch.ones(2, 3) - 0.5 * torch.full((2, 3), 0.25))
    assert not hasattr(ctx.sampler, "no_such_member")
    assert ctx.isolation.startswith("worker process (fork")
    assert ctx.sampler._proc.pid != os.getpid()


def test_the_worker_holds_the_state_not_the_parent(closing):
    target = Target("count")
    ctx = _ctx(target, isolated=True)
    closing.append(ctx.sampler)
    values = [float(_step(ctx).value) for _ in range(3)]
    assert values == [1.0, 2.0, 3.0]
    assert target.calls == 0  # the parent's object was never called


def test_an_exception_is_described_as_in_process(closing):
    isolated = _step(_isolated("raise", closing))
    local = _step(_ctx(Target("raise"), isolated=False))
    assert not isolated.ok and not local.ok
    assert isolated.error == local.error == "IndexError: t=5 out of range"
    assert "IndexError" in isolated.traceback


@pytest.mark.parametrize("mode", ["ki", "sysexit"])
def test_keyboard_interrupt_and_system_exit_of_the_target_are_its_failures(mode, closing):
    expected = {"ki": "TargetInterrupt: the target raised KeyboardInterrupt", "sysexit": "SystemExit: 0"}[mode]
    for ctx in (_isolated(mode, closing), _ctx(Target(mode), isolated=False)):
        outcome = _step(ctx)
        assert not outcome.ok and outcome.error == expected


def test_a_user_interrupt_in_the_caller_is_reraised(closing):
    ctx = _isolated("ok", closing)

    def interrupted():
        ctx.sampler.betas()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ctx.call(interrupted)


# -- deaths and hangs ---------------------------------------------------------------------------------


def test_an_exit_fails_the_call_names_the_code_and_the_worker_is_restarted(closing):
    ctx = _isolated("exit3", closing)
    outcome = _step(ctx)
    assert not outcome.ok and not outcome.timed_out
    assert "the target ended the worker process with exit code 3 during step(t=5, num_steps=2" in outcome.error
    assert ctx.sampler.betas().shape == (10,)  # a fresh worker answers
    assert ctx.sampler.restarts == 1


def test_a_segfault_is_named(closing):
    outcome = _step(_isolated("segv", closing))
    assert not outcome.ok
    assert "killed by signal SIGSEGV (segmentation fault)" in outcome.error


def test_a_hang_is_killed_at_the_timeout_and_nothing_is_left_running(closing):
    ctx = _isolated("hang", closing, timeout_s=0.5)
    proc = None
    start = time.perf_counter()
    outcome = ctx.call(lambda: (ctx.sampler.betas(), ctx.sampler.step(torch.ones(1), 5, torch.ones(1)))[1])
    elapsed = time.perf_counter() - start
    assert outcome.timed_out and outcome.error.startswith("timed out after 0.5 s")
    assert elapsed < 5.0
    assert ctx.sampler._proc is proc  # killed and dropped
    assert ctx.sampler.name == "tiny"  # a fresh worker serves the next call


def test_after_too_many_deaths_the_target_is_given_up(closing, monkeypatch):
    monkeypatch.setattr(sandbox, "MAX_RESTARTS", 2)
    ctx = _isolated("exit3", closing)
    errors = [_step(ctx).error for _ in range(4)]
    assert all("exit code 3" in e for e in errors[:3])
    assert "restarted 2 times and is not started again" in errors[3]
    assert MAX_RESTARTS >= 8


# -- what a call does to its arguments and to the global RNGs ----------------------------------------


def test_an_input_mutation_reaches_the_callers_tensor(closing):
    m = torch.full((2, 3), 0.25)
    ctx = _isolated("mutate", closing)
    assert ctx.call(lambda: ctx.sampler.step(m, 5, torch.ones(2, 3))).ok
    assert torch.equal(m, torch.full((2, 3), 0.5))


def test_a_generator_advances_as_in_process(closing):
    ctx = _isolated("ok", closing)
    g_isolated = torch.Generator().manual_seed(7)
    g_local = torch.Generator().manual_seed(7)
    a = _step(ctx, generator=g_isolated).value
    b = _step(_ctx(Target(), isolated=False), generator=g_local).value
    assert torch.equal(a, b)
    assert torch.equal(g_isolated.get_state(), g_local.get_state())
    # the second draw continues the stream in both
    assert torch.equal(_step(ctx, generator=g_isolated).value,
                       _step(_ctx(Target(), isolated=False), generator=g_local).value)


def test_a_global_rng_draw_comes_back_to_the_caller(closing):
    ctx = _isolated("global_rng", closing)
    torch.manual_seed(11)
    isolated = _step(ctx).value
    after_isolated = torch.get_rng_state()
    torch.manual_seed(11)
    local = _step(_ctx(Target("global_rng"), isolated=False)).value
    assert torch.equal(isolated, local)
    assert torch.equal(after_isolated, torch.get_rng_state())
    # and the caller's state goes to the worker: reseeding here reseeds the worker's draw
    torch.manual_seed(11)
    assert torch.equal(_step(ctx).value, local)


# -- global state -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, what", [
    ("dtype", "default dtype: torch.float32 -> torch.float64"),
    ("grad", "grad mode: True -> False"),
    ("precision", "float32 matmul precision: highest -> medium"),
])
@pytest.mark.parametrize("isolated", [True, False])
def test_a_global_state_change_is_logged_and_undone(mode, what, isolated, closing):
    ctx = _isolated(mode, closing) if isolated else _ctx(Target(mode), isolated=False)
    before = torch_state_snapshot()
    assert _step(ctx).ok
    assert torch_state_snapshot() == before
    log = ctx.state_log
    assert log.calls == 1  # step() (a method looked up in the worker is not a call)
    assert len(log.changes) == 1 and what in log.changes[0].changes  # (medium precision also reads as TF32 on)
    result = check_no_global_state_change(ctx)[0]
    assert result.name == NAME and result.verdict is Verdict.FAIL
    assert what in result.message and "call #1" in result.message
    assert result.details["isolation"] == ctx.isolation


@pytest.mark.parametrize("isolated", [True, False])
def test_a_clean_target_passes_the_global_state_check(isolated, closing):
    ctx = _isolated("ok", closing) if isolated else _ctx(Target(), isolated=False)
    assert _step(ctx).ok
    result = check_no_global_state_change(ctx)[0]
    assert result.verdict is Verdict.PASS and "in 1 call (isolation" in result.message


def test_no_call_no_verdict():
    ctx = CheckContext(sampler=Target(), profile="quick", num_train_timesteps=10, steps=(2,))
    assert check_no_global_state_change(ctx)[0].verdict is Verdict.SKIPPED


def test_a_thread_left_running_is_logged_in_process():
    import threading

    stop = threading.Event()

    def leave_a_thread():
        threading.Thread(target=stop.wait, name="left-behind", daemon=True).start()

    log = StateLog()
    try:
        assert call_in_process(leave_a_thread, (), {}, timeout_s=5.0, log=log).ok
    finally:
        stop.set()
    assert log.changes[0].changes == ("a thread left running: 'left-behind' (daemon)",)


def test_state_helpers_restore_what_they_report():
    before = torch_state_snapshot()
    torch.set_default_dtype(torch.float64)
    try:
        assert state_differences(before, torch_state_snapshot()) == ["default dtype: torch.float32 -> torch.float64"]
    finally:
        restore_torch_state(before)
    assert torch.get_default_dtype() == torch.float32


# -- memory ------------------------------------------------------------------------------------------


def test_an_allocation_past_the_limit_fails_naming_it(closing):
    outcome = _step(_isolated("alloc", closing, max_memory="256M"))
    assert not outcome.ok
    assert "--max-memory 256 MiB" in outcome.error


@pytest.mark.parametrize("text, expected", [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GiB", 3 * 2**29),
                                            (2**21, 2**21)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "12Q", "0.5K", True, -5])
def test_parse_memory_refuses_bad_sizes(text):
    with pytest.raises(ValueError, match=r"max_memory="):
        parse_memory(text)


def test_loop_targets_stay_in_process():
    class Loop:
        target_kind = "loop"

    loop = Loop()
    assert isolate(loop) is loop and isolation_of(loop) == "in-process (a loop target)"


@pytest.mark.cuda
def test_a_cuda_target_is_spawned(closing):
    from ddspec.conformance.torch_port import ReferencePort

    proxy = isolate(ReferencePort(), device="cuda", spec="ddspec.conformance.torch_port:ReferencePort")
    closing.append(proxy)
    assert proxy.start_method == "spawn"
    ctx = CheckContext(sampler=proxy, device="cuda", profile="quick")
    outcome = ctx.call(lambda: ctx.sampler.timesteps(10))
    assert outcome.ok, outcome.error


# -- the contract checks judge an isolated target as an in-process one --------------------------------


@pytest.mark.parametrize("entry_name, check_name", [
    ("mutates_input", "check_no_input_mutation"),
    ("ddpm_generator_dropped", "check_no_global_rng"),
])
def test_the_contract_checks_judge_an_isolated_target_as_in_process(entry_name, check_name, closing):
    pytest.importorskip("diffusers")
    from ddspec.conformance.adapters import adapt
    from ddspec.conformance.checks import invariants
    from tests.quality.zoo import ZOO

    entry = next(e for e in ZOO if e.name == entry_name)
    check = getattr(invariants, check_name)
    local = check(CheckContext(adapt(entry.factory()), profile="quick"))
    proxy = isolate(adapt(entry.factory()))
    closing.append(proxy)
    remote = check(CheckContext(proxy, profile="quick"))
    assert [r.verdict for r in remote] == [r.verdict for r in local] == [Verdict.FAIL]
    assert remote[0].message == local[0].message
    assert entry.shows in remote[0].message


@pytest.mark.slow
def test_a_spawned_worker_reloads_the_target_from_its_spec_and_its_start_is_not_timed(closing):
    from ddspec.conformance.torch_port import make_reference_port

    spec = "ddspec.conformance.torch_port:make_reference_port"
    proxy = isolate(make_reference_port(), spec=spec, start_method="spawn", timeout_s=1.0)
    closing.append(proxy)
    ctx = CheckContext(sampler=proxy, profile="quick", timeout_s=1.0)  # the start takes seconds: not charged
    assert ctx.num_train_timesteps == 1000 and proxy.mode == "worker process (spawn)"
    broken = isolate(make_reference_port(), spec="no_such_module_here:make", start_method="spawn")
    closing.append(broken)
    outcome = CheckContext(sampler=broken, profile="quick", num_train_timesteps=10).call(lambda: broken.betas())
    assert not outcome.ok and "the worker could not load 'no_such_module_here:make'" in outcome.error


def test_report_header_and_json_say_which_mode_ran(tmp_path) -> None:
    """The report records how the target ran: a worker process by default, in-process with
    ``--in-process`` (text header and JSON)."""
    import json

    from ddspec.conformance.cli import main

    for extra, expected in (((), "worker process"), (("--in-process",), "in-process")):
        out = tmp_path / f"r{len(extra)}.json"
        code = main(["check", "ddspec.conformance.torch_port:make_reference_port", "--profile", "quick",
                     "--no-progress", "-q", "--steps", "1", "--json", str(out), *extra])
        assert code == 0
        data = json.loads(out.read_text())
        report = data["reports"][0] if "reports" in data else data
        assert report["isolation"].startswith(expected), report["isolation"]
