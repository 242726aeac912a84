r"""Tests for the historical-bug benchmark (benchmarks/history/) and the final-noise resolution of
``invariants.no_final_noise``.

The default run downloads nothing: it checks the benchmark's table and its verdict logic, and runs
the final-noise check on the installed diffusers and on planted samplers. The benchmark itself (one
environment per old release, from PyPI) is opt-in: ``tox -e history``, or this module's slow test
with ``--run-slow`` and ``DDSPEC_HISTORY=1``.

Expected thresholds are closed forms: half an ulp of a magnitude m in a dtype of unit roundoff u is
:math:`u\,2^{\lfloor\log_2 m\rfloor}` (IEEE 754 binary formats; Higham 2002, §2.1), cross-checked
against ``numpy.spacing``.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

from benchmarks.history import run_history, targets
from benchmarks.history.bugs import BUGS, Bug
from ddspec.conformance.adapters import _diffusers_compat as compat
from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks import invariants
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import Verdict
from ddspec.conformance.runner import run_checks
from ddspec.conformance.torch_port import ReferencePort

diffusers = pytest.importorskip("diffusers")


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------


def test_table_has_the_issue_bugs() -> None:
    refs = " ".join(b.ref for b in BUGS)
    for ref in ("#2076", "#2090", "#3006", "#3005", "#1486", "#2094", "#9261", "#9384"):
        assert ref in refs, ref
    assert len({b.key for b in BUGS}) == len(BUGS)


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.key)
def test_table_row_is_well_formed(bug: Bug) -> None:
    assert compat.parse_release(bug.last_buggy) < compat.parse_release(bug.first_fixed)
    assert compat.parse_release(bug.last_buggy) >= compat.parse_release(compat.OLDEST_RELEASE)
    assert bug.must_fail, "a row must name the checks that catch the bug"
    assert bug.buggy_lines
    for line in bug.buggy_lines:
        assert re.match(r"^scheduling_dd(pm|im)\.py:\d+(-\d+)?: \S", line), line
    assert callable(getattr(targets, bug.target, None)), bug.target
    assert bug.dtype in ("float32", "float64")


@pytest.mark.parametrize("name", sorted(set(targets.__all__)))
def test_targets_adapt_on_the_installed_release(name: str) -> None:
    """Every configuration builds with the installed diffusers (a fixed release for every row) and is
    fully declared: no unsupported entry, no release note (0.42 has every field)."""
    sampler = adapt(getattr(targets, name)())
    assert sampler.conventions.unsupported == ()
    assert sampler.notes == ()


def _report(release: str, failing: list[str], other: tuple[tuple[str, str], ...] = ()) -> dict:
    checks = [{"name": n, "verdict": "fail", "message": f"{n} failed"} for n in failing]
    checks += [{"name": n, "verdict": v, "message": ""} for n, v in other]
    checks += [{"name": "invariants.finite", "verdict": "pass", "message": ""}]
    return {"diffusers_version": release, "checks": checks}


def test_judge_before_release() -> None:
    bug = next(b for b in BUGS if b.key == "prev-t-minus-1")
    caught = run_history.judge(bug, "0.12.1", "before", _report("0.12.1", [
        "oracle.point_mass.variance_type=fixed_small", "single_step.variance_type=fixed_small", "distribution.step_moments.variance_type=fixed_small"]), 1.0)
    assert caught.ok and caught.label == "caught"
    missed = run_history.judge(bug, "0.12.1", "before", _report("0.12.1", ["oracle.point_mass.variance_type=fixed_small"]), 1.0)
    assert not missed.ok and "single_step.variance_type=fixed_small" in missed.label
    with pytest.raises(RuntimeError, match="expected diffusers 0.12.1"):
        run_history.judge(bug, "0.12.1", "before", _report("0.13.0", []), 1.0)


def test_judge_after_release() -> None:
    bug = next(b for b in BUGS if b.key == "prev-t-minus-1")
    assert run_history.judge(bug, "0.13.0", "after", _report("0.13.0", [], (("x", "unsupported"),)), 1.0).ok
    still = run_history.judge(bug, "0.13.0", "after", _report("0.13.0", ["single_step.variance_type=fixed_small"]), 1.0)
    assert not still.ok and still.label.startswith("STILL FAILS")
    other = next(b for b in BUGS if b.may_fail_after)
    explained = run_history.judge(other, other.first_fixed, "after",
                                  _report(other.first_fixed, ["oracle.point_mass.variance_type=fixed_small"]), 1.0)
    assert explained.ok and "other bug" in explained.label


def test_releases_are_ordered_numerically() -> None:
    assert run_history.releases(BUGS)[0] == min((b.last_buggy for b in BUGS), key=compat.parse_release)
    vs = run_history.releases(BUGS)
    assert vs == sorted(vs, key=compat.parse_release)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("DDSPEC_HISTORY") != "1", reason="downloads old diffusers releases: "
                    "set DDSPEC_HISTORY=1 (tox -e history runs the whole benchmark)")
def test_history_benchmark_one_bug(tmp_path: object) -> None:
    assert run_history.main(["--only", "ddim-sample-as-eps"]) == 0


# ----------------------------------------------------------------------------------------------------
# invariants.no_final_noise: noise below the output's resolution is acceptable, with its size stated
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "dtype", "expected"), [
    (0.75, "float32", 2.0**-25), (1.0, "float32", 2.0**-24), (1.5, "float32", 2.0**-24),
    (0.75, "float64", 2.0**-54), (3.0, "float16", 2.0**-10),
])
def test_half_ulp_closed_form(m: float, dtype: str, expected: float) -> None:
    assert invariants.half_ulp(m, dtype) == expected
    np_dtype = {"float32": np.float32, "float64": np.float64, "float16": np.float16}[dtype]
    assert float(np.spacing(np_dtype(m))) / 2 == expected


class _FinalNoisePort(ReferencePort):
    """A DDPM that adds ``scale`` times the noise at its final step (to the data), where the reference adds none."""

    def __init__(self, scale: float) -> None:
        super().__init__(family="ddpm", variance_type="fixed_small", name=f"final-noise-{scale:g}")
        self.scale = scale

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, *, num_steps: int, eta: float = 0.0,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
             predicted_variance: torch.Tensor | None = None) -> torch.Tensor:
        out = super().step(model_output, t, x_t, num_steps=num_steps, eta=eta, noise=noise, generator=generator,
                           predicted_variance=predicted_variance)
        if self._t_prev(int(t), num_steps) == -1:
            out = out + self.scale * self._noise(x_t, noise, generator)
        return out


def _final_noise(sampler: object, dtype: str, profile: str = "quick") -> object:
    ctx = CheckContext(sampler, dtype=dtype, profile=profile, seed=0)
    return run_checks(sampler, ctx, [invariants.check_no_final_noise]).checks[0]


def test_final_noise_below_float32_resolution_is_never_a_failure() -> None:
    """std 1e-10 against half an ulp of a state of magnitude m >= 0.5 in float32 (>= 2^-25 ~ 3e-8).

    Whether any output element shows the noise at all depends on the values (an element changes only
    when it is small, or lies within 1e-10 of a rounding boundary), so the verdict is pass (no
    element changed) or acceptable (some did, the size stated), never fail."""
    r = _final_noise(_FinalNoisePort(1e-10), "float32", profile="default")
    assert r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE), r.message
    if r.verdict is Verdict.ACCEPTABLE:
        assert "measured noise std" in r.consequence and "below half an ulp" in r.consequence
        assert all(not s["representable"] for s in r.details["final_noise_std"])


def test_final_noise_size_below_resolution_is_not_representable() -> None:
    """Two float32 outputs x + 1e-10 z1 and x + 1e-10 z2, with some elements of x small enough (1e-9)
    that the noise shows there: the measured std is at most the added one plus the rounding flips of
    the large elements (at most one ulp of 1, 2^-23, each), far below half an ulp of m ~ 1 (2^-24)."""
    g = np.random.default_rng(3)
    x = g.uniform(0.5, 1.0, 1000)
    x[:10] = 1e-9
    z1, z2 = g.standard_normal(1000), g.standard_normal(1000)
    a = (x + 1e-10 * z1).astype(np.float32).astype(np.float64)
    b = (x + 1e-10 * z2).astype(np.float32).astype(np.float64)
    assert np.any(a != b)
    size = invariants.final_noise_size(a, b, float(np.sqrt(np.mean((z1 - z2) ** 2))), "float32")
    assert not size.representable
    assert size.threshold == 2.0**-25 and size.std < size.threshold / 3
    assert "below half an ulp" in size.describe()


def test_final_noise_at_a_bug_size_fails_and_states_it() -> None:
    r = _final_noise(_FinalNoisePort(1e-3), "float32")
    assert r.verdict is Verdict.FAIL
    assert "measured noise std" in r.message and "above half an ulp" in r.message
    # the measured std is the added std: rms(1e-3 (z1 - z2)) / rms(z1 - z2) = 1e-3, up to float32 rounding
    stds = [s["std"] for s in r.details["final_noise_std"]]
    assert all(0.9e-3 < s < 1.1e-3 for s in stds), stds


def test_final_noise_of_1e_10_fails_in_float64() -> None:
    # float64 resolves it: half an ulp of m in [0.5, 2) is at most 2^-53 ~ 1.1e-16
    r = _final_noise(_FinalNoisePort(1e-10), "float64")
    assert r.verdict is Verdict.FAIL
    assert "measured noise std" in r.message and "above half an ulp" in r.message
    # injected noise: rms(1e-10 (z1 - z2)) / rms(z1 - z2) = 1e-10 up to float64 rounding; generators:
    # rms(1e-10 (z1 - z2)) / sqrt(2), a sample estimate over 96 elements (relative sd ~ 1/sqrt(192) ~ 7%)
    for s in r.details["final_noise_std"]:
        if s["where"].endswith("noise"):
            assert s["std"] == pytest.approx(1e-10, rel=1e-6)
        else:
            assert 0.7e-10 < s["std"] < 1.3e-10


def test_exact_final_step_still_passes() -> None:
    assert _final_noise(_FinalNoisePort(0.0), "float32").verdict is Verdict.PASS


def test_diffusers_ddpm_trailing_float32_final_noise_is_acceptable() -> None:
    """diffusers (0.32 on) DDPM with trailing spacing adds noise at its last step (t = T/N - 1 > 0) of
    std sqrt(1e-20) = 1e-10 (beta_tilde = 0 clamped at 1e-20): below float32's resolution. The default
    profile's N = 7 is where some elements differ at all (the quick profile's outputs are bitwise equal)."""
    s = diffusers.DDPMScheduler(timestep_spacing="trailing")
    s.set_timesteps(7)
    last = int(s.timesteps[-1])
    z = torch.zeros(1, 1, 2, 2)
    upstream_noisy = not torch.equal(*(s.step(z, last, z, generator=torch.Generator().manual_seed(k)).prev_sample
                                       for k in (0, 1))) if last > 0 else False
    r = _final_noise(adapt(diffusers.DDPMScheduler(timestep_spacing="trailing")), "float32", profile="default")
    assert r.verdict in (Verdict.PASS, Verdict.ACCEPTABLE), r.message
    if r.verdict is Verdict.ACCEPTABLE:
        assert upstream_noisy or last > 0
        assert "measured noise std" in r.consequence
        assert all(s_["std"] <= 1e-9 for s_ in r.details["final_noise_std"])
    r64 = _final_noise(adapt(diffusers.DDPMScheduler(timestep_spacing="trailing")), "float64")
    assert (r64.verdict is Verdict.FAIL) == (last > 0)
    if last > 0:
        assert "measured noise std" in r64.message and "above half an ulp" in r64.message


def test_final_noise_size_of_identical_outputs_is_zero() -> None:
    a = np.array([0.5, -0.25, 1.0])
    size = invariants.final_noise_size(a, a.copy(), math.sqrt(2.0), "float32")
    assert size.std == 0.0 and not size.representable


def test_final_noise_size_without_finite_elements_is_a_failure() -> None:
    a = np.array([np.nan, np.inf])
    size = invariants.final_noise_size(a, np.array([1.0, np.nan]), math.sqrt(2.0), "float32")
    assert size.representable and size.std == math.inf
