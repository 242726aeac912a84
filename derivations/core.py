r"""What a derivation is, and how every step of one is checked.

A :class:`Derivation` is a named chain of :class:`Step` s over declared :class:`Variable` s. Each step
claims an equality ``before == after`` (or, for log-densities, equality *up to a constant in* some
variables, the form "completing the square" takes). :func:`check` checks every step:

1. **Symbolically** (sympy), quick routes: the difference ``before - after`` (for "up to a
   constant in x": its derivative in x) is brought to 0 by ``expand``, or by ``cancel`` with the
   logarithms split off and combined (:func:`_prove_zero`).
2. **Numerically** (mpmath): both sides are evaluated at :data:`NUMERIC_POINTS` random points
   drawn (at high precision) from the variables' domains and satisfying every constraint, at
   :data:`NUMERIC_DPS` significant digits. A point where the difference exceeds
   :data:`NUMERIC_RTOL` relative to the size of the terms refutes the step (✗, with the point).
3. **Symbolically** again, thorough routes, for a step the points did not refute: ``cancel`` after
   mapping every bounded variable onto a positive one (so that sympy *knows* the signs the
   assumptions give, e.g. :math:`\beta = u/(1+u)` with :math:`u > 0` for :math:`0 < \beta < 1`),
   then ``simplify`` (and ``expand_trig`` for trigonometric steps) on small expressions.
4. Where no sympy route reaches 0, sympy cannot decide and the numeric points of 2. decide; the
   result says so (``numeric, 20 points at 50 digits``).

A step is ✗ only on a numeric counterexample, which the result gives; no step is ✓ unchecked.

Vectors: every Gaussian in the DDPM/DDIM papers has an isotropic covariance, so every identity holds
per element; the derivations treat each :math:`x` as a scalar (one element).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import mpmath
import sympy as sp

__all__ = [
    "NUMERIC_POINTS",
    "NUMERIC_DPS",
    "NUMERIC_RTOL",
    "Variable",
    "Step",
    "Derivation",
    "StepResult",
    "DerivationResult",
    "variable",
    "check",
    "check_step",
    "with_step_replaced",
    "held",
]

NUMERIC_POINTS = 20
"""Random points at which the numeric fallback evaluates a step."""

NUMERIC_DPS = 50
"""Significant decimal digits of the numeric fallback (``mpmath.mp.dps``)."""

NUMERIC_RTOL = mpmath.mpf("1e-40")
"""Largest difference, relative to the size of the terms, the numeric fallback accepts."""

_MAX_TRIES = 100_000  # rejection-sampling attempts for the constraints, per point
_SIMPLIFY_MAX_OPS = 300  # above this many operations, sympy.simplify is too slow to try
_SIMPLIFY_MAX_OPS_TRIG = 45  # the same for trigonometric expressions, where simplify grows fast


# --------------------------------------------------------------------------------------------------
# variables and steps
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    r"""A symbol of a derivation with its domain :math:`(\text{low}, \text{high})` (open interval).

    ``low``/``high`` of ``None`` mean unbounded. ``text`` is how the CLI writes it (unicode),
    ``latex`` how the docs do. ``sample_low``/``sample_high`` bound where the numeric fallback draws
    an unbounded variable.
    """

    symbol: sp.Symbol
    text: str
    latex: str
    low: sp.Rational | None
    high: sp.Rational | None
    sample_low: sp.Rational
    sample_high: sp.Rational

    def domain_text(self) -> str:
        """The assumption as text, e.g. ``0 < β_t < 1``."""
        if self.low is None and self.high is None:
            return f"{self.text} ∈ ℝ"
        if self.high is None:
            return f"{self.text} > {self.low}"
        if self.low is None:
            return f"{self.text} < {self.high}"
        return f"{self.low} < {self.text} < {self.high}"

    def domain_latex(self) -> str:
        """The assumption in LaTeX."""
        if self.low is None and self.high is None:
            return rf"{self.latex} \in \mathbb{{R}}"
        if self.high is None:
            return rf"{self.latex} > {sp.latex(self.low)}"
        if self.low is None:
            return rf"{self.latex} < {sp.latex(self.high)}"
        return rf"{sp.latex(self.low)} < {self.latex} < {sp.latex(self.high)}"


def variable(
    name: str,
    text: str,
    latex: str,
    low: int | str | None = 0,
    high: int | str | None = None,
    sample: tuple[int | str, int | str] | None = None,
) -> Variable:
    """A :class:`Variable` whose sympy symbol carries the assumptions of its domain.

    ``low >= 0`` makes the symbol ``positive=True``, anything else ``real=True``. Unbounded sides
    are sampled within 4 of the bound (or in (-3, 3) for an unbounded real), unless ``sample``
    gives the sampling interval (which must lie inside the domain).
    """
    lo = None if low is None else sp.Rational(low)
    hi = None if high is None else sp.Rational(high)
    if lo is not None and hi is not None and not lo < hi:
        raise ValueError(f"variable {name!r}: low={lo} must be < high={hi}")
    if lo is not None and lo >= 0:
        sym = sp.Symbol(name, positive=True)
    else:
        sym = sp.Symbol(name, real=True)
    if lo is None and hi is None:
        s_lo, s_hi = sp.Rational(-3), sp.Rational(3)
    elif hi is None:
        assert lo is not None
        s_lo, s_hi = lo, lo + 4
    elif lo is None:
        s_lo, s_hi = hi - 4, hi
    else:
        s_lo, s_hi = lo, hi
    if sample is not None:
        s_lo, s_hi = sp.Rational(sample[0]), sp.Rational(sample[1])
        if (lo is not None and s_lo < lo) or (hi is not None and s_hi > hi) or not s_lo < s_hi:
            raise ValueError(f"variable {name!r}: sample={sample!r} must be an interval inside ({lo}, {hi})")
    return Variable(sym, text, latex, lo, hi, s_lo, s_hi)


@dataclass(frozen=True)
class Step:
    r"""One step: ``before == after``, or equal up to a constant in ``up_to_constant_in``.

    ``description`` says what the step does, ``justification`` why it holds (the rule used), in
    words. With ``up_to_constant_in = (x,)`` the claim is that ``before - after`` does not depend
    on x (two log-densities in x with the same quadratic and linear terms: "completing the square").
    """

    description: str
    before: sp.Expr
    after: sp.Expr
    justification: str
    up_to_constant_in: tuple[sp.Symbol, ...] = ()
    display: tuple[str | None, str | None] | None = None
    """How the docs write the two sides in LaTeX (None: printed from the expression) where the
    expression is too long or hides the operation (an expectation); display only, the check always
    uses ``before`` and ``after``."""


@dataclass(frozen=True)
class Derivation:
    """A named derivation: its source, its assumptions, and its steps, in order."""

    name: str
    title: str
    topic: str
    source: str
    variables: tuple[Variable, ...]
    steps: tuple[Step, ...]
    constraints: tuple[sp.Basic, ...] = ()
    summary: str = ""
    definitions: tuple[tuple[str, str], ...] = ()
    """(LaTeX symbol, LaTeX definition) pairs, shown with the assumptions (e.g. ᾱ_t = α_t ᾱ_{t−1})."""
    abbreviations: tuple[tuple[sp.Expr, str, str], ...] = ()
    """(expression, text, LaTeX) triples: how the docs and ``--verbose`` write a sub-expression
    (e.g. ``alpha_t*abar_prev`` as ᾱ_t), substituted in order. Display only; checks use the expressions."""

    def for_display(self, expr: sp.Expr, latex: bool) -> tuple[sp.Expr, dict[sp.Symbol, str]]:
        """``expr`` with the abbreviations substituted, and the symbol names to print it with."""
        names = {v.symbol: (v.latex if latex else v.text) for v in self.variables}
        out = sp.sympify(expr)
        for k, (sub, text, tex) in enumerate(self.abbreviations):
            placeholder = sp.Symbol(f"_abbrev{k}")
            out = out.subs(sub, placeholder)
            names[placeholder] = tex if latex else text
        return out, names

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"derivation {self.name!r}: has no steps")
        declared = {v.symbol for v in self.variables}
        if len(declared) != len(self.variables):
            raise ValueError(f"derivation {self.name!r}: a variable is declared twice")
        for i, step in enumerate(self.steps, start=1):
            exprs: list[sp.Basic] = [sp.sympify(step.before), sp.sympify(step.after)]
            free = set().union(*(e.free_symbols for e in exprs), step.up_to_constant_in)
            unknown = free - declared
            if unknown:
                names = ", ".join(sorted(str(s) for s in unknown))
                raise ValueError(
                    f"derivation {self.name!r}, step {i}: symbols {names} are not declared variables"
                )
        for c in self.constraints:
            if not isinstance(c, sp.core.relational.Relational) or isinstance(c, (sp.Eq, sp.Ne)):
                raise ValueError(f"derivation {self.name!r}: constraint {c!r} must be a strict or weak inequality")
            unknown = c.free_symbols - declared
            if unknown:
                raise ValueError(f"derivation {self.name!r}: constraint {c} uses undeclared {unknown}")

    def assumptions_text(self) -> list[str]:
        """Every assumption as text: the variables' domains, then the extra constraints."""
        names = {v.symbol: sp.Symbol(v.text) for v in self.variables}
        return [v.domain_text() for v in self.variables] + [
            sp.sstr(c.xreplace(names)) for c in self.constraints
        ]


