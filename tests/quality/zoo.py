r"""The zoo: samplers with one planted bug each, for the self-test of the harness's power.

Every entry of :data:`ZOO` is a :class:`ZooEntry`: a zero-argument ``factory`` that builds the buggy
sampler (a diffusers scheduler, or an object following
:class:`ddspec.conformance.protocol.Sampler`), the check families (check-name prefixes) that must
report a ``fail`` for it, and a one-line description of the bug and the equation it breaks.
``tests/quality/test_harness_zoo.py`` runs the whole harness on each entry and asserts that the
expected families fail.

The bugs are small and realistic, of three kinds:

* **diffusers subclasses** (``DDPMScheduler`` / ``DDIMScheduler``) that override one method or one
  table: ``__init__`` tables, ``set_timesteps``, ``_get_variance``, or a ``step`` that passes
  altered arguments to diffusers' own step. No diffusers code is copied: each override is a line or
  two of our own around ``super()``.
* **hand-written samplers** given to :class:`ddspec.conformance.adapters.function.FunctionSampler`:
  :class:`HandDDIM` (Song et al. 2021, eq. 12 with σ(η) of eq. 16) and :class:`HandDDPM` (Ho et al.
  2020, eq. 7 and Algorithm 2 on the respaced schedule), written plainly, with each bug a subclass
  that overrides one small method. Unbugged, both pass every check (:data:`CONTROLS`), so a failure
  of a subclass is its bug's.
* **subclasses of the bundled** :class:`ddspec.conformance.torch_port.ReferencePort` that override
  one hook (``_clip``, ``_predict``, ``step``).

Index convention (``docs/conventions.md``): ``t`` is the 0-based timestep index, ``t = -1`` the data
with ᾱ = 1; a step of an N-step run goes from ``timesteps[k]`` to ``timesteps[k + 1]`` and the last
one to −1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddspec.conformance.adapters.function import FunctionSampler
from ddspec.conformance.protocol import Conventions, declared_timesteps
from ddspec.conformance.torch_port import ReferencePort
from ddspec.reference import alphas as ref_alphas
from ddspec.reference import schedules as ref_schedules

__all__ = [
    "ZooEntry", "ZOO", "CONTROLS", "HandDDIM", "HandDDPM", "HANG_S", "Config", "CORRECT_CONFIGS", "KNOWN_DISCREPANCIES",
]

#: How long the hanging sampler sleeps; its entry runs with a much smaller ``timeout_s``.
HANG_S = 3.0


@dataclass(frozen=True)
class ZooEntry:
    r"""One planted bug.

    Attributes:
        name: short id (the pytest id).
        factory: zero-argument callable returning the buggy sampler (anything
            :func:`ddspec.conformance.adapters.adapt` accepts).
        expect: check-name prefixes (e.g. ``"single_step"``, ``"invariants.finite"``) each of which
            must have at least one ``fail`` result.
        description: the bug and the equation it breaks, in one line.
        dtypes: the dtypes the bug must be caught in.
        timeout_s: the per-call timeout of the run (small for the hanging sampler).
        numeric: whether an expected failure shows numbers (expected / got / tolerance); False for
            contract failures (an exception, a hang, a wrong dtype, a global RNG draw, a NaN).
        shows: a phrase an expected failure's report block must contain (what went wrong), or None.
    """

    name: str
    factory: Callable[[], Any]
    expect: tuple[str, ...]
    description: str
    dtypes: tuple[str, ...] = ("float32",)
    timeout_s: float = 30.0
    numeric: bool = True
    shows: str | None = None


# ================================================================================================
# Hand-written samplers (FunctionSampler)
# ================================================================================================


class HandDDIM:
    r"""A plain hand-written DDIM sampler, ε-prediction, linear schedule, T = 1000, leading spacing.

    .. math::

        \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}},\qquad
        \sigma = \eta\sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}\Big(1-\frac{\bar\alpha_t}{\bar\alpha_s}\Big)},\qquad
        x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma^2}\,\epsilon + \sigma z

    (Song et al. 2021, eq. 12 and eq. 16), s the next timestep of the run (−1 after the last, ᾱ = 1).
    Coefficients are float64 Python numbers from the exact ᾱ table; the tensor arithmetic runs in the
    dtype of ``x_t``. Each planted bug overrides one method.
    """

    family = "ddim"
    name = "hand-ddim"

    def __init__(self) -> None:
        self.betas = ref_schedules.linear_betas(1000, 1e-4, 0.02)
        self.alpha_bar = ref_alphas.alpha_bar(self.betas)
        self.conventions = Conventions(family=self.family, num_train_timesteps=1000, **self.extra_conventions())

    def extra_conventions(self) -> dict[str, Any]:
        return {}

    # -- pieces a bug can override ----------------------------------------------------------------
    def abar(self, t: int) -> float:
        r""":math:`\bar\alpha` at index t (1 at t = −1, the data)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def prev_timestep(self, t: int, num_steps: int) -> int:
        ts = declared_timesteps(self.conventions, num_steps).tolist()
        k = ts.index(t)
        return ts[k + 1] if k + 1 < len(ts) else -1

    def predict_x0(self, eps: torch.Tensor, x_t: torch.Tensor, a: float) -> torch.Tensor:
        return (x_t - math.sqrt(1.0 - a) * eps) / math.sqrt(a)

    def sigma(self, eta: float, t: int, s: int) -> float:
        a, p = self.abar(t), self.abar(s)
        return eta * math.sqrt((1.0 - p) / (1.0 - a) * (1.0 - a / p))

    def direction_coef(self, p: float, sigma: float) -> float:
        return math.sqrt(max(1.0 - p - sigma * sigma, 0.0))

    def draw(self, x_t: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        if noise is not None:
            return noise.to(x_t.dtype)
        return torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)

    # -- the step ---------------------------------------------------------------------------------
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
        t = int(t)
        s = self.prev_timestep(t, num_steps)
        a, p = self.abar(t), self.abar(s)
        x0 = self.predict_x0(model_output, x_t, a)
        sigma = self.sigma(eta, t, s)
        out = math.sqrt(p) * x0 + self.direction_coef(p, sigma) * model_output
        if eta > 0 and s >= 0:
            out = out + sigma * self.draw(x_t, noise, generator)
        return out

    def as_sampler(self) -> FunctionSampler:
        return FunctionSampler(self.step, self.betas, self.conventions, alphas_cumprod=self.alpha_bar, name=self.name)


