r"""``check_formula``: compare a user's formula with the reference quantity, everywhere, and name its erratum.

Numerical check. At every evaluation point of the quantity (:mod:`ddspec.audit.quantities`) the
formula's value F is compared with the reference function's float64 value R:

.. math:: e = \frac{|F - R|}{|R|} \le \tau = k\,u,\qquad u = 2^{-52}

where k is the reference's ULP bound for the quantity (its audited float64 error, or one derived from
audited tables plus one rounding per operation; the cosine ᾱ adds each β's error propagated through
the product, a condition-number term). Where |F − R| ≤ 1e-40 the point agrees whatever R (R = 0 at the
last step of β̃ and of the noise std). A string formula is evaluated exactly (mpmath, 60 digits, from
the exact float64 β), so its own arrangement adds no error and τ is the reference's alone. A Python
callable is evaluated in float64 on correctly rounded inputs, and τ grows by its rounding,
:math:`32u(1 + \kappa)`, with κ the callable's condition number in its inputs (estimated by relative
perturbation 2⁻²⁰ of each). A complex value (a square root of a negative number) or an undefined one
never agrees.

Symbolic check: :func:`ddspec.audit.symbolic.symbolic_verdict`. Errata: a formula that differs is
compared, at the same points, with the wrong form of every erratum registered for the quantity
(:mod:`ddspec.audit.errata`); it matches one when it agrees with it everywhere (to 1e-25 relative for
strings, both being exact evaluations; within τ for callables).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from . import formula as fm
from .quantities import DEFAULT_ETAS, DEFAULT_SCHEDULES, QUANTITIES, U, Point, Quantity, ScheduleData, base_env, schedule_data

__all__ = ["FormulaVerdict", "check_formula", "evaluate_form"]

_ABS_AGREE = mpmath.mpf(10) ** -40


@dataclass(frozen=True)
class FormulaVerdict:
    """The checker's answer for one formula and quantity.

    ``matches``: agrees with the reference at every point within ``tolerance``. ``worst_relative_error``
    and ``where`` (schedule, 0-based index t, t_prev, η, σ² choice), ``expected`` (reference) and ``got``
    (formula) describe the worst point; ``tolerance`` is the relative bound applied there and
    ``tolerance_rule`` how it is derived. ``symbolic``: True (proved identical), False (a witness that
    it differs), None (undecided or not asked). ``erratum``: the registered erratum whose wrong form the
    formula equals, or None.
    """

    quantity: str
    formula: str
    matches: bool
    worst_relative_error: float
    where: Point | None
    expected: float | None
    got: str
    tolerance: float
    tolerance_rule: str
    points_checked: int
    points_failed: int
    symbolic: bool | None
    symbolic_note: str
    erratum: str | None
    first_failures: tuple[tuple[Point, float], ...] = ()

    def message(self) -> str:
        """A human-readable report: verdict, worst point (expected, got, where), tolerance, symbolic verdict, erratum."""
        head = "MATCHES" if self.matches else "DIFFERS"
        lines = [f"{head}: {self.formula}  vs  {self.quantity} ({QUANTITIES[self.quantity].reference_form})"]
        lines.append(f"  points checked: {self.points_checked}, outside tolerance: {self.points_failed}")
        for p, err in self.first_failures:
            lines.append(f"  differs at {p.describe()}: relative error {err:.3g}")
        if self.where is not None:
            lines.append(f"  worst relative error {self.worst_relative_error:.3g} at {self.where.describe()}: "
                         f"expected {self.expected!r}, got {self.got}")
        lines.append(f"  tolerance there: {self.tolerance:.3g} relative ({self.tolerance_rule})")
        sym = {True: "identical", False: "different", None: "undecided"}[self.symbolic]
        lines.append(f"  symbolic: {sym} ({self.symbolic_note})")
        if self.erratum is not None:
            from .errata import ERRATA
            e = ERRATA[self.erratum]
            lines.append(f"  known erratum: {e.name}: {e.title}; correct form: {e.correct} ({e.source})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        where = None
        if self.where is not None:
            where = {"schedule": self.where.schedule, "t": self.where.t, "t_prev": self.where.t_prev,
                     "eta": self.where.eta, "sigma2": self.where.sigma2}
        worst = self.worst_relative_error
        return {
            "quantity": self.quantity, "formula": self.formula, "matches": self.matches,
            "worst_relative_error": worst if math.isfinite(worst) else str(worst), "where": where,
            "expected": self.expected, "got": self.got, "tolerance": self.tolerance,
            "tolerance_rule": self.tolerance_rule, "points_checked": self.points_checked,
            "points_failed": self.points_failed, "symbolic": self.symbolic, "symbolic_note": self.symbolic_note,
            "erratum": self.erratum,
            "first_failures": [{"schedule": p.schedule, "t": p.t, "t_prev": p.t_prev, "eta": p.eta, "sigma2": p.sigma2,
                                "relative_error": e if math.isfinite(e) else str(e)} for p, e in self.first_failures],
        }


def _quantity(quantity: object) -> Quantity:
    if not isinstance(quantity, str) or quantity not in QUANTITIES:
        raise ValueError(f"quantity={quantity!r}: unknown quantity; known: {', '.join(sorted(QUANTITIES))}")
    return QUANTITIES[quantity]


def _schedules(schedules: object, q: Quantity) -> list[ScheduleData]:
    if isinstance(schedules, str) or not isinstance(schedules, Sequence) or len(schedules) == 0:
        raise ValueError(f"schedules={schedules!r}: must be a non-empty sequence of schedule names, e.g. ('linear', 'cosine')")
    data = [schedule_data(s) for s in schedules]
    if q.cosine_only:
        data = [d for d in data if d.name == "cosine"]
        if not data:
            raise ValueError(f"schedules={tuple(schedules)!r}: quantity {q.name} is defined on the cosine schedule; include 'cosine'")
    return data


def _etas(etas: object) -> tuple[float, ...]:
    if isinstance(etas, (str, bytes)) or not isinstance(etas, Sequence) or len(etas) == 0:
        raise ValueError(f"etas={etas!r}: must be a non-empty sequence of numbers in [0, 1]")
    out = []
    for e in etas:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0:
            raise ValueError(f"etas={etas!r}: every eta must be a number in [0, 1], got {e!r}")
        out.append(float(e))
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# values of a form at the points
# --------------------------------------------------------------------------------------------------

Key = tuple[str, tuple[str, ...], tuple[float, ...]]
_FORM_CACHE: dict[tuple[str, Key], list[Any]] = {}


def _points(q: Quantity, data: list[ScheduleData], etas: tuple[float, ...]) -> list[tuple[ScheduleData, Point]]:
    return [(sd, p) for sd in data for p in q.points(sd, etas)]


def _reference(q: Quantity, sd: ScheduleData, p: Point) -> float:
    key = f"ref:{q.name}"
    table = sd.cache.setdefault(key, {})
    assert isinstance(table, dict)
    if p not in table:
        table[p] = float(q.value(sd, p))
    return table[p]


def evaluate_form(form: str, q: Quantity, data: list[ScheduleData], etas: tuple[float, ...]) -> list[Any]:
    """Exact values (mpf, mpc or Undefined) of the string ``form`` at every point of ``q`` (cached)."""
    key = (form, (q.name, tuple(sd.label for sd in data), etas))
    if key not in _FORM_CACHE:
        compiled = fm.compile_mp(fm.parse_formula(form, "form"))
        _FORM_CACHE[key] = [fm.evaluate_mp(compiled, base_env(sd, p, q.kind)) for sd, p in _points(q, data, etas)]
    return _FORM_CACHE[key]


def _callable_values(fn: Callable[..., Any], q: Quantity, data: list[ScheduleData], etas: tuple[float, ...]) -> tuple[list[Any], list[float]]:
    """float64 values of a callable at every point, and the extra tolerance 32u(1 + κ) at each."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        raise ValueError(f"fn={fn!r}: cannot read its parameter names") from None
    unknown = [n for n in params if n not in fm.SYMBOL_NAMES]
    if unknown:
        raise ValueError(f"fn={getattr(fn, '__name__', fn)!r}: unknown parameter(s) {', '.join(unknown)}; "
                         f"parameters must be named from the vocabulary {', '.join(fm.SYMBOL_NAMES)}")
    values: list[Any] = []
    extra: list[float] = []
    for sd in data:
        pts = q.points(sd, etas)
        envs = [base_env(sd, p, q.kind) for p in pts]
        args: dict[str, np.ndarray] = {}
        for n in params:
            missing = [p for p, env in zip(pts, envs) if n not in env]
            if missing:
                raise ValueError(f"fn={getattr(fn, '__name__', fn)!r}: parameter {n} is not defined for quantity {q.name} "
                                 f"(e.g. at {missing[0].describe()})")
            args[n] = np.array([float(env[n]) for env in envs], dtype=np.float64)

        def call(a: dict[str, np.ndarray]) -> np.ndarray:
            with np.errstate(all="ignore"):
                out = np.asarray(fn(**a), dtype=np.float64)
            return np.broadcast_to(out, (len(pts),)).astype(np.float64)

        try:
            base = call(args)
        except Exception as exc:  # the user's function failed: report it, naming the argument
            raise ValueError(f"fn={getattr(fn, '__name__', fn)!r}: raised {type(exc).__name__}: {exc}") from None
        kappa = np.zeros(len(pts))
        delta = 2.0**-20
        for n in params:
            bumped = dict(args)
            bumped[n] = args[n] * (1.0 + delta)
            with np.errstate(all="ignore"):
                kappa += np.nan_to_num(np.abs(call(bumped) - base) / (delta * np.abs(base)), nan=0.0, posinf=0.0)
        values += [float(v) for v in base]
        extra += list(32 * U * (1.0 + kappa))
    return values, extra


