r"""The vocabulary of DDPM/DDIM conventions, spelled once.

Every module that names a parameterisation, a variance, a timestep rule, a β schedule or an x̂₀
constraint takes the name from here: the reference equations, the sampler protocol
(:class:`ddspec.conformance.protocol.Conventions`), the adapters and the checks. Each vocabulary is
a ``str`` enum, so a member *is* its string (``PredictionType.EPSILON == "epsilon"``), and the
plain strings that users, JSON reports and diffusers configs carry keep working everywhere.

Sources of the names: diffusers' scheduler configs (``prediction_type``, ``variance_type``,
``timestep_spacing``, ``beta_schedule``), which most code in the wild follows; the papers' own terms
where diffusers has none (``docs/conventions.md``).

This module imports nothing: it sits on the ground floor, below the reference and the harness.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "Family",
    "PredictionType",
    "VarianceType",
    "DeclaredVarianceType",
    "TimestepSpacing",
    "BetaSchedule",
    "X0Constraint",
    "FAMILIES",
    "PREDICTION_TYPES",
    "VARIANCE_TYPES",
    "DECLARED_VARIANCE_TYPES",
    "NAMED_SPACINGS",
    "TIMESTEP_SPACINGS",
    "NAMED_BETA_SCHEDULES",
    "BETA_SCHEDULES",
    "X0_CONSTRAINTS",
    "LEARNED_VARIANCE_TYPES",
    "reference_variance_type",
]


class Family(str, Enum):
    """The sampler family: DDPM's ancestral step (Ho et al. 2020, Algorithm 2) or DDIM's (Song et al. 2021, eq. 12)."""

    DDPM = "ddpm"
    DDIM = "ddim"


class PredictionType(str, Enum):
    r"""What the model predicts: ε (Ho et al. 2020, eq. 11), x₀, or v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho 2022, §4)."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"


class VarianceType(str, Enum):
    r"""The reverse-step variance of DDPM, as the reference computes it (:mod:`ddspec.reference.variances`).

    ``fixed_small`` is β̃_t (Ho et al. 2020, §3.2), ``fixed_large`` β_t with diffusers' convention at the
    last step, ``fixed_large_improved`` improved-diffusion's β_t with β̃₁ at t = 1, ``learned`` a
    predicted variance, ``learned_range`` the log-interpolation of Nichol & Dhariwal 2021, eq. 15.
    """

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    FIXED_LARGE_IMPROVED = "fixed_large_improved"
    LEARNED = "learned"
    LEARNED_RANGE = "learned_range"


class DeclaredVarianceType(str, Enum):
    r"""The variance a sampler *declares* (diffusers' ``variance_type`` values, which the protocol takes).

    The ``_log`` variants compute the same variance through its logarithm (diffusers'
    ``fixed_small_log`` / ``fixed_large_log``); :func:`reference_variance_type` maps each to the
    reference's :class:`VarianceType`.
    """

    FIXED_SMALL = "fixed_small"
    FIXED_SMALL_LOG = "fixed_small_log"
    FIXED_LARGE = "fixed_large"
    FIXED_LARGE_LOG = "fixed_large_log"
    LEARNED = "learned"
    LEARNED_RANGE = "learned_range"


class TimestepSpacing(str, Enum):
    r"""How the N sampled timesteps are chosen from 0..T−1 (:func:`ddspec.reference.timesteps.get_timesteps`).

    ``leading``, ``trailing`` and ``linspace`` are the named rules of Lin et al. 2023, Table 2 (diffusers'
    ``timestep_spacing``); ``custom`` is a declared explicit list.
    """

    LEADING = "leading"
    TRAILING = "trailing"
    LINSPACE = "linspace"
    CUSTOM = "custom"


class BetaSchedule(str, Enum):
    r"""The β schedule (:mod:`ddspec.reference.schedules`): linear (Ho et al. 2020, §4), scaled_linear (Stable
    Diffusion), cosine (Nichol & Dhariwal 2021, eq. 17), sigmoid (Jabri et al. 2022), or a custom table."""

    LINEAR = "linear"
    SCALED_LINEAR = "scaled_linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"
    CUSTOM = "custom"


class X0Constraint(str, Enum):
    r"""What a sampler does to x̂₀ before it uses it: nothing, a clip to [−r, r] (Ho et al. 2020's released
    code; diffusers' ``clip_sample``), or dynamic thresholding (Saharia et al. 2022, §2.3)."""

    NONE = "none"
    CLIP = "clip"
    THRESHOLD = "threshold"


FAMILIES: tuple[str, ...] = tuple(m.value for m in Family)
PREDICTION_TYPES: tuple[str, ...] = tuple(m.value for m in PredictionType)
VARIANCE_TYPES: tuple[str, ...] = tuple(m.value for m in VarianceType)
DECLARED_VARIANCE_TYPES: tuple[str, ...] = tuple(m.value for m in DeclaredVarianceType)
#: The spacings with a rule of their own (every spacing but ``custom``).
NAMED_SPACINGS: tuple[str, ...] = tuple(m.value for m in TimestepSpacing if m is not TimestepSpacing.CUSTOM)
TIMESTEP_SPACINGS: tuple[str, ...] = tuple(m.value for m in TimestepSpacing)
#: The schedules with a formula of their own (every schedule but ``custom``).
NAMED_BETA_SCHEDULES: tuple[str, ...] = tuple(m.value for m in BetaSchedule if m is not BetaSchedule.CUSTOM)
BETA_SCHEDULES: tuple[str, ...] = tuple(m.value for m in BetaSchedule)
X0_CONSTRAINTS: tuple[str, ...] = tuple(m.value for m in X0Constraint)
#: The variance types whose variance the model outputs (a second output beside the prediction).
LEARNED_VARIANCE_TYPES: tuple[str, ...] = (VarianceType.LEARNED.value, VarianceType.LEARNED_RANGE.value)

_TO_REFERENCE = {
    DeclaredVarianceType.FIXED_SMALL: VarianceType.FIXED_SMALL,
    DeclaredVarianceType.FIXED_SMALL_LOG: VarianceType.FIXED_SMALL,
    DeclaredVarianceType.FIXED_LARGE: VarianceType.FIXED_LARGE,
    DeclaredVarianceType.FIXED_LARGE_LOG: VarianceType.FIXED_LARGE,
    DeclaredVarianceType.LEARNED: VarianceType.LEARNED,
    DeclaredVarianceType.LEARNED_RANGE: VarianceType.LEARNED_RANGE,
}


def reference_variance_type(declared: str) -> VarianceType:
    r"""The reference variance that a declared ``variance_type`` computes (the ``_log`` forms are the same
    variance computed through its logarithm).

    Raises:
        ValueError: ``declared`` is not one of :data:`DECLARED_VARIANCE_TYPES`; the message names it.
    """
    try:
        return _TO_REFERENCE[DeclaredVarianceType(declared)]
    except ValueError:
        raise ValueError(f"variance_type={declared!r}: expected one of {DECLARED_VARIANCE_TYPES}") from None
