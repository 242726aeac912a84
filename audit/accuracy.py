r"""``ddspec audit``: the schedule, posterior and σ(η) tables against their mpmath twins, at every timestep.

This is tooling, not an equation: it lives in :mod:`ddspec.audit` (moved from ``reference/audit.py``,
which remains as an alias so that ``ddspec.reference.audit`` and ``python -m ddspec.reference.audit``
keep working). Run it as ``ddspec audit``, ``python -m ddspec.audit.accuracy`` or
``python -m ddspec.reference.audit``.

These are the quantities with a documented ULP bound (docs/accuracy.md): β of every named schedule,
ᾱ, 1 − ᾱ, their square roots, SNR, log-SNR, β̃, both posterior mean coefficients, the clipped log
posterior variance, respaced β′ and σ(η). The other equations (forward process, parameterisations,
steps, likelihood, guidance, …) are expressions in these tables; each is measured against its twin in
its unit tests (tests/reference/), with a bound relative to the magnitude of its terms, since
their inputs (x_t, ε, …) are arbitrary arrays rather than a fixed table.

For each standard schedule (linear, scaled_linear and cosine at T ∈ {10, 1000, 4000}, cosine at
T = 100000, and the other named schedules at T = 1000) and each quantity, the audit evaluates the
float64 reference at **every** timestep, evaluates the independent mpmath twin
(:mod:`ddspec.reference.twin`) at ``dps`` digits, and reports the worst error in ULP and where it
occurs. It fails (exit status 1) if any quantity exceeds its documented bound (:data:`BOUNDS`, the
same numbers as ``docs/accuracy.md``).

A zero-terminal-SNR schedule (``jsd``: β_T = 1, so ᾱ_T = 0) has an SNR row (SNR_T = 0 is compared
exactly) but no log-SNR row: λ_T = −∞ (:func:`ddspec.reference.alphas.log_snr` raises
:class:`~ddspec.reference.SingularError` there), and on the other indices ᾱ_t = (T − t)/T passes through
1/2, where λ ≈ 0 and a relative (ULP) bound on λ cannot hold for any float64 method: λ's condition
number in ᾱ is 1/(ᾱ(1 − ᾱ)|λ|). The table says so under its rows (:func:`audit_notes`).

Progress: :func:`run_audit` and :func:`main` take a ``progress`` callback (default None: silent); the
``ddspec audit`` command draws it on stderr, only when stderr is a terminal.

Pairings and bounds come from the registry (:mod:`ddspec.reference.registry`): each audited quantity
names its reference function, its mpmath twin and its ULP bound there, and a schedule's β is measured
against the twin its registry entry names. The σ(η) rows evaluate the twin's equation (DDIM eq. 16,
:func:`ddspec.reference.twin.ddim.ddim_sigma`) on one ᾱ table of the twin per schedule rather than
per call, which keeps the audit of T = 100000 linear in T.

Inputs are exact: the twin of a table quantity (ᾱ, β̃, …) is evaluated on the same float64 β the
reference used, so that the audit measures the function, not the rounding of its inputs; the twin of
a schedule's β is evaluated from the float64 parameters (beta_start, s, max_beta, …).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import mpmath
import numpy as np
from numpy.typing import NDArray

from ddspec.reference import alphas, registry, schedules, twin
from ddspec.reference.twin import alphas as t_alphas
from ddspec.reference.validation import fail

__all__ = [
    "BOUNDS",
    "STANDARD_CASES",
    "QUICK_CASES",
    "AuditRow",
    "Progress",
    "audit_case",
    "audit_notes",
    "run_audit",
    "format_table",
    "main",
]

#: ``progress(done, total, what)``: ``done`` of ``total`` cases are finished; ``what`` is the case
#: and quantity now being measured (``"linear T=1000: alpha_bar"``), or ``"done"`` at the end.
Progress = Callable[[int, int, str], None]

#: Documented worst-case bound (ULP) per quantity, from the registry; docs/accuracy.md lists the same numbers.
BOUNDS: dict[str, float] = {
    q: float(x.ulp_bound) for x in registry.REGISTRY if x.ulp_bound is not None for q in x.audit
}

#: The quantities that are a function of β alone (``f(betas)``, twin ``f(betas, dps=...)``), in table order.
_TABLE_QUANTITIES: tuple[str, ...] = (
    "alpha_bar", "one_minus_alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "beta_tilde",
    "posterior_mean_coef1", "posterior_mean_coef2", "snr", "log_snr", "posterior_log_variance_clipped",
)

#: (schedule name, T). The first ten are the issue's standard set; the rest cover every named schedule.
STANDARD_CASES: tuple[tuple[str, int], ...] = (
    ("linear", 10),
    ("linear", 1000),
    ("linear", 4000),
    ("scaled_linear", 10),
    ("scaled_linear", 1000),
    ("scaled_linear", 4000),
    ("cosine", 10),
    ("cosine", 1000),
    ("cosine", 4000),
    ("cosine", 100000),
    ("improved_linear", 1000),
    ("sigmoid", 1000),
    ("quad", 1000),
    ("const", 1000),
    ("jsd", 1000),
    ("warmup10", 1000),
    ("warmup50", 1000),
)

QUICK_CASES: tuple[tuple[str, int], ...] = tuple(c for c in STANDARD_CASES if c[1] <= 1000)

#: Named schedules whose builder is a registry function with fixed extra arguments (the rest are
#: ``schedules.<name>_betas`` with their defaults).
_SCHEDULE_BUILDERS: dict[str, tuple[str, dict[str, float]]] = {
    "warmup10": ("schedules.warmup_betas", {"warmup_frac": 0.1}),
    "warmup50": ("schedules.warmup_betas", {"warmup_frac": 0.5}),
}


def _pair(quantity: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The (reference, twin) functions of an audited quantity, as the registry pairs them."""
    x = registry.audit_entry(quantity)
    assert x.twin is not None, x.function
    return registry.resolve(x.function), registry.resolve(x.twin, twin=True)