class HandDDPM(HandDDIM):
    r"""A plain hand-written DDPM ancestral sampler on the respaced schedule (fixed variance).

    With :math:`\beta' = 1 - \bar\alpha_t/\bar\alpha_s` and :math:`\alpha' = 1 - \beta'`:

    .. math::

        x_s = \frac{\sqrt{\bar\alpha_s}\,\beta'}{1-\bar\alpha_t}\hat x_0
              + \frac{\sqrt{\alpha'}\,(1-\bar\alpha_s)}{1-\bar\alpha_t}x_t + \sigma z,\qquad
        \sigma^2 = \tilde\beta' = \frac{1-\bar\alpha_s}{1-\bar\alpha_t}\beta' \text{ (fixed_small)},\qquad
        \sigma^2 = \beta' \text{ (fixed_large)}

    (Ho et al. 2020, eq. 7 and Algorithm 2; respacing: Nichol & Dhariwal 2021, §4), z = 0 on the
    last step (s = −1).
    """

    family = "ddpm"
    name = "hand-ddpm"
    variance_type = "fixed_small"

    def extra_conventions(self) -> dict[str, Any]:
        return {"variance_type": self.variance_type}

    def respaced_beta(self, t: int, s: int) -> float:
        return 1.0 - self.abar(t) / self.abar(s)

    def adds_noise(self, s: int) -> bool:
        return s >= 0

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
        t = int(t)
        s = self.prev_timestep(t, num_steps)
        a, p = self.abar(t), self.abar(s)
        beta_p = self.respaced_beta(t, s)
        x0 = self.predict_x0(model_output, x_t, a)
        mean = (math.sqrt(p) * beta_p / (1.0 - a)) * x0 + (math.sqrt(1.0 - beta_p) * (1.0 - p) / (1.0 - a)) * x_t
        if not self.adds_noise(s):
            return mean
        var = beta_p if self.variance_type == "fixed_large" else (1.0 - p) / (1.0 - a) * beta_p
        return mean + math.sqrt(var) * self.draw(x_t, noise, generator)


class HandDDPMLarge(HandDDPM):
    name = "hand-ddpm-fixed-large"
    variance_type = "fixed_large"


