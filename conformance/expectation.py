r"""From a sampler's declared :class:`~ddspec.conformance.protocol.Conventions` to the reference's answer.

Every check builds its expected values here, from :mod:`ddspec.reference` only: the β table the
declared config means, the timesteps the declared spacing gives, the (t, t_prev) pairs of a run, one
reference step, and the :class:`~ddspec.conformance.tolerances.StepSpec` that shapes its tolerance.

Declared variants the reference knows are mapped, never guessed:

* diffusers' ``fixed_small_log`` / ``fixed_large_log`` are the same variances as ``fixed_small`` /
  ``fixed_large`` handled as logs; diffusers' ``learned`` takes a *variance* and the reference's
  ``learned`` a *log-variance*, so the model output is passed through ``log``.
* ``final_alpha_bar_is_one=False`` (diffusers DDIM ``set_alpha_to_one=False``): the last step goes to
  index 0 instead of the data; it leaves noise of std ``sqrt(1 - ᾱ_0)`` — an *acceptable* variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ddspec.reference import alphas, sampling, schedules, timesteps
from ddspec.reference.vocabulary import LEARNED_VARIANCE_TYPES, NAMED_SPACINGS, BetaSchedule, TimestepSpacing, VarianceType, reference_variance_type

from ddspec.reference import SingularError

from .protocol import Conventions
from .tolerances import StepSpec
from .trajectory import Transition

__all__ = [
    "UnsupportedConvention",
    "zero_snr_original",
    "reference_betas",
    "reference_timesteps",
    "RULE_LABELS",
    "named_rule_match",
    "tie_positions",
    "step_pairs",
    "reference_step",
    "step_spec",
    "final_step_consequence",
    "ExpectedTransition",
    "expect_transition",
]

Array = NDArray[np.float64]


class UnsupportedConvention(ValueError):
    """The declared conventions ask for something the reference cannot state (reported as unsupported)."""


def reference_betas(conv: Conventions, *, rescale: bool = True) -> Array:
    """The β table the declared schedule means, from :mod:`ddspec.reference.schedules` (float64).

    ``rescale=False`` gives the schedule before a declared zero-terminal-SNR rescaling.
    """
    T = conv.num_train_timesteps
    name = conv.beta_schedule
    if name == BetaSchedule.CUSTOM:
        if conv.trained_betas is None:
            raise UnsupportedConvention("beta_schedule='custom' without trained_betas")
        betas = schedules.custom_betas(np.asarray(conv.trained_betas, dtype=np.float64))
    elif name == BetaSchedule.LINEAR:
        betas = schedules.linear_betas(T, conv.beta_start, conv.beta_end)
    elif name == BetaSchedule.SCALED_LINEAR:
        betas = schedules.scaled_linear_betas(T, conv.beta_start, conv.beta_end)
    elif name == BetaSchedule.COSINE:
        betas = schedules.cosine_betas(T)
    elif name == BetaSchedule.SIGMOID:
        betas = schedules.sigmoid_betas(T, conv.beta_start, conv.beta_end)
    else:
        raise UnsupportedConvention(f"beta_schedule={name!r} is not a schedule the reference knows")
    if conv.rescale_betas_zero_snr and rescale:
        betas = schedules.rescale_zero_terminal_snr(betas)
    return betas


def reference_timesteps(conv: Conventions, num_steps: int) -> NDArray[np.int64]:
    """The timesteps of an N-step run under the declared spacing (sampling order)."""
    if conv.timestep_spacing not in NAMED_SPACINGS:
        raise UnsupportedConvention(f"timestep_spacing={conv.timestep_spacing!r} has no reference rule")
    offset = conv.steps_offset if conv.timestep_spacing == TimestepSpacing.LEADING else 0
    return timesteps.get_timesteps(conv.timestep_spacing, conv.num_train_timesteps, num_steps, offset)


# -- the named timestep rules --------------------------------------------------------------------------


def tie_positions(spacing: str, num_train_timesteps: int, num_steps: int) -> set[int]:
    r"""Sampling-order positions where the exact rule's pre-rounding value is a tie :math:`k + \tfrac12`."""
    T, N = num_train_timesteps, num_steps
    if spacing == "trailing":
        return {k for k in range(N) if 2 * ((T * (N - k)) % N) == N}
    if spacing == "linspace" and N >= 2:
        return {N - 1 - j for j in range(N) if 2 * ((j * (T - 1)) % (N - 1)) == N - 1}
    return set()