@dataclass(frozen=True)
class StepResult:
    """The verdict on one step: ``ok``, by which ``method``, and the ``detail`` behind it."""

    index: int  # 1-based
    step: Step
    ok: bool
    method: str
    detail: str

    @property
    def numeric(self) -> bool:
        """Whether the step was decided by the numeric fallback (sympy could not decide it)."""
        return self.method.startswith("numeric")

    def mark(self) -> str:
        return "✓" if self.ok else "✗"


@dataclass(frozen=True)
class DerivationResult:
    """Every step's verdict; ``ok`` iff every step checks."""

    derivation: Derivation
    steps: tuple[StepResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.steps)


def held(build: Callable[[], sp.Expr]) -> sp.Expr:
    """``build()`` with sympy's automatic evaluation off: the expression as the paper writes it.

    Without this, sympy would already do a step's algebra while building its left side (e.g.
    √α √ᾱ_{t−1} → √(α ᾱ_{t−1})), and the check would compare two identical trees.
    """
    with sp.evaluate(False):
        return build()


def with_step_replaced(
    derivation: Derivation,
    index: int,
    *,
    before: sp.Expr | None = None,
    after: sp.Expr | None = None,
) -> Derivation:
    """A copy of ``derivation`` whose step ``index`` (1-based) has a new ``before`` and/or ``after``."""
    if not 1 <= index <= len(derivation.steps):
        raise ValueError(f"index={index!r}: must be in 1..{len(derivation.steps)} for {derivation.name!r}")
    steps = list(derivation.steps)
    old = steps[index - 1]
    steps[index - 1] = dataclasses.replace(
        old,
        before=old.before if before is None else before,
        after=old.after if after is None else after,
    )
    return dataclasses.replace(derivation, steps=tuple(steps))


