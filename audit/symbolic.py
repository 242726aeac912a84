r"""The symbolic half of the checker: is ``user − reference`` identically 0?

Every vocabulary symbol is rewritten in a few independent base symbols, each with its domain:

* step, DDIM and L_t quantities: :math:`\beta` (``beta_t``) and :math:`a` (``alpha_bar_prev``), both in
  (0, 1); then :math:`\alpha_t = 1-\beta`, :math:`\bar\alpha_t = a(1-\beta)`,
  :math:`\tilde\beta_t = (1-a)\beta/(1-a(1-\beta))`; DDIM's :math:`\sigma_t = \eta\sqrt{\tilde\beta_t}`
  with η ∈ [0, 1]; the L_t weight's σ_t stays free (> 0). On a strided step β is the respaced β′, so
  one identity covers every (t, t_prev) pair.
* cosine quantities: t, T, s with :math:`\bar\alpha(k) = f(k)/f(0)`,
  :math:`f(k) = \cos^2\big(\frac{k/T+s}{1+s}\frac{\pi}{2}\big)`.

Decision: the difference is first evaluated at points of the domain at 50 digits (t = 2, t = 1 with
ᾱ_0 = 1, then random); a value
above 1e-30 there is a witness that the forms differ (verdict False). Otherwise sympy's ``simplify``
is asked; 0 proves equality (True). If it cannot, or a symbol is not expressible in the base (an
index other than t and t_prev, a Piecewise rule over t), the verdict is None (undecided) and the
numerical check alone decides.
"""

from __future__ import annotations

import random

import sympy as sp

from .formula import FUNCTIONS, SYMBOLS
from .quantities import Quantity

__all__ = ["symbolic_verdict", "to_base"]

_S = SYMBOLS
_B, _A, _ETA, _SIG = _S["beta_t"], _S["alpha_bar_prev"], _S["eta"], _S["sigma_t"]
_t, _T, _s = _S["t"], _S["T"], _S["s"]


def _cos_f(k: sp.Expr) -> sp.Expr:
    return sp.cos((k / _T + _s) / (1 + _s) * sp.pi / 2) ** 2


def to_base(e: sp.Expr, q: Quantity) -> sp.Expr:
    """Rewrite ``e`` in the base symbols of ``q``'s kind (see the module docstring)."""
    ab, al, be = FUNCTIONS["alpha_bar"], FUNCTIONS["alpha"], FUNCTIONS["beta"]
    e = e.subs(_S["idx"], _t - 1)
    if q.cosine_only:
        f0 = _cos_f(sp.Integer(0))
        e = e.replace(ab, lambda k: _cos_f(k) / f0)
        return e.subs({_S["alpha_bar_t"]: _cos_f(_t) / f0, _S["alpha_bar_prev"]: _cos_f(_t - 1) / f0,
                       _S["t_prev"]: _t - 1})
    ab_t = _A * (1 - _B)
    consecutive = q.kind != "ddim"

    def ab_at(k: sp.Expr) -> sp.Expr:
        if sp.simplify(k - _t) == 0:
            return ab_t
        if sp.simplify(k - _S["t_prev"]) == 0 or (consecutive and sp.simplify(k - (_t - 1)) == 0):
            return _A
        return ab(k)

    e = e.replace(ab, ab_at)
    if consecutive:
        e = e.replace(be, lambda k: _B if sp.simplify(k - _t) == 0 else be(k))
        e = e.replace(al, lambda k: 1 - _B if sp.simplify(k - _t) == 0 else al(k))
        e = e.subs(_S["t_prev"], _t - 1)
    bt = (1 - _A) * _B / (1 - ab_t)
    subs: dict[sp.Symbol, sp.Expr] = {_S["alpha_t"]: 1 - _B, _S["alpha_bar_t"]: ab_t, _S["beta_tilde_t"]: bt}
    if q.kind == "ddim":
        subs[_SIG] = _ETA * sp.sqrt(bt)
    return e.subs(subs)


def _domain_point(rng: random.Random) -> dict[sp.Symbol, sp.Expr]:
    return {
        _B: sp.Rational(rng.randint(1, 499), 1000),
        _A: sp.Rational(rng.randint(50, 950), 1000),
        _ETA: sp.Rational(rng.randint(1, 100), 100),
        _SIG: sp.Rational(rng.randint(1, 300), 1000),
        _t: sp.Integer(rng.randint(3, 900)),
        _T: sp.Integer(1000),
        _s: sp.Rational(8, 1000),
        _S["max_beta"]: sp.Rational(999, 1000),
    }


def symbolic_verdict(user: sp.Expr, q: Quantity, *, points: int = 6, seed: int = 0) -> tuple[bool | None, str]:
    """(True, how) if user ≡ reference, (False, witness) if they differ, (None, why) if undecided."""
    ref = sp.parse_expr(q.reference_form, local_dict={**SYMBOLS, **FUNCTIONS})
    try:
        diff = to_base(user, q) - to_base(ref, q)
    except (TypeError, ValueError, AttributeError) as exc:  # pragma: no cover - sympy internals
        return None, f"sympy could not rewrite the formula ({exc})"
    if diff.atoms(sp.core.function.AppliedUndef):
        return None, "the formula uses the schedule at an index the symbolic model does not relate to t (decided numerically)"
    allowed = {_B, _A, _ETA, _SIG, _t, _T, _s, _S["max_beta"]}
    extra = diff.free_symbols - allowed
    if extra:
        return None, f"symbols {sorted(map(str, extra))} have no symbolic value for {q.name} (decided numerically)"
    rng = random.Random(seed)
    probes = [_domain_point(rng) for _ in range(points)]
    # the first steps, where index rules (Piecewise over t) act: t = 2, and t = 1 with ᾱ_0 = 1
    probes[0][_t] = sp.Integer(2)
    if not q.cosine_only:
        probes[1][_t] = sp.Integer(1)
        probes[1][_A] = sp.Integer(1)
    for at in probes:
        try:
            val = sp.N(diff.subs(at), 50)
        except (TypeError, ValueError):  # pragma: no cover
            continue
        if val.has(sp.nan, sp.zoo, sp.oo):
            continue
        if abs(complex(val)) > 1e-30:
            where = ", ".join(f"{k}={v}" for k, v in sorted(at.items(), key=lambda kv: str(kv[0])) if k in diff.free_symbols)
            return False, f"user - reference = {complex(val).real:.6g} at {where}"
    try:
        simplified = sp.simplify(diff)
    except (TypeError, ValueError, RecursionError):  # pragma: no cover
        simplified = diff
    if simplified == 0:
        domain = "t, T, s > 0" if q.cosine_only else "0 < beta_t, alpha_bar_prev < 1"
        return True, f"simplify(user - reference) == 0 under {domain}"
    return None, f"sympy could not simplify the difference to 0; it vanishes at {points} random points to 30 digits"