# -- planted bugs in the hand-written samplers ------------------------------------------------------


class AlphaBarIndexOffByOne(HandDDIM):
    """Reads the 0-based table with the papers' 1-based t: ᾱ[t − 1] where ᾱ[t] belongs."""

    name = "ddim-alpha-bar-index-off-by-one"

    def abar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alpha_bar[t - 1])  # at t = 0 this wraps to ᾱ[T - 1]


class MissingSqrt(HandDDIM):
    """x̂₀ = (x_t − (1 − ᾱ_t) ε)/√ᾱ_t: the square root on 1 − ᾱ_t is missing."""

    name = "ddim-missing-sqrt"

    def predict_x0(self, eps: torch.Tensor, x_t: torch.Tensor, a: float) -> torch.Tensor:
        return (x_t - (1.0 - a) * eps) / math.sqrt(a)


class SigmaNotSquared(HandDDIM):
    """The direction coefficient subtracts σ where σ² belongs: √(1 − ᾱ_s − σ)."""

    name = "ddim-sigma-not-squared"

    def direction_coef(self, p: float, sigma: float) -> float:
        return math.sqrt(max(1.0 - p - sigma, 0.0))


class SigmaWrapsAtLastStep(HandDDIM):
    """σ reads ᾱ_prev straight from the table, so at the last step ᾱ[−1] wraps to ᾱ_{T−1}: √(negative) = NaN."""

    name = "ddim-sigma-index-wraps"

    def sigma(self, eta: float, t: int, s: int) -> float:
        a, p = float(self.alpha_bar[t]), float(self.alpha_bar[s])  # bug: s = -1 is not special-cased
        ratio = torch.tensor((1.0 - p) / (1.0 - a) * (1.0 - a / p), dtype=torch.float64)
        return float(eta * ratio.sqrt())


class LastStepRaises(HandDDIM):
    """The previous timestep is timesteps[k + 1] with no guard: IndexError on the last step."""

    name = "ddim-last-step-raises"

    def prev_timestep(self, t: int, num_steps: int) -> int:
        ts = declared_timesteps(self.conventions, num_steps).tolist()
        return ts[ts.index(t) + 1]


class LastStepHangs(HandDDIM):
    """Blocks (sleeps past the harness timeout) on the last step of every run."""

    name = "ddim-last-step-hangs"

    def prev_timestep(self, t: int, num_steps: int) -> int:
        s = super().prev_timestep(t, num_steps)
        if s < 0:
            time.sleep(HANG_S)
        return s


class FinalStepNoise(HandDDPMLarge):
    """Adds σz on every step, the last included (Ho et al. Algorithm 2, line 4: z = 0 when t = 1)."""

    name = "ddpm-final-step-noise"

    def adds_noise(self, s: int) -> bool:
        return True


class RespacedBetaWrong(HandDDPM):
    """Strided DDPM uses the one-step β_t where the respaced β' = 1 − ᾱ_t/ᾱ_prev belongs."""

    name = "ddpm-respaced-beta-wrong"

    def respaced_beta(self, t: int, s: int) -> float:
        return float(self.betas[t])


# ================================================================================================
# ReferencePort subclasses
# ================================================================================================


class ClipRangeIgnored(ReferencePort):
    """Declares clip_sample_range = 2 but clamps x̂₀ to ±1."""

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        return x0.clamp(-1.0, 1.0)


class X0NotClipped(ReferencePort):
    """Declares clip_sample = True but never clamps x̂₀."""

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        return x0


class ThresholdOverBatch(ReferencePort):
    """Dynamic thresholding with one quantile over the whole batch instead of one per sample."""

    def _clip(self, x0: torch.Tensor) -> torch.Tensor:
        c = self.conventions
        s = torch.quantile(x0.abs().reshape(-1).to(torch.float64), c.dynamic_thresholding_ratio)
        s = float(s.clamp(min=1.0, max=c.sample_max_value))
        return x0.clamp(-s, s) / s


