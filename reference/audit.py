r"""``ddspec audit``: the schedule, posterior and σ(η) tables against their mpmath twins, at every timestep.

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

Inputs are exact: the twin of a table quantity (ᾱ, β̃, …) is evaluated on the same float64 β the
reference used, so that the audit measures the function, not the rounding of its inputs; the twin of
a schedule's β is evaluated from the float64 parameters (beta_start, s, max_beta, …).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mpmath
import numpy as np
from numpy.typing import NDArray

from . import alphas, ddim, posterior, schedules, timesteps, twin
from ._validate import fail
from .twin import alphas as t_alphas
from .twin import ddim as t_ddim
from .twin import posterior as t_posterior
from .twin import schedules as t_schedules
from .twin import timesteps as t_timesteps

__all__ = ["BOUNDS", "STANDARD_CASES", "AuditRow", "audit_case", "run_audit", "format_table", "main"]

#: Documented worst-case bound (ULP) per quantity; docs/accuracy.md lists the same numbers.
BOUNDS: dict[str, float] = {
    "beta": 8.0,
    "alpha_bar": 8.0,
    "one_minus_alpha_bar": 8.0,
    "sqrt_alpha_bar": 8.0,
    "sqrt_one_minus_alpha_bar": 8.0,
    "snr": 8.0,
    "log_snr": 8.0,
    "beta_tilde": 8.0,
    "posterior_mean_coef1": 8.0,
    "posterior_mean_coef2": 8.0,
    "posterior_log_variance_clipped": 8.0,
    "respaced_beta": 8.0,
    "ddim_sigma(eta=1)": 8.0,
    "ddim_sigma(eta=0.5)": 8.0,
    "ddim_sigma(eta=1, stride)": 8.0,
}

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

_TWIN_BETAS: dict[str, Callable[..., list]] = {
    "linear": t_schedules.linear_betas,
    "scaled_linear": t_schedules.scaled_linear_betas,
    "cosine": t_schedules.cosine_betas,
    "improved_linear": t_schedules.improved_linear_betas,
    "sigmoid": t_schedules.sigmoid_betas,
    "quad": t_schedules.quad_betas,
    "const": t_schedules.const_betas,
    "jsd": t_schedules.jsd_betas,
    "warmup10": lambda T, dps: t_schedules.warmup_betas(T, 0.1, dps=dps),
    "warmup50": lambda T, dps: t_schedules.warmup_betas(T, 0.5, dps=dps),
}


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
    ab = t_alphas.alpha_bar(betas, dps=dps)
    with mpmath.workdps(dps):
        def twin_sigma(t: int, s: int, eta: float) -> mpmath.mpf:
            a_t = ab[t]
            a_s = mpmath.mpf(1) if s < 0 else ab[s]
            return mpmath.mpf(eta) * mpmath.sqrt((1 - a_s) / (1 - a_t)) * mpmath.sqrt(1 - a_t / a_s)

        full = np.arange(T - 1, -1, -1)
        for eta, name in ((1.0, "ddim_sigma(eta=1)"), (0.5, "ddim_sigma(eta=0.5)")):
            approx = ddim.ddim_sigmas(betas, full, eta)
            exact = [twin_sigma(int(t), int(t) - 1, eta) for t in full]
            rows.append(_row(name, schedule, T, approx, exact, full))
        stride = max(T // 50, 2)
        sub = np.arange(T - 1, -1, -stride)
        approx = ddim.ddim_sigmas(betas, sub, 1.0)
        nxt = list(sub[1:]) + [-1]
        exact = [twin_sigma(int(t), int(s), 1.0) for t, s in zip(sub, nxt)]
        rows.append(_row("ddim_sigma(eta=1, stride)", schedule, T, approx, exact, sub))
        approx = timesteps.respaced_betas(betas, sub)
        exact = t_timesteps.respaced_betas(betas, sub, dps=dps)
        rows.append(_row("respaced_beta", schedule, T, approx, exact, np.sort(sub)))
    return rows


def audit_case(schedule: str, T: int, *, dps: int = twin.DEFAULT_DPS, progress: Callable[[str], None] | None = None) -> list[AuditRow]:
    """Audit every quantity on one schedule; returns one :class:`AuditRow` per quantity."""
    say = progress or (lambda _msg: None)
    betas = schedules.get_betas(schedule, T)
    say("beta")
    rows = [_row("beta", schedule, T, betas, _TWIN_BETAS[schedule](T, dps=dps))]
    table_quantities: list[tuple[str, Callable, Callable]] = [
        ("alpha_bar", alphas.alpha_bar, t_alphas.alpha_bar),
        ("one_minus_alpha_bar", alphas.one_minus_alpha_bar, t_alphas.one_minus_alpha_bar),
        ("sqrt_alpha_bar", alphas.sqrt_alpha_bar, t_alphas.sqrt_alpha_bar),
        ("sqrt_one_minus_alpha_bar", alphas.sqrt_one_minus_alpha_bar, t_alphas.sqrt_one_minus_alpha_bar),
        ("beta_tilde", posterior.beta_tilde, t_posterior.beta_tilde),
        ("posterior_mean_coef1", posterior.posterior_mean_coef1, t_posterior.posterior_mean_coef1),
        ("posterior_mean_coef2", posterior.posterior_mean_coef2, t_posterior.posterior_mean_coef2),
    ]
    has_zero = bool(alphas.alpha_bar(betas)[-1] == 0.0)
    if not has_zero:
        table_quantities += [
            ("snr", alphas.snr, t_alphas.snr),
            ("log_snr", alphas.log_snr, t_alphas.log_snr),
        ]
    if T >= 2:
        table_quantities.append(
            ("posterior_log_variance_clipped", posterior.posterior_log_variance_clipped,
             t_posterior.posterior_log_variance_clipped)
        )
    for name, ref_fn, twin_fn in table_quantities:
        say(name)
        rows.append(_row(name, schedule, T, ref_fn(betas), twin_fn(betas, dps=dps)))
    say("ddim_sigma, respaced_beta")
    rows.extend(_sigma_rows(schedule, T, betas, dps))
    return rows


def run_audit(cases: Sequence[tuple[str, int]] = STANDARD_CASES, *, dps: int = twin.DEFAULT_DPS,
              progress: bool = True, stream=None) -> list[AuditRow]:
    """Audit every case; shows progress on ``stream`` (default stderr) while it works."""
    if isinstance(cases, (str, bytes)) or not isinstance(cases, Sequence) or not all(
        isinstance(c, (tuple, list)) and len(c) == 2 for c in cases
    ):
        fail("cases", cases, "expected a sequence of (schedule name, T) pairs")
    stream = sys.stderr if stream is None else stream
    rows: list[AuditRow] = []
    t0 = time.perf_counter()
    for k, (schedule, T) in enumerate(cases, start=1):
        def say(what: str, k: int = k, schedule: str = schedule, T: int = T) -> None:
            if progress:
                print(f"\r[{k}/{len(cases)}] {schedule} T={T}: {what:<40}", end="", file=stream, flush=True)
        rows.extend(audit_case(schedule, T, dps=dps, progress=say))
    if progress:
        print(f"\r{'':<80}\rdone: {len(rows)} quantity/schedule pairs in {time.perf_counter() - t0:.1f} s",
              file=stream, flush=True)
    return rows


def format_table(rows: Sequence[AuditRow]) -> str:
    """The accuracy table: worst ULP per quantity and schedule, where it occurs, and the bound."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not all(isinstance(r, AuditRow) for r in rows):
        fail("rows", rows, "expected a sequence of AuditRow (as audit_case and run_audit return)")
    head = f"{'quantity':<28} {'schedule':<15} {'T':>6} {'worst ULP':>10} {'at index':>9} {'bound':>6}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "ok" if r.passed else "EXCEEDS BOUND"
        lines.append(f"{r.quantity:<28} {r.schedule:<15} {r.num_timesteps:>6} {r.worst_ulp:>10.2f} "
                     f"{r.where:>9} {r.bound:>6.0f}  {verdict}")
    worst = max(rows, key=lambda r: r.worst_ulp / r.bound) if rows else None
    failed = [r for r in rows if not r.passed]
    lines.append("-" * len(head))
    if worst is not None:
        lines.append(f"worst relative to its bound: {worst.quantity} on {worst.schedule} T={worst.num_timesteps}: "
                     f"{worst.worst_ulp:.2f} ULP at index {worst.where} (bound {worst.bound:.0f})")
    lines.append(f"{len(rows) - len(failed)} within bound, {len(failed)} exceed their bound")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ddspec audit``. Exit status 0 if every quantity is within its bound, else 1."""
    parser = argparse.ArgumentParser(prog="ddspec audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dps", type=int, default=twin.DEFAULT_DPS, help="mpmath digits for the twins (default 50)")
    parser.add_argument("--quick", action="store_true", help="only the schedules with T <= 1000")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.dps < 20:
        parser.error(f"--dps={args.dps}: at least 20 digits are needed to measure float64 ULPs")
    cases = QUICK_CASES if args.quick else STANDARD_CASES
    rows = run_audit(cases, dps=args.dps, progress=not args.no_progress)
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