#: The named timestep rules a list is matched against (:func:`named_rule_match`), in words.
RULE_LABELS = {
    "leading": "leading",
    "leading_offset1": "leading with steps_offset=1",
    "trailing": "trailing",
    "linspace": "linspace",
    "uniform": "uniform, range(0, T, T//N)",
    "quadratic": "quadratic",
    "section": "improved-diffusion respacing \"N\"",
    "ddimN": "improved-diffusion \"ddimN\"",
}


def _named_rules(T: int, n: int) -> dict[str, NDArray[np.int64]]:
    makers = {
        "leading": lambda: timesteps.leading_timesteps(T, n),
        "leading_offset1": lambda: timesteps.leading_timesteps(T, n, 1),
        "trailing": lambda: timesteps.trailing_timesteps(T, n),
        "linspace": lambda: timesteps.linspace_timesteps(T, n),
        "uniform": lambda: timesteps.uniform_timesteps(T, n, strict=False),
        "quadratic": lambda: timesteps.quadratic_timesteps(T, n, strict=False),
        "section": lambda: timesteps.section_timesteps(T, [n]),
        "ddimN": lambda: timesteps.section_timesteps(T, f"ddim{n}"),
    }
    out = {}
    for key, make in makers.items():
        try:
            out[key] = np.asarray(make(), dtype=np.int64)
        except ValueError:
            continue
    return out


def named_rule_match(seq: NDArray[np.int64], T: int, n: int) -> tuple[str | None, str]:
    r"""(rule, text): the named rule ``seq`` equals (text ``"equals <rule>"``), or None and the nearest one
    (``"equals leading except 2 positions: 334 vs 333, 668 vs 666"``, got vs rule)."""
    rules = _named_rules(T, n)
    same = {k: v for k, v in rules.items() if v.size == seq.size}
    for key, rule in same.items():
        if np.array_equal(rule, seq):
            return key, f"equals the {RULE_LABELS[key]} rule"
    if not same:
        sizes = ", ".join(f"{RULE_LABELS[k]}: {v.size}" for k, v in rules.items())
        return None, f"has {seq.size} elements, which no named rule gives for N={n} ({sizes})"
    key = min(same, key=lambda k: (int(np.count_nonzero(same[k] != seq)), list(rules).index(k)))
    diff = np.flatnonzero(same[key] != seq)
    shown = ", ".join(f"{int(seq[i])} vs {int(same[key][i])}" for i in diff[:6])
    more = " ..." if diff.size > 6 else ""
    return None, f"equals {RULE_LABELS[key]} except {diff.size} position(s): {shown}{more}"


def step_pairs(conv: Conventions, ts: NDArray[np.int64]) -> list[tuple[int, int]]:
    """(t, t_prev) for every step of a run over ``ts``; the last goes to −1, or to 0 for the ᾱ_0 variant."""
    seq = [int(t) for t in ts]
    pairs = [(seq[k], seq[k + 1]) for k in range(len(seq) - 1)]
    last = -1 if conv.final_alpha_bar_is_one else 0
    pairs.append((seq[-1], min(last, seq[-1])))
    return pairs


def _reference_variance_type(conv: Conventions) -> str:
    vt = conv.variance_type or VarianceType.FIXED_SMALL.value
    try:
        return reference_variance_type(vt).value
    except ValueError:
        raise UnsupportedConvention(f"variance_type={vt!r} has no reference equation") from None