class MutatesInput(ReferencePort):
    """Computes x̂₀ in place in x_t's storage (x_t.sub_(...).div_(...)): right output, input destroyed."""

    def _predict(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        sa = float(self._sqrt_alpha_bar[t])
        s1 = float(self._sqrt_one_minus_alpha_bar[t])
        return x_t.sub_(s1 * model_output).div_(sa), model_output


class ReturnsFloat32(ReferencePort):
    """Returns float32 whatever the input dtype (its result is cast to its tables' dtype)."""

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return super().step(model_output, t, x_t, **kwargs).to(torch.float32)


# ================================================================================================
# diffusers subclasses
# ================================================================================================


class DDIMTimestepsOffByOne(DDIMScheduler):
    """set_timesteps shifts every timestep up by one (an undeclared steps_offset)."""

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        super().set_timesteps(num_inference_steps, device)
        self.timesteps = self.timesteps + 1


class DDIMFinalAlphaBarNotOne(DDIMScheduler):
    """Uses ᾱ_0 after the last step although set_alpha_to_one=True declares ᾱ = 1 (the data)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.final_alpha_cumprod = self.alphas_cumprod[0]


class DDIMAlphaBarFloat16(DDIMScheduler):
    """ᾱ = cumprod(1 − β) accumulated in float16, then stored as float32."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alphas_cumprod = torch.cumprod(self.alphas.to(torch.float16), dim=0).to(torch.float32)


class DDIMVPredictionSign(DDIMScheduler):
    """Reads v with the opposite sign (v = √(1−ᾱ) x₀ − √ᾱ ε)."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return super().step(-model_output, timestep, sample, *args, **kwargs)


class DDIMEtaIgnored(DDIMScheduler):
    """Always steps with η = 0, whatever η it is given."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,
             *args: Any, **kwargs: Any) -> Any:
        return super().step(model_output, timestep, sample, 0.0, *args, **kwargs)


class DDIMSigmaUnrespacedBeta(DDIMScheduler):
    """σ² uses the one-step β_t where the respaced β' = 1 − ᾱ_t/ᾱ_prev belongs."""

    def _get_variance(self, timestep: int, prev_timestep: int) -> torch.Tensor:
        a = self.alphas_cumprod[timestep]
        p = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        return (1 - p) / (1 - a) * self.betas[timestep]


class DDPMBetaForBetaTilde(DDPMScheduler):
    """fixed_small declared, but the variance is β' (fixed_large) where β̃' belongs."""

    def _get_variance(self, t: int, predicted_variance: Any = None, variance_type: Any = None) -> torch.Tensor:
        if variance_type in (None, "fixed_small"):
            variance_type = "fixed_large"
        return super()._get_variance(t, predicted_variance=predicted_variance, variance_type=variance_type)


class DDPMGeneratorDropped(DDPMScheduler):
    """Drops the caller's generator: the noise comes from torch's global RNG."""

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> Any:
        return super().step(model_output, timestep, sample, generator=None, return_dict=return_dict)


# ================================================================================================
# The zoo
# ================================================================================================

