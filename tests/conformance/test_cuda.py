"""The harness on a CUDA device: the same checks run on the device, in every dtype.

These tests need a CUDA device; without one, tests/conftest.py skips them with the reason
"no CUDA device".
"""

from __future__ import annotations

import pytest
import torch

from ddspec.conformance.checks import ALL_CHECKS
from ddspec.conformance.context import CheckContext
from ddspec.conformance.report import format_text
from ddspec.conformance.results import Verdict
from ddspec.conformance.runner import run_checks
from ddspec.conformance.torch_port import make_reference_port

pytestmark = pytest.mark.cuda


def _ok(report) -> bool:
    return all(r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE, Verdict.SKIPPED) for r in report.checks)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("family", ["ddim", "ddpm"])
def test_reference_port_passes_on_cuda(family: str, dtype: str) -> None:
    sampler = make_reference_port(family=family)
    ctx = CheckContext(sampler, device="cuda", dtype=dtype, profile="quick", seed=0)
    report = run_checks(sampler, ctx, ALL_CHECKS, target=f"port-{family}")
    assert _ok(report), format_text(report)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs_report_instead_of_crashing(dtype: str) -> None:
    """Low-precision runs produce a full report (every check has a verdict), with tolerances scaled to u."""
    sampler = make_reference_port(family="ddim")
    ctx = CheckContext(sampler, device="cuda", dtype=dtype, profile="quick", seed=0)
    report = run_checks(sampler, ctx, ALL_CHECKS, target="port-ddim")
    assert report.checks and _ok(report), format_text(report)


def test_diffusers_ddim_on_cuda() -> None:
    import diffusers  # a test dependency ([test] extra)
    from ddspec.conformance.adapters import adapt

    sampler = adapt(diffusers.DDIMScheduler())
    ctx = CheckContext(sampler, device="cuda", dtype="float32", profile="quick", seed=0)
    report = run_checks(sampler, ctx, ALL_CHECKS, target="diffusers-ddim")
    assert _ok(report), format_text(report)
    assert torch.cuda.is_available()
