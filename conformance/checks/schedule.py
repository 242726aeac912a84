r"""Schedule checks: the target's β and ᾱ tables against the reference schedule it declares.

``schedule.betas``
    :math:`|\beta^\mathrm{target}_t - \beta_t| / \beta_t \le \mathrm{SAFETY}\cdot\delta\beta_t` for every
    index, with β the declared schedule from :func:`ddspec.conformance.expectation.reference_betas`
    and :math:`\delta\beta` from :func:`~ddspec.conformance.tolerances.beta_relative_bound`.
``schedule.alphas_cumprod``
    :math:`|\bar\alpha^\mathrm{target}_t - \bar\alpha_t| / \bar\alpha_t \le \mathrm{SAFETY}\cdot\delta\bar\alpha_t`
    with :math:`\bar\alpha_t = \prod_{i\le t}(1-\beta_i)` (Ho et al. 2020, §2) from
    :func:`ddspec.reference.alphas.alpha_bar` and :math:`\delta\bar\alpha` from
    :func:`~ddspec.conformance.tolerances.alpha_bar_relative_bound`. Where the exact ᾱ is 0 (the last
    entry of a zero-terminal-SNR schedule, β_T = 1) the error is absolute and the bound is the first-order
    effect of β_T's error, :math:`\bar\alpha_{T-1}\,\delta\beta_T`.

What the bounds cover. :math:`\delta\beta` and :math:`\delta\bar\alpha` bound the error of the
*textbook* evaluation of the declared schedule with every operation in the table's dtype
(``docs/tolerances.md``, "The textbook evaluation, in the table's dtype"): ``linspace`` for the
linear family, :math:`1 - f(i+1)/f(i)` with :math:`f = \cos^2` for the cosine schedule (whose
error near π/2 is the condition number θ tan θ of cos times the angle's rounding), Algorithm 1 of
Lin et al. 2023 for the zero-terminal-SNR rescale, and a running product for ᾱ. An honest table,
however it is written, passes; a table off by more than a few times its rounding fails
(``tests/quality/test_textbook_schedules.py``).

Which unit roundoff the bounds use. A table reveals the dtype it is held in
(:func:`~ddspec.conformance.tolerances.table_roundoff`: the narrowest dtype in which every entry is
exact), reported in ``details["table_dtype"]``. The bound is evaluated at

.. math:: u = \min\big(u_\mathrm{table},\ \max(u_\mathrm{compute},\ u_\mathrm{float32})\big),

i.e. a table may be held in float32 (the practice of diffusers, accepted by ``docs/tolerances.md``
even in a float64 run) or in the run's dtype when that is narrower, but not in anything narrower
than both: a float16 ᾱ table in a float32 run is judged at float32 and fails unless it happens to be
accurate. Without this rule a float16 table would be judged at float16, whose γ bound for a product
of 2000 factors is larger than 1, and every precision loss would pass. The ᾱ bound uses the larger
of the β and ᾱ tables' u, since β's error propagates into ᾱ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ddspec.reference import alphas as ref_alphas

from ..context import CheckContext
from ..expectation import UnsupportedConvention, zero_snr_original, reference_betas
from ..results import MAX_FINDINGS, CheckResult, Finding, Verdict
from ..tolerances import (
    SAFETY,
    UNIT_ROUNDOFF,
    alpha_bar_relative_bound,
    beta_relative_bound,
    table_roundoff,
    unit_roundoff,
)
from ._common import (
    conventions_of,
    dtype_of_roundoff,
    fail_result,
    read_table,
    unsupported_entries,
    unsupported_results,
)

__all__ = ["check_schedule", "CHECKS", "SCHEDULE_FIELDS"]

FAMILY = "schedule"
NAMES = ("schedule.betas", "schedule.alphas_cumprod")

#: The declarations the schedule depends on.
SCHEDULE_FIELDS = (
    "num_train_timesteps",
    "beta_schedule",
    "beta_start",
    "beta_end",
    "trained_betas",
    "rescale_betas_zero_snr",
)


def _allowed_roundoff(table_u: float, u_compute: float) -> float:
    """The u a table is judged at: its own, but no coarser than float32 or the run's dtype (module docstring)."""
    return min(table_u, max(u_compute, UNIT_ROUNDOFF["float32"]))


def _reproduce(method: str, index: int, dtype: str) -> str:
    ref = (
        "reference_betas(conv)"
        if method == "betas"
        else "alpha_bar(reference_betas(conv))"
    )
    return (
        "from ddspec.conformance.expectation import reference_betas\n"
        "from ddspec.reference.alphas import alpha_bar\n"
        "conv = sampler.conventions  # `sampler`: the target under test\n"
        f"got = sampler.{method}()[{index}]\n"
        f"expected = {ref}[{index}]\n"
        f"print(got, expected, abs(got - expected) / expected)  # run dtype {dtype}\n"
    )