ZOO: tuple[ZooEntry, ...] = (
    # -- timesteps and tables ------------------------------------------------------------------------
    ZooEntry(
        "ddim_timesteps_off_by_one",
        lambda: DDIMTimestepsOffByOne(),
        ("timesteps",),
        "timesteps shifted by +1: τ_k = k⌊T/N⌋ + 1 breaks the declared leading rule τ_k = k⌊T/N⌋ "
        "(Lin et al. 2023, Table 2)",
    ),
    ZooEntry(
        "ddim_alpha_bar_index_off_by_one",
        lambda: AlphaBarIndexOffByOne().as_sampler(),
        ("single_step", "oracle"),
        "ᾱ[t − 1] used at index t (1-based t on a 0-based table): every coefficient of DDIM eq. 12 is one step off",
    ),
    ZooEntry(
        "ddim_alpha_bar_float16",
        lambda: DDIMAlphaBarFloat16(),
        ("schedule.alphas_cumprod",),
        "ᾱ_t = ∏(1 − β_i) (Ho et al. §2) from float16 factors: relative error up to 1.7e-3 instead of 3.6e-7 (float32)",
        dtypes=("float32", "float64"),
    ),
    ZooEntry(
        "ddim_final_alpha_bar_not_one",
        lambda: DDIMFinalAlphaBarNotOne(),
        ("single_step", "oracle"),
        "the last step goes to ᾱ_0 although ᾱ = 1 is declared: x_{-1} = √ᾱ_0 x̂₀ + √(1−ᾱ_0) ε instead of x̂₀ "
        "(DDIM eq. 12)",
    ),
    # -- parameterisation ------------------------------------------------------------------------------
    ZooEntry(
        "ddim_missing_sqrt",
        lambda: MissingSqrt().as_sampler(),
        ("single_step", "oracle"),
        "x̂₀ = (x_t − (1−ᾱ_t) ε)/√ᾱ_t: missing √ on 1 − ᾱ_t (Ho et al. eq. 15 / DDIM eq. 12)",
    ),
    ZooEntry(
        "ddim_v_prediction_sign",
        lambda: DDIMVPredictionSign(prediction_type="v_prediction"),
        ("single_step", "oracle"),
        "v read with the wrong sign: x̂₀ = √ᾱ x_t + √(1−ᾱ) v instead of √ᾱ x_t − √(1−ᾱ) v "
        "(Salimans & Ho 2022, §4)",
    ),
    # -- variance and noise ----------------------------------------------------------------------------
    ZooEntry(
        "ddpm_beta_for_beta_tilde",
        lambda: DDPMBetaForBetaTilde(),
        ("single_step", "distribution"),
        "fixed_small declared but σ² = β' instead of β̃' = β'(1−ᾱ_prev)/(1−ᾱ_t) (Ho et al. eq. 7)",
    ),
    ZooEntry(
        "ddim_sigma_not_squared",
        lambda: SigmaNotSquared().as_sampler(),
        ("single_step", "oracle"),
        "direction coefficient √(1 − ᾱ_prev − σ) instead of √(1 − ᾱ_prev − σ²) for η > 0 (DDIM eq. 12)",
    ),
    ZooEntry(
        "ddim_sigma_unrespaced_beta",
        lambda: DDIMSigmaUnrespacedBeta(),
        ("single_step", "oracle"),
        "σ² = η²(1−ᾱ_prev)/(1−ᾱ_t)·β_t instead of ·(1 − ᾱ_t/ᾱ_prev) on strided runs (DDIM eq. 16)",
    ),
    ZooEntry(
        "ddim_eta_ignored",
        lambda: DDIMEtaIgnored(),
        ("single_step", "oracle", "distribution"),
        "η ignored (always 0): σ = 0 where DDIM eq. 16 gives σ = η√β̃'",
    ),
    ZooEntry(
        "ddpm_final_step_noise",
        lambda: FinalStepNoise().as_sampler(),
        ("invariants.no_final_noise", "single_step"),
        "σz added on the last step too (std √(1−ᾱ_0) = 0.01); Ho et al. Algorithm 2 sets z = 0 at t = 1",
    ),
    ZooEntry(
        "ddpm_respaced_beta_wrong",
        lambda: RespacedBetaWrong().as_sampler(),
        ("single_step", "oracle"),
        "strided DDPM uses β_t instead of the respaced β' = 1 − ᾱ_t/ᾱ_prev (Nichol & Dhariwal 2021, §4) in eq. 7",
    ),
    # -- clipping --------------------------------------------------------------------------------------
    ZooEntry(
        "clip_range_ignored",
        lambda: ClipRangeIgnored(clip_sample=True, clip_sample_range=2.0, name="port-clip-range-ignored"),
        ("single_step", "oracle"),
        "clip_sample_range = 2 declared, x̂₀ clamped to ±1 instead of ±2",
    ),
    ZooEntry(
        "x0_not_clipped",
        lambda: X0NotClipped(clip_sample=True, name="port-x0-not-clipped"),
        ("single_step", "oracle"),
        "clip_sample = True declared, x̂₀ never clamped to ±1 before DDIM eq. 12",
    ),
    ZooEntry(
        "threshold_over_batch",
        lambda: ThresholdOverBatch(thresholding=True, sample_max_value=1e3, name="port-threshold-over-batch"),
        ("invariants.batch_independence",),
        "dynamic-thresholding quantile s taken over the whole batch, not per sample (Saharia et al. 2022, §2.3)",
    ),
    # -- contracts -------------------------------------------------------------------------------------
    ZooEntry(
        "mutates_input",
        lambda: MutatesInput(name="port-mutates-input"),
        ("invariants.no_input_mutation",),
        "x̂₀ computed in place in x_t's storage: the step's output is right but its input x_t is overwritten",
        shows="modified x_t in place",
    ),
    ZooEntry(
        "ddpm_generator_dropped",
        lambda: DDPMGeneratorDropped(),
        ("invariants.no_global_rng",),
        "the generator is dropped, so z comes from torch's global RNG (not reproducible from the given generator)",
        numeric=False,
        shows="torch CPU global RNG",
    ),
    ZooEntry(
        "returns_float32",
        lambda: ReturnsFloat32(name="port-returns-float32"),
        ("invariants.output_shape_dtype_device", "single_step"),
        "the output is cast to float32 in a float64 run (the protocol requires x_t's dtype)",
        dtypes=("float64",),
        numeric=False,
        shows="dtype torch.float32",
    ),
    ZooEntry(
        "ddim_sigma_index_wraps",
        lambda: SigmaWrapsAtLastStep().as_sampler(),
        ("invariants.finite", "single_step"),
        "σ reads ᾱ[t_prev] with t_prev = −1 → ᾱ[T−1]: √(negative) = NaN at the last step "
        "(DDIM eq. 16 needs ᾱ = 1 there)",
        numeric=False,
        shows="non-finite",
    ),
    ZooEntry(
        "ddim_last_step_raises",
        lambda: LastStepRaises().as_sampler(),
        ("single_step", "oracle", "invariants"),
        "IndexError on the last step (timesteps[k + 1] unguarded; the step after the last goes to t = −1)",
        numeric=False,
        shows="IndexError",
    ),
    ZooEntry(
        "ddim_last_step_hangs",
        lambda: LastStepHangs().as_sampler(),
        ("single_step", "oracle"),
        f"sleeps {HANG_S:g} s on the last step of every run (a hang; the harness must time out, not wait)",
        timeout_s=0.25,
        numeric=False,
        shows="timed out",
    ),
)

