r"""Parsing a formula over the fixed symbol vocabulary, and evaluating it exactly (mpmath) or in float64.

The vocabulary (every name a formula may use; anything else is refused with a ValueError that names
the argument and the unknown name):

==================  ==================================================================================
name                meaning (papers' 1-based t; ``idx`` is the 0-based array index of docs/conventions.md)
==================  ==================================================================================
``t``               the papers' timestep, 1 … T (``t = idx + 1``)
``idx``             the 0-based index of the step (``idx = t − 1``); 0 is the last sampling step
``t_prev``          1-based index of the previous *sampled* timestep: t − 1 on the full schedule,
                    :math:`\tau_{i-1}` on a subsequence; 0 is the data
``T``               number of training timesteps
``beta_t``          β of the step t → t_prev: β_t on the full schedule, the respaced
                    :math:`1-\bar\alpha_t/\bar\alpha_{t_\mathrm{prev}}` on a strided step
``alpha_t``         1 − ``beta_t``
``alpha_bar_t``     :math:`\bar\alpha_t`
``alpha_bar_prev``  :math:`\bar\alpha_{t_\mathrm{prev}}` (:math:`\bar\alpha_{t-1}`, or ᾱ at the previous
                    sampled timestep; 1 at the data)
``beta_tilde_t``    :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t_\mathrm{prev}}}{1-\bar\alpha_t}\beta_t`
``sigma_t``         DDIM quantities: σ_t(η) of DDIM eq. 16; ``lt_weight``: the reverse-process std
                    (evaluated at σ² = fl(β̃_t) and σ² = β_t)
``eta``             DDIM's η (DDIM quantities only)
``s``               the cosine schedule's offset (0.008)
``max_beta``        the cosine schedule's cap (0.999)
``beta(k)``         β_k of the schedule, any integer 1 ≤ k ≤ T (``beta(0)`` = 0)
``alpha(k)``        1 − β_k (``alpha(0)`` = 1)
``alpha_bar(k)``    :math:`\bar\alpha_k`, any integer 0 ≤ k ≤ T (``alpha_bar(0)`` = 1): write
                    ``alpha_bar(t - 1)`` for the literal :math:`\bar\alpha_{t-1}`
==================  ==================================================================================

For ``cosine_alpha_bar`` and ``cosine_beta``, ``alpha_bar_t``, ``alpha_bar_prev`` and ``alpha_bar(k)``
are the closed form :math:`f(k)/f(0)` of Nichol & Dhariwal 2021, eq. 17 (the quantity being defined),
while ``beta(k)``/``alpha(k)`` are the reference schedule's table.

Besides these, a formula may use sympy's numbers and functions: ``sqrt``, ``exp``, ``log``, ``cos``,
``sin``, ``tan``, ``pi``, ``Abs``, ``Min``, ``Max``, ``Piecewise`` (conditions over ``t``, ``idx``,
``t_prev``, ``T``), ``Product``/``Sum`` over a dummy index (``Product(alpha(k), (k, 1, t))``).
Decimal literals are read as the nearest double (``0.999`` is the double the reference uses).

Evaluation. :func:`evaluate_mp` computes the formula in mpmath at :data:`MP_DPS` digits from exact
inputs (the float64 β of the schedule are exact values, docs/conventions.md), so the value is the
formula's exact value for those β to ~55 digits, whatever the arrangement: rounding in the user's
arrangement is not what is judged. A square root or log of a negative number gives a complex value,
which the checker reports as not real.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mpmath
import sympy as sp
from sympy.parsing.sympy_parser import parse_expr, standard_transformations
from tokenize import TokenError

__all__ = [
    "MP_DPS",
    "SYMBOL_NAMES",
    "FUNCTION_NAMES",
    "SYMBOLS",
    "FUNCTIONS",
    "Tables",
    "parse_formula",
    "compile_mp",
    "evaluate_mp",
]

#: Working precision (decimal digits) of the exact evaluation.
MP_DPS = 60

_DOCS: dict[str, str] = {
    "t": "papers' 1-based timestep (t = idx + 1)",
    "idx": "0-based array index of the step (idx = t - 1)",
    "t_prev": "1-based index of the previous sampled timestep (0 = the data)",
    "T": "number of training timesteps",
    "beta_t": "beta of the step t -> t_prev (respaced on a strided step)",
    "alpha_t": "1 - beta_t",
    "alpha_bar_t": "alpha_bar at t",
    "alpha_bar_prev": "alpha_bar at t_prev (1 at the data)",
    "beta_tilde_t": "(1 - alpha_bar_prev)/(1 - alpha_bar_t) * beta_t",
    "sigma_t": "DDIM sigma_t(eta) (DDIM eq. 16); for lt_weight the reverse-process std",
    "eta": "DDIM eta",
    "s": "cosine schedule offset (0.008)",
    "max_beta": "cosine schedule cap (0.999)",
}

#: Every symbol a formula may use, with its meaning.
SYMBOL_NAMES: tuple[str, ...] = tuple(_DOCS)
#: Schedule lookups a formula may call with an integer argument.
FUNCTION_NAMES: tuple[str, ...] = ("beta", "alpha", "alpha_bar")

_POSITIVE = {"beta_t", "alpha_t", "alpha_bar_t", "alpha_bar_prev", "beta_tilde_t", "sigma_t", "s", "max_beta", "T", "t"}
SYMBOLS: dict[str, sp.Symbol] = {
    name: sp.Symbol(name, positive=True) if name in _POSITIVE else sp.Symbol(name, nonnegative=True) for name in SYMBOL_NAMES
}
FUNCTIONS: dict[str, type[sp.Function]] = {name: sp.Function(name) for name in FUNCTION_NAMES}

_ALLOWED_FUNCS: tuple[type, ...] = (
    sp.exp, sp.log, sp.cos, sp.sin, sp.tan, sp.Abs, sp.Min, sp.Max, sp.Piecewise,
)


def _vocabulary_text() -> str:
    return ", ".join(SYMBOL_NAMES) + "; functions " + ", ".join(f"{f}(k)" for f in FUNCTION_NAMES)


def parse_formula(expr: str, arg_name: str = "expr") -> sp.Expr:
    """Parse ``expr`` (sympy syntax) over the vocabulary; ValueError naming ``arg_name`` and the problem.

    Only the names of the module docstring are accepted; ``Product``/``Sum`` may bind a dummy index.
    The string is evaluated by sympy's parser (Python ``eval`` of the tokens): give it formulas, not
    untrusted input.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"{arg_name}={expr!r}: must be a non-empty formula string in sympy syntax")
    if "__" in expr or "lambda" in expr or ";" in expr:
        raise ValueError(f"{arg_name}={expr!r}: not a formula (dunder names, lambda and ';' are refused)")
    local: dict[str, Any] = {**SYMBOLS, **FUNCTIONS}
    for dummy in ("k", "j", "m"):
        local[dummy] = sp.Symbol(dummy, integer=True)
    try:
        parsed = parse_expr(expr, local_dict=local, transformations=standard_transformations)
    except (SyntaxError, TypeError, ValueError, NameError, AttributeError, TokenError) as exc:
        raise ValueError(f"{arg_name}={expr!r}: not a valid sympy expression ({type(exc).__name__}: {exc})") from None
    if not isinstance(parsed, sp.Expr):
        raise ValueError(f"{arg_name}={expr!r}: is not an expression (parsed as {type(parsed).__name__})")
    unknown = sorted(str(s) for s in parsed.free_symbols if str(s) not in SYMBOLS)
    if unknown:
        raise ValueError(f"{arg_name}={expr!r}: unknown symbol(s) {', '.join(unknown)}; the vocabulary is {_vocabulary_text()}")
    for f in parsed.atoms(sp.Function):
        name = type(f).__name__
        if name in FUNCTIONS or isinstance(f, _ALLOWED_FUNCS):
            continue
        if isinstance(f, sp.core.function.AppliedUndef) or not isinstance(f, _ALLOWED_FUNCS):
            raise ValueError(f"{arg_name}={expr!r}: unknown or unsupported function {name}(); "
                             f"use sqrt, exp, log, cos, sin, tan, Abs, Min, Max, Piecewise, Product, Sum, "
                             f"or {', '.join(FUNCTION_NAMES)}")
    return parsed




