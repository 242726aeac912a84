r"""Schedules: the cosine schedule and its cancellation-free β, and the zero-terminal-SNR rescale.

* Nichol & Dhariwal 2021, eq. 17: :math:`\bar\alpha_t = f(t)/f(0)`,
  :math:`f(t) = \cos^2\big(\frac{t/T + s}{1+s}\cdot\frac\pi2\big)`, :math:`\beta_t = 1 - \bar\alpha_t/\bar\alpha_{t-1}`;
  and the rewritten β that ``ddspec.reference.schedules.cosine_betas`` evaluates (0-based i, β_{i+1}):
  :math:`\beta_{i+1} = \sin\theta\,\sin((2T-2i-1)\theta)/\sin^2((T-i)\theta)`, :math:`\theta = \pi/(2T(1+s))`,
  with :math:`\sin((2T-2i-1)\theta) = \sin((2Ts+2i+1)\theta)` where that angle is smaller.
* Lin et al. 2023, Algorithm 1: :math:`r_t = \sqrt{\bar\alpha_t}`, :math:`r'_t = (r_t - r_T)\,r_1/(r_1 - r_T)`;
  and the rewritten β' that ``rescale_zero_terminal_snr`` evaluates.
"""

from __future__ import annotations

import sympy as sp

from .core import Derivation, Step, held, variable
from .notation import ABAR_PREV, ALPHA, abar, abar_prev, alpha, beta

__all__ = ["COSINE_SCHEDULE", "ZERO_TERMINAL_SNR", "DERIVATIONS"]

_T = variable("T", "T", "T", 1, None, sample=(2, 2000))
_I = variable("i", "i", "i", 0, None, sample=(0, 2000))
_S = variable("s", "s", "s", 0, None, sample=(0, 1))
_T_, _i, _s = _T.symbol, _I.symbol, _S.symbol
_theta = sp.pi / (2 * _T_ * (1 + _s))


def _f(u: sp.Expr) -> sp.Expr:
    r""":math:`f(u) = \cos^2\big(\frac{u + s}{1 + s}\cdot\frac\pi2\big)` at :math:`u = t/T`."""
    return sp.cos((u + _s) / (1 + _s) * sp.pi / 2) ** 2


def _abar_cos(t: sp.Expr) -> sp.Expr:
    return _f(t / _T_) / _f(0)


_a = _T_ - _i  # the angle index at u = i/T
_reference_beta = sp.sin(_theta) * sp.sin((2 * _T_ * _s + 2 * _i + 1) * _theta) / sp.sin(_a * _theta) ** 2

COSINE_SCHEDULE = Derivation(
    name="cosine-schedule",
    title="the cosine schedule: ᾱ = f(t)/f(0) and the reference's cancellation-free β",
    topic="schedules",
    source="Nichol & Dhariwal 2021, eq. 17 and §3.2; ddspec.reference.schedules.cosine_betas",
    variables=(_T, _I, _S),
    constraints=(sp.StrictLessThan(_i, _T_ - 1),),
    summary=(
        r"0-based index i: :math:`\beta_{i+1} = 1 - \bar\alpha_{i+1}/\bar\alpha_i`. The identities hold for real "
        r"i and T; the schedule uses the integers :math:`0 \le i \le T-1`."
    ),
    steps=(
        Step(
            "β_{i+1} = 1 − ᾱ_{i+1}/ᾱ_i = 1 − f((i+1)/T)/f(i/T): f(0) cancels (and ᾱ_0 = f(0)/f(0) = 1)",
            held(lambda: 1 - _abar_cos(_i + 1) / _abar_cos(_i)),
            1 - _f((_i + 1) / _T_) / _f(_i / _T_),
            "the normalisation f(0) is common to both",
        ),
        Step(
            "complementary angle: f(i/T) = sin²((T − i)θ) with θ = π/(2T(1+s))",
            _f(_i / _T_),
            sp.sin(_a * _theta) ** 2,
            "cos(x) = sin(π/2 − x), and π/2 − (i/T + s)/(1+s)·π/2 = (T − i)θ",
        ),
        Step(
            "difference of squares of sines: 1 − sin²((a−1)θ)/sin²(aθ) = sin θ sin((2a−1)θ)/sin²(aθ), a = T − i",
            1 - sp.sin((_a - 1) * _theta) ** 2 / sp.sin(_a * _theta) ** 2,
            sp.sin(_theta) * sp.sin((2 * _a - 1) * _theta) / sp.sin(_a * _theta) ** 2,
            "sin²x − sin²y = sin(x − y) sin(x + y)",
        ),
        Step(
            "reflection: sin((2T − 2i − 1)θ) = sin((2Ts + 2i + 1)θ), the angle the reference uses past π/2",
            sp.sin((2 * _T_ - 2 * _i - 1) * _theta),
            sp.sin((2 * _T_ * _s + 2 * _i + 1) * _theta),
            "sin(π − x) = sin x with π = 2T(1+s)θ",
        ),
        Step(
            "end to end: 1 − ᾱ_{i+1}/ᾱ_i equals the reference's formula",
            1 - _abar_cos(_i + 1) / _abar_cos(_i),
            _reference_beta,
            "the steps above",
        ),
        Step(
            "the last step (i = T − 1): the reference's formula gives β_T = 1 (ᾱ_T = f(1)/f(0) = 0)",
            _reference_beta.subs(_i, _T_ - 1),
            sp.Integer(1),
            "(2Ts + 2T − 1)θ = π − θ",
        ),
    ),
)

