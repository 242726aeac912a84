r"""DDIM: the non-Markovian family keeps DDPM's marginals; η = 1 is DDPM; σ = 0 is an ODE's Euler step.

Song, Meng & Ermon 2021 (DDIM). The family :math:`q_\sigma` is defined by its reverse conditionals

.. math::

    q_\sigma(x_{t-1}\mid x_t,x_0) = \mathcal N\Big(\sqrt{\bar\alpha_{t-1}}x_0
        + \sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\,\frac{x_t-\sqrt{\bar\alpha_t}x_0}{\sqrt{1-\bar\alpha_t}},\ \sigma_t^2 I\Big)
    \quad\text{(eq. 7)}

(the paper's :math:`\alpha_t` is DDPM's :math:`\bar\alpha_t`; these derivations use DDPM's notation).
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, held, variable
from .notation import (
    ABBREVIATIONS,
    ABAR_PREV,
    ALPHA,
    EPS,
    STEP_DEFINITIONS,
    X0,
    XT,
    abar,
    abar_prev,
    alpha,
    beta,
    beta_tilde,
    eps,
    mu_tilde,
    x0,
    xt,
)

__all__ = ["DDIM_MARGINALS", "DDIM_ETA_ONE", "DDIM_ODE", "DERIVATIONS"]

_SIG2 = variable("sigma2", "σ_t²", r"\sigma_t^2", 0, 1)
_sig2 = _SIG2.symbol


def _ddim_coefficient(sig2: sp.Expr) -> sp.Expr:
    r"""The coefficient of :math:`x_t` in the mean of eq. 7: :math:`\sqrt{1-\bar\alpha_{t-1}-\sigma^2}/\sqrt{1-\bar\alpha_t}`."""
    return sp.sqrt(1 - abar_prev - sig2) / sp.sqrt(1 - abar)


def _ddim_mean(x_t: sp.Expr, x_0: sp.Expr, sig2: sp.Expr) -> sp.Expr:
    return sp.sqrt(abar_prev) * x_0 + _ddim_coefficient(sig2) * (x_t - sp.sqrt(abar) * x_0)


DDIM_MARGINALS = Derivation(
    name="ddim-marginals",
    title="q_σ(x_{t−1} | x_0) = N(√ᾱ_{t−1} x_0, (1−ᾱ_{t−1}) I) (marginal matching)",
    topic="ddim",
    source="Song et al. 2021, Lemma 1 and its proof (App. B), eq. 7; Bishop 2006, eq. 2.115",
    variables=(ALPHA, ABAR_PREV, _SIG2, X0, XT),
    constraints=(sp.StrictLessThan(_sig2, 1 - abar_prev),),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS,
    summary=(
        r"Induction downwards from t = T: if :math:`q_\sigma(x_t\mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}x_0, 1-\bar\alpha_t)` "
        r"and :math:`x_{t-1}\mid x_t` is Gaussian with mean :math:`Ax_t + b` and variance :math:`\sigma_t^2`, then "
        r":math:`x_{t-1}\mid x_0 \sim \mathcal N(A\sqrt{\bar\alpha_t}x_0 + b,\ \sigma_t^2 + A^2(1-\bar\alpha_t))` (Bishop eq. 2.115)."
    ),
    steps=(
        Step(
            "the mean of eq. 7 is affine in x_t: A x_t + b with A = √(1−ᾱ_{t−1}−σ_t²)/√(1−ᾱ_t)",
            _ddim_mean(xt, x0, _sig2),
            _ddim_coefficient(_sig2) * xt + (sp.sqrt(abar_prev) - _ddim_coefficient(_sig2) * sp.sqrt(abar)) * x0,
            "expand",
        ),
        Step(
            "marginal mean: A √ᾱ_t x_0 + b = √ᾱ_{t−1} x_0",
            held(lambda: _ddim_mean(sp.sqrt(abar) * x0, x0, _sig2)),
            sp.sqrt(abar_prev) * x0,
            "E[x_{t−1}|x_0] = E[E[x_{t−1}|x_t,x_0]|x_0], and E[x_t|x_0] = √ᾱ_t x_0",
        ),
        Step(
            "marginal variance: σ_t² + A²(1−ᾱ_t) = 1 − ᾱ_{t−1}",
            held(lambda: _sig2 + _ddim_coefficient(_sig2) ** 2 * (1 - abar)),
            1 - abar_prev,
            "law of total variance; needs σ_t² < 1 − ᾱ_{t−1} (the square root is real)",
        ),
    ),
)

_ETA = variable("eta", "η", r"\eta", 0, 1)
_eta = _ETA.symbol


def _sigma2_eta(eta: sp.Expr) -> sp.Expr:
    r""":math:`\sigma_t(\eta)^2 = \eta^2\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\Big(1-\frac{\bar\alpha_t}{\bar\alpha_{t-1}}\Big)` (eq. 16)."""
    return eta**2 * (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)


DDIM_ETA_ONE = Derivation(
    name="ddim-eta-one",
    title="σ_t(η = 1)² = β̃_t: DDIM at η = 1 is DDPM's posterior",
    topic="ddim",
    source="Song et al. 2021, eq. 16 and the text after it; Ho et al. 2020, eq. 7",
    variables=(ALPHA, ABAR_PREV, _ETA, X0, XT),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS,
    steps=(
        Step(
            "σ_t(1)² = (1−ᾱ_{t−1})/(1−ᾱ_t) · β_t = β̃_t",
            held(lambda: _sigma2_eta(1)),
            beta_tilde,
            "ᾱ_t/ᾱ_{t−1} = α_t = 1 − β_t",
        ),
        Step(
            "σ_t(η)² = η² β̃_t: η scales the standard deviation, σ_t = η √β̃_t",
            held(lambda: _sigma2_eta(_eta)),
            _eta**2 * beta_tilde,
            "the same algebra, with the factor η²",
        ),
        Step(
            "the direction's variance: 1 − ᾱ_{t−1} − β̃_t = α_t(1−ᾱ_{t−1})²/(1−ᾱ_t)",
            1 - abar_prev - beta_tilde,
            alpha * (1 - abar_prev) ** 2 / (1 - abar),
            "common denominator: (1−ᾱ_{t−1})(1 − ᾱ_t − β_t) = (1−ᾱ_{t−1}) α_t (1−ᾱ_{t−1})",
        ),
        Step(
            "the mean of eq. 7 with σ_t² = β̃_t is DDPM's posterior mean μ̃_t(x_t, x_0)",
            _ddim_mean(xt, x0, beta_tilde),
            mu_tilde(xt, x0),
            "√(α_t(1−ᾱ_{t−1})²/(1−ᾱ_t)) = √α_t(1−ᾱ_{t−1})/√(1−ᾱ_t), since 1 − ᾱ_{t−1} > 0",
        ),
    ),
)

# --------------------------------------------------------------------------------------------------
# the ODE
# --------------------------------------------------------------------------------------------------

_AB_T = variable("abar_t", "ᾱ_t", r"\bar\alpha_t", 0, 1)
_AB_S = variable("abar_s", "ᾱ_{t−Δt}", r"\bar\alpha_{t-\Delta t}", 0, 1)
_EPS_TH = variable("eps_theta", "ε_θ", r"\epsilon_\theta", None, None)
_ab_t, _ab_s, _eps_th = _AB_T.symbol, _AB_S.symbol, _EPS_TH.symbol


def _sigma_of(ab: sp.Expr) -> sp.Expr:
    r""":math:`\sigma(\bar\alpha) = \sqrt{1-\bar\alpha}/\sqrt{\bar\alpha}`, the noise-to-signal ratio (eq. 14)."""
    return sp.sqrt(1 - ab) / sp.sqrt(ab)


_x0_pred = (xt - sp.sqrt(1 - _ab_t) * _eps_th) / sp.sqrt(_ab_t)
_ddim_step = sp.sqrt(_ab_s) * _x0_pred + sp.sqrt(1 - _ab_s) * _eps_th  # eq. 12 with σ_t = 0

DDIM_ODE = Derivation(
    name="ddim-ode",
    title="deterministic DDIM (σ = 0) is an Euler step of dx̄ = ε_θ dσ",
    topic="ddim",
    source="Song et al. 2021, eqs. 12–14",
    variables=(_AB_T, _AB_S, XT, _EPS_TH),
    constraints=(sp.StrictGreaterThan(_ab_s, _ab_t),),
    summary=(
        r"With :math:`\sigma = \sqrt{1-\bar\alpha}/\sqrt{\bar\alpha}` and :math:`\bar x = x/\sqrt{\bar\alpha}`, "
        r"the σ = 0 update from :math:`\bar\alpha_t` to :math:`\bar\alpha_{t-\Delta t}` is "
        r":math:`\bar x(t-\Delta t) = \bar x(t) + (\sigma(t-\Delta t) - \sigma(t))\,\epsilon_\theta`, the Euler step of "
        r":math:`d\bar x = \epsilon_\theta(\bar x/\sqrt{\sigma^2+1})\,d\sigma` (eq. 14)."
    ),
    steps=(
        Step(
            "eq. 12 with σ_t = 0, divided by √ᾱ_{t−Δt}: x_{t−Δt}/√ᾱ_{t−Δt} = x_t/√ᾱ_t + (σ(ᾱ_{t−Δt}) − σ(ᾱ_t)) ε_θ (eq. 13)",
            _ddim_step / sp.sqrt(_ab_s),
            xt / sp.sqrt(_ab_t) + (_sigma_of(_ab_s) - _sigma_of(_ab_t)) * _eps_th,
            "expand; √(1−ᾱ)/√ᾱ = σ(ᾱ)",
        ),
        Step(
            "σ determines ᾱ: ᾱ = 1/(1 + σ²)",
            1 / (1 + _sigma_of(_ab_t) ** 2),
            _ab_t,
            "σ² = (1−ᾱ)/ᾱ",
        ),
        Step(
            "the model input: x_t = x̄(t)/√(σ(t)² + 1)",
            (xt / sp.sqrt(_ab_t)) / sp.sqrt(_sigma_of(_ab_t) ** 2 + 1),
            xt,
            "√(σ² + 1) = 1/√ᾱ",
        ),
        Step(
            "the Euler step: d x̄/dσ = ε_θ, so x̄(σ_{t−Δt}) = x̄(σ_t) + (σ_{t−Δt} − σ_t) ε_θ is eq. 12",
            xt / sp.sqrt(_ab_t) + sp.integrate(_eps_th, (sp.Symbol("s"), _sigma_of(_ab_t), _sigma_of(_ab_s))),
            _ddim_step / sp.sqrt(_ab_s),
            "ε_θ is held at its value at t over the step (the Euler rule)",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (DDIM_MARGINALS, DDIM_ETA_ONE, DDIM_ODE)