#: The unbugged bases of the hand-written zoo: every check must pass (or be skipped) for them.
CONTROLS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("hand_ddim", lambda: HandDDIM().as_sampler()),
    ("hand_ddpm", lambda: HandDDPM().as_sampler()),
    ("hand_ddpm_fixed_large", lambda: HandDDPMLarge().as_sampler()),
)


# ================================================================================================
# Correct configurations, and diffusers configurations with a known upstream discrepancy
# ================================================================================================


@dataclass(frozen=True)
class Config:
    r"""A configuration the false-alarm test runs the whole harness on.

    Attributes:
        name: short id (the pytest id; also a zero-argument function of this module, so that
            ``ddspec check tests/quality/zoo.py:<name>`` loads it).
        factory: zero-argument callable returning the sampler.
        description: what it is.
        dtypes: the dtypes it is run in.
        steps: explicit step counts (None: the profile's).
        discrepancy: for a diffusers configuration with a known upstream bug, the bug
            (``"diffusers 0.42: ..."``, used as the xfail reason); None for a correct configuration.
        fails: ``fnmatch`` patterns of the checks that the discrepancy makes fail (only those may fail).
        allow: (pattern, reason) known deviations of an otherwise correct configuration, declared
            explicitly as a user's CI would with ``--ddspec-allow``; each reason names the upstream bug.
    """

    name: str
    factory: Callable[[], Any]
    description: str
    dtypes: tuple[str, ...] = ("float32", "float64")
    steps: tuple[int, ...] | None = None
    discrepancy: str | None = None
    fails: tuple[str, ...] = ()
    allow: tuple[tuple[str, str], ...] = ()


def diffusers_ddpm_default() -> DDPMScheduler:
    return DDPMScheduler()


def diffusers_ddim_default() -> DDIMScheduler:
    return DDIMScheduler()


def diffusers_ddim_stable_diffusion() -> DDIMScheduler:
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         set_alpha_to_one=False, steps_offset=1, clip_sample=False)


def diffusers_ddim_v_prediction() -> DDIMScheduler:
    return DDIMScheduler(prediction_type="v_prediction")


def diffusers_ddpm_fixed_large() -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_large")


def diffusers_ddim_cosine() -> DDIMScheduler:
    return DDIMScheduler(beta_schedule="squaredcos_cap_v2")


def diffusers_ddpm_fixed_small_log() -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_small_log")


def diffusers_ddpm_learned_range() -> DDPMScheduler:
    return DDPMScheduler(variance_type="learned_range")


def diffusers_ddim_thresholding() -> DDIMScheduler:
    return DDIMScheduler(thresholding=True, sample_max_value=2.0)