# --------------------------------------------------------------------------------------------------
# the symbolic check
# --------------------------------------------------------------------------------------------------


def _positive_substitution(variables: Sequence[Variable]) -> dict[sp.Symbol, sp.Expr]:
    r"""Map each bounded variable onto a fresh positive symbol, so that sympy knows its signs.

    :math:`(a, b) \ni x = a + (b - a)\,u/(1 + u)` with :math:`u > 0`, a bijection onto the domain,
    and :math:`(-\infty, b) \ni x = b - u`; the lower-bounded :math:`x > a` is :math:`a + u`.
    An identity that holds for every u > 0 therefore holds on the whole domain.
    """
    subs: dict[sp.Symbol, sp.Expr] = {}
    for v in variables:
        if v.low is None and v.high is None:
            continue
        if v.low is not None and v.high is None and v.low == 0:
            continue  # already a positive symbol
        u = sp.Dummy(f"u_{v.symbol.name}", positive=True)
        if v.low is not None and v.high is not None:
            subs[v.symbol] = v.low + (v.high - v.low) * u / (1 + u)
        elif v.high is not None:
            subs[v.symbol] = v.high - u
        else:
            assert v.low is not None
            subs[v.symbol] = v.low + u
    return subs


def _radicands_factored(expr: sp.Expr) -> sp.Expr:
    """Factor the base of every fractional power, so that sympy can take out square factors."""
    return expr.replace(
        lambda e: isinstance(e, sp.Pow) and e.exp.is_Rational and not e.exp.is_Integer,
        lambda e: sp.Pow(sp.factor(sp.cancel(e.base)), e.exp),
    )


