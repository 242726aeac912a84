r"""mpmath twin of :mod:`ddspec.reference.variances`, written from the formulas.

The schedule quantities are formed here from the exact β (float64 values taken as exact):
:math:`\bar\alpha_t = \prod_{i \le t}(1-\beta_i)` with index −1 giving 1. Everything is evaluated at
:data:`~ddspec.reference.twin.DEFAULT_DPS` digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mpmath
import numpy as np

from . import DEFAULT_DPS, mpf_list
from .alphas import alpha_bar_at

__all__ = ["alpha_bar", "step_beta", "step_beta_tilde", "reverse_variance"]

MP = mpmath.mpf


def alpha_bar(betas: Sequence[float], t: int) -> MP:
    r""":math:`\bar\alpha` at 0-based index t (−1 → 1): :func:`ddspec.reference.twin.alphas.alpha_bar_at`."""
    return alpha_bar_at(np.asarray(betas, dtype=np.float64), t, dps=DEFAULT_DPS)


def step_beta(betas: Sequence[float], t: int, t_prev: int) -> MP:
    r""":math:`\beta' = 1 - \bar\alpha_t/\bar\alpha_{t_\mathrm{prev}}` (the respaced β; β_t when t_prev = t − 1)."""
    with mpmath.workdps(DEFAULT_DPS):
        if t_prev == t - 1:
            return mpmath.mpf(float(betas[t]))
        return 1 - alpha_bar(betas, t) / alpha_bar(betas, t_prev)


def step_beta_tilde(betas: Sequence[float], t: int, t_prev: int) -> MP:
    r""":math:`\tilde\beta' = \beta'(1-\bar\alpha_{t_\mathrm{prev}})/(1-\bar\alpha_t)`."""
    with mpmath.workdps(DEFAULT_DPS):
        return step_beta(betas, t, t_prev) * (1 - alpha_bar(betas, t_prev)) / (1 - alpha_bar(betas, t))


def reverse_variance(
    betas: Sequence[float],
    t: int,
    variance_type: str,
    t_prev: int | None = None,
    model_var_output: Sequence[float] | None = None,
    t_next: int | None = None,
) -> tuple[Any, Any]:
    r"""(variance, log_variance) of the reverse step t → t_prev: mpf for the fixed types, lists for the learned.

    fixed_small: β̃′ (log of β̃(t_next → t) at t_prev = −1); fixed_large: β′; fixed_large_improved:
    β′, or β̃(t_next → t) at t_prev = −1; learned: exp(m), m; learned_range:
    exp(v log β′ + (1 − v) log β̃_clip), v = (m + 1)/2.

    ``t_next`` as in the reference: it defaults to t + 1 only when ``t_prev`` is omitted; with an
    explicit ``t_prev = -1`` the types that need β̃(t_next → t) raise ``ValueError`` without it.
    """
    s = t - 1 if t_prev is None else t_prev
    with mpmath.workdps(DEFAULT_DPS):
        bp = step_beta(betas, t, s)
        bt = step_beta_tilde(betas, t, s)

        def bt_clip() -> Any:
            if s != -1:
                return bt
            if t_next is None and t_prev is not None:
                raise ValueError(f"t_next=None: {variance_type} at the final step t={t} -> -1 needs t_next")
            return step_beta_tilde(betas, t + 1 if t_next is None else t_next, t)

        if variance_type == "fixed_small":
            return bt, mpmath.log(bt_clip())
        if variance_type == "fixed_large":
            return bp, mpmath.log(bp)
        if variance_type == "fixed_large_improved":
            v = bt_clip() if s == -1 else bp
            return v, mpmath.log(v)
        ms = mpf_list([] if model_var_output is None else model_var_output)
        if variance_type == "learned":
            return [mpmath.exp(m) for m in ms], ms
        if variance_type == "learned_range":
            log_large, log_small = mpmath.log(bp), mpmath.log(bt_clip())
            logs = []
            for m in ms:
                frac = (m + 1) / 2
                logs.append(frac * log_large + (1 - frac) * log_small)
            return [mpmath.exp(lv) for lv in logs], logs
        raise ValueError(f"variance_type={variance_type!r}: unknown")
