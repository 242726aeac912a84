r"""The variational bound: the Gaussian KL, the :math:`L_t` weight, and :math:`L = L_T + \sum L_{t-1} + L_0`.

* Closed-form KL of two Gaussians, from :math:`\mathrm{KL}(q\|p) = \mathbb E_q[\log q - \log p]` with
  the Gaussian moments (Ho et al. 2020, eq. 5 uses it "in closed form"; the formula is standard).
* The :math:`L_{t-1}` weight :math:`\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}` of the
  ε-parameterisation (Ho et al. eqs. 8 and 12).
* The decomposition of the negative ELBO (Ho et al. eq. 5, derived in their App. A after
  Sohl-Dickstein et al. 2015, App. B), term by term as log-ratio identities, for T = 3 with the
  actual Gaussian forward process and an arbitrary reverse process.
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, variable
from .gaussian import gaussian_expectation, log_normal
from .notation import ABAR_PREV, ABBREVIATIONS, ALPHA, EPS, STEP_DEFINITIONS, XT, abar, alpha, beta, eps, xt

__all__ = ["GAUSSIAN_KL", "LT_WEIGHT", "VLB_DECOMPOSITION", "DERIVATIONS"]

# --------------------------------------------------------------------------------------------------
# KL of two Gaussians
# --------------------------------------------------------------------------------------------------

_X = variable("x", "x", "x", None, None)
_M1 = variable("mu_1", "μ_1", r"\mu_1", None, None)
_M2 = variable("mu_2", "μ_2", r"\mu_2", None, None)
_V1 = variable("v_1", "σ_1²", r"\sigma_1^2", 0, None)
_V2 = variable("v_2", "σ_2²", r"\sigma_2^2", 0, None)
_x, _m1, _m2, _v1, _v2 = (v.symbol for v in (_X, _M1, _M2, _V1, _V2))

_kl_closed = sp.log(_v2 / _v1) / 2 + (_v1 + (_m1 - _m2) ** 2) / (2 * _v2) - sp.Rational(1, 2)

GAUSSIAN_KL = Derivation(
    name="gaussian-kl",
    title="KL(N(μ_1, σ_1²) ‖ N(μ_2, σ_2²)) in closed form",
    topic="likelihood",
    source="Ho et al. 2020, eq. 5 (\"closed form expressions\"); the standard Gaussian KL",
    variables=(_X, _M1, _M2, _V1, _V2),
    summary=(
        r":math:`\mathrm{KL} = \mathbb E_{x\sim\mathcal N(\mu_1,\sigma_1^2)}[\log\mathcal N(x;\mu_1,\sigma_1^2) - \log\mathcal N(x;\mu_2,\sigma_2^2)]`; "
        r"the expectation of the quadratic in x uses :math:`\mathbb E[x] = \mu_1`, :math:`\mathbb E[x^2] = \mu_1^2 + \sigma_1^2`."
    ),
    steps=(
        Step(
            "E_q[(x − μ_1)²] = σ_1²",
            gaussian_expectation((_x - _m1) ** 2, _x, _m1, _v1),
            _v1,
            "Gaussian moments",
            display=(r"\mathbb E_{x\sim\mathcal N(\mu_1,\sigma_1^2)}\big[(x-\mu_1)^2\big]", None),
        ),
        Step(
            "E_q[(x − μ_2)²] = σ_1² + (μ_1 − μ_2)²",
            gaussian_expectation((_x - _m2) ** 2, _x, _m1, _v1),
            _v1 + (_m1 - _m2) ** 2,
            "Gaussian moments (bias–variance)",
            display=(r"\mathbb E_{x\sim\mathcal N(\mu_1,\sigma_1^2)}\big[(x-\mu_2)^2\big]", None),
        ),
        Step(
            "KL = E_q[log q − log p] = ½ log(σ_2²/σ_1²) + (σ_1² + (μ_1 − μ_2)²)/(2σ_2²) − ½",
            gaussian_expectation(log_normal(_x, _m1, _v1) - log_normal(_x, _m2, _v2), _x, _m1, _v1),
            _kl_closed,
            "the log-densities written out; the two expectations above",
            display=(
                r"\mathbb E_{x\sim\mathcal N(\mu_1,\sigma_1^2)}\big[\log\mathcal N(x;\mu_1,\sigma_1^2) - \log\mathcal N(x;\mu_2,\sigma_2^2)\big]",
                None,
            ),
        ),
        Step(
            "equal means: KL = ½(σ_1²/σ_2² − 1 − log(σ_1²/σ_2²))",
            _kl_closed.subs(_m2, _m1),
            (_v1 / _v2 - 1 - sp.log(_v1 / _v2)) / 2,
            "μ_1 = μ_2",
        ),
    ),
)

# --------------------------------------------------------------------------------------------------
# the L_t weight
# --------------------------------------------------------------------------------------------------

_SIG2 = variable("sigma2", "σ_t²", r"\sigma_t^2", 0, None)
_EPS_TH = variable("eps_theta", "ε_θ", r"\epsilon_\theta", None, None)
_MU_Q = variable("mu_q", "μ̃_t", r"\tilde\mu_t", None, None)
_MU_P = variable("mu_p", "μ_θ", r"\mu_\theta", None, None)
_BT = variable("beta_tilde", "β̃_t", r"\tilde\beta_t", 0, None)
_sig2, _eps_th, _mu_q, _mu_p, _bt = (v.symbol for v in (_SIG2, _EPS_TH, _MU_Q, _MU_P, _BT))


def _mu_eps(e: sp.Expr) -> sp.Expr:
    return (xt - beta / sp.sqrt(1 - abar) * e) / sp.sqrt(alpha)


LT_WEIGHT = Derivation(
    name="lt-weight",
    title="L_{t−1} = β_t²/(2σ_t² α_t (1−ᾱ_t)) ‖ε − ε_θ‖² + C",
    topic="likelihood",
    source="Ho et al. 2020, eqs. 8, 11, 12",
    variables=(ALPHA, ABAR_PREV, XT, EPS, _EPS_TH, _SIG2, _MU_Q, _MU_P, _BT),
    abbreviations=ABBREVIATIONS,
    definitions=STEP_DEFINITIONS,
    summary=(
        r":math:`L_{t-1} = \mathrm{KL}(\mathcal N(\tilde\mu_t,\tilde\beta_t)\,\|\,\mathcal N(\mu_\theta,\sigma_t^2))` "
        r"with the variance :math:`\sigma_t^2` fixed; both means in the ε-form (eq. 11)."
    ),
    steps=(
        Step(
            "KL with fixed variances: (μ̃_t − μ_θ)²/(2σ_t²) + C, C free of θ (eq. 8)",
            _kl_closed.xreplace({_m1: _mu_q, _m2: _mu_p, _v1: _bt, _v2: _sig2}),
            (_mu_q - _mu_p) ** 2 / (2 * _sig2),
            "the closed-form KL (derivation gaussian-kl); β̃_t and σ_t² do not depend on θ",
            up_to_constant_in=(_mu_p,),
        ),
        Step(
            "μ̃_t − μ_θ with both means in the ε-form: β_t (ε_θ − ε)/(√α_t √(1−ᾱ_t))",
            _mu_eps(eps) - _mu_eps(_eps_th),
            beta * (_eps_th - eps) / (sp.sqrt(alpha) * sp.sqrt(1 - abar)),
            "eq. 11 for μ̃_t, eq. 11 with ε_θ for μ_θ",
        ),
        Step(
            "L_{t−1} − C = β_t²/(2σ_t² α_t (1−ᾱ_t)) (ε − ε_θ)² (eq. 12)",
            (_mu_eps(eps) - _mu_eps(_eps_th)) ** 2 / (2 * _sig2),
            beta**2 / (2 * _sig2 * alpha * (1 - abar)) * (eps - _eps_th) ** 2,
            "square of the previous step",
        ),
    ),
)

# --------------------------------------------------------------------------------------------------
# VLB decomposition, T = 3
# --------------------------------------------------------------------------------------------------

_A = tuple(variable(f"alpha_{k}", f"α_{k}", rf"\alpha_{k}", 0, 1) for k in (1, 2, 3))
_XS = tuple(variable(f"x_{k}", f"x_{k}", f"x_{k}", None, None) for k in (0, 1, 2, 3))
_LP = (
    variable("logp_3", "log p(x_3)", r"\log p(x_3)", None, None),
    variable("logp_0", "log p_θ(x_0|x_1)", r"\log p_\theta(x_0\mid x_1)", None, None),
    variable("logp_1", "log p_θ(x_1|x_2)", r"\log p_\theta(x_1\mid x_2)", None, None),
    variable("logp_2", "log p_θ(x_2|x_3)", r"\log p_\theta(x_2\mid x_3)", None, None),
)
_a = [v.symbol for v in _A]
_xs = [v.symbol for v in _XS]
_lp_T, _lp_0, _lp_1, _lp_2 = (v.symbol for v in _LP)
_lp_rev = {1: _lp_0, 2: _lp_1, 3: _lp_2}  # t -> log p_θ(x_{t−1} | x_t)


def _abar(t: int) -> sp.Expr:
    return sp.Mul(*_a[:t])


def _log_q_step(t: int) -> sp.Expr:
    """log q(x_t | x_{t−1})."""
    return log_normal(_xs[t], sp.sqrt(_a[t - 1]) * _xs[t - 1], 1 - _a[t - 1])


def _log_q_marg(t: int) -> sp.Expr:
    """log q(x_t | x_0)."""
    return log_normal(_xs[t], sp.sqrt(_abar(t)) * _xs[0], 1 - _abar(t))


def _log_q_post(t: int) -> sp.Expr:
    """log q(x_{t−1} | x_t, x_0), t >= 2 (Ho et al. eq. 7)."""
    ab, abp, a = _abar(t), _abar(t - 1), _a[t - 1]
    mean = sp.sqrt(abp) * (1 - a) / (1 - ab) * _xs[0] + sp.sqrt(a) * (1 - abp) / (1 - ab) * _xs[t]
    return log_normal(_xs[t - 1], mean, (1 - abp) / (1 - ab) * (1 - a))


_T = 3
_neg_elbo = -(_lp_T + sum(_lp_rev[t] for t in range(1, _T + 1))) + sum(_log_q_step(t) for t in range(1, _T + 1))
_bayes = _log_q_step(1) + sum(_log_q_post(t) + _log_q_marg(t) - _log_q_marg(t - 1) for t in range(2, _T + 1))
_telescoped = _log_q_step(1) + sum(_log_q_post(t) for t in range(2, _T + 1)) + _log_q_marg(_T) - _log_q_marg(1)
_L_T = _log_q_marg(_T) - _lp_T
_L_mid = sum(_log_q_post(t) - _lp_rev[t] for t in range(2, _T + 1))
_L_0 = -_lp_rev[1]

VLB_DECOMPOSITION = Derivation(
    name="vlb-decomposition",
    title="−log p_θ(x_{0:T})/q(x_{1:T}|x_0) = L_T + Σ L_{t−1} + L_0, term by term (T = 3)",
    topic="likelihood",
    source="Ho et al. 2020, eq. 5 and App. A; Sohl-Dickstein et al. 2015, App. B",
    variables=_A + _XS + _LP,
    definitions=((r"\bar\alpha_t", r"\alpha_1\cdots\alpha_t"),),
    summary=(
        r"The integrand of the bound, :math:`\log\frac{q(x_{1:T}\mid x_0)}{p_\theta(x_{0:T})}`, at one point "
        r":math:`(x_0,\dots,x_3)`: the forward process is the real Gaussian chain, the reverse process is "
        r"arbitrary (its log-densities are free variables). Taking :math:`\mathbb E_q` of the last line "
        r"gives :math:`L = L_T + \sum_{t>1} L_{t-1} + L_0` with "
        r":math:`L_T = \mathrm{KL}(q(x_T\mid x_0)\|p(x_T))`, "
        r":math:`L_{t-1} = \mathrm{KL}(q(x_{t-1}\mid x_t,x_0)\|p_\theta(x_{t-1}\mid x_t))`, "
        r":math:`L_0 = -\log p_\theta(x_0\mid x_1)`."
    ),
    steps=(
        Step(
            "Bayes for t ≥ 2: log q(x_t|x_{t−1}) = log q(x_{t−1}|x_t,x_0) + log q(x_t|x_0) − log q(x_{t−1}|x_0)",
            _neg_elbo,
            -(_lp_T + sum(_lp_rev[t] for t in range(1, _T + 1))) + _bayes,
            "q(x_t|x_{t−1}) = q(x_t|x_{t−1},x_0) (Markov), then Bayes; checked with the Gaussian "
            "densities, constants included",
            display=(
                r"\sum_{t=1}^{3}\log q(x_t\mid x_{t-1}) - \log p_\theta(x_{0:3})",
                r"\log q(x_1\mid x_0) + \sum_{t=2}^{3}\big[\log q(x_{t-1}\mid x_t,x_0) + \log q(x_t\mid x_0) - \log q(x_{t-1}\mid x_0)\big] - \log p_\theta(x_{0:3})",
            ),
        ),
        Step(
            "telescope: Σ_{t=2}^{T} [log q(x_t|x_0) − log q(x_{t−1}|x_0)] = log q(x_T|x_0) − log q(x_1|x_0)",
            _bayes,
            _telescoped,
            "the sum telescopes",
            display=(
                r"\log q(x_1\mid x_0) + \sum_{t=2}^{3}\big[\log q(x_{t-1}\mid x_t,x_0) + \log q(x_t\mid x_0) - \log q(x_{t-1}\mid x_0)\big]",
                r"\log q(x_1\mid x_0) + \sum_{t=2}^{3}\log q(x_{t-1}\mid x_t,x_0) + \log q(x_3\mid x_0) - \log q(x_1\mid x_0)",
            ),
        ),
        Step(
            "the first transition log q(x_1|x_0) and the telescoped −log q(x_1|x_0) cancel",
            _telescoped,
            sum(_log_q_post(t) for t in range(2, _T + 1)) + _log_q_marg(_T),
            "they are the same density: ᾱ_1 = α_1",
            display=(
                r"\log q(x_1\mid x_0) + \sum_{t=2}^{3}\log q(x_{t-1}\mid x_t,x_0) + \log q(x_3\mid x_0) - \log q(x_1\mid x_0)",
                r"\sum_{t=2}^{3}\log q(x_{t-1}\mid x_t,x_0) + \log q(x_3\mid x_0)",
            ),
        ),
        Step(
            "regroup into L_T + Σ_{t>1} L_{t−1} + L_0 (eq. 5)",
            -(_lp_T + sum(_lp_rev[t] for t in range(1, _T + 1))) + sum(_log_q_post(t) for t in range(2, _T + 1)) + _log_q_marg(_T),
            _L_T + _L_mid + _L_0,
            "rearranging terms",
            display=(
                r"\sum_{t=2}^{3}\log q(x_{t-1}\mid x_t,x_0) + \log q(x_3\mid x_0) - \log p(x_3) - \sum_{t=1}^{3}\log p_\theta(x_{t-1}\mid x_t)",
                r"\underbrace{\log\frac{q(x_3\mid x_0)}{p(x_3)}}_{L_T} + \sum_{t=2}^{3}\underbrace{\log\frac{q(x_{t-1}\mid x_t,x_0)}{p_\theta(x_{t-1}\mid x_t)}}_{L_{t-1}} \underbrace{- \log p_\theta(x_0\mid x_1)}_{L_0}",
            ),
        ),
        Step(
            "end to end: log q(x_{1:T}|x_0) − log p_θ(x_{0:T}) = L_T + Σ L_{t−1} + L_0 pointwise",
            _neg_elbo,
            _L_T + _L_mid + _L_0,
            "the steps above",
            display=(
                r"\log q(x_{1:3}\mid x_0) - \log p_\theta(x_{0:3})",
                r"L_T + \sum_{t=2}^{3} L_{t-1} + L_0",
            ),
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (GAUSSIAN_KL, LT_WEIGHT, VLB_DECOMPOSITION)
