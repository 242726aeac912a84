r"""The forward process: :math:`q(x_t\mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t)I)`.

Ho et al. 2020, eq. 2 (the chain :math:`q(x_t\mid x_{t-1}) = \mathcal N(\sqrt{\alpha_t}x_{t-1}, \beta_t I)`)
and eq. 4 (its marginal), by induction on t. The base case is t = 1, where
:math:`\bar\alpha_1 = \alpha_1`. The induction step merges the Gaussian transition with the Gaussian
marginal of :math:`x_{t-1}`, in two ways: by moments (a linear map of a Gaussian plus independent
Gaussian noise) and by densities (the joint density factorises into the posterior in
:math:`x_{t-1}` times the claimed marginal, so integrating :math:`x_{t-1}` out leaves the marginal).
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
    mu_tilde,
    x0,
    xprev,
    xt,
)

__all__ = ["FORWARD_MARGINAL", "DERIVATIONS"]

_eps2 = sp.Symbol("eps_2", real=True)

FORWARD_MARGINAL = Derivation(
    name="forward-marginal",
    title="q(x_t | x_0) from the chain, by induction",
    topic="forward",
    source="Ho et al. 2020, eqs. 2 and 4; Sohl-Dickstein et al. 2015, §2.2",
    variables=(ALPHA, ABAR_PREV, X0, XT, XPREV, EPS),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS,
    summary=(
        r"Induction hypothesis: :math:`q(x_{t-1}\mid x_0) = \mathcal N(\sqrt{\bar\alpha_{t-1}}x_0, 1-\bar\alpha_{t-1})`. "
        r"Then :math:`x_t = \sqrt{\alpha_t}x_{t-1} + \sqrt{\beta_t}\epsilon_t` with independent "
        r":math:`\epsilon_t\sim\mathcal N(0,1)` has :math:`q(x_t\mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, 1-\bar\alpha_t)`."
    ),
    steps=(
        Step(
            "base case t = 1: ᾱ_1 = α_1 (ᾱ_0 = 1), so q(x_1|x_0) = N(√α_1 x_0, β_1) is the claim at t = 1",
            held(lambda: log_normal(xt, sp.sqrt(alpha) * x0, beta)),
            log_normal(xt, sp.sqrt(alpha * 1) * x0, 1 - alpha * 1),
            "ᾱ_1 = α_1 · ᾱ_0 with ᾱ_0 = 1 (the empty product)",
        ),
        Step(
            "mean: E[x_t | x_0] = √α_t E[x_{t−1} | x_0] = √ᾱ_t x_0",
            held(lambda: sp.sqrt(alpha) * (sp.sqrt(abar_prev) * x0)),
            sp.sqrt(abar) * x0,
            "linearity of expectation, E[ε_t] = 0; √α_t √ᾱ_{t−1} = √(α_t ᾱ_{t−1}) for positive factors",
            display=(None, r"\sqrt{\bar\alpha_t}\,x_0"),
        ),
        Step(
            "variance: Var[x_t | x_0] = α_t Var[x_{t−1} | x_0] + β_t = 1 − ᾱ_t",
            alpha * (1 - abar_prev) + beta,
            1 - abar,
            "the variance of a sum of independent terms is the sum of the variances",
        ),
        Step(
            "by densities: q(x_t|x_{t−1}) q(x_{t−1}|x_0) = q(x_{t−1}|x_t,x_0) · N(x_t; √ᾱ_t x_0, 1−ᾱ_t), exactly",
            log_normal(xt, sp.sqrt(alpha) * xprev, beta) + log_normal(xprev, sp.sqrt(abar_prev) * x0, 1 - abar_prev),
            log_normal(xprev, mu_tilde(xt, x0), beta_tilde) + log_normal(xt, sp.sqrt(abar) * x0, 1 - abar),
            "completing the square in x_{t−1} (the posterior mean and variance of Ho et al. eq. 7), "
            "the constants included; integrating x_{t−1} out, the posterior density integrates to 1 and "
            "leaves N(x_t; √ᾱ_t x_0, 1−ᾱ_t)",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (FORWARD_MARGINAL,)
