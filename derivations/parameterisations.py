r"""The prediction targets ε, x_0 and v, and how each is recovered from the others.

Ho et al. 2020, eq. 4 (:math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon`), and
Salimans & Ho 2022, §4 and App. D (:math:`v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0`;
there :math:`\alpha_t = \sqrt{\bar\alpha_t}`, :math:`\sigma_t = \sqrt{1-\bar\alpha_t}`).
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, held, variable
from .notation import EPS, X0, eps, x0

__all__ = ["V_PREDICTION", "DERIVATIONS"]

_AB = variable("abar_t", "ᾱ_t", r"\bar\alpha_t", 0, 1)
_PHI = variable("phi", "φ", r"\phi", 0, "3/2")  # (0, 3/2) inside (0, π/2)
_XHAT = variable("x0_hat", "x̂_0", r"\hat x_0", None, None)
_ab, _phi, _x0_hat = _AB.symbol, _PHI.symbol, _XHAT.symbol

_xt = sp.sqrt(_ab) * x0 + sp.sqrt(1 - _ab) * eps
_v = sp.sqrt(_ab) * eps - sp.sqrt(1 - _ab) * x0

V_PREDICTION = Derivation(
    name="v-prediction",
    title="the v identities: x_0 = √ᾱ x_t − √(1−ᾱ) v, ε = √(1−ᾱ) x_t + √ᾱ v",
    topic="parameterisations",
    source="Salimans & Ho 2022, §4 and App. D; Ho et al. 2020, eq. 4",
    variables=(_AB, _PHI, X0, EPS, _XHAT),
    summary=(
        r"With :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon` and "
        r":math:`v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0`, the map "
        r":math:`(x_0,\epsilon)\mapsto(x_t,v)` is a rotation by the angle :math:`\phi` with :math:`\bar\alpha_t = \cos^2\phi`."
    ),
    steps=(
        Step(
            "x_0 from ε (eq. 4 inverted): x_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t",
            held(lambda: (_xt - sp.sqrt(1 - _ab) * eps) / sp.sqrt(_ab)),
            x0,
            "substitute x_t",
        ),
        Step(
            "ε from x_0: ε = (x_t − √ᾱ_t x_0)/√(1−ᾱ_t)",
            held(lambda: (_xt - sp.sqrt(_ab) * x0) / sp.sqrt(1 - _ab)),
            eps,
            "substitute x_t",
        ),
        Step(
            "x_0 from v: x_0 = √ᾱ_t x_t − √(1−ᾱ_t) v",
            sp.sqrt(_ab) * _xt - sp.sqrt(1 - _ab) * _v,
            x0,
            "substitute x_t and v; ᾱ_t + (1−ᾱ_t) = 1",
        ),
        Step(
            "ε from v: ε = √(1−ᾱ_t) x_t + √ᾱ_t v",
            sp.sqrt(1 - _ab) * _xt + sp.sqrt(_ab) * _v,
            eps,
            "substitute x_t and v; ᾱ_t + (1−ᾱ_t) = 1",
        ),
        Step(
            "v is the velocity of the rotation: with ᾱ_t = cos²φ, x_φ = cos φ x_0 + sin φ ε, dx_φ/dφ = v",
            sp.diff(sp.cos(_phi) * x0 + sp.sin(_phi) * eps, _phi),
            _v.subs(_ab, sp.cos(_phi) ** 2),
            "√(cos²φ) = cos φ and √(1 − cos²φ) = sin φ for 0 < φ < π/2",
        ),
        Step(
            "the v-loss is the SNR+1-weighted x_0-loss: (v − v̂)² = (1 + ᾱ_t/(1−ᾱ_t)) (x_0 − x̂_0)²",
            (_v - (sp.sqrt(_ab) * _xt - _x0_hat) / sp.sqrt(1 - _ab)) ** 2,
            (1 + _ab / (1 - _ab)) * (x0 - _x0_hat) ** 2,
            "v̂ = (√ᾱ_t x_t − x̂_0)/√(1−ᾱ_t) (the v identity for the prediction), so v − v̂ = (x̂_0 − x_0)/√(1−ᾱ_t)",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (V_PREDICTION,)
