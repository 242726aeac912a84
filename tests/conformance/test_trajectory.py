"""The drive stage for step targets (conformance/trajectory.py: StepDriver, StepCall, failed_call).

The loop side of trajectory.py (the probe, ``drive``) is tested in test_loop.py and tests/quality.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ddspec.conformance.context import CheckContext
from ddspec.conformance.trajectory import REFUSED, StepDriver, failed_call

T = 10


class _Target:
    """A step target whose step is set per test; records the calls it got."""

    def __init__(self, step) -> None:
        self._step = step
        self.calls = 0

    def step(self, model_output, t, x_t, *, num_steps, eta=0.0, noise=None, generator=None, predicted_variance=None):
        self.calls += 1
        return self._step(model_output, t, x_t, noise=noise, generator=generator)


def _driver(step, *, noise_source: str = "generator", timeout_s: float = 30.0) -> tuple[StepDriver, _Target]:
    target = _Target(step)
    ctx = CheckContext(target, dtype="float32", profile="quick", timeout_s=timeout_s)
    return StepDriver(ctx, target, noise_source=noise_source), target


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x_t": torch.randn(2, 3, generator=g), "model_output": torch.randn(2, 3, generator=g),
            "noise": torch.randn(2, 3, generator=g)}


def test_a_transition_records_exactly_what_the_target_was_given_and_returned() -> None:
    """x_prev = 0.5 x_t − 0.25 m + 0.1 z, computed in float32: the record holds the float64 values of the very
    tensors passed and returned, taken before the call (a step that writes into x_t cannot rewrite them)."""
    def step(m, t, x, *, noise, generator):
        out = 0.5 * x - 0.25 * m + 0.1 * noise
        x.mul_(0.0)  # mutates its input after computing
        return out

    driver, _ = _driver(step)
    inp = _inputs()
    x_before = inp["x_t"].clone()
    tr, call = driver.transition(step=3, t=7, t_prev=4, num_steps=3, eta=0.0, **inp)
    assert call.ok and call.error is None and tr is not None
    assert (tr.t, tr.t_prev, tr.step) == (7, 4, 3)
    np.testing.assert_array_equal(tr.x_t, x_before.double().numpy())
    np.testing.assert_array_equal(tr.model_output, inp["model_output"].double().numpy())
    np.testing.assert_array_equal(tr.noise, inp["noise"].double().numpy())
    expected = (0.5 * x_before - 0.25 * inp["model_output"] + 0.1 * inp["noise"]).double().numpy()
    np.testing.assert_array_equal(tr.x_prev, expected)
    assert tr.x_prev.dtype == np.float64 and tr.predicted_variance is None


@pytest.mark.parametrize("step, why", [
    (lambda m, t, x, **k: [0.0], "step returned a list, expected a torch.Tensor"),
    (lambda m, t, x, **k: x[:1].clone(), "step returned shape (1, 3), expected x_t's shape (2, 3)"),
    (lambda m, t, x, **k: x.double(), "step returned dtype torch.float64, expected x_t's dtype torch.float32"),
])
def test_an_unusable_return_gives_no_transition_and_says_why(step, why) -> None:
    driver, _ = _driver(step)
    tr, call = driver.transition(step=0, t=1, t_prev=-1, num_steps=2, eta=0.0, **_inputs())
    assert tr is None and call.why == why and call.error is None and not call.refused


def test_a_raising_step_names_the_exception_once_in_words_and_once_for_the_report() -> None:
    def step(m, t, x, **k):
        return [0.5][t]  # IndexError for t >= 1

    driver, _ = _driver(step)
    tr, call = driver.transition(step=0, t=5, t_prev=2, num_steps=2, eta=0.0, **_inputs())
    assert tr is None
    assert call.error == "IndexError: list index out of range"
    assert call.why == "step raised IndexError: list index out of range"
    assert not driver.timed_out


def test_after_a_timeout_every_later_call_is_refused_with_that_timeout() -> None:
    release = threading.Event()

    def step(m, t, x, **k):
        release.wait(5.0)
        return x.clone()

    driver, target = _driver(step, timeout_s=0.2)
    try:
        first = driver.call(torch.zeros(1), 3, torch.zeros(1), num_steps=2, eta=0.0)
        assert not first.ok and driver.timed_out and first.error.startswith("timed out after 0.2 s")
        assert first.why == f"step {first.error}"
        second = driver.call(torch.zeros(1), 1, torch.zeros(1), num_steps=2, eta=0.0)
        assert second.refused and second.error == first.error
        assert second.why == f"{REFUSED} ({first.error})"
        assert target.calls == 1  # the refused call never reached the target
    finally:
        release.set()


def test_a_global_noise_source_is_seeded_from_the_generator_and_the_callers_state_is_kept() -> None:
    """noise_source="global": the step draws torch.randn_like; the driver seeds the global RNG with a draw
    from the generator it is handed, inside fork_rng. Same generator seed → same output; the caller's global
    RNG state is unchanged; the target is called with generator=None."""
    seen = []

    def step(m, t, x, *, noise, generator):
        seen.append(generator)
        return x + torch.randn_like(x)

    driver, _ = _driver(step, noise_source="global")
    state = torch.random.get_rng_state()
    outs = [driver.call(torch.zeros(4), 2, torch.zeros(4), num_steps=2, eta=1.0,
                        generator=torch.Generator().manual_seed(s)).value for s in (11, 11, 12)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert seen == [None, None, None]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_failed_call_words() -> None:
    assert failed_call("step", "IndexError: x") == "step raised IndexError: x"
    assert failed_call("timesteps(1)", "timed out after 1 s") == "timesteps(1) timed out after 1 s"