# --------------------------------------------------------------------------------------------------
# zero terminal SNR
# --------------------------------------------------------------------------------------------------

_R1 = variable("r_1", "r_1", "r_1", 0, 1)
_RP = variable("r_prev", "r_{t−1}", "r_{t-1}", 0, 1)
_RT = variable("r_t", "r_t", "r_t", 0, 1)
_RTT = variable("r_T", "r_T", "r_T", 0, 1)
_ABT = variable("abar_t", "ᾱ_t", r"\bar\alpha_t", 0, 1)
_ABTT = variable("abar_T", "ᾱ_T", r"\bar\alpha_T", 0, 1)
_r1, _rp, _rt, _rT, _abt, _abT = (v.symbol for v in (_R1, _RP, _RT, _RTT, _ABT, _ABTT))


def _rescaled(r: sp.Expr) -> sp.Expr:
    """Lin et al. Algorithm 1: shift so that r_T goes to 0, scale so that r_1 stays."""
    return (r - _rT) * _r1 / (_r1 - _rT)


_d_prev, _d_t = _rp - _rT, _rt - _rT

ZERO_TERMINAL_SNR = Derivation(
    name="zero-terminal-snr",
    title="the zero-terminal-SNR rescale: √ᾱ'_T = 0, √ᾱ'_1 = √ᾱ_1, and the reference's β'",
    topic="schedules",
    source="Lin et al. 2023, Algorithm 1; ddspec.reference.schedules.rescale_zero_terminal_snr",
    variables=(_R1, _RP, _RT, _RTT, ALPHA, ABAR_PREV, _ABT, _ABTT),
    constraints=(
        sp.StrictLessThan(_rT, _rt),
        sp.StrictLessThan(_rt, _rp),
        sp.LessThan(_rp, _r1),
        sp.StrictLessThan(_abT, _abt),
    ),
    summary=(
        r":math:`r_t = \sqrt{\bar\alpha_t}` decreases in t; :math:`r'_t = (r_t - r_T)\,r_1/(r_1 - r_T)`, "
        r":math:`\bar\alpha'_t = r'^2_t`, :math:`\beta'_t = 1 - \bar\alpha'_t/\bar\alpha'_{t-1}`, and :math:`d_t = r_t - r_T`."
    ),
    steps=(
        Step("the terminal SNR is zero: r'_T = 0", held(lambda: _rescaled(_rT)), sp.Integer(0), "shift by r_T"),
        Step("the first step is kept: r'_1 = r_1", held(lambda: _rescaled(_r1)), _r1, "scale by r_1/(r_1 − r_T)"),
        Step(
            "β'_1 = 1 − r'_1² = β_1",
            held(lambda: 1 - _rescaled(_r1) ** 2),
            1 - _r1**2,
            "r'_1 = r_1 and β_1 = 1 − ᾱ_1 = 1 − r_1²",
        ),
        Step(
            "the scale cancels from the ratio: β'_t = 1 − r'²_t/r'²_{t−1} = (r_{t−1} − r_t)(d_{t−1} + d_t)/d²_{t−1}",
            1 - _rescaled(_rt) ** 2 / _rescaled(_rp) ** 2,
            (_rp - _rt) * (_d_prev + _d_t) / _d_prev**2,
            "d²_{t−1} − d²_t = (d_{t−1} − d_t)(d_{t−1} + d_t) and d_{t−1} − d_t = r_{t−1} − r_t",
        ),
        Step(
            "without cancellation: r_{t−1} − r_t = ᾱ_{t−1} β_t/(r_{t−1} + r_t)",
            sp.sqrt(abar_prev) - sp.sqrt(abar),
            abar_prev * beta / (sp.sqrt(abar_prev) + sp.sqrt(abar)),
            "(r_{t−1} − r_t)(r_{t−1} + r_t) = ᾱ_{t−1} − ᾱ_t = ᾱ_{t−1} β_t",
        ),
        Step(
            "without cancellation: d_t = r_t − r_T = ᾱ_t (1 − ᾱ_T/ᾱ_t)/(r_t + r_T)",
            sp.sqrt(_abt) - sp.sqrt(_abT),
            _abt * (1 - _abT / _abt) / (sp.sqrt(_abt) + sp.sqrt(_abT)),
            "(r_t − r_T)(r_t + r_T) = ᾱ_t − ᾱ_T",
        ),
        Step(
            "the last step: β'_T = 1 − r'²_T/r'²_{T−1} = 1",
            held(lambda: 1 - _rescaled(_rT) ** 2 / _rescaled(_rp) ** 2),
            sp.Integer(1),
            "r'_T = 0",
        ),
    ),
)

DERIVATIONS: tuple[Derivation, ...] = (COSINE_SCHEDULE, ZERO_TERMINAL_SNR)