def _rel(got: Any, expected: Any) -> float:
    """|got − expected| / |expected| (0 where they agree to 1e-40 absolutely; inf for complex/undefined)."""
    if isinstance(got, fm.Undefined) or isinstance(expected, fm.Undefined):
        return math.inf
    if isinstance(got, mpmath.mpc) or isinstance(expected, mpmath.mpc):
        return math.inf
    if isinstance(got, float) and not math.isfinite(got):
        return math.inf
    with mpmath.workdps(fm.MP_DPS):
        d = abs(mpmath.mpf(got) - mpmath.mpf(expected))
        if d <= _ABS_AGREE:
            return 0.0
        if expected == 0:
            return math.inf
        return float(d / abs(mpmath.mpf(expected)))


def _same(a: Any, b: Any, rel: float) -> bool:
    """Whether two exact values of a form agree (both undefined counts as agreeing)."""
    if isinstance(a, fm.Undefined) or isinstance(b, fm.Undefined):
        return isinstance(a, fm.Undefined) and isinstance(b, fm.Undefined)
    with mpmath.workdps(fm.MP_DPS):
        d = abs(a - b)
        return bool(d <= _ABS_AGREE or d <= rel * max(abs(a), abs(b)))


def _show(v: Any) -> str:
    if isinstance(v, fm.Undefined):
        return str(v)
    if isinstance(v, mpmath.mpc):
        return f"complex {mpmath.nstr(v, 17)} (not real: a square root or log of a negative number)"
    if isinstance(v, float):
        return repr(v)
    return mpmath.nstr(v, 17)