def reference_step(
    conv: Conventions,
    betas: Array,
    *,
    model_output: Array,
    t: int,
    t_prev: int,
    x_t: Array,
    noise: Array | None,
    eta: float = 0.0,
    predicted_variance: Array | None = None,
) -> sampling.StepResult:
    """The reference's step for the declared conventions, in float64 (raises SingularError where singular)."""
    if conv.family == "ddim":
        return sampling.ddim_step(
            model_output, t, t_prev, x_t, betas,
            eta=eta, noise=noise, prediction_type=conv.prediction_type,
            clip_sample=conv.clip_sample, clip_sample_range=conv.clip_sample_range,
            thresholding=conv.thresholding, dynamic_thresholding_ratio=conv.dynamic_thresholding_ratio,
            sample_max_value=conv.sample_max_value, use_clipped_model_output=conv.use_clipped_model_output,
        )
    vt = _reference_variance_type(conv)
    var_out = None
    if vt in LEARNED_VARIANCE_TYPES:
        if predicted_variance is None:
            raise UnsupportedConvention(f"variance_type={vt!r} needs a predicted variance")
        var_out = np.log(predicted_variance) if vt == "learned" else predicted_variance
    return sampling.ddpm_step(
        model_output, t, x_t, betas,
        noise=noise if t_prev >= 0 else None, t_prev=t_prev, prediction_type=conv.prediction_type,
        variance_type=vt, model_var_output=var_out,
        clip_sample=conv.clip_sample, clip_sample_range=conv.clip_sample_range,
        thresholding=conv.thresholding, dynamic_thresholding_ratio=conv.dynamic_thresholding_ratio,
        sample_max_value=conv.sample_max_value,
    )


def step_spec(conv: Conventions, eta: float = 0.0) -> StepSpec:
    """The :class:`StepSpec` (expression shape) of one step under the declared conventions."""
    return StepSpec(
        family=conv.family,
        prediction_type=conv.prediction_type,
        variance_type=conv.variance_type,
        eta=float(eta) if conv.family == "ddim" else 0.0,
        clip_sample=conv.clip_sample,
        clip_sample_range=conv.clip_sample_range,
        thresholding=conv.thresholding,
        use_clipped_model_output=conv.use_clipped_model_output,
    )


def final_step_consequence(conv: Conventions, betas: Array) -> str | None:
    """The consequence of a declared final-step variant, or None for the reference convention."""
    if conv.final_alpha_bar_is_one:
        return None
    c0 = float(alphas.one_minus_alpha_bar(betas)[0])
    return (f"the last step goes to alpha_bar at index 0 instead of 1 (set_alpha_to_one=False): the output "
            f"keeps noise of std sqrt(1 - alpha_bar_0) = {np.sqrt(c0):.4g} and signal scale "
            f"sqrt(alpha_bar_0) = {np.sqrt(1.0 - c0):.6g}")



def zero_snr_original(conv: Conventions) -> Array | None:
    """The schedule before zero-terminal-SNR rescaling when one is declared (for the error model), else None."""
    return reference_betas(conv, rescale=False) if conv.rescale_betas_zero_snr else None


@dataclass(frozen=True)
class ExpectedTransition:
    r"""What the reference expects of one recorded :class:`~ddspec.conformance.trajectory.Transition`.

    Attributes:
        transition: the recorded transition this expectation is for.
        mean: :math:`\mathbb E[x_\mathrm{prev} \mid x_t, \hat m]` (float64), None when ``why`` is set.
        variance: the step's variance (σ², or the DDPM variance), broadcast to x_t's shape; 0 where the step
            is deterministic.
        prev_sample: the reference's :math:`x_\mathrm{prev}` with the transition's injected noise z (the mean
            where none was injected).
        why: why the reference cannot take this transition, else None.
        why_kind: ``"singular"`` (the equation divides by zero there, e.g. ε-prediction at ᾱ = 0) or
            ``"outside"`` (the declared options or the pair (t, t_prev) are outside the reference's domain).
    """

    transition: Transition
    mean: Array | None
    variance: Array | None
    prev_sample: Array | None
    why: str | None = None
    why_kind: str | None = None

    @property
    def noisy(self) -> bool:
        """Whether the reference step adds noise anywhere (σ > 0)."""
        return self.variance is not None and bool(np.any(self.variance > 0.0))