def _is_zero(expr: sp.Expr) -> bool:
    return expr == 0


def _cancels(expr: sp.Expr, gens: Sequence[sp.Symbol]) -> bool:
    """Whether ``cancel`` takes ``expr`` to 0, coefficient by coefficient where it is a polynomial in ``gens``.

    A polynomial in the unbounded variables (data, noise, free log-densities) is zero iff every
    coefficient is; cancelling each coefficient on its own avoids one huge common denominator.
    """
    gens = [g for g in gens if expr.has(g)]
    if gens:
        try:
            poly = sp.Poly(expr, *gens)
        except sp.PolynomialError:
            poly = None
        if poly is not None and all(not c.has(*gens) for c in poly.coeffs()):
            return all(_is_zero(sp.cancel(sp.together(c))) for c in poly.coeffs())
    return _is_zero(sp.cancel(sp.together(expr)))


def _rational_part_zero(
    expr: sp.Expr, subs: dict[sp.Symbol, sp.Expr], gens: Sequence[sp.Symbol]
) -> str | None:
    """Prove a logarithm-free expression zero: ``cancel``, then the same under the domain map."""
    if _cancels(expr, gens):
        return "cancel"
    if subs:
        e = _radicands_factored(expr.xreplace(subs))
        if _cancels(sp.expand(e), gens):
            return "cancel under the domain assumptions"
    return None


def _log_part_zero(coeffs: dict[sp.Expr, sp.Expr], subs: dict[sp.Symbol, sp.Expr]) -> bool:
    r"""Prove :math:`\sum_k c_k \log a_k = 0` for rational :math:`c_k` and positive :math:`a_k`.

    With D the common denominator of the :math:`c_k`, the sum is :math:`\frac1D\log\prod_k a_k^{Dc_k}`,
    so it is 0 iff the product, a rational function, cancels to 1. Each :math:`a_k` must be provably
    positive (under the domain map), where the logarithm of a product is the sum of the logarithms.
    """
    if not all(c.is_Rational for c in coeffs.values()):
        return False
    den = sp.ilcm(*[c.q for c in coeffs.values()]) if coeffs else 1
    product = sp.Integer(1)
    for arg, c in coeffs.items():
        a = sp.factor(sp.cancel(arg.xreplace(subs)))
        if a.is_positive is not True:
            return False
        product *= a ** int(c * den)
    return _is_zero(sp.cancel(sp.together(product - 1)))


