"""Tests of conformance/context.py: profiles, step counts, reproducible randomness, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddspec.conformance.context import PROFILES, CheckContext, parse_device, parse_dtype


class FakeSampler:
    name = "fake"

    def __init__(self, T=1000):
        self.T = T

    def betas(self):
        return np.full(self.T, 0.01)


class BrokenSampler:
    name = "broken"

    def betas(self):
        raise RuntimeError("no table")


def test_profiles_table():
    assert set(PROFILES) == {"quick", "default", "thorough"}
    assert PROFILES["quick"].steps == (1, 10)
    for name, prof in PROFILES.items():
        assert prof.name == name
        assert list(prof.steps) == sorted(set(prof.steps)) and prof.steps[0] == 1
        assert 0 < prof.false_failure_rate < 1
    # each profile is at least as large as the one before
    q, d, t = PROFILES["quick"], PROFILES["default"], PROFILES["thorough"]
    assert q.n_distribution_samples <= d.n_distribution_samples <= t.n_distribution_samples
    assert q.n_single_step_draws <= d.n_single_step_draws <= t.n_single_step_draws
    assert set(q.steps) <= set(d.steps) <= set(t.steps)


def test_steps_come_from_the_profile_and_T():
    ctx = CheckContext(FakeSampler(1000), profile="default")
    assert ctx.num_train_timesteps == 1000
    assert ctx.steps == (1, 2, 7, 10, 50, 1000)
    small = CheckContext(FakeSampler(5), profile="default")
    assert small.steps == (1, 2, 5)  # 7, 10, 50 exceed T = 5; T itself is added
    assert CheckContext(FakeSampler(1000), profile="quick").steps == (1, 10)


def test_explicit_steps_are_kept_sorted_and_unique():
    ctx = CheckContext(FakeSampler(5), steps=[10, 1, 10])
    assert ctx.steps == (1, 10)
    for bad in ([0], [], [1.5], [True]):
        with pytest.raises(ValueError, match="steps"):
            CheckContext(FakeSampler(5), steps=bad)


def test_T_unknown_when_the_sampler_cannot_give_betas():
    ctx = CheckContext(BrokenSampler(), profile="quick")
    assert ctx.num_train_timesteps is None
    assert ctx.steps == PROFILES["quick"].steps


def test_generator_is_reproducible_per_offset():
    ctx = CheckContext(FakeSampler(), seed=11)
    a = torch.randn(8, generator=ctx.generator(2))
    b = torch.randn(8, generator=ctx.generator(2))
    c = torch.randn(8, generator=ctx.generator(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.randn(8, generator=torch.Generator().manual_seed(13)))  # seed + offset


def test_randn_is_float64_then_cast():
    ctx = CheckContext(FakeSampler(), dtype="float16", seed=5)
    x = ctx.randn((3, 4), offset=1)
    x64 = ctx.randn((3, 4), offset=1, dtype=torch.float64)
    assert x.dtype == torch.float16 and x.device.type == "cpu" and x.shape == (3, 4)
    assert torch.equal(x, x64.to(torch.float16))
    ref = torch.randn((3, 4), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.equal(x64, ref)
    assert ctx.to_target([0.5, 1.0]).dtype == torch.float16


def test_unit_roundoff_and_dtype_name():
    # float32 has a 24-bit significand: u = 2**-24; float64: 2**-53.
    assert CheckContext(FakeSampler(), dtype="float32").unit_roundoff == 2.0**-24
    ctx = CheckContext(FakeSampler(), dtype=torch.float64)
    assert ctx.unit_roundoff == 2.0**-53 and ctx.dtype_name == "float64"


def test_call_uses_the_timeout():
    ctx = CheckContext(FakeSampler(), timeout_s=0.2)
    out = ctx.call(lambda x: x * 2, 21)
    assert out.ok and out.value == 42


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"dtype": "float8"}, "dtype"),
        ({"dtype": torch.int32}, "dtype"),
        ({"profile": "huge"}, "profile"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"device": "tpu"}, "device"),
        ({"num_train_timesteps": 0}, "num_train_timesteps"),
    ],
)
def test_context_validation(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        CheckContext(FakeSampler(), **kwargs)


def test_parse_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        parse_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        parse_device("cuda:1")
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_dtype("torch.bfloat16") is torch.bfloat16