def _table_result(
    name: str,
    method: str,
    got: np.ndarray,
    expected: np.ndarray,
    rel_bound: np.ndarray,
    abs_where_zero: np.ndarray | None,
    *,
    table_u: float,
    u_applied: float,
    dtype: str,
    extra: dict[str, Any],
) -> CheckResult:
    r"""Compare a table per index: relative error where the exact value is non-zero, absolute where it is 0."""
    zero = expected == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where(zero, np.abs(got), np.abs(got - expected) / np.where(zero, 1.0, np.abs(expected)))
    bound = np.where(zero, abs_where_zero if abs_where_zero is not None else 0.0, rel_bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.where(err > 0, np.inf, 0.0))
    order = np.argsort(-ratio, kind="stable")
    worst = int(order[0])
    failed = bool(ratio[worst] > 1.0)
    shown = [int(i) for i in order[:MAX_FINDINGS] if (ratio[i] > 1.0 or not failed)]
    if not failed:
        shown = shown[:1]
    findings = tuple(
        Finding(
            timestep=i,
            element=(i,),
            expected=float(expected[i]),
            got=float(got[i]),
            tolerance=float(bound[i] * (1.0 if zero[i] else abs(expected[i]))),
            message=(
                f"{method}[{i}]: {'absolute' if zero[i] else 'relative'} error {err[i]:.3g} vs bound {bound[i]:.3g} "
                f"(ratio {ratio[i]:.3g})"
            ),
        )
        for i in shown
    )
    n_bad = int(np.count_nonzero(ratio > 1.0))
    table_dtype = dtype_of_roundoff(table_u)
    judged = dtype_of_roundoff(u_applied)
    if failed:
        message = (
            f"{n_bad} of {got.size} entries of {method}() differ from the declared schedule by more than the "
            f"error bound (worst at index {worst}: ratio {ratio[worst]:.3g}); table held in {table_dtype}, "
            f"judged at {judged}"
        )
    else:
        message = (
            f"{method}() matches the declared schedule within the error bound at every index (worst ratio "
            f"{ratio[worst]:.3g} at index {worst}); table held in {table_dtype}, judged at {judged}"
        )
    details = {
        "table_dtype": table_dtype,
        "judged_at": judged,
        "u_applied": u_applied,
        "safety": SAFETY,
        "error_kind": "relative (absolute where the exact value is 0)",
        "worst_index": worst,
        "worst_ratio": float(ratio[worst]),
        "n_exceeding": n_bad,
        # the error per index in ULPs of the table's dtype (relative spacing 2u; absolute error where the exact
        # value is 0), for the HTML report's curve; 3 significant digits, None where not finite
        "ulp_per_index": [float(f"{v:.3g}") if np.isfinite(v) else None for v in err / (2.0 * table_u)],
        **extra,
    }
    return CheckResult(
        name=name,
        family=FAMILY,
        verdict=Verdict.FAIL if failed else Verdict.PASS,
        observed=float(err[worst]),
        tolerance=float(bound[worst]),
        message=message,
        findings=findings,
        reproduce=_reproduce(method, worst, dtype) if failed else None,
        details=details,
    )


def check_schedule(ctx: CheckContext) -> list[CheckResult]:
    r"""``schedule.betas`` and ``schedule.alphas_cumprod``: the target's tables vs the declared schedule.

    See the module docstring for the equations and the unit roundoff the bounds use.
    """
    conv, why = conventions_of(ctx)
    if conv is None:
        return [fail_result(name, FAMILY, why or "no conventions") for name in NAMES]
    entries = unsupported_entries(conv, SCHEDULE_FIELDS)
    if entries:
        return unsupported_results(NAMES, FAMILY, entries)
    try:
        exp_betas = reference_betas(conv)
    except UnsupportedConvention as exc:
        return unsupported_results(NAMES, FAMILY, [str(exc)])
    except ValueError as exc:  # the declared parameters are outside the reference schedule's domain
        return unsupported_results(NAMES, FAMILY, [f"the reference cannot build the declared schedule: {exc}"])
    exp_ab = ref_alphas.alpha_bar(exp_betas)
    T = conv.num_train_timesteps
    u_compute = unit_roundoff(ctx.dtype)
    schedule = conv.beta_schedule
    common = {"beta_schedule": schedule, "num_train_timesteps": T, "run_dtype": ctx.dtype_name}
    results: list[CheckResult] = []

    got_b, why_b = read_table(ctx, "betas", T)
    u_b = None
    if got_b is None:
        results.append(fail_result(NAMES[0], FAMILY, why_b or "betas() unreadable", **common))
    else:
        tb = table_roundoff(got_b)
        u_b = _allowed_roundoff(tb, u_compute)
        rel = SAFETY * beta_relative_bound(exp_betas, schedule, u_b, zero_snr_original=zero_snr_original(conv))
        results.append(
            _table_result(NAMES[0], "betas", got_b, exp_betas, rel, None,
                          table_u=tb, u_applied=u_b, dtype=ctx.dtype_name, extra=common)
        )

    got_ab, why_ab = read_table(ctx, "alphas_cumprod", T)
    if got_ab is None:
        results.append(fail_result(NAMES[1], FAMILY, why_ab or "alphas_cumprod() unreadable", **common))
    else:
        tab = table_roundoff(got_ab)
        u_ab = _allowed_roundoff(tab, u_compute)
        u_used = max(u_ab, u_b) if u_b is not None else u_ab
        rel = SAFETY * alpha_bar_relative_bound(exp_betas, schedule, u_used, zero_snr_original=zero_snr_original(conv))
        # where the exact ᾱ_t is 0 (β_t = 1): |ᾱ_t| <= ᾱ_{t-1} δβ_t to first order
        prev = np.concatenate([[1.0], exp_ab[:-1]])
        abs_zero = SAFETY * prev * beta_relative_bound(exp_betas, schedule, u_used, zero_snr_original=zero_snr_original(conv))
        extra = dict(common, u_betas_applied=u_b)
        results.append(
            _table_result(NAMES[1], "alphas_cumprod", got_ab, exp_ab, rel, abs_zero,
                          table_u=tab, u_applied=u_used, dtype=ctx.dtype_name, extra=extra)
        )
    return results


CHECKS: list = [check_schedule]
