r"""The forward-process posterior :math:`q(x_{t-1}\mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`.

Ho et al. 2020, eqs. 6–7 (coefficients form) and eqs. 9–11 (the ε-form of :math:`\tilde\mu_t`). By
Bayes and the Markov property, :math:`q(x_{t-1}\mid x_t,x_0) \propto q(x_t\mid x_{t-1})\,q(x_{t-1}\mid x_0)`;
the log of the right side is a quadratic in :math:`x_{t-1}`, and completing the square reads off
the mean and the variance.
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, held
from .gaussian import log_normal
from .notation import (
    ABBREVIATIONS,
    ABAR_PREV,
    ALPHA,
    EPS,
    STEP_DEFINITIONS,
    X0,
    XPREV,
    XT,
    abar,
    abar_prev,
    alpha,
    beta,
    beta_tilde,
    eps,
    mu_tilde,
    x0,
    xprev,
    xt,
)

__all__ = ["POSTERIOR_COMPLETING_THE_SQUARE", "POSTERIOR_EPS_FORM", "DERIVATIONS"]

_precision = alpha / beta + 1 / (1 - abar_prev)
_linear = sp.sqrt(alpha) / beta * xt + sp.sqrt(abar_prev) / (1 - abar_prev) * x0

POSTERIOR_COMPLETING_THE_SQUARE = Derivation(
    name="posterior",
    title="q(x_{t−1} | x_t, x_0) by completing the square (coefficients form)",
    topic="posterior",
    source="Ho et al. 2020, eqs. 6–7; Sohl-Dickstein et al. 2015, App. A",
    variables=(ALPHA, ABAR_PREV, X0, XT, XPREV),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS
    + (
        (r"\tilde\beta_t", r"\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t"),
        (
            r"\tilde\mu_t(x_t,x_0)",
            r"\frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t",
        ),
    ),
    summary=(
        r"All steps are log-densities in :math:`x_{t-1}`, equal up to terms free of :math:`x_{t-1}` "
        r"(the normalising constant), which is all a density in :math:`x_{t-1}` needs."
    ),
    steps=(
        Step(
            "Bayes with the Markov property: log q(x_{t−1}|x_t,x_0) = log q(x_t|x_{t−1}) + log q(x_{t−1}|x_0) + const; "
            "write out the squares",
            log_normal(xt, sp.sqrt(alpha) * xprev, beta) + log_normal(xprev, sp.sqrt(abar_prev) * x0, 1 - abar_prev),
            -sp.Rational(1, 2) * ((xt - sp.sqrt(alpha) * xprev) ** 2 / beta + (xprev - sp.sqrt(abar_prev) * x0) ** 2 / (1 - abar_prev)),
            "q(x_t|x_{t−1},x_0) = q(x_t|x_{t−1}) (Markov); q(x_t|x_0) is free of x_{t−1}",
            up_to_constant_in=(xprev,),
        ),
        Step(
            "collect powers of x_{t−1}: −½[(α_t/β_t + 1/(1−ᾱ_{t−1})) x²_{t−1} − 2(√α_t x_t/β_t + √ᾱ_{t−1} x_0/(1−ᾱ_{t−1})) x_{t−1}]",
            -sp.Rational(1, 2) * ((xt - sp.sqrt(alpha) * xprev) ** 2 / beta + (xprev - sp.sqrt(abar_prev) * x0) ** 2 / (1 - abar_prev)),
            -sp.Rational(1, 2) * (_precision * xprev**2 - 2 * _linear * xprev),
            "expand the squares; the x_t² and x_0² terms are constants in x_{t−1}",
            up_to_constant_in=(xprev,),
        ),
        Step(
            "the precision: α_t/β_t + 1/(1−ᾱ_{t−1}) = 1/β̃_t",
            _precision,
            1 / beta_tilde,
            "common denominator: α_t(1−ᾱ_{t−1}) + β_t = 1 − ᾱ_t",
        ),
        Step(
            "the mean: β̃_t (√α_t x_t/β_t + √ᾱ_{t−1} x_0/(1−ᾱ_{t−1})) = μ̃_t(x_t, x_0) (eq. 7)",
            beta_tilde * _linear,
            mu_tilde(xt, x0),
            "mean = (linear coefficient) / (precision)",
        ),
        Step(
            "complete the square: the quadratic is log N(x_{t−1}; μ̃_t, β̃_t) + const",
            -sp.Rational(1, 2) * (_precision * xprev**2 - 2 * _linear * xprev),
            log_normal(xprev, mu_tilde(xt, x0), beta_tilde),
            "−½(a x² − 2 b x) = −(x − b/a)²/(2/a) + const",
            up_to_constant_in=(xprev,),
        ),
        Step(
            "the posterior variance in the form 1/(α_t/β_t + 1/(1−ᾱ_{t−1}))",
            beta_tilde,
            beta * (1 - abar_prev) / (alpha * (1 - abar_prev) + beta),
            "the two forms of β̃_t agree",
        ),
    ),
)

_x0_of_eps = (xt - sp.sqrt(1 - abar) * eps) / sp.sqrt(abar)

POSTERIOR_EPS_FORM = Derivation(
    name="posterior-eps-form",
    title="the ε-form of the posterior mean μ̃_t",
    topic="posterior",
    source="Ho et al. 2020, eqs. 4, 9–11",
    variables=(ALPHA, ABAR_PREV, XT, EPS),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS,
    summary=(
        r"Reparameterising :math:`x_t(x_0,\epsilon) = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon` "
        r"(eq. 4) and substituting :math:`x_0 = (x_t - \sqrt{1-\bar\alpha_t}\epsilon)/\sqrt{\bar\alpha_t}` into eq. 7 gives "
        r":math:`\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon\big)` (eq. 11)."
    ),
    steps=(
        Step(
            "invert eq. 4: x_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t reproduces x_t",
            held(lambda: sp.sqrt(abar) * _x0_of_eps + sp.sqrt(1 - abar) * eps),
            xt,
            "substitution",
        ),
        Step(
            "the x_t coefficient of μ̃_t(x_t, x_0(x_t, ε)) is 1/√α_t",
            sp.diff(mu_tilde(xt, _x0_of_eps), xt),
            1 / sp.sqrt(alpha),
            "√ᾱ_{t−1}/√ᾱ_t = 1/√α_t; β_t + α_t(1−ᾱ_{t−1}) = 1 − ᾱ_t",
        ),
        Step(
            "the ε coefficient is −β_t/(√α_t √(1−ᾱ_t))",
            sp.diff(mu_tilde(xt, _x0_of_eps), eps),
            -beta / (sp.sqrt(alpha) * sp.sqrt(1 - abar)),
            "√(1−ᾱ_t)/(1−ᾱ_t) = 1/√(1−ᾱ_t)",
        ),
        Step(
            "together: μ̃_t(x_t, x_0(x_t, ε)) = (x_t − β_t ε/√(1−ᾱ_t))/√α_t (eq. 11)",
            mu_tilde(xt, _x0_of_eps),
            (xt - beta / sp.sqrt(1 - abar) * eps) / sp.sqrt(alpha),
            "μ̃_t is linear in (x_t, ε) with the two coefficients above",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (POSTERIOR_COMPLETING_THE_SQUARE, POSTERIOR_EPS_FORM)