def _twin_betas(schedule: str, T: int, dps: int) -> list:
    """The exact β of a named schedule: the twin of its registry entry, at the builder's parameters."""
    function, extra = _SCHEDULE_BUILDERS.get(schedule, (f"schedules.{schedule}_betas", {}))
    x = registry.entry(function)
    if "beta" not in x.audit or x.twin is None:
        fail("schedule", schedule, f"{function} is not an audited schedule in the registry")
    return registry.resolve(x.twin, twin=True)(T, dps=dps, **extra)


@dataclass(frozen=True)
class AuditRow:
    """One line of the accuracy table: a quantity on a schedule, its worst error and where."""

    quantity: str
    schedule: str
    num_timesteps: int
    worst_ulp: float
    where: int
    value: float
    bound: float
    count: int

    @property
    def passed(self) -> bool:
        return bool(self.worst_ulp <= self.bound)


def _row(quantity: str, schedule: str, T: int, approx: NDArray[np.float64], exact: Sequence, index: NDArray[np.int64] | None = None) -> AuditRow:
    err = twin.ulp_error(approx, exact)
    i = int(np.argmax(err)) if err.size else 0
    where = int(index[i]) if index is not None and err.size else i
    return AuditRow(quantity, schedule, T, float(err[i]) if err.size else 0.0, where,
                    float(np.asarray(approx).ravel()[i]) if err.size else 0.0, BOUNDS[quantity], int(err.size))


