r"""When a declared clip may act on a run driven by an oracle: the union bound on x̂₀ leaving the clip range.

The statistical checks of whole runs (``distribution.run_output``, ``loop.output_law``) compare the output with
a closed-form Gaussian law (:func:`ddspec.reference.oracles.gaussian_run_output`), which holds only while a
declared clamp of x̂₀ never acts. :func:`clip_tail_bound` bounds the chance that it acts anywhere in a run,
rounding included; the checks narrow the oracle's data law (:data:`CLIP_DATA_SCALES`) until that chance is at
most :data:`CLIP_TAIL_FRACTION` of their false-failure rate, and charge it to the rate. Part of the judge
stage of the core (``docs/harness.md``), shared by step and loop targets.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from ddspec.reference import alphas as ref_alphas
from ddspec.reference.oracles import IsotropicGaussian, gaussian_step_map

from . import tolerances
from .protocol import Conventions

__all__ = ["CLIP_TAIL_FRACTION", "CLIP_DATA_SCALES", "Z_MAX", "clip_tail_bound"]

Array = NDArray[np.float64]

#: The clipping tail may use at most this fraction of a result's false-failure rate.
CLIP_TAIL_FRACTION = 0.01
#: Scales of the clipped data law tried for a run, largest first: 1 down to 0.01 in steps of 10^(1/4).
#: The largest whose clipping tail fits the budget is used.
CLIP_DATA_SCALES: tuple[float, ...] = tuple(10.0 ** (-k / 4) for k in range(9))
#: |z| envelope for every single draw (the margins are taken at this many standard deviations).
Z_MAX = 9.0


def clip_tail_bound(
    conv: Conventions, betas: Array, oracle: IsotropicGaussian, r: float, pairs: list[tuple[int, int]], eta: float,
    n: int, *, u_table: float, delta_at: Callable[[int], float], step_kwargs: Callable[[int, int], dict[str, Any]],
    start_mean: Array | None = None, start_variance: Array | None = None,
) -> float:
    r"""Union bound on the chance that some chain's computed x̂₀ leaves [−r, r] at some step of a run driven by
    ``oracle``'s exact denoiser (a probability bound only when ≤ 1; it may exceed 1).

    x_t ~ N(m_k, v_k) per coordinate at step k, propagated exactly by
    :func:`~ddspec.reference.oracles.gaussian_step_map` from N(``start_mean``, ``start_variance``)
    (default N(0, I)); x̂₀* = a₀ x_t + b₀; the target's x̂₀ differs from x̂₀* by its rounding, bounded by a
    margin in the manner of :func:`~ddspec.conformance.tolerances.step_bound`: SAFETY·(γ_K(u) · |magnitude
    of the x̂₀ conversion| + δ_t · |∂x̂₀/∂ln ᾱ_t|), every operand at 9 standard deviations of its law, with
    u = ``u_table`` and δ_t = ``delta_at(t)``. The union bound over the n chains, the coordinates and the
    steps of the normal tails gives the result (inf if the margin eats the range).
    """
    m = np.zeros(oracle.dim) if start_mean is None else np.broadcast_to(np.asarray(start_mean, dtype=np.float64), (oracle.dim,)).copy()
    v = np.ones(oracle.dim) if start_variance is None else np.broadcast_to(np.asarray(start_variance, dtype=np.float64), (oracle.dim,)).copy()
    total = 0.0
    g = float(tolerances.gamma(tolerances.K_OPS, u_table))
    alpha_bar = ref_alphas.alpha_bar(betas)
    for t, tp in pairs:
        a0, b0 = oracle.affine(t, betas, "sample")
        am, bm = oracle.affine(t, betas, conv.prediction_type)
        ab = 1.0 if t < 0 else float(alpha_bar[t])
        sa, s1 = math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))
        x_env = float(np.max(np.abs(m) + Z_MAX * np.sqrt(v)))
        mo_env = float(np.max(np.abs(am * m + bm) + Z_MAX * np.abs(am) * np.sqrt(v)))
        x0_env = float(np.max(np.abs(a0 * m + b0) + Z_MAX * np.abs(a0) * np.sqrt(v)))
        # rounding: gamma_K times the magnitude of the x0 conversion; table: delta_t times |d x0 / d ln alpha_bar|
        if conv.prediction_type == "epsilon":
            if ab == 0.0:
                return math.inf
            magnitude, slope = (x_env + s1 * mo_env) / sa, 0.5 * (x0_env + (sa / s1 if s1 > 0 else 0.0) * mo_env)
        elif conv.prediction_type == "v_prediction":
            magnitude = sa * x_env + s1 * mo_env
            slope = 0.5 * (sa * x_env + (ab / s1 if s1 > 0 else 0.0) * mo_env)
        else:
            magnitude, slope = mo_env, 0.0
        margin = tolerances.SAFETY * (g * magnitude + delta_at(t) * slope)
        if not margin < r:
            return math.inf
        mean = a0 * m + b0
        sd = np.abs(a0) * np.sqrt(v)
        with np.errstate(divide="ignore"):
            hi = np.where(sd > 0, sps.norm.sf((r - margin - mean) / np.where(sd > 0, sd, 1.0)),
                          (np.abs(mean) > r - margin).astype(float))
            lo = np.where(sd > 0, sps.norm.cdf((-(r - margin) - mean) / np.where(sd > 0, sd, 1.0)), 0.0)
        total += n * float(np.sum(hi + lo))
        step = gaussian_step_map(oracle, betas, t, tp, family=conv.family, eta=eta, **step_kwargs(t, tp))
        m = step.A * m + step.B
        v = step.A * step.A * v + step.noise_variance
    return total