@dataclass(frozen=True)
class Tables:
    """Exact (mpf) schedule lookups for ``beta(k)``, ``alpha(k)``, ``alpha_bar(k)``, 1-based k, 0 ≤ k ≤ T."""

    beta: tuple[mpmath.mpf, ...]  # index 0 ↔ k = 0 (0), index k ↔ β_k
    alpha_bar: tuple[mpmath.mpf, ...]  # index 0 ↔ ᾱ_0 = 1
    alpha_bar_is_product: bool = True  # ᾱ_k = ∏_{j≤k} (1 − β_j) exactly (False for the cosine closed form)

    def lookup(self, name: str, k: Any) -> mpmath.mpf:
        kf = float(k) if not isinstance(k, mpmath.mpc) else math.nan
        if not (math.isfinite(kf) and kf == int(kf)):
            raise _PointError(f"{name}(k) needs an integer k, got k={k}")
        ki = int(kf)
        if not 0 <= ki < len(self.beta):
            raise _PointError(f"{name}(k) needs 0 <= k <= T = {len(self.beta) - 1}, got k={ki}")
        if name == "beta":
            return self.beta[ki]
        if name == "alpha":
            return 1 - self.beta[ki]
        return self.alpha_bar[ki]


class _PointError(ArithmeticError):
    """The formula is undefined at this point (an index out of range, a division by zero)."""


