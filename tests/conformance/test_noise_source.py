r"""Step targets that draw their noise from torch's global RNG (``noise_source="global"``, issue 8 §3).

The step below is DDIM (Song et al. 2021, eq. 12, σ(η) of eq. 16) written the way most research code is:
``torch.randn_like`` inside the step, no generator, no injected noise. Declared, it must pass; undeclared,
the invariants must catch the global draws; and the statistical checks keep their power on the global path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ddspec.conformance.adapters.function import FunctionSampler
from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import Conventions, noise_source
from ddspec.conformance.results import Report, Verdict
from ddspec.conformance.runner import installed_checks, run_checks
from ddspec.conformance.sandbox import isolate, isolation_of

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)  # Ho et al. 2020, §4
ALPHA_BAR = np.cumprod(1.0 - BETAS)
CONV = Conventions(family="ddim", num_train_timesteps=T, supports_noise_injection=False)


def _ddim_step(std_factor: float = 1.0, numpy_draw: bool = False):
    def step(mo: torch.Tensor, t: int, x: torch.Tensor, *, num_steps: int, eta: float = 0.0, **_: Any) -> torch.Tensor:
        ts = list(range(0, T, T // num_steps))[::-1]
        k = ts.index(t)
        tp = ts[k + 1] if k + 1 < len(ts) else -1
        a, ap = float(ALPHA_BAR[t]), (float(ALPHA_BAR[tp]) if tp >= 0 else 1.0)
        x0 = (x - (1 - a) ** 0.5 * mo) / a**0.5
        var = eta**2 * (1 - ap) / (1 - a) * (1 - a / ap)
        out = ap**0.5 * x0 + max(1 - ap - var, 0.0) ** 0.5 * mo
        if numpy_draw:
            np.random.rand()
        if var > 0:
            out = out + std_factor * var**0.5 * torch.randn_like(x)
        return out

    return step


def _report(sampler: FunctionSampler, dtype: str = "float32") -> Report:
    return run_checks(sampler, CheckContext(sampler, dtype=dtype, profile="quick", seed=0), installed_checks())


def _not_passing(report: Report) -> dict[str, str]:
    return {r.name: r.verdict.value for r in report.checks if r.verdict not in (Verdict.PASS, Verdict.SKIPPED)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_declared_global_noise_passes_and_leaves_the_callers_rng_alone(dtype: str) -> None:
    sampler = FunctionSampler(_ddim_step(), BETAS, CONV, name="global-ddim", noise_source="global")
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    report = _report(sampler, dtype)
    assert torch.equal(torch.get_rng_state(), before), "the caller's global RNG state changed"
    assert not _not_passing(report), _not_passing(report)
    stochastic = [r for r in report.checks if r.name.startswith("distribution.") and "eta=1" in r.name]
    assert stochastic and all(r.verdict is Verdict.PASS for r in stochastic)
    rng = [r for r in report.checks if r.name == "invariants.no_global_rng"][0]
    assert "noise_source='global'" in rng.message or any("noise_source='global'" in n for n in rng.details.get("notes", []))


def test_undeclared_global_noise_is_caught() -> None:
    report = _report(FunctionSampler(_ddim_step(), BETAS, CONV, name="undeclared"))
    failed = {r.name for r in report.checks if r.verdict is Verdict.FAIL}
    assert {"invariants.no_global_rng", "invariants.deterministic"} <= failed, failed


def test_declared_global_target_still_may_not_use_numpy_or_python_rngs() -> None:
    sampler = FunctionSampler(_ddim_step(numpy_draw=True), BETAS, CONV, name="numpy", noise_source="global")
    failed = {r.name for r in _report(sampler).checks if r.verdict is Verdict.FAIL}
    assert failed == {"invariants.no_global_rng"}, failed


def test_global_path_keeps_its_power() -> None:
    # noise std x 1.5 at eta = 1: a variance ratio 2.25, far beyond the quick profile's detectable ratio
    sampler = FunctionSampler(_ddim_step(std_factor=1.5), BETAS, CONV, name="std-x1.5", noise_source="global")
    failed = {r.name for r in _report(sampler).checks if r.verdict is Verdict.FAIL}
    assert any(name.startswith("distribution.") and "eta=1" in name for name in failed), failed
    assert not any("eta=0" in name for name in failed), failed


def test_global_targets_run_in_process() -> None:
    sampler = FunctionSampler(_ddim_step(), BETAS, CONV, noise_source="global")
    assert isolate(sampler, device="cpu", timeout_s=5.0) is sampler
    assert isolation_of(sampler) == "in-process (draws from the global RNG)"


def test_bad_noise_source_names_the_argument() -> None:
    with pytest.raises(ValueError, match="noise_source='numpy'"):
        FunctionSampler(_ddim_step(), BETAS, CONV, noise_source="numpy")

    class Odd:
        noise_source = "everywhere"

    with pytest.raises(ValueError, match="noise_source='everywhere'"):
        noise_source(Odd())
    assert noise_source(object()) == "generator"
