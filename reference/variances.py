r"""Reverse-process variances :math:`\Sigma_\theta(x_t, t)` (Ho et al. 2020, §3.2; Nichol & Dhariwal 2021, §3.1).

The reverse process is :math:`p_\theta(x_{t-1} \mid x_t) = \mathcal N(\mu_\theta(x_t, t), \Sigma_\theta(x_t, t))`
(Ho et al. 2020, eq. 1). DDPM fixes :math:`\Sigma_\theta = \sigma_t^2 I` to one of the two extremes

.. math::

    \sigma_t^2 = \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t \quad\text{(``fixed_small``)}
    \qquad\text{or}\qquad \sigma_t^2 = \beta_t \quad\text{(``fixed_large``)}

(Ho et al. 2020, §3.2: the optimal choices for x₀ deterministic resp. x₀ ~ N(0, I)); improved DDPM
learns an interpolation between them in log space (Nichol & Dhariwal 2021, eq. 15).

Index convention (``docs/conventions.md``): ``t`` is the 0-based index (the papers' t + 1) and
``t_prev`` the index the step goes to (default ``t - 1``; ``-1`` is the data). For a strided step
(``t_prev < t - 1``) β and β̃ are those of the respaced schedule (Nichol & Dhariwal 2021, §4):

.. math::

    \beta' = 1 - \frac{\bar\alpha_t}{\bar\alpha_{t_\mathrm{prev}}},\qquad
    \tilde\beta' = \frac{1-\bar\alpha_{t_\mathrm{prev}}}{1-\bar\alpha_t}\beta' ,

as diffusers' DDPM (``num_inference_steps``) and improved-diffusion's respacing use them.

The final step (``t_prev = -1``). There β̃ = 0 (the posterior is the point mass at x₀) and log β̃ = −∞.
The DDPM authors' code and improved-diffusion replace the log by that of the *next* step's β̃ (their
``posterior_log_variance_clipped``: log β̃ at index 1 for index 0); diffusers and lucidrains clamp β̃
at 1e-20 instead (``docs/conventions.md``; a known variant for the harness). For a respaced schedule
improved-diffusion's "next step" is the step from the next element of the subsequence, ``t_next``,
down to ``t``. The reference cannot tell a respaced schedule from the unstrided one at the final step
(its own stride, ``t`` → −1, says nothing about the stride above ``t``), so ``t_next`` is never
guessed for a step the caller spells out:

* ``t_prev`` omitted: the call describes the unstrided schedule (``t_prev = t - 1``), and ``t_next``
  defaults to ``t + 1``, where the clipped log equals
  :func:`~ddspec.reference.posterior.posterior_log_variance_clipped`;
* ``t_prev`` given (a step of a possibly respaced schedule): where the final step needs the clipped
  value, ``t_next`` must be given too (``t_next = t + 1`` for the unstrided schedule), else a
  ``ValueError`` names ``t_next``. A silent ``t + 1`` would make a respaced variational bound use
  the wrong step's β̃.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _dd
from .validation import SingularError, as_array, as_betas, as_int, as_timestep, check_finite_result, fail
from .alphas import alpha_bar_tables, _ratio_dd, one_minus_alpha_bar_ratio
from .posterior import posterior_coefficients
from . import vocabulary as _vocabulary

__all__ = ["VARIANCE_TYPES", "LEARNED_VARIANCE_TYPES", "ReverseVariance", "reverse_variance", "check_model_var_output"]

Array = NDArray[np.float64]

VARIANCE_TYPES = _vocabulary.VARIANCE_TYPES
LEARNED_VARIANCE_TYPES = _vocabulary.LEARNED_VARIANCE_TYPES


@dataclass(frozen=True)
class ReverseVariance:
    r"""The reverse-process variance :math:`\Sigma_\theta` of one step and its natural log.

    Both are 0-d arrays for the fixed types and have the shape of the model's variance output for the
    learned types. ``log_variance`` is the clipped value where ``variance`` is 0 (the final step of
    ``fixed_small``; see the module docstring), never −inf.
    """

    variance: Array
    log_variance: Array


def _check_variance_type(variance_type: str) -> str:
    if not isinstance(variance_type, str) or variance_type not in VARIANCE_TYPES:
        fail("variance_type", variance_type, f"must be one of {VARIANCE_TYPES}")
    return variance_type


def _log_dd(hi: float, lo: float) -> float:
    """log of a positive double-double: log(h) + l/h (the second term is below h's ULP)."""
    return float(np.log(hi) + lo / hi)


def _log_beta_prime(b: Array, t: int, s: int) -> float:
    r""":math:`\log\beta' = \log(1 - \bar\alpha_t/\bar\alpha_s)` from the double-double 1 − q (exact β_t when s = t − 1)."""
    if s == t - 1:
        return float(np.log(b[t]))
    qh, ql, _, _ = _ratio_dd(b, t, s)
    s1, e1 = _dd.two_sum(1.0, -float(qh))
    hi, lo = _dd.fast_two_sum(s1, e1 - float(ql))
    return _log_dd(hi, lo)


def _log_beta_tilde(b: Array, t: int, s: int) -> float:
    r""":math:`\log\tilde\beta' = \log\beta' + \log(1-\bar\alpha_s) - \log(1-\bar\alpha_t)`, each log of a double-double (s ≥ 0).

    Taking the log of the rounded β̃′ would lose about 1/|log β̃′| ULP where β̃′ ≈ 1 (the same
    reasoning as :func:`~ddspec.reference.posterior.posterior_log_variance_clipped`).
    """
    _, _, c_hi, c_lo = alpha_bar_tables(b)
    return _log_beta_prime(b, t, s) + _log_dd(float(c_hi[s]), float(c_lo[s])) - _log_dd(float(c_hi[t]), float(c_lo[t]))


def check_model_var_output(variance_type: str, model_var_output: ArrayLike | None) -> Array | None:
    r"""Validate the model's variance output for ``variance_type``: required (and returned as float64)
    for the learned types, refused (``None`` returned) for the fixed ones.

    .. math:: \texttt{learned\_range}:\ m \in [-1, 1] \iff v = \tfrac{m+1}{2} \in [0, 1],\qquad
              \texttt{learned}:\ e^{m} < \infty

    ``learned_range`` needs every value in [−1, 1] (Nichol & Dhariwal 2021, eq. 15 interpolates with
    v ∈ [0, 1]); ``learned`` takes any finite log-variance whose exponential is finite.
    """
    _check_variance_type(variance_type)
    if variance_type not in LEARNED_VARIANCE_TYPES:
        if model_var_output is not None:
            fail("model_var_output", model_var_output, f"is only used by the learned variance types, not {variance_type!r}")
        return None
    if model_var_output is None:
        fail("model_var_output", model_var_output, f"variance_type={variance_type!r} needs the model's variance output")
    v = as_array(model_var_output, "model_var_output")
    if variance_type == "learned_range":
        bad = (v < -1.0) | (v > 1.0)
        if bad.any():
            fail("model_var_output", model_var_output, "learned_range needs every value in [-1, 1] "
                 "(the interpolation weight (v + 1)/2 must lie in [0, 1])")
    elif np.any(v > np.log(np.finfo(np.float64).max)):
        fail("model_var_output", model_var_output, "log-variance too large: exp() overflows float64")
    return v


def reverse_variance(
    betas: ArrayLike,
    t: int,
    variance_type: str,
    *,
    t_prev: int | None = None,
    t_next: int | None = None,
    model_var_output: ArrayLike | None = None,
) -> ReverseVariance:
    r"""The reverse-process variance :math:`\Sigma_\theta` of the step from index ``t`` to ``t_prev``.

    With :math:`s` = ``t_prev``, :math:`\beta' = 1-\bar\alpha_t/\bar\alpha_s` and
    :math:`\tilde\beta' = \beta'(1-\bar\alpha_s)/(1-\bar\alpha_t)` (β_t and β̃_t for an unstrided step):

    .. math::

        \texttt{fixed\_small}:\ \Sigma = \tilde\beta' ,\qquad
        \texttt{fixed\_large}:\ \Sigma = \beta' ,\qquad
        \texttt{learned}:\ \log\Sigma = m ,

        \texttt{learned\_range}:\ \log\Sigma = v\log\beta' + (1-v)\log\tilde\beta'_{\mathrm{clip}},\quad v = \frac{m+1}{2},\ m \in [-1, 1]

    ``variance_type``:

    * ``"fixed_small"``: β̃ (Ho et al. 2020, §3.2). Its log at the final step (``t_prev = -1``, β̃ = 0)
      is the clipped value :math:`\log\tilde\beta(t_\mathrm{next} \to t)` (module docstring), while the
      variance itself is 0.
    * ``"fixed_large"``: β_t with log β_t, exactly as Ho et al. 2020, §3.2 (diffusers' ``fixed_large``).
    * ``"fixed_large_improved"``: improved-diffusion's ``FIXED_LARGE``, which uses β at every step
      except the final one, where it uses the clipped β̃ of the next step instead: the variance table
      is :math:`[\tilde\beta_2, \beta_2, \beta_3, \dots, \beta_T]` in paper indexing (their
      comment: to get a better decoder log likelihood). The paper's σ² = β₁ at the first step differs.
    * ``"learned"``: the model output ``m`` is a **log**-variance (improved-diffusion's ``LEARNED``; the
      learned Σ of Nichol & Dhariwal 2021, §3.1). diffusers' ``"learned"`` takes the model output as
      the variance itself, not its log (a convention difference, ``docs/conventions.md``).
    * ``"learned_range"``: Nichol & Dhariwal 2021, eq. 15, with the network output
      :math:`m \in [-1, 1]` mapped to the paper's v ∈ [0, 1] by v = (m + 1)/2 (as improved-diffusion
      and diffusers do). :math:`\tilde\beta'_\mathrm{clip}` is β̃′ except at the final step, where it is
      the clipped value; diffusers uses log(1e-20) there instead. The ends are the fixed types' values
      exactly, :math:`\Sigma(m{=}1) = \beta'` and :math:`\Sigma(m{=}{-1}) = \tilde\beta'_\mathrm{clip}`
      (not :math:`\exp(\log\beta')`, which is about |log β′| ULP off).

    ``t_next`` only matters at the final step (``t_prev = -1``), for the clipped value
    :math:`\tilde\beta(t_\mathrm{next} \to t)` of ``fixed_small``'s log, ``fixed_large_improved`` and
    ``learned_range``: the next index of the sampling subsequence above ``t``, t < t_next ≤ T − 1.
    It defaults to ``t + 1`` only when ``t_prev`` is omitted (the unstrided schedule); with an explicit
    ``t_prev = -1`` it is required where the clipped value is needed (ValueError naming ``t_next``;
    module docstring). Elsewhere it is validated and ignored. Raises :class:`SingularError` when the
    clipped value is needed and there is no index above ``t`` (T = 1).
    ``model_var_output`` is required for the learned types and refused for the fixed ones.

    Accuracy: β′ comes from :func:`~ddspec.reference.alphas.one_minus_alpha_bar_ratio` and β̃′ from
    :func:`~ddspec.reference.posterior.posterior_coefficients` (a few ULP each). The logs are not the
    logs of those rounded values (which would lose ~1/|log Σ| ULP where Σ ≈ 1, e.g. the cosine
    schedule's capped last step): log β′ is formed from the double-double 1 − ᾱ_t/ᾱ_s and
    :math:`\log\tilde\beta' = \log\beta' + \log(1-\bar\alpha_s) - \log(1-\bar\alpha_t)` from the
    double-double tables, so each is within a few ULP. learned_range's exp then turns the absolute
    error of its log into a relative one (about |log Σ| units of roundoff) inside the range; at its
    endpoints the interpolation is not evaluated through exp(log): ``m = 1`` returns fixed_large's β′
    and ``m = -1`` the (clipped) β̃′ of ``fixed_small`` / ``fixed_large_improved``, bit for bit, and
    the log-variance there is exactly the endpoint's log (v·a + (1 − v)·b is exact for v ∈ {0, 1}).
    """
    b = as_betas(betas)
    n = b.size
    tt = as_timestep(t, n, "t")
    s = tt - 1 if t_prev is None else as_int(t_prev, "t_prev", low=-1, high=tt - 1)
    vt = _check_variance_type(variance_type)
    m = check_model_var_output(vt, model_var_output)
    nxt: int | None = None
    if t_next is not None:
        nxt = as_int(t_next, "t_next", low=tt + 1, high=n - 1)
    final = s == -1

    def clipped_step() -> tuple[int, int]:
        """The step whose β̃ replaces the final step's (module docstring): (t, t_prev), or (t_next, t) at the final step."""
        if not final:
            return tt, s
        if nxt is not None:
            return nxt, tt
        if tt + 1 > n - 1:
            raise SingularError(
                f"reverse_variance: t={tt} is the final step (t_prev=-1), where beta_tilde = 0 and its log is -inf, "
                f"and there is no later index (T={n}) whose beta_tilde could replace it (posterior_log_variance_clipped)"
            )
        if t_prev is not None:
            fail("t_next", t_next, f"variance_type={vt!r} at the final step t={tt} -> t_prev=-1 needs the next index "
                 "of the sampling subsequence above t, whose step t_next -> t gives the clipped beta_tilde "
                 "(posterior_log_variance_clipped); with an explicit t_prev it is not guessed: pass "
                 f"t_next={tt + 1} for the unstrided schedule, or the next timestep of a respaced one")
        return tt + 1, tt

    if vt == "fixed_small":
        var = float(posterior_coefficients(b, tt, s).variance)
        log_var = _log_beta_tilde(b, *clipped_step())
    elif vt == "fixed_large":
        var = float(one_minus_alpha_bar_ratio(b, tt, s))
        log_var = _log_beta_prime(b, tt, s)
    elif vt == "fixed_large_improved":
        if final:
            up, low = clipped_step()
            var = float(posterior_coefficients(b, up, low).variance)
            log_var = _log_beta_tilde(b, up, low)
        else:
            var = float(one_minus_alpha_bar_ratio(b, tt, s))
            log_var = _log_beta_prime(b, tt, s)
    elif vt == "learned":
        assert m is not None
        v_arr = check_finite_result(np.exp(m), "reverse_variance", "exp(model_var_output) overflows")
        return ReverseVariance(np.asarray(v_arr), np.asarray(m))
    else:  # learned_range
        assert m is not None
        frac = (m + 1.0) / 2.0
        up, low = clipped_step()
        min_log = _log_beta_tilde(b, up, low)
        max_log = _log_beta_prime(b, tt, s)
        log_v = frac * max_log + (1.0 - frac) * min_log  # exactly max_log at m = 1 and min_log at m = -1
        var_v = np.exp(log_v)
        # the endpoints are the fixed types' values themselves, not exp(log) of them (~|log Σ| ULP off)
        if np.any(m == 1.0):
            var_v = np.where(m == 1.0, float(one_minus_alpha_bar_ratio(b, tt, s)), var_v)
        if np.any(m == -1.0):
            var_v = np.where(m == -1.0, float(posterior_coefficients(b, up, low).variance), var_v)
        return ReverseVariance(np.asarray(var_v, dtype=np.float64), log_v)
    return ReverseVariance(np.asarray(var, dtype=np.float64), np.asarray(log_var, dtype=np.float64))
