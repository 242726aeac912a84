r"""Judge, statistically: the noisy transitions a target drew itself, and the tests that decide them.

Where a step adds noise the harness did not inject (a loop drawing from its generator or torch's global
RNG), the transition cannot be compared exactly. Its standardized residual

.. math:: r = \frac{x_\mathrm{prev} - \mu_\mathrm{ref}(x_t, \hat m)}{\sigma_\mathrm{ref}}

(μ and σ from :func:`~ddspec.conformance.expectation.expect_transition`: Ho et al. 2020 Algorithm 2 and
eq. 7; Song et al. 2021 eq. 12 with σ(η) of eq. 16) must be N(0, 1) across the batch and independent of
x_t, of the previous step's residual and of the other batch elements. The tests are
:mod:`ddspec.conformance.stats`'; every result states its false-failure rate and what it detects
(``docs/statistics.md``). The rounding allowance of the mean (:class:`~ddspec.conformance.judge.StepTolerance`)
decides which steps enter which test (:func:`usable`, :func:`offset_tolerant`), so that no verdict hinges on
rounding.

This is the statistical half of the judge stage (``docs/harness.md``); :mod:`ddspec.conformance.judge` is the
exact half.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import stats
from .expectation import ExpectedTransition
from .judge import StepTolerance
from .results import MAX_FINDINGS, CheckResult, Finding, Verdict
from .tolerances import StepSpec

__all__ = [
    "RESIDUAL_ROUNDING_LIMIT",
    "Residual",
    "residuals",
    "usable",
    "offset_tolerant",
    "Part",
    "stat_result",
    "noise_result",
    "independence_result",
]

#: The most a z statistic of the noise tests may move under the rounding allowance of the step means
#: (the tests' critical values are 5 or more): steps where it could move more are left out.
RESIDUAL_ROUNDING_LIMIT = 0.25


@dataclass(frozen=True)
class Residual:
    r"""The standardized residual of one noisy transition, :math:`r = (x_\mathrm{prev} - \mu_\mathrm{ref})/\sigma_\mathrm{ref}`,
    with what the rounding allowance of the mean can do to it (``rho``, ``allowance``)."""

    e: ExpectedTransition
    r: NDArray[np.float64]
    rho: float  # RMS of the mean's rounding allowance over the smallest sigma of the step
    allowance: float  # sum over elements of (rounding allowance / sigma)^2: the residuals' non-centrality bound


def residuals(tol: StepTolerance, spec: StepSpec, expected: list[ExpectedTransition]) -> list[Residual]:
    r"""The standardized residual :math:`(x_{k+1} - \mu_\mathrm{ref})/\sigma_\mathrm{ref}` of every noisy
    transition, with ρ = RMS(rounding allowance of the mean)/min σ (the error model's bound, noise-free)."""
    out = []
    for e in expected:
        if e.why is not None or not e.noisy:
            continue
        sd = np.sqrt(e.variance)
        tr = e.transition
        bound = tol.bound(spec, tr.t, tr.t_prev, model_output=tr.model_output, x_t=tr.x_t, noise=None,
                          predicted_variance=tr.predicted_variance)
        rho = float(np.sqrt(np.mean(bound**2))) / float(np.min(sd))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            allowance = float(np.sum((bound / sd) ** 2))
            out.append(Residual(e, (e.transition.x_prev - e.mean) / sd, rho, allowance))
    return out


def usable(res: list[Residual]) -> tuple[list[Residual], list[Residual]]:
    r"""(per-step set, pooled set): the steps where rounding cannot move a test statistic.

    Every statistic below is a z (or a chi-square ratio) of n elements per step; a systematic error
    within the allowance moves a per-step z by at most :math:`\sqrt n\,\rho` and a pooled z over K
    steps by at most :math:`\sqrt{nK}\,\max\rho`. A step enters the per-step tests when
    :math:`\sqrt n\,\rho \le` :data:`RESIDUAL_ROUNDING_LIMIT`, and the pooled tests when also
    :math:`\sqrt{nK}\,\rho \le` that limit, so that rounding moves no z by more than a quarter
    (the critical values are 5 or more).
    """
    if not res:
        return [], []
    n = res[0].r.size
    per = [x for x in res if math.sqrt(n) * x.rho <= RESIDUAL_ROUNDING_LIMIT]
    pooled = [x for x in per if math.sqrt(n * max(len(per), 1)) * x.rho <= RESIDUAL_ROUNDING_LIMIT]
    return per, pooled


def offset_tolerant(res: list[Residual], per: list[Residual]) -> list[Residual]:
    r"""The noisy steps left out of the exact tests whose variance can still be tested.

    Their mean's rounding allowance is too large for a z test, but a variance test can carry it: the
    squared residuals are non-central chi-square with non-centrality at most the allowance
    :math:`\lambda = \sum_i (\text{bound}_i/\sigma_i)^2`
    (:func:`~ddspec.conformance.stats.offset_tolerant_variance_test`). These are the small-σ steps at
    the end of a run with float32 tables, exactly where σ² = β_t and σ² = β̃_t differ most. A step
    enters when λ ≤ n (an allowance of at most one σ RMS), beyond which the test has little power.
    """
    kept = {id(x) for x in per}
    return [x for x in res if id(x) not in kept and np.isfinite(x.allowance) and x.allowance <= x.r.size
            and np.all(np.isfinite(x.r))]


def _stat_finding(res: stats.StatResult, owners: list[Residual] | None, what: str) -> Finding:
    tr = owners[res.worst_coordinate].e.transition if owners is not None and res.dims == len(owners) else None
    return Finding(step=None if tr is None else tr.step, timestep=None if tr is None else tr.t,
                   got=res.statistic, tolerance=res.threshold, message=f"{what}: {res.detail.splitlines()[0]}")


#: One test of a result: (label, its outcome, the transitions of its columns, or None when pooled).
Part = tuple[str, stats.StatResult, "list[Residual] | None"]


def stat_result(name: str, family: str, parts: list[Part], what: str, details: dict[str, Any], alpha: float) -> CheckResult:
    r"""``fail`` when any test rejects (findings: the rejecting tests, worst step first), else ``pass``;
    the message states the false-failure rate and what each test detects."""
    failed = [(label, r, owners) for label, r, owners in parts if not r.passed]
    details = dict(details, false_failure_rate=alpha, tests={
        label: {"passed": r.passed, "statistic": r.statistic, "threshold": r.threshold, "p_value": r.p_value,
                "alpha": r.false_failure_rate, "min_detectable": r.describe_min_detectable(), "n": r.n, "dims": r.dims}
        for label, r, _ in parts})
    detect = "; ".join(f"{label}: {r.describe_min_detectable()}" for label, r, _ in parts)
    if failed:
        worst = min(failed, key=lambda p: p[1].p_value)
        return CheckResult(
            name=name, family=family, verdict=Verdict.FAIL, observed=worst[1].statistic, tolerance=worst[1].threshold,
            message=(f"{what}: {', '.join(label for label, _, _ in failed)} rejected (false-failure rate {alpha:.3g}); "
                     f"worst: {worst[0]}: {worst[1].detail.splitlines()[0]}"),
            findings=tuple(_stat_finding(r, owners, label) for label, r, owners in failed[:MAX_FINDINGS]),
            details=details)
    return CheckResult(name=name, family=family, verdict=Verdict.PASS,
                       message=f"{what}: consistent (false-failure rate {alpha:.3g}; detects {detect})", details=details)


def noise_result(name: str, family: str, alpha: float, per: list[Residual], pooled: list[Residual],
                 tolerant: list[Residual], details: dict[str, Any]) -> CheckResult:
    r"""The residuals against N(0, 1): mean and variance per step (``per``), pooled (``pooled``), and the
    offset-tolerant variance of the small-σ steps (``tolerant``); ``alpha`` split evenly over the tests."""
    R = np.stack([x.r.ravel() for x in per], axis=1) if per else np.zeros((0, 0))
    if not np.all(np.isfinite(R)):
        tr = per[int(np.argmax(~np.all(np.isfinite(R), axis=0)))].e.transition
        return CheckResult(name=name, family=family, verdict=Verdict.FAIL, observed=math.inf,
                           message=f"non-finite state after step {tr.step} (t={tr.t} -> {tr.t_prev})",
                           findings=(Finding(step=tr.step, timestep=tr.t, message="non-finite residual"),), details=details)
    a = alpha
    share = a / ((4 if pooled else 2) * bool(per) + 2 * bool(tolerant))
    parts: list[Part] = []
    if per:
        parts += [
            ("mean per step", stats.mean_test(R, 0.0, 1.0, share, name=f"{name}/mean per step"), per),
            ("variance per step", stats.variance_test(R, 1.0, share, mean=0.0, name=f"{name}/variance per step"), per),
        ]
    if pooled:
        P = np.stack([x.r.ravel() for x in pooled], axis=1)
        parts += [
            ("pooled mean", stats.pooled_mean_test(P, 0.0, 1.0, share, name=f"{name}/pooled mean"), None),
            ("pooled variance", stats.pooled_variance_test(P, 1.0, share, name=f"{name}/pooled variance"), None),
        ]
    if tolerant:
        Q = np.stack([x.r.ravel() for x in tolerant], axis=1)
        lam = np.array([x.allowance for x in tolerant])
        parts += [
            ("offset-tolerant variance per step", stats.offset_tolerant_variance_test(
                Q, lam, share, name=f"{name}/offset-tolerant variance per step"), tolerant),
            ("offset-tolerant pooled variance", stats.offset_tolerant_variance_test(
                Q, lam, share, pooled=True, name=f"{name}/offset-tolerant pooled variance"), None),
        ]
    elements = (per or tolerant)[0].r.size
    what = (f"standardized residual (x_prev - mu_ref)/sigma_ref of {len(per)} noisy step(s) x {elements} "
            "elements against N(0, 1)")
    if tolerant:
        what += (f", and the variance of {len(tolerant)} small-sigma step(s) whose mean's rounding allowance is "
                 "carried as a non-centrality")
    return stat_result(name, family, parts, what, details, a)


def _relations(items: list[Residual], by_step: dict[int, NDArray[np.float64]]) -> dict[str, tuple[list[NDArray[np.float64]], list[Residual]]]:
    r"""For each relation, the columns :math:`u = r \odot w / \mathrm{rms}(w)` (one per step) and their steps:
    w = x_t (centred), the previous step's residual, and the paired batch element's residual."""
    out: dict[str, tuple[list, list]] = {"x_t": ([], []), "previous residual": ([], []), "batch": ([], [])}

    def add(label: str, r: NDArray[np.float64], w: NDArray[np.float64], item: Residual) -> None:
        rms = float(np.sqrt(np.mean(w * w)))
        if rms > 0 and np.isfinite(rms):
            out[label][0].append((r * w / rms).ravel())
            out[label][1].append(item)

    for item in items:
        r, x = item.r, item.e.transition.x_t
        add("x_t", r, x - x.mean(), item)
        prev = by_step.get(item.e.transition.step - 1)
        if prev is not None:
            add("previous residual", r, prev, item)
        pairs = r.shape[0] // 2
        if pairs >= 1:
            add("batch", r[1:2 * pairs:2], r[0:2 * pairs:2], item)
    return {k: v for k, v in out.items() if v[0]}


def independence_result(name: str, family: str, alpha: float, per: list[Residual], pooled: list[Residual],
                        everything: list[Residual], details: dict[str, Any]) -> CheckResult:
    r"""The residuals' independence of x_t, of the previous step's residual and across the batch;
    ``alpha`` split evenly over the relations tested."""
    by_step = {x.e.transition.step: x.r for x in everything}
    rel_per, rel_pooled = _relations(per, by_step), _relations(pooled, by_step)
    if not rel_per:
        return CheckResult.skipped(name, family, "no noisy step to test")
    a = alpha
    share = a / (len(rel_per) + len(rel_pooled))
    parts: list[Part] = []
    for label, (cols, owners) in rel_per.items():
        parts.append((f"{label} per step", stats.mean_test(np.stack(cols, axis=1), 0.0, 1.0, share,
                                                          name=f"{name}/{label} per step"), owners))
    for label, (cols, _) in rel_pooled.items():
        parts.append((f"{label} pooled", stats.pooled_mean_test(np.stack(cols, axis=1), 0.0, 1.0, share,
                                                               name=f"{name}/{label} pooled"), None))
    what = ("correlation of the standardized residual with x_t, with the previous step's residual and between "
            "batch elements (z = sum r w / |w| ~ N(0, 1) given w)")
    return stat_result(name, family, parts, what, dict(details, relations={k: len(v[0]) for k, v in rel_per.items()}), a)