def _sigma_rows(schedule: str, T: int, betas: NDArray[np.float64], dps: int) -> list[AuditRow]:
    rows: list[AuditRow] = []
    sigmas = registry.resolve(registry.audit_entry("ddim_sigma(eta=1)").function)
    ab = t_alphas.alpha_bar(betas, dps=dps)
    with mpmath.workdps(dps):
        def twin_sigma(t: int, s: int, eta: float) -> mpmath.mpf:
            a_t = ab[t]
            a_s = mpmath.mpf(1) if s < 0 else ab[s]
            return mpmath.mpf(eta) * mpmath.sqrt((1 - a_s) / (1 - a_t)) * mpmath.sqrt(1 - a_t / a_s)

        full = np.arange(T - 1, -1, -1)
        for eta, name in ((1.0, "ddim_sigma(eta=1)"), (0.5, "ddim_sigma(eta=0.5)")):
            approx = sigmas(betas, full, eta)
            exact = [twin_sigma(int(t), int(t) - 1, eta) for t in full]
            rows.append(_row(name, schedule, T, approx, exact, full))
        stride = max(T // 50, 2)
        sub = np.arange(T - 1, -1, -stride)
        approx = sigmas(betas, sub, 1.0)
        nxt = list(sub[1:]) + [-1]
        exact = [twin_sigma(int(t), int(s), 1.0) for t, s in zip(sub, nxt)]
        rows.append(_row("ddim_sigma(eta=1, stride)", schedule, T, approx, exact, sub))
        ref_respaced, twin_respaced = _pair("respaced_beta")
        approx = ref_respaced(betas, sub)
        exact = twin_respaced(betas, sub, dps=dps)
        rows.append(_row("respaced_beta", schedule, T, approx, exact, np.sort(sub)))
    return rows


def _check_cases(cases: object) -> None:
    """Raise ValueError naming ``cases`` unless it is a sequence of (schedule name, T) pairs."""
    if isinstance(cases, (str, bytes)) or not isinstance(cases, Sequence) or not all(
        isinstance(c, (tuple, list)) and len(c) == 2 for c in cases
    ):
        fail("cases", cases, "expected a sequence of (schedule name, T) pairs")


def _zero_terminal(betas: NDArray[np.float64]) -> bool:
    """ᾱ_T = 0 (a β of 1 at the end): log-SNR is −∞ there."""
    return bool(alphas.alpha_bar(betas)[-1] == 0.0)


def audit_notes(cases: Sequence[tuple[str, int]]) -> list[str]:
    r"""One line per quantity of :data:`BOUNDS` that a case leaves out of the table, saying why.

    Today only ``log_snr`` on a zero-terminal-SNR schedule (see the module docstring); where ᾱ passes
    through 1/2 (λ within 1e-10 of 0), the index and the value of λ there are computed, not quoted.
    """
    _check_cases(cases)
    notes = []
    for schedule, T in cases:
        betas = schedules.get_betas(schedule, T)
        if not _zero_terminal(betas):
            continue
        ab = alphas.alpha_bar(betas)
        i = int(np.argmin(np.abs(ab[:-1] - 0.5))) if T >= 2 else 0
        text = (f"log_snr on {schedule} T={T}: not audited: beta[{T - 1}] = 1, so alpha_bar[{T - 1}] = 0 "
                "and log-SNR is -inf there (log_snr raises SingularError)")
        lam = float(alphas.log_snr(betas[: T - 1])[i]) if T >= 2 else math.inf
        if abs(lam) < 1e-10:  # ᾱ passes through 1/2 (jsd with an even T)
            text += (f"; and alpha_bar[{i}] is 1/2 up to rounding, where log-SNR = {lam:.3g}: "
                     "a relative (ULP) bound cannot hold next to a zero of log-SNR (condition number "
                     "1/(alpha_bar (1 - alpha_bar) |log-SNR|))")
        notes.append(text)
    return notes


def audit_case(schedule: str, T: int, *, dps: int = twin.DEFAULT_DPS, progress: Callable[[str], None] | None = None) -> list[AuditRow]:
    """Audit every quantity on one schedule; returns one :class:`AuditRow` per quantity."""
    say = progress or (lambda _msg: None)
    betas = schedules.get_betas(schedule, T)
    say("beta")
    rows = [_row("beta", schedule, T, betas, _twin_betas(schedule, T, dps))]
    zero_terminal = _zero_terminal(betas)
    for name in _TABLE_QUANTITIES:
        # SNR = 0 where ᾱ = 0 is compared exactly; log-SNR is -inf there (audit_notes says so)
        if (name == "log_snr" and zero_terminal) or (name == "posterior_log_variance_clipped" and T < 2):
            continue
        ref_fn, twin_fn = _pair(name)
        say(name)
        rows.append(_row(name, schedule, T, ref_fn(betas), twin_fn(betas, dps=dps)))
    say("ddim_sigma, respaced_beta")
    rows.extend(_sigma_rows(schedule, T, betas, dps))
    return rows


def run_audit(cases: Sequence[tuple[str, int]] = STANDARD_CASES, *, dps: int = twin.DEFAULT_DPS,
              progress: Progress | None = None) -> list[AuditRow]:
    """Audit every case. ``progress(done, total, what)`` is called as it works (None: silent)."""
    _check_cases(cases)
    if progress is not None and not callable(progress):
        fail("progress", progress, "expected None or a callable progress(done, total, what)")
    report: Progress = progress if progress is not None else (lambda _d, _n, _w: None)
    rows: list[AuditRow] = []
    total = len(cases)
    for k, (schedule, T) in enumerate(cases):
        def say(what: str, k: int = k, schedule: str = schedule, T: int = T) -> None:
            report(k, total, f"{schedule} T={T}: {what}")
        rows.extend(audit_case(schedule, T, dps=dps, progress=say))
    report(total, total, "done")
    return rows


def format_table(rows: Sequence[AuditRow], notes: Sequence[str] = ()) -> str:
    """The accuracy table: worst ULP per quantity and schedule, where it occurs, and the bound.

    Column widths come from the data, so that long quantity names (``posterior_log_variance_clipped``)
    keep the columns aligned. ``notes`` (from :func:`audit_notes`) are listed under the table.
    """
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not all(isinstance(r, AuditRow) for r in rows):
        fail("rows", rows, "expected a sequence of AuditRow (as audit_case and run_audit return)")
    if isinstance(notes, (str, bytes)) or not all(isinstance(n, str) for n in notes):
        fail("notes", notes, "expected a sequence of str (as audit_notes returns)")
    cells = [
        (r.quantity, r.schedule, str(r.num_timesteps), f"{r.worst_ulp:.2f}", str(r.where), f"{r.bound:.0f}",
         "ok" if r.passed else "EXCEEDS BOUND")
        for r in rows
    ]
    titles = ("quantity", "schedule", "T", "worst ULP", "at index", "bound", "verdict")
    left = (True, True, False, False, False, False, True)
    widths = [max([len(t)] + [len(c[j]) for c in cells]) for j, t in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if is_left else v.rjust(w) for v, w, is_left in zip(values, widths, left)]
        return " ".join(parts).rstrip()

    head = line(titles)
    rule = "-" * len(head)
    lines = [head, rule, *(line(c) for c in cells), rule]
    worst = max(rows, key=lambda r: r.worst_ulp / r.bound) if rows else None
    failed = [r for r in rows if not r.passed]
    if worst is not None:
        lines.append(f"worst relative to its bound: {worst.quantity} on {worst.schedule} T={worst.num_timesteps}: "
                     f"{worst.worst_ulp:.2f} ULP at index {worst.where} (bound {worst.bound:.0f})")
    lines.append(f"{len(rows) - len(failed)} within bound, {len(failed)} exceed their bound")
    if notes:
        lines.append("not in the table:")
        lines.extend(f"  {n}" for n in notes)
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line ``ddspec: error: ...`` (exit code 2), as the rest of ``ddspec``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ddspec: error: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None, progress: Progress | None = None) -> int:
    """Entry point of ``ddspec audit``. Exit status 0 if every quantity is within its bound, else 1.

    ``progress`` is handed to :func:`run_audit` unless ``--no-progress`` is given (the ``ddspec``
    command passes one that draws a bar on stderr when it is a terminal).
    """
    parser = _Parser(prog="ddspec audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dps", type=int, default=twin.DEFAULT_DPS, help="mpmath digits for the twins (default 50)")
    parser.add_argument("--quick", action="store_true", help="only the schedules with T <= 1000")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (it is drawn only when stderr is a terminal)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.dps < 20:
        parser.error(f"--dps={args.dps}: at least 20 digits are needed to measure float64 ULPs")
    cases = QUICK_CASES if args.quick else STANDARD_CASES
    rows = run_audit(cases, dps=args.dps, progress=None if args.no_progress else progress)
    print(format_table(rows, audit_notes(cases)))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