def diffusers_ddim_zero_snr_v_trailing() -> DDIMScheduler:
    return DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")


def port_ddim_zero_snr_v_trailing() -> ReferencePort:
    from ddspec.conformance.torch_port import make_reference_port

    return make_reference_port(rescale_betas_zero_snr=True, prediction_type="v_prediction",
                               timestep_spacing="trailing", name="ddspec-reference-port-zero-snr")


def port_ddim() -> ReferencePort:
    from ddspec.conformance.torch_port import make_reference_port

    return make_reference_port()


def port_ddpm() -> ReferencePort:
    from ddspec.conformance.torch_port import make_reference_port

    return make_reference_port(family="ddpm", name="ddspec-reference-port-ddpm")


def diffusers_ddpm_steps_offset_1() -> DDPMScheduler:
    return DDPMScheduler(steps_offset=1)


def diffusers_ddpm_fixed_large_steps_offset_1() -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_large", steps_offset=1)


def diffusers_ddpm_trailing() -> DDPMScheduler:
    return DDPMScheduler(timestep_spacing="trailing")


def diffusers_ddpm_fixed_large_trailing() -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_large", timestep_spacing="trailing")


def diffusers_ddpm_fixed_large_log() -> DDPMScheduler:
    return DDPMScheduler(variance_type="fixed_large_log")


def diffusers_ddim_linspace() -> DDIMScheduler:
    return DDIMScheduler(timestep_spacing="linspace")


def diffusers_ddim_trailing() -> DDIMScheduler:
    return DDIMScheduler(timestep_spacing="trailing")


_NOISY_LAST_STEP = ("distribution.step_moments.*", "invariants.no_final_noise", "coefficients.*")

#: diffusers 0.42's leading spacing with steps_offset=1 at N = T returns [1000, 999, ..., 1]: timestep
#: 1000 lies outside the 1000-entry table and step() raises IndexError there (docs/diffusers.md §6).
_STEPS_OFFSET_N_EQUALS_T: tuple[tuple[str, str], ...] = (
    ("timesteps.sequence.N=1000",
     "diffusers 0.42: leading spacing with steps_offset=1 returns timestep T = 1000 at N = T (IndexError in step)"),
)

CORRECT_CONFIGS: tuple[Config, ...] = (
    Config("diffusers_ddpm_default", diffusers_ddpm_default, "DDPMScheduler() defaults"),
    Config("diffusers_ddim_default", diffusers_ddim_default, "DDIMScheduler() defaults"),
    Config("diffusers_ddim_stable_diffusion", diffusers_ddim_stable_diffusion,
           "Stable-Diffusion-style DDIM: scaled_linear 0.00085-0.012, set_alpha_to_one=False, steps_offset=1, "
           "clip_sample=False",
           allow=_STEPS_OFFSET_N_EQUALS_T),
    Config("diffusers_ddim_v_prediction", diffusers_ddim_v_prediction, "DDIMScheduler(prediction_type='v_prediction')"),
    Config("diffusers_ddpm_fixed_large", diffusers_ddpm_fixed_large, "DDPMScheduler(variance_type='fixed_large')"),
    Config("diffusers_ddim_cosine", diffusers_ddim_cosine, "DDIMScheduler(beta_schedule='squaredcos_cap_v2')"),
    Config("diffusers_ddpm_fixed_small_log", diffusers_ddpm_fixed_small_log,
           "DDPMScheduler(variance_type='fixed_small_log')"),
    Config("diffusers_ddpm_learned_range", diffusers_ddpm_learned_range,
           "DDPMScheduler(variance_type='learned_range')"),
    Config("diffusers_ddim_thresholding", diffusers_ddim_thresholding,
           "DDIMScheduler(thresholding=True, sample_max_value=2.0)"),
    Config("port_ddim_zero_snr_v_trailing", port_ddim_zero_snr_v_trailing,
           "ReferencePort(rescale_betas_zero_snr=True, prediction_type='v_prediction', timestep_spacing='trailing'): "
           "Lin et al. 2023's recommended setting, evaluated without cancellation, so that no verdict sits on the "
           "rounding edge of sqrt(1 - alpha_bar_prev - sigma^2) at alpha_bar_T = 0, eta = 1. diffusers' evaluation of "
           "the same setting sits on that edge; tests/quality/test_machine_independence.py checks it",
           steps=(1, 10)),
    Config("port_ddim", port_ddim, "the bundled ReferencePort, DDIM defaults"),
    Config("port_ddpm", port_ddpm, "the bundled ReferencePort, DDPM fixed_small"),
)