def _prove_zero(diff: sp.Expr, variables: Sequence[Variable], thorough: bool) -> str | None:
    """The name of the first sympy route that reduces ``diff`` to 0, or None.

    Logarithms are split off first: ``diff = R + sum_k c_k log(a_k)``; R is proved zero by
    ``cancel`` (``thorough``: then under the domain map of :func:`_positive_substitution`), the
    logarithms by :func:`_log_part_zero`. ``thorough`` adds ``simplify`` (and ``expand_trig`` where
    there are sines) on small expressions. The quick routes (``thorough=False``) run first; the
    thorough ones only on a step that the numeric points have not refuted (:func:`check_step`).
    """
    if _is_zero(diff):
        return "sympy: automatic evaluation"
    e = sp.expand(diff)
    if _is_zero(e):
        return "sympy: expand"
    subs = _positive_substitution(variables) if thorough else {}
    logs = sorted(e.atoms(sp.log), key=sp.default_sort_key)
    dummies = [sp.Dummy(f"L{k}") for k in range(len(logs))]
    e_lin = sp.expand(e.xreplace(dict(zip(logs, dummies))))
    coeffs = {lg.args[0]: sp.expand(e_lin.coeff(d)) for lg, d in zip(logs, dummies)}
    rest = e_lin.xreplace({d: 0 for d in dummies})
    linear = sp.expand(e_lin - rest - sum(c * d for c, d in zip(coeffs.values(), dummies))) == 0
    if linear and not any(c.has(*dummies) for c in coeffs.values()):
        gens = [v.symbol for v in variables if v.low is None and v.high is None]
        how = _rational_part_zero(rest, subs, gens)
        if how is not None and (not logs or _log_part_zero(coeffs, _positive_substitution(variables))):
            return f"sympy: {how}" + (", logarithms combined" if logs else "")
    if not thorough:
        return None
    trig = diff.has(sp.sin, sp.cos, sp.tan)
    if sp.count_ops(diff) <= (_SIMPLIFY_MAX_OPS_TRIG if trig else _SIMPLIFY_MAX_OPS):
        e = sp.simplify(diff)
        if _is_zero(e):
            return "sympy: simplify"
        if trig:
            e = sp.simplify(sp.expand_trig(diff))
            if _is_zero(e):
                return "sympy: expand_trig + simplify"
    return None


# --------------------------------------------------------------------------------------------------
# the numeric fallback
# --------------------------------------------------------------------------------------------------


def _random_in(rng: random.Random, low: sp.Rational, high: sp.Rational) -> mpmath.mpf:
    """A uniform draw from the open interval (low, high) with 200 random bits."""
    while True:
        frac = mpmath.mpf(rng.getrandbits(200)) / mpmath.mpf(2) ** 200
        if frac > 0:
            return mpmath.mpf(low.p) / low.q + (mpmath.mpf(high.p) / high.q - mpmath.mpf(low.p) / low.q) * frac


def _constraint_holds(rel: sp.Basic, fn: Callable[..., mpmath.mpf], point: Sequence[mpmath.mpf]) -> bool:
    g = fn(*point)
    if isinstance(rel, sp.StrictLessThan):
        return bool(g < 0)
    if isinstance(rel, sp.LessThan):
        return bool(g <= 0)
    if isinstance(rel, sp.StrictGreaterThan):
        return bool(g > 0)
    return bool(g >= 0)


def _sample_points(
    variables: Sequence[Variable], constraints: Sequence[sp.Basic], seed: str, count: int
) -> list[list[mpmath.mpf]]:
    rng = random.Random(seed)
    symbols = [v.symbol for v in variables]
    checks = [(c, sp.lambdify(symbols, c.lhs - c.rhs, modules="mpmath")) for c in constraints]
    points = []
    for _ in range(count):
        for _try in range(_MAX_TRIES):
            p = [_random_in(rng, v.sample_low, v.sample_high) for v in variables]
            if all(_constraint_holds(c, fn, p) for c, fn in checks):
                points.append(p)
                break
        else:
            raise RuntimeError(f"no point satisfies the constraints {list(constraints)} ({_MAX_TRIES} tries)")
    return points


