r"""mpmath twin of :mod:`ddspec.reference.schedules`: every schedule's textbook formula at high precision.

Written independently of the float64 module: no rewrites, no double-double, the formulas exactly
as the papers and codes state them, evaluated with ``dps`` significant digits under
``mpmath.workdps(dps)``. float64 parameters are exact inputs (``mpmath.mpf(float)`` is exact).
Index convention: element ``i`` of each list is the papers' β_{i+1}.

Each function returns ``list[mpmath.mpf]``. The only cancellation is in the ᾱ-ratio forms (cosine,
:func:`betas_for_alpha_bar`, the zero-terminal-SNR rescaling), where ``1 - ratio`` loses at most
about log10(1/β) digits (≤ 7 for the cosine schedule at T = 100000), far below ``dps``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import mpmath
import numpy as np
from mpmath import mpf

from .alphas import alpha_bar as _alpha_bar

__all__ = [
    "linear_betas",
    "improved_linear_betas",
    "scaled_linear_betas",
    "quad_betas",
    "cosine_betas",
    "betas_for_alpha_bar",
    "sigmoid_betas",
    "const_betas",
    "jsd_betas",
    "warmup_betas",
    "custom_betas",
    "rescale_zero_terminal_snr",
]


def _linspace(start: mpf, end: mpf, n: int) -> list[mpf]:
    """``start + i (end - start)/(n - 1)``; ``[start]`` for one point."""
    if n == 1:
        return [start]
    step = (end - start) / (n - 1)
    return [start + i * step for i in range(n)]


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, *, dps: int = 50) -> list[mpf]:
    r""":math:`\beta_t = \beta_{\rm start} + \frac{t-1}{T-1}(\beta_{\rm end} - \beta_{\rm start})` (Ho et al. 2020, §4)."""
    with mpmath.workdps(dps):
        return _linspace(mpf(beta_start), mpf(beta_end), num_timesteps)


def improved_linear_betas(num_timesteps: int, *, dps: int = 50) -> list[mpf]:
    r"""Linear with both end points scaled by the exact 1000/T (Nichol & Dhariwal 2021)."""
    with mpmath.workdps(dps):
        scale = mpf(1000) / num_timesteps
        return _linspace(scale * mpf(1e-4), scale * mpf(0.02), num_timesteps)


def scaled_linear_betas(
    num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012, *, dps: int = 50
) -> list[mpf]:
    r""":math:`\beta_t = (\sqrt{\beta_{\rm start}} + \frac{t-1}{T-1}(\sqrt{\beta_{\rm end}} - \sqrt{\beta_{\rm start}}))^2`."""
    with mpmath.workdps(dps):
        roots = _linspace(mpmath.sqrt(mpf(beta_start)), mpmath.sqrt(mpf(beta_end)), num_timesteps)
        return [x * x for x in roots]


def quad_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02, *, dps: int = 50) -> list[mpf]:
    r"""The DDPM authors' "quad": the same formula as :func:`scaled_linear_betas`."""
    return scaled_linear_betas(num_timesteps, beta_start, beta_end, dps=dps)


def betas_for_alpha_bar(
    alpha_bar_fn: Callable[[mpf], mpf], num_timesteps: int, max_beta: float = 0.999, *, dps: int = 50
) -> list[mpf]:
    r""":math:`\beta_t = \min(1 - \bar\alpha(t/T)/\bar\alpha((t-1)/T), \beta_{\max})`, ``alpha_bar_fn`` on mpf."""
    with mpmath.workdps(dps):
        n = num_timesteps
        f = [alpha_bar_fn(mpf(i) / n) for i in range(n + 1)]
        cap = mpf(max_beta)
        return [min(1 - f[i + 1] / f[i], cap) for i in range(n)]


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999, *, dps: int = 50) -> list[mpf]:
    r"""Nichol & Dhariwal 2021, eq. 17: :math:`\bar\alpha(u) = \cos^2(\frac{u+s}{1+s}\frac{\pi}{2})`, literally."""
    with mpmath.workdps(dps):
        s_ = mpf(s)

        def f(u: mpf) -> mpf:
            return mpmath.cos((u + s_) / (1 + s_) * mpmath.pi / 2) ** 2

        return betas_for_alpha_bar(f, num_timesteps, max_beta, dps=dps)


def sigmoid_betas(
    num_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    start: float = -6.0,
    end: float = 6.0,
    *,
    dps: int = 50,
) -> list[mpf]:
    r""":math:`\beta_t = \sigma(x_t)(\beta_{\rm end} - \beta_{\rm start}) + \beta_{\rm start}`, x = linspace(start, end, T)."""
    with mpmath.workdps(dps):
        b0, b1 = mpf(beta_start), mpf(beta_end)
        xs = _linspace(mpf(start), mpf(end), num_timesteps)
        return [(b1 - b0) / (1 + mpmath.exp(-x)) + b0 for x in xs]


def const_betas(num_timesteps: int, beta: float = 0.02, *, dps: int = 50) -> list[mpf]:
    r""":math:`\beta_t = \beta`."""
    with mpmath.workdps(dps):
        return [mpf(beta)] * num_timesteps


def jsd_betas(num_timesteps: int, *, dps: int = 50) -> list[mpf]:
    r""":math:`\beta_t = 1/(T - t + 1)`: 1/T, 1/(T-1), ..., 1."""
    with mpmath.workdps(dps):
        return [mpf(1) / (num_timesteps - i) for i in range(num_timesteps)]


def warmup_betas(
    num_timesteps: int, warmup_frac: float, beta_start: float = 1e-4, beta_end: float = 0.02, *, dps: int = 50
) -> list[mpf]:
    r"""β = beta_end, except the first W = int(fl(F·T)) steps: linspace(beta_start, beta_end, W).

    W is the DDPM authors' definition (a float64 product, truncated), not an approximation.
    """
    with mpmath.workdps(dps):
        warmup = int(warmup_frac * num_timesteps)
        betas = [mpf(beta_end)] * num_timesteps
        if warmup > 0:
            betas[:warmup] = _linspace(mpf(beta_start), mpf(beta_end), warmup)
        return betas


def custom_betas(betas: Sequence[float], *, dps: int = 50) -> list[mpf]:
    r"""The given betas as exact mpf values."""
    with mpmath.workdps(dps):
        return [mpf(float(b)) for b in betas]


def rescale_zero_terminal_snr(betas: Sequence[float], *, dps: int = 50) -> list[mpf]:
    r"""Lin et al. 2023, Algorithm 1, literally: shift and scale sqrt(ᾱ), square, back to β."""
    with mpmath.workdps(dps):
        r = [mpmath.sqrt(a) for a in _alpha_bar(np.asarray(betas, dtype=np.float64), dps=dps)]
        r_1, r_T = r[0], r[-1]
        r_new = [(x - r_T) * r_1 / (r_1 - r_T) for x in r]
        ab_new = [x * x for x in r_new]
        out = [1 - ab_new[0]]
        out += [1 - ab_new[i] / ab_new[i - 1] for i in range(1, len(ab_new))]
        return out