KNOWN_DISCREPANCIES: tuple[Config, ...] = (
    Config("diffusers_ddpm_fixed_large_steps_offset_1", diffusers_ddpm_fixed_large_steps_offset_1,
           "DDPMScheduler(variance_type='fixed_large', steps_offset=1)",
           discrepancy="diffusers 0.42: DDPMScheduler.step adds noise when t > 0, not when the previous timestep "
                       "is >= 0, so with steps_offset=1 the last step (t=1 -> data) adds sqrt(beta') z",
           fails=("oracle.point_mass.variance_type=*", "single_step.*", *_NOISY_LAST_STEP, "timesteps.sequence.N=1000")),
    Config("diffusers_ddpm_steps_offset_1", diffusers_ddpm_steps_offset_1, "DDPMScheduler(steps_offset=1)",
           dtypes=("float64",),
           discrepancy="diffusers 0.42: DDPMScheduler.step adds noise when t > 0, so with steps_offset=1 the last "
                       "step adds noise of std sqrt(1e-20) (beta_tilde = 0 clamped at 1e-20)",
           fails=(*_NOISY_LAST_STEP, "timesteps.sequence.N=1000")),
    Config("diffusers_ddpm_trailing", diffusers_ddpm_trailing, "DDPMScheduler(timestep_spacing='trailing')",
           dtypes=("float64",),
           discrepancy="diffusers 0.42: DDPMScheduler.step adds noise when t > 0, so with trailing spacing the "
                       "last step (t = T/N - 1 -> data) adds noise of std 1e-10",
           fails=_NOISY_LAST_STEP),
    Config("diffusers_ddpm_fixed_large_trailing", diffusers_ddpm_fixed_large_trailing,
           "DDPMScheduler(variance_type='fixed_large', timestep_spacing='trailing')",
           discrepancy="diffusers 0.42: DDPMScheduler.step adds noise when t > 0, so with trailing spacing the "
                       "last step (t = T/N - 1 -> data) adds sqrt(beta') z, std 0.32 at N = 10",
           fails=("oracle.point_mass.variance_type=*", "single_step.*", "coefficients.*", "distribution.*", "invariants.no_final_noise")),
    Config("diffusers_ddpm_fixed_large_log", diffusers_ddpm_fixed_large_log,
           "DDPMScheduler(variance_type='fixed_large_log')",
           discrepancy="diffusers 0.42: DDPMScheduler fixed_large_log returns log(beta') and step takes its square "
                       "root: sqrt(negative) = NaN at every noisy step",
           fails=("oracle.point_mass.variance_type=*", "single_step.*", "coefficients.*", "distribution.*", "invariants.finite")),
    Config("diffusers_ddim_linspace", diffusers_ddim_linspace, "DDIMScheduler(timestep_spacing='linspace')",
           discrepancy="diffusers 0.42: DDIMScheduler.step takes t - T//N as the previous timestep for every "
                       "spacing; with linspace it is not the next timestep of the run",
           fails=("oracle.*", "single_step.*", "coefficients.*", "distribution.*")),
    Config("diffusers_ddim_trailing_N7", diffusers_ddim_trailing,
           "DDIMScheduler(timestep_spacing='trailing'), N = 7", steps=(7,),
           discrepancy="diffusers 0.42: DDIMScheduler.step takes t - T//N as the previous timestep; with trailing "
                       "spacing and N not dividing T it is not the next timestep, and the last step goes "
                       "to round(T/N) - 1 - T//N (index 0 for T=1000, N=7) instead of the data",
           fails=("oracle.*", "single_step.*", "coefficients.*", "distribution.*", "invariants.no_final_noise")),
    Config("diffusers_ddim_trailing_N61", diffusers_ddim_trailing,
           "DDIMScheduler(timestep_spacing='trailing'), N = 61", steps=(61,),
           discrepancy="diffusers 0.42: trailing set_timesteps(61) returns 62 timesteps ending in -1, and step "
                       "takes t - T//N as the previous timestep",
           fails=("timesteps.sequence.N=61", "oracle.*", "single_step.*", "coefficients.*", "distribution.*", "invariants.*")),
)