def _numeric_check(
    before: sp.Expr, after: sp.Expr, variables: Sequence[Variable], constraints: Sequence[sp.Basic], seed: str
) -> tuple[bool, str]:
    symbols = [v.symbol for v in variables]
    terms = list(sp.Add.make_args(before)) + list(sp.Add.make_args(after))
    with mpmath.workdps(NUMERIC_DPS):
        points = _sample_points(variables, constraints, seed, NUMERIC_POINTS)
        f_b = sp.lambdify(symbols, before, modules="mpmath")
        f_a = sp.lambdify(symbols, after, modules="mpmath")
        f_t = sp.lambdify(symbols, terms, modules="mpmath")
        worst = mpmath.mpf(0)
        for p in points:
            b, a = mpmath.mpmathify(f_b(*p)), mpmath.mpmathify(f_a(*p))
            scale = max([abs(b), abs(a)] + [abs(mpmath.mpmathify(t)) for t in f_t(*p)])
            rel = mpmath.mpf(0) if scale == 0 else abs(b - a) / scale
            if not (mpmath.im(b) == 0 and mpmath.im(a) == 0) or not rel <= NUMERIC_RTOL:
                where = ", ".join(f"{v.text}={mpmath.nstr(x, 8)}" for v, x in zip(variables, p))
                return False, (
                    f"the sides differ at {where}: before={mpmath.nstr(b, 12)}, after={mpmath.nstr(a, 12)}, "
                    f"relative difference {mpmath.nstr(rel, 3)} > tolerance {mpmath.nstr(NUMERIC_RTOL, 1)}"
                )
            worst = max(worst, rel)
    return True, (
        f"sympy's routes (expand, cancel; simplify where small) did not reduce the difference to 0; equal at {NUMERIC_POINTS} random points at "
        f"{NUMERIC_DPS} digits (largest relative difference {mpmath.nstr(worst, 3)}, "
        f"tolerance {mpmath.nstr(NUMERIC_RTOL, 1)})"
    )


# --------------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def check_step(
    step: Step, variables: tuple[Variable, ...], constraints: tuple[sp.Basic, ...], seed: str
) -> tuple[bool, str, str]:
    """``(ok, method, detail)`` for one step (cached: a step is checked once per process)."""
    before, after = sp.sympify(step.before), sp.sympify(step.after)
    if step.up_to_constant_in:
        before = sp.Matrix([sp.diff(before, x) for x in step.up_to_constant_in])
        after = sp.Matrix([sp.diff(after, x) for x in step.up_to_constant_in])
        pairs = list(zip(before, after))
        suffix = " (the derivatives in " + ", ".join(
            next(v.text for v in variables if v.symbol == x) for x in step.up_to_constant_in
        ) + " agree: equal up to a constant)"
    else:
        pairs = [(before, after)]
        suffix = ""
    diffs = [b - a for b, a in pairs]
    # 1. the quick sympy routes
    methods = [_prove_zero(d, variables, thorough=False) for d in diffs]
    if all(m is not None for m in methods):
        return True, _joined(methods), "proved" + suffix
    # 2. the numeric points: a counterexample refutes the step
    details = []
    for k, (b, a) in enumerate(pairs):
        ok, detail = _numeric_check(b, a, variables, constraints, f"{seed}:{k}")
        if not ok:
            return False, "numeric counterexample", detail + suffix
        details.append(detail)
    # 3. the thorough sympy routes, on the parts the quick ones left
    methods = [m if m is not None else _prove_zero(d, variables, thorough=True) for m, d in zip(methods, diffs)]
    if all(m is not None for m in methods):
        return True, _joined(methods), "proved" + suffix
    # 4. sympy cannot decide: the numeric points decide, and the verdict says so
    return True, f"numeric, {NUMERIC_POINTS} points at {NUMERIC_DPS} digits", details[0] + suffix


def _joined(methods: Sequence[str | None]) -> str:
    unique = list(dict.fromkeys(m for m in methods if m is not None))
    return " / ".join(unique)


def check(derivation: Derivation) -> DerivationResult:
    """Check every step of ``derivation`` (see the module docstring for how)."""
    results = []
    for i, step in enumerate(derivation.steps, start=1):
        ok, method, detail = check_step(
            step, derivation.variables, derivation.constraints, f"{derivation.name}:{i}"
        )
        results.append(StepResult(i, step, ok, method, detail))
    return DerivationResult(derivation, tuple(results))

