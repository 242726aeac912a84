"""The harness checks, one module per check family."""

#: Every check function, in the order `ddspec check` runs them: each is
#: ``(CheckContext) -> list[CheckResult]``. Filled in as the check modules are written.
ALL_CHECKS: list = []