def expect_transition(conv: Conventions, betas: Array, tr: Transition, eta: float = 0.0) -> ExpectedTransition:
    r"""The expect stage: the reference step for the recorded (t, t_prev, x_t, model output, z).

    .. math:: x_\mathrm{prev} = \mu_\mathrm{ref}(x_t, \hat m; t, t_\mathrm{prev}) + \sigma_\mathrm{ref}\,z

    (Ho et al. 2020 Algorithm 2 and eq. 7 for DDPM on the respaced schedule; Song et al. 2021 eq. 12 with
    σ(η) of eq. 16 for DDIM), evaluated by :func:`reference_step` on exactly the float64 values the target
    was given, with z = 0 where none was injected. The same function serves step targets (recorded by
    :class:`~ddspec.conformance.trajectory.StepDriver`) and loop targets (:func:`~ddspec.conformance.trajectory.drive`).
    Never raises for a transition the reference cannot take: ``why`` says so.
    """
    z = np.zeros_like(tr.x_t) if tr.noise is None else tr.noise
    try:
        res = reference_step(conv, betas, model_output=tr.model_output, t=tr.t, t_prev=tr.t_prev, x_t=tr.x_t,
                             noise=z, eta=eta, predicted_variance=tr.predicted_variance)
    except SingularError as exc:
        return ExpectedTransition(tr, None, None, None,
                                  f"the reference is singular at t={tr.t} -> {tr.t_prev}: {exc}", "singular")
    except ValueError as exc:  # UnsupportedConvention included
        return ExpectedTransition(tr, None, None, None,
                                  f"the reference cannot take the step t={tr.t} -> {tr.t_prev}: {exc}", "outside")
    variance = np.broadcast_to(np.asarray(res.variance, dtype=np.float64), tr.x_t.shape)
    return ExpectedTransition(tr, np.asarray(res.mean, dtype=np.float64), variance,
                              np.asarray(res.prev_sample, dtype=np.float64))


# -- inversion: DDIM (σ = 0) run towards noisier indices ---------------------------------------------

from ddspec.reference import inversion  # noqa: E402  (appended section; the reference, as above)


def _inversion_eps(kind: str, m: Array, x: Array, a: float) -> Array | None:
    r"""ε̂ at the source (ᾱ = a) from the model output: ε-, v- (Salimans & Ho 2022 §4:
    :math:`\epsilon = \sqrt{\bar\alpha}\,v + \sqrt{1-\bar\alpha}\,x`) or x̂₀-prediction
    (:math:`\epsilon = (x - \sqrt{\bar\alpha}\,\hat x_0)/\sqrt{1-\bar\alpha}`); None where singular (x̂₀ at ᾱ = 1)."""
    if kind == "epsilon":
        return m
    if kind == "v_prediction":
        return np.sqrt(a) * m + np.sqrt(1.0 - a) * x
    if a >= 1.0:
        return None
    return (x - np.sqrt(a) * m) / np.sqrt(1.0 - a)


@dataclass(frozen=True)
class ExpectedInversion:
    r"""What the reference expects of one recorded inversion step (``t`` the source, ``t_prev`` the destination).

    Attributes:
        expected: an :class:`ExpectedTransition` whose ``transition`` is the recorded one *in ε̂ form*
            (``model_output`` replaced by the ε̂ the step uses, so that the ε-prediction error model
            applies) and whose ``prev_sample`` (= ``mean``) is the expected destination state; ``why`` /
            ``why_kind`` as there.
        clipped: whether the declared x̂₀ clipping acted on this step.
    """

    expected: ExpectedTransition
    clipped: bool = False


