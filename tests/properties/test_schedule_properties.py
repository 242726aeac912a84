r"""Property 10: the cosine schedule and the zero-terminal-SNR rescaling, against mpmath.

The schedules are exact functions of their float64 parameters (``docs/conventions.md``), so every
claim here is decided in mpmath at 40 significant digits and the float64 reference is held to its
documented accuracy (``reference/schedules.py``: every schedule within 8 ULP of the exact value at
every index; the ᾱ tables within ~2 ULP of the exact product of the given β). Tolerances are derived
from those two documented bounds, per case, in :func:`_alpha_bar_rel_tol`.

Every reference function is called through its module attribute (``schedules.cosine_betas``,
``alphas.alpha_bar``) so that ``tests/quality/test_property_power_part2.py`` can break it and watch
these properties fail.
"""

from __future__ import annotations

import mpmath
import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st
from mpmath import mpf

from ddspec.reference import alphas, schedules

from . import strategies

U = strategies.U  # unit roundoff of float64
DPS = 40
BETA_ULP = 8.0  # documented bound of every schedule builder (reference/schedules.py, module docstring)
TABLE_ULP = 2.0  # documented bound of the double-double ᾱ / sqrt(ᾱ) tables (reference/alphas.py)


def _ulp(x: float) -> float:
    return float(np.spacing(abs(float(x))))


def _alpha_bar_rel_tol(exact_betas: list[mpf], upto: int) -> float:
    r"""Relative tolerance of ᾱ at index ``upto`` when each β is within BETA_ULP ULP of its exact value.

    Derivation: ulp(β) <= 2u·β, so each factor 1 − β carries a relative error
    <= BETA_ULP·2u·β/(1 − β); a product's relative errors add (to first order), and the table adds
    its own TABLE_ULP·2u. Hence  rel_tol = 2u·(BETA_ULP·Σ_{i<=t} β_i/(1 − β_i) + TABLE_ULP).
    The β here are the *exact* ones (mpmath): where an exact β is within an ULP of 1, its double
    cannot say what 1 − β is, and the bound honestly becomes large.
    """
    total = mpmath.fsum(b / (1 - b) for b in exact_betas[: upto + 1])
    return 2 * U * (BETA_ULP * float(total) + TABLE_ULP)


def _cosine_f(u: mpf, s: mpf) -> mpf:
    r""":math:`f(u) = \cos^2\big(\frac{u+s}{1+s}\cdot\frac{\pi}{2}\big)` (Nichol & Dhariwal 2021, eq. 17), in mpmath."""
    return mpmath.cos((u + s) / (1 + s) * mpmath.pi / 2) ** 2


def _draw_cosine(data: st.DataObject) -> tuple[int, float, float]:
    """(T, s, max_beta): T in [1, 64], s in [0, 2] (and the default 0.008), max_beta in [0.01, 1]."""
    T = data.draw(st.integers(1, 64), label="T")
    s = data.draw(st.one_of(st.just(0.008), st.just(0.0), st.floats(0.0, 2.0)), label="s")
    max_beta = data.draw(st.one_of(st.just(0.999), st.just(1.0), st.floats(0.01, 1.0)), label="max_beta")
    return T, s, max_beta


