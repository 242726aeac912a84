"""The harness checks, one module per check family.

Each module exports ``CHECKS``, a list of functions ``(CheckContext) -> list[CheckResult]``.
:data:`ALL_CHECKS` is every check, in the order ``ddspec check`` runs them: the cheap exact checks
first (schedule, timesteps), then the step-by-step comparisons with the reference (oracle,
single_step, then each step's coefficients fitted by regression: coefficients), then the statistical
checks (distribution), then the invariants, then the ``loop`` family
(whole sampling loops; the runner gives it to loop targets only, and them only it and the schedule
family: :func:`ddspec.conformance.runner.select_checks`), and last the checks an adapter brings for
what its library adds beyond the protocol (``adapter_extras``: ``batch_step_no_noise``, inversion,
pipeline post-processing).
"""

from . import coefficients, distribution, invariants, loop, oracle, schedule, single_step, timesteps
from . import adapter_extras, global_state

#: Every check function, in the order `ddspec check` runs them.
ALL_CHECKS: list = [
    *schedule.CHECKS,
    *timesteps.CHECKS,
    *oracle.CHECKS,
    *single_step.CHECKS,
    *coefficients.CHECKS,
    *distribution.CHECKS,
    *invariants.CHECKS,
    *loop.CHECKS,
    *coefficients.LOOP_CHECKS,
    *global_state.CHECKS,
    *adapter_extras.CHECKS,
]

__all__ = [
    "ALL_CHECKS", "coefficients", "distribution", "invariants", "loop", "oracle", "schedule", "single_step", "timesteps",
]