Env = Mapping[str, Any]
Compiled = Callable[[Env], Any]


def _const(value: Any) -> Compiled:
    return lambda env: value


def _number(e: sp.Expr) -> Any:
    if isinstance(e, sp.Integer):
        return mpmath.mpf(int(e))
    if isinstance(e, sp.Rational):
        return mpmath.mpf(int(e.p)) / int(e.q)
    if isinstance(e, sp.Float):
        return mpmath.mpf(float(e))  # the double nearest the literal, as the reference reads parameters
    if e is sp.pi:
        return mpmath.pi
    if e is sp.E:
        return mpmath.e
    if e is sp.S.Half:
        return mpmath.mpf(1) / 2
    raise ValueError(f"unsupported number {e}")


def _is_half(e: sp.Basic) -> bool:
    return isinstance(e, sp.Rational) and e == sp.Rational(1, 2)


def compile_mp(e: sp.Basic) -> Compiled:
    """Compile a parsed formula into a function of an environment (names → mpf, ``"__tables"`` → :class:`Tables`)."""
    if isinstance(e, sp.Symbol):
        name = e.name

        def sym(env: Env) -> Any:
            try:
                return env[name]
            except KeyError:
                raise _PointError(f"{name} is not defined for this quantity") from None
        return sym
    if e.is_Number or e in (sp.pi, sp.E):
        return _const(_number(e))  # type: ignore[arg-type]
    if e is sp.true:
        return _const(True)
    if e is sp.false:
        return _const(False)
    if isinstance(e, sp.Add):
        parts = [compile_mp(a) for a in e.args]

        def add(env: Env) -> Any:
            total = parts[0](env)
            for p in parts[1:]:
                total = total + p(env)
            return total
        return add
    if isinstance(e, sp.Mul):
        parts = [compile_mp(a) for a in e.args]

        def mul(env: Env) -> Any:
            total = parts[0](env)
            for p in parts[1:]:
                total = total * p(env)
            return total
        return mul
    if isinstance(e, sp.Pow):
        base = compile_mp(e.base)
        if _is_half(e.exp):
            return lambda env: mpmath.sqrt(base(env))
        if isinstance(e.exp, sp.Integer):
            n = int(e.exp)

            def ipow(env: Env) -> Any:
                b = base(env)
                if n < 0 and b == 0:
                    raise _PointError("division by zero")
                return b**n
            return ipow
        expo = compile_mp(e.exp)

        def pw(env: Env) -> Any:
            b, x = base(env), expo(env)
            if b == 0 and mpmath.re(x) < 0:
                raise _PointError("division by zero")
            return mpmath.power(b, x)
        return pw
    if isinstance(e, sp.Piecewise):
        branches = [(compile_mp(val), compile_mp(cond)) for val, cond in e.args]

        def piece(env: Env) -> Any:
            for val, cond in branches:
                if cond(env):
                    return val(env)
            raise _PointError("no Piecewise branch applies")
        return piece
    if isinstance(e, sp.core.relational.Relational):
        lhs, rhs = compile_mp(e.lhs), compile_mp(e.rhs)
        op = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
              "==": lambda a, b: a == b, "!=": lambda a, b: a != b}[e.rel_op]
        return lambda env: op(lhs(env), rhs(env))
    if isinstance(e, sp.And):
        conds = [compile_mp(a) for a in e.args]
        return lambda env: all(c(env) for c in conds)
    if isinstance(e, sp.Or):
        conds = [compile_mp(a) for a in e.args]
        return lambda env: any(c(env) for c in conds)
    if isinstance(e, sp.Not):
        inner = compile_mp(e.args[0])
        return lambda env: not inner(env)
    if isinstance(e, (sp.Product, sp.Sum)):
        body = compile_mp(e.function)
        (var, lo_e, hi_e), = e.limits
        lo, hi = compile_mp(lo_e), compile_mp(hi_e)
        is_product = isinstance(e, sp.Product)
        vname = var.name
        # ∏_{k=a}^{b} alpha(k) = ᾱ_b/ᾱ_{a−1} exactly where the ᾱ table is the product of (1 − β): O(1), not O(T)
        telescopes = is_product and e.function == FUNCTIONS["alpha"](var)

        def loop(env: Env) -> Any:
            a, b = lo(env), hi(env)
            if a != int(a) or b != int(b):
                raise _PointError(f"{'Product' if is_product else 'Sum'} limits must be integers, got {a}, {b}")
            tabs = env.get("__tables")
            if telescopes and isinstance(tabs, Tables) and tabs.alpha_bar_is_product and 1 <= a <= b:
                return tabs.lookup("alpha_bar", b) / tabs.lookup("alpha_bar", a - 1)
            acc = mpmath.mpf(1) if is_product else mpmath.mpf(0)
            inner = dict(env)
            for k in range(int(a), int(b) + 1):
                inner[vname] = mpmath.mpf(k)
                acc = acc * body(inner) if is_product else acc + body(inner)
            return acc
        return loop
    if isinstance(e, (sp.Function, sp.Min, sp.Max)):
        name = type(e).__name__
        args = [compile_mp(a) for a in e.args]
        if name in FUNCTIONS:
            return lambda env: env["__tables"].lookup(name, args[0](env))
        simple: dict[str, Callable[..., Any]] = {
            "exp": mpmath.exp, "cos": mpmath.cos, "sin": mpmath.sin, "tan": mpmath.tan, "Abs": abs,
        }
        if name in simple:
            fn = simple[name]
            return lambda env: fn(args[0](env))
        if name == "log":
            def log(env: Env) -> Any:
                x = args[0](env)
                if x == 0:
                    raise _PointError("log(0)")
                return mpmath.log(x) if len(args) == 1 else mpmath.log(x) / mpmath.log(args[1](env))
            return log
        if name in ("Min", "Max"):
            pick = min if name == "Min" else max

            def minmax(env: Env) -> Any:
                vals = [a(env) for a in args]
                if any(isinstance(v, mpmath.mpc) for v in vals):
                    raise _PointError(f"{name} of a complex value")
                return pick(vals)
            return minmax
    raise ValueError(f"cannot evaluate {e} (type {type(e).__name__})")


def evaluate_mp(compiled: Compiled, env: Env) -> Any:
    """Value of a compiled formula: an mpf, an mpc (not real), or None where it is undefined."""
    try:
        with mpmath.workdps(MP_DPS):
            value = compiled(env)
    except (_PointError, ZeroDivisionError) as exc:
        return _Undefined(str(exc) or "division by zero")
    if isinstance(value, mpmath.mpc) and abs(value.imag) <= mpmath.mpf(10) ** (-40) * max(abs(value.real), mpmath.mpf(1)):
        value = value.real
    return value


@dataclass(frozen=True)
class _Undefined:
    why: str

    def __str__(self) -> str:
        return f"undefined ({self.why})"


Undefined = _Undefined
