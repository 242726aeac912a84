r"""The papers' symbols, declared once with their domains (docs/conventions.md: 1-based t in the maths).

Per-step quantities are built from two free variables, :math:`\alpha_t \in (0,1)` and
:math:`\bar\alpha_{t-1} \in (0,1)`, with :math:`\beta_t = 1-\alpha_t` and
:math:`\bar\alpha_t = \alpha_t\bar\alpha_{t-1}` (Ho et al. 2020, §2). Writing them this way makes
:math:`0 < \bar\alpha_t < \bar\alpha_{t-1} < 1` hold by construction rather than by an extra assumption.
Data and noise elements are real.
"""

from __future__ import annotations

import sympy as sp

from .core import Variable, variable

__all__ = [
    "ALPHA",
    "ABAR_PREV",
    "X0",
    "XT",
    "XPREV",
    "EPS",
    "alpha",
    "abar_prev",
    "beta",
    "abar",
    "beta_tilde",
    "mu_tilde",
    "x0",
    "xt",
    "xprev",
    "eps",
    "STEP_DEFINITIONS",
    "ABBREVIATIONS",
]

ALPHA: Variable = variable("alpha_t", "α_t", r"\alpha_t", 0, 1)
ABAR_PREV: Variable = variable("abar_prev", "ᾱ_{t−1}", r"\bar\alpha_{t-1}", 0, 1)
X0: Variable = variable("x_0", "x_0", "x_0", None, None)
XT: Variable = variable("x_t", "x_t", "x_t", None, None)
XPREV: Variable = variable("x_prev", "x_{t−1}", "x_{t-1}", None, None)
EPS: Variable = variable("eps", "ε", r"\epsilon", None, None)

alpha: sp.Symbol = ALPHA.symbol
abar_prev: sp.Symbol = ABAR_PREV.symbol
x0: sp.Symbol = X0.symbol
xt: sp.Symbol = XT.symbol
xprev: sp.Symbol = XPREV.symbol
eps: sp.Symbol = EPS.symbol

beta: sp.Expr = 1 - alpha
r""":math:`\beta_t = 1 - \alpha_t`."""

abar: sp.Expr = alpha * abar_prev
r""":math:`\bar\alpha_t = \alpha_t\,\bar\alpha_{t-1}`."""

beta_tilde: sp.Expr = (1 - abar_prev) / (1 - abar) * beta
r""":math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t` (Ho et al. eq. 7)."""


def mu_tilde(x_t: sp.Expr, x_0: sp.Expr) -> sp.Expr:
    r""":math:`\tilde\mu_t(x_t,x_0) = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t` (Ho et al. eq. 7)."""
    return sp.sqrt(abar_prev) * beta / (1 - abar) * x_0 + sp.sqrt(alpha) * (1 - abar_prev) / (1 - abar) * x_t


STEP_DEFINITIONS: tuple[tuple[str, str], ...] = (
    (r"\beta_t", r"1 - \alpha_t"),
    (r"\bar\alpha_t", r"\alpha_t\,\bar\alpha_{t-1}"),
)

ABBREVIATIONS: tuple[tuple[sp.Expr, str, str], ...] = (
    (abar, "ᾱ_t", r"\bar\alpha_t"),
    (beta, "β_t", r"\beta_t"),
)
"""How the docs write :math:`\alpha_t\bar\alpha_{t-1}` and :math:`1-\alpha_t`."""
