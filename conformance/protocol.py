r"""The sampler protocol: what the conformance harness needs from a DDPM/DDIM sampler under test.

The harness checks a *target* (a diffusers scheduler, a hand-written sampler, the bundled
:class:`~ddspec.conformance.torch_port.ReferencePort`) against the float64 reference
:mod:`ddspec.reference`. It talks to every target through one small interface, :class:`Sampler`:

``name``
    A short label used in reports.
``conventions``
    A frozen :class:`Conventions`: every choice the target makes that changes the numbers (schedule,
    parameterisation, variance, timestep spacing, clipping, final ᾱ). The harness builds the reference
    computation from these declarations and reports, never guesses, what a target cannot express:
    ``conventions.unsupported`` lists config fields or values the adapter could not interpret.
``betas()`` / ``alphas_cumprod()``
    float64 *copies* of the target's own β and ᾱ tables as it holds them (a float32 table is cast up,
    not recomputed), so that the harness can separate table error from step error.
``timesteps(num_steps)``
    The int64 timestep indices of an N-step sampling run, noisiest first (0-based, ``docs/conventions.md``).
    Step k goes from ``timesteps[k]`` to ``timesteps[k+1]``; the last step goes to index −1, the data
    (or to ᾱ at index 0 where ``conventions.final_alpha_bar_is_one`` is False). A target whose own step
    uses another "previous" timestep (diffusers' DDIM uses t − T//N for every spacing) is reported as it
    is: adapters return the target's own timesteps and results, and the harness finds the mismatch.
``step(model_output, t, x_t, *, num_steps, eta=0.0, noise=None, generator=None, predicted_variance=None)``
    One reverse step from :math:`x_t` at timestep ``t`` of the N-step schedule to :math:`x_{t_\mathrm{prev}}`.
    ``noise`` is the standard Gaussian :math:`z` of a stochastic step (DDPM Algorithm 2 line 4, DDIM eq. 12's
    :math:`\sigma_t\epsilon_t`); when it is given the target must use exactly this tensor, so that the harness
    can compare a stochastic step with the reference deterministically. ``predicted_variance`` is the model's
    variance output (same shape as ``x_t``) for ``variance_type`` "learned"/"learned_range", and must be
    ``None`` otherwise. ``eta`` is DDIM's η (eq. 16); DDPM targets ignore it. A step must not modify its
    input tensors.

Optional attributes, read by duck typing (any target kind: step, loop, inversion), each validated with
a ``ValueError`` that names it:

``noise_source``
    ``"generator"`` (default) or ``"global"``: where the step draws its noise when none is injected
    (:func:`noise_source`).
``supported_num_steps``
    The N the target supports: a set of ints, a predicate ``N -> bool`` or a :class:`NumStepsSupport`;
    absent or None means every N (:func:`supported_num_steps`). The checks run only supported N and
    report the others as not supported (never failed).
``coefficient_dtype``
    The dtype each step's coefficients are rounded to when they are taken from wider tables (a torch
    floating dtype or its name; improved-diffusion's float64 tables read with ``.float()``:
    ``torch.float32``). The error model then admits exactly that rounding (:func:`coefficient_dtype`).

Example: a hand-written DDIM sampler (ε-prediction, DDIM eq. 12 with σ(η) of eq. 16) that satisfies
the protocol and passes ``ddspec check``. Index −1 is the data, with ᾱ = 1.

.. code-block:: python

    import numpy as np
    import torch
    from ddspec.conformance.protocol import Conventions, declared_timesteps

    class MyDDIM:
        name = "my-ddim"
        conventions = Conventions(family="ddim", num_train_timesteps=1000)

        def betas(self):
            return np.linspace(1e-4, 0.02, 1000)

        def alphas_cumprod(self):
            return np.cumprod(1.0 - self.betas())

        def timesteps(self, num_steps):
            return declared_timesteps(self.conventions, num_steps)

        def step(self, model_output, t, x_t, *, num_steps, eta=0.0, noise=None,
                 generator=None, predicted_variance=None):
            ts = self.timesteps(num_steps).tolist()
            k = ts.index(t)
            ab = self.alphas_cumprod()
            ab_t = float(ab[t])
            ab_prev = float(ab[ts[k + 1]]) if k + 1 < len(ts) else 1.0
            x0 = (x_t - (1 - ab_t) ** 0.5 * model_output) / ab_t ** 0.5
            var = eta**2 * (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
            out = ab_prev ** 0.5 * x0 + max(1 - ab_prev - var, 0.0) ** 0.5 * model_output
            if var > 0:
                z = noise if noise is not None else torch.randn(
                    x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
                out = out + var ** 0.5 * z
            return out

:func:`ddspec.conformance.adapters.adapt` accepts such an object as it is, wraps diffusers
``DDPMScheduler``/``DDIMScheduler`` instances, and calls a zero-argument factory once. For a plain
function, :class:`ddspec.conformance.adapters.function.FunctionSampler` supplies the rest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ddspec.reference import vocabulary as _vocabulary
from ddspec.reference._validate import as_betas, as_int, fail
from ddspec.reference.timesteps import get_timesteps

if TYPE_CHECKING:  # torch is needed only by the targets themselves
    import torch

__all__ = [
    "FAMILIES",
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "DDPM_VARIANCE_TYPES",
    "TIMESTEP_SPACINGS",
    "Conventions",
    "Sampler",
    "declared_timesteps",
    "target_kind",
    "TARGET_KINDS",
    "NOISE_SOURCES",
    "noise_source",
    "NumStepsSupport",
    "StepCountChoice",
    "num_steps_support",
    "supported_num_steps",
    "COEFFICIENT_DTYPES",
    "as_coefficient_dtype",
    "coefficient_dtype",
]

# The vocabularies are spelled once, in ddspec.reference.vocabulary; these names are kept for callers.
FAMILIES: tuple[str, ...] = _vocabulary.FAMILIES
BETA_SCHEDULES: tuple[str, ...] = _vocabulary.BETA_SCHEDULES
PREDICTION_TYPES: tuple[str, ...] = _vocabulary.PREDICTION_TYPES
DDPM_VARIANCE_TYPES: tuple[str, ...] = _vocabulary.DECLARED_VARIANCE_TYPES
TIMESTEP_SPACINGS: tuple[str, ...] = _vocabulary.TIMESTEP_SPACINGS


def _declared_unsupported(unsupported: tuple[str, ...], field: str) -> bool:
    return any(entry.startswith(field + "=") for entry in unsupported)


@dataclass(frozen=True)
class Conventions:
    r"""Every numerical convention a sampler declares (immutable).

    Index convention: ``docs/conventions.md`` (0-based timestep index, index −1 is the data, ᾱ = 1).
    LaTeX below uses the papers' 1-based t.

    **Unsupported values are never defaulted.** An enumerated field (``family`` excepted) may hold a
    value outside its list only if ``unsupported`` has an entry ``"<field>=<value>: <why>"`` for it;
    the adapter keeps the target's raw value and the harness reports the entry. Config fields the
    adapter does not know at all are listed the same way.

    Attributes
    ----------
    family:
        ``"ddpm"`` (ancestral step: posterior mean, Ho et al. 2020 eq. 7 and Algorithm 2) or ``"ddim"``
        (Song et al. 2021 eq. 12 with σ(η) of eq. 16).
    num_train_timesteps:
        T, the length of the β table.
    beta_schedule:
        The ddspec name of the β schedule: ``"linear"``, ``"scaled_linear"``, ``"cosine"`` (diffusers'
        ``squaredcos_cap_v2``; Nichol & Dhariwal 2021 eq. 17), ``"sigmoid"`` or ``"custom"`` (then
        ``trained_betas`` holds the table). Sets every ᾱ in every equation.
    beta_start, beta_end:
        The schedule's end points (linear, scaled_linear, sigmoid); exact float64 inputs.
    trained_betas:
        An explicit β table (tuple of T floats) for ``beta_schedule="custom"``, else ``None``.
    rescale_betas_zero_snr:
        Whether the schedule is rescaled to zero terminal SNR (Lin et al. 2023, Algorithm 1), so
        :math:`\bar\alpha_T = 0`; ε-prediction is then singular at the first sampling step.
    prediction_type:
        What the model predicts: ``"epsilon"`` (:math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}`,
        Ho et al. eq. 15), ``"sample"`` (:math:`\hat x_0` itself) or ``"v_prediction"``
        (:math:`\hat x_0 = \sqrt{\bar\alpha_t} x_t - \sqrt{1-\bar\alpha_t} v`, Salimans & Ho 2022 §4).
    variance_type:
        DDPM only (``None`` for DDIM): the reverse-step variance. ``"fixed_small"`` is
        :math:`\tilde\beta_t = \beta_t (1-\bar\alpha_{t-1})/(1-\bar\alpha_t)` (Ho et al. eq. 7),
        ``"fixed_large"`` is :math:`\beta_t` (Ho et al. §3.2); the ``_log`` variants are diffusers'
        names for the same quantities handled as logs; ``"learned"`` takes ``predicted_variance`` as
        the variance (diffusers' meaning), ``"learned_range"`` as
        :math:`\exp(f \log\beta_t + (1-f)\log\tilde\beta_t)`, :math:`f = (v+1)/2` (Nichol & Dhariwal
        2021 eq. 15). With strided steps β and β̃ are those of the respaced schedule.
    timestep_spacing:
        How the N sampling timesteps are chosen from T (``"leading"``, ``"trailing"``,
        ``"linspace"``; Lin et al. 2023, Table 2) or ``"custom"`` (the target's own rule).
    steps_offset:
        Added to every ``leading`` timestep (Stable Diffusion uses 1); ignored by the other spacings.
    final_alpha_bar_is_one:
        Whether the last step goes to :math:`\bar\alpha = 1` (the data; the reference convention).
        ``False`` is diffusers DDIM's ``set_alpha_to_one=False``: the last step goes to
        :math:`\bar\alpha_1` (index 0) and leaves noise of std :math:`\sqrt{1-\bar\alpha_1}`.
    clip_sample, clip_sample_range:
        Whether :math:`\hat x_0` is clamped to ``±clip_sample_range`` before it enters the posterior
        mean (Ho et al. eq. 7) or DDIM eq. 12.
    thresholding, dynamic_thresholding_ratio, sample_max_value:
        Dynamic thresholding of :math:`\hat x_0` (Saharia et al. 2022, §2.3): s = the
        ``dynamic_thresholding_ratio`` quantile of :math:`|\hat x_0|` per sample, clamped to
        ``[1, sample_max_value]``; :math:`\hat x_0 \leftarrow \mathrm{clamp}(\hat x_0, -s, s)/s`.
        Takes precedence over ``clip_sample`` when both are set (as in diffusers).
    use_clipped_model_output:
        DDIM only: whether the ε in eq. 12's direction term is re-derived from the clipped
        :math:`\hat x_0` (:math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}`)
        instead of the raw model output. Must be ``False`` for DDPM.
    supports_noise_injection:
        Whether ``step(..., noise=z)`` makes the target use exactly z. If ``False``, stochastic steps
        can only be checked statistically. Where the noise of a step comes from when none is injected
        is the target's ``noise_source`` (:func:`noise_source`): a ``generator`` it is given (the
        default) or torch's ``global`` RNG.
    unsupported:
        ``"<field>=<value>: <reason>"`` entries for config fields or values the adapter cannot
        interpret. Empty when the declaration is complete.
    """

    family: str
    num_train_timesteps: int
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    trained_betas: tuple[float, ...] | None = None
    rescale_betas_zero_snr: bool = False
    prediction_type: str = "epsilon"
    variance_type: str | None = None
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    final_alpha_bar_is_one: bool = True
    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    use_clipped_model_output: bool = False
    supports_noise_injection: bool = True
    unsupported: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a vocabulary member (PredictionType.EPSILON) is stored as its plain string, so that reports,
        # JSON and f-strings show "epsilon" whatever the caller passed
        for name in ("family", "beta_schedule", "prediction_type", "variance_type", "timestep_spacing"):
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, str(value.value))
        if not isinstance(self.unsupported, tuple) or not all(isinstance(u, str) for u in self.unsupported):
            fail("unsupported", self.unsupported, "must be a tuple of str")
        if self.family not in FAMILIES:
            fail("family", self.family, f"must be one of {FAMILIES}")
        as_int(self.num_train_timesteps, "num_train_timesteps", low=1)
        as_int(self.steps_offset, "steps_offset", low=0)
        for field, allowed in (
            ("beta_schedule", BETA_SCHEDULES),
            ("prediction_type", PREDICTION_TYPES),
            ("timestep_spacing", TIMESTEP_SPACINGS),
        ):
            value = getattr(self, field)
            if value not in allowed and not _declared_unsupported(self.unsupported, field):
                fail(field, value, f"must be one of {allowed}, or be listed in `unsupported`")
        if self.family == "ddim":
            if self.variance_type is not None:
                fail("variance_type", self.variance_type, "must be None for family='ddim' (σ comes from eta)")
        else:
            if self.variance_type not in DDPM_VARIANCE_TYPES and not _declared_unsupported(
                self.unsupported, "variance_type"
            ):
                fail("variance_type", self.variance_type, f"must be one of {DDPM_VARIANCE_TYPES} for family='ddpm'")
            if self.use_clipped_model_output:
                fail("use_clipped_model_output", True, "applies to family='ddim' only")
        if self.trained_betas is not None:
            if not isinstance(self.trained_betas, tuple):
                fail("trained_betas", self.trained_betas, "must be a tuple of floats or None")
            as_betas(self.trained_betas, "trained_betas")
            if len(self.trained_betas) != self.num_train_timesteps:
                fail(
                    "trained_betas",
                    self.trained_betas,
                    f"has length {len(self.trained_betas)}, expected num_train_timesteps={self.num_train_timesteps}",
                )
        if (self.beta_schedule == "custom") != (self.trained_betas is not None):
            fail("beta_schedule", self.beta_schedule, "'custom' is used exactly when trained_betas is given")
        for name in ("beta_start", "beta_end", "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, value, "must be a finite real number")
        for name in (
            "rescale_betas_zero_snr",
            "final_alpha_bar_is_one",
            "clip_sample",
            "thresholding",
            "use_clipped_model_output",
            "supports_noise_injection",
        ):
            if not isinstance(getattr(self, name), bool):
                fail(name, getattr(self, name), "must be a bool")

    @property
    def x0_constraint(self) -> _vocabulary.X0Constraint:
        r"""What the sampler does to x̂₀: ``threshold`` (dynamic thresholding wins, as in diffusers), ``clip`` or ``none``."""
        if self.thresholding:
            return _vocabulary.X0Constraint.THRESHOLD
        return _vocabulary.X0Constraint.CLIP if self.clip_sample else _vocabulary.X0Constraint.NONE

    @property
    def fully_supported(self) -> bool:
        """True when the adapter could interpret every config field and value (``unsupported`` is empty)."""
        return not self.unsupported


@runtime_checkable
class Sampler(Protocol):
    r"""A DDPM/DDIM sampler under test (see the module docstring for the contract of each member).

    Optional attributes (not part of the structural check; read by :func:`noise_source`,
    :func:`supported_num_steps` and :func:`coefficient_dtype`):

    * ``noise_source``: ``"generator"`` (default) or ``"global"``;
    * ``supported_num_steps``: a set of ints, a predicate ``N -> bool`` or a :class:`NumStepsSupport`
      (default: every N); only these N are checked, the others are reported as not supported;
    * ``coefficient_dtype``: the dtype (or its name) each step's coefficients are rounded to, e.g.
      ``torch.float32`` for float64 tables read with ``.float()`` (default None: the run's dtype).
    """

    name: str
    conventions: Conventions

    def betas(self) -> NDArray[np.float64]:
        r"""float64 copy of the target's own β table (length T, ``betas[i]`` is :math:`\beta_{i+1}`)."""
        ...

    def alphas_cumprod(self) -> NDArray[np.float64]:
        r"""float64 copy of the target's own :math:`\bar\alpha` table as stored (not recomputed)."""
        ...

    def timesteps(self, num_steps: int) -> NDArray[np.int64]:
        r"""int64 indices of the ``num_steps``-step run, noisiest first; the step after the last goes to −1."""
        ...

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        *,
        num_steps: int,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        predicted_variance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""One reverse step :math:`x_t \to x_{t_\mathrm{prev}}` at timestep ``t`` of the N-step schedule.

        ``noise`` (if given) is the exact standard-normal z of the stochastic term; ``predicted_variance``
        only for learned variance types. Returns a new tensor; inputs are left unchanged.
        """
        ...


def declared_timesteps(conventions: Conventions, num_steps: int) -> NDArray[np.int64]:
    r"""The N sampling timesteps that ``conventions.timestep_spacing`` implies, noisiest first (int64).

    With S = ``num_steps`` and T = ``num_train_timesteps`` (diffusers' definitions; Lin et al. 2023,
    Table 2):

    .. math::

        \text{leading: } \tau_k = k \lfloor T/S \rfloor + \text{offset},\quad
        \text{trailing: } \tau_k = \mathrm{round}(T - k\,T/S) - 1,\quad
        \text{linspace: } \tau_k = \mathrm{round}\big(k (T-1)/(S-1)\big)

    (leading and linspace listed in reverse). Evaluated exactly by
    :func:`ddspec.reference.timesteps.get_timesteps`; ``steps_offset`` is passed for ``"leading"``
    only, since diffusers ignores it for the other spacings. Raises ``ValueError`` for ``"custom"``
    or an unsupported spacing (the target must supply its own rule), and, naming ``steps_offset``,
    when a leading offset runs past T − 1.
    """
    if not isinstance(conventions, Conventions):
        fail("conventions", conventions, "expected a Conventions instance")
    T = conventions.num_train_timesteps
    N = as_int(num_steps, "num_steps", low=1, high=T)
    spacing = conventions.timestep_spacing
    if spacing not in _vocabulary.NAMED_SPACINGS:
        fail("timestep_spacing", spacing, "has no built-in rule; the sampler must supply its own timesteps")
    offset = conventions.steps_offset if spacing == _vocabulary.TimestepSpacing.LEADING else 0
    return np.asarray(get_timesteps(spacing, T, N, offset), dtype=np.int64)


#: The kinds of target the runner tells apart (:func:`target_kind`).
TARGET_KINDS: tuple[str, ...] = ("step", "loop", "inversion")


def target_kind(sampler: Any) -> str:
    r"""``"loop"`` for a whole-loop target (:class:`~ddspec.conformance.adapters.loop.LoopSampler`, or any
    object whose ``target_kind`` attribute is ``"loop"``), ``"inversion"`` for an inversion target (diffusers'
    ``DDIMInverseScheduler`` adapter: no reverse step; its inversion is recorded by its ``recordings`` and
    judged by the ``adapter`` family), else ``"step"``."""
    kind = getattr(sampler, "target_kind", None)
    return kind if kind in ("loop", "inversion") else "step"


#: Where a target's noise comes from when none is injected: a ``torch.Generator`` the harness passes, or
#: torch's global RNG (``torch.randn_like`` inside the step or loop).
NOISE_SOURCES: tuple[str, ...] = ("generator", "global")


def noise_source(sampler: Any) -> str:
    r"""Where ``sampler`` draws its noise when none is injected: its ``noise_source`` attribute, else ``"generator"``.

    Three ways noise reaches a step, from the sharpest check to the loosest:

    * injected (``conventions.supports_noise_injection``): the step uses the harness's z, and a stochastic
      step is compared with the reference exactly;
    * ``"generator"``: the step draws from the ``torch.Generator`` it is given; the statistical checks
      judge its law, and the invariants require that no global RNG moves;
    * ``"global"``: the step draws from torch's global RNG. The harness seeds it for each call inside
      ``torch.random.fork_rng`` (your global state comes back unchanged), runs the target in-process,
      and reports the use of the global RNG as declared, not as a leak.

    Raises:
        ValueError: the attribute is not one of :data:`NOISE_SOURCES`; the message names it.
    """
    value = getattr(sampler, "noise_source", None)
    if value is None:
        return "generator"
    if value not in NOISE_SOURCES:
        fail("noise_source", value, f"must be one of {NOISE_SOURCES}")
    return str(value)


# -- optional declarations of any target (step, loop, inversion) ------------------------------------


@dataclass(frozen=True)
class NumStepsSupport:
    r"""Which step counts N a target supports: its ``supported_num_steps`` declaration, validated.

    At most one of ``steps`` (a declared set) and ``predicate`` (a declared callable ``N -> bool``) is
    given; with neither, every N is supported. ``description`` is the declaration in words, for messages
    (``"every N"``, ``"supported_num_steps=[1000]"``, ``"the predicate Loop.ok"``). N > T is never run,
    whatever the declaration (the checks compare N with ``num_train_timesteps`` themselves).
    """

    steps: frozenset[int] | None = None
    predicate: Callable[[int], bool] | None = None
    description: str = "every N"

    def __post_init__(self) -> None:
        if self.steps is not None and self.predicate is not None:
            fail("supported_num_steps", self, "declares both a set and a predicate; give one")
        if self.predicate is not None and not callable(self.predicate):
            fail("supported_num_steps", self.predicate, "predicate must be callable")
        if self.steps is not None:
            if not isinstance(self.steps, frozenset):
                fail("supported_num_steps", self.steps, "steps must be a frozenset of ints")
            _check_step_counts(self.steps, self.steps)

    @property
    def declared(self) -> bool:
        """Whether the target restricts N at all (False: every N)."""
        return self.steps is not None or self.predicate is not None

    def supports(self, num_steps: int) -> bool:
        r"""Whether N = ``num_steps`` is supported (False for N < 1).

        Raises:
            ValueError: the declared predicate raised; the message names ``supported_num_steps``, N and
                the exception.
        """
        n = as_int(num_steps, "num_steps")
        if n < 1:
            return False
        if self.steps is not None:
            return n in self.steps
        if self.predicate is None:
            return True
        try:
            return bool(self.predicate(n))
        except Exception as exc:  # noqa: BLE001 - a user declaration; reported with its name
            why = f"raised at N={n}: {type(exc).__name__}: {exc}"
        fail("supported_num_steps", self.predicate, why)
        return False  # not reached: fail raises

    def smallest(self, high: int) -> int | None:
        """The smallest supported N in [1, ``high``], or None when there is none."""
        top = as_int(high, "high")
        if self.steps is not None:
            return min((n for n in self.steps if n <= top), default=None)
        return next((n for n in range(1, top + 1) if self.supports(n)), None)

    def unsupported_reason(self) -> str:
        """Why an N outside the declaration is not run: ``"not in the target's supported_num_steps (<description>)"``."""
        return f"not in the target's supported_num_steps ({self.description})"

    def choose(self, wanted: Collection[int], num_train_timesteps: int) -> StepCountChoice:
        r"""The step counts a check runs out of the ``wanted`` ones (a profile's): those in [1, T] that are
        supported; the other N ≤ T are ``skipped`` with :meth:`unsupported_reason`. When none of the wanted
        N ≤ T is supported, the smallest supported N ≤ T is run instead and ``fallback`` says so (every family
        does the same, so that a target that runs only N = T is still checked).

        Raises:
            ValueError: the declared predicate raised (naming ``supported_num_steps`` and N).
        """
        T = as_int(num_train_timesteps, "num_train_timesteps", low=1)
        in_range = sorted({int(n) for n in wanted if 1 <= int(n) <= T})
        counts = [n for n in in_range if self.supports(n)]
        skipped = {n: self.unsupported_reason() for n in in_range if n not in counts}
        fallback = None
        if skipped and not counts:
            first = self.smallest(T)
            if first is not None:
                counts = [first]
                fallback = (f"no profile N is supported ({self.description}); N={first}, the smallest supported "
                            f"N <= T = {T}, is checked instead")
        return StepCountChoice(tuple(counts), skipped, fallback)


@dataclass(frozen=True)
class StepCountChoice:
    r"""Which N a check runs (:meth:`NumStepsSupport.choose`): ``counts`` in increasing order, ``skipped`` the wanted
    N ≤ T outside the declaration with the reason, and ``fallback`` the note when the smallest supported N
    replaces a profile none of whose N is supported (None otherwise)."""

    counts: tuple[int, ...]
    skipped: dict[int, str]
    fallback: str | None = None


def _check_step_counts(entries: Collection[Any], shown: Any) -> None:
    if not entries:
        fail("supported_num_steps", shown, "is empty: name at least one supported N (or leave it None: every N)")
    for n in entries:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            fail("supported_num_steps", shown, f"every entry must be an int >= 1 (got {n!r})")


def num_steps_support(value: Any) -> NumStepsSupport:
    r"""A ``supported_num_steps`` declaration as a :class:`NumStepsSupport`.

    ``value`` is None (every N), a :class:`NumStepsSupport` (kept), a non-empty collection of ints ≥ 1
    (``{1000}``, ``range(10, 101, 10)``) or a predicate ``N -> bool`` (``lambda n: 1000 % n == 0``; a
    method of the target works too).

    Raises:
        ValueError: anything else; the message names ``supported_num_steps`` and the value.
    """
    if value is None:
        return NumStepsSupport()
    if isinstance(value, NumStepsSupport):
        return value
    if callable(value):
        label = getattr(value, "__qualname__", None) or repr(value)
        return NumStepsSupport(predicate=value, description=f"the predicate {label}")
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Collection):
        fail("supported_num_steps", value, "must be a set of ints, a predicate N -> bool, or None")
    _check_step_counts(value, value)
    steps = frozenset(int(n) for n in value)
    return NumStepsSupport(steps=steps, description=f"supported_num_steps={sorted(steps)}")


def supported_num_steps(sampler: Any) -> NumStepsSupport:
    r"""The step counts ``sampler`` supports: its optional ``supported_num_steps`` attribute, read by duck typing.

    Undeclared (no attribute, or None): every N. A target that runs only some N (a loop that visits every
    training step, ``{T}``; a stride rule that needs ``T % N == 0``) declares them, and every check family
    runs only those N and names the others as not supported, never failed (:func:`num_steps_support` for
    the forms accepted).

    Raises:
        ValueError: the attribute is malformed; the message names ``supported_num_steps`` and the value.
    """
    return num_steps_support(getattr(sampler, "supported_num_steps", None))


#: The dtypes a ``coefficient_dtype`` may name: those with a known unit roundoff.
COEFFICIENT_DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")


def as_coefficient_dtype(value: Any, name: str = "coefficient_dtype") -> torch.dtype | None:
    r"""``value`` (None, a torch floating dtype, or its name ``"float32"`` / ``"torch.float32"``) as a torch dtype.

    Raises:
        ValueError: anything else, or a dtype outside :data:`COEFFICIENT_DTYPES`; the message names ``name``.
    """
    if value is None:
        return None
    import torch  # the targets' library; imported here so that reading the protocol needs no torch

    if isinstance(value, str):
        key = value[len("torch."):] if value.startswith("torch.") else value
    elif isinstance(value, torch.dtype):
        key = str(value).replace("torch.", "")
    else:
        key = None
    if key not in COEFFICIENT_DTYPES:
        fail(name, value, f"must be a torch floating dtype (or its name) among {COEFFICIENT_DTYPES}, or None")
    return getattr(torch, str(key))


def coefficient_dtype(sampler: Any) -> torch.dtype | None:
    r"""The dtype ``sampler`` rounds each step's coefficients to: its optional ``coefficient_dtype`` attribute.

    A target that keeps float64 tables but takes each step's coefficients in float32 (improved-diffusion's
    ``_extract_into_tensor``, which indexes the float64 numpy table and calls ``.float()``) rounds every
    coefficient :math:`c` to :math:`c(1 + \delta)`, :math:`|\delta| \le u_{32} = 2^{-24}`, also in a float64
    run. Declared, the error model charges the rounding term of each step at
    :math:`u_\mathrm{step} = \max(u_\mathrm{table}, u_\mathrm{coefficient})` instead of the run's
    :math:`u`; undeclared (None), a float64 run allows only float64 rounding, and such a target fails.

    Raises:
        ValueError: the attribute is not None, a torch floating dtype or its name; the message names
            ``coefficient_dtype`` and the value.
    """
    return as_coefficient_dtype(getattr(sampler, "coefficient_dtype", None))
