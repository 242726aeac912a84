r"""A step target that declares its own timestep rule (``timestep_spacing="custom"``, issue 8 §3).

Its list is *acceptable*: valid, with the nearest named rule and the difference stated, never a silent pass
and never a failure for being non-standard; an invalid list fails. The expected texts are derived from the
rules' definitions (``range(0, T, T//N)``, the ``linspace(-1, T-1, N+1).int()`` truncation), not read back.
"""

from __future__ import annotations

import numpy as np
import pytest

from ddspec.conformance.context import CheckContext
from ddspec.conformance.protocol import Conventions
from ddspec.conformance.results import Verdict
from ddspec.conformance.runner import installed_checks, run_checks
from ddspec.conformance.torch_port import ReferencePort

T = 1000


class CustomTimesPort(ReferencePort):
    """The reference port declaring a custom rule, with its own timesteps(N)."""

    def __init__(self, rule) -> None:  # type: ignore[no-untyped-def]
        super().__init__(family="ddim")
        self.conventions = Conventions(**{**self.conventions.__dict__, "timestep_spacing": "custom"})
        self._rule = rule

    def timesteps(self, num_steps: int) -> np.ndarray:
        return np.asarray(self._rule(num_steps), dtype=np.int64)


def uniform(n: int) -> list[int]:  # ermongroup's range(0, T, T//N), noisiest first
    return list(range(0, T, T // n))[::-1]


def truncated_linspace(n: int) -> list[int]:  # lucidrains' linspace(-1, T-1, N+1).int(), without the -1
    return [int(v) for v in np.linspace(-1, T - 1, n + 1).astype(np.float32).astype(np.int64)[::-1][:-1]]


def _results(rule, steps=(3, 10)):  # type: ignore[no-untyped-def]
    target = CustomTimesPort(rule)
    ctx = CheckContext(target, dtype="float64", profile="quick", seed=0, steps=steps)
    return {r.name: r for r in run_checks(target, ctx, installed_checks()).checks}


def test_a_named_rule_declared_as_custom_is_acceptable_and_named() -> None:
    results = _results(uniform, steps=(10,))
    r = results["timesteps.sequence.N=10"]
    # range(0, 1000, 100) reversed is exactly diffusers' leading rule for N = 10
    assert r.verdict is Verdict.ACCEPTABLE and "equals the leading rule" in r.message
    assert r.details["got"] == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    bad = {n: x.verdict for n, x in results.items() if x.verdict in (Verdict.FAIL, Verdict.UNSUPPORTED)}
    assert not bad, bad


def test_an_off_rule_list_names_the_nearest_rule_and_the_difference() -> None:
    # N = 3: truncation gives [666, 332, -1][:-1]... written out: linspace(-1, 999, 4) = -1, 332.33, 665.67, 999
    expected = [999, 665, 332]
    assert truncated_linspace(3) == expected
    r = _results(truncated_linspace, steps=(3,))["timesteps.sequence.N=3"]
    assert r.verdict is Verdict.ACCEPTABLE
    # the trailing rule at N = 3 is round(1000 (3 - k)/3) - 1 = 999, 666, 332 (k = 0, 1, 2): one position differs
    assert "equals trailing except 1 position(s): 665 vs 666" in r.message


@pytest.mark.parametrize("rule, why", [
    (lambda n: list(range(0, T, T // n)), "strictly decrease"),        # data to noise: the wrong order
    (lambda n: [T] + uniform(n)[1:], "[0, 999]"),                       # an index outside the table
])
def test_an_invalid_custom_list_fails(rule, why) -> None:  # type: ignore[no-untyped-def]
    r = _results(rule, steps=(10,))["timesteps.sequence.N=10"]
    assert r.verdict is Verdict.FAIL and why in r.message
