r"""``invariants.no_global_state_change``: the target leaves torch's global state as it found it.

A sampler step is a function of its arguments. A target that changes a process-wide setting changes
every computation after it, the harness's and the user's: ``torch.set_default_dtype(torch.float64)``
silently widens every later tensor, ``torch.set_grad_enabled(True)`` builds graphs in inference,
``torch.set_num_threads``, ``torch.use_deterministic_algorithms`` and the TF32 / float32 matmul
precision flags change speed and rounding. A thread the target leaves running after a call returns
can go on changing anything (e.g. the tensors it was given).

This check does not call the target. Every call into it, by every check that ran before (it runs
last), went through :meth:`~ddspec.conformance.context.CheckContext.call`, which records torch's
global settings (:data:`ddspec.conformance.sandbox.STATE_FIELDS`) and the threads alive before and
after the call, restores the settings, and logs what changed
(:attr:`~ddspec.conformance.context.CheckContext.state_log`): in the target's worker process under
isolation, in the calling thread with ``--in-process``. The verdict reads the log:

* ``fail`` when any call changed a setting or left a thread running: the message names each kind of
  change with the first call that made it (``call #12, step(t=700, num_steps=10, eta=0), during
  single_step.check_step``) and how many calls changed something; one finding per kind.
* ``pass`` otherwise, stating how many calls were watched and how the target ran.
* ``skipped`` when no call was made (nothing to judge).

The global RNGs are judged by ``invariants.no_global_rng``. The check runs for step targets (the
default ``target_kinds``); a loop target's calls are logged too, but its check list is the loop
family's. ``details`` holds ``isolation`` (how the target ran), ``calls`` (how many were watched) and
``changes`` (at most :data:`MAX_LISTED` of them).
"""

from __future__ import annotations

import time
from typing import Any

from ..results import CheckResult, Finding, Verdict

__all__ = ["CHECKS", "MAX_LISTED", "NAME", "check_no_global_state_change"]

NAME = "invariants.no_global_state_change"
FAMILY = "invariants"

#: How many changing calls ``details["changes"]`` lists.
MAX_LISTED = 20


def _kind(change: str) -> str:
    """``"default dtype: torch.float32 -> torch.float64"`` -> ``"default dtype"``."""
    return change.split(":", 1)[0]


def check_no_global_state_change(ctx: Any) -> list[CheckResult]:
    r"""``invariants.no_global_state_change`` (see the module docstring)."""
    start = time.perf_counter()
    log = ctx.state_log
    isolation = ctx.isolation
    details: dict[str, Any] = {"isolation": isolation, "calls": log.calls}
    if log.calls == 0:
        return [CheckResult.skipped(NAME, FAMILY, f"no call was made into the target (isolation: {isolation})")]
    changes = list(log.changes)
    if not changes:
        return [CheckResult(name=NAME, family=FAMILY, verdict=Verdict.PASS,
                            message=f"no call changed torch's global state or left a thread running, in "
                                    f"{log.calls} call{'' if log.calls == 1 else 's'} (isolation: {isolation})",
                            observed=0.0, tolerance=0.0, details=details, duration_s=time.perf_counter() - start)]
    first: dict[str, tuple[str, Any]] = {}
    for record in changes:
        for change in record.changes:
            first.setdefault(_kind(change), (change, record))
    findings = tuple(Finding(message=f"{change} ({record.where()})") for change, record in first.values())
    details["changes"] = [{"call": r.index, "what": r.call, "check": r.check, "changes": list(r.changes)}
                          for r in changes[:MAX_LISTED]]
    summary = "; ".join(f"{change} ({record.where()})" for change, record in first.values())
    return [CheckResult(
        name=NAME, family=FAMILY, verdict=Verdict.FAIL,
        message=f"the target changed torch's global state in {len(changes)} of {log.calls} calls (each change was "
                f"undone after its call): {summary} (isolation: {isolation})",
        observed=float(len(changes)), tolerance=0.0, findings=findings, details=details,
        duration_s=time.perf_counter() - start,
    )]


#: The check of this module.
CHECKS: list = [check_no_global_state_change]
