r"""One root crash is one failure (issue 7, §3).

A target that cannot run one step count must not hide the numbers of the others, nor turn into one
finding per call. Two planted targets, each correct except that one step count raises:

* :class:`DDPMClippedLogVarianceNeedsTwoSteps`, a diffusers ``DDPMScheduler`` whose ``set_timesteps``
  builds the respaced posterior variance table and clips its log with the entry at index 1, which a
  1-step run does not have (``IndexError`` for N = 1, in ``timesteps(1)`` and in every N = 1 step);
* :class:`StrideMustDivide`, a hand-written DDIM (:class:`~tests.quality.zoo.HandDDIM`) that insists
  on an integer stride T / N (``ValueError`` for N = 7, T = 1000), run with N = 1, 7 and 10.

For each, over the checks that call the target per step count (timesteps, oracle, single_step,
invariants; profile ``quick``), asserted: every failing check is one the crash explains, fails with
exactly one finding for the crashing N, prefixed ``"N=<n>: "`` and naming the exception; records it
in ``details["errors"]`` as ``[{"num_steps": n, "error": "<ExcType>: <message>"}]``; still compares
the other step counts, whose observed error and tolerance are finite and within the tolerance (the
target is otherwise correct); and the report holds exactly one distinct error. The expected
exception text is derived by performing the faulty operation itself, not read from the harness.

Before this change every such check reported ``observed = inf`` with no tolerance, no
``details["errors"]``, and one finding per failing call (two for the oracle's two points, two for
the two noise modes of ``invariants.no_final_noise``): :func:`test_a_crash_at_one_step_count_is_one_finding`
fails there.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
import torch
from diffusers import DDPMScheduler

from ddspec.conformance.adapters import adapt
from ddspec.conformance.checks import invariants, oracle, single_step, timesteps
from ddspec.conformance.context import CheckContext
from ddspec.conformance.results import CheckResult, Report, Verdict
from ddspec.conformance.runner import run_checks

from .zoo import HandDDIM

CHECKS = [*timesteps.CHECKS, *oracle.CHECKS, *single_step.CHECKS, *invariants.CHECKS]


class DDPMClippedLogVarianceNeedsTwoSteps(DDPMScheduler):
    r"""DDPM whose ``set_timesteps`` also builds the clipped log posterior variance of the run.

    With the run's timesteps in increasing order :math:`t_0 < \dots < t_{N-1}`, the step from
    :math:`t_i` goes to :math:`t_{i-1}` (to the data, :math:`\bar\alpha = 1`, for :math:`i = 0`), and

    .. math::

        \tilde\beta'_i = \frac{1-\bar\alpha_{t_{i-1}}}{1-\bar\alpha_{t_i}}
                         \Big(1-\frac{\bar\alpha_{t_i}}{\bar\alpha_{t_{i-1}}}\Big)

    (Ho et al. 2020, eq. 7, on the respaced schedule) is 0 at :math:`i = 0`, so its log is clipped
    there with the value at :math:`i = 1` (Nichol & Dhariwal 2021, §3.1). The bug: no guard for
    N = 1, where the table has one entry and index 1 raises ``IndexError``. The table is not used by
    the declared ``fixed_small`` step; ``step`` rebuilds it for the current run, as a lazily derived
    table would be, so every call of an N = 1 run raises, not only the first ``set_timesteps``.
    """

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None,
                      timesteps: Any = None) -> None:
        super().set_timesteps(num_inference_steps, device, timesteps)
        self.log_variance_clipped = self.clipped_log_variance()

    def clipped_log_variance(self) -> torch.Tensor:
        ab = self.alphas_cumprod[self.timesteps.flip(0)]
        ab_to = torch.cat([ab.new_ones(1), ab[:-1]])
        variance = (1 - ab_to) / (1 - ab) * (1 - ab / ab_to)
        return torch.log(torch.cat([variance[1].reshape(1), variance[1:]]))  # bug: variance[1] needs N >= 2

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None,
             return_dict: bool = True) -> Any:
        self.log_variance_clipped = self.clipped_log_variance()
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)


class StrideMustDivide(HandDDIM):
    r"""A hand-written DDIM (eq. 12 of Song et al. 2021) that demands an integer stride T / N.

    The leading rule :math:`\tau_k = k \lfloor T/N \rfloor` needs no such thing, so N = 7 (T = 1000)
    raises ``ValueError``; N = 1 and N = 10 run correctly.
    """

    name = "ddim-stride-must-divide"

    def prev_timestep(self, t: int, num_steps: int) -> int:
        if 1000 % num_steps:
            raise ValueError(f"num_steps={num_steps} does not divide num_train_timesteps=1000")
        return super().prev_timestep(t, num_steps)


def _error_of(fn: Any) -> str:
    """``"<ExcType>: <message>"`` of the exception ``fn()`` raises (the runner's one-line form)."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is the expectation
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("expected an exception")


#: The planted crashes: (factory, the step counts run, the crashing N, the exception, the checks it
#: must fail). A crash at N fails ``timesteps.sequence.N=<N>`` when ``timesteps(N)`` raises, the oracle
#: and single-step checks (every profile N), and ``invariants.no_final_noise`` (the last step of
#: every N); the other invariants run the representative N = 10 only, which works.
CASES: dict[str, tuple[Any, tuple[int, ...], int, str, frozenset[str]]] = {
    "ddpm_set_timesteps_n1": (
        lambda: adapt(DDPMClippedLogVarianceNeedsTwoSteps()), (1, 10), 1,
        _error_of(lambda: torch.zeros(1)[1]),
        frozenset({"timesteps.sequence.N=1", "oracle.point_mass.variance_type=fixed_small", "single_step.variance_type=fixed_small",
                   "invariants.no_final_noise"}),
    ),
    "ddim_stride_n7": (
        lambda: StrideMustDivide().as_sampler(), (1, 7, 10), 7,
        _error_of(lambda: StrideMustDivide().prev_timestep(0, 7)),
        frozenset({"oracle.point_mass.eta=0", "oracle.point_mass.eta=1", "single_step.eta=0",
                   "single_step.eta=1", "invariants.no_final_noise"}),
    ),
}


@functools.lru_cache(maxsize=None)
def _report(case: str, dtype: str) -> Report:
    factory, steps, _, _, _ = CASES[case]
    sampler = factory()
    ctx = CheckContext(sampler, dtype=dtype, profile="quick", seed=0, steps=steps)
    return run_checks(sampler, ctx, CHECKS)


def _broken_findings(r: CheckResult, n: int) -> list[str]:
    return [f.message for f in r.findings if f.message.startswith(f"N={n}: ")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crash_at_one_step_count_is_one_finding(case: str, dtype: str) -> None:
    _, _, n, error, expected = CASES[case]
    assert error in ("IndexError: index 1 is out of bounds for dimension 0 with size 1",
                     "ValueError: num_steps=7 does not divide num_train_timesteps=1000")
    report = _report(case, dtype)
    failing = {r.name: r for r in report.checks if r.verdict is Verdict.FAIL}
    assert set(failing) == expected, {name: r.message for name, r in failing.items()}
    for name, r in failing.items():
        broken = _broken_findings(r, n)
        assert len(broken) == 1, (name, [f.message for f in r.findings])
        assert broken[0].startswith(f"N={n}: ") and f" raised {error}" in broken[0], (name, broken[0])
        assert len(r.findings) == 1, (name, [f.message for f in r.findings])  # nothing else is wrong
        assert r.details["errors"] == [{"num_steps": n, "error": error}], (name, r.details.get("errors"))
        assert f"N={n}: " in r.message and error in r.message, (name, r.message)
    # one root crash: one distinct error across the whole report
    errors = {e["error"] for r in report.checks for e in r.details.get("errors", [])}
    assert errors == {error}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_other_step_counts_are_still_compared(case: str, dtype: str) -> None:
    """The checks that compare numbers keep those of the step counts that worked: finite, within the
    tolerance (the target is right there), quoted in the message, and per run in ``details``."""
    _, steps, n, _, _ = CASES[case]
    others = [m for m in steps if m != n]
    report = _report(case, dtype)
    compared = [r for r in report.checks if r.family in ("oracle", "single_step") and r.verdict is Verdict.FAIL]
    assert compared
    for r in compared:
        assert r.observed is not None and r.tolerance is not None, r.name
        assert math.isfinite(r.observed) and math.isfinite(r.tolerance), (r.name, r.observed, r.tolerance)
        assert 0.0 <= r.observed <= r.tolerance, (r.name, r.observed, r.tolerance)
        assert "where the calls worked" in r.message and "(worst ratio " in r.message, r.message
        ratios = r.details["worst_ratio_per_run"]
        for m in steps:  # JSON-safe details: an infinite ratio (no output) is stored as "Infinity"
            runs = [float(v) for k, v in ratios.items() if k == f"N={m}" or k.startswith(f"N={m}/")]
            assert runs, (r.name, m, ratios)
            assert all(v == math.inf for v in runs) if m == n else all(0.0 <= v <= 1.0 for v in runs), \
                (r.name, m, ratios)
        assert 0.0 <= r.details["worst_ratio"] <= 1.0
    # the step counts that work pass every check on their own: the failures above are the crash's
    clean = CheckContext(CASES[case][0](), dtype=dtype, profile="quick", seed=0, steps=tuple(others))
    results = [r for r in run_checks(clean.sampler, clean, CHECKS).checks if not r.name.startswith("timesteps.")]
    assert results and all(r.verdict is Verdict.PASS for r in results), \
        {r.name: r.message for r in results if r.verdict is not Verdict.PASS}