def check_formula(
    fn_or_expr: str | Callable[..., Any],
    quantity: str,
    schedules: Sequence[str] = DEFAULT_SCHEDULES,
    *,
    etas: Sequence[float] = DEFAULT_ETAS,
    symbolic: bool = True,
) -> FormulaVerdict:
    r"""Check a formula for ``quantity`` against the reference at every point of ``schedules``.

    ``fn_or_expr`` is a string in sympy syntax over the vocabulary of :mod:`ddspec.audit.formula`
    (``beta_t``, ``alpha_t``, ``alpha_bar_t``, ``alpha_bar_prev``, ``beta_tilde_t``, ``sigma_t``,
    ``eta``, ``t``, ``idx``, ``t_prev``, ``T``, ``s``, ``max_beta``, and ``beta(k)``, ``alpha(k)``,
    ``alpha_bar(k)``), or a Python callable over numpy float64 arrays whose parameter names are
    vocabulary symbols. ``quantity`` is a key of :data:`~ddspec.audit.quantities.QUANTITIES`.
    ``schedules``: names of :data:`ddspec.reference.schedules.NAMED_SCHEDULES`, optionally ``name:T``
    (default T = 1000); default linear (1e-4..0.02), cosine, scaled_linear. ``etas``: the η of DDIM
    quantities. ``symbolic``: also decide ``user − reference ≡ 0`` with sympy (strings only).

    The tolerance (module docstring): :math:`|F-R| \le k u |R|` with the reference's ULP bound k,
    plus :math:`32u(1+\kappa)` for a float64 callable. Index convention: ``where.t`` is 0-based, the
    formula's ``t`` is the papers' ``t = index + 1``. Raises ValueError naming the argument for an
    unknown quantity, schedule or symbol, or an unparsable formula.
    """
    q = _quantity(quantity)
    data = _schedules(schedules, q)
    eta_t = _etas(etas)
    pts = _points(q, data, eta_t)
    is_str = isinstance(fn_or_expr, str)
    parsed = None
    if is_str:
        assert isinstance(fn_or_expr, str)
        parsed = fm.parse_formula(fn_or_expr, "expr")
        try:
            fm.compile_mp(parsed)
        except ValueError as exc:
            raise ValueError(f"expr={fn_or_expr!r}: {exc}") from None
        values = evaluate_form(fn_or_expr, q, data, eta_t)
        extra = [0.0] * len(pts)
        label = fn_or_expr
    elif callable(fn_or_expr):
        values, extra = _callable_values(fn_or_expr, q, data, eta_t)
        label = f"{getattr(fn_or_expr, '__name__', 'callable')}()"
    else:
        raise ValueError(f"fn_or_expr={fn_or_expr!r}: must be a formula string or a callable")

    tolerances = [q.tolerance(sd, p) + x for (sd, p), x in zip(pts, extra)]
    worst, worst_i, worst_ratio, failed = 0.0, 0, -1.0, 0
    first: list[tuple[Point, float]] = []
    for i, ((sd, p), v) in enumerate(zip(pts, values)):
        e = _rel(v, _reference(q, sd, p))
        ratio = e / tolerances[i]
        if ratio > 1.0:
            failed += 1
            if len(first) < 5:
                first.append((pts[i][1], e))
        if ratio > worst_ratio:
            worst, worst_i, worst_ratio = e, i, ratio
    worst_tol = tolerances[worst_i]
    sd_w, p_w = pts[worst_i]
    matches = failed == 0
    rule = f"reference bound {q.ulp_bound:g} ULP × 2^-52 ({q.ulp_note})"
    if not is_str:
        rule += "; + 32·2^-52·(1 + condition number) for the float64 callable"

    erratum = None
    if not matches:
        erratum = _match_erratum(values, q, data, eta_t, tolerances if not is_str else None)

    sym: bool | None = None
    note = "not asked" if is_str else "not available for a callable"
    if is_str and symbolic:
        from .symbolic import symbolic_verdict
        assert parsed is not None
        sym, note = symbolic_verdict(parsed, q)

    return FormulaVerdict(
        quantity=q.name, formula=label, matches=matches, worst_relative_error=float(worst), where=p_w,
        expected=_reference(q, sd_w, p_w), got=_show(values[worst_i]), tolerance=worst_tol, tolerance_rule=rule,
        points_checked=len(pts), points_failed=failed, symbolic=sym, symbolic_note=note, erratum=erratum,
        first_failures=tuple(first),
    )


def _match_erratum(values: list[Any], q: Quantity, data: list[ScheduleData], etas: tuple[float, ...],
                   float_tol: list[float] | None) -> str | None:
    from .errata import ERRATA
    for e in ERRATA.values():
        if e.quantity != q.name:
            continue
        wrong = evaluate_form(e.wrong, q, data, etas)
        if float_tol is None:
            ok = all(_same(a, b, 1e-25) for a, b in zip(values, wrong))
        else:
            ok = all(_rel(a, b) <= tol for a, b, tol in zip(values, wrong, float_tol))
        if ok:
            return e.name
    return None
