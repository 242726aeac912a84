r"""Guidance: classifier guidance as a mean shift, classifier-free guidance as a scale on ε.

* Dhariwal & Nichol 2021, §4.1 (eqs. 2–10): the conditional reverse step
  :math:`p_\theta(x_t\mid x_{t+1})\,p_\phi(y\mid x_t)` with :math:`\log p_\phi(y\mid x_t)` expanded to
  first order around the reverse mean μ is again Gaussian, with the mean shifted by :math:`\Sigma g`,
  :math:`g = \nabla_{x_t}\log p_\phi(y\mid x_t)|_{x_t=\mu}`; with a gradient scale s (their Algorithm 1) by
  :math:`s\Sigma g`. §4.2 (eqs. 11–14): the same through the score, :math:`\hat\epsilon = \epsilon_\theta - \sqrt{1-\bar\alpha_t}\,g`.
* Ho & Salimans 2022, eq. 6: :math:`\tilde\epsilon = (1+w)\epsilon(x,c) - w\,\epsilon(x)`, and its score form
  through the implicit classifier :math:`p^i(c\mid x) \propto p(x\mid c)/p(x)`.

One element of :math:`x_t` (isotropic Σ); the gradient g and the model outputs are free variables.
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, variable
from .gaussian import log_normal

__all__ = ["CLASSIFIER_GUIDANCE", "CLASSIFIER_FREE_GUIDANCE", "DERIVATIONS"]

_X = variable("x", "x_t", "x_t", None, None)
_MU = variable("mu", "μ", r"\mu", None, None)
_SIG = variable("Sigma", "Σ", r"\Sigma", 0, None)
_G = variable("g", "g", "g", None, None)
_F0 = variable("f_mu", "log p_φ(y|μ)", r"\log p_\phi(y\mid\mu)", None, None)
_SC = variable("s", "s", "s", 0, None)
_AB = variable("abar_t", "ᾱ_t", r"\bar\alpha_t", 0, 1)
_EPS = variable("eps_theta", "ε_θ(x_t)", r"\epsilon_\theta(x_t)", None, None)
_x, _mu, _Sig, _g, _f0, _sc, _ab, _eps = (v.symbol for v in (_X, _MU, _SIG, _G, _F0, _SC, _AB, _EPS))

_linearised = _f0 + (_x - _mu) * _g  # log p_φ(y|x) ≈ log p_φ(y|μ) + (x − μ) g   (eq. 5)

CLASSIFIER_GUIDANCE = Derivation(
    name="classifier-guidance",
    title="classifier guidance: a mean shift by sΣg (first-order expansion of log p(y|x))",
    topic="guidance",
    source="Dhariwal & Nichol 2021, §4.1 eqs. 2–10 and Algorithm 1; §4.2 eqs. 11–14",
    variables=(_X, _MU, _SIG, _G, _F0, _SC, _AB, _EPS),
    summary=(
        r"Reverse step :math:`p_\theta(x_t\mid x_{t+1}) = \mathcal N(\mu,\Sigma)`; "
        r":math:`\log p_\phi(y\mid x_t) \approx \log p_\phi(y\mid\mu) + (x_t-\mu)g` (eq. 5, the Taylor expansion at μ). "
        r"The log-densities are in :math:`x_t`, up to constants free of :math:`x_t` (eqs. 2 and 10: "
        r":math:`p(x_t\mid x_{t+1},y) = Z\,p_\theta(x_t\mid x_{t+1})\,p_\phi(y\mid x_t)`)."
    ),
    steps=(
        Step(
            "log p_θ(x_t|x_{t+1}) + log p_φ(y|x_t) ≈ −(x_t − μ)²/(2Σ) + (x_t − μ) g + C (eq. 7)",
            log_normal(_x, _mu, _Sig) + _linearised,
            -((_x - _mu) ** 2) / (2 * _Sig) + (_x - _mu) * _g,
            "the log-density written out; log p_φ(y|μ) and the normaliser are constants in x_t",
            up_to_constant_in=(_x,),
        ),
        Step(
            "complete the square: −(x_t − μ)²/(2Σ) + (x_t − μ) g = −(x_t − μ − Σg)²/(2Σ) + Σg²/2 (eqs. 8–9)",
            -((_x - _mu) ** 2) / (2 * _Sig) + (_x - _mu) * _g,
            -((_x - _mu - _Sig * _g) ** 2) / (2 * _Sig) + _Sig * _g**2 / 2,
            "expand both squares",
        ),
        Step(
            "so the guided step is N(μ + Σg, Σ): log p(x_t|x_{t+1}, y) = log N(x_t; μ + Σg, Σ) + C (eq. 10)",
            log_normal(_x, _mu, _Sig) + _linearised,
            log_normal(_x, _mu + _Sig * _g, _Sig),
            "the previous two steps",
            up_to_constant_in=(_x,),
        ),
        Step(
            "with the gradient scale s (Algorithm 1), p_φ(y|x)^s: N(μ + sΣg, Σ)",
            log_normal(_x, _mu, _Sig) + _sc * _linearised,
            log_normal(_x, _mu + _sc * _Sig * _g, _Sig),
            "s log p_φ(y|x) is linearised to s(log p_φ(y|μ) + (x_t − μ) g)",
            up_to_constant_in=(_x,),
        ),
        Step(
            "score form (§4.2): ∇ log(p_θ(x_t) p_φ(y|x_t)) = −ε̂/√(1−ᾱ_t) with ε̂ = ε_θ − √(1−ᾱ_t) g (eqs. 11–14)",
            -_eps / sp.sqrt(1 - _ab) + _g,
            -(_eps - sp.sqrt(1 - _ab) * _g) / sp.sqrt(1 - _ab),
            "∇ log p_θ(x_t) = −ε_θ(x_t)/√(1−ᾱ_t) (eq. 11), and the log of a product is a sum",
        ),
    ),
)

_EC = variable("eps_c", "ε(x,c)", r"\epsilon(x, c)", None, None)
_EU = variable("eps_u", "ε(x)", r"\epsilon(x)", None, None)
_W = variable("w", "w", "w", 0, None)
_SL = variable("sigma_lambda", "σ_λ", r"\sigma_\lambda", 0, None)
_ec, _eu, _w, _sl = (v.symbol for v in (_EC, _EU, _W, _SL))

_score_c = -_ec / _sl  # ∇ log p(z|c) = −ε(z, c)/σ_λ
_score_u = -_eu / _sl  # ∇ log p(z)   = −ε(z)/σ_λ
_implicit = _score_c - _score_u  # ∇ log p^i(c|z) = ∇ log p(z|c) − ∇ log p(z)
_eps_cfg = (1 + _w) * _ec - _w * _eu

CLASSIFIER_FREE_GUIDANCE = Derivation(
    name="classifier-free-guidance",
    title="classifier-free guidance: ε̃ = (1+w) ε(x,c) − w ε(x), a guidance scale on ε",
    topic="guidance",
    source="Ho & Salimans 2022, eq. 6 and §3.2; Dhariwal & Nichol 2021, §4.2",
    variables=(_EC, _EU, _W, _SL),
    summary=(
        r"Scores in the paper's notation: :math:`\nabla_z\log p(z\mid c) = -\epsilon(z,c)/\sigma_\lambda`. "
        r"Bayes gives the implicit classifier :math:`\log p^i(c\mid z) = \log p(z\mid c) - \log p(z) + \log p(c)`."
    ),
    steps=(
        Step(
            "the implicit classifier's gradient: ∇ log p^i(c|z) = −(ε(z,c) − ε(z))/σ_λ",
            _implicit,
            -(_ec - _eu) / _sl,
            "∇ log p(c) = 0",
        ),
        Step(
            "classifier guidance with the implicit classifier at strength w: ε(z,c) − w σ_λ ∇ log p^i(c|z) = ε̃ (eq. 6)",
            _ec - _w * _sl * _implicit,
            _eps_cfg,
            "classifier guidance on ε: ε̃ = ε − w σ_λ ∇ log p(c|z) (Dhariwal & Nichol eq. 14 with scale w)",
        ),
        Step(
            "score form: −ε̃/σ_λ = (1+w) ∇ log p(z|c) − w ∇ log p(z) = ∇ log p(z|c) + w ∇ log p^i(c|z)",
            -_eps_cfg / _sl,
            (1 + _w) * _score_c - _w * _score_u,
            "linearity",
        ),
        Step(
            "the same: the score of p(z|c) p^i(c|z)^w",
            -_eps_cfg / _sl,
            _score_c + _w * _implicit,
            "linearity",
        ),
        Step(
            "the diffusers convention: guidance scale γ = 1 + w, ε(x) + γ(ε(x,c) − ε(x)) = ε̃",
            _eu + (1 + _w) * (_ec - _eu),
            _eps_cfg,
            "expand",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (CLASSIFIER_GUIDANCE, CLASSIFIER_FREE_GUIDANCE)