@given(st.data())
def test_cosine_alpha_bar_is_f_ratio_where_the_cap_is_inactive(data: st.DataObject) -> None:
    r"""ᾱ_t = f(t/T)/f(0) at every index before the first capped step (Nichol & Dhariwal 2021, eq. 17).

    With :math:`\beta_t = 1 - f(t/T)/f((t-1)/T)` (uncapped) the product telescopes:
    :math:`\prod_{i\le t}(1-\beta_i) = f(t/T)/f(0)`. Index convention: 0-based index t is the
    papers' t + 1, so ``alpha_bar(betas)[t]`` must equal f((t+1)/T)/f(0). The cap
    :math:`\min(\cdot, \beta_{\max})` (§3.2) breaks the telescoping from the first capped step on, so
    the claim is made exactly up to it; "capped" is decided in mpmath (raw β > max_beta).
    Tolerance: :func:`_alpha_bar_rel_tol` (documented 8-ULP β bound, 2-ULP tables).
    """
    T, s, max_beta = _draw_cosine(data)
    note(f"betas = schedules.cosine_betas({T}, s={s!r}, max_beta={max_beta!r})")
    betas = schedules.cosine_betas(T, s, max_beta)
    ab = alphas.alpha_bar(betas)
    with mpmath.workdps(DPS):
        s_ = mpf(s)
        f = [_cosine_f(mpf(i) / T, s_) for i in range(T)] + [mpf(0)]  # f(1) = cos²(π/2) = 0 exactly
        raw = [1 - f[i + 1] / f[i] for i in range(T)]
        capped = [r > mpf(max_beta) for r in raw]
        first_cap = capped.index(True) if any(capped) else T
        for t in range(first_cap):
            if t == T - 1:  # u = 1: ᾱ = f(1)/f(0) = 0 exactly (reached uncapped only when max_beta = 1)
                assert ab[t] == 0.0
                continue
            exact = f[t + 1] / f[0]
            rel = float(abs(mpf(float(ab[t])) - exact) / exact)
            tol = _alpha_bar_rel_tol(raw, t)
            assert rel <= tol, f"index {t}: ᾱ={ab[t]!r}, exact f/f(0)={mpmath.nstr(exact, 20)}, rel err {rel:.3g} > {tol:.3g}"


@given(st.data())
def test_cosine_cap_is_active_exactly_where_the_raw_beta_exceeds_max_beta(data: st.DataObject) -> None:
    r"""β_t = min(1 − ᾱ(t/T)/ᾱ((t−1)/T), β_max): the cap acts exactly where the raw β exceeds β_max.

    Source: Nichol & Dhariwal 2021, §3.2 (clip at 0.999). Decided in mpmath per index:

    * raw β > β_max·(1 + 2u·BETA_ULP): the reference must return β_max *exactly* (the min is exact);
    * raw β < β_max·(1 − 2u·BETA_ULP): it must return a value < β_max, within BETA_ULP ULP of raw β;
    * in between (raw β within the documented error of β_max) either is correct: within BETA_ULP ULP
      of min(raw β, β_max).

    The last raw β is exactly 1 (f(1) = cos²(π/2) = 0), so the last step is always capped unless
    β_max = 1.
    """
    T, s, max_beta = _draw_cosine(data)
    note(f"betas = schedules.cosine_betas({T}, s={s!r}, max_beta={max_beta!r})")
    betas = schedules.cosine_betas(T, s, max_beta)
    assert betas.shape == (T,)
    with mpmath.workdps(DPS):
        s_ = mpf(s)
        f = [_cosine_f(mpf(i) / T, s_) for i in range(T)] + [mpf(0)]  # f(1) = cos²(π/2) = 0 exactly
        cap = mpf(max_beta)
        band = 2 * U * BETA_ULP
        for i in range(T):
            raw = 1 - f[i + 1] / f[i]  # the last is exactly 1
            got = float(betas[i])
            where = f"index {i}: raw β={mpmath.nstr(raw, 20)}, max_beta={max_beta!r}, got {got!r}"
            if raw > cap * (1 + band):
                assert got == max_beta, "cap must be active: " + where
            elif raw < cap * (1 - band):
                assert got < max_beta, "cap must be inactive: " + where
                assert abs(mpf(got) - raw) <= BETA_ULP * _ulp(float(raw)), where
            else:
                target = min(raw, cap)
                assert abs(mpf(got) - target) <= BETA_ULP * _ulp(float(target)), where


# ---------------------------------------------------------------------------------------------------
# zero terminal SNR
# ---------------------------------------------------------------------------------------------------


