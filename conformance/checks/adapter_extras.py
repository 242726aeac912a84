r"""Checks an adapter brings for what its library adds beyond the step protocol.

Some library objects do more than a reverse step: diffusers' parallel schedulers have
``batch_step_no_noise`` (many timesteps in one batch), the inverse scheduler runs DDIM backwards, and
the pipelines post-process the final state to [0, 1] and uint8. Their adapters
(:mod:`ddspec.conformance.adapters`) state those comparisons in an ``extra_checks(dtype=, steps=,
seed=)`` method returning :class:`~ddspec.conformance.results.CheckResult` objects, judged against the
reference like every other check (``single_step.batch_step_no_noise.N=<n>``,
``single_step.inversion.N=<n>``, ``loop.postprocess.*``).

This module runs that method for any target that has one, duck-typed: it never imports an adapter.
The call goes through :meth:`~ddspec.conformance.context.CheckContext.call`, so an exception or a hang
of the library becomes one failed result ``adapter.extra_checks``, never a crash of the run. A target
without the method gets no result from here.
"""

from __future__ import annotations

from typing import Any

from ..context import CheckContext
from ..results import CheckResult, Finding, Verdict
from ._common import elapsed

__all__ = ["CHECKS", "check_adapter_extras", "EXTRA_MAX_STEPS"]

FAMILY = "adapter"
#: The largest profile step count the extra checks run at (they drive whole batches of timesteps).
EXTRA_MAX_STEPS = 50


def _steps(ctx: CheckContext) -> tuple[int, ...]:
    small = sorted({int(n) for n in ctx.steps if 1 <= int(n) <= EXTRA_MAX_STEPS})
    return tuple(small[:3]) or (1,)


def check_adapter_extras(ctx: CheckContext) -> list[CheckResult]:
    r"""The adapter's own ``extra_checks`` at up to three profile step counts ≤ :data:`EXTRA_MAX_STEPS`."""
    import time

    start = time.perf_counter()
    fn: Any = getattr(ctx.sampler, "extra_checks", None)
    if not callable(fn):
        return []
    steps = _steps(ctx)
    outcome = ctx.call(fn, dtype=ctx.dtype, steps=steps, seed=int(ctx.seed))
    if not outcome.ok:
        return [CheckResult(name="adapter.extra_checks", family=FAMILY, verdict=Verdict.FAIL,
                            message=f"the adapter's extra_checks(steps={steps}) failed: {outcome.describe()}",
                            findings=(Finding(message=outcome.describe()),), duration_s=elapsed(start),
                            details={"errors": [{"num_steps": None, "error": outcome.describe()}]})]
    value = outcome.value
    if not isinstance(value, (list, tuple)) or not all(isinstance(r, CheckResult) for r in value):
        return [CheckResult(name="adapter.extra_checks", family=FAMILY, verdict=Verdict.FAIL,
                            message=f"the adapter's extra_checks returned {type(value).__name__}, "
                                    "not a list of CheckResult", duration_s=elapsed(start))]
    return list(value)


check_adapter_extras.target_kinds = ("step", "loop", "inversion")  # type: ignore[attr-defined]

CHECKS: list = [check_adapter_extras]
