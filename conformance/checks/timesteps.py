r"""Timestep check: the target's N-step subsequence against the declared spacing rule.

``timesteps.sequence.N=<N>``, one result per N: ``sampler.timesteps(N)`` against
:func:`ddspec.conformance.expectation.reference_timesteps` (diffusers' ``leading`` / ``trailing`` /
``linspace``, Lin et al. 2023, Table 2, evaluated in exact arithmetic by
:mod:`ddspec.reference.timesteps`). N runs over ``ctx.steps`` plus the extremes 1, 2, T and the
non-divisors 3 and 7 (those ≤ T).

Verdicts:

* equal → ``pass``;
* different only where the exact rule's value is a rounding tie (an exact :math:`k + \tfrac12`, which
  the rule rounds half to even) and there by exactly 1 → ``acceptable``: the target evaluates the rule
  in floating point, where a tie can land either side (the docstring of
  :mod:`ddspec.reference.timesteps` counts these). The consequence states where, and how much ᾱ
  moves: one index changes ᾱ by the factor :math:`1-\beta`, i.e. relatively by β at the larger index;
* anything else (another length, such as diffusers' trailing spacing returning N + 1 timesteps ending
  in −1 for some N; an off-by-one away from a tie; a value out of range) → ``fail`` with the positions;
* ``timesteps(N)`` raises or hangs → ``fail`` with one finding, ``"N=<N>: timesteps(N) raised
  <ExcType>: <message>"``, the exception recorded in ``details["errors"]``;
* the reference rule itself undefined for N (``leading`` with ``steps_offset`` running past T − 1)
  → ``skipped`` with the reason;
* N outside the target's ``supported_num_steps`` (:func:`~ddspec.conformance.protocol.supported_num_steps`)
  → ``skipped``, ``"N=<N>: not in the target's supported_num_steps (<description>)"``: never failed, and
  ``timesteps(N)`` is not called; when none of the N above is supported, the smallest supported N ≤ T is
  checked as well. A malformed declaration, or a predicate that raises, fails.

Ties. The exact rule's value before rounding is, at sampling-order position k,
``trailing``: :math:`T (N-k)/N` (then − 1) and ``linspace``: :math:`j (T-1)/(N-1)` with j = N − 1 − k.
It is a tie exactly when twice its remainder equals the denominator. ``leading`` involves no rounding.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
import torch

from ddspec.reference.vocabulary import NAMED_SPACINGS, TimestepSpacing

from ..context import CheckContext
from ..expectation import UnsupportedConvention, named_rule_match, reference_betas, reference_timesteps, tie_positions
from ..protocol import NumStepsSupport, supported_num_steps
from ..results import MAX_FINDINGS, CheckResult, Finding, Verdict
from ._common import conventions_of, fail_result, failed_call, unsupported_entries, unsupported_results

__all__ = ["check_timesteps", "CHECKS", "TIMESTEP_FIELDS", "tie_positions", "named_rule_match"]

FAMILY = "timesteps"
TIMESTEP_FIELDS = ("num_train_timesteps", "timestep_spacing", "steps_offset")


def _name(n: int) -> str:
    return f"timesteps.sequence.N={n}"


def _reproduce(n: int) -> str:
    return (
        "from ddspec.conformance.expectation import reference_timesteps\n"
        "conv = sampler.conventions  # `sampler`: the target under test\n"
        f"print(list(sampler.timesteps({n})))\n"
        f"print(list(reference_timesteps(conv, {n})))\n"
    )


def _call_failed(name: str, n: int, error: str, base: dict) -> CheckResult:
    r"""``fail``: ``timesteps(N)`` raised or hung. One finding, ``"N=<N>: timesteps(N) raised <ExcType>: …"``,
    and the exception in ``details["errors"]`` (the report groups the checks one exception made fail)."""
    message = f"N={n}: {failed_call(f'timesteps({n})', error)}"
    return CheckResult(
        name=name, family=FAMILY, verdict=Verdict.FAIL, message=message, findings=(Finding(message=message),),
        reproduce=_reproduce(n), details=dict(base, errors=[{"num_steps": n, "error": error}]),
    )


def _as_int_sequence(value: object) -> tuple[np.ndarray | None, str | None]:
    try:
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        return None, f"returned a {type(value).__name__} that is not an array ({exc})"
    if arr.ndim != 1:
        return None, f"returned an array of shape {arr.shape}, expected a 1-D sequence"
    if arr.dtype.kind not in "iu":
        return None, f"returned dtype {arr.dtype}, expected integer timestep indices"
    return arr.astype(np.int64), None


#: The longest sequence kept whole in ``details["expected"]`` / ``details["got"]`` (the HTML report's plot).
MAX_SEQUENCE = 1000


def _head(seq: np.ndarray, k: int = 12) -> list[int]:
    return [int(v) for v in seq[:k]]


def _read_sequence(ctx: CheckContext, name: str, n: int, base: dict) -> tuple[NDArray[np.int64] | None, CheckResult | None]:
    r"""``(the target's timesteps(N) as int64, None)``, or ``(None, fail)`` when the call raised or hung
    (:func:`_call_failed`) or returned no 1-D integer sequence."""
    outcome = ctx.call(ctx.sampler.timesteps, n)
    if not outcome.ok:
        return None, _call_failed(name, n, outcome.describe(), base)
    got, why = _as_int_sequence(outcome.value)
    if got is None:
        return None, fail_result(name, FAMILY, f"timesteps({n}) {why}", **base)
    return got, None


def _rule_undefined(ctx: CheckContext, name: str, n: int, T: int, why: str, base: dict) -> CheckResult:
    """The declared rule has no N-step sequence: nothing to compare with, but the target's must still be valid.

    A sampling sequence must be strictly decreasing inside [0, T − 1] whatever the rule; a target
    that returns, e.g., timestep T (diffusers' leading spacing with steps_offset=1 at N = T) fails.
    """
    got, failed = _read_sequence(ctx, name, n, base)
    if got is None:
        return failed
    out_of_range = [k for k in range(got.size) if not 0 <= int(got[k]) <= T - 1]
    not_decreasing = [k for k in range(1, got.size) if int(got[k]) >= int(got[k - 1])]
    details = dict(base, got_head=_head(got), got_length=int(got.size), rule_undefined=why)
    if out_of_range or not_decreasing:
        findings = [Finding(step=k, timestep=int(got[k]), got=float(got[k]),
                            message=f"position {k}: index {int(got[k])} outside [0, {T - 1}]") for k in out_of_range[:3]]
        findings += [Finding(step=k, timestep=int(got[k]), got=float(got[k]),
                             message=f"position {k}: {int(got[k])} does not decrease from {int(got[k - 1])}")
                     for k in not_decreasing[:2]]
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.FAIL, observed=None, tolerance=0.0,
            message=(f"timesteps({n}) is not a valid sampling sequence ({len(out_of_range)} index(es) outside "
                     f"[0, {T - 1}], {len(not_decreasing)} not decreasing); the declared rule itself is undefined "
                     f"for N={n}: {why}"),
            findings=tuple(findings), reproduce=_reproduce(n), details=details,
        )
    return CheckResult(name=name, family=FAMILY, verdict=Verdict.SKIPPED,
                       message=f"the declared rule is undefined for N={n} ({why}); the target's sequence is valid",
                       details=details)


def _one(ctx: CheckContext, conv, n: int, betas: np.ndarray | None) -> CheckResult:
    name = _name(n)
    T = conv.num_train_timesteps
    spacing = conv.timestep_spacing
    base = {"N": n, "num_train_timesteps": T, "timestep_spacing": spacing, "steps_offset": conv.steps_offset}
    try:
        expected = np.asarray(reference_timesteps(conv, n), dtype=np.int64)
    except UnsupportedConvention as exc:
        return unsupported_results([name], FAMILY, [str(exc)])[0]
    except ValueError as exc:
        return _rule_undefined(ctx, name, n, T, str(exc), base)
    got, failed = _read_sequence(ctx, name, n, base)
    if got is None:
        return failed
    details = dict(base, expected_head=_head(expected), got_head=_head(got),
                   expected_length=int(expected.size), got_length=int(got.size),
                   expected=[int(v) for v in expected[:MAX_SEQUENCE]], got=[int(v) for v in got[:MAX_SEQUENCE]])

    if got.size != expected.size:
        common = min(got.size, expected.size)
        diff = [k for k in range(common) if got[k] != expected[k]]
        findings = [
            Finding(step=k, timestep=int(expected[k]), expected=float(expected[k]), got=float(got[k]),
                    tolerance=0.0, message=f"position {k}: expected index {int(expected[k])}, got {int(got[k])}")
            for k in diff[: MAX_FINDINGS - 1]
        ]
        if got.size > expected.size:
            extra = [int(v) for v in got[expected.size:]]
            note = (f"{len(extra)} extra element(s) at positions {expected.size}..{got.size - 1}: {extra[:8]}"
                    + (" (index -1 is the data, not a timestep: a step at t = -1 reads the last table entry)"
                       if -1 in extra else ""))
            findings.append(Finding(step=int(expected.size), got=float(extra[0]), message=note))
        else:
            note = f"{expected.size - got.size} element(s) missing: expected {_head(expected[got.size:], 8)} at the end"
            findings.append(Finding(step=int(got.size), expected=float(expected[got.size]), message=note))
        if diff:
            note += f"; within the common length the values also differ at positions {diff[:10]}"
        details["differing_positions"] = diff[:50]
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.FAIL, observed=float(got.size), tolerance=float(expected.size),
            message=(f"timesteps({n}) has {got.size} elements, the declared {spacing!r} rule gives "
                     f"{expected.size}: {note}"),
            findings=tuple(findings[:MAX_FINDINGS]), reproduce=_reproduce(n), details=details,
        )

    diff = [k for k in range(got.size) if got[k] != expected[k]]
    if not diff:
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.PASS, observed=0.0, tolerance=0.0,
            message=f"timesteps({n}) equals the declared {spacing!r} rule ({n} elements)", details=details,
        )
    ties = tie_positions(spacing, T, n)
    tie_only = all(k in ties and abs(int(got[k]) - int(expected[k])) == 1 for k in diff)
    findings = tuple(
        Finding(step=k, timestep=int(expected[k]), expected=float(expected[k]), got=float(got[k]), tolerance=0.0,
                message=(f"position {k}: expected index {int(expected[k])}, got {int(got[k])}"
                         + (" (the exact value is a rounding tie)" if k in ties else "")))
        for k in diff[:MAX_FINDINGS]
    )
    details["differing_positions"] = diff[:50]
    details["tie_positions"] = sorted(ties)[:50]
    worst = max(abs(int(got[k]) - int(expected[k])) for k in diff)
    if tie_only:
        change = None
        if betas is not None:
            change = max(float(betas[max(int(got[k]), int(expected[k]))]) for k in diff)
            details["max_relative_alpha_bar_change"] = change
        consequence = (
            f"tie broken by float rounding at positions {diff[:10]}: the exact rule's value there is k + 1/2, rounded "
            "half to even by the reference and the other way by the target; the step uses alpha_bar one index away"
            + (f": relative change beta_t <= {change:.3g}" if change is not None else "")
        )
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.ACCEPTABLE, observed=float(worst), tolerance=0.0,
            message=(f"timesteps({n}) differs from the exact {spacing!r} rule by one index at {len(diff)} position(s), "
                     "all exact rounding ties"),
            findings=findings, consequence=consequence, reproduce=_reproduce(n), details=details,
        )
    off_tie = [k for k in diff if k not in ties or abs(int(got[k]) - int(expected[k])) != 1]
    return CheckResult(
        name=name, family=FAMILY, verdict=Verdict.FAIL, observed=float(worst), tolerance=0.0,
        message=(f"timesteps({n}) differs from the declared {spacing!r} rule at positions {diff[:10]}"
                 f"{' ...' if len(diff) > 10 else ''} (largest difference {worst} indices; "
                 f"{len(off_tie)} not explained by a rounding tie)"),
        findings=findings, reproduce=_reproduce(n), details=details,
    )


# -- the named rules, for a target's own (custom) rule ----------------------------------------------

def _custom(ctx: CheckContext, conv, n: int) -> CheckResult:
    r"""``timesteps.sequence.N=<n>`` for a target that declares its own rule (``timestep_spacing="custom"``):
    the list it gives must be a valid reverse sequence (indices in [0, T − 1], strictly decreasing); then the
    result is *acceptable*, naming the nearest rule ddspec knows and how the list differs from it
    (:func:`named_rule_match`), never a silent pass and never a failure for being non-standard. The step
    checks judge the maths at the target's own pairs (t, t_prev)."""
    name = _name(n)
    T = conv.num_train_timesteps
    base = {"N": n, "num_train_timesteps": T, "timestep_spacing": conv.timestep_spacing}
    got, failed = _read_sequence(ctx, name, n, base)
    if got is None:
        return failed
    details = dict(base, got=[int(v) for v in got[:MAX_SEQUENCE]], got_length=int(got.size))
    bad = [k for k in range(got.size) if not 0 <= int(got[k]) <= T - 1]
    bad += [k for k in range(1, got.size) if int(got[k]) >= int(got[k - 1])]
    if got.size == 0 or bad:
        k = bad[0] if bad else 0
        return CheckResult(
            name=name, family=FAMILY, verdict=Verdict.FAIL, observed=None, tolerance=0.0,
            message=(f"timesteps({n}) is not a valid sampling sequence: " + ("empty" if got.size == 0 else
                     f"position {k}: {int(got[k])} (indices must lie in [0, {T - 1}] and strictly decrease)")),
            findings=(Finding(step=k, message=f"position {k} of timesteps({n})"),), reproduce=_reproduce(n),
            details=details)
    rule, text = named_rule_match(got, T, n)
    details["nearest_rule"] = rule
    return CheckResult(
        name=name, family=FAMILY, verdict=Verdict.ACCEPTABLE,
        message=f"timesteps({n}) is the target's own rule (timestep_spacing='custom'): it {text}",
        consequence=("the target's own timesteps are used; the step checks judge each step at the target's "
                     "(t, t_prev) pairs" + ("" if rule else ", which no named rule gives")),
        details=details)


def _not_run(n: int, T: int, support: NumStepsSupport) -> CheckResult | None:
    r"""The result of an N that is not checked: above T, outside the target's ``supported_num_steps`` (skipped,
    never failed), or a declared predicate that raises at N (fail); None when N is checked."""
    if n > T:
        return CheckResult.skipped(_name(n), FAMILY, f"N={n} exceeds num_train_timesteps={T}")
    try:
        if support.supports(n):
            return None
    except ValueError as exc:
        return fail_result(_name(n), FAMILY, f"N={n}: the target's supported_num_steps is not usable: {exc}")
    return CheckResult(name=_name(n), family=FAMILY, verdict=Verdict.SKIPPED,
                       message=f"N={n}: {support.unsupported_reason()}",
                       details={"N": n, "supported_num_steps": support.description})


def check_timesteps(ctx: CheckContext) -> list[CheckResult]:
    r"""``timesteps.sequence.N=<N>`` for every tested N (see the module docstring)."""
    conv, why = conventions_of(ctx)
    if conv is None:
        return [fail_result("timesteps.sequence", FAMILY, why or "no conventions")]
    entries = unsupported_entries(conv, TIMESTEP_FIELDS)
    if entries:
        return unsupported_results(["timesteps.sequence"], FAMILY, entries)
    declared = ctx.call(lambda: supported_num_steps(ctx.sampler))
    if not declared.ok:
        return [fail_result("timesteps.sequence", FAMILY,
                            f"the target's supported_num_steps is not usable: {declared.describe()}")]
    support: NumStepsSupport = declared.value
    T = conv.num_train_timesteps
    wanted = set(ctx.steps or ()) | {1, 2, 3, 7, T}
    try:  # none of these supported: the smallest supported N <= T, as the step and loop families do
        wanted |= set(support.choose(wanted, T).counts)
    except ValueError:
        pass  # a predicate that raises: _not_run fails the N it raises at
    if conv.timestep_spacing == TimestepSpacing.CUSTOM:
        return [_not_run(n, T, support) or _custom(ctx, conv, n) for n in sorted(wanted)]
    if conv.timestep_spacing not in NAMED_SPACINGS:
        return unsupported_results(
            ["timesteps.sequence"], FAMILY,
            [f"timestep_spacing={conv.timestep_spacing!r}: the target uses its own rule, which has no reference"],
        )
    results = []
    try:
        betas = reference_betas(conv)
    except ValueError:  # the schedule check reports an unknown schedule; only the consequence text needs β
        betas = None
    for n in sorted(wanted):
        results.append(_not_run(n, T, support) or _one(ctx, conv, n, betas))
    return results


CHECKS: list = [check_timesteps]