@given(st.data())
def test_zero_terminal_snr_rescaling(data: st.DataObject) -> None:
    r"""Lin et al. 2023, Algorithm 1: ᾱ'_T = 0, sqrt(ᾱ'_1) = sqrt(ᾱ_1), and sqrt(ᾱ') affine in sqrt(ᾱ).

    .. math:: r'_t = (r_t - r_T)\,\frac{r_1}{r_1 - r_T},\qquad r = \sqrt{\bar\alpha}

    1. The result is a valid schedule with β'_T = 1 exactly, so ᾱ'_T = 0 *exactly* (the double-double
       product is 0) and SNR'_T = 0.
    2. sqrt(ᾱ'_1) = sqrt(ᾱ_1) within a derived bound: β'_1 = 1 − r'^2_1 = β_1 in exact arithmetic; if β'_1
       is within BETA_ULP ULP of β_1, sqrt(1 − β'_1) moves by at most
       BETA_ULP·ulp(β_1)/(2 sqrt(1 − β_1)), plus TABLE_ULP ULP of each table.
    3. Every r'_t equals Algorithm 1 evaluated in mpmath, with the relative tolerance of
       :func:`_alpha_bar_rel_tol` (on the exact β') halved for the square root (t < T − 1; at T − 1 it
       is exactly 0).
    4. A ValueError is allowed only where the exact β' has no valid float64 form within the documented
       accuracy: a β' before the last within BETA_ULP ULP of 1 may come out as 1 (e.g. β = [0.5, 0.5, 1e-12]
       gives 1 − β'_2 ≈ 1.5e-24).
    """
    sched = data.draw(strategies.schedules(max_T=48), label="schedule")  # O(T) mpmath below: small T
    betas, T = sched.betas, sched.T
    note(strategies.repro(betas=sched) + "; schedules.rescale_zero_terminal_snr(betas)")

    with mpmath.workdps(DPS):  # Algorithm 1, literally, at 40 digits
        prod, r = mpf(1), []
        for b in betas.tolist():
            prod *= 1 - mpf(b)
            r.append(mpmath.sqrt(prod))
        scale = r[0] / (r[0] - r[-1])
        r_exact = [(r_t - r[-1]) * scale for r_t in r]
        ab_exact = [x * x for x in r_exact]
        beta_exact = [1 - ab_exact[0]] + [1 - ab_exact[t] / ab_exact[t - 1] for t in range(1, T)]
        unrepresentable = any(1 - b < BETA_ULP * mpf(U) for b in beta_exact[:-1])
    try:
        rescaled = schedules.rescale_zero_terminal_snr(betas)
    except ValueError:
        # Refusal is correct only where the exact rescaled schedule has no valid float64 form within the
        # documented accuracy: a β' before the last one within BETA_ULP ULP of 1 (1 − β' < BETA_ULP·u) may
        # come out as 1.0, which as_betas must reject.
        assert unrepresentable, "rescale_zero_terminal_snr refused a representable schedule"
        return
    assert rescaled.shape == (T,)
    assert np.all(rescaled > 0.0) and np.all(rescaled[:-1] < 1.0) and rescaled[-1] == 1.0, (
        f"not a valid zero-terminal schedule (0 < β' < 1 before the last, β'_T = 1): {rescaled}"
    )
    ab_new = alphas.alpha_bar(rescaled)
    assert ab_new[-1] == 0.0, f"ᾱ'_T = {ab_new[-1]!r}, expected exactly 0"
    assert alphas.snr(rescaled)[-1] == 0.0

    r_old = alphas.sqrt_alpha_bar(betas)
    r_new = alphas.sqrt_alpha_bar(rescaled)
    b1 = float(betas[0])
    shift = BETA_ULP * _ulp(b1) / (2.0 * np.sqrt(1.0 - b1))
    bound = shift + 2 * TABLE_ULP * _ulp(float(r_old[0]))
    assert abs(float(r_new[0]) - float(r_old[0])) <= bound, (
        f"sqrt(ᾱ'_1)={r_new[0]!r} vs sqrt(ᾱ_1)={r_old[0]!r}: differ by {abs(r_new[0] - r_old[0]):.3g} > {bound:.3g}"
    )

    for t in range(T - 1):
        tol = 0.5 * _alpha_bar_rel_tol(beta_exact, t)
        rel = float(abs(mpf(float(r_new[t])) - r_exact[t]) / r_exact[t])
        assert rel <= tol, f"index {t}: r'={r_new[t]!r}, Algorithm 1 gives {mpmath.nstr(r_exact[t], 20)}; rel {rel:.3g} > {tol:.3g}"
    assert r_new[-1] == 0.0