def expect_inversion_transition(conv: Conventions, betas: Array, tr: Transition) -> ExpectedInversion:
    r"""The expect stage of an inversion step: DDIM η = 0 from the source ``tr.t`` to the destination ``tr.t_prev``.

    .. math::

        x_{t_\mathrm{to}} = \sqrt{\bar\alpha_{t_\mathrm{to}}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t_\mathrm{to}}}\,\hat\epsilon,\qquad
        \hat x_0 = \begin{cases} x & t_\mathrm{from} = -1\\
            (x - \sqrt{1-\bar\alpha_{t_\mathrm{from}}}\,\hat\epsilon)/\sqrt{\bar\alpha_{t_\mathrm{from}}} & \text{otherwise}\end{cases}

    Song et al. 2021 (DDIM) eq. 12 with σ = 0, run towards noisier indices (§4.3, the ODE of eq. 14);
    :func:`ddspec.reference.inversion.ddim_invert_step` wherever it applies (t_from < t_to, no clipping
    acting). ε̂ is derived from the recorded model output at the source (ᾱ_{−1} = 1) by the declared
    prediction type; x̂₀ is clamped to ±``clip_sample_range`` where ``clip_sample`` is declared, and ε̂
    re-derived from the clamped x̂₀ where ``use_clipped_model_output`` is. A source equal to the
    destination (``set_alpha_to_one=False`` starts at index 0 and its first step goes 0 → 0) is the
    closed form above. Index convention: 0-based, −1 the data (ᾱ = 1). Never raises for a step the
    reference cannot take: ``why`` says so (``"singular"``: x̂₀-prediction at the data;
    ``"outside"``: thresholding declared, or a pair outside ``-1 <= t_from <= t_to <= T - 1``).
    """
    t_from, t_to = int(tr.t), int(tr.t_prev)
    x, m = np.asarray(tr.x_t, dtype=np.float64), np.asarray(tr.model_output, dtype=np.float64)

    def refused(why: str, kind: str) -> ExpectedInversion:
        return ExpectedInversion(ExpectedTransition(tr, None, None, None, why, kind))

    T = int(np.asarray(betas).size)
    if not (-1 <= t_from <= t_to <= T - 1) or t_to < 0:
        return refused(f"the reference cannot take the inversion step {t_from} -> {t_to}: it needs "
                       f"-1 <= t_from <= t_to <= {T - 1}", "outside")
    if conv.thresholding:
        return refused("the reference inversion has no dynamic thresholding (thresholding=True declared)", "outside")
    ab = alphas.alpha_bar(betas)
    a_from = 1.0 if t_from < 0 else float(ab[t_from])
    eps = _inversion_eps(conv.prediction_type, m, x, a_from)
    if eps is None:
        return refused(f"the inversion's first step from the data is singular for x0-prediction at t={t_from} -> "
                       f"{t_to}: eps = (x - x0) / sqrt(1 - 1)", "singular")
    x0_hat = x if t_from < 0 else (x - np.sqrt(1.0 - a_from) * eps) / np.sqrt(a_from)
    x0_used = np.clip(x0_hat, -conv.clip_sample_range, conv.clip_sample_range) if conv.clip_sample else x0_hat
    clipped = not np.array_equal(x0_used, x0_hat)
    if clipped and conv.use_clipped_model_output and a_from < 1.0:
        eps = (x - np.sqrt(a_from) * x0_used) / np.sqrt(1.0 - a_from)
    if t_from < t_to and not clipped:
        value = np.asarray(inversion.ddim_invert_step(eps, t_from, t_to, x, betas), dtype=np.float64)
    else:
        value = np.sqrt(ab[t_to]) * x0_used + np.sqrt(1.0 - ab[t_to]) * eps
    as_eps = Transition(t=tr.t, t_prev=tr.t_prev, x_t=tr.x_t, model_output=np.asarray(eps, dtype=np.float64),
                        x_prev=tr.x_prev, noise=None, predicted_variance=None, step=tr.step)
    expected = ExpectedTransition(as_eps, value, np.zeros_like(value), value)
    return ExpectedInversion(expected, clipped)


__all__ += ["ExpectedInversion", "expect_inversion_transition"]
